/* Forward-mode (R-op) and Gauss-Newton products of the MLP, in double precision.
 *
 * Pearlmutter (1994), "Fast exact multiplication by the Hessian"; Schraudolph (2002), "Fast curvature
 * matrix-vector products for second-order gradient descent".  For a direction v in the parameter slab layout:
 *   R{s_l} = R{h_l} W_l^T + h_l V_l^T + v_b,   R{h_{l+1}} = act'(s_l) * R{s_l},   R{h_0} = 0,
 * and J v = R{z} with z the logits.  The Gauss-Newton product J^T H J v back-propagates H R{z} through the
 * network linearized at its current point (no second derivatives of the activations), with H the Hessian of the
 * softmax cross-entropy w.r.t. the logits: H w = p * w - p (p . w), p = softmax(z).
 * The MLP type's jacobian_vector_product and gauss_newton_product operations (modelimpl.h); only the public
 * model interface is used (layers, activation); weights are converted to double per call. */
#include "modelimpl.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

typedef struct {
  PetscInt       L, C, *din, *dout;
  InflActivation act;
  double       **W, **b;      /* (L) (dout, din) and (dout), double copies */
  int64_t       *off;         /* (L) slab offset of layer l */
  double       **h, **s, **Rh, **Rs; /* (L) h/Rh (B, din+1), s/Rs (B, dout) */
} Rop;

static double rop_act_derivative(InflActivation act, double x)
{
  switch (act) {
  case INFL_ACT_RELU: return x > 0 ? 1 : 0;
  case INFL_ACT_TANH: { double t = tanh(x); return 1 - t * t; }
  case INFL_ACT_GELU: return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * PETSC_PI);
  default: return 1;
  }
}

static double rop_act(InflActivation act, double x)
{
  switch (act) {
  case INFL_ACT_RELU: return x > 0 ? x : 0;
  case INFL_ACT_TANH: return tanh(x);
  case INFL_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  default: return x;
  }
}

static PetscErrorCode rop_create(InflModel model, PetscInt B, Rop *r)
{
  InflLinear *lin;
  const char *an;
  const char *names[] = {"relu", "tanh", "gelu", "identity"};

  PetscFunctionBegin;
  PetscCall(PetscMemzero(r, sizeof(*r)));
  PetscCall(InflModelGetLayers(model, &r->L, &lin));
  PetscCall(InflModelGetSizes(model, NULL, &r->C));
  PetscCall(InflModelGetActivationName(model, &an));
  r->act = INFL_ACT_IDENTITY;
  for (int i = 0; i < 4; i++) if (!strcmp(an, names[i])) r->act = (InflActivation)i;
  PetscCall(PetscMalloc3(r->L, &r->din, r->L, &r->dout, r->L, &r->off));
  PetscCall(PetscCalloc2(r->L, &r->W, r->L, &r->b));
  PetscCall(PetscCalloc4(r->L, &r->h, r->L, &r->s, r->L, &r->Rh, r->L, &r->Rs));
  {
    int64_t off = 0;
    for (PetscInt l = 0; l < r->L; l++) {
      PetscInt din = lin[l].din, dout = lin[l].dout;
      r->din[l]  = din;
      r->dout[l] = dout;
      r->off[l]  = off;
      off += (int64_t)dout * (din + 1);
      PetscCall(PetscMalloc2((size_t)dout * din, &r->W[l], dout, &r->b[l]));
      for (int64_t i = 0; i < (int64_t)dout * din; i++) r->W[l][i] = lin[l].W[i];
      for (PetscInt i = 0; i < dout; i++) r->b[l][i] = lin[l].b[i];
      PetscCall(PetscMalloc2((size_t)PetscMax(B, 1) * (din + 1), &r->h[l], (size_t)PetscMax(B, 1) * (din + 1), &r->Rh[l]));
      PetscCall(PetscMalloc2((size_t)PetscMax(B, 1) * dout, &r->s[l], (size_t)PetscMax(B, 1) * dout, &r->Rs[l]));
    }
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode rop_destroy(Rop *r)
{
  PetscFunctionBegin;
  for (PetscInt l = 0; l < r->L; l++) {
    PetscCall(PetscFree2(r->W[l], r->b[l]));
    PetscCall(PetscFree2(r->h[l], r->Rh[l]));
    PetscCall(PetscFree2(r->s[l], r->Rs[l]));
  }
  PetscCall(PetscFree2(r->W, r->b));
  PetscCall(PetscFree4(r->h, r->s, r->Rh, r->Rs));
  PetscCall(PetscFree3(r->din, r->dout, r->off));
  PetscFunctionReturn(0);
}

/* Forward and R-forward of B examples: s[L-1] = logits z, Rs[L-1] = J v. */
static void rop_forward(Rop *r, PetscInt B, const float x[], const double v[])
{
  PetscInt d0 = r->din[0];
  for (PetscInt n = 0; n < B; n++) {
    for (PetscInt j = 0; j < d0; j++) {
      r->h[0][n * (d0 + 1) + j]  = x[(int64_t)n * d0 + j];
      r->Rh[0][n * (d0 + 1) + j] = 0;
    }
    r->h[0][n * (d0 + 1) + d0]  = 1;
    r->Rh[0][n * (d0 + 1) + d0] = 0;
  }
  for (PetscInt l = 0; l < r->L; l++) {
    PetscInt      din = r->din[l], dout = r->dout[l], na = din + 1;
    const double *VW = v + r->off[l], *Vb = VW + (int64_t)dout * din;
    double       *s = r->s[l], *Rs = r->Rs[l];
    for (PetscInt n = 0; n < B; n++) {
      memcpy(&s[(int64_t)n * dout], r->b[l], sizeof(double) * dout);
      memcpy(&Rs[(int64_t)n * dout], Vb, sizeof(double) * dout);
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, dout, din, 1, r->h[l], na, r->W[l], din, 1, s, dout);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, dout, din, 1, r->h[l], na, VW, din, 1, Rs, dout);
    if (l > 0) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, dout, din, 1, r->Rh[l], na, r->W[l], din, 1, Rs, dout);
    if (l == r->L - 1) break;
    for (PetscInt n = 0; n < B; n++) {
      double *hn = &r->h[l + 1][(int64_t)n * (dout + 1)], *Rhn = &r->Rh[l + 1][(int64_t)n * (dout + 1)];
      for (PetscInt j = 0; j < dout; j++) {
        double sj = s[(int64_t)n * dout + j];
        hn[j]     = rop_act(r->act, sj);
        Rhn[j]    = rop_act_derivative(r->act, sj) * Rs[(int64_t)n * dout + j];
      }
      hn[dout]  = 1;
      Rhn[dout] = 0;
    }
  }
}

PetscErrorCode InflModelJacobianVectorProduct_MLP(InflModel model, PetscInt B, const float x[], const double v[], double z[], double Jv[])
{
  Rop r;

  PetscFunctionBegin;
  if (B <= 0) PetscFunctionReturn(0);
  PetscCall(rop_create(model, B, &r));
  rop_forward(&r, B, x, v);
  if (z) PetscCall(PetscArraycpy(z, r.s[r.L - 1], (size_t)B * r.C));
  if (Jv) PetscCall(PetscArraycpy(Jv, r.Rs[r.L - 1], (size_t)B * r.C));
  PetscCall(rop_destroy(&r));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGaussNewtonProduct_MLP(InflModel model, PetscInt B, const float x[], const double v[], double u[])
{
  Rop      r;
  PetscInt C;

  PetscFunctionBegin;
  if (B <= 0) PetscFunctionReturn(0);
  PetscCall(rop_create(model, B, &r));
  C = r.C;
  rop_forward(&r, B, x, v);
  { /* ds_{L-1} = H R{z}, into Rs[L-1] in place; s[L-1] keeps the logits */
    double *z = r.s[r.L - 1], *w = r.Rs[r.L - 1];
    for (PetscInt n = 0; n < B; n++) {
      double *zn = z + (int64_t)n * C, *wn = w + (int64_t)n * C, m = zn[0], Z = 0, pw = 0;
      for (PetscInt j = 1; j < C; j++) m = PetscMax(m, zn[j]);
      for (PetscInt j = 0; j < C; j++) Z += exp(zn[j] - m);
      for (PetscInt j = 0; j < C; j++) pw += exp(zn[j] - m) / Z * wn[j];
      for (PetscInt j = 0; j < C; j++) wn[j] = exp(zn[j] - m) / Z * (wn[j] - pw);
    }
  }
  /* backward of the linearized network: ds in Rs[l] (Rs[l-1] is free after the forward) */
  for (PetscInt l = r.L - 1; l >= 0; l--) {
    PetscInt din = r.din[l], dout = r.dout[l], na = din + 1;
    double  *ds = r.Rs[l], *uW = u + r.off[l], *ub = uW + (int64_t)dout * din;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, B, 1, ds, dout, r.h[l], na, 1, uW, din);
    for (PetscInt n = 0; n < B; n++)
      for (PetscInt i = 0; i < dout; i++) ub[i] += ds[(int64_t)n * dout + i];
    if (l == 0) break;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, din, dout, 1, ds, dout, r.W[l], din, 0, r.Rs[l - 1], din);
    for (int64_t i = 0; i < (int64_t)B * din; i++) r.Rs[l - 1][i] *= rop_act_derivative(r.act, r.s[l - 1][i]);
  }
  PetscCall(rop_destroy(&r));
  PetscFunctionReturn(0);
}

static const char help[] = "GPT-2 against the PyTorch float64 reference (tests/ref/gpt2_tiny_ref.h5): logits, token losses, the\n"
                           "gradient of every parameter and the captured a / Ds of every linear layer, in double (1e-10) and single\n"
                           "precision; DW from captures vs parameter gradients; central finite differences in double; batch-size\n"
                           "invariance; model files (prefix or not, F16, save / load) and bad files.\n";
#include "io/check.h"
#include <infl/gpt2.h>
#include <math.h>
#include <errno.h>
#include <sys/stat.h>

#define MAXB 8
#define NL 2 /* layers of the fixture model */

typedef struct {
  PetscInt  B, N, V, C, L;
  PetscInt  off[MAXB + 1];
  int32_t  *tokens, *targets, *given;  /* (N) */
  double   *logits;                    /* (N, V) */
  double   *token_loss, *p_target;     /* (N) */
  double    seq_loss[MAXB], given_seq_loss[MAXB];
  double   *a[4 * NL], *ds[4 * NL], *gds[4 * NL]; /* (N, din+1), (N, dout), (N, dout) */
  double   *grad;                      /* (nparams) in the slab layout */
} Ref;

static double max_abs(int64_t n, const double x[])
{
  double m = 0;
  for (int64_t i = 0; i < n; i++) m = PetscMax(m, fabs(x[i]));
  return m;
}

/* max |x - ref| / max |ref| */
static double rel_err_f64(int64_t n, const double x[], const double ref[])
{
  double e = 0;
  for (int64_t i = 0; i < n; i++) e = PetscMax(e, fabs(x[i] - ref[i]));
  return e / PetscMax(max_abs(n, ref), 1e-300);
}

static double rel_err_f32(int64_t n, const float x[], const double ref[])
{
  double e = 0;
  for (int64_t i = 0; i < n; i++) e = PetscMax(e, fabs((double)x[i] - ref[i]));
  return e / PetscMax(max_abs(n, ref), 1e-300);
}

static PetscErrorCode read_ints(hid_t f, const char name[], int64_t n, int32_t out[])
{
  int64_t *buf, d[1] = {n};

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(n, &buf));
  PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_INT64, 1, d, NULL, buf));
  for (int64_t i = 0; i < n; i++) out[i] = (int32_t)buf[i];
  PetscCall(PetscFree(buf));
  PetscFunctionReturn(0);
}

static PetscErrorCode read_reference(MPI_Comm comm, const char path[], InflGPT2 g, Ref *r)
{
  hid_t          f;
  InflGPT2Config cfg;
  int64_t        n, dims[2], offs[MAXB + 1];
  int            nd;
  float         *params;

  PetscFunctionBegin;
  PetscCall(InflGPT2GetConfig(g, &cfg));
  PetscCall(InflGPT2GetParameters(g, &n, &params, NULL));
  r->V = cfg.vocab_size;
  r->C = cfg.n_embd;
  r->L = 4 * cfg.n_layer;
  EXPECT(cfg.n_layer == NL, "fixture model has %d layers, the test expects %d", (int)cfg.n_layer, NL);
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &f));
  PetscCall(InflH5GetDims(f, "/offsets", &nd, dims));
  EXPECT(nd == 1 && dims[0] >= 2 && dims[0] <= MAXB + 1, "bad /offsets in %s", path);
  r->B = (PetscInt)dims[0] - 1;
  PetscCall(InflH5ReadArray(f, "/offsets", H5T_NATIVE_INT64, 1, dims, NULL, offs));
  for (PetscInt b = 0; b <= r->B; b++) r->off[b] = (PetscInt)offs[b];
  r->N = r->off[r->B];
  PetscCall(PetscMalloc3(r->N, &r->tokens, r->N, &r->targets, r->N, &r->given));
  PetscCall(read_ints(f, "/tokens", r->N, r->tokens));
  PetscCall(read_ints(f, "/targets", r->N, r->targets));
  PetscCall(read_ints(f, "/given/targets", r->N, r->given));
  PetscCall(PetscMalloc4((size_t)r->N * r->V, &r->logits, r->N, &r->token_loss, r->N, &r->p_target, n, &r->grad));
  {
    int64_t d2[2] = {r->N, r->V}, d1[1] = {r->N}, db[1] = {r->B};
    PetscCall(InflH5ReadArray(f, "/logits", H5T_NATIVE_DOUBLE, 2, d2, NULL, r->logits));
    PetscCall(InflH5ReadArray(f, "/token_loss", H5T_NATIVE_DOUBLE, 1, d1, NULL, r->token_loss));
    PetscCall(InflH5ReadArray(f, "/p_target", H5T_NATIVE_DOUBLE, 1, d1, NULL, r->p_target));
    PetscCall(InflH5ReadArray(f, "/seq_loss", H5T_NATIVE_DOUBLE, 1, db, NULL, r->seq_loss));
    PetscCall(InflH5ReadArray(f, "/given/seq_loss", H5T_NATIVE_DOUBLE, 1, db, NULL, r->given_seq_loss));
  }
  /* gradients of every tensor, into the slab layout */
  {
    const char *top[4] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    const char *blk[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    for (int k = 0; k < 4 + 12 * NL; k++) {
      char    name[64], h5name[96];
      float  *p;
      int64_t numel, shape[2];
      int     ndim;
      if (k < 4) PetscCall(PetscStrncpy(name, top[k], sizeof(name)));
      else PetscCall(PetscSNPrintf(name, sizeof(name), "h.%d.%s", (k - 4) / 12, blk[(k - 4) % 12]));
      PetscCall(InflGPT2GetTensor(g, name, &p, NULL, &numel, &ndim, shape));
      PetscCall(PetscSNPrintf(h5name, sizeof(h5name), "/grad/%s", name));
      PetscCall(InflH5ReadArray(f, h5name, H5T_NATIVE_DOUBLE, ndim, shape, NULL, r->grad + (p - params)));
    }
  }
  for (PetscInt l = 0; l < r->L; l++) {
    InflGPT2Linear lin;
    char           name[64];
    int64_t        da[2], dd[2];
    PetscCall(InflGPT2GetLinear(g, l, &lin));
    da[0] = dd[0] = r->N;
    da[1] = lin.din + 1;
    dd[1] = lin.dout;
    PetscCall(PetscMalloc3(r->N * da[1], &r->a[l], r->N * dd[1], &r->ds[l], r->N * dd[1], &r->gds[l]));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/capture/%d/a", (int)l));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 2, da, NULL, r->a[l]));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/capture/%d/ds", (int)l));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 2, dd, NULL, r->ds[l]));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/given/capture/%d/ds", (int)l));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 2, dd, NULL, r->gds[l]));
  }
  PetscCall(InflH5Close(&f));
  PetscFunctionReturn(0);
}

static PetscErrorCode free_reference(Ref *r)
{
  PetscFunctionBegin;
  PetscCall(PetscFree3(r->tokens, r->targets, r->given));
  PetscCall(PetscFree4(r->logits, r->token_loss, r->p_target, r->grad));
  for (PetscInt l = 0; l < r->L; l++) PetscCall(PetscFree3(r->a[l], r->ds[l], r->gds[l]));
  PetscFunctionReturn(0);
}

/* Layer l's DW = sum_t Ds_t a_t^T (dout, din+1) from a capture, in double. */
static void capture_dw(const InflCapture *cap, PetscInt l, PetscInt row0, PetscInt row1, double dw[])
{
  PetscInt din = cap->din[l], dout = cap->dout[l];
  for (int64_t i = 0; i < (int64_t)dout * (din + 1); i++) dw[i] = 0;
  for (PetscInt t = row0; t < row1; t++)
    for (PetscInt i = 0; i < dout; i++) {
      double ds = cap->prec == INFL_PREC_DOUBLE ? cap->ds64[l][(int64_t)t * dout + i] : cap->ds32[l][(int64_t)t * dout + i];
      for (PetscInt j = 0; j <= din; j++) dw[(int64_t)i * (din + 1) + j] += ds * (cap->prec == INFL_PREC_DOUBLE ? cap->a64[l][(int64_t)t * (din + 1) + j] : cap->a32[l][(int64_t)t * (din + 1) + j]);
    }
}

/* A linear layer's parameter gradient from a flat gradient (slab layout) as (dout, din+1) = [W^T | b]. */
static void linear_grad(InflGPT2 g, const float *params, const double flat[], PetscInt l, double out[])
{
  InflGPT2Linear lin;
  InflGPT2GetLinear(g, l, &lin);
  for (PetscInt i = 0; i < lin.dout; i++) {
    for (PetscInt j = 0; j < lin.din; j++) out[(int64_t)i * (lin.din + 1) + j] = flat[(lin.W - params) + (int64_t)j * lin.dout + i];
    out[(int64_t)i * (lin.din + 1) + lin.din] = flat[(lin.b - params) + i];
  }
}

/* Compare a capture (either precision) with the reference: a, Ds (tolerance tol of each tensor's max abs), losses. */
static PetscErrorCode check_capture(MPI_Comm comm, const char what[], const InflCapture *cap, const Ref *r, double *const ds_ref[], const double seq_ref[], double tol, double *worst)
{
  PetscFunctionBegin;
  EXPECT(cap->T == r->N && cap->B == r->B, "%s: capture has %d rows of %d sequences, expected %d of %d", what, (int)cap->T, (int)cap->B, (int)r->N, (int)r->B);
  for (PetscInt b = 0; b <= r->B; b++) EXPECT(cap->offsets[b] == r->off[b], "%s: capture offsets[%d] = %d, expected %d", what, (int)b, (int)cap->offsets[b], (int)r->off[b]);
  for (PetscInt b = 0; b < r->B; b++) {
    double e = fabs(cap->loss[b] - seq_ref[b]) / seq_ref[b];
    EXPECT(e <= tol, "%s: loss of sequence %d is %.17g, reference %.17g (rel %.3g > %.1g)", what, (int)b, cap->loss[b], seq_ref[b], e, tol);
    worst[0] = PetscMax(worst[0], e);
  }
  for (PetscInt l = 0; l < r->L; l++) {
    int64_t na = (int64_t)r->N * (cap->din[l] + 1), nd = (int64_t)r->N * cap->dout[l];
    double  ea = cap->prec == INFL_PREC_DOUBLE ? rel_err_f64(na, cap->a64[l], r->a[l]) : rel_err_f32(na, cap->a32[l], r->a[l]);
    double  ed = cap->prec == INFL_PREC_DOUBLE ? rel_err_f64(nd, cap->ds64[l], ds_ref[l]) : rel_err_f32(nd, cap->ds32[l], ds_ref[l]);
    EXPECT(ea <= tol, "%s: captured a of linear layer %d differs from the reference by %.3g of its max abs (> %.1g)", what, (int)l, ea, tol);
    EXPECT(ed <= tol, "%s: captured Ds of linear layer %d differs from the reference by %.3g of its max abs (> %.1g)", what, (int)l, ed, tol);
    worst[1] = PetscMax(worst[1], ea);
    worst[2] = PetscMax(worst[2], ed);
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode test_double(MPI_Comm comm, InflGPT2 g, const Ref *r)
{
  InflCapture *cap;
  double         *z, *tl, seq[MAXB], worst[3] = {0, 0, 0}, e, *dw, *gl;
  const double   *g64;
  float          *params, *grads;
  int64_t         n;

  PetscFunctionBegin;
  PetscCall(InflGPT2SetPrecision(g, INFL_PREC_DOUBLE));
  PetscCall(InflGPT2GetParameters(g, &n, &params, &grads));
  PetscCall(PetscMalloc4((size_t)r->N * r->V, &z, r->N, &tl, 4 * r->C * (4 * r->C + 1), &dw, 4 * r->C * (4 * r->C + 1), &gl));
  PetscCall(InflGPT2Forward(g, r->B, r->off, r->tokens, NULL, NULL, z, tl));
  e = rel_err_f64((int64_t)r->N * r->V, z, r->logits);
  EXPECT(e <= 1e-10, "double: logits differ from the reference by %.3g of their max abs", e);
  PetscCall(PetscPrintf(comm, "double: logits max error %.2e of max |logit| %.3g\n", e, max_abs((int64_t)r->N * r->V, r->logits)));
  e = rel_err_f64(r->N, tl, r->token_loss);
  EXPECT(e <= 1e-10, "double: token losses differ from the reference by %.3g of their max", e);
  for (PetscInt t = 0; t < r->N; t++) EXPECT(fabs(tl[t] - r->token_loss[t]) <= 1e-10 * r->token_loss[t] + 1e-300, "double: loss of row %d is %.17g, reference %.17g (relative to itself, for confident tokens)", (int)t, tl[t], r->token_loss[t]);
  PetscCall(PetscPrintf(comm, "double: token losses max error %.2e (each also within 1e-10 of itself)\n", e));
  /* gradients of every tensor */
  PetscCall(InflGPT2ZeroGrad(g));
  PetscCall(InflGPT2LossBackward(g, r->B, r->off, r->tokens, NULL, seq));
  PetscCall(InflGPT2GetBatchGradientDouble(g, &g64));
  for (PetscInt b = 0; b < r->B; b++) EXPECT(fabs(seq[b] - r->seq_loss[b]) <= 1e-10 * r->seq_loss[b], "double: LossBackward loss of sequence %d is %.17g, reference %.17g", (int)b, seq[b], r->seq_loss[b]);
  {
    const char *names[] = {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias", "h.0.ln_2.weight", "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight", "h.0.mlp.c_proj.bias", "h.1.ln_1.weight", "h.1.ln_1.bias", "h.1.attn.c_attn.weight", "h.1.attn.c_attn.bias", "h.1.attn.c_proj.weight", "h.1.attn.c_proj.bias", "h.1.ln_2.weight", "h.1.ln_2.bias", "h.1.mlp.c_fc.weight", "h.1.mlp.c_fc.bias", "h.1.mlp.c_proj.weight", "h.1.mlp.c_proj.bias", "ln_f.weight", "ln_f.bias"};
    double      w = 0, w32 = 0;
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
      float  *p, *gr;
      int64_t numel, off;
      double  e32;
      PetscCall(InflGPT2GetTensor(g, names[k], &p, &gr, &numel, NULL, NULL));
      off = p - params;
      e   = rel_err_f64(numel, g64 + off, r->grad + off);
      EXPECT(e <= 1e-10, "double: gradient of %s differs from the reference by %.3g of its max abs", names[k], e);
      e32 = rel_err_f32(numel, gr, r->grad + off);
      EXPECT(e32 <= 1e-7, "double: gradient slab (float) of %s differs from the reference by %.3g of its max abs (float rounding: 6e-8)", names[k], e32);
      w   = PetscMax(w, e);
      w32 = PetscMax(w32, e32);
    }
    PetscCall(PetscPrintf(comm, "double: parameter gradients (all %d tensors) max error %.2e of each tensor's max abs; float slab %.2e\n", (int)(sizeof(names) / sizeof(names[0])), w, w32));
  }
  /* captures: a, Ds, losses; DW from the capture equals the parameter gradient */
  PetscCall(InflGPT2CaptureCreate(g, r->B, r->N, &cap));
  PetscCall(InflGPT2Capture(g, r->B, r->off, r->tokens, NULL, cap));
  PetscCall(check_capture(comm, "double", cap, r, r->ds, r->seq_loss, 1e-10, worst));
  PetscCall(PetscPrintf(comm, "double: capture (%d layers) max error: sequence loss %.2e, a %.2e, Ds %.2e\n", (int)r->L, worst[0], worst[1], worst[2]));
  e = 0;
  for (PetscInt l = 0; l < r->L; l++) {
    int64_t sz = (int64_t)cap->dout[l] * (cap->din[l] + 1);
    double  el, er;
    capture_dw(cap, l, 0, cap->T, dw);
    linear_grad(g, params, g64, l, gl);
    el = rel_err_f64(sz, dw, gl);
    linear_grad(g, params, r->grad, l, gl);
    er = rel_err_f64(sz, dw, gl);
    EXPECT(el <= 1e-12 && er <= 1e-10, "double: layer %d: sum_t Ds a^T differs from the parameter gradient by %.3g (model) / %.3g (reference)", (int)l, el, er);
    e = PetscMax(e, el);
  }
  PetscCall(PetscPrintf(comm, "double: DW = sum_t Ds_t a_t^T equals the layers' parameter gradients to %.2e\n", e));
  /* per sequence: the sum over its rows of the batch capture is the gradient of that sequence's loss alone */
  e = 0;
  for (PetscInt b = 0; b < r->B; b++) {
    PetscInt off1[2] = {0, r->off[b + 1] - r->off[b]};
    PetscCall(InflGPT2LossBackward(g, 1, off1, r->tokens + r->off[b], NULL, seq));
    PetscCall(InflGPT2GetBatchGradientDouble(g, &g64));
    for (PetscInt l = 0; l < r->L; l++) {
      int64_t sz = (int64_t)cap->dout[l] * (cap->din[l] + 1);
      double  el;
      capture_dw(cap, l, r->off[b], r->off[b + 1], dw);
      linear_grad(g, params, g64, l, gl);
      el = rel_err_f64(sz, dw, gl);
      EXPECT(el <= 1e-12, "double: sequence %d layer %d: the sum of its capture rows differs from its own gradient by %.3g", (int)b, (int)l, el);
      e = PetscMax(e, el);
    }
  }
  PetscCall(InflGPT2ZeroGrad(g));
  PetscCall(PetscPrintf(comm, "double: per sequence, the capture rows at its offsets sum to the gradient of its loss alone (%.2e)\n", e));
  /* given targets (as the true Fisher will pass) */
  worst[0] = worst[1] = worst[2] = 0;
  PetscCall(InflGPT2Capture(g, r->B, r->off, r->tokens, r->given, cap));
  PetscCall(check_capture(comm, "double, given targets", cap, r, r->gds, r->given_seq_loss, 1e-10, worst));
  PetscCall(PetscPrintf(comm, "double: capture with given targets max error: loss %.2e, Ds %.2e\n", worst[0], worst[2]));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree4(z, tl, dw, gl));
  PetscFunctionReturn(0);
}

/* Single precision bounds (stated in docs/FORMATS.md): logits, losses, a, Ds and gradients within 2e-5 of each
 * tensor's max abs; on confidently predicted tokens the Ds row of the last layer within 1e-4 of its own norm (p - 1 in float gives 5e-3 here). */
#define TOL32 2e-5
static PetscErrorCode test_single(MPI_Comm comm, InflGPT2 g, const Ref *r)
{
  InflCapture *cap;
  float          *z, *params, *grads;
  double         *tl, seq[MAXB], worst[3] = {0, 0, 0}, e, *dw, *gl, *gslab;
  int64_t         n;
  PetscInt        nconf = 0, last = r->L - 1;

  PetscFunctionBegin;
  PetscCall(InflGPT2SetPrecision(g, INFL_PREC_SINGLE));
  PetscCall(InflGPT2GetParameters(g, &n, &params, &grads));
  PetscCall(PetscMalloc5((size_t)r->N * r->V, &z, r->N, &tl, 4 * r->C * (4 * r->C + 1), &dw, 4 * r->C * (4 * r->C + 1), &gl, n, &gslab));
  PetscCall(InflGPT2Forward(g, r->B, r->off, r->tokens, NULL, z, NULL, tl));
  e = rel_err_f32((int64_t)r->N * r->V, z, r->logits);
  EXPECT(e <= TOL32, "single: logits differ from the reference by %.3g of their max abs (> %g)", e, TOL32);
  PetscCall(PetscPrintf(comm, "single: logits max error %.2e of max abs\n", e));
  e = rel_err_f64(r->N, tl, r->token_loss);
  EXPECT(e <= TOL32, "single: token losses differ by %.3g of their max (> %g)", e, TOL32);
  PetscCall(PetscPrintf(comm, "single: token losses max error %.2e of max\n", e));
  /* confident tokens keep their loss to a few float ulps of the logits, relative to the loss itself */
  for (PetscInt t = 0; t < r->N; t++)
    if (r->p_target[t] > 0.9999) {
      double el = fabs(tl[t] - r->token_loss[t]) / r->token_loss[t];
      EXPECT(el <= 1e-3, "single: loss %.3g of confident row %d (p %.8f) is %.3g off relative to itself", r->token_loss[t], (int)t, r->p_target[t], el);
    }
  PetscCall(InflGPT2ZeroGrad(g));
  PetscCall(InflGPT2LossBackward(g, r->B, r->off, r->tokens, NULL, seq));
  for (PetscInt b = 0; b < r->B; b++) EXPECT(fabs(seq[b] - r->seq_loss[b]) <= TOL32 * r->seq_loss[b], "single: loss of sequence %d is %.9g, reference %.9g", (int)b, seq[b], r->seq_loss[b]);
  e = 0;
  for (int k = 0; k < 4 + 12 * NL; k++) {
    const char *top[4] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    const char *blk[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    char        name[64];
    float      *p, *gr;
    int64_t     numel;
    double      ek;
    if (k < 4) PetscCall(PetscStrncpy(name, top[k], sizeof(name)));
    else PetscCall(PetscSNPrintf(name, sizeof(name), "h.%d.%s", (k - 4) / 12, blk[(k - 4) % 12]));
    PetscCall(InflGPT2GetTensor(g, name, &p, &gr, &numel, NULL, NULL));
    ek = rel_err_f32(numel, gr, r->grad + (p - params));
    EXPECT(ek <= TOL32, "single: gradient of %s differs from the reference by %.3g of its max abs (> %g)", name, ek, TOL32);
    e = PetscMax(e, ek);
  }
  PetscCall(PetscPrintf(comm, "single: parameter gradients max error %.2e of each tensor's max abs\n", e));
  PetscCall(InflGPT2CaptureCreate(g, r->B, r->N, &cap));
  PetscCall(InflGPT2Capture(g, r->B, r->off, r->tokens, NULL, cap));
  PetscCall(check_capture(comm, "single", cap, r, r->ds, r->seq_loss, TOL32, worst));
  PetscCall(PetscPrintf(comm, "single: capture max error: sequence loss %.2e, a %.2e, Ds %.2e\n", worst[0], worst[1], worst[2]));
  /* the Ds direction of confident tokens (last layer, where the token's own loss dominates) */
  e = 0;
  for (PetscInt t = 0; t < r->N; t++) {
    PetscInt      dout = cap->dout[last];
    const double *ref  = r->ds[last] + (int64_t)t * dout;
    double        d2 = 0, n2 = 0;
    if (!(r->p_target[t] > 0.9999)) continue;
    nconf++;
    for (PetscInt i = 0; i < dout; i++) {
      d2 += (cap->ds32[last][(int64_t)t * dout + i] - ref[i]) * (cap->ds32[last][(int64_t)t * dout + i] - ref[i]);
      n2 += ref[i] * ref[i];
    }
    EXPECT(sqrt(d2) <= 1e-4 * sqrt(n2), "single: Ds of confident row %d (p %.8f) at the last layer is %.3g off relative to its norm %.3g", (int)t, r->p_target[t], sqrt(d2 / n2), sqrt(n2));
    e = PetscMax(e, sqrt(d2 / n2));
  }
  EXPECT(nconf >= 3, "the fixture should have confident tokens (p > 0.9999), found %d", (int)nconf);
  PetscCall(PetscPrintf(comm, "single: Ds of the %d confident tokens (p > 0.9999) at the last layer: max error %.2e of the row's norm\n", (int)nconf, e));
  /* DW from the float capture = float parameter gradient of the linear layers */
  for (int64_t i = 0; i < n; i++) gslab[i] = grads[i];
  e = 0;
  for (PetscInt l = 0; l < r->L; l++) {
    int64_t sz = (int64_t)cap->dout[l] * (cap->din[l] + 1);
    double  el;
    capture_dw(cap, l, 0, cap->T, dw);
    linear_grad(g, params, gslab, l, gl);
    el = rel_err_f64(sz, dw, gl);
    EXPECT(el <= 1e-5, "single: layer %d: sum_t Ds a^T differs from the float parameter gradient by %.3g of its max abs", (int)l, el);
    e = PetscMax(e, el);
  }
  PetscCall(PetscPrintf(comm, "single: DW = sum_t Ds_t a_t^T vs the float parameter gradients: %.2e\n", e));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree5(z, tl, dw, gl, gslab));
  PetscFunctionReturn(0);
}

/* Sequences one at a time vs all in one batch: the same losses and capture rows. */
static PetscErrorCode test_batch(MPI_Comm comm, InflGPT2 g, const Ref *r, InflPrecision prec, double tol)
{
  InflCapture *all, *one;
  double          e = 0;

  PetscFunctionBegin;
  PetscCall(InflGPT2SetPrecision(g, prec));
  PetscCall(InflGPT2CaptureCreate(g, r->B, r->N, &all));
  PetscCall(InflGPT2CaptureCreate(g, 1, r->N, &one));
  PetscCall(InflGPT2Capture(g, r->B, r->off, r->tokens, r->given, all));
  for (PetscInt b = 0; b < r->B; b++) {
    PetscInt off1[2] = {0, r->off[b + 1] - r->off[b]}, T = off1[1], t0 = r->off[b];
    PetscCall(InflGPT2Capture(g, 1, off1, r->tokens + t0, r->given + t0, one));
    EXPECT(fabs(one->loss[0] - all->loss[b]) <= tol * all->loss[b], "batch (%s): loss of sequence %d alone %.17g, in the batch %.17g", prec ? "double" : "single", (int)b, one->loss[0], all->loss[b]);
    for (PetscInt l = 0; l < r->L; l++) {
      PetscInt din = all->din[l] + 1, dout = all->dout[l];
      double   ma = 0, md = 0, ea = 0, ed = 0;
      for (int64_t i = 0; i < (int64_t)T * din; i++) {
        double x = prec ? all->a64[l][t0 * din + i] : all->a32[l][t0 * din + i], y = prec ? one->a64[l][i] : one->a32[l][i];
        ma = PetscMax(ma, fabs(x));
        ea = PetscMax(ea, fabs(x - y));
      }
      for (int64_t i = 0; i < (int64_t)T * dout; i++) {
        double x = prec ? all->ds64[l][t0 * dout + i] : all->ds32[l][t0 * dout + i], y = prec ? one->ds64[l][i] : one->ds32[l][i];
        md = PetscMax(md, fabs(x));
        ed = PetscMax(ed, fabs(x - y));
      }
      EXPECT(ea <= tol * ma && ed <= tol * md, "batch (%s): sequence %d layer %d: a differs by %.3g, Ds by %.3g of their max abs between batches of 1 and %d", prec ? "double" : "single", (int)b, (int)l, ea / ma, ed / md, (int)r->B);
      e = PetscMax(e, PetscMax(ea / ma, ed / md));
    }
  }
  PetscCall(PetscPrintf(comm, "batch (%s): sequences alone vs in one batch of %d: max difference %.2e (bound %.0e)\n", prec ? "double" : "single", (int)r->B, e, tol));
  PetscCall(InflCaptureDestroy(&all));
  PetscCall(InflCaptureDestroy(&one));
  PetscFunctionReturn(0);
}

/* True-Fisher targets: the same whatever the batch, the one-pass capture equals a capture with those targets, and
 * the frequencies of the sampled tokens over many seeds match the reference softmax. */
static PetscErrorCode test_sampled(MPI_Comm comm, InflGPT2 g, const Ref *r)
{
  InflCapture *c1, *c2;
  int32_t        *t_all, *t_one, *t_cap;
  int64_t         idx[MAXB];
  PetscInt        row = -1, nseed = 2000, *count, bs = -1;
  double          hmax = -1, worst = 0;

  PetscFunctionBegin;
  PetscCall(InflGPT2SetPrecision(g, INFL_PREC_SINGLE));
  PetscCall(PetscMalloc4(r->N, &t_all, r->N, &t_one, r->N, &t_cap, r->V, &count));
  for (PetscInt b = 0; b < r->B; b++) idx[b] = 1000 + 7 * b;
  PetscCall(InflGPT2SampleTargets(g, r->B, r->off, r->tokens, idx, 5, t_all));
  for (PetscInt b = 0; b < r->B; b++) {
    PetscInt off1[2] = {0, r->off[b + 1] - r->off[b]}, t0 = r->off[b];
    PetscCall(InflGPT2SampleTargets(g, 1, off1, r->tokens + t0, idx + b, 5, t_one));
    for (PetscInt t = 0; t < off1[1]; t++) {
      EXPECT(t_one[t] == t_all[t0 + t], "sampled target of sequence %d position %d: %d alone, %d in the batch", (int)b, (int)t, (int)t_one[t], (int)t_all[t0 + t]);
      EXPECT(t + 1 < off1[1] ? (t_all[t0 + t] >= 0 && t_all[t0 + t] < r->V) : t_all[t0 + t] == -1, "sampled target of sequence %d position %d is %d", (int)b, (int)t, (int)t_all[t0 + t]);
    }
  }
  PetscCall(InflGPT2CaptureCreate(g, r->B, r->N, &c1));
  PetscCall(InflGPT2CaptureCreate(g, r->B, r->N, &c2));
  PetscCall(InflGPT2CaptureSampled(g, r->B, r->off, r->tokens, idx, 5, t_cap, c1));
  PetscCall(InflGPT2Capture(g, r->B, r->off, r->tokens, t_all, c2));
  for (PetscInt t = 0; t < r->N; t++) EXPECT(t_cap[t] == t_all[t], "CaptureSampled target at row %d is %d, SampleTargets gave %d", (int)t, (int)t_cap[t], (int)t_all[t]);
  for (PetscInt b = 0; b < r->B; b++) EXPECT(c1->loss[b] == c2->loss[b], "CaptureSampled loss of sequence %d %.9g differs from Capture with the same targets %.9g", (int)b, c1->loss[b], c2->loss[b]);
  for (PetscInt l = 0; l < r->L; l++)
    for (int64_t i = 0; i < (int64_t)r->N * c1->dout[l]; i++) EXPECT(c1->ds32[l][i] == c2->ds32[l][i], "CaptureSampled Ds of layer %d entry %" PRId64 " differs from Capture with the same targets", (int)l, i);
  PetscCall(InflCaptureDestroy(&c1));
  PetscCall(InflCaptureDestroy(&c2));
  /* frequencies at the predicting row of the random sequences with the largest entropy */
  for (PetscInt b = 1; b < r->B; b += 2)
    for (PetscInt t = r->off[b]; t < r->off[b + 1] - 1; t++) {
      const double *z = r->logits + (int64_t)t * r->V;
      double        mx = z[0], Z = 0, H = 0;
      for (PetscInt c = 1; c < r->V; c++) mx = PetscMax(mx, z[c]);
      for (PetscInt c = 0; c < r->V; c++) Z += exp(z[c] - mx);
      for (PetscInt c = 0; c < r->V; c++) {
        double p = exp(z[c] - mx) / Z;
        if (p > 0) H -= p * log(p);
      }
      if (H > hmax) {
        hmax = H;
        row  = t;
        bs   = b;
      }
    }
  PetscCall(PetscArrayzero(count, r->V));
  for (PetscInt s = 0; s < nseed; s++) {
    PetscInt off1[2] = {0, r->off[bs + 1] - r->off[bs]};
    int64_t  i0      = 3;
    PetscCall(InflGPT2SampleTargets(g, 1, off1, r->tokens + r->off[bs], &i0, (uint64_t)s, t_one));
    count[t_one[row - r->off[bs]]]++;
  }
  {
    const double *z = r->logits + (int64_t)row * r->V;
    double        mx = z[0], Z = 0;
    for (PetscInt c = 1; c < r->V; c++) mx = PetscMax(mx, z[c]);
    for (PetscInt c = 0; c < r->V; c++) Z += exp(z[c] - mx);
    for (PetscInt c = 0; c < r->V; c++) {
      double p = exp(z[c] - mx) / Z, f = (double)count[c] / nseed, sd = sqrt(p * (1 - p) / nseed);
      EXPECT(fabs(f - p) <= 5 * sd + 2.0 / nseed, "sampled targets at row %d: token %d drawn with frequency %.4f, softmax %.4f (%d draws)", (int)row, (int)c, f, p, (int)nseed);
      worst = PetscMax(worst, fabs(f - p) / (sd + 1.0 / nseed));
    }
  }
  PetscCall(PetscPrintf(comm, "true-Fisher targets: batch-invariant, one-pass capture identical; frequencies at row %d (entropy %.2f nats) over %d seeds within %.2f standard deviations of the reference softmax\n", (int)row, hmax, (int)nseed, worst));
  PetscCall(PetscFree4(t_all, t_one, t_cap, count));
  PetscFunctionReturn(0);
}

/* Central differences of the summed loss in double, for per_tensor random entries of every tensor.  The perturbed float
 * parameters are exact, so the step is (p+ - p-) computed exactly. */
static PetscErrorCode test_fd(MPI_Comm comm, InflGPT2 g, const Ref *r, int per_tensor, float step, const char label[])
{
  float        *params;
  const double *g64;
  double       *grad, worst = 0, seq[MAXB];
  int64_t       n;
  PetscInt      B = 2, count = 0; /* sequences 0 (confident) and 1 (random) */

  PetscFunctionBegin;
  PetscCall(InflGPT2SetPrecision(g, INFL_PREC_DOUBLE));
  PetscCall(InflGPT2GetParameters(g, &n, &params, NULL));
  PetscCall(InflGPT2LossBackward(g, B, r->off, r->tokens, NULL, seq));
  PetscCall(InflGPT2GetBatchGradientDouble(g, &g64));
  PetscCall(PetscMalloc1(n, &grad));
  PetscCall(PetscArraycpy(grad, g64, n));
  for (int k = 0; k < 4 + 12 * NL; k++) {
    const char *top[4] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    const char *blk[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    char        name[64];
    float      *p;
    int64_t     numel;
    double      gmax = 0;
    if (k < 4) PetscCall(PetscStrncpy(name, top[k], sizeof(name)));
    else PetscCall(PetscSNPrintf(name, sizeof(name), "h.%d.%s", (k - 4) / 12, blk[(k - 4) % 12]));
    PetscCall(InflGPT2GetTensor(g, name, &p, NULL, &numel, NULL, NULL));
    for (int64_t i = 0; i < numel; i++) gmax = PetscMax(gmax, fabs(grad[(p - params) + i]));
    for (int j = 0; j < per_tensor; j++) {
      int64_t i = (int64_t)(InflUniform(7, (uint64_t)(k * 16 + j), 9) * numel);
      float   p0 = p[i], pp = p0 + step * PetscMax(1.0f, fabsf(p0)), pm = p0 - step * PetscMax(1.0f, fabsf(p0));
      double  lp = 0, lm = 0, fd, an = grad[(p - params) + i], e;
      PetscCall(InflGPT2GetTensor(g, name, &p, NULL, NULL, NULL, NULL)); /* marks the double copy stale */
      p[i] = pp;
      PetscCall(InflGPT2LossBackward(g, B, r->off, r->tokens, NULL, seq));
      for (PetscInt b = 0; b < B; b++) lp += seq[b];
      PetscCall(InflGPT2GetTensor(g, name, &p, NULL, NULL, NULL, NULL));
      p[i] = pm;
      PetscCall(InflGPT2LossBackward(g, B, r->off, r->tokens, NULL, seq));
      for (PetscInt b = 0; b < B; b++) lm += seq[b];
      PetscCall(InflGPT2GetTensor(g, name, &p, NULL, NULL, NULL, NULL));
      p[i] = p0;
      fd   = (lp - lm) / ((double)pp - (double)pm);
      e    = fabs(fd - an) / (fabs(an) + 1e-3 * gmax + 1e-8);
      EXPECT(e <= 2e-4, "finite differences (%s): %s[%" PRId64 "]: central difference %.10g, backward %.10g (rel %.3g)", label, name, i, fd, an, e);
      worst = PetscMax(worst, e);
      count++;
    }
  }
  PetscCall(InflGPT2ZeroGrad(g));
  PetscCall(PetscPrintf(comm, "finite differences (%s, double, %d entries of all %d tensors, step %.0e): max error %.2e relative to |g| + 1e-3 max|g of the tensor|\n", label, (int)count, 4 + 12 * NL, (double)step, worst));
  PetscCall(PetscFree(grad));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- files */

static PetscErrorCode write_text(MPI_Comm comm, const char path[], const char text[])
{
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    FILE *f = fopen(path, "w");
    PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
  }
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

static PetscErrorCode make_dir(MPI_Comm comm, const char path[])
{
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) PetscCheck(mkdir(path, 0777) == 0 || errno == EEXIST, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot create %s", path);
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

/* Rewrite the tensors of `src` into `dst` with names changed by `rename` (NULL: drop the tensor). */
typedef const char *(*RenameFn)(const char *name, char buf[], size_t len);
static const char *strip_prefix(const char *name, char buf[], size_t len)
{
  if (strstr(name, "lm_head")) return NULL;
  return strncmp(name, "transformer.", 12) ? name : name + 12;
}
/* With bf16, F32 tensors are written as BF16 (round to nearest even). */
static PetscErrorCode rewrite(MPI_Comm comm, const char src[], const char dst[], RenameFn rename, const char perturb[], PetscBool bf16)
{
  InflSafetensors st;
  PetscInt        n, m = 0;
  InflTensor     *t;
  char          (*names)[96];
  uint16_t      **half;

  PetscFunctionBegin;
  PetscCall(InflSafetensorsRead(comm, src, &st));
  PetscCall(InflSafetensorsGetSize(st, &n));
  PetscCall(PetscCalloc3(n, &t, n, &names, n, &half));
  for (PetscInt i = 0; i < n; i++) {
    const InflTensor *x;
    const char       *nm;
    PetscCall(InflSafetensorsGetIndex(st, i, &x));
    nm = rename ? rename(x->name, names[m], 96) : x->name;
    if (!nm) continue;
    PetscCall(PetscStrncpy(names[m], nm, 96));
    t[m]      = *x;
    t[m].name = names[m];
    if (perturb && !strcmp(x->name, perturb)) ((float *)x->data)[5] += 1e-3f; /* not tied any more */
    if (bf16 && x->dtype == INFL_F32) {
      PetscCall(PetscMalloc1(x->numel, &half[m]));
      for (int64_t i = 0; i < x->numel; i++) {
        uint32_t u;
        memcpy(&u, (const float *)x->data + i, 4);
        half[m][i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
      }
      t[m].dtype = INFL_BF16;
      t[m].data  = half[m];
    }
    m++;
  }
  PetscCall(InflSafetensorsWrite(comm, dst, m, t, 0, NULL, NULL));
  for (PetscInt i = 0; i < m; i++) PetscCall(PetscFree(half[i]));
  PetscCall(PetscFree3(t, names, half));
  PetscCall(InflSafetensorsDestroy(&st));
  PetscFunctionReturn(0);
}

static PetscErrorCode compare_params(InflGPT2 a, InflGPT2 b, double rel, const char what[])
{
  float  *pa, *pb;
  int64_t na, nb;

  PetscFunctionBegin;
  PetscCall(InflGPT2GetParameters(a, &na, &pa, NULL));
  PetscCall(InflGPT2GetParameters(b, &nb, &pb, NULL));
  EXPECT(na == nb, "%s: %" PRId64 " vs %" PRId64 " parameters", what, na, nb);
  for (int64_t i = 0; i < na; i++) {
    double d = fabs((double)pa[i] - (double)pb[i]);
    EXPECT(rel == 0 ? pa[i] == pb[i] : d <= rel * fabs((double)pa[i]) + 6e-8 /* F16 subnormal spacing 2^-24 */, "%s: parameter %" PRId64 " is %.9g vs %.9g", what, i, (double)pb[i], (double)pa[i]);
  }
  PetscFunctionReturn(0);
}

/* The other activations (exact erf GELU, ReLU): the same weights under another config.json, checked by finite
 * differences; and the loss changes with the activation (the config is honoured). */
static PetscErrorCode test_activations(MPI_Comm comm, const char refdir[], const Ref *r)
{
  const char *acts[2] = {"gelu", "relu"};
  PetscMPIInt size;
  char        tmp[256], path[512], cfgpath[512], text[512];
  double      base[MAXB], seq[MAXB];
  InflGPT2    h;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "gpt2_act_np%d", (int)size));
  PetscCall(make_dir(comm, tmp));
  PetscCall(InflGPT2Create(comm, &h));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/model.safetensors", refdir));
  PetscCall(InflGPT2Load(h, path));
  PetscCall(InflGPT2SetPrecision(h, INFL_PREC_DOUBLE));
  PetscCall(InflGPT2LossBackward(h, r->B, r->off, r->tokens, NULL, base));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/model.safetensors", tmp));
  PetscCall(PetscSNPrintf(cfgpath, sizeof(cfgpath), "%s/config.json", tmp));
  PetscCall(InflGPT2Save(h, tmp, 0, NULL, NULL));
  for (int k = 0; k < 2; k++) {
    PetscCall(PetscSNPrintf(text, sizeof(text), "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 96, \"n_positions\": 16, \"activation_function\": \"%s\"}", acts[k]));
    PetscCall(write_text(comm, cfgpath, text));
    PetscCall(InflGPT2Load(h, tmp));
    PetscCall(InflGPT2SetPrecision(h, INFL_PREC_DOUBLE));
    PetscCall(InflGPT2LossBackward(h, r->B, r->off, r->tokens, NULL, seq));
    EXPECT(fabs(seq[1] - base[1]) > 1e-6 * base[1], "activation %s: the loss %.17g equals gelu_new's; the config is not honoured", acts[k], seq[1]);
    PetscCall(test_fd(comm, h, r, 2, k ? 1e-6f : 1e-3f, acts[k])); /* ReLU: a small step, so that no kink is crossed */
  }
  PetscCall(InflGPT2Destroy(&h));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_files(MPI_Comm comm, const char refdir[], InflGPT2 g)
{
  InflGPT2    h;
  PetscMPIInt size;
  char        tmp[256], path[512], path2[512], cfgpath[512];
  const char *ha, *hb;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  /* half / bfloat16 conversion: values from the IEEE 754 binary16 and bfloat16 definitions */
  EXPECT(InflHalfToFloat(0x3C00) == 1.0f && InflHalfToFloat(0xC000) == -2.0f && InflHalfToFloat(0x7BFF) == 65504.0f && InflHalfToFloat(0x0001) == ldexpf(1, -24) && InflHalfToFloat(0x0400) == ldexpf(1, -14) && InflHalfToFloat(0x3555) == 0.25f + 0x155 * ldexpf(1, -12) && isinf(InflHalfToFloat(0x7C00)) && isnan(InflHalfToFloat(0x7E00)), "F16 conversion of reference bit patterns is wrong");
  EXPECT(InflBFloat16ToFloat(0x3F80) == 1.0f && InflBFloat16ToFloat(0xC140) == -12.0f && InflBFloat16ToFloat(0x4049) == 3.140625f, "BF16 conversion of reference bit patterns is wrong");
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "gpt2_files_np%d", (int)size));
  PetscCall(make_dir(comm, tmp));
  PetscCall(InflGPT2Create(comm, &h));
  /* F16 weights, names without the prefix, a .safetensors path with config.json beside it */
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/model_f16.safetensors", refdir));
  PetscCall(InflGPT2Load(h, path));
  PetscCall(compare_params(g, h, ldexp(1, -11), "F16 file vs F32 file (half rounding)"));
  PetscCall(PetscPrintf(comm, "files: F16 weights without the prefix load within half-precision rounding of the F32 ones\n"));
  /* names without the prefix, F32: identical */
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/model.safetensors", refdir));
  PetscCall(PetscSNPrintf(path2, sizeof(path2), "%s/noprefix.safetensors", tmp));
  PetscCall(PetscSNPrintf(cfgpath, sizeof(cfgpath), "%s/config.json", tmp));
  PetscCall(InflGPT2Save(g, tmp, 0, NULL, NULL)); /* also writes tmp/config.json */
  PetscCall(rewrite(comm, path, path2, strip_prefix, NULL, PETSC_FALSE));
  PetscCall(InflGPT2Load(h, path2));
  PetscCall(compare_params(g, h, 0, "file without the transformer. prefix"));
  /* BF16 weights (with the prefix, the mask buffers and the tied head, all converted) */
  PetscCall(PetscSNPrintf(path2, sizeof(path2), "%s/bf16.safetensors", tmp));
  PetscCall(rewrite(comm, path, path2, NULL, NULL, PETSC_TRUE));
  PetscCall(InflGPT2Load(h, path2));
  PetscCall(compare_params(g, h, ldexp(1, -8), "BF16 file vs F32 file (bfloat16 rounding)"));
  PetscCall(PetscPrintf(comm, "files: F32 without the prefix loads identically; BF16 within bfloat16 rounding\n"));
  /* save / load round trip (directory) */
  PetscCall(InflGPT2Load(h, tmp));
  PetscCall(compare_params(g, h, 0, "save / load round trip"));
  PetscCall(InflGPT2GetHash(g, &ha));
  PetscCall(InflGPT2GetHash(h, &hb));
  EXPECT(!strcmp(ha, hb), "hash after the round trip differs: %s vs %s", ha, hb);
  {
    InflSafetensors st;
    const InflTensor *t;
    PetscCall(PetscSNPrintf(path2, sizeof(path2), "%s/model.safetensors", tmp));
    PetscCall(InflSafetensorsRead(comm, path2, &st));
    PetscCall(InflSafetensorsGet(st, "transformer.h.1.mlp.c_fc.weight", &t));
    EXPECT(t && t->dtype == INFL_F32 && t->ndim == 2 && t->shape[0] == 32 && t->shape[1] == 128, "saved file lacks transformer.h.1.mlp.c_fc.weight F32 [32, 128] (Conv1D layout)");
    PetscCall(InflSafetensorsDestroy(&st));
  }
  PetscCall(PetscPrintf(comm, "files: save (transformer.* names, config.json) and load give the same parameters and hash\n"));
  /* a changed parameter changes the hash */
  {
    float *p;
    PetscCall(InflGPT2GetTensor(h, "h.0.ln_2.bias", &p, NULL, NULL, NULL, NULL));
    p[3] = nextafterf(p[3], 10.0f);
    PetscCall(InflGPT2GetHash(h, &hb));
    EXPECT(strcmp(ha, hb), "hash unchanged after changing a parameter");
  }
  /* bad files: one clear error on every rank */
  {
    const char *good = "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 96, \"n_ctx\": 16}"; /* n_ctx for n_positions */
    PetscCall(PetscSNPrintf(path2, sizeof(path2), "%s/model.safetensors", tmp));
    PetscCall(write_text(comm, cfgpath, "{\"n_embd\": 32, \"n_layer\": 2, \"vocab_size\": 96, \"n_ctx\": 16}"));
    EXPECT_FAIL(comm, InflGPT2Load(h, tmp), "\"n_head\"", "config without n_head");
    EXPECT_FAIL(comm, InflGPT2Load(h, tmp), "config.json", "config without n_head names the file");
    PetscCall(write_text(comm, cfgpath, "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 5, \"vocab_size\": 96, \"n_positions\": 16}"));
    EXPECT_FAIL(comm, InflGPT2Load(h, tmp), "n_embd 32 is not a multiple of n_head 5", "n_embd % n_head");
    PetscCall(write_text(comm, cfgpath, "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 100, \"n_positions\": 16}"));
    EXPECT_FAIL(comm, InflGPT2Load(h, tmp), "wte.weight has shape [96, 32]", "vocab_size contradicting wte");
    PetscCall(write_text(comm, cfgpath, "{\"n_embd\": 32, \"n_layer\": 1, \"n_head\": 4, \"vocab_size\": 96, \"n_positions\": 16}"));
    EXPECT_FAIL(comm, InflGPT2Load(h, tmp), "unexpected tensor transformer.h.1.", "n_layer smaller than the file's");
    PetscCall(write_text(comm, cfgpath, "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 96, \"n_positions\": 16, \"activation_function\": \"swish\"}"));
    EXPECT_FAIL(comm, InflGPT2Load(h, tmp), "activation_function \"swish\"", "unknown activation");
    PetscCall(write_text(comm, cfgpath, good));
    PetscCall(PetscSNPrintf(path2, sizeof(path2), "%s/untied.safetensors", tmp));
    PetscCall(rewrite(comm, path, path2, NULL, "lm_head.weight", PETSC_FALSE));
    EXPECT_FAIL(comm, InflGPT2Load(h, path2), "lm_head.weight differs from wte.weight", "untied head");
    PetscCall(InflGPT2Load(h, tmp)); /* the good config loads again */
    PetscCall(compare_params(g, h, 0, "config with n_ctx"));
  }
  PetscCall(PetscPrintf(comm, "files: bad files (missing n_head, n_embd %% n_head, vocab_size vs wte, n_layer vs tensors, unknown activation, untied lm_head) fail on every rank with one message\n"));
  PetscCall(InflGPT2Destroy(&h));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  InflGPT2    g;
  Ref         r;
  const char *src;
  char        dir[PETSC_MAX_PATH_LEN], ref[PETSC_MAX_PATH_LEN];

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_USER, "set INFL_SOURCE_DIR to the source tree (ctest does)");
  PetscCall(PetscSNPrintf(dir, sizeof(dir), "%s/tests/ref/gpt2_tiny", src));
  PetscCall(PetscSNPrintf(ref, sizeof(ref), "%s/tests/ref/gpt2_tiny_ref.h5", src));
  PetscCall(InflGPT2Create(comm, &g));
  PetscCall(InflGPT2Load(g, dir));
  PetscCall(InflGPT2View(g, NULL));
  PetscCall(PetscMemzero(&r, sizeof(r)));
  PetscCall(read_reference(comm, ref, g, &r));
  PetscCall(test_double(comm, g, &r));
  PetscCall(test_single(comm, g, &r));
  PetscCall(test_batch(comm, g, &r, INFL_PREC_DOUBLE, 1e-12));
  PetscCall(test_batch(comm, g, &r, INFL_PREC_SINGLE, 1e-5));
  PetscCall(test_sampled(comm, g, &r));
  PetscCall(test_fd(comm, g, &r, 4, 1e-3f, "gelu_new"));
  PetscCall(test_files(comm, dir, g));
  PetscCall(test_activations(comm, dir, &r));
  PetscCall(free_reference(&r));
  PetscCall(InflGPT2Destroy(&g));
  PetscCall(PetscFinalize());
  return 0;
}

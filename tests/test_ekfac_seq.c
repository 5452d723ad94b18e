/* EK-FAC on sequences at the capture level: for a capture whose sequences span several rows (tokens), the Lambda sum,
 * self-influence and preconditioned gradients of InflEKFACAccumulateLambda / InflEKFACSelfInfluenceCapture /
 * InflEKFACPreconditionCapture against a plain reference written here with loops (G_b = sum_t Ds_t a_t^T formed
 * explicitly, rotated by the eigenbases entry by entry), in double and from a single-precision capture; sequences
 * of length one through the sequence path agree with the rank-one path; self-influence = <precondition(G), G>. */
static const char help[] = "EK-FAC on sequence captures against a plain reference.\n";

#include <infl/score.h>
#include <math.h>
#include "lib/infl_test.h"

#define FMNIST "idx:/usr/share/datasets/fashion-mnist/train"

/* deterministic values in [-1, 1) */
static double val(uint64_t i)
{
  return 2 * InflUniform(77, i, 0) - 1;
}

/* Reference for one layer: M_b = Q_S^T G_b Q_A entry by entry; returns Lsum (nd, na) += M_b^2, self[b], P_b. */
static void reference(const InflEKFACLayer *ly, PetscInt B, const int64_t off[], const double *a, const double *ds, double Lsum[], double self[], double P[])
{
  PetscInt na = ly->din + 1, nd = ly->dout;
  double  *G = malloc(sizeof(double) * nd * na), *T = malloc(sizeof(double) * nd * na), *M = malloc(sizeof(double) * nd * na);
  for (PetscInt b = 0; b < B; b++) {
    for (PetscInt i = 0; i < nd; i++)
      for (PetscInt j = 0; j < na; j++) {
        double g = 0;
        for (int64_t t = off[b]; t < off[b + 1]; t++) g += ds[t * nd + i] * a[t * na + j];
        G[i * na + j] = g;
      }
    for (PetscInt i = 0; i < nd; i++) /* T = Q_S^T G */
      for (PetscInt j = 0; j < na; j++) {
        double v = 0;
        for (PetscInt k = 0; k < nd; k++) v += ly->QS[k * nd + i] * G[k * na + j];
        T[i * na + j] = v;
      }
    for (PetscInt i = 0; i < nd; i++) /* M = T Q_A */
      for (PetscInt j = 0; j < na; j++) {
        double v = 0;
        for (PetscInt k = 0; k < na; k++) v += T[i * na + k] * ly->QA[k * na + j];
        M[i * na + j] = v;
      }
    self[b] = 0;
    for (int64_t i = 0; i < (int64_t)nd * na; i++) {
      Lsum[i] += M[i] * M[i];
      self[b] += M[i] * M[i] / (ly->Lambda[i] + ly->damping);
      M[i] /= ly->Lambda[i] + ly->damping;
    }
    for (PetscInt i = 0; i < nd; i++) /* P_b = Q_S M Q_A^T */
      for (PetscInt j = 0; j < na; j++) {
        double v = 0;
        for (PetscInt k = 0; k < na; k++) v += M[i * na + k] * ly->QA[j * na + k];
        T[i * na + j] = v;
      }
    for (PetscInt i = 0; i < nd; i++)
      for (PetscInt j = 0; j < na; j++) {
        double v = 0;
        for (PetscInt k = 0; k < nd; k++) v += ly->QS[i * nd + k] * T[k * na + j];
        P[b * nd * na + i * na + j] = v;
      }
  }
  free(G);
  free(T);
  free(M);
}

static double rel(int64_t n, const double x[], const double r[])
{
  double e = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    e = PetscMax(e, fabs(x[i] - r[i]));
    m = PetscMax(m, fabs(r[i]));
  }
  return m > 0 ? e / m : e;
}

int main(int argc, char **argv)
{
  char            path[PETSC_MAX_PATH_LEN];
  const char     *src;
  InflModel       model;
  InflData        train;
  InflEKFAC       ek;
  InflEKFACLayer *ly;
  PetscInt        L;
  const PetscInt  B = 4, T = 11;
  const int64_t   off[5] = {0, 1, 4, 9, 11}; /* sequences of 1, 3, 5 and 2 rows */

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  src = getenv("INFL_SOURCE_DIR");
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/ref/mlp_small.safetensors", src ? src : "."));
  PetscCall(InflModelCreate(PETSC_COMM_WORLD, &model));
  PetscCall(InflModelLoad(model, path));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, FMNIST, 256, &train));
  PetscCall(InflEKFACCreate(PETSC_COMM_WORLD, &ek));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(InflEKFACGetLayers(ek, &L, &ly));
  for (int p = 0; p < 2; p++) {
    InflPrecision prec = p ? INFL_PREC_SINGLE : INFL_PREC_DOUBLE;
    InflCapture  *cap, *one;
    PetscCall(InflModelSetPrecision(model, prec));
    PetscCall(InflCaptureCreate(model, T, &cap));
    PetscCall(InflCaptureCreate(model, T, &one));
    cap->B = B;
    cap->T = T;
    for (PetscInt b = 0; b <= B; b++) cap->offsets[b] = off[b];
    one->B = one->T = T;
    for (PetscInt b = 0; b <= T; b++) one->offsets[b] = b;
    for (PetscInt l = 0; l < L; l++) {
      PetscInt na = ly[l].din + 1, nd = ly[l].dout;
      int64_t  per = (int64_t)nd * na;
      double  *a, *ds, *Lr, *Lx, *Lo, *sr, *sx, *so, *Pr, *Px, *ta, *td, e[4], ip = 0;
      PetscCall(PetscMalloc5((size_t)T * na, &a, (size_t)T * nd, &ds, (size_t)per, &Lr, (size_t)per, &Lx, (size_t)per, &Lo));
      PetscCall(PetscMalloc5(T, &sr, T, &sx, T, &so, (size_t)T * per, &Pr, (size_t)T * per, &Px));
      PetscCall(PetscMalloc2((size_t)T * na, &ta, (size_t)T * nd, &td));
      for (PetscInt t = 0; t < T; t++) { /* the values the capture holds, as doubles (rounded to float first in single) */
        for (PetscInt j = 0; j < na; j++) a[t * na + j] = j == na - 1 ? 1 : (p ? (double)(float)val(1000 * t + j) : val(1000 * t + j));
        for (PetscInt i = 0; i < nd; i++) ds[t * nd + i] = p ? (double)(float)(1e-3 * val(500000 + 1000 * t + i)) : 1e-3 * val(500000 + 1000 * t + i);
      }
      for (InflCapture *c = cap; c; c = c == cap ? one : NULL) {
        for (int64_t i = 0; i < (int64_t)T * na; i++) {
          if (p) c->a32[l][i] = (float)a[i];
          else c->a64[l][i] = a[i];
        }
        for (int64_t i = 0; i < (int64_t)T * nd; i++) {
          if (p) c->ds32[l][i] = (float)ds[i];
          else c->ds64[l][i] = ds[i];
        }
      }
      PetscCall(PetscArrayzero(Lr, per));
      PetscCall(PetscArrayzero(Lx, per));
      PetscCall(PetscArrayzero(Lo, per));
      PetscCall(PetscArrayzero(sx, T));
      PetscCall(PetscArrayzero(so, T));
      reference(&ly[l], B, off, a, ds, Lr, sr, Pr);
      PetscCall(InflEKFACAccumulateLambda(ek, l, cap, ta, td, Lx));
      PetscCall(InflEKFACSelfInfluenceCapture(ek, l, cap, sx));
      e[0] = rel(per, Lx, Lr);
      e[1] = rel(B, sx, sr);
      e[2] = 0;
      if (!p) {
        PetscCall(InflEKFACPreconditionCapture(ek, l, cap, Px));
        e[2] = rel(B * per, Px, Pr);
        /* self-influence of sequence b = <P_b, G_b> */
        for (PetscInt b = 0; b < B; b++) {
          double v = 0;
          for (PetscInt i = 0; i < nd; i++)
            for (PetscInt j = 0; j < na; j++) {
              double g = 0;
              for (int64_t t = off[b]; t < off[b + 1]; t++) g += ds[t * nd + i] * a[t * na + j];
              v += Px[b * per + i * na + j] * g;
            }
          ip = PetscMax(ip, fabs(v - sx[b]) / fabs(sr[b]));
        }
      }
      /* every row its own sequence: the rank-one paths (the reference with offsets 0..T) */
      {
        int64_t offo[12];
        double *Lro, *sro, *Pro;
        for (PetscInt t = 0; t <= T; t++) offo[t] = t;
        PetscCall(PetscCalloc3((size_t)per, &Lro, T, &sro, (size_t)T * per, &Pro));
        reference(&ly[l], T, offo, a, ds, Lro, sro, Pro);
        PetscCall(InflEKFACAccumulateLambda(ek, l, one, ta, td, Lo));
        PetscCall(InflEKFACSelfInfluenceCapture(ek, l, one, so));
        e[3] = PetscMax(rel(per, Lo, Lro), rel(T, so, sro));
        PetscCall(PetscFree3(Lro, sro, Pro));
      }
      {
        /* double: rounding of sums of up to 785 terms; single: the rank-one path rotates in float (its own bound,
         * test_ekfac), the sequence path in double from the float values */
        double tol = 1e-12, tol1 = p ? 2e-5 : 1e-12;
        EXPECT(e[0] <= tol && e[1] <= tol && e[2] <= tol && ip <= 1e-12 && e[3] <= tol1, "layer %d, %s precision: Lambda %.3e, self-influence %.3e, preconditioned %.3e, <P, G> vs self %.3e, one-row sequences %.3e", (int)l, p ? "single" : "double", e[0], e[1], e[2], ip, e[3]);
        PetscCall(PetscPrintf(PETSC_COMM_WORLD, "layer %d, %s precision: sequences of 1-5 rows: Lambda %.2e, self-influence %.2e, preconditioned %.2e, <P, G> %.2e; one-row sequences (rank-one path) %.2e\n", (int)l, p ? "single" : "double", e[0], e[1], e[2], ip, e[3]));
      }
      PetscCall(PetscFree5(a, ds, Lr, Lx, Lo));
      PetscCall(PetscFree5(sr, sx, so, Pr, Px));
      PetscCall(PetscFree2(ta, td));
    }
    { /* scores of the sequences against 2 preconditioned queries (random P) through the scorer's kernels, against
       * sum_l <P_l(q), G_b,l> formed here; single precision to the bound tau ||P_q|| ||G_b|| of docs/FORMATS.md */
      const PetscInt Q = 2;
      const int64_t  yq[2] = {0, 0}, qi[2] = {0, 1};
      double        *P[16], out[8], ref[8], tok[22], tref[22], pn[2] = {0, 0}, gn[4] = {0, 0, 0, 0}, e = 0, m = 0, et = 0, es = 0;
      InflScorer     sc;
      for (PetscInt l = 0; l < L; l++) {
        int64_t per = (int64_t)ly[l].dout * (ly[l].din + 1);
        PetscCall(PetscMalloc1((size_t)Q * per, &P[l]));
        for (int64_t i = 0; i < Q * per; i++) P[l][i] = val(9000000 + 100000 * l + i);
      }
      for (int i = 0; i < Q * B; i++) ref[i] = 0;
      for (int i = 0; i < Q * T; i++) tref[i] = 0;
      for (PetscInt l = 0; l < L; l++) {
        PetscInt na = ly[l].din + 1, nd = ly[l].dout;
        int64_t  per = (int64_t)nd * na;
        for (PetscInt b = 0; b < B; b++)
          for (PetscInt i = 0; i < nd; i++)
            for (PetscInt j = 0; j < na; j++) {
              double g = 0;
              for (int64_t t = off[b]; t < off[b + 1]; t++) g += (p ? (double)cap->ds32[l][t * nd + i] * cap->a32[l][t * na + j] : cap->ds64[l][t * nd + i] * cap->a64[l][t * na + j]);
              gn[b] += g * g;
              for (PetscInt q = 0; q < Q; q++) ref[q * B + b] += P[l][q * per + i * na + j] * g;
              for (int64_t t = off[b]; t < off[b + 1]; t++) /* the token's own term Ds_t^T P a_t */
                for (PetscInt q = 0; q < Q; q++) tref[q * T + t] += P[l][q * per + i * na + j] * (p ? (double)cap->ds32[l][t * nd + i] * cap->a32[l][t * na + j] : cap->ds64[l][t * nd + i] * cap->a64[l][t * na + j]);
            }
        for (PetscInt q = 0; q < Q; q++) for (int64_t i = 0; i < per; i++) pn[q] += P[l][q * per + i] * P[l][q * per + i];
      }
      PetscCall(InflScorerCreate(PETSC_COMM_SELF, &sc));
      PetscCall(InflScorerSetPreconditionedQueries(sc, model, Q, (const double *const *)P, yq, qi));
      PetscCall(InflScorerScoreCapture(sc, cap, out, tok));
      for (PetscInt q = 0; q < Q; q++)
        for (PetscInt b = 0; b < B; b++) {
          double bound = (p ? 2 * 785 * 0x1p-24 : 1e-12) * sqrt(pn[q] * gn[b]), sum = 0;
          e = PetscMax(e, fabs(out[q * B + b] - ref[q * B + b]) / bound);
          m = PetscMax(m, fabs(ref[q * B + b]));
          for (int64_t t = off[b]; t < off[b + 1]; t++) {
            sum += tok[q * T + t];
            et = PetscMax(et, fabs(tok[q * T + t] - tref[q * T + t]) / bound);
          }
          es = PetscMax(es, fabs(sum - out[q * B + b]) / bound);
        }
      EXPECT(e <= 1 && et <= 1 && es <= 1 && m > 0, "%s precision: sequence scores use %.3g, token terms %.3g, their sums %.3g of the bound", p ? "single" : "double", e, et, es);
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s precision: scores of sequences of 1-5 rows against 2 queries use %.2e of the bound; per-token terms %.2e, their sums vs the scores %.2e\n", p ? "single" : "double", e, et, es));
      PetscCall(InflScorerDestroy(&sc));
      for (PetscInt l = 0; l < L; l++) PetscCall(PetscFree(P[l]));
    }
    PetscCall(InflCaptureDestroy(&cap));
    PetscCall(InflCaptureDestroy(&one));
  }
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_ekfac_seq: all checks passed\n"));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscCall(PetscFinalize());
  return 0;
}

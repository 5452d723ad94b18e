/* Scoring kernels: the contraction of captured layer inputs and pseudo-gradients with preconditioned query gradients. */
#include "kernels.h"
#include <cblas.h>

/* out (Q, B) += layer l's terms for a chunk: out[q, b] = sum_ij ds[b,i] P_q[i,j] a[b,j].  T is (B, Q*max(nd,na)). */
#define SCORE_LAYER(NAME, REAL, GEMM) \
  void NAME(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const REAL *P, const REAL *a, const REAL *ds, REAL *T, double *out) \
  { \
    if (by_input) { \
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, Q * nd, na, 1, a, na, P, na, 0, T, Q * nd); \
      for (PetscInt b = 0; b < B; b++) \
        for (PetscInt q = 0; q < Q; q++) { \
          const REAL *t = T + (int64_t)b * Q * nd + (int64_t)q * nd, *d = ds + (int64_t)b * nd; \
          double      s = 0; \
          for (PetscInt i = 0; i < nd; i++) s += (double)t[i] * (double)d[i]; \
          out[(int64_t)q * B + b] += s; \
        } \
    } else { \
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, Q * na, nd, 1, ds, nd, P, Q * na, 0, T, Q * na); \
      for (PetscInt b = 0; b < B; b++) \
        for (PetscInt q = 0; q < Q; q++) { \
          const REAL *t = T + (int64_t)b * Q * na + (int64_t)q * na, *x = a + (int64_t)b * na; \
          double      s = 0; \
          for (PetscInt j = 0; j < na; j++) s += (double)t[j] * (double)x[j]; \
          out[(int64_t)q * B + b] += s; \
        } \
    } \
  }
SCORE_LAYER(InflScoreLayer_f32, float, cblas_sgemm)
SCORE_LAYER(InflScoreLayer_f64, double, cblas_dgemm)

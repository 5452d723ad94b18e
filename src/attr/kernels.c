/* Scoring kernels: the contraction of captured layer inputs and pseudo-gradients with preconditioned query gradients.
 * InflScoreLayer_* is the blocked kernel used by InflScorerScore; InflScoreLayerRef_* the plain loops it is tested
 * against (tests/test_kernels.c). */
#include "kernels.h"
#include <cblas.h>

/* Rows and queries per block: T for one block is (bb, qb*w) with w = nd (by_input) or na, sized to stay in the
 * per-core L2 cache (2 MiB on the Xeon of docs/PERFORMANCE.md).  Every GEMM call packs its block of P again, so the
 * row block is kept large (bench/score_kernel: 1024 rows x 1 MiB about 100 GFLOP/s, 256 rows 63, unblocked 37). */
static PetscInt score_block_rows  = 1024;
static size_t   score_block_bytes = (size_t)1 << 20;

void InflScoreLayerSetBlocking(PetscInt rows, size_t bytes)
{
  score_block_rows  = rows > 0 ? rows : 1024;
  score_block_bytes = bytes > 0 ? bytes : (size_t)1 << 20;
}

static void score_blocks(PetscInt Q, PetscInt B, PetscInt w, size_t es, PetscInt *bb, PetscInt *qb)
{
  size_t q;
  *bb = PetscMin(B, score_block_rows);
  if (*bb < 1) *bb = 1;
  q   = score_block_bytes / ((size_t)*bb * (size_t)w * es);
  *qb = (PetscInt)PetscMax(1, PetscMin((size_t)Q, q));
}

/* The scratch of every call with at most B rows: a call with fewer rows takes more queries per block, so the scratch of
 * B rows itself is not an upper bound (bb floor(X / bb) is not monotone in bb).  For any B' <= B, with bb' = min(B',
 * rows): either qb' >= 1 queries fit the byte budget, and bb' qb' w <= min(budget / es, bb Q w), or one query is
 * taken regardless, and bb' w <= bb w. */
int64_t InflScoreLayerScratch(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, size_t es)
{
  PetscInt w = by_input ? nd : na, bb, qb;
  int64_t  budget;
  score_blocks(Q, B, w, es, &bb, &qb);
  budget = PetscMin((int64_t)(score_block_bytes / es), (int64_t)bb * PetscMax(Q, 1) * w);
  return PetscMax(budget, (int64_t)bb * w);
}

/* s = sum_i t[i] d[i] in double, four independent partial sums (the loop is latency bound otherwise). */
#define DOT_DOUBLE(REAL, t, d, n, s) \
  do { \
    double   s0_ = 0, s1_ = 0, s2_ = 0, s3_ = 0; \
    PetscInt i_  = 0; \
    for (; i_ + 4 <= (n); i_ += 4) { \
      s0_ += (double)(t)[i_] * (double)(d)[i_]; \
      s1_ += (double)(t)[i_ + 1] * (double)(d)[i_ + 1]; \
      s2_ += (double)(t)[i_ + 2] * (double)(d)[i_ + 2]; \
      s3_ += (double)(t)[i_ + 3] * (double)(d)[i_ + 3]; \
    } \
    for (; i_ < (n); i_++) s0_ += (double)(t)[i_] * (double)(d)[i_]; \
    (s) = (s0_ + s1_) + (s2_ + s3_); \
  } while (0)

/* Blocked: for each block of bb training rows and qb queries, T = a P_blk^T (bb, qb*nd) by one GEMM (or ds P_blk,
 * (bb, qb*na)), then the row-wise products with ds (or a) while T is in cache. */
#define SCORE_LAYER(NAME, REAL, GEMM) \
  void NAME(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const REAL *P, const REAL *a, const REAL *ds, REAL *T, double *out) \
  { \
    PetscInt w = by_input ? nd : na, bb, qb; \
    if (B <= 0 || Q <= 0) return; \
    score_blocks(Q, B, w, sizeof(REAL), &bb, &qb); \
    for (PetscInt b0 = 0; b0 < B; b0 += bb) { \
      PetscInt nb = PetscMin(bb, B - b0); \
      for (PetscInt q0 = 0; q0 < Q; q0 += qb) { \
        PetscInt nq = PetscMin(qb, Q - q0); \
        if (by_input) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nq * nd, na, 1, a + (int64_t)b0 * na, na, P + (int64_t)q0 * nd * na, na, 0, T, nq * nd); \
        else GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, nq * na, nd, 1, ds + (int64_t)b0 * nd, nd, P + (int64_t)q0 * na, (int64_t)Q * na, 0, T, nq * na); \
        for (PetscInt b = 0; b < nb; b++) { \
          const REAL *x = by_input ? ds + (int64_t)(b0 + b) * nd : a + (int64_t)(b0 + b) * na; \
          for (PetscInt q = 0; q < nq; q++) { \
            const REAL *t = T + (int64_t)b * nq * w + (int64_t)q * w; \
            double      s; \
            DOT_DOUBLE(REAL, t, x, w, s); \
            out[(int64_t)(q0 + q) * B + b0 + b] += s; \
          } \
        } \
      } \
    } \
  }
SCORE_LAYER(InflScoreLayer_f32, float, cblas_sgemm)
SCORE_LAYER(InflScoreLayer_f64, double, cblas_dgemm)

/* Reference: the definition, in double, no BLAS, no blocking. */
#define SCORE_LAYER_REF(NAME, REAL) \
  void NAME(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const REAL *P, const REAL *a, const REAL *ds, double *out) \
  { \
    for (PetscInt q = 0; q < Q; q++) \
      for (PetscInt b = 0; b < B; b++) { \
        double s = 0; \
        for (PetscInt i = 0; i < nd; i++) { \
          double r = 0; \
          for (PetscInt j = 0; j < na; j++) { \
            REAL p = by_input ? P[((int64_t)q * nd + i) * na + j] : P[(int64_t)i * Q * na + (int64_t)q * na + j]; \
            r += (double)p * (double)a[(int64_t)b * na + j]; \
          } \
          s += r * (double)ds[(int64_t)b * nd + i]; \
        } \
        out[(int64_t)q * B + b] += s; \
      } \
  }
SCORE_LAYER_REF(InflScoreLayerRef_f32, float)
SCORE_LAYER_REF(InflScoreLayerRef_f64, double)

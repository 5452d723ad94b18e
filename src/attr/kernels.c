/* Scoring kernels: the contraction of captured layer inputs and pseudo-gradients with preconditioned query gradients.
 * InflScoreLayer_* (per row) and InflScoreSequences_* (per sequence of rows) are the blocked kernels used by
 * InflScorerScore; InflScoreLayerRef_* and InflScoreSequencesRef_* the plain loops they are tested against
 * (tests/test_kernels.c). */
#include "kernels.h"
#include <cblas.h>
#include <string.h>

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

/* Sequences per block of the sequence kernel: their gradients DW (nb, nd*na) take at most 4 times the byte budget of
 * T (at least one sequence); nondecreasing in B, so the scratch of B sequences covers every B' <= B.  The contraction
 * GEMMs are (Q, nb) wide, so nb matters: at the fortunes GPT-2's shapes (bench_seq_kernel, Q 20) 1 MiB (3 windows)
 * ran at 0.48 of SGEMM, 4 MiB (15) at 0.58, 16 MiB at 0.55; Q 5 was 0.61-0.63 with each. */
static PetscInt seq_block(PetscInt B, PetscInt nd, PetscInt na, size_t es)
{
  size_t per = (size_t)nd * (size_t)na * es;
  return (PetscInt)PetscMax(1, PetscMin((size_t)PetscMax(B, 1), 4 * score_block_bytes / per));
}

int64_t InflScoreSequencesScratch(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, size_t es)
{
  PetscInt nb = seq_block(B, nd, na, es);
  return (int64_t)nb * nd * na + (int64_t)PetscMax(Q, 1) * nb;
}

/* For each block of nb sequences: DW_b = ds_b^T a_b (nd, na) by one GEMM per sequence into W (nb, nd*na), then the
 * contraction Z (Q, nb) = P W^T by GEMMs over blocks of whole rows of DW of at most kb elements (one row if na > kb),
 * each block's Z added to out in double. */
#define SCORE_SEQUENCES(NAME, REAL, GEMM) \
  void NAME(PetscInt Q, PetscInt B, const int64_t offsets[], PetscInt nd, PetscInt na, PetscInt kb, const REAL *P, const REAL *a, const REAL *ds, REAL *W, double *out) \
  { \
    int64_t  K = (int64_t)nd * na; \
    PetscInt bs, rb; \
    REAL    *Z; \
    if (B <= 0 || Q <= 0) return; \
    bs = seq_block(B, nd, na, sizeof(REAL)); \
    rb = PetscMax(1, kb / na); \
    Z  = W + (int64_t)bs * K; \
    for (PetscInt b0 = 0; b0 < B; b0 += bs) { \
      PetscInt nb = PetscMin(bs, B - b0); \
      for (PetscInt b = 0; b < nb; b++) { \
        int64_t r0 = offsets[b0 + b], nr = offsets[b0 + b + 1] - r0; \
        if (nr > 0) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, nr, 1, ds + r0 * nd, nd, a + r0 * na, na, 0, W + b * K, na); \
        else memset(W + b * K, 0, sizeof(REAL) * (size_t)K); \
      } \
      for (PetscInt i0 = 0; i0 < nd; i0 += rb) { \
        PetscInt ni = PetscMin(rb, nd - i0); \
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Q, nb, ni * na, 1, P + (int64_t)i0 * na, K, W + (int64_t)i0 * na, K, 0, Z, nb); \
        for (PetscInt q = 0; q < Q; q++) \
          for (PetscInt b = 0; b < nb; b++) out[(int64_t)q * B + b0 + b] += (double)Z[(int64_t)q * nb + b]; \
      } \
    } \
  }
SCORE_SEQUENCES(InflScoreSequences_f32, float, cblas_sgemm)
SCORE_SEQUENCES(InflScoreSequences_f64, double, cblas_dgemm)

/* Reference: the definition, sum over the sequence's rows of ds_t^T P_q a_t, in double, no BLAS, no blocking. */
#define SCORE_SEQUENCES_REF(NAME, REAL) \
  void NAME(PetscInt Q, PetscInt B, const int64_t offsets[], PetscInt nd, PetscInt na, const REAL *P, const REAL *a, const REAL *ds, double *out) \
  { \
    for (PetscInt q = 0; q < Q; q++) \
      for (PetscInt b = 0; b < B; b++) { \
        double s = 0; \
        for (int64_t t = offsets[b]; t < offsets[b + 1]; t++) \
          for (PetscInt i = 0; i < nd; i++) { \
            double r = 0; \
            for (PetscInt j = 0; j < na; j++) r += (double)P[((int64_t)q * nd + i) * na + j] * (double)a[t * na + j]; \
            s += r * (double)ds[t * nd + i]; \
          } \
        out[(int64_t)q * B + b] += s; \
      } \
  }
SCORE_SEQUENCES_REF(InflScoreSequencesRef_f32, float)
SCORE_SEQUENCES_REF(InflScoreSequencesRef_f64, double)

/* The sequence scoring kernel (InflScoreSequences_f32) at the MLP layer shapes of a GPT-2 (default: the fortunes
 * model, n_embd 128: mlp.c_fc nd 512 na 129, mlp.c_proj nd 128 na 513) on B windows against Q queries, against the
 * per-token kernel (InflScoreLayer_f32 on the same rows, then summed per window) and a single-thread SGEMM of
 * 1024 x 1024 x 1024, measured in turn in every repetition.  Times are CPU time of this thread
 * (CLOCK_THREAD_CPUTIME_ID), so that a machine shared with other jobs slows the rates less than wall time would;
 * the ratio to the SGEMM of the same repetition is the figure to quote.  Window lengths: even windows are full
 * (n_positions 128), odd ones 20 + (53 b mod 100) tokens (the fortunes windows average about 94).
 *   seq_kernel [Q 5] [B 64] [reps 7] [n_embd 128] [kb: contraction block, 0 = the widest layer input]
 * prints one line per kernel: name, median seconds, GFLOP/s (multiply-add = 2), ratio to the SGEMM rate. */
#include "attr/kernels.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu(void)
{
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *x, const void *y)
{
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof(double), cmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
  int      Q = argc > 1 ? atoi(argv[1]) : 5, B = argc > 2 ? atoi(argv[2]) : 64, reps = argc > 3 ? atoi(argv[3]) : 7, C = argc > 4 ? atoi(argv[4]) : 128;
  int      kb = argc > 5 ? atoi(argv[5]) : 0, shapes[2][2] = {{4 * C, C + 1}, {C, 4 * C + 1}}, n = 1024;
  int64_t *off = malloc(sizeof(int64_t) * (B + 1)), R;
  double   fseq = 0, ftok = 0, *ts = malloc(sizeof(double) * reps), *tt = malloc(sizeof(double) * reps), *tg = malloc(sizeof(double) * reps);
  float   *A = malloc(sizeof(float) * n * n), *Bm = malloc(sizeof(float) * n * n), *Cm = malloc(sizeof(float) * n * n);

  if (kb <= 0) kb = 4 * C + 1;
  if (argc > 6) InflScoreLayerSetBlocking(0, (size_t)atoi(argv[6]) << 10); /* KiB of the blocks (experiments) */
  for (int k = 0; k < reps; k++) tg[k] = ts[k] = tt[k] = 0;
  off[0] = 0;
  for (int b = 0; b < B; b++) off[b + 1] = off[b] + (b % 2 ? 20 + (53 * b) % 100 : 128);
  R = off[B];
  for (int64_t i = 0; i < (int64_t)n * n; i++) A[i] = Bm[i] = (float)(i % 7) * 0.1f;
  printf("# seq_kernel: Q %d, %d windows, %lld tokens, layers (nd, na) (%d, %d) and (%d, %d), contraction blocks of %d, median of %d, CPU time\n", Q, B, (long long)R, shapes[0][0], shapes[0][1], shapes[1][0], shapes[1][1], kb, reps);
  for (int l = 0; l < 2; l++) {
    int    nd = shapes[l][0], na = shapes[l][1];
    float *P = malloc(sizeof(float) * Q * nd * na), *a = malloc(sizeof(float) * R * na), *ds = malloc(sizeof(float) * R * nd);
    float *W = malloc(sizeof(float) * InflScoreSequencesScratch(Q, B, nd, na, sizeof(float)));
    float *T = malloc(sizeof(float) * InflScoreLayerScratch(Q, (PetscInt)R, nd, na, PETSC_TRUE, sizeof(float)));
    double *out = calloc((size_t)Q * R, sizeof(double));
    for (int64_t i = 0; i < (int64_t)Q * nd * na; i++) P[i] = (float)((i % 13) - 6) * 0.01f;
    for (int64_t i = 0; i < R * na; i++) a[i] = (float)(i % 7) * 0.1f;
    for (int64_t i = 0; i < R * nd; i++) ds[i] = (float)((i % 5) - 2) * 0.1f;
    for (int r = 0; r <= reps; r++) { /* r = 0 warms up */
      double t0 = cpu(), t1, t2, t3;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, A, n, Bm, n, 0, Cm, n);
      t1 = cpu();
      InflScoreSequences_f32(Q, B, off, nd, na, kb, P, a, ds, W, out);
      t2 = cpu();
      InflScoreLayer_f32(Q, (PetscInt)R, nd, na, PETSC_TRUE, P, a, ds, T, out);
      t3 = cpu();
      if (r) {
        tg[r - 1] += t1 - t0;
        ts[r - 1] += t2 - t1;
        tt[r - 1] += t3 - t2;
      }
    }
    fseq += 2.0 * R * nd * na + 2.0 * Q * B * nd * na;
    ftok += 2.0 * R * Q * nd * na;
    free(P); free(a); free(ds); free(W); free(T); free(out);
  }
  {
    double g = median(tg, reps) / 2, s = median(ts, reps), t = median(tt, reps), gr = 2.0 * n * n * n / g * 1e-9;
    printf("sgemm_1024      %8.4f s %8.2f GFLOP/s\n", g, gr);
    printf("sequence_kernel %8.4f s %8.2f GFLOP/s %5.2f of sgemm (%.2f GFLOP)\n", s, fseq / s * 1e-9, fseq / s * 1e-9 / gr, fseq * 1e-9);
    printf("token_kernel    %8.4f s %8.2f GFLOP/s %5.2f of sgemm (%.2f GFLOP; %.1fx the sequence kernel's time)\n", t, ftok / t * 1e-9, ftok / t * 1e-9 / gr, ftok * 1e-9, t / s);
  }
  free(off); free(ts); free(tt); free(tg); free(A); free(Bm); free(Cm);
  return 0;
}

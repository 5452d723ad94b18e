/* The scoring kernel alone at the Fashion-MNIST layer-1 shape (nd 256, na 785), Q queries, one chunk of B rows, for
 * a sweep of blockings, against the unblocked form (one GEMM into T of B*Q*nd, then the dot products).
 *   score_kernel [Q 100] [B 1024] [reps 3]   prints: rows bytes seconds GFLOP/s */
#include "attr/kernels.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
  PetscInt Q = argc > 1 ? atoi(argv[1]) : 100, B = argc > 2 ? atoi(argv[2]) : 1024, reps = argc > 3 ? atoi(argv[3]) : 3, nd = 256, na = 785;
  PetscInt rows[] = {64, 128, 256, 512, 1024};
  size_t   bytes[] = {(size_t)256 << 10, (size_t)512 << 10, (size_t)1 << 20, (size_t)2 << 20, (size_t)4 << 20};
  float   *P = malloc(sizeof(float) * Q * nd * na), *a = malloc(sizeof(float) * B * na), *ds = malloc(sizeof(float) * B * nd);
  float   *T = malloc(sizeof(float) * (size_t)B * Q * nd);
  double  *out = calloc((size_t)Q * B, sizeof(double)), flops = 2.0 * Q * B * nd * na;
  for (int64_t i = 0; i < (int64_t)Q * nd * na; i++) P[i] = (float)((i % 13) - 6) * 0.01f;
  for (int64_t i = 0; i < (int64_t)B * na; i++) a[i] = (float)(i % 7) * 0.1f;
  for (int64_t i = 0; i < (int64_t)B * nd; i++) ds[i] = (float)((i % 5) - 2) * 0.1f;
  printf("# Q %d B %d nd %d na %d\n# rows bytes seconds GFLOP/s\n", (int)Q, (int)B, (int)nd, (int)na);
  { /* unblocked: the kernel as it was (T of B*Q*nd) */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, Q * nd, na, 1, a, na, P, na, 0, T, Q * nd);
      for (PetscInt b = 0; b < B; b++)
        for (PetscInt q = 0; q < Q; q++) {
          const float *t = T + (int64_t)b * Q * nd + (int64_t)q * nd, *d = ds + (int64_t)b * nd;
          double       s = 0;
          for (PetscInt i = 0; i < nd; i++) s += (double)t[i] * (double)d[i];
          out[(int64_t)q * B + b] += s;
        }
      if (now() - t0 < best) best = now() - t0;
    }
    printf("unblocked %10s %8.4f %8.2f\n", "-", best, flops / best * 1e-9);
  }
  for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
    for (size_t j = 0; j < sizeof(bytes) / sizeof(bytes[0]); j++) {
      double best = 1e30;
      InflScoreLayerSetBlocking(rows[i], bytes[j]);
      for (int r = 0; r < reps; r++) {
        double t0 = now();
        InflScoreLayer_f32(Q, B, nd, na, PETSC_TRUE, P, a, ds, T, out);
        if (now() - t0 < best) best = now() - t0;
      }
      printf("%9d %10zu %8.4f %8.2f\n", (int)rows[i], bytes[j], best, flops / best * 1e-9);
    }
  free(P); free(a); free(ds); free(T); free(out);
  return 0;
}

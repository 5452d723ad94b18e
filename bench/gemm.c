/* Single-thread OpenBLAS reference rates at the shapes of the Fashion-MNIST MLP stages.
 *   gemm [reps]   prints one line per kernel and shape: name M N K GFLOP/s (best of reps), and the peak of each
 *   precision last ("sgemm_peak", "dgemm_peak"), which bench/run.sh uses as the denominator of its ratios.
 * Run it with OPENBLAS_NUM_THREADS=1 (bench/run.sh does). */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
  const char *what;
  int         M, N, K;
} Shape;

/* C (M, N) = A (M, K) B^T, B (N, K): the layout of the scoring and forward GEMMs. */
static double rate(int dbl, int syrk, Shape s, int reps)
{
  size_t es   = dbl ? sizeof(double) : sizeof(float);
  void  *A    = malloc((size_t)s.M * s.K * es), *B = malloc((size_t)s.N * s.K * es), *C = calloc((size_t)(syrk ? s.N : s.M) * s.N, es);
  double best = 1e30, flops = syrk ? (double)s.N * (s.N + 1) * s.K : 2.0 * s.M * s.N * s.K;
  for (size_t i = 0; i < (size_t)s.M * s.K; i++) dbl ? (((double *)A)[i] = (double)(i % 7) * 0.1) : (((float *)A)[i] = (float)(i % 7) * 0.1f);
  for (size_t i = 0; i < (size_t)s.N * s.K; i++) dbl ? (((double *)B)[i] = (double)(i % 5) * 0.1) : (((float *)B)[i] = (float)(i % 5) * 0.1f);
  for (int r = 0; r <= reps; r++) { /* r = 0 warms up */
    double t0 = now(), t;
    if (syrk) cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, s.N, s.K, 1.0, B, s.N, 1.0, C, s.N);
    else if (dbl) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.M, s.N, s.K, 1.0, A, s.K, B, s.K, 0.0, C, s.N);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.M, s.N, s.K, 1.0f, A, s.K, B, s.K, 0.0f, C, s.N);
    t = now() - t0;
    if (r > 0 && t < best) best = t;
  }
  free(A);
  free(B);
  free(C);
  return flops / best * 1e-9;
}

int main(int argc, char **argv)
{
  int   reps     = argc > 1 ? atoi(argv[1]) : 5;
  Shape shapes[] = {
    {"score_l1", 256, 1024, 785},   /* a P^T of one block of 4 queries, layer 1 */
    {"score_l1_q100", 1024, 25600, 785}, /* the unblocked T = a P^T for Q = 100 */
    {"forward_l1", 1024, 256, 784}, /* h W^T, layer 1, chunk 1024 */
    {"forward_l2", 1024, 256, 256},
    {"lambda_l1", 1024, 785, 785},  /* a Q_A, layer 1 */
    {"square_2048", 2048, 2048, 2048},
  };
  double ps = 0, pd = 0;
  if (reps < 1) reps = 1;
  printf("# kernel shape M N K GFLOP/s (single thread, best of %d)\n", reps);
  for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
    double s = rate(0, 0, shapes[i], reps), d = rate(1, 0, shapes[i], reps);
    printf("sgemm %-14s %6d %6d %6d %8.2f\n", shapes[i].what, shapes[i].M, shapes[i].N, shapes[i].K, s);
    printf("dgemm %-14s %6d %6d %6d %8.2f\n", shapes[i].what, shapes[i].M, shapes[i].N, shapes[i].K, d);
    if (s > ps) ps = s;
    if (d > pd) pd = d;
  }
  {
    Shape c1 = {"cov_A_l1", 0, 785, 1024}, c2 = {"cov_S_l1", 0, 256, 1024};
    printf("dsyrk %-14s %6d %6d %6d %8.2f\n", c1.what, c1.N, c1.N, c1.K, rate(1, 1, c1, reps));
    printf("dsyrk %-14s %6d %6d %6d %8.2f\n", c2.what, c2.N, c2.N, c2.K, rate(1, 1, c2, reps));
  }
  printf("sgemm_peak %.2f\ndgemm_peak %.2f\n", ps, pd);
  return 0;
}

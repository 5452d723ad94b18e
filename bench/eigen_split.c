/* Split-layer eigensolves (InflEigenSolveSplit, docs/FORMATS.md "Split layers") at given factor orders.
 *   mpiexec -n E bench_eigen_split -n 2049,2048 [-reps 1] [-eigen_split_gather 0|1]
 * Each factor is a symmetric matrix with entries from a hash of (i, j) plus n on the diagonal (positive definite),
 * held as rows block-cyclically over the E ranks (block min(64, ceil(n / E))).  Prints the wall time of each solve
 * of all the factors together (rank 0) and a checksum of the eigenvalues. */
#include <infl/eigen.h>
#include <infl/layout.h>
#include <petscsys.h>

static double entry(int64_t i, int64_t j)
{
  uint64_t h = (uint64_t)(i < j ? i : j) * 1000003u + (uint64_t)(i < j ? j : i) * 7919u + 12345u;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return (double)(h % 2000001) / 1000000.0 - 1.0;
}

int main(int argc, char **argv)
{
  PetscInt    n[16], nfac = 16, reps = 1;
  PetscMPIInt size, rank;
  int         nb[16];
  double     *C[16], *ev[16], *Q[16];

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  PetscCallMPI(MPI_Comm_rank(PETSC_COMM_WORLD, &rank));
  n[0] = 2049;
  n[1] = 2048;
  PetscCall(PetscOptionsGetIntArray(NULL, NULL, "-n", n, &nfac, NULL));
  if (nfac == 16) nfac = 2; /* not given */
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-reps", &reps, NULL));
  for (PetscInt r = 0; r < reps; r++) {
    double t0, t1, sum = 0;
    for (PetscInt f = 0; f < nfac; f++) {
      int64_t nloc;
      nb[f] = InflLayerLayoutSplitBlock(n[f], size);
      nloc  = InflBlacsLocalCount(n[f], nb[f], rank, size);
      PetscCall(PetscMalloc3(PetscMax(nloc * n[f], 1), &C[f], n[f], &ev[f], PetscMax(nloc * n[f], 1), &Q[f]));
      for (int64_t k = 0; k < nloc; k++) {
        int64_t gi = InflBlacsGlobal(k, nb[f], rank, size);
        for (int64_t j = 0; j < n[f]; j++) C[f][k * n[f] + j] = entry(gi, j) + (gi == j ? (double)n[f] : 0);
      }
    }
    PetscCallMPI(MPI_Barrier(PETSC_COMM_WORLD));
    PetscCall(PetscTime(&t0));
    PetscCall(InflEigenSolveSplit(PETSC_COMM_WORLD, nfac, n, nb, C, 1.0, ev, Q, NULL, -1));
    PetscCallMPI(MPI_Barrier(PETSC_COMM_WORLD));
    PetscCall(PetscTime(&t1));
    for (PetscInt f = 0; f < nfac; f++) {
      for (PetscInt i = 0; i < n[f]; i++) sum += ev[f][i];
      PetscCall(PetscFree3(C[f], ev[f], Q[f]));
    }
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "eigen_split E %d nfac %d time %.3f s sum(evals) %.12e\n", size, (int)nfac, t1 - t0, sum));
  }
  PetscCall(InflEigenFinalize());
  PetscCall(PetscFinalize());
  return 0;
}

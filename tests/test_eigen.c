/* InflEigenSolve (ScaLAPACK pdsyevd) against LAPACK dsyevd on the full matrix, at any rank count.
 *   random PSD factors of orders 1, 3, 17, 65, 130, 257 split into per-rank shares of the sum;
 *   repeated eigenvalues (diagonal with duplicates, zero matrix); a NaN gives the same error on every rank;
 *   InflEigenSolveSplit on the same factors held by block-cyclic rows: by pdsyevd, and gathered for dsyevd and pdsyevd mixed.
 * Options: -bench_n N  only time solves of an N x N factor (printed, no assertions). */
#include <infl/eigen.h>
#include <infl/layout.h>
#include <math.h>

extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work, const int *lwork, int *iwork, const int *liwork, int *info);

#define SEED 20240611ULL

/* Reference eigenvalues of a (m, m) symmetric matrix with LAPACK dsyevd. */
static PetscErrorCode ref_evals(int m, const double *A, double *w)
{
  double *a, *work, q = 0;
  int    *iwork, lw = -1, liw = -1, qi = 0, info = 0;

  PetscFunctionBegin;
  if (!m) PetscFunctionReturn(0);
  PetscCall(PetscMalloc1((int64_t)m * m, &a));
  PetscCall(PetscArraycpy(a, A, (int64_t)m * m));
  dsyevd_("N", "U", &m, a, &m, w, &q, &lw, &qi, &liw, &info);
  PetscCheck(!info, PETSC_COMM_SELF, PETSC_ERR_LIB, "dsyevd query info %d", info);
  lw  = (int)q + 1;
  liw = qi + 1;
  PetscCall(PetscMalloc2(lw, &work, liw, &iwork));
  dsyevd_("N", "U", &m, a, &m, w, work, &lw, iwork, &liw, &info);
  PetscCheck(!info, PETSC_COMM_SELF, PETSC_ERR_LIB, "dsyevd info %d", info);
  PetscCall(PetscFree2(work, iwork));
  PetscCall(PetscFree(a));
  PetscFunctionReturn(0);
}

/* Random PSD factor: sum over k < r of x_k x_k^T, x_k entries uniform in [-0.5, 0.5); term k belongs to the
 * share of rank k % size.  full: the whole sum (every term), part: this rank's share. */
static void make_psd(int f, int m, int r, int rank, int size, double *full, double *part)
{
  double *x = (double *)malloc((size_t)m * sizeof(double));
  for (int64_t i = 0; i < (int64_t)m * m; i++) full[i] = part[i] = 0;
  for (int k = 0; k < r; k++) {
    for (int i = 0; i < m; i++) x[i] = InflUniform(SEED, (uint64_t)f << 40 | (uint64_t)k << 20 | (uint64_t)i, 7) - 0.5;
    for (int i = 0; i < m; i++)
      for (int j = 0; j < m; j++) {
        full[(int64_t)i * m + j] += x[i] * x[j];
        if (k % size == rank) part[(int64_t)i * m + j] += x[i] * x[j];
      }
  }
  free(x);
}

/* Check one solved factor against the expected matrix Cx (already scaled). */
static PetscErrorCode check_factor(MPI_Comm comm, const char *name, int m, const double *Cx, const double *C, const double *w, const double *Q)
{
  double *wref, emax = 0, eerr = 0, cerr = 0, cnorm = 0, oerr = 0, rerr = 0;
  int     rank;

  PetscFunctionBegin;
  MPI_Comm_rank(comm, &rank);
  PetscCall(PetscMalloc1(m + 1, &wref));
  PetscCall(ref_evals(m, Cx, wref));
  for (int i = 0; i < m; i++) {
    emax = PetscMax(emax, fabs(wref[i]));
    eerr = PetscMax(eerr, fabs(w[i] - wref[i]));
    if (i) InflCheckAll(comm, w[i] >= w[i - 1], PETSC_ERR_PLIB, "%s: eigenvalues not ascending at %d", name, i);
  }
  for (int64_t k = 0; k < (int64_t)m * m; k++) {
    cerr  = PetscMax(cerr, fabs(C[k] - Cx[k]));
    cnorm += Cx[k] * Cx[k];
  }
  cnorm = sqrt(cnorm);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < m; j++) {
      double qq = 0, cq = 0;
      for (int k = 0; k < m; k++) {
        qq += Q[(int64_t)k * m + i] * Q[(int64_t)k * m + j];
        cq += C[(int64_t)i * m + k] * Q[(int64_t)k * m + j];
      }
      oerr += (qq - (i == j)) * (qq - (i == j));
      rerr += (cq - Q[(int64_t)i * m + j] * w[j]) * (cq - Q[(int64_t)i * m + j] * w[j]);
    }
  oerr = sqrt(oerr);
  rerr = sqrt(rerr);
  InflCheckAll(comm, eerr <= 1e-10 * emax, PETSC_ERR_PLIB, "%s (n=%d) rank %d: eigenvalue error %g vs max |lambda| %g", name, m, rank, eerr, emax);
  InflCheckAll(comm, cerr <= 1e-12 * PetscMax(cnorm, 1e-300), PETSC_ERR_PLIB, "%s (n=%d) rank %d: returned factor differs by %g", name, m, rank, cerr);
  InflCheckAll(comm, oerr < 1e-10, PETSC_ERR_PLIB, "%s (n=%d) rank %d: ||Q^T Q - I|| = %g", name, m, rank, oerr);
  InflCheckAll(comm, rerr <= 1e-9 * PetscMax(cnorm, 1e-300) || (cnorm == 0 && rerr == 0), PETSC_ERR_PLIB, "%s (n=%d) rank %d: ||C Q - Q diag(evals)|| = %g, ||C|| = %g", name, m, rank, rerr, cnorm);
  /* identical on every rank */
  {
    double s[2] = {w[0 < m ? 0 : 0], Q[0]}, mx[2], mn[2];
    if (m) {
      s[0] = w[m - 1];
      s[1] = Q[(int64_t)m * m - 1];
      MPI_Allreduce(s, mx, 2, MPI_DOUBLE, MPI_MAX, comm);
      MPI_Allreduce(s, mn, 2, MPI_DOUBLE, MPI_MIN, comm);
      InflCheckAll(comm, mx[0] == mn[0] && mx[1] == mn[1], PETSC_ERR_PLIB, "%s: results differ between ranks", name);
    }
  }
  PetscCall(PetscFree(wref));
  PetscFunctionReturn(0);
}

#define NF 9

static PetscErrorCode run_suite(MPI_Comm comm, int round)
{
  const PetscInt ord[NF] = {1, 3, 17, 65, 130, 257, 6, 70, 5};
  const char    *names[NF] = {"psd n=1", "psd n=3", "psd n=17", "psd n=65", "psd n=130", "psd n=257", "diagonal with duplicates n=6", "diagonal with duplicates n=70", "zero matrix n=5"};
  double        *C[NF], *Cx[NF], *w[NF], *Q[NF], scale = 1.0 / 3.0;
  int            rank, size;

  PetscFunctionBegin;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  for (int f = 0; f < NF; f++) {
    int m = (int)ord[f];
    PetscCall(PetscMalloc4((int64_t)m * m, &C[f], (int64_t)m * m, &Cx[f], m, &w[f], (int64_t)m * m, &Q[f]));
    if (f < 6) make_psd(f, m, f == 5 ? m / 2 : m + 3, rank, size, Cx[f], C[f]); /* n=257: rank deficient */
    else {
      for (int64_t k = 0; k < (int64_t)m * m; k++) Cx[f][k] = C[f][k] = 0;
      if (f < 8)
        for (int i = 0; i < m; i++) {
          Cx[f][(int64_t)i * m + i] = (double)(1 + (i * 7) % 3); /* values 1, 2, 3 repeated */
          if (rank == i % size) C[f][(int64_t)i * m + i] = Cx[f][(int64_t)i * m + i];
        }
    }
    for (int64_t k = 0; k < (int64_t)m * m; k++) Cx[f][k] *= scale;
  }
  PetscCall(InflEigenSolve(comm, NF, ord, C, scale, w, Q, names));
  for (int f = 0; f < NF; f++) PetscCall(check_factor(comm, names[f], (int)ord[f], Cx[f], C[f], w[f], Q[f]));
  for (int f = 0; f < NF; f++) PetscCall(PetscFree4(C[f], Cx[f], w[f], Q[f]));
  if (!rank) PetscCall(PetscPrintf(PETSC_COMM_SELF, "round %d: %d factors correct on %d ranks\n", round, NF, size));
  PetscFunctionReturn(0);
}


/* InflEigenSolveSplit on the factors of run_suite, held as block-cyclic rows (the layer split's blocks), with
 * a memory budget of `budget` bytes: none gathered (0: pdsyevd on the 1 x P grid), or the small ones gathered to one
 * rank for dsyevd (the other path, in the same call); each checked whole as InflEigenSolve's. */
static PetscErrorCode run_split(MPI_Comm comm, double budget)
{
  const PetscInt ord[NF] = {1, 3, 17, 65, 130, 257, 6, 70, 5};
  const char    *names[NF] = {"split psd n=1", "split psd n=3", "split psd n=17", "split psd n=65", "split psd n=130", "split psd n=257", "split diagonal with duplicates n=6", "split diagonal with duplicates n=70", "split zero matrix n=5"};
  double        *C[NF], *Cx[NF], *w[NF], *Q[NF], *Qf, scale = 1.0 / 3.0;
  int            rank, size, nb[NF];

  PetscFunctionBegin;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  for (int f = 0; f < NF; f++) {
    int     m    = (int)ord[f];
    int64_t nloc = InflBlacsLocalCount(m, nb[f] = InflLayerLayoutSplitBlock(m, size), rank, size);
    PetscCall(PetscMalloc4((int64_t)m * m, &Cx[f], PetscMax(nloc * m, 1), &C[f], m, &w[f], PetscMax(nloc * m, 1), &Q[f]));
    if (f < 6) {
      double *part;
      PetscCall(PetscMalloc1((int64_t)m * m, &part));
      make_psd(f, m, f == 5 ? m / 2 : m + 3, rank, size, Cx[f], part);
      PetscCall(PetscFree(part));
    } else {
      for (int64_t k = 0; k < (int64_t)m * m; k++) Cx[f][k] = 0;
      if (f < 8)
        for (int i = 0; i < m; i++) Cx[f][(int64_t)i * m + i] = (double)(1 + (i * 7) % 3);
    }
    for (int64_t k = 0; k < nloc; k++) PetscCall(PetscArraycpy(C[f] + k * m, Cx[f] + InflBlacsGlobal(k, nb[f], rank, size) * m, m)); /* complete sums */
    for (int64_t k = 0; k < (int64_t)m * m; k++) Cx[f][k] *= scale;
  }
  PetscCall(InflEigenSolveSplit(comm, NF, ord, nb, C, scale, w, Q, names, budget));
  for (int f = 0; f < NF; f++) { /* the whole eigenvectors: rank p's row k is column InflBlacsGlobal(k) of Q */
    int     m    = (int)ord[f];
    int64_t nloc = InflBlacsLocalCount(m, nb[f], rank, size);
    PetscCall(PetscCalloc1((int64_t)m * m, &Qf));
    for (int64_t k = 0; k < nloc; k++)
      for (int64_t i = 0; i < m; i++) Qf[i * m + InflBlacsGlobal(k, nb[f], rank, size)] = Q[f][k * m + i];
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, Qf, m * m, MPI_DOUBLE, MPI_SUM, comm));
    PetscCall(check_factor(comm, names[f], m, Cx[f], Cx[f], w[f], Qf));
    PetscCall(PetscFree(Qf));
  }
  for (int f = 0; f < NF; f++) PetscCall(PetscFree4(Cx[f], C[f], w[f], Q[f]));
  if (!rank) PetscCall(PetscPrintf(PETSC_COMM_SELF, "split, budget %g: %d factors correct on %d ranks\n", budget, NF, size));
  PetscFunctionReturn(0);
}

static PetscErrorCode run_nan(MPI_Comm comm)
{
  const PetscInt ord[3] = {4, 9, 2};
  const char    *names[3] = {"layer 0 factor A", "layer 1 factor S", "layer 2 factor A"};
  double        *C[3], *w[3], *Q[3];
  int            rank, size, code, ok;
  PetscErrorCode err;
  const char    *text = NULL;
  char          *spec = NULL;

  PetscFunctionBegin;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  for (int f = 0; f < 3; f++) {
    PetscCall(PetscCalloc3(ord[f] * ord[f], &C[f], ord[f], &w[f], ord[f] * ord[f], &Q[f]));
    for (int i = 0; i < ord[f]; i++) C[f][i * ord[f] + i] = 1;
  }
  if (rank == size - 1) C[1][2 * 9 + 3] = NAN;
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  err = InflEigenSolve(comm, 3, ord, C, 1.0, w, Q, names);
  PetscCall(PetscPopErrorHandler());
  PetscErrorMessage(err, &text, &spec);
  ok = err == PETSC_ERR_FP && spec && strstr(spec, "layer 1 factor S") && strstr(spec, "(2, 3)");
  MPI_Allreduce(&ok, &code, 1, MPI_INT, MPI_MIN, comm);
  PetscCheck(ok, PETSC_COMM_SELF, PETSC_ERR_PLIB, "rank %d: NaN factor gave error %d \"%s\"", rank, (int)err, spec ? spec : "");
  PetscCheck(code, PETSC_COMM_SELF, PETSC_ERR_PLIB, "NaN factor: another rank did not get the error");
  if (!rank) PetscCall(PetscPrintf(PETSC_COMM_SELF, "NaN: every rank got: %s\n", spec));
  for (int f = 0; f < 3; f++) PetscCall(PetscFree3(C[f], w[f], Q[f]));
  PetscFunctionReturn(0);
}

static PetscErrorCode run_bench(MPI_Comm comm, PetscInt m)
{
  double     *C, *w, *Q, t, tmax;
  const char *name = "bench";
  int         rank;

  PetscFunctionBegin;
  MPI_Comm_rank(comm, &rank);
  PetscCall(PetscMalloc3((int64_t)m * m, &C, m, &w, (int64_t)m * m, &Q));
  for (int rep = 0; rep < 3; rep++) {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j <= i; j++) C[i * m + j] = C[j * m + i] = rank ? 0 : InflUniform(SEED, (uint64_t)(i * m + j), 9) - 0.5 + (i == j ? 0.1 * m : 0);
    MPI_Barrier(comm);
    t = MPI_Wtime();
    PetscCall(InflEigenSolve(comm, 1, &m, &C, 1.0, &w, &Q, &name));
    t = MPI_Wtime() - t;
    MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, comm);
    if (!rank) PetscCall(PetscPrintf(PETSC_COMM_SELF, "n = %" PetscInt_FMT " solve %d: %.3f s\n", m, rep, tmax));
  }
  PetscCall(PetscFree3(C, w, Q));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscInt  bench = 0;
  PetscBool isbench;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-bench_n", &bench, &isbench));
  if (isbench) PetscCall(run_bench(PETSC_COMM_WORLD, bench));
  else {
    PetscCall(run_suite(PETSC_COMM_WORLD, 0));
    PetscCall(run_nan(PETSC_COMM_WORLD));
    PetscCall(run_suite(PETSC_COMM_WORLD, 1)); /* cached grids, after an agreed error */
    PetscCall(InflEigenFinalize());
    PetscCall(run_suite(PETSC_COMM_WORLD, 2)); /* rebuilt grids */
    PetscCall(run_split(PETSC_COMM_WORLD, 0));      /* every factor by pdsyevd */
    PetscCall(run_split(PETSC_COMM_WORLD, 500000)); /* n <= 142 gathered, the others by pdsyevd */
  }
  PetscCall(PetscFinalize());
  return 0;
}

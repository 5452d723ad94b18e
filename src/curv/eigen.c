/* Distributed symmetric eigendecomposition of Kronecker factors with ScaLAPACK pdsyevd.  See infl/eigen.h. */
#include <infl/eigen.h>
#include <infl/layout.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (ScaLAPACK and BLACS: infl/eigen.h). */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work, const int *lwork, int *iwork, const int *liwork, int *info);

/* ---------------------------------------------------------------------------------------------------------
 * Cache of BLACS grids, attached to the user's communicator with an MPI attribute.  An entry is keyed by the
 * partition of the ranks into groups and the forced grid shape (0 x 0 when the default is used); it holds
 * this rank's group sub-communicator and its BLACS context (-1 when this rank is outside the grid).
 * Plain malloc/free: entries may be released from an MPI attribute callback. */
typedef struct {
  int      ngroups;
  int     *start; /* (ngroups + 1) first comm rank of each group */
  int      P, Q;  /* forced grid shape, or 0, 0 */
  MPI_Comm sub;   /* this rank's group */
  int      sysh;  /* BLACS system handle of sub */
  int      ictxt; /* BLACS context, -1 outside the grid */
  int      nprow, npcol, myrow, mycol;
} EigenGrid;

typedef struct {
  int        n;
  EigenGrid *g;
} EigenCache;

static int       eigen_keyval = MPI_KEYVAL_INVALID;
static MPI_Comm *eigen_comms  = NULL; /* communicators holding a cache, in creation order (same on all ranks) */
static int       eigen_ncomms = 0, eigen_maxcomms = 0;

static int eigen_cache_delete(MPI_Comm comm, int keyval, void *attr, void *extra)
{
  EigenCache *cache = (EigenCache *)attr;

  for (int i = 0; i < cache->n; i++) {
    EigenGrid *g = &cache->g[i];
    if (g->ictxt >= 0) Cblacs_gridexit(g->ictxt);
    Cfree_blacs_system_handle(g->sysh);
    MPI_Comm_free(&g->sub);
    free(g->start);
  }
  free(cache->g);
  free(cache);
  for (int i = 0; i < eigen_ncomms; i++) {
    if (eigen_comms[i] == comm) {
      memmove(eigen_comms + i, eigen_comms + i + 1, (size_t)(eigen_ncomms - i - 1) * sizeof(MPI_Comm));
      eigen_ncomms--;
      break;
    }
  }
  return MPI_SUCCESS;
}

PetscErrorCode InflEigenFinalize(void)
{
  PetscFunctionBegin;
  if (eigen_keyval == MPI_KEYVAL_INVALID) PetscFunctionReturn(0);
  while (eigen_ncomms > 0) {
    int before = eigen_ncomms;
    PetscCallMPI(MPI_Comm_delete_attr(eigen_comms[eigen_ncomms - 1], eigen_keyval));
    if (eigen_ncomms == before) eigen_ncomms--; /* not removed by the callback: drop it */
  }
  free(eigen_comms);
  eigen_comms    = NULL;
  eigen_maxcomms = 0;
  PetscCallMPI(MPI_Comm_free_keyval(&eigen_keyval));
  eigen_keyval = MPI_KEYVAL_INVALID;
  PetscFunctionReturn(0);
}

/* Most square grid of p processes: nprow the largest divisor of p not above sqrt(p). */
static void default_grid(int p, int *nprow, int *npcol)
{
  int r = 1;
  for (int d = 1; (int64_t)d * d <= p; d++)
    if (p % d == 0) r = d;
  *nprow = r;
  *npcol = p / r;
}

/* Find or build (collectively over comm) the grid of this rank's group. */
static PetscErrorCode eigen_get_grid(MPI_Comm comm, int ngroups, const int start[], int P, int Q, int mygroup, EigenGrid **grid)
{
  EigenCache *cache = NULL;
  int         found = 0;
  PetscMPIInt rank;
  EigenGrid  *g;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (eigen_keyval == MPI_KEYVAL_INVALID) {
    PetscCallMPI(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, eigen_cache_delete, &eigen_keyval, NULL));
    PetscCall(PetscRegisterFinalize(InflEigenFinalize));
  }
  PetscCallMPI(MPI_Comm_get_attr(comm, eigen_keyval, &cache, &found));
  if (found) {
    for (int i = 0; i < cache->n; i++) {
      g = &cache->g[i];
      if (g->ngroups == ngroups && g->P == P && g->Q == Q && !memcmp(g->start, start, (size_t)(ngroups + 1) * sizeof(int))) {
        *grid = g;
        PetscFunctionReturn(0);
      }
    }
  } else {
    cache = (EigenCache *)calloc(1, sizeof(*cache));
    PetscCheck(cache, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory for the BLACS grid cache");
    PetscCallMPI(MPI_Comm_set_attr(comm, eigen_keyval, cache));
    if (eigen_ncomms == eigen_maxcomms) {
      int       m  = eigen_maxcomms ? 2 * eigen_maxcomms : 8;
      MPI_Comm *nc = (MPI_Comm *)realloc(eigen_comms, (size_t)m * sizeof(MPI_Comm));
      PetscCheck(nc, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory for the BLACS grid cache");
      eigen_comms    = nc;
      eigen_maxcomms = m;
    }
    eigen_comms[eigen_ncomms++] = comm;
  }
  {
    EigenGrid *ng = (EigenGrid *)realloc(cache->g, (size_t)(cache->n + 1) * sizeof(EigenGrid));
    PetscCheck(ng, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory for the BLACS grid cache");
    cache->g = ng;
  }
  g = &cache->g[cache->n];
  memset(g, 0, sizeof(*g));
  g->start = (int *)malloc((size_t)(ngroups + 1) * sizeof(int));
  PetscCheck(g->start, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory for the BLACS grid cache");
  memcpy(g->start, start, (size_t)(ngroups + 1) * sizeof(int));
  g->ngroups = ngroups;
  g->P       = P;
  g->Q       = Q;
  PetscCallMPI(MPI_Comm_split(comm, mygroup, rank, &g->sub));
  {
    int gsize = start[mygroup + 1] - start[mygroup], nprow = P, npcol = Q, me, np;
    if (!P) default_grid(gsize, &nprow, &npcol);
    Cblacs_pinfo(&me, &np); /* initializes BLACS on first use; MPI is already running */
    g->sysh  = Csys2blacs_handle(g->sub);
    g->ictxt = g->sysh;
    Cblacs_gridinit(&g->ictxt, "Row", nprow, npcol);
    g->nprow = nprow;
    g->npcol = npcol;
    g->myrow = g->mycol = -1;
    if (g->ictxt >= 0) {
      int pr, pc;
      Cblacs_gridinfo(g->ictxt, &pr, &pc, &g->myrow, &g->mycol);
      if (g->myrow < 0 || g->mycol < 0) g->ictxt = -1;
      else PetscCheck(pr == nprow && pc == npcol, PETSC_COMM_SELF, PETSC_ERR_LIB, "Cblacs_gridinit built a %d x %d grid instead of %d x %d", pr, pc, nprow, npcol);
    }
  }
  cache->n++;
  *grid = g;
  PetscFunctionReturn(0);
}

PetscErrorCode InflBlacsGetGrid(MPI_Comm comm, InflBlacsGrid *grid)
{
  PetscMPIInt size;
  int         start[2];
  EigenGrid  *g;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  start[0] = 0;
  start[1] = size;
  PetscCall(eigen_get_grid(comm, 1, start, 0, 0, 0, &g));
  {
    PetscMPIInt rank;
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    PetscCheck(g->ictxt >= 0 && g->myrow * g->npcol + g->mycol == rank, PETSC_COMM_SELF, PETSC_ERR_LIB, "BLACS placed rank %d at (%d, %d) of the %d x %d grid of all %d ranks instead of row-major order", rank, g->myrow, g->mycol, g->nprow, g->npcol, size);
  }
  grid->ictxt = g->ictxt;
  grid->nprow = g->nprow;
  grid->npcol = g->npcol;
  grid->myrow = g->myrow;
  grid->mycol = g->mycol;
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------------------------------------------------
 * Assignment of factors to groups (largest first to the least loaded group) and of ranks to groups (minr
 * each, then one at a time to the group with the largest cost per rank); a function of the arguments only. */
static PetscErrorCode eigen_partition(PetscInt nfac, const PetscInt n[], int size, int G, int minr, int group_of[], int start[])
{
  double   *load;
  double   *cost;
  int      *nr;

  PetscFunctionBegin;
  PetscCall(PetscCalloc3(G, &load, nfac, &cost, G, &nr));
  for (PetscInt f = 0; f < nfac; f++) cost[f] = (double)n[f] * (double)n[f] * (double)n[f];
  InflAssignLargestFirst(nfac, cost, G, group_of, load);
  for (int g = 0; g < G; g++) nr[g] = minr;
  for (int r = G * minr; r < size; r++) {
    int best = 0;
    for (int g = 1; g < G; g++)
      if (load[g] / nr[g] > load[best] / nr[best]) best = g;
    nr[best]++;
  }
  start[0] = 0;
  for (int g = 0; g < G; g++) start[g + 1] = start[g] + nr[g];
  PetscCall(PetscFree3(load, cost, nr));
  PetscFunctionReturn(0);
}

static PetscErrorCode eigen_split_options(MPI_Comm comm, PetscBool *gather);

static void fname(const char *const names[], PetscInt f, char buf[], size_t len)
{
  if (names && names[f]) snprintf(buf, len, "%s", names[f]);
  else snprintf(buf, len, "factor %" PetscInt_FMT, f);
}

/* pdsyevd of the order-n matrix whose local piece is a (descriptor desc, grid g, block size nb): eigenvalues wl (n,
 * every rank of the grid) and the local piece of the eigenvectors z (same distribution as a).  Workspace queried and
 * padded.  *info is pdsyevd's; *which 2 for the query, 3 for the solve. */
static PetscErrorCode eigen_pdsyevd(EigenGrid *g, int n, int nb, double *a, const int desc[], double *wl, double *z, int *info, int *which)
{
  const int    zero = 0, one = 1;
  int          lwork, liwork, qiwork = 0;
  double      *work, qwork = 0;
  int         *iwork;
  PetscBLASInt b;

  PetscFunctionBegin;
  {
    int qlw = -1, qliw = -1;
    pdsyevd_("V", "U", &n, a, &one, &one, desc, wl, z, &one, &one, desc, &qwork, &qlw, &qiwork, &qliw, info);
  }
  if (*info) {
    *which = 2;
    PetscFunctionReturn(0);
  }
  {
    /* The queried sizes are known to be too small in some ScaLAPACK versions: pad them, and never go
     * below the documented minimum LWORK >= max(1 + 6N + 2 NP NQ, TRILWMIN) + 2N,
     * TRILWMIN = 3N + max(NB (NP + 1), 3 NB), LIWORK >= 7N + 8 NPCOL + 2. */
    int64_t np = numroc_(&n, &nb, &g->myrow, &zero, &g->nprow), nq = numroc_(&n, &nb, &g->mycol, &zero, &g->npcol);
    int64_t tri = 3 * (int64_t)n + PetscMax((int64_t)nb * (np + 1), 3 * (int64_t)nb);
    int64_t lw  = PetscMax(1 + 6 * (int64_t)n + 2 * np * nq, tri) + 2 * (int64_t)n;
    int64_t liw = 7 * (int64_t)n + 8 * (int64_t)g->npcol + 2;
    /* pdormtr (back-transformation inside pdsyevd) needs max(NB (NB - 1) / 2, (NP + NQ) NB) + NB^2 more,
     * which the query omits when N is small against NB; it then fails without setting INFO */
    lw  = PetscMax(lw, 2 * (int64_t)qwork) + PetscMax((int64_t)nb * (nb - 1) / 2, (np + nq) * (int64_t)nb) + 2 * (int64_t)nb * nb + 4 * (int64_t)n + 1024;
    liw = PetscMax(liw, 2 * (int64_t)qiwork) + 4 * (int64_t)n + 1024;
    PetscCall(InflBLASIntCast(lw, "pdsyevd workspace LWORK", &b));
    lwork = (int)b;
    PetscCall(InflBLASIntCast(liw, "pdsyevd workspace LIWORK", &b));
    liwork = (int)b;
  }
  PetscCall(PetscMalloc2(lwork, &work, liwork, &iwork));
  pdsyevd_("V", "U", &n, a, &one, &one, desc, wl, z, &one, &one, desc, work, &lwork, iwork, &liwork, info);
  if (*info) *which = 3;
  PetscCall(PetscFree2(work, iwork));
  PetscFunctionReturn(0);
}

/* Solve one factor of order n on grid g (collective over g->sub), or with LAPACK when `lapack` (a group of one rank).
 * On group rank 0: w (n) and Q (n, n) row-major.  *info is pdsyevd's info (0 outside the grid); on an argument error of descinit_ it is set to
 * -1000 - argument so the caller can name the routine. */
static PetscErrorCode eigen_solve_one(EigenGrid *g, int n, int nb, PetscBool lapack, const double *C, double *w, double *Q, int *info, int *which)
{
  PetscMPIInt grank;
  double     *zfull = NULL; /* (n, n) row-major, this rank's entries of Z, zeros elsewhere */
  int64_t     nn    = (int64_t)n * n;

  PetscFunctionBegin;
  *info  = 0;
  *which = 0;
  PetscCallMPI(MPI_Comm_rank(g->sub, &grank));
  if (lapack) { /* a group of one rank: LAPACK dsyevd, the same divide and conquer without the 1 x 1 grid */
    double *a, *work, qwork = 0;
    int    *iwork, qiwork = 0, lwork = -1, liwork = -1;
    PetscCall(PetscMalloc1(nn, &a));
    PetscCall(PetscArraycpy(a, C, nn)); /* symmetric: row-major is column-major */
    dsyevd_("V", "U", &n, a, &n, w, &qwork, &lwork, &qiwork, &liwork, info);
    if (*info) *which = 2;
    else {
      lwork  = (int)qwork + 1;
      liwork = qiwork + 1;
      PetscCall(PetscMalloc2(lwork, &work, liwork, &iwork));
      dsyevd_("V", "U", &n, a, &n, w, work, &lwork, iwork, &liwork, info);
      if (*info) *which = 3;
      PetscCall(PetscFree2(work, iwork));
      for (int64_t i = 0; i < n && !*info; i++) /* eigenvectors are a's columns: Q row-major */
        for (int64_t j = 0; j < n; j++) Q[i * n + j] = a[i + j * n];
    }
    PetscCall(PetscFree(a));
    PetscFunctionReturn(0);
  }
  PetscCall(PetscCalloc1(nn, &zfull));
  if (g->ictxt >= 0) {
    const int    zero = 0;
    int          mloc = numroc_(&n, &nb, &g->myrow, &zero, &g->nprow);
    int          nloc = numroc_(&n, &nb, &g->mycol, &zero, &g->npcol);
    int          lld  = PetscMax(1, mloc), desc[9], dinfo = 0;
    double      *a, *z, *wl;

    descinit_(desc, &n, &n, &nb, &nb, &zero, &zero, &g->ictxt, &lld, &dinfo);
    if (dinfo) {
      *info  = dinfo;
      *which = 1;
    } else {
      PetscCall(PetscMalloc3((int64_t)lld * PetscMax(1, nloc), &a, (int64_t)lld * PetscMax(1, nloc), &z, n, &wl));
      for (int lj = 0; lj < nloc; lj++) {
        int64_t gj = InflBlacsGlobal(lj, nb, g->mycol, g->npcol);
        for (int li = 0; li < mloc; li++) a[li + (int64_t)lj * lld] = C[gj * n + InflBlacsGlobal(li, nb, g->myrow, g->nprow)]; /* symmetric */
      }
      PetscCall(eigen_pdsyevd(g, n, nb, a, desc, wl, z, info, which));
      if (!*info) {
        for (int lj = 0; lj < nloc; lj++) {
          int64_t gj = InflBlacsGlobal(lj, nb, g->mycol, g->npcol);
          for (int li = 0; li < mloc; li++) zfull[InflBlacsGlobal(li, nb, g->myrow, g->nprow) * n + gj] = z[li + (int64_t)lj * lld];
        }
        if (grank == 0) PetscCall(PetscArraycpy(w, wl, n));
      }
      PetscCall(PetscFree3(a, z, wl));
    }
  }
  /* every rank of the group takes part, also ranks outside the grid and after a failure */
  PetscCall(InflReduceSum(zfull, grank == 0 ? Q : NULL, nn, MPI_DOUBLE, 0, g->sub));
  PetscCall(PetscFree(zfull));
  PetscFunctionReturn(0);
}

/* Sign convention: the entry of largest magnitude of every column (first on ties) is positive.  Row by row, so that
 * Q is read in memory order. */
static PetscErrorCode fix_signs(int n, double *Q)
{
  double *vm;
  int    *im;

  PetscFunctionBegin;
  PetscCall(PetscMalloc2(n, &vm, n, &im));
  for (int j = 0; j < n; j++) {
    vm[j] = -1;
    im[j] = 0;
  }
  for (int i = 0; i < n; i++) {
    const double *q = Q + (int64_t)i * n;
    for (int j = 0; j < n; j++) {
      double v = fabs(q[j]);
      if (v > vm[j]) {
        vm[j] = v;
        im[j] = i;
      }
    }
  }
  for (int j = 0; j < n; j++) vm[j] = Q[(int64_t)im[j] * n + j] < 0 ? -1.0 : 1.0;
  for (int i = 0; i < n; i++) {
    double *q = Q + (int64_t)i * n;
    for (int j = 0; j < n; j++) q[j] *= vm[j];
  }
  PetscCall(PetscFree2(vm, im));
  PetscFunctionReturn(0);
}

/* All factors of this rank's group, in index order.  Returns the first failure only after every factor was
 * attempted, so that the ranks of the group make the same collective calls. */
static PetscErrorCode eigen_solve_group(EigenGrid *g, int mygroup, PetscInt nfac, const PetscInt n[], double *C[], double *evals[], double *Q[], const char *const names[], const int group_of[], int nb, PetscBool lapack)
{
  PetscMPIInt grank;
  int         bad_info = 0, bad_which = 0;
  PetscInt    bad_f    = -1;
  char        name[256];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(g->sub, &grank));
  {
    PetscMPIInt gsize;
    PetscCallMPI(MPI_Comm_size(g->sub, &gsize));
    lapack = (lapack && gsize == 1) ? PETSC_TRUE : PETSC_FALSE;
  }
  for (PetscInt f = 0; f < nfac; f++) {
    int info, which;
    if (group_of[f] != mygroup || n[f] == 0) continue;
    PetscCall(eigen_solve_one(g, (int)n[f], nb, lapack, C[f], evals[f], Q[f], &info, &which));
    if (info && bad_f < 0) {
      bad_f     = f;
      bad_info  = info;
      bad_which = which;
    }
    if (!info && grank == 0) PetscCall(fix_signs((int)n[f], Q[f]));
  }
  if (bad_f >= 0) {
    fname(names, bad_f, name, sizeof(name));
    PetscCheck(bad_which != 1, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK descinit argument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ", block size %d, grid %d x %d: an internal error", -bad_info, bad_info, name, n[bad_f], nb, g->nprow, g->npcol);
    if (lapack) {
      PetscCheck(bad_info > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dsyevd %sargument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ": an internal error", bad_which == 2 ? "workspace query: " : "", -bad_info, bad_info, name, n[bad_f]);
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_CONV_FAILED, "eigendecomposition of %s (order %" PetscInt_FMT ") failed: LAPACK dsyevd info = %d (the divide-and-conquer tridiagonal solver did not converge)", name, n[bad_f], bad_info);
    }
    PetscCheck(bad_info > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK pdsyevd %s argument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ", block size %d, grid %d x %d: an internal error", bad_which == 2 ? "workspace query:" : "", bad_info > -100 ? -bad_info : -bad_info / 100, bad_info, name, n[bad_f], nb, g->nprow, g->npcol);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_CONV_FAILED, "eigendecomposition of %s (order %" PetscInt_FMT ") failed: ScaLAPACK pdsyevd info = %d (the divide-and-conquer tridiagonal solver did not converge)", name, n[bad_f], bad_info);
  }
  PetscFunctionReturn(0);
}

/* The -eigen_* options, checked: nb, grid (0 x 0 when not forced), G (-1: default), lapack. */
static PetscErrorCode eigen_options(MPI_Comm comm, PetscInt *nb, PetscInt grid[2], PetscInt *G, PetscBool *lapack)
{
  char      gridstr[64] = "";
  PetscBool set_grid    = PETSC_FALSE, set_groups = PETSC_FALSE;

  PetscFunctionBegin;
  *nb     = 64;
  *G      = -1;
  *lapack = PETSC_TRUE;
  grid[0] = grid[1] = 0;
  PetscCall(InflOptionsCheckLength(comm, "-eigen_grid", sizeof(gridstr), "give the grid as PxQ, e.g. 2x2"));
  PetscOptionsBegin(comm, NULL, "Eigensolver of the Kronecker factors (ScaLAPACK pdsyevd; LAPACK dsyevd in one-rank groups)", "InflEigenSolve");
  PetscCall(PetscOptionsInt("-eigen_block_size", "ScaLAPACK block size NB", "InflEigenSolve", *nb, nb, NULL));
  PetscCall(PetscOptionsString("-eigen_grid", "force a P x Q process grid in every group, e.g. 1x2", "InflEigenSolve", gridstr, gridstr, sizeof(gridstr), &set_grid));
  PetscCall(PetscOptionsInt("-eigen_groups", "number of rank groups (default min(ranks, factors); at most the ranks)", "InflEigenSolve", *G, G, &set_groups));
  PetscCall(PetscOptionsBool("-eigen_lapack", "groups of one rank call LAPACK dsyevd (0: ScaLAPACK pdsyevd on a 1x1 grid)", "InflEigenSolve", *lapack, lapack, NULL));
  PetscOptionsEnd();
  PetscCheck(*nb >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-eigen_block_size %" PetscInt_FMT " must be >= 1", *nb);
  PetscCheck(!set_groups || *G >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-eigen_groups %" PetscInt_FMT " must be >= 1 (more groups than ranks are reduced to the ranks)", *G);
  if (set_grid) {
    int  p = 0, q = 0;
    char extra;
    PetscCheck(sscanf(gridstr, "%dx%d%c", &p, &q, &extra) == 2 && p >= 1 && q >= 1, comm, PETSC_ERR_ARG_WRONG, "-eigen_grid %s: expected PxQ with P, Q >= 1 (e.g. -eigen_grid 1x2)", gridstr);
    grid[0] = p;
    grid[1] = q;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEigenSetFromOptions(MPI_Comm comm)
{
  PetscInt  nb, grid[2], G;
  PetscBool lapack, gather;

  PetscFunctionBegin;
  PetscCall(eigen_options(comm, &nb, grid, &G, &lapack));
  PetscCall(eigen_split_options(comm, &gather));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEigenSolve(MPI_Comm comm, PetscInt nfac, const PetscInt n[], double *C[], double scale, double *evals[], double *Q[], const char *const names[])
{
  PetscMPIInt size, rank;
  PetscInt    nb, G, grid[2];
  PetscBool   set_grid, ok, lapack;
  char        name[256];
  int        *group_of = NULL, *start = NULL, mygroup = 0;
  EigenGrid  *g = NULL;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));

  /* the same problem on every rank: max over ranks of (x, -x) gives x == -(-x) only if all agree */
  {
    double w[6], h = 0;
    for (PetscInt f = 0; f < nfac && n; f++) h = h * 1.0000001 + (double)n[f] * (double)(f + 1);
    w[0] = (double)nfac;
    w[1] = -w[0];
    w[2] = scale;
    w[3] = -scale;
    w[4] = h;
    w[5] = -h;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, w, 6, MPI_DOUBLE, MPI_MAX, comm));
    ok = (w[0] == -w[1] && w[4] == -w[5] && (w[2] == -w[3] || !isfinite(scale))) ? PETSC_TRUE : PETSC_FALSE;
  }
  InflCheckAll(comm, ok, PETSC_ERR_ARG_WRONG, "InflEigenSolve: nfac, n[] or scale differ between ranks (nfac = %" PetscInt_FMT " on rank %d)", nfac, rank);
  ok = (nfac >= 0 && (nfac == 0 || n)) ? PETSC_TRUE : PETSC_FALSE;
  InflCheckAll(comm, ok, PETSC_ERR_ARG_WRONG, "InflEigenSolve: nfac = %" PetscInt_FMT " must be >= 0 and n[] given", nfac);
  ok = isfinite(scale) ? PETSC_TRUE : PETSC_FALSE;
  InflCheckAll(comm, ok, PETSC_ERR_ARG_WRONG, "InflEigenSolve: scale = %g must be finite", scale);
  {
    PetscInt bad = -1;
    for (PetscInt f = 0; f < nfac && bad < 0; f++)
      if (n[f] < 0 || n[f] > 46340 || (n[f] > 0 && (!C || !evals || !Q || !C[f] || !evals[f] || !Q[f]))) bad = f;
    if (bad >= 0) fname(names, bad, name, sizeof(name));
    InflCheckAll(comm, bad < 0, PETSC_ERR_ARG_WRONG, "InflEigenSolve: %s has order %" PetscInt_FMT " (must be in [0, 46340]) or a NULL C, evals or Q buffer", name, bad >= 0 ? n[bad] : 0);
  }
  if (nfac == 0) PetscFunctionReturn(0);

  PetscCall(eigen_options(comm, &nb, grid, &G, &lapack));
  set_grid = grid[0] > 0 ? PETSC_TRUE : PETSC_FALSE;
  if (G < 0) G = PetscMin(size, nfac);
  G = PetscMax(1, PetscMin(G, size));

  /* 1. sum the partial factors, scale, check, symmetrize */
  {
    PetscInt bad_f = -1, bi = 0, bj = 0;
    for (PetscInt f = 0; f < nfac; f++) {
      int64_t m = n[f];
      if (!m) continue;
      PetscCall(InflAllreduceSum(C[f], m * m, MPI_DOUBLE, comm));
      for (int64_t k = 0; k < m * m; k++) C[f][k] *= scale;
      for (int64_t i = 0; i < m && bad_f < 0; i++)
        for (int64_t j = 0; j < m; j++)
          if (!isfinite(C[f][i * m + j])) {
            bad_f = f;
            bi    = (PetscInt)i;
            bj    = (PetscInt)j;
            break;
          }
      for (int64_t i0 = 0; i0 < m; i0 += 64) /* in 64 x 64 tiles: the transposed reads stay in cache */
        for (int64_t j0 = i0; j0 < m; j0 += 64)
          for (int64_t i = i0; i < PetscMin(i0 + 64, m); i++)
            for (int64_t j = PetscMax(j0, i + 1); j < PetscMin(j0 + 64, m); j++) {
              double s         = 0.5 * (C[f][i * m + j] + C[f][j * m + i]);
              C[f][i * m + j] = s;
              C[f][j * m + i] = s;
            }
    }
    if (bad_f >= 0) fname(names, bad_f, name, sizeof(name));
    InflCheckAll(comm, bad_f < 0, PETSC_ERR_FP, "%s has a non-finite entry at (%" PetscInt_FMT ", %" PetscInt_FMT ") after summing over ranks: check the inputs of this factor (overflow or NaN in activations/gradients)", name, bi, bj);
  }

  /* 2. groups and grids */
  PetscCall(PetscMalloc2(nfac, &group_of, G + 1, &start));
  if (set_grid) PetscCheck((int64_t)grid[0] * grid[1] * G <= size, comm, PETSC_ERR_ARG_OUTOFRANGE, "-eigen_grid %" PetscInt_FMT "x%" PetscInt_FMT " in each of %" PetscInt_FMT " rank groups needs %" PetscInt_FMT " ranks but there are %d; use a smaller grid or fewer groups (-eigen_groups)", grid[0], grid[1], G, grid[0] * grid[1] * G, size);
  PetscCall(eigen_partition(nfac, n, size, (int)G, set_grid ? (int)(grid[0] * grid[1]) : 1, group_of, start));
  while (mygroup + 1 < G && rank >= start[mygroup + 1]) mygroup++;
  PetscCall(eigen_get_grid(comm, (int)G, start, (int)grid[0], (int)grid[1], mygroup, &g));

  /* 3. solve in groups; agree on failure on all ranks before any broadcast */
  InflCallAll(comm, eigen_solve_group(g, mygroup, nfac, n, C, evals, Q, names, group_of, (int)nb, lapack));

  /* 4. broadcast from each group's first rank */
  for (PetscInt f = 0; f < nfac; f++) {
    if (!n[f]) continue;
    PetscCall(InflBcast(evals[f], n[f], MPI_DOUBLE, start[group_of[f]], comm));
    PetscCall(InflBcast(Q[f], (int64_t)n[f] * n[f], MPI_DOUBLE, start[group_of[f]], comm));
  }
  PetscCall(PetscFree2(group_of, start));
  PetscFunctionReturn(0);
}

/* -eigen_split_gather: InflEigenSolveSplit gathers each factor to one rank of the group for LAPACK dsyevd (default)
 * instead of pdsyevd on the 1 x E grid. */
static PetscErrorCode eigen_split_options(MPI_Comm comm, PetscBool *gather)
{
  PetscFunctionBegin;
  *gather = PETSC_TRUE;
  PetscOptionsBegin(comm, NULL, "Eigensolver of split factors (-layer_split)", "InflEigenSolveSplit");
  PetscCall(PetscOptionsBool("-eigen_split_gather", "split layers: gather each factor to one rank of its group for LAPACK dsyevd, the group's ranks solving different factors at once (0: ScaLAPACK pdsyevd on the 1 x E grid; also used for a factor whose 3 n^2 doubles exceed the memory left)", "InflEigenSolveSplit", *gather, gather, NULL));
  PetscOptionsEnd();
  PetscFunctionReturn(0);
}

/* Bytes the gathered solve of a factor of order n allocates on its solving rank: the whole matrix (its eigenvectors
 * after dsyevd) and dsyevd's workspace 1 + 6n + 2n^2 doubles (reused to pack the eigenvectors for the scatter), with
 * 5n + 3 ints. */
static double eigen_gather_bytes(int64_t n)
{
  return (double)sizeof(double) * (3.0 * (double)n * (double)n + 6.0 * (double)n + 2) + (double)sizeof(int) * (5.0 * (double)n + 3);
}

/* Sign convention of the split eigenvectors: rows of Q (nloc, m), each one eigenvector. */
static void split_fix_signs(int64_t nloc, int64_t m, double *Q)
{
  for (int64_t k = 0; k < nloc; k++) {
    double *q = Q + k * m, vm = -1, s;
    int64_t im = 0;
    for (int64_t i = 0; i < m; i++)
      if (fabs(q[i]) > vm) {
        vm = fabs(q[i]);
        im = i;
      }
    s = q[im] < 0 ? -1.0 : 1.0;
    for (int64_t i = 0; i < m; i++) q[i] *= s;
  }
}

/* One round of gathered solves over the group comm (E ranks): factor fr[j] (or -1: none) is gathered to group rank j,
 * solved there with dsyevd, and its eigenvector rows scattered back block-cyclically; eigenvalues broadcast.  info[j]
 * (every rank) is dsyevd's for fr[j], which[j] 2 for the workspace query, 3 for the solve. */
static PetscErrorCode eigen_split_gather_round(MPI_Comm comm, int E, int rank, const PetscInt fr[], const PetscInt n[], const int nb[], double *C[], double *evals[], double *Q[], int info[], int which[])
{
  int    *cnt, *dsp, mine = -1;
  double *a = NULL, *work = NULL;
  int    *iwork = NULL;

  PetscFunctionBegin;
  PetscCall(PetscMalloc2(E, &cnt, E, &dsp));
  for (int j = 0; j < E; j++) { /* gather factor fr[j] to rank j: rows in rank order, then placed */
    int     m = fr[j] >= 0 ? (int)n[fr[j]] : 0, f = (int)fr[j];
    double *buf = NULL;
    if (!m) continue;
    for (int p = 0; p < E; p++) {
      cnt[p] = (int)(InflBlacsLocalCount(m, nb[f], p, E) * m);
      dsp[p] = p ? dsp[p - 1] + cnt[p - 1] : 0;
    }
    if (rank == j) {
      mine = j;
      PetscCall(PetscMalloc1((int64_t)m * m, &buf));
    }
    PetscCallMPI(MPI_Gatherv(C[f], cnt[rank], MPI_DOUBLE, buf, cnt, dsp, MPI_DOUBLE, j, comm));
    if (rank == j) {
      PetscCall(PetscMalloc1((int64_t)m * m, &a));
      for (int p = 0; p < E; p++)
        for (int64_t k = 0; k < cnt[p] / m; k++) PetscCall(PetscArraycpy(a + InflBlacsGlobal(k, nb[f], p, E) * m, buf + dsp[p] + k * m, m)); /* row gk of C: column gk of a, column-major */
      PetscCall(PetscFree(buf));
    }
  }
  if (mine >= 0) { /* this rank's factor: dsyevd, the eigenvectors in a's columns */
    int    m = (int)n[fr[mine]], lwork = -1, liwork = -1, qiwork = 0;
    double qwork = 0;
    info[mine]  = 0;
    which[mine] = 0;
    dsyevd_("V", "U", &m, a, &m, evals[fr[mine]], &qwork, &lwork, &qiwork, &liwork, &info[mine]);
    if (info[mine]) which[mine] = 2;
    else {
      lwork  = PetscMax((int)qwork + 1, m * m);
      liwork = qiwork + 1;
      PetscCall(PetscMalloc1(lwork, &work));
      PetscCall(PetscMalloc1(liwork, &iwork));
      dsyevd_("V", "U", &m, a, &m, evals[fr[mine]], work, &lwork, iwork, &liwork, &info[mine]);
      if (info[mine]) which[mine] = 3;
      PetscCall(PetscFree(iwork));
    }
  }
  for (int j = 0; j < E; j++) { /* scatter: rank p's rows are the eigenvectors of its indices; the info and eigenvalues */
    int m = fr[j] >= 0 ? (int)n[fr[j]] : 0, f = (int)fr[j], iw[2];
    if (!m) continue;
    for (int p = 0; p < E; p++) {
      cnt[p] = (int)(InflBlacsLocalCount(m, nb[f], p, E) * m);
      dsp[p] = p ? dsp[p - 1] + cnt[p - 1] : 0;
    }
    if (rank == j && work) /* pack a's columns by rank */
      for (int p = 0; p < E; p++)
        for (int64_t k = 0; k < cnt[p] / m; k++) PetscCall(PetscArraycpy(work + dsp[p] + k * m, a + InflBlacsGlobal(k, nb[f], p, E) * m, m));
    else if (rank == j) { /* failed: zeros, so that the collective goes on */
      PetscCall(PetscCalloc1((int64_t)m * m, &work));
    }
    if (rank == j) {
      iw[0] = info[j];
      iw[1] = which[j];
    }
    PetscCallMPI(MPI_Bcast(iw, 2, MPI_INT, j, comm));
    info[j]  = iw[0];
    which[j] = iw[1];
    PetscCallMPI(MPI_Scatterv(work, cnt, dsp, MPI_DOUBLE, Q[f], cnt[rank], MPI_DOUBLE, j, comm));
    PetscCallMPI(MPI_Bcast(evals[f], m, MPI_DOUBLE, j, comm));
    if (!info[j]) split_fix_signs(cnt[rank] / m, m, Q[f]);
  }
  PetscCall(PetscFree(work));
  PetscCall(PetscFree(a));
  PetscCall(PetscFree2(cnt, dsp));
  PetscFunctionReturn(0);
}

/* The factors of InflEigenSolveSplit on grid g: those whose gathered solve fits `budget` bytes (all of them when
 * `gather`) in rounds of E, the largest first, each rank of the group solving one factor of a round with dsyevd;
 * the others with pdsyevd on the grid, in index order.  The first failure raised (not collective: InflCallAll agrees
 * on it) after every factor was attempted, so that the ranks make the same calls. */
static PetscErrorCode eigen_solve_split(MPI_Comm comm, EigenGrid *g, PetscInt nfac, const PetscInt n[], const int nb[], double *C[], double *evals[], double *Q[], const char *const names[], PetscBool gather, double budget)
{
  const int zero = 0;
  int       bad_info = 0, bad_which = 0, E = g->npcol, rank = g->mycol, *info, *which, *done;
  PetscInt  bad_f = -1, *order, *fr, ng = 0;
  char      name[256];

  PetscFunctionBegin;
  PetscCall(PetscMalloc5(nfac, &order, E, &fr, E, &info, E, &which, nfac, &done));
  for (PetscInt f = 0; f < nfac; f++) {
    done[f] = 0;
    if (gather && n[f] > 0 && n[f] <= 46340 && eigen_gather_bytes(n[f]) <= budget) order[ng++] = f; /* n^2 < 2^31: MPI counts */
  }
  for (PetscInt i = 1; i < ng; i++) /* the largest first (index order on ties): the rounds pair similar sizes */
    for (PetscInt k = i; k > 0 && n[order[k]] > n[order[k - 1]]; k--) {
      PetscInt t   = order[k];
      order[k]     = order[k - 1];
      order[k - 1] = t;
    }
  for (PetscInt r = 0; r < ng; r += E) {
    for (int j = 0; j < E; j++) {
      fr[j]    = r + j < ng ? order[r + j] : -1;
      info[j]  = 0;
      which[j] = 0;
    }
    PetscCall(eigen_split_gather_round(comm, E, rank, fr, n, nb, C, evals, Q, info, which));
    for (int j = 0; j < E; j++) {
      if (fr[j] < 0) continue;
      done[fr[j]] = 1;
      if (info[j] && (bad_f < 0 || fr[j] < bad_f)) {
        bad_f     = fr[j];
        bad_info  = info[j];
        bad_which = which[j] == 2 ? 4 : 5;
      }
    }
  }
  for (PetscInt f = 0; f < nfac; f++) {
    int     m = (int)n[f], inf = 0, wh = 0, desc[9], lld = PetscMax(1, m);
    int64_t nloc = InflBlacsLocalCount(m, nb[f], g->mycol, g->npcol);
    double *a, *z, dz;
    if (!m || done[f]) continue;
    descinit_(desc, &m, &m, &nb[f], &nb[f], &zero, &zero, &g->ictxt, &lld, &inf);
    if (inf) wh = 1;
    else {
      PetscCall(PetscMalloc1(PetscMax(nloc * m, 1), &a));
      PetscCall(PetscArraycpy(a, C[f], nloc * m)); /* rows of a symmetric matrix: its column-major local piece */
      z = nloc ? Q[f] : &dz;
      PetscCall(eigen_pdsyevd(g, m, nb[f], a, desc, evals[f], z, &inf, &wh));
      PetscCall(PetscFree(a));
    }
    if (inf && (bad_f < 0 || f < bad_f)) {
      bad_f     = f;
      bad_info  = inf;
      bad_which = wh;
    }
    if (!inf) split_fix_signs(nloc, m, Q[f]); /* the sign convention, per eigenvector (a row here) */
  }
  PetscCall(PetscFree5(order, fr, info, which, done));
  if (bad_f >= 0) {
    fname(names, bad_f, name, sizeof(name));
    PetscCheck(bad_which != 1, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK descinit argument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ", block size %d, grid 1 x %d: an internal error", -bad_info, bad_info, name, n[bad_f], nb[bad_f], g->npcol);
    PetscCheck(bad_which != 4 || bad_info > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dsyevd workspace query: argument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ": an internal error", -bad_info, bad_info, name, n[bad_f]);
    PetscCheck(bad_which != 5 || bad_info > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dsyevd argument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ": an internal error", -bad_info, bad_info, name, n[bad_f]);
    PetscCheck(bad_info > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK pdsyevd %s argument %d is illegal (info = %d) for %s of order %" PetscInt_FMT ", block size %d, grid 1 x %d: an internal error", bad_which == 2 ? "workspace query:" : "", bad_info > -100 ? -bad_info : -bad_info / 100, bad_info, name, n[bad_f], nb[bad_f], g->npcol);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_CONV_FAILED, "eigendecomposition of %s (order %" PetscInt_FMT ") failed: %s info = %d (the divide-and-conquer tridiagonal solver did not converge)", name, n[bad_f], bad_which >= 4 ? "LAPACK dsyevd" : "ScaLAPACK pdsyevd", bad_info);
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEigenSolveSplit(MPI_Comm comm, PetscInt nfac, const PetscInt n[], const int nb[], double *C[], double scale, double *evals[], double *Q[], const char *const names[], double budget)
{
  PetscMPIInt size, rank;
  int         start[2];
  EigenGrid  *g;
  PetscBool   gather;
  PetscInt    bad_f = -1;
  int64_t     bi = 0, bj = 0;
  char        name[256] = "";

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  InflCheckAll(comm, isfinite(scale), PETSC_ERR_ARG_WRONG, "InflEigenSolveSplit: scale = %g must be finite", scale);
  for (PetscInt f = 0; f < nfac; f++) {
    int64_t m = n[f], nloc = InflBlacsLocalCount(m, nb[f], rank, size);
    for (int64_t k = 0; k < nloc * m; k++) {
      C[f][k] *= scale;
      if (bad_f < 0 && !isfinite(C[f][k])) {
        bad_f = f;
        bi    = InflBlacsGlobal(k / m, nb[f], rank, size);
        bj    = k % m;
      }
    }
  }
  if (bad_f >= 0) fname(names, bad_f, name, sizeof(name));
  InflCheckAll(comm, bad_f < 0, PETSC_ERR_FP, "%s has a non-finite entry at (%" PRId64 ", %" PRId64 ") after summing over ranks: check the inputs of this factor (overflow or NaN in activations/gradients)", name, bi, bj);
  if (!nfac) PetscFunctionReturn(0);
  start[0] = 0;
  start[1] = size;
  PetscCall(eigen_get_grid(comm, 1, start, 1, size, 0, &g));
  PetscCheck(g->ictxt >= 0 && g->myrow == 0 && g->mycol == rank, PETSC_COMM_SELF, PETSC_ERR_LIB, "BLACS placed rank %d at (%d, %d) of the 1 x %d grid instead of (0, %d)", rank, g->myrow, g->mycol, size, rank);
  PetscCall(eigen_split_options(comm, &gather));
  if (!(budget >= 0)) budget = INFINITY; /* negative or NaN: no limit */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &budget, 1, MPI_DOUBLE, MPI_MIN, comm)); /* the same choice on every rank */
  InflCallAll(comm, eigen_solve_split(comm, g, nfac, n, nb, C, evals, Q, names, gather, budget));
  PetscFunctionReturn(0);
}

/* infl/eigen.h -- distributed symmetric eigendecomposition of Kronecker factors (ScaLAPACK pdsyevd).
 *
 * EK-FAC (George et al. 2018, "Fast Approximate Natural Gradient Descent in a Kronecker-factored Eigenbasis";
 * Grosse et al. 2023) needs the eigenbases Q_A, Q_S of every layer's activation covariance A and
 * pseudo-gradient covariance S.  The factors of all layers are solved together: they are spread over groups of
 * ranks, each group solves its factors on a BLACS process grid with the divide-and-conquer solver pdsyevd
 * (ScaLAPACK, Blackford et al. 1997; Tisseur and Dongarra 1999), and the results are broadcast to every rank.
 */
#ifndef INFL_EIGEN_H
#define INFL_EIGEN_H

#include <infl/sys.h>

/* InflEigenSolve -- eigendecomposition of nfac symmetric factors.  Collective over comm.
 *
 * Input (identical nfac, n[], scale, names[] on every rank):
 *   n[f]       order of factor f, 0 <= n[f] <= 46340 (n^2 must fit ScaLAPACK's 32-bit local indexing); a factor
 *              with n[f] == 0 is skipped and its C[f], evals[f], Q[f] may be NULL.
 *   C[f]       (n[f], n[f]) row-major double: this rank's partial sum of factor f.  The factor is
 *              scale * (sum over the ranks of comm of C[f]).
 *   scale      finite multiplier of the summed factor (e.g. 1/N for N examples).
 *   names[f]   text naming the factor in errors (e.g. "layer 2 factor A"); names may be NULL (then "factor f").
 * Output, on every rank:
 *   C[f]       the scaled summed factor, symmetrized: (C + C^T) / 2.
 *   evals[f]   (n[f]) eigenvalues, ascending.
 *   Q[f]       (n[f], n[f]) row-major: column j is the unit eigenvector of evals[f][j]; Q is orthogonal and
 *              C Q = Q diag(evals).  Sign convention: in every column the entry of largest magnitude (the
 *              first one on ties) is positive, so results do not depend on the process grid except through
 *              rounding (vectors of repeated eigenvalues are any orthonormal basis of their eigenspace).
 *
 * Method: the partial sums are summed with MPI_Allreduce, scaled, symmetrized and checked for non-finite
 * entries.  The factors are assigned to G groups of contiguous ranks (largest-first to the least-loaded group,
 * cost ~ n^3; the ranks beyond one per group then go to the group with the largest cost per rank).  Each group
 * builds a BLACS grid (Csys2blacs_handle / Cblacs_gridinit on a sub-communicator from MPI_Comm_split; cached per
 * communicator and grid shape), fills its block-cyclic (NB x NB) distribution directly from the replicated
 * factor, calls pdsyevd (workspace queried with lwork = liwork = -1 and padded), and gathers Z to the group's
 * first rank; after every rank has agreed that every group succeeded, evals and Q are broadcast to all ranks.
 * A group of one rank calls LAPACK dsyevd instead (the same divide-and-conquer method without the 1 x 1 grid's
 * distribution overhead: 0.10 vs 0.15 s for the six factors of the 784-256-256-10 MLP), unless -eigen_lapack 0.
 *
 * Options (PETSc options database):
 *   -eigen_block_size NB  ScaLAPACK block size (default 64; factors smaller than NB or than the grid work).
 *   -eigen_grid PxQ       force a P x Q grid in every group: every group gets at least P*Q ranks (G*P*Q must not
 *                         exceed the ranks of comm), extra ranks of a group stay idle.  Default: the most square
 *                         grid (P <= Q, P the largest divisor <= sqrt) of all of the group's ranks.
 *   -eigen_groups G       number of rank groups (default min(ranks, nfac); clamped to [1, ranks]).
 *   -eigen_lapack BOOL    groups of one rank use LAPACK dsyevd (default 1; 0: ScaLAPACK on a 1 x 1 grid).
 *
 * Errors (raised on every rank of comm with the same message):
 *   PETSC_ERR_ARG_WRONG       nfac, n[] or scale differ between ranks, n[f] out of range, a NULL buffer,
 *                             non-finite scale, a malformed -eigen_grid.
 *   PETSC_ERR_ARG_OUTOFRANGE  -eigen_block_size < 1, or -eigen_grid P x Q times the groups exceeds the ranks.
 *   PETSC_ERR_FP              non-finite entry in a factor: names the factor and the first bad (i, j)
 *                             (row-major order) of the scaled summed factor.
 *   PETSC_ERR_LIB             ScaLAPACK or LAPACK info < 0 (an illegal argument, i.e. a bug here): names the routine and
 *                             the argument.
 *   PETSC_ERR_CONV_FAILED     pdsyevd / dsyevd info > 0 (the tridiagonal divide-and-conquer failed): names the factor. */
/* Collective.  Reads and checks the -eigen_* options above (InflEigenSolve reads them again when it runs), so that a
 * driver can reject a bad value, and list the options in -help, before any work starts. */
PetscErrorCode InflEigenSetFromOptions(MPI_Comm comm);

PetscErrorCode InflEigenSolve(MPI_Comm comm, PetscInt nfac, const PetscInt n[], double *C[], double scale, double *evals[], double *Q[], const char *const names[]);

/* InflEigenSolveSplit -- the factors distributed by rows, as on a 1 x E BLACS grid (the layer split of infl/layout.h).
 * Collective over comm (E ranks; the grid is built on first use and cached on comm like InflEigenSolve's).
 *   n[f], nb[f]  order and block size of factor f (the same on every rank); rank p holds the rows
 *                InflBlacsGlobal(k, nb[f], p, E), k < InflBlacsLocalCount(n[f], nb[f], p, E), of the factor.
 *   C[f]         (nloc, n[f]) row-major: rank p's rows of the summed factor (complete sums, not partial ones), which
 *                for a symmetric matrix is the column-major local piece pdsyevd reads (upper triangle used).
 *                Scaled by `scale` in place; not symmetrized (it is read only through its upper triangle).
 *   evals[f]     (n[f]) out, every rank: the eigenvalues, ascending.
 *   Q[f]         (nloc, n[f]) out: row k is the unit eigenvector of evals[f][InflBlacsGlobal(k, ...)] (column k of
 *                pdsyevd's local piece of Z), signs as InflEigenSolve's (largest magnitude entry positive).
 *   budget       bytes a rank may allocate for one gathered factor (negative: no limit; the smallest over comm used).
 * How (docs/FORMATS.md "Split layers"): by default (-eigen_split_gather true) the factors whose gathered solve fits
 * the budget (3 n^2 + 6 n doubles and 5 n ints on the solving rank) are solved in rounds of E, the largest first:
 * in a round each rank of comm gathers one factor's rows, solves it with LAPACK dsyevd and scatters the eigenvector
 * rows back (eigenvalues broadcast), so the E ranks solve E factors at once.  The other factors (all of them with
 * -eigen_split_gather false) are solved by pdsyevd on the 1 x E grid directly on the pieces: no factor is held
 * whole, each rank holds 1/E of it and of its eigenvectors.
 * Errors (every rank, the same message): a non-finite entry (names the factor and an entry), pdsyevd failures as
 * InflEigenSolve's. */
PetscErrorCode InflEigenSolveSplit(MPI_Comm comm, PetscInt nfac, const PetscInt n[], const int nb[], double *C[], double scale, double *evals[], double *Q[], const char *const names[], double budget);

/* InflBlacsGetGrid -- the BLACS process grid of all ranks of comm, for other ScaLAPACK work (the projected Fisher
 * of the gradient store, infl/store.h).  Collective over comm on first use: built as InflEigenSolve builds its grids
 * (a sub-communicator of all ranks from MPI_Comm_split, Csys2blacs_handle, Cblacs_gridinit "Row"), the most square
 * shape of the ranks (nprow <= npcol, nprow the largest divisor <= sqrt(ranks)), and cached on comm with
 * InflEigenSolve's grids (released by InflEigenFinalize).  Every rank is on the grid: rank r of comm is at
 * (r / npcol, r % npcol).  Errors: PETSC_ERR_LIB when BLACS builds another grid than asked. */
typedef struct {
  int ictxt;        /* BLACS context */
  int nprow, npcol; /* grid shape */
  int myrow, mycol; /* this rank's place */
} InflBlacsGrid;
PetscErrorCode InflBlacsGetGrid(MPI_Comm comm, InflBlacsGrid *grid);

/* Global index of local index l of a block-cyclic distribution (blocks of nb over np processes, first block on
 * process 0) on process p; and the number of the n indices that process p holds (ScaLAPACK's NUMROC). */
static inline int64_t InflBlacsGlobal(int64_t l, int nb, int p, int np)
{
  return (l / nb) * nb * np + (int64_t)p * nb + l % nb;
}
static inline int64_t InflBlacsLocalCount(int64_t n, int nb, int p, int np)
{
  int64_t blocks = n / nb, c = (blocks / np) * nb, extra = blocks % np;
  if (p < extra) c += nb;
  else if (p == extra) c += n % nb;
  return c;
}

/* BLACS and ScaLAPACK entry points (libscalapack-openmpi; Fortran INTEGER is a 32-bit int). */
extern void Cblacs_pinfo(int *mypnum, int *nprocs);
extern int  Csys2blacs_handle(MPI_Comm comm);
extern void Cfree_blacs_system_handle(int handle);
extern void Cblacs_gridinit(int *ictxt, const char *order, int nprow, int npcol);
extern void Cblacs_gridinfo(int ictxt, int *nprow, int *npcol, int *myrow, int *mycol);
extern void Cblacs_gridexit(int ictxt);
extern int  numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
extern void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb, const int *irsrc, const int *icsrc, const int *ictxt, const int *lld, int *info);
extern void pdsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *ia, const int *ja, const int *desca, double *w, double *z, const int *iz, const int *jz, const int *descz, double *work, const int *lwork, int *iwork, const int *liwork, int *info);
extern void pdpotrf_(const char *uplo, const int *n, double *a, const int *ia, const int *ja, const int *desca, int *info);
extern void pdpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *ia, const int *ja, const int *desca, double *b, const int *ib, const int *jb, const int *descb, int *info);

/* Release the BLACS grids and sub-communicators cached on every communicator by InflEigenSolve.  Collective
 * over every communicator that holds a cache (it frees MPI communicators): all of its ranks call it.  Called automatically from PetscFinalize; calling it earlier is allowed (the next
 * InflEigenSolve builds new grids).  Freeing a communicator with MPI_Comm_free also frees its cached grids. */
PetscErrorCode InflEigenFinalize(void);

#endif

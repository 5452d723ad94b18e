/* infl/ihvp.h -- "exact" inverse-Hessian-vector products: Krylov solves with the damped curvature, EK-FAC as
 * preconditioner, and the fidelity of cheaper approximations against them.
 *
 * Grosse et al. (2023), section 2.2 and appendix (the damped Gauss-Newton Hessian and its iterative inverse);
 * Koh & Liang (2017) (conjugate gradients with Hessian-vector products); Martens (2010) (matrix-free
 * Gauss-Newton products inside CG).  The operator, on the parameter vector theta (n = sum over layers of
 * dout*(din+1), in the model's slab order: per layer W row-major then b), is
 *     y = (C + D) v,   D = diag(damping_l on layer l's entries)  (the damping EK-FAC uses, or -ekfac_damping),
 * with C one of (N = training examples, g_n the gradient of example n's loss):
 *   ggn        (1/N) sum_n J_n^T H_n J_n v,  H_n = diag(p_n) - p_n p_n^T   (R-op forward + backward; exact; default)
 *   empirical  (1/N) sum_n g_n (g_n^T v)     (data labels; c_n = sum_l Ds_n^T V_l a_n from captured a, Ds)
 *   true       (1/N) sum_n g~_n (g~_n^T v)   (labels sampled from the model, InflModelSampleLabels with
 *                                             -ihvp_seed: a one-sample Monte-Carlo estimate of the GGN)
 * as a PETSc MATSHELL over a Vec in PETSc's default layout of n over the ranks.  Each product gathers v to every
 * rank (VecScatterCreateToAll), streams this rank's training shard in chunks and adds the partial products back
 * into the Vec layout (reverse scatter with ADD_VALUES).  The preconditioner is a PCSHELL applying the EK-FAC
 * inverse layer by layer (InflEKFACPrecondition) to the gathered vector.
 *
 * Options: -ihvp_curvature ggn|empirical|true, -ihvp_seed S (0, true Fisher labels), -ihvp_chunk B (512),
 * -ihvp_allow_unconverged (warn and record instead of failing); the KSP has prefix ihvp_ (-ihvp_ksp_type cg default,
 * -ihvp_ksp_rtol 1e-8 default, -ihvp_ksp_max_it 500 default, -ihvp_pc_type shell (EK-FAC, default when factors are
 * given) | none | ..., -ihvp_ksp_monitor, ...).
 *
 * Progress: every -progress_interval seconds (default 10; 0: every iteration) a solve prints, on rank 0 of the
 * communicator,
 *     ihvp query 17: iteration 12, residual norm 3.2e-04 (relative to the right-hand side 1.1e-05, target 1.0e-08),
 *     4.1 s, ETA 6 s (21 more iterations)
 * from a KSP monitor (KSPMonitorSet in InflIHVPSetUp, so -ihvp_ksp_monitor_cancel removes it).  The ETA extrapolates
 * log(residual norm) linearly over the last 16 iterations down to the KSP's stopping threshold max(rtol r_0, abstol),
 * at the mean time per iteration so far; "ETA unknown" while that trend is not decreasing.  The monitor only reads:
 * the solution is the same with and without it.
 */
#ifndef INFL_IHVP_H
#define INFL_IHVP_H

#include <infl/ekfac.h>
#include <petscksp.h>

typedef enum { INFL_CURVATURE_GGN = 0, INFL_CURVATURE_EMPIRICAL, INFL_CURVATURE_TRUE } InflCurvature;
extern const char *const InflCurvatureNames[];

typedef struct _p_InflIHVP *InflIHVP;

/* The outcome of one solve. */
typedef struct {
  PetscInt           iterations;
  KSPConvergedReason reason;
  double             rnorm, bnorm; /* final residual norm (as the KSP measures it) and right-hand side norm */
  PetscBool          converged;    /* reason > 0, or a zero right-hand side */
  PetscBool          zero_rhs;     /* b = 0: x = 0 without a solve */
} InflIHVPSolveInfo;

PetscErrorCode InflIHVPCreate(MPI_Comm comm, InflIHVP *ih);
/* -ihvp_curvature, -ihvp_seed, -ihvp_chunk, -ihvp_allow_unconverged, and -progress_interval (InflProgressGetInterval,
 * infl/checkpoint.h); the KSP's options come in InflIHVPSetUp. */
PetscErrorCode InflIHVPSetFromOptions(InflIHVP ih);
PetscErrorCode InflIHVPSetCurvature(InflIHVP ih, InflCurvature curv, uint64_t seed);
/* Collective.  Operator for `model` over this rank's shard of `train`.  ek (may be NULL) gives the per-layer
 * damping and the preconditioner; without it every layer's damping is `damping` (>= 0; used also with ek when
 * damping >= 0, else ek's).  Creates the MATSHELL, the PCSHELL and the KSP and applies the KSP options. */
PetscErrorCode InflIHVPSetUp(InflIHVP ih, InflModel model, InflData train, InflEKFAC ek, double damping);
PetscErrorCode InflIHVPGetOperator(InflIHVP ih, Mat *A);
PetscErrorCode InflIHVPGetKSP(InflIHVP ih, KSP *ksp);
/* (Re)install the EK-FAC PCSHELL on the KSP (after a PCSetType to another type, which drops the shell's context). */
PetscErrorCode InflIHVPSetEKFACPreconditioner(InflIHVP ih);
/* Global number of parameters and the per-layer damping in use (L values). */
PetscErrorCode InflIHVPGetDamping(InflIHVP ih, PetscInt *L, const double **damping);
/* Collective.  x = (C + D)^-1 b.  A zero b gives x = 0 (info->zero_rhs, noted on stdout).  A solve whose
 * KSPConvergedReason is not positive is an error naming `what` (e.g. "query 17"), the reason, the iterations and the
 * residual norm -- or, with -ihvp_allow_unconverged, a warning, and info->converged is false. */
PetscErrorCode InflIHVPSolve(InflIHVP ih, Vec b, Vec x, const char what[], InflIHVPSolveInfo *info);
/* Collective.  Flat vector (n, slab layout, identical on every rank) <-> Vec; VecToArray gathers to all ranks. */
PetscErrorCode InflIHVPArrayToVec(InflIHVP ih, const double g[], Vec v);
PetscErrorCode InflIHVPVecToArray(InflIHVP ih, Vec v, double g[]);
/* Collective.  For Q queries (every rank passes the same xq (Q, din), yq, qindex): solve (C + D) p_q = g_q with g_q
 * the gradient of the query's loss with its label, and return P[l] (Q, dout_l, din_l+1) (bias last, the layout of
 * infl/ekfac.h), allocated with PetscMalloc1 (the caller frees each), and info (Q) if not NULL.  Scored like EK-FAC
 * queries through InflScorerSetPreconditionedQueries (infl/score.h). */
PetscErrorCode InflIHVPSolveQueries(InflIHVP ih, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[], double **P, InflIHVPSolveInfo info[]);
PetscErrorCode InflIHVPView(InflIHVP ih, PetscViewer viewer);
PetscErrorCode InflIHVPDestroy(InflIHVP *ih);

/* Layer l's block of a flat slab vector (W (dout, din) then b) <-> (dout, din+1) with the bias last. */
void InflIHVPSlabToLayer(PetscInt din, PetscInt dout, const double slab[], double G[]);
void InflIHVPLayerToSlab(PetscInt din, PetscInt dout, const double G[], double slab[]);

/* ---------------------------------------------------------------- fidelity of approximate IHVPs
 * Collective.  On Q queries, compares the IHVPs of identity (plain gradient), K-FAC (the loaded factors with
 * Lambda = eS eA^T), EK-FAC, against the Krylov solution: per query the Pearson and Spearman correlation of the
 * scores over the training examples of `train` (all of them: pass a subset with -train_limit), the overlap of the
 * top-k (|top-k(method) & top-k(exact)| / k) and the relative error ||p_method - p_exact|| / ||p_exact||.
 * Writes `out` (HDF5, if not empty): /methods (attribute, comma-separated), /pearson, /spearman, /topk_overlap,
 * /relative_error (M, Q), /query_indices (Q), /krylov_iterations (Q), and prints the mean table. */
typedef struct {
  PetscInt  M, Q, K;
  char      names[5][16];
  double   *pearson, *spearman, *overlap, *relerr; /* (M, Q) */
  PetscInt *iterations;                            /* (Q) */
} InflFidelity;
PetscErrorCode InflFidelityCompute(InflIHVP ih, InflModel model, InflEKFAC ek, InflData train, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[], PetscInt K, InflFidelity *fid);
PetscErrorCode InflFidelitySave(InflFidelity *fid, MPI_Comm comm, InflModel model, InflData train, const int64_t qindex[], const char path[], PetscBool overwrite);
PetscErrorCode InflFidelityView(InflFidelity *fid, MPI_Comm comm);
PetscErrorCode InflFidelityFree(InflFidelity *fid);

#endif

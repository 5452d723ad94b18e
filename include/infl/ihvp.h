/* infl/ihvp.h -- "exact" inverse-Hessian-vector products: Krylov solves with the damped curvature, many queries per
 * pass over the training data, and the fidelity of cheaper approximations against them.
 *
 * Grosse et al. (2023), section 2.2 and appendix (the damped Gauss-Newton Hessian and its iterative inverse);
 * Koh & Liang (2017) (conjugate gradients with Hessian-vector products); Martens (2010) (matrix-free
 * Gauss-Newton products inside CG).  The operator acts on the IHVP vector theta of the model's exposed layers
 * (InflModelGetLayers: every linear layer of an MLP; the captured layers of a GPT-2 under -ekfac_layers, the
 * factors' selection when -factors is given): n = sum over those layers of dout*(din+1), layer by layer, each as
 * (dout, din) row-major then the bias (dout) -- for an MLP exactly its parameter slab; for a GPT-2 layer the
 * (dout, din) block is the transpose of its Conv1D weight.  The operator is
 *     y = (C + D) v,   D = diag(damping_l on layer l's entries)  (the damping EK-FAC uses, or -ekfac_damping),
 * with C one of (N = training examples or sequences, g_s the gradient of sequence s's summed loss, sum over its rows
 * t of Ds_t a_t^T from the captures, infl/model.h):
 *   ggn        (1/N) sum_n J_n^T H_n J_n v,  H_n = diag(p_n) - p_n p_n^T   (R-op forward + backward; exact; default;
 *                                            models of rows with the operation only: the MLP.  Asked of another type
 *                                            it is an error naming -ihvp_curvature empirical | true; by default such
 *                                            a type gets empirical, with a note)
 *   empirical  (1/N) sum_s g_s (g_s^T v)     (data labels, the next tokens of a sequence)
 *   true       (1/N) sum_s g~_s (g~_s^T v)   (labels sampled from the model by InflModelCaptureShard with -ihvp_seed:
 *                                             a one-sample Monte-Carlo estimate of the GGN)
 * as a PETSc MATSHELL over a Vec in PETSc's default layout of n over the ranks.  A product of nq directions at once
 * (InflIHVPMultBlock; MatMult is the case nq = 1) gathers them to every rank (VecScatterCreateToAll), streams this
 * rank's training shard in chunks -- one capture (forward and backward) per chunk serves all directions: per layer
 * c_s,q = sum_t Ds_t^T V_q a_t by the GEMM a V^T over the stacked directions, then U_q += sum_t c_s(t),q Ds_t a_t^T by
 * a second GEMM; ggn: one R-op pass per chunk and direction -- and adds the partial products back into the Vec layout
 * (reverse scatter with ADD_VALUES).  Cost per product: one pass over the data plus 4 N_rows n flops per direction.
 * MatGetDiagonal gives the exact diagonal of C + D (one pass over the data: sum_s g_s^2; ggn: sum over classes y of
 * p_y g_y^2, one capture per class), so -ihvp_pc_type jacobi is the exact-diagonal preconditioner.
 *
 * Solves.  All queries are solved together by lockstep CG (-ihvp_block, default): each query keeps its own CG
 * recurrence (alpha, beta, stopping test: PETSc's KSPCG with KSP_NORM_UNPRECONDITIONED and KSPConvergedDefault, x0 = 0),
 * and the products of the queries still running are made together, so one pass over the training data per
 * iteration serves every query; a query leaves the block when it converges.  Its solutions equal one-at-a-time KSP
 * solves to the tolerance.  The preconditioner is the KSP's PC (PCApply per query).  With -ihvp_block false, or a KSP
 * type other than cg, each query is one KSPSolve.
 *
 * Options: -ihvp_curvature ggn|empirical|true, -ihvp_seed S (0, true Fisher labels), -ihvp_chunk B (512 examples or
 * sequences per chunk), -ihvp_block (true), -ihvp_allow_unconverged (warn and record instead of failing); the KSP has
 * prefix ihvp_ (-ihvp_ksp_type cg default, -ihvp_ksp_rtol INFL_IHVP_RTOL default, -ihvp_ksp_max_it INFL_IHVP_MAX_IT
 * default, -ihvp_pc_type none (default, with the deflation below; docs/FIDELITY.md "Preconditioning" measures the choices) | shell (the EK-FAC
 * inverse, InflEKFACPrecondition, needs factors; -ihvp_pc_damping X: with damping X on every layer instead of the
 * solve's, InflEKFACPreconditionDamped) | jacobi (the exact diagonal); no other PC, -ihvp_ksp_monitor, ...);
 * -ihvp_deflate K (INFL_IHVP_DEFLATE by default, with pc none; 0: off): the deflation preconditioner M^-1 = I + sum_i (sigma/theta_i - 1) v_i v_i^T of the K
 * largest Ritz pairs of -ihvp_deflate_steps M (2 K + 10) Lanczos steps on C + D from a fixed Gaussian start (M products
 * of one direction, once per InflIHVP; full reorthogonalization), sigma the (K+1)-th Ritz value (InflIHVPGetDeflation).
 * Memory: M + 1 Lanczos vectors of n doubles during the run, then K, distributed over the ranks.  Their bound per
 * rank: with -mem_limit what it leaves after the stage's other bytes (training shard, factors, the queries' vectors,
 * the capture and scratch) and 64 MiB for the libraries; without it INFL_IHVP_DEFLATE_BYTES for the default K.  The
 * default K gives way to that bound (a note says to what K and why, or "no deflation"), silently to another
 * -ihvp_pc_type and to a singular operator (none); an explicit -ihvp_deflate or -ihvp_deflate_steps beyond
 * -mem_limit, or a singular operator under an explicit K, is an error.
 * Breakdown: a beta at or below 1e-10 of the running estimate of ||T|| means the Krylov space of the start vector is
 * exhausted (C + D has only m distinct eigenvalues along it: e.g. fewer training examples than steps); the run stops
 * there and deflates the largest converged Ritz pairs (all but the smallest at most, onto it), with a note naming the
 * step, beta and the K kept.  Without breakdown the K largest are deflated, converged or not (the line says how many
 * have: residual estimate below 1.5e-8 ||T||).
 * The run is resumable: inside the block solve with a checkpoint (InflIHVPSetCheckpoint) it saves its basis and
 * tridiagonal to OUT.ihvp.partial every -checkpoint_interval seconds, on a signal and after -checkpoint_stop_after
 * steps, then its Ritz pairs with the solve's checkpoints (the first written as soon as the run ends); a rerun
 * resumes the run, or restores the Ritz pairs without a pass over the data.  The vectors are stored whole: any rank
 * count resumes.
 *
 * Progress: every -progress_interval seconds (default 10; 0: every iteration) each running solve prints, on rank 0
 * of the communicator,
 *     ihvp query 17: iteration 12, residual norm 3.2e-04 (relative to the right-hand side 1.1e-05, target 1.0e-08),
 *     4.1 s, ETA 6 s (21 more iterations)
 * (one-at-a-time solves: from a KSP monitor installed in InflIHVPSetUp; -ihvp_ksp_monitor_cancel removes the lines of
 * both kinds of solve), and the Lanczos run of the deflation
 *     ihvp deflation: Lanczos step 40 of 210, 162.3 s, ETA 690 s.
 * The ETA extrapolates log(residual norm) linearly over the later half of the iterations (at least the last 16) down
 * to the stopping threshold max(rtol r_0, abstol), at the mean time per iteration so far; "ETA unknown" while that
 * trend is not decreasing.  Once a solve has run 30 iterations and a tenth of max_it, a trend that needs more than
 * twice max_it prints a warning with the relative residual, its rate of decrease and what to change.  Printing only
 * reads: the solution is the same with and without it.
 *
 * Checkpoints (InflIHVPSetCheckpoint(OUT)): the block solve saves its state (per query x, r, p, r^T z, iterations,
 * norms; the deflation's Ritz pairs) to OUT.ihvp.partial every -checkpoint_interval seconds (600), on
 * SIGTERM/SIGUSR1/SIGINT (then fails with INFL_ERR_INTERRUPTED) and after -checkpoint_stop_after iterations (tests;
 * the Lanczos run of the deflation counts its own steps the same way); a rerun with the same operator, solver
 * options (the deflation's K and steps after the memory bound) and right-hand sides resumes from it (the key hashes
 * them; a different run is refused naming the file).  docs/FORMATS.md describes the file.
 */
#ifndef INFL_IHVP_H
#define INFL_IHVP_H

#include <infl/ekfac.h>
#include <petscksp.h>

/* Default stopping test and iteration limit of the solves (docs/FIDELITY.md, "Preconditioning"). */
#define INFL_IHVP_RTOL 1e-6
#define INFL_IHVP_MAX_IT 1000
/* Default -ihvp_deflate: the deflation preconditioner of the 100 largest eigenvalues (210 Lanczos passes, once), fewer
 * when its 2 K + 11 vectors would take more than -mem_limit leaves, or without -mem_limit INFL_IHVP_DEFLATE_BYTES per
 * rank (docs/FIDELITY.md, "Preconditioners at the default damping"). */
#define INFL_IHVP_DEFLATE 100
#define INFL_IHVP_DEFLATE_BYTES (1024.0 * 1024.0 * 1024.0)

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
/* -ihvp_curvature, -ihvp_seed, -ihvp_chunk, -ihvp_block, -ihvp_allow_unconverged, -progress_interval
 * (InflProgressGetInterval, infl/checkpoint.h), -checkpoint_interval, -checkpoint_stop_after; the KSP's options come
 * in InflIHVPSetUp. */
PetscErrorCode InflIHVPSetFromOptions(InflIHVP ih);
PetscErrorCode InflIHVPSetCurvature(InflIHVP ih, InflCurvature curv, uint64_t seed);
/* Collective.  Operator for `model` (its exposed layers) over this rank's shard of `train` (rows or sequences).  ek
 * (may be NULL) gives the per-layer damping and the EK-FAC preconditioner; without it every layer's damping is
 * `damping` (>= 0; used also with ek when damping >= 0, else ek's).  Creates the MATSHELL and the KSP and applies the
 * KSP options.  Errors: ggn for a model type without a Gauss-Newton product (names -ihvp_curvature empirical | true),
 * factors of other layers than the model exposes, -ihvp_pc_type shell without factors, -ihvp_ksp_rtol outside (0, 1)
 * (PETSc takes any value; 1 or more would stop at x0 = 0), -ihvp_ksp_atol not finite and >= 0, -ihvp_ksp_max_it < 1,
 * an -ihvp_pc_type other than none, shell, jacobi. */
PetscErrorCode InflIHVPSetUp(InflIHVP ih, InflModel model, InflData train, InflEKFAC ek, double damping);
PetscErrorCode InflIHVPGetOperator(InflIHVP ih, Mat *A);
PetscErrorCode InflIHVPGetKSP(InflIHVP ih, KSP *ksp);
/* (Re)install the EK-FAC PCSHELL on the KSP (after a PCSetType to another type, which drops the shell's context). */
PetscErrorCode InflIHVPSetEKFACPreconditioner(InflIHVP ih);
/* After the first solve with -ihvp_deflate K: the K largest Ritz values theta (descending, owned by ih) of the Lanczos
 * run and sigma, the (K+1)-th, onto which the preconditioner maps them; K = 0 (and NULL) before or without it. */
PetscErrorCode InflIHVPGetDeflation(InflIHVP ih, PetscInt *K, const double **theta, double *sigma);
/* The per-layer damping in use (L values). */
PetscErrorCode InflIHVPGetDamping(InflIHVP ih, PetscInt *L, const double **damping);
/* n (the IHVP vector's length), L and the layers' offsets off (L+1) in it; any may be NULL. */
PetscErrorCode InflIHVPGetSizes(InflIHVP ih, PetscInt *n, PetscInt *L, const int64_t **off);
/* Collective.  Y[q] = (C + D) X[q] for nq directions with one pass over the training data (the block product). */
PetscErrorCode InflIHVPMultBlock(InflIHVP ih, PetscInt nq, Vec X[], Vec Y[]);
/* Collective.  Make the block solve resumable: its checkpoint is OUT.ihvp.partial (see above); NULL or "" turns it off.
 * The caller removes the file once the results are written (InflRemoveAll).  A stale OUT.ihvp.partial.tmp (a run
 * stopped while writing the checkpoint) is removed with a line saying so (InflCheckpointRemoveStaleTmp). */
PetscErrorCode InflIHVPSetCheckpoint(InflIHVP ih, const char out[]);
/* Collective.  x = (C + D)^-1 b.  A zero b gives x = 0 (info->zero_rhs, noted on stdout).  A solve whose
 * KSPConvergedReason is not positive is an error naming `what` (e.g. "query 17"), the reason, the iterations and the
 * residual norm -- or, with -ihvp_allow_unconverged, a warning, and info->converged is false. */
PetscErrorCode InflIHVPSolve(InflIHVP ih, Vec b, Vec x, const char what[], InflIHVPSolveInfo *info);
/* Collective.  Flat vector (n, slab layout, identical on every rank) <-> Vec; VecToArray gathers to all ranks. */
PetscErrorCode InflIHVPArrayToVec(InflIHVP ih, const double g[], Vec v);
PetscErrorCode InflIHVPVecToArray(InflIHVP ih, Vec v, double g[]);
/* Collective.  Solve (C + D) p_q = g_q for Q right-hand sides g (Q, n) in the IHVP layout (the same on every rank;
 * qindex (Q) names them in messages, may be NULL): all together by lockstep CG, or one by one (see above).  Returns
 * P[l] (Q, dout_l, din_l+1) (bias last, the layout of infl/ekfac.h), allocated with PetscMalloc1 (the caller frees
 * each), and info (Q) if not NULL.  Scored like EK-FAC queries through InflScorerSetPreconditionedQueries
 * (infl/score.h).  Errors as InflIHVPSolve, for the first query that failed. */
PetscErrorCode InflIHVPSolveGradients(InflIHVP ih, PetscInt Q, const double g[], const int64_t qindex[], double **P, InflIHVPSolveInfo info[]);
/* Not collective.  g (B, n) in the IHVP layout: each of the capture's sequences' gradient sum_t Ds_t a_t^T of every
 * exposed layer. */
PetscErrorCode InflIHVPCaptureGradients(InflIHVP ih, const InflCapture *cap, double g[]);
/* Collective (every rank computes all).  g (Q, n): the gradients of the loss of queries qidx (Q) of `query` (rows
 * with their labels, or sequences with their next tokens), computed in double precision. */
PetscErrorCode InflIHVPQueryGradients(InflIHVP ih, InflData query, PetscInt Q, const int64_t qidx[], double g[]);
/* Collective.  g (Q, n) of Q token sequences (offsets (Q+1), tokens, targets as InflModelCaptureSequences; a
 * prompt/completion pair has targets -1 on its prompt rows), in double precision. */
PetscErrorCode InflIHVPSequenceGradients(InflIHVP ih, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double g[]);
/* Collective.  InflIHVPSolveGradients for Q row queries xq (Q, din) with labels yq (a model of rows). */
PetscErrorCode InflIHVPSolveQueries(InflIHVP ih, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[], double **P, InflIHVPSolveInfo info[]);
PetscErrorCode InflIHVPView(InflIHVP ih, PetscViewer viewer);
PetscErrorCode InflIHVPDestroy(InflIHVP *ih);

/* Layer l's block of a flat slab vector (W (dout, din) then b) <-> (dout, din+1) with the bias last. */
void InflIHVPSlabToLayer(PetscInt din, PetscInt dout, const double slab[], double G[]);
void InflIHVPLayerToSlab(PetscInt din, PetscInt dout, const double G[], double slab[]);

/* ---------------------------------------------------------------- fidelity of approximate IHVPs
 * Collective.  On Q queries with gradients g (Q, n) (InflIHVPQueryGradients; the IHVP layout), compares the IHVPs of identity (plain gradient), K-FAC (the loaded factors with
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
PetscErrorCode InflFidelityCompute(InflIHVP ih, InflModel model, InflEKFAC ek, InflData train, PetscInt Q, const double g[], const int64_t qindex[], PetscInt K, InflFidelity *fid);
PetscErrorCode InflFidelitySave(InflFidelity *fid, MPI_Comm comm, InflModel model, InflData train, const int64_t qindex[], const char path[], PetscBool overwrite);
PetscErrorCode InflFidelityView(InflFidelity *fid, MPI_Comm comm);
PetscErrorCode InflFidelityFree(InflFidelity *fid);

#endif

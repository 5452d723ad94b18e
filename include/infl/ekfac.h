/* infl/ekfac.h -- eigenvalue-corrected Kronecker-factored curvature (EK-FAC) and its inverse.
 *
 * George et al. (2018), "Fast Approximate Natural Gradient Descent in a Kronecker-factored Eigenbasis";
 * Grosse et al. (2023), "Studying Large Language Model Generalization with Influence Functions", section 2.
 * Per linear layer l with captured inputs a (din+1, trailing 1) and pseudo-gradients Ds (dout):
 *   A = (1/N) sum_n a a^T,  S = (1/N) sum_n Ds Ds^T                     (double accumulation)
 *   A = Q_A diag(eA) Q_A^T, S = Q_S diag(eS) Q_S^T                      (ScaLAPACK pdsyevd, infl/eigen.h)
 *   Lambda[i,j] = (1/N) sum_n ((Q_S^T DW_n Q_A)[i,j])^2,  DW_n = Ds_n a_n^T   (the eigenvalue correction)
 *   damping_l = 0.1 * mean(Lambda_l) unless -ekfac_damping is given
 *   accepted only if damping_l + min(Lambda_l) >= max(Lambda_l) * INFL_DAMPING_EPS_MULTIPLE * eps, eps the machine
 *   epsilon of the model's per-example precision (FLT_EPSILON under -model_precision single, DBL_EPSILON under
 *   double): a more ill-conditioned (Lambda + damping) amplifies the rounding of the gradients into the scores
 *   (or overflows them); checked at the end of a fit, on load (stored or -ekfac_damping) and by InflEKFACSetDamping
 *   precondition(G) = Q_S [ (Q_S^T G Q_A) / (Lambda + damping_l) ] Q_A^T   (elementwise division)
 * N counts examples (for a sequence model, tokens for A and S and sequences for Lambda).
 * The pseudo-gradient uses labels sampled from the model (true Fisher, default, keyed by (seed, example index) so
 * the result does not depend on the rank count) or the data labels (empirical Fisher).
 *
 * Options (prefix -ekfac_): -ekfac_fisher true|empirical, -ekfac_seed S (0), -ekfac_damping X (absolute damping
 * for every layer; default 0.1 * mean(Lambda_l)), -ekfac_damping_factor F (0.1), -ekfac_chunk B (examples per
 * chunk; default from -mem_limit), -ekfac_kfac (skip the eigenvalue correction: Lambda = eS eA^T, i.e. K-FAC),
 * -ekfac_layers all|mlp|attn (the model's layers fitted, InflModelSetLayerSelection: all, or of a GPT-2 the MLP or
 * the attention layers of every block; written to factors.h5 as layer_selection, and InflEKFACLoad applies the
 * file's selection to the model and refuses a different -ekfac_layers).
 * The passes fill their captures with InflModelCaptureShard (rows or sequences, the Fisher kind's labels), so the
 * same code fits an MLP and a GPT-2.
 */
#ifndef INFL_EKFAC_H
#define INFL_EKFAC_H

#include <infl/model.h>
#include <infl/layout.h>

typedef struct _p_InflEKFAC *InflEKFAC;

/* The damping rule above: damping + min(Lambda) >= max(Lambda) * INFL_DAMPING_EPS_MULTIPLE * epsilon. */
#define INFL_DAMPING_EPS_MULTIPLE 10.0

/* One layer's factors.  Whole (np == 1): A (din+1)^2, S dout^2, Q_A, Q_S with the eigenvectors in columns, Lambda
 * (dout, din+1), all row-major.  Split over the np > 1 ranks of its layer group (-layer_split, infl/layout.h), rank p
 * holds ra of the din+1 indices Ia (InflBlacsGlobal(k, nba, p, np), k < ra) and rs of the dout indices Is (block
 * nbs), as pdsyevd on a 1 x np grid holds them:
 *   A (ra, din+1) = A[Ia, :],  S (rs, dout) = S[Is, :],  Lambda (rs, din+1) = Lambda[Is, :],
 *   QA (ra, din+1): row k is the eigenvector of eA[Ia[k]] (column Ia[k] of Q_A); QS (rs, dout) likewise,
 *   eA, eS whole. */
typedef struct {
  PetscInt din, dout;      /* factor A is (din+1)^2, S is dout^2 */
  double  *A, *S;          /* means */
  double  *QA, *QS;        /* eigenvectors in columns, row-major (split: in rows, see above) */
  double  *eA, *eS;        /* eigenvalues ascending */
  double  *Lambda;         /* (dout, din+1) corrected eigenvalues (split: rows Is) */
  double   damping;        /* in use */
  int      np, p;          /* split over np ranks (1: whole), this rank's index */
  int      nba, nbs;       /* block sizes of the split of the din+1 and the dout indices */
  PetscInt ra, rs;         /* indices held: din+1 and dout when whole */
} InflEKFACLayer;

PetscErrorCode InflEKFACCreate(MPI_Comm comm, InflEKFAC *ek);
PetscErrorCode InflEKFACSetFromOptions(InflEKFAC ek);
PetscErrorCode InflEKFACSetFisher(InflEKFAC ek, InflFisher fisher, uint64_t seed);
/* Override the damping: damping >= 0 for every layer (PETSC_DEFAULT restores 0.1 * mean(Lambda_l)).  Errors (once
 * Lambda is known): (Lambda + damping) singular; the damping rule above (names the layer, the damping, min and max
 * Lambda and the smallest damping accepted); the default damping of a layer whose Lambda is all zero (its gradients
 * vanish: give -ekfac_damping). */
PetscErrorCode InflEKFACSetDamping(InflEKFAC ek, double damping);
/* Make InflEKFACFit resumable: both passes checkpoint to OUT.partial (-checkpoint_interval), a signal stops the fit
 * after a checkpoint (INFL_ERR_INTERRUPTED), and an existing OUT.partial of the same fit (model, data, Fisher kind,
 * seed) is resumed.  OUT is the path later given to InflEKFACSave. */
PetscErrorCode InflEKFACSetCheckpoint(InflEKFAC ek, const char out[]);
/* Layer groups of the layout (infl/layout.h) that the next fit or load sets up: G >= 1, or 0 for the default (-layer_groups,
 * else from -mem_limit, else 1).  Without a call: -layer_groups.  Callers that need every layer on every rank (the
 * Krylov IHVP, which preconditions whole gradients) pass 1. */
PetscErrorCode InflEKFACSetLayerGroups(InflEKFAC ek, PetscInt G);
/* Split the layers inside their groups (infl/layout.h) in the next fit or load: PETSC_TRUE / PETSC_FALSE.  Without a
 * call: -layer_split.  The Krylov IHVP passes PETSC_FALSE. */
PetscErrorCode InflEKFACSetLayerSplit(InflEKFAC ek, PetscBool split);
/* Collective.  Error on every rank, naming `what`, if the layers are split inside their groups: for the computations
 * that need whole factors. */
PetscErrorCode InflEKFACCheckWhole(InflEKFAC ek, const char what[]);
/* What the stage that next loads the factors (InflEKFACLoad) holds per rank, for the default layer groups under
 * -mem_limit (infl/layout.h, InflLayerLayoutStage): infl score passes its preconditioned queries
 * (InflScorerGetQueryBytes).  Default: the factors once and nothing else (infl self).  Errors: a negative or
 * non-finite field, copies < 1. */
PetscErrorCode InflEKFACSetLoadMemory(InflEKFAC ek, const InflLayerLayoutStage *st);
/* Collective.  Before a fit whose factors a stage will load again (InflEKFACSetLoadMemory's stage, infl run's score):
 * sets up, then frees, the layer layout InflEKFACLoad would choose for the model's layers of this ek's -ekfac_layers,
 * so that a -mem_limit no layout of that stage holds is refused before the fit rather than after it (the error of
 * InflLayerLayoutSetUp).  Leaves the model's layer selection at -ekfac_layers (as InflEKFACFit sets it). */
PetscErrorCode InflEKFACCheckLoadMemory(InflEKFAC ek, InflModel model);
/* After a fit or load: the layout (owned by ek).  A rank holds the arrays of InflEKFACGetLayers only for the layers
 * it owns (InflLayerLayoutOwns); the others have din, dout and damping and NULL arrays, and the per-layer functions
 * below raise an error for them. */
PetscErrorCode InflEKFACGetLayout(InflEKFAC ek, InflLayerLayout *layout);
/* Collective.  Both passes over this rank's shard of `train` and the eigensolves.  Errors: a factor with non-finite
 * entries (names layer and factor: the model or data is broken), zero damping with a zero eigenvalue in Lambda
 * (the inverse is undefined; set -ekfac_damping > 0), a damping that breaks the rule above. */
PetscErrorCode InflEKFACFit(InflEKFAC ek, InflModel model, InflData train);
/* Collective.  Write factors.h5 (each layer by the first rank of the group holding it; PATH.partial then rename): /layers/<l>/{A, S, Q_A, Q_S,
 * eigenvalues_A, eigenvalues_S, Lambda} with attributes din, dout, damping; root attributes fisher, seed, examples,
 * damping_factor, and provenance (InflH5WriteProvenance). */
PetscErrorCode InflEKFACSave(InflEKFAC ek, const char path[], PetscBool overwrite);
/* Collective.  Read factors.h5; checks that it was fitted for `model` (hash; the error names both hashes) and
 * that every layer's shapes match.  Sets up the layout (InflEKFACSetLayerGroups) and reads only the layers this rank
 * owns (the other ranks take part in the collective reads with empty selections). */
PetscErrorCode InflEKFACLoad(InflEKFAC ek, const char path[], InflModel model);
PetscErrorCode InflEKFACGetLayers(InflEKFAC ek, PetscInt *L, InflEKFACLayer **layers);
/* Bytes held by the factors of a model (A, S, Q_A, Q_S, eigenvalues, Lambda per layer). */
size_t InflEKFACBytes(InflModel model);
PetscErrorCode InflEKFACGetTrainHash(InflEKFAC ek, const char **hex);
/* What identifies a fit: "fisher KIND seed S kfac 0|1", and with_damping the damping of every layer in use
 * (self-influence depends on it).  Recorded in outputs as fit_key / self_key so that a study reuses only outputs of
 * the same computation. */
PetscErrorCode InflEKFACGetKey(InflEKFAC ek, PetscBool with_damping, char key[], size_t len);
PetscErrorCode InflEKFACView(InflEKFAC ek, PetscViewer viewer);
PetscErrorCode InflEKFACDestroy(InflEKFAC *ek);

/* Not collective.  P (n, dout, din+1) = precondition(G_k) for n rank-one gradients G_k = ds_k a_k^T, ds (n, dout), a
 * (n, din+1), in double. */
PetscErrorCode InflEKFACPreconditionRankOne(InflEKFAC ek, PetscInt l, PetscInt n, const double ds[], const double a[], double P[]);
/* Not collective.  In place: G (dout, din+1) <- precondition(G) for one layer. */
PetscErrorCode InflEKFACPrecondition(InflEKFAC ek, PetscInt l, double G[]);
/* Not collective.  The same with another damping (>= 0) than the layer's: G <- Q_S [(Q_S^T G Q_A) / (Lambda + damping)] Q_A^T
 * (the Krylov IHVP's EK-FAC preconditioner with -ihvp_pc_damping, infl/ihvp.h). */
PetscErrorCode InflEKFACPreconditionDamped(InflEKFAC ek, PetscInt l, double damping, double G[]);
/* Rows per single-precision GEMM of InflEKFACRotatedSquares (every call has exactly this many, zero-padded). */
#define INFL_ROTATION_BLOCK 256
/* Not collective.  Squared eigenbasis coordinates of a captured chunk for layer l (Grosse et al. 2023, eq. 20: the
 * rank-one per-example gradient Ds a^T rotated into the Kronecker eigenbasis is (Q_S^T Ds)(Q_A^T a)^T):
 * ta2 (T, din+1) = (a Q_A)^2 and td2 (T, dout) = (Ds Q_S)^2 for the capture's T rows, returned in double.  A double-precision capture is
 * rotated with DGEMM.  A single-precision capture is rotated in single precision (per-example work, like the capture
 * itself) by SGEMMs of exactly INFL_ROTATION_BLOCK rows, so that every row takes the same kernel whatever the chunk
 * (its rounding still depends on its place in the block, within the bound of docs/FORMATS.md), and each Ds row is
 * scaled by its largest magnitude first (no denormals); the squares are formed in double.  The Lambda pass and self-influence are built on it. */
PetscErrorCode InflEKFACRotatedSquares(InflEKFAC ek, PetscInt l, const InflCapture *cap, double ta2[], double td2[]);
/* Not collective.  Self-influence terms of the captured chunk for layer l: out[b] += <precondition(G_b), G_b> with
 * G_b = sum over sequence b's rows of Ds_t a_t^T, i.e. sum_ij ((Q_S^T G_b Q_A)_ij)^2 / (Lambda_ij + damping).  One
 * row per example (an MLP): sum_ij td2[b,i] ta2[b,j] / (Lambda_ij + damping) from InflEKFACRotatedSquares; sequences
 * of several rows: G_b formed by one GEMM over its rows and rotated, in double (Grosse et al. 2023, section 2.2.3). */
PetscErrorCode InflEKFACSelfInfluenceCapture(InflEKFAC ek, PetscInt l, const InflCapture *cap, double out[]);
/* Not collective.  The eigenvalue correction's sum for layer l over the capture's sequences (Grosse et al. 2023,
 * eq. 20; George et al. 2018): Lsum (dout, din+1) += sum_b ((Q_S^T G_b Q_A)_ij)^2, G_b = sum over sequence b's rows of
 * Ds_t a_t^T.  One row per example: one GEMM of the rotated squares (InflEKFACRotatedSquares, scratch ta (B, din+1)
 * and td (B, dout)); sequences: G_b by one GEMM over its rows, rotated in double (ta (T, din+1) and td (T, dout)
 * hold the rows in double when the capture is in single precision). */
PetscErrorCode InflEKFACAccumulateLambda(InflEKFAC ek, PetscInt l, const InflCapture *cap, double ta[], double td[], double Lsum[]);
/* Not collective.  P (B, dout, din+1) = precondition(G_b) for the capture's sequences (a double-precision capture):
 * InflEKFACPreconditionRankOne for one row per example, else G_b = sum over the rows of Ds_t a_t^T then
 * InflEKFACPrecondition.  Releases the object's scratch (one layer's weights in double) at the end: it is called once
 * per layer for a block of queries, before a scoring pass that does not need it. */
PetscErrorCode InflEKFACPreconditionCapture(InflEKFAC ek, PetscInt l, const InflCapture *cap, double P[]);

/* Split layers (InflEKFACLayer np > 1): the rows of a layer group's captures and their rotation into the eigenbases. */
typedef struct {
  PetscInt        T, B;    /* the group's rows and sequences */
  const int64_t  *offsets; /* (B+1) sequence b owns rows [offsets[b], offsets[b+1]) */
  const PetscInt *bstart;  /* (E+1) the first sequence of each rank's capture, in group rank order */
  double         *a, *ds;  /* not rotated: (T, din+1) and (T, dout) in double */
  double         *v, *u;   /* rotated: v (T, din+1) = a Q_A (every column), u (T, rs) = Ds Q_S[:, Is] (this rank's) */
} InflEKFACGroupRows;
/* Collective over the layer group of split layer l (InflLayerLayoutGetComms `group`).  g <- the rows of layer l of the
 * captures of the group's E ranks (cap: this rank's, possibly empty), gathered in group rank order, and with rotate
 * their coordinates in the eigenbases (each rank computes the columns Ia of v, gathered; u only for its Is).  The
 * rotated gradient of sequence b restricted to rows Is is sum_{t in b} u_t v_t^T (Grosse et al. 2023, eq. 20).
 * The arrays are the object's scratch, valid until its next call.  Errors: layer l not split on this rank; a chunk
 * whose gathered rows exceed an MPI count. */
PetscErrorCode InflEKFACGatherGroupRows(InflEKFAC ek, PetscInt l, const InflCapture *cap, PetscBool rotate, InflEKFACGroupRows *g);
/* Not collective.  Free the scratch the object keeps between calls of a pass over chunks (the group rows of
 * InflEKFACGatherGroupRows, 5 arrays of the largest chunk's gathered rows of the widest layer in double), so that
 * it does not stay beside the next stage; the next call allocates it again.  InflScorerSetQueries, InflScorerScore
 * and the self-influence stage call it at their end. */
PetscErrorCode InflEKFACFreeScratch(InflEKFAC ek);
/* Not collective.  *bytes = what InflEKFACSelfInfluenceCapture keeps beside the factors whatever the chunk, over this
 * rank's whole (not split) layers for `model`'s capture: (Lambda + damping)^-1 of one layer, (dout, din+1) doubles
 * (two such matrices for sequences), and with one row per example in single precision the float copies of the
 * eigenbases Q_A, Q_S of every such layer and the rotation scratch (InflEKFACRotatedSquares).  The scratch is freed by
 * InflEKFACFreeScratch; the per-row scratch grows with the chunk and is not counted here. */
PetscErrorCode InflEKFACGetSelfInfluenceBytes(InflEKFAC ek, InflModel model, size_t *bytes);
/* Collective over the layer group of split layer l.  This rank's part of the self-influence of the group's sequences
 * (InflEKFACGatherGroupRows of cap, returned in g): part[b] += sum over i in Is, all j of
 * ((Q_S^T G_b Q_A)_ij)^2 / (Lambda_ij + damping), b < g->B; summed over the group's ranks it is
 * InflEKFACSelfInfluenceCapture's term. */
PetscErrorCode InflEKFACSelfInfluenceSplit(InflEKFAC ek, PetscInt l, const InflCapture *cap, InflEKFACGroupRows *g, double part[]);

/* Not collective.  Split layer l: the preconditioned gradients of sequences [b0, b1) of the group's rotated rows g
 * (InflEKFACGatherGroupRows with rotate) kept in the eigenbasis, this rank's rows Is: P (b1 - b0, rs, din+1),
 * W_b = (Q_S^T G_b Q_A)[Is, :] / (Lambda[Is, :] + damping).  precondition(G_b) = Q_S W_b Q_A^T, so with the rotated
 * rows of a training gradient the score <G_t, precondition(G_b)> is the sum over the group's ranks of
 * sum_{i in Is} u_t,i (W_b v_t)_i, and ||precondition(G_b)||_F = ||W_b||_F (Q_S, Q_A orthogonal). */
PetscErrorCode InflEKFACPreconditionSplit(InflEKFAC ek, PetscInt l, const InflEKFACGroupRows *g, PetscInt b0, PetscInt b1, double P[]);

/* Not collective.  Rank-r approximation of one layer's preconditioned query gradient P (nd, na) from its SVD
 * (LAPACK dgesdd): on return U (nd, r) = U_r S_r, V (na, r) = V_r and P = U V^T (in place).  Grosse et al. (2023),
 * section 3.2, use r = 32.  Error if r is not in [1, min(nd, na)]. */
PetscErrorCode InflLowRankApprox(PetscInt nd, PetscInt na, PetscInt r, double P[], double U[], double V[]);
#endif

/* infl/eval.h -- evaluation of attributions by retraining: the linear datamodeling score (LDS), leave-one-out,
 * mislabel detection, and the rank groups that train many models at once (src/eval/).
 *
 * LDS (Park et al. 2023, "TRAK: Attributing Model Behavior at Scale", section 2; the protocol of kronfluence and
 * dattri): J random subsets S_j of the training set, each of exactly m = round(alpha N) examples, a model trained on
 * each with the study's recipe, and each query's loss L_q(S_j) under it.  An attribution method with scores
 * tau(q, i) (positive = proponent: upweighting i lowers the query's loss) predicts the subset's effect as
 * g_q(S_j) = sum over i in S_j of tau(q, i); the LDS of the method is the mean over queries of the Spearman rank
 * correlation, across the subsets, between g_q(S_j) and -L_q(S_j).  Subsets whose training diverged are left out.
 *
 * Random numbers: Philox (infl/sys.h), keyed by (seed, counter), so masks and flipped labels do not depend on the
 * rank count.  Stream c1 = INFL_STREAM_SUBSET + 256 j for subset j, INFL_STREAM_MISLABEL for label flips.
 */
#ifndef INFL_EVAL_H
#define INFL_EVAL_H

#include <infl/model.h>
#include <infl/topk.h>

/* round(fraction N) (half away from zero), the members of every subset. */
int64_t InflSubsetSize(int64_t N, double fraction);
/* Not collective.  mask (N) of subset `subset`: 1 for exactly InflSubsetSize(N, fraction) examples, 0 elsewhere.  The
 * members are the first m entries of the Fisher-Yates permutation of [0, N) whose step i (i = N-1 .. 1) swaps i with
 * floor(u_i (i+1)), u_i = InflUniform(seed, i, INFL_STREAM_SUBSET + 256 subset).  Errors: fraction outside (0, 1], a
 * subset of no example, N < 1, subset < 0. */
PetscErrorCode InflSubsetMask(uint64_t seed, PetscInt subset, int64_t N, double fraction, uint8_t mask[]);

/* Not collective.  Spearman rank correlation of x (n) and y (n): the Pearson correlation of their ranks, tied values
 * getting the mean of their ranks (as scipy.stats.spearmanr).  NaN when n < 2 or either vector is constant. */
PetscErrorCode InflSpearman(PetscInt n, const double x[], const double y[], double *rho);

/* Not collective.  The LDS of one score matrix.  masks (J, N) uint8, losses (J, Q) (the query losses under the
 * subset models), valid (J) (PETSC_FALSE: a diverged subset, left out; NULL: all valid), scores (Q, N) row-major.
 * per_query (Q) out (may be NULL): Spearman over the valid subsets of (sum over i in S_j of scores[q, i], -losses[j,
 * q]), NaN where undefined (a constant loss or prediction).  *lds: the mean of the defined ones (NaN if none), *nq
 * (may be NULL) how many.  The subset sums are accumulated in double.  Errors: fewer than 3 valid subsets. */
PetscErrorCode InflLDSCompute(PetscInt J, int64_t N, PetscInt Q, const uint8_t masks[], const PetscBool valid[], const double losses[], const double scores[], double per_query[], double *lds, PetscInt *nq);

/* Not collective.  Each query's loss under `model`, as infl score measures it (the loss whose gradient it
 * preconditions), loss (Q), in the model's precision: queries qidx (Q) of the data `query`; rows (an MLP): the
 * cross-entropy with the data label of each (InflDataGetExamples; the parameter gradient slab is left zero); token
 * sequences (a GPT-2, the data set up for it): the summed next-token cross-entropy of the window
 * (InflDataGetSequences, InflQuerySequenceLosses with no targets). */
PetscErrorCode InflQueryLosses(InflModel model, InflData query, PetscInt Q, const int64_t qidx[], double loss[]);
/* Not collective.  The summed loss of each of Q token sequences under a sequence model (InflModelSequenceLoss, one
 * query at a time): query q is tokens[offsets[q], offsets[q+1]) with targets likewise (NULL: the next token); for the
 * prompt/completion queries of InflPromptsLoad this is -log p(completion | prompt).  loss (Q) out. */
PetscErrorCode InflQuerySequenceLosses(InflModel model, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double loss[]);

/* Not collective.  Pearson correlation of x (n) and y (n), accumulated in double about the means.  NaN when n < 2 or
 * either vector is constant. */
PetscErrorCode InflPearson(PetscInt n, const double x[], const double y[], double *r);

/* Leave-one-out (LOO): the loss change of query q when training example idx[k] is left out of training,
 * change[k, q] = L_q(model without idx[k]) - L_q(full model), compared with the scores tau(q, idx[k]) (positive
 * score = proponent = removing the example raises the loss, so a good method correlates positively).
 * Not collective.  Over the (k, q) pairs of K examples idx (K) and Q queries whose change (K, Q) and score (scores
 * (Q, N) row-major) are finite: *pearson and *spearman (InflPearson, InflSpearman) of (score, change), *npairs (may
 * be NULL) how many pairs.  Error: an index outside [0, N). */
PetscErrorCode InflLOOCorrelation(PetscInt K, const int64_t idx[], PetscInt Q, int64_t N, const double change[], const double scores[], double *pearson, double *spearman, PetscInt *npairs);

/* Not collective.  Mislabeled copy of labels y (N) of C classes: exactly InflSubsetSize(N, fraction) examples,
 * chosen as the members of InflSubsetMask with the stream INFL_STREAM_MISLABEL, get the label
 * (y + 1 + floor(u (C - 1))) mod C, u = InflUniform(seed, i, INFL_STREAM_MISLABEL + 256): always another class.
 * yflip (N) and flipped (N) out.  Errors: C < 2. */
PetscErrorCode InflMislabel(uint64_t seed, int64_t N, int64_t C, double fraction, const int64_t y[], int64_t yflip[], uint8_t flipped[]);
/* Not collective.  The examples InflMislabel flips, flipped (N): the members of InflSubsetMask's permutation with the
 * stream INFL_STREAM_MISLABEL; for token sequences the corrupted documents (windows permuted by InflDataCreateCorrupted
 * with the same seed).  Errors: a fraction outside (0, 1] or selecting no example. */
PetscErrorCode InflMislabelSelect(uint64_t seed, int64_t N, double fraction, uint8_t flipped[]);
/* Not collective.  Of the examples ranked by `value` (N) descending (ties by index ascending), the fraction of the
 * flipped ones (flipped (N)) found in the top `top` fraction (round(top N) examples): found / (flipped count). */
PetscErrorCode InflDetectionRate(int64_t N, const double value[], const uint8_t flipped[], double top, double *rate);

/* Rank groups: the ranks of a communicator split into groups that each work on their own tasks (models to train).
 * ngroups G is chosen to minimize ceil(T / G) / floor(P / G) -- the rounds of tasks times the time of one if a
 * task's time scales as 1 / (ranks of its group) -- for T tasks and P ranks, ties going to more groups (fewer ranks
 * per model: less communication); so every rank is busy whenever T >= P, and no group waits long when T < P.
 * group_size > 0 forces groups of that many ranks (the last group takes the rest).  Groups are contiguous blocks of
 * ranks; task t belongs to group t mod G and runs in round t / G. */
typedef struct {
  MPI_Comm comm;    /* the group's communicator (MPI_Comm_split) */
  PetscInt group;   /* this rank's group */
  PetscInt ngroups;
  PetscInt size;    /* ranks in this rank's group */
} InflGroups;
/* Collective.  Errors: T < 1, group_size < 0 or larger than the ranks. */
PetscErrorCode InflGroupsCreate(MPI_Comm comm, PetscInt T, PetscInt group_size, InflGroups *g);
PetscErrorCode InflGroupsDestroy(InflGroups *g);

/* A resumable set of T tasks run by rank groups (InflTasksRun).  run(ctx, comm, t, result) is collective on the group's
 * communicator and fills result (R) on every rank of the group.  Its error PETSC_ERR_FP (training diverged: a
 * non-finite loss) or a non-finite result marks the task as diverged: reported, recorded, and left out by callers;
 * INFL_ERR_INTERRUPTED (a signal) stops the run after the round with the progress saved; any other error stops the
 * run on every rank with the message of the lowest failing rank. */
typedef struct {
  PetscInt    T, R;
  const char *what; /* a task in messages: "subset", "model" */
  PetscErrorCode (*run)(void *ctx, MPI_Comm comm, PetscInt t, double result[]);
  void *ctx;
} InflTaskSet;
enum { INFL_TASK_TODO = 0, INFL_TASK_DONE = 1, INFL_TASK_DIVERGED = 2 };

/* Collective on comm.  Run the tasks whose status (T) is INFL_TASK_TODO, in rounds (one task per group per round,
 * InflGroups with group_size), filling results (T, R) and status.  After every round the progress is written to
 * `partial` (HDF5: attributes stage and key, /tasks/status (T) int32, /tasks/results (T, R); rank 0 of comm, via
 * PARTIAL.tmp and a rename) unless partial is NULL; a rerun restores it with InflTasksRestore.  A signal
 * (or -checkpoint_stop_after K: after K rounds) stops the run after the current round (the groups' tasks are told by
 * the signal themselves: their training checkpoints) with INFL_ERR_INTERRUPTED naming `stage` and `partial`. */
PetscErrorCode InflTasksRun(MPI_Comm comm, const char stage[], const InflTaskSet *ts, PetscInt group_size, const char partial[], const char key[], int status[], double results[]);
/* Collective.  Restore status (T) and results (T, R) from `partial` written by InflTasksRun for `key` (else an error
 * naming the file, both keys and the fix); no-op (all INFL_TASK_TODO) when the file does not exist. */
PetscErrorCode InflTasksRestore(MPI_Comm comm, const char stage[], PetscInt T, PetscInt R, const char partial[], const char key[], int status[], double results[]);

/* Ensembles: the scores of M independently trained models (seeds seed .. seed+M-1) averaged, each model's scores
 * first normalized (INFL_ENSEMBLE_QUERY: each query's row divided by its root mean square over the training examples;
 * INFL_ENSEMBLE_MODEL: the model's whole matrix divided by its root mean square; INFL_ENSEMBLE_NONE: the plain mean).
 * Averaging over models removes the part of each model's attribution that depends on its random initialization and
 * order of the data (TRAK, Park et al. 2023, section 3.2). */
typedef enum { INFL_ENSEMBLE_NONE = 0, INFL_ENSEMBLE_QUERY, INFL_ENSEMBLE_MODEL } InflEnsembleNormalize;
extern const char *const InflEnsembleNormalizeNames[];
/* Collective.  Combine the M scores files `members` (written by infl score with -score_save_all; the same training
 * data, queries and query data: an error names the file that differs) into `out` in the layout of scores.h5
 * (docs/FORMATS.md; written by the skeleton of every scores file, src/attr/scoresfile.h): /query_indices, and of the
 * first member /query_labels, the query predictions, /query_loss and /query_sequences (a language model's query
 * tokens) when it has them, /topk and /bottomk (K entries; a K above N is clamped to N with a note and recorded as topk_requested) of the ensemble's scores, with save_all its /scores (Q, N) float32, with save_members every member's
 * normalized scores /ensemble/member_scores (M, Q, N) float32.  Provenance: model_sha256 of the first member (the study's
 * model, whose self-influence goes with the scores), attributes method "ensemble", ensemble_size, ensemble_normalize,
 * ensemble_models ("path:model_sha256" of each member).  Training examples are sharded over comm's ranks; each reads its
 * block of every member (InflH5ColumnBlock). */
PetscErrorCode InflEnsembleCombine(MPI_Comm comm, PetscInt M, const char *const members[], InflEnsembleNormalize norm, PetscInt K, PetscBool save_all, PetscBool save_members, const char out[]);

#endif

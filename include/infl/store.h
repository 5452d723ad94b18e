/* infl/store.h -- the gradient store: projected per-example gradients of a training set, written once, scored
 * against many query sets (TRAK, Park et al. 2023; LoGra, Choe et al. 2024).
 *
 * InflStoreBuild projects the gradient of every training example (sequence) with an InflProjector (infl/project.h)
 * and writes STORE (docs/FORMATS.md, "Gradient store"):
 *   /gradients (N, k) float32   projected gradient of each example's summed loss with its data label (targets:
 *                               the next token), written by collective hyperslab writes, one per round of chunks
 *   /losses (N) float64         each example's summed loss;  /train_norms (N) float64  ||g|| before projection
 *   /labels (N) int64           rows data: the data labels;  /lengths (N) int64  sequence data: tokens per sequence
 *   /projection_norms (k)       norms of the rows of the projection matrix (InflProjectorGetRowNorms)
 *   /gram (k, k) float64        G^T G = sum over examples of g g^T of the stored (float32) rows, when asked
 *                               (it saves the Fisher pass of every later store-based scoring)
 *   /layers (L, 4) int64        din+1, dout, k_in, k_out of every captured layer (k_in = k_out = 0 when dense)
 *   root attributes: project_kind, project_seed, project_in, project_out, project_dim, project_key, examples, dim,
 *   content (rows|sequences), zero_rows, zero_features and the provenance (model_sha256, train_sha256, options...).
 * Resumable: the file is built as STORE.partial (datasets allocated at creation, so later writes touch raw data
 * only) with the completed examples in STORE.partial.done (replaced atomically at each checkpoint); a rerun of the
 * same command (same model, data and projection; any rank count) resumes, and a signal stops it after a checkpoint
 * with INFL_ERR_INTERRUPTED.  Non-finite projections are an error naming the example; all-zero rows (examples) and
 * all-zero columns (features, a known failure of Rademacher kernels elsewhere) are reported with their indices.
 *
 * InflStoreScorer scores queries against a store in one pass over it at GEMM speed:
 *   score(q, m) = g_q^T C^-1 g_m,  g the projected gradients (the query's computed now with the store's projection),
 *   C = I (-store_curvature identity) or the damped projected Fisher F = G^T G / N + lambda I (fisher), lambda =
 *   -store_damping, default 0.1 mean(diag(G^T G / N)) (ALGORITHMS.md section 2).  F is distributed block-cyclically
 *   (blocks of -store_block_size) over the BLACS grid of all ranks (InflBlacsGetGrid, infl/eigen.h) and factored by
 *   ScaLAPACK pdpotrf (Cholesky), the queries solved by pdpotrs: no rank holds F whole.  Its pieces come from /gram
 *   (each rank reads the rows of its columns, F being symmetric: on a one-row grid just its block) or, without /gram, from passes over the store: every rank multiplies
 *   its rows into a panel of G^T G (all k rows when k^2 doubles fit in 128 MiB, else fewer, one pass per panel) and
 *   MPI_Reduce_scatter sums each entry onto the rank that holds it.  /gram is written the same way by InflStoreBuild
 *   (panel rows partitioned over the ranks).  Not positive definite (pdpotrf info > 0): an error naming the store, k,
 *   the damping and the fix (a larger -store_damping).  Positive = proponent, as EK-FAC
 *   scores.  Outputs as infl/score.h's InflScorerSave: /query_indices, /query_labels, /topk, /bottomk, /query_norms
 *   (||C^-1 g_q||), with -score_save_all /scores (Q, N) float32 and /train_norms (N) (||g_m|| of the stored rows).
 *   Options: -store_curvature identity|fisher (fisher), -store_damping X, -score_topk K (10), -score_save_all,
 *   -score_chunk B (store rows per read; 0, the default: about 16 MiB of rows), -store_block_size NB (64),
 *   -store_panel_rows P (rows of G^T G per pass without /gram; 0, the default: all when they fit 128 MiB).
 */
#ifndef INFL_STORE_H
#define INFL_STORE_H

#include <infl/project.h>
#include <infl/topk.h>

/* Collective.  Build the store `out` (see above) of every example of `train` for `model` with the set-up projector
 * (chunks of InflProjectorGetChunk sequences, capped by -mem_limit); gram: also write /gram (the driver's option
 * -store_gram, default 1).  Error if `out` exists and !overwrite. */
PetscErrorCode InflStoreBuild(InflProjector proj, InflModel model, InflData train, PetscBool gram, const char out[], PetscBool overwrite);

typedef struct _p_InflStoreScorer *InflStoreScorer;
typedef enum { INFL_STORE_IDENTITY = 0, INFL_STORE_FISHER } InflStoreCurvature;
extern const char *const InflStoreCurvatures[];

PetscErrorCode InflStoreScorerCreate(MPI_Comm comm, InflStoreScorer *ss);
/* Collective.  Reads the options above; errors name the option and value (damping < 0, topk or chunk < 1). */
PetscErrorCode InflStoreScorerSetFromOptions(InflStoreScorer ss);
/* Collective.  Open the store `path` for `model`: the model's hash must be the store's model_sha256 (error naming
 * both and the fix); the projection is rebuilt from the store's attributes; with fisher, F is assembled and factored
 * (error naming the column and the fix -store_damping when it is not positive definite). */
PetscErrorCode InflStoreScorerOpen(InflStoreScorer ss, const char path[], InflModel model);
/* Collective.  TracIn over checkpoints (Pruthi et al. 2020, TracInCP with projected gradients): add the store of
 * another checkpoint, built on the same training data with that checkpoint's model (error naming both stores
 * otherwise); needs -store_curvature identity.  With C stores the score is sum over c of eta_c <R_c g_c(q), R_c g_c(m)>,
 * one pass over all stores (their rows side by side).  At most INFL_STORE_MAX stores. */
#define INFL_STORE_MAX 32
PetscErrorCode InflStoreScorerAddStore(InflStoreScorer ss, const char path[], InflModel model);
/* Not collective (same values on every rank).  The weights eta_c (n = the number of stores; the learning rates of the
 * checkpoints for TracIn; default 1).  Error for n other than the stores or a weight <= 0. */
PetscErrorCode InflStoreScorerSetWeights(InflStoreScorer ss, PetscInt n, const double eta[]);
/* Collective.  TracIn self-influence sum over the C stores of eta_c ||g_c(m)||^2 from their /train_norms (the exact,
 * unprojected gradient norms), written to `out`: /self_influence (N) and provenance (model_sha256 of the first store).
 * Errors: stores of different training data, a weight <= 0, `out` existing without overwrite. */
PetscErrorCode InflStoreTracInSelf(MPI_Comm comm, PetscInt C, const char *const paths[], const double eta[], const char out[], PetscBool overwrite);
/* Collective (every rank passes the same queries).  Q examples of `query` by global index qidx (Q): their projected
 * gradients with the data labels (next tokens for sequences) and C^-1 g_q. */
PetscErrorCode InflStoreScorerSetQueries(InflStoreScorer ss, InflData query, PetscInt Q, const int64_t qidx[]);
/* Not collective.  After SetQueries: gq (Q, k) the projected query gradients, pq (Q, k) C^-1 g_q (either may be NULL;
 * owned by the scorer). */
PetscErrorCode InflStoreScorerGetQueries(InflStoreScorer ss, const double **gq, const double **pq);
/* Make InflStoreScorerScore resumable, as every long stage (infl/checkpoint.h): progress is checkpointed to OUT.partial
 * (-checkpoint_interval), a signal stops it after a checkpoint (INFL_ERR_INTERRUPTED), and an existing OUT.partial
 * of the same computation (model, training data, stores and their projections, weights, curvature and damping,
 * queries, -score_topk, -score_save_all; any rank count) is resumed.  OUT is the path later given to
 * InflStoreScorerSave, which removes OUT.partial. */
PetscErrorCode InflStoreScorerSetCheckpoint(InflStoreScorer ss, const char out[]);
/* Collective.  One pass over the store (each rank its block of rows, read collectively chunk by chunk); the top-k and
 * bottom-k of every query are merged over ranks. */
PetscErrorCode InflStoreScorerScore(InflStoreScorer ss);
PetscErrorCode InflStoreScorerGetTopK(InflStoreScorer ss, InflTopK **top, InflTopK **bottom);
/* After Score with -score_save_all: this rank's block (Q, count) of the full matrix, row-major. */
PetscErrorCode InflStoreScorerGetLocalScores(InflStoreScorer ss, int64_t *start, int64_t *count, const double **scores);
/* Collective.  Write scores.h5 (PATH.partial.tmp, then renamed); the query data's hash is recorded as query_sha256. */
PetscErrorCode InflStoreScorerSave(InflStoreScorer ss, const char path[], PetscBool overwrite);
PetscErrorCode InflStoreScorerDestroy(InflStoreScorer *ss);

#endif

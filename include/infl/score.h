/* infl/score.h -- pairwise influence scores, top-k proponents and opponents, self-influence.
 *
 * Grosse et al. (2023), eq. (3) with the EK-FAC inverse: for a query z_q and a training example z_m,
 *   score(q, m) = sum over layers l of < P_l(q), DW_l(m) >,   P_l(q) = precondition_l(G_l(q))   (infl/ekfac.h)
 * where G_l(q) is the gradient of the query's loss (its data label; the measurement) and DW_l(m) = Ds a^T the
 * gradient of the training example's loss with its data label.  Positive = proponent: upweighting z_m lowers the
 * query loss.  Per-example training gradients are never formed: each layer's term is a contraction of the
 * captured inputs a (B, din+1) and pseudo-gradients Ds (B, dout) with the stacked P (Q, dout, din+1), one GEMM per
 * layer and chunk ((B x (din+1)) times ((din+1) x Q*dout), or (B x dout) times (dout x Q*(din+1)), whichever
 * intermediate is smaller), followed by a row-wise dot product.
 *
 * Options (prefix -score_): -score_topk K (10), -score_save_all (write the full (Q, N) matrix),
 * -score_per_layer (per-layer terms: full (L, Q, N) with -score_save_all, else the terms of the top-k entries),
 * -score_chunk B (training examples per chunk, 1024), -score_per_token (every token's term of the top-k and
 * bottom-k training sequences of each query, written to /per_token: docs/FORMATS.md), -score_tfidf_topk K (score
 * only each query's K training sequences of highest binary BM25 against its tokens, infl/tfidf.h; sequence
 * queries only; not with -score_save_all).
 * Training examples are captured with InflModelCaptureShard (their own labels or next tokens): rows of an MLP,
 * sequences of a GPT-2, whose token-summed gradient is contracted with P row by row.
 */
#ifndef INFL_SCORE_H
#define INFL_SCORE_H

#include <infl/ekfac.h>
#include <infl/topk.h>

typedef struct _p_InflScorer *InflScorer;

PetscErrorCode InflScorerCreate(MPI_Comm comm, InflScorer *sc);
PetscErrorCode InflScorerSetFromOptions(InflScorer sc);
PetscErrorCode InflScorerSetTopK(InflScorer sc, PetscInt K);
/* Not collective.  After SetFromOptions: what this scorer holds per rank for Q queries of `model` besides the factors
 * (infl/layout.h InflLayerLayoutStage, for the default layer groups of the factors: InflEKFACSetLoadMemory).  Per weight
 * dout (din+1) of each layer a rank holds, the preconditioned queries that stay: Q floats in single precision (plus Q
 * doubles with -score_per_layer or -score_per_token), Q doubles in double precision, none with -score_rank (its factors
 * are small).  While a layer's queries are set: the EK-FAC preconditioner's scratch (8 bytes per
 * weight, released at the end of the layer), the rank's block of them and the gathered ones (12 bytes per weight and
 * query of the block, plus for a wide layer Q floats transposed, when only floats are kept; else 8 per query of the
 * block and, for a wide layer, Q doubles transposed).  Beside the layers (`other`, the per_example terms): the scoring
 * chunk's 4 MiB margin, the queries' capture in double, and one training example of the chunk (its capture, scores
 * and scratch; with several groups or split layers the rows gathered from the group, as InflScorerScore counts them,
 * every layer counted as owned). */
PetscErrorCode InflScorerGetQueryBytes(InflScorer sc, InflModel model, PetscInt Q, InflLayerLayoutStage *st);
/* Not collective.  After SetFromOptions: the bytes of the results this scorer keeps per rank for Q queries and a
 * shard of `count` training examples whatever the chunk: with -score_save_all the (Q, count) scores in double, (L, Q,
 * count) more with -score_per_layer (L the scored layers), and the count gradient norms; 0 without (the top-k lists are
 * small).  InflScorerScore's chunk and, with the training shard, the score stage's layer layout count them. */
PetscErrorCode InflScorerGetResultBytes(InflScorer sc, PetscInt Q, PetscInt L, int64_t count, size_t *bytes);
/* Collective.  Queries: Q examples xq (Q, din) with labels yq and their global indices in the query set.  Every rank
 * passes the same queries; rank r preconditions queries r, r+size, ... and the results are all-gathered, so every
 * rank holds all P_l(q) (memory Q * sum_l dout_l (din_l+1) numbers). */
PetscErrorCode InflScorerSetQueries(InflScorer sc, InflModel model, InflEKFAC ek, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[]);
/* Collective.  Queries qidx (Q) of the data set `query` (every rank passes the same): rows of features with their
 * labels for a row model (InflScorerSetQueries), token sequences for a sequence model (InflScorerSetQuerySequences
 * with the next tokens as targets: the query's loss is the sum over its positions).  InflModelCheckData first. */
PetscErrorCode InflScorerSetQueryData(InflScorer sc, InflModel model, InflEKFAC ek, InflData query, PetscInt Q, const int64_t qidx[]);
/* Collective.  Q token sequences as queries of a sequence model: sequence q is tokens[offsets[q], offsets[q+1])
 * with targets (offsets[Q]) int32, negative where a row predicts nothing (NULL: the next tokens).  The query's loss,
 * whose gradient is preconditioned, is the summed cross-entropy of the rows with a target: for a prompt/completion
 * pair (targets -1 on the rows that predict prompt tokens) log p(completion | prompt), Grosse et al. 2023, section
 * 5.  qindex (Q) the queries' numbers (written to /query_indices).  The tokens are kept for -score_tfidf_topk and
 * written to scores.h5 (/query_sequences). */
PetscErrorCode InflScorerSetQuerySequences(InflScorer sc, InflModel model, InflEKFAC ek, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], const int64_t qindex[]);
/* Not collective (every rank passes the same values).  Queries whose preconditioned gradients P[l] (Q, dout_l,
 * din_l+1) (bias last) were computed elsewhere, e.g. by Krylov solves (infl/ihvp.h); scored like EK-FAC queries.
 * P is copied. */
PetscErrorCode InflScorerSetPreconditionedQueries(InflScorer sc, InflModel model, PetscInt Q, const double *const P[], const int64_t yq[], const int64_t qindex[]);
/* Not collective (every rank passes the same values).  After InflScorerSetPreconditionedQueries of Q sequence
 * queries: their tokens, query q = tokens[offsets[q], offsets[q+1]), and targets (offsets[Q], negative on the rows
 * outside the loss; NULL: every next token), recorded as InflScorerSetQuerySequences records them (/query_sequences
 * of scores.h5, which infl report shows).  Error: Q other than the scorer's. */
PetscErrorCode InflScorerSetQueryTokens(InflScorer sc, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[]);
/* Not collective (every rank passes the same).  TracIn through captures (Pruthi et al. 2020, TracInCP, exact: no
 * projection): score(q, m) = sum over the C checkpoints c of eta_c <g_c(q), g_c(m)>, g_c the gradient of the loss
 * under models[c] over every captured layer (the query's with its data label or its completion, the training
 * example's with its own).  It is the scorer above with the identity as preconditioner for each checkpoint: layer
 * l of checkpoint c is scored as layer c L + l with P = eta_c DW_l(q) (the query's token-summed gradient), so top-k,
 * -score_save_all, -score_per_layer (C L terms, checkpoint-major), -score_per_token and -score_rank work unchanged;
 * every training chunk is captured once per checkpoint.  Call before setting queries, which then take ek = NULL and
 * model = models[0] (whose loss and predictions of the queries are recorded).  The models must have the same
 * architecture, layers and precision; eta_c > 0 (errors name the checkpoint).  Without this call, queries set with
 * ek = NULL are scored by plain gradient dot products (C = 1, eta 1).  Not with InflScorerSetPreconditionedQueries. */
#define INFL_TRACIN_MAX 32
PetscErrorCode InflScorerSetTracIn(InflScorer sc, PetscInt C, const InflModel models[], const double eta[]);
/* Not collective.  TracIn self-influence of the examples [lo, hi) of this rank's shard of train: self (hi - lo) =
 * sum over the C checkpoints of eta_c ||g_c(m)||^2 (every captured layer, the example's own label or next tokens),
 * with caps (C) captures of capacity >= hi - lo, caps[c] of models[c]. */
PetscErrorCode InflTracInSelfInfluenceShard(PetscInt C, const InflModel models[], const double eta[], InflData train, int64_t lo, int64_t hi, InflCapture *caps[], double self[]);
/* Make InflScorerScore resumable: progress is checkpointed to OUT.partial (-checkpoint_interval), a signal
 * stops it after a checkpoint (INFL_ERR_INTERRUPTED), and an existing OUT.partial of the same computation (same
 * model, data, queries, options) is resumed.  OUT is the path later given to InflScorerSave. */
PetscErrorCode InflScorerSetCheckpoint(InflScorer sc, const char out[]);
/* Collective.  Scores every training example of this rank's shard against the queries, in chunks; merges the
 * top-k and bottom-k across ranks. */
PetscErrorCode InflScorerScore(InflScorer sc, InflData train);
/* Not collective.  out (Q, B) = the scores of a capture's B sequences (examples) against the queries: sum over layers
 * and over each sequence's rows t of Ds_t^T P_l(q) a_t (Grosse et al. 2023, eq. 3 with a token-summed gradient), the
 * kernels of InflScorerScore (a capture of the scorer's model: not with TracIn over several checkpoints).  token (Q, T) may be NULL: else each row's (token's) term summed over layers, the
 * per-token influence of Grosse et al. 2023 section 3.4 (the terms of a sequence's rows sum to its score).  The
 * capture must be in the precision the queries were set for. */
PetscErrorCode InflScorerScoreCapture(InflScorer sc, const InflCapture *cap, double out[], double token[]);
/* After setting queries (not InflScorerSetPreconditionedQueries): loss (Q), each query's loss as measured, summed
 * over the rows with a target (the same on every rank; owned by the scorer). */
PetscErrorCode InflScorerGetQueryLoss(InflScorer sc, const double **loss);
/* After InflScorerScore: the merged lists (on every rank).  topk: score descending, index ascending; bottomk: most
 * negative first. */
PetscErrorCode InflScorerGetTopK(InflScorer sc, InflTopK **top, InflTopK **bottom);
/* After InflScorerScore with -score_save_all: this rank's block (Q, count) of the full matrix, row-major. */
PetscErrorCode InflScorerGetLocalScores(InflScorer sc, int64_t *start, int64_t *count, const double **scores);
/* Not collective.  The scale of the invariance bound of docs/FORMATS.md: qnorm (Q) out, ||P_q||_F over all layers of
 * each query's preconditioned gradient as scored (its rank-r truncation with -score_rank); after InflScorerScore with
 * -score_save_all, *train_norm (count) this rank's ||g_m||_F, the Frobenius norm of each training example's loss
 * gradient over all layers (NULL without -score_save_all).  Either argument may be NULL.  By Cauchy-Schwarz
 * |score(q, m)| <= qnorm[q] train_norm[m]. */
PetscErrorCode InflScorerGetNorms(InflScorer sc, double qnorm[], const double **train_norm);
/* Collective.  Write scores.h5 (PATH.partial, then rename; also /query_loss, /query_sequences, /tfidf and
 * /per_token as docs/FORMATS.md describes):
 *   /query_indices (Q) int64, /query_labels (Q) int64, /topk/train_indices (Q, K) int64, /topk/scores (Q, K),
 *   /bottomk/train_indices, /bottomk/scores, with -score_save_all /scores float32 (Q, N) by collective
 *   hyperslabs, with -score_per_layer /topk/per_layer and /bottomk/per_layer (L, Q, K) (or /scores_per_layer
 *   (L, Q, N) float32 with -score_save_all); /query_norms (Q) and, with -score_save_all, /train_norms (N) float32
 *   (InflScorerGetNorms); provenance attributes. */
PetscErrorCode InflScorerSave(InflScorer sc, const char path[], PetscBool overwrite);
/* The sha256 of the query data (InflDataGetHash), written by InflScorerSave as the query_sha256 attribute that
 * infl report checks against its -query data (not written if never set). */
PetscErrorCode InflScorerSetQueryHash(InflScorer sc, const char hash[]);
PetscErrorCode InflScorerDestroy(InflScorer *sc);

/* Collective.  Self-influence <precondition(DW_m), DW_m> (summed over layers) of every training example of this
 * rank's shard: self (count) for global indices [start, start+count).  With several layer groups every rank takes
 * part in every round (InflSelfInfluenceGathered). */
PetscErrorCode InflSelfInfluence(InflModel model, InflEKFAC ek, InflData train, PetscInt chunk, double self[]);

/* Not collective.  Self-influence of the examples [lo, hi) of this rank's shard of train (any model type, with the
 * data's labels or next tokens: InflModelCaptureShard), self (hi - lo), using a capture of capacity >= hi - lo. */
PetscErrorCode InflSelfInfluenceShard(InflModel model, InflEKFAC ek, InflData train, int64_t lo, int64_t hi, InflCapture *cap, double self[]);
/* Collective over the communicator of ek's layout (infl/layout.h), every rank also when cap is empty (B = 0).  self
 * (cap->B) = the self-influence of the capture's sequences summed over every layer: with several layer groups the
 * capture's rows go to the owners of their layers, whose terms come back summed (InflLayerLayoutGatherCapture,
 * InflLayerLayoutReduceToSources); with one group as InflSelfInfluenceShard after its capture. */
PetscErrorCode InflSelfInfluenceGathered(InflEKFAC ek, InflCapture *cap, double self[]);
/* Not collective.  Self-influence of B examples x (B, din) with labels y, using a capture of capacity >= B. */
PetscErrorCode InflSelfInfluenceBatch(InflModel model, InflEKFAC ek, PetscInt B, const float x[], const int64_t y[], InflCapture *cap, double self[]);

#endif

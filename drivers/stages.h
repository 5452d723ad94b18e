#ifndef INFL_STAGES_H
#define INFL_STAGES_H
#include "driver.h"
/* Fit EK-FAC factors on `train`, write them to `out` (if non-empty); the object is returned if ek_out != NULL. */
PetscErrorCode StageFit(MPI_Comm comm, InflModel model, InflData train, const char out[], PetscBool overwrite, InflEKFAC *ek_out);
/* Read the factors at `path` for `model` into a new *ek (InflEKFACLoad) for scoring Q queries of `query` (NULL: prompts):
 * the scorer's options are read (and checked) first, and its queries' bytes per rank (InflScorerGetQueryBytes) and
 * this rank's shard of the query data, the training data `train` and the results kept for its shard (-score_save_all:
 * InflScorerGetResultBytes) enter the default layer groups under -mem_limit; a limit that no layout holds is refused
 * before the factors are read (infl/layout.h). */
PetscErrorCode StageLoadFactors(MPI_Comm comm, const char path[], InflModel model, InflData train, InflData query, PetscInt Q, InflEKFAC *ek);
/* Read the factors at `path` for `model` into a new *ek for self-influence on `train`: under -mem_limit the default
 * layer groups count, beside the factors, what the self-influence stage keeps whatever the chunk (the float copies of
 * the eigenbases, at most a quarter of a layer's factor bytes; (Lambda + damping)^-1 of one layer in double), the
 * model and the training data (InflEKFACGetSelfInfluenceBytes). */
PetscErrorCode StageLoadFactorsForSelf(MPI_Comm comm, const char path[], InflModel model, InflData train, InflEKFAC *ek);
/* InflMemLimitSetHeld: the bytes (InflDataGetBytes) of the data sets a study keeps beside its stages on `train`:
 * `test` (not counted when NULL, train or query) and, with with_query, `query` (not counted when NULL or train; the
 * score stage counts its queries' data itself, and StageFitForScore adds them during its fit). */
PetscErrorCode StageHoldData(InflData train, InflData test, InflData query, PetscBool with_query);
/* The fit of a study whose score stage follows (infl run, each member of infl run -ensemble): StageFit to `out`, and
 * under -mem_limit the factors loaded again from `out` by StageLoadFactors, in the layer layout of the score stage
 * (which also holds Q preconditioned queries of `query` (NULL: prompts), so fit's layout may not leave room for them).
 * Under -mem_limit a limit that no layout of the score stage holds is refused before the fit, and the query data,
 * kept for the score stage, count in the fit's estimates on top of InflMemLimitGetHeld. */
PetscErrorCode StageFitForScore(MPI_Comm comm, InflModel model, InflData train, const char out[], InflData query, PetscInt Q, InflEKFAC *ek);
/* Score Q queries against `train`: the prompts (if non-NULL), else indices qidx into `query`; write `out` (if
 * non-empty). */
PetscErrorCode StageScore(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, const char out[], PetscBool overwrite, InflScorer *sc_out);
/* Self-influence of every training example -> `out` (/self_influence (N), /train_labels (N)). */
PetscErrorCode StageSelf(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, const char out[], PetscBool overwrite);
/* TracIn (Pruthi et al. 2020) through captures over C checkpoints models (C) with learning rates eta (C): scores
 * sum_c eta_c <g_c(q), g_c(m)> (InflScorerSetTracIn), the outputs of StageScore. */
PetscErrorCode StageScoreTracIn(MPI_Comm comm, PetscInt C, const InflModel models[], const double eta[], InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, const char out[], PetscBool overwrite);
/* TracIn self-influence sum_c eta_c ||g_c(m)||^2 -> `out` (as StageSelf). */
PetscErrorCode StageSelfTracIn(MPI_Comm comm, PetscInt C, const InflModel models[], const double eta[], InflData train, const char out[], PetscBool overwrite);
#endif

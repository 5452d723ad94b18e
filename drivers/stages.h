#ifndef INFL_STAGES_H
#define INFL_STAGES_H
#include "driver.h"
/* Fit EK-FAC factors on `train`, write them to `out` (if non-empty); the object is returned if ek_out != NULL. */
PetscErrorCode StageFit(MPI_Comm comm, InflModel model, InflData train, const char out[], PetscBool overwrite, InflEKFAC *ek_out);
/* Score Q queries (indices qidx into `query`) against `train`; write `out` (if non-empty). */
PetscErrorCode StageScore(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const char out[], PetscBool overwrite, InflScorer *sc_out);
/* Self-influence of every training example -> `out` (/self_influence (N), /train_labels (N)). */
PetscErrorCode StageSelf(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, const char out[], PetscBool overwrite);
#endif

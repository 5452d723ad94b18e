/* The scores.h5 file shared by every writer of scores (src/attr and the layers above it): InflScorerSave (EK-FAC,
 * TracIn), InflStoreScorerSave (gradient stores) and InflEnsembleCombine (src/eval) write its common skeleton with
 * these two calls and add their own datasets and attributes in between.  Layout: docs/FORMATS.md, "scores.h5". */
#ifndef INFL_ATTR_SCORESFILE_H
#define INFL_ATTR_SCORESFILE_H
#include <infl/io.h>
#include <infl/topk.h>
#include <infl/checkpoint.h>

typedef struct {
  MPI_Comm       comm;
  const char    *model_hash, *train_hash, *query_hash; /* query_hash NULL or "": not recorded */
  int64_t        N;                                    /* training examples */
  PetscInt       Q, K, L;                              /* queries, entries of each list, layers (local_layer) */
  const int64_t *qindex, *qlabel;                      /* (Q); qlabel NULL: no /query_labels */
  const double  *qnorm;                                /* (Q) norm of each query's (preconditioned) gradient;
                                                          NULL for a checkpoint or an ensemble: no /query_norms */
  InflTopK      *top, *bottom;                         /* the merged lists (the same on every rank) */
  int64_t        start, count;                         /* this rank's training examples (columns) */
  double        *local, *local_norm;                   /* -score_save_all: (Q, count), (count); else NULL
                                                          (local_norm NULL with local: no /train_norms);
                                                          each optional array given on every rank or on none */
  double        *local_layer;                          /* with -score_per_layer: (L, Q, count); else NULL */
  PetscInt       K_requested;                          /* the top-k asked for when K was clamped (0: not clamped) */
  const char    *topk_note;                            /* with K_requested: why it was clamped */
} InflScoresFile;

/* Collective.  Error (every rank) if `path` exists and !overwrite; create PATH.partial.tmp and write the provenance
 * (stage "score"), the attributes train_examples, topk, sign (and topk_requested, topk_note when
 * f->K_requested), and /query_indices, /query_labels and /query_norms (each when given),
 * /topk/{train_indices,scores}, /bottomk/{...} (index -1 and score NaN past n[q]) and, with f->local, /scores (Q, N)
 * float32 and /train_norms (N) (when given) by collective column blocks (with f->local_layer /scores_per_layer (L, Q, N)).  *file
 * stays open for the caller's own datasets. */
PetscErrorCode InflScoresFileBegin(const InflScoresFile *f, const char path[], PetscBool overwrite, hid_t *file);
/* Collective.  Close *file, rename PATH.partial.tmp to `path` and remove PATH.partial (a scorer's checkpoint). */
PetscErrorCode InflScoresFileEnd(MPI_Comm comm, const char path[], hid_t *file);

/* Checkpoints of a scorer's pass (infl/checkpoint.h): OUT.partial holds the provenance (stage "score (partial)"),
 * the root attribute checkpoint_key = `key` (what identifies the computation besides the model and data hashes),
 * /checkpoint/{top,bottom}_{n,scores,index} (the lists merged over ranks so far), with f->local /checkpoint/scores,
 * /checkpoint/train_norms (and /checkpoint/scores_per_layer) and the completed ranges.
 * Save: collective; replaces OUT.partial atomically (written as OUT.partial.tmp).  f->top and f->bottom are not
 * changed (merged copies are written). */
PetscErrorCode InflScoresCheckpointSave(const InflScoresFile *f, const char out[], const char key[], const InflRanges *done);
/* Load: collective; if OUT.partial exists, check it (InflCheckpointOpen with the hashes and key; every restored value
 * checked: counts in [0, K], finite scores, training indices in [0, N)), push its lists into f->top / f->bottom (on
 * rank 0, so that a later InflTopKMerge counts them once), read this rank's columns into f->local, f->local_norm,
 * f->local_layer, and set *done (empty when there is no checkpoint). */
PetscErrorCode InflScoresCheckpointLoad(const InflScoresFile *f, const char out[], const char key[], InflRanges *done);
#endif

/* The scores.h5 file shared by every scorer (private to src/attr): InflScorerSave (EK-FAC, TracIn) and
 * InflStoreScorerSave (gradient stores) write its common skeleton with these two calls and add their own datasets and
 * attributes in between.  Layout: docs/FORMATS.md, "scores.h5". */
#ifndef INFL_ATTR_SCORESFILE_H
#define INFL_ATTR_SCORESFILE_H
#include <infl/io.h>
#include <infl/topk.h>

typedef struct {
  MPI_Comm       comm;
  const char    *model_hash, *train_hash, *query_hash; /* query_hash NULL or "": not recorded */
  int64_t        N;                                    /* training examples */
  PetscInt       Q, K;                                 /* queries, entries of each list */
  const int64_t *qindex, *qlabel;                      /* (Q) */
  const double  *qnorm;                                /* (Q) norm of each query's (preconditioned) gradient */
  InflTopK      *top, *bottom;                         /* the merged lists (the same on every rank) */
  int64_t        start, count;                         /* this rank's training examples (columns) */
  const double  *local, *local_norm;                   /* -score_save_all: (Q, count), (count); else NULL */
} InflScoresFile;

/* Collective.  Error (every rank) if `path` exists and !overwrite; create PATH.partial.tmp and write the provenance
 * (stage "score"), the attributes train_examples, topk, sign, and /query_indices, /query_labels, /query_norms,
 * /topk/{train_indices,scores}, /bottomk/{...} (index -1 and score NaN past n[q]) and, with f->local, /scores (Q, N)
 * float32 and /train_norms (N) by collective column blocks.  *file stays open for the caller's own datasets. */
PetscErrorCode InflScoresFileBegin(const InflScoresFile *f, const char path[], PetscBool overwrite, hid_t *file);
/* Collective.  Close *file, rename PATH.partial.tmp to `path` and remove PATH.partial (a scorer's checkpoint). */
PetscErrorCode InflScoresFileEnd(MPI_Comm comm, const char path[], hid_t *file);
#endif

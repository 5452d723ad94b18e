/* The common skeleton of scores.h5 (src/attr/scoresfile.h). */
#include "scoresfile.h"
#include <math.h>

PetscErrorCode InflScoresFileBegin(const InflScoresFile *f, const char path[], PetscBool overwrite, hid_t *file)
{
  char    tmp[PETSC_MAX_PATH_LEN];
  int64_t dq[1] = {f->Q}, dk[2] = {f->Q, f->K};

  PetscFunctionBegin;
  InflCheckAll(f->comm, overwrite || !InflFileExists(path), PETSC_ERR_FILE_OPEN, "%s exists; pass -overwrite to replace it or choose another -out", path);
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", path));
  PetscCall(InflH5Create(f->comm, tmp, PETSC_TRUE, file));
  PetscCall(InflH5WriteProvenance(*file, f->comm, "score", f->model_hash, f->train_hash, f->query_hash && f->query_hash[0] ? f->query_hash : NULL));
  PetscCall(InflH5SetAttrInt(*file, "/", "train_examples", f->N));
  PetscCall(InflH5SetAttrInt(*file, "/", "topk", f->K));
  if (f->K_requested) { /* clamped: fewer training examples, or fewer candidates per query, than asked for */
    PetscCall(InflH5SetAttrInt(*file, "/", "topk_requested", f->K_requested));
    PetscCall(InflH5SetAttrString(*file, "/", "topk_note", f->topk_note ? f->topk_note : "-score_topk was larger than the training set: the lists hold every training example"));
  }
  PetscCall(InflH5SetAttrString(*file, "/", "sign", "positive = proponent: upweighting the training example lowers the query loss"));
  PetscCall(InflH5WriteArray(*file, "/query_indices", H5T_NATIVE_INT64, 1, dq, f->qindex));
  if (f->qlabel) PetscCall(InflH5WriteArray(*file, "/query_labels", H5T_NATIVE_INT64, 1, dq, f->qlabel));
  if (f->qnorm) PetscCall(InflH5WriteArray(*file, "/query_norms", H5T_NATIVE_DOUBLE, 1, dq, f->qnorm));
  for (int w = 0; w < 2; w++) {
    InflTopK   *t = w == 0 ? f->top : f->bottom;
    const char *g = w == 0 ? "/topk" : "/bottomk";
    char        name[64];
    int64_t    *idx;
    double     *s;
    /* entries beyond n[q] (fewer training examples than K) are written as index -1, score NaN */
    PetscCall(PetscMalloc2((size_t)f->Q * f->K, &idx, (size_t)f->Q * f->K, &s));
    for (PetscInt q = 0; q < f->Q; q++)
      for (PetscInt k = 0; k < f->K; k++) {
        int64_t i = (int64_t)q * f->K + k;
        idx[i]    = k < t->n[q] ? t->index[i] : -1;
        s[i]      = k < t->n[q] ? t->score[i] : NAN;
      }
    PetscCall(PetscSNPrintf(name, sizeof(name), "%s/train_indices", g));
    PetscCall(InflH5WriteArray(*file, name, H5T_NATIVE_INT64, 2, dk, idx));
    PetscCall(PetscSNPrintf(name, sizeof(name), "%s/scores", g));
    PetscCall(InflH5WriteArray(*file, name, H5T_NATIVE_DOUBLE, 2, dk, s));
    PetscCall(PetscFree2(idx, s));
  }
  if (f->local) {
    int64_t dims[2] = {f->Q, f->N};
    PetscCall(InflH5ColumnBlock(*file, "/scores", 2, dims, f->start, f->count, f->local, PETSC_TRUE));
    if (f->local_norm) PetscCall(InflH5ColumnBlock(*file, "/train_norms", 1, &f->N, f->start, f->count, f->local_norm, PETSC_TRUE));
    if (f->local_layer) {
      int64_t dims3[3] = {f->L, f->Q, f->N};
      PetscCall(InflH5ColumnBlock(*file, "/scores_per_layer", 3, dims3, f->start, f->count, f->local_layer, PETSC_TRUE));
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflScoresFileEnd(MPI_Comm comm, const char path[], hid_t *file)
{
  char tmp[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCall(InflH5Close(file));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", path));
  PetscCall(InflRenameAll(comm, tmp, path));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial", path));
  PetscCall(InflRemoveAll(comm, tmp));
  PetscFunctionReturn(0);
}

static PetscErrorCode topk_copy(const InflTopK *t, InflTopK **c)
{
  PetscFunctionBegin;
  PetscCall(InflTopKCreate(t->Q, t->K, t->largest, c));
  PetscCall(PetscArraycpy((*c)->n, t->n, t->Q));
  PetscCall(PetscArraycpy((*c)->score, t->score, (size_t)t->Q * t->K));
  PetscCall(PetscArraycpy((*c)->index, t->index, (size_t)t->Q * t->K));
  (*c)->sorted = t->sorted;
  PetscFunctionReturn(0);
}

/* The save_all columns of a checkpoint: written (write) or read and checked. */
static PetscErrorCode checkpoint_columns(const InflScoresFile *f, hid_t file, const char partial[], PetscBool write)
{
  int64_t dims[2] = {f->Q, f->N}, dims3[3] = {f->L, f->Q, f->N};

  PetscFunctionBegin;
  if (!f->local) PetscFunctionReturn(0);
  PetscCall(InflH5ColumnBlock(file, "/checkpoint/scores", 2, dims, f->start, f->count, f->local, write));
  PetscCall(InflH5ColumnBlock(file, "/checkpoint/train_norms", 1, &f->N, f->start, f->count, f->local_norm, write));
  if (f->local_layer) PetscCall(InflH5ColumnBlock(file, "/checkpoint/scores_per_layer", 3, dims3, f->start, f->count, f->local_layer, write));
  if (write) PetscFunctionReturn(0);
  /* this rank's columns: (Q, count), (count), (L, Q, count) */
  PetscCall(InflCheckpointCheckFinite(f->comm, partial, "/checkpoint/scores", f->Q, f->start, f->count, f->local));
  PetscCall(InflCheckpointCheckFinite(f->comm, partial, "/checkpoint/train_norms", 1, f->start, f->count, f->local_norm));
  if (f->local_layer) PetscCall(InflCheckpointCheckFinite(f->comm, partial, "/checkpoint/scores_per_layer", (int64_t)f->L * f->Q, f->start, f->count, f->local_layer));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScoresCheckpointSave(const InflScoresFile *f, const char out[], const char key[], const InflRanges *done)
{
  char      tmp[PETSC_MAX_PATH_LEN], partial[PETSC_MAX_PATH_LEN];
  hid_t     file;
  InflTopK *t[2];
  int64_t   dq[1] = {f->Q}, dk[2] = {f->Q, f->K};

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", out));
  PetscCall(topk_copy(f->top, &t[0]));
  PetscCall(topk_copy(f->bottom, &t[1]));
  PetscCall(InflTopKMerge(f->comm, t[0]));
  PetscCall(InflTopKMerge(f->comm, t[1]));
  PetscCall(InflH5Create(f->comm, tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, f->comm, "score (partial)", f->model_hash, f->train_hash, NULL));
  PetscCall(InflH5SetAttrString(file, "/", "checkpoint_key", key));
  for (int w = 0; w < 2; w++) {
    char     name[64];
    int64_t *n64;
    PetscCall(PetscMalloc1(f->Q, &n64));
    for (PetscInt q = 0; q < f->Q; q++) n64[q] = t[w]->n[q];
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%s_n", w ? "bottom" : "top"));
    PetscCall(InflH5WriteArray(file, name, H5T_NATIVE_INT64, 1, dq, n64));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%s_scores", w ? "bottom" : "top"));
    PetscCall(InflH5WriteArray(file, name, H5T_NATIVE_DOUBLE, 2, dk, t[w]->score));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%s_index", w ? "bottom" : "top"));
    PetscCall(InflH5WriteArray(file, name, H5T_NATIVE_INT64, 2, dk, t[w]->index));
    PetscCall(PetscFree(n64));
    PetscCall(InflTopKDestroy(&t[w]));
  }
  PetscCall(checkpoint_columns(f, file, partial, PETSC_TRUE));
  PetscCall(InflRangesWrite(file, done));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(f->comm, tmp, partial));
  PetscFunctionReturn(0);
}

/* Collective: the restored lists /checkpoint/WHICH_{n,scores,index} (Q), (Q, K), (Q, K) of a checkpoint (the same on
 * every rank): counts in [0, K], and for the entries in use finite scores and training indices in [0, N).  The unused
 * entries are zeroed. */
static PetscErrorCode restored_lists_check(const InflScoresFile *f, const char partial[], const char which[], const int64_t n[], double score[], const int64_t index[])
{
  char    what[96];
  int64_t bad = -1;

  PetscFunctionBegin;
  for (PetscInt q = 0; q < f->Q && bad < 0; q++)
    if (n[q] < 0 || n[q] > f->K) bad = q;
  PetscCall(PetscSNPrintf(what, sizeof(what), "entry %" PRId64 " of dataset /checkpoint/%s_n", bad, which));
  PetscCall(InflCheckpointCheckRange(f->comm, partial, what, bad < 0 ? 0 : n[bad], 0, f->K));
  for (PetscInt q = 0; q < f->Q; q++)
    for (int64_t k = n[q]; k < f->K; k++) score[(int64_t)q * f->K + k] = 0;
  PetscCall(PetscSNPrintf(what, sizeof(what), "/checkpoint/%s_scores", which));
  PetscCall(InflCheckpointCheckFinite(f->comm, partial, what, f->Q, 0, f->K, score));
  for (PetscInt q = 0; q < f->Q && bad < 0; q++)
    for (int64_t k = 0; k < n[q] && bad < 0; k++)
      if (index[(int64_t)q * f->K + k] < 0 || index[(int64_t)q * f->K + k] >= f->N) bad = (int64_t)q * f->K + k;
  PetscCall(PetscSNPrintf(what, sizeof(what), "flat index %" PRId64 " of dataset /checkpoint/%s_index (a training index)", bad, which));
  PetscCall(InflCheckpointCheckRange(f->comm, partial, what, bad < 0 ? 0 : index[bad], 0, f->N - 1));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScoresCheckpointLoad(const InflScoresFile *f, const char out[], const char key[], InflRanges *done)
{
  char        partial[PETSC_MAX_PATH_LEN];
  hid_t       file;
  PetscMPIInt rank;
  int64_t     dq[1] = {f->Q}, dk[2] = {f->Q, f->K};

  PetscFunctionBegin;
  PetscCall(InflRangesReset(done));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
  if (!InflFileExists(partial)) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_rank(f->comm, &rank));
  PetscCall(InflCheckpointOpen(f->comm, partial, "score (partial)", f->model_hash, f->train_hash, key, &file));
  PetscCall(InflRangesRead(file, done));
  for (int w = 0; w < 2; w++) {
    char      name[64];
    int64_t  *n64, *idx;
    double   *sco;
    InflTopK *t = w ? f->bottom : f->top;
    PetscCall(PetscMalloc3(f->Q, &n64, (size_t)f->Q * f->K, &idx, (size_t)f->Q * f->K, &sco));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%s_n", w ? "bottom" : "top"));
    PetscCall(InflH5ReadArray(file, name, H5T_NATIVE_INT64, 1, dq, NULL, n64));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%s_scores", w ? "bottom" : "top"));
    PetscCall(InflH5ReadArray(file, name, H5T_NATIVE_DOUBLE, 2, dk, NULL, sco));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%s_index", w ? "bottom" : "top"));
    PetscCall(InflH5ReadArray(file, name, H5T_NATIVE_INT64, 2, dk, NULL, idx));
    PetscCall(restored_lists_check(f, partial, w ? "bottom" : "top", n64, sco, idx));
    if (rank == 0)
      for (PetscInt q = 0; q < f->Q; q++) PetscCall(InflTopKPushQuery(t, q, (PetscInt)n64[q], sco + (size_t)q * f->K, idx + (size_t)q * f->K));
    PetscCall(PetscFree3(n64, idx, sco));
  }
  PetscCall(checkpoint_columns(f, file, partial, PETSC_FALSE));
  PetscCall(InflH5Close(&file));
  PetscCall(PetscPrintf(f->comm, "score: resuming from %s (%" PRId64 " of %" PRId64 " training examples done)\n", partial, InflRangesCount(done), f->N));
  PetscFunctionReturn(0);
}

/* The common skeleton of scores.h5 (src/attr/scoresfile.h). */
#include "scoresfile.h"
#include <infl/checkpoint.h>
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
  PetscCall(InflH5SetAttrString(*file, "/", "sign", "positive = proponent: upweighting the training example lowers the query loss"));
  PetscCall(InflH5WriteArray(*file, "/query_indices", H5T_NATIVE_INT64, 1, dq, f->qindex));
  PetscCall(InflH5WriteArray(*file, "/query_labels", H5T_NATIVE_INT64, 1, dq, f->qlabel));
  PetscCall(InflH5WriteArray(*file, "/query_norms", H5T_NATIVE_DOUBLE, 1, dq, f->qnorm));
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
    PetscCall(InflH5ColumnBlock(*file, "/scores", 2, dims, f->start, f->count, (double *)f->local, PETSC_TRUE));
    PetscCall(InflH5ColumnBlock(*file, "/train_norms", 1, &f->N, f->start, f->count, (double *)f->local_norm, PETSC_TRUE));
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

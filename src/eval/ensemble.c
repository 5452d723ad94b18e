/* The scores of an ensemble of models: per-model normalization, mean, top-k, scores.h5. */
#include <infl/eval.h>
#include "attr/scoresfile.h"
#include <math.h>
#include <string.h>

const char *const InflEnsembleNormalizeNames[] = {"none", "query", "model"};

typedef struct {
  PetscInt Q;
  int64_t  N, *qidx;
  char     mhash[80], thash[80], qhash[80];
} MemberInfo;

static PetscErrorCode member_info(MPI_Comm comm, hid_t file, const char path[], MemberInfo *m)
{
  int     nd;
  int64_t dims[8];

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(file, "/scores", &nd, dims));
  PetscCheck(nd == 2, comm, PETSC_ERR_ARG_WRONG, "ensemble member %s holds no full score matrix /scores (Q, N): compute it with -score_save_all", path);
  m->Q = (PetscInt)dims[0];
  m->N = dims[1];
  PetscCall(PetscMalloc1(m->Q, &m->qidx));
  PetscCall(InflH5ReadArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dims, NULL, m->qidx));
  PetscCall(InflH5GetAttrString(file, "/", "model_sha256", m->mhash, sizeof(m->mhash)));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", m->thash, sizeof(m->thash)));
  PetscCall(InflH5GetAttrString(file, "/", "query_sha256", m->qhash, sizeof(m->qhash)));
  PetscFunctionReturn(0);
}

/* Copy the one-dimensional dataset `name` of member 0 (entries of at most 8 bytes, read as `type`) to out if it exists. */
static PetscErrorCode copy_query_array(hid_t from, hid_t to, const char name[], hid_t type)
{
  int     nd;
  int64_t dims[8];
  double *buf;

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(from, name, &nd, dims));
  if (nd != 1) PetscFunctionReturn(0);
  PetscCall(PetscMalloc1(dims[0] + 1, &buf)); /* 8 bytes per entry: int64, int32 or double */
  PetscCall(InflH5ReadArray(from, name, type, 1, dims, NULL, buf));
  PetscCall(InflH5WriteArray(to, name, type, 1, dims, buf));
  PetscCall(PetscFree(buf));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEnsembleCombine(MPI_Comm comm, PetscInt M, const char *const members[], InflEnsembleNormalize norm, PetscInt K, PetscBool save_all, PetscBool save_members, const char out[])
{
  MemberInfo  m0 = {0};
  hid_t       first, file;
  PetscMPIInt size, rank;
  int64_t     start, count, N;
  PetscInt    Q;
  double     *acc, *buf, *all = NULL, *ss;
  InflTopK   *top, *bottom;
  char       *list;
  int64_t    *qlabel = NULL;
  size_t      llen = 0;
  PetscInt    K_requested = 0;

  PetscFunctionBegin;
  PetscCheck(M >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "an ensemble needs at least one member (got %d)", (int)M);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(InflH5Open(comm, members[0], PETSC_FALSE, &first));
  PetscCall(member_info(comm, first, members[0], &m0));
  Q = m0.Q;
  N = m0.N;
  { /* member 0's /query_labels, when it has them (prompt queries of a language model have none) */
    int     nd;
    int64_t dims[8];
    PetscCall(InflH5GetDims(first, "/query_labels", &nd, dims));
    if (nd == 1 && dims[0] == Q) {
      PetscCall(PetscMalloc1(Q, &qlabel));
      PetscCall(InflH5ReadArray(first, "/query_labels", H5T_NATIVE_INT64, 1, dims, NULL, qlabel));
    }
  }
  InflPartition(N, size, rank, &start, &count);
  for (PetscInt i = 0; i < M; i++) llen += strlen(members[i]) + 80;
  PetscCall(PetscCalloc1(llen + 1, &list));
  PetscCall(PetscCalloc2((size_t)Q * count + 1, &acc, (size_t)Q * count + 1, &buf));
  PetscCall(PetscMalloc1(Q + 1, &ss));
  if (save_members) PetscCall(PetscMalloc1((size_t)M * Q * count + 1, &all));
  for (PetscInt i = 0; i < M; i++) {
    MemberInfo mi = {0};
    hid_t      f;
    int64_t    dims[2] = {Q, N};
    PetscCall(InflH5Open(comm, members[i], PETSC_FALSE, &f));
    PetscCall(member_info(comm, f, members[i], &mi));
    PetscCheck(mi.Q == Q && mi.N == N, comm, PETSC_ERR_ARG_INCOMP, "ensemble member %s scores %d queries against %" PRId64 " training examples, but %s %d against %" PRId64 ": members must score the same queries and training data", members[i], (int)mi.Q, mi.N, members[0], (int)Q, N);
    PetscCheck(!strcmp(mi.thash, m0.thash) && !strcmp(mi.qhash, m0.qhash), comm, PETSC_ERR_ARG_INCOMP, "ensemble member %s was computed on other %s data than %s: members must score the same queries and training data", members[i], strcmp(mi.thash, m0.thash) ? "training" : "query", members[0]);
    for (PetscInt q = 0; q < Q; q++) PetscCheck(mi.qidx[q] == m0.qidx[q], comm, PETSC_ERR_ARG_INCOMP, "ensemble member %s: query %d is example %" PRId64 ", in %s %" PRId64 ": members must score the same queries", members[i], (int)q, mi.qidx[q], members[0], m0.qidx[q]);
    PetscCall(InflH5ColumnBlock(f, "/scores", 2, dims, start, count, buf, PETSC_FALSE));
    PetscCall(InflH5Close(&f));
    /* the normalization: sums of squares over all training examples */
    for (PetscInt q = 0; q < Q; q++) {
      double s = 0;
      for (int64_t k = 0; k < count; k++) s += buf[(size_t)q * count + k] * buf[(size_t)q * count + k];
      ss[q] = s;
    }
    PetscCall(InflAllreduceSum(ss, Q, MPI_DOUBLE, comm));
    if (norm == INFL_ENSEMBLE_MODEL) {
      double t = 0;
      for (PetscInt q = 0; q < Q; q++) t += ss[q];
      for (PetscInt q = 0; q < Q; q++) ss[q] = t / ((double)N * Q);
    } else
      for (PetscInt q = 0; q < Q; q++) ss[q] /= (double)N;
    for (PetscInt q = 0; q < Q; q++) {
      const double scale = norm == INFL_ENSEMBLE_NONE || ss[q] == 0 ? 1.0 : 1.0 / sqrt(ss[q]);
      for (int64_t k = 0; k < count; k++) {
        const double v = scale * buf[(size_t)q * count + k];
        acc[(size_t)q * count + k] += v / (double)M;
        if (all) all[((size_t)i * Q + q) * count + k] = v;
      }
    }
    PetscCall(PetscSNPrintf(list + strlen(list), llen + 1 - strlen(list), "%s%s:%s", i ? "," : "", members[i], mi.mhash));
    PetscCall(PetscFree(mi.qidx));
  }
  PetscCall(InflTopKClampToTrain(comm, &K, N, &K_requested)); /* as a single model's scores */
  PetscCall(InflTopKCreate(Q, K, PETSC_TRUE, &top));
  PetscCall(InflTopKCreate(Q, K, PETSC_FALSE, &bottom));
  PetscCall(InflTopKPush(top, (PetscInt)count, acc, NULL, start));
  PetscCall(InflTopKPush(bottom, (PetscInt)count, acc, NULL, start));
  PetscCall(InflTopKMerge(comm, top));
  PetscCall(InflTopKMerge(comm, bottom));
  { /* the skeleton of scores.h5 (src/attr/scoresfile.h): no query or training gradient norms of an ensemble */
    InflScoresFile sf = {comm, m0.mhash, m0.thash, m0.qhash, N, Q, K, 0, m0.qidx, qlabel, NULL, top, bottom, start, count, save_all ? acc : NULL, NULL, NULL, K_requested, NULL};
    PetscCall(InflScoresFileBegin(&sf, out, PETSC_TRUE, &file));
  }
  PetscCall(InflH5SetAttrString(file, "/", "method", "ensemble"));
  PetscCall(InflH5SetAttrInt(file, "/", "ensemble_size", M));
  PetscCall(InflH5SetAttrString(file, "/", "ensemble_normalize", InflEnsembleNormalizeNames[norm]));
  PetscCall(InflH5SetAttrString(file, "/", "ensemble_models", list));
  { /* what the first member records of the queries: predictions, losses, a language model's query tokens */
    const char *names[] = {"/query_predictions", "/query_prediction_probability", "/query_loss", "/query_sequences/offsets", "/query_sequences/tokens", "/query_sequences/loss_start"};
    const hid_t types[] = {H5T_NATIVE_INT64, H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, H5T_NATIVE_INT64, H5T_NATIVE_INT32, H5T_NATIVE_INT64};
    for (int k = 0; k < 6; k++) PetscCall(copy_query_array(first, file, names[k], types[k]));
  }
  PetscCall(InflH5Close(&first));
  if (all) {
    const int64_t dims[3] = {M, Q, N};
    PetscCall(InflH5ColumnBlock(file, "/ensemble/member_scores", 3, dims, start, count, all, PETSC_TRUE));
  }
  PetscCall(InflScoresFileEnd(comm, out, &file));
  PetscCall(InflTopKDestroy(&top));
  PetscCall(InflTopKDestroy(&bottom));
  PetscCall(PetscFree(list));
  PetscCall(PetscFree2(acc, buf));
  PetscCall(PetscFree(ss));
  PetscCall(PetscFree(all));
  PetscCall(PetscFree(m0.qidx));
  PetscCall(PetscFree(qlabel));
  PetscFunctionReturn(0);
}

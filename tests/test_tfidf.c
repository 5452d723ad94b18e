/* TF-IDF candidate filtering against the independent numpy BM25 reference of tests/ref/make_tfidf_reference.py: IDF
 * of every token, each query's top K documents (indices exact, ties by index, scores), at any rank count with the
 * documents sharded over the ranks and added in two calls; K beyond the documents; bad tokens. */
static const char help[] = "TF-IDF candidate filtering against a numpy reference.\n";

#include <infl/tfidf.h>
#include <infl/io.h>
#include <math.h>
#include "io/check.h"

static PetscErrorCode read_ref(MPI_Comm comm, hid_t f, const char name[], hid_t type, int64_t *n, void **buf, size_t es)
{
  int     nd;
  int64_t dims[8], total = 1;

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(f, name, &nd, dims));
  EXPECT(nd >= 0, "fixture has no %s", name);
  for (int i = 0; i < nd; i++) total *= dims[i];
  PetscCall(PetscMalloc(es * (size_t)PetscMax(total, 1), buf));
  PetscCall(InflH5ReadArray(f, name, type, nd, NULL, dims, *buf));
  *n = total;
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm      comm;
  char          path[PETSC_MAX_PATH_LEN];
  const char   *src;
  hid_t         f;
  int64_t       nV, nd, no, nq, nqo, ni, ns, nsc, nti, nts, *V, *doff, *qoff, *ti, C, Q, K, start, count, ndocs;
  int32_t      *dtok, *qtok;
  double       *idf_ref, *scores_ref, *ts;
  const double *idf;
  InflTFIDF     tf;
  InflTopK     *top;
  PetscMPIInt   rank, size;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  src = getenv("INFL_SOURCE_DIR");
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/ref/tfidf_ref.h5", src ? src : "."));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &f));
  PetscCall(read_ref(comm, f, "/vocab_size", H5T_NATIVE_INT64, &nV, (void **)&V, sizeof(int64_t)));
  PetscCall(read_ref(comm, f, "/doc_tokens", H5T_NATIVE_INT32, &nd, (void **)&dtok, sizeof(int32_t)));
  PetscCall(read_ref(comm, f, "/doc_offsets", H5T_NATIVE_INT64, &no, (void **)&doff, sizeof(int64_t)));
  PetscCall(read_ref(comm, f, "/query_tokens", H5T_NATIVE_INT32, &nq, (void **)&qtok, sizeof(int32_t)));
  PetscCall(read_ref(comm, f, "/query_offsets", H5T_NATIVE_INT64, &nqo, (void **)&qoff, sizeof(int64_t)));
  PetscCall(read_ref(comm, f, "/idf", H5T_NATIVE_DOUBLE, &ni, (void **)&idf_ref, sizeof(double)));
  PetscCall(read_ref(comm, f, "/scores", H5T_NATIVE_DOUBLE, &nsc, (void **)&scores_ref, sizeof(double)));
  PetscCall(read_ref(comm, f, "/topk_indices", H5T_NATIVE_INT64, &nti, (void **)&ti, sizeof(int64_t)));
  PetscCall(read_ref(comm, f, "/topk_scores", H5T_NATIVE_DOUBLE, &nts, (void **)&ts, sizeof(double)));
  PetscCall(InflH5Close(&f));
  C = no - 1;
  Q = nqo - 1;
  K = nti / Q;
  (void)ns;

  /* this rank's shard of the documents, added in two calls */
  InflPartition(C, size, rank, &start, &count);
  PetscCall(InflTFIDFCreate(comm, (PetscInt)V[0], &tf));
  for (int part = 0; part < 2; part++) {
    int64_t  d0 = start + (part ? count / 2 : 0), n = part ? count - count / 2 : count / 2;
    int64_t *off;
    PetscCall(PetscMalloc1(n + 1, &off));
    for (int64_t d = 0; d <= n; d++) off[d] = doff[d0 + d] - doff[d0];
    PetscCall(InflTFIDFAddDocuments(tf, d0, n, dtok + doff[d0], off));
    PetscCall(PetscFree(off));
  }
  PetscCall(InflTFIDFSetUp(tf));
  PetscCall(InflTFIDFGetIDF(tf, &idf, &ndocs));
  EXPECT(ndocs == C, "%" PRId64 " documents, reference %" PRId64, ndocs, C);
  for (int64_t t = 0; t < ni; t++) EXPECT(fabs(idf[t] - idf_ref[t]) <= 1e-14 * fabs(idf_ref[t]), "IDF of token %d is %.17g, reference %.17g", (int)t, idf[t], idf_ref[t]);
  PetscCall(InflTFIDFTopK(tf, (PetscInt)Q, qtok, qoff, (PetscInt)K, &top));
  for (int64_t q = 0; q < Q; q++) {
    EXPECT(top->n[q] == K, "query %d keeps %d candidates, expected %d", (int)q, (int)top->n[q], (int)K);
    for (int64_t k = 0; k < K; k++) {
      EXPECT(top->index[q * K + k] == ti[q * K + k], "query %d candidate %d: document %" PRId64 ", reference %" PRId64, (int)q, (int)k, top->index[q * K + k], ti[q * K + k]);
      EXPECT(fabs(top->score[q * K + k] - ts[q * K + k]) <= 1e-13 * PetscMax(1, fabs(ts[q * K + k])), "query %d candidate %d: score %.17g, reference %.17g", (int)q, (int)k, top->score[q * K + k], ts[q * K + k]);
    }
  }
  PetscCall(InflTopKDestroy(&top));
  /* K beyond the documents keeps them all, in the reference's full order */
  PetscCall(InflTFIDFTopK(tf, (PetscInt)Q, qtok, qoff, (PetscInt)(C + 50), &top));
  EXPECT(top->K == C, "K = C + 50 kept %d per query, expected %d", (int)top->K, (int)C);
  for (int64_t q = 0; q < Q; q++)
    for (int64_t k = 0; k < C; k++) EXPECT(fabs(top->score[q * C + k] - scores_ref[q * C + top->index[q * C + k]]) <= 1e-13 * PetscMax(1, fabs(scores_ref[q * C + top->index[q * C + k]])), "query %d, document %" PRId64 ": score %.17g, reference %.17g", (int)q, top->index[q * C + k], top->score[q * C + k], scores_ref[q * C + top->index[q * C + k]]);
  PetscCall(InflTopKDestroy(&top));
  { /* a query token outside the vocabulary */
    const int32_t bad[2]  = {3, (int32_t)V[0]};
    const int64_t boff[2] = {0, 2};
    EXPECT_FAIL(comm, InflTFIDFTopK(tf, 1, bad, boff, 3, &top), "outside the vocabulary", "query token = vocab_size");
  }
  PetscCall(InflTFIDFDestroy(&tf));
  PetscCall(PetscPrintf(comm, "test_tfidf: IDF of %d tokens, top %d of %d documents for %d queries equal to the numpy reference; all checks passed\n", (int)ni, (int)K, (int)C, (int)Q));
  PetscCall(PetscFree(V));
  PetscCall(PetscFree(dtok));
  PetscCall(PetscFree(doff));
  PetscCall(PetscFree(qtok));
  PetscCall(PetscFree(qoff));
  PetscCall(PetscFree(idf_ref));
  PetscCall(PetscFree(scores_ref));
  PetscCall(PetscFree(ti));
  PetscCall(PetscFree(ts));
  PetscCall(PetscFinalize());
  return 0;
}

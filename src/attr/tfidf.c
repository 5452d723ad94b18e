/* TF-IDF candidate filtering (infl/tfidf.h). */
#include <infl/tfidf.h>
#include <math.h>
#include <stdlib.h>

struct _p_InflTFIDF {
  MPI_Comm  comm;
  PetscInt  V;
  int64_t  *df;      /* (V) documents containing each token: this rank's until SetUp, then all */
  int64_t   ndocs;   /* this rank's until SetUp, then all */
  double   *idf;     /* (V) after SetUp */
  int64_t   n;       /* this rank's documents */
  int64_t  *index;   /* (n) their global indices */
  int64_t  *doff;    /* (n+1) offsets into dtok */
  int32_t  *dtok;    /* distinct tokens of each document, ascending */
  int64_t   cap_n, cap_t;
};

PetscErrorCode InflTFIDFCreate(MPI_Comm comm, PetscInt vocab_size, InflTFIDF *tf)
{
  InflTFIDF t;

  PetscFunctionBegin;
  PetscCheck(vocab_size > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "TF-IDF: vocabulary size %d must be positive", (int)vocab_size);
  PetscCall(PetscNew(&t));
  t->comm = comm;
  t->V    = vocab_size;
  PetscCall(PetscCalloc1(vocab_size, &t->df));
  PetscCall(PetscMalloc1(1, &t->doff));
  t->doff[0] = 0;
  *tf        = t;
  PetscFunctionReturn(0);
}

static int cmp_i32(const void *a, const void *b)
{
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

PetscErrorCode InflTFIDFAddDocuments(InflTFIDF tf, int64_t index0, int64_t n, const int32_t tokens[], const int64_t offsets[])
{
  int64_t need_n = tf->n + n, need_t = tf->doff[tf->n] + offsets[n];

  PetscFunctionBegin;
  PetscCheck(!tf->idf, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "TF-IDF: documents added after InflTFIDFSetUp");
  for (int64_t d = 0; d < n; d++)
    for (int64_t i = offsets[d]; i < offsets[d + 1]; i++)
      PetscCheck(tokens[i] >= 0 && tokens[i] < tf->V, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "TF-IDF: token %d at position %" PRId64 " of document %" PRId64 " is outside the vocabulary [0, %d)", (int)tokens[i], i - offsets[d], index0 + d, (int)tf->V);
  if (need_n > tf->cap_n) {
    int64_t *ix, *of;
    int64_t  c = PetscMax(need_n, 2 * tf->cap_n);
    PetscCall(PetscMalloc2(c, &ix, c + 1, &of));
    PetscCall(PetscArraycpy(ix, tf->index, tf->n));
    PetscCall(PetscArraycpy(of, tf->doff, tf->n + 1));
    if (tf->cap_n) PetscCall(PetscFree2(tf->index, tf->doff));
    else PetscCall(PetscFree(tf->doff));
    tf->index = ix;
    tf->doff  = of;
    tf->cap_n = c;
  }
  if (need_t > tf->cap_t) {
    int64_t c = PetscMax(need_t, 2 * tf->cap_t);
    PetscCall(PetscRealloc(sizeof(int32_t) * (size_t)c, &tf->dtok));
    tf->cap_t = c;
  }
  for (int64_t d = 0; d < n; d++) { /* the document's distinct tokens, ascending */
    int64_t  o = tf->doff[tf->n], m = offsets[d + 1] - offsets[d], u = 0;
    int32_t *dst = tf->dtok + o;
    PetscCall(PetscArraycpy(dst, tokens + offsets[d], m));
    qsort(dst, (size_t)m, sizeof(int32_t), cmp_i32);
    for (int64_t i = 0; i < m; i++)
      if (i == 0 || dst[i] != dst[i - 1]) dst[u++] = dst[i];
    for (int64_t i = 0; i < u; i++) tf->df[dst[i]]++;
    tf->index[tf->n]    = index0 + d;
    tf->doff[tf->n + 1] = o + u;
    tf->n++;
  }
  tf->ndocs += n;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTFIDFSetUp(InflTFIDF tf)
{
  PetscFunctionBegin;
  PetscCheck(!tf->idf, tf->comm, PETSC_ERR_ARG_WRONGSTATE, "TF-IDF: InflTFIDFSetUp called twice");
  PetscCall(InflAllreduceSum(tf->df, tf->V, MPI_INT64_T, tf->comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &tf->ndocs, 1, MPI_INT64_T, MPI_SUM, tf->comm));
  PetscCall(PetscMalloc1(tf->V, &tf->idf));
  for (PetscInt t = 0; t < tf->V; t++) tf->idf[t] = log(((double)tf->ndocs - (double)tf->df[t] + 0.5) / ((double)tf->df[t] + 0.5) + 1.0);
  PetscFunctionReturn(0);
}

PetscErrorCode InflTFIDFGetIDF(InflTFIDF tf, const double **idf, int64_t *ndocs)
{
  PetscFunctionBegin;
  PetscCheck(tf->idf, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "TF-IDF: call InflTFIDFSetUp first");
  if (idf) *idf = tf->idf;
  if (ndocs) *ndocs = tf->ndocs;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTFIDFTopK(InflTFIDF tf, PetscInt Q, const int32_t qtok[], const int64_t qoff[], PetscInt K, InflTopK **top)
{
  const int64_t blk = 256; /* documents scored per push */
  double       *w, *s;
  InflTopK     *t;

  PetscFunctionBegin;
  PetscCheck(tf->idf, tf->comm, PETSC_ERR_ARG_WRONGSTATE, "TF-IDF: call InflTFIDFSetUp first");
  PetscCheck(K > 0, tf->comm, PETSC_ERR_ARG_OUTOFRANGE, "TF-IDF: K = %d candidates per query must be positive", (int)K);
  K = (PetscInt)PetscMin((int64_t)K, PetscMax(tf->ndocs, 1));
  for (PetscInt q = 0; q < Q; q++)
    for (int64_t i = qoff[q]; i < qoff[q + 1]; i++) PetscCheck(qtok[i] >= 0 && qtok[i] < tf->V, tf->comm, PETSC_ERR_ARG_OUTOFRANGE, "TF-IDF: token %d at position %" PRId64 " of query %d is outside the vocabulary [0, %d)", (int)qtok[i], i - qoff[q], (int)q, (int)tf->V);
  PetscCall(InflTopKCreate(Q, K, PETSC_TRUE, &t));
  PetscCall(PetscMalloc2((size_t)Q * tf->V, &w, (size_t)Q * blk, &s));
  /* w[q, t] = IDF(t) for the distinct tokens of query q, else 0: a document's score is the sum of w over its
   * distinct tokens */
  PetscCall(PetscArrayzero(w, (size_t)Q * tf->V));
  for (PetscInt q = 0; q < Q; q++)
    for (int64_t i = qoff[q]; i < qoff[q + 1]; i++) w[(int64_t)q * tf->V + qtok[i]] = tf->idf[qtok[i]];
  for (int64_t d0 = 0; d0 < tf->n; d0 += blk) {
    int64_t nb = PetscMin(blk, tf->n - d0);
    for (PetscInt q = 0; q < Q; q++)
      for (int64_t d = 0; d < nb; d++) {
        double v = 0;
        for (int64_t i = tf->doff[d0 + d]; i < tf->doff[d0 + d + 1]; i++) v += w[(int64_t)q * tf->V + tf->dtok[i]];
        s[(int64_t)q * nb + d] = v;
      }
    PetscCall(InflTopKPush(t, (PetscInt)nb, s, tf->index + d0, 0));
  }
  PetscCall(PetscFree2(w, s));
  PetscCall(InflTopKMerge(tf->comm, t));
  *top = t;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTFIDFDestroy(InflTFIDF *tf)
{
  PetscFunctionBegin;
  if (!*tf) PetscFunctionReturn(0);
  PetscCall(PetscFree((*tf)->df));
  PetscCall(PetscFree((*tf)->idf));
  if ((*tf)->cap_n) PetscCall(PetscFree2((*tf)->index, (*tf)->doff));
  else PetscCall(PetscFree((*tf)->doff));
  PetscCall(PetscFree((*tf)->dtok));
  PetscCall(PetscFree(*tf));
  PetscFunctionReturn(0);
}

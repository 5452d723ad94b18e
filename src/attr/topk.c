/* topk.c -- per-query top-k / bottom-k of influence scores, merged across ranks by a custom MPI reduction.
 *
 * Each row of an InflTopK is, between pushes, a bounded heap whose root holds the worst kept entry (the
 * current K-th), so a push compares each score with the root and usually skips it.  Sorting a row is a heap
 * sort that pops the worst entry to the back, which leaves the row best-first.  The merge packs sorted rows
 * into one byte record per group of queries and reduces it with a user operation that merges two sorted
 * lists in place. */
#include <infl/topk.h>
#include <inttypes.h>
#include <string.h>

/* Bytes of one reduction record at most (MPI 3.1 counts are int). */
#define TOPK_RECORD_BYTES ((int64_t)1 << 28)
#define TOPK_MAGIC        INT64_C(0x746f706b) /* "topk" */
#define TOPK_HEADER       4                   /* int64 words: Q of the record, K, largest, magic */

/* Is (v, i) ranked before (w, j)?  The total order of topk.h. */
static inline int topk_before(int largest, double v, int64_t i, double w, int64_t j)
{
  if (v != w) return largest ? v > w : v < w;
  return i < j;
}

/* Heap with the worst entry at the root: every parent is ranked after its children. */
static inline void heap_sift_down(int largest, double *s, int64_t *ix, int64_t n, int64_t p)
{
  double  v = s[p];
  int64_t i = ix[p];
  for (;;) {
    int64_t c = 2 * p + 1;
    if (c >= n) break;
    if (c + 1 < n && topk_before(largest, s[c], ix[c], s[c + 1], ix[c + 1])) c++; /* the worse child */
    if (!topk_before(largest, v, i, s[c], ix[c])) break;
    s[p]  = s[c];
    ix[p] = ix[c];
    p     = c;
  }
  s[p]  = v;
  ix[p] = i;
}

static inline void heap_sift_up(int largest, double *s, int64_t *ix, int64_t p)
{
  double  v = s[p];
  int64_t i = ix[p];
  while (p > 0) {
    int64_t parent = (p - 1) / 2;
    if (!topk_before(largest, s[parent], ix[parent], v, i)) break;
    s[p]  = s[parent];
    ix[p] = ix[parent];
    p     = parent;
  }
  s[p]  = v;
  ix[p] = i;
}

static void row_heapify(int largest, double *s, int64_t *ix, int64_t n)
{
  for (int64_t p = n / 2 - 1; p >= 0; p--) heap_sift_down(largest, s, ix, n, p);
}

/* Heap sort: pop the worst to the back; the row ends best-first. */
static void row_heap_sort(int largest, double *s, int64_t *ix, int64_t n)
{
  for (int64_t m = n - 1; m > 0; m--) {
    double  v = s[0];
    int64_t i = ix[0];
    s[0]      = s[m];
    ix[0]     = ix[m];
    s[m]      = v;
    ix[m]     = i;
    heap_sift_down(largest, s, ix, m, 0);
  }
}

PetscErrorCode InflTopKCreate(PetscInt Q, PetscInt K, PetscBool largest, InflTopK **t)
{
  InflTopK *tk;

  PetscFunctionBegin;
  PetscCheck(t, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL, "InflTopKCreate: output pointer t is NULL");
  PetscCheck(Q >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "InflTopKCreate: number of queries Q = %" PetscInt_FMT " must be >= 0", Q);
  PetscCheck(K >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "InflTopKCreate: entries per query K = %" PetscInt_FMT " must be >= 1", K);
  PetscCall(PetscNew(&tk));
  tk->Q       = Q;
  tk->K       = K;
  tk->largest = largest ? PETSC_TRUE : PETSC_FALSE;
  tk->sorted  = PETSC_TRUE; /* empty rows are both sorted and heaps */
  PetscCall(PetscCalloc1((size_t)Q + 1, &tk->n));
  PetscCall(PetscMalloc1((size_t)Q * (size_t)K + 1, &tk->score));
  PetscCall(PetscMalloc1((size_t)Q * (size_t)K + 1, &tk->index));
  *t = tk;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTopKClampToTrain(MPI_Comm comm, PetscInt *K, int64_t N, PetscInt *K_requested)
{
  PetscFunctionBegin;
  *K_requested = 0;
  if (*K > N) { /* keep every training example once instead of padding the lists */
    PetscCall(PetscPrintf(comm, "note: -score_topk %d is larger than the %" PRId64 " training examples; keeping all %" PRId64 "\n", (int)*K, N, N));
    *K_requested = *K;
    *K           = (PetscInt)N;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflTopKDestroy(InflTopK **t)
{
  PetscFunctionBegin;
  if (!t || !*t) PetscFunctionReturn(0);
  PetscCall(PetscFree((*t)->n));
  PetscCall(PetscFree((*t)->score));
  PetscCall(PetscFree((*t)->index));
  PetscCall(PetscFree(*t));
  PetscFunctionReturn(0);
}

PetscErrorCode InflTopKSort(InflTopK *t)
{
  PetscFunctionBegin;
  PetscCheck(t, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL, "%s: the list is NULL", PETSC_FUNCTION_NAME);
  if (t->sorted) PetscFunctionReturn(0);
  for (PetscInt q = 0; q < t->Q; q++) {
    size_t off = (size_t)q * (size_t)t->K;
    row_heap_sort(t->largest, t->score + off, t->index + off, t->n[q]);
  }
  t->sorted = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* Offer B entries (row, index[b] or index0 + b) to query q's heap; rows must be heaps. */
static void push_row(InflTopK *t, PetscInt q, PetscInt B, const double row[], const int64_t index[], int64_t index0)
{
  const int     largest = t->largest;
  const int64_t K       = t->K;
  double       *s       = t->score + (size_t)q * (size_t)K;
  int64_t      *ix      = t->index + (size_t)q * (size_t)K;
  int64_t       n       = t->n[q];
  PetscInt      b       = 0;

  /* Fill the heap up to K entries. */
  for (; b < B && n < K; b++) {
    s[n]  = row[b];
    ix[n] = index ? index[b] : index0 + b;
    heap_sift_up(largest, s, ix, n);
    n++;
  }
  /* Full: an entry is taken only if it is ranked before the root (the K-th). */
  if (largest) {
    for (; b < B; b++) {
      double v = row[b];
      if (v < s[0]) continue;
      int64_t i = index ? index[b] : index0 + b;
      if (!topk_before(1, v, i, s[0], ix[0])) continue;
      s[0]  = v;
      ix[0] = i;
      heap_sift_down(1, s, ix, n, 0);
    }
  } else {
    for (; b < B; b++) {
      double v = row[b];
      if (v > s[0]) continue;
      int64_t i = index ? index[b] : index0 + b;
      if (!topk_before(0, v, i, s[0], ix[0])) continue;
      s[0]  = v;
      ix[0] = i;
      heap_sift_down(0, s, ix, n, 0);
    }
  }
  t->n[q] = (PetscInt)n;
}

static void unsort(InflTopK *t)
{
  if (!t->sorted) return;
  for (PetscInt q = 0; q < t->Q; q++) {
    size_t off = (size_t)q * (size_t)t->K;
    row_heapify(t->largest, t->score + off, t->index + off, t->n[q]);
  }
  t->sorted = PETSC_FALSE;
}

PetscErrorCode InflTopKPushQuery(InflTopK *t, PetscInt q, PetscInt B, const double scores[], const int64_t index[])
{
  PetscFunctionBegin;
  PetscCheck(t && q >= 0 && q < t->Q && B >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "InflTopKPushQuery: query %" PetscInt_FMT " or block size %" PetscInt_FMT " out of range", q, B);
  for (PetscInt b = 0; b < B; b++) PetscCheck(!PetscIsNanReal(scores[b]), PETSC_COMM_SELF, PETSC_ERR_FP, "InflTopKPushQuery: score of query %" PetscInt_FMT " for train example %" PRId64 " is NaN", q, index[b]);
  unsort(t);
  push_row(t, q, B, scores, index, 0);
  PetscFunctionReturn(0);
}

PetscErrorCode InflTopKPush(InflTopK *t, PetscInt B, const double scores[], const int64_t index[], int64_t index0)
{
  PetscFunctionBegin;
  PetscCheck(t, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL, "%s: the list is NULL", PETSC_FUNCTION_NAME);
  PetscCheck(B >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "InflTopKPush: block size B = %" PetscInt_FMT " must be >= 0", B);
  if (B == 0 || t->Q == 0) PetscFunctionReturn(0);
  PetscCheck(scores, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL, "InflTopKPush: scores is NULL for a block of %" PetscInt_FMT " examples", B);

  /* Refuse NaN before taking anything: a NaN compares false with everything and would be dropped silently. */
  for (PetscInt q = 0; q < t->Q; q++) {
    const double *row = scores + (size_t)q * (size_t)B;
    for (PetscInt b = 0; b < B; b++) {
      PetscCheck(!PetscIsNanReal(row[b]), PETSC_COMM_SELF, PETSC_ERR_FP, "InflTopKPush: score of query %" PetscInt_FMT " for train example %" PRId64 " is NaN (block position %" PetscInt_FMT "); check the gradients and the damping", q, index ? index[b] : index0 + b, b);
    }
  }

  /* Sorted rows (after a sort or merge) become heaps again. */
  unsort(t);
  for (PetscInt q = 0; q < t->Q; q++) push_row(t, q, B, scores + (size_t)q * (size_t)B, index, index0);
  PetscFunctionReturn(0);
}

/* Record layout (bytes, 8-aligned): int64 header[TOPK_HEADER] = {Qr, K, largest, magic}, int64 n[Qr],
 * double score[Qr][K], int64 index[Qr][K]; rows sorted best-first. */
static inline int64_t record_words(int64_t Qr, int64_t K)
{
  return TOPK_HEADER + Qr + 2 * Qr * K;
}

/* Merge the sorted rows of record `in` into record `inout`, keeping the first K of each query.
 * In place: count how many entries each side contributes, then merge backwards into inout. */
static void topk_merge_record(const int64_t *in, int64_t *inout)
{
  const int64_t  Qr = inout[0], K = inout[1];
  const int      largest = (int)inout[2];
  const int64_t *na      = inout + TOPK_HEADER;
  const int64_t *nb      = in + TOPK_HEADER;
  double        *sa      = (double *)(inout + TOPK_HEADER + Qr);
  const double  *sb      = (const double *)(in + TOPK_HEADER + Qr);
  int64_t       *ia      = inout + TOPK_HEADER + Qr + Qr * K;
  const int64_t *ib      = in + TOPK_HEADER + Qr + Qr * K;

  for (int64_t q = 0; q < Qr; q++) {
    double        *a  = sa + q * K;
    int64_t       *ai = ia + q * K;
    const double  *b  = sb + q * K;
    const int64_t *bi = ib + q * K;
    int64_t        nA = na[q], nB = nb[q], total = nA + nB < K ? nA + nB : K;
    int64_t        ka = 0, kb = 0;

    while (ka + kb < total) {
      if (kb >= nB || (ka < nA && topk_before(largest, a[ka], ai[ka], b[kb], bi[kb]))) ka++;
      else kb++;
    }
    /* The first ka of a and kb of b form the result; merge from the back so no kept entry of a is overwritten. */
    int64_t w = total - 1, pa = ka - 1, pb = kb - 1;
    while (pb >= 0) {
      if (pa >= 0 && topk_before(largest, b[pb], bi[pb], a[pa], ai[pa])) {
        a[w]  = a[pa];
        ai[w] = ai[pa];
        pa--;
      } else {
        a[w]  = b[pb];
        ai[w] = bi[pb];
        pb--;
      }
      w--;
    }
    ((int64_t *)(inout + TOPK_HEADER))[q] = total;
  }
}

/* MPI user operation: `len` records of one datatype.  Every record carries its own shape in its header. */
static void topk_merge_op(void *invec, void *inoutvec, int *len, MPI_Datatype *type)
{
  const int64_t *in    = (const int64_t *)invec;
  int64_t       *inout = (int64_t *)inoutvec;
  for (int r = 0; r < *len; r++) {
    int64_t words = record_words(inout[0], inout[1]);
    topk_merge_record(in, inout);
    in += words;
    inout += words;
  }
}

PetscErrorCode InflTopKMerge(MPI_Comm comm, InflTopK *t)
{
  int64_t      mine[6], agree[6];
  MPI_Op       op;
  MPI_Datatype type = MPI_DATATYPE_NULL;
  int64_t     *rec  = NULL;

  PetscFunctionBegin;
  PetscCheck(t, PETSC_COMM_SELF, PETSC_ERR_ARG_NULL, "%s: the list is NULL", PETSC_FUNCTION_NAME);
  /* Same shape on every rank (max of v and of -v). */
  mine[0] = t->Q;
  mine[1] = -(int64_t)t->Q;
  mine[2] = t->K;
  mine[3] = -(int64_t)t->K;
  mine[4] = t->largest;
  mine[5] = -(int64_t)t->largest;
  PetscCallMPI(MPI_Allreduce(mine, agree, 6, MPI_INT64_T, MPI_MAX, comm));
  PetscCheck(agree[0] == -agree[1] && agree[2] == -agree[3] && agree[4] == -agree[5], comm, PETSC_ERR_ARG_INCOMP,
             "InflTopKMerge: ranks disagree on the list shape: Q in [%" PRId64 ", %" PRId64 "], K in [%" PRId64 ", %" PRId64 "], largest in [%" PRId64 ", %" PRId64 "]; create the list with the same arguments on every rank",
             -agree[1], agree[0], -agree[3], agree[2], -agree[5], agree[4]);

  PetscCall(InflTopKSort(t));
  const int64_t Q = t->Q, K = t->K;
  if (Q == 0) PetscFunctionReturn(0);

  /* Queries per record: the largest group whose record fits TOPK_RECORD_BYTES (at least one query). */
  int64_t per_query = 8 * (1 + 2 * K);
  PetscCheck(8 * TOPK_HEADER + per_query <= INT32_MAX, comm, PETSC_ERR_SUP, "InflTopKMerge: K = %" PRId64 " is too large for one reduction record of one query (%" PRId64 " bytes); use K below 134 million", K, 8 * TOPK_HEADER + per_query);
  int64_t group = (TOPK_RECORD_BYTES - 8 * TOPK_HEADER) / per_query;
  if (group < 1) group = 1;
  if (group > Q) group = Q;

  PetscCallMPI(MPI_Op_create(topk_merge_op, 1 /* commutative: the order is total */, &op));
  PetscCall(PetscMalloc1((size_t)record_words(group, K), &rec));
  int64_t type_Qr = -1;
  for (int64_t q0 = 0; q0 < Q; q0 += group) {
    int64_t Qr = Q - q0 < group ? Q - q0 : group;
    if (Qr != type_Qr) {
      PetscMPIInt bytes;
      if (type != MPI_DATATYPE_NULL) PetscCallMPI(MPI_Type_free(&type));
      PetscCall(InflMPIIntCast(8 * record_words(Qr, K), "top-k reduction record bytes", &bytes));
      PetscCallMPI(MPI_Type_contiguous(bytes, MPI_BYTE, &type));
      PetscCallMPI(MPI_Type_commit(&type));
      type_Qr = Qr;
    }
    /* Pack: header, n, scores, indices of queries q0 .. q0+Qr-1. */
    int64_t *n  = rec + TOPK_HEADER;
    double  *s  = (double *)(rec + TOPK_HEADER + Qr);
    int64_t *ix = rec + TOPK_HEADER + Qr + Qr * K;
    rec[0]      = Qr;
    rec[1]      = K;
    rec[2]      = t->largest;
    rec[3]      = TOPK_MAGIC;
    for (int64_t q = 0; q < Qr; q++) n[q] = t->n[q0 + q];
    PetscCall(PetscArraycpy(s, t->score + q0 * K, (size_t)(Qr * K)));
    PetscCall(PetscArraycpy(ix, t->index + q0 * K, (size_t)(Qr * K)));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, rec, 1, type, op, comm));
    PetscAssert(rec[0] == Qr && rec[1] == K && rec[3] == TOPK_MAGIC, comm, PETSC_ERR_PLIB, "InflTopKMerge: reduction record header damaged");
    for (int64_t q = 0; q < Qr; q++) t->n[q0 + q] = (PetscInt)n[q];
    PetscCall(PetscArraycpy(t->score + q0 * K, s, (size_t)(Qr * K)));
    PetscCall(PetscArraycpy(t->index + q0 * K, ix, (size_t)(Qr * K)));
  }
  PetscCall(PetscFree(rec));
  if (type != MPI_DATATYPE_NULL) PetscCallMPI(MPI_Type_free(&type));
  PetscCallMPI(MPI_Op_free(&op));
  t->sorted = PETSC_TRUE;
  PetscFunctionReturn(0);
}

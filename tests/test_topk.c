/* test_topk.c -- InflTopK against a brute-force full sort, at any rank count.
 *
 * A (Q, N) score matrix is generated from a seed identically on every rank, rounded to a coarse grid so that
 * many scores tie exactly, with equal scores forced across every shard boundary of 2, 3 and 4 ranks and
 * with +-Inf in one query.  Each rank pushes its InflPartition shard in random-size blocks in a shuffled
 * order (some with explicit indices, some with index0); after InflTopKMerge every rank compares every query
 * with qsort of all N under the tie rule, for K = 1, 5, 10, 1000, 1500 and both directions.  N = 2 leaves
 * ranks without examples at 3 and 4 ranks; N = 0 leaves every list empty.  A NaN pushed is an error. */
#include <infl/topk.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#define SEED 20240611u
#define NQ   7

typedef struct {
  double  s;
  int64_t i;
} Pair;

static int cmp_largest(const void *x, const void *y)
{
  const Pair *a = x, *b = y;
  if (a->s != b->s) return a->s > b->s ? -1 : 1;
  return (a->i > b->i) - (a->i < b->i);
}

static int cmp_smallest(const void *x, const void *y)
{
  const Pair *a = x, *b = y;
  if (a->s != b->s) return a->s < b->s ? -1 : 1;
  return (a->i > b->i) - (a->i < b->i);
}

/* S (NQ, N): 21 grid values in [-1, 1], ties at shard boundaries, a few copies of the extremes, +-Inf. */
static void make_scores(int64_t N, double *S)
{
  for (int q = 0; q < NQ; q++)
    for (int64_t i = 0; i < N; i++) S[q * N + i] = round(20.0 * InflUniform(SEED, (uint64_t)(q * N + i), 11)) / 10.0 - 1.0;
  for (int size = 2; size <= 4; size++) {
    for (int r = 1; r < size; r++) {
      int64_t start, count;
      InflPartition(N, size, r, &start, &count);
      if (start <= 0 || start >= N) continue;
      for (int q = 0; q < NQ; q++) S[q * N + start] = S[q * N + start - 1];
      /* also the extremes across the boundary, so ties decide the first and last entries */
      if (N > 10) {
        S[0 * N + start - 1] = S[0 * N + start] = 1.0;
        S[1 * N + start - 1] = S[1 * N + start] = -1.0;
      }
    }
  }
  if (N > 600) {
    S[6 * N + 3]   = INFINITY;
    S[6 * N + 500] = -INFINITY;
    S[6 * N + 501] = -INFINITY;
  }
}

/* Push this rank's shard [start, start+count) in random-size blocks, in shuffled order. */
static PetscErrorCode push_shard(InflTopK *t, int rank, int64_t N, const double *S, int64_t start, int64_t count, uint64_t trial)
{
  int64_t  nblk = 0, *bstart, *blen, *order;
  double  *blk;
  int64_t *idx;

  PetscFunctionBegin;
  PetscCall(PetscMalloc3(count + 1, &bstart, count + 1, &blen, count + 1, &order));
  for (int64_t p = 0; p < count; nblk++) {
    int64_t len = 1 + (int64_t)(97 * InflUniform(SEED + 1, trial * 100000 + (uint64_t)nblk, 1000 + (uint64_t)rank));
    if (len > count - p) len = count - p;
    bstart[nblk] = start + p;
    blen[nblk]   = len;
    order[nblk]  = nblk;
    p += len;
  }
  for (int64_t k = nblk - 1; k > 0; k--) { /* Fisher-Yates */
    int64_t j = (int64_t)((k + 1) * InflUniform(SEED + 2, trial * 100000 + (uint64_t)k, 2000 + (uint64_t)rank));
    int64_t x = order[k];
    order[k]  = order[j];
    order[j]  = x;
  }
  PetscCall(PetscMalloc2(NQ * 100 + 1, &blk, 100, &idx));
  PetscCall(InflTopKPush(t, 0, NULL, NULL, 0)); /* an empty block is fine */
  for (int64_t k = 0; k < nblk; k++) {
    int64_t b0 = bstart[order[k]], B = blen[order[k]];
    for (int q = 0; q < NQ; q++)
      for (int64_t b = 0; b < B; b++) blk[q * B + b] = S[q * N + b0 + b];
    if (k % 2) {
      for (int64_t b = 0; b < B; b++) idx[b] = b0 + b;
      PetscCall(InflTopKPush(t, (PetscInt)B, blk, idx, -12345));
    } else PetscCall(InflTopKPush(t, (PetscInt)B, blk, NULL, b0));
  }
  PetscCall(PetscFree2(blk, idx));
  PetscCall(PetscFree3(bstart, blen, order));
  PetscFunctionReturn(0);
}

static PetscErrorCode check_one(MPI_Comm comm, int64_t N, const double *S, PetscInt K, PetscBool largest, uint64_t trial)
{
  PetscMPIInt rank, size;
  int64_t     start, count;
  InflTopK   *t = NULL;
  Pair       *all;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  InflPartition(N, size, rank, &start, &count);
  PetscCall(InflTopKCreate(NQ, K, largest, &t));
  PetscCall(push_shard(t, rank, N, S, start, count, trial));
  PetscCall(InflTopKMerge(comm, t));

  PetscCall(PetscMalloc1(N + 1, &all));
  for (int q = 0; q < NQ; q++) {
    int64_t expect = N < K ? N : K;
    for (int64_t i = 0; i < N; i++) {
      all[i].s = S[q * N + i];
      all[i].i = i;
    }
    qsort(all, (size_t)N, sizeof(Pair), largest ? cmp_largest : cmp_smallest);
    PetscCheck(t->n[q] == expect, PETSC_COMM_SELF, PETSC_ERR_PLIB, "N=%" PRId64 " K=%" PetscInt_FMT " largest=%d query %d: n = %" PetscInt_FMT ", expected %" PRId64, N, K, (int)largest, q, t->n[q], expect);
    for (int64_t k = 0; k < expect; k++) {
      double  s = t->score[q * K + k];
      int64_t i = t->index[q * K + k];
      PetscCheck(s == all[k].s && i == all[k].i, PETSC_COMM_SELF, PETSC_ERR_PLIB, "N=%" PRId64 " K=%" PetscInt_FMT " largest=%d query %d entry %" PRId64 ": (%g, %" PRId64 "), expected (%g, %" PRId64 ")", N, K, (int)largest, q, k, s, i, all[k].s, all[k].i);
    }
  }
  PetscCall(PetscFree(all));
  PetscCall(InflTopKDestroy(&t));
  PetscCall(InflTopKDestroy(&t)); /* NULL is fine */
  PetscFunctionReturn(0);
}

/* A NaN is refused with PETSC_ERR_FP naming query and train index, and leaves the list unchanged. */
static PetscErrorCode check_nan(void)
{
  InflTopK      *t;
  double         blk[NQ * 5];
  PetscErrorCode ierr;
  char          *msg = NULL;

  PetscFunctionBegin;
  PetscCall(InflTopKCreate(NQ, 3, PETSC_TRUE, &t));
  for (int k = 0; k < NQ * 5; k++) blk[k] = k;
  PetscCall(InflTopKPush(t, 5, blk, NULL, 0));
  blk[2 * 5 + 3] = NAN;
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = InflTopKPush(t, 5, blk, NULL, 1000);
  PetscCall(PetscPopErrorHandler());
  PetscCheck(ierr == PETSC_ERR_FP, PETSC_COMM_SELF, PETSC_ERR_PLIB, "NaN push returned %d, expected PETSC_ERR_FP", (int)ierr);
  PetscCall(PetscErrorMessage(ierr, NULL, &msg));
  PetscCheck(msg && strstr(msg, "query 2") && strstr(msg, "train example 1003"), PETSC_COMM_SELF, PETSC_ERR_PLIB, "NaN message does not name query 2 and train example 1003: %s", msg ? msg : "(none)");
  PetscCall(InflTopKSort(t));
  for (int q = 0; q < NQ; q++) {
    PetscCheck(t->n[q] == 3, PETSC_COMM_SELF, PETSC_ERR_PLIB, "list changed by the refused block");
    for (int k = 0; k < 3; k++) PetscCheck(t->score[q * 3 + k] == q * 5 + 4 - k && t->index[q * 3 + k] == 4 - k, PETSC_COMM_SELF, PETSC_ERR_PLIB, "list changed by the refused block");
  }
  PetscCall(InflTopKDestroy(&t));

  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = InflTopKCreate(NQ, 0, PETSC_TRUE, &t);
  PetscCall(PetscPopErrorHandler());
  PetscCheck(ierr == PETSC_ERR_ARG_OUTOFRANGE, PETSC_COMM_SELF, PETSC_ERR_PLIB, "K = 0 returned %d, expected PETSC_ERR_ARG_OUTOFRANGE", (int)ierr);
  PetscFunctionReturn(0);
}

/* Pushing again after a sort keeps the heap valid: push half, sort, push the rest, compare on one rank. */
static PetscErrorCode check_push_after_sort(void)
{
  const int64_t N = 300;
  const PetscInt K = 17;
  double       *S;
  Pair         *all;
  InflTopK     *t;

  PetscFunctionBegin;
  PetscCall(PetscMalloc2(NQ * N, &S, N, &all));
  make_scores(N, S);
  for (int dir = 0; dir < 2; dir++) {
    PetscCall(InflTopKCreate(1, K, dir ? PETSC_TRUE : PETSC_FALSE, &t));
    PetscCall(InflTopKPush(t, 150, S, NULL, 0));
    PetscCall(InflTopKSort(t));
    PetscCall(InflTopKPush(t, 150, S + 150, NULL, 150));
    PetscCall(InflTopKSort(t));
    for (int64_t i = 0; i < N; i++) {
      all[i].s = S[i];
      all[i].i = i;
    }
    qsort(all, (size_t)N, sizeof(Pair), dir ? cmp_largest : cmp_smallest);
    for (PetscInt k = 0; k < K; k++) PetscCheck(t->score[k] == all[k].s && t->index[k] == all[k].i, PETSC_COMM_SELF, PETSC_ERR_PLIB, "push after sort: entry %" PetscInt_FMT " wrong", k);
    PetscCall(InflTopKDestroy(&t));
  }
  PetscCall(PetscFree2(S, all));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  const int64_t  Ns[]  = {1000, 2, 0};
  const PetscInt Ks[]  = {1, 5, 10, 1000, 1500};
  uint64_t       trial = 0;
  PetscMPIInt    rank, size;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCallMPI(MPI_Comm_rank(PETSC_COMM_WORLD, &rank));
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  for (size_t a = 0; a < sizeof(Ns) / sizeof(Ns[0]); a++) {
    int64_t N = Ns[a];
    double *S;
    PetscCall(PetscMalloc1(NQ * N + 1, &S));
    make_scores(N, S);
    for (int dir = 0; dir < 2; dir++)
      for (size_t b = 0; b < sizeof(Ks) / sizeof(Ks[0]); b++) PetscCall(check_one(PETSC_COMM_WORLD, N, S, Ks[b], dir ? PETSC_TRUE : PETSC_FALSE, trial++));
    PetscCall(PetscFree(S));
  }
  PetscCall(check_nan());
  PetscCall(check_push_after_sort());
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_topk: all checks passed on %d ranks\n", (int)size));
  PetscCall(PetscFinalize());
  return 0;
}

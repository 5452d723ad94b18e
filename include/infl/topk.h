/* infl/topk.h -- per-query top-k (proponents) and bottom-k (opponents) of influence scores.
 *
 * `infl score` computes scores(q, m) for Q queries against train examples sharded over the ranks.  Each
 * rank offers its scores block by block (InflTopKPush); InflTopKMerge then combines the ranks' lists with
 * one MPI_Allreduce whose user-defined operation merges two sorted lists, so that every rank ends with the
 * global top-k (or bottom-k) of every query.
 *
 * Order (DESIGN.md, "Distributed rules").  The entries of a query are ranked by a total order:
 *   largest  = PETSC_TRUE  (top-k, proponents):  score descending, then train index ascending;
 *   largest  = PETSC_FALSE (bottom-k, opponents): score ascending (most negative first), then train index
 *                                                ascending.
 * Since the order is total, the kept set and its order are a function of the multiset of (score, index)
 * pairs offered on all ranks: they do not depend on the rank count, on how the train examples were split
 * into shards and blocks, or on the order of the pushes.  +Inf and -Inf are ordinary values; -0.0 and +0.0
 * compare equal (the index decides).  NaN is refused.  Each train index is meant to be offered once over all
 * ranks; an index offered twice is kept as two entries.
 */
#ifndef INFL_TOPK_H
#define INFL_TOPK_H

#include <infl/sys.h>

typedef struct {
  PetscInt  Q, K;    /* queries; entries kept per query (K >= 1) */
  PetscBool largest; /* PETSC_TRUE: top-k; PETSC_FALSE: bottom-k */
  PetscInt *n;       /* (Q) entries held for query q, n[q] <= K (fewer than K while fewer examples were seen) */
  double   *score;   /* (Q, K) row-major; row q holds n[q] scores, the rest is unused */
  int64_t  *index;   /* (Q, K) row-major; global train index of each score */
  PetscBool sorted;  /* private: rows are sorted in the order above (PETSC_TRUE) or are bounded heaps */
} InflTopK;

/* Create an empty list for Q >= 0 queries keeping K >= 1 entries each.  Memory: Q * (K * 16 + 4) bytes.
 * Errors: PETSC_ERR_ARG_OUTOFRANGE for Q < 0 or K < 1; PETSC_ERR_MEM. */
PetscErrorCode InflTopKCreate(PetscInt Q, PetscInt K, PetscBool largest, InflTopK **t);

/* Collective.  Lists of *K entries over N training examples: a *K above N is clamped to N, with a note on rank 0 of
 * comm ("-score_topk K is larger than the N training examples"), and *K_requested set to the K asked for (the
 * topk_requested attribute of a scores file); otherwise *K_requested = 0. */
PetscErrorCode InflTopKClampToTrain(MPI_Comm comm, PetscInt *K, int64_t N, PetscInt *K_requested);

/* Free t and set *t = NULL; accepts t == NULL and *t == NULL. */
PetscErrorCode InflTopKDestroy(InflTopK **t);

/* Offer a block of B >= 0 train examples.  Not collective.
 *   scores: (Q, B) row-major, scores[q * B + b] = score of query q for the b-th example of the block;
 *   index:  (B) global train indices of the block's examples, or NULL: then example b has index index0 + b.
 * Errors: PETSC_ERR_FP if any score is NaN; the message names the query and the train index.  The block is
 * checked before any entry is taken, so on error t is unchanged.  PETSC_ERR_ARG_OUTOFRANGE for B < 0,
 * PETSC_ERR_ARG_NULL for scores == NULL with B > 0.
 * Complexity: O(Q B) comparisons -- each query keeps a bounded heap whose root is its current K-th entry,
 * and a score that does not beat the root is skipped with one comparison -- plus O(log K) per entry taken
 * (with examples in random order about K ln(N/K) entries of N are taken per query).  No allocation.
 * Between pushes the rows are heaps (not sorted); InflTopKSort or InflTopKMerge sorts them. */
PetscErrorCode InflTopKPush(InflTopK *t, PetscInt B, const double scores[], const int64_t index[], int64_t index0);

/* Offer B entries to query q alone: scores (B), index (B).  Not collective.  Used to restore saved lists. */
PetscErrorCode InflTopKPushQuery(InflTopK *t, PetscInt q, PetscInt B, const double scores[], const int64_t index[]);

/* Sort every row of t in the order above (local, not collective).  O(Q K log K), in place.  Pushing after
 * sorting is allowed. */
PetscErrorCode InflTopKSort(InflTopK *t);

/* Collective on comm: merge every rank's lists.  On return every rank holds the same global top-k (bottom-k)
 * of each query, sorted in the order above, with n[q] = min(K, examples offered for q on all ranks).
 * Every rank must pass the same Q, K and largest (checked: PETSC_ERR_ARG_INCOMP on all ranks otherwise).
 * Implementation: rows are sorted locally, packed into records (header, n, scores, indices) of a contiguous
 * byte datatype, and reduced with MPI_Allreduce under a commutative MPI_Op_create operation that merges two
 * sorted lists in place and keeps the first K.  Queries are reduced in groups so that one record stays below
 * 256 MiB (counts of MPI 3.1 are int).  Time O(Q K (log K + log P)), memory one record per rank.
 * Pushing after a merge would offer examples again; create a new list instead. */
PetscErrorCode InflTopKMerge(MPI_Comm comm, InflTopK *t);

#endif

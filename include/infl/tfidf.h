/* infl/tfidf.h -- TF-IDF candidate filtering of training sequences for a query (Grosse et al. 2023, section 3.3).
 *
 * Before scoring a query against a large training set, keep only the K training sequences most similar to it by a
 * modified BM25 (Robertson & Zaragoza 2009) with binary term presence and k1 = 1.5: a query token present in a
 * document contributes tf (k1 + 1) / (tf + k1) IDF(t) with tf = 1, i.e. IDF(t) once, so
 *   score(Q, D) = sum over distinct tokens t of Q that occur in D of IDF(t),
 *   IDF(t) = log((C - n_t + 0.5) / (n_t + 0.5) + 1),   C = documents, n_t = documents containing t.
 * Documents (training sequences) are held by the ranks that hold them; the document frequencies n_t are summed
 * across ranks (one MPI_Allreduce of vocab_size counts) and the per-query top K are merged across ranks with the
 * top-k reduction of infl/topk.h (ties by index ascending), so the result does not depend on the rank count.
 * Memory: this rank's documents as sorted lists of their distinct tokens, and vocab_size counts.
 */
#ifndef INFL_TFIDF_H
#define INFL_TFIDF_H

#include <infl/topk.h>

typedef struct _p_InflTFIDF *InflTFIDF;

/* Collective.  An empty index over token ids in [0, vocab_size). */
PetscErrorCode InflTFIDFCreate(MPI_Comm comm, PetscInt vocab_size, InflTFIDF *tf);
/* Not collective.  Add this rank's n documents with global indices index0, index0+1, ...: tokens (offsets[n]) and
 * offsets (n+1), offsets[0] = 0.  A token outside [0, vocab_size) is an error naming the document and position.
 * May be called several times (for consecutive shards). */
PetscErrorCode InflTFIDFAddDocuments(InflTFIDF tf, int64_t index0, int64_t n, const int32_t tokens[], const int64_t offsets[]);
/* Collective.  Sum the document frequencies and document counts of every rank and compute IDF. */
PetscErrorCode InflTFIDFSetUp(InflTFIDF tf);
/* After SetUp: idf (vocab_size) and the number of documents C. */
PetscErrorCode InflTFIDFGetIDF(InflTFIDF tf, const double **idf, int64_t *ndocs);
/* Collective (every rank passes the same queries).  The K highest-scoring documents of each of the Q queries, whose
 * tokens are qtok (qoff[Q]) with offsets qoff (Q+1): on return every rank holds them in *top (InflTopK, score
 * descending, index ascending; a query matching no document still gets its K entries, with score 0, lowest indices
 * first).  K larger than the number of documents keeps them all.  Destroy *top with InflTopKDestroy. */
PetscErrorCode InflTFIDFTopK(InflTFIDF tf, PetscInt Q, const int32_t qtok[], const int64_t qoff[], PetscInt K, InflTopK **top);
PetscErrorCode InflTFIDFDestroy(InflTFIDF *tf);

#endif

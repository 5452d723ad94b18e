#!/usr/bin/env python3
"""Independent reference for infl's TF-IDF candidate filter (Grosse et al. 2023, section 3.3; ALGORITHMS.md):
a modified BM25 with binary term presence and k1 = 1.5 (so each present query term contributes its IDF once),
IDF(t) = log((C - n_t + 0.5) / (n_t + 0.5) + 1), score(Q, D) = sum over distinct query tokens t present in D of
IDF(t) * (1 * (k1 + 1)) / (1 + k1); top K per query by score descending, ties by document index ascending.
Run once with Debian's python3-numpy and python3-h5py: /usr/bin/python3 tests/ref/make_tfidf_reference.py
Writes tests/ref/tfidf_ref.h5 (small)."""
import os
import h5py
import numpy as np

rng = np.random.default_rng(20261201)
V, C, Q, K = 60, 211, 6, 12
# documents of 1-30 tokens drawn from a skewed distribution, so that document frequencies vary
p = 1.0 / np.arange(1, V + 1) ** 1.1
p /= p.sum()
lengths = rng.integers(1, 31, size=C)
docs = [rng.choice(V, size=n, p=p) for n in lengths]
docs[17] = docs[3].copy()  # a duplicate document: equal scores, tie broken by index
lengths = np.array([len(d) for d in docs])
queries = [rng.choice(V, size=n, p=p) for n in rng.integers(1, 12, size=Q)]
queries[2] = np.array([V - 1, V - 2])  # rare tokens, perhaps in no document

present = np.zeros((C, V), dtype=bool)
for d, toks in enumerate(docs):
    present[d, toks] = True
n_t = present.sum(axis=0).astype(np.float64)
idf = np.log((C - n_t + 0.5) / (n_t + 0.5) + 1.0)
k1 = 1.5
scores = np.zeros((Q, C))
for q, toks in enumerate(queries):
    qset = np.zeros(V, dtype=bool)
    qset[toks] = True
    tf = (present & qset).astype(np.float64)  # binary presence
    scores[q] = (tf * (k1 + 1) / (tf + k1) * idf).sum(axis=1)
top_idx = np.zeros((Q, K), dtype=np.int64)
top_score = np.zeros((Q, K))
for q in range(Q):
    order = sorted(range(C), key=lambda d: (-scores[q, d], d))[:K]
    top_idx[q] = order
    top_score[q] = scores[q, order]

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfidf_ref.h5")
with h5py.File(out, "w") as f:
    f["vocab_size"] = V
    f["doc_tokens"] = np.concatenate(docs).astype(np.int32)
    f["doc_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    f["query_tokens"] = np.concatenate(queries).astype(np.int32)
    f["query_offsets"] = np.concatenate([[0], np.cumsum([len(x) for x in queries])]).astype(np.int64)
    f["idf"] = idf
    f["scores"] = scores
    f["topk_indices"] = top_idx
    f["topk_scores"] = top_score
print("wrote", out)

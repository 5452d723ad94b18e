#!/usr/bin/python3
"""Reference scores with rank-r query gradients (Grosse et al. 2023, sec. 3.2: each layer's preconditioned query
gradient replaced by its rank-r truncated SVD), for the model and data of make_mlp_reference.py, empirical Fisher.
Writes tests/ref/mlp_small_lowrank.h5: /rank, /scores (Q, N), /sigma_gap (min over queries and layers of
(s_r - s_{r+1}) / s_1: the truncation is well defined when it is clearly positive).  Run once, from the repository
root: /usr/bin/python3 tests/ref/make_lowrank_reference.py"""
import os
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_mlp_reference as ref  # noqa: E402

RANK = 4


def main():
    xtr, ytr = ref.load("train")
    xte, yte = ref.load("t10k")
    _, loaded = ref.load_safetensors(os.path.join(HERE, "mlp_small.safetensors"))
    L = len(ref.DIMS) - 1
    Ws = [(loaded[f"layers.{i}.weight"].astype(np.float64), loaded[f"layers.{i}.bias"].astype(np.float64)) for i in range(L)]
    x, y = xtr[:ref.N_TRAIN], ytr[:ref.N_TRAIN]
    xq, yq = xte[:ref.N_QUERY], yte[:ref.N_QUERY]
    acts, ds, _, _, _ = ref.capture(Ws, x, y)
    aq, dq, _, _, _ = ref.capture(Ws, xq, yq)
    fit = ref.ekfac_fit(acts, ds)
    Pq = ref.precondition(fit, ref.per_example_grads(aq, dq))
    scores = np.zeros((ref.N_QUERY, ref.N_TRAIN))
    gap = np.inf
    for l in range(L):
        for q in range(ref.N_QUERY):
            U, s, Vt = np.linalg.svd(Pq[l][q], full_matrices=False)
            gap = min(gap, (s[RANK - 1] - s[RANK]) / s[0])
            Pr = (U[:, :RANK] * s[:RANK]) @ Vt[:RANK]
            scores[q] += np.einsum("ni,ij,nj->n", ds[l], Pr, acts[l])
    exact = sum(np.einsum("ni,qij,nj->qn", ds[l], Pq[l], acts[l]) for l in range(L))
    corr = np.mean([np.corrcoef(scores[q], exact[q])[0, 1] for q in range(ref.N_QUERY)])
    print(f"rank {RANK}: mean Pearson correlation with exact scores {corr:.4f}; smallest relative singular gap {gap:.3e}")
    with h5py.File(os.path.join(HERE, "mlp_small_lowrank.h5"), "w") as f:
        f["rank"] = RANK
        f["scores"] = scores
        f["sigma_gap"] = gap
        f["pearson_with_exact"] = corr
        f.attrs["script"] = "tests/ref/make_lowrank_reference.py"


if __name__ == "__main__":
    main()

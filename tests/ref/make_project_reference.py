"""Reference values of gradient projections and store-based scores (include/infl/project.h, include/infl/store.h).

An independent numpy implementation: per-example gradients of mlp_small (float64 from its float32 weights, the
capture of make_mlp_reference.py), projection matrices generated entry by entry from the documented counters with a
vectorized Philox4x32-10 (checked against the scalar one of make_mlp_reference.py, itself checked against Random123's
known answers), the projected gradients formed from the explicit per-example gradient matrices DW = Ds a^T
(P_out DW P_in^T for kronecker, R vec(DW) for the dense kinds), the store rounded to float32 as infl stores it, and the
scores: identity g_q . g_m and Fisher g_q^T (G^T G / N + lambda I)^-1 g_m with lambda = 0.1 mean(diag(G^T G / N)),
solved with numpy.linalg.solve.

Run by hand from the repository root (CI never runs it):  /usr/bin/python3 tests/ref/make_project_reference.py
Writes tests/ref/mlp_small_project.h5.
"""
import os
import sys
import datetime
import numpy as np
import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_mlp_reference as ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STREAM_PROJECTION = 4
N, Q = 64, 4                   # train 0..N-1, queries t10k 0..Q-1
SEED = 7
KIN, KOUT, DIM = 8, 8, 48      # kronecker 8/8 (k = 192), dense kinds k = 48
M0, M1, W0, W1, MASK = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF


def philox_vec(seed, c0, c1):
    """Philox4x32-10 of counters (lo32(c0), hi32(c0), lo32(c1), hi32(c1)) and key (lo32(seed), hi32(seed)); c0 an
    array of uint64, c1 and seed scalars.  Returns the 4 words as uint64 arrays."""
    c0 = np.asarray(c0, dtype=np.uint64)
    x0 = c0 & np.uint64(MASK)
    x1 = c0 >> np.uint64(32)
    x2 = np.full_like(x0, c1 & MASK)
    x3 = np.full_like(x0, c1 >> 32)
    k0, k1 = seed & MASK, seed >> 32
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0 = np.uint64(M0) * x0
        p1 = np.uint64(M1) * x2
        x0, x1, x2, x3 = ((p1 >> np.uint64(32)) ^ x1 ^ np.uint64(k0)) & np.uint64(MASK), p1 & np.uint64(MASK), \
                         ((p0 >> np.uint64(32)) ^ x3 ^ np.uint64(k1)) & np.uint64(MASK), p0 & np.uint64(MASK)
    return x0, x1, x2, x3


def matrix(kind, seed, mid, rows, cols):
    """The (rows, cols) matrix `mid` of include/infl/project.h: entry (i, j) from counter c0 = i cols + j,
    c1 = 4 + 256 mid, scaled 1/sqrt(rows)."""
    c0 = np.arange(rows * cols, dtype=np.uint64)
    x0, x1, x2, x3 = philox_vec(seed, c0, STREAM_PROJECTION + 256 * mid)
    if kind == "rademacher":
        v = np.where((x0 & np.uint64(1)) == 1, -1.0, 1.0)
    else:
        u1 = ((x0 | (x1 << np.uint64(32))) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        u2 = ((x2 | (x3 << np.uint64(32))) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        v = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(6.283185307179586476925286766559 * u2)
    return v.reshape(rows, cols) / np.sqrt(rows)


def project(kind, acts, ds):
    """Projected gradients (B, k) of per-example gradients DW_l = Ds_l a_l^T."""
    dws = ref.per_example_grads(acts, ds)
    B = acts[0].shape[0]
    if kind == "kronecker":
        blocks = []
        for l, dw in enumerate(dws):
            dout, din1 = dw.shape[1], dw.shape[2]
            ki, ko = min(KIN, din1), min(KOUT, dout)
            Pin, Pout = matrix("gaussian", SEED, 2 * l + 1, ki, din1), matrix("gaussian", SEED, 2 * l + 2, ko, dout)
            blocks.append(np.einsum("ij,njk,lk->nil", Pout, dw, Pin).reshape(B, ko * ki))
        return np.concatenate(blocks, axis=1)
    g = np.concatenate([dw.reshape(B, -1) for dw in dws], axis=1)
    R = matrix(kind, SEED, 0, DIM, g.shape[1])
    return g @ R.T


def main():
    ref.check_philox()
    for c in [0, 1, 12345, 2 ** 40 + 3]:   # the vectorized generator against the checked scalar one
        w = philox_vec(SEED, [c], STREAM_PROJECTION + 256)
        assert [int(v[0]) for v in w] == ref.philox(SEED, c, STREAM_PROJECTION + 256)
    meta, t = ref.load_safetensors(os.path.join(HERE, "mlp_small.safetensors"))
    nl = len([k for k in t if k.endswith(".weight")])
    Ws = [(t[f"layers.{i}.weight"].astype(np.float64), t[f"layers.{i}.bias"].astype(np.float64)) for i in range(nl)]
    xtr, ytr = ref.load("train")
    xte, yte = ref.load("t10k")
    acts, ds, loss, _, _ = ref.capture(Ws, xtr[:N], ytr[:N])
    qa, qd, _, _, _ = ref.capture(Ws, xte[:Q], yte[:Q])
    with h5py.File(os.path.join(HERE, "mlp_small_project.h5"), "w") as f:
        f.attrs["script"] = "tests/ref/make_project_reference.py"
        f.attrs["numpy"] = np.__version__
        f.attrs["created"] = datetime.date.today().isoformat()
        f.attrs["seed"] = SEED
        f.attrs["project_in"] = KIN
        f.attrs["project_out"] = KOUT
        f.attrs["project_dim"] = DIM
        f.create_dataset("train_indices", data=np.arange(N, dtype=np.int64))
        f.create_dataset("query_indices", data=np.arange(Q, dtype=np.int64))
        f.create_dataset("losses", data=loss)
        f.create_dataset("train_norms", data=np.sqrt(sum((d ** 2).sum(1) * (a ** 2).sum(1) for a, d in zip(acts, ds))))
        for kind in ["kronecker", "gaussian", "rademacher"]:
            G = project(kind, acts, ds)
            Gq = project(kind, qa, qd)
            G32 = G.astype(np.float32).astype(np.float64)
            k = G.shape[1]
            F = G32.T @ G32 / N
            lam = 0.1 * np.trace(F) / k
            Fd = F + lam * np.eye(k)
            Pq = np.linalg.solve(Fd, Gq.T).T
            ev = np.linalg.eigvalsh(Fd)
            g = f.create_group(kind)
            g.attrs["damping"] = lam
            g.attrs["kappa"] = ev[-1] / ev[0]
            g.create_dataset("gradients", data=G)
            g.create_dataset("queries", data=Gq)
            g.create_dataset("scores_identity", data=Gq @ G32.T)
            g.create_dataset("scores_fisher", data=Pq @ G32.T)
            g.create_dataset("queries_fisher", data=Pq)
            print(kind, "k", k, "damping", lam, "kappa", ev[-1] / ev[0])


if __name__ == "__main__":
    main()

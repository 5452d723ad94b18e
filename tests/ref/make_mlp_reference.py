#!/usr/bin/python3
"""Reference fixtures for the MLP / EK-FAC tests (independent PyTorch + numpy implementation).

Run by hand (CI never runs it), from the repository root:

    /usr/bin/python3 tests/ref/make_mlp_reference.py

Writes tests/ref/mlp_small.safetensors (the trained model) and tests/ref/mlp_small_ref.h5 (reference values).
See tests/ref/README.md for the contents and for which quantities are basis-invariant.

Methods:
  * EK-FAC influence: Grosse et al. 2023, "Studying Large Language Model Generalization with Influence
    Functions" (eigenvalue-corrected K-FAC of George et al. 2018), following the formulas in
    docs/ALGORITHMS.md section 1; damping 0.1 * mean(Lambda) per layer.
  * Philox4x32-10: Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3" (Random123), checked
    against Random123's kat_vectors.
  * safetensors: the Hugging Face safetensors file layout, written by hand.
"""
import datetime
import gzip
import json
import os
import struct
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/usr/share/datasets/fashion-mnist"
DIMS = [784, 24, 16, 10]
N_TRAIN, N_QUERY, N_FIT = 256, 8, 5000
FISHER_SEED = 1234
STREAM_FISHER_LABEL = 1
DAMPING_FACTOR = 0.1
TOPK = 10


# ----------------------------------------------------------------------------------------------------------
# Data (IDX format, gzip)
def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    assert (magic >> 8) == 0x08, "expected unsigned byte IDX data"
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(split):
    img = read_idx(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz"))
    lab = read_idx(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz"))
    x = img.reshape(img.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return x, lab.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Philox4x32-10 (Random123 order: round with key k, bump key before each subsequent round)
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    x0, x1, x2, x3 = ctr
    k0, k1 = key
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * x0, M1 * x2
        x0, x1, x2, x3 = ((p1 >> 32) ^ x1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ x3 ^ k1) & MASK, p0 & MASK
    return [x0, x1, x2, x3]


def philox(seed, c0, c1):
    """Counter words (lo32(c0), hi32(c0), lo32(c1), hi32(c1)), key words (lo32(seed), hi32(seed))."""
    return philox4x32_10([c0 & MASK, c0 >> 32, c1 & MASK, c1 >> 32], [seed & MASK, seed >> 32])


def uniform(seed, c0, c1):
    w = philox(seed, c0, c1)
    return float((w[0] | (w[1] << 32)) >> 11) * 2.0 ** -53


def check_philox():
    # Random123 kat_vectors, "philox4x32 10": counter (4 words), key (2 words) -> 4 words.
    kat = [([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
           ([MASK] * 4, [MASK] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
           ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    for ctr, key, want in kat:
        got = philox4x32_10(ctr, key)
        assert got == want, f"Philox KAT failed: {[hex(v) for v in got]} != {[hex(v) for v in want]}"
    # the same vectors through the (seed, c0, c1) layout
    assert philox(0, 0, 0) == kat[0][2]
    assert philox(2 ** 64 - 1, 2 ** 64 - 1, 2 ** 64 - 1) == kat[1][2]
    assert philox(0x299F31D0A4093822, 0x85A308D3243F6A88, 0x0370734413198A2E) == kat[2][2]


# ----------------------------------------------------------------------------------------------------------
# safetensors, written and read by hand
def save_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name, arr in tensors:
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__")
    out = {}
    for name, d in header.items():
        assert d["dtype"] == "F32"
        b, e = d["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").reshape(d["shape"]).copy()
    return meta, out


# ----------------------------------------------------------------------------------------------------------
# Model training (torch, float32)
def make_torch_mlp():
    layers = []
    for i in range(len(DIMS) - 1):
        layers.append(torch.nn.Linear(DIMS[i], DIMS[i + 1]))
    return layers


def torch_forward(layers, x):
    h = x
    for i, lin in enumerate(layers):
        h = lin(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def train_model(xtr, ytr, xte, yte):
    torch.manual_seed(0)
    layers = make_torch_mlp()
    params = [p for lin in layers for p in lin.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.from_numpy(xtr[:N_FIT])
    y = torch.from_numpy(ytr[:N_FIT])
    g = torch.Generator().manual_seed(0)
    for epoch in range(5):
        perm = torch.randperm(N_FIT, generator=g)
        for s in range(0, N_FIT, 64):
            idx = perm[s:s + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(torch_forward(layers, x[idx]), y[idx], reduction="sum")
            loss.backward()
            opt.step()
    return [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()) for lin in layers]


# ----------------------------------------------------------------------------------------------------------
# float64 reference computations
def forward64(Ws, x):
    """Returns logits and per layer (a with trailing 1, s = pre-activation)."""
    h = x.astype(np.float64)
    acts, pres = [], []
    for l, (W, b) in enumerate(Ws):
        acts.append(np.concatenate([h, np.ones((h.shape[0], 1))], axis=1))
        s = h @ W.T + b
        pres.append(s)
        h = np.maximum(s, 0.0) if l < len(Ws) - 1 else s
    return h, acts, pres


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def capture(Ws, x, y):
    """a_l (B, din+1), Ds_l (B, dout) of the per-example summed cross-entropy, per-example loss."""
    logits, acts, pres = forward64(Ws, x)
    p = softmax(logits)
    B = x.shape[0]
    # dL/dz = p - onehot(y); true-class entry as -(sum of the other classes) (stable for confident examples)
    g = p.copy()
    other = p.copy()
    other[np.arange(B), y] = 0.0
    g[np.arange(B), y] = -other.sum(axis=1)
    zmax = logits.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(logits - zmax).sum(axis=1))
    loss = lse - logits[np.arange(B), y]
    ds = [None] * len(Ws)
    ds[-1] = g
    for l in range(len(Ws) - 1, 0, -1):
        ds[l - 1] = (ds[l] @ Ws[l][0]) * (pres[l - 1] > 0)
    return acts, ds, loss, logits, p


def per_example_grads(acts, ds):
    return [np.einsum("ni,nj->nij", d, a) for a, d in zip(acts, ds)]


def sample_labels(p, index, seed):
    y = np.empty(p.shape[0], dtype=np.int64)
    margin = np.empty(p.shape[0])
    us = np.empty(p.shape[0])
    for n in range(p.shape[0]):
        u = uniform(seed, int(index[n]), STREAM_FISHER_LABEL)
        c = np.cumsum(p[n])
        hit = np.nonzero(c > u)[0]
        y[n] = hit[0] if hit.size else p.shape[1] - 1
        margin[n] = np.min(np.abs(c - u))
        us[n] = u
    return y, us, margin


def eigh64(C):
    C = 0.5 * (C + C.T)
    w, V = torch.linalg.eigh(torch.from_numpy(C))
    return w.numpy(), V.numpy()


def ekfac_fit(acts, ds):
    N = acts[0].shape[0]
    out = []
    for a, d in zip(acts, ds):
        A = a.T @ a / N
        S = d.T @ d / N
        eA, QA = eigh64(A)
        eS, QS = eigh64(S)
        # Lambda via explicit per-example matrices Q_S^T DW_n Q_A (independent of the rank-one shortcut)
        DW = np.einsum("ni,nj->nij", d, a)
        R = np.einsum("ki,nkl,lj->nij", QS, DW, QA, optimize=True)
        Lam = (R ** 2).mean(axis=0)
        Lam1 = ((d @ QS) ** 2).T @ ((a @ QA) ** 2) / N
        assert np.allclose(Lam, Lam1, rtol=1e-10, atol=1e-14 * Lam.max())
        damp = DAMPING_FACTOR * Lam.mean()
        # rotation invariance: sum of Lambda equals the mean squared Frobenius norm of the gradients
        fro = (DW ** 2).sum(axis=(1, 2)).mean()
        assert np.isclose(Lam.sum(), fro, rtol=1e-10), (Lam.sum(), fro)
        out.append(dict(A=A, S=S, A_eigenvalues=eA, QA=QA, S_eigenvalues=eS, QS=QS, Lambda=Lam, damping=damp,
                        Lambda_sum=Lam.sum()))
    return out


def rotate_degenerate(fit, acts, ds, rng, rel_tol=1e-10):
    """The same fit with the eigenvectors of every (numerically) repeated eigenvalue mixed by a random orthogonal
    matrix, Lambda and damping recomputed: quantities that are basis-invariant must not change."""
    out = []
    for f, a, d in zip(fit, acts, ds):
        g = dict(f)
        for ek, qk in (("A_eigenvalues", "QA"), ("S_eigenvalues", "QS")):
            e, Q = f[ek], f[qk].copy()
            tol = rel_tol * np.abs(e).max()
            start = 0
            for i in range(1, e.size + 1):
                if i == e.size or e[i] - e[i - 1] > tol:
                    if i - start > 1:
                        M, _ = np.linalg.qr(rng.standard_normal((i - start, i - start)))
                        Q[:, start:i] = Q[:, start:i] @ M
                    start = i
            g[qk] = Q
        N = a.shape[0]
        g["Lambda"] = ((d @ g["QS"]) ** 2).T @ ((a @ g["QA"]) ** 2) / N
        g["damping"] = DAMPING_FACTOR * g["Lambda"].mean()
        out.append(g)
    return out


def precondition(fit, G):
    """G: list over layers of (B, dout, din+1) -> P of the same shape."""
    P = []
    for f, g in zip(fit, G):
        QS, QA = f["QS"], f["QA"]
        R = np.einsum("ki,nkl,lj->nij", QS, g, QA, optimize=True)
        R = R / (f["Lambda"] + f["damping"])
        P.append(np.einsum("ik,nkl,jl->nij", QS, R, QA, optimize=True))
    return P


def topk_desc(scores, k):
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    idx = np.arange(scores.shape[1])
    for q in range(scores.shape[0]):
        out[q] = np.lexsort((idx, -scores[q]))[:k]
    return out


def bottomk_asc(scores, k):
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    idx = np.arange(scores.shape[1])
    for q in range(scores.shape[0]):
        out[q] = np.lexsort((idx, scores[q]))[:k]
    return out


# ----------------------------------------------------------------------------------------------------------
def main():
    np.set_printoptions(linewidth=140)
    check_philox()
    xtr, ytr = load("train")
    xte, yte = load("t10k")

    # model
    trained = train_model(xtr, ytr, xte, yte)
    st_path = os.path.join(HERE, "mlp_small.safetensors")
    tensors = []
    for i, (W, b) in enumerate(trained):
        tensors += [(f"layers.{i}.weight", W), (f"layers.{i}.bias", b)]
    save_safetensors(st_path, tensors, {"architecture": "mlp", "dims": ",".join(map(str, DIMS)),
                                        "activation": "relu"})
    meta, loaded = load_safetensors(st_path)
    assert meta == {"architecture": "mlp", "dims": "784,24,16,10", "activation": "relu"}
    for name, arr in tensors:
        assert np.array_equal(loaded[name], arr)
    Ws = [(loaded[f"layers.{i}.weight"].astype(np.float64), loaded[f"layers.{i}.bias"].astype(np.float64))
          for i in range(len(DIMS) - 1)]
    L = len(Ws)

    # sanity: accuracy on t10k
    logits_te, _, _ = forward64(Ws, xte)
    acc = (logits_te.argmax(axis=1) == yte).mean()
    print(f"t10k accuracy: {acc:.4f}")

    train_idx = np.arange(N_TRAIN, dtype=np.int64)
    query_idx = np.arange(N_QUERY, dtype=np.int64)
    x, y = xtr[train_idx], ytr[train_idx]
    xq, yq = xte[query_idx], yte[query_idx]

    acts, ds, loss, logits, p = capture(Ws, x, y)
    p_y = p[np.arange(N_TRAIN), y]
    print(f"train examples with p_y > 0.99: {(p_y > 0.99).sum()} of {N_TRAIN}; "
          f"p_y > 0.999: {(p_y > 0.999).sum()}; train-256 accuracy {(p.argmax(1) == y).mean():.4f}")

    # /nn: per-example autograd gradients (float64 torch) for 4 train examples
    conf = np.nonzero(p_y > 0.999)[0][:2]
    order = np.argsort(p_y, kind="stable")
    least = order[0]                              # the least confident (usually misclassified)
    mid = order[N_TRAIN // 2]                     # a median one
    nn_idx = np.array(sorted(set([int(conf[0]), int(conf[1]), int(least), int(mid)])), dtype=np.int64)
    assert nn_idx.size == 4
    print(f"/nn examples {nn_idx.tolist()}, p_y {np.round(p_y[nn_idx], 6).tolist()}; "
          f"confident (p_y > 0.999): {conf.tolist()}")
    tl = []
    for W, b in Ws:
        lin = torch.nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        tl.append(lin)
    nn_logits, nn_loss, nn_grads = [], [], {f"layers.{i}.{t}": [] for i in range(L) for t in ("weight", "bias")}
    for n in nn_idx:
        for lin in tl:
            lin.zero_grad()
        z = torch_forward(tl, torch.from_numpy(x[n:n + 1].astype(np.float64)))
        lo = torch.nn.functional.cross_entropy(z, torch.from_numpy(y[n:n + 1]), reduction="sum")
        lo.backward()
        nn_logits.append(z.detach().numpy()[0])
        nn_loss.append(lo.item())
        for i, lin in enumerate(tl):
            nn_grads[f"layers.{i}.weight"].append(lin.weight.grad.numpy().copy())
            nn_grads[f"layers.{i}.bias"].append(lin.bias.grad.numpy().copy())
    nn_logits = np.array(nn_logits)
    nn_loss = np.array(nn_loss)
    nn_grads = {k: np.array(v) for k, v in nn_grads.items()}
    # autograd vs the Ds a^T factorization
    assert np.allclose(nn_logits, logits[nn_idx], rtol=1e-12, atol=1e-12)
    assert np.allclose(nn_loss, loss[nn_idx], rtol=1e-9, atol=1e-15)
    for i in range(L):
        DW = np.einsum("ni,nj->nij", ds[i][nn_idx], acts[i][nn_idx])
        sc = np.abs(DW).max()
        assert np.allclose(nn_grads[f"layers.{i}.weight"], DW[:, :, :-1], rtol=1e-7, atol=1e-9 * sc), i
        assert np.allclose(nn_grads[f"layers.{i}.bias"], DW[:, :, -1], rtol=1e-7, atol=1e-9 * sc), i

    # Fisher labels
    y_true_fisher, u_fisher, margin = sample_labels(p, train_idx, FISHER_SEED)
    # the same sampling from float32 logits (as a float32 forward pass would give)
    with torch.no_grad():
        tl32 = [torch.nn.Linear(W.shape[1], W.shape[0]) for W, _ in Ws]
        for lin, (W, b) in zip(tl32, Ws):
            lin.weight.copy_(torch.from_numpy(W.astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        z32 = torch_forward(tl32, torch.from_numpy(x)).numpy().astype(np.float64)
    y32, _, _ = sample_labels(softmax(z32), train_idx, FISHER_SEED)
    print(f"true-Fisher labels: {(y_true_fisher != y).sum()} differ from data labels; min |cumsum(p) - u| = "
          f"{margin.min():.3e}; labels from float32 logits identical: {bool(np.array_equal(y32, y_true_fisher))}")

    # query and train gradients with data labels
    aq, dq, _, qlogits, _ = capture(Ws, xq, yq)
    qpred = qlogits.argmax(axis=1)
    Gq = per_example_grads(aq, dq)
    DWm = per_example_grads(acts, ds)

    results = {}
    for kind, lab in (("empirical", y), ("true", y_true_fisher)):
        fa, fd, _, _, _ = capture(Ws, x, lab)
        fit = ekfac_fit(fa, fd)
        Pq = precondition(fit, Gq)
        per_layer = np.stack([np.einsum("qij,nij->qn", Pq[l], DWm[l]) for l in range(L)])
        scores = per_layer.sum(axis=0)
        # the same scores through the token form Ds^T P a
        alt = sum(np.einsum("ni,qij,nj->qn", ds[l], Pq[l], acts[l]) for l in range(L))
        assert np.allclose(alt, scores, rtol=1e-10, atol=1e-12 * np.abs(scores).max())
        Pm = precondition(fit, DWm)
        self_inf = sum(np.einsum("nij,nij->n", Pm[l], DWm[l]) for l in range(L))
        pair = sum(np.einsum("mij,nij->mn", Pm[l], DWm[l]) for l in range(L))
        assert np.allclose(np.diag(pair), self_inf, rtol=1e-10, atol=0)
        # symmetry of the preconditioner: score(m, n) = score(n, m)
        assert np.allclose(pair, pair.T, rtol=1e-8, atol=1e-10 * np.abs(pair).max())
        # basis invariance: mix the eigenvectors of repeated eigenvalues, recompute, compare
        rfit = rotate_degenerate(fit, fa, fd, np.random.default_rng(7))
        rPq = precondition(rfit, Gq)
        rscores = sum(np.einsum("qij,nij->qn", rPq[l], DWm[l]) for l in range(L))
        rPm = precondition(rfit, DWm)
        rself = sum(np.einsum("nij,nij->n", rPm[l], DWm[l]) for l in range(L))
        dev_s = np.abs(rscores - scores).max() / np.abs(scores).max()
        dev_i = np.abs(rself / self_inf - 1).max()
        dev_d = max(abs(rf["damping"] / f0["damping"] - 1) for rf, f0 in zip(rfit, fit))
        print(f"[{kind} Fisher] after mixing degenerate eigenvectors: max rel change scores {dev_s:.2e}, "
              f"self-influence {dev_i:.2e}, damping {dev_d:.2e}")
        assert dev_s < 1e-8 and dev_i < 1e-8 and dev_d < 1e-10
        results[kind] = dict(labels=lab, fit=fit, scores=scores, per_layer=per_layer, self_influence=self_inf,
                             topk=topk_desc(scores, TOPK), bottomk=bottomk_asc(scores, TOPK))
        print(f"[{kind} Fisher] damping per layer: {[float('%.4e' % f['damping']) for f in fit]}")
        for q in range(N_QUERY):
            top = results[kind]["topk"][q][:5]
            print(f"  query {q} label {yq[q]} (predicted {qpred[q]}): "
                  f"top-5 proponents {top.tolist()} labels {y[top].tolist()}")

    # ---- write the fixture
    h5_path = os.path.join(HERE, "mlp_small_ref.h5")
    with h5py.File(h5_path, "w") as f:
        f.attrs["generator"] = "tests/ref/make_mlp_reference.py"
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["numpy_version"] = str(np.__version__)
        f.attrs["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["model"] = "tests/ref/mlp_small.safetensors"
        f.attrs["data"] = "Fashion-MNIST: train examples 0..255, t10k examples 0..7; x = pixel/255"
        f.attrs["fisher_seed"] = np.uint64(FISHER_SEED)
        f.attrs["damping_factor"] = DAMPING_FACTOR
        f.create_dataset("train_indices", data=train_idx)
        f.create_dataset("query_indices", data=query_idx)
        f.create_dataset("train_labels", data=y)
        f.create_dataset("query_labels", data=yq)
        f.create_dataset("train_p_label", data=p_y)

        ph = f.create_group("philox")
        c0s = np.arange(4, dtype=np.uint64)
        ph.create_dataset("seed", data=np.uint64(FISHER_SEED))
        ph.create_dataset("c0", data=c0s)
        ph.create_dataset("c1", data=np.uint64(STREAM_FISHER_LABEL))
        ph.create_dataset("words", data=np.array([philox(FISHER_SEED, int(c), STREAM_FISHER_LABEL) for c in c0s],
                                                 dtype=np.uint32))
        ph.create_dataset("uniform", data=np.array([uniform(FISHER_SEED, int(c), STREAM_FISHER_LABEL) for c in c0s]))

        g = f.create_group("nn")
        g.create_dataset("example_indices", data=nn_idx)
        g.attrs["confident_indices"] = conf.astype(np.int64)
        g.create_dataset("logits", data=nn_logits)
        g.create_dataset("loss", data=nn_loss)
        g.create_dataset("p_true", data=p_y[nn_idx])
        for k, v in nn_grads.items():
            g.create_dataset(f"grad/{k}", data=v)

        for kind, r in results.items():
            g = f.create_group(f"fisher/{kind}")
            g.create_dataset("labels", data=r["labels"])
            if kind == "true":
                g.create_dataset("uniform", data=u_fisher)
                g.create_dataset("label_margin", data=margin)
            for l, fl in enumerate(r["fit"]):
                gl = g.create_group(f"layers.{l}")
                for key in ("A_eigenvalues", "S_eigenvalues", "Lambda", "S"):
                    gl.create_dataset(key, data=fl[key])
                gl.create_dataset("damping", data=fl["damping"])
                gl.create_dataset("Lambda_sum", data=fl["Lambda_sum"])
                if l == 0:
                    gl.create_dataset("A_diag", data=np.diag(fl["A"]).copy())
                    gl.create_dataset("A_block16", data=fl["A"][:16, :16].copy())
                else:
                    gl.create_dataset("A", data=fl["A"])
            g.create_dataset("scores", data=r["scores"])
            g.create_dataset("scores_per_layer", data=r["per_layer"])
            g.create_dataset("self_influence", data=r["self_influence"])
            g.create_dataset("topk_indices", data=r["topk"])
            g.create_dataset("bottomk_indices", data=r["bottomk"])
    for pth in (st_path, h5_path):
        print(f"wrote {os.path.relpath(pth)} ({os.path.getsize(pth)} bytes)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The EK-FAC influence computation of infl in PyTorch, timed per stage, for bench/run.sh.

Same model (safetensors from infl train), data (IDX, x/255), chunking and precisions as infl: float32 for per-example
work (forward, backward, scoring), float64 for factors (covariance, eigendecomposition, Lambda, preconditioning,
self-influence).  Matrix products only; the true Fisher (labels sampled from the model's softmax) as infl's default.
  ekfac_torch.py MODEL DATA_DIR [--limit N] [--queries Q] [--threads T] [--chunk B] [--reps R]
prints "stage NAME seconds S" lines (best of R) in the format of bench/stages.
"""
import argparse, gzip, json, struct, time
import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    meta = head.pop("__metadata__", {})
    dt = {"F32": np.float32, "F64": np.float64}
    out = {}
    for k, v in head.items():
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dt[v["dtype"]]).reshape(v["shape"]).astype(np.float32))
    return out, meta


def load_idx(prefix, limit=0):
    def rd(p):
        op = gzip.open if p.endswith(".gz") else open
        with op(p, "rb") as f:
            return f.read()
    import os
    ip, lp = prefix + "-images-idx3-ubyte", prefix + "-labels-idx1-ubyte"
    if not os.path.exists(ip):
        ip, lp = ip + ".gz", lp + ".gz"
    im, lb = rd(ip), rd(lp)
    n = struct.unpack(">I", im[4:8])[0]
    x = np.frombuffer(im[16:], dtype=np.uint8).reshape(n, -1).astype(np.float32) / 255.0
    y = np.frombuffer(lb[8:], dtype=np.uint8).astype(np.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


class MLP:
    """784-256-256-10 ReLU MLP with explicit forward and backward (the capture of a and ds per layer)."""

    def __init__(self, tensors):
        L = len([k for k in tensors if k.endswith(".weight")])
        self.W = [tensors[f"layers.{i}.weight"].clone() for i in range(L)]
        self.b = [tensors[f"layers.{i}.bias"].clone() for i in range(L)]

    def capture(self, x, y=None, gen=None, dtype=torch.float32):
        """a[l] (B, din+1) with the trailing 1, ds[l] (B, dout) = dLoss/ds for the summed cross-entropy; labels
        sampled from the softmax when y is None (true Fisher)."""
        W = [w.to(dtype) for w in self.W]
        b = [v.to(dtype) for v in self.b]
        B, L = x.shape[0], len(W)
        ones = torch.ones(B, 1, dtype=dtype)
        h, s, a = x.to(dtype), [], []
        for l in range(L):
            a.append(torch.cat([h, ones], 1))
            s.append(torch.addmm(b[l], h, W[l].t()))
            if l < L - 1:
                h = torch.relu(s[-1])
        p = torch.softmax(s[-1].double(), 1)
        if y is None:
            y = torch.multinomial(p, 1, generator=gen).squeeze(1)
        dz = p.clone()
        dz[torch.arange(B), y] -= 1
        ds = [None] * L
        ds[L - 1] = dz.to(dtype)
        for l in range(L - 1, 0, -1):
            ds[l - 1] = (ds[l] @ W[l]) * (s[l - 1] > 0).to(dtype)
        return a, ds


def best_of(reps, fn):
    best, out = 1e30, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--skip-train", action="store_true")
    o = ap.parse_args()
    torch.set_num_threads(o.threads)
    tensors, _ = load_safetensors(o.model)
    net = MLP(tensors)
    x, y = load_idx(o.data + "/train", o.limit)
    xq, yq = load_idx(o.data + "/t10k", o.queries)
    N, C, L = x.shape[0], o.chunk, len(net.W)
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} train_examples {N} queries {xq.shape[0]}")

    def report(name, t):
        print(f"stage {name:14s} seconds {t:10.4f}", flush=True)

    if not o.skip_train:
        def epoch():
            params = [w.clone().requires_grad_() for w in net.W] + [v.clone().requires_grad_() for v in net.b]
            opt = torch.optim.Adam(params, lr=1e-3)
            perm = torch.randperm(N)
            for s in range(0, N, 128):
                idx = perm[s:s + 128]
                h = x[idx]
                for l in range(L):
                    h = torch.addmm(params[L + l], h, params[l].t())
                    if l < L - 1:
                        h = torch.relu(h)
                loss = torch.nn.functional.cross_entropy(h, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        report("train_epoch", best_of(o.reps, epoch)[0])

    with torch.no_grad():
        report("fwd_bwd", best_of(o.reps, lambda: [net.capture(x[s:s + C], y[s:s + C]) for s in range(0, N, C)])[0])

        def covariance():
            gen = torch.Generator().manual_seed(0)
            A = [torch.zeros(w.shape[1] + 1, w.shape[1] + 1, dtype=torch.float64) for w in net.W]
            S = [torch.zeros(w.shape[0], w.shape[0], dtype=torch.float64) for w in net.W]
            for s in range(0, N, C):
                a, ds = net.capture(x[s:s + C], None, gen)
                for l in range(L):
                    a64, d64 = a[l].double(), ds[l].double()
                    A[l].addmm_(a64.t(), a64)
                    S[l].addmm_(d64.t(), d64)
            return A, S
        t, (A, S) = best_of(o.reps, covariance)
        report("covariance", t)

        def eig():
            r = []
            for l in range(L):
                eA, QA = torch.linalg.eigh((A[l] + A[l].t()) / (2 * N))
                eS, QS = torch.linalg.eigh((S[l] + S[l].t()) / (2 * N))
                r.append((QA, QS))
            return r
        t, Qs = best_of(o.reps, eig)
        report("eigensolve", t)

        def lam():
            gen = torch.Generator().manual_seed(1)
            Lm = [torch.zeros(w.shape[0], w.shape[1] + 1, dtype=torch.float64) for w in net.W]
            for s in range(0, N, C):
                a, ds = net.capture(x[s:s + C], None, gen)
                for l in range(L):
                    QA, QS = Qs[l]
                    ta = (a[l].double() @ QA) ** 2
                    td = (ds[l].double() @ QS) ** 2
                    Lm[l].addmm_(td.t(), ta)
            return [m / N for m in Lm]
        t, Lam = best_of(o.reps, lam)
        report("lambda", t)
        damp = [0.1 * m.mean() for m in Lam]

        def precondition():
            a, ds = net.capture(xq, yq, dtype=torch.float64)
            P = []
            for l in range(L):
                QA, QS = Qs[l]
                u, v = ds[l] @ QS, a[l] @ QA                                    # (Q, nd), (Q, na)
                M = u[:, :, None] * v[:, None, :] / (Lam[l] + damp[l])          # (Q, nd, na)
                P.append(torch.matmul(torch.matmul(QS, M), QA.t()))             # (Q, nd, na)
            return P
        t, P = best_of(o.reps, precondition)
        report("precondition", t)
        Q = xq.shape[0]
        P32 = [p.float().reshape(Q * p.shape[1], p.shape[2]) for p in P]       # (Q*nd, na)

        def score():
            out = torch.empty(Q, N, dtype=torch.float64)
            for s in range(0, N, C):
                a, ds = net.capture(x[s:s + C], y[s:s + C])
                acc = torch.zeros(Q, a[0].shape[0], dtype=torch.float64)
                for l in range(L):
                    T = (a[l] @ P32[l].t()).view(a[l].shape[0], Q, -1)          # (B, Q, nd)
                    acc += torch.einsum("bqi,bi->qb", T, ds[l]).double()
                out[:, s:s + C] = acc
            return out
        t, _ = best_of(o.reps, score)
        report("score", t)

        def self_influence():
            out = torch.zeros(N, dtype=torch.float64)
            Winv = [1.0 / (Lam[l] + damp[l]) for l in range(L)]
            for s in range(0, N, 512):
                a, ds = net.capture(x[s:s + 512], y[s:s + 512])
                for l in range(L):
                    QA, QS = Qs[l]
                    ta = (a[l].double() @ QA) ** 2
                    td = (ds[l].double() @ QS) ** 2
                    out[s:s + 512] += ((td @ Winv[l]) * ta).sum(1)
            return out
        report("self", best_of(o.reps, self_influence)[0])


if __name__ == "__main__":
    main()

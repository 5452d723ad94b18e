#!/usr/bin/python3
"""EK-FAC influence of a byte-level GPT-2 on text (the fortunes study) in PyTorch, timed per pass, for
bench/fortunes_gpt2.sh: the same computation as `infl fit`, `infl score` and `infl self` with `-ekfac_layers mlp`.

    ekfac_gpt2_torch.py MODEL_DIR TRAIN_DIR [--limit N] [--prompts FILE | --query-text DIR --query-indices 0:K]
                        [--threads T] [--chunk B] [--reps R] [--fisher true|empirical] [--scores OUT.npy]

The method is ALGORITHMS.md section 1 on sequences, written like tests/ref/make_ekfac_gpt2_reference.py (whose
safetensors reader and Philox sampler are imported) but batched and in infl's precisions:
  per-token work in float32 (forward, Ds by autograd, the rotations and the per-sequence gradients DW = Ds^T A),
  factors in float64: A = (1/T) sum a a^T, S = (1/T) sum Ds Ds^T over all training tokens, eigh, Lambda = (1/N) sum
  over training windows of (Q_S^T DW Q_A)^2 (rows rotated in float32, DW_rot = (Ds Q_S)^T (A Q_A) per window, squared
  and summed in float64), damping 0.1 mean(Lambda); queries captured in float64 and preconditioned in float64; scores
  <P_q, DW_m> of every training window in float32; self-influence sum (DW_rot)^2 / (Lambda + damping).
The true Fisher samples each target as infl does: u = Philox(seed, window * n_positions + position, 1), target = the
first c with cumsum(softmax(logits))_c > u, so both fit the same factors up to rounding.
Data: byte tokens of the fortune files of TRAIN_DIR (files in byte order of names, documents between "%" lines,
blank documents skipped), documents cut into windows of n_positions sharing one token (docs/FORMATS.md); the first
--limit windows.  Windows are bucketed by length (sorted) and padded: causal attention keeps padding out of the real
positions.  Prints "stage NAME seconds S tokens T" lines (median of --reps, each pass timed on its own) and, with
--scores, saves the (Q, N) score matrix.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from make_ekfac_gpt2_reference import read_safetensors, uniform  # noqa: E402

MLP = ("mlp.c_fc", "mlp.c_proj")


# ------------------------------------------------------------------------------------------------ data
def documents(path):
    """Byte strings of the documents of a fortune file or directory (infl's `fortunes` text format)."""
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in
                                                 sorted(os.listdir(path), key=os.fsencode) if not f.startswith(".")]
    docs = []
    for f in files:
        if not os.path.isfile(f):
            continue
        cur = b""
        for line in open(f, "rb").read().splitlines(keepends=True):
            if line in (b"%\n", b"%"):
                docs.append(cur)
                cur = b""
            else:
                cur += line
        docs.append(cur)
    return [d for d in docs if d.strip(b"\n")]


def windows(docs, n):
    out = []
    for d in docs:
        L = len(d)
        if L <= n:
            out.append(d)
        else:
            for k in range(math.ceil((L - 1) / (n - 1))):
                out.append(d[k * (n - 1):k * (n - 1) + n])
    return [list(w) for w in out]


def prompts(path):
    """Prompt/completion queries as infl reads -query_prompts (queries between "%" lines, a ">>>" line between the
    prompt and the completion, each part with its newlines): (tokens, targets), targets only on the completion."""
    qs, cur = [], []
    lines = open(path, "rb").read().splitlines(keepends=True)
    for i, line in enumerate(lines + [b"%"]):
        if line not in (b"%\n", b"%"):
            cur.append(line)
            continue
        if any(l.strip() for l in cur):
            k = next(j for j, l in enumerate(cur) if l in (b">>>\n", b">>>"))
            p, c = list(b"".join(cur[:k])), list(b"".join(cur[k + 1:]))
            tok = p + c
            qs.append((tok, [tok[t + 1] if len(p) <= t + 1 < len(tok) else -1 for t in range(len(tok))]))
        cur = []
    return qs


# ------------------------------------------------------------------------------------------------ model
class GPT2:
    def __init__(self, model_dir, dtype):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        t = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.P = {(k[len("transformer."):] if k.startswith("transformer.") else k): torch.tensor(v.astype(np.float32)).to(dtype)
                  for k, v in t.items() if k != "lm_head.weight" and not k.endswith(".attn.bias")}
        self.dtype = dtype
        self.L = self.cfg["n_layer"]
        C = self.cfg["n_embd"]
        self.dims = [(C, 4 * C), (4 * C, C)] * self.L          # (din, dout) of the captured layers, l = 2 i + k

    def capture(self, batch, targets, want_loss=False):
        """batch (B, T) int64 tokens (padded), targets (B, T) with -1 where no loss: per captured layer a (B, T, din+1)
        and Ds (B, T, dout) = d(summed loss of the window)/d(layer output)."""
        P, cfg, dt = self.P, self.cfg, self.dtype
        B, T = batch.shape
        C, NH, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
        hs = C // NH
        ln = torch.nn.functional.layer_norm
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        x = (P["wte.weight"][batch] + P["wpe.weight"][:T]).requires_grad_(True)
        ins, outs = [], []
        for i in range(self.L):
            h = f"h.{i}."
            qkv = ln(x, (C,), P[h + "ln_1.weight"], P[h + "ln_1.bias"], eps) @ P[h + "attn.c_attn.weight"] + P[h + "attn.c_attn.bias"]
            q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in qkv.split(C, dim=2))
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ P[h + "attn.c_proj.weight"] + P[h + "attn.c_proj.bias"]
            a0 = ln(x, (C,), P[h + "ln_2.weight"], P[h + "ln_2.bias"], eps)
            s0 = a0 @ P[h + "mlp.c_fc.weight"] + P[h + "mlp.c_fc.bias"]
            a1 = 0.5 * s0 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (s0 + 0.044715 * s0 ** 3)))
            s1 = a1 @ P[h + "mlp.c_proj.weight"] + P[h + "mlp.c_proj.bias"]
            x = x + s1
            ins += [a0, a1]
            outs += [s0, s1]
        z = ln(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps) @ P["wte.weight"].T
        valid = targets >= 0
        loss = torch.nn.functional.cross_entropy(z[valid], targets[valid], reduction="sum")
        ds = torch.autograd.grad(loss, outs)
        one = torch.ones(B, T, 1, dtype=dt)
        a = [torch.cat([u.detach(), one], 2) for u in ins]
        return a, list(ds), (z.detach() if not want_loss else float(loss))

    def logits(self, batch):
        with torch.no_grad():
            P, cfg = self.P, self.cfg
            B, T = batch.shape
            C, NH, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
            hs, ln = C // NH, torch.nn.functional.layer_norm
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            x = P["wte.weight"][batch] + P["wpe.weight"][:T]
            for i in range(self.L):
                h = f"h.{i}."
                qkv = ln(x, (C,), P[h + "ln_1.weight"], P[h + "ln_1.bias"], eps) @ P[h + "attn.c_attn.weight"] + P[h + "attn.c_attn.bias"]
                q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in qkv.split(C, dim=2))
                att = ((q @ k.transpose(-1, -2)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(-1)
                x = x + (att @ v).transpose(1, 2).reshape(B, T, C) @ P[h + "attn.c_proj.weight"] + P[h + "attn.c_proj.bias"]
                s0 = ln(x, (C,), P[h + "ln_2.weight"], P[h + "ln_2.bias"], eps) @ P[h + "mlp.c_fc.weight"] + P[h + "mlp.c_fc.bias"]
                x = x + (0.5 * s0 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (s0 + 0.044715 * s0 ** 3)))) @ P[h + "mlp.c_proj.weight"] + P[h + "mlp.c_proj.bias"]
            return ln(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps) @ P["wte.weight"].T


def pad(seqs, tgts):
    T = max(len(s) for s in seqs)
    tok = torch.zeros(len(seqs), T, dtype=torch.int64)
    tg = torch.full((len(seqs), T), -1, dtype=torch.int64)
    for b, (s, g) in enumerate(zip(seqs, tgts)):
        tok[b, :len(s)] = torch.tensor(s)
        tg[b, :len(g)] = torch.tensor(g)
    return tok, tg


def next_targets(s):
    return s[1:] + [-1]


def sampled_targets(logits, index, lengths, seed, n_positions):
    """True-Fisher targets (B, T) of windows `index` (global) from float32 logits (B, T, V), as infl samples them."""
    B, T, V = logits.shape
    tg = torch.full((B, T), -1, dtype=torch.int64)
    cum = torch.softmax(logits.double(), -1).cumsum(-1)
    for b in range(B):
        n = lengths[b] - 1
        if n <= 0:
            continue
        u = torch.from_numpy(uniform(seed, np.arange(n, dtype=np.uint64) + np.uint64(index[b] * n_positions), 1))
        y = torch.searchsorted(cum[b, :n].contiguous(), u[:, None], right=True)[:, 0]
        tg[b, :n] = y.clamp(max=V - 1)
    return tg


# ------------------------------------------------------------------------------------------------ EK-FAC
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("train")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--prompts")
    ap.add_argument("--query-text")
    ap.add_argument("--query-indices", default="0:5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--fisher", default="true", choices=("true", "empirical"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--damping-factor", type=float, default=0.1)
    ap.add_argument("--scores")
    ap.add_argument("--self-out")
    o = ap.parse_args()
    torch.set_num_threads(o.threads)
    m32, m64 = GPT2(o.model, torch.float32), GPT2(o.model, torch.float64)
    NP = m32.cfg["n_positions"]
    train = windows(documents(o.train), NP)
    if o.limit:
        train = train[:o.limit]
    N, Ttok = len(train), sum(len(w) for w in train)
    if o.prompts:
        queries = prompts(o.prompts)
    else:
        lo, hi = (int(v) for v in o.query_indices.split(":"))
        queries = [(w, next_targets(w)) for w in windows(documents(o.query_text), NP)[lo:hi]]
    Q, nl = len(queries), len(m32.dims)
    order = sorted(range(N), key=lambda i: len(train[i]))     # length buckets
    chunks = [order[s:s + o.chunk] for s in range(0, N, o.chunk)]
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} train_windows {N} tokens {Ttok} queries {Q} "
          f"layers {nl} fisher {o.fisher}", flush=True)

    def batch(idx, targets=None):
        seqs = [train[i] for i in idx]
        tok, tg = pad(seqs, [next_targets(s) for s in seqs])
        return tok, tg, torch.tensor([len(s) for s in seqs])

    def fisher_targets(idx, tok, tg, lens):
        if o.fisher == "empirical":
            return tg
        return sampled_targets(m32.logits(tok), idx, lens.tolist(), o.seed, NP)

    def rows(x, lens):   # (B, T, w) padded -> (sum lens, w)
        return torch.cat([x[b, :lens[b]] for b in range(len(lens))])

    def zero_pad(x, lens):   # padded rows set to 0 (Ds there is 0 already; a is not)
        m = (torch.arange(x.shape[1])[None, :] < lens[:, None]).to(x.dtype)
        return x * m[:, :, None]

    times = {}

    def timed(name, fn):
        ts, out = [], None
        for _ in range(o.reps):
            t0 = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t0)
        times[name] = statistics.median(ts)
        print(f"stage {name:14s} seconds {times[name]:10.4f} tokens {Ttok} all {' '.join(f'{t:.3f}' for t in ts)}", flush=True)
        return out

    def covariance():
        A = [torch.zeros(di + 1, di + 1, dtype=torch.float64) for di, _ in m32.dims]
        S = [torch.zeros(do, do, dtype=torch.float64) for _, do in m32.dims]
        for idx in chunks:
            tok, tg, lens = batch(idx)
            a, ds, _ = m32.capture(tok, fisher_targets(idx, tok, tg, lens))
            for l in range(nl):
                a64, d64 = rows(a[l], lens).double(), rows(ds[l], lens).double()
                A[l].addmm_(a64.T, a64)
                S[l].addmm_(d64.T, d64)
        return [x / Ttok for x in A], [x / Ttok for x in S]
    A, S = timed("covariance", covariance)

    def eig():
        return [(torch.linalg.eigh((A[l] + A[l].T) / 2)[1], torch.linalg.eigh((S[l] + S[l].T) / 2)[1]) for l in range(nl)]
    Qs = timed("eigensolve", eig)
    Q32 = [(qa.float(), qs.float()) for qa, qs in Qs]

    def rotated_dw(a, ds, lens, l):
        """(B, nd, na) float32: Q_S^T DW Q_A of each window, from rows rotated in float32."""
        QA, QS = Q32[l]
        return (ds[l] @ QS).transpose(1, 2) @ (zero_pad(a[l], lens) @ QA)

    def lam():
        Lm = [torch.zeros(do, di + 1, dtype=torch.float64) for di, do in m32.dims]
        for idx in chunks:
            tok, tg, lens = batch(idx)
            a, ds, _ = m32.capture(tok, fisher_targets(idx, tok, tg, lens))
            for l in range(nl):
                Lm[l] += (rotated_dw(a, ds, lens, l).double() ** 2).sum(0)
        return [x / N for x in Lm]
    Lam = timed("lambda", lam)
    damp = [o.damping_factor * float(x.mean()) for x in Lam]
    times["fit"] = times["covariance"] + times["eigensolve"] + times["lambda"]

    def precondition():
        tok, tg = pad([q[0] for q in queries], [q[1] for q in queries])
        lens = torch.tensor([len(q[0]) for q in queries])
        a, ds, _ = m64.capture(tok, tg)
        P = []
        for l in range(nl):
            QA, QS = Qs[l]
            G = ds[l].transpose(1, 2) @ zero_pad(a[l], lens)                       # (Q, nd, na)
            P.append(QS @ ((QS.T @ G @ QA) / (Lam[l] + damp[l])) @ QA.T)
        return P
    P = timed("precondition", precondition)
    P32 = [p.reshape(Q, -1).float() for p in P]                                    # (Q, nd*na)

    def score():
        out = torch.zeros(Q, N, dtype=torch.float64)
        for idx in chunks:
            tok, tg, lens = batch(idx)
            a, ds, _ = m32.capture(tok, tg)
            acc = torch.zeros(Q, len(idx), dtype=torch.float32)
            for l in range(nl):
                DW = ds[l].transpose(1, 2) @ zero_pad(a[l], lens)                   # (B, nd, na) per window
                acc += P32[l] @ DW.reshape(len(idx), -1).T
            out[:, idx] = acc.double()
        return out
    scores = timed("score", score)

    def self_influence():
        out = torch.zeros(N, dtype=torch.float64)
        W = [1.0 / (Lam[l] + damp[l]) for l in range(nl)]
        for idx in chunks:
            tok, tg, lens = batch(idx)
            a, ds, _ = m32.capture(tok, tg)
            for l in range(nl):
                out[idx] += ((rotated_dw(a, ds, lens, l).double() ** 2) * W[l]).sum((1, 2))
        return out
    selfi = timed("self", self_influence)
    if o.scores:
        np.save(o.scores, scores.numpy())
    if o.self_out:
        np.save(o.self_out, selfi.numpy())


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Reference fixture for EK-FAC on sequences (tests/test_ekfac_gpt2.c): an independent float64 PyTorch/numpy
implementation of EK-FAC influence (Grosse et al. 2023; docs ALGORITHMS.md section 1) on the tiny GPT-2 of
tests/ref/gpt2_tiny, with both Fisher kinds.

Run by hand (CI never runs it), from the repository root:

    /usr/bin/python3 tests/ref/make_ekfac_gpt2_reference.py

Reads tests/ref/gpt2_tiny/{config.json, model.safetensors} (the committed float32 weights) and writes
tests/ref/ekfac_gpt2_ref.h5.  The GPT-2 forward pass is the float64 one of make_gpt2_reference.py (itself written
from the Hugging Face definition, checked there against autograd); everything EK-FAC is written here from the
formulas:

  per linear layer l (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj of each block; l = 4 i + k), per token t:
    a_t (din+1) the layer input with a trailing 1, Ds_t (dout) = d(loss of t's sequence)/d(layer output at t)
  A = (1/T) sum over all training tokens of a a^T,  S = (1/T) sum Ds Ds^T            (T = training tokens)
  A = Q_A diag(eA) Q_A^T, S = Q_S diag(eS) Q_S^T                                       (eigh, float64)
  Lambda = (1/N) sum over the N training sequences of (Q_S^T DW Q_A)^2, DW = sum_t Ds_t a_t^T
  damping = 0.1 mean(Lambda)
  P(G) = Q_S [(Q_S^T G Q_A) / (Lambda + damping)] Q_A^T
  score_l(q, m) = <P_l(G_q), DW_l(m)>, token term_l(q, t) = Ds_t^T P_l(G_q) a_t, self_l(m) = <P_l(DW_m), DW_m>
The loss of a sequence is the next-token cross-entropy SUMMED over its positions.  The Fisher kind changes only
the targets of the factor passes (S, Lambda, damping): empirical = the data's next tokens; true = targets sampled
from the model: at position p < T-1 of training sequence b, u = Uniform(seed, b n_positions + p, 1) with the
counter-based Philox4x32-10 generator (written here in numpy from Salmon et al. 2011 and checked against the
Random123 known-answer vectors), target = the first token c with cumsum(softmax(logits))_c > u.  Query gradients,
training gradients in scores and self-influence always use the data's next tokens.
"""
import datetime
import json
import os
import struct
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_gpt2_reference as g2  # noqa: E402  (the float64 GPT-2 forward pass)

MODEL_DIR = os.path.join(HERE, "gpt2_tiny")
OUT = os.path.join(HERE, "ekfac_gpt2_ref.h5")
TRAIN_LENGTHS = [16, 5, 1, 9, 12, 3, 16, 7, 2, 11, 14, 6, 10, 4, 8, 13]   # 16 sequences, 137 tokens
TRAIN_GREEDY = [0, 6, 10]       # continued by the model's arg max: confidently predicted tokens
QUERY_LENGTHS = [16, 9, 12]
QUERY_GREEDY = [0]
QUERY_COPY = {2: 4}             # query 2 is a copy of training sequence 4 (a strong proponent)
SEED0 = 1234                    # first true-Fisher seed tried (see sample_targets)
MIN_MARGIN = 1e-4               # every sampled u this far from a cumsum boundary (float32 logits sample the same)
DAMPING_FACTOR = 0.1
LINEAR = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]

# ---------------------------------------------------------------------------------------------- Philox4x32-10
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
LO = np.uint64(0xFFFFFFFF)


def philox_words(seed, c0, c1):
    """Philox4x32-10 for arrays of 64-bit counters c0, c1 and a 64-bit key: the 4 output words (uint64 arrays
    holding 32-bit values).  Counter words (lo(c0), hi(c0), lo(c1), hi(c1)), key words (lo(seed), hi(seed))."""
    c0 = np.asarray(c0, dtype=np.uint64)
    c1 = np.broadcast_to(np.asarray(c1, dtype=np.uint64), c0.shape)
    x0, x1, x2, x3 = c0 & LO, c0 >> np.uint64(32), c1 & LO, c1 >> np.uint64(32)
    k0, k1 = np.uint64(seed) & LO, np.uint64(seed) >> np.uint64(32)
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0, p1 = M0 * x0, M1 * x2          # 32 x 32 -> 64 bits, exact in uint64
            x0, x1, x2, x3 = ((p1 >> np.uint64(32)) ^ x1 ^ k0), p1 & LO, ((p0 >> np.uint64(32)) ^ x3 ^ k1), p0 & LO
            k0, k1 = (k0 + W0) & LO, (k1 + W1) & LO
    return x0, x1, x2, x3


def uniform(seed, c0, c1):
    """((w0 | w1 << 32) >> 11) 2^-53 in [0, 1)."""
    w0, w1, _, _ = philox_words(seed, c0, c1)
    return ((w0 | (w1 << np.uint64(32))) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def check_philox():
    """Random123 kat_vectors, philox4x32 10: counter (4 words), key (2 words) -> 4 words."""
    kat = [((0, 0), 0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((2 ** 64 - 1, 2 ** 64 - 1), 2 ** 64 - 1, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x85A308D3243F6A88, 0x0370734413198A2E), 0x299F31D0A4093822, (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for (c0, c1), key, want in kat:
        got = tuple(int(w) for w in philox_words(key, np.array([c0], np.uint64), np.array([c1], np.uint64)))
        assert got == want, f"Philox known-answer test failed: {[hex(v) for v in got]}"


# ---------------------------------------------------------------------------------------------- the model
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        assert h["dtype"] == "F32", (name, h["dtype"])
        lo, hi = h["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], "<f4").reshape(h["shape"])
    return out


def load_model():
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        cfg = json.load(f)
    for k, v in g2.CFG.items():
        assert cfg[k] == v, (k, cfg[k], v)
    t = read_safetensors(os.path.join(MODEL_DIR, "model.safetensors"))
    P = {}
    for name, a in t.items():
        if name == "lm_head.weight" or name.endswith(".attn.bias"):
            continue
        P[name[len("transformer."):] if name.startswith("transformer.") else name] = torch.tensor(a.astype(np.float64))
    assert np.array_equal(t["lm_head.weight"], t["transformer.wte.weight"])
    return P


def next_targets(seq):
    return [seq[t + 1] if t + 1 < len(seq) else -1 for t in range(len(seq))]


def capture(P, seq, targets):
    """One sequence: per layer (a (T, din+1), Ds (T, dout)), the summed loss and the float64 logits; Ds of a sequence
    without targets is zero (its loss is the empty sum)."""
    keep = {}
    if not next(iter(P.values())).requires_grad:   # the layer outputs need a graph to take their gradient
        P = {k: v.detach().requires_grad_(True) for k, v in P.items()}
    z = g2.forward(P, torch.tensor(seq), keep)
    T = len(seq)
    loss = 0.0
    if any(y >= 0 for y in targets):
        lsum = g2.token_losses(z, targets).sum()
        lsum.backward()
        loss = float(lsum)
    caps = []
    for i in range(g2.CFG["n_layer"]):
        for k in range(4):
            inp, out = keep[(i, k)]
            a = torch.cat([inp, torch.ones(T, 1, dtype=torch.float64)], 1)
            ds = out.grad.detach().clone() if out.grad is not None else torch.zeros_like(out.detach())
            caps.append((a, ds))
    return caps, loss, z.detach()


def check_capture_gradient(P, seq):
    """sum_t Ds_t a_t^T equals autograd's gradient [W^T | b] of every captured layer (the seam's definition)."""
    Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
    caps, _, _ = capture(Pg, seq, next_targets(seq))
    for l, (a, ds) in enumerate(caps):
        name = f"h.{l // 4}.{LINEAR[l % 4]}"
        ref = torch.cat([Pg[name + ".weight"].grad.T, Pg[name + ".bias"].grad[:, None]], 1)
        err = float((ds.T @ a - ref).abs().max() / ref.abs().max())
        assert err < 1e-12, (name, err)


def sample_targets(logits, b, seed, n_positions):
    """True-Fisher targets of training sequence b from its float64 logits (T, V); also each row's u and margin
    min_c |cumsum(p)_c - u|."""
    T = logits.shape[0]
    tg, us, margins = [-1] * T, [0.0] * T, [np.inf] * T
    if T > 1:
        u = uniform(seed, np.arange(T - 1, dtype=np.uint64) + np.uint64(b * n_positions), 1)
        for t in range(T - 1):
            z = logits[t].numpy()
            e = np.exp(z - z.max())
            p = e / e.sum()
            cum = np.cumsum(p)
            above = np.nonzero(cum > u[t])[0]
            tg[t] = int(above[0]) if len(above) else int(np.nonzero(p > 0)[0][-1])
            us[t] = float(u[t])
            margins[t] = float(np.abs(cum - u[t]).min())
    return tg, us, margins


# ---------------------------------------------------------------------------------------------- EK-FAC
def eigh_fixed(X):
    """Eigenvalues ascending, eigenvectors with the entry of largest magnitude of each column positive."""
    X = (X + X.T) / 2
    e, Q = torch.linalg.eigh(X)
    idx = Q.abs().argmax(0)
    s = torch.sign(Q[idx, torch.arange(Q.shape[1])])
    s[s == 0] = 1
    return e, Q * s


def fit(caps_by_seq, Ttot):
    """caps_by_seq: per training sequence the list of per-layer (a, Ds).  Per layer: A, S, eigen, Lambda, damping."""
    N, L = len(caps_by_seq), len(caps_by_seq[0])
    out = []
    for l in range(L):
        A = sum(c[l][0].T @ c[l][0] for c in caps_by_seq) / Ttot
        S = sum(c[l][1].T @ c[l][1] for c in caps_by_seq) / Ttot
        eA, QA = eigh_fixed(A)
        eS, QS = eigh_fixed(S)
        Lam = torch.zeros(S.shape[0], A.shape[0], dtype=torch.float64)
        for c in caps_by_seq:
            a, ds = c[l]
            Lam += (QS.T @ (ds.T @ a) @ QA) ** 2
        Lam /= N
        out.append(dict(A=(A + A.T) / 2, S=(S + S.T) / 2, eA=eA, QA=QA, eS=eS, QS=QS, Lambda=Lam,
                        damping=DAMPING_FACTOR * float(Lam.mean())))
    return out


def precondition(f, G):
    M = f["QS"].T @ G @ f["QA"]
    return f["QS"] @ (M / (f["Lambda"] + f["damping"])) @ f["QA"].T


def cluster_slices(e, rel):
    """Consecutive eigenvalues closer than rel * max|e| form one cluster: list of slices."""
    cut, lo, out = rel * float(e.abs().max()), 0, []
    for j in range(1, len(e) + 1):
        if j == len(e) or float(e[j] - e[j - 1]) > cut:
            out.append(slice(lo, j))
            lo = j
    return out


def random_mix(Q, slices, gen):
    """Q with the eigenvectors of each cluster of several mixed by a random orthogonal matrix."""
    Q = Q.clone()
    for s in slices:
        n = s.stop - s.start
        if n > 1:
            R, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
            Q[:, s] = Q[:, s] @ R
    return Q


def influence(f_layers, q_caps, t_caps):
    """Per layer: P (Q, nd, na), scores (Q, N), token terms (Q, Ttot), self (N), ||P||^2 (Q)."""
    res = []
    for l, f in enumerate(f_layers):
        P = torch.stack([precondition(f, c[l][1].T @ c[l][0]) for c in q_caps])
        DW = [c[l][1].T @ c[l][0] for c in t_caps]
        scores = torch.stack([torch.stack([(Pq * G).sum() for G in DW]) for Pq in P])
        tok = torch.stack([torch.cat([((c[l][1] @ Pq) * c[l][0]).sum(1) for c in t_caps]) for Pq in P])
        selfi = torch.stack([(precondition(f, G) * G).sum() for G in DW])
        res.append(dict(P=P, scores=scores, tokens=tok, self=selfi, qnorm2=(P ** 2).sum((1, 2))))
    return res


def check_explicit_inverse(f, G):
    """P(G) against the inverse of the EK-FAC matrix (Q_S x Q_A) diag(Lambda + damping) (Q_S x Q_A)^T formed
    explicitly (row-major vec of G (dout, din+1))."""
    K = torch.kron(f["QS"], f["QA"])
    F = K @ torch.diag((f["Lambda"] + f["damping"]).reshape(-1)) @ K.T
    x = torch.linalg.solve(F, G.reshape(-1)).reshape(G.shape)
    P = precondition(f, G)
    err = float((P - x).abs().max() / x.abs().max())
    assert err < 1e-9, err
    return err


def main():
    check_philox()
    P = load_model()
    V, NP, L = g2.CFG["vocab_size"], g2.CFG["n_positions"], 4 * g2.CFG["n_layer"]

    rng = np.random.default_rng(13)

    def make(lengths, greedy):
        seqs = []
        with torch.no_grad():
            for b, T in enumerate(lengths):
                if b in greedy:
                    s = [int(rng.integers(V))]
                    while len(s) < T:
                        s.append(int(g2.forward(P, torch.tensor(s))[-1].argmax()))
                else:
                    s = [int(x) for x in rng.integers(V, size=T)]
                seqs.append(s)
        return seqs

    train = make(TRAIN_LENGTHS, TRAIN_GREEDY)
    query = make(QUERY_LENGTHS, QUERY_GREEDY)
    for q, m in QUERY_COPY.items():
        assert len(query[q]) == len(train[m])
        query[q] = list(train[m])
    N = len(train)
    Ttot = sum(len(s) for s in train)
    toff = np.cumsum([0] + [len(s) for s in train])

    check_capture_gradient(P, train[0])
    check_capture_gradient(P, query[1])

    # data-target captures of training and query sequences; float64 logits of the training sequences
    t_data, logits = [], []
    for s in train:
        c, _, z = capture(P, s, next_targets(s))
        t_data.append(c)
        logits.append(z)
    q_data = [capture(P, s, next_targets(s))[0] for s in query]

    # true-Fisher targets: the first seed from SEED0 whose every u is MIN_MARGIN from a cumsum boundary, and a float32
    # forward pass (the C code's single precision) samples the same targets
    P32 = {k: v.float() for k, v in P.items()}
    seed = SEED0
    while True:
        samp = [sample_targets(logits[b], b, seed, NP) for b in range(N)]
        margin = min(min(m) for _, _, m in samp)
        if margin >= MIN_MARGIN:
            break
        seed += 1
    with torch.no_grad():
        for b, s in enumerate(train):
            z32 = g2.forward(P32, torch.tensor(s)).double()
            assert sample_targets(z32, b, seed, NP)[0] == samp[b][0], f"float32 logits sample other targets (seq {b})"
    t_true = [capture(P, s, samp[b][0])[0] for b, s in enumerate(train)]
    nsame = sum(int(y == d) for b, s in enumerate(train) for y, d in zip(samp[b][0], next_targets(s)) if d >= 0)
    print(f"true Fisher: seed {seed}, smallest margin {margin:.3e}; {nsame} of {Ttot - N} sampled targets equal the data's")

    fits, infl = {}, {}
    for kind, caps in (("empirical", t_data), ("true", t_true)):
        f = fit(caps, Ttot)
        fits[kind] = f
        infl[kind] = influence(f, q_data, t_data)
        # self-checks
        for l in range(L):
            lam_sum = float(f[l]["Lambda"].sum())
            ref = sum(float(((c[l][1].T @ c[l][0]) ** 2).sum()) for c in caps) / N
            assert abs(lam_sum - ref) <= 1e-12 * ref, (kind, l, lam_sum, ref)   # total = mean ||DW||^2
            r = infl[kind][l]
            for b in range(N):   # token terms sum to the sequence's score
                d = float((r["tokens"][:, toff[b]:toff[b + 1]].sum(1) - r["scores"][:, b]).abs().max())
                assert d <= 1e-12 * float(r["scores"].abs().max()), (kind, l, b, d)
            # train x train pairwise matrix: symmetric, diagonal = self-influence
            DW = [c[l][1].T @ c[l][0] for c in t_data]
            PW = torch.stack([precondition(f[l], G) for G in DW])
            M = torch.stack([torch.stack([(Pm * G).sum() for G in DW]) for Pm in PW])
            assert float((M - M.T).abs().max()) <= 1e-12 * float(M.abs().max())
            assert float((torch.diag(M) - r["self"]).abs().max()) <= 1e-12 * float(r["self"].abs().max())
        e_inv = check_explicit_inverse(f[1], q_data[0][1][1].T @ q_data[0][1][0])   # layer 1 (h.0.attn.c_proj), 1056 x 1056
        print(f"{kind} Fisher: P against the explicit EK-FAC matrix solve (layer 1): {e_inv:.1e}")
        # basis invariance: eigenvectors inside clusters of close eigenvalues mixed at random change nothing beyond
        # rounding (the zero eigenspaces hold no training gradient, so Lambda there is zero in any basis)
        gen = torch.Generator().manual_seed(7)
        for l in range(L):
            fl = dict(f[l])
            fl["QA"] = random_mix(f[l]["QA"], cluster_slices(f[l]["eA"], 1e-13), gen)
            fl["QS"] = random_mix(f[l]["QS"], cluster_slices(f[l]["eS"], 1e-13), gen)
            fl["Lambda"] = sum((fl["QS"].T @ (c[l][1].T @ c[l][0]) @ fl["QA"]) ** 2 for c in caps) / N
            fl["damping"] = DAMPING_FACTOR * float(fl["Lambda"].mean())
            r2 = influence([fl], [[c[l]] for c in q_data], [[c[l]] for c in t_data])[0]
            d = float((r2["scores"] - infl[kind][l]["scores"]).abs().max() / infl[kind][l]["scores"].abs().max())
            assert d < 1e-11, (kind, l, d)

    # report: damping, gaps, conditioning
    for kind in ("empirical", "true"):
        for l in range(L):
            f = fits[kind][l]
            lam = f["Lambda"]
            gapA = [s.stop - s.start for s in cluster_slices(f["eA"], 1e-10)]
            gapS = [s.stop - s.start for s in cluster_slices(f["eS"], 1e-10)]
            print(f"{kind:9s} layer {l} (h.{l // 4}.{LINEAR[l % 4]:11s}): damping {f['damping']:.4e}, Lambda max/mean "
                  f"{float(lam.max() / lam.mean()):.1f}, clusters (1e-10) of A {max(gapA)} max, of S {max(gapS)} max; "
                  f"eA min/max {float(f['eA'].min() / f['eA'].max()):.1e}")

    def sel_sum(r, key, layers):
        return sum(r[l][key] for l in layers)

    with h5py.File(OUT, "w") as h:
        h.attrs["script"] = "tests/ref/make_ekfac_gpt2_reference.py"
        h.attrs["torch"] = str(torch.__version__)
        h.attrs["numpy"] = np.__version__
        h.attrs["date"] = datetime.date.today().isoformat()
        h.attrs["model"] = "tests/ref/gpt2_tiny"
        h.attrs["damping_factor"] = DAMPING_FACTOR
        h["train/tokens"] = np.array([t for s in train for t in s], np.int64)
        h["train/offsets"] = toff.astype(np.int64)
        h["query/tokens"] = np.array([t for s in query for t in s], np.int64)
        h["query/offsets"] = np.cumsum([0] + [len(s) for s in query]).astype(np.int64)
        h["layer_din"] = np.array([c[0].shape[1] - 1 for c in t_data[0]], np.int64)
        h["layer_dout"] = np.array([c[1].shape[1] for c in t_data[0]], np.int64)
        h["train_norm2"] = np.array([[float(((c[l][1].T @ c[l][0]) ** 2).sum()) for c in t_data] for l in range(L)])
        h["token_norm2"] = np.array([np.concatenate([((c[l][1] ** 2).sum(1) * (c[l][0] ** 2).sum(1)).numpy() for c in t_data]) for l in range(L)])
        h["fisher/true/seed"] = np.int64(seed)
        h["fisher/true/targets"] = np.array([y for b in range(N) for y in samp[b][0]], np.int64)
        h["fisher/true/uniform"] = np.array([u for b in range(N) for u in samp[b][1]])
        h["fisher/true/margin"] = np.float64(margin)
        for l in range(L):
            h[f"A/{l}"] = fits["empirical"][l]["A"].numpy()
        for kind in ("empirical", "true"):
            g = h.require_group(f"fisher/{kind}")
            for l in range(L):
                f = fits[kind][l]
                gl = g.require_group(f"layers/{l}")
                gl["S"] = f["S"].numpy()
                gl["eigenvalues_A"] = f["eA"].numpy()
                gl["eigenvalues_S"] = f["eS"].numpy()
                gl["Lambda"] = f["Lambda"].numpy()
                gl["Lambda_sum"] = np.float64(f["Lambda"].sum())
                gl["damping"] = np.float64(f["damping"])
                gl["kappa"] = np.float64((f["Lambda"].max() + f["damping"]) / (f["Lambda"].min() + f["damping"]))
                gl["P_query0"] = infl[kind][l]["P"][0].numpy()   # (dout, din+1); the other queries enter the scores
            r = infl[kind]
            g["scores_per_layer"] = torch.stack([x["scores"] for x in r]).numpy()
            g["token_scores_per_layer"] = torch.stack([x["tokens"] for x in r]).numpy()
            g["self_per_layer"] = torch.stack([x["self"] for x in r]).numpy()
            g["query_norm2"] = torch.stack([x["qnorm2"] for x in r]).numpy()
            for name, ks in (("all", (0, 1, 2, 3)), ("mlp", (2, 3)), ("attn", (0, 1))):
                layers = [l for l in range(L) if l % 4 in ks]
                g[f"selection/{name}/layers"] = np.array(layers, np.int64)
                g[f"selection/{name}/scores"] = sel_sum(r, "scores", layers).numpy()
                g[f"selection/{name}/token_scores"] = sel_sum(r, "tokens", layers).numpy()
                g[f"selection/{name}/self_influence"] = sel_sum(r, "self", layers).numpy()
        # a few numbers for the record
        s = h["fisher/empirical/selection/all/scores"][()]
        print("empirical Fisher, all layers: top proponent of each query:", s.argmax(1).tolist(),
              "; query 2 (a copy of train 4) ranks it", int((s[2] > s[2, 4]).sum()) + 1)
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

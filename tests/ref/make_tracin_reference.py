"""Reference values of TracIn through captures (include/infl/score.h, InflScorerSetTracIn; Pruthi et al. 2020, TracInCP):

    score(q, m) = sum over checkpoints c of eta_c <g_c(q), g_c(m)>,    self(m) = sum over c of eta_c ||g_c(m)||^2,

g_c the gradient of an example's summed loss (its data label; the next tokens of a sequence) with respect to every
captured linear layer (weight and bias) of checkpoint c, computed here by torch autograd in float64 from the float32
weights of the checkpoint files, one example at a time (no capture formula, no projection).

Checkpoints: checkpoint 1 is tests/ref/mlp_small.safetensors (gpt2_tiny), checkpoint 2 the same weights plus
Gaussian noise of 0.1 times each tensor's standard deviation (torch.manual_seed(5)), rounded to float32.  The MLP
checkpoints are written with their learning rates in the safetensors metadata as infl train -checkpoint_every
writes them (train_lr 0.05 and 0.02, train_epoch, train_step); the GPT-2 checkpoint 2 records train_lr 0.01 (its
checkpoint 1, gpt2_tiny, records none: the tests give 0.03 and 0.01).

Data: MLP train = Fashion-MNIST train 0..63, queries t10k 0..3; GPT-2: the 4 sequences of gpt2_tiny_tokens.h5 as
training set and as queries.

Run by hand from the repository root (CI never runs it), about 5 s:  /usr/bin/python3 tests/ref/make_tracin_reference.py
Writes tests/ref/mlp_tracin_ckpt{1,2}.safetensors, tests/ref/gpt2_tiny_ckpt2/ and tests/ref/tracin_ref.h5.
"""
import datetime
import json
import os
import shutil
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_mlp_reference as mref  # noqa: E402
import make_gpt2_reference as gref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N, Q = 64, 4
ETA_MLP = [0.05, 0.02]
ETA_GPT2 = [0.03, 0.01]


def perturbed(tensors, seed):
    torch.manual_seed(seed)
    out = {}
    for name in sorted(tensors):
        a = torch.from_numpy(np.asarray(tensors[name], dtype=np.float32))
        out[name] = (a + 0.1 * a.std() * torch.randn(a.shape, dtype=torch.float32)).numpy()
    return out


def mlp_grads(W, x, y):
    """(n, P) per-example gradients of the summed cross-entropy w.r.t. every layer's weight and bias, by autograd in
    float64; layers in order, weight (dout, din) then bias."""
    L = len(DIMS) - 1
    params = []
    for i in range(L):
        params.append(torch.tensor(W[f"layers.{i}.weight"], dtype=torch.float64, requires_grad=True))
        params.append(torch.tensor(W[f"layers.{i}.bias"], dtype=torch.float64, requires_grad=True))
    rows = []
    for n in range(x.shape[0]):
        h = torch.tensor(x[n:n + 1], dtype=torch.float64)
        for i in range(L):
            h = h @ params[2 * i].T + params[2 * i + 1]
            if i < L - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, torch.tensor([int(y[n])]), reduction="sum")
        g = torch.autograd.grad(loss, params)
        rows.append(torch.cat([t.reshape(-1) for t in g]).numpy())
    return np.array(rows)


DIMS = mref.DIMS


def gpt2_grads(P32, seqs):
    """(n, P) per-sequence gradients of the summed next-token loss w.r.t. the captured layers (c_attn, c_proj, c_fc,
    mlp c_proj of every block: weight and bias) by autograd in float64."""
    P = {k: torch.tensor(v, dtype=torch.float64) for k, v in P32.items()}
    names = []
    for i in range(gref.CFG["n_layer"]):
        for k in range(4):
            names += [f"h.{i}.{gref.LINEAR[k]}.weight", f"h.{i}.{gref.LINEAR[k]}.bias"]
    for nm in names:
        P[nm].requires_grad_(True)
    rows = []
    for s in seqs:
        logits = gref.forward(P, torch.tensor(s))
        targets = s[1:] + [-1]
        loss = gref.token_losses(logits, targets).sum()
        g = torch.autograd.grad(loss, [P[nm] for nm in names])
        rows.append(torch.cat([t.reshape(-1) for t in g]).numpy())
    return np.array(rows)


def tracin(gq, gm, eta):
    """scores (Q, N) and self-influence (N) over checkpoints: gq[c] (Q, P), gm[c] (N, P)."""
    scores = sum(e * a @ b.T for e, a, b in zip(eta, gq, gm))
    self = sum(e * np.einsum("np,np->n", b, b) for e, b in zip(eta, gm))
    return scores, self


def main():
    # ---- MLP
    meta, w1 = mref.load_safetensors(os.path.join(HERE, "mlp_small.safetensors"))
    w2 = perturbed(w1, 5)
    L = len(DIMS) - 1
    for c, w in enumerate([w1, w2]):
        md = dict(meta)
        md.update({"train_lr": repr(ETA_MLP[c]), "train_epoch": str(c + 1), "train_step": str(10 * (c + 1))})
        mref.save_safetensors(os.path.join(HERE, f"mlp_tracin_ckpt{c + 1}.safetensors"),
                              [(f"layers.{i}.{k}", w[f"layers.{i}.{k}"]) for i in range(L) for k in ("weight", "bias")], md)
    ck = [mref.load_safetensors(os.path.join(HERE, f"mlp_tracin_ckpt{c + 1}.safetensors"))[1] for c in range(2)]
    xtr, ytr = mref.load("train")
    xte, yte = mref.load("t10k")
    gm = [mlp_grads(W, xtr[:N], ytr[:N]) for W in ck]
    gq = [mlp_grads(W, xte[:Q], yte[:Q]) for W in ck]
    # autograd against the capture formula Ds a^T (a check of this script)
    acts, ds, _, _, _ = mref.capture([(ck[0][f"layers.{i}.weight"].astype(np.float64), ck[0][f"layers.{i}.bias"].astype(np.float64)) for i in range(L)], xtr[:N], ytr[:N])
    g0 = np.concatenate([np.concatenate([np.einsum("ni,nj->nij", d, a[:, :-1]).reshape(N, -1), d], 1)
                         for a, d in zip(acts, ds)], 1)
    assert np.abs(g0 - gm[0]).max() <= 1e-12 * np.abs(gm[0]).max(), "autograd disagrees with Ds a^T"
    s_mlp, self_mlp = tracin(gq, gm, ETA_MLP)

    # ---- GPT-2
    src = os.path.join(HERE, "gpt2_tiny")
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    p1, buffers = {}, []
    for name, d in header.items():
        b, e = d["data_offsets"]
        a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").reshape(d["shape"]).copy()
        if name == "lm_head.weight":   # tied to wte: not written (infl ties it)
            continue
        if name.endswith(".attn.bias") and a.ndim == 4:   # the causal-mask buffer, kept as it is
            buffers.append((name, a))
            continue
        p1[name.replace("transformer.", "", 1)] = a
    p2 = perturbed(p1, 5)
    out = os.path.join(HERE, "gpt2_tiny_ckpt2")
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(out, "config.json"))
    gref.write_safetensors(os.path.join(out, "model.safetensors"), [("transformer." + k, p2[k]) for k in p1] + buffers)
    # the metadata train_lr of checkpoint 2 (write_safetensors writes format=pt only): rewrite the header
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        raw2 = f.read()
    n2 = int.from_bytes(raw2[:8], "little")
    h2 = json.loads(raw2[8:8 + n2])
    h2["__metadata__"] = {"format": "pt", "train_lr": repr(ETA_GPT2[1]), "train_epoch": "2", "train_step": "4"}
    hb = json.dumps(h2, separators=(",", ":")).encode()
    hb += b" " * ((-len(hb)) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        f.write(raw2[8 + n2:])
    with h5py.File(os.path.join(HERE, "gpt2_tiny_tokens.h5"), "r") as f:
        tok, off = f["tokens"][:], f["offsets"][:]
    seqs = [[int(t) for t in tok[off[i]:off[i + 1]]] for i in range(len(off) - 1)]
    assert all(len(s) <= gref.CFG["n_positions"] for s in seqs)
    gs = [gpt2_grads(p, seqs) for p in (p1, p2)]
    s_gpt2, self_gpt2 = tracin(gs, gs, ETA_GPT2)

    with h5py.File(os.path.join(HERE, "tracin_ref.h5"), "w") as f:
        f.attrs["script"] = "tests/ref/make_tracin_reference.py"
        f.attrs["torch"] = str(torch.__version__)
        f.attrs["numpy"] = np.__version__
        f.attrs["date"] = datetime.date.today().isoformat()
        f["mlp/eta"] = np.array(ETA_MLP)
        f["mlp/scores"] = s_mlp
        f["mlp/self"] = self_mlp
        f["mlp/train_norms"] = np.sqrt(sum(np.einsum("np,np->n", b, b) for b in gm))
        f["gpt2/eta"] = np.array(ETA_GPT2)
        f["gpt2/scores"] = s_gpt2
        f["gpt2/self"] = self_gpt2
    print("mlp: scores", s_mlp.shape, "max", np.abs(s_mlp).max(), "self max", self_mlp.max())
    print("gpt2: scores", s_gpt2.shape, "max", np.abs(s_gpt2).max(), "self", self_gpt2)


if __name__ == "__main__":
    main()

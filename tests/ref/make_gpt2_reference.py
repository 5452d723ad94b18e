#!/usr/bin/python3
"""Reference fixtures for the GPT-2 tests (an independent PyTorch float64 implementation of GPT-2).

Run by hand (CI never runs it), from the repository root:

    /usr/bin/python3 tests/ref/make_gpt2_reference.py

Writes tests/ref/gpt2_tiny/{config.json, model.safetensors, model_f16.safetensors} and tests/ref/gpt2_tiny_ref.h5.

The model is Hugging Face's GPT2LMHeadModel written from its definition (no transformers package): token +
position embeddings, pre-LayerNorm blocks x += attn.c_proj(causal attention(attn.c_attn(ln_1(x)))),
x += mlp.c_proj(gelu_new(mlp.c_fc(ln_2(x)))), ln_f, logits = ln_f(x) wte^T.  Conv1D weights are (in, out).
Random float32 weights (torch.manual_seed(0)); everything else in float64 from those weights, one sequence at a
time (the C code batches sequences of different lengths; the reference never does).
"""
import datetime
import json
import math
import os
import struct

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "gpt2_tiny")
CFG = dict(vocab_size=96, n_positions=16, n_embd=32, n_head=4, n_layer=2, layer_norm_epsilon=1e-5,
           activation_function="gelu_new")
LENGTHS = [16, 9, 12, 5]     # sequences of the fixture batch (different lengths)
GREEDY = [0, 2]              # these sequences are generated greedily from the model: confident next tokens
HEAD_SCALE = 2.0             # ln_f.weight scale: large logits, so that greedy tokens have p > 0.9999
BLOCK = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
         "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
         "mlp.c_proj.bias"]
LINEAR = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


def make_params():
    C, V, P, L = CFG["n_embd"], CFG["vocab_size"], CFG["n_positions"], CFG["n_layer"]
    torch.manual_seed(0)
    f = torch.float32
    p = {"wte.weight": 0.5 * torch.randn(V, C, dtype=f), "wpe.weight": 0.2 * torch.randn(P, C, dtype=f)}
    for i in range(L):
        h = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            p[h + ln + ".weight"] = 1 + 0.1 * torch.randn(C, dtype=f)
            p[h + ln + ".bias"] = 0.1 * torch.randn(C, dtype=f)
        for name, din, dout in (("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, 4 * C),
                                ("mlp.c_proj", 4 * C, C)):
            p[h + name + ".weight"] = torch.randn(din, dout, dtype=f) / math.sqrt(din)
            p[h + name + ".bias"] = 0.1 * torch.randn(dout, dtype=f)
    p["ln_f.weight"] = HEAD_SCALE * (1 + 0.1 * torch.randn(C, dtype=f))
    p["ln_f.bias"] = 0.1 * torch.randn(C, dtype=f)
    order = ["wte.weight", "wpe.weight"] + [f"h.{i}.{b}" for i in range(L) for b in BLOCK] + ["ln_f.weight", "ln_f.bias"]
    return {k: p[k] for k in order}


def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def layernorm(x, w, b):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(v + CFG["layer_norm_epsilon"]) * w + b


def forward(P, tokens, keep=None):
    """logits (T, V) of one sequence; with keep (a dict), the inputs a and outputs s of every linear layer
    (outputs retain their gradient)."""
    C, NH, L = CFG["n_embd"], CFG["n_head"], CFG["n_layer"]
    hs = C // NH
    T = len(tokens)
    x = P["wte.weight"][tokens] + P["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))

    def linear(i, k, inp):
        name = f"h.{i}.{LINEAR[k]}"
        out = inp @ P[name + ".weight"] + P[name + ".bias"]
        if keep is not None:
            out.retain_grad()
            keep[(i, k)] = (inp.detach(), out)
        return out

    for i in range(L):
        h = f"h.{i}."
        qkv = linear(i, 0, layernorm(x, P[h + "ln_1.weight"], P[h + "ln_1.bias"]))
        q, k, v = qkv.split(C, dim=1)
        q, k, v = (z.view(T, NH, hs).transpose(0, 1) for z in (q, k, v))   # (NH, T, hs)
        att = (q @ k.transpose(1, 2)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + linear(i, 1, y)
        f = linear(i, 2, layernorm(x, P[h + "ln_2.weight"], P[h + "ln_2.bias"]))
        x = x + linear(i, 3, gelu_new(f))
    x = layernorm(x, P["ln_f.weight"], P["ln_f.bias"])
    return x @ P["wte.weight"].T


def token_losses(logits, targets):
    """-log softmax(logits)[target] per row, 0 where target < 0."""
    lp = torch.log_softmax(logits, -1)
    out = torch.zeros(len(targets), dtype=logits.dtype)
    for t, y in enumerate(targets):
        if y >= 0:
            out[t] = -lp[t, y]
    return out


def write_safetensors(path, tensors, dtype="F32"):
    """tensors: list of (name, numpy array); written in the given dtype (F32 or F16), 8-byte aligned header."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a.astype({"F32": "<f4", "F16": "<f2"}[dtype]))
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    V, P_, L = CFG["vocab_size"], CFG["n_positions"], CFG["n_layer"]
    p32 = make_params()
    P = {k: v.double() for k, v in p32.items()}

    # the batch: random sequences, the GREEDY ones continued by the model's arg max
    rng = np.random.default_rng(1)
    seqs = []
    with torch.no_grad():
        for b, T in enumerate(LENGTHS):
            if b in GREEDY:
                s = [int(rng.integers(V))]
                while len(s) < T:
                    s.append(int(forward(P, torch.tensor(s))[-1].argmax()))
            else:
                s = [int(x) for x in rng.integers(V, size=T)]
            seqs.append(s)
    offsets = np.cumsum([0] + LENGTHS)
    N = int(offsets[-1])
    given = [[int(rng.integers(V)) if t + 1 < len(s) else -1 for t in range(len(s))] for s in seqs]

    def run(targets_of):
        """Per sequence: logits, token losses, captures; the parameter gradient of the summed loss."""
        Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
        logits, tl, a, ds, seq_loss = [], [], {}, {}, []
        total = 0
        keeps = []
        for b, s in enumerate(seqs):
            keep = {}
            z = forward(Pg, torch.tensor(s), keep)
            l = token_losses(z, targets_of(b))
            total = total + l.sum()
            logits.append(z.detach())
            tl.append(l.detach())
            seq_loss.append(float(l.sum()))
            keeps.append(keep)
        total.backward()
        for i in range(L):
            for k in range(4):
                a[(i, k)] = torch.cat([torch.cat([kp[(i, k)][0], torch.ones(len(kp[(i, k)][0]), 1, dtype=torch.float64)], 1) for kp in keeps])
                ds[(i, k)] = torch.cat([kp[(i, k)][1].grad for kp in keeps])
        grads = {k: v.grad.detach() for k, v in Pg.items()}
        return torch.cat(logits), torch.cat(tl), np.array(seq_loss), a, ds, grads

    next_tok = lambda b: [seqs[b][t + 1] if t + 1 < len(seqs[b]) else -1 for t in range(len(seqs[b]))]
    logits, tl, seq_loss, a, ds, grads = run(next_tok)
    _, _, g_seq_loss, _, g_ds, _ = run(lambda b: given[b])

    # self-checks: DW = sum_t Ds_t a_t^T is the (transposed) Conv1D gradient plus the bias column
    for i in range(L):
        for k in range(4):
            DW = ds[(i, k)].T @ a[(i, k)]
            name = f"h.{i}.{LINEAR[k]}"
            ref = torch.cat([grads[name + ".weight"].T, grads[name + ".bias"][:, None]], 1)
            err = (DW - ref).abs().max() / ref.abs().max()
            assert err < 1e-12, (name, float(err))
    # the loss of a sequence from the float64 logits: the stable formula agrees
    targets = torch.tensor([y for b in range(len(seqs)) for y in next_tok(b)])
    p_target = torch.zeros(N, dtype=torch.float64)
    sm = torch.softmax(logits, -1)
    for t in range(N):
        if targets[t] >= 0:
            p_target[t] = sm[t, targets[t]]
    nconf = int((p_target > 0.9999).sum())
    nmid = int(((p_target > 0) & (p_target < 0.9)).sum())
    print(f"N = {N} rows, {int((targets >= 0).sum())} predictions; p(target) > 0.9999: {nconf}, < 0.9: {nmid}; "
          f"max p {float(p_target.max()):.12f}; seq losses {seq_loss}")
    assert nconf >= 3 and nmid >= 10

    # files
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "config.json"), "w") as f:
        json.dump(dict(CFG, model_type="gpt2", architectures=["GPT2LMHeadModel"]), f, indent=2)
    T = CFG["n_positions"]
    mask = np.tril(np.ones((T, T), np.float32))[None, None]
    tensors = []
    for k, v in p32.items():
        tensors.append(("transformer." + k, v.numpy()))
        if k.endswith("ln_1.weight"):   # the causal-mask buffer older checkpoints carry (ignored by readers)
            tensors.append(("transformer." + k.replace("ln_1.weight", "attn.bias"), mask))
    tensors.append(("lm_head.weight", p32["wte.weight"].numpy()))
    write_safetensors(os.path.join(OUT_DIR, "model.safetensors"), tensors)
    write_safetensors(os.path.join(OUT_DIR, "model_f16.safetensors"), [(k, v.numpy()) for k, v in p32.items()], "F16")

    with h5py.File(os.path.join(HERE, "gpt2_tiny_ref.h5"), "w") as f:
        f.attrs["script"] = "tests/ref/make_gpt2_reference.py"
        f.attrs["torch"] = str(torch.__version__)
        f.attrs["numpy"] = np.__version__
        f.attrs["date"] = datetime.date.today().isoformat()
        f.attrs["config"] = json.dumps(CFG)
        f["offsets"] = offsets.astype(np.int64)
        f["tokens"] = np.array([t for s in seqs for t in s], np.int64)
        f["targets"] = targets.numpy().astype(np.int64)
        f["logits"] = logits.numpy()
        f["token_loss"] = tl.numpy()
        f["seq_loss"] = seq_loss
        f["p_target"] = p_target.numpy()
        for k, v in grads.items():
            f["grad/" + k] = v.numpy()
        for i in range(L):
            for k in range(4):
                f[f"capture/{4 * i + k}/a"] = a[(i, k)].numpy()
                f[f"capture/{4 * i + k}/ds"] = ds[(i, k)].numpy()
                f[f"given/capture/{4 * i + k}/ds"] = g_ds[(i, k)].numpy()
        f["given/targets"] = np.array([y for g in given for y in g], np.int64)
        f["given/seq_loss"] = g_seq_loss


if __name__ == "__main__":
    main()

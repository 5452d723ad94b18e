#!/usr/bin/python3
"""Reference for tests/test_train_gpt2.c: GPT-2 training steps, reimplemented independently in PyTorch.

Run by hand (CI never runs it), from the repository root:

    /usr/bin/python3 tests/nn/make_gpt2_train_reference.py

Writes tests/nn/gpt2_train_tokens.h5 (the token data, HDF5 /tokens int32 + /offsets int64, as infl's tokens: spec
reads it) and tests/nn/gpt2_train_reference.h5 (the initial and trained parameters, the learning rates, pre-clip
gradient norms and losses of every step).  What it reproduces (include/infl/gpt2.h, include/infl/model.h):
  * GPT-2 as Hugging Face's GPT2LMHeadModel (the model code of tests/ref/make_gpt2_reference.py, written again
    here): vocab 64, n_positions 16, n_embd 32, n_head 4, n_layer 2, gelu_new, LayerNorm eps 1e-5, tied head.
  * infl's initialization (InflModelSetUpGPT2): slab entry i (Hugging Face state-dict order) is
    float32(std * InflNormal(seed, i, stream 2)), InflNormal = sqrt(-2 ln(1 - u1)) cos(2 pi u2) from the Philox words
    of (seed, i, 2); std 0.02 for wte, wpe, attn.c_attn.weight and mlp.c_fc.weight, 0.02 / sqrt(2 n_layer) for
    attn.c_proj.weight and mlp.c_proj.weight; biases 0, LayerNorm weights 1.
  * Data: 24 documents of random token ids (one of 40 tokens, cut into windows of 16 tokens starting at 0, 15, 30
    as infl cuts them, consecutive windows sharing one token; one of a single token, which predicts nothing).
  * Each epoch e: infl's Fisher-Yates permutation of the windows (make_train_reference.py); step s takes the
    windows perm[s B, (s+1) B); loss = sum of the next-token cross-entropies of the batch's windows, its gradient
    times float32(1 / P) with P the number of predicted tokens of the batch (the mean over predicted tokens, as
    cross_entropy(reduction="mean") over the batch's targets); torch.nn.utils.clip_grad_norm_ to 2.0;
    torch.optim.AdamW betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the matrices (wte, wpe, the Conv1D weights;
    nanoGPT's dim >= 2 rule), lr 3e-3 with 3 steps of linear warm-up and a cosine decay to 3e-4 over the rest
    (a LambdaLR factor), 2 epochs.
Forward and backward in torch float32 autograd, one window at a time; the C code is float32 too, so the test allows
float32 reassociation (tests/test_train_gpt2.c says how much).
"""
import datetime
import math
import os
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_train_reference import check_philox, permutation, philox4x32_10, MASK  # noqa: E402

CFG = dict(vocab_size=64, n_positions=16, n_embd=32, n_head=4, n_layer=2, layer_norm_epsilon=1e-5)
SEED, BATCH, EPOCHS = 5, 6, 2
LR, LR_MIN, WARMUP, BETAS, EPS, WD, CLIP = 3e-3, 3e-4, 3, (0.9, 0.95), 1e-8, 0.1, 2.0
STREAM_INIT = 2
BLOCK = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
         "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
         "mlp.c_proj.bias"]


def normal(seed, c0, c1):
    w = philox4x32_10([c0 & MASK, c0 >> 32, c1 & MASK, c1 >> 32], [seed & MASK, seed >> 32])
    u1 = float((w[0] | (w[1] << 32)) >> 11) * 2.0 ** -53
    u2 = float((w[2] | (w[3] << 32)) >> 11) * 2.0 ** -53
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(6.283185307179586476925286766559 * u2)


def shapes():
    C, V, P, L = CFG["n_embd"], CFG["vocab_size"], CFG["n_positions"], CFG["n_layer"]
    out = [("wte.weight", (V, C)), ("wpe.weight", (P, C))]
    blk = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
           "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,), "ln_2.weight": (C,), "ln_2.bias": (C,),
           "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C),
           "mlp.c_proj.bias": (C,)}
    for i in range(L):
        out += [(f"h.{i}.{b}", blk[b]) for b in BLOCK]
    return out + [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]


def init_params(seed):
    std0, stdp = 0.02, 0.02 / math.sqrt(2.0 * CFG["n_layer"])
    params, base = {}, 0
    for name, shape in shapes():
        n = int(np.prod(shape))
        if name.endswith("c_proj.weight"):
            std = stdp
        elif name in ("wte.weight", "wpe.weight") or name.endswith("c_attn.weight") or name.endswith("c_fc.weight"):
            std = std0
        else:
            std = 0.0
        if std > 0:
            v = np.array([std * normal(seed, base + i, STREAM_INIT) for i in range(n)]).astype(np.float32)
        else:
            v = np.full(n, 1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight"
                        else 0.0, dtype=np.float32)
        params[name] = v.reshape(shape)
        base += n
    return params


def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def layernorm(x, w, b):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(v + CFG["layer_norm_epsilon"]) * w + b


def seq_loss(P, tokens):
    """summed next-token cross-entropy of one window (tokens: list of ids)."""
    C, NH, L = CFG["n_embd"], CFG["n_head"], CFG["n_layer"]
    hs, T = C // NH, len(tokens)
    if T < 2:
        return None
    idx = torch.tensor(tokens)
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        h = f"h.{i}."
        qkv = layernorm(x, P[h + "ln_1.weight"], P[h + "ln_1.bias"]) @ P[h + "attn.c_attn.weight"] + P[h + "attn.c_attn.bias"]
        q, k, v = (z.view(T, NH, hs).transpose(0, 1) for z in qkv.split(C, dim=1))
        att = ((q @ k.transpose(1, 2)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + y @ P[h + "attn.c_proj.weight"] + P[h + "attn.c_proj.bias"]
        f = layernorm(x, P[h + "ln_2.weight"], P[h + "ln_2.bias"]) @ P[h + "mlp.c_fc.weight"] + P[h + "mlp.c_fc.bias"]
        x = x + gelu_new(f) @ P[h + "mlp.c_proj.weight"] + P[h + "mlp.c_proj.bias"]
    logits = layernorm(x, P["ln_f.weight"], P["ln_f.bias"]) @ P["wte.weight"].T
    return torch.nn.functional.cross_entropy(logits[:-1], idx[1:], reduction="sum")


def windows(docs, npos):
    """infl's windows (include/infl/tokens.h): starts 0, npos-1, 2(npos-1), ... of a longer document."""
    out = []
    for d in docs:
        if len(d) <= npos:
            out.append(d)
            continue
        s = 0
        while s + 1 < len(d):
            out.append(d[s:s + npos])
            s += npos - 1
    return out


def schedule_factor(t, total):
    if t < WARMUP:
        return (t + 1) / WARMUP
    return (LR_MIN + 0.5 * (1.0 + math.cos(math.pi * (t - WARMUP) / (total - WARMUP))) * (LR - LR_MIN)) / LR


def main():
    check_philox()
    V, npos = CFG["vocab_size"], CFG["n_positions"]
    rng = np.random.default_rng(7)
    lengths = [int(x) for x in rng.integers(2, npos + 1, size=22)] + [40, 1]
    rng.shuffle(lengths)
    docs = [[int(t) for t in rng.integers(V, size=n)] for n in lengths]
    wins = windows(docs, npos)
    N = len(wins)

    init = init_params(SEED)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    flat = list(P.values())
    matrices = [P[k] for k, _ in shapes() if P[k].dim() >= 2]
    vectors = [P[k] for k, _ in shapes() if P[k].dim() < 2]
    steps_per_epoch = (N + BATCH - 1) // BATCH
    total = EPOCHS * steps_per_epoch
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": WD}, {"params": vectors, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: schedule_factor(t, total))
    lrs, norms, losses, npreds, perms = [], [], [], [], []
    for epoch in range(EPOCHS):
        perm = permutation(N, SEED, epoch)
        perms.append(perm)
        for s in range(0, N, BATCH):
            opt.zero_grad(set_to_none=True)
            parts = [seq_loss(P, wins[g]) for g in perm[s:s + BATCH]]
            npred = sum(len(wins[g]) - 1 for g in perm[s:s + BATCH])
            loss = sum(p for p in parts if p is not None)
            loss.backward()
            scale = float(np.float32(1.0) / np.float32(npred))
            with torch.no_grad():
                for p in flat:
                    p.grad.mul_(scale)
            norms.append(torch.nn.utils.clip_grad_norm_(flat, CLIP).item())
            lrs.append(opt.param_groups[0]["lr"])
            losses.append(loss.item())
            npreds.append(npred)
            opt.step()
            sched.step()
    clipped = sum(n > CLIP for n in norms)
    print(f"{len(docs)} documents, {N} windows, {sum(map(len, wins))} tokens; {total} steps; loss per token "
          f"{losses[0] / npreds[0]:.4f} (first step) .. {losses[-1] / npreds[-1]:.4f} (last); pre-clip norms "
          f"{min(norms):.4f} .. {max(norms):.4f}, clipped at {clipped} of {total} steps")
    assert 0 < clipped < total

    offsets = np.cumsum([0] + lengths).astype(np.int64)
    tok = np.array([t for d in docs for t in d], dtype=np.int32)
    with h5py.File(os.path.join(HERE, "gpt2_train_tokens.h5"), "w") as f:
        f.create_dataset("tokens", data=tok)
        f.create_dataset("offsets", data=offsets)
    path = os.path.join(HERE, "gpt2_train_reference.h5")
    with h5py.File(path, "w") as f:
        f.attrs["generator"] = "tests/nn/make_gpt2_train_reference.py"
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["setup"] = (f"gpt2 {CFG}; seed {SEED}; adamw lr {LR} betas {BETAS} eps {EPS} wd {WD} (matrices), "
                            f"warm-up {WARMUP}, cosine to {LR_MIN}, clip {CLIP}, batch {BATCH} windows, {EPOCHS} epochs")
        f.create_dataset("window_lengths", data=np.array([len(w) for w in wins], dtype=np.int64))
        f.create_dataset("permutation", data=np.array(perms))
        f.create_dataset("step_lr", data=np.array(lrs))
        f.create_dataset("grad_norm", data=np.array(norms))
        f.create_dataset("step_loss", data=np.array(losses))
        f.create_dataset("step_predicted", data=np.array(npreds, dtype=np.int64))
        for k, v in init.items():
            f.create_dataset(f"init/{k}", data=v)
        for k, v in P.items():
            f.create_dataset(f"final/{k}", data=v.detach().numpy())
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Reference for tests/test_train.c: one epoch of data-parallel training, reimplemented independently.

Run by hand (CI never runs it), from the repository root:

    /usr/bin/python3 tests/nn/make_train_reference.py

Writes tests/nn/train_reference.h5.  What it reproduces (see include/infl/model.h and include/infl/sys.h):
  * MLP 784,32,10, ReLU; initialization W, b ~ (2 u - 1) / sqrt(din), u = InflUniform(seed, flat parameter index,
    stream 2), the parameters laid out layer by layer, W (dout, din) row-major then b (dout).
  * Data: the first 1000 Fashion-MNIST train examples, x = float32(pixel) / float32(255).
  * Each epoch e: Fisher-Yates permutation of [0, N): for i = N-1 .. 1, j = floor(u (i + 1)) with
    u = InflUniform(seed, (e << 40) | i, stream 3), swap perm[i], perm[j]; step s takes perm[s B, (s+1) B).
  * Loss: mean cross-entropy over the batch (gradient of the sum, then times float32(1 / B)).
  * Adam (Kingma & Ba 2015), float32 moments, beta1 0.9, beta2 0.999, eps 1e-8 added to sqrt of the
    bias-corrected second moment, lr 1e-3, no weight decay.
  * Philox4x32-10 (Salmon et al. 2011, Random123), checked against Random123's known-answer vectors.
A second run (group /adamw) exercises the recipe language models use, with torch's own pieces:
  * torch.optim.AdamW (Loshchilov & Hutter 2019), betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the weight
    matrices only (a parameter group without decay for the biases), peak lr 3e-3;
  * the schedule as a torch.optim.lr_scheduler.LambdaLR factor, written out: linear warm-up lr (t + 1) / W for the
    first W = 4 global steps, then cosine from lr to lr_min = 3e-4 over the remaining T - W steps (T = 20: 2 epochs of
    10 batches), lr_min + (lr - lr_min) (1 + cos(pi (t - W) / (T - W))) / 2;
  * torch.nn.utils.clip_grad_norm_ to 1.0 after the division by the batch size (its pre-clip norms are stored).
Forward and backward use torch float32 autograd; the result is compared with float32 C code, so the test allows
about 1e-4 relative (different summation orders).
"""
import datetime
import gzip
import math
import os
import struct

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/usr/share/datasets/fashion-mnist"
DIMS = [784, 32, 10]
N, BATCH, SEED, EPOCHS, LR = 1000, 100, 3, 1, 1e-3
# the AdamW + warm-up + cosine + clipping run
W_EPOCHS, W_LR, W_LR_MIN, W_WARMUP, W_BETAS, W_EPS, W_WD, W_CLIP = 2, 3e-3, 3e-4, 4, (0.9, 0.95), 1e-8, 0.1, 1.0
STREAM_INIT, STREAM_SHUFFLE = 2, 3

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


def uniform(seed, c0, c1):
    w = philox4x32_10([c0 & MASK, c0 >> 32, c1 & MASK, c1 >> 32], [seed & MASK, seed >> 32])
    return float((w[0] | (w[1] << 32)) >> 11) * 2.0 ** -53


def check_philox():
    kat = [([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
           ([MASK] * 4, [MASK] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
           ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    for ctr, key, want in kat:
        assert philox4x32_10(ctr, key) == want


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def init_params(seed):
    out, base = [], 0
    for l in range(len(DIMS) - 1):
        din, dout = DIMS[l], DIMS[l + 1]
        bound = 1.0 / np.sqrt(float(din))
        n = dout * (din + 1)
        v = np.array([(2.0 * uniform(seed, base + i, STREAM_INIT) - 1.0) * bound for i in range(n)])
        v = v.astype(np.float32)
        out.append((v[:dout * din].reshape(dout, din).copy(), v[dout * din:].copy()))
        base += n
    return out


def permutation(n, seed, epoch):
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(uniform(seed, (epoch << 40) | i, STREAM_SHUFFLE) * float(i + 1))
        j = min(j, i)
        perm[i], perm[j] = perm[j], perm[i]
    return np.array(perm, dtype=np.int64)


def forward(params, x):
    h = x
    for l, (W, b) in enumerate(params):
        h = h @ W.T + b
        if l < len(params) - 1:
            h = torch.relu(h)
    return h


def mean_loss(params, x, y):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(forward(params, x).double(), y, reduction="mean").item()


def schedule_factor(t, total):
    """LambdaLR factor of global step t (0-based): the learning rate is W_LR times this."""
    if t < W_WARMUP:
        return (t + 1) / W_WARMUP
    lr = W_LR_MIN + 0.5 * (1.0 + math.cos(math.pi * (t - W_WARMUP) / (total - W_WARMUP))) * (W_LR - W_LR_MIN)
    return lr / W_LR


def train_adamw(init, x, y):
    params = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in init]
    flat = [p for wb in params for p in wb]
    total = W_EPOCHS * ((N + BATCH - 1) // BATCH)
    opt = torch.optim.AdamW([{"params": [W for W, _ in params], "weight_decay": W_WD},
                             {"params": [b for _, b in params], "weight_decay": 0.0}],
                            lr=W_LR, betas=W_BETAS, eps=W_EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: schedule_factor(t, total))
    norms, lrs, clipped = [], [], 0
    for epoch in range(W_EPOCHS):
        perm = permutation(N, SEED, epoch)
        for s in range(0, N, BATCH):
            idx = torch.from_numpy(perm[s:s + BATCH])
            B = idx.numel()
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(forward(params, x[idx]), y[idx], reduction="sum")
            loss.backward()
            scale = float(np.float32(1.0) / np.float32(B))
            with torch.no_grad():
                for p in flat:
                    p.grad.mul_(scale)
            norm = torch.nn.utils.clip_grad_norm_(flat, W_CLIP).item()
            norms.append(norm)
            clipped += norm > W_CLIP
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return {"params": params, "norms": norms, "lrs": lrs, "clipped": int(clipped), "loss": mean_loss(params, x, y)}


def main():
    check_philox()
    img = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz"))[:N]
    lab = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))[:N]
    x = torch.from_numpy(img.reshape(N, -1).astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(lab.astype(np.int64))

    init = init_params(SEED)
    params = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in init]
    flat = [p for wb in params for p in wb]
    m1 = [torch.zeros_like(p) for p in flat]
    m2 = [torch.zeros_like(p) for p in flat]
    loss0 = mean_loss(params, x, y)
    step, step_loss, perms = 0, [], []
    for epoch in range(EPOCHS):
        perm = permutation(N, SEED, epoch)
        perms.append(perm)
        for s in range(0, N, BATCH):
            idx = torch.from_numpy(perm[s:s + BATCH])
            B = idx.numel()
            for p in flat:
                p.grad = None
            loss = torch.nn.functional.cross_entropy(forward(params, x[idx]), y[idx], reduction="sum")
            loss.backward()
            step_loss.append(loss.item() / B)
            step += 1
            b1c, b2c = 1.0 - 0.9 ** step, 1.0 - 0.999 ** step
            scale = np.float32(1.0) / np.float32(B)
            with torch.no_grad():
                for p, m, v in zip(flat, m1, m2):
                    g = p.grad * float(scale)
                    m.mul_(0.9).add_(0.1 * g)
                    v.mul_(0.999).add_(0.001 * g * g)
                    upd = LR * (m.double() / b1c) / (torch.sqrt(v.double() / b2c) + 1e-8)
                    p.copy_((p.double() - upd).float())
    loss1 = mean_loss(params, x, y)
    print(f"mean loss on the {N} examples: {loss0:.6f} before, {loss1:.6f} after {EPOCHS} epoch(s)")
    assert loss1 < loss0
    adamw = train_adamw(init, x, y)
    print(f"adamw: mean loss {adamw['loss']:.6f} after {W_EPOCHS} epochs; pre-clip norms "
          f"{min(adamw['norms']):.4f} .. {max(adamw['norms']):.4f}, clipped at {adamw['clipped']} of "
          f"{len(adamw['norms'])} steps; lr {min(adamw['lrs']):.3e} .. {max(adamw['lrs']):.3e}")
    assert adamw["loss"] < loss0 and 0 < adamw["clipped"] < len(adamw["norms"])

    path = os.path.join(HERE, "train_reference.h5")
    with h5py.File(path, "w") as f:
        f.attrs["generator"] = "tests/nn/make_train_reference.py"
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["setup"] = (f"mlp {','.join(map(str, DIMS))} relu; Fashion-MNIST train 0..{N - 1}; "
                            f"adam lr {LR}, batch {BATCH}, seed {SEED}, epochs {EPOCHS}")
        f.create_dataset("dims", data=np.array(DIMS, dtype=np.int64))
        f.create_dataset("permutation", data=np.array(perms))
        f.create_dataset("step_loss", data=np.array(step_loss))
        f.create_dataset("mean_loss_before", data=loss0)
        f.create_dataset("mean_loss_after", data=loss1)
        for l, (W, b) in enumerate(init):
            f.create_dataset(f"init/layers.{l}.weight", data=W)
            f.create_dataset(f"init/layers.{l}.bias", data=b)
        for l, (W, b) in enumerate(params):
            f.create_dataset(f"final/layers.{l}.weight", data=W.detach().numpy())
            f.create_dataset(f"final/layers.{l}.bias", data=b.detach().numpy())
        g = f.create_group("adamw")
        g.attrs["setup"] = (f"adamw lr {W_LR} betas {W_BETAS} eps {W_EPS} weight decay {W_WD} (matrices only), "
                            f"warm-up {W_WARMUP} steps, cosine to {W_LR_MIN}, clip {W_CLIP}, batch {BATCH}, "
                            f"seed {SEED}, epochs {W_EPOCHS}")
        g.create_dataset("step_lr", data=np.array(adamw["lrs"]))
        g.create_dataset("grad_norm", data=np.array(adamw["norms"]))
        g.create_dataset("mean_loss_after", data=adamw["loss"])
        for l, (W, b) in enumerate(adamw["params"]):
            g.create_dataset(f"final/layers.{l}.weight", data=W.detach().numpy())
            g.create_dataset(f"final/layers.{l}.bias", data=b.detach().numpy())
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()

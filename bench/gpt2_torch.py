#!/usr/bin/python3
"""GPT-2 forward + backward in PyTorch (float32, eager, CPU) at the sizes of bench_gpt2_fwdbwd, for comparison.

    /usr/bin/python3 bench/gpt2_torch.py [--n_layer 2] [--n_embd 768] [--n_head 12] [--vocab 50257] [--batch 2]
                                         [--seq 128] [--reps 3] [--threads 1]

Times loss.backward() of the summed next-token cross-entropy (training: all parameter gradients), best of reps after
one warm-up, and prints tokens/s and GFLOP/s with the same flop count as bench/gpt2_fwdbwd.c (3 x forward GEMMs;
attention counted as the full T x T square).  The model is GPT-2 as in tests/ref/make_gpt2_reference.py, batched.
"""
import argparse
import math
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(n_layer=2, n_embd=768, n_head=12, vocab=50257, batch=2, seq=128, reps=3, threads=1).items():
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    C, V, L, NH, B, T = a.n_embd, a.vocab, a.n_layer, a.n_head, a.batch, a.seq
    hs = C // NH
    P = {"wte": 0.02 * torch.randn(V, C), "wpe": 0.02 * torch.randn(1024, C), "lnf_w": torch.ones(C), "lnf_b": torch.zeros(C)}
    for i in range(L):
        for n, din, dout in (("attn", C, 3 * C), ("proj", C, C), ("fc", C, 4 * C), ("mproj", 4 * C, C)):
            P[f"{i}.{n}.w"] = 0.02 * torch.randn(din, dout)
            P[f"{i}.{n}.b"] = torch.zeros(dout)
        for n in ("ln1", "ln2"):
            P[f"{i}.{n}.w"] = torch.ones(C)
            P[f"{i}.{n}.b"] = torch.zeros(C)
    for v in P.values():
        v.requires_grad_(True)
    tokens = torch.randint(V, (B, T))
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    ln = torch.nn.functional.layer_norm

    def gelu_new(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    def loss_fn():
        x = P["wte"][tokens] + P["wpe"][:T]
        for i in range(L):
            h = ln(x, (C,), P[f"{i}.ln1.w"], P[f"{i}.ln1.b"], 1e-5) @ P[f"{i}.attn.w"] + P[f"{i}.attn.b"]
            q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in h.split(C, dim=2))
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ P[f"{i}.proj.w"] + P[f"{i}.proj.b"]
            f = gelu_new(ln(x, (C,), P[f"{i}.ln2.w"], P[f"{i}.ln2.b"], 1e-5) @ P[f"{i}.fc.w"] + P[f"{i}.fc.b"])
            x = x + f @ P[f"{i}.mproj.w"] + P[f"{i}.mproj.b"]
        logits = ln(x, (C,), P["lnf_w"], P["lnf_b"], 1e-5) @ P["wte"].T
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1), reduction="sum")

    best = 1e30
    for r in range(a.reps + 1):
        for v in P.values():
            v.grad = None
        t0 = time.perf_counter()
        loss = loss_fn()
        loss.backward()
        t = time.perf_counter() - t0
        if r > 0:
            best = min(best, t)
    N = B * T
    fwd = 2.0 * N * L * 12 * C * C + 2.0 * N * C * V + 4.0 * B * T * T * C * L
    print(f"torch {torch.__version__} threads {a.threads}: loss {float(loss) / (B * (T - 1)):.4f} per token")
    print(f"torch_gpt2_train  {best:.4f} s  {N / best:.0f} tokens/s  {3 * fwd / best * 1e-9:.1f} GFLOP/s ({3 * fwd * 1e-9:.1f} GFLOP)")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""A random byte-level GPT-2 (vocabulary 256) and a small text corpus for the stage tests on text data.

Run by hand (CI never runs it), from the repository root:

    /usr/bin/python3 tests/ref/make_gpt2_bytes.py

Writes tests/ref/gpt2_bytes/{config.json, model.safetensors} (Hugging Face GPT-2 layout, float32 weights drawn with
torch.manual_seed(1); no training: the stages' invariances and their finite, documented outputs are what the tests
check) and tests/ref/gpt2_bytes_text.txt (fortune-format documents separated by "%" lines).  A vocabulary of 256
makes infl tokenize text byte by byte, so text:tests/ref/gpt2_bytes_text.txt needs no tokenizer files.
"""
import json
import math
import os

import torch

import make_gpt2_reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "gpt2_bytes")
CFG = dict(vocab_size=256, n_positions=16, n_embd=16, n_head=2, n_layer=2, layer_norm_epsilon=1e-5,
           activation_function="gelu_new")
TEXT = """The cat sat on the mat.
%
A stitch in time saves nine.
%
The quick brown fox jumps over the lazy dog.
%
All that glitters is not gold.
%
To be or not to be, that is the question.
%
The cat chased the mouse around the house.
%
Time flies like an arrow; fruit flies like a banana.
%
A penny saved is a penny earned.
%
The early bird catches the worm.
%
Do not count your chickens before they hatch.
%
Where there is smoke, there is fire.
%
The dog sat on the log.
%
Actions speak louder than words.
%
The pen is mightier than the sword.
%
When in Rome, do as the Romans do.
%
Fortune favors the bold.
%
"""


def main():
    C, V, P, L = CFG["n_embd"], CFG["vocab_size"], CFG["n_positions"], CFG["n_layer"]
    torch.manual_seed(1)
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
    p["ln_f.weight"] = 1 + 0.1 * torch.randn(C, dtype=f)
    p["ln_f.bias"] = 0.1 * torch.randn(C, dtype=f)
    order = ["wte.weight", "wpe.weight"] + [f"h.{i}.{b}" for i in range(L) for b in ref.BLOCK] + ["ln_f.weight", "ln_f.bias"]
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "config.json"), "w") as fh:
        json.dump(dict(CFG, model_type="gpt2", architectures=["GPT2LMHeadModel"]), fh, indent=2)
    ref.write_safetensors(os.path.join(OUT_DIR, "model.safetensors"), [("transformer." + k, p[k].numpy()) for k in order])
    with open(os.path.join(HERE, "gpt2_bytes_text.txt"), "w") as fh:
        fh.write(TEXT)


if __name__ == "__main__":
    main()

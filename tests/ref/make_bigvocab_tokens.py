#!/usr/bin/env python3
"""tokens: data set of GPT-2's vocabulary size for the default chunk of a large vocabulary (tests/lm_stages.sh
chunks): 40 documents of 16 token ids drawn uniformly from [0, 50257) (numpy seed 0), ids near the top included.
Run from the repository root: /usr/bin/python3 tests/ref/make_bigvocab_tokens.py"""
import h5py
import numpy as np

rng = np.random.default_rng(0)
tokens = rng.integers(0, 50257, size=40 * 16).astype(np.int32)
tokens[:4] = [50256, 50255, 0, 1]
with h5py.File("tests/ref/bigvocab_tokens.h5", "w") as g:
    g["tokens"] = tokens
    g["offsets"] = np.arange(0, 40 * 16 + 1, 16, dtype=np.int64)
print("40 documents of 16 tokens, max id %d" % tokens.max())

#!/usr/bin/env python3
"""tokens: data set of the GPT-2 reference sequences (tests/ref/gpt2_tiny_ref.h5: /tokens, /offsets), one document per
sequence, for `infl eval` tests; prints the reference mean loss per predicted token (sum of /token_loss over rows
with a target / their number) and its exp, from the PyTorch float64 per-token losses of make_gpt2_reference.py.
Run from the repository root: /usr/bin/python3 tests/ref/make_gpt2_tokens.py"""
import math
import h5py
import numpy as np

with h5py.File("tests/ref/gpt2_tiny_ref.h5", "r") as f:
    tokens, offsets = f["tokens"][:], f["offsets"][:]
    loss, targets = f["token_loss"][:], f["targets"][:]
with h5py.File("tests/ref/gpt2_tiny_tokens.h5", "w") as g:
    g["tokens"] = tokens.astype(np.int32)
    g["offsets"] = offsets.astype(np.int64)
mean = loss[targets >= 0].sum() / (targets >= 0).sum()
print("predicted tokens %d  mean loss per token %.10f  perplexity %.6f" % ((targets >= 0).sum(), mean, math.exp(mean)))

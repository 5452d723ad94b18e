#!/usr/bin/env python3
"""A small GPT-2 byte-level BPE tokenizer (tests/ref/bpe_small: vocab.json + merges.txt): the 256 byte tokens in
GPT-2's bytes_to_unicode order (id = byte value) and 6 merges (he, Ġt, Ġthe, in, sĠ, ĠĠ), the hand-checked BPE of
tests/test_tokens.c.  Used by tests/train_gpt2_cli.sh (infl train -tokenizer copies the files beside the model)."""
import json, os

def bytes_to_unicode():  # GPT-2 encoder.py
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

m = bytes_to_unicode()
vocab = {m[b]: b for b in range(256)}
merges = [("h", "e"), ("Ġ", "t"), ("Ġt", "he"), ("i", "n"), ("s", "Ġ"), ("Ġ", "Ġ")]
for a, b in merges:
    vocab[a + b] = len(vocab)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_small")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump(vocab, f, ensure_ascii=False)
with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
print(len(vocab), "tokens")

#!/usr/bin/python3
"""Regenerate the seed inputs of fuzz/corpus/fuzz_tokenizer and fuzz/corpus/fuzz_tokens (h5py for the HDF5 seed:
Debian's /usr/bin/python3 with python3-h5py).  Input layouts: see fuzz/fuzz_tokenizer.c and fuzz/fuzz_tokens.c."""
import io, json, os, struct
import h5py, numpy as np

here = os.path.dirname(os.path.abspath(__file__))

def put(path, data):
    os.makedirs(os.path.dirname(os.path.join(here, path)), exist_ok=True)
    with open(os.path.join(here, path), 'wb') as f:
        f.write(data)

def bytes_to_unicode():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

m = bytes_to_unicode()
vocab = {m[b]: b for b in range(256)}
for i, t in enumerate(['he', 'Ġt', 'Ġthe', 'in', 'sĠ', 'ĠĠ']):
    vocab[t] = 256 + i
merges = '#version: 0.2\nh e\nĠ t\nĠt he\ni n\ns Ġ\nĠ Ġ\n'

def tok_input(names, v, mg):
    v = v.encode()
    return bytes([names]) + struct.pack('<H', len(v)) + v + mg.encode()

put('fuzz_tokenizer/small_hf', tok_input(0, json.dumps(vocab, ensure_ascii=False), merges))
put('fuzz_tokenizer/small_openai', tok_input(1, json.dumps(vocab), merges + " the thin in it's  ok a   b\n"))
put('fuzz_tokenizer/bad_merge', tok_input(0, json.dumps(vocab, ensure_ascii=False), merges + 'x y\n'))
put('fuzz_tokenizer/dup_id', tok_input(0, '{"a": 0, "b": 0}', 'a b\n'))

def llmc(tokens, n=None, version=1):
    h = np.zeros(256, dtype='<i4')
    h[0], h[1], h[2] = 20240520, version, len(tokens) if n is None else n
    return h.tobytes() + np.asarray(tokens, dtype='<u2').tobytes()

def tk_input(mode, vocab_size, data):
    return bytes([mode]) + struct.pack('<H', vocab_size - 1) + data

eot = 50256
put('fuzz_tokens/bin_docs', tk_input(0 | 4 | (3 << 3), 50257, llmc([eot, 10, 20, 30, 40, 50, eot, 7, eot, 1, 2])))
put('fuzz_tokens/bin_truncated', tk_input(4, 50257, llmc([eot, 10, 20], n=5)))
put('fuzz_tokens/text_fortunes', tk_input(1 | (2 << 3), 256, b'%\nfirst\nsecond line\n%\n\n%\nthird\n%\n'))
put('fuzz_tokens/text_lines', tk_input(2, 256, b'one\n\ntwo\nthree without newline'))
# (no HDF5 seed: fuzz_tokens skips HDF5 files, whose corruption crashes libhdf5 itself)

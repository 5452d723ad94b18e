#!/usr/bin/env python3
"""Regenerate the small seed inputs of fuzz/corpus/fuzz_safetensors and fuzz/corpus/fuzz_idx (stdlib only).
fuzz_safetensors/valid_fixture.safetensors is tests/io/fixture.safetensors; lies_truncated.safetensors is
tests/ref/mlp_small.safetensors with layers.0.bias's shape changed to [25], cut at 2000 bytes.
fuzz_h5data/*.h5 are the h5import fixtures of tests/cli/bad_input.sh (good, floatlabels, narrow), good.h5 cut at
1500 bytes, and a text file.  fuzz_idx inputs start with the target's mode byte (see fuzz_idx.c)."""
import gzip, json, os, struct

here = os.path.dirname(os.path.abspath(__file__))

def st(hdr, data=b''):
    h = json.dumps(hdr, separators=(',', ':')).encode()
    return struct.pack('<Q', len(h)) + h + data

def idx3(n, r, c):
    return bytes([0, 0, 8, 3]) + struct.pack('>III', n, r, c) + bytes((i * 37) % 256 for i in range(n * r * c))

def put(path, data):
    with open(os.path.join(here, path), 'wb') as f:
        f.write(data)

put('fuzz_safetensors/small.safetensors', st({"__metadata__": {"architecture": "mlp", "dims": "2,1"}, "w": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]}, "b": {"dtype": "F64", "shape": [1], "data_offsets": [8, 16]}}, bytes(16)))
put('fuzz_safetensors/overlap.safetensors', st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
put('fuzz_safetensors/hole.safetensors', st({"w": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)))
put('fuzz_safetensors/empty_tensor.safetensors', st({"e": {"dtype": "I64", "shape": [0, 3], "data_offsets": [0, 0]}, "x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)))
put('fuzz_safetensors/bad_dtype.safetensors', st({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, bytes(2)))
put('fuzz_safetensors/header_only.safetensors', struct.pack('<Q', 2) + b'{}')
put('fuzz_safetensors/short.safetensors', b'\x05\x00\x00')
put('fuzz_idx/raw_3x2x2', b'\x00' + idx3(3, 2, 2))
put('fuzz_idx/raw_truncated', b'\x00' + idx3(3, 2, 2)[:-3])
put('fuzz_idx/gz_3x2x2', b'\x00' + gzip.compress(idx3(3, 2, 2), mtime=0))
put('fuzz_idx/gz_truncated', b'\x04' + gzip.compress(idx3(3, 4, 4), mtime=0)[:-9])
put('fuzz_idx/labels_same', b'\x02' + bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 0]))
put('fuzz_idx/empty', b'\x00' + bytes([0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2]))
put('fuzz_idx/huge_dims', b'\x00' + bytes([0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2]))

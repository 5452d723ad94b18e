#!/usr/bin/env python3
"""Write tests/io/fixture.safetensors by hand (no safetensors package needed): 8-byte little-endian header
length, JSON header padded with spaces to a multiple of 8, then the tensor bytes (huggingface/safetensors format).
The header lists the tensors in a different order from their data, as other writers may.
Run: /usr/bin/python3 tests/io/make_safetensors_fixture.py  (prints the SHA-256 that test_io_safetensors.c expects)
"""
import hashlib, json, os, struct
import numpy as np

tensors = [  # (name, array) in data order
    ("layers.0.weight", (np.arange(12, dtype=np.float32) * 0.5 - 1.0).reshape(3, 4)),
    ("layers.0.bias", np.array([0.25, -0.5, 2.0], dtype=np.float32)),
    ("steps", np.array([1, -2, 3, 1 << 40, -(1 << 40)], dtype=np.int64)),
    ("double", np.array([[1.0 / 3.0, -2.5], [1e-300, 7.0]], dtype=np.float64)),
    ("empty", np.zeros((0, 4), dtype=np.float32)),
    ("bytes", np.array([0, 127, 255], dtype=np.uint8)),
]
dtypes = {np.float32: "F32", np.float64: "F64", np.int64: "I64", np.uint8: "U8"}
entries, off, data = {}, 0, b""
for name, a in tensors:
    b = a.astype(a.dtype.newbyteorder("<")).tobytes()
    entries[name] = {"dtype": dtypes[a.dtype.type], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    off += len(b)
    data += b
header = {"__metadata__": {"architecture": "mlp", "dims": "4,3", "format": "pt"}}
for name in ["bytes", "layers.0.bias", "double", "empty", "layers.0.weight", "steps"]:  # header order != data order
    header[name] = entries[name]
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
blob = struct.pack("<Q", len(h)) + h + data
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixture.safetensors")
open(out, "wb").write(blob)
print(out, len(blob), "bytes, sha256", hashlib.sha256(blob).hexdigest())

#!/usr/bin/python3
"""Regenerate the seed inputs of fuzz/corpus/fuzz_gpt2 (numpy only; Debian's /usr/bin/python3).  Input layout: see
fuzz/fuzz_gpt2.c -- 2 bytes config length, config.json, model.safetensors.  The models are micro GPT-2s (1-2
layers, n_embd 4) so that an input stays far below the fuzzer's maximum length."""
import json, os, struct
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
BLOCK = [('ln_1.weight', (1, 0)), ('ln_1.bias', (1, 0)), ('attn.c_attn.weight', (1, 3)), ('attn.c_attn.bias', (3, 0)),
         ('attn.c_proj.weight', (1, 1)), ('attn.c_proj.bias', (1, 0)), ('ln_2.weight', (1, 0)), ('ln_2.bias', (1, 0)),
         ('mlp.c_fc.weight', (1, 4)), ('mlp.c_fc.bias', (4, 0)), ('mlp.c_proj.weight', (4, 1)), ('mlp.c_proj.bias', (1, 0))]

def safetensors(tensors, dtype='F32'):
    np_dtype = {'F32': '<f4', 'F16': '<f2', 'F64': '<f8'}[dtype]
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype=np_dtype).tobytes()
        header[name] = {'dtype': dtype, 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header['__metadata__'] = {'format': 'pt'}
    h = json.dumps(header, separators=(',', ':')).encode()
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)

def model(V=8, P=4, C=4, H=2, L=1, prefix='', buffers=False, head=False, seed=0):
    rng = np.random.default_rng(seed)
    t = [(prefix + 'wte.weight', 0.02 * rng.standard_normal((V, C))), (prefix + 'wpe.weight', 0.01 * rng.standard_normal((P, C)))]
    for i in range(L):
        for name, (d0, d1) in BLOCK:
            shape = (d0 * C, d1 * C) if d1 else (d0 * C,)
            a = np.ones(shape) if name.endswith('ln_1.weight') or name.endswith('ln_2.weight') else 0.02 * rng.standard_normal(shape)
            t.append((f'{prefix}h.{i}.{name}', a))
        if buffers:
            t.append((f'{prefix}h.{i}.attn.bias', np.tril(np.ones((P, P)))[None, None]))
    t += [(prefix + 'ln_f.weight', np.ones(C)), (prefix + 'ln_f.bias', np.zeros(C))]
    if head:
        t.append(('lm_head.weight', t[0][1]))
    cfg = {'vocab_size': V, 'n_positions': P, 'n_embd': C, 'n_head': H, 'n_layer': L, 'layer_norm_epsilon': 1e-5,
           'activation_function': 'gelu_new', 'model_type': 'gpt2'}
    return cfg, t

def put(name, cfg, tensors, dtype='F32'):
    c = json.dumps(cfg).encode()
    os.makedirs(os.path.join(here, 'fuzz_gpt2'), exist_ok=True)
    with open(os.path.join(here, 'fuzz_gpt2', name), 'wb') as f:
        f.write(struct.pack('<H', len(c)) + c + safetensors(tensors, dtype))

cfg, t = model()
put('micro', cfg, t)
cfg, t = model(prefix='transformer.', buffers=True, head=True, seed=1)
put('micro_prefixed_head', cfg, t)
cfg, t = model(L=2, seed=2)
cfg['activation_function'] = 'relu'
put('micro_two_layers_f16', cfg, t, 'F16')
cfg, t = model(seed=3)
cfg['n_ctx'] = cfg.pop('n_positions')
put('micro_n_ctx_f64', cfg, t, 'F64')

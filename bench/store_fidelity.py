"""Pearson (and Spearman) correlation of store-based scores with EK-FAC scores, per query, averaged
(bench/store_fidelity.sh writes the inputs).  usage: store_fidelity.py DIR"""
import sys, os, glob
import numpy as np
import h5py


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return np.corrcoef(ra, rb)[0, 1]


d = sys.argv[1] if len(sys.argv) > 1 else "."
with h5py.File(os.path.join(d, "ekfac.h5"), "r") as f:
    E = f["/scores"][...].astype(np.float64)
print("| scores | training examples | k | Pearson (mean over queries) | min | Spearman | top-10 overlap with EK-FAC |")
print("|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(d, "sc_*.h5"))):
    with h5py.File(path, "r") as f:
        S = f["/scores"][...].astype(np.float64)
        method = f.attrs["method"]
        store = f.attrs["store"]
    method = method.decode() if isinstance(method, bytes) else method
    store = store.decode() if isinstance(store, bytes) else store
    with h5py.File(os.path.join(d, os.path.basename(store)) if not os.path.exists(store) else store, "r") as g:
        k = g["/gradients"].shape[1]
        kind = g.attrs["project_kind"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
    name = os.path.basename(path)[3:-3]
    for n in sorted({S.shape[1], 5000}):
        if n > S.shape[1]:
            continue
        Sq, Eq = S[:, :n], E[:, :n]
        pr = [np.corrcoef(Sq[q], Eq[q])[0, 1] for q in range(S.shape[0])]
        sp = [spearman(Sq[q], Eq[q]) for q in range(S.shape[0])]
        ov = [len(set(np.argsort(-Sq[q])[:10]) & set(np.argsort(-Eq[q])[:10])) / 10 for q in range(S.shape[0])]
        print(f"| {kind} {name} ({method}) | {n} | {k} | {np.mean(pr):.3f} | {np.min(pr):.3f} | {np.mean(sp):.3f} | {np.mean(ov):.2f} |")

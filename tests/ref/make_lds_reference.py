#!/usr/bin/python3
"""Reference values of the linear datamodeling score (LDS) for tests/test_lds.c and tests/lds.sh, by numpy and
scipy.stats.spearmanr, independent of infl's C code.

Writes tests/ref/lds_ref.h5:
  /spearman/x, /spearman/y (K, n) and /spearman/rho (K): vectors with ties (and one constant pair: NaN)
  /masks/mask (5, 37): subset masks for seed 11, fraction 0.4, subsets 0..4 from Philox (InflSubsetMask: the first
      round(0.4 * 37) = 15 entries of the Fisher-Yates permutation whose step i swaps i and floor(u_i (i + 1)),
      u_i = uniform(seed, i, 5 + 256 j))
  /mislabel/y, /mislabel/yflip, /mislabel/flipped: seed 3, 10 classes, fraction 0.25 of 40 labels
and the synthetic lds.h5-layout files tests/ref/lds_synth.h5 (J = 9 subsets of 20 of N = 40 examples, Q = 6 queries,
subset 4 diverged: status 2 and NaN losses; query 5's losses constant: left out) with lds_synth_scores.h5
(/scores float32 with ties), whose LDS is stored as the attributes lds and per_query of lds_ref.h5's /synth.

  /loo_synth/idx (K), /loo_synth/change (K, Q) (NaN entries), /loo_synth/scores (Q, N), attributes pearson,
      spearman, npairs: the leave-one-out correlations over the finite (example, query) pairs (scipy.stats.pearsonr,
      spearmanr), and /pearson/x, /pearson/y, /pearson/r
With --tiny-eval LDS.h5 it copies an lds.h5 with leave-one-out and mislabel sections written by infl (the tiny study
of tests/lds.sh) to tests/ref/lds_tiny_eval.h5.  From the committed tests/ref/lds_tiny_eval.h5 (when present) it
checks the recorded flips against the Python Philox flips of the Fashion-MNIST labels and the loss changes against
the recorded losses, and stores under /tiny_eval the LOO Pearson and Spearman of lds_tiny_scores.h5 and the
detection rates of both self-influences (attributes loo_pearson, loo_spearman, detected, detected_identity).
With --tiny LDS.h5 SCORES.h5 it also copies an lds.h5 written by infl (the tiny study of tests/lds.sh) and its scores
file to tests/ref/lds_tiny.h5 and lds_tiny_scores.h5 and stores their LDS computed here as /tiny/lds and
/tiny/per_query.  Run once from the repository root: /usr/bin/python3 tests/ref/make_lds_reference.py [--tiny ...]

Language models (tests/lds_text.sh): /corrupt/tokens (3, 13): the permutations of the tokens 0..12 of windows 0, 1
and 7 for seed 5 (InflDataCorruptWindow: Fisher-Yates, step t swaps t and floor(u_t (t + 1)), u_t = uniform(seed, t,
6 + 512 + 256 index)).  With --text LDS.h5 SCORES.h5 it copies an lds.h5 with subsets and a mislabel (corrupted
documents) section written by infl for the tiny text study of tests/lds_text.sh and its scores file to
tests/ref/lds_text.h5 and lds_text_scores.h5; from those it checks the masks and the corrupted windows against the
Python Philox and stores /text/per_query and the attributes lds, detected, detected_identity of /text."""
import gzip
import os
import shutil
import sys

import h5py
import numpy as np
import scipy
import scipy.stats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_mlp_reference as ref  # noqa: E402  (Philox checked against Random123's known answers)


def subset_mask(seed, j, N, fraction, c1base=5):
    m = int(np.floor(fraction * N + 0.5))
    perm = list(range(N))
    for i in range(N - 1, 0, -1):
        k = min(int(ref.uniform(seed, i, c1base + 256 * j) * (i + 1)), i)
        perm[i], perm[k] = perm[k], perm[i]
    mask = np.zeros(N, np.uint8)
    mask[perm[:m]] = 1
    return mask


def lds(masks, status, losses, scores):
    valid = status == 1
    pred = masks[valid].astype(np.float64) @ scores.astype(np.float64).T  # (J', Q)
    per = []
    for q in range(scores.shape[0]):
        a, b = pred[:, q], -losses[valid, q]
        if np.all(a == a[0]) or np.all(b == b[0]):
            per.append(np.nan)
        else:
            per.append(scipy.stats.spearmanr(a, b)[0])
    per = np.array(per)
    return np.nanmean(per), per


def write_lds_file(path, masks, losses, status, qidx):
    with h5py.File(path, "w") as f:
        f["masks"] = masks
        f["query_losses"] = losses
        f["status"] = status.astype(np.int32)
        f["query_indices"] = qidx.astype(np.int64)
        f.attrs["stage"] = np.bytes_(b"lds")  # fixed-length strings, as infl writes them
        f.attrs["lds_key"] = np.bytes_(b"synthetic (tests/ref/make_lds_reference.py)")


def fashion_labels(n):
    with gzip.open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", "rb") as f:
        return np.frombuffer(f.read(), np.uint8)[8:8 + n].astype(np.int64)


def detection(value, flipped, top):
    """Fraction of the flipped examples among the round(top N) largest values (ties: smaller index first)."""
    order = np.lexsort((np.arange(len(value)), -value))
    k = int(np.floor(top * len(value) + 0.5))
    return flipped[order[:k]].sum() / flipped.sum()


def tiny_eval(out):
    path = os.path.join(HERE, "lds_tiny_eval.h5")
    if not os.path.exists(path):
        return
    with h5py.File(path, "r") as f, h5py.File(os.path.join(HERE, "lds_tiny_scores.h5"), "r") as s:
        g = out.create_group("tiny_eval")
        # leave-one-out: the changes from the recorded losses (one seed: model k+1 minus the full model 0)
        idx, L, change = f["loo/indices"][:], f["loo/query_losses"][:], f["loo/loss_change"][:]
        want = np.nanmean(L[:, 1:, :] - L[:, :1, :], axis=0)
        assert np.allclose(change, want, rtol=0, atol=1e-15), "loss_change differs from the recorded losses"
        sc = s["scores"][:].astype(np.float64)
        a, b = sc[:, idx].T.ravel(), change.ravel()
        g.attrs["loo_pearson"] = scipy.stats.pearsonr(a, b)[0]
        g.attrs["loo_spearman"] = scipy.stats.spearmanr(a, b)[0]
        # mislabel: the flips of the Python Philox, the detection rates of the recorded self-influence
        N = f["mislabel/flipped"].shape[0]
        frac = float(f["mislabel"].attrs["fraction"])
        y = fashion_labels(N)
        seed = int(f["mislabel"].attrs["seed"])
        flipped = subset_mask(seed, 0, N, frac, c1base=6)
        ylab = y.copy()
        for i in range(N):
            if flipped[i]:
                ylab[i] = (y[i] + 1 + min(int(ref.uniform(seed, i, 6 + 256) * 9), 8)) % 10
        assert (flipped == f["mislabel/flipped"][:]).all(), "flipped examples differ from the Python Philox"
        assert (ylab == f["mislabel/labels"][:]).all(), "flipped labels differ from the Python Philox"
        top = f["mislabel/top"][:]
        g.attrs["detected"] = np.array([detection(f["mislabel/self_influence"][:], flipped, t) for t in top])
        g.attrs["detected_identity"] = np.array([detection(f["mislabel/self_influence_identity"][:], flipped, t) for t in top])
        print(f"tiny eval: LOO Pearson {g.attrs['loo_pearson']:.6f} Spearman {g.attrs['loo_spearman']:.6f}; "
              f"detected {g.attrs['detected']} identity {g.attrs['detected_identity']} at top {top}")


def corrupt_window(seed, index, tokens):
    t = list(tokens)
    for i in range(len(t) - 1, 0, -1):
        j = min(int(ref.uniform(seed, i, 6 + 512 + 256 * index) * (i + 1)), i)
        t[i], t[j] = t[j], t[i]
    return t


def text_eval(out):
    path = os.path.join(HERE, "lds_text.h5")
    if not os.path.exists(path):
        return
    with h5py.File(path, "r") as f, h5py.File(os.path.join(HERE, "lds_text_scores.h5"), "r") as s:
        g = out.create_group("text")
        J, N = f["masks"].shape
        for j in range(J):
            assert (f["masks"][j] == subset_mask(int(f.attrs["seed"]), j, N, float(f.attrs["fraction"]))).all()
        v, per = lds(f["masks"][:], f["status"][:], f["query_losses"][:], s["scores"][:])
        g["per_query"] = per
        g.attrs["lds"] = v
        seed, frac = int(f["mislabel"].attrs["seed"]), float(f["mislabel"].attrs["fraction"])
        flipped = subset_mask(seed, 0, N, frac, c1base=6)
        assert (flipped == f["mislabel/flipped"][:]).all(), "corrupted windows differ from the Python Philox"
        assert "labels" not in f["mislabel"], "a text study has no labels"
        top = f["mislabel/top"][:]
        g.attrs["detected"] = np.array([detection(f["mislabel/self_influence"][:], flipped, t) for t in top])
        g.attrs["detected_identity"] = np.array([detection(f["mislabel/self_influence_identity"][:], flipped, t) for t in top])
        print(f"text: LDS {v:.6f} per query {per}; corrupted {flipped.sum()} of {N}: detected {g.attrs['detected']} "
              f"identity {g.attrs['detected_identity']} at top {top}")


def main():
    ref.check_philox()
    rng = np.random.default_rng(20261201)
    out = h5py.File(os.path.join(HERE, "lds_ref.h5"), "w")
    out.attrs["script"] = "tests/ref/make_lds_reference.py"
    out.attrs["numpy"] = np.__version__
    out.attrs["scipy"] = scipy.__version__
    # Spearman with ties
    K, n = 6, 11
    X = rng.integers(0, 5, (K, n)).astype(np.float64)
    Y = rng.normal(size=(K, n)).round(1)
    X[1] = rng.normal(size=n)
    Y[2, :4] = Y[2, 4]
    X[5] = 3.0  # constant: undefined
    rho = np.array([scipy.stats.spearmanr(X[k], Y[k])[0] if np.ptp(X[k]) > 0 else np.nan for k in range(K)])
    out["spearman/x"], out["spearman/y"], out["spearman/rho"] = X, Y, rho
    # masks
    out["masks/mask"] = np.stack([subset_mask(11, j, 37, 0.4) for j in range(5)])
    # mislabel: the flipped set is a subset mask of stream 6, new label (y + 1 + floor(u (C - 1))) mod C, u of stream 262
    y = rng.integers(0, 10, 40)
    flipped = subset_mask(3, 0, 40, 0.25, c1base=6)
    yflip = y.copy()
    for i in range(40):
        if flipped[i]:
            yflip[i] = (y[i] + 1 + min(int(ref.uniform(3, i, 6 + 256) * 9), 8)) % 10
    out["mislabel/y"], out["mislabel/yflip"], out["mislabel/flipped"] = y, yflip, flipped
    # synthetic lds.h5
    J, N, Q = 9, 40, 6
    masks = np.stack([subset_mask(0, j, N, 0.5) for j in range(J)])
    losses = rng.normal(size=(J, Q)).round(1)  # ties across subsets
    losses[:, 5] = 0.7
    status = np.ones(J, np.int32)
    status[4] = 2
    losses[4] = np.nan
    scores = rng.normal(size=(Q, N)).round(1).astype(np.float32)
    qidx = np.arange(Q) * 3 + 1
    write_lds_file(os.path.join(HERE, "lds_synth.h5"), masks, losses, status, qidx)
    with h5py.File(os.path.join(HERE, "lds_synth_scores.h5"), "w") as f:
        f["scores"] = scores
        f["query_indices"] = qidx.astype(np.int64)
    v, per = lds(masks, status, losses, scores)
    out["synth/per_query"] = per
    out["synth"].attrs["lds"] = v
    print(f"synthetic: LDS {v:.6f}, per query {per}")
    # Pearson and leave-one-out correlations (a generator of their own: the draws above stay as they were)
    rng2 = np.random.default_rng(20261202)
    px, py = rng2.normal(size=17), rng2.normal(size=17)
    py += 0.5 * px
    out["pearson/x"], out["pearson/y"] = px, py
    out["pearson/r"] = np.array([scipy.stats.pearsonr(px, py)[0]])
    K, Q, N = 5, 4, 30
    idx = rng2.choice(N, K, replace=False).astype(np.int64)
    scores = rng2.normal(size=(Q, N)).round(2)
    change = 0.3 * scores[:, idx].T + rng2.normal(size=(K, Q)).round(2)
    change[1, 2] = np.nan
    change[3, 0] = np.nan
    ok = np.isfinite(change)
    a, b = scores[:, idx].T[ok], change[ok]
    g = out.create_group("loo_synth")
    g["idx"], g["change"], g["scores"] = idx, change, scores
    g.attrs["pearson"] = scipy.stats.pearsonr(a, b)[0]
    g.attrs["spearman"] = scipy.stats.spearmanr(a, b)[0]
    g.attrs["npairs"] = int(ok.sum())
    print(f"loo synthetic: Pearson {g.attrs['pearson']:.6f} Spearman {g.attrs['spearman']:.6f} over {ok.sum()} pairs")
    if len(sys.argv) == 3 and sys.argv[1] == "--tiny-eval":
        shutil.copyfile(sys.argv[2], os.path.join(HERE, "lds_tiny_eval.h5"))
    tiny_eval(out)
    if len(sys.argv) == 4 and sys.argv[1] == "--tiny":
        shutil.copyfile(sys.argv[2], os.path.join(HERE, "lds_tiny.h5"))
        shutil.copyfile(sys.argv[3], os.path.join(HERE, "lds_tiny_scores.h5"))
    if os.path.exists(os.path.join(HERE, "lds_tiny.h5")):
        with h5py.File(os.path.join(HERE, "lds_tiny.h5"), "r") as f, h5py.File(os.path.join(HERE, "lds_tiny_scores.h5"), "r") as s:
            v, per = lds(f["masks"][:], f["status"][:], f["query_losses"][:], s["scores"][:])
            for j in range(f["masks"].shape[0]):
                assert (f["masks"][j] == subset_mask(int(f.attrs["seed"]), j, f["masks"].shape[1], float(f.attrs["fraction"]))).all()
        out["tiny/per_query"] = per
        out["tiny"].attrs["lds"] = v
        print(f"tiny: LDS {v:.6f}, per query {per}")
    out["corrupt/tokens"] = np.array([corrupt_window(5, i, range(13)) for i in (0, 1, 7)], np.int32)
    if len(sys.argv) == 4 and sys.argv[1] == "--text":
        shutil.copyfile(sys.argv[2], os.path.join(HERE, "lds_text.h5"))
        shutil.copyfile(sys.argv[3], os.path.join(HERE, "lds_text_scores.h5"))
    text_eval(out)
    out.close()


if __name__ == "__main__":
    main()

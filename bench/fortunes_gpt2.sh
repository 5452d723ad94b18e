#!/usr/bin/env bash
# Benchmark of EK-FAC on the fortunes GPT-2 (jobs/fortunes.opts, -ekfac_layers mlp): infl fit, score and self against
# the same computation in PyTorch (bench/ekfac_gpt2_torch.py, as many threads as infl has ranks), with the
# single-thread SGEMM/DGEMM rates of the same run; one table (docs/PERFORMANCE.md).
#   bench/fortunes_gpt2.sh MODEL_DIR [BUILD_DIR]      (MODEL_DIR: a GPT-2 trained by `infl train` per jobs/fortunes.opts)
# Environment: DATA (directory made by jobs/fortunes-data.sh; made under OUT if unset), N (training windows scored,
#   -train_limit; default 1000), PROMPTS (query file, default jobs/fortunes-prompts.txt), REPS (3; medians are
#   reported, infl and PyTorch run in turn in each repetition so that both see the same load), RANKS (2), CORETYPE
#   (OPENBLAS_CORETYPE for every program), SKIP_TORCH=1, OUT (output directory), BASELINE (another infl executable,
#   e.g. of an earlier commit: its `infl score` is timed in each repetition too, for a before/after of the scorer).
# Every BLAS call is single-threaded (OPENBLAS_NUM_THREADS=1; PyTorch: torch.set_num_threads(RANKS)).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${1:?usage: bench/fortunes_gpt2.sh MODEL_DIR [BUILD_DIR]}
BUILD=${2:-$ROOT/build}
N=${N:-1000}
REPS=${REPS:-3}
RANKS=${RANKS:-2}
PROMPTS=${PROMPTS:-$ROOT/jobs/fortunes-prompts.txt}
OUT=${OUT:-$(mktemp -d /tmp/infl-lmbench.XXXX)}
PY=/usr/bin/python3
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_rmaps_base_oversubscribe=1
if [ -n "${CORETYPE:-}" ]; then export OPENBLAS_CORETYPE=$CORETYPE; fi
if [ -z "${DATA:-}" ]; then
  DATA=$OUT/fortunes-data
  "$ROOT/jobs/fortunes-data.sh" "$DATA" >/dev/null
fi
. "$ROOT/bench/env.sh"
bench_env | tee "$OUT/env.txt"
echo "ranks $RANKS, training windows $N (-train_limit), queries $PROMPTS, $REPS repetitions" | tee -a "$OUT/env.txt"
"$BUILD/bench/bench_gemm" 3 | tee "$OUT/gemm.txt"

infl() { mpiexec -n "$RANKS" "$BUILD/infl" "$@"; }
common=(-model "$MODEL" -train "text:$DATA/train" -train_limit "$N" -overwrite)
for rep in $(seq "$REPS"); do
  echo "repetition $rep: load $(uptime | sed 's/.*load average: //')" | tee -a "$OUT/load.txt"
  infl fit "${common[@]}" -ekfac_layers mlp -out "$OUT/factors.h5" -info "$OUT/fit_info$rep" >"$OUT/fit$rep.log"
  infl score "${common[@]}" -factors "$OUT/factors.h5" -query_prompts "$PROMPTS" -out "$OUT/scores.h5" \
    -log_view ":$OUT/score_log$rep.txt" >"$OUT/score$rep.log"
  if [ -n "${BASELINE:-}" ]; then
    mpiexec -n "$RANKS" "$BASELINE" score "${common[@]}" -factors "$OUT/factors.h5" -query_prompts "$PROMPTS" -out "$OUT/scores_base.h5" \
      -log_view ":$OUT/base_log$rep.txt" >"$OUT/base$rep.log"
  fi
  infl self "${common[@]}" -factors "$OUT/factors.h5" -out "$OUT/self.h5" >"$OUT/self$rep.log"
  if [ -z "${SKIP_TORCH:-}" ]; then
    $PY "$ROOT/bench/ekfac_gpt2_torch.py" "$MODEL" "$DATA/train" --limit "$N" --prompts "$PROMPTS" --threads "$RANKS" \
      --scores "$OUT/torch_scores.npy" --self-out "$OUT/torch_self.npy" >"$OUT/torch$rep.txt"
  fi
  grep -h "^fit:\|^score:\|^self-infl" "$OUT/fit$rep.log" "$OUT/score$rep.log" "$OUT/self$rep.log" | grep -v memory || true
done
echo "load after: $(uptime | sed 's/.*load average: //')" | tee -a "$OUT/env.txt"
# untimed: the full score matrix, to check that PyTorch computed the same scores
infl score "${common[@]}" -factors "$OUT/factors.h5" -query_prompts "$PROMPTS" -score_save_all -out "$OUT/scores_all.h5" >/dev/null

$PY - "$OUT" "$MODEL" "$RANKS" "$REPS" <<'PYEOF'
import glob, json, re, statistics, sys, os
import h5py, numpy as np
out, model, R, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
gem = {l.split()[0]: float(l.split()[1]) for l in open(f"{out}/gemm.txt") if l.split() and l.split()[0].endswith("_peak")}
speak, dpeak = gem["sgemm_peak"], gem["dgemm_peak"]
cfg = json.load(open(f"{model}/config.json"))
C = cfg["n_embd"]
layers = [(4 * C, C + 1), (C, 4 * C + 1)] * cfg["n_layer"]          # (nd, na) of mlp.c_fc, mlp.c_proj
P = sum(nd * na for nd, na in layers)

def grab(path, pat, conv=float):
    for l in open(path):
        m = re.search(pat, l)
        if m:
            return [conv(g) for g in m.groups()]
    return None

I = {k: [] for k in ("fit", "covariance", "eigensolve", "lambda", "precondition", "score", "kernel", "self", "base_score", "base_kernel")}
for r in range(1, reps + 1):
    I["fit"] += grab(f"{out}/fit{r}.log", r"^fit: (\S+) s")
    info = " ".join(open(p).read() for p in glob.glob(f"{out}/fit_info{r}*"))
    m = re.search(r"covariance pass (\S+) s, eigensolves (\S+) s, Lambda pass (\S+) s", info)
    for k, v in zip(("covariance", "eigensolve", "lambda"), m.groups()):
        I[k].append(float(v))
    pre, sco = grab(f"{out}/score{r}.log", r"query preconditioning (\S+) s, scoring (\S+) s")
    I["precondition"].append(pre)
    I["score"].append(sco)
    I["kernel"] += grab(f"{out}/score_log{r}.txt", r"^InflScoreKernel\s+\d+\s+\S+\s+(\S+)")
    I["self"] += grab(f"{out}/self{r}.log", r"training examples: (\S+) s")
    if os.path.exists(f"{out}/base{r}.log"):
        I["base_score"].append(grab(f"{out}/base{r}.log", r"query preconditioning (\S+) s, scoring (\S+) s")[1])
        I["base_kernel"] += grab(f"{out}/base_log{r}.txt", r"^InflScoreKernel\s+\d+\s+\S+\s+(\S+)")
T = {k: [] for k in I}
tok = Q = N = None
for p in sorted(glob.glob(f"{out}/torch*.txt")):
    for l in open(p):
        m = re.match(r"stage (\S+)\s+seconds\s+(\S+)", l)
        if m:
            T[m.group(1)].append(float(m.group(2)))
        m = re.search(r"train_windows (\d+) tokens (\d+) queries (\d+)", l)
        if m:
            N, tok, Q = (int(g) for g in m.groups())
if T["covariance"]:
    T["fit"] = [a + b + c for a, b, c in zip(T["covariance"], T["eigensolve"], T["lambda"])]
if tok is None:   # no PyTorch run: the counts from infl's score file
    with h5py.File(f"{out}/scores_all.h5") as f:
        Q, N = f["scores"].shape
    tok = float("nan")
med = lambda v: statistics.median(v) if v else float("nan")

# scoring kernel flops (multiply-add = 2), every layer and training window: the sequence kernel forms each window's
# gradient DW = Ds^T A (2 T nd na over its T tokens) and contracts it with the Q preconditioned queries (2 Q nd na);
# the per-token form, sum_t Ds_t^T P_q a_t, would be 2 T Q nd na
k_seq = sum(2.0 * tok * nd * na + 2.0 * Q * N * nd * na for nd, na in layers)
k_tok = sum(2.0 * tok * Q * nd * na for nd, na in layers)
print(f"\nmodel {model}: n_layer {cfg['n_layer']}, n_embd {C}, EK-FAC on the {len(layers)} MLP layers ({P} parameters);"
      f" {N} training windows, {tok} tokens; {Q} queries; {R} ranks vs {R} PyTorch threads; medians of {reps}")
print(f"sgemm peak {speak:.1f} GFLOP/s, dgemm peak {dpeak:.1f} GFLOP/s (one thread)\n")
print("| pass | infl s | infl tokens/s | PyTorch s | PyTorch tokens/s | infl / PyTorch (time) |")
print("|---|---|---|---|---|---|")
for k in ("covariance", "eigensolve", "lambda", "fit", "precondition", "score", "self"):
    a, b = med(I[k]), med(T[k])
    per = k not in ("eigensolve", "precondition")
    print(f"| {k} | {a:.3f} | {tok / a if per else float('nan'):.0f} | {b:.3f} | {tok / b if per else float('nan'):.0f} | {a / b:.2f} |")
kt = med(I["kernel"])
print(f"\nscoring kernel (InflScoreKernel, max over ranks): {kt:.3f} s of the {med(I['score']):.3f} s scoring pass; "
      f"{k_seq / 1e9:.2f} GFLOP -> {k_seq / kt / 1e9:.1f} GFLOP/s = {k_seq / kt / 1e9 / (speak * R):.2f} of {R} x SGEMM peak "
      f"(the per-token form would be {k_tok / 1e9:.2f} GFLOP: {k_tok / k_seq:.1f}x)")
if I["base_score"]:
    bk = med(I["base_kernel"])
    print(f"baseline scorer: scoring pass {med(I['base_score']):.3f} s, kernel {bk:.3f} s ({k_tok / bk / 1e9:.1f} GFLOP/s on the "
          f"per-token count = {k_tok / bk / 1e9 / (speak * R):.2f} of {R} x SGEMM peak); this scorer's kernel is "
          f"{bk / kt:.1f}x faster, its scoring pass {med(I['base_score']) / med(I['score']):.1f}x")
with h5py.File(f"{out}/scores_all.h5") as f:
    s = f["scores"][()]
if os.path.exists(f"{out}/torch_scores.npy"):
    t = np.load(f"{out}/torch_scores.npy")
    r = [np.corrcoef(s[q], t[q])[0, 1] for q in range(len(s))]
    rel = max(np.abs(s[q] - t[q]).max() / np.abs(t[q]).max() for q in range(len(s)))
    print(f"infl vs PyTorch scores: Pearson min {min(r):.8f}, largest difference {rel:.1e} of the query's largest |score|")
    with h5py.File(f"{out}/self.h5") as f:
        si = f["self_influence"][()]
    ts = np.load(f"{out}/torch_self.npy")
    print(f"infl vs PyTorch self-influence: largest relative difference {np.abs(si - ts).max() / np.abs(ts).max():.1e}")
PYEOF
echo "raw output in $OUT"

#!/usr/bin/env bash
# Benchmark of the Fashion-MNIST MLP study at 1 and 2 ranks, against OpenBLAS GEMM rates and PyTorch, one table.
#   bench/run.sh [BUILD_DIR]      (default build-bench; configure and build it first: cmake --build BUILD_DIR)
# Environment: MODEL (default /tmp/fmrun/fashion-mnist-out/model.safetensors, else trained here for 2 epochs),
#   DATA (/usr/share/datasets/fashion-mnist), N (training examples, 0 = all 60000), QUERIES (100), REPS (1),
#   RANKS ("1 2"), CORETYPE (sets OPENBLAS_CORETYPE for every program of the run; empty = OpenBLAS's own detection),
#   SKIP_TORCH=1.
# Every BLAS call is single-threaded (OPENBLAS_NUM_THREADS=1, torch.set_num_threads per rank-equivalent).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
N=${N:-0}
QUERIES=${QUERIES:-100}
REPS=${REPS:-1}
RANKS=${RANKS:-"1 2"}
OUT=${OUT:-$(mktemp -d /tmp/infl-bench.XXXX)}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_rmaps_base_oversubscribe=1
if [ -n "${CORETYPE:-}" ]; then export OPENBLAS_CORETYPE=$CORETYPE; fi
PY=/usr/bin/python3
MODEL=${MODEL:-/tmp/fmrun/fashion-mnist-out/model.safetensors}
if [ ! -f "$MODEL" ]; then
  MODEL=$OUT/model.safetensors
  mpiexec -n 2 "$BUILD/infl" train -train "idx:$DATA/train" -model_dims 784,256,256,10 -train_epochs 2 -out "$MODEL" >"$OUT/train.log"
fi

. "$ROOT/bench/env.sh"
bench_env | tee "$OUT/env.txt"

"$BUILD/bench/bench_gemm" 3 | tee "$OUT/gemm.txt"
for r in $RANKS; do
  mpiexec -n "$r" "$BUILD/bench/bench_stages" -model "$MODEL" -train "idx:$DATA/train" -query "idx:$DATA/t10k" \
    -train_limit "$N" -queries "$QUERIES" -reps "$REPS" -bench_info "$OUT/info$r" | tee "$OUT/infl$r.txt"
  if [ -z "${SKIP_TORCH:-}" ]; then
    # one rank against one thread; R ranks against R threads
    $PY "$ROOT/bench/ekfac_torch.py" "$MODEL" "$DATA" --limit "$N" --queries "$QUERIES" --threads "$r" --reps "$REPS" | tee "$OUT/torch$r.txt"
  fi
done
echo "load after: $(uptime | sed 's/.*load average: //')" | tee -a "$OUT/env.txt"

# The table: per stage and rank count, time, GFLOP/s, its ratio to the single-thread SGEMM (float stages) or DGEMM
# (double stages) peak times the rank count, examples/s, PyTorch time and infl/PyTorch.
$PY - "$OUT" $RANKS <<'PYEOF'
import sys, re
out, ranks = sys.argv[1], sys.argv[2:]
gem = dict(l.split()[:2] for l in open(f"{out}/gemm.txt") if l.endswith("_peak" + l[l.find("_peak")+5:]) and "_peak" in l)
speak, dpeak = float(gem["sgemm_peak"]), float(gem["dgemm_peak"])
def stages(path):
    d = {}
    try:
        for l in open(path):
            m = re.match(r"stage (\S+)\s+seconds\s+(\S+)(?:\s+gflop\s+(\S+)\s+examples\s+(\S+))?(?:\s+sgflop\s+(\S+)\s+dgflop\s+(\S+))?", l)
            if m: d[m.group(1)] = (float(m.group(2)), float(m.group(3) or 0), float(m.group(4) or 0), float(m.group(5) or 0), float(m.group(6) or 0))
            m = re.match(r"peak_memory_mb (\S+)", l)
            if m: d["_mem"] = float(m.group(1))
    except FileNotFoundError:
        pass
    return d
order = ["train_epoch", "fwd_bwd", "covariance", "eigensolve", "lambda", "precondition", "score", "self"]
print(f"\nsgemm peak {speak:.1f} GFLOP/s, dgemm peak {dpeak:.1f} GFLOP/s (one thread)\n")
print("| stage | ranks | time s | GFLOP/s | time at BLAS peak / time | examples/s | PyTorch s | infl / PyTorch | speed-up 1->R |")
print("|---|---|---|---|---|---|---|---|---|")
base = stages(f"{out}/infl{ranks[0]}.txt")
for r in ranks:
    d, t = stages(f"{out}/infl{r}.txt"), stages(f"{out}/torch{r}.txt")
    for s in order:
        if s not in d: continue
        sec, gf, ex, sg, dg = d[s]
        rate = gf / sec if sec > 0 and gf > 0 else 0
        # the time the stage's single- and double-precision GEMM work takes at the measured peaks, on r ranks
        tpeak = (sg / speak + dg / dpeak) / int(r)
        tt = t.get(s, (0,))[0]
        su = base[s][0] / sec if s in base and sec > 0 else 0
        print(f"| {s} | {r} | {sec:.3f} | {rate:.1f} | {tpeak/sec if sec > 0 else 0:.2f} | {ex/sec if ex and sec else 0:.0f} | {tt:.3f} | {sec/tt if tt else 0:.2f} | {su:.2f} |")
    if "score_kernel" in d and "score" in d:
        print(f"| score (kernel flops only) | {r} | {d['score'][0]:.3f} | {d['score_kernel'][1]/d['score'][0]:.1f} | {d['score_kernel'][1]/d['score'][0]/(speak*int(r)):.2f} | | | | |")
    if "covariance" in d and "fwd_bwd" in d:
        fb = d["fwd_bwd"][0]
        # the least each pass can take: one forward+backward plus its other GEMM work at the measured peaks
        floor = {k: fb + ((d[k][3] - d["fwd_bwd"][1]) / speak + d[k][4] / dpeak) / int(r) for k in ("covariance", "lambda")}
        print(f"| covariance / fwd+bwd, lambda / fwd+bwd | {r} | {d['covariance'][0]/fb:.2f}, {d['lambda'][0]/fb:.2f} | | | | | | |")
        print(f"| the same at BLAS peak (floor) | {r} | {floor['covariance']/fb:.2f}, {floor['lambda']/fb:.2f} | | | | | | |")
    print(f"| peak memory per rank (MB) | {r} | {d.get('_mem', 0):.0f} | | | | | | |")
PYEOF
echo "raw output in $OUT"

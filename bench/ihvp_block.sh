#!/usr/bin/env bash
# Krylov IHVP benchmark (docs/PERFORMANCE.md, docs/FIDELITY.md "Preconditioning"): on the Fashion-MNIST study's model
# (784-256-256-10, from jobs/local.sh or infl train -options_file jobs/fashion-mnist.opts) and its factors:
#  1. Q queries solved together (lockstep CG, one pass over the data per iteration) against one KSP solve per query;
#     both with SOLVE_PC ("-ihvp_deflate 0": no preconditioner); BLOCK_PC (e.g. "-ihvp_deflate 100", the default
#     preconditioner): also the block solve with that;
#  2. CG iterations with each preconditioner of PCS on PC_Q queries over PC_LIMIT examples (PC_Q=0 skips this part).
# Usage: bench/ihvp_block.sh MODEL FACTORS [OUTDIR]; NP (2), LIMIT (training examples, 500), Q (100), DAMPING (1e-3),
# BLOCK_PC (""), PC_LIMIT (2000), PC_Q (4), PCS ("none shell jacobi deflate"; deflate is -ihvp_deflate 100).
set -euo pipefail
model=${1:?model}; factors=${2:?factors}; out=${3:-$PWD/ihvp_bench}
exe=${INFL_EXE:-$(dirname "$0")/../build/infl}
NP=${NP:-2}; LIMIT=${LIMIT:-500}; Q=${Q:-100}; DAMPING=${DAMPING:-1e-3}; PC_LIMIT=${PC_LIMIT:-2000}; PC_Q=${PC_Q:-4}
SOLVE_PC=${SOLVE_PC:--ihvp_deflate 0}; BLOCK_PC=${BLOCK_PC:-}; PCS=${PCS:-none shell jacobi deflate}
mkdir -p "$out"
fm=idx:/usr/share/datasets/fashion-mnist
common=(-model "$model" -factors "$factors" -query "$fm/t10k" -ihvp_curvature empirical -ekfac_damping "$DAMPING"
  -progress_interval 60 -overwrite)
run() { local name=$1; shift; /usr/bin/time -f "$name: %e s wall" mpiexec -n "$NP" "$exe" ihvp "${common[@]}" "$@" >"$out/$name.log" 2>&1; tail -1 "$out/$name.log"; }
# shellcheck disable=SC2086
run block -train "$fm/train" -train_limit "$LIMIT" -query_indices "0:$Q" $SOLVE_PC -out "$out/block.h5"
# shellcheck disable=SC2086
run single -train "$fm/train" -train_limit "$LIMIT" -query_indices "0:$Q" $SOLVE_PC -ihvp_block false -ihvp_ksp_monitor_cancel -out "$out/single.h5"
/usr/bin/python3 - "$out" <<'PY'
import sys, h5py, numpy as np
d = sys.argv[1]
a, b = h5py.File(d + "/block.h5"), h5py.File(d + "/single.h5")
ia, ib = a["/ihvp/iterations"][:], b["/ihvp/iterations"][:]
print("iterations block mean %.1f max %d; single mean %.1f max %d" % (ia.mean(), ia.max(), ib.mean(), ib.max()))
sa, sb = a["/topk/scores"][:], b["/topk/scores"][:]
print("top-k scores: largest relative difference %.2e" % (np.abs(sa - sb).max() / np.abs(sb).max()))
PY
if [ -n "$BLOCK_PC" ]; then
  # shellcheck disable=SC2086
  run block_pc -train "$fm/train" -train_limit "$LIMIT" -query_indices "0:$Q" $BLOCK_PC -out "$out/block_pc.h5"
  grep -E "^ihvp: (deflation|block CG)" "$out/block_pc.log" || true
  /usr/bin/python3 -c "import h5py,sys; i=h5py.File(sys.argv[1])['/ihvp/iterations'][:]; print('iterations with $BLOCK_PC: mean %.1f max %d' % (i.mean(), i.max()))" "$out/block_pc.h5"
fi
[ "$PC_Q" -gt 0 ] || exit 0
for pc in $PCS; do
  case $pc in
    deflate) opt=(-ihvp_deflate 100) ;;
    none) opt=(-ihvp_pc_type none -ihvp_deflate 0) ;;
    *) opt=(-ihvp_pc_type "$pc") ;;
  esac
  run "pc_$pc" -train "$fm/train" -train_limit "$PC_LIMIT" -query_indices "0:$PC_Q" "${opt[@]}" -ihvp_allow_unconverged -out "$out/pc_$pc.h5"
  grep "^ihvp: query" "$out/pc_$pc.log" | sed "s/^/  $pc: /"
done

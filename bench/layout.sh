#!/usr/bin/env bash
# Layer layouts (-layer_groups, docs/FORMATS.md "Layer layout"): time and peak memory per rank of infl score (and,
# with FIT=1, of infl fit) with every layer on every rank (1 group) against the layers spread over as many groups as
# ranks, at 2 and 4 ranks, on the MLP 784-2048-2048-10 of docs/PERFORMANCE.md (trained here for one epoch on 2,000
# Fashion-MNIST images unless MODEL names one), 2,000 training examples, Q queries; then the default layout chosen by
# -mem_limit (LIMIT, 4 ranks).  With SPLIT=1 instead: fit and score with whole layers in one group against the layers
# split over all ranks (-layer_split true) at 2 and 4 ranks, then fit and score at 4 ranks under -mem_limit LIMIT
# alone.  Prints one line per run; the numbers go to docs/PERFORMANCE.md.
#   bench/layout.sh [EXE]      (EXE: the infl executable, default build/infl; Q=4, LIMIT=500M, FIT=0, SPLIT=0)
set -eu
EXE=${1:-build/infl}; EXE=$(readlink -f "$EXE")
Q=${Q:-4}; LIMIT=${LIMIT:-500M}; FIT=${FIT:-0}; SPLIT=${SPLIT:-0}
F=${INFL_FMNIST:-/usr/share/datasets/fashion-mnist}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
dir=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/layout_bench.XXXXXX")}
mkdir -p "$dir" && cd "$dir"
echo "bench/layout.sh: $(date -u +%F) $(uname -n), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $EXE; in $dir"
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=$dir/wide.safetensors
  [ -f "$MODEL" ] || "$EXE" train -train idx:$F/train -train_limit 2000 -model_dims 784,2048,2048,10 -train_epochs 1 -out "$MODEL" > train.log
fi
c="-train idx:$F/train -train_limit 2000 -model $MODEL -ekfac_damping 1e-4"
q="-query idx:$F/t10k -query_indices 0:$Q"
summary() { # STAGE LOG: seconds, peak and factor bytes per rank
  local t pk fb
  t=$(grep -Eo "^$1: [0-9.]+ s$" "$2" | grep -Eo '[0-9.]+' | head -1 || true)
  [ -z "$t" ] && t=$(grep -Eo "query preconditioning [0-9.]+ s, scoring [0-9.]+ s" "$2" | head -1 || true)
  pk=$(grep -Eo "$1: peak memory per rank [0-9]+ MiB" "$2" | grep -Eo '[0-9]+ MiB' || true)
  fb=$(grep -Eo "$1: factor bytes per rank [0-9.]+ MiB \(max over ranks; [0-9.]+ MiB in all, [0-9]+ layer groups?(, each layer split over [0-9]+ ranks)?\)" "$2" | sed "s/^$1: //" || true)
  echo "$t | peak $pk | $fb"
}
if [ "$SPLIT" = 1 ]; then
  for np in 2 4; do
    for sp in false true; do
      t=${np}_$sp
      mpiexec --oversubscribe -n $np "$EXE" fit $c -layer_groups 1 -layer_split $sp -out f_$t.h5 -overwrite > fit_$t.log 2>&1
      echo "fit   ranks $np split $sp: $(summary fit fit_$t.log)"
      mpiexec --oversubscribe -n $np "$EXE" score $c -factors f_$t.h5 $q -layer_groups 1 -layer_split $sp -out s_$t.h5 -overwrite > score_$t.log 2>&1
      echo "score ranks $np split $sp: $(summary score score_$t.log)"
    done
  done
  for st in fit score; do
    f=""; [ $st = score ] && f="-factors f_lim.h5 $q"
    if mpiexec --oversubscribe -n 4 "$EXE" $st $c $f -mem_limit "$LIMIT" -out ${st:0:1}_lim.h5 -overwrite > ${st}_lim.log 2>&1; then
      echo "$st ranks 4 -mem_limit $LIMIT: $(summary $st ${st}_lim.log)"
    else
      echo "$st ranks 4 -mem_limit $LIMIT: refused: $(grep -m1 -o 'error: .*' ${st}_lim.log)"
    fi
  done
  exit 0
fi
[ -f f.h5 ] || mpiexec --oversubscribe -n 4 "$EXE" fit $c -layer_groups 4 -out f.h5 -overwrite > fit.log 2>&1
for np in 2 4; do
  for G in 1 $np; do
    if [ "$FIT" = 1 ]; then
      mpiexec --oversubscribe -n $np "$EXE" fit $c -layer_groups $G -out f_${np}_$G.h5 -overwrite > fit_${np}_$G.log 2>&1
      echo "fit   ranks $np groups $G: $(summary fit fit_${np}_$G.log)"
    fi
    mpiexec --oversubscribe -n $np "$EXE" score $c -factors f.h5 $q -layer_groups $G -out s_${np}_$G.h5 -overwrite > score_${np}_$G.log 2>&1
    echo "score ranks $np groups $G: $(summary score score_${np}_$G.log)"
  done
done
if mpiexec --oversubscribe -n 4 "$EXE" score $c -factors f.h5 $q -mem_limit "$LIMIT" -out s_lim.h5 -overwrite > score_lim.log 2>&1; then
  echo "score ranks 4 -mem_limit $LIMIT: $(summary score score_lim.log)"
else
  echo "score ranks 4 -mem_limit $LIMIT: refused: $(grep -m1 -o 'error: .*' score_lim.log)"
fi

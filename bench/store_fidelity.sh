#!/bin/bash
# Store-based scores (infl project + infl score -store) against EK-FAC scores on Fashion-MNIST (docs/FIDELITY.md):
# a 784-256-256-10 MLP trained 2 epochs, EK-FAC (true Fisher) scores of 20 test queries against the 60,000 training
# examples, Kronecker stores 16/16, 32/32, 64/32 and a Gaussian (TRAK) store of k = 1024 on the first 5,000 examples,
# each scored with the identity and the damped projected Fisher.  usage: bench/store_fidelity.sh [OUTDIR]
set -eu
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); EXE=${INFL_EXE:-$repo/build/infl}
OUT=${1:-store-fidelity-out}; mkdir -p "$OUT"; cd "$OUT"
F=/usr/share/datasets/fashion-mnist
MP="mpiexec --oversubscribe -n 2"
[ -f model.safetensors ] || $MP $EXE train -train idx:$F/train -test idx:$F/t10k -model_dims 784,256,256,10 -train_epochs 2 -train_batch 128 -train_lr 1e-3 -train_seed 0 -out model.safetensors > train.log 2>&1
[ -f factors.h5 ] || $MP $EXE fit -model model.safetensors -train idx:$F/train -ekfac_fisher true -ekfac_seed 0 -out factors.h5 > fit.log 2>&1
Q="-query idx:$F/t10k -query_indices 0:20 -score_save_all"
[ -f ekfac.h5 ] || { /usr/bin/time -f "%e s" $MP $EXE score -model model.safetensors -factors factors.h5 -train idx:$F/train $Q -out ekfac.h5 > ekfac.log 2>&1; }
for cfg in "k16 -project_in 16 -project_out 16" "k32 -project_in 32 -project_out 32" "k64 -project_in 64 -project_out 32"; do
  n=${cfg%% *}; o=${cfg#* }
  [ -f store_$n.h5 ] || $MP $EXE project -model model.safetensors -train idx:$F/train -project_kind kronecker $o -out store_$n.h5 > project_$n.log 2>&1
  for c in identity fisher; do
    [ -f sc_${n}_$c.h5 ] || $MP $EXE score -store store_$n.h5 -model model.safetensors $Q -store_curvature $c -out sc_${n}_$c.h5 > score_${n}_$c.log 2>&1
  done
done
# TRAK on the first 5,000 training examples (a dense projection of all 60,000 is beyond this machine)
for cfg in "trak1024 -project_kind gaussian -project_dim 1024" ; do
  n=${cfg%% *}; o=${cfg#* }
  [ -f store_$n.h5 ] || $MP $EXE project -model model.safetensors -train idx:$F/train -train_limit 5000 $o -project_chunk 1250 -out store_$n.h5 > project_$n.log 2>&1
  for c in identity fisher; do
    [ -f sc_${n}_$c.h5 ] || $MP $EXE score -store store_$n.h5 -model model.safetensors $Q -store_curvature $c -out sc_${n}_$c.h5 > score_${n}_$c.log 2>&1
  done
done
/usr/bin/python3 "$repo/bench/store_fidelity.py" .

#!/bin/bash
# Store-based scores on the 10k Fashion-MNIST LDS study (docs/FIDELITY.md, "Gradient store scores ... LDS"):
# Kronecker stores 16/16, 32/32, 64/32 and a Gaussian (TRAK) store of k = 2048 on the first 10,000 training
# examples, each scored on the study's 100 queries (t10k 0:100, -score_save_all) with the identity and the damped
# projected Fisher; then the Pearson correlation with exact EK-FAC scores and the LDS of every scores file.
# Inputs (made by `infl lds ... -out lds10k.h5` and `infl run ... -outdir s10k` of FIDELITY.md's LDS section): the
# study's model, lds10k.h5, and the single model's exact EK-FAC scores (-score_save_all; after an `infl run -ensemble`
# in the same outdir these are s10k/ensemble/scores-0.h5, as s10k/scores.h5 then holds the ensemble's).
#   usage: bench/store_lds.sh MODEL.safetensors LDS.h5 EKFAC_SCORES.h5 [OUTDIR]
set -eu
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); EXE=${INFL_EXE:-$repo/build/infl}
[ $# -ge 3 ] || { echo "usage: $0 MODEL.safetensors LDS.h5 EKFAC_SCORES.h5 [OUTDIR]" >&2; exit 1; }
MODEL=$(realpath "$1"); LDS=$(realpath "$2"); EK=$(realpath "$3")
OUT=${4:-store-lds-out}; mkdir -p "$OUT"; cd "$OUT"
cp -n "$MODEL" model.safetensors; cp -n "$LDS" lds.h5; cp -n "$EK" ekfac.h5
F=/usr/share/datasets/fashion-mnist
MP="mpiexec --oversubscribe -n 2"
C="-train idx:$F/train -train_limit 10000"
Q="-query idx:$F/t10k -query_indices 0:100 -score_save_all -score_topk 10"
T="/usr/bin/time -f %e"
for cfg in "k16 -project_kind kronecker -project_in 16 -project_out 16" "k32 -project_kind kronecker -project_in 32 -project_out 32" \
  "k64 -project_kind kronecker -project_in 64 -project_out 32" "trak2048 -project_kind gaussian -project_dim 2048 -project_chunk 1250"; do
  n=${cfg%% *}; o=${cfg#* }
  [ -f store_$n.h5 ] || $T -o time_project_$n $MP $EXE project -model model.safetensors $C $o -out store_$n.h5 > project_$n.log 2>&1
  for c in identity fisher; do
    [ -f sc_${n}_$c.h5 ] || $T -o time_score_${n}_$c $MP $EXE score -store store_$n.h5 -model model.safetensors $Q -store_curvature $c -out sc_${n}_$c.h5 > score_${n}_$c.log 2>&1
  done
done
/usr/bin/python3 "$repo/bench/store_fidelity.py" . | tee pearson.md
list=ekfac.h5; for f in sc_*.h5; do list=$list,$f; done
$MP $EXE lds -lds lds.h5 -scores $list 2>&1 | tee lds.txt

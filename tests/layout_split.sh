#!/usr/bin/env bash
# Split layers (-layer_split true, include/infl/layout.h): inside a layer group of E > 1 ranks each layer's factors
# are split block-cyclically over the E ranks (rows of A, S, Lambda; eigenvectors; pdsyevd on a 1 x E grid).
# factors.h5 still holds whole matrices: a split fit at 2-4 ranks (1 or 2 groups) equals the one-rank fit within the
# bound of docs/FORMATS.md (MLP and GPT-2 sequences), a split fit stopped in the covariance pass and in the Lambda
# pass resumes at other split layouts (the checkpoint is written and read by pieces too).
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
dir=$(mktemp -d "$PWD/layout_split.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
. "$SRC/tests/lib/counted.sh" # check, run, expect
# MLP 784-24-16-10 (3 layers), 600 examples: tau = 2 d u + 2 N 2^-53 in single precision, d = 785
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 785 * 2^-24 + 2 * 600 * 2^-53 }')
c="-train idx:$F/train -train_limit 600 -model $SRC/tests/ref/mlp_small.safetensors"
factors() { # factors() REF FILE LAYERS...: the fitted factors of FILE against REF
  local ref=$1 f=$2; shift 2
  for l in "$@"; do
    check $H5CMP trace $TAU $ref $f /layers/$l/A
    check $H5CMP trace $TAU $ref $f /layers/$l/S
    check $H5CMP max $TAU $ref $f /layers/$l/eigenvalues_A
    check $H5CMP max $TAU $ref $f /layers/$l/eigenvalues_S
    check $H5CMP sum $TAU $ref $f /layers/$l/Lambda
  done
}
run 1 fit $c -out f_1.h5 && run 1 self $c -factors f_1.h5 -out x_1.h5
for t in "2 1" "3 1" "4 2"; do
  set -- $t; np=$1; G=$2
  run $np fit $c -layer_split true -layer_groups $G -ekfac_chunk 97 -out f_${np}_$G.h5 || continue
  expect "$G layer group$([ $G = 1 ] || echo s), each layer split over $((np / G)) ranks)"
  factors f_1.h5 f_${np}_$G.h5 0 1 2
  # self-influence from the split factors (each rank its rows of the rotated gradients, summed over the group)
  run $np self $c -factors f_${np}_$G.h5 -layer_split true -layer_groups $G -self_chunk 50 -out x_$np.h5 && check $H5CMP self $TAU x_1.h5 x_$np.h5 /self_influence f_1.h5
done
# stopped in the covariance pass at 4 ranks in 2 groups, then in the Lambda pass at 2 ranks, finished at 3 ranks
$MPIEXEC --oversubscribe -n 4 "$EXE" fit $c -layer_split true -layer_groups 2 -ekfac_chunk 20 -checkpoint_stop_after 3 -out f_r.h5 > last.log 2>&1
st=$?; [ $st = 3 ] && [ -f f_r.h5.partial ] && pass=$((pass + 1)) || { cat last.log; echo "FAILED: stop with status 3 (got $st)"; fail=$((fail + 1)); }
$MPIEXEC --oversubscribe -n 2 "$EXE" fit $c -layer_split true -ekfac_chunk 100 -checkpoint_stop_after 2 -out f_r.h5 > last.log 2>&1
st=$?; [ $st = 3 ] && pass=$((pass + 1)) || { cat last.log; echo "FAILED: stop with status 3 (got $st)"; fail=$((fail + 1)); }
expect "resuming pass 1"
expect "infl fit (Lambda pass): stopping after step 2"
run 3 fit $c -layer_split true -ekfac_chunk 30 -out f_r.h5 && expect "resuming pass 2"
factors f_1.h5 f_r.h5 0 1 2
# GPT-2 (8 linear layers, byte-level, 44 windows of tokens): Lambda of sequences; tau with d = 513, N = the tokens
R=$SRC/tests/ref
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 513 * 2^-24 + 2 * 6000 * 2^-53 }')
g="-model $R/gpt2_bytes -train text:$R/gpt2_bytes_text.txt"
run 1 fit $g -out gf_1.h5 && run 1 self $g -factors gf_1.h5 -out gx_1.h5
run 4 fit $g -layer_split true -layer_groups 2 -ekfac_chunk 5 -out gf_s.h5 && factors gf_1.h5 gf_s.h5 0 3 7
run 3 self $g -factors gf_s.h5 -layer_split true -self_chunk 7 -out gx_s.h5 && check $H5CMP self $TAU gx_1.h5 gx_s.h5 /self_influence gf_1.h5
echo "layout_split: $pass passed, $fail failed"
[ $fail = 0 ]

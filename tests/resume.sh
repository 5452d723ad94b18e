#!/usr/bin/env bash
# Kill `infl fit`, `infl score` and `infl self` at random points (SIGTERM as Slurm sends it, and SIGKILL), rerun with
# varying rank counts until they finish, and compare with an uninterrupted run.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
# The agreement promised across rank counts and chunkings (docs/FORMATS.md), single precision (the default):
# tau = 2 d u + 2 N 2^-53 with d = 785 (the model's widest input plus bias) and N = 3000 examples
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 785 * 2^-24 + 2 * 3000 * 2^-53 }')
TAU2=$(awk -v t="$TAU" 'BEGIN { printf "%.6e", 2 * t }')
dir=$(mktemp -d "$PWD/resume.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
MODEL=$SRC/tests/ref/mlp_small.safetensors
common="-train idx:$F/train -train_limit 3000 -model $MODEL"
. "$SRC/tests/lib/checks.sh" # check, run, expect_error
# interrupted OUT ARGS: killed at random points and rerun until it finishes (tests/lib/kill_resume.sh)
. "$SRC/tests/lib/kill_resume.sh"
# fit
check [ "$(run 2 fit $common -out fit_ref.h5)" = 0 ]
check interrupted "$dir/fit.h5" fit $common -ekfac_chunk 50
# factors: covariances to 2 tau trace, eigenvalues to 2 tau of the largest, Lambda's basis-independent total to 2 tau
# (entries of Lambda depend on the eigenbasis, which nearly equal eigenvalues leave undetermined: not promised)
for ds in /layers/0/A /layers/1/A /layers/1/S /layers/2/S; do check $H5CMP trace $TAU2 fit_ref.h5 fit.h5 $ds; done
for ds in /layers/0/eigenvalues_A /layers/2/eigenvalues_S; do check $H5CMP max $TAU2 fit_ref.h5 fit.h5 $ds; done
for ds in /layers/0/Lambda /layers/1/Lambda /layers/2/Lambda; do check $H5CMP sum $TAU2 fit_ref.h5 fit.h5 $ds; done
check [ ! -e fit.h5.partial ]
# score
sc="-factors fit_ref.h5 -query idx:$F/t10k -query_indices 0:12 -score_save_all -score_chunk 64"
check [ "$(run 2 score $common $sc -out score_ref.h5)" = 0 ]
check interrupted "$dir/score.h5" score $common $sc
check $H5CMP topk $TAU score_ref.h5 score.h5 /topk
check $H5CMP topk $TAU score_ref.h5 score.h5 /bottomk
check $H5CMP scores $TAU score_ref.h5 score.h5 /scores
# self
check [ "$(run 2 self $common -factors fit_ref.h5 -self_chunk 64 -out self_ref.h5)" = 0 ]
check interrupted "$dir/self.h5" self $common -factors fit_ref.h5 -self_chunk 64
check $H5CMP self $TAU2 self_ref.h5 self.h5 /self_influence fit_ref.h5
# train (resumed at other rank counts: the trajectory is rank-invariant), compared by the loss of the two models; the
# recipe of language models (AdamW, warm-up, cosine schedule on the global step, clipping), so that a resumption
# must restore the step counter and the moments
tr="-train idx:$F/train -train_limit 2000 -model_dims 784,16,10 -train_epochs 2 -train_batch 50 -train_optimizer adamw -train_warmup 10 -train_schedule cosine -train_clip 1"
check [ "$(run 2 train $tr -out train_ref.safetensors)" = 0 ]
KR_FIRST="-train_stop_after 30" check interrupted "$dir/train.safetensors" train $tr
l1=$($MPIEXEC -n 1 "$EXE" eval -model train_ref.safetensors -data idx:$F/t10k -data_limit 2000 | awk '/mean loss/ {print $5}')
l2=$($MPIEXEC -n 1 "$EXE" eval -model train.safetensors -data idx:$F/t10k -data_limit 2000 | awk '/mean loss/ {print $5}')
echo "test loss uninterrupted $l1, resumed $l2"
check awk -v a="$l1" -v b="$l2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5 * a) }'
# a partial file of another computation is refused
cp score.h5 other.h5.partial 2>/dev/null
st=$(run 1 self $common -factors fit_ref.h5 -out other.h5)
check [ "$st" = 1 ]
check grep -q "holds the progress of another run" last.log || cat last.log
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

#!/usr/bin/env bash
# Layer groups chosen by -mem_limit alone (no -layer_groups; include/infl/layout.h, docs/FORMATS.md "Layer layout"):
# an MLP 784-1024-1024-10 (87.7 MiB of factors) at 2 ranks.  -mem_limit 180M cannot hold the fit's two copies of
# every layer, 200M not the scorer's factors plus its preconditioned queries, 150M not self's factors with its float
# copies of the eigenbases, so fit, score and self each choose 2 layer groups and print the factor bytes per rank of
# the larger group (layers 0 and 2: 47.7 MiB).  Scoring counts its queries: with the factors alone (87.7 MiB) one group would have looked big enough,
# and the score was then refused; so it is for the scoring of infl run -ensemble, and for infl run's scoring of the
# factors it has just fitted.  Factors, scores,
# top-k lists and self-influence agree with one rank holding every layer within the bound of docs/FORMATS.md.  Every
# stage's peak memory per rank, as the program measures it (VmHWM; infl run resets it at each stage), stays under
# the limit: infl run once kept the scorer, the model's double copy of its weights and split layers' scratch beside
# self-influence, which then peaked at 206 MiB under -mem_limit 180M, and counted none of the data sets it keeps for
# its summary (the query data: 15.9 MiB per rank here).
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; H5CMP=${INFL_H5CMP:?}
dir=$(mktemp -d "$PWD/layout_mem.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
. "${INFL_SOURCE_DIR:?}/tests/lib/counted.sh" # check, run, expect
# the model: one epoch on 300 examples (its weights only need to be the same for every run below)
run 1 train -train idx:$F/train -train_limit 300 -model_dims 784,1024,1024,10 -train_epochs 1 -out w.safetensors || exit 1
# tau = 2 d u + 2 N 2^-53 in single precision, d = 1025
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 1025 * 2^-24 + 2 * 600 * 2^-53 }')
c="-train idx:$F/train -train_limit 600 -model w.safetensors -ekfac_damping 1e-3"
q="-query idx:$F/t10k -query_indices 0:3 -score_save_all -score_topk 5"
run 1 fit $c -out f_1.h5 && run 1 score $c -factors f_1.h5 $q -out s_1.h5 && expect "score: factor bytes per rank 87.7 MiB (max over ranks; 87.7 MiB in all, 1 layer group)"
run 1 self $c -factors f_1.h5 -out x_1.h5
if run 2 fit $c -mem_limit 180M -out f_2.h5; then
  expect "fit: factor bytes per rank 47.7 MiB (max over ranks; 87.7 MiB in all, 2 layer groups)"
  peaks 180
  expect "group 1 (ranks 1-1): layers 0 2 (47.7 MiB)"
  for l in 0 1 2; do
    check $H5CMP trace $TAU f_1.h5 f_2.h5 /layers/$l/A
    check $H5CMP trace $TAU f_1.h5 f_2.h5 /layers/$l/S
    check $H5CMP sum $TAU f_1.h5 f_2.h5 /layers/$l/Lambda
  done
fi
if run 2 score $c -factors f_1.h5 $q -mem_limit 200M -out s_2.h5; then
  expect "score: factor bytes per rank 47.7 MiB (max over ranks; 87.7 MiB in all, 2 layer groups)"
  peaks 200
  check $H5CMP scores $TAU s_1.h5 s_2.h5 /scores
  check $H5CMP topk $TAU s_1.h5 s_2.h5 /topk
  check $H5CMP topk $TAU s_1.h5 s_2.h5 /bottomk
fi
# a limit that no layout of the scorer holds (the factors split over both ranks, the queries, the training and query
# data and the saved scores) is refused before the factors are read and the queries preconditioned
if ! $MPIEXEC --oversubscribe -n 2 "$EXE" score $c -factors f_1.h5 $q -mem_limit 120M -out bad.h5 -overwrite > last.log 2>&1; then
  pass=$((pass + 1))
  expect "-mem_limit 120M (120 MiB per rank) cannot hold the"
  expect "that infl score keeps whatever the chunk size plus one example ("
  expect "MiB) in the layer layout that needs the least (1 layer group, each layer split over 2 ranks); raise -mem_limit or use more ranks"
  if grep -q "query preconditioning" last.log; then cat last.log; echo "FAILED: refused only after preconditioning"; fail=$((fail + 1)); else pass=$((pass + 1)); fi
else
  cat last.log; echo "FAILED: infl score under -mem_limit 120M not refused"; fail=$((fail + 1))
fi
# infl run -ensemble 2 with each member on both ranks, reusing the members' models and factors (w.safetensors and
# f_1.h5 as both): a member's scoring loads the factors in the layer groups of the score stage, its queries and the
# study's data sets (held beside every member: 16.8 MiB per rank) counted, so 200M splits each layer over the 2 ranks
# (loaded as for self-influence, one group looked big enough and the score was refused); the member's scores equal
# the 1-rank ones
mkdir -p e/ensemble && cp f_1.h5 e/factors.h5 && cp f_1.h5 e/ensemble/factors-1.h5 && cp w.safetensors e/ensemble/model-1.safetensors
if $MPIEXEC --oversubscribe -n 2 "$EXE" run -ensemble 2 -ensemble_group_size 2 -outdir e -model w.safetensors $c $q -mem_limit 200M > last.log 2>&1; then
  pass=$((pass + 1))
  expect "score: factor bytes per rank 44.0 MiB (max over ranks; 87.7 MiB in all, 1 layer group, each layer split over 2 ranks)"
  peaks 200
  check $H5CMP scores $TAU s_1.h5 e/ensemble/scores-0.h5 /scores
else
  cat last.log; echo "FAILED: infl run -ensemble 2 under -mem_limit 200M"; fail=$((fail + 1))
fi
# infl run fitting its factors under -mem_limit 196M: fit picks 2 groups of whole layers (47.7 MiB), where the scorer's
# queries no longer fit (198 MiB); the score stage loads the fitted factors again in its own layout (each layer split
# over the 2 ranks) instead of refusing to score in fit's.  Fit and self-influence count the query data the run keeps
# for its summary, so 180M, which the fit alone holds, is refused before the fit begins, naming the option and what
# to do.  (Not `run`, whose -overwrite would train the model again.)
if $MPIEXEC --oversubscribe -n 2 "$EXE" run -outdir r -model w.safetensors $c $q -mem_limit 196M > last.log 2>&1; then
  pass=$((pass + 1))
  expect "fit: factor bytes per rank 47.7 MiB (max over ranks; 87.7 MiB in all, 2 layer groups)"
  expect "score: factor bytes per rank 44.0 MiB (max over ranks; 87.7 MiB in all, 1 layer group, each layer split over 2 ranks)"
  peaks 196
  check $H5CMP scores $TAU s_1.h5 r/scores.h5 /scores
  check $H5CMP self $TAU x_1.h5 r/self_influence.h5 /self_influence f_1.h5
else
  cat last.log; echo "FAILED: infl run under -mem_limit 196M"; fail=$((fail + 1))
fi
if ! $MPIEXEC --oversubscribe -n 2 "$EXE" run -outdir r180 -model w.safetensors $c $q -mem_limit 180M > last.log 2>&1; then
  pass=$((pass + 1))
  expect "-mem_limit 180M (180 MiB per rank) cannot hold the"
  expect "that infl fit keeps whatever the chunk size (with what the run keeps for its later steps) plus one example"
  expect "raise -mem_limit or use more ranks"
else
  cat last.log; echo "FAILED: infl run under -mem_limit 180M not refused"; fail=$((fail + 1))
fi
if run 2 self $c -factors f_2.h5 -mem_limit 150M -out x_2.h5; then
  expect "self: factor bytes per rank 47.7 MiB (max over ranks; 87.7 MiB in all, 2 layer groups)"
  peaks 150
  check $H5CMP self $TAU x_1.h5 x_2.h5 /self_influence f_1.h5
fi
# refused before the work they would follow: infl run with 8 queries under 190M, which the fit holds (182 MiB) but no
# layout of the score stage (205 MiB), before the fit (it was refused after it); a malformed -mem_limit before the
# training (it was read first by the fit); infl ihvp under a limit below its Krylov stage before the first solve (it
# solved, then was refused by its scoring pass, naming infl score)
refused() { # NAME TEXT UNWANTED: the last command failed, last.log has TEXT and no line with UNWANTED
  if [ "$rc" != 0 ] && grep -qF -- "$2" last.log && ! grep -q -- "$3" last.log; then pass=$((pass + 1)); echo "ok: $1 refused"
  else cat last.log; echo "FAILED: $1 (exit status $rc, expected \"$2\" and no \"$3\")"; fail=$((fail + 1)); fi
}
$MPIEXEC --oversubscribe -n 2 "$EXE" run -outdir r190 -model w.safetensors $c -query idx:$F/t10k -query_indices 0:8 -score_save_all -mem_limit 190M > last.log 2>&1; rc=$?
refused "run under 190M" "-mem_limit 190M (190 MiB per rank) cannot hold the 205 MiB that infl score keeps whatever the chunk size plus one example (" "peak memory"
$MPIEXEC --oversubscribe -n 2 "$EXE" run -outdir rbad -train idx:$F/train -train_limit 100 -model_dims 784,8,10 -train_epochs 1 $q -mem_limit 2X > last.log 2>&1; rc=$?
refused "run under -mem_limit 2X" "-mem_limit 2X: give bytes per rank as a positive number" "== train"
# with -help the options are listed (exit 0), whatever their values
run 1 run -mem_limit 2X -help && expect "-mem_limit <"
$MPIEXEC --oversubscribe -n 2 "$EXE" ihvp $c -factors f_1.h5 -query idx:$F/t10k -query_indices 0:2 -mem_limit 100M -out ih.h5 > last.log 2>&1; rc=$?
refused "ihvp under 100M" "-mem_limit 100M (100 MiB per rank) cannot hold the" "ihvp: query"
echo "layout_mem: $pass passed, $fail failed"
[ $fail = 0 ]

#!/usr/bin/env bash
# infl project and infl score -store end to end: the store at several rank counts and chunk sizes agrees within the
# bound of docs/FORMATS.md; a store build killed at random points (SIGTERM as Slurm sends it, and SIGKILL) and rerun
# with varying rank counts until it finishes equals an uninterrupted one, and so does a store-based scoring killed and
# resumed; TracIn over two stores runs; bad inputs give one clear error.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
# tau = 2 d u + 2 N 2^-53, single precision, d = 785 (the model's widest input plus bias), N = 1500 examples
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 785 * 2^-24 + 2 * 1500 * 2^-53 }')
dir=$(mktemp -d "$PWD/store.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
MODEL=$SRC/tests/ref/mlp_small.safetensors
common="-train idx:$F/train -train_limit 1500 -model $MODEL"
. "$SRC/tests/lib/checks.sh" # check, run, expect_error
# rank counts and chunk sizes: kronecker and rademacher.  A dense projection regenerates its rows of R for every
# chunk (it never holds R whole), so its small chunk is 37 (14 chunks a rank, the last partial), not kronecker's 7
# (72 chunks: 5 times the Philox draws, 20 s at 3 ranks).
for kind in "kronecker -project_in 16 -project_out 8:7" "rademacher -project_dim 64:37"; do
  small=${kind##*:} kind=${kind%:*}
  name=${kind%% *}
  check [ "$(run 1 project $common -project_kind $kind -project_chunk 64 -out ${name}_1.h5)" = 0 ]
  check [ "$(run 3 project $common -project_kind $kind -project_chunk $small -out ${name}_3.h5)" = 0 ]
  check [ "$(run 4 project $common -project_kind $kind -project_chunk 1000 -out ${name}_4.h5)" = 0 ]
  for o in 3 4; do check $H5CMP store $TAU ${name}_1.h5 ${name}_$o.h5 /gradients; done
  check $H5CMP max $TAU ${name}_1.h5 ${name}_3.h5 /losses
  check $H5CMP max $TAU ${name}_1.h5 ${name}_4.h5 /train_norms
done
# interrupted OUT ARGS: killed at random points and rerun until it finishes (tests/lib/kill_resume.sh)
. "$SRC/tests/lib/kill_resume.sh"
# (k = 32: a chunk draws its rows of R, k x 19410 normal numbers, so the cost is k times the chunks of every attempt)
g="-project_kind gaussian -project_dim 32"
check [ "$(run 2 project $common $g -project_chunk 64 -out gauss_ref.h5)" = 0 ]
check interrupted "$dir/gauss.h5" project $common $g -project_chunk 16
check $H5CMP store $TAU gauss_ref.h5 gauss.h5 /gradients
check $H5CMP max $TAU gauss_ref.h5 gauss.h5 /losses
check [ ! -e gauss.h5.partial ]
check [ ! -e gauss.h5.partial.done ]
# store-based scores of both stores: the top-k lists agree up to near-ties within the score bound
sc="-query idx:$F/t10k -query_indices 0:6 -score_save_all -model $MODEL"
check [ "$(run 2 score -store gauss_ref.h5 $sc -out sc_ref.h5)" = 0 ]
check [ "$(run 3 score -store gauss.h5 $sc -store_curvature fisher -score_chunk 50 -out sc.h5)" = 0 ]
check $H5CMP topk $TAU sc_ref.h5 sc.h5 /topk
check $H5CMP scores $TAU sc_ref.h5 sc.h5 /scores
# store scoring killed at random points and resumed at other rank counts: the same scores (tests/lib/kill_resume.sh)
check interrupted "$dir/sck.h5" score -store gauss_ref.h5 $sc -score_chunk 20
check $H5CMP topk $TAU sc_ref.h5 sck.h5 /topk
check $H5CMP topk $TAU sc_ref.h5 sck.h5 /bottomk
check $H5CMP scores $TAU sc_ref.h5 sck.h5 /scores
check [ ! -e sck.h5.partial ]
# TracIn over two stores (values checked in test_project.c): scores and self-influence run end to end
check [ "$(run 2 project $common -project_kind kronecker -project_in 16 -project_out 8 -project_seed 1 -out kron_seed1.h5)" = 0 ]
check [ "$(run 3 score -store kronecker_1.h5,kron_seed1.h5 -model $MODEL,$MODEL -tracin_lr 0.5,2 -store_curvature identity -query idx:$F/t10k -query_indices 0:6 -score_save_all -out tracin.h5)" = 0 ]
check [ "$(run 2 self -store kronecker_1.h5,kron_seed1.h5 -tracin_lr 0.5,2 -out tracin_self.h5)" = 0 ]
check expect_error "-tracin_lr gives 1 learning rates for 2 stores" 1 self -store kronecker_1.h5,kron_seed1.h5 -tracin_lr 0.5 -out bad6.h5
check expect_error "identity" 1 score -store kronecker_1.h5,kron_seed1.h5 -model $MODEL,$MODEL -query idx:$F/t10k -out bad7.h5
check [ "$(run 1 project -train idx:$F/train -train_limit 100 -model $MODEL -project_in 16 -project_out 8 -out kron_small.h5)" = 0 ]
check expect_error "must be built on the same training data" 1 score -store kronecker_1.h5,kron_small.h5 -model $MODEL,$MODEL -store_curvature identity -query idx:$F/t10k -out bad8.h5
# bad input: one clear error
check expect_error "was built with the model of sha256 .* give the model the store was built with" 2 score -store gauss_ref.h5 -model $SRC/tests/ref/gpt2_tiny -query idx:$F/t10k -out bad1.h5
check expect_error "-project_dim 30000 is larger than the 19410 parameters" 2 project $common -project_kind gaussian -project_dim 30000 -out bad2.h5
check expect_error "-project_in 0 must be positive" 1 project $common -project_in 0 -out bad3.h5
check expect_error "-store_damping -1\.? must be a finite number >= 0" 1 score -store gauss_ref.h5 $sc -store_damping -1 -out bad4.h5
check expect_error "-store_block_size 0 must be positive" 1 score -store gauss_ref.h5 $sc -store_block_size 0 -out bad4.h5
check expect_error "-store_panel_rows -1 must be >= 0" 1 score -store gauss_ref.h5 $sc -store_panel_rows -1 -out bad4.h5
check expect_error "is not a gradient store" 1 score -store sc_ref.h5 $sc -out bad5.h5
check expect_error "is the input .* of this stage" 1 score -store gauss_ref.h5 $sc -out gauss_ref.h5 -overwrite
# damaged stores and overflowing weights: one error naming the file, the dataset and the entry (or the option), and no
# output with a non-finite value (infl self -store wrote the NaN of a damaged /train_norms into /self_influence)
poke() { # FILE DATASET BYTE-OFFSET PRINTF-BYTES: overwrite bytes of a contiguous dataset
  printf "$4" | dd of="$1" bs=1 seek=$(($(h5dump -p -H -d "$2" "$1" | awk '/OFFSET/ { print $2 }') + $3)) conv=notrunc status=none
}
cp kron_small.h5 dmg_norm.h5 && poke dmg_norm.h5 /train_norms 80 '\x00\x00\x00\x00\x00\x00\xf8\x7f'      # entry 10 NaN
cp kron_small.h5 dmg_gram.h5 && poke dmg_gram.h5 /gram 8000 '\x00\x00\x00\x00\x00\x00\xf8\x7f'         # (2, 232) NaN
cp kron_small.h5 dmg_rows.h5 && poke dmg_rows.h5 /gradients $((4 * (384 * 70 + 7))) '\x00\x00\xc0\x7f'   # (70, 7) NaN
sq="-model $MODEL -query idx:$F/t10k -query_indices 0:3"
check expect_error "dmg_norm.h5: dataset /train_norms holds nan .*at entry 10 .*rebuild it with infl project" 2 self -store kron_small.h5,dmg_norm.h5 -tracin_lr 1,1 -out bad9.h5
check expect_error "TracIn self-influence of training example [0-9]+ overflows .*lower the -tracin_lr weights" 2 self -store kron_small.h5 -tracin_lr 1e308 -out bad9.h5
check expect_error "dmg_gram.h5: /gram holds a non-finite value \(entry \(2, 232\).*rebuild it with infl project" 3 score -store dmg_gram.h5 $sq -out bad9.h5
check expect_error "dmg_rows.h5: /gradients holds nan .*at entry \(70, 7\).*rebuild it with infl project" 2 score -store kron_small.h5,dmg_rows.h5 -model $MODEL,$MODEL -query idx:$F/t10k -query_indices 0:3 -store_curvature identity -tracin_lr 1,1 -out bad9.h5
check expect_error "overflows .*lower the -tracin_lr weights" 2 score -store kron_small.h5 $sq -store_curvature identity -tracin_lr 1e308 -out bad9.h5
check [ ! -e bad9.h5 ]
# -score_topk beyond the store's examples: every example kept, and the file says so (topk_requested, topk_note)
check [ "$(run 2 score -store kron_small.h5 $sq -score_topk 100000 -out topk_all.h5)" = 0 ]
check grep -q '(0): 100000' <(h5dump -a topk_requested topk_all.h5)
check grep -q '( 3, 100 )' <(h5dump -H -d /topk/train_indices topk_all.h5)
check [ ! -e bad1.h5 ]
check [ ! -e bad2.h5 ]
echo "store.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]

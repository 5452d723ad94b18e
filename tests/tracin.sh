#!/usr/bin/env bash
# TracIn end to end: infl train -checkpoint_every keeps OUT.ckpt-EPOCH with the learning rate of the schedule in its
# metadata (an MLP's file, a GPT-2's directory); infl score -method tracin over them agrees at 1 and 3 ranks within the
# bound of docs/FORMATS.md; infl self -method tracin equals the store-based TracIn self-influence (both exact gradient
# norms); per-layer terms of a GPT-2 with -tracin_layers mlp; TF-IDF candidates (-score_tfidf_topk) keep pairs of
# the full TracIn matrix; the report's per-layer bars name each checkpoint's layers; bad inputs give one clear error
# (an -out that is one of the -checkpoints is refused).  Values against torch: tests/test_tracin.c.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
# tau = 2 d u + 2 N 2^-53: d = 785 (the widest input plus bias), N = 400 examples, single precision
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 785 * 2^-24 + 2 * 400 * 2^-53 }')
dir=$(mktemp -d "$PWD/tracin.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
. "$SRC/tests/lib/checks.sh" # check, run, expect_error
lr_of() { grep -a -o '"train_lr":"[^"]*"' "$1" | cut -d'"' -f4; }

# --- MLP: 400 examples, batch 40 (10 steps per epoch), SGD with a cosine schedule over 20 steps
tr="-train idx:$F/train -train_limit 400"
check [ "$(run 2 train $tr -model_dims 784,16,10 -train_epochs 2 -train_batch 40 -train_optimizer sgd -train_lr 0.05 -train_schedule cosine -checkpoint_every 1 -out m.safetensors)" = 0 ]
check [ -f m.safetensors.ckpt-1 ] && check [ -f m.safetensors.ckpt-2 ]
check grep -q "kept checkpoint m.safetensors.ckpt-2 (epoch 2, step 20" last.log
# train_lr: the rate of the epoch's last step t = 9, 19 (0-based) of T = 20: lr_min + (lr - lr_min)(1 + cos(pi t / T)) / 2
for e in 1 2; do
  want=$(awk -v t=$((10 * e - 1)) 'BEGIN { pi = atan2(0, -1); printf "%.12e", 0.005 + 0.5 * (1 + cos(pi * t / 20)) * 0.045 }')
  got=$(lr_of m.safetensors.ckpt-$e)
  check awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-12 * b) }'
done
check [ "$(lr_of m.safetensors)" = "$(lr_of m.safetensors.ckpt-2)" ] # the final model records its own state
ev() { $MPIEXEC -n 1 "$EXE" eval -model "$1" -data idx:$F/t10k -data_limit 200 | awk '/mean loss/ {print $5}'; }
check [ "$(ev m.safetensors)" = "$(ev m.safetensors.ckpt-2)" ]
ck=m.safetensors.ckpt-1,m.safetensors.ckpt-2
sc="-query idx:$F/t10k -query_indices 0:5 -score_save_all"
check [ "$(run 1 score -method tracin -checkpoints $ck $tr $sc -out s1.h5)" = 0 ]
check grep -q "checkpoint 2 m.safetensors.ckpt-2, learning rate $(lr_of m.safetensors.ckpt-2 | awk '{printf "%g", $1}')" last.log
check [ "$(run 3 score -method tracin -checkpoints $ck $tr $sc -score_chunk 7 -score_per_layer -out s3.h5)" = 0 ]
check $H5CMP scores $TAU s1.h5 s3.h5 /scores
check $H5CMP topk $TAU s1.h5 s3.h5 /topk
check $H5CMP topk $TAU s1.h5 s3.h5 /bottomk
check grep -q "( 4, 5, 10 )" <(h5dump -H -d /topk/per_layer s3.h5) # 2 checkpoints x 2 layers
# self-influence: through captures vs from the stores of the two checkpoints (exact gradient norms)
check [ "$(run 2 self -method tracin -checkpoints $ck $tr -out self.h5)" = 0 ]
for e in 1 2; do check [ "$(run 2 project $tr -model m.safetensors.ckpt-$e -project_in 8 -project_out 8 -out st$e.h5)" = 0 ]; done
check [ "$(run 3 self -store st1.h5,st2.h5 -tracin_lr "$(lr_of m.safetensors.ckpt-1),$(lr_of m.safetensors.ckpt-2)" -out self_store.h5)" = 0 ]
check $H5CMP max $TAU self.h5 self_store.h5 /self_influence
# without -tracin_lr the stores weigh each checkpoint by the train_lr infl project recorded from it (they were weighed 1)
check [ "$(run 2 self -store st1.h5,st2.h5 -out self_store_lr.h5)" = 0 ]
check $H5CMP max $TAU self.h5 self_store_lr.h5 /self_influence
check [ "$(run 1 project $tr -model $SRC/tests/ref/mlp_small.safetensors -project_in 8 -project_out 8 -out st_nolr.h5)" = 0 ]
check expect_error "the store st_nolr.h5 records no learning rate .*give the learning rates with -tracin_lr" 2 self -store st1.h5,st_nolr.h5 -out bad_lr.h5
check expect_error "checkpoint .*mlp_small.safetensors \(of the store st_nolr.h5\) records no learning rate" 2 score -store st1.h5,st_nolr.h5 -model m.safetensors.ckpt-1,$SRC/tests/ref/mlp_small.safetensors -store_curvature identity -query idx:$F/t10k -query_indices 0:2 -out bad_lr.h5

# --- GPT-2 (byte-level, one block): checkpoints are directories; per-layer terms of the MLP layers
T=text:$SRC/tests/ref/gpt2_bytes_text.txt
check [ "$(run 2 train -train $T -gpt2_n_layer 1 -gpt2_n_embd 16 -gpt2_n_head 2 -gpt2_n_positions 16 -train_epochs 2 -train_batch 22 -train_lr 1e-3 -checkpoint_every 1 -out g)" = 0 ]
check [ -f g.ckpt-1/config.json ] && check [ "$(lr_of g.ckpt-2/model.safetensors)" = 0.001 ]
check [ "$(run 2 score -method tracin -checkpoints g.ckpt-1,g.ckpt-2 -tracin_layers mlp -train $T -query $T -query_indices 0:3 -score_per_layer -score_per_token -score_save_all -out gs.h5)" = 0 ]
check grep -q "( 4, 3, 10 )" <(h5dump -H -d /topk/per_layer gs.h5) # 2 checkpoints x 2 MLP layers
check $H5CMP pertoken $TAU gs.h5 gs.h5 /per_token
check [ "$(run 1 self -method tracin -checkpoints g.ckpt-1,g.ckpt-2 -train $T -out gself.h5)" = 0 ]
# TF-IDF candidates (-score_tfidf_topk): each query scores only its 4 candidates; the same at 1 and 3 ranks, every kept
# pair a candidate with the score of the full TracIn matrix (gs.h5)
tf="-method tracin -checkpoints g.ckpt-1,g.ckpt-2 -tracin_layers mlp -train $T -query $T -query_indices 0:3 -score_tfidf_topk 4 -score_topk 2"
check [ "$(run 1 score $tf -out gt1.h5)" = 0 ]
check [ "$(run 3 score $tf -score_chunk 5 -out gt3.h5)" = 0 ]
check h5diff -q gt1.h5 gt3.h5 /tfidf/candidates
for l in /topk /bottomk; do for f in gt1.h5 gt3.h5; do check $H5CMP kept $TAU gs.h5 $f $l; done; done
# the report's per-layer bars name each checkpoint's layers
check [ "$(run 1 report -scores s3.h5 $tr -query idx:$F/t10k -out r.html)" = 0 ]
check grep -q "checkpoint 2 layer 1" r.html

# --- bad input: one clear error
check expect_error "records no learning rate .* -tracin_lr" 2 score -method tracin -checkpoints $SRC/tests/ref/mlp_small.safetensors $tr $sc -out bad1.h5
check expect_error "-tracin_lr gives 1 learning rates for 2 checkpoints" 1 self -method tracin -checkpoints $ck -tracin_lr 0.1 $tr -out bad2.h5
check expect_error "learning rate of TracIn checkpoint 2 is -1" 1 self -method tracin -checkpoints $ck -tracin_lr 0.1,-1 $tr -out bad3.h5
check expect_error "-checkpoint_every -1 must be a number of epochs >= 0" 1 train $tr -model_dims 784,16,10 -checkpoint_every -1 -out bad4.safetensors
check expect_error "TracIn checkpoint 2 has" 1 score -method tracin -checkpoints $SRC/tests/ref/mlp_small.safetensors,m.safetensors -tracin_lr 1,1 $tr $sc -out bad5.h5
check expect_error "-layer_groups 2: TracIn .* has no EK-FAC factors" 2 self -method tracin -checkpoints $ck -layer_groups 2 $tr -out bad6.h5
check expect_error "output m.safetensors.ckpt-2 is the input m.safetensors.ckpt-2 of this stage" 1 score -method tracin -checkpoints $ck $tr $sc -out m.safetensors.ckpt-2 -overwrite
check [ "$(lr_of m.safetensors.ckpt-2)" != "" ] # the checkpoint is intact
check [ ! -e bad1.h5 ]
echo "tracin.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]

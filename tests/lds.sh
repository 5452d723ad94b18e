#!/usr/bin/env bash
# infl lds end to end.  (1) The LDS infl prints for committed lds.h5 files equals numpy/scipy's
# (tests/ref/make_lds_reference.py: a synthetic file with ties, a diverged subset and a constant query, and an lds.h5
# infl wrote for the tiny study below).  (2) The tiny study (Fashion-MNIST train 0..299, MLP 784-32-10, 5 epochs of
# batch 32, 6 subsets of 150) retrained at 1, 3 and 4 ranks (groups of 1 and of 2 ranks): the same masks as the
# committed file (exactly), query losses within 1e-4 of the largest (rounding of the gradient sums of 2-rank groups)
# and the same LDS; (3) stopped after a round (-checkpoint_stop_after) and inside every subset's training
# (-train_stop_after), then resumed at other rank counts: the same lds.h5; (4) diverging subsets are reported and left
# out; (5) an ensemble of 2 runs and is evaluated; (6) bad inputs give one clear error; (7) leave-one-out and mislabel
# detection: the correlations and detection rates infl prints for the committed tests/ref/lds_tiny_eval.h5 equal
# numpy/scipy's (make_lds_reference.py /tiny_eval, which also checks the flips against the Python Philox), retrained
# at 3 ranks the same leave-one-out losses (groups of one rank: the same arithmetic); stopped inside the mislabel
# model's training and between leave-one-out rounds, resumed at 2 and 1 ranks: the committed values; a section added
# to an existing file.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
dir=$(mktemp -d "$PWD/lds.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
REF=$SRC/tests/ref
# the LDS values numpy/scipy computed for the committed files (tests/ref/lds_ref.h5: /synth and /tiny, attribute lds)
SYNTH_LDS=0.024488
TINY_LDS=0.554286
# leave-one-out Pearson and Spearman, and the detection rates (EK-FAC, identity) at the top 10, 20, 50% that
# numpy/scipy computed from tests/ref/lds_tiny_eval.h5 (lds_ref.h5 /tiny_eval)
TINY_LOO="0.379693 0.329922"
TINY_MIS="0.500000 0.300000,0.600000 0.533333,0.900000 0.666667"
cat > tiny.opts <<EOF
-train idx:$F/train
-train_limit 300
-test idx:$F/t10k
-model_dims 784,32,10
-train_epochs 5
-train_batch 32
-train_lr 1e-3
-train_seed 0
-ekfac_fisher true
-query_indices 0:5
-score_topk 5
EOF
. "$SRC/tests/lib/checks.sh" # check, run, expect_error
lds_of() { grep -E "^LDS " "$1" | awk -v f="$2" '$NF ~ f { print $2 }' | head -1; }
same() { [ "$1" = "$2" ] || { echo "'$1' != '$2'"; return 1; }; }
loo_of() { grep -E "^LOO Pearson" "$1" | head -1 | awk '{ print $3, $5 }'; }
mis_of() { grep -E "^mislabel top" "$1" | awk '{ s = s (NR > 1 ? "," : "") $5 " " $7 } END { print s }'; }

# (1) committed files against scipy
check [ "$(run 2 lds -lds $REF/lds_synth.h5 -scores $REF/lds_synth_scores.h5)" = 0 ]
check same "$(lds_of last.log lds_synth_scores)" $SYNTH_LDS
check grep -q "5 queries, 8 subsets" last.log
check grep -q "1 of 9 subsets diverged" last.log
check [ "$(run 1 lds -lds $REF/lds_tiny.h5 -scores $REF/lds_tiny_scores.h5)" = 0 ]
check same "$(lds_of last.log lds_tiny_scores)" $TINY_LDS

# (2) retrained at 1 rank and by one group of 2 ranks
common="-options_file tiny.opts -lds_subsets 6 -scores $REF/lds_tiny_scores.h5 -progress_interval 1000"
check [ "$(run 1 lds $common -out l1.h5)" = 0 ]
L1=$(lds_of last.log lds_tiny_scores)
check grep -q "6 subsets to run in 1 rank group" last.log
check $H5CMP max 0 $REF/lds_tiny.h5 l1.h5 /masks
check $H5CMP max 1e-3 $REF/lds_tiny.h5 l1.h5 /query_losses
check [ "$(run 2 lds $common -lds_group_size 2 -out l2.h5)" = 0 ]
check grep -q "6 subsets to run in 1 rank group of about 2 ranks" last.log
check same "$(lds_of last.log lds_tiny_scores)" "$L1"
check $H5CMP max 0 l1.h5 l2.h5 /masks
check $H5CMP max 1e-4 l1.h5 l2.h5 /query_losses
# the finished file is reused (no training) and evaluated again to the same value
check [ "$(run 2 lds $common -out l1.h5)" = 0 ]
check grep -q "using l1.h5" last.log
check same "$(lds_of last.log lds_tiny_scores)" "$L1"

# (3) stopped and resumed at other rank counts (groups of 1 to 3 ranks): between rounds, then inside every subset's
# training
check [ "$(run 2 lds $common -checkpoint_stop_after 1 -out r.h5)" = 3 ]
check [ -f r.h5.partial ] && check [ ! -f r.h5 ]
check [ "$(run 3 lds $common -out r.h5)" = 0 ]
check grep -q "resuming from r.h5.partial (2 of 6 subsets finished)" last.log
check $H5CMP max 0 l1.h5 r.h5 /masks
check $H5CMP max 1e-4 l1.h5 r.h5 /query_losses
check [ ! -e r.h5.partial ]
tries=0; st=3; resumed=0
while [ "$st" = 3 ] && [ $tries -lt 12 ]; do
  tries=$((tries + 1))
  st=$(run 3 lds $common -train_stop_after 9 -out t.h5)
  grep -q "train: resuming from" last.log && resumed=$((resumed + 1))
done
echo "stopped inside training: finished after $tries runs, $resumed resumed a subset's training"
check [ "$st" = 0 ]
check [ $resumed -ge 2 ]
check $H5CMP max 1e-4 l1.h5 t.h5 /query_losses
check [ -z "$(ls t.h5.subset-* 2>/dev/null)" ]

# (4) every subset diverges (a learning rate of 1e30): each is reported, lds.h5 records them, no LDS can be computed
check expect_error "at least 3 subsets whose training succeeded; 0 of 4" 2 lds -options_file tiny.opts -lds_subsets 4 -train_lr 1e30 -scores $REF/lds_tiny_scores.h5 -out d.h5
check [ "$(grep -c "diverged and is left out" last.log)" = 4 ]
check [ -f d.h5 ]

# (5) infl run -ensemble 2 on the tiny study: two members (the study's model and seed 1) trained by two groups,
# combined (values checked in test_lds.c), the LDS of the ensemble printed; a rerun reuses the members
check [ "$(run 2 run -options_file tiny.opts -outdir ens -ensemble 2 -score_save_all)" = 0 ]
check grep -q "2 members to run in 2 rank groups" last.log
check grep -q "combining the scores of 2 models (normalization query)" last.log
check [ -f ens/ensemble/scores-1.h5 ] && check [ -f ens/report.html ]
# the summary and the lines of infl run: self computed, the combined scores' top proponent of query 0, the report
check grep -qx "== self" last.log
check grep -q "^Top proponents and opponents" last.log
check grep -qx "report: ens/report.html" last.log
top0() { h5dump -d /topk/train_indices -y -w 0 -o top.txt "$1" > /dev/null && tr -s ', \n' '\n' < top.txt | grep -v '^$' | head -1; }
check [ "$(sed -n 's/^  proponents:  \([0-9]*\):.*/\1/p' last.log | head -1)" = "$(top0 ens/scores.h5)" ]
# (with -ensemble_save_members, whose dataset /ensemble/member_scores could not be created: its group did not exist;
# and -score_topk beyond the training set, which padded the lists with -1 / NaN instead of keeping every example)
check [ "$(run 2 run -options_file tiny.opts -outdir ens -ensemble 2 -score_save_all -ensemble_normalize none -ensemble_save_members -score_topk 100000)" = 0 ]
check grep -q '(0): 100000' <(h5dump -a topk_requested ens/scores.h5)
check [ "$(h5dump -d /topk/train_indices ens/scores.h5 | grep -c -- '-1')" = 0 ]
nq=$(h5dump -H -d /scores ens/scores.h5 | sed -n 's/.*DATASPACE  SIMPLE { ( \([0-9]*\), \([0-9]*\) ).*/\1, \2/p')
check grep -q "DATASPACE  SIMPLE { ( 2, $nq )" <(h5dump -H -d /ensemble/member_scores ens/scores.h5)
check [ "$(grep -c "ensemble member [01]: using" last.log)" = 4 ] # the models and the scores of both
check grep -qx "== self: using ens/self_influence.h5" last.log
check grep -q "^Top proponents and opponents" last.log
check [ "$(run 1 lds -lds l1.h5 -scores ens/ensemble/scores-0.h5,ens/scores.h5)" = 0 ]
check [ "$(grep -c "^LDS " last.log)" = 2 ]

# (6) bad input
check expect_error "holds no full score matrix /scores.*-score_save_all" 1 lds -lds l1.h5 -scores $REF/lds_synth.h5
check expect_error "lds_synth_scores.h5 scores 40 training examples but l1.h5 has subsets of 300" 1 lds -lds l1.h5 -scores $REF/lds_synth_scores.h5
check expect_error "give the scores files to evaluate with -scores" 1 lds -lds l1.h5
check expect_error "exists and was made with other settings" 1 lds $common -lds_seed 3 -out l1.h5
check expect_error "-lds_subsets 2: give at least 3 subsets" 1 lds -options_file tiny.opts -lds_subsets 2 -out x.h5
check expect_error "-lds_fraction 1.5 must lie in" 1 lds -options_file tiny.opts -lds_subsets 4 -lds_fraction 1.5 -out x.h5
check expect_error "unknown or unused option.*-lds_subset " 1 lds -options_file tiny.opts -lds_subset 4 -out x.h5
check expect_error "-lds_subsets 2000000000: the masks.* GiB per rank, more than the .* GiB of memory of this machine: give fewer subsets" 2 lds -options_file tiny.opts -lds_subsets 2000000000 -out x.h5
check expect_error "-lds_loo_seeds 2000000000: the losses of .* GiB of memory of this machine" 1 lds -options_file tiny.opts -lds_loo 0:2 -lds_loo_seeds 2000000000 -out x.h5
check expect_error "-lds_group_size 3: give 0 \(chosen by infl\) or a number of ranks in \[1, 2\]" 2 lds -options_file tiny.opts -lds_subsets 4 -lds_group_size 3 -out x.h5
check expect_error "-ensemble_group_size -1: give 0 \(chosen by infl\) or a number of ranks in \[1, 2\]" 2 run -options_file tiny.opts -outdir ens -ensemble 2 -ensemble_group_size -1
check [ ! -e x.h5 ]

# (7) leave-one-out and mislabel detection
check [ "$(run 1 lds -lds $REF/lds_tiny_eval.h5 -scores $REF/lds_tiny_scores.h5)" = 0 ]
check same "$(loo_of last.log)" "$TINY_LOO"
check same "$(mis_of last.log)" "$TINY_MIS"
check grep -q "30 of 300 labels flipped" last.log
ev="-options_file tiny.opts -lds_loo 0:6 -lds_mislabel_fraction 0.1 -lds_mislabel_top 10,20,50 -scores $REF/lds_tiny_scores.h5 -progress_interval 1000"
loo="-options_file tiny.opts -lds_loo 0:6 -scores $REF/lds_tiny_scores.h5 -progress_interval 1000"
check [ "$(run 3 lds $loo -out e3.h5)" = 0 ]
check grep -q "7 models to run in 3 rank groups of about 1 rank" last.log
check same "$(loo_of last.log)" "$TINY_LOO"
check $H5CMP max 0 $REF/lds_tiny_eval.h5 e3.h5 /loo/query_losses
check [ -z "$(ls e3.h5.* 2>/dev/null)" ]
check [ "$(run 2 lds $loo -out e3.h5)" = 0 ]
check grep -q "using e3.h5" last.log
# mislabel only, stopped inside its training, resumed at the committed file's 2 ranks: its values exactly
check [ "$(run 2 lds -options_file tiny.opts -lds_mislabel_fraction 0.1 -lds_mislabel_top 10,20,50 -train_stop_after 20 -out m.h5)" = 3 ]
check [ "$(run 2 lds -options_file tiny.opts -lds_mislabel_fraction 0.1 -lds_mislabel_top 10,20,50 -out m.h5)" = 0 ]
check grep -q "train: resuming from" last.log
check same "$(mis_of last.log)" "$TINY_MIS"
check $H5CMP max 0 $REF/lds_tiny_eval.h5 m.h5 /mislabel/self_influence
check $H5CMP max 0 $REF/lds_tiny_eval.h5 m.h5 /mislabel/self_influence_identity
# leave-one-out added to that file, stopped after its first round, resumed at 1 rank; the mislabel section is kept
check [ "$(run 2 lds $ev -checkpoint_stop_after 1 -out m.h5)" = 3 ]
check [ -f m.h5.loo.partial ]
check [ "$(run 1 lds $ev -out m.h5)" = 0 ]
check grep -q "resuming from m.h5.loo.partial (2 of 7 leave-one-out models finished)" last.log
check [ "$(grep -c "lds mislabel: training" last.log)" = 0 ]
check same "$(loo_of last.log)" "$TINY_LOO"
check same "$(mis_of last.log)" "$TINY_MIS"
check $H5CMP max 0 $REF/lds_tiny_eval.h5 m.h5 /loo/query_losses
check [ ! -e m.h5.loo.partial ]
# bad input
check expect_error "-lds_loo: training index 300 is outside the training set, which has 300 examples" 1 lds -options_file tiny.opts -lds_loo 299,300 -out x.h5
check expect_error "-lds_loo_seeds 0 must be >= 1" 1 lds -options_file tiny.opts -lds_loo 1 -lds_loo_seeds 0 -out x.h5
check expect_error "-lds_mislabel_fraction 1.5 must lie in" 1 lds -options_file tiny.opts -lds_mislabel_fraction 1.5 -out x.h5
check expect_error "-lds_mislabel_top 150.*must lie in \(0, 100\]" 1 lds -options_file tiny.opts -lds_mislabel_fraction 0.1 -lds_mislabel_top 10,150 -out x.h5
check expect_error "or -lds_loo or -lds_mislabel_fraction" 1 lds -options_file tiny.opts -out x.h5
check expect_error "holds leave-one-out results of other settings" 1 lds $loo -lds_loo 0:5 -out e3.h5

echo "lds: $pass checks passed, $fail failed"
[ $fail -eq 0 ]

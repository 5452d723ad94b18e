#!/usr/bin/env bash
# infl lds and infl run -ensemble on a language-model study: a tiny byte-level GPT-2 (1 block, width 8, 2 heads,
# windows of 16 bytes) trained for 6 epochs with AdamW on the 44 windows of tests/ref/gpt2_bytes_text.txt, 3 prompt/completion
# queries (the loss of the completion, as infl score measures it).
#   (1) The LDS and the corrupted-document detection infl prints for the committed tests/ref/lds_text.h5 equal
#       numpy/scipy's (tests/ref/make_lds_reference.py --text: also the masks and the corrupted windows against the
#       Python Philox).
#   (2) Retrained at 1 rank: the masks and corrupted windows of the committed file exactly, its query losses and
#       self-influences within 1e-4 relative, the same LDS; by 2 groups of one rank at 2 ranks: the same file
#       exactly; by one group of 2 ranks: within 1e-4 (rounding of the gradient sums).  The "init" hash of its recipe
#       line is the one infl train prints for its initial model (the same fresh GPT-2).
#   (3) Stopped after a round and inside a subset's and the corrupted model's training, resumed at other rank counts:
#       the same lds.h5; killed for real (SIGTERM to the ranks, as Slurm sends it) while the subsets retrain, resumed:
#       the same lds.h5.
#   (4) infl run -ensemble 2 on the study: two GPT-2s trained by two groups, combined, evaluated by infl lds.
#   (5) Windows of the data as queries.
#   (6) Diverging subsets are reported and recorded.
#   (7) Bad input: -model_dims on text data, both -query and -query_prompts.
#   (8) The tokenizer found as the stages that read the study's model find it: without -tokenizer, the BPE files
#       beside the study's -model (tests/ref/bpe_small, 262 tokens) give the same retrained query losses as
#       -tokenizer; a vocabulary of 262 without them is refused naming the directory looked in.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
dir=$(mktemp -d "$PWD/ldstext.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
REF=$SRC/tests/ref
. "$SRC/tests/lib/checks.sh" # check, run, expect_error
. "$SRC/tests/lib/kill_resume.sh" # kill_ranks
# numpy/scipy on tests/ref/lds_text.h5 and lds_text_scores.h5 (lds_ref.h5 /text): the LDS and the detection rates
# (EK-FAC, identity) at the top 25 and 50%
TEXT_LDS=0.485714
TEXT_MIS="0.181818 0.272727,0.454545 0.363636"
printf 'The cat\n>>>\n sat on\n%%\nAll\n>>>\n that glit\n%%\nTime\n>>>\n flies\n' > prompts.txt
cat > text.opts <<EOF
-train text:$REF/gpt2_bytes_text.txt
-gpt2_n_layer 1
-gpt2_n_embd 8
-gpt2_n_head 2
-gpt2_n_positions 16
-train_epochs 6
-train_batch 8
-train_optimizer adamw
-train_lr 1e-2
-train_seed 0
-query_prompts prompts.txt
-ekfac_layers mlp
-score_topk 4
EOF
lds_of() { grep -E "^LDS " "$1" | awk -v f="$2" '$NF ~ f { print $2 }' | head -1; }
mis_of() { grep -E "^mislabel top" "$1" | awk '{ s = s (NR > 1 ? "," : "") $5 " " $7 } END { print s }'; }
same() { [ "$1" = "$2" ] || { echo "'$1' != '$2'"; return 1; }; }
h5same() { # A B TOL: every dataset of lds.h5 within TOL (masks and corrupted windows exactly)
  $H5CMP max 0 "$1" "$2" /masks && $H5CMP max 0 "$1" "$2" /mislabel/flipped && $H5CMP max 0 "$1" "$2" /status &&
    $H5CMP max "$3" "$1" "$2" /query_losses && $H5CMP max "$3" "$1" "$2" /mislabel/self_influence &&
    $H5CMP max "$3" "$1" "$2" /mislabel/self_influence_identity
}

# (1) the committed file against numpy/scipy
check [ "$(run 1 lds -lds $REF/lds_text.h5 -scores $REF/lds_text_scores.h5)" = 0 ]
check same "$(lds_of last.log lds_text_scores)" $TEXT_LDS
check same "$(mis_of last.log)" "$TEXT_MIS"
check grep -q "11 of 44 documents (windows) corrupted" last.log

# (2) retrained
common="-options_file text.opts -lds_subsets 6 -lds_mislabel_fraction 0.25 -lds_mislabel_top 25,50 -scores $REF/lds_text_scores.h5 -progress_interval 1000"
check [ "$(run 1 lds $common -out l1.h5)" = 0 ]
check grep -q "6 subsets of 22 of the 44 training examples, 3 queries; recipe: gpt2 vocab 256 positions 16" last.log
# the recipe's numbers printed the shortest way that reads back (0.9, not 0.90000000000000002)
check grep -q "recipe: .* lr 0.01 momentum " last.log
check bash -c '! grep "recipe: " last.log | sed "s/init [0-9a-f]*//" | grep -qE "[0-9]{10}"'
check grep -q "training on the corrupted documents" last.log
check same "$(lds_of last.log lds_text_scores)" $TEXT_LDS
check same "$(mis_of last.log)" "$TEXT_MIS"
check h5same $REF/lds_text.h5 l1.h5 1e-4
init=$(grep -o "init [0-9a-f]*" last.log | head -1 | cut -d' ' -f2)
# the initial model that infl train prints is the recipe's fresh GPT-2 (the same hash: the model hash files record)
grep -v -e query_prompts -e ekfac_layers -e score_topk text.opts > train.opts
check [ "$(run 1 train -options_file train.opts -train_epochs 1 -out tm)" = 0 ]
check grep -q "initialized with seed 0 (before training): .* sha256 $init\.\.\." last.log
check [ "$(run 2 lds $common -lds_group_size 1 -out g1.h5)" = 0 ]
check grep -q "6 subsets to run in 2 rank groups" last.log
check $H5CMP max 0 l1.h5 g1.h5 /query_losses
check [ "$(run 2 lds $common -lds_group_size 2 -out g2.h5)" = 0 ]
check h5same l1.h5 g2.h5 1e-4
check same "$(lds_of last.log lds_text_scores)" $TEXT_LDS

# (3) stopped after a round at 2 ranks, resumed at 1; stopped inside the subsets' and the corrupted model's training
check [ "$(run 2 lds $common -lds_group_size 1 -checkpoint_stop_after 1 -out r.h5)" = 3 ]
check [ -f r.h5.partial ] && check [ ! -f r.h5 ]
check [ "$(run 1 lds $common -out r.h5)" = 0 ]
check grep -q "resuming from r.h5.partial (2 of 6 subsets finished)" last.log
check $H5CMP max 0 l1.h5 r.h5 /query_losses
check h5same l1.h5 r.h5 1e-4
tries=0; st=3; resumed=0
while [ "$st" = 3 ] && [ $tries -lt 16 ]; do
  tries=$((tries + 1))
  st=$(run 2 lds $common -lds_group_size 1 -train_stop_after 8 -out t.h5)
  grep -q "train: resuming from" last.log && resumed=$((resumed + 1))
done
echo "stopped inside training: finished after $tries runs, $resumed resumed a model's training"
check [ "$st" = 0 ]
check [ $resumed -ge 2 ]
check h5same l1.h5 t.h5 1e-4
check [ -z "$(ls t.h5.* 2>/dev/null)" ]
# killed by SIGTERM at 2 ranks once round 1 of 3 is done (its subsets' training stops at a step and checkpoints);
# a kill that came after the end (the poll is slower than the run) is tried again with a new output
killed=""
for a in 1 2 3; do
  $MPIEXEC --oversubscribe -n 2 "$EXE" lds $common -lds_group_size 1 -out k$a.h5 > kill.log 2>&1 &
  pid=$!
  n=0
  while [ $n -lt 1200 ] && ! grep -q "round 1 of 3" kill.log && kill -0 $pid 2>/dev/null; do sleep 0.05; n=$((n + 1)); done
  kill_ranks $pid TERM kill.log
  wait $pid; st=$?
  [ -f k$a.h5 ] || { killed=k$a.h5; break; }
done
echo "killed while retraining: $killed (status $st)"
check [ -n "$killed" ] && check [ "$st" = 3 ] && check [ -f $killed.partial ]
# the rounds of these tiny models take milliseconds, so the kill may land in a later stage (the corrupted documents'
# training, whose model has its own partial file): the message names the partial file of the stage it stopped
grep -q "interrupted by a signal; its progress is saved in $killed\." kill.log || sed "s/^/  kill.log: /" kill.log
check grep -q "interrupted by a signal; its progress is saved in $killed\." kill.log
check [ "$(run 1 lds $common -out $killed)" = 0 ]
check grep -q "resuming from $killed.partial" last.log
check $H5CMP max 0 l1.h5 $killed /query_losses
check h5same l1.h5 $killed 1e-4
check [ -z "$(ls $killed.* 2>/dev/null)" ]

# (4) an ensemble of 2 GPT-2s, evaluated against l1.h5
check [ "$(run 2 run -options_file text.opts -outdir ens -ensemble 2 -score_save_all)" = 0 ]
check grep -q "2 members to run in 2 rank groups" last.log
check grep -q "combining the scores of 2 models (normalization query)" last.log
check [ -f ens/model/model.safetensors ] && check [ -f ens/ensemble/model-1/model.safetensors ] && check [ -f ens/report.html ]
check [ "$(run 1 lds -lds l1.h5 -scores ens/ensemble/scores-0.h5,ens/ensemble/scores-1.h5,ens/scores.h5)" = 0 ]
check [ "$(grep -c "^LDS " last.log)" = 3 ]

# (5) windows of the data as queries (their whole loss): 4 queries of the training text; the same masks
grep -v query_prompts text.opts > windows.opts
check [ "$(run 2 lds -options_file windows.opts -query text:$REF/gpt2_bytes_text.txt -query_indices 0:44:11 -lds_subsets 6 -out w.h5)" = 0 ]
check grep -q "6 subsets of 22 of the 44 training examples, 4 queries" last.log
check $H5CMP max 0 l1.h5 w.h5 /masks

# (6) every subset diverges (a learning rate of 1e30): each is reported, lds.h5 records them, no LDS can be computed
check expect_error "at least 3 subsets whose training succeeded; 0 of 3" 1 lds -options_file text.opts -lds_subsets 3 -train_lr 1e30 -scores $REF/lds_text_scores.h5 -out d.h5
check [ "$(grep -c "diverged and is left out" last.log)" = 3 ]
check [ -f d.h5 ]

# (7) bad input
check expect_error "give either -query .* or -query_prompts prompts.txt, not both" 1 lds -options_file text.opts -query text:$REF/gpt2_bytes_text.txt -lds_subsets 3 -out x.h5
check expect_error "-model_dims is an MLP option, but the -train data are token sequences" 1 lds -options_file text.opts -model_dims 16,4 -lds_subsets 3 -out x.h5

# (8) the tokenizer beside the study's model (a directory holding its files, as infl train leaves them)
mkdir bm em && cp $REF/bpe_small/vocab.json $REF/bpe_small/merges.txt bm/
bpe="-options_file text.opts -train_epochs 1 -lds_subsets 3"
check [ "$(run 1 lds $bpe -model bm -out b1.h5)" = 0 ]
check grep -q "tokenizer: the files beside the study's model, in bm" last.log
check grep -q "recipe: gpt2 vocab 262 positions 16" last.log
check [ "$(run 1 lds $bpe -tokenizer $REF/bpe_small -out b2.h5)" = 0 ]
check $H5CMP max 0 b1.h5 b2.h5 /query_losses
check expect_error "-gpt2_vocab_size 262 with -train data .* and no -tokenizer and no tokenizer files beside the study's model \\(in em\\)" 1 lds $bpe -model em -gpt2_vocab_size 262 -out x.h5

echo "lds_text: $pass checks passed, $fail failed"
[ $fail -eq 0 ]

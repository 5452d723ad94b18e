#!/usr/bin/env bash
# infl train on text (a byte-level GPT-2), end to end: an uninterrupted run on 2 ranks against the same run stopped by
# -train_stop_after on 1 rank (exit status 3, its state in OUT.partial) and resumed on 3 ranks.  The two saved
# models must give the same validation loss (infl eval in double precision) within 1e-5 relative: the agreement of
# training across rank counts and resumptions that docs/FORMATS.md states.  Also checked: the output is a Hugging
# Face directory (config.json; model.safetensors with transformer.* names, no lm_head) that infl eval reads, the
# epoch line prints the validation loss that infl eval gives for the saved model, and no .partial file is left; and a
# model trained with -tokenizer carries the tokenizer files in its directory.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}
dir=$(mktemp -d "$PWD/train_gpt2_cli.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
pass=0; fail=0
check() { if "$@"; then pass=$((pass + 1)); else echo "FAILED: $*"; fail=$((fail + 1)); fi; }
# the corpus: the fixed test text of tests/ref (44 short documents in the fortunes format), trained and evaluated on
args="-train text:$SRC/tests/ref/gpt2_bytes_text.txt -test text:$SRC/tests/ref/gpt2_bytes_text.txt -gpt2_n_layer 2 -gpt2_n_embd 32 -gpt2_n_head 2 -gpt2_n_positions 16 -train_epochs 10 -train_batch 16 -train_optimizer adamw -train_lr 3e-3 -train_beta2 0.95 -train_weight_decay 0.1 -train_warmup 5 -train_schedule cosine -train_clip 1 -train_seed 7"
$MPIEXEC --oversubscribe -n 2 "$EXE" train $args -out ref > ref.log 2>&1
check [ $? -eq 0 ]
$MPIEXEC --oversubscribe -n 1 "$EXE" train $args -train_stop_after 20 -out resumed > stop.log 2>&1
st=$?
echo "stopped run: exit status $st"
check [ $st -eq 3 ]
check [ -f resumed.partial ]
check grep -q "stopping after step 20" stop.log
$MPIEXEC --oversubscribe -n 3 "$EXE" train $args -out resumed > resume.log 2>&1
check [ $? -eq 0 ]
check grep -q "resuming from resumed.partial at epoch 7" resume.log
check [ ! -e resumed.partial ] && check [ ! -e ref.partial ]
grep "^epoch" ref.log resume.log
# the Hugging Face layout
for m in ref resumed; do
  check [ -f $m/config.json ] && check [ -f $m/model.safetensors ]
done
check grep -q '"model_type": "gpt2"' ref/config.json
check grep -q '"n_embd": 32' ref/config.json
hdr=$(head -c 4096 ref/model.safetensors | tr -d '\0')
for t in transformer.wte.weight transformer.wpe.weight transformer.h.0.attn.c_attn.weight transformer.h.1.mlp.c_proj.bias transformer.ln_f.bias; do
  check grep -q "\"$t\"" <<< "$hdr"
done
check [ "$(grep -o '"transformer\.[^"]*"' <<< "$hdr" | wc -l)" -eq 28 ]
check [ "$(grep -c lm_head <<< "$hdr")" -eq 0 ]
# the same model from both runs, and the epoch line's validation loss is infl eval's
ev() { $MPIEXEC --oversubscribe -n 1 "$EXE" eval -model "$1" -data text:$SRC/tests/ref/gpt2_bytes_text.txt $2 | awk '/mean loss per token/ {print $10}'; }
l1=$(ev ref "-model_precision double"); l2=$(ev resumed "-model_precision double"); l3=$(ev ref "")
echo "validation loss per token: uninterrupted $l1, stopped and resumed $l2 (double); single $l3"
check awk -v a="$l1" -v b="$l2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a + 0 > 0 && d <= 1e-5 * a) }'
last=$(grep "^epoch  10" ref.log | sed 's/.*valid loss\/token \([0-9.]*\).*/\1/')
echo "epoch 10 line of the uninterrupted run: valid loss/token $last"
check awk -v a="$l3" -v b="$last" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a + 0 > 0 && d <= 1e-4) }'
# the loss went down from the initial model's (log 256 = 5.545 for a uniform byte model)
check awk -v a="$l1" 'BEGIN { exit !(a + 0 > 0 && a < 4.5) }'
# -tokenizer: a GPT-2 of the small BPE's 262 tokens (tests/ref/bpe_small); its files are copied beside the trained
# model, so infl eval reads the text without -tokenizer, with the same loss as with it
tok=$SRC/tests/ref/bpe_small
$MPIEXEC --oversubscribe -n 2 "$EXE" train ${args/-train_epochs 10/-train_epochs 2} -tokenizer $tok -gpt2_vocab_size 0 -out bpe > bpe.log 2>&1
check [ $? -eq 0 ]
check grep -q "copied the tokenizer files of $tok into bpe" bpe.log
check cmp -s $tok/vocab.json bpe/vocab.json && check cmp -s $tok/merges.txt bpe/merges.txt
check grep -q '"vocab_size": 262' bpe/config.json
b1=$(ev bpe ""); b2=$(ev bpe "-tokenizer $tok")
echo "BPE model: loss per token $b1 (tokenizer beside the model), $b2 (-tokenizer)"
check [ -n "$b1" ] && check [ "$b1" = "$b2" ]
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

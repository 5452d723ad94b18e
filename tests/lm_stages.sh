#!/usr/bin/env bash
# The stages on a language model and text data (the byte-level GPT-2 fixture tests/ref/gpt2_bytes and the corpus
# tests/ref/gpt2_bytes_text.txt, 44 windows of up to 16 tokens):
#   - fit, score and self at 1 rank against 3 and 4 ranks with small chunks, compared by tests/tools/h5cmp within the
#     bound of docs/FORMATS.md ("Agreement across rank counts and chunkings"), true and empirical Fisher;
#   - per-token scores (-score_per_token): the /per_token layout and every row summing to its pair's score;
#   - -ekfac_layers mlp: 4 layers recorded in factors.h5; score and self with another -ekfac_layers are refused;
#   - -score_tfidf_topk: the same candidates and lists at 1 and 3 ranks, only candidates in the lists;
#   - -query_prompts: scored, /query_loss finite;
#   - the default chunk of sequence data (at most 8192 tokens) printed;
# and with the argument "chunks" (ctest lm_chunks) only:
#   - -mem_limit lowers the chunks of fit, score and self to a few windows at 1 rank, with the same results as the
#     default chunk;
#   - -score_topk larger than -score_tfidf_topk: lists of the candidates (no -1), topk_requested recorded;
#   - a GPT-2 of vocabulary 50257: a default chunk of far fewer windows (its byte budget), the same results as one
#     chunk of all windows.
#   - fit, score and self killed at random points (SIGTERM and SIGKILL) and rerun at varying rank counts until they
#     finish: the same results as uninterrupted runs.
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
# tau = 2 d u + 2 N 2^-53: d = 65 (mlp.c_proj's input 4 x 16 plus the bias), N = 44 sequences
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 65 * 2^-24 + 2 * 44 * 2^-53 }')
TAU2=$(awk -v t="$TAU" 'BEGIN { printf "%.6e", 2 * t }')
TAUD=$(awk 'BEGIN { printf "%.6e", 2 * 65 * 2^-53 + 2 * 44 * 2^-53 }')
dir=$(mktemp -d "$PWD/lmstages.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
MODEL=$SRC/tests/ref/gpt2_bytes
TEXT=text:$SRC/tests/ref/gpt2_bytes_text.txt
common="-model $MODEL -train $TEXT"
. "$SRC/tests/lib/checks.sh" # check, run, expect_error
factors_ok() { # REF OTHER TOL: the factors agree within the bound
  local ds
  for l in 0 1 2 3 4 5 6 7; do
    for ds in A S; do $H5CMP trace "$3" "$1" "$2" /layers/$l/$ds > /dev/null || { $H5CMP trace "$3" "$1" "$2" /layers/$l/$ds; return 1; }; done
    for ds in eigenvalues_A eigenvalues_S; do $H5CMP max "$3" "$1" "$2" /layers/$l/$ds > /dev/null || return 1; done
    $H5CMP sum "$3" "$1" "$2" /layers/$l/Lambda > /dev/null || return 1
  done
  $H5CMP sum "$3" "$1" "$2" /layers/7/Lambda
}

chunks() { sed -n "s/^infl $1: chunks of \([0-9]*\) sequences.*/\1/p" last.log; } # the chunk a stage printed
sc="-factors f1.h5 -query $TEXT -query_indices 0:44:4 -score_save_all -score_per_token -score_topk 4"
if [ "${1:-}" = chunks ]; then
check [ "$(run 1 fit $common -out f1.h5)" = 0 ]
check [ "$(run 1 score $common $sc -out s1.h5)" = 0 ]
check [ "$(run 1 self $common -factors f1.h5 -out self1.h5)" = 0 ]
# --- chunks of sequences from -mem_limit (64 MiB for the libraries, the factors and the queries, plus about 0.1 MiB
# per window: 5 to 20 windows per chunk) at the same rank count: the same results as the default chunk (all 44)
check [ "$(run 1 fit $common -mem_limit 66M -out fl.h5)" = 0 ]
nl=$(chunks fit); echo "fit: chunks of $nl windows with -mem_limit 66M"
check [ -n "$nl" ] && check [ "$nl" -ge 1 ] && check [ "$nl" -lt 44 ]
check factors_ok f1.h5 fl.h5 "$TAU2"
check [ "$(run 1 score $common $sc -mem_limit 73M -out sl.h5)" = 0 ]
nl=$(chunks score); echo "score: chunks of $nl windows with -mem_limit 73M"
check [ -n "$nl" ] && check [ "$nl" -ge 1 ] && check [ "$nl" -lt 44 ]
check $H5CMP scores $TAU s1.h5 sl.h5 /scores
check $H5CMP topk $TAU s1.h5 sl.h5 /topk
check $H5CMP pertoken $TAU sl.h5 sl.h5 /per_token
check [ "$(run 1 self $common -factors f1.h5 -mem_limit 66M -out selfl.h5)" = 0 ]
nl=$(chunks self); echo "self: chunks of $nl windows with -mem_limit 66M"
check [ -n "$nl" ] && check [ "$nl" -ge 1 ] && check [ "$nl" -lt 44 ]
check $H5CMP self $TAU2 self1.h5 selfl.h5 /self_influence f1.h5

# --- the default chunk of a GPT-2 of GPT-2's vocabulary (50,257 tokens; tests/ref/bigvocab_tokens.h5, 40 windows of
# 16): the bytes of 8192 tokens of the same model at a vocabulary of 256, so far fewer windows than the 512 of 16
# tokens (about 15), with the same factors and self-influence as one chunk of all windows given on the command line
BV="-train tokens:$SRC/tests/ref/bigvocab_tokens.h5"
check [ "$(run 1 train $BV -gpt2_n_layer 2 -gpt2_n_embd 16 -gpt2_n_head 2 -gpt2_n_positions 16 -gpt2_vocab_size 50257 -train_epochs 1 -train_batch 20 -out bigv)" = 0 ]
check [ "$(run 1 fit -model bigv $BV -out fbv.h5)" = 0 ]
nd=$(chunks fit)
check [ "$(run 1 fit -model bigv $BV -ekfac_chunk 1000 -out fbv1.h5)" = 0 ]
na=$(chunks fit); echo "vocabulary 50257: default chunks of $nd windows, all $na given"
check [ "$na" = 40 ] && check [ -n "$nd" ] && check [ "$nd" -ge 1 ] && check [ "$nd" -lt 40 ]
check factors_ok fbv1.h5 fbv.h5 "$TAU2"
check [ "$(run 1 self -model bigv $BV -factors fbv1.h5 -out sbv.h5)" = 0 ]
check [ "$(chunks self)" -lt 40 ]
check [ "$(run 1 self -model bigv $BV -factors fbv1.h5 -self_chunk 1000 -out sbv1.h5)" = 0 ]
check $H5CMP self $TAU2 sbv1.h5 sbv.h5 /self_influence fbv1.h5

# --- TF-IDF: more proponents asked for than candidates scored: the lists hold the 2 candidates of each query, noted
check [ "$(run 1 score $common -factors f1.h5 -query $TEXT -query_indices 0:44:5 -score_tfidf_topk 2 -score_topk 3 -out tk.h5)" = 0 ]
check grep -q "note: -score_topk 3 is larger than the 2 TF-IDF candidates scored per query" last.log
check grep -q "( 9, 2 )" <(h5dump -H -d /topk/train_indices tk.h5)
check grep -q "(0): 3$" <(h5dump -a /topk_requested tk.h5)
data_of() { # DATASET FILE: its values on one line (h5dump -o writes only the data)
  h5dump -d "$1" -y -w 0 -o data.txt "$2" > /dev/null && tr -s ', \n' '\n' < data.txt | grep -v '^$' | paste -sd' '
}
same_pairs() { # A B: each consecutive pair of numbers (one query's two entries) is the same set in A and B
  local a=($1) b=($2) i
  [ ${#a[@]} = ${#b[@]} ] && [ ${#a[@]} -gt 0 ] || return 1
  for ((i = 0; i < ${#a[@]}; i += 2)); do
    [ "$(printf '%s\n' "${a[i]}" "${a[i+1]}" | sort | paste -sd' ')" = "$(printf '%s\n' "${b[i]}" "${b[i+1]}" | sort | paste -sd' ')" ] || return 1
  done
}
cand=$(data_of /tfidf/candidates tk.h5)
check same_pairs "$cand" "$(data_of /topk/train_indices tk.h5)"
check same_pairs "$cand" "$(data_of /bottomk/train_indices tk.h5)"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
exit
fi

# --- rank and chunk invariance of fit (true and empirical Fisher)
check [ "$(run 1 fit $common -out f1.h5)" = 0 ]
check [ "$(chunks fit)" = 44 ] # the default (at most 8192 tokens: 512 windows of 16), capped at the shard
check [ "$(run 3 fit $common -ekfac_chunk 3 -out f3.h5)" = 0 ]
check factors_ok f1.h5 f3.h5 "$TAU2"
check [ "$(run 2 fit $common -ekfac_fisher empirical -out e2.h5)" = 0 ]
check [ "$(run 4 fit $common -ekfac_fisher empirical -ekfac_chunk 5 -out e4.h5)" = 0 ]
check factors_ok e2.h5 e4.h5 "$TAU2"
# A and S average over every token of the windows: a document of L bytes gives ceil((L-1)/15) windows of up to 16
# tokens sharing one token (docs/FORMATS.md), L + windows - 1 tokens
read nwin ntok < <(awk 'BEGIN { RS = "%\n" } { L = length($0); if (L > 0) { n = L <= 16 ? 1 : int((L + 13) / 15); t += L + n - 1; w += n } } END { print w, t }' "$SRC/tests/ref/gpt2_bytes_text.txt")
check [ "$nwin" = 44 ]
check [ "$(h5dump -a /rows f1.h5 | grep -c "(0): $ntok\$")" = 1 ]
check [ "$(h5dump -a /examples f1.h5 | grep -c "(0): $nwin\$")" = 1 ]

# --- score: rank and chunk invariance, per-token terms (single and double precision)
check [ "$(run 1 score $common $sc -out s1.h5)" = 0 ]
check [ "$(run 3 score $common $sc -score_chunk 4 -out s3.h5)" = 0 ]
check $H5CMP scores $TAU s1.h5 s3.h5 /scores
check $H5CMP topk $TAU s1.h5 s3.h5 /topk
check $H5CMP topk $TAU s1.h5 s3.h5 /bottomk
check $H5CMP pertoken $TAU s1.h5 s1.h5 /per_token
check $H5CMP pertoken $TAU s3.h5 s3.h5 /per_token
check [ "$(run 2 score $common $sc -model_precision double -out d2.h5)" = 0 ]
check $H5CMP pertoken $TAUD d2.h5 d2.h5 /per_token
# with -score_rank r and -score_per_layer the per-token terms still sum to the (truncated) scores
check [ "$(run 2 score $common $sc -score_per_layer -score_rank 4 -out r2.h5)" = 0 ]
check $H5CMP pertoken $TAU r2.h5 r2.h5 /per_token

# --- self-influence
check [ "$(run 1 self $common -factors f1.h5 -out self1.h5)" = 0 ]
check [ "$(run 4 self $common -factors f1.h5 -self_chunk 5 -out self4.h5)" = 0 ]
check $H5CMP self $TAU2 self1.h5 self4.h5 /self_influence f1.h5

# --- layer selection
check [ "$(run 2 fit $common -ekfac_layers mlp -out fm.h5)" = 0 ]
check [ "$(h5dump -a /layers fm.h5 | grep -c '(0): 4$')" = 1 ]
check grep -q '"mlp"' <(h5dump -a /layer_selection fm.h5)
check grep -q 'h.1.mlp.c_proj' <(h5dump -a /layers/3/name fm.h5)
check [ "$(run 2 score $common -factors fm.h5 -query $TEXT -query_indices 0:3 -ekfac_layers attn -out x.h5)" = 1 ]
check grep -q -- "-ekfac_layers attn does not match .*fm.h5, whose factors were fitted with -ekfac_layers mlp" last.log
check [ "$(run 1 self $common -factors f1.h5 -ekfac_layers mlp -out x.h5)" = 1 ]
check grep -q -- "-ekfac_layers mlp does not match .*f1.h5, whose factors were fitted with -ekfac_layers all" last.log
check [ "$(run 2 score $common -factors fm.h5 -query $TEXT -query_indices 0:3 -score_per_layer -out sm.h5)" = 0 ]
check grep -q "( 4, 3, 10 )" <(h5dump -H -d /topk/per_layer sm.h5)

# --- TF-IDF candidates: the same at 1 and 3 ranks; the lists hold only candidates
tf="-factors f1.h5 -query $TEXT -query_indices 0:44:5 -score_tfidf_topk 6 -score_topk 3"
check [ "$(run 1 score $common $tf -out t1.h5)" = 0 ]
check [ "$(run 3 score $common $tf -score_chunk 2 -out t3.h5)" = 0 ]
check h5diff -q t1.h5 t3.h5 /tfidf/candidates
check h5diff -q t1.h5 t3.h5 /topk/train_indices
check $H5CMP max $TAU t1.h5 t3.h5 /topk/scores
check [ "$(run 1 score $common $tf -score_save_all -out x.h5)" = 1 ]
# --- prompt/completion queries
printf 'The cat\n>>>\n sat on\n%%\nA stitch\n>>>\n in\n%%\n' > prompts.txt
check [ "$(run 2 score $common -factors f1.h5 -query_prompts prompts.txt -score_per_token -out p2.h5)" = 0 ]
check grep -q "( 2 )" <(h5dump -H -d /query_loss p2.h5)

# --- resumption after kills at random points
. "$SRC/tests/lib/kill_resume.sh" # interrupted OUT ARGS
KR_SEED=1313 KR_SLEEP=2
check interrupted "$dir/fk.h5" fit $common -ekfac_chunk 1
check factors_ok f1.h5 fk.h5 "$TAU2"
check [ ! -e fk.h5.partial ]
check interrupted "$dir/sk.h5" score $common $sc -score_chunk 1
check $H5CMP scores $TAU s1.h5 sk.h5 /scores
check $H5CMP topk $TAU s1.h5 sk.h5 /topk
check $H5CMP pertoken $TAU sk.h5 sk.h5 /per_token
check interrupted "$dir/selfk.h5" self $common -factors f1.h5 -self_chunk 1
check $H5CMP self $TAU2 self1.h5 selfk.h5 /self_influence f1.h5
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

#!/usr/bin/env bash
# Bad input, end to end through the infl executable.  Every case of the table below must, at NP ranks:
#   exit with a non-zero status within 60 s (no hang), print exactly ONE line matching "error" (one clear message,
#   not one per rank), match the case's regex (the message names the file / tensor / option and the value), and
#   leave every file of the work directory untouched (nothing overwritten, no stray .partial files).
# Then a few inputs that look odd but must WORK (more ranks than examples, -score_topk larger than the training set).
# Usage: bad_input.sh NP [MODE]   with INFL_EXE, INFL_MPIEXEC, INFL_SOURCE_DIR set (tests/CMakeLists.txt does).
#   MODE "setup N": build the fixtures once in cli-bad-input-npNP/fixtures, and the work directories of N parts;
#   MODE "K/N": part K of N of the table: the cases numbered K, K+N, K+2N, ... (in table order);
#   MODE "works": the inputs that must work;
#   MODE "all" (the default): setup 1, 1/1 and works in turn.
#   ctest runs the setup as a fixture of the parts and of works (tests/cli.cmake), which then run side by side.
#   CASES=REGEX runs only the cases whose names match.  INFL_BAD_INPUT_JOBS cases of a part run at once (default 2 at
#   1 rank, 3 at several ranks, where a case mostly waits: see below).
# Time goes mostly to mpiexec: after a process exits with a non-zero status, Open MPI's mpiexec waits two periods of
# odls_base_sigkill_timeout (1 s each) before it signals the other processes and exits.  At 1 rank there is no other
# process, so run_infl sets the period to 0 there (2 s less per case); at several ranks the default stays, so that the
# ranks meet the real mpiexec behaviour (a rank that exits first does not cut another's message short).  A case needs
# little CPU time (0.1-0.2 s a rank): the rest is mpiexec's start and that wait, so a part runs INFL_BAD_INPUT_JOBS
# cases at once, each job in a work directory of its own (measured 2026-12-01 on the 2-core machine under load: the
# 155 cases at 1 rank used 0.25 s of CPU time in 1.5 s; at 3 ranks 0.4 s in 5 s).
# Work directories: every job's holds hard links to the fixtures (the same inodes: nothing is copied) and its own
# files that name their directory (options files, out/).  All are made by the setup, before any case runs, because a
# new hard link changes the inode's status-change time, which the "nothing changed" check compares.
set -u
NP=${1:-1}
MODE=${2:-all}
[[ $NP =~ ^[1-9][0-9]*$ ]] || { echo "bad_input.sh: NP $NP must be a positive integer"; exit 2; }
JOBS=${INFL_BAD_INPUT_JOBS:-$((NP > 1 ? 3 : 2))}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "bad_input.sh: INFL_BAD_INPUT_JOBS $JOBS must be a positive integer"; exit 2; }
case $MODE in
  setup | works | all) ;;
  */*)
    pk=${MODE%/*} pn=${MODE#*/}
    [[ $pk =~ ^[0-9]+$ && $pn =~ ^[0-9]+$ && $pk -ge 1 && $pk -le $pn ]] || { echo "bad_input.sh: part $MODE is not K/N with 1 <= K <= N"; exit 2; }
    ;;
  *) echo "bad_input.sh: mode $MODE is not setup, K/N, works or all"; exit 2 ;;
esac
exe=${INFL_EXE:?INFL_EXE must name the infl executable}
mpiexec=${INFL_MPIEXEC:-mpiexec}
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR must name the source tree}
fm=${INFL_FMNIST:-/usr/share/datasets/fashion-mnist}
B=$(pwd)/cli-bad-input-np$NP # fixtures/, part<K>-<job>/ (work directories), works/
FX=$B/fixtures
pass=0 fail=0

run_infl() { # NP ARGS...: run infl with a time limit; stdout and stderr in $W/log.{out,err}
  local np=$1
  shift
  local kt=1 # odls_base_sigkill_timeout (see above)
  [ "$np" -eq 1 ] && kt=0
  OMPI_MCA_odls_base_sigkill_timeout=$kt timeout 60 "$mpiexec" --oversubscribe -n "$np" "$exe" "$@" < /dev/null > "$W/log.out" 2> "$W/log.err"
}
# every file of the work directory with its size, inode, modification and status-change times (ns) and mode: a write,
# truncation, replacement (rename over it), chmod or new file changes the listing.  (Hashing the contents, 50 MB of
# fixtures twice per case, cost more CPU time than the runs of infl themselves.)
snapshot() { (cd "$W" && find . -path ./log.out -prune -o -path ./log.err -prune -o -type f -printf '%p %s %i %T@ %C@ %m\n' | LC_ALL=C sort); }
ok() { pass=$((pass + 1)); echo "ok    $*"; }
bad() {
  fail=$((fail + 1))
  echo "FAIL  $1: $2"
  sed 's/^/        | /' "$W/log.err" | head -20
}

T="idx:$fm/t10k"
QLONG=$(seq -s, 0 1202) # 1203 indices, 4904 characters
paths() { # the arguments the cases share, in the work directory $W
  M="-model $W/model.safetensors"
  G="-model $src/tests/ref/gpt2_tiny"
  F="-factors $W/factors.h5"
  TR="-train $T -train_limit 50"
  Q="-query $T -query_limit 10"
  SCK="-query_indices 0:5 -score_chunk 4 -score_save_all -checkpoint_stop_after 1"
  TRK="$TR -model_dims 784,8,10 -train_batch 10 -train_stop_after 1"
}

# ------------------------------------------------------------------------------------------------ fixtures
make_fixtures() { # in $W (the setup's fixtures directory); they name no path of their own
paths
cp "$src/tests/ref/mlp_small.safetensors" "$W/model.safetensors"
hlen=$(head -c 8 "$W/model.safetensors" | od -An -tu8 | tr -d ' ')
data0=$((8 + hlen)) # first byte of layers.0.weight
# model files: each a copy of mlp_small with one defect.  Edits keep the header length (same-length strings).
edit_model() { # NAME PERL-SUBSTITUTION on the header
  perl -0777 -pe "$2" "$W/model.safetensors" > "$W/$1.safetensors"
  cmp -s "$W/model.safetensors" "$W/$1.safetensors" && { echo "fixture $1: the edit did not apply"; exit 1; }
}
edit_model lies 's/"shape":\[24\]/"shape":[25]/'              # header lies: 25 floats in 96 bytes
edit_model shape 's/"shape":\[24,784\]/"shape":[784,24]/'     # transposed weight, same byte count
edit_model dtype 's/"layers.0.bias":\{"dtype":"F32"/"layers.0.bias":{"dtype":"I32"/'
edit_model other 's/"activation":"relu"/"activation":"tanh"/' # a valid model, another hash
edit_model notjson 's/\{"__metadata__"/["__metadata__"/'
scale_last() { # NAME FACTOR: the last layer's weights (layers.2.weight, 160 floats) times FACTOR, as PyTorch would save them
  perl -0777 -pe 'my $o = 8 + unpack("Q<", substr($_, 0, 8)) + 76960; for my $i (0 .. 159) { substr($_, $o + 4 * $i, 4) = pack("f<", unpack("f<", substr($_, $o + 4 * $i, 4)) * '"$2"'); }' "$W/model.safetensors" > "$W/$1.safetensors"
}
scale_last huge30 1e30 # finite logits, but the softmax saturates: every pseudo-gradient is 0
scale_last huge38 1e38 # the logits overflow float
perl -0777 -pe 'my $o = 8 + unpack("Q<", substr($_, 0, 8)); substr($_, $o) = "\0" x (length($_) - $o);' "$W/model.safetensors" > "$W/zero.safetensors"
cp "$W/model.safetensors" "$W/nan.safetensors"
printf '\x00\x00\xc0\x7f' | dd of="$W/nan.safetensors" bs=1 seek=$((data0 + 4 * 100)) conv=notrunc status=none
cp "$W/model.safetensors" "$W/inf.safetensors"
printf '\x00\x00\x80\x7f' | dd of="$W/inf.safetensors" bs=1 seek=$((data0 + 75264 + 4 * 3)) conv=notrunc status=none
head -c 50000 "$W/model.safetensors" > "$W/truncated.safetensors"
{ printf '\xff\xff\xff\xff\xff\xff\x00\x00'; tail -c +9 "$W/model.safetensors"; } > "$W/hugeheader.safetensors"
: > "$W/empty.safetensors"
echo "this is not a model" > "$W/text.safetensors"
mkdir -p "$W/adir.safetensors"

# IDX data sets
ln -s "$fm/t10k-labels-idx1-ubyte.gz" "$W/trunc-labels-idx1-ubyte.gz"
head -c 3000 "$fm/t10k-images-idx3-ubyte.gz" > "$W/trunc-images-idx3-ubyte.gz"     # truncated .gz
zcat "$fm/t10k-labels-idx1-ubyte.gz" > "$W/rawtrunc-labels-idx1-ubyte"
zcat "$fm/t10k-images-idx3-ubyte.gz" | head -c $((16 + 784 * 5)) > "$W/rawtrunc-images-idx3-ubyte" # header: 10000
printf '\x00\x00\x08\x03\x00\x00\x00\x00\x00\x00\x00\x1c\x00\x00\x00\x1c' > "$W/empty-images-idx3-ubyte"
printf '\x00\x00\x08\x01\x00\x00\x00\x00' > "$W/empty-labels-idx1-ubyte"
ln -s "$fm/t10k-images-idx3-ubyte.gz" "$W/mismatch-images-idx3-ubyte.gz"
ln -s "$fm/train-labels-idx1-ubyte.gz" "$W/mismatch-labels-idx1-ubyte.gz"
ln -s "$fm/t10k-labels-idx1-ubyte.gz" "$W/magic-images-idx3-ubyte.gz" # labels where images belong
ln -s "$fm/t10k-labels-idx1-ubyte.gz" "$W/magic-labels-idx1-ubyte.gz"
ln -s "$fm/t10k-labels-idx1-ubyte.gz" "$W/nolabels-images-idx3-ubyte.gz"

# HDF5 data sets (h5import, from hdf5-tools)
h5data() { # NAME ROWS COLS [NAN_AT] [LABEL_CLASS]: /inputs (ROWS, COLS) float32, /labels (ROWS) int64 (or float)
  local name=$1 rows=$2 cols=$3 nanat=${4:--1} lclass=${5:-IN}
  awk -v r="$rows" -v c="$cols" -v n="$nanat" 'BEGIN { for (i = 0; i < r * c; i++) printf "%s\n", (i == n ? "nan" : (i % 7) / 7.0) }' > "$W/in.txt"
  awk -v r="$rows" 'BEGIN { for (i = 0; i < r; i++) print i % 10 }' > "$W/lab.txt"
  printf 'PATH inputs\nINPUT-CLASS TEXTFP\nRANK 2\nDIMENSION-SIZES %d %d\nOUTPUT-CLASS FP\nOUTPUT-SIZE 32\n' "$rows" "$cols" > "$W/in.cfg"
  if [ "$lclass" = IN ]; then
    printf 'PATH labels\nINPUT-CLASS TEXTIN\nRANK 1\nDIMENSION-SIZES %d\nOUTPUT-CLASS IN\nOUTPUT-SIZE 64\n' "$rows" > "$W/lab.cfg"
  else
    printf 'PATH labels\nINPUT-CLASS TEXTFP\nRANK 1\nDIMENSION-SIZES %d\nOUTPUT-CLASS FP\nOUTPUT-SIZE 32\n' "$rows" > "$W/lab.cfg"
  fi
  h5import "$W/in.txt" -c "$W/in.cfg" "$W/lab.txt" -c "$W/lab.cfg" -o "$W/$name.h5" > /dev/null || { echo "fixture $name: h5import failed"; exit 1; }
  rm -f "$W/in.txt" "$W/lab.txt" "$W/in.cfg" "$W/lab.cfg"
}
h5data good 6 784
h5data nan 6 784 $((784 * 4 + 17))
h5data narrow 6 10
h5data floatlabels 6 784 -1 FP
echo "not HDF5" > "$W/garbage.h5"
head -c 1000 "$W/good.h5" > "$W/truncated.h5"

# token data for the tiny GPT-2 (vocab_size 96, n_positions 16): HDF5 /tokens int32, /offsets int64 (h5import)
h5tokens() { # NAME "TOKENS..." "OFFSETS..."
  echo "$2" | tr ' ' '\n' > "$W/tok.txt"
  echo "$3" | tr ' ' '\n' > "$W/off.txt"
  printf 'PATH tokens\nINPUT-CLASS TEXTIN\nRANK 1\nDIMENSION-SIZES %d\nOUTPUT-CLASS IN\nOUTPUT-SIZE 32\n' "$(wc -w <<< "$2")" > "$W/tok.cfg"
  printf 'PATH offsets\nINPUT-CLASS TEXTIN\nRANK 1\nDIMENSION-SIZES %d\nOUTPUT-CLASS IN\nOUTPUT-SIZE 64\n' "$(wc -w <<< "$3")" > "$W/off.cfg"
  h5import "$W/tok.txt" -c "$W/tok.cfg" "$W/off.txt" -c "$W/off.cfg" -o "$W/$1.h5" > /dev/null || { echo "fixture $1: h5import failed"; exit 1; }
  rm -f "$W/tok.txt" "$W/off.txt" "$W/tok.cfg" "$W/off.cfg"
}
h5tokens badtok "5 96 7" "0 3"
h5tokens longdoc "$(seq -s ' ' 10 49)" "0 40"
printf 'a fortune\n%%\nanother one\n%%\n' > "$W/fortunes.txt"
# a GPT-2 of the small BPE tokenizer's 262 tokens (the files copied beside it), a prompts file with a byte that is
# not UTF-8 on its second line, and a tokenizer directory holding only one file of a pair
run_infl "$NP" train -train "text:$W/fortunes.txt" -tokenizer "$src/tests/ref/bpe_small" -gpt2_n_layer 1 -gpt2_n_embd 8 -gpt2_n_head 2 -gpt2_n_positions 8 -train_epochs 1 -out "$W/gpt2_bpe" || { cat "$W/log.err"; echo "fixture: infl train of gpt2_bpe failed"; exit 1; }
printf 'the cat\n>>>\n s\xe9t\n' > "$W/prompts_latin1.txt"
mkdir -p "$W/tok_half" && cp "$src/tests/ref/bpe_small/vocab.json" "$W/tok_half/"
printf 'The cat\r\n>>>\r\n sat on\r\n' > "$W/prompts_crlf.txt"   # Windows line ends: the marker line is ">>>\r"
# the tiny GPT-2 with a config.json of a larger model; and with every value of h.0.mlp.c_fc.weight (32 x 128 floats
# at bytes 32768-49152 of the data) set to 3e38: finite, but the forward pass overflows
mkdir -p "$W/gpt2_big_config" "$W/gpt2_huge" "$W/gpt2_no_config" "$W/gpt2_llama"
cp "$src/tests/ref/gpt2_tiny/model.safetensors" "$W/gpt2_no_config/"           # a directory without config.json
cp "$src/tests/ref/gpt2_tiny/model.safetensors" "$W/gpt2_llama/"               # the config of another architecture
sed 's/"model_type": "gpt2"/"model_type": "llama"/' "$src/tests/ref/gpt2_tiny/config.json" > "$W/gpt2_llama/config.json"
grep -q llama "$W/gpt2_llama/config.json" || { echo "fixture gpt2_llama: the edit did not apply"; exit 1; }
cp "$src/tests/ref/gpt2_tiny/model.safetensors" "$W/gpt2_big_config/"
sed 's/"n_layer": 2/"n_layer": 5000/' "$src/tests/ref/gpt2_tiny/config.json" > "$W/gpt2_big_config/config.json"
cp "$src/tests/ref/gpt2_tiny/config.json" "$src/tests/ref/gpt2_tiny/model.safetensors" "$W/gpt2_huge/"
st_data=$((8 + $(od -An -t u8 -N 8 "$W/gpt2_huge/model.safetensors"))) # safetensors: 8-byte header length, header, data
for i in $(seq 4096); do printf '\x9c\x9b\x61\x7f'; done | dd of="$W/gpt2_huge/model.safetensors" bs=1 seek=$((st_data + 32768)) conv=notrunc status=none

# factors of mlp_small (valid), and of the other model
run_infl "$NP" fit -model "$W/model.safetensors" -train "$T" -train_limit 50 -out "$W/factors.h5" || { cat "$W/log.err"; echo "fixture: infl fit failed"; exit 1; }
run_infl "$NP" fit -model "$W/other.safetensors" -train "$T" -train_limit 50 -out "$W/factors_other.h5" || { cat "$W/log.err"; echo "fixture: infl fit failed"; exit 1; }
ln -s factors.h5 "$W/factors_link.h5"
h5offset() { h5dump -p -H -d "$2" "$1" | awk '/OFFSET/ { print $2 }'; } # FILE DATASET: byte offset of a contiguous dataset
# factors with one entry of layer 2's Q_S replaced by 1e300 (finite: the scores overflow)
cp "$W/factors.h5" "$W/factors_huge.h5"
printf '\x9c\x75\x00\x88\x3c\xe4\x37\x7e' | dd of="$W/factors_huge.h5" bs=1 seek="$(h5offset "$W/factors_huge.h5" /layers/2/Q_S)" conv=notrunc status=none
# scores of queries 0..4 of the first 10 test images; a copy with the top-k index at (0, 1) edited to -5
run_infl "$NP" score -model "$W/model.safetensors" -factors "$W/factors.h5" -train $T -train_limit 50 -query $T -query_limit 10 -query_indices 0:5 -out "$W/scores.h5" || { cat "$W/log.err"; echo "fixture: infl score failed"; exit 1; }
cp "$W/scores.h5" "$W/scores_neg.h5"
printf '\xfb\xff\xff\xff\xff\xff\xff\xff' | dd of="$W/scores_neg.h5" bs=1 seek=$(($(h5offset "$W/scores_neg.h5" /topk/train_indices) + 8)) conv=notrunc status=none
h5dump -d /topk/train_indices -s 0,1 -c 1,1 "$W/scores_neg.h5" | grep -q -- "-5" || { echo "fixture scores_neg.h5: the edit did not apply"; exit 1; }

# damaged files a stage restores or loads: checkpoints made by stopping after one step (-checkpoint_stop_after,
# -train_stop_after; exit status 3), then copies of them with one value overwritten (NaN or Inf bytes, or a count out
# of range); the rerun of the same command must refuse them, naming the file, the dataset and the entry
poke() { # FILE DATASET BYTE-OFFSET-IN-DATASET PRINTF-BYTES: overwrite bytes of a contiguous dataset
  local at
  at=$(h5offset "$1" "$2")
  [ -n "$at" ] || { echo "fixture $1: no offset of $2"; exit 1; }
  printf "$4" | dd of="$1" bs=1 seek=$((at + $3)) conv=notrunc status=none
}
stopped() { # NAME ARGS...: run a stage that must stop with status 3 and leave NAME.partial
  local name=$1
  shift
  run_infl "$NP" "$@"
  [ $? -eq 3 ] && [ -f "$name.partial" ] || { cat "$W/log.err"; echo "fixture $name.partial: the stage did not stop with a checkpoint"; exit 1; }
}
stopped "$W/ckpt_score.h5" score $M $F $TR $Q $SCK -out "$W/ckpt_score.h5"
cp "$W/ckpt_score.h5.partial" "$W/sp_top.h5.partial"
poke "$W/sp_top.h5.partial" /checkpoint/top_scores 0 '\x00\x00\x00\x00\x00\x00\xf8\x7f'  # (0, 0) NaN
cp "$W/ckpt_score.h5.partial" "$W/sp_norm.h5.partial"
poke "$W/sp_norm.h5.partial" /checkpoint/train_norms 8 '\x00\x00\x80\x7f'                  # float32 entry 2 Inf
cp "$W/ckpt_score.h5.partial" "$W/sp_count.h5.partial"
poke "$W/sp_count.h5.partial" /checkpoint/bottom_n 8 '\x63\x00\x00\x00\x00\x00\x00\x00'   # entry 1 = 99 > K
stopped "$W/ckpt_fit.h5" fit $M $TR -ekfac_chunk 4 -checkpoint_stop_after 1 -out "$W/ckpt_fit.h5"
cp "$W/ckpt_fit.h5.partial" "$W/fp_inf.h5.partial"
poke "$W/fp_inf.h5.partial" /checkpoint/1/S_sum 40 '\x00\x00\x00\x00\x00\x00\xf0\x7f'   # (0, 5) +Inf
stopped "$W/ckpt_self.h5" self $M $F $TR -self_chunk 4 -checkpoint_stop_after 1 -out "$W/ckpt_self.h5"
cp "$W/ckpt_self.h5.partial" "$W/selfp_inf.h5.partial"
poke "$W/selfp_inf.h5.partial" /self_influence 240 '\x00\x00\x00\x00\x00\x00\xf0\xff'   # entry 30 -Inf
stopped "$W/ckpt_train.safetensors" train $TRK -out "$W/ckpt_train.safetensors"
cp "$W/ckpt_train.safetensors.partial" "$W/tp_nan.safetensors.partial"
poke "$W/tp_nan.safetensors.partial" /checkpoint/moment2 400 '\x00\x00\xc0\x7f'           # entry 100 NaN
echo "not a checkpoint" > "$W/garbage_self.h5.partial"
cp "$W/factors.h5" "$W/factors_nan.h5"
poke "$W/factors_nan.h5" /layers/1/eigenvalues_S 24 '\x00\x00\x00\x00\x00\x00\xf8\x7f' # entry 3 NaN
# a corrupt gzip IDX file: 16 bytes of its compressed stream overwritten
cp "$fm/t10k-images-idx3-ubyte.gz" "$W/gzbad-images-idx3-ubyte.gz"
printf 'XXXXXXXXXXXXXXXX' | dd of="$W/gzbad-images-idx3-ubyte.gz" bs=1 seek=5000 conv=notrunc status=none
ln -s "$fm/t10k-labels-idx1-ubyte.gz" "$W/gzbad-labels-idx1-ubyte.gz"
rm -f "$W/log.out" "$W/log.err" # each work directory writes its own
}

workdir() { # DIR: a work directory: hard links to the fixtures, and the files that name DIR
  W=$1
  # (a file system without hard links gets copies: 55 MB each)
  mkdir -p "$W" && { cp -al "$FX/." "$W/" 2> /dev/null || { rm -rf "$W" && mkdir -p "$W" && cp -a "$FX/." "$W/"; }; } &&
    mkdir -p "$W/out" || { echo "setup: cannot make the work directory $W"; exit 1; }
  echo "an old result that must survive" > "$W/out/existing.h5"
  mkdir -p "$W/out/adir.h5"
  mkfifo "$W/out/fifo.h5"
  # options files: one that includes itself, two that include each other, one naming a missing one, a study file
  # that -out must not overwrite
  echo "-options_file $W/self.opts" > "$W/self.opts"
  printf -- '-train_limit 50\n-options_file %s # the next one\n' "$W/cycle_b.opts" > "$W/cycle_a.opts"
  printf -- '# a comment: -options_file elsewhere\n-options_file "%s"\n' "$W/cycle_a.opts" > "$W/cycle_b.opts"
  echo "-train_limit 50" > "$W/study.opts"
  echo "-options_file $W/nope.opts" > "$W/missing.opts"
  # options files PETSc would refuse with a long trace: two options on a line, a value in single quotes holding a
  # blank, a line without its '-'
  echo "-train_limit 50 -overwrite" > "$W/two.opts"
  echo "-query_prompts '$W/my prompts.txt'" > "$W/squote.opts"
  printf -- '-ekfac_chunk 16\ntrain_limit 50\n' > "$W/nodash.opts"
  # a directory where an output keeps its checkpoint
  mkdir -p "$W/out/pdir.h5.partial"
}

setup() { # NPARTS
  local k s
  rm -rf "$B" && mkdir -p "$FX" || exit 1
  W=$FX
  make_fixtures
  for k in $(seq "$1"); do
    for s in $(seq "$JOBS"); do workdir "$B/part$k-$s"; done
  done
  workdir "$B/works"
  echo "$1 $JOBS" > "$B/layout"
  echo "setup at $NP rank(s): fixtures and the work directories of $1 part(s) of $JOBS job(s) in $B"
}

# A lock held by a live process (this shell, recorded with its start time) through a descriptor that a `flock` process
# holds (their output away from the test's: a process left holding ctest's pipe would keep ctest waiting until it
# exits).  They hold the locks as long as this script runs (tail --pid), however long that is on a loaded machine (a
# fixed `sleep 600` ran out before the lock cases there), and end within a second of it even if it is killed.
holders=""
trap 'for h in $holders; do pkill -P $h 2>/dev/null; kill $h 2>/dev/null; done' EXIT
hold() { # LOCKFILE
  flock -x "$1" tail --pid=$$ -f /dev/null </dev/null >/dev/null 2>&1 &
  holders="$holders $!"
}
need_setup() { # NPARTS: the setup made the work directories of this part
  [ "$(cat "$B/layout" 2>/dev/null)" = "$1 $JOBS" ] || { echo "bad_input.sh: $B was not set up for $1 part(s) of $JOBS job(s): run bash $0 $NP setup $1 first (ctest runs it as the fixture cli_bad_input_np${NP}_setup)"; exit 1; }
}

# ------------------------------------------------------------------------------------------------ the table
# name | expected message (extended regex without '|', on stderr) | arguments ($W, $T expand; no quoting inside)
job() { # S: the cases of part $pk numbered S, S + JOBS, ... among the part's, in the work directory part$pk-S
  local s=$1 ncase=0 npart=0 name regex args before after status nerr
  W=$B/part$pk-$s
  paths
  while IFS='|' read -r name regex args; do
    name=$(echo $name)
    [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
    ncase=$((ncase + 1))
    [ $(((ncase - 1) % pn + 1)) -eq "$pk" ] || continue
    npart=$((npart + 1))
    [ $(((npart - 1) % JOBS + 1)) -eq "$s" ] || continue
    regex=$(echo "$regex" | sed 's/^ *//; s/ *$//')
    eval "set -- $args"
    [ -n "${CASES:-}" ] && ! [[ $name =~ $CASES ]] && continue
    before=$(snapshot)
    run_infl "$NP" "$@"
    status=$?
    after=$(snapshot)
    nerr=$(grep -ci error "$W/log.err")
    if [ $status -eq 124 ]; then bad "$name" "timed out (hang?)"
    elif [ $status -eq 0 ]; then bad "$name" "exit status 0, expected an error"
    elif [ "$nerr" -ne 1 ]; then bad "$name" "$nerr lines match \"error\", expected one message"
    elif ! grep -Eq -- "$regex" "$W/log.err"; then bad "$name" "message does not match /$regex/"
    elif [ "$before" != "$after" ]; then bad "$name" "files changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ')"
    else ok "$name (exit $status): $(grep -i error "$W/log.err" | cut -c1-160)"
    fi
  done <<EOF
# --- model files
model_missing      | $W/nope.safetensors: cannot open the model file.*-model  | fit -model $W/nope.safetensors $TR -out $W/out/f.h5
model_directory    | adir.safetensors is a directory without config.json.*an MLP a .safetensors file | fit -model $W/adir.safetensors $TR -out $W/out/f.h5
model_empty        | empty.safetensors: file has 0 bytes.*truncated           | fit -model $W/empty.safetensors $TR -out $W/out/f.h5
model_text         | text.safetensors: header length [0-9]+ is absurd          | fit -model $W/text.safetensors $TR -out $W/out/f.h5
model_truncated    | truncated.safetensors: .*truncated                        | fit -model $W/truncated.safetensors $TR -out $W/out/f.h5
model_huge_header  | hugeheader.safetensors: header length [0-9]+ is absurd    | fit -model $W/hugeheader.safetensors $TR -out $W/out/f.h5
model_not_json     | notjson.safetensors: the safetensors header \(544 bytes\) is not valid JSON                      | fit -model $W/notjson.safetensors $TR -out $W/out/f.h5
model_lying_sizes  | lies.safetensors: tensor layers.0.bias: data_offsets .*need 100 | fit -model $W/lies.safetensors $TR -out $W/out/f.h5
model_wrong_shape  | shape.safetensors.*layers.0.weight.*\[?784, 24\]?         | fit -model $W/shape.safetensors $TR -out $W/out/f.h5
model_wrong_dtype  | dtype.safetensors.*layers.0.bias.*I32                     | fit -model $W/dtype.safetensors $TR -out $W/out/f.h5
model_nan_weight   | nan.safetensors: tensor layers.0.weight has a non-finite value \(nan                     | fit -model $W/nan.safetensors $TR -out $W/out/f.h5
model_inf_bias     | inf.safetensors: tensor layers.0.bias has a non-finite value \(inf                       | fit -model $W/inf.safetensors $TR -out $W/out/f.h5
model_as_factors   | model.safetensors as an HDF5 file                            | score $M -factors $W/model.safetensors $TR $Q -out $W/out/s.h5
# --- factors
factors_missing    | $W/nope.h5.*[Nn]o such file                   | score $M -factors $W/nope.h5 $TR $Q -out $W/out/s.h5
factors_directory  | cannot open HDF5 file $W/adir.safetensors: it is a directory; give the path of the HDF5 file | score $M -factors $W/adir.safetensors $TR $Q -out $W/out/s.h5
factors_not_hdf5   | garbage.h5.*HDF5                                          | score $M -factors $W/garbage.h5 $TR $Q -out $W/out/s.h5
factors_truncated  | truncated.h5 as an HDF5 file: it starts as one but HDF5 cannot read it, so it is damaged or cut short | self $M -factors $W/truncated.h5 $TR -out $W/out/s.h5
factors_data_file  | good.h5 was fitted for model sha256 \(none recorded\)                    | self $M -factors $W/good.h5 $TR -out $W/out/s.h5
factors_other_model| factors_other.h5 was fitted for model sha256 [0-9a-f]{64} but the model given has sha256 [0-9a-f]{64} | score $M -factors $W/factors_other.h5 $TR $Q -out $W/out/s.h5
# --- data sets
data_bad_spec      | data spec "csv:$W/x.csv" is not understood                | fit $M -train csv:$W/x.csv -out $W/out/f.h5
data_idx_missing   | idx:$W/nothing: neither .*nothing-images-idx3-ubyte       | fit $M -train idx:$W/nothing -out $W/out/f.h5
data_idx_no_labels | nolabels-labels-idx1-ubyte                                | fit $M -train idx:$W/nolabels -out $W/out/f.h5
data_idx_trunc_gz  | trunc-images-idx3-ubyte.gz.*truncated           | fit $M -train idx:$W/trunc -out $W/out/f.h5
data_idx_trunc_raw | rawtrunc-images-idx3-ubyte: truncated: the header promises 10000 images | fit $M -train idx:$W/rawtrunc -out $W/out/f.h5
data_idx_magic     | magic-images-idx3-ubyte.gz: IDX magic number 0x00000801   | fit $M -train idx:$W/magic -out $W/out/f.h5
data_idx_mismatch  | 10000 images but .* 60000 labels                          | fit $M -train idx:$W/mismatch -out $W/out/f.h5
data_idx_empty     | the data set is empty                                     | fit $M -train idx:$W/empty -out $W/out/f.h5
data_limit_big     | limit 20000 is larger than the 10000 examples             | fit $M -train $T -train_limit 20000 -out $W/out/f.h5
data_limit_neg     | -train_limit -1 must be >= 0                              | fit $M -train $T -train_limit -1 -out $W/out/f.h5
data_h5_missing    | $W/nope.h5.*[Nn]o such file                   | fit $M -train h5:$W/nope.h5 -out $W/out/f.h5
data_h5_not_hdf5   | garbage.h5.*HDF5                                          | fit $M -train h5:$W/garbage.h5 -out $W/out/f.h5
data_h5_nan        | h5:$W/nan.h5: example 4 has a non-finite input \(NaN\) at feature 17 | fit $M -train h5:$W/nan.h5 -out $W/out/f.h5
data_h5_float_lab  | floatlabels.h5: /labels is not an integer dataset         | fit $M -train h5:$W/floatlabels.h5 -out $W/out/f.h5
data_h5_huge_type  | huge_label_type.h5: /labels has [0-9]+-byte integers      | fit $M -train h5:$src/fuzz/corpus/fuzz_h5data/huge_label_type.h5 -out $W/out/f.h5
data_h5_no_inputs  | factors.h5: no dataset /inputs                            | fit $M -train h5:$W/factors.h5 -out $W/out/f.h5
data_wrong_width   | has 10 features per example but the model's input dimension is 784 | fit $M -train h5:$W/narrow.h5 -out $W/out/f.h5
query_nan          | h5:$W/nan.h5: example 4 has a non-finite input            | score $M $F $TR -query h5:$W/nan.h5 -out $W/out/s.h5
query_wrong_width  | query data h5:$W/narrow.h5 has 10 features per example but the model's input dimension is 784 | score $M $F $TR -query h5:$W/narrow.h5 -query_indices 0:2 -out $W/out/s.h5
# --- language models (GPT-2) and token data
lm_token_id        | badtok.h5: token 1 \(document 0\) has id 96, outside the vocabulary \[0, 96\) | eval $G -data tokens:$W/badtok.h5
lm_window_long     | data tokens:.*longdoc.h5: sequence 0 has 20 tokens, more than the model's n_positions = 16.*-data_seq_len | eval $G -data tokens:$W/longdoc.h5 -data_seq_len 20
lm_rows_data       | data h5:.*good.h5 holds rows of features, but the model .*gpt2_tiny \(type gpt2\) reads token sequences | eval $G -data h5:$W/good.h5
lm_text_for_mlp    | data text:.*fortunes.txt holds token sequences but the model is an MLP | eval $M -data text:$W/fortunes.txt
lm_config_larger   | config.json \(n_embd 32, n_layer 5000, vocab_size 96, n_positions 16\) describes a GPT-2 of [0-9]+ parameters, but .*model.safetensors holds only [0-9]+ values | eval -model $W/gpt2_big_config -data tokens:$W/badtok.h5
lm_forward_overflow | the GPT-2 forward pass overflows: logit [0-9]+ \(token id\) at position [0-9]+ of sequence [0-9]+ .* is -?[a-z]+[.]? in single precision | eval -model $W/gpt2_huge -data tokens:$W/longdoc.h5
lm_dir_no_config   | $W/gpt2_no_config is a directory without config.json; a GPT-2 is a directory holding config.json and model.safetensors | eval -model $W/gpt2_no_config -data tokens:$W/badtok.h5
lm_inspect_dir     | $W/gpt2_no_config is a directory without config.json | inspect -file $W/gpt2_no_config
lm_model_type      | gpt2_llama/config.json: model_type "llama" is not supported; infl reads GPT-2 models | eval -model $W/gpt2_llama -data tokens:$W/longdoc.h5
lm_no_tokenizer    | vocab_size 96 but the directory .*gpt2_tiny holds no tokenizer files | eval $G -data text:$W/fortunes.txt
lm_prompts_utf8    | -query_prompts $W/prompts_latin1.txt: line 3: invalid UTF-8 at byte offset 14: .*\(byte 0xE9\).*iconv | score -method tracin -checkpoints $W/gpt2_bpe -tracin_lr 1 -train text:$W/fortunes.txt -query_prompts $W/prompts_latin1.txt -out $W/out/s.h5
lm_tokenizer_nodir | tokenizer directory $W/nope: No such file or directory; .*tests/tok/fetch_gpt2.sh | eval -model $src/tests/ref/gpt2_bytes -data text:$W/fortunes.txt -tokenizer $W/nope
lm_tokenizer_half  | tokenizer directory $W/tok_half holds vocab.json but not merges.txt, which goes with it | eval -model $src/tests/ref/gpt2_bytes -data text:$W/fortunes.txt -tokenizer $W/tok_half
lm_prompts_crlf    | -query_prompts $W/prompts_crlf.txt: query 0: line 2 starts with ">>>" but holds more \(a carriage return.*dos2unix | score -method tracin -checkpoints $src/tests/ref/gpt2_bytes -tracin_lr 1 -train text:$W/fortunes.txt -query_prompts $W/prompts_crlf.txt -out $W/out/s.h5
lm_store_prompts   | -query_prompts $W/prompts_latin1.txt is not supported with -store .*score prompt/completion queries with -factors | score -store $W/scores.h5 -model $W/gpt2_bpe -query_prompts $W/prompts_latin1.txt -out $W/out/s.h5
lm_layers_for_mlp  | layer selection "mlp" is not available for model type mlp.*-ekfac_layers all | fit $M $TR -ekfac_layers mlp -out $W/out/f.h5
lm_factors_of_mlp  | factors.h5 was fitted for model sha256 .* but the model given has sha256 | score $G $F -train tokens:$W/longdoc.h5 -query tokens:$W/longdoc.h5 -query_indices 0:2 -out $W/out/s.h5
lm_window_fit      | sequence 0 has 20 tokens, more than the model's n_positions = 16 | fit $G -train tokens:$W/longdoc.h5 -train_seq_len 20 -out $W/out/f.h5
lm_train_model_dims | infl train: -model_dims is an MLP option, but the -train data are token sequences, which train a GPT-2 | train -train tokens:$W/longdoc.h5 -model_dims 784,10 -out $W/out/m.safetensors
lm_train_heads     | -gpt2_n_embd 30 is not a multiple of -gpt2_n_head 4 | train -train text:$W/fortunes.txt -gpt2_n_embd 30 -gpt2_n_head 4 -out $W/out/g
lm_train_positions | -gpt2_n_positions 1 must lie in \[2, 65536\]: a window of one token predicts nothing | train -train text:$W/fortunes.txt -gpt2_n_positions 1 -out $W/out/g
lm_train_layers    | -gpt2_n_layer 0 must lie in \[1, 1024\] | train -train text:$W/fortunes.txt -gpt2_n_layer 0 -out $W/out/g
lm_train_vocab_ids | longdoc.h5: token 22 \(document 0\) has id 32, outside the vocabulary \[0, 32\) | train -train tokens:$W/longdoc.h5 -gpt2_vocab_size 32 -out $W/out/g
lm_train_vocab_txt | -gpt2_vocab_size 300 with -train data text:.*fortunes.txt and no -tokenizer: text without tokenizer files is read byte by byte | train -train text:$W/fortunes.txt -gpt2_vocab_size 300 -out $W/out/g
lm_train_mixed     | infl train: -test data idx:.* holds rows of features but -train data text:.*fortunes.txt holds token sequences | train -train text:$W/fortunes.txt -test $T -out $W/out/g
lm_train_out_file  | output $W/out/existing.h5 exists and is not a directory; a GPT-2 is written as a directory | train -train text:$W/fortunes.txt -gpt2_n_embd 8 -gpt2_n_head 2 -gpt2_n_positions 8 -out $W/out/existing.h5 -overwrite
lm_ihvp_ggn        | -ihvp_curvature ggn: model type gpt2 has no Gauss-Newton \(R-op\) product; use -ihvp_curvature empirical | ihvp $G -train tokens:$W/longdoc.h5 -query tokens:$W/longdoc.h5 -query_indices 0:2 -ekfac_damping 1e-3 -ihvp_curvature ggn -out $W/out/i.h5
ihvp_rtol_one      | -ihvp_ksp_rtol 1.? must lie in \(0, 1\).*every score 0 | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_ksp_rtol 1 -out $W/out/i.h5
ihvp_max_it_zero   | -ihvp_ksp_max_it 0 must be >= 1                          | fidelity $M $F $TR $Q -query_indices 0:2 -ihvp_ksp_max_it 0 -out $W/out/i.h5
ihvp_pc_ilu        | -ihvp_pc_type ilu is not available: .*use none \(the default\), shell .* or jacobi | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_pc_type ilu -out $W/out/i.h5
ihvp_pc_damping    | -ihvp_pc_damping -0.001 must be a number > 0 | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_pc_type shell -ihvp_pc_damping -1e-3 -out $W/out/i.h5
ihvp_deflate_pc    | -ihvp_deflate 4 is a preconditioner of its own: use it with -ihvp_pc_type none | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_deflate 4 -ihvp_pc_type jacobi -out $W/out/i.h5
ihvp_rtol_nan      | -ihvp_ksp_rtol nan \(not a number\) must lie in \(0, 1\) | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_ksp_rtol nan -out $W/out/i.h5
ihvp_damping_nan   | -ekfac_damping nan \(not a number\) must be a finite number >= 0 | ihvp $M $TR $Q -query_indices 0:2 -ekfac_damping nan -out $W/out/i.h5
ihvp_deflate_mem   | -ihvp_deflate 100: its Lanczos run keeps 211 vectors of .* parameters, .* MiB per rank, more than the .* MiB per rank that -mem_limit .* leaves after .*; lower -ihvp_deflate, raise -mem_limit | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_deflate 100 -mem_limit 125M -out $W/out/i.h5
ihvp_deflate_steps | -ihvp_deflate_steps 4 must exceed -ihvp_deflate 4 | ihvp $M $F $TR $Q -query_indices 0:2 -ihvp_deflate 4 -ihvp_deflate_steps 4 -out $W/out/i.h5
# --- options
query_out_of_range | query index 10 is outside the query set, which has 10 examples | score $M $F $TR $Q -query_indices 5:12 -out $W/out/s.h5
query_not_integer  | -query_indices "3,x": "x" is not an integer               | score $M $F $TR $Q -query_indices 3,x -out $W/out/s.h5
query_file_missing | -query_indices @$W/nope.txt: cannot open                  | score $M $F $TR $Q -query_indices @$W/nope.txt -out $W/out/s.h5
query_range_ovfl   | -query_indices 0:9223372036854775807:2: query index 10 is outside the query set, which has 10 examples | score $M $F $TR $Q -query_indices 0:9223372036854775807:2 -out $W/out/s.h5
query_range_huge   | -query_indices 0:10000000000: query index 10 is outside the query set, which has 10 examples | score $M $F $TR $Q -query_indices 0:10000000000 -out $W/out/s.h5
query_list_long    | the value of -query_indices has 4904 characters .* -query_indices @FILE | score $M $F $TR $Q -query_indices $QLONG -out $W/out/s.h5
limit_wraps_32bit  | data idx:.*t10k: -train_limit 4294967297 is larger than the 10000 examples in the files; give at most 10000 | fit $M -train $T -train_limit 4294967297 -out $W/out/f.h5
int_beyond_64bit   | option -ekfac_chunk 99999999999999999999 is outside the range of this integer option | fit $M $TR -ekfac_chunk 99999999999999999999 -out $W/out/f.h5
dims_wraps_32bit   | option -model_dims 784,4294967297,10 is outside the range of this integer option | train $TR -model_dims 784,4294967297,10 -out $W/out/t.safetensors
dims_huge          | -model_dims 784,200000,200000,10: an MLP of these layer sizes has 4.*e\+10 parameters.*GiB of memory of this machine | train $TR -model_dims 784,200000,200000,10 -out $W/out/t.safetensors
ihvp_layer_groups  | infl ihvp holds every layer's factors on every rank .* -layer_groups 2 is not supported: drop it | ihvp $M $F $TR $Q -query_indices 0:2 -layer_groups 2 -out $W/out/i.h5
fidelity_layer_split | infl fidelity holds every layer's whole factors on every rank .* -layer_split true is not supported: drop it | fidelity $M $F $TR $Q -query_indices 0:2 -layer_split true -out $W/out/i.h5
mem_limit_16eib    | -mem_limit 1e30 is 1e\+30 bytes per rank, more than the 16 EiB | fit $M $TR -mem_limit 1e30 -out $W/out/f.h5
data_idx_gz_corrupt | gzbad-images-idx3-ubyte.gz: the gzip data are corrupt \(zlib: [a-z ]+\).*gzip -t | fit $M -train idx:$W/gzbad -out $W/out/f.h5
limit_beyond_64bit | -train_limit 99999999999999999999 must be >= 0 and <= 9223372036854775807 | fit $M -train $T -train_limit 99999999999999999999 -out $W/out/f.h5
topk_wraps_32bit   | option -score_topk 4294967297 is outside the range of this integer option | score $M $F $TR $Q -score_topk 4294967297 -out $W/out/s.h5
query_index_huge   | query index 99999999999 is outside the query set          | score $M $F $TR $Q -query_indices 99999999999 -out $W/out/s.h5
limit_not_integer  | -query_limit 10x is not an integer                        | score $M $F $TR -query $T -query_limit 10x -out $W/out/s.h5
store_list_long    | -store lists 33 stores, but at most 32 can be used in one run | self -store $(printf "$W/scores.h5,%.0s" $(seq 32))$W/scores.h5 -out $W/out/s.h5
ckpt_list_long     | -checkpoints lists 33 checkpoints, but at most 32 can be used in one run | self -method tracin -checkpoints $(printf "$W/model.safetensors,%.0s" $(seq 32))$W/model.safetensors $TR -out $W/out/s.h5
long_path          | the value of -model has [0-9]+ characters .*more than the 4095 it may have | fit -model $W/$(printf 'x%.0s' $(seq 5000)) $TR -out $W/out/f.h5
# --- numerics
damping_1e-300     | layer 0: damping 1e-300 \(-ekfac_damping\) is too small for Lambda from .* in single precision.*smallest damping accepted is [0-9.e-]+ | score $M $F $TR $Q -ekfac_damping 1e-300 -out $W/out/s.h5
damping_1e-30_self | layer 0: damping 1e-30 \(-ekfac_damping\) is too small.*or -model_precision double, which accepts a damping >= | self $M $F $TR -ekfac_damping 1e-30 -out $W/out/s.h5
damping_double     | layer 0: damping 1e-16 \(-ekfac_damping\) is too small for Lambda from .* in double precision | score $M $F $TR $Q -ekfac_damping 1e-16 -model_precision double -out $W/out/s.h5
zero_model_fit     | layer 0: Lambda is all zero .*default damping 0.1 x mean\(Lambda\) is 0.*give -ekfac_damping | fit -model $W/zero.safetensors $TR -out $W/out/f.h5
saturated_fit      | layer 0: Lambda is all zero .*saturated model                | fit -model $W/huge30.safetensors $TR -out $W/out/f.h5
logits_inf_eval    | forward pass overflows: logit 0 \(tensor logits, the output of layer 2\) of example 0 .* -inf | eval -model $W/huge38.safetensors -data $T -data_limit 20
logits_inf_fit     | forward pass overflows: logit 0 \(tensor logits               | fit -model $W/huge38.safetensors $TR -ekfac_fisher empirical -out $W/out/f.h5
scores_nonfinite   | score of query 0 and training example 0 is [-nanif.]+ \(non-finite\) | score $M -factors $W/factors_huge.h5 $TR $Q -out $W/out/s.h5
self_nonfinite     | self-influence of training example 0 is [-nanif.]+ \(non-finite\) | self $M -factors $W/factors_huge.h5 $TR -out $W/out/s.h5
# --- damaged checkpoints and factors: refused before use, naming the file, the dataset and the entry
ckpt_score_nan     | $W/sp_top.h5.partial: dataset /checkpoint/top_scores holds nan at entry \(0, 0\).*delete $W/sp_top.h5.partial to start this stage over | score $M $F $TR $Q $SCK -out $W/sp_top.h5
ckpt_score_norm    | $W/sp_norm.h5.partial: dataset /checkpoint/train_norms holds inf at entry 2;.*delete $W/sp_norm.h5.partial | score $M $F $TR $Q $SCK -out $W/sp_norm.h5
ckpt_score_count   | $W/sp_count.h5.partial: entry 1 of dataset /checkpoint/bottom_n is 99, outside \[0, 10\].*delete $W/sp_count.h5.partial | score $M $F $TR $Q $SCK -out $W/sp_count.h5
ckpt_fit_inf       | $W/fp_inf.h5.partial: dataset /checkpoint/1/S_sum holds inf at entry \(0, 5\).*delete $W/fp_inf.h5.partial | fit $M $TR -ekfac_chunk 4 -checkpoint_stop_after 1 -out $W/fp_inf.h5
ckpt_self_inf      | $W/selfp_inf.h5.partial: dataset /self_influence holds -inf at entry 30;.*delete $W/selfp_inf.h5.partial | self $M $F $TR -self_chunk 4 -checkpoint_stop_after 1 -out $W/selfp_inf.h5
ckpt_train_nan     | $W/tp_nan.safetensors.partial: dataset /checkpoint/moment2 holds nan at entry 100;.*delete $W/tp_nan.safetensors.partial | train $TRK -out $W/tp_nan.safetensors
ckpt_not_hdf5      | $W/garbage_self.h5.partial, the checkpoint this run would resume, is not an HDF5 file.*delete it | self $M $F $TR -out $W/garbage_self.h5
factors_nan        | $W/factors_nan.h5: layer 1: dataset /layers/1/eigenvalues_S holds nan at entry 3; .*run infl fit again | score $M -factors $W/factors_nan.h5 $TR $Q -out $W/out/s.h5
# --- report
report_other_query | scores.h5 was computed on other query data: its query_sha256 is [0-9a-f]{64}, but the -query data .* has sha256 [0-9a-f]{64} | report -scores $W/scores.h5 -train $T -train_limit 50 -query $T -query_limit 20 -out $W/out/r.html
report_neg_index   | scores_neg.h5: dataset /topk/train_indices at position \(0, 1\) holds training index -5 | report -scores $W/scores_neg.h5 -train $T -train_limit 50 -query $T -query_limit 10 -out $W/out/r.html
report_class_names | -class_names gives 3 names but the labels of the train data idx:.*t10k go up to 9: give one name per class | report -scores $W/scores.h5 -train $T -train_limit 50 -query $T -query_limit 10 -class_names a,b,c -out $W/out/r.html
topk_zero          | -score_topk 0 must be positive                            | score $M $F $TR $Q -score_topk 0 -out $W/out/s.h5
topk_negative      | -score_topk -3 must be positive                           | score $M $F $TR $Q -score_topk -3 -out $W/out/s.h5
unknown_option     | unknown or unused option: -score_topkk 5                  | score $M $F $TR $Q -score_topkk 5 -out $W/out/s.h5
unknown_option_fit | unknown or unused option: -ekfac_dampin 0.1               | fit $M $TR -ekfac_dampin 0.1 -out $W/out/f.h5
eigen_groups_zero  | -eigen_groups 0 must be >= 1                             | fit $M $TR -eigen_groups 0 -out $W/out/f.h5
malformed_int      | the value of -ekfac_chunk is malformed; give an integer  | fit $M $TR -ekfac_chunk abc -out $W/out/f.h5
valueless_int      | option -ekfac_chunk was given without a value             | fit $M $TR -out $W/out/f.h5 -ekfac_chunk
valueless_elist    | option -model_precision was given without a value         | fit $M $TR -model_precision -ekfac_chunk 64 -out $W/out/f.h5
valueless_out      | option -out was given without a value                     | fit $M $TR -out -overwrite
malformed_real     | the value of -ekfac_damping is malformed; give a number  | fit $M $TR -ekfac_damping 1e-3x -out $W/out/f.h5
malformed_bool     | the value of -eigen_lapack is malformed; give 0 or 1     | fit $M $TR -eigen_lapack maybe -out $W/out/f.h5
eigen_grid_bad     | -eigen_grid 2by2: expected PxQ                           | fit $M $TR -eigen_grid 2by2 -out $W/out/f.h5
missing_model_opt  | option -model is required                                 | fit $TR -out $W/out/f.h5
# --- outputs
out_exists_fit     | output $W/out/existing.h5 exists; pass -overwrite         | fit $M $TR -out $W/out/existing.h5
out_exists_score   | output $W/out/existing.h5 exists; pass -overwrite         | score $M $F $TR $Q -out $W/out/existing.h5
out_exists_self    | output $W/out/existing.h5 exists; pass -overwrite         | self $M $F $TR -out $W/out/existing.h5
out_no_directory   | $W/nodir/f.h5: directory .*does not exist          | fit $M $TR -out $W/nodir/f.h5
out_is_directory   | output $W/out/adir.h5 is a directory | fit $M $TR -out $W/out/adir.h5 -overwrite
out_is_input       | output $W/factors.h5 is the input $W/factors.h5 of this stage | score $M $F $TR $Q -out $W/factors.h5 -overwrite
out_is_model       | output $W/model.safetensors is the input $W/model.safetensors | fit $M $TR -out $W/model.safetensors -overwrite
out_links_to_input | output $W/factors_link.h5 is the input $W/factors.h5     | self $M $F $TR -out $W/factors_link.h5 -overwrite
out_is_checkpoint  | output $W/other.safetensors is the input $W/other.safetensors of this stage | self -method tracin -checkpoints $W/model.safetensors,$W/other.safetensors -tracin_lr 1,1 $TR -out $W/other.safetensors -overwrite
out_is_store_list  | output $W/scores.h5 is the input $W/scores.h5 of this stage | self -store $W/factors.h5,$W/scores.h5 -tracin_lr 1,1 -out $W/scores.h5 -overwrite
out_is_fifo        | output $W/out/fifo.h5 exists and is not a regular file \(a named pipe\) | fit $M $TR -out $W/out/fifo.h5 -overwrite
out_is_options     | output $W/study.opts is the input $W/study.opts of this stage | fit $M -train $T -options_file $W/study.opts -out $W/study.opts -overwrite
out_partial_dir    | cannot write output $W/out/pdir.h5: $W/out/pdir.h5.partial, where infl keeps the checkpoint of this output, is a directory | fit $M $TR -out $W/out/pdir.h5
out_lock_held      | output $W/out/held.h5 is being written by another infl process \(host [^,]+, pid $$, ranks 1, start [0-9]+, holding the lock .*delete $W/out/held.h5.partial.lock and rerun | fit $M $TR -out $W/out/held.h5
options_self       | the options file $W/self.opts includes itself \(-options_file $W/self.opts on line 1\) | fit $M $TR -options_file $W/self.opts -out $W/out/f.h5
options_cycle      | options files include each other in a cycle: $W/cycle_a.opts \(line 2\) -> $W/cycle_b.opts \(line 2\) -> $W/cycle_a.opts | fit $M -train $T -options_file $W/cycle_a.opts -out $W/out/f.h5
options_nested_missing | cannot read the options file $W/nope.opts given with -options_file on line 1 of $W/missing.opts | fit $M $TR -options_file $W/missing.opts -out $W/out/f.h5
options_two_a_line | the options file $W/two.opts, line 1: "-overwrite" follows the option -train_limit and its value "50"; write one option per line | fit $M -train $T -options_file $W/two.opts -out $W/out/f.h5
options_squotes    | the options file $W/squote.opts, line 1: "prompts.txt'" follows the option -query_prompts .*double quotes \(single quotes are not quotes to PETSc\) | score $G -factors $W/factors.h5 -train $T -options_file $W/squote.opts -out $W/out/s.h5
options_no_dash    | the options file $W/nodash.opts, line 2: "train_limit" is not an option; each line holds one option starting with '-' | fit $M -train $T -options_file $W/nodash.opts -out $W/out/f.h5
out_in_proc        | cannot write output /proc/s.h5: creating /proc/s.h5.partial.lock beside it failed: [A-Z] | fit $M $TR -out /proc/s.h5
out_parent_is_file | cannot write output $W/out/existing.h5/f.h5: $W/out/existing.h5 is not a directory | fit $M $TR -out $W/out/existing.h5/f.h5
outdir_is_file     | -outdir $W/out/existing.h5 is not a directory             | run $TR -test $T -test_limit 10 -query_indices 0:2 -outdir $W/out/existing.h5
outdir_no_parent   | -outdir $W/nodir/run is not a directory that can be created or used \(creating it failed: No such file or directory\) | run $TR -test $T -test_limit 10 -query_indices 0:2 -outdir $W/nodir/run
# --- the training recipe (50 examples, batch 128: 1 step per epoch)
train_clip_neg     | -train_clip -1\.? must be a gradient norm >= 0               | train $TR -model_dims 784,8,10 -train_clip -1 -out $W/out/t.safetensors
train_warmup_long  | -train_warmup 30 is longer than the run: 10 epochs x 1 steps \(50 examples, -train_batch 128\) = 10 steps | train $TR -model_dims 784,8,10 -train_warmup 30 -out $W/out/t.safetensors
train_lr_min_above | -train_lr_min 0.01 must lie in \[0, -train_lr 0.001\]     | train $TR -model_dims 784,8,10 -train_schedule cosine -train_lr_min 0.01 -out $W/out/t.safetensors
train_schedule_bad | Unknown option linear for -train_schedule. Available options: constant cosine | train $TR -model_dims 784,8,10 -train_schedule linear -out $W/out/t.safetensors
train_adam_decay   | -train_weight_decay 0.1 with -train_optimizer adam: .*-train_optimizer adamw | train $TR -model_dims 784,8,10 -train_weight_decay 0.1 -out $W/out/t.safetensors
EOF
  echo "job $s done: $pass passed, $fail failed"
}

part() {
  local s res pids=""
  need_setup "$pn"
  for s in $(seq "$JOBS"); do
    W=$B/part$pk-$s
    # the held lock of out_lock_held; written here: it names this shell
    echo "host $(hostname), pid $$, ranks 1, start $(awk '{ print $22 }' /proc/$$/stat)" > "$W/out/held.h5.partial.lock"
    hold "$W/out/held.h5.partial.lock"
  done
  sleep 0.5
  for s in $(seq "$JOBS"); do
    job "$s" > "$B/part$pk-$s/job.log" 2>&1 &
    pids="$pids $!"
  done
  wait $pids
  for s in $(seq "$JOBS"); do
    res=$B/part$pk-$s/job.log
    grep -v "^job $s done: " "$res"
    if grep -q "^job $s done: " "$res"; then
      pass=$((pass + $(grep -c '^ok    ' "$res"))) fail=$((fail + $(grep -c '^FAIL  ' "$res")))
    else
      fail=$((fail + 1))
      echo "FAIL  job $s of part $pk/$pn did not finish its cases"
    fi
  done
}

# ------------------------------------------------------------------------------------------------ must work
must_work() {
need_setup "$(cut -d' ' -f1 "$B/layout" 2>/dev/null)"
W=$B/works
paths
# the outputs of an earlier run of works go (out/ holds no hard link: the parts' files are not touched)
rm -rf "$W/out" && mkdir "$W/out" && echo "an old result that must survive" > "$W/out/existing.h5" || exit 1
# a stale lock: the recorded process no longer exists, a leftover process keeps the flock
sleep 0 & wait $!
deadpid=$!
echo "host $(hostname), pid $deadpid, ranks $NP, start 1" > "$W/out/stale.h5.partial.lock"
hold "$W/out/stale.h5.partial.lock"
sleep 0.5

works() { # NAME NP ARGS...
  local name=$1 np=$2
  shift 2
  if run_infl "$np" "$@" && [ "$(grep -ci error "$W/log.err")" -eq 0 ]; then ok "$name"; else bad "$name" "exit status $?, expected success"; fi
}
np_many=$((NP > 1 ? 4 : 1))
works fit_3_examples  "$np_many" fit $M -train $T -train_limit 3 -out "$W/out/f3.h5"
works score_3_examples "$np_many" score $M -factors "$W/out/f3.h5" -train $T -train_limit 3 $Q -query_indices 0:2 -score_topk 2 -out "$W/out/s3.h5"
works self_3_examples "$np_many" self $M -factors "$W/out/f3.h5" -train $T -train_limit 3 -out "$W/out/self3.h5"
works overwrite       "$NP" fit $M $TR -out "$W/out/existing.h5" -overwrite
works eigen_options   "$NP" fit $M $TR -eigen_lapack 0 -eigen_groups 1 -eigen_block_size 16 -ekfac_chunk 2000000000 -out "$W/out/feig.h5"
# -score_topk larger than the training set: clamped to N (with a note), no padding rows
works topk_above_n    "$NP" score $M -factors "$W/out/f3.h5" -train $T -train_limit 3 $Q -query_indices 0:2 -score_topk 50 -out "$W/out/sbig.h5"
if [ -f "$W/out/sbig.h5" ]; then
  if grep -q "score_topk 50 .*3" "$W/log.out" "$W/log.err" && h5dump -d /topk/train_indices "$W/out/sbig.h5" | grep -q "( 2, 3 )" && ! h5dump -d /topk/train_indices "$W/out/sbig.h5" | grep -q -- "-1"; then
    ok "topk_above_n clamps to N with a note"
  else
    bad "topk_above_n" "expected a note and /topk/train_indices (2, 3) without -1 padding: $(h5dump -H -d /topk/train_indices "$W/out/sbig.h5" | grep DATASPACE)"
  fi
fi

# the scores file records the query data's hash, and a report on the same query data works
if h5dump -a query_sha256 "$W/scores.h5" | grep -Eq '"[0-9a-f]{64}"'; then ok "scores.h5 records query_sha256"; else bad "query_sha256" "scores.h5 has no query_sha256 attribute"; fi
works report_same_query "$NP" report -scores "$W/scores.h5" -train $T -train_limit 50 -query $T -query_limit 10 -out "$W/out/r.html"

# infl ihvp records the same query_sha256 as infl score on the same query data (its report checks the query data too)
works ihvp_small "$NP" ihvp $M $F $TR $Q -query_indices 0:2 -ekfac_damping 1 -out "$W/out/ihvp.h5"
qs=$(h5dump -a query_sha256 "$W/scores.h5" | grep -Eo '"[0-9a-f]{64}"')
qi=$(h5dump -a query_sha256 "$W/out/ihvp.h5" 2>/dev/null | grep -Eo '"[0-9a-f]{64}"')
if [ -n "$qs" ] && [ "$qs" = "$qi" ]; then ok "ihvp.h5 records the query_sha256 of its query data"; else bad "ihvp query_sha256" "ihvp.h5 has query_sha256 '$qi', scores.h5 of the same query data '$qs'"; fi

# infl ihvp on prompt/completion queries records their tokens (/query_sequences), so that infl report shows them
printf 'A\n>>>\n fortune\n' > "$W/prompts_ok.txt"
works ihvp_prompts "$NP" ihvp -model "$src/tests/ref/gpt2_bytes" -train "text:$W/fortunes.txt" -query_prompts "$W/prompts_ok.txt" -ekfac_damping 1e-2 -ihvp_deflate 0 -out "$W/out/ihvp_p.h5"
works report_ihvp_prompts "$NP" report -model "$src/tests/ref/gpt2_bytes" -scores "$W/out/ihvp_p.h5" -train "text:$W/fortunes.txt" -out "$W/out/ihvp_p.html"
if grep -q '>Completion (the query loss' "$W/out/ihvp_p.html" 2> /dev/null; then ok "report of ihvp prompts shows the prompt and completion"; else bad "report_ihvp_prompts" "no prompt/completion in $W/out/ihvp_p.html"; fi

# infl inspect of a GPT-2 directory describes the model (it tried to open the directory as HDF5)
works inspect_gpt2_dir "$NP" inspect -file "$src/tests/ref/gpt2_bytes"
if grep -q "InflGPT2: n_layer 2, n_embd 16" "$W/log.out"; then ok "inspect_gpt2_dir describes the GPT-2"; else bad "inspect_gpt2_dir" "no InflGPT2 line in: $(head -c 300 "$W/log.out")"; fi

# a stale lock (its recorded process is gone, a leftover process keeps the flock) is taken over with a note
works lock_stale "$NP" fit $M $TR -out "$W/out/stale.h5"
if grep -q "stale.h5.partial.lock is left by a run that no longer exists (host [^,]*, pid $deadpid" "$W/log.out" && [ -f "$W/out/stale.h5" ] && [ ! -e "$W/out/stale.h5.partial.lock" ]; then ok "lock_stale: taken over with a note, lock removed at the end"
else bad "lock_stale" "no note naming the stale lock, no output, or a lock file left"; fi

# no "data data" in the option texts
run_infl 1 eval -help
if grep -q "data data" "$W/log.out" "$W/log.err"; then bad "help_data_data" "infl eval -help says \"data data\": $(grep -h "data data" "$W/log.out" "$W/log.err" | head -1 | cut -c1-120)"; else ok "help_data_data: no \"data data\" in infl eval -help"; fi

# two runs writing the same output at once: one writes it, the other is refused at once, naming the lock's holder
o="$W/out/locked.h5"
timeout 120 "$mpiexec" --oversubscribe -n "$NP" "$exe" fit $M -train $T -train_limit 10000 -out "$o" < /dev/null > "$W/lockA.out" 2> "$W/lockA.err" &
pa=$!
timeout 120 "$mpiexec" --oversubscribe -n "$NP" "$exe" fit $M -train $T -train_limit 10000 -out "$o" < /dev/null > "$W/lockB.out" 2> "$W/lockB.err" &
pb=$!
wait $pa
sa=$?
wait $pb
sb=$?
if [ $sa -eq 0 ]; then loser=B; else loser=A; fi
lockre="output $o is being written by another infl process \(host [^,]+, pid [0-9]+, ranks $NP, start [0-9]+, holding the lock $o.partial.lock\)"
if [ $((sa == 0)) -eq $((sb == 0)) ]; then
  fail=$((fail + 1))
  echo "FAIL  concurrent_out: exit statuses $sa and $sb, expected one success and one failure"
  sed 's/^/        | /' "$W/lockA.err" "$W/lockB.err" | grep -i error | head -5
elif [ "$(grep -ci error "$W/lock$loser.err")" -ne 1 ] || ! grep -Eq -- "$lockre" "$W/lock$loser.err"; then
  fail=$((fail + 1))
  echo "FAIL  concurrent_out: the refused run's message does not match /$lockre/"
  sed 's/^/        | /' "$W/lock$loser.err" | head -5
elif ! h5dump -a examples "$o" | grep -q "10000" || [ -e "$o.partial.lock" ] || [ -e "$o.partial" ]; then
  fail=$((fail + 1))
  echo "FAIL  concurrent_out: the winner's output is incomplete, or a lock or partial file is left"
else ok "concurrent_out: $(grep -i error "$W/lock$loser.err" | cut -c1-160)"
fi
}

case $MODE in
  setup) setup "${3:-1}" ;;
  works) must_work ;;
  all) pk=1 pn=1 && setup 1 && { part; must_work; } ;;
  *) part ;;
esac
echo "bad_input.sh at $NP rank(s), $MODE: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

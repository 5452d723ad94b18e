#!/usr/bin/env bash
# A full disk while an HDF5 output is written, end to end through the infl executable at NP ranks, simulated without
# mount (CI may not allow it) by a soft file size limit on every rank (ulimit -S -f, SIGXFSZ ignored, so that write
# fails with EFBIG as it fails with ENOSPC on a full disk).  Each case must: exit with a non-zero status within 60 s
# (no hang: every rank agrees on the failure), print exactly ONE infl error line that names the file, the cause and the
# fix, print no HDF5 diagnostics, and leave no temporary file behind; a resumable in-place .partial (project) is kept
# and resumed by the next run, which then completes.
# Usage: diskfull.sh [NP]   with INFL_EXE, INFL_MPIEXEC, INFL_SOURCE_DIR set (tests/CMakeLists.txt does).
set -u
NP=${1:-1}
exe=${INFL_EXE:?INFL_EXE must name the infl executable}
mpiexec=${INFL_MPIEXEC:-mpiexec}
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR must name the source tree}
fm=${INFL_FMNIST:-/usr/share/datasets/fashion-mnist}
W=$(pwd)/cli-diskfull-np$NP
rm -rf "$W" && mkdir -p "$W/out" || exit 1
pass=0 fail=0
LIMIT_KB=1024 # every output below is several MiB

# NP ARGS...: run infl; LIMIT=1 runs each rank under the file size limit.  Open MPI's shared-memory transport sizes
# a file of its own at start-up, which the limit would refuse: the case runs over self,tcp (an Open MPI setting,
# ignored by other MPIs).
run_infl() {
  local np=$1
  shift
  if [ "${LIMIT:-0}" = 1 ]; then
    OMPI_MCA_btl=self,tcp timeout 60 "$mpiexec" --oversubscribe -n "$np" sh -c 'trap "" XFSZ; ulimit -S -f '"$LIMIT_KB"' && exec "$@"' infl "$exe" "$@" < /dev/null > "$W/log.out" 2> "$W/log.err"
  else
    timeout 120 "$mpiexec" --oversubscribe -n "$np" "$exe" "$@" < /dev/null > "$W/log.out" 2> "$W/log.err"
  fi
}
ok() { pass=$((pass + 1)); echo "ok    $*"; }
bad() {
  fail=$((fail + 1))
  echo "FAIL  $1: $2"
  sed 's/^/        | /' "$W/log.err" | head -30
}

M="-model $W/model.safetensors"
T="-train idx:$fm/t10k -train_limit 1000"
cp "$src/tests/ref/mlp_small.safetensors" "$W/model.safetensors"
run_infl "$NP" fit $M $T -train_limit 200 -out "$W/factors.h5" || { cat "$W/log.err"; echo "fixture: infl fit failed"; exit 1; }

# NAME STAGE KEEP REGEX ARGS...: the run at the limit fails as described above; KEEP: the file left in $W/out (or -)
full_case() {
  local name=$1 stage=$2 keep=$3 re=$4
  shift 4
  rm -rf "$W/out" && mkdir -p "$W/out"
  LIMIT=1 run_infl "$NP" "$stage" "$@"
  local st=$? nerr left
  nerr=$(grep -c "^infl $stage: error" "$W/log.err")
  left=$(cd "$W/out" && ls)
  if [ $st -eq 0 ]; then bad "$name" "exit status 0 at the file size limit"
  elif [ $st -eq 124 ]; then bad "$name" "no exit within 60 s (hang)"
  elif [ "$nerr" -ne 1 ]; then bad "$name" "$nerr infl error lines, expected exactly one"
  elif ! grep -Eq "^infl $stage: error: $re" "$W/log.err"; then bad "$name" "message does not match /$re/"
  elif grep -q "HDF5-DIAG\|HDF5 call failed" "$W/log.err"; then bad "$name" "HDF5 diagnostics printed"
  elif [ "$keep" = - ] && [ -n "$left" ]; then bad "$name" "files left behind: $left"
  elif [ "$keep" != - ] && [ "$left" != "$keep" ]; then bad "$name" "left '$left', expected only $keep"
  else ok "$name"; fi
}

EFBIG="File too large: the file size limit \(ulimit -f\) is reached; raise it or choose another -out"
full_case fit fit - "cannot write $W/out/f.h5.partial.tmp: $EFBIG; the unfinished file was removed" \
  $M $T -train_limit 200 -out "$W/out/f.h5"
full_case score_save_all score - "cannot write $W/out/s.h5.partial.tmp: $EFBIG; the unfinished file was removed" \
  $M -factors "$W/factors.h5" $T -query idx:$fm/t10k -query_limit 300 -query_indices 0:300 -score_save_all -out "$W/out/s.h5"
full_case project project p.h5.partial "cannot write $W/out/p.h5.partial: $EFBIG; $W/out/p.h5.partial is kept for resuming \(delete it to get its space back\)" \
  $M $T -project_kind kronecker -out "$W/out/p.h5"
# the kept .partial is a valid checkpoint: without the limit the next run resumes it and completes
if run_infl "$NP" project $M $T -project_kind kronecker -out "$W/out/p.h5" && [ -f "$W/out/p.h5" ] && [ ! -e "$W/out/p.h5.partial" ]; then
  ok "project resumes after the limit is lifted"
else bad "project_resume" "the run without the limit failed or left p.h5.partial (status $?)"; fi

echo "diskfull.sh (np $NP): $pass passed, $fail failed"
[ "$fail" -eq 0 ]

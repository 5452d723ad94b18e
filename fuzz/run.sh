#!/usr/bin/env bash
# For every fuzz target built in BIN_DIR: first run each input of its committed corpus (fuzz/corpus/<target>) once, a
# regression run whose length does not depend on the machine's speed; then fuzz for SECONDS from that corpus (read
# only; new inputs go to a scratch directory).  Fails on any crash, leak or sanitizer report; crash inputs are kept in
# BIN_DIR/crashes/<target>/.  ctest (fuzz_parsers) gives 5 s per target (INFL_FUZZ_SECONDS, fuzz/CMakeLists.txt): a
# short random run on every CI build; fuzz longer by hand (fuzz/run.sh BIN_DIR 600) after changing a parser.
# A fixed seed (-seed=1) makes the inputs tried a fixed sequence, so a run is repeatable: a shorter run (slower
# machine, time limit) tries a prefix of the same sequence.  FUZZ_SEED=0 asks libFuzzer for a random seed.
# Exit status: 0 every target ran clean; 1 a target failed, or some targets are built and others not (a broken
# build); 77 no target is built here (no clang / libFuzzer): skipped, as ctest reports it (SKIP_RETURN_CODE 77).
# Usage: fuzz/run.sh BIN_DIR [SECONDS]
set -u
bin=${1:?usage: run.sh BIN_DIR [SECONDS]}
secs=${2:-5}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fail=0 ran=0 missing=""
for t in fuzz_safetensors fuzz_idx fuzz_h5data fuzz_tokenizer fuzz_tokens fuzz_gpt2; do
  exe=$bin/$t
  [ -x "$exe" ] || { missing="$missing $t"; continue; }
  ran=$((ran + 1))
  scratch=$(mktemp -d)
  mkdir -p "$bin/crashes/$t"
  # Leak checking is off: Open MPI / PMIx allocations live until exit (MPI is never finalized here).  A failed
  # huge allocation (a corrupt header promising 10^11 bytes) returns NULL as in production, where PETSc reports
  # it as an error.
  limits=(-detect_leaks=0 -malloc_limit_mb=1000000 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$bin/crashes/$t/")
  seeds=("$here/corpus/$t"/*)
  if ! ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0 "$exe" "${limits[@]}" "${seeds[@]}" > "$bin/$t.regression.log" 2>&1; then
    echo "$t: FAILED on its committed corpus (log $bin/$t.regression.log)"
    grep -E 'ERROR|SUMMARY|#[0-9]+ 0x|^Running' "$bin/$t.regression.log" | head -30
    fail=1
  elif ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0 "$exe" "${limits[@]}" \
    -seed="${FUZZ_SEED:-1}" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 \
    "$scratch" "$here/corpus/$t" > "$bin/$t.log" 2>&1; then
    echo "$t: ok, the ${#seeds[@]} corpus inputs, then $(grep -E '^stat::number_of_executed_units' "$bin/$t.log" | awk '{print $2}') executions in ${secs} s"
  else
    echo "$t: FAILED (crash inputs in $bin/crashes/$t/)"
    grep -E 'ERROR|SUMMARY|#[0-9]+ 0x' "$bin/$t.log" | head -30
    fail=1
  fi
  rm -rf "$scratch"
done
if [ $ran -eq 0 ]; then
  echo "no fuzz target is built in $bin (needs clang and libFuzzer: apt-get install clang libclang-rt-14-dev): skipped"
  exit 77
fi
if [ -n "$missing" ]; then
  echo "FAIL: not built in $bin although other targets are:$missing"
  fail=1
fi
exit $fail

#!/usr/bin/env bash
# Run every fuzz target built in BIN_DIR for SECONDS each, from its seed corpus (fuzz/corpus/<target>, read only;
# new inputs go to a scratch directory).  Fails on any crash, leak or sanitizer report; crash inputs are kept in
# BIN_DIR/crashes/<target>/.
# A fixed seed (-seed=1) makes the inputs tried a fixed sequence, so a run is repeatable: a shorter run (slower
# machine, time limit) tries a prefix of the same sequence.  FUZZ_SEED=0 asks libFuzzer for a random seed.
# Exit status: 0 every target ran clean; 1 a target failed, or some targets are built and others not (a broken
# build); 77 no target is built here (no clang / libFuzzer): skipped, as ctest reports it (SKIP_RETURN_CODE 77).
# Usage: fuzz/run.sh BIN_DIR [SECONDS]
set -u
bin=${1:?usage: run.sh BIN_DIR [SECONDS]}
secs=${2:-20}
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
  if ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0 "$exe" -detect_leaks=0 -malloc_limit_mb=1000000 \
    -seed="${FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$bin/crashes/$t/" "$scratch" "$here/corpus/$t" > "$bin/$t.log" 2>&1; then
    echo "$t: ok, $(grep -E '^stat::number_of_executed_units' "$bin/$t.log" | awk '{print $2}') executions in ${secs} s"
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

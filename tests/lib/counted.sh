# tests/lib/counted.sh -- helpers of the shell tests that count every step (tests/layout.sh, tests/layout_mem.sh);
# needs EXE (the infl executable) and MPIEXEC, and runs in the test's scratch directory.
#   check CMD...      run CMD (a comparison tool); its last line on success, its whole output and "FAILED: CMD" else
#   run NP ARGS...    `infl ARGS -overwrite` on NP ranks, its output in last.log; exit status 0 expected (else the
#                     output and "FAILED: infl ARGS"; returns 1)
#   expect TEXT       a line of last.log contains TEXT
#   peaks MIB         every "STAGE: peak memory per rank X MiB" line of last.log (the peak the program measured:
#                     VmHWM, reset by infl run at each stage) has X <= MIB, and there is at least one
# Each counts one step in $pass or $fail.
pass=0; fail=0
check() { if "$@" > cmp.log 2>&1; then pass=$((pass + 1)); tail -1 cmp.log; else cat cmp.log; echo "FAILED: $*"; fail=$((fail + 1)); fi; }
run() {
  local np=$1; shift
  $MPIEXEC --oversubscribe -n "$np" "$EXE" "$@" -overwrite > last.log 2>&1 || { cat last.log; echo "FAILED: infl $*"; fail=$((fail + 1)); return 1; }
  pass=$((pass + 1))
}
peaks() {
  local bad
  if ! grep -q "peak memory per rank" last.log; then cat last.log; echo "FAILED: no peak memory line"; fail=$((fail + 1)); return; fi
  bad=$(awk -v lim="$1" '/: peak memory per rank [0-9]+ MiB/ { for (i = 1; i <= NF; i++) if ($i == "rank") v = $(i + 1); if (v + 0 > lim + 0) print }' last.log)
  if [ -z "$bad" ]; then pass=$((pass + 1)); echo "ok: peaks $(grep -o '^[a-z -]*: peak memory per rank [0-9]* MiB' last.log | sed 's/: peak memory per rank /=/' | tr '\n' ' ')<= $1 MiB"
  else cat last.log; echo "FAILED: peaks above -mem_limit $1 MiB: $bad"; fail=$((fail + 1)); fi
}
expect() {
  if grep -qF -- "$1" last.log; then pass=$((pass + 1)); echo "ok: $1"; else cat last.log; echo "FAILED: no line \"$1\""; fail=$((fail + 1)); fi
}

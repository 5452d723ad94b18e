# tests/lib/counted.sh -- helpers of the shell tests that count every step (tests/layout.sh, tests/layout_mem.sh);
# needs EXE (the infl executable) and MPIEXEC, and runs in the test's scratch directory.
#   check CMD...      run CMD (a comparison tool); its last line on success, its whole output and "FAILED: CMD" else
#   run NP ARGS...    `infl ARGS -overwrite` on NP ranks, its output in last.log; exit status 0 expected (else the
#                     output and "FAILED: infl ARGS"; returns 1)
#   expect TEXT       a line of last.log contains TEXT
# Each counts one step in $pass or $fail.
pass=0; fail=0
check() { if "$@" > cmp.log 2>&1; then pass=$((pass + 1)); tail -1 cmp.log; else cat cmp.log; echo "FAILED: $*"; fail=$((fail + 1)); fi; }
run() {
  local np=$1; shift
  $MPIEXEC --oversubscribe -n "$np" "$EXE" "$@" -overwrite > last.log 2>&1 || { cat last.log; echo "FAILED: infl $*"; fail=$((fail + 1)); return 1; }
  pass=$((pass + 1))
}
expect() {
  if grep -qF "$1" last.log; then pass=$((pass + 1)); echo "ok: $1"; else cat last.log; echo "FAILED: no line \"$1\""; fail=$((fail + 1)); fi
}

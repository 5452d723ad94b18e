# tests/lib/checks.sh -- the helpers of the shell tests of the infl executable (tests/store.sh, tests/resume.sh,
# tests/lm_stages.sh, tests/tracin.sh); needs EXE (the infl executable) and MPIEXEC.
#   check CMD...             run CMD; count it in $pass or $fail (printing "FAILED: CMD")
#   run NP ARGS...           one run of `infl ARGS` on NP ranks, its output in last.log (the first error lines go to
#                            stderr when it fails); prints the exit status.  At 1 rank mpiexec does not wait after a
#                            process exits with a non-zero status (odls_base_sigkill_timeout 0: 2 s less per failing
#                            run; no other process could be cut short); at several ranks the default wait stays, as
#                            in tests/cli/bad_input.sh
#   expect_error REGEX NP ARGS...   a run that fails with a line matching REGEX (else prints its output and fails)
pass=0; fail=0
check() { if "$@"; then pass=$((pass + 1)); else echo "FAILED: $*"; fail=$((fail + 1)); fi; }
run() {
  local np=$1; shift
  local kt=${OMPI_MCA_odls_base_sigkill_timeout:-1}
  [ "$np" = 1 ] && kt=0
  OMPI_MCA_odls_base_sigkill_timeout=$kt $MPIEXEC --oversubscribe -n "$np" "$EXE" "$@" > last.log 2>&1
  local st=$?
  [ $st = 0 ] || grep -m3 -i error last.log >&2
  echo $st
}
expect_error() {
  local re=$1; shift
  [ "$(run "$@")" != 0 ] && grep -Eq -- "$re" last.log || { echo "expected an error matching '$re':"; cat last.log; return 1; }
}

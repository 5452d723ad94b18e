#!/usr/bin/env bash
# Run a command and check both its exit status and its output (stdout and stderr together), so that a test never
# passes on its output alone while the command failed, nor on its status alone.
# Usage: expect.sh [-status 0|nonzero|N] [-match REGEX]... [-reject REGEX]... -- COMMAND [ARGS...]
#   -status   the exit status wanted: 0 (default), "nonzero" (any failure, but not a crash by a signal or a timeout:
#             statuses 124 and above 128 are refused), or an exact number
#   -match    an extended regular expression (grep -E) that some line of the output must match (repeatable)
#   -reject   one that no line may match (repeatable)
# Exits 0 if every check holds, else 1 after printing the output and what failed.
set -u
want=0
match=()
reject=()
while [ $# -gt 0 ]; do
  case $1 in
    -status) want=${2:?-status needs a value}; shift 2 ;;
    -match) match+=("${2:?-match needs a value}"); shift 2 ;;
    -reject) reject+=("${2:?-reject needs a value}"); shift 2 ;;
    --) shift; break ;;
    *) echo "expect.sh: unknown argument $1 (usage: expect.sh [-status S] [-match RE]... [-reject RE]... -- COMMAND...)"; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "expect.sh: no command given after --"; exit 2; }
out=$("$@" 2>&1)
status=$?
printf '%s\n' "$out"
fail=0
case $want in
  nonzero)
    if [ $status -eq 0 ]; then echo "expect.sh: FAIL: exit status 0, wanted a failure"; fail=1
    elif [ $status -eq 124 ] || [ $status -gt 128 ]; then echo "expect.sh: FAIL: exit status $status (timeout or signal), wanted a clean failure"; fail=1; fi ;;
  *)
    [ "$status" -eq "$want" ] || { echo "expect.sh: FAIL: exit status $status, wanted $want"; fail=1; } ;;
esac
for re in ${match[@]+"${match[@]}"}; do
  grep -qE -- "$re" <<<"$out" || { echo "expect.sh: FAIL: no line of the output matches \"$re\""; fail=1; }
done
for re in ${reject[@]+"${reject[@]}"}; do
  if grep -qE -- "$re" <<<"$out"; then echo "expect.sh: FAIL: the output matches \"$re\": $(grep -E -- "$re" <<<"$out" | head -3)"; fail=1; fi
done
[ $fail -eq 0 ] && echo "expect.sh: ok (exit status $status${match[*]:+, output matches}${reject[*]:+, rejected patterns absent})"
exit $fail

#!/usr/bin/env bash
# infl report from the command line: a small study rendered at 2 ranks; the HTML and the C test's pages (test_report at
# 1 and 2 ranks, run first as a ctest fixture: tests/report.cmake) parsed strictly as XML and with the HTML parser of
# xmllint; bad inputs fail with clear messages.
# Exit status: 0 all checks passed; 1 a check failed; 77 the other checks passed but xmllint is missing, so the markup
# was not checked (ctest reports the test as skipped, not passed: tests/CMakeLists.txt).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exe=${INFL_EXE:?INFL_EXE is not set}
mpi=${INFL_MPIEXEC:-mpiexec}
fm=idx:/usr/share/datasets/fashion-mnist
dir=$PWD/report_cli
rm -rf "$dir"
html=$(bash "$here/report/make_study.sh" "$dir" 2)
fail() { echo "FAIL: $*"; exit 1; }

# markup
have_xmllint=0
if command -v xmllint >/dev/null; then
  have_xmllint=1
  pages=("$html")
  for f in report_np1.html report_np2.html report_parts_np1.html report_parts_np2.html; do
    [ -f "$f" ] || fail "$PWD/$f is missing: the C test test_report (np 1 and 2) writes it and runs first (ctest fixture)"
    pages+=("$f")
  done
  for f in "${pages[@]}"; do
    xmllint --noout --nonet "$f" || fail "$f is not well-formed XML (XHTML)"
    # libxml2's HTML parser predates HTML5: it does not know section, header, figure, svg, ... ("Tag X invalid");
    # every other complaint is an error
    errs=$(xmllint --html --noout --nonet "$f" 2>&1 | grep -E "error|warning" | grep -v -E "Tag [a-zA-Z]+ invalid" || true)
    [ -z "$errs" ] || fail "xmllint --html on $f: $errs"
    echo "ok: $f is well formed (XML and HTML)"
  done
fi

# content
n=$(grep -o 'data:image/png;base64,' "$html" | wc -l)
[ "$n" -eq $((6 * 13 + 24)) ] || fail "$html has $n images, expected $((6 * 13 + 24))"
grep -q 'Ankle boot' "$html" || fail "class names missing from $html"
grep -q 'model_sha256' "$html" || fail "provenance missing from $html"
! grep -q '<script' "$html" || fail "$html contains a script"

# bad inputs: nonzero exit, one clear message
expect_fail() { # expect_fail "message part" args...
  local want=$1 out
  shift
  if out=$("$mpi" --oversubscribe -n 2 "$exe" report "$@" 2>&1); then fail "infl report $* succeeded"; fi
  grep -qF -- "$want" <<<"$out" || fail "infl report $*: message does not contain \"$want\": $out"
  echo "ok: fails with \"$want\""
}
base=(-query "$fm/t10k" -query_limit 16)
expect_fail "exists; pass -overwrite" -scores "$dir/scores.h5" -train "$fm/train" -train_limit 256 "${base[@]}" -out "$html"
expect_fail "no such file" -scores "$dir/missing.h5" -train "$fm/train" -train_limit 256 "${base[@]}" -out "$dir/x.html"
expect_fail "is not an infl scores file" -scores "$dir/self.h5" -train "$fm/train" -train_limit 256 "${base[@]}" -out "$dir/x.html"
expect_fail "was computed on other training data: its train_sha256 is" -scores "$dir/scores.h5" -train "$fm/train" -train_limit 200 "${base[@]}" -out "$dir/x.html"
expect_fail "option -scores is required" -train "$fm/train" "${base[@]}" -out "$dir/x.html"
[ ! -e "$dir/x.html" ] || fail "a failed report left $dir/x.html"
if [ $have_xmllint -eq 0 ]; then
  echo "SKIP: xmllint not found (apt-get install libxml2-utils): the markup of $html was not checked; the other checks passed"
  exit 77
fi
echo "test_report.sh: all checks passed"

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
src=${INFL_SOURCE_DIR:?INFL_SOURCE_DIR is not set}
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

# every training example kept (-score_topk 256 = N) for 2 queries: the bottom-k then holds positive scores too, which
# the gallery captions "Lowest k: not an opponent" (a top-k score <= 0 "Highest k: not a proponent"), as the text report
"$mpi" --oversubscribe -n 2 "$exe" score -model "$src/tests/ref/mlp_small.safetensors" -factors "$dir/factors.h5" -train "$fm/train" -train_limit 256 \
  -query "$fm/t10k" -query_limit 16 -query_indices 0:2 -score_topk 256 -out "$dir/all.h5" > "$dir/log_all.txt" 2>&1 || { cat "$dir/log_all.txt"; fail "infl score -score_topk 256"; }
"$mpi" --oversubscribe -n 2 "$exe" report -scores "$dir/all.h5" -train "$fm/train" -train_limit 256 -query "$fm/t10k" -query_limit 16 \
  -report_k 0 -out "$dir/all.html" > "$dir/log_all.txt" 2>&1 || { cat "$dir/log_all.txt"; fail "infl report -report_k 0"; }
signs() { # CLASS NOTE: "figures wrong-sign-without-note right-sign-with-note notes" of the gallery items of CLASS
  grep -o "<figure class=\"$1\">.*</figure>" "$dir/all.html" | sed 's/.*<br\/>score \([-+0-9.e]*\)\(.*\)<\/figcaption>.*/\1 \2/' |
    awk -v cls="$1" -v note="$2" '{ s = $1 + 0; n = index($0, note) > 0; wrong = cls == "opp" ? s >= 0 : s <= 0
      f++; if (wrong && !n) a++; if (!wrong && n) b++; m += n } END { print f + 0, a + 0, b + 0, m + 0 }'
}
read f a b m < <(signs opp "not an opponent")
[ "$f" = 512 ] && [ "$a" = 0 ] && [ "$b" = 0 ] && [ "$m" -gt 0 ] || fail "bottom-k gallery of all.html: $f items, $a of score >= 0 without \"not an opponent\", $b of score < 0 with it, $m noted"
grep -q "Opponents and lowest scores\|Lowest scores (none negative" "$dir/all.html" || fail "all.html: no bottom-k gallery titled for scores >= 0"
read f a b m < <(signs pro "not a proponent")
[ "$f" = 512 ] && [ "$a" = 0 ] && [ "$b" = 0 ] || fail "top-k gallery of all.html: $f items, $a of score <= 0 without \"not a proponent\", $b of score > 0 with it"
grep -q "Lowest [0-9]*: not an opponent" "$dir/all.html" || fail "all.html: no \"Lowest k: not an opponent\" caption"
echo "ok: gallery captions follow the signs of the kept scores ($m bottom-k entries of score >= 0 marked)"

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

#!/usr/bin/env bash
# Render a small study's report in headless chromium and check the screenshot is a real page (not blank).
# browser_check.sh [REPORT.html]: without an argument, the study is made with make_study.sh.
# Exit status: 0 rendered and not blank; 1 a failure; 77 no chromium here (skipped: tests/CMakeLists.txt).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
browser=${CHROMIUM:-/usr/bin/chromium}
[ -x "$browser" ] || { echo "SKIP: no $browser (apt-get install chromium, or set CHROMIUM): browser check not run"; exit 77; }
if [ $# -ge 1 ]; then html=$(readlink -f "$1"); else html=$(bash "$here/make_study.sh" "$PWD/report_browser" 2); fi
shot=$(dirname "$html")/screenshot.png
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$shot"
timeout 180 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --screenshot="$shot" --window-size=1200,2000 \
  "file://$html" >"$profile/log.txt" 2>&1 || { cat "$profile/log.txt"; echo "FAIL: chromium failed"; exit 1; }
[ -s "$shot" ] || { echo "FAIL: no screenshot $shot"; exit 1; }
# the spread of the pixels (tests/tools/pngstat: every 4th pixel of every 4th row): a blank page has none
pngstat=${INFL_PNGSTAT:?INFL_PNGSTAT must name the pngstat tool (tests/tools/pngstat.c)}
stats=$("$pngstat" "$shot") || { echo "FAIL: $shot is not an 8-bit RGB(A) PNG"; exit 1; }
read -r w h mean var dark <<<"$stats"
echo "screenshot $w x $h: mean $mean, variance $var, dark fraction $dark"
[ "$w" -eq 1200 ] && [ "$h" -eq 2000 ] || { echo "FAIL: unexpected screenshot size"; exit 1; }
awk -v v="$var" 'BEGIN { exit !(v > 200) }' || { echo "FAIL: the screenshot is (nearly) blank"; exit 1; }
awk -v d="$dark" 'BEGIN { exit !(d > 0.02) }' || { echo "FAIL: no dark areas (header, images): the page did not render"; exit 1; }
echo "browser_check.sh: $shot rendered and not blank"

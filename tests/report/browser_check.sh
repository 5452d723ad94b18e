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
# decode the PNG (zlib, filters 0-4) and measure the spread of the pixels: a blank page has none
python3 - "$shot" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat = 8, b''
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
assert depth == 8 and ctype in (2, 6), f'unexpected PNG type depth {depth} colour {ctype}'
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, rows, i = bytearray(stride), [], 0
for _ in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line); prev = line
lum = [sum(r[x:x + 3]) / 3 for r in rows[::4] for x in range(0, stride, 4 * bpp)]
mean = sum(lum) / len(lum)
var = sum((v - mean) ** 2 for v in lum) / len(lum)
dark = sum(v < 60 for v in lum) / len(lum)
print(f'screenshot {w} x {h}: mean {mean:.1f}, variance {var:.1f}, dark fraction {dark:.3f}')
assert w == 1200 and h == 2000, 'unexpected screenshot size'
assert var > 200, 'the screenshot is (nearly) blank'
assert dark > 0.02, 'no dark areas (header, images): the page did not render'
PY
echo "browser_check.sh: $shot rendered and not blank"

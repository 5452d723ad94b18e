#!/usr/bin/env bash
# Set up (install what is missing, build), then run the whole test suite with ctest (MPI tests at 1-4 ranks).
# The tests also use, when installed: xmllint (libxml2-utils) for the HTML report, chromium for the report seen in a
# real browser, clang with libFuzzer (clang, libclang-rt-14-dev) for the parser fuzz targets.  They are installed here
# unless INFL_TEST_EXTRAS=0.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${INFL_TEST_EXTRAS:-1}" != 0 ]; then
  extras=""
  for p in libxml2-utils chromium clang libclang-rt-14-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || extras="$extras $p"
  done
  if [ -n "$extras" ]; then
    echo "infl tests: installing$extras"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $extras; } \
      || echo "infl tests: could not install$extras; the tests that need them are skipped"
  fi
fi
"$repo/jobs/setup.sh"
build=${INFL_BUILD_DIR:-$repo/build}
cd "$build"
ctest -j"$(nproc)" --output-on-failure --timeout 900 "$@"

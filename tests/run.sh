#!/usr/bin/env bash
# Set up (install what is missing, build), then run the whole test suite with ctest (MPI tests at 1-4 ranks).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/jobs/setup.sh"
build=${INFL_BUILD_DIR:-$repo/build}
cd "$build"
ctest -j"$(nproc)" --output-on-failure --timeout 900 "$@"

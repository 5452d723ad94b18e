#!/usr/bin/env bash
# Install what is missing (Debian 12 packages), then configure and build infl in ./build.
# Usage: jobs/setup.sh            (from anywhere; the build goes to <repo>/build, or $INFL_BUILD_DIR)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${INFL_BUILD_DIR:-$repo/build}
packages="build-essential cmake pkg-config libopenmpi-dev openmpi-bin libscalapack-openmpi-dev petsc-dev
  libhdf5-openmpi-dev hdf5-tools libopenblas-dev libjansson-dev zlib1g-dev libpng-dev libssl-dev libpcre2-dev
  dataset-fashion-mnist fortunes"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "infl setup: installing$missing"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi
mkdir -p "$build"
fuzz=OFF # the parser fuzz targets, only where clang is installed (optional: apt-get install clang libclang-rt-14-dev)
command -v clang > /dev/null 2>&1 && fuzz=ON
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFL_FUZZ=$fuzz > "$build/cmake.log" 2>&1 || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" 2>&1 | grep -E "error|warning:" || true
test -x "$build/infl" || { echo "infl setup: build failed; run: cmake --build $build"; exit 1; }
echo "infl setup: built $build/infl"

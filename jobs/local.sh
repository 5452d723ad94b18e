#!/usr/bin/env bash
# The Fashion-MNIST influence study on this machine: set up, then `infl run` at $NP ranks (default 2).
# Outputs go to $OUTDIR (default ./fashion-mnist-out): model, factors.h5, scores.h5, self_influence.h5.
# Rerunning reuses the model and factors already computed for the same model.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NP=${NP:-2}
OUTDIR=${OUTDIR:-$PWD/fashion-mnist-out}
OPTS=${OPTS:-$repo/jobs/fashion-mnist.opts}
"$repo/jobs/setup.sh"
build=${INFL_BUILD_DIR:-$repo/build}
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Debian's OpenBLAS 0.3.21 does not recognise some recent processors and then uses its slowest (SSE3) kernels; name
# the kernels the processor supports unless the caller chose (docs/PERFORMANCE.md).
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
extra=""
[ "$NP" -gt "$(nproc)" ] && extra="--oversubscribe"
exec mpiexec $extra -n "$NP" "$build/infl" run -options_file "$OPTS" -outdir "$OUTDIR" "$@"

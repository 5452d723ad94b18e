#!/usr/bin/env bash
# An influence study on this machine: set up, then `infl run` at $NP ranks (default 2).
#   jobs/local.sh                  the Fashion-MNIST study (MLP); outputs in $OUTDIR (default ./fashion-mnist-out)
#   STUDY=fortunes jobs/local.sh   the fortunes study (a byte-level GPT-2 on Debian's fortunes; data linked into
#                                  ./fortunes-data by jobs/fortunes-data.sh); outputs in $OUTDIR (./fortunes-out)
# Outputs: model, factors.h5, scores.h5, self_influence.h5, report.html.  Rerunning reuses what matches.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NP=${NP:-2}
STUDY=${STUDY:-fashion-mnist}
case $STUDY in
  fashion-mnist | fortunes) ;;
  *) echo "jobs/local.sh: STUDY=$STUDY is not a study here; use fashion-mnist (default) or fortunes" >&2; exit 1 ;;
esac
OUTDIR=${OUTDIR:-$PWD/$STUDY-out}
OPTS=${OPTS:-$repo/jobs/$STUDY.opts}
"$repo/jobs/setup.sh"
paths=()
if [ "$STUDY" = fortunes ]; then # the data and prompts by absolute path (the options file names them relatively)
  "$repo/jobs/fortunes-data.sh" "$PWD/fortunes-data"
  paths=(-train "text:$PWD/fortunes-data/train" -test "text:$PWD/fortunes-data/valid" -query_prompts "$repo/jobs/fortunes-prompts.txt")
fi
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
exec mpiexec $extra -n "$NP" "$build/infl" run -options_file "$OPTS" -outdir "$OUTDIR" "${paths[@]}" "$@"

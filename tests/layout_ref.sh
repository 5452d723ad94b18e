#!/usr/bin/env bash
# The one-rank references of the small MLP's layer-layout tests (tests/layout.sh, tests/layout_split.sh): factors,
# scores and self-influence of one rank holding every layer (tests/lib/layout_mlp.sh), computed once into the
# directory INFL_LAYOUT_REF for both (the ctest fixture layout_mlp_ref, tests/ekfac.cmake).
out=${INFL_LAYOUT_REF:?INFL_LAYOUT_REF must name the directory of the references}
unset INFL_LAYOUT_REF # mlp_reference computes them
. "${INFL_SOURCE_DIR:?}/tests/lib/layout_mlp.sh" layout_ref
rm -rf "$out" && mkdir -p "$out" || exit 1
mlp_reference && mv f_1.h5 s_1.h5 x_1.h5 "$out/" || { rm -rf "$out"; exit 1; }
echo "layout_ref: $pass runs, f_1.h5 s_1.h5 x_1.h5 in $out"

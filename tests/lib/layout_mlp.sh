# tests/lib/layout_mlp.sh -- sourced by the layer-layout tests of the small MLP (tests/layout.sh, tests/layout_split.sh)
# and by tests/layout_ref.sh, with the test's name: `. "$INFL_SOURCE_DIR/tests/lib/layout_mlp.sh" NAME`.  It makes
# the scratch directory NAME.XXXXXX under the current one (removed at exit) and runs the script in it, sources the
# helpers of tests/lib/counted.sh (check, run, expect), and sets
#   c      the options of the MLP 784-24-16-10 (tests/ref/mlp_small.safetensors, 3 layers) on 600 Fashion-MNIST
#          training examples
#   q      the query options of the MLP's scores (6 queries, full score matrix, per-layer terms, top 5)
#   TAU    the bound of docs/FORMATS.md for it in single precision: 2 d u + 2 N 2^-53, d = 785 (the widest input plus
#          bias), N = 600
#   F, R   the Fashion-MNIST directory and tests/ref
# and writes prompts.txt, two prompt/completion queries for the byte-level GPT-2s.
#   mlp_reference   f_1.h5 (factors), s_1.h5 (scores of $q) and x_1.h5 (self-influence) of one rank holding every
#                   layer: links to those of the ctest fixture layout_mlp_ref (tests/layout_ref.sh: computed once for
#                   both tests) when INFL_LAYOUT_REF names its directory, else computed here.
# Needs INFL_EXE, INFL_SOURCE_DIR, INFL_H5CMP and INFL_MPIEXEC (mpiexec by default).
set -u
EXE=${INFL_EXE:?}; MPIEXEC=${INFL_MPIEXEC:-mpiexec}; SRC=${INFL_SOURCE_DIR:?}; H5CMP=${INFL_H5CMP:?}
dir=$(mktemp -d "$PWD/${1:?layout_mlp.sh: give the test name}.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
F=/usr/share/datasets/fashion-mnist
R=$SRC/tests/ref
. "$SRC/tests/lib/counted.sh" # check, run, expect
TAU=$(awk 'BEGIN { printf "%.6e", 2 * 785 * 2^-24 + 2 * 600 * 2^-53 }')
c="-train idx:$F/train -train_limit 600 -model $R/mlp_small.safetensors"
q="-query idx:$F/t10k -query_indices 0:6 -score_save_all -score_per_layer -score_topk 5"
printf 'The c\n>>>\nat\n%%\nA st\n>>>\nitch\n' > prompts.txt
mlp_reference() {
  local f
  if [ -n "${INFL_LAYOUT_REF:-}" ]; then
    for f in f_1.h5 s_1.h5 x_1.h5; do
      [ -f "$INFL_LAYOUT_REF/$f" ] || { echo "FAILED: no $INFL_LAYOUT_REF/$f (the ctest fixture layout_mlp_ref, tests/layout_ref.sh)"; exit 1; }
      ln -s "$INFL_LAYOUT_REF/$f" "$f"
    done
  else
    run 1 fit $c -out f_1.h5 && run 1 score $c -factors f_1.h5 $q -out s_1.h5 && run 1 self $c -factors f_1.h5 -out x_1.h5
  fi
}

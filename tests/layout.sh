#!/usr/bin/env bash
# Layer layouts (-layer_groups, include/infl/layout.h): factors, scores, top-k lists, per-layer terms and
# self-influence of an MLP and of a GPT-2 agree, within the bound of docs/FORMATS.md, between one rank holding every
# layer and 2-4 ranks with the layers spread over 1-4 groups (also factors fitted at one layout and loaded at another,
# a fit stopped and resumed at another layout); a group count that does not divide the ranks is refused.
# The MLP 784-24-16-10 (3 layers) on 600 examples, its options c and q, its bound TAU and its one-rank references
# f_1.h5, s_1.h5, x_1.h5: tests/lib/layout_mlp.sh.
. "${INFL_SOURCE_DIR:?}/tests/lib/layout_mlp.sh" layout
mlp_reference
for layout in "2 2" "3 3" "4 4"; do
  set -- $layout; np=$1; G=$2; t=${np}_$G
  run $np fit $c -layer_groups $G -ekfac_chunk 97 -out f_$t.h5 || continue
  grep -q "factor bytes per rank .* $G layer group" last.log || { echo "FAILED: fit at $t does not report its layer groups"; fail=$((fail + 1)); }
  for l in 0 1 2; do
    check $H5CMP trace $TAU f_1.h5 f_$t.h5 /layers/$l/A
    check $H5CMP trace $TAU f_1.h5 f_$t.h5 /layers/$l/S
    check $H5CMP max $TAU f_1.h5 f_$t.h5 /layers/$l/eigenvalues_A
    check $H5CMP sum $TAU f_1.h5 f_$t.h5 /layers/$l/Lambda
  done
  run $np score $c -factors f_$t.h5 -layer_groups $G -score_chunk 37 $q -out s_$t.h5 || continue
  check $H5CMP scores $TAU s_1.h5 s_$t.h5 /scores
  check $H5CMP topk $TAU s_1.h5 s_$t.h5 /topk
  check $H5CMP topk $TAU s_1.h5 s_$t.h5 /bottomk
  check $H5CMP max $TAU s_1.h5 s_$t.h5 /topk/per_layer
  run $np self $c -factors f_$t.h5 -layer_groups $G -self_chunk 50 -out x_$t.h5 && check $H5CMP self $TAU x_1.h5 x_$t.h5 /self_influence f_1.h5
done
# factors of one layout loaded at another: G = 4 factors scored with every layer on each of 3 ranks, and back
run 3 score $c -factors f_4_4.h5 -layer_groups 1 $q -out s_x.h5 && check $H5CMP scores $TAU s_1.h5 s_x.h5 /scores
run 4 score $c -factors f_1.h5 -layer_groups 4 $q -out s_y.h5 && check $H5CMP scores $TAU s_1.h5 s_y.h5 /scores
# a fit stopped after 3 chunks of a pass at 4 ranks in 2 groups, resumed at 2 ranks in 2 groups
$MPIEXEC --oversubscribe -n 4 "$EXE" fit $c -layer_groups 2 -ekfac_chunk 20 -checkpoint_stop_after 3 -out f_r.h5 -overwrite > last.log 2>&1
st=$?; [ $st = 3 ] && [ -f f_r.h5.partial ] && pass=$((pass + 1)) || { cat last.log; echo "FAILED: stop with status 3 (got $st)"; fail=$((fail + 1)); }
run 2 fit $c -layer_groups 2 -ekfac_chunk 33 -out f_r.h5 && { grep -q "resuming pass" last.log || { echo "FAILED: no resumption"; fail=$((fail + 1)); }; }
for l in 0 1 2; do check $H5CMP trace $TAU f_1.h5 f_r.h5 /layers/$l/A; check $H5CMP sum $TAU f_1.h5 f_r.h5 /layers/$l/Lambda; done
# GPT-2 (8 linear layers, byte-level, 44 windows): fit, prompt queries with per-token terms and self at 1 rank and
# at 4 ranks in 4 groups; tau with d = 513 (4 x 128 + 1), N = the tokens
TAUG=$(awk 'BEGIN { printf "%.6e", 2 * 513 * 2^-24 + 2 * 6000 * 2^-53 }')
g="-model $R/gpt2_bytes -train text:$R/gpt2_bytes_text.txt"
gq="-query_prompts prompts.txt -score_per_token -score_topk 4 -score_save_all"
run 1 fit $g -out gf_1.h5 && run 1 score $g -factors gf_1.h5 $gq -out gs_1.h5 && run 1 self $g -factors gf_1.h5 -out gx_1.h5
for G in 2 4; do
  run 4 fit $g -layer_groups $G -ekfac_chunk 5 -out gf_$G.h5 || continue
  for l in 0 3 7; do check $H5CMP trace $TAUG gf_1.h5 gf_$G.h5 /layers/$l/A; check $H5CMP sum $TAUG gf_1.h5 gf_$G.h5 /layers/$l/Lambda; done
  run 4 score $g -factors gf_$G.h5 -layer_groups $G -score_chunk 3 $gq -out gs_$G.h5 || continue
  check $H5CMP scores $TAUG gs_1.h5 gs_$G.h5 /scores
  check $H5CMP topk $TAUG gs_1.h5 gs_$G.h5 /topk
  check $H5CMP pertoken $TAUG gs_1.h5 gs_$G.h5 /per_token
  run 4 self $g -factors gf_$G.h5 -layer_groups $G -self_chunk 7 -out gx_$G.h5 && check $H5CMP self $TAUG gx_1.h5 gx_$G.h5 /self_influence gf_1.h5
done
# errors
$MPIEXEC --oversubscribe -n 4 "$EXE" fit $c -layer_groups 3 -out bad.h5 > last.log 2>&1
[ $? != 0 ] && grep -q "layer_groups 3 does not divide the 4 ranks" last.log && pass=$((pass + 1)) || { cat last.log; echo "FAILED: -layer_groups 3 at 4 ranks not refused"; fail=$((fail + 1)); }
echo "layout: $pass passed, $fail failed"
[ $fail = 0 ]

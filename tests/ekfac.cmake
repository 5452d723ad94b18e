# EK-FAC pipeline against the PyTorch/numpy reference (tests/ref), rank invariance, edge cases.
infl_test(test_ekfac SOURCES test_ekfac.c LIBS infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 600)
# EK-FAC and scores on sequences (several rows per example) at the capture level, against a plain reference with loops.
infl_test(test_ekfac_seq SOURCES test_ekfac_seq.c LIBS infl_attr infl_curv infl_nn infl_io infl_core NP 1 2)
# EK-FAC on the tiny GPT-2 (sequences of several tokens) against the independent float64 PyTorch reference
# tests/ref/ekfac_gpt2_ref.h5: both Fisher kinds, double and single precision, layer selections all, mlp, attn.
infl_test(test_ekfac_gpt2 SOURCES test_ekfac_gpt2.c LIBS infl_attr infl_curv infl_nn infl_io infl_core)
# The one-rank references of the small MLP that layout and layout_split compare with, computed once (ctest fixture
# layout_mlp_ref, tests/layout_ref.sh; tests/lib/layout_mlp.sh).
infl_script_test(layout_ref layout_ref.sh TIMEOUT 300 PROCESSORS 1)
infl_script_test(layout layout.sh TIMEOUT 900)
# Split layers (-layer_split true): factors, scores and self-influence against whole layers; layouts forced by -mem_limit.
infl_script_test(layout_split layout_split.sh TIMEOUT 300)
foreach(t layout_ref layout layout_split)
  set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>;INFL_LAYOUT_REF=${CMAKE_BINARY_DIR}/tests/layout_mlp_ref")
endforeach()
set_tests_properties(layout_ref PROPERTIES FIXTURES_SETUP layout_mlp_ref)
set_tests_properties(layout layout_split PROPERTIES FIXTURES_REQUIRED layout_mlp_ref)
# Layer groups chosen by -mem_limit alone (scores counting the queries): factor bytes per rank and agreement.
infl_script_test(layout_mem layout_mem.sh TIMEOUT 300)
set_property(TEST layout_mem APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")

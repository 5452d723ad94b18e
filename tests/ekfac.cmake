# EK-FAC pipeline against the PyTorch/numpy reference (tests/ref), rank invariance, edge cases.
infl_test(test_ekfac SOURCES test_ekfac.c LIBS infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 600)
# EK-FAC and scores on sequences (several rows per example) at the capture level, against a plain reference with loops.
infl_test(test_ekfac_seq SOURCES test_ekfac_seq.c LIBS infl_attr infl_curv infl_nn infl_io infl_core NP 1 2)
# EK-FAC on the tiny GPT-2 (sequences of several tokens) against the independent float64 PyTorch reference
# tests/ref/ekfac_gpt2_ref.h5: both Fisher kinds, double and single precision, layer selections all, mlp, attn.
infl_test(test_ekfac_gpt2 SOURCES test_ekfac_gpt2.c LIBS infl_attr infl_curv infl_nn infl_io infl_core)
infl_script_test(layout layout.sh TIMEOUT 900)
set_property(TEST layout APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")
# Layer groups chosen by -mem_limit alone (scores counting the queries): factor bytes per rank and agreement.
infl_script_test(layout_split layout_split.sh TIMEOUT 300)
set_property(TEST layout_split APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")
infl_script_test(layout_mem layout_mem.sh TIMEOUT 300)
set_property(TEST layout_mem APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")

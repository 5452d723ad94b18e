# Gradient projections and the gradient store against the numpy reference (tests/ref/mlp_small_project.h5), explicit
# products, linearity, JL inner products, store-based identity and Fisher scores, GPT-2 sequences; at 1-4 ranks.
infl_test(test_project SOURCES test_project.c LIBS infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 600)

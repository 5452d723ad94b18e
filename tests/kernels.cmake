# Optimized kernels against their plain reference kernels (STYLE rule 14), one rank.
infl_test(test_kernels SOURCES test_kernels.c LIBS infl_attr infl_curv infl_nn infl_io infl_core NP 1)

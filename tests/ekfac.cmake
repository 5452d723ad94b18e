# EK-FAC pipeline against the PyTorch/numpy reference (tests/ref), rank invariance, edge cases.
infl_test(test_ekfac SOURCES test_ekfac.c LIBS infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 600)

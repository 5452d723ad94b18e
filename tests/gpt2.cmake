# GPT-2: PyTorch float64 reference (tests/ref/make_gpt2_reference.py), finite differences, batch-size invariance, files
infl_test(test_gpt2 SOURCES test_gpt2.c LIBS infl_nn infl_io infl_core NP 1 2)
# The gpt2 model type and token-sequence data (text:, tokens:) through InflModel / InflData, against the same reference
infl_test(test_gpt2_type SOURCES test_gpt2_type.c LIBS infl_nn infl_io infl_core NP 1 2 3)

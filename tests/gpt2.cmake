# GPT-2: PyTorch float64 reference (tests/ref/make_gpt2_reference.py), finite differences, batch-size invariance, files
infl_test(test_gpt2 SOURCES test_gpt2.c LIBS infl_nn infl_io infl_core NP 1 2)
# The gpt2 model type and token-sequence data (text:, tokens:) through InflModel / InflData, against the same reference
infl_test(test_gpt2_type SOURCES test_gpt2_type.c LIBS infl_nn infl_io infl_core NP 1 2 3)
# infl eval on token data: the mean loss per predicted token and the perplexity of the reference sequences
# (tests/ref/gpt2_tiny_tokens.h5, one document per sequence) against the PyTorch float64 per-token losses
# (tests/ref/make_gpt2_tokens.py prints 4.6223763159 and 101.735501), in double at 1 and 2 ranks, and in single
# (float32 logits: 2e-7 relative here) at 2 ranks.
foreach(np 1 2)
  infl_cli_test(cli_eval_gpt2_tokens_np${np} NP ${np}
    ARGS eval -model ${CMAKE_SOURCE_DIR}/tests/ref/gpt2_tiny -data tokens:${CMAKE_SOURCE_DIR}/tests/ref/gpt2_tiny_tokens.h5 -model_precision double -eval_batch 3
    PASS "^sequences 4  predicted tokens 38  mean loss per token 4\\.6223763159  perplexity 101\\.73550[01]$" FAIL "error")
endforeach()
infl_cli_test(cli_eval_gpt2_tokens_single_np2 NP 2
  ARGS eval -model ${CMAKE_SOURCE_DIR}/tests/ref/gpt2_tiny/model.safetensors -data tokens:${CMAKE_SOURCE_DIR}/tests/ref/gpt2_tiny_tokens.h5
  PASS "^sequences 4  predicted tokens 38  mean loss per token 4\\.62237[56][0-9]*  perplexity 101\\.735[45][0-9]*$" FAIL "error")

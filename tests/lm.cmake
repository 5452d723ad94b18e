# Language models through the stages: prompt/completion queries (the query loss is log p(completion | prompt),
# against InflModelSequenceLoss with targets masked here), malformed prompt files.
infl_test(test_lm_queries SOURCES test_lm_queries.c LIBS infl_attr infl_curv infl_nn infl_io infl_core NP 1 2 3)
# fit, score and self on GPT-2 and text data: rank and chunk invariance (h5cmp, the bound of docs/FORMATS.md),
# per-token terms summing to scores, -ekfac_layers recorded and checked, TF-IDF candidates, prompt queries, and
# resumption after SIGTERM / SIGKILL at random points.
infl_script_test(lm_stages lm_stages.sh TIMEOUT 900)
set_property(TEST lm_stages APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")
# chunks of sequence data from -mem_limit against the default chunk (fit, score, self), -score_topk larger than
# -score_tfidf_topk (lm_stages.sh chunks)
infl_script_test(lm_chunks lm_stages.sh ARGS chunks TIMEOUT 600)
set_property(TEST lm_chunks APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")

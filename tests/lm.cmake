# Language models through the stages: prompt/completion queries (the query loss is log p(completion | prompt),
# against InflModelSequenceLoss with targets masked here), malformed prompt files.
infl_test(test_lm_queries SOURCES test_lm_queries.c LIBS infl_attr infl_curv infl_nn infl_io infl_core NP 1 2 3)

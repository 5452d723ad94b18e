# TF-IDF candidate filtering against the numpy BM25 reference (tests/ref/make_tfidf_reference.py), 1-4 ranks.
infl_test(test_tfidf SOURCES test_tfidf.c LIBS infl_attr infl_io infl_core)

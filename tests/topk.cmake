# Per-query top-k / bottom-k of influence scores and their merge across ranks.
# topk.c is compiled in directly so that the test needs only infl_core, not the layers below attr.
infl_test(test_topk SOURCES test_topk.c ../src/attr/topk.c LIBS infl_core)

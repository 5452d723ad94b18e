# Gradient projections and the gradient store against the numpy reference (tests/ref/mlp_small_project.h5), explicit
# products, linearity, JL inner products, store-based identity and Fisher scores, GPT-2 sequences; at 1-4 ranks.
infl_test(test_project SOURCES test_project.c LIBS infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 600)
# infl project / infl score -store end to end: rank counts and chunk sizes, resumption after SIGTERM and SIGKILL,
# store-based scores of a resumed store, bad inputs (compared by tests/tools/h5cmp against docs/FORMATS.md).
infl_script_test(store store.sh TIMEOUT 900)
set_property(TEST store APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")
# TracIn through captures (score and self-influence over two checkpoints, MLP and GPT-2) against torch autograd
# (tests/ref/make_tracin_reference.py -> tracin_ref.h5); the store-based TracIn self-influence equals it.
infl_test(test_tracin SOURCES test_tracin.c LIBS infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 300)
# infl train -checkpoint_every and infl score / self -method tracin end to end (MLP and GPT-2), agreement with the
# store-based TracIn self-influence, bad inputs.
infl_script_test(tracin tracin.sh TIMEOUT 300)
set_property(TEST tracin APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")

# The linear datamodeling score (src/eval): Spearman, LDS, subset masks, mislabeled copies against numpy/scipy
# (tests/ref/make_lds_reference.py -> lds_ref.h5), rank groups, data subsets, the resumable task runner; 1-4 ranks.
infl_test(test_lds SOURCES test_lds.c LIBS infl_eval infl_attr infl_curv infl_nn infl_io infl_core TIMEOUT 300)
# infl lds end to end: LDS of committed lds.h5 files equal to scipy's, the tiny study retrained at 1-4 ranks and
# group sizes, killed and resumed (between subsets and inside a subset's training), diverged subsets, bad inputs.
infl_script_test(lds lds.sh TIMEOUT 600)
set_property(TEST lds APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")
# infl lds and infl run -ensemble on a language-model study (a tiny GPT-2 on the text fixture, prompt queries): the
# LDS and corrupted-document detection of the committed tests/ref/lds_text.h5 equal numpy/scipy's, retrained at 1 and
# 2 ranks and resumed, an ensemble of 2 GPT-2s.
infl_script_test(lds_text lds_text.sh TIMEOUT 600)
set_property(TEST lds_text APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")

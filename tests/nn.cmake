# model layer tests: PyTorch reference, finite differences, batch-size invariance, model files, training
infl_test(test_nn_reference SOURCES test_nn_reference.c LIBS infl_nn infl_io infl_core)
infl_test(test_nn_fd SOURCES test_nn_fd.c LIBS infl_nn infl_io infl_core)
infl_test(test_nn_batch SOURCES test_nn_batch.c LIBS infl_nn infl_io infl_core)
infl_test(test_nn_file SOURCES test_nn_file.c LIBS infl_nn infl_io infl_core)
infl_test(test_train SOURCES test_train.c LIBS infl_nn infl_io infl_core)
# GPT-2 training on token windows against an independent PyTorch run (tests/nn/make_gpt2_train_reference.py):
# initialization, AdamW with warm-up, cosine and clipping, the mean over predicted tokens, stop and resume
infl_test(test_train_gpt2 SOURCES test_train_gpt2.c LIBS infl_nn infl_io infl_core)
# infl train on text: a byte-level GPT-2 stopped by -train_stop_after on 1 rank and resumed on 3 against an
# uninterrupted run on 2 (the validation loss of the saved models within 1e-5); the Hugging Face directory it writes
infl_script_test(train_gpt2_cli train_gpt2_cli.sh TIMEOUT 600)

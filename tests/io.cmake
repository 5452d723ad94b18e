# io layer tests: safetensors, IDX / HDF5 data sets, HDF5 helpers (run at 1-4 ranks)
infl_test(test_io_idx SOURCES test_io_idx.c LIBS infl_io infl_core
  ARGS ${INFL_FMNIST}/t10k)
infl_test(test_io_safetensors SOURCES test_io_safetensors.c LIBS infl_io infl_core
  ARGS ${CMAKE_CURRENT_SOURCE_DIR}/io/fixture.safetensors)
infl_test(test_io_h5 SOURCES test_io_h5.c LIBS infl_io infl_core)

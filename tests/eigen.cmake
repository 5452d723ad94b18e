# Distributed eigensolver of Kronecker factors (src/curv/eigen.c, ScaLAPACK pdsyevd).
infl_test(test_eigen SOURCES test_eigen.c LIBS infl_curv)
add_executable(test_eigen_opts test_eigen.c one_blas_thread.c)
target_link_libraries(test_eigen_opts PRIVATE infl_curv)
foreach(v "nb2;-eigen_block_size;2;-eigen_lapack;0" "nb4;-eigen_block_size;4;-eigen_lapack;0" "scalapack1x1;-eigen_lapack;0" "onegroup;-eigen_groups;1" "groups4;-eigen_groups;4")
  list(POP_FRONT v tag)
  foreach(np 1 2 3 4)
    add_test(NAME test_eigen_${tag}_np${np} COMMAND ${INFL_MPIEXEC} --oversubscribe -n ${np} $<TARGET_FILE:test_eigen_opts> ${v}
      WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    set_tests_properties(test_eigen_${tag}_np${np} PROPERTIES ENVIRONMENT "${INFL_TEST_ENV}" TIMEOUT 300 PROCESSORS ${np})
  endforeach()
endforeach()
add_test(NAME test_eigen_grid1x2_np2 COMMAND ${INFL_MPIEXEC} --oversubscribe -n 2 $<TARGET_FILE:test_eigen_opts> -eigen_grid 1x2 -eigen_groups 1
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_test(NAME test_eigen_grid2x1_np4 COMMAND ${INFL_MPIEXEC} --oversubscribe -n 4 $<TARGET_FILE:test_eigen_opts> -eigen_grid 2x1 -eigen_groups 2 -eigen_block_size 4
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(test_eigen_grid1x2_np2 test_eigen_grid2x1_np4 PROPERTIES ENVIRONMENT "${INFL_TEST_ENV}" TIMEOUT 300 PROCESSORS 2)

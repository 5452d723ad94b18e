# Krylov IHVP (src/curv/ihvp*.c, src/nn/mlp_rop.c): MatShell products and CG solves against dense LAPACK, finite
# differences of the R-op, EK-FAC preconditioning, Krylov queries through the scorer.
infl_test(test_ihvp SOURCES test_ihvp.c LIBS infl_attr infl_curv infl_nn infl_io infl_core)
# infl ihvp -help lists the Krylov options (the subcommand is registered and parses its options)
add_test(NAME test_ihvp_cli_help COMMAND ${INFL_MPIEXEC} --oversubscribe -n 1 $<TARGET_FILE:infl> ihvp -help WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(test_ihvp_cli_help PROPERTIES ENVIRONMENT "${INFL_TEST_ENV}" TIMEOUT 60 PASS_REGULAR_EXPRESSION "ihvp_curvature")

# infl executable end to end: bad input (one clear error, non-zero exit, no hang, nothing overwritten) at 1 and 3
# ranks, and a syntax check of the batch-job scripts.
# At 3 ranks the case table runs in three parts (cases 1, 4, 7, ...; 2, 5, 8, ...; 3, 6, 9, ...; part 1 also the
# inputs that must work), each with its own fixtures: a case spends most of its time in mpiexec, which waits 2 s after
# a rank exits with an error (tests/cli/bad_input.sh), so the parts claim one processor each and ctest -j2 runs them
# side by side.  A part alone: ctest -R cli_bad_input_np3_part2; one case: CASES=name bash tests/cli/bad_input.sh 3.
infl_script_test(cli_bad_input_np1 cli/bad_input.sh ARGS 1 TIMEOUT 900 PROCESSORS 1)
foreach(k 1 2 3)
  infl_script_test(cli_bad_input_np3_part${k} cli/bad_input.sh ARGS 3 ${k}/3 TIMEOUT 900 PROCESSORS 1)
endforeach()
add_test(NAME cli_job_scripts_syntax COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/job_scripts_syntax.sh ${CMAKE_SOURCE_DIR})
set_tests_properties(cli_job_scripts_syntax PROPERTIES TIMEOUT 60)
# A full disk while an HDF5 output is written (simulated by a file size limit): one error on every rank, no hang, no
# temporary file left (tests/cli/diskfull.sh).
infl_script_test(cli_diskfull_np1 cli/diskfull.sh ARGS 1 TIMEOUT 300 PROCESSORS 1)
infl_script_test(cli_diskfull_np2 cli/diskfull.sh ARGS 2 TIMEOUT 300 PROCESSORS 2)

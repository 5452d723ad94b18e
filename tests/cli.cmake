# infl executable end to end: bad input (one clear error, non-zero exit, no hang, nothing overwritten) at 1 and 3
# ranks, and a syntax check of the batch-job scripts.
# tests/cli/bad_input.sh: a setup test per rank count builds the fixtures once (ctest fixture cli_bad_input_npN),
# then the case table runs in parts (cases 1, 1 + P, 1 + 2P, ...; 2, 2 + P, ...; P parts) and the inputs that must
# work in a test of their own, side by side.  A case spends most of its time in mpiexec (its start, and at 3 ranks a
# 2 s wait after a rank exits with an error), not computing, so each part runs 2 cases at once (3 at 3 ranks) and
# claims one processor.  A part alone: ctest -R cli_bad_input_np3_part2 (ctest runs the setup first); one case:
# CASES=name bash tests/cli/bad_input.sh 3.
foreach(np 1 3)
  if(np EQUAL 1)
    set(nparts 2)
    set(procs 1)
  else()
    set(nparts 3)
    set(procs 2)
  endif()
  infl_script_test(cli_bad_input_np${np}_setup cli/bad_input.sh ARGS ${np} setup ${nparts} TIMEOUT 600 PROCESSORS ${procs})
  set_tests_properties(cli_bad_input_np${np}_setup PROPERTIES FIXTURES_SETUP cli_bad_input_np${np})
  foreach(k RANGE 1 ${nparts})
    infl_script_test(cli_bad_input_np${np}_part${k} cli/bad_input.sh ARGS ${np} ${k}/${nparts} TIMEOUT 900 PROCESSORS 1)
    set_tests_properties(cli_bad_input_np${np}_part${k} PROPERTIES FIXTURES_REQUIRED cli_bad_input_np${np})
  endforeach()
  # more ranks than examples (4 at np 3), and two runs of a fit at once: 2 processors at 3 ranks
  infl_script_test(cli_bad_input_np${np}_works cli/bad_input.sh ARGS ${np} works TIMEOUT 600 PROCESSORS ${procs})
  set_tests_properties(cli_bad_input_np${np}_works PROPERTIES FIXTURES_REQUIRED cli_bad_input_np${np})
endforeach()
add_test(NAME cli_job_scripts_syntax COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/job_scripts_syntax.sh ${CMAKE_SOURCE_DIR})
set_tests_properties(cli_job_scripts_syntax PROPERTIES TIMEOUT 60)
# A full disk while an HDF5 output is written (simulated by a file size limit): one error on every rank, no hang, no
# temporary file left (tests/cli/diskfull.sh).
infl_script_test(cli_diskfull_np1 cli/diskfull.sh ARGS 1 TIMEOUT 300 PROCESSORS 1)
infl_script_test(cli_diskfull_np2 cli/diskfull.sh ARGS 2 TIMEOUT 300 PROCESSORS 2)

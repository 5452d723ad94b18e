# infl executable end to end: bad input (one clear error, non-zero exit, no hang, nothing overwritten) at 1 and 3
# ranks, and a syntax check of the batch-job scripts.
infl_script_test(cli_bad_input_np1 cli/bad_input.sh ARGS 1 TIMEOUT 900)
infl_script_test(cli_bad_input_np3 cli/bad_input.sh ARGS 3 TIMEOUT 900)
add_test(NAME cli_job_scripts_syntax COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/job_scripts_syntax.sh ${CMAKE_SOURCE_DIR})
set_tests_properties(cli_job_scripts_syntax PROPERTIES TIMEOUT 60)

# Stages killed at random points resume to the same results (SIGTERM and SIGKILL, varying rank counts).
infl_script_test(resume resume.sh TIMEOUT 900)

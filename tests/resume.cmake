# Stages killed at random points resume to the same results (SIGTERM and SIGKILL, varying rank counts), compared by
# tests/tools/h5cmp against the agreement docs/FORMATS.md promises across rank counts and chunkings.
add_executable(h5cmp tools/h5cmp.c)
target_link_libraries(h5cmp PRIVATE PkgConfig::HDF5 m)
infl_script_test(resume resume.sh TIMEOUT 900)
set_property(TEST resume APPEND PROPERTY ENVIRONMENT "INFL_H5CMP=$<TARGET_FILE:h5cmp>")

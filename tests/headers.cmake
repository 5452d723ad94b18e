# Compile test of the headers (tests/test_headers.c): every public header (include/infl/*.h) and every private
# header of src/ and drivers/ is compiled first and twice in a translation unit of its own, then all public headers
# twice; a header that is not self-contained or declares anything outside its include guard breaks the build.
# src/nn/mlp_impl.h and gpt2_impl.h are templates that mlp.c and gpt2.c include twice on purpose (once per precision) and
# have no guard.
file(GLOB infl_public_headers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/include/infl/*.h)
file(GLOB_RECURSE infl_private_headers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/*.h ${CMAKE_SOURCE_DIR}/drivers/*.h)
list(FILTER infl_private_headers EXCLUDE REGEX "/src/nn/(mlp|gpt2)_impl\\.h$")
file(READ ${CMAKE_CURRENT_SOURCE_DIR}/test_headers.c infl_headers_test_src)
foreach(h ${infl_public_headers} ${infl_private_headers})
  get_filename_component(hname ${h} NAME_WE)
  get_filename_component(hdir ${h} DIRECTORY)
  get_filename_component(hdir ${hdir} NAME)
  if(h IN_LIST infl_public_headers)
    string(FIND "${infl_headers_test_src}" "#include <infl/${hname}.h>" found)
    if(found EQUAL -1)
      message(FATAL_ERROR "tests/test_headers.c does not include the public header infl/${hname}.h: add it (twice) to its list")
    endif()
  endif()
  set(t test_headers_${hdir}_${hname})
  add_library(${t} OBJECT test_headers.c)
  target_compile_definitions(${t} PRIVATE "INFL_HEADER_FIRST=\"${h}\"")
  target_compile_options(${t} PRIVATE -Werror)
  target_link_libraries(${t} PRIVATE infl_deps)
  target_include_directories(${t} PRIVATE ${CMAKE_SOURCE_DIR}/drivers)
endforeach()

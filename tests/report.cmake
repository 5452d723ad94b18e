# infl report: HTML of a small study (images decoded and compared with the data, escaping, bad inputs), its markup
# checked with xmllint, and a headless-browser rendering in chromium.  Without xmllint (resp. chromium) the script test
# exits 77 and ctest reports it as skipped (SKIP_RETURN_CODE 77, set by infl_script_test).
infl_test(test_report SOURCES test_report.c LIBS infl_report infl_attr infl_curv infl_nn infl_io infl_core NP 1 2)
infl_script_test(test_report_html test_report.sh)
# test_report.sh also checks the pages the C test writes (report_np1.html, report_parts_np2.html, ...): the C test
# is a fixture of it, so ctest runs it first, also under ctest -R test_report_html.
set_tests_properties(test_report_np1 test_report_np2 PROPERTIES FIXTURES_SETUP report_pages)
set_tests_properties(test_report_html PROPERTIES FIXTURES_REQUIRED report_pages)
infl_script_test(test_report_browser report/browser_check.sh)
# The report of a language model's scores (byte-level GPT-2 fixture): text, per-token colours, prompt/completion.
infl_script_test(test_report_text report/text_report.sh)
# the statistics of a screenshot that browser_check.sh judges it by (libpng; a Python PNG decoder took 8 s per page)
add_executable(pngstat tools/pngstat.c)
target_link_libraries(pngstat PRIVATE PkgConfig::PNG)
set_property(TEST test_report_browser test_report_text APPEND PROPERTY ENVIRONMENT "INFL_PNGSTAT=$<TARGET_FILE:pngstat>")

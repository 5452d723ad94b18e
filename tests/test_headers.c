/* Compile test of the headers (tests/headers.cmake): a failing build is the failure.
 *
 * Built once per header H (every public header in include/infl and every private header of src/ and drivers/ that
 * is meant to be included once per file), with INFL_HEADER_FIRST set to H: H comes first in its translation unit,
 * so it must include what it uses (self-contained), and comes twice, so its include guard must cover every
 * declaration (a declaration after the guard's #endif fails here, e.g. "redeclaration of enumerator").  Then every
 * public header is included twice.  Compiled with -Werror, so a macro redefined differently fails too.
 * headers.cmake checks that the list below names every public header. */
#ifdef INFL_HEADER_FIRST
  #include INFL_HEADER_FIRST
  #include INFL_HEADER_FIRST
#endif

#include <infl/checkpoint.h>
#include <infl/checkpoint.h>
#include <infl/eigen.h>
#include <infl/eigen.h>
#include <infl/ekfac.h>
#include <infl/ekfac.h>
#include <infl/eval.h>
#include <infl/eval.h>
#include <infl/gpt2.h>
#include <infl/gpt2.h>
#include <infl/ihvp.h>
#include <infl/ihvp.h>
#include <infl/io.h>
#include <infl/io.h>
#include <infl/layout.h>
#include <infl/layout.h>
#include <infl/model.h>
#include <infl/model.h>
#include <infl/project.h>
#include <infl/project.h>
#include <infl/report.h>
#include <infl/report.h>
#include <infl/score.h>
#include <infl/score.h>
#include <infl/store.h>
#include <infl/store.h>
#include <infl/sys.h>
#include <infl/sys.h>
#include <infl/tfidf.h>
#include <infl/tfidf.h>
#include <infl/tokenizer.h>
#include <infl/tokenizer.h>
#include <infl/tokens.h>
#include <infl/tokens.h>
#include <infl/topk.h>
#include <infl/topk.h>

/* one use of a name declared after model.h's former guard, so the translation unit is not empty of checks */
int infl_test_headers_optimizer(void);
int infl_test_headers_optimizer(void)
{
  return (int)INFL_OPT_SGD;
}

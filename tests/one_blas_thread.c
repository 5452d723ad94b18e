/* Linked into every test program registered with infl_test() (tests/CMakeLists.txt): one OpenBLAS thread per process,
 * as the infl executable runs (drivers/infl.c), unless the environment says otherwise.  Ranks are the unit of
 * parallelism: with OpenBLAS's default of one thread per core, each rank of a 2-4 rank test on a 2-core machine
 * started threads that spun (sched_yield) against the other ranks; test_ekfac at 1 rank took 60 s instead of 25 s
 * (wall) and 7.4 s instead of 4.4 s of CPU time on a loaded 2-core machine.  The kernels OpenBLAS chose are not
 * touched (tests never set OPENBLAS_CORETYPE: tests/README.md). */
#include <cblas.h>
#include <stdlib.h>

__attribute__((constructor)) static void infl_test_one_blas_thread(void)
{
  if (!getenv("OPENBLAS_NUM_THREADS") && !getenv("OMP_NUM_THREADS")) openblas_set_num_threads(1);
}

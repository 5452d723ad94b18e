/* Shared pieces of the libFuzzer targets: PETSc initialized once, errors returned (not printed), input bytes
 * written to a private temporary file because the parsers take a path. */
#ifndef INFL_FUZZ_COMMON_H
#define INFL_FUZZ_COMMON_H
#include <infl/io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[256];

static int fuzz_init(void)
{
  char tmpl[] = "/tmp/infl-fuzz-XXXXXX";
  /* libFuzzer handles crashes itself: no PETSc signal handler, no PETSc error printing, no HDF5 error stacks */
  setenv("PETSC_OPTIONS", "-no_signal_handler", 1);
  /* nor Open MPI's: its handler would take SIGABRT from libFuzzer, which then keeps no crash input */
  setenv("OMPI_MCA_opal_signal", "", 1);
  if (PetscInitializeNoArguments()) abort();
  if (PetscPushErrorHandler(PetscReturnErrorHandler, NULL)) abort();
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  if (!mkdtemp(tmpl)) abort();
  snprintf(fuzz_dir, sizeof(fuzz_dir), "%s", tmpl);
  return 0;
}

/* Write data to DIR/name; the path is returned in path. */
static void fuzz_write(const char name[], const uint8_t *data, size_t size, char path[], size_t len)
{
  FILE *f;
  snprintf(path, len, "%s/%s", fuzz_dir, name);
  f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  if (fclose(f)) abort();
}
#endif

/* Helpers of the io tests: expect a call to fail on every rank with a given message. */
#ifndef INFL_TEST_IO_CHECK_H
#define INFL_TEST_IO_CHECK_H
#include <infl/io.h>
#include <string.h>
#include "lib/infl_test.h"

/* Every rank must see ierr != 0, and the error text must contain `expect`. */
static PetscErrorCode check_fails(MPI_Comm comm, PetscErrorCode ierr, const char expect[], const char what[])
{
  const char *generic = NULL;
  char       *specific = NULL;
  int         failed = ierr != 0, all = 0, match = 0;

  PetscFunctionBegin;
  if (ierr) PetscErrorMessage(ierr, &generic, &specific);
  match = failed && specific && strstr(specific, expect) != NULL;
  PetscCallMPI(MPI_Allreduce(&failed, &all, 1, MPI_INT, MPI_MIN, comm));
  PetscCheck(all, PETSC_COMM_SELF, PETSC_ERR_PLIB, "case \"%s\": the call did not fail on every rank (this rank: %s)", what, failed ? "failed" : "succeeded");
  PetscCheck(match, PETSC_COMM_SELF, PETSC_ERR_PLIB, "case \"%s\": error message \"%s\" does not contain \"%s\"", what, specific ? specific : "(none)", expect);
  PetscFunctionReturn(0);
}

#define EXPECT_FAIL(comm, call, expect, what) \
  do { \
    PetscErrorCode _e; \
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL)); \
    _e = (call); \
    PetscCall(PetscPopErrorHandler()); \
    PetscCall(check_fails(comm, _e, expect, what)); \
  } while (0)

#endif

/* infl ihvp, infl fidelity: exact damped-curvature IHVP by Krylov solves. */
#include "driver.h"

PetscErrorCode InflDriverIhvp(MPI_Comm comm, PetscBool help)
{
  PetscFunctionBegin;
  SETERRQ(comm, PETSC_ERR_SUP, "infl ihvp is not available in this build");
}

PetscErrorCode InflDriverFidelity(MPI_Comm comm, PetscBool help)
{
  PetscFunctionBegin;
  SETERRQ(comm, PETSC_ERR_SUP, "infl fidelity is not available in this build");
}

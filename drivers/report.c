/* infl report: a self-contained HTML page of a scores file (and a self-influence file) with the data's examples. */
#include "driver.h"
#include <infl/report.h>

PetscErrorCode InflDriverReport(MPI_Comm comm, PetscBool help)
{
  char       scores[PETSC_MAX_PATH_LEN], self[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN];
  PetscBool  overwrite = PETSC_FALSE;
  InflData   train, query;
  InflReport r;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-scores", "scores file from infl score", scores, sizeof(scores), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-self", "self-influence file from infl self (optional)", self, sizeof(self), PETSC_FALSE, help));
  PetscCall(DriverGetString(comm, "-out", "the report to write (HTML)", out, sizeof(out), PETSC_TRUE, help));
  PetscOptionsBegin(comm, NULL, "infl report", NULL);
  PetscCall(PetscOptionsBool("-overwrite", "replace an existing report", NULL, overwrite, &overwrite, NULL));
  PetscOptionsEnd();
  PetscCall(InflReportCreate(comm, &r));
  PetscCall(InflReportSetFromOptions(r));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "query", PETSC_TRUE, help, &query));
  if (!help) PetscCall(DriverRequireRows(comm, "infl report", train));
  if (!help) PetscCall(DriverRequireRows(comm, "infl report", query));
  if (help) {
    PetscCall(InflReportDestroy(&r));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(InflReportLoadScores(r, scores, train, query));
  if (self[0]) PetscCall(InflReportLoadSelfInfluence(r, self));
  PetscCall(InflReportWrite(r, out, overwrite));
  PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  PetscCall(InflReportDestroy(&r));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

/* infl report: a self-contained HTML page of a scores file (and a self-influence file) with the data's examples. */
#include "driver.h"
#include <infl/report.h>

PetscErrorCode InflDriverReport(MPI_Comm comm, PetscBool help)
{
  char            scores[PETSC_MAX_PATH_LEN], self[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN], mpath[PETSC_MAX_PATH_LEN];
  PetscBool       overwrite = PETSC_FALSE;
  InflData        train, query;
  InflReport      r;
  InflModel       model = NULL;
  InflTokenizer   tok   = NULL;
  InflDataContent kind  = INFL_DATA_ROWS;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-scores", "scores file from infl score", scores, sizeof(scores), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-self", "self-influence file from infl self (optional)", self, sizeof(self), PETSC_FALSE, help));
  PetscCall(DriverGetString(comm, "-out", "the report to write (HTML)", out, sizeof(out), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-model", "language models (text or token data): the model the scores were computed with, for its token windows and tokenizer", mpath, sizeof(mpath), PETSC_FALSE, help));
  PetscOptionsBegin(comm, NULL, "infl report", NULL);
  PetscCall(PetscOptionsBool("-overwrite", "replace an existing report", NULL, overwrite, &overwrite, NULL));
  PetscOptionsEnd();
  PetscCall(InflReportCreate(comm, &r));
  PetscCall(InflReportSetFromOptions(r));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "query", PETSC_FALSE, help, &query));
  if (help) {
    PetscCall(InflReportDestroy(&r));
    PetscFunctionReturn(0);
  }
  PetscCall(InflDataGetContent(train, &kind));
  if (kind == INFL_DATA_SEQUENCES) { /* the model cuts the windows and brings the tokenizer */
    PetscCheck(mpath[0], comm, PETSC_ERR_ARG_WRONG, "-train %s holds token sequences: give -model DIR, the language model the scores were computed with (for its windows and tokenizer)", scores);
    PetscCall(DriverLoadModel(comm, mpath, &model));
    PetscCall(InflModelCheckData(model, train));
    if (query) PetscCall(InflModelCheckData(model, query));
    PetscCall(DriverModelTokenizer(comm, mpath, model, &tok));
    PetscCall(InflReportSetTokenizer(r, tok));
  } else {
    PetscCheck(query, comm, PETSC_ERR_ARG_WRONG, "give -query, the query data the scores %s were computed on", scores);
    PetscCall(DriverRequireRows(comm, "infl report", query));
    PetscCall(DriverCheckClassNames(comm, train));
    PetscCall(DriverCheckClassNames(comm, query));
  }
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(InflReportLoadScores(r, scores, train, query));
  if (self[0]) PetscCall(InflReportLoadSelfInfluence(r, self));
  PetscCall(InflReportWrite(r, out, overwrite));
  PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  PetscCall(InflReportDestroy(&r));
  PetscCall(InflTokenizerDestroy(&tok));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

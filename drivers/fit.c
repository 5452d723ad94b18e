/* infl fit, infl score, infl self. */
#include "stages.h"

static PetscErrorCode common_inputs(MPI_Comm comm, PetscBool help, PetscBool need_factors, char model_path[], char factors[], char out[], PetscBool *overwrite)
{
  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-model", "model file (safetensors)", model_path, PETSC_MAX_PATH_LEN, PETSC_TRUE, help));
  if (need_factors) PetscCall(DriverGetString(comm, "-factors", "EK-FAC factors file from infl fit", factors, PETSC_MAX_PATH_LEN, PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-out", "output file (HDF5)", out, PETSC_MAX_PATH_LEN, PETSC_TRUE, help));
  *overwrite = PETSC_FALSE;
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-overwrite", overwrite, NULL));
  PetscFunctionReturn(0);
}

/* Collective: -layer_groups read and checked by a layout's SetFromOptions (the factors' load sets up its own). */
static PetscErrorCode layout_options(MPI_Comm comm)
{
  InflLayerLayout lay;

  PetscFunctionBegin;
  PetscCall(InflLayerLayoutCreate(comm, &lay));
  PetscCall(InflLayerLayoutSetFromOptions(lay));
  PetscCall(InflLayerLayoutDestroy(&lay));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverFit(MPI_Comm comm, PetscBool help)
{
  char      mpath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN];
  PetscBool overwrite;
  InflData  train;
  InflModel model;
  InflEKFAC ek;

  PetscFunctionBegin;
  PetscCall(common_inputs(comm, help, PETSC_FALSE, mpath, NULL, out, &overwrite));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  if (help) {
    PetscCall(InflEKFACCreate(comm, &ek));
    PetscCall(InflEKFACSetFromOptions(ek));
    PetscCall(InflEKFACDestroy(&ek));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(DriverLoadModel(comm, mpath, &model));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFromOptions(ek));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(StageFit(comm, model, train, out, overwrite, NULL));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverScore(MPI_Comm comm, PetscBool help)
{
  char         mpath[PETSC_MAX_PATH_LEN], fpath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN], ppath[PETSC_MAX_PATH_LEN];
  PetscBool    overwrite;
  InflData     train, query = NULL;
  InflModel    model;
  InflEKFAC    ek;
  InflScorer   sc;
  PetscInt     Q = 0;
  int64_t     *qidx = NULL, Nq;
  StagePrompts prompts = {0};
  PetscBool    store, tracin;

  PetscFunctionBegin;
  PetscCall(DriverMethodIsTracIn(comm, &tracin));
  PetscCall(PetscOptionsHasName(NULL, NULL, "-store", &store)); /* scores against a gradient store: drivers/project.c */
  if (store) {
    PetscCall(InflDriverStoreScore(comm, help));
    PetscFunctionReturn(0);
  }
  if (tracin) { /* TracIn over -checkpoints: drivers/tracin.c */
    PetscCall(InflDriverTracIn(comm, help, PETSC_FALSE));
    PetscFunctionReturn(0);
  }
  PetscCall(common_inputs(comm, help, PETSC_TRUE, mpath, fpath, out, &overwrite));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverGetString(comm, "-query_prompts", "language models: prompt/completion queries, a text file of prompts and completions separated by a line \">>>\", queries by \"%\" lines (docs/FORMATS.md); only completion tokens enter the query loss (instead of -query)", ppath, sizeof(ppath), PETSC_FALSE, help));
  PetscCall(DriverOpenData(comm, "query", (PetscBool)(!ppath[0]), help, &query));
  PetscCheck(!(ppath[0] && query), comm, PETSC_ERR_ARG_INCOMP, "give either -query (a data set, with -query_indices) or -query_prompts %s, not both", ppath);
  PetscCall(layout_options(comm)); /* -layer_groups: checked before any work, listed by -help */
  if (help) {
    PetscCall(InflScorerCreate(comm, &sc));
    PetscCall(InflScorerSetFromOptions(sc));
    PetscCall(InflScorerDestroy(&sc));
    PetscCall(PetscPrintf(comm, "  -query_indices <0:8>: queries: \"3,17,40\", a range \"0:100\" or \"0:1000:10\", or \"@file\"\n  -ekfac_damping <X>: override the damping stored with the factors\n  -store <FILE>: score against a gradient store from infl project instead (infl score -store FILE -help lists its options)\n"));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(DriverLoadModel(comm, mpath, &model));
  if (ppath[0]) PetscCall(DriverLoadPrompts(comm, ppath, mpath, model, &prompts));
  else {
    PetscCall(InflModelCheckData(model, query)); /* token data is read for the model: its number of sequences */
    PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
    PetscCall(DriverQueryIndices(comm, Nq, &Q, &qidx));
  }
  PetscCall(StageLoadFactors(comm, fpath, model, train, query, ppath[0] ? prompts.Q : Q, &ek)); /* checks the -score_* options first */
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(StageScore(comm, model, ek, train, query, Q, qidx, ppath[0] ? &prompts : NULL, out, overwrite, NULL));
  PetscCall(PetscFree(qidx));
  PetscCall(PetscFree3(prompts.offsets, prompts.tokens, prompts.targets));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverSelf(MPI_Comm comm, PetscBool help)
{
  char      mpath[PETSC_MAX_PATH_LEN], fpath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN];
  PetscBool overwrite;
  InflData  train;
  InflModel model;
  InflEKFAC ek;
  PetscInt  chunk = 512;
  PetscBool store, tracin;

  PetscFunctionBegin;
  PetscCall(DriverMethodIsTracIn(comm, &tracin));
  PetscCall(PetscOptionsHasName(NULL, NULL, "-store", &store)); /* TracIn self-influence from gradient stores */
  if (store) {
    PetscCall(InflDriverStoreSelf(comm, help));
    PetscFunctionReturn(0);
  }
  if (tracin) { /* TracIn over -checkpoints: drivers/tracin.c */
    PetscCall(InflDriverTracIn(comm, help, PETSC_TRUE));
    PetscFunctionReturn(0);
  }
  PetscCall(common_inputs(comm, help, PETSC_TRUE, mpath, fpath, out, &overwrite));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscOptionsBegin(comm, NULL, "infl self", NULL);
  PetscCall(PetscOptionsInt("-self_chunk", "training examples (sequences) per chunk (default 512; sequences: as many as fit in 8192 tokens, fewer for a vocabulary above 256)", NULL, chunk, &chunk, NULL));
  PetscOptionsEnd();
  PetscCall(layout_options(comm)); /* -layer_groups: checked before any work, listed by -help */
  if (help) PetscFunctionReturn(0);
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(DriverLoadModel(comm, mpath, &model));
  PetscCall(StageLoadFactorsForSelf(comm, fpath, model, train, &ek));
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(StageSelf(comm, model, ek, train, out, overwrite));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

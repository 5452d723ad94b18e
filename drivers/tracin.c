/* infl score -method tracin and infl self -method tracin: TracIn (Pruthi et al. 2020) through captures over the
 * checkpoints of a training run (infl train -checkpoint_every), exact gradients, no projection. */
#include "stages.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const methods[] = {"ekfac", "tracin"};

PetscErrorCode DriverMethodIsTracIn(MPI_Comm comm, PetscBool *tracin)
{
  PetscInt m = 0;

  PetscFunctionBegin;
  PetscOptionsBegin(comm, NULL, "Attribution method", NULL);
  PetscCall(PetscOptionsEList("-method", "ekfac (EK-FAC influence, -factors) or tracin (TracIn over -checkpoints, or over -store stores)", NULL, methods, 2, methods[0], &m, NULL));
  PetscOptionsEnd();
  *tracin = m == 1 ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(0);
}

/* The checkpoints of -checkpoints, loaded, with their learning rates: -tracin_lr, else each checkpoint's train_lr
 * metadata (written by infl train -checkpoint_every). */
static PetscErrorCode load_checkpoints(MPI_Comm comm, const char layers[], PetscInt *C, InflModel models[], double eta[])
{
  char     *paths[INFL_TRACIN_MAX];
  PetscInt  n = INFL_TRACIN_MAX, ne = INFL_TRACIN_MAX;
  PetscBool set;

  PetscFunctionBegin;
  PetscCall(DriverCheckListLength(comm, "-checkpoints", INFL_TRACIN_MAX, "checkpoints"));
  PetscCall(DriverCheckListLength(comm, "-tracin_lr", INFL_TRACIN_MAX, "learning rates"));
  PetscCall(PetscOptionsGetStringArray(NULL, NULL, "-checkpoints", paths, &n, NULL));
  PetscCheck(n >= 1, comm, PETSC_ERR_ARG_WRONG, "-checkpoints names no model; give the checkpoints of a training run, comma-separated (infl train -checkpoint_every E writes OUT.ckpt-EPOCH)");
  PetscCall(PetscOptionsGetRealArray(NULL, NULL, "-tracin_lr", eta, &ne, &set));
  PetscCheck(!set || ne == n, comm, PETSC_ERR_ARG_SIZ, "-tracin_lr gives %d learning rates for %d checkpoints: give one per checkpoint, in the order of -checkpoints", (int)ne, (int)n);
  for (PetscInt c = 0; c < n; c++) {
    PetscCall(DriverLoadModel(comm, paths[c], &models[c]));
    if (layers[0]) PetscCall(InflModelSetLayerSelection(models[c], layers));
    if (!set) PetscCall(DriverCheckpointLearningRate(comm, paths[c], "", &eta[c]));
    PetscCall(PetscPrintf(comm, "tracin: checkpoint %d %s, learning rate %g%s\n", (int)c + 1, paths[c], eta[c], set ? " (-tracin_lr)" : ""));
  }
  for (PetscInt c = 0; c < n; c++) PetscCall(PetscFree(paths[c]));
  *C = n;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverTracIn(MPI_Comm comm, PetscBool help, PetscBool self)
{
  char         cpath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN], ppath[PETSC_MAX_PATH_LEN] = "", layers[8] = "";
  PetscBool    overwrite = PETSC_FALSE;
  InflData     train, query = NULL;
  InflModel    models[INFL_TRACIN_MAX] = {NULL};
  double       eta[INFL_TRACIN_MAX];
  PetscInt     C = 0, Q = 0, chunk = 512;
  int64_t     *qidx = NULL, Nq;
  StagePrompts prompts = {0};

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-checkpoints", "TracIn: the model checkpoints, comma-separated (infl train -checkpoint_every E writes OUT.ckpt-EPOCH)", cpath, sizeof(cpath), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-out", "output file (HDF5)", out, sizeof(out), PETSC_TRUE, help));
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-overwrite", &overwrite, NULL));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  if (!self) {
    PetscCall(DriverGetString(comm, "-query_prompts", "language models: prompt/completion queries (instead of -query; docs/FORMATS.md)", ppath, sizeof(ppath), PETSC_FALSE, help));
    PetscCall(DriverOpenData(comm, "query", (PetscBool)(!ppath[0]), help, &query));
    PetscCheck(!(ppath[0] && query), comm, PETSC_ERR_ARG_INCOMP, "give either -query (a data set, with -query_indices) or -query_prompts %s, not both", ppath);
  }
  PetscOptionsBegin(comm, NULL, "TracIn", NULL);
  PetscCall(PetscOptionsString("-tracin_layers", "layers whose gradients enter TracIn: all, or for a GPT-2 mlp or attn (default all)", NULL, layers, layers, sizeof(layers), NULL));
  if (self) PetscCall(PetscOptionsInt("-self_chunk", "training examples per chunk", NULL, chunk, &chunk, NULL));
  PetscOptionsEnd();
  if (help) {
    if (!self) {
      InflScorer sc;
      PetscCall(InflScorerCreate(comm, &sc));
      PetscCall(InflScorerSetFromOptions(sc));
      PetscCall(InflScorerDestroy(&sc));
      PetscCall(PetscPrintf(comm, "  -query_indices <0:8>: queries: \"3,17,40\", a range \"0:100\" or \"0:1000:10\", or \"@file\"\n"));
    }
    PetscCall(PetscPrintf(comm, "  -tracin_lr <eta1,eta2,...>: the learning rate of each checkpoint (default: its train_lr metadata)\n"));
    PetscCall(InflDataDestroy(&train));
    PetscCall(InflDataDestroy(&query));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(load_checkpoints(comm, layers, &C, models, eta));
  if (!self) {
    InflScorer probe; /* its options are read now, so that a misspelled one is reported before the work */
    if (ppath[0]) { /* the tokenizer beside the first checkpoint */
      char *comma = strchr(cpath, ',');
      if (comma) *comma = 0;
      PetscCall(DriverLoadPrompts(comm, ppath, cpath, models[0], &prompts));
    }
    else {
      PetscCall(InflModelCheckData(models[0], query));
      PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
      PetscCall(DriverQueryIndices(comm, Nq, &Q, &qidx));
    }
    PetscCall(InflScorerCreate(comm, &probe));
    PetscCall(InflScorerSetFromOptions(probe));
    PetscCall(InflScorerDestroy(&probe));
  }
  { /* layer groups spread EK-FAC factors (infl/layout.h); TracIn has none: every rank holds every layer (G = 1) */
    PetscInt  G = 0;
    PetscBool set, split = PETSC_FALSE;
    PetscCall(PetscOptionsGetInt(NULL, NULL, "-layer_groups", &G, &set));
    PetscCheck(!set || G <= 1, comm, PETSC_ERR_ARG_INCOMP, "-layer_groups %d: TracIn (-method tracin) has no EK-FAC factors to spread over layer groups and holds every layer on every rank; drop -layer_groups (or give 1)", (int)G);
    PetscCall(PetscOptionsGetBool(NULL, NULL, "-layer_split", &split, &set));
    PetscCheck(!set || !split, comm, PETSC_ERR_ARG_INCOMP, "-layer_split true: TracIn (-method tracin) has no EK-FAC factors to split and holds every layer on every rank; drop -layer_split");
  }
  PetscCall(DriverCheckUnusedOptions(comm));
  if (self) PetscCall(StageSelfTracIn(comm, C, models, eta, train, out, overwrite));
  else PetscCall(StageScoreTracIn(comm, C, models, eta, train, query, Q, qidx, ppath[0] ? &prompts : NULL, out, overwrite));
  PetscCall(PetscFree(qidx));
  PetscCall(PetscFree3(prompts.offsets, prompts.tokens, prompts.targets));
  for (PetscInt c = 0; c < C; c++) PetscCall(InflModelDestroy(&models[c]));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscFunctionReturn(0);
}

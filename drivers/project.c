/* infl project (the gradient store) and infl score -store (scores against a store). */
#include "driver.h"
#include <infl/store.h>

PetscErrorCode InflDriverProject(MPI_Comm comm, PetscBool help)
{
  char           mpath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN];
  PetscBool      overwrite = PETSC_FALSE, gram = PETSC_TRUE;
  InflData       train;
  InflModel      model;
  InflProjector  proj;
  PetscLogDouble t0, t1;
  PetscLogStage  stage;
  int64_t        N;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-model", "model file (safetensors) or GPT-2 directory", mpath, sizeof(mpath), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-out", "gradient store to write (HDF5)", out, sizeof(out), PETSC_TRUE, help));
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-overwrite", &overwrite, NULL));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(InflProjectorCreate(comm, &proj));
  PetscCall(InflProjectorSetFromOptions(proj));
  PetscOptionsBegin(comm, NULL, "infl project", NULL);
  PetscCall(PetscOptionsBool("-store_gram", "also write /gram (G^T G, k x k) for store-based Fisher scoring", "InflStoreBuild", gram, &gram, NULL));
  PetscOptionsEnd();
  if (help) {
    PetscCall(InflProjectorDestroy(&proj));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(DriverLoadModel(comm, mpath, &model));
  PetscCall(InflModelCheckData(model, train));
  PetscCall(InflProjectorSetUp(proj, model));
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflProjectorView(proj, NULL));
  PetscCall(PetscLogStageRegister("Project", &stage));
  PetscCall(PetscLogStagePush(stage));
  PetscCall(PetscTime(&t0));
  PetscCall(InflStoreBuild(proj, model, train, gram, out, overwrite));
  { /* a checkpoint's learning rate (infl train -checkpoint_every), the default weight of TracIn over stores */
    char  lr[96];
    hid_t f;
    PetscCall(InflModelReadMetadata(comm, mpath, "train_lr", lr, sizeof(lr)));
    if (lr[0]) {
      PetscCall(InflH5Open(comm, out, PETSC_TRUE, &f));
      PetscCall(InflH5SetAttrString(f, "/", "train_lr", lr));
      PetscCall(InflH5Close(&f));
    }
  }
  PetscCall(PetscTime(&t1));
  PetscCall(PetscLogStagePop());
  PetscCall(InflDataGetSizes(train, &N, NULL, NULL));
  PetscCall(PetscPrintf(comm, "project: %" PRId64 " examples in %.2f s (%.1f examples/s over the ranks; a resumed run counts only this run's time)\n", N, t1 - t0, (double)N / PetscMax(t1 - t0, 1e-9)));
  {
    InflDataContent content;
    PetscCall(InflDataGetContent(train, &content));
    if (content == INFL_DATA_SEQUENCES) { /* language models: tokens/s */
      int64_t        start, count, ntok;
      const int64_t *off;
      PetscCall(InflDataGetSequenceShard(train, &start, &count, NULL, &off));
      ntok = off[count];
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &ntok, 1, MPI_INT64_T, MPI_SUM, comm));
      PetscCall(PetscPrintf(comm, "project: %" PRId64 " tokens, %.0f tokens/s over the ranks\n", ntok, (double)ntok / PetscMax(t1 - t0, 1e-9)));
    }
  }
  PetscCall(InflReportPeakMemory(comm, "project"));
  PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  PetscCall(InflProjectorDestroy(&proj));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverStoreScore(MPI_Comm comm, PetscBool help)
{
  char            mpath[PETSC_MAX_PATH_LEN], spath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN];
  PetscBool       overwrite = PETSC_FALSE;
  InflData        query;
  InflModel      *model;
  PetscInt        nmodel;
  InflStoreScorer ss;
  PetscInt        Q;
  int64_t        *qidx, Nq, N;
  PetscLogDouble  t0, t1, t2, t3;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-store", "gradient store from infl project; several, comma-separated: TracIn over their checkpoints", spath, sizeof(spath), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-model", "the model the store was built with (one per store, comma-separated)", mpath, sizeof(mpath), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-out", "output file (HDF5)", out, sizeof(out), PETSC_TRUE, help));
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-overwrite", &overwrite, NULL));
  if (!help) { /* the store's query gradients are those of windows (next-token targets): no prompt/completion pairs */
    char ppath[PETSC_MAX_PATH_LEN] = "";
    PetscCall(PetscOptionsGetString(NULL, NULL, "-query_prompts", ppath, sizeof(ppath), NULL));
    PetscCheck(!ppath[0], comm, PETSC_ERR_SUP, "-query_prompts %s is not supported with -store (the store scores query windows, -query SPEC with -query_indices); score prompt/completion queries with -factors FILE (EK-FAC) or -method tracin -checkpoints", ppath);
  }
  PetscCall(DriverOpenData(comm, "query", PETSC_TRUE, help, &query));
  PetscCall(InflStoreScorerCreate(comm, &ss));
  PetscCall(InflStoreScorerSetFromOptions(ss));
  if (help) {
    PetscCall(PetscPrintf(comm, "  -query_indices <0:8>: queries: \"3,17,40\", a range \"0:100\" or \"0:1000:10\", or \"@file\"\n  -tracin_lr <eta1,eta2,...>: with several stores, the learning rate of each checkpoint (default: each model's train_lr metadata)\n"));
    PetscCall(InflStoreScorerDestroy(&ss));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  {
    char     *stores[INFL_STORE_MAX], *models[INFL_STORE_MAX];
    PetscInt  ns = INFL_STORE_MAX, nm = INFL_STORE_MAX, ne = INFL_STORE_MAX;
    double    eta[INFL_STORE_MAX];
    PetscBool set;
    PetscCall(DriverCheckListLength(comm, "-store", INFL_STORE_MAX, "stores"));
    PetscCall(DriverCheckListLength(comm, "-model", INFL_STORE_MAX, "models"));
    PetscCall(DriverCheckListLength(comm, "-tracin_lr", INFL_STORE_MAX, "learning rates"));
    PetscCall(PetscOptionsGetStringArray(NULL, NULL, "-store", stores, &ns, NULL));
    PetscCall(PetscOptionsGetStringArray(NULL, NULL, "-model", models, &nm, NULL));
    PetscCall(PetscOptionsGetRealArray(NULL, NULL, "-tracin_lr", eta, &ne, &set));
    PetscCheck(nm == ns, comm, PETSC_ERR_ARG_SIZ, "-store names %d stores but -model %d models: give the model of each store (checkpoint), in the same order", (int)ns, (int)nm);
    PetscCheck(!set || ne == ns, comm, PETSC_ERR_ARG_SIZ, "-tracin_lr gives %d learning rates for %d stores: give one per store", (int)ne, (int)ns);
    nmodel = ns;
    PetscCall(PetscMalloc1(ns, &model));
    PetscCall(PetscTime(&t0));
    for (PetscInt c = 0; c < ns; c++) {
      PetscCall(DriverLoadModel(comm, models[c], &model[c]));
      if (c == 0) PetscCall(InflStoreScorerOpen(ss, stores[c], model[c])); /* first: a store of another model is the error to report */
      else PetscCall(InflStoreScorerAddStore(ss, stores[c], model[c]));
    }
    for (PetscInt c = 0; c < ns; c++) { /* the stores agree: their weights */
      if (ns > 1 && !set) { /* TracIn: each checkpoint's learning rate, as -method tracin takes it */
        char of[PETSC_MAX_PATH_LEN + 32];
        PetscCall(PetscSNPrintf(of, sizeof(of), " (of the store %s)", stores[c]));
        PetscCall(DriverCheckpointLearningRate(comm, models[c], of, &eta[c]));
        PetscCall(PetscPrintf(comm, "tracin: store %d %s, checkpoint %s, learning rate %g\n", (int)c + 1, stores[c], models[c], eta[c]));
      }
    }
    if (ns > 1 && !set) {
      set = PETSC_TRUE;
      ne  = ns;
    }
    if (set) PetscCall(InflStoreScorerSetWeights(ss, ne, eta));
    for (PetscInt c = 0; c < ns; c++) PetscCall(PetscFree(stores[c]));
    for (PetscInt c = 0; c < nm; c++) PetscCall(PetscFree(models[c]));
    PetscCall(PetscTime(&t1));
  }
  PetscCall(InflModelCheckData(model[0], query));
  PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
  PetscCall(DriverQueryIndices(comm, Nq, &Q, &qidx));
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflStoreScorerSetQueries(ss, query, Q, qidx));
  PetscCall(InflStoreScorerSetCheckpoint(ss, out));
  PetscCall(PetscTime(&t2));
  PetscCall(InflStoreScorerScore(ss));
  PetscCall(PetscTime(&t3));
  {
    int64_t start, count;
    const double *s;
    PetscCall(InflStoreScorerGetLocalScores(ss, &start, &count, &s));
    N = count;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &N, 1, MPI_INT64_T, MPI_SUM, comm));
  }
  PetscCall(PetscPrintf(comm, "score -store: %d queries x %" PRId64 " training examples; opening (and Fisher factorization) %.2f s, query gradients %.2f s, scoring %.2f s (%.3g pairs/s)\n", (int)Q, N, t1 - t0, t2 - t1, t3 - t2, (double)Q * N / PetscMax(t3 - t2, 1e-9)));
  PetscCall(InflReportPeakMemory(comm, "score -store"));
  PetscCall(InflStoreScorerSave(ss, out, overwrite));
  PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  PetscCall(PetscFree(qidx));
  PetscCall(InflStoreScorerDestroy(&ss));
  for (PetscInt c = 0; c < nmodel; c++) PetscCall(InflModelDestroy(&model[c]));
  PetscCall(PetscFree(model));
  PetscCall(InflDataDestroy(&query));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverStoreSelf(MPI_Comm comm, PetscBool help)
{
  char      spath[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN], *stores[INFL_STORE_MAX];
  PetscBool overwrite = PETSC_FALSE, set;
  PetscInt  ns = INFL_STORE_MAX, ne = INFL_STORE_MAX;
  double    eta[INFL_STORE_MAX];

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-store", "gradient stores of the checkpoints (comma-separated): TracIn self-influence", spath, sizeof(spath), PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-out", "output file (HDF5)", out, sizeof(out), PETSC_TRUE, help));
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-overwrite", &overwrite, NULL));
  if (help) {
    PetscCall(PetscPrintf(comm, "  -tracin_lr <eta1,eta2,...>: the learning rate of each checkpoint (default: the train_lr each store recorded; 1 for a single store without it)\n"));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(DriverCheckListLength(comm, "-store", INFL_STORE_MAX, "stores"));
  PetscCall(DriverCheckListLength(comm, "-tracin_lr", INFL_STORE_MAX, "learning rates"));
  PetscCall(PetscOptionsGetStringArray(NULL, NULL, "-store", stores, &ns, NULL));
  PetscCall(PetscOptionsGetRealArray(NULL, NULL, "-tracin_lr", eta, &ne, &set));
  PetscCheck(!set || ne == ns, comm, PETSC_ERR_ARG_SIZ, "-tracin_lr gives %d learning rates for %d stores: give one per store", (int)ne, (int)ns);
  for (PetscInt c = 0; c < ns && !set; c++) { /* each checkpoint's learning rate, recorded by infl project */
    char  lr[96];
    hid_t f;
    PetscCall(InflH5Open(comm, stores[c], PETSC_FALSE, &f));
    PetscCall(InflH5GetAttrString(f, "/", "train_lr", lr, sizeof(lr)));
    PetscCall(InflH5Close(&f));
    PetscCheck(lr[0] || ns == 1, comm, PETSC_ERR_ARG_WRONG, "the store %s records no learning rate (train_lr: infl project copies it from a checkpoint of infl train -checkpoint_every): give the learning rates with -tracin_lr eta1,eta2,...", stores[c]);
    if (lr[0]) {
      char what[PETSC_MAX_PATH_LEN + 32];
      PetscCall(PetscSNPrintf(what, sizeof(what), "the store %s: attribute", stores[c]));
      PetscCall(DriverParseLearningRate(comm, what, lr, &eta[c]));
    }
    else eta[c] = 1; /* one store of a model without it: the squared gradient norms */
    PetscCall(PetscPrintf(comm, "tracin: store %d %s, learning rate %g%s\n", (int)c + 1, stores[c], eta[c], lr[0] ? "" : " (none recorded: the squared gradient norm)"));
  }
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflStoreTracInSelf(comm, ns, (const char *const *)stores, eta, out, overwrite));
  PetscCall(PetscPrintf(comm, "wrote %s (TracIn self-influence over %d checkpoints)\n", out, (int)ns));
  for (PetscInt c = 0; c < ns; c++) PetscCall(PetscFree(stores[c]));
  PetscFunctionReturn(0);
}

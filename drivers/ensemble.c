/* infl run -ensemble M: the study with M models (seeds -train_seed .. -train_seed + M - 1), each trained (or reused),
 * fitted and scored by its own rank group, the scores combined (include/infl/eval.h, InflEnsembleCombine); then the
 * self-influence of the study's model and the report, as infl run. */
#include "stages.h"
#include <infl/eval.h>
#include <infl/checkpoint.h>
#include <infl/report.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

PetscErrorCode DriverEnsembleRequested(MPI_Comm comm, PetscBool help, PetscInt *M)
{
  PetscFunctionBegin;
  *M = 1;
  PetscOptionsBegin(comm, NULL, "infl run -ensemble", NULL);
  PetscCall(PetscOptionsInt("-ensemble", "models of the ensemble: seeds -train_seed .. -train_seed + M - 1, the first being the study's model; scores.h5 holds their combined scores (docs/FORMATS.md)", NULL, *M, M, NULL));
  if (help) { /* listed here; read by InflDriverRunEnsemble */
    PetscInt  inorm = INFL_ENSEMBLE_QUERY, gs = 0;
    PetscBool sm    = PETSC_FALSE;
    PetscCall(PetscOptionsEList("-ensemble_normalize", "per-model normalization before the mean: none, query (each query's scores divided by their RMS over the training set), model (the model's matrix by its RMS)", NULL, InflEnsembleNormalizeNames, 3, InflEnsembleNormalizeNames[inorm], &inorm, NULL));
    PetscCall(PetscOptionsBool("-ensemble_save_members", "also write every member's normalized scores to scores.h5 (/ensemble/member_scores (M, Q, N))", NULL, sm, &sm, NULL));
    PetscCall(PetscOptionsInt("-ensemble_group_size", "ranks per member (0: chosen so that every rank is busy, include/infl/eval.h)", NULL, gs, &gs, NULL));
  }
  PetscOptionsEnd();
  PetscCheck(*M >= 1 && *M <= 1024, comm, PETSC_ERR_ARG_OUTOFRANGE, "-ensemble %d: give a number of models in [1, 1024] (1: no ensemble)", (int)*M);
  if (help) *M = 0;
  PetscFunctionReturn(0);
}

typedef struct {
  char             outdir[PETSC_MAX_PATH_LEN], model0[PETSC_MAX_PATH_LEN];
  InflTrainOptions topt;
  PetscInt         nd, dims[64], Q;
  PetscBool        dset, overwrite;
  const int64_t   *qidx;
  char             fit_key[128];
  PetscBool        seq;                       /* a language-model study: GPT-2s on token sequences */
  char             ppath[PETSC_MAX_PATH_LEN]; /* -query_prompts ("" none) */
  size_t           held;                      /* bytes of the study's data sets, held beside every member's stages */
} EnsembleCtx;

/* The files of member m: the study's own model and factors for m = 0, OUTDIR/ensemble/... for the others (a GPT-2's
 * model is a directory, model-m). */
static PetscErrorCode member_paths(const EnsembleCtx *c, PetscInt m, char model[], char factors[], char scores[])
{
  PetscFunctionBegin;
  if (m == 0) {
    PetscCall(PetscStrncpy(model, c->model0, PETSC_MAX_PATH_LEN));
    PetscCall(PetscSNPrintf(factors, PETSC_MAX_PATH_LEN, "%s/factors.h5", c->outdir));
  } else {
    PetscCall(PetscSNPrintf(model, PETSC_MAX_PATH_LEN, c->seq ? "%s/ensemble/model-%d" : "%s/ensemble/model-%d.safetensors", c->outdir, (int)m));
    PetscCall(PetscSNPrintf(factors, PETSC_MAX_PATH_LEN, "%s/ensemble/factors-%d.h5", c->outdir, (int)m));
  }
  PetscCall(PetscSNPrintf(scores, PETSC_MAX_PATH_LEN, "%s/ensemble/scores-%d.h5", c->outdir, (int)m));
  PetscFunctionReturn(0);
}

/* Member m on the group's communicator: its model (reused, else trained with seed -train_seed + m), factors (reused
 * when fitted for it with these options), scores with -score_save_all. */
static PetscErrorCode member_task(void *ctx, MPI_Comm comm, PetscInt m, double *unused)
{
  EnsembleCtx *c = (EnsembleCtx *)ctx;
  char         mpath[PETSC_MAX_PATH_LEN], fpath[PETSC_MAX_PATH_LEN], spath[PETSC_MAX_PATH_LEN];
  InflData     train, test, query;
  InflModel    model;
  InflEKFAC    ek;
  PetscBool    match;
  const char  *hash, *thash;
  StagePrompts prompts = {0};

  PetscFunctionBegin;
  PetscCall(member_paths(c, m, mpath, fpath, spath));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, PETSC_FALSE, &train));
  PetscCall(DriverOpenData(comm, "test", PETSC_FALSE, PETSC_FALSE, &test));
  PetscCall(DriverOpenData(comm, "query", PETSC_FALSE, PETSC_FALSE, &query));
  if (InflFileExists(mpath) && !c->overwrite) {
    PetscCall(PetscPrintf(comm, "== ensemble member %d: using %s (the training options do not apply; remove it or pass -overwrite to train again)\n", (int)m, mpath));
    PetscCall(DriverLoadModel(comm, mpath, &model));
  } else {
    InflTrainOptions topt = c->topt;
    PetscInt         nd   = c->nd, dims[64];
    topt.seed             = c->topt.seed + (uint64_t)m;
    PetscCall(PetscArraycpy(dims, c->dims, 64));
    PetscCall(PetscPrintf(comm, "== ensemble member %d: training with seed %d\n", (int)m, (int)topt.seed));
    if (c->seq) PetscCall(DriverTrainGPT2(comm, train, test, &topt, mpath, &model));
    else {
      PetscCall(DriverMLPDims(comm, train, dims, &nd, c->dset));
      PetscCall(DriverTrainMLP(comm, train, test, nd, dims, &topt, mpath, &model));
    }
  }
  if (c->seq) { /* the windows of the data for this model (its tokenizer), the prompts */
    InflData ds[3] = {train, test, query};
    for (int i = 0; i < 3; i++)
      if (ds[i]) PetscCall(InflModelCheckData(model, ds[i]));
    if (c->ppath[0]) PetscCall(DriverLoadPrompts(comm, c->ppath, mpath, model, &prompts));
  }
  PetscCall(InflModelGetHash(model, &hash));
  PetscCall(InflDataGetHash(train, &thash));
  PetscCall(DriverOutputMatches(comm, fpath, hash, thash, "fit_key", c->fit_key, &match));
  /* under -mem_limit the member's stages count the data sets held beside them: the study's, and the member's test data */
  PetscCall(StageHoldData(train, test, query ? query : test, PETSC_FALSE));
  PetscCall(InflMemLimitSetHeld(InflMemLimitGetHeld() + c->held));
  if (match && !c->overwrite) /* loaded in the layer groups of the score stage (its queries counted under -mem_limit) */
    PetscCall(StageLoadFactors(comm, fpath, model, train, c->ppath[0] ? NULL : (query ? query : test), c->Q, &ek));
  else PetscCall(StageFitForScore(comm, model, train, fpath, c->ppath[0] ? NULL : (query ? query : test), c->Q, &ek));
  { /* scores of this model, data and queries are reused (remove them, or -overwrite, after changing -score_* options) */
    const char *qhash = prompts.hash;
    if (!c->ppath[0]) PetscCall(InflDataGetHash(query ? query : test, &qhash));
    PetscCall(DriverOutputMatches(comm, spath, hash, thash, "query_sha256", qhash, &match));
    if (match) { /* and the same query indices */
      hid_t   f;
      int     nd;
      int64_t dims[8], *qi;
      PetscCall(InflH5Open(comm, spath, PETSC_FALSE, &f));
      PetscCall(InflH5GetDims(f, "/query_indices", &nd, dims));
      match = (PetscBool)(nd == 1 && dims[0] == c->Q);
      if (match) {
        PetscCall(PetscMalloc1(c->Q, &qi));
        PetscCall(InflH5ReadArray(f, "/query_indices", H5T_NATIVE_INT64, 1, dims, NULL, qi));
        for (PetscInt q = 0; q < c->Q; q++) match = (PetscBool)(match && qi[q] == c->qidx[q]);
        PetscCall(PetscFree(qi));
      }
      PetscCall(InflH5Close(&f));
    }
    if (match && !c->overwrite) PetscCall(PetscPrintf(comm, "== ensemble member %d: using %s\n", (int)m, spath));
    else PetscCall(StageScore(comm, model, ek, train, query ? query : test, c->Q, c->qidx, c->ppath[0] ? &prompts : NULL, spath, PETSC_TRUE, NULL));
  }
  PetscCall(InflMemLimitSetHeld(0));
  PetscCall(PetscFree3(prompts.offsets, prompts.tokens, prompts.targets));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&test));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverRunEnsemble(MPI_Comm comm, PetscBool help)
{
  EnsembleCtx c;
  PetscInt    M = 1, group_size = 0, inorm = INFL_ENSEMBLE_QUERY, K = 10, nshow = 5;
  PetscBool   save_members = PETSC_FALSE, save_all = PETSC_FALSE;
  InflData    train, test, query;
  int64_t     Nq, *qidx;
  char        spath[PETSC_MAX_PATH_LEN], selfpath[PETSC_MAX_PATH_LEN], rpath[PETSC_MAX_PATH_LEN], edir[PETSC_MAX_PATH_LEN];
  char      **paths;
  int        *status;
  PetscMPIInt rank;
  StagePrompts  prompts = {0};
  InflTokenizer tok     = NULL;

  PetscFunctionBegin;
  PetscCall(PetscMemzero(&c, sizeof(c)));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscStrncpy(c.outdir, "infl-out", sizeof(c.outdir)));
  PetscCall(InflOptionsCheckLength(comm, "-outdir", sizeof(c.outdir) - 64, "give a shorter directory"));
  PetscCall(InflOptionsCheckLength(comm, "-model", sizeof(c.model0) - 32, "give a shorter path"));
  PetscOptionsBegin(comm, NULL, "infl run -ensemble M", NULL);
  PetscCall(PetscOptionsInt("-ensemble", "models of the ensemble", NULL, M, &M, NULL));
  PetscCall(PetscOptionsString("-outdir", "directory of the study's outputs (the members' files in OUTDIR/ensemble)", NULL, c.outdir, c.outdir, sizeof(c.outdir), NULL));
  PetscCall(PetscOptionsString("-model", "the study's model (the first member): used if it exists, else trained there (default OUTDIR/model.safetensors)", NULL, c.model0, c.model0, sizeof(c.model0), NULL));
  PetscCall(PetscOptionsBool("-overwrite", "recompute every member, replacing existing outputs", NULL, c.overwrite, &c.overwrite, NULL));
  PetscCall(PetscOptionsEList("-ensemble_normalize", "per-model normalization before the mean: none, query (each query's scores divided by their RMS over the training set), model (the model's matrix by its RMS)", NULL, InflEnsembleNormalizeNames, 3, InflEnsembleNormalizeNames[inorm], &inorm, NULL));
  PetscCall(PetscOptionsBool("-ensemble_save_members", "also write every member's normalized scores to scores.h5 (/ensemble/member_scores (M, Q, N))", NULL, save_members, &save_members, NULL));
  PetscCall(PetscOptionsInt("-ensemble_group_size", "ranks per member (0: chosen so that every rank is busy, include/infl/eval.h)", NULL, group_size, &group_size, NULL));
  PetscCall(PetscOptionsInt("-score_topk", "proponents and opponents kept per query", NULL, K, &K, NULL));
  PetscCall(PetscOptionsBool("-score_save_all", "write the ensemble's full (Q, N) score matrix", NULL, save_all, &save_all, NULL));
  PetscCall(PetscOptionsString("-query_prompts", "language models: prompt/completion queries (docs/FORMATS.md) instead of -query", NULL, c.ppath, c.ppath, sizeof(c.ppath), NULL));
  PetscCall(PetscOptionsInt("-summary_queries", "queries shown in the printed summary", NULL, nshow, &nshow, NULL));
  PetscOptionsEnd();
  PetscCall(InflTrainOptionsFromOptions(comm, &c.topt));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "test", PETSC_FALSE, help, &test));
  PetscCall(DriverOpenData(comm, "query", PETSC_FALSE, help, &query));
  if (help) PetscFunctionReturn(0);
  {
    InflDataContent kind;
    PetscCall(InflDataGetContent(train, &kind));
    c.seq = (PetscBool)(kind == INFL_DATA_SEQUENCES);
  }
  PetscCheck(!c.ppath[0] || c.seq, comm, PETSC_ERR_ARG_INCOMP, "-query_prompts %s: prompt/completion queries are for language models (text: or tokens: training data), but -train holds rows of features", c.ppath);
  PetscCheck(!(c.ppath[0] && query), comm, PETSC_ERR_ARG_INCOMP, "give either -query (a data set, with -query_indices) or -query_prompts %s, not both", c.ppath);
  if (!query) query = test;
  PetscCheck(query || c.ppath[0], comm, PETSC_ERR_ARG_NULL, "infl run needs -query (or -test) data for the queries%s", c.seq ? ", or -query_prompts FILE" : "");
  PetscCheck(K >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_topk %d must be positive", (int)K);
  PetscCall(DriverCheckGroupSize(comm, "-ensemble_group_size", group_size));
  {
    PetscInt nd = 64;
    PetscCall(PetscOptionsGetIntArray(NULL, NULL, "-model_dims", c.dims, &nd, &c.dset));
    c.nd = nd;
  }
  if (!c.model0[0]) PetscCall(PetscSNPrintf(c.model0, sizeof(c.model0), c.seq ? "%s/model" : "%s/model.safetensors", c.outdir));
  PetscCall(PetscSNPrintf(edir, sizeof(edir), "%s/ensemble", c.outdir));
  if (rank == 0) {
    if (mkdir(c.outdir, 0775) != 0 && errno != EEXIST) edir[0] = 0;
    else if (mkdir(edir, 0775) != 0 && errno != EEXIST) edir[0] = 0;
  }
  InflCheckAll(comm, rank != 0 || edir[0], PETSC_ERR_FILE_OPEN, "-outdir %s: cannot create it or its subdirectory ensemble: %s", c.outdir, strerror(errno));
  PetscCallMPI(MPI_Barrier(comm));
  if (c.seq) { /* the queries' windows or prompts depend on the model: the study's model if it exists, else a fresh one */
    InflModel probe;
    if (InflFileExists(c.model0)) PetscCall(DriverLoadModel(comm, c.model0, &probe));
    else PetscCall(DriverNewGPT2(comm, c.topt.seed, &probe));
    if (c.ppath[0]) PetscCall(DriverLoadPrompts(comm, c.ppath, c.model0, probe, &prompts));
    else PetscCall(InflModelCheckData(probe, query));
    PetscCall(InflModelDestroy(&probe));
  }
  if (c.ppath[0]) { /* prompt q is query q */
    c.Q = prompts.Q;
    PetscCall(PetscMalloc1(c.Q, &qidx));
    for (PetscInt q = 0; q < c.Q; q++) qidx[q] = q;
  } else {
    PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
    PetscCall(DriverQueryIndices(comm, Nq, &c.Q, &qidx));
  }
  c.qidx = qidx;
  /* every option of the study is read now, so that a misspelled one stops it before any work */
  PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1")); /* the members' full matrices are combined */
  PetscCall(DriverStudyFitKey(comm, c.fit_key, sizeof(c.fit_key)));
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(PetscSNPrintf(spath, sizeof(spath), "%s/scores.h5", c.outdir));
  PetscCall(PetscSNPrintf(selfpath, sizeof(selfpath), "%s/self_influence.h5", c.outdir));
  PetscCall(PetscSNPrintf(rpath, sizeof(rpath), "%s/report.html", c.outdir));
  PetscCall(PetscMalloc2(M, &paths, M, &status));
  /* the outputs are checked and locked before any work: the members' files are in OUTDIR/ensemble, locked whole */
  PetscCall(DriverCheckOutputDirectory(comm, edir, PETSC_TRUE));
  if (!InflFileExists(c.model0)) PetscCall(c.seq ? DriverCheckOutputDirectory(comm, c.model0, PETSC_TRUE) : DriverCheckOutput(comm, c.model0, PETSC_TRUE));
  {
    char fp[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(fp, sizeof(fp), "%s/factors.h5", c.outdir));
    PetscCall(DriverCheckOutput(comm, fp, PETSC_TRUE));
  }
  for (PetscInt m = 0; m < M; m++) {
    char mp[PETSC_MAX_PATH_LEN], fp[PETSC_MAX_PATH_LEN], sp[PETSC_MAX_PATH_LEN];
    PetscCall(member_paths(&c, m, mp, fp, sp));
    PetscCall(PetscStrallocpy(sp, &paths[m]));
    status[m] = INFL_TASK_TODO;
  }
  PetscCall(DriverCheckOutput(comm, spath, PETSC_TRUE));
  PetscCall(DriverCheckOutput(comm, selfpath, PETSC_TRUE));
  PetscCall(DriverCheckOutput(comm, rpath, PETSC_TRUE));
  { /* the study's data sets, held while the members run on their own copies */
    InflData d[3] = {train, test, query};
    c.held        = 0;
    for (int i = 0; i < 3; i++) {
      size_t b;
      if (!d[i] || (i > 0 && d[i] == d[i - 1]) || (i > 1 && d[i] == d[0])) continue;
      PetscCall(InflDataGetBytes(d[i], &b));
      c.held += b;
    }
  }
  {
    InflTaskSet ts = {M, 0, "member", member_task, &c};
    PetscCall(InflTasksRun(comm, "infl run -ensemble", &ts, group_size, NULL, "", status, NULL));
  }
  {
    PetscInt     n = 0;
    const char **use;
    PetscCall(PetscMalloc1(M, &use));
    for (PetscInt m = 0; m < M; m++)
      if (status[m] == INFL_TASK_DONE) use[n++] = paths[m];
    PetscCheck(status[0] == INFL_TASK_DONE, comm, PETSC_ERR_FP, "the study's model (ensemble member 0) diverged in training; lower -train_lr");
    PetscCall(PetscPrintf(comm, "== ensemble: combining the scores of %d models (normalization %s)\n", (int)n, InflEnsembleNormalizeNames[inorm]));
    if (n < M) PetscCall(PetscPrintf(comm, "   (%d members diverged in training and are left out)\n", (int)(M - n)));
    PetscCall(InflEnsembleCombine(comm, n, use, (InflEnsembleNormalize)inorm, K, save_all, save_members, spath));
    PetscCall(PetscFree(use));
    PetscCall(PetscPrintf(comm, "wrote %s\n", spath));
  }
  { /* self-influence of the study's model, and the report */
    InflModel   model;
    InflEKFAC   ek;
    PetscBool   match;
    const char *hash, *thash;
    char        self_key[1024], fpath[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(fpath, sizeof(fpath), "%s/factors.h5", c.outdir));
    PetscCall(DriverLoadModel(comm, c.model0, &model));
    if (c.seq) { /* the study's data read for its model, and its tokenizer for the report */
      PetscCall(InflModelCheckData(model, train));
      if (!c.ppath[0]) PetscCall(InflModelCheckData(model, query));
      PetscCall(DriverModelTokenizer(comm, c.model0, model, &tok));
    }
    PetscCall(StageHoldData(train, test, query, PETSC_TRUE)); /* under -mem_limit: beside the factors and self */
    PetscCall(StageLoadFactorsForSelf(comm, fpath, model, train, &ek));
    PetscCall(InflModelGetHash(model, &hash));
    PetscCall(InflDataGetHash(train, &thash));
    PetscCall(InflEKFACGetKey(ek, PETSC_TRUE, self_key, sizeof(self_key)));
    PetscCall(DriverOutputMatches(comm, selfpath, hash, thash, "self_key", self_key, &match));
    if (match && !c.overwrite) PetscCall(PetscPrintf(comm, "== self: using %s\n", selfpath));
    else {
      PetscCall(PetscPrintf(comm, "== self\n"));
      PetscCall(InflPeakMemoryReset(NULL)); /* the stage's own peak */
      PetscCall(StageSelf(comm, model, ek, train, selfpath, PETSC_TRUE));
    }
    PetscCall(InflMemLimitSetHeld(0));
    PetscCall(DriverPrintSummary(comm, spath, c.seq ? tok : NULL, train, query, c.Q, qidx, c.ppath[0] ? &prompts : NULL, nshow));
    PetscCall(PetscPrintf(comm, "\noutputs: %s, %s, %s, %s (members in %s)\n", c.model0, fpath, spath, selfpath, edir));
    PetscCall(InflReportFromFiles(comm, spath, train, c.ppath[0] ? NULL : query, tok, selfpath, rpath, PETSC_TRUE));
    PetscCall(PetscPrintf(comm, "report: %s\n", rpath));
    PetscCall(InflEKFACDestroy(&ek));
    PetscCall(InflModelDestroy(&model));
  }
  for (PetscInt m = 0; m < M; m++) PetscCall(PetscFree(paths[m]));
  PetscCall(PetscFree2(paths, status));
  PetscCall(PetscFree(qidx));
  PetscCall(PetscFree3(prompts.offsets, prompts.tokens, prompts.targets));
  PetscCall(InflTokenizerDestroy(&tok));
  if (query != test) PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&test));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

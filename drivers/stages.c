/* The stages of an influence study, shared by their subcommands and by infl run. */
#include "driver.h"
#include "stages.h"
#include <infl/checkpoint.h>
#include <math.h>

/* Collective: run summary attributes on a finished output: wall time of the stage (max over ranks) and peak memory
 * per rank (max over ranks); the options and rank count are already in its provenance. */
static PetscErrorCode stage_summary(MPI_Comm comm, const char path[], PetscLogDouble seconds)
{
  hid_t  file;
  size_t peak;
  double v[2];

  PetscFunctionBegin;
  PetscCall(InflPeakMemory(&peak));
  v[0] = seconds;
  v[1] = (double)peak / (1024.0 * 1024.0);
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, comm));
  PetscCall(InflH5Open(comm, path, PETSC_TRUE, &file));
  PetscCall(InflH5SetAttrDouble(file, "/", "run_seconds", v[0]));
  PetscCall(InflH5SetAttrDouble(file, "/", "run_peak_memory_mib", v[1]));
  PetscCall(InflH5Close(&file));
  PetscFunctionReturn(0);
}

/* Push the log stage `name`, registered on first use (a process may run a stage several times: ensembles). */
static PetscErrorCode log_stage_push(const char name[])
{
  PetscLogStage stage;

  PetscFunctionBegin;
  PetscCall(PetscLogStageGetId(name, &stage));
  if (stage < 0) PetscCall(PetscLogStageRegister(name, &stage));
  PetscCall(PetscLogStagePush(stage));
  PetscFunctionReturn(0);
}

/* Collective: "STAGE: factor bytes per rank" of the layout of ek (infl/layout.h). */
static PetscErrorCode stage_factor_bytes(MPI_Comm comm, InflEKFAC ek, const char stage[])
{
  InflLayerLayout lay;
  PetscInt        G, E;
  size_t          mx, total;
  char            split[64] = "";

  PetscFunctionBegin;
  if (!ek) PetscFunctionReturn(0); /* TracIn: no factors */
  PetscCall(InflEKFACGetLayout(ek, &lay));
  if (!lay) PetscFunctionReturn(0);
  PetscCall(InflLayerLayoutGetBytes(lay, NULL, &mx, &total));
  PetscCall(InflLayerLayoutGetGroups(lay, &G, &E, NULL, NULL));
  if (InflLayerLayoutIsSplit(lay)) PetscCall(PetscSNPrintf(split, sizeof(split), ", each layer split over %d ranks", (int)E));
  PetscCall(PetscPrintf(comm, "%s: factor bytes per rank %.1f MiB (max over ranks; %.1f MiB in all, %d layer group%s%s)\n", stage, (double)mx / 1048576.0, (double)total / 1048576.0, (int)G, G > 1 ? "s" : "", split));
  PetscFunctionReturn(0);
}

PetscErrorCode StageFit(MPI_Comm comm, InflModel model, InflData train, const char out[], PetscBool overwrite, InflEKFAC *ek_out)
{
  InflEKFAC      ek;
  PetscLogDouble t0, t1;

  PetscFunctionBegin;
  PetscCall(log_stage_push("EK-FAC fit"));
  PetscCall(PetscTime(&t0));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFromOptions(ek));
  if (out && out[0]) PetscCall(InflEKFACSetCheckpoint(ek, out));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(PetscTime(&t1));
  PetscCall(InflEKFACView(ek, NULL));
  PetscCall(PetscPrintf(comm, "fit: %.2f s\n", t1 - t0));
  PetscCall(InflReportPeakMemory(comm, "fit"));
  PetscCall(stage_factor_bytes(comm, ek, "fit"));
  if (out && out[0]) {
    PetscCall(InflEKFACSave(ek, out, overwrite));
    PetscCall(stage_summary(comm, out, t1 - t0));
    PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  }
  PetscCall(PetscLogStagePop());
  if (ek_out) *ek_out = ek;
  else PetscCall(InflEKFACDestroy(&ek));
  PetscFunctionReturn(0);
}

/* The score stage with a created scorer (EK-FAC with ek; identity or TracIn, InflScorerSetTracIn, with ek NULL). */
static PetscErrorCode stage_score(MPI_Comm comm, InflScorer sc, InflModel model, InflEKFAC ek, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, const char out[], PetscBool overwrite, InflScorer *sc_out)
{
  PetscLogDouble t0, t1, t2;

  PetscFunctionBegin;
  PetscCall(log_stage_push("Score"));
  if (!prompts) PetscCall(InflModelCheckData(model, query)); /* sequence data: read for this model (its hash depends on it) */
  if (prompts) PetscCall(InflScorerSetQueryHash(sc, prompts->hash));
  else {
    const char *qh;
    PetscCall(InflDataGetHash(query, &qh));
    PetscCall(InflScorerSetQueryHash(sc, qh));
  }
  if (out && out[0]) PetscCall(InflScorerSetCheckpoint(sc, out));
  PetscCall(PetscTime(&t0));
  if (prompts) { /* query q is prompt q of the file; only its completion enters the loss */
    int64_t *idx;
    Q = prompts->Q;
    PetscCall(PetscMalloc1(Q, &idx));
    for (PetscInt q = 0; q < Q; q++) idx[q] = q;
    PetscCall(InflScorerSetQuerySequences(sc, model, ek, Q, prompts->offsets, prompts->tokens, prompts->targets, idx));
    PetscCall(PetscFree(idx));
  } else PetscCall(InflScorerSetQueryData(sc, model, ek, query, Q, qidx));
  PetscCall(PetscTime(&t1));
  PetscCall(InflScorerScore(sc, train));
  PetscCall(PetscTime(&t2));
  PetscCall(PetscPrintf(comm, "score: %d queries, query preconditioning %.2f s, scoring %.2f s\n", (int)Q, t1 - t0, t2 - t1));
  PetscCall(InflReportPeakMemory(comm, "score"));
  PetscCall(stage_factor_bytes(comm, ek, "score"));
  if (out && out[0]) {
    PetscCall(InflScorerSave(sc, out, overwrite));
    PetscCall(stage_summary(comm, out, t2 - t0));
    PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  }
  PetscCall(PetscLogStagePop());
  if (sc_out) *sc_out = sc;
  else PetscCall(InflScorerDestroy(&sc));
  PetscFunctionReturn(0);
}

/* What the score stage holds beside the factors it loads (InflEKFACSetLoadMemory): its Q preconditioned queries, the
 * model, the training data, -score_save_all's scores of this rank's shard and the query data (NULL: prompts). */
static PetscErrorCode score_load_memory(MPI_Comm comm, InflModel model, InflData train, InflData query, PetscInt Q, InflLayerLayoutStage *st)
{
  InflScorer probe;
  size_t     b, results;
  int64_t    start, count;
  PetscInt   L;

  PetscFunctionBegin;
  PetscCall(InflScorerCreate(comm, &probe));
  PetscCall(InflScorerSetFromOptions(probe));
  PetscCall(InflScorerGetQueryBytes(probe, model, Q, st));
  PetscCall(InflModelGetLayers(model, &L, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  PetscCall(InflScorerGetResultBytes(probe, Q, L, count, &results)); /* -score_save_all's scores of this rank's shard */
  PetscCall(InflScorerDestroy(&probe));
  st->other += InflModelParameterBytes(model); /* the model beside the factors (with its double copy in double precision) */
  PetscCall(InflDataGetBytes(train, &b));     /* the training data */
  st->other += b + results;
  if (query) { /* the query data, held while scoring (counted as InflScorerScore counts it) */
    PetscCall(InflDataGetBytes(query, &b));
    st->other += b;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode StageLoadFactors(MPI_Comm comm, const char path[], InflModel model, InflData train, InflData query, PetscInt Q, InflEKFAC *ek)
{
  InflLayerLayoutStage st;

  PetscFunctionBegin;
  PetscCall(score_load_memory(comm, model, train, query, Q, &st));
  PetscCall(InflEKFACCreate(comm, ek));
  PetscCall(InflEKFACSetLoadMemory(*ek, &st));
  PetscCall(InflEKFACLoad(*ek, path, model));
  PetscFunctionReturn(0);
}

PetscErrorCode StageLoadFactorsForSelf(MPI_Comm comm, const char path[], InflModel model, InflData train, InflEKFAC *ek)
{
  InflLayerLayoutStage st;
  InflPrecision        prec;
  PetscBool            seq;
  size_t               b;

  PetscFunctionBegin;
  PetscCall(InflModelGetPrecision(model, &prec));
  PetscCall(InflModelIsSequential(model, &seq));
  PetscCall(InflDataGetBytes(train, &b));
  PetscCall(PetscMemzero(&st, sizeof(st)));
  st.copies      = !seq && prec == INFL_PREC_SINGLE ? 1.25 : 1.0; /* 4 (na^2 + nd^2) of the float eigenbases */
  st.once_weight = (seq ? 2 : 1) * sizeof(double);                /* (Lambda + damping)^-1 (and a sequence's gradient) */
  st.other       = b + InflModelParameterBytes(model);
  PetscCall(InflEKFACCreate(comm, ek));
  PetscCall(InflEKFACSetLoadMemory(*ek, &st));
  PetscCall(InflEKFACLoad(*ek, path, model));
  PetscFunctionReturn(0);
}

PetscErrorCode StageHoldData(InflData train, InflData test, InflData query, PetscBool with_query)
{
  size_t held = 0, b;

  PetscFunctionBegin;
  if (test && test != train && test != query) {
    PetscCall(InflDataGetBytes(test, &b));
    held += b;
  }
  if (with_query && query && query != train) {
    PetscCall(InflDataGetBytes(query, &b));
    held += b;
  }
  PetscCall(InflMemLimitSetHeld(held));
  PetscFunctionReturn(0);
}

PetscErrorCode StageFitForScore(MPI_Comm comm, InflModel model, InflData train, const char out[], InflData query, PetscInt Q, InflEKFAC *ek)
{
  double    limit;
  PetscBool set;
  size_t    held = InflMemLimitGetHeld(), qb = 0;

  PetscFunctionBegin;
  PetscCall(InflGetMemLimit(comm, &limit, &set));
  if (!set) { /* the layout comes from -layer_groups and -layer_split alone: the same for both stages */
    PetscCall(StageFit(comm, model, train, out, PETSC_TRUE, ek));
    PetscFunctionReturn(0);
  }
  { /* a limit that no layout of the score stage holds is refused before the fit, not after it */
    InflEKFAC            probe;
    InflLayerLayoutStage st;
    PetscCall(score_load_memory(comm, model, train, query, Q, &st));
    PetscCall(InflEKFACCreate(comm, &probe));
    PetscCall(InflEKFACSetFromOptions(probe));
    PetscCall(InflEKFACSetLoadMemory(probe, &st));
    PetscCall(InflEKFACCheckLoadMemory(probe, model));
    PetscCall(InflEKFACDestroy(&probe));
  }
  if (query && query != train) PetscCall(InflDataGetBytes(query, &qb));
  PetscCall(InflMemLimitSetHeld(held + qb)); /* the fit runs beside the queries' data */
  PetscCall(StageFit(comm, model, train, out, PETSC_TRUE, NULL));
  PetscCall(InflMemLimitSetHeld(held));
  PetscCall(StageLoadFactors(comm, out, model, train, query, Q, ek));
  PetscFunctionReturn(0);
}

PetscErrorCode StageScore(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, const char out[], PetscBool overwrite, InflScorer *sc_out)
{
  InflScorer sc;

  PetscFunctionBegin;
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(stage_score(comm, sc, model, ek, train, query, Q, qidx, prompts, out, overwrite, sc_out));
  PetscFunctionReturn(0);
}

PetscErrorCode StageScoreTracIn(MPI_Comm comm, PetscInt C, const InflModel models[], const double eta[], InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, const char out[], PetscBool overwrite)
{
  InflScorer sc;

  PetscFunctionBegin;
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(InflScorerSetTracIn(sc, C, models, eta));
  PetscCall(stage_score(comm, sc, models[0], NULL, train, query, Q, qidx, prompts, out, overwrite, NULL));
  PetscFunctionReturn(0);
}

typedef struct {
  MPI_Comm       comm;
  InflModel      model;
  InflEKFAC      ek;             /* NULL: TracIn over the C models (models[0] = model) with weights eta */
  PetscInt       C;
  const InflModel *models;
  const double  *eta;
  InflCapture  **cap;            /* (C) */
  const char    *key;            /* identifies the computation (self_key) */
  InflData       train;
  const int64_t *y;              /* (count) class labels of rows; NULL for sequences */
  int64_t        start, count, N;
  double        *self;           /* (count) this rank's shard */
  const char    *mh, *th;        /* model and data hashes */
  const char    *tmp, *partial;  /* OUT.partial.tmp, OUT.partial */
  PetscInt       G;              /* layer groups of the factors (infl/layout.h) */
  PetscBool      split;          /* its layers split inside the groups */
} SelfCtx;

/* never a non-finite value in the output (the ranks agree on the error) */
static PetscErrorCode self_check(SelfCtx *c, int64_t lo, int64_t hi)
{
  PetscFunctionBegin;
  for (int64_t i = lo; i < hi; i++)
    PetscCheck(isfinite(c->self[i - c->start]), PETSC_COMM_SELF, PETSC_ERR_FP, "self-influence of training example %" PRId64 " is %g (non-finite): the model's gradients or (Lambda + damping)^-1 overflow (huge weights, damaged factors, or a damping too small for them); check the model, the factors and -ekfac_damping", i, c->self[i - c->start]);
  PetscFunctionReturn(0);
}

static PetscErrorCode self_chunk(void *ctx, int64_t lo, int64_t hi)
{
  SelfCtx *c = (SelfCtx *)ctx;

  PetscFunctionBegin;
  if (c->G > 1 || c->split) { /* captured now, scored by self_step with the layers' owners */
    PetscCall(InflModelCaptureShard(c->model, c->train, lo, hi, INFL_FISHER_EMPIRICAL, 0, c->cap[0]));
    PetscFunctionReturn(0);
  }
  if (c->ek) PetscCall(InflSelfInfluenceShard(c->model, c->ek, c->train, lo, hi, c->cap[0], c->self + (lo - c->start)));
  else PetscCall(InflTracInSelfInfluenceShard(c->C, c->models, c->eta, c->train, lo, hi, c->cap, c->self + (lo - c->start)));
  PetscCall(self_check(c, lo, hi));
  PetscFunctionReturn(0);
}

/* Several layer groups (EK-FAC only), after each round (collective): the owners' terms of the round's examples, summed. */
static PetscErrorCode self_step(void *ctx, int64_t lo, int64_t hi)
{
  SelfCtx *c = (SelfCtx *)ctx;
  double   dummy;

  PetscFunctionBegin;
  if (lo == hi) c->cap[0]->B = c->cap[0]->T = 0;
  PetscCall(InflSelfInfluenceGathered(c->ek, c->cap[0], lo < hi ? c->self + (lo - c->start) : &dummy));
  InflCallAll(c->comm, self_check(c, lo, hi));
  PetscFunctionReturn(0);
}

/* Collective: write the self-influence of the examples in `done` (the others are 0) to `path` via tmp. */
static PetscErrorCode self_write(SelfCtx *c, const char stage[], const InflRanges *done, const char path[])
{
  hid_t   file;
  int64_t dims[1] = {c->N};

  PetscFunctionBegin;
  PetscCall(InflH5Create(c->comm, c->tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, c->comm, stage, c->mh, c->th, NULL));
  PetscCall(InflH5SetAttrString(file, "/", "self_key", c->key));
  if (!c->ek) PetscCall(InflH5SetAttrString(file, "/", "method", "tracin: sum over checkpoints of eta_c ||g_c(m)||^2 (exact gradients)"));
  PetscCall(InflH5WriteRows(file, "/self_influence", H5T_NATIVE_DOUBLE, 1, dims, c->start, c->count, c->self));
  if (c->y) PetscCall(InflH5WriteRows(file, "/train_labels", H5T_NATIVE_INT64, 1, dims, c->start, c->count, c->y));
  PetscCall(InflRangesWrite(file, done));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(c->comm, c->tmp, path));
  PetscFunctionReturn(0);
}

static PetscErrorCode self_checkpoint(void *ctx, const InflRanges *done)
{
  SelfCtx *c = (SelfCtx *)ctx;

  PetscFunctionBegin;
  PetscCall(self_write(c, "self (partial)", done, c->partial));
  PetscFunctionReturn(0);
}

/* Self-influence with EK-FAC (ek) or TracIn over C models (ek NULL; model = models[0]). */
static PetscErrorCode stage_self(MPI_Comm comm, InflModel model, InflEKFAC ek, PetscInt C, const InflModel models[], const double eta[], InflData train, const char out[], PetscBool overwrite)
{
  int64_t        N, d, start, count;
  const int64_t *y;
  double        *self;
  PetscInt       chunk = 512;
  PetscLogDouble t0, t1;
  char           partial[PETSC_MAX_PATH_LEN], tmp[PETSC_MAX_PATH_LEN];
  hid_t          file;
  const char    *mh, *th;
  InflRanges     done = {0};
  InflCapture   *cap[INFL_TRACIN_MAX];
  char           key[1024];
  PetscBool      chunk_set;

  PetscFunctionBegin;
  if (ek) {
    C = 1;
    PetscCall(InflEKFACGetKey(ek, PETSC_TRUE, key, sizeof(key)));
  } else { /* TracIn: the checkpoints' hashes and learning rates */
    PetscCall(PetscStrncpy(key, "tracin", sizeof(key)));
    for (PetscInt c = 0; c < C; c++) {
      const char *h;
      PetscCall(InflModelGetHash(models[c], &h));
      PetscCall(PetscSNPrintf(key + strlen(key), sizeof(key) - strlen(key), " %.16s:%.17g", h, eta[c]));
    }
  }
  PetscCall(log_stage_push("Self-influence"));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-self_chunk", &chunk, &chunk_set));
  PetscCheck(chunk > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-self_chunk %d must be positive", (int)chunk);
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(InflModelCheckData(model, train)); /* sequence data: read for this model */
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, NULL, &y));
  PetscCall(InflModelGetHash(model, &mh));
  PetscCall(InflDataGetHash(train, &th));
  PetscCall(PetscCalloc1(PetscMax(count, 1), &self));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", out));
  if (InflFileExists(partial)) { /* resume */
    PetscCall(InflCheckpointOpen(comm, partial, "self (partial)", mh, th, NULL, &file));
    PetscCall(InflCheckpointCheckAttr(comm, file, partial, "self_key", key));
    PetscCall(InflRangesRead(file, &done));
    PetscCall(InflH5ReadRows(file, "/self_influence", H5T_NATIVE_DOUBLE, start, count, self));
    PetscCall(InflCheckpointCheckFinite(comm, partial, "/self_influence", 1, start, count, self));
    PetscCall(InflH5Close(&file));
    PetscCall(PetscPrintf(comm, "self: resuming from %s (%" PRId64 " of %" PRId64 " done)\n", partial, InflRangesCount(&done), N));
  }
  {
    PetscInt        L, maxd = 1, rows, G = 1, E = 1;
    InflLinear     *lin;
    InflLayerLayout lay = NULL;
    size_t          mine = 0;
    PetscCall(InflModelGetLayers(model, &L, &lin));
    if (ek) PetscCall(InflEKFACGetLayout(ek, &lay)); /* TracIn (ek NULL): no factors, one group */
    if (lay) {
      PetscCall(InflLayerLayoutGetGroups(lay, &G, &E, NULL, NULL));
      if (!InflLayerLayoutIsSplit(lay)) E = 1;
      PetscCall(InflLayerLayoutGetBytes(lay, &mine, NULL, NULL));
    } else if (ek) mine = InflEKFACBytes(model);
    if (ek) { /* beside the factors: (Lambda + damping)^-1 of a layer, the float eigenbases (InflEKFACSelfInfluenceCapture) */
      size_t scratch;
      PetscCall(InflEKFACGetSelfInfluenceBytes(ek, model, &scratch));
      mine += scratch;
    }
    PetscCall(InflModelGetMaxRows(model, &rows));
    for (PetscInt l = 0; l < L; l++) maxd = PetscMax(maxd, PetscMax(lin[l].din + 1, lin[l].dout));
    /* per example: its capture and the model's workspace, rows of scratch in double, and two (dout, din+1)
     * matrices of a sequence's gradient (counted per example: a bound) */
    /* (TracIn: C captures; with several layer groups the owners hold G captures' rows of their layers: counted as G whole captures;
     * split layers: the rows of the E ranks of the group and their rotations, 5 x E G rows in double) */
    PetscCall(InflModelGetChunk(model, comm, "infl self", chunk_set, count, (size_t)count * (sizeof(float) * d + sizeof(int64_t) + sizeof(double)) + mine, (G > 1 ? G + 1 : C) * InflModelCaptureBytes(model) + sizeof(double) * ((G > 1 ? G : 1) * 4 * (size_t)maxd * rows + 1) + (E > 1 ? sizeof(double) * 5 * (size_t)E * G * maxd * rows : 0), &chunk));
  }
  for (PetscInt c = 0; c < C; c++) PetscCall(InflCaptureCreate(ek ? model : models[c], chunk, &cap[c]));
  PetscCall(PetscTime(&t0));
  {
    SelfCtx         c    = {comm, model, ek, C, models, eta, cap, key, train, y, start, count, N, self, mh, th, tmp, partial, 1, PETSC_FALSE};
    InflChunkLoop   loop = {self_chunk, self_checkpoint, &c, NULL};
    InflLayerLayout lay  = NULL;
    PetscCall(InflModelGetExampleUnit(model, &loop.unit));
    if (ek) PetscCall(InflEKFACGetLayout(ek, &lay));
    if (lay) PetscCall(InflLayerLayoutGetGroups(lay, &c.G, NULL, NULL, NULL));
    if (lay) c.split = InflLayerLayoutIsSplit(lay);
    PetscCall(InflRunChunksStep(comm, "infl self", start, count, chunk, &done, &loop, c.G > 1 || c.split ? self_step : NULL, partial));
    if (ek) PetscCall(InflEKFACFreeScratch(ek)); /* the group rows of the largest chunk */
    PetscCall(InflRangesReset(&done));
    PetscCall(InflRangesAdd(&done, 0, N)); /* all done */
    PetscCall(self_write(&c, "self", &done, out));
  }
  PetscCall(InflRemoveAll(comm, partial));
  PetscCall(PetscTime(&t1));
  PetscCall(PetscPrintf(comm, "self-influence of %" PRId64 " training examples: %.2f s\n", N, t1 - t0));
  PetscCall(InflReportPeakMemory(comm, "self"));
  PetscCall(stage_factor_bytes(comm, ek, "self"));
  PetscCall(stage_summary(comm, out, t1 - t0));
  PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  for (PetscInt c = 0; c < C; c++) PetscCall(InflCaptureDestroy(&cap[c]));
  PetscCall(InflRangesDestroy(&done));
  PetscCall(PetscFree(self));
  PetscCall(PetscLogStagePop());
  PetscFunctionReturn(0);
}

PetscErrorCode StageSelf(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData train, const char out[], PetscBool overwrite)
{
  PetscFunctionBegin;
  PetscCall(stage_self(comm, model, ek, 1, NULL, NULL, train, out, overwrite));
  PetscFunctionReturn(0);
}

PetscErrorCode StageSelfTracIn(MPI_Comm comm, PetscInt C, const InflModel models[], const double eta[], InflData train, const char out[], PetscBool overwrite)
{
  PetscFunctionBegin;
  PetscCheck(C >= 1 && C <= INFL_TRACIN_MAX, comm, PETSC_ERR_ARG_OUTOFRANGE, "%d TracIn checkpoints: give 1 to %d (-checkpoints c1,c2,...)", (int)C, INFL_TRACIN_MAX);
  for (PetscInt c = 0; c < C; c++) PetscCheck(isfinite(eta[c]) && eta[c] > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "the learning rate of TracIn checkpoint %d is %g: give a positive one (-tracin_lr)", (int)c + 1, eta[c]);
  PetscCall(stage_self(comm, models[0], NULL, C, models, eta, train, out, overwrite));
  PetscFunctionReturn(0);
}

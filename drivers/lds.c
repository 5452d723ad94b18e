/* infl lds: the linear datamodeling score of scores files, measured by retraining the study's model on random subsets
 * of its training data (rank groups train different subsets at once; include/infl/eval.h). */
#include "driver.h"
#include <infl/eval.h>
#include <infl/checkpoint.h>
#include <infl/report.h>
#include <math.h>
#include <string.h>

#define LDS_MAX_SCORES 64

typedef struct {
  InflData          train, query;
  PetscInt          Q, nd;
  const int64_t    *qidx;
  PetscInt          dims[64];
  InflTrainOptions  topt;
  PetscBool         seed_per_model; /* -lds_model_seeds per_subset */
  const char       *out;            /* training checkpoints go to OUT.subset-J.partial */
  const char       *what;           /* "subset", "loo", ... in the tags of the data subsets */
  /* the training set of task t: n[t] examples idx[t] with labels lab (NULL: the data's) */
  int64_t          *n, **idx;
  const int64_t    *lab;
} RetrainCtx;

/* Task t: train the study's MLP on its training subset on the group's communicator, then the query losses. */
static PetscErrorCode retrain_task(void *ctx, MPI_Comm comm, PetscInt t, double loss[])
{
  RetrainCtx      *c = (RetrainCtx *)ctx;
  InflData         sub;
  InflModel        model;
  InflTrainOptions topt = c->topt;
  char             tag[64], ckpt[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(tag, sizeof(tag), "%s %d", c->what, (int)t));
  PetscCall(InflDataCreateSubset(c->train, comm, c->n[t], c->idx[t], c->lab, tag, &sub));
  if (c->seed_per_model) topt.seed = c->topt.seed + 1 + (uint64_t)t;
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetFromOptions(model));
  PetscCall(InflModelSetUpMLP(model, c->nd, c->dims, INFL_ACT_RELU, topt.seed));
  PetscCall(PetscSNPrintf(ckpt, sizeof(ckpt), "%s.%s-%d", c->out, c->what, (int)t));
  PetscCall(PetscStrncpy(topt.checkpoint, ckpt, sizeof(topt.checkpoint)));
  PetscCall(InflModelTrain(model, sub, NULL, &topt));
  PetscCall(InflQueryLosses(model, c->query, c->Q, c->qidx, loss));
  {
    char partial[PETSC_MAX_PATH_LEN + 16];
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ckpt));
    PetscCall(InflRemoveAll(comm, partial));
  }
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&sub));
  PetscFunctionReturn(0);
}

/* A scores file read for the LDS: its queries, hashes and full matrix. */
typedef struct {
  PetscInt Q;
  int64_t  N, *qidx;
  char     qhash[80], thash[80];
  double  *scores; /* (Q, N) */
} ScoresFile;

/* Collective: read `path`; error naming it and -score_save_all when it has no /scores matrix. */
static PetscErrorCode scores_read(MPI_Comm comm, const char path[], ScoresFile *s)
{
  hid_t   file;
  int     nd;
  int64_t dims[8];

  PetscFunctionBegin;
  InflCheckAll(comm, InflFileExists(path), PETSC_ERR_FILE_OPEN, "-scores %s: the file does not exist; give scores files written by infl score (or infl run) with -score_save_all", path);
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5GetDims(file, "/scores", &nd, dims));
  PetscCheck(nd == 2, comm, PETSC_ERR_ARG_WRONG, "-scores %s holds no full score matrix /scores (Q, N) (only the top-k lists): the LDS sums the scores of every member of a subset; compute the scores again with -score_save_all", path);
  PetscCall(InflH5GetDims(file, "/query_indices", &nd, dims + 2));
  PetscCheck(nd == 1 && dims[2] == dims[0], comm, PETSC_ERR_FILE_UNEXPECTED, "-scores %s: /query_indices has not the %" PRId64 " entries of the rows of /scores; the file is damaged: compute it again", path, dims[0]);
  s->Q = (PetscInt)dims[0];
  s->N = dims[1];
  PetscCall(PetscMalloc2(s->Q, &s->qidx, (size_t)s->Q * s->N, &s->scores));
  PetscCall(InflH5ReadArray(file, "/query_indices", H5T_NATIVE_INT64, 1, NULL, NULL, s->qidx));
  PetscCall(InflH5ReadArray(file, "/scores", H5T_NATIVE_DOUBLE, 2, NULL, NULL, s->scores));
  PetscCall(InflH5GetAttrString(file, "/", "query_sha256", s->qhash, sizeof(s->qhash)));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", s->thash, sizeof(s->thash)));
  PetscCall(InflH5Close(&file));
  PetscFunctionReturn(0);
}

static PetscErrorCode scores_free(ScoresFile *s)
{
  PetscFunctionBegin;
  PetscCall(PetscFree2(s->qidx, s->scores));
  PetscFunctionReturn(0);
}

/* The subsets' results, as lds.h5 holds them. */
typedef struct {
  PetscInt J, Q;
  int64_t  N;
  uint8_t *masks;   /* (J, N) */
  double  *losses;  /* (J, Q), NaN for a diverged subset */
  int     *status;  /* (J) INFL_TASK_DONE or INFL_TASK_DIVERGED */
  int64_t *qidx;    /* (Q) */
  char     qhash[80], thash[80], key[2048];
} LdsData;

static PetscErrorCode lds_read(MPI_Comm comm, const char path[], LdsData *d)
{
  hid_t   file;
  int     nd;
  int64_t dims[8];

  PetscFunctionBegin;
  InflCheckAll(comm, InflFileExists(path), PETSC_ERR_FILE_OPEN, "-lds %s: the file does not exist; make it with infl lds -options_file STUDY -lds_subsets J -out %s", path, path);
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5GetDims(file, "/masks", &nd, dims));
  PetscCheck(nd == 2, comm, PETSC_ERR_FILE_UNEXPECTED, "%s holds no /masks (J, N): it is not a file of infl lds", path);
  d->J = (PetscInt)dims[0];
  d->N = dims[1];
  PetscCall(InflH5GetDims(file, "/query_indices", &nd, dims));
  PetscCheck(nd == 1, comm, PETSC_ERR_FILE_UNEXPECTED, "%s holds no /query_indices: it is not a file of infl lds", path);
  d->Q = (PetscInt)dims[0];
  PetscCall(PetscMalloc4((size_t)d->J * d->N, &d->masks, (size_t)d->J * d->Q, &d->losses, d->J, &d->status, d->Q, &d->qidx));
  {
    int64_t dm[2] = {d->J, d->N}, dl[2] = {d->J, d->Q}, dj[1] = {d->J}, dq[1] = {d->Q};
    PetscCall(InflH5ReadArray(file, "/masks", H5T_NATIVE_UINT8, 2, dm, NULL, d->masks));
    PetscCall(InflH5ReadArray(file, "/query_losses", H5T_NATIVE_DOUBLE, 2, dl, NULL, d->losses));
    PetscCall(InflH5ReadArray(file, "/status", H5T_NATIVE_INT, 1, dj, NULL, d->status));
    PetscCall(InflH5ReadArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dq, NULL, d->qidx));
  }
  PetscCall(InflH5GetAttrString(file, "/", "query_sha256", d->qhash, sizeof(d->qhash)));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", d->thash, sizeof(d->thash)));
  PetscCall(InflH5GetAttrString(file, "/", "lds_key", d->key, sizeof(d->key)));
  PetscCall(InflH5Close(&file));
  PetscFunctionReturn(0);
}

static PetscErrorCode lds_free(LdsData *d)
{
  PetscFunctionBegin;
  PetscCall(PetscFree4(d->masks, d->losses, d->status, d->qidx));
  PetscFunctionReturn(0);
}

/* The LDS of every scores file against d (checked to be about the same training data and queries). */
static PetscErrorCode print_lds(MPI_Comm comm, const LdsData *d, const char lds_path[], PetscInt ns, char *spaths[])
{
  PetscBool *valid;
  PetscInt   nvalid = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(d->J, &valid));
  for (PetscInt j = 0; j < d->J; j++) {
    valid[j] = d->status[j] == INFL_TASK_DONE ? PETSC_TRUE : PETSC_FALSE;
    nvalid += valid[j];
  }
  if (nvalid < d->J) PetscCall(PetscPrintf(comm, "%d of %d subsets diverged in training and are left out\n", (int)(d->J - nvalid), (int)d->J));
  for (PetscInt f = 0; f < ns; f++) {
    ScoresFile s;
    double     lds, *pq, var = 0;
    PetscInt   nq;
    PetscCall(scores_read(comm, spaths[f], &s));
    PetscCheck(s.N == d->N, comm, PETSC_ERR_ARG_INCOMP, "-scores %s scores %" PRId64 " training examples but %s has subsets of %" PRId64 ": give scores computed on the study's training data", spaths[f], s.N, lds_path, d->N);
    PetscCheck(!s.thash[0] || !d->thash[0] || !strcmp(s.thash, d->thash), comm, PETSC_ERR_ARG_INCOMP, "-scores %s was computed on other training data (train_sha256 %.16s...) than %s (%.16s...): give scores of the study's training data", spaths[f], s.thash, lds_path, d->thash);
    PetscCheck(s.Q == d->Q, comm, PETSC_ERR_ARG_INCOMP, "-scores %s has %d queries but %s measured the losses of %d: the scores files must share the queries of lds.h5 (compute them with the same -query_indices)", spaths[f], (int)s.Q, lds_path, (int)d->Q);
    for (PetscInt q = 0; q < s.Q; q++) PetscCheck(s.qidx[q] == d->qidx[q], comm, PETSC_ERR_ARG_INCOMP, "-scores %s: query %d is example %" PRId64 " of the query data, but in %s it is %" PRId64 ": the scores files must share the queries of lds.h5 (compute them with the same -query_indices)", spaths[f], (int)q, s.qidx[q], lds_path, d->qidx[q]);
    PetscCheck(!s.qhash[0] || !d->qhash[0] || !strcmp(s.qhash, d->qhash), comm, PETSC_ERR_ARG_INCOMP, "-scores %s was computed on other query data (query_sha256 %.16s...) than %s (%.16s...): give scores of the same -query data", spaths[f], s.qhash, lds_path, d->qhash);
    PetscCall(PetscMalloc1(s.Q, &pq));
    PetscCall(InflLDSCompute(d->J, d->N, d->Q, d->masks, valid, d->losses, s.scores, pq, &lds, &nq));
    for (PetscInt q = 0; q < s.Q; q++)
      if (!isnan(pq[q])) var += (pq[q] - lds) * (pq[q] - lds);
    var = nq > 1 ? var / (nq - 1) : 0;
    PetscCall(PetscPrintf(comm, "LDS %.6f +- %.4f (standard error over %d queries, %d subsets)  %s\n", lds, sqrt(var / PetscMax(nq, 1)), (int)nq, (int)nvalid, spaths[f]));
    if (nq < s.Q) PetscCall(PetscPrintf(comm, "  (%d queries left out: their losses or predictions are the same under every subset)\n", (int)(s.Q - nq)));
    PetscCall(PetscFree(pq));
    PetscCall(scores_free(&s));
  }
  PetscCall(PetscFree(valid));
  PetscFunctionReturn(0);
}

/* Collective: write lds.h5 (via OUT.tmp and a rename). */
static PetscErrorCode lds_write(MPI_Comm comm, const char out[], const LdsData *d, const InflTrainOptions *topt, double fraction, PetscInt seed, const char recipe[])
{
  char    tmp[PETSC_MAX_PATH_LEN + 8];
  hid_t   file;
  int64_t dm[2] = {d->J, d->N}, dl[2] = {d->J, d->Q}, dj[1] = {d->J}, dq[1] = {d->Q};

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", out));
  PetscCall(InflH5Create(comm, tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, comm, "lds", NULL, d->thash, d->qhash));
  PetscCall(InflH5SetAttrString(file, "/", "lds_key", d->key));
  PetscCall(InflH5SetAttrString(file, "/", "recipe", recipe));
  PetscCall(InflH5SetAttrInt(file, "/", "subsets", d->J));
  PetscCall(InflH5SetAttrInt(file, "/", "subset_size", InflSubsetSize(d->N, fraction)));
  PetscCall(InflH5SetAttrDouble(file, "/", "fraction", fraction));
  PetscCall(InflH5SetAttrInt(file, "/", "seed", seed));
  PetscCall(InflH5SetAttrString(file, "/", "sign", "LDS = mean over queries of Spearman(sum of the subset's scores, -query loss); positive score = proponent"));
  PetscCall(InflH5WriteArray(file, "/masks", H5T_NATIVE_UINT8, 2, dm, d->masks));
  PetscCall(InflH5WriteArray(file, "/query_losses", H5T_NATIVE_DOUBLE, 2, dl, d->losses));
  PetscCall(InflH5WriteArray(file, "/status", H5T_NATIVE_INT, 1, dj, d->status));
  PetscCall(InflH5WriteArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dq, d->qidx));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(comm, tmp, out));
  PetscFunctionReturn(0);
}

/* -scores a.h5,b.h5 into paths (at most LDS_MAX_SCORES). */
static PetscErrorCode scores_list(MPI_Comm comm, PetscInt *n, char *paths[])
{
  PetscBool set;
  PetscInt  k = LDS_MAX_SCORES;

  PetscFunctionBegin;
  PetscCall(PetscOptionsGetStringArray(NULL, NULL, "-scores", paths, &k, &set));
  *n = set ? k : 0;
  PetscFunctionReturn(0);
}

/* The recipe of the subset models, one line: what lds_key and the file record. */
static PetscErrorCode recipe_text(const RetrainCtx *c, char text[], size_t len)
{
  const char *optn[] = {"adam", "sgd", "adamw"};
  char        dims[512] = "";

  PetscFunctionBegin;
  for (PetscInt i = 0; i < c->nd; i++) PetscCall(PetscSNPrintf(dims + strlen(dims), sizeof(dims) - strlen(dims), "%s%d", i ? "," : "", (int)c->dims[i]));
  PetscCall(PetscSNPrintf(text, len, "mlp %s relu; %s epochs %d batch %d lr %.17g momentum %.17g betas %.17g %.17g eps %.17g wd %.17g matrices_only %d schedule %d warmup %d lr_min %.17g clip %.17g seed %llu%s; precision from -model_precision", dims, optn[c->topt.optimizer], (int)c->topt.epochs, (int)c->topt.batch, c->topt.lr, c->topt.momentum, c->topt.beta1, c->topt.beta2, c->topt.eps, c->topt.weight_decay, (int)c->topt.decay_matrices_only, (int)c->topt.schedule, (int)c->topt.warmup, c->topt.lr_min, c->topt.clip, (unsigned long long)c->topt.seed, c->seed_per_model ? " + 1 + subset" : ""));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverLDS(MPI_Comm comm, PetscBool help)
{
  char        out[PETSC_MAX_PATH_LEN] = "lds.h5", lpath[PETSC_MAX_PATH_LEN] = "", *spaths[LDS_MAX_SCORES] = {0}, recipe[2048], seeds[32] = "same";
  PetscInt    J = 0, ns = 0, seed = 0, group_size = 0;
  int64_t     Nq;
  double      fraction = 0.5;
  PetscBool   overwrite = PETSC_FALSE, dset, reuse = PETSC_FALSE;
  InflData    train = NULL, test = NULL, query = NULL;
  RetrainCtx  c = {0};
  LdsData     d = {0};
  int64_t    *qidx = NULL, N;
  const char *seedn[] = {"same", "per_subset"};
  PetscInt    iseed = 0;

  PetscFunctionBegin;
  PetscCall(InflOptionsCheckLength(comm, "-out", sizeof(out) - 32, "give a shorter path"));
  PetscCall(InflOptionsCheckLength(comm, "-lds", sizeof(lpath) - 32, "give a shorter path"));
  PetscOptionsBegin(comm, NULL, "infl lds: linear datamodeling score by retraining on random subsets", NULL);
  PetscCall(PetscOptionsString("-out", "lds.h5 to write (subset masks, query losses; reused when it exists for the same settings)", NULL, out, out, sizeof(out), NULL));
  PetscCall(PetscOptionsString("-lds", "an existing lds.h5: only print the LDS of the -scores files against it (no training data needed)", NULL, lpath, lpath, sizeof(lpath), NULL));
  PetscCall(PetscOptionsInt("-lds_subsets", "J: random training subsets, one model trained on each", NULL, J, &J, NULL));
  PetscCall(PetscOptionsReal("-lds_fraction", "fraction of the training set in every subset (exactly round(fraction N) examples)", NULL, fraction, &fraction, NULL));
  PetscCall(PetscOptionsInt("-lds_seed", "seed of the subset masks (counter-based: the same at any rank count)", NULL, seed, &seed, NULL));
  PetscCall(PetscOptionsEList("-lds_model_seeds", "initialization and shuffling seed of the subset models: the study's -train_seed for every subset, or -train_seed + 1 + subset", NULL, seedn, 2, seedn[0], &iseed, NULL));
  PetscCall(PetscOptionsInt("-lds_group_size", "ranks per model (0: chosen so that every rank is busy, include/infl/eval.h)", NULL, group_size, &group_size, NULL));
  PetscCall(PetscOptionsBool("-overwrite", "replace an existing -out made with other settings", NULL, overwrite, &overwrite, NULL));
  {
    char list[4096] = "";
    PetscCall(PetscOptionsString("-scores", "scores files (comma-separated) written with -score_save_all: the LDS of each is printed", NULL, list, list, sizeof(list), NULL));
  }
  PetscOptionsEnd();
  PetscCall(PetscStrncpy(seeds, seedn[iseed], sizeof(seeds)));
  if (!help) PetscCall(scores_list(comm, &ns, spaths));
  if (lpath[0] && !help) { /* evaluation of an existing file only */
    PetscCall(DriverCheckUnusedOptions(comm));
    PetscCheck(ns > 0, comm, PETSC_ERR_ARG_NULL, "-lds %s: give the scores files to evaluate with -scores a.h5,b.h5", lpath);
    PetscCall(lds_read(comm, lpath, &d));
    PetscCall(print_lds(comm, &d, lpath, ns, spaths));
    PetscCall(lds_free(&d));
    for (PetscInt f = 0; f < ns; f++) PetscCall(PetscFree(spaths[f]));
    PetscFunctionReturn(0);
  }
  PetscCall(InflTrainOptionsFromOptions(comm, &c.topt));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "test", PETSC_FALSE, help, &test));
  PetscCall(DriverOpenData(comm, "query", PETSC_FALSE, help, &query));
  {
    PetscInt nd = 64;
    PetscCall(PetscOptionsGetIntArray(NULL, NULL, "-model_dims", c.dims, &nd, &dset));
    c.nd = nd;
  }
  if (help) {
    PetscCall(PetscPrintf(comm, "  -model_dims <784,256,256,10>: the study's MLP (default input,256,256,classes)\n  -query_indices <0:8>: the queries when no -scores file is given (else the scores files' queries)\n"));
    PetscFunctionReturn(0);
  }
  { /* the study's options of other stages (infl run's) are not misspellings */
    InflScorer probe;
    InflReport rprobe;
    PetscBool  set;
    PetscCall(InflScorerCreate(comm, &probe));
    PetscCall(InflScorerSetFromOptions(probe));
    PetscCall(InflScorerDestroy(&probe));
    PetscCall(InflReportCreate(comm, &rprobe));
    PetscCall(InflReportSetFromOptions(rprobe));
    PetscCall(InflReportDestroy(&rprobe));
    PetscCall(DriverStudyOptionsUsed(comm));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-outdir", &set));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-model", &set));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-summary_queries", &set));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-query_indices", &set)); /* the scores files' queries decide when given */
  }
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(DriverRequireRows(comm, "infl lds", train));
  if (!query) query = test;
  PetscCheck(query, comm, PETSC_ERR_ARG_NULL, "infl lds needs the study's -query (or -test) data: the losses of its queries are measured under every subset model");
  PetscCall(DriverRequireRows(comm, "infl lds", query));
  PetscCheck(J >= 3, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_subsets %d: give at least 3 subsets (the LDS is a rank correlation across them; 50-100 are usual)", (int)J);
  PetscCheck(fraction > 0 && fraction < 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_fraction %g must lie in (0, 1) (0.5 is usual)", fraction);
  PetscCheck(seed >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_seed %d must be >= 0", (int)seed);
  PetscCall(InflDataGetSizes(train, &N, NULL, NULL));
  PetscCheck(InflSubsetSize(N, fraction) >= 1 && InflSubsetSize(N, fraction) < N, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_fraction %g of %" PRId64 " training examples selects %" PRId64 ": give a fraction that keeps some and leaves some out", fraction, N, InflSubsetSize(N, fraction));
  PetscCall(DriverMLPDims(comm, train, c.dims, &c.nd, dset));
  { /* the queries: those of the scores files (which must agree), else -query_indices */
    InflData qd = query;
    PetscCall(InflDataGetSizes(qd, &Nq, NULL, NULL));
    if (ns > 0) {
      ScoresFile s0;
      PetscCall(scores_read(comm, spaths[0], &s0));
      d.Q = s0.Q;
      PetscCall(PetscMalloc1(d.Q, &qidx));
      PetscCall(PetscArraycpy(qidx, s0.qidx, d.Q));
      for (PetscInt q = 0; q < d.Q; q++) PetscCheck(qidx[q] >= 0 && qidx[q] < Nq, comm, PETSC_ERR_ARG_INCOMP, "-scores %s: query index %" PRId64 " is outside the -query data (%" PRId64 " examples): give the query data the scores were computed on", spaths[0], qidx[q], Nq);
      PetscCall(scores_free(&s0));
    } else PetscCall(DriverQueryIndices(comm, Nq, &d.Q, &qidx));
  }
  c.train = train;
  c.query = query;
  c.Q     = d.Q;
  c.qidx  = qidx;
  c.seed_per_model = iseed == 1 ? PETSC_TRUE : PETSC_FALSE;
  c.out   = out;
  c.what  = "subset";
  PetscCall(recipe_text(&c, recipe, sizeof(recipe)));
  d.J = J;
  d.N = N;
  d.qidx = qidx;
  {
    const char *th, *qh;
    InflHash    h;
    char        qhex[65];
    PetscCall(InflDataGetHash(train, &th));
    PetscCall(InflDataGetHash(query, &qh));
    PetscCall(PetscStrncpy(d.thash, th, sizeof(d.thash)));
    PetscCall(PetscStrncpy(d.qhash, qh, sizeof(d.qhash)));
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, qidx, sizeof(int64_t) * (size_t)d.Q));
    PetscCall(InflHashFinal(&h, qhex));
    PetscCall(PetscSNPrintf(d.key, sizeof(d.key), "subsets %d fraction %.17g seed %d model_seeds %s train %.16s query %.16s indices %.16s recipe %s", (int)J, fraction, (int)seed, seeds, th, qh, qhex, recipe));
  }
  if (InflFileExists(out) && !overwrite) { /* a finished file of the same settings is reused */
    LdsData e = {0};
    PetscCall(lds_read(comm, out, &e));
    reuse = (PetscBool)!strcmp(e.key, d.key);
    PetscCall(lds_free(&e));
    PetscCheck(reuse, comm, PETSC_ERR_FILE_OPEN, "output %s exists and was made with other settings (subsets, fraction, seeds, data, queries or training recipe); pass -overwrite to replace it, or choose another -out", out);
    PetscCall(PetscPrintf(comm, "== lds: using %s (made with these settings)\n", out));
  } else {
    char     partial[PETSC_MAX_PATH_LEN + 16];
    InflTaskSet ts;
    PetscCall(DriverCheckOutput(comm, out, overwrite));
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
    PetscCall(PetscMalloc4((size_t)J * N, &d.masks, (size_t)J * d.Q, &d.losses, J, &d.status, J, &c.n));
    PetscCall(PetscMalloc1(J, &c.idx));
    for (PetscInt j = 0; j < J; j++) {
      const uint8_t *m = d.masks + (size_t)j * N;
      int64_t        k = 0;
      PetscCall(InflSubsetMask((uint64_t)seed, j, N, fraction, d.masks + (size_t)j * N));
      c.n[j] = InflSubsetSize(N, fraction);
      PetscCall(PetscMalloc1(c.n[j], &c.idx[j]));
      for (int64_t i = 0; i < N; i++)
        if (m[i]) c.idx[j][k++] = i;
    }
    PetscCall(PetscPrintf(comm, "infl lds: %d subsets of %" PRId64 " of the %" PRId64 " training examples, %d queries; recipe: %s\n", (int)J, c.n[0], N, (int)d.Q, recipe));
    PetscCall(InflTasksRestore(comm, "infl lds", J, d.Q, partial, d.key, d.status, d.losses));
    {
      PetscInt done = 0;
      for (PetscInt j = 0; j < J; j++) done += d.status[j] != INFL_TASK_TODO;
      if (done) PetscCall(PetscPrintf(comm, "infl lds: resuming from %s (%d of %d subsets finished)\n", partial, (int)done, (int)J));
    }
    ts = (InflTaskSet){J, d.Q, "subset", retrain_task, &c};
    PetscCall(InflTasksRun(comm, "infl lds", &ts, group_size, partial, d.key, d.status, d.losses));
    for (PetscInt j = 0; j < J; j++)
      if (d.status[j] != INFL_TASK_DONE)
        for (PetscInt q = 0; q < d.Q; q++) d.losses[(size_t)j * d.Q + q] = NAN;
    PetscCall(lds_write(comm, out, &d, &c.topt, fraction, seed, recipe));
    PetscCall(InflRemoveAll(comm, partial));
    PetscCall(PetscPrintf(comm, "wrote %s\n", out));
    for (PetscInt j = 0; j < J; j++) PetscCall(PetscFree(c.idx[j]));
    PetscCall(PetscFree(c.idx));
    PetscCall(PetscFree4(d.masks, d.losses, d.status, c.n));
  }
  if (ns > 0) {
    LdsData e = {0};
    PetscCall(lds_read(comm, out, &e));
    PetscCall(print_lds(comm, &e, out, ns, spaths));
    PetscCall(lds_free(&e));
  }
  for (PetscInt f = 0; f < ns; f++) PetscCall(PetscFree(spaths[f]));
  PetscCall(PetscFree(qidx));
  if (query != test) PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&test));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

/* infl lds: the linear datamodeling score of scores files, measured by retraining the study's model on random subsets
 * of its training data (rank groups train different subsets at once; include/infl/eval.h). */
#include "stages.h"
#include <infl/eval.h>
#include <infl/checkpoint.h>
#include <infl/report.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

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
  /* leave-one-out: task t masks training example exclude[t] (-1: none) and trains with seed seed[t] */
  const int64_t    *exclude;
  const uint64_t   *seed;
  /* a language-model study (token-sequence data): GPT-2s of the -gpt2_* options; prompt/completion queries or NULL */
  PetscBool           seq;
  const StagePrompts *prompts;
  char                arch[160]; /* the architecture in the recipe */
} RetrainCtx;

/* Task t: train the study's model (an MLP, or a GPT-2 on token sequences) on its training subset on the group's
 * communicator, then the query losses (InflQueryLosses; of the completions for prompt/completion queries). */
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
  if (c->seed) topt.seed = c->seed[t];
  if (c->exclude && c->exclude[t] >= 0) {
    topt.nexclude = 1;
    topt.exclude  = &c->exclude[t];
  }
  if (c->seq) {
    PetscCall(DriverNewGPT2(comm, topt.seed, &model));
    PetscCall(InflModelCheckData(model, sub));
  } else {
    PetscCall(InflModelCreate(comm, &model));
    PetscCall(InflModelSetFromOptions(model));
    PetscCall(InflModelSetUpMLP(model, c->nd, c->dims, INFL_ACT_RELU, topt.seed));
  }
  PetscCall(PetscSNPrintf(ckpt, sizeof(ckpt), "%s.%s-%d", c->out, c->what, (int)t));
  PetscCall(PetscStrncpy(topt.checkpoint, ckpt, sizeof(topt.checkpoint)));
  PetscCall(InflModelTrain(model, sub, NULL, &topt));
  if (c->prompts) PetscCall(InflQuerySequenceLosses(model, c->Q, c->prompts->offsets, c->prompts->tokens, c->prompts->targets, loss));
  else PetscCall(InflQueryLosses(model, c->query, c->Q, c->qidx, loss));
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

/* What lds.h5 holds: up to three sections, each with its own key (a finished section of the same settings is reused,
 * the others computed; sections not asked for are kept). */
typedef struct {
  PetscInt J, Q;    /* subsets (J = 0: no such section) and queries (shared by subsets and leave-one-out) */
  int64_t  N;
  uint8_t *masks;   /* (J, N) */
  double  *losses;  /* (J, Q), NaN for a diverged subset */
  int     *status;  /* (J) INFL_TASK_DONE or INFL_TASK_DIVERGED */
  int64_t *qidx;    /* (Q) */
  double   fraction;
  int64_t  seed;
  char     qhash[80], thash[80], key[2048], recipe[2048];
  /* leave-one-out (K = 0: none): S seeds x (the full model, then one model per left-out example) */
  PetscInt K, S;
  int64_t *loo_idx;    /* (K) */
  double  *loo_losses; /* (S, K+1, Q) */
  int     *loo_status; /* (S, K+1) */
  double  *loo_change; /* (K, Q) loss without the example - loss with it, mean over the seeds where both trained */
  char     loo_key[2048];
  /* mislabel detection (mN = 0: none) */
  int64_t  mN;
  PetscInt T;          /* top fractions */
  uint8_t *flipped;    /* (mN) */
  int64_t *labels;     /* (mN) the corrupted labels */
  double  *self[2];    /* (mN) self-influence: EK-FAC, identity (NULL: not computed) */
  double  *top;        /* (T) fractions of the training set */
  double  *found[2];   /* (T) fraction of the flipped examples in the top, by self[0] and self[1] */
  double   mfraction;
  int64_t  mseed;
  char     mis_key[2048];
} LdsData;

static PetscErrorCode lds_free(LdsData *d)
{
  PetscFunctionBegin;
  PetscCall(PetscFree(d->masks));
  PetscCall(PetscFree(d->losses));
  PetscCall(PetscFree(d->status));
  PetscCall(PetscFree(d->qidx));
  PetscCall(PetscFree(d->loo_idx));
  PetscCall(PetscFree(d->loo_losses));
  PetscCall(PetscFree(d->loo_status));
  PetscCall(PetscFree(d->loo_change));
  PetscCall(PetscFree(d->flipped));
  PetscCall(PetscFree(d->labels));
  PetscCall(PetscFree(d->top));
  for (int k = 0; k < 2; k++) {
    PetscCall(PetscFree(d->self[k]));
    PetscCall(PetscFree(d->found[k]));
  }
  PetscFunctionReturn(0);
}

/* Allocate the arrays of the sections of d->J, d->K (with d->S, d->Q) and d->mN (with d->T) that are not yet (each
 * array on its own: sections move between the file read and the one written). */
static PetscErrorCode lds_alloc(LdsData *d, PetscBool identity)
{
  PetscFunctionBegin;
  if (d->J > 0 && !d->masks) {
    PetscCall(PetscMalloc1((size_t)d->J * d->N, &d->masks));
    PetscCall(PetscMalloc1((size_t)d->J * d->Q, &d->losses));
    PetscCall(PetscMalloc1(d->J, &d->status));
  }
  if (d->K > 0 && !d->loo_losses) {
    if (!d->loo_idx) PetscCall(PetscMalloc1(d->K, &d->loo_idx));
    PetscCall(PetscMalloc1((size_t)d->S * (d->K + 1) * d->Q, &d->loo_losses));
    PetscCall(PetscMalloc1(d->S * (d->K + 1), &d->loo_status));
    PetscCall(PetscMalloc1((size_t)d->K * d->Q, &d->loo_change));
  }
  if (d->mN > 0 && !d->flipped) {
    PetscCall(PetscMalloc1(d->mN, &d->flipped));
    PetscCall(PetscMalloc1(d->mN, &d->labels));
    PetscCall(PetscMalloc1(d->T, &d->top));
    for (int k = 0; k < (identity ? 2 : 1); k++) {
      PetscCall(PetscMalloc1(d->mN, &d->self[k]));
      PetscCall(PetscMalloc1(d->T, &d->found[k]));
    }
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode lds_read(MPI_Comm comm, const char path[], LdsData *d)
{
  hid_t   file;
  int     nd, ndl, ndm, ndi;
  int64_t dims[8], dl[8], dm[8], di[8];

  PetscFunctionBegin;
  InflCheckAll(comm, InflFileExists(path), PETSC_ERR_FILE_OPEN, "-lds %s: the file does not exist; make it with infl lds -options_file STUDY -lds_subsets J -out %s", path, path);
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5GetDims(file, "/masks", &nd, dims));
  PetscCall(InflH5GetDims(file, "/loo/indices", &ndl, dl));
  PetscCall(InflH5GetDims(file, "/mislabel/flipped", &ndm, dm));
  PetscCheck(nd == 2 || ndl == 1 || ndm == 1, comm, PETSC_ERR_FILE_UNEXPECTED, "%s holds no /masks (J, N), /loo or /mislabel: it is not a file of infl lds", path);
  PetscCall(InflH5GetDims(file, "/query_indices", &ndi, di));
  PetscCheck(ndi == 1 || (nd != 2 && ndl != 1), comm, PETSC_ERR_FILE_UNEXPECTED, "%s holds no /query_indices: it is not a file of infl lds", path);
  d->J  = nd == 2 ? (PetscInt)dims[0] : 0;
  d->N  = nd == 2 ? dims[1] : 0;
  d->Q  = ndi == 1 ? (PetscInt)di[0] : 0;
  d->K  = ndl == 1 ? (PetscInt)dl[0] : 0;
  d->mN = ndm == 1 ? dm[0] : 0;
  if (d->K > 0) {
    PetscCall(InflH5GetDims(file, "/loo/status", &nd, dims));
    PetscCheck(nd == 2 && dims[1] == d->K + 1, comm, PETSC_ERR_FILE_UNEXPECTED, "%s: /loo/status is not (seeds, K + 1) for the %d entries of /loo/indices; the file is damaged: make it again", path, (int)d->K);
    d->S = (PetscInt)dims[0];
  }
  if (d->mN > 0) {
    PetscCall(InflH5GetDims(file, "/mislabel/top", &nd, dims));
    PetscCheck(nd == 1, comm, PETSC_ERR_FILE_UNEXPECTED, "%s: /mislabel has no /mislabel/top; the file is damaged: make it again", path);
    d->T = (PetscInt)dims[0];
    PetscCall(InflH5GetDims(file, "/mislabel/self_influence_identity", &nd, dims));
  }
  PetscCall(lds_alloc(d, (PetscBool)(d->mN > 0 && nd == 1)));
  if (d->Q > 0) {
    int64_t dq[1] = {d->Q};
    PetscCall(PetscMalloc1(d->Q, &d->qidx));
    PetscCall(InflH5ReadArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dq, NULL, d->qidx));
  }
  if (d->J > 0) {
    int64_t dm2[2] = {d->J, d->N}, dl2[2] = {d->J, d->Q}, dj[1] = {d->J};
    PetscCall(InflH5ReadArray(file, "/masks", H5T_NATIVE_UINT8, 2, dm2, NULL, d->masks));
    PetscCall(InflH5ReadArray(file, "/query_losses", H5T_NATIVE_DOUBLE, 2, dl2, NULL, d->losses));
    PetscCall(InflH5ReadArray(file, "/status", H5T_NATIVE_INT, 1, dj, NULL, d->status));
    PetscCall(InflH5GetAttrString(file, "/", "lds_key", d->key, sizeof(d->key)));
    PetscCall(InflH5GetAttrString(file, "/", "recipe", d->recipe, sizeof(d->recipe)));
    if (d->recipe[0]) { /* written by infl lds (not a hand-made file of tests/ref) */
      PetscCall(InflH5GetAttrDouble(file, "/", "fraction", &d->fraction));
      PetscCall(InflH5GetAttrInt(file, "/", "seed", &d->seed));
    }
  }
  if (d->K > 0) {
    int64_t dk[1] = {d->K}, dls[3] = {d->S, d->K + 1, d->Q}, dst[2] = {d->S, d->K + 1}, dc[2] = {d->K, d->Q};
    PetscCall(InflH5ReadArray(file, "/loo/indices", H5T_NATIVE_INT64, 1, dk, NULL, d->loo_idx));
    PetscCall(InflH5ReadArray(file, "/loo/query_losses", H5T_NATIVE_DOUBLE, 3, dls, NULL, d->loo_losses));
    PetscCall(InflH5ReadArray(file, "/loo/status", H5T_NATIVE_INT, 2, dst, NULL, d->loo_status));
    PetscCall(InflH5ReadArray(file, "/loo/loss_change", H5T_NATIVE_DOUBLE, 2, dc, NULL, d->loo_change));
    PetscCall(InflH5GetAttrString(file, "/loo", "loo_key", d->loo_key, sizeof(d->loo_key)));
  }
  if (d->mN > 0) {
    int64_t dn[1] = {d->mN}, dt[1] = {d->T};
    PetscCall(InflH5ReadArray(file, "/mislabel/flipped", H5T_NATIVE_UINT8, 1, dn, NULL, d->flipped));
    PetscCall(InflH5GetDims(file, "/mislabel/labels", &nd, dims));
    if (nd == 1) PetscCall(InflH5ReadArray(file, "/mislabel/labels", H5T_NATIVE_INT64, 1, dn, NULL, d->labels));
    else PetscCall(PetscFree(d->labels)); /* token sequences: corrupted documents, no labels */
    PetscCall(InflH5ReadArray(file, "/mislabel/top", H5T_NATIVE_DOUBLE, 1, dt, NULL, d->top));
    PetscCall(InflH5ReadArray(file, "/mislabel/self_influence", H5T_NATIVE_DOUBLE, 1, dn, NULL, d->self[0]));
    PetscCall(InflH5ReadArray(file, "/mislabel/detected", H5T_NATIVE_DOUBLE, 1, dt, NULL, d->found[0]));
    if (d->self[1]) {
      PetscCall(InflH5ReadArray(file, "/mislabel/self_influence_identity", H5T_NATIVE_DOUBLE, 1, dn, NULL, d->self[1]));
      PetscCall(InflH5ReadArray(file, "/mislabel/detected_identity", H5T_NATIVE_DOUBLE, 1, dt, NULL, d->found[1]));
    }
    PetscCall(InflH5GetAttrString(file, "/mislabel", "mislabel_key", d->mis_key, sizeof(d->mis_key)));
    PetscCall(InflH5GetAttrDouble(file, "/mislabel", "fraction", &d->mfraction));
    PetscCall(InflH5GetAttrInt(file, "/mislabel", "seed", &d->mseed));
  }
  PetscCall(InflH5GetAttrString(file, "/", "query_sha256", d->qhash, sizeof(d->qhash)));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", d->thash, sizeof(d->thash)));
  PetscCall(InflH5Close(&file));
  PetscFunctionReturn(0);
}

/* Errors unless scores file s (read from spath) is about the training data and queries of d (read from lds_path). */
static PetscErrorCode scores_check(MPI_Comm comm, const ScoresFile *s, const char spath[], const LdsData *d, int64_t N, const char lds_path[])
{
  PetscFunctionBegin;
  PetscCheck(s->N == N, comm, PETSC_ERR_ARG_INCOMP, "-scores %s scores %" PRId64 " training examples but %s has subsets of %" PRId64 ": give scores computed on the study's training data", spath, s->N, lds_path, N);
  PetscCheck(!s->thash[0] || !d->thash[0] || !strcmp(s->thash, d->thash), comm, PETSC_ERR_ARG_INCOMP, "-scores %s was computed on other training data (train_sha256 %.16s...) than %s (%.16s...): give scores of the study's training data", spath, s->thash, lds_path, d->thash);
  PetscCheck(s->Q == d->Q, comm, PETSC_ERR_ARG_INCOMP, "-scores %s has %d queries but %s measured the losses of %d: the scores files must share the queries of lds.h5 (compute them with the same -query_indices)", spath, (int)s->Q, lds_path, (int)d->Q);
  for (PetscInt q = 0; q < s->Q; q++) PetscCheck(s->qidx[q] == d->qidx[q], comm, PETSC_ERR_ARG_INCOMP, "-scores %s: query %d is example %" PRId64 " of the query data, but in %s it is %" PRId64 ": the scores files must share the queries of lds.h5 (compute them with the same -query_indices)", spath, (int)q, s->qidx[q], lds_path, d->qidx[q]);
  PetscCheck(!s->qhash[0] || !d->qhash[0] || !strcmp(s->qhash, d->qhash), comm, PETSC_ERR_ARG_INCOMP, "-scores %s was computed on other query data (query_sha256 %.16s...) than %s (%.16s...): give scores of the same -query data", spath, s->qhash, lds_path, d->qhash);
  PetscFunctionReturn(0);
}

/* The LDS (subsets) and leave-one-out correlations of every scores file against d; the mislabel detection of d. */
static PetscErrorCode print_eval(MPI_Comm comm, const LdsData *d, const char lds_path[], PetscInt ns, char *spaths[])
{
  PetscBool *valid;
  PetscInt   nvalid = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(d->J + 1, &valid));
  for (PetscInt j = 0; j < d->J; j++) {
    valid[j] = d->status[j] == INFL_TASK_DONE ? PETSC_TRUE : PETSC_FALSE;
    nvalid += valid[j];
  }
  if (nvalid < d->J) PetscCall(PetscPrintf(comm, "%d of %d subsets diverged in training and are left out\n", (int)(d->J - nvalid), (int)d->J));
  if (d->K > 0) {
    PetscInt bad = 0, nc = 0;
    double   mabs = 0;
    for (PetscInt i = 0; i < d->S * (d->K + 1); i++) bad += d->loo_status[i] != INFL_TASK_DONE;
    for (size_t i = 0; i < (size_t)d->K * d->Q; i++)
      if (isfinite(d->loo_change[i])) {
        mabs += fabs(d->loo_change[i]);
        nc++;
      }
    PetscCall(PetscPrintf(comm, "leave-one-out: %d training examples x %d queries, %d seed%s; mean |loss change| %.4g%s\n", (int)d->K, (int)d->Q, (int)d->S, d->S > 1 ? "s" : "", nc ? mabs / nc : 0.0, bad ? " (some models diverged and are left out)" : ""));
    if (d->S > 1) { /* the reproducibility of the changes: seed 0 against seed 1 */
      double  *a, *b, r;
      PetscInt n = 0;
      PetscCall(PetscMalloc2((size_t)d->K * d->Q, &a, (size_t)d->K * d->Q, &b));
      for (PetscInt k = 0; k < d->K; k++)
        for (PetscInt q = 0; q < d->Q; q++) {
          const double *L0 = d->loo_losses, *L1 = d->loo_losses + (size_t)(d->K + 1) * d->Q;
          a[n] = L0[(size_t)(k + 1) * d->Q + q] - L0[q];
          b[n] = L1[(size_t)(k + 1) * d->Q + q] - L1[q];
          if (isfinite(a[n]) && isfinite(b[n])) n++;
        }
      PetscCall(InflPearson(n, a, b, &r));
      PetscCall(PetscPrintf(comm, "  loss changes of seed 0 against seed 1: Pearson %.4f over %d pairs (their reproducibility across training runs)\n", r, (int)n));
      PetscCall(PetscFree2(a, b));
    }
  }
  for (PetscInt f = 0; f < ns && (d->J > 0 || d->K > 0); f++) {
    ScoresFile s;
    PetscCall(scores_read(comm, spaths[f], &s));
    PetscCall(scores_check(comm, &s, spaths[f], d, d->J > 0 ? d->N : s.N, lds_path));
    if (d->J > 0) {
      double   lds, *pq, var = 0;
      PetscInt nq;
      PetscCall(PetscMalloc1(s.Q, &pq));
      PetscCall(InflLDSCompute(d->J, d->N, d->Q, d->masks, valid, d->losses, s.scores, pq, &lds, &nq));
      for (PetscInt q = 0; q < s.Q; q++)
        if (!isnan(pq[q])) var += (pq[q] - lds) * (pq[q] - lds);
      var = nq > 1 ? var / (nq - 1) : 0;
      PetscCall(PetscPrintf(comm, "LDS %.6f +- %.4f (standard error over %d queries, %d subsets)  %s\n", lds, sqrt(var / PetscMax(nq, 1)), (int)nq, (int)nvalid, spaths[f]));
      if (nq < s.Q) PetscCall(PetscPrintf(comm, "  (%d queries left out: their losses or predictions are the same under every subset)\n", (int)(s.Q - nq)));
      PetscCall(PetscFree(pq));
    }
    if (d->K > 0) {
      double   r, rho;
      PetscInt np;
      PetscCall(InflLOOCorrelation(d->K, d->loo_idx, d->Q, s.N, d->loo_change, s.scores, &r, &rho, &np));
      PetscCall(PetscPrintf(comm, "LOO Pearson %.6f Spearman %.6f (%d pairs of %d examples x %d queries)  %s\n", r, rho, (int)np, (int)d->K, (int)d->Q, spaths[f]));
    }
    PetscCall(scores_free(&s));
  }
  if (d->mN > 0) {
    int64_t nf = 0;
    for (int64_t i = 0; i < d->mN; i++) nf += d->flipped[i] != 0;
    PetscCall(PetscPrintf(comm, "mislabel detection: %" PRId64 " of %" PRId64 " %s (fraction %g); fraction of them found in the top x%% by self-influence\n", nf, d->mN, d->labels ? "labels flipped" : "documents (windows) corrupted", d->mfraction));
    for (PetscInt t = 0; t < d->T; t++) PetscCall(PetscPrintf(comm, "mislabel top %.1f%%: EK-FAC %.6f  identity %s%.6f  random %.6f\n", 100 * d->top[t], d->found[0][t], d->self[1] ? "" : "(not computed) ", d->self[1] ? d->found[1][t] : NAN, (double)InflSubsetSize(d->mN, d->top[t]) / (double)d->mN));
  }
  PetscCall(PetscFree(valid));
  PetscFunctionReturn(0);
}

/* Collective: write lds.h5 (via OUT.partial.tmp and a rename) with every section of d. */
static PetscErrorCode lds_write(MPI_Comm comm, const char out[], const LdsData *d)
{
  char  tmp[PETSC_MAX_PATH_LEN + 16];
  hid_t file;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", out));
  PetscCall(InflH5Create(comm, tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, comm, "lds", NULL, d->thash, d->Q > 0 ? d->qhash : NULL));
  if (d->Q > 0) {
    int64_t dq[1] = {d->Q};
    PetscCall(InflH5WriteArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dq, d->qidx));
  }
  if (d->J > 0) {
    int64_t dm[2] = {d->J, d->N}, dl[2] = {d->J, d->Q}, dj[1] = {d->J};
    PetscCall(InflH5SetAttrString(file, "/", "lds_key", d->key));
    PetscCall(InflH5SetAttrString(file, "/", "recipe", d->recipe));
    PetscCall(InflH5SetAttrInt(file, "/", "subsets", d->J));
    PetscCall(InflH5SetAttrInt(file, "/", "subset_size", InflSubsetSize(d->N, d->fraction)));
    PetscCall(InflH5SetAttrDouble(file, "/", "fraction", d->fraction));
    PetscCall(InflH5SetAttrInt(file, "/", "seed", d->seed));
    PetscCall(InflH5SetAttrString(file, "/", "sign", "LDS = mean over queries of Spearman(sum of the subset's scores, -query loss); positive score = proponent"));
    PetscCall(InflH5WriteArray(file, "/masks", H5T_NATIVE_UINT8, 2, dm, d->masks));
    PetscCall(InflH5WriteArray(file, "/query_losses", H5T_NATIVE_DOUBLE, 2, dl, d->losses));
    PetscCall(InflH5WriteArray(file, "/status", H5T_NATIVE_INT, 1, dj, d->status));
  }
  if (d->K > 0) {
    int64_t dk[1] = {d->K}, dls[3] = {d->S, d->K + 1, d->Q}, dst[2] = {d->S, d->K + 1}, dc[2] = {d->K, d->Q};
    PetscCall(InflH5WriteArray(file, "/loo/indices", H5T_NATIVE_INT64, 1, dk, d->loo_idx));
    PetscCall(InflH5WriteArray(file, "/loo/query_losses", H5T_NATIVE_DOUBLE, 3, dls, d->loo_losses));
    PetscCall(InflH5WriteArray(file, "/loo/status", H5T_NATIVE_INT, 2, dst, d->loo_status));
    PetscCall(InflH5WriteArray(file, "/loo/loss_change", H5T_NATIVE_DOUBLE, 2, dc, d->loo_change));
    PetscCall(InflH5SetAttrString(file, "/loo", "loo_key", d->loo_key));
    PetscCall(InflH5SetAttrInt(file, "/loo", "seeds", d->S));
    PetscCall(InflH5SetAttrString(file, "/loo", "sign", "loss_change = query loss of the model trained without the example - that of the full model (mean over seeds); positive score = proponent = removing it raises the loss"));
  }
  if (d->mN > 0) {
    int64_t dn[1] = {d->mN}, dt[1] = {d->T}, nf = 0;
    for (int64_t i = 0; i < d->mN; i++) nf += d->flipped[i] != 0;
    PetscCall(InflH5WriteArray(file, "/mislabel/flipped", H5T_NATIVE_UINT8, 1, dn, d->flipped));
    if (d->labels) PetscCall(InflH5WriteArray(file, "/mislabel/labels", H5T_NATIVE_INT64, 1, dn, d->labels));
    PetscCall(InflH5WriteArray(file, "/mislabel/top", H5T_NATIVE_DOUBLE, 1, dt, d->top));
    PetscCall(InflH5WriteArray(file, "/mislabel/self_influence", H5T_NATIVE_DOUBLE, 1, dn, d->self[0]));
    PetscCall(InflH5WriteArray(file, "/mislabel/detected", H5T_NATIVE_DOUBLE, 1, dt, d->found[0]));
    if (d->self[1]) {
      PetscCall(InflH5WriteArray(file, "/mislabel/self_influence_identity", H5T_NATIVE_DOUBLE, 1, dn, d->self[1]));
      PetscCall(InflH5WriteArray(file, "/mislabel/detected_identity", H5T_NATIVE_DOUBLE, 1, dt, d->found[1]));
    }
    PetscCall(InflH5SetAttrString(file, "/mislabel", "mislabel_key", d->mis_key));
    PetscCall(InflH5SetAttrDouble(file, "/mislabel", "fraction", d->mfraction));
    PetscCall(InflH5SetAttrInt(file, "/mislabel", "seed", d->mseed));
    PetscCall(InflH5SetAttrInt(file, "/mislabel", "flipped_count", nf));
    PetscCall(InflH5SetAttrString(file, "/mislabel", "method", d->labels ? "flipped labels (InflMislabel), the model retrained on them, examples ranked by self-influence (EK-FAC; identity: damping 1e8 times EK-FAC at damping 1e8, i.e. the squared gradient norm), detected = flipped found in the top fraction / flipped" : "corrupted documents (InflDataCreateCorrupted: the tokens of each chosen window randomly permuted), the model retrained on them, windows ranked by self-influence (EK-FAC; identity: damping 1e8 times EK-FAC at damping 1e8, i.e. the squared gradient norm), detected = corrupted found in the top fraction / corrupted"));
  }
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
  PetscCall(DriverCheckListLength(comm, "-scores", LDS_MAX_SCORES, "scores files"));
  PetscCall(PetscOptionsGetStringArray(NULL, NULL, "-scores", paths, &k, &set));
  *n = set ? k : 0;
  PetscFunctionReturn(0);
}

/* The recipe of the subset models, one line: with exact, what lds_key and the file record (numbers as %.17g, so that
 * files written before still match), else as printed (numbers as the shortest string that reads back the same). */
static PetscErrorCode recipe_text(const RetrainCtx *c, PetscBool exact, char text[], size_t len)
{
  const char  *optn[] = {"adam", "sgd", "adamw"};
  const double v[8]   = {c->topt.lr, c->topt.momentum, c->topt.beta1, c->topt.beta2, c->topt.eps, c->topt.weight_decay, c->topt.lr_min, c->topt.clip};
  char         dims[512] = "", n[8][48];

  PetscFunctionBegin;
  if (c->seq) PetscCall(PetscStrncpy(dims, c->arch, sizeof(dims)));
  else {
    PetscCall(PetscStrncpy(dims, "mlp ", sizeof(dims)));
    for (PetscInt i = 0; i < c->nd; i++) PetscCall(PetscSNPrintf(dims + strlen(dims), sizeof(dims) - strlen(dims), "%s%d", i ? "," : "", (int)c->dims[i]));
    PetscCall(PetscStrlcat(dims, " relu", sizeof(dims)));
  }
  for (int i = 0; i < 8; i++) {
    if (exact) snprintf(n[i], sizeof(n[i]), "%.17g", v[i]);
    else InflDoubleStringShortest(v[i], n[i], sizeof(n[i]));
  }
  PetscCall(PetscSNPrintf(text, len, "%s; %s epochs %d batch %d lr %s momentum %s betas %s %s eps %s wd %s matrices_only %d schedule %d warmup %d lr_min %s clip %s seed %llu%s; precision from -model_precision", dims, optn[c->topt.optimizer], (int)c->topt.epochs, (int)c->topt.batch, n[0], n[1], n[2], n[3], n[4], n[5], (int)c->topt.decay_matrices_only, (int)c->topt.schedule, (int)c->topt.warmup, n[6], n[7], (unsigned long long)c->topt.seed, c->seed_per_model ? " + 1 + subset" : ""));
  PetscFunctionReturn(0);
}

/* Collective.  The training labels of `train` (N), read in blocks. */
static PetscErrorCode read_labels(InflData train, int64_t N, int64_t y[])
{
  int64_t d, *idx;
  float  *x;
  const PetscInt B = 1024;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(train, NULL, &d, NULL));
  PetscCall(PetscMalloc2((size_t)B * d, &x, B, &idx));
  for (int64_t i0 = 0; i0 < N; i0 += B) {
    PetscInt n = (PetscInt)PetscMin(B, N - i0);
    for (PetscInt k = 0; k < n; k++) idx[k] = i0 + k;
    PetscCall(InflDataGetExamples(train, n, idx, x, y + i0));
  }
  PetscCall(PetscFree2(x, idx));
  PetscFunctionReturn(0);
}

/* Collective.  Self-influence of every example of `data` under model and ek into self (N): the file `path` when it
 * holds them for this model, data and damping (an interrupted run), else StageSelf (resumable) writes it. */
static PetscErrorCode self_influence(MPI_Comm comm, InflModel model, InflEKFAC ek, InflData data, const char path[], int64_t N, double self[])
{
  const char *mh, *th;
  char        key[1024];
  PetscBool   match;
  hid_t       file;
  int64_t     dn[1] = {N};

  PetscFunctionBegin;
  PetscCall(InflModelGetHash(model, &mh));
  PetscCall(InflDataGetHash(data, &th));
  PetscCall(InflEKFACGetKey(ek, PETSC_TRUE, key, sizeof(key)));
  PetscCall(DriverOutputMatches(comm, path, mh, th, "self_key", key, &match));
  if (!match) PetscCall(StageSelf(comm, model, ek, data, path, PETSC_TRUE));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5ReadArray(file, "/self_influence", H5T_NATIVE_DOUBLE, 1, dn, NULL, self));
  PetscCall(InflH5Close(&file));
  PetscFunctionReturn(0);
}

/* Collective.  Mislabel detection: flip d->mfraction of the labels (InflMislabel, seed), train the study's MLP on the
 * corrupted set with all ranks (model, factors and self-influence kept in files named PREFIX.* so that a rerun
 * resumes), rank the examples by self-influence (EK-FAC; with identity also damping 1e8 times the EK-FAC value at
 * damping 1e8, the squared gradient norm to a relative 1e-8 max Lambda), and fill d's mislabel section. */
static PetscErrorCode mislabel_run(MPI_Comm comm, const RetrainCtx *c, uint64_t seed, const char prefix[], const char fit_key[], PetscBool identity, LdsData *d)
{
  const int64_t N = d->mN, C = c->seq ? 0 : c->dims[c->nd - 1];
  int64_t      *y, *idx;
  InflData      sub;
  InflModel     model;
  InflEKFAC     ek;
  char          mpath[PETSC_MAX_PATH_LEN], fpath[PETSC_MAX_PATH_LEN], spath[PETSC_MAX_PATH_LEN];
  const char   *mh, *th;
  PetscBool     match;

  PetscFunctionBegin;
  PetscCall(PetscMalloc2(N, &y, N, &idx));
  if (c->seq) { /* corrupted documents: the chosen windows' tokens permuted */
    PetscCall(PetscFree(d->labels));
    PetscCall(InflMislabelSelect(seed, N, d->mfraction, d->flipped));
    PetscCall(InflDataCreateCorrupted(c->train, comm, seed, d->flipped, "mislabel", &sub));
  } else {
    PetscCall(read_labels(c->train, N, y));
    PetscCall(InflMislabel(seed, N, C, d->mfraction, y, d->labels, d->flipped));
    for (int64_t i = 0; i < N; i++) idx[i] = i;
    PetscCall(InflDataCreateSubset(c->train, comm, N, idx, d->labels, "mislabel", &sub));
  }
  PetscCall(PetscSNPrintf(mpath, sizeof(mpath), c->seq ? "%s-model" : "%s.safetensors", prefix));
  PetscCall(PetscSNPrintf(fpath, sizeof(fpath), "%s-factors.h5", prefix));
  if (InflFileExists(mpath)) {
    PetscCall(PetscPrintf(comm, "== lds mislabel: using %s\n", mpath));
    PetscCall(DriverLoadModel(comm, mpath, &model));
  } else {
    PetscCall(PetscPrintf(comm, "== lds mislabel: training on the corrupted %s\n", c->seq ? "documents" : "labels"));
    if (c->seq) PetscCall(DriverTrainGPT2(comm, sub, NULL, &c->topt, mpath, &model));
    else PetscCall(DriverTrainMLP(comm, sub, NULL, c->nd, c->dims, &c->topt, mpath, &model));
  }
  PetscCall(InflModelGetHash(model, &mh));
  PetscCall(InflDataGetHash(sub, &th));
  PetscCall(DriverOutputMatches(comm, fpath, mh, th, "fit_key", fit_key, &match));
  if (match) {
    PetscCall(InflEKFACCreate(comm, &ek));
    PetscCall(InflEKFACLoad(ek, fpath, model));
  } else PetscCall(StageFit(comm, model, sub, fpath, PETSC_TRUE, &ek));
  PetscCall(PetscSNPrintf(spath, sizeof(spath), "%s-self.h5", prefix));
  PetscCall(self_influence(comm, model, ek, sub, spath, N, d->self[0]));
  if (identity) {
    const double damping = 1e8;
    PetscCall(InflEKFACSetDamping(ek, damping));
    PetscCall(PetscSNPrintf(spath, sizeof(spath), "%s-self-identity.h5", prefix));
    PetscCall(self_influence(comm, model, ek, sub, spath, N, d->self[1]));
    for (int64_t i = 0; i < N; i++) d->self[1][i] *= damping;
  }
  for (int k = 0; k < 2; k++)
    for (PetscInt t = 0; t < d->T && d->self[k]; t++) PetscCall(InflDetectionRate(N, d->self[k], d->flipped, d->top[t], &d->found[k][t]));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&sub));
  PetscCall(PetscFree2(y, idx));
  PetscFunctionReturn(0);
}

/* Collective.  Remove the files of an interrupted mislabel run (PREFIX.safetensors or the GPT-2 directory PREFIX-model,
 * -factors.h5, -self*.h5). */
static PetscErrorCode mislabel_cleanup(MPI_Comm comm, const char prefix[])
{
  const char *suffix[] = {".safetensors", "-factors.h5", "-self.h5", "-self-identity.h5", "-model/model.safetensors", "-model/config.json"};
  char        path[PETSC_MAX_PATH_LEN];
  PetscMPIInt rank;

  PetscFunctionBegin;
  for (int k = 0; k < 6; k++) {
    PetscCall(PetscSNPrintf(path, sizeof(path), "%s%s", prefix, suffix[k]));
    PetscCall(InflRemoveAll(comm, path));
  }
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s-model", prefix));
  if (rank == 0) (void)rmdir(path); /* the GPT-2's directory, now empty (absent for an MLP) */
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

/* Collective.  Leave-one-out: S seeds x (the full model, then one model per example of d->loo_idx masked out of
 * training), each trained with the study's recipe and the seed's data order (InflTrainOptions.exclude) by rank
 * groups (of group_size ranks, 1 unless given: every model then takes the same arithmetic path), resumable in
 * OUT.loo.partial; fills d's leave-one-out section. */
static PetscErrorCode loo_run(MPI_Comm comm, RetrainCtx *c, const char out[], PetscInt group_size, LdsData *d)
{
  const PetscInt K = d->K, S = d->S, T = S * (K + 1), Q = d->Q;
  int64_t       *all, *excl;
  uint64_t      *seeds;
  char           partial[PETSC_MAX_PATH_LEN + 16];
  InflTaskSet    ts;
  PetscInt       done = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc3(d->N, &all, T, &excl, T, &seeds));
  for (int64_t i = 0; i < d->N; i++) all[i] = i;
  PetscCall(PetscMalloc2(T, &c->n, T, &c->idx));
  for (PetscInt t = 0; t < T; t++) {
    c->n[t]   = d->N;
    c->idx[t] = all;
    excl[t]   = t % (K + 1) ? d->loo_idx[t % (K + 1) - 1] : -1;
    seeds[t]  = c->topt.seed + (uint64_t)(t / (K + 1));
  }
  c->exclude = excl;
  c->seed    = seeds;
  c->what    = "loo";
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.loo.partial", out));
  PetscCall(PetscPrintf(comm, "infl lds: leave-one-out of %d training examples (and the full model) x %d seed%s, %d queries\n", (int)K, (int)S, S > 1 ? "s" : "", (int)Q));
  PetscCall(InflTasksRestore(comm, "infl lds (loo)", T, Q, partial, d->loo_key, d->loo_status, d->loo_losses));
  for (PetscInt t = 0; t < T; t++) done += d->loo_status[t] != INFL_TASK_TODO;
  if (done) PetscCall(PetscPrintf(comm, "infl lds: resuming from %s (%d of %d leave-one-out models finished)\n", partial, (int)done, (int)T));
  ts = (InflTaskSet){T, Q, "model", retrain_task, c};
  PetscCall(InflTasksRun(comm, "infl lds (loo)", &ts, group_size > 0 ? group_size : 1, partial, d->loo_key, d->loo_status, d->loo_losses));
  for (PetscInt t = 0; t < T; t++)
    if (d->loo_status[t] != INFL_TASK_DONE)
      for (PetscInt q = 0; q < Q; q++) d->loo_losses[(size_t)t * Q + q] = NAN;
  for (PetscInt k = 0; k < K; k++)
    for (PetscInt q = 0; q < Q; q++) {
      double   sum = 0;
      PetscInt n   = 0;
      for (PetscInt s = 0; s < S; s++) {
        double v = d->loo_losses[((size_t)s * (K + 1) + k + 1) * Q + q] - d->loo_losses[(size_t)s * (K + 1) * Q + q];
        if (isfinite(v)) {
          sum += v;
          n++;
        }
      }
      d->loo_change[(size_t)k * Q + q] = n ? sum / n : NAN;
    }
  c->exclude = NULL;
  c->seed    = NULL;
  PetscCall(PetscFree2(c->n, c->idx));
  PetscCall(PetscFree3(all, excl, seeds));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverLDS(MPI_Comm comm, PetscBool help)
{
  char        out[PETSC_MAX_PATH_LEN] = "lds.h5", lpath[PETSC_MAX_PATH_LEN] = "", ppath[PETSC_MAX_PATH_LEN] = "", *spaths[LDS_MAX_SCORES] = {0}, recipe[2048], shown[2048], seeds[32] = "same", loo_spec[PETSC_MAX_PATH_LEN] = "", fit_key[128] = "", mprefix[PETSC_MAX_PATH_LEN] = "";
  PetscInt    J = 0, ns = 0, seed = 0, group_size = 0, S = 1, ntop = 16;
  int64_t     Nq;
  double      fraction = 0.5, mfraction = 0, tops[16] = {10, 20};
  PetscBool   overwrite = PETSC_FALSE, dset, identity = PETSC_TRUE, todo[3] = {PETSC_FALSE, PETSC_FALSE, PETSC_FALSE}, topset;
  InflData    train = NULL, test = NULL, query = NULL;
  RetrainCtx  c = {0};
  LdsData     d = {0}, e = {0};
  int64_t    *qidx = NULL, N;
  const char *seedn[] = {"same", "per_subset"};
  PetscInt    iseed = 0;
  InflModel   probe = NULL; /* a language-model study: a fresh GPT-2 of the -gpt2_* options, for the data's windows */
  StagePrompts prompts = {0};

  PetscFunctionBegin;
  PetscCall(InflOptionsCheckLength(comm, "-out", sizeof(out) - 32, "give a shorter path"));
  PetscCall(InflOptionsCheckLength(comm, "-lds", sizeof(lpath) - 32, "give a shorter path"));
  PetscCall(DriverCheckListLength(comm, "-lds_mislabel_top", 16, "percentages"));
  PetscOptionsBegin(comm, NULL, "infl lds: linear datamodeling score by retraining on random subsets; leave-one-out; mislabel detection", NULL);
  PetscCall(PetscOptionsString("-out", "lds.h5 to write (subset masks, query losses, leave-one-out and mislabel sections; a finished section of the same settings is reused)", NULL, out, out, sizeof(out), NULL));
  PetscCall(PetscOptionsString("-lds", "an existing lds.h5: only print the LDS and leave-one-out correlations of the -scores files and its mislabel detection (no training data needed)", NULL, lpath, lpath, sizeof(lpath), NULL));
  PetscCall(PetscOptionsInt("-lds_subsets", "J: random training subsets, one model trained on each (0: no LDS, with -lds_loo or -lds_mislabel_fraction)", NULL, J, &J, NULL));
  PetscCall(PetscOptionsReal("-lds_fraction", "fraction of the training set in every subset (exactly round(fraction N) examples)", NULL, fraction, &fraction, NULL));
  PetscCall(PetscOptionsInt("-lds_seed", "seed of the subset masks and of the flipped labels (counter-based: the same at any rank count)", NULL, seed, &seed, NULL));
  PetscCall(PetscOptionsEList("-lds_model_seeds", "initialization and shuffling seed of the subset models: the study's -train_seed for every subset, or -train_seed + 1 + subset", NULL, seedn, 2, seedn[0], &iseed, NULL));
  PetscCall(PetscOptionsInt("-lds_group_size", "ranks per model (0: chosen so that every rank is busy, include/infl/eval.h; leave-one-out: 1)", NULL, group_size, &group_size, NULL));
  PetscCall(PetscOptionsString("-lds_loo", "training examples left out one at a time (\"3,17,40\", \"0:20\", \"0:10000:500\" or @file): each model retrained without one, with the full model's seed and data order", NULL, loo_spec, loo_spec, sizeof(loo_spec), NULL));
  PetscCall(PetscOptionsInt("-lds_loo_seeds", "S: leave-one-out repeated with training seeds -train_seed .. -train_seed + S - 1, the loss changes averaged", NULL, S, &S, NULL));
  PetscCall(PetscOptionsReal("-lds_mislabel_fraction", "f > 0: flip the labels of a fraction f of the training examples, train on them, rank by self-influence", NULL, mfraction, &mfraction, NULL));
  PetscCall(PetscOptionsRealArray("-lds_mislabel_top", "percentages x: report the fraction of the flipped examples found in the top x% by self-influence", NULL, tops, &ntop, &topset));
  PetscCall(PetscOptionsBool("-lds_mislabel_identity", "also rank by the identity self-influence (squared gradient norm)", NULL, identity, &identity, NULL));
  PetscCall(PetscOptionsBool("-overwrite", "replace an existing -out made with other settings", NULL, overwrite, &overwrite, NULL));
  PetscCall(PetscOptionsString("-query_prompts", "language-model studies: prompt/completion queries (as infl run; their completion losses are measured) instead of -query windows", NULL, ppath, ppath, sizeof(ppath), NULL));
  {
    char list[4096] = "";
    PetscCall(PetscOptionsString("-scores", "scores files (comma-separated) written with -score_save_all: the LDS and leave-one-out correlations of each are printed", NULL, list, list, sizeof(list), NULL));
  }
  PetscOptionsEnd();
  if (!topset) ntop = 2;
  PetscCall(PetscStrncpy(seeds, seedn[iseed], sizeof(seeds)));
  if (!help) PetscCall(scores_list(comm, &ns, spaths));
  if (lpath[0] && !help) { /* evaluation of an existing file only */
    PetscCall(DriverCheckUnusedOptions(comm));
    PetscCall(lds_read(comm, lpath, &d));
    PetscCheck(ns > 0 || d.mN > 0, comm, PETSC_ERR_ARG_NULL, "-lds %s: give the scores files to evaluate with -scores a.h5,b.h5", lpath);
    PetscCall(print_eval(comm, &d, lpath, ns, spaths));
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
    PetscCall(PetscPrintf(comm, "  -model_dims <784,256,256,10>: the study's MLP (default input,256,256,classes); token-sequence data (text:, tokens:) train GPT-2s of the -gpt2_* options\n  -query_indices <0:8>: the queries when no -scores file is given (else the scores files' queries)\n"));
    PetscCall(DriverStudyOptionsUsed(comm)); /* the study's -ekfac_* (mislabel detection) and -gpt2_* options */
    PetscFunctionReturn(0);
  }
  {
    InflDataContent kind;
    PetscCall(InflDataGetContent(train, &kind));
    c.seq = (PetscBool)(kind == INFL_DATA_SEQUENCES);
  }
  PetscCheck(!c.seq || !dset, comm, PETSC_ERR_ARG_INCOMP, "-model_dims is an MLP option, but the -train data are token sequences, which train GPT-2s: give their shape with -gpt2_n_layer, -gpt2_n_embd, -gpt2_n_head, -gpt2_n_positions");
  PetscCheck(!ppath[0] || c.seq, comm, PETSC_ERR_ARG_INCOMP, "-query_prompts %s: prompt/completion queries are for language models (text: or tokens: training data), but -train holds rows of features", ppath);
  PetscCheck(!(ppath[0] && query), comm, PETSC_ERR_ARG_INCOMP, "give either -query (a data set, with -query_indices) or -query_prompts %s, not both", ppath);
  if (c.seq) { /* the windows of the data depend on the model's vocabulary and positions: read them for a fresh GPT-2 */
    InflData    ds[3]    = {train, test, query};
    const char *names[3] = {"-train", "-test", "-query"}, *h;
    char        beside[PETSC_MAX_PATH_LEN];
    PetscCall(DriverStudyTokenizer(comm, 3, ds, beside, sizeof(beside))); /* as the stages that read the study's model */
    PetscCall(DriverNewGPT2(comm, c.topt.seed, &probe));
    PetscCall(DriverCheckTextVocab(comm, probe, 3, ds, names, beside));
    for (int i = 0; i < 3; i++)
      if (ds[i]) PetscCall(InflModelCheckData(probe, ds[i]));
    if (ppath[0]) PetscCall(DriverLoadPrompts(comm, ppath, NULL, probe, &prompts));
    PetscCall(InflModelGetHash(probe, &h));
    {
      PetscInt V, P;
      PetscCall(InflModelGetSequenceSizes(probe, &V, &P));
      PetscCall(PetscSNPrintf(c.arch, sizeof(c.arch), "gpt2 vocab %d positions %d init %.16s (-gpt2_* options)", (int)V, (int)P, h));
    }
  }
  { /* the study's options of other stages (infl run's) are not misspellings; the fit's key decides reuse */
    PetscBool set;
    PetscCall(DriverStudyFitKey(comm, fit_key, sizeof(fit_key)));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-outdir", &set));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-model", &set));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-summary_queries", &set));
    PetscCall(PetscOptionsHasName(NULL, NULL, "-query_indices", &set)); /* the scores files' queries decide when given */
  }
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflDataGetSizes(train, &N, NULL, NULL));
  PetscCheck(J == 0 || J >= 3, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_subsets %d: give at least 3 subsets (the LDS is a rank correlation across them; 50-100 are usual)", (int)J);
  PetscCheck(J > 0 || loo_spec[0] || mfraction > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_subsets %d: give at least 3 subsets (the LDS is a rank correlation across them; 50-100 are usual), or -lds_loo or -lds_mislabel_fraction", (int)J);
  PetscCheck(fraction > 0 && fraction < 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_fraction %s must lie in (0, 1) (0.5 is usual)", INFL_DSTR(fraction));
  PetscCheck(seed >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_seed %d must be >= 0", (int)seed);
  PetscCheck(S >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_loo_seeds %d must be >= 1", (int)S);
  PetscCall(DriverCheckGroupSize(comm, "-lds_group_size", group_size));
  PetscCheck(mfraction >= 0 && mfraction < 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_mislabel_fraction %s must lie in [0, 1) (0: no mislabel detection; 0.1 is usual)", INFL_DSTR(mfraction));
  PetscCheck(mfraction == 0 || InflSubsetSize(N, mfraction) >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_mislabel_fraction %g of %" PRId64 " training examples flips no label; give a larger fraction", mfraction, N);
  PetscCheck(ntop >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_mislabel_top: give at least one percentage (e.g. 10,20)");
  for (PetscInt t = 0; t < ntop; t++) PetscCheck(tops[t] > 0 && tops[t] <= 100, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_mislabel_top %s: a percentage of the training set must lie in (0, 100]", INFL_DSTR(tops[t]));
  PetscCheck(J == 0 || (InflSubsetSize(N, fraction) >= 1 && InflSubsetSize(N, fraction) < N), comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_fraction %g of %" PRId64 " training examples selects %" PRId64 ": give a fraction that keeps some and leaves some out", fraction, N, InflSubsetSize(N, fraction));
  if (!c.seq) PetscCall(DriverMLPDims(comm, train, c.dims, &c.nd, dset));
  todo[0] = (PetscBool)(J > 0);
  todo[2] = (PetscBool)(mfraction > 0);
  if (loo_spec[0]) PetscCall(DriverIndexList(comm, "-lds_loo", "", "training", "training set", N, &d.K, &d.loo_idx));
  todo[1] = (PetscBool)(d.K > 0);
  if ((todo[0] || todo[1]) && prompts.Q > 0) { /* prompt q is query q (as in the scores files of infl run) */
    d.Q = prompts.Q;
    PetscCall(PetscMalloc1(d.Q, &qidx));
    for (PetscInt q = 0; q < d.Q; q++) qidx[q] = q;
  } else if (todo[0] || todo[1]) { /* the queries: those of the scores files (which must agree), else -query_indices */
    if (!query) query = test;
    PetscCheck(query, comm, PETSC_ERR_ARG_NULL, "infl lds needs the study's -query (or -test) data: the losses of its queries are measured under every retrained model");
    if (!c.seq) PetscCall(DriverRequireRows(comm, "infl lds", query)); /* token data: checked against the GPT-2 above */
    PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
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
  c.prompts = prompts.Q > 0 ? &prompts : NULL;
  PetscCall(recipe_text(&c, PETSC_TRUE, recipe, sizeof(recipe)));
  PetscCall(PetscStrncpy(d.recipe, recipe, sizeof(d.recipe)));
  d.J = J;
  d.N = N;
  d.S = S;
  d.qidx = qidx;
  d.fraction = fraction;
  d.seed = seed;
  d.mN = todo[2] ? N : 0;
  d.T = ntop;
  d.mfraction = mfraction;
  d.mseed = seed;
  {
    const char *th, *qh = "";
    InflHash    h;
    char        qhex[65] = "", lhex[65] = "";
    PetscCall(InflDataGetHash(train, &th));
    if (prompts.Q > 0) qh = prompts.hash;
    else if (query) PetscCall(InflDataGetHash(query, &qh));
    PetscCall(PetscStrncpy(d.thash, th, sizeof(d.thash)));
    PetscCall(PetscStrncpy(d.qhash, qh, sizeof(d.qhash)));
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, qidx, sizeof(int64_t) * (size_t)d.Q));
    PetscCall(InflHashFinal(&h, qhex));
    PetscCall(PetscSNPrintf(d.key, sizeof(d.key), "subsets %d fraction %.17g seed %d model_seeds %s train %.16s query %.16s indices %.16s recipe %s", (int)J, fraction, (int)seed, seeds, th, qh, qhex, recipe));
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, d.loo_idx, sizeof(int64_t) * (size_t)d.K));
    PetscCall(InflHashFinal(&h, lhex));
    PetscCall(PetscSNPrintf(d.loo_key, sizeof(d.loo_key), "loo %d examples %.16s seeds %d train %.16s query %.16s indices %.16s recipe %s", (int)d.K, lhex, (int)S, th, qh, qhex, recipe));
    PetscCall(PetscSNPrintf(d.mis_key, sizeof(d.mis_key), "mislabel fraction %.17g seed %d identity %d train %.16s fit %s recipe %s", mfraction, (int)seed, (int)identity, th, fit_key, recipe));
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, d.mis_key, strlen(d.mis_key)));
    PetscCall(InflHashFinal(&h, lhex));
    PetscCall(PetscSNPrintf(mprefix, sizeof(mprefix), "%s.mislabel-%.12s", out, lhex));
  }
  if (InflFileExists(out) && !overwrite) { /* its sections of these settings are reused, the others kept */
    PetscCall(lds_read(comm, out, &e));
    PetscCheck(!e.thash[0] || !strcmp(e.thash, d.thash), comm, PETSC_ERR_FILE_OPEN, "output %s exists and was made with other training data (train_sha256 %.16s...); pass -overwrite to replace it, or choose another -out", out, e.thash);
    if (todo[0] && e.J > 0) {
      PetscCheck(!strcmp(e.key, d.key), comm, PETSC_ERR_FILE_OPEN, "output %s exists and was made with other settings (subsets, fraction, seeds, data, queries or training recipe); pass -overwrite to replace it, or choose another -out", out);
      todo[0] = PETSC_FALSE;
    }
    if (todo[1] && e.K > 0) {
      PetscCheck(!strcmp(e.loo_key, d.loo_key), comm, PETSC_ERR_FILE_OPEN, "output %s exists and holds leave-one-out results of other settings (examples, seeds, queries or training recipe); pass -overwrite to replace it, or choose another -out", out);
      todo[1] = PETSC_FALSE;
    }
    if (todo[2] && e.mN > 0) {
      PetscCheck(!strcmp(e.mis_key, d.mis_key), comm, PETSC_ERR_FILE_OPEN, "output %s exists and holds mislabel results of other settings (fraction, seed, -lds_mislabel_identity, EK-FAC options or training recipe); pass -overwrite to replace it, or choose another -out", out);
      todo[2] = PETSC_FALSE;
    }
    if ((e.J > 0 || e.K > 0) && (todo[0] || todo[1])) { /* sections of the file and new ones share the queries */
      PetscBool same = (PetscBool)(e.Q == d.Q && !strcmp(e.qhash, d.qhash));
      for (PetscInt q = 0; same && q < d.Q; q++) same = (PetscBool)(e.qidx[q] == d.qidx[q]);
      PetscCheck(same, comm, PETSC_ERR_FILE_OPEN, "output %s exists and holds results for other queries; pass -overwrite to replace it, or choose another -out", out);
    }
  }
  { /* every rank holds the sections' arrays: refuse what cannot fit before allocating (a failed allocation names no option) */
    const double phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE), gib = 1073741824.0;
    const double sub = todo[0] ? (double)J * ((double)N * (1 + 8 * fraction) + 8.0 * d.Q + 4) : 0, loo = todo[1] ? 8.0 * d.Q * ((double)S * (d.K + 1) + d.K) + 4.0 * S * (d.K + 1) : 0;
    PetscCheck(phys <= 0 || sub <= phys, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_subsets %d: the masks, member lists and losses of %d subsets of %" PRId64 " training examples take %.4g GiB per rank, more than the %.4g GiB of memory of this machine: give fewer subsets (50-100 are usual)", (int)J, (int)J, N, sub / gib, phys / gib);
    PetscCheck(phys <= 0 || loo <= phys, comm, PETSC_ERR_ARG_OUTOFRANGE, "-lds_loo_seeds %d: the losses of %d seeds x %d models x %d queries take %.4g GiB per rank, more than the %.4g GiB of memory of this machine: give fewer seeds or examples (-lds_loo)", (int)S, (int)S, (int)(d.K + 1), (int)d.Q, loo / gib, phys / gib);
  }
  if (todo[0] || todo[1] || todo[2]) PetscCall(DriverCheckOutput(comm, out, (PetscBool)(overwrite || InflFileExists(out))));
  if (todo[0]) { /* the subsets */
    char        partial[PETSC_MAX_PATH_LEN + 16];
    InflTaskSet ts;
    PetscInt    done = 0;
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
    PetscCall(lds_alloc(&d, identity));
    PetscCall(PetscMalloc2(J, &c.n, J, &c.idx));
    for (PetscInt j = 0; j < J; j++) {
      const uint8_t *m = d.masks + (size_t)j * N;
      int64_t        k = 0;
      PetscCall(InflSubsetMask((uint64_t)seed, j, N, fraction, d.masks + (size_t)j * N));
      c.n[j] = InflSubsetSize(N, fraction);
      PetscCall(PetscMalloc1(c.n[j], &c.idx[j]));
      for (int64_t i = 0; i < N; i++)
        if (m[i]) c.idx[j][k++] = i;
    }
    PetscCall(recipe_text(&c, PETSC_FALSE, shown, sizeof(shown)));
    PetscCall(PetscPrintf(comm, "infl lds: %d subsets of %" PRId64 " of the %" PRId64 " training examples, %d queries; recipe: %s\n", (int)J, c.n[0], N, (int)d.Q, shown));
    PetscCall(InflTasksRestore(comm, "infl lds", J, d.Q, partial, d.key, d.status, d.losses));
    for (PetscInt j = 0; j < J; j++) done += d.status[j] != INFL_TASK_TODO;
    if (done) PetscCall(PetscPrintf(comm, "infl lds: resuming from %s (%d of %d subsets finished)\n", partial, (int)done, (int)J));
    ts = (InflTaskSet){J, d.Q, "subset", retrain_task, &c};
    PetscCall(InflTasksRun(comm, "infl lds", &ts, group_size, partial, d.key, d.status, d.losses));
    for (PetscInt j = 0; j < J; j++)
      if (d.status[j] != INFL_TASK_DONE)
        for (PetscInt q = 0; q < d.Q; q++) d.losses[(size_t)j * d.Q + q] = NAN;
    for (PetscInt j = 0; j < J; j++) PetscCall(PetscFree(c.idx[j]));
    PetscCall(PetscFree2(c.n, c.idx));
  }
  if (todo[1]) {
    PetscCall(lds_alloc(&d, identity));
    PetscCall(loo_run(comm, &c, out, group_size, &d));
  }
  if (todo[2]) {
    PetscCall(lds_alloc(&d, identity));
    for (PetscInt t = 0; t < ntop; t++) d.top[t] = tops[t] / 100;
    PetscCall(mislabel_run(comm, &c, (uint64_t)seed, mprefix, fit_key, identity, &d));
  }
  /* the sections not computed now come from the existing file */
#define LDS_TAKE(type, a) \
  do { \
    type t_ = d.a; \
    d.a     = e.a; \
    e.a     = t_; \
  } while (0)
  if (!todo[0]) {
    d.J = e.J;
    d.fraction = e.fraction;
    d.seed = e.seed;
    LDS_TAKE(uint8_t *, masks);
    LDS_TAKE(double *, losses);
    LDS_TAKE(int *, status);
    PetscCall(PetscStrncpy(d.key, e.key, sizeof(d.key)));
    PetscCall(PetscStrncpy(d.recipe, e.recipe, sizeof(d.recipe)));
  }
  if (!todo[1]) {
    d.K = e.K;
    d.S = e.S;
    LDS_TAKE(int64_t *, loo_idx);
    LDS_TAKE(double *, loo_losses);
    LDS_TAKE(int *, loo_status);
    LDS_TAKE(double *, loo_change);
    PetscCall(PetscStrncpy(d.loo_key, e.loo_key, sizeof(d.loo_key)));
  }
  if (!todo[2]) {
    d.mN = e.mN;
    d.T = e.T;
    d.mfraction = e.mfraction;
    d.mseed = e.mseed;
    LDS_TAKE(uint8_t *, flipped);
    LDS_TAKE(int64_t *, labels);
    LDS_TAKE(double *, top);
    for (int k = 0; k < 2; k++) {
      LDS_TAKE(double *, self[k]);
      LDS_TAKE(double *, found[k]);
    }
    PetscCall(PetscStrncpy(d.mis_key, e.mis_key, sizeof(d.mis_key)));
  }
  if (d.J == 0 && d.K == 0 && e.Q > 0) { /* only mislabel computed now: the file's queries stay */
    d.Q = e.Q;
    LDS_TAKE(int64_t *, qidx);
    PetscCall(PetscStrncpy(d.qhash, e.qhash, sizeof(d.qhash)));
  }
#undef LDS_TAKE
  if (todo[0] || todo[1] || todo[2]) {
    char partial[PETSC_MAX_PATH_LEN + 16];
    PetscCall(lds_write(comm, out, &d));
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
    PetscCall(InflRemoveAll(comm, partial));
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.loo.partial", out));
    PetscCall(InflRemoveAll(comm, partial));
    if (todo[2]) PetscCall(mislabel_cleanup(comm, mprefix));
    PetscCall(PetscPrintf(comm, "wrote %s\n", out));
  } else PetscCall(PetscPrintf(comm, "== lds: using %s (made with these settings)\n", out));
  if (ns > 0 || d.mN > 0) PetscCall(print_eval(comm, &d, out, ns, spaths));
  for (PetscInt f = 0; f < ns; f++) PetscCall(PetscFree(spaths[f]));
  PetscCall(lds_free(&d));
  PetscCall(lds_free(&e));
  PetscCall(PetscFree3(prompts.offsets, prompts.tokens, prompts.targets));
  PetscCall(InflModelDestroy(&probe));
  if (query != test) PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&test));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

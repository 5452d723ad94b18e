/* The HTML report of an influence study: scores (and self-influence) files checked against the data, rendered on
 * rank 0 with the page builder of page.c. */
#include "reportimpl.h"
#include <infl/score.h> /* INFL_TRACIN_MAX */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

PetscErrorCode InflReportCreate(MPI_Comm comm, InflReport *r)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(r));
  (*r)->comm  = comm;
  (*r)->nshow = 20;
  (*r)->kshow = 0;
  (*r)->nself = 24;
  (*r)->scale = 3;
  (*r)->bins  = 40;
  PetscCall(PetscStrncpy((*r)->title, "Influence report", sizeof((*r)->title)));
  PetscFunctionReturn(0);
}

static PetscErrorCode free_names(InflReport r)
{
  PetscFunctionBegin;
  for (PetscInt c = 0; c < r->ncls; c++) PetscCall(PetscFree(r->names[c]));
  PetscCall(PetscFree(r->names));
  r->ncls = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportSetClassNames(InflReport r, PetscInt n, const char *const names[])
{
  PetscFunctionBegin;
  PetscCall(free_names(r));
  PetscCall(PetscCalloc1(PetscMax(n, 1), &r->names));
  r->ncls = n;
  for (PetscInt c = 0; c < n; c++)
    if (names[c]) PetscCall(PetscStrallocpy(names[c], &r->names[c]));
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportSetFromOptions(InflReport r)
{
  char      buf[4096] = "";
  PetscBool set;

  PetscFunctionBegin;
  PetscCall(InflOptionsCheckLength(r->comm, "-report_title", sizeof(r->title), "give a shorter title"));
  PetscCall(InflOptionsCheckLength(r->comm, "-class_names", sizeof(buf), "give shorter class names"));
  PetscOptionsBegin(r->comm, NULL, "HTML report options", "InflReport");
  PetscCall(PetscOptionsInt("-report_queries", "queries shown in the report", "InflReportWrite", r->nshow, &r->nshow, NULL));
  PetscCall(PetscOptionsInt("-report_k", "proponents and opponents shown per query (0: all in the scores file)", "InflReportWrite", r->kshow, &r->kshow, NULL));
  PetscCall(PetscOptionsInt("-report_self", "training examples of highest self-influence shown", "InflReportWrite", r->nself, &r->nself, NULL));
  PetscCall(PetscOptionsInt("-report_scale", "image enlargement (nearest neighbour)", "InflReportWrite", r->scale, &r->scale, NULL));
  PetscCall(PetscOptionsInt("-report_bins", "histogram bins", "InflReportWrite", r->bins, &r->bins, NULL));
  PetscCall(PetscOptionsString("-report_title", "title of the report", "InflReportWrite", r->title, r->title, sizeof(r->title), NULL));
  PetscCall(PetscOptionsString("-class_names", "class names, comma-separated, in label order", "InflReportSetClassNames", buf, buf, sizeof(buf), &set));
  PetscOptionsEnd();
  PetscCheck(r->nshow >= 0, r->comm, PETSC_ERR_ARG_OUTOFRANGE, "-report_queries %d must be >= 0", (int)r->nshow);
  PetscCheck(r->kshow >= 0, r->comm, PETSC_ERR_ARG_OUTOFRANGE, "-report_k %d must be >= 0 (0: all)", (int)r->kshow);
  PetscCheck(r->nself >= 0, r->comm, PETSC_ERR_ARG_OUTOFRANGE, "-report_self %d must be >= 0", (int)r->nself);
  PetscCheck(r->scale >= 1 && r->scale <= 16, r->comm, PETSC_ERR_ARG_OUTOFRANGE, "-report_scale %d must be in 1..16", (int)r->scale);
  PetscCheck(r->bins >= 1 && r->bins <= 1000, r->comm, PETSC_ERR_ARG_OUTOFRANGE, "-report_bins %d must be in 1..1000", (int)r->bins);
  if (set) {
    char       *tok, *save;
    const char *v[1024];
    PetscInt    n = 0;
    for (tok = strtok_r(buf, ",", &save); tok && n < 1024; tok = strtok_r(NULL, ",", &save)) v[n++] = tok;
    PetscCall(InflReportSetClassNames(r, n, v));
  }
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- provenance */
static PetscErrorCode prov_add(Prov *p, const char key[], const char value[])
{
  PetscFunctionBegin;
  if (p->n >= NPROV) PetscFunctionReturn(0);
  PetscCall(PetscStrallocpy(key, &p->keys[p->n]));
  PetscCall(PetscStrallocpy(value, &p->values[p->n]));
  p->n++;
  PetscFunctionReturn(0);
}

static PetscErrorCode prov_free(Prov *p)
{
  PetscFunctionBegin;
  for (int i = 0; i < p->n; i++) {
    PetscCall(PetscFree(p->keys[i]));
    PetscCall(PetscFree(p->values[i]));
  }
  p->n = 0;
  PetscFunctionReturn(0);
}

/* A root attribute as text ("" if absent): strings as they are, integers and floats printed. */
static PetscErrorCode attr_text(hid_t file, const char name[], char value[], size_t len)
{
  hid_t       a, t;
  H5T_class_t cls;

  PetscFunctionBegin;
  value[0] = 0;
  if (H5Aexists_by_name(file, "/", name, H5P_DEFAULT) <= 0) PetscFunctionReturn(0);
  InflCallH5(a = H5Aopen_by_name(file, "/", name, H5P_DEFAULT, H5P_DEFAULT));
  InflCallH5(t = H5Aget_type(a));
  cls = H5Tget_class(t);
  InflCallH5(H5Tclose(t));
  InflCallH5(H5Aclose(a));
  if (cls == H5T_STRING) PetscCall(InflH5GetAttrString(file, "/", name, value, len));
  else if (cls == H5T_INTEGER) {
    int64_t v;
    PetscCall(InflH5GetAttrInt(file, "/", name, &v));
    PetscCall(PetscSNPrintf(value, len, "%" PRId64, v));
  } else if (cls == H5T_FLOAT) {
    double v;
    PetscCall(InflH5GetAttrDouble(file, "/", name, &v));
    PetscCall(PetscSNPrintf(value, len, "%g", v));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode read_provenance(hid_t file, const char path[], Prov *p)
{
  const char *names[] = {"stage", "infl_version", "created", "ranks", "model_sha256", "train_sha256", "query_sha256", "train_examples", "topk"};
  char        v[512];

  PetscFunctionBegin;
  PetscCall(prov_free(p));
  PetscCall(PetscStrncpy(p->path, path, sizeof(p->path)));
  PetscCall(prov_add(p, "file", path));
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    PetscCall(attr_text(file, names[i], v, sizeof(v)));
    if (v[0]) PetscCall(prov_add(p, names[i], v));
  }
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- loading */
static PetscErrorCode free_scores(InflReport r)
{
  PetscFunctionBegin;
  PetscCall(PetscFree2(r->qindex, r->qlabel));
  PetscCall(PetscFree2(r->qpred, r->qprob));
  PetscCall(PetscFree4(r->top_idx, r->bot_idx, r->top_s, r->bot_s));
  PetscCall(PetscFree2(r->top_layer, r->bot_layer));
  PetscCall(PetscFree(r->rows));
  PetscCall(prov_free(&r->prov_scores));
  PetscCall(InflReportFreeText(r));
  r->loaded = PETSC_FALSE;
  r->L      = 0;
  r->full   = PETSC_FALSE;
  PetscFunctionReturn(0);
}

/* Dataset `name` of `file` must have ndim dims equal to dims[] (entries < 0 are free and filled in).  Collective
 * (every rank reads the same metadata). */
static PetscErrorCode expect_dims(MPI_Comm comm, hid_t file, const char path[], const char name[], int ndim, int64_t dims[])
{
  int     nd;
  int64_t got[8];
  PetscBool ok;

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(file, name, &nd, got));
  InflCheckAll(comm, nd >= 0, PETSC_ERR_FILE_UNEXPECTED, "%s is not an infl scores file: dataset %s is missing (the file is written by infl score)", path, name);
  ok = nd == ndim ? PETSC_TRUE : PETSC_FALSE;
  for (int i = 0; ok && i < nd; i++)
    if (dims[i] >= 0 && dims[i] != got[i]) ok = PETSC_FALSE;
  InflCheckAll(comm, ok, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s has %d dimensions (%" PRId64 " x %" PRId64 " ...), which do not match the rest of the file", path, name, nd, nd > 0 ? got[0] : 0, nd > 1 ? got[1] : 0);
  for (int i = 0; i < nd; i++) dims[i] = got[i];
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportLoadScores(InflReport r, const char path[], InflData train, InflData query)
{
  hid_t       file;
  char        th[128];
  const char *dh;
  int64_t     Nq, dq[1] = {-1}, dk[2], dl[3], N, nrows;
  PetscMPIInt rank;
  int         nd;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(r->comm, &rank));
  PetscCall(free_scores(r));
  r->train = train;
  r->query = query;
  {
    InflDataContent kind;
    PetscCall(InflDataGetContent(train, &kind));
    r->text = kind == INFL_DATA_SEQUENCES ? PETSC_TRUE : PETSC_FALSE;
  }
  PetscCheck(query || r->text, r->comm, PETSC_ERR_ARG_NULL, "the report of rows of features needs the -query data the scores were computed on");
  PetscCheck(!r->text || r->tok, r->comm, PETSC_ERR_ARG_WRONGSTATE, "the report of token sequences needs the model's tokenizer (InflReportSetTokenizer; infl report -model DIR)");
  PetscCall(InflDataGetSizes(train, &N, &r->d, NULL));
  Nq = -1;
  if (query) PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
  r->N = N;
  PetscCall(InflH5Open(r->comm, path, PETSC_FALSE, &file));
  /* structure */
  PetscCall(expect_dims(r->comm, file, path, "/query_indices", 1, dq));
  r->Q = dq[0];
  PetscCall(expect_dims(r->comm, file, path, "/query_labels", 1, dq));
  dk[0] = r->Q;
  dk[1] = -1;
  PetscCall(expect_dims(r->comm, file, path, "/topk/scores", 2, dk));
  r->K = dk[1];
  PetscCall(expect_dims(r->comm, file, path, "/topk/train_indices", 2, dk));
  PetscCall(expect_dims(r->comm, file, path, "/bottomk/scores", 2, dk));
  PetscCall(expect_dims(r->comm, file, path, "/bottomk/train_indices", 2, dk));
  InflCheckAll(r->comm, r->Q > 0 && r->K > 0, PETSC_ERR_FILE_UNEXPECTED, "%s holds no scores (%" PRId64 " queries, top-%" PRId64 ")", path, r->Q, r->K);
  /* provenance and the train data's hash */
  PetscCall(read_provenance(file, path, &r->prov_scores));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", th, sizeof(th)));
  PetscCall(InflH5GetAttrString(file, "/", "model_sha256", r->model_hash, sizeof(r->model_hash)));
  PetscCall(InflDataGetHash(train, &dh));
  InflCheckAll(r->comm, th[0], PETSC_ERR_FILE_UNEXPECTED, "%s has no train_sha256 attribute, so its training indices cannot be matched to the -train data; was it written by infl score?", path);
  InflCheckAll(r->comm, !strcmp(th, dh), PETSC_ERR_ARG_INCOMP, "%s was computed on other training data: its train_sha256 is %s, but the -train data (with its -train_limit) has sha256 %s; pass the training data and limit the scores were computed with", path, th, dh);
  { /* the queries: absent in files of infl ihvp and older versions (a note in the report then) */
    char qh[128];
    PetscCall(attr_text(file, "query_sha256", qh, sizeof(qh)));
    dh = qh;
    if (query) PetscCall(InflDataGetHash(query, &dh));
    InflCheckAll(r->comm, !qh[0] || !strcmp(qh, dh), PETSC_ERR_ARG_INCOMP, "%s was computed on other query data: its query_sha256 is %s, but the -query data (with its -query_limit) has sha256 %s; pass the query data and limit the scores were computed with", path, qh, dh);
    r->query_checked = qh[0] ? PETSC_TRUE : PETSC_FALSE;
    if (!qh[0]) PetscCall(PetscPrintf(r->comm, "note: %s records no query_sha256, so the -query data cannot be checked against the scored queries (only their labels are); the report says so\n", path));
  }
  {
    char    v[64];
    int64_t ne = -1;
    PetscCall(attr_text(file, "train_examples", v, sizeof(v)));
    if (v[0]) ne = strtoll(v, NULL, 10);
    InflCheckAll(r->comm, ne < 0 || ne == N, PETSC_ERR_ARG_INCOMP, "%s was computed on %" PRId64 " training examples, but -train has %" PRId64, path, ne, N);
  }
  /* the small arrays, on every rank */
  PetscCall(PetscMalloc2(r->Q, &r->qindex, r->Q, &r->qlabel));
  PetscCall(PetscMalloc4(r->Q * r->K, &r->top_idx, r->Q * r->K, &r->bot_idx, r->Q * r->K, &r->top_s, r->Q * r->K, &r->bot_s));
  PetscCall(InflH5ReadArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dq, NULL, r->qindex));
  PetscCall(InflH5ReadArray(file, "/query_labels", H5T_NATIVE_INT64, 1, dq, NULL, r->qlabel));
  {
    int     nd;
    int64_t pd[8];
    PetscCall(InflH5GetDims(file, "/query_predictions", &nd, pd));
    if (nd == 1 && pd[0] == r->Q) {
      PetscCall(PetscMalloc2(r->Q, &r->qpred, r->Q, &r->qprob));
      PetscCall(InflH5ReadArray(file, "/query_predictions", H5T_NATIVE_INT64, 1, dq, NULL, r->qpred));
      PetscCall(InflH5ReadArray(file, "/query_prediction_probability", H5T_NATIVE_DOUBLE, 1, dq, NULL, r->qprob));
    }
  }
  PetscCall(InflH5ReadArray(file, "/topk/train_indices", H5T_NATIVE_INT64, 2, dk, NULL, r->top_idx));
  PetscCall(InflH5ReadArray(file, "/bottomk/train_indices", H5T_NATIVE_INT64, 2, dk, NULL, r->bot_idx));
  PetscCall(InflH5ReadArray(file, "/topk/scores", H5T_NATIVE_DOUBLE, 2, dk, NULL, r->top_s));
  PetscCall(InflH5ReadArray(file, "/bottomk/scores", H5T_NATIVE_DOUBLE, 2, dk, NULL, r->bot_s));
  for (int w = 0; w < 2; w++) { /* -1 only as padding (no training example, score NaN) */
    const int64_t *ix = w == 0 ? r->top_idx : r->bot_idx;
    const double  *sv = w == 0 ? r->top_s : r->bot_s;
    int64_t        bad = -1;
    for (int64_t i = 0; i < r->Q * r->K && bad < 0; i++)
      if (ix[i] < -1 || ix[i] >= N || (ix[i] == -1 && !isnan(sv[i]))) bad = i;
    InflCheckAll(r->comm, bad < 0, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s at position (%" PRId64 ", %" PRId64 ") holds training index %" PRId64 ", outside the %" PRId64 " training examples (valid: 0..%" PRId64 ", or -1 with a NaN score for no entry); the file is damaged or was edited: recompute it with infl score", path, w == 0 ? "/topk/train_indices" : "/bottomk/train_indices", bad >= 0 ? bad / r->K : 0, bad >= 0 ? bad % r->K : 0, bad >= 0 ? ix[bad] : 0, N, N - 1);
  }
  {
    int64_t badq = -1;
    for (int64_t q = 0; q < r->Q && query; q++)
      if (badq < 0 && (r->qindex[q] < 0 || r->qindex[q] >= Nq)) badq = q;
    InflCheckAll(r->comm, badq < 0, PETSC_ERR_ARG_INCOMP, "%s: dataset /query_indices at position %" PRId64 " holds query index %" PRId64 ", outside the -query data, which has %" PRId64 " examples; pass the query data the scores were computed with", path, badq, badq >= 0 ? r->qindex[badq] : 0, Nq);
  }
  /* optional parts */
  PetscCall(InflH5GetDims(file, "/topk/per_layer", &nd, dl));
  if (nd == 3 && dl[1] == r->Q && dl[2] == r->K) {
    int64_t bl[3];
    PetscCall(InflH5GetDims(file, "/bottomk/per_layer", &nd, bl));
    if (nd == 3 && bl[0] == dl[0] && bl[1] == r->Q && bl[2] == r->K) {
      r->L = (PetscInt)dl[0];
      PetscCall(PetscMalloc2(r->L * r->Q * r->K, &r->top_layer, r->L * r->Q * r->K, &r->bot_layer));
      PetscCall(InflH5ReadArray(file, "/topk/per_layer", H5T_NATIVE_DOUBLE, 3, dl, NULL, r->top_layer));
      PetscCall(InflH5ReadArray(file, "/bottomk/per_layer", H5T_NATIVE_DOUBLE, 3, dl, NULL, r->bot_layer));
    }
  }
  { /* TracIn: C checkpoints' terms of L / C layers each (docs/FORMATS.md) */
    char list[INFL_TRACIN_MAX * 96 + 64];
    PetscCall(InflH5GetAttrString(file, "/", "tracin_checkpoints", list, sizeof(list)));
    r->C = 1;
    if (list[0])
      for (const char *c = list; *c; c++) r->C += *c == ',';
    if (r->L % r->C) r->C = 1; /* not C checkpoints' layers: plain layer numbers */
  }
  PetscCall(InflH5GetDims(file, "/scores", &nd, dk));
  r->full = nd == 2 && dk[0] == r->Q && dk[1] == N ? PETSC_TRUE : PETSC_FALSE;
  nrows   = PetscMin(r->Q, r->nshow);
  if (r->full && nrows > 0) { /* rank 0 reads the rows of the shown queries; the others join the collective read */
    if (rank == 0) PetscCall(PetscMalloc1(nrows * N, &r->rows));
    PetscCall(InflH5ReadRows(file, "/scores", H5T_NATIVE_DOUBLE, 0, rank == 0 ? nrows : 0, r->rows));
  }
  if (r->text) { /* the queries' tokens and the per-token terms; token sequences have no labels to check */
    PetscErrorCode ierr = InflReportLoadText(r, file, path, query);
    PetscCall(InflH5Close(&file));
    PetscCall(ierr);
    r->loaded = PETSC_TRUE;
    PetscFunctionReturn(0);
  }
  PetscCall(InflH5Close(&file));
  /* the query labels of the shown queries must be those of the -query data (rank 0 reads them) */
  {
    int64_t  bad = -1, have = 0, want = 0, *y = NULL;
    float   *x = NULL;
    PetscInt n = (PetscInt)nrows;
    if (rank == 0 && n > 0) {
      PetscCall(PetscMalloc2((size_t)n * r->d, &x, n, &y));
      PetscCall(InflDataGetExamples(query, n, r->qindex, x, y));
      for (PetscInt q = 0; q < n && bad < 0; q++)
        if (y[q] != r->qlabel[q]) {
          bad  = r->qindex[q];
          have = y[q];
          want = r->qlabel[q];
        }
      PetscCall(PetscFree2(x, y));
    }
    InflCheckAll(r->comm, bad < 0, PETSC_ERR_ARG_INCOMP, "%s: query %" PRId64 " has label %" PRId64 " in the scores file but %" PRId64 " in the -query data; pass the query data the scores were computed with", path, bad, want, have);
  }
  r->loaded = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportLoadSelfInfluence(InflReport r, const char path[])
{
  hid_t       file;
  char        th[128], mh[128];
  const char *dh;
  int         nd;
  int64_t     dims[8];
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCheck(r->loaded, r->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflReportLoadScores before InflReportLoadSelfInfluence");
  PetscCallMPI(MPI_Comm_rank(r->comm, &rank));
  PetscCall(PetscFree(r->self));
  PetscCall(prov_free(&r->prov_self));
  r->has_self = PETSC_FALSE;
  PetscCall(InflH5Open(r->comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5GetDims(file, "/self_influence", &nd, dims));
  if (nd != 1) PetscCall(InflH5Close(&file));
  InflCheckAll(r->comm, nd == 1, PETSC_ERR_FILE_UNEXPECTED, "%s is not a self-influence file: dataset /self_influence (N) is %s (the file is written by infl self)", path, nd < 0 ? "missing" : "not one-dimensional");
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", th, sizeof(th)));
  PetscCall(InflH5GetAttrString(file, "/", "model_sha256", mh, sizeof(mh)));
  PetscCall(InflDataGetHash(r->train, &dh));
  if (strcmp(th, dh) || dims[0] != r->N || strcmp(mh, r->model_hash)) PetscCall(InflH5Close(&file));
  InflCheckAll(r->comm, !strcmp(th, dh), PETSC_ERR_ARG_INCOMP, "%s was computed on other training data: its train_sha256 is %s, but the -train data has sha256 %s", path, th[0] ? th : "(none)", dh);
  InflCheckAll(r->comm, dims[0] == r->N, PETSC_ERR_FILE_UNEXPECTED, "%s holds %" PRId64 " self-influence values, but -train has %" PRId64 " examples", path, dims[0], r->N);
  InflCheckAll(r->comm, !strcmp(mh, r->model_hash), PETSC_ERR_ARG_INCOMP, "%s was computed for model %s, but the scores for model %s; use the outputs of one study", path, mh[0] ? mh : "(none)", r->model_hash[0] ? r->model_hash : "(none)");
  PetscCall(read_provenance(file, path, &r->prov_self));
  if (rank == 0) PetscCall(PetscMalloc1(PetscMax(r->N, 1), &r->self));
  PetscCall(InflH5ReadRows(file, "/self_influence", H5T_NATIVE_DOUBLE, 0, rank == 0 ? r->N : 0, r->self));
  PetscCall(InflH5Close(&file));
  r->has_self = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- rendering (rank 0) */
static const char *class_name(InflReport r, int64_t c)
{
  return c >= 0 && c < r->ncls && r->names[c] ? r->names[c] : NULL;
}

static void label_text(InflReport r, int64_t c, char *s, size_t n)
{
  const char *nm = class_name(r, c);
  if (nm) snprintf(s, n, "label %" PRId64 " %s", c, nm);
  else snprintf(s, n, "label %" PRId64, c);
}

/* One gallery item of a training example; note (NULL: none) is a fourth caption line. */
static PetscErrorCode train_item(InflPage page, InflReport r, const float *x, int64_t idx, int64_t label, const char what[], double value, const char cls[], const char note[], unsigned char *pix)
{
  PetscInt    w, h;
  char        l0[64], l1[160], l2[64], alt[64];
  const char *lines[4] = {l0, l1, l2, note};

  PetscFunctionBegin;
  PetscCall(InflExampleImage(r->d, x, &w, &h, pix));
  PetscCall(PetscSNPrintf(alt, sizeof(alt), "train %" PRId64, idx));
  PetscCall(PetscSNPrintf(l0, sizeof(l0), "#%" PRId64, idx));
  label_text(r, label, l1, sizeof(l1));
  PetscCall(PetscSNPrintf(l2, sizeof(l2), "%s %.3g", what, value));
  PetscCall(InflPageGalleryImage(page, w, h, pix, r->scale, cls, alt, note ? 4 : 3, lines));
  PetscFunctionReturn(0);
}

int InflReportRankedDesc(const void *a, const void *b)
{
  const Ranked *x = (const Ranked *)a, *y = (const Ranked *)b;
  if (x->v != y->v) return x->v > y->v ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* The per-layer bar chart of query q (means of the kept proponents' and opponents' layer terms), if the file has them. */
PetscErrorCode InflReportRenderLayers(InflPage page, InflReport r, PetscInt q)
{
  PetscFunctionBegin;
  if (r->L > 0) {
    double      *vals;
    char       **labels;
    const char  *series[2] = {"proponents (mean of top-k)", "opponents (mean of bottom-k)"};
    PetscCall(PetscMalloc1(2 * r->L, &vals));
    PetscCall(PetscMalloc1(r->L, &labels));
    for (PetscInt l = 0; l < r->L; l++) {
      for (int s = 0; s < 2; s++) {
        const double  *t   = s == 0 ? r->top_layer : r->bot_layer;
        const int64_t *idx = s == 0 ? r->top_idx : r->bot_idx;
        double         sum = 0;
        int64_t        n   = 0;
        for (int64_t k = 0; k < r->K; k++)
          if (idx[q * r->K + k] >= 0) {
            sum += t[((int64_t)l * r->Q + q) * r->K + k];
            n++;
          }
        vals[s * r->L + l] = n ? sum / (double)n : NAN;
      }
      PetscCall(PetscMalloc1(48, &labels[l]));
      if (r->C > 1) PetscCall(PetscSNPrintf(labels[l], 48, "checkpoint %d layer %d", (int)(l / (r->L / r->C)) + 1, (int)(l % (r->L / r->C))));
      else PetscCall(PetscSNPrintf(labels[l], 48, "layer %d", (int)l));
    }
    PetscCall(InflPageBarChart(page, "Per-layer contributions to the scores", r->L, (const char *const *)labels, 2, series, vals));
    for (PetscInt l = 0; l < r->L; l++) PetscCall(PetscFree(labels[l]));
    PetscCall(PetscFree(labels));
    PetscCall(PetscFree(vals));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode render_query(InflPage page, InflReport r, PetscInt q, PetscInt nq, PetscInt ks, const float *xq, const float *xt, const int64_t *yt, unsigned char *pix, int64_t *same, int64_t *total)
{
  const int64_t K = r->K;
  char          title[256], lab[160], l0[64], alt[64], id[32];
  PetscInt      w, h;

  PetscFunctionBegin;
  label_text(r, r->qlabel[q], lab, sizeof(lab));
  if (r->qpred) {
    char pl[160];
    label_text(r, r->qpred[q], pl, sizeof(pl));
    PetscCall(PetscSNPrintf(title, sizeof(title), "Query %" PRId64 " (%s; model predicts %s, p = %.3f)", r->qindex[q], lab, pl, r->qprob[q]));
  } else PetscCall(PetscSNPrintf(title, sizeof(title), "Query %" PRId64 " (%s)", r->qindex[q], lab));
  PetscCall(PetscSNPrintf(id, sizeof(id), "query-%d", (int)q));
  PetscCall(InflPageSectionBegin(page, id, title));
  PetscCall(InflPageRowBegin(page));
  {
    const char *lines[2] = {l0, lab};
    PetscCall(PetscSNPrintf(l0, sizeof(l0), "query %" PRId64, r->qindex[q]));
    PetscCall(PetscSNPrintf(alt, sizeof(alt), "query %" PRId64, r->qindex[q]));
    PetscCall(InflExampleImage(r->d, xq, &w, &h, pix));
    PetscCall(InflPageGalleryBegin(page, "Query"));
    PetscCall(InflPageGalleryImage(page, w, h, pix, r->scale, "query", alt, 2, lines));
    PetscCall(InflPageGalleryEnd(page));
  }
  for (int s = 0; s < 2; s++) {
    const int64_t *idx = s == 0 ? r->top_idx : r->bot_idx;
    const double  *sc  = s == 0 ? r->top_s : r->bot_s;
    PetscInt       shown = 0, kept = 0, wrong = 0;
    const char    *title;
    /* a kept entry of the wrong sign (a bottom-k score >= 0 when the query has fewer negative scores than kept, or a
     * top-k score <= 0) is no opponent (proponent): captioned "Lowest k" / "Highest k" as in the text report */
    for (PetscInt k = 0; k < ks; k++) {
      const int64_t e = q * K + k;
      if (idx[e] < 0) continue;
      kept++;
      wrong += s == 0 ? !(sc[e] > 0) : !(sc[e] < 0);
    }
    if (s == 0) title = !wrong ? "Proponents (highest scores: upweighting them lowers the query loss)" : wrong == kept ? "Highest scores (none positive: not proponents, upweighting them does not lower the query loss)" : "Proponents and highest scores (those of score <= 0 are not proponents: upweighting them does not lower the query loss)";
    else title = !wrong ? "Opponents (most negative scores: upweighting them raises the query loss)" : wrong == kept ? "Lowest scores (none negative: not opponents, upweighting them does not raise the query loss)" : "Opponents and lowest scores (those of score >= 0 are not opponents: upweighting them does not raise the query loss)";
    PetscCall(InflPageGalleryBegin(page, title));
    for (PetscInt k = 0; k < ks; k++) {
      int64_t e = q * K + k, j = (s * nq + q) * ks + k;
      char    note[64];
      int     bad;
      if (idx[e] < 0) continue;
      bad = s == 0 ? !(sc[e] > 0) : !(sc[e] < 0);
      if (bad) PetscCall(PetscSNPrintf(note, sizeof(note), s == 0 ? "Highest %d: not a proponent" : "Lowest %d: not an opponent", (int)k + 1));
      PetscCall(train_item(page, r, xt + j * r->d, idx[e], yt[j], "score", sc[e], s == 0 ? "pro" : "opp", bad ? note : NULL, pix));
      shown++;
      if (s == 0) {
        (*total)++;
        if (yt[j] == r->qlabel[q]) (*same)++;
      }
    }
    PetscCall(InflPageGalleryEnd(page));
    if (!shown) PetscCall(InflPageText(page, "note", "No entries (the scores file holds none for this query)."));
  }
  PetscCall(InflPageRowEnd(page));
  PetscCall(InflPageRowBegin(page));
  {
    double      zero = 0;
    const char *zl   = "0";
    if (r->full && r->rows) {
      PetscCall(PetscSNPrintf(title, sizeof(title), "Scores of all %" PRId64 " training examples", r->N));
      PetscCall(InflPageHistogram(page, title, r->N, r->rows + (int64_t)q * r->N, r->bins, PETSC_TRUE, 1, &zero, &zl));
    } else {
      double *v;
      PetscCall(PetscMalloc1(2 * K, &v));
      for (int64_t k = 0; k < K; k++) {
        v[k]     = r->top_s[q * K + k];
        v[K + k] = r->bot_s[q * K + k];
      }
      PetscCall(PetscSNPrintf(title, sizeof(title), "Top-%" PRId64 " and bottom-%" PRId64 " scores (the file has no full score matrix)", K, K));
      PetscCall(InflPageHistogram(page, title, 2 * K, v, PetscMin(r->bins, 20), PETSC_FALSE, 1, &zero, &zl));
      PetscCall(PetscFree(v));
    }
  }
  PetscCall(InflReportRenderLayers(page, r, q));
  PetscCall(InflPageRowEnd(page));
  PetscCall(InflPageSectionEnd(page));
  PetscFunctionReturn(0);
}

/* Rank 0: the training examples by self-influence, highest first (non-finite values last), and the mean of the finite
 * values.  *rk (N) is allocated with PetscMalloc1. */
PetscErrorCode InflReportRankSelf(InflReport r, Ranked **rk, double *mean)
{
  int64_t nfin = 0;
  double  sum  = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(PetscMax(r->N, 1), rk));
  for (int64_t i = 0; i < r->N; i++) {
    (*rk)[i].v = isfinite(r->self[i]) ? r->self[i] : -INFINITY;
    (*rk)[i].i = i;
    if (isfinite(r->self[i])) {
      sum += r->self[i];
      nfin++;
    }
  }
  qsort(*rk, (size_t)r->N, sizeof(Ranked), InflReportRankedDesc);
  *mean = nfin ? sum / (double)nfin : 0;
  PetscFunctionReturn(0);
}

static PetscErrorCode render_self(InflPage page, InflReport r, unsigned char *pix)
{
  Ranked  *rk;
  int64_t  n = PetscMin(r->nself, r->N), *idx, *y;
  float   *x;
  double   mean = 0;
  char     title[128];

  PetscFunctionBegin;
  PetscCall(InflPageSectionBegin(page, "self-influence", "Highest self-influence"));
  PetscCall(InflPageText(page, NULL, "Training examples whose own loss the model is most sensitive to (self-influence <P(z), grad L(z)>). High values often mark mislabeled, ambiguous or atypical examples; check their labels."));
  PetscCall(InflReportRankSelf(r, &rk, &mean));
  PetscCall(PetscMalloc3(PetscMax(n, 1), &idx, PetscMax(n, 1), &y, PetscMax(n, 1) * r->d, &x));
  for (int64_t i = 0; i < n; i++) idx[i] = rk[i].i;
  if (n > 0) PetscCall(InflDataGetExamples(r->train, (PetscInt)n, idx, x, y));
  PetscCall(PetscSNPrintf(title, sizeof(title), "The %" PRId64 " training examples of highest self-influence", n));
  PetscCall(InflPageGalleryBegin(page, title));
  for (int64_t i = 0; i < n; i++) PetscCall(train_item(page, r, x + i * r->d, idx[i], y[i], "self", rk[i].v, NULL, NULL, pix));
  PetscCall(InflPageGalleryEnd(page));
  {
    double      m  = mean;
    const char *ml = "mean";
    PetscCall(PetscSNPrintf(title, sizeof(title), "Self-influence of all %" PRId64 " training examples", r->N));
    PetscCall(InflPageHistogram(page, title, r->N, r->self, r->bins, PETSC_TRUE, 1, &m, &ml));
  }
  PetscCall(PetscFree3(idx, y, x));
  PetscCall(PetscFree(rk));
  PetscCall(InflPageSectionEnd(page));
  PetscFunctionReturn(0);
}

/* The provenance footers: the scores file, the self-influence file, this report. */
static PetscErrorCode footer(InflPage page, InflReport r, const char out_name[], const char created[], PetscMPIInt size)
{
  PetscFunctionBegin;
  /* provenance */
  PetscCall(InflPageFooter(page, "Scores file", r->prov_scores.n, (const char *const *)r->prov_scores.keys, (const char *const *)r->prov_scores.values));
  if (r->has_self) PetscCall(InflPageFooter(page, "Self-influence file", r->prov_self.n, (const char *const *)r->prov_self.keys, (const char *const *)r->prov_self.values));
  {
    char        ranks[32];
    const char *th, *qh, *ts, *qs;
    const char *keys[7] = {"report", "created", "ranks", "train data", "train sha256", "query data", "query sha256"}, *vals[7];
    PetscCall(InflDataGetHash(r->train, &th));
    qh = qs = "(the queries are stored in the scores file)";
    if (r->query) PetscCall(InflDataGetHash(r->query, &qh));
    PetscCall(InflDataGetSpec(r->train, &ts));
    if (r->query) PetscCall(InflDataGetSpec(r->query, &qs));
    PetscCall(PetscSNPrintf(ranks, sizeof(ranks), "%d", (int)size));
    vals[0] = out_name;
    vals[1] = created;
    vals[2] = ranks;
    vals[3] = ts;
    vals[4] = th;
    vals[5] = qs;
    vals[6] = qh;
    PetscCall(InflPageFooter(page, "This report (infl " INFL_VERSION_STRING ")", 7, keys, vals));
  }
  PetscFunctionReturn(0);
}

/* Rank 0: the whole page, written to `path`. */
static PetscErrorCode render(InflReport r, const char path[], const char out_name[])
{
  InflPage       page;
  PetscInt       nq = (PetscInt)PetscMin(r->Q, r->nshow), ks = (PetscInt)(r->kshow > 0 ? PetscMin(r->kshow, r->K) : r->K);
  int64_t        ntr = 2 * (int64_t)nq * ks, same = 0, total = 0, *tidx, *yt, *yq;
  float         *xt, *xq;
  unsigned char *pix;
  char           sub[512], created[64];
  time_t         now = time(NULL);
  struct tm      utc;
  PetscMPIInt    size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(r->comm, &size));
  gmtime_r(&now, &utc);
  strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &utc);
  PetscCall(PetscSNPrintf(sub, sizeof(sub), "%s: %" PRId64 " queries against %" PRId64 " training examples, top-%" PRId64 "; generated %s", r->prov_scores.path, r->Q, r->N, r->K, created));
  PetscCall(InflPageCreate(r->title, sub, &page));
  if (r->text) { /* token sequences: text.c renders the queries and the self-influence extremes */
    PetscCall(InflReportRenderText(page, r, nq, ks));
    PetscCall(footer(page, r, out_name, created, size));
    PetscCall(InflPageWrite(page, path));
    PetscCall(InflPageDestroy(&page));
    PetscFunctionReturn(0);
  }
  PetscCall(PetscMalloc1(InflImageMaxPixels, &pix));

  /* the examples shown: queries, then (proponents, opponents) of each shown query; index -1 read as 0, not shown */
  PetscCall(PetscMalloc3(PetscMax(ntr, 1), &tidx, PetscMax(ntr, 1), &yt, PetscMax(ntr, 1) * r->d, &xt));
  PetscCall(PetscMalloc2(PetscMax(nq, 1), &yq, PetscMax(nq, 1) * r->d, &xq));
  for (int s = 0; s < 2; s++)
    for (PetscInt q = 0; q < nq; q++)
      for (PetscInt k = 0; k < ks; k++) {
        int64_t e = (int64_t)q * r->K + k, v = s == 0 ? r->top_idx[e] : r->bot_idx[e];
        tidx[((int64_t)s * nq + q) * ks + k] = v >= 0 ? v : 0;
      }
  if (ntr > 0) PetscCall(InflDataGetExamples(r->train, (PetscInt)ntr, tidx, xt, yt));
  if (nq > 0) PetscCall(InflDataGetExamples(r->query, nq, r->qindex, xq, yq));

  /* summary */
  PetscCall(InflPageSectionBegin(page, "summary", "Summary"));
  PetscCall(InflPageText(page, NULL, "Influence of training examples on model predictions (EK-FAC influence functions). For each query, proponents are the training examples whose upweighting most lowers the query's loss (positive score), opponents those whose upweighting most raises it (negative score)."));
  PetscCall(InflPageText(page, "note", "Showing %d of %" PRId64 " queries (-report_queries), %d of the %" PRId64 " proponents and opponents kept per query (-report_k). %s%s", (int)nq, r->Q, (int)ks, r->K, r->full ? "Histograms show the scores of every training example. " : "The scores file has no full score matrix (infl score -score_save_all), so histograms show only the kept scores. ", r->L > 0 ? "Per-layer contributions are shown." : "No per-layer terms in the file (infl score -score_per_layer)."));
  if (!r->query_checked) PetscCall(InflPageText(page, "note", "The scores file records no query_sha256 (infl ihvp, or an older infl score), so the query data shown could not be checked against the scored queries."));
  if (r->d > 0) {
    int64_t side = (int64_t)llround(sqrt((double)r->d));
    if (side * side != r->d || side > 256) PetscCall(InflPageText(page, "note", "Examples have %" PRId64 " features, not a square image: each is drawn as a strip of its first %d features.", r->d, (int)PetscMin(r->d, 1024)));
  }
  PetscCall(InflPageSectionEnd(page));

  /* queries */
  for (PetscInt q = 0; q < nq; q++) PetscCall(render_query(page, r, q, nq, ks, xq + (int64_t)q * r->d, xt, yt, pix, &same, &total));
  if (total > 0) {
    char        v0[64], v1[64];
    const char *keys[2] = {"queries shown", "shown proponents sharing the query's label"}, *vals[2] = {v0, v1};
    PetscCall(PetscSNPrintf(v0, sizeof(v0), "%d", (int)nq));
    PetscCall(PetscSNPrintf(v1, sizeof(v1), "%" PRId64 " of %" PRId64 " (%.1f%%)", same, total, 100.0 * (double)same / (double)total));
    PetscCall(InflPageSectionBegin(page, "label-agreement", "Label agreement"));
    PetscCall(InflPageTable(page, NULL, 2, keys, vals));
    PetscCall(InflPageSectionEnd(page));
  }

  if (r->has_self) PetscCall(render_self(page, r, pix));

  PetscCall(footer(page, r, out_name, created, size));
  PetscCall(InflPageWrite(page, path));
  PetscCall(PetscFree3(tidx, yt, xt));
  PetscCall(PetscFree2(yq, xq));
  PetscCall(PetscFree(pix));
  PetscCall(InflPageDestroy(&page));
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportWrite(InflReport r, const char path[], PetscBool overwrite)
{
  char        partial[PETSC_MAX_PATH_LEN];
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCheck(r->loaded, r->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflReportLoadScores before InflReportWrite");
  PetscCallMPI(MPI_Comm_rank(r->comm, &rank));
  InflCheckAll(r->comm, overwrite || !InflFileExists(path), PETSC_ERR_FILE_OPEN, "output %s exists; pass -overwrite to replace it, or choose another -out", path);
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", path));
  InflCallAll(r->comm, rank == 0 ? render(r, partial, path) : 0);
  PetscCall(InflRenameAll(r->comm, partial, path));
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportSetTokenizer(InflReport r, InflTokenizer tok)
{
  PetscFunctionBegin;
  r->tok = tok;
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportDestroy(InflReport *r)
{
  PetscFunctionBegin;
  if (!r || !*r) PetscFunctionReturn(0);
  PetscCall(free_scores(*r));
  PetscCall(PetscFree((*r)->self));
  PetscCall(prov_free(&(*r)->prov_self));
  PetscCall(free_names(*r));
  PetscCall(PetscFree(*r));
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportFromFiles(MPI_Comm comm, const char scores[], InflData train, InflData query, InflTokenizer tok, const char self_path[], const char out[], PetscBool overwrite)
{
  InflReport r;

  PetscFunctionBegin;
  InflCheckAll(comm, overwrite || !InflFileExists(out), PETSC_ERR_FILE_OPEN, "output %s exists; pass -overwrite to replace it, or choose another -out", out);
  PetscCall(InflReportCreate(comm, &r));
  PetscCall(InflReportSetFromOptions(r));
  PetscCall(InflReportSetTokenizer(r, tok));
  PetscCall(InflReportLoadScores(r, scores, train, query));
  if (self_path && self_path[0]) PetscCall(InflReportLoadSelfInfluence(r, self_path));
  PetscCall(InflReportWrite(r, out, overwrite));
  PetscCall(InflReportDestroy(&r));
  PetscFunctionReturn(0);
}

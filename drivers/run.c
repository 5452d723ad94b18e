/* infl run: the whole study named by one options file (train if needed, fit, score, self-influence, summary, report),
 * for an MLP on rows of features or a GPT-2 on text or token data. */
#include "stages.h"
#include <infl/checkpoint.h>
#include <infl/report.h>
#include <infl/gpt2.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

/* Does the HDF5 file `path` exist and record model sha256 `hash`, training data `thash` and (if key_name) the
 * attribute key_name equal to `key`?  Collective. */
PetscErrorCode DriverOutputMatches(MPI_Comm comm, const char path[], const char hash[], const char thash[], const char key_name[], const char key[], PetscBool *match)
{
  hid_t     file;
  char      v[1024];
  PetscBool same;

  PetscFunctionBegin;
  *match = PETSC_FALSE;
  if (!InflFileExists(path)) PetscFunctionReturn(0);
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5GetAttrString(file, "/", "model_sha256", v, sizeof(v)));
  PetscCall(PetscStrcmp(v, hash, match));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", v, sizeof(v)));
  PetscCall(PetscStrcmp(v, thash, &same));
  *match = (PetscBool)(*match && same);
  if (key_name) {
    PetscCall(InflH5GetAttrString(file, "/", key_name, v, sizeof(v)));
    PetscCall(PetscStrcmp(v, key, &same));
    *match = (PetscBool)(*match && same);
  }
  PetscCall(InflH5Close(&file));
  if (!*match) PetscCall(PetscPrintf(comm, "   (%s was computed for another model, data or options: recomputing it)\n", path));
  PetscFunctionReturn(0);
}

static PetscErrorCode print_summary(MPI_Comm comm, const InflTopK *top, const InflTopK *bottom, InflData train, InflData query, PetscInt Q, const int64_t qidx[], PetscInt nshow)
{
  int64_t N, Nq, C, *ytrain, *yq, same = 0, total = 0;
  char  **names;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(train, &N, NULL, &C));
  PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
  PetscCall(DriverClassNames((PetscInt)C, &names));
  PetscCall(PetscMalloc2((size_t)Q * top->K * 2, &ytrain, Q, &yq));
  {
    int64_t *idx;
    float   *x;
    int64_t  d;
    PetscCall(InflDataGetSizes(train, NULL, &d, NULL));
    PetscCall(PetscMalloc2((size_t)Q * top->K * 2, &idx, (size_t)Q * top->K * 2 * d, &x));
    for (int64_t i = 0; i < (int64_t)Q * top->K; i++) {
      idx[i]                        = top->index[i] >= 0 ? top->index[i] : 0;
      idx[(int64_t)Q * top->K + i] = bottom->index[i] >= 0 ? bottom->index[i] : 0;
    }
    PetscCall(InflDataGetExamples(train, (PetscInt)(2 * Q * top->K), idx, x, ytrain));
    PetscCall(PetscFree2(idx, x));
    PetscCall(PetscMalloc1((size_t)Q * d, &x));
    PetscCall(InflDataGetExamples(query, Q, qidx, x, yq));
    PetscCall(PetscFree(x));
  }
#define LABEL(c) (names[c] ? names[c] : "")
#define SP(c)    (names[c] ? " " : "")
  PetscCall(PetscPrintf(comm, "\nTop proponents and opponents (training index: label, score)\n"));
  for (PetscInt q = 0; q < Q; q++) {
    for (PetscInt k = 0; k < top->n[q]; k++) {
      total++;
      if (ytrain[(int64_t)q * top->K + k] == yq[q]) same++;
    }
    if (q >= nshow) continue;
    PetscCall(PetscPrintf(comm, "query %" PRId64 " (label %" PRId64 "%s%s)\n  proponents:", qidx[q], yq[q], SP(yq[q]), LABEL(yq[q])));
    for (PetscInt k = 0; k < PetscMin(top->n[q], 5); k++) {
      int64_t i = (int64_t)q * top->K + k;
      PetscCall(PetscPrintf(comm, "  %" PRId64 ": %" PRId64 "%s%s (%.3g)", top->index[i], ytrain[i], SP(ytrain[i]), LABEL(ytrain[i]), top->score[i]));
    }
    PetscCall(PetscPrintf(comm, "\n  opponents: "));
    for (PetscInt k = 0; k < PetscMin(bottom->n[q], 5); k++) {
      int64_t i = (int64_t)q * bottom->K + k;
      PetscCall(PetscPrintf(comm, "  %" PRId64 ": %" PRId64 "%s%s (%.3g)", bottom->index[i], ytrain[(int64_t)Q * top->K + i], SP(ytrain[(int64_t)Q * top->K + i]), LABEL(ytrain[(int64_t)Q * top->K + i]), bottom->score[i]));
    }
    PetscCall(PetscPrintf(comm, "\n"));
  }
#undef LABEL
#undef SP
  PetscCall(PetscPrintf(comm, "top-%d proponents sharing the query's label: %" PRId64 " of %" PRId64 " (%.1f%%)\n", (int)top->K, same, total, total ? 100.0 * (double)same / (double)total : 0.0));
  for (int64_t c = 0; c < C; c++) PetscCall(PetscFree(names[c]));
  PetscCall(PetscFree(names));
  PetscCall(PetscFree2(ytrain, yq));
  PetscFunctionReturn(0);
}

/* First line of the decoded tokens (at most `width` bytes, a final "..." when cut), into line (width + 4). */
static PetscErrorCode first_line(InflTokenizer tok, int64_t n, const int32_t ids[], size_t width, char line[])
{
  char  *text;
  size_t len, k = 0;

  PetscFunctionBegin;
  PetscCall(InflTokenizerDecode(tok, ids, n, &len, &text));
  while (k < len && (text[k] == '\n' || text[k] == ' ')) k++; /* skip leading blank lines */
  {
    size_t j = 0;
    for (; k < len && text[k] != '\n' && j < width; k++) line[j++] = text[k] == '\t' ? ' ' : text[k];
    if (k < len && text[k] != '\n') {
      memcpy(line + j, "...", 3);
      j += 3;
    }
    line[j] = 0;
  }
  PetscCall(PetscFree(text));
  PetscFunctionReturn(0);
}

/* The summary of a language model's scores: each shown query's text, its top proponent and opponent training
 * sequences (first line) with their scores. */
static PetscErrorCode print_summary_text(MPI_Comm comm, const InflTopK *top, const InflTopK *bottom, InflTokenizer tok, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, PetscInt nshow)
{
  int64_t     seq, qseq = 0, off[2];
  int32_t    *buf;
  char        line[96];
  PetscMPIInt rank;
  int         wrong = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(InflDataGetSizes(train, NULL, &seq, NULL));
  if (query) PetscCall(InflDataGetSizes(query, NULL, &qseq, NULL));
  PetscCall(PetscMalloc1(PetscMax(seq, qseq) + 1, &buf));
  PetscCall(PetscPrintf(comm, "\nTop proponents and opponents (training sequence: score, first line)\n"));
  for (PetscInt q = 0; q < PetscMin(Q, nshow) && rank == 0; q++) {
    if (prompts) {
      const int64_t o = prompts->offsets[q], n = prompts->offsets[q + 1] - o;
      PetscCall(first_line(tok, n, prompts->tokens + o, 80, line));
      PetscCall(PetscPrintf(PETSC_COMM_SELF, "query %d (prompt): %s\n", (int)q, line));
    } else {
      PetscCall(InflDataGetSequences(query, 1, &qidx[q], buf, off));
      PetscCall(first_line(tok, off[1], buf, 80, line));
      PetscCall(PetscPrintf(PETSC_COMM_SELF, "query %" PRId64 ": %s\n", qidx[q], line));
    }
    for (int s = 0; s < 2; s++) {
      const InflTopK *t = s == 0 ? top : bottom;
      for (PetscInt k = 0; k < PetscMin(t->n[q], 3); k++) {
        const int64_t i = (int64_t)q * t->K + k;
        PetscCall(InflDataGetSequences(train, 1, &t->index[i], buf, off));
        PetscCall(first_line(tok, off[1], buf, 70, line));
        /* a kept score of the wrong sign (fewer negative, or positive, scores than kept) is no opponent (proponent) */
        const char *label = s == 0 ? (t->score[i] > 0 ? "proponent" : "highest  ") : (t->score[i] < 0 ? "opponent " : "lowest   ");
        wrong |= label[0] == 'h' || label[0] == 'l';
        PetscCall(PetscPrintf(PETSC_COMM_SELF, "  %s %7" PRId64 " (%9.3g): %s\n", label, t->index[i], t->score[i], line));
      }
    }
  }
  if (wrong) PetscCall(PetscPrintf(PETSC_COMM_SELF, "(lowest / highest: among the kept bottom-k / top-k, but of the wrong sign: not an opponent / proponent)\n"));
  PetscCall(PetscFree(buf));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverPrintSummary(MPI_Comm comm, const char scores[], InflTokenizer tok, InflData train, InflData query, PetscInt Q, const int64_t qidx[], const StagePrompts *prompts, PetscInt nshow)
{
  InflTopK *t[2] = {NULL, NULL};
  hid_t     file;
  int       nd;
  int64_t   dk[8];

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, scores, PETSC_FALSE, &file));
  PetscCall(InflH5GetDims(file, "/topk/scores", &nd, dk));
  InflCheckAll(comm, nd == 2 && dk[0] == Q && dk[1] >= 1, PETSC_ERR_FILE_UNEXPECTED, "%s: /topk/scores is not a (%d, K) array: the file is damaged; recompute it", scores, (int)Q);
  for (int s = 0; s < 2; s++) {
    PetscCall(InflTopKCreate(Q, (PetscInt)dk[1], s == 0 ? PETSC_TRUE : PETSC_FALSE, &t[s]));
    PetscCall(InflH5ReadArray(file, s == 0 ? "/topk/scores" : "/bottomk/scores", H5T_NATIVE_DOUBLE, 2, dk, NULL, t[s]->score));
    PetscCall(InflH5ReadArray(file, s == 0 ? "/topk/train_indices" : "/bottomk/train_indices", H5T_NATIVE_INT64, 2, dk, NULL, t[s]->index));
    for (PetscInt q = 0; q < Q; q++) /* the file's lists end with index -1 where fewer entries were kept */
      for (t[s]->n[q] = 0; t[s]->n[q] < t[s]->K && t[s]->index[(int64_t)q * t[s]->K + t[s]->n[q]] >= 0; t[s]->n[q]++) {}
    t[s]->sorted = PETSC_TRUE;
  }
  PetscCall(InflH5Close(&file));
  if (tok) PetscCall(print_summary_text(comm, t[0], t[1], tok, train, query, Q, qidx, prompts, nshow));
  else PetscCall(print_summary(comm, t[0], t[1], train, query, Q, qidx, nshow));
  PetscCall(InflTopKDestroy(&t[0]));
  PetscCall(InflTopKDestroy(&t[1]));
  PetscFunctionReturn(0);
}

/* The options file of a study also sets the options of stages a resumed job skips (training when the model
 * exists, the fit when the factors match) and of later steps (self-influence, summary): read them now, so that
 * only misspelled options are reported as unused. */
PetscErrorCode DriverStudyOptionsUsed(MPI_Comm comm)
{
  InflTrainOptions topt;
  InflEKFAC        probe;
  PetscBool        set;

  PetscFunctionBegin;
  PetscCall(InflTrainOptionsFromOptions(comm, &topt));
  PetscCall(InflEKFACCreate(comm, &probe));
  PetscCall(InflEKFACSetFromOptions(probe));
  PetscCall(InflEKFACDestroy(&probe));
  PetscCall(PetscOptionsHasName(NULL, NULL, "-model_dims", &set));
  PetscCall(PetscOptionsHasName(NULL, NULL, "-class_names", &set));
  PetscCall(PetscOptionsHasName(NULL, NULL, "-self_chunk", &set));
  PetscCall(PetscOptionsHasName(NULL, NULL, "-query_indices", &set)); /* read after the model for token data */
  PetscCall(PetscOptionsHasName(NULL, NULL, "-tokens_text_format", &set)); /* read with the text data, after the model */
  PetscCall(PetscOptionsHasName(NULL, NULL, "-tokens_document_start", &set));
  { /* a new GPT-2's -gpt2_* options, read only when the study trains one */
    InflModel g;
    PetscCall(InflModelCreate(comm, &g));
    PetscCall(InflModelSetType(g, "gpt2"));
    PetscCall(InflModelSetFromOptions(g));
    PetscCall(InflModelDestroy(&g));
  }
  PetscFunctionReturn(0);
}

/* The options of every stage a study runs (scorer, report, EK-FAC: DriverStudyOptionsUsed and these), read before any
 * work so that a misspelled option stops it; fit_key (len bytes) receives the EK-FAC options' key, which decides
 * whether existing factors are reused. */
PetscErrorCode DriverStudyFitKey(MPI_Comm comm, char fit_key[], size_t len)
{
  InflScorer probe;
  InflReport rprobe;
  InflEKFAC  ekprobe;

  PetscFunctionBegin;
  PetscCall(InflScorerCreate(comm, &probe));
  PetscCall(InflScorerSetFromOptions(probe));
  PetscCall(InflScorerDestroy(&probe));
  PetscCall(InflReportCreate(comm, &rprobe));
  PetscCall(InflReportSetFromOptions(rprobe));
  PetscCall(InflReportDestroy(&rprobe));
  PetscCall(InflEKFACCreate(comm, &ekprobe));
  PetscCall(InflEKFACSetFromOptions(ekprobe));
  PetscCall(InflEKFACGetKey(ekprobe, PETSC_FALSE, fit_key, len));
  PetscCall(InflEKFACDestroy(&ekprobe));
  PetscCall(DriverStudyOptionsUsed(comm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverRun(MPI_Comm comm, PetscBool help)
{
  char        outdir[PETSC_MAX_PATH_LEN] = "infl-out", mpath[PETSC_MAX_PATH_LEN] = "", fpath[PETSC_MAX_PATH_LEN], spath[PETSC_MAX_PATH_LEN], selfpath[PETSC_MAX_PATH_LEN];
  PetscBool   overwrite = PETSC_FALSE, set, match;
  InflData    train, test, query;
  InflModel   model;
  InflEKFAC   ek = NULL;
  PetscInt    Q, nshow = 5;
  int64_t    *qidx, Nq;
  const char *hash, *thash;
  char        fit_key[128], self_key[1024], ppath[PETSC_MAX_PATH_LEN] = "";
  PetscMPIInt rank;
  PetscBool       seq = PETSC_FALSE;
  InflDataContent kind;
  StagePrompts    prompts = {0};
  InflTokenizer   tok     = NULL;

  PetscFunctionBegin;
  { /* -ensemble M: drivers/ensemble.c */
    PetscInt M;
    PetscCall(DriverEnsembleRequested(comm, help, &M));
    if (M > 1) {
      PetscCall(InflDriverRunEnsemble(comm, help));
      PetscFunctionReturn(0);
    }
  }
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(InflOptionsCheckLength(comm, "-outdir", sizeof(outdir) - 32, "give a shorter directory (a symbolic link or a relative path)"));
  PetscCall(InflOptionsCheckLength(comm, "-model", sizeof(mpath) - 32, "give a shorter path (a symbolic link or a relative path)"));
  PetscOptionsBegin(comm, NULL, "infl run: the whole study", NULL);
  PetscCall(PetscOptionsString("-outdir", "directory of the study's outputs", NULL, outdir, outdir, sizeof(outdir), NULL));
  PetscCall(PetscOptionsString("-model", "model file (a GPT-2's directory for text or token data): used if it exists, else trained and written there (default OUTDIR/model.safetensors, OUTDIR/model for a GPT-2)", NULL, mpath, mpath, sizeof(mpath), &set));
  PetscCall(PetscOptionsString("-query_prompts", "language models: prompt/completion queries (a file of prompts and completions separated by a line \">>>\", queries by \"%\" lines; docs/FORMATS.md) instead of -query", NULL, ppath, ppath, sizeof(ppath), NULL));
  PetscCall(PetscOptionsBool("-overwrite", "recompute every stage, replacing existing outputs", NULL, overwrite, &overwrite, NULL));
  PetscCall(PetscOptionsInt("-summary_queries", "queries shown in the printed summary", NULL, nshow, &nshow, NULL));
  {
    PetscInt chunk = 512;
    PetscCall(PetscOptionsInt("-self_chunk", "training examples (sequences) per chunk of the self-influence stage (default 512; sequences: as many as fit in 8192 tokens, fewer for a vocabulary above 256)", NULL, chunk, &chunk, NULL));
  }
  PetscOptionsEnd();
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "test", PETSC_FALSE, help, &test));
  PetscCall(DriverOpenData(comm, "query", PETSC_FALSE, help, &query));
  if (help) PetscFunctionReturn(0);
  PetscCall(InflDataGetContent(train, &kind));
  seq = kind == INFL_DATA_SEQUENCES ? PETSC_TRUE : PETSC_FALSE;
  {
    InflData d[2] = {test, query};
    for (int i = 0; i < 2; i++) {
      InflDataContent k;
      const char     *ts, *ss;
      if (!d[i]) continue;
      PetscCall(InflDataGetContent(d[i], &k));
      PetscCall(InflDataGetSpec(train, &ss));
      PetscCall(InflDataGetSpec(d[i], &ts));
      PetscCheck(k == kind, comm, PETSC_ERR_ARG_INCOMP, "infl run: -%s data %s holds %s but -train data %s holds %s; give both as %s", i ? "query" : "test", ts, k == INFL_DATA_ROWS ? "rows of features" : "token sequences", ss, kind == INFL_DATA_ROWS ? "rows of features" : "token sequences", seq ? "text: or tokens: data" : "idx: or h5: data");
    }
  }
  PetscCheck(!(ppath[0] && query), comm, PETSC_ERR_ARG_INCOMP, "give either -query (a data set, with -query_indices) or -query_prompts %s, not both", ppath);
  PetscCheck(!ppath[0] || seq, comm, PETSC_ERR_ARG_INCOMP, "-query_prompts %s: prompt/completion queries are for language models (text: or tokens: training data), but -train holds rows of features", ppath);
  if (!query && !ppath[0]) query = test;
  PetscCall(DriverCheckClassNames(comm, train));
  PetscCall(DriverCheckClassNames(comm, query));
  PetscCheck(query || ppath[0], comm, PETSC_ERR_ARG_NULL, "infl run needs -query (or -test) data for the queries%s", seq ? ", or -query_prompts FILE" : "");
  char mkdir_err[160] = ""; /* why rank 0 could not create -outdir, for the message */
  if (rank == 0 && mkdir(outdir, 0775) != 0 && errno != EEXIST) {
    set = PETSC_FALSE;
    PetscCall(PetscSNPrintf(mkdir_err, sizeof(mkdir_err), " (creating it failed: %s)", strerror(errno)));
  }
  PetscCallMPI(MPI_Barrier(comm)); /* the directory exists before the other ranks look */
  {
    struct stat st;
    /* rank 0 alone: the others may get here before its mkdir (the agreement is the barrier after it) */
    InflCheckAll(comm, rank != 0 || (stat(outdir, &st) == 0 && S_ISDIR(st.st_mode)), PETSC_ERR_FILE_OPEN, "-outdir %s is not a directory that can be created or used%s", outdir, mkdir_err);
  }
  if (!mpath[0]) PetscCall(PetscSNPrintf(mpath, sizeof(mpath), seq ? "%s/model" : "%s/model.safetensors", outdir));
  PetscCall(PetscSNPrintf(fpath, sizeof(fpath), "%s/factors.h5", outdir));
  PetscCall(PetscSNPrintf(spath, sizeof(spath), "%s/scores.h5", outdir));
  PetscCall(PetscSNPrintf(selfpath, sizeof(selfpath), "%s/self_influence.h5", outdir));
  { /* the study's outputs are checked and locked before any work (each is replaced when recomputed) */
    char        rpath[PETSC_MAX_PATH_LEN];
    const char *outs[] = {fpath, spath, selfpath, rpath};
    PetscCall(PetscSNPrintf(rpath, sizeof(rpath), "%s/report.html", outdir));
    for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) PetscCall(DriverCheckOutput(comm, outs[i], PETSC_TRUE));
    if (!InflFileExists(mpath)) PetscCall(seq ? DriverCheckOutputDirectory(comm, mpath, PETSC_TRUE) : DriverCheckOutput(comm, mpath, PETSC_TRUE)); /* to be trained */
  }
  Q    = 0;
  qidx = NULL;
  if (!seq) { /* token data: the windows (and so the query count) depend on the model, read below */
    PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
    PetscCall(DriverQueryIndices(comm, Nq, &Q, &qidx));
  }
  /* every option of every stage is read now, so that a misspelled one stops the study before any work */
  {
    InflScorer probe;
    PetscCall(InflScorerCreate(comm, &probe));
    PetscCall(InflScorerSetFromOptions(probe));
    PetscCall(InflScorerDestroy(&probe));
  }
  {
    InflReport probe;
    PetscCall(InflReportCreate(comm, &probe));
    PetscCall(InflReportSetFromOptions(probe));
    PetscCall(InflReportDestroy(&probe));
  }
  PetscCall(DriverStudyOptionsUsed(comm));
  PetscCall(DriverCheckUnusedOptions(comm));
  {
    InflEKFAC probe;
    PetscCall(InflEKFACCreate(comm, &probe));
    PetscCall(InflEKFACSetFromOptions(probe));
    PetscCall(InflEKFACGetKey(probe, PETSC_FALSE, fit_key, sizeof(fit_key)));
    PetscCall(InflEKFACDestroy(&probe));
  }

  /* 1. model */
  if (InflFileExists(mpath) && !overwrite) {
    PetscCall(PetscPrintf(comm, "== model: using %s (the training options do not apply; remove it or pass -overwrite to train again)\n", mpath));
    PetscCall(DriverLoadModel(comm, mpath, &model));
  } else { /* train a new model: a GPT-2 of the -gpt2_* options on token data, else an MLP of -model_dims */
    InflTrainOptions topt;
    PetscCall(InflTrainOptionsFromOptions(comm, &topt));
    PetscCall(PetscPrintf(comm, "== train: %s\n", mpath));
    if (seq) {
      PetscCall(DriverNewGPT2(comm, topt.seed, &model));
      PetscCall(InflModelCheckData(model, train));
      if (test) PetscCall(InflModelCheckData(model, test));
    } else {
      PetscInt  dims[64] = {0}, nd = 64;
      PetscBool dset;
      PetscCall(InflModelCreate(comm, &model));
      PetscCall(PetscOptionsGetIntArray(NULL, NULL, "-model_dims", dims, &nd, &dset));
      PetscCall(DriverMLPDims(comm, train, dims, &nd, dset));
      PetscCall(InflModelSetUpMLP(model, nd, dims, INFL_ACT_RELU, topt.seed));
    }
    PetscCall(PetscPrintf(comm, "initialized with seed %d (before training): ", (int)topt.seed));
    PetscCall(InflModelView(model, NULL));
    PetscCall(PetscStrncpy(topt.checkpoint, mpath, sizeof(topt.checkpoint)));
    PetscCall(InflModelTrain(model, train, test, &topt));
    PetscCall(InflModelSave(model, mpath));
    {
      char partial[PETSC_MAX_PATH_LEN + 16];
      PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", mpath));
      PetscCall(InflRemoveAll(comm, partial));
    }
    PetscCall(InflModelDestroy(&model));
    PetscCall(DriverLoadModel(comm, mpath, &model));
  }
  PetscCall(InflModelGetHash(model, &hash));
  if (seq) { /* the windows of the data for this model, the queries, the tokenizer */
    PetscCall(InflModelCheckData(model, train));
    if (test) PetscCall(InflModelCheckData(model, test));
    if (query && query != test) PetscCall(InflModelCheckData(model, query));
    if (ppath[0]) {
      PetscCall(DriverLoadPrompts(comm, ppath, mpath, model, &prompts));
      Q = prompts.Q;
    } else {
      PetscCall(InflDataGetSizes(query, &Nq, NULL, NULL));
      PetscCall(DriverQueryIndices(comm, Nq, &Q, &qidx));
    }
    PetscCall(DriverModelTokenizer(comm, mpath, model, &tok));
  }
  PetscCall(InflDataGetHash(train, &thash));
  if (test && seq) {
    double  tl, ppl;
    int64_t ntok;
    PetscCall(InflModelEvaluateSequences(model, test, 8, &tl, &ppl, &ntok));
    PetscCall(PetscPrintf(comm, "model test loss %.4f per token (%.4f bits), perplexity %.3f over %" PRId64 " predicted tokens\n", tl, tl / log(2.0), ppl, ntok));
  } else if (test) {
    double tl, ta;
    PetscCall(InflModelEvaluate(model, test, &tl, &ta));
    PetscCall(PetscPrintf(comm, "model test loss %.4f, accuracy %.4f\n", tl, ta));
  }

  /* 2. factors.  Under -mem_limit each stage counts the data sets kept for the later steps (StageHoldData), and
   * each stage's peak memory is its own (InflPeakMemoryReset) */
  PetscCall(StageHoldData(train, test, query, PETSC_FALSE));
  PetscCall(InflPeakMemoryReset(NULL));
  PetscCall(DriverOutputMatches(comm, fpath, hash, thash, "fit_key", fit_key, &match));
  if (match && !overwrite) {
    PetscCall(PetscPrintf(comm, "== fit: using %s (fitted for this model)\n", fpath));
    PetscCall(StageLoadFactors(comm, fpath, model, train, ppath[0] ? NULL : query, Q, &ek)); /* the layer groups of the score stage */
  } else {
    PetscCall(PetscPrintf(comm, "== fit\n"));
    PetscCall(StageFitForScore(comm, model, train, fpath, ppath[0] ? NULL : query, Q, &ek)); /* in the layout of the score stage */
  }

  /* 3. scores (always recomputed: the summary needs them, and they are cheap next to the fit) */
  PetscCall(PetscPrintf(comm, "== score\n"));
  PetscCall(InflPeakMemoryReset(NULL));
  /* the scorer (its preconditioned queries and scores) is freed before self-influence: the summary reads the lists back */
  PetscCall(StageScore(comm, model, ek, train, query, Q, qidx, ppath[0] ? &prompts : NULL, spath, PETSC_TRUE, NULL));

  /* 4. self-influence */
  PetscCall(InflEKFACGetKey(ek, PETSC_TRUE, self_key, sizeof(self_key)));
  PetscCall(DriverOutputMatches(comm, selfpath, hash, thash, "self_key", self_key, &match));
  if (match && !overwrite) PetscCall(PetscPrintf(comm, "== self: using %s\n", selfpath));
  else {
    PetscCall(PetscPrintf(comm, "== self\n"));
    PetscCall(StageHoldData(train, test, query, PETSC_TRUE));
    PetscCall(InflPeakMemoryReset(NULL));
    PetscCall(StageSelf(comm, model, ek, train, selfpath, PETSC_TRUE));
  }
  PetscCall(InflMemLimitSetHeld(0));

  PetscCall(DriverPrintSummary(comm, spath, seq ? tok : NULL, train, query, Q, qidx, ppath[0] ? &prompts : NULL, nshow));
  PetscCall(PetscPrintf(comm, "\noutputs: %s, %s, %s, %s\n", mpath, fpath, spath, selfpath));
  {
    char rpath[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(rpath, sizeof(rpath), "%s/report.html", outdir));
    PetscCall(InflReportFromFiles(comm, spath, train, ppath[0] ? NULL : query, tok, selfpath, rpath, PETSC_TRUE));
    PetscCall(PetscPrintf(comm, "report: %s\n", rpath));
  }
  PetscCall(PetscFree(qidx));
  PetscCall(PetscFree3(prompts.offsets, prompts.tokens, prompts.targets));
  PetscCall(InflTokenizerDestroy(&tok));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflModelDestroy(&model));
  if (query != test) PetscCall(InflDataDestroy(&query));
  PetscCall(InflDataDestroy(&test));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

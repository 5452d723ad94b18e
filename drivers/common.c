#include "driver.h"
#include <infl/gpt2.h>
#include <infl/checkpoint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <inttypes.h>

PetscErrorCode DriverCheckGroupSize(MPI_Comm comm, const char name[], PetscInt group_size)
{
  PetscMPIInt size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCheck(group_size >= 0 && group_size <= size, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %d: give 0 (chosen by infl) or a number of ranks in [1, %d] (the ranks of the job)", name, (int)group_size, (int)size);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverParseLearningRate(MPI_Comm comm, const char what[], const char value[], double *eta)
{
  char *end;

  PetscFunctionBegin;
  *eta = strtod(value, &end);
  PetscCheck(*end == 0 && isfinite(*eta) && *eta > 0, comm, PETSC_ERR_FILE_UNEXPECTED, "%s train_lr \"%s\" is not a positive number; give the learning rates with -tracin_lr", what, value);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckpointLearningRate(MPI_Comm comm, const char path[], const char of[], double *eta)
{
  char v[96], what[PETSC_MAX_PATH_LEN + 32];

  PetscFunctionBegin;
  PetscCall(InflModelReadMetadata(comm, path, "train_lr", v, sizeof(v)));
  PetscCheck(v[0], comm, PETSC_ERR_ARG_WRONG, "checkpoint %s%s records no learning rate (metadata train_lr; infl train -checkpoint_every writes it): give the learning rates with -tracin_lr eta1,eta2,...", path, of);
  PetscCall(PetscSNPrintf(what, sizeof(what), "checkpoint %s: metadata", path));
  PetscCall(DriverParseLearningRate(comm, what, v, eta));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckListLength(MPI_Comm comm, const char name[], PetscInt max, const char what[])
{
  const char *v = NULL;
  PetscBool   set;
  PetscInt    n = 1;

  PetscFunctionBegin;
  PetscCall(PetscOptionsFindPair(NULL, NULL, name, &v, &set));
  if (!set || !v) PetscFunctionReturn(0);
  for (const char *p = v; *p; p++) n += *p == ',';
  PetscCheck(n <= max, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s lists %d %s, but at most %d can be used in one run", name, (int)n, what, (int)max);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverGetString(MPI_Comm comm, const char name[], const char text[], char value[], size_t len, PetscBool required, PetscBool help)
{
  PetscBool set;

  PetscFunctionBegin;
  value[0] = 0;
  PetscCall(InflOptionsCheckLength(comm, name, len, "give a shorter path (a symbolic link or a relative path)"));
  PetscOptionsBegin(comm, NULL, name, NULL); /* one title per option: -help prints each title's options once */
  PetscCall(PetscOptionsString(name, text, NULL, value, value, len, &set));
  PetscOptionsEnd();
  PetscCheck(set || !required || help, comm, PETSC_ERR_ARG_NULL, "option %s is required: %s", name, text);
  PetscCheck(!set || value[0] || help, comm, PETSC_ERR_ARG_NULL, "option %s was given without a value: %s", name, text);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverOpenData(MPI_Comm comm, const char prefix[], PetscBool required, PetscBool help, InflData *data)
{
  char     opt[64], optl[64], opts[64], spec[PETSC_MAX_PATH_LEN], text[400], ltext[32] = "0", tokdir[PETSC_MAX_PATH_LEN] = "";
  int64_t  limit = 0;
  PetscInt seq_len = 0;

  PetscFunctionBegin;
  *data = NULL;
  PetscCall(PetscSNPrintf(opt, sizeof(opt), "-%s", prefix));
  PetscCall(PetscSNPrintf(optl, sizeof(optl), "-%s_limit", prefix));
  PetscCall(PetscSNPrintf(opts, sizeof(opts), "-%s_seq_len", prefix));
  PetscCall(PetscSNPrintf(text, sizeof(text), "%s%s: idx:PREFIX (IDX files PREFIX-images-idx3-ubyte[.gz], PREFIX-labels-idx1-ubyte[.gz]), h5:FILE (/inputs, /labels), text:PATH (UTF-8 text, -tokens_text_format) or tokens:PATH (llm.c .bin, HDF5 /tokens /offsets)", prefix, strcmp(prefix, "data") ? " data" : " set"));
  PetscCall(DriverGetString(comm, opt, text, spec, sizeof(spec), required, help));
  PetscOptionsBegin(comm, NULL, "infl driver options", NULL);
  /* listed by -help as a string, parsed as a 64-bit count: PetscOptionsInt (32-bit PetscInt) would wrap 2^32+1 to 1 */
  PetscCall(InflOptionsCheckLength(comm, optl, sizeof(ltext), "give a count of examples"));
  PetscCall(PetscOptionsString(optl, "use only the first N examples (0: all; text and token data: the first N windows)", NULL, ltext, ltext, sizeof(ltext), NULL));
  PetscCall(PetscOptionsInt(opts, "token sequences: window length in tokens (0: the model's n_positions)", "InflDataSetSequenceLength", seq_len, &seq_len, NULL));
  PetscCall(PetscOptionsString("-tokenizer", "text data: directory of GPT-2 BPE files (default: beside the model, else byte-level for 256 tokens)", "InflDataSetTokenizerDir", tokdir, tokdir, sizeof(tokdir), NULL));
  PetscOptionsEnd();
  PetscCall(InflOptionsGetInt64(comm, optl, 0, INT64_MAX, &limit, NULL)); /* 0 means all examples */
  if (help || !spec[0]) PetscFunctionReturn(0);
  PetscCall(InflDataOpenNamed(comm, spec, prefix, limit, data));
  {
    InflDataContent kind;
    PetscCall(InflDataGetContent(*data, &kind));
    if (kind == INFL_DATA_SEQUENCES) {
      PetscCall(InflDataSetTokenizerDir(*data, tokdir));
      PetscCall(InflDataSetSequenceLength(*data, seq_len));
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode DriverRequireRows(MPI_Comm comm, const char stage[], InflData data)
{
  InflDataContent kind;
  const char     *name, *spec;

  PetscFunctionBegin;
  if (!data) PetscFunctionReturn(0);
  PetscCall(InflDataGetContent(data, &kind));
  PetscCall(InflDataGetName(data, &name));
  PetscCall(InflDataGetSpec(data, &spec));
  PetscCheck(kind == INFL_DATA_ROWS, comm, PETSC_ERR_SUP, "%s: %s data %s holds token sequences; in this version %s takes rows of features (an MLP's idx: or h5: data); language models (gpt2) with text or token data are trained by infl train and read by infl eval, fit, score, self, report and run", stage, name ? name : "the", spec, stage);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverLoadPrompts(MPI_Comm comm, const char path[], const char model_path[], InflModel model, StagePrompts *p)
{
  char      tokdir[PETSC_MAX_PATH_LEN] = "";
  PetscBool seqmodel;
  PetscInt  V, P;

  PetscFunctionBegin;
  PetscCall(InflModelIsSequential(model, &seqmodel));
  PetscCheck(seqmodel, comm, PETSC_ERR_ARG_WRONG, "-query_prompts %s: prompt/completion queries are for language models, but the model %s reads rows of features; give -query with -query_indices", path, model_path);
  PetscCall(InflModelGetSequenceSizes(model, &V, &P));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-tokenizer", tokdir, sizeof(tokdir), NULL));
  PetscCall(InflPromptsLoad(comm, path, tokdir, V, P, model_path, &p->Q, &p->offsets, &p->tokens, &p->targets, p->hash));
  PetscFunctionReturn(0);
}

/* The directory "beside" a model: model_path itself when it is a directory, else the directory of its file. */
static PetscErrorCode model_dir(const char model_path[], char dir[], size_t len)
{
  struct stat sb;

  PetscFunctionBegin;
  PetscCall(PetscStrncpy(dir, model_path, len));
  if (stat(model_path, &sb) || !S_ISDIR(sb.st_mode)) {
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else PetscCall(PetscStrncpy(dir, ".", len));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode DriverModelTokenizer(MPI_Comm comm, const char model_path[], InflModel model, InflTokenizer *tok)
{
  char      dir[PETSC_MAX_PATH_LEN] = "";
  PetscBool seqmodel, set;
  PetscInt  V, P;

  PetscFunctionBegin;
  *tok = NULL;
  PetscCall(InflModelIsSequential(model, &seqmodel));
  if (!seqmodel) PetscFunctionReturn(0);
  PetscCall(InflModelGetSequenceSizes(model, &V, &P));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-tokenizer", dir, sizeof(dir), &set));
  if (!set || !dir[0]) PetscCall(model_dir(model_path, dir, sizeof(dir))); /* beside the model */
  PetscCall(InflTokenizerCreate(comm, tok));
  PetscCall(InflTokenizerSetUpForModel(*tok, dir, V));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverStudyTokenizer(MPI_Comm comm, PetscInt n, InflData data[], char beside[], size_t len)
{
  char      dir[PETSC_MAX_PATH_LEN] = "", mpath[PETSC_MAX_PATH_LEN] = "", outdir[PETSC_MAX_PATH_LEN] = "infl-out";
  PetscBool set, found;

  PetscFunctionBegin;
  beside[0] = 0;
  PetscCall(PetscOptionsGetString(NULL, NULL, "-tokenizer", dir, sizeof(dir), &set));
  if (set && dir[0]) PetscFunctionReturn(0);
  PetscCall(PetscOptionsGetString(NULL, NULL, "-model", mpath, sizeof(mpath), &set));
  if (!set || !mpath[0]) { /* infl run's model of the study: OUTDIR/model */
    PetscCall(PetscOptionsGetString(NULL, NULL, "-outdir", outdir, sizeof(outdir), NULL));
    PetscCall(PetscSNPrintf(mpath, sizeof(mpath), "%s/model", outdir));
  }
  PetscCall(model_dir(mpath, dir, sizeof(dir)));
  PetscCall(PetscStrncpy(beside, dir, len));
  PetscCall(InflTokenizerFilesIn(comm, dir, &found));
  if (!found) PetscFunctionReturn(0);
  PetscCall(PetscOptionsSetValue(NULL, "-tokenizer", dir)); /* for the GPT-2s' vocabulary (-gpt2_vocab_size 0) and the prompts */
  for (PetscInt i = 0; i < n; i++)
    if (data[i]) PetscCall(InflDataSetTokenizerDir(data[i], dir));
  PetscCall(PetscPrintf(comm, "tokenizer: the files beside the study's model, in %s\n", dir));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckTextVocab(MPI_Comm comm, InflModel model, PetscInt n, InflData data[], const char *const names[], const char beside[])
{
  char     tokdir[PETSC_MAX_PATH_LEN] = "", where[PETSC_MAX_PATH_LEN + 64] = "";
  PetscInt V;

  PetscFunctionBegin;
  PetscCall(PetscOptionsGetString(NULL, NULL, "-tokenizer", tokdir, sizeof(tokdir), NULL));
  PetscCall(InflModelGetSequenceSizes(model, &V, NULL));
  if (beside && beside[0]) PetscCall(PetscSNPrintf(where, sizeof(where), " and no tokenizer files beside the study's model (in %s)", beside));
  for (PetscInt i = 0; i < n; i++) {
    PetscBool   text;
    const char *spec;
    if (!data[i]) continue;
    PetscCall(InflDataGetSpec(data[i], &spec));
    PetscCall(PetscStrbeginswith(spec, "text:", &text));
    PetscCheck(!text || tokdir[0] || V == 256, comm, PETSC_ERR_ARG_INCOMP, "-gpt2_vocab_size %d with %s data %s and no -tokenizer%s: text without tokenizer files is read byte by byte (256 tokens); give -gpt2_vocab_size 256 (the default), or -tokenizer DIR with GPT-2 BPE files (vocab.json, merges.txt)%s", (int)V, names[i], spec, where, where[0] ? ", or -model of a study whose model has them beside it" : "");
  }
  PetscFunctionReturn(0);
}

PetscErrorCode DriverLoadModel(MPI_Comm comm, const char path[], InflModel *model)
{
  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, model));
  PetscCall(InflModelSetFromOptions(*model));
  PetscCall(InflModelLoad(*model, path));
  PetscFunctionReturn(0);
}

static PetscErrorCode parse_index_token(MPI_Comm comm, const char opt[], const char tok[], const char whole[], int64_t *v)
{
  char *end;
  long long x;

  PetscFunctionBegin;
  errno = 0;
  x     = strtoll(tok, &end, 10);
  PetscCheck(errno == 0 && end != tok && *end == 0, comm, PETSC_ERR_ARG_WRONG, "%s \"%s\": \"%s\" is not an integer; use a list \"3,17,40\", a range \"0:100\" or \"0:1000:10\", or \"@file\"", opt, whole, tok);
  *v = (int64_t)x;
  PetscFunctionReturn(0);
}

/* Room for one more index in v (n held, *cap allocated): doubles the array when full. */
static PetscErrorCode grow_indices(int64_t **v, int64_t n, int64_t *cap)
{
  int64_t *w;

  PetscFunctionBegin;
  if (n < *cap) PetscFunctionReturn(0);
  PetscCall(PetscMalloc1(2 * *cap, &w));
  PetscCall(PetscArraycpy(w, *v, n));
  PetscCall(PetscFree(*v));
  *v = w;
  *cap *= 2;
  PetscFunctionReturn(0);
}

PetscErrorCode DriverIndexList(MPI_Comm comm, const char opt[], const char def[], const char what[], const char set[], int64_t N, PetscInt *n_out, int64_t **idx)
{
  char      spec[PETSC_MAX_PATH_LEN], buf[PETSC_MAX_PATH_LEN], hint[160];
  PetscBool given;
  int64_t   n = 0, cap = 64, *v;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(hint, sizeof(hint), "for long lists write them to a file, one index per line, and give %s @FILE", opt));
  PetscCall(InflOptionsCheckLength(comm, opt, sizeof(spec), hint));
  PetscCall(PetscStrncpy(spec, def, sizeof(spec)));
  PetscCall(PetscOptionsGetString(NULL, NULL, opt, spec, sizeof(spec), &given));
  PetscCall(PetscMalloc1(cap, &v));
  if (spec[0] == '@') {
    FILE     *f  = fopen(spec + 1, "r");
    int       ok = f != NULL;
    long long x;
    InflCheckAll(comm, ok, PETSC_ERR_FILE_OPEN, "%s %s: cannot open %s: %s", opt, spec, spec + 1, strerror(errno));
    while (fscanf(f, "%lld", &x) == 1) {
      PetscCall(grow_indices(&v, n, &cap));
      v[n++] = x;
    }
    ok = feof(f);
    fclose(f);
    InflCheckAll(comm, ok, PETSC_ERR_FILE_READ, "%s %s: %s must hold one integer per line", opt, spec, spec + 1);
  } else if (strchr(spec, ':')) {
    int64_t a = 0, b = 0, s = 1;
    char   *p1, *p2;
    PetscCall(PetscStrncpy(buf, spec, sizeof(buf)));
    p1 = strchr(buf, ':');
    *p1++ = 0;
    p2    = strchr(p1, ':');
    if (p2) *p2++ = 0;
    PetscCall(parse_index_token(comm, opt, buf, spec, &a));
    PetscCall(parse_index_token(comm, opt, p1, spec, &b));
    if (p2) PetscCall(parse_index_token(comm, opt, p2, spec, &s));
    PetscCheck(s > 0 && b > a, comm, PETSC_ERR_ARG_WRONG, "%s %s: a range start:end[:step] needs end > start and step > 0", opt, spec);
    /* no arithmetic that can overflow (0 <= a < b): the count of the range, then of its indices below N */
    PetscCheck(a >= 0 && a < N, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %s: %s index %" PRId64 " is outside the %s, which has %" PRId64 " examples (valid: 0..%" PRId64 ")", opt, spec, what, a, set, N, N - 1);
    n = (b - a - 1) / s + 1;
    {
      int64_t nbelow = (N - a - 1) / s + 1;
      PetscCheck(n <= nbelow, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %s: %s index %" PRId64 " is outside the %s, which has %" PRId64 " examples (valid: 0..%" PRId64 "); give a range end <= %" PRId64, opt, spec, what, a + nbelow * s, set, N, N - 1, N);
    }
    PetscCheck(n <= PETSC_MAX_INT, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %s selects %" PRId64 " indices, more than %d; give a larger step or fewer indices", opt, spec, n, (int)PETSC_MAX_INT);
    PetscCall(PetscFree(v));
    PetscCall(PetscMalloc1(n, &v));
    for (int64_t i = 0; i < n; i++) v[i] = a + i * s;
  } else {
    char *tok, *save;
    PetscCall(PetscStrncpy(buf, spec, sizeof(buf)));
    for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
      PetscCall(grow_indices(&v, n, &cap));
      PetscCall(parse_index_token(comm, opt, tok, spec, &v[n++]));
    }
  }
  PetscCheck(n > 0, comm, PETSC_ERR_ARG_WRONG, "%s \"%s\" selects no %s", opt, spec, what);
  for (int64_t i = 0; i < n; i++) PetscCheck(v[i] >= 0 && v[i] < N, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s: %s index %" PRId64 " is outside the %s, which has %" PRId64 " examples (valid: 0..%" PRId64 ")", opt, what, v[i], set, N, N - 1);
  PetscCheck(n <= PETSC_MAX_INT, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s selects %" PRId64 " indices, more than %d", opt, n, (int)PETSC_MAX_INT);
  *n_out = (PetscInt)n;
  *idx = v;
  PetscFunctionReturn(0);
}

PetscErrorCode DriverQueryIndices(MPI_Comm comm, int64_t N, PetscInt *Q, int64_t **idx)
{
  PetscFunctionBegin;
  PetscCall(DriverIndexList(comm, "-query_indices", "0:8", "query", "query set", N, Q, idx));
  PetscFunctionReturn(0);
}

/* The options files of the run (-options_file on the command line or in PETSC_OPTIONS, and those they include),
 * recorded by DriverScanOptionsFiles before PetscInitialize: inputs that no output may overwrite. */
#define MAX_OPTIONS_FILES 32
#define MAX_OPTIONS_DEPTH 16
static char options_files[MAX_OPTIONS_FILES][PETSC_MAX_PATH_LEN];
static int  noptions_files = 0;

/* The next token of a line of an options file as PETSc reads it: blank-separated, double quotes removed (PETSc
 * takes single quotes as part of the text).  Advances *p; NULL at the end of the line. */
static char *options_token(char **p)
{
  char *s = *p, *t;

  while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
  if (!*s) return NULL;
  if (*s == '"') {
    char q = *s++;
    t = s;
    while (*s && *s != q) s++;
  } else {
    t = s;
    while (*s && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') s++;
  }
  if (*s) *s++ = 0;
  *p = s;
  return t;
}

typedef struct {
  const char *path; /* as named */
  int         line; /* the line of this file that names the next one in the chain */
  dev_t       dev;
  ino_t       ino;
} OptionsFileLink;

/* Record `path` and follow the -options_file lines inside it.  chain[0..depth-1]: the files that include it, with the
 * line naming the next.  Returns 0, or 1 with msg set. */
static int scan_options_file(const char path[], const char from[], OptionsFileLink chain[], int depth, char msg[], size_t len)
{
  FILE       *f;
  struct stat st;
  char        line[8192];
  int         lineno = 0, bad = 0, cont = 0; /* cont: this piece continues a line longer than the buffer */

  if (!(f = fopen(path, "r")) || fstat(fileno(f), &st) != 0) {
    snprintf(msg, len, "cannot read the options file %s given with -options_file%s%s: %s; fix the path (a relative path is taken from the working directory, also inside an options file)", path, from[0] ? " " : "", from, strerror(errno));
    if (f) fclose(f);
    return 1;
  }
  for (int i = 0; i < depth; i++) {
    size_t k;
    if (chain[i].dev != st.st_dev || chain[i].ino != st.st_ino) continue;
    if (i == depth - 1) snprintf(msg, len, "the options file %s includes itself (-options_file %s on line %d); PETSc would read it forever: remove that line", chain[i].path, path, chain[i].line);
    else {
      k = (size_t)snprintf(msg, len, "options files include each other in a cycle: ");
      for (int j = i; j < depth && k < len; j++) k += (size_t)snprintf(msg + k, len - k, "%s (line %d) -> ", chain[j].path, chain[j].line);
      if (k < len) snprintf(msg + k, len - k, "%s; PETSc would read them forever: remove one of those -options_file lines", path);
    }
    fclose(f);
    return 1;
  }
  if (depth == MAX_OPTIONS_DEPTH || noptions_files == MAX_OPTIONS_FILES) {
    snprintf(msg, len, "the options file %s%s%s is nested %d deep or is one of more than %d options files; infl reads at most %d levels and %d files: merge some of them", path, from[0] ? " " : "", from, depth + 1, MAX_OPTIONS_FILES, MAX_OPTIONS_DEPTH, MAX_OPTIONS_FILES);
    fclose(f);
    return 1;
  }
  snprintf(options_files[noptions_files++], PETSC_MAX_PATH_LEN, "%s", path);
  chain[depth] = (OptionsFileLink){path, 0, st.st_dev, st.st_ino};
  while (!bad && fgets(line, sizeof(line), f)) {
    char *p = line, *name, *value, *hash = strchr(line, '#'), here[PETSC_MAX_PATH_LEN + 32];
    int   piece = cont;
    cont = !strchr(line, '\n');
    if (piece) continue;
    lineno++;
    if (hash) *hash = 0; /* a comment, as PETSc reads it */
    name  = options_token(&p);
    value = name ? options_token(&p) : NULL;
    if (name && strcmp(name, "alias")) { /* PETSc would stop with a long trace on these lines: say it plainly */
      char *extra = value ? options_token(&p) : NULL;
      if (name[0] != '-') {
        snprintf(msg, len, "the options file %s%s%s, line %d: \"%.200s\" is not an option; each line holds one option starting with '-' and its value (e.g. -train_limit 50), text after # is a comment", path, from[0] ? " " : "", from, lineno, name);
        bad = 1;
      } else if (extra) {
        snprintf(msg, len, "the options file %s%s%s, line %d: \"%.200s\" follows the option %.200s and its value \"%.200s\"; write one option per line, and put a value holding blanks in double quotes (single quotes are not quotes to PETSc)", path, from[0] ? " " : "", from, lineno, extra, name, value);
        bad = 1;
      }
      if (bad) break;
    }
    if (!name || strcmp(name, "-options_file") || !value) continue;
    chain[depth].line = lineno;
    snprintf(here, sizeof(here), "on line %d of %.4000s", lineno, path);
    {
      char next[PETSC_MAX_PATH_LEN];
      snprintf(next, sizeof(next), "%s", value);
      bad = scan_options_file(next, here, chain, depth + 1, msg, len);
    }
  }
  fclose(f);
  return bad;
}

int DriverScanOptionsFiles(int argc, char **argv, char msg[], size_t len)
{
  OptionsFileLink chain[MAX_OPTIONS_DEPTH];
  const char     *env = getenv("PETSC_OPTIONS");

  const char     *home = getenv("HOME");
  int             skip = 0;

  noptions_files = 0;
  for (int i = 1; i < argc; i++) skip |= !strcmp(argv[i], "-skip_petscrc");
  if (!skip) { /* the files PETSc reads by default, where they exist */
    char rc[PETSC_MAX_PATH_LEN];
    snprintf(rc, sizeof(rc), "%s/.petscrc", home ? home : "");
    if (home && !access(rc, F_OK) && scan_options_file(rc, "(read by PETSc by default)", chain, 0, msg, len)) return 1;
    if (!access(".petscrc", F_OK) && scan_options_file(".petscrc", "(read by PETSc by default)", chain, 0, msg, len)) return 1;
    if (!access("petscrc", F_OK) && scan_options_file("petscrc", "(read by PETSc by default)", chain, 0, msg, len)) return 1;
  }
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "-options_file") && scan_options_file(argv[i + 1], "", chain, 0, msg, len)) return 1;
  if (env) { /* PETSc reads PETSC_OPTIONS as a command line too */
    char buf[8192], *p = buf, *tok, *prev = NULL;
    snprintf(buf, sizeof(buf), "%s", env);
    while ((tok = options_token(&p))) {
      if (prev && !strcmp(prev, "-options_file") && scan_options_file(tok, "in PETSC_OPTIONS", chain, 0, msg, len)) return 1;
      prev = tok;
    }
  }
  return 0;
}

/* One input path (model: also the GPT-2 files in its directory or beside it). */
static PetscErrorCode add_input(char (*paths)[PETSC_MAX_PATH_LEN], int max, int *n, const char path[], PetscBool model)
{
  static const char *tok[] = {"vocab.json", "merges.txt", "encoder.json", "vocab.bpe"};
  struct stat        st;

  PetscFunctionBegin;
  if (!path[0]) PetscFunctionReturn(0);
  if (*n < max) PetscCall(PetscStrncpy(paths[(*n)++], path, PETSC_MAX_PATH_LEN));
  if (model) { /* GPT-2: config.json (and tokenizer files) in the directory or beside the file */
    char        dir[PETSC_MAX_PATH_LEN];
    const char *slash = strrchr(path, '/');
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) PetscCall(PetscStrncpy(dir, path, sizeof(dir)));
    else if (slash) PetscCall(PetscStrncpy(dir, path, PetscMin(sizeof(dir), (size_t)(slash - path) + 1)));
    else PetscCall(PetscStrncpy(dir, ".", sizeof(dir)));
    if (*n < max) PetscCall(PetscSNPrintf(paths[(*n)++], PETSC_MAX_PATH_LEN, "%s/config.json", dir));
    if (*n < max) PetscCall(PetscSNPrintf(paths[(*n)++], PETSC_MAX_PATH_LEN, "%s/model.safetensors", dir));
    for (size_t k = 0; k < sizeof(tok) / sizeof(tok[0]); k++)
      if (*n < max) PetscCall(PetscSNPrintf(paths[(*n)++], PETSC_MAX_PATH_LEN, "%s/%s", dir, tok[k]));
  }
  PetscFunctionReturn(0);
}

/* Input files named by the options of a stage: the paths of -model and of the TracIn -checkpoints (a GPT-2 directory: its
 * config.json and model.safetensors; a file: also config.json beside it), -factors, -scores, -self, -store, -file,
 * -query_prompts (each comma-separated part of a list, and the whole value), the
 * files of the data specs
 * (h5:FILE, idx:PREFIX's four possible files, text:/tokens: files, or "DIR/" for every file of a directory),
 * the tokenizer files of -tokenizer, -query_indices @FILE and the options files.  Fills up to `max` paths into
 * `paths` (each PETSC_MAX_PATH_LEN); a path ending in '/' stands for every file directly in that directory. */
static PetscErrorCode input_paths(char (*paths)[PETSC_MAX_PATH_LEN], int max, int *n)
{
  /* lists (TracIn: -checkpoints c1,c2, -store s1.h5,s2.h5 with -model m1,m2; infl lds: -scores s1.h5,s2.h5): every
   * comma-separated part is an input, and so is the whole value (a path holding a comma) */
  static const char *files[] = {"-model", "-checkpoints", "-factors", "-scores", "-self", "-store", "-file", "-query_prompts"};
  static const char *specs[] = {"-train", "-test", "-query", "-data"};
  static const char *idx[]   = {"-images-idx3-ubyte", "-images-idx3-ubyte.gz", "-labels-idx1-ubyte", "-labels-idx1-ubyte.gz"};
  static const char *tok[]   = {"vocab.json", "merges.txt", "encoder.json", "vocab.bpe"};
  const char        *v;
  PetscBool          set;
  struct stat        st;

  PetscFunctionBegin;
  *n = 0;
#define ADD(...) \
  do { \
    if (*n < max) PetscCall(PetscSNPrintf(paths[(*n)++], PETSC_MAX_PATH_LEN, __VA_ARGS__)); \
  } while (0)
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    PetscBool model = !strcmp(files[i], "-model") || !strcmp(files[i], "-checkpoints") ? PETSC_TRUE : PETSC_FALSE;
    PetscCall(PetscOptionsFindPair(NULL, NULL, files[i], &v, &set));
    if (!set || !v) continue;
    PetscCall(add_input(paths, max, n, v, model));
    if (strchr(v, ','))
      for (const char *part = v, *end; part; part = end ? end + 1 : NULL) {
        char one[PETSC_MAX_PATH_LEN];
        end = strchr(part, ',');
        PetscCall(PetscStrncpy(one, part, end ? PetscMin(sizeof(one), (size_t)(end - part) + 1) : sizeof(one)));
        PetscCall(add_input(paths, max, n, one, model));
      }
  }
  PetscCall(PetscOptionsFindPair(NULL, NULL, "-tokenizer", &v, &set));
  if (set && v)
    for (size_t k = 0; k < sizeof(tok) / sizeof(tok[0]); k++) ADD("%s/%s", v, tok[k]);
  PetscCall(PetscOptionsFindPair(NULL, NULL, "-query_indices", &v, &set));
  if (set && v && v[0] == '@') ADD("%s", v + 1);
  for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
    PetscCall(PetscOptionsFindPair(NULL, NULL, specs[i], &v, &set));
    if (!set || !v) continue;
    if (!strncmp(v, "h5:", 3)) ADD("%s", v + 3);
    if (!strncmp(v, "idx:", 4))
      for (size_t k = 0; k < sizeof(idx) / sizeof(idx[0]); k++) ADD("%s%s", v + 4, idx[k]);
    if (!strncmp(v, "text:", 5) || !strncmp(v, "tokens:", 7)) {
      const char *p = strchr(v, ':') + 1;
      if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) ADD("%s/", p);
      else ADD("%s", p);
    }
  }
  for (int i = 0; i < noptions_files; i++) ADD("%s", options_files[i]);
#undef ADD
  PetscFunctionReturn(0);
}

/* The lock of an output: rank 0 holds an exclusive flock on OUT.partial.lock for the life of the process; the file
 * records the holder as "host H, pid P, ranks N, start T" (T: the process's start time in clock ticks after boot, from
 * /proc, so that a reused pid is not taken for the holder).  DriverReleaseOutputs() unlocks and removes it. */
typedef struct {
  char path[PETSC_MAX_PATH_LEN + 16];
  int  fd;
} OutputLock;
static OutputLock locks[8];
static int        nlocks = 0;

/* Start time of process `pid` (field 22 of /proc/PID/stat), or 0 if unknown. */
static unsigned long long process_start(long pid)
{
  char               path[64], buf[1024], *p;
  unsigned long long t = 0;
  FILE              *f;
  size_t             n;

  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  if (!(f = fopen(path, "r"))) return 0;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  if (!(p = strrchr(buf, ')'))) return 0; /* the command name may hold blanks */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &t) != 1) return 0;
  return t;
}

/* Is the holder recorded in a lock file a process of this host that no longer exists (a crashed run)? */
static int holder_is_gone(const char holder[])
{
  char               host[256] = "", here[256] = "";
  long               pid       = 0;
  unsigned long long start     = 0;

  if (sscanf(holder, "host %255[^,], pid %ld, ranks %*d, start %llu", host, &pid, &start) < 2 || pid <= 0) return 0;
  gethostname(here, sizeof(here) - 1);
  if (strcmp(host, here)) return 0;                     /* another node: cannot tell */
  if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 1; /* no such process */
  return start && process_start(pid) && process_start(pid) != start; /* the pid now belongs to another process */
}

static void read_holder(int fd, char holder[], size_t len)
{
  ssize_t r = pread(fd, holder, len - 1, 0);
  holder[r > 0 ? r : 0] = 0;
  holder[strcspn(holder, "\n")] = 0;
}

/* Rank 0: take the lock of `out` (creating its lock file: the probe that the directory can hold the output).  A lock
 * file whose recorded holder is a process of this host that no longer exists is stale and taken over, also when its
 * flock lives on in a leftover process that inherited it.  On failure *ok = 0 and msg says why and how to clear it. */
static void lock_output(const char out[], int ranks, int *ok, char msg[], size_t len)
{
  char        lpath[PETSC_MAX_PATH_LEN + 16], holder[320] = "";
  struct stat a, b;

  *ok = 1;
  snprintf(lpath, sizeof(lpath), "%s.partial.lock", out);
  for (int i = 0; i < nlocks; i++)
    if (!strcmp(locks[i].path, lpath)) return; /* already held by this run (infl run, a stage after its driver) */
  if (nlocks == (int)(sizeof(locks) / sizeof(locks[0]))) {
    *ok = 0;
    snprintf(msg, len, "output %.400s: too many outputs locked by one run", out);
    return;
  }
  for (int attempt = 0; attempt < 5; attempt++) {
    int fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644), locked;
    if (fd < 0) {
      *ok = 0;
      if (errno == EISDIR) snprintf(msg, len, "cannot write output %.250s: %.260s, where infl keeps the lock of this output, is a directory; remove it (rm -r %.260s) or choose another -out", out, lpath, lpath);
      else snprintf(msg, len, "cannot write output %.400s: creating %.420s beside it failed: %s; choose -out in a writable directory", out, lpath, strerror(errno));
      return;
    }
    locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
    if (!locked) {
      int e = errno;
      read_holder(fd, holder, sizeof(holder));
      for (int w = 0; w < 40 && e == EWOULDBLOCK && !holder[0]; w++) { /* the holder writes its line right after taking the lock */
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        read_holder(fd, holder, sizeof(holder));
      }
      if (e == EWOULDBLOCK && holder_is_gone(holder)) {
        /* the recorded holder crashed, but a process it left behind keeps the flock: look again after a moment (a
         * new holder writes its line right after taking the lock), then replace the lock file */
        char again[sizeof(holder)];
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        read_holder(fd, again, sizeof(again));
        if (!strcmp(again, holder) && flock(fd, LOCK_EX | LOCK_NB) != 0) {
          printf("note: %s is left by a run that no longer exists (%s); taking it over\n", lpath, holder);
          unlink(lpath);
          close(fd);
          continue;
        }
      }
      if (e != EWOULDBLOCK && e != EINTR && (!holder[0] || holder_is_gone(holder))) locked = 1; /* a file system without flock: the recorded holder decides */
      if (!locked) {
        close(fd);
        *ok = 0;
        snprintf(msg, len, "output %.200s is being written by another infl process (%.120s, holding the lock %.210s); wait for it to finish or choose another -out.  If no infl process runs with that pid on that host (a job that crashed on another node, whose file system kept its lock), delete %.210s and rerun", out, holder[0] ? holder : "host and pid unknown", lpath, lpath);
        return;
      }
    }
    /* the holder before us may have removed the file between our open and our flock: then lock the new one */
    if (fstat(fd, &a) == 0 && stat(lpath, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      char host[128] = "?";
      gethostname(host, sizeof(host) - 1);
      snprintf(holder, sizeof(holder), "host %s, pid %ld, ranks %d, start %llu\n", host, (long)getpid(), ranks, process_start((long)getpid()));
      if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, strlen(holder), 0) != (ssize_t)strlen(holder)) {
        *ok = 0;
        snprintf(msg, len, "cannot write output %.400s: writing %.420s failed: %s; choose -out in a writable directory with free space", out, lpath, strerror(errno));
        close(fd);
        unlink(lpath);
        return;
      }
      snprintf(locks[nlocks].path, sizeof(locks[nlocks].path), "%s", lpath);
      locks[nlocks++].fd = fd;
      return;
    }
    close(fd);
  }
  *ok = 0;
  snprintf(msg, len, "output %.400s: cannot take the lock %.420s (it keeps being replaced); is another infl process starting on it?", out, lpath);
}

void DriverReleaseOutputs(void)
{
  for (int i = 0; i < nlocks; i++) {
    unlink(locks[i].path); /* before the unlock: a process waiting on this file then retries on a new one */
    close(locks[i].fd);
  }
  nlocks = 0;
}

/* The checks and the lock of DriverCheckOutput; dir: the output is a directory of files (a model directory), which
 * may exist (replaced under -overwrite) but must not be a file. */
static PetscErrorCode check_output(MPI_Comm comm, const char path[], PetscBool overwrite, PetscBool dir)
{
  PetscMPIInt rank;
  struct stat st;
  int         exists = stat(path, &st) == 0, ok = 1;
  char        msg[INFL_MSG_LEN] = "";
  size_t      len;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscStrlen(path, &len));
  PetscCheck(len + 32 < PETSC_MAX_PATH_LEN, comm, PETSC_ERR_ARG_SIZ, "output path %.60s... has %zu characters; infl needs at most %d (it appends .partial.tmp): give a shorter -out", path, len, PETSC_MAX_PATH_LEN - 33);
  InflCheckAll(comm, overwrite || !exists, PETSC_ERR_FILE_OPEN, "output %s exists; pass -overwrite to replace it, or choose another path", path);
  if (dir) InflCheckAll(comm, !exists || S_ISDIR(st.st_mode), PETSC_ERR_FILE_OPEN, "output %s exists and is not a directory; a GPT-2 is written as a directory (config.json, model.safetensors): give a new path, or one ending in .safetensors for the file with config.json beside it (-out)", path);
  else InflCheckAll(comm, !exists || !S_ISDIR(st.st_mode), PETSC_ERR_FILE_OPEN, "output %s is a directory; give the path of a file (-out)", path);
  /* the output is written as OUT.partial.tmp and renamed over OUT: a device, pipe or socket would be replaced */
  if (!dir) InflCheckAll(comm, !exists || S_ISREG(st.st_mode), PETSC_ERR_FILE_OPEN, "output %s exists and is not a regular file (%s); infl would replace it by a regular file: give the path of a regular file (-out)", path,
               S_ISCHR(st.st_mode) ? "a character device" : S_ISBLK(st.st_mode) ? "a block device" : S_ISFIFO(st.st_mode) ? "a named pipe" : S_ISSOCK(st.st_mode) ? "a socket" : "not a regular file");
  for (int k = 0; k < 2; k++) { /* the checkpoint and its temporary file are written (and the checkpoint read) as HDF5 */
    char        aux[PETSC_MAX_PATH_LEN + 16];
    struct stat sa;
    PetscCall(PetscSNPrintf(aux, sizeof(aux), "%s.partial%s", path, k ? ".tmp" : ""));
    InflCheckAll(comm, stat(aux, &sa) != 0 || S_ISREG(sa.st_mode), PETSC_ERR_FILE_OPEN, "cannot write output %s: %s, where infl keeps %s, is %s; remove it (rm -r %s) or choose another -out", path, aux, k ? "the checkpoint while writing it" : "the checkpoint of this output", S_ISDIR(sa.st_mode) ? "a directory" : "not a regular file", aux);
  }
  if (exists) { /* an output that is one of the stage's inputs would destroy it */
    char (*in)[PETSC_MAX_PATH_LEN], parent[PETSC_MAX_PATH_LEN];
    int         n;
    struct stat sp;
    const char *slash = strrchr(path, '/');
    PetscCall(PetscStrncpy(parent, slash ? path : ".", slash ? PetscMin(sizeof(parent), (size_t)(slash - path) + 1) : sizeof(parent)));
    if (slash == path) PetscCall(PetscStrncpy(parent, "/", sizeof(parent)));
    PetscCall(PetscMalloc1(512, &in)); /* up to 32 checkpoints or stores, each with its directory's files */
    PetscCall(input_paths(in, 512, &n));
    for (int i = 0; i < n; i++) {
      struct stat si;
      size_t      l = strlen(in[i]);
      if (l > 1 && in[i][l - 1] == '/') { /* every file of an input directory (text:DIR) */
        if (stat(in[i], &si) == 0 && stat(parent, &sp) == 0 && si.st_dev == sp.st_dev && si.st_ino == sp.st_ino) {
          PetscCall(PetscSNPrintf(msg, sizeof(msg), "output %s is in the input directory %s of this stage, whose files are read; writing it would change the input: choose another -out", path, in[i]));
          break;
        }
      } else if (stat(in[i], &si) == 0 && si.st_dev == st.st_dev && si.st_ino == st.st_ino) {
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "output %s is the input %s of this stage (the same file); writing it would destroy the input: choose another -out", path, in[i]));
        break;
      }
    }
    PetscCall(PetscFree(in));
    PetscCheck(!msg[0], comm, PETSC_ERR_ARG_WRONG, "%s", msg);
  }
  { /* the directory must exist and be writable: found now, not after hours of work */
    char        dir[PETSC_MAX_PATH_LEN];
    const char *slash = strrchr(path, '/');
    struct stat sd;
    if (!slash) PetscCall(PetscStrncpy(dir, ".", sizeof(dir)));
    else if (slash == path) PetscCall(PetscStrncpy(dir, "/", sizeof(dir)));
    else PetscCall(PetscStrncpy(dir, path, (size_t)(slash - path) + 1));
    if (rank == 0) {
      if (stat(dir, &sd) != 0) {
        ok = 0;
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write output %s: directory %s does not exist (%s); create it or choose another path", path, dir, strerror(errno)));
      } else if (!S_ISDIR(sd.st_mode)) {
        ok = 0;
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write output %s: %s is not a directory; choose another path", path, dir));
      } else {
        PetscMPIInt size;
        PetscCallMPI(MPI_Comm_size(comm, &size));
        lock_output(path, (int)size, &ok, msg, sizeof(msg)); /* creates OUT.partial.lock: the directory can hold files */
      }
    }
    PetscCall(InflAgree_Private(comm, ok ? PETSC_TRUE : PETSC_FALSE, PETSC_ERR_FILE_OPEN, msg, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckOutput(MPI_Comm comm, const char path[], PetscBool overwrite)
{
  PetscFunctionBegin;
  PetscCall(check_output(comm, path, overwrite, PETSC_FALSE));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckOutputDirectory(MPI_Comm comm, const char path[], PetscBool overwrite)
{
  PetscFunctionBegin;
  PetscCall(check_output(comm, path, overwrite, PETSC_TRUE));
  PetscFunctionReturn(0);
}

/* infl's options that take a value but were given without one (PETSc then keeps the default silently): the first
 * such option in *bad, or "" (options of PETSc itself and infl's true/false flags may go without a value). */
static PetscErrorCode valueless_option(char bad[], size_t len)
{
  static const char *flags[]    = {"-eigen_lapack", "-ekfac_kfac", "-ihvp_allow_unconverged", "-overwrite", "-score_per_layer", "-score_per_token", "-score_save_all", "-help"};
  static const char *prefixes[] = {"-ekfac_", "-score_", "-eigen_", "-train_", "-model_", "-query_", "-self_", "-report_", "-ihvp_", "-fidelity_", "-mem_limit", "-checkpoint_", "-progress_", "-class_names", "-data_"};
  char *all = NULL, *save = NULL, *prev = NULL;

  PetscFunctionBegin;
  bad[0] = 0;
  PetscCall(PetscOptionsGetAll(NULL, &all));
  /* "-name value -flag -name value": a name is '-' and a letter; a name followed by a name (or the end) has no value */
  for (char *tok = strtok_r(all, " ", &save);; tok = strtok_r(NULL, " ", &save)) {
    PetscBool is_name = (tok && tok[0] == '-' && ((tok[1] >= 'a' && tok[1] <= 'z') || (tok[1] >= 'A' && tok[1] <= 'Z'))) ? PETSC_TRUE : PETSC_FALSE;
    if (prev && (!tok || is_name)) {
      PetscBool ours = PETSC_FALSE, flag = PETSC_FALSE;
      for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) if (!strncmp(prev, prefixes[i], strlen(prefixes[i]))) ours = PETSC_TRUE;
      for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) if (!strcmp(prev, flags[i])) flag = PETSC_TRUE;
      if (strstr(prev, "_ksp_") || strstr(prev, "_pc_")) ours = PETSC_FALSE; /* PETSc's own KSP and PC options under our prefix (-ihvp_ksp_monitor) */
      if (ours && !flag) {
        PetscCall(PetscStrncpy(bad, prev, len));
        break;
      }
    }
    if (!tok) break;
    prev = is_name ? tok : NULL;
  }
  PetscCall(PetscFree(all));
  PetscFunctionReturn(0);
}

/* Integer options are 32-bit PetscInt, which PETSc fills by wrapping (4294967297 becomes 1, and a value beyond int64
 * becomes -1): the first option whose value is an integer, or a comma-separated list of integers (-model_dims), beyond
 * that range, other than the 64-bit _limit counts, the options that are not PetscInt and the real-valued ones, in
 * *bad (name and value), or "". */
static PetscErrorCode wrapped_int_option(char bad[], size_t len)
{
  static const char *wide[] = {"-query_indices", "-mem_limit", "-report_title", "-class_names", /* not PetscInt */
                               "-checkpoint_interval", "-progress_interval", "-ekfac_damping", "-ekfac_damping_factor", "-train_clip", "-train_eps", "-train_lr", "-train_lr_min", "-train_momentum", "-train_weight_decay", "-train_betas"}; /* reals */
  static const char *real_suffixes[] = {"_rtol", "_atol", "_dtol"}; /* PETSc's KSP tolerances (-ihvp_ksp_rtol) */
  char *all = NULL, *save = NULL, *prev = NULL;

  PetscFunctionBegin;
  bad[0] = 0;
  PetscCall(PetscOptionsGetAll(NULL, &all));
  for (char *tok = strtok_r(all, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    size_t    lp   = prev ? strlen(prev) : 0;
    PetscBool skip = prev && lp > 6 && !strcmp(prev + lp - 6, "_limit") ? PETSC_TRUE : PETSC_FALSE;
    for (size_t i = 0; prev && i < sizeof(wide) / sizeof(wide[0]); i++) if (!strcmp(prev, wide[i])) skip = PETSC_TRUE;
    for (size_t i = 0; prev && i < sizeof(real_suffixes) / sizeof(real_suffixes[0]); i++) if (lp > 5 && !strcmp(prev + lp - 5, real_suffixes[i])) skip = PETSC_TRUE;
    if (prev && prev[0] == '-' && !skip) {
      const char *p   = tok;
      PetscBool   out = PETSC_FALSE, ints = PETSC_TRUE;
      while (ints) { /* each comma-separated part */
        char     *end;
        long long x;
        errno = 0;
        x     = strtoll(p, &end, 10);
        if (end == p || (*end != 0 && *end != ',')) ints = PETSC_FALSE;
        else {
          if (errno == ERANGE || x > PETSC_MAX_INT || x < PETSC_MIN_INT) out = PETSC_TRUE;
          if (*end == 0) break;
          p = end + 1;
        }
      }
      if (ints && out) {
        PetscCall(PetscSNPrintf(bad, len, "%s %s", prev, tok));
        break;
      }
    }
    prev = tok;
  }
  PetscCall(PetscFree(all));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckIntegerOptions(MPI_Comm comm)
{
  char bad[256];

  PetscFunctionBegin;
  PetscCall(wrapped_int_option(bad, sizeof(bad)));
  PetscCheck(!bad[0], comm, PETSC_ERR_ARG_OUTOFRANGE, "option %s is outside the range of this integer option [%d, %d] (it would wrap around); give a value in that range", bad, (int)PETSC_MIN_INT, (int)PETSC_MAX_INT);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckUnusedOptions(MPI_Comm comm)
{
  PetscInt  n, nleft;
  char    **names, **values;
  char      list[2048] = "", bad[256];

  PetscFunctionBegin;
  PetscCall(valueless_option(bad, sizeof(bad)));
  PetscCheck(!bad[0], comm, PETSC_ERR_ARG_WRONG, "option %s was given without a value; give one (-help lists the options and their defaults)", bad);
  PetscCall(DriverCheckIntegerOptions(comm));
  PetscCall(PetscOptionsLeftGet(NULL, &n, &names, &values));
  for (PetscInt i = 0; i < n; i++) {
    size_t len;
    PetscCall(PetscStrlen(list, &len));
    PetscCall(PetscSNPrintf(list + len, sizeof(list) - len, "%s-%s%s%s", i ? ", " : "", names[i], values[i] ? " " : "", values[i] ? values[i] : ""));
  }
  nleft = n; /* PetscOptionsLeftRestore() zeroes n */
  PetscCall(PetscOptionsLeftRestore(NULL, &n, &names, &values));
  PetscCheck(nleft == 0, comm, PETSC_ERR_ARG_WRONG, "unknown or unused option%s: %s; check the spelling (-help lists the options of this subcommand)", nleft > 1 ? "s" : "", list);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverClassNames(PetscInt C, char ***names)
{
  char      buf[4096] = "";
  PetscBool set;
  char    **v;

  PetscFunctionBegin;
  PetscCall(PetscCalloc1(C, &v));
  PetscCall(InflOptionsCheckLength(PETSC_COMM_WORLD, "-class_names", sizeof(buf), "give shorter class names"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-class_names", buf, sizeof(buf), &set));
  if (set) {
    char    *tok, *save;
    PetscInt i = 0;
    for (tok = strtok_r(buf, ",", &save); tok && i < C; tok = strtok_r(NULL, ",", &save)) PetscCall(PetscStrallocpy(tok, &v[i++]));
  }
  *names = v;
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckClassNames(MPI_Comm comm, InflData data)
{
  char            buf[4096] = "", *tok, *save;
  PetscBool       set;
  int64_t         C, n = 0;
  const char     *spec, *name;
  InflDataContent kind;

  PetscFunctionBegin;
  if (!data) PetscFunctionReturn(0);
  PetscCall(InflDataGetContent(data, &kind));
  if (kind != INFL_DATA_ROWS) PetscFunctionReturn(0);
  PetscCall(InflOptionsCheckLength(comm, "-class_names", sizeof(buf), "give shorter class names"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-class_names", buf, sizeof(buf), &set));
  if (!set) PetscFunctionReturn(0);
  for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) n++;
  PetscCall(InflDataGetSizes(data, NULL, NULL, &C));
  PetscCall(InflDataGetSpec(data, &spec));
  PetscCall(InflDataGetName(data, &name));
  PetscCheck(n >= C, comm, PETSC_ERR_ARG_WRONG, "-class_names gives %" PRId64 " name%s but the labels of the %s data %s go up to %" PRId64 ": give one name per class, in label order (%" PRId64 " names)", n, n == 1 ? "" : "s", name, spec, C - 1, C);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverMLPDims(MPI_Comm comm, InflData train, PetscInt dims[], PetscInt *nd, PetscBool set)
{
  int64_t N, d, C;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(train, &N, &d, &C));
  if (!set) {
    *nd     = 4;
    dims[0] = (PetscInt)d;
    dims[1] = 256;
    dims[2] = 256;
    dims[3] = (PetscInt)C;
  }
  PetscCheck(*nd >= 2, comm, PETSC_ERR_ARG_WRONG, "-model_dims needs at least input and classes, e.g. 784,256,256,10");
  for (PetscInt i = 0; i < *nd; i++) PetscCheck(dims[i] >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-model_dims: layer size %d (entry %d) must be >= 1; give positive sizes, e.g. 784,256,256,10", (int)dims[i], (int)i);
  PetscCheck(dims[0] == d, comm, PETSC_ERR_ARG_SIZ, "-model_dims starts with %d but the training data has %" PRId64 " features per example", (int)dims[0], d);
  PetscCheck(dims[*nd - 1] >= C, comm, PETSC_ERR_ARG_SIZ, "-model_dims ends with %d classes but the training labels go up to %" PRId64, (int)dims[*nd - 1], C - 1);
  { /* training holds parameters, gradients and two optimizer moments (float32): refuse what cannot fit before allocating */
    double      np = 0, bytes, phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    const char *given = NULL;
    PetscBool   has;
    PetscCall(PetscOptionsFindPair(NULL, NULL, "-model_dims", &given, &has));
    for (PetscInt i = 0; i + 1 < *nd; i++) np += (double)dims[i + 1] * ((double)dims[i] + 1);
    bytes = 16 * np;
    PetscCheck(phys <= 0 || bytes <= phys, comm, PETSC_ERR_ARG_OUTOFRANGE, "-model_dims %s: an MLP of these layer sizes has %.4g parameters; training holds them, their gradients and two optimizer moments in float32 (%.4g GiB per rank), more than the %.4g GiB of memory of this machine: give smaller layer sizes", has && given ? given : "(default)", np, bytes / 1073741824.0, phys / 1073741824.0);
  }
  PetscFunctionReturn(0);
}

/* Train the set-up `fresh` (destroyed) on train with checkpoints at PATH.partial, save it at path, load it back. */
static PetscErrorCode train_save_load(MPI_Comm comm, InflModel fresh, InflData train, InflData test, const InflTrainOptions *topt, const char path[], InflModel *model)
{
  InflTrainOptions opt = *topt;
  char             partial[PETSC_MAX_PATH_LEN + 16];

  PetscFunctionBegin;
  PetscCall(PetscStrncpy(opt.checkpoint, path, sizeof(opt.checkpoint)));
  PetscCall(InflModelTrain(fresh, train, test, &opt));
  PetscCall(InflModelSave(fresh, path));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", path));
  PetscCall(InflRemoveAll(comm, partial));
  PetscCall(InflModelDestroy(&fresh));
  PetscCall(DriverLoadModel(comm, path, model));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverTrainMLP(MPI_Comm comm, InflData train, InflData test, PetscInt nd, const PetscInt dims[], const InflTrainOptions *topt, const char path[], InflModel *model)
{
  InflModel fresh;

  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, &fresh));
  PetscCall(InflModelSetFromOptions(fresh));
  PetscCall(InflModelSetUpMLP(fresh, nd, dims, INFL_ACT_RELU, topt->seed));
  PetscCall(train_save_load(comm, fresh, train, test, topt, path, model));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverNewGPT2(MPI_Comm comm, uint64_t seed, InflModel *model)
{
  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, model));
  PetscCall(InflModelSetType(*model, "gpt2"));
  PetscCall(InflModelSetFromOptions(*model));
  PetscCall(InflModelSetUpGPT2(*model, NULL, seed));
  PetscFunctionReturn(0);
}

PetscErrorCode DriverTrainGPT2(MPI_Comm comm, InflData train, InflData test, const InflTrainOptions *topt, const char path[], InflModel *model)
{
  InflModel fresh;

  PetscFunctionBegin;
  PetscCall(DriverNewGPT2(comm, topt->seed, &fresh));
  PetscCall(InflModelCheckData(fresh, train));
  if (test) PetscCall(InflModelCheckData(fresh, test));
  PetscCall(train_save_load(comm, fresh, train, test, topt, path, model));
  PetscFunctionReturn(0);
}

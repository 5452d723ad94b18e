#include "driver.h"
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <fcntl.h>
#include <inttypes.h>

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
  PetscCall(PetscSNPrintf(text, sizeof(text), "%s data: idx:PREFIX (IDX files PREFIX-images-idx3-ubyte[.gz], PREFIX-labels-idx1-ubyte[.gz]), h5:FILE (/inputs, /labels), text:PATH (UTF-8 text, -tokens_text_format) or tokens:PATH (llm.c .bin, HDF5 /tokens /offsets)", prefix));
  PetscCall(DriverGetString(comm, opt, text, spec, sizeof(spec), required, help));
  PetscOptionsBegin(comm, NULL, "infl driver options", NULL);
  /* listed by -help as a string, parsed as a 64-bit count: PetscOptionsInt (32-bit PetscInt) would wrap 2^32+1 to 1 */
  PetscCall(InflOptionsCheckLength(comm, optl, sizeof(ltext), "give a count of examples"));
  PetscCall(PetscOptionsString(optl, "use only the first N examples (0: all)", NULL, ltext, ltext, sizeof(ltext), NULL));
  PetscCall(PetscOptionsInt(opts, "token sequences: window length in tokens (0: the model's n_positions)", "InflDataSetSequenceLength", seq_len, &seq_len, NULL));
  PetscCall(PetscOptionsString("-tokenizer", "text data: directory of GPT-2 BPE files (default: beside the model, else byte-level for 256 tokens)", "InflDataSetTokenizerDir", tokdir, tokdir, sizeof(tokdir), NULL));
  PetscOptionsEnd();
  PetscCall(InflOptionsGetInt64(comm, optl, 0, INT64_MAX, &limit, NULL)); /* 0 means all examples */
  if (help || !spec[0]) PetscFunctionReturn(0);
  PetscCall(InflDataOpen(comm, spec, limit, data));
  PetscCall(InflDataSetName(*data, prefix));
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
  if (!set || !dir[0]) { /* beside the model: its directory, or the directory of its file */
    struct stat sb;
    PetscCall(PetscStrncpy(dir, model_path, sizeof(dir)));
    if (stat(model_path, &sb) || !S_ISDIR(sb.st_mode)) {
      char *slash = strrchr(dir, '/');
      if (slash) *slash = 0;
      else PetscCall(PetscStrncpy(dir, ".", sizeof(dir)));
    }
  }
  PetscCall(InflTokenizerCreate(comm, tok));
  PetscCall(InflTokenizerSetUpForModel(*tok, dir, V));
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

static PetscErrorCode parse_index_token(MPI_Comm comm, const char tok[], const char whole[], int64_t *v)
{
  char *end;
  long long x;

  PetscFunctionBegin;
  errno = 0;
  x     = strtoll(tok, &end, 10);
  PetscCheck(errno == 0 && end != tok && *end == 0, comm, PETSC_ERR_ARG_WRONG, "-query_indices \"%s\": \"%s\" is not an integer; use a list \"3,17,40\", a range \"0:100\" or \"0:1000:10\", or \"@file\"", whole, tok);
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

PetscErrorCode DriverQueryIndices(MPI_Comm comm, int64_t N, PetscInt *Q, int64_t **idx)
{
  char      spec[PETSC_MAX_PATH_LEN] = "0:8", buf[PETSC_MAX_PATH_LEN];
  PetscBool set;
  int64_t   n = 0, cap = 64, *v;

  PetscFunctionBegin;
  PetscCall(InflOptionsCheckLength(comm, "-query_indices", sizeof(spec), "for long lists of queries write them to a file, one index per line, and give -query_indices @FILE"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-query_indices", spec, sizeof(spec), &set));
  PetscCall(PetscMalloc1(cap, &v));
  if (spec[0] == '@') {
    FILE     *f  = fopen(spec + 1, "r");
    int       ok = f != NULL;
    long long x;
    InflCheckAll(comm, ok, PETSC_ERR_FILE_OPEN, "-query_indices %s: cannot open %s: %s", spec, spec + 1, strerror(errno));
    while (fscanf(f, "%lld", &x) == 1) {
      PetscCall(grow_indices(&v, n, &cap));
      v[n++] = x;
    }
    ok = feof(f);
    fclose(f);
    InflCheckAll(comm, ok, PETSC_ERR_FILE_READ, "-query_indices %s: %s must hold one integer per line", spec, spec + 1);
  } else if (strchr(spec, ':')) {
    int64_t a = 0, b = 0, s = 1;
    char   *p1, *p2;
    PetscCall(PetscStrncpy(buf, spec, sizeof(buf)));
    p1 = strchr(buf, ':');
    *p1++ = 0;
    p2    = strchr(p1, ':');
    if (p2) *p2++ = 0;
    PetscCall(parse_index_token(comm, buf, spec, &a));
    PetscCall(parse_index_token(comm, p1, spec, &b));
    if (p2) PetscCall(parse_index_token(comm, p2, spec, &s));
    PetscCheck(s > 0 && b > a, comm, PETSC_ERR_ARG_WRONG, "-query_indices %s: a range start:end[:step] needs end > start and step > 0", spec);
    /* no arithmetic that can overflow (0 <= a < b): the count of the range, then of its indices below N */
    PetscCheck(a >= 0 && a < N, comm, PETSC_ERR_ARG_OUTOFRANGE, "-query_indices %s: query index %" PRId64 " is outside the query set, which has %" PRId64 " examples (valid: 0..%" PRId64 ")", spec, a, N, N - 1);
    n = (b - a - 1) / s + 1;
    {
      int64_t nbelow = (N - a - 1) / s + 1;
      PetscCheck(n <= nbelow, comm, PETSC_ERR_ARG_OUTOFRANGE, "-query_indices %s: query index %" PRId64 " is outside the query set, which has %" PRId64 " examples (valid: 0..%" PRId64 "); give a range end <= %" PRId64, spec, a + nbelow * s, N, N - 1, N);
    }
    PetscCheck(n <= PETSC_MAX_INT, comm, PETSC_ERR_ARG_OUTOFRANGE, "-query_indices %s selects %" PRId64 " queries, more than %d; give a larger step or fewer queries", spec, n, (int)PETSC_MAX_INT);
    PetscCall(PetscFree(v));
    PetscCall(PetscMalloc1(n, &v));
    for (int64_t i = 0; i < n; i++) v[i] = a + i * s;
  } else {
    char *tok, *save;
    PetscCall(PetscStrncpy(buf, spec, sizeof(buf)));
    for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
      PetscCall(grow_indices(&v, n, &cap));
      PetscCall(parse_index_token(comm, tok, spec, &v[n++]));
    }
  }
  PetscCheck(n > 0, comm, PETSC_ERR_ARG_WRONG, "-query_indices \"%s\" selects no query", spec);
  for (int64_t i = 0; i < n; i++) PetscCheck(v[i] >= 0 && v[i] < N, comm, PETSC_ERR_ARG_OUTOFRANGE, "-query_indices: query index %" PRId64 " is outside the query set, which has %" PRId64 " examples (valid: 0..%" PRId64 ")", v[i], N, N - 1);
  PetscCheck(n <= PETSC_MAX_INT, comm, PETSC_ERR_ARG_OUTOFRANGE, "-query_indices selects %" PRId64 " queries, more than %d", n, (int)PETSC_MAX_INT);
  *Q   = (PetscInt)n;
  *idx = v;
  PetscFunctionReturn(0);
}

/* Input files named by the options of a stage: the paths of -model, -factors, -scores, -self, -store, -file, the files of the
 * data specs (h5:FILE, idx:PREFIX's four possible files), -query_indices @FILE and -options_file.  Fills up to `max`
 * paths into `paths` (each PETSC_MAX_PATH_LEN). */
static PetscErrorCode input_paths(char (*paths)[PETSC_MAX_PATH_LEN], int max, int *n)
{
  static const char *files[] = {"-model", "-factors", "-scores", "-self", "-store", "-file", "-options_file", "-query_prompts"};
  static const char *specs[] = {"-train", "-test", "-query", "-data"};
  static const char *idx[]   = {"-images-idx3-ubyte", "-images-idx3-ubyte.gz", "-labels-idx1-ubyte", "-labels-idx1-ubyte.gz"};
  const char        *v;
  PetscBool          set;

  PetscFunctionBegin;
  *n = 0;
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]) && *n < max; i++) {
    PetscCall(PetscOptionsFindPair(NULL, NULL, files[i], &v, &set));
    if (set && v) PetscCall(PetscStrncpy(paths[(*n)++], v, PETSC_MAX_PATH_LEN));
  }
  PetscCall(PetscOptionsFindPair(NULL, NULL, "-query_indices", &v, &set));
  if (set && v && v[0] == '@' && *n < max) PetscCall(PetscStrncpy(paths[(*n)++], v + 1, PETSC_MAX_PATH_LEN));
  for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
    PetscCall(PetscOptionsFindPair(NULL, NULL, specs[i], &v, &set));
    if (!set || !v) continue;
    if (!strncmp(v, "h5:", 3) && *n < max) PetscCall(PetscStrncpy(paths[(*n)++], v + 3, PETSC_MAX_PATH_LEN));
    if (!strncmp(v, "idx:", 4))
      for (size_t k = 0; k < sizeof(idx) / sizeof(idx[0]) && *n < max; k++) PetscCall(PetscSNPrintf(paths[(*n)++], PETSC_MAX_PATH_LEN, "%s%s", v + 4, idx[k]));
  }
  PetscFunctionReturn(0);
}

/* The lock of an output: rank 0 holds an exclusive flock on OUT.partial.lock (holding "host pid") for the life of the
 * process; DriverReleaseOutputs() unlocks and removes it. */
typedef struct {
  char path[PETSC_MAX_PATH_LEN + 16];
  int  fd;
} OutputLock;
static OutputLock locks[8];
static int        nlocks = 0;

/* Rank 0: take the lock of `out` (creating its lock file: the probe that the directory can hold the output).
 * On failure *ok = 0 and msg says why. */
static void lock_output(const char out[], int *ok, char msg[], size_t len)
{
  char        lpath[PETSC_MAX_PATH_LEN + 16], holder[96] = "";
  struct stat a, b;

  *ok = 1;
  for (int i = 0; i < nlocks; i++) {
    snprintf(lpath, sizeof(lpath), "%s.partial.lock", out);
    if (!strcmp(locks[i].path, lpath)) return; /* already held by this run (infl run, a stage after its driver) */
  }
  if (nlocks == (int)(sizeof(locks) / sizeof(locks[0]))) {
    *ok = 0;
    snprintf(msg, len, "output %.400s: too many outputs locked by one run", out);
    return;
  }
  snprintf(lpath, sizeof(lpath), "%s.partial.lock", out);
  for (int attempt = 0; attempt < 5; attempt++) {
    int fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      *ok = 0;
      snprintf(msg, len, "cannot write output %.400s: creating %.420s beside it failed: %s; choose -out in a writable directory", out, lpath, strerror(errno));
      return;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ssize_t r = read(fd, holder, sizeof(holder) - 1);
      holder[r > 0 ? r : 0] = 0;
      holder[strcspn(holder, "\n")] = 0;
      close(fd);
      *ok = 0;
      snprintf(msg, len, "output %.400s is being written by another infl process (%s, holding the lock %.420s); wait for it to finish or choose another -out", out, holder[0] ? holder : "host and pid unknown", lpath);
      return;
    }
    /* the holder before us may have removed the file between our open and our flock: then lock the new one */
    if (fstat(fd, &a) == 0 && stat(lpath, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      char host[128] = "?";
      gethostname(host, sizeof(host) - 1);
      snprintf(holder, sizeof(holder), "host %s, pid %ld\n", host, (long)getpid());
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
  if (exists) { /* an output that is one of the stage's inputs would destroy it */
    char (*in)[PETSC_MAX_PATH_LEN];
    int n;
    PetscCall(PetscMalloc1(16, &in));
    PetscCall(input_paths(in, 16, &n));
    for (int i = 0; i < n; i++) {
      struct stat si;
      if (stat(in[i], &si) == 0 && si.st_dev == st.st_dev && si.st_ino == st.st_ino) {
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
      } else lock_output(path, &ok, msg, sizeof(msg)); /* creates OUT.partial.lock: the directory can hold files */
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

/* Integer options are 32-bit PetscInt, which PETSc fills by wrapping (4294967297 becomes 1): the first option whose
 * value is an integer beyond that range, other than the 64-bit _limit counts, in *bad (name and value), or "". */
static PetscErrorCode wrapped_int_option(char bad[], size_t len)
{
  static const char *wide[] = {"-query_indices", "-mem_limit", "-report_title", "-class_names"}; /* not PetscInt */
  char *all = NULL, *save = NULL, *prev = NULL;

  PetscFunctionBegin;
  bad[0] = 0;
  PetscCall(PetscOptionsGetAll(NULL, &all));
  for (char *tok = strtok_r(all, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    PetscBool skip = prev && strlen(prev) > 6 && !strcmp(prev + strlen(prev) - 6, "_limit") ? PETSC_TRUE : PETSC_FALSE;
    for (size_t i = 0; prev && i < sizeof(wide) / sizeof(wide[0]); i++) if (!strcmp(prev, wide[i])) skip = PETSC_TRUE;
    if (prev && prev[0] == '-' && !skip) {
      char     *end;
      long long x;
      errno = 0;
      x     = strtoll(tok, &end, 10);
      if (end != tok && *end == 0 && (errno == ERANGE || x > PETSC_MAX_INT || x < PETSC_MIN_INT)) {
        PetscCall(PetscSNPrintf(bad, len, "%s %s", prev, tok));
        break;
      }
    }
    prev = tok;
  }
  PetscCall(PetscFree(all));
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
  PetscCall(wrapped_int_option(bad, sizeof(bad)));
  PetscCheck(!bad[0], comm, PETSC_ERR_ARG_OUTOFRANGE, "option %s is outside the range of this integer option [%d, %d] (it would wrap around); give a value in that range", bad, (int)PETSC_MIN_INT, (int)PETSC_MAX_INT);
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
  PetscCheck(dims[0] == d, comm, PETSC_ERR_ARG_SIZ, "-model_dims starts with %d but the training data has %" PRId64 " features per example", (int)dims[0], d);
  PetscCheck(dims[*nd - 1] >= C, comm, PETSC_ERR_ARG_SIZ, "-model_dims ends with %d classes but the training labels go up to %" PRId64, (int)dims[*nd - 1], C - 1);
  PetscFunctionReturn(0);
}

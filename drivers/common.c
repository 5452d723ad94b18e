#include "driver.h"
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>

PetscErrorCode DriverGetString(MPI_Comm comm, const char name[], const char text[], char value[], size_t len, PetscBool required, PetscBool help)
{
  PetscBool set;

  PetscFunctionBegin;
  value[0] = 0;
  PetscOptionsBegin(comm, NULL, name, NULL); /* one title per option: -help prints each title's options once */
  PetscCall(PetscOptionsString(name, text, NULL, value, value, len, &set));
  PetscOptionsEnd();
  PetscCheck(set || !required || help, comm, PETSC_ERR_ARG_NULL, "option %s is required: %s", name, text);
  PetscCheck(!set || value[0] || help, comm, PETSC_ERR_ARG_NULL, "option %s was given without a value: %s", name, text);
  PetscFunctionReturn(0);
}

PetscErrorCode DriverOpenData(MPI_Comm comm, const char prefix[], PetscBool required, PetscBool help, InflData *data)
{
  char     opt[64], optl[64], spec[PETSC_MAX_PATH_LEN], text[256];
  PetscInt limit = 0;

  PetscFunctionBegin;
  *data = NULL;
  PetscCall(PetscSNPrintf(opt, sizeof(opt), "-%s", prefix));
  PetscCall(PetscSNPrintf(optl, sizeof(optl), "-%s_limit", prefix));
  PetscCall(PetscSNPrintf(text, sizeof(text), "%s data: idx:PREFIX (IDX files PREFIX-images-idx3-ubyte[.gz], PREFIX-labels-idx1-ubyte[.gz]) or h5:FILE (/inputs, /labels)", prefix));
  PetscCall(DriverGetString(comm, opt, text, spec, sizeof(spec), required, help));
  PetscOptionsBegin(comm, NULL, "infl driver options", NULL);
  PetscCall(PetscOptionsInt(optl, "use only the first N examples (0: all)", NULL, limit, &limit, NULL));
  PetscOptionsEnd();
  PetscCheck(limit >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %d must be >= 0 (0 means all examples)", optl, (int)limit);
  if (help || !spec[0]) PetscFunctionReturn(0);
  PetscCall(InflDataOpen(comm, spec, limit, data));
  PetscCall(InflDataSetName(*data, prefix));
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
    n   = (b - a + s - 1) / s;
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
  PetscCheck(n <= PETSC_MAX_INT, comm, PETSC_ERR_ARG_OUTOFRANGE, "too many queries");
  *Q   = (PetscInt)n;
  *idx = v;
  PetscFunctionReturn(0);
}

PetscErrorCode DriverCheckOutput(MPI_Comm comm, const char path[], PetscBool overwrite)
{
  PetscFunctionBegin;
  InflCheckAll(comm, overwrite || !InflFileExists(path), PETSC_ERR_FILE_OPEN, "output %s exists; pass -overwrite to replace it, or choose another path", path);
  {
    struct stat st;
    InflCheckAll(comm, stat(path, &st) != 0 || !S_ISDIR(st.st_mode), PETSC_ERR_FILE_OPEN, "output %s is a directory; give the path of a file (-out)", path);
  }
  { /* the directory must exist and be writable: found now, not after hours of work */
    char        dir[PETSC_MAX_PATH_LEN];
    const char *slash = strrchr(path, '/');
    if (!slash) PetscCall(PetscStrncpy(dir, ".", sizeof(dir)));
    else if (slash == path) PetscCall(PetscStrncpy(dir, "/", sizeof(dir)));
    else PetscCall(PetscStrncpy(dir, path, (size_t)(slash - path) + 1));
    InflCheckAll(comm, access(dir, W_OK | X_OK) == 0, PETSC_ERR_FILE_OPEN, "cannot write output %s: directory %s %s; create it or choose another path", path, dir, access(dir, F_OK) == 0 ? "is not writable" : "does not exist");
  }
  PetscFunctionReturn(0);
}

/* infl's options that take a value but were given without one (PETSc then keeps the default silently): the first
 * such option in *bad, or "" (options of PETSc itself and infl's true/false flags may go without a value). */
static PetscErrorCode valueless_option(char bad[], size_t len)
{
  static const char *flags[]    = {"-eigen_lapack", "-ekfac_kfac", "-ihvp_allow_unconverged", "-overwrite", "-score_per_layer", "-score_save_all", "-help"};
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

PetscErrorCode DriverCheckUnusedOptions(MPI_Comm comm)
{
  PetscInt  n, nleft;
  char    **names, **values;
  char      list[2048] = "", bad[256];

  PetscFunctionBegin;
  PetscCall(valueless_option(bad, sizeof(bad)));
  PetscCheck(!bad[0], comm, PETSC_ERR_ARG_WRONG, "option %s was given without a value; give one (-help lists the options and their defaults)", bad);
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

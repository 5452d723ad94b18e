/* GPT-2 (Hugging Face GPT2LMHeadModel layout): files, parameters, forward, backward and capture.  See infl/gpt2.h. */
#include <infl/gpt2.h>
#include <petscviewer.h>
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <jansson.h>

/* tensors of a block, in state-dict order */
enum { B_LN1_W = 0, B_LN1_B, B_ATTN_W, B_ATTN_B, B_PROJ_W, B_PROJ_B, B_LN2_W, B_LN2_B, B_FC_W, B_FC_B, B_MPROJ_W, B_MPROJ_B, B_NT };
static const char *const blk_names[B_NT] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
static const char *const act_names[]     = {"gelu_new", "gelu", "relu"};
/* the captured linear layers of a block: weight tensor, din and dout in units of C */
static const int   lin_w[4] = {B_ATTN_W, B_PROJ_W, B_FC_W, B_MPROJ_W};
static const int   lin_in[4] = {1, 1, 1, 4}, lin_out[4] = {3, 1, 4, 1};
static const char *lin_names[4] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};

typedef struct {
  char    name[64]; /* without the transformer. prefix */
  int64_t off, numel;
  int     ndim;
  int64_t shape[2];
} TensorInfo;

/* activations of one block, in the working precision (void: float or double) */
typedef struct {
  void *ln1, *ln1_mean, *ln1_rstd; /* (N, C), (N), (N) */
  void *qkv;                       /* (N, 3C) */
  void *att;                       /* (natt) attention probabilities */
  void *atty;                      /* (N, C) attention output before c_proj */
  void *resid_mid;                 /* (N, C) residual after the attention */
  void *ln2, *ln2_mean, *ln2_rstd; /* (N, C), (N), (N) */
  void *fch, *fch_act;             /* (N, 4C) mlp.c_fc output and its activation */
} LayerActs;

typedef struct {
  PetscInt   N, B;            /* rows and sequences of the current batch */
  PetscInt   Ncap, Bcap;      /* capacity */
  int64_t    natt_cap;
  PetscInt  *off;             /* (Bcap+1) */
  int64_t   *attoff;          /* (Bcap+1) */
  PetscInt  *pos;             /* (Ncap) position of each row */
  int32_t   *tgt;             /* (Ncap) targets in use */
  double    *loss;            /* (Ncap) per-row loss */
  void      *mem;             /* one allocation for all REAL buffers */
  void     **resid;           /* (n_layer+1) each (N, C): residual stream entering block l; resid[L] the final one */
  LayerActs *acts;            /* (n_layer) */
  void      *lnf, *lnf_mean, *lnf_rstd; /* (N, C), (N), (N) */
  void      *logits;          /* (N, V), overwritten by dlogits in the backward pass */
  void      *dresid, *dbuf, *datty; /* (N, C) */
  void      *dqkv;            /* (N, 3C) */
  void      *dfch;            /* (N, 4C) */
  void      *dP;              /* (n_positions, n_positions) */
} Workspace;

struct _p_InflGPT2 {
  MPI_Comm       comm;
  InflGPT2Config cfg;
  PetscBool      setup;
  PetscInt       ntensors;
  TensorInfo    *tensors;  /* (ntensors) state-dict order */
  int64_t        o_wte, o_wpe, o_lnf_w, o_lnf_b;
  int64_t       *o_blk;    /* (n_layer, B_NT) slab offsets */
  int64_t        nparams;
  float         *params, *grads; /* (nparams) */
  InflPrecision  prec;
  double        *params64, *grads64; /* (nparams) in double mode */
  PetscBool      params64_stale, grads64_valid;
  char           hash[65];
  PetscBool      hash_stale;
  Workspace      ws;
  size_t         ws_es; /* element size of the workspace buffers */
};

static inline double gpt2_act(InflGPT2Activation act, double x)
{
  switch (act) {
  case INFL_GPT2_GELU_NEW: return 0.5 * x * (1 + tanh(sqrt(2 / PETSC_PI) * (x + 0.044715 * x * x * x)));
  case INFL_GPT2_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  default: return x > 0 ? x : 0;
  }
}

static inline double gpt2_act_derivative(InflGPT2Activation act, double x)
{
  switch (act) {
  case INFL_GPT2_GELU_NEW: {
    double k = sqrt(2 / PETSC_PI), t = tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
  }
  case INFL_GPT2_GELU: return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * PETSC_PI);
  default: return x > 0 ? 1 : 0;
  }
}

#define REAL float
#define GEMM cblas_sgemm
#define FN(name) name##_f32
#include "gpt2_impl.h"
#undef REAL
#undef GEMM
#undef FN
#define REAL double
#define GEMM cblas_dgemm
#define FN(name) name##_f64
#include "gpt2_impl.h"
#undef REAL
#undef GEMM
#undef FN

PetscErrorCode InflGPT2Create(MPI_Comm comm, InflGPT2 *g)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(g));
  (*g)->comm       = comm;
  (*g)->hash_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

static PetscErrorCode workspace_free(InflGPT2 g)
{
  Workspace *ws = &g->ws;

  PetscFunctionBegin;
  PetscCall(PetscFree(ws->mem));
  PetscCall(PetscFree(ws->resid));
  PetscCall(PetscFree(ws->acts));
  PetscCall(PetscFree6(ws->off, ws->attoff, ws->pos, ws->tgt, ws->loss, ws->dP));
  PetscCall(PetscMemzero(ws, sizeof(*ws)));
  PetscFunctionReturn(0);
}

/* Workspace for N rows of B sequences with natt attention probabilities, in the model's precision. */
static PetscErrorCode workspace_ensure(InflGPT2 g, PetscInt B, PetscInt N, int64_t natt)
{
  Workspace *ws = &g->ws;
  size_t     es = g->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
  PetscInt   C = g->cfg.n_embd, L = g->cfg.n_layer, V = g->cfg.vocab_size, T = g->cfg.n_positions;
  int64_t    per_layer, total, k = 0;
  char      *base;

  PetscFunctionBegin;
  if (ws->mem && es == g->ws_es && B <= ws->Bcap && N <= ws->Ncap && natt <= ws->natt_cap) PetscFunctionReturn(0);
  B    = PetscMax(B, ws->Bcap);
  N    = PetscMax(PetscMax(N, ws->Ncap), 1);
  natt = PetscMax(PetscMax(natt, ws->natt_cap), 1);
  PetscCall(workspace_free(g));
  per_layer = (int64_t)N * (C + 2 + 3 * C + C + C + C + 2 + 4 * C + 4 * C) + natt;
  total     = L * per_layer + (int64_t)(L + 1) * N * C + (int64_t)N * (C + 2) + (int64_t)N * V + 3 * (int64_t)N * C + (int64_t)N * 3 * C + (int64_t)N * 4 * C;
  PetscCall(PetscMalloc(total * es, &ws->mem));
  base = (char *)ws->mem;
#define CARVE(n) (void *)(base + (size_t)((k += (n)) - (n)) * es)
  PetscCall(PetscMalloc1(L + 1, &ws->resid));
  PetscCall(PetscMalloc1(L, &ws->acts));
  for (PetscInt l = 0; l <= L; l++) ws->resid[l] = CARVE((int64_t)N * C);
  for (PetscInt l = 0; l < L; l++) {
    LayerActs *a = &ws->acts[l];
    a->ln1       = CARVE((int64_t)N * C);
    a->ln1_mean  = CARVE(N);
    a->ln1_rstd  = CARVE(N);
    a->qkv       = CARVE((int64_t)N * 3 * C);
    a->att       = CARVE(natt);
    a->atty      = CARVE((int64_t)N * C);
    a->resid_mid = CARVE((int64_t)N * C);
    a->ln2       = CARVE((int64_t)N * C);
    a->ln2_mean  = CARVE(N);
    a->ln2_rstd  = CARVE(N);
    a->fch       = CARVE((int64_t)N * 4 * C);
    a->fch_act   = CARVE((int64_t)N * 4 * C);
  }
  ws->lnf      = CARVE((int64_t)N * C);
  ws->lnf_mean = CARVE(N);
  ws->lnf_rstd = CARVE(N);
  ws->logits   = CARVE((int64_t)N * V);
  ws->dresid   = CARVE((int64_t)N * C);
  ws->dbuf     = CARVE((int64_t)N * C);
  ws->datty    = CARVE((int64_t)N * C);
  ws->dqkv     = CARVE((int64_t)N * 3 * C);
  ws->dfch     = CARVE((int64_t)N * 4 * C);
#undef CARVE
  PetscAssert(k == total, PETSC_COMM_SELF, PETSC_ERR_PLIB, "workspace carving %" PRId64 " != %" PRId64, k, total);
  PetscCall(PetscMalloc6(B + 1, &ws->off, B + 1, &ws->attoff, N, &ws->pos, N, &ws->tgt, N, &ws->loss, (size_t)T * T * es, (char **)&ws->dP));
  ws->Bcap     = B;
  ws->Ncap     = N;
  ws->natt_cap = natt;
  g->ws_es     = es;
  PetscFunctionReturn(0);
}

static PetscErrorCode model_free(InflGPT2 g)
{
  PetscFunctionBegin;
  PetscCall(workspace_free(g));
  PetscCall(PetscFree(g->tensors));
  PetscCall(PetscFree(g->o_blk));
  PetscCall(PetscFree(g->params));
  PetscCall(PetscFree(g->grads));
  PetscCall(PetscFree(g->params64));
  PetscCall(PetscFree(g->grads64));
  g->setup = PETSC_FALSE;
  PetscFunctionReturn(0);
}

static PetscErrorCode check_config(MPI_Comm comm, const InflGPT2Config *c, const char where[])
{
  PetscFunctionBegin;
  PetscCheck(c->n_embd > 0 && c->n_layer > 0 && c->n_head > 0 && c->vocab_size > 0 && c->n_positions > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s: GPT-2 sizes must be positive: n_embd %d, n_layer %d, n_head %d, vocab_size %d, n_positions %d", where, (int)c->n_embd, (int)c->n_layer, (int)c->n_head, (int)c->vocab_size, (int)c->n_positions);
  PetscCheck(c->n_embd % c->n_head == 0, comm, PETSC_ERR_ARG_INCOMP, "%s: n_embd %d is not a multiple of n_head %d; the heads split the embedding evenly", where, (int)c->n_embd, (int)c->n_head);
  PetscCheck(c->layer_norm_epsilon > 0 && isfinite(c->layer_norm_epsilon), comm, PETSC_ERR_ARG_OUTOFRANGE, "%s: layer_norm_epsilon %g must be positive", where, c->layer_norm_epsilon);
  PetscCheck(c->activation >= INFL_GPT2_GELU_NEW && c->activation <= INFL_GPT2_RELU, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s: unknown activation %d", where, (int)c->activation);
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2SetUp(InflGPT2 g, const InflGPT2Config *cfg)
{
  PetscInt C, L;
  int64_t  off = 0;

  PetscFunctionBegin;
  PetscCall(check_config(g->comm, cfg, "GPT-2 configuration"));
  PetscCall(model_free(g));
  g->cfg = *cfg;
  C      = cfg->n_embd;
  L      = cfg->n_layer;
  g->ntensors = 4 + B_NT * L;
  PetscCall(PetscCalloc1(g->ntensors, &g->tensors));
  PetscCall(PetscMalloc1(B_NT * L, &g->o_blk));
  {
    PetscInt k = 0;
#define ADD(nm, d0, d1) \
  do { \
    TensorInfo *ti = &g->tensors[k++]; \
    PetscCall(PetscStrncpy(ti->name, nm, sizeof(ti->name))); \
    ti->ndim     = (d1) > 0 ? 2 : 1; \
    ti->shape[0] = (d0); \
    ti->shape[1] = (d1) > 0 ? (d1) : 0; \
    ti->numel    = (int64_t)(d0) * ((d1) > 0 ? (d1) : 1); \
    ti->off      = off; \
    off += ti->numel; \
  } while (0)
    ADD("wte.weight", cfg->vocab_size, C);
    g->o_wte = 0;
    ADD("wpe.weight", cfg->n_positions, C);
    g->o_wpe = g->tensors[1].off;
    for (PetscInt l = 0; l < L; l++) {
      static const int d0[B_NT] = {1, 1, 1, 3, 1, 1, 1, 1, 1, 4, 4, 1}, d1[B_NT] = {0, 0, 3, 0, 1, 0, 0, 0, 4, 0, 1, 0};
      for (int j = 0; j < B_NT; j++) {
        char nm[64];
        PetscCall(PetscSNPrintf(nm, sizeof(nm), "h.%d.%s", (int)l, blk_names[j]));
        g->o_blk[B_NT * l + j] = off;
        ADD(nm, (int64_t)d0[j] * C, (int64_t)d1[j] * C);
      }
    }
    g->o_lnf_w = off;
    ADD("ln_f.weight", C, 0);
    g->o_lnf_b = off;
    ADD("ln_f.bias", C, 0);
#undef ADD
  }
  g->nparams = off;
  PetscCall(PetscCalloc1(g->nparams, &g->params));
  PetscCall(PetscCalloc1(g->nparams, &g->grads));
  g->params64_stale = PETSC_TRUE;
  g->hash_stale     = PETSC_TRUE;
  g->setup          = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- files */

/* config.json and model.safetensors of `path` (a directory, or a .safetensors file with config.json beside it). */
static PetscErrorCode model_paths(const char path[], char cfgpath[], char stpath[], size_t len)
{
  struct stat sb;

  PetscFunctionBegin;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    PetscCall(PetscSNPrintf(cfgpath, len, "%s/config.json", path));
    PetscCall(PetscSNPrintf(stpath, len, "%s/model.safetensors", path));
  } else {
    const char *slash = strrchr(path, '/');
    PetscCall(PetscStrncpy(stpath, path, len));
    if (slash) PetscCall(PetscSNPrintf(cfgpath, len, "%.*s/config.json", (int)(slash - path), path));
    else PetscCall(PetscStrncpy(cfgpath, "config.json", len));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode config_int(const char path[], json_t *root, const char key[], const char alt[], PetscInt *v)
{
  json_t *j = json_object_get(root, key);

  PetscFunctionBegin;
  if (!j && alt) j = json_object_get(root, alt);
  PetscCheck(j, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: GPT-2 config key \"%s\"%s%s%s is missing; add it (an integer) to config.json", path, key, alt ? " (or \"" : "", alt ? alt : "", alt ? "\")" : "");
  PetscCheck(json_is_integer(j) && json_integer_value(j) > 0 && json_integer_value(j) < (1 << 30), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: GPT-2 config key \"%s\" must be a positive integer below 2^30", path, key);
  *v = (PetscInt)json_integer_value(j);
  PetscFunctionReturn(0);
}

static PetscErrorCode config_parse(const char path[], json_t *root, InflGPT2Config *c)
{
  json_t *j;

  PetscFunctionBegin;
  PetscCheck(json_is_object(root), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: not a JSON object; a GPT-2 config.json holds {\"n_embd\": .., \"n_layer\": .., ...}", path);
  if ((j = json_object_get(root, "model_type")) && !json_is_null(j)) { /* another architecture's config: refuse it */
    const char *s = json_string_value(j);
    PetscCheck(s, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: config key \"model_type\" must be a string", path);
    PetscCheck(!strcmp(s, "gpt2"), PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: model_type \"%.64s\" is not supported; infl reads GPT-2 models (model_type \"gpt2\") and MLPs", path, s);
  }
  PetscCall(config_int(path, root, "n_embd", NULL, &c->n_embd));
  PetscCall(config_int(path, root, "n_layer", NULL, &c->n_layer));
  PetscCall(config_int(path, root, "n_head", NULL, &c->n_head));
  PetscCall(config_int(path, root, "vocab_size", NULL, &c->vocab_size));
  PetscCall(config_int(path, root, "n_positions", "n_ctx", &c->n_positions));
  c->layer_norm_epsilon = 1e-5;
  if ((j = json_object_get(root, "layer_norm_epsilon"))) {
    PetscCheck(json_is_number(j), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: GPT-2 config key \"layer_norm_epsilon\" must be a number", path);
    c->layer_norm_epsilon = json_number_value(j);
  }
  c->activation = INFL_GPT2_GELU_NEW;
  if ((j = json_object_get(root, "activation_function")) && !json_is_null(j)) {
    const char *s = json_string_value(j);
    PetscCheck(s, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: GPT-2 config key \"activation_function\" must be a string", path);
    if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh")) c->activation = INFL_GPT2_GELU_NEW;
    else if (!strcmp(s, "gelu")) c->activation = INFL_GPT2_GELU;
    else if (!strcmp(s, "relu")) c->activation = INFL_GPT2_RELU;
    else SETERRQ(PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: activation_function \"%s\" is not supported; use gelu_new, gelu or relu", path, s);
  }
  PetscCall(check_config(PETSC_COMM_SELF, c, path));
  PetscFunctionReturn(0);
}

static PetscErrorCode config_read_rank0(const char path[], InflGPT2Config *c)
{
  json_error_t   jerr;
  json_t        *root;
  PetscErrorCode ierr;

  PetscFunctionBegin;
  PetscCheck(InflFileExists(path), PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "%s: GPT-2 config.json not found; a GPT-2 model is a directory with config.json and model.safetensors, or a .safetensors file with config.json beside it", path);
  root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  PetscCheck(root, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text, jerr.line, jerr.column);
  ierr = config_parse(path, root, c);
  json_decref(root);
  PetscCall(ierr);
  PetscFunctionReturn(0);
}

/* A tensor of the file by its name without the prefix; the prefixed name wins if both are present. */
static PetscErrorCode find_tensor(InflSafetensors st, const char name[], const InflTensor **t)
{
  char full[96];

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(full, sizeof(full), "transformer.%s", name));
  PetscCall(InflSafetensorsGet(st, full, t));
  if (!*t) PetscCall(InflSafetensorsGet(st, name, t));
  PetscFunctionReturn(0);
}

static PetscBool ends_with(const char s[], const char suffix[])
{
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcmp(s + n - m, suffix) ? PETSC_TRUE : PETSC_FALSE;
}

static PetscErrorCode load_tensors(InflGPT2 g, const char stpath[], InflSafetensors st)
{
  const InflGPT2Config *c = &g->cfg;
  char                  cdesc[256];
  PetscInt              n;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(cdesc, sizeof(cdesc), "config n_embd %d, n_layer %d, n_head %d, vocab_size %d, n_positions %d", (int)c->n_embd, (int)c->n_layer, (int)c->n_head, (int)c->vocab_size, (int)c->n_positions));
  for (PetscInt k = 0; k < g->ntensors; k++) {
    const TensorInfo *ti = &g->tensors[k];
    const InflTensor *t;
    PetscCall(find_tensor(st, ti->name, &t));
    PetscCheck(t, g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s (or transformer.%s) is missing; the %s needs it", stpath, ti->name, ti->name, cdesc);
    PetscCheck(t->ndim == ti->ndim && t->shape[0] == ti->shape[0] && (ti->ndim == 1 || t->shape[1] == ti->shape[1]), g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s has shape [%" PRId64 "%s%" PRId64 "] (ndim %d) but the %s needs [%" PRId64 "%s%" PRId64 "]; the config.json does not belong to these weights", stpath, t->name, t->ndim > 0 ? t->shape[0] : 0, t->ndim > 1 ? ", " : "", t->ndim > 1 ? t->shape[1] : (int64_t)0, t->ndim, cdesc, ti->shape[0], ti->ndim > 1 ? ", " : "", ti->ndim > 1 ? ti->shape[1] : (int64_t)0);
    PetscCheck(t->dtype == INFL_F32 || t->dtype == INFL_F64 || t->dtype == INFL_F16 || t->dtype == INFL_BF16, g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s has dtype %s; GPT-2 weights must be F32, F64, F16 or BF16", stpath, t->name, InflDTypeName(t->dtype));
    PetscCall(InflTensorToFloat(t, g->params + ti->off));
    for (int64_t i = 0; i < ti->numel; i++) PetscCheck(isfinite(g->params[ti->off + i]), g->comm, PETSC_ERR_FP, "%s: tensor %s has a non-finite value (%g) at flat index %" PRId64 "; the model is broken", stpath, t->name, (double)g->params[ti->off + i], i);
  }
  /* every other tensor must be a known buffer or the tied head */
  PetscCall(InflSafetensorsGetSize(st, &n));
  for (PetscInt i = 0; i < n; i++) {
    const InflTensor *t;
    const char       *nm;
    PetscBool         known = PETSC_FALSE;
    PetscCall(InflSafetensorsGetIndex(st, i, &t));
    nm = strncmp(t->name, "transformer.", 12) ? t->name : t->name + 12;
    for (PetscInt k = 0; k < g->ntensors && !known; k++) known = strcmp(nm, g->tensors[k].name) ? PETSC_FALSE : PETSC_TRUE;
    if (known || ends_with(nm, ".attn.bias") || ends_with(nm, ".attn.masked_bias")) continue;
    if (!strcmp(t->name, "lm_head.weight")) {
      float *head;
      PetscCheck(t->ndim == 2 && t->shape[0] == c->vocab_size && t->shape[1] == c->n_embd, g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor lm_head.weight must have the shape of wte [%d, %d]; the %s", stpath, (int)c->vocab_size, (int)c->n_embd, cdesc);
      PetscCall(PetscMalloc1(t->numel, &head));
      PetscCall(InflTensorToFloat(t, head));
      for (int64_t j = 0; j < t->numel; j++) {
        if (head[j] != g->params[g->o_wte + j]) {
          double hv = head[j], wv = g->params[g->o_wte + j];
          PetscCall(PetscFree(head));
          SETERRQ(g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: lm_head.weight differs from wte.weight (entry [%" PRId64 ", %" PRId64 "]: %g vs %g); GPT-2's head is tied to the token embedding, and infl supports only the tied head", stpath, j / c->n_embd, j % c->n_embd, hv, wv);
        }
      }
      PetscCall(PetscFree(head));
      continue;
    }
    SETERRQ(g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: unexpected tensor %s for the %s (a GPT-2 file holds wte, wpe, h.{0..n_layer-1}.*, ln_f and optionally the tied lm_head.weight); the config.json does not belong to these weights", stpath, t->name, cdesc);
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2Load(InflGPT2 g, const char path[])
{
  char            cfgpath[PETSC_MAX_PATH_LEN], stpath[PETSC_MAX_PATH_LEN];
  InflGPT2Config  cfg;
  PetscMPIInt     rank;
  InflSafetensors st;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(g->comm, &rank));
  PetscCall(model_paths(path, cfgpath, stpath, sizeof(cfgpath)));
  PetscCall(PetscMemzero(&cfg, sizeof(cfg)));
  InflCallAll(g->comm, rank == 0 ? config_read_rank0(cfgpath, &cfg) : 0);
  PetscCallMPI(MPI_Bcast(&cfg, sizeof(cfg), MPI_BYTE, 0, g->comm));
  PetscCall(InflSafetensorsRead(g->comm, stpath, &st));
  { /* before allocating the configuration's parameters: a config.json of a much larger model must not allocate its
       size first (a small difference is reported below, tensor by tensor, with the shapes) */
    const double C = (double)cfg.n_embd, need = ((double)cfg.vocab_size + cfg.n_positions + 2) * C + cfg.n_layer * (12 * C * C + 13 * C);
    double       have = 0;
    PetscInt     nt;
    PetscCall(InflSafetensorsGetSize(st, &nt));
    for (PetscInt i = 0; i < nt; i++) {
      const InflTensor *t;
      PetscCall(InflSafetensorsGetIndex(st, i, &t));
      have += (double)t->numel;
    }
    if (need > 4 * have + 1048576) {
      PetscCall(InflSafetensorsDestroy(&st));
      SETERRQ(g->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: config.json (n_embd %d, n_layer %d, vocab_size %d, n_positions %d) describes a GPT-2 of %.0f parameters, but %s holds only %.0f values; the config.json does not belong to these weights", cfgpath, (int)cfg.n_embd, (int)cfg.n_layer, (int)cfg.vocab_size, (int)cfg.n_positions, need, stpath, have);
    }
  }
  PetscCall(InflGPT2SetUp(g, &cfg));
  {
    PetscErrorCode ierr = load_tensors(g, stpath, st); /* every rank sees the same tensors: the same error */
    PetscCall(InflSafetensorsDestroy(&st));
    PetscCall(ierr);
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode config_write_rank0(const InflGPT2Config *c, const char cfgpath[], const char dir[])
{
  json_t *root = json_object(), *arch = json_array();
  int     bad;

  PetscFunctionBegin;
  if (dir) PetscCheck(mkdir(dir, 0777) == 0 || errno == EEXIST, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot create the model directory %s: %s", dir, strerror(errno));
  json_array_append_new(arch, json_string("GPT2LMHeadModel"));
  json_object_set_new(root, "architectures", arch);
  json_object_set_new(root, "model_type", json_string("gpt2"));
  json_object_set_new(root, "activation_function", json_string(act_names[c->activation]));
  json_object_set_new(root, "layer_norm_epsilon", json_real(c->layer_norm_epsilon));
  json_object_set_new(root, "n_embd", json_integer(c->n_embd));
  json_object_set_new(root, "n_head", json_integer(c->n_head));
  json_object_set_new(root, "n_layer", json_integer(c->n_layer));
  json_object_set_new(root, "n_positions", json_integer(c->n_positions));
  json_object_set_new(root, "n_ctx", json_integer(c->n_positions));
  json_object_set_new(root, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(root, "tie_word_embeddings", json_true());
  bad = json_dump_file(root, cfgpath, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  PetscCheck(!bad, PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE, "cannot write %s: %s; check that the directory is writable", cfgpath, strerror(errno));
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2Save(InflGPT2 g, const char path[], PetscInt nmeta, const char *const mkeys[], const char *const mvalues[])
{
  char         cfgpath[PETSC_MAX_PATH_LEN], stpath[PETSC_MAX_PATH_LEN];
  PetscBool    isfile = ends_with(path, ".safetensors");
  PetscMPIInt  rank;
  InflTensor  *t;
  char       (*names)[80];
  const char **keys, **vals;

  PetscFunctionBegin;
  PetscCheck(g->setup, g->comm, PETSC_ERR_ARG_WRONGSTATE, "InflGPT2Save(%s): the model has no parameters; load or set it up first", path);
  PetscCallMPI(MPI_Comm_rank(g->comm, &rank));
  if (isfile) PetscCall(model_paths(path, cfgpath, stpath, sizeof(cfgpath)));
  else {
    PetscCall(PetscSNPrintf(cfgpath, sizeof(cfgpath), "%s/config.json", path));
    PetscCall(PetscSNPrintf(stpath, sizeof(stpath), "%s/model.safetensors", path));
  }
  InflCallAll(g->comm, rank == 0 ? config_write_rank0(&g->cfg, cfgpath, isfile ? NULL : path) : 0);
  PetscCall(PetscCalloc2(g->ntensors, &t, g->ntensors, &names));
  for (PetscInt k = 0; k < g->ntensors; k++) {
    const TensorInfo *ti = &g->tensors[k];
    PetscCall(PetscSNPrintf(names[k], sizeof(names[k]), "transformer.%s", ti->name));
    t[k] = (InflTensor){.name = names[k], .dtype = INFL_F32, .ndim = ti->ndim, .shape = {ti->shape[0], ti->shape[1]}, .numel = ti->numel, .data = g->params + ti->off};
  }
  PetscCall(PetscMalloc2(nmeta + 1, &keys, nmeta + 1, &vals));
  keys[0] = "format";
  vals[0] = "pt";
  for (PetscInt i = 0; i < nmeta; i++) {
    keys[1 + i] = mkeys[i];
    vals[1 + i] = mvalues[i];
  }
  PetscCall(InflSafetensorsWrite(g->comm, stpath, g->ntensors, t, 1 + nmeta, keys, vals));
  PetscCall(PetscFree2(keys, vals));
  PetscCall(PetscFree2(t, names));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- accessors */

PetscErrorCode InflGPT2GetConfig(InflGPT2 g, InflGPT2Config *cfg)
{
  PetscFunctionBegin;
  *cfg = g->cfg;
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2GetParameters(InflGPT2 g, int64_t *n, float **params, float **grads)
{
  PetscFunctionBegin;
  if (n) *n = g->nparams;
  if (params) {
    *params           = g->params;
    g->params64_stale = PETSC_TRUE; /* the caller may change them */
    g->hash_stale     = PETSC_TRUE;
  }
  if (grads) *grads = g->grads;
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2GetTensor(InflGPT2 g, const char name[], float **param, float **grad, int64_t *numel, int *ndim, int64_t shape[2])
{
  PetscFunctionBegin;
  for (PetscInt k = 0; k < g->ntensors; k++) {
    const TensorInfo *ti = &g->tensors[k];
    if (strcmp(ti->name, name)) continue;
    if (param) {
      *param            = g->params + ti->off;
      g->params64_stale = PETSC_TRUE;
      g->hash_stale     = PETSC_TRUE;
    }
    if (grad) *grad = g->grads + ti->off;
    if (numel) *numel = ti->numel;
    if (ndim) *ndim = ti->ndim;
    if (shape) {
      shape[0] = ti->shape[0];
      shape[1] = ti->shape[1];
    }
    PetscFunctionReturn(0);
  }
  SETERRQ(PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "GPT-2 has no tensor \"%s\" (names as in the Hugging Face state dict without \"transformer.\", e.g. h.0.ln_1.weight; n_layer %d)", name, (int)g->cfg.n_layer);
}

PetscErrorCode InflGPT2GetLinear(InflGPT2 g, PetscInt l, InflGPT2Linear *lin)
{
  PetscInt C = g->cfg.n_embd, i = l / 4, k = l % 4;
  int64_t  ow, ob;

  PetscFunctionBegin;
  PetscCheck(l >= 0 && l < 4 * g->cfg.n_layer, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "GPT-2 linear layer %d is outside [0, %d) (4 per block)", (int)l, (int)(4 * g->cfg.n_layer));
  ow        = g->o_blk[B_NT * i + lin_w[k]];
  ob        = g->o_blk[B_NT * i + lin_w[k] + 1];
  lin->din  = lin_in[k] * C;
  lin->dout = lin_out[k] * C;
  lin->W    = g->params + ow;
  lin->b    = g->params + ob;
  lin->dW   = g->grads + ow;
  lin->db   = g->grads + ob;
  PetscCall(PetscSNPrintf(lin->name, sizeof(lin->name), "h.%d.%s", (int)i, lin_names[k]));
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2HashArchitecture(InflGPT2 g, InflHash h)
{
  char arch[256];

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(arch, sizeof(arch), "gpt2|%s|%d,%d,%d,%d,%d|%.17g", act_names[g->cfg.activation], (int)g->cfg.n_embd, (int)g->cfg.n_layer, (int)g->cfg.n_head, (int)g->cfg.vocab_size, (int)g->cfg.n_positions, g->cfg.layer_norm_epsilon));
  PetscCall(InflHashUpdate(h, arch, strlen(arch)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2GetHash(InflGPT2 g, const char **hex)
{
  PetscFunctionBegin;
  if (g->hash_stale) {
    InflHash h;
    PetscCall(InflHashCreate(&h));
    PetscCall(InflGPT2HashArchitecture(g, h));
    PetscCall(InflHashUpdate(h, g->params, sizeof(float) * (size_t)g->nparams));
    PetscCall(InflHashFinal(&h, g->hash));
    g->hash_stale = PETSC_FALSE;
  }
  *hex = g->hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2SetPrecision(InflGPT2 g, InflPrecision prec)
{
  PetscFunctionBegin;
  if (prec != g->prec) PetscCall(workspace_free(g));
  if (prec != INFL_PREC_DOUBLE) { /* the double copies are made again when needed */
    PetscCall(PetscFree(g->params64));
    PetscCall(PetscFree(g->grads64));
  }
  g->grads64_valid  = PETSC_FALSE;
  g->prec           = prec;
  g->params64_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2View(InflGPT2 g, PetscViewer viewer)
{
  const char *hash = NULL;

  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(g->comm, &viewer));
  PetscCall(InflGPT2GetHash(g, &hash));
  PetscCall(PetscViewerASCIIPrintf(viewer, "InflGPT2: n_layer %d, n_embd %d, n_head %d, vocab_size %d, n_positions %d, %s, eps %g, %" PRId64 " parameters, sha256 %.16s..., %s precision\n", (int)g->cfg.n_layer, (int)g->cfg.n_embd, (int)g->cfg.n_head, (int)g->cfg.vocab_size, (int)g->cfg.n_positions, act_names[g->cfg.activation], g->cfg.layer_norm_epsilon, g->nparams, hash, g->prec == INFL_PREC_DOUBLE ? "double" : "single"));
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2Destroy(InflGPT2 *g)
{
  PetscFunctionBegin;
  if (!*g) PetscFunctionReturn(0);
  PetscCall(model_free(*g));
  PetscCall(PetscFree(*g));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- passes */

PetscErrorCode InflGPT2CheckBatch(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[])
{
  const InflGPT2Config *c = &g->cfg;

  PetscFunctionBegin;
  PetscCheck(g->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "the GPT-2 model has no parameters; load or set it up first");
  PetscCheck(B >= 0 && offsets[0] == 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "batch of %d sequences with offsets[0] = %d; offsets (B+1) must start at 0", (int)B, B >= 0 ? (int)offsets[0] : 0);
  for (PetscInt b = 0; b < B; b++) {
    PetscInt T = offsets[b + 1] - offsets[b];
    PetscCheck(T >= 1 && T <= c->n_positions, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "sequence %d of the batch has length %d; lengths must be in [1, n_positions = %d] (split longer sequences)", (int)b, (int)T, (int)c->n_positions);
  }
  for (PetscInt t = 0; t < offsets[B]; t++) {
    PetscCheck(tokens[t] >= 0 && tokens[t] < c->vocab_size, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "token %d at row %d of the batch is outside [0, vocab_size = %d); the data were tokenized for another model", (int)tokens[t], (int)t, (int)c->vocab_size);
    if (targets) PetscCheck(targets[t] < c->vocab_size, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "target %d at row %d of the batch is not below vocab_size = %d", (int)targets[t], (int)t, (int)c->vocab_size);
  }
  PetscFunctionReturn(0);
}

/* Check the batch, size the workspace, and fill offsets, positions, attention offsets and targets. */
static PetscErrorCode batch_setup(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[])
{
  Workspace *ws;
  int64_t    natt = 0;
  PetscInt   N;

  PetscFunctionBegin;
  PetscCall(InflGPT2CheckBatch(g, B, offsets, tokens, targets));
  N = offsets[B];
  for (PetscInt b = 0; b < B; b++) natt += (int64_t)g->cfg.n_head * (offsets[b + 1] - offsets[b]) * (offsets[b + 1] - offsets[b]);
  /* sized for B full windows at once (what the stages' memory estimate counts, InflModelCaptureBytes): a chunk of
   * shorter windows followed by one of longer ones would otherwise free and allocate the workspace again, and the
   * freed block need not go back to the system */
  PetscCall(workspace_ensure(g, B, PetscMax(N, B * g->cfg.n_positions), PetscMax(natt, (int64_t)B * g->cfg.n_head * g->cfg.n_positions * g->cfg.n_positions)));
  ws    = &g->ws;
  ws->B = B;
  ws->N = N;
  ws->attoff[0] = 0;
  for (PetscInt b = 0; b <= B; b++) ws->off[b] = offsets[b];
  for (PetscInt b = 0; b < B; b++) {
    PetscInt T = offsets[b + 1] - offsets[b];
    ws->attoff[b + 1] = ws->attoff[b] + (int64_t)g->cfg.n_head * T * T;
    for (PetscInt t = 0; t < T; t++) {
      ws->pos[offsets[b] + t] = t;
      ws->tgt[offsets[b] + t] = targets ? targets[offsets[b] + t] : (t + 1 < T ? tokens[offsets[b] + t + 1] : -1);
    }
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode params_f64(InflGPT2 g)
{
  PetscFunctionBegin;
  if (!g->params64) PetscCall(PetscMalloc1(g->nparams, &g->params64));
  if (g->params64_stale) {
    for (int64_t i = 0; i < g->nparams; i++) g->params64[i] = g->params[i];
    g->params64_stale = PETSC_FALSE;
  }
  PetscFunctionReturn(0);
}

/* Forward pass of the batch set up by batch_setup.  Not collective: a non-finite logit (weights or activations that
 * overflow the working precision) is an error on this rank, as for the MLP (callers that are collective agree on it). */
static PetscErrorCode forward(InflGPT2 g, const int32_t tokens[])
{
  const Workspace *ws = &g->ws;
  const int64_t    V  = g->cfg.vocab_size, nl = (int64_t)ws->N * V;
  int64_t          bad = -1;
  double           z   = 0;

  PetscFunctionBegin;
  if (g->prec == INFL_PREC_DOUBLE) {
    const double *lg = (const double *)ws->logits;
    PetscCall(params_f64(g));
    gpt2_forward_f64(g, g->params64, &g->ws, tokens);
    for (int64_t i = 0; i < nl && bad < 0; i++)
      if (!isfinite(lg[i])) bad = i;
    if (bad >= 0) z = lg[bad];
  } else {
    const float *lg = (const float *)ws->logits;
    gpt2_forward_f32(g, g->params, &g->ws, tokens);
    for (int64_t i = 0; i < nl && bad < 0; i++)
      if (!isfinite(lg[i])) bad = i;
    if (bad >= 0) z = lg[bad];
  }
  if (bad >= 0) {
    const PetscInt row = (PetscInt)(bad / V);
    PetscInt       b   = 0;
    while (b + 1 < ws->B && ws->off[b + 1] <= row) b++;
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FP, "the GPT-2 forward pass overflows: logit %d (token id) at position %d of sequence %d of a batch of %d is %g in %s precision; the weights are too large for the model to be evaluated (the model is broken: check how it was made%s)", (int)(bad % V), (int)(row - ws->off[b]), (int)b, (int)ws->B, z, g->prec == INFL_PREC_DOUBLE ? "double" : "single", g->prec == INFL_PREC_DOUBLE ? "" : ", or try -model_precision double");
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2Forward(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[], float logits[], double logits64[], double token_loss[])
{
  Workspace *ws = &g->ws;
  int64_t    nl;

  PetscFunctionBegin;
  g->grads64_valid = PETSC_FALSE;
  PetscCheck(!logits64 || g->prec == INFL_PREC_DOUBLE, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "double logits need the model in double precision (InflGPT2SetPrecision)");
  PetscCall(batch_setup(g, B, offsets, tokens, targets));
  PetscCall(forward(g, tokens));
  nl = (int64_t)ws->N * g->cfg.vocab_size;
  if (g->prec == INFL_PREC_DOUBLE) {
    if (token_loss) crossentropy_f64(NULL, token_loss, (double *)ws->logits, ws->tgt, ws->N, g->cfg.vocab_size);
    if (logits)
      for (int64_t i = 0; i < nl; i++) logits[i] = (float)((double *)ws->logits)[i];
    if (logits64) PetscCall(PetscArraycpy(logits64, (double *)ws->logits, nl));
  } else {
    if (token_loss) crossentropy_f32(NULL, token_loss, (float *)ws->logits, ws->tgt, ws->N, g->cfg.vocab_size);
    if (logits) PetscCall(PetscArraycpy(logits, (float *)ws->logits, nl));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2ZeroGrad(InflGPT2 g)
{
  PetscFunctionBegin;
  PetscCall(PetscArrayzero(g->grads, g->nparams));
  PetscFunctionReturn(0);
}

static void sequence_losses(const Workspace *ws, double seq_loss[])
{
  for (PetscInt b = 0; b < ws->B; b++) {
    seq_loss[b] = 0;
    for (PetscInt t = ws->off[b]; t < ws->off[b + 1]; t++) seq_loss[b] += ws->loss[t];
  }
}

PetscErrorCode InflGPT2LossBackward(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[])
{
  PetscFunctionBegin;
  g->grads64_valid = PETSC_FALSE;
  PetscCall(batch_setup(g, B, offsets, tokens, targets));
  PetscCall(forward(g, tokens));
  if (g->prec == INFL_PREC_DOUBLE) {
    g->grads64_valid = PETSC_TRUE;
    if (!g->grads64) PetscCall(PetscMalloc1(g->nparams, &g->grads64));
    PetscCall(PetscArrayzero(g->grads64, g->nparams));
    gpt2_backward_f64(g, g->params64, g->grads64, &g->ws, tokens, g->ws.tgt, NULL, NULL);
    for (int64_t i = 0; i < g->nparams; i++) g->grads[i] += (float)g->grads64[i];
  } else gpt2_backward_f32(g, g->params, g->grads, &g->ws, tokens, g->ws.tgt, NULL, NULL);
  if (seq_loss) sequence_losses(&g->ws, seq_loss);
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2GetBatchGradientDouble(InflGPT2 g, const double **grad64)
{
  PetscFunctionBegin;
  PetscCheck(g->grads64_valid, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "no double-precision gradient: call InflGPT2LossBackward with the model in double precision first");
  *grad64 = g->grads64;
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2CaptureCreate(InflGPT2 g, PetscInt Bmax, PetscInt Tmax, InflCapture **cap)
{
  PetscInt L, *din, *dout;

  PetscFunctionBegin;
  PetscCheck(g->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "the GPT-2 model has no parameters; load or set it up before creating a capture");
  PetscCheck(Bmax >= 0 && Tmax >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture capacity of %d sequences and %d rows must not be negative", (int)Bmax, (int)Tmax);
  L = 4 * g->cfg.n_layer;
  PetscCall(PetscMalloc2(L, &din, L, &dout));
  for (PetscInt l = 0; l < L; l++) {
    din[l]  = lin_in[l % 4] * g->cfg.n_embd;
    dout[l] = lin_out[l % 4] * g->cfg.n_embd;
  }
  PetscCall(InflCaptureAllocate(g->prec, L, din, dout, NULL, Bmax, Tmax, cap));
  PetscCall(PetscFree2(din, dout));
  PetscFunctionReturn(0);
}

/* The capture fits the batch: the network's layers, the precision, B sequences and T rows. */
static PetscErrorCode capture_check(InflGPT2 g, PetscInt B, const PetscInt offsets[], const InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCheck(cap->prec == g->prec, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "capture precision differs from the model's; create the capture after InflGPT2SetPrecision");
  PetscCheck(cap->L == 4 * g->cfg.n_layer, PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP, "the capture has %d layers; a GPT-2 capture holds the network's 4 n_layer = %d (NULL arrays for layers not captured)", (int)cap->L, (int)(4 * g->cfg.n_layer));
  PetscCheck(B <= cap->Bmax && (B < 0 || offsets[B] <= cap->Tmax), PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d sequences, %d tokens exceeds its capacity of %d sequences, %d tokens", (int)B, B >= 0 ? (int)offsets[B] : 0, (int)cap->Bmax, (int)cap->Tmax);
  PetscFunctionReturn(0);
}

/* After forward with ws->tgt set: loss and backward into the capture. */
static PetscErrorCode capture_backward(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], InflCapture *cap)
{
  PetscFunctionBegin;
  if (g->prec == INFL_PREC_DOUBLE) gpt2_backward_f64(g, g->params64, NULL, &g->ws, tokens, g->ws.tgt, cap->a64, cap->ds64);
  else gpt2_backward_f32(g, g->params, NULL, &g->ws, tokens, g->ws.tgt, cap->a32, cap->ds32);
  cap->B = B;
  cap->T = offsets[B];
  for (PetscInt b = 0; b <= B; b++) cap->offsets[b] = offsets[b];
  sequence_losses(&g->ws, cap->loss);
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2Capture(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCall(capture_check(g, B, offsets, cap));
  g->grads64_valid = PETSC_FALSE;
  PetscCall(batch_setup(g, B, offsets, tokens, targets));
  PetscCall(forward(g, tokens));
  PetscCall(capture_backward(g, B, offsets, tokens, cap));
  PetscFunctionReturn(0);
}

/* The first token c with cumsum(p)_c > u, p = softmax(z) in double (the last token with p > 0 if rounding leaves the
 * sum at or below u). */
static int32_t sample_token(PetscInt V, const float *z32, const double *z64, double u)
{
  double  mx, Z = 0, cum = 0;
  int32_t y = -1;
#define ZV(j) (z64 ? z64[j] : (double)z32[j])
  mx = ZV(0);
  for (PetscInt j = 1; j < V; j++) mx = PetscMax(mx, ZV(j));
  for (PetscInt j = 0; j < V; j++) Z += exp(ZV(j) - mx);
  for (PetscInt j = 0; j < V; j++) {
    double p = exp(ZV(j) - mx) / Z;
    cum += p;
    if (p > 0) y = (int32_t)j;
    if (cum > u) break;
  }
#undef ZV
  return y;
}

/* Sample targets from the logits in the workspace (after forward) into ws->tgt and targets. */
static void sample_targets(InflGPT2 g, const int64_t index[], uint64_t seed, int32_t targets[])
{
  Workspace *ws = &g->ws;
  PetscInt   V  = g->cfg.vocab_size;
  for (PetscInt b = 0; b < ws->B; b++)
    for (PetscInt t = ws->off[b]; t < ws->off[b + 1]; t++) {
      PetscInt pos = t - ws->off[b];
      int32_t  y   = -1;
      if (t + 1 < ws->off[b + 1]) {
        double u = InflUniform(seed, (uint64_t)index[b] * (uint64_t)g->cfg.n_positions + (uint64_t)pos, INFL_STREAM_FISHER_LABEL);
        y        = g->prec == INFL_PREC_DOUBLE ? sample_token(V, NULL, (const double *)ws->logits + (int64_t)t * V, u) : sample_token(V, (const float *)ws->logits + (int64_t)t * V, NULL, u);
      }
      ws->tgt[t] = y;
      if (targets) targets[t] = y;
    }
}

PetscErrorCode InflGPT2SampleTargets(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[])
{
  PetscFunctionBegin;
  g->grads64_valid = PETSC_FALSE;
  for (PetscInt b = 0; b < B; b++) PetscCheck(index[b] >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "sequence %d of the batch has global index %" PRId64 "; indices must be non-negative", (int)b, index[b]);
  PetscCall(batch_setup(g, B, offsets, tokens, NULL));
  PetscCall(forward(g, tokens));
  sample_targets(g, index, seed, targets);
  PetscFunctionReturn(0);
}

PetscErrorCode InflGPT2CaptureSampled(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap)
{
  PetscFunctionBegin;
  g->grads64_valid = PETSC_FALSE;
  PetscCall(capture_check(g, B, offsets, cap));
  for (PetscInt b = 0; b < B; b++) PetscCheck(index[b] >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "sequence %d of the batch has global index %" PRId64 "; indices must be non-negative", (int)b, index[b]);
  PetscCall(batch_setup(g, B, offsets, tokens, NULL));
  PetscCall(forward(g, tokens));
  sample_targets(g, index, seed, targets);
  PetscCall(capture_backward(g, B, offsets, tokens, cap));
  PetscFunctionReturn(0);
}

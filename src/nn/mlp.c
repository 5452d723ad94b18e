/* The multilayer perceptron: linear layers with an element-wise activation between them (not after the last). */
#include "modelimpl.h"
#include <petscviewer.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

/* The MLP's own state (model->data).  Layers, slabs, precision and hash are the generic object's. */
typedef struct {
  PetscInt      *dims;           /* (L+1) input, hidden..., classes */
  InflActivation act;
  double        *params64;       /* (nparams) double copy of params, when prec is double */
  int64_t        params64_state; /* model->params_state when params64 was copied (-1: never) */
  /* workspace for up to wsB examples, in the working precision ws_prec */
  PetscInt       wsB;
  InflPrecision  ws_prec;
  void         **h, **s, **ds;   /* (L) each: h[l] (wsB, dims[l]+1), s[l] and ds[l] (wsB, dims[l+1]) */
  double        *dW64;           /* (nparams) gradient of a double-precision batch */
  double        *loss;           /* (wsB) */
} MLP;

static const char *const act_names[] = {"relu", "tanh", "gelu", "identity"};

static inline double activation_forward(InflActivation act, double x)
{
  switch (act) {
  case INFL_ACT_RELU: return x > 0 ? x : 0;
  case INFL_ACT_TANH: return tanh(x);
  case INFL_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  default: return x;
  }
}

static inline double activation_derivative(InflActivation act, double x)
{
  switch (act) {
  case INFL_ACT_RELU: return x > 0 ? 1 : 0;
  case INFL_ACT_TANH: { double t = tanh(x); return 1 - t * t; }
  case INFL_ACT_GELU: return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * PETSC_PI);
  default: return 1;
  }
}

#define REAL float
#define GEMM cblas_sgemm
#define FN(name) name##_f32
#include "mlp_impl.h"
#undef REAL
#undef GEMM
#undef FN
#define REAL double
#define GEMM cblas_dgemm
#define FN(name) name##_f64
#include "mlp_impl.h"
#undef REAL
#undef GEMM
#undef FN

static PetscErrorCode free_workspace(InflModel m)
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  if (p->h) {
    for (PetscInt l = 0; l < m->L; l++) {
      PetscCall(PetscFree(p->h[l]));
      PetscCall(PetscFree(p->s[l]));
      PetscCall(PetscFree(p->ds[l]));
    }
  }
  if (p->h) PetscCall(PetscFree3(p->h, p->s, p->ds));
  p->h = NULL;
  PetscCall(PetscFree(p->loss));
  p->wsB = 0;
  PetscFunctionReturn(0);
}

/* Workspace for B examples in the model's precision (reallocated when the precision changed). */
static PetscErrorCode ensure_workspace(InflModel m, PetscInt B)
{
  MLP   *p  = (MLP *)m->data;
  size_t es = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);

  PetscFunctionBegin;
  if (p->ws_prec != m->prec) PetscCall(free_workspace(m));
  p->ws_prec = m->prec;
  if (B <= p->wsB) PetscFunctionReturn(0);
  PetscCall(free_workspace(m));
  PetscCall(PetscCalloc3(m->L, &p->h, m->L, &p->s, m->L, &p->ds));
  for (PetscInt l = 0; l < m->L; l++) {
    PetscCall(PetscMalloc((size_t)B * (p->dims[l] + 1) * es, &p->h[l]));
    PetscCall(PetscMalloc((size_t)B * p->dims[l + 1] * es, &p->s[l]));
    PetscCall(PetscMalloc((size_t)B * p->dims[l + 1] * es, &p->ds[l]));
  }
  PetscCall(PetscMalloc1(B, &p->loss));
  p->wsB = B;
  PetscFunctionReturn(0);
}

/* Free what the MLP allocated (its workspace, dims and double copies); the layers stay to the generic object. */
static PetscErrorCode mlp_free_arrays(InflModel m)
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  PetscCall(free_workspace(m));
  PetscCall(PetscFree(p->dims));
  PetscCall(PetscFree(p->params64));
  PetscCall(PetscFree(p->dW64));
  p->params64_state = -1;
  PetscFunctionReturn(0);
}

/* Back in single precision: the double copies of the parameters and gradients (made for a double-precision pass,
 * e.g. the scorer's queries) are freed, so that they do not stay beside the stages that follow (-mem_limit). */
static PetscErrorCode mlp_set_precision(InflModel m)
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  if (m->prec == INFL_PREC_DOUBLE) PetscFunctionReturn(0);
  PetscCall(PetscFree(p->params64));
  PetscCall(PetscFree(p->dW64));
  p->params64_state = -1;
  PetscFunctionReturn(0);
}

/* Allocate slabs and carve the per-layer views: layer l is W (dout, din) then b (dout). */
static PetscErrorCode mlp_allocate(InflModel m, PetscInt ndims, const PetscInt dims[], InflActivation act)
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  PetscCall(free_workspace(m)); /* sized by the old layers */
  PetscCall(mlp_free_arrays(m));
  PetscCall(InflModelFreeLayers_Private(m));
  PetscCheck(ndims >= 2, m->comm, PETSC_ERR_ARG_OUTOFRANGE, "an MLP needs at least 2 dims (input and classes), got %d", (int)ndims);
  for (PetscInt i = 0; i < ndims; i++) PetscCheck(dims[i] > 0, m->comm, PETSC_ERR_ARG_OUTOFRANGE, "MLP dims[%d] = %d must be positive", (int)i, (int)dims[i]);
  p->act = act;
  PetscCall(PetscMalloc1(ndims, &p->dims));
  PetscCall(PetscArraycpy(p->dims, dims, ndims));
  PetscCall(InflModelAllocateLayers_Private(m, ndims - 1, dims, dims + 1));
  m->nin        = dims[0];
  m->nout       = dims[ndims - 1];
  m->seqlen_max = 1;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetUpMLP(InflModel m, PetscInt ndims, const PetscInt dims[], InflActivation act, uint64_t seed)
{
  PetscBool ismlp;

  PetscFunctionBegin;
  if (!m->type[0]) PetscCall(InflModelSetType(m, "mlp"));
  PetscCall(PetscStrcmp(m->type, "mlp", &ismlp));
  PetscCheck(ismlp, m->comm, PETSC_ERR_ARG_WRONGSTATE, "InflModelSetUpMLP on a model of type %s; create a new model (or InflModelSetType(model, \"mlp\"))", m->type);
  PetscCall(mlp_allocate(m, ndims, dims, act));
  for (PetscInt l = 0; l < m->L; l++) {
    InflLinear *ly    = &m->layers[l];
    double      bound = 1.0 / sqrt((double)ly->din);
    int64_t     base  = ly->W - m->params;
    for (int64_t i = 0; i < (int64_t)ly->dout * (ly->din + 1); i++) m->params[base + i] = (float)((2 * InflUniform(seed, (uint64_t)(base + i), INFL_STREAM_INIT) - 1) * bound);
  }
  m->params_state++;
  m->hash_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* The first class c with cumsum(p)_c > u, p = softmax(z) in double, u = InflUniform(seed, index, FISHER_LABEL). */
static int64_t sample_label(PetscInt C, const float *z32, const double *z64, uint64_t seed, int64_t index)
{
  double  mx, Z = 0, cum = 0, u = InflUniform(seed, (uint64_t)index, INFL_STREAM_FISHER_LABEL);
  int64_t y = -1;
#define ZV(j) (z64 ? z64[j] : (double)z32[j])
  mx = ZV(0);
  for (PetscInt j = 1; j < C; j++) mx = PetscMax(mx, ZV(j));
  for (PetscInt j = 0; j < C; j++) Z += exp(ZV(j) - mx);
  for (PetscInt j = 0; j < C; j++) {
    double p = exp(ZV(j) - mx) / Z;
    cum += p;
    if (p > 0) y = j; /* the last class with p > 0 if rounding leaves cum <= u */
    if (cum > u) break;
  }
#undef ZV
  return y;
}

static PetscErrorCode parse_activation(MPI_Comm comm, const char name[], const char where[], InflActivation *act)
{
  PetscFunctionBegin;
  for (int i = 0; i < 4; i++) {
    PetscBool eq;
    PetscCall(PetscStrcmp(name, act_names[i], &eq));
    if (eq) {
      *act = (InflActivation)i;
      PetscFunctionReturn(0);
    }
  }
  SETERRQ(comm, PETSC_ERR_ARG_UNKNOWN_TYPE, "%s: unknown activation \"%s\"; use relu, tanh, gelu or identity", where, name);
}

/* The MLP from an opened safetensors file: metadata dims and activation, tensors layers.{i}.weight / bias. */
static PetscErrorCode mlp_load(InflModel m, InflSafetensors st, const char path[])
{
  const char     *dims_s, *act_s;
  PetscInt        dims[64], nd = 0;
  InflActivation  act = INFL_ACT_RELU;
  char            buf[1024], *tok, *save;

  PetscFunctionBegin;
  PetscCall(InflSafetensorsGetMetadata(st, "dims", &dims_s));
  PetscCall(InflSafetensorsGetMetadata(st, "activation", &act_s));
  PetscCheck(dims_s, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: architecture mlp needs metadata \"dims\" (e.g. \"784,256,256,10\")", path);
  PetscCall(PetscStrncpy(buf, dims_s, sizeof(buf)));
  for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    char *end;
    long  v = strtol(tok, &end, 10);
    PetscCheck(*end == 0 && v > 0 && v < (1L << 30) && nd < 64, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: metadata dims \"%s\" must be positive integers separated by commas", path, dims_s);
    dims[nd++] = (PetscInt)v;
  }
  if (act_s) {
    char where[PETSC_MAX_PATH_LEN + 32];
    PetscCall(PetscSNPrintf(where, sizeof(where), "%s: metadata activation", path));
    PetscCall(parse_activation(m->comm, act_s, where, &act));
  }
  PetscCall(mlp_allocate(m, nd, dims, act));
  for (PetscInt l = 0; l < m->L; l++) {
    for (int k = 0; k < 2; k++) {
      const InflTensor *t;
      char              name[64];
      int64_t           want0 = m->layers[l].dout, want1 = m->layers[l].din;
      float            *dst   = k == 0 ? m->layers[l].W : m->layers[l].b;
      PetscCall(PetscSNPrintf(name, sizeof(name), "layers.%d.%s", (int)l, k == 0 ? "weight" : "bias"));
      PetscCall(InflSafetensorsGet(st, name, &t));
      PetscCheck(t, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s is missing (dims %s need %d layers)", path, name, dims_s, (int)m->L);
      if (k == 0) PetscCheck(t->ndim == 2 && t->shape[0] == want0 && t->shape[1] == want1, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s has shape [%" PRId64 ", %" PRId64 "] (ndim %d) but dims %s need [%" PRId64 ", %" PRId64 "] (out, in)", path, name, t->ndim > 0 ? t->shape[0] : 0, t->ndim > 1 ? t->shape[1] : 0, t->ndim, dims_s, want0, want1);
      else PetscCheck(t->ndim == 1 && t->shape[0] == want0, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s has %d dims / %" PRId64 " entries but dims %s need a vector of %" PRId64, path, name, t->ndim, t->ndim > 0 ? t->shape[0] : 0, dims_s, want0);
      if (t->dtype == INFL_F32) PetscCall(PetscArraycpy(dst, (const float *)t->data, t->numel));
      else if (t->dtype == INFL_F64) for (int64_t i = 0; i < t->numel; i++) dst[i] = (float)((const double *)t->data)[i];
      else SETERRQ(m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s has dtype %s; MLP weights must be F32 or F64", path, name, InflDTypeName(t->dtype));
    }
  }
  {
    char what[PETSC_MAX_PATH_LEN + 16];
    PetscCall(PetscSNPrintf(what, sizeof(what), "%s", path));
    for (PetscInt l = 0; l < m->L; l++) {
      InflLinear *ly = &m->layers[l];
      for (int64_t i = 0; i < (int64_t)ly->dout * (ly->din + 1); i++) {
        PetscCheck(isfinite(ly->W[i]), m->comm, PETSC_ERR_FP, "%s: tensor layers.%d.%s has a non-finite value (%g) at flat index %" PRId64 "; the model is broken (diverged training?)", what, (int)l, i < (int64_t)ly->dout * ly->din ? "weight" : "bias", (double)ly->W[i], i < (int64_t)ly->dout * ly->din ? i : i - (int64_t)ly->dout * ly->din);
      }
    }
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_save(InflModel m, const char path[])
{
  MLP        *p = (MLP *)m->data;
  InflTensor *t;
  char        dims_s[1024] = "", (*names)[64];
  const char *keys[3 + INFL_MODEL_META_MAX] = {"architecture", "dims", "activation"}, *vals[3 + INFL_MODEL_META_MAX];

  PetscFunctionBegin;
  PetscCall(PetscCalloc2(2 * m->L, &t, 2 * m->L, &names));
  for (PetscInt i = 0; i <= m->L; i++) {
    size_t len;
    PetscCall(PetscStrlen(dims_s, &len));
    PetscCall(PetscSNPrintf(dims_s + len, sizeof(dims_s) - len, i ? ",%d" : "%d", (int)p->dims[i]));
  }
  for (PetscInt l = 0; l < m->L; l++) {
    PetscCall(PetscSNPrintf(names[2 * l], 64, "layers.%d.weight", (int)l));
    PetscCall(PetscSNPrintf(names[2 * l + 1], 64, "layers.%d.bias", (int)l));
    t[2 * l]     = (InflTensor){.name = names[2 * l], .dtype = INFL_F32, .ndim = 2, .shape = {m->layers[l].dout, m->layers[l].din}, .numel = (int64_t)m->layers[l].dout * m->layers[l].din, .data = m->layers[l].W};
    t[2 * l + 1] = (InflTensor){.name = names[2 * l + 1], .dtype = INFL_F32, .ndim = 1, .shape = {m->layers[l].dout}, .numel = m->layers[l].dout, .data = m->layers[l].b};
  }
  vals[0] = "mlp";
  vals[1] = dims_s;
  vals[2] = act_names[p->act];
  for (PetscInt i = 0; i < m->nmeta; i++) { /* InflModelSetMetadata */
    keys[3 + i] = m->meta_key[i];
    vals[3 + i] = m->meta_value[i];
  }
  PetscCall(InflSafetensorsWrite(m->comm, path, 2 * m->L, t, 3 + m->nmeta, keys, vals));
  PetscCall(PetscFree2(t, names));
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_hash_architecture(InflModel m, InflHash h)
{
  MLP *p = (MLP *)m->data;
  char arch[1100];

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(arch, sizeof(arch), "mlp|%s|", act_names[p->act]));
  PetscCall(InflHashUpdate(h, arch, strlen(arch)));
  PetscCall(InflHashUpdate(h, p->dims, sizeof(PetscInt) * (m->L + 1)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetActivationName(InflModel m, const char **name)
{
  PetscBool ismlp;

  PetscFunctionBegin;
  PetscCall(PetscStrcmp(m->type, "mlp", &ismlp));
  PetscCheck(ismlp, m->comm, PETSC_ERR_ARG_WRONGSTATE, "a model of type %s has no activation name (an MLP property)", m->type[0] ? m->type : "(none)");
  *name = act_names[((MLP *)m->data)->act];
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_view(InflModel m, PetscViewer viewer)
{
  MLP        *p = (MLP *)m->data;
  const char *hash;

  PetscFunctionBegin;
  PetscCall(InflModelGetHash(m, &hash));
  PetscCall(PetscViewerASCIIPrintf(viewer, "InflModel: mlp, activation %s, %" PRId64 " parameters, dims ", act_names[p->act], m->nparams));
  for (PetscInt i = 0; i <= m->L; i++) PetscCall(PetscViewerASCIIPrintf(viewer, i ? ",%d" : "%d", (int)p->dims[i]));
  PetscCall(PetscViewerASCIIPrintf(viewer, ", sha256 %.16s..., %s precision\n", hash, m->prec == INFL_PREC_DOUBLE ? "double" : "single"));
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_destroy(InflModel m)
{
  PetscFunctionBegin;
  PetscCall(mlp_free_arrays(m));
  PetscCall(PetscFree(m->data));
  PetscFunctionReturn(0);
}

/* The MLP consumes rows: features equal to its input dimension, labels in [0, classes). */
static PetscErrorCode mlp_check_data(InflModel m, InflData data)
{
  MLP            *p = (MLP *)m->data;
  InflDataContent kind;
  const char     *spec, *name;
  char            what[PETSC_MAX_PATH_LEN + 48];
  int64_t         N, d, start, count, bad = -1;
  const float    *x;
  const int64_t  *y;
  PetscInt        din = p->dims[0], C = p->dims[m->L];

  PetscFunctionBegin;
  PetscCall(InflDataGetSpec(data, &spec));
  PetscCall(InflDataGetName(data, &name));
  if (!strcmp(name, "data")) name = ""; /* the eval driver's -data: not "data data SPEC" */
  PetscCall(PetscSNPrintf(what, sizeof(what), "%s%sdata %s", name[0] ? name : "", name[0] ? " " : "", spec));
  PetscCall(InflDataGetContent(data, &kind));
  PetscCheck(kind == INFL_DATA_ROWS, m->comm, PETSC_ERR_ARG_INCOMP, "%s holds token sequences but the model is an MLP, which reads rows of features with class labels (idx:PREFIX or h5:FILE)", what);
  PetscCall(InflDataGetSizes(data, &N, &d, NULL));
  PetscCheck(d == din, m->comm, PETSC_ERR_ARG_SIZ, "%s has %" PRId64 " features per example but the model's input dimension is %d; give data of the model's input size (or fix -model_dims)", what, d, (int)din);
  PetscCall(InflDataGetShard(data, &start, &count, &x, &y));
  for (int64_t i = 0; i < count && bad < 0; i++) if (y[i] < 0 || y[i] >= C) bad = i;
  InflCheckAll(m->comm, bad < 0, PETSC_ERR_ARG_OUTOFRANGE, "%s: label %" PRId64 " of example %" PRId64 " is not below the model's %d classes; the data set does not match the model (fix -model_dims or the data)", what, bad >= 0 ? y[bad] : 0, start + bad, (int)C);
  PetscFunctionReturn(0);
}

/* Per-layer weight and bias pointers in double, refreshed from the float slab when the parameters changed. */
static PetscErrorCode weights_f64(InflModel m, double **W, double **b)
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  if (!p->params64) PetscCall(PetscMalloc1(m->nparams, &p->params64));
  if (p->params64_state != m->params_state) {
    for (int64_t i = 0; i < m->nparams; i++) p->params64[i] = m->params[i];
    p->params64_state = m->params_state;
  }
  for (PetscInt l = 0; l < m->L; l++) {
    W[l] = p->params64 + (m->layers[l].W - m->params);
    b[l] = p->params64 + (m->layers[l].b - m->params);
  }
  PetscFunctionReturn(0);
}

/* Forward into h (inputs with trailing 1) and s; logits are s[L-1]. */
static PetscErrorCode model_forward(InflModel m, PetscInt B, const float x[], void *h[], void *s[])
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  if (m->prec == INFL_PREC_DOUBLE) {
    double *W[64], *b[64];
    PetscCheck(m->L <= 64, PETSC_COMM_SELF, PETSC_ERR_SUP, "at most 64 layers");
    PetscCall(weights_f64(m, W, b));
    mlp_forward_f64(m->L, p->dims, p->act, W, b, B, x, (double **)h, (double **)s);
  } else {
    float *W[64], *b[64];
    PetscCheck(m->L <= 64, PETSC_COMM_SELF, PETSC_ERR_SUP, "at most 64 layers");
    for (PetscInt l = 0; l < m->L; l++) {
      W[l] = m->layers[l].W;
      b[l] = m->layers[l].b;
    }
    mlp_forward_f32(m->L, p->dims, p->act, W, b, B, x, (float **)h, (float **)s);
  }
  { /* finite weights can still overflow the logits (then the loss, the sampled labels and the factors are garbage) */
    PetscInt C = p->dims[m->L];
    for (int64_t i = 0; i < (int64_t)B * C; i++) {
      double z = m->prec == INFL_PREC_DOUBLE ? ((double *)s[m->L - 1])[i] : (double)((float *)s[m->L - 1])[i];
      PetscCheck(isfinite(z), PETSC_COMM_SELF, PETSC_ERR_FP, "the model's forward pass overflows: logit %d (tensor logits, the output of layer %d) of example %d of a batch of %d is %g in %s precision; the weights are too large for the data (the model is broken: check how it was made)", (int)(i % C), (int)(m->L - 1), (int)(i / C), (int)B, z, m->prec == INFL_PREC_DOUBLE ? "double" : "single");
    }
  }
  PetscFunctionReturn(0);
}

/* Loss, dlogits into ds[L-1], backward into ds[0..L-2]. */
static PetscErrorCode model_loss_backward(InflModel m, PetscInt B, const int64_t y[], void *s[], void *ds[], double loss[], PetscInt *correct)
{
  MLP     *p = (MLP *)m->data;
  PetscInt C = p->dims[m->L];

  PetscFunctionBegin;
  for (PetscInt n = 0; n < B; n++) PetscCheck(y[n] >= 0 && y[n] < C, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "label %" PRId64 " of batch example %d is outside [0, %d) for a model with %d classes; the data set does not match the model", y[n], (int)n, (int)C, (int)C);
  if (m->prec == INFL_PREC_DOUBLE) {
    double *W[64], *b[64];
    PetscCall(weights_f64(m, W, b));
    softmax_xent_f64(B, C, (double *)s[m->L - 1], y, (double *)ds[m->L - 1], loss, correct);
    mlp_backward_f64(m->L, p->dims, p->act, W, B, NULL, (double **)s, (double **)ds);
  } else {
    float *W[64];
    for (PetscInt l = 0; l < m->L; l++) W[l] = m->layers[l].W;
    softmax_xent_f32(B, C, (float *)s[m->L - 1], y, (float *)ds[m->L - 1], loss, correct);
    mlp_backward_f32(m->L, p->dims, p->act, W, B, NULL, (float **)s, (float **)ds);
  }
  if (loss)
    for (PetscInt n = 0; n < B; n++) PetscCheck(isfinite(loss[n]), PETSC_COMM_SELF, PETSC_ERR_FP, "the loss of example %d of a batch of %d is %g (non-finite) with label %" PRId64 "; the model's outputs overflow (the model is broken: check how it was made)", (int)n, (int)B, loss[n], y[n]);
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_forward(InflModel m, PetscInt B, const float x[], float logits[])
{
  MLP     *p = (MLP *)m->data;
  PetscInt C = p->dims[m->L];

  PetscFunctionBegin;
  PetscCall(ensure_workspace(m, B));
  PetscCall(model_forward(m, B, x, p->h, p->s));
  if (m->prec == INFL_PREC_DOUBLE) for (int64_t i = 0; i < (int64_t)B * C; i++) logits[i] = (float)((double *)p->s[m->L - 1])[i];
  else PetscCall(PetscArraycpy(logits, (float *)p->s[m->L - 1], (size_t)B * C));
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_loss_backward(InflModel m, PetscInt B, const float x[], const int64_t y[], double *loss_sum, PetscInt *correct)
{
  MLP *p = (MLP *)m->data;

  PetscFunctionBegin;
  PetscCall(ensure_workspace(m, B));
  if (correct) *correct = 0;
  PetscCall(model_forward(m, B, x, p->h, p->s));
  PetscCall(model_loss_backward(m, B, y, p->s, p->ds, p->loss, correct));
  if (m->prec == INFL_PREC_DOUBLE) {
    double *dW[64], *db[64];
    if (!p->dW64) PetscCall(PetscMalloc1(m->nparams, &p->dW64));
    PetscCall(PetscArrayzero(p->dW64, m->nparams));
    for (PetscInt l = 0; l < m->L; l++) {
      dW[l] = p->dW64 + (m->layers[l].dW - m->grads);
      db[l] = p->dW64 + (m->layers[l].db - m->grads);
    }
    mlp_param_grad_f64(m->L, p->dims, B, (double **)p->h, (double **)p->ds, dW, db);
    for (int64_t i = 0; i < m->nparams; i++) m->grads[i] += (float)p->dW64[i];
  } else {
    float *dW[64], *db[64];
    for (PetscInt l = 0; l < m->L; l++) {
      dW[l] = m->layers[l].dW;
      db[l] = m->layers[l].db;
    }
    mlp_param_grad_f32(m->L, p->dims, B, (float **)p->h, (float **)p->ds, dW, db);
  }
  if (loss_sum) {
    *loss_sum = 0;
    for (PetscInt n = 0; n < B; n++) *loss_sum += p->loss[n];
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_sample_labels(InflModel m, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[])
{
  PetscInt C = ((MLP *)m->data)->dims[m->L];
  float   *z;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1((size_t)B * C, &z));
  PetscCall(mlp_forward(m, B, x, z));
  for (PetscInt n = 0; n < B; n++) y[n] = sample_label(C, z + (int64_t)n * C, NULL, seed, index[n]);
  PetscCall(PetscFree(z));
  PetscFunctionReturn(0);
}

/* Forward and backward straight into the capture; an MLP example is a sequence of one row. */
static PetscErrorCode model_capture(InflModel m, PetscInt B, const float x[], const int64_t y[], const int64_t sampled_index[], uint64_t seed, int64_t ysampled[], InflCapture *cap)
{
  MLP  *p = (MLP *)m->data;
  void *a[64], *ds[64];

  PetscFunctionBegin;
  PetscCheck(B <= cap->Tmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d rows exceeds its row capacity %d", (int)B, (int)cap->Tmax);
  PetscCall(ensure_workspace(m, B));
  for (PetscInt l = 0; l < m->L; l++) {
    a[l]  = m->prec == INFL_PREC_DOUBLE ? (void *)cap->a64[l] : (void *)cap->a32[l];
    ds[l] = m->prec == INFL_PREC_DOUBLE ? (void *)cap->ds64[l] : (void *)cap->ds32[l];
  }
  PetscCall(model_forward(m, B, x, a, p->s));
  if (sampled_index) { /* true Fisher: labels sampled from this forward pass's logits */
    PetscInt C = p->dims[m->L];
    for (PetscInt n = 0; n < B; n++) {
      const void *z = (char *)p->s[m->L - 1] + (size_t)n * C * (m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float));
      ysampled[n] = sample_label(C, m->prec == INFL_PREC_DOUBLE ? NULL : (const float *)z, m->prec == INFL_PREC_DOUBLE ? (const double *)z : NULL, seed, sampled_index[n]);
    }
    y = ysampled;
  }
  PetscCall(model_loss_backward(m, B, y, p->s, ds, cap->loss, NULL));
  cap->B = B;
  cap->T = B;
  for (PetscInt n = 0; n <= B; n++) cap->offsets[n] = n;
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_capture(InflModel m, PetscInt B, const float x[], const int64_t y[], InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCall(model_capture(m, B, x, y, NULL, 0, NULL, cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_capture_sampled(InflModel m, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[], InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCall(model_capture(m, B, x, NULL, index, seed, y, cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode mlp_per_example_gradients(InflModel m, PetscInt B, const float x[], const int64_t y[], double g[])
{
  MLP          *p = (MLP *)m->data;
  InflCapture  *cap;
  InflPrecision prec = m->prec;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(m, INFL_PREC_DOUBLE));
  PetscCall(InflCaptureCreate(m, B, &cap));
  PetscCall(InflModelCapture(m, B, x, y, cap));
  for (PetscInt n = 0; n < B; n++) {
    double *gn = g + (int64_t)n * m->nparams;
    for (PetscInt l = 0; l < m->L; l++) {
      PetscInt      din = p->dims[l], dout = p->dims[l + 1];
      const double *a = cap->a64[l] + (int64_t)n * (din + 1), *ds = cap->ds64[l] + (int64_t)n * dout;
      double       *gW = gn + (m->layers[l].W - m->params), *gb = gn + (m->layers[l].b - m->params);
      for (PetscInt i = 0; i < dout; i++) {
        for (PetscInt j = 0; j < din; j++) gW[(int64_t)i * din + j] = ds[i] * a[j];
        gb[i] = ds[i];
      }
    }
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflModelSetPrecision(m, prec));
  PetscFunctionReturn(0);
}

static size_t mlp_capture_bytes(InflModel m)
{
  MLP   *p  = (MLP *)m->data;
  size_t es = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float), b = sizeof(double);
  for (PetscInt l = 0; l < m->L; l++) b += es * (size_t)(2 * (p->dims[l] + 1) + 3 * p->dims[l + 1]);
  return b;
}

/* The W of every layer are matrices, the b vectors: W_l starts where layer l's slab starts. */
static PetscErrorCode mlp_matrix_ranges(InflModel m, PetscInt *n, InflParamRange **ranges)
{
  int64_t off = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(m->L, ranges));
  for (PetscInt l = 0; l < m->L; l++) {
    (*ranges)[l].start = off;
    (*ranges)[l].count = (int64_t)m->layers[l].dout * m->layers[l].din;
    off += (int64_t)m->layers[l].dout * (m->layers[l].din + 1);
  }
  *n = m->L;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCreate_MLP(InflModel m)
{
  MLP *p;

  PetscFunctionBegin;
  PetscCall(PetscNew(&p));
  p->params64_state                = -1;
  m->data                          = p;
  m->seqlen_max                    = 1;
  m->ops->load                     = mlp_load;
  m->ops->save                     = mlp_save;
  m->ops->view                     = mlp_view;
  m->ops->destroy                  = mlp_destroy;
  m->ops->check_data               = mlp_check_data;
  m->ops->hash_architecture        = mlp_hash_architecture;
  m->ops->forward                  = mlp_forward;
  m->ops->loss_backward            = mlp_loss_backward;
  m->ops->capture                  = mlp_capture;
  m->ops->capture_sampled          = mlp_capture_sampled;
  m->ops->sample_labels            = mlp_sample_labels;
  m->ops->per_example_gradients    = mlp_per_example_gradients;
  m->ops->capture_bytes            = mlp_capture_bytes;
  m->ops->jacobian_vector_product  = InflModelJacobianVectorProduct_MLP;
  m->ops->gauss_newton_product     = InflModelGaussNewtonProduct_MLP;
  m->ops->matrix_ranges            = mlp_matrix_ranges;
  m->ops->set_precision            = mlp_set_precision;
  PetscFunctionReturn(0);
}

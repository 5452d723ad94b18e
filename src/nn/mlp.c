/* The multilayer perceptron: linear layers with an element-wise activation between them (not after the last). */
#include <infl/model.h>
#include <petscviewer.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

struct _p_InflModel {
  MPI_Comm       comm;
  PetscInt       L;     /* linear layers */
  PetscInt      *dims;  /* (L+1) */
  InflActivation act;
  InflLinear    *layers;
  int64_t        nparams;
  float         *params, *grads; /* (nparams) slabs */
  InflPrecision  prec;
  double        *params64;       /* (nparams) double copy of params, when prec is double */
  PetscBool      params64_stale;
  char           hash[65];
  PetscBool      hash_stale;
  /* workspace for up to wsB examples, in the working precision */
  PetscInt       wsB;
  void          *ws;
  void         **h, **s, **ds;   /* (L) each */
  double        *dW64;           /* (nparams) gradient of a double-precision batch */
  double        *loss;           /* (wsB) */
};

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

PetscErrorCode InflModelCreate(MPI_Comm comm, InflModel *model)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(model));
  (*model)->comm       = comm;
  (*model)->hash_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

static PetscErrorCode free_workspace(InflModel m)
{
  PetscFunctionBegin;
  if (m->h) {
    for (PetscInt l = 0; l < m->L; l++) {
      PetscCall(PetscFree(m->h[l]));
      PetscCall(PetscFree(m->s[l]));
      PetscCall(PetscFree(m->ds[l]));
    }
  }
  if (m->h) PetscCall(PetscFree3(m->h, m->s, m->ds));
  m->h = NULL;
  PetscCall(PetscFree(m->loss));
  m->wsB = 0;
  PetscFunctionReturn(0);
}

static PetscErrorCode ensure_workspace(InflModel m, PetscInt B)
{
  size_t es = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);

  PetscFunctionBegin;
  if (B <= m->wsB) PetscFunctionReturn(0);
  PetscCall(free_workspace(m));
  PetscCall(PetscCalloc3(m->L, &m->h, m->L, &m->s, m->L, &m->ds));
  for (PetscInt l = 0; l < m->L; l++) {
    PetscCall(PetscMalloc((size_t)B * (m->dims[l] + 1) * es, &m->h[l]));
    PetscCall(PetscMalloc((size_t)B * m->dims[l + 1] * es, &m->s[l]));
    PetscCall(PetscMalloc((size_t)B * m->dims[l + 1] * es, &m->ds[l]));
  }
  PetscCall(PetscMalloc1(B, &m->loss));
  m->wsB = B;
  PetscFunctionReturn(0);
}

static PetscErrorCode model_destroy_arrays(InflModel m)
{
  PetscFunctionBegin;
  PetscCall(free_workspace(m));
  PetscCall(PetscFree(m->dims));
  PetscCall(PetscFree(m->layers));
  PetscCall(PetscFree(m->params));
  PetscCall(PetscFree(m->grads));
  PetscCall(PetscFree(m->params64));
  PetscCall(PetscFree(m->dW64));
  m->L = 0;
  PetscFunctionReturn(0);
}

/* Allocate slabs and carve the per-layer views: layer l is W (dout, din) then b (dout). */
static PetscErrorCode model_allocate(InflModel m, PetscInt ndims, const PetscInt dims[], InflActivation act)
{
  int64_t off = 0;

  PetscFunctionBegin;
  PetscCall(model_destroy_arrays(m));
  PetscCheck(ndims >= 2, m->comm, PETSC_ERR_ARG_OUTOFRANGE, "an MLP needs at least 2 dims (input and classes), got %d", (int)ndims);
  for (PetscInt i = 0; i < ndims; i++) PetscCheck(dims[i] > 0, m->comm, PETSC_ERR_ARG_OUTOFRANGE, "MLP dims[%d] = %d must be positive", (int)i, (int)dims[i]);
  m->L   = ndims - 1;
  m->act = act;
  PetscCall(PetscMalloc1(ndims, &m->dims));
  PetscCall(PetscArraycpy(m->dims, dims, ndims));
  PetscCall(PetscCalloc1(m->L, &m->layers));
  m->nparams = 0;
  for (PetscInt l = 0; l < m->L; l++) m->nparams += (int64_t)dims[l + 1] * (dims[l] + 1);
  PetscCall(PetscCalloc1(m->nparams, &m->params));
  PetscCall(PetscCalloc1(m->nparams, &m->grads));
  for (PetscInt l = 0; l < m->L; l++) {
    InflLinear *ly = &m->layers[l];
    ly->din        = dims[l];
    ly->dout       = dims[l + 1];
    ly->W          = m->params + off;
    ly->dW         = m->grads + off;
    off += (int64_t)ly->dout * ly->din;
    ly->b  = m->params + off;
    ly->db = m->grads + off;
    off += ly->dout;
  }
  m->params64_stale = PETSC_TRUE;
  m->hash_stale     = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetUpMLP(InflModel m, PetscInt ndims, const PetscInt dims[], InflActivation act, uint64_t seed)
{
  PetscFunctionBegin;
  PetscCall(model_allocate(m, ndims, dims, act));
  for (PetscInt l = 0; l < m->L; l++) {
    InflLinear *ly    = &m->layers[l];
    double      bound = 1.0 / sqrt((double)ly->din);
    int64_t     base  = ly->W - m->params;
    for (int64_t i = 0; i < (int64_t)ly->dout * (ly->din + 1); i++) m->params[base + i] = (float)((2 * InflUniform(seed, (uint64_t)(base + i), INFL_STREAM_INIT) - 1) * bound);
  }
  PetscFunctionReturn(0);
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

PetscErrorCode InflModelLoad(InflModel m, const char path[])
{
  InflSafetensors st;
  const char     *arch, *dims_s, *act_s;
  PetscInt        dims[64], nd = 0;
  InflActivation  act = INFL_ACT_RELU;
  char            buf[1024], *tok, *save;

  PetscFunctionBegin;
  PetscCall(InflSafetensorsRead(m->comm, path, &st));
  PetscCall(InflSafetensorsGetMetadata(st, "architecture", &arch));
  PetscCall(InflSafetensorsGetMetadata(st, "dims", &dims_s));
  PetscCall(InflSafetensorsGetMetadata(st, "activation", &act_s));
  PetscCheck(arch, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: no \"architecture\" in the safetensors metadata; an MLP needs __metadata__ {\"architecture\": \"mlp\", \"dims\": \"784,256,256,10\", \"activation\": \"relu\"}", path);
  {
    PetscBool ismlp;
    PetscCall(PetscStrcmp(arch, "mlp", &ismlp));
    PetscCheck(ismlp, m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: unknown architecture \"%s\"; this version reads \"mlp\"", path, arch);
  }
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
  PetscCall(model_allocate(m, nd, dims, act));
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
  PetscCall(InflSafetensorsDestroy(&st));
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

PetscErrorCode InflModelSave(InflModel m, const char path[])
{
  InflTensor *t;
  char        dims_s[1024] = "", (*names)[64];
  const char *keys[3]      = {"architecture", "dims", "activation"}, *vals[3];

  PetscFunctionBegin;
  PetscCall(PetscCalloc2(2 * m->L, &t, 2 * m->L, &names));
  for (PetscInt i = 0; i <= m->L; i++) {
    size_t len;
    PetscCall(PetscStrlen(dims_s, &len));
    PetscCall(PetscSNPrintf(dims_s + len, sizeof(dims_s) - len, i ? ",%d" : "%d", (int)m->dims[i]));
  }
  for (PetscInt l = 0; l < m->L; l++) {
    PetscCall(PetscSNPrintf(names[2 * l], 64, "layers.%d.weight", (int)l));
    PetscCall(PetscSNPrintf(names[2 * l + 1], 64, "layers.%d.bias", (int)l));
    t[2 * l]     = (InflTensor){.name = names[2 * l], .dtype = INFL_F32, .ndim = 2, .shape = {m->layers[l].dout, m->layers[l].din}, .numel = (int64_t)m->layers[l].dout * m->layers[l].din, .data = m->layers[l].W};
    t[2 * l + 1] = (InflTensor){.name = names[2 * l + 1], .dtype = INFL_F32, .ndim = 1, .shape = {m->layers[l].dout}, .numel = m->layers[l].dout, .data = m->layers[l].b};
  }
  vals[0] = "mlp";
  vals[1] = dims_s;
  vals[2] = act_names[m->act];
  PetscCall(InflSafetensorsWrite(m->comm, path, 2 * m->L, t, 3, keys, vals));
  PetscCall(PetscFree2(t, names));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetPrecision(InflModel m, InflPrecision prec)
{
  PetscFunctionBegin;
  if (prec != m->prec) PetscCall(free_workspace(m));
  m->prec           = prec;
  m->params64_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetPrecision(InflModel m, InflPrecision *prec)
{
  PetscFunctionBegin;
  *prec = m->prec;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetLayers(InflModel m, PetscInt *L, InflLinear **layers)
{
  PetscFunctionBegin;
  if (L) *L = m->L;
  if (layers) *layers = m->layers;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetSizes(InflModel m, PetscInt *din, PetscInt *nclasses)
{
  PetscFunctionBegin;
  if (din) *din = m->dims[0];
  if (nclasses) *nclasses = m->dims[m->L];
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetParameters(InflModel m, int64_t *n, float **params, float **grads)
{
  PetscFunctionBegin;
  if (n) *n = m->nparams;
  if (params) {
    *params           = m->params;
    m->params64_stale = PETSC_TRUE; /* the caller may change them */
    m->hash_stale     = PETSC_TRUE;
  }
  if (grads) *grads = m->grads;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetHash(InflModel m, const char **hex)
{
  PetscFunctionBegin;
  if (m->hash_stale) {
    InflHash h;
    char     arch[1100];
    PetscCall(PetscSNPrintf(arch, sizeof(arch), "mlp|%s|", act_names[m->act]));
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, arch, strlen(arch)));
    PetscCall(InflHashUpdate(h, m->dims, sizeof(PetscInt) * (m->L + 1)));
    PetscCall(InflHashUpdate(h, m->params, sizeof(float) * m->nparams));
    PetscCall(InflHashFinal(&h, m->hash));
    m->hash_stale = PETSC_FALSE;
  }
  *hex = m->hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetActivationName(InflModel m, const char **name)
{
  PetscFunctionBegin;
  *name = act_names[m->act];
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCheckFinite(InflModel m)
{
  PetscFunctionBegin;
  for (PetscInt l = 0; l < m->L; l++) {
    InflLinear *ly = &m->layers[l];
    int64_t     nw = (int64_t)ly->dout * ly->din;
    for (int64_t i = 0; i < nw + ly->dout; i++) PetscCheck(isfinite(ly->W[i]), PETSC_COMM_SELF, PETSC_ERR_FP, "model layer %d %s has a non-finite value %g at flat index %" PRId64 "; training diverged (lower the learning rate)", (int)l, i < nw ? "weight" : "bias", (double)ly->W[i], i < nw ? i : i - nw);
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelView(InflModel m, PetscViewer viewer)
{
  const char *hash;

  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(m->comm, &viewer));
  PetscCall(InflModelGetHash(m, &hash));
  PetscCall(PetscViewerASCIIPrintf(viewer, "InflModel: mlp, activation %s, %" PRId64 " parameters, dims ", act_names[m->act], m->nparams));
  for (PetscInt i = 0; i <= m->L; i++) PetscCall(PetscViewerASCIIPrintf(viewer, i ? ",%d" : "%d", (int)m->dims[i]));
  PetscCall(PetscViewerASCIIPrintf(viewer, ", sha256 %.16s..., %s precision\n", hash, m->prec == INFL_PREC_DOUBLE ? "double" : "single"));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelDestroy(InflModel *m)
{
  PetscFunctionBegin;
  if (!*m) PetscFunctionReturn(0);
  PetscCall(model_destroy_arrays(*m));
  PetscCall(PetscFree(*m));
  PetscFunctionReturn(0);
}

/* Per-layer weight and bias pointers in the working precision. */
static PetscErrorCode weights_f64(InflModel m, double **W, double **b)
{
  PetscFunctionBegin;
  if (!m->params64) PetscCall(PetscMalloc1(m->nparams, &m->params64));
  if (m->params64_stale) {
    for (int64_t i = 0; i < m->nparams; i++) m->params64[i] = m->params[i];
    m->params64_stale = PETSC_FALSE;
  }
  for (PetscInt l = 0; l < m->L; l++) {
    W[l] = m->params64 + (m->layers[l].W - m->params);
    b[l] = m->params64 + (m->layers[l].b - m->params);
  }
  PetscFunctionReturn(0);
}

/* Forward into h (inputs with trailing 1) and s; logits are s[L-1]. */
static PetscErrorCode model_forward(InflModel m, PetscInt B, const float x[], void *h[], void *s[])
{
  PetscFunctionBegin;
  if (m->prec == INFL_PREC_DOUBLE) {
    double *W[64], *b[64];
    PetscCheck(m->L <= 64, PETSC_COMM_SELF, PETSC_ERR_SUP, "at most 64 layers");
    PetscCall(weights_f64(m, W, b));
    mlp_forward_f64(m->L, m->dims, m->act, W, b, B, x, (double **)h, (double **)s);
  } else {
    float *W[64], *b[64];
    PetscCheck(m->L <= 64, PETSC_COMM_SELF, PETSC_ERR_SUP, "at most 64 layers");
    for (PetscInt l = 0; l < m->L; l++) {
      W[l] = m->layers[l].W;
      b[l] = m->layers[l].b;
    }
    mlp_forward_f32(m->L, m->dims, m->act, W, b, B, x, (float **)h, (float **)s);
  }
  { /* finite weights can still overflow the logits (then the loss, the sampled labels and the factors are garbage) */
    PetscInt C = m->dims[m->L];
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
  PetscInt C = m->dims[m->L];

  PetscFunctionBegin;
  for (PetscInt n = 0; n < B; n++) PetscCheck(y[n] >= 0 && y[n] < C, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "label %" PRId64 " of batch example %d is outside [0, %d) for a model with %d classes; the data set does not match the model", y[n], (int)n, (int)C, (int)C);
  if (m->prec == INFL_PREC_DOUBLE) {
    double *W[64], *b[64];
    PetscCall(weights_f64(m, W, b));
    softmax_xent_f64(B, C, (double *)s[m->L - 1], y, (double *)ds[m->L - 1], loss, correct);
    mlp_backward_f64(m->L, m->dims, m->act, W, B, NULL, (double **)s, (double **)ds);
  } else {
    float *W[64];
    for (PetscInt l = 0; l < m->L; l++) W[l] = m->layers[l].W;
    softmax_xent_f32(B, C, (float *)s[m->L - 1], y, (float *)ds[m->L - 1], loss, correct);
    mlp_backward_f32(m->L, m->dims, m->act, W, B, NULL, (float **)s, (float **)ds);
  }
  if (loss)
    for (PetscInt n = 0; n < B; n++) PetscCheck(isfinite(loss[n]), PETSC_COMM_SELF, PETSC_ERR_FP, "the loss of example %d of a batch of %d is %g (non-finite) with label %" PRId64 "; the model's outputs overflow (the model is broken: check how it was made)", (int)n, (int)B, loss[n], y[n]);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelForward(InflModel m, PetscInt B, const float x[], float logits[])
{
  PetscInt C = m->dims[m->L];

  PetscFunctionBegin;
  PetscCall(ensure_workspace(m, B));
  PetscCall(model_forward(m, B, x, m->h, m->s));
  if (m->prec == INFL_PREC_DOUBLE) for (int64_t i = 0; i < (int64_t)B * C; i++) logits[i] = (float)((double *)m->s[m->L - 1])[i];
  else PetscCall(PetscArraycpy(logits, (float *)m->s[m->L - 1], (size_t)B * C));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelZeroGrad(InflModel m)
{
  PetscFunctionBegin;
  PetscCall(PetscArrayzero(m->grads, m->nparams));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelLossBackward(InflModel m, PetscInt B, const float x[], const int64_t y[], double *loss_sum, PetscInt *correct)
{
  PetscFunctionBegin;
  PetscCall(ensure_workspace(m, B));
  if (correct) *correct = 0;
  PetscCall(model_forward(m, B, x, m->h, m->s));
  PetscCall(model_loss_backward(m, B, y, m->s, m->ds, m->loss, correct));
  if (m->prec == INFL_PREC_DOUBLE) {
    double *dW[64], *db[64];
    if (!m->dW64) PetscCall(PetscMalloc1(m->nparams, &m->dW64));
    PetscCall(PetscArrayzero(m->dW64, m->nparams));
    for (PetscInt l = 0; l < m->L; l++) {
      dW[l] = m->dW64 + (m->layers[l].dW - m->grads);
      db[l] = m->dW64 + (m->layers[l].db - m->grads);
    }
    mlp_param_grad_f64(m->L, m->dims, B, (double **)m->h, (double **)m->ds, dW, db);
    for (int64_t i = 0; i < m->nparams; i++) m->grads[i] += (float)m->dW64[i];
  } else {
    float *dW[64], *db[64];
    for (PetscInt l = 0; l < m->L; l++) {
      dW[l] = m->layers[l].dW;
      db[l] = m->layers[l].db;
    }
    mlp_param_grad_f32(m->L, m->dims, B, (float **)m->h, (float **)m->ds, dW, db);
  }
  if (loss_sum) {
    *loss_sum = 0;
    for (PetscInt n = 0; n < B; n++) *loss_sum += m->loss[n];
  }
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

PetscErrorCode InflModelSampleLabels(InflModel m, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[])
{
  PetscInt C = m->dims[m->L];
  float   *z;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1((size_t)B * C, &z));
  PetscCall(InflModelForward(m, B, x, z));
  for (PetscInt n = 0; n < B; n++) y[n] = sample_label(C, z + (int64_t)n * C, NULL, seed, index[n]);
  PetscCall(PetscFree(z));
  PetscFunctionReturn(0);
}

PetscErrorCode InflCaptureCreate(InflModel m, PetscInt Bmax, InflCapture **cap)
{
  InflCapture *c;
  size_t       es = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);

  PetscFunctionBegin;
  PetscCall(PetscNew(&c));
  c->prec = m->prec;
  c->L    = m->L;
  c->Bmax = Bmax;
  PetscCall(PetscMalloc2(m->L, &c->din, m->L, &c->dout));
  PetscCall(PetscCalloc4(m->L, &c->a32, m->L, &c->ds32, m->L, &c->a64, m->L, &c->ds64));
  for (PetscInt l = 0; l < m->L; l++) {
    void *a, *ds;
    c->din[l]  = m->dims[l];
    c->dout[l] = m->dims[l + 1];
    PetscCall(PetscMalloc((size_t)PetscMax(Bmax, 1) * (c->din[l] + 1) * es, &a));
    PetscCall(PetscMalloc((size_t)PetscMax(Bmax, 1) * c->dout[l] * es, &ds));
    if (m->prec == INFL_PREC_DOUBLE) {
      c->a64[l]  = a;
      c->ds64[l] = ds;
    } else {
      c->a32[l]  = a;
      c->ds32[l] = ds;
    }
  }
  PetscCall(PetscMalloc1(PetscMax(Bmax, 1), &c->loss));
  *cap = c;
  PetscFunctionReturn(0);
}

PetscErrorCode InflCaptureDestroy(InflCapture **cap)
{
  InflCapture *c = *cap;

  PetscFunctionBegin;
  if (!c) PetscFunctionReturn(0);
  for (PetscInt l = 0; l < c->L; l++) {
    PetscCall(PetscFree(c->a32[l]));
    PetscCall(PetscFree(c->ds32[l]));
    PetscCall(PetscFree(c->a64[l]));
    PetscCall(PetscFree(c->ds64[l]));
  }
  PetscCall(PetscFree4(c->a32, c->ds32, c->a64, c->ds64));
  PetscCall(PetscFree2(c->din, c->dout));
  PetscCall(PetscFree(c->loss));
  PetscCall(PetscFree(*cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode model_capture(InflModel m, PetscInt B, const float x[], const int64_t y[], const int64_t sampled_index[], uint64_t seed, int64_t ysampled[], InflCapture *cap)
{
  void *a[64], *ds[64];

  PetscFunctionBegin;
  PetscCheck(B <= cap->Bmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d examples exceeds its capacity %d", (int)B, (int)cap->Bmax);
  PetscCheck(cap->prec == m->prec, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "capture precision differs from the model's; create the capture after InflModelSetPrecision");
  PetscCall(ensure_workspace(m, B));
  for (PetscInt l = 0; l < m->L; l++) {
    a[l]  = m->prec == INFL_PREC_DOUBLE ? (void *)cap->a64[l] : (void *)cap->a32[l];
    ds[l] = m->prec == INFL_PREC_DOUBLE ? (void *)cap->ds64[l] : (void *)cap->ds32[l];
  }
  PetscCall(model_forward(m, B, x, a, m->s));
  if (sampled_index) { /* true Fisher: labels sampled from this forward pass's logits */
    PetscInt C = m->dims[m->L];
    for (PetscInt n = 0; n < B; n++) {
      const void *z = (char *)m->s[m->L - 1] + (size_t)n * C * (m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float));
      ysampled[n] = sample_label(C, m->prec == INFL_PREC_DOUBLE ? NULL : (const float *)z, m->prec == INFL_PREC_DOUBLE ? (const double *)z : NULL, seed, sampled_index[n]);
    }
    y = ysampled;
  }
  PetscCall(model_loss_backward(m, B, y, m->s, ds, cap->loss, NULL));
  cap->B = B;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCapture(InflModel m, PetscInt B, const float x[], const int64_t y[], InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCall(model_capture(m, B, x, y, NULL, 0, NULL, cap));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCaptureSampled(InflModel m, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[], InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCall(model_capture(m, B, x, NULL, index, seed, y, cap));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelPerExampleGradients(InflModel m, PetscInt B, const float x[], const int64_t y[], double g[])
{
  InflCapture  *cap;
  InflPrecision prec = m->prec;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(m, INFL_PREC_DOUBLE));
  PetscCall(InflCaptureCreate(m, B, &cap));
  PetscCall(InflModelCapture(m, B, x, y, cap));
  for (PetscInt n = 0; n < B; n++) {
    double *gn = g + (int64_t)n * m->nparams;
    for (PetscInt l = 0; l < m->L; l++) {
      PetscInt      din = m->dims[l], dout = m->dims[l + 1];
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

PetscErrorCode InflModelGetComm(InflModel m, MPI_Comm *comm)
{
  PetscFunctionBegin;
  *comm = m->comm;
  PetscFunctionReturn(0);
}

void InflCaptureGetDouble(const InflCapture *cap, PetscInt l, double *buf_a, double *buf_ds, const double **a, const double **ds)
{
  int64_t na = (int64_t)cap->B * (cap->din[l] + 1), nd = (int64_t)cap->B * cap->dout[l];
  if (cap->prec == INFL_PREC_DOUBLE) {
    *a  = cap->a64[l];
    *ds = cap->ds64[l];
    return;
  }
  for (int64_t i = 0; i < na; i++) buf_a[i] = cap->a32[l][i];
  for (int64_t i = 0; i < nd; i++) buf_ds[i] = cap->ds32[l][i];
  *a  = buf_a;
  *ds = buf_ds;
}


size_t InflModelCaptureBytes(InflModel m)
{
  size_t es = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float), b = sizeof(double);
  for (PetscInt l = 0; l < m->L; l++) b += es * (size_t)(2 * (m->dims[l] + 1) + 3 * m->dims[l + 1]);
  return b;
}

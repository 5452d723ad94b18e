/* The generic model object: types, options, the slabs and layers every type shares, the capture, and the public
 * wrappers that dispatch to a type's operations (modelimpl.h). */
#include "modelimpl.h"
#include <petscviewer.h>
#include <sys/stat.h>
#include <libgen.h>
#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- types */
#define MAX_TYPES 16
static struct {
  char name[32];
  PetscErrorCode (*create)(InflModel);
} model_types[MAX_TYPES] = {{"mlp", InflModelCreate_MLP}, {"gpt2", InflModelCreate_GPT2}};
static int n_model_types = 2;

PetscErrorCode InflModelRegister(const char name[], PetscErrorCode (*create)(InflModel))
{
  PetscFunctionBegin;
  for (int i = 0; i < n_model_types; i++) {
    PetscBool eq;
    PetscCall(PetscStrcmp(name, model_types[i].name, &eq));
    if (eq) {
      model_types[i].create = create;
      PetscFunctionReturn(0);
    }
  }
  PetscCheck(n_model_types < MAX_TYPES, PETSC_COMM_SELF, PETSC_ERR_SUP, "cannot register model type \"%s\": at most %d types", name, MAX_TYPES);
  PetscCall(PetscStrncpy(model_types[n_model_types].name, name, sizeof(model_types[0].name)));
  model_types[n_model_types++].create = create;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCreate(MPI_Comm comm, InflModel *model)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(model));
  (*model)->comm       = comm;
  (*model)->hash_stale = PETSC_TRUE;
  (*model)->seqlen_max = 1;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelFreeLayers_Private(InflModel m)
{
  PetscFunctionBegin;
  PetscCall(PetscFree(m->layers));
  PetscCall(PetscFree(m->params));
  PetscCall(PetscFree(m->grads));
  m->L       = 0;
  m->nparams = 0;
  m->params_state++;
  m->hash_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelAllocateLayers_Private(InflModel m, PetscInt L, const PetscInt din[], const PetscInt dout[])
{
  int64_t off = 0;

  PetscFunctionBegin;
  PetscCall(InflModelFreeLayers_Private(m));
  m->L = L;
  PetscCall(PetscCalloc1(L, &m->layers));
  for (PetscInt l = 0; l < L; l++) m->nparams += (int64_t)dout[l] * (din[l] + 1);
  PetscCall(PetscCalloc1(m->nparams, &m->params));
  PetscCall(PetscCalloc1(m->nparams, &m->grads));
  for (PetscInt l = 0; l < L; l++) {
    InflLinear *ly = &m->layers[l];
    ly->din        = din[l];
    ly->dout       = dout[l];
    ly->W          = m->params + off;
    ly->dW         = m->grads + off;
    off += (int64_t)ly->dout * ly->din;
    ly->b  = m->params + off;
    ly->db = m->grads + off;
    off += ly->dout;
  }
  PetscFunctionReturn(0);
}

/* Empty the model of its type: the type's data, the layers and slabs. */
static PetscErrorCode model_reset(InflModel m)
{
  PetscFunctionBegin;
  if (m->ops->destroy) PetscCall((*m->ops->destroy)(m));
  m->data = NULL;
  PetscCall(PetscMemzero(m->ops, sizeof(m->ops)));
  PetscCall(InflModelFreeLayers_Private(m));
  m->type[0]    = 0;
  m->nin        = 0;
  m->nout       = 0;
  m->seqlen_max = 1;
  m->sequential = PETSC_FALSE;
  m->vocab_size = 0;
  m->path[0]    = 0;
  m->layer_sel[0] = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetType(InflModel m, const char type[])
{
  PetscBool same;
  char      known[MAX_TYPES * 34] = "";

  PetscFunctionBegin;
  PetscCall(PetscStrcmp(m->type, type, &same));
  if (same) PetscFunctionReturn(0);
  for (int i = 0; i < n_model_types; i++) {
    PetscBool eq;
    PetscCall(PetscStrcmp(type, model_types[i].name, &eq));
    if (!eq) continue;
    PetscCall(model_reset(m));
    PetscCall(PetscStrncpy(m->type, type, sizeof(m->type)));
    PetscCall((*model_types[i].create)(m));
    PetscFunctionReturn(0);
  }
  for (int i = 0; i < n_model_types; i++) {
    size_t len;
    PetscCall(PetscStrlen(known, &len));
    PetscCall(PetscSNPrintf(known + len, sizeof(known) - len, i ? ", %s" : "%s", model_types[i].name));
  }
  SETERRQ(m->comm, PETSC_ERR_ARG_UNKNOWN_TYPE, "unknown model type \"%s\"; this build has: %s", type, known);
}

PetscErrorCode InflModelGetType(InflModel m, const char **type)
{
  PetscFunctionBegin;
  *type = m->type;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetFromOptions(InflModel m)
{
  const char *precs[] = {"single", "double"};
  PetscInt    prec    = (PetscInt)m->prec;

  PetscFunctionBegin;
  PetscOptionsBegin(m->comm, NULL, "Model options", "InflModel");
  PetscCall(PetscOptionsEList("-model_precision", "precision of per-example work (forward, backward, capture, scoring)", "InflModelSetPrecision", precs, 2, precs[prec], &prec, NULL));
  PetscOptionsEnd();
  PetscCall(InflModelSetPrecision(m, (InflPrecision)prec));
  if (m->ops->set_from_options) PetscCall((*m->ops->set_from_options)(m));
  PetscFunctionReturn(0);
}

/* Does the model need a type before this call? */
#define CHECK_TYPED(m, what) PetscCheck((m)->type[0], (m)->comm, PETSC_ERR_ARG_WRONGSTATE, "%s: the model has no type yet; load it (InflModelLoad) or set it up (InflModelSetUpMLP) first", what)
/* Row verbs on a sequence model and sequence verbs on a row model: an error naming the verb to use. */
#define CHECK_ROWS(m, what, instead) PetscCheck(!(m)->sequential, (m)->comm, PETSC_ERR_ARG_WRONG, "%s: model type %s consumes token sequences, not rows of features; use %s", what, (m)->type, instead)
#define CHECK_SEQUENCES(m, what) PetscCheck((m)->sequential, (m)->comm, PETSC_ERR_ARG_WRONG, "%s: model type %s consumes rows of features, not token sequences; use a language model (gpt2)", what, (m)->type)
/* Call a required operation of the model's type (a type under construction may not have it yet). */
#define CALL_OP(m, op, ...) \
  do { \
    PetscCheck((m)->ops->op, (m)->comm, PETSC_ERR_SUP, "model type %s has no operation " #op, (m)->type); \
    PetscCall((*(m)->ops->op)(__VA_ARGS__)); \
  } while (0)

/* ---------------------------------------------------------------- loading: the type from the file */
static int is_directory(const char path[])
{
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* config.json beside a file (in its directory) or inside a directory. */
static PetscErrorCode config_json_of(const char path[], PetscBool dir, char cfg[], size_t n)
{
  char tmp[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  if (dir) PetscCall(PetscSNPrintf(cfg, n, "%s/config.json", path));
  else {
    PetscCall(PetscStrncpy(tmp, path, sizeof(tmp)));
    PetscCall(PetscSNPrintf(cfg, n, "%s/config.json", dirname(tmp)));
  }
  PetscFunctionReturn(0);
}

/* A Hugging Face GPT-2 directory or file: the gpt2 type reads it itself. */
static PetscErrorCode model_load_gpt2(InflModel m, const char path[])
{
  PetscFunctionBegin;
  PetscCall(InflModelSetType(m, "gpt2"));
  CALL_OP(m, load, m, NULL, path);
  PetscCall(PetscStrncpy(m->path, path, sizeof(m->path)));
  m->params_state++;
  m->hash_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelLoad(InflModel m, const char path[])
{
  InflSafetensors st;
  const char     *arch;
  char            cfg[PETSC_MAX_PATH_LEN + 16];
  PetscMPIInt     rank;
  int             where[2] = {0, 0}; /* rank 0: path is a directory; config.json found */

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(m->comm, &rank));
  if (rank == 0) {
    where[0] = is_directory(path);
    PetscCall(config_json_of(path, (PetscBool)where[0], cfg, sizeof(cfg)));
    where[1] = InflFileExists(cfg) ? 1 : 0;
  }
  PetscCallMPI(MPI_Bcast(where, 2, MPI_INT, 0, m->comm));
  PetscCall(config_json_of(path, (PetscBool)where[0], cfg, sizeof(cfg)));
  PetscCheck(!where[0] || where[1], m->comm, PETSC_ERR_FILE_OPEN, "%s is a directory without config.json; a GPT-2 is a directory holding config.json and model.safetensors (as save_pretrained writes them), an MLP a .safetensors file", path);
  if (where[0] && where[1]) { /* a Hugging Face GPT-2 directory */
    PetscCall(model_load_gpt2(m, path));
    PetscFunctionReturn(0);
  }
  PetscCall(InflSafetensorsRead(m->comm, path, &st));
  PetscCall(InflSafetensorsGetMetadata(st, "architecture", &arch));
  if (!arch && where[1]) { /* a Hugging Face GPT-2 file with config.json beside it */
    PetscCall(InflSafetensorsDestroy(&st));
    PetscCall(model_load_gpt2(m, path));
    PetscFunctionReturn(0);
  }
  if (!arch) {
    PetscCall(InflSafetensorsDestroy(&st));
    SETERRQ(m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: no \"architecture\" in the safetensors metadata; an MLP needs __metadata__ {\"architecture\": \"mlp\", \"dims\": \"784,256,256,10\", \"activation\": \"relu\"}", path);
  }
  {
    PetscBool known = PETSC_FALSE;
    for (int i = 0; i < n_model_types && !known; i++) PetscCall(PetscStrcmp(arch, model_types[i].name, &known));
    if (!known) {
      char name[64];
      PetscCall(PetscStrncpy(name, arch, sizeof(name))); /* arch lives in st */
      PetscCall(InflSafetensorsDestroy(&st));
      SETERRQ(m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: unknown architecture \"%s\"; this version reads \"mlp\" (a GPT-2 is read from a directory with config.json, or a safetensors file with config.json beside it)", path, name);
    }
  }
  {
    PetscBool gpt2;
    PetscCall(PetscStrcmp(arch, "gpt2", &gpt2));
    if (gpt2) {
      PetscCall(InflSafetensorsDestroy(&st));
      SETERRQ(m->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: architecture gpt2 in the metadata: a GPT-2 is read with its config.json (a directory holding config.json and model.safetensors, or the file with config.json beside it)", path);
    }
  }
  PetscCall(InflModelSetType(m, arch));
  if (!m->ops->load) PetscCall(InflSafetensorsDestroy(&st)); /* CALL_OP fails */
  CALL_OP(m, load, m, st, path);
  PetscCall(InflSafetensorsDestroy(&st));
  PetscCall(PetscStrncpy(m->path, path, sizeof(m->path)));
  m->params_state++;
  m->hash_stale = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetMetadata(InflModel m, const char key[], const char value[])
{
  PetscInt i = 0;
  size_t   lk, lv;

  PetscFunctionBegin;
  PetscCall(PetscStrlen(key, &lk));
  PetscCall(PetscStrlen(value, &lv));
  PetscCheck(lk > 0 && lk < sizeof(m->meta_key[0]) && lv < sizeof(m->meta_value[0]), PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "model metadata \"%s\" = \"%s\": keys take 1 to %d characters, values fewer than %d", key, value, (int)sizeof(m->meta_key[0]) - 1, (int)sizeof(m->meta_value[0]));
  while (i < m->nmeta && strcmp(m->meta_key[i], key)) i++;
  PetscCheck(i < INFL_MODEL_META_MAX, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "model metadata \"%s\": at most %d extra keys", key, INFL_MODEL_META_MAX);
  PetscCall(PetscStrncpy(m->meta_key[i], key, sizeof(m->meta_key[i])));
  PetscCall(PetscStrncpy(m->meta_value[i], value, sizeof(m->meta_value[i])));
  if (i == m->nmeta) m->nmeta++;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelReadMetadata(MPI_Comm comm, const char path[], const char key[], char value[], size_t len)
{
  char        st[PETSC_MAX_PATH_LEN + 32];
  PetscMPIInt rank;
  int         dir = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) dir = is_directory(path);
  PetscCallMPI(MPI_Bcast(&dir, 1, MPI_INT, 0, comm));
  if (dir) PetscCall(PetscSNPrintf(st, sizeof(st), "%s/model.safetensors", path));
  else PetscCall(PetscStrncpy(st, path, sizeof(st)));
  PetscCall(InflSafetensorsReadMetadata(comm, st, key, value, len));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSave(InflModel m, const char path[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSave");
  CALL_OP(m, save, m, path);
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- shared state */
PetscErrorCode InflModelSetPrecision(InflModel m, InflPrecision prec)
{
  PetscFunctionBegin;
  m->prec = prec;
  m->params_state++; /* a type's copies of the parameters in the working precision are refreshed */
  if (m->ops->set_precision) PetscCall(m->ops->set_precision(m));
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
  if (din) *din = m->nin;
  if (nclasses) *nclasses = m->nout;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetParameters(InflModel m, int64_t *n, float **params, float **grads)
{
  PetscFunctionBegin;
  if (n) *n = m->nparams;
  if (params) {
    *params = m->params;
    m->params_state++; /* the caller may change them */
    m->hash_stale = PETSC_TRUE;
  }
  if (grads) *grads = m->grads;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetHash(InflModel m, const char **hex)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelGetHash");
  if (m->hash_stale) {
    InflHash h;
    PetscCall(InflHashCreate(&h));
    CALL_OP(m, hash_architecture, m, h);
    PetscCall(InflHashUpdate(h, m->params, sizeof(float) * m->nparams));
    PetscCall(InflHashFinal(&h, m->hash));
    m->hash_stale = PETSC_FALSE;
  }
  *hex = m->hash;
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
  if (m->sequential) /* the embeddings and LayerNorms of a language model are outside the captured layers */
    for (int64_t i = 0; i < m->nparams; i++) PetscCheck(isfinite(m->params[i]), PETSC_COMM_SELF, PETSC_ERR_FP, "model %s (type %s) has a non-finite parameter %g at index %" PRId64 " of its parameter slab (the state-dict order of infl/gpt2.h)", m->path, m->type, (double)m->params[i], i);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelView(InflModel m, PetscViewer viewer)
{
  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(m->comm, &viewer));
  if (!m->type[0]) {
    PetscCall(PetscViewerASCIIPrintf(viewer, "InflModel: no type yet\n"));
    PetscFunctionReturn(0);
  }
  CALL_OP(m, view, m, viewer);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelDestroy(InflModel *m)
{
  PetscFunctionBegin;
  if (!*m) PetscFunctionReturn(0);
  PetscCall(model_reset(*m));
  PetscCall(PetscFree(*m));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetComm(InflModel m, MPI_Comm *comm)
{
  PetscFunctionBegin;
  *comm = m->comm;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCheckData(InflModel m, InflData data)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCheckData");
  CALL_OP(m, check_data, m, data);
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- verbs */
PetscErrorCode InflModelForward(InflModel m, PetscInt B, const float x[], float logits[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelForward");
  CHECK_ROWS(m, "InflModelForward", "InflModelSequenceLoss");
  CALL_OP(m, forward, m, B, x, logits);
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
  CHECK_TYPED(m, "InflModelLossBackward");
  CHECK_ROWS(m, "InflModelLossBackward", "InflModelSequenceGradients");
  CALL_OP(m, loss_backward, m, B, x, y, loss_sum, correct);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSampleLabels(InflModel m, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSampleLabels");
  CHECK_ROWS(m, "InflModelSampleLabels", "InflModelSampleTargets");
  CALL_OP(m, sample_labels, m, B, x, index, seed, y);
  PetscFunctionReturn(0);
}

/* The capture's precision and capacity match the model's and the batch. */
static PetscErrorCode capture_check(InflModel m, PetscInt B, const InflCapture *cap)
{
  PetscFunctionBegin;
  PetscCheck(B <= cap->Bmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d examples exceeds its capacity %d", (int)B, (int)cap->Bmax);
  PetscCheck(cap->prec == m->prec, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "capture precision differs from the model's; create the capture after InflModelSetPrecision");
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCapture(InflModel m, PetscInt B, const float x[], const int64_t y[], InflCapture *cap)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCapture");
  CHECK_ROWS(m, "InflModelCapture", "InflModelCaptureSequences");
  PetscCall(capture_check(m, B, cap));
  CALL_OP(m, capture, m, B, x, y, cap);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCaptureSampled(InflModel m, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[], InflCapture *cap)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCaptureSampled");
  CHECK_ROWS(m, "InflModelCaptureSampled", "InflModelCaptureSequencesSampled");
  PetscCall(capture_check(m, B, cap));
  CALL_OP(m, capture_sampled, m, B, x, index, seed, y, cap);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelPerExampleGradients(InflModel m, PetscInt B, const float x[], const int64_t y[], double g[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelPerExampleGradients");
  CHECK_ROWS(m, "InflModelPerExampleGradients", "InflModelSequenceGradients");
  CALL_OP(m, per_example_gradients, m, B, x, y, g);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelJacobianVectorProduct(InflModel m, PetscInt B, const float x[], const double v[], double z[], double Jv[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelJacobianVectorProduct");
  PetscCheck(m->ops->jacobian_vector_product, m->comm, PETSC_ERR_SUP, "model type %s has no Jacobian-vector product; use -ihvp_curvature empirical", m->type);
  PetscCall((*m->ops->jacobian_vector_product)(m, B, x, v, z, Jv));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGaussNewtonProduct(InflModel m, PetscInt B, const float x[], const double v[], double u[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelGaussNewtonProduct");
  PetscCheck(m->ops->gauss_newton_product, m->comm, PETSC_ERR_SUP, "model type %s has no Gauss-Newton product; use -ihvp_curvature empirical", m->type);
  PetscCall((*m->ops->gauss_newton_product)(m, B, x, v, u));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- sequence verbs */
PetscErrorCode InflModelIsSequential(InflModel m, PetscBool *seq)
{
  PetscFunctionBegin;
  *seq = m->sequential;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetSequenceSizes(InflModel m, PetscInt *vocab_size, PetscInt *n_positions)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelGetSequenceSizes");
  CHECK_SEQUENCES(m, "InflModelGetSequenceSizes");
  if (vocab_size) *vocab_size = m->vocab_size;
  if (n_positions) *n_positions = m->seqlen_max;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSequenceLoss(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSequenceLoss");
  CHECK_SEQUENCES(m, "InflModelSequenceLoss");
  CALL_OP(m, sequence_loss, m, B, offsets, tokens, targets, seq_loss, npredicted);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCaptureSequences(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCaptureSequences");
  CHECK_SEQUENCES(m, "InflModelCaptureSequences");
  PetscCall(capture_check(m, B, cap));
  PetscCheck(offsets[B] <= cap->Tmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d rows exceeds its capacity %d", (int)offsets[B], (int)cap->Tmax);
  CALL_OP(m, capture_sequences, m, B, offsets, tokens, targets, cap);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCaptureSequencesSampled(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCaptureSequencesSampled");
  CHECK_SEQUENCES(m, "InflModelCaptureSequencesSampled");
  PetscCall(capture_check(m, B, cap));
  PetscCheck(offsets[B] <= cap->Tmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d rows exceeds its capacity %d", (int)offsets[B], (int)cap->Tmax);
  CALL_OP(m, capture_sequences_sampled, m, B, offsets, tokens, index, seed, targets, cap);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSampleTargets(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSampleTargets");
  CHECK_SEQUENCES(m, "InflModelSampleTargets");
  CALL_OP(m, sample_targets, m, B, offsets, tokens, index, seed, targets);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSequenceLossBackward(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSequenceLossBackward");
  CHECK_SEQUENCES(m, "InflModelSequenceLossBackward");
  CALL_OP(m, sequence_loss_backward, m, B, offsets, tokens, targets, seq_loss, npredicted);
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSequenceGradients(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double g[])
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSequenceGradients");
  CHECK_SEQUENCES(m, "InflModelSequenceGradients");
  CALL_OP(m, sequence_gradients, m, B, offsets, tokens, targets, g);
  PetscFunctionReturn(0);
}

size_t InflModelCaptureBytes(InflModel m)
{
  if (!m->ops->capture_bytes) return 0;
  return (*m->ops->capture_bytes)(m);
}

size_t InflModelParameterBytes(InflModel m)
{
  return (size_t)m->nparams * (2 * sizeof(float) + (m->prec == INFL_PREC_DOUBLE ? sizeof(double) : 0));
}

PetscErrorCode InflModelGetExampleUnit(InflModel m, const char **unit)
{
  PetscFunctionBegin;
  *unit = m->sequential ? "sequences" : "examples";
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetChunk(InflModel m, MPI_Comm comm, const char stage[], PetscBool given, int64_t count, size_t resident, size_t per_example, PetscInt *chunk)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelGetChunk");
  if (m->sequential && !given) {
    /* a token budget, then a byte budget: what INFL_CHUNK_ROWS tokens of the same model with a vocabulary of
     * INFL_CHUNK_VOCAB would take, so that the logits of a larger vocabulary shrink the chunk instead of growing it */
    const int64_t windows = PetscMax(1, INFL_CHUNK_ROWS / m->seqlen_max);
    const size_t  es      = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
    const size_t  excess  = m->vocab_size > INFL_CHUNK_VOCAB ? es * (size_t)m->seqlen_max * (size_t)(m->vocab_size - INFL_CHUNK_VOCAB) : 0;

    *chunk = (PetscInt)PetscMin((int64_t)*chunk, windows);
    if (excess > 0 && per_example > excess) *chunk = (PetscInt)PetscMin((int64_t)*chunk, PetscMax(1, (int64_t)((double)windows * (double)(per_example - excess) / (double)per_example)));
  }
  PetscCall(InflChunkFromMemLimit(comm, stage, count, resident + InflModelParameterBytes(m), per_example, chunk));
  if (m->sequential) PetscCall(PetscPrintf(comm, "%s: chunks of %d sequences (at most %" PRId64 " tokens)\n", stage, (int)*chunk, (int64_t)*chunk * m->seqlen_max));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- capture */
PetscErrorCode InflCaptureAllocate(InflPrecision prec, PetscInt L, const PetscInt din[], const PetscInt dout[], const PetscBool owned[], PetscInt Bmax, PetscInt Tmax, InflCapture **cap)
{
  InflCapture *c;
  size_t       es = prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);

  PetscFunctionBegin;
  PetscCheck(L >= 0 && Bmax >= 0 && Tmax >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d layers, %d sequences and %d rows: none may be negative", (int)L, (int)Bmax, (int)Tmax);
  PetscCall(PetscNew(&c));
  c->prec = prec;
  c->L    = L;
  c->Bmax = Bmax;
  c->Tmax = Tmax;
  PetscCall(PetscMalloc2(L, &c->din, L, &c->dout));
  PetscCall(PetscCalloc4(L, &c->a32, L, &c->ds32, L, &c->a64, L, &c->ds64));
  for (PetscInt l = 0; l < L; l++) {
    void *a, *ds;
    c->din[l]  = din[l];
    c->dout[l] = dout[l];
    if (owned && !owned[l]) continue;
    PetscCall(PetscMalloc((size_t)PetscMax(Tmax, 1) * (din[l] + 1) * es, &a));
    PetscCall(PetscMalloc((size_t)PetscMax(Tmax, 1) * PetscMax(dout[l], 1) * es, &ds));
    if (prec == INFL_PREC_DOUBLE) {
      c->a64[l]  = a;
      c->ds64[l] = ds;
    } else {
      c->a32[l]  = a;
      c->ds32[l] = ds;
    }
  }
  PetscCall(PetscCalloc1(PetscMax(Bmax, 1), &c->loss));
  PetscCall(PetscCalloc1(Bmax + 1, &c->offsets));
  *cap = c;
  PetscFunctionReturn(0);
}

PetscErrorCode InflCaptureCreate(InflModel m, PetscInt Bmax, InflCapture **cap)
{
  PetscInt *din, *dout;
  int64_t   Tmax;

  PetscFunctionBegin;
  CHECK_TYPED(m, "InflCaptureCreate");
  Tmax = (int64_t)Bmax * m->seqlen_max;
  PetscCheck(Tmax <= PETSC_MAX_INT, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "a capture of %d sequences of up to %d rows has %" PRId64 " rows, more than PetscInt holds; use a smaller chunk", (int)Bmax, (int)m->seqlen_max, Tmax);
  PetscCall(PetscMalloc2(m->L, &din, m->L, &dout));
  for (PetscInt l = 0; l < m->L; l++) {
    din[l]  = m->layers[l].din;
    dout[l] = m->layers[l].dout;
  }
  PetscCall(InflCaptureAllocate(m->prec, m->L, din, dout, NULL, Bmax, (PetscInt)Tmax, cap));
  PetscCall(PetscFree2(din, dout));
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
  PetscCall(PetscFree(c->offsets));
  PetscCall(PetscFree(*cap));
  PetscFunctionReturn(0);
}

PetscErrorCode InflCaptureCheckRankOne(const InflCapture *cap, const char stage[])
{
  PetscFunctionBegin;
  PetscCheck(cap->Tmax == cap->Bmax, PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: sequences of more than one token (the model's captures hold up to %d rows for %d sequences): not supported by this stage yet; in this version a language model (gpt2) and token data are read by infl eval and infl train only", stage, (int)cap->Tmax, (int)cap->Bmax);
  PetscCheck(cap->T == cap->B, PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: sequences of more than one token (%d rows for %d sequences): not supported by this stage yet; in this version a language model (gpt2) and token data are read by infl eval and infl train only", stage, (int)cap->T, (int)cap->B);
  PetscFunctionReturn(0);
}

void InflCaptureGetDouble(const InflCapture *cap, PetscInt l, double *buf_a, double *buf_ds, const double **a, const double **ds)
{
  int64_t na = (int64_t)cap->T * (cap->din[l] + 1), nd = (int64_t)cap->T * cap->dout[l];
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

/* ---------------------------------------------------------------- one batch path for every model type */
PetscErrorCode InflModelGetMaxRows(InflModel m, PetscInt *rows)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelGetMaxRows");
  *rows = m->seqlen_max;
  PetscFunctionReturn(0);
}

/* B examples of a row model, x (B, d) and data labels y (B), with global indices index0 + b (idx NULL) or idx[b]. */
static PetscErrorCode capture_rows(InflModel m, PetscInt B, const float x[], const int64_t y[], int64_t index0, const int64_t idx[], InflFisher fisher, uint64_t seed, InflCapture *cap)
{
  int64_t *ix, *ys; /* (B) global indices and sampled labels */

  PetscFunctionBegin;
  if (fisher == INFL_FISHER_EMPIRICAL) {
    PetscCall(InflModelCapture(m, B, x, y, cap));
    PetscFunctionReturn(0);
  }
  PetscCall(PetscMalloc2(PetscMax(B, 1), &ix, PetscMax(B, 1), &ys));
  for (PetscInt b = 0; b < B; b++) ix[b] = idx ? idx[b] : index0 + b;
  PetscCall(InflModelCaptureSampled(m, B, x, ix, seed, ys, cap));
  PetscCall(PetscFree2(ix, ys));
  PetscFunctionReturn(0);
}

/* B sequences of a sequence model (offsets from 0, tokens) with global indices index0 + b (idx NULL) or idx[b]. */
static PetscErrorCode capture_sequences(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], int64_t index0, const int64_t idx[], InflFisher fisher, uint64_t seed, InflCapture *cap)
{
  int64_t *ix;  /* (B) global sequence indices */
  int32_t *tgt; /* (offsets[B]) sampled targets */

  PetscFunctionBegin;
  if (fisher == INFL_FISHER_EMPIRICAL) {
    PetscCall(InflModelCaptureSequences(m, B, offsets, tokens, NULL, cap));
    PetscFunctionReturn(0);
  }
  PetscCall(PetscMalloc2(PetscMax(B, 1), &ix, PetscMax(offsets[B], 1), &tgt));
  for (PetscInt b = 0; b < B; b++) ix[b] = idx ? idx[b] : index0 + b;
  PetscCall(InflModelCaptureSequencesSampled(m, B, offsets, tokens, ix, seed, tgt, cap));
  PetscCall(PetscFree2(ix, tgt));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCaptureShard(InflModel m, InflData data, int64_t lo, int64_t hi, InflFisher fisher, uint64_t seed, InflCapture *cap)
{
  int64_t start, count;

  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCaptureShard");
  PetscCall(InflDataGetShard(data, &start, &count, NULL, NULL));
  PetscCheck(lo >= start && lo <= hi && hi <= start + count, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "examples [%" PRId64 ", %" PRId64 ") are not inside this rank's shard [%" PRId64 ", %" PRId64 ")", lo, hi, start, start + count);
  PetscCheck(hi - lo <= cap->Bmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %" PRId64 " examples exceeds its capacity %d", hi - lo, (int)cap->Bmax);
  if (!m->sequential) {
    const float   *x;
    const int64_t *y;
    int64_t        d;
    PetscCall(InflDataGetSizes(data, NULL, &d, NULL));
    PetscCall(InflDataGetShard(data, NULL, NULL, &x, &y));
    PetscCheck(x, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "model type %s reads rows of features but the data holds token sequences", m->type);
    PetscCall(capture_rows(m, (PetscInt)(hi - lo), x + (lo - start) * d, y + (lo - start), lo, NULL, fisher, seed, cap));
  } else {
    const int32_t *tok;
    const int64_t *off;
    int64_t       *boff; /* (B+1) the batch's offsets from 0 */
    PetscInt       B = (PetscInt)(hi - lo);
    PetscCall(InflDataGetSequenceShard(data, NULL, NULL, &tok, &off));
    PetscCall(PetscMalloc1(B + 1, &boff));
    for (PetscInt b = 0; b <= B; b++) boff[b] = off[lo - start + b] - off[lo - start];
    PetscCall(capture_sequences(m, B, boff, tok + off[lo - start], lo, NULL, fisher, seed, cap));
    PetscCall(PetscFree(boff));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCaptureExamples(InflModel m, InflData data, PetscInt n, const int64_t idx[], InflFisher fisher, uint64_t seed, InflCapture *cap)
{
  int64_t d;

  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelCaptureExamples");
  PetscCheck(n <= cap->Bmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "capture of %d examples exceeds its capacity %d", (int)n, (int)cap->Bmax);
  PetscCall(InflDataGetSizes(data, NULL, &d, NULL));
  if (!m->sequential) {
    float   *x; /* (n, d) */
    int64_t *y; /* (n) */
    PetscCall(PetscMalloc2((size_t)PetscMax(n, 1) * d, &x, PetscMax(n, 1), &y));
    PetscCall(InflDataGetExamples(data, n, idx, x, y));
    PetscCall(capture_rows(m, n, x, y, 0, idx, fisher, seed, cap));
    PetscCall(PetscFree2(x, y));
  } else {
    int32_t *tok; /* (n * seq_len) */
    int64_t *off; /* (n+1) */
    PetscCall(PetscMalloc2((size_t)PetscMax(n, 1) * d, &tok, n + 1, &off));
    PetscCall(InflDataGetSequences(data, n, idx, tok, off));
    PetscCall(capture_sequences(m, n, off, tok, 0, idx, fisher, seed, cap));
    PetscCall(PetscFree2(tok, off));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetLayerSelection(InflModel m, const char sel[])
{
  PetscBool same;

  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelSetLayerSelection");
  if (!sel || !sel[0]) sel = "all";
  PetscCall(PetscStrcmp(sel, m->layer_sel[0] ? m->layer_sel : "all", &same));
  if (same) PetscFunctionReturn(0);
  if (!m->ops->select_layers) {
    PetscCall(PetscStrcmp(sel, "all", &same));
    PetscCheck(same, m->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer selection \"%s\" is not available for model type %s: every linear layer of it is used; give -ekfac_layers all (mlp and attn select the blocks of a transformer such as gpt2)", sel, m->type);
  } else PetscCall((*m->ops->select_layers)(m, sel));
  PetscCall(PetscStrncpy(m->layer_sel, sel, sizeof(m->layer_sel)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetLayerSelection(InflModel m, const char **sel)
{
  PetscFunctionBegin;
  *sel = m->layer_sel[0] ? m->layer_sel : "all";
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelGetLayerName(InflModel m, PetscInt l, char name[], size_t len)
{
  PetscFunctionBegin;
  CHECK_TYPED(m, "InflModelGetLayerName");
  PetscCheck(l >= 0 && l < m->L, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "layer %d is outside [0, %d)", (int)l, (int)m->L);
  if (m->ops->layer_name) PetscCall((*m->ops->layer_name)(m, l, name, len));
  else PetscCall(PetscSNPrintf(name, len, "layers.%d", (int)l));
  PetscFunctionReturn(0);
}

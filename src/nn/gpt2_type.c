/* The gpt2 model type: InflModel's operations (modelimpl.h) wrapping InflGPT2 (src/nn/gpt2.c).
 *
 * The generic object's slabs ARE the InflGPT2's (m->params, m->grads point into it; the type's destroy takes them
 * back before the generic code frees anything), so InflModelGetParameters hands out the whole GPT-2 in the Hugging
 * Face state-dict order.  The exposed linear layers are the 4 captured layers per block (l = 4 i + k: attn.c_attn,
 * attn.c_proj, mlp.c_fc, mlp.c_proj), W viewing the Conv1D weight (din, dout).
 *
 * Captures: InflGPT2 fills an InflCapture of all the network's layers; here a temporary header over the network's
 * layers points at the arrays of the exposed ones (NULL for the others), so nothing is copied. */
#include "modelimpl.h"
#include <infl/gpt2.h>
#include <infl/tokenizer.h>
#include <petscviewer.h>
#include <math.h>
#include <string.h>

typedef struct {
  InflGPT2 g;
  int64_t  params_state; /* m->params_state when g last learnt of a change */
  PetscInt *off;         /* (offcap) PetscInt offsets of the current batch */
  PetscInt  offcap;
  char      sel[8];      /* layer selection: "all", "mlp" or "attn" */
  PetscInt  Lfull;       /* 4 n_layer captured layers of the network */
  PetscInt *lmap;        /* (m->L) index among the Lfull layers of each exposed layer */
  PetscInt *fdin, *fdout; /* (Lfull) sizes of all the network's layers */
  void    **fa, **fds;   /* (Lfull) capture arrays handed to InflGPT2: the exposed layers', NULL for the others */
  /* the configuration of a new model from the options (gpt2_set_from_options), for InflModelSetUpGPT2(m, NULL, seed) */
  InflGPT2Config opt_cfg;        /* vocab_size 0: from -tokenizer files, else 256 (byte-level) */
  PetscBool      opt_read;
  char           opt_tokdir[PETSC_MAX_PATH_LEN]; /* -tokenizer ("" none) */
} GPT2Type;

/* InflModelSetPrecision: the InflGPT2 follows at once (its double copies are freed back in single precision). */
static PetscErrorCode gpt2_set_precision(InflModel m)
{
  GPT2Type *t = (GPT2Type *)m->data;

  PetscFunctionBegin;
  if (t->g) PetscCall(InflGPT2SetPrecision(t->g, m->prec));
  PetscFunctionReturn(0);
}

/* Bring the InflGPT2 up to date with the generic object: precision, parameters changed through the slab. */
static PetscErrorCode gpt2_sync(InflModel m, const int64_t offsets[], PetscInt B)
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscFunctionBegin;
  PetscCheck(t->g, m->comm, PETSC_ERR_ARG_WRONGSTATE, "the gpt2 model has no parameters; load it (InflModelLoad) first");
  PetscCall(InflGPT2SetPrecision(t->g, m->prec)); /* no-op when unchanged */
  if (t->params_state != m->params_state) {
    float *p;
    PetscCall(InflGPT2GetParameters(t->g, NULL, &p, NULL)); /* marks the double copy and hash stale */
    t->params_state = m->params_state;
  }
  if (offsets) {
    PetscCheck(B >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "batch of %d sequences: must not be negative", (int)B);
    PetscCheck(offsets[B] <= PETSC_MAX_INT, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "batch of %" PRId64 " tokens: more than PetscInt holds; use smaller batches", offsets[B]);
    if (B + 1 > t->offcap) {
      PetscCall(PetscFree(t->off));
      t->offcap = B + 1;
      PetscCall(PetscMalloc1(t->offcap, &t->off));
    }
    for (PetscInt b = 0; b <= B; b++) t->off[b] = (PetscInt)offsets[b];
  }
  PetscFunctionReturn(0);
}

/* Is layer k of a block (0 attn.c_attn, 1 attn.c_proj, 2 mlp.c_fc, 3 mlp.c_proj) in selection sel? */
static PetscBool gpt2_selected(const char sel[], PetscInt k)
{
  if (!strcmp(sel, "mlp")) return k >= 2 ? PETSC_TRUE : PETSC_FALSE;
  if (!strcmp(sel, "attn")) return k < 2 ? PETSC_TRUE : PETSC_FALSE;
  return PETSC_TRUE;
}

static PetscErrorCode gpt2_set_layers(InflModel m)
{
  GPT2Type      *t = (GPT2Type *)m->data;
  InflGPT2Config cfg;
  PetscInt       n = 0;

  PetscFunctionBegin;
  PetscCall(InflModelFreeLayers_Private(m));
  PetscCall(PetscFree(t->lmap));
  PetscCall(PetscFree4(t->fdin, t->fdout, t->fa, t->fds));
  PetscCall(InflGPT2GetConfig(t->g, &cfg));
  if (!t->sel[0]) PetscCall(PetscStrncpy(t->sel, "all", sizeof(t->sel)));
  t->Lfull = 4 * cfg.n_layer;
  PetscCall(PetscMalloc4(t->Lfull, &t->fdin, t->Lfull, &t->fdout, t->Lfull, &t->fa, t->Lfull, &t->fds));
  for (PetscInt l = 0; l < t->Lfull; l++) n += gpt2_selected(t->sel, l % 4);
  m->L = n;
  PetscCall(PetscCalloc1(m->L, &m->layers));
  PetscCall(PetscMalloc1(PetscMax(m->L, 1), &t->lmap));
  n = 0;
  for (PetscInt l = 0; l < t->Lfull; l++) {
    InflGPT2Linear lin;
    PetscCall(InflGPT2GetLinear(t->g, l, &lin));
    t->fdin[l]  = lin.din;
    t->fdout[l] = lin.dout;
    if (!gpt2_selected(t->sel, l % 4)) continue;
    t->lmap[n]         = l;
    m->layers[n].din  = lin.din;
    m->layers[n].dout = lin.dout;
    m->layers[n].W    = lin.W;
    m->layers[n].b    = lin.b;
    m->layers[n].dW   = lin.dW;
    m->layers[n].db   = lin.db;
    n++;
  }
  PetscCall(InflGPT2GetParameters(t->g, &m->nparams, &m->params, &m->grads));
  m->nin          = 0;
  m->nout         = cfg.vocab_size;
  m->vocab_size   = cfg.vocab_size;
  m->seqlen_max   = cfg.n_positions;
  m->sequential   = PETSC_TRUE;
  t->params_state = ++m->params_state;
  m->hash_stale   = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* -ekfac_layers: all (the 4 linear layers of every block), mlp (mlp.c_fc, mlp.c_proj), attn (attn.c_attn,
 * attn.c_proj); the tied head is never a captured layer. */
static PetscErrorCode gpt2_select_layers(InflModel m, const char sel[])
{
  GPT2Type *t = (GPT2Type *)m->data;

  PetscFunctionBegin;
  PetscCheck(!strcmp(sel, "all") || !strcmp(sel, "mlp") || !strcmp(sel, "attn"), m->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer selection \"%s\" is not known for model type gpt2; give -ekfac_layers all (the four linear layers of every block), mlp (mlp.c_fc and mlp.c_proj) or attn (attn.c_attn and attn.c_proj)", sel);
  if (!strcmp(sel, t->sel)) PetscFunctionReturn(0);
  PetscCall(PetscStrncpy(t->sel, sel, sizeof(t->sel)));
  if (t->g) {
    int64_t state = m->params_state;
    m->params = m->grads = NULL; /* owned by the InflGPT2 (gpt2_set_layers takes them again) */
    PetscCall(gpt2_set_layers(m));
    m->params_state = state; /* the parameters did not change */
    t->params_state = state;
    m->hash_stale   = PETSC_TRUE;
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_layer_name(InflModel m, PetscInt l, char name[], size_t len)
{
  GPT2Type      *t = (GPT2Type *)m->data;
  InflGPT2Linear lin;

  PetscFunctionBegin;
  PetscCall(InflGPT2GetLinear(t->g, t->lmap[l], &lin));
  PetscCall(PetscStrncpy(name, lin.name, len));
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_load(InflModel m, InflSafetensors st, const char path[])
{
  GPT2Type *t = (GPT2Type *)m->data;

  PetscFunctionBegin;
  PetscAssert(!st, m->comm, PETSC_ERR_PLIB, "gpt2 reads its own files");
  m->params = m->grads = NULL; /* the previous InflGPT2's slabs */
  PetscCall(InflGPT2Destroy(&t->g));
  PetscCall(InflGPT2Create(m->comm, &t->g));
  PetscCall(InflGPT2SetPrecision(t->g, m->prec));
  PetscCall(InflGPT2Load(t->g, path));
  PetscCall(gpt2_set_layers(m));
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_save(InflModel m, const char path[])
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, NULL, 0));
  {
    const char *keys[INFL_MODEL_META_MAX], *vals[INFL_MODEL_META_MAX];
    for (PetscInt i = 0; i < m->nmeta; i++) {
      keys[i] = m->meta_key[i];
      vals[i] = m->meta_value[i];
    }
    PetscCall(InflGPT2Save(t->g, path, m->nmeta, keys, vals));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_view(InflModel m, PetscViewer viewer)
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, NULL, 0));
  PetscCall(InflGPT2View(t->g, viewer));
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_destroy(InflModel m)
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscFunctionBegin;
  m->params = m->grads = NULL; /* owned by the InflGPT2 */
  m->nparams           = 0;
  PetscCall(InflGPT2Destroy(&t->g));
  PetscCall(PetscFree(t->off));
  PetscCall(PetscFree(t->lmap));
  PetscCall(PetscFree4(t->fdin, t->fdout, t->fa, t->fds));
  PetscCall(PetscFree(m->data));
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_hash_architecture(InflModel m, InflHash h)
{
  GPT2Type *t = (GPT2Type *)m->data;

  PetscFunctionBegin;
  PetscCheck(t->g, m->comm, PETSC_ERR_ARG_WRONGSTATE, "the gpt2 model has no parameters; load it (InflModelLoad) first");
  PetscCall(InflGPT2HashArchitecture(t->g, h)); /* so the model hash equals InflGPT2GetHash, which InflModelView prints */
  PetscFunctionReturn(0);
}

/* Sequence data only, windows set up for this model (InflDataSetUpSequences with its vocab_size and n_positions),
 * every token of this rank's shard below vocab_size and every window at most n_positions long. */
static PetscErrorCode gpt2_check_data_local(InflModel m, InflData data)
{
  InflDataContent kind;
  const char     *spec, *name, *opt;
  int64_t         start, count;
  const int32_t  *tok;
  const int64_t  *off;

  PetscFunctionBegin;
  PetscCall(InflDataGetContent(data, &kind));
  PetscCall(InflDataGetSpec(data, &spec));
  PetscCall(InflDataGetName(data, &name));
  opt = name[0] ? name : "data";
  if (!strcmp(name, "data")) name = ""; /* the eval driver's -data: not "data data SPEC" */
  PetscCheck(kind == INFL_DATA_SEQUENCES, PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP, "%s%sdata %s holds rows of features, but the model %s (type gpt2) reads token sequences; give text:FILE or tokens:FILE", name, name[0] ? " " : "", spec, m->path);
  PetscCall(InflDataGetSequenceShard(data, &start, &count, &tok, &off));
  for (int64_t s = 0; s < count; s++) {
    int64_t len = off[s + 1] - off[s];
    PetscCheck(len <= m->seqlen_max, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s%sdata %s: sequence %" PRId64 " has %" PRId64 " tokens, more than the model's n_positions = %d; use windows of at most n_positions tokens (-%s_seq_len 0 cuts windows of n_positions)", name, name[0] ? " " : "", spec, start + s, len, (int)m->seqlen_max, opt);
    for (int64_t p = 0; p < len; p++) {
      int32_t v = tok[off[s] + p];
      PetscCheck(v >= 0 && v < m->vocab_size, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s%sdata %s: sequence %" PRId64 " position %" PRId64 " holds token id %d, outside the model's vocabulary [0, %d); tokenize the data for this model", name, name[0] ? " " : "", spec, start + s, p, (int)v, (int)m->vocab_size);
    }
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_check_data(InflModel m, InflData data)
{
  InflDataContent kind;
  PetscBool       ready;

  PetscFunctionBegin;
  PetscCall(InflDataGetContent(data, &kind));
  PetscCall(InflDataSequencesReady(data, &ready));
  if (kind == INFL_DATA_SEQUENCES && !ready) PetscCall(InflDataSetUpSequences(data, m->vocab_size, m->seqlen_max, m->path)); /* collective */
  InflCallAll(m->comm, gpt2_check_data_local(m, data));
  PetscFunctionReturn(0);
}

/* full: a header over the network's layers (InflGPT2's captures) holding cap's arrays for the exposed layers and NULL
 * for the others; offsets and losses are cap's own. */
static void capture_alias(InflModel m, InflCapture *cap, InflCapture *full)
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscBool dbl = cap->prec == INFL_PREC_DOUBLE ? PETSC_TRUE : PETSC_FALSE;

  for (PetscInt l = 0; l < t->Lfull; l++) t->fa[l] = t->fds[l] = NULL;
  for (PetscInt l = 0; l < cap->L; l++) {
    t->fa[t->lmap[l]]  = dbl ? (void *)cap->a64[l] : (void *)cap->a32[l];
    t->fds[t->lmap[l]] = dbl ? (void *)cap->ds64[l] : (void *)cap->ds32[l];
  }
  *full         = *cap;
  full->L       = t->Lfull;
  full->din     = t->fdin;
  full->dout    = t->fdout;
  full->a32     = dbl ? NULL : (float **)t->fa;
  full->ds32    = dbl ? NULL : (float **)t->fds;
  full->a64     = dbl ? (double **)t->fa : NULL;
  full->ds64    = dbl ? (double **)t->fds : NULL;
}

static PetscErrorCode gpt2_capture_sequences(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap)
{
  GPT2Type   *t = (GPT2Type *)m->data;
  InflCapture full;

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  capture_alias(m, cap, &full);
  PetscCall(InflGPT2Capture(t->g, B, t->off, tokens, targets, &full));
  cap->B = full.B;
  cap->T = full.T;
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_capture_sequences_sampled(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap)
{
  GPT2Type   *t = (GPT2Type *)m->data;
  InflCapture full;

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  capture_alias(m, cap, &full);
  PetscCall(InflGPT2CaptureSampled(t->g, B, t->off, tokens, index, seed, targets, &full));
  cap->B = full.B;
  cap->T = full.T;
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_sample_targets(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[])
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  PetscCall(InflGPT2SampleTargets(t->g, B, t->off, tokens, index, seed, targets));
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_sequence_loss(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted)
{
  GPT2Type *t = (GPT2Type *)m->data;
  double   *tl; /* (T) per-row losses */
  int64_t   T;

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  T = offsets[B];
  PetscCall(PetscMalloc1(PetscMax(T, 1), &tl));
  PetscCall(InflGPT2Forward(t->g, B, t->off, tokens, targets, NULL, NULL, tl));
  if (npredicted) *npredicted = 0;
  for (PetscInt b = 0; b < B; b++) {
    double s = 0;
    for (int64_t r = offsets[b]; r < offsets[b + 1]; r++) {
      PetscBool pred = targets ? (PetscBool)(targets[r] >= 0) : (PetscBool)(r + 1 < offsets[b + 1]);
      s += tl[r];
      if (npredicted && pred) (*npredicted)++;
    }
    if (seq_loss) seq_loss[b] = s;
  }
  PetscCall(PetscFree(tl));
  PetscFunctionReturn(0);
}

/* Each sequence alone through LossBackward in double; the float gradient slab is restored afterwards. */
static PetscErrorCode gpt2_sequence_gradients(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double g[])
{
  GPT2Type     *t = (GPT2Type *)m->data;
  float        *saved; /* (nparams) the gradient slab on entry */
  const double *g64;
  PetscInt      off1[2];

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  PetscCall(PetscMalloc1(m->nparams, &saved));
  PetscCall(PetscArraycpy(saved, m->grads, m->nparams));
  PetscCall(InflGPT2SetPrecision(t->g, INFL_PREC_DOUBLE));
  for (PetscInt b = 0; b < B; b++) {
    off1[0] = 0;
    off1[1] = (PetscInt)(offsets[b + 1] - offsets[b]);
    PetscCall(InflGPT2LossBackward(t->g, 1, off1, tokens + offsets[b], targets ? targets + offsets[b] : NULL, NULL));
    PetscCall(InflGPT2GetBatchGradientDouble(t->g, &g64));
    PetscCall(PetscArraycpy(g + (size_t)b * m->nparams, g64, m->nparams));
  }
  PetscCall(InflGPT2SetPrecision(t->g, m->prec));
  PetscCall(PetscArraycpy(m->grads, saved, m->nparams));
  PetscCall(PetscFree(saved));
  PetscFunctionReturn(0);
}

/* A capture of one sequence of n_positions rows plus the model's workspace for it (infl/gpt2.h): logits (T, V),
 * about 16 T C values per block and the attention probabilities n_head T^2 per block. */
static size_t gpt2_capture_bytes(InflModel m)
{
  GPT2Type      *t  = (GPT2Type *)m->data;
  size_t         es = m->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
  InflGPT2Config c;
  size_t         per_row = 0, T = (size_t)m->seqlen_max;

  if (!t->g || InflGPT2GetConfig(t->g, &c)) return 0;
  /* per row (token): a and Ds of every captured layer, and the workspace of forward and backward (src/nn/gpt2.c,
   * workspace_ensure): n_layer (16 C + 4) activations, 12 C + 2 more and the logits (V); per window the attention
   * probabilities of every block, n_layer n_head T^2; positions, targets and losses (16 bytes per row) */
  for (PetscInt l = 0; l < m->L; l++) per_row += (size_t)m->layers[l].din + 1 + (size_t)m->layers[l].dout;
  per_row += (size_t)c.vocab_size + (size_t)c.n_layer * (16 * (size_t)c.n_embd + 4) + 12 * (size_t)c.n_embd + 2;
  return es * (T * per_row + (size_t)c.n_layer * c.n_head * T * T) + 16 * T;
}

/* Forward, loss and backward of a batch: the gradient of the summed loss is added to the gradient slab (the
 * InflGPT2's, which the generic object shares). */
static PetscErrorCode gpt2_sequence_loss_backward(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted)
{
  GPT2Type *t = (GPT2Type *)m->data;

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  PetscCall(InflGPT2LossBackward(t->g, B, t->off, tokens, targets, seq_loss));
  if (npredicted) {
    *npredicted = 0;
    for (PetscInt b = 0; b < B; b++)
      for (int64_t r = offsets[b]; r < offsets[b + 1]; r++) *npredicted += targets ? (targets[r] >= 0) : (r + 1 < offsets[b + 1]);
  }
  PetscFunctionReturn(0);
}

/* The tensors of two dimensions (nanoGPT's rule for weight decay): wte, wpe and the four Conv1D weights of each
 * block, in slab order. */
static PetscErrorCode gpt2_matrix_ranges(InflModel m, PetscInt *n, InflParamRange **ranges)
{
  GPT2Type      *t = (GPT2Type *)m->data;
  InflGPT2Config c;
  float         *p0;

  PetscFunctionBegin;
  PetscCheck(t->g, m->comm, PETSC_ERR_ARG_WRONGSTATE, "the gpt2 model has no parameters; load or set it up first");
  PetscCall(InflGPT2GetConfig(t->g, &c));
  PetscCall(InflGPT2GetParameters(t->g, NULL, &p0, NULL));
  *n = 2 + 4 * c.n_layer;
  PetscCall(PetscMalloc1(*n, ranges));
  for (PetscInt k = 0; k < *n; k++) {
    static const char *blk[4] = {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"};
    char               name[64];
    float             *p;
    int64_t            numel;
    if (k < 2) PetscCall(PetscStrncpy(name, k == 0 ? "wte.weight" : "wpe.weight", sizeof(name)));
    else PetscCall(PetscSNPrintf(name, sizeof(name), "h.%d.%s", (int)((k - 2) / 4), blk[(k - 2) % 4]));
    PetscCall(InflGPT2GetTensor(t->g, name, &p, NULL, &numel, NULL, NULL));
    (*ranges)[k] = (InflParamRange){p - p0, numel};
  }
  PetscFunctionReturn(0);
}

static const char *const gpt2_act_names[] = {"gelu_new", "gelu", "relu"};

/* The configuration of a new model (InflModelSetUpGPT2 with cfg NULL) from -gpt2_* options, checked here so that
 * an impossible one is refused before any data are read. */
static PetscErrorCode gpt2_set_from_options(InflModel m)
{
  GPT2Type       *t = (GPT2Type *)m->data;
  InflGPT2Config *c = &t->opt_cfg;
  PetscInt        act;
  MPI_Comm        comm = m->comm;

  PetscFunctionBegin;
  if (!t->opt_read) *c = (InflGPT2Config){.n_embd = 128, .n_layer = 4, .n_head = 4, .vocab_size = 0, .n_positions = 128, .layer_norm_epsilon = 1e-5, .activation = INFL_GPT2_GELU_NEW};
  act = (PetscInt)c->activation;
  PetscOptionsBegin(comm, NULL, "GPT-2 options (a new model, as infl train makes it from token data)", "InflModelSetUpGPT2");
  PetscCall(PetscOptionsInt("-gpt2_n_layer", "transformer blocks", "InflModelSetUpGPT2", c->n_layer, &c->n_layer, NULL));
  PetscCall(PetscOptionsInt("-gpt2_n_embd", "embedding width C (a multiple of -gpt2_n_head)", "InflModelSetUpGPT2", c->n_embd, &c->n_embd, NULL));
  PetscCall(PetscOptionsInt("-gpt2_n_head", "attention heads per block", "InflModelSetUpGPT2", c->n_head, &c->n_head, NULL));
  PetscCall(PetscOptionsInt("-gpt2_n_positions", "positions: the longest window (>= 2)", "InflModelSetUpGPT2", c->n_positions, &c->n_positions, NULL));
  PetscCall(PetscOptionsInt("-gpt2_vocab_size", "vocabulary size (0: that of the -tokenizer files, else 256 for byte-level text)", "InflModelSetUpGPT2", c->vocab_size, &c->vocab_size, NULL));
  PetscCall(PetscOptionsEList("-gpt2_activation", "activation of the MLP blocks (gelu_new: GPT-2's tanh approximation)", "InflModelSetUpGPT2", gpt2_act_names, 3, gpt2_act_names[act], &act, NULL));
  PetscCall(PetscOptionsReal("-gpt2_layer_norm_epsilon", "LayerNorm epsilon", "InflModelSetUpGPT2", c->layer_norm_epsilon, &c->layer_norm_epsilon, NULL));
  PetscOptionsEnd();
  c->activation = (InflGPT2Activation)act;
  PetscCall(InflOptionsCheckLength(comm, "-tokenizer", sizeof(t->opt_tokdir), "give a shorter path (a symbolic link or a relative path)"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-tokenizer", t->opt_tokdir, sizeof(t->opt_tokdir), NULL)); /* listed with the data options */
  PetscCheck(c->n_layer >= 1 && c->n_layer <= 1024, comm, PETSC_ERR_ARG_OUTOFRANGE, "-gpt2_n_layer %d must lie in [1, 1024] (the number of transformer blocks)", (int)c->n_layer);
  PetscCheck(c->n_head >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-gpt2_n_head %d must be >= 1", (int)c->n_head);
  PetscCheck(c->n_embd >= 1 && c->n_embd <= 65536, comm, PETSC_ERR_ARG_OUTOFRANGE, "-gpt2_n_embd %d must lie in [1, 65536]", (int)c->n_embd);
  PetscCheck(c->n_embd % c->n_head == 0, comm, PETSC_ERR_ARG_INCOMP, "-gpt2_n_embd %d is not a multiple of -gpt2_n_head %d: the heads split the embedding evenly; give a width that is (e.g. -gpt2_n_embd %d)", (int)c->n_embd, (int)c->n_head, (int)(((c->n_embd + c->n_head - 1) / c->n_head) * c->n_head));
  PetscCheck(c->n_positions >= 2 && c->n_positions <= 65536, comm, PETSC_ERR_ARG_OUTOFRANGE, "-gpt2_n_positions %d must lie in [2, 65536]: a window of one token predicts nothing", (int)c->n_positions);
  PetscCheck(c->vocab_size >= 0 && c->vocab_size <= (1 << 24), comm, PETSC_ERR_ARG_OUTOFRANGE, "-gpt2_vocab_size %d must lie in [1, 2^24] (0: from the -tokenizer files, else 256 for byte-level text)", (int)c->vocab_size);
  PetscCheck(c->layer_norm_epsilon > 0 && isfinite(c->layer_norm_epsilon), comm, PETSC_ERR_ARG_OUTOFRANGE, "-gpt2_layer_norm_epsilon %s must be a positive number (default 1e-5)", INFL_DSTR(c->layer_norm_epsilon));
  t->opt_read = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelSetUpGPT2(InflModel m, const InflGPT2Config *cfg, uint64_t seed)
{
  PetscBool      isgpt2;
  GPT2Type      *t;
  InflGPT2Config c;
  float         *p0;
  int64_t        n;

  PetscFunctionBegin;
  if (!m->type[0]) PetscCall(InflModelSetType(m, "gpt2"));
  PetscCall(PetscStrcmp(m->type, "gpt2", &isgpt2));
  PetscCheck(isgpt2, m->comm, PETSC_ERR_ARG_WRONGSTATE, "InflModelSetUpGPT2 on a model of type %s; create a new model (or InflModelSetType(model, \"gpt2\"))", m->type);
  t = (GPT2Type *)m->data;
  if (cfg) c = *cfg;
  else {
    PetscCheck(t->opt_read, m->comm, PETSC_ERR_ORDER, "InflModelSetUpGPT2 without a configuration takes it from the -gpt2_* options: call InflModelSetFromOptions on the gpt2 model first");
    c = t->opt_cfg;
    if (c.vocab_size == 0 && t->opt_tokdir[0]) { /* the vocabulary of the tokenizer files */
      InflTokenizer tok;
      PetscCall(InflTokenizerCreate(m->comm, &tok));
      PetscCall(InflTokenizerLoad(tok, t->opt_tokdir)); /* collective; errors name the directory */
      PetscCall(InflTokenizerGetVocabSize(tok, &c.vocab_size));
      PetscCall(InflTokenizerDestroy(&tok));
    } else if (c.vocab_size == 0) c.vocab_size = 256; /* byte-level */
  }
  m->params = m->grads = NULL; /* the previous InflGPT2's slabs */
  PetscCall(InflGPT2Destroy(&t->g));
  PetscCall(InflGPT2Create(m->comm, &t->g));
  PetscCall(InflGPT2SetPrecision(t->g, m->prec));
  PetscCall(InflGPT2SetUp(t->g, &c)); /* checks the configuration again (sizes, n_embd % n_head) */
  PetscCall(InflGPT2GetParameters(t->g, &n, &p0, NULL));
  { /* GPT-2 / nanoGPT: N(0, 0.02) for matrices, 0.02 / sqrt(2 n_layer) for the residual projections, zero biases,
       LayerNorm gains 1; the normal draw of slab entry i is InflNormal(seed, i, INFL_STREAM_INIT) */
    const double std0 = 0.02, stdp = 0.02 / sqrt(2.0 * (double)c.n_layer);
    for (PetscInt k = 0; k < 4 + 12 * c.n_layer; k++) {
      static const char *blk[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
      char               name[64];
      float             *p;
      int64_t            numel, base;
      double             std = 0, one = 0;
      if (k == 0 || k == 1) {
        PetscCall(PetscStrncpy(name, k == 0 ? "wte.weight" : "wpe.weight", sizeof(name)));
        std = std0;
      } else if (k >= 2 + 12 * c.n_layer) {
        PetscCall(PetscStrncpy(name, k == 2 + 12 * c.n_layer ? "ln_f.weight" : "ln_f.bias", sizeof(name)));
        one = k == 2 + 12 * c.n_layer ? 1 : 0;
      } else {
        PetscInt j = (k - 2) % 12;
        PetscCall(PetscSNPrintf(name, sizeof(name), "h.%d.%s", (int)((k - 2) / 12), blk[j]));
        if (j == 0 || j == 6) one = 1;
        else if (j == 2 || j == 8) std = std0;
        else if (j == 4 || j == 10) std = stdp;
      }
      PetscCall(InflGPT2GetTensor(t->g, name, &p, NULL, &numel, NULL, NULL));
      base = p - p0;
      for (int64_t i = 0; i < numel; i++) p[i] = std > 0 ? (float)(std * InflNormal(seed, (uint64_t)(base + i), INFL_STREAM_INIT)) : (float)one;
    }
  }
  PetscCall(gpt2_set_layers(m));
  m->path[0] = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelCreate_GPT2(InflModel m)
{
  GPT2Type *t;

  PetscFunctionBegin;
  PetscCall(PetscNew(&t));
  m->data                           = t;
  m->sequential                     = PETSC_TRUE;
  m->ops->load                      = gpt2_load;
  m->ops->save                      = gpt2_save;
  m->ops->view                      = gpt2_view;
  m->ops->destroy                   = gpt2_destroy;
  m->ops->check_data                = gpt2_check_data;
  m->ops->hash_architecture         = gpt2_hash_architecture;
  m->ops->capture_bytes             = gpt2_capture_bytes;
  m->ops->sequence_loss             = gpt2_sequence_loss;
  m->ops->capture_sequences         = gpt2_capture_sequences;
  m->ops->capture_sequences_sampled = gpt2_capture_sequences_sampled;
  m->ops->sample_targets            = gpt2_sample_targets;
  m->ops->sequence_gradients        = gpt2_sequence_gradients;
  m->ops->select_layers             = gpt2_select_layers;
  m->ops->layer_name                = gpt2_layer_name;
  m->ops->sequence_loss_backward    = gpt2_sequence_loss_backward;
  m->ops->matrix_ranges             = gpt2_matrix_ranges;
  m->ops->set_from_options          = gpt2_set_from_options;
  m->ops->set_precision             = gpt2_set_precision;
  PetscFunctionReturn(0);
}

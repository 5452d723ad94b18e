/* The gpt2 model type: InflModel's operations (modelimpl.h) wrapping InflGPT2 (src/nn/gpt2.c).
 *
 * The generic object's slabs ARE the InflGPT2's (m->params, m->grads point into it; the type's destroy takes them
 * back before the generic code frees anything), so InflModelGetParameters hands out the whole GPT-2 in the Hugging
 * Face state-dict order.  The exposed linear layers are the 4 captured layers per block (l = 4 i + k: attn.c_attn,
 * attn.c_proj, mlp.c_fc, mlp.c_proj), W viewing the Conv1D weight (din, dout).
 *
 * Captures: InflGPT2 fills its own InflSeqCapture; here a temporary InflSeqCapture header aliases the arrays of
 * model.h's InflCapture (same shapes: a[l] (T, din+1), ds[l] (T, dout), loss (B)), so nothing is copied but the
 * offsets (PetscInt inside InflGPT2, int64 in InflCapture).  InflSeqCapture stays the public type of infl/gpt2.h
 * for code (and test_gpt2) that uses InflGPT2 directly. */
#include "modelimpl.h"
#include <infl/gpt2.h>
#include <petscviewer.h>
#include <string.h>

typedef struct {
  InflGPT2 g;
  int64_t  params_state; /* m->params_state when g last learnt of a change */
  PetscInt *off;         /* (offcap) PetscInt offsets of the current batch */
  PetscInt  offcap;
  PetscInt *soff;        /* (Bmax+1) the InflSeqCapture's offsets */
  PetscInt  soffcap;
  char      sel[8];      /* layer selection: "all", "mlp" or "attn" */
  PetscInt  Lfull;       /* 4 n_layer captured layers of the network */
  PetscInt *lmap;        /* (m->L) index among the Lfull layers of each exposed layer */
  PetscInt *fdin, *fdout; /* (Lfull) sizes of all the network's layers */
  void    **fa, **fds;   /* (Lfull) capture arrays handed to InflGPT2: the exposed layers', NULL for the others */
} GPT2Type;

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
  PetscCall(InflGPT2Save(t->g, path));
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
  PetscCall(PetscFree(t->soff));
  PetscCall(PetscFree(t->lmap));
  PetscCall(PetscFree4(t->fdin, t->fdout, t->fa, t->fds));
  PetscCall(PetscFree(m->data));
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_hash_architecture(InflModel m, InflHash h)
{
  GPT2Type      *t = (GPT2Type *)m->data;
  InflGPT2Config c;
  char           buf[256];
  const char    *acts[] = {"gelu_new", "gelu", "relu"};

  PetscFunctionBegin;
  PetscCheck(t->g, m->comm, PETSC_ERR_ARG_WRONGSTATE, "the gpt2 model has no parameters; load it (InflModelLoad) first");
  PetscCall(InflGPT2GetConfig(t->g, &c));
  PetscCall(PetscSNPrintf(buf, sizeof(buf), "gpt2|%s|%d,%d,%d,%d,%d|%.17g", acts[c.activation], (int)c.n_embd, (int)c.n_layer, (int)c.n_head, (int)c.vocab_size, (int)c.n_positions, c.layer_norm_epsilon));
  PetscCall(InflHashUpdate(h, buf, strlen(buf)));
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

/* An InflSeqCapture header over the arrays of cap. */
static PetscErrorCode seqcap_alias(InflModel m, InflCapture *cap, InflSeqCapture *sc)
{
  GPT2Type *t = (GPT2Type *)m->data;
  PetscFunctionBegin;
  if (cap->Bmax + 1 > t->soffcap) {
    PetscCall(PetscFree(t->soff));
    t->soffcap = cap->Bmax + 1;
    PetscCall(PetscMalloc1(t->soffcap, &t->soff));
  }
  /* the network's layers, with the arrays of the exposed ones and NULL for the others (not captured) */
  for (PetscInt l = 0; l < t->Lfull; l++) t->fa[l] = t->fds[l] = NULL;
  for (PetscInt l = 0; l < cap->L; l++) {
    t->fa[t->lmap[l]]  = cap->prec == INFL_PREC_DOUBLE ? (void *)cap->a64[l] : (void *)cap->a32[l];
    t->fds[t->lmap[l]] = cap->prec == INFL_PREC_DOUBLE ? (void *)cap->ds64[l] : (void *)cap->ds32[l];
  }
  sc->prec    = cap->prec;
  sc->L       = t->Lfull;
  sc->Bmax    = cap->Bmax;
  sc->Nmax    = cap->Tmax;
  sc->din     = t->fdin;
  sc->dout    = t->fdout;
  sc->offsets = t->soff;
  sc->a32     = cap->prec == INFL_PREC_DOUBLE ? NULL : (float **)t->fa;
  sc->ds32    = cap->prec == INFL_PREC_DOUBLE ? NULL : (float **)t->fds;
  sc->a64     = cap->prec == INFL_PREC_DOUBLE ? (double **)t->fa : NULL;
  sc->ds64    = cap->prec == INFL_PREC_DOUBLE ? (double **)t->fds : NULL;
  sc->loss    = cap->loss;
  PetscFunctionReturn(0);
}

static void seqcap_done(const InflSeqCapture *sc, InflCapture *cap)
{
  cap->B = sc->B;
  cap->T = sc->N;
  for (PetscInt b = 0; b <= sc->B; b++) cap->offsets[b] = sc->offsets[b];
}

static PetscErrorCode gpt2_capture_sequences(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap)
{
  GPT2Type      *t = (GPT2Type *)m->data;
  InflSeqCapture sc;

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  PetscCall(seqcap_alias(m, cap, &sc));
  PetscCall(InflGPT2Capture(t->g, B, t->off, tokens, targets, &sc));
  seqcap_done(&sc, cap);
  PetscFunctionReturn(0);
}

static PetscErrorCode gpt2_capture_sequences_sampled(InflModel m, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap)
{
  GPT2Type      *t = (GPT2Type *)m->data;
  InflSeqCapture sc;

  PetscFunctionBegin;
  PetscCall(gpt2_sync(m, offsets, B));
  PetscCall(seqcap_alias(m, cap, &sc));
  PetscCall(InflGPT2CaptureSampled(t->g, B, t->off, tokens, index, seed, targets, &sc));
  seqcap_done(&sc, cap);
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
  for (PetscInt l = 0; l < m->L; l++) per_row += (size_t)m->layers[l].din + 1 + (size_t)m->layers[l].dout;
  per_row += (size_t)c.vocab_size + 16 * (size_t)c.n_embd * (size_t)c.n_layer;
  return es * (T * per_row + (size_t)c.n_layer * c.n_head * T * T);
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
  PetscFunctionReturn(0);
}

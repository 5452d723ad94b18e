/* infl/gpt2.h -- the GPT-2 language model (Radford et al. 2019) in C: load / save, forward, loss + backward, and the
 * per-layer capture of the EK-FAC seam, on BLAS, in single or double precision.
 *
 * Architecture: Hugging Face transformers' GPT2LMHeadModel.  For tokens x_t at positions p_t of a sequence,
 *   h   = wte[x_t] + wpe[p_t]
 *   per block i:  h += attn.c_proj(CausalSelfAttention(attn.c_attn(ln_1(h))))
 *                 h += mlp.c_proj(act(mlp.c_fc(ln_2(h))))
 *   logits = ln_f(h) wte^T                                   (tied head)
 * Conv1D layers (c_attn, c_proj, c_fc) store their weight as (in, out): y = x W + b.  Attention: n_head heads of
 * head_dim = n_embd / n_head, scores scaled by 1/sqrt(head_dim), causal.  LayerNorm with layer_norm_epsilon
 * (biased variance).  act: gelu_new = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2's), gelu (exact,
 * 0.5 x (1 + erf(x / sqrt 2))) or relu.
 *
 * Batches: B sequences of possibly different lengths, concatenated: tokens (N) with offsets (B+1), offsets[0] = 0,
 * sequence b is rows [offsets[b], offsets[b+1]) at positions 0, 1, ...; 1 <= length <= n_positions.  Every
 * per-token array (logits, losses, captures) is ordered the same way (sequence, position).
 *
 * Workspace (grown on demand, kept between calls): the logits (N, V), per block about 16 N C values and the attention
 * probabilities, n_head T_b^2 per sequence, in the working precision.
 *
 * Loss: next-token cross-entropy.  The logits at row t predict targets[t]; a negative target means no prediction
 * at that row.  targets == NULL means the data's next tokens: targets[t] = tokens[t+1] inside a sequence and -1 at
 * its last position (T-1 predictions for T tokens).  The loss of a sequence is the SUM over its rows; the loss of a
 * batch the sum over its sequences.  dLoss/dlogits = softmax - onehot is computed stably in double from the logits:
 * the target entry is -(sum of the other probabilities), never p - 1, and the loss is log1p(sum_{j != y} exp(z_j -
 * z_y)) when the target is the arg max, so confidently predicted tokens keep their gradient in float32 (as the MLP,
 * infl/model.h).
 *
 * Capture (the EK-FAC seam, Grosse et al. 2023): the 4 linear layers of each block, layer index l = 4 i + k with
 * k = 0 attn.c_attn (din C, dout 3C), 1 attn.c_proj (C, C), 2 mlp.c_fc (C, 4C), 3 mlp.c_proj (4C, C):
 *   a_t  (din+1)  the layer input at row t with a trailing 1,
 *   Ds_t (dout)   the gradient of the loss of t's sequence w.r.t. the layer output at row t,
 * so that the layer's gradient of one sequence is sum over its rows of Ds_t a_t^T (dout, din+1) = [W^T | b] -- the
 * TRANSPOSE of the stored Conv1D weight (in, out) plus the bias column.  wte, wpe and the LayerNorms are not
 * captured (their gradients come from InflGPT2LossBackward).
 *
 * Parameters: one float32 slab in the order of the Hugging Face state dict: wte (V, C), wpe (n_positions, C), per
 * block ln_1.weight, ln_1.bias (C), attn.c_attn.weight (C, 3C), bias (3C), attn.c_proj.weight (C, C), bias (C),
 * ln_2.weight, ln_2.bias (C), mlp.c_fc.weight (C, 4C), bias (4C), mlp.c_proj.weight (4C, C), bias (C); then
 * ln_f.weight, ln_f.bias (C).  Gradients in a second slab of the same layout.  Double precision mode computes
 * everything (forward, backward, captures) in double from the float32 parameters; parameter gradients are
 * accumulated in double and added to the float slab.
 *
 * Files: a directory holding config.json and model.safetensors, or a .safetensors path with config.json beside
 * it.  Tensor names with or without the "transformer." prefix; F32, F64, F16 or BF16 (converted to float32);
 * "lm_head.weight", if present, must equal wte (the head is tied); the attn.bias / attn.masked_bias buffers are
 * ignored; any other tensor is an error.  config.json keys: n_embd, n_layer, n_head, vocab_size, n_positions (or
 * n_ctx), optional layer_norm_epsilon (1e-5) and activation_function (gelu_new).
 */
#ifndef INFL_GPT2_H
#define INFL_GPT2_H

#include <infl/model.h>

typedef struct _p_InflGPT2 *InflGPT2;

typedef enum { INFL_GPT2_GELU_NEW = 0, INFL_GPT2_GELU, INFL_GPT2_RELU } InflGPT2Activation;

typedef struct {
  PetscInt           n_embd, n_layer, n_head, vocab_size, n_positions;
  double             layer_norm_epsilon;
  InflGPT2Activation activation;
} InflGPT2Config;

/* Captures of the InflGPT2 object are model.h's InflCapture over all 4 n_layer linear layers of the network (l = 4 i + k
 * below): a[l] (T, din[l]+1) with column din[l] equal to 1, ds[l] (T, dout[l]) for the T rows (tokens) of B sequences,
 * rows of sequence b [offsets[b], offsets[b+1]), loss (B) each sequence's summed loss with the targets used.  A layer
 * whose arrays are NULL is not captured (the gpt2 model type, src/nn/gpt2_type.c, points a header with the network's
 * layers at the arrays of the layers its selection exposes). */

/* A linear layer of the capture (l = 4 i + k as above): W (din, dout) Conv1D layout and b (dout), views into the
 * parameter slab; dW, db into the gradient slab; name e.g. "h.1.mlp.c_fc". */
typedef struct {
  PetscInt din, dout;
  float   *W, *b, *dW, *db;
  char     name[64];
} InflGPT2Linear;

/* Not collective.  An empty model on comm (the communicator of Load and Save); SetUp or Load gives it parameters. */
PetscErrorCode InflGPT2Create(MPI_Comm comm, InflGPT2 *g);
/* Not collective.  Allocate a model of this configuration with every parameter zero (set them through
 * InflGPT2GetParameters).  Errors: non-positive sizes, n_embd % n_head != 0, layer_norm_epsilon <= 0. */
PetscErrorCode InflGPT2SetUp(InflGPT2 g, const InflGPT2Config *cfg);
/* Collective.  Read config.json and the safetensors file (see above; rank 0 reads, all ranks get the model).
 * Errors (on every rank) name the file, the key or tensor, the value found and what was expected. */
PetscErrorCode InflGPT2Load(InflGPT2 g, const char path[]);
/* Collective; rank 0 writes.  `path` ending in .safetensors: that file and config.json beside it; otherwise a
 * directory (created if missing) with model.safetensors and config.json.  Tensor names "transformer.*" as
 * save_pretrained writes them, F32, metadata format=pt and the nmeta pairs mkeys[i] = mvalues[i] (may be 0, NULL). */
PetscErrorCode InflGPT2Save(InflGPT2 g, const char path[], PetscInt nmeta, const char *const mkeys[], const char *const mvalues[]);
/* The configuration of a set-up model (copied out). */
PetscErrorCode InflGPT2GetConfig(InflGPT2 g, InflGPT2Config *cfg);
/* Parameter and gradient slabs (layout above); n parameters. Taking params marks the hash stale. */
PetscErrorCode InflGPT2GetParameters(InflGPT2 g, int64_t *n, float **params, float **grads);
/* Parameter tensor by its Hugging Face name without the prefix ("h.0.ln_1.weight"): view, element count, shape. */
PetscErrorCode InflGPT2GetTensor(InflGPT2 g, const char name[], float **param, float **grad, int64_t *numel, int *ndim, int64_t shape[2]);
/* Linear layer l of the capture, 0 <= l < 4 n_layer (error otherwise, naming l). */
PetscErrorCode InflGPT2GetLinear(InflGPT2 g, PetscInt l, InflGPT2Linear *lin);
/* The architecture's part of the hash: "gpt2|activation|n_embd,n_layer,n_head,vocab_size,n_positions|epsilon" (%.17g). */
PetscErrorCode InflGPT2HashArchitecture(InflGPT2 g, InflHash h);
/* SHA-256 of the architecture text of InflGPT2HashArchitecture and the float32 parameter slab: the model hash
 * (InflModelGetHash) of an InflModel of type gpt2 holding g, the model_sha256 its result files record. */
PetscErrorCode InflGPT2GetHash(InflGPT2 g, const char **hex);
/* Working precision of forward, backward and capture (single by default); captures must be created after it is set. */
PetscErrorCode InflGPT2SetPrecision(InflGPT2 g, InflPrecision prec);
/* One line: sizes, activation, parameter count, hash prefix, precision (viewer NULL: stdout of comm). */
PetscErrorCode InflGPT2View(InflGPT2 g, PetscViewer viewer);
/* Accepts NULL; nulls the handle. */
PetscErrorCode InflGPT2Destroy(InflGPT2 *g);

/* ---------------------------------------------------------------- a new gpt2 model (the InflModel type)
 * Collective when it reads tokenizer files.  The gpt2 type's constructor (as InflModelSetUpMLP for the MLP): a
 * fresh GPT-2 of configuration cfg, or with cfg NULL of the configuration read by InflModelSetFromOptions (the
 * model's type set to gpt2 before) from
 *   -gpt2_n_layer (4), -gpt2_n_embd (128), -gpt2_n_head (4), -gpt2_n_positions (128),
 *   -gpt2_vocab_size (0: the vocabulary of the -tokenizer directory's files if given, else 256 for byte-level text),
 *   -gpt2_activation gelu_new|gelu|relu (gelu_new), -gpt2_layer_norm_epsilon (1e-5);
 * SetFromOptions refuses, naming the option and the value: n_layer outside [1, 1024], n_head < 1, n_embd outside
 * [1, 65536] or not a multiple of n_head, n_positions outside [2, 65536] (a window of one token predicts nothing),
 * vocab_size outside [0, 2^24], epsilon <= 0.  Data whose token ids do not fit vocab_size are refused by the data
 * check (InflModelCheckData), naming the file and position.
 * Initialization as GPT-2 (Radford et al. 2019; Hugging Face's GPT2PreTrainedModel._init_weights, nanoGPT): wte,
 * wpe and the Conv1D weights ~ N(0, 0.02^2), the residual projections attn.c_proj.weight and mlp.c_proj.weight ~
 * N(0, (0.02 / sqrt(2 n_layer))^2), biases 0, LayerNorm weights 1 and biases 0.  Entry i of the parameter slab
 * (state-dict order above) is (float)(std InflNormal(seed, i, INFL_STREAM_INIT)): the same model on every rank and
 * at every rank count.  The model has no path (its data check finds text tokenizers through -tokenizer, else
 * byte-level for vocab_size 256).  Error for a model of another type. */
PetscErrorCode InflModelSetUpGPT2(InflModel model, const InflGPT2Config *cfg, uint64_t seed);

/* Not collective.  Check a batch against the model: offsets increasing from 0 with lengths in [1, n_positions],
 * tokens and non-negative targets in [0, vocab_size).  The error names the sequence, row and value. */
PetscErrorCode InflGPT2CheckBatch(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[]);

/* Not collective.  Forward pass: logits (N, V) as float (rounded in double mode), logits64 (N, V) as double (only in
 * double mode: an error otherwise), and the loss of each row, token_loss (N), 0 where there is no target; any output
 * may be NULL.  targets as above (NULL: next tokens). */
PetscErrorCode InflGPT2Forward(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[], float logits[], double logits64[], double token_loss[]);

/* Zero the gradient slab. */
PetscErrorCode InflGPT2ZeroGrad(InflGPT2 g);
/* Not collective.  Forward, loss and backward: gradients of the SUMMED loss of the batch are ADDED to the gradient
 * slab.  seq_loss (B) per-sequence losses out (may be NULL). */
PetscErrorCode InflGPT2LossBackward(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[]);
/* The gradient (nparams, slab layout) of the last InflGPT2LossBackward batch in double, before it was added to the
 * float slab; error unless that call ran in double precision.  Valid until the next call on g. */
PetscErrorCode InflGPT2GetBatchGradientDouble(InflGPT2 g, const double **grad64);

/* Not collective.  Targets for the true Fisher (the model's own predictions, as Grosse et al. 2023 sample them): at
 * each row t that predicts (every position but the last of its sequence) the first token c with cumsum(p)_c > u,
 * p = softmax of the logits at t (model precision) computed in double, u = InflUniform(seed, index[b] n_positions +
 * position, INFL_STREAM_FISHER_LABEL); -1 at the last position.  index (B) global sequence indices: the targets
 * depend only on (seed, index, position) and the model, not on the batch or the rank.  targets (N) out. */
PetscErrorCode InflGPT2SampleTargets(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[]);

/* Capture of every linear layer of the network for up to Tmax rows and Bmax sequences, in the model's current
 * precision; destroyed with InflCaptureDestroy. */
PetscErrorCode InflGPT2CaptureCreate(InflGPT2 g, PetscInt Bmax, PetscInt Tmax, InflCapture **cap);
/* Not collective.  Forward and backward filling cap (a, Ds of its layers with arrays, B, T, offsets, per-sequence
 * loss) with the given targets (NULL: the data's next tokens; for the true Fisher pass targets sampled from the
 * model).  cap->L must be the network's 4 n_layer layers.  The gradient slab is not touched. */
PetscErrorCode InflGPT2Capture(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap);
/* Not collective.  As InflGPT2Capture with targets sampled as InflGPT2SampleTargets does, from the logits of the same
 * forward pass (one forward pass instead of two).  targets (N) out: the sampled targets. */
PetscErrorCode InflGPT2CaptureSampled(InflGPT2 g, PetscInt B, const PetscInt offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap);

#endif

/* infl/model.h -- models (a typed object with a table of operations) and the per-layer capture.
 *
 * InflModel is a PETSc-style object with a type: "mlp" (src/nn/mlp.c) or "gpt2" (src/nn/gpt2_type.c).  What every type
 * shares lives in the generic object (src/nn/model.c): the communicator, the type name, the working precision,
 * the list of linear layers exposed to capture (InflLinear: din, dout and views W, b, dW, db), the parameter and
 * gradient slabs (one float32 slab each, carved into per-layer views) and the hash.  The rest belongs to the type,
 * behind a table of operations (src/nn/modelimpl.h): load, save, view, destroy, check_data, forward, loss_backward,
 * capture, capture_sampled, sample_labels, per_example_gradients, and the optional jacobian_vector_product and
 * gauss_newton_product (a type without them makes the public wrappers fail with an error that names the type and
 * the option to use instead).  Lifecycle: InflModelCreate, InflModelSetFromOptions (reads -model_precision),
 * then InflModelLoad (the type comes from the file) or InflModelSetType + the type's SetUp (InflModelSetUpMLP),
 * the verbs, InflModelView, InflModelDestroy.
 *
 * The capture (InflCapture) is the seam between a model and curvature / scoring code: for every linear layer l and
 * every row t of a batch (an MLP example is a sequence of one row; a language model's sequence has one row per
 * token), with the batch's sequences b owning rows [offsets[b], offsets[b+1]):
 *   a_l  (din_l + 1)   the layer input with a trailing 1 for the bias,
 *   Ds_l (dout_l)      the gradient of the sequence's summed loss with respect to the layer's output s_l,
 * so that the gradient of sequence b's loss w.r.t. (W_l | b_l) is sum over its rows of Ds_t a_t^T
 * (dout_l, din_l + 1).  Curvature and scoring code use only this interface.  Stages that rely on one rank-one
 * gradient per example (T == B) say so through InflCaptureCheckRankOne.
 *
 * Loss: cross-entropy summed over examples (a per-example loss is never divided by the batch size).  The gradient
 * softmax(z) - onehot(y) is computed stably: the true-class entry is -(sum over j != y of p_j), not p_y - 1, so
 * that the gradient of a confidently classified example keeps its direction in float32.
 */
#ifndef INFL_MODEL_H
#define INFL_MODEL_H

#include <infl/io.h>

typedef struct _p_InflModel *InflModel;

typedef enum { INFL_ACT_RELU = 0, INFL_ACT_TANH, INFL_ACT_GELU, INFL_ACT_IDENTITY } InflActivation;

/* Linear layer l: weight W row-major, bias b (dout).  mlp: W (dout, din) (nn.Linear); gpt2: W (din, dout) (Conv1D,
 * the transpose).  Code outside the type uses only din and dout (and the captures); W is the type's layout. */
typedef struct {
  PetscInt din, dout;
  float   *W, *b;   /* views into the parameter slab */
  float   *dW, *db; /* views into the gradient slab */
} InflLinear;

/* Working precision of per-example computations (forward, backward, capture). */
typedef enum { INFL_PREC_SINGLE = 0, INFL_PREC_DOUBLE } InflPrecision;

/* Captured layer inputs and pseudo-gradients for a batch of B sequences (examples) holding T rows (tokens).
 * In single precision a32/ds32 are set, in double a64/ds64.  a[l] is (T, din_l+1) with column din_l equal to 1;
 * ds[l] is (T, dout_l).  An MLP example is a sequence of one row (T == B, offsets[b] = b). */
typedef struct {
  InflPrecision prec;
  PetscInt      L;
  PetscInt      B, Bmax;   /* sequences (examples) in the batch, capacity */
  PetscInt      T, Tmax;   /* rows (tokens) in the batch, capacity; an MLP example is a sequence of length 1 */
  int64_t      *offsets;   /* (B+1): sequence b owns rows [offsets[b], offsets[b+1]) */
  PetscInt     *din, *dout;               /* (L) */
  float       **a32, **ds32;              /* a[l] (T, din+1) trailing 1, ds[l] (T, dout) */
  double      **a64, **ds64;
  double       *loss;                     /* (B) per-sequence loss (summed over its tokens) with the labels used */
} InflCapture;

/* Not collective.  An empty model of no type on comm (it gets one from InflModelLoad, InflModelSetUpMLP or
 * InflModelSetType). */
PetscErrorCode InflModelCreate(MPI_Comm comm, InflModel *model);
PetscErrorCode InflModelGetComm(InflModel model, MPI_Comm *comm);
/* Types: a name and the function that fills a model's operations and data (model->data, model->ops).
 * "mlp" is registered from the start; InflModelRegister adds (or replaces) a type.  Not collective. */
PetscErrorCode InflModelRegister(const char name[], PetscErrorCode (*create)(InflModel));
/* Not collective.  Give the model a type; a model that already has another type is emptied first (its layers,
 * slabs and type data freed).  Error for an unknown name, listing the registered types ("mlp", "gpt2"). */
PetscErrorCode InflModelSetType(InflModel model, const char type[]);
/* The type name ("" before SetType, SetUp or Load). */
PetscErrorCode InflModelGetType(InflModel model, const char **type);
/* Collective.  Reads the model's options:
 *   -model_precision single|double   precision of per-example work (forward, backward, capture, scoring)
 * and, once the model has a type that has options of its own, the type's: gpt2 reads the configuration of a new model
 * (-gpt2_n_layer, -gpt2_n_embd, ...: infl/gpt2.h, InflModelSetUpGPT2). */
PetscErrorCode InflModelSetFromOptions(InflModel model);
/* The one data-vs-model check (the type's check_data), collective: the data's content must be what the type
 * consumes (rows of features and class labels for the MLP: INFL_DATA_ROWS), the features per example must equal
 * the model's input dimension, and every label of this rank's shard must lie in [0, classes).  The error names
 * the data set (its name and spec), the example, the value and what to do; all ranks fail together.
 * gpt2: the data must hold token sequences (text:, tokens:); not yet set up, they are read now for this model
 * (InflDataSetUpSequences with its vocab_size, n_positions and path: collective); every token of the shard must be
 * below vocab_size and every window at most n_positions long (the error names the sequence and position). */
PetscErrorCode InflModelCheckData(InflModel model, InflData data);
/* The mlp type's constructor: a fresh MLP (sets the type to mlp if the model has none; error for a model of another
 * type): dims (ndims) = input, hidden..., classes.  Weights ~ U(-1/sqrt(din), 1/sqrt(din)) (PyTorch's nn.Linear
 * default), drawn with InflUniform(seed, parameter index, INFL_STREAM_INIT), so every rank gets the same model.
 * Not collective. */
PetscErrorCode InflModelSetUpMLP(InflModel model, PetscInt ndims, const PetscInt dims[], InflActivation act, uint64_t seed);
/* Collective.  Load a model; the type comes from the file: a safetensors file's metadata "architecture" (mlp:
 * metadata dims, activation; tensors layers.{i}.weight and layers.{i}.bias, F32 or F64 (converted)).  A directory
 * holding config.json, or a safetensors file without "architecture" with config.json beside it, is a Hugging Face
 * GPT-2 (type gpt2, infl/gpt2.h: config.json keys and tensor names).  The precision set before (InflModelSetFromOptions
 * or InflModelSetPrecision) is kept.  Errors name the file, tensor, expected and found values. */
PetscErrorCode InflModelLoad(InflModel model, const char path[]);
/* Collective; rank 0 writes.  F32 tensors, metadata architecture, dims, activation. */
PetscErrorCode InflModelSave(InflModel model, const char path[]);
/* Not collective (every rank sets the same).  An extra key/value pair for the __metadata__ of the safetensors file that
 * the next InflModelSave writes (an MLP's file; a GPT-2's model.safetensors), beside the type's own keys; a key set
 * again gets the new value.  Used by infl train -checkpoint_every to record a checkpoint's training state (train_lr,
 * train_epoch, train_step: docs/FORMATS.md).  Errors: more than INFL_MODEL_META_MAX keys, a key of 32 or a value of
 * 96 characters or more. */
#define INFL_MODEL_META_MAX 8
PetscErrorCode InflModelSetMetadata(InflModel model, const char key[], const char value[]);
/* Collective.  value (len): the __metadata__ entry `key` of the model stored at `path` (an MLP's safetensors file; a
 * GPT-2 directory's model.safetensors, or the file itself), "" when absent; only the header is read.  Errors name the
 * file (missing, not safetensors). */
PetscErrorCode InflModelReadMetadata(MPI_Comm comm, const char path[], const char key[], char value[], size_t len);
PetscErrorCode InflModelSetPrecision(InflModel model, InflPrecision prec);
PetscErrorCode InflModelGetPrecision(InflModel model, InflPrecision *prec);
PetscErrorCode InflModelGetLayers(InflModel model, PetscInt *L, InflLinear **layers);
/* Input features of a row-data model (its first layer's din) and the outputs per row (classes). */
PetscErrorCode InflModelGetSizes(InflModel model, PetscInt *din, PetscInt *nclasses);
/* Parameter and gradient slabs: mlp: n = sum over layers of dout*(din+1), layer by layer, W row-major then b; gpt2:
 * the whole model in the Hugging Face state-dict order (infl/gpt2.h). */
PetscErrorCode InflModelGetParameters(InflModel model, int64_t *n, float **params, float **grads);
/* SHA-256 of the parameters and architecture (the file's hash when loaded from a file). */
PetscErrorCode InflModelGetHash(InflModel model, const char **hex);
/* MLP only: the activation between its layers (error naming the type for another type). */
PetscErrorCode InflModelGetActivationName(InflModel model, const char **name);
/* Check every parameter is finite; the error names the layer and tensor (gpt2: also the embeddings and LayerNorms,
 * naming the index in the parameter slab). */
PetscErrorCode InflModelCheckFinite(InflModel model);
PetscErrorCode InflModelView(InflModel model, PetscViewer viewer);
PetscErrorCode InflModelDestroy(InflModel *model);

/* Not collective.  logits (B, C) for inputs x (B, din); float32 in any precision mode. */
PetscErrorCode InflModelForward(InflModel model, PetscInt B, const float x[], float logits[]);
/* Not collective.  Forward, loss and backward for a batch; gradients of the SUMMED loss are ADDED to the gradient
 * slab (zero it first with InflModelZeroGrad).  loss_sum and correct (argmax == label) out, either may be NULL. */
PetscErrorCode InflModelZeroGrad(InflModel model);
PetscErrorCode InflModelLossBackward(InflModel model, PetscInt B, const float x[], const int64_t y[], double *loss_sum, PetscInt *correct);

/* Labels for the pseudo-gradient: the data labels (empirical Fisher) or labels sampled from the model's softmax
 * (true Fisher), keyed by (seed, global example index) with InflUniform(seed, index, INFL_STREAM_FISHER_LABEL):
 * the first class c with cumsum(p)_c > u (p the softmax of the float logits, computed in double). */
typedef enum { INFL_FISHER_TRUE = 0, INFL_FISHER_EMPIRICAL } InflFisher;
PetscErrorCode InflModelSampleLabels(InflModel model, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[]);

/* Not collective.  A capture for up to Bmax sequences in the model's precision and layers; its row capacity Tmax
 * is Bmax times the model's longest sequence (1 for the MLP). */
PetscErrorCode InflCaptureCreate(InflModel model, PetscInt Bmax, InflCapture **cap);
/* Not collective.  The capture of any model type: L layers of widths din[l] -> dout[l] in precision prec, for up to
 * Bmax sequences holding up to Tmax rows (buffers of at least one row, so that an empty capacity is valid).
 * owned (L) or NULL: only the layers with owned[l] get row buffers (the others keep NULL arrays and their widths, as
 * the captures of a layer layout's owners, infl/layout.h).  InflCaptureCreate, the model types' own capture
 * constructors (InflGPT2CaptureCreate), the layout's receive captures and split scoring use it. */
PetscErrorCode InflCaptureAllocate(InflPrecision prec, PetscInt L, const PetscInt din[], const PetscInt dout[], const PetscBool owned[], PetscInt Bmax, PetscInt Tmax, InflCapture **cap);
PetscErrorCode InflCaptureDestroy(InflCapture **cap);
/* Not collective.  For stages that use one rank-one gradient Ds a^T per example (the Lambda pass, self-influence,
 * the score kernels, per-example gradient norms, the Krylov IHVP operator): an error naming `stage` unless the
 * capture holds one row per sequence, by capacity (Tmax == Bmax: the same answer on every rank for one model, so
 * stages call it right after InflCaptureCreate, before their first collective) and by content (T == B). */
PetscErrorCode InflCaptureCheckRankOne(const InflCapture *cap, const char stage[]);
/* Bytes per example of a capture and the model's workspace for it (for chunk sizes from -mem_limit): for a sequence
 * model a window of n_positions rows, each with a and Ds of every captured layer and the forward/backward activations
 * of the model, plus the attention probabilities of the window. */
size_t InflModelCaptureBytes(InflModel model);
/* Bytes the model holds whatever a stage's chunk (for -mem_limit): its float32 parameters and gradients, and in double
 * precision (InflModelSetPrecision) the double copy of the parameters that its double kernels read. */
size_t InflModelParameterBytes(InflModel model);
/* What an example of the model's data is called in progress lines and messages: "sequences" for a sequence model,
 * else "examples". */
PetscErrorCode InflModelGetExampleUnit(InflModel model, const char **unit);
/* Rows (tokens) in the default chunk of a stage on sequence data (docs/FORMATS.md, "Chunks and memory"). */
#define INFL_CHUNK_ROWS 8192
/* The vocabulary whose logits the default chunk's bytes allow for: a model with a larger vocabulary gets the bytes
 * that INFL_CHUNK_ROWS tokens of the same model with INFL_CHUNK_VOCAB tokens would take (fewer windows). */
#define INFL_CHUNK_VOCAB 256
/* Collective.  The chunk of a stage (`stage` names it in messages, e.g. "infl fit") over this rank's `count` examples
 * of the model's data: on entry *chunk is the value of the stage's option (-ekfac_chunk, -score_chunk, -self_chunk,
 * -project_chunk), given by the user if `given`, else its default.  The options count examples: sequences (windows)
 * for a sequence model.  A default (not given) for a sequence model is capped at max(1, INFL_CHUNK_ROWS /
 * n_positions) windows, so that a chunk holds at most about INFL_CHUNK_ROWS tokens whatever the window length, and
 * for a vocabulary V above INFL_CHUNK_VOCAB further at floor(windows (per_example - e T (V - INFL_CHUNK_VOCAB)) /
 * per_example) (at least 1; e the bytes of a value in the working precision, T = n_positions): the bytes of those
 * windows had the vocabulary been INFL_CHUNK_VOCAB, so that the logits do not make the default peak grow with the
 * vocabulary.  A row model's default is unchanged.  Then -mem_limit lowers it (InflChunkFromMemLimit with `resident` bytes held whatever
 * the chunk, to which the model's own InflModelParameterBytes are added, and `per_example` bytes per example, for a sequence model per window: its rows of every captured layer's
 * a and Ds, the model's activations (InflModelCaptureBytes) and the stage's scratch per row).  For a sequence model
 * the result is printed (windows and tokens per chunk at most). */
PetscErrorCode InflModelGetChunk(InflModel model, MPI_Comm comm, const char stage[], PetscBool given, int64_t count, size_t resident, size_t per_example, PetscInt *chunk);
/* Layer l's captured a (T, din+1) and Ds (T, dout) as double: the capture's own arrays in double precision,
 * else converted into buf_a / buf_ds (at least T*(din+1) and T*dout doubles). */
void InflCaptureGetDouble(const InflCapture *cap, PetscInt l, double buf_a[], double buf_ds[], const double **a, const double **ds);
/* Not collective.  Forward and backward for B <= Bmax examples with labels y; fills cap (a, Ds, loss, offsets;
 * for the MLP T = B) in the model's precision.  The parameter gradient slab is not touched. */
PetscErrorCode InflModelCapture(InflModel model, PetscInt B, const float x[], const int64_t y[], InflCapture *cap);

/* Not collective.  As InflModelCapture with true-Fisher labels sampled (as InflModelSampleLabels does) from the
 * logits of the same forward pass: one forward pass instead of two.  index (B) global example indices; y (B) out:
 * the sampled labels.  In double precision the labels are drawn from the double logits. */
PetscErrorCode InflModelCaptureSampled(InflModel model, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[], InflCapture *cap);

/* Per-example flat gradient g (B, n) in double (for tests and exact reference solves): g_b = concat over layers of
 * vec(Ds_l a_l^T) in the parameter slab layout. */
PetscErrorCode InflModelPerExampleGradients(InflModel model, PetscInt B, const float x[], const int64_t y[], double g[]);

/* ---------------------------------------------------------------- token-sequence models (type gpt2, src/nn/gpt2_type.c)
 * A model of token sequences (InflModelIsSequential: PETSC_TRUE) consumes batches of B sequences of token ids
 * instead of rows of features: sequence b is tokens[offsets[b], offsets[b+1]) at positions 0, 1, ..., with
 * offsets (B+1) int64 starting at 0 and lengths in [1, n_positions].  targets (offsets[B]) int32: the token each row
 * predicts, negative for none; targets == NULL means the next token inside the sequence (-1 at its last row).  The
 * row verbs above (InflModelForward, InflModelLossBackward, InflModelCapture, InflModelCaptureSampled,
 * InflModelSampleLabels, InflModelPerExampleGradients) fail on such a model with an error naming the sequence verb
 * to use, and the sequence verbs fail on a row model.  The captured layers of gpt2 are attn.c_attn, attn.c_proj,
 * mlp.c_fc, mlp.c_proj of each block (l = 4 i + k, infl/gpt2.h); their InflLinear W view is the Conv1D weight
 * (din, dout) row-major -- the TRANSPOSE of the MLP's (dout, din) -- and the gradient sum_t Ds_t a_t^T of a
 * captured layer is (dout, din+1) = [W^T | b].  The parameter slab of gpt2 (InflModelGetParameters) is the whole
 * model in the Hugging Face state-dict order (infl/gpt2.h), not the captured layers alone. */
/* PETSC_TRUE for a model of token sequences (gpt2), PETSC_FALSE for a model of rows (mlp). */
PetscErrorCode InflModelIsSequential(InflModel model, PetscBool *seq);
/* Vocabulary size and positions (longest sequence) of a sequence model; error naming the type for a row model. */
PetscErrorCode InflModelGetSequenceSizes(InflModel model, PetscInt *vocab_size, PetscInt *n_positions);
/* Not collective.  Forward only: the summed loss of each sequence, seq_loss (B), and the number of rows that predict
 * a token (non-negative target), npredicted; either may be NULL.  Cross-entropy as in infl/gpt2.h, in the model's
 * precision. */
PetscErrorCode InflModelSequenceLoss(InflModel model, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted);
/* Not collective.  Forward and backward filling cap for B <= cap->Bmax sequences: T = offsets[B] rows, the offsets,
 * a and Ds of every captured layer and each sequence's loss; the parameter gradient slab is not touched. */
PetscErrorCode InflModelCaptureSequences(InflModel model, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap);
/* Not collective.  True-Fisher targets (the model's own samples) at every row but the last of each sequence: as
 * InflGPT2SampleTargets, keyed by (seed, index[b] n_positions + position); index (B) global sequence indices,
 * targets (offsets[B]) out (-1 at the last row of each sequence). */
PetscErrorCode InflModelSampleTargets(InflModel model, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[]);
/* Not collective.  InflModelCaptureSequences with targets sampled as InflModelSampleTargets does, from the logits of
 * the same forward pass; targets (offsets[B]) out. */
PetscErrorCode InflModelCaptureSequencesSampled(InflModel model, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap);
/* Not collective.  Forward, loss and backward for training: the gradient of the batch's SUMMED loss (over every
 * predicted row of every sequence) is ADDED to the gradient slab (zero it first with InflModelZeroGrad), in the
 * model's precision (double mode accumulates the batch in double and adds it rounded to float).  seq_loss (B) the
 * summed loss of each sequence and npredicted the rows with a target (non-negative, or the next token when targets
 * is NULL); either may be NULL.  A caller that wants the mean over predicted tokens (as PyTorch's
 * cross_entropy(reduction="mean") over a batch) divides by the count itself: InflModelTrain divides by the global
 * count of the step's batch. */
PetscErrorCode InflModelSequenceLossBackward(InflModel model, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted);
/* Not collective.  Per-sequence flat gradient g (B, n) in double of each sequence's summed loss, in the layout of the
 * parameter slab (n as InflModelGetParameters; for tests and exact reference solves).  Computed in double whatever
 * the model's precision; the gradient slab is left as it was. */
PetscErrorCode InflModelSequenceGradients(InflModel model, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double g[]);

/* ---------------------------------------------------------------- one batch path for every model type
 * The stages (fit, score, self, the Krylov IHVP) fill captures through these two functions only, so that curvature
 * and scoring code never asks which architecture it works on: a row model (mlp) captures rows of features with one
 * row per example, a sequence model (gpt2) token sequences with one row per token (InflCapture above). */
/* Rows per example at most: 1 for a row model, n_positions for a sequence model (a capture of Bmax examples holds
 * up to Bmax times this many rows). */
PetscErrorCode InflModelGetMaxRows(InflModel model, PetscInt *rows);
/* Not collective.  Forward and backward of the examples with global indices [lo, hi) of this rank's shard of `data`
 * (InflModelCheckData first; hi - lo <= cap->Bmax) into cap, in the model's precision, with the labels of `fisher`:
 *   INFL_FISHER_EMPIRICAL  the data's: class labels of rows; the next tokens of a sequence (no target at its last row)
 *   INFL_FISHER_TRUE       sampled from the model's softmax with the counter-based generator, keyed by
 *                          (seed, global example index) for rows (InflModelCaptureSampled) and by (seed, global
 *                          sequence index x n_positions + position) for sequences (InflModelCaptureSequencesSampled),
 *                          so the labels do not depend on the rank count or the chunking.
 * Errors: a range outside this rank's shard, more examples than the capture holds (naming both). */
PetscErrorCode InflModelCaptureShard(InflModel model, InflData data, int64_t lo, int64_t hi, InflFisher fisher, uint64_t seed, InflCapture *cap);
/* Not collective.  As InflModelCaptureShard for any n <= cap->Bmax examples by global index idx (n) (queries, the
 * training examples of the top-k lists): rows are fetched with InflDataGetExamples, sequences with
 * InflDataGetSequences.  True-Fisher labels are keyed by idx[b]. */
PetscErrorCode InflModelCaptureExamples(InflModel model, InflData data, PetscInt n, const int64_t idx[], InflFisher fisher, uint64_t seed, InflCapture *cap);

/* Not collective (every rank sets the same).  Which linear layers the model exposes to capture, EK-FAC and scoring
 * (InflModelGetLayers, InflCaptureCreate, -ekfac_layers): "all" (default: every linear layer), and for gpt2 "mlp"
 * (mlp.c_fc and mlp.c_proj of every block, as Grosse et al. 2023 did) or "attn" (attn.c_attn and attn.c_proj); the
 * tied head is never one (its input is the vocabulary).  Layer l then means the l-th exposed layer in network
 * order.  Captures must be created after it.  Errors: a selection the type does not know (the MLP accepts only
 * "all"), naming the value and the choices. */
PetscErrorCode InflModelSetLayerSelection(InflModel model, const char sel[]);
PetscErrorCode InflModelGetLayerSelection(InflModel model, const char **sel);
/* Not collective.  The name of exposed layer l: gpt2 "h.{i}.attn.c_attn" (Hugging Face's), mlp "layers.{l}". */
PetscErrorCode InflModelGetLayerName(InflModel model, PetscInt l, char name[], size_t len);

/* ---------------------------------------------------------------- training and evaluation */
/* A range [start, start + count) of the parameter slab. */
typedef struct {
  int64_t start, count;
} InflParamRange;
/* Not collective.  The ranges of the parameter slab that hold matrices (parameter tensors of two or more
 * dimensions: weights of linear maps, embeddings), ascending and disjoint; the rest are vectors (biases, LayerNorm
 * gains and shifts).  Training decays only the matrices under -train_decay_matrices_only (the rule of GPT-2
 * training as nanoGPT does it: parameters of dim >= 2 decay, others not).  Each type supplies its own ranges (the
 * model operation matrix_ranges); MLP: the W of every layer (dout*din entries each), not b.  Error naming the type
 * for a type without the operation.  Free with InflModelRestoreMatrixRanges. */
PetscErrorCode InflModelGetMatrixRanges(InflModel model, PetscInt *n, InflParamRange **ranges);
PetscErrorCode InflModelRestoreMatrixRanges(InflModel model, PetscInt *n, InflParamRange **ranges);

typedef enum { INFL_OPT_ADAM = 0, INFL_OPT_SGD, INFL_OPT_ADAMW } InflOptimizer;
typedef enum { INFL_SCHEDULE_CONSTANT = 0, INFL_SCHEDULE_COSINE } InflSchedule;
typedef struct {
  InflOptimizer optimizer;     /* -train_optimizer adam|sgd|adamw */
  PetscInt      epochs;        /* -train_epochs (10) */
  PetscInt      batch;         /* -train_batch: global batch size (128) */
  double        lr;            /* -train_lr: peak learning rate (1e-3 adam and adamw, 0.05 sgd) */
  double        momentum;      /* -train_momentum (0.9, sgd) */
  double        beta1, beta2;  /* -train_beta1 (0.9), -train_beta2 (0.999; GPT-2 / nanoGPT use 0.95): adam, adamw */
  double        eps;           /* -train_eps (1e-8): added to the root of the bias-corrected second moment */
  double        weight_decay;  /* -train_weight_decay (0.01 adamw as torch.optim.AdamW (nanoGPT: 0.1), 0 sgd; adam: 0) */
  PetscBool     decay_matrices_only; /* -train_decay_matrices_only (true adamw, false sgd) */
  InflSchedule  schedule;      /* -train_schedule constant|cosine (constant) */
  PetscInt      warmup;        /* -train_warmup: steps of linear warm-up (0) */
  double        lr_min;        /* -train_lr_min: end of the cosine decay (0.1 lr) */
  double        clip;          /* -train_clip: largest global gradient norm (0: no clipping) */
  PetscInt      stop_after;    /* -train_stop_after: checkpoint and stop as on a signal after this global step (0 never) */
  uint64_t      seed;          /* -train_seed (0): initialization and shuffling */
  PetscInt       nexclude;     /* examples masked out of training (leave-one-out, infl/eval.h); 0: none */
  const int64_t *exclude;      /* (nexclude) their indices in [0, N); not an option: set in code */
  char          checkpoint[PETSC_MAX_PATH_LEN]; /* output path: checkpoints go to checkpoint.partial ("" none) */
  PetscInt      checkpoint_every; /* -checkpoint_every E: keep the model after every E-th epoch as checkpoint.ckpt-EPOCH
                                     (0: none), for TracIn (infl score -method tracin) */
} InflTrainOptions;

/* Not collective.  The defaults above for optimizer opt->optimizer (read before: set it first). */
PetscErrorCode InflTrainOptionsSetDefaults(InflTrainOptions *opt);
/* Collective on comm (the ranks that will train).  Read the -train_* options (defaults above).  Errors name the option, the value and
 * the accepted range: epochs < 0, batch < 1, lr <= 0, beta outside [0, 1), eps <= 0, weight decay < 0 (or > 0 with
 * adam: decoupled decay is adamw), warmup < 0, lr_min outside [0, lr] or given without the cosine schedule, clip < 0,
 * stop_after < 0, an unknown optimizer or schedule.  InflModelTrain checks the same of options set in code. */
PetscErrorCode InflTrainOptionsFromOptions(MPI_Comm comm, InflTrainOptions *opt);
/* Not collective.  The learning rate of global step t (0-based) of a run of T steps: lr (t + 1) / warmup for
 * t < warmup (linear warm-up from 0, as nanoGPT), then lr (constant) or, cosine, lr_min + (lr - lr_min) (1 +
 * cos(pi (t - warmup) / (T - warmup))) / 2 (Loshchilov & Hutter 2017, SGDR without restarts; nanoGPT's get_lr). */
double InflTrainLearningRate(const InflTrainOptions *opt, int64_t t, int64_t T);
/* Collective.  Data-parallel mini-batch training on the mean cross-entropy: each epoch draws a permutation of
 * [0, N) from (seed, epoch) with InflUniform; step s takes the global batch perm[s*batch, (s+1)*batch) and every rank
 * processes the examples of that batch in its shard; the gradient sums are allreduced and divided by the batch size.
 * The trajectory therefore does not depend on the rank count (beyond the reassociation of the sums).
 * Masked examples (opt->nexclude > 0, rows data): the permutations and the steps are those of the whole set, but the
 * examples opt->exclude are skipped where they fall, their batch's gradient being the mean over its other members
 * (a batch of masked examples only gives a zero gradient); so a leave-one-out model follows the same order of data
 * as the full model and differs only by the removed example.  Error: an index outside [0, N).
 * The global step t counts over the whole run (T = epochs x ceil(N / batch) steps); its learning rate is
 * InflTrainLearningRate(opt, t, T).  Clipping (opt->clip > 0): the gradient g (every parameter) is scaled by
 * min(1, clip / (||g||_2 + 1e-6)), ||g|| computed in double over all parameters, as torch.nn.utils.clip_grad_norm_.
 * Adam: Kingma & Ba (2015), bias-corrected, float32 moments.  AdamW (Loshchilov & Hutter 2019): Adam with
 * decoupled weight decay theta <- theta (1 - lr_t wd) before the Adam step, as torch.optim.AdamW.  SGD: momentum,
 * coupled L2 decay g + wd theta (as torch.optim.SGD).  Decay applies to the InflModelGetMatrixRanges ranges only
 * under opt->decay_matrices_only, else to every parameter.  Errors: warmup longer than the run (T).
 * With opt->checkpoint set, the state (parameters, optimizer moments, global step, position in the epoch, the
 * epoch's sums) is checkpointed at batch boundaries to checkpoint.partial (infl/checkpoint.h) and an existing one of
 * the same run (same options, initial model and data) is resumed; since the trajectory does not depend on the rank
 * count, a resumed run may use another rank count.
 * Logs per epoch (rank 0): mean training loss, training accuracy, the test set's loss and accuracy when `test` is
 * not NULL, the learning rate of the epoch's last step, with clipping the mean and max pre-clip gradient norm of
 * the epoch's steps, and examples/s.
 * Sequence models (gpt2) on sequence data: the examples are the data's windows (InflModelCheckData sets them up for
 * the model; `test` too), the batch counts windows, every rank runs InflModelSequenceLossBackward on the windows of
 * the batch it holds, and the allreduced gradient sum is divided by P, the number of predicted tokens of the global
 * batch (allreduced with the losses): the gradient of the mean next-token loss per predicted token, as PyTorch's
 * cross_entropy(reduction="mean") over the batch's targets gives it (nanoGPT; Hugging Face's GPT2LMHeadModel with
 * labels).  P = 0 (windows of one token) gives a zero gradient.  The same update (clipping, schedule, optimizer,
 * decay of InflModelGetMatrixRanges) and checkpoint follow.  The epoch line gives the training loss per predicted
 * token, the validation loss per token of `test` (nats and bits) and its perplexity (InflModelEvaluateSequences),
 * and tokens/s (all tokens of the windows processed, over the epoch's wall time without the validation).
 * With opt->checkpoint_every E > 0 (and opt->checkpoint set), the model after epochs E, 2E, ... is saved as
 * CHECKPOINT.ckpt-EPOCH (InflModelSave: an MLP's safetensors file; a GPT-2's directory), its safetensors metadata
 * recording train_lr (the learning rate of the epoch's last step, InflTrainLearningRate: the eta_c of TracIn),
 * train_epoch and train_step (global steps done); the model keeps these keys (InflModelSetMetadata), so the final
 * model records its own.  A resumed run rewrites the checkpoints of the epochs it ends (the same bytes: the
 * trajectory is deterministic).  Pruthi et al. 2020 (TracInCP) take checkpoints at epoch ends with their learning
 * rates. */
PetscErrorCode InflModelTrain(InflModel model, InflData train, InflData test, const InflTrainOptions *opt);
/* Collective.  Mean per-example loss and accuracy over the whole data set (each rank its shard). */
PetscErrorCode InflModelEvaluate(InflModel model, InflData data, double *mean_loss, double *accuracy);
/* Collective (src/nn/evaluate_seq.c).  For a sequence model and sequence data (InflModelCheckData first): the total
 * next-token loss over the whole data set divided by the number of predicted tokens (every token of a window but
 * its first), each rank its shard of sequences in batches of up to `batch` sequences, the sums reduced in double.
 * perplexity = exp(mean_loss).  ntokens (may be NULL): predicted tokens in all.  The result does not depend on the
 * rank count beyond the reassociation of the sums. */
PetscErrorCode InflModelEvaluateSequences(InflModel model, InflData data, PetscInt batch, double *mean_loss, double *perplexity, int64_t *ntokens);

/* ---------------------------------------------------------------- forward-mode products (MLP: src/nn/mlp_rop.c) */
/* Optional operations: a type without them fails with "model type T has no ... product; use
 * -ihvp_curvature empirical".
 * Not collective.  Forward-mode (R-op, Pearlmutter 1994) pass in double: for B examples x (B, din) and a direction
 * v (n) in the parameter slab layout, the logits z (B, C) and the Jacobian-vector products Jv (B, C) = dz/dtheta v.
 * Either output may be NULL. */
PetscErrorCode InflModelJacobianVectorProduct(InflModel model, PetscInt B, const float x[], const double v[], double z[], double Jv[]);
/* Not collective.  Gauss-Newton product in double (Schraudolph 2002): u (n) += sum_b J_b^T H_b J_b v, with H_b the
 * Hessian of the softmax cross-entropy w.r.t. the logits, diag(p) - p p^T (independent of the label).  Exact: one
 * R-op forward and one backward of the linearized network; v and u in the parameter slab layout. */
PetscErrorCode InflModelGaussNewtonProduct(InflModel model, PetscInt B, const float x[], const double v[], double u[]);

#endif

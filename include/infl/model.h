/* infl/model.h -- models and the per-layer capture interface.
 *
 * A model is a stack of linear layers with element-wise activations in between (the MLP; language models add
 * their own layers later).  Parameters live in one float32 slab, gradients in another, carved into per-layer
 * views.  The capture interface gives, for every linear layer l and every example (later every token):
 *   a_l  (din_l + 1)   the layer input with a trailing 1 for the bias,
 *   Ds_l (dout_l)      the gradient of the example's loss with respect to the layer's pre-activation output s_l,
 * so that the per-example gradient of (W_l | b_l) is Ds_l a_l^T (dout_l, din_l + 1).  Curvature and scoring code use
 * only this interface.
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

/* Linear layer l: weight W (dout, din) row-major, bias b (dout). */
typedef struct {
  PetscInt din, dout;
  float   *W, *b;   /* views into the parameter slab */
  float   *dW, *db; /* views into the gradient slab */
} InflLinear;

/* Working precision of per-example computations (forward, backward, capture). */
typedef enum { INFL_PREC_SINGLE = 0, INFL_PREC_DOUBLE } InflPrecision;

/* Captured layer inputs and pseudo-gradients for a batch of B examples.  In single precision a32/ds32 are set,
 * in double a64/ds64.  a[l] is (B, din_l+1) with column din_l equal to 1; ds[l] is (B, dout_l). */
typedef struct {
  InflPrecision prec;
  PetscInt      L, B, Bmax;
  PetscInt     *din, *dout; /* (L) */
  float       **a32, **ds32;
  double      **a64, **ds64;
  double       *loss;  /* (B) per-example loss with the labels used */
} InflCapture;

PetscErrorCode InflModelCreate(MPI_Comm comm, InflModel *model);
PetscErrorCode InflModelGetComm(InflModel model, MPI_Comm *comm);
/* A fresh MLP: dims (ndims) = input, hidden..., classes.  Weights ~ U(-1/sqrt(din), 1/sqrt(din)) (PyTorch's
 * nn.Linear default), drawn with InflUniform(seed, parameter index, INFL_STREAM_INIT), so every rank gets the
 * same model.  Not collective. */
PetscErrorCode InflModelSetUpMLP(InflModel model, PetscInt ndims, const PetscInt dims[], InflActivation act, uint64_t seed);
/* Collective.  Load from safetensors (metadata architecture=mlp, dims, activation; tensors layers.{i}.weight
 * and layers.{i}.bias, F32 or F64 (converted)).  Errors name the file, tensor, expected and found values. */
PetscErrorCode InflModelLoad(InflModel model, const char path[]);
/* Collective; rank 0 writes.  F32 tensors, metadata architecture, dims, activation. */
PetscErrorCode InflModelSave(InflModel model, const char path[]);
PetscErrorCode InflModelSetPrecision(InflModel model, InflPrecision prec);
PetscErrorCode InflModelGetPrecision(InflModel model, InflPrecision *prec);
PetscErrorCode InflModelGetLayers(InflModel model, PetscInt *L, InflLinear **layers);
PetscErrorCode InflModelGetSizes(InflModel model, PetscInt *din, PetscInt *nclasses);
/* Parameter and gradient slabs: n = sum over layers of dout*(din+1), layer by layer, W row-major then b. */
PetscErrorCode InflModelGetParameters(InflModel model, int64_t *n, float **params, float **grads);
/* SHA-256 of the parameters and architecture (the file's hash when loaded from a file). */
PetscErrorCode InflModelGetHash(InflModel model, const char **hex);
PetscErrorCode InflModelGetActivationName(InflModel model, const char **name);
/* Check every parameter is finite; the error names the layer and tensor. */
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

PetscErrorCode InflCaptureCreate(InflModel model, PetscInt Bmax, InflCapture **cap);
PetscErrorCode InflCaptureDestroy(InflCapture **cap);
/* Bytes per example of a capture and the model's workspace for it (for chunk sizes from -mem_limit). */
size_t InflModelCaptureBytes(InflModel model);
/* Layer l's captured a (B, din+1) and Ds (B, dout) as double: the capture's own arrays in double precision,
 * else converted into buf_a / buf_ds (at least B*(din+1) and B*dout doubles). */
void InflCaptureGetDouble(const InflCapture *cap, PetscInt l, double buf_a[], double buf_ds[], const double **a, const double **ds);
/* Not collective.  Forward and backward for B <= Bmax examples with labels y; fills cap (a, Ds, loss) in the
 * model's precision.  The parameter gradient slab is not touched. */
PetscErrorCode InflModelCapture(InflModel model, PetscInt B, const float x[], const int64_t y[], InflCapture *cap);

/* Not collective.  As InflModelCapture with true-Fisher labels sampled (as InflModelSampleLabels does) from the
 * logits of the same forward pass: one forward pass instead of two.  index (B) global example indices; y (B) out:
 * the sampled labels.  In double precision the labels are drawn from the double logits. */
PetscErrorCode InflModelCaptureSampled(InflModel model, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[], InflCapture *cap);

/* Per-example flat gradient g (B, n) in double (for tests and exact reference solves): g_b = concat over layers of
 * vec(Ds_l a_l^T) in the parameter slab layout. */
PetscErrorCode InflModelPerExampleGradients(InflModel model, PetscInt B, const float x[], const int64_t y[], double g[]);

/* ---------------------------------------------------------------- training and evaluation */
typedef enum { INFL_OPT_ADAM = 0, INFL_OPT_SGD } InflOptimizer;
typedef struct {
  InflOptimizer optimizer;    /* -train_optimizer adam|sgd */
  PetscInt      epochs;       /* -train_epochs (10) */
  PetscInt      batch;        /* -train_batch: global batch size (128) */
  double        lr;           /* -train_lr (1e-3 adam, 0.05 sgd) */
  double        momentum;     /* -train_momentum (0.9, sgd) */
  double        weight_decay; /* -train_weight_decay (0) */
  uint64_t      seed;         /* -train_seed (0): initialization and shuffling */
  char          checkpoint[PETSC_MAX_PATH_LEN]; /* output path: checkpoints go to checkpoint.partial ("" none) */
} InflTrainOptions;

/* Read the -train_* options (defaults above). */
PetscErrorCode InflTrainOptionsFromOptions(InflTrainOptions *opt);
/* Collective.  Data-parallel mini-batch training on the mean cross-entropy: each epoch draws a permutation of
 * [0, N) from (seed, epoch) with InflUniform; step s takes the global batch perm[s*batch, (s+1)*batch) and every rank
 * processes the examples of that batch in its shard; the gradient sums are allreduced and divided by the batch size.
 * The trajectory therefore does not depend on the rank count (beyond the reassociation of the sums).
 * Adam: Kingma & Ba (2015), bias-corrected; decoupled weight decay if set (Loshchilov & Hutter 2019).
 * With opt->checkpoint set, the state (parameters, optimizer moments, position in the epoch) is checkpointed at batch
 * boundaries to checkpoint.partial (infl/checkpoint.h) and an existing one of the same run is resumed; since the
 * trajectory does not depend on the rank count, a resumed run may use another rank count.
 * Logs per epoch (rank 0): mean training loss, training accuracy, examples/s, and the test set's loss and accuracy
 * when `test` is not NULL. */
PetscErrorCode InflModelTrain(InflModel model, InflData train, InflData test, const InflTrainOptions *opt);
/* Collective.  Mean per-example loss and accuracy over the whole data set (each rank its shard). */
PetscErrorCode InflModelEvaluate(InflModel model, InflData data, double *mean_loss, double *accuracy);

/* ---------------------------------------------------------------- forward-mode products (src/nn/mlp_rop.c) */
/* Not collective.  Forward-mode (R-op, Pearlmutter 1994) pass in double: for B examples x (B, din) and a direction
 * v (n) in the parameter slab layout, the logits z (B, C) and the Jacobian-vector products Jv (B, C) = dz/dtheta v.
 * Either output may be NULL. */
PetscErrorCode InflModelJacobianVectorProduct(InflModel model, PetscInt B, const float x[], const double v[], double z[], double Jv[]);
/* Not collective.  Gauss-Newton product in double (Schraudolph 2002): u (n) += sum_b J_b^T H_b J_b v, with H_b the
 * Hessian of the softmax cross-entropy w.r.t. the logits, diag(p) - p p^T (independent of the label).  Exact: one
 * R-op forward and one backward of the linearized network; v and u in the parameter slab layout. */
PetscErrorCode InflModelGaussNewtonProduct(InflModel model, PetscInt B, const float x[], const double v[], double u[]);

#endif

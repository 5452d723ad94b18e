/* The generic model object and the table of operations that a model type implements (private to src/nn).
 *
 * A type's create function (registered with InflModelRegister) fills model->ops and model->data; its SetUp or
 * load operation carves the parameter and gradient slabs with InflModelAllocateLayers_Private, which also sets
 * the linear layers exposed to capture.  Everything else a type needs lives behind model->data. */
#ifndef INFL_MODELIMPL_H
#define INFL_MODELIMPL_H

#include <infl/model.h>

typedef struct _InflModelOps *InflModelOps;
struct _InflModelOps {
  /* Load the type's tensors from an opened safetensors file (path for messages).  Collective.  gpt2: st is NULL and
   * the type reads path (a directory or a file with config.json beside it) itself. */
  PetscErrorCode (*load)(InflModel, InflSafetensors st, const char path[]);
  PetscErrorCode (*save)(InflModel, const char path[]);
  PetscErrorCode (*view)(InflModel, PetscViewer);
  PetscErrorCode (*destroy)(InflModel); /* frees model->data and what the type allocated */
  PetscErrorCode (*check_data)(InflModel, InflData);
  /* The architecture part of the model hash (the parameters are added by the generic code). */
  PetscErrorCode (*hash_architecture)(InflModel, InflHash);
  PetscErrorCode (*forward)(InflModel, PetscInt B, const float x[], float logits[]);
  PetscErrorCode (*loss_backward)(InflModel, PetscInt B, const float x[], const int64_t y[], double *loss_sum, PetscInt *correct);
  PetscErrorCode (*capture)(InflModel, PetscInt B, const float x[], const int64_t y[], InflCapture *cap);
  PetscErrorCode (*capture_sampled)(InflModel, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[], InflCapture *cap);
  PetscErrorCode (*sample_labels)(InflModel, PetscInt B, const float x[], const int64_t index[], uint64_t seed, int64_t y[]);
  PetscErrorCode (*per_example_gradients)(InflModel, PetscInt B, const float x[], const int64_t y[], double g[]);
  size_t (*capture_bytes)(InflModel); /* bytes per example of a capture and the type's workspace for it */
  /* sequence models (model->sequential): batches of token sequences (infl/model.h) */
  PetscErrorCode (*sequence_loss)(InflModel, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted);
  PetscErrorCode (*capture_sequences)(InflModel, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], InflCapture *cap);
  PetscErrorCode (*capture_sequences_sampled)(InflModel, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[], InflCapture *cap);
  PetscErrorCode (*sample_targets)(InflModel, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int64_t index[], uint64_t seed, int32_t targets[]);
  PetscErrorCode (*sequence_gradients)(InflModel, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double g[]);
  /* training: gradients of the batch's summed loss ADDED to the gradient slab; per-sequence losses and the number
   * of predicted rows out (either may be NULL) */
  PetscErrorCode (*sequence_loss_backward)(InflModel, PetscInt B, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double seq_loss[], int64_t *npredicted);
  /* optional: called by InflModelSetPrecision after model->prec changed; a type frees here what it holds only for
   * the other precision (the double copies of the parameters once back in single precision) */
  PetscErrorCode (*set_precision)(InflModel);
  /* optional: the type's own options (read by InflModelSetFromOptions once the model has the type) */
  PetscErrorCode (*set_from_options)(InflModel);
  /* optional: NULL where the type has no forward-mode products */
  PetscErrorCode (*jacobian_vector_product)(InflModel, PetscInt B, const float x[], const double v[], double z[], double Jv[]);
  PetscErrorCode (*gauss_newton_product)(InflModel, PetscInt B, const float x[], const double v[], double u[]);
  /* The ranges of the parameter slab holding matrices (InflModelGetMatrixRanges): *n ranges in a PetscMalloc'ed
   * array, ascending and disjoint; NULL where the type does not say (decay of matrices only is then an error). */
  PetscErrorCode (*matrix_ranges)(InflModel, PetscInt *n, InflParamRange **ranges);
  /* The layers exposed to capture (InflModelSetLayerSelection); NULL: only "all". */
  PetscErrorCode (*select_layers)(InflModel, const char sel[]);
  /* Name of exposed layer l (InflModelGetLayerName); NULL: "layers.l". */
  PetscErrorCode (*layer_name)(InflModel, PetscInt l, char name[], size_t len);
};

struct _p_InflModel {
  MPI_Comm      comm;
  char          type[32];     /* "" until InflModelSetType */
  InflPrecision prec;
  PetscInt      nin, nout;    /* input features of a row (0 for token models), outputs per row (classes) */
  PetscInt      seqlen_max;   /* rows per example at most (1 for the MLP, n_positions for gpt2) */
  PetscBool     sequential;   /* consumes token sequences (gpt2), not rows */
  PetscInt      vocab_size;   /* sequence models: token ids in [0, vocab_size) */
  char          path[PETSC_MAX_PATH_LEN]; /* the file or directory it was loaded from ("" otherwise) */
  PetscInt      L;            /* linear layers exposed to capture */
  InflLinear   *layers;       /* (L) views into the slabs */
  int64_t       nparams;
  float        *params, *grads; /* (nparams) slabs */
  int64_t       params_state;   /* increased whenever the parameters may have changed */
  char          hash[65];
  char          layer_sel[8];   /* InflModelSetLayerSelection ("all" by default) */
  PetscBool     hash_stale;
  PetscInt      nmeta;          /* InflModelSetMetadata: extra metadata written by the next save */
  char          meta_key[INFL_MODEL_META_MAX][32], meta_value[INFL_MODEL_META_MAX][96];
  struct _InflModelOps ops[1];
  void         *data;           /* the type's own state */
};

/* Free the slabs and layers, then allocate L layers of sizes din (L), dout (L): slabs of sum dout*(din+1)
 * zeros, carved layer by layer as W (dout, din) row-major then b (dout). */
PetscErrorCode InflModelAllocateLayers_Private(InflModel model, PetscInt L, const PetscInt din[], const PetscInt dout[]);
PetscErrorCode InflModelFreeLayers_Private(InflModel model);

/* The gpt2 type (src/nn/gpt2_type.c): load is called with st NULL and the path of the directory or file. */
PetscErrorCode InflModelCreate_GPT2(InflModel model);

/* The MLP type (src/nn/mlp.c, mlp_rop.c). */
PetscErrorCode InflModelCreate_MLP(InflModel model);
PetscErrorCode InflModelJacobianVectorProduct_MLP(InflModel model, PetscInt B, const float x[], const double v[], double z[], double Jv[]);
PetscErrorCode InflModelGaussNewtonProduct_MLP(InflModel model, PetscInt B, const float x[], const double v[], double u[]);

#endif

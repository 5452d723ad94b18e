/* Data-parallel training and evaluation of a model on a data set. */
#include <infl/model.h>
#include <infl/checkpoint.h>
#include <math.h>
#include <string.h>

static const char *const optimizer_names[] = {"adam", "sgd", "adamw"};
static const char *const schedule_names[]  = {"constant", "cosine"};

/* The checks of the options that hold for every caller (InflTrainOptionsFromOptions and InflModelTrain). */
static PetscErrorCode train_check_options(MPI_Comm comm, const InflTrainOptions *opt)
{
  PetscFunctionBegin;
  PetscCheck(opt->optimizer >= INFL_OPT_ADAM && opt->optimizer <= INFL_OPT_ADAMW, comm, PETSC_ERR_ARG_OUTOFRANGE, "unknown optimizer %d; use adam, sgd or adamw", (int)opt->optimizer);
  PetscCheck(opt->schedule >= INFL_SCHEDULE_CONSTANT && opt->schedule <= INFL_SCHEDULE_COSINE, comm, PETSC_ERR_ARG_OUTOFRANGE, "unknown schedule %d; use constant or cosine", (int)opt->schedule);
  PetscCheck(opt->epochs >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_epochs %d must be >= 0", (int)opt->epochs);
  PetscCheck(opt->batch > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_batch %d must be positive", (int)opt->batch);
  PetscCheck(opt->lr > 0 && isfinite(opt->lr), comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_lr %s must be a positive number", INFL_DSTR(opt->lr));
  PetscCheck(opt->beta1 >= 0 && opt->beta1 < 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_beta1 %s must lie in [0, 1) (default 0.9)", INFL_DSTR(opt->beta1));
  PetscCheck(opt->beta2 >= 0 && opt->beta2 < 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_beta2 %s must lie in [0, 1) (default 0.999; GPT-2 uses 0.95)", INFL_DSTR(opt->beta2));
  PetscCheck(opt->eps > 0 && isfinite(opt->eps), comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_eps %s must be a positive number (default 1e-8)", INFL_DSTR(opt->eps));
  PetscCheck(opt->weight_decay >= 0 && isfinite(opt->weight_decay), comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_weight_decay %s must be a number >= 0", INFL_DSTR(opt->weight_decay));
  PetscCheck(opt->weight_decay == 0 || opt->optimizer != INFL_OPT_ADAM, comm, PETSC_ERR_ARG_INCOMP, "-train_weight_decay %s with -train_optimizer adam: decoupled weight decay is -train_optimizer adamw (give that instead)", INFL_DSTR(opt->weight_decay));
  PetscCheck(opt->warmup >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_warmup %d must be a number of steps >= 0", (int)opt->warmup);
  PetscCheck(opt->schedule != INFL_SCHEDULE_COSINE || (opt->lr_min >= 0 && opt->lr_min <= opt->lr), comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_lr_min %s must lie in [0, -train_lr %s]: the cosine decays from -train_lr down to it", INFL_DSTR(opt->lr_min), INFL_DSTR(opt->lr));
  PetscCheck(opt->clip >= 0 && isfinite(opt->clip), comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_clip %s must be a gradient norm >= 0 (0: no clipping)", INFL_DSTR(opt->clip));
  PetscCheck(opt->stop_after >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_stop_after %d must be a step >= 0 (0: never)", (int)opt->stop_after);
  PetscCheck(opt->checkpoint_every >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-checkpoint_every %d must be a number of epochs >= 0 (0: no checkpoints)", (int)opt->checkpoint_every);
  PetscFunctionReturn(0);
}

PetscErrorCode InflTrainOptionsSetDefaults(InflTrainOptions *opt)
{
  PetscFunctionBegin;
  opt->epochs              = 10;
  opt->batch               = 128;
  opt->lr                  = opt->optimizer == INFL_OPT_SGD ? 0.05 : 1e-3;
  opt->momentum            = 0.9;
  opt->beta1               = 0.9;
  opt->beta2               = 0.999;
  opt->eps                 = 1e-8;
  opt->weight_decay        = opt->optimizer == INFL_OPT_ADAMW ? 0.01 : 0;
  opt->decay_matrices_only = opt->optimizer == INFL_OPT_ADAMW ? PETSC_TRUE : PETSC_FALSE;
  opt->schedule            = INFL_SCHEDULE_CONSTANT;
  opt->warmup              = 0;
  opt->lr_min              = 0.1 * opt->lr;
  opt->clip                = 0;
  opt->stop_after          = 0;
  opt->seed                = 0;
  opt->nexclude            = 0;
  opt->exclude             = NULL;
  opt->checkpoint[0]       = 0;
  opt->checkpoint_every    = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTrainOptionsFromOptions(MPI_Comm comm, InflTrainOptions *opt)
{
  PetscInt  iopt = 0, isched = 0, seed = 0;
  PetscBool lr_min_set;

  PetscFunctionBegin;
  PetscOptionsBegin(comm, NULL, "Training options", "InflModelTrain");
  PetscCall(PetscOptionsEList("-train_optimizer", "optimizer: adam, sgd (momentum, L2 decay), adamw (decoupled decay)", "InflModelTrain", optimizer_names, 3, optimizer_names[0], &iopt, NULL));
  opt->optimizer = (InflOptimizer)iopt;
  PetscCall(InflTrainOptionsSetDefaults(opt));
  PetscCall(PetscOptionsInt("-train_epochs", "passes over the training set", "InflModelTrain", opt->epochs, &opt->epochs, NULL));
  PetscCall(PetscOptionsInt("-train_batch", "global mini-batch size: examples, or windows of token data (split over ranks)", "InflModelTrain", opt->batch, &opt->batch, NULL));
  PetscCall(PetscOptionsReal("-train_lr", "peak learning rate", "InflModelTrain", opt->lr, &opt->lr, NULL));
  PetscCall(PetscOptionsReal("-train_momentum", "SGD momentum", "InflModelTrain", opt->momentum, &opt->momentum, NULL));
  PetscCall(PetscOptionsReal("-train_beta1", "Adam / AdamW decay of the first moment", "InflModelTrain", opt->beta1, &opt->beta1, NULL));
  PetscCall(PetscOptionsReal("-train_beta2", "Adam / AdamW decay of the second moment (GPT-2 / nanoGPT: 0.95)", "InflModelTrain", opt->beta2, &opt->beta2, NULL));
  PetscCall(PetscOptionsReal("-train_eps", "Adam / AdamW epsilon, added to the root of the second moment", "InflModelTrain", opt->eps, &opt->eps, NULL));
  PetscCall(PetscOptionsReal("-train_weight_decay", "weight decay: decoupled (adamw) or L2 (sgd)", "InflModelTrain", opt->weight_decay, &opt->weight_decay, NULL));
  PetscCall(PetscOptionsBool("-train_decay_matrices_only", "decay only matrices (weights, embeddings), not biases or LayerNorm gains", "InflModelTrain", opt->decay_matrices_only, &opt->decay_matrices_only, NULL));
  PetscCall(PetscOptionsEList("-train_schedule", "learning-rate schedule after the warm-up", "InflTrainLearningRate", schedule_names, 2, schedule_names[0], &isched, NULL));
  opt->schedule = (InflSchedule)isched;
  PetscCall(PetscOptionsInt("-train_warmup", "steps of linear learning-rate warm-up from 0", "InflTrainLearningRate", opt->warmup, &opt->warmup, NULL));
  opt->lr_min = 0.1 * opt->lr;
  PetscCall(PetscOptionsReal("-train_lr_min", "learning rate at the end of the cosine decay (default 0.1 lr)", "InflTrainLearningRate", opt->lr_min, &opt->lr_min, &lr_min_set));
  PetscCall(PetscOptionsReal("-train_clip", "clip the global gradient norm to this value (0: off)", "InflModelTrain", opt->clip, &opt->clip, NULL));
  PetscCall(PetscOptionsInt("-train_stop_after", "checkpoint and stop, as on a signal, after this global step (0: never; for tests of resumption)", "InflModelTrain", opt->stop_after, &opt->stop_after, NULL));
  PetscCall(PetscOptionsInt("-train_seed", "seed of initialization and shuffling", "InflModelTrain", seed, &seed, NULL));
  PetscCall(PetscOptionsInt("-checkpoint_every", "keep the model after every E-th epoch as OUT.ckpt-EPOCH with its learning rate, for TracIn (0: none)", "InflModelTrain", opt->checkpoint_every, &opt->checkpoint_every, NULL));
  PetscOptionsEnd();
  PetscCall(train_check_options(comm, opt));
  PetscCheck(!lr_min_set || opt->schedule == INFL_SCHEDULE_COSINE, comm, PETSC_ERR_ARG_INCOMP, "-train_lr_min %s is the end of the cosine decay; add -train_schedule cosine, or drop it", INFL_DSTR(opt->lr_min));
  PetscCheck(seed >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_seed %d must be >= 0", (int)seed);
  opt->seed = (uint64_t)seed;
  PetscFunctionReturn(0);
}

double InflTrainLearningRate(const InflTrainOptions *opt, int64_t t, int64_t T)
{
  if (t < opt->warmup) return opt->lr * (double)(t + 1) / (double)opt->warmup;
  if (opt->schedule == INFL_SCHEDULE_CONSTANT || T <= opt->warmup) return opt->lr;
  return opt->lr_min + 0.5 * (1 + cos(PETSC_PI * (double)(t - opt->warmup) / (double)(T - opt->warmup))) * (opt->lr - opt->lr_min);
}

/* Fisher-Yates permutation of [0, N) keyed by (seed, epoch). */
static void permutation(int64_t N, uint64_t seed, PetscInt epoch, int64_t perm[])
{
  for (int64_t i = 0; i < N; i++) perm[i] = i;
  for (int64_t i = N - 1; i > 0; i--) {
    int64_t j = (int64_t)(InflUniform(seed, ((uint64_t)epoch << 40) | (uint64_t)i, INFL_STREAM_SHUFFLE) * (double)(i + 1));
    int64_t t = perm[i];
    if (j > i) j = i;
    perm[i] = perm[j];
    perm[j] = t;
  }
}

/* Summed loss and correct predictions of this rank's shard of rows. */
static PetscErrorCode evaluate_shard(InflModel model, InflData data, double sums[2])
{
  int64_t        d, count;
  const float   *x;
  const int64_t *y;
  const PetscInt chunk = 1024;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(data, NULL, &d, NULL));
  PetscCall(InflDataGetShard(data, NULL, &count, &x, &y));
  for (int64_t off = 0; off < count; off += chunk) {
    PetscInt B = (PetscInt)PetscMin(chunk, count - off), correct;
    double   loss;
    PetscCall(InflModelLossBackward(model, B, x + off * d, y + off, &loss, &correct));
    sums[0] += loss;
    sums[1] += correct;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelEvaluate(InflModel model, InflData data, double *mean_loss, double *accuracy)
{
  int64_t  N;
  double   sums[2] = {0, 0};
  MPI_Comm comm;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(data, &N, NULL, NULL));
  PetscCall(InflModelGetComm(model, &comm));
  InflCallAll(comm, evaluate_shard(model, data, sums)); /* an error on one rank's shard, agreed before the sum */
  PetscCall(InflModelZeroGrad(model));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, comm));
  if (mean_loss) *mean_loss = sums[0] / (double)N;
  if (accuracy) *accuracy = sums[1] / (double)N;
  PetscFunctionReturn(0);
}

static PetscErrorCode train_key(InflModel model, const InflTrainOptions *opt, char key[], size_t len)
{
  const char *hash;

  PetscFunctionBegin;
  PetscCall(InflModelGetHash(model, &hash)); /* of the initial model: InflModelTrain records it before the first step */
  PetscCall(PetscSNPrintf(key, len, "init %.16s optimizer %s epochs %d batch %d lr %.17g momentum %.17g betas %.17g %.17g eps %.17g wd %.17g matrices_only %d schedule %s warmup %d lr_min %.17g clip %.17g seed %llu", hash, optimizer_names[opt->optimizer], (int)opt->epochs, (int)opt->batch, opt->lr, opt->momentum, opt->beta1, opt->beta2, opt->eps, opt->weight_decay, (int)opt->decay_matrices_only, schedule_names[opt->schedule], (int)opt->warmup, opt->lr_min, opt->clip, (unsigned long long)opt->seed));
  if (opt->nexclude > 0) { /* the masked examples: their count and hash */
    InflHash h;
    char     hex[65];
    size_t   k = strlen(key);
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, opt->exclude, sizeof(int64_t) * (size_t)opt->nexclude));
    PetscCall(InflHashFinal(&h, hex));
    PetscCall(PetscSNPrintf(key + k, len - k, " masked %d %.16s", (int)opt->nexclude, hex));
  }
  PetscFunctionReturn(0);
}

/* What a checkpoint holds besides parameters and moments: the position in the run and the epoch's running sums. */
typedef struct {
  PetscInt epoch;
  int64_t  b0, step;
  double   sums[2];  /* loss and correct predictions (rows) or predicted tokens (sequences) of the epoch's steps so far */
  double   gnorm[2]; /* sum and max of the pre-clip gradient norms of those steps */
} TrainState;

/* Collective: replace CHECKPOINT.partial by the state before global batch st->b0 of st->epoch. */
static PetscErrorCode train_checkpoint(MPI_Comm comm, const InflTrainOptions *opt, const char key[], const char train_hash[], int64_t np, const float params[], const float m1[], const float m2[], const TrainState *st)
{
  char    tmp[PETSC_MAX_PATH_LEN], partial[PETSC_MAX_PATH_LEN];
  hid_t   file;
  int64_t dims[1] = {np}, two[1] = {2};
  float  *buf;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", opt->checkpoint));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", opt->checkpoint));
  PetscCall(InflH5Create(comm, tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, comm, "train (partial)", NULL, train_hash, NULL));
  PetscCall(InflH5SetAttrString(file, "/", "checkpoint_key", key));
  PetscCall(InflH5SetAttrInt(file, "/", "epoch", st->epoch));
  PetscCall(InflH5SetAttrInt(file, "/", "batch_start", st->b0));
  PetscCall(InflH5SetAttrInt(file, "/", "step", st->step));
  PetscCall(PetscMalloc1(np, &buf));
  PetscCall(PetscArraycpy(buf, params, np));
  PetscCall(InflH5WriteArray(file, "/checkpoint/params", H5T_NATIVE_FLOAT, 1, dims, buf));
  PetscCall(InflH5WriteArray(file, "/checkpoint/moment1", H5T_NATIVE_FLOAT, 1, dims, m1));
  PetscCall(InflH5WriteArray(file, "/checkpoint/moment2", H5T_NATIVE_FLOAT, 1, dims, m2));
  PetscCall(InflH5WriteArray(file, "/checkpoint/epoch_sums", H5T_NATIVE_DOUBLE, 1, two, st->sums));
  PetscCall(InflH5WriteArray(file, "/checkpoint/grad_norm_stats", H5T_NATIVE_DOUBLE, 1, two, st->gnorm));
  PetscCall(PetscFree(buf));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(comm, tmp, partial));
  PetscFunctionReturn(0);
}

/* -checkpoint_every: the training state after epoch `epoch` (0-based; `step` global steps done of T) in the model's
 * metadata, and every checkpoint_every-th epoch the model saved as CHECKPOINT.ckpt-EPOCH (1-based). */
static PetscErrorCode train_keep_checkpoint(InflModel model, const InflTrainOptions *opt, PetscInt epoch, int64_t step, int64_t T)
{
  char   v[64], path[PETSC_MAX_PATH_LEN + 32];
  double lr = InflTrainLearningRate(opt, PetscMax(step - 1, 0), T);

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(v, sizeof(v), "%.17g", lr));
  PetscCall(InflModelSetMetadata(model, "train_lr", v));
  PetscCall(PetscSNPrintf(v, sizeof(v), "%d", (int)epoch + 1));
  PetscCall(InflModelSetMetadata(model, "train_epoch", v));
  PetscCall(PetscSNPrintf(v, sizeof(v), "%" PRId64, step));
  PetscCall(InflModelSetMetadata(model, "train_step", v));
  if ((epoch + 1) % opt->checkpoint_every) PetscFunctionReturn(0);
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s.ckpt-%d", opt->checkpoint, (int)epoch + 1));
  PetscCall(InflModelSave(model, path));
  {
    MPI_Comm comm;
    PetscCall(InflModelGetComm(model, &comm));
    PetscCall(PetscPrintf(comm, "kept checkpoint %s (epoch %d, step %" PRId64 ", lr %g)\n", path, (int)epoch + 1, step, lr));
  }
  PetscFunctionReturn(0);
}

/* The ranges of the parameter slab that weight decay applies to: the model's matrices or everything. */
static PetscErrorCode decay_ranges(InflModel model, const InflTrainOptions *opt, int64_t np, PetscInt *n, InflParamRange **r)
{
  PetscFunctionBegin;
  *n = 0;
  *r = NULL;
  if (opt->weight_decay == 0 || opt->optimizer == INFL_OPT_ADAM) PetscFunctionReturn(0);
  if (opt->decay_matrices_only) PetscCall(InflModelGetMatrixRanges(model, n, r));
  else {
    PetscCall(PetscMalloc1(1, r));
    (*r)[0] = (InflParamRange){0, np};
    *n      = 1;
  }
  PetscFunctionReturn(0);
}

/* One optimizer step, model-agnostic (it sees only the slabs): grads (np) holds the allreduced gradient sums of the
 * batch on every rank; they are scaled by `scale` (1 / batch size) into the mean gradient g, whose norm (double)
 * enters the epoch's statistics and, with clipping, scales g by min(1, clip / (||g|| + 1e-6)); then the update of
 * step st->step with the learning rate *lr of the schedule; decay applies to the ranges decay (ndecay). */
static PetscErrorCode train_update(const InflTrainOptions *opt, int64_t T, int64_t np, float scale, PetscInt ndecay, const InflParamRange decay[], float params[], float grads[], float m1[], float m2[], TrainState *st, double *lr)
{
  double gnorm2 = 0, gnorm;

  PetscFunctionBegin;
  /* the mean gradient g over the batch (the same on every rank: the allreduced sums), its norm in double */
  for (int64_t i = 0; i < np; i++) {
    grads[i] *= scale;
    gnorm2 += (double)grads[i] * grads[i];
  }
  gnorm = sqrt(gnorm2);
  st->gnorm[0] += gnorm;
  st->gnorm[1] = PetscMax(st->gnorm[1], gnorm);
  if (opt->clip > 0 && isfinite(gnorm)) { /* torch.nn.utils.clip_grad_norm_: min(1, C / (||g|| + 1e-6)) */
    const double c = opt->clip / (gnorm + 1e-6);
    if (c < 1) {
      const float cf = (float)c;
      for (int64_t i = 0; i < np; i++) grads[i] *= cf;
    }
  }
  const double lr_t = InflTrainLearningRate(opt, st->step, T);
  *lr = lr_t;
  st->step++;
  if (opt->optimizer == INFL_OPT_SGD) {
    for (PetscInt r = 0; r < ndecay; r++) /* coupled L2: g + wd theta */
      for (int64_t i = decay[r].start; i < decay[r].start + decay[r].count; i++) grads[i] += (float)opt->weight_decay * params[i];
    for (int64_t i = 0; i < np; i++) {
      m1[i] = (float)opt->momentum * m1[i] + grads[i];
      params[i] -= (float)lr_t * m1[i];
    }
  } else {
    const double b1c = 1 - pow(opt->beta1, (double)st->step), b2c = 1 - pow(opt->beta2, (double)st->step);
    const float  be1 = (float)opt->beta1, be2 = (float)opt->beta2, ob1 = (float)(1 - opt->beta1), ob2 = (float)(1 - opt->beta2);
    const float  keep = (float)(1 - lr_t * opt->weight_decay);
    for (PetscInt r = 0; r < ndecay; r++) /* decoupled (AdamW): theta (1 - lr wd) before the Adam step */
      for (int64_t i = decay[r].start; i < decay[r].start + decay[r].count; i++) params[i] *= keep;
    for (int64_t i = 0; i < np; i++) {
      const float g = grads[i];
      m1[i]         = be1 * m1[i] + ob1 * g;
      m2[i]         = be2 * m2[i] + ob2 * g * g;
      params[i] -= (float)(lr_t * ((double)m1[i] / b1c) / (sqrt((double)m2[i] / b2c) + opt->eps));
    }
  }
  PetscFunctionReturn(0);
}

/* What one step reads from this rank's shard: rows (x, y) or token sequences (tokens, offsets), and the batch
 * buffers for the members of a global batch that this rank holds. */
typedef struct {
  PetscBool      seq;
  int64_t        start, count; /* this rank's shard: global indices [start, start + count) */
  int64_t        d;            /* rows: features */
  const float   *x;            /* rows: (count, d) */
  const int64_t *y;            /* rows: (count) */
  float         *xb;           /* rows: (batch, d) */
  int64_t       *yb;           /* rows: (batch) */
  const int32_t *tok;          /* sequences: the shard's tokens */
  const int64_t *off;          /* sequences: (count+1) offsets into tok */
  int32_t       *tb;           /* sequences: (batch * n_positions) the batch's tokens */
  int64_t       *ob;           /* sequences: (batch+1) their offsets */
  uint8_t       *masked;       /* (N) 1 for the examples of opt->exclude, NULL when none */
} TrainShard;

/* Forward, loss and backward of this rank's B members of a batch (gathered into sh->xb, sh->yb or sh->tb, sh->ob),
 * the gradient added to the model's slab; stats as batch_gradient's, for these members. */
static PetscErrorCode shard_backward(InflModel model, TrainShard *sh, PetscInt B, double stats[3])
{
  PetscFunctionBegin;
  if (B == 0) PetscFunctionReturn(0);
  if (!sh->seq) {
    PetscInt correct = 0;
    double   loss    = 0;
    PetscCall(InflModelLossBackward(model, B, sh->xb, sh->yb, &loss, &correct));
    stats[0] = loss;
    stats[1] = correct;
    stats[2] = B;
  } else {
    int64_t npred = 0;
    double *seq_loss; /* (B) */
    PetscCall(PetscMalloc1(B, &seq_loss));
    PetscCall(InflModelSequenceLossBackward(model, B, sh->ob, sh->tb, NULL, seq_loss, &npred));
    for (PetscInt b = 0; b < B; b++) stats[0] += seq_loss[b];
    PetscCall(PetscFree(seq_loss));
    stats[1] = (double)npred;
    stats[2] = (double)sh->ob[B];
  }
  PetscFunctionReturn(0);
}

/* The gradient of global batch perm[b0, b1): every rank runs forward and backward on the members it holds, the
 * ranks agree on any error of it (a non-finite loss on one rank's members) before the gradient sums are allreduced
 * (float) and the statistics (double): stats[0] the summed loss, stats[1] correct predictions (rows) or predicted
 * tokens (sequences), stats[2] examples (rows) or tokens (sequences) processed.
 * *scale: the factor that turns the summed gradient into the mean, 1 / (b1 - b0) for rows, 1 / (predicted tokens of
 * the global batch) for sequences (the mean over predicted tokens, as PyTorch's cross_entropy(reduction="mean") over
 * the batch's targets gives it: nanoGPT, Hugging Face's GPT2LMHeadModel). */
static PetscErrorCode batch_gradient(InflModel model, MPI_Comm comm, TrainShard *sh, const int64_t perm[], int64_t b0, int64_t b1, int64_t np, float grads[], double stats[3], float *scale)
{
  PetscInt B = 0;

  PetscFunctionBegin;
  stats[0] = stats[1] = stats[2] = 0;
  PetscCall(InflModelZeroGrad(model));
  if (sh->seq) sh->ob[0] = 0;
  for (int64_t i = b0; i < b1; i++) { /* this rank's members of the batch */
    int64_t g = perm[i];
    if (g < sh->start || g >= sh->start + sh->count || (sh->masked && sh->masked[g])) continue;
    if (!sh->seq) {
      PetscCall(PetscArraycpy(sh->xb + (int64_t)B * sh->d, sh->x + (g - sh->start) * sh->d, sh->d));
      sh->yb[B] = sh->y[g - sh->start];
    } else {
      int64_t len = sh->off[g - sh->start + 1] - sh->off[g - sh->start];
      PetscCall(PetscArraycpy(sh->tb + sh->ob[B], sh->tok + sh->off[g - sh->start], len));
      sh->ob[B + 1] = sh->ob[B] + len;
    }
    B++;
  }
  InflCallAll(comm, shard_backward(model, sh, B, stats));
  PetscCall(InflAllreduceSum(grads, np, MPI_FLOAT, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, stats, 3, MPI_DOUBLE, MPI_SUM, comm));
  if (!sh->seq) {
    int64_t members = b1 - b0;
    if (sh->masked)
      for (int64_t i = b0; i < b1; i++) members -= sh->masked[perm[i]];
    *scale = members > 0 ? 1.0f / (float)members : 1.0f; /* only masked examples: a zero gradient */
  }
  else *scale = stats[1] > 0 ? 1.0f / (float)stats[1] : 1.0f; /* no prediction in the batch: a zero gradient */
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelTrain(InflModel model, InflData train, InflData test, const InflTrainOptions *opt)
{
  MPI_Comm        comm;
  int64_t         N, np, *perm, steps_per_epoch, T, step_start;
  float          *params, *grads, *m1 = NULL, *m2 = NULL;
  PetscLogDouble  t0, t1;
  char            key[1024];
  const char     *train_hash, *unit;
  TrainState      st = {0};
  PetscInt        ndecay;
  InflParamRange *decay;
  TrainShard      sh = {0};

  PetscFunctionBegin;
  PetscCall(InflModelGetComm(model, &comm));
  PetscCall(InflModelIsSequential(model, &sh.seq));
  PetscCall(InflModelCheckData(model, train)); /* sequence data: reads the corpus and cuts the model's windows */
  if (test) PetscCall(InflModelCheckData(model, test));
  PetscCall(InflDataGetSizes(train, &N, &sh.d, NULL));
  PetscCall(train_check_options(comm, opt));
  unit            = sh.seq ? "sequences" : "examples";
  steps_per_epoch = (N + opt->batch - 1) / opt->batch;
  T               = (int64_t)opt->epochs * steps_per_epoch;
  PetscCheck(!opt->checkpoint_every || opt->checkpoint[0], comm, PETSC_ERR_ARG_WRONG, "-checkpoint_every %d keeps checkpoints beside the output model, but this run writes none; give an output (-out)", (int)opt->checkpoint_every);
  PetscCheck(opt->warmup <= T, comm, PETSC_ERR_ARG_OUTOFRANGE, "-train_warmup %d is longer than the run: %d epochs x %" PRId64 " steps (%" PRId64 " %s, -train_batch %d) = %" PRId64 " steps; lower it", (int)opt->warmup, (int)opt->epochs, steps_per_epoch, N, unit, (int)opt->batch, T);
  PetscCall(train_key(model, opt, key, sizeof(key)));
  PetscCall(InflDataGetHash(train, &train_hash));
  PetscCall(InflModelGetParameters(model, &np, &params, &grads));
  PetscCall(decay_ranges(model, opt, np, &ndecay, &decay));
  if (sh.seq) {
    PetscInt npos;
    PetscCall(InflModelGetSequenceSizes(model, NULL, &npos));
    PetscCall(InflDataGetSequenceShard(train, &sh.start, &sh.count, &sh.tok, &sh.off));
    PetscCall(PetscMalloc2((size_t)opt->batch * npos, &sh.tb, opt->batch + 1, &sh.ob));
  } else {
    PetscCall(InflDataGetShard(train, &sh.start, &sh.count, &sh.x, &sh.y));
    PetscCall(PetscMalloc2((size_t)opt->batch * sh.d, &sh.xb, opt->batch, &sh.yb));
  }
  if (opt->nexclude > 0) {
    PetscCheck(!sh.seq, comm, PETSC_ERR_SUP, "masking training examples (leave-one-out) is implemented for rows data only, not for token data");
    PetscCall(PetscCalloc1(N, &sh.masked));
    for (PetscInt k = 0; k < opt->nexclude; k++) {
      PetscCheck(opt->exclude[k] >= 0 && opt->exclude[k] < N, comm, PETSC_ERR_ARG_OUTOFRANGE, "masked training example %" PRId64 " is outside the training set of %" PRId64 " examples", opt->exclude[k], N);
      sh.masked[opt->exclude[k]] = 1;
    }
  }
  PetscCall(PetscMalloc2(N, &perm, np, &m1));
  PetscCall(PetscCalloc1(np, &m2));
  PetscCall(PetscArrayzero(m1, np));
  if (opt->checkpoint[0]) { /* resume */
    char partial[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", opt->checkpoint));
    if (InflFileExists(partial)) {
      hid_t   file;
      int64_t dims[1] = {np}, two[1] = {2}, e;
      PetscCall(InflCheckpointOpen(comm, partial, "train (partial)", NULL, train_hash, key, &file));
      PetscCall(InflH5GetAttrInt(file, "/", "epoch", &e));
      PetscCall(InflH5GetAttrInt(file, "/", "batch_start", &st.b0));
      PetscCall(InflH5GetAttrInt(file, "/", "step", &st.step));
      PetscCall(InflH5ReadArray(file, "/checkpoint/params", H5T_NATIVE_FLOAT, 1, dims, NULL, params));
      PetscCall(InflH5ReadArray(file, "/checkpoint/moment1", H5T_NATIVE_FLOAT, 1, dims, NULL, m1));
      PetscCall(InflH5ReadArray(file, "/checkpoint/moment2", H5T_NATIVE_FLOAT, 1, dims, NULL, m2));
      PetscCall(InflH5ReadArray(file, "/checkpoint/epoch_sums", H5T_NATIVE_DOUBLE, 1, two, NULL, st.sums));
      PetscCall(InflH5ReadArray(file, "/checkpoint/grad_norm_stats", H5T_NATIVE_DOUBLE, 1, two, NULL, st.gnorm));
      PetscCall(InflCheckpointCheckFiniteFloat(comm, partial, "/checkpoint/params", 1, 0, np, params));
      PetscCall(InflCheckpointCheckFiniteFloat(comm, partial, "/checkpoint/moment1", 1, 0, np, m1));
      PetscCall(InflCheckpointCheckFiniteFloat(comm, partial, "/checkpoint/moment2", 1, 0, np, m2));
      PetscCall(InflCheckpointCheckFinite(comm, partial, "/checkpoint/epoch_sums", 1, 0, 2, st.sums));
      PetscCall(InflCheckpointCheckFinite(comm, partial, "/checkpoint/grad_norm_stats", 1, 0, 2, st.gnorm));
      PetscCall(InflCheckpointCheckRange(comm, partial, "root attribute epoch", e, 0, opt->epochs - 1));
      PetscCall(InflCheckpointCheckRange(comm, partial, "root attribute batch_start", st.b0, 0, N - 1));
      PetscCall(InflCheckpointCheckRange(comm, partial, "root attribute step", st.step, 0, T));
      PetscCall(InflH5Close(&file));
      PetscCall(InflModelGetParameters(model, NULL, &params, NULL)); /* marks derived copies stale */
      st.epoch = (PetscInt)e;
      PetscCall(PetscPrintf(comm, "train: resuming from %s at epoch %d, %s %" PRId64 " of %" PRId64 " (step %" PRId64 " of %" PRId64 ")\n", partial, (int)st.epoch + 1, sh.seq ? "sequence" : "example", st.b0, N, st.step, T));
    }
  }
  step_start = st.step;
  for (PetscInt epoch = st.epoch; epoch < opt->epochs; epoch++) {
    InflProgress prog;
    int64_t      b_first = 0;
    double       lr_t = 0, work = 0; /* examples or tokens processed by this run of the epoch */
    PetscCall(PetscTime(&t0));
    permutation(N, opt->seed, epoch, perm);
    if (epoch == st.epoch && st.b0 > 0) b_first = st.b0;
    else {
      st.sums[0] = st.sums[1] = 0;
      st.gnorm[0] = st.gnorm[1] = 0;
    }
    st.epoch = epoch;
    {
      char name[64];
      PetscCall(PetscSNPrintf(name, sizeof(name), "train epoch %d", (int)epoch + 1));
      PetscCall(InflProgressStart(comm, name, sh.count, &prog)); /* counts this rank's shard: the epoch's N in all */
      prog.unit = unit;
      prog.done = b_first;
    }
    for (int64_t b0 = b_first; b0 < N; b0 += opt->batch) {
      PetscBool ckpt, stop;
      double    stats[3];
      float     scale = 1;
      PetscCall(InflProgressStep(&prog, 0, &ckpt, &stop));
      prog.done = b0;
      if (opt->stop_after > 0 && st.step == opt->stop_after && st.step > step_start) { /* the same on every rank */
        PetscCall(PetscPrintf(comm, "train: stopping after step %" PRId64 " of %" PRId64 " (-train_stop_after)\n", st.step, T));
        ckpt = stop = PETSC_TRUE;
      }
      st.b0 = b0;
      if ((ckpt || stop) && opt->checkpoint[0]) PetscCall(train_checkpoint(comm, opt, key, train_hash, np, params, m1, m2, &st));
      if (stop) {
        char partial[PETSC_MAX_PATH_LEN];
        PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", opt->checkpoint[0] ? opt->checkpoint : "(no output file)"));
        PetscCall(InflInterrupted(comm, "infl train", partial));
      }
      PetscCall(batch_gradient(model, comm, &sh, perm, b0, PetscMin(N, b0 + opt->batch), np, grads, stats, &scale));
      st.sums[0] += stats[0];
      st.sums[1] += stats[1];
      work += stats[2];
      PetscCall(train_update(opt, T, np, scale, ndecay, decay, params, grads, m1, m2, &st, &lr_t));
      PetscCall(InflModelGetParameters(model, NULL, &params, NULL)); /* marks derived copies stale */
    }
    PetscCall(PetscTime(&t1));
    InflCheckAll(comm, isfinite(st.sums[0]), PETSC_ERR_FP, "training diverged in epoch %d (loss %g); lower -train_lr (now %g)", (int)epoch, st.sums[0], opt->lr);
    {
      char tail[128] = "", mid[128] = "";
      if (opt->clip > 0) PetscCall(PetscSNPrintf(tail, sizeof(tail), "  grad norm mean %.4g max %.4g", st.gnorm[0] / (double)steps_per_epoch, st.gnorm[1]));
      if (!sh.seq) {
        if (test) {
          double tl, ta;
          PetscCall(InflModelEvaluate(model, test, &tl, &ta));
          PetscCall(PetscSNPrintf(mid, sizeof(mid), "test loss %.4f  acc %.4f", tl, ta));
        }
        PetscCall(PetscPrintf(comm, "epoch %3d  train loss %.4f  acc %.4f  |  %s%slr %.3e%s  |  %.0f examples/s\n", (int)epoch + 1, st.sums[0] / (double)N, st.sums[1] / (double)N, mid, test ? "  |  " : "", lr_t, tail, work / (t1 - t0)));
      } else {
        if (test) {
          double vl, ppl;
          PetscCall(InflModelEvaluateSequences(model, test, 16, &vl, &ppl, NULL));
          PetscCall(PetscSNPrintf(mid, sizeof(mid), "valid loss/token %.4f (%.4f bits)  ppl %.3f", vl, vl / log(2.0), ppl));
        }
        PetscCall(PetscPrintf(comm, "epoch %3d  train loss/token %.4f  |  %s%slr %.3e%s  |  %.0f tokens/s\n", (int)epoch + 1, st.sums[1] > 0 ? st.sums[0] / st.sums[1] : 0.0, mid, test ? "  |  " : "", lr_t, tail, work / (t1 - t0)));
      }
    }
    if (opt->checkpoint_every > 0) PetscCall(train_keep_checkpoint(model, opt, epoch, st.step, T));
  }
  PetscCall(InflModelZeroGrad(model));
  if (decay && opt->decay_matrices_only) PetscCall(InflModelRestoreMatrixRanges(model, &ndecay, &decay));
  else PetscCall(PetscFree(decay));
  if (sh.seq) PetscCall(PetscFree2(sh.tb, sh.ob));
  else PetscCall(PetscFree2(sh.xb, sh.yb));
  PetscCall(PetscFree2(perm, m1));
  PetscCall(PetscFree(m2));
  PetscCall(PetscFree(sh.masked));
  PetscFunctionReturn(0);
}

/* Data-parallel training and evaluation of a model on a data set. */
#include <infl/model.h>
#include <infl/checkpoint.h>
#include <math.h>

PetscErrorCode InflTrainOptionsFromOptions(InflTrainOptions *opt)
{
  const char *opts[] = {"adam", "sgd"};
  PetscInt    iopt   = 0, seed = 0;
  PetscBool   set;

  PetscFunctionBegin;
  PetscOptionsBegin(PETSC_COMM_WORLD, NULL, "Training options", "InflModelTrain");
  PetscCall(PetscOptionsEList("-train_optimizer", "optimizer", "InflModelTrain", opts, 2, opts[0], &iopt, NULL));
  opt->optimizer = (InflOptimizer)iopt;
  opt->epochs    = 10;
  opt->batch     = 128;
  opt->lr        = opt->optimizer == INFL_OPT_ADAM ? 1e-3 : 0.05;
  opt->momentum  = 0.9;
  opt->weight_decay = 0;
  PetscCall(PetscOptionsInt("-train_epochs", "passes over the training set", "InflModelTrain", opt->epochs, &opt->epochs, NULL));
  PetscCall(PetscOptionsInt("-train_batch", "global mini-batch size (split over ranks)", "InflModelTrain", opt->batch, &opt->batch, NULL));
  PetscCall(PetscOptionsReal("-train_lr", "learning rate", "InflModelTrain", opt->lr, &opt->lr, NULL));
  PetscCall(PetscOptionsReal("-train_momentum", "SGD momentum", "InflModelTrain", opt->momentum, &opt->momentum, NULL));
  PetscCall(PetscOptionsReal("-train_weight_decay", "decoupled weight decay", "InflModelTrain", opt->weight_decay, &opt->weight_decay, NULL));
  PetscCall(PetscOptionsInt("-train_seed", "seed of initialization and shuffling", "InflModelTrain", seed, &seed, &set));
  PetscOptionsEnd();
  PetscCheck(opt->epochs >= 0, PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE, "-train_epochs %d must be >= 0", (int)opt->epochs);
  PetscCheck(opt->batch > 0, PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE, "-train_batch %d must be positive", (int)opt->batch);
  PetscCheck(opt->lr > 0 && isfinite(opt->lr), PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE, "-train_lr %g must be a positive number", opt->lr);
  PetscCheck(seed >= 0, PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE, "-train_seed %d must be >= 0", (int)seed);
  opt->seed = (uint64_t)seed;
  opt->checkpoint[0] = 0;
  PetscFunctionReturn(0);
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

PetscErrorCode InflModelEvaluate(InflModel model, InflData data, double *mean_loss, double *accuracy)
{
  int64_t        N, d, start, count;
  const float   *x;
  const int64_t *y;
  double         sums[2] = {0, 0};
  const PetscInt chunk   = 1024;
  MPI_Comm       comm;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(data, &N, &d, NULL));
  PetscCall(InflDataGetShard(data, &start, &count, &x, &y));
  for (int64_t off = 0; off < count; off += chunk) {
    PetscInt B = (PetscInt)PetscMin(chunk, count - off), correct;
    double   loss;
    PetscCall(InflModelLossBackward(model, B, x + off * d, y + off, &loss, &correct));
    sums[0] += loss;
    sums[1] += correct;
  }
  PetscCall(InflModelZeroGrad(model));
  PetscCall(InflModelGetComm(model, &comm));
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
  PetscCall(PetscSNPrintf(key, len, "init %.16s optimizer %d epochs %d batch %d lr %.17g momentum %.17g wd %.17g seed %llu", hash, (int)opt->optimizer, (int)opt->epochs, (int)opt->batch, opt->lr, opt->momentum, opt->weight_decay, (unsigned long long)opt->seed));
  PetscFunctionReturn(0);
}

/* Collective: replace CHECKPOINT.partial by the state before global batch b0 of `epoch`. */
static PetscErrorCode train_checkpoint(MPI_Comm comm, const InflTrainOptions *opt, const char key[], const char train_hash[], int64_t np, const float params[], const float m1[], const float m2[], PetscInt epoch, int64_t b0, int64_t step, const double sums[2])
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
  PetscCall(InflH5SetAttrInt(file, "/", "epoch", epoch));
  PetscCall(InflH5SetAttrInt(file, "/", "batch_start", b0));
  PetscCall(InflH5SetAttrInt(file, "/", "step", step));
  PetscCall(PetscMalloc1(np, &buf));
  PetscCall(PetscArraycpy(buf, params, np));
  PetscCall(InflH5WriteArray(file, "/checkpoint/params", H5T_NATIVE_FLOAT, 1, dims, buf));
  PetscCall(InflH5WriteArray(file, "/checkpoint/moment1", H5T_NATIVE_FLOAT, 1, dims, m1));
  PetscCall(InflH5WriteArray(file, "/checkpoint/moment2", H5T_NATIVE_FLOAT, 1, dims, m2));
  PetscCall(InflH5WriteArray(file, "/checkpoint/epoch_sums", H5T_NATIVE_DOUBLE, 1, two, sums));
  PetscCall(PetscFree(buf));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(comm, tmp, partial));
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelTrain(InflModel model, InflData train, InflData test, const InflTrainOptions *opt)
{
  MPI_Comm       comm;
  int64_t        N, d, start, count, np, *perm, *yb;
  const float   *x;
  const int64_t *y;
  float         *params, *grads, *xb, *m1 = NULL, *m2 = NULL;
  int64_t        step = 0, resume_b0 = 0;
  PetscLogDouble t0, t1;
  char           key[512];
  const char    *train_hash;
  PetscInt       first_epoch = 0;
  double         resume_sums[2] = {0, 0};

  PetscFunctionBegin;
  PetscCall(InflModelGetComm(model, &comm));
  PetscCall(InflModelCheckData(model, train));
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, &x, &y));
  PetscCall(train_key(model, opt, key, sizeof(key)));
  PetscCall(InflDataGetHash(train, &train_hash));
  PetscCall(InflModelGetParameters(model, &np, &params, &grads));
  PetscCall(PetscMalloc4(N, &perm, (size_t)opt->batch * d, &xb, opt->batch, &yb, np, &m1));
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
      PetscCall(InflH5GetAttrInt(file, "/", "batch_start", &resume_b0));
      PetscCall(InflH5GetAttrInt(file, "/", "step", &step));
      PetscCall(InflH5ReadArray(file, "/checkpoint/params", H5T_NATIVE_FLOAT, 1, dims, NULL, params));
      PetscCall(InflH5ReadArray(file, "/checkpoint/moment1", H5T_NATIVE_FLOAT, 1, dims, NULL, m1));
      PetscCall(InflH5ReadArray(file, "/checkpoint/moment2", H5T_NATIVE_FLOAT, 1, dims, NULL, m2));
      PetscCall(InflH5ReadArray(file, "/checkpoint/epoch_sums", H5T_NATIVE_DOUBLE, 1, two, NULL, resume_sums));
      PetscCall(InflH5Close(&file));
      PetscCall(InflModelGetParameters(model, NULL, &params, NULL)); /* marks derived copies stale */
      first_epoch = (PetscInt)e;
      PetscCall(PetscPrintf(comm, "train: resuming from %s at epoch %d, example %" PRId64 " of %" PRId64 "\n", partial, (int)first_epoch + 1, resume_b0, N));
    }
  }
  for (PetscInt epoch = first_epoch; epoch < opt->epochs; epoch++) {
    double       sums[2] = {0, 0};
    InflProgress prog;
    int64_t      b_first = 0;
    PetscCall(PetscTime(&t0));
    permutation(N, opt->seed, epoch, perm);
    if (epoch == first_epoch && resume_b0 > 0) {
      b_first = resume_b0;
      sums[0] = resume_sums[0];
      sums[1] = resume_sums[1];
    }
    {
      char name[64];
      PetscCall(PetscSNPrintf(name, sizeof(name), "train epoch %d", (int)epoch + 1));
      PetscCall(InflProgressStart(comm, name, count, &prog)); /* counts this rank's shard: the epoch's N in all */
      prog.done = b_first;
    }
    for (int64_t b0 = b_first; b0 < N; b0 += opt->batch) {
      PetscBool ckpt, stop;
      PetscCall(InflProgressStep(&prog, 0, &ckpt, &stop));
      prog.done = b0;
      if ((ckpt || stop) && opt->checkpoint[0]) PetscCall(train_checkpoint(comm, opt, key, train_hash, np, params, m1, m2, epoch, b0, step, sums));
      if (stop) {
        char partial[PETSC_MAX_PATH_LEN];
        PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", opt->checkpoint[0] ? opt->checkpoint : "(no output file)"));
        PetscCall(InflInterrupted(comm, "infl train", partial));
      }
      int64_t  b1 = PetscMin(N, b0 + opt->batch);
      PetscInt B  = 0, correct = 0;
      double   loss = 0, stats[2];
      for (int64_t i = b0; i < b1; i++) {
        int64_t g = perm[i];
        if (g < start || g >= start + count) continue;
        PetscCall(PetscArraycpy(xb + (int64_t)B * d, x + (g - start) * d, d));
        yb[B++] = y[g - start];
      }
      PetscCall(InflModelZeroGrad(model));
      if (B > 0) PetscCall(InflModelLossBackward(model, B, xb, yb, &loss, &correct));
      PetscCall(InflAllreduceSum(grads, np, MPI_FLOAT, comm));
      stats[0] = loss;
      stats[1] = correct;
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, stats, 2, MPI_DOUBLE, MPI_SUM, comm));
      sums[0] += stats[0];
      sums[1] += stats[1];
      step++;
      {
        const float scale = 1.0f / (float)(b1 - b0);
        if (opt->optimizer == INFL_OPT_ADAM) {
          const double b1c = 1 - pow(0.9, (double)step), b2c = 1 - pow(0.999, (double)step);
          for (int64_t i = 0; i < np; i++) {
            float g = grads[i] * scale;
            m1[i]   = 0.9f * m1[i] + 0.1f * g;
            m2[i]   = 0.999f * m2[i] + 0.001f * g * g;
            params[i] -= (float)(opt->lr * ((double)m1[i] / b1c) / (sqrt((double)m2[i] / b2c) + 1e-8) + opt->lr * opt->weight_decay * params[i]);
          }
        } else {
          for (int64_t i = 0; i < np; i++) {
            float g = grads[i] * scale + (float)opt->weight_decay * params[i];
            m1[i]   = (float)opt->momentum * m1[i] + g;
            params[i] -= (float)opt->lr * m1[i];
          }
        }
      }
      PetscCall(InflModelGetParameters(model, NULL, &params, NULL)); /* marks derived copies stale */
    }
    PetscCall(PetscTime(&t1));
    InflCheckAll(comm, isfinite(sums[0]), PETSC_ERR_FP, "training diverged in epoch %d (loss %g); lower -train_lr (now %g)", (int)epoch, sums[0], opt->lr);
    if (test) {
      double tl, ta;
      PetscCall(InflModelEvaluate(model, test, &tl, &ta));
      PetscCall(PetscPrintf(comm, "epoch %3d  train loss %.4f  acc %.4f  |  test loss %.4f  acc %.4f  |  %.0f examples/s\n", (int)epoch + 1, sums[0] / (double)N, sums[1] / (double)N, tl, ta, (double)N / (t1 - t0)));
    } else PetscCall(PetscPrintf(comm, "epoch %3d  train loss %.4f  acc %.4f  |  %.0f examples/s\n", (int)epoch + 1, sums[0] / (double)N, sums[1] / (double)N, (double)N / (t1 - t0)));
  }
  PetscCall(InflModelZeroGrad(model));
  PetscCall(PetscFree4(perm, xb, yb, m1));
  PetscCall(PetscFree(m2));
  PetscFunctionReturn(0);
}

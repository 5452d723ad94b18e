static const char help[] = "Data-parallel training against an independent PyTorch run (tests/nn/make_train_reference.py):\n"
                           "MLP 784,32,10 relu, 1 epoch of Adam on Fashion-MNIST train 0..999, batch 100, seed 3;\n"
                           "2 epochs of AdamW (matrices decayed) with warm-up, cosine schedule and gradient clipping,\n"
                           "uninterrupted and stopped after step 13 on fewer ranks, then resumed on all; one SGD and\n"
                           "one AdamW step with and without weight decay (matrices only or all parameters).\n"
                           "The same fixture must match at every rank count.\n";
#include <infl/model.h>
#include <infl/checkpoint.h>
#include <math.h>
#include <unistd.h>
#include "lib/infl_test.h"

/* ||a - b|| / ||b|| and max |a - b| over n entries */
static void diff_norms(int64_t n, const float a[], const float b[], double *rel, double *maxabs)
{
  double d2 = 0, b2 = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    d2 += d * d;
    b2 += (double)b[i] * b[i];
    m = PetscMax(m, fabs(d));
  }
  *rel    = sqrt(d2) / PetscMax(sqrt(b2), 1e-300);
  *maxabs = m;
}

/* Compare every layer of the model with /group/layers.{l}.{weight,bias} of the fixture. */
static PetscErrorCode compare_params(MPI_Comm comm, hid_t file, const char group[], InflModel model, double *worst_rel, double *worst_abs)
{
  PetscInt    L;
  InflLinear *ly;

  PetscFunctionBegin;
  *worst_rel = *worst_abs = 0;
  PetscCall(InflModelGetLayers(model, &L, &ly));
  for (PetscInt l = 0; l < L; l++) {
    for (int k = 0; k < 2; k++) {
      char    name[128];
      int64_t dims[2] = {ly[l].dout, ly[l].din}, n = k == 0 ? (int64_t)ly[l].dout * ly[l].din : ly[l].dout;
      float  *ref;
      double  rel, mx;
      PetscCall(PetscSNPrintf(name, sizeof(name), "/%s/layers.%d.%s", group, (int)l, k == 0 ? "weight" : "bias"));
      PetscCall(PetscMalloc1(n, &ref));
      PetscCall(InflH5ReadArray(file, name, H5T_NATIVE_FLOAT, k == 0 ? 2 : 1, dims, NULL, ref));
      diff_norms(n, k == 0 ? ly[l].W : ly[l].b, ref, &rel, &mx);
      PetscCall(PetscPrintf(comm, "  %-24s rel %.3e  max abs %.3e\n", name, rel, mx));
      *worst_rel = PetscMax(*worst_rel, rel);
      *worst_abs = PetscMax(*worst_abs, mx);
      PetscCall(PetscFree(ref));
    }
  }
  PetscFunctionReturn(0);
}

/* The AdamW run of the fixture (group /adamw of make_train_reference.py). */
static PetscErrorCode adamw_options(InflTrainOptions *opt)
{
  PetscFunctionBegin;
  *opt = (InflTrainOptions){.optimizer = INFL_OPT_ADAMW};
  PetscCall(InflTrainOptionsSetDefaults(opt));
  opt->epochs       = 2;
  opt->batch        = 100;
  opt->lr           = 3e-3;
  opt->beta2        = 0.95;
  opt->weight_decay = 0.1;
  opt->schedule     = INFL_SCHEDULE_COSINE;
  opt->warmup       = 4;
  opt->lr_min       = 3e-4;
  opt->clip         = 1.0;
  opt->seed         = 3;
  PetscFunctionReturn(0);
}

/* A fresh MLP 784,32,10 initialized with seed 3 on comm. */
static PetscErrorCode fresh_model(MPI_Comm comm, InflModel *model)
{
  const PetscInt dims[3] = {784, 32, 10};

  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, model));
  PetscCall(InflModelSetUpMLP(*model, 3, dims, INFL_ACT_RELU, 3));
  PetscFunctionReturn(0);
}

/* Trained parameters against a group of the fixture: float32 reassociation only (measured 5e-8 relative, 4e-8
 * absolute at 1-4 ranks for Adam, lr 1e-3); Adam moves a parameter by up to about lr per step, so a wrong batch,
 * permutation, moment update, learning rate, decay or clipping factor shows far above these limits. */
static PetscErrorCode expect_params(MPI_Comm comm, hid_t file, const char group[], InflModel model, double lr)
{
  double rel, mx;

  PetscFunctionBegin;
  PetscCall(compare_params(comm, file, group, model, &rel, &mx));
  EXPECT(rel <= 1e-5, "trained parameters differ from the PyTorch reference /%s by %g relative (limit 1e-5)", group, rel);
  EXPECT(mx <= 1e-3 * lr, "trained parameters differ from the PyTorch reference /%s by %g in some entry (limit 1e-3 lr = %g)", group, mx, 1e-3 * lr);
  PetscFunctionReturn(0);
}

/* One full-batch step with and without weight decay from the same initialization: their difference is the decay term
 * alone, -lr wd theta0 on the decayed parameters (to the rounding of the step: measured 2.5e-8, limit 1e-7, against
 * terms near 2e-3) and exactly 0 on the others (the rest of the step is the same computation).  SGD: coupled L2
 * (lr (g + wd theta)); AdamW: decoupled (theta (1 - lr wd)); matrices_only: the model's matrix ranges (the MLP's W). */
static PetscErrorCode check_decay_step(MPI_Comm comm, InflData data, InflOptimizer o, PetscBool matrices_only)
{
  InflModel        a, b;
  InflTrainOptions opt = {.optimizer = o};
  float           *pa, *pb, *p0;
  int64_t          n, ndec = 0;
  PetscInt         nr;
  InflParamRange  *r;
  PetscBool       *decayed;
  double           worst_dec = 0, worst_other = 0;

  PetscFunctionBegin;
  PetscCall(InflTrainOptionsSetDefaults(&opt));
  opt.epochs = 1;
  opt.batch  = 1000;
  opt.lr     = 0.1;
  opt.seed   = 3;
  PetscCall(fresh_model(comm, &a));
  PetscCall(fresh_model(comm, &b));
  PetscCall(InflModelGetParameters(a, &n, &pa, NULL));
  PetscCall(PetscMalloc2(n, &p0, n, &decayed));
  PetscCall(PetscArraycpy(p0, pa, n));
  for (int64_t i = 0; i < n; i++) decayed[i] = matrices_only ? PETSC_FALSE : PETSC_TRUE;
  PetscCall(InflModelGetMatrixRanges(a, &nr, &r));
  if (matrices_only)
    for (PetscInt k = 0; k < nr; k++)
      for (int64_t i = r[k].start; i < r[k].start + r[k].count; i++) decayed[i] = PETSC_TRUE;
  PetscCall(InflModelRestoreMatrixRanges(a, &nr, &r));
  opt.weight_decay = 0;
  PetscCall(InflModelTrain(a, data, NULL, &opt));
  opt.weight_decay        = 0.5;
  opt.decay_matrices_only = matrices_only;
  PetscCall(InflModelTrain(b, data, NULL, &opt));
  PetscCall(InflModelGetParameters(a, NULL, &pa, NULL));
  PetscCall(InflModelGetParameters(b, NULL, &pb, NULL));
  for (int64_t i = 0; i < n; i++) {
    double d = (double)pb[i] - (double)pa[i];
    if (decayed[i]) {
      worst_dec = PetscMax(worst_dec, fabs(d + opt.lr * opt.weight_decay * (double)p0[i]));
      ndec++;
    } else worst_other = PetscMax(worst_other, fabs(d));
  }
  PetscCall(PetscPrintf(comm, "one step of %s, decay of %s (%" PRId64 " of %" PRId64 " parameters): decay term off by %.3e, others moved by %.3e\n", o == INFL_OPT_SGD ? "sgd" : "adamw", matrices_only ? "matrices" : "all", ndec, n, worst_dec, worst_other));
  EXPECT(ndec == (matrices_only ? 784 * 32 + 32 * 10 : n), "%" PRId64 " parameters decayed, expected the %s", ndec, matrices_only ? "784*32 + 32*10 weights" : "all");
  EXPECT(worst_dec <= 1e-7, "the decayed parameters moved by -lr wd theta0 off by %g (limit 1e-7)", worst_dec);
  EXPECT(worst_other == 0, "parameters without decay moved by %g with -train_weight_decay", worst_other);
  PetscCall(PetscFree2(p0, decayed));
  PetscCall(InflModelDestroy(&a));
  PetscCall(InflModelDestroy(&b));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm         comm;
  InflModel        model;
  InflData         data;
  InflTrainOptions opt;
  hid_t            file;
  const char      *src;
  char             path[PETSC_MAX_PATH_LEN], spec[PETSC_MAX_PATH_LEN], ckpt[PETSC_MAX_PATH_LEN], partial[PETSC_MAX_PATH_LEN + 16];
  double           rel, mx, loss0, loss1, acc, ref_before, ref_after, step_lr[20];
  PetscMPIInt      size, rank, subsize = 1;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  src = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_USER, "set INFL_SOURCE_DIR to the source tree (ctest does)");
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/nn/train_reference.h5", src));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "idx:/usr/share/datasets/fashion-mnist/train"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-data", spec, sizeof(spec), NULL));

  PetscCall(InflDataOpen(comm, spec, 1000, &data));
  PetscCall(fresh_model(comm, &model));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5ReadArray(file, "/mean_loss_before", H5T_NATIVE_DOUBLE, 0, NULL, NULL, &ref_before));
  PetscCall(InflH5ReadArray(file, "/mean_loss_after", H5T_NATIVE_DOUBLE, 0, NULL, NULL, &ref_after));

  /* initialization: the same Philox draws in python and C, so the same floats */
  PetscCall(PetscPrintf(comm, "initialization vs the fixture (%d ranks):\n", (int)size));
  PetscCall(compare_params(comm, file, "init", model, &rel, &mx));
  EXPECT(mx == 0, "initial parameters differ from the python initialization by %g (relative %g); both draw the same Philox numbers", mx, rel);
  PetscCall(InflModelEvaluate(model, data, &loss0, &acc));
  PetscCall(PetscPrintf(comm, "mean loss before: %.8f (python %.8f)\n", loss0, ref_before));
  EXPECT(fabs(loss0 - ref_before) <= 1e-5 * ref_before, "initial mean loss %.8g differs from python's %.8g", loss0, ref_before);

  /* the decay mask of the MLP: exactly the W of every layer */
  {
    PetscInt        n, L;
    InflParamRange *r;
    InflLinear     *ly;
    float          *params;
    PetscCall(InflModelGetLayers(model, &L, &ly));
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    PetscCall(InflModelGetMatrixRanges(model, &n, &r));
    EXPECT(n == L, "the MLP has %d layers but %d matrix ranges", (int)L, (int)n);
    for (PetscInt l = 0; l < L; l++) EXPECT(r[l].start == ly[l].W - params && r[l].count == (int64_t)ly[l].dout * ly[l].din && ly[l].b == ly[l].W + r[l].count, "matrix range %d [%" PRId64 ", +%" PRId64 ") is not layer %d's W", (int)l, r[l].start, r[l].count, (int)l);
    PetscCall(InflModelRestoreMatrixRanges(model, &n, &r));
  }

  opt = (InflTrainOptions){.optimizer = INFL_OPT_ADAM};
  PetscCall(InflTrainOptionsSetDefaults(&opt));
  opt.epochs = 1;
  opt.batch  = 100;
  opt.lr     = 1e-3;
  opt.seed   = 3;
  PetscCall(InflModelTrain(model, data, NULL, &opt));

  PetscCall(PetscPrintf(comm, "after 1 epoch vs the fixture (%d ranks):\n", (int)size));
  PetscCall(expect_params(comm, file, "final", model, opt.lr));
  PetscCall(InflModelEvaluate(model, data, &loss1, &acc));
  PetscCall(PetscPrintf(comm, "mean loss after: %.8f (python %.8f), accuracy %.4f\n", loss1, ref_after, acc));
  EXPECT(loss1 < loss0 - 0.1, "training did not lower the loss: %g -> %g", loss0, loss1);
  EXPECT(fabs(loss1 - ref_after) <= 1e-4 * ref_after, "trained mean loss %.8g differs from python's %.8g", loss1, ref_after);
  PetscCall(InflModelDestroy(&model));

  /* the decay mask in the update rules */
  PetscCall(check_decay_step(comm, data, INFL_OPT_SGD, PETSC_TRUE));
  PetscCall(check_decay_step(comm, data, INFL_OPT_SGD, PETSC_FALSE));
  PetscCall(check_decay_step(comm, data, INFL_OPT_ADAMW, PETSC_TRUE));
  PetscCall(check_decay_step(comm, data, INFL_OPT_ADAMW, PETSC_FALSE));

  /* AdamW + warm-up + cosine + clipping: the schedule against torch's LambdaLR, step by step */
  PetscCall(adamw_options(&opt));
  {
    int64_t n20[1] = {20};
    double  worst  = 0;
    PetscCall(InflH5ReadArray(file, "/adamw/step_lr", H5T_NATIVE_DOUBLE, 1, n20, NULL, step_lr));
    for (int64_t t = 0; t < 20; t++) worst = PetscMax(worst, fabs(InflTrainLearningRate(&opt, t, 20) - step_lr[t]) / step_lr[t]);
    PetscCall(PetscPrintf(comm, "learning rates of the 20 steps vs torch's LambdaLR: worst relative difference %.3e\n", worst));
    EXPECT(worst <= 1e-14, "the schedule differs from torch's LambdaLR by %g relative", worst);
  }
  PetscCall(InflH5ReadArray(file, "/adamw/mean_loss_after", H5T_NATIVE_DOUBLE, 0, NULL, NULL, &ref_after));
  PetscCall(fresh_model(comm, &model));
  PetscCall(InflModelTrain(model, data, NULL, &opt));
  PetscCall(PetscPrintf(comm, "adamw, 2 epochs vs the fixture (%d ranks):\n", (int)size));
  PetscCall(expect_params(comm, file, "adamw/final", model, opt.lr));
  PetscCall(InflModelEvaluate(model, data, &loss1, &acc));
  PetscCall(PetscPrintf(comm, "mean loss after: %.8f (python %.8f)\n", loss1, ref_after));
  EXPECT(fabs(loss1 - ref_after) <= 1e-4 * ref_after, "adamw: trained mean loss %.8g differs from python's %.8g", loss1, ref_after);
  PetscCall(InflModelDestroy(&model));

  /* stopped after global step 13 (epoch 2, batch 4: past the warm-up, inside the cosine) on fewer ranks, then resumed
   * on all: the checkpoint carries parameters, moments, the step counter and the position in the epoch */
  PetscCall(PetscSNPrintf(ckpt, sizeof(ckpt), "test_train_np%d_resume.safetensors", (int)size));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ckpt));
  if (rank == 0) (void)unlink(partial);
  PetscCallMPI(MPI_Barrier(comm));
  PetscCall(PetscStrncpy(opt.checkpoint, ckpt, sizeof(opt.checkpoint)));
  PetscCall(InflTestTrainStopped(comm, spec, 1000, fresh_model, &opt, 13, &subsize));
  {
    hid_t   pf;
    int64_t step, b0;
    EXPECT(InflFileExists(partial), "no checkpoint %s after the stop", partial);
    PetscCall(InflH5Open(comm, partial, PETSC_FALSE, &pf));
    PetscCall(InflH5GetAttrInt(pf, "/", "step", &step));
    PetscCall(InflH5GetAttrInt(pf, "/", "batch_start", &b0));
    PetscCall(InflH5Close(&pf));
    EXPECT(step == 13 && b0 == 300, "the checkpoint holds step %" PRId64 " at example %" PRId64 ", expected step 13 at example 300", step, b0);
  }
  PetscCall(fresh_model(comm, &model));
  PetscCall(PetscPrintf(comm, "adamw stopped after step 13 on %d rank(s), resumed on %d:\n", (int)subsize, (int)size));
  PetscCall(InflModelTrain(model, data, NULL, &opt));
  PetscCall(expect_params(comm, file, "adamw/final", model, opt.lr));
  PetscCall(InflModelDestroy(&model));
  if (rank == 0) (void)unlink(partial);

  PetscCall(InflH5Close(&file));
  PetscCall(InflDataDestroy(&data));
  PetscCall(PetscPrintf(comm, "test_train: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

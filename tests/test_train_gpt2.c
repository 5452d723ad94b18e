static const char help[] = "GPT-2 training against an independent PyTorch run (tests/nn/make_gpt2_train_reference.py):\n"
                           "a tiny GPT-2 (vocab 64, 16 positions, width 32, 4 heads, 2 blocks) initialized by\n"
                           "InflModelSetUpGPT2 (compared bit for bit with the python draws), 2 epochs of AdamW\n"
                           "(matrices decayed) with warm-up, cosine schedule and clipping on 26 windows of token data,\n"
                           "batch 6 windows, the gradient the mean over the batch's predicted tokens; then the same run\n"
                           "stopped after step 7 on fewer ranks and resumed on all.  The same fixture at every rank count.\n";
#include <infl/gpt2.h>
#include <infl/checkpoint.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "lib/infl_test.h"

static const InflGPT2Config cfg = {.n_embd = 32, .n_layer = 2, .n_head = 4, .vocab_size = 64, .n_positions = 16, .layer_norm_epsilon = 1e-5, .activation = INFL_GPT2_GELU_NEW};
static const char *const blk[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};

/* Tensor k of the Hugging Face state-dict order: name, dims, element count (the layout include/infl/gpt2.h states). */
static void tensor_info(PetscInt k, char name[64], int *ndim, int64_t dims[2], int64_t *numel)
{
  const int64_t C = cfg.n_embd, L = cfg.n_layer;
  if (k == 0 || k == 1) {
    snprintf(name, 64, "%s", k == 0 ? "wte.weight" : "wpe.weight");
    *ndim   = 2;
    dims[0] = k == 0 ? cfg.vocab_size : cfg.n_positions;
    dims[1] = C;
  } else if (k >= 2 + 12 * L) {
    snprintf(name, 64, "%s", k == 2 + 12 * L ? "ln_f.weight" : "ln_f.bias");
    *ndim   = 1;
    dims[0] = C;
  } else {
    static const int64_t d0[12] = {1, 1, 1, 3, 1, 1, 1, 1, 1, 4, 4, 1}, d1[12] = {0, 0, 3, 0, 1, 0, 0, 0, 4, 0, 1, 0};
    PetscInt             j      = (k - 2) % 12;
    snprintf(name, 64, "h.%d.%s", (int)((k - 2) / 12), blk[j]);
    *ndim   = d1[j] ? 2 : 1;
    dims[0] = d0[j] * C;
    dims[1] = d1[j] * C;
  }
  *numel = dims[0] * (*ndim == 2 ? dims[1] : 1);
}

static PetscInt ntensors(void) { return 4 + 12 * cfg.n_layer; }

/* Compare the model's parameters with /group/NAME of the fixture, tensor by tensor.  The key third of each
 * attn.c_attn.bias (entries C..2C) is reported apart: its exact gradient is zero (adding a constant to a query's
 * scores does not change their softmax), so what AdamW does with it is rounding noise normalized by sqrt(v) + eps,
 * the same in no two implementations. */
static PetscErrorCode compare(MPI_Comm comm, hid_t file, const char group[], InflModel model, PetscBool verbose, double *rel, double *maxabs, double *keybias)
{
  float  *p;
  int64_t off = 0, n;
  double  d2 = 0, r2 = 0;

  PetscFunctionBegin;
  *maxabs = *keybias = 0;
  PetscCall(InflModelGetParameters(model, &n, &p, NULL));
  for (PetscInt k = 0; k < ntensors(); k++) {
    char    name[64], path[128];
    int     ndim;
    int64_t dims[2], numel;
    float  *ref;
    double  tmax = 0;
    tensor_info(k, name, &ndim, dims, &numel);
    PetscCall(PetscSNPrintf(path, sizeof(path), "/%s/%s", group, name));
    PetscCall(PetscMalloc1(numel, &ref));
    PetscCall(InflH5ReadArray(file, path, H5T_NATIVE_FLOAT, ndim, dims, NULL, ref));
    for (int64_t i = 0; i < numel; i++) {
      double    d   = (double)p[off + i] - (double)ref[i];
      PetscBool key = strstr(name, "c_attn.bias") && i >= cfg.n_embd && i < 2 * cfg.n_embd ? PETSC_TRUE : PETSC_FALSE;
      if (key) {
        *keybias = PetscMax(*keybias, fabs(d));
        continue;
      }
      d2 += d * d;
      r2 += (double)ref[i] * ref[i];
      tmax = PetscMax(tmax, fabs(d));
    }
    if (verbose) PetscCall(PetscPrintf(comm, "  %-28s max abs %.3e\n", path, tmax));
    *maxabs = PetscMax(*maxabs, tmax);
    off += numel;
    PetscCall(PetscFree(ref));
  }
  EXPECT(off == n, "the state-dict layout has %" PRId64 " parameters but the model's slab %" PRId64, off, n);
  *rel = sqrt(d2) / sqrt(r2);
  PetscFunctionReturn(0);
}

static PetscErrorCode fresh_model(MPI_Comm comm, InflModel *model)
{
  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, model));
  PetscCall(InflModelSetUpGPT2(*model, &cfg, 5));
  PetscFunctionReturn(0);
}

static PetscErrorCode options(InflTrainOptions *opt)
{
  PetscFunctionBegin;
  *opt = (InflTrainOptions){.optimizer = INFL_OPT_ADAMW};
  PetscCall(InflTrainOptionsSetDefaults(opt));
  opt->epochs       = 2;
  opt->batch        = 6;
  opt->lr           = 3e-3;
  opt->beta2        = 0.95;
  opt->weight_decay = 0.1;
  opt->schedule     = INFL_SCHEDULE_COSINE;
  opt->warmup       = 3;
  opt->lr_min       = 3e-4;
  opt->clip         = 2.0;
  opt->seed         = 5;
  PetscFunctionReturn(0);
}

/* The trained parameters against the fixture.  Both sides are float32 and sum in different orders (torch one window
 * at a time, infl the windows of a rank in one GEMM, then the allreduce): measured 4e-7 relative and 2e-7 in the
 * worst entry at 1-4 ranks, against AdamW steps of about lr = 3e-3 per step; the limits are 1e-5 relative and 1e-3 lr,
 * so a wrong token count in the mean, batch, window, permutation, decay mask, schedule or clipping factor shows far
 * above them.  The key biases (see compare) can only be bounded by the sum of the steps' learning rates. */
static PetscErrorCode expect_final(MPI_Comm comm, hid_t file, InflModel model, const double step_lr[], PetscInt T, PetscBool verbose)
{
  double rel, mx, kb, sumlr = 0;

  PetscFunctionBegin;
  for (PetscInt t = 0; t < T; t++) sumlr += step_lr[t];
  PetscCall(compare(comm, file, "final", model, verbose, &rel, &mx, &kb));
  PetscCall(PetscPrintf(comm, "trained vs the PyTorch reference: %.3e relative, %.3e max abs (limits 1e-5, %.1e); key biases %.3e (limit the sum of the learning rates %.3e)\n", rel, mx, 1e-3 * 3e-3, kb, sumlr));
  EXPECT(rel <= 1e-5, "trained parameters differ from the PyTorch reference by %g relative (limit 1e-5)", rel);
  EXPECT(mx <= 1e-3 * 3e-3, "trained parameters differ from the PyTorch reference by %g in some entry (limit 3e-6)", mx);
  EXPECT(kb <= sumlr, "the key biases moved %g away from the reference, more than AdamW can move them (%g)", kb, sumlr);
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
  double           rel, mx, kb, step_lr[10];
  int64_t          N, wl[26], ten[1] = {10}, n26[1] = {26};
  PetscMPIInt      size, rank, subsize = 1;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  src = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_USER, "set INFL_SOURCE_DIR to the source tree (ctest does)");
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/nn/gpt2_train_reference.h5", src));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/tests/nn/gpt2_train_tokens.h5", src));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5ReadArray(file, "/step_lr", H5T_NATIVE_DOUBLE, 1, ten, NULL, step_lr));
  PetscCall(InflH5ReadArray(file, "/window_lengths", H5T_NATIVE_INT64, 1, n26, NULL, wl));

  /* the data: the same windows as the python cut */
  PetscCall(InflDataOpen(comm, spec, 0, &data));
  PetscCall(fresh_model(comm, &model));
  PetscCall(InflModelCheckData(model, data));
  PetscCall(InflDataGetSizes(data, &N, NULL, NULL));
  EXPECT(N == 26, "%" PRId64 " windows, the reference has 26", N);
  {
    int32_t tok[16];
    int64_t off[2];
    for (int64_t i = 0; i < N; i++) {
      PetscCall(InflDataGetSequences(data, 1, &i, tok, off));
      EXPECT(off[1] == wl[i], "window %" PRId64 " has %" PRId64 " tokens, the reference %" PRId64, i, off[1], wl[i]);
    }
  }

  /* initialization: the same Philox normals in python and C, so the same floats */
  PetscCall(compare(comm, file, "init", model, PETSC_FALSE, &rel, &mx, &kb));
  PetscCall(PetscPrintf(comm, "initialization vs the python draws (%d ranks): max abs difference %g\n", (int)size, PetscMax(mx, kb)));
  EXPECT(mx == 0 && kb == 0, "initial parameters differ from the python initialization by %g", PetscMax(mx, kb));

  /* the decay mask of GPT-2: wte, wpe and the four Conv1D weights of each block (nanoGPT's dim >= 2 rule) */
  {
    PetscInt        nr, k = 0;
    InflParamRange *r;
    int64_t         off = 0;
    PetscCall(InflModelGetMatrixRanges(model, &nr, &r));
    EXPECT(nr == 2 + 4 * cfg.n_layer, "%d matrix ranges, expected %d", (int)nr, (int)(2 + 4 * cfg.n_layer));
    for (PetscInt t = 0; t < ntensors(); t++) {
      char    name[64];
      int     ndim;
      int64_t dims[2], numel;
      tensor_info(t, name, &ndim, dims, &numel);
      if (ndim == 2) {
        EXPECT(r[k].start == off && r[k].count == numel, "matrix range %d is [%" PRId64 ", +%" PRId64 "), expected tensor %s at [%" PRId64 ", +%" PRId64 ")", (int)k, r[k].start, r[k].count, name, off, numel);
        k++;
      }
      off += numel;
    }
    PetscCall(InflModelRestoreMatrixRanges(model, &nr, &r));
  }

  /* the schedule against torch's LambdaLR, step by step */
  PetscCall(options(&opt));
  {
    double worst = 0;
    for (int64_t t = 0; t < 10; t++) worst = PetscMax(worst, fabs(InflTrainLearningRate(&opt, t, 10) - step_lr[t]) / step_lr[t]);
    PetscCall(PetscPrintf(comm, "learning rates of the 10 steps vs torch's LambdaLR: worst relative difference %.3e\n", worst));
    EXPECT(worst <= 1e-14, "the schedule differs from torch's LambdaLR by %g relative", worst);
  }

  /* 2 epochs uninterrupted */
  PetscCall(PetscPrintf(comm, "adamw, 2 epochs (%d ranks):\n", (int)size));
  PetscCall(InflModelTrain(model, data, NULL, &opt));
  PetscCall(expect_final(comm, file, model, step_lr, 10, PETSC_TRUE));
  PetscCall(InflModelDestroy(&model));

  /* stopped after global step 7 (epoch 2, its third batch: past the warm-up, inside the cosine) on fewer ranks,
   * then resumed on all */
  PetscCall(PetscSNPrintf(ckpt, sizeof(ckpt), "test_train_gpt2_np%d_resume", (int)size));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ckpt));
  if (rank == 0) (void)unlink(partial);
  PetscCallMPI(MPI_Barrier(comm));
  PetscCall(PetscStrncpy(opt.checkpoint, ckpt, sizeof(opt.checkpoint)));
  PetscCall(InflTestTrainStopped(comm, spec, 0, fresh_model, &opt, 7, &subsize));
  {
    hid_t   pf;
    int64_t step, b0, e;
    EXPECT(InflFileExists(partial), "no checkpoint %s after the stop", partial);
    PetscCall(InflH5Open(comm, partial, PETSC_FALSE, &pf));
    PetscCall(InflH5GetAttrInt(pf, "/", "step", &step));
    PetscCall(InflH5GetAttrInt(pf, "/", "epoch", &e));
    PetscCall(InflH5GetAttrInt(pf, "/", "batch_start", &b0));
    PetscCall(InflH5Close(&pf));
    EXPECT(step == 7 && e == 1 && b0 == 12, "the checkpoint holds step %" PRId64 " at epoch %" PRId64 " window %" PRId64 ", expected step 7 at epoch 1 (0-based) window 12", step, e, b0);
  }
  PetscCall(fresh_model(comm, &model));
  PetscCall(PetscPrintf(comm, "adamw stopped after step 7 on %d rank(s), resumed on %d:\n", (int)subsize, (int)size));
  PetscCall(InflModelTrain(model, data, NULL, &opt));
  PetscCall(expect_final(comm, file, model, step_lr, 10, PETSC_FALSE));
  PetscCall(InflModelDestroy(&model));
  if (rank == 0) (void)unlink(partial);

  PetscCall(InflH5Close(&file));
  PetscCall(InflDataDestroy(&data));
  PetscCall(PetscPrintf(comm, "test_train_gpt2: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

static const char help[] = "Per-example captures (a, Ds, loss) do not depend on the batch size: 37 Fashion-MNIST examples in one\n"
                           "batch vs batches of 1, 5 and 16, in single (1e-6 relative) and double precision (1e-12).\n"
                           "An MLP capture holds one row per example (T == B, offsets 0..B); a capture of longer sequences is\n"
                           "refused by the rank-one stages.  The data-vs-model check names the data set, the value and the fix.\n"
                           "A chunk from -mem_limit leaves room for the model (its double copy too in double precision).\n";
#include "io/check.h"
#include <infl/model.h>
#include <math.h>
#define NX 37

/* max over rows of max|u - v| / max|v| of the row (rows of width w) */
static double row_rel(PetscInt rows, PetscInt w, const double u[], const double v[])
{
  double worst = 0;
  for (PetscInt r = 0; r < rows; r++) {
    double d = 0, m = 0;
    for (PetscInt j = 0; j < w; j++) {
      d = PetscMax(d, fabs(u[r * w + j] - v[r * w + j]));
      m = PetscMax(m, fabs(v[r * w + j]));
    }
    if (d > 0) worst = PetscMax(worst, d / PetscMax(m, 1e-300));
  }
  return worst;
}

static PetscErrorCode check_precision(MPI_Comm comm, InflModel model, InflPrecision prec, const float x[], const int64_t y[])
{
  const PetscInt sizes[3] = {1, 5, 16};
  /* float32: layer inputs a to 1e-6; Ds and the loss inherit the rounding of the logits (|z| up to ~20 here)
   * amplified by the softmax of confident examples (p_j relative error ~ |dz|), so 1e-5 as for the reference */
  const double   tol      = prec == INFL_PREC_DOUBLE ? 1e-12 : 1e-6, tol_ds = prec == INFL_PREC_DOUBLE ? 1e-12 : 1e-5;
  const char    *pname    = prec == INFL_PREC_DOUBLE ? "double" : "single";
  InflCapture   *full, *part;
  PetscInt       L, din;
  double        *ref_a[8], *ref_ds[8], ref_loss[NX], *ba, *bds;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(model, prec));
  PetscCall(InflModelGetLayers(model, &L, NULL));
  PetscCall(InflModelGetSizes(model, &din, NULL));
  PetscCall(InflCaptureCreate(model, NX, &full));
  PetscCall(InflModelCapture(model, NX, x, y, full));
  PetscCall(PetscMalloc2((size_t)NX * (din + 1), &ba, (size_t)NX * (din + 1), &bds));
  for (PetscInt l = 0; l < L; l++) {
    const double *a, *ds;
    PetscCall(PetscMalloc2((size_t)NX * (full->din[l] + 1), &ref_a[l], (size_t)NX * full->dout[l], &ref_ds[l]));
    InflCaptureGetDouble(full, l, ba, bds, &a, &ds);
    PetscCall(PetscArraycpy(ref_a[l], a, (size_t)NX * (full->din[l] + 1)));
    PetscCall(PetscArraycpy(ref_ds[l], ds, (size_t)NX * full->dout[l]));
  }
  PetscCall(PetscArraycpy(ref_loss, full->loss, NX));
  /* an MLP example is a sequence of one row */
  EXPECT(full->B == NX && full->T == NX && full->Bmax == NX && full->Tmax == NX, "%s: capture of %d examples has B %d, T %d, Bmax %d, Tmax %d; expected all %d", pname, NX, (int)full->B, (int)full->T, (int)full->Bmax, (int)full->Tmax, NX);
  for (PetscInt b = 0; b <= NX; b++) EXPECT(full->offsets[b] == b, "%s: offsets[%d] = %" PRId64 ", expected %d", pname, (int)b, full->offsets[b], (int)b);
  PetscCall(InflCaptureCheckRankOne(full, "test"));
  for (int s = 0; s < 3; s++) {
    PetscInt  bs = sizes[s];
    double    worst_a = 0, worst_ds = 0, worst_loss = 0;
    PetscBool bitwise = PETSC_TRUE;
    PetscCall(InflCaptureCreate(model, bs, &part));
    for (PetscInt n0 = 0; n0 < NX; n0 += bs) {
      PetscInt nb = PetscMin(bs, NX - n0);
      PetscCall(InflModelCapture(model, nb, x + (int64_t)n0 * din, y + n0, part));
      for (PetscInt l = 0; l < L; l++) {
        const double *a, *ds;
        PetscInt      wa = part->din[l] + 1, wd = part->dout[l];
        double        ea, ed;
        InflCaptureGetDouble(part, l, ba, bds, &a, &ds);
        ea = row_rel(nb, wa, a, ref_a[l] + (int64_t)n0 * wa);
        ed = row_rel(nb, wd, ds, ref_ds[l] + (int64_t)n0 * wd);
        if (ea > 0 || ed > 0) bitwise = PETSC_FALSE;
        worst_a  = PetscMax(worst_a, ea);
        worst_ds = PetscMax(worst_ds, ed);
      }
      for (PetscInt n = 0; n < nb; n++) {
        double e = fabs(part->loss[n] - ref_loss[n0 + n]) / ref_loss[n0 + n];
        if (e > 0) bitwise = PETSC_FALSE;
        worst_loss = PetscMax(worst_loss, e);
      }
    }
    PetscCall(PetscPrintf(comm, "%s: batches of %2d vs one batch of %d: max rel a %.2e, Ds %.2e, loss %.2e%s\n", pname, (int)bs, NX, worst_a, worst_ds, worst_loss, bitwise ? " (bitwise equal)" : ""));
    EXPECT(worst_a <= tol && worst_ds <= tol_ds && worst_loss <= tol_ds, "%s: per-example captures depend on the batch size (%d vs %d): a %g (limit %g), Ds %g, loss %g (limit %g)", pname, (int)bs, NX, worst_a, tol, worst_ds, worst_loss, tol_ds);
    PetscCall(InflCaptureDestroy(&part));
  }
  for (PetscInt l = 0; l < L; l++) PetscCall(PetscFree2(ref_a[l], ref_ds[l]));
  PetscCall(PetscFree2(ba, bds));
  PetscCall(InflCaptureDestroy(&full));
  PetscFunctionReturn(0);
}

/* A capture whose 2 sequences own 3 rows (as a language model's would), or whose capacity is more rows than
 * sequences: the rank-one stages refuse it, naming the stage and the sizes; with one row per example it passes. */
static PetscErrorCode check_sequences_refused(MPI_Comm comm, InflModel model, const float x[], const int64_t y[])
{
  InflCapture *cap;

  PetscFunctionBegin;
  PetscCall(InflCaptureCreate(model, 3, &cap));
  PetscCall(InflModelCapture(model, 3, x, y, cap));
  PetscCall(InflCaptureCheckRankOne(cap, "test"));
  cap->B          = 2; /* sequence 0 owns rows 0 and 1, sequence 1 row 2 */
  cap->offsets[1] = 2;
  cap->offsets[2] = 3;
  EXPECT_FAIL(comm, InflCaptureCheckRankOne(cap, "infl test stage"), "infl test stage: sequences of more than one token (3 rows for 2 sequences): not supported by this stage yet", "sequences");
  cap->B          = 3; /* one row per example again, but a capacity of 2 rows per sequence (a model of longer sequences) */
  cap->offsets[1] = 1;
  cap->offsets[2] = 2;
  cap->Tmax = 6;
  EXPECT_FAIL(comm, InflCaptureCheckRankOne(cap, "infl test stage"), "infl test stage: sequences of more than one token (the model's captures hold up to 6 rows for 3 sequences)", "capacity");
  cap->Tmax = 3;
  PetscCall(InflCaptureCheckRankOne(cap, "test"));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscPrintf(comm, "a capture of 2 sequences in 3 rows is refused by the rank-one stages\n"));
  PetscFunctionReturn(0);
}

/* InflModelCheckData: the first 1000 Fashion-MNIST training images (784 features, labels 0..9) pass against a
 * 784-...-10 model; a model of another input size or of fewer classes fails on every rank with the data set named. */
static PetscErrorCode check_data_check(MPI_Comm comm, InflModel model, InflData data)
{
  InflModel      other;
  const PetscInt narrow[3] = {7, 5, 10}, few[3] = {784, 5, 3};
  const char    *type;

  PetscFunctionBegin;
  PetscCall(InflModelGetType(model, &type));
  EXPECT(!strcmp(type, "mlp"), "model type \"%s\", expected mlp", type);
  PetscCall(InflModelCheckData(model, data));
  PetscCall(InflModelCreate(comm, &other));
  PetscCall(InflModelSetUpMLP(other, 3, narrow, INFL_ACT_RELU, 1));
  EXPECT_FAIL(comm, InflModelCheckData(other, data), "data idx:/usr/share/datasets/fashion-mnist/train has 784 features per example but the model's input dimension is 7", "wrong width");
  PetscCall(InflDataSetName(data, "query"));
  EXPECT_FAIL(comm, InflModelCheckData(other, data), "query data idx:/usr/share/datasets/fashion-mnist/train has 784 features", "wrong width, named data");
  PetscCall(InflModelSetUpMLP(other, 3, few, INFL_ACT_RELU, 1));
  EXPECT_FAIL(comm, InflModelCheckData(other, data), "is not below the model's 3 classes", "labels above the classes");
  EXPECT_FAIL(comm, InflModelCheckData(other, data), "query data idx:/usr/share/datasets/fashion-mnist/train: label ", "labels above the classes, named data");
  PetscCall(InflDataSetName(data, ""));
  PetscCall(InflModelDestroy(&other));
  PetscCall(PetscPrintf(comm, "data check: passes for the matching model; wrong width and labels above the classes fail on every rank\n"));
  PetscFunctionReturn(0);
}

/* -mem_limit counts the model beside a stage's resident bytes: its float32 parameters and gradients, and in double
 * precision the double copy of its parameters (InflModelParameterBytes, added by InflModelGetChunk).  A 784-1024-1024-10
 * MLP (1,863,690 parameters: 14.2 MiB, 28.4 MiB in double), -mem_limit 128M, 1 MiB per example: the chunk is what is
 * left after the libraries' 64 MiB and the model, counted here from the layer sizes. */
static PetscErrorCode check_chunk_counts_model(MPI_Comm comm)
{
  const PetscInt dims[4] = {784, 1024, 1024, 10};
  const double   MiB     = 1048576.0;
  int64_t        n       = 0;
  InflModel      model;

  PetscFunctionBegin;
  for (int l = 0; l < 3; l++) n += (int64_t)dims[l + 1] * (dims[l] + 1);
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, 4, dims, INFL_ACT_RELU, 3));
  PetscCall(PetscOptionsSetValue(NULL, "-mem_limit", "128M"));
  for (int dbl = 0; dbl < 2; dbl++) {
    PetscInt chunk  = 1000;
    int64_t  expect = (int64_t)((128 * MiB - 64 * MiB - (double)n * (dbl ? 16 : 8)) / MiB);
    PetscCall(InflModelSetPrecision(model, dbl ? INFL_PREC_DOUBLE : INFL_PREC_SINGLE));
    PetscCall(InflModelGetChunk(model, comm, "test", PETSC_FALSE, 1000, 0, (size_t)MiB, &chunk));
    PetscCall(PetscPrintf(comm, "-mem_limit 128M, %s precision, 1 MiB per example: chunk %d (expected %d)\n", dbl ? "double" : "single", (int)chunk, (int)expect));
    PetscCheck(chunk == expect, comm, PETSC_ERR_PLIB, "the chunk under -mem_limit 128M in %s precision is %d, but the libraries' 64 MiB and the model's %.1f MiB leave room for %d examples of 1 MiB", dbl ? "double" : "single", (int)chunk, (double)n * (dbl ? 16 : 8) / MiB, (int)expect);
  }
  PetscCall(PetscOptionsClearValue(NULL, "-mem_limit"));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  InflModel   model;
  InflData    data;
  const char *src;
  char        mpath[PETSC_MAX_PATH_LEN];
  float       x[NX * 784];
  int64_t     y[NX], idx[NX];
  PetscMPIInt rank;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  src = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_USER, "set INFL_SOURCE_DIR to the source tree (ctest does)");
  PetscCall(PetscSNPrintf(mpath, sizeof(mpath), "%s/tests/ref/mlp_small.safetensors", src));
  PetscCall(InflDataOpen(comm, "idx:/usr/share/datasets/fashion-mnist/train", 1000, &data));
  /* each rank its own 37 examples */
  for (PetscInt i = 0; i < NX; i++) idx[i] = (int64_t)rank * NX + i;
  PetscCall(InflDataGetExamples(data, NX, idx, x, y));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, mpath));
  PetscCall(check_precision(comm, model, INFL_PREC_SINGLE, x, y));
  PetscCall(check_precision(comm, model, INFL_PREC_DOUBLE, x, y));
  /* a random tanh model as well (no zeros from relu) */
  {
    const PetscInt dims[4] = {784, 33, 17, 10};
    PetscCall(InflModelSetUpMLP(model, 4, dims, INFL_ACT_TANH, 8));
    PetscCall(check_precision(comm, model, INFL_PREC_SINGLE, x, y));
    PetscCall(check_precision(comm, model, INFL_PREC_DOUBLE, x, y));
  }
  PetscCall(check_sequences_refused(comm, model, x, y));
  PetscCall(check_data_check(comm, model, data));
  PetscCall(check_chunk_counts_model(comm));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&data));
  PetscCall(PetscPrintf(comm, "test_nn_batch: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

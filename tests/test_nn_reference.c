static const char help[] = "The MLP against the PyTorch reference (tests/ref/mlp_small_ref.h5): logits, per-example loss and\n"
                           "per-example gradients in double (1e-10) and single precision (1e-5, including two confidently\n"
                           "classified examples), captures vs per-example gradients vs the batch gradient, Philox, true-Fisher labels.\n";
#include <infl/model.h>
#include <math.h>
#include "lib/infl_test.h"

#define NEX 4 /* /nn/example_indices */

typedef struct {
  int64_t  idx[NEX], y[NEX];
  double   logits[NEX * 10], loss[NEX], p_true[NEX];
  double  *grad[8]; /* per layer (NEX, dout, din+1): [dW | db] of the reference */
  float   *x;       /* (NEX, 784) */
  PetscInt L;
  int64_t  nparams;
} Ref;

static double rel_norm(int64_t n, const double a[], const double b[])
{
  double d2 = 0, b2 = 0;
  for (int64_t i = 0; i < n; i++) {
    d2 += (a[i] - b[i]) * (a[i] - b[i]);
    b2 += b[i] * b[i];
  }
  return sqrt(d2) / PetscMax(sqrt(b2), 1e-300);
}

static PetscErrorCode read_reference(MPI_Comm comm, const char path[], InflModel model, InflData data, Ref *r)
{
  hid_t       file;
  InflLinear *ly;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, &r->L, &ly));
  PetscCall(InflModelGetParameters(model, &r->nparams, NULL, NULL));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  {
    const int64_t d1[1] = {NEX}, d2[2] = {NEX, 10};
    PetscCall(InflH5ReadArray(file, "/nn/example_indices", H5T_NATIVE_INT64, 1, d1, NULL, r->idx));
    PetscCall(InflH5ReadArray(file, "/nn/logits", H5T_NATIVE_DOUBLE, 2, d2, NULL, r->logits));
    PetscCall(InflH5ReadArray(file, "/nn/loss", H5T_NATIVE_DOUBLE, 1, d1, NULL, r->loss));
    PetscCall(InflH5ReadArray(file, "/nn/p_true", H5T_NATIVE_DOUBLE, 1, d1, NULL, r->p_true));
  }
  for (PetscInt l = 0; l < r->L; l++) {
    PetscInt din = ly[l].din, dout = ly[l].dout;
    double  *w, *b;
    char     name[128];
    int64_t  dw[3] = {NEX, dout, din}, db[2] = {NEX, dout};
    PetscCall(PetscMalloc1((size_t)NEX * dout * (din + 1), &r->grad[l]));
    PetscCall(PetscMalloc2((size_t)NEX * dout * din, &w, (size_t)NEX * dout, &b));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/nn/grad/layers.%d.weight", (int)l));
    PetscCall(InflH5ReadArray(file, name, H5T_NATIVE_DOUBLE, 3, dw, NULL, w));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/nn/grad/layers.%d.bias", (int)l));
    PetscCall(InflH5ReadArray(file, name, H5T_NATIVE_DOUBLE, 2, db, NULL, b));
    for (PetscInt n = 0; n < NEX; n++)
      for (PetscInt i = 0; i < dout; i++) {
        for (PetscInt j = 0; j < din; j++) r->grad[l][((int64_t)n * dout + i) * (din + 1) + j] = w[((int64_t)n * dout + i) * din + j];
        r->grad[l][((int64_t)n * dout + i) * (din + 1) + din] = b[n * dout + i];
      }
    PetscCall(PetscFree2(w, b));
  }
  PetscCall(InflH5Close(&file));
  PetscCall(PetscMalloc1(NEX * 784, &r->x));
  PetscCall(InflDataGetExamples(data, NEX, r->idx, r->x, r->y));
  PetscFunctionReturn(0);
}

/* Per-example gradient of layer l of example n from a capture: (dout, din+1) = Ds a^T, in double. */
static void capture_grad(const InflCapture *cap, PetscInt l, PetscInt n, double g[])
{
  PetscInt din = cap->din[l], dout = cap->dout[l];
  for (PetscInt i = 0; i < dout; i++)
    for (PetscInt j = 0; j <= din; j++) {
      double ds = cap->prec == INFL_PREC_DOUBLE ? cap->ds64[l][n * dout + i] : (double)cap->ds32[l][n * dout + i];
      double a  = cap->prec == INFL_PREC_DOUBLE ? cap->a64[l][n * (din + 1) + j] : (double)cap->a32[l][n * (din + 1) + j];
      g[i * (din + 1) + j] = ds * a;
    }
}

/* Layer l of a flat per-example gradient (slab layout W then b) as (dout, din+1). */
static void flat_to_layer(const double flat[], const InflLinear *ly, const float *params, double g[])
{
  const double *w = flat + (ly->W - params), *b = flat + (ly->b - params);
  for (PetscInt i = 0; i < ly->dout; i++) {
    for (PetscInt j = 0; j < ly->din; j++) g[i * (ly->din + 1) + j] = w[i * ly->din + j];
    g[i * (ly->din + 1) + ly->din] = b[i];
  }
}

static PetscErrorCode test_double(MPI_Comm comm, InflModel model, Ref *r)
{
  InflCapture *cap;
  InflLinear  *ly;
  float       *params, *grads, z32[NEX * 10];
  double      *g, *gl, *sum, worst = 0, loss_sum, ref_loss_sum = 0;
  PetscInt     L = r->L, correct, ref_correct = 0;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflModelGetLayers(model, NULL, &ly));
  PetscCall(InflCaptureCreate(model, NEX, &cap));
  PetscCall(InflModelCapture(model, NEX, r->x, r->y, cap));
  PetscCall(PetscMalloc3((size_t)NEX * r->nparams, &g, 785 * 24, &gl, r->nparams, &sum));
  /* loss */
  for (PetscInt n = 0; n < NEX; n++) {
    double e = fabs(cap->loss[n] - r->loss[n]) / r->loss[n];
    EXPECT(e <= 1e-10, "double: loss of example %" PRId64 " is %.17g, reference %.17g (rel %g)", r->idx[n], cap->loss[n], r->loss[n], e);
    worst = PetscMax(worst, e);
  }
  PetscCall(PetscPrintf(comm, "double: max rel loss error %.2e\n", worst));
  /* logits from the captured input of the last layer (double), and InflModelForward (float output) */
  worst = 0;
  for (PetscInt n = 0; n < NEX; n++) {
    const InflLinear *o = &ly[L - 1];
    double            zmax = 0, e = 0, e32 = 0;
    for (PetscInt c = 0; c < 10; c++) zmax = PetscMax(zmax, fabs(r->logits[n * 10 + c]));
    for (PetscInt c = 0; c < 10; c++) {
      double z = o->b[c];
      for (PetscInt j = 0; j < o->din; j++) z += (double)o->W[c * o->din + j] * cap->a64[L - 1][n * (o->din + 1) + j];
      e = PetscMax(e, fabs(z - r->logits[n * 10 + c]) / zmax);
    }
    EXPECT(e <= 1e-10, "double: logits of example %" PRId64 " from the captured last-layer input differ by %g relative", r->idx[n], e);
    worst = PetscMax(worst, e);
    PetscCall(InflModelForward(model, 1, r->x + n * 784, z32 + n * 10));
    for (PetscInt c = 0; c < 10; c++) e32 = PetscMax(e32, fabs((double)z32[n * 10 + c] - r->logits[n * 10 + c]) / zmax);
    EXPECT(e32 <= 1e-7, "double: InflModelForward logits of example %" PRId64 " differ by %g relative (float rounding of double logits expected)", r->idx[n], e32);
  }
  PetscCall(PetscPrintf(comm, "double: max rel logit error %.2e\n", worst));
  /* per-example gradients: InflModelPerExampleGradients vs reference, and vs the capture's Ds a^T (same numbers) */
  PetscCall(InflModelPerExampleGradients(model, NEX, r->x, r->y, g));
  PetscCall(InflModelGetParameters(model, NULL, &params, &grads));
  worst = 0;
  for (PetscInt n = 0; n < NEX; n++)
    for (PetscInt l = 0; l < L; l++) {
      int64_t sz = (int64_t)ly[l].dout * (ly[l].din + 1);
      double  e, *gc;
      flat_to_layer(g + n * r->nparams, &ly[l], params, gl);
      e = rel_norm(sz, gl, r->grad[l] + n * sz);
      EXPECT(e <= 1e-10, "double: per-example gradient of example %" PRId64 " layer %d differs from the reference by %g relative", r->idx[n], (int)l, e);
      worst = PetscMax(worst, e);
      PetscCall(PetscMalloc1(sz, &gc));
      capture_grad(cap, l, n, gc);
      for (int64_t i = 0; i < sz; i++) EXPECT(gc[i] == gl[i], "double: capture Ds a^T and InflModelPerExampleGradients differ (example %" PRId64 " layer %d entry %" PRId64 ")", r->idx[n], (int)l, i);
      PetscCall(PetscFree(gc));
    }
  PetscCall(PetscPrintf(comm, "double: max rel per-example gradient error (per example and layer) %.2e\n", worst));
  /* the batch gradient is the sum of the per-example gradients (the slab is float: rounding 6e-8) */
  for (int64_t i = 0; i < r->nparams; i++) {
    sum[i] = 0;
    for (PetscInt n = 0; n < NEX; n++) sum[i] += g[n * r->nparams + i];
  }
  for (PetscInt n = 0; n < NEX; n++) {
    ref_loss_sum += r->loss[n];
    PetscInt am = 0;
    for (PetscInt c = 1; c < 10; c++) if (r->logits[n * 10 + c] > r->logits[n * 10 + am]) am = c;
    ref_correct += am == r->y[n];
  }
  PetscCall(InflModelZeroGrad(model));
  PetscCall(InflModelLossBackward(model, NEX, r->x, r->y, &loss_sum, &correct));
  PetscCall(InflModelGetParameters(model, NULL, NULL, &grads));
  for (int64_t i = 0; i < r->nparams; i++) EXPECT(fabs((double)grads[i] - sum[i]) <= 1e-7 * fabs(sum[i]), "double: batch gradient entry %" PRId64 " is %.9g, sum of per-example gradients %.17g", i, (double)grads[i], sum[i]);
  EXPECT(fabs(loss_sum - ref_loss_sum) <= 1e-10 * ref_loss_sum, "double: batch loss %.17g, reference sum %.17g", loss_sum, ref_loss_sum);
  EXPECT(correct == ref_correct, "double: %d correct, reference %d", (int)correct, (int)ref_correct);
  /* the gradient is ADDED to the slab */
  PetscCall(InflModelLossBackward(model, NEX, r->x, r->y, NULL, NULL));
  for (int64_t i = 0; i < r->nparams; i++) EXPECT(fabs((double)grads[i] - 2 * sum[i]) <= 2e-7 * fabs(sum[i]), "double: a second LossBackward must add to the gradient (entry %" PRId64 ")", i);
  PetscCall(InflModelZeroGrad(model));
  PetscCall(PetscFree3(g, gl, sum));
  PetscCall(InflCaptureDestroy(&cap));
  PetscFunctionReturn(0);
}

/* dLoss/dlogits from float32 logits computed the naive way, entirely in float: p = softmax(z), p_y - 1. */
static void naive_dz(const float z[], int64_t y, float dz[])
{
  float m = z[0], Z = 0;
  for (int c = 1; c < 10; c++) m = PetscMax(m, z[c]);
  for (int c = 0; c < 10; c++) Z += expf(z[c] - m);
  for (int c = 0; c < 10; c++) dz[c] = expf(z[c] - m) / Z - (c == y ? 1.0f : 0.0f);
}

static PetscErrorCode test_single(MPI_Comm comm, InflModel model, Ref *r)
{
  InflCapture *cap;
  InflLinear  *ly;
  float       *grads, z32[NEX * 10];
  double      *gc, *g64, worst = 0, worst_conf = 0, naive_min_conf = 1e300, stable_conf = 0, loss_sum;
  PetscInt     L = r->L;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(model, INFL_PREC_SINGLE));
  PetscCall(InflModelGetLayers(model, NULL, &ly));
  PetscCall(InflCaptureCreate(model, NEX, &cap));
  PetscCall(InflModelCapture(model, NEX, r->x, r->y, cap));
  PetscCall(InflModelForward(model, NEX, r->x, z32));
  PetscCall(PetscMalloc2(785 * 24, &gc, r->nparams, &g64));
  for (PetscInt n = 0; n < NEX; n++) {
    double zmax = 0, ez = 0, el = fabs(cap->loss[n] - r->loss[n]) / r->loss[n];
    for (PetscInt c = 0; c < 10; c++) zmax = PetscMax(zmax, fabs(r->logits[n * 10 + c]));
    for (PetscInt c = 0; c < 10; c++) ez = PetscMax(ez, fabs((double)z32[n * 10 + c] - r->logits[n * 10 + c]) / zmax);
    PetscCall(PetscPrintf(comm, "single: example %3" PRId64 " p_y %.5f: logits rel %.2e, loss rel %.2e, gradient rel per layer", r->idx[n], r->p_true[n], ez, el));
    EXPECT(ez <= 1e-5, "single: logits of example %" PRId64 " differ from the float64 reference by %g relative (limit 1e-5)", r->idx[n], ez);
    EXPECT(el <= 1e-5, "single: loss of example %" PRId64 " (p_y %g) is %.9g, reference %.17g: rel %g (limit 1e-5)", r->idx[n], r->p_true[n], cap->loss[n], r->loss[n], el);
    for (PetscInt l = 0; l < L; l++) {
      int64_t sz = (int64_t)ly[l].dout * (ly[l].din + 1);
      double  e;
      capture_grad(cap, l, n, gc);
      e = rel_norm(sz, gc, r->grad[l] + n * sz);
      PetscCall(PetscPrintf(comm, " %.2e", e));
      EXPECT(e <= 1e-5, "single: per-example gradient of example %" PRId64 " (p_y %g) layer %d: ||g32 - g64|| / ||g64|| = %g (limit 1e-5)", r->idx[n], r->p_true[n], (int)l, e);
      worst = PetscMax(worst, e);
      if (r->p_true[n] > 0.999) worst_conf = PetscMax(worst_conf, e);
    }
    PetscCall(PetscPrintf(comm, "\n"));
    if (r->p_true[n] > 0.999) {
      /* teeth: the naive p_y - 1 in float, from the same float logits, on the last layer's gradient (dz a^T) */
      int64_t sz = (int64_t)ly[L - 1].dout * (ly[L - 1].din + 1);
      float   dz[10];
      double  e_naive;
      naive_dz(z32 + n * 10, r->y[n], dz);
      for (PetscInt i = 0; i < ly[L - 1].dout; i++)
        for (PetscInt j = 0; j <= ly[L - 1].din; j++) gc[i * (ly[L - 1].din + 1) + j] = (double)dz[i] * (double)cap->a32[L - 1][n * (ly[L - 1].din + 1) + j];
      e_naive = rel_norm(sz, gc, r->grad[L - 1] + n * sz);
      capture_grad(cap, L - 1, n, gc);
      stable_conf = PetscMax(stable_conf, rel_norm(sz, gc, r->grad[L - 1] + n * sz));
      PetscCall(PetscPrintf(comm, "single: example %3" PRId64 " last layer: naive float p_y - 1 gives rel %.2e\n", r->idx[n], e_naive));
      naive_min_conf = PetscMin(naive_min_conf, e_naive);
    }
  }
  PetscCall(PetscPrintf(comm, "single: max rel gradient error %.2e (confident examples %.2e; last layer %.2e, naive p_y - 1 at least %.2e)\n", worst, worst_conf, stable_conf, naive_min_conf));
  EXPECT(naive_min_conf > 1e-5, "the naive float p_y - 1 would have passed (rel error %g): the confident examples do not test the stable gradient", naive_min_conf);
  /* InflModelPerExampleGradients (always double) vs the single-precision capture, and the single-precision batch
   * gradient vs the sum of the per-example ones */
  {
    double *g;
    float  *params;
    PetscCall(PetscMalloc1((size_t)NEX * r->nparams, &g));
    PetscCall(InflModelPerExampleGradients(model, NEX, r->x, r->y, g));
    PetscCall(InflModelGetParameters(model, NULL, &params, &grads));
    for (PetscInt n = 0; n < NEX; n++)
      for (PetscInt l = 0; l < L; l++) {
        int64_t sz = (int64_t)ly[l].dout * (ly[l].din + 1);
        double *gl, e;
        PetscCall(PetscMalloc1(sz, &gl));
        flat_to_layer(g + n * r->nparams, &ly[l], params, gl);
        capture_grad(cap, l, n, gc);
        e = rel_norm(sz, gc, gl);
        EXPECT(e <= 1e-5, "single: capture Ds a^T vs InflModelPerExampleGradients, example %" PRId64 " layer %d: rel %g", r->idx[n], (int)l, e);
        e = rel_norm(sz, gl, r->grad[l] + n * sz);
        EXPECT(e <= 1e-10, "InflModelPerExampleGradients in a single-precision model must compute in double: example %" PRId64 " layer %d rel %g", r->idx[n], (int)l, e);
        PetscCall(PetscFree(gl));
      }
    for (int64_t i = 0; i < r->nparams; i++) {
      g64[i] = 0;
      for (PetscInt n = 0; n < NEX; n++) g64[i] += g[n * r->nparams + i];
    }
    PetscCall(PetscFree(g));
    PetscCall(InflModelGetPrecision(model, &cap->prec));
    EXPECT(cap->prec == INFL_PREC_SINGLE, "InflModelPerExampleGradients must restore the model's precision");
  }
  PetscCall(InflModelZeroGrad(model));
  PetscCall(InflModelLossBackward(model, NEX, r->x, r->y, &loss_sum, NULL));
  for (PetscInt l = 0; l < L; l++) {
    int64_t off = ly[l].dW - grads, sz = (int64_t)ly[l].dout * (ly[l].din + 1);
    double *b;
    PetscCall(PetscMalloc1(sz, &b));
    for (int64_t i = 0; i < sz; i++) b[i] = grads[off + i];
    EXPECT(rel_norm(sz, b, g64 + off) <= 1e-5, "single: batch gradient of layer %d differs from the sum of per-example gradients by %g relative", (int)l, rel_norm(sz, b, g64 + off));
    PetscCall(PetscFree(b));
  }
  PetscCall(InflModelZeroGrad(model));
  PetscCall(PetscFree2(gc, g64));
  PetscCall(InflCaptureDestroy(&cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_philox(MPI_Comm comm, const char path[])
{
  hid_t    file;
  uint64_t seed, c0[4], c1;
  uint32_t words[16];
  double   u[4];

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5ReadArray(file, "/philox/seed", H5T_NATIVE_UINT64, 0, NULL, NULL, &seed));
  PetscCall(InflH5ReadArray(file, "/philox/c1", H5T_NATIVE_UINT64, 0, NULL, NULL, &c1));
  PetscCall(InflH5ReadArray(file, "/philox/c0", H5T_NATIVE_UINT64, 1, (int64_t[]){4}, NULL, c0));
  PetscCall(InflH5ReadArray(file, "/philox/words", H5T_NATIVE_UINT32, 2, (int64_t[]){4, 4}, NULL, words));
  PetscCall(InflH5ReadArray(file, "/philox/uniform", H5T_NATIVE_DOUBLE, 1, (int64_t[]){4}, NULL, u));
  PetscCall(InflH5Close(&file));
  for (int i = 0; i < 4; i++) {
    uint32_t out[4];
    InflPhilox(seed, c0[i], c1, out);
    for (int k = 0; k < 4; k++) EXPECT(out[k] == words[4 * i + k], "InflPhilox(%" PRIu64 ", %" PRIu64 ", %" PRIu64 ") word %d is %08x, reference %08x", seed, c0[i], c1, k, out[k], words[4 * i + k]);
    EXPECT(InflUniform(seed, c0[i], c1) == u[i], "InflUniform(%" PRIu64 ", %" PRIu64 ", %" PRIu64 ") = %.17g, reference %.17g", seed, c0[i], c1, InflUniform(seed, c0[i], c1), u[i]);
  }
  PetscCall(PetscPrintf(comm, "philox: 4 counters bitwise equal to the reference\n"));
  PetscFunctionReturn(0);
}

/* True-Fisher labels of train examples 0..255, each rank its shard (global indices), in both precisions. */
static PetscErrorCode test_fisher_labels(MPI_Comm comm, const char path[], InflModel model, InflData data)
{
  hid_t          file;
  int64_t        ref[256], data_labels[256], start, count, *y, *idx;
  const float   *x;
  const int64_t *lab;
  int            bad = 0, allbad;

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5ReadArray(file, "/fisher/true/labels", H5T_NATIVE_INT64, 1, (int64_t[]){256}, NULL, ref));
  PetscCall(InflH5ReadArray(file, "/train_labels", H5T_NATIVE_INT64, 1, (int64_t[]){256}, NULL, data_labels));
  PetscCall(InflH5Close(&file));
  PetscCall(InflDataGetShard(data, &start, &count, &x, &lab));
  PetscCall(PetscMalloc2(count, &y, count, &idx));
  for (int64_t i = 0; i < count; i++) {
    idx[i] = start + i;
    if (lab[i] != data_labels[start + i]) bad++;
  }
  for (int p = 0; p < 2; p++) {
    PetscCall(InflModelSetPrecision(model, p ? INFL_PREC_DOUBLE : INFL_PREC_SINGLE));
    PetscCall(InflModelSampleLabels(model, (PetscInt)count, x, idx, 1234, y));
    for (int64_t i = 0; i < count; i++)
      if (y[i] != ref[start + i]) {
        bad++;
        PetscCall(PetscPrintf(PETSC_COMM_SELF, "true-Fisher label of train example %" PRId64 " (%s) is %" PRId64 ", reference %" PRId64 "\n", start + i, p ? "double" : "single", y[i], ref[start + i]));
      }
  }
  PetscCall(InflModelSetPrecision(model, INFL_PREC_SINGLE));
  PetscCallMPI(MPI_Allreduce(&bad, &allbad, 1, MPI_INT, MPI_SUM, comm));
  PetscCheck(allbad == 0, comm, PETSC_ERR_PLIB, "%d data or true-Fisher labels differ from the reference", allbad);
  PetscCall(PetscPrintf(comm, "fisher: true-Fisher labels (seed 1234) of train 0..255 equal to the reference in single and double\n"));
  PetscCall(PetscFree2(y, idx));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  InflModel   model;
  InflData    data;
  Ref         r;
  const char *src;
  char        mpath[PETSC_MAX_PATH_LEN], rpath[PETSC_MAX_PATH_LEN];

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_USER, "set INFL_SOURCE_DIR to the source tree (ctest does)");
  PetscCall(PetscSNPrintf(mpath, sizeof(mpath), "%s/tests/ref/mlp_small.safetensors", src));
  PetscCall(PetscSNPrintf(rpath, sizeof(rpath), "%s/tests/ref/mlp_small_ref.h5", src));
  PetscCall(InflDataOpen(comm, "idx:/usr/share/datasets/fashion-mnist/train", 256, &data));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, mpath));
  PetscCall(PetscMemzero(&r, sizeof(r)));
  PetscCall(read_reference(comm, rpath, model, data, &r));

  PetscCall(test_double(comm, model, &r));
  PetscCall(test_single(comm, model, &r));
  PetscCall(test_philox(comm, rpath));
  PetscCall(test_fisher_labels(comm, rpath, model, data));

  for (PetscInt l = 0; l < r.L; l++) PetscCall(PetscFree(r.grad[l]));
  PetscCall(PetscFree(r.x));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&data));
  PetscCall(PetscPrintf(comm, "test_nn_reference: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

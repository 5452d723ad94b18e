static const char help[] = "Finite-difference check of the MLP gradient (double precision): central differences of the summed\n"
                           "loss with respect to every parameter, for relu, tanh, gelu and identity, vs the backward pass.\n";
#include <infl/model.h>
#include <math.h>
#include "lib/infl_test.h"

#define B 6

/* Summed loss in double, and whether each hidden unit of each example is active (relu pattern), via a capture. */
static PetscErrorCode loss_and_pattern(InflModel model, InflCapture *cap, const float x[], const int64_t y[], double *loss, unsigned char pattern[], PetscInt npat)
{
  PetscInt k = 0;

  PetscFunctionBegin;
  PetscCall(InflModelCapture(model, B, x, y, cap));
  *loss = 0;
  for (PetscInt n = 0; n < B; n++) *loss += cap->loss[n];
  for (PetscInt l = 1; l < cap->L; l++)
    for (PetscInt n = 0; n < B; n++)
      for (PetscInt j = 0; j < cap->din[l]; j++) pattern[k++] = cap->a64[l][n * (cap->din[l] + 1) + j] > 0;
  PetscAssert(k == npat, PETSC_COMM_SELF, PETSC_ERR_PLIB, "pattern size");
  PetscFunctionReturn(0);
}

static PetscErrorCode check_activation(MPI_Comm comm, InflActivation act, const char name[])
{
  const PetscInt dims[4] = {7, 5, 4, 3};
  InflModel      model;
  InflCapture   *cap;
  float          x[B * 7], *params, *grads;
  int64_t        y[B], n;
  double        *g, *gsum, loss, worst = 0;
  const double   h    = 1.0 / 16384;
  PetscInt       npat = B * (5 + 4), skipped = 0;
  unsigned char  pat0[B * 9], pat[B * 9];

  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, 4, dims, act, 11));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  for (PetscInt i = 0; i < B * 7; i++) x[i] = (float)(4 * InflUniform(5, (uint64_t)i, 99) - 2);
  for (PetscInt i = 0; i < B; i++) y[i] = (int64_t)(3 * InflUniform(6, (uint64_t)i, 99));
  PetscCall(InflModelGetParameters(model, &n, &params, &grads));
  /* make the weights larger than the default init so that the activations are well inside their nonlinear range */
  for (int64_t i = 0; i < n; i++) params[i] *= 2;
  PetscCall(PetscMalloc2((size_t)B * n, &g, n, &gsum));
  PetscCall(InflModelPerExampleGradients(model, B, x, y, g));
  for (int64_t i = 0; i < n; i++) {
    gsum[i] = 0;
    for (PetscInt b = 0; b < B; b++) gsum[i] += g[b * n + i];
  }
  /* the float slab of LossBackward agrees with the per-example sum */
  PetscCall(InflModelZeroGrad(model));
  PetscCall(InflModelLossBackward(model, B, x, y, NULL, NULL));
  for (int64_t i = 0; i < n; i++) EXPECT(fabs((double)grads[i] - gsum[i]) <= 1e-7 * fabs(gsum[i]) + 1e-30, "%s: LossBackward gradient %" PRId64 " = %.9g, per-example sum %.17g", name, i, (double)grads[i], gsum[i]);
  PetscCall(InflCaptureCreate(model, B, &cap));
  PetscCall(loss_and_pattern(model, cap, x, y, &loss, pat0, npat));
  for (int64_t i = 0; i < n; i++) {
    const float p = params[i];
    float       pp = (float)(p + h), pm = (float)(p - h);
    double      lp, lm, fd, err, scale = 0;
    PetscBool   kink = PETSC_FALSE;
    params[i] = pp;
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL)); /* marks the double copy stale */
    PetscCall(loss_and_pattern(model, cap, x, y, &lp, pat, npat));
    if (memcmp(pat, pat0, npat)) kink = PETSC_TRUE;
    params[i] = pm;
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    PetscCall(loss_and_pattern(model, cap, x, y, &lm, pat, npat));
    if (memcmp(pat, pat0, npat)) kink = PETSC_TRUE;
    params[i] = p;
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    if (kink) { /* a relu unit changes side within +-h: the loss is not differentiable there */
      skipped++;
      continue;
    }
    fd = (lp - lm) / ((double)pp - (double)pm); /* the float-rounded step, exact in double */
    for (int64_t k = 0; k < n; k++) scale = PetscMax(scale, fabs(gsum[k]));
    err = fabs(fd - gsum[i]) / (fabs(gsum[i]) + 1e-3 * scale);
    worst = PetscMax(worst, err);
    EXPECT(err <= 1e-6, "%s: parameter %" PRId64 ": finite difference %.12g, backward %.12g (rel %g)", name, i, fd, gsum[i], err);
  }
  PetscCall(PetscPrintf(comm, "%-8s %" PRId64 " parameters: max rel error %.2e (%d skipped at relu kinks)\n", name, n, worst, (int)skipped));
  EXPECT(skipped <= n / 10, "%s: %d of %" PRId64 " parameters skipped", name, (int)skipped, n);
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree2(g, gsum));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm comm;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCall(check_activation(comm, INFL_ACT_RELU, "relu"));
  PetscCall(check_activation(comm, INFL_ACT_TANH, "tanh"));
  PetscCall(check_activation(comm, INFL_ACT_GELU, "gelu"));
  PetscCall(check_activation(comm, INFL_ACT_IDENTITY, "identity"));
  PetscCall(PetscPrintf(comm, "test_nn_fd: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

/* Forward, loss and backward of the MLP in one working precision.  Included by mlp.c twice, with
 *   REAL  float | double,   GEMM  cblas_sgemm | cblas_dgemm,   FN(name)  name##_f32 | name##_f64.
 * Layouts: h[l] (B, dims[l]+1) row-major, layer l's input with the trailing 1 (so it IS the captured a_l);
 *          s[l] (B, dims[l+1]) pre-activations; ds[l] (B, dims[l+1]) pseudo-gradients dLoss/ds[l]. */

/* h[0] from x; then h[l+1] = act(s[l]), s[l] = h[l] W^T + b. Weights W (dout, din) in REAL. */
static void FN(mlp_forward)(PetscInt L, const PetscInt dims[], InflActivation act, REAL *const W[], REAL *const b[], PetscInt B, const float x[], REAL *h[], REAL *s[])
{
  PetscInt d0 = dims[0];
  for (PetscInt n = 0; n < B; n++) {
    for (PetscInt j = 0; j < d0; j++) h[0][n * (d0 + 1) + j] = (REAL)x[n * d0 + j];
    h[0][n * (d0 + 1) + d0] = 1;
  }
  for (PetscInt l = 0; l < L; l++) {
    PetscInt din = dims[l], dout = dims[l + 1];
    for (PetscInt n = 0; n < B; n++) memcpy(&s[l][n * dout], b[l], sizeof(REAL) * dout);
    if (B > 0) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, dout, din, 1, h[l], din + 1, W[l], din, 1, s[l], dout);
    if (l == L - 1) break;
    for (PetscInt n = 0; n < B; n++) {
      REAL *hn = &h[l + 1][n * (dout + 1)];
      const REAL *sn = &s[l][n * dout];
      if (act == INFL_ACT_RELU)
        for (PetscInt j = 0; j < dout; j++) hn[j] = sn[j] > 0 ? sn[j] : 0;
      else
        for (PetscInt j = 0; j < dout; j++) hn[j] = (REAL)activation_forward(act, (double)sn[j]);
      hn[dout] = 1;
    }
  }
}

/* Cross-entropy of logits z (B, C) with labels y, per example, and its gradient dz = softmax(z) - onehot(y),
 * computed in double from the REAL logits: the true-class entry is -(sum of the other probabilities), never
 * p_y - 1, and the loss is log1p(sum over j != y of exp(z_j - z_y)) when y is the arg max (both keep full relative
 * accuracy for confidently classified examples). */
static void FN(softmax_xent)(PetscInt B, PetscInt C, const REAL z[], const int64_t y[], REAL dz[], double loss[], PetscInt *correct)
{
  for (PetscInt n = 0; n < B; n++) {
    const REAL *zn = &z[n * C];
    PetscInt    yn = (PetscInt)y[n], am = 0;
    double      m, Z = 0, others = 0;
    for (PetscInt j = 1; j < C; j++) if (zn[j] > zn[am]) am = j;
    m = zn[am];
    for (PetscInt j = 0; j < C; j++) {
      double e = exp((double)zn[j] - m);
      Z += e;
      if (j != yn) others += e;
    }
    if (dz) {
      for (PetscInt j = 0; j < C; j++) dz[n * C + j] = (REAL)(j == yn ? -others / Z : exp((double)zn[j] - m) / Z);
    }
    if (loss) {
      if (am == yn) { /* log(Z) - (z_y - m) with z_y = m and Z = 1 + others */
        loss[n] = log1p(others);
      } else loss[n] = log(Z) - ((double)zn[yn] - m);
    }
    if (correct && am == yn) (*correct)++;
  }
}

/* Backward from ds[L-1]: ds[l-1] = (ds[l] W_l) * act'(s[l-1]). */
static void FN(mlp_backward)(PetscInt L, const PetscInt dims[], InflActivation act, REAL *const W[], PetscInt B, REAL *h[], REAL *s[], REAL *ds[])
{
  for (PetscInt l = L - 1; l > 0; l--) {
    PetscInt din = dims[l], dout = dims[l + 1];
    if (B > 0) GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, din, dout, 1, ds[l], dout, W[l], din, 0, ds[l - 1], din);
    if (act == INFL_ACT_RELU)
      for (int64_t i = 0; i < (int64_t)B * din; i++) ds[l - 1][i] = s[l - 1][i] > 0 ? ds[l - 1][i] : 0;
    else
      for (int64_t i = 0; i < (int64_t)B * din; i++) ds[l - 1][i] = (REAL)((double)ds[l - 1][i] * activation_derivative(act, (double)s[l - 1][i]));
  }
}

/* Parameter gradients of the summed loss: dW_l += ds[l]^T h[l][:, :din], db_l += column sums of ds[l]. */
static void FN(mlp_param_grad)(PetscInt L, const PetscInt dims[], PetscInt B, REAL *h[], REAL *ds[], REAL *dW[], REAL *db[])
{
  for (PetscInt l = 0; l < L; l++) {
    PetscInt din = dims[l], dout = dims[l + 1];
    if (B > 0) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, B, 1, ds[l], dout, h[l], din + 1, 1, dW[l], din);
    for (PetscInt n = 0; n < B; n++)
      for (PetscInt j = 0; j < dout; j++) db[l][j] += ds[l][n * dout + j];
  }
}

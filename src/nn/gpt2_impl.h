/* GPT-2 kernels and the forward / backward passes in one working precision.  Included by gpt2.c twice, with
 *   REAL  float | double,   GEMM  cblas_sgemm | cblas_dgemm,   FN(name)  name##_f32 | name##_f64.
 * Kernels follow llm.c (karpathy/llm.c, train_gpt2.c): outputs first, row-major, N rows (tokens of all sequences of
 * the batch, see infl/gpt2.h), C channels.  Sums of a row (LayerNorm moments, softmax normalizers, the loss) are
 * accumulated in double in both precisions. */

/* out (N, C) = wte[tokens] + wpe[pos] */
static void FN(encoder_forward)(REAL *out, const int32_t *tokens, const PetscInt *pos, const REAL *wte, const REAL *wpe, PetscInt N, PetscInt C)
{
  for (PetscInt t = 0; t < N; t++) {
    const REAL *e = wte + (int64_t)tokens[t] * C, *p = wpe + (int64_t)pos[t] * C;
    REAL       *o = out + (int64_t)t * C;
    for (PetscInt i = 0; i < C; i++) o[i] = e[i] + p[i];
  }
}

/* dwte (V, C) += scatter of dout (N, C) by token, dwpe (n_positions, C) += by position */
static void FN(encoder_backward)(REAL *dwte, REAL *dwpe, const REAL *dout, const int32_t *tokens, const PetscInt *pos, PetscInt N, PetscInt C)
{
  for (PetscInt t = 0; t < N; t++) {
    REAL       *e = dwte + (int64_t)tokens[t] * C, *p = dwpe + (int64_t)pos[t] * C;
    const REAL *d = dout + (int64_t)t * C;
    for (PetscInt i = 0; i < C; i++) {
      e[i] += d[i];
      p[i] += d[i];
    }
  }
}

/* out (N, C) = (inp - mean) * rstd * w + b per row; mean, rstd (N) kept for the backward pass (biased variance). */
static void FN(layernorm_forward)(REAL *out, REAL *mean, REAL *rstd, const REAL *inp, const REAL *w, const REAL *b, PetscInt N, PetscInt C, double eps)
{
  for (PetscInt t = 0; t < N; t++) {
    const REAL *x = inp + (int64_t)t * C;
    REAL       *o = out + (int64_t)t * C;
    double      m = 0, v = 0, s;
    for (PetscInt i = 0; i < C; i++) m += x[i];
    m /= C;
    for (PetscInt i = 0; i < C; i++) v += ((double)x[i] - m) * ((double)x[i] - m);
    v /= C;
    s = 1 / sqrt(v + eps);
    for (PetscInt i = 0; i < C; i++) o[i] = (REAL)(((double)x[i] - m) * s * w[i] + b[i]);
    mean[t] = (REAL)m;
    rstd[t] = (REAL)s;
  }
}

/* dinp (N, C) += LayerNorm input gradient of dout (N, C); dw, db (C) += weight and bias gradients (skipped if NULL). */
static void FN(layernorm_backward)(REAL *dinp, REAL *dw, REAL *db, const REAL *dout, const REAL *inp, const REAL *w, const REAL *mean, const REAL *rstd, PetscInt N, PetscInt C)
{
  for (PetscInt t = 0; t < N; t++) {
    const REAL *x = inp + (int64_t)t * C, *d = dout + (int64_t)t * C;
    REAL       *di = dinp + (int64_t)t * C;
    double      m = mean[t], s = rstd[t], dnorm_mean = 0, dnorm_norm_mean = 0;
    for (PetscInt i = 0; i < C; i++) {
      double n = ((double)x[i] - m) * s, dn = (double)w[i] * d[i];
      dnorm_mean += dn;
      dnorm_norm_mean += dn * n;
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (PetscInt i = 0; i < C; i++) {
      double n = ((double)x[i] - m) * s, dn = (double)w[i] * d[i];
      if (dw) {
        db[i] += d[i];
        dw[i] += (REAL)(n * d[i]);
      }
      di[i] += (REAL)((dn - dnorm_mean - n * dnorm_norm_mean) * s);
    }
  }
}

/* out (N, OC) = inp (N, C) W (C, OC) + b (OC): a Conv1D layer. */
static void FN(matmul_forward)(REAL *out, const REAL *inp, const REAL *W, const REAL *b, PetscInt N, PetscInt C, PetscInt OC)
{
  for (PetscInt t = 0; t < N; t++) memcpy(out + (int64_t)t * OC, b, sizeof(REAL) * OC);
  if (N > 0) GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, C, 1, inp, C, W, OC, 1, out, OC);
}

/* dinp (N, C) = dout (N, OC) W^T (overwritten); dW (C, OC) += inp^T dout and db (OC) += column sums of dout unless
 * dW is NULL. */
static void FN(matmul_backward)(REAL *dinp, REAL *dW, REAL *db, const REAL *dout, const REAL *inp, const REAL *W, PetscInt N, PetscInt C, PetscInt OC)
{
  if (N == 0) return;
  GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, OC, 1, dout, OC, W, OC, 0, dinp, C);
  if (!dW) return;
  GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, C, OC, N, 1, inp, C, dout, OC, 1, dW, OC);
  for (PetscInt t = 0; t < N; t++)
    for (PetscInt j = 0; j < OC; j++) db[j] += dout[(int64_t)t * OC + j];
}

/* Causal self-attention of every (sequence, head).  qkv (N, 3C) rows [q | k | v], head h in columns h*hs..;
 * att (sum over sequences of NH T_b^2): the probabilities P (T_b, T_b) of sequence b head h at attoff[b] + h T_b^2
 * (zero above the diagonal); out (N, C) = P V per head.  Scores Q K^T / sqrt(hs) by GEMM, softmax per row. */
static void FN(attention_forward)(REAL *out, REAL *att, const REAL *qkv, PetscInt B, const PetscInt *off, const int64_t *attoff, PetscInt C, PetscInt NH)
{
  PetscInt hs    = C / NH;
  double   scale = 1 / sqrt((double)hs);

  for (PetscInt b = 0; b < B; b++) {
    PetscInt    T    = off[b + 1] - off[b];
    const REAL *base = qkv + (int64_t)off[b] * 3 * C;
    for (PetscInt h = 0; h < NH; h++) {
      REAL       *P = att + attoff[b] + (int64_t)h * T * T; /* (T, T) */
      const REAL *q = base + h * hs, *k = base + C + h * hs, *v = base + 2 * C + h * hs;
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, (REAL)scale, q, 3 * C, k, 3 * C, 0, P, T);
      for (PetscInt i = 0; i < T; i++) {
        REAL  *p  = P + (int64_t)i * T;
        double mx = p[0], Z = 0;
        for (PetscInt j = 1; j <= i; j++) mx = PetscMax(mx, (double)p[j]);
        for (PetscInt j = 0; j <= i; j++) {
          double e = exp((double)p[j] - mx);
          p[j]     = (REAL)e;
          Z += e;
        }
        for (PetscInt j = 0; j <= i; j++) p[j] = (REAL)(p[j] / Z);
        for (PetscInt j = i + 1; j < T; j++) p[j] = 0;
      }
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, P, T, v, 3 * C, 0, out + (int64_t)off[b] * C + h * hs, C);
    }
  }
}

/* dqkv (N, 3C) (overwritten) from dout (N, C); dP (n_positions^2) scratch.  With S the scaled scores:
 * dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(P o dP)), dQ = dS K / sqrt(hs), dK = dS^T Q / sqrt(hs). */
static void FN(attention_backward)(REAL *dqkv, REAL *dP, const REAL *dout, const REAL *qkv, const REAL *att, PetscInt B, const PetscInt *off, const int64_t *attoff, PetscInt C, PetscInt NH)
{
  PetscInt hs    = C / NH;
  double   scale = 1 / sqrt((double)hs);

  for (PetscInt b = 0; b < B; b++) {
    PetscInt    T    = off[b + 1] - off[b];
    const REAL *base = qkv + (int64_t)off[b] * 3 * C, *dO0 = dout + (int64_t)off[b] * C;
    REAL       *dbase = dqkv + (int64_t)off[b] * 3 * C;
    for (PetscInt h = 0; h < NH; h++) {
      const REAL *P = att + attoff[b] + (int64_t)h * T * T, *dO = dO0 + h * hs;
      const REAL *q = base + h * hs, *k = base + C + h * hs, *v = base + 2 * C + h * hs;
      REAL       *dq = dbase + h * hs, *dk = dbase + C + h * hs, *dv = dbase + 2 * C + h * hs;
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, P, T, dO, C, 0, dv, 3 * C);
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1, dO, C, v, 3 * C, 0, dP, T);
      for (PetscInt i = 0; i < T; i++) {
        const REAL *p  = P + (int64_t)i * T;
        REAL       *dp = dP + (int64_t)i * T;
        double      s  = 0;
        for (PetscInt j = 0; j <= i; j++) s += (double)p[j] * dp[j];
        for (PetscInt j = 0; j <= i; j++) dp[j] = (REAL)((double)p[j] * ((double)dp[j] - s));
        for (PetscInt j = i + 1; j < T; j++) dp[j] = 0;
      }
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, (REAL)scale, dP, T, k, 3 * C, 0, dq, 3 * C);
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, (REAL)scale, dP, T, q, 3 * C, 0, dk, 3 * C);
    }
  }
}

/* out (n) = act(inp) */
static void FN(act_forward)(REAL *out, const REAL *inp, int64_t n, InflGPT2Activation act)
{
  for (int64_t i = 0; i < n; i++) out[i] = (REAL)gpt2_act(act, (double)inp[i]);
}

/* dinp (n) = dout * act'(inp); dinp may be dout. */
static void FN(act_backward)(REAL *dinp, const REAL *inp, const REAL *dout, int64_t n, InflGPT2Activation act)
{
  for (int64_t i = 0; i < n; i++) dinp[i] = (REAL)((double)dout[i] * gpt2_act_derivative(act, (double)inp[i]));
}

/* Next-token cross-entropy of logits (N, V) with targets (N, negative: none): loss (N) and dlogits (N, V) =
 * softmax - onehot (zero rows without a target), in double from the REAL logits, stably (see infl/gpt2.h).
 * dlogits may be logits.  One exp per entry, kept in dlogits until the normalizer is known: in single precision
 * dz_j = fl(fl(e_j) / Z), within 2 float ulps. */
static void FN(crossentropy)(REAL *dlogits, double *loss, const REAL *logits, const int32_t *targets, PetscInt N, PetscInt V)
{
  for (PetscInt t = 0; t < N; t++) {
    const REAL *z  = logits + (int64_t)t * V;
    REAL       *dz = dlogits ? dlogits + (int64_t)t * V : NULL;
    PetscInt    y = targets[t], am = 0;
    double      m, zy, Z = 0, others = 0;
    if (y < 0) {
      if (dz)
        for (PetscInt j = 0; j < V; j++) dz[j] = 0;
      loss[t] = 0;
      continue;
    }
    for (PetscInt j = 1; j < V; j++) if (z[j] > z[am]) am = j;
    m  = z[am];
    zy = z[y];
    for (PetscInt j = 0; j < V; j++) { /* one exp per entry: kept in dz until Z is known */
      double e = exp((double)z[j] - m);
      Z += e;
      if (j != y) others += e;
      if (dz) dz[j] = (REAL)e;
    }
    loss[t] = am == y ? log1p(others) : log(Z) - ((double)zy - m);
    if (dz) {
      for (PetscInt j = 0; j < V; j++) dz[j] = (REAL)((double)dz[j] / Z);
      dz[y] = (REAL)(-others / Z);
    }
  }
}

/* The forward pass of the whole model on the batch described by ws (rows, positions, offsets); P the parameter slab
 * in REAL. */
static void FN(gpt2_forward)(InflGPT2 g, const REAL *P, Workspace *ws, const int32_t *tokens)
{
  const InflGPT2Config *cf = &g->cfg;
  PetscInt              N = ws->N, C = cf->n_embd, V = cf->vocab_size, L = cf->n_layer;

  FN(encoder_forward)((REAL *)ws->resid[0], tokens, ws->pos, P + g->o_wte, P + g->o_wpe, N, C);
  for (PetscInt l = 0; l < L; l++) {
    const int64_t *o = g->o_blk + 12 * l;
    LayerActs     *a = &ws->acts[l];
    REAL          *mid = (REAL *)a->resid_mid, *out = (REAL *)ws->resid[l + 1];
    const REAL    *in  = (const REAL *)ws->resid[l];
    FN(layernorm_forward)((REAL *)a->ln1, (REAL *)a->ln1_mean, (REAL *)a->ln1_rstd, in, P + o[B_LN1_W], P + o[B_LN1_B], N, C, cf->layer_norm_epsilon);
    FN(matmul_forward)((REAL *)a->qkv, (REAL *)a->ln1, P + o[B_ATTN_W], P + o[B_ATTN_B], N, C, 3 * C);
    FN(attention_forward)((REAL *)a->atty, (REAL *)a->att, (REAL *)a->qkv, ws->B, ws->off, ws->attoff, C, cf->n_head);
    FN(matmul_forward)(mid, (REAL *)a->atty, P + o[B_PROJ_W], P + o[B_PROJ_B], N, C, C);
    for (int64_t i = 0; i < (int64_t)N * C; i++) mid[i] += in[i];
    FN(layernorm_forward)((REAL *)a->ln2, (REAL *)a->ln2_mean, (REAL *)a->ln2_rstd, mid, P + o[B_LN2_W], P + o[B_LN2_B], N, C, cf->layer_norm_epsilon);
    FN(matmul_forward)((REAL *)a->fch, (REAL *)a->ln2, P + o[B_FC_W], P + o[B_FC_B], N, C, 4 * C);
    FN(act_forward)((REAL *)a->fch_act, (REAL *)a->fch, (int64_t)N * 4 * C, cf->activation);
    FN(matmul_forward)(out, (REAL *)a->fch_act, P + o[B_MPROJ_W], P + o[B_MPROJ_B], N, 4 * C, C);
    for (int64_t i = 0; i < (int64_t)N * C; i++) out[i] += mid[i];
  }
  FN(layernorm_forward)((REAL *)ws->lnf, (REAL *)ws->lnf_mean, (REAL *)ws->lnf_rstd, (REAL *)ws->resid[L], P + g->o_lnf_w, P + g->o_lnf_b, N, C, cf->layer_norm_epsilon);
  if (N > 0) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, N, V, C, 1, (REAL *)ws->lnf, C, P + g->o_wte, C, 0, (REAL *)ws->logits, V);
}

/* Loss and backward pass after gpt2_forward: ws->loss (N) per row; the logits are overwritten by dlogits.
 * G (the gradient slab in REAL) += gradients of the summed loss unless NULL.  With a capture, its a and Ds arrays
 * (REAL) are filled; a NULL array of a layer means that layer is not captured. */
static void FN(gpt2_backward)(InflGPT2 g, const REAL *P, REAL *G, Workspace *ws, const int32_t *tokens, const int32_t *targets, REAL **cap_a, REAL **cap_ds)
{
  const InflGPT2Config *cf = &g->cfg;
  PetscInt              N = ws->N, C = cf->n_embd, V = cf->vocab_size, L = cf->n_layer;
  REAL                 *dres = (REAL *)ws->dresid, *dbuf = (REAL *)ws->dbuf, *dlogits = (REAL *)ws->logits;

  FN(crossentropy)(dlogits, ws->loss, dlogits, targets, N, V);
  /* logits = lnf wte^T */
  if (N > 0) GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, V, 1, dlogits, V, P + g->o_wte, C, 0, dbuf, C);
  if (G && N > 0) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, N, 1, dlogits, V, (REAL *)ws->lnf, C, 1, G + g->o_wte, C);
  memset(dres, 0, sizeof(REAL) * (size_t)N * C);
  FN(layernorm_backward)(dres, G ? G + g->o_lnf_w : NULL, G ? G + g->o_lnf_b : NULL, dbuf, (REAL *)ws->resid[L], P + g->o_lnf_w, (REAL *)ws->lnf_mean, (REAL *)ws->lnf_rstd, N, C);
  for (PetscInt l = L - 1; l >= 0; l--) {
    const int64_t *o = g->o_blk + 12 * l;
    LayerActs     *a = &ws->acts[l];
    REAL          *dfch = (REAL *)ws->dfch, *dqkv = (REAL *)ws->dqkv, *datty = (REAL *)ws->datty;
#define GW(k) (G ? G + o[k] : NULL)
    /* dres is dLoss/d(block output) = Ds of mlp.c_proj */
    if (cap_ds && cap_ds[4 * l + 3]) memcpy(cap_ds[4 * l + 3], dres, sizeof(REAL) * (size_t)N * C);
    FN(matmul_backward)(dfch, GW(B_MPROJ_W), GW(B_MPROJ_B), dres, (REAL *)a->fch_act, P + o[B_MPROJ_W], N, 4 * C, C);
    FN(act_backward)(dfch, (REAL *)a->fch, dfch, (int64_t)N * 4 * C, cf->activation);
    if (cap_ds && cap_ds[4 * l + 2]) memcpy(cap_ds[4 * l + 2], dfch, sizeof(REAL) * (size_t)N * 4 * C);
    FN(matmul_backward)(dbuf, GW(B_FC_W), GW(B_FC_B), dfch, (REAL *)a->ln2, P + o[B_FC_W], N, C, 4 * C);
    FN(layernorm_backward)(dres, GW(B_LN2_W), GW(B_LN2_B), dbuf, (REAL *)a->resid_mid, P + o[B_LN2_W], (REAL *)a->ln2_mean, (REAL *)a->ln2_rstd, N, C);
    /* dres is dLoss/d(resid_mid) = Ds of attn.c_proj */
    if (cap_ds && cap_ds[4 * l + 1]) memcpy(cap_ds[4 * l + 1], dres, sizeof(REAL) * (size_t)N * C);
    FN(matmul_backward)(datty, GW(B_PROJ_W), GW(B_PROJ_B), dres, (REAL *)a->atty, P + o[B_PROJ_W], N, C, C);
    FN(attention_backward)(dqkv, (REAL *)ws->dP, datty, (REAL *)a->qkv, (REAL *)a->att, ws->B, ws->off, ws->attoff, C, cf->n_head);
    if (cap_ds && cap_ds[4 * l]) memcpy(cap_ds[4 * l], dqkv, sizeof(REAL) * (size_t)N * 3 * C);
    FN(matmul_backward)(dbuf, GW(B_ATTN_W), GW(B_ATTN_B), dqkv, (REAL *)a->ln1, P + o[B_ATTN_W], N, C, 3 * C);
    FN(layernorm_backward)(dres, GW(B_LN1_W), GW(B_LN1_B), dbuf, (REAL *)ws->resid[l], P + o[B_LN1_W], (REAL *)a->ln1_mean, (REAL *)a->ln1_rstd, N, C);
#undef GW
    if (cap_a) { /* layer inputs with the trailing 1 */
      const REAL *src[4] = {(REAL *)a->ln1, (REAL *)a->atty, (REAL *)a->ln2, (REAL *)a->fch_act};
      PetscInt    din[4] = {C, C, C, 4 * C};
      for (int k = 0; k < 4; k++) {
        REAL *dst = cap_a[4 * l + k];
        if (!dst) continue; /* a layer not captured (layer selection) */
        for (PetscInt t = 0; t < N; t++) {
          memcpy(dst + (int64_t)t * (din[k] + 1), src[k] + (int64_t)t * din[k], sizeof(REAL) * din[k]);
          dst[(int64_t)t * (din[k] + 1) + din[k]] = 1;
        }
      }
    }
  }
  if (G) FN(encoder_backward)(G + g->o_wte, G + g->o_wpe, dres, tokens, ws->pos, N, C);
}

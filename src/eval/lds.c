/* The linear datamodeling score and its pieces: subset masks, Spearman correlation, query losses, mislabeled copies. */
#include <infl/eval.h>
#include <math.h>

int64_t InflSubsetSize(int64_t N, double fraction)
{
  return (int64_t)llround(fraction * (double)N);
}

/* mask (N): 1 for the first m entries of the Fisher-Yates permutation of [0, N) drawn from stream c1. */
static void choose_members(uint64_t seed, uint64_t c1, int64_t N, int64_t m, int64_t perm[], uint8_t mask[])
{
  for (int64_t i = 0; i < N; i++) perm[i] = i;
  for (int64_t i = N - 1; i > 0; i--) {
    int64_t j = (int64_t)(InflUniform(seed, (uint64_t)i, c1) * (double)(i + 1)), t;
    if (j > i) j = i;
    t       = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (int64_t i = 0; i < N; i++) mask[i] = 0;
  for (int64_t i = 0; i < m; i++) mask[perm[i]] = 1;
}

PetscErrorCode InflSubsetMask(uint64_t seed, PetscInt subset, int64_t N, double fraction, uint8_t mask[])
{
  int64_t *perm, m = InflSubsetSize(N, fraction);

  PetscFunctionBegin;
  PetscCheck(N >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "subsets of %" PRId64 " training examples: the training set is empty", N);
  PetscCheck(fraction > 0 && fraction <= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "subset fraction %g must lie in (0, 1] (-lds_fraction; 0.5 is the usual choice)", fraction);
  PetscCheck(m >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "subset fraction %g of %" PRId64 " training examples selects no example; give a larger -lds_fraction", fraction, N);
  PetscCheck(subset >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "subset %d must be >= 0", (int)subset);
  PetscCall(PetscMalloc1(N, &perm));
  choose_members(seed, INFL_STREAM_SUBSET + 256 * (uint64_t)subset, N, m, perm, mask);
  PetscCall(PetscFree(perm));
  PetscFunctionReturn(0);
}

typedef struct {
  double  v;
  int64_t i;
} Ranked;

static int cmp_ranked(const void *a, const void *b)
{
  const Ranked *x = (const Ranked *)a, *y = (const Ranked *)b;
  if (x->v < y->v) return -1;
  if (x->v > y->v) return 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* r (n): ranks 1..n of x, ties getting the mean of their ranks; w (n) scratch. */
static void average_ranks(PetscInt n, const double x[], Ranked w[], double r[])
{
  for (PetscInt i = 0; i < n; i++) w[i] = (Ranked){x[i], i};
  qsort(w, (size_t)n, sizeof(Ranked), cmp_ranked);
  for (PetscInt a = 0; a < n;) {
    PetscInt b = a + 1;
    while (b < n && w[b].v == w[a].v) b++;
    for (PetscInt k = a; k < b; k++) r[w[k].i] = 0.5 * (double)(a + 1 + b); /* mean of ranks a+1 .. b */
    a = b;
  }
}

PetscErrorCode InflSpearman(PetscInt n, const double x[], const double y[], double *rho)
{
  Ranked *w;
  double *rx, *ry;

  PetscFunctionBegin;
  *rho = NAN;
  if (n < 2) PetscFunctionReturn(0);
  PetscCall(PetscMalloc3(n, &w, n, &rx, n, &ry));
  average_ranks(n, x, w, rx);
  average_ranks(n, y, w, ry);
  PetscCall(InflPearson(n, rx, ry, rho));
  PetscCall(PetscFree3(w, rx, ry));
  PetscFunctionReturn(0);
}

PetscErrorCode InflPearson(PetscInt n, const double x[], const double y[], double *r)
{
  double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;

  PetscFunctionBegin;
  *r = NAN;
  if (n < 2) PetscFunctionReturn(0);
  for (PetscInt i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  for (PetscInt i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx > 0 && syy > 0) *r = sxy / sqrt(sxx * syy);
  PetscFunctionReturn(0);
}

PetscErrorCode InflLOOCorrelation(PetscInt K, const int64_t idx[], PetscInt Q, int64_t N, const double change[], const double scores[], double *pearson, double *spearman, PetscInt *npairs)
{
  double  *x, *y;
  PetscInt n = 0;

  PetscFunctionBegin;
  for (PetscInt k = 0; k < K; k++) PetscCheck(idx[k] >= 0 && idx[k] < N, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "left-out training example %" PRId64 " is outside the %" PRId64 " training examples of the scores", idx[k], N);
  PetscCall(PetscMalloc2((size_t)K * Q + 1, &x, (size_t)K * Q + 1, &y));
  for (PetscInt k = 0; k < K; k++)
    for (PetscInt q = 0; q < Q; q++) {
      double s = scores[(size_t)q * N + idx[k]], c = change[(size_t)k * Q + q];
      if (!isfinite(s) || !isfinite(c)) continue;
      x[n] = s;
      y[n] = c;
      n++;
    }
  PetscCall(InflPearson(n, x, y, pearson));
  PetscCall(InflSpearman(n, x, y, spearman));
  if (npairs) *npairs = n;
  PetscCall(PetscFree2(x, y));
  PetscFunctionReturn(0);
}

PetscErrorCode InflLDSCompute(PetscInt J, int64_t N, PetscInt Q, const uint8_t masks[], const PetscBool valid[], const double losses[], const double scores[], double per_query[], double *lds, PetscInt *nq)
{
  PetscInt nv = 0, nd = 0;
  double  *pred, *neg, sum = 0;

  PetscFunctionBegin;
  for (PetscInt j = 0; j < J; j++) nv += !valid || valid[j];
  PetscCheck(nv >= 3, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "the LDS needs at least 3 subsets whose training succeeded; %d of %d are usable (the others diverged: lower -train_lr, or give more -lds_subsets)", (int)nv, (int)J);
  PetscCall(PetscMalloc2(nv, &pred, nv, &neg));
  for (PetscInt q = 0; q < Q; q++) {
    const double *s = scores + (size_t)q * N;
    double        rho;
    PetscInt      k = 0;
    for (PetscInt j = 0; j < J; j++) {
      const uint8_t *m = masks + (size_t)j * N;
      double         g = 0;
      if (valid && !valid[j]) continue;
      for (int64_t i = 0; i < N; i++)
        if (m[i]) g += s[i];
      pred[k] = g;
      neg[k]  = -losses[(size_t)j * Q + q];
      k++;
    }
    PetscCall(InflSpearman(nv, pred, neg, &rho));
    if (per_query) per_query[q] = rho;
    if (!isnan(rho)) {
      sum += rho;
      nd++;
    }
  }
  *lds = nd ? sum / nd : NAN;
  if (nq) *nq = nd;
  PetscCall(PetscFree2(pred, neg));
  PetscFunctionReturn(0);
}

PetscErrorCode InflQuerySequenceLosses(InflModel model, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double loss[])
{
  PetscFunctionBegin;
  for (PetscInt q = 0; q < Q; q++) { /* one query at a time: the logits of one sequence at most */
    const int64_t off[2] = {0, offsets[q + 1] - offsets[q]};
    PetscCall(InflModelSequenceLoss(model, 1, off, tokens + offsets[q], targets ? targets + offsets[q] : NULL, &loss[q], NULL));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflQueryLosses(InflModel model, InflData query, PetscInt Q, const int64_t qidx[], double loss[])
{
  PetscBool seq;
  int64_t   d;

  PetscFunctionBegin;
  PetscCall(InflModelIsSequential(model, &seq));
  PetscCall(InflDataGetSizes(query, NULL, &d, NULL));
  if (seq) {
    int32_t *tok;
    int64_t  off[2];
    PetscCall(PetscMalloc1(d + 1, &tok));
    for (PetscInt q = 0; q < Q; q++) {
      PetscCall(InflDataGetSequences(query, 1, &qidx[q], tok, off));
      PetscCall(InflQuerySequenceLosses(model, 1, off, tok, NULL, &loss[q]));
    }
    PetscCall(PetscFree(tok));
  } else {
    float *x;
    PetscCall(PetscMalloc1(d, &x));
    for (PetscInt q = 0; q < Q; q++) {
      int64_t y;
      PetscCall(InflDataGetExamples(query, 1, &qidx[q], x, &y));
      PetscCall(InflModelLossBackward(model, 1, x, &y, &loss[q], NULL));
    }
    PetscCall(InflModelZeroGrad(model));
    PetscCall(PetscFree(x));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflMislabelSelect(uint64_t seed, int64_t N, double fraction, uint8_t flipped[])
{
  int64_t *perm, m = InflSubsetSize(N, fraction);

  PetscFunctionBegin;
  PetscCheck(fraction > 0 && fraction <= 1 && m >= 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-lds_mislabel_fraction %s of %" PRId64 " examples corrupts none or is outside (0, 1]; give e.g. 0.1", INFL_DSTR(fraction), N);
  PetscCall(PetscMalloc1(N, &perm));
  choose_members(seed, INFL_STREAM_MISLABEL, N, m, perm, flipped);
  PetscCall(PetscFree(perm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflMislabel(uint64_t seed, int64_t N, int64_t C, double fraction, const int64_t y[], int64_t yflip[], uint8_t flipped[])
{
  PetscFunctionBegin;
  PetscCheck(C >= 2, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "flipping labels needs at least 2 classes (the data have %" PRId64 ")", C);
  PetscCall(InflMislabelSelect(seed, N, fraction, flipped));
  for (int64_t i = 0; i < N; i++) {
    int64_t shift = 1 + (int64_t)(InflUniform(seed, (uint64_t)i, INFL_STREAM_MISLABEL + 256) * (double)(C - 1));
    if (shift > C - 1) shift = C - 1;
    yflip[i] = flipped[i] ? (y[i] + shift) % C : y[i];
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflDetectionRate(int64_t N, const double value[], const uint8_t flipped[], double top, double *rate)
{
  Ranked *w;
  int64_t k = InflSubsetSize(N, top), found = 0, total = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(N, &w));
  for (int64_t i = 0; i < N; i++) w[i] = (Ranked){-value[i], i}; /* descending value, index ascending */
  qsort(w, (size_t)N, sizeof(Ranked), cmp_ranked);
  for (int64_t i = 0; i < N; i++) total += flipped[i] != 0;
  for (int64_t r = 0; r < k && r < N; r++) found += flipped[w[r].i] != 0;
  *rate = total ? (double)found / (double)total : NAN;
  PetscCall(PetscFree(w));
  PetscFunctionReturn(0);
}

/* test_lds.c -- the pieces of the linear datamodeling score (include/infl/eval.h) against numpy/scipy
 * (tests/ref/make_lds_reference.py -> tests/ref/lds_ref.h5), at any rank count:
 *   InflSpearman on vectors with ties and a constant one (scipy.stats.spearmanr; NaN);
 *   InflLDSCompute on the synthetic lds.h5 (a diverged subset, a query with constant losses, tied scores);
 *   InflSubsetMask against the Python Philox Fisher-Yates (exact), and its sizes round(fraction N);
 *   InflMislabel against the Python flips (exact); InflDetectionRate on a hand-made ranking;
 *   InflGroupsCreate: contiguous groups covering every rank, sizes differing by at most one, the rule of eval.h
 *   (every rank busy when the tasks divide evenly), forced group sizes; errors;
 *   InflDataCreateSubset: rows and labels equal to the parent's, replaced labels, hashes that tell subsets apart;
 *   token sequences (the windows of tests/ref/gpt2_bytes_text.txt for the GPT-2 fixture): subsets equal to the
 *   parent's windows (shard and random access); InflDataCorruptWindow against the Python Philox permutation (exact);
 *   InflDataCreateCorrupted: the chosen windows permuted (the same tokens, another order), the others unchanged;
 *   InflQueryLosses of windows and InflQuerySequenceLosses equal to the fixture's InflModelSequenceLoss;
 *   InflTasksRun: a set of tasks in groups, one diverging (left out), results equal to the direct computation,
 *   restored from its partial file;
 *   InflEnsembleCombine: the mean of the normalized members (every normalization) and its top-k, computed directly;
 *   InflPearson and InflLOOCorrelation against scipy.stats.pearsonr / spearmanr (NaN loss changes left out);
 *   leave-one-out training (InflTrainOptions.exclude): with one full batch per epoch, masking an example equals
 *   training on the subset without it; with smaller batches it changes the model (and masks only that example). */
#include <infl/eval.h>
#include <infl/checkpoint.h>
#include <stdlib.h>
#include "io/check.h"
#include <math.h>

static char refpath[PETSC_MAX_PATH_LEN];

static PetscErrorCode test_spearman(MPI_Comm comm)
{
  hid_t   f;
  int64_t dims[2];
  int     nd;
  double *x, *y, *rho;

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, refpath, PETSC_FALSE, &f));
  PetscCall(InflH5GetDims(f, "/spearman/x", &nd, dims));
  PetscCall(PetscMalloc3(dims[0] * dims[1], &x, dims[0] * dims[1], &y, dims[0], &rho));
  PetscCall(InflH5ReadArray(f, "/spearman/x", H5T_NATIVE_DOUBLE, 2, dims, NULL, x));
  PetscCall(InflH5ReadArray(f, "/spearman/y", H5T_NATIVE_DOUBLE, 2, dims, NULL, y));
  PetscCall(InflH5ReadArray(f, "/spearman/rho", H5T_NATIVE_DOUBLE, 1, dims, NULL, rho));
  PetscCall(InflH5Close(&f));
  for (int64_t k = 0; k < dims[0]; k++) {
    double r;
    PetscCall(InflSpearman((PetscInt)dims[1], x + k * dims[1], y + k * dims[1], &r));
    if (isnan(rho[k])) EXPECT(isnan(r), "spearman %d: expected NaN (a constant vector), got %g", (int)k, r);
    else EXPECT(fabs(r - rho[k]) < 1e-12, "spearman %d: %.17g, scipy %.17g", (int)k, r, rho[k]);
  }
  {
    double a[1] = {1}, r;
    PetscCall(InflSpearman(1, a, a, &r));
    EXPECT(isnan(r), "spearman of one pair must be NaN");
  }
  PetscCall(PetscFree3(x, y, rho));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_lds_synth(MPI_Comm comm, const char src[])
{
  char      path[PETSC_MAX_PATH_LEN];
  hid_t     f;
  int64_t   dm[2], dl[2], ds[2];
  int       nd, *status;
  uint8_t  *masks;
  double   *losses, *scores, *per, *ref, lds, want;
  PetscBool valid[64];
  PetscInt  nq;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/ref/lds_synth.h5", src));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &f));
  PetscCall(InflH5GetDims(f, "/masks", &nd, dm));
  PetscCall(InflH5GetDims(f, "/query_losses", &nd, dl));
  PetscCall(PetscMalloc3(dm[0] * dm[1], &masks, dl[0] * dl[1], &losses, dm[0], &status));
  PetscCall(InflH5ReadArray(f, "/masks", H5T_NATIVE_UINT8, 2, dm, NULL, masks));
  PetscCall(InflH5ReadArray(f, "/query_losses", H5T_NATIVE_DOUBLE, 2, dl, NULL, losses));
  PetscCall(InflH5ReadArray(f, "/status", H5T_NATIVE_INT, 1, dm, NULL, status));
  PetscCall(InflH5Close(&f));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/ref/lds_synth_scores.h5", src));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &f));
  PetscCall(InflH5GetDims(f, "/scores", &nd, ds));
  PetscCall(PetscMalloc3(ds[0] * ds[1], &scores, ds[0], &per, ds[0], &ref));
  PetscCall(InflH5ReadArray(f, "/scores", H5T_NATIVE_DOUBLE, 2, ds, NULL, scores));
  PetscCall(InflH5Close(&f));
  PetscCall(InflH5Open(comm, refpath, PETSC_FALSE, &f));
  PetscCall(InflH5ReadArray(f, "/synth/per_query", H5T_NATIVE_DOUBLE, 1, ds, NULL, ref));
  PetscCall(InflH5GetAttrDouble(f, "/synth", "lds", &want));
  PetscCall(InflH5Close(&f));
  for (int64_t j = 0; j < dm[0]; j++) valid[j] = status[j] == INFL_TASK_DONE ? PETSC_TRUE : PETSC_FALSE;
  PetscCall(InflLDSCompute((PetscInt)dm[0], dm[1], (PetscInt)ds[0], masks, valid, losses, scores, per, &lds, &nq));
  for (int64_t q = 0; q < ds[0]; q++) {
    if (isnan(ref[q])) EXPECT(isnan(per[q]), "synthetic query %d: expected NaN (constant losses), got %g", (int)q, per[q]);
    else EXPECT(fabs(per[q] - ref[q]) < 1e-12, "synthetic query %d: %.17g, scipy %.17g", (int)q, per[q], ref[q]);
  }
  EXPECT(fabs(lds - want) < 1e-12 && nq == ds[0] - 1, "synthetic LDS %.17g over %d queries, scipy %.17g over %d", lds, (int)nq, want, (int)ds[0] - 1);
  { /* fewer than 3 valid subsets: an error */
    for (int64_t j = 2; j < dm[0]; j++) valid[j] = PETSC_FALSE;
    EXPECT_FAIL(PETSC_COMM_SELF, InflLDSCompute((PetscInt)dm[0], dm[1], (PetscInt)ds[0], masks, valid, losses, scores, per, &lds, &nq), "at least 3 subsets", "two valid subsets");
  }
  PetscCall(PetscFree3(masks, losses, status));
  PetscCall(PetscFree3(scores, per, ref));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_masks(MPI_Comm comm)
{
  hid_t   f;
  int64_t dims[2] = {5, 37}, d1[1] = {40};
  uint8_t ref[5 * 37], mask[1000], other[1000], flipped[40], rflipped[40];
  int64_t y[40], yflip[40], ryflip[40];

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, refpath, PETSC_FALSE, &f));
  PetscCall(InflH5ReadArray(f, "/masks/mask", H5T_NATIVE_UINT8, 2, dims, NULL, ref));
  PetscCall(InflH5ReadArray(f, "/mislabel/y", H5T_NATIVE_INT64, 1, d1, NULL, y));
  PetscCall(InflH5ReadArray(f, "/mislabel/yflip", H5T_NATIVE_INT64, 1, d1, NULL, ryflip));
  PetscCall(InflH5ReadArray(f, "/mislabel/flipped", H5T_NATIVE_UINT8, 1, d1, NULL, rflipped));
  PetscCall(InflH5Close(&f));
  for (PetscInt j = 0; j < 5; j++) {
    PetscCall(InflSubsetMask(11, j, 37, 0.4, mask));
    for (int i = 0; i < 37; i++) EXPECT(mask[i] == ref[j * 37 + i], "mask of subset %d, entry %d: %d, Python %d", (int)j, i, mask[i], ref[j * 37 + i]);
  }
  for (int64_t N = 1; N <= 1000; N += 37)
    for (double fr = 0.05; fr <= 1.0; fr += 0.15) {
      int64_t m = InflSubsetSize(N, fr), c = 0, same = 0;
      if (m < 1) {
        EXPECT_FAIL(PETSC_COMM_SELF, InflSubsetMask(0, 0, N, fr, mask), "selects no example", "empty subset");
        continue;
      }
      PetscCall(InflSubsetMask(7, 3, N, fr, mask));
      PetscCall(InflSubsetMask(7, 4, N, fr, other));
      for (int64_t i = 0; i < N; i++) {
        c += mask[i];
        same += mask[i] == other[i];
      }
      EXPECT(c == m && m == (int64_t)floor(fr * N + 0.5), "N %d fraction %g: %d members, expected %d", (int)N, fr, (int)c, (int)m);
      EXPECT(N < 100 || m == N || same < N, "N %d: subsets 3 and 4 are equal", (int)N);
    }
  EXPECT_FAIL(PETSC_COMM_SELF, InflSubsetMask(0, 0, 10, 1.5, mask), "must lie in (0, 1]", "fraction 1.5");
  PetscCall(InflMislabel(3, 40, 10, 0.25, y, yflip, flipped));
  for (int i = 0; i < 40; i++) {
    EXPECT(flipped[i] == rflipped[i] && yflip[i] == ryflip[i], "mislabel %d: flipped %d label %d, Python %d %d", i, flipped[i], (int)yflip[i], rflipped[i], (int)ryflip[i]);
    EXPECT(!flipped[i] || (yflip[i] != y[i] && yflip[i] >= 0 && yflip[i] < 10), "mislabel %d: label %d -> %d", i, (int)y[i], (int)yflip[i]);
  }
  { /* ranking: flipped examples 1, 4, 7 of 10; values put 4 and 7 first, 1 last */
    double  v[10] = {5, 0, 3, 3, 9, 2, 1, 8, 4, 6}, rate;
    uint8_t fl[10] = {0, 1, 0, 0, 1, 0, 0, 1, 0, 0};
    PetscCall(InflDetectionRate(10, v, fl, 0.2, &rate));
    EXPECT(fabs(rate - 2.0 / 3) < 1e-15, "detection rate in the top 20%%: %g, expected 2/3", rate);
    PetscCall(InflDetectionRate(10, v, fl, 0.5, &rate));
    EXPECT(fabs(rate - 2.0 / 3) < 1e-15, "detection rate in the top 50%%: %g, expected 2/3", rate);
    PetscCall(InflDetectionRate(10, v, fl, 1.0, &rate));
    EXPECT(rate == 1.0, "detection rate of all: %g", rate);
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode test_groups(MPI_Comm comm)
{
  PetscMPIInt size, rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  for (PetscInt T = 1; T <= 9; T++)
    for (PetscInt gs = 0; gs <= size; gs++) {
      InflGroups g;
      int        color = -1, *all, mn = 1 << 30, mx = 0;
      PetscCall(InflGroupsCreate(comm, T, gs, &g));
      PetscCall(PetscMalloc1(size, &all));
      color = (int)g.group;
      PetscCallMPI(MPI_Allgather(&color, 1, MPI_INT, all, 1, MPI_INT, comm));
      for (int r = 1; r < size; r++) EXPECT(all[r] >= all[r - 1] && all[r] <= all[r - 1] + 1, "T %d: groups not contiguous", (int)T);
      EXPECT(all[0] == 0 && all[size - 1] == g.ngroups - 1, "T %d: %d groups but the last rank is in group %d", (int)T, (int)g.ngroups, all[size - 1]);
      for (PetscInt c = 0; c < g.ngroups; c++) {
        int n = 0;
        for (int r = 0; r < size; r++) n += all[r] == c;
        mn = PetscMin(mn, n);
        mx = PetscMax(mx, n);
      }
      if (gs == 0) {
        EXPECT(mx - mn <= 1 && g.ngroups <= PetscMin(size, T), "T %d P %d: %d groups of %d..%d ranks", (int)T, size, (int)g.ngroups, mn, mx);
        if (T % size == 0) EXPECT(g.ngroups == size, "T %d P %d: %d groups, expected one per rank", (int)T, size, (int)g.ngroups);
        if (size % T == 0) EXPECT(g.ngroups == T, "T %d P %d: %d groups, expected one per task", (int)T, size, (int)g.ngroups);
      } else EXPECT(g.ngroups == size / gs && mn >= gs, "group size %d of %d ranks: %d groups, smallest %d", (int)gs, size, (int)g.ngroups, mn);
      PetscCall(PetscFree(all));
      PetscCall(InflGroupsDestroy(&g));
    }
  {
    InflGroups g;
    EXPECT_FAIL(comm, InflGroupsCreate(comm, 0, 0, &g), "at least one task", "no task");
    EXPECT_FAIL(comm, InflGroupsCreate(comm, 3, size + 1, &g), "group size", "too large");
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode test_subset(MPI_Comm comm)
{
  InflData    train, a, b, c;
  int64_t     idx[7] = {3, 0, 99, 50, 50, 17, 64}, lab[7] = {9, 8, 7, 6, 5, 4, 3}, d, start, count;
  float       x[784], y[784];
  int64_t     ya, yb;
  const char *ha, *hb, *hc;

  PetscFunctionBegin;
  PetscCall(InflDataOpen(comm, "idx:/usr/share/datasets/fashion-mnist/train", 100, &train));
  PetscCall(InflDataGetSizes(train, NULL, &d, NULL));
  PetscCall(InflDataCreateSubset(train, comm, 7, idx, NULL, "a", &a));
  PetscCall(InflDataCreateSubset(train, comm, 7, idx, lab, "a", &b));
  PetscCall(InflDataCreateSubset(train, comm, 7, idx, NULL, "c", &c));
  for (int64_t i = 0; i < 7; i++) {
    PetscCall(InflDataGetExamples(train, 1, &idx[i], x, &ya));
    PetscCall(InflDataGetExamples(a, 1, &i, y, &yb));
    EXPECT(ya == yb && !memcmp(x, y, sizeof(float) * d), "subset entry %d differs from parent example %d", (int)i, (int)idx[i]);
    PetscCall(InflDataGetExamples(b, 1, &i, y, &yb));
    EXPECT(yb == lab[i] && !memcmp(x, y, sizeof(float) * d), "relabeled subset entry %d: label %d, expected %d", (int)i, (int)yb, (int)lab[i]);
  }
  {
    const float   *xs;
    const int64_t *ys;
    PetscCall(InflDataGetShard(a, &start, &count, &xs, &ys));
    for (int64_t i = 0; i < count; i++) {
      PetscCall(InflDataGetExamples(train, 1, &idx[start + i], x, &ya));
      EXPECT(ys[i] == ya && !memcmp(xs + i * d, x, sizeof(float) * d), "shard entry %d", (int)(start + i));
    }
  }
  PetscCall(InflDataGetHash(a, &ha));
  PetscCall(InflDataGetHash(b, &hb));
  PetscCall(InflDataGetHash(c, &hc));
  EXPECT(strcmp(ha, hb) && strcmp(ha, hc) && strcmp(hb, hc), "subset hashes must differ by labels and tag");
  {
    int64_t bad = 100;
    InflData e;
    EXPECT_FAIL(comm, InflDataCreateSubset(train, comm, 1, &bad, NULL, NULL, &e), "outside [0, 100)", "index out of range");
  }
  PetscCall(InflDataDestroy(&a));
  PetscCall(InflDataDestroy(&b));
  PetscCall(InflDataDestroy(&c));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

static int cmp_int32(const void *a, const void *b)
{
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static PetscErrorCode test_sequences(MPI_Comm comm, const char src[])
{
  char           mpath[PETSC_MAX_PATH_LEN], text[PETSC_MAX_PATH_LEN];
  InflModel      model;
  InflData       train, sub, cor;
  int64_t        N, d, idx[5] = {7, 0, 43, 7, 20}, start, count, o1[2], o2[2];
  int32_t        t1[64], t2[64], ref[3][13];
  uint8_t       *flip;
  const int32_t *stok;
  const int64_t *soff;
  const char    *h1, *h2;
  PetscInt       ncor = 0, nchanged = 0;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(mpath, sizeof(mpath), "%s/tests/ref/gpt2_bytes", src));
  PetscCall(PetscSNPrintf(text, sizeof(text), "text:%s/tests/ref/gpt2_bytes_text.txt", src));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, mpath));
  PetscCall(InflDataOpen(comm, text, 0, &train));
  PetscCall(InflModelCheckData(model, train));
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  EXPECT(d <= 16, "windows of at most 16 tokens expected, got %d", (int)d);
  /* a subset: its windows are the parent's (random access and shard) */
  PetscCall(InflDataCreateSubset(train, comm, 5, idx, NULL, "s", &sub));
  PetscCall(InflModelCheckData(model, sub));
  for (int64_t i = 0; i < 5; i++) {
    PetscCall(InflDataGetSequences(train, 1, &idx[i], t1, o1));
    PetscCall(InflDataGetSequences(sub, 1, &i, t2, o2));
    EXPECT(o1[1] == o2[1] && !memcmp(t1, t2, sizeof(int32_t) * o1[1]), "sequence subset entry %d differs from window %d", (int)i, (int)idx[i]);
  }
  PetscCall(InflDataGetSequenceShard(sub, &start, &count, &stok, &soff));
  for (int64_t i = 0; i < count; i++) {
    PetscCall(InflDataGetSequences(train, 1, &idx[start + i], t1, o1));
    EXPECT(soff[i + 1] - soff[i] == o1[1] && !memcmp(stok + soff[i], t1, sizeof(int32_t) * o1[1]), "sequence shard entry %d", (int)(start + i));
  }
  {
    int64_t  lab[5] = {0};
    InflData e;
    EXPECT_FAIL(comm, InflDataCreateSubset(train, comm, 5, idx, lab, "s", &e), "no labels to replace", "labels for sequences");
  }
  /* the permutation of a window against the Python Philox */
  {
    hid_t   f;
    int64_t dims[2] = {3, 13};
    PetscCall(InflH5Open(comm, refpath, PETSC_FALSE, &f));
    PetscCall(InflH5ReadArray(f, "/corrupt/tokens", H5T_NATIVE_INT32, 2, dims, NULL, ref));
    PetscCall(InflH5Close(&f));
    for (int k = 0; k < 3; k++) {
      const int64_t w[3] = {0, 1, 7};
      int32_t       t[13];
      for (int i = 0; i < 13; i++) t[i] = i;
      PetscCall(InflDataCorruptWindow(5, w[k], 13, t));
      EXPECT(!memcmp(t, ref[k], sizeof(t)), "InflDataCorruptWindow(5, %d) differs from the Python permutation", (int)w[k]);
    }
  }
  /* corrupted documents: a quarter of the windows permuted, the others the parent's */
  PetscCall(PetscMalloc1(N, &flip));
  PetscCall(InflMislabelSelect(3, N, 0.25, flip));
  PetscCall(InflDataCreateCorrupted(train, comm, 3, flip, "mislabel", &cor));
  PetscCall(InflModelCheckData(model, cor));
  for (int64_t i = 0; i < N; i++) {
    PetscCall(InflDataGetSequences(train, 1, &i, t1, o1));
    PetscCall(InflDataGetSequences(cor, 1, &i, t2, o2));
    EXPECT(o1[1] == o2[1], "corrupted window %d changed its length", (int)i);
    if (!flip[i]) EXPECT(!memcmp(t1, t2, sizeof(int32_t) * o1[1]), "window %d is not corrupted but differs", (int)i);
    else {
      ncor++;
      nchanged += memcmp(t1, t2, sizeof(int32_t) * o1[1]) != 0;
      qsort(t1, (size_t)o1[1], sizeof(int32_t), cmp_int32);
      qsort(t2, (size_t)o2[1], sizeof(int32_t), cmp_int32);
      EXPECT(!memcmp(t1, t2, sizeof(int32_t) * o1[1]), "corrupted window %d holds other tokens than the original", (int)i);
    }
  }
  EXPECT(ncor == InflSubsetSize(N, 0.25) && nchanged == ncor, "%d of %d corrupted windows changed (%d expected)", (int)nchanged, (int)ncor, (int)InflSubsetSize(N, 0.25));
  PetscCall(InflDataGetSequenceShard(cor, &start, &count, &stok, &soff));
  for (int64_t i = 0; i < count; i++) {
    int64_t g = start + i;
    PetscCall(InflDataGetSequences(cor, 1, &g, t1, o1));
    EXPECT(!memcmp(stok + soff[i], t1, sizeof(int32_t) * o1[1]), "corrupted shard entry %d differs from random access", (int)g);
  }
  PetscCall(InflDataGetHash(train, &h1));
  PetscCall(InflDataGetHash(cor, &h2));
  EXPECT(strcmp(h1, h2), "the corrupted copy must have its own hash");
  /* query losses: windows (next-token loss) and explicit targets, against InflModelSequenceLoss */
  {
    int64_t q[2] = {3, 40};
    double  l[2], r;
    int32_t tg[16];
    PetscCall(InflQueryLosses(model, train, 2, q, l));
    for (int k = 0; k < 2; k++) {
      PetscCall(InflDataGetSequences(train, 1, &q[k], t1, o1));
      PetscCall(InflModelSequenceLoss(model, 1, o1, t1, NULL, &r, NULL));
      EXPECT(l[k] == r && r > 0, "query loss of window %d: %g, expected %g", (int)q[k], l[k], r);
    }
    for (int64_t t = 0; t < o1[1]; t++) tg[t] = t + 1 < o1[1] && t >= 4 ? t1[t + 1] : -1; /* a completion from token 5 */
    PetscCall(InflQuerySequenceLosses(model, 1, o1, t1, tg, l));
    PetscCall(InflModelSequenceLoss(model, 1, o1, t1, tg, &r, NULL));
    EXPECT(l[0] == r && r > 0, "completion loss %g, expected %g", l[0], r);
  }
  PetscCall(PetscFree(flip));
  PetscCall(InflDataDestroy(&cor));
  PetscCall(InflDataDestroy(&sub));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

/* Task t: result r = (t + 1) * (r + 1) summed over the group's ranks / size; task 2 diverges. */
static PetscErrorCode toy_task(void *ctx, MPI_Comm comm, PetscInt t, double res[])
{
  PetscMPIInt size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCheck(t != 2, comm, PETSC_ERR_FP, "training diverged (toy)");
  for (PetscInt r = 0; r < 3; r++) {
    res[r] = (double)(t + 1) * (r + 1) / size;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &res[r], 1, MPI_DOUBLE, MPI_SUM, comm));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode test_tasks(MPI_Comm comm)
{
  const PetscInt T = 7, R = 3;
  int            status[7], st2[7];
  double         res[21], res2[21];
  InflTaskSet    ts = {T, R, "toy", toy_task, NULL};
  const char    *partial = "test_lds_tasks.partial";

  PetscFunctionBegin;
  PetscCall(InflRemoveAll(comm, partial));
  PetscCall(InflTasksRestore(comm, "toy", T, R, partial, "k", status, res));
  for (PetscInt t = 0; t < T; t++) EXPECT(status[t] == INFL_TASK_TODO, "fresh status");
  for (PetscInt i = 0; i < T * R; i++) res[i] = NAN; /* the rows of tasks that do not finish must not reach the partial file */
  status[5] = INFL_TASK_DONE; /* already done: not run again */
  for (PetscInt r = 0; r < R; r++) res[5 * R + r] = -1;
  PetscCall(InflTasksRun(comm, "toy", &ts, 0, partial, "k", status, res));
  for (PetscInt t = 0; t < T; t++) {
    EXPECT(status[t] == (t == 2 ? INFL_TASK_DIVERGED : INFL_TASK_DONE), "task %d status %d", (int)t, status[t]);
    for (PetscInt r = 0; r < R && t != 2; r++) EXPECT(fabs(res[t * R + r] - (t == 5 ? -1 : (double)(t + 1) * (r + 1))) < 1e-12, "task %d result %d: %g", (int)t, (int)r, res[t * R + r]);
  }
  PetscCall(InflTasksRestore(comm, "toy", T, R, partial, "k", st2, res2));
  for (PetscInt t = 0; t < T; t++) EXPECT(st2[t] == status[t] && (t == 2 || !memcmp(res + t * R, res2 + t * R, sizeof(double) * R)), "restored task %d", (int)t);
  EXPECT_FAIL(comm, InflTasksRestore(comm, "toy", T, R, partial, "other", st2, res2), "other", "partial of another key");
  PetscCall(InflRemoveAll(comm, partial));
  PetscFunctionReturn(0);
}

/* InflEnsembleCombine on three member files written here (Q 3, N 23; values a function of (member, q, i)): the
 * ensemble's /scores and top-k against the mean of the normalized members computed directly, every normalization. */
static PetscErrorCode test_ensemble(MPI_Comm comm)
{
  const PetscInt Q = 3, M = 3, K = 4;
  const int64_t  N = 23;
  PetscMPIInt    size, rank;
  int64_t        start, count, dims[2] = {3, 23}, dq[1] = {3}, qi[3] = {4, 1, 7};
  double        *blk, *all, *ens, *ref;
  const char    *paths[3] = {"test_lds_m0.h5", "test_lds_m1.h5", "test_lds_m2.h5"};

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  InflPartition(N, size, rank, &start, &count);
  PetscCall(PetscMalloc4(Q * count + 1, &blk, M * Q * N, &all, Q * N, &ens, Q * N, &ref));
  for (PetscInt m = 0; m < M; m++) {
    hid_t f;
    for (PetscInt q = 0; q < Q; q++)
      for (int64_t i = 0; i < N; i++) all[(m * Q + q) * N + i] = (float)((m + 1) * (q + 2) * (InflUniform(5, (uint64_t)(m * 100 + q * 30 + i), 9) - 0.4));
    for (PetscInt q = 0; q < Q; q++)
      for (int64_t k = 0; k < count; k++) blk[q * count + k] = all[(m * Q + q) * N + start + k];
    PetscCall(InflH5Create(comm, paths[m], PETSC_TRUE, &f));
    PetscCall(InflH5WriteProvenance(f, comm, "score", "modelhash", "trainhash", "queryhash"));
    PetscCall(InflH5WriteArray(f, "/query_indices", H5T_NATIVE_INT64, 1, dq, qi));
    PetscCall(InflH5ColumnBlock(f, "/scores", 2, dims, start, count, blk, PETSC_TRUE));
    PetscCall(InflH5Close(&f));
  }
  for (int norm = 0; norm < 3; norm++) {
    hid_t   f;
    int64_t tk[12], dk[2] = {3, 4};
    for (int64_t j = 0; j < Q * N; j++) ref[j] = 0;
    for (PetscInt m = 0; m < M; m++) {
      double tot = 0;
      for (int64_t j = 0; j < Q * N; j++) tot += all[m * Q * N + j] * all[m * Q * N + j];
      for (PetscInt q = 0; q < Q; q++) {
        double ss = 0, sc;
        for (int64_t i = 0; i < N; i++) ss += all[(m * Q + q) * N + i] * all[(m * Q + q) * N + i];
        sc = norm == INFL_ENSEMBLE_NONE ? 1 : norm == INFL_ENSEMBLE_QUERY ? 1 / sqrt(ss / N) : 1 / sqrt(tot / (N * Q));
        for (int64_t i = 0; i < N; i++) ref[q * N + i] += sc * all[(m * Q + q) * N + i] / M;
      }
    }
    PetscCall(InflEnsembleCombine(comm, M, paths, (InflEnsembleNormalize)norm, K, PETSC_TRUE, PETSC_FALSE, "test_lds_ens.h5"));
    PetscCall(InflH5Open(comm, "test_lds_ens.h5", PETSC_FALSE, &f));
    PetscCall(InflH5ReadArray(f, "/scores", H5T_NATIVE_DOUBLE, 2, dims, NULL, ens));
    PetscCall(InflH5ReadArray(f, "/topk/train_indices", H5T_NATIVE_INT64, 2, dk, NULL, tk));
    PetscCall(InflH5Close(&f));
    for (int64_t j = 0; j < Q * N; j++) EXPECT(fabs(ens[j] - ref[j]) <= 1e-6 * fabs(ref[j]) + 1e-12, "ensemble (%s) entry %d: %.9g, expected %.9g", InflEnsembleNormalizeNames[norm], (int)j, ens[j], ref[j]);
    for (PetscInt q = 0; q < Q; q++) { /* the top entry is the largest of the reference */
      int64_t best = 0;
      for (int64_t i = 1; i < N; i++)
        if (ref[q * N + i] > ref[q * N + best]) best = i;
      EXPECT(tk[q * K] == best, "ensemble (%s) query %d: top %d, expected %d", InflEnsembleNormalizeNames[norm], (int)q, (int)tk[q * K], (int)best);
    }
  }
  {
    const char *bad[2] = {paths[0], "test_lds_ens.h5"}; /* scores of other queries: refused */
    hid_t       f;
    int64_t     q2[3] = {4, 1, 8};
    PetscCall(InflH5Create(comm, "test_lds_m3.h5", PETSC_TRUE, &f));
    PetscCall(InflH5WriteProvenance(f, comm, "score", "modelhash", "trainhash", "queryhash"));
    PetscCall(InflH5WriteArray(f, "/query_indices", H5T_NATIVE_INT64, 1, dq, q2));
    PetscCall(InflH5ColumnBlock(f, "/scores", 2, dims, start, count, blk, PETSC_TRUE));
    PetscCall(InflH5Close(&f));
    bad[1] = "test_lds_m3.h5";
    EXPECT_FAIL(comm, InflEnsembleCombine(comm, 2, bad, INFL_ENSEMBLE_QUERY, K, PETSC_FALSE, PETSC_FALSE, "test_lds_bad.h5"), "members must score the same queries", "other queries");
  }
  for (int m = 0; m < 4; m++) {
    char p[64];
    PetscCall(PetscSNPrintf(p, sizeof(p), "test_lds_m%d.h5", m));
    PetscCall(InflRemoveAll(comm, p));
  }
  PetscCall(InflRemoveAll(comm, "test_lds_ens.h5"));
  PetscCall(PetscFree4(blk, all, ens, ref));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_loo_correlation(MPI_Comm comm)
{
  hid_t   f;
  int64_t d1[1], dk[1], dc[2], ds[2], idx[16];
  double  x[64], y[64], r, rref[1], change[64], scores[256], p, sp, pref, sref;
  int64_t npref;
  PetscInt np;

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, refpath, PETSC_FALSE, &f));
  PetscCall(InflH5ReadArray(f, "/pearson/x", H5T_NATIVE_DOUBLE, 1, NULL, d1, x));
  PetscCall(InflH5ReadArray(f, "/pearson/y", H5T_NATIVE_DOUBLE, 1, NULL, NULL, y));
  PetscCall(InflH5ReadArray(f, "/pearson/r", H5T_NATIVE_DOUBLE, 1, NULL, NULL, rref));
  PetscCall(InflH5ReadArray(f, "/loo_synth/idx", H5T_NATIVE_INT64, 1, NULL, dk, idx));
  PetscCall(InflH5ReadArray(f, "/loo_synth/change", H5T_NATIVE_DOUBLE, 2, NULL, dc, change));
  PetscCall(InflH5ReadArray(f, "/loo_synth/scores", H5T_NATIVE_DOUBLE, 2, NULL, ds, scores));
  PetscCall(InflH5GetAttrDouble(f, "/loo_synth", "pearson", &pref));
  PetscCall(InflH5GetAttrDouble(f, "/loo_synth", "spearman", &sref));
  PetscCall(InflH5GetAttrInt(f, "/loo_synth", "npairs", &npref));
  PetscCall(InflH5Close(&f));
  PetscCall(InflPearson((PetscInt)d1[0], x, y, &r));
  EXPECT(fabs(r - rref[0]) < 1e-13, "pearson %.17g, scipy %.17g", r, rref[0]);
  {
    double c[3] = {2, 2, 2};
    PetscCall(InflPearson(3, c, x, &r));
    EXPECT(isnan(r), "pearson of a constant vector must be NaN, got %g", r);
  }
  PetscCall(InflLOOCorrelation((PetscInt)dk[0], idx, (PetscInt)dc[1], ds[1], change, scores, &p, &sp, &np));
  EXPECT(np == npref, "loo pairs %d, numpy %d", (int)np, (int)npref);
  EXPECT(fabs(p - pref) < 1e-13 && fabs(sp - sref) < 1e-13, "loo Pearson %.17g Spearman %.17g, scipy %.17g %.17g", p, sp, pref, sref);
  {
    int64_t bad = ds[1];
    EXPECT_FAIL(PETSC_COMM_SELF, InflLOOCorrelation(1, &bad, (PetscInt)dc[1], ds[1], change, scores, &p, &sp, NULL), "outside the", "loo index out of range");
  }
  PetscFunctionReturn(0);
}

/* Train a 784-8-10 MLP on data (seed 5, SGD with momentum, 3 epochs of batch `batch`), masking examples excl (n) of it; params out. */
static PetscErrorCode train_masked(MPI_Comm comm, InflData data, PetscInt batch, PetscInt n, const int64_t excl[], float out[], int64_t *np)
{
  InflModel        model;
  InflTrainOptions opt;
  PetscInt         dims[3] = {784, 8, 10};
  float           *p;

  PetscFunctionBegin;
  opt.optimizer = INFL_OPT_SGD; /* linear in the gradient: rounding is not amplified as by Adam's division */
  PetscCall(InflTrainOptionsSetDefaults(&opt));
  opt.epochs   = 3;
  opt.batch    = batch;
  opt.seed     = 5;
  opt.nexclude = n;
  opt.exclude  = excl;
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, 3, dims, INFL_ACT_RELU, 5));
  PetscCall(InflModelTrain(model, data, NULL, &opt));
  PetscCall(InflModelGetParameters(model, np, &p, NULL));
  PetscCall(PetscArraycpy(out, p, *np));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

static double rel_diff(int64_t n, const float a[], const float b[])
{
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return sqrt(num / den);
}

static PetscErrorCode test_loo_training(MPI_Comm comm)
{
  InflData train, sub;
  int64_t  idx[40], excl[2] = {7, 23}, np;
  float   *full, *masked, *subset, *masked2;
  const int64_t P = 784 * 8 + 8 + 8 * 10 + 10;

  PetscFunctionBegin;
  PetscCall(InflDataOpen(comm, "idx:/usr/share/datasets/fashion-mnist/train", 40, &train));
  for (int64_t i = 0, k = 0; i < 40; i++)
    if (i != excl[0]) idx[k++] = i;
  PetscCall(InflDataCreateSubset(train, comm, 39, idx, NULL, "loo test", &sub));
  PetscCall(PetscMalloc4(P, &full, P, &masked, P, &subset, P, &masked2));
  /* one batch per epoch: masking example 7 = the subset of the other 39 (the sums in another order) */
  PetscCall(train_masked(comm, train, 64, 1, excl, masked, &np));
  EXPECT(np == P, "parameters %d, expected %d", (int)np, (int)P);
  PetscCall(train_masked(comm, sub, 64, 0, NULL, subset, &np));
  PetscCall(train_masked(comm, train, 64, 0, NULL, full, &np));
  EXPECT(rel_diff(P, masked, subset) < 1e-5, "full batch: masked training differs from the subset's by %g relative", rel_diff(P, masked, subset));
  EXPECT(rel_diff(P, masked, full) > 1e-4, "full batch: masking example 7 changed the model by only %g relative", rel_diff(P, masked, full));
  /* batches of 8: the same order of the other examples; masking changes the model, masking two more than one */
  PetscCall(train_masked(comm, train, 8, 0, NULL, full, &np));
  PetscCall(train_masked(comm, train, 8, 1, excl, masked, &np));
  PetscCall(train_masked(comm, train, 8, 2, excl, masked2, &np));
  EXPECT(rel_diff(P, masked, full) > 1e-4 && rel_diff(P, masked2, masked) > 1e-4, "batches of 8: masking changed the model by %g (one) and %g (the second)", rel_diff(P, masked, full), rel_diff(P, masked2, masked));
  {
    int64_t bad = 40;
    EXPECT_FAIL(comm, train_masked(comm, train, 8, 1, &bad, masked, &np), "masked training example 40 is outside the training set of 40", "masked index out of range");
  }
  PetscCall(PetscFree4(full, masked, subset, masked2));
  PetscCall(InflDataDestroy(&sub));
  PetscCall(InflDataDestroy(&train));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  const char *src;
  MPI_Comm    comm;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_ARG_NULL, "set INFL_SOURCE_DIR to the repository root (ctest does)");
  PetscCall(PetscSNPrintf(refpath, sizeof(refpath), "%s/tests/ref/lds_ref.h5", src));
  PetscCall(test_spearman(comm));
  PetscCall(test_lds_synth(comm, src));
  PetscCall(test_masks(comm));
  PetscCall(test_groups(comm));
  PetscCall(test_subset(comm));
  PetscCall(test_sequences(comm, src));
  PetscCall(test_tasks(comm));
  PetscCall(test_ensemble(comm));
  PetscCall(test_loo_correlation(comm));
  PetscCall(test_loo_training(comm));
  PetscCall(PetscPrintf(comm, "test_lds: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

static const char help[] = "The gpt2 model type and token-sequence data: the tiny GPT-2 of tests/ref/gpt2_tiny loaded through InflModelLoad,\n"
                           "its captures (InflModelCaptureSequences) against the PyTorch float64 reference (tests/ref/gpt2_tiny_ref.h5) in\n"
                           "double (1e-10) and single (2e-5) precision, per-sequence gradients vs the reference gradient and the captures\n"
                           "([W^T | b]), the sequence loss and InflModelEvaluateSequences vs the reference token losses, save / load; text:\n"
                           "(fortunes, byte-level) and tokens: (HDF5) data sets: windows, shards at any rank count, random access; errors.\n";
#include "io/check.h"
#include <infl/model.h>
#include <infl/gpt2.h>
#include <math.h>
#include <sys/stat.h>

#define MAXB 8
#define MAXL 8
#define TOL32 2e-5

typedef struct {
  PetscInt B, N;
  int64_t  off[MAXB + 1];
  int32_t *tokens;                       /* (N) */
  double  *token_loss;                   /* (N) */
  double   seq_loss[MAXB];
  double  *a[MAXL], *ds[MAXL];           /* (N, din+1), (N, dout) */
  double  *grad;                         /* (nparams) the batch's gradient in the slab layout */
} Ref;

static double max_abs(int64_t n, const double x[])
{
  double m = 0;
  for (int64_t i = 0; i < n; i++) m = PetscMax(m, fabs(x[i]));
  return m;
}

static PetscErrorCode read_reference(MPI_Comm comm, const char path[], InflModel m, Ref *r)
{
  hid_t       f;
  int64_t     dims[2], n;
  int         nd;
  PetscInt    L;
  InflLinear *lin;
  int64_t    *tok64;
  float      *params;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(m, &L, &lin));
  PetscCall(InflModelGetParameters(m, &n, &params, NULL));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &f));
  PetscCall(InflH5GetDims(f, "/offsets", &nd, dims));
  EXPECT(nd == 1 && dims[0] >= 2 && dims[0] <= MAXB + 1, "bad /offsets in %s", path);
  r->B = (PetscInt)dims[0] - 1;
  PetscCall(InflH5ReadArray(f, "/offsets", H5T_NATIVE_INT64, 1, dims, NULL, r->off));
  r->N = (PetscInt)r->off[r->B];
  PetscCall(PetscMalloc1(r->N, &r->tokens));
  PetscCall(PetscMalloc1(r->N, &r->token_loss));
  PetscCall(PetscMalloc1(r->N, &tok64));
  PetscCall(PetscMalloc1(n, &r->grad));
  {
    int64_t d1[1] = {r->N}, db[1] = {r->B};
    PetscCall(InflH5ReadArray(f, "/tokens", H5T_NATIVE_INT64, 1, d1, NULL, tok64));
    PetscCall(InflH5ReadArray(f, "/token_loss", H5T_NATIVE_DOUBLE, 1, d1, NULL, r->token_loss));
    PetscCall(InflH5ReadArray(f, "/seq_loss", H5T_NATIVE_DOUBLE, 1, db, NULL, r->seq_loss));
  }
  for (PetscInt t = 0; t < r->N; t++) r->tokens[t] = (int32_t)tok64[t];
  PetscCall(PetscFree(tok64));
  EXPECT(L == MAXL, "the fixture model exposes %d linear layers, the test expects %d", (int)L, MAXL);
  for (PetscInt l = 0; l < L; l++) {
    char    name[64];
    int64_t da[2] = {r->N, lin[l].din + 1}, dd[2] = {r->N, lin[l].dout};
    PetscCall(PetscMalloc2(r->N * da[1], &r->a[l], r->N * dd[1], &r->ds[l]));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/capture/%d/a", (int)l));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 2, da, NULL, r->a[l]));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/capture/%d/ds", (int)l));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 2, dd, NULL, r->ds[l]));
  }
  /* the reference gradient of every captured layer's weight (din, dout) and bias, in the slab layout */
  PetscCall(PetscArrayzero(r->grad, n));
  for (PetscInt l = 0; l < L; l++) {
    const char *kn[4] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    char        name[96];
    int64_t     dw[2] = {lin[l].din, lin[l].dout}, db[1] = {lin[l].dout};
    PetscCall(PetscSNPrintf(name, sizeof(name), "/grad/h.%d.%s.weight", (int)(l / 4), kn[l % 4]));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 2, dw, NULL, r->grad + (lin[l].W - params)));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/grad/h.%d.%s.bias", (int)(l / 4), kn[l % 4]));
    PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, 1, db, NULL, r->grad + (lin[l].b - params)));
  }
  PetscCall(InflH5Close(&f));
  PetscFunctionReturn(0);
}

static PetscErrorCode free_reference(Ref *r)
{
  PetscFunctionBegin;
  for (PetscInt l = 0; l < MAXL; l++) PetscCall(PetscFree2(r->a[l], r->ds[l]));
  PetscCall(PetscFree(r->tokens));
  PetscCall(PetscFree(r->token_loss));
  PetscCall(PetscFree(r->grad));
  PetscFunctionReturn(0);
}

/* Load through InflModelLoad: type, sizes, layers, the W view's Conv1D layout. */
static PetscErrorCode test_load(MPI_Comm comm, const char dir[], const char file[], InflModel *out)
{
  InflModel   m, m2;
  const char *type, *h1, *h2;
  PetscInt    L, V, P;
  InflLinear *lin;
  PetscBool   seq;
  float      *params;
  int64_t     n;

  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, &m));
  PetscCall(InflModelLoad(m, dir));
  PetscCall(InflModelGetType(m, &type));
  EXPECT(!strcmp(type, "gpt2"), "a GPT-2 directory loaded as type \"%s\"", type);
  PetscCall(InflModelIsSequential(m, &seq));
  EXPECT(seq, "gpt2 is not a sequence model");
  PetscCall(InflModelGetSequenceSizes(m, &V, &P));
  EXPECT(V == 96 && P == 16, "vocab_size %d, n_positions %d; config.json says 96, 16", (int)V, (int)P);
  PetscCall(InflModelGetLayers(m, &L, &lin));
  {
    const PetscInt din[4] = {32, 32, 32, 128}, dout[4] = {96, 32, 128, 32};
    for (PetscInt l = 0; l < L; l++) EXPECT(lin[l].din == din[l % 4] && lin[l].dout == dout[l % 4], "layer %d is %d -> %d, expected %d -> %d", (int)l, (int)lin[l].din, (int)lin[l].dout, (int)din[l % 4], (int)dout[l % 4]);
  }
  /* W views the Conv1D weight (din, dout): h.0.attn.c_attn.weight starts after wte (96 x 32), wpe (16 x 32), ln_1 */
  PetscCall(InflModelGetParameters(m, &n, &params, NULL));
  EXPECT(lin[0].W - params == 96 * 32 + 16 * 32 + 2 * 32, "layer 0's W is at slab offset %d", (int)(lin[0].W - params));
  EXPECT(lin[0].b - lin[0].W == 32 * 96, "layer 0's bias follows its (32, 96) weight");
  {
    InflGPT2 g;
    float   *w;
    int64_t  numel, shape[2];
    int      ndim;
    PetscCall(InflGPT2Create(comm, &g));
    PetscCall(InflGPT2Load(g, dir));
    PetscCall(InflGPT2GetTensor(g, "h.1.mlp.c_proj.weight", &w, NULL, &numel, &ndim, shape));
    EXPECT(ndim == 2 && shape[0] == 128 && shape[1] == 32, "c_proj weight shape");
    for (int64_t i = 0; i < numel; i++) EXPECT(w[i] == lin[7].W[i], "layer 7's W view differs from h.1.mlp.c_proj.weight at %d", (int)i);
    PetscCall(InflGPT2Destroy(&g));
  }
  /* the file with config.json beside it: the same model */
  PetscCall(InflModelCreate(comm, &m2));
  PetscCall(InflModelLoad(m2, file));
  PetscCall(InflModelGetHash(m, &h1));
  PetscCall(InflModelGetHash(m2, &h2));
  EXPECT(!strcmp(h1, h2), "the directory and its model.safetensors load different models");
  PetscCall(InflModelDestroy(&m2));
  /* row verbs are refused with the verb to use */
  {
    InflCapture *cap;
    float        x[1] = {0};
    int64_t      y[1] = {0};
    PetscCall(InflCaptureCreate(m, 1, &cap));
    EXPECT(cap->Tmax == 16, "capture of 1 sequence holds %d rows, expected n_positions 16", (int)cap->Tmax);
    EXPECT_FAIL(comm, InflModelCapture(m, 1, x, y, cap), "consumes token sequences, not rows of features; use InflModelCaptureSequences", "row capture on gpt2");
    EXPECT_FAIL(comm, InflCaptureCheckRankOne(cap, "EK-FAC fit"), "EK-FAC fit: sequences of more than one token", "rank-one stages refuse sequences");
    PetscCall(InflCaptureDestroy(&cap));
  }
  PetscCall(PetscPrintf(comm, "load: type gpt2, %d layers, Conv1D W views, directory == file (hash %.12s)\n", (int)L, h1));
  *out = m;
  PetscFunctionReturn(0);
}

/* Captures through the generic object against the reference; losses; per-sequence gradients. */
static PetscErrorCode test_capture(MPI_Comm comm, InflModel m, const Ref *r, InflPrecision prec, double tol)
{
  InflCapture *cap;
  PetscInt     L;
  InflLinear  *lin;
  double       worst = 0, seq[MAXB];
  int64_t      npred;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(m, prec));
  PetscCall(InflModelGetLayers(m, &L, &lin));
  PetscCall(InflCaptureCreate(m, r->B, &cap));
  PetscCall(InflModelCaptureSequences(m, r->B, r->off, r->tokens, NULL, cap));
  EXPECT(cap->B == r->B && cap->T == r->N, "capture holds %d sequences, %d rows; expected %d, %d", (int)cap->B, (int)cap->T, (int)r->B, (int)r->N);
  for (PetscInt b = 0; b <= r->B; b++) EXPECT(cap->offsets[b] == r->off[b], "capture offsets[%d] = %d, expected %d", (int)b, (int)cap->offsets[b], (int)r->off[b]);
  for (PetscInt b = 0; b < r->B; b++) EXPECT(fabs(cap->loss[b] - r->seq_loss[b]) <= tol * r->seq_loss[b], "%s: loss of sequence %d is %.17g, reference %.17g", prec ? "double" : "single", (int)b, cap->loss[b], r->seq_loss[b]);
  for (PetscInt l = 0; l < L; l++) {
    int64_t       na = (int64_t)r->N * (lin[l].din + 1), nd = (int64_t)r->N * lin[l].dout;
    double       *ba, *bd;
    const double *a, *ds;
    double        ea = 0, ed = 0;
    PetscCall(PetscMalloc2(na, &ba, nd, &bd));
    InflCaptureGetDouble(cap, l, ba, bd, &a, &ds);
    for (int64_t i = 0; i < na; i++) ea = PetscMax(ea, fabs(a[i] - r->a[l][i]));
    for (int64_t i = 0; i < nd; i++) ed = PetscMax(ed, fabs(ds[i] - r->ds[l][i]));
    ea /= max_abs(na, r->a[l]);
    ed /= max_abs(nd, r->ds[l]);
    EXPECT(ea <= tol && ed <= tol, "%s: layer %d: captured a differs from the reference by %.3g, Ds by %.3g of their max abs (> %.0e)", prec ? "double" : "single", (int)l, ea, ed, tol);
    worst = PetscMax(worst, PetscMax(ea, ed));
    PetscCall(PetscFree2(ba, bd));
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflModelSequenceLoss(m, r->B, r->off, r->tokens, NULL, seq, &npred));
  EXPECT(npred == r->N - r->B, "%d predicted tokens, expected %d", (int)npred, (int)(r->N - r->B));
  for (PetscInt b = 0; b < r->B; b++) EXPECT(fabs(seq[b] - r->seq_loss[b]) <= tol * r->seq_loss[b], "sequence loss %d: %.17g, reference %.17g", (int)b, seq[b], r->seq_loss[b]);
  PetscCall(PetscPrintf(comm, "capture (%s) through InflModelCaptureSequences: a, Ds max error %.2e of max abs (bound %.0e); losses match\n", prec ? "double" : "single", worst, tol));
  PetscFunctionReturn(0);
}

/* Per-sequence gradients (double): their sum is the reference batch gradient of the captured layers, and sequence b's
 * layer block is the transpose of sum over its rows of Ds a^T ([W^T | b]) of the double capture. */
static PetscErrorCode test_gradients(MPI_Comm comm, InflModel m, const Ref *r)
{
  int64_t      n;
  float       *params, *grads, g0;
  double      *g, *sum, e = 0, et = 0;
  PetscInt     L;
  InflLinear  *lin;
  InflCapture *cap;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(m, INFL_PREC_SINGLE)); /* computed in double whatever the precision */
  PetscCall(InflModelGetParameters(m, &n, &params, &grads));
  PetscCall(InflModelGetLayers(m, &L, &lin));
  grads[3] = 0.5f; /* the gradient slab must be left as it was */
  PetscCall(PetscMalloc2(r->B * n, &g, n, &sum));
  PetscCall(InflModelSequenceGradients(m, r->B, r->off, r->tokens, NULL, g));
  g0 = grads[3];
  EXPECT(g0 == 0.5f, "InflModelSequenceGradients changed the gradient slab");
  grads[3] = 0;
  for (int64_t i = 0; i < n; i++) {
    sum[i] = 0;
    for (PetscInt b = 0; b < r->B; b++) sum[i] += g[b * n + i];
  }
  for (PetscInt l = 0; l < L; l++) {
    int64_t o = lin[l].W - params, nw = (int64_t)lin[l].din * lin[l].dout + lin[l].dout;
    double  mx = max_abs(nw, r->grad + o);
    for (int64_t i = 0; i < nw; i++) e = PetscMax(e, fabs(sum[o + i] - r->grad[o + i]) / mx);
  }
  EXPECT(e <= 1e-10, "sum of per-sequence gradients differs from the reference gradient by %.3g of its max abs", e);
  PetscCall(InflModelSetPrecision(m, INFL_PREC_DOUBLE));
  PetscCall(InflCaptureCreate(m, r->B, &cap));
  PetscCall(InflModelCaptureSequences(m, r->B, r->off, r->tokens, NULL, cap));
  for (PetscInt b = 0; b < r->B; b++)
    for (PetscInt l = 0; l < L; l++) {
      PetscInt din = lin[l].din, dout = lin[l].dout;
      int64_t  o   = lin[l].W - params;
      double   mx  = 0, el = 0;
      for (int64_t i = 0; i < (int64_t)din * dout + dout; i++) mx = PetscMax(mx, fabs(g[b * n + o + i]));
      for (PetscInt o2 = 0; o2 < dout; o2++)
        for (PetscInt i = 0; i <= din; i++) {
          double s = 0, v;
          for (int64_t t = cap->offsets[b]; t < cap->offsets[b + 1]; t++) s += cap->ds64[l][t * dout + o2] * cap->a64[l][t * (din + 1) + i];
          v  = i < din ? g[b * n + o + (int64_t)i * dout + o2] : g[b * n + (lin[l].b - params) + o2]; /* W (din, dout), then b */
          el = PetscMax(el, fabs(s - v));
        }
      et = PetscMax(et, el / mx);
    }
  EXPECT(et <= 1e-12, "a sequence's captured sum_t Ds a^T differs from its gradient [W^T | b] by %.3g of its max abs", et);
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree2(g, sum));
  PetscCall(PetscPrintf(comm, "per-sequence gradients: sum vs reference %.2e, each vs its capture rows ([W^T | b]) %.2e\n", e, et));
  PetscFunctionReturn(0);
}

/* True-Fisher targets: InflModelSampleTargets and InflModelCaptureSequencesSampled draw the same targets (a function of
 * seed, global index, position), the sampled capture equals the capture with those targets given, and the targets
 * do not depend on the batch (each sequence alone gives the same). */
static PetscErrorCode test_sampled(MPI_Comm comm, InflModel m, const Ref *r)
{
  InflCapture *c1, *c2;
  int32_t      t1[MAXB * 16], t2[MAXB * 16], t3[16];
  int64_t      index[MAXB], one[2];
  PetscInt     L, differ = 0;
  double       e = 0;

  PetscFunctionBegin;
  PetscCall(InflModelSetPrecision(m, INFL_PREC_DOUBLE));
  PetscCall(InflModelGetLayers(m, &L, NULL));
  for (PetscInt b = 0; b < r->B; b++) index[b] = 100 + 7 * b;
  PetscCall(InflModelSampleTargets(m, r->B, r->off, r->tokens, index, 42, t1));
  PetscCall(InflCaptureCreate(m, r->B, &c1));
  PetscCall(InflCaptureCreate(m, r->B, &c2));
  PetscCall(InflModelCaptureSequencesSampled(m, r->B, r->off, r->tokens, index, 42, t2, c1));
  for (PetscInt t = 0; t < r->N; t++) EXPECT(t1[t] == t2[t], "row %d: SampleTargets drew %d, CaptureSequencesSampled %d", (int)t, (int)t1[t], (int)t2[t]);
  for (PetscInt b = 0; b < r->B; b++) {
    EXPECT(t1[r->off[b + 1] - 1] == -1, "sequence %d: its last row has target %d, expected -1", (int)b, (int)t1[r->off[b + 1] - 1]);
    one[0] = 0;
    one[1] = r->off[b + 1] - r->off[b];
    PetscCall(InflModelSampleTargets(m, 1, one, r->tokens + r->off[b], &index[b], 42, t3));
    for (int64_t t = 0; t < one[1]; t++) EXPECT(t3[t] == t1[r->off[b] + t], "sequence %d alone: target at position %d is %d, in the batch %d", (int)b, (int)t, (int)t3[t], (int)t1[r->off[b] + t]);
  }
  for (PetscInt t = 0; t < r->N; t++) differ += t1[t] >= 0 && (t + 1 >= r->N || t1[t] != r->tokens[t + 1]);
  EXPECT(differ > 0, "every sampled target equals the next token: the sampling is not drawing from the model");
  PetscCall(InflModelCaptureSequences(m, r->B, r->off, r->tokens, t1, c2));
  for (PetscInt l = 0; l < L; l++)
    for (int64_t i = 0; i < (int64_t)r->N * c1->dout[l]; i++) e = PetscMax(e, fabs(c1->ds64[l][i] - c2->ds64[l][i]));
  for (PetscInt b = 0; b < r->B; b++) EXPECT(c1->loss[b] == c2->loss[b], "sequence %d: sampled capture loss %.17g, with the targets given %.17g", (int)b, c1->loss[b], c2->loss[b]);
  EXPECT(e == 0, "the sampled capture differs from the capture with its targets given by %.3g", e);
  PetscCall(InflCaptureDestroy(&c1));
  PetscCall(InflCaptureDestroy(&c2));
  PetscCall(PetscPrintf(comm, "sampled targets: the same from SampleTargets, CaptureSequencesSampled and each sequence alone (%d of %d differ from the data); sampled capture == capture with them given\n", (int)differ, (int)(r->N - r->B)));
  PetscFunctionReturn(0);
}

/* tokens: HDF5 with the reference sequences as documents: windows, shards, random access, evaluation. */
static PetscErrorCode write_tokens_h5(MPI_Comm comm, const char path[], PetscInt B, const int64_t off[], const int32_t tok[])
{
  hid_t   f;
  int64_t dt[1] = {off[B]}, doff[1] = {B + 1};

  PetscFunctionBegin;
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &f));
  PetscCall(InflH5WriteArray(f, "/offsets", H5T_NATIVE_INT64, 1, doff, off));
  {
    int64_t *t64;
    PetscCall(PetscMalloc1(off[B], &t64));
    for (int64_t i = 0; i < off[B]; i++) t64[i] = tok[i];
    PetscCall(InflH5WriteArray(f, "/tokens", H5T_NATIVE_INT64, 1, dt, t64));
    PetscCall(PetscFree(t64));
  }
  PetscCall(InflH5Close(&f));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_tokens_data(MPI_Comm comm, InflModel m, const Ref *r)
{
  InflData       data;
  int64_t        N, d, ncls, start, count, all[MAXB], ntok;
  const int32_t *stok;
  const int64_t *soff;
  int32_t        tok[MAXB * 16];
  int64_t        off[MAXB + 1];
  double         loss, ppl, ref = 0;
  PetscInt       npred = 0;
  PetscMPIInt    rank, size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(write_tokens_h5(comm, "gpt2_type_tokens.h5", r->B, r->off, r->tokens));
  PetscCall(InflDataOpen(comm, "tokens:gpt2_type_tokens.h5", 0, &data));
  EXPECT_FAIL(comm, InflDataGetSequenceShard(data, NULL, NULL, NULL, NULL), "are not set up; check the data against the model", "shard before the model");
  PetscCall(InflModelCheckData(m, data));
  PetscCall(InflDataGetSizes(data, &N, &d, &ncls));
  EXPECT(N == r->B && d == 16 && ncls == 96, "tokens data: N %d, d %d, classes %d; expected %d, 16, 96", (int)N, (int)d, (int)ncls, (int)r->B);
  PetscCall(InflDataGetSequenceShard(data, &start, &count, &stok, &soff));
  {
    int64_t s0, c0;
    InflPartition(N, size, rank, &s0, &c0);
    EXPECT(s0 == start && c0 == count, "shard [%d, +%d), InflPartition says [%d, +%d)", (int)start, (int)count, (int)s0, (int)c0);
  }
  for (int64_t s = 0; s < count; s++) {
    int64_t gs = start + s;
    EXPECT(soff[s + 1] - soff[s] == r->off[gs + 1] - r->off[gs], "shard sequence %d has length %d, expected %d", (int)gs, (int)(soff[s + 1] - soff[s]), (int)(r->off[gs + 1] - r->off[gs]));
    for (int64_t p = 0; p < soff[s + 1] - soff[s]; p++) EXPECT(stok[soff[s] + p] == r->tokens[r->off[gs] + p], "shard sequence %d position %d", (int)gs, (int)p);
  }
  for (int64_t i = 0; i < N; i++) all[i] = N - 1 - i; /* any order, any rank */
  PetscCall(InflDataGetSequences(data, (PetscInt)N, all, tok, off));
  for (int64_t k = 0; k < N; k++) {
    int64_t gs = all[k];
    EXPECT(off[k + 1] - off[k] == r->off[gs + 1] - r->off[gs], "GetSequences: length of sequence %d", (int)gs);
    for (int64_t p = 0; p < off[k + 1] - off[k]; p++) EXPECT(tok[off[k] + p] == r->tokens[r->off[gs] + p], "GetSequences: sequence %d position %d", (int)gs, (int)p);
  }
  EXPECT_FAIL(comm, InflDataGetSequences(data, 1, &N, tok, off), "is outside [0, 4)", "index N");
  /* evaluation against the reference token losses: total / predicted tokens */
  for (PetscInt b = 0; b < r->B; b++)
    for (int64_t t = r->off[b]; t + 1 < r->off[b + 1]; t++) {
      ref += r->token_loss[t];
      npred++;
    }
  ref /= npred;
  PetscCall(InflModelSetPrecision(m, INFL_PREC_DOUBLE));
  PetscCall(InflModelEvaluateSequences(m, data, 3, &loss, &ppl, &ntok));
  EXPECT(ntok == npred, "evaluation counted %d predicted tokens, expected %d", (int)ntok, (int)npred);
  EXPECT(fabs(loss - ref) <= 1e-10 * ref, "double: mean loss per token %.17g, reference %.17g", loss, ref);
  EXPECT(fabs(ppl - exp(ref)) <= 1e-9 * exp(ref), "perplexity %.17g, expected exp(%.17g)", ppl, ref);
  PetscCall(InflModelSetPrecision(m, INFL_PREC_SINGLE));
  PetscCall(InflModelEvaluateSequences(m, data, 1, &loss, &ppl, &ntok));
  EXPECT(fabs(loss - ref) <= TOL32 * ref, "single: mean loss per token %.17g, reference %.17g", loss, ref);
  PetscCall(PetscPrintf(comm, "tokens: data: %d sequences, shards and random access match; mean loss per token %.10f (reference %.10f), perplexity %.6f\n", (int)N, loss, ref, ppl));
  /* one document of all the reference tokens (42): windows of 32 tokens are longer than n_positions (16) */
  PetscCall(InflDataDestroy(&data));
  {
    int64_t one[2] = {0, r->N};
    PetscCall(write_tokens_h5(comm, "gpt2_type_long.h5", 1, one, r->tokens));
  }
  PetscCall(InflDataOpen(comm, "tokens:gpt2_type_long.h5", 0, &data));
  PetscCall(InflDataSetName(data, "train"));
  PetscCall(InflDataSetSequenceLength(data, 32));
  EXPECT_FAIL(comm, InflModelCheckData(m, data), "train data tokens:gpt2_type_long.h5: sequence 0 has 32 tokens, more than the model's n_positions = 16", "window longer than n_positions");
  PetscCall(InflDataDestroy(&data));
  /* a token id outside the vocabulary */
  {
    int64_t one[2] = {0, 3};
    int32_t bad[3] = {5, 96, 7};
    PetscCall(write_tokens_h5(comm, "gpt2_type_badid.h5", 1, one, bad));
  }
  PetscCall(InflDataOpen(comm, "tokens:gpt2_type_badid.h5", 0, &data));
  EXPECT_FAIL(comm, InflModelCheckData(m, data), "gpt2_type_badid.h5: token 1 (document 0) has id 96, outside the vocabulary [0, 96)", "token id >= vocab_size");
  PetscCall(InflDataDestroy(&data));
  PetscFunctionReturn(0);
}

/* A byte-level GPT-2 (vocab 256, n_positions 8) with random weights, saved and loaded through InflModelLoad; a
 * fortunes file read as text: data: the windows are the documents' bytes cut as InflTokensGetSequences says. */
static PetscErrorCode test_text_data(MPI_Comm comm)
{
  const char    *docs[3] = {"hello world\n", "ab\n", "the quick brown fox jumps\n"};
  const char     text[]  = "hello world\n%\nab\n%\nthe quick brown fox jumps\n%\n";
  InflGPT2       g;
  InflGPT2Config cfg = {8, 1, 2, 256, 8, 1e-5, INFL_GPT2_GELU_NEW};
  InflModel      m, mlp;
  InflData       data;
  float         *p;
  int64_t        n, N, start, count, ew = 0, eoff[32], ntok;
  int32_t        etok[256], tok[256];
  int64_t        off[33], idx[32];
  const int32_t *stok;
  const int64_t *soff;
  double         loss, ppl, seq[32], tot = 0;
  PetscMPIInt    rank, size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(InflGPT2Create(comm, &g));
  PetscCall(InflGPT2SetUp(g, &cfg));
  PetscCall(InflGPT2GetParameters(g, &n, &p, NULL));
  for (int64_t i = 0; i < n; i++) p[i] = (float)(0.2 * (InflUniform(11, (uint64_t)i, 0) - 0.5));
  {
    float *w;
    PetscCall(InflGPT2GetTensor(g, "ln_f.weight", &w, NULL, NULL, NULL, NULL));
    for (int i = 0; i < 8; i++) w[i] = 1.0f;
  }
  PetscCall(InflGPT2Save(g, "gpt2_type_bytes", 0, NULL, NULL));
  PetscCall(InflGPT2Destroy(&g));
  if (rank == 0) {
    FILE *f = fopen("gpt2_type_fortunes.txt", "w");
    EXPECT(f, "cannot write gpt2_type_fortunes.txt");
    fputs(text, f);
    fclose(f);
  }
  PetscCallMPI(MPI_Barrier(comm));
  /* the expected windows, written out independently of InflTokens */
  eoff[0] = 0;
  for (int k = 0; k < 3; k++) {
    int64_t L = (int64_t)strlen(docs[k]);
    for (int64_t s0 = 0;; s0 += 7) {
      int64_t len = PetscMin(8, L - s0);
      for (int64_t j = 0; j < len; j++) etok[eoff[ew] + j] = (unsigned char)docs[k][s0 + j];
      eoff[ew + 1] = eoff[ew] + len;
      ew++;
      if (s0 + len >= L) break;
    }
  }
  PetscCall(InflModelCreate(comm, &m));
  PetscCall(InflModelLoad(m, "gpt2_type_bytes"));
  PetscCall(InflDataOpen(comm, "text:gpt2_type_fortunes.txt", 0, &data));
  PetscCall(InflModelCheckData(m, data)); /* no tokenizer files beside the model, vocab 256: byte-level */
  PetscCall(InflDataGetSizes(data, &N, NULL, NULL));
  EXPECT(N == ew && N == 7, "text data: %d windows, expected %d", (int)N, (int)ew);
  for (int64_t i = 0; i < N; i++) idx[i] = i;
  PetscCall(InflDataGetSequences(data, (PetscInt)N, idx, tok, off));
  for (int64_t i = 0; i <= N; i++) EXPECT(off[i] == eoff[i], "text window offsets[%d] = %d, expected %d", (int)i, (int)off[i], (int)eoff[i]);
  for (int64_t i = 0; i < eoff[N]; i++) EXPECT(tok[i] == etok[i], "text token %d is %d, expected byte %d", (int)i, (int)tok[i], (int)etok[i]);
  PetscCall(InflDataGetSequenceShard(data, &start, &count, &stok, &soff));
  {
    int64_t s0, c0;
    InflPartition(N, size, rank, &s0, &c0);
    EXPECT(s0 == start && c0 == count, "text shard [%d, +%d), InflPartition says [%d, +%d)", (int)start, (int)count, (int)s0, (int)c0);
  }
  for (int64_t s = 0; s < count; s++)
    for (int64_t j = 0; j < soff[s + 1] - soff[s]; j++) EXPECT(stok[soff[s] + j] == etok[eoff[start + s] + j], "text shard: window %d position %d", (int)(start + s), (int)j);
  /* the evaluation does not depend on the rank count: the whole set in one batch on this rank */
  PetscCall(InflModelSetPrecision(m, INFL_PREC_DOUBLE));
  PetscCall(InflModelSequenceLoss(m, (PetscInt)N, off, tok, NULL, seq, NULL));
  for (int64_t i = 0; i < N; i++) tot += seq[i];
  PetscCall(InflModelEvaluateSequences(m, data, 2, &loss, &ppl, &ntok));
  EXPECT(ntok == eoff[N] - N, "text: %d predicted tokens, expected %d", (int)ntok, (int)(eoff[N] - N));
  EXPECT(fabs(loss - tot / ntok) <= 1e-12 * loss, "text: mean loss per token %.17g at %d ranks, %.17g in one batch", loss, size, tot / ntok);
  EXPECT(fabs(loss - log(256.0)) < 0.5, "text: a small random model should be near uniform: loss %.3g vs log 256 = %.3g", loss, log(256.0));
  PetscCall(PetscPrintf(comm, "text: data (fortunes, byte-level): %d windows as expected, shards match; mean loss %.10f, perplexity %.4f\n", (int)N, loss, ppl));
  /* text data for an MLP, rows data for gpt2 */
  {
    char path[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(path, sizeof(path), "%s/tests/ref/mlp_small.safetensors", getenv("INFL_SOURCE_DIR")));
    PetscCall(InflModelCreate(comm, &mlp));
    PetscCall(InflModelLoad(mlp, path));
    EXPECT_FAIL(comm, InflModelCheckData(mlp, data), "holds token sequences but the model is an MLP", "text data for an MLP");
    PetscCall(InflModelDestroy(&mlp));
  }
  PetscCall(InflDataDestroy(&data));
  PetscCall(InflModelDestroy(&m));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_rows_for_gpt2(MPI_Comm comm, InflModel m)
{
  hid_t    f;
  InflData data;
  float    x[6]  = {0, 1, 2, 3, 4, 5};
  int64_t  y[3]  = {0, 1, 0}, dx[2] = {3, 2}, dy[1] = {3};

  PetscFunctionBegin;
  PetscCall(InflH5Create(comm, "gpt2_type_rows.h5", PETSC_TRUE, &f));
  PetscCall(InflH5WriteArray(f, "/inputs", H5T_NATIVE_FLOAT, 2, dx, x));
  PetscCall(InflH5WriteArray(f, "/labels", H5T_NATIVE_INT64, 1, dy, y));
  PetscCall(InflH5Close(&f));
  PetscCall(InflDataOpen(comm, "h5:gpt2_type_rows.h5", 0, &data));
  PetscCall(InflDataSetName(data, "query"));
  EXPECT_FAIL(comm, InflModelCheckData(m, data), "query data h5:gpt2_type_rows.h5 holds rows of features, but the model", "rows data for gpt2");
  PetscCall(InflDataDestroy(&data));
  PetscFunctionReturn(0);
}

/* The default chunk of sequence data (docs/FORMATS.md, "Chunks and memory"): 8192 tokens (512 windows of 16) for a
 * vocabulary of 256, and for GPT-2's 50,257 the bytes of those 512 windows of the same model with a vocabulary of
 * 256, so fewer windows (about 17 here, not 512: the logits alone would take 1.6 GB); a given chunk is used as is.
 * The expected count is computed from the two models' bytes per window (InflModelCaptureBytes), built in memory. */
static PetscErrorCode test_default_chunk(MPI_Comm comm)
{
  const PetscInt V[2] = {256, 50257};
  size_t         per[2];
  PetscInt       chunk[2], given = 512;
  InflModel      m[2];

  PetscFunctionBegin;
  for (int v = 0; v < 2; v++) {
    InflGPT2Config cfg = {16, 2, 2, V[v], 16, 1e-5, INFL_GPT2_GELU_NEW};
    PetscCall(InflModelCreate(comm, &m[v]));
    PetscCall(InflModelSetType(m[v], "gpt2"));
    PetscCall(InflModelSetUpGPT2(m[v], &cfg, 1));
    per[v]   = InflModelCaptureBytes(m[v]);
    chunk[v] = 512;
    PetscCall(InflModelGetChunk(m[v], comm, "test", PETSC_FALSE, 100000, 0, per[v], &chunk[v]));
  }
  PetscCall(InflModelGetChunk(m[1], comm, "test", PETSC_TRUE, 100000, 0, per[1], &given));
  PetscCall(PetscPrintf(comm, "default chunk: %d windows of 16 for vocabulary 256 (%zu bytes each), %d for 50257 (%zu bytes each); given 512: %d\n", (int)chunk[0], per[0], (int)chunk[1], per[1], (int)given));
  EXPECT(chunk[0] == 512, "the default chunk of a vocabulary-256 GPT-2 with windows of 16 is %d windows, expected 8192 / 16 = 512", (int)chunk[0]);
  EXPECT(chunk[1] == (PetscInt)(512 * (double)per[0] / (double)per[1]), "the default chunk of a vocabulary-50257 GPT-2 is %d windows, expected floor(512 x %zu / %zu) = %d (the bytes of 512 windows at vocabulary 256)", (int)chunk[1], per[0], per[1], (int)(512 * (double)per[0] / (double)per[1]));
  EXPECT(chunk[1] >= 1 && chunk[1] < chunk[0] / 10, "the default chunk of a vocabulary-50257 GPT-2 (%d windows) is not well below the vocabulary-256 one (%d)", (int)chunk[1], (int)chunk[0]);
  EXPECT(given == 512, "a given chunk of 512 windows became %d", (int)given);
  for (int v = 0; v < 2; v++) PetscCall(InflModelDestroy(&m[v]));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  const char *src;
  char        dir[PETSC_MAX_PATH_LEN], file[PETSC_MAX_PATH_LEN], ref[PETSC_MAX_PATH_LEN];
  InflModel   m;
  Ref         r;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  PetscCheck(src, comm, PETSC_ERR_USER, "set INFL_SOURCE_DIR to the source tree (ctest does)");
  PetscCall(PetscSNPrintf(dir, sizeof(dir), "%s/tests/ref/gpt2_tiny", src));
  PetscCall(PetscSNPrintf(file, sizeof(file), "%s/tests/ref/gpt2_tiny/model.safetensors", src));
  PetscCall(PetscSNPrintf(ref, sizeof(ref), "%s/tests/ref/gpt2_tiny_ref.h5", src));
  PetscCall(test_load(comm, dir, file, &m));
  PetscCall(read_reference(comm, ref, m, &r));
  PetscCall(test_capture(comm, m, &r, INFL_PREC_DOUBLE, 1e-10));
  PetscCall(test_capture(comm, m, &r, INFL_PREC_SINGLE, TOL32));
  PetscCall(test_gradients(comm, m, &r));
  PetscCall(test_sampled(comm, m, &r));
  PetscCall(test_tokens_data(comm, m, &r));
  PetscCall(test_rows_for_gpt2(comm, m));
  PetscCall(test_text_data(comm));
  PetscCall(test_default_chunk(comm));
  /* save (Hugging Face layout + config.json) and load again: the same model */
  {
    InflModel   m2;
    const char *h1, *h2;
    PetscCall(InflModelSave(m, "gpt2_type_saved"));
    PetscCall(InflModelCreate(comm, &m2));
    PetscCall(InflModelLoad(m2, "gpt2_type_saved"));
    PetscCall(InflModelGetHash(m, &h1));
    PetscCall(InflModelGetHash(m2, &h2));
    EXPECT(!strcmp(h1, h2), "saved and loaded gpt2 differs: %s vs %s", h1, h2);
    PetscCall(InflModelDestroy(&m2));
  }
  /* a non-finite embedding (outside the captured layers) is found */
  {
    float *params, keep;
    PetscCall(InflModelCheckFinite(m));
    PetscCall(InflModelGetParameters(m, NULL, &params, NULL));
    keep      = params[5];
    params[5] = NAN;
    EXPECT_FAIL(comm, InflModelCheckFinite(m), "has a non-finite parameter nan. at index 5 of its parameter slab", "NaN in wte");
    params[5] = keep;
  }
  PetscCall(free_reference(&r));
  PetscCall(InflModelDestroy(&m));
  PetscCall(PetscPrintf(comm, "test_gpt2_type: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

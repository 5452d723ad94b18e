/* EK-FAC on the tiny GPT-2 (tests/ref/gpt2_tiny) against an independent float64 PyTorch reference
 * (tests/ref/make_ekfac_gpt2_reference.py -> tests/ref/ekfac_gpt2_ref.h5), for the empirical and the true Fisher,
 * in double and single precision, at any rank count, for the layer selections all (the 4 linear layers of every
 * block), mlp (mlp.c_fc, mlp.c_proj) and attn (attn.c_attn, attn.c_proj).
 *
 * The library's pieces, put together as a fit of token sequences does it: the 16 training sequences are sharded over
 * the ranks (InflPartition) and captured in chunks (InflModelCaptureSequences, or InflModelCaptureSequencesSampled
 * with the true Fisher's targets, which must equal those of the reference's own numpy sampler); A and S are summed
 * over the rows in double (dsyrk, as InflEKFACFit does), reduced and eigendecomposed by InflEigenSolve (scaled by
 * 1/tokens); the factors enter an InflEKFAC through a factors.h5 file and InflEKFACLoad (no public call sets up an
 * InflEKFAC for a sequence model otherwise); Lambda is summed by InflEKFACAccumulateLambda, reduced, divided by the
 * sequences and loaded, and the default damping set by InflEKFACSetDamping(PETSC_DEFAULT).  The queries' gradients
 * are preconditioned by InflEKFACPreconditionCapture (double), the training sequences scored by
 * InflScorerScoreCapture (sequence scores and per-token terms; a layer selection is scored with the unselected
 * layers' preconditioned gradients set to zero, so that the sums run over the selected layers only), and their
 * self-influence is the sum over the selected layers of InflEKFACSelfInfluenceCapture.
 *
 * Compared (docs/FIDELITY.md, "EK-FAC on GPT-2"), each as a fraction of its bound (printed; the test fails above 1).
 * In double precision every bound is 1e-10 relative: A and S entries to 1e-10 trace, eigenvalues to 1e-10 of the
 * largest, Lambda's total and the damping relative, Lambda summed over blocks (cluster of S eigenvalues) x (cluster
 * of A eigenvalues) to 1e-10 of the total (eigenvectors inside a cluster -- the null spaces of A and S, gaps below
 * 1e-8 of the largest eigenvalue -- are not determined, these sums are), query 0's preconditioned gradient
 * ||P - P_ref||_F / ||P_ref||_F, scores to 1e-10 ||P_q||_F ||g_m||_F and per-token terms to 1e-10 ||P_q||_F
 * ||Ds_t a_t^T||_F (norms over the selected layers, as docs/FORMATS.md scales scores), self-influence relative.
 * In single precision (the training captures in float, the queries in double as InflScorerSetQueries does) the
 * bounds of docs/FORMATS.md's table with tau = 2 d u + 2 N 2^-53 (d = 129, the widest layer input plus its bias;
 * u = 2^-24; N = 137 training tokens): 2 tau trace for A and S, 2 tau of the largest eigenvalue, 2 tau relative for
 * Lambda's total, its block sums (of the total) and the damping, tau ||P_q|| ||g_m|| for scores (and per-token terms
 * with the token's norm), 2 tau sqrt(kappa) relative for self-influence (kappa of FORMATS.md, the largest over the
 * selected layers); query 0's preconditioned gradient, which FORMATS.md does not bound, within tau kappa relative
 * (the condition number of the damped curvature times the relative perturbation tau).
 * Options: -chunk B (training sequences per capture, 3); -perturb_damping F, -perturb_rows K (multiply the damping
 * factor by F; add K to the token count that normalizes A and S) make the library's result wrong on purpose, to see
 * the test fail. */
static const char help[] = "EK-FAC on the tiny GPT-2 against the float64 PyTorch reference tests/ref/ekfac_gpt2_ref.h5.\n"
                           "  -chunk B            training sequences per capture (3)\n"
                           "  -perturb_damping F  multiply the damping factor by F (1: none; to see the test fail)\n"
                           "  -perturb_rows K     add K to the tokens that normalize A and S (0: none; to see the test fail)\n";

#include <infl/score.h>
#include <infl/eigen.h>
#include <infl/checkpoint.h>
#include <cblas.h>
#include <math.h>
#include "lib/infl_test.h"

#define NSEL 3
static const char *const sel_names[NSEL] = {"all", "mlp", "attn"};

typedef struct {
  int64_t  N, T, Q, TQ;     /* training sequences and tokens, query sequences and tokens */
  int64_t *toff, *qoff;     /* (N+1), (Q+1) */
  int32_t *tok, *qtok;      /* (T), (TQ) */
  int32_t *true_targets;    /* (T) the reference's sampled targets, -1 at the last row of each sequence */
  int64_t  seed;            /* of the true Fisher */
  PetscInt L;
  double  *train_norm2;     /* (L, N) ||DW_l(m)||_F^2, the data's targets */
  double  *token_norm2;     /* (L, T) ||Ds_t||^2 ||a_t||^2 */
  double   damping_factor;
} Fixture;

/* The reference values of one Fisher kind. */
typedef struct {
  double **A, **S, **eA, **eS, **Lambda, **P0; /* (L) per layer: (na, na), (nd, nd), (na), (nd), (nd, na), (nd, na) */
  double  *Lsum, *damping, *kappa;             /* (L) */
  double  *qnorm2;                             /* (L, Q) ||P_l(q)||_F^2 */
  PetscBool sel[NSEL][64];                     /* layer l in selection s */
  double  *scores[NSEL], *tokens[NSEL], *self[NSEL]; /* (Q, N), (Q, T), (N) summed over the selection's layers */
} Reference;

static char fixture_path[PETSC_MAX_PATH_LEN];

static PetscErrorCode read_array(hid_t f, const char name[], hid_t type, int64_t n, void *buf)
{
  int     nd;
  int64_t dims[8], total = 1;

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(f, name, &nd, dims));
  EXPECT(nd >= 0, "%s has no dataset %s; regenerate it with tests/ref/make_ekfac_gpt2_reference.py", fixture_path, name);
  for (int i = 0; i < nd; i++) total *= dims[i];
  EXPECT(total == n, "%s: %s has %" PRId64 " entries, expected %" PRId64, fixture_path, name, total, n);
  PetscCall(InflH5ReadArray(f, name, type, nd, NULL, dims, buf));
  PetscFunctionReturn(0);
}

/* Sequences of group grp: n, offsets (n+1), T tokens (int32). */
static PetscErrorCode read_sequences(hid_t f, const char grp[], int64_t *n, int64_t **off, int64_t *T, int32_t **tok)
{
  char     name[64];
  int      nd;
  int64_t  dims[8], *t64;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(name, sizeof(name), "%s/offsets", grp));
  PetscCall(InflH5GetDims(f, name, &nd, dims));
  EXPECT(nd == 1 && dims[0] >= 2, "%s: %s missing or empty", fixture_path, name);
  *n = dims[0] - 1;
  PetscCall(PetscMalloc1(dims[0], off));
  PetscCall(read_array(f, name, H5T_NATIVE_INT64, dims[0], *off));
  *T = (*off)[*n];
  PetscCall(PetscMalloc1(*T, &t64));
  PetscCall(PetscMalloc1(*T, tok));
  PetscCall(PetscSNPrintf(name, sizeof(name), "%s/tokens", grp));
  PetscCall(read_array(f, name, H5T_NATIVE_INT64, *T, t64));
  for (int64_t i = 0; i < *T; i++) (*tok)[i] = (int32_t)t64[i];
  PetscCall(PetscFree(t64));
  PetscFunctionReturn(0);
}

static PetscErrorCode read_fixture(MPI_Comm comm, InflLinear *lin, PetscInt L, Fixture *fx, Reference ref[2])
{
  hid_t    f;
  int64_t *t64, din[64], dout[64];
  char     name[128];

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, fixture_path, PETSC_FALSE, &f));
  PetscCall(read_sequences(f, "train", &fx->N, &fx->toff, &fx->T, &fx->tok));
  PetscCall(read_sequences(f, "query", &fx->Q, &fx->qoff, &fx->TQ, &fx->qtok));
  EXPECT(L <= 64, "model has %d layers, the test handles 64", (int)L);
  fx->L = L;
  PetscCall(read_array(f, "layer_din", H5T_NATIVE_INT64, L, din));
  PetscCall(read_array(f, "layer_dout", H5T_NATIVE_INT64, L, dout));
  for (PetscInt l = 0; l < L; l++) EXPECT(din[l] == lin[l].din && dout[l] == lin[l].dout, "%s: layer %d is %d -> %d, the model's %d -> %d", fixture_path, (int)l, (int)din[l], (int)dout[l], (int)lin[l].din, (int)lin[l].dout);
  PetscCall(PetscMalloc2(L * fx->N, &fx->train_norm2, L * fx->T, &fx->token_norm2));
  PetscCall(read_array(f, "train_norm2", H5T_NATIVE_DOUBLE, L * fx->N, fx->train_norm2));
  PetscCall(read_array(f, "token_norm2", H5T_NATIVE_DOUBLE, L * fx->T, fx->token_norm2));
  PetscCall(read_array(f, "fisher/true/seed", H5T_NATIVE_INT64, 1, &fx->seed));
  PetscCall(PetscMalloc1(fx->T, &t64));
  PetscCall(PetscMalloc1(fx->T, &fx->true_targets));
  PetscCall(read_array(f, "fisher/true/targets", H5T_NATIVE_INT64, fx->T, t64));
  for (int64_t i = 0; i < fx->T; i++) fx->true_targets[i] = (int32_t)t64[i];
  PetscCall(InflH5GetAttrDouble(f, "/", "damping_factor", &fx->damping_factor));
  for (int k = 0; k < 2; k++) {
    Reference  *r    = &ref[k];
    const char *kind = k ? "true" : "empirical";
    PetscCall(PetscMalloc6(L, &r->A, L, &r->S, L, &r->eA, L, &r->eS, L, &r->Lambda, L, &r->P0));
    PetscCall(PetscMalloc4(L, &r->Lsum, L, &r->damping, L, &r->kappa, L * fx->Q, &r->qnorm2));
    for (PetscInt l = 0; l < L; l++) {
      int64_t na = din[l] + 1, nd = dout[l];
      PetscCall(PetscMalloc6(na * na, &r->A[l], nd * nd, &r->S[l], na, &r->eA[l], nd, &r->eS[l], nd * na, &r->Lambda[l], nd * na, &r->P0[l]));
      PetscCall(PetscSNPrintf(name, sizeof(name), "A/%d", (int)l));
      PetscCall(read_array(f, name, H5T_NATIVE_DOUBLE, na * na, r->A[l]));
#define RD(field, buf, n) \
  do { \
    PetscCall(PetscSNPrintf(name, sizeof(name), "fisher/%s/layers/%d/%s", kind, (int)l, field)); \
    PetscCall(read_array(f, name, H5T_NATIVE_DOUBLE, n, buf)); \
  } while (0)
      RD("S", r->S[l], nd * nd);
      RD("eigenvalues_A", r->eA[l], na);
      RD("eigenvalues_S", r->eS[l], nd);
      RD("Lambda", r->Lambda[l], nd * na);
      RD("P_query0", r->P0[l], nd * na);
      RD("Lambda_sum", &r->Lsum[l], 1);
      RD("damping", &r->damping[l], 1);
      RD("kappa", &r->kappa[l], 1);
#undef RD
    }
    PetscCall(PetscSNPrintf(name, sizeof(name), "fisher/%s/query_norm2", kind));
    PetscCall(read_array(f, name, H5T_NATIVE_DOUBLE, L * fx->Q, r->qnorm2));
    for (int s = 0; s < NSEL; s++) {
      int64_t nl, layers[64];
      int     nd;
      PetscCall(PetscSNPrintf(name, sizeof(name), "fisher/%s/selection/%s/layers", kind, sel_names[s]));
      PetscCall(InflH5GetDims(f, name, &nd, &nl));
      EXPECT(nd == 1 && nl >= 1 && nl <= L, "%s: %s missing or of a wrong size", fixture_path, name);
      PetscCall(read_array(f, name, H5T_NATIVE_INT64, nl, layers));
      for (PetscInt l = 0; l < L; l++) r->sel[s][l] = PETSC_FALSE;
      for (int64_t i = 0; i < nl; i++) {
        PetscInt k4 = (PetscInt)(layers[i] % 4);
        /* the selections of -ekfac_layers: all, mlp = c_fc + mlp.c_proj (k 2, 3), attn = c_attn + attn.c_proj (k 0, 1) */
        EXPECT(layers[i] >= 0 && layers[i] < L && (s == 0 || (s == 1) == (k4 >= 2)), "%s: selection %s holds layer %d", fixture_path, sel_names[s], (int)layers[i]);
        r->sel[s][layers[i]] = PETSC_TRUE;
      }
      PetscCall(PetscMalloc3(fx->Q * fx->N, &r->scores[s], fx->Q * fx->T, &r->tokens[s], fx->N, &r->self[s]));
      PetscCall(PetscSNPrintf(name, sizeof(name), "fisher/%s/selection/%s/scores", kind, sel_names[s]));
      PetscCall(read_array(f, name, H5T_NATIVE_DOUBLE, fx->Q * fx->N, r->scores[s]));
      PetscCall(PetscSNPrintf(name, sizeof(name), "fisher/%s/selection/%s/token_scores", kind, sel_names[s]));
      PetscCall(read_array(f, name, H5T_NATIVE_DOUBLE, fx->Q * fx->T, r->tokens[s]));
      PetscCall(PetscSNPrintf(name, sizeof(name), "fisher/%s/selection/%s/self_influence", kind, sel_names[s]));
      PetscCall(read_array(f, name, H5T_NATIVE_DOUBLE, fx->N, r->self[s]));
    }
  }
  PetscCall(PetscFree(t64));
  PetscCall(InflH5Close(&f));
  PetscFunctionReturn(0);
}

/* Capture training sequences [lo, lo+B) with the data's next tokens (fisher == NULL or empirical) or the true Fisher's
 * sampled targets; the sampled targets must be the reference's (mismatches counted in *bad). */
static PetscErrorCode capture_train(InflModel model, const Fixture *fx, int64_t lo, PetscInt B, PetscBool sampled, InflCapture *cap, int64_t *bad)
{
  int64_t  off[64], idx[64], r0 = fx->toff[lo];
  int32_t *tg;

  PetscFunctionBegin;
  EXPECT(B < 64, "chunk %d too large for the test", (int)B);
  for (PetscInt b = 0; b <= B; b++) off[b] = fx->toff[lo + b] - r0;
  if (!sampled) {
    PetscCall(InflModelCaptureSequences(model, B, off, fx->tok + r0, NULL, cap));
  } else {
    for (PetscInt b = 0; b < B; b++) idx[b] = lo + b; /* global sequence indices: the sample does not depend on the rank */
    PetscCall(PetscMalloc1(off[B], &tg));
    PetscCall(InflModelCaptureSequencesSampled(model, B, off, fx->tok + r0, idx, (uint64_t)fx->seed, tg, cap));
    for (int64_t t = 0; t < off[B]; t++) *bad += tg[t] != fx->true_targets[r0 + t];
    PetscCall(PetscFree(tg));
  }
  EXPECT(cap->B == B && cap->T == off[B], "capture holds %d sequences, %d rows; expected %d, %d", (int)cap->B, (int)cap->T, (int)B, (int)off[B]);
  PetscFunctionReturn(0);
}

/* Write factors.h5 in the layout InflEKFACLoad reads (InflEKFACSave's); damping_absolute < 0: damping_factor x
 * mean(Lambda_l), else this damping for every layer (the factors before their Lambda pass, whose Lambda is zero). */
static PetscErrorCode write_factors(MPI_Comm comm, const char path[], InflModel model, PetscBool true_fisher, int64_t seed, int64_t nseq, int64_t rows, double damping_factor, double damping_absolute, PetscInt L, InflEKFACLayer ly[])
{
  hid_t       f;
  const char *hash;
  char        g[64], name[96];

  PetscFunctionBegin;
  PetscCall(InflModelGetHash(model, &hash));
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &f));
  PetscCall(InflH5WriteProvenance(f, comm, "fit", hash, "tests/ref/ekfac_gpt2_ref.h5", NULL));
  PetscCall(InflH5SetAttrString(f, "/", "fisher", true_fisher ? "true" : "empirical"));
  PetscCall(InflH5SetAttrInt(f, "/", "seed", seed));
  PetscCall(InflH5SetAttrInt(f, "/", "examples", nseq));
  PetscCall(InflH5SetAttrInt(f, "/", "rows", rows));
  PetscCall(InflH5SetAttrInt(f, "/", "layers", L));
  PetscCall(InflH5SetAttrInt(f, "/", "kfac", 0));
  PetscCall(InflH5SetAttrDouble(f, "/", "damping_factor", damping_factor));
  PetscCall(InflH5SetAttrDouble(f, "/", "damping_absolute", damping_absolute));
  for (PetscInt l = 0; l < L; l++) {
    int64_t      na = ly[l].din + 1, nd = ly[l].dout;
    const char  *fn[7]  = {"A", "S", "Q_A", "Q_S", "eigenvalues_A", "eigenvalues_S", "Lambda"};
    const double *fb[7] = {ly[l].A, ly[l].S, ly[l].QA, ly[l].QS, ly[l].eA, ly[l].eS, ly[l].Lambda};
    const int64_t dims[7][2] = {{na, na}, {nd, nd}, {na, na}, {nd, nd}, {na, 0}, {nd, 0}, {nd, na}};
    PetscCall(PetscSNPrintf(g, sizeof(g), "/layers/%d", (int)l));
    for (int k = 0; k < 7; k++) {
      PetscCall(PetscSNPrintf(name, sizeof(name), "%s/%s", g, fn[k]));
      PetscCall(InflH5WriteArray(f, name, H5T_NATIVE_DOUBLE, dims[k][1] ? 2 : 1, dims[k], fb[k]));
    }
    PetscCall(InflH5SetAttrInt(f, g, "din", ly[l].din));
    PetscCall(InflH5SetAttrInt(f, g, "dout", ly[l].dout));
    PetscCall(InflH5SetAttrDouble(f, g, "damping", ly[l].damping));
  }
  PetscCall(InflH5Close(&f));
  PetscFunctionReturn(0);
}

/* Consecutive ascending eigenvalues closer than gap * max |e| share a cluster: id (n) out, clusters returned. */
static PetscInt clusters(PetscInt n, const double e[], double gap, PetscInt id[])
{
  double   m = 0;
  PetscInt c = 0;
  for (PetscInt i = 0; i < n; i++) m = PetscMax(m, fabs(e[i]));
  for (PetscInt i = 0; i < n; i++) {
    if (i > 0 && e[i] - e[i - 1] > gap * m) c++;
    id[i] = c;
  }
  return c + 1;
}

/* max |x - r| / scale */
static double err_scaled(int64_t n, const double x[], const double r[], double scale)
{
  double e = 0;
  for (int64_t i = 0; i < n; i++) e = PetscMax(e, fabs(x[i] - r[i]));
  return scale > 0 ? e / scale : e;
}

enum { E_A, E_S, E_EIG, E_LSUM, E_LBLOCK, E_DAMP, E_P0, E_SCORE, E_TOKEN, E_SELF, E_SUMS, NE };
static const char *const e_names[NE] = {"A", "S", "eigenvalues", "Lambda total", "Lambda cluster blocks", "damping", "query 0 preconditioned", "scores", "per-token terms", "self-influence", "token sums vs scores"};

/* One Fisher kind in one precision: build everything with the library and compare; e (NE) out: the largest error
 * of each quantity as a fraction of its bound (the same on every rank), rel (NE): as plain relative differences. */
static PetscErrorCode check_kind(MPI_Comm comm, InflModel model, const Fixture *fx, const Reference *ref, PetscBool true_fisher, InflPrecision prec, PetscInt chunk, double perturb_damping, PetscInt perturb_rows, const char factors_path[], double e[NE], double rel[NE])
{
  PetscInt        L = fx->L, maxd = 1;
  InflLinear     *lin;
  PetscMPIInt     rank, size;
  int64_t         start, count, rows = 0, bad = 0, nrows;
  InflCapture    *cap, *qcap;
  InflEKFACLayer *ly, *el;
  InflEKFAC       ek;
  double         *ta, *td, *bufa, *bufd, **P, *zero, *out, *tok, *self;
  const double    d_u = prec == INFL_PREC_DOUBLE ? 0x1p-53 : 0x1p-24;
  double          tau;
  InflScorer      sc[NSEL];
  PetscInt        Lchk;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  for (PetscInt l = 0; l < L; l++) maxd = PetscMax(maxd, PetscMax(lin[l].din + 1, lin[l].dout));
  tau = prec == INFL_PREC_DOUBLE ? 1e-10 : 2 * maxd * d_u + 2 * (double)fx->T * 0x1p-53;
  for (int i = 0; i < NE; i++) e[i] = rel[i] = 0;
  InflPartition(fx->N, size, rank, &start, &count);
  PetscCall(InflModelSetPrecision(model, prec));
  PetscCall(InflCaptureCreate(model, chunk, &cap));
  PetscCall(PetscMalloc6((size_t)cap->Tmax * maxd, &ta, (size_t)cap->Tmax * maxd, &td, (size_t)cap->Tmax * maxd, &bufa, (size_t)cap->Tmax * maxd, &bufd, chunk * fx->Q, &out, cap->Tmax * fx->Q, &tok));

  /* pass 1: A and S sums over this rank's tokens (upper triangles, double), as InflEKFACFit */
  PetscCall(PetscCalloc1(L, &ly));
  for (PetscInt l = 0; l < L; l++) {
    int64_t na = lin[l].din + 1, nd = lin[l].dout;
    ly[l].din  = lin[l].din;
    ly[l].dout = lin[l].dout;
    PetscCall(PetscCalloc1(na * na, &ly[l].A));
    PetscCall(PetscCalloc1(nd * nd, &ly[l].S));
    PetscCall(PetscCalloc1(na * na, &ly[l].QA));
    PetscCall(PetscCalloc1(nd * nd, &ly[l].QS));
    PetscCall(PetscCalloc1(na, &ly[l].eA));
    PetscCall(PetscCalloc1(nd, &ly[l].eS));
    PetscCall(PetscCalloc1(nd * na, &ly[l].Lambda));
    ly[l].damping = 1; /* a placeholder until Lambda is known */
  }
  for (int64_t lo = start; lo < start + count; lo += chunk) {
    PetscInt B = (PetscInt)PetscMin(chunk, start + count - lo);
    PetscCall(capture_train(model, fx, lo, B, true_fisher, cap, &bad));
    rows += cap->T;
    for (PetscInt l = 0; l < L; l++) {
      PetscInt      na = ly[l].din + 1, nd = ly[l].dout;
      const double *a, *ds;
      InflCaptureGetDouble(cap, l, bufa, bufd, &a, &ds);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, na, cap->T, 1.0, a, na, 1.0, ly[l].A, na);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, nd, cap->T, 1.0, ds, nd, 1.0, ly[l].S, nd);
    }
  }
  PetscCallMPI(MPI_Allreduce(&rows, &nrows, 1, MPI_INT64_T, MPI_SUM, comm));
  EXPECT(nrows == fx->T, "the ranks captured %" PRId64 " tokens, the fixture has %" PRId64, nrows, fx->T);
  nrows += perturb_rows;
  {
    double   **C, **ev, **Q;
    PetscInt  *nf;
    PetscCall(PetscMalloc4(2 * L, &C, 2 * L, &ev, 2 * L, &Q, 2 * L, &nf));
    for (PetscInt l = 0; l < L; l++) {
      PetscInt na = ly[l].din + 1, nd = ly[l].dout;
      for (PetscInt i = 0; i < na; i++) for (PetscInt j = 0; j < i; j++) ly[l].A[i * na + j] = ly[l].A[j * na + i];
      for (PetscInt i = 0; i < nd; i++) for (PetscInt j = 0; j < i; j++) ly[l].S[i * nd + j] = ly[l].S[j * nd + i];
      C[2 * l] = ly[l].A; ev[2 * l] = ly[l].eA; Q[2 * l] = ly[l].QA; nf[2 * l] = na;
      C[2 * l + 1] = ly[l].S; ev[2 * l + 1] = ly[l].eS; Q[2 * l + 1] = ly[l].QS; nf[2 * l + 1] = nd;
    }
    PetscCall(InflEigenSolve(comm, 2 * L, nf, C, 1.0 / (double)nrows, ev, Q, NULL));
    PetscCall(PetscFree4(C, ev, Q, nf));
  }
  PetscCall(write_factors(comm, factors_path, model, true_fisher, fx->seed, fx->N, fx->T, fx->damping_factor * perturb_damping, 1.0, L, ly));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACLoad(ek, factors_path, model));

  /* pass 2: Lambda = (1/N) sum over sequences of (Q_S^T DW Q_A)^2, summed by the library, reduced here */
  for (int64_t lo = start; lo < start + count; lo += chunk) {
    PetscInt B = (PetscInt)PetscMin(chunk, start + count - lo);
    PetscCall(capture_train(model, fx, lo, B, true_fisher, cap, &bad));
    for (PetscInt l = 0; l < L; l++) PetscCall(InflEKFACAccumulateLambda(ek, l, cap, ta, td, ly[l].Lambda));
  }
  for (PetscInt l = 0; l < L; l++) {
    int64_t n = (int64_t)ly[l].dout * (ly[l].din + 1);
    PetscCall(InflAllreduceSum(ly[l].Lambda, n, MPI_DOUBLE, comm));
    for (int64_t i = 0; i < n; i++) ly[l].Lambda[i] /= (double)fx->N;
  }
  PetscCall(write_factors(comm, factors_path, model, true_fisher, fx->seed, fx->N, fx->T, fx->damping_factor * perturb_damping, -1, L, ly));
  PetscCall(InflEKFACLoad(ek, factors_path, model));
  PetscCall(InflEKFACSetDamping(ek, PETSC_DEFAULT)); /* damping_factor x mean(Lambda_l) */
  PetscCall(InflEKFACGetLayers(ek, &Lchk, &el));
  EXPECT(Lchk == L, "InflEKFAC has %d layers, the model %d", (int)Lchk, (int)L);
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT64_T, MPI_SUM, comm));
  EXPECT(bad == 0, "%s precision: %" PRId64 " true-Fisher targets sampled by InflModelCaptureSequencesSampled differ from the reference's numpy sampler (seed %" PRId64 ")", prec ? "double" : "single", bad, fx->seed);

  /* factors: A, S within 2 tau trace, eigenvalues within 2 tau max, Lambda total 2 tau, damping 2 tau (FORMATS.md) */
  for (PetscInt l = 0; l < L; l++) {
    PetscInt na = el[l].din + 1, nd = el[l].dout, *cs, *ca, ncs, nca;
    double   trA = 0, trS = 0, mA = 0, mS = 0, sum = 0, *bx, *br, blk = 0;
    for (PetscInt i = 0; i < na; i++) trA += ref->A[l][i * na + i];
    for (PetscInt i = 0; i < nd; i++) trS += ref->S[l][i * nd + i];
    for (PetscInt i = 0; i < na; i++) mA = PetscMax(mA, fabs(ref->eA[l][i]));
    for (PetscInt i = 0; i < nd; i++) mS = PetscMax(mS, fabs(ref->eS[l][i]));
    e[E_A] = PetscMax(e[E_A], err_scaled((int64_t)na * na, el[l].A, ref->A[l], 2 * tau * trA));
    e[E_S] = PetscMax(e[E_S], err_scaled((int64_t)nd * nd, el[l].S, ref->S[l], 2 * tau * trS));
    e[E_EIG] = PetscMax(e[E_EIG], PetscMax(err_scaled(na, el[l].eA, ref->eA[l], 2 * tau * mA), err_scaled(nd, el[l].eS, ref->eS[l], 2 * tau * mS)));
    rel[E_A] = PetscMax(rel[E_A], err_scaled((int64_t)na * na, el[l].A, ref->A[l], trA));
    rel[E_S] = PetscMax(rel[E_S], err_scaled((int64_t)nd * nd, el[l].S, ref->S[l], trS));
    rel[E_EIG] = PetscMax(rel[E_EIG], PetscMax(err_scaled(na, el[l].eA, ref->eA[l], mA), err_scaled(nd, el[l].eS, ref->eS[l], mS)));
    for (int64_t i = 0; i < (int64_t)nd * na; i++) sum += el[l].Lambda[i];
    e[E_LSUM] = PetscMax(e[E_LSUM], fabs(sum - ref->Lsum[l]) / (2 * tau * ref->Lsum[l]));
    rel[E_LSUM] = PetscMax(rel[E_LSUM], fabs(sum - ref->Lsum[l]) / ref->Lsum[l]);
    e[E_DAMP] = PetscMax(e[E_DAMP], fabs(el[l].damping - ref->damping[l]) / (2 * tau * ref->damping[l]));
    rel[E_DAMP] = PetscMax(rel[E_DAMP], fabs(el[l].damping - ref->damping[l]) / ref->damping[l]);
    /* Lambda summed over (cluster of S eigenvalues) x (cluster of A eigenvalues): basis-independent.  Clusters: gaps
     * below 1e-8 of the largest eigenvalue (the null spaces of A and S, whose eigenvectors are arbitrary); the
     * smallest gap between clusters is 5.1e-8 of the largest eigenvalue here (tests/ref/README.md). */
    PetscCall(PetscMalloc2(nd, &cs, na, &ca));
    ncs = clusters(nd, ref->eS[l], 1e-8, cs);
    nca = clusters(na, ref->eA[l], 1e-8, ca);
    PetscCall(PetscCalloc2((size_t)ncs * nca, &bx, (size_t)ncs * nca, &br));
    for (PetscInt i = 0; i < nd; i++)
      for (PetscInt j = 0; j < na; j++) {
        bx[cs[i] * nca + ca[j]] += el[l].Lambda[i * na + j];
        br[cs[i] * nca + ca[j]] += ref->Lambda[l][i * na + j];
      }
    blk = err_scaled((int64_t)ncs * nca, bx, br, ref->Lsum[l]);
    e[E_LBLOCK] = PetscMax(e[E_LBLOCK], blk / (2 * tau));
    rel[E_LBLOCK] = PetscMax(rel[E_LBLOCK], blk);
    PetscCall(PetscFree2(bx, br));
    PetscCall(PetscFree2(cs, ca));
  }

  /* queries: gradients with the data's next tokens, captured and preconditioned in double */
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflCaptureCreate(model, fx->Q, &qcap));
  PetscCall(InflModelCaptureSequences(model, fx->Q, fx->qoff, fx->qtok, NULL, qcap));
  PetscCall(PetscMalloc1(L, &P));
  {
    int64_t maxper = 0;
    for (PetscInt l = 0; l < L; l++) {
      int64_t per = (int64_t)lin[l].dout * (lin[l].din + 1);
      double  d2 = 0, r2 = 0;
      maxper = PetscMax(maxper, per);
      PetscCall(PetscMalloc1(fx->Q * per, &P[l]));
      PetscCall(InflEKFACPreconditionCapture(ek, l, qcap, P[l]));
      for (int64_t i = 0; i < per; i++) {
        d2 += (P[l][i] - ref->P0[l][i]) * (P[l][i] - ref->P0[l][i]);
        r2 += ref->P0[l][i] * ref->P0[l][i];
      }
      /* double: tol; single: tau kappa (a relative perturbation tau of the damped curvature moves its inverse applied
       * to a vector by at most its condition number kappa times that) */
      e[E_P0] = PetscMax(e[E_P0], sqrt(d2 / r2) / (prec == INFL_PREC_DOUBLE ? tau : tau * ref->kappa[l]));
      rel[E_P0] = PetscMax(rel[E_P0], sqrt(d2 / r2));
    }
    PetscCall(PetscCalloc1(fx->Q * maxper, &zero));
  }
  PetscCall(InflCaptureDestroy(&qcap));
  PetscCall(InflModelSetPrecision(model, prec));

  /* scores, per-token terms and self-influence of this rank's training sequences, per layer selection */
  {
    int64_t *yq, *qi;
    PetscCall(PetscCalloc2(fx->Q, &yq, fx->Q, &qi));
    for (int64_t q = 0; q < fx->Q; q++) qi[q] = q;
    for (int s = 0; s < NSEL; s++) {
      const double **Ps;
      PetscCall(PetscMalloc1(L, &Ps));
      for (PetscInt l = 0; l < L; l++) Ps[l] = ref->sel[s][l] ? P[l] : zero;
      PetscCall(InflScorerCreate(PETSC_COMM_SELF, &sc[s]));
      PetscCall(InflScorerSetPreconditionedQueries(sc[s], model, (PetscInt)fx->Q, (const double *const *)Ps, yq, qi));
      PetscCall(PetscFree(Ps));
    }
    PetscCall(PetscFree2(yq, qi));
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflCaptureCreate(model, chunk, &cap));
  PetscCall(PetscMalloc1(chunk, &self));
  for (int64_t lo = start; lo < start + count; lo += chunk) {
    PetscInt B = (PetscInt)PetscMin(chunk, start + count - lo);
    int64_t  r0 = fx->toff[lo];
    PetscCall(capture_train(model, fx, lo, B, PETSC_FALSE, cap, &bad));
    for (int s = 0; s < NSEL; s++) {
      PetscCall(InflScorerScoreCapture(sc[s], cap, out, tok));
      for (PetscInt b = 0; b < B; b++) self[b] = 0;
      for (PetscInt l = 0; l < L; l++)
        if (ref->sel[s][l]) PetscCall(InflEKFACSelfInfluenceCapture(ek, l, cap, self));
      for (PetscInt b = 0; b < B; b++) {
        int64_t m = lo + b;
        double  gn2 = 0, sr = ref->self[s][m];
        for (PetscInt l = 0; l < L; l++) gn2 += ref->sel[s][l] ? fx->train_norm2[l * fx->N + m] : 0;
        for (int64_t q = 0; q < fx->Q; q++) {
          double qn2 = 0, sum = 0, x = out[q * B + b], r = ref->scores[s][q * fx->N + m], bound;
          for (PetscInt l = 0; l < L; l++) qn2 += ref->sel[s][l] ? ref->qnorm2[l * fx->Q + q] : 0;
          bound = sqrt(qn2 * gn2);
          if (fabs(x - r) > 0) e[E_SCORE] = PetscMax(e[E_SCORE], fabs(x - r) / (tau * bound));
          if (bound > 0) rel[E_SCORE] = PetscMax(rel[E_SCORE], fabs(x - r) / bound);
          for (int64_t t = fx->toff[m]; t < fx->toff[m + 1]; t++) {
            double tn2 = 0, xt = tok[q * cap->T + (t - r0)], rt = ref->tokens[s][q * fx->T + t], tb;
            for (PetscInt l = 0; l < L; l++) tn2 += ref->sel[s][l] ? fx->token_norm2[l * fx->T + t] : 0;
            tb = sqrt(qn2 * tn2);
            if (fabs(xt - rt) > 0) e[E_TOKEN] = PetscMax(e[E_TOKEN], fabs(xt - rt) / (tau * tb));
            if (tb > 0) rel[E_TOKEN] = PetscMax(rel[E_TOKEN], fabs(xt - rt) / tb);
            sum += xt;
          }
          /* the terms of a sequence's tokens sum to its score (both the library's) */
          if (fabs(sum - x) > 0) e[E_SUMS] = PetscMax(e[E_SUMS], fabs(sum - x) / (tau * bound));
          if (bound > 0) rel[E_SUMS] = PetscMax(rel[E_SUMS], fabs(sum - x) / bound);
        }
        { /* double: tol relative; single: 2 tau sqrt(kappa) relative, kappa the largest of the selected layers */
          double ks = 0, bs;
          for (PetscInt l = 0; l < L; l++) ks = PetscMax(ks, ref->sel[s][l] ? ref->kappa[l] : 0);
          bs = (prec == INFL_PREC_DOUBLE ? 1 : 2 * sqrt(ks)) * tau * fabs(sr);
          if (fabs(self[b] - sr) > 0) e[E_SELF] = PetscMax(e[E_SELF], fabs(self[b] - sr) / bs);
          if (sr != 0) rel[E_SELF] = PetscMax(rel[E_SELF], fabs(self[b] - sr) / fabs(sr));
        }
      }
    }
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, e, NE, MPI_DOUBLE, MPI_MAX, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, rel, NE, MPI_DOUBLE, MPI_MAX, comm));

  for (int s = 0; s < NSEL; s++) PetscCall(InflScorerDestroy(&sc[s]));
  for (PetscInt l = 0; l < L; l++) {
    PetscCall(PetscFree(P[l]));
    PetscCall(PetscFree(ly[l].A));
    PetscCall(PetscFree(ly[l].S));
    PetscCall(PetscFree(ly[l].QA));
    PetscCall(PetscFree(ly[l].QS));
    PetscCall(PetscFree(ly[l].eA));
    PetscCall(PetscFree(ly[l].eS));
    PetscCall(PetscFree(ly[l].Lambda));
  }
  PetscCall(PetscFree(ly));
  PetscCall(PetscFree(P));
  PetscCall(PetscFree(zero));
  PetscCall(PetscFree(self));
  PetscCall(PetscFree6(ta, td, bufa, bufd, out, tok));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflEKFACDestroy(&ek));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  char        dir[PETSC_MAX_PATH_LEN], factors[PETSC_MAX_PATH_LEN];
  const char *src;
  InflModel   model;
  InflLinear *lin;
  PetscInt    L, chunk = 3, perturb_rows = 0;
  double      perturb_damping = 1;
  PetscMPIInt size;
  Fixture     fx;
  Reference   ref[2];

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-chunk", &chunk, NULL));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-perturb_damping", &perturb_damping, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-perturb_rows", &perturb_rows, NULL));
  PetscCheck(chunk >= 1 && chunk < 64, comm, PETSC_ERR_ARG_OUTOFRANGE, "-chunk %d must be in [1, 63]", (int)chunk);
  src = getenv("INFL_SOURCE_DIR");
  PetscCall(PetscSNPrintf(dir, sizeof(dir), "%s/tests/ref/gpt2_tiny", src ? src : "."));
  PetscCall(PetscSNPrintf(fixture_path, sizeof(fixture_path), "%s/tests/ref/ekfac_gpt2_ref.h5", src ? src : "."));
  PetscCall(PetscSNPrintf(factors, sizeof(factors), "test_ekfac_gpt2_np%d_factors.h5", (int)size));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, dir));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(read_fixture(comm, lin, L, &fx, ref));
  PetscCall(PetscPrintf(comm, "tiny GPT-2, %d layers; %" PRId64 " training sequences (%" PRId64 " tokens) over %d ranks in chunks of %d; %" PRId64 " queries\n", (int)L, fx.N, fx.T, (int)size, (int)chunk, fx.Q));
  for (int p = 0; p < 2; p++) {
    InflPrecision prec = p ? INFL_PREC_SINGLE : INFL_PREC_DOUBLE;
    for (int k = 0; k < 2; k++) {
      double e[NE], rel[NE], worst = 0;
      int    iw = 0;
      PetscCall(check_kind(comm, model, &fx, &ref[k], k ? PETSC_TRUE : PETSC_FALSE, prec, chunk, perturb_damping, perturb_rows, factors, e, rel));
      for (int i = 0; i < NE; i++)
        if (e[i] > worst) {
          worst = e[i];
          iw    = i;
        }
      PetscCall(PetscPrintf(comm, "%-9s Fisher, %s precision (bound %s), fraction of the bound used / relative difference:\n", k ? "true" : "empirical", p ? "single" : "double", p ? "FORMATS.md tau" : "1e-10"));
      for (int i = 0; i < NE; i++) PetscCall(PetscPrintf(comm, "  %-24s %.2e  %.2e\n", e_names[i], e[i], rel[i]));
      EXPECT(worst <= 1, "%s Fisher, %s precision: %s differ from the reference tests/ref/ekfac_gpt2_ref.h5 by %.3g of the bound (relative %.3g); all layer selections checked", k ? "true" : "empirical", p ? "single" : "double", e_names[iw], worst, rel[iw]);
    }
  }
  PetscCall(InflRemoveAll(comm, factors));
  PetscCall(PetscPrintf(comm, "test_ekfac_gpt2: all checks passed\n"));
  for (int k = 0; k < 2; k++) {
    for (PetscInt l = 0; l < L; l++) PetscCall(PetscFree6(ref[k].A[l], ref[k].S[l], ref[k].eA[l], ref[k].eS[l], ref[k].Lambda[l], ref[k].P0[l]));
    PetscCall(PetscFree6(ref[k].A, ref[k].S, ref[k].eA, ref[k].eS, ref[k].Lambda, ref[k].P0));
    PetscCall(PetscFree4(ref[k].Lsum, ref[k].damping, ref[k].kappa, ref[k].qnorm2));
    for (int s = 0; s < NSEL; s++) PetscCall(PetscFree3(ref[k].scores[s], ref[k].tokens[s], ref[k].self[s]));
  }
  PetscCall(PetscFree2(fx.train_norm2, fx.token_norm2));
  PetscCall(PetscFree(fx.toff));
  PetscCall(PetscFree(fx.qoff));
  PetscCall(PetscFree(fx.tok));
  PetscCall(PetscFree(fx.qtok));
  PetscCall(PetscFree(fx.true_targets));
  PetscCall(InflModelDestroy(&model));
  PetscCall(PetscFinalize());
  return 0;
}

/* EK-FAC fit, scores, top-k and self-influence against the independent PyTorch/numpy reference (tests/ref/), in double
 * and single precision, at any rank count; plus rank invariance against one rank inside the same run, more ranks than
 * examples, duplicated examples and an exactly singular factor. */
static const char help[] = "EK-FAC pipeline against reference fixtures.\n";

#include <infl/score.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "io/check.h"

#define FMNIST "idx:/usr/share/datasets/fashion-mnist/train"
#define FMNIST_TEST "idx:/usr/share/datasets/fashion-mnist/t10k"

static char ref_dir[PETSC_MAX_PATH_LEN];

static PetscErrorCode read_ref(MPI_Comm comm, const char name[], int64_t n, double buf[])
{
  char path[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small_ref.h5", ref_dir));
  PetscCall(InflTestReadDoubles(comm, path, name, n, buf));
  PetscFunctionReturn(0);
}

/* max |x - r| / max |r| */
static double rel_err(int64_t n, const double x[], const double r[])
{
  double e = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    e = PetscMax(e, fabs(x[i] - r[i]));
    m = PetscMax(m, fabs(r[i]));
  }
  return m > 0 ? e / m : e;
}

/* Fit on the reference's 256 training examples and compare everything; prec = single or double. */
static PetscErrorCode check_against_reference(MPI_Comm comm, InflFisher fisher, InflPrecision prec)
{
  const char     *kind = fisher == INFL_FISHER_TRUE ? "true" : "empirical";
  const double    tol_f = prec == INFL_PREC_DOUBLE ? 1e-9 : 2e-5; /* factors */
  const double    tol_s = prec == INFL_PREC_DOUBLE ? 1e-7 : 1e-4; /* scores, self-influence */
  char            path[PETSC_MAX_PATH_LEN], name[128];
  InflModel       model;
  InflData        train, query;
  InflEKFAC       ek;
  InflEKFACLayer *ly;
  PetscInt        L;
  InflScorer      sc;
  const int64_t   Q = 8, N = 256, qidx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  float           xq[8 * 784];
  int64_t         yq[8], start, count;
  double         *ref, *self, maxerr_scores = 0;
  const double   *local;
  InflTopK       *top, *bottom;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small.safetensors", ref_dir));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, path));
  PetscCall(InflModelSetPrecision(model, prec));
  PetscCall(InflDataOpen(comm, FMNIST, N, &train));
  PetscCall(InflDataOpen(comm, FMNIST_TEST, 16, &query));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFisher(ek, fisher, 1234));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(InflEKFACGetLayers(ek, &L, &ly));
  PetscCall(PetscMalloc1(785 * 785, &ref));
  for (PetscInt l = 0; l < L; l++) {
    int64_t na = ly[l].din + 1, nd = ly[l].dout;
    double  e, v;
#define CMP(field, n, buf, tol) \
  do { \
    PetscCall(PetscSNPrintf(name, sizeof(name), "/fisher/%s/layers.%d/%s", kind, (int)l, field)); \
    PetscCall(read_ref(comm, name, n, ref)); \
    e = rel_err(n, buf, ref); \
    EXPECT(e <= tol, "%s Fisher, %s precision: %s relative error %.3e > %.1e", kind, prec ? "double" : "single", name, e, tol); \
  } while (0)
    CMP("A_eigenvalues", na, ly[l].eA, tol_f);
    CMP("S_eigenvalues", nd, ly[l].eS, tol_f);
    CMP("S", nd * nd, ly[l].S, tol_f);
    if (l > 0) CMP("A", na * na, ly[l].A, tol_f);
    else {
      double diag[785], block[256];
      for (int64_t i = 0; i < na; i++) diag[i] = ly[l].A[i * na + i];
      for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) block[i * 16 + j] = ly[l].A[i * na + j];
      CMP("A_diag", na, diag, tol_f);
      CMP("A_block16", 256, block, tol_f);
    }
    CMP("damping", 1, &ly[l].damping, tol_f);
    v = 0;
    for (int64_t i = 0; i < nd * na; i++) v += ly[l].Lambda[i];
    CMP("Lambda_sum", 1, &v, tol_f);
#undef CMP
  }

  /* scores (full matrix, this rank's columns), per layer, top-k, bottom-k */
  PetscCall(InflDataGetExamples(query, (PetscInt)Q, qidx, xq, yq));
  PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1"));
  PetscCall(PetscOptionsSetValue(NULL, "-score_per_layer", "1"));
  PetscCall(PetscOptionsSetValue(NULL, "-score_chunk", "37")); /* chunks that do not divide the shards */
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(InflScorerSetQueries(sc, model, ek, (PetscInt)Q, xq, yq, qidx));
  PetscCall(InflScorerScore(sc, train));
  PetscCall(InflScorerGetLocalScores(sc, &start, &count, &local));
  PetscCall(PetscSNPrintf(name, sizeof(name), "/fisher/%s/scores", kind));
  PetscCall(read_ref(comm, name, Q * N, ref));
  for (int64_t q = 0; q < Q; q++) {
    double e = 0, m = 0;
    for (int64_t j = 0; j < N; j++) m = PetscMax(m, fabs(ref[q * N + j]));
    for (int64_t j = 0; j < count; j++) e = PetscMax(e, fabs(local[q * count + j] - ref[q * N + start + j]));
    maxerr_scores = PetscMax(maxerr_scores, e / m);
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &maxerr_scores, 1, MPI_DOUBLE, MPI_MAX, comm));
  EXPECT(maxerr_scores <= tol_s, "%s Fisher, %s precision: scores relative error %.3e > %.1e", kind, prec ? "double" : "single", maxerr_scores, tol_s);
  PetscCall(InflScorerGetTopK(sc, &top, &bottom));
  EXPECT(top->K == 10 && bottom->K == 10, "top-k size %d", (int)top->K);
  for (int w = 0; w < 2; w++) {
    InflTopK *t = w ? bottom : top;
    PetscCall(PetscSNPrintf(name, sizeof(name), "/fisher/%s/%s", kind, w ? "bottomk_indices" : "topk_indices"));
    PetscCall(read_ref(comm, name, Q * 10, ref));
    for (int64_t i = 0; i < Q * 10; i++) EXPECT(t->index[i] == (int64_t)ref[i], "%s Fisher, %s precision: %s[%d][%d] = %" PRId64 ", reference %d", kind, prec ? "double" : "single", name, (int)(i / 10), (int)(i % 10), t->index[i], (int)ref[i]);
    for (int64_t q = 0; q < Q; q++) EXPECT(t->n[q] == 10, "query %d holds %d entries", (int)q, (int)t->n[q]);
  }
  /* per-layer terms of the top-k pairs against the reference per-layer matrix */
  {
    double *pl;
    PetscCall(PetscMalloc1(3 * Q * N, &pl));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/fisher/%s/scores_per_layer", kind));
    PetscCall(read_ref(comm, name, 3 * Q * N, pl));
    PetscCall(InflScorerSave(sc, "test_ekfac_scores.h5", PETSC_TRUE));
    {
      hid_t   f;
      double *tl;
      int64_t dims[3] = {3, Q, 10};
      PetscCall(PetscMalloc1(3 * Q * 10, &tl));
      PetscCall(InflH5Open(comm, "test_ekfac_scores.h5", PETSC_FALSE, &f));
      PetscCall(InflH5ReadArray(f, "/topk/per_layer", H5T_NATIVE_DOUBLE, 3, dims, NULL, tl));
      PetscCall(InflH5Close(&f));
      for (PetscInt l = 0; l < 3; l++)
        for (int64_t q = 0; q < Q; q++) {
          double m = 0;
          for (int64_t j = 0; j < N; j++) m = PetscMax(m, fabs(pl[(l * Q + q) * N + j]));
          for (int k = 0; k < 10; k++) {
            double r = pl[(l * Q + q) * N + top->index[q * 10 + k]], v = tl[(l * Q + q) * 10 + k];
            EXPECT(fabs(v - r) <= tol_s * m + 1e-300, "per-layer term layer %d query %d rank %d: %.6e vs reference %.6e", (int)l, (int)q, k, v, r);
          }
        }
      PetscCall(PetscFree(tl));
    }
    PetscCall(PetscFree(pl));
  }
  PetscCall(InflScorerDestroy(&sc));

  /* self-influence */
  PetscCall(PetscMalloc1(PetscMax(count, 1), &self));
  PetscCall(InflSelfInfluence(model, ek, train, 29, self));
  PetscCall(PetscSNPrintf(name, sizeof(name), "/fisher/%s/self_influence", kind));
  PetscCall(read_ref(comm, name, N, ref));
  {
    double e = 0, m = 0;
    for (int64_t j = 0; j < N; j++) m = PetscMax(m, fabs(ref[j]));
    for (int64_t j = 0; j < count; j++) e = PetscMax(e, fabs(self[j] - ref[start + j]) / m);
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &e, 1, MPI_DOUBLE, MPI_MAX, comm));
    EXPECT(e <= tol_s, "%s Fisher, %s precision: self-influence relative error %.3e > %.1e", kind, prec ? "double" : "single", e, tol_s);
    PetscCall(PetscPrintf(comm, "%-9s Fisher, %s precision: scores rel. error %.2e, self-influence %.2e, top-k/bottom-k identical\n", kind, prec ? "double" : "single", maxerr_scores, e));
  }
  PetscCall(PetscFree(self));
  PetscCall(PetscFree(ref));
  PetscCall(PetscOptionsClearValue(NULL, "-score_save_all"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_per_layer"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_chunk"));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

/* Self-influence of a training example equals its pairwise score with itself (queries = training examples). */
static PetscErrorCode check_self_equals_pairwise(MPI_Comm comm)
{
  char          path[PETSC_MAX_PATH_LEN];
  InflModel     model;
  InflData      train;
  InflEKFAC     ek;
  InflScorer    sc;
  const int64_t qidx[5] = {0, 3, 77, 128, 255};
  float         xq[5 * 784];
  int64_t       yq[5], start, count;
  double       *self;
  const double *local;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small.safetensors", ref_dir));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, path));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflDataOpen(comm, FMNIST, 256, &train));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFisher(ek, INFL_FISHER_EMPIRICAL, 0));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(InflDataGetExamples(train, 5, qidx, xq, yq));
  PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1"));
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(PetscOptionsClearValue(NULL, "-score_save_all"));
  PetscCall(InflScorerSetQueries(sc, model, ek, 5, xq, yq, qidx));
  PetscCall(InflScorerScore(sc, train));
  PetscCall(InflScorerGetLocalScores(sc, &start, &count, &local));
  PetscCall(PetscMalloc1(PetscMax(count, 1), &self));
  PetscCall(InflSelfInfluence(model, ek, train, 64, self));
  for (int q = 0; q < 5; q++) {
    int64_t m = qidx[q];
    if (m < start || m >= start + count) continue;
    EXPECT(fabs(local[q * count + (m - start)] - self[m - start]) <= 1e-9 * fabs(self[m - start]), "self-influence of %d is %.12e but its pairwise score with itself is %.12e", (int)m, self[m - start], local[q * count + (m - start)]);
    EXPECT(self[m - start] > 0, "self-influence of %d is %g, not positive", (int)m, self[m - start]);
  }
  PetscCall(PetscFree(self));
  PetscCall(InflScorerDestroy(&sc));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

/* Write an h5 data set from Fashion-MNIST examples `src` (n) on rank 0's behalf; collective. */
static PetscErrorCode write_h5_data(MPI_Comm comm, const char path[], PetscInt n, const int64_t src[], PetscBool zero_column)
{
  InflData fm;
  float   *x;
  int64_t *y, dx[2] = {n, 784}, dy[1] = {n};
  hid_t    file;

  PetscFunctionBegin;
  PetscCall(InflDataOpen(comm, FMNIST, 512, &fm));
  PetscCall(PetscMalloc2((size_t)n * 784, &x, n, &y));
  PetscCall(InflDataGetExamples(fm, n, src, x, y));
  if (zero_column) for (PetscInt i = 0; i < n; i++) x[i * 784 + 400] = 0;
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &file));
  PetscCall(InflH5WriteArray(file, "/inputs", H5T_NATIVE_FLOAT, 2, dx, x));
  PetscCall(InflH5WriteArray(file, "/labels", H5T_NATIVE_INT64, 1, dy, y));
  PetscCall(InflH5Close(&file));
  PetscCall(PetscFree2(x, y));
  PetscCall(InflDataDestroy(&fm));
  PetscFunctionReturn(0);
}

/* The agreement bound of docs/FORMATS.md, tau = 2 d u + 2 N 2^-53, for the reference model (d = 785) and N examples. */
static double tau_of(InflPrecision prec, int64_t N)
{
  return 2 * 785 * (prec == INFL_PREC_DOUBLE ? 0x1p-53 : 0x1p-24) + 2 * (double)N * 0x1p-53;
}

typedef struct {
  double *scores; /* (3, N) against queries 0, 1, 2 of the data */
  double *self;   /* (N) */
  double  qn[3];  /* ||P_q||_F */
  double *tn;     /* (N) ||g_m||_F */
  double  kappa;  /* max over layers (max Lambda + damping) / (min Lambda + damping) */
} Run;

/* Fit, score (queries: examples 0, 1, 2 of the data) and self-influence on `comm` in precision prec, with the given
 * chunk sizes; every rank gets the whole results in r. */
static PetscErrorCode scores_on(MPI_Comm comm, const char data[], InflPrecision prec, PetscInt score_chunk, PetscInt self_chunk, int64_t N, Run *r)
{
  char            path[PETSC_MAX_PATH_LEN], chunk[32];
  InflModel       model;
  InflData        train;
  InflEKFAC       ek;
  InflEKFACLayer *ly;
  PetscInt        L;
  InflScorer      sc;
  const int64_t   qidx[3] = {0, 1, 2};
  float           xq[3 * 784];
  int64_t         yq[3], start, count;
  const double   *local, *tn;
  double         *self;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small.safetensors", ref_dir));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, path));
  PetscCall(InflModelSetPrecision(model, prec));
  PetscCall(InflDataOpen(comm, data, 0, &train));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(InflEKFACGetLayers(ek, &L, &ly));
  r->kappa = 1;
  for (PetscInt l = 0; l < L; l++) {
    double lo = INFINITY, hi = 0;
    for (int64_t i = 0; i < (int64_t)ly[l].dout * (ly[l].din + 1); i++) {
      lo = PetscMin(lo, ly[l].Lambda[i]);
      hi = PetscMax(hi, ly[l].Lambda[i]);
    }
    r->kappa = PetscMax(r->kappa, (hi + ly[l].damping) / (lo + ly[l].damping));
  }
  PetscCall(InflDataGetExamples(train, 3, qidx, xq, yq));
  PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1"));
  PetscCall(PetscSNPrintf(chunk, sizeof(chunk), "%d", (int)score_chunk));
  PetscCall(PetscOptionsSetValue(NULL, "-score_chunk", chunk));
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(PetscOptionsClearValue(NULL, "-score_save_all"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_chunk"));
  PetscCall(InflScorerSetQueries(sc, model, ek, 3, xq, yq, qidx));
  PetscCall(InflScorerScore(sc, train));
  PetscCall(InflScorerGetLocalScores(sc, &start, &count, &local));
  PetscCall(InflScorerGetNorms(sc, r->qn, &tn));
  PetscCall(PetscArrayzero(r->scores, 3 * N));
  PetscCall(PetscArrayzero(r->self, N));
  PetscCall(PetscArrayzero(r->tn, N));
  for (int q = 0; q < 3; q++) for (int64_t j = 0; j < count; j++) r->scores[q * N + start + j] = local[q * count + j];
  for (int64_t j = 0; j < count; j++) r->tn[start + j] = tn[j];
  PetscCall(PetscMalloc1(PetscMax(count, 1), &self));
  PetscCall(InflSelfInfluence(model, ek, train, self_chunk, self));
  for (int64_t j = 0; j < count; j++) r->self[start + j] = self[j];
  PetscCall(InflAllreduceSum(r->scores, 3 * N, MPI_DOUBLE, comm));
  PetscCall(InflAllreduceSum(r->self, N, MPI_DOUBLE, comm));
  PetscCall(InflAllreduceSum(r->tn, N, MPI_DOUBLE, comm));
  PetscCall(PetscFree(self));
  PetscCall(InflScorerDestroy(&sc));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

static PetscErrorCode run_alloc(int64_t N, Run *r)
{
  PetscFunctionBegin;
  PetscCall(PetscMalloc3(3 * N, &r->scores, N, &r->self, N, &r->tn));
  PetscFunctionReturn(0);
}

static PetscErrorCode run_free(Run *r)
{
  PetscFunctionBegin;
  PetscCall(PetscFree3(r->scores, r->self, r->tn));
  PetscFunctionReturn(0);
}

/* The largest |score(q, i) - score'(q, j)| / (tau ||P_q|| ||g_i||) over queries, for pairs (i, j) of examples given by
 * the callback (same example in two runs, or copies of one example in one run). */
static double score_bound_used(const Run *a, const Run *b, int64_t N, double tau, int64_t i, int64_t j)
{
  double u = 0;
  for (int q = 0; q < 3; q++) {
    double bound = tau * a->qn[q] * PetscMax(a->tn[i], b->tn[j]), d = fabs(a->scores[q * N + i] - b->scores[q * N + j]);
    u = PetscMax(u, bound > 0 ? d / bound : (d > 0 ? INFINITY : 0));
  }
  return u;
}

/* A run on all ranks of comm (chunks 5 and 7) against a run on one rank with other chunks (64 and 29), so that even
 * at one rank two different groupings are compared; both precisions; the bounds of docs/FORMATS.md. */
static PetscErrorCode check_invariance(MPI_Comm comm, const char label[], const char data[], int64_t N)
{
  PetscFunctionBegin;
  for (int p = 0; p < 2; p++) {
    InflPrecision prec = p ? INFL_PREC_SINGLE : INFL_PREC_DOUBLE;
    double        tau  = tau_of(prec, N), us = 0, uf = 0, un = 0;
    Run           rn, r1;
    PetscCall(run_alloc(N, &rn));
    PetscCall(run_alloc(N, &r1));
    PetscCall(scores_on(comm, data, prec, 5, 7, N, &rn));
    PetscCall(scores_on(PETSC_COMM_SELF, data, prec, 64, 29, N, &r1));
    for (int64_t i = 0; i < 3 * N; i++) EXPECT(isfinite(rn.scores[i]), "%s: score %d is not finite", label, (int)i);
    for (int64_t m = 0; m < N; m++) {
      double bs = 2 * tau * sqrt(r1.kappa) * fabs(r1.self[m]);
      us = PetscMax(us, score_bound_used(&r1, &rn, N, tau, m, m));
      uf = PetscMax(uf, bs > 0 ? fabs(rn.self[m] - r1.self[m]) / bs : (rn.self[m] != r1.self[m] ? INFINITY : 0));
      un = PetscMax(un, fabs(rn.tn[m] - r1.tn[m]) / (tau * r1.tn[m] + 1e-300));
    }
    /* (||P_q|| is not compared: it goes through the fitted inverse, whose conditioning the bound does not cover) */
    EXPECT(us <= 1 && uf <= 1 && un <= 1, "%s, %s precision: all ranks vs one rank use %.3g (scores), %.3g (self-influence), %.3g (gradient norms) of the bound", label, prec ? "double" : "single", us, uf, un);
    PetscCall(PetscPrintf(comm, "%s, %s precision: all ranks vs one rank (other chunks): %.2e of the score bound, %.2e of the self-influence bound, %.2e of tau in the gradient norms\n", label, prec ? "double" : "single", us, uf, un));
    PetscCall(run_free(&rn));
    PetscCall(run_free(&r1));
  }
  PetscFunctionReturn(0);
}

/* Copies of one example, placed at different positions in chunks and shards, get scores that agree to the bound of
 * docs/FORMATS.md, in single precision at any rank count (copy: example index -> index of its first copy). */
static PetscErrorCode check_copies(MPI_Comm comm, const char label[], const char data[], int64_t N, const int64_t copy[], InflPrecision prec)
{
  Run    r;
  double tau = tau_of(prec, N), u = 0;

  PetscFunctionBegin;
  PetscCall(run_alloc(N, &r));
  PetscCall(scores_on(comm, data, prec, 37, 29, N, &r));
  for (int64_t m = 0; m < N; m++) {
    double bs = 2 * tau * sqrt(r.kappa) * fabs(r.self[copy[m]]);
    u = PetscMax(u, score_bound_used(&r, &r, N, tau, m, copy[m]));
    u = PetscMax(u, bs > 0 ? fabs(r.self[m] - r.self[copy[m]]) / bs : 0);
  }
  EXPECT(u <= 1, "%s, %s precision: copies of one example use %.3g of the bound", label, prec ? "double" : "single", u);
  PetscCall(PetscPrintf(comm, "%s, %s precision: copies of one example agree to %.2e of the bound\n", label, prec ? "double" : "single", u));
  PetscCall(run_free(&r));
  PetscFunctionReturn(0);
}

/* Rank-r query gradients (-score_rank) against the independent reference of make_lowrank_reference.py. */
static PetscErrorCode check_low_rank(MPI_Comm comm, InflPrecision prec)
{
  char          path[PETSC_MAX_PATH_LEN];
  InflModel     model;
  InflData      train, query;
  InflEKFAC     ek;
  InflScorer    sc;
  const int64_t Q = 8, N = 256, qidx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  float         xq[8 * 784];
  int64_t       yq[8], start, count, dims[2];
  const double *local;
  double       *ref, e = 0;
  hid_t         file;
  const double  tol = prec == INFL_PREC_DOUBLE ? 1e-8 : 1e-4;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small.safetensors", ref_dir));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, path));
  PetscCall(InflModelSetPrecision(model, prec));
  PetscCall(InflDataOpen(comm, FMNIST, N, &train));
  PetscCall(InflDataOpen(comm, FMNIST_TEST, 16, &query));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFisher(ek, INFL_FISHER_EMPIRICAL, 0));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(InflDataGetExamples(query, (PetscInt)Q, qidx, xq, yq));
  PetscCall(PetscMalloc1(Q * N, &ref));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small_lowrank.h5", ref_dir));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  dims[0] = Q;
  dims[1] = N;
  PetscCall(InflH5ReadArray(file, "/scores", H5T_NATIVE_DOUBLE, 2, dims, NULL, ref));
  PetscCall(InflH5Close(&file));
  /* per_layer 0: each rank factors its own queries and gathers the factors; 1: every rank factors all of them */
  for (int per_layer = 0; per_layer < 2; per_layer++) {
    e = 0;
    if (per_layer) PetscCall(PetscOptionsSetValue(NULL, "-score_per_layer", "1"));
    PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1"));
    PetscCall(PetscOptionsSetValue(NULL, "-score_rank", "4"));
    PetscCall(InflScorerCreate(comm, &sc));
    PetscCall(InflScorerSetFromOptions(sc));
    PetscCall(PetscOptionsClearValue(NULL, "-score_save_all"));
    PetscCall(PetscOptionsClearValue(NULL, "-score_rank"));
    PetscCall(PetscOptionsClearValue(NULL, "-score_per_layer"));
    PetscCall(InflScorerSetQueries(sc, model, ek, (PetscInt)Q, xq, yq, qidx));
    PetscCall(InflScorerScore(sc, train));
    PetscCall(InflScorerGetLocalScores(sc, &start, &count, &local));
    for (int64_t q = 0; q < Q; q++) {
      double m = 0;
      for (int64_t j = 0; j < N; j++) m = PetscMax(m, fabs(ref[q * N + j]));
      for (int64_t j = 0; j < count; j++) e = PetscMax(e, fabs(local[q * count + j] - ref[q * N + start + j]) / m);
    }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &e, 1, MPI_DOUBLE, MPI_MAX, comm));
    EXPECT(e <= tol, "rank-4 scores, %s precision%s: relative error %.3e > %.1e", prec ? "double" : "single", per_layer ? ", per-layer terms" : "", e, tol);
    PetscCall(PetscPrintf(comm, "rank-4 query gradients, %s precision%s: scores rel. error %.2e\n", prec ? "double" : "single", per_layer ? ", per-layer terms" : "", e));
    PetscCall(InflScorerDestroy(&sc));
  }
  PetscCall(PetscFree(ref));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

/* The single-precision rotation into the eigenbases (InflEKFACRotatedSquares on a float capture) against the double
 * one on the same captured values: ordinary examples, and the same examples with their pseudo-gradients scaled down to
 * the size of a confidently classified example's (1e-36: float denormals, whose squares underflow); and a row rotated
 * in another chunk (another place in the SGEMM block) agrees to the rounding bound of a dot product. */
static PetscErrorCode check_rotation_single(MPI_Comm comm)
{
  char         path[PETSC_MAX_PATH_LEN];
  InflModel    model;
  InflData     train;
  InflEKFAC    ek;
  InflCapture *c32, *c64;
  PetscInt     L;
  InflLinear  *lin;
  const PetscInt B = 300, cut = 7;
  int64_t      idx[300], y[300];
  float       *x;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small.safetensors", ref_dir));
  PetscCall(InflModelCreate(PETSC_COMM_SELF, &model));
  PetscCall(InflModelLoad(model, path));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(InflDataOpen(PETSC_COMM_SELF, FMNIST, 512, &train));
  PetscCall(InflEKFACCreate(PETSC_COMM_SELF, &ek));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflEKFACFit(ek, model, train));
  PetscCall(PetscMalloc1((size_t)B * lin[0].din, &x));
  for (PetscInt n = 0; n < B; n++) idx[n] = 511 - n;
  PetscCall(InflDataGetExamples(train, B, idx, x, y));
  PetscCall(InflCaptureCreate(model, B, &c64));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_SINGLE));
  PetscCall(InflCaptureCreate(model, B, &c32));
  PetscCall(InflModelCapture(model, B, x, y, c32));
  c64->B = c64->T = B; /* one row per example */
  for (int tiny = 0; tiny < 2; tiny++) {
    for (PetscInt l = 0; l < L; l++) {
      PetscInt na = lin[l].din + 1, nd = lin[l].dout;
      double  *ta32, *td32, *ta64, *td64, *tb, *tdb, ea = 0, ma = 0, ed = 0, md = 0, ua = 0, ud = 0;
      if (tiny) for (int64_t i = 0; i < (int64_t)B * nd; i++) c32->ds32[l][i] *= 1e-36f; /* scaled once, on the first pass at tiny */
      for (int64_t i = 0; i < (int64_t)B * na; i++) c64->a64[l][i] = c32->a32[l][i];
      for (int64_t i = 0; i < (int64_t)B * nd; i++) c64->ds64[l][i] = c32->ds32[l][i];
      PetscCall(PetscMalloc6((size_t)B * na, &ta32, (size_t)B * nd, &td32, (size_t)B * na, &ta64, (size_t)B * nd, &td64, (size_t)B * na, &tb, (size_t)B * nd, &tdb));
      PetscCall(InflEKFACRotatedSquares(ek, l, c32, ta32, td32));
      PetscCall(InflEKFACRotatedSquares(ek, l, c64, ta64, td64));
      /* per example: max error over the row against the row's largest square */
      for (PetscInt n = 0; n < B; n++) {
        double ra = 0, rd = 0, xa = 0, xd = 0;
        for (PetscInt j = 0; j < na; j++) { ra = PetscMax(ra, fabs(ta32[n * na + j] - ta64[n * na + j])); xa = PetscMax(xa, ta64[n * na + j]); }
        for (PetscInt j = 0; j < nd; j++) { rd = PetscMax(rd, fabs(td32[n * nd + j] - td64[n * nd + j])); xd = PetscMax(xd, td64[n * nd + j]); }
        if (xa > 0) ea = PetscMax(ea, ra / xa);
        if (xd > 0) ed = PetscMax(ed, rd / xd);
        ma = PetscMax(ma, xa);
        md = PetscMax(md, xd);
      }
      EXPECT(ma > 0 && md > 0, "layer %d: rotated squares are all zero", (int)l);
      EXPECT(ea <= 1e-5 && ed <= 1e-5, "layer %d%s: single-precision rotated squares differ from double by %.3e (a) and %.3e (Ds) of the row maximum", (int)l, tiny ? ", Ds scaled by 1e-36" : "", ea, ed);
      if (tiny) EXPECT(md < 1e-60 && md > 1e-90, "layer %d: scaled Ds squares have maximum %g", (int)l, md);
      /* the same rows in two chunks, 7 and 293 */
      {
        PetscInt B0 = c32->B; /* == c32->T: one row per example */
        float   *a0 = c32->a32[l], *d0 = c32->ds32[l];
        c32->B = c32->T = cut;
        PetscCall(InflEKFACRotatedSquares(ek, l, c32, tb, tdb));
        c32->B = c32->T = B0 - cut;
        c32->a32[l] = a0 + (int64_t)cut * na;
        c32->ds32[l] = d0 + (int64_t)cut * nd;
        PetscCall(InflEKFACRotatedSquares(ek, l, c32, tb + (int64_t)cut * na, tdb + (int64_t)cut * nd));
        c32->B = c32->T = B0;
        c32->a32[l] = a0;
        c32->ds32[l] = d0;
        /* a rotated coordinate is a float dot product of length n with a unit column, so two groupings differ by at
         * most 2 n u ||row|| in it and 4 n u ||row||^2 in its square; ||row||^2 is the sum of the row's squares */
        for (PetscInt n = 0; n < B; n++) {
          double sa = 0, sd = 0, da = 0, dd = 0;
          for (PetscInt j = 0; j < na; j++) { sa += ta32[n * na + j]; da = PetscMax(da, fabs(tb[n * na + j] - ta32[n * na + j])); }
          for (PetscInt j = 0; j < nd; j++) { sd += td32[n * nd + j]; dd = PetscMax(dd, fabs(tdb[n * nd + j] - td32[n * nd + j])); }
          if (sa > 0) ua = PetscMax(ua, da / (4 * na * 0x1p-24 * sa));
          if (sd > 0) ud = PetscMax(ud, dd / (4 * nd * 0x1p-24 * sd));
        }
        EXPECT(ua <= 1 && ud <= 1, "layer %d: single-precision rotated squares of the same rows in other chunks use %.3g (a) and %.3g (Ds) of the rounding bound", (int)l, ua, ud);
      }
      PetscCall(PetscPrintf(comm, "single-precision rotation, layer %d%s: %.2e (a), %.2e (Ds) of the row maximum; other chunks use %.2e, %.2e of the rounding bound\n", (int)l, tiny ? ", Ds x 1e-36" : "", ea, ed, ua, ud));
      PetscCall(PetscFree6(ta32, td32, ta64, td64, tb, tdb));
    }
  }
  PetscCall(PetscFree(x));
  PetscCall(InflCaptureDestroy(&c32));
  PetscCall(InflCaptureDestroy(&c64));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  const char *src;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  PetscCall(PetscSNPrintf(ref_dir, sizeof(ref_dir), "%s/tests/ref", src ? src : "."));

  PetscCall(check_against_reference(comm, INFL_FISHER_EMPIRICAL, INFL_PREC_DOUBLE));
  PetscCall(check_against_reference(comm, INFL_FISHER_TRUE, INFL_PREC_DOUBLE));
  PetscCall(check_against_reference(comm, INFL_FISHER_EMPIRICAL, INFL_PREC_SINGLE));
  PetscCall(check_against_reference(comm, INFL_FISHER_TRUE, INFL_PREC_SINGLE));
  PetscCall(check_self_equals_pairwise(comm));
  PetscCall(check_rotation_single(comm));
  PetscCall(check_low_rank(comm, INFL_PREC_DOUBLE));
  PetscCall(check_low_rank(comm, INFL_PREC_SINGLE));

  /* more ranks than examples (3 examples), duplicated examples and an all-zero input column */
  {
    const int64_t three[3] = {5, 9, 11}, dup[12] = {5, 5, 9, 9, 9, 11, 20, 20, 31, 5, 42, 42};
    PetscCall(write_h5_data(comm, "test_ekfac_three.h5", 3, three, PETSC_FALSE));
    PetscCall(check_invariance(comm, "3 examples", "h5:test_ekfac_three.h5", 3));
    PetscCall(write_h5_data(comm, "test_ekfac_dup.h5", 12, dup, PETSC_TRUE));
    PetscCall(check_invariance(comm, "duplicates + zero column", "h5:test_ekfac_dup.h5", 12));
    {
      const int64_t dupcopy[12] = {0, 0, 2, 2, 2, 5, 6, 6, 8, 0, 10, 10};
      PetscCall(check_copies(comm, "duplicates + zero column", "h5:test_ekfac_dup.h5", 12, dupcopy, INFL_PREC_DOUBLE));
      PetscCall(check_copies(comm, "duplicates + zero column", "h5:test_ekfac_dup.h5", 12, dupcopy, INFL_PREC_SINGLE));
    }
  }
  /* 300 copies of three images (100 each) in a scattered order, scored in single precision in chunks of 37 */
  {
    int64_t src[300], copy[300], first[3] = {-1, -1, -1};
    const int64_t img[3] = {7, 19, 123};
    for (int i = 0; i < 300; i++) {
      int k = (int)((i * 7 + i / 13) % 3);
      src[i] = img[k];
      if (first[k] < 0) first[k] = i;
      copy[i] = first[k];
    }
    PetscCall(write_h5_data(comm, "test_ekfac_copies.h5", 300, src, PETSC_FALSE));
    PetscCall(check_copies(comm, "300 copies of 3 images", "h5:test_ekfac_copies.h5", 300, copy, INFL_PREC_SINGLE));
    PetscCall(check_invariance(comm, "300 copies of 3 images", "h5:test_ekfac_copies.h5", 300));
  }

  /* damping 0 with zero eigenvalues (pixels that are 0 in every example make A exactly singular) is an error */
  {
    char      path[PETSC_MAX_PATH_LEN];
    InflModel model;
    InflData  train;
    InflEKFAC ek;
    PetscCall(PetscSNPrintf(path, sizeof(path), "%s/mlp_small.safetensors", ref_dir));
    PetscCall(InflModelCreate(comm, &model));
    PetscCall(InflModelLoad(model, path));
    PetscCall(InflDataOpen(comm, FMNIST, 64, &train));
    PetscCall(InflEKFACCreate(comm, &ek));
    PetscCall(InflEKFACFit(ek, model, train));
    EXPECT_FAIL(comm, InflEKFACSetDamping(ek, 0.0), "singular", "damping 0 on a singular factor");
    PetscCall(InflEKFACDestroy(&ek));
    PetscCall(InflDataDestroy(&train));
    PetscCall(InflModelDestroy(&model));
  }
  PetscCall(PetscPrintf(comm, "test_ekfac: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

/* Krylov IHVP on a GPT-2 (tests/ref/gpt2_bytes: 2 blocks, n_embd 16, byte-level) through the captures: the training
 * data are the 16-token windows of tests/ref/gpt2_bytes_text.txt, sharded over the ranks.  Independent references
 * from the model's own full backward pass (InflModelSequenceGradients, double: the whole parameter slab, from which
 * the captured layers' W^T and b are cut), never from the captures:
 *  - the query gradients in the IHVP layout (InflIHVPQueryGradients) equal the cut full gradients (1e-10);
 *  - the empirical-Fisher product (InflIHVPMultBlock of 3 directions) equals (1/N) G^T G v + lambda v with G (N, n) the
 *    stacked per-window gradients (1e-10), and so does the true Fisher's with the targets InflModelSampleTargets draws;
 *  - the block CG solution of (G^T G / N + lambda I) p = g_q for 3 queries equals the dense LAPACK solution by the
 *    Woodbury identity p = (g - G^T (N lambda I + G G^T)^-1 G g) / lambda (dgesv of the N x N system; exact, N = 12
 *    windows), to 1e-8 relative at rtol 1e-12 (no preconditioner: the spectrum is N values above lambda, so CG needs
 *    about N + 1 iterations; the exact diagonal would spread the lambda cluster), and so does one KSP solve per query
 *    (-ihvp_block false);
 *  - for the layer selections all and mlp (the IHVP vector holds the selected layers only);
 *  - -ihvp_curvature ggn is an error (PETSC_ERR_SUP) for this model type.
 * At 1-4 ranks every rank checks against the same reference. */
static const char help[] = "Krylov IHVP on the tiny byte-level GPT-2 against dense references.\n";

#include <infl/ihvp.h>
#include <petscblaslapack.h>
#include <cblas.h>
#include <math.h>
#include "lib/infl_test.h"

static double relerr(int64_t n, const double a[], const double b[])
{
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return sqrt(num / PetscMax(den, 1e-300));
}

/* g (n) in the IHVP layout: the exposed layers' (W^T | b) cut from a full gradient slab gfull. */
static void cut_layers(InflModel model, PetscInt L, const InflLinear lin[], const float *params, const double gfull[], double g[])
{
  int64_t o = 0;
  (void)model;
  for (PetscInt l = 0; l < L; l++) {
    PetscInt din = lin[l].din, dout = lin[l].dout;
    int64_t  w = lin[l].W - params, b = lin[l].b - params;
    for (PetscInt i = 0; i < dout; i++)
      for (PetscInt j = 0; j < din; j++) g[o + (int64_t)i * din + j] = gfull[w + (int64_t)j * dout + i]; /* Conv1D W (din, dout) */
    for (PetscInt i = 0; i < dout; i++) g[o + (int64_t)dout * din + i] = gfull[b + i];
    o += (int64_t)dout * (din + 1);
  }
}

/* G (N, n): the cut gradient of every training window with the given targets (NULL: next tokens). */
static PetscErrorCode window_gradients(InflModel model, InflData data, int64_t N, int64_t n, PetscBool sampled, uint64_t seed, double G[])
{
  PetscInt    L, V, P;
  InflLinear *lin;
  float      *params;
  int64_t     nfull, d, off[2];
  int32_t    *tok, *tgt;
  double     *gf;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(InflModelGetParameters(model, &nfull, &params, NULL));
  PetscCall(InflModelGetSequenceSizes(model, &V, &P));
  PetscCall(InflDataGetSizes(data, NULL, &d, NULL));
  PetscCall(PetscMalloc3(nfull, &gf, d, &tok, d, &tgt));
  for (int64_t m = 0; m < N; m++) {
    PetscCall(InflDataGetSequences(data, 1, &m, tok, off));
    if (sampled) PetscCall(InflModelSampleTargets(model, 1, off, tok, &m, seed, tgt));
    PetscCall(InflModelSequenceGradients(model, 1, off, tok, sampled ? tgt : NULL, gf));
    cut_layers(model, L, lin, params, gf, G + m * n);
  }
  PetscCall(PetscFree3(gf, tok, tgt));
  PetscFunctionReturn(0);
}

/* p = (g - G^T (N lambda I + G G^T)^-1 G g) / lambda = (G^T G / N + lambda I)^-1 g, by LAPACK dgesv. */
static PetscErrorCode woodbury_solve(int64_t N, int64_t n, const double G[], double lambda, const double g[], double p[])
{
  double      *K, *c;
  PetscBLASInt nb, one = 1, info, *piv;

  PetscFunctionBegin;
  PetscCall(PetscMalloc3(N * N, &K, N, &c, N, &piv));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)N, (int)n, 1, G, (int)n, G, (int)n, 0, K, (int)N);
  for (int64_t i = 0; i < N; i++) K[i * N + i] += N * lambda;
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)n, 1, G, (int)n, g, 1, 0, c, 1);
  PetscCall(PetscBLASIntCast(N, &nb));
  PetscCallBLAS("LAPACKgesv", LAPACKgesv_(&nb, &one, K, &nb, piv, c, &nb, &info)); /* K symmetric: row/column major alike */
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "dgesv info %d", (int)info);
  PetscCall(PetscArraycpy(p, g, n));
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)N, (int)n, -1, G, (int)n, c, 1, 1, p, 1);
  for (int64_t i = 0; i < n; i++) p[i] /= lambda;
  PetscCall(PetscFree3(K, c, piv));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  const char *src;
  char        model_path[PETSC_MAX_PATH_LEN], text[PETSC_MAX_PATH_LEN];
  const char *sels[2] = {"all", "mlp"};
  double      lambda = 1e-3;
  int64_t     qidx[3] = {0, 5, 9};

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  EXPECT(src, "INFL_SOURCE_DIR is not set (ctest sets it)");
  PetscCall(PetscSNPrintf(model_path, sizeof(model_path), "%s/tests/ref/gpt2_bytes", src));
  PetscCall(PetscSNPrintf(text, sizeof(text), "text:%s/tests/ref/gpt2_bytes_text.txt", src));
  for (int k = 0; k < 2; k++) {
    InflModel         model;
    InflData          data;
    InflIHVP          ih;
    PetscInt          n, L;
    int64_t           N;
    double           *G, *g, *gq, *ref, *P[16], *u;
    InflIHVPSolveInfo info[3];
    const int64_t    *off;
    Vec               X[3], Y[3];
    Mat               A;

    PetscCall(InflModelCreate(comm, &model));
    PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
    PetscCall(InflModelLoad(model, model_path));
    PetscCall(InflModelSetLayerSelection(model, sels[k]));
    PetscCall(InflDataOpen(comm, text, 12, &data)); /* the first 12 windows: CG needs about 13 iterations */
    PetscCall(InflModelCheckData(model, data));
    PetscCall(InflDataGetSizes(data, &N, NULL, NULL));

    /* ggn: no R-op product for this type */
    {
      PetscErrorCode ierr;
      PetscCall(InflIHVPCreate(comm, &ih));
      PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_GGN, 0));
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      ierr = InflIHVPSetUp(ih, model, data, NULL, lambda);
      PetscCall(PetscPopErrorHandler());
      EXPECT(ierr == PETSC_ERR_SUP, "ggn on a GPT-2 returned %d, expected PETSC_ERR_SUP", (int)ierr);
      PetscCall(InflIHVPDestroy(&ih));
    }

    PetscCall(PetscOptionsSetValue(NULL, "-ihvp_ksp_rtol", "1e-12"));
    PetscCall(InflIHVPCreate(comm, &ih));
    PetscCall(InflIHVPSetFromOptions(ih));
    PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_EMPIRICAL, 0));
    PetscCall(InflIHVPSetUp(ih, model, data, NULL, lambda));
    PetscCall(InflIHVPGetSizes(ih, &n, &L, &off));
    PetscCall(PetscPrintf(comm, "layers %s: %d layers, n = %d, %d training windows\n", sels[k], (int)L, (int)n, (int)N));
    PetscCall(PetscMalloc5((size_t)N * n, &G, (size_t)3 * n, &g, (size_t)3 * n, &gq, (size_t)3 * n, &ref, n, &u));
    PetscCall(window_gradients(model, data, N, n, PETSC_FALSE, 0, G));

    /* query gradients through the captures against the full backward pass */
    PetscCall(InflIHVPQueryGradients(ih, data, 3, qidx, gq));
    for (int q = 0; q < 3; q++) {
      double e = relerr(n, gq + q * n, G + qidx[q] * n);
      EXPECT(e < 1e-10, "query %d gradient differs from the full backward pass by %g", (int)qidx[q], e);
    }

    /* block products (empirical, then true Fisher) against (1/N) G^T G v + lambda v */
    PetscCall(InflIHVPGetOperator(ih, &A));
    for (int q = 0; q < 3; q++) {
      PetscCall(MatCreateVecs(A, &X[q], &Y[q]));
      for (PetscInt i = 0; i < n; i++) u[i] = InflNormal(7, (uint64_t)q, (uint64_t)i);
      PetscCall(InflIHVPArrayToVec(ih, u, X[q]));
      PetscCall(PetscArraycpy(g + q * n, u, n));
    }
    for (int c = 0; c < 2; c++) {
      double e = 0, *Gc = G;
      if (c == 1) {
        PetscCall(InflIHVPDestroy(&ih));
        PetscCall(InflIHVPCreate(comm, &ih));
        PetscCall(InflIHVPSetFromOptions(ih));
        PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_TRUE, 11));
        PetscCall(InflIHVPSetUp(ih, model, data, NULL, lambda));
        PetscCall(PetscMalloc1((size_t)N * n, &Gc));
        PetscCall(window_gradients(model, data, N, n, PETSC_TRUE, 11, Gc));
      }
      PetscCall(InflIHVPMultBlock(ih, 3, X, Y));
      for (int q = 0; q < 3; q++) {
        double *t;
        PetscCall(PetscMalloc1(N, &t));
        cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)N, n, 1, Gc, n, g + q * n, 1, 0, t, 1);
        for (PetscInt i = 0; i < n; i++) ref[i] = lambda * g[q * n + i];
        cblas_dgemv(CblasRowMajor, CblasTrans, (int)N, n, 1.0 / N, Gc, n, t, 1, 1, ref, 1);
        PetscCall(InflIHVPVecToArray(ih, Y[q], u));
        e = PetscMax(e, relerr(n, u, ref));
        PetscCall(PetscFree(t));
      }
      PetscCall(PetscPrintf(comm, "  %s Fisher block product (3 directions) vs dense: relative error %.2e\n", c ? "true" : "empirical", e));
      EXPECT(e < 1e-10, "%s Fisher product differs from the dense one by %g", c ? "true" : "empirical", e);
      if (c == 1) {
        PetscCall(PetscFree(Gc));
        PetscCall(InflIHVPDestroy(&ih));
        PetscCall(InflIHVPCreate(comm, &ih));
        PetscCall(InflIHVPSetFromOptions(ih));
        PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_EMPIRICAL, 0));
        PetscCall(InflIHVPSetUp(ih, model, data, NULL, lambda));
      }
    }
    for (int q = 0; q < 3; q++) {
      PetscCall(VecDestroy(&X[q]));
      PetscCall(VecDestroy(&Y[q]));
    }

    /* solves: block CG with the exact diagonal, with none, and one KSP solve per query, against Woodbury + LAPACK */
    for (int q = 0; q < 3; q++) PetscCall(woodbury_solve(N, n, G, lambda, gq + q * n, ref + q * n));
    for (int mode = 0; mode < 2; mode++) {
      const char *names[2] = {"block CG", "one KSP solve per query"};
      double      e = 0;
      PetscCall(PetscOptionsSetValue(NULL, "-ihvp_pc_type", "none"));
      PetscCall(PetscOptionsSetValue(NULL, "-ihvp_block", mode == 1 ? "false" : "true"));
      PetscCall(InflIHVPDestroy(&ih));
      PetscCall(InflIHVPCreate(comm, &ih));
      PetscCall(InflIHVPSetFromOptions(ih));
      PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_EMPIRICAL, 0));
      PetscCall(InflIHVPSetUp(ih, model, data, NULL, lambda));
      PetscCall(InflIHVPGetSizes(ih, NULL, NULL, &off)); /* owned by ih */
      PetscCall(InflIHVPSolveGradients(ih, 3, gq, qidx, P, info));
      for (int q = 0; q < 3; q++) {
        InflLinear *lin;
        PetscCall(InflModelGetLayers(model, NULL, &lin));
        for (PetscInt l = 0; l < L; l++) {
          InflIHVPLayerToSlab(lin[l].din, lin[l].dout, P[l] + (int64_t)q * (off[l + 1] - off[l]), u + off[l]);
        }
        e = PetscMax(e, relerr(n, u, ref + q * n));
        EXPECT(info[q].converged, "%s: query %d did not converge", names[mode], (int)qidx[q]);
      }
      PetscCall(PetscPrintf(comm, "  %s: iterations %d %d %d, largest relative error against Woodbury + LAPACK %.2e\n", names[mode], (int)info[0].iterations, (int)info[1].iterations, (int)info[2].iterations, e));
      EXPECT(e < 1e-8, "%s: solution differs from the dense one by %g", names[mode], e);
      for (PetscInt l = 0; l < L; l++) PetscCall(PetscFree(P[l]));
    }
    PetscCall(PetscOptionsClearValue(NULL, "-ihvp_pc_type"));
    PetscCall(PetscOptionsClearValue(NULL, "-ihvp_block"));
    PetscCall(PetscOptionsClearValue(NULL, "-ihvp_ksp_rtol"));
    PetscCall(PetscFree5(G, g, gq, ref, u));
    PetscCall(InflIHVPDestroy(&ih));
    PetscCall(InflDataDestroy(&data));
    PetscCall(InflModelDestroy(&model));
  }
  PetscCall(PetscPrintf(comm, "test_ihvp_gpt2: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

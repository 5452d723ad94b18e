/* Krylov IHVP (src/curv/ihvp.c, src/nn/mlp_rop.c) against dense LAPACK references on a small MLP (49,8,10, tanh,
 * 490 parameters, trained 3 epochs) on 512 Fashion-MNIST images pooled to 7x7: the MATSHELL product of the damped empirical Fisher, true Fisher and GGN equals
 * the dense matrix (formed from InflModelPerExampleGradients; the GGN as sum_y p_y g_y g_y^T, the identity
 * J^T (diag p - p p^T) J = sum_y p_y J^T (p - e_y) (p - e_y)^T J) to 1e-10; the R-op Jacobian-vector product and the
 * GGN product match central finite differences; CG solutions match LAPACK dgesv; EK-FAC preconditioning cuts the
 * CG iterations; zero right-hand sides and unconverged solves are handled; Krylov queries scored by InflScorer give
 * g_m^T (C+D)^-1 g_q; block solves of several queries equal one solve per query and LAPACK, also with the deflation
 * and damped EK-FAC preconditioners (check_solvers); the Lanczos run of the deflation stops at an exhausted Krylov space
 * on 4 examples and deflates exactly the dense operator's top eigenvalues (check_breakdown).  Run at 1-4 ranks: every rank checks against the same dense reference. */
#include <infl/ihvp.h>
#include <infl/score.h>
#include <petscblaslapack.h>
#include <math.h>
#include <stdlib.h>
#include <cblas.h>

#define NEX 512
#define D0 49
#define NC 10
static const PetscInt dims[3] = {D0, 8, NC};

/* The first NEX Fashion-MNIST training images, 4x4 average-pooled to 7x7 (49 features: correlated pixels with a
 * non-zero mean, the ill-conditioned input covariance that Kronecker factors capture), written as an HDF5 data set. */
static PetscErrorCode write_data(MPI_Comm comm, const char path[])
{
  InflData fm;
  float   *x, *xp;
  int64_t  y[NEX], idx[NEX], dx[2] = {NEX, D0}, dy[1] = {NEX};
  hid_t    file;

  PetscFunctionBegin;
  PetscCall(InflDataOpen(comm, "idx:/usr/share/datasets/fashion-mnist/train", NEX, &fm));
  PetscCall(PetscMalloc2(NEX * 784, &x, NEX * D0, &xp));
  for (int n = 0; n < NEX; n++) idx[n] = n;
  PetscCall(InflDataGetExamples(fm, NEX, idx, x, y));
  for (int n = 0; n < NEX; n++)
    for (int i = 0; i < 7; i++)
      for (int j = 0; j < 7; j++) {
        double t = 0;
        for (int a = 0; a < 4; a++)
          for (int b = 0; b < 4; b++) t += x[n * 784 + (4 * i + a) * 28 + 4 * j + b];
        xp[n * D0 + i * 7 + j] = (float)(t / 16);
      }
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &file));
  PetscCall(InflH5WriteArray(file, "/inputs", H5T_NATIVE_FLOAT, 2, dx, xp));
  PetscCall(InflH5WriteArray(file, "/labels", H5T_NATIVE_INT64, 1, dy, y));
  PetscCall(InflH5Close(&file));
  PetscCall(PetscFree2(x, xp));
  PetscCall(InflDataDestroy(&fm));
  PetscFunctionReturn(0);
}

static double relerr(PetscInt n, const double a[], const double b[])
{
  double num = 0, den = 0;
  for (PetscInt i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return sqrt(num / PetscMax(den, 1e-300));
}

/* Dense damped curvature M (n, n) of the whole data set for curvature `curv`. */
static PetscErrorCode dense_curvature(InflModel model, InflData data, InflCurvature curv, uint64_t seed, PetscInt L, const double damping[], double M[])
{
  int64_t     N, d, n, idx[NEX], ysamp[NEX], yall[NEX];
  float      *x;
  double     *g, *z;
  PetscInt    C = NC;
  InflLinear *lin;

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(data, &N, &d, NULL));
  PetscCall(InflModelGetParameters(model, &n, NULL, NULL));
  PetscCall(InflModelGetLayers(model, NULL, &lin));
  for (int64_t i = 0; i < N; i++) idx[i] = i;
  PetscCall(PetscMalloc3(NEX * D0, &x, NEX * NC, &z, (size_t)N * n, &g));
  PetscCall(InflDataGetExamples(data, (PetscInt)N, idx, x, yall));
  PetscCall(PetscArrayzero(M, (size_t)n * n));
  if (curv == INFL_CURVATURE_GGN) { /* sum_y p_y g_y g_y^T */
    double *v0;
    PetscCall(PetscCalloc1(n, &v0));
    PetscCall(InflModelJacobianVectorProduct(model, (PetscInt)N, x, v0, z, NULL));
    PetscCall(PetscFree(v0));
    for (PetscInt c = 0; c < C; c++) {
      int64_t yc[NEX];
      for (int64_t i = 0; i < N; i++) yc[i] = c;
      PetscCall(InflModelPerExampleGradients(model, (PetscInt)N, x, yc, g));
      for (int64_t e = 0; e < N; e++) {
        double m = z[e * C], Z = 0, p;
        for (PetscInt j = 1; j < C; j++) m = PetscMax(m, z[e * C + j]);
        for (PetscInt j = 0; j < C; j++) Z += exp(z[e * C + j] - m);
        p = exp(z[e * C + c] - m) / Z;
        for (int64_t i = 0; i < n; i++) g[e * n + i] *= sqrt(p / N);
      }
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, N, 1, g, n, g, n, 1, M, n);
    }
  } else {
    if (curv == INFL_CURVATURE_TRUE) PetscCall(InflModelSampleLabels(model, (PetscInt)N, x, idx, seed, ysamp));
    PetscCall(InflModelPerExampleGradients(model, (PetscInt)N, x, curv == INFL_CURVATURE_TRUE ? ysamp : yall, g));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, N, 1.0 / N, g, n, g, n, 0, M, n);
  }
  {
    int64_t o = 0;
    for (PetscInt l = 0; l < L; l++) {
      int64_t sz = (int64_t)lin[l].dout * (lin[l].din + 1);
      for (int64_t i = o; i < o + sz; i++) M[i * n + i] += damping[l];
      o += sz;
    }
  }
  PetscCall(PetscFree3(x, z, g));
  PetscFunctionReturn(0);
}

/* x = M^-1 b by LAPACK (M copied). */
static PetscErrorCode dense_solve(PetscInt n, const double M[], const double b[], double x[])
{
  double      *A;
  PetscBLASInt nb, one = 1, info, *piv;

  PetscFunctionBegin;
  PetscCall(PetscMalloc2((size_t)n * n, &A, n, &piv));
  PetscCall(PetscArraycpy(A, M, (size_t)n * n));
  PetscCall(PetscArraycpy(x, b, n));
  PetscCall(PetscBLASIntCast(n, &nb));
  PetscCallBLAS("LAPACKgesv", LAPACKgesv_(&nb, &one, A, &nb, piv, x, &nb, &info));
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "dgesv info %d", (int)info);
  PetscCall(PetscFree2(A, piv));
  PetscFunctionReturn(0);
}

/* Query q of per-layer IHVPs P[l] (Q, dout, din+1) (InflIHVPSolveGradients) as a flat slab vector. */
static PetscErrorCode ihvp_layers_to_slab(InflModel model, PetscInt L, double *const P[], int q, double slab[])
{
  InflLinear *lin;
  int64_t     o = 0;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, NULL, &lin));
  for (PetscInt l = 0; l < L; l++) {
    int64_t sz = (int64_t)lin[l].dout * (lin[l].din + 1);
    InflIHVPLayerToSlab(lin[l].din, lin[l].dout, P[l] + (int64_t)q * sz, slab + o);
    o += sz;
  }
  PetscFunctionReturn(0);
}

/* Three queries of `data` solved with curvature `curv` (dense matrix M) by the block solve (lockstep CG, no
 * preconditioner: -ihvp_deflate 0 is set in main), one KSP solve per query (-ihvp_block false), the deflation preconditioner (-ihvp_deflate 3; its Ritz values against the
 * dense eigenvalues) and the EK-FAC preconditioner with a larger damping (-ihvp_pc_damping): every IHVP equals the
 * LAPACK solution, and the variants equal the block solve, to the tolerance (rtol 1e-10). */
static PetscErrorCode check_solvers(MPI_Comm comm, InflModel model, InflData data, InflEKFAC ek, InflCurvature curv, PetscInt L, int64_t n, const double M[])
{
  const char *variant[4][2][2] = {
    {{NULL, NULL}},
    {{"-ihvp_block", "false"}},
    {{"-ihvp_deflate", "3"}},
    {{"-ihvp_pc_type", "shell"}, {"-ihvp_pc_damping", "1e-1"}},
  };
  int64_t qidx[3] = {5, 17, 30}, yq[3];
  float   xq[3 * D0];
  double *refs, *slab, *block, *b;

  PetscFunctionBegin;
  PetscCall(PetscMalloc4((size_t)3 * n, &refs, n, &slab, (size_t)3 * n, &block, n, &b));
  PetscCall(InflDataGetExamples(data, 3, qidx, xq, yq));
  for (int q = 0; q < 3; q++) {
    PetscCall(InflModelPerExampleGradients(model, 1, xq + D0 * q, yq + q, b));
    PetscCall(dense_solve((PetscInt)n, M, b, refs + (int64_t)q * n));
  }
  PetscCall(PetscOptionsSetValue(NULL, "-ihvp_ksp_rtol", "1e-10"));
  for (int v = 0; v < 4; v++) {
    InflIHVP          ih;
    double           *P[2];
    InflIHVPSolveInfo info[3];
    double            eref = 0, eblock = 0;
    const char       *name = v ? variant[v][0][0] : "block CG", *value = v ? variant[v][0][1] : "";
    for (int o = 0; o < 2 && variant[v][o][0]; o++) PetscCall(PetscOptionsSetValue(NULL, variant[v][o][0], variant[v][o][1]));
    PetscCall(InflIHVPCreate(comm, &ih));
    PetscCall(InflIHVPSetCurvature(ih, curv, 3));
    PetscCall(InflIHVPSetFromOptions(ih));
    PetscCall(InflIHVPSetUp(ih, model, data, ek, -1));
    PetscCall(InflIHVPSolveQueries(ih, 3, xq, yq, qidx, P, info));
    for (int q = 0; q < 3; q++) {
      PetscCheck(info[q].converged, comm, PETSC_ERR_PLIB, "%s %s: query %d did not converge", name, value, (int)qidx[q]);
      PetscCall(ihvp_layers_to_slab(model, L, P, q, slab));
      if (v == 0) PetscCall(PetscArraycpy(block + (int64_t)q * n, slab, n));
      eref   = PetscMax(eref, relerr((PetscInt)n, slab, refs + (int64_t)q * n));
      eblock = PetscMax(eblock, relerr((PetscInt)n, slab, block + (int64_t)q * n));
    }
    PetscCall(PetscPrintf(comm, "%-9s %s %s: IHVPs of 3 queries vs LAPACK %.2e, vs the block solve %.2e (iterations %d %d %d)\n", InflCurvatureNames[curv], name, value, eref, eblock, (int)info[0].iterations, (int)info[1].iterations, (int)info[2].iterations));
    PetscCheck(eref < 1e-6 && eblock < 1e-6, comm, PETSC_ERR_PLIB, "%s %s: IHVPs differ from LAPACK by %g, from the block solve by %g", name, value, eref, eblock);
    if (v == 2) { /* the deflated Ritz values are the dense operator's largest eigenvalues */
      PetscInt      K;
      const double *theta;
      double        sigma, *Mc, *w, *work;
      PetscBLASInt  bn, lwork, linfo;
      PetscCall(InflIHVPGetDeflation(ih, &K, &theta, &sigma));
      PetscCheck(K == 3, comm, PETSC_ERR_PLIB, "deflation of %d vectors, not 3", (int)K);
      PetscCall(PetscBLASIntCast(n, &bn));
      lwork = 4 * bn;
      PetscCall(PetscMalloc3((size_t)n * n, &Mc, n, &w, lwork, &work));
      PetscCall(PetscArraycpy(Mc, M, (size_t)n * n));
      PetscCallBLAS("LAPACKsyev", LAPACKsyev_("N", "U", &bn, Mc, &bn, w, work, &lwork, &linfo));
      PetscCheck(linfo == 0, comm, PETSC_ERR_LIB, "dsyev info %d", (int)linfo);
      for (int k = 0; k < 3; k++) PetscCheck(fabs(theta[k] - w[n - 1 - k]) <= 1e-8 * w[n - 1], comm, PETSC_ERR_PLIB, "Ritz value %d: %.12g, dense eigenvalue %.12g", k, theta[k], w[n - 1 - k]);
      PetscCheck(sigma <= w[n - 4] * (1 + 1e-8) && sigma >= w[0] * (1 - 1e-8), comm, PETSC_ERR_PLIB, "deflation target %g outside [%g, %g]", sigma, w[0], w[n - 4]);
      PetscCall(PetscPrintf(comm, "%-9s deflation: Ritz values %.6e %.6e %.6e match the dense eigenvalues; sigma %.4e\n", InflCurvatureNames[curv], theta[0], theta[1], theta[2], sigma));
      PetscCall(PetscFree3(Mc, w, work));
    }
    for (int o = 0; o < 2 && variant[v][o][0]; o++) PetscCall(PetscOptionsClearValue(NULL, variant[v][o][0]));
    PetscCall(PetscOptionsSetValue(NULL, "-ihvp_deflate", "0"));
    PetscCall(PetscFree(P[0]));
    PetscCall(PetscFree(P[1]));
    PetscCall(InflIHVPDestroy(&ih));
  }
  PetscCall(PetscOptionsClearValue(NULL, "-ihvp_ksp_rtol"));
  PetscCall(PetscFree4(refs, slab, block, b));
  PetscFunctionReturn(0);
}

/* Lanczos breakdown on a tiny training set: the empirical Fisher of NB examples plus a damping d on every layer has the
 * NB eigenvalues lambda_i + d (the gradients' Gram matrix) and d, so the Krylov space of any start vector has
 * dimension NB + 1 and the Lanczos run behind -ihvp_deflate (explicit 10: 30 steps; the default 100: 210) must stop
 * there: the NB largest Ritz values are the dense operator's top eigenvalues (LAPACK dsyev), sigma is d, the
 * preconditioned operator is d I, so each solve converges in at most 2 iterations to the LAPACK solution. */
#define NB 4
static PetscErrorCode check_breakdown(MPI_Comm comm, InflModel model, PetscInt L, int64_t n)
{
  const double d = 1e-4, dl[2] = {d, d};
  const char  *kopt[2] = {"10", NULL};
  InflData     tiny;
  int64_t      qidx[3] = {5, 17, 30}, yq[3];
  float        xq[3 * D0];
  double      *M, *Mc, *w, *work, *b, *ref, *slab;
  PetscBLASInt bn, lwork, linfo;

  PetscFunctionBegin;
  PetscCall(InflDataOpen(comm, "h5:test_ihvp_data.h5", NB, &tiny));
  PetscCall(PetscBLASIntCast(n, &bn));
  lwork = 4 * bn;
  PetscCall(PetscMalloc7((size_t)n * n, &M, (size_t)n * n, &Mc, n, &w, lwork, &work, n, &b, 3 * n, &ref, n, &slab));
  PetscCall(dense_curvature(model, tiny, INFL_CURVATURE_EMPIRICAL, 0, L, dl, M));
  PetscCall(PetscArraycpy(Mc, M, (size_t)n * n));
  PetscCallBLAS("LAPACKsyev", LAPACKsyev_("N", "U", &bn, Mc, &bn, w, work, &lwork, &linfo));
  PetscCheck(linfo == 0, comm, PETSC_ERR_LIB, "dsyev info %d", (int)linfo);
  PetscCheck(w[n - NB] > 2 * d && fabs(w[n - NB - 1] - d) < 1e-9 && fabs(w[0] - d) < 1e-9, comm, PETSC_ERR_PLIB, "the dense operator of %d examples does not have %d eigenvalues above the damping and the rest at it", NB, NB);
  PetscCall(PetscOptionsSetValue(NULL, "-ihvp_ksp_rtol", "1e-10"));
  for (int v = 0; v < 2; v++) {
    InflIHVP          ih;
    InflData          full;
    double           *P[2], sigma, e = 0;
    const double     *theta;
    PetscInt          K, maxit = 0;
    InflIHVPSolveInfo info[3];
    if (kopt[v]) PetscCall(PetscOptionsSetValue(NULL, "-ihvp_deflate", kopt[v]));
    else PetscCall(PetscOptionsClearValue(NULL, "-ihvp_deflate")); /* the default K */
    PetscCall(InflIHVPCreate(comm, &ih));
    PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_EMPIRICAL, 0));
    PetscCall(InflIHVPSetFromOptions(ih));
    PetscCall(InflIHVPSetUp(ih, model, tiny, NULL, d));
    PetscCall(InflDataOpen(comm, "h5:test_ihvp_data.h5", 0, &full));
    PetscCall(InflDataGetExamples(full, 3, qidx, xq, yq));
    PetscCall(InflDataDestroy(&full));
    PetscCall(InflIHVPSolveQueries(ih, 3, xq, yq, qidx, P, info));
    PetscCall(InflIHVPGetDeflation(ih, &K, &theta, &sigma));
    PetscCheck(K == NB, comm, PETSC_ERR_PLIB, "-ihvp_deflate %s on %d examples: deflation of %d vectors, not the %d eigenvalues above the damping", kopt[v] ? kopt[v] : "(default)", NB, (int)K, NB);
    for (int k = 0; k < NB; k++) PetscCheck(fabs(theta[k] - w[n - 1 - k]) <= 1e-8 * w[n - 1], comm, PETSC_ERR_PLIB, "breakdown: Ritz value %d: %.12g, dense eigenvalue %.12g", k, theta[k], w[n - 1 - k]);
    PetscCheck(fabs(sigma - d) <= 1e-8 * w[n - 1], comm, PETSC_ERR_PLIB, "breakdown: deflation target %.12g, not the damping %g", sigma, d);
    for (int q = 0; q < 3; q++) {
      PetscCall(InflModelPerExampleGradients(model, 1, xq + D0 * q, yq + q, b));
      PetscCall(dense_solve((PetscInt)n, M, b, ref + (int64_t)q * n));
      PetscCall(ihvp_layers_to_slab(model, L, P, q, slab));
      e     = PetscMax(e, relerr((PetscInt)n, slab, ref + (int64_t)q * n));
      maxit = PetscMax(maxit, info[q].iterations);
      PetscCheck(info[q].converged, comm, PETSC_ERR_PLIB, "breakdown: query %d did not converge", (int)qidx[q]);
    }
    PetscCall(PetscPrintf(comm, "breakdown (%d examples, -ihvp_deflate %s): %d Ritz values %.6e .. %.6e match the dense eigenvalues, sigma %.3e = the damping; IHVPs vs LAPACK %.2e in at most %d iterations\n", NB, kopt[v] ? kopt[v] : "default", (int)K, theta[0], theta[K - 1], sigma, e, (int)maxit));
    PetscCheck(e < 1e-6 && maxit <= 2, comm, PETSC_ERR_PLIB, "breakdown: IHVPs differ from LAPACK by %g, or took %d iterations (the deflated operator is d I)", e, (int)maxit);
    PetscCall(PetscFree(P[0]));
    PetscCall(PetscFree(P[1]));
    PetscCall(InflIHVPDestroy(&ih));
  }
  PetscCall(PetscOptionsSetValue(NULL, "-ihvp_deflate", "0"));
  PetscCall(PetscOptionsClearValue(NULL, "-ihvp_ksp_rtol"));
  PetscCall(PetscFree7(M, Mc, w, work, b, ref, slab));
  PetscCall(InflDataDestroy(&tiny));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm        comm;
  InflModel       model;
  InflData        data;
  InflEKFAC       ek, ek_true;
  InflEKFACLayer *ekl;
  PetscInt        L;
  int64_t         n;
  double          damping[2], *M, *v, *u, *ref, *b, *xs;
  PetscMPIInt     rank;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  comm = PETSC_COMM_WORLD;
  PetscCall(PetscOptionsSetValue(NULL, "-ihvp_deflate", "0")); /* the default deflation only where check_solvers asks */
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(write_data(comm, "test_ihvp_data.h5"));
  PetscCall(InflDataOpen(comm, "h5:test_ihvp_data.h5", 0, &data));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, 3, dims, INFL_ACT_TANH, 5));
  {
    InflTrainOptions opt = {.optimizer = INFL_OPT_ADAM};
    PetscCall(InflTrainOptionsSetDefaults(&opt));
    opt.epochs = 3;
    opt.batch  = 64;
    opt.lr     = 1e-2;
    opt.seed   = 1;
    PetscCall(InflModelTrain(model, data, NULL, &opt));
  }
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflModelGetParameters(model, &n, NULL, NULL));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFisher(ek, INFL_FISHER_EMPIRICAL, 0));
  PetscCall(InflEKFACFit(ek, model, data));
  PetscCall(InflEKFACCreate(comm, &ek_true));
  PetscCall(InflEKFACSetFisher(ek_true, INFL_FISHER_TRUE, 3));
  PetscCall(InflEKFACFit(ek_true, model, data));
  PetscCall(InflEKFACGetLayers(ek_true, NULL, &ekl));
  PetscCall(InflEKFACGetLayers(ek, &L, &ekl));
  for (PetscInt l = 0; l < L; l++) damping[l] = ekl[l].damping;
  {
    InflEKFACLayer *ekt;
    PetscCall(InflEKFACGetLayers(ek_true, NULL, &ekt));
    for (PetscInt l = 0; l < L; l++) ekt[l].damping = damping[l];
  }
  PetscCall(PetscMalloc6((size_t)n * n, &M, n, &v, n, &u, n, &ref, n, &b, n, &xs));
  for (int64_t i = 0; i < n; i++) v[i] = InflNormal(99, (uint64_t)i, 0);
  PetscCall(check_breakdown(comm, model, L, n));

  /* R-op Jacobian-vector product against central differences of the logits */
  {
    int64_t idx[NEX], yall[NEX];
    float   *x, *params, *save, *lp, *lm;
    double  *Jv, eps = 1e-3, err = 0, nrm = 0;
    PetscCall(PetscMalloc2(NEX * D0, &x, NEX * NC, &Jv));
    for (int i = 0; i < NEX; i++) idx[i] = i;
    PetscCall(InflDataGetExamples(data, NEX, idx, x, yall));
    PetscCall(InflModelJacobianVectorProduct(model, NEX, x, v, NULL, Jv));
    PetscCall(PetscMalloc3(n, &save, NEX * NC, &lp, NEX * NC, &lm));
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    PetscCall(PetscArraycpy(save, params, n));
    /* exact float perturbation h_i = fl(theta + eps v) - theta, used for both signs via a double-checked step */
    for (int64_t i = 0; i < n; i++) params[i] = (float)(save[i] + eps * v[i]);
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    PetscCall(InflModelForward(model, NEX, x, lp));
    for (int64_t i = 0; i < n; i++) params[i] = (float)(save[i] - eps * v[i]);
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    PetscCall(InflModelForward(model, NEX, x, lm));
    PetscCall(PetscArraycpy(params, save, n));
    PetscCall(InflModelGetParameters(model, NULL, &params, NULL));
    for (int i = 0; i < NEX * NC; i++) {
      double fd = ((double)lp[i] - (double)lm[i]) / (2 * eps);
      err += (fd - Jv[i]) * (fd - Jv[i]);
      nrm += Jv[i] * Jv[i];
    }
    PetscCall(PetscPrintf(comm, "JVP vs finite differences: relative error %.2e\n", sqrt(err / nrm)));
    PetscCheck(sqrt(err / nrm) < 1e-3, comm, PETSC_ERR_PLIB, "R-op JVP differs from finite differences by %g", sqrt(err / nrm));

    /* GGN product from the finite-difference J v: (1/N) sum_n sum_y p_y g_{n,y} ((p - e_y) . Jv_fd) + D v */
    {
      double *g, *z, *v0, *ufd;
      InflIHVP ih;
      Mat      A;
      Vec      vv, yy;
      PetscCall(PetscMalloc1((size_t)NEX * n, &g));
      PetscCall(PetscCalloc3(n, &v0, n, &ufd, NEX * NC, &z));
      PetscCall(InflModelJacobianVectorProduct(model, NEX, x, v0, z, NULL));
      for (PetscInt c = 0; c < NC; c++) {
        int64_t yc[NEX];
        for (int e = 0; e < NEX; e++) yc[e] = c;
        PetscCall(InflModelPerExampleGradients(model, NEX, x, yc, g));
        for (int e = 0; e < NEX; e++) {
          double m = z[e * NC], Z = 0, p[NC], w = 0;
          for (int j = 1; j < NC; j++) m = PetscMax(m, z[e * NC + j]);
          for (int j = 0; j < NC; j++) Z += exp(z[e * NC + j] - m);
          for (int j = 0; j < NC; j++) p[j] = exp(z[e * NC + j] - m) / Z;
          for (int j = 0; j < NC; j++) w += (p[j] - (j == c)) * ((double)lp[e * NC + j] - (double)lm[e * NC + j]) / (2 * eps);
          for (int64_t i = 0; i < n; i++) ufd[i] += p[c] * g[(int64_t)e * n + i] * w / NEX;
        }
      }
      {
        int64_t     o = 0;
        InflLinear *lin;
        PetscCall(InflModelGetLayers(model, NULL, &lin));
        for (PetscInt l = 0; l < L; l++) {
          int64_t sz = (int64_t)lin[l].dout * (lin[l].din + 1);
          for (int64_t i = o; i < o + sz; i++) ufd[i] += damping[l] * v[i];
          o += sz;
        }
      }
      PetscCall(InflIHVPCreate(comm, &ih));
      PetscCall(InflIHVPSetCurvature(ih, INFL_CURVATURE_GGN, 0));
      PetscCall(InflIHVPSetUp(ih, model, data, ek, -1));
      PetscCall(InflIHVPGetOperator(ih, &A));
      PetscCall(MatCreateVecs(A, &vv, &yy));
      PetscCall(InflIHVPArrayToVec(ih, v, vv));
      PetscCall(MatMult(A, vv, yy));
      PetscCall(InflIHVPVecToArray(ih, yy, u));
      PetscCall(PetscPrintf(comm, "GGN product vs finite-difference Jacobian: relative error %.2e\n", relerr((PetscInt)n, u, ufd)));
      PetscCheck(relerr((PetscInt)n, u, ufd) < 1e-3, comm, PETSC_ERR_PLIB, "GGN product differs from the finite-difference one by %g", relerr((PetscInt)n, u, ufd));
      PetscCall(VecDestroy(&vv));
      PetscCall(VecDestroy(&yy));
      PetscCall(InflIHVPDestroy(&ih));
      PetscCall(PetscFree(g));
      PetscCall(PetscFree3(v0, ufd, z));
    }
    PetscCall(PetscFree3(save, lp, lm));
    PetscCall(PetscFree2(x, Jv));
  }

  for (int c = 0; c < 3; c++) {
    InflCurvature     curv = (InflCurvature)c;
    InflIHVP          ih;
    Mat               A;
    Vec               vv, yy;
    KSP               ksp;
    PC                pc;
    InflIHVPSolveInfo info, info0;
    double            e;

    PetscCall(dense_curvature(model, data, curv, 3, L, damping, M));
    PetscCall(InflIHVPCreate(comm, &ih));
    PetscCall(InflIHVPSetCurvature(ih, curv, 3));
    PetscCall(InflIHVPSetFromOptions(ih)); /* -ihvp_deflate 0 (main): these solves test the EK-FAC PC and none */
    PetscCall(PetscOptionsSetValue(NULL, "-ihvp_ksp_rtol", "1e-12"));
    PetscCall(InflIHVPSetUp(ih, model, data, curv == INFL_CURVATURE_EMPIRICAL ? ek : ek_true, -1));
    PetscCall(InflIHVPGetOperator(ih, &A));
    PetscCall(MatCreateVecs(A, &vv, &yy));
    /* product */
    PetscCall(InflIHVPArrayToVec(ih, v, vv));
    PetscCall(MatMult(A, vv, yy));
    PetscCall(InflIHVPVecToArray(ih, yy, u));
    for (int64_t i = 0; i < n; i++) {
      ref[i] = 0;
      for (int64_t j = 0; j < n; j++) ref[i] += M[i * n + j] * v[j];
    }
    e = relerr((PetscInt)n, u, ref);
    PetscCall(PetscPrintf(comm, "%-9s MatShell product vs dense: relative error %.2e\n", InflCurvatureNames[c], e));
    PetscCheck(e < 1e-10, comm, PETSC_ERR_PLIB, "%s product differs from the dense matrix by %g", InflCurvatureNames[c], e);
    if (curv == INFL_CURVATURE_EMPIRICAL) PetscCall(check_solvers(comm, model, data, ek, curv, L, n, M));
    /* solve a query gradient with EK-FAC preconditioning, then without */
    {
      int64_t qi = 5, yq;
      float   xq[D0];
      PetscCall(InflDataGetExamples(data, 1, &qi, xq, &yq));
      PetscCall(InflModelPerExampleGradients(model, 1, xq, &yq, b));
    }
    PetscCall(dense_solve((PetscInt)n, M, b, ref));
    PetscCall(InflIHVPArrayToVec(ih, b, vv));
    PetscCall(InflIHVPSolve(ih, vv, yy, "query 5", &info));
    PetscCall(InflIHVPVecToArray(ih, yy, xs));
    e = relerr((PetscInt)n, xs, ref);
    PetscCheck(e < 1e-8, comm, PETSC_ERR_PLIB, "%s CG solution differs from LAPACK by %g", InflCurvatureNames[c], e);
    PetscCall(PetscPrintf(comm, "%-9s CG vs LAPACK: relative error %.2e (rtol 1e-12, %d iterations)\n", InflCurvatureNames[c], e, (int)info.iterations));
    PetscCheck(info.converged, comm, PETSC_ERR_PLIB, "not converged");
    /* iterations to a practical tolerance, with and without the EK-FAC preconditioner */
    PetscCall(InflIHVPGetKSP(ih, &ksp));
    PetscCall(KSPGetPC(ksp, &pc));
    {
      PetscInt its[2][2];
      double   rt[2] = {1e-4, 1e-6};
      for (int t = 0; t < 2; t++) {
        PetscCall(KSPSetTolerances(ksp, rt[t], 1e-50, PETSC_DEFAULT, 2000));
        PetscCall(InflIHVPSetEKFACPreconditioner(ih));
        PetscCall(InflIHVPSolve(ih, vv, yy, "query 5", &info));
        its[t][0] = info.iterations;
        PetscCall(PCSetType(pc, PCNONE));
        PetscCall(InflIHVPSolve(ih, vv, yy, "query 5", &info0));
        its[t][1] = info0.iterations;
        PetscCall(InflIHVPVecToArray(ih, yy, xs));
        PetscCheck(relerr((PetscInt)n, xs, ref) < 1e3 * rt[t], comm, PETSC_ERR_PLIB, "unpreconditioned solution error %g at rtol %g", relerr((PetscInt)n, xs, ref), rt[t]);
      }
      PetscCall(PetscPrintf(comm, "%-9s CG iterations, EK-FAC preconditioner / none: rtol 1e-4: %d / %d, rtol 1e-6: %d / %d\n", InflCurvatureNames[c], (int)its[0][0], (int)its[0][1], (int)its[1][0], (int)its[1][1]));
      /* the GGN with the true-Fisher EK-FAC (its expectation): at least 25% fewer iterations; the one-sample true
       * Fisher: fewer.  (The empirical Fisher of a trained model is not well preconditioned by its EK-FAC here.) */
      if (c == INFL_CURVATURE_GGN) for (int t = 0; t < 2; t++) PetscCheck(its[t][0] * 4 <= its[t][1] * 3, comm, PETSC_ERR_PLIB, "ggn: EK-FAC preconditioning needs %d iterations, not clearly fewer than %d", (int)its[t][0], (int)its[t][1]);
      if (c == INFL_CURVATURE_TRUE) for (int t = 0; t < 2; t++) PetscCheck(its[t][0] < its[t][1], comm, PETSC_ERR_PLIB, "true: EK-FAC preconditioning needs %d iterations, not fewer than %d", (int)its[t][0], (int)its[t][1]);
      PetscCall(KSPSetTolerances(ksp, 1e-12, 1e-50, PETSC_DEFAULT, 2000));
      PetscCall(InflIHVPSetEKFACPreconditioner(ih));
    }

    if (c == 0) {
      PetscErrorCode ierr;
      /* zero right-hand side */
      PetscCall(VecSet(vv, 0));
      PetscCall(VecSet(yy, 1));
      PetscCall(InflIHVPSolve(ih, vv, yy, "query zero", &info));
      {
        double nr;
        PetscCall(VecNorm(yy, NORM_2, &nr));
        PetscCheck(info.zero_rhs && info.converged && nr == 0 && info.iterations == 0, comm, PETSC_ERR_PLIB, "zero right-hand side not handled");
      }
      /* unconverged: an error naming the query, or with -ihvp_allow_unconverged a warning */
      PetscCall(KSPSetTolerances(ksp, 1e-14, 1e-50, PETSC_DEFAULT, 2));
      PetscCall(InflIHVPArrayToVec(ih, b, vv));
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      ierr = InflIHVPSolve(ih, vv, yy, "query 5", &info);
      PetscCall(PetscPopErrorHandler());
      PetscCheck(ierr == PETSC_ERR_NOT_CONVERGED, comm, PETSC_ERR_PLIB, "unconverged solve returned %d", (int)ierr);
      PetscCall(PetscOptionsSetValue(NULL, "-ihvp_allow_unconverged", "1"));
      PetscCall(InflIHVPSetFromOptions(ih));
      PetscCall(InflIHVPSolve(ih, vv, yy, "query 5", &info));
      PetscCheck(!info.converged && info.reason == KSP_DIVERGED_ITS && info.iterations == 2, comm, PETSC_ERR_PLIB, "allowed unconverged solve: reason %d", (int)info.reason);
      PetscCall(PetscOptionsClearValue(NULL, "-ihvp_allow_unconverged"));
    }

    if (c == 0) { /* Krylov queries through the scorer: score(q, m) = g_m^T (C + D)^-1 g_q */
      InflScorer   sc;
      InflTopK    *top;
      double      *P[2], *g;
      int64_t      qidx[3] = {5, 17, 30}, yq[3];
      float        xq[3 * D0];
      InflIHVPSolveInfo qi[3];
      PetscCall(PetscOptionsSetValue(NULL, "-ihvp_ksp_rtol", "1e-12"));
      PetscCall(KSPSetFromOptions(ksp));
      PetscCall(InflIHVPSetEKFACPreconditioner(ih));
      PetscCall(KSPSetTolerances(ksp, 1e-12, 1e-50, PETSC_DEFAULT, 500));
      PetscCall(InflDataGetExamples(data, 3, qidx, xq, yq));
      PetscCall(InflIHVPSolveQueries(ih, 3, xq, yq, qidx, P, qi));
      PetscCall(InflScorerCreate(comm, &sc));
      PetscCall(InflScorerSetTopK(sc, 5));
      PetscCall(InflScorerSetPreconditionedQueries(sc, model, 3, (const double *const *)P, yq, qidx));
      PetscCall(InflScorerScore(sc, data));
      PetscCall(InflScorerGetTopK(sc, &top, NULL));
      PetscCall(PetscMalloc1(n, &g));
      for (int q = 0; q < 3; q++) {
        PetscCall(InflModelPerExampleGradients(model, 1, xq + D0 * q, yq + q, b));
        PetscCall(dense_solve((PetscInt)n, M, b, ref));
        for (int k = 0; k < 5; k++) {
          int64_t m = top->index[q * top->K + k], ym;
          float   xm[D0];
          double  s = 0;
          PetscCall(InflDataGetExamples(data, 1, &m, xm, &ym));
          PetscCall(InflModelPerExampleGradients(model, 1, xm, &ym, g));
          for (int64_t i = 0; i < n; i++) s += g[i] * ref[i];
          PetscCheck(fabs(s - top->score[q * top->K + k]) <= 1e-8 * PetscMax(1, fabs(s)), comm, PETSC_ERR_PLIB, "Krylov score of query %d, train %d: %g, dense %g", (int)qidx[q], (int)m, top->score[q * top->K + k], s);
        }
      }
      PetscCall(PetscPrintf(comm, "Krylov queries scored by InflScorer match g_m^T (C+D)^-1 g_q (top-5 of 3 queries)\n"));
      PetscCall(PetscFree(g));
      PetscCall(PetscFree(P[0]));
      PetscCall(PetscFree(P[1]));
      PetscCall(InflScorerDestroy(&sc));
    }
    PetscCall(VecDestroy(&vv));
    PetscCall(VecDestroy(&yy));
    PetscCall(InflIHVPDestroy(&ih));
  }
  PetscCall(PetscFree6(M, v, u, ref, b, xs));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflEKFACDestroy(&ek_true));
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&data));
  PetscCall(PetscPrintf(comm, "test_ihvp: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

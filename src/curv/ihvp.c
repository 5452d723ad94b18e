/* Krylov IHVP: the damped curvature as a MATSHELL, the EK-FAC inverse as a PCSHELL, checked solves. */
#include <infl/ihvp.h>
#include <infl/checkpoint.h>
#include <cblas.h>
#include <math.h>

const char *const InflCurvatureNames[] = {"ggn", "empirical", "true"};

#define IHVP_TREND 16 /* least iterations of the residual trend behind a solve's ETA (else the later half) */

struct _p_InflIHVP {
  MPI_Comm       comm;
  InflCurvature  curv;
  uint64_t       seed;
  PetscInt       chunk;
  PetscBool      allow_unconverged;
  InflModel      model;
  InflData       train;
  InflEKFAC      ek;
  PetscInt       L, n, rstart, rend;
  PetscInt      *din, *dout; /* (L) */
  int64_t       *off;        /* (L+1) slab offsets */
  double        *damping;    /* (L) */
  double        *dloc;       /* (rend-rstart) damping of each local entry */
  int64_t        N, start, count, d;
  const float   *x;          /* (count, d) this rank's shard */
  int64_t       *ylab;       /* (count) labels of the empirical / true Fisher */
  Mat            A;
  KSP            ksp;
  Vec            vall, uall; /* (n) sequential: gathered input, partial product */
  VecScatter     toall;
  InflCapture   *cap;
  double        *bufa, *bufd, *c, *T, *G; /* chunk scratch; G (max dout*(din+1)) */
  PetscInt       nmult, npc;
  /* progress of the running solve (rank 0 prints it): ihvp_monitor */
  double         progress_interval; /* s between progress lines (-progress_interval) */
  char           what[64];          /* the solve's name, e.g. "query 17" */
  double         mon_bnorm, mon_r0; /* right-hand side norm; residual norm at iteration 0 (monitor) */
  PetscLogDouble mon_t0, mon_last;  /* start of the solve; last progress line */
  double        *mon_logr;          /* (mon_cap) log residual norm of each iteration of the running solve */
  PetscInt       mon_cap;
};

void InflIHVPSlabToLayer(PetscInt din, PetscInt dout, const double slab[], double G[])
{
  for (PetscInt i = 0; i < dout; i++) {
    for (PetscInt j = 0; j < din; j++) G[(int64_t)i * (din + 1) + j] = slab[(int64_t)i * din + j];
    G[(int64_t)i * (din + 1) + din] = slab[(int64_t)dout * din + i];
  }
}

void InflIHVPLayerToSlab(PetscInt din, PetscInt dout, const double G[], double slab[])
{
  for (PetscInt i = 0; i < dout; i++) {
    for (PetscInt j = 0; j < din; j++) slab[(int64_t)i * din + j] = G[(int64_t)i * (din + 1) + j];
    slab[(int64_t)dout * din + i] = G[(int64_t)i * (din + 1) + din];
  }
}

PetscErrorCode InflIHVPCreate(MPI_Comm comm, InflIHVP *ih)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(ih));
  (*ih)->comm  = comm;
  (*ih)->curv  = INFL_CURVATURE_GGN;
  (*ih)->chunk = 512;
  (*ih)->progress_interval = 10;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetFromOptions(InflIHVP ih)
{
  PetscInt curv = (PetscInt)ih->curv, seed = (PetscInt)ih->seed;

  PetscFunctionBegin;
  PetscOptionsBegin(ih->comm, NULL, "Krylov IHVP options", "InflIHVP");
  PetscCall(PetscOptionsEList("-ihvp_curvature", "curvature C of the damped operator C + D", "InflIHVPSetCurvature", InflCurvatureNames, 3, InflCurvatureNames[curv], &curv, NULL));
  PetscCall(PetscOptionsInt("-ihvp_seed", "seed of the labels sampled for -ihvp_curvature true", "InflIHVPSetCurvature", seed, &seed, NULL));
  PetscCall(PetscOptionsInt("-ihvp_chunk", "training examples per chunk of an operator product", "InflIHVPSetUp", ih->chunk, &ih->chunk, NULL));
  PetscCall(PetscOptionsBool("-ihvp_allow_unconverged", "an unconverged solve is a warning recorded in the output, not an error", "InflIHVPSolve", ih->allow_unconverged, &ih->allow_unconverged, NULL));
  PetscOptionsEnd();
  PetscCall(InflProgressGetInterval(ih->comm, &ih->progress_interval));
  PetscCheck(seed >= 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_seed %d must be >= 0", (int)seed);
  PetscCheck(ih->chunk > 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_chunk %d must be positive", (int)ih->chunk);
  ih->curv = (InflCurvature)curv;
  ih->seed = (uint64_t)seed;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetCurvature(InflIHVP ih, InflCurvature curv, uint64_t seed)
{
  PetscFunctionBegin;
  ih->curv = curv;
  ih->seed = seed;
  PetscFunctionReturn(0);
}

/* u (n, slab layout) += sum over the local shard of g_n (g_n^T v), labels ih->ylab; a, Ds captured per chunk. */
static PetscErrorCode fisher_product_local(InflIHVP ih, const double v[], double u[])
{
  PetscFunctionBegin;
  for (int64_t o = 0; o < ih->count; o += ih->chunk) {
    PetscInt B = (PetscInt)PetscMin(ih->chunk, ih->count - o);
    PetscCall(InflModelCapture(ih->model, B, ih->x + o * ih->d, ih->ylab + o, ih->cap));
    PetscCall(PetscArrayzero(ih->c, B));
    for (PetscInt l = 0; l < ih->L; l++) { /* c_n += Ds_n^T (V_W a_n + v_b) */
      PetscInt      din = ih->din[l], dout = ih->dout[l], na = din + 1;
      const double *a, *ds, *VW = v + ih->off[l], *Vb = VW + (int64_t)dout * din;
      InflCaptureGetDouble(ih->cap, l, ih->bufa, ih->bufd, &a, &ds);
      for (PetscInt b = 0; b < B; b++) PetscCall(PetscArraycpy(ih->T + (int64_t)b * dout, Vb, dout));
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, dout, din, 1, a, na, VW, din, 1, ih->T, dout);
      for (PetscInt b = 0; b < B; b++) {
        double s = 0;
        for (PetscInt i = 0; i < dout; i++) s += ih->T[(int64_t)b * dout + i] * ds[(int64_t)b * dout + i];
        ih->c[b] += s;
      }
    }
    for (PetscInt l = 0; l < ih->L; l++) { /* U_W += (diag(c) Ds)^T a, U_b += (diag(c) Ds)^T 1 */
      PetscInt      din = ih->din[l], dout = ih->dout[l], na = din + 1;
      const double *a, *ds;
      double       *uW = u + ih->off[l], *ub = uW + (int64_t)dout * din;
      InflCaptureGetDouble(ih->cap, l, ih->bufa, ih->bufd, &a, &ds);
      for (PetscInt b = 0; b < B; b++)
        for (PetscInt i = 0; i < dout; i++) {
          double t                      = ih->c[b] * ds[(int64_t)b * dout + i];
          ih->T[(int64_t)b * dout + i] = t;
          ub[i] += t;
        }
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, B, 1, ih->T, dout, a, na, 1, uW, din);
    }
  }
  PetscFunctionReturn(0);
}

/* y = (C + D) x */
static PetscErrorCode ihvp_mult(Mat A, Vec x, Vec y)
{
  InflIHVP           ih;
  const PetscScalar *v, *xl;
  PetscScalar       *u, *yl;

  PetscFunctionBegin;
  PetscCall(MatShellGetContext(A, &ih));
  PetscCall(VecScatterBegin(ih->toall, x, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecScatterEnd(ih->toall, x, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecSet(ih->uall, 0));
  PetscCall(VecGetArrayRead(ih->vall, &v));
  PetscCall(VecGetArray(ih->uall, &u));
  if (ih->curv == INFL_CURVATURE_GGN) {
    for (int64_t o = 0; o < ih->count; o += ih->chunk) {
      PetscInt B = (PetscInt)PetscMin(ih->chunk, ih->count - o);
      PetscCall(InflModelGaussNewtonProduct(ih->model, B, ih->x + o * ih->d, v, u));
    }
  } else PetscCall(fisher_product_local(ih, v, u));
  for (PetscInt i = 0; i < ih->n; i++) u[i] /= (double)ih->N;
  PetscCall(VecRestoreArray(ih->uall, &u));
  PetscCall(VecRestoreArrayRead(ih->vall, &v));
  PetscCall(VecSet(y, 0));
  PetscCall(VecScatterBegin(ih->toall, ih->uall, y, ADD_VALUES, SCATTER_REVERSE));
  PetscCall(VecScatterEnd(ih->toall, ih->uall, y, ADD_VALUES, SCATTER_REVERSE));
  PetscCall(VecGetArrayRead(x, &xl));
  PetscCall(VecGetArray(y, &yl));
  for (PetscInt i = 0; i < ih->rend - ih->rstart; i++) yl[i] += ih->dloc[i] * xl[i];
  PetscCall(VecRestoreArray(y, &yl));
  PetscCall(VecRestoreArrayRead(x, &xl));
  ih->nmult++;
  PetscFunctionReturn(0);
}

/* y = EK-FAC^-1 x, layer by layer on the gathered vector (every rank computes all layers; cheap next to a product) */
static PetscErrorCode ihvp_pc_apply(PC pc, Vec x, Vec y)
{
  InflIHVP           ih;
  const PetscScalar *v;
  PetscScalar       *u, *yl;

  PetscFunctionBegin;
  PetscCall(PCShellGetContext(pc, &ih));
  PetscCall(VecScatterBegin(ih->toall, x, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecScatterEnd(ih->toall, x, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecGetArrayRead(ih->vall, &v));
  PetscCall(VecGetArray(ih->uall, &u));
  for (PetscInt l = 0; l < ih->L; l++) {
    InflIHVPSlabToLayer(ih->din[l], ih->dout[l], v + ih->off[l], ih->G);
    PetscCall(InflEKFACPrecondition(ih->ek, l, ih->G));
    InflIHVPLayerToSlab(ih->din[l], ih->dout[l], ih->G, u + ih->off[l]);
  }
  PetscCall(VecGetArray(y, &yl));
  PetscCall(PetscArraycpy(yl, u + ih->rstart, ih->rend - ih->rstart));
  PetscCall(VecRestoreArray(y, &yl));
  PetscCall(VecRestoreArray(ih->uall, &u));
  PetscCall(VecRestoreArrayRead(ih->vall, &v));
  ih->npc++;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetEKFACPreconditioner(InflIHVP ih)
{
  PC pc;

  PetscFunctionBegin;
  PetscCheck(ih->ek, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "the EK-FAC preconditioner needs factors: pass an InflEKFAC to InflIHVPSetUp (-factors FILE)");
  PetscCall(KSPGetPC(ih->ksp, &pc));
  PetscCall(PCSetType(pc, PCSHELL));
  PetscCall(PCShellSetContext(pc, ih));
  PetscCall(PCShellSetApply(pc, ihvp_pc_apply));
  PetscCall(PCShellSetName(pc, "EK-FAC inverse (infl)"));
  PetscFunctionReturn(0);
}

/* KSP monitor: every -progress_interval seconds (rank 0's clock) a line with the iteration, the residual norm, absolute
 * and relative to the right-hand side, the time since the start of the solve and an ETA.  The ETA extrapolates the
 * trend of log(residual) (least-squares slope per iteration over the later half of the iterations, at least the last
 * IHVP_TREND: CG residuals oscillate) down to the KSP's stopping threshold max(rtol r_0, abstol) (PETSc's default
 * test), at the mean time per iteration so far; it is "unknown" while the trend is not decreasing.  It only reads:
 * the iterates are the same with and without it. */
static PetscErrorCode ihvp_monitor(KSP ksp, PetscInt it, PetscReal rnorm, void *ctx)
{
  InflIHVP       ih = (InflIHVP)ctx;
  PetscLogDouble now;
  PetscReal      rtol, abstol, dtol, target;
  PetscInt       maxits, m;
  char           eta[128];

  PetscFunctionBegin;
  PetscCall(PetscTime(&now));
  if (it == 0) { /* a new solve (also one started with KSPSolve on InflIHVPGetKSP's KSP) */
    Vec b;
    ih->mon_t0 = ih->mon_last = now;
    ih->mon_r0                = rnorm;
    PetscCall(KSPGetRhs(ksp, &b)); /* every rank calls the monitor at iteration 0: the norm is collective */
    PetscCall(VecNorm(b, NORM_2, &ih->mon_bnorm));
  }
  if (it >= ih->mon_cap) {
    PetscInt cap = PetscMax(2 * ih->mon_cap, 256);
    while (cap <= it) cap *= 2;
    PetscCall(PetscRealloc(sizeof(double) * (size_t)cap, &ih->mon_logr));
    ih->mon_cap = cap;
  }
  ih->mon_logr[it] = rnorm > 0 ? log(rnorm) : -HUGE_VAL;
  if (now - ih->mon_last < ih->progress_interval) PetscFunctionReturn(0);
  ih->mon_last = now;
  PetscCall(KSPGetTolerances(ksp, &rtol, &abstol, &dtol, &maxits));
  target = PetscMax(rtol * ih->mon_r0, abstol);
  m      = PetscMax(PetscMin(it + 1, IHVP_TREND), (it + 1) / 2);
  PetscCall(PetscStrncpy(eta, it ? "ETA unknown (the residual is not decreasing)" : "ETA unknown (no trend yet)", sizeof(eta)));
  if (rnorm <= target) PetscCall(PetscStrncpy(eta, "ETA 0 s (converged)", sizeof(eta)));
  else if (m >= 2) { /* slope of log r against the iteration over iterations it-m+1 .. it */
    double    kbar = (m - 1) / 2.0, lbar = 0, sxy = 0, sxx = 0, slope;
    PetscBool finite = PETSC_TRUE;
    for (PetscInt k = 0; k < m; k++) {
      double l = ih->mon_logr[it - m + 1 + k];
      if (!isfinite(l)) finite = PETSC_FALSE;
      lbar += l / m;
    }
    for (PetscInt k = 0; finite && k < m; k++) {
      sxy += (k - kbar) * (ih->mon_logr[it - m + 1 + k] - lbar);
      sxx += (k - kbar) * (k - kbar);
    }
    slope = finite ? sxy / sxx : 0;
    if (slope < 0) {
      double more = (log(target) - log(rnorm)) / slope; /* iterations still to go at this rate */
      double secs = more * (now - ih->mon_t0) / it;
      if (it + more > maxits) PetscCall(PetscSNPrintf(eta, sizeof(eta), "ETA %.1f s (%.0f more iterations: beyond -ihvp_ksp_max_it %d at this rate)", secs, ceil(more), (int)maxits));
      else PetscCall(PetscSNPrintf(eta, sizeof(eta), "ETA %.1f s (%.0f more iterations)", secs, ceil(more)));
    }
  }
  PetscCall(PetscPrintf(ih->comm, "  ihvp %s: iteration %d, residual norm %.3e (relative to the right-hand side %.3e, target %.1e), %.1f s, %s\n", ih->what[0] ? ih->what : "solve", (int)it, (double)rnorm, ih->mon_bnorm > 0 ? rnorm / ih->mon_bnorm : 0.0, ih->mon_bnorm > 0 ? target / ih->mon_bnorm : 0.0, now - ih->mon_t0, eta));
  fflush(stdout);
  PetscFunctionReturn(0);
}

static PetscErrorCode ihvp_free(InflIHVP ih)
{
  PetscFunctionBegin;
  PetscCall(KSPDestroy(&ih->ksp));
  PetscCall(MatDestroy(&ih->A));
  PetscCall(VecDestroy(&ih->vall));
  PetscCall(VecDestroy(&ih->uall));
  PetscCall(VecScatterDestroy(&ih->toall));
  PetscCall(InflCaptureDestroy(&ih->cap));
  PetscCall(PetscFree5(ih->bufa, ih->bufd, ih->c, ih->T, ih->G));
  PetscCall(PetscFree4(ih->din, ih->dout, ih->off, ih->damping));
  PetscCall(PetscFree(ih->dloc));
  PetscCall(PetscFree(ih->ylab));
  PetscCall(PetscFree(ih->mon_logr));
  ih->mon_cap = 0;
  ih->L       = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetUp(InflIHVP ih, InflModel model, InflData train, InflEKFAC ek, double damping)
{
  InflLinear     *lin;
  InflEKFACLayer *ekl = NULL;
  PetscInt        Lk = 0, maxa = 1, maxd = 1, C, din0;
  int64_t         nparams, dN;
  const int64_t  *y;
  Vec             proto;
  PC              pc;

  PetscFunctionBegin;
  PetscCall(ihvp_free(ih));
  ih->model = model;
  ih->train = train;
  ih->ek    = ek;
  PetscCall(InflModelGetLayers(model, &ih->L, &lin));
  PetscCall(InflModelGetSizes(model, &din0, &C));
  PetscCall(InflModelGetParameters(model, &nparams, NULL, NULL));
  PetscCheck(nparams < PETSC_MAX_INT, ih->comm, PETSC_ERR_SUP, "the model has %" PRId64 " parameters; a PETSc Vec with 32-bit PetscInt holds at most %d", nparams, (int)PETSC_MAX_INT);
  ih->n = (PetscInt)nparams;
  if (ek) {
    PetscCall(InflEKFACGetLayers(ek, &Lk, &ekl));
    PetscCheck(Lk == ih->L, ih->comm, PETSC_ERR_ARG_INCOMP, "EK-FAC factors have %d layers but the model has %d", (int)Lk, (int)ih->L);
  } else PetscCheck(damping >= 0 && isfinite(damping), ih->comm, PETSC_ERR_ARG_WRONG, "without EK-FAC factors the damping must be given: pass -factors FILE or -ekfac_damping X (X >= 0)");
  PetscCall(PetscMalloc4(ih->L, &ih->din, ih->L, &ih->dout, ih->L + 1, &ih->off, ih->L, &ih->damping));
  ih->off[0] = 0;
  for (PetscInt l = 0; l < ih->L; l++) {
    ih->din[l]     = lin[l].din;
    ih->dout[l]    = lin[l].dout;
    ih->off[l + 1] = ih->off[l] + (int64_t)lin[l].dout * (lin[l].din + 1);
    if (ek) PetscCheck(ekl[l].din == lin[l].din && ekl[l].dout == lin[l].dout, ih->comm, PETSC_ERR_ARG_INCOMP, "EK-FAC layer %d is %d x %d but the model's is %d x %d", (int)l, (int)ekl[l].dout, (int)ekl[l].din + 1, (int)lin[l].dout, (int)lin[l].din + 1);
    ih->damping[l] = damping >= 0 ? damping : ekl[l].damping;
    PetscCheck(ih->damping[l] >= 0 && isfinite(ih->damping[l]), ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer %d damping %g must be a finite number >= 0", (int)l, ih->damping[l]);
    maxa = PetscMax(maxa, lin[l].din + 1);
    maxd = PetscMax(maxd, lin[l].dout);
  }

  /* the training shard and the labels of the operator */
  PetscCall(InflModelCheckData(model, train));
  PetscCall(InflDataGetSizes(train, &ih->N, &ih->d, NULL));
  PetscCall(InflDataGetShard(train, &ih->start, &ih->count, &ih->x, &y));
  PetscCall(PetscMalloc1(PetscMax(ih->count, 1), &ih->ylab));
  if (ih->curv == INFL_CURVATURE_TRUE) {
    int64_t idx[512];
    for (int64_t o = 0; o < ih->count; o += 512) {
      PetscInt B = (PetscInt)PetscMin(512, ih->count - o);
      for (PetscInt b = 0; b < B; b++) idx[b] = ih->start + o + b;
      PetscCall(InflModelSampleLabels(model, B, ih->x + o * ih->d, idx, ih->seed, ih->ylab + o));
    }
  } else PetscCall(PetscArraycpy(ih->ylab, y, ih->count));
  PetscCall(InflCaptureCreate(model, ih->chunk, &ih->cap));
  PetscCall(InflCaptureCheckRankOne(ih->cap, "infl ihvp (Fisher operator)"));
  dN = (int64_t)ih->chunk;
  PetscCall(PetscMalloc5((size_t)dN * maxa, &ih->bufa, (size_t)dN * maxd, &ih->bufd, dN, &ih->c, (size_t)dN * maxd, &ih->T, (size_t)maxa * maxd, &ih->G));

  /* the distributed parameter vector, its gather-to-all, the operator */
  PetscCall(VecCreateMPI(ih->comm, PETSC_DECIDE, ih->n, &proto));
  PetscCall(VecGetOwnershipRange(proto, &ih->rstart, &ih->rend));
  PetscCall(VecScatterCreateToAll(proto, &ih->toall, &ih->vall));
  PetscCall(VecDuplicate(ih->vall, &ih->uall));
  PetscCall(PetscMalloc1(PetscMax(ih->rend - ih->rstart, 1), &ih->dloc));
  for (PetscInt l = 0; l < ih->L; l++)
    for (int64_t i = PetscMax(ih->off[l], ih->rstart); i < PetscMin(ih->off[l + 1], ih->rend); i++) ih->dloc[i - ih->rstart] = ih->damping[l];
  PetscCall(MatCreateShell(ih->comm, ih->rend - ih->rstart, ih->rend - ih->rstart, ih->n, ih->n, ih, &ih->A));
  PetscCall(MatShellSetOperation(ih->A, MATOP_MULT, (void (*)(void))ihvp_mult));
  PetscCall(MatShellSetOperation(ih->A, MATOP_MULT_TRANSPOSE, (void (*)(void))ihvp_mult));
  PetscCall(MatSetOption(ih->A, MAT_SYMMETRIC, PETSC_TRUE));
  PetscCall(MatSetOption(ih->A, MAT_SPD, PETSC_TRUE));
  PetscCall(VecDestroy(&proto));

  PetscCall(KSPCreate(ih->comm, &ih->ksp));
  PetscCall(KSPSetOptionsPrefix(ih->ksp, "ihvp_"));
  PetscCall(KSPSetOperators(ih->ksp, ih->A, ih->A));
  PetscCall(KSPSetType(ih->ksp, KSPCG));
  PetscCall(KSPSetNormType(ih->ksp, KSP_NORM_UNPRECONDITIONED)); /* the same stopping test with and without preconditioner */
  PetscCall(KSPSetTolerances(ih->ksp, 1e-8, 1e-50, PETSC_DEFAULT, 500));
  PetscCall(KSPGetPC(ih->ksp, &pc));
  if (ek) PetscCall(InflIHVPSetEKFACPreconditioner(ih));
  else PetscCall(PCSetType(pc, PCNONE));
  PetscCall(KSPMonitorSet(ih->ksp, ihvp_monitor, ih, NULL)); /* before the options: -ihvp_ksp_monitor_cancel removes it */
  PetscCall(KSPSetFromOptions(ih->ksp));
  {
    PCType    t;
    PetscBool isshell;
    PetscCall(PCGetType(pc, &t));
    PetscCall(PetscStrcmp(t, PCSHELL, &isshell));
    PetscCheck(!isshell || ek, ih->comm, PETSC_ERR_ARG_WRONG, "-ihvp_pc_type shell is the EK-FAC inverse and needs -factors FILE");
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPGetOperator(InflIHVP ih, Mat *A)
{
  PetscFunctionBegin;
  *A = ih->A;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPGetKSP(InflIHVP ih, KSP *ksp)
{
  PetscFunctionBegin;
  *ksp = ih->ksp;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPGetDamping(InflIHVP ih, PetscInt *L, const double **damping)
{
  PetscFunctionBegin;
  if (L) *L = ih->L;
  if (damping) *damping = ih->damping;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPArrayToVec(InflIHVP ih, const double g[], Vec v)
{
  PetscScalar *a;

  PetscFunctionBegin;
  PetscCall(VecGetArray(v, &a));
  PetscCall(PetscArraycpy(a, g + ih->rstart, ih->rend - ih->rstart));
  PetscCall(VecRestoreArray(v, &a));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPVecToArray(InflIHVP ih, Vec v, double g[])
{
  const PetscScalar *a;

  PetscFunctionBegin;
  PetscCall(VecScatterBegin(ih->toall, v, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecScatterEnd(ih->toall, v, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecGetArrayRead(ih->vall, &a));
  PetscCall(PetscArraycpy(g, a, ih->n));
  PetscCall(VecRestoreArrayRead(ih->vall, &a));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSolve(InflIHVP ih, Vec b, Vec x, const char what[], InflIHVPSolveInfo *info)
{
  InflIHVPSolveInfo in;

  PetscFunctionBegin;
  PetscCheck(ih->ksp, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPSolve");
  PetscCall(PetscMemzero(&in, sizeof(in)));
  PetscCall(VecNorm(b, NORM_2, &in.bnorm));
  PetscCheck(isfinite(in.bnorm), ih->comm, PETSC_ERR_FP, "the right-hand side of %s has non-finite entries (norm %g); the model or the query is broken", what, in.bnorm);
  if (in.bnorm == 0) {
    PetscCall(VecSet(x, 0));
    in.zero_rhs  = PETSC_TRUE;
    in.converged = PETSC_TRUE;
    in.reason    = KSP_CONVERGED_ATOL;
    PetscCall(PetscPrintf(ih->comm, "ihvp: note: %s has a zero gradient; its IHVP is zero (no solve)\n", what));
  } else {
    PetscCall(PetscStrncpy(ih->what, what, sizeof(ih->what)));
    PetscCall(KSPSolve(ih->ksp, b, x));
    ih->what[0] = 0;
    PetscCall(KSPGetConvergedReason(ih->ksp, &in.reason));
    PetscCall(KSPGetIterationNumber(ih->ksp, &in.iterations));
    PetscCall(KSPGetResidualNorm(ih->ksp, &in.rnorm));
    in.converged = in.reason > 0 ? PETSC_TRUE : PETSC_FALSE;
    if (!in.converged) {
      PetscCheck(ih->allow_unconverged, ih->comm, PETSC_ERR_NOT_CONVERGED, "Krylov IHVP solve of %s did not converge: %s after %d iterations, residual norm %g (right-hand side norm %g); raise -ihvp_ksp_max_it, loosen -ihvp_ksp_rtol, raise the damping, or pass -ihvp_allow_unconverged", what, KSPConvergedReasons[in.reason], (int)in.iterations, in.rnorm, in.bnorm);
      PetscCall(PetscPrintf(ih->comm, "ihvp: WARNING: solve of %s did not converge: %s after %d iterations, residual norm %g (right-hand side norm %g); kept as is (-ihvp_allow_unconverged)\n", what, KSPConvergedReasons[in.reason], (int)in.iterations, in.rnorm, in.bnorm));
    }
  }
  if (info) *info = in;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSolveQueries(InflIHVP ih, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[], double **P, InflIHVPSolveInfo info[])
{
  double  *g;
  Vec      b, x;
  PetscInt din0;

  PetscFunctionBegin;
  PetscCheck(ih->ksp, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPSolveQueries");
  PetscCall(InflModelGetSizes(ih->model, &din0, NULL));
  PetscCall(PetscMalloc1(ih->n, &g));
  PetscCall(MatCreateVecs(ih->A, &x, &b));
  for (PetscInt l = 0; l < ih->L; l++) PetscCall(PetscMalloc1((size_t)Q * (ih->off[l + 1] - ih->off[l]), &P[l]));
  for (PetscInt q = 0; q < Q; q++) {
    char              what[64];
    InflIHVPSolveInfo in;
    PetscCall(PetscSNPrintf(what, sizeof(what), "query %" PRId64, qindex ? qindex[q] : (int64_t)q));
    PetscCall(InflModelPerExampleGradients(ih->model, 1, xq + (int64_t)q * din0, yq + q, g));
    PetscCall(InflIHVPArrayToVec(ih, g, b));
    PetscCall(InflIHVPSolve(ih, b, x, what, &in));
    PetscCall(InflIHVPVecToArray(ih, x, g));
    for (PetscInt l = 0; l < ih->L; l++) InflIHVPSlabToLayer(ih->din[l], ih->dout[l], g + ih->off[l], P[l] + (int64_t)q * (ih->off[l + 1] - ih->off[l]));
    if (info) info[q] = in;
  }
  PetscCall(VecDestroy(&b));
  PetscCall(VecDestroy(&x));
  PetscCall(PetscFree(g));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPView(InflIHVP ih, PetscViewer viewer)
{
  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(ih->comm, &viewer));
  PetscCall(PetscViewerASCIIPrintf(viewer, "InflIHVP: (%s + damping)^-1 over %d parameters, %" PRId64 " training examples, damping", InflCurvatureNames[ih->curv], (int)ih->n, ih->N));
  for (PetscInt l = 0; l < ih->L; l++) PetscCall(PetscViewerASCIIPrintf(viewer, " %g", ih->damping[l]));
  PetscCall(PetscViewerASCIIPrintf(viewer, "\n"));
  if (ih->ksp) {
    PetscCall(PetscViewerASCIIPushTab(viewer));
    PetscCall(KSPView(ih->ksp, viewer));
    PetscCall(PetscViewerASCIIPopTab(viewer));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPDestroy(InflIHVP *ih)
{
  PetscFunctionBegin;
  if (!*ih) PetscFunctionReturn(0);
  PetscCall(ihvp_free(*ih));
  PetscCall(PetscFree(*ih));
  PetscFunctionReturn(0);
}

/* Krylov IHVP: the damped curvature as a MATSHELL (products for many vectors per pass over the data), the EK-FAC
 * inverse as a PCSHELL, lockstep CG over all queries, progress, checkpoints. */
#include <infl/ihvp.h>
#include <infl/checkpoint.h>
#include <petscblaslapack.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

const char *const InflCurvatureNames[] = {"ggn", "empirical", "true"};

#define IHVP_TREND 16            /* least iterations of the residual trend behind a solve's ETA (else the later half) */
#define IHVP_SCRATCH (4 << 20)   /* doubles of the (rows, queries x dout) scratch of a block product (32 MB) */
#define IHVP_HOPELESS_MIN 30     /* iterations before a solve's trend may be judged hopeless */

/* The residual history of one solve, for its progress lines and ETA. */
typedef struct {
  char           what[64];     /* "query 17" */
  double         bnorm, r0;    /* right-hand side norm; residual norm at iteration 0 */
  PetscLogDouble t0, last;     /* start of the solve; last progress line */
  double        *logr;         /* (cap) log residual norm of every iteration */
  PetscInt       cap;
  PetscBool      warned;       /* the "cannot converge" warning was printed */
} SolveTrace;

struct _p_InflIHVP {
  MPI_Comm       comm;
  InflCurvature  curv;
  uint64_t       seed;
  PetscInt       chunk;
  PetscBool      allow_unconverged, block;
  PetscBool      curv_set;     /* the curvature was chosen (option or InflIHVPSetCurvature), not the default */
  PetscBool      quiet;        /* -ihvp_ksp_monitor_cancel: no progress lines from the block solve either */
  InflModel      model;
  InflData       train;
  InflEKFAC      ek;
  PetscBool      seq;          /* the model reads token sequences */
  PetscInt       L, n, rstart, rend;
  PetscInt      *din, *dout;   /* (L) the exposed layers (InflModelGetLayers) */
  int64_t       *off;          /* (L+1) offsets of the layers in the IHVP vector */
  double        *damping;      /* (L) */
  double        *dloc;         /* (rend-rstart) damping of each local entry */
  int64_t        N, start, count, d;
  const float   *x;            /* (count, d) this rank's rows (ggn) */
  Mat            A;
  KSP            ksp;
  Vec            vall, uall;   /* (n) sequential: gathered input, partial product */
  VecScatter     toall;
  InflCapture   *cap;
  PetscInt       maxa, maxd;
  double        *V, *U;        /* (qcap, n) gathered directions and partial products of a block product */
  PetscInt       qcap;
  double        *Z, *c, *bufa, *bufd; /* scratch: Z (IHVP_SCRATCH), c (chunk x qcap), captured rows in double */
  int64_t        ccap, bufcap;
  Vec            diag;         /* the operator's diagonal (C + D), computed on first use */
  PetscInt       nmult, npc;
  double         progress_interval, ckpt_interval;
  PetscInt       stop_after;   /* -checkpoint_stop_after: checkpoint and stop after this many Lanczos steps of the
                                * deflation's run, or block iterations, of this run */
  char           partial[PETSC_MAX_PATH_LEN]; /* the block solve's checkpoint ("" none) */
  SolveTrace     ktrace;       /* the KSP monitor's solve */
  double         pc_damping;   /* -ihvp_pc_damping: damping of the EK-FAC preconditioner (< 0: the solve's) */
  PetscInt       deflate, deflate_steps; /* -ihvp_deflate K, -ihvp_deflate_steps M (0: the default 2 K + 10) */
  PetscBool      deflate_set;  /* K was chosen (-ihvp_deflate), not the default: what cannot apply is an error */
  Vec           *defl;         /* (ndefl) Ritz vectors of the deflation preconditioner (NULL until its setup) */
  double        *defl_theta, defl_sigma;
  PetscInt       ndefl;
  PetscInt       defl_m;       /* Lanczos steps behind the deflation (0: none ran) */
  double         defl_lo, defl_hi; /* its smallest and largest Ritz values */
  PetscBool      defl_fresh;   /* computed by this run (not restored): the block solve checkpoints it at once */
  PetscInt       nq_hint;      /* queries of the solve in progress (the memory bound of the deflation) */
  char           ckey[65];     /* while the block solve sets up its preconditioner: its checkpoint key ("" none) */
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
  (*ih)->comm              = comm;
  (*ih)->curv              = INFL_CURVATURE_GGN;
  (*ih)->chunk             = 512;
  (*ih)->block             = PETSC_TRUE;
  (*ih)->progress_interval = 10;
  (*ih)->ckpt_interval     = 600;
  (*ih)->pc_damping        = -1;
  (*ih)->deflate           = INFL_IHVP_DEFLATE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetFromOptions(InflIHVP ih)
{
  PetscInt  curv = (PetscInt)ih->curv, seed = (PetscInt)ih->seed;
  PetscBool set = PETSC_FALSE, dset = PETSC_FALSE, kset = PETSC_FALSE;

  PetscFunctionBegin;
  PetscOptionsBegin(ih->comm, NULL, "Krylov IHVP options", "InflIHVP");
  PetscCall(PetscOptionsEList("-ihvp_curvature", "curvature C of the damped operator C + D (default ggn; empirical for a model type without a Gauss-Newton product)", "InflIHVPSetCurvature", InflCurvatureNames, 3, InflCurvatureNames[curv], &curv, &set));
  PetscCall(PetscOptionsInt("-ihvp_seed", "seed of the labels sampled for -ihvp_curvature true", "InflIHVPSetCurvature", seed, &seed, NULL));
  PetscCall(PetscOptionsInt("-ihvp_chunk", "training examples (sequences) per chunk of an operator product", "InflIHVPSetUp", ih->chunk, &ih->chunk, NULL));
  PetscCall(PetscOptionsBool("-ihvp_allow_unconverged", "an unconverged solve is a warning recorded in the output, not an error", "InflIHVPSolve", ih->allow_unconverged, &ih->allow_unconverged, NULL));
  PetscCall(PetscOptionsBool("-ihvp_block", "solve all queries together (lockstep CG: one pass over the training data per iteration serves every query); false: one KSP solve per query", "InflIHVPSolveGradients", ih->block, &ih->block, NULL));
  PetscCall(PetscOptionsReal("-ihvp_pc_damping", "damping of every layer in the EK-FAC preconditioner (-ihvp_pc_type shell; default: the solve's)", "InflIHVPSetUp", ih->pc_damping, &ih->pc_damping, &dset));
  PetscCall(PetscOptionsInt("-ihvp_deflate", "preconditioner: deflate the K largest eigenvalues of C + D (Ritz pairs of a Lanczos run, onto the (K+1)-th); 0: off", "InflIHVPSetUp", ih->deflate, &ih->deflate, &kset));
  PetscCall(PetscOptionsInt("-ihvp_deflate_steps", "Lanczos steps (passes over the data) behind -ihvp_deflate (default 2 K + 10)", "InflIHVPSetUp", ih->deflate_steps, &ih->deflate_steps, NULL));
  PetscOptionsEnd();
  PetscCheck(!dset || (ih->pc_damping > 0 && isfinite(ih->pc_damping)), ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_pc_damping %s must be a number > 0 (the damping of the EK-FAC preconditioner; omit it for the solve's damping)", INFL_DSTR(ih->pc_damping));
  ih->deflate_set = ih->deflate_set || kset;
  PetscCheck(ih->deflate >= 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_deflate %d must be >= 0 (eigenvectors deflated; 0: off)", (int)ih->deflate);
  PetscCheck(ih->deflate_steps == 0 || ih->deflate_steps > ih->deflate, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_deflate_steps %d must exceed -ihvp_deflate %d (the Lanczos run needs K + 1 Ritz values at least)", (int)ih->deflate_steps, (int)ih->deflate);
  PetscCall(InflProgressGetInterval(ih->comm, &ih->progress_interval));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-checkpoint_interval", &ih->ckpt_interval, NULL));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-checkpoint_stop_after", &ih->stop_after, NULL));
  PetscCheck(ih->ckpt_interval >= 0 && isfinite(ih->ckpt_interval), ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-checkpoint_interval %s must be >= 0 seconds", INFL_DSTR(ih->ckpt_interval));
  PetscCheck(ih->stop_after >= 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-checkpoint_stop_after %d must be a number of steps >= 0 (0: never)", (int)ih->stop_after);
  PetscCheck(seed >= 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_seed %d must be >= 0", (int)seed);
  PetscCheck(ih->chunk > 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_chunk %d must be positive", (int)ih->chunk);
  ih->curv = (InflCurvature)curv;
  ih->seed = (uint64_t)seed;
  ih->curv_set = ih->curv_set || set;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetCurvature(InflIHVP ih, InflCurvature curv, uint64_t seed)
{
  PetscFunctionBegin;
  ih->curv     = curv;
  ih->seed     = seed;
  ih->curv_set = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetCheckpoint(InflIHVP ih, const char out[])
{
  PetscFunctionBegin;
  if (out && out[0]) {
    PetscCall(PetscSNPrintf(ih->partial, sizeof(ih->partial), "%s.ihvp.partial", out));
    PetscCall(InflCheckpointRemoveStaleTmp(ih->comm, ih->partial, "ihvp"));
  } else ih->partial[0] = 0;
  PetscFunctionReturn(0);
}

/* Scratch of a block product of nq directions: V, U (nq, n), c (chunk x nq) and the captured rows in double. */
static PetscErrorCode ihvp_block_work(InflIHVP ih, PetscInt nq)
{
  int64_t rows = (int64_t)ih->cap->Tmax, cneed = (int64_t)ih->chunk * nq;

  PetscFunctionBegin;
  if (nq > ih->qcap) {
    PetscCall(PetscFree2(ih->V, ih->U));
    PetscCall(PetscMalloc2((size_t)nq * ih->n, &ih->V, (size_t)nq * ih->n, &ih->U));
    ih->qcap = nq;
  }
  if (cneed > ih->ccap) {
    PetscCall(PetscFree(ih->c));
    PetscCall(PetscMalloc1(cneed, &ih->c));
    ih->ccap = cneed;
  }
  if (!ih->Z) PetscCall(PetscMalloc1((size_t)PetscMax(IHVP_SCRATCH, rows * ih->maxd), &ih->Z));
  if (!ih->bufa) {
    ih->bufcap = rows;
    PetscCall(PetscMalloc2((size_t)rows * ih->maxa, &ih->bufa, (size_t)rows * ih->maxd, &ih->bufd));
  }
  PetscFunctionReturn(0);
}

/* U (layer blocks (nq, dout, din+1), every layer l at nq off[l]) += sum over this rank's training sequences s of
 * g_s (g_s^T v_q) for each direction v_q of V (same layout), g_s = sum over the rows t of s of Ds_t a_t^T: per chunk
 * one capture (forward and backward) serves every direction; per layer and group of directions two GEMMs,
 * Z (T, g dout) = a V_l^T and U_l += (c Ds)^T a. */
static PetscErrorCode fisher_product_block(InflIHVP ih, PetscInt nq, const double V[], double U[])
{
  InflFisher fisher = ih->curv == INFL_CURVATURE_TRUE ? INFL_FISHER_TRUE : INFL_FISHER_EMPIRICAL;

  PetscFunctionBegin;
  for (int64_t lo = ih->start; lo < ih->start + ih->count; lo += ih->chunk) {
    int64_t        hi = PetscMin(lo + ih->chunk, ih->start + ih->count);
    const int64_t *so;
    PetscInt       B, T;
    double        *c = ih->c; /* (B, nq) c[b, q] = g_b^T v_q */
    PetscCall(InflModelCaptureShard(ih->model, ih->train, lo, hi, fisher, ih->seed, ih->cap));
    B  = ih->cap->B;
    T  = ih->cap->T;
    so = ih->cap->offsets;
    PetscCall(PetscArrayzero(c, (size_t)B * nq));
    for (PetscInt l = 0; l < ih->L; l++) {
      PetscInt      nd = ih->dout[l], na = ih->din[l] + 1, g = (PetscInt)PetscMax(1, PetscMin(nq, IHVP_SCRATCH / ((int64_t)PetscMax(T, 1) * nd)));
      const double *a, *ds, *Vl = V + (int64_t)nq * ih->off[l];
      InflCaptureGetDouble(ih->cap, l, ih->bufa, ih->bufd, &a, &ds);
      for (PetscInt q0 = 0; q0 < nq; q0 += g) {
        PetscInt ng = PetscMin(g, nq - q0);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, ng * nd, na, 1, a, na, Vl + (int64_t)q0 * nd * na, na, 0, ih->Z, ng * nd);
        for (PetscInt b = 0; b < B; b++)
          for (int64_t t = so[b]; t < so[b + 1]; t++)
            for (PetscInt q = 0; q < ng; q++) {
              const double *z = ih->Z + t * ng * nd + (int64_t)q * nd, *dt = ds + t * nd;
              double        s = 0;
              for (PetscInt i = 0; i < nd; i++) s += z[i] * dt[i];
              c[(int64_t)b * nq + q0 + q] += s;
            }
      }
    }
    for (PetscInt l = 0; l < ih->L; l++) {
      PetscInt      nd = ih->dout[l], na = ih->din[l] + 1, g = (PetscInt)PetscMax(1, PetscMin(nq, IHVP_SCRATCH / ((int64_t)PetscMax(T, 1) * nd)));
      const double *a, *ds;
      double       *Ul = U + (int64_t)nq * ih->off[l];
      InflCaptureGetDouble(ih->cap, l, ih->bufa, ih->bufd, &a, &ds);
      for (PetscInt q0 = 0; q0 < nq; q0 += g) {
        PetscInt ng = PetscMin(g, nq - q0);
        for (PetscInt b = 0; b < B; b++)
          for (int64_t t = so[b]; t < so[b + 1]; t++)
            for (PetscInt q = 0; q < ng; q++) {
              double        cb = c[(int64_t)b * nq + q0 + q], *w = ih->Z + t * ng * nd + (int64_t)q * nd;
              const double *dt = ds + t * nd;
              for (PetscInt i = 0; i < nd; i++) w[i] = cb * dt[i];
            }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ng * nd, na, T, 1, ih->Z, ng * nd, a, na, 1, Ul + (int64_t)q0 * nd * na, na);
      }
    }
  }
  PetscFunctionReturn(0);
}

/* The local part of the block product: U = sum over this rank's shard of C_s V (the layout of fisher_product_block;
 * ggn: (nq, n) in the slab layout, one R-op forward and backward per chunk and direction). */
static PetscErrorCode ihvp_local_product(InflIHVP ih, PetscInt nq, const double V[], double U[])
{
  PetscFunctionBegin;
  PetscCall(PetscArrayzero(U, (size_t)nq * ih->n));
  if (ih->curv == INFL_CURVATURE_GGN) {
    for (int64_t o = 0; o < ih->count; o += ih->chunk) {
      PetscInt B = (PetscInt)PetscMin(ih->chunk, ih->count - o);
      for (PetscInt q = 0; q < nq; q++) PetscCall(InflModelGaussNewtonProduct(ih->model, B, ih->x + o * ih->d, V + (int64_t)q * ih->n, U + (int64_t)q * ih->n));
    }
  } else PetscCall(fisher_product_block(ih, nq, V, U));
  PetscFunctionReturn(0);
}

/* Y[q] = (C + D) X[q] for nq directions with one pass over the training data. */
static PetscErrorCode ihvp_apply_block(InflIHVP ih, PetscInt nq, Vec X[], Vec Y[])
{
  PetscBool layered = ih->curv != INFL_CURVATURE_GGN;

  PetscFunctionBegin;
  PetscCall(ihvp_block_work(ih, nq));
  for (PetscInt q = 0; q < nq; q++) { /* gather each direction to every rank, in the product's layout */
    const PetscScalar *v;
    PetscCall(VecScatterBegin(ih->toall, X[q], ih->vall, INSERT_VALUES, SCATTER_FORWARD));
    PetscCall(VecScatterEnd(ih->toall, X[q], ih->vall, INSERT_VALUES, SCATTER_FORWARD));
    PetscCall(VecGetArrayRead(ih->vall, &v));
    if (layered)
      for (PetscInt l = 0; l < ih->L; l++) InflIHVPSlabToLayer(ih->din[l], ih->dout[l], v + ih->off[l], ih->V + (int64_t)nq * ih->off[l] + (int64_t)q * (ih->off[l + 1] - ih->off[l]));
    else PetscCall(PetscArraycpy(ih->V + (int64_t)q * ih->n, v, ih->n));
    PetscCall(VecRestoreArrayRead(ih->vall, &v));
  }
  InflCallAll(ih->comm, ihvp_local_product(ih, nq, ih->V, ih->U));
  for (PetscInt q = 0; q < nq; q++) { /* add the ranks' partial products into Y[q], then the damping */
    PetscScalar       *u, *yl;
    const PetscScalar *xl;
    PetscCall(VecGetArray(ih->uall, &u));
    if (layered)
      for (PetscInt l = 0; l < ih->L; l++) InflIHVPLayerToSlab(ih->din[l], ih->dout[l], ih->U + (int64_t)nq * ih->off[l] + (int64_t)q * (ih->off[l + 1] - ih->off[l]), u + ih->off[l]);
    else PetscCall(PetscArraycpy(u, ih->U + (int64_t)q * ih->n, ih->n));
    for (PetscInt i = 0; i < ih->n; i++) u[i] /= (double)ih->N;
    PetscCall(VecRestoreArray(ih->uall, &u));
    PetscCall(VecSet(Y[q], 0));
    PetscCall(VecScatterBegin(ih->toall, ih->uall, Y[q], ADD_VALUES, SCATTER_REVERSE));
    PetscCall(VecScatterEnd(ih->toall, ih->uall, Y[q], ADD_VALUES, SCATTER_REVERSE));
    PetscCall(VecGetArrayRead(X[q], &xl));
    PetscCall(VecGetArray(Y[q], &yl));
    for (PetscInt i = 0; i < ih->rend - ih->rstart; i++) yl[i] += ih->dloc[i] * xl[i];
    PetscCall(VecRestoreArray(Y[q], &yl));
    PetscCall(VecRestoreArrayRead(X[q], &xl));
  }
  ih->nmult++;
  PetscFunctionReturn(0);
}

/* y = (C + D) x */
static PetscErrorCode ihvp_mult(Mat A, Vec x, Vec y)
{
  InflIHVP ih;

  PetscFunctionBegin;
  PetscCall(MatShellGetContext(A, &ih));
  PetscCall(ihvp_apply_block(ih, 1, &x, &y));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPMultBlock(InflIHVP ih, PetscInt nq, Vec X[], Vec Y[])
{
  PetscFunctionBegin;
  PetscCheck(ih->A, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPMultBlock");
  if (nq > 0) PetscCall(ihvp_apply_block(ih, nq, X, Y));
  PetscFunctionReturn(0);
}

/* diag (layer blocks (dout, din+1) in layer order) += the diagonal of sum over this rank's shard of C_s:
 * Fisher: sum over sequences of g_s^2 (one GEMM of the squares when every sequence is one row, else g_s by a GEMM
 * over its rows); ggn (rows): sum over classes y of p_y g_y^2 with g_y the gradient for label y (p_y = exp(-loss)). */
static PetscErrorCode ihvp_local_diagonal(InflIHVP ih, double diag[])
{
  double *a2, *d2, *G; /* a2 (Tmax, maxa), d2 (Tmax, maxd) squares; G (maxd, maxa) one sequence's gradient */
  int64_t rows = ih->cap->Tmax;
  PetscInt C = 1;
  int64_t *ylab = NULL;

  PetscFunctionBegin;
  PetscCall(ihvp_block_work(ih, 1));
  PetscCall(PetscMalloc3((size_t)rows * ih->maxa, &a2, (size_t)rows * ih->maxd, &d2, (size_t)ih->maxd * ih->maxa, &G));
  if (ih->curv == INFL_CURVATURE_GGN) {
    PetscCall(InflModelGetSizes(ih->model, NULL, &C));
    PetscCall(PetscMalloc1(ih->chunk, &ylab));
  }
  for (int64_t lo = ih->start; lo < ih->start + ih->count; lo += ih->chunk) {
    int64_t hi = PetscMin(lo + ih->chunk, ih->start + ih->count);
    for (PetscInt y = 0; y < C; y++) {
      if (ih->curv == INFL_CURVATURE_GGN) {
        for (int64_t b = 0; b < hi - lo; b++) ylab[b] = y;
        PetscCall(InflModelCapture(ih->model, (PetscInt)(hi - lo), ih->x + (lo - ih->start) * ih->d, ylab, ih->cap));
      } else PetscCall(InflModelCaptureShard(ih->model, ih->train, lo, hi, ih->curv == INFL_CURVATURE_TRUE ? INFL_FISHER_TRUE : INFL_FISHER_EMPIRICAL, ih->seed, ih->cap));
      for (PetscInt l = 0; l < ih->L; l++) {
        PetscInt      nd = ih->dout[l], na = ih->din[l] + 1, B = ih->cap->B, T = ih->cap->T;
        const double *a, *ds;
        double       *Dl = diag + ih->off[l];
        InflCaptureGetDouble(ih->cap, l, ih->bufa, ih->bufd, &a, &ds);
        if (T == B) {
          for (int64_t i = 0; i < (int64_t)T * na; i++) a2[i] = a[i] * a[i];
          for (PetscInt t = 0; t < T; t++) {
            double w = ih->curv == INFL_CURVATURE_GGN ? exp(-ih->cap->loss[t]) : 1;
            for (PetscInt i = 0; i < nd; i++) d2[(int64_t)t * nd + i] = w * ds[(int64_t)t * nd + i] * ds[(int64_t)t * nd + i];
          }
          cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, T, 1, d2, nd, a2, na, 1, Dl, na);
        } else {
          for (PetscInt b = 0; b < B; b++) {
            int64_t r0 = ih->cap->offsets[b], nr = ih->cap->offsets[b + 1] - r0;
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, (int)nr, 1, ds + r0 * nd, nd, a + r0 * na, na, 0, G, na);
            for (int64_t i = 0; i < (int64_t)nd * na; i++) Dl[i] += G[i] * G[i];
          }
        }
      }
    }
  }
  PetscCall(PetscFree3(a2, d2, G));
  PetscCall(PetscFree(ylab));
  PetscFunctionReturn(0);
}

/* The diagonal of C + D (computed once, with one pass over the data; ggn: one per class): PCJACOBI's
 * MatGetDiagonal. */
static PetscErrorCode ihvp_get_diagonal(Mat A, Vec dg)
{
  InflIHVP ih;

  PetscFunctionBegin;
  PetscCall(MatShellGetContext(A, &ih));
  if (!ih->diag) {
    double      *dl, *u;
    PetscScalar *yl;
    PetscCall(PetscCalloc1(ih->n, &dl));
    InflCallAll(ih->comm, ihvp_local_diagonal(ih, dl));
    PetscCall(InflAllreduceSum(dl, ih->n, MPI_DOUBLE, ih->comm));
    PetscCall(VecGetArray(ih->uall, &u));
    for (PetscInt l = 0; l < ih->L; l++) InflIHVPLayerToSlab(ih->din[l], ih->dout[l], dl + ih->off[l], u + ih->off[l]);
    PetscCall(VecDuplicate(dg, &ih->diag));
    PetscCall(VecGetArray(ih->diag, &yl));
    for (PetscInt i = 0; i < ih->rend - ih->rstart; i++) yl[i] = u[ih->rstart + i] / (double)ih->N + ih->dloc[i];
    PetscCall(VecRestoreArray(ih->diag, &yl));
    PetscCall(VecRestoreArray(ih->uall, &u));
    PetscCall(PetscFree(dl));
  }
  PetscCall(VecCopy(ih->diag, dg));
  PetscFunctionReturn(0);
}

/* y = EK-FAC^-1 x, layer by layer on the gathered vector (every rank computes all layers; cheap next to a product) */
static PetscErrorCode ihvp_pc_apply(PC pc, Vec x, Vec y)
{
  InflIHVP           ih;
  const PetscScalar *v;
  PetscScalar       *u, *yl;
  double            *G;

  PetscFunctionBegin;
  PetscCall(PCShellGetContext(pc, &ih));
  PetscCall(VecScatterBegin(ih->toall, x, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecScatterEnd(ih->toall, x, ih->vall, INSERT_VALUES, SCATTER_FORWARD));
  PetscCall(VecGetArrayRead(ih->vall, &v));
  PetscCall(VecGetArray(ih->uall, &u));
  PetscCall(PetscMalloc1((size_t)ih->maxa * ih->maxd, &G));
  for (PetscInt l = 0; l < ih->L; l++) {
    InflIHVPSlabToLayer(ih->din[l], ih->dout[l], v + ih->off[l], G);
    if (ih->pc_damping > 0) PetscCall(InflEKFACPreconditionDamped(ih->ek, l, ih->pc_damping, G));
    else PetscCall(InflEKFACPrecondition(ih->ek, l, G));
    InflIHVPLayerToSlab(ih->din[l], ih->dout[l], G, u + ih->off[l]);
  }
  PetscCall(PetscFree(G));
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
  if (ih->pc_damping > 0) {
    char name[96];
    PetscCall(PetscSNPrintf(name, sizeof(name), "EK-FAC inverse with damping %g (infl, -ihvp_pc_damping)", ih->pc_damping));
    PetscCall(PCShellSetName(pc, name));
  } else PetscCall(PCShellSetName(pc, "EK-FAC inverse (infl)"));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- checkpoint helpers */
#define IHVP_BREAKDOWN 1e-10 /* Lanczos breakdown: a beta below this fraction of the running estimate of ||T|| */
#define IHVP_RITZ_TOL 1.5e-8 /* a Ritz pair has converged when its residual estimate is below this fraction of ||T|| */
#define IHVP_LIB_MARGIN (64.0 * 1024 * 1024) /* the libraries' bytes (MPI, PETSc, HDF5, BLAS), as InflChunkFromMemLimit */
#define MiB (1024.0 * 1024.0)

/* Collective.  Create PARTIAL.tmp with the root attributes that InflCheckpointOpen checks (the stage, the model's and
 * training data's hashes, the solve's key ih->ckey). */
static PetscErrorCode ckpt_create(InflIHVP ih, const char key[], char tmp[], size_t len, hid_t *file)
{
  const char *mh, *th;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(tmp, len, "%s.tmp", ih->partial));
  PetscCall(InflModelGetHash(ih->model, &mh));
  PetscCall(InflDataGetHash(ih->train, &th));
  PetscCall(InflH5Create(ih->comm, tmp, PETSC_TRUE, file));
  PetscCall(InflH5SetAttrString(*file, "/", "stage", "ihvp"));
  PetscCall(InflH5SetAttrString(*file, "/", "model_sha256", mh));
  PetscCall(InflH5SetAttrString(*file, "/", "train_sha256", th));
  PetscCall(InflH5SetAttrString(*file, "/", "checkpoint_key", key));
  PetscFunctionReturn(0);
}

/* Collective.  Open ih->partial to resume from it (InflCheckpointOpen: it must belong to this run, key). */
static PetscErrorCode ckpt_open(InflIHVP ih, const char key[], hid_t *file)
{
  const char *mh, *th;

  PetscFunctionBegin;
  PetscCall(InflModelGetHash(ih->model, &mh));
  PetscCall(InflDataGetHash(ih->train, &th));
  PetscCall(InflCheckpointOpen(ih->comm, ih->partial, "ihvp", mh, th, key, file));
  PetscFunctionReturn(0);
}

/* Collective.  Dataset `name` (nv, n) of the checkpoint holds the vectors v (distributed) as rows: gathered to every
 * rank, written by rank 0, so that any rank count reads them back. */
static PetscErrorCode ckpt_write_vecs(InflIHVP ih, hid_t file, const char name[], PetscInt nv, Vec v[])
{
  int64_t     dims[2] = {nv, ih->n};
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(ih->comm, &rank));
  PetscCall(InflH5CreateDataset(file, name, H5T_NATIVE_DOUBLE, 2, dims));
  for (PetscInt q = 0; q < nv; q++) {
    const PetscScalar *a;
    PetscCall(VecScatterBegin(ih->toall, v[q], ih->vall, INSERT_VALUES, SCATTER_FORWARD));
    PetscCall(VecScatterEnd(ih->toall, v[q], ih->vall, INSERT_VALUES, SCATTER_FORWARD));
    PetscCall(VecGetArrayRead(ih->vall, &a));
    PetscCall(InflH5WriteRowsAt(file, name, H5T_NATIVE_DOUBLE, q, rank == 0 ? 1 : 0, a));
    PetscCall(VecRestoreArrayRead(ih->vall, &a));
  }
  PetscFunctionReturn(0);
}

/* Collective.  Rows [0, nv) of dataset `name` (at least nv rows of n) of the checkpoint into v, each checked finite. */
static PetscErrorCode ckpt_read_vecs(InflIHVP ih, hid_t file, const char name[], PetscInt nv, Vec v[])
{
  double *row;
  int     nd;
  int64_t dims[8];

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(file, name, &nd, dims));
  PetscCheck(nd == 2 && dims[0] >= nv && dims[1] == ih->n, ih->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s is missing or has not %d rows of %d values; delete the file to start over", ih->partial, name, (int)nv, (int)ih->n);
  PetscCall(PetscMalloc1(ih->n, &row));
  for (PetscInt q = 0; q < nv; q++) {
    PetscCall(InflH5ReadRows(file, name, H5T_NATIVE_DOUBLE, q, 1, row));
    PetscCall(InflCheckpointCheckFinite(ih->comm, ih->partial, name, 1, 0, ih->n, row));
    PetscCall(InflIHVPArrayToVec(ih, row, v[q]));
  }
  PetscCall(PetscFree(row));
  PetscFunctionReturn(0);
}

/* Collective, between two steps of a resumable pass (the Lanczos run, the block solve): is a checkpoint due (rank 0's
 * clock: -checkpoint_interval seconds since `last`), and did any rank receive a stop signal?  now: the time. */
static PetscErrorCode ckpt_agree(InflIHVP ih, PetscLogDouble last, PetscLogDouble *now, PetscBool *due, PetscBool *signal)
{
  int flags[2];

  PetscFunctionBegin;
  PetscCall(PetscTime(now));
  flags[0] = InflSignalReceived() ? 1 : 0;
  flags[1] = (ih->partial[0] && *now - last >= ih->ckpt_interval) ? 1 : 0;
  PetscCallMPI(MPI_Bcast(&flags[1], 1, MPI_INT, 0, ih->comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, flags, 2, MPI_INT, MPI_MAX, ih->comm));
  *signal = flags[0] ? PETSC_TRUE : PETSC_FALSE;
  *due    = flags[1] ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- deflation preconditioner */
/* Collective.  Bytes per rank (the largest over the ranks) that the Krylov stage holds besides the Lanczos vectors
 * while it solves ih->nq_hint queries together: the training shard, the EK-FAC factors, the gathered vectors and the
 * directions of a block product, the queries' gradients and IHVPs (every rank), the block solve's distributed
 * vectors, the capture and the scratch of a product. */
static PetscErrorCode ihvp_resident_bytes(InflIHVP ih, double *bytes)
{
  double nq = (double)PetscMax(ih->nq_hint, 1), n = (double)ih->n, nloc = (double)(ih->rend - ih->rstart), b;

  PetscFunctionBegin;
  b = (double)ih->count * (4.0 * (double)ih->d + 8) + (ih->ek ? (double)InflEKFACBytes(ih->model) : 0) + 8 * n * (2 + 4 * nq) + 8 * nloc * (6 * nq + 2) + 8.0 * IHVP_SCRATCH + 16.0 * (double)ih->cap->Tmax * (double)(ih->maxa + ih->maxd) + (double)ih->chunk * (double)InflModelCaptureBytes(ih->model);
  PetscCallMPI(MPI_Allreduce(&b, bytes, 1, MPI_DOUBLE, MPI_MAX, ih->comm));
  PetscFunctionReturn(0);
}

/* Collective.  Under -mem_limit, an error naming the option, its value and the estimate when the limit cannot hold what
 * the Krylov stage keeps for ih->nq_hint queries (ihvp_resident_bytes) and the libraries' margin: checked before the
 * first solve, so that a limit too small is not found only by the scoring pass after every solve. */
static PetscErrorCode ihvp_check_mem_limit(InflIHVP ih)
{
  double    limit, resident;
  PetscBool lset;
  char      text[64];

  PetscFunctionBegin;
  PetscCall(InflGetMemLimit(ih->comm, &limit, &lset));
  if (!lset) PetscFunctionReturn(0);
  PetscCall(ihvp_resident_bytes(ih, &resident));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-mem_limit", text, sizeof(text), NULL));
  PetscCheck(limit >= resident + IHVP_LIB_MARGIN, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-mem_limit %s (%.0f MiB per rank) cannot hold the %.0f MiB that the Krylov IHVP solves of %d queries keep (training shard, factors, the queries' vectors and scratch) plus %.0f MiB for the libraries; raise -mem_limit, use more ranks or give fewer queries", text, limit / MiB, resident / MiB, (int)PetscMax(ih->nq_hint, 1), IHVP_LIB_MARGIN / MiB);
  PetscFunctionReturn(0);
}

/* Collective.  K and the steps of the Lanczos run of -ihvp_deflate under the bound on its steps + 1 vectors per rank:
 * with -mem_limit what the limit leaves after the stage's other bytes (ihvp_resident_bytes) and the libraries'
 * margin; without it INFL_IHVP_DEFLATE_BYTES for the default K and steps (an explicit K or step count is then not
 * bounded).  A default K that does not fit is lowered (0: no deflation) and `why` says why; an explicit
 * -ihvp_deflate or -ihvp_deflate_steps that does not fit -mem_limit is an error naming both.  Same answer on every
 * rank. */
static PetscErrorCode deflation_plan(InflIHVP ih, PetscInt *K, PetscInt *steps, char why[], size_t len)
{
  PetscMPIInt size;
  double      limit = 0, resident = 0, avail, per;
  PetscBool   lset, chosen = ih->deflate_set || ih->deflate_steps > 0 ? PETSC_TRUE : PETSC_FALSE;
  PetscInt    Kd;
  char        room[256];

  PetscFunctionBegin;
  why[0] = 0;
  *K     = ih->deflate;
  *steps = 0;
  if (!*K) PetscFunctionReturn(0);
  *steps = PetscMin(ih->deflate_steps > 0 ? ih->deflate_steps : 2 * *K + 10, ih->n);
  PetscCallMPI(MPI_Comm_size(ih->comm, &size));
  PetscCall(InflGetMemLimit(ih->comm, &limit, &lset));
  per = 8.0 * (double)((ih->n + size - 1) / size); /* a rank's share of one vector (PETSc's default layout) */
  if (lset) {
    PetscCall(ihvp_resident_bytes(ih, &resident));
    avail = limit - resident - IHVP_LIB_MARGIN;
    PetscCall(PetscSNPrintf(room, sizeof(room), "the %.1f MiB per rank that -mem_limit (%.1f MiB) leaves after the %.1f MiB the Krylov stage holds otherwise and %.0f MiB for the libraries", PetscMax(avail, 0) / MiB, limit / MiB, resident / MiB, IHVP_LIB_MARGIN / MiB));
  } else {
    avail = INFL_IHVP_DEFLATE_BYTES;
    PetscCall(PetscSNPrintf(room, sizeof(room), "%.0f MiB per rank (the bound without -mem_limit)", avail / MiB));
  }
  if ((double)(*steps + 1) * per <= avail || (!lset && chosen)) PetscFunctionReturn(0);
  PetscCheck(!chosen, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %d: its Lanczos run keeps %d vectors of %d parameters, %.1f MiB per rank, more than %s; lower %s, raise -mem_limit or use more ranks", ih->deflate_set ? "-ihvp_deflate" : "-ihvp_deflate_steps", (int)(ih->deflate_set ? ih->deflate : ih->deflate_steps), (int)(*steps + 1), (int)ih->n, (double)(*steps + 1) * per / MiB, room, ih->deflate_set ? "-ihvp_deflate" : "-ihvp_deflate_steps");
  Kd = (PetscInt)PetscMax(0.0, PetscMin((double)*K, floor((avail / per - 11) / 2)));
  if (Kd < 1) PetscCall(PetscSNPrintf(why, len, "no deflation: the 2K + 11 Lanczos vectors of K = 1 (%d parameters, %.3f MiB per rank each) do not fit in %s", (int)ih->n, per / MiB, room));
  else PetscCall(PetscSNPrintf(why, len, "deflation of K = %d instead of %d eigenvalues: its 2K + 11 Lanczos vectors of %d parameters (%.3f MiB per rank each) must fit in %s", (int)Kd, (int)*K, (int)ih->n, per / MiB, room));
  *K     = Kd;
  *steps = Kd ? PetscMin(2 * Kd + 10, ih->n) : 0;
  PetscFunctionReturn(0);
}

/* Collective.  The finished deflation (its Ritz pairs) in the checkpoint `file`: group /lanczos with attributes state
 * "done", steps, K, sigma, ritz_min, ritz_max, datasets theta (K) and vectors (K, n). */
static PetscErrorCode lanczos_write_done(InflIHVP ih, hid_t file)
{
  int64_t dk[1] = {PetscMax(ih->ndefl, 1)};
  double  t0    = 0;

  PetscFunctionBegin;
  if (!ih->defl || !ih->defl_m) PetscFunctionReturn(0); /* no Lanczos run (no deflation, or none in memory) */
  PetscCall(InflH5WriteArray(file, "/lanczos/theta", H5T_NATIVE_DOUBLE, 1, dk, ih->ndefl ? ih->defl_theta : &t0));
  if (ih->ndefl) PetscCall(ckpt_write_vecs(ih, file, "/lanczos/vectors", ih->ndefl, ih->defl));
  PetscCall(InflH5SetAttrString(file, "/lanczos", "state", "done"));
  PetscCall(InflH5SetAttrInt(file, "/lanczos", "steps", ih->defl_m));
  PetscCall(InflH5SetAttrInt(file, "/lanczos", "K", ih->ndefl));
  PetscCall(InflH5SetAttrDouble(file, "/lanczos", "sigma", ih->defl_sigma));
  PetscCall(InflH5SetAttrDouble(file, "/lanczos", "ritz_min", ih->defl_lo));
  PetscCall(InflH5SetAttrDouble(file, "/lanczos", "ritz_max", ih->defl_hi));
  PetscFunctionReturn(0);
}

/* Collective.  Checkpoint of the Lanczos run after m steps: ih->partial holds /lanczos with state "running", steps m,
 * alpha and beta (m) and the basis vectors (m + 1, n). */
static PetscErrorCode lanczos_checkpoint(InflIHVP ih, PetscInt m, Vec Qv[], const double alpha[], const double beta[])
{
  char    tmp[PETSC_MAX_PATH_LEN + 8];
  hid_t   file;
  int64_t dm[1] = {m};

  PetscFunctionBegin;
  PetscCall(ckpt_create(ih, ih->ckey, tmp, sizeof(tmp), &file));
  PetscCall(InflH5WriteArray(file, "/lanczos/alpha", H5T_NATIVE_DOUBLE, 1, dm, alpha));
  PetscCall(InflH5WriteArray(file, "/lanczos/beta", H5T_NATIVE_DOUBLE, 1, dm, beta));
  PetscCall(ckpt_write_vecs(ih, file, "/lanczos/vectors", m + 1, Qv));
  PetscCall(InflH5SetAttrString(file, "/lanczos", "state", "running"));
  PetscCall(InflH5SetAttrInt(file, "/lanczos", "steps", m));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(ih->comm, tmp, ih->partial));
  PetscFunctionReturn(0);
}

/* Collective.  Resume the Lanczos run of K pairs and `steps` steps from ih->partial (when the block solve set its key
 * and the file has a /lanczos group; InflCheckpointOpen refuses another run's file): state "done" restores the
 * deflation (*done), "running" the first m0 steps (alpha, beta, the m0 + 1 basis vectors into Qv). */
static PetscErrorCode lanczos_restore(InflIHVP ih, PetscInt K, PetscInt steps, Vec Qv[], double alpha[], double beta[], PetscInt *m0, PetscBool *done)
{
  hid_t     file;
  int       nd;
  int64_t   dims[8], ms, kd, dm[1];
  char      state[16];
  PetscBool isdone, isrun;

  PetscFunctionBegin;
  *m0   = 0;
  *done = PETSC_FALSE;
  if (!ih->ckey[0] || !InflFileExists(ih->partial)) PetscFunctionReturn(0);
  PetscCall(ckpt_open(ih, ih->ckey, &file));
  PetscCall(InflH5GetDims(file, "/lanczos/theta", &nd, dims));
  if (nd < 0) PetscCall(InflH5GetDims(file, "/lanczos/alpha", &nd, dims));
  if (nd < 0) { /* no Lanczos state in the file */
    PetscCall(InflH5Close(&file));
    PetscFunctionReturn(0);
  }
  PetscCall(InflH5GetAttrString(file, "/lanczos", "state", state, sizeof(state)));
  PetscCall(PetscStrcmp(state, "done", &isdone));
  PetscCall(PetscStrcmp(state, "running", &isrun));
  PetscCheck(isdone || isrun, ih->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: group /lanczos has state \"%s\", not done or running; delete the file to start over", ih->partial, state);
  PetscCall(InflH5GetAttrInt(file, "/lanczos", "steps", &ms));
  PetscCall(InflCheckpointCheckRange(ih->comm, ih->partial, "attribute /lanczos steps", ms, 1, steps));
  if (isdone) {
    PetscCall(InflH5GetAttrInt(file, "/lanczos", "K", &kd));
    PetscCall(InflCheckpointCheckRange(ih->comm, ih->partial, "attribute /lanczos K", kd, 0, PetscMin(K, ms - 1)));
    PetscCall(InflH5GetAttrDouble(file, "/lanczos", "sigma", &ih->defl_sigma));
    PetscCall(InflH5GetAttrDouble(file, "/lanczos", "ritz_min", &ih->defl_lo));
    PetscCall(InflH5GetAttrDouble(file, "/lanczos", "ritz_max", &ih->defl_hi));
    ih->ndefl  = (PetscInt)kd;
    ih->defl_m = (PetscInt)ms;
    PetscCall(PetscMalloc1(PetscMax(ih->ndefl, 1), &ih->defl_theta));
    dm[0] = PetscMax(ih->ndefl, 1);
    PetscCall(InflH5ReadArray(file, "/lanczos/theta", H5T_NATIVE_DOUBLE, 1, dm, NULL, ih->defl_theta));
    PetscCall(InflCheckpointCheckFinite(ih->comm, ih->partial, "/lanczos/theta", 1, 0, ih->ndefl, ih->defl_theta));
    PetscCall(VecDuplicateVecs(Qv[0], PetscMax(ih->ndefl, 1), &ih->defl));
    if (ih->ndefl) PetscCall(ckpt_read_vecs(ih, file, "/lanczos/vectors", ih->ndefl, ih->defl));
    *done = PETSC_TRUE;
    if (ih->ndefl) PetscCall(PetscPrintf(ih->comm, "ihvp: deflation: restored from %s (no pass over the data): %d Lanczos steps, Ritz values %.4e .. %.4e; the %d largest (%.4e .. %.4e) map onto %.4e\n", ih->partial, (int)ms, ih->defl_lo, ih->defl_hi, (int)ih->ndefl, ih->defl_theta[0], ih->defl_theta[ih->ndefl - 1], ih->defl_sigma));
    else PetscCall(PetscPrintf(ih->comm, "ihvp: deflation: restored from %s: %d Lanczos steps, no deflation\n", ih->partial, (int)ms));
  } else {
    dm[0] = ms;
    PetscCall(InflH5ReadArray(file, "/lanczos/alpha", H5T_NATIVE_DOUBLE, 1, dm, NULL, alpha));
    PetscCall(InflH5ReadArray(file, "/lanczos/beta", H5T_NATIVE_DOUBLE, 1, dm, NULL, beta));
    PetscCall(InflCheckpointCheckFinite(ih->comm, ih->partial, "/lanczos/alpha", 1, 0, ms, alpha));
    PetscCall(InflCheckpointCheckFinite(ih->comm, ih->partial, "/lanczos/beta", 1, 0, ms, beta));
    PetscCall(ckpt_read_vecs(ih, file, "/lanczos/vectors", (PetscInt)ms + 1, Qv));
    *m0 = (PetscInt)ms;
    PetscCall(PetscPrintf(ih->comm, "ihvp: deflation: resuming the Lanczos run from %s at step %d of %d\n", ih->partial, (int)ms, (int)steps));
  }
  PetscCall(InflH5Close(&file));
  PetscFunctionReturn(0);
}

/* Not collective.  The Ritz vectors of the K largest Ritz values, V[i] = sum_j Q[j] T[(m - 1 - i) m + j] (T holds the
 * eigenvectors of the m x m tridiagonal matrix as rows, eigenvalues ascending), as one GEMM per block of local rows:
 * the rows of the m Lanczos vectors are packed into a (rows x m) panel and multiplied by the (m x K) coefficients.
 * K separate m-term VecMAXPYs read the whole basis K times; this reads it once. */
#define IHVP_RITZ_ROWS 256
static PetscErrorCode ritz_vectors(PetscInt m, PetscInt K, const double *T, Vec *Qv, Vec *V)
{
  const PetscScalar **q;
  PetscScalar       **v;
  double             *S, *P, *R;
  PetscInt            nl;

  PetscFunctionBegin;
  PetscCall(VecGetLocalSize(Qv[0], &nl));
  PetscCall(PetscMalloc5(m, &q, K, &v, (size_t)m * K, &S, (size_t)IHVP_RITZ_ROWS * m, &P, (size_t)IHVP_RITZ_ROWS * K, &R));
  for (PetscInt i = 0; i < K; i++)
    for (PetscInt j = 0; j < m; j++) S[j * K + i] = T[(m - 1 - i) * m + j]; /* row-major m x K */
  for (PetscInt j = 0; j < m; j++) PetscCall(VecGetArrayRead(Qv[j], &q[j]));
  for (PetscInt i = 0; i < K; i++) PetscCall(VecGetArray(V[i], &v[i]));
  for (PetscInt r0 = 0; r0 < nl; r0 += IHVP_RITZ_ROWS) {
    PetscInt nr = PetscMin(IHVP_RITZ_ROWS, nl - r0);
    for (PetscInt r = 0; r < nr; r++)
      for (PetscInt j = 0; j < m; j++) P[r * m + j] = q[j][r0 + r];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)K, (int)m, 1.0, P, (int)m, S, (int)K, 0.0, R, (int)K);
    for (PetscInt i = 0; i < K; i++)
      for (PetscInt r = 0; r < nr; r++) v[i][r0 + r] = R[r * K + i];
  }
  for (PetscInt i = 0; i < K; i++) PetscCall(VecRestoreArray(V[i], &v[i]));
  for (PetscInt j = 0; j < m; j++) PetscCall(VecRestoreArrayRead(Qv[j], &q[j]));
  PetscCall(PetscFree5(q, v, S, P, R));
  PetscFunctionReturn(0);
}

/* Deflation preconditioner (-ihvp_deflate K): M^-1 = I + sum_i (sigma / theta_i - 1) v_i v_i^T over the K largest Ritz
 * pairs (theta_i, v_i) of m Lanczos steps on C + D (full reorthogonalization; Paige 1972, Saad 2011 ch. 6), sigma
 * the (K+1)-th largest Ritz value: the K top eigenvalues move to about sigma, the rest of the spectrum stays, and
 * M^-1 is SPD (V orthonormal, sigma, theta > 0), so CG keeps its recurrence (Frank & Vuik 2001, Erhel et al. 1996 on
 * deflation by spectral preconditioners).  The Lanczos start vector is a fixed Gaussian vector (InflNormal), so every
 * run and rank count builds the same preconditioner up to rounding.  Cost: m products of one direction (m passes
 * over the data) once, then 2 K dot products and axpys per application.
 * Breakdown: a beta at or below IHVP_BREAKDOWN times the running estimate of ||T|| (max_j |alpha_j| + beta_j +
 * beta_j-1) means the Krylov space of the start vector is invariant (C + D has only m distinct eigenvalues along it,
 * e.g. a training set of fewer examples than steps): the run stops there, its Ritz pairs are exact, and the largest
 * converged ones (residual estimate |beta_m s_m,i| <= IHVP_RITZ_TOL ||T||), all but the smallest at most, are
 * deflated.  Without breakdown the K largest are deflated, converged or not (M^-1 stays SPD).
 * Inside the block solve (ih->ckey set) the run checkpoints to ih->partial every -checkpoint_interval seconds, on a
 * signal and after -checkpoint_stop_after steps, and resumes from it (lanczos_restore). */
static PetscErrorCode ihvp_deflation_setup(PC pc)
{
  InflIHVP       ih;
  PetscInt       K, m, m0, steps, nconv = 0;
  Vec           *Qv, w;
  double        *alpha, *beta, *h, *T, *theta, *work, tnorm = 0, bratio = 0;
  PetscBool      breakdown = PETSC_FALSE, done;
  PetscBLASInt   bm, lwork, info;
  PetscLogDouble t0, t1, last, lastp;
  char           why[640];

  PetscFunctionBegin;
  PetscCall(PCShellGetContext(pc, &ih));
  if (ih->defl) PetscFunctionReturn(0);
  PetscCall(deflation_plan(ih, &K, &steps, why, sizeof(why)));
  if (why[0]) PetscCall(PetscPrintf(ih->comm, "ihvp: note: %s\n", why));
  if (K < 1) {
    Vec t;
    ih->ndefl = 0;
    PetscCall(MatCreateVecs(ih->A, &t, NULL));
    PetscCall(VecDuplicateVecs(t, 1, &ih->defl)); /* marks the setup as done; M^-1 = I */
    PetscCall(VecDestroy(&t));
    PetscFunctionReturn(0);
  }
  PetscCheck(steps > K, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_deflate %d needs more than %d Lanczos steps but the operator has %d rows", (int)K, (int)K, (int)ih->n);
  PetscCall(PetscTime(&t0));
  PetscCall(MatCreateVecs(ih->A, &w, NULL));
  PetscCall(VecDuplicateVecs(w, steps + 1, &Qv));
  PetscCall(PetscMalloc5(steps, &alpha, steps, &beta, steps + 1, &h, (size_t)steps * steps, &T, steps, &theta));
  PetscCall(lanczos_restore(ih, K, steps, Qv, alpha, beta, &m0, &done));
  if (done) {
    PetscCall(PetscFree5(alpha, beta, h, T, theta));
    PetscCall(VecDestroyVecs(steps + 1, &Qv));
    PetscCall(VecDestroy(&w));
    PetscFunctionReturn(0);
  }
  if (!m0) {
    double *g;
    PetscCall(PetscMalloc1(ih->n, &g));
    for (PetscInt i = 0; i < ih->n; i++) g[i] = InflNormal(0, (uint64_t)i, INFL_STREAM_LANCZOS);
    PetscCall(InflIHVPArrayToVec(ih, g, Qv[0]));
    PetscCall(PetscFree(g));
    PetscCall(VecNormalize(Qv[0], NULL));
  }
  for (PetscInt j = 0; j < m0; j++) tnorm = PetscMax(tnorm, PetscAbsReal(alpha[j]) + beta[j] + (j ? beta[j - 1] : 0));
  last = lastp = t0;
  for (m = m0; m < steps; m++) {
    PetscCall(ihvp_apply_block(ih, 1, &Qv[m], &w));
    PetscCall(VecDot(w, Qv[m], &alpha[m]));
    for (int pass = 0; pass < 2; pass++) { /* classical Gram-Schmidt against every Lanczos vector, twice */
      PetscCall(VecMDot(w, m + 1, Qv, h));
      for (PetscInt j = 0; j <= m; j++) h[j] = -h[j];
      PetscCall(VecMAXPY(w, m + 1, h, Qv));
    }
    PetscCall(VecNorm(w, NORM_2, &beta[m]));
    tnorm = PetscMax(tnorm, PetscAbsReal(alpha[m]) + beta[m] + (m ? beta[m - 1] : 0));
    if (!(beta[m] > IHVP_BREAKDOWN * tnorm)) { /* an invariant subspace: the next vector would be rounding noise */
      breakdown = PETSC_TRUE;
      bratio    = tnorm > 0 ? beta[m] / tnorm : 0;
      m++;
      break;
    }
    PetscCall(VecCopy(w, Qv[m + 1]));
    PetscCall(VecScale(Qv[m + 1], 1.0 / beta[m]));
    if (!ih->quiet) { /* progress every -progress_interval seconds (rank 0 prints; only reads) */
      PetscLogDouble now;
      PetscCall(PetscTime(&now));
      if (now - lastp >= ih->progress_interval && m + 1 < steps) {
        lastp = now;
        PetscCall(PetscPrintf(ih->comm, "  ihvp deflation: Lanczos step %d of %d, %.1f s, ETA %.0f s\n", (int)(m + 1), (int)steps, now - t0, (now - t0) / (m + 1 - m0) * (steps - m - 1)));
      }
    }
    if (m + 1 < steps && ih->ckey[0]) { /* between two steps of the block solve's run: checkpoint, stop */
      PetscBool      due, sig, stop = ih->stop_after > 0 && m + 1 - m0 >= ih->stop_after ? PETSC_TRUE : PETSC_FALSE;
      PetscLogDouble now;
      PetscCall(ckpt_agree(ih, last, &now, &due, &sig));
      if (due || sig || stop) {
        PetscCall(lanczos_checkpoint(ih, m + 1, Qv, alpha, beta));
        last = now;
      }
      if (sig) PetscCall(InflInterrupted(ih->comm, "ihvp (the Lanczos run of -ihvp_deflate)", ih->partial));
      if (stop) SETERRQ(ih->comm, INFL_ERR_INTERRUPTED, "ihvp (the Lanczos run of -ihvp_deflate) stopped after step %d of %d (-checkpoint_stop_after %d); its progress is saved in %s: run the same command again to resume", (int)(m + 1), (int)steps, (int)ih->stop_after, ih->partial);
    }
  }
  /* eigenpairs of the tridiagonal T (m x m), ascending; eigenvector i is column i (T[i m ..]) */
  PetscCall(PetscArrayzero(T, (size_t)m * m));
  for (PetscInt j = 0; j < m; j++) {
    T[j * m + j] = alpha[j];
    if (j + 1 < m) T[j * m + j + 1] = T[(j + 1) * m + j] = beta[j];
  }
  PetscCall(PetscBLASIntCast(m, &bm));
  lwork = PetscMax(3 * bm, 1);
  PetscCall(PetscMalloc1(lwork, &work));
  PetscCallBLAS("LAPACKsyev", LAPACKsyev_("V", "U", &bm, T, &bm, theta, work, &lwork, &info));
  PetscCall(PetscFree(work));
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dsyev of the %d x %d Lanczos matrix failed (info %d)", (int)m, (int)m, (int)info);
  /* converged Ritz pairs among the largest, from the top: residual estimate |beta_m s_m,i| (Saad 2011, 6.6) */
  while (nconv < m && PetscAbsReal(beta[m - 1] * T[(m - 1 - nconv) * m + m - 1]) <= IHVP_RITZ_TOL * tnorm) nconv++;
  if (breakdown) {
    PetscInt Kb = PetscMin(K, PetscMin(nconv, m - 1));
    PetscCall(PetscPrintf(ih->comm, "ihvp: note: the Lanczos run of -ihvp_deflate stopped at step %d of %d: beta %.1e is %.1e of ||T|| (at most %.0e): the Krylov space of its start vector is invariant, so C + D has %d distinct eigenvalues along it, all found; deflating %s%d of them (the largest converged, onto the next)\n", (int)m, (int)steps, beta[m - 1], bratio, IHVP_BREAKDOWN, (int)m, Kb < K ? "only " : "", (int)Kb));
    K = Kb;
  }
  ih->defl_sigma = K ? theta[m - K - 1] : 0;
  if (!ih->deflate_set && K && !(ih->defl_sigma > 0)) K = 0; /* the default on a singular operator (damping 0): no deflation */
  PetscCheck(!K || ih->defl_sigma > 0, ih->comm, PETSC_ERR_NOT_CONVERGED, "-ihvp_deflate %d: Ritz value %g is not positive (C + D must be positive definite: is the damping > 0?)", (int)K, ih->defl_sigma);
  ih->ndefl  = K;
  ih->defl_m = m;
  ih->defl_lo = theta[0];
  ih->defl_hi = theta[m - 1];
  PetscCall(VecDuplicateVecs(w, PetscMax(K, 1), &ih->defl)); /* at least one: ih->defl marks the setup as done */
  PetscCall(PetscMalloc1(PetscMax(K, 1), &ih->defl_theta));
  for (PetscInt i = 0; i < K; i++) ih->defl_theta[i] = theta[m - 1 - i];
  PetscCall(ritz_vectors(m, K, T, Qv, ih->defl));
  ih->defl_fresh = PETSC_TRUE;
  nconv          = 0; /* converged among the K (not only from the top) */
  for (PetscInt i = 0; i < K; i++)
    if (PetscAbsReal(beta[m - 1] * T[(m - 1 - i) * m + m - 1]) <= IHVP_RITZ_TOL * tnorm) nconv++;
  PetscCall(PetscTime(&t1));
  if (m0) PetscCall(PetscSNPrintf(why, sizeof(why), "%d Lanczos steps (%d restored, %.1f s)", (int)m, (int)m0, t1 - t0));
  else PetscCall(PetscSNPrintf(why, sizeof(why), "%d Lanczos steps (%.1f s)", (int)m, t1 - t0));
  if (K) PetscCall(PetscPrintf(ih->comm, "ihvp: deflation: %s: Ritz values %.4e .. %.4e; the %d largest (%.4e .. %.4e, %d converged, residual estimate of the last %.1e) map onto %.4e\n", why, theta[0], theta[m - 1], (int)K, ih->defl_theta[0], ih->defl_theta[K - 1], (int)nconv, PetscAbsReal(beta[m - 1] * T[(m - K) * m + m - 1]), ih->defl_sigma));
  else PetscCall(PetscPrintf(ih->comm, "ihvp: deflation: %s: Ritz values %.4e .. %.4e, %s: no deflation\n", why, theta[0], theta[m - 1], m > 1 ? "not positive definite" : "a single one"));
  PetscCall(PetscFree5(alpha, beta, h, T, theta));
  PetscCall(VecDestroyVecs(steps + 1, &Qv));
  PetscCall(VecDestroy(&w));
  PetscFunctionReturn(0);
}

static PetscErrorCode ihvp_deflation_apply(PC pc, Vec x, Vec y)
{
  InflIHVP ih;
  double   d[64], *dp = d;

  PetscFunctionBegin;
  PetscCall(PCShellGetContext(pc, &ih));
  if (ih->ndefl > 64) PetscCall(PetscMalloc1(ih->ndefl, &dp));
  PetscCall(VecMDot(x, ih->ndefl, ih->defl, dp));
  for (PetscInt i = 0; i < ih->ndefl; i++) dp[i] *= ih->defl_sigma / ih->defl_theta[i] - 1;
  PetscCall(VecCopy(x, y));
  PetscCall(VecMAXPY(y, ih->ndefl, dp, ih->defl));
  if (dp != d) PetscCall(PetscFree(dp));
  ih->npc++;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPGetDeflation(InflIHVP ih, PetscInt *K, const double **theta, double *sigma)
{
  PetscFunctionBegin;
  if (K) *K = ih->defl ? ih->ndefl : 0;
  if (theta) *theta = ih->defl ? ih->defl_theta : NULL;
  if (sigma) *sigma = ih->defl ? ih->defl_sigma : 0;
  PetscFunctionReturn(0);
}

static PetscErrorCode ihvp_set_deflation(InflIHVP ih)
{
  PC   pc;
  char name[96];

  PetscFunctionBegin;
  PetscCall(KSPGetPC(ih->ksp, &pc));
  PetscCall(PCSetType(pc, PCSHELL));
  PetscCall(PCShellSetContext(pc, ih));
  PetscCall(PCShellSetSetUp(pc, ihvp_deflation_setup));
  PetscCall(PCShellSetApply(pc, ihvp_deflation_apply));
  PetscCall(PetscSNPrintf(name, sizeof(name), "deflation of the %d largest eigenvalues (infl, Lanczos)", (int)ih->deflate));
  PetscCall(PCShellSetName(pc, name));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- progress of a solve */
static PetscErrorCode trace_start(SolveTrace *tr, const char what[], double bnorm, double r0)
{
  PetscFunctionBegin;
  if (what && what != tr->what) PetscCall(PetscStrncpy(tr->what, what, sizeof(tr->what)));
  if (!tr->what[0]) PetscCall(PetscStrncpy(tr->what, "solve", sizeof(tr->what)));
  tr->bnorm  = bnorm;
  tr->r0     = r0;
  tr->warned = PETSC_FALSE;
  PetscCall(PetscTime(&tr->t0));
  tr->last = tr->t0;
  PetscFunctionReturn(0);
}

/* Least-squares slope of log(residual) per iteration over the later half of iterations 0..it (at least the last
 * IHVP_TREND: CG residuals oscillate); 0 if not finite. */
static double trace_slope(const SolveTrace *tr, PetscInt it)
{
  PetscInt m = PetscMax(PetscMin(it + 1, IHVP_TREND), (it + 1) / 2);
  double   kbar = (m - 1) / 2.0, lbar = 0, sxy = 0, sxx = 0;

  if (m < 2) return 0;
  for (PetscInt k = 0; k < m; k++) {
    double l = tr->logr[it - m + 1 + k];
    if (!isfinite(l)) return 0;
    lbar += l / m;
  }
  for (PetscInt k = 0; k < m; k++) {
    sxy += (k - kbar) * (tr->logr[it - m + 1 + k] - lbar);
    sxx += (k - kbar) * (k - kbar);
  }
  return sxy / sxx;
}

/* Record iteration it's residual norm; every `interval` seconds (and with force) print the progress line
 *   ihvp query 17: iteration 12, residual norm 3.2e-04 (relative to the right-hand side 1.1e-05, target 1.0e-08), 4.1 s, ETA 6 s (21 more iterations)
 * on rank 0 of comm.  The ETA extrapolates the trend (trace_slope) down to target = max(rtol r_0, abstol), at the mean
 * time per iteration so far.  Once, after IHVP_HOPELESS_MIN iterations and a tenth of maxits, a solve whose trend
 * needs more than twice maxits says so (the residual trend, and what to change).  Collective only in printing. */
static PetscErrorCode trace_step(MPI_Comm comm, SolveTrace *tr, PetscInt it, double rnorm, double rtol, double abstol, PetscInt maxits, double interval)
{
  PetscLogDouble now;
  double         target = PetscMax(rtol * tr->r0, abstol), slope;
  char           eta[160];

  PetscFunctionBegin;
  PetscCall(PetscTime(&now));
  if (it >= tr->cap) {
    PetscInt cap = PetscMax(2 * tr->cap, 256);
    while (cap <= it) cap *= 2;
    PetscCall(PetscRealloc(sizeof(double) * (size_t)cap, &tr->logr));
    tr->cap = cap;
  }
  tr->logr[it] = rnorm > 0 ? log(rnorm) : -HUGE_VAL;
  slope        = rnorm > target ? trace_slope(tr, it) : 0;
  if (!tr->warned && it >= IHVP_HOPELESS_MIN && it >= maxits / 10 && rnorm > target) {
    double more = slope < 0 ? (log(target) - log(rnorm)) / slope : HUGE_VAL;
    if (it + more > 2.0 * maxits) {
      char need[64];
      tr->warned = PETSC_TRUE;
      if (slope < 0) PetscCall(PetscSNPrintf(need, sizeof(need), "about %.0f more iterations", ceil(more)));
      else PetscCall(PetscStrncpy(need, "an unbounded number of iterations", sizeof(need)));
      PetscCall(PetscPrintf(comm, "ihvp: WARNING: %s will not converge within -ihvp_ksp_max_it %d: at iteration %d the relative residual is %.3e and falls %.3g%% per iteration over the last %d iterations, so reaching %.1e needs %s; raise the damping, loosen -ihvp_ksp_rtol, choose another -ihvp_pc_type, or raise -ihvp_ksp_max_it\n", tr->what, (int)maxits, (int)it, tr->bnorm > 0 ? rnorm / tr->bnorm : 0.0, slope < 0 ? 100 * (1 - exp(slope)) : 0.0, (int)PetscMax(PetscMin(it + 1, IHVP_TREND), (it + 1) / 2), tr->bnorm > 0 ? target / tr->bnorm : 0.0, need));
    }
  }
  if (now - tr->last < interval) PetscFunctionReturn(0);
  tr->last = now;
  PetscCall(PetscStrncpy(eta, it ? "ETA unknown (the residual is not decreasing)" : "ETA unknown (no trend yet)", sizeof(eta)));
  if (rnorm <= target) PetscCall(PetscStrncpy(eta, "ETA 0 s (converged)", sizeof(eta)));
  else if (slope < 0) {
    double more = (log(target) - log(rnorm)) / slope; /* iterations still to go at this rate */
    double secs = more * (now - tr->t0) / it;
    if (it + more > maxits) PetscCall(PetscSNPrintf(eta, sizeof(eta), "ETA %.1f s (%.0f more iterations: beyond -ihvp_ksp_max_it %d at this rate)", secs, ceil(more), (int)maxits));
    else PetscCall(PetscSNPrintf(eta, sizeof(eta), "ETA %.1f s (%.0f more iterations)", secs, ceil(more)));
  }
  PetscCall(PetscPrintf(comm, "  ihvp %s: iteration %d, residual norm %.3e (relative to the right-hand side %.3e, target %.1e), %.1f s, %s\n", tr->what, (int)it, rnorm, tr->bnorm > 0 ? rnorm / tr->bnorm : 0.0, tr->bnorm > 0 ? target / tr->bnorm : 0.0, now - tr->t0, eta));
  fflush(stdout);
  PetscFunctionReturn(0);
}

/* KSP monitor of the one-at-a-time solves: the trace of the running solve.  It only reads: the iterates are the
 * same with and without it. */
static PetscErrorCode ihvp_monitor(KSP ksp, PetscInt it, PetscReal rnorm, void *ctx)
{
  InflIHVP  ih = (InflIHVP)ctx;
  PetscReal rtol, abstol, dtol;
  PetscInt  maxits;

  PetscFunctionBegin;
  if (it == 0) { /* a new solve (also one started with KSPSolve on InflIHVPGetKSP's KSP) */
    Vec    b;
    double bnorm;
    PetscCall(KSPGetRhs(ksp, &b)); /* every rank calls the monitor at iteration 0: the norm is collective */
    PetscCall(VecNorm(b, NORM_2, &bnorm));
    PetscCall(trace_start(&ih->ktrace, ih->ktrace.what, bnorm, rnorm));
  }
  PetscCall(KSPGetTolerances(ksp, &rtol, &abstol, &dtol, &maxits));
  PetscCall(trace_step(ih->comm, &ih->ktrace, it, rnorm, rtol, abstol, maxits, ih->progress_interval));
  PetscFunctionReturn(0);
}

static PetscErrorCode ihvp_free(InflIHVP ih)
{
  PetscFunctionBegin;
  PetscCall(KSPDestroy(&ih->ksp));
  PetscCall(MatDestroy(&ih->A));
  PetscCall(VecDestroy(&ih->vall));
  PetscCall(VecDestroy(&ih->uall));
  PetscCall(VecDestroy(&ih->diag));
  PetscCall(VecScatterDestroy(&ih->toall));
  PetscCall(InflCaptureDestroy(&ih->cap));
  PetscCall(PetscFree2(ih->V, ih->U));
  PetscCall(PetscFree(ih->c));
  PetscCall(PetscFree(ih->Z));
  PetscCall(PetscFree2(ih->bufa, ih->bufd));
  ih->qcap = 0;
  ih->ccap = ih->bufcap = 0;
  PetscCall(PetscFree4(ih->din, ih->dout, ih->off, ih->damping));
  PetscCall(PetscFree(ih->dloc));
  PetscCall(PetscFree(ih->ktrace.logr));
  ih->ktrace.cap = 0;
  if (ih->defl) PetscCall(VecDestroyVecs(PetscMax(ih->ndefl, 1), &ih->defl));
  PetscCall(PetscFree(ih->defl_theta));
  ih->ndefl      = 0;
  ih->defl_m     = 0;
  ih->defl_fresh = PETSC_FALSE;
  ih->L          = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSetUp(InflIHVP ih, InflModel model, InflData train, InflEKFAC ek, double damping)
{
  InflLinear     *lin;
  InflEKFACLayer *ekl = NULL;
  PetscInt        Lk = 0;
  int64_t         nparams;
  Vec             proto;
  PC              pc;
  const char     *type;

  PetscFunctionBegin;
  PetscCall(ihvp_free(ih));
  ih->model = model;
  ih->train = train;
  ih->ek    = ek;
  PetscCall(InflModelIsSequential(model, &ih->seq));
  PetscCall(InflModelGetType(model, &type));
  PetscCall(InflModelGetLayers(model, &ih->L, &lin));
  PetscCall(InflModelGetParameters(model, &nparams, NULL, NULL));
  if (ih->curv == INFL_CURVATURE_GGN) { /* the R-op product exists for some types only (the wrapper names the type) */
    PetscErrorCode ierr;
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    ierr = InflModelGaussNewtonProduct(model, 0, NULL, NULL, NULL);
    PetscCall(PetscPopErrorHandler());
    if (ierr && !ih->curv_set) { /* the default: the Fisher through the captures for such a type */
      ih->curv = INFL_CURVATURE_EMPIRICAL;
      ierr     = 0;
      PetscCall(PetscPrintf(ih->comm, "ihvp: note: model type %s has no Gauss-Newton product; the curvature is the empirical Fisher (-ihvp_curvature empirical | true)\n", type));
    }
    PetscCheck(!ierr, ih->comm, PETSC_ERR_SUP, "-ihvp_curvature ggn: model type %s has no Gauss-Newton (R-op) product; use -ihvp_curvature empirical (data labels) or -ihvp_curvature true (sampled labels), whose products go through the captured layers", type);
  }
  if (ek) {
    PetscCall(InflEKFACGetLayers(ek, &Lk, &ekl));
    PetscCheck(Lk == ih->L, ih->comm, PETSC_ERR_ARG_INCOMP, "EK-FAC factors have %d layers but the model exposes %d (-ekfac_layers)", (int)Lk, (int)ih->L);
  } else PetscCheck(damping >= 0 && isfinite(damping), ih->comm, PETSC_ERR_ARG_WRONG, "without EK-FAC factors the damping must be given: pass -factors FILE or -ekfac_damping X (X >= 0)");
  PetscCall(PetscMalloc4(ih->L, &ih->din, ih->L, &ih->dout, ih->L + 1, &ih->off, ih->L, &ih->damping));
  ih->off[0] = 0;
  ih->maxa = ih->maxd = 1;
  for (PetscInt l = 0; l < ih->L; l++) {
    ih->din[l]     = lin[l].din;
    ih->dout[l]    = lin[l].dout;
    ih->off[l + 1] = ih->off[l] + (int64_t)lin[l].dout * (lin[l].din + 1);
    if (ek) PetscCheck(ekl[l].din == lin[l].din && ekl[l].dout == lin[l].dout, ih->comm, PETSC_ERR_ARG_INCOMP, "EK-FAC layer %d is %d x %d but the model's is %d x %d", (int)l, (int)ekl[l].dout, (int)ekl[l].din + 1, (int)lin[l].dout, (int)lin[l].din + 1);
    ih->damping[l] = damping >= 0 ? damping : ekl[l].damping;
    PetscCheck(ih->damping[l] >= 0 && isfinite(ih->damping[l]), ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer %d damping %s must be a finite number >= 0", (int)l, INFL_DSTR(ih->damping[l]));
    ih->maxa = PetscMax(ih->maxa, lin[l].din + 1);
    ih->maxd = PetscMax(ih->maxd, lin[l].dout);
  }
  PetscCheck(ih->off[ih->L] < PETSC_MAX_INT, ih->comm, PETSC_ERR_SUP, "the captured layers hold %" PRId64 " parameters; a PETSc Vec with 32-bit PetscInt holds at most %d", ih->off[ih->L], (int)PETSC_MAX_INT);
  ih->n = (PetscInt)ih->off[ih->L];
  PetscCheck(ih->curv != INFL_CURVATURE_GGN || ih->n == nparams, ih->comm, PETSC_ERR_SUP, "-ihvp_curvature ggn needs every layer of the model (its product is over the whole parameter slab)");

  /* the training shard */
  PetscCall(InflModelCheckData(model, train));
  PetscCall(InflDataGetSizes(train, &ih->N, &ih->d, NULL));
  PetscCall(InflDataGetShard(train, &ih->start, &ih->count, &ih->x, NULL));
  PetscCall(InflCaptureCreate(model, ih->chunk, &ih->cap));

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
  PetscCall(MatShellSetOperation(ih->A, MATOP_GET_DIAGONAL, (void (*)(void))ihvp_get_diagonal));
  PetscCall(MatSetOption(ih->A, MAT_SYMMETRIC, PETSC_TRUE));
  PetscCall(MatSetOption(ih->A, MAT_SPD, PETSC_TRUE));
  PetscCall(VecDestroy(&proto));

  PetscCall(KSPCreate(ih->comm, &ih->ksp));
  PetscCall(KSPSetOptionsPrefix(ih->ksp, "ihvp_"));
  PetscCall(KSPSetOperators(ih->ksp, ih->A, ih->A));
  PetscCall(KSPSetType(ih->ksp, KSPCG));
  PetscCall(KSPSetNormType(ih->ksp, KSP_NORM_UNPRECONDITIONED)); /* the same stopping test with and without preconditioner */
  PetscCall(KSPSetTolerances(ih->ksp, INFL_IHVP_RTOL, 1e-50, PETSC_DEFAULT, INFL_IHVP_MAX_IT));
  PetscCall(KSPGetPC(ih->ksp, &pc));
  PetscCall(PCSetType(pc, PCNONE)); /* then the deflation INFL_IHVP_DEFLATE: docs/FIDELITY.md, "Preconditioning" */
  PetscCall(KSPMonitorSet(ih->ksp, ihvp_monitor, ih, NULL)); /* before the options: -ihvp_ksp_monitor_cancel removes it */
  PetscCall(KSPSetFromOptions(ih->ksp));
  PetscCall(PetscOptionsHasName(NULL, "ihvp_", "-ksp_monitor_cancel", &ih->quiet));
  { /* PETSc takes any value of these: an rtol >= 1 "converges" at x0 = 0 (every IHVP and score 0), <= 0 or NaN never */
    PetscReal rtol, atol, dtol;
    PetscInt  maxit;
    PetscCall(KSPGetTolerances(ih->ksp, &rtol, &atol, &dtol, &maxit));
    PetscCheck(rtol > 0 && rtol < 1, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_ksp_rtol %s must lie in (0, 1): a solve stops when its residual norm falls below rtol times the right-hand side's, so 1 or more stops at once with the IHVP 0 (every score 0) and 0 or less only at -ihvp_ksp_max_it; the default is %s", INFL_DSTR((double)rtol), INFL_DSTR(INFL_IHVP_RTOL));
    PetscCheck(atol >= 0 && !PetscIsInfOrNanReal(atol), ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_ksp_atol %s must be a finite number >= 0", INFL_DSTR((double)atol));
    PetscCheck(maxit >= 1, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_ksp_max_it %d must be >= 1 (the default is %d)", (int)maxit, INFL_IHVP_MAX_IT);
  }
  {
    PCType    t;
    PetscBool isshell;
    PetscCall(PCGetType(pc, &t));
    PetscCall(PetscStrcmp(t, PCSHELL, &isshell));
    { /* the operator is matrix-free (products and the diagonal): PETSc's other PCs fail later with their own message */
      PetscBool isnone, isjacobi;
      PetscCall(PetscStrcmp(t, PCNONE, &isnone));
      PetscCall(PetscStrcmp(t, PCJACOBI, &isjacobi));
      PetscCheck(isshell || isnone || isjacobi, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ihvp_pc_type %s is not available: the curvature is a matrix-free operator (products and its exact diagonal only); use none (the default), shell (the EK-FAC inverse, with -factors) or jacobi (the exact diagonal)", t);
      if (!ih->deflate_set && !isnone) ih->deflate = 0; /* the default deflation is the default preconditioner only */
      PetscCheck(!ih->deflate || isnone, ih->comm, PETSC_ERR_ARG_INCOMP, "-ihvp_deflate %d is a preconditioner of its own: use it with -ihvp_pc_type none (the default), not %s", (int)ih->deflate, t);
    }
    PetscCheck(!isshell || ek, ih->comm, PETSC_ERR_ARG_WRONG, "-ihvp_pc_type shell is the EK-FAC inverse and needs -factors FILE");
    if (isshell) PetscCall(InflIHVPSetEKFACPreconditioner(ih));
    if (ih->deflate) PetscCall(ihvp_set_deflation(ih));
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

PetscErrorCode InflIHVPGetSizes(InflIHVP ih, PetscInt *n, PetscInt *L, const int64_t **off)
{
  PetscFunctionBegin;
  if (n) *n = ih->n;
  if (L) *L = ih->L;
  if (off) *off = ih->off;
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

/* The end of a solve: an error naming `what` unless it converged (or -ihvp_allow_unconverged: a warning). */
static PetscErrorCode ihvp_check_converged(InflIHVP ih, const char what[], InflIHVPSolveInfo *in)
{
  PetscFunctionBegin;
  in->converged = in->reason > 0 ? PETSC_TRUE : PETSC_FALSE;
  if (in->converged) PetscFunctionReturn(0);
  PetscCheck(ih->allow_unconverged, ih->comm, PETSC_ERR_NOT_CONVERGED, "Krylov IHVP solve of %s did not converge: %s after %d iterations, residual norm %s (right-hand side norm %s); raise -ihvp_ksp_max_it, loosen -ihvp_ksp_rtol, raise the damping, or pass -ihvp_allow_unconverged", what, KSPConvergedReasons[in->reason], (int)in->iterations, INFL_DSTR(in->rnorm), INFL_DSTR(in->bnorm));
  PetscCall(PetscPrintf(ih->comm, "ihvp: WARNING: solve of %s did not converge: %s after %d iterations, residual norm %s (right-hand side norm %s); kept as is (-ihvp_allow_unconverged)\n", what, KSPConvergedReasons[in->reason], (int)in->iterations, INFL_DSTR(in->rnorm), INFL_DSTR(in->bnorm)));
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
    PetscCall(PetscStrncpy(ih->ktrace.what, what, sizeof(ih->ktrace.what)));
    PetscCall(KSPSolve(ih->ksp, b, x));
    ih->ktrace.what[0] = 0;
    PetscCall(KSPGetConvergedReason(ih->ksp, &in.reason));
    PetscCall(KSPGetIterationNumber(ih->ksp, &in.iterations));
    PetscCall(KSPGetResidualNorm(ih->ksp, &in.rnorm));
    PetscCall(ihvp_check_converged(ih, what, &in));
  }
  if (info) *info = in;
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- lockstep CG over many right-hand sides */
typedef struct {
  PetscInt           Q;
  Vec               *X, *R, *P, *AP, *Z; /* (Q) */
  double            *rz;                 /* (Q) r^T z of the current iterate */
  PetscBool         *active;             /* (Q) */
  SolveTrace        *tr;                 /* (Q) */
  InflIHVPSolveInfo *info;               /* (Q) */
  PetscInt           iteration;          /* block iterations done (all running queries are at this iteration) */
  char               key[65];            /* checkpoint key: a hash of the operator, solver and right-hand sides */
} BlockCG;

/* What a checkpoint of the block solve (and of the Lanczos run of its deflation) must agree on: the curvature, labels,
 * damping, solver options, preconditioner (the deflation's K and steps after the memory bound) and the right-hand
 * sides (hashed).  The stored vectors are whole (layout-independent): any rank count resumes. */
static PetscErrorCode block_key(InflIHVP ih, PetscInt Q, const double g[], char key[65])
{
  InflHash  h;
  char      desc[512];
  PetscReal rtol, abstol, dtol;
  PetscInt  maxit;
  PC        pc;
  PCType    pct;
  PetscInt  K, steps;
  char      why[640];

  PetscFunctionBegin;
  PetscCall(KSPGetTolerances(ih->ksp, &rtol, &abstol, &dtol, &maxit));
  PetscCall(KSPGetPC(ih->ksp, &pc));
  PetscCall(PCGetType(pc, &pct));
  PetscCall(deflation_plan(ih, &K, &steps, why, sizeof(why))); /* the deflation in use: K and steps after the memory bound */
  PetscCall(PetscSNPrintf(desc, sizeof(desc), "ihvp block cg curvature %s seed %" PRIu64 " rtol %.17g abstol %.17g dtol %.17g max_it %d pc %s pc_damping %.17g deflate %d steps %d Q %d n %d", InflCurvatureNames[ih->curv], ih->seed, (double)rtol, (double)abstol, (double)dtol, (int)maxit, pct ? pct : "", ih->pc_damping, (int)K, (int)steps, (int)Q, (int)ih->n));
  PetscCall(InflHashCreate(&h));
  PetscCall(InflHashUpdate(h, desc, strlen(desc)));
  PetscCall(InflHashUpdate(h, ih->damping, sizeof(double) * (size_t)ih->L));
  PetscCall(InflHashUpdate(h, g, sizeof(double) * (size_t)Q * ih->n));
  PetscCall(InflHashFinal(&h, key));
  PetscFunctionReturn(0);
}

#define BLOCK_STATE 8 /* per query: active, reason, iterations, bnorm, r0, rz, rnorm, zero_rhs */

/* Collective.  Write the state of the block solve to ih->partial (via PARTIAL.tmp and a rename), with the deflation's
 * Ritz pairs (lanczos_write_done). */
static PetscErrorCode block_checkpoint(InflIHVP ih, BlockCG *s)
{
  char        tmp[PETSC_MAX_PATH_LEN + 8];
  hid_t       file;
  double     *st;
  int64_t     dst[2] = {s->Q, BLOCK_STATE};
  Vec        *vecs[3] = {s->X, s->R, s->P};
  const char *names[3] = {"/x", "/r", "/p"};

  PetscFunctionBegin;
  PetscCall(ckpt_create(ih, s->key, tmp, sizeof(tmp), &file));
  PetscCall(InflH5SetAttrInt(file, "/", "iteration", s->iteration));
  PetscCall(PetscMalloc1((size_t)s->Q * BLOCK_STATE, &st));
  for (PetscInt q = 0; q < s->Q; q++) {
    double *e = st + (int64_t)q * BLOCK_STATE;
    e[0] = s->active[q];
    e[1] = s->info[q].reason;
    e[2] = s->info[q].iterations;
    e[3] = s->info[q].bnorm;
    e[4] = s->tr[q].r0;
    e[5] = s->rz[q];
    e[6] = s->info[q].rnorm;
    e[7] = s->info[q].zero_rhs;
  }
  PetscCall(InflH5WriteArray(file, "/state", H5T_NATIVE_DOUBLE, 2, dst, st));
  PetscCall(PetscFree(st));
  for (int k = 0; k < 3; k++) PetscCall(ckpt_write_vecs(ih, file, names[k], s->Q, vecs[k]));
  PetscCall(lanczos_write_done(ih, file));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(ih->comm, tmp, ih->partial));
  PetscFunctionReturn(0);
}

/* Collective.  Resume the block solve from ih->partial if it holds its state (after checking it belongs to this solve;
 * a file with the Lanczos run only has none). */
static PetscErrorCode block_restore(InflIHVP ih, BlockCG *s, PetscBool *restored)
{
  hid_t       file;
  double     *st;
  int64_t     dst[2] = {s->Q, BLOCK_STATE}, it, dims[8];
  int         nd;
  Vec        *vecs[3] = {s->X, s->R, s->P};
  const char *names[3] = {"/x", "/r", "/p"};

  PetscFunctionBegin;
  *restored = PETSC_FALSE;
  if (!ih->partial[0] || !InflFileExists(ih->partial)) PetscFunctionReturn(0);
  PetscCall(ckpt_open(ih, s->key, &file));
  PetscCall(InflH5GetDims(file, "/state", &nd, dims));
  if (nd < 0) { /* the checkpoint of the Lanczos run before the solve */
    PetscCall(InflH5Close(&file));
    PetscFunctionReturn(0);
  }
  PetscCall(InflH5GetAttrInt(file, "/", "iteration", &it));
  PetscCall(InflCheckpointCheckRange(ih->comm, ih->partial, "attribute iteration", it, 0, PETSC_MAX_INT));
  PetscCall(PetscMalloc1((size_t)s->Q * BLOCK_STATE, &st));
  PetscCall(InflH5ReadArray(file, "/state", H5T_NATIVE_DOUBLE, 2, dst, NULL, st));
  PetscCall(InflCheckpointCheckFinite(ih->comm, ih->partial, "/state", s->Q, 0, BLOCK_STATE, st));
  for (int k = 0; k < 3; k++) PetscCall(ckpt_read_vecs(ih, file, names[k], s->Q, vecs[k]));
  PetscCall(InflH5Close(&file));
  s->iteration = (PetscInt)it;
  for (PetscInt q = 0; q < s->Q; q++) {
    const double *e = st + (int64_t)q * BLOCK_STATE;
    s->active[q]          = e[0] != 0 ? PETSC_TRUE : PETSC_FALSE;
    s->info[q].reason     = (KSPConvergedReason)e[1];
    s->info[q].iterations = (PetscInt)e[2];
    s->info[q].bnorm      = e[3];
    s->tr[q].r0           = e[4];
    s->rz[q]              = e[5];
    s->info[q].rnorm      = e[6];
    s->info[q].zero_rhs   = e[7] != 0 ? PETSC_TRUE : PETSC_FALSE;
    s->info[q].converged  = s->info[q].reason > 0 ? PETSC_TRUE : PETSC_FALSE;
  }
  PetscCall(PetscFree(st));
  PetscCall(PetscPrintf(ih->comm, "ihvp: resuming the block solve from %s at iteration %d\n", ih->partial, (int)s->iteration));
  *restored = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* The stopping test of one query after its iteration `it` (PETSc's KSPConvergedDefault with the unpreconditioned
 * norm, x0 = 0, and KSPCG's loss of definiteness): sets reason (0 while running). */
static KSPConvergedReason block_reason(double rnorm, double r0, PetscInt it, PetscReal rtol, PetscReal abstol, PetscReal dtol, PetscInt maxit)
{
  if (!isfinite(rnorm)) return KSP_DIVERGED_NANORINF;
  if (rnorm <= abstol) return KSP_CONVERGED_ATOL;
  if (rnorm <= rtol * r0) return KSP_CONVERGED_RTOL;
  if (it > 0 && rnorm >= dtol * r0) return KSP_DIVERGED_DTOL;
  if (it >= maxit) return KSP_DIVERGED_ITS;
  return KSP_CONVERGED_ITERATING;
}

/* Lockstep preconditioned CG (Hestenes & Stiefel 1952; the recurrence of PETSc's KSPCG with
 * KSP_NORM_UNPRECONDITIONED) for Q right-hand sides B[q]: every query keeps its own alpha and beta, so its iterates
 * are those of its own solve; the products of the running queries are made together (ihvp_apply_block: one pass over
 * the training data per iteration).  A query leaves the block when it converges or fails. */
static PetscErrorCode block_cg(InflIHVP ih, PetscInt Q, Vec Bv[], const int64_t qindex[], const double g[], Vec X[], InflIHVPSolveInfo info[])
{
  BlockCG        s;
  PetscReal      rtol, abstol, dtol;
  PetscInt       maxit, *act, nrun = 0;
  PC             pc;
  PetscBool      restored;
  PetscLogDouble t0, last_ckpt;
  Vec           *Pa, *APa;

  PetscFunctionBegin;
  PetscCall(PetscMemzero(&s, sizeof(s)));
  s.Q    = Q;
  s.X    = X;
  s.info = info;
  PetscCall(KSPGetTolerances(ih->ksp, &rtol, &abstol, &dtol, &maxit));
  ih->nq_hint = Q;
  PetscCall(block_key(ih, Q, g, s.key));
  if (ih->partial[0]) PetscCall(PetscStrncpy(ih->ckey, s.key, sizeof(ih->ckey))); /* the Lanczos run checkpoints too */
  PetscCall(KSPSetUp(ih->ksp));
  ih->ckey[0] = 0;
  PetscCall(KSPGetPC(ih->ksp, &pc));
  PetscCall(VecDuplicateVecs(X[0], Q, &s.R));
  PetscCall(VecDuplicateVecs(X[0], Q, &s.P));
  PetscCall(VecDuplicateVecs(X[0], Q, &s.AP));
  PetscCall(VecDuplicateVecs(X[0], Q, &s.Z));
  PetscCall(PetscCalloc3(Q, &s.rz, Q, &s.active, Q, &s.tr));
  PetscCall(PetscMalloc3(Q, &act, Q, &Pa, Q, &APa));
  PetscCall(block_restore(ih, &s, &restored));
  PetscCall(PetscTime(&t0));
  last_ckpt = t0;
  for (PetscInt q = 0; q < Q; q++) {
    PetscCall(PetscSNPrintf(s.tr[q].what, sizeof(s.tr[q].what), "query %" PRId64, qindex ? qindex[q] : (int64_t)q));
    if (restored) {
      double r0 = s.tr[q].r0;
      PetscCall(trace_start(&s.tr[q], NULL, info[q].bnorm, r0));
      continue;
    }
    PetscCall(PetscMemzero(&info[q], sizeof(info[q])));
    PetscCall(VecNorm(Bv[q], NORM_2, &info[q].bnorm));
    PetscCheck(isfinite(info[q].bnorm), ih->comm, PETSC_ERR_FP, "the right-hand side of %s has non-finite entries (norm %g); the model or the query is broken", s.tr[q].what, info[q].bnorm);
    PetscCall(VecSet(X[q], 0));
    if (info[q].bnorm == 0) {
      info[q].zero_rhs = info[q].converged = PETSC_TRUE;
      info[q].reason   = KSP_CONVERGED_ATOL;
      PetscCall(PetscPrintf(ih->comm, "ihvp: note: %s has a zero gradient; its IHVP is zero (no solve)\n", s.tr[q].what));
      continue;
    }
    PetscCall(VecCopy(Bv[q], s.R[q]));
    info[q].rnorm = info[q].bnorm;
    PetscCall(trace_start(&s.tr[q], NULL, info[q].bnorm, info[q].bnorm));
    PetscCall(trace_step(ih->comm, &s.tr[q], 0, info[q].rnorm, rtol, abstol, maxit, ih->quiet ? HUGE_VAL : ih->progress_interval));
    info[q].reason = block_reason(info[q].rnorm, s.tr[q].r0, 0, rtol, abstol, dtol, maxit);
    if (info[q].reason) continue;
    s.active[q] = PETSC_TRUE;
    PetscCall(PCApply(pc, s.R[q], s.Z[q]));
    PetscCall(VecDot(s.R[q], s.Z[q], &s.rz[q]));
    PetscCall(VecCopy(s.Z[q], s.P[q]));
  }
  if (ih->defl_fresh && ih->partial[0]) { /* keep the Lanczos run of this solve's deflation (passes over the data) */
    PetscCall(block_checkpoint(ih, &s));
    PetscCall(PetscTime(&last_ckpt));
  }
  ih->defl_fresh = PETSC_FALSE;
  for (PetscInt step = 1;; step++) {
    PetscInt       na = 0;
    PetscBool      due, sig;
    PetscLogDouble now;
    for (PetscInt q = 0; q < Q; q++)
      if (s.active[q]) {
        act[na] = q;
        Pa[na]  = s.P[q];
        APa[na] = s.AP[q];
        na++;
      }
    if (!na) break;
    nrun = PetscMax(nrun, na);
    PetscCall(ihvp_apply_block(ih, na, Pa, APa));
    for (PetscInt k = 0; k < na; k++) {
      PetscInt    q = act[k];
      PetscScalar pAp, rznew;
      PetscCall(VecDot(s.P[q], s.AP[q], &pAp));
      info[q].iterations++;
      if (!(pAp > 0)) { /* KSPCG: the operator is not positive definite along p (or the product is not finite) */
        info[q].reason = isfinite(pAp) ? KSP_DIVERGED_INDEFINITE_MAT : KSP_DIVERGED_NANORINF;
        s.active[q]    = PETSC_FALSE;
        continue;
      }
      PetscCall(VecAXPY(X[q], s.rz[q] / pAp, s.P[q]));
      PetscCall(VecAXPY(s.R[q], -s.rz[q] / pAp, s.AP[q]));
      PetscCall(VecNorm(s.R[q], NORM_2, &info[q].rnorm));
      PetscCall(trace_step(ih->comm, &s.tr[q], info[q].iterations, info[q].rnorm, rtol, abstol, maxit, ih->quiet ? HUGE_VAL : ih->progress_interval));
      info[q].reason = block_reason(info[q].rnorm, s.tr[q].r0, info[q].iterations, rtol, abstol, dtol, maxit);
      if (info[q].reason) {
        s.active[q] = PETSC_FALSE;
        continue;
      }
      PetscCall(PCApply(pc, s.R[q], s.Z[q]));
      PetscCall(VecDot(s.R[q], s.Z[q], &rznew));
      PetscCall(VecAYPX(s.P[q], rznew / s.rz[q], s.Z[q]));
      s.rz[q] = rznew;
    }
    s.iteration++;
    /* agree on a checkpoint (rank 0's clock) or a stop (a signal on any rank, or -checkpoint_stop_after) */
    PetscCall(ckpt_agree(ih, last_ckpt, &now, &due, &sig));
    {
      PetscBool more = PETSC_FALSE, stop_after = ih->stop_after > 0 && step >= ih->stop_after ? PETSC_TRUE : PETSC_FALSE;
      for (PetscInt q = 0; q < Q; q++) more = more || s.active[q];
      if (!more) break;
      if (ih->partial[0] && (sig || due || stop_after)) {
        PetscCall(block_checkpoint(ih, &s));
        last_ckpt = now;
      }
      if (sig && ih->partial[0]) PetscCall(InflInterrupted(ih->comm, "ihvp (Krylov solves)", ih->partial));
      if (stop_after && ih->partial[0]) SETERRQ(ih->comm, INFL_ERR_INTERRUPTED, "ihvp (Krylov solves) stopped after iteration %d (-checkpoint_stop_after %d); its progress is saved in %s: run the same command again to resume", (int)s.iteration, (int)ih->stop_after, ih->partial);
    }
  }
  {
    PetscLogDouble t1;
    PetscCall(PetscTime(&t1));
    PetscCall(PetscPrintf(ih->comm, "ihvp: block CG: %d queries, %d iterations (%d products of up to %d directions), %.2f s\n", (int)Q, (int)s.iteration, (int)s.iteration, (int)nrun, t1 - t0));
  }
  for (PetscInt q = 0; q < Q; q++) {
    PetscCall(PetscFree(s.tr[q].logr));
    if (!info[q].zero_rhs) PetscCall(ihvp_check_converged(ih, s.tr[q].what, &info[q]));
  }
  PetscCall(VecDestroyVecs(Q, &s.R));
  PetscCall(VecDestroyVecs(Q, &s.P));
  PetscCall(VecDestroyVecs(Q, &s.AP));
  PetscCall(VecDestroyVecs(Q, &s.Z));
  PetscCall(PetscFree3(s.rz, s.active, s.tr));
  PetscCall(PetscFree3(act, Pa, APa));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSolveGradients(InflIHVP ih, PetscInt Q, const double g[], const int64_t qindex[], double **P, InflIHVPSolveInfo info[])
{
  Vec               *Bv, *X;
  InflIHVPSolveInfo *in;
  KSPType            kt;
  PetscBool          iscg;
  double            *x;

  PetscFunctionBegin;
  PetscCheck(ih->ksp, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPSolveGradients");
  PetscCheck(Q > 0, ih->comm, PETSC_ERR_ARG_OUTOFRANGE, "no queries given; pass -query_indices");
  PetscCall(KSPGetType(ih->ksp, &kt));
  PetscCall(PetscStrcmp(kt, KSPCG, &iscg));
  {
    Vec proto;
    PetscCall(MatCreateVecs(ih->A, &proto, NULL));
    PetscCall(VecDuplicateVecs(proto, Q, &Bv));
    PetscCall(VecDuplicateVecs(proto, Q, &X));
    PetscCall(VecDestroy(&proto));
  }
  ih->nq_hint = Q;
  PetscCall(ihvp_check_mem_limit(ih));
  PetscCall(PetscMalloc2(Q, &in, ih->n, &x));
  for (PetscInt q = 0; q < Q; q++) PetscCall(InflIHVPArrayToVec(ih, g + (int64_t)q * ih->n, Bv[q]));
  if (ih->block && iscg) PetscCall(block_cg(ih, Q, Bv, qindex, g, X, in));
  else
    for (PetscInt q = 0; q < Q; q++) {
      char what[64];
      PetscCall(PetscSNPrintf(what, sizeof(what), "query %" PRId64, qindex ? qindex[q] : (int64_t)q));
      PetscCall(InflIHVPSolve(ih, Bv[q], X[q], what, &in[q]));
    }
  for (PetscInt l = 0; l < ih->L; l++) PetscCall(PetscMalloc1((size_t)Q * (ih->off[l + 1] - ih->off[l]), &P[l]));
  for (PetscInt q = 0; q < Q; q++) {
    PetscCall(InflIHVPVecToArray(ih, X[q], x));
    for (PetscInt l = 0; l < ih->L; l++) InflIHVPSlabToLayer(ih->din[l], ih->dout[l], x + ih->off[l], P[l] + (int64_t)q * (ih->off[l + 1] - ih->off[l]));
    if (info) info[q] = in[q];
  }
  PetscCall(VecDestroyVecs(Q, &Bv));
  PetscCall(VecDestroyVecs(Q, &X));
  PetscCall(PetscFree2(in, x));
  PetscFunctionReturn(0);
}

/* g (B, n) in the IHVP layout = each sequence's gradient sum_t Ds_t a_t^T of every exposed layer, from a capture. */
PetscErrorCode InflIHVPCaptureGradients(InflIHVP ih, const InflCapture *cap, double g[])
{
  double *ba, *bd, *G; /* the capture's rows in double; G (maxd, maxa) */

  PetscFunctionBegin;
  PetscCall(PetscMalloc3((size_t)PetscMax(cap->T, 1) * ih->maxa, &ba, (size_t)PetscMax(cap->T, 1) * ih->maxd, &bd, (size_t)ih->maxa * ih->maxd, &G));
  for (PetscInt l = 0; l < ih->L; l++) {
    PetscInt      nd = ih->dout[l], na = ih->din[l] + 1;
    const double *a, *ds;
    InflCaptureGetDouble(cap, l, ba, bd, &a, &ds);
    for (PetscInt b = 0; b < cap->B; b++) {
      int64_t r0 = cap->offsets[b], nr = cap->offsets[b + 1] - r0;
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, (int)nr, 1, ds + r0 * nd, nd, a + r0 * na, na, 0, G, na);
      InflIHVPLayerToSlab(ih->din[l], nd, G, g + (int64_t)b * ih->n + ih->off[l]);
    }
  }
  PetscCall(PetscFree3(ba, bd, G));
  PetscFunctionReturn(0);
}

/* Fill g (Q, n) through captures of up to ih->chunk queries in double precision; fill(ctx, q0, nq, cap). */
static PetscErrorCode query_gradients(InflIHVP ih, PetscInt Q, PetscErrorCode (*fill)(void *, PetscInt, PetscInt, InflCapture *), void *ctx, double g[])
{
  InflPrecision prec;
  InflCapture  *cap;
  PetscInt      chunk = PetscMin(Q, ih->chunk);

  PetscFunctionBegin;
  PetscCall(InflModelGetPrecision(ih->model, &prec));
  PetscCall(InflModelSetPrecision(ih->model, INFL_PREC_DOUBLE));
  PetscCall(InflCaptureCreate(ih->model, PetscMax(chunk, 1), &cap));
  for (PetscInt q0 = 0; q0 < Q; q0 += chunk) {
    PetscInt nq = PetscMin(chunk, Q - q0);
    InflCallAll(ih->comm, (*fill)(ctx, q0, nq, cap));
    PetscCall(InflIHVPCaptureGradients(ih, cap, g + (int64_t)q0 * ih->n));
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflModelSetPrecision(ih->model, prec));
  PetscFunctionReturn(0);
}

typedef struct {
  InflModel      model;
  InflData       data;
  const int64_t *idx;
  const float   *x;
  const int64_t *y;
  PetscInt       din;
  const int64_t *off;
  const int32_t *tok, *tgt;
} QueryFill;

static PetscErrorCode fill_data(void *ctx, PetscInt q0, PetscInt nq, InflCapture *cap)
{
  QueryFill *f = (QueryFill *)ctx;

  PetscFunctionBegin;
  PetscCall(InflModelCaptureExamples(f->model, f->data, nq, f->idx + q0, INFL_FISHER_EMPIRICAL, 0, cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode fill_rows(void *ctx, PetscInt q0, PetscInt nq, InflCapture *cap)
{
  QueryFill *f = (QueryFill *)ctx;

  PetscFunctionBegin;
  PetscCall(InflModelCapture(f->model, nq, f->x + (int64_t)q0 * f->din, f->y + q0, cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode fill_sequences(void *ctx, PetscInt q0, PetscInt nq, InflCapture *cap)
{
  QueryFill *f = (QueryFill *)ctx;
  int64_t   *boff; /* (nq+1) */

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(nq + 1, &boff));
  for (PetscInt b = 0; b <= nq; b++) boff[b] = f->off[q0 + b] - f->off[q0];
  PetscCall(InflModelCaptureSequences(f->model, nq, boff, f->tok + f->off[q0], f->tgt ? f->tgt + f->off[q0] : NULL, cap));
  PetscCall(PetscFree(boff));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPQueryGradients(InflIHVP ih, InflData query, PetscInt Q, const int64_t qidx[], double g[])
{
  QueryFill f = {.model = ih->model, .data = query, .idx = qidx};

  PetscFunctionBegin;
  PetscCheck(ih->A, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPQueryGradients");
  PetscCall(InflModelCheckData(ih->model, query));
  PetscCall(query_gradients(ih, Q, fill_data, &f, g));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSequenceGradients(InflIHVP ih, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], double g[])
{
  QueryFill f = {.model = ih->model, .off = offsets, .tok = tokens, .tgt = targets};

  PetscFunctionBegin;
  PetscCheck(ih->A, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPSequenceGradients");
  PetscCall(query_gradients(ih, Q, fill_sequences, &f, g));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPSolveQueries(InflIHVP ih, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[], double **P, InflIHVPSolveInfo info[])
{
  double   *g; /* (Q, n) */
  QueryFill f = {.model = ih->model, .x = xq, .y = yq};

  PetscFunctionBegin;
  PetscCheck(ih->ksp, ih->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflIHVPSetUp before InflIHVPSolveQueries");
  PetscCall(InflModelGetSizes(ih->model, &f.din, NULL));
  PetscCall(PetscMalloc1((size_t)Q * ih->n, &g));
  PetscCall(query_gradients(ih, Q, fill_rows, &f, g));
  PetscCall(InflIHVPSolveGradients(ih, Q, g, qindex, P, info));
  PetscCall(PetscFree(g));
  PetscFunctionReturn(0);
}

PetscErrorCode InflIHVPView(InflIHVP ih, PetscViewer viewer)
{
  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(ih->comm, &viewer));
  PetscCall(PetscViewerASCIIPrintf(viewer, "InflIHVP: (%s + damping)^-1 over %d parameters of %d layers, %" PRId64 " training %s, %s, damping", InflCurvatureNames[ih->curv], (int)ih->n, (int)ih->L, ih->N, ih->seq ? "sequences" : "examples", ih->block ? "all queries solved together (lockstep CG)" : "one solve per query"));
  for (PetscInt l = 0; l < PetscMin(ih->L, 8); l++) PetscCall(PetscViewerASCIIPrintf(viewer, " %g", ih->damping[l]));
  PetscCall(PetscViewerASCIIPrintf(viewer, "%s\n", ih->L > 8 ? " ..." : ""));
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

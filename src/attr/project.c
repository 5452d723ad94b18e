/* Random projections of per-sequence gradients from the capture: Kronecker (LoGra) and dense Gaussian / Rademacher
 * (TRAK).  Formulas and the generator's counters: include/infl/project.h. */
#include <infl/project.h>
#include <petscviewer.h>
#include <cblas.h>
#include <math.h>

const char *const InflProjectKinds[] = {"kronecker", "gaussian", "rademacher", "InflProjectKind", "INFL_PROJECT_", NULL};

#define PROJECT_BLOCK_ENTRIES ((int64_t)1 << 21) /* entries of R generated at a time (16 MiB of doubles) */

struct _p_InflProjector {
  MPI_Comm        comm;
  InflProjectKind kind;
  PetscInt        kin_opt, kout_opt, dim_opt, chunk;
  PetscBool       chunk_set;  /* -project_chunk given */
  uint64_t        seed;
  PetscBool       setup;
  PetscInt        L, k;
  int64_t         P;
  PetscInt       *din1, *dout, *kin, *kout; /* (L) */
  int64_t        *koff, *poff;             /* (L+1) offsets of each layer in the output (kronecker) and in g */
  double        **Pin, **Pout;             /* (L) kronecker: (k_in, din+1), (k_out, dout) */
  double         *scratch;                 /* work space, nscratch doubles */
  size_t          nscratch;
  double         *gram;                    /* (2, nt, nt) Gram matrices of a sequence's rows (gradient norms) */
  size_t          ngram;
};

static double entry(InflProjectKind kind, uint64_t seed, uint64_t id, int64_t row, int64_t col, int64_t ncols, double scale)
{
  uint64_t c0 = (uint64_t)row * (uint64_t)ncols + (uint64_t)col, c1 = INFL_STREAM_PROJECTION + 256 * id;
  if (kind == INFL_PROJECT_RADEMACHER) {
    uint32_t x[4];
    InflPhilox(seed, c0, c1, x);
    return (x[0] & 1u) ? -scale : scale;
  }
  return InflNormal(seed, c0, c1) * scale;
}

PetscErrorCode InflProjectorCreate(MPI_Comm comm, InflProjector *p)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(p));
  (*p)->comm     = comm;
  (*p)->kind     = INFL_PROJECT_KRONECKER;
  (*p)->kin_opt  = 16;
  (*p)->kout_opt = 16;
  (*p)->dim_opt  = 1024;
  (*p)->chunk    = 256;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorSetFromOptions(InflProjector p)
{
  PetscInt seed = (PetscInt)p->seed;

  PetscFunctionBegin;
  PetscOptionsBegin(p->comm, NULL, "Gradient projection options", "InflProjector");
  PetscCall(PetscOptionsEnum("-project_kind", "kronecker (LoGra: per-layer P_out DW P_in^T), gaussian or rademacher (TRAK: R g, R (k, P))", "InflProjectorSetKind", InflProjectKinds, (PetscEnum)p->kind, (PetscEnum *)&p->kind, NULL));
  PetscCall(PetscOptionsInt("-project_in", "kronecker: rows of each layer's P_in (capped at din+1)", "InflProjectorSetSizes", p->kin_opt, &p->kin_opt, NULL));
  PetscCall(PetscOptionsInt("-project_out", "kronecker: rows of each layer's P_out (capped at dout)", "InflProjectorSetSizes", p->kout_opt, &p->kout_opt, NULL));
  PetscCall(PetscOptionsInt("-project_dim", "gaussian, rademacher: projected dimension k", "InflProjectorSetSizes", p->dim_opt, &p->dim_opt, NULL));
  PetscCall(PetscOptionsInt("-project_seed", "seed of the projection matrices (Philox key)", "InflProjectorSetSeed", seed, &seed, NULL));
  PetscCall(PetscOptionsInt("-project_chunk", "sequences (examples) projected per chunk of a store build (default 256; sequences: as many as fit in 8192 tokens, fewer for a vocabulary above 256)", "InflStoreBuild", p->chunk, &p->chunk, &p->chunk_set));
  PetscOptionsEnd();
  PetscCheck(p->kin_opt > 0, p->comm, PETSC_ERR_ARG_OUTOFRANGE, "-project_in %d must be positive (rows of each layer's input projection; 16 to 64 are usual)", (int)p->kin_opt);
  PetscCheck(p->kout_opt > 0, p->comm, PETSC_ERR_ARG_OUTOFRANGE, "-project_out %d must be positive (rows of each layer's output projection; 16 to 64 are usual)", (int)p->kout_opt);
  PetscCheck(p->dim_opt > 0, p->comm, PETSC_ERR_ARG_OUTOFRANGE, "-project_dim %d must be positive (the projected dimension of -project_kind gaussian or rademacher)", (int)p->dim_opt);
  PetscCheck(seed >= 0, p->comm, PETSC_ERR_ARG_OUTOFRANGE, "-project_seed %d must be >= 0", (int)seed);
  PetscCheck(p->chunk > 0, p->comm, PETSC_ERR_ARG_OUTOFRANGE, "-project_chunk %d must be positive", (int)p->chunk);
  p->seed = (uint64_t)seed;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorSetKind(InflProjector p, InflProjectKind kind)
{
  PetscFunctionBegin;
  PetscCheck(kind >= INFL_PROJECT_KRONECKER && kind <= INFL_PROJECT_RADEMACHER, p->comm, PETSC_ERR_ARG_OUTOFRANGE, "unknown projection kind %d", (int)kind);
  p->kind  = kind;
  p->setup = PETSC_FALSE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorSetSizes(InflProjector p, PetscInt k_in, PetscInt k_out, PetscInt dim)
{
  PetscFunctionBegin;
  if (k_in > 0) p->kin_opt = k_in;
  if (k_out > 0) p->kout_opt = k_out;
  if (dim > 0) p->dim_opt = dim;
  p->setup = PETSC_FALSE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorSetSeed(InflProjector p, uint64_t seed)
{
  PetscFunctionBegin;
  p->seed  = seed;
  p->setup = PETSC_FALSE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetKind(InflProjector p, InflProjectKind *kind)
{
  PetscFunctionBegin;
  *kind = p->kind;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetSeed(InflProjector p, uint64_t *seed)
{
  PetscFunctionBegin;
  *seed = p->seed;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetChunk(InflProjector p, PetscInt *chunk, PetscBool *given)
{
  PetscFunctionBegin;
  *chunk = p->chunk;
  if (given) *given = p->chunk_set;
  PetscFunctionReturn(0);
}

static PetscErrorCode projector_free_layers(InflProjector p)
{
  PetscFunctionBegin;
  for (PetscInt l = 0; l < p->L; l++) {
    PetscCall(PetscFree(p->Pin[l]));
    PetscCall(PetscFree(p->Pout[l]));
  }
  PetscCall(PetscFree4(p->din1, p->dout, p->kin, p->kout));
  PetscCall(PetscFree4(p->koff, p->poff, p->Pin, p->Pout));
  p->L     = 0;
  p->setup = PETSC_FALSE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorSetUp(InflProjector p, InflModel model)
{
  PetscInt    L;
  InflLinear *lin;

  PetscFunctionBegin;
  PetscCall(projector_free_layers(p));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCheck(L > 0, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "the model has no captured linear layers to project");
  p->L = L;
  PetscCall(PetscCalloc4(L, &p->din1, L, &p->dout, L, &p->kin, L, &p->kout));
  PetscCall(PetscCalloc4(L + 1, &p->koff, L + 1, &p->poff, L, &p->Pin, L, &p->Pout));
  for (PetscInt l = 0; l < L; l++) {
    p->din1[l]    = lin[l].din + 1;
    p->dout[l]    = lin[l].dout;
    p->poff[l + 1] = p->poff[l] + (int64_t)p->dout[l] * p->din1[l];
    if (p->kind == INFL_PROJECT_KRONECKER) {
      p->kin[l]      = PetscMin(p->kin_opt, p->din1[l]);
      p->kout[l]     = PetscMin(p->kout_opt, p->dout[l]);
      p->koff[l + 1] = p->koff[l] + (int64_t)p->kin[l] * p->kout[l];
    }
  }
  p->P = p->poff[L];
  if (p->kind == INFL_PROJECT_KRONECKER) {
    PetscCheck(p->koff[L] <= PETSC_MAX_INT, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-project_in %d and -project_out %d give %" PRId64 " projected dimensions, more than a 32-bit index holds; use smaller ones", (int)p->kin_opt, (int)p->kout_opt, p->koff[L]);
    p->k = (PetscInt)p->koff[L];
    for (PetscInt l = 0; l < L; l++) {
      double si = 1.0 / sqrt((double)p->kin[l]), so = 1.0 / sqrt((double)p->kout[l]);
      PetscCall(PetscMalloc1((size_t)p->kin[l] * p->din1[l], &p->Pin[l]));
      PetscCall(PetscMalloc1((size_t)p->kout[l] * p->dout[l], &p->Pout[l]));
      for (PetscInt i = 0; i < p->kin[l]; i++)
        for (PetscInt j = 0; j < p->din1[l]; j++) p->Pin[l][(int64_t)i * p->din1[l] + j] = entry(INFL_PROJECT_GAUSSIAN, p->seed, 2 * (uint64_t)l + 1, i, j, p->din1[l], si);
      for (PetscInt i = 0; i < p->kout[l]; i++)
        for (PetscInt j = 0; j < p->dout[l]; j++) p->Pout[l][(int64_t)i * p->dout[l] + j] = entry(INFL_PROJECT_GAUSSIAN, p->seed, 2 * (uint64_t)l + 2, i, j, p->dout[l], so);
    }
  } else {
    PetscCheck(p->dim_opt <= p->P, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "-project_dim %d is larger than the %" PRId64 " parameters of the captured layers; choose at most that (a projection adds no information beyond the gradient itself)", (int)p->dim_opt, p->P);
    p->k = p->dim_opt;
  }
  p->setup = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetSizes(InflProjector p, PetscInt *k, int64_t *P)
{
  PetscFunctionBegin;
  PetscCheck(p->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "call InflProjectorSetUp first");
  if (k) *k = p->k;
  if (P) *P = p->P;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetLayers(InflProjector p, PetscInt *L, const PetscInt **din1, const PetscInt **dout, const PetscInt **k_in, const PetscInt **k_out)
{
  PetscFunctionBegin;
  PetscCheck(p->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "call InflProjectorSetUp first");
  if (L) *L = p->L;
  if (din1) *din1 = p->din1;
  if (dout) *dout = p->dout;
  if (k_in) *k_in = p->kin;
  if (k_out) *k_out = p->kout;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetKronecker(InflProjector p, PetscInt l, const double **P_in, const double **P_out)
{
  PetscFunctionBegin;
  PetscCheck(p->setup && p->kind == INFL_PROJECT_KRONECKER, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "InflProjectorGetKronecker needs a set-up projector of kind kronecker");
  PetscCheck(l >= 0 && l < p->L, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "layer %d outside [0, %d)", (int)l, (int)p->L);
  *P_in  = p->Pin[l];
  *P_out = p->Pout[l];
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetRowNorms(InflProjector p, double rn[])
{
  PetscFunctionBegin;
  PetscCheck(p->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "call InflProjectorSetUp first");
  if (p->kind == INFL_PROJECT_KRONECKER) {
    for (PetscInt l = 0; l < p->L; l++)
      for (PetscInt i = 0; i < p->kout[l]; i++) {
        double no = 0;
        for (PetscInt c = 0; c < p->dout[l]; c++) no += p->Pout[l][(int64_t)i * p->dout[l] + c] * p->Pout[l][(int64_t)i * p->dout[l] + c];
        for (PetscInt j = 0; j < p->kin[l]; j++) {
          double ni = 0;
          for (PetscInt c = 0; c < p->din1[l]; c++) ni += p->Pin[l][(int64_t)j * p->din1[l] + c] * p->Pin[l][(int64_t)j * p->din1[l] + c];
          rn[p->koff[l] + (int64_t)i * p->kin[l] + j] = sqrt(no * ni);
        }
      }
  } else {
    double r = sqrt((double)p->P / p->k);
    if (p->kind == INFL_PROJECT_GAUSSIAN) r *= 1 + 6 * sqrt(2.0 / (double)p->P);
    for (PetscInt i = 0; i < p->k; i++) rn[i] = r;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorGetKey(InflProjector p, char key[], size_t len)
{
  PetscFunctionBegin;
  if (p->kind == INFL_PROJECT_KRONECKER) PetscCall(PetscSNPrintf(key, len, "kind kronecker seed %llu in %d out %d", (unsigned long long)p->seed, (int)p->kin_opt, (int)p->kout_opt));
  else PetscCall(PetscSNPrintf(key, len, "kind %s seed %llu dim %d", InflProjectKinds[p->kind], (unsigned long long)p->seed, (int)p->dim_opt));
  PetscFunctionReturn(0);
}

static PetscErrorCode projector_scratch(InflProjector p, size_t n, double **w)
{
  PetscFunctionBegin;
  if (n > p->nscratch) {
    PetscCall(PetscFree(p->scratch));
    PetscCall(PetscMalloc1(n, &p->scratch));
    p->nscratch = n;
  }
  *w = p->scratch;
  PetscFunctionReturn(0);
}

/* Scratch of two (nt, nt) Gram matrices for the gradient norm of a sequence of nt rows (separate from the projection
 * scratch, which holds the rows converted to double while the norms are formed). */
static PetscErrorCode projector_gram_scratch(InflProjector p, int64_t nt, double **G)
{
  PetscFunctionBegin;
  if ((size_t)(2 * nt * nt) > p->ngram) {
    PetscCall(PetscFree(p->gram));
    PetscCall(PetscMalloc1((size_t)(2 * nt * nt), &p->gram));
    p->ngram = (size_t)(2 * nt * nt);
  }
  *G = p->gram;
  PetscFunctionReturn(0);
}

/* Rows of layer l's DW per block of the dense kinds: as many as keep the block of R (k, rows (din+1)) near
 * PROJECT_BLOCK_ENTRIES, at least one. */
static PetscInt dense_block_rows(InflProjector p, PetscInt l)
{
  int64_t r = PROJECT_BLOCK_ENTRIES / ((int64_t)p->k * p->din1[l]);
  return (PetscInt)PetscMax(1, PetscMin(r, (int64_t)p->dout[l]));
}

/* R block (nr, nc) of the dense kinds: rows [r0, r0 + nr) and columns [c0, c0 + nc) of R (k, P). */
static void dense_block(InflProjector p, PetscInt r0, PetscInt nr, int64_t c0, int64_t nc, double R[])
{
  double scale = 1.0 / sqrt((double)p->k);
  for (PetscInt i = 0; i < nr; i++)
    for (int64_t j = 0; j < nc; j++) R[(int64_t)i * nc + j] = entry(p->kind, p->seed, 0, r0 + i, c0 + j, p->P, scale);
}

/* out (B, nr): the columns [r0, r0 + nr) of the projections (the dense kinds generate only those rows of R; the
 * Kronecker kind needs nr = k); gnorm (B) or NULL. */
static PetscErrorCode project_capture(InflProjector p, const InflCapture *cap, PetscInt r0, PetscInt nr, double out[], double gnorm[])
{
  PetscInt B = cap->B, T = cap->T, k;

  PetscFunctionBegin;
  PetscCheck(cap->L == p->L, PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP, "the capture has %d layers, the projector was set up for %d: set it up with the model that made the capture", (int)cap->L, (int)p->L);
  for (PetscInt l = 0; l < p->L; l++) PetscCheck(cap->din[l] + 1 == p->din1[l] && cap->dout[l] == p->dout[l], PETSC_COMM_SELF, PETSC_ERR_ARG_INCOMP, "layer %d of the capture is (din %d, dout %d), the projector's (din %d, dout %d): set it up with the model that made the capture", (int)l, (int)cap->din[l], (int)cap->dout[l], (int)p->din1[l] - 1, (int)p->dout[l]);
  k = p->k;
  PetscAssert(p->kind != INFL_PROJECT_KRONECKER || (r0 == 0 && nr == k), PETSC_COMM_SELF, PETSC_ERR_PLIB, "Kronecker projections are formed whole");
  PetscCall(PetscArrayzero(out, (size_t)B * nr));
  if (gnorm) PetscCall(PetscArrayzero(gnorm, B));
  if (B == 0) PetscFunctionReturn(0);
  for (PetscInt l = 0; l < p->L; l++) {
    PetscInt      na = p->din1[l], nd = p->dout[l];
    const double *a, *ds;
    double       *w, *buf_a, *buf_ds;
    size_t        nconv = cap->prec == INFL_PREC_DOUBLE ? 0 : (size_t)T * (na + nd);
    size_t        nwork;

    if (p->kind == INFL_PROJECT_KRONECKER) nwork = (size_t)T * (p->kin[l] + p->kout[l]);
    else nwork = (size_t)dense_block_rows(p, l) * na * ((size_t)nr + B);
    PetscCall(projector_scratch(p, nconv + nwork, &w));
    buf_a  = w;
    buf_ds = w + (size_t)T * na;
    InflCaptureGetDouble(cap, l, buf_a, buf_ds, &a, &ds);
    w += nconv;
    if (gnorm) /* ||DW||_F^2 = sum_tu (a_t . a_u)(Ds_t . Ds_u): the rows' Gram matrices by DSYRK (upper triangles) */
      for (PetscInt b = 0; b < B; b++) {
        int64_t o = cap->offsets[b], nt = cap->offsets[b + 1] - o;
        double  s = 0, *Ga = NULL, *Gd;
        if (nt == 0) continue;
        PetscCall(projector_gram_scratch(p, nt, &Ga));
        Gd = Ga + nt * nt;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)nt, na, 1.0, a + o * na, na, 0.0, Ga, (int)nt);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)nt, nd, 1.0, ds + o * nd, nd, 0.0, Gd, (int)nt);
        for (int64_t t = 0; t < nt; t++) {
          s += Ga[t * nt + t] * Gd[t * nt + t];
          for (int64_t u = t + 1; u < nt; u++) s += 2 * Ga[t * nt + u] * Gd[t * nt + u];
        }
        gnorm[b] += s;
      }
    if (p->kind == INFL_PROJECT_KRONECKER) {
      PetscInt ki = p->kin[l], ko = p->kout[l];
      double  *X = w, *Y = w + (size_t)T * ki; /* X (T, k_in) = a P_in^T, Y (T, k_out) = Ds P_out^T */
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, ki, na, 1.0, a, na, p->Pin[l], na, 0.0, X, ki);
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, ko, nd, 1.0, ds, nd, p->Pout[l], nd, 0.0, Y, ko);
      for (PetscInt b = 0; b < B; b++) {
        int64_t o = cap->offsets[b], nt = cap->offsets[b + 1] - o;
        double *ob = out + (int64_t)b * k + p->koff[l]; /* (k_out, k_in) block of sequence b */
        if (nt == 1) {
          for (PetscInt i = 0; i < ko; i++)
            for (PetscInt j = 0; j < ki; j++) ob[(int64_t)i * ki + j] = Y[o * ko + i] * X[o * ki + j];
        } else if (nt > 1) cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ko, ki, (int)nt, 1.0, Y + o * ko, ko, X + o * ki, ki, 0.0, ob, ki);
      }
    } else {
      PetscInt rows = dense_block_rows(p, l);
      for (PetscInt i0 = 0; i0 < nd; i0 += rows) {
        PetscInt ni = PetscMin(rows, nd - i0);
        int64_t  nc = (int64_t)ni * na;
        double  *R = w, *G = w + (size_t)nr * nc; /* R (nr, nc) block of R; G (B, nc) the sequences' DW rows [i0, i0+ni) */
        dense_block(p, r0, nr, p->poff[l] + (int64_t)i0 * na, nc, R);
        for (PetscInt b = 0; b < B; b++) {
          int64_t o = cap->offsets[b], nt = cap->offsets[b + 1] - o;
          double *gb = G + (int64_t)b * nc;
          if (nt == 1) {
            for (PetscInt i = 0; i < ni; i++)
              for (PetscInt j = 0; j < na; j++) gb[(int64_t)i * na + j] = ds[o * nd + i0 + i] * a[o * na + j];
          } else if (nt > 1) cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, na, (int)nt, 1.0, ds + o * nd + i0, nd, a + o * na, na, 0.0, gb, na);
          else PetscCall(PetscArrayzero(gb, nc));
        }
        if (nr > 0) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, nr, (int)nc, 1.0, G, (int)nc, R, (int)nc, 1.0, out, nr);
      }
    }
  }
  if (gnorm)
    for (PetscInt b = 0; b < B; b++) gnorm[b] = sqrt(PetscMax(gnorm[b], 0.0));
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorProjectCapture(InflProjector p, const InflCapture *cap, double out[], double gnorm[])
{
  PetscFunctionBegin;
  PetscCheck(p->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "call InflProjectorSetUp before InflProjectorProjectCapture");
  PetscCall(project_capture(p, cap, 0, p->k, out, gnorm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorProjectCaptureRows(InflProjector p, const InflCapture *cap, PetscInt r0, PetscInt nr, double out[])
{
  PetscFunctionBegin;
  PetscCheck(p->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "call InflProjectorSetUp before InflProjectorProjectCaptureRows");
  PetscCheck(r0 >= 0 && nr >= 0 && r0 + nr <= p->k, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "rows [%d, %d) of a projection to %d dimensions", (int)r0, (int)(r0 + nr), (int)p->k);
  if (p->kind == INFL_PROJECT_KRONECKER && nr < p->k) { /* formed whole (cheap), then cut */
    double *all;
    PetscCall(PetscMalloc1((size_t)PetscMax(cap->B, 1) * p->k, &all));
    PetscCall(project_capture(p, cap, 0, p->k, all, NULL));
    for (PetscInt b = 0; b < cap->B; b++) PetscCall(PetscArraycpy(out + (int64_t)b * nr, all + (int64_t)b * p->k + r0, nr));
    PetscCall(PetscFree(all));
  } else PetscCall(project_capture(p, cap, r0, nr, out, NULL));
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorProjectGradients(InflProjector p, PetscInt n, const double g[], double out[])
{
  PetscInt k;

  PetscFunctionBegin;
  PetscCheck(p->setup, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "call InflProjectorSetUp before InflProjectorProjectGradients");
  k = p->k;
  PetscCall(PetscArrayzero(out, (size_t)n * k));
  for (PetscInt l = 0; l < p->L; l++) {
    PetscInt na = p->din1[l], nd = p->dout[l];
    double  *w;
    if (p->kind == INFL_PROJECT_KRONECKER) {
      PetscInt ki = p->kin[l], ko = p->kout[l];
      PetscCall(projector_scratch(p, (size_t)nd * ki, &w)); /* DW P_in^T (dout, k_in) */
      for (PetscInt m = 0; m < n; m++) {
        const double *DW = g + (int64_t)m * p->P + p->poff[l];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, ki, na, 1.0, DW, na, p->Pin[l], na, 0.0, w, ki);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ko, ki, nd, 1.0, p->Pout[l], nd, w, ki, 0.0, out + (int64_t)m * k + p->koff[l], ki);
      }
    } else {
      PetscInt rows = dense_block_rows(p, l);
      PetscCall(projector_scratch(p, (size_t)k * rows * na, &w));
      for (PetscInt i0 = 0; i0 < nd; i0 += rows) {
        int64_t nc = (int64_t)PetscMin(rows, nd - i0) * na, c0 = p->poff[l] + (int64_t)i0 * na;
        dense_block(p, 0, k, c0, nc, w);
        if (n > 0) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, k, (int)nc, 1.0, g + c0, (int)p->P, w, (int)nc, 1.0, out, k);
      }
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorView(InflProjector p, PetscViewer viewer)
{
  PetscFunctionBegin;
  if (!viewer) viewer = PETSC_VIEWER_STDOUT_(p->comm);
  if (!p->setup) {
    PetscCall(PetscViewerASCIIPrintf(viewer, "projector %s (not set up)\n", InflProjectKinds[p->kind]));
    PetscFunctionReturn(0);
  }
  PetscCall(PetscViewerASCIIPrintf(viewer, "projector %s, seed %llu: %" PRId64 " gradient entries -> %d\n", InflProjectKinds[p->kind], (unsigned long long)p->seed, p->P, (int)p->k));
  if (p->kind == INFL_PROJECT_KRONECKER)
    for (PetscInt l = 0; l < p->L; l++) PetscCall(PetscViewerASCIIPrintf(viewer, "  layer %d: (dout %d, din+1 %d) -> (k_out %d, k_in %d)\n", (int)l, (int)p->dout[l], (int)p->din1[l], (int)p->kout[l], (int)p->kin[l]));
  PetscFunctionReturn(0);
}

PetscErrorCode InflProjectorDestroy(InflProjector *p)
{
  PetscFunctionBegin;
  if (!*p) PetscFunctionReturn(0);
  PetscCall(projector_free_layers(*p));
  PetscCall(PetscFree((*p)->scratch));
  PetscCall(PetscFree((*p)->gram));
  PetscCall(PetscFree(*p));
  PetscFunctionReturn(0);
}

/* Gradient projections and the gradient store (include/infl/project.h, include/infl/store.h), at 1-4 ranks.
 *   - MLP (mlp_small, double precision): projections of 64 training examples and 4 queries against the independent
 *     numpy implementation (tests/ref/make_project_reference.py -> mlp_small_project.h5) for kronecker, gaussian and
 *     rademacher; the Kronecker projection equals P_out DW P_in^T formed here with matrices generated from the
 *     documented counters and DW from InflModelPerExampleGradients; the dense kinds equal R g with R formed here;
 *     gradient norms against numpy.
 *   - Linearity: a sequence of several rows projects to the sum of its rows' projections; projections of a linear
 *     combination of gradients are the combination of projections.
 *   - Inner products (JL): for 8 random unit vectors, every <Ru, Rv> is within the Johnson-Lindenstrauss deviation
 *     e of <u, v> (Dasgupta & Gupta 2003; Achlioptas 2003 for +-1 entries), e solving
 *     2 m exp(-k (e^2/2 - e^3/3) / 2) = 1e-6 for the m = n (n+1) vectors whose norms the polarization identity uses.
 *   - The store built at this rank count with chunks of 5 equals the numpy projections up to float32 storage; its
 *     /gram equals G^T G of its rows; store-based identity scores equal projected dot products computed here and
 *     numpy's; Fisher scores equal numpy's solve on the same store within its conditioning (from /gram, and for the
 *     gaussian store, built without it, from the extra pass over the store), with ScaLAPACK blocks of 64 and of 5 (k
 *     not a multiple: partial last blocks) and G^T G summed in panels of 7 rows (several passes); top-k lists agree;
 *     each rank reads from /gram only the rows at its block columns, on a one-row grid (2, 3 ranks) exactly the block of
 *     the projected Fisher it holds (InflH5GetBytesRead).
 *   - TracIn over two stores (weights 0.5, 2) equals the weighted sum of their scores; its self-influence equals
 *     sum eta ||g||^2 with numpy's gradient norms; several stores under the Fisher curvature are refused, and so is a
 *     damped projected Fisher that is not positive definite (pdpotrf info > 0, the same error on every rank).
 *   - GPT-2 (gpt2_tiny, sequences of many tokens, double): projections of the capture equal the explicit projection
 *     of DW = sum_t Ds_t a_t^T formed here, and the store built with chunks of one sequence holds them. */
static const char help[] = "Gradient projections and the gradient store against references.\n";

#include <infl/eigen.h>
#include <infl/store.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "lib/infl_test.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"
#define NTRAIN 64
#define NQUERY 4
#define SEED   7

/* The documented entry of matrix `id` (rows, cols): c0 = i cols + j, c1 = 4 + 256 id, scaled 1/sqrt(rows). */
static double ref_entry(int rademacher, uint64_t id, int64_t i, int64_t j, int64_t rows, int64_t cols)
{
  uint64_t c0 = (uint64_t)(i * cols + j), c1 = 4 + 256 * id;
  if (rademacher) {
    uint32_t x[4];
    InflPhilox(SEED, c0, c1, x);
    return ((x[0] & 1u) ? -1.0 : 1.0) / sqrt((double)rows);
  }
  return InflNormal(SEED, c0, c1) / sqrt((double)rows);
}

/* max over rows of max |x - r| / ||r_row||. */
static double row_err(int64_t n, int64_t k, const double x[], const double r[])
{
  double e = 0;
  for (int64_t i = 0; i < n; i++) {
    double nr = 0, d = 0;
    for (int64_t j = 0; j < k; j++) {
      nr += r[i * k + j] * r[i * k + j];
      d = PetscMax(d, fabs(x[i * k + j] - r[i * k + j]));
    }
    e = PetscMax(e, nr > 0 ? d / sqrt(nr) : d);
  }
  return e;
}

static PetscErrorCode make_projector(InflModel model, InflProjectKind kind, PetscInt kin, PetscInt kout, PetscInt dim, InflProjector *p)
{
  PetscFunctionBegin;
  PetscCall(InflProjectorCreate(PETSC_COMM_WORLD, p));
  PetscCall(InflProjectorSetFromOptions(*p));
  PetscCall(InflProjectorSetKind(*p, kind));
  PetscCall(InflProjectorSetSizes(*p, kin, kout, dim));
  PetscCall(InflProjectorSetSeed(*p, SEED));
  PetscCall(InflProjectorSetUp(*p, model));
  PetscFunctionReturn(0);
}

/* Explicit projection of flat gradients g (n, P) in the capture layout, with matrices formed here. */
static PetscErrorCode explicit_projection(InflProjector p, PetscInt n, const double g[], double out[])
{
  InflProjectKind kind;
  PetscInt        L, k;
  int64_t         P;
  const PetscInt *din1, *dout, *kin, *kout;

  PetscFunctionBegin;
  PetscCall(InflProjectorGetKind(p, &kind));
  PetscCall(InflProjectorGetSizes(p, &k, &P));
  PetscCall(InflProjectorGetLayers(p, &L, &din1, &dout, &kin, &kout));
  PetscCall(PetscArrayzero(out, (size_t)n * k));
  if (kind == INFL_PROJECT_KRONECKER) {
    int64_t ko = 0, po = 0;
    for (PetscInt l = 0; l < L; l++) {
      for (PetscInt m = 0; m < n; m++)
        for (PetscInt i = 0; i < kout[l]; i++)
          for (PetscInt j = 0; j < kin[l]; j++) {
            double s = 0;
            for (PetscInt r = 0; r < dout[l]; r++) {
              double t = 0;
              for (PetscInt c = 0; c < din1[l]; c++) t += g[m * P + po + (int64_t)r * din1[l] + c] * ref_entry(0, 2 * l + 1, j, c, kin[l], din1[l]);
              s += ref_entry(0, 2 * l + 2, i, r, kout[l], dout[l]) * t;
            }
            out[(int64_t)m * k + ko + (int64_t)i * kin[l] + j] = s;
          }
      ko += (int64_t)kin[l] * kout[l];
      po += (int64_t)din1[l] * dout[l];
    }
  } else {
    double *row;
    PetscCall(PetscMalloc1(P, &row));
    for (PetscInt i = 0; i < k; i++) {
      for (int64_t c = 0; c < P; c++) row[c] = ref_entry(kind == INFL_PROJECT_RADEMACHER, 0, i, c, k, P);
      for (PetscInt m = 0; m < n; m++) {
        double s = 0;
        for (int64_t c = 0; c < P; c++) s += row[c] * g[m * P + c];
        out[(int64_t)m * k + i] = s;
      }
    }
    PetscCall(PetscFree(row));
  }
  PetscFunctionReturn(0);
}

/* Flat gradients in the capture layout (per layer DW (dout, din+1)) of a capture's sequences, formed with loops. */
static PetscErrorCode capture_gradients(const InflCapture *cap, int64_t P, double g[])
{
  PetscFunctionBegin;
  PetscCall(PetscArrayzero(g, (size_t)cap->B * P));
  for (PetscInt b = 0; b < cap->B; b++) {
    int64_t po = 0;
    for (PetscInt l = 0; l < cap->L; l++) {
      PetscInt na = cap->din[l] + 1, nd = cap->dout[l];
      for (int64_t t = cap->offsets[b]; t < cap->offsets[b + 1]; t++)
        for (PetscInt i = 0; i < nd; i++)
          for (PetscInt j = 0; j < na; j++) g[b * P + po + (int64_t)i * na + j] += cap->ds64[l][t * nd + i] * cap->a64[l][t * na + j];
      po += (int64_t)nd * na;
    }
  }
  PetscFunctionReturn(0);
}

/* Read a store's /gradients (N, k) as double on every rank. */
static PetscErrorCode read_store(const char path[], const char name[], int64_t n, double buf[])
{
  PetscFunctionBegin;
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, path, name, n, buf));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_mlp(const char src[], PetscMPIInt size)
{
  char             mpath[PETSC_MAX_PATH_LEN], fix[PETSC_MAX_PATH_LEN], store[PETSC_MAX_PATH_LEN], scores[PETSC_MAX_PATH_LEN];
  InflModel        model;
  InflData         train, query;
  InflCapture     *cap, *qcap;
  float           *x, *xq;
  int64_t          idx[NTRAIN], y[NTRAIN], yq[NQUERY], P;
  double          *gslab, *gcap, *out, *ref, *ex, gn[NTRAIN], gnref[NTRAIN], *G32;
  PetscInt         L, k;
  InflLinear      *lin;
  const char      *kinds[3] = {"kronecker", "gaussian", "rademacher"};
  PetscInt         dims[3][3] = {{8, 8, 0}, {0, 0, 48}, {0, 0, 48}};

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(mpath, sizeof(mpath), "%s/tests/ref/mlp_small.safetensors", src));
  PetscCall(PetscSNPrintf(fix, sizeof(fix), "%s/tests/ref/mlp_small_project.h5", src));
  PetscCall(InflModelCreate(PETSC_COMM_WORLD, &model));
  PetscCall(InflModelLoad(model, mpath));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, "idx:" FMNIST "/train", NTRAIN, &train));
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, "idx:" FMNIST "/t10k", NQUERY, &query));
  for (int i = 0; i < NTRAIN; i++) idx[i] = i;
  P = 0;
  for (PetscInt l = 0; l < L; l++) P += (int64_t)lin[l].dout * (lin[l].din + 1);
  PetscCall(PetscMalloc4(NTRAIN * 784, &x, NQUERY * 784, &xq, (size_t)NTRAIN * P, &gslab, (size_t)NTRAIN * P, &gcap));
  PetscCall(PetscMalloc3((size_t)NTRAIN * 192, &out, (size_t)NTRAIN * 192, &ref, (size_t)NTRAIN * 192, &ex));
  PetscCall(PetscMalloc1((size_t)NTRAIN * 192, &G32));
  PetscCall(InflDataGetExamples(train, NTRAIN, idx, x, y));
  PetscCall(InflDataGetExamples(query, NQUERY, idx, xq, yq));
  PetscCall(InflCaptureCreate(model, NTRAIN, &cap));
  PetscCall(InflCaptureCreate(model, NQUERY, &qcap));
  PetscCall(InflModelCapture(model, NTRAIN, x, y, cap));
  PetscCall(InflModelCapture(model, NQUERY, xq, yq, qcap));
  /* per-example gradients from the model (parameter slab layout: W then b per layer) into the capture layout */
  PetscCall(InflModelPerExampleGradients(model, NTRAIN, x, y, gslab));
  for (PetscInt m = 0; m < NTRAIN; m++) {
    int64_t po = 0;
    for (PetscInt l = 0; l < L; l++) {
      PetscInt na = lin[l].din + 1, nd = lin[l].dout;
      for (PetscInt i = 0; i < nd; i++) {
        for (PetscInt j = 0; j < na - 1; j++) gcap[m * P + po + (int64_t)i * na + j] = gslab[m * P + po + (int64_t)i * (na - 1) + j];
        gcap[m * P + po + (int64_t)i * na + na - 1] = gslab[m * P + po + (int64_t)nd * (na - 1) + i];
      }
      po += (int64_t)nd * na;
    }
  }
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, fix, "/train_norms", NTRAIN, gnref));
  for (int kd = 0; kd < 3; kd++) {
    InflProjector   p;
    InflStoreScorer ss;
    char            name[64];
    double          e, qref[NQUERY * 192], qout[NQUERY * 192];
    hid_t           f;

    PetscCall(make_projector(model, (InflProjectKind)kd, dims[kd][0], dims[kd][1], dims[kd][2], &p));
    PetscCall(InflProjectorGetSizes(p, &k, NULL));
    EXPECT(k == (kd == 0 ? 192 : 48), "%s: k = %d", kinds[kd], (int)k);
    if (kd == 0) /* the factors are the documented matrices */
      for (PetscInt l = 0; l < L; l++) {
        const double *Pin, *Pout;
        PetscCall(InflProjectorGetKronecker(p, l, &Pin, &Pout));
        for (PetscInt i = 0; i < 8; i++)
          for (PetscInt j = 0; j < lin[l].din + 1; j++) EXPECT(fabs(Pin[i * (lin[l].din + 1) + j] - ref_entry(0, 2 * l + 1, i, j, 8, lin[l].din + 1)) <= 1e-15 * fabs(Pin[i * (lin[l].din + 1) + j]), "P_in of layer %d entry (%d, %d)", (int)l, (int)i, (int)j);
      }
    PetscCall(InflProjectorProjectCapture(p, cap, out, gn));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/%s/gradients", kinds[kd]));
    PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, fix, name, (int64_t)NTRAIN * k, ref));
    e = row_err(NTRAIN, k, out, ref);
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: capture projection vs numpy: %.2e (relative to the row norm)\n", kinds[kd], e));
    EXPECT(e < 1e-12, "%s: projection of the capture differs from numpy by %g", kinds[kd], e);
    for (int m = 0; m < NTRAIN; m++) EXPECT(fabs(gn[m] - gnref[m]) <= 1e-12 * gnref[m], "gradient norm of example %d: %g vs numpy %g", m, gn[m], gnref[m]);
    PetscCall(explicit_projection(p, NTRAIN, gcap, ex));
    e = row_err(NTRAIN, k, out, ex);
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: capture projection vs explicit product of InflModelPerExampleGradients: %.2e\n", kinds[kd], e));
    EXPECT(e < 1e-12, "%s: projection differs from the explicit product by %g", kinds[kd], e);
    PetscCall(InflProjectorProjectGradients(p, NTRAIN, gcap, ex));
    e = row_err(NTRAIN, k, ex, out);
    EXPECT(e < 1e-12, "%s: InflProjectorProjectGradients differs from the capture path by %g", kinds[kd], e);
    PetscCall(InflProjectorProjectCapture(p, qcap, qout, NULL));
    PetscCall(PetscSNPrintf(name, sizeof(name), "/%s/queries", kinds[kd]));
    PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, fix, name, (int64_t)NQUERY * k, qref));
    EXPECT(row_err(NQUERY, k, qout, qref) < 1e-12, "%s: query projections differ from numpy", kinds[kd]);

    /* the store at this rank count, chunks of 5 */
    PetscCall(PetscSNPrintf(store, sizeof(store), "test_project_%s_np%d.h5", kinds[kd], (int)size));
    PetscCall(PetscOptionsSetValue(NULL, "-project_chunk", "5"));
    PetscCall(InflProjectorSetFromOptions(p));
    PetscCall(PetscOptionsClearValue(NULL, "-project_chunk"));
    PetscCall(InflStoreBuild(p, model, train, kd != 1 ? PETSC_TRUE : PETSC_FALSE, store, PETSC_TRUE)); /* gaussian: no /gram, so Fisher scoring takes its extra pass */
    PetscCall(read_store(store, "/gradients", (int64_t)NTRAIN * k, G32));
    {
      double used = 0, lo[NTRAIN], gram_err = 0, gmax = 0, *gram;
      for (int64_t i = 0; i < (int64_t)NTRAIN * k; i++) {
        double b = ldexp(fabs(G32[i]) + fabs(ref[i]), -24) + 1e-13 * fabs(ref[i]) + 1e-300;
        used = PetscMax(used, fabs(G32[i] - ref[i]) / b);
      }
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: store at %d ranks (chunks of 5) vs numpy: %.2f of the float32 storage bound\n", kinds[kd], (int)size, used));
      EXPECT(used <= 1, "%s: stored rows differ from numpy beyond float32 storage (%.2f of the bound)", kinds[kd], used);
      PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, store, "/losses", NTRAIN, lo));
      {
        double lref[NTRAIN];
        PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, fix, "/losses", NTRAIN, lref));
        for (int m = 0; m < NTRAIN; m++) EXPECT(fabs(lo[m] - lref[m]) <= 1e-12 * PetscMax(1, lref[m]), "store loss of example %d: %g vs numpy %g", m, lo[m], lref[m]);
      }
      PetscCall(PetscMalloc1((size_t)k * k, &gram));
      if (kd == 1) {
        int     nd;
        int64_t dd[8];
        PetscCall(InflH5Open(PETSC_COMM_WORLD, store, PETSC_FALSE, &f));
        PetscCall(InflH5GetDims(f, "/gram", &nd, dd));
        PetscCall(InflH5Close(&f));
        EXPECT(nd < 0, "a store built without the Gram matrix has /gram");
      } else PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, store, "/gram", (int64_t)k * k, gram));
      for (PetscInt i = 0; i < k && kd != 1; i++)
        for (PetscInt j = 0; j < k; j++) {
          double s = 0;
          for (int m = 0; m < NTRAIN; m++) s += G32[m * k + i] * G32[m * k + j];
          gram_err = PetscMax(gram_err, fabs(s - gram[i * k + j]));
          gmax     = PetscMax(gmax, fabs(s));
        }
      EXPECT(gram_err <= 1e-12 * gmax, "%s: /gram differs from G^T G of the stored rows by %g (max %g)", kinds[kd], gram_err, gmax);
      PetscCall(PetscFree(gram));
      PetscCall(InflH5Open(PETSC_COMM_WORLD, store, PETSC_FALSE, &f));
      {
        int64_t zr = -1;
        PetscCall(InflH5GetAttrInt(f, "/", "zero_rows", &zr));
        EXPECT(zr == 0, "%s: zero_rows %d", kinds[kd], (int)zr);
      }
      PetscCall(InflH5Close(&f));
    }

    /* store-based scores, identity and fisher; fisher again with ScaLAPACK blocks of 5 (k = 192 and 48 are not
     * multiples of 5, so the last block row and column are partial) and, from a store without /gram, panels of 7
     * rows of G^T G (several passes, panels straddling blocks) */
    for (int variant = 0; variant < 3; variant++) {
      int fisher = variant > 0;
      const double *gq, *pq;
      int64_t       start, count;
      const double *loc;
      double        sref[NQUERY * NTRAIN], pqref[NQUERY * 192], kappa = 1, tol, used = 0, used_direct = 0;
      InflTopK     *top, *bottom;

      PetscCall(PetscOptionsSetValue(NULL, "-store_curvature", fisher ? "fisher" : "identity"));
      PetscCall(PetscOptionsSetValue(NULL, "-store_block_size", variant == 2 ? "5" : "64"));
      PetscCall(PetscOptionsSetValue(NULL, "-store_panel_rows", variant == 2 ? "7" : "0"));
      PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1"));
      PetscCall(PetscOptionsSetValue(NULL, "-score_topk", "5"));
      PetscCall(PetscOptionsSetValue(NULL, "-score_chunk", "7"));
      PetscCall(InflStoreScorerCreate(PETSC_COMM_WORLD, &ss));
      PetscCall(InflStoreScorerSetFromOptions(ss));
      {
        size_t b0, b1;
        PetscCall(InflH5GetBytesRead(&b0));
        PetscCall(InflStoreScorerOpen(ss, store, model));
        PetscCall(InflH5GetBytesRead(&b1));
        if (fisher && kd != 1) { /* each rank reads the rows of /gram at its block columns (F is symmetric): on a
                                  * one-row grid exactly the block it holds */
          InflBlacsGrid g;
          int           nb  = (int)PetscMin(variant == 2 ? 5 : 64, k);
          double        v[2] = {(double)(b1 - b0), 0}, all[2];
          PetscCall(InflBlacsGetGrid(PETSC_COMM_WORLD, &g));
          v[1] = (double)sizeof(double) * k * InflBlacsLocalCount(k, nb, g.mycol, g.npcol);
          EXPECT(v[0] == v[1], "%s, blocks of %d on a %d x %d grid: opening the store read %.0f bytes (its /gram is %.0f), but the rows at the columns of the projected Fisher this rank holds are %.0f", kinds[kd], nb, g.nprow, g.npcol, v[0], 8.0 * k * k, v[1]);
          PetscCallMPI(MPI_Allreduce(v, all, 2, MPI_DOUBLE, MPI_SUM, PETSC_COMM_WORLD));
          PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s, blocks of %d on a %d x %d grid: /gram of %.0f bytes read as %.0f bytes over all ranks\n", kinds[kd], nb, g.nprow, g.npcol, 8.0 * k * k, all[0]));
        }
      }
      PetscCall(InflStoreScorerSetQueries(ss, query, NQUERY, idx));
      PetscCall(InflStoreScorerScore(ss));
      PetscCall(InflStoreScorerGetQueries(ss, &gq, &pq));
      EXPECT(row_err(NQUERY, k, gq, qref) < 1e-12, "%s: store scorer's query projections differ from numpy", kinds[kd]);
      { /* the dense kinds' query projection split by rows of R over the ranks equals the whole one on one rank */
        double e = row_err(NQUERY, k, gq, qout);
        int    same = !memcmp(gq, qout, sizeof(double) * NQUERY * k);
        PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: store scorer's query projections (rows of R split over %d ranks) vs whole: %.2e%s\n", kinds[kd], (int)size, e, same ? " (bitwise equal)" : ""));
        EXPECT(e <= 1e-14, "%s: the query projections split over %d ranks differ from the whole one by %g", kinds[kd], (int)size, e);
      }
      PetscCall(PetscSNPrintf(name, sizeof(name), "/%s/scores_%s", kinds[kd], fisher ? "fisher" : "identity"));
      PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, fix, name, NQUERY * NTRAIN, sref));
      if (fisher) {
        PetscCall(PetscSNPrintf(name, sizeof(name), "/%s/queries_fisher", kinds[kd]));
        PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, fix, name, (int64_t)NQUERY * k, pqref));
        PetscCall(InflH5Open(PETSC_COMM_WORLD, fix, PETSC_FALSE, &f));
        PetscCall(PetscSNPrintf(name, sizeof(name), "/%s", kinds[kd]));
        PetscCall(InflH5GetAttrDouble(f, name, "kappa", &kappa));
        PetscCall(InflH5Close(&f));
      } else PetscCall(PetscArraycpy(pqref, qref, (size_t)NQUERY * k));
      /* the stored rows may differ from numpy's float32 rounding by one unit (2^-23 relative), which moves F by at most
       * 2^-22 of its norm and so C^-1 g_q by kappa 2^-22 relative; scores by that times ||C^-1 g_q|| ||g_m|| */
      tol = 4 * kappa * ldexp(1.0, -22);
      PetscCall(InflStoreScorerGetLocalScores(ss, &start, &count, &loc));
      for (PetscInt q = 0; q < NQUERY; q++) {
        double pn = 0;
        for (PetscInt j = 0; j < k; j++) pn += pqref[q * k + j] * pqref[q * k + j];
        pn = sqrt(pn);
        for (int64_t m = start; m < start + count; m++) {
          double gm = 0, direct = 0, s = loc[q * count + (m - start)];
          for (PetscInt j = 0; j < k; j++) {
            gm += G32[m * k + j] * G32[m * k + j];
            direct += pq[q * k + j] * G32[m * k + j];
          }
          gm = sqrt(gm);
          used        = PetscMax(used, fabs(s - sref[q * NTRAIN + m]) / (tol * pn * gm));
          used_direct = PetscMax(used_direct, fabs(s - direct) / (1e-13 * pn * gm));
        }
      }
      {
        double v[2] = {used, used_direct};
        PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, PETSC_COMM_WORLD));
        used = v[0];
        used_direct = v[1];
      }
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s %s%s store scores: vs numpy %.2e of the bound %.2e (kappa %.0f); vs direct dot products %.2e of 1e-13\n", kinds[kd], fisher ? "fisher" : "identity", variant == 2 ? " (blocks of 5, panels of 7)" : "", used, tol, kappa, used_direct));
      EXPECT(used <= 1, "%s %s: store scores differ from numpy beyond the bound (%.2f of it)", kinds[kd], fisher ? "fisher" : "identity", used);
      EXPECT(used_direct <= 1, "%s %s: store scores differ from direct dot products (%.2f of 1e-13)", kinds[kd], fisher ? "fisher" : "identity", used_direct);
      if (fisher) EXPECT(row_err(NQUERY, k, pq, pqref) < tol, "%s: F^-1 g_q differs from numpy's solve", kinds[kd]);
      /* top-k and bottom-k: numpy's score of the entry at place i is within the bound of numpy's i-th best */
      PetscCall(InflStoreScorerGetTopK(ss, &top, &bottom));
      for (int w = 0; w < 2; w++) {
        InflTopK *t = w ? bottom : top;
        for (PetscInt q = 0; q < NQUERY; q++) {
          double sorted[NTRAIN], pn = 0, gmax = 0;
          for (int m = 0; m < NTRAIN; m++) sorted[m] = (w ? 1 : -1) * sref[q * NTRAIN + m];
          PetscCall(PetscSortReal(NTRAIN, sorted));
          for (PetscInt j = 0; j < k; j++) pn += pqref[q * k + j] * pqref[q * k + j];
          for (int m = 0; m < NTRAIN; m++) {
            double gm = 0;
            for (PetscInt j = 0; j < k; j++) gm += G32[m * k + j] * G32[m * k + j];
            gmax = PetscMax(gmax, sqrt(gm));
          }
          EXPECT(t->n[q] == 5, "query %d keeps %d entries, expected 5", (int)q, (int)t->n[q]);
          for (PetscInt i = 0; i < 5; i++) {
            double s = (w ? 1 : -1) * sref[q * NTRAIN + t->index[q * 5 + i]];
            EXPECT(fabs(s - sorted[i]) <= 2 * tol * sqrt(pn) * gmax, "%s %s query %d place %d: train %d scores %g in numpy, numpy's place-%d score is %g", kinds[kd], w ? "bottom-k" : "top-k", (int)q, (int)i, (int)t->index[q * 5 + i], s, (int)i, sorted[i]);
          }
        }
      }
      PetscCall(PetscSNPrintf(scores, sizeof(scores), "test_project_scores_%s_np%d.h5", kinds[kd], (int)size));
      if (variant < 2) PetscCall(InflStoreScorerSave(ss, scores, PETSC_TRUE));
      PetscCall(InflStoreScorerDestroy(&ss));
    }
    PetscCall(InflProjectorDestroy(&p));
  }
  /* TracIn over two "checkpoints" (here one model with two projection seeds, weights 0.5 and 2): the scores of the two
   * stores together are the weighted sum of each store's identity scores; the self-influence is sum eta ||g||^2 with
   * the exact gradient norms, against numpy's norms */
  {
    InflProjector   p2;
    InflStoreScorer ss;
    char            s1[PETSC_MAX_PATH_LEN], s2[PETSC_MAX_PATH_LEN], self[PETSC_MAX_PATH_LEN];
    const char     *paths[2] = {s1, s2};
    double          eta[2] = {0.5, 2.0}, *sc[3], worst = 0, smax = 0, selfv[NTRAIN];
    int64_t         start, count;
    PetscCall(PetscSNPrintf(s1, sizeof(s1), "test_project_kronecker_np%d.h5", (int)size));
    PetscCall(PetscSNPrintf(s2, sizeof(s2), "test_project_kronecker_seed8_np%d.h5", (int)size));
    PetscCall(PetscSNPrintf(self, sizeof(self), "test_project_tracin_self_np%d.h5", (int)size));
    PetscCall(InflProjectorCreate(PETSC_COMM_WORLD, &p2));
    PetscCall(PetscOptionsSetValue(NULL, "-project_chunk", "5"));
    PetscCall(InflProjectorSetFromOptions(p2));
    PetscCall(PetscOptionsClearValue(NULL, "-project_chunk"));
    PetscCall(InflProjectorSetSizes(p2, 8, 8, 0));
    PetscCall(InflProjectorSetSeed(p2, 8));
    PetscCall(InflProjectorSetUp(p2, model));
    PetscCall(InflStoreBuild(p2, model, train, PETSC_FALSE, s2, PETSC_TRUE));
    PetscCall(InflProjectorDestroy(&p2));
    PetscCall(PetscOptionsSetValue(NULL, "-store_curvature", "identity"));
    for (int r = 0; r < 3; r++) {
      const double *loc;
      PetscCall(InflStoreScorerCreate(PETSC_COMM_WORLD, &ss));
      PetscCall(InflStoreScorerSetFromOptions(ss));
      PetscCall(InflStoreScorerOpen(ss, r == 1 ? s2 : s1, model));
      if (r == 2) {
        PetscCall(InflStoreScorerAddStore(ss, s2, model));
        PetscCall(InflStoreScorerSetWeights(ss, 2, eta));
      }
      PetscCall(InflStoreScorerSetQueries(ss, query, NQUERY, idx));
      PetscCall(InflStoreScorerScore(ss));
      PetscCall(InflStoreScorerGetLocalScores(ss, &start, &count, &loc));
      PetscCall(PetscMalloc1((size_t)NQUERY * PetscMax(count, 1), &sc[r]));
      PetscCall(PetscArraycpy(sc[r], loc, (size_t)NQUERY * count));
      PetscCall(InflStoreScorerDestroy(&ss));
    }
    for (int64_t i = 0; i < NQUERY * count; i++) {
      double want = eta[0] * sc[0][i] + eta[1] * sc[1][i];
      worst = PetscMax(worst, fabs(sc[2][i] - want));
      smax  = PetscMax(smax, fabs(eta[0] * sc[0][i]) + fabs(eta[1] * sc[1][i]));
    }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, PETSC_COMM_WORLD));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &smax, 1, MPI_DOUBLE, MPI_MAX, PETSC_COMM_WORLD));
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "tracin: two stores with weights 0.5, 2 vs the weighted sum of their identity scores: %.2e of the largest\n", worst / smax));
    EXPECT(worst <= 1e-13 * smax, "TracIn scores differ from the weighted sum of the stores' scores by %g (largest %g)", worst, smax);
    for (int r = 0; r < 3; r++) PetscCall(PetscFree(sc[r]));
    PetscCall(InflStoreTracInSelf(PETSC_COMM_WORLD, 2, paths, eta, self, PETSC_TRUE));
    PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, self, "/self_influence", NTRAIN, selfv));
    for (int m = 0; m < NTRAIN; m++) EXPECT(fabs(selfv[m] - 2.5 * gnref[m] * gnref[m]) <= 1e-12 * 2.5 * gnref[m] * gnref[m], "TracIn self-influence of example %d: %g, numpy %g", m, selfv[m], 2.5 * gnref[m] * gnref[m]);
    {
      InflStoreScorer bad; /* several stores need the identity curvature: one clear error */
      PetscErrorCode  err;
      PetscCall(PetscOptionsSetValue(NULL, "-store_curvature", "fisher"));
      PetscCall(InflStoreScorerCreate(PETSC_COMM_WORLD, &bad));
      PetscCall(InflStoreScorerSetFromOptions(bad));
      PetscCall(InflStoreScorerOpen(bad, s1, model));
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      err = InflStoreScorerAddStore(bad, s2, model);
      PetscCall(PetscPopErrorHandler());
      EXPECT(err == PETSC_ERR_ARG_INCOMP, "adding a store under -store_curvature fisher gave error %d, expected PETSC_ERR_ARG_INCOMP", (int)err);
      PetscCall(InflStoreScorerDestroy(&bad));
    }
    { /* a damped projected Fisher that is not positive definite (/gram overwritten by -N I: F = -I + 0.5 I): one error
       * from pdpotrf on every rank, no hang */
      InflStoreScorer bad;
      PetscErrorCode  err;
      hid_t           fw;
      double         *neg; /* (nr, kk) this rank's rows of -N I */
      int64_t         r0, nr, dd[8];
      int             nd;
      PetscMPIInt     rank;
      PetscCallMPI(MPI_Comm_rank(PETSC_COMM_WORLD, &rank));
      PetscCall(InflH5Open(PETSC_COMM_WORLD, s1, PETSC_TRUE, &fw));
      PetscCall(InflH5GetDims(fw, "/gram", &nd, dd));
      EXPECT(nd == 2 && dd[0] == dd[1], "%s has no square /gram", s1);
      InflPartition(dd[0], size, rank, &r0, &nr);
      PetscCall(PetscCalloc1(nr * dd[0] + 1, &neg));
      for (int64_t i = 0; i < nr; i++) neg[i * dd[0] + r0 + i] = -NTRAIN;
      PetscCall(InflH5WriteRowsAt(fw, "/gram", H5T_NATIVE_DOUBLE, r0, nr, neg));
      PetscCall(InflH5Close(&fw));
      PetscCall(PetscFree(neg));
      PetscCall(PetscOptionsSetValue(NULL, "-store_damping", "0.5"));
      PetscCall(InflStoreScorerCreate(PETSC_COMM_WORLD, &bad));
      PetscCall(InflStoreScorerSetFromOptions(bad));
      PetscCall(PetscOptionsClearValue(NULL, "-store_damping"));
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      err = InflStoreScorerOpen(bad, s1, model);
      PetscCall(PetscPopErrorHandler());
      EXPECT(err == PETSC_ERR_MAT_CH_ZRPVT, "a projected Fisher that is not positive definite gave error %d, expected PETSC_ERR_MAT_CH_ZRPVT", (int)err);
      PetscCall(InflStoreScorerDestroy(&bad));
    }
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "tracin: self-influence sum eta ||g||^2 equals numpy's; several stores under fisher refused; a Fisher that is not positive definite refused\n"));
  }
  PetscCall(PetscOptionsClearValue(NULL, "-store_curvature"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_save_all"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_topk"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_chunk"));
  PetscCall(PetscOptionsClearValue(NULL, "-store_block_size"));
  PetscCall(PetscOptionsClearValue(NULL, "-store_panel_rows"));

  /* linearity: a synthetic capture of 3 sequences (2, 1 and 3 rows) against its 6 rows as sequences of one row */
  {
    InflCapture c1 = *cap, c2 = *cap;
    int64_t     off1[4] = {0, 2, 3, 6}, off2[7] = {0, 1, 2, 3, 4, 5, 6};
    double      o1[3 * 192], o2[6 * 192], sum[3 * 192], g3[3 * 19410];
    c1.B = 3;
    c1.T = 6;
    c1.offsets = off1;
    c2.B = 6;
    c2.T = 6;
    c2.offsets = off2;
    for (int kd = 0; kd < 3; kd++) {
      InflProjector p;
      double        e;
      PetscCall(make_projector(model, (InflProjectKind)kd, dims[kd][0], dims[kd][1], dims[kd][2], &p));
      PetscCall(InflProjectorGetSizes(p, &k, NULL));
      PetscCall(InflProjectorProjectCapture(p, &c1, o1, NULL));
      PetscCall(InflProjectorProjectCapture(p, &c2, o2, NULL));
      for (PetscInt j = 0; j < k; j++) {
        sum[0 * k + j] = o2[0 * k + j] + o2[1 * k + j];
        sum[1 * k + j] = o2[2 * k + j];
        sum[2 * k + j] = o2[3 * k + j] + o2[4 * k + j] + o2[5 * k + j];
      }
      e = row_err(3, k, o1, sum);
      EXPECT(e < 1e-12, "%s: a sequence's projection differs from the sum of its rows' by %g", kinds[kd], e);
      /* R (2 g_0 - 0.5 g_1 + g_2) = 2 R g_0 - 0.5 R g_1 + R g_2 */
      PetscCall(PetscArrayzero(g3, 19410));
      for (int64_t c = 0; c < P; c++) g3[c] = 2 * gcap[c] - 0.5 * gcap[P + c] + gcap[2 * P + c];
      PetscCall(InflProjectorProjectGradients(p, 1, g3, o1));
      PetscCall(InflProjectorProjectGradients(p, 3, gcap, o2));
      for (PetscInt j = 0; j < k; j++) sum[j] = 2 * o2[j] - 0.5 * o2[k + j] + o2[2 * k + j];
      e = row_err(1, k, o1, sum);
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: linearity: sequence vs sum of rows ok; combination %.2e\n", kinds[kd], e));
      EXPECT(e < 1e-12, "%s: projection of a combination differs from the combination of projections by %g", kinds[kd], e);
      PetscCall(InflProjectorDestroy(&p));
    }
  }

  /* inner products of random unit vectors within the JL deviation */
  {
    const int n = 8, kjl = 1024;
    double   *u, *Ru, e, lhs, m = (double)n * (n + 1);
    PetscCall(PetscMalloc2((size_t)n * P, &u, (size_t)n * kjl, &Ru));
    for (int i = 0; i < n; i++) {
      double s = 0;
      for (int64_t c = 0; c < P; c++) {
        u[i * P + c] = InflNormal(99, (uint64_t)(i * P + c), 0);
        s += u[i * P + c] * u[i * P + c];
      }
      for (int64_t c = 0; c < P; c++) u[i * P + c] /= sqrt(s);
    }
    for (e = 0.01;; e += 0.001) { /* the smallest e with 2 m exp(-k (e^2/2 - e^3/3) / 2) <= 1e-6 */
      lhs = 2 * m * exp(-kjl * (e * e / 2 - e * e * e / 3) / 2);
      if (lhs <= 1e-6) break;
    }
    for (int kd = 1; kd < 3; kd++) {
      InflProjector p;
      double        worst = 0;
      PetscCall(make_projector(model, (InflProjectKind)kd, 0, 0, kjl, &p));
      PetscCall(InflProjectorProjectGradients(p, n, u, Ru));
      for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
          double a = 0, b = 0;
          for (int64_t c = 0; c < P; c++) a += u[i * P + c] * u[j * P + c];
          for (int c = 0; c < kjl; c++) b += Ru[i * kjl + c] * Ru[j * kjl + c];
          worst = PetscMax(worst, fabs(a - b));
        }
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s k=%d: inner products of %d unit vectors off by at most %.3f (JL deviation %.3f)\n", kinds[kd], kjl, n, worst, e));
      EXPECT(worst <= e, "%s: an inner product moved by %g, beyond the JL deviation %g", kinds[kd], worst, e);
      PetscCall(InflProjectorDestroy(&p));
    }
    PetscCall(PetscFree2(u, Ru));
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflCaptureDestroy(&qcap));
  PetscCall(PetscFree4(x, xq, gslab, gcap));
  PetscCall(PetscFree3(out, ref, ex));
  PetscCall(PetscFree(G32));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_gpt2(const char src[], PetscMPIInt size)
{
  char         dir[PETSC_MAX_PATH_LEN], spec[PETSC_MAX_PATH_LEN], store[PETSC_MAX_PATH_LEN];
  InflModel    model;
  InflData     data;
  InflCapture *cap;
  int64_t      N, d, *off, idx[16], P;
  int32_t     *tok;
  double      *g, *out, *ex, *st;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(dir, sizeof(dir), "%s/tests/ref/gpt2_tiny", src));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/tests/ref/gpt2_tiny_tokens.h5", src));
  PetscCall(InflModelCreate(PETSC_COMM_WORLD, &model));
  PetscCall(InflModelLoad(model, dir));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, spec, 0, &data));
  PetscCall(InflModelCheckData(model, data));
  PetscCall(InflDataGetSizes(data, &N, &d, NULL));
  EXPECT(N >= 2 && N <= 16, "gpt2_tiny_tokens: %d sequences", (int)N);
  for (int i = 0; i < N; i++) idx[i] = i;
  PetscCall(PetscMalloc2((size_t)N * d, &tok, N + 1, &off));
  PetscCall(InflDataGetSequences(data, (PetscInt)N, idx, tok, off));
  PetscCall(InflCaptureCreate(model, (PetscInt)N, &cap));
  PetscCall(InflModelCaptureSequences(model, (PetscInt)N, off, tok, NULL, cap));
  EXPECT(cap->T > cap->B, "the GPT-2 capture has %d rows for %d sequences", (int)cap->T, (int)cap->B);
  for (int kd = 0; kd < 3; kd += 2) { /* kronecker and rademacher */
    InflProjector p;
    PetscInt      k;
    double        e, used = 0;
    PetscCall(make_projector(model, (InflProjectKind)kd, 4, 4, 32, &p));
    PetscCall(InflProjectorGetSizes(p, &k, &P));
    PetscCall(PetscMalloc4((size_t)N * P, &g, (size_t)N * k, &out, (size_t)N * k, &ex, (size_t)N * k, &st));
    PetscCall(capture_gradients(cap, P, g));
    PetscCall(explicit_projection(p, (PetscInt)N, g, ex));
    PetscCall(InflProjectorProjectCapture(p, cap, out, NULL));
    e = row_err(N, k, out, ex);
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "gpt2 %s: projection of %d sequences (%d tokens) vs explicit P(sum_t Ds_t a_t^T): %.2e\n", InflProjectKinds[kd], (int)N, (int)cap->T, e));
    EXPECT(e < 1e-12, "gpt2 %s: projection differs from the explicit one by %g", InflProjectKinds[kd], e);
    PetscCall(PetscSNPrintf(store, sizeof(store), "test_project_gpt2_%s_np%d.h5", InflProjectKinds[kd], (int)size));
    PetscCall(PetscOptionsSetValue(NULL, "-project_chunk", "1"));
    PetscCall(InflProjectorSetFromOptions(p));
    PetscCall(PetscOptionsClearValue(NULL, "-project_chunk"));
    PetscCall(InflStoreBuild(p, model, data, PETSC_TRUE, store, PETSC_TRUE));
    PetscCall(read_store(store, "/gradients", N * k, st));
    for (int64_t i = 0; i < N * k; i++) used = PetscMax(used, fabs(st[i] - ex[i]) / (ldexp(fabs(st[i]) + fabs(ex[i]), -24) + 1e-12 * fabs(ex[i]) + 1e-300));
    PetscCall(PetscPrintf(PETSC_COMM_WORLD, "gpt2 %s: store at %d ranks vs explicit: %.2f of the float32 storage bound\n", InflProjectKinds[kd], (int)size, used));
    EXPECT(used <= 1, "gpt2 %s: stored rows differ from the explicit projection (%.2f of the bound)", InflProjectKinds[kd], used);
    PetscCall(PetscFree4(g, out, ex, st));
    PetscCall(InflProjectorDestroy(&p));
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree2(tok, off));
  PetscCall(InflDataDestroy(&data));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  const char *src;
  PetscMPIInt size;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  PetscCallMPI(MPI_Comm_size(PETSC_COMM_WORLD, &size));
  src = getenv("INFL_SOURCE_DIR");
  if (!src) src = ".";
  PetscCall(test_mlp(src, size));
  PetscCall(test_gpt2(src, size));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_project: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

/* TracIn through captures (InflScorerSetTracIn, InflTracInSelfInfluenceShard; Pruthi et al. 2020), at 1-4 ranks,
 * against the independent torch-autograd reference tests/ref/make_tracin_reference.py -> tracin_ref.h5:
 *   - MLP, two checkpoints whose learning rates are read from their safetensors metadata (InflModelReadMetadata):
 *     scores sum_c eta_c <g_c(q), g_c(m)> of 64 training examples against 4 queries, in double precision to 1e-10 of
 *     the largest, in single precision within tau ||P_q|| ||g_m|| (tau = 2 d u, d = 785: docs/FORMATS.md); the
 *     self-influence sum_c eta_c ||g_c(m)||^2 likewise;
 *   - the store-based TracIn self-influence (InflStoreTracInSelf, stores built here from the two checkpoints) equals
 *     the exact one (both use exact gradient norms);
 *   - GPT-2 (gpt2_tiny and a perturbed copy, sequences of up to 16 tokens, double): scores and self-influence of the 4
 *     sequences of gpt2_tiny_tokens.h5 against themselves. */
static const char help[] = "TracIn through captures against a torch reference.\n";

#include <infl/score.h>
#include <infl/store.h>
#include <math.h>
#include <stdlib.h>
#include "lib/infl_test.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"
#define NTRAIN 64
#define NQUERY 4

static PetscErrorCode load(const char path[], InflPrecision prec, InflModel *m)
{
  PetscFunctionBegin;
  PetscCall(InflModelCreate(PETSC_COMM_WORLD, m));
  PetscCall(InflModelSetPrecision(*m, prec));
  PetscCall(InflModelLoad(*m, path));
  PetscFunctionReturn(0);
}

/* TracIn scores of Q queries (qidx) of `query` against `train` (save_all); worst (over this rank's columns, reduced)
 * of |score - ref| / bound, bound = tol (scale, or with tau > 0 tau ||P_q|| ||g_m||). */
static PetscErrorCode check_scores(const char what[], PetscInt C, InflModel models[], const double eta[], InflData train, InflData query, PetscInt Q, const int64_t qidx[], int64_t N, const double ref[], double tol, double tau)
{
  InflScorer    sc;
  int64_t       start, count;
  const double *s, *tn;
  double        qn[16], worst = 0, scale = 0;

  PetscFunctionBegin;
  PetscCall(PetscOptionsSetValue(NULL, "-score_save_all", "1"));
  PetscCall(PetscOptionsSetValue(NULL, "-score_chunk", "7"));
  PetscCall(InflScorerCreate(PETSC_COMM_WORLD, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  PetscCall(PetscOptionsClearValue(NULL, "-score_save_all"));
  PetscCall(PetscOptionsClearValue(NULL, "-score_chunk"));
  PetscCall(InflScorerSetTracIn(sc, C, models, eta));
  PetscCall(InflScorerSetQueryData(sc, models[0], NULL, query, Q, qidx));
  PetscCall(InflScorerScore(sc, train));
  PetscCall(InflScorerGetLocalScores(sc, &start, &count, &s));
  PetscCall(InflScorerGetNorms(sc, qn, &tn));
  for (int64_t i = 0; i < (int64_t)Q * N; i++) scale = PetscMax(scale, fabs(ref[i]));
  for (PetscInt q = 0; q < Q; q++)
    for (int64_t m = 0; m < count; m++) {
      double r = ref[(int64_t)q * N + start + m], v = s[(int64_t)q * count + m];
      double b = tau > 0 ? tau * qn[q] * tn[m] : tol * scale;
      worst    = PetscMax(worst, fabs(v - r) / b);
    }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: TracIn scores vs torch autograd: %.3g of the bound (largest score %.4g)\n", what, worst, scale));
  EXPECT(worst <= 1, "%s: TracIn scores differ from the torch reference (%.3g of the bound)", what, worst);
  PetscCall(InflScorerDestroy(&sc));
  PetscFunctionReturn(0);
}

/* The self-influence of this rank's shard; worst relative difference to ref (N). */
static PetscErrorCode check_self(const char what[], PetscInt C, InflModel models[], const double eta[], InflData train, int64_t N, const double ref[], double tol, double got_all[])
{
  InflCapture *caps[2];
  int64_t      start, count;
  double      *self, worst = 0;

  PetscFunctionBegin;
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  for (PetscInt c = 0; c < C; c++) PetscCall(InflCaptureCreate(models[c], (PetscInt)PetscMax(count, 1), &caps[c]));
  PetscCall(PetscMalloc1(PetscMax(count, 1), &self));
  PetscCall(InflTracInSelfInfluenceShard(C, models, eta, train, start, start + count, caps, self));
  for (int64_t m = 0; m < count; m++) worst = PetscMax(worst, fabs(self[m] - ref[start + m]) / (tol * fabs(ref[start + m])));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s: TracIn self-influence vs torch autograd: %.3g of the bound\n", what, worst));
  EXPECT(worst <= 1, "%s: TracIn self-influence differs from the torch reference (%.3g of the bound)", what, worst);
  if (got_all) {
    PetscCall(PetscArrayzero(got_all, N));
    PetscCall(PetscArraycpy(got_all + start, self, count));
    PetscCall(InflAllreduceSum(got_all, N, MPI_DOUBLE, PETSC_COMM_WORLD));
  }
  PetscCall(PetscFree(self));
  for (PetscInt c = 0; c < C; c++) PetscCall(InflCaptureDestroy(&caps[c]));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_mlp(const char src[], PetscMPIInt size)
{
  char      path[2][PETSC_MAX_PATH_LEN], ref[PETSC_MAX_PATH_LEN], v[64];
  InflModel m[2];
  InflData  train, query;
  double    eta[2], reta[2], *rs, *rself, self[NTRAIN];
  int64_t   qidx[NQUERY] = {0, 1, 2, 3};
  const double tau = 2 * 785 * ldexp(1.0, -24);

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(ref, sizeof(ref), "%s/tests/ref/tracin_ref.h5", src));
  PetscCall(PetscMalloc2(NQUERY * NTRAIN, &rs, NTRAIN, &rself));
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, ref, "/mlp/scores", NQUERY * NTRAIN, rs));
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, ref, "/mlp/self", NTRAIN, rself));
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, ref, "/mlp/eta", 2, reta));
  for (int c = 0; c < 2; c++) { /* the learning rates from the checkpoints' metadata */
    PetscCall(PetscSNPrintf(path[c], sizeof(path[c]), "%s/tests/ref/mlp_tracin_ckpt%d.safetensors", src, c + 1));
    PetscCall(InflModelReadMetadata(PETSC_COMM_WORLD, path[c], "train_lr", v, sizeof(v)));
    eta[c] = atof(v);
    EXPECT(eta[c] == reta[c], "checkpoint %d: metadata train_lr \"%s\", the reference's %g", c + 1, v, reta[c]);
  }
  PetscCall(InflModelReadMetadata(PETSC_COMM_WORLD, path[0], "no_such_key", v, sizeof(v)));
  EXPECT(v[0] == 0, "a missing metadata key reads as \"%s\"", v);
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, "idx:" FMNIST "/train", NTRAIN, &train));
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, "idx:" FMNIST "/t10k", NQUERY, &query));
  for (int prec = 1; prec >= 0; prec--) { /* double, then single precision */
    for (int c = 0; c < 2; c++) PetscCall(load(path[c], (InflPrecision)prec, &m[c]));
    PetscCall(check_scores(prec ? "mlp double" : "mlp single", 2, m, eta, train, query, NQUERY, qidx, NTRAIN, rs, prec ? 1e-10 : 0, prec ? 0 : tau));
    PetscCall(check_self(prec ? "mlp double" : "mlp single", 2, m, eta, train, NTRAIN, rself, prec ? 1e-10 : 4 * 785 * ldexp(1.0, -24), self));
    if (prec) { /* the store-based TracIn self-influence: the stores' exact gradient norms */
      const char *stores[2];
      char        names[2][PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN];
      double      sv[NTRAIN], worst = 0;
      for (int c = 0; c < 2; c++) {
        InflProjector p;
        PetscCall(InflProjectorCreate(PETSC_COMM_WORLD, &p));
        PetscCall(InflProjectorSetSizes(p, 4, 4, 0));
        PetscCall(InflProjectorSetUp(p, m[c]));
        PetscCall(PetscSNPrintf(names[c], sizeof(names[c]), "test_tracin_store%d_np%d.h5", c, (int)size));
        PetscCall(InflStoreBuild(p, m[c], train, PETSC_FALSE, names[c], PETSC_TRUE));
        PetscCall(InflProjectorDestroy(&p));
        stores[c] = names[c];
      }
      PetscCall(PetscSNPrintf(out, sizeof(out), "test_tracin_self_np%d.h5", (int)size));
      PetscCall(InflStoreTracInSelf(PETSC_COMM_WORLD, 2, stores, eta, out, PETSC_TRUE));
      PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, out, "/self_influence", NTRAIN, sv));
      for (int i = 0; i < NTRAIN; i++) worst = PetscMax(worst, fabs(sv[i] - self[i]) / fabs(self[i]));
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "mlp: store-based TracIn self-influence vs through captures: %.2e relative\n", worst));
      EXPECT(worst <= 1e-12, "store-based TracIn self-influence differs from the exact one by %g relative", worst);
    }
    for (int c = 0; c < 2; c++) PetscCall(InflModelDestroy(&m[c]));
  }
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscCall(PetscFree2(rs, rself));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_gpt2(const char src[])
{
  char      path[2][PETSC_MAX_PATH_LEN], ref[PETSC_MAX_PATH_LEN], spec[PETSC_MAX_PATH_LEN], v[64];
  InflModel m[2];
  InflData  data;
  double    eta[2], rs[16], rself[4];
  int64_t   N, qidx[4] = {0, 1, 2, 3};

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(ref, sizeof(ref), "%s/tests/ref/tracin_ref.h5", src));
  PetscCall(PetscSNPrintf(path[0], sizeof(path[0]), "%s/tests/ref/gpt2_tiny", src));
  PetscCall(PetscSNPrintf(path[1], sizeof(path[1]), "%s/tests/ref/gpt2_tiny_ckpt2", src));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/tests/ref/gpt2_tiny_tokens.h5", src));
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, ref, "/gpt2/eta", 2, eta));
  PetscCall(InflModelReadMetadata(PETSC_COMM_WORLD, path[1], "train_lr", v, sizeof(v))); /* a directory's model.safetensors */
  EXPECT(atof(v) == eta[1], "gpt2 checkpoint 2: metadata train_lr \"%s\", the reference's %g", v, eta[1]);
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, ref, "/gpt2/scores", 16, rs));
  PetscCall(InflTestReadDoubles(PETSC_COMM_WORLD, ref, "/gpt2/self", 4, rself));
  for (int c = 0; c < 2; c++) PetscCall(load(path[c], INFL_PREC_DOUBLE, &m[c]));
  PetscCall(InflDataOpen(PETSC_COMM_WORLD, spec, 0, &data));
  for (int c = 0; c < 2; c++) PetscCall(InflModelCheckData(m[c], data));
  PetscCall(InflDataGetSizes(data, &N, NULL, NULL));
  EXPECT(N == 4, "gpt2_tiny_tokens: %d sequences, the reference has 4", (int)N);
  PetscCall(check_scores("gpt2 double", 2, m, eta, data, data, 4, qidx, 4, rs, 1e-10, 0));
  PetscCall(check_self("gpt2 double", 2, m, eta, data, 4, rself, 1e-10, NULL));
  for (int c = 0; c < 2; c++) PetscCall(InflModelDestroy(&m[c]));
  PetscCall(InflDataDestroy(&data));
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
  PetscCall(test_gpt2(src));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_tracin: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

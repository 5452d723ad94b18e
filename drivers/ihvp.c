/* infl ihvp: influence scores with queries preconditioned by Krylov solves of the damped curvature;
 * infl fidelity: identity, K-FAC and EK-FAC IHVPs against the Krylov solution. */
#include "driver.h"
#include <infl/ihvp.h>
#include <infl/checkpoint.h>

typedef struct {
  char         model[PETSC_MAX_PATH_LEN], factors[PETSC_MAX_PATH_LEN], out[PETSC_MAX_PATH_LEN], prompts[PETSC_MAX_PATH_LEN];
  PetscBool    overwrite, seq;
  InflData     train, query;
  InflModel    model_obj;
  InflEKFAC    ek;
  InflIHVP     ih;
  PetscInt     Q;
  int64_t     *qidx, *yq; /* (Q) query indices; class labels of row queries (NULL for sequences) */
  double      *g;         /* (Q, n) the queries' gradients in the IHVP layout */
  StagePrompts pr;
  char         qhash[65];
} IhvpSetup;

/* The queries' gradients: rows of -query with their labels, sequences of -query with their next tokens, or the
 * prompt/completion pairs of -query_prompts (only completion tokens in the loss). */
static PetscErrorCode ihvp_queries(MPI_Comm comm, IhvpSetup *s)
{
  PetscInt n;

  PetscFunctionBegin;
  PetscCall(InflIHVPGetSizes(s->ih, &n, NULL, NULL));
  if (s->prompts[0]) {
    PetscCall(DriverLoadPrompts(comm, s->prompts, s->model, s->model_obj, &s->pr));
    s->Q = s->pr.Q;
    PetscCall(PetscMalloc1(s->Q, &s->qidx));
    for (PetscInt q = 0; q < s->Q; q++) s->qidx[q] = q;
    PetscCall(PetscStrncpy(s->qhash, s->pr.hash, sizeof(s->qhash)));
    PetscCall(PetscMalloc1((size_t)s->Q * n, &s->g));
    PetscCall(InflIHVPSequenceGradients(s->ih, s->Q, s->pr.offsets, s->pr.tokens, s->pr.targets, s->g));
    PetscFunctionReturn(0);
  }
  {
    int64_t     Nq;
    const char *qh;
    PetscCall(InflModelCheckData(s->model_obj, s->query)); /* sequence data: read for this model */
    PetscCall(InflDataGetSizes(s->query, &Nq, NULL, NULL));
    PetscCall(DriverQueryIndices(comm, Nq, &s->Q, &s->qidx));
    PetscCall(InflDataGetHash(s->query, &qh));
    PetscCall(PetscStrncpy(s->qhash, qh, sizeof(s->qhash)));
  }
  if (!s->seq) { /* the labels, recorded with the scores */
    int64_t d;
    float  *x;
    PetscCall(InflDataGetSizes(s->query, NULL, &d, NULL));
    PetscCall(PetscMalloc1((size_t)s->Q * d, &x));
    PetscCall(PetscMalloc1(s->Q, &s->yq));
    PetscCall(InflDataGetExamples(s->query, s->Q, s->qidx, x, s->yq));
    PetscCall(PetscFree(x));
  }
  PetscCall(PetscMalloc1((size_t)s->Q * n, &s->g));
  PetscCall(InflIHVPQueryGradients(s->ih, s->query, s->Q, s->qidx, s->g));
  PetscFunctionReturn(0);
}

static PetscErrorCode ihvp_inputs(MPI_Comm comm, const char *cmd, PetscBool help, IhvpSetup *s)
{
  double    damping = -1;
  PetscBool dset;
  char      layers[16] = "";

  PetscFunctionBegin;
  PetscCall(PetscMemzero(s, sizeof(*s)));
  PetscCall(DriverGetString(comm, "-model", "model file (safetensors; a GPT-2 directory)", s->model, PETSC_MAX_PATH_LEN, PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-factors", "EK-FAC factors (infl fit): damping, layers and the EK-FAC preconditioner; without them pass -ekfac_damping", s->factors, PETSC_MAX_PATH_LEN, PETSC_FALSE, help));
  PetscCall(DriverGetString(comm, "-out", "output file (HDF5)", s->out, PETSC_MAX_PATH_LEN, PETSC_TRUE, help));
  PetscCall(DriverGetString(comm, "-query_prompts", "language models: prompt/completion queries (a text file of prompts and completions separated by a line \">>>\", queries by \"%\" lines; docs/FORMATS.md) instead of -query", s->prompts, PETSC_MAX_PATH_LEN, PETSC_FALSE, help));
  PetscCall(PetscOptionsGetBool(NULL, NULL, "-overwrite", &s->overwrite, NULL));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &s->train));
  PetscCall(DriverOpenData(comm, "query", !s->prompts[0], help, &s->query));
  PetscCheck(help || !(s->prompts[0] && s->query), comm, PETSC_ERR_ARG_INCOMP, "give either -query (a data set, with -query_indices) or -query_prompts %s, not both", s->prompts);
  PetscCall(InflIHVPCreate(comm, &s->ih));
  PetscCall(InflIHVPSetFromOptions(s->ih));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-ekfac_damping", &damping, &dset));
  PetscCheck(!dset || (damping >= 0 && isfinite(damping)), comm, PETSC_ERR_ARG_OUTOFRANGE, "-ekfac_damping %s must be a finite number >= 0", INFL_DSTR(damping));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-ekfac_layers", layers, sizeof(layers), NULL));
  if (help) {
    PetscCall(PetscPrintf(comm, "  -query_indices <0:8>: queries: \"3,17,40\", a range \"0:100\" or \"0:1000:10\", or \"@file\"\n  -ekfac_damping <X>: damping of every layer (default: the factors' damping)\n  -ekfac_layers <all|mlp|attn>: the layers of the IHVP (GPT-2; with -factors: the factors' layers)\n  -ihvp_ksp_type, -ihvp_ksp_rtol <%g>, -ihvp_ksp_max_it <%d>, -ihvp_pc_type <none | shell: EK-FAC | jacobi: the exact diagonal>, -ihvp_ksp_monitor: the Krylov solver (PETSc KSP options with prefix ihvp_)\n  -ihvp_pc_damping <X>: damping of every layer in the EK-FAC preconditioner (default: the solve's)\n  -ihvp_deflate <100>: preconditioner deflating the K largest eigenvalues of the operator (0: off; the default gives way to another -ihvp_pc_type and to the bound of its 2K+11 Lanczos vectors per rank: what -mem_limit leaves, else 1 GiB; a note says why) (-ihvp_deflate_steps <2K+10> Lanczos passes over the data, once; the run stops early when the Krylov space is exhausted and deflates its converged Ritz pairs; it is checkpointed to OUT.ihvp.partial and resumed)\n  -mem_limit <bytes per rank>: bounds the deflation's Lanczos vectors (an explicit -ihvp_deflate beyond it is an error)\n  -progress_interval <10>: seconds between the progress lines of each Krylov solve (iteration, residual norm, ETA); -ihvp_ksp_monitor_cancel: none with -ihvp_block false\n  -checkpoint_interval <600>: seconds between checkpoints of the block solve and of the deflation's Lanczos run to OUT.ihvp.partial (resumed by the same command, at any rank count)\n", INFL_IHVP_RTOL, INFL_IHVP_MAX_IT));
    PetscFunctionReturn(0);
  }
  PetscCall(DriverCheckOutput(comm, s->out, s->overwrite));
  PetscCall(DriverLoadModel(comm, s->model, &s->model_obj));
  PetscCall(InflModelIsSequential(s->model_obj, &s->seq));
  { /* the Krylov operator and the EK-FAC preconditioner act on whole gradients: every layer on every rank */
    PetscInt  G = 0;
    PetscBool gset, split = PETSC_FALSE, sset;
    PetscCall(PetscOptionsGetInt(NULL, NULL, "-layer_groups", &G, &gset));
    PetscCheck(!gset || G <= 1, comm, PETSC_ERR_ARG_INCOMP, "infl %s holds every layer's factors on every rank (its Krylov operator and EK-FAC preconditioner act on whole gradients), so -layer_groups %d is not supported: drop it (or give 1); infl %s needs the whole factors on each rank, whatever -mem_limit", cmd, (int)G, cmd);
    PetscCall(PetscOptionsGetBool(NULL, NULL, "-layer_split", &split, &sset));
    PetscCheck(!sset || !split, comm, PETSC_ERR_ARG_INCOMP, "infl %s holds every layer's whole factors on every rank (its Krylov operator and EK-FAC preconditioner act on whole gradients), so -layer_split true is not supported: drop it (or give false)", cmd);
  }
  if (s->factors[0]) {
    PetscCall(InflEKFACCreate(comm, &s->ek));
    PetscCall(InflEKFACSetLayerGroups(s->ek, 1)); /* the preconditioner of whole gradients needs every layer on every rank */
    PetscCall(InflEKFACSetLayerSplit(s->ek, PETSC_FALSE)); /* whole */
    PetscCall(InflEKFACLoad(s->ek, s->factors, s->model_obj)); /* applies the factors' layer selection */
    damping = -1; /* InflEKFACLoad applied -ekfac_damping to the factors */
  } else {
    PetscCheck(dset, comm, PETSC_ERR_ARG_NULL, "without -factors the damping must be given with -ekfac_damping X");
    if (layers[0]) PetscCall(InflModelSetLayerSelection(s->model_obj, layers));
  }
  PetscCall(InflIHVPSetUp(s->ih, s->model_obj, s->train, s->ek, damping));
  PetscCall(InflIHVPSetCheckpoint(s->ih, s->out));
  PetscCall(ihvp_queries(comm, s));
  PetscFunctionReturn(0);
}

static PetscErrorCode ihvp_free(IhvpSetup *s)
{
  PetscFunctionBegin;
  PetscCall(InflIHVPDestroy(&s->ih));
  PetscCall(InflEKFACDestroy(&s->ek));
  PetscCall(InflModelDestroy(&s->model_obj));
  PetscCall(InflDataDestroy(&s->train));
  PetscCall(InflDataDestroy(&s->query));
  PetscCall(PetscFree(s->qidx));
  PetscCall(PetscFree(s->yq));
  PetscCall(PetscFree(s->g));
  if (s->pr.offsets) PetscCall(PetscFree3(s->pr.offsets, s->pr.tokens, s->pr.targets));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverIhvp(MPI_Comm comm, PetscBool help)
{
  IhvpSetup          s;
  InflScorer         sc;
  InflIHVPSolveInfo *info;
  double           **P;
  PetscInt           L, nbad = 0;
  PetscLogDouble     t0, t1, t2;
  PetscLogStage      stage;

  PetscFunctionBegin;
  PetscCall(ihvp_inputs(comm, "ihvp", help, &s));
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetFromOptions(sc));
  if (help) {
    PetscCall(InflScorerDestroy(&sc));
    PetscCall(ihvp_free(&s));
    PetscFunctionReturn(0);
  }
  PetscCall(InflScorerSetQueryHash(sc, s.qhash)); /* provenance of the queries, as infl score records it */
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(PetscLogStageRegister("Krylov IHVP", &stage));
  PetscCall(PetscLogStagePush(stage));
  PetscCall(InflIHVPView(s.ih, NULL));
  PetscCall(InflModelGetLayers(s.model_obj, &L, NULL));
  PetscCall(PetscCalloc1(L, &P));
  PetscCall(PetscMalloc1(s.Q, &info));
  PetscCall(PetscTime(&t0));
  PetscCall(InflIHVPSolveGradients(s.ih, s.Q, s.g, s.qidx, P, info));
  PetscCall(PetscTime(&t1));
  for (PetscInt q = 0; q < s.Q; q++) {
    PetscCall(PetscPrintf(comm, "ihvp: query %" PRId64 ": %s, %d iterations, residual norm %.3e (rhs norm %.3e)\n", s.qidx[q], info[q].zero_rhs ? "zero gradient" : KSPConvergedReasons[info[q].reason], (int)info[q].iterations, info[q].rnorm, info[q].bnorm));
    if (!info[q].converged) nbad++;
  }
  PetscCall(InflScorerSetPreconditionedQueries(sc, s.model_obj, s.Q, (const double *const *)P, s.yq, s.qidx));
  if (s.pr.offsets) PetscCall(InflScorerSetQueryTokens(sc, s.Q, s.pr.offsets, s.pr.tokens, s.pr.targets)); /* for infl report */
  else if (s.seq) {
    int64_t  d, *off;
    int32_t *tok;
    PetscCall(InflDataGetSizes(s.query, NULL, &d, NULL));
    PetscCall(PetscMalloc2((size_t)s.Q * d, &tok, s.Q + 1, &off));
    PetscCall(InflDataGetSequences(s.query, s.Q, s.qidx, tok, off));
    PetscCall(InflScorerSetQueryTokens(sc, s.Q, off, tok, NULL));
    PetscCall(PetscFree2(tok, off));
  }
  PetscCall(InflScorerScore(sc, s.train));
  PetscCall(PetscTime(&t2));
  PetscCall(PetscPrintf(comm, "ihvp: %d queries, Krylov solves %.2f s, scoring %.2f s\n", (int)s.Q, t1 - t0, t2 - t1));
  PetscCall(InflScorerSave(sc, s.out, s.overwrite));
  { /* the solves' record beside the scores */
    hid_t    file;
    int64_t  dq[1] = {s.Q}, *its, *conv, *reason;
    double  *rn, *bn;
    PetscCall(PetscMalloc5(s.Q, &its, s.Q, &conv, s.Q, &reason, s.Q, &rn, s.Q, &bn));
    for (PetscInt q = 0; q < s.Q; q++) {
      its[q]    = info[q].iterations;
      conv[q]   = info[q].converged;
      reason[q] = info[q].reason;
      rn[q]     = info[q].rnorm;
      bn[q]     = info[q].bnorm;
    }
    PetscCall(InflH5Open(comm, s.out, PETSC_TRUE, &file));
    PetscCall(InflH5WriteArray(file, "/ihvp/iterations", H5T_NATIVE_INT64, 1, dq, its));
    PetscCall(InflH5WriteArray(file, "/ihvp/converged", H5T_NATIVE_INT64, 1, dq, conv));
    PetscCall(InflH5WriteArray(file, "/ihvp/ksp_reason", H5T_NATIVE_INT64, 1, dq, reason));
    PetscCall(InflH5WriteArray(file, "/ihvp/residual_norm", H5T_NATIVE_DOUBLE, 1, dq, rn));
    PetscCall(InflH5WriteArray(file, "/ihvp/rhs_norm", H5T_NATIVE_DOUBLE, 1, dq, bn));
    PetscCall(InflH5SetAttrString(file, "/", "preconditioner", "Krylov IHVP (infl ihvp)"));
    PetscCall(InflH5SetAttrInt(file, "/", "ihvp_unconverged", nbad));
    if (nbad) PetscCall(InflH5SetAttrString(file, "/", "warning", "some Krylov solves did not converge (-ihvp_allow_unconverged); see /ihvp/converged"));
    PetscCall(InflH5Close(&file));
    PetscCall(PetscFree5(its, conv, reason, rn, bn));
  }
  PetscCall(PetscPrintf(comm, "wrote %s\n", s.out));
  { /* the solves' checkpoint is no longer needed */
    char partial[PETSC_MAX_PATH_LEN + 16];
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.ihvp.partial", s.out));
    PetscCall(InflRemoveAll(comm, partial));
  }
  PetscCall(PetscLogStagePop());
  for (PetscInt l = 0; l < L; l++) PetscCall(PetscFree(P[l]));
  PetscCall(PetscFree(P));
  PetscCall(PetscFree(info));
  PetscCall(InflScorerDestroy(&sc));
  PetscCall(ihvp_free(&s));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverFidelity(MPI_Comm comm, PetscBool help)
{
  IhvpSetup      s;
  PetscInt       K = 10;
  InflFidelity   fid;
  PetscLogDouble t0, t1;

  PetscFunctionBegin;
  PetscCall(ihvp_inputs(comm, "fidelity", help, &s));
  PetscOptionsBegin(comm, NULL, "infl fidelity options", NULL);
  PetscCall(PetscOptionsInt("-fidelity_topk", "k of the top-k overlap", NULL, K, &K, NULL));
  {
    PetscInt rank = 32;
    PetscCall(PetscOptionsInt("-fidelity_rank", "rank of the low-rank EK-FAC query gradients compared", NULL, rank, &rank, NULL));
  }
  PetscOptionsEnd();
  if (help) {
    PetscCall(ihvp_free(&s));
    PetscFunctionReturn(0);
  }
  PetscCheck(s.ek, comm, PETSC_ERR_ARG_NULL, "infl fidelity compares K-FAC and EK-FAC: pass -factors FILE");
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflIHVPView(s.ih, NULL));
  PetscCall(PetscTime(&t0));
  PetscCall(InflFidelityCompute(s.ih, s.model_obj, s.ek, s.train, s.Q, s.g, s.qidx, K, &fid));
  PetscCall(PetscTime(&t1));
  PetscCall(InflFidelityView(&fid, comm));
  PetscCall(PetscPrintf(comm, "fidelity: %.2f s\n", t1 - t0));
  PetscCall(InflFidelitySave(&fid, comm, s.model_obj, s.train, s.qidx, s.out, s.overwrite));
  PetscCall(PetscPrintf(comm, "wrote %s\n", s.out));
  {
    char partial[PETSC_MAX_PATH_LEN + 16];
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.ihvp.partial", s.out));
    PetscCall(InflRemoveAll(comm, partial));
  }
  PetscCall(InflFidelityFree(&fid));
  PetscCall(ihvp_free(&s));
  PetscFunctionReturn(0);
}

/* Pairwise EK-FAC influence scores against a set of queries, top-k reduction, self-influence. */
#include <infl/score.h>
#include <infl/tfidf.h>
#include "kernels.h"
#include "scoresfile.h"
#include <infl/checkpoint.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <petscblaslapack.h>

/* out (Q, B) += one layer's terms with rank-r query gradients P_q = U_q V_q^T (Grosse et al. 2023, section 3.2):
 * X = ds U (B, Q*r), Y = a V (B, Q*r), out[q, b] += sum_k X[b, q*r+k] Y[b, q*r+k].  T is scratch of 2*B*Q*r. */
#define SCORE_LOW_RANK(NAME, REAL, GEMM) \
  static void NAME(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscInt r, const REAL *U, const REAL *V, const REAL *a, const REAL *ds, REAL *T, double *out) \
  { \
    REAL   *X = T, *Y = T + (size_t)B * Q * r; \
    int64_t w = (int64_t)Q * r; \
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, (int)w, nd, 1, ds, nd, U, (int)w, 0, X, (int)w); \
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, (int)w, na, 1, a, na, V, (int)w, 0, Y, (int)w); \
    for (PetscInt b = 0; b < B; b++) \
      for (PetscInt q = 0; q < Q; q++) { \
        const REAL *x = X + b * w + (int64_t)q * r, *y = Y + b * w + (int64_t)q * r; \
        double      s = 0; \
        for (PetscInt k = 0; k < r; k++) s += (double)x[k] * (double)y[k]; \
        out[(int64_t)q * B + b] += s; \
      } \
  }
SCORE_LOW_RANK(score_low_rank_f32, float, cblas_sgemm)
SCORE_LOW_RANK(score_low_rank_f64, double, cblas_dgemm)

struct _p_InflScorer {
  MPI_Comm      comm;
  PetscInt      K, chunk;
  PetscBool     chunk_set;    /* -score_chunk given (else the default, a token budget for sequences) */
  PetscBool     save_all, per_layer, per_token;
  PetscInt      tfidf_topk;   /* -score_tfidf_topk: candidates per query (0: score every training example) */
  PetscInt      K_requested;  /* -score_topk as given, when K was clamped (to N, or to tfidf_topk); else 0 */
  InflModel     model;
  InflEKFAC     ek;
  PetscBool     identity;     /* queries set with ek = NULL: identity preconditioner (gradient dot products; TracIn) */
  InflPrecision prec;
  PetscInt      L, Q;         /* L = C Lm: the layers of every checkpoint, checkpoint-major */
  PetscInt      C, Lm;        /* models scored (TracIn checkpoints; 1 otherwise) and the layers of one model */
  PetscInt      tracin;       /* InflScorerSetTracIn: its C (0: not set) */
  InflModel     models[INFL_TRACIN_MAX]; /* (C) models[0] = model */
  double        eta[INFL_TRACIN_MAX];    /* (C) weights (TracIn learning rates; 1 otherwise) */
  PetscInt     *din, *dout;   /* (L) */
  PetscBool    *by_input;     /* (L) contract a with P first (dout <= din+1, and every layer of a sequence model:
                                 the sequence kernel reads query q's (dout, din+1) block whole), else Ds first */
  PetscInt      dmax;         /* the widest layer input plus its bias: the longest dot product of the kernels */
  double      **P64;          /* (L) scoring layout: (Q*dout, din+1) if by_input, else (dout, Q*(din+1)) */
  float       **P32;          /* the same in float, single precision mode */
  double      **Pq;           /* (L) (Q, dout, din+1) preconditioned query gradients, double */
  PetscInt      rank;         /* -score_rank: rank of the query approximation, 0 = exact */
  PetscInt     *lr;           /* (L) rank used in layer l (0: exact, when min(dout, din+1) <= rank) */
  double      **U64, **V64;   /* (L) low rank: (dout, Q*r) = [U_r S_r per query], (din+1, Q*r) = [V_r per query] */
  float       **U32, **V32;
  double      **scale;        /* (L) (Q): in single precision P32 (or U32) holds query q's values divided by
                                 scale[l][q] = max |P_q| of the layer, so that tiny preconditioned gradients (a
                                 confidently classified query) do not become float denormals, which run the GEMMs
                                 at a fraction of their speed; the kernel's terms are multiplied back in double */
  int64_t      *qindex, *qlabel; /* (Q) */
  int64_t      *qpred;          /* (Q) the model's predicted class of each query (NULL if not known) */
  double       *qprob;          /* (Q) its softmax probability */
  InflTopK     *top, *bottom;
  int64_t       start, count;
  double       *local;        /* (Q, count) with save_all */
  double       *local_layer;  /* (L, Q, count) with save_all and per_layer */
  double       *qnorm2;       /* (Q) ||P_q||_F^2 summed over layers, of the P scored (the truncation with -score_rank) */
  double       *local_norm;   /* (count) with save_all: ||g_m||_F of each training example's loss gradient */
  double       *top_layer, *bottom_layer; /* (L, Q, K) with per_layer */
  char          model_hash[65], train_hash[65], query_hash[65];
  int64_t       ntrain;
  char          out[PETSC_MAX_PATH_LEN]; /* final output: checkpoints go to out.partial */
  double       *qloss;        /* (Q) each query's loss as measured (summed over its predicted tokens) */
  int32_t      *qtok;         /* (qoff[Q]) the queries' tokens (sequence queries; NULL for rows) */
  int64_t      *qoff;         /* (Q+1) */
  int64_t      *qstart;       /* (Q) position of the first row whose target enters the query's loss */
  InflTopK     *cand;         /* (Q, tfidf_topk) TF-IDF candidates of each query (with -score_tfidf_topk) */
  int64_t      *cand_local;   /* (ncand_local) sorted distinct candidates in this rank's shard */
  int64_t       ncand_local, npairs; /* and the (query, candidate) pairs scored on this rank */
  /* -score_per_token: rows r of (query, training sequence) pairs, each the terms of the sequence's tokens */
  int64_t       ptR, ptM;
  double       *pt_values;    /* (ptM) */
  int32_t      *pt_tokens;    /* (ptM) */
  int64_t      *pt_offsets;   /* (ptR+1) */
  int64_t      *pt_query, *pt_train; /* (ptR) */
  int32_t      *pt_kind;      /* (ptR) +1 proponent (top-k), -1 opponent (bottom-k) */
  InflLayerLayout layout;     /* of the factors (infl/layout.h): NULL or one group when every rank holds every layer */
  PetscInt      G;            /* its groups (1 without a layout) */
  PetscBool    *own;          /* (L) this rank holds layer l's preconditioned queries */
  PetscBool     split;        /* the layers are split inside their groups (-layer_split): this rank holds the rows Is
                                 of each owned layer's queries in the eigenbasis, dout[l] = rs (InflEKFACPreconditionSplit),
                                 and scores the rotated rows of its group's training examples */
  size_t        qdata;        /* bytes of this rank's shard of the query data set (InflScorerSetQueryData), held by the
                                 caller while scoring */
};

PetscErrorCode InflScorerSetCheckpoint(InflScorer sc, const char out[])
{
  PetscFunctionBegin;
  PetscCall(PetscStrncpy(sc->out, out ? out : "", sizeof(sc->out)));
  PetscFunctionReturn(0);
}

/* Identifies the computation a checkpoint belongs to (besides the model and data hashes). */
static PetscErrorCode scorer_key(InflScorer sc, char key[], size_t len)
{
  InflHash h;
  char     hex[65];

  PetscFunctionBegin;
  PetscCall(InflHashCreate(&h));
  PetscCall(InflHashUpdate(h, sc->qindex, sizeof(int64_t) * sc->Q));
  if (sc->qtok) { /* sequence queries: their tokens and where their loss starts (prompt/completion pairs) */
    PetscCall(InflHashUpdate(h, sc->qoff, sizeof(int64_t) * (sc->Q + 1)));
    PetscCall(InflHashUpdate(h, sc->qtok, sizeof(int32_t) * sc->qoff[sc->Q]));
    PetscCall(InflHashUpdate(h, sc->qstart, sizeof(int64_t) * sc->Q));
  }
  PetscCall(InflHashFinal(&h, hex));
  PetscCall(PetscSNPrintf(key, len, "queries %d (%.16s) topk %d save_all %d per_layer %d rank %d", (int)sc->Q, hex, (int)sc->K, (int)sc->save_all, (int)sc->per_layer, (int)sc->rank));
  if (sc->identity) { /* identity / TracIn: the checkpoints and their weights (the models' hashes, hashed) */
    size_t n;
    PetscCall(InflHashCreate(&h));
    for (PetscInt c = 0; c < sc->C; c++) {
      const char *mh;
      PetscCall(InflModelGetHash(sc->models[c], &mh));
      PetscCall(InflHashUpdate(h, mh, 64));
      PetscCall(InflHashUpdate(h, &sc->eta[c], sizeof(double)));
    }
    PetscCall(InflHashFinal(&h, hex));
    PetscCall(PetscStrlen(key, &n));
    PetscCall(PetscSNPrintf(key + n, len - n, " tracin %d (%.16s)", (int)sc->C, hex));
  }
  if (sc->tfidf_topk > 0) { /* only the candidates are scored (the lists of an ordinary run would differ) */
    size_t n;
    PetscCall(PetscStrlen(key, &n));
    PetscCall(PetscSNPrintf(key + n, len - n, " tfidf %d", (int)sc->tfidf_topk));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode capture_gradient_norms(const InflCapture *cap, double G[], double norm[]);

/* The scores file of this scorer (qnorm (Q) or NULL; the columns of -score_save_all as computed so far). */
static InflScoresFile scorer_file(InflScorer sc, const double qnorm[])
{
  InflScoresFile f = {sc->comm, sc->model_hash, sc->train_hash, sc->query_hash, sc->ntrain, sc->Q, sc->K, sc->L, sc->qindex, sc->qlabel, qnorm, sc->top, sc->bottom, sc->start, sc->count, NULL, NULL, NULL, 0, NULL};
  if (sc->save_all) {
    f.local      = sc->local;
    f.local_norm = sc->local_norm;
    f.local_layer = sc->per_layer ? sc->local_layer : NULL;
  }
  return f;
}

/* Collective: replace out.partial by the state after the examples in `done`. */
static PetscErrorCode scorer_checkpoint(InflScorer sc, const InflRanges *done)
{
  char           key[256];
  InflScoresFile f = scorer_file(sc, NULL);

  PetscFunctionBegin;
  PetscCall(scorer_key(sc, key, sizeof(key)));
  PetscCall(InflScoresCheckpointSave(&f, sc->out, key, done));
  PetscFunctionReturn(0);
}

/* Collective: if out.partial exists, check it belongs to this computation and restore it. */
static PetscErrorCode scorer_restore(InflScorer sc, InflRanges *done)
{
  char           key[256];
  InflScoresFile f = scorer_file(sc, NULL);

  PetscFunctionBegin;
  PetscCall(scorer_key(sc, key, sizeof(key)));
  PetscCall(InflScoresCheckpointLoad(&f, sc->out, key, done));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerCreate(MPI_Comm comm, InflScorer *sc)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(sc));
  (*sc)->comm  = comm;
  (*sc)->K     = 10;
  (*sc)->chunk = 1024;
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetFromOptions(InflScorer sc)
{
  PetscFunctionBegin;
  PetscOptionsBegin(sc->comm, NULL, "Influence scoring options", "InflScorer");
  PetscCall(PetscOptionsInt("-score_topk", "proponents and opponents kept per query", "InflScorerSetTopK", sc->K, &sc->K, NULL));
  PetscCall(PetscOptionsBool("-score_save_all", "write the full (queries, train) score matrix", "InflScorerSave", sc->save_all, &sc->save_all, NULL));
  PetscCall(PetscOptionsBool("-score_per_layer", "write per-layer terms", "InflScorerSave", sc->per_layer, &sc->per_layer, NULL));
  PetscCall(PetscOptionsBool("-score_per_token", "write every token's term of the top-k and bottom-k training sequences of each query", "InflScorerSave", sc->per_token, &sc->per_token, NULL));
  PetscCall(PetscOptionsInt("-score_tfidf_topk", "score only the K training sequences of highest binary-BM25 score against each query's tokens (0: all)", "InflScorerScore", sc->tfidf_topk, &sc->tfidf_topk, NULL));
  PetscCall(PetscOptionsInt("-score_chunk", "training examples (sequences) per chunk (default 1024; sequences: as many as fit in 8192 tokens, fewer for a vocabulary above 256)", "InflScorerScore", sc->chunk, &sc->chunk, &sc->chunk_set));
  {
    PetscInt rows = 0, kib = 0;
    PetscCall(PetscOptionsInt("-score_block_rows", "training rows per GEMM block of the scoring kernel (0: 1024)", "InflScoreLayerSetBlocking", rows, &rows, NULL));
    PetscCall(PetscOptionsInt("-score_block_kib", "KiB of the kernel's GEMM output block (0: 1024)", "InflScoreLayerSetBlocking", kib, &kib, NULL));
    InflScoreLayerSetBlocking(rows, (size_t)kib * 1024);
  }
  PetscCall(PetscOptionsInt("-score_rank", "rank of each layer's preconditioned query gradient (SVD truncation; 0: exact; 32 in Grosse et al. 2023)", "InflScorerSetQueries", sc->rank, &sc->rank, NULL));
  PetscOptionsEnd();
  PetscCheck(sc->rank >= 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_rank %d must be >= 0 (0: exact)", (int)sc->rank);
  PetscCheck(sc->K > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_topk %d must be positive", (int)sc->K);
  PetscCheck(sc->chunk > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_chunk %d must be positive", (int)sc->chunk);
  PetscCheck(sc->tfidf_topk >= 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_tfidf_topk %d must be >= 0 (0: score every training example)", (int)sc->tfidf_topk);
  PetscCheck(!(sc->tfidf_topk > 0 && sc->save_all), sc->comm, PETSC_ERR_ARG_INCOMP, "-score_tfidf_topk %d scores only each query's candidates, so there is no full matrix for -score_save_all; drop one of the two options", (int)sc->tfidf_topk);
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetTracIn(InflScorer sc, PetscInt C, const InflModel models[], const double eta[])
{
  PetscInt      L0, L;
  InflLinear   *lin0, *lin;
  InflPrecision p0, p;

  PetscFunctionBegin;
  PetscCheck(C >= 1 && C <= INFL_TRACIN_MAX, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "%d TracIn checkpoints: give 1 to %d (-checkpoints c1,c2,...)", (int)C, INFL_TRACIN_MAX);
  PetscCheck(!sc->Q, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflScorerSetTracIn before setting the queries");
  PetscCall(InflModelGetLayers(models[0], &L0, &lin0));
  PetscCall(InflModelGetPrecision(models[0], &p0));
  for (PetscInt c = 0; c < C; c++) {
    PetscCheck(isfinite(eta[c]) && eta[c] > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "the learning rate of TracIn checkpoint %d is %g: give a positive one (-tracin_lr)", (int)c + 1, eta[c]);
    PetscCall(InflModelGetLayers(models[c], &L, &lin));
    PetscCall(InflModelGetPrecision(models[c], &p));
    PetscCheck(L == L0 && p == p0, sc->comm, PETSC_ERR_ARG_INCOMP, "TracIn checkpoint %d has %d captured layers in %s precision, checkpoint 1 %d in %s: give checkpoints of one model (one architecture, one -model_precision)", (int)c + 1, (int)L, p ? "double" : "single", (int)L0, p0 ? "double" : "single");
    for (PetscInt l = 0; l < L; l++) PetscCheck(lin[l].din == lin0[l].din && lin[l].dout == lin0[l].dout, sc->comm, PETSC_ERR_ARG_INCOMP, "TracIn checkpoint %d: layer %d is %d x %d, in checkpoint 1 %d x %d: give checkpoints of one model", (int)c + 1, (int)l, (int)lin[l].dout, (int)lin[l].din, (int)lin0[l].dout, (int)lin0[l].din);
    sc->models[c] = models[c];
    sc->eta[c]    = eta[c];
  }
  sc->tracin = C;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTracInSelfInfluenceShard(PetscInt C, const InflModel models[], const double eta[], InflData train, int64_t lo, int64_t hi, InflCapture *caps[], double self[])
{
  PetscInt L, maxg = 1;
  double  *G, *norm;

  PetscFunctionBegin;
  PetscCall(PetscArrayzero(self, hi - lo));
  if (hi == lo) PetscFunctionReturn(0);
  PetscCall(InflModelGetLayers(models[0], &L, NULL));
  for (PetscInt l = 0; l < L; l++) maxg = PetscMax(maxg, caps[0]->dout[l] * (caps[0]->din[l] + 1));
  PetscCall(PetscMalloc2(maxg, &G, hi - lo, &norm));
  for (PetscInt c = 0; c < C; c++) {
    PetscCall(InflModelCaptureShard(models[c], train, lo, hi, INFL_FISHER_EMPIRICAL, 0, caps[c]));
    PetscCall(capture_gradient_norms(caps[c], G, norm));
    for (int64_t i = 0; i < hi - lo; i++) self[i] += eta[c] * norm[i] * norm[i];
  }
  PetscCall(PetscFree2(G, norm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerGetQueryBytes(InflScorer sc, InflModel model, PetscInt Q, InflLayerLayoutStage *st)
{
  InflPrecision prec;

  PetscFunctionBegin;
  PetscCall(InflModelGetPrecision(model, &prec));
  PetscCall(PetscMemzero(st, sizeof(*st)));
  st->stage       = "infl score"; /* refused before the factors are read when no layout fits -mem_limit */
  st->copies      = 1;
  st->items       = Q;
  st->once_weight = sizeof(double); /* the EK-FAC preconditioner's scratch (dout, din+1) */
  if (sc->rank > 0 && !sc->per_layer && !sc->per_token) { /* rank-r factors, (dout + din+1) r per query: small */
    st->once_per_item = 2 * sizeof(double);               /* this rank's block, exact, and its copy for the SVD */
  } else if (prec == INFL_PREC_SINGLE && !sc->per_layer && !sc->per_token) { /* scorer_set_layer_f32 */
    st->per_weight    = (double)Q * sizeof(float);
    st->once_per_item = sizeof(double) + sizeof(float);
    st->once_wide     = (double)Q * sizeof(float);
  } else { /* scorer_set_layer: the gathered queries in double, transposed in double (wide layers) and in float */
    st->per_weight    = (double)Q * (sizeof(double) + (prec == INFL_PREC_SINGLE ? sizeof(float) : 0));
    st->once_per_item = sizeof(double);
    st->once_wide     = (double)Q * sizeof(double);
  }
  { /* InflScorerScore's chunk derivation beyond the layers: its 4 MiB margin, the queries captured in double (all Q:
     * the block of a group is at most that), and one example of the chunk (its per-example terms, with every layer
     * counted as owned: a bound for any assignment) */
    PetscInt    L, rows, maxa = 1, maxs = 1;
    InflLinear *lin;
    double      owned = 0, es = prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float), q = (double)Q;
    size_t      cap = InflModelCaptureBytes(model);
    PetscCall(InflModelGetLayers(model, &L, &lin));
    PetscCall(InflModelGetMaxRows(model, &rows));
    for (PetscInt l = 0; l < L; l++) {
      owned += (double)(lin[l].din + 1 + lin[l].dout);
      maxa = PetscMax(maxa, lin[l].din + 1);
      maxs = PetscMax(maxs, lin[l].dout);
    }
    st->other                = 4 * 1024 * 1024 + (size_t)Q * cap * (prec == INFL_PREC_DOUBLE ? 1 : 2);
    st->per_example          = (double)(sc->tracin ? sc->tracin : 1) * (double)cap + /* sc->C is set with the queries */ sizeof(double) * q * 2 + 2 * sizeof(double) * q * (double)rows;
    st->per_example_group    = (double)rows * (owned * es + 2 * sizeof(double) * q) + 2 * sizeof(double) * q * (double)(1 + L);
    st->per_example_split    = (double)rows * (5 * sizeof(double) * (double)maxa + owned * es + 2 * sizeof(double) * q) + sizeof(double) * q * (double)(1 + L);
    st->per_example_split_sq = (double)rows * 5 * sizeof(double) * (double)maxs;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerGetResultBytes(InflScorer sc, PetscInt Q, PetscInt L, int64_t count, size_t *bytes)
{
  PetscFunctionBegin;
  *bytes = 0;
  if (sc->save_all) *bytes = sizeof(double) * ((size_t)Q * (size_t)count * (sc->per_layer ? 1 + (size_t)L : 1) + (size_t)count);
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetTopK(InflScorer sc, PetscInt K)
{
  PetscFunctionBegin;
  PetscCheck(K > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "top-k size %d must be positive", (int)K);
  sc->K = K;
  PetscFunctionReturn(0);
}

static PetscErrorCode scorer_free_queries(InflScorer sc)
{
  PetscFunctionBegin;
  for (PetscInt l = 0; l < sc->L; l++) {
    PetscCall(PetscFree(sc->P64[l]));
    PetscCall(PetscFree(sc->P32[l]));
    PetscCall(PetscFree(sc->Pq[l]));
    PetscCall(PetscFree(sc->U64[l]));
    PetscCall(PetscFree(sc->V64[l]));
    PetscCall(PetscFree(sc->U32[l]));
    PetscCall(PetscFree(sc->V32[l]));
  }
  PetscCall(PetscFree3(sc->P64, sc->P32, sc->Pq));
  PetscCall(PetscFree5(sc->lr, sc->U64, sc->V64, sc->U32, sc->V32));
  if (sc->scale) for (PetscInt l = 0; l < sc->L; l++) PetscCall(PetscFree(sc->scale[l]));
  PetscCall(PetscFree(sc->scale));
  PetscCall(PetscFree3(sc->din, sc->dout, sc->by_input));
  PetscCall(PetscFree(sc->own));
  PetscCall(PetscFree2(sc->qindex, sc->qlabel));
  PetscCall(PetscFree2(sc->qpred, sc->qprob));
  PetscCall(PetscFree(sc->qnorm2));
  PetscCall(PetscFree(sc->qloss));
  PetscCall(PetscFree3(sc->qtok, sc->qoff, sc->qstart));
  sc->L = 0;
  PetscFunctionReturn(0);
}

/* The rank-r factors of every query's P_q for layer l, given per query in UV (Q, (nd + na) r): U_r S_r (nd, r) then
 * V_r (na, r), row-major.  Lays them out as U (nd, Q*r) and V (na, Q*r) for the kernel, and in single precision as
 * floats with U scaled per query. */
static PetscErrorCode scorer_set_low_rank(InflScorer sc, PetscInt l, PetscInt nd, PetscInt na, const double UV[])
{
  PetscInt Q = sc->Q, r = sc->rank;
  int64_t  w = (int64_t)Q * r, wq = (int64_t)(nd + na) * r;

  PetscFunctionBegin;
  sc->lr[l] = r;
  for (PetscInt q = 0; q < Q; q++) /* V_r has orthonormal columns: ||U_r S_r V_r^T||_F = ||U_r S_r||_F */
    for (int64_t i = 0; i < (int64_t)nd * r; i++) sc->qnorm2[q] += UV[(int64_t)q * wq + i] * UV[(int64_t)q * wq + i];
  PetscCall(PetscMalloc1((size_t)nd * w, &sc->U64[l]));
  PetscCall(PetscMalloc1((size_t)na * w, &sc->V64[l]));
  for (PetscInt q = 0; q < Q; q++) {
    const double *Uq = UV + (int64_t)q * wq, *Vq = Uq + (int64_t)nd * r;
    for (PetscInt i = 0; i < nd; i++) PetscCall(PetscArraycpy(sc->U64[l] + (int64_t)i * w + (int64_t)q * r, Uq + (int64_t)i * r, r));
    for (PetscInt j = 0; j < na; j++) PetscCall(PetscArraycpy(sc->V64[l] + (int64_t)j * w + (int64_t)q * r, Vq + (int64_t)j * r, r));
  }
  if (sc->prec == INFL_PREC_SINGLE) {
    PetscCall(PetscMalloc1(Q, &sc->scale[l]));
    for (PetscInt q = 0; q < Q; q++) {
      double m = 0;
      for (PetscInt i = 0; i < nd; i++)
        for (PetscInt c = 0; c < r; c++) m = PetscMax(m, PetscAbsReal(sc->U64[l][(int64_t)i * w + (int64_t)q * r + c]));
      sc->scale[l][q] = m > 0 ? m : 1;
    }
    PetscCall(PetscMalloc1((size_t)nd * w, &sc->U32[l]));
    PetscCall(PetscMalloc1((size_t)na * w, &sc->V32[l]));
    for (PetscInt i = 0; i < nd; i++)
      for (PetscInt q = 0; q < Q; q++)
        for (PetscInt c = 0; c < r; c++) sc->U32[l][(int64_t)i * w + (int64_t)q * r + c] = (float)(sc->U64[l][(int64_t)i * w + (int64_t)q * r + c] / sc->scale[l][q]);
    for (int64_t i = 0; i < (int64_t)na * w; i++) sc->V32[l][i] = (float)sc->V64[l][i];
  }
  PetscFunctionReturn(0);
}

/* Rank-r truncation of n queries' P (n, nd, na) in place (so that per-layer terms and scores agree), with their
 * factors in UV (n, (nd + na) r) as scorer_set_low_rank takes them. */
static PetscErrorCode low_rank_factors(PetscInt n, PetscInt nd, PetscInt na, PetscInt r, double P[], double UV[])
{
  int64_t wq = (int64_t)(nd + na) * r;

  PetscFunctionBegin;
  for (PetscInt q = 0; q < n; q++) PetscCall(InflLowRankApprox(nd, na, r, P + (int64_t)q * nd * na, UV + (int64_t)q * wq, UV + (int64_t)q * wq + (int64_t)nd * r));
  PetscFunctionReturn(0);
}

/* Rank-r truncation of every query's P_q for layer l (all queries, on this rank): Pq[l] is replaced by the truncation. */
static PetscErrorCode scorer_low_rank(InflScorer sc, PetscInt l, PetscInt nd, PetscInt na)
{
  double *UV;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1((size_t)sc->Q * (nd + na) * sc->rank, &UV));
  PetscCall(low_rank_factors(sc->Q, nd, na, sc->rank, sc->Pq[l], UV));
  PetscCall(scorer_set_low_rank(sc, l, nd, na, UV));
  PetscCall(PetscFree(UV));
  PetscFunctionReturn(0);
}

/* Takes ownership of P[l] (each (Q, dout, din+1), allocated with PetscMalloc). */
static PetscErrorCode scorer_set_queries_owned(InflScorer sc, InflModel model, PetscInt Q, double *P[], const int64_t yq[], const int64_t qindex[]);

PetscErrorCode InflScorerSetPreconditionedQueries(InflScorer sc, InflModel model, PetscInt Q, const double *const P[], const int64_t yq[], const int64_t qindex[])
{
  PetscInt    L;
  InflLinear *lin;
  double    **Pc;

  PetscFunctionBegin;
  PetscCheck(!sc->tracin, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "queries preconditioned elsewhere cannot be scored with TracIn (InflScorerSetTracIn)");
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(PetscMalloc1(L, &Pc));
  for (PetscInt l = 0; l < L; l++) {
    size_t n = (size_t)Q * lin[l].dout * (lin[l].din + 1);
    PetscCall(PetscMalloc1(n, &Pc[l]));
    PetscCall(PetscArraycpy(Pc[l], P[l], n));
  }
  PetscCall(scorer_set_queries_owned(sc, model, Q, Pc, yq, qindex));
  PetscCall(PetscFree(Pc));
  PetscFunctionReturn(0);
}

/* Start a query set: checks, bookkeeping; the layers follow with scorer_set_layer. */
static PetscErrorCode scorer_begin_queries(InflScorer sc, InflModel model, PetscInt Q, const int64_t yq[], const int64_t qindex[])
{
  PetscInt    din, C, L;
  InflLinear *lin;

  PetscFunctionBegin;
  PetscCall(scorer_free_queries(sc));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(InflModelGetSizes(model, &din, &C));
  PetscCheck(Q > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "no queries given; pass -query_indices");
  for (PetscInt q = 0; yq && q < Q; q++) PetscCheck(yq[q] >= 0 && yq[q] < C, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "query %" PRId64 " has label %" PRId64 " outside the model's %d classes", qindex ? qindex[q] : (int64_t)q, yq[q], (int)C);
  PetscCheck(!sc->tracin || model == sc->models[0], sc->comm, PETSC_ERR_ARG_WRONG, "with TracIn the queries are set with the first checkpoint's model (InflScorerSetTracIn)");
  sc->model = model;
  sc->C     = sc->tracin ? sc->tracin : 1;
  sc->Lm    = L;
  if (!sc->tracin) {
    sc->models[0] = model;
    sc->eta[0]    = 1;
  }
  L     = sc->C * sc->Lm; /* the layers of every checkpoint, checkpoint-major */
  sc->L        = L;
  sc->Q        = Q;
  sc->identity = PETSC_FALSE;
  PetscCall(InflModelGetPrecision(model, &sc->prec));
  PetscCall(PetscCalloc3(L, &sc->P64, L, &sc->P32, L, &sc->Pq));
  PetscCall(PetscCalloc5(L, &sc->lr, L, &sc->U64, L, &sc->V64, L, &sc->U32, L, &sc->V32));
  PetscCall(PetscCalloc1(L, &sc->scale));
  PetscCall(PetscMalloc3(L, &sc->din, L, &sc->dout, L, &sc->by_input));
  PetscCall(PetscMalloc1(L, &sc->own));
  for (PetscInt l = 0; l < L; l++) sc->own[l] = PETSC_TRUE; /* InflScorerSetPreconditionedQueries: every layer */
  sc->layout = NULL;
  sc->G      = 1;
  PetscCall(PetscMalloc2(Q, &sc->qindex, Q, &sc->qlabel));
  PetscCall(PetscCalloc1(Q, &sc->qnorm2));
  for (PetscInt q = 0; q < Q; q++) {
    sc->qindex[q] = qindex ? qindex[q] : q;
    sc->qlabel[q] = yq ? yq[q] : -1; /* sequences: no class label */
  }
  {
    PetscBool seqmodel;
    PetscCall(InflModelIsSequential(model, &seqmodel));
    sc->dmax = 1;
    for (PetscInt l = 0; l < L; l++) {
      sc->din[l]      = lin[l % sc->Lm].din;
      sc->dout[l]     = lin[l % sc->Lm].dout;
      sc->by_input[l] = seqmodel || sc->dout[l] <= sc->din[l] + 1 ? PETSC_TRUE : PETSC_FALSE;
      sc->dmax        = PetscMax(sc->dmax, sc->din[l] + 1);
    }
  }
  {
    const char *h;
    PetscCall(InflModelGetHash(model, &h));
    PetscCall(PetscStrncpy(sc->model_hash, h, sizeof(sc->model_hash)));
  }
  PetscFunctionReturn(0);
}

/* Layer l's preconditioned query gradients Pl (Q, dout, din+1), taken over (freed or kept): the scoring layouts. */
static PetscErrorCode scorer_set_layer(InflScorer sc, PetscInt l, double *Pl)
{
  PetscInt Q = sc->Q, na = sc->din[l] + 1, nd = sc->dout[l];
  int64_t  per = (int64_t)nd * na;

  PetscFunctionBegin;
  sc->Pq[l] = Pl;
  if (sc->rank > 0 && PetscMin(nd, na) > sc->rank) {
    PetscCall(scorer_low_rank(sc, l, nd, na));
    PetscFunctionReturn(0);
  }
  for (PetscInt q = 0; q < Q; q++)
    for (int64_t i = 0; i < per; i++) sc->qnorm2[q] += Pl[(int64_t)q * per + i] * Pl[(int64_t)q * per + i];
  if (!sc->by_input[l]) { /* (dout, Q*(din+1)); when by_input the layout (Q*dout, din+1) is Pq itself */
    PetscCall(PetscMalloc1((size_t)Q * per, &sc->P64[l]));
    for (PetscInt q = 0; q < Q; q++)
      for (PetscInt i = 0; i < nd; i++)
        for (PetscInt j = 0; j < na; j++) sc->P64[l][(int64_t)i * Q * na + (int64_t)q * na + j] = sc->Pq[l][(int64_t)q * per + (int64_t)i * na + j];
  }
  if (sc->prec == INFL_PREC_SINGLE) {
    PetscCall(PetscMalloc1(Q, &sc->scale[l]));
    for (PetscInt q = 0; q < Q; q++) {
      double m = 0;
      for (int64_t i = 0; i < per; i++) m = PetscMax(m, PetscAbsReal(sc->Pq[l][(int64_t)q * per + i]));
      sc->scale[l][q] = m > 0 ? m : 1;
    }
    PetscCall(PetscMalloc1((size_t)Q * per, &sc->P32[l]));
    if (sc->by_input[l]) /* (Q*nd, na): query q's rows are contiguous */
      for (PetscInt q = 0; q < Q; q++)
        for (int64_t i = 0; i < per; i++) sc->P32[l][(int64_t)q * per + i] = (float)(sc->Pq[l][(int64_t)q * per + i] / sc->scale[l][q]);
    else /* (nd, Q*na) */
      for (PetscInt i = 0; i < nd; i++)
        for (PetscInt q = 0; q < Q; q++)
          for (PetscInt j = 0; j < na; j++) sc->P32[l][(int64_t)i * Q * na + (int64_t)q * na + j] = (float)(sc->P64[l][(int64_t)i * Q * na + (int64_t)q * na + j] / sc->scale[l][q]);
    /* in single precision the double copies are needed only for per-layer terms */
    PetscCall(PetscFree(sc->P64[l]));
    if (!sc->per_layer && !sc->per_token) PetscCall(PetscFree(sc->Pq[l]));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode scorer_set_queries_owned(InflScorer sc, InflModel model, PetscInt Q, double *P[], const int64_t yq[], const int64_t qindex[])
{
  PetscFunctionBegin;
  PetscCall(scorer_begin_queries(sc, model, Q, yq, qindex));
  for (PetscInt l = 0; l < sc->L; l++) {
    PetscCall(scorer_set_layer(sc, l, P[l]));
    P[l] = NULL;
  }
  PetscFunctionReturn(0);
}

/* all (Q, per) = every rank's block of queries (InflPartition of Q over comm), `per` doubles per query, from mine.
 * counts, displs: scratch of the communicator's size. */
static PetscErrorCode gather_query_blocks_type(MPI_Comm comm, PetscInt Q, int64_t per, MPI_Datatype type, const void *mine, void *all, PetscMPIInt counts[], PetscMPIInt displs[])
{
  PetscMPIInt rank, size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  for (PetscMPIInt r = 0; r < size; r++) {
    int64_t s0, sn;
    InflPartition(Q, size, r, &s0, &sn);
    PetscCall(InflMPIIntCast(sn * per, "block of gathered query data", &counts[r]));
    PetscCall(InflMPIIntCast(s0 * per, "offset of gathered query data", &displs[r]));
  }
  PetscCallMPI(MPI_Allgatherv(mine, counts[rank], type, all, counts, displs, type, comm));
  PetscFunctionReturn(0);
}

static PetscErrorCode gather_query_blocks(MPI_Comm comm, PetscInt Q, int64_t per, const double mine[], double all[], PetscMPIInt counts[], PetscMPIInt displs[])
{
  PetscFunctionBegin;
  PetscCall(gather_query_blocks_type(comm, Q, per, MPI_DOUBLE, mine, all, counts, displs));
  PetscFunctionReturn(0);
}

/* scorer_set_layer in single precision when only P32 is kept (no -score_per_layer, -score_per_token, -score_rank):
 * each rank scales and converts its own block of the queries (mine (nq, dout, din+1) from query q0, freed here) and
 * the float blocks are gathered, so no rank holds all Q queries of the layer in double (the conversion is that of
 * scorer_set_layer, done by the query's owner).  Per weight a rank holds at most 12 nq bytes (its block in double and
 * in float) or 4 nq + 4 Q (its floats and the gathered ones), and for a wide layer (not by_input) the gathered floats
 * beside P32 while they are transposed. */
static PetscErrorCode scorer_set_layer_f32(InflScorer sc, PetscInt l, MPI_Comm group, int64_t q0, int64_t nq, double *mine, PetscMPIInt counts[], PetscMPIInt displs[])
{
  PetscInt Q = sc->Q, na = sc->din[l] + 1, nd = sc->dout[l];
  int64_t  per = (int64_t)nd * na;
  float   *mine32, *all;
  double  *sn; /* (2, Q): scale[q] and ||P_q||^2 of this rank's queries (zero elsewhere), then summed: everyone's */

  PetscFunctionBegin;
  PetscCall(PetscCalloc1(2 * (size_t)Q, &sn));
  PetscCall(PetscMalloc1((size_t)PetscMax(nq, 1) * per, &mine32));
  for (int64_t k = 0; k < nq; k++) {
    const double *p  = mine + k * per;
    double        m  = 0, s2 = 0;
    float        *p32 = mine32 + k * per;
    for (int64_t i = 0; i < per; i++) {
      m = PetscMax(m, PetscAbsReal(p[i]));
      s2 += p[i] * p[i];
    }
    sn[q0 + k]     = m > 0 ? m : 1;
    sn[Q + q0 + k] = s2;
    for (int64_t i = 0; i < per; i++) p32[i] = (float)(p[i] / sn[q0 + k]);
  }
  PetscCall(PetscFree(mine));
  PetscCall(InflAllreduceSum(sn, 2 * (int64_t)Q, MPI_DOUBLE, group));
  PetscCall(PetscMalloc1(Q, &sc->scale[l]));
  for (PetscInt q = 0; q < Q; q++) {
    sc->scale[l][q] = sn[q];
    sc->qnorm2[q] += sn[Q + q];
  }
  PetscCall(PetscFree(sn));
  PetscCall(PetscMalloc1((size_t)Q * per, &all));
  PetscCall(gather_query_blocks_type(group, Q, per, MPI_FLOAT, mine32, all, counts, displs));
  PetscCall(PetscFree(mine32));
  if (sc->by_input[l]) sc->P32[l] = all; /* (Q*nd, na): query q's rows are contiguous */
  else { /* (nd, Q*na) */
    PetscCall(PetscMalloc1((size_t)Q * per, &sc->P32[l]));
    for (PetscInt i = 0; i < nd; i++)
      for (PetscInt q = 0; q < Q; q++) PetscCall(PetscArraycpy(sc->P32[l] + (int64_t)i * Q * na + (int64_t)q * na, all + (int64_t)q * per + (int64_t)i * na, na));
    PetscCall(PetscFree(all));
  }
  PetscFunctionReturn(0);
}

/* Split layers in single precision without per-layer or per-token terms: the queries' rows Is of layer l set query
 * by query into P32 (scaled as scorer_set_layer does), so no rank holds the Q queries of a layer in double. */
static PetscErrorCode scorer_set_layer_split_f32(InflScorer sc, InflEKFAC ek, PetscInt l, PetscInt lm, const InflEKFACGroupRows *g)
{
  PetscInt Q = sc->Q, na = sc->din[l] + 1, nd = sc->dout[l];
  int64_t  per = (int64_t)nd * na;
  double  *W;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1((size_t)per + 1, &W));
  PetscCall(PetscMalloc1(Q, &sc->scale[l]));
  PetscCall(PetscMalloc1((size_t)Q * per + 1, &sc->P32[l]));
  for (PetscInt q = 0; q < Q; q++) {
    double m = 0, s2 = 0;
    PetscCall(InflEKFACPreconditionSplit(ek, lm, g, q, q + 1, W));
    for (int64_t i = 0; i < per; i++) {
      m = PetscMax(m, PetscAbsReal(W[i]));
      s2 += W[i] * W[i];
    }
    sc->qnorm2[q] += s2;
    sc->scale[l][q] = m > 0 ? m : 1;
    if (sc->by_input[l]) /* (Q*nd, na) */
      for (int64_t i = 0; i < per; i++) sc->P32[l][(int64_t)q * per + i] = (float)(W[i] / sc->scale[l][q]);
    else /* (nd, Q*na) */
      for (PetscInt i = 0; i < nd; i++)
        for (PetscInt j = 0; j < na; j++) sc->P32[l][(int64_t)i * Q * na + (int64_t)q * na + j] = (float)(W[(int64_t)i * na + j] / sc->scale[l][q]);
  }
  PetscCall(PetscFree(W));
  PetscFunctionReturn(0);
}

/* Captures this rank's block [q0, q0 + nq) of the queries into cap (a double-precision capture of capacity nq). */
typedef PetscErrorCode (*QueryCaptureFn)(void *ctx, InflModel model, int64_t q0, int64_t nq, InflCapture *cap);

/* The identity "preconditioner" of layer l: P (B, dout, din+1) = eta times each captured sequence's token-summed
 * gradient DW = Ds_b^T A_b (double capture). */
static PetscErrorCode capture_layer_gradients(const InflCapture *cap, PetscInt l, double eta, double P[])
{
  PetscInt na = cap->din[l] + 1, nd = cap->dout[l];

  PetscFunctionBegin;
  PetscCheck(cap->prec == INFL_PREC_DOUBLE, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "query gradients are formed from a double-precision capture");
  for (PetscInt b = 0; b < cap->B; b++) {
    int64_t r0 = cap->offsets[b], nr = cap->offsets[b + 1] - r0;
    double *G = P + (int64_t)b * nd * na;
    if (nr == 0) PetscCall(PetscArrayzero(G, (size_t)nd * na));
    else cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, (int)nr, eta, cap->ds64[l] + r0 * nd, nd, cap->a64[l] + r0 * na, na, 0.0, G, na);
  }
  PetscFunctionReturn(0);
}

/* After scorer_begin_queries: the queries' gradients in double (each rank its block of queries, captured by fn with
 * each checkpoint's model), preconditioned (EK-FAC, or the identity times eta_c when ek is NULL), all-gathered and
 * laid out for scoring as layers c Lm + l; their losses (under the first model) gathered into sc->qloss. */
static PetscErrorCode scorer_precondition_queries(InflScorer sc, InflModel model, InflEKFAC ek, QueryCaptureFn fn, void *ctx)
{
  PetscMPIInt   rank, size, *counts, *displs;
  int64_t       q0, nq;
  PetscInt      Q = sc->Q;
  InflLinear   *lin;
  InflCapture  *cap;
  InflPrecision prec;
  double      **P;
  MPI_Comm      group = sc->comm, cross = MPI_COMM_NULL;

  PetscFunctionBegin;
  PetscCheck(!ek || sc->C == 1, sc->comm, PETSC_ERR_ARG_INCOMP, "TracIn over %d checkpoints scores plain gradients: set the queries with no EK-FAC factors", (int)sc->C);
  /* the layers' owners (infl/layout.h): the ranks of a group precondition the queries of the group's layers, each
   * rank a block of the queries, gathered inside the group.  The identity preconditioner (ek NULL: TracIn) has no
   * factors and so no layout: every rank holds every layer (G = 1). */
  if (ek) PetscCall(InflEKFACGetLayout(ek, &sc->layout));
  if (sc->layout) {
    PetscCall(InflLayerLayoutGetGroups(sc->layout, &sc->G, NULL, NULL, NULL));
    PetscCall(InflLayerLayoutGetComms(sc->layout, NULL, &group, &cross));
    for (PetscInt l = 0; l < sc->L; l++) sc->own[l] = InflLayerLayoutOwns(sc->layout, l);
    sc->split = InflLayerLayoutIsSplit(sc->layout);
  }
  if (sc->split) { /* each owned layer's queries: this rank's rows Is in the eigenbasis */
    InflEKFACLayer *ly;
    PetscBool       seqmodel;
    InflCheckAll(sc->comm, sc->rank == 0, PETSC_ERR_SUP, "-score_rank %d needs each layer's whole preconditioned query gradients (an SVD of each), but the factors are split over the ranks of each layer group (-layer_split true): give -layer_split false, or drop -score_rank", (int)sc->rank);
    PetscCall(InflEKFACGetLayers(ek, NULL, &ly));
    PetscCall(InflModelIsSequential(model, &seqmodel));
    for (PetscInt l = 0; l < sc->L; l++)
      if (sc->own[l]) {
        sc->dout[l]     = ly[l].rs;
        sc->by_input[l] = seqmodel || sc->dout[l] <= sc->din[l] + 1 ? PETSC_TRUE : PETSC_FALSE;
      }
  }
  PetscCallMPI(MPI_Comm_rank(group, &rank));
  PetscCallMPI(MPI_Comm_size(group, &size));
  PetscCall(InflModelGetLayers(model, NULL, &lin));
  InflPartition(Q, size, rank, &q0, &nq);
  PetscCall(InflModelGetPrecision(model, &prec));
  PetscCall(PetscMalloc2(size, &counts, size, &displs));
  PetscCall(PetscCalloc1(sc->L, &P));
  sc->prec     = prec; /* the models work in double here only to precondition the queries */
  sc->identity = ek ? PETSC_FALSE : PETSC_TRUE;
  for (PetscInt c = 0; c < sc->C; c++) {
    InflModel mc = sc->models[c];
    PetscCall(InflModelSetPrecision(mc, INFL_PREC_DOUBLE));
    PetscCall(InflCaptureCreate(mc, (PetscInt)PetscMax(nq, 1), &cap));
    if (nq > 0) PetscCall((*fn)(ctx, mc, q0, nq, cap));
    if (c == 0) {
      PetscCall(PetscMalloc1(Q, &sc->qloss));
      PetscCall(gather_query_blocks(group, Q, 1, cap->loss, sc->qloss, counts, displs));
    }
    for (PetscInt lm = 0; lm < sc->Lm; lm++) {
      PetscInt l = c * sc->Lm + lm, na = lin[lm].din + 1, nd = lin[lm].dout;
      int64_t  per = (int64_t)nd * na;
      double  *mine;
      if (!sc->own[l]) continue; /* held by another group */
      if (sc->split) { /* collective over the group: every query's rows Is (the queries' rows gathered in the group) */
        InflEKFACGroupRows g;
        int64_t            pl = (int64_t)sc->dout[l] * na;
        PetscCall(InflEKFACGatherGroupRows(ek, lm, cap, PETSC_TRUE, &g));
        PetscCheck(g.B == Q, PETSC_COMM_SELF, PETSC_ERR_PLIB, "gathered %d queries of %d", (int)g.B, (int)Q);
        if (prec == INFL_PREC_SINGLE && !sc->per_layer && !sc->per_token) { /* only floats are kept: query by query */
          PetscCall(scorer_set_layer_split_f32(sc, ek, l, lm, &g));
          continue;
        }
        PetscCall(PetscMalloc1((size_t)Q * pl + 1, &P[l]));
        PetscCall(InflEKFACPreconditionSplit(ek, lm, &g, 0, Q, P[l]));
        PetscCall(scorer_set_layer(sc, l, P[l]));
        P[l] = NULL;
        continue;
      }
      PetscCall(PetscMalloc1((size_t)PetscMax(nq, 1) * per, &mine));
      if (nq > 0 && ek) PetscCall(InflEKFACPreconditionCapture(ek, lm, cap, mine));
      else if (nq > 0) PetscCall(capture_layer_gradients(cap, lm, sc->eta[c], mine));
      if (sc->rank > 0 && PetscMin(nd, na) > sc->rank && !sc->per_layer && !sc->per_token) {
        /* low rank: each rank factors its own queries and only the factors are gathered (per-layer and per-token
         * terms need the truncated P itself on every rank, and take the path below) */
        int64_t wq = (int64_t)(nd + na) * sc->rank;
        double *myUV;
        PetscCall(PetscMalloc2((size_t)PetscMax(nq, 1) * wq, &myUV, (size_t)Q * wq, &P[l]));
        if (nq > 0) PetscCall(low_rank_factors((PetscInt)nq, nd, na, sc->rank, mine, myUV));
        PetscCall(PetscFree(mine));
        PetscCall(gather_query_blocks(group, Q, wq, myUV, P[l], counts, displs));
        PetscCall(scorer_set_low_rank(sc, l, nd, na, P[l]));
        PetscCall(PetscFree2(myUV, P[l]));
        continue;
      }
      if (prec == INFL_PREC_SINGLE && !sc->per_layer && !sc->per_token) { /* only floats are kept */
        PetscCall(scorer_set_layer_f32(sc, l, group, q0, nq, mine, counts, displs));
        continue;
      }
      PetscCall(PetscMalloc1((size_t)Q * per, &P[l]));
      PetscCall(gather_query_blocks(group, Q, per, mine, P[l], counts, displs));
      PetscCall(PetscFree(mine));
      PetscCall(scorer_set_layer(sc, l, P[l])); /* one layer's double copy at a time */
      P[l] = NULL;
    }
    PetscCall(InflCaptureDestroy(&cap));
    PetscCall(InflModelSetPrecision(mc, prec));
  }
  PetscCall(PetscFree2(counts, displs));
  if (sc->split) PetscCall(InflAllreduceSum(sc->qnorm2, Q, MPI_DOUBLE, group)); /* ||W_q||^2 over the rows Is */
  if (sc->G > 1) PetscCall(InflAllreduceSum(sc->qnorm2, Q, MPI_DOUBLE, cross)); /* ||P_q||^2 over all layers */
  if (ek) PetscCall(InflEKFACFreeScratch(ek)); /* the queries' group rows */
  sc->ek = ek;
  PetscCall(PetscFree(P));
  PetscFunctionReturn(0);
}

typedef struct {
  const float   *x;
  const int64_t *y;
  PetscInt       din;
} RowQueries;

static PetscErrorCode capture_row_queries(void *ctx, InflModel model, int64_t q0, int64_t nq, InflCapture *cap)
{
  RowQueries *r = (RowQueries *)ctx;

  PetscFunctionBegin;
  PetscCall(InflModelCapture(model, (PetscInt)nq, r->x + q0 * r->din, r->y + q0, cap));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetQueries(InflScorer sc, InflModel model, InflEKFAC ek, PetscInt Q, const float xq[], const int64_t yq[], const int64_t qindex[])
{
  PetscInt   din, C;
  RowQueries rq;

  PetscFunctionBegin;
  PetscCall(InflModelGetSizes(model, &din, &C));
  PetscCheck(Q > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "no queries given; pass -query_indices");
  for (PetscInt q = 0; q < Q; q++) PetscCheck(yq[q] >= 0 && yq[q] < C, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "query %" PRId64 " has label %" PRId64 " outside the model's %d classes", qindex ? qindex[q] : (int64_t)q, yq[q], (int)C);
  PetscCall(scorer_begin_queries(sc, model, Q, yq, qindex));
  { /* the model's prediction for every query, for the report (every rank computes all: Q forward passes) */
    float *z;
    PetscCall(PetscMalloc1((size_t)Q * C, &z));
    PetscCall(PetscMalloc2(Q, &sc->qpred, Q, &sc->qprob));
    PetscCall(InflModelForward(model, Q, xq, z));
    for (PetscInt q = 0; q < Q; q++) {
      const float *zq = z + (int64_t)q * C;
      PetscInt     am = 0;
      double       Z  = 0;
      for (PetscInt c = 1; c < C; c++) if (zq[c] > zq[am]) am = c;
      for (PetscInt c = 0; c < C; c++) Z += exp((double)zq[c] - (double)zq[am]);
      sc->qpred[q] = am;
      sc->qprob[q] = 1.0 / Z;
    }
    PetscCall(PetscFree(z));
  }
  rq = (RowQueries){xq, yq, din};
  PetscCall(scorer_precondition_queries(sc, model, ek, capture_row_queries, &rq));
  PetscFunctionReturn(0);
}

typedef struct {
  const int64_t *offsets;
  const int32_t *tokens, *targets;
} SeqQueries;

static PetscErrorCode capture_sequence_queries(void *ctx, InflModel model, int64_t q0, int64_t nq, InflCapture *cap)
{
  SeqQueries *s = (SeqQueries *)ctx;
  int64_t    *boff; /* (nq+1) */

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(nq + 1, &boff));
  for (int64_t b = 0; b <= nq; b++) boff[b] = s->offsets[q0 + b] - s->offsets[q0];
  PetscCall(InflModelCaptureSequences(model, (PetscInt)nq, boff, s->tokens + s->offsets[q0], s->targets ? s->targets + s->offsets[q0] : NULL, cap));
  PetscCall(PetscFree(boff));
  PetscFunctionReturn(0);
}

/* Keep the queries' tokens and where each one's loss starts (the first row that predicts a token of the loss, +1:
 * the position of that token) for /query_sequences, -score_tfidf_topk and the checkpoint key. */
static PetscErrorCode scorer_keep_query_tokens(InflScorer sc, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[])
{
  PetscFunctionBegin;
  PetscCall(PetscFree3(sc->qtok, sc->qoff, sc->qstart));
  PetscCall(PetscMalloc3(PetscMax(offsets[Q], 1), &sc->qtok, Q + 1, &sc->qoff, Q, &sc->qstart));
  PetscCall(PetscArraycpy(sc->qtok, tokens, offsets[Q]));
  PetscCall(PetscArraycpy(sc->qoff, offsets, Q + 1));
  for (PetscInt q = 0; q < Q; q++) {
    int64_t r = offsets[q];
    if (targets) while (r < offsets[q + 1] && targets[r] < 0) r++;
    sc->qstart[q] = r - offsets[q] + 1;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetQueryTokens(InflScorer sc, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[])
{
  PetscFunctionBegin;
  PetscCheck(Q == sc->Q && Q > 0, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "InflScorerSetQueryTokens: %d queries, but the scorer holds %d; call it after setting the queries", (int)Q, (int)sc->Q);
  PetscCall(scorer_keep_query_tokens(sc, Q, offsets, tokens, targets));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetQuerySequences(InflScorer sc, InflModel model, InflEKFAC ek, PetscInt Q, const int64_t offsets[], const int32_t tokens[], const int32_t targets[], const int64_t qindex[])
{
  SeqQueries sq = {offsets, tokens, targets};
  PetscBool  seqmodel;

  PetscFunctionBegin;
  PetscCall(InflModelIsSequential(model, &seqmodel));
  PetscCheck(seqmodel, sc->comm, PETSC_ERR_ARG_WRONG, "queries given as token sequences, but the model reads rows of features; give row queries (idx:, h5:)");
  PetscCheck(Q > 0, sc->comm, PETSC_ERR_ARG_OUTOFRANGE, "no queries given; pass -query_indices or -query_prompts");
  PetscCall(scorer_begin_queries(sc, model, Q, NULL, qindex));
  PetscCall(scorer_keep_query_tokens(sc, Q, offsets, tokens, targets));
  PetscCall(scorer_precondition_queries(sc, model, ek, capture_sequence_queries, &sq));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetQueryData(InflScorer sc, InflModel model, InflEKFAC ek, InflData query, PetscInt Q, const int64_t qidx[])
{
  PetscBool seqmodel;
  int64_t   d;

  PetscFunctionBegin;
  PetscCall(InflModelCheckData(model, query));
  PetscCall(InflModelIsSequential(model, &seqmodel));
  PetscCall(InflDataGetSizes(query, NULL, &d, NULL));
  if (!seqmodel) {
    float   *xq; /* (Q, d) */
    int64_t *yq; /* (Q) */
    PetscCall(PetscMalloc2((size_t)Q * d, &xq, Q, &yq));
    PetscCall(InflDataGetExamples(query, Q, qidx, xq, yq));
    PetscCall(InflDataFreeCache(query)); /* a .gz file's copy, made for queries of other ranks' shards */
    PetscCall(InflDataGetBytes(query, &sc->qdata)); /* held by the caller while scoring */
    PetscCall(InflScorerSetQueries(sc, model, ek, Q, xq, yq, qidx));
    PetscCall(PetscFree2(xq, yq));
  } else {
    int32_t *tok; /* (Q * seq_len) */
    int64_t *off; /* (Q+1) */
    PetscCall(PetscMalloc2((size_t)Q * d, &tok, Q + 1, &off));
    PetscCall(InflDataGetSequences(query, Q, qidx, tok, off));
    PetscCall(InflDataGetBytes(query, &sc->qdata)); /* held by the caller while scoring */
    PetscCall(InflScorerSetQuerySequences(sc, model, ek, Q, off, tok, NULL, qidx));
    PetscCall(PetscFree2(tok, off));
  }
  PetscFunctionReturn(0);
}

/* The capture the kernels contract with the queries: the scorer's model's, or with TracIn the captures of every
 * checkpoint's model side by side as one capture of C Lm layers (views: the rows, offsets and losses are cap[0]'s). */
typedef struct {
  PetscInt     C;
  InflCapture *cap[INFL_TRACIN_MAX]; /* (C) one per model */
  InflCapture  all;                  /* C > 1: the layers of cap[0], ..., cap[C-1] */
  PetscInt    *din, *dout;           /* (C Lm) arrays of `all` */
  float      **a32, **ds32;
  double     **a64, **ds64;
} ScoreCapture;

static PetscErrorCode score_capture_create(InflScorer sc, PetscInt Bmax, ScoreCapture *s)
{
  PetscInt L = sc->C * sc->Lm;

  PetscFunctionBegin;
  PetscCall(PetscMemzero(s, sizeof(*s)));
  s->C = sc->C;
  for (PetscInt c = 0; c < s->C; c++) PetscCall(InflCaptureCreate(sc->models[c], Bmax, &s->cap[c]));
  PetscCall(PetscMalloc6(L, &s->din, L, &s->dout, L, &s->a32, L, &s->ds32, L, &s->a64, L, &s->ds64));
  PetscFunctionReturn(0);
}

static PetscErrorCode score_capture_destroy(ScoreCapture *s)
{
  PetscFunctionBegin;
  for (PetscInt c = 0; c < s->C; c++) PetscCall(InflCaptureDestroy(&s->cap[c]));
  PetscCall(PetscFree6(s->din, s->dout, s->a32, s->ds32, s->a64, s->ds64));
  PetscFunctionReturn(0);
}

/* Capture training examples with their own labels (next tokens) under every model: the shard's [lo, hi) (idx NULL)
 * or the n examples idx; *view is the capture to score. */
static PetscErrorCode score_capture_fill(InflScorer sc, InflData train, int64_t lo, int64_t hi, PetscInt n, const int64_t idx[], ScoreCapture *s, InflCapture **view)
{
  PetscFunctionBegin;
  for (PetscInt c = 0; c < s->C; c++) {
    if (idx) PetscCall(InflModelCaptureExamples(sc->models[c], train, n, idx, INFL_FISHER_EMPIRICAL, 0, s->cap[c]));
    else PetscCall(InflModelCaptureShard(sc->models[c], train, lo, hi, INFL_FISHER_EMPIRICAL, 0, s->cap[c]));
  }
  if (s->C == 1) {
    *view = s->cap[0];
    PetscFunctionReturn(0);
  }
  s->all   = *s->cap[0];
  s->all.L = s->C * sc->Lm;
  for (PetscInt c = 0; c < s->C; c++)
    for (PetscInt l = 0; l < sc->Lm; l++) {
      PetscInt i = c * sc->Lm + l;
      s->din[i]  = s->cap[c]->din[l];
      s->dout[i] = s->cap[c]->dout[l];
      s->a32[i]  = s->cap[c]->a32 ? s->cap[c]->a32[l] : NULL;
      s->ds32[i] = s->cap[c]->ds32 ? s->cap[c]->ds32[l] : NULL;
      s->a64[i]  = s->cap[c]->a64 ? s->cap[c]->a64[l] : NULL;
      s->ds64[i] = s->cap[c]->ds64 ? s->cap[c]->ds64[l] : NULL;
    }
  s->all.din  = s->din;
  s->all.dout = s->dout;
  s->all.a32  = s->a32;
  s->all.ds32 = s->ds32;
  s->all.a64  = s->a64;
  s->all.ds64 = s->ds64;
  *view       = &s->all;
  PetscFunctionReturn(0);
}

/* Is training example m's pair term computed by this rank?  One group: the example is in this rank's shard.  Several:
 * the rank of this group whose index is that of the example's shard rank (the ranks of a group split the pairs of
 * their layers as they split the rows they score). */
static PetscBool pair_is_mine(InflScorer sc, InflData train, int64_t m, int64_t start, int64_t count)
{
  PetscInt    E, index;
  PetscMPIInt size;
  int64_t     N;

  if (sc->G == 1) return m >= start && m < start + count ? PETSC_TRUE : PETSC_FALSE;
  InflLayerLayoutGetGroups(sc->layout, NULL, &E, NULL, &index);
  MPI_Comm_size(sc->comm, &size);
  InflDataGetSizes(train, &N, NULL, NULL);
  return InflPartitionOwner(N, size, m) % E == index ? PETSC_TRUE : PETSC_FALSE;
}

/* The contribution of layer l to the terms of one pair: query q's P (nd, na) against a sequence's rows A (T, na) and
 * D (T, nd); per-row terms added to tok (may be NULL); returns their sum.  Z (T, min(nd, na)) scratch. */
static double pair_layer_terms(PetscInt nd, PetscInt na, int64_t T, const double P[], const double A[], const double D[], double Z[], double tok[])
{
  PetscInt      wd = PetscMin(nd, na);
  const double *X  = nd <= na ? D : A; /* the rows Z is multiplied with, (T, wd) */
  double        s  = 0;
  if (T == 0 || wd == 0) return 0;
  if (nd <= na) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, nd, na, 1.0, A, na, P, na, 0.0, Z, nd); /* Z = A P^T */
  else cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, na, nd, 1.0, D, nd, P, na, 0.0, Z, na);         /* Z = Ds P */
  for (int64_t t = 0; t < T; t++) {
    double v = 0;
    for (PetscInt i = 0; i < wd; i++) v += X[t * wd + i] * Z[t * wd + i];
    s += v;
    if (tok) tok[t] += v;
  }
  return s;
}

static const int64_t *sort_ids; /* compare_ids: the ids that the sorted positions index */
static int compare_ids(const void *x, const void *y)
{
  int64_t a = sort_ids[*(const int64_t *)x], b = sort_ids[*(const int64_t *)y];
  return a < b ? -1 : a > b;
}

/* scorer_pair_terms with split layers: the E ranks of a group capture their examples of the lists in the same
 * number of rounds; per owned layer the group's rows are gathered and rotated (InflEKFACGatherGroupRows), and each
 * rank adds, for every pair whose example is among them, its rows Is of the term in the eigenbasis,
 * sum_t u_t^T W_q v_t; the caller's sum over all ranks completes the terms. */
static PetscErrorCode pair_terms_split(InflScorer sc, InflData train, PetscInt nb, int64_t nloc, const int64_t loc[], int64_t R, const int64_t ex[], double *layers[2], ScoreCapture *scap, double Z[])
{
  MPI_Comm     group;
  PetscMPIInt  E;
  int64_t      rounds = (nloc + nb - 1) / nb, *gid, *ord, nbmax = nb;
  PetscInt     Q = sc->Q, K = sc->K;
  InflTopK    *lists[2] = {sc->top, sc->bottom};
  InflCapture *cap;
  PetscMPIInt *cnt, *dsp;

  PetscFunctionBegin;
  PetscCall(InflLayerLayoutGetComms(sc->layout, NULL, &group, NULL));
  PetscCallMPI(MPI_Comm_size(group, &E));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &rounds, 1, MPI_INT64_T, MPI_MAX, group));
  /* nb is this rank's (at most its own example count): a round gathers up to the largest of the group's */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &nbmax, 1, MPI_INT64_T, MPI_MAX, group));
  PetscCall(PetscMalloc4((size_t)E * nbmax, &gid, (size_t)E * nbmax, &ord, E, &cnt, E, &dsp));
  for (int64_t k = 0; k < rounds; k++) {
    int64_t  c0 = k * nb;
    PetscInt n  = (PetscInt)PetscMax(0, PetscMin((int64_t)nb, nloc - c0)), Bg = 0;
    int      ni = (int)n;
    if (n > 0) PetscCall(score_capture_fill(sc, train, 0, 0, n, loc + c0, scap, &cap));
    else {
      cap    = scap->cap[0];
      cap->B = cap->T = 0;
    }
    /* the group's examples of this round, in group rank order (the order of the gathered rows), and their order */
    PetscCallMPI(MPI_Allgather(&ni, 1, MPI_INT, cnt, 1, MPI_INT, group));
    for (int e = 0; e < E; e++) {
      dsp[e] = (PetscMPIInt)Bg;
      Bg += cnt[e];
    }
    PetscCallMPI(MPI_Allgatherv(loc + PetscMin(c0, nloc), ni, MPI_INT64_T, gid, cnt, dsp, MPI_INT64_T, group));
    for (PetscInt b = 0; b < Bg; b++) ord[b] = b;
    sort_ids = gid;
    qsort(ord, (size_t)Bg, sizeof(int64_t), compare_ids); /* ord: the gathered rows in the order of their examples */
    for (PetscInt l = 0; l < sc->L; l++) {
      InflEKFACGroupRows g;
      PetscInt           nd = sc->dout[l], na = sc->din[l] + 1;
      int64_t            r  = 0;
      if (!sc->own[l]) continue;
      PetscCall(InflEKFACGatherGroupRows(sc->ek, l, cap, PETSC_TRUE, &g));
      for (PetscInt q = 0; q < Q; q++)
        for (int w = 0; w < 2; w++)
          for (PetscInt kk = 0; kk < lists[w]->n[q]; kk++, r++) {
            int64_t lo = 0, hi = Bg, b, r0, T;
            double  s;
            while (lo < hi) { /* the example among this round's examples of the group */
              int64_t mid = (lo + hi) / 2;
              if (gid[ord[mid]] < ex[r]) lo = mid + 1;
              else hi = mid;
            }
            if (lo == Bg || gid[ord[lo]] != ex[r]) continue;
            b  = ord[lo];
            r0 = g.offsets[b];
            T  = g.offsets[b + 1] - r0;
            s  = pair_layer_terms(nd, na, T, sc->Pq[l] + (int64_t)q * nd * na, g.v + r0 * na, g.u + r0 * nd, Z, sc->per_token ? sc->pt_values + sc->pt_offsets[r] : NULL);
            if (layers[w]) layers[w][((int64_t)l * Q + q) * K + kk] += s;
          }
    }
  }
  PetscCall(PetscFree4(gid, ord, cnt, dsp));
  (void)R;
  PetscFunctionReturn(0);
}

/* The terms of the pairs in the merged lists, computed in double by the owners of the training examples and reduced:
 * with -score_per_layer each layer's term, top_layer / bottom_layer (L, Q, K); with -score_per_token every row's
 * (token's) term summed over layers, sum_l Ds_t^T P_l(q) a_t, in rows r of the pt_* arrays (for each query its
 * top-k entries, then its bottom-k).  The terms of a pair sum to its score (within the rounding of the scoring
 * precision): they use the same P_l(q) (its rank-r truncation with -score_rank).
 * Batched: the distinct training examples of all the lists held by this rank are captured once each, in chunks of
 * half the scoring chunk's bytes (these captures are in double); for every pair in
 * a chunk and every layer, one GEMM over the sequence's rows contracts them with the query's P_l: Z = A P^T (T, dout)
 * and term_t = rowsum(Z .* Ds) (or Z = Ds P (T, din+1) and rowsum(Z .* A), whichever is narrower). */
static PetscErrorCode scorer_pair_terms(InflScorer sc, InflData train)
{
  int64_t         start, count, *ex, *loc, *pos, nloc = 0, R; /* ex, pos (R): each pair's training example and its place in loc (nloc) */
  InflCapture    *cap;
  ScoreCapture    scap;
  InflPrecision   prec;
  InflDataContent kind;
  InflTopK       *lists[2] = {sc->top, sc->bottom};
  double         *layers[2], *Z; /* Z (rows of a sequence, min(dout, din+1)) scratch */
  PetscInt        maxw = 1, K = sc->K, Q = sc->Q, nb, rows;
  int64_t         r;

  PetscFunctionBegin;
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  PetscCall(InflDataGetContent(train, &kind));
  if (sc->per_layer) {
    PetscCall(PetscFree2(sc->top_layer, sc->bottom_layer));
    PetscCall(PetscCalloc2((size_t)sc->L * Q * K, &sc->top_layer, (size_t)sc->L * Q * K, &sc->bottom_layer));
  }
  layers[0] = sc->top_layer;
  layers[1] = sc->bottom_layer;
  R = 0;
  for (PetscInt q = 0; q < Q; q++) R += lists[0]->n[q] + lists[1]->n[q];
  PetscCall(PetscMalloc3(PetscMax(R, 1), &ex, PetscMax(R, 1), &loc, PetscMax(R, 1), &pos));
  r = 0;
  for (PetscInt q = 0; q < Q; q++) /* the training example of every pair (row r); the local ones, sorted and distinct */
    for (int w = 0; w < 2; w++)
      for (PetscInt k = 0; k < lists[w]->n[q]; k++, r++) {
        int64_t m = lists[w]->index[(int64_t)q * K + k];
        ex[r] = m;
        if (pair_is_mine(sc, train, m, start, count)) loc[nloc++] = m;
      }
  PetscCall(PetscSortInt64(nloc, loc));
  {
    int64_t u = 0;
    for (int64_t i = 0; i < nloc; i++) if (!u || loc[u - 1] != loc[i]) loc[u++] = loc[i];
    nloc = u;
  }
  for (r = 0; r < R; r++) { /* position of each pair's example among loc (-1: another rank's) */
    int64_t lo = 0, hi = nloc, m = ex[r];
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (loc[mid] < m) lo = mid + 1;
      else hi = mid;
    }
    pos[r] = lo < nloc && loc[lo] == m ? lo : -1;
  }
  if (sc->per_token) { /* the rows, their lengths and tokens (every rank: any sequence can be read by any rank) */
    int64_t  d;
    int32_t *buf; /* (d) one sequence's tokens */
    PetscCall(InflDataGetSizes(train, NULL, &d, NULL));
    sc->ptR = R;
    PetscCall(PetscFree4(sc->pt_offsets, sc->pt_query, sc->pt_train, sc->pt_kind));
    PetscCall(PetscFree2(sc->pt_values, sc->pt_tokens));
    PetscCall(PetscMalloc4(sc->ptR + 1, &sc->pt_offsets, PetscMax(sc->ptR, 1), &sc->pt_query, PetscMax(sc->ptR, 1), &sc->pt_train, PetscMax(sc->ptR, 1), &sc->pt_kind));
    PetscCall(PetscMalloc1(PetscMax(d, 1), &buf));
    r = 0;
    sc->pt_offsets[0] = 0;
    for (PetscInt q = 0; q < Q; q++)
      for (int w = 0; w < 2; w++)
        for (PetscInt k = 0; k < lists[w]->n[q]; k++, r++) {
          int64_t m = lists[w]->index[(int64_t)q * K + k], o[2] = {0, 1};
          sc->pt_query[r] = q;
          sc->pt_train[r] = m;
          sc->pt_kind[r]  = w ? -1 : 1;
          if (kind == INFL_DATA_SEQUENCES) PetscCall(InflDataGetSequences(train, 1, &m, buf, o));
          sc->pt_offsets[r + 1] = sc->pt_offsets[r] + o[1];
        }
    sc->ptM = sc->pt_offsets[sc->ptR];
    PetscCall(PetscCalloc2(PetscMax(sc->ptM, 1), &sc->pt_values, PetscMax(sc->ptM, 1), &sc->pt_tokens));
    for (r = 0; r < sc->ptR; r++) {
      if (kind == INFL_DATA_SEQUENCES) {
        int64_t o[2];
        PetscCall(InflDataGetSequences(train, 1, &sc->pt_train[r], sc->pt_tokens + sc->pt_offsets[r], o));
      } else sc->pt_tokens[sc->pt_offsets[r]] = -1; /* a row of features has no token */
    }
    PetscCall(PetscFree(buf));
  }
  for (PetscInt l = 0; l < sc->L; l++) maxw = PetscMax(maxw, PetscMin(sc->dout[l], sc->din[l] + 1));
  PetscCall(InflModelGetMaxRows(sc->model, &rows));
  PetscCall(InflModelGetPrecision(sc->model, &prec));
  /* half the bytes of the scoring chunk (these captures are in double): they fit into the memory the scoring pass
   * freed, which the allocator need not have returned to the system */
  nb = (PetscInt)PetscMax(1, PetscMin((int64_t)(prec == INFL_PREC_DOUBLE ? sc->chunk / 2 : sc->chunk / 4), nloc));
  for (PetscInt c = 0; c < sc->C; c++) PetscCall(InflModelSetPrecision(sc->models[c], INFL_PREC_DOUBLE));
  PetscCall(score_capture_create(sc, nb, &scap)); /* TracIn: the examples under every checkpoint, side by side */
  PetscCall(PetscMalloc1((size_t)rows * maxw, &Z));
  if (sc->split) PetscCall(pair_terms_split(sc, train, nb, nloc, loc, R, ex, layers, &scap, Z));
  else for (int64_t c0 = 0; c0 < nloc; c0 += nb) {
    PetscInt n = (PetscInt)PetscMin((int64_t)nb, nloc - c0);
    PetscCall(score_capture_fill(sc, train, 0, 0, n, loc + c0, &scap, &cap));
    r = 0;
    for (PetscInt q = 0; q < Q; q++)
      for (int w = 0; w < 2; w++)
        for (PetscInt k = 0; k < lists[w]->n[q]; k++, r++) {
          int64_t b = pos[r] - c0, r0, T;
          if (pos[r] < c0 || b >= n) continue;
          r0 = cap->offsets[b];
          T  = cap->offsets[b + 1] - r0;
          for (PetscInt l = 0; l < sc->L; l++) {
            PetscInt nd = sc->dout[l], na = sc->din[l] + 1;
            double   s;
            if (!sc->own[l]) continue; /* held by another group: its owners add its terms */
            s = pair_layer_terms(nd, na, T, sc->Pq[l] + (int64_t)q * nd * na, cap->a64[l] + r0 * na, cap->ds64[l] + r0 * nd, Z, sc->per_token ? sc->pt_values + sc->pt_offsets[r] : NULL);
            if (layers[w]) layers[w][((int64_t)l * Q + q) * K + k] = s;
          }
        }
  }
  PetscCall(PetscFree(Z));
  PetscCall(PetscFree3(ex, loc, pos));
  PetscCall(score_capture_destroy(&scap));
  for (PetscInt c = 0; c < sc->C; c++) PetscCall(InflModelSetPrecision(sc->models[c], prec));
  for (int w = 0; w < 2; w++)
    if (layers[w]) PetscCall(InflAllreduceSum(layers[w], (int64_t)sc->L * Q * K, MPI_DOUBLE, sc->comm));
  if (sc->per_token) {
    PetscCall(InflAllreduceSum(sc->pt_values, sc->ptM, MPI_DOUBLE, sc->comm));
    for (int64_t i = 0; i < sc->ptM; i++) PetscCheck(isfinite(sc->pt_values[i]), sc->comm, PETSC_ERR_FP, "per-token score %" PRId64 " is %g (non-finite); check the model, the factors and -ekfac_damping", i, sc->pt_values[i]);
  }
  PetscFunctionReturn(0);
}

typedef struct {
  InflScorer     sc;
  ScoreCapture  *scap;      /* the chunk's captures (TracIn: one per checkpoint) */
  InflCapture   *cap;       /* the capture scored: scap's view after score_capture_fill (scap->cap[0] with one model) */
  InflData       train;
  int64_t        start, count;
  struct ScoreScratch_ *w;  /* kernel scratch */
  double        *out;       /* (Q, chunk) scores */
  /* several layer groups (infl/layout.h): the chunk is captured by score_chunk and scored by score_step */
  InflCapture   *recv;      /* rows of the owned layers gathered from the cross communicator */
  PetscInt      *bstart;    /* (G+1) the sources' first sequences in recv */
  double        *part;      /* (nrow, recv->Bmax) this rank's partial terms of recv's sequences */
  double        *red;       /* (nrow, chunk) the terms of this rank's sequences summed over the groups */
  int64_t        i0, i1;    /* -score_tfidf_topk: this round's candidates cand_local[i0, i1) */
  /* split layers: the chunk is scored by score_step in the eigenbasis, over the rows of the group's ranks */
  InflCapture   *rcap;      /* the rotated rows of the owned layers: a (T, din+1) = a Q_A, ds (T, rs) = Ds Q_S[:, Is] */
  double        *gpart;     /* (nrow, rcap->Bmax) this rank's partial terms of the group's sequences */
  PetscInt      *gb;        /* (E+1) the group ranks' first sequences in rcap */
} ScoreChunkCtx;

static PetscErrorCode scorer_score_capture(InflScorer sc, const InflCapture *cap, struct ScoreScratch_ *w, double out[], double layer[], int64_t ldl, double token[]);

/* Split layers (collective over the layer group): part (nrow, max(src->B, 1)) <- the terms of src's sequences summed
 * over the group's ranks, each rank's from its rows Is of the owned layers against the rotated rows of the group's
 * captures (src: this rank's). */
static PetscErrorCode score_split(ScoreChunkCtx *c, const InflCapture *src, PetscInt nrow, double part[])
{
  InflScorer   sc = c->sc;
  InflCapture *rc = c->rcap;
  MPI_Comm     group;
  PetscMPIInt  E;
  int          b = (int)src->B, *all;
  int64_t      ldg;
  PetscInt     Q = sc->Q;

  PetscFunctionBegin;
  PetscCall(InflLayerLayoutGetComms(sc->layout, NULL, &group, NULL));
  PetscCallMPI(MPI_Comm_size(group, &E));
  PetscCall(PetscMalloc1(E, &all));
  PetscCallMPI(MPI_Allgather(&b, 1, MPI_INT, all, 1, MPI_INT, group));
  c->gb[0] = 0;
  for (int e = 0; e < E; e++) c->gb[e + 1] = c->gb[e] + all[e];
  PetscCall(PetscFree(all));
  rc->B = c->gb[E];
  rc->T = 0;
  for (PetscInt l = 0; l < sc->L; l++) {
    InflEKFACGroupRows g;
    int64_t            na = sc->din[l] + 1, rs = sc->dout[l];
    if (!sc->own[l]) continue;
    PetscCall(InflEKFACGatherGroupRows(sc->ek, l, src, PETSC_TRUE, &g));
    PetscCheck(g.B == rc->B && g.T <= rc->Tmax && g.B <= rc->Bmax, PETSC_COMM_SELF, PETSC_ERR_PLIB, "the group's rows (%d sequences, %d rows) exceed the rotated capture (%d, %d)", (int)g.B, (int)g.T, (int)rc->Bmax, (int)rc->Tmax);
    rc->T = g.T;
    PetscCall(PetscArraycpy(rc->offsets, g.offsets, g.B + 1));
    if (!g.T) continue;
    if (rc->prec == INFL_PREC_DOUBLE) {
      PetscCall(PetscArraycpy(rc->a64[l], g.v, (size_t)g.T * na));
      PetscCall(PetscArraycpy(rc->ds64[l], g.u, (size_t)g.T * rs));
    } else {
      for (int64_t i = 0; i < (int64_t)g.T * na; i++) rc->a32[l][i] = (float)g.v[i];
      for (int64_t i = 0; i < (int64_t)g.T * rs; i++) rc->ds32[l][i] = (float)g.u[i];
    }
  }
  ldg = PetscMax(rc->B, 1);
  PetscCall(PetscArrayzero(c->gpart, (size_t)nrow * ldg));
  if (rc->B && rc->T) PetscCall(scorer_score_capture(sc, rc, c->w, c->gpart, sc->local_layer ? c->gpart + (int64_t)Q * ldg : NULL, ldg, NULL));
  PetscCall(InflLayerLayoutGroupReduceToSources(sc->layout, nrow, ldg, c->gpart, c->gb, src->B, part));
  PetscFunctionReturn(0);
}

/* Score the training examples [lo, hi) of this rank's shard against every query. */
static PetscLogEvent EV_CAPTURE, EV_KERNEL, EV_TOPK;

/* Log events of the scoring loop (-log_view): capture, the layer kernels, the top-k heaps. */
static PetscErrorCode score_register_events(void)
{
  static PetscBool done = PETSC_FALSE;
  PetscClassId     id;

  PetscFunctionBegin;
  if (done) PetscFunctionReturn(0);
  PetscCall(PetscClassIdRegister("InflScorer", &id));
  PetscCall(PetscLogEventRegister("InflScoreCapture", id, &EV_CAPTURE));
  PetscCall(PetscLogEventRegister("InflScoreKernel", id, &EV_KERNEL));
  PetscCall(PetscLogEventRegister("InflScoreTopK", id, &EV_TOPK));
  done = PETSC_TRUE;
  PetscFunctionReturn(0);
}

/* norm (B) = ||g_b||_F, the Frobenius norm of each captured sequence's loss gradient over all layers.  One row per
 * example: the gradient of layer l is the rank-one Ds a^T, whose norm is ||Ds|| ||a||; a sequence of several rows:
 * G = Ds_b^T A_b is formed by GEMM in the capture's precision (G (dout, din+1) doubles of the largest layer, used as
 * floats in single precision), its squares summed in double. */
static PetscErrorCode capture_gradient_norms(const InflCapture *cap, double G[], double norm[])
{
  PetscFunctionBegin;
  for (PetscInt b = 0; b < cap->B; b++) {
    double g2 = 0;
    for (PetscInt l = 0; l < cap->L; l++) {
      PetscInt na = cap->din[l] + 1, nd = cap->dout[l];
      int64_t  r0 = cap->offsets[b], nr = cap->offsets[b + 1] - cap->offsets[b];
      if (nr == 1) {
        double a2 = 0, d2 = 0;
        if (cap->prec == INFL_PREC_DOUBLE) {
          for (PetscInt j = 0; j < na; j++) a2 += cap->a64[l][r0 * na + j] * cap->a64[l][r0 * na + j];
          for (PetscInt i = 0; i < nd; i++) d2 += cap->ds64[l][r0 * nd + i] * cap->ds64[l][r0 * nd + i];
        } else {
          for (PetscInt j = 0; j < na; j++) a2 += (double)cap->a32[l][r0 * na + j] * cap->a32[l][r0 * na + j];
          for (PetscInt i = 0; i < nd; i++) d2 += (double)cap->ds32[l][r0 * nd + i] * cap->ds32[l][r0 * nd + i];
        }
        g2 += a2 * d2;
      } else if (cap->prec == INFL_PREC_DOUBLE) { /* G = Ds_b^T A_b by GEMM, in the capture's precision */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, nr, 1.0, cap->ds64[l] + r0 * nd, nd, cap->a64[l] + r0 * na, na, 0.0, G, na);
        for (int64_t i = 0; i < (int64_t)nd * na; i++) g2 += G[i] * G[i];
      } else {
        float *Gf = (float *)G;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, nr, 1.0f, cap->ds32[l] + r0 * nd, nd, cap->a32[l] + r0 * na, na, 0.0f, Gf, na);
        for (int64_t i = 0; i < (int64_t)nd * na; i++) g2 += (double)Gf[i] * Gf[i];
      }
    }
    norm[b] = sqrt(g2);
  }
  PetscFunctionReturn(0);
}

/* Scratch of scorer_score_capture for captures of up to Tmax rows and Bmax sequences. */
typedef struct ScoreScratch_ {
  void   *T;    /* kernel scratch */
  double *lay;  /* (Q, Tmax) one layer's terms before scaling (single precision) */
  double *rows; /* (Q, Tmax) one layer's per-row terms when sequences span several rows */
  double *G;    /* (dout, din+1) of the largest layer: gradient norms of sequences */
} ScoreScratch;

static PetscErrorCode score_scratch_create(InflScorer sc, PetscInt Tmax, PetscInt Bmax, ScoreScratch *w)
{
  size_t  es = sc->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
  int64_t nT = 1, nG = 1;

  PetscFunctionBegin;
  for (PetscInt l = 0; l < sc->L; l++) {
    nT = PetscMax(nT, sc->lr[l] ? 2 * (int64_t)Tmax * sc->Q * sc->lr[l] : InflScoreLayerScratch(sc->Q, Tmax, sc->dout[l], sc->din[l] + 1, sc->by_input[l], es));
    if (!sc->lr[l] && sc->by_input[l] && Tmax > Bmax) nT = PetscMax(nT, InflScoreSequencesScratch(sc->Q, Bmax, sc->dout[l], sc->din[l] + 1, es));
    nG = PetscMax(nG, (int64_t)sc->dout[l] * (sc->din[l] + 1));
  }
  { /* gradient norms of the training captures: the model's whole layers (split layers have dout[l] = rs) */
    InflLinear *lin;
    PetscCall(InflModelGetLayers(sc->model, NULL, &lin));
    for (PetscInt l = 0; l < sc->L; l++) nG = PetscMax(nG, (int64_t)lin[l % sc->Lm].dout * (lin[l % sc->Lm].din + 1));
  }
  PetscCall(PetscMalloc((size_t)nT * es, &w->T));
  PetscCall(PetscMalloc3((size_t)sc->Q * PetscMax(Tmax, 1), &w->lay, (size_t)sc->Q * PetscMax(Tmax, 1), &w->rows, (size_t)nG, &w->G));
  PetscFunctionReturn(0);
}

static PetscErrorCode score_scratch_destroy(ScoreScratch *w)
{
  PetscFunctionBegin;
  PetscCall(PetscFree(w->T));
  PetscCall(PetscFree3(w->lay, w->rows, w->G));
  PetscFunctionReturn(0);
}

/* out (Q, B) = the scores of the capture's B sequences against every query: sum over layers of sum over a sequence's
 * rows t of Ds_t^T P_l(q) a_t.  Sequences of several rows take the sequence kernel, <P_l(q), DW_l> with each
 * sequence's gradient DW formed once, when that is cheaper than the rows' terms (2 (T + Q B) <= Q T for T rows:
 * several queries) and no per-row terms are asked for; otherwise the rows' terms are formed, then summed per sequence.
 * With layer != NULL (L, Q, ldl), layer l's terms go to layer[(l Q + q) ldl + b]; with token != NULL (Q, T), each
 * row's term summed over layers (per-token influence). */
static PetscErrorCode scorer_score_capture(InflScorer sc, const InflCapture *cap, ScoreScratch *w, double out[], double layer[], int64_t ldl, double token[])
{
  PetscInt B = cap->B, R = cap->T, Q = sc->Q;

  PetscFunctionBegin;
  PetscCall(PetscArrayzero(out, (size_t)Q * B));
  if (token) PetscCall(PetscArrayzero(token, (size_t)Q * R));
  for (PetscInt l = 0; l < sc->L; l++) {
    PetscInt nd = sc->dout[l], na = sc->din[l] + 1;
    double  *dst = R == B && !layer && !token ? out : w->rows; /* (Q, R) */
    if (!sc->own[l]) continue; /* held by another group: its owners add its terms */
    if (!token && !sc->lr[l] && sc->by_input[l] && R > B && 2 * ((int64_t)R + (int64_t)Q * B) <= (int64_t)Q * R) {
      dst = layer ? w->rows : out; /* (Q, B) */
      if (dst != out) PetscCall(PetscArrayzero(dst, (size_t)Q * B));
      if (sc->prec == INFL_PREC_DOUBLE) InflScoreSequences_f64(Q, B, cap->offsets, nd, na, sc->dmax, sc->Pq[l], cap->a64[l], cap->ds64[l], (double *)w->T, dst);
      else { /* scaled queries, as below */
        PetscCall(PetscArrayzero(w->lay, (size_t)Q * B));
        InflScoreSequences_f32(Q, B, cap->offsets, nd, na, sc->dmax, sc->P32[l], cap->a32[l], cap->ds32[l], (float *)w->T, w->lay);
        for (int64_t i = 0; i < (int64_t)Q * B; i++) dst[i] += sc->scale[l][i / B] * w->lay[i];
      }
      if (layer)
        for (PetscInt q = 0; q < Q; q++)
          for (PetscInt b = 0; b < B; b++) {
            out[(int64_t)q * B + b] += dst[(int64_t)q * B + b];
            layer[((int64_t)l * Q + q) * ldl + b] = dst[(int64_t)q * B + b];
          }
      continue;
    }
    if (dst != out) PetscCall(PetscArrayzero(dst, (size_t)Q * R));
    if (sc->prec == INFL_PREC_DOUBLE) {
      if (sc->lr[l]) score_low_rank_f64(Q, R, nd, na, sc->lr[l], sc->U64[l], sc->V64[l], cap->a64[l], cap->ds64[l], (double *)w->T, dst);
      else InflScoreLayer_f64(Q, R, nd, na, sc->by_input[l], sc->by_input[l] ? sc->Pq[l] : sc->P64[l], cap->a64[l], cap->ds64[l], (double *)w->T, dst);
    } else { /* scaled queries: the terms of query q times scale[l][q] */
      PetscCall(PetscArrayzero(w->lay, (size_t)Q * R));
      if (sc->lr[l]) score_low_rank_f32(Q, R, nd, na, sc->lr[l], sc->U32[l], sc->V32[l], cap->a32[l], cap->ds32[l], (float *)w->T, w->lay);
      else InflScoreLayer_f32(Q, R, nd, na, sc->by_input[l], sc->P32[l], cap->a32[l], cap->ds32[l], (float *)w->T, w->lay);
      for (PetscInt q = 0; q < Q; q++)
        for (PetscInt r = 0; r < R; r++) dst[(int64_t)q * R + r] += sc->scale[l][q] * w->lay[(int64_t)q * R + r];
    }
    if (token)
      for (int64_t i = 0; i < (int64_t)Q * R; i++) token[i] += dst[i];
    if (dst != out) /* the rows' terms summed per sequence (in row order), into the scores and the layer's terms */
      for (PetscInt q = 0; q < Q; q++)
        for (PetscInt b = 0; b < B; b++) {
          double v = 0;
          for (int64_t r = cap->offsets[b]; r < cap->offsets[b + 1]; r++) v += dst[(int64_t)q * R + r];
          out[(int64_t)q * B + b] += v;
          if (layer) layer[((int64_t)l * Q + q) * ldl + b] = v;
        }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerScoreCapture(InflScorer sc, const InflCapture *cap, double out[], double token[])
{
  ScoreScratch w;

  PetscFunctionBegin;
  PetscCheck(sc->Q > 0, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflScorerSetQueries before InflScorerScoreCapture");
  PetscCheck(cap->L == sc->L, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "the capture has %d layers but the scorer %d (TracIn over several checkpoints is scored by InflScorerScore only)", (int)cap->L, (int)sc->L);
  PetscCheck(sc->G == 1, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "InflScorerScoreCapture needs every layer's queries on this rank, but the factors are spread over %d layer groups; use -layer_groups 1", (int)sc->G);
  PetscCheck(cap->prec == sc->prec, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "the capture is in %s precision but the queries were set for %s", cap->prec == INFL_PREC_DOUBLE ? "double" : "single", sc->prec == INFL_PREC_DOUBLE ? "double" : "single");
  PetscCall(score_scratch_create(sc, cap->T, cap->B, &w));
  PetscCall(scorer_score_capture(sc, cap, &w, out, NULL, 0, token));
  PetscCall(score_scratch_destroy(&w));
  PetscFunctionReturn(0);
}

/* -score_tfidf_topk: the candidates of the chunk [lo, hi) are captured and scored against every query; each query
 * keeps only the scores of its own candidates. */
/* This rank's candidates in the chunk [lo, hi): cand_local[*i0, *i1). */
static void chunk_candidates(InflScorer sc, int64_t lo, int64_t hi, int64_t *i0, int64_t *i1)
{
  int64_t a = 0, b;
  while (a < sc->ncand_local && sc->cand_local[a] < lo) a++;
  for (b = a; b < sc->ncand_local && sc->cand_local[b] < hi; b++) {}
  *i0 = a;
  *i1 = b;
}

/* -score_tfidf_topk: each query keeps the scores out (Q, i1 - i0) of its own candidates among cand_local[i0, i1) of
 * the chunk [lo, hi). */
static PetscErrorCode candidates_push(InflScorer sc, int64_t lo, int64_t hi, int64_t i0, int64_t i1, const double out[])
{
  int64_t  n = i1 - i0, *iv;
  double  *sv;

  PetscFunctionBegin;
  if (n == 0) PetscFunctionReturn(0);
  PetscCall(PetscMalloc2(sc->tfidf_topk, &sv, sc->tfidf_topk, &iv));
  for (PetscInt q = 0; q < sc->Q; q++) {
    PetscInt nk = 0;
    for (PetscInt k = 0; k < sc->cand->n[q]; k++) {
      int64_t m = sc->cand->index[(int64_t)q * sc->cand->K + k], lo2 = i0, hi2 = i1;
      if (m < lo || m >= hi) continue;
      while (lo2 < hi2) { /* position of m among the chunk's candidates */
        int64_t mid = (lo2 + hi2) / 2;
        if (sc->cand_local[mid] < m) lo2 = mid + 1;
        else hi2 = mid;
      }
      sv[nk] = out[(int64_t)q * n + (lo2 - i0)];
      iv[nk] = m;
      PetscCheck(isfinite(sv[nk]), PETSC_COMM_SELF, PETSC_ERR_FP, "score of query %" PRId64 " and training example %" PRId64 " is %g (non-finite): the model's gradients or the preconditioned query overflow; check the model, the factors and -ekfac_damping", sc->qindex[q], m, sv[nk]);
      nk++;
    }
    sc->npairs += nk;
    PetscCall(InflTopKPushQuery(sc->top, q, nk, sv, iv));
    PetscCall(InflTopKPushQuery(sc->bottom, q, nk, sv, iv));
  }
  PetscCall(PetscFree2(sv, iv));
  PetscFunctionReturn(0);
}

/* -score_tfidf_topk: the candidates of the chunk [lo, hi) are captured and (with one layer group) scored against every
 * query; each query keeps only the scores of its own candidates. */
static PetscErrorCode score_chunk_candidates(ScoreChunkCtx *c, int64_t lo, int64_t hi)
{
  InflScorer sc = c->sc;

  PetscFunctionBegin;
  chunk_candidates(sc, lo, hi, &c->i0, &c->i1);
  c->cap->B = c->cap->T = 0;
  if (c->i1 == c->i0) PetscFunctionReturn(0);
  PetscCall(PetscLogEventBegin(EV_CAPTURE, 0, 0, 0, 0));
  PetscCall(score_capture_fill(sc, c->train, 0, 0, (PetscInt)(c->i1 - c->i0), sc->cand_local + c->i0, c->scap, &c->cap));
  PetscCall(PetscLogEventEnd(EV_CAPTURE, 0, 0, 0, 0));
  if (c->recv || sc->split) PetscFunctionReturn(0); /* scored by score_step */
  PetscCall(PetscLogEventBegin(EV_KERNEL, 0, 0, 0, 0));
  PetscCall(scorer_score_capture(sc, c->cap, c->w, c->out, NULL, 0, NULL));
  PetscCall(PetscLogEventEnd(EV_KERNEL, 0, 0, 0, 0));
  PetscCall(candidates_push(sc, lo, hi, c->i0, c->i1, c->out));
  PetscFunctionReturn(0);
}

/* The scores out (Q, B) of the chunk [lo, hi) of this rank's shard, complete: checked, kept, pushed to the lists. */
static PetscErrorCode score_finish(ScoreChunkCtx *c, int64_t lo, int64_t hi, const double out[])
{
  InflScorer sc  = c->sc;
  int64_t    off = lo - c->start;
  PetscInt   B   = (PetscInt)(hi - lo);

  PetscFunctionBegin;
  for (PetscInt q = 0; q < sc->Q; q++) /* never a non-finite score in the output (the ranks agree on the error) */
    for (PetscInt b = 0; b < B; b++)
      PetscCheck(isfinite(out[(int64_t)q * B + b]), PETSC_COMM_SELF, PETSC_ERR_FP, "score of query %" PRId64 " and training example %" PRId64 " is %g (non-finite): the model's gradients or the preconditioned query overflow (huge weights, damaged factors, or a damping too small for them); check the model, the factors and -ekfac_damping", sc->qindex ? sc->qindex[q] : (int64_t)q, lo + b, out[(int64_t)q * B + b]);
  if (sc->local) {
    for (PetscInt q = 0; q < sc->Q; q++) PetscCall(PetscArraycpy(sc->local + (int64_t)q * c->count + off, out + (int64_t)q * B, B));
    PetscCall(capture_gradient_norms(c->cap, c->w->G, sc->local_norm + off));
  }
  PetscCall(PetscLogEventBegin(EV_TOPK, 0, 0, 0, 0));
  PetscCall(InflTopKPush(sc->top, B, out, NULL, lo));
  PetscCall(InflTopKPush(sc->bottom, B, out, NULL, lo));
  PetscCall(PetscLogEventEnd(EV_TOPK, 0, 0, 0, 0));
  PetscFunctionReturn(0);
}

/* Several layer groups, after each round (collective): the round's rows go to the owners of their layers, which
 * score them against their layers' queries; the partial scores come back summed over the groups. */
static PetscErrorCode score_step(void *ctx, int64_t lo, int64_t hi)
{
  ScoreChunkCtx *c  = (ScoreChunkCtx *)ctx;
  InflScorer     sc = c->sc;
  InflCapture   *r  = c->recv;
  PetscInt       Q = sc->Q, nrow = Q * (sc->local_layer ? 1 + sc->L : 1), B;
  int64_t        ldp;

  PetscFunctionBegin;
  if (lo == hi) c->cap->B = c->cap->T = 0; /* no chunk this round */
  B = c->cap->B;
  PetscCall(PetscLogEventBegin(EV_KERNEL, 0, 0, 0, 0));
  if (r) PetscCall(InflLayerLayoutGatherCapture(sc->layout, c->cap, r, c->bstart));
  ldp = PetscMax(r ? r->B : B, 1);
  PetscCall(PetscArrayzero(c->part, (size_t)nrow * ldp));
  if (sc->split) PetscCall(score_split(c, r ? r : c->cap, nrow, c->part)); /* also with no rows: collective */
  else if (r->B) PetscCall(scorer_score_capture(sc, r, c->w, c->part, sc->local_layer ? c->part + (int64_t)Q * ldp : NULL, ldp, NULL));
  if (r) PetscCall(InflLayerLayoutReduceToSources(sc->layout, nrow, ldp, c->part, c->bstart, B, c->red));
  else PetscCall(PetscArraycpy(c->red, c->part, (size_t)nrow * B));
  PetscCall(PetscLogEventEnd(EV_KERNEL, 0, 0, 0, 0));
  if (sc->local_layer && B) /* layer l's terms of the chunk into (L, Q, count) */
    for (int64_t i = 0; i < (int64_t)sc->L * Q; i++) PetscCall(PetscArraycpy(sc->local_layer + i * c->count + (lo - c->start), c->red + (Q + i) * B, B));
  if (sc->cand) InflCallAll(sc->comm, candidates_push(sc, lo, hi, c->i0, c->i1, c->red));
  else InflCallAll(sc->comm, score_finish(c, lo, hi, c->red));
  PetscFunctionReturn(0);
}

static PetscErrorCode score_chunk(void *ctx, int64_t lo, int64_t hi)
{
  ScoreChunkCtx *c  = (ScoreChunkCtx *)ctx;
  InflScorer     sc = c->sc;
  int64_t        off = lo - c->start;

  PetscFunctionBegin;
  if (sc->cand) {
    PetscCall(score_chunk_candidates(c, lo, hi));
    PetscFunctionReturn(0);
  }
  PetscCall(PetscLogEventBegin(EV_CAPTURE, 0, 0, 0, 0));
  /* the training examples' own labels (the next tokens of a sequence): the gradient of their loss */
  PetscCall(score_capture_fill(sc, c->train, lo, hi, 0, NULL, c->scap, &c->cap));
  PetscCall(PetscLogEventEnd(EV_CAPTURE, 0, 0, 0, 0));
  if (c->recv || sc->split) PetscFunctionReturn(0); /* several layer groups, split layers: scored by score_step */
  PetscCall(PetscLogEventBegin(EV_KERNEL, 0, 0, 0, 0));
  PetscCall(scorer_score_capture(sc, c->cap, c->w, c->out, sc->local_layer ? sc->local_layer + off : NULL, c->count, NULL));
  PetscCall(PetscLogEventEnd(EV_KERNEL, 0, 0, 0, 0));
  PetscCall(score_finish(c, lo, hi, c->out));
  PetscFunctionReturn(0);
}

static PetscErrorCode score_checkpoint(void *ctx, const InflRanges *done)
{
  PetscFunctionBegin;
  PetscCall(scorer_checkpoint(((ScoreChunkCtx *)ctx)->sc, done));
  PetscFunctionReturn(0);
}

/* -score_tfidf_topk: the candidates of every query (index built over the training shards, reduced), and the sorted
 * distinct candidates in this rank's shard. */
static PetscErrorCode scorer_tfidf_candidates(InflScorer sc, InflData train)
{
  InflTFIDF      tf;
  int64_t        start, count, n = 0;
  const int32_t *tok;
  const int64_t *off;
  PetscInt       V;

  PetscFunctionBegin;
  PetscCheck(sc->qtok, sc->comm, PETSC_ERR_ARG_WRONG, "-score_tfidf_topk %d filters training sequences by the tokens of each query, but the queries are rows of features; use it with a language model and text or token data", (int)sc->tfidf_topk);
  PetscCall(InflModelGetSequenceSizes(sc->model, &V, NULL));
  PetscCall(InflDataGetSequenceShard(train, &start, &count, &tok, &off));
  PetscCall(InflTFIDFCreate(sc->comm, V, &tf));
  PetscCall(InflTFIDFAddDocuments(tf, start, count, tok, off));
  PetscCall(InflTFIDFSetUp(tf));
  PetscCall(InflTopKDestroy(&sc->cand));
  PetscCall(InflTFIDFTopK(tf, sc->Q, sc->qtok, sc->qoff, sc->tfidf_topk, &sc->cand));
  PetscCall(InflTFIDFDestroy(&tf));
  PetscCall(PetscFree(sc->cand_local));
  PetscCall(PetscMalloc1((size_t)PetscMax(1, (int64_t)sc->Q * sc->cand->K), &sc->cand_local));
  for (PetscInt q = 0; q < sc->Q; q++)
    for (PetscInt k = 0; k < sc->cand->n[q]; k++) {
      int64_t m = sc->cand->index[(int64_t)q * sc->cand->K + k];
      if (m >= start && m < start + count) sc->cand_local[n++] = m;
    }
  PetscCall(PetscSortInt64(n, sc->cand_local));
  {
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++) if (!u || sc->cand_local[u - 1] != sc->cand_local[i]) sc->cand_local[u++] = sc->cand_local[i];
    sc->ncand_local = u;
  }
  sc->npairs = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerScore(InflScorer sc, InflData train)
{
  int64_t        N, d, start, count;
  ScoreCapture   cap;
  double        *out;
  ScoreScratch   w;
  size_t         es = sc->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
  InflRanges     done = {0};
  InflCapture   *recv = NULL, *rcap = NULL;

  PetscFunctionBegin;
  PetscCheck(sc->Q > 0, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflScorerSetQueries before InflScorerScore");
  PetscCall(InflModelCheckData(sc->model, train));
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  {
    const char *h;
    PetscCall(InflDataGetHash(train, &h));
    PetscCall(PetscStrncpy(sc->train_hash, h, sizeof(sc->train_hash)));
  }
  sc->ntrain = N;
  sc->start  = start;
  sc->count  = count;
  PetscCall(InflTopKClampToTrain(sc->comm, &sc->K, N, &sc->K_requested));
  if (sc->tfidf_topk > 0 && sc->K > sc->tfidf_topk) { /* each query scores only its candidates: lists of as many */
    PetscCall(PetscPrintf(sc->comm, "note: -score_topk %d is larger than the %d TF-IDF candidates scored per query (-score_tfidf_topk %d); keeping %d proponents and opponents per query (raise -score_tfidf_topk to keep more)\n", (int)sc->K, (int)sc->tfidf_topk, (int)sc->tfidf_topk, (int)sc->tfidf_topk));
    if (!sc->K_requested) sc->K_requested = sc->K;
    sc->K = sc->tfidf_topk;
  }
  PetscCall(InflTopKDestroy(&sc->top));
  PetscCall(InflTopKDestroy(&sc->bottom));
  PetscCall(InflTopKCreate(sc->Q, sc->K, PETSC_TRUE, &sc->top));
  PetscCall(InflTopKCreate(sc->Q, sc->K, PETSC_FALSE, &sc->bottom));
  if (sc->tfidf_topk > 0) PetscCall(scorer_tfidf_candidates(sc, train));
  PetscCall(PetscFree(sc->local));
  PetscCall(PetscFree(sc->local_layer));
  PetscCall(PetscFree(sc->local_norm));
  if (sc->save_all) PetscCall(PetscCalloc1((size_t)sc->Q * PetscMax(count, 1), &sc->local));
  if (sc->save_all) PetscCall(PetscCalloc1((size_t)PetscMax(count, 1), &sc->local_norm));
  if (sc->save_all && sc->per_layer) PetscCall(PetscCalloc1((size_t)sc->L * sc->Q * PetscMax(count, 1), &sc->local_layer));
  {
    PetscInt rows;
    size_t   resident = (size_t)count * (sizeof(float) * d + sizeof(int64_t)) + sc->qdata, per, lowrank = 0;
    PetscCall(InflModelGetMaxRows(sc->model, &rows));
    /* per example: its capture and the model's workspace, its scores, and per row (token) the layer terms of every
     * query twice (score_scratch_create, G times longer with several layer groups) and the low-rank kernel's scratch */
    per = sc->C * InflModelCaptureBytes(sc->model) + sizeof(double) * sc->Q * (sc->local_layer ? 2 : 1) + (size_t)(sc->G > 1 ? sc->G : 1) * 2 * sizeof(double) * (size_t)sc->Q * rows;
    if (sc->layout) { /* the factors this rank holds; with several groups the rows of the owned layers from G ranks and
                       * the partial scores of G chunks */
      size_t mine, owned = 0;
      PetscCall(InflLayerLayoutGetBytes(sc->layout, &mine, NULL, NULL));
      resident += mine;
      for (PetscInt l = 0; l < sc->L; l++)
        if (sc->own[l]) owned += (size_t)(sc->din[l] + 1 + sc->dout[l]);
      if (sc->G > 1) per += (size_t)sc->G * (rows * owned * es + 2 * sizeof(double) * sc->Q * (sc->local_layer ? 1 + sc->L : 1));
      if (sc->split) { /* the rows of the group's E ranks: gathered and rotated in double (5 buffers of the widest
                        * layer, InflEKFACGatherGroupRows), their rotated copy for the kernels, the kernels' scratch
                        * and the group's partial scores, E times (G times with several groups) a capture's */
        PetscInt E, maxd = 1;
        PetscCall(InflLayerLayoutGetGroups(sc->layout, NULL, &E, NULL, NULL));
        for (PetscInt l = 0; l < sc->L; l++) maxd = PetscMax(maxd, PetscMax(sc->din[l] + 1, sc->dout[l] * E));
        per += (size_t)E * (sc->G > 1 ? sc->G : 1) * (rows * (5 * sizeof(double) * maxd + owned * es + 2 * sizeof(double) * sc->Q) + sizeof(double) * sc->Q * (sc->local_layer ? 1 + sc->L : 1));
      }
    } else if (sc->ek) resident += InflEKFACBytes(sc->model); /* none with the identity (TracIn) */
    for (PetscInt l = 0; l < sc->L; l++) {
      size_t ql = (size_t)sc->Q * sc->dout[l] * (sc->din[l] + 1);
      resident += ql * ((sc->Pq[l] ? sizeof(double) : 0) + (sc->P64[l] ? sizeof(double) : 0) + (sc->P32[l] ? sizeof(float) : 0));
      if (sc->lr[l]) lowrank = PetscMax(lowrank, 2 * es * (size_t)sc->Q * sc->lr[l] * rows);
    }
    per += lowrank;
    {
      size_t results;
      PetscCall(InflScorerGetResultBytes(sc, sc->Q, sc->L, count, &results));
      resident += results;
    }
    { /* InflScorerSetQueries held, for one of its layers at a time, this rank's block of the queries and the gathered
       * ones (InflScorerGetQueryBytes: the same terms) */
      PetscMPIInt          size;
      size_t               transient = 0;
      MPI_Comm             group     = sc->comm;
      InflLayerLayoutStage st;
      PetscCall(InflScorerGetQueryBytes(sc, sc->model, sc->Q, &st));
      if (sc->layout) PetscCall(InflLayerLayoutGetComms(sc->layout, NULL, &group, NULL));
      PetscCallMPI(MPI_Comm_size(group, &size));
      for (PetscInt l = 0; l < sc->L; l++)
        if (sc->own[l]) transient = PetscMax(transient, (size_t)((double)sc->dout[l] * (sc->din[l] + 1) * ((sc->ek ? st.once_weight : 0) + st.once_per_item * (double)((sc->Q + size - 1) / size) + (sc->by_input[l] ? 0 : st.once_wide))));
      /* and this rank's block of queries captured in double (the allocator need not return it to the system) */
      transient += (size_t)((sc->Q + size - 1) / size) * InflModelCaptureBytes(sc->model) * (sc->prec == INFL_PREC_DOUBLE ? 1 : 2);
      resident += transient;
    }
    PetscCall(InflModelGetChunk(sc->model, sc->comm, "infl score", sc->chunk_set, count, resident + 4 * 1024 * 1024, per, &sc->chunk));
  }
  PetscCall(score_capture_create(sc, sc->chunk, &cap));
  if (sc->G > 1) PetscCall(InflLayerLayoutCaptureCreate(sc->layout, cap.cap[0], &recv)); /* G > 1: C == 1 (EK-FAC) */
  {
    PetscInt Tmax = recv ? recv->Tmax : cap.cap[0]->Tmax, Bmax = recv ? recv->Bmax : cap.cap[0]->Bmax, E = 1;
    if (sc->split) { /* the rows of the group's E ranks, rotated */
      PetscCall(InflLayerLayoutGetGroups(sc->layout, NULL, &E, NULL, NULL));
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &Tmax, 1, MPIU_INT, MPI_MAX, sc->comm));
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &Bmax, 1, MPIU_INT, MPI_MAX, sc->comm));
      PetscCall(InflCaptureAllocate(sc->prec, sc->L, sc->din, sc->dout, sc->own, E * Bmax, E * Tmax, &rcap)); /* the rotated rows of the owned layers */
    }
    PetscCall(score_scratch_create(sc, E * Tmax, E * Bmax, &w));
  }
  PetscCall(PetscMalloc1((size_t)sc->Q * sc->chunk, &out));
  PetscCall(score_register_events());
  if (sc->out[0]) PetscCall(scorer_restore(sc, &done));
  {
    ScoreChunkCtx c    = {sc, &cap, cap.cap[0], train, start, count, &w, out, recv, NULL, NULL, NULL, 0, 0, rcap, NULL, NULL};
    InflChunkLoop loop = {score_chunk, sc->out[0] ? score_checkpoint : NULL, &c, NULL};
    PetscCall(InflModelGetExampleUnit(sc->model, &loop.unit));
    char          partial[PETSC_MAX_PATH_LEN];
    PetscInt      nrow = sc->Q * (sc->local_layer ? 1 + sc->L : 1);
    if (recv || rcap) PetscCall(PetscMalloc3(sc->G + 1, &c.bstart, (size_t)nrow * PetscMax(recv ? recv->Bmax : cap.cap[0]->Bmax, 1), &c.part, (size_t)nrow * sc->chunk, &c.red));
    if (rcap) {
      PetscInt E;
      PetscCall(InflLayerLayoutGetGroups(sc->layout, NULL, &E, NULL, NULL));
      PetscCall(PetscMalloc2((size_t)nrow * PetscMax(rcap->Bmax, 1), &c.gpart, E + 1, &c.gb));
    }
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", sc->out[0] ? sc->out : "(no output file)"));
    PetscCall(InflRunChunksStep(sc->comm, "infl score", start, count, sc->chunk, &done, &loop, recv || rcap ? score_step : NULL, partial));
    PetscCall(PetscFree3(c.bstart, c.part, c.red));
    PetscCall(PetscFree2(c.gpart, c.gb));
  }
  PetscCall(InflCaptureDestroy(&recv));
  PetscCall(InflCaptureDestroy(&rcap));
  PetscCall(InflRangesDestroy(&done));
  PetscCall(score_scratch_destroy(&w));
  PetscCall(PetscFree(out));
  PetscCall(score_capture_destroy(&cap));
  PetscCall(InflTopKMerge(sc->comm, sc->top));
  PetscCall(InflTopKMerge(sc->comm, sc->bottom));
  if (sc->cand) {
    int64_t pairs = sc->npairs;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &pairs, 1, MPI_INT64_T, MPI_SUM, sc->comm));
    PetscCall(PetscPrintf(sc->comm, "score: TF-IDF candidates: %" PRId64 " (query, training sequence) pairs scored of %" PRId64 "\n", pairs, (int64_t)sc->Q * N));
  }
  if (sc->per_layer || sc->per_token) {
    PetscLogDouble t0, t1;
    PetscCall(PetscTime(&t0));
    PetscCall(scorer_pair_terms(sc, train));
    PetscCall(PetscTime(&t1));
    PetscCall(PetscPrintf(sc->comm, "score: %s terms of the kept pairs: %.2f s\n", sc->per_token ? (sc->per_layer ? "per-token and per-layer" : "per-token") : "per-layer", t1 - t0));
  }
  if (sc->ek) PetscCall(InflEKFACFreeScratch(sc->ek)); /* the group rows of the largest chunk */
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerGetQueryLoss(InflScorer sc, const double **loss)
{
  PetscFunctionBegin;
  PetscCheck(sc->qloss, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflScorerSetQueries (or SetQueryData, SetQuerySequences) before InflScorerGetQueryLoss");
  *loss = sc->qloss;
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerGetTopK(InflScorer sc, InflTopK **top, InflTopK **bottom)
{
  PetscFunctionBegin;
  if (top) *top = sc->top;
  if (bottom) *bottom = sc->bottom;
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerGetNorms(InflScorer sc, double qnorm[], const double **train_norm)
{
  PetscFunctionBegin;
  PetscCheck(sc->Q > 0, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflScorerSetQueries before InflScorerGetNorms");
  if (qnorm) for (PetscInt q = 0; q < sc->Q; q++) qnorm[q] = sqrt(sc->qnorm2[q]);
  if (train_norm) *train_norm = sc->local_norm;
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerGetLocalScores(InflScorer sc, int64_t *start, int64_t *count, const double **scores)
{
  PetscFunctionBegin;
  *start  = sc->start;
  *count  = sc->count;
  *scores = sc->local;
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSave(InflScorer sc, const char path[], PetscBool overwrite)
{
  hid_t          file;
  int64_t        dq[1] = {sc->Q}, dl[3] = {sc->L, sc->Q, sc->K};
  double        *qn;
  InflScoresFile f;

  PetscFunctionBegin;
  PetscCheck(sc->top, sc->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflScorerScore before InflScorerSave");
  PetscCall(PetscMalloc1(sc->Q, &qn));
  for (PetscInt q = 0; q < sc->Q; q++) qn[q] = sqrt(sc->qnorm2[q]);
  f = scorer_file(sc, qn);
  if (sc->K_requested) {
    f.K_requested = sc->K_requested;
    f.topk_note   = sc->tfidf_topk > 0 && sc->K == sc->tfidf_topk ? "-score_topk was larger than -score_tfidf_topk: the lists hold every candidate scored (topk = -score_tfidf_topk)" : "-score_topk was larger than the training set: the lists hold every training example";
  }
  PetscCall(InflScoresFileBegin(&f, path, overwrite, &file));
  PetscCall(PetscFree(qn));
  if (sc->identity) { /* the checkpoints as model hash:learning rate (the layers of /scores_per_layer, per_layer) */
    char list[INFL_TRACIN_MAX * 96] = "";
    for (PetscInt c = 0; c < sc->C; c++) {
      const char *mh;
      PetscCall(InflModelGetHash(sc->models[c], &mh));
      PetscCall(PetscSNPrintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s:%.17g", c ? "," : "", mh, sc->eta[c]));
    }
    PetscCall(InflH5SetAttrString(file, "/", "method", "tracin: sum over checkpoints of eta_c <g_c(q), g_c(m)> (exact gradients)"));
    PetscCall(InflH5SetAttrString(file, "/", "tracin_checkpoints", list));
  }
  if (sc->qpred) {
    PetscCall(InflH5WriteArray(file, "/query_predictions", H5T_NATIVE_INT64, 1, dq, sc->qpred));
    PetscCall(InflH5WriteArray(file, "/query_prediction_probability", H5T_NATIVE_DOUBLE, 1, dq, sc->qprob));
  }
  if (sc->per_layer) {
    PetscCall(InflH5WriteArray(file, "/topk/per_layer", H5T_NATIVE_DOUBLE, 3, dl, sc->top_layer));
    PetscCall(InflH5WriteArray(file, "/bottomk/per_layer", H5T_NATIVE_DOUBLE, 3, dl, sc->bottom_layer));
  }
  if (sc->qloss) PetscCall(InflH5WriteArray(file, "/query_loss", H5T_NATIVE_DOUBLE, 1, dq, sc->qloss));
  if (sc->qtok) { /* sequence queries: their tokens and the first position whose token enters the loss */
    int64_t dt[1] = {sc->qoff[sc->Q]}, d1[1] = {sc->Q + 1};
    PetscCall(InflH5WriteArray(file, "/query_sequences/tokens", H5T_NATIVE_INT32, 1, dt, sc->qtok));
    PetscCall(InflH5WriteArray(file, "/query_sequences/offsets", H5T_NATIVE_INT64, 1, d1, sc->qoff));
    PetscCall(InflH5WriteArray(file, "/query_sequences/loss_start", H5T_NATIVE_INT64, 1, dq, sc->qstart));
  }
  if (sc->cand) { /* -score_tfidf_topk: the candidates scored (index -1 where fewer exist) */
    int64_t  dc[2] = {sc->Q, sc->cand->K}, *ci;
    double   *cs;
    PetscCall(PetscMalloc2((size_t)sc->Q * sc->cand->K, &ci, (size_t)sc->Q * sc->cand->K, &cs));
    for (PetscInt q = 0; q < sc->Q; q++)
      for (PetscInt k = 0; k < sc->cand->K; k++) {
        int64_t i = (int64_t)q * sc->cand->K + k;
        ci[i]     = k < sc->cand->n[q] ? sc->cand->index[i] : -1;
        cs[i]     = k < sc->cand->n[q] ? sc->cand->score[i] : NAN;
      }
    PetscCall(InflH5WriteArray(file, "/tfidf/candidates", H5T_NATIVE_INT64, 2, dc, ci));
    PetscCall(InflH5WriteArray(file, "/tfidf/bm25", H5T_NATIVE_DOUBLE, 2, dc, cs));
    PetscCall(InflH5SetAttrInt(file, "/tfidf", "topk", sc->cand->K)); /* -score_tfidf_topk, at most N: the columns */
    PetscCall(PetscFree2(ci, cs));
  }
  if (sc->per_token) {
    int64_t dR[1] = {sc->ptR}, dR1[1] = {sc->ptR + 1}, dM[1] = {sc->ptM};
    PetscCall(InflH5WriteArray(file, "/per_token/values", H5T_NATIVE_DOUBLE, 1, dM, sc->pt_values));
    PetscCall(InflH5WriteArray(file, "/per_token/tokens", H5T_NATIVE_INT32, 1, dM, sc->pt_tokens));
    PetscCall(InflH5WriteArray(file, "/per_token/offsets", H5T_NATIVE_INT64, 1, dR1, sc->pt_offsets));
    PetscCall(InflH5WriteArray(file, "/per_token/query", H5T_NATIVE_INT64, 1, dR, sc->pt_query));
    PetscCall(InflH5WriteArray(file, "/per_token/train_index", H5T_NATIVE_INT64, 1, dR, sc->pt_train));
    PetscCall(InflH5WriteArray(file, "/per_token/rank_kind", H5T_NATIVE_INT32, 1, dR, sc->pt_kind));
    PetscCall(InflH5SetAttrString(file, "/per_token", "attribution", "values[offsets[r] + t] = sum over layers of Ds_t^T P_l(q) a_t for row t (the input token tokens[offsets[r] + t], which predicts the token after it) of training sequence train_index[r] against query index query[r] (a position in /query_indices); the values of a row sum to its score"));
  }
  PetscCall(InflScoresFileEnd(sc->comm, path, &file));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerSetQueryHash(InflScorer sc, const char hash[])
{
  PetscFunctionBegin;
  PetscCall(PetscStrncpy(sc->query_hash, hash ? hash : "", sizeof(sc->query_hash)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflScorerDestroy(InflScorer *sc)
{
  PetscFunctionBegin;
  if (!*sc) PetscFunctionReturn(0);
  PetscCall(scorer_free_queries(*sc));
  PetscCall(InflTopKDestroy(&(*sc)->top));
  PetscCall(InflTopKDestroy(&(*sc)->bottom));
  PetscCall(PetscFree((*sc)->local));
  PetscCall(PetscFree((*sc)->local_layer));
  PetscCall(PetscFree((*sc)->local_norm));
  PetscCall(PetscFree2((*sc)->top_layer, (*sc)->bottom_layer));
  PetscCall(InflTopKDestroy(&(*sc)->cand));
  PetscCall(PetscFree((*sc)->cand_local));
  PetscCall(PetscFree4((*sc)->pt_offsets, (*sc)->pt_query, (*sc)->pt_train, (*sc)->pt_kind));
  PetscCall(PetscFree2((*sc)->pt_values, (*sc)->pt_tokens));
  PetscCall(PetscFree(*sc));
  PetscFunctionReturn(0);
}

PetscErrorCode InflSelfInfluenceBatch(InflModel model, InflEKFAC ek, PetscInt B, const float x[], const int64_t y[], InflCapture *cap, double self[])
{
  PetscInt L;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, &L, NULL));
  PetscCall(PetscArrayzero(self, B));
  if (B == 0) PetscFunctionReturn(0);
  PetscCall(InflModelCapture(model, B, x, y, cap));
  for (PetscInt l = 0; l < L; l++) PetscCall(InflEKFACSelfInfluenceCapture(ek, l, cap, self));
  PetscFunctionReturn(0);
}

PetscErrorCode InflSelfInfluenceShard(InflModel model, InflEKFAC ek, InflData train, int64_t lo, int64_t hi, InflCapture *cap, double self[])
{
  PetscInt L;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, &L, NULL));
  PetscCall(PetscArrayzero(self, hi - lo));
  if (hi == lo) PetscFunctionReturn(0);
  /* the gradient of each example's own loss (data labels; next tokens) */
  PetscCall(InflModelCaptureShard(model, train, lo, hi, INFL_FISHER_EMPIRICAL, 0, cap));
  for (PetscInt l = 0; l < L; l++) PetscCall(InflEKFACSelfInfluenceCapture(ek, l, cap, self));
  PetscFunctionReturn(0);
}

PetscErrorCode InflSelfInfluenceGathered(InflEKFAC ek, InflCapture *cap, double self[])
{
  InflLayerLayout lay;
  InflCapture    *recv = NULL, *src = cap;
  PetscInt        G, *bstart = NULL;
  PetscBool       split;
  double         *part;

  PetscFunctionBegin;
  PetscCall(InflEKFACGetLayout(ek, &lay));
  PetscCall(InflLayerLayoutGetGroups(lay, &G, NULL, NULL, NULL));
  split = InflLayerLayoutIsSplit(lay);
  PetscCall(PetscArrayzero(self, cap->B));
  if (G == 1 && !split) {
    for (PetscInt l = 0; l < cap->L; l++) PetscCall(InflEKFACSelfInfluenceCapture(ek, l, cap, self));
    PetscFunctionReturn(0);
  }
  if (G > 1) { /* the rows of the owned layers from the G ranks of the cross communicator */
    PetscCall(InflLayerLayoutCaptureCreate(lay, cap, &recv));
    PetscCall(PetscMalloc1(G + 1, &bstart));
    PetscCall(InflLayerLayoutGatherCapture(lay, cap, recv, bstart));
    src = recv;
  }
  PetscCall(PetscCalloc1(PetscMax(src->B, 1), &part));
  if (split) { /* each rank its rows Is of every owned layer, over the group's sequences; summed back over the group */
    MPI_Comm    group;
    PetscMPIInt E;
    PetscInt   *gb, Bg = 0;
    double     *gpart;
    int         b = (int)src->B;
    PetscCall(InflLayerLayoutGetComms(lay, NULL, &group, NULL));
    PetscCallMPI(MPI_Comm_size(group, &E));
    PetscCall(PetscMalloc1(E + 1, &gb));
    {
      int *all;
      PetscCall(PetscMalloc1(E, &all));
      PetscCallMPI(MPI_Allgather(&b, 1, MPI_INT, all, 1, MPI_INT, group));
      gb[0] = 0;
      for (int e = 0; e < E; e++) gb[e + 1] = gb[e] + all[e];
      Bg = gb[E];
      PetscCall(PetscFree(all));
    }
    PetscCall(PetscCalloc1(PetscMax(Bg, 1), &gpart));
    for (PetscInt l = 0; l < cap->L; l++) {
      InflEKFACGroupRows g;
      if (InflLayerLayoutOwns(lay, l)) PetscCall(InflEKFACSelfInfluenceSplit(ek, l, src, &g, gpart));
    }
    PetscCall(InflLayerLayoutGroupReduceToSources(lay, 1, PetscMax(Bg, 1), gpart, gb, src->B, part));
    PetscCall(PetscFree(gpart));
    PetscCall(PetscFree(gb));
  } else
    for (PetscInt l = 0; l < cap->L; l++)
      if (InflLayerLayoutOwns(lay, l)) PetscCall(InflEKFACSelfInfluenceCapture(ek, l, src, part));
  if (G > 1) PetscCall(InflLayerLayoutReduceToSources(lay, 1, PetscMax(recv->B, 1), part, bstart, cap->B, self));
  else PetscCall(PetscArraycpy(self, part, cap->B));
  PetscCall(PetscFree(part));
  PetscCall(PetscFree(bstart));
  PetscCall(InflCaptureDestroy(&recv));
  PetscFunctionReturn(0);
}

PetscErrorCode InflSelfInfluence(InflModel model, InflEKFAC ek, InflData train, PetscInt chunk, double self[])
{
  int64_t         start, count, nlocal, rounds;
  InflCapture    *cap;
  InflLayerLayout lay;
  PetscInt        G;
  MPI_Comm        comm;

  PetscFunctionBegin;
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  PetscCall(InflCaptureCreate(model, chunk, &cap));
  PetscCall(InflEKFACGetLayout(ek, &lay));
  PetscCall(InflLayerLayoutGetGroups(lay, &G, NULL, NULL, NULL));
  if (G == 1 && !InflLayerLayoutIsSplit(lay)) {
    for (int64_t off = 0; off < count; off += chunk) PetscCall(InflSelfInfluenceShard(model, ek, train, start + off, start + PetscMin(off + chunk, count), cap, self + off));
  } else { /* every rank takes part in every round's transfer to the layers' owners */
    PetscCall(InflLayerLayoutGetComms(lay, &comm, NULL, NULL));
    nlocal = (count + chunk - 1) / chunk;
    PetscCall(InflRounds(comm, nlocal, &rounds));
    for (int64_t r = 0; r < rounds; r++) {
      int64_t off = r * chunk, n = r < nlocal ? PetscMin(chunk, count - off) : 0;
      double  dummy;
      if (n > 0) PetscCall(InflModelCaptureShard(model, train, start + off, start + off + n, INFL_FISHER_EMPIRICAL, 0, cap));
      else cap->B = cap->T = 0;
      PetscCall(InflSelfInfluenceGathered(ek, cap, n > 0 ? self + off : &dummy));
    }
    PetscCall(InflEKFACFreeScratch(ek));
  }
  PetscCall(InflCaptureDestroy(&cap));
  PetscFunctionReturn(0);
}

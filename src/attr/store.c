/* The gradient store: building it (projected per-example gradients in parallel HDF5, resumable) and scoring queries
 * against it (identity or damped projected Fisher).  Formats and formulas: include/infl/store.h. */
#include <infl/store.h>
#include <infl/checkpoint.h>
#include <infl/eigen.h>
#include "scoresfile.h"
#include <cblas.h>
#include <math.h>
#include <petscblaslapack.h>

#define STORE_MAX INFL_STORE_MAX
#define STORE_BLOCK_FLOATS ((int64_t)1 << 22) /* store rows read at a time when not set: about 16 MiB of float32 */
#define GRAM_PANEL_DOUBLES ((int64_t)1 << 24) /* entries of G^T G summed per pass over the store: 128 MiB of double */

const char *const InflStoreCurvatures[] = {"identity", "fisher", "InflStoreCurvature", "INFL_STORE_", NULL};

/* ---------------------------------------------------------------- capturing examples of either content */

/* This rank's shard of a data set, rows or sequences: the one place where the store code branches on the content. */
typedef struct {
  InflDataContent content;
  int64_t         start, count, d;
  const float    *x;      /* rows: (count, d) */
  const int64_t  *y;      /* rows: (count) */
  const int32_t  *tokens; /* sequences: the shard's tokens */
  const int64_t  *off;    /* sequences: (count+1) */
  int64_t        *loff;   /* sequences: (chunk+1) scratch offsets of one chunk */
} Shard;

static PetscErrorCode shard_get(InflData data, PetscInt chunk, Shard *s)
{
  PetscFunctionBegin;
  PetscCall(PetscMemzero(s, sizeof(*s)));
  PetscCall(InflDataGetContent(data, &s->content));
  PetscCall(InflDataGetSizes(data, NULL, &s->d, NULL));
  if (s->content == INFL_DATA_ROWS) PetscCall(InflDataGetShard(data, &s->start, &s->count, &s->x, &s->y));
  else {
    PetscCall(InflDataGetSequenceShard(data, &s->start, &s->count, &s->tokens, &s->off));
    PetscCall(PetscMalloc1((size_t)chunk + 1, &s->loff));
  }
  PetscFunctionReturn(0);
}

/* Capture the shard's examples [lo, hi) (global indices) with their data labels (next tokens). */
static PetscErrorCode shard_capture(InflModel model, Shard *s, int64_t lo, int64_t hi, InflCapture *cap)
{
  int64_t  i0 = lo - s->start;
  PetscInt B  = (PetscInt)(hi - lo);

  PetscFunctionBegin;
  if (s->content == INFL_DATA_ROWS) PetscCall(InflModelCapture(model, B, s->x + i0 * s->d, s->y + i0, cap));
  else {
    for (PetscInt b = 0; b <= B; b++) s->loff[b] = s->off[i0 + b] - s->off[i0];
    PetscCall(InflModelCaptureSequences(model, B, s->loff, s->tokens + s->off[i0], NULL, cap));
  }
  PetscFunctionReturn(0);
}

/* Labels (rows) or lengths (sequences) of the shard's examples [lo, hi). */
static void shard_labels(const Shard *s, int64_t lo, int64_t hi, int64_t out[])
{
  for (int64_t i = lo; i < hi; i++) out[i - lo] = s->content == INFL_DATA_ROWS ? s->y[i - s->start] : s->off[i - s->start + 1] - s->off[i - s->start];
}

/* ---------------------------------------------------------------- building */

typedef struct {
  MPI_Comm      comm;
  InflProjector proj;
  InflModel     model;
  Shard         sh;
  InflCapture  *cap;
  PetscInt      k;
  int64_t       N;
  double       *proj_out; /* (chunk, k) */
  float        *rows;     /* (chunk, k) the chunk's projections as stored */
  double       *loss, *gnorm; /* (chunk) */
  int64_t      *labels;   /* (chunk) labels or lengths */
  hid_t         file;
  const char   *mh, *th, *key, *done_path, *done_tmp;
} BuildCtx;

static PetscErrorCode build_chunk(void *ctx, int64_t lo, int64_t hi)
{
  BuildCtx *c = (BuildCtx *)ctx;
  PetscInt  B = (PetscInt)(hi - lo), k = c->k;

  PetscFunctionBegin;
  PetscCall(shard_capture(c->model, &c->sh, lo, hi, c->cap));
  PetscCall(InflProjectorProjectCapture(c->proj, c->cap, c->proj_out, c->gnorm));
  for (PetscInt b = 0; b < B; b++) {
    c->loss[b] = c->cap->loss[b];
    for (PetscInt j = 0; j < k; j++) {
      float v = (float)c->proj_out[(int64_t)b * k + j];
      PetscCheck(isfinite(v), PETSC_COMM_SELF, PETSC_ERR_FP, "projected gradient of training example %" PRId64 " is %g at feature %d (non-finite in float32): the model's gradient overflows for this example (its loss is %g); check the model (infl eval) and the data", lo + b, c->proj_out[(int64_t)b * k + j], (int)j, c->cap->loss[b]);
      c->rows[(int64_t)b * k + j] = v;
    }
  }
  shard_labels(&c->sh, lo, hi, c->labels);
  PetscFunctionReturn(0);
}

/* Every rank writes the rows it projected in this round (none for a rank without a chunk). */
static PetscErrorCode build_step(void *ctx, int64_t lo, int64_t hi)
{
  BuildCtx *c = (BuildCtx *)ctx;

  PetscFunctionBegin;
  PetscCall(InflH5WriteRowsAt(c->file, "/gradients", H5T_NATIVE_FLOAT, lo, hi - lo, c->rows));
  PetscCall(InflH5WriteRowsAt(c->file, "/losses", H5T_NATIVE_DOUBLE, lo, hi - lo, c->loss));
  PetscCall(InflH5WriteRowsAt(c->file, "/train_norms", H5T_NATIVE_DOUBLE, lo, hi - lo, c->gnorm));
  PetscCall(InflH5WriteRowsAt(c->file, c->sh.content == INFL_DATA_ROWS ? "/labels" : "/lengths", H5T_NATIVE_INT64, lo, hi - lo, c->labels));
  PetscFunctionReturn(0);
}

/* The rows written so far are flushed to STORE.partial, then the list of completed examples replaces
 * STORE.partial.done atomically. */
static PetscErrorCode build_checkpoint(void *ctx, const InflRanges *done)
{
  BuildCtx *c = (BuildCtx *)ctx;
  hid_t     f;

  PetscFunctionBegin;
  InflCallH5(H5Fflush(c->file, H5F_SCOPE_GLOBAL));
  PetscCall(InflH5Create(c->comm, c->done_tmp, PETSC_TRUE, &f));
  PetscCall(InflH5WriteProvenance(f, c->comm, "project (partial)", c->mh, c->th, NULL));
  PetscCall(InflH5SetAttrString(f, "/", "checkpoint_key", c->key));
  PetscCall(InflRangesWrite(f, done));
  PetscCall(InflH5Close(&f));
  PetscCall(InflRenameAll(c->comm, c->done_tmp, c->done_path));
  PetscFunctionReturn(0);
}

/* Collective: a new STORE.partial with every dataset allocated and the attributes written. */
static PetscErrorCode build_create(BuildCtx *c, const char partial[])
{
  InflProjectKind kind;
  uint64_t        seed;
  PetscInt        L, k = c->k;
  const PetscInt *din1, *dout, *kin, *kout;
  int64_t         dims[2] = {c->N, k}, *lay, dl[2], P;
  double         *rn;

  PetscFunctionBegin;
  PetscCall(InflH5Create(c->comm, partial, PETSC_TRUE, &c->file));
  PetscCall(InflH5WriteProvenance(c->file, c->comm, "project", c->mh, c->th, NULL));
  PetscCall(InflH5SetAttrString(c->file, "/", "checkpoint_key", c->key));
  PetscCall(InflProjectorGetKind(c->proj, &kind));
  PetscCall(InflProjectorGetSeed(c->proj, &seed));
  PetscCall(InflProjectorGetLayers(c->proj, &L, &din1, &dout, &kin, &kout));
  PetscCall(InflProjectorGetSizes(c->proj, NULL, &P));
  PetscCall(InflH5SetAttrString(c->file, "/", "project_kind", InflProjectKinds[kind]));
  PetscCall(InflH5SetAttrString(c->file, "/", "project_key", c->key));
  {
    char s[32];
    PetscCall(PetscSNPrintf(s, sizeof(s), "%llu", (unsigned long long)seed));
    PetscCall(InflH5SetAttrString(c->file, "/", "project_seed", s));
  }
  {
    PetscInt ki = 0, ko = 0;
    for (PetscInt l = 0; l < L; l++) {
      ki = PetscMax(ki, kin[l]);
      ko = PetscMax(ko, kout[l]);
    }
    PetscCall(InflH5SetAttrInt(c->file, "/", "project_in", ki));
    PetscCall(InflH5SetAttrInt(c->file, "/", "project_out", ko));
  }
  PetscCall(InflH5SetAttrInt(c->file, "/", "project_dim", k));
  PetscCall(InflH5SetAttrInt(c->file, "/", "gradient_dim", P));
  PetscCall(InflH5SetAttrInt(c->file, "/", "examples", c->N));
  PetscCall(InflH5SetAttrString(c->file, "/", "content", c->sh.content == INFL_DATA_ROWS ? "rows" : "sequences"));
  PetscCall(InflH5SetAttrString(c->file, "/", "sign", "scores from this store: positive = proponent (upweighting the training example lowers the query loss)"));
  PetscCall(InflH5CreateDataset(c->file, "/gradients", H5T_NATIVE_FLOAT, 2, dims));
  PetscCall(InflH5CreateDataset(c->file, "/losses", H5T_NATIVE_DOUBLE, 1, dims));
  PetscCall(InflH5CreateDataset(c->file, "/train_norms", H5T_NATIVE_DOUBLE, 1, dims));
  PetscCall(InflH5CreateDataset(c->file, c->sh.content == INFL_DATA_ROWS ? "/labels" : "/lengths", H5T_NATIVE_INT64, 1, dims));
  PetscCall(PetscMalloc2((size_t)4 * L, &lay, k, &rn));
  for (PetscInt l = 0; l < L; l++) {
    lay[4 * l]     = din1[l];
    lay[4 * l + 1] = dout[l];
    lay[4 * l + 2] = kind == INFL_PROJECT_KRONECKER ? kin[l] : 0;
    lay[4 * l + 3] = kind == INFL_PROJECT_KRONECKER ? kout[l] : 0;
  }
  dl[0] = L;
  dl[1] = 4;
  PetscCall(InflH5WriteArray(c->file, "/layers", H5T_NATIVE_INT64, 2, dl, lay));
  PetscCall(InflProjectorGetRowNorms(c->proj, rn));
  dl[0] = k;
  PetscCall(InflH5WriteArray(c->file, "/projection_norms", H5T_NATIVE_DOUBLE, 1, dl, rn));
  PetscCall(PetscFree2(lay, rn));
  InflCallH5(H5Fflush(c->file, H5F_SCOPE_GLOBAL));
  PetscFunctionReturn(0);
}

/* Collective: first entries (up to `max`) of a per-rank index list gathered on rank 0, with the total count. */
static PetscErrorCode gather_indices(MPI_Comm comm, int64_t n, const int64_t idx[], int max, int64_t *total, int64_t out[], int *nout)
{
  PetscMPIInt size, rank;
  int64_t    *all;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscMalloc1((size_t)size * (max + 1), &all));
  {
    int64_t mine[65];
    PetscAssert(max <= 64, PETSC_COMM_SELF, PETSC_ERR_PLIB, "at most 64 indices");
    mine[0] = n;
    for (int i = 0; i < max; i++) mine[i + 1] = i < n ? idx[i] : -1;
    PetscCallMPI(MPI_Allgather(mine, max + 1, MPI_INT64_T, all, max + 1, MPI_INT64_T, comm));
  }
  *total = 0;
  *nout  = 0;
  for (PetscMPIInt r = 0; r < size; r++) {
    *total += all[(size_t)r * (max + 1)];
    for (int i = 0; i < max && i < all[(size_t)r * (max + 1)] && *nout < max; i++) out[(*nout)++] = all[(size_t)r * (max + 1) + 1 + i];
  }
  PetscCall(PetscFree(all));
  PetscFunctionReturn(0);
}

/* Where the entries of G^T G go, panel by panel: the block-cyclic pieces of a matrix on a BLACS grid (the projected
 * Fisher of a scorer), or the rows of the dataset /gram of `out` (each rank writes its share of every panel). */
typedef struct {
  const InflBlacsGrid *grid; /* NULL: write /gram */
  int                  nb;   /* grid: block size */
  double              *a;    /* grid: (lld, local columns) column-major, this rank's pieces */
  int64_t              lld;
  hid_t                out;  /* no grid: the file of /gram (k, k) */
} GramSink;

/* What the build's end pass reports besides G^T G: the largest |entry| of each column, the all-zero rows. */
typedef struct {
  double *colmax;   /* (k) */
  int64_t nzero;    /* all-zero rows of this rank */
  int64_t zero[20]; /* the first of them (global indices) */
} RowStats;

/* Rows of G^T G summed per pass: all k when k^2 entries fit GRAM_PANEL_DOUBLES, else a multiple of nb. */
static int64_t gram_panel_rows(PetscInt k, int nb)
{
  if ((int64_t)k * k <= GRAM_PANEL_DOUBLES) return k;
  return PetscMin(k, PetscMax(1, GRAM_PANEL_DOUBLES / k / nb) * nb);
}

/* Collective: the Gram matrix G^T G of the float32 rows [start, start+count) of `file`'s /gradients (N, k) that
 * this rank holds, summed over the ranks into `sink`, a panel of P rows of G^T G at a time (P = `panel`, or when 0
 * gram_panel_rows; P x k doubles per rank, one pass over the rows per panel; one pass in all for k <= 4096): each rank multiplies its rows into the panel
 * (DSYRK when the panel is the whole matrix, else DGEMM), then MPI_Reduce_scatter hands every rank the summed
 * entries it holds, so no rank needs G^T G whole; a panel's count stays below 2^31.  `st` (may be NULL) takes
 * the row statistics in the first pass; with `sink` NULL the pass only takes them. */
static PetscErrorCode gram_assemble(MPI_Comm comm, hid_t file, int64_t start, int64_t count, PetscInt k, PetscInt chunk, int64_t panel, RowStats *st, GramSink *sink)
{
  const InflBlacsGrid *g  = sink ? sink->grid : NULL;
  int                  nb = g ? sink->nb : 64;
  int64_t              P  = !sink ? k : panel > 0 ? PetscMin(panel, k) : gram_panel_rows(k, nb), npanels = sink ? (k + P - 1) / P : 1, rounds;
  float               *f;
  double              *X, *W = NULL, *send = NULL, *recv = NULL; /* (chunk, k); (P, k) panel; packed; this rank's */
  PetscMPIInt          size, rank, *counts;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscMalloc2((size_t)chunk * k, &f, (size_t)chunk * k, &X));
  PetscCall(PetscMalloc1(size, &counts));
  if (sink) PetscCall(PetscMalloc3((size_t)P * k, &W, g ? (size_t)P * k : 1, &send, (size_t)P * k, &recv));
  PetscCall(InflRounds(comm, (count + chunk - 1) / chunk, &rounds));
  for (int64_t p = 0; p < npanels; p++) {
    int64_t r0 = p * P, Pp = PetscMin(P, k - r0);
    if (W) PetscCall(PetscArrayzero(W, (size_t)P * k));
    for (int64_t r = 0; r < rounds; r++) {
      int64_t lo = PetscMin(count, r * chunk), B = PetscMin(count, lo + chunk) - lo;
      PetscCall(InflH5ReadRows(file, "/gradients", H5T_NATIVE_FLOAT, start + lo, B, f));
      for (int64_t i = 0; i < B * k; i++) X[i] = f[i];
      if (st && p == 0)
        for (int64_t b = 0; b < B; b++) {
          PetscBool nz = PETSC_FALSE;
          for (PetscInt j = 0; j < k; j++) {
            double v = X[b * k + j];
            if (v != 0) nz = PETSC_TRUE;
            st->colmax[j] = PetscMax(st->colmax[j], PetscAbsReal(v));
          }
          if (!nz) {
            if (st->nzero < 20) st->zero[st->nzero] = start + lo + b;
            st->nzero++;
          }
        }
      if (!W || B == 0) continue;
      if (Pp == k) cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, k, (int)B, 1.0, X, k, 1.0, W, k);
      else cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Pp, k, (int)B, 1.0, X + r0, k, X, k, 1.0, W, k);
    }
    if (!W) continue;
    if (Pp == k)
      for (PetscInt i = 0; i < k; i++)
        for (PetscInt j = 0; j < i; j++) W[(int64_t)i * k + j] = W[(int64_t)j * k + i];
    if (g) { /* pack the panel by owner, in (row, column) order; the owner unpacks in the same order */
      int64_t *n, *o;
      PetscCall(PetscCalloc2(size, &n, size, &o));
      for (int64_t i = r0; i < r0 + Pp; i++)
        for (int pc = 0; pc < g->npcol; pc++) n[((i / nb) % g->nprow) * g->npcol + pc] += InflBlacsLocalCount(k, nb, pc, g->npcol);
      for (PetscMPIInt r = 0; r < size; r++) {
        PetscCall(InflMPIIntCast(n[r], "projected Fisher panel block", &counts[r]));
        if (r) o[r] = o[r - 1] + n[r - 1];
      }
      for (int64_t i = r0; i < r0 + Pp; i++) {
        int64_t prow = ((i / nb) % g->nprow) * g->npcol;
        for (int64_t j = 0; j < k; j++) send[o[prow + (j / nb) % g->npcol]++] = W[(i - r0) * k + j];
      }
      PetscCall(PetscFree2(n, o));
      PetscCallMPI(MPI_Reduce_scatter(send, recv, counts, MPI_DOUBLE, MPI_SUM, comm));
      {
        int64_t m = 0;
        for (int64_t i = r0; i < r0 + Pp; i++) {
          if ((i / nb) % g->nprow != g->myrow) continue;
          int64_t li = (i / nb / g->nprow) * nb + i % nb;
          for (int64_t j = 0; j < k; j++)
            if ((j / nb) % g->npcol == g->mycol) sink->a[li + ((j / nb / g->npcol) * nb + j % nb) * sink->lld] = recv[m++];
        }
      }
    } else { /* rows of the panel partitioned over the ranks, written to /gram */
      int64_t s0, sn;
      for (PetscMPIInt r = 0; r < size; r++) {
        InflPartition(Pp, size, r, &s0, &sn);
        PetscCall(InflMPIIntCast(sn * k, "Gram matrix panel block", &counts[r]));
      }
      InflPartition(Pp, size, rank, &s0, &sn);
      PetscCallMPI(MPI_Reduce_scatter(W, recv, counts, MPI_DOUBLE, MPI_SUM, comm));
      PetscCall(InflH5WriteRowsAt(sink->out, "/gram", H5T_NATIVE_DOUBLE, r0 + s0, sn, recv));
    }
  }
  PetscCall(PetscFree3(W, send, recv));
  PetscCall(PetscFree(counts));
  PetscCall(PetscFree2(f, X));
  PetscFunctionReturn(0);
}

/* Collective: one pass over the finished rows: all-zero rows and columns (reported), the Gram matrix G^T G (written
 * as /gram unless gram is false; more passes when k > 4096, see gram_assemble). */
static PetscErrorCode build_finish(BuildCtx *c, PetscInt chunk, PetscBool gram)
{
  PetscInt k = c->k;
  int64_t  total = 0, first[20];
  int      nfirst;
  RowStats st;
  GramSink sink = {NULL, 0, NULL, 0, c->file};

  PetscFunctionBegin;
  chunk = (PetscInt)PetscMax(chunk, PetscMin(STORE_BLOCK_FLOATS / k, PetscMax(c->sh.count, 1))); /* rows read at a time */
  PetscCall(PetscMemzero(&st, sizeof(st)));
  PetscCall(PetscCalloc1(k, &st.colmax));
  if (gram) {
    int     nd;
    int64_t dims[8], dg[2] = {k, k};
    PetscCall(InflH5GetDims(c->file, "/gram", &nd, dims)); /* present when an earlier run stopped in this pass */
    if (nd < 0) PetscCall(InflH5CreateDataset(c->file, "/gram", H5T_NATIVE_DOUBLE, 2, dg));
  }
  PetscCall(gram_assemble(c->comm, c->file, c->sh.start, c->sh.count, k, chunk, 0, &st, gram ? &sink : NULL));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, st.colmax, k, MPI_DOUBLE, MPI_MAX, c->comm));
  PetscCall(gather_indices(c->comm, st.nzero, st.zero, 20, &total, first, &nfirst));
  PetscCall(InflH5SetAttrInt(c->file, "/", "zero_rows", total));
  if (total) {
    char list[512] = "";
    for (int i = 0; i < nfirst; i++) PetscCall(PetscSNPrintf(list + strlen(list), sizeof(list) - strlen(list), "%s%" PRId64, i ? ", " : "", first[i]));
    PetscCall(PetscPrintf(c->comm, "warning: %" PRId64 " training examples have an all-zero projected gradient (examples %s%s): their loss gradient vanishes or underflows; every score against them is 0\n", total, list, total > nfirst ? ", ..." : ""));
  }
  {
    int64_t nzc = 0, zc[20];
    for (PetscInt j = 0; j < k; j++)
      if (st.colmax[j] == 0) {
        if (nzc < 20) zc[nzc] = j;
        nzc++;
      }
    PetscCall(InflH5SetAttrInt(c->file, "/", "zero_features", nzc));
    if (nzc) {
      char list[512] = "";
      for (int i = 0; i < (int)PetscMin(nzc, 20); i++) PetscCall(PetscSNPrintf(list + strlen(list), sizeof(list) - strlen(list), "%s%" PRId64, i ? ", " : "", zc[i]));
      PetscCall(PetscPrintf(c->comm, "warning: %" PRId64 " of the %d projected features are zero for every training example (features %s%s): the projection or the model's gradients are degenerate; try another -project_seed or -project_kind\n", nzc, (int)k, list, nzc > 20 ? ", ..." : ""));
    }
  }
  PetscCall(PetscFree(st.colmax));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreBuild(InflProjector proj, InflModel model, InflData train, PetscBool gram, const char out[], PetscBool overwrite)
{
  MPI_Comm    comm;
  BuildCtx    c;
  char        partial[PETSC_MAX_PATH_LEN], done_path[PETSC_MAX_PATH_LEN], done_tmp[PETSC_MAX_PATH_LEN], key[512], pkey[256];
  const char *mh, *th;
  PetscInt    chunk;
  PetscBool   chunk_set;
  InflRanges  done = {0};

  PetscFunctionBegin;
  PetscCall(InflModelGetComm(model, &comm));
  InflCheckAll(comm, overwrite || !InflFileExists(out), PETSC_ERR_FILE_OPEN, "%s exists; pass -overwrite to replace it or choose another -out", out);
  PetscCall(InflModelCheckData(model, train));
  PetscCall(PetscMemzero(&c, sizeof(c)));
  c.comm  = comm;
  c.proj  = proj;
  c.model = model;
  PetscCall(InflProjectorGetSizes(proj, &c.k, NULL));
  PetscCall(InflProjectorGetChunk(proj, &chunk, &chunk_set));
  PetscCall(InflDataGetSizes(train, &c.N, NULL, NULL));
  {
    int64_t     start, count; /* the shard's size (rows or sequences), for the chunk from -mem_limit */
    PetscInt    L, rows, maxd = 1;
    InflLinear *lin;
    PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
    PetscCall(InflModelGetMaxRows(model, &rows));
    PetscCall(InflModelGetLayers(model, &L, &lin));
    for (PetscInt l = 0; l < L; l++) maxd = PetscMax(maxd, PetscMax(lin[l].din + 1, lin[l].dout));
    /* per example: capture and model workspace, projected rows, and per row (token) a layer's rows in double */
    PetscCall(InflModelGetChunk(model, comm, "infl project", chunk_set, count, (size_t)count * sizeof(float) * 8 + (gram ? sizeof(double) * 2 * (size_t)gram_panel_rows(c.k, 64) * c.k : 0) + ((size_t)1 << 24) + ((size_t)4 << 20), InflModelCaptureBytes(model) + (sizeof(double) * 3 + sizeof(float)) * (size_t)c.k + 4 * sizeof(double) + (size_t)rows * 2 * sizeof(double) * maxd, &chunk));
  }
  PetscCall(shard_get(train, chunk, &c.sh));
  PetscCall(InflModelGetHash(model, &mh));
  PetscCall(InflDataGetHash(train, &th));
  PetscCall(InflProjectorGetKey(proj, pkey, sizeof(pkey)));
  PetscCall(PetscSNPrintf(key, sizeof(key), "%s examples %" PRId64, pkey, c.N));
  c.mh = mh;
  c.th = th;
  c.key = key;
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
  PetscCall(PetscSNPrintf(done_path, sizeof(done_path), "%s.partial.done", out));
  PetscCall(PetscSNPrintf(done_tmp, sizeof(done_tmp), "%s.partial.done.tmp", out));
  c.done_path = done_path;
  c.done_tmp  = done_tmp;
  if (InflFileExists(partial) && InflFileExists(done_path)) { /* resume (checked on every rank: a shared file system) */
    hid_t f;
    PetscCall(InflCheckpointOpen(comm, done_path, "project (partial)", mh, th, key, &f));
    PetscCall(InflRangesRead(f, &done));
    PetscCall(InflH5Close(&f));
    PetscCall(InflH5Open(comm, partial, PETSC_TRUE, &c.file));
    PetscCall(InflCheckpointCheckAttr(comm, c.file, partial, "checkpoint_key", key));
    PetscCall(InflCheckpointCheckAttr(comm, c.file, partial, "model_sha256", mh));
    PetscCall(InflCheckpointCheckAttr(comm, c.file, partial, "train_sha256", th));
    PetscCall(PetscPrintf(comm, "project: resuming from %s (%" PRId64 " of %" PRId64 " examples done)\n", partial, InflRangesCount(&done), c.N));
  } else PetscCall(build_create(&c, partial));
  PetscCall(InflCaptureCreate(model, chunk, &c.cap));
  PetscCall(PetscMalloc2((size_t)chunk * c.k, &c.proj_out, (size_t)chunk * c.k, &c.rows));
  PetscCall(PetscMalloc3(chunk, &c.loss, chunk, &c.gnorm, chunk, &c.labels));
  {
    InflChunkLoop loop = {build_chunk, build_checkpoint, &c, NULL};
    PetscCall(InflModelGetExampleUnit(model, &loop.unit));
    PetscCall(InflRunChunksStep(comm, "infl project", c.sh.start, c.sh.count, chunk, &done, &loop, build_step, partial));
  }
  PetscCall(build_finish(&c, chunk, gram));
  /* the provenance of the run that finished it (ranks, options, time), as the stages that write their file whole */
  PetscCall(InflH5WriteProvenance(c.file, comm, "project", mh, th, NULL));
  PetscCall(InflH5Close(&c.file));
  PetscCall(InflRenameAll(comm, partial, out));
  PetscCall(InflRemoveAll(comm, done_path));
  PetscCall(InflRangesDestroy(&done));
  PetscCall(InflCaptureDestroy(&c.cap));
  PetscCall(PetscFree2(c.proj_out, c.rows));
  PetscCall(PetscFree3(c.loss, c.gnorm, c.labels));
  PetscCall(PetscFree(c.sh.loff));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- scoring against a store */

struct _p_InflStoreScorer {
  MPI_Comm           comm;
  InflStoreCurvature curvature;
  double             damping; /* -store_damping; < 0: the default 0.1 mean(diag(G^T G / N)) */
  double             lambda;  /* the damping used */
  PetscInt           K, chunk, K_requested; /* K_requested: -score_topk when clamped to N (else 0) */
  PetscBool          save_all, chunk_auto; /* chunk_auto: -score_chunk 0, rows from the feature count */
  PetscInt           C;                                   /* stores: one, or one per checkpoint (TracIn) */
  char               path[STORE_MAX][PETSC_MAX_PATH_LEN]; /* (C) */
  hid_t              file[STORE_MAX];
  InflModel          model[STORE_MAX];
  InflProjector      proj[STORE_MAX];
  PetscInt           kc[STORE_MAX];                       /* projected dimension of each store */
  int64_t            koff[STORE_MAX + 1];                 /* column of each store in the concatenated features */
  double             eta[STORE_MAX];                      /* weights (TracIn learning rates; 1 by default) */
  PetscInt           k;                                   /* koff[C]: columns of the concatenated features */
  int64_t            N, start, count;
  PetscInt           nb;      /* -store_block_size: ScaLAPACK block size of F */
  PetscInt           panel;   /* -store_panel_rows: rows of G^T G summed per pass over a store without /gram (0: auto) */
  InflBlacsGrid      grid;    /* fisher: the BLACS grid of all ranks (cached on comm) */
  int                desc[9]; /* fisher: ScaLAPACK descriptor of F */
  double            *fl;      /* fisher: (lld, nloc) column-major, this rank's block-cyclic pieces of F's Cholesky factor */
  int64_t            lld, nloc;
  char               model_hash[65], train_hash[65], query_hash[65], content[16];
  PetscInt           Q;
  int64_t           *qindex, *qlabel; /* (Q) */
  double            *gq, *pq;         /* (Q, k) */
  InflTopK          *top, *bottom;
  double            *local, *local_norm; /* (Q, count), (count) with save_all */
  char               out[PETSC_MAX_PATH_LEN]; /* InflStoreScorerSetCheckpoint: checkpoints go to out.partial */
};

PetscErrorCode InflStoreScorerCreate(MPI_Comm comm, InflStoreScorer *ss)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(ss));
  (*ss)->comm      = comm;
  (*ss)->curvature = INFL_STORE_FISHER;
  (*ss)->damping   = -1;
  (*ss)->K         = 10;
  (*ss)->chunk     = 0;
  (*ss)->nb        = 64;
  for (int c = 0; c < STORE_MAX; c++) (*ss)->file[c] = H5I_INVALID_HID;
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerSetFromOptions(InflStoreScorer ss)
{
  PetscBool set;

  PetscFunctionBegin;
  PetscOptionsBegin(ss->comm, NULL, "Store-based scoring options", "InflStoreScorer");
  PetscCall(PetscOptionsEnum("-store_curvature", "identity (projected dot products) or fisher (damped projected Fisher G^T G / N + lambda I)", "InflStoreScorerOpen", InflStoreCurvatures, (PetscEnum)ss->curvature, (PetscEnum *)&ss->curvature, NULL));
  PetscCall(PetscOptionsReal("-store_damping", "damping lambda of the projected Fisher (default 0.1 mean of its diagonal)", "InflStoreScorerOpen", ss->damping, &ss->damping, &set));
  PetscCall(PetscOptionsInt("-store_block_size", "ScaLAPACK block size of the distributed projected Fisher (fisher)", "InflStoreScorerOpen", ss->nb, &ss->nb, NULL));
  PetscCall(PetscOptionsInt("-store_panel_rows", "rows of G^T G summed per pass over a store without /gram (0: all when k^2 doubles fit 128 MiB)", "InflStoreScorerOpen", ss->panel, &ss->panel, NULL));
  PetscCall(PetscOptionsInt("-score_topk", "proponents and opponents kept per query", "InflStoreScorerScore", ss->K, &ss->K, NULL));
  PetscCall(PetscOptionsBool("-score_save_all", "write the full (queries, train) score matrix", "InflStoreScorerSave", ss->save_all, &ss->save_all, NULL));
  PetscCall(PetscOptionsInt("-score_chunk", "store rows read per chunk (0: about 16 MiB of rows)", "InflStoreScorerScore", ss->chunk, &ss->chunk, NULL));
  PetscOptionsEnd();
  PetscCheck(!set || (ss->damping >= 0 && isfinite(ss->damping)), ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "-store_damping %s must be a finite number >= 0 (omit it for 0.1 x the mean diagonal of the projected Fisher)", INFL_DSTR(ss->damping));
  PetscCheck(!set || ss->curvature == INFL_STORE_FISHER, ss->comm, PETSC_ERR_ARG_INCOMP, "-store_damping is used only with -store_curvature fisher; remove it or choose fisher");
  PetscCheck(ss->nb > 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "-store_block_size %d must be positive (default 64)", (int)ss->nb);
  PetscCheck(ss->panel >= 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "-store_panel_rows %d must be >= 0 (0: as many rows of G^T G as fit in 128 MiB)", (int)ss->panel);
  PetscCheck(ss->K > 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_topk %d must be positive", (int)ss->K);
  PetscCheck(ss->chunk >= 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "-score_chunk %d must be >= 0 (0: about 16 MiB of store rows at a time)", (int)ss->chunk);
  PetscFunctionReturn(0);
}

/* Collective: the damped projected Fisher F = G^T G / N + lambda I of store 0, assembled block-cyclically on the BLACS
 * grid of all ranks (from its /gram, each rank reading only the block it holds; or from one pass over the store per
 * panel of gram_assemble) and factored by ScaLAPACK pdpotrf (Cholesky, lower): no rank holds F whole. */
static PetscErrorCode store_fisher(InflStoreScorer ss, const char path[])
{
  const InflBlacsGrid *g;
  PetscInt             k = ss->k;
  int                  nb, kk, zero = 0, one = 1, ld, info = 0;
  int64_t              mloc, dims[8];
  int                  nd;
  double               tr = 0;
  PetscBLASInt         b;

  PetscFunctionBegin;
  PetscCheck(ss->N > 0, ss->comm, PETSC_ERR_FILE_UNEXPECTED, "%s holds no training examples", path);
  PetscCall(InflBlacsGetGrid(ss->comm, &ss->grid));
  g  = &ss->grid;
  nb = (int)PetscMin(ss->nb, PetscMax(k, 1));
  PetscCall(InflBLASIntCast(k, "projected dimension k", &b));
  kk       = (int)b;
  mloc     = InflBlacsLocalCount(k, nb, g->myrow, g->nprow);
  ss->nloc = InflBlacsLocalCount(k, nb, g->mycol, g->npcol);
  ss->lld  = PetscMax(1, mloc);
  PetscCall(InflBLASIntCast(ss->lld * PetscMax(1, ss->nloc), "local block of the projected Fisher (ScaLAPACK indexes it with 32-bit integers: use more ranks)", &b));
  ld = (int)ss->lld;
  PetscCall(PetscFree(ss->fl));
  PetscCall(PetscCalloc1((size_t)ss->lld * PetscMax(1, ss->nloc), &ss->fl));
  PetscCall(InflH5GetDims(ss->file[0], "/gram", &nd, dims));
  if (nd == 2) { /* F is symmetric: this rank's columns J are read as the contiguous rows J of /gram, of which it keeps
                  * its rows I, transposed; on a one-row grid (I = all) that is exactly its block */
    int64_t nbl = (ss->nloc + nb - 1) / nb, rounds;
    double *rows; /* (nb, k) the rows of one block of this rank's columns */
    PetscCheck(dims[0] == k && dims[1] == k, ss->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: /gram is %" PRId64 " x %" PRId64 " but the store has k = %d features; the store is damaged: rebuild it with infl project", path, dims[0], dims[1], (int)k);
    PetscCall(PetscMalloc1((size_t)nb * k, &rows));
    PetscCall(InflRounds(ss->comm, nbl, &rounds));
    for (int64_t r = 0; r < rounds; r++) { /* ranks with no block left (or no columns) select none */
      int64_t gj0 = r < nbl ? InflBlacsGlobal(r * nb, nb, g->mycol, g->npcol) : 0, nc = r < nbl ? PetscMin(nb, k - gj0) : 0;
      PetscCall(InflH5ReadRows(ss->file[0], "/gram", H5T_NATIVE_DOUBLE, gj0, nc, rows));
      for (int64_t li = 0; li < mloc; li++) {
        int64_t gi = InflBlacsGlobal(li, nb, g->myrow, g->nprow);
        for (int64_t j = 0; j < nc; j++) ss->fl[li + (r * nb + j) * ss->lld] = rows[j * k + gi];
      }
    }
    PetscCall(PetscFree(rows));
  } else {
    GramSink sink = {g, nb, ss->fl, ss->lld, H5I_INVALID_HID};
    PetscCall(PetscPrintf(ss->comm, "note: %s has no /gram (built with -store_gram 0): %s over the store assemble%s the projected Fisher\n", path, (ss->panel <= 0 || ss->panel >= k) && (int64_t)k * k <= GRAM_PANEL_DOUBLES ? "one extra pass" : "extra passes", (ss->panel <= 0 || ss->panel >= k) && (int64_t)k * k <= GRAM_PANEL_DOUBLES ? "s" : ""));
    PetscCall(gram_assemble(ss->comm, ss->file[0], ss->start, ss->count, k, ss->chunk, ss->panel, NULL, &sink));
  }
  { /* a damaged /gram (or store rows) would make every score NaN, blamed on no file */
    int64_t bad = InflFirstNonFinite(ss->lld * ss->nloc, ss->fl), gi = -1, gj = -1;
    if (bad >= 0) {
      gi = InflBlacsGlobal(bad % ss->lld, nb, g->myrow, g->nprow);
      gj = InflBlacsGlobal(bad / ss->lld, nb, g->mycol, g->npcol);
    }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &gj, 1, MPI_INT64_T, MPI_MAX, ss->comm));
    if (bad < 0 || gj < 0) gi = -1;
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &gi, 1, MPI_INT64_T, MPI_MAX, ss->comm));
    PetscCheck(gj < 0, ss->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: %s holds a non-finite value (entry (%" PRId64 ", %" PRId64 ") of G^T G is NaN or Inf); the store is damaged: rebuild it with infl project", path, nd == 2 ? "/gram" : "/gradients", gj, gi);
  }
  for (int64_t i = 0; i < ss->lld * ss->nloc; i++) ss->fl[i] /= (double)ss->N;
  for (int64_t lj = 0; lj < ss->nloc; lj++) { /* the diagonal entries this rank holds */
    int64_t gj = InflBlacsGlobal(lj, nb, g->mycol, g->npcol);
    for (int64_t li = 0; li < mloc; li++)
      if (InflBlacsGlobal(li, nb, g->myrow, g->nprow) == gj) tr += ss->fl[li + lj * ss->lld];
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &tr, 1, MPI_DOUBLE, MPI_SUM, ss->comm));
  ss->lambda = ss->damping >= 0 ? ss->damping : 0.1 * tr / k;
  PetscCheck(ss->lambda > 0 || ss->damping >= 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "the projected Fisher of %s is zero (every stored gradient is 0), so its default damping is 0; give -store_damping > 0 or use -store_curvature identity", path);
  for (int64_t lj = 0; lj < ss->nloc; lj++) {
    int64_t gj = InflBlacsGlobal(lj, nb, g->mycol, g->npcol);
    for (int64_t li = 0; li < mloc; li++)
      if (InflBlacsGlobal(li, nb, g->myrow, g->nprow) == gj) ss->fl[li + lj * ss->lld] += ss->lambda;
  }
  ss->nb = nb;
  descinit_(ss->desc, &kk, &kk, &nb, &nb, &zero, &zero, &g->ictxt, &ld, &info);
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK descinit: argument %d is illegal (a bug; k = %d, block size %d, grid %d x %d)", -info, kk, nb, g->nprow, g->npcol);
  pdpotrf_("L", &kk, ss->fl, &one, &one, ss->desc, &info);
  PetscCheck(info >= 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK pdpotrf: argument %d is illegal (a bug; k = %d, block size %d, grid %d x %d)", -info, kk, nb, g->nprow, g->npcol);
  {
    int worst = info; /* info is global in ScaLAPACK; agree anyway */
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, ss->comm));
    PetscCheck(worst == 0, ss->comm, PETSC_ERR_MAT_CH_ZRPVT, "the damped projected Fisher G^T G / N + lambda I of the store %s (k = %d, damping lambda = %g) is not positive definite: ScaLAPACK pdpotrf stopped at column %d; increase -store_damping (e.g. to %g), or use -store_curvature identity", path, (int)k, ss->lambda, worst, ss->lambda > 0 ? 10 * ss->lambda : 0.1 * tr / k > 0 ? 0.1 * tr / k : 1.0);
  }
  PetscFunctionReturn(0);
}

/* Collective: open store c = ss->C for `model` and rebuild its projection. */
static PetscErrorCode store_add(InflStoreScorer ss, const char path[], InflModel model)
{
  PetscInt    c = ss->C;
  char        th[65], content[16];
  char        kind[32], seed[32], have[128];
  const char *mh;
  int64_t     kin, kout, dim, dims[8];
  int         nd;

  PetscFunctionBegin;
  PetscCheck(c < STORE_MAX, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "at most %d stores (checkpoints) can be scored together", STORE_MAX);
  PetscCall(PetscStrncpy(ss->path[c], path, sizeof(ss->path[c])));
  ss->model[c] = model;
  PetscCall(InflH5Open(ss->comm, path, PETSC_FALSE, &ss->file[c]));
  PetscCall(InflH5GetAttrString(ss->file[c], "/", "project_kind", kind, sizeof(kind)));
  PetscCheck(kind[0], ss->comm, PETSC_ERR_FILE_UNEXPECTED, "%s is not a gradient store (no project_kind attribute); make one with infl project", path);
  PetscCall(InflH5GetAttrString(ss->file[c], "/", "model_sha256", have, sizeof(have)));
  PetscCall(InflModelGetHash(model, &mh));
  if (c == 0) PetscCall(PetscStrncpy(ss->model_hash, mh, sizeof(ss->model_hash)));
  {
    PetscBool same;
    PetscCall(PetscStrcmp(have, mh, &same));
    PetscCheck(same, ss->comm, PETSC_ERR_ARG_INCOMP, "the store %s was built with the model of sha256 %s, but -model has sha256 %s: give the model the store was built with, or build a store for this model with infl project", path, have, mh);
  }
  PetscCall(InflH5GetAttrString(ss->file[c], "/", "train_sha256", th, sizeof(th)));
  PetscCall(InflH5GetAttrString(ss->file[c], "/", "content", content, sizeof(content)));
  PetscCall(InflH5GetAttrString(ss->file[c], "/", "project_seed", seed, sizeof(seed)));
  PetscCall(InflH5GetAttrInt(ss->file[c], "/", "project_in", &kin));
  PetscCall(InflH5GetAttrInt(ss->file[c], "/", "project_out", &kout));
  PetscCall(InflH5GetAttrInt(ss->file[c], "/", "project_dim", &dim));
  PetscCall(InflProjectorDestroy(&ss->proj[c]));
  PetscCall(InflProjectorCreate(ss->comm, &ss->proj[c]));
  {
    PetscInt e;
    PetscBool found;
    PetscCall(PetscEListFind(3, InflProjectKinds, kind, &e, &found));
    PetscCheck(found, ss->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: unknown project_kind \"%s\" (kronecker, gaussian, rademacher); was it written by another version of infl?", path, kind);
    PetscCall(InflProjectorSetKind(ss->proj[c], (InflProjectKind)e));
    PetscCall(InflProjectorSetSizes(ss->proj[c], (PetscInt)kin, (PetscInt)kout, e == INFL_PROJECT_KRONECKER ? 0 : (PetscInt)dim));
  }
  PetscCall(InflProjectorSetSeed(ss->proj[c], strtoull(seed, NULL, 10)));
  PetscCall(InflProjectorSetUp(ss->proj[c], model));
  PetscCall(InflProjectorGetSizes(ss->proj[c], &ss->kc[c], NULL));
  PetscCall(InflH5GetDims(ss->file[c], "/gradients", &nd, dims));
  PetscCheck(nd == 2 && dims[1] == ss->kc[c] && dims[1] == dim, ss->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: /gradients has %" PRId64 " columns but its projection (%s, attribute project_dim %" PRId64 ") rebuilt for this model has %d; the store is damaged or belongs to another model", path, nd == 2 ? dims[1] : -1, kind, dim, (int)ss->kc[c]);
  if (c == 0) {
    ss->N = dims[0];
    PetscCall(PetscStrncpy(ss->train_hash, th, sizeof(ss->train_hash)));
    PetscCall(PetscStrncpy(ss->content, content, sizeof(ss->content)));
    ss->koff[0] = 0;
  } else {
    PetscCheck(dims[0] == ss->N && !strcmp(th, ss->train_hash) && !strcmp(content, ss->content), ss->comm, PETSC_ERR_ARG_INCOMP, "the store %s holds %" PRId64 " examples of the training data of sha256 %s, but %s holds %" PRId64 " of %s: the stores of the checkpoints must be built on the same training data", path, dims[0], th, ss->path[0], ss->N, ss->train_hash);
  }
  ss->eta[c]      = 1;
  ss->koff[c + 1] = ss->koff[c] + ss->kc[c];
  ss->k           = (PetscInt)ss->koff[c + 1];
  ss->C           = c + 1;
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerOpen(InflStoreScorer ss, const char path[], InflModel model)
{
  PetscMPIInt size, rank;

  PetscFunctionBegin;
  for (PetscInt c = 0; c < ss->C; c++) {
    PetscCall(InflH5Close(&ss->file[c]));
    PetscCall(InflProjectorDestroy(&ss->proj[c]));
  }
  ss->C = 0;
  PetscCall(store_add(ss, path, model));
  PetscCallMPI(MPI_Comm_size(ss->comm, &size));
  PetscCallMPI(MPI_Comm_rank(ss->comm, &rank));
  InflPartition(ss->N, size, rank, &ss->start, &ss->count);
  if (ss->chunk == 0 || ss->chunk_auto) {
    ss->chunk_auto = PETSC_TRUE;
    ss->chunk      = (PetscInt)PetscMax(1, STORE_BLOCK_FLOATS / ss->k);
  }
  if (ss->curvature == INFL_STORE_FISHER) PetscCall(store_fisher(ss, path));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerAddStore(InflStoreScorer ss, const char path[], InflModel model)
{
  PetscFunctionBegin;
  PetscCheck(ss->C > 0, ss->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflStoreScorerOpen before InflStoreScorerAddStore");
  PetscCheck(ss->curvature == INFL_STORE_IDENTITY, ss->comm, PETSC_ERR_ARG_INCOMP, "several stores (TracIn over checkpoints) are scored with -store_curvature identity: sum over checkpoints of eta_c <g_c(q), g_c(m)>; give -store_curvature identity");
  PetscCheck(!ss->Q, ss->comm, PETSC_ERR_ARG_WRONGSTATE, "add every store before InflStoreScorerSetQueries");
  PetscCall(store_add(ss, path, model));
  if (ss->chunk_auto) ss->chunk = (PetscInt)PetscMax(1, STORE_BLOCK_FLOATS / ss->k);
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerSetWeights(InflStoreScorer ss, PetscInt n, const double eta[])
{
  PetscFunctionBegin;
  PetscCheck(n == ss->C, ss->comm, PETSC_ERR_ARG_SIZ, "%d weights (-tracin_lr) for %d stores: give one per store", (int)n, (int)ss->C);
  PetscCheck(!ss->Q, ss->comm, PETSC_ERR_ARG_WRONGSTATE, "set the weights before InflStoreScorerSetQueries");
  for (PetscInt c = 0; c < n; c++) {
    PetscCheck(isfinite(eta[c]) && eta[c] > 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "weight %d (-tracin_lr) is %s: give the positive learning rate of checkpoint %d", (int)c, INFL_DSTR(eta[c]), (int)c);
    ss->eta[c] = eta[c];
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreTracInSelf(MPI_Comm comm, PetscInt C, const char *const paths[], const double eta[], const char out[], PetscBool overwrite)
{
  hid_t       f;
  int64_t     N = -1, start, count;
  char        th0[65] = "", mh0[65] = "";
  double     *self, *tn;
  PetscMPIInt size, rank;

  PetscFunctionBegin;
  PetscCheck(C > 0 && C <= STORE_MAX, comm, PETSC_ERR_ARG_OUTOFRANGE, "%d stores: give 1 to %d (-store a.h5,b.h5,...)", (int)C, STORE_MAX);
  InflCheckAll(comm, overwrite || !InflFileExists(out), PETSC_ERR_FILE_OPEN, "%s exists; pass -overwrite to replace it or choose another -out", out);
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  self = tn = NULL;
  for (PetscInt c = 0; c < C; c++) {
    char    th[65], kind[32];
    int     nd;
    int64_t dims[8];
    PetscCheck(isfinite(eta[c]) && eta[c] > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "weight %d (-tracin_lr) is %s: give the positive learning rate of checkpoint %d", (int)c, INFL_DSTR(eta[c]), (int)c);
    PetscCall(InflH5Open(comm, paths[c], PETSC_FALSE, &f));
    PetscCall(InflH5GetAttrString(f, "/", "project_kind", kind, sizeof(kind)));
    PetscCheck(kind[0], comm, PETSC_ERR_FILE_UNEXPECTED, "%s is not a gradient store (no project_kind attribute); make one with infl project", paths[c]);
    PetscCall(InflH5GetAttrString(f, "/", "train_sha256", th, sizeof(th)));
    PetscCall(InflH5GetDims(f, "/train_norms", &nd, dims));
    PetscCheck(nd == 1, comm, PETSC_ERR_FILE_UNEXPECTED, "%s has no /train_norms; rebuild it with infl project", paths[c]);
    if (c == 0) {
      N = dims[0];
      PetscCall(PetscStrncpy(th0, th, sizeof(th0)));
      PetscCall(InflH5GetAttrString(f, "/", "model_sha256", mh0, sizeof(mh0)));
      InflPartition(N, size, rank, &start, &count);
      PetscCall(PetscCalloc2(PetscMax(count, 1), &self, PetscMax(count, 1), &tn));
    } else PetscCheck(dims[0] == N && !strcmp(th, th0), comm, PETSC_ERR_ARG_INCOMP, "the store %s holds %" PRId64 " examples of the training data of sha256 %s, but %s holds %" PRId64 " of %s: the stores of the checkpoints must be built on the same training data", paths[c], dims[0], th, paths[0], N, th0);
    PetscCall(InflH5ReadRows(f, "/train_norms", H5T_NATIVE_DOUBLE, start, count, tn));
    { /* a norm is finite and >= 0: anything else is a damaged store, not a self-influence to write */
      int64_t bad = -1;
      double  v   = 0;
      for (int64_t i = 0; i < count && bad < 0; i++)
        if (!(isfinite(tn[i]) && tn[i] >= 0)) bad = start + i, v = tn[i];
      InflCheckAll(comm, bad < 0, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset /train_norms holds %s at entry %" PRId64 " (a gradient norm is finite and >= 0); the store is damaged: rebuild it with infl project", paths[c], INFL_DSTR(v), bad);
    }
    for (int64_t i = 0; i < count; i++) self[i] += eta[c] * tn[i] * tn[i];
    {
      int64_t bad = InflFirstNonFinite(count, self);
      InflCheckAll(comm, bad < 0, PETSC_ERR_FP, "TracIn self-influence of training example %" PRId64 " overflows (%s after checkpoint %d): lower the -tracin_lr weights", start + bad, INFL_DSTR(bad < 0 ? 0 : self[bad]), (int)c);
    }
    PetscCall(InflH5Close(&f));
  }
  {
    char    tmp[PETSC_MAX_PATH_LEN];
    int64_t dims[1] = {N};
    PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", out));
    PetscCall(InflH5Create(comm, tmp, PETSC_TRUE, &f));
    PetscCall(InflH5WriteProvenance(f, comm, "self", mh0, th0, NULL));
    PetscCall(InflH5SetAttrString(f, "/", "method", "tracin: sum over checkpoints of eta_c ||g_c(m)||^2 (exact gradient norms of the stores)"));
    PetscCall(InflH5WriteRows(f, "/self_influence", H5T_NATIVE_DOUBLE, 1, dims, start, count, self));
    PetscCall(InflH5Close(&f));
    PetscCall(InflRenameAll(comm, tmp, out));
  }
  PetscCall(PetscFree2(self, tn));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerSetQueries(InflStoreScorer ss, InflData query, PetscInt Q, const int64_t qidx[])
{
  InflDataContent content;
  InflCapture    *cap;
  PetscInt        bq = PetscMin(PetscMax(Q, 1), 64), k = ss->k;
  int64_t         N, d;
  float          *x = NULL;
  int32_t        *tok = NULL;
  int64_t        *off = NULL;

  PetscFunctionBegin;
  PetscCheck(ss->C > 0, ss->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflStoreScorerOpen before InflStoreScorerSetQueries");
  PetscCheck(Q > 0, ss->comm, PETSC_ERR_ARG_OUTOFRANGE, "no queries: give -query_indices");
  for (PetscInt c = 0; c < ss->C; c++) PetscCall(InflModelCheckData(ss->model[c], query));
  PetscCall(InflDataGetContent(query, &content));
  PetscCall(InflDataGetSizes(query, &N, &d, NULL));
  {
    const char *qh;
    PetscCall(InflDataGetHash(query, &qh));
    PetscCall(PetscStrncpy(ss->query_hash, qh, sizeof(ss->query_hash)));
  }
  PetscCheck(!strcmp(ss->content, content == INFL_DATA_ROWS ? "rows" : "sequences"), ss->comm, PETSC_ERR_ARG_INCOMP, "the store %s holds %s but the query data holds %s; give query data of the store's kind", ss->path[0], ss->content, content == INFL_DATA_ROWS ? "rows" : "sequences");
  PetscCall(PetscFree2(ss->qindex, ss->qlabel));
  PetscCall(PetscFree2(ss->gq, ss->pq));
  ss->Q = Q;
  PetscCall(PetscMalloc2(Q, &ss->qindex, Q, &ss->qlabel));
  PetscCall(PetscMalloc2((size_t)Q * k, &ss->gq, (size_t)Q * k, &ss->pq));
  PetscCall(PetscArraycpy(ss->qindex, qidx, Q));
  if (content == INFL_DATA_ROWS) PetscCall(PetscMalloc1((size_t)bq * d, &x));
  else PetscCall(PetscMalloc2((size_t)bq * d, &tok, bq + 1, &off));
  for (PetscInt c = 0; c < ss->C; c++) { /* each store's block of columns: its model's gradients, its projection */
    double         *t, *tt, *all;           /* (bq, nr) this rank's components; (nr, bq), (kc, bq) for the gather */
    PetscMPIInt     size, rank, *counts, *displs;
    int64_t         r0, nr;
    InflProjectKind kind;
    PetscCallMPI(MPI_Comm_size(ss->comm, &size));
    PetscCallMPI(MPI_Comm_rank(ss->comm, &rank));
    PetscCall(InflProjectorGetKind(ss->proj[c], &kind));
    /* the dense kinds: each rank generates its block of rows of R only (the cost of R is k P numbers) */
    if (kind == INFL_PROJECT_KRONECKER) size = 1;
    InflPartition(ss->kc[c], size, size > 1 ? rank : 0, &r0, &nr);
    PetscCall(InflCaptureCreate(ss->model[c], bq, &cap));
    PetscCall(PetscMalloc5((size_t)bq * PetscMax(nr, 1), &t, (size_t)bq * PetscMax(nr, 1), &tt, (size_t)bq * ss->kc[c], &all, size, &counts, size, &displs));
    for (PetscInt q0 = 0; q0 < Q; q0 += bq) {
      PetscInt B = PetscMin(bq, Q - q0);
      if (content == INFL_DATA_ROWS) {
        PetscCall(InflDataGetExamples(query, B, qidx + q0, x, ss->qlabel + q0));
        PetscCall(InflModelCapture(ss->model[c], B, x, ss->qlabel + q0, cap));
      } else {
        PetscCall(InflDataGetSequences(query, B, qidx + q0, tok, off));
        for (PetscInt b = 0; b < B; b++) ss->qlabel[q0 + b] = -1;
        PetscCall(InflModelCaptureSequences(ss->model[c], B, off, tok, NULL, cap));
      }
      PetscCall(InflProjectorProjectCaptureRows(ss->proj[c], cap, (PetscInt)r0, (PetscInt)nr, t));
      if (size == 1)
        for (PetscInt b = 0; b < B; b++) PetscCall(PetscArraycpy(ss->gq + (int64_t)(q0 + b) * k + ss->koff[c], t + (int64_t)b * nr, nr));
      else { /* all (kc, B): every rank's rows of the components, side by side */
        for (PetscMPIInt r = 0; r < size; r++) {
          int64_t s0, sn;
          InflPartition(ss->kc[c], size, r, &s0, &sn);
          PetscCall(InflMPIIntCast(sn * B, "query projection block", &counts[r]));
          PetscCall(InflMPIIntCast(s0 * B, "query projection offset", &displs[r]));
        }
        for (int64_t i = 0; i < nr; i++)
          for (PetscInt b = 0; b < B; b++) tt[i * B + b] = t[(int64_t)b * nr + i];
        PetscCallMPI(MPI_Allgatherv(tt, counts[rank], MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, ss->comm));
        for (PetscInt b = 0; b < B; b++)
          for (PetscInt i = 0; i < ss->kc[c]; i++) ss->gq[(int64_t)(q0 + b) * k + ss->koff[c] + i] = all[(int64_t)i * B + b];
      }
    }
    PetscCall(PetscFree5(t, tt, all, counts, displs));
    PetscCall(InflCaptureDestroy(&cap));
  }
  for (int64_t i = 0; i < (int64_t)Q * k; i++) PetscCheck(isfinite(ss->gq[i]), ss->comm, PETSC_ERR_FP, "the projected gradient of query %" PRId64 " is not finite: the model's gradient overflows on it; check the model and the query data", qidx[i / k]);
  for (PetscInt q = 0; q < Q; q++) /* weights: sum over checkpoints c of eta_c <g_c(q), g_c(m)> (TracIn) */
    for (PetscInt c = 0; c < ss->C; c++)
      for (int64_t j = ss->koff[c]; j < ss->koff[c + 1]; j++) ss->pq[(int64_t)q * k + j] = ss->eta[c] * ss->gq[(int64_t)q * k + j];
  if (ss->curvature == INFL_STORE_FISHER) { /* pq (Q, k) row-major is (k, Q) column-major: the right-hand sides */
    const InflBlacsGrid *g = &ss->grid;
    int                  nb = (int)ss->nb, kk = (int)k, nq, zero = 0, one = 1, ld, info = 0, descb[9];
    int64_t              mloc = InflBlacsLocalCount(k, nb, g->myrow, g->nprow), qloc = InflBlacsLocalCount(Q, nb, g->mycol, g->npcol);
    double              *bl; /* (mloc, qloc) column-major: this rank's pieces of the right-hand sides */
    PetscBLASInt         bi;
    PetscCall(InflBLASIntCast(Q, "queries", &bi));
    nq = (int)bi;
    PetscCall(InflBLASIntCast(PetscMax(1, mloc) * PetscMax(1, qloc), "local block of the query right-hand sides (use fewer queries per run or more ranks)", &bi));
    ld = (int)PetscMax(1, mloc);
    PetscCall(PetscMalloc1((size_t)ld * PetscMax(1, qloc), &bl));
    for (int64_t lq = 0; lq < qloc; lq++) {
      int64_t q = InflBlacsGlobal(lq, nb, g->mycol, g->npcol);
      for (int64_t li = 0; li < mloc; li++) bl[li + lq * ld] = ss->pq[q * k + InflBlacsGlobal(li, nb, g->myrow, g->nprow)];
    }
    descinit_(descb, &kk, &nq, &nb, &nb, &zero, &zero, &g->ictxt, &ld, &info);
    PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK descinit: argument %d is illegal (a bug; k = %d, %d queries, block size %d)", -info, kk, nq, nb);
    pdpotrs_("L", &kk, &nq, ss->fl, &one, &one, ss->desc, bl, &one, &one, descb, &info);
    PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "ScaLAPACK pdpotrs: argument %d is illegal (a bug; k = %d, %d queries, block size %d)", -info, kk, nq, nb);
    PetscCall(PetscArrayzero(ss->pq, (size_t)Q * k));
    for (int64_t lq = 0; lq < qloc; lq++) {
      int64_t q = InflBlacsGlobal(lq, nb, g->mycol, g->npcol);
      for (int64_t li = 0; li < mloc; li++) ss->pq[q * k + InflBlacsGlobal(li, nb, g->myrow, g->nprow)] = bl[li + lq * ld];
    }
    PetscCall(InflAllreduceSum(ss->pq, (int64_t)Q * k, MPI_DOUBLE, ss->comm));
    PetscCall(PetscFree(bl));
  }
  { /* the same on every rank: a weight (-tracin_lr) or the inverse of a tiny damping can overflow the finite gradients */
    int64_t i = InflFirstNonFinite((int64_t)Q * k, ss->pq);
    PetscCheck(i < 0, ss->comm, PETSC_ERR_FP, "the %s gradient of query %" PRId64 " overflows (feature %" PRId64 " is not finite; its projected gradient has norm %g): %s", ss->curvature == INFL_STORE_FISHER ? "preconditioned" : "weighted", qidx[i < 0 ? 0 : i / k], i < 0 ? 0 : i % k, i < 0 ? 0.0 : cblas_dnrm2(k, ss->gq + (i / k) * k, 1), ss->C > 1 || ss->eta[0] != 1 ? "lower the -tracin_lr weights" : "raise -store_damping");
  }
  PetscCall(PetscFree(x));
  PetscCall(PetscFree2(tok, off));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerGetQueries(InflStoreScorer ss, const double **gq, const double **pq)
{
  PetscFunctionBegin;
  if (gq) *gq = ss->gq;
  if (pq) *pq = ss->pq;
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerSetCheckpoint(InflStoreScorer ss, const char out[])
{
  PetscFunctionBegin;
  PetscCall(PetscStrncpy(ss->out, out ? out : "", sizeof(ss->out)));
  PetscFunctionReturn(0);
}

/* What identifies a store scoring besides the model and training data hashes: curvature and damping, the lists'
 * size, the stores' projections and weights, the queries (indices and data). */
static PetscErrorCode store_scorer_key(InflStoreScorer ss, char key[], size_t len)
{
  InflHash h;
  char     hex[65];

  PetscFunctionBegin;
  PetscCall(InflHashCreate(&h));
  PetscCall(InflHashUpdate(h, ss->qindex, sizeof(int64_t) * ss->Q));
  PetscCall(InflHashUpdate(h, ss->query_hash, sizeof(ss->query_hash)));
  for (PetscInt c = 0; c < ss->C; c++) {
    char pk[512];
    PetscCall(InflH5GetAttrString(ss->file[c], "/", "project_key", pk, sizeof(pk)));
    PetscCall(InflHashUpdate(h, pk, strlen(pk)));
    PetscCall(InflHashUpdate(h, &ss->eta[c], sizeof(double)));
  }
  PetscCall(InflHashFinal(&h, hex));
  PetscCall(PetscSNPrintf(key, len, "store %s damping %.17g stores %d queries %d (%.16s) topk %d save_all %d", InflStoreCurvatures[ss->curvature], ss->curvature == INFL_STORE_FISHER ? ss->lambda : 0.0, (int)ss->C, (int)ss->Q, hex, (int)ss->K, (int)ss->save_all));
  PetscFunctionReturn(0);
}

/* The scores file of this scorer (qnorm (Q) or NULL). */
static InflScoresFile store_scores_file(InflStoreScorer ss, const double qnorm[])
{
  InflScoresFile f = {ss->comm, ss->model_hash, ss->train_hash, ss->query_hash, ss->N, ss->Q, ss->K, 0, ss->qindex, ss->qlabel, qnorm, ss->top, ss->bottom, ss->start, ss->count, NULL, NULL, NULL, ss->K_requested, NULL};
  if (ss->save_all) {
    f.local      = ss->local;
    f.local_norm = ss->local_norm;
  }
  return f;
}

typedef struct {
  InflStoreScorer ss;
  float          *f;   /* (chunk, max kc) one store's rows as read */
  double         *X;   /* (chunk, k) the rows of every store side by side */
  double         *out; /* (Q, chunk) */
} StoreChunkCtx;

/* InflRunChunksStep's chunk: nothing to do before the round's collective read (store_step). */
static PetscErrorCode store_chunk(void *ctx, int64_t lo, int64_t hi)
{
  (void)ctx;
  (void)lo;
  (void)hi;
  return 0;
}

/* The scores of the rows [lo, hi) in X: top-k lists and, with save_all, the columns (local to this rank). */
static PetscErrorCode store_score_rows(StoreChunkCtx *c, int64_t lo, int64_t hi)
{
  InflStoreScorer ss = c->ss;
  PetscInt        k = ss->k, Q = ss->Q;
  int64_t         B = hi - lo, off = lo - ss->start;

  PetscFunctionBegin;
  if (B == 0) PetscFunctionReturn(0);
  /* out (Q, B) = C^-1 g_q (Q, k) times the rows^T (k, B) */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Q, (int)B, k, 1.0, ss->pq, k, c->X, k, 0.0, c->out, (int)B);
  for (int64_t i = 0; i < (int64_t)Q * B; i++) {
    int64_t b = i % B, j;
    if (isfinite(c->out[i])) continue;
    j = InflFirstNonFinite(k, c->X + b * k); /* a damaged row, else an overflow of finite values */
    PetscCheck(j >= 0, PETSC_COMM_SELF, PETSC_ERR_FP, "store score of query %" PRId64 " and training example %" PRId64 " overflows (%s): the stored row and the query's %s gradient are finite but their product is not; %s", ss->qindex[i / B], lo + b, INFL_DSTR(c->out[i]), ss->curvature == INFL_STORE_FISHER ? "preconditioned" : "weighted", ss->curvature == INFL_STORE_FISHER ? "raise -store_damping" : "lower the -tracin_lr weights");
    {
      PetscInt s = 0; /* the store of feature j (several stores: their rows side by side) */
      while (s + 1 < ss->C && j >= ss->koff[s + 1]) s++;
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "store score of query %" PRId64 " and training example %" PRId64 " is not finite: %s: /gradients holds %s at entry (%" PRId64 ", %" PRId64 "); the store is damaged: rebuild it with infl project", ss->qindex[i / B], lo + b, ss->path[s], INFL_DSTR(c->X[b * k + j]), lo + b, j - ss->koff[s]);
    }
  }
  if (ss->local) {
    for (PetscInt q = 0; q < Q; q++) PetscCall(PetscArraycpy(ss->local + (int64_t)q * ss->count + off, c->out + (int64_t)q * B, B));
    for (int64_t b = 0; b < B; b++) {
      double s = 0;
      for (PetscInt j = 0; j < k; j++) s += c->X[b * k + j] * c->X[b * k + j];
      ss->local_norm[off + b] = sqrt(s);
    }
  }
  PetscCall(InflTopKPush(ss->top, (PetscInt)B, c->out, NULL, lo));
  PetscCall(InflTopKPush(ss->bottom, (PetscInt)B, c->out, NULL, lo));
  PetscFunctionReturn(0);
}

/* InflRunChunksStep's step, on every rank: the round's rows [lo, hi) of every store (collective reads; none for a
 * rank without a chunk), then their scores (an error on any rank stops every rank). */
static PetscErrorCode store_step(void *ctx, int64_t lo, int64_t hi)
{
  StoreChunkCtx  *c  = (StoreChunkCtx *)ctx;
  InflStoreScorer ss = c->ss;
  int64_t         B  = hi - lo;

  PetscFunctionBegin;
  for (PetscInt s = 0; s < ss->C; s++) { /* X (B, k): the rows of every store side by side */
    PetscCall(InflH5ReadRows(ss->file[s], "/gradients", H5T_NATIVE_FLOAT, lo, B, c->f));
    for (int64_t b = 0; b < B; b++)
      for (PetscInt j = 0; j < ss->kc[s]; j++) c->X[b * ss->k + ss->koff[s] + j] = c->f[b * ss->kc[s] + j];
  }
  InflCallAll(ss->comm, store_score_rows(c, lo, hi));
  PetscFunctionReturn(0);
}

static PetscErrorCode store_checkpoint(void *ctx, const InflRanges *done)
{
  InflStoreScorer ss = ((StoreChunkCtx *)ctx)->ss;
  char            key[512];
  InflScoresFile  f = store_scores_file(ss, NULL);

  PetscFunctionBegin;
  PetscCall(store_scorer_key(ss, key, sizeof(key)));
  PetscCall(InflScoresCheckpointSave(&f, ss->out, key, done));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerScore(InflStoreScorer ss)
{
  PetscInt      k = ss->k, Q = ss->Q, kmax = 1;
  StoreChunkCtx c = {ss, NULL, NULL, NULL};
  InflRanges    done = {0};

  PetscFunctionBegin;
  PetscCheck(ss->Q > 0, ss->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflStoreScorerSetQueries before InflStoreScorerScore");
  if (ss->K > ss->N) PetscCall(InflTopKClampToTrain(ss->comm, &ss->K, ss->N, &ss->K_requested));
  PetscCall(InflTopKDestroy(&ss->top));
  PetscCall(InflTopKDestroy(&ss->bottom));
  PetscCall(InflTopKCreate(Q, ss->K, PETSC_TRUE, &ss->top));
  PetscCall(InflTopKCreate(Q, ss->K, PETSC_FALSE, &ss->bottom));
  PetscCall(PetscFree2(ss->local, ss->local_norm));
  if (ss->save_all) PetscCall(PetscCalloc2((size_t)Q * PetscMax(ss->count, 1), &ss->local, PetscMax(ss->count, 1), &ss->local_norm));
  PetscCall(InflChunkFromMemLimit(ss->comm, "infl score -store", ss->count, sizeof(double) * ((size_t)k * 2 * Q + (ss->fl ? (size_t)ss->lld * ss->nloc : 0)) + (ss->local ? sizeof(double) * (Q + 1) * (size_t)ss->count : 0) + ((size_t)4 << 20), sizeof(float) * k + sizeof(double) * (k + Q), &ss->chunk));
  for (PetscInt s = 0; s < ss->C; s++) kmax = PetscMax(kmax, ss->kc[s]);
  PetscCall(PetscMalloc3((size_t)ss->chunk * kmax, &c.f, (size_t)ss->chunk * k, &c.X, (size_t)ss->chunk * Q, &c.out));
  if (ss->out[0]) {
    char           key[512];
    InflScoresFile f = store_scores_file(ss, NULL);
    PetscCall(store_scorer_key(ss, key, sizeof(key)));
    PetscCall(InflScoresCheckpointLoad(&f, ss->out, key, &done));
  }
  {
    InflChunkLoop loop = {store_chunk, ss->out[0] ? store_checkpoint : NULL, &c, NULL}; /* unit NULL: examples (store rows) */
    char          partial[PETSC_MAX_PATH_LEN];
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ss->out[0] ? ss->out : "(no output file)"));
    PetscCall(InflRunChunksStep(ss->comm, "infl score -store", ss->start, ss->count, ss->chunk, &done, &loop, store_step, partial));
  }
  PetscCall(InflRangesDestroy(&done));
  PetscCall(PetscFree3(c.f, c.X, c.out));
  PetscCall(InflTopKMerge(ss->comm, ss->top));
  PetscCall(InflTopKMerge(ss->comm, ss->bottom));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerGetTopK(InflStoreScorer ss, InflTopK **top, InflTopK **bottom)
{
  PetscFunctionBegin;
  if (top) *top = ss->top;
  if (bottom) *bottom = ss->bottom;
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerGetLocalScores(InflStoreScorer ss, int64_t *start, int64_t *count, const double **scores)
{
  PetscFunctionBegin;
  *start  = ss->start;
  *count  = ss->count;
  *scores = ss->local;
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerSave(InflStoreScorer ss, const char path[], PetscBool overwrite)
{
  hid_t          file;
  PetscInt       Q = ss->Q;
  double        *qn;
  InflScoresFile f;

  PetscFunctionBegin;
  PetscCheck(ss->top, ss->comm, PETSC_ERR_ARG_WRONGSTATE, "call InflStoreScorerScore before InflStoreScorerSave");
  PetscCall(PetscMalloc1(Q, &qn));
  for (PetscInt q = 0; q < Q; q++) {
    double s = 0;
    for (PetscInt j = 0; j < ss->k; j++) s += ss->pq[(int64_t)q * ss->k + j] * ss->pq[(int64_t)q * ss->k + j];
    qn[q] = sqrt(s);
  }
  f = store_scores_file(ss, qn);
  PetscCall(InflScoresFileBegin(&f, path, overwrite, &file));
  PetscCall(PetscFree(qn));
  PetscCall(InflH5SetAttrString(file, "/", "method", ss->C > 1 ? "store tracin" : ss->curvature == INFL_STORE_FISHER ? "store fisher" : "store identity"));
  PetscCall(InflH5SetAttrString(file, "/", "store", ss->path[0]));
  if (ss->C > 1) {
    char list[4096] = "";
    for (PetscInt c = 0; c < ss->C; c++) PetscCall(PetscSNPrintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s:%.17g", c ? "," : "", ss->path[c], ss->eta[c]));
    PetscCall(InflH5SetAttrString(file, "/", "tracin_stores", list));
  }
  if (ss->curvature == INFL_STORE_FISHER) PetscCall(InflH5SetAttrDouble(file, "/", "store_damping", ss->lambda));
  PetscCall(InflScoresFileEnd(ss->comm, path, &file));
  PetscFunctionReturn(0);
}

PetscErrorCode InflStoreScorerDestroy(InflStoreScorer *ss)
{
  PetscFunctionBegin;
  if (!*ss) PetscFunctionReturn(0);
  for (PetscInt c = 0; c < (*ss)->C; c++) {
    PetscCall(InflH5Close(&(*ss)->file[c]));
    PetscCall(InflProjectorDestroy(&(*ss)->proj[c]));
  }
  PetscCall(PetscFree((*ss)->fl));
  PetscCall(PetscFree2((*ss)->qindex, (*ss)->qlabel));
  PetscCall(PetscFree2((*ss)->gq, (*ss)->pq));
  PetscCall(InflTopKDestroy(&(*ss)->top));
  PetscCall(InflTopKDestroy(&(*ss)->bottom));
  PetscCall(PetscFree2((*ss)->local, (*ss)->local_norm));
  PetscCall(PetscFree(*ss));
  PetscFunctionReturn(0);
}

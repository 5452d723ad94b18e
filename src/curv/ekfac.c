/* EK-FAC: Kronecker factors, their eigenbases, the eigenvalue correction Lambda and the damped inverse. */
#include <infl/ekfac.h>
#include <infl/eigen.h>
#include <infl/layout.h>
#include <infl/checkpoint.h>
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <petscblaslapack.h>
#include <petscviewer.h>

extern void dgesdd_(const char *jobz, const PetscBLASInt *m, const PetscBLASInt *n, double *a, const PetscBLASInt *lda, double *s, double *u, const PetscBLASInt *ldu, double *vt, const PetscBLASInt *ldvt, double *work, const PetscBLASInt *lwork, PetscBLASInt *iwork, PetscBLASInt *info);

struct _p_InflEKFAC {
  MPI_Comm        comm;
  PetscInt        L;
  InflEKFACLayer *layers;
  InflFisher      fisher;
  uint64_t        seed;
  double          damping;        /* < 0: 0.1 * mean(Lambda_l) per layer */
  double          damping_factor; /* 0.1 */
  PetscBool       kfac;           /* no eigenvalue correction */
  PetscInt        chunk;
  PetscBool       chunk_set;      /* -ekfac_chunk given (else the default, a token budget for sequences) */
  int64_t         nexamples;
  int64_t         nrows;      /* rows (tokens) summed into A and S: this rank's during the covariance pass, then all */
  char            model_hash[65], train_hash[65];
  double         *work;           /* scratch */
  size_t          nwork;
  float         **QAf, **QSf;     /* (L) single-precision copies of the eigenbases, made on first use */
  float          *rot;            /* (INFL_ROTATION_BLOCK, max(din+1, dout)) x 2 scratch of the single-precision rotation */
  size_t          nrot;
  char            out[PETSC_MAX_PATH_LEN]; /* checkpoints go to out.partial */
  InflPrecision   prec;           /* of the model's per-example work: sets the conditioning (Lambda + damping) may have */
  char            sel[8];         /* -ekfac_layers: the model's layer selection (InflModelSetLayerSelection) */
  char          (*names)[64];     /* (L) the layers' names (InflModelGetLayerName), written to factors.h5 */
  InflLayerLayout layout;         /* which ranks hold each layer's factors (infl/layout.h); set up by fit and load */
  PetscInt        groups;         /* InflEKFACSetLayerGroups: -1 (from -layer_groups / -mem_limit), else G */
  int             split;          /* InflEKFACSetLayerSplit: -1 (from -layer_split), else 0 or 1 */
  InflLayerLayoutStage load;      /* InflEKFACSetLoadMemory: what the stage that loads the factors holds */
  double         *gbuf[5];        /* split layers: the group's rows and their rotations (InflEKFACGatherGroupRows) */
  size_t          ngbuf[5], ngoff;
  int64_t        *goff;           /* (ngoff) the group's sequences' offsets */
  PetscInt       *gbstart;        /* (ngoff) the first sequence of each rank of the group */
  double        (*estat)[4];      /* (L) eA[0], eA[din], eS[0], eS[dout-1] of every layer, on every rank (View) */
};

/* Does this rank hold layer l's factors? */
static inline PetscBool ekfac_owns(InflEKFAC ek, PetscInt l)
{
  return !ek->layout || InflLayerLayoutOwns(ek->layout, l);
}

/* Are the layers split inside their groups (infl/layout.h)?  The same on every rank. */
static inline PetscBool ekfac_split(InflEKFAC ek)
{
  return ek->layout && InflLayerLayoutIsSplit(ek->layout) ? PETSC_TRUE : PETSC_FALSE;
}

/* v (L, n): every rank's entries of the layers it owns (zero the others first) become every rank's: a sum over the
 * cross communicator, in which each layer has exactly one owner. */
static PetscErrorCode ekfac_share(InflEKFAC ek, PetscInt n, double v[])
{
  MPI_Comm cross;

  PetscFunctionBegin;
  for (PetscInt l = 0; l < ek->L; l++)
    if (!ekfac_owns(ek, l)) PetscCall(PetscArrayzero(v + l * n, n));
  PetscCall(InflLayerLayoutGetComms(ek->layout, NULL, NULL, &cross));
  PetscCall(InflAllreduceSum(v, (int64_t)ek->L * n, MPI_DOUBLE, cross));
  PetscFunctionReturn(0);
}

/* The layout of L layers of sizes din, dout: -layer_groups, or InflEKFACSetLayerGroups, or the default from
 * -mem_limit for a stage holding what `st` says (infl/layout.h). */
static PetscErrorCode ekfac_setup_layout(InflEKFAC ek, PetscInt L, const PetscInt din[], const PetscInt dout[], const InflLayerLayoutStage *st)
{
  PetscFunctionBegin;
  PetscCall(InflLayerLayoutDestroy(&ek->layout));
  PetscCall(InflLayerLayoutCreate(ek->comm, &ek->layout));
  if (ek->groups >= 0) PetscCall(InflLayerLayoutSetGroups(ek->layout, ek->groups));
  if (ek->split >= 0) PetscCall(InflLayerLayoutSetSplit(ek->layout, ek->split ? PETSC_TRUE : PETSC_FALSE));
  PetscCall(InflLayerLayoutSetFromOptions(ek->layout));
  PetscCall(InflLayerLayoutSetUp(ek->layout, L, din, dout, st));
  PetscFunctionReturn(0);
}

/* Error (not collective) if this rank does not hold layer l. */
#define EKFAC_CHECK_OWNED(ek, l) \
  PetscCheck(ekfac_owns(ek, l), PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "layer %d of the EK-FAC factors is held by layer group %d, not by this rank's (-layer_groups: every rank holds every layer only with 1 group)", (int)(l), (int)InflLayerLayoutOwner((ek)->layout, l))

/* Error (not collective) if layer l is split over the ranks of its group: the caller needs its whole factors. */
#define EKFAC_CHECK_WHOLE(ek, l) \
  PetscCheck((ek)->layers[l].np == 1, PETSC_COMM_SELF, PETSC_ERR_SUP, "layer %d of the EK-FAC factors is split over the %d ranks of its layer group (-layer_split true): this computation needs whole factors; run it with -layer_split false", (int)(l), (ek)->layers[l].np)

PetscErrorCode InflEKFACSetLayerGroups(InflEKFAC ek, PetscInt G)
{
  PetscFunctionBegin;
  PetscCheck(G >= 0, ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer groups %d must be >= 0 (0: the default)", (int)G);
  ek->groups = G;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSetLayerSplit(InflEKFAC ek, PetscBool split)
{
  PetscFunctionBegin;
  ek->split = split ? 1 : 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACCheckWhole(InflEKFAC ek, const char what[])
{
  PetscFunctionBegin;
  InflCheckAll(ek->comm, !ekfac_split(ek), PETSC_ERR_SUP, "%s needs each layer's whole factors on the ranks holding it, but the factors are split over the ranks of each layer group (-layer_split true); run it with -layer_split false", what);
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSetLoadMemory(InflEKFAC ek, const InflLayerLayoutStage *st)
{
  PetscFunctionBegin;
  PetscCheck(st->copies >= 1 && isfinite(st->copies) && st->per_weight >= 0 && isfinite(st->per_weight) && st->once_weight >= 0 && isfinite(st->once_weight) && st->once_per_item >= 0 && isfinite(st->once_per_item) && st->once_wide >= 0 && isfinite(st->once_wide) && st->items >= 0, ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "the stage's memory: copies %g must be >= 1, the bytes per weight %g, %g, %g and the items %d finite and >= 0", st->copies, st->per_weight, st->once_per_item, st->once_wide, (int)st->items);
  ek->load = *st;
  PetscFunctionReturn(0);
}

/* The sizes of the model's selected layers: din[l], dout[l] (PetscMalloc2; the caller frees them with PetscFree2). */
static PetscErrorCode ekfac_model_sizes(InflModel model, PetscInt *L, PetscInt **din, PetscInt **dout)
{
  InflLinear *lin;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, L, &lin));
  PetscCall(PetscMalloc2(*L, din, *L, dout));
  for (PetscInt l = 0; l < *L; l++) {
    (*din)[l]  = lin[l].din;
    (*dout)[l] = lin[l].dout;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACCheckLoadMemory(InflEKFAC ek, InflModel model)
{
  PetscInt L, *din, *dout;

  PetscFunctionBegin;
  PetscCall(InflModelSetLayerSelection(model, ek->sel));
  PetscCall(ekfac_model_sizes(model, &L, &din, &dout));
  PetscCall(ekfac_setup_layout(ek, L, din, dout, &ek->load));
  PetscCall(PetscFree2(din, dout));
  PetscCall(InflLayerLayoutDestroy(&ek->layout));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACGetLayout(InflEKFAC ek, InflLayerLayout *layout)
{
  PetscFunctionBegin;
  *layout = ek->layout;
  PetscFunctionReturn(0);
}

/* The group communicator of the layout and this rank's rank in it (0: the writer of the group's layers). */
static PetscErrorCode ekfac_group(InflEKFAC ek, MPI_Comm *group, PetscMPIInt *grank)
{
  PetscFunctionBegin;
  PetscCall(InflLayerLayoutGetComms(ek->layout, NULL, group, NULL));
  PetscCallMPI(MPI_Comm_rank(*group, grank));
  PetscFunctionReturn(0);
}

/* Collective: dataset `name` (dims) of layer l written by rank 0 of the group that owns it (buf there). */
static PetscErrorCode ekfac_write_layer(InflEKFAC ek, hid_t file, PetscInt l, const char name[], int ndim, const int64_t dims[], const double *buf)
{
  MPI_Comm    group;
  PetscMPIInt grank;

  PetscFunctionBegin;
  PetscCall(ekfac_group(ek, &group, &grank));
  PetscCall(InflH5WriteRows(file, name, H5T_NATIVE_DOUBLE, ndim, dims, 0, ekfac_owns(ek, l) && grank == 0 ? dims[0] : 0, buf));
  PetscFunctionReturn(0);
}

/* Collective: dataset `name` of layer l read by the ranks that own it (checked to have the shape dims), nothing
 * elsewhere.  Errors name the file and the dataset. */
static PetscErrorCode ekfac_read_layer(InflEKFAC ek, hid_t file, const char path[], PetscInt l, const char name[], int ndim, const int64_t dims[], double *buf)
{
  int     nd = 0;
  int64_t got[8] = {0};

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(file, name, &nd, got));
  PetscCheck(nd == ndim && got[0] == dims[0] && (ndim == 1 || got[1] == dims[1]), ek->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s has shape (%" PRId64 ", %" PRId64 ") (%d dimensions) but (%" PRId64 ", %" PRId64 ") (%d) is expected; the file is damaged or of another model: run infl fit again", path, name, got[0], nd > 1 ? got[1] : 0, nd, dims[0], ndim > 1 ? dims[1] : 0, ndim);
  PetscCall(InflH5ReadRows(file, name, H5T_NATIVE_DOUBLE, 0, ekfac_owns(ek, l) ? dims[0] : 0, buf));
  PetscFunctionReturn(0);
}

/* The datasets of one layer in factors.h5 and the arrays they hold: nloc elements on a rank owning the layer; a
 * split layer (InflEKFACLayer np > 1) holds `split` 1: rows of the dataset in blocks of nb, 2: columns (eigenvectors)
 * of the dataset as the rows of buf, 0: the whole dataset. */
typedef struct {
  const char *name;
  double     *buf;
  int         ndim;
  int64_t     dims[2];
  int         split, nb;
  int64_t     nloc;
} LayerField;

static int layer_fields(InflEKFACLayer *ly, LayerField f[7])
{
  int64_t na = ly->din + 1, nd = ly->dout;
  f[0] = (LayerField){"A", ly->A, 2, {na, na}, 1, ly->nba, ly->ra * na};
  f[1] = (LayerField){"S", ly->S, 2, {nd, nd}, 1, ly->nbs, ly->rs * nd};
  f[2] = (LayerField){"Q_A", ly->QA, 2, {na, na}, 2, ly->nba, ly->ra * na};
  f[3] = (LayerField){"Q_S", ly->QS, 2, {nd, nd}, 2, ly->nbs, ly->rs * nd};
  f[4] = (LayerField){"eigenvalues_A", ly->eA, 1, {na, 0}, 0, 0, na};
  f[5] = (LayerField){"eigenvalues_S", ly->eS, 1, {nd, 0}, 0, 0, nd};
  f[6] = (LayerField){"Lambda", ly->Lambda, 2, {nd, na}, 1, ly->nbs, ly->rs * na};
  return 7;
}

/* Collective: field f of layer l written to (or read from) dataset `name`: by pieces of the ranks holding them
 * (hyperslabs) for a split layer, else as ekfac_write_layer / ekfac_read_layer.  The file holds the whole matrices
 * either way. */
static PetscErrorCode ekfac_field_io(InflEKFAC ek, hid_t file, const char path[], PetscInt l, const char name[], const LayerField *f, PetscBool write)
{
  InflEKFACLayer *ly  = &ek->layers[l];
  PetscBool       own = ekfac_owns(ek, l);
  PetscInt        E, e;

  PetscFunctionBegin;
  if (!ekfac_split(ek) || !f->split) {
    if (write) PetscCall(ekfac_write_layer(ek, file, l, name, f->ndim, f->dims, f->buf));
    else PetscCall(ekfac_read_layer(ek, file, path, l, name, f->ndim, f->dims, f->buf));
    PetscFunctionReturn(0);
  }
  PetscCall(InflLayerLayoutGetGroups(ek->layout, NULL, &E, NULL, &e));
  if (!write) { /* the shape first (the ranks not holding the layer check it too) */
    int     nd = 0;
    int64_t got[8] = {0};
    PetscCall(InflH5GetDims(file, name, &nd, got));
    PetscCheck(nd == 2 && got[0] == f->dims[0] && got[1] == f->dims[1], ek->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s has shape (%" PRId64 ", %" PRId64 ") (%d dimensions) but (%" PRId64 ", %" PRId64 ") (2) is expected; the file is damaged or of another model: run infl fit again", path, name, got[0], nd > 1 ? got[1] : 0, nd, f->dims[0], f->dims[1]);
  }
  if (f->split == 1) PetscCall(InflH5CyclicBlock(file, name, f->dims, 0, f->nb, (int)e, (int)E, own, f->buf, write));
  else { /* eigenvectors: the rows of buf are columns of the dataset */
    int64_t n = f->dims[0], loc = own ? f->nloc / PetscMax(n, 1) : 0;
    double *T;
    PetscCall(PetscMalloc1(PetscMax(loc * n, 1), &T));
    if (write)
      for (int64_t k = 0; k < loc; k++)
        for (int64_t i = 0; i < n; i++) T[i * loc + k] = f->buf[k * n + i];
    PetscCall(InflH5CyclicBlock(file, name, f->dims, 1, f->nb, (int)e, (int)E, own, T, write));
    if (!write)
      for (int64_t k = 0; k < loc; k++)
        for (int64_t i = 0; i < n; i++) f->buf[k * n + i] = T[i * loc + k];
    PetscCall(PetscFree(T));
  }
  (void)ly;
  PetscFunctionReturn(0);
}

/* Entry i of this rank's buffer of field f of layer ly, as the dataset's (row, column). */
static void field_entry(const InflEKFACLayer *ly, const LayerField *f, int64_t i, int64_t *row, int64_t *col)
{
  int64_t ncol = f->dims[f->ndim - 1];
  *row = f->ndim == 2 ? i / ncol : 0;
  *col = f->ndim == 2 ? i % ncol : i;
  if (ly->np > 1 && f->split == 1) *row = InflBlacsGlobal(*row, f->nb, ly->p, ly->np);
  else if (ly->np > 1 && f->split == 2) { /* buf row k is column Global(k) */
    int64_t k = *row;
    *row = *col;
    *col = InflBlacsGlobal(k, f->nb, ly->p, ly->np);
  }
}

PetscErrorCode InflEKFACSetCheckpoint(InflEKFAC ek, const char out[])
{
  PetscFunctionBegin;
  PetscCall(PetscStrncpy(ek->out, out ? out : "", sizeof(ek->out)));
  PetscFunctionReturn(0);
}

static PetscErrorCode ekfac_key(InflEKFAC ek, char key[], size_t len)
{
  PetscFunctionBegin;
  PetscCall(InflEKFACGetKey(ek, PETSC_FALSE, key, len));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACGetKey(InflEKFAC ek, PetscBool with_damping, char key[], size_t len)
{
  size_t n;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(key, len, "fisher %s seed %llu kfac %d", ek->fisher == INFL_FISHER_TRUE ? "true" : "empirical", (unsigned long long)ek->seed, (int)ek->kfac));
  if (strcmp(ek->sel, "all")) { /* a selection of layers (the key of a fit of all layers is unchanged) */
    PetscCall(PetscStrlen(key, &n));
    PetscCall(PetscSNPrintf(key + n, len - n, " layers %s", ek->sel));
  }
  if (with_damping) {
    PetscCall(PetscStrlen(key, &n));
    PetscCall(PetscSNPrintf(key + n, len - n, " damping"));
    for (PetscInt l = 0; l < ek->L; l++) {
      PetscCall(PetscStrlen(key, &n));
      PetscCall(PetscSNPrintf(key + n, len - n, " %.10g", ek->layers[l].damping));
    }
  }
  PetscFunctionReturn(0);
}

/* Collective: replace out.partial with the state of pass `pass` (1: covariance sums; 2: eigenbases and Lambda
 * sums) after the examples in `done`.  Per-rank partial sums are reduced onto rank 0 for the file. */
static PetscErrorCode ekfac_checkpoint(InflEKFAC ek, int pass, const InflRanges *done)
{
  char        tmp[PETSC_MAX_PATH_LEN], partial[PETSC_MAX_PATH_LEN], key[128], name[96];
  hid_t       file;
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(ek->comm, &rank));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ek->out));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.partial.tmp", ek->out));
  PetscCall(InflH5Create(ek->comm, tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, ek->comm, "fit (partial)", ek->model_hash, ek->train_hash, NULL));
  PetscCall(ekfac_key(ek, key, sizeof(key)));
  PetscCall(InflH5SetAttrString(file, "/", "checkpoint_key", key));
  PetscCall(InflH5SetAttrInt(file, "/", "pass", pass));
  { /* pass 1: this rank's rows so far, summed; pass 2: the total */
    int64_t rows = ek->nrows;
    if (pass == 1) PetscCallMPI(MPI_Allreduce(&ek->nrows, &rows, 1, MPI_INT64_T, MPI_SUM, ek->comm));
    PetscCall(InflH5SetAttrInt(file, "/", "rows", rows));
  }
  /* each layer by rank 0 of its group: the group's partial sums reduced onto it (pass 1, Lambda), or its copy; a
   * split layer by the pieces of its ranks, which are complete sums (each rank sums its rows over the group's rows) */
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    int64_t         na = ly->din + 1, nd = ly->dout;
    double         *buf = NULL;
    PetscBool       own = ekfac_owns(ek, l), split = ekfac_split(ek);
    MPI_Comm        group;
    PetscMPIInt     grank;
    LayerField      f[7];
    layer_fields(ly, f);
    PetscCall(ekfac_group(ek, &group, &grank));
    if (own && !split) PetscCall(PetscMalloc1(PetscMax(PetscMax(na * na, nd * nd), nd * na), &buf)); /* S (dout^2) is the largest when dout > din+1 */
#define W(nm, fld, b) \
  do { \
    LayerField _f = fld; \
    _f.buf        = b; \
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%d/%s", (int)l, nm)); \
    PetscCall(ekfac_field_io(ek, file, ek->out, l, name, &_f, PETSC_TRUE)); \
  } while (0)
    if (pass == 1) {
      if (own && !split) PetscCall(InflReduceSum(ly->A, buf, na * na, MPI_DOUBLE, 0, group));
      W("A_sum", f[0], split ? ly->A : buf);
      if (own && !split) PetscCall(InflReduceSum(ly->S, buf, nd * nd, MPI_DOUBLE, 0, group));
      W("S_sum", f[1], split ? ly->S : buf);
    } else {
      W("A", f[0], ly->A);
      W("S", f[1], ly->S);
      W("Q_A", f[2], ly->QA);
      W("Q_S", f[3], ly->QS);
      W("eigenvalues_A", f[4], ly->eA);
      W("eigenvalues_S", f[5], ly->eS);
      if (own && !split) PetscCall(InflReduceSum(ly->Lambda, buf, nd * na, MPI_DOUBLE, 0, group));
      W("Lambda_sum", f[6], split ? ly->Lambda : buf);
    }
#undef W
    PetscCall(PetscFree(buf));
  }
  PetscCall(InflRangesWrite(file, done));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(ek->comm, tmp, partial));
  PetscFunctionReturn(0);
}

/* Collective: restore out.partial if it exists; pass = 0 when there is nothing to resume. */
static PetscErrorCode ekfac_restore(InflEKFAC ek, int *pass, InflRanges *done)
{
  char        partial[PETSC_MAX_PATH_LEN], key[128], name[96];
  hid_t       file;
  PetscMPIInt rank;
  int64_t     p;

  PetscFunctionBegin;
  *pass = 0;
  PetscCall(InflRangesReset(done));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ek->out));
  if (!ek->out[0] || !InflFileExists(partial)) PetscFunctionReturn(0);
  PetscCallMPI(MPI_Comm_rank(ek->comm, &rank));
  PetscCall(ekfac_key(ek, key, sizeof(key)));
  PetscCall(InflCheckpointOpen(ek->comm, partial, "fit (partial)", ek->model_hash, ek->train_hash, key, &file));
  PetscCall(InflH5GetAttrInt(file, "/", "pass", &p));
  PetscCall(InflH5GetAttrInt(file, "/", "rows", &ek->nrows));
  PetscCall(InflCheckpointCheckRange(ek->comm, partial, "root attribute pass", p, 1, 2));
  PetscCall(InflCheckpointCheckRange(ek->comm, partial, "root attribute rows", ek->nrows, 0, INT64_MAX));
  if (p == 1 && rank != 0) ek->nrows = 0; /* the rows so far are counted once, on rank 0 */
  PetscCall(InflRangesRead(file, done));
  for (PetscInt l = 0; l < ek->L; l++) { /* the ranks owning a layer read it; the sums so far are kept by rank 0 of its group (a split layer: by the rank holding the piece) */
    InflEKFACLayer *ly = &ek->layers[l];
    int64_t         na = ly->din + 1, nd = ly->dout;
    PetscBool       own = ekfac_owns(ek, l), keep;
    MPI_Comm        group;
    PetscMPIInt     grank;
    LayerField      f[7];
    layer_fields(ly, f);
    PetscCall(ekfac_group(ek, &group, &grank));
    keep = ekfac_split(ek) || grank == 0 ? PETSC_TRUE : PETSC_FALSE;
#define R(nm, fld) \
  do { \
    int64_t _c = (fld).dims[(fld).ndim - 1]; \
    PetscCall(PetscSNPrintf(name, sizeof(name), "/checkpoint/%d/%s", (int)l, nm)); \
    PetscCall(ekfac_field_io(ek, file, partial, l, name, &(fld), PETSC_FALSE)); \
    PetscCall(InflCheckpointCheckFinite(ek->comm, partial, name, own ? (fld).nloc / PetscMax(_c, 1) : 0, 0, _c, (fld).buf)); \
  } while (0)
    if (p == 1) {
      R("A_sum", f[0]);
      R("S_sum", f[1]);
      if (own && !keep) { /* the sums so far are counted once, on rank 0 of the group */
        PetscCall(PetscArrayzero(ly->A, na * na));
        PetscCall(PetscArrayzero(ly->S, nd * nd));
      }
    } else {
      for (int k = 0; k < 6; k++) R(f[k].name, f[k]);
      R("Lambda_sum", f[6]);
      if (own && !keep) PetscCall(PetscArrayzero(ly->Lambda, nd * na));
    }
#undef R
  }
  PetscCall(InflH5Close(&file));
  *pass = (int)p;
  PetscCall(PetscPrintf(ek->comm, "fit: resuming pass %d from %s (%" PRId64 " of %" PRId64 " examples of the pass done)\n", *pass, partial, InflRangesCount(done), ek->nexamples));
  PetscFunctionReturn(0);
}

/* Release the scratch of InflEKFACGatherGroupRows. */
static PetscErrorCode ekfac_free_group_rows(InflEKFAC ek)
{
  PetscFunctionBegin;
  for (int k = 0; k < 5; k++) {
    PetscCall(PetscFree(ek->gbuf[k]));
    ek->ngbuf[k] = 0;
  }
  PetscCall(PetscFree2(ek->goff, ek->gbstart));
  ek->ngoff = 0;
  PetscFunctionReturn(0);
}

static PetscErrorCode ekfac_work(InflEKFAC ek, size_t n, double **w)
{
  PetscFunctionBegin;
  if (n > ek->nwork) {
    PetscCall(PetscFree(ek->work));
    PetscCall(PetscMalloc1(n, &ek->work));
    ek->nwork = n;
  }
  *w = ek->work;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACCreate(MPI_Comm comm, InflEKFAC *ek)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(ek));
  (*ek)->comm           = comm;
  (*ek)->fisher         = INFL_FISHER_TRUE;
  (*ek)->damping        = -1;
  (*ek)->damping_factor = 0.1;
  (*ek)->chunk          = 512;
  (*ek)->prec           = INFL_PREC_SINGLE;
  (*ek)->groups         = -1;
  (*ek)->split          = -1;
  (*ek)->load.copies     = 1.0;
  PetscCall(PetscStrncpy((*ek)->sel, "all", sizeof((*ek)->sel)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSetFromOptions(InflEKFAC ek)
{
  const char *kinds[] = {"true", "empirical"}, *sels[] = {"all", "mlp", "attn"};
  PetscInt    kind = (PetscInt)ek->fisher, seed = (PetscInt)ek->seed, sel = 0;
  PetscBool   set;
  double      damping = ek->damping;

  PetscFunctionBegin;
  PetscOptionsBegin(ek->comm, NULL, "EK-FAC curvature options", "InflEKFAC");
  PetscCall(PetscOptionsEList("-ekfac_fisher", "true: labels sampled from the model; empirical: data labels", "InflEKFACSetFisher", kinds, 2, kinds[kind], &kind, NULL));
  PetscCall(PetscOptionsInt("-ekfac_seed", "seed of the sampled labels", "InflEKFACSetFisher", seed, &seed, NULL));
  PetscCall(PetscOptionsReal("-ekfac_damping", "absolute damping for every layer (default: factor * mean(Lambda_l))", "InflEKFACSetDamping", damping, &damping, &set));
  PetscCall(PetscOptionsReal("-ekfac_damping_factor", "damping = factor * mean(Lambda_l)", "InflEKFACSetDamping", ek->damping_factor, &ek->damping_factor, NULL));
  PetscCall(PetscOptionsBool("-ekfac_kfac", "no eigenvalue correction (K-FAC: Lambda = eS eA^T)", "InflEKFACFit", ek->kfac, &ek->kfac, NULL));
  PetscCall(PetscOptionsInt("-ekfac_chunk", "examples (sequences) per chunk of the passes over the data (default 512; sequences: as many as fit in 8192 tokens, fewer for a vocabulary above 256)", "InflEKFACFit", ek->chunk, &ek->chunk, &ek->chunk_set));
  for (PetscInt i = 0; i < 3; i++) if (!strcmp(ek->sel, sels[i])) sel = i;
  PetscCall(PetscOptionsEList("-ekfac_layers", "linear layers fitted and scored: all; of a transformer (gpt2) mlp (mlp.c_fc, mlp.c_proj) or attn (attn.c_attn, attn.c_proj)", "InflModelSetLayerSelection", sels, 3, sels[sel], &sel, NULL));
  PetscOptionsEnd();
  PetscCall(PetscStrncpy(ek->sel, sels[sel], sizeof(ek->sel)));
  PetscCheck(seed >= 0, ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ekfac_seed %d must be >= 0", (int)seed);
  PetscCheck(!set || (damping >= 0 && isfinite(damping)), ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ekfac_damping %s must be a finite number >= 0", INFL_DSTR(damping));
  PetscCheck(ek->damping_factor >= 0 && isfinite(ek->damping_factor), ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ekfac_damping_factor %s must be a finite number >= 0", INFL_DSTR(ek->damping_factor));
  PetscCheck(ek->chunk > 0, ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ekfac_chunk %d must be positive", (int)ek->chunk);
  PetscCall(InflEigenSetFromOptions(ek->comm)); /* the fit's eigensolves: -eigen_* */
  { /* -layer_groups: read again by the layout when the fit or load sets it up; here to check it early and list it */
    InflLayerLayout lay;
    PetscCall(InflLayerLayoutCreate(ek->comm, &lay));
    if (ek->groups >= 0) PetscCall(InflLayerLayoutSetGroups(lay, ek->groups));
    PetscCall(InflLayerLayoutSetFromOptions(lay));
    PetscCall(InflLayerLayoutDestroy(&lay));
  }
  ek->fisher = (InflFisher)kind;
  ek->seed   = (uint64_t)seed;
  if (set) PetscCall(InflEKFACSetDamping(ek, damping));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSetFisher(InflEKFAC ek, InflFisher fisher, uint64_t seed)
{
  PetscFunctionBegin;
  ek->fisher = fisher;
  ek->seed   = seed;
  PetscFunctionReturn(0);
}

/* The damping rule (README, docs/FORMATS.md): (Lambda + damping) of every layer must be invertible in the working
 * precision: damping + min(Lambda) >= max(Lambda) * INFL_DAMPING_EPS_MULTIPLE * eps, eps the machine epsilon of the
 * model's per-example work (single: 1.19e-7, double: 2.22e-16).  Below it the preconditioned gradients are dominated
 * by rounding of the smallest directions (or overflow the single-precision scores); the error names the layer, the
 * damping and where it came from, min and max Lambda, and the smallest damping accepted. */
static PetscErrorCode ekfac_check_damping(InflEKFAC ek, PetscInt l, double minL, double maxL, const char where[])
{
  InflEKFACLayer *ly  = &ek->layers[l];
  double          eps = ek->prec == INFL_PREC_DOUBLE ? DBL_EPSILON : FLT_EPSILON, need = INFL_DAMPING_EPS_MULTIPLE * eps * maxL;

  PetscFunctionBegin;
  if (ek->damping < 0 && maxL == 0) /* the default damping is 0.1 x mean(Lambda) = 0 */
    SETERRQ(ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer %d: Lambda is all zero (the model's gradients with respect to this layer vanish on every training example: an all-zero, dead or saturated model?), so the default damping %g x mean(Lambda) is 0 and (Lambda + damping) is singular; check the model, or give -ekfac_damping X > 0 (the preconditioner of this layer is then 1/X)", (int)l, ek->damping_factor);
  PetscCheck(ly->damping > 0 || minL > 0, ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer %d: damping is %g (%s) and the smallest corrected eigenvalue Lambda is %g, so (Lambda + damping) is singular and the inverse curvature is undefined; set -ekfac_damping > 0 (or -ekfac_damping_factor > 0)", (int)l, ly->damping, where, minL);
  if (ly->damping + minL < need) {
    char alt[128] = "";
    if (ek->prec != INFL_PREC_DOUBLE) PetscCall(PetscSNPrintf(alt, sizeof(alt), " (or -model_precision double, which accepts a damping >= %.3g)", PetscMax(0.0, INFL_DAMPING_EPS_MULTIPLE * DBL_EPSILON * maxL - minL)));
    SETERRQ(ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer %d: damping %g (%s) is too small for Lambda from %g to %g in %s precision: damping + min(Lambda) must be at least max(Lambda) x %g x epsilon = %g, or the scores are dominated by rounding (or overflow); the smallest damping accepted is %.3g: give -ekfac_damping >= %.3g%s", (int)l, ly->damping, where, minL, maxL,
            ek->prec == INFL_PREC_DOUBLE ? "double" : "single", (double)INFL_DAMPING_EPS_MULTIPLE, need, need - minL, need - minL, alt);
  }
  PetscFunctionReturn(0);
}

/* st (L, 3): mean, min and max of every layer's Lambda, on every rank (computed by the owners, shared); also the
 * eigenvalue ranges of every layer into ek->estat. */
static PetscErrorCode ekfac_lambda_stats(InflEKFAC ek, double st[])
{
  PetscFunctionBegin;
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    int64_t         n  = (int64_t)ly->rs * (ly->din + 1); /* this rank's entries (all of them unless split) */
    double          mean = 0, minL = PETSC_MAX_REAL, maxL = 0;
    if (!ekfac_owns(ek, l)) continue;
    for (int64_t i = 0; i < n; i++) {
      mean += ly->Lambda[i];
      minL = PetscMin(minL, ly->Lambda[i]);
      maxL = PetscMax(maxL, ly->Lambda[i]);
    }
    st[3 * l]     = mean;
    st[3 * l + 1] = minL;
    st[3 * l + 2] = maxL;
    ek->estat[l][0] = ly->eA[0];
    ek->estat[l][1] = ly->eA[ly->din];
    ek->estat[l][2] = ly->eS[0];
    ek->estat[l][3] = ly->eS[ly->dout - 1];
  }
  if (ekfac_split(ek)) { /* the pieces of the group's ranks (every rank of a group owns the same layers) */
    MPI_Comm group;
    double  *w;
    PetscCall(InflLayerLayoutGetComms(ek->layout, NULL, &group, NULL));
    PetscCall(PetscMalloc1(3 * ek->L, &w));
    for (PetscInt l = 0; l < ek->L; l++)
      for (int k = 0; k < 3; k++) w[k * ek->L + l] = ekfac_owns(ek, l) ? st[3 * l + k] : (k == 1 ? PETSC_MAX_REAL : 0);
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, w, (int)ek->L, MPI_DOUBLE, MPI_SUM, group));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, w + ek->L, (int)ek->L, MPI_DOUBLE, MPI_MIN, group));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, w + 2 * ek->L, (int)ek->L, MPI_DOUBLE, MPI_MAX, group));
    for (PetscInt l = 0; l < ek->L; l++)
      if (ekfac_owns(ek, l))
        for (int k = 0; k < 3; k++) st[3 * l + k] = w[k * ek->L + l];
    PetscCall(PetscFree(w));
  }
  for (PetscInt l = 0; l < ek->L; l++)
    if (ekfac_owns(ek, l)) st[3 * l] /= (double)ek->layers[l].dout * (double)(ek->layers[l].din + 1);
  PetscCall(ekfac_share(ek, 3, st));
  PetscCall(ekfac_share(ek, 4, &ek->estat[0][0]));
  PetscFunctionReturn(0);
}

static PetscErrorCode ekfac_update_damping(InflEKFAC ek)
{
  double *st;

  PetscFunctionBegin;
  if (!ek->L) PetscFunctionReturn(0);
  PetscCall(PetscMalloc1(3 * ek->L, &st));
  PetscCall(ekfac_lambda_stats(ek, st));
  for (PetscInt l = 0; l < ek->L; l++) { /* every rank: the damping of every layer, the same checks */
    ek->layers[l].damping = ek->damping >= 0 ? ek->damping : ek->damping_factor * st[3 * l];
    PetscCall(ekfac_check_damping(ek, l, st[3 * l + 1], st[3 * l + 2], ek->damping >= 0 ? "-ekfac_damping" : "the default, -ekfac_damping_factor x mean(Lambda)"));
  }
  PetscCall(PetscFree(st));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSetDamping(InflEKFAC ek, double damping)
{
  PetscFunctionBegin;
  ek->damping = damping == (double)PETSC_DEFAULT ? -1 : damping;
  PetscCall(ekfac_update_damping(ek));
  PetscFunctionReturn(0);
}

static PetscErrorCode ekfac_free_layers(InflEKFAC ek)
{
  PetscFunctionBegin;
  /* the single-precision copies of the eigenbases go with them (fit and load reallocate the layers first) */
  if (ek->QAf) for (PetscInt l = 0; l < ek->L; l++) PetscCall(PetscFree2(ek->QAf[l], ek->QSf[l]));
  PetscCall(PetscFree2(ek->QAf, ek->QSf));
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    PetscCall(PetscFree(ly->A));
    PetscCall(PetscFree(ly->S));
    PetscCall(PetscFree(ly->QA));
    PetscCall(PetscFree(ly->QS));
    PetscCall(PetscFree(ly->eA));
    PetscCall(PetscFree(ly->eS));
    PetscCall(PetscFree(ly->Lambda));
  }
  PetscCall(PetscFree(ek->layers));
  PetscCall(PetscFree(ek->names));
  PetscCall(PetscFree(ek->estat));
  ek->L = 0;
  PetscFunctionReturn(0);
}

static PetscErrorCode ekfac_allocate(InflEKFAC ek, PetscInt L, const PetscInt din[], const PetscInt dout[])
{
  PetscFunctionBegin;
  PetscCall(ekfac_free_layers(ek));
  ek->L = L;
  PetscCall(PetscCalloc1(L, &ek->layers));
  PetscCall(PetscCalloc1(L, &ek->names));
  PetscCall(PetscCalloc1(L, &ek->estat));
  for (PetscInt l = 0; l < L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    int64_t         na, ns;
    ly->din            = din[l];
    ly->dout           = dout[l];
    ly->np             = 1;
    ly->p              = 0;
    ly->nba            = (int)(din[l] + 1);
    ly->nbs            = (int)PetscMax(dout[l], 1);
    ly->ra             = din[l] + 1;
    ly->rs             = dout[l];
    if (!ekfac_owns(ek, l)) continue; /* held by another group of ranks */
    if (ek->layout && InflLayerLayoutIsSplit(ek->layout)) { /* split over the ranks of the group (infl/layout.h) */
      PetscInt E, e;
      PetscCall(InflLayerLayoutGetGroups(ek->layout, NULL, &E, NULL, &e));
      ly->np  = (int)E;
      ly->p   = (int)e;
      ly->nba = InflLayerLayoutSplitBlock(din[l] + 1, E);
      ly->nbs = InflLayerLayoutSplitBlock(dout[l], E);
      ly->ra  = (PetscInt)InflBlacsLocalCount(din[l] + 1, ly->nba, ly->p, ly->np);
      ly->rs  = (PetscInt)InflBlacsLocalCount(dout[l], ly->nbs, ly->p, ly->np);
    }
    na = (int64_t)ly->ra * (din[l] + 1);
    ns = (int64_t)ly->rs * dout[l];
    PetscCall(PetscCalloc1(PetscMax(na, 1), &ly->A));
    PetscCall(PetscCalloc1(PetscMax(ns, 1), &ly->S));
    PetscCall(PetscCalloc1(PetscMax(na, 1), &ly->QA));
    PetscCall(PetscCalloc1(PetscMax(ns, 1), &ly->QS));
    PetscCall(PetscCalloc1(din[l] + 1, &ly->eA));
    PetscCall(PetscCalloc1(PetscMax(dout[l], 1), &ly->eS));
    PetscCall(PetscCalloc1(PetscMax((int64_t)ly->rs * (din[l] + 1), 1), &ly->Lambda));
  }
  PetscFunctionReturn(0);
}

typedef struct {
  InflEKFAC    ek;
  InflModel    model;
  InflData     train;
  InflCapture *cap;
  InflCapture *recv;                  /* with several layer groups: the rows of the owned layers (infl/layout.h) */
  double      *bufa, *bufd, *ta, *td; /* (Tmax, max(din+1, dout)) scratch, Tmax the rows of recv (else cap): the
                                         rows in double (pass 1); ta, td alias bufa, bufd for their rotations (pass 2) */
  int          pass;                  /* 1: covariance sums; 2: Lambda sums */
} FitChunkCtx;

/* Pack the columns of the block-cyclic index set (block nb, rank p of np; cnt of them) of x (T, n) into y (T, cnt). */
static void pack_columns(PetscInt T, PetscInt n, const double x[], int nb, int p, int np, PetscInt cnt, double y[])
{
  for (PetscInt t = 0; t < T; t++)
    for (PetscInt k = 0; k < cnt; k++) y[(int64_t)t * cnt + k] = x[(int64_t)t * n + InflBlacsGlobal(k, nb, p, np)];
}

/* The object's scratch of the split layers' group rows: buffer k (0..4) of at least n doubles. */
static PetscErrorCode ekfac_gbuf(InflEKFAC ek, int k, size_t n)
{
  PetscFunctionBegin;
  if (n > ek->ngbuf[k]) {
    PetscCall(PetscFree(ek->gbuf[k]));
    PetscCall(PetscMalloc1(n, &ek->gbuf[k]));
    ek->ngbuf[k] = n;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACGatherGroupRows(InflEKFAC ek, PetscInt l, const InflCapture *cap, PetscBool rotate, InflEKFACGroupRows *g)
{
  InflEKFACLayer *ly = &ek->layers[l];
  MPI_Comm        group;
  PetscMPIInt     E;
  PetscInt        na = ly->din + 1, nd = ly->dout, maxd = PetscMax(na, nd);
  int             tb[2] = {(int)cap->T, (int)cap->B}, *all;
  PetscMPIInt    *cnt, *dsp;
  const double   *a, *ds;
  int64_t         tot;

  PetscFunctionBegin;
  PetscCheck(ly->np > 1 && ekfac_owns(ek, l), PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "layer %d is not split over this rank's layer group", (int)l);
  PetscCall(InflLayerLayoutGetComms(ek->layout, NULL, &group, NULL));
  PetscCallMPI(MPI_Comm_size(group, &E));
  PetscCall(PetscMalloc3(2 * E, &all, E, &cnt, E, &dsp));
  PetscCallMPI(MPI_Allgather(tb, 2, MPI_INT, all, 2, MPI_INT, group));
  g->T = g->B = 0;
  for (int e = 0; e < E; e++) {
    g->T += all[2 * e];
    g->B += all[2 * e + 1];
  }
  tot = (int64_t)g->T * maxd;
  PetscCheck(tot < INT_MAX, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "the layer split gathers %" PRId64 " values of layer %d per chunk, more than an MPI count holds: give a smaller chunk (-ekfac_chunk, -score_chunk, -self_chunk)", tot, (int)l);
  for (int k = 0; k < 5; k++) PetscCall(ekfac_gbuf(ek, k, (size_t)PetscMax(tot, 1)));
  if (ek->ngoff < (size_t)g->B + 1 + (size_t)E + 1) {
    PetscCall(PetscFree2(ek->goff, ek->gbstart));
    ek->ngoff = (size_t)g->B + 1 + (size_t)E + 1;
    PetscCall(PetscMalloc2(ek->ngoff, &ek->goff, ek->ngoff, &ek->gbstart));
  }
  /* this rank's rows in double (buffers 2 and 3 as scratch), gathered into buffers 0 (a) and 1 (ds) */
  a  = ek->gbuf[2];
  ds = ek->gbuf[3];
  if (cap->T > 0) InflCaptureGetDouble(cap, l, ek->gbuf[2], ek->gbuf[3], &a, &ds);
  for (int w = 0; w < 2; w++) {
    PetscInt n = w ? nd : na;
    for (int e = 0, d = 0; e < E; e++) {
      cnt[e] = (PetscMPIInt)(all[2 * e] * n);
      dsp[e] = d;
      d += cnt[e];
    }
    PetscCallMPI(MPI_Allgatherv(w ? ds : a, (int)(cap->T * n), MPI_DOUBLE, ek->gbuf[w], cnt, dsp, MPI_DOUBLE, group));
  }
  { /* the sequences: each rank's offsets[1..B], shifted by the rows of the ranks before it */
    int64_t *o = ek->goff + 1;
    for (int e = 0, d = 0; e < E; e++) {
      cnt[e] = all[2 * e + 1];
      dsp[e] = d;
      d += cnt[e];
      ek->gbstart[e] = dsp[e];
    }
    ek->gbstart[E] = g->B;
    PetscCallMPI(MPI_Allgatherv(cap->offsets + 1, (int)cap->B, MPI_INT64_T, o, cnt, dsp, MPI_INT64_T, group));
    for (int e = 0, r0 = 0; e < E; e++) {
      for (int b = 0; b < cnt[e]; b++) o[dsp[e] + b] += r0;
      r0 += all[2 * e];
    }
    ek->goff[0] = 0;
  }
  g->offsets = ek->goff;
  g->bstart  = ek->gbstart;
  g->a       = ek->gbuf[0];
  g->ds      = ek->gbuf[1];
  g->v = g->u = NULL;
  if (rotate && g->T) { /* v = a Q_A: each rank its columns Ia (buffer 2), gathered (buffer 3) into v (over a) */
    if (ly->ra) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->T, ly->ra, na, 1.0, g->a, na, ly->QA, na, 0.0, ek->gbuf[2], ly->ra);
    for (int e = 0, d = 0; e < E; e++) {
      cnt[e] = (PetscMPIInt)(g->T * InflBlacsLocalCount(na, ly->nba, e, E));
      dsp[e] = d;
      d += cnt[e];
    }
    PetscCallMPI(MPI_Allgatherv(ek->gbuf[2], (int)(g->T * ly->ra), MPI_DOUBLE, ek->gbuf[3], cnt, dsp, MPI_DOUBLE, group));
    for (int e = 0; e < E; e++) { /* rank e's block holds the columns of its indices */
      PetscInt      re  = cnt[e] / g->T;
      const double *blk = ek->gbuf[3] + dsp[e];
      for (PetscInt t = 0; t < g->T; t++)
        for (PetscInt k = 0; k < re; k++) g->a[(int64_t)t * na + InflBlacsGlobal(k, ly->nba, e, E)] = blk[(int64_t)t * re + k];
    }
    g->v = g->a;
    g->a = NULL;
    /* u = ds Q_S[:, Is] (buffer 4) */
    if (ly->rs) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->T, ly->rs, nd, 1.0, g->ds, nd, ly->QS, nd, 0.0, ek->gbuf[4], ly->rs);
    g->u = ek->gbuf[4];
  }
  PetscCall(PetscFree3(all, cnt, dsp));
  PetscFunctionReturn(0);
}

/* A split layer l, covariance pass: A[Ia, :] += a[:, Ia]^T a and S[Is, :] += ds[:, Is]^T ds over the group's rows. */
static PetscErrorCode split_accumulate_covariance(InflEKFAC ek, PetscInt l, const InflCapture *cap)
{
  InflEKFACLayer    *ly = &ek->layers[l];
  PetscInt           na = ly->din + 1, nd = ly->dout;
  InflEKFACGroupRows g;

  PetscFunctionBegin;
  PetscCall(InflEKFACGatherGroupRows(ek, l, cap, PETSC_FALSE, &g));
  if (g.T == 0) PetscFunctionReturn(0);
  if (ly->ra) {
    pack_columns(g.T, na, g.a, ly->nba, ly->p, ly->np, ly->ra, ek->gbuf[2]);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ly->ra, na, g.T, 1.0, ek->gbuf[2], ly->ra, g.a, na, 1.0, ly->A, na);
  }
  if (ly->rs) {
    pack_columns(g.T, nd, g.ds, ly->nbs, ly->p, ly->np, ly->rs, ek->gbuf[3]);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ly->rs, nd, g.T, 1.0, ek->gbuf[3], ly->rs, g.ds, nd, 1.0, ly->S, nd);
  }
  PetscFunctionReturn(0);
}

/* A split layer l, Lambda pass: Lambda[Is, :] += sum_b (sum_{t in b} u_t v_t^T)^2 over the group's sequences
 * (u^2^T v^2 when each has one row), with the rotated rows of InflEKFACGatherGroupRows. */
static PetscErrorCode split_accumulate_lambda(InflEKFAC ek, PetscInt l, const InflCapture *cap)
{
  InflEKFACLayer    *ly = &ek->layers[l];
  PetscInt           na = ly->din + 1;
  InflEKFACGroupRows g;

  PetscFunctionBegin;
  PetscCall(InflEKFACGatherGroupRows(ek, l, cap, PETSC_TRUE, &g));
  if (g.T == 0 || !ly->rs) PetscFunctionReturn(0);
  if (g.T == g.B) { /* one row per example: the rank-one rotated gradients squared */
    for (int64_t i = 0; i < (int64_t)g.T * na; i++) g.v[i] *= g.v[i];
    for (int64_t i = 0; i < (int64_t)g.T * ly->rs; i++) g.u[i] *= g.u[i];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ly->rs, na, g.T, 1.0, g.u, ly->rs, g.v, na, 1.0, ly->Lambda, na);
  } else { /* a sequence's rotated gradient (rows Is) by one GEMM over its rows, then squared */
    double *R;
    PetscCall(ekfac_work(ek, (size_t)ly->rs * na, &R));
    for (PetscInt b = 0; b < g.B; b++) {
      int64_t t0 = g.offsets[b], nt = g.offsets[b + 1] - t0;
      if (!nt) continue;
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ly->rs, na, (int)nt, 1.0, g.u + t0 * ly->rs, ly->rs, g.v + t0 * na, na, 0.0, R, na);
      for (int64_t i = 0; i < (int64_t)ly->rs * na; i++) ly->Lambda[i] += R[i] * R[i];
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACPreconditionSplit(InflEKFAC ek, PetscInt l, const InflEKFACGroupRows *g, PetscInt b0, PetscInt b1, double P[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, rs = ly->rs;
  int64_t         per = (int64_t)rs * na;

  PetscFunctionBegin;
  PetscCheck(ly->np > 1 && g->v && 0 <= b0 && b0 <= b1 && b1 <= g->B, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "layer %d: sequences [%d, %d) of %d rotated group rows (a split layer, InflEKFACGatherGroupRows with rotate) expected", (int)l, (int)b0, (int)b1, (int)g->B);
  for (PetscInt b = b0; b < b1 && rs; b++) {
    int64_t t0 = g->offsets[b], nt = g->offsets[b + 1] - t0;
    double *W  = P + (b - b0) * per;
    if (!nt) {
      PetscCall(PetscArrayzero(W, per));
      continue;
    }
    /* the rotated gradient's rows Is, sum_t u_t v_t^T, then divided by (Lambda + damping): kept in the eigenbasis */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rs, na, (int)nt, 1.0, g->u + t0 * rs, rs, g->v + t0 * na, na, 0.0, W, na);
    for (int64_t i = 0; i < per; i++) W[i] /= ly->Lambda[i] + ly->damping;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSelfInfluenceSplit(InflEKFAC ek, PetscInt l, const InflCapture *cap, InflEKFACGroupRows *g, double part[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, rs = ly->rs;
  double         *R;

  PetscFunctionBegin;
  PetscCall(InflEKFACGatherGroupRows(ek, l, cap, PETSC_TRUE, g));
  if (g->T == 0 || !rs) PetscFunctionReturn(0);
  PetscCall(ekfac_work(ek, 2 * (size_t)rs * na + (size_t)g->B * rs, &R));
  {
    double *Li = R + (size_t)rs * na, *M = Li + (size_t)rs * na; /* 1 / (Lambda + damping) (rs, na); M (B, rs) */
    for (int64_t i = 0; i < (int64_t)rs * na; i++) Li[i] = 1.0 / (ly->Lambda[i] + ly->damping);
    if (g->T == g->B) { /* one row each: sum_i u_i^2 sum_j v_j^2 / (Lambda_ij + damping) */
      for (int64_t i = 0; i < (int64_t)g->T * na; i++) g->v[i] *= g->v[i];
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->B, rs, na, 1.0, g->v, na, Li, na, 0.0, M, rs);
      for (PetscInt b = 0; b < g->B; b++)
        for (PetscInt i = 0; i < rs; i++) part[b] += g->u[(int64_t)b * rs + i] * g->u[(int64_t)b * rs + i] * M[(int64_t)b * rs + i];
    } else
      for (PetscInt b = 0; b < g->B; b++) {
        int64_t t0 = g->offsets[b], nt = g->offsets[b + 1] - t0;
        double  s  = 0;
        if (!nt) continue;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rs, na, (int)nt, 1.0, g->u + t0 * rs, rs, g->v + t0 * na, na, 0.0, R, na);
        for (int64_t i = 0; i < (int64_t)rs * na; i++) s += R[i] * R[i] * Li[i];
        part[b] += s;
      }
  }
  PetscFunctionReturn(0);
}

/* Add the rows of a capture to the sums of the current pass, for the layers this rank holds. */
static PetscErrorCode fit_accumulate(FitChunkCtx *c, const InflCapture *cap)
{
  InflEKFAC ek = c->ek;
  PetscInt  T  = cap->T;

  PetscFunctionBegin;
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    PetscInt        na = ly->din + 1, nd = ly->dout;
    if (!ekfac_owns(ek, l)) continue;
    if (ly->np > 1) { /* collective over the group, also for an empty capture */
      if (c->pass == 1) PetscCall(split_accumulate_covariance(ek, l, cap));
      else PetscCall(split_accumulate_lambda(ek, l, cap));
      continue;
    }
    if (cap->B == 0) continue;
    if (c->pass == 1) { /* upper triangles in double; mirrored after the pass */
      const double *a, *ds;
      InflCaptureGetDouble(cap, l, c->bufa, c->bufd, &a, &ds);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, na, T, 1.0, a, na, 1.0, ly->A, na);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, nd, T, 1.0, ds, nd, 1.0, ly->S, nd);
    } else PetscCall(InflEKFACAccumulateLambda(ek, l, cap, c->ta, c->td, ly->Lambda)); /* summed over the chunk's sequences */
  }
  PetscFunctionReturn(0);
}

/* One chunk [lo, hi) of this rank's shard: capture it, and with one layer group add its terms to the sums. */
static PetscErrorCode fit_chunk(void *ctx, int64_t lo, int64_t hi)
{
  FitChunkCtx *c  = (FitChunkCtx *)ctx;
  InflEKFAC    ek = c->ek;

  PetscFunctionBegin;
  /* the Fisher's labels: the data's (empirical) or sampled from the model keyed by the global example index (true) */
  PetscCall(InflModelCaptureShard(c->model, c->train, lo, hi, ek->fisher, ek->seed, c->cap));
  if (c->pass == 1) ek->nrows += c->cap->T; /* rows: A and S sum over every row (token) */
  if (!c->recv && !ekfac_split(ek)) PetscCall(fit_accumulate(c, c->cap));
  PetscFunctionReturn(0);
}

/* Several layer groups or split layers, after each round (collective): the round's rows go to the owners of their
 * layers, and are summed there (split layers: over the rows of the whole group). */
static PetscErrorCode fit_step(void *ctx, int64_t lo, int64_t hi)
{
  FitChunkCtx *c = (FitChunkCtx *)ctx;

  PetscFunctionBegin;
  if (lo == hi) c->cap->B = c->cap->T = 0; /* no chunk this round */
  if (c->recv) PetscCall(InflLayerLayoutGatherCapture(c->ek->layout, c->cap, c->recv, NULL));
  PetscCall(fit_accumulate(c, c->recv ? c->recv : c->cap));
  PetscFunctionReturn(0);
}

static PetscErrorCode fit_checkpoint(void *ctx, const InflRanges *done)
{
  FitChunkCtx *c = (FitChunkCtx *)ctx;

  PetscFunctionBegin;
  PetscCall(ekfac_checkpoint(c->ek, c->pass, done));
  PetscFunctionReturn(0);
}

/* Run one pass over this rank's shard: chunks captured and accumulated; with several layer groups each round's rows
 * are gathered to their owners after the round (collective). */
static PetscErrorCode fit_run_pass(FitChunkCtx *fc, const char stage[], int64_t start, int64_t count, const InflRanges *done, const char partial[])
{
  InflChunkLoop loop = {fit_chunk, fc->ek->out[0] ? fit_checkpoint : NULL, fc, NULL};

  PetscFunctionBegin;
  PetscCall(InflModelGetExampleUnit(fc->model, &loop.unit));
  PetscCall(InflRunChunksStep(fc->ek->comm, stage, start, count, fc->ek->chunk, done, &loop, fc->recv || ekfac_split(fc->ek) ? fit_step : NULL, partial));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACFit(InflEKFAC ek, InflModel model, InflData train)
{
  PetscInt       L, *dins, *douts, maxd = 1, rows, G, E;
  InflLinear    *lin;
  int64_t        N, d, start, count;
  InflCapture   *cap, *recv = NULL;
  double        *bufa, *bufd;
  const char    *hash;
  PetscLogDouble t0, t1 = 0, t2, t3;
  InflRanges     done = {0};
  int            resume_pass;
  FitChunkCtx    fc;
  char           partial[PETSC_MAX_PATH_LEN];
  MPI_Comm       group;
  size_t         mine, owned_rows = 0, es;
  InflPrecision  prec;

  PetscFunctionBegin;
  PetscCall(InflModelSetLayerSelection(model, ek->sel)); /* -ekfac_layers: the layers fitted */
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(InflModelCheckData(model, train));
  PetscCall(InflModelGetPrecision(model, &ek->prec));
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  PetscCall(InflModelGetMaxRows(model, &rows));
  PetscCall(PetscMalloc2(L, &dins, L, &douts));
  for (PetscInt l = 0; l < L; l++) {
    dins[l]  = lin[l].din;
    douts[l] = lin[l].dout;
    maxd     = PetscMax(maxd, PetscMax(lin[l].din + 1, lin[l].dout));
  }
  /* the layout: the fit holds its factors about twice (the eigensolves' copies and workspace) */
  { /* the fit holds the factors twice (the sums and the eigenbases) */
    /* and one example of the chunk with several groups or split layers (the chunk derivation below; every layer
     * counted as owned): the rows gathered from the G ranks of the cross communicator, and from the E ranks of the
     * group in double (InflEKFACGatherGroupRows' 5 buffers of the widest layer) */
    double               rw = (double)rows, all = 0;
    InflLayerLayoutStage st = {2.0, 0, 0, 0, 0, 0, (size_t)count * (sizeof(float) * d + sizeof(int64_t)) + InflModelParameterBytes(model) + InflModelCaptureBytes(model) + (size_t)rows * (4 * sizeof(double) * maxd + sizeof(int32_t)), 0, 0, 0, 0, NULL};
    for (PetscInt l = 0; l < L; l++) all += (double)(lin[l].din + 1 + lin[l].dout);
    st.per_example_group = rw * (2 * sizeof(double) * (double)maxd + all * (ek->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float)));
    st.per_example_split = rw * 5 * sizeof(double) * (double)maxd + sizeof(int64_t);
    PetscCall(ekfac_setup_layout(ek, L, dins, douts, &st));
  }
  PetscCall(ekfac_allocate(ek, L, dins, douts));
  PetscCall(PetscFree2(dins, douts));
  PetscCall(InflLayerLayoutGetGroups(ek->layout, &G, NULL, NULL, NULL));
  PetscCall(InflLayerLayoutGetBytes(ek->layout, &mine, NULL, NULL));
  PetscCall(InflLayerLayoutGetComms(ek->layout, NULL, &group, NULL));
  PetscCall(InflModelGetPrecision(model, &prec));
  es = prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
  for (PetscInt l = 0; l < L; l++)
    if (ekfac_owns(ek, l)) owned_rows += (size_t)(lin[l].din + 1 + lin[l].dout);
  for (PetscInt l = 0; l < L; l++) PetscCall(InflModelGetLayerName(model, l, ek->names[l], sizeof(ek->names[l])));
  ek->nexamples = N;
  PetscCall(InflModelGetHash(model, &hash));
  PetscCall(PetscStrncpy(ek->model_hash, hash, sizeof(ek->model_hash)));
  PetscCall(InflDataGetHash(train, &hash));
  PetscCall(PetscStrncpy(ek->train_hash, hash, sizeof(ek->train_hash)));

  /* per example: its capture, the model's workspace, 2 rows of scratch in double per row (token) and the sampled
   * labels; with several layer groups also the rows of the owned layers gathered from G ranks, and the scratch is G
   * times longer; held whatever the chunk: the data shard, the owned factors and their sums */
  /* split layers (-layer_split): the rows of the whole group in double, and their rotations, 5 x E x G rows each */
  PetscCall(InflLayerLayoutGetGroups(ek->layout, NULL, &E, NULL, NULL));
  PetscCall(InflModelGetChunk(model, ek->comm, "infl fit", ek->chunk_set, count, (size_t)count * (sizeof(float) * d + sizeof(int64_t)) + 2 * mine, InflModelCaptureBytes(model) + (size_t)rows * ((G > 1 ? G : 1) * 2 * sizeof(double) * maxd + sizeof(int32_t)) + (G > 1 ? (size_t)G * rows * owned_rows * es : 0) + 2 * sizeof(int64_t) + (ekfac_split(ek) ? (size_t)E * G * (rows * 5 * sizeof(double) * maxd + sizeof(int64_t)) : 0), &ek->chunk));
  PetscCall(InflCaptureCreate(model, ek->chunk, &cap));
  if (G > 1) PetscCall(InflLayerLayoutCaptureCreate(ek->layout, cap, &recv));
  fc = (FitChunkCtx){ek, model, train, cap, recv, NULL, NULL, NULL, NULL, 0};
  {
    PetscInt Tmax = recv ? recv->Tmax : cap->Tmax;
    PetscCall(PetscMalloc2((size_t)Tmax * maxd, &bufa, (size_t)Tmax * maxd, &bufd));
  }
  ek->nrows = 0;

  PetscCall(ekfac_restore(ek, &resume_pass, &done));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", ek->out[0] ? ek->out : "(no output file)"));
  fc.bufa = fc.ta = bufa;
  fc.bufd = fc.td = bufd;

  /* Pass 1: covariance sums (upper triangle by dsyrk, mirrored below) */
  PetscCall(PetscTime(&t0));
  if (resume_pass <= 1) {
  fc.pass = 1;
  PetscCall(fit_run_pass(&fc, "infl fit (covariance pass)", start, count, &done, partial));
  {
    double   **Cf, **ev, **Q;
    PetscInt  *nf, nown = 0;
    char     (*names)[64];
    const char **pnames;
    int       *nb;
    PetscCall(PetscMalloc5(2 * L, &Cf, 2 * L, &ev, 2 * L, &Q, 2 * L, &nf, 2 * L, &names));
    PetscCall(PetscMalloc2(2 * L, &pnames, 2 * L, &nb));
    for (PetscInt l = 0; l < L; l++) { /* the factors of the layers this rank's group holds */
      InflEKFACLayer *ly = &ek->layers[l];
      PetscInt        k  = 2 * nown;
      if (!ekfac_owns(ek, l)) continue;
      if (ly->np == 1) { /* dsyrk's upper triangles mirrored (a split layer's rows are whole: GEMMs) */
        for (PetscInt i = 0; i <= ly->din; i++) for (PetscInt j = 0; j < i; j++) ly->A[(int64_t)i * (ly->din + 1) + j] = ly->A[(int64_t)j * (ly->din + 1) + i];
        for (PetscInt i = 0; i < ly->dout; i++) for (PetscInt j = 0; j < i; j++) ly->S[(int64_t)i * ly->dout + j] = ly->S[(int64_t)j * ly->dout + i];
      }
      nb[k]     = ly->nba;
      nb[k + 1] = ly->nbs;
      Cf[k] = ly->A; ev[k] = ly->eA; Q[k] = ly->QA; nf[k] = ly->din + 1;
      Cf[k + 1] = ly->S; ev[k + 1] = ly->eS; Q[k + 1] = ly->QS; nf[k + 1] = ly->dout;
      PetscCall(PetscSNPrintf(names[k], 64, "layer %d factor A (activation covariance)", (int)l));
      PetscCall(PetscSNPrintf(names[k + 1], 64, "layer %d factor S (pseudo-gradient covariance)", (int)l));
      pnames[k] = names[k];
      pnames[k + 1] = names[k + 1];
      nown++;
    }
    PetscCall(PetscTime(&t1));
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &ek->nrows, 1, MPI_INT64_T, MPI_SUM, ek->comm));
    /* A and S are means over rows: examples of an MLP, tokens of a language model (Grosse et al. 2023, sec. 2.2); the
     * partial sums of the group's ranks are summed and the factors solved on the group (all ranks with one group) */
    if (ekfac_split(ek)) { /* the sums are complete.  Under -mem_limit a factor is gathered to one rank for dsyevd only
                            * when its transient fits the second copy of this rank's factors that the layout and the
                            * chunk reserve for the eigensolves (pdsyevd's own transient, about 3 n nloc, fits there) */
      double    limit, budget = -1;
      PetscBool set;
      PetscCall(InflGetMemLimit(ek->comm, &limit, &set));
      if (set) budget = (double)mine;
      PetscCall(InflEigenSolveSplit(group, 2 * nown, nf, nb, Cf, 1.0 / (double)ek->nrows, ev, Q, pnames, budget));
    }
    else PetscCall(InflEigenSolve(group, 2 * nown, nf, Cf, 1.0 / (double)ek->nrows, ev, Q, pnames));
    PetscCall(PetscFree5(Cf, ev, Q, nf, names));
    PetscCall(PetscFree2(pnames, nb));
  }
  PetscCall(InflRangesReset(&done));
  { /* S = 0: Lambda will be 0 too; said now, before the Lambda pass and its checkpoint */
    double *top;
    PetscCall(PetscCalloc1(L, &top));
    for (PetscInt l = 0; l < L; l++)
      if (ekfac_owns(ek, l)) top[l] = ek->layers[l].eS[ek->layers[l].dout - 1];
    PetscCall(ekfac_share(ek, 1, top));
    for (PetscInt l = 0; l < L; l++)
      if (ek->damping < 0 && top[l] == 0) PetscCall(ekfac_check_damping(ek, l, 0, 0, "the default"));
    PetscCall(PetscFree(top));
  }
  if (ek->out[0] && !ek->kfac) PetscCall(ekfac_checkpoint(ek, 2, &done));
  }
  PetscCall(PetscTime(&t2));

  /* Pass 2: Lambda = (1/N) sum_n (Q_S^T ds)^2 (Q_A^T a)^2^T, one GEMM per layer and chunk */
  if (ek->kfac) {
    for (PetscInt l = 0; l < L; l++) {
      InflEKFACLayer *ly = &ek->layers[l];
      if (!ekfac_owns(ek, l)) continue;
      for (PetscInt i = 0; i < ly->rs; i++) /* this rank's rows (all unless split) */
        for (PetscInt j = 0; j <= ly->din; j++) ly->Lambda[(int64_t)i * (ly->din + 1) + j] = PetscMax(ly->eS[InflBlacsGlobal(i, ly->nbs, ly->p, ly->np)], 0) * PetscMax(ly->eA[j], 0);
    }
  } else {
    fc.pass = 2;
    PetscCall(fit_run_pass(&fc, "infl fit (Lambda pass)", start, count, &done, partial));
    for (PetscInt l = 0; l < L; l++) {
      InflEKFACLayer *ly = &ek->layers[l];
      int64_t         n  = (int64_t)ly->rs * (ly->din + 1);
      if (!ekfac_owns(ek, l)) continue;
      if (ly->np == 1) PetscCall(InflAllreduceSum(ly->Lambda, n, MPI_DOUBLE, group)); /* a split layer's rows are complete */
      for (int64_t i = 0; i < n; i++) ly->Lambda[i] /= (double)N;
    }
  }
  PetscCall(PetscTime(&t3));
  PetscCall(ekfac_update_damping(ek));
  PetscCall(PetscInfo(NULL, "EK-FAC fit: covariance pass %.3f s, eigensolves %.3f s, Lambda pass %.3f s\n", t1 - t0, t2 - t1, t3 - t2));
  PetscCall(PetscFree2(bufa, bufd));
  PetscCall(InflEKFACFreeScratch(ek)); /* the group rows, the float eigenbases of the Lambda pass: not kept for scoring */
  PetscCall(InflCaptureDestroy(&recv));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(InflRangesDestroy(&done));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACFreeScratch(InflEKFAC ek)
{
  PetscFunctionBegin;
  PetscCall(ekfac_free_group_rows(ek));
  if (ek->QAf) for (PetscInt l = 0; l < ek->L; l++) PetscCall(PetscFree2(ek->QAf[l], ek->QSf[l]));
  PetscCall(PetscFree2(ek->QAf, ek->QSf));
  PetscCall(PetscFree(ek->rot));
  ek->nrot = 0;
  PetscCall(PetscFree(ek->work));
  ek->nwork = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACGetSelfInfluenceBytes(InflEKFAC ek, InflModel model, size_t *bytes)
{
  InflPrecision prec;
  PetscBool     seq;
  size_t        once = 0, copies = 0, nmax = 0;

  PetscFunctionBegin;
  PetscCall(InflModelGetPrecision(model, &prec));
  PetscCall(InflModelIsSequential(model, &seq));
  for (PetscInt l = 0; l < ek->L; l++) {
    const InflEKFACLayer *ly = &ek->layers[l];
    size_t                na = (size_t)ly->din + 1, nd = (size_t)ly->dout;
    if (!ekfac_owns(ek, l) || ly->np > 1) continue; /* split layers: InflEKFACSelfInfluenceSplit, counted per row */
    once = PetscMax(once, (seq ? 2 : 1) * sizeof(double) * nd * na);
    if (!seq && prec == INFL_PREC_SINGLE) {
      copies += sizeof(float) * (na * na + nd * nd);
      nmax = PetscMax(nmax, PetscMax(na, nd));
    }
  }
  *bytes = once + copies + 2 * sizeof(float) * INFL_ROTATION_BLOCK * nmax;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACGetLayers(InflEKFAC ek, PetscInt *L, InflEKFACLayer **layers)
{
  PetscFunctionBegin;
  if (L) *L = ek->L;
  if (layers) *layers = ek->layers;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACGetTrainHash(InflEKFAC ek, const char **hex)
{
  PetscFunctionBegin;
  *hex = ek->train_hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACPreconditionRankOne(InflEKFAC ek, PetscInt l, PetscInt n, const double ds[], const double a[], double P[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, nd = ly->dout;
  int64_t         per = (int64_t)nd * na;
  double         *U, *V, *M;

  PetscFunctionBegin;
  EKFAC_CHECK_OWNED(ek, l);
  EKFAC_CHECK_WHOLE(ek, l);
  if (n == 0) PetscFunctionReturn(0);
  PetscCall(ekfac_work(ek, (size_t)n * (nd + na) + (size_t)per, &U));
  V = U + (size_t)n * nd;
  M = V + (size_t)n * na;
  /* U (n, nd) = ds Q_S, V (n, na) = a Q_A: the queries' coordinates in the eigenbases */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, nd, nd, 1.0, ds, nd, ly->QS, nd, 0.0, U, nd);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, na, na, 1.0, a, na, ly->QA, na, 0.0, V, na);
  /* query by query, so that M and P_k stay in cache (stacking the queries into one GEMM was measured slower: it
   * streams Q * nd * na doubles through memory) */
  for (PetscInt k = 0; k < n; k++) {
    const double *u = U + (int64_t)k * nd, *v = V + (int64_t)k * na;
    double       *T = P + (int64_t)k * per; /* Q_S M, then P_k */
    /* M = (u v^T) / (Lambda + damping); P_k = Q_S M Q_A^T */
    for (PetscInt i = 0; i < nd; i++)
      for (PetscInt j = 0; j < na; j++) M[(int64_t)i * na + j] = u[i] * v[j] / (ly->Lambda[(int64_t)i * na + j] + ly->damping);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nd, na, nd, 1.0, ly->QS, nd, M, na, 0.0, T, na);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, na, na, 1.0, T, na, ly->QA, na, 0.0, M, na);
    PetscCall(PetscArraycpy(T, M, (size_t)per));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACPrecondition(InflEKFAC ek, PetscInt l, double G[])
{
  PetscFunctionBegin;
  PetscCall(InflEKFACPreconditionDamped(ek, l, ek->layers[l].damping, G));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACPreconditionDamped(InflEKFAC ek, PetscInt l, double damping, double G[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, nd = ly->dout;
  double         *T;

  PetscFunctionBegin;
  EKFAC_CHECK_OWNED(ek, l);
  EKFAC_CHECK_WHOLE(ek, l);
  PetscCall(ekfac_work(ek, (size_t)nd * na, &T));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, nd, 1.0, ly->QS, nd, G, na, 0.0, T, na);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nd, na, na, 1.0, T, na, ly->QA, na, 0.0, G, na);
  for (int64_t i = 0; i < (int64_t)nd * na; i++) G[i] /= (ly->Lambda[i] + damping);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nd, na, nd, 1.0, ly->QS, nd, G, na, 0.0, T, na);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, na, na, 1.0, T, na, ly->QA, na, 0.0, G, na);
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACView(InflEKFAC ek, PetscViewer viewer)
{
  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(ek->comm, &viewer));
  PetscCall(PetscViewerASCIIPrintf(viewer, "InflEKFAC: %s Fisher%s, %" PRId64 " examples, %d layers\n", ek->fisher == INFL_FISHER_TRUE ? "true" : "empirical", ek->kfac ? " (K-FAC, no eigenvalue correction)" : "", ek->nexamples, (int)ek->L));
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    PetscCall(PetscViewerASCIIPrintf(viewer, "  layer %d: A %dx%d (eigenvalues %.3e .. %.3e), S %dx%d (%.3e .. %.3e), damping %.4e\n", (int)l, (int)ly->din + 1, (int)ly->din + 1, ek->estat[l][0], ek->estat[l][1], (int)ly->dout, (int)ly->dout, ek->estat[l][2], ek->estat[l][3], ly->damping));
  }
  if (ek->layout) PetscCall(InflLayerLayoutView(ek->layout, viewer));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACDestroy(InflEKFAC *ek)
{
  PetscFunctionBegin;
  if (!*ek) PetscFunctionReturn(0);
  PetscCall(ekfac_free_layers(*ek));
  PetscCall(ekfac_free_group_rows(*ek));
  PetscCall(InflLayerLayoutDestroy(&(*ek)->layout));
  PetscCall(PetscFree((*ek)->work));
  PetscCall(PetscFree((*ek)->rot));
  PetscCall(PetscFree(*ek));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSave(InflEKFAC ek, const char path[], PetscBool overwrite)
{
  char  partial[PETSC_MAX_PATH_LEN];
  hid_t file;

  PetscFunctionBegin;
  InflCheckAll(ek->comm, overwrite || !InflFileExists(path), PETSC_ERR_FILE_OPEN, "%s exists; pass -overwrite to replace it or choose another -out", path);
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial.tmp", path));
  PetscCall(InflH5Create(ek->comm, partial, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, ek->comm, "fit", ek->model_hash, ek->train_hash, NULL));
  PetscCall(InflH5SetAttrString(file, "/", "fisher", ek->fisher == INFL_FISHER_TRUE ? "true" : "empirical"));
  {
    char key[128];
    PetscCall(ekfac_key(ek, key, sizeof(key)));
    PetscCall(InflH5SetAttrString(file, "/", "fit_key", key));
  }
  PetscCall(InflH5SetAttrInt(file, "/", "seed", (int64_t)ek->seed));
  PetscCall(InflH5SetAttrInt(file, "/", "examples", ek->nexamples));
  PetscCall(InflH5SetAttrInt(file, "/", "rows", ek->nrows));
  PetscCall(InflH5SetAttrInt(file, "/", "layers", ek->L));
  PetscCall(InflH5SetAttrString(file, "/", "layer_selection", ek->sel));
  PetscCall(InflH5SetAttrInt(file, "/", "kfac", ek->kfac));
  PetscCall(InflH5SetAttrDouble(file, "/", "damping_factor", ek->damping_factor));
  PetscCall(InflH5SetAttrDouble(file, "/", "damping_absolute", ek->damping));
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    char            g[64], name[96];
    LayerField      f[7];
    PetscCall(PetscSNPrintf(g, sizeof(g), "/layers/%d", (int)l));
    for (int k = 0, nf = layer_fields(ly, f); k < nf; k++) {
      PetscCall(PetscSNPrintf(name, sizeof(name), "%s/%s", g, f[k].name));
      PetscCall(ekfac_field_io(ek, file, partial, l, name, &f[k], PETSC_TRUE)); /* by its group's first rank, or by pieces */
    }
    PetscCall(InflH5SetAttrInt(file, g, "din", ly->din));
    if (ek->names) PetscCall(InflH5SetAttrString(file, g, "name", ek->names[l]));
    PetscCall(InflH5SetAttrInt(file, g, "dout", ly->dout));
    PetscCall(InflH5SetAttrDouble(file, g, "damping", ly->damping));
  }
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(ek->comm, partial, path));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", path));
  PetscCall(InflRemoveAll(ek->comm, partial));
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACLoad(InflEKFAC ek, const char path[], InflModel model)
{
  hid_t       file;
  char        fisher[32], mhash[128], thash[128];
  const char *hash;
  int64_t     L, seed, kfac;
  PetscInt    Lm;
  PetscInt   *din, *dout;

  PetscFunctionBegin;
  PetscCall(InflH5Open(ek->comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5GetAttrString(file, "/", "model_sha256", mhash, sizeof(mhash)));
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", thash, sizeof(thash)));
  PetscCall(InflModelGetHash(model, &hash));
  {
    PetscBool same;
    PetscCall(PetscStrcmp(mhash, hash, &same));
    PetscCheck(same, ek->comm, PETSC_ERR_ARG_INCOMP, "%s was fitted for model sha256 %s but the model given has sha256 %s; run infl fit for this model", path, mhash[0] ? mhash : "(none recorded)", hash);
  }
  PetscCall(InflH5GetAttrString(file, "/", "fisher", fisher, sizeof(fisher)));
  PetscCall(InflH5GetAttrInt(file, "/", "layers", &L));
  PetscCall(InflH5GetAttrInt(file, "/", "seed", &seed));
  PetscCall(InflH5GetAttrInt(file, "/", "kfac", &kfac));
  PetscCall(InflH5GetAttrInt(file, "/", "examples", &ek->nexamples));
  PetscCall(InflH5GetAttrDouble(file, "/", "damping_factor", &ek->damping_factor));
  { /* the layers the factors were fitted for (files without the attribute: all); -ekfac_layers must agree */
    char      sel[16], opt[16] = "";
    PetscBool set;
    PetscCall(InflH5GetAttrString(file, "/", "layer_selection", sel, sizeof(sel)));
    if (!sel[0]) PetscCall(PetscStrncpy(sel, "all", sizeof(sel)));
    PetscCall(PetscOptionsGetString(NULL, NULL, "-ekfac_layers", opt, sizeof(opt), &set));
    InflCheckAll(ek->comm, !set || !strcmp(opt, sel), PETSC_ERR_ARG_INCOMP, "-ekfac_layers %s does not match %s, whose factors were fitted with -ekfac_layers %s: score and self-influence use the layers of the factors; drop -ekfac_layers, give -ekfac_layers %s, or fit factors with -ekfac_layers %s", opt, path, sel, sel, opt);
    PetscCall(InflModelSetLayerSelection(model, sel));
    PetscCall(PetscStrncpy(ek->sel, sel, sizeof(ek->sel)));
  }
  PetscCall(ekfac_model_sizes(model, &Lm, &din, &dout));
  PetscCall(InflModelGetPrecision(model, &ek->prec));
  PetscCheck(L == Lm, ek->comm, PETSC_ERR_ARG_INCOMP, "%s has %d layers but the model has %d", path, (int)L, (int)Lm);
  PetscCall(ekfac_setup_layout(ek, Lm, din, dout, &ek->load)); /* score and self hold the factors once */
  PetscCall(ekfac_allocate(ek, Lm, din, dout));
  PetscCall(PetscFree2(din, dout));
  for (PetscInt l = 0; l < Lm; l++) PetscCall(InflModelGetLayerName(model, l, ek->names[l], sizeof(ek->names[l])));
  ek->fisher = fisher[0] == 'e' ? INFL_FISHER_EMPIRICAL : INFL_FISHER_TRUE;
  ek->seed   = (uint64_t)seed;
  ek->kfac   = kfac ? PETSC_TRUE : PETSC_FALSE;
  PetscCall(PetscStrncpy(ek->model_hash, mhash, sizeof(ek->model_hash)));
  PetscCall(PetscStrncpy(ek->train_hash, thash, sizeof(ek->train_hash)));
  for (PetscInt l = 0; l < ek->L; l++) {
    InflEKFACLayer *ly = &ek->layers[l];
    char            name[96];
    LayerField      f[7];
    for (int k = 0, nf = layer_fields(ly, f); k < nf; k++) {
      PetscCall(PetscSNPrintf(name, sizeof(name), "/layers/%d/%s", (int)l, f[k].name));
      PetscCall(ekfac_field_io(ek, file, path, l, name, &f[k], PETSC_FALSE)); /* only the owned layers (pieces of a split one) */
      { /* a damaged file must fail here, not after a scoring pass (the ranks holding the layer agree with the others) */
        int64_t i = ekfac_owns(ek, l) ? InflFirstNonFinite(f[k].nloc, f[k].buf) : -1, r, c;
        char    where[64] = "", v[32];
        snprintf(v, sizeof(v), "%g", i < 0 ? 0.0 : f[k].buf[i]); /* PETSc's printf would write nan as "nan." */
        if (i >= 0) field_entry(ly, &f[k], i, &r, &c);
        if (i >= 0 && f[k].ndim == 2) PetscCall(PetscSNPrintf(where, sizeof(where), "entry (%" PRId64 ", %" PRId64 ")", r, c));
        else if (i >= 0) PetscCall(PetscSNPrintf(where, sizeof(where), "entry %" PRId64, c));
        InflCheckAll(ek->comm, i < 0, PETSC_ERR_FILE_UNEXPECTED, "%s: layer %d: dataset %s holds %s at %s; factors never hold NaN or Inf, so the file is damaged: run infl fit again to rewrite it", path, (int)l, name, v, where);
      }
    }
    PetscCall(PetscSNPrintf(name, sizeof(name), "/layers/%d", (int)l));
    PetscCall(InflH5GetAttrDouble(file, name, "damping", &ly->damping));
    PetscCheck(ly->damping >= 0 && isfinite(ly->damping), ek->comm, PETSC_ERR_FILE_UNEXPECTED, "%s: layer %d: attribute damping of group %s is %g, not a finite number >= 0; the file is damaged: run infl fit again to rewrite it", path, (int)l, name, ly->damping);
  }
  PetscCall(InflH5GetAttrDouble(file, "/", "damping_absolute", &ek->damping));
  PetscCall(InflH5Close(&file));
  /* -ekfac_damping given now overrides the damping stored with the factors */
  {
    double    damping;
    PetscBool set;
    PetscCall(PetscOptionsGetReal(NULL, NULL, "-ekfac_damping", &damping, &set));
    if (set) {
      PetscCheck(damping >= 0 && isfinite(damping), ek->comm, PETSC_ERR_ARG_OUTOFRANGE, "-ekfac_damping %s must be a finite number >= 0", INFL_DSTR(damping));
      PetscCall(InflEKFACSetDamping(ek, damping));
    } else { /* the stored damping, checked for this run's precision */
      char    where[PETSC_MAX_PATH_LEN + 32];
      double *st;
      PetscCall(PetscSNPrintf(where, sizeof(where), "stored in %s", path));
      PetscCall(PetscMalloc1(3 * PetscMax(ek->L, 1), &st));
      PetscCall(ekfac_lambda_stats(ek, st)); /* every layer's Lambda range on every rank */
      for (PetscInt l = 0; l < ek->L; l++) PetscCall(ekfac_check_damping(ek, l, st[3 * l + 1], st[3 * l + 2], where));
      PetscCall(PetscFree(st));
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflLowRankApprox(PetscInt nd, PetscInt na, PetscInt r, double P[], double U[], double V[])
{
  PetscInt     k = PetscMin(nd, na);
  int64_t      per = (int64_t)nd * na;
  double      *M, *Sv, *Um, *VT, *work, wq;
  PetscBLASInt m, n, kk, lwork = -1, info, *iwork;

  PetscFunctionBegin;
  PetscCheck(r >= 1 && r <= k, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "rank %d must be in [1, min(%d, %d)]", (int)r, (int)nd, (int)na);
  PetscCall(InflBLASIntCast(na, "layer input size", &m));
  PetscCall(InflBLASIntCast(nd, "layer output size", &n));
  PetscCall(InflBLASIntCast(k, "rank", &kk));
  PetscCall(PetscMalloc5((size_t)per, &M, k, &Sv, (size_t)na * k, &Um, (size_t)k * nd, &VT, 8 * (size_t)k, &iwork));
  /* row-major P (nd, na) is column-major M = P^T (na, nd) = Um S VT, so P = VT^T S Um^T */
  PetscCall(PetscArraycpy(M, P, per));
  /* divide and conquer (dgesdd): several times faster than dgesvd for the singular vectors */
  dgesdd_("S", &m, &n, M, &m, Sv, Um, &m, VT, &kk, &wq, &lwork, iwork, &info);
  lwork = (PetscBLASInt)wq + 1;
  PetscCall(PetscMalloc1(lwork, &work));
  dgesdd_("S", &m, &n, M, &m, Sv, Um, &m, VT, &kk, work, &lwork, iwork, &info);
  PetscCheck(info == 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "LAPACK dgesdd of a %d x %d preconditioned gradient failed with info %d%s", (int)nd, (int)na, (int)info, info > 0 ? " (the bidiagonal divide and conquer did not converge)" : " (an illegal argument: an internal error)");
  for (PetscInt i = 0; i < nd; i++)
    for (PetscInt c = 0; c < r; c++) U[(int64_t)i * r + c] = VT[c + (int64_t)i * k] * Sv[c];
  for (PetscInt j = 0; j < na; j++)
    for (PetscInt c = 0; c < r; c++) V[(int64_t)j * r + c] = Um[j + (int64_t)c * na];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, na, r, 1.0, U, r, V, r, 0.0, P, na);
  PetscCall(PetscFree(work));
  PetscCall(PetscFree5(M, Sv, Um, VT, iwork));
  PetscFunctionReturn(0);
}


size_t InflEKFACBytes(InflModel model)
{
  PetscInt    L;
  InflLinear *lin;
  size_t      b = 0;

  InflModelGetLayers(model, &L, &lin);
  for (PetscInt l = 0; l < L; l++) {
    size_t na = (size_t)lin[l].din + 1, nd = (size_t)lin[l].dout;
    b += sizeof(double) * (2 * na * na + 2 * nd * nd + na + nd + nd * na);
  }
  return b;
}

/* Rows [0, B) of x (B, n) times Q (n, n), squared into out (B, n) in double: single-precision GEMMs of exactly
 * INFL_ROTATION_BLOCK rows each (the last block zero-padded), so that every row takes the same path through the
 * BLAS whatever the chunk it came in (its place in the block still changes its rounding under some kernels, within
 * the bound of docs/FORMATS.md).  Rows are scaled by 1/max|row| before the product and the square is scaled back in double (when scale is
 * set: pseudo-gradients of confidently classified examples are tiny, and denormal floats would both slow the GEMM
 * and lose their digits). */
static void rotate_squares_f32(PetscInt B, PetscInt n, const float x[], const float Q[], PetscBool scale, float buf[], float out32[], double out[])
{
  const PetscInt R = INFL_ROTATION_BLOCK;
  double         s2[INFL_ROTATION_BLOCK];

  for (PetscInt r0 = 0; r0 < B; r0 += R) {
    PetscInt nr = PetscMin(R, B - r0);
    for (PetscInt i = 0; i < nr; i++) {
      const float *xi = x + (int64_t)(r0 + i) * n;
      float       *bi = buf + (int64_t)i * n, m = 0;
      if (scale) for (PetscInt j = 0; j < n; j++) m = PetscMax(m, fabsf(xi[j]));
      if (m > 0) {
        const float inv = 1.0f / m;
        for (PetscInt j = 0; j < n; j++) bi[j] = xi[j] * inv;
        s2[i] = (double)m * (double)m;
      } else {
        memcpy(bi, xi, sizeof(float) * (size_t)n);
        s2[i] = 1;
      }
    }
    if (nr < R) memset(buf + (int64_t)nr * n, 0, sizeof(float) * (size_t)(R - nr) * (size_t)n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, n, n, 1.0f, buf, n, Q, n, 0.0f, out32, n);
    for (PetscInt i = 0; i < nr; i++) {
      const float *o  = out32 + (int64_t)i * n;
      double      *oi = out + (int64_t)(r0 + i) * n;
      for (PetscInt j = 0; j < n; j++) oi[j] = (double)o[j] * (double)o[j] * s2[i];
    }
  }
}

PetscErrorCode InflEKFACRotatedSquares(InflEKFAC ek, PetscInt l, const InflCapture *cap, double ta2[], double td2[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, nd = ly->dout, B = cap->T; /* rows */
  const double   *a, *ds;

  PetscFunctionBegin;
  EKFAC_CHECK_OWNED(ek, l);
  EKFAC_CHECK_WHOLE(ek, l);
  if (B == 0) PetscFunctionReturn(0);
  if (cap->prec == INFL_PREC_SINGLE) {
    size_t nmax = (size_t)PetscMax(na, nd);
    if (!ek->QAf) {
      PetscCall(PetscCalloc2(ek->L, &ek->QAf, ek->L, &ek->QSf));
    }
    if (!ek->QAf[l]) {
      PetscCall(PetscMalloc2((size_t)na * na, &ek->QAf[l], (size_t)nd * nd, &ek->QSf[l]));
      for (int64_t i = 0; i < (int64_t)na * na; i++) ek->QAf[l][i] = (float)ly->QA[i];
      for (int64_t i = 0; i < (int64_t)nd * nd; i++) ek->QSf[l][i] = (float)ly->QS[i];
    }
    if (2 * INFL_ROTATION_BLOCK * nmax > ek->nrot) {
      PetscCall(PetscFree(ek->rot));
      PetscCall(PetscMalloc1(2 * INFL_ROTATION_BLOCK * nmax, &ek->rot));
      ek->nrot = 2 * INFL_ROTATION_BLOCK * nmax;
    }
    rotate_squares_f32(B, na, cap->a32[l], ek->QAf[l], PETSC_FALSE, ek->rot, ek->rot + INFL_ROTATION_BLOCK * nmax, ta2);
    rotate_squares_f32(B, nd, cap->ds32[l], ek->QSf[l], PETSC_TRUE, ek->rot, ek->rot + INFL_ROTATION_BLOCK * nmax, td2);
    PetscFunctionReturn(0);
  }
  InflCaptureGetDouble(cap, l, NULL, NULL, &a, &ds);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, na, na, 1.0, a, na, ly->QA, na, 0.0, ta2, na);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, nd, nd, 1.0, ds, nd, ly->QS, nd, 0.0, td2, nd);
  for (int64_t i = 0; i < (int64_t)B * na; i++) ta2[i] *= ta2[i];
  for (int64_t i = 0; i < (int64_t)B * nd; i++) td2[i] *= td2[i];
  PetscFunctionReturn(0);
}

/* M (dout, din+1) = Q_S^T G_b Q_A for sequence b of the capture, G_b = sum over its rows of Ds_t a_t^T (the sequence's
 * gradient of layer l), in double: G_b = Ds_b^T A_b by one GEMM over the sequence's rows, then the two rotations.
 * a, ds: the capture's layer-l rows in double (InflCaptureGetDouble).  T (dout, din+1) scratch. */
/* G (dout, din+1) = Ds_b^T A_b, the gradient of layer l of sequence b of the capture (one GEMM over its rows), from
 * the capture's rows in double. */
static void sequence_gradient(const InflEKFACLayer *ly, const InflCapture *cap, PetscInt b, const double a[], const double ds[], double G[])
{
  PetscInt na = ly->din + 1, nd = ly->dout;
  int64_t  r0 = cap->offsets[b], nr = cap->offsets[b + 1] - cap->offsets[b];

  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, (int)nr, 1.0, ds + r0 * nd, nd, a + r0 * na, na, 0.0, G, na);
}

static void rotated_sequence_gradient(const InflEKFACLayer *ly, const InflCapture *cap, PetscInt b, const double a[], const double ds[], double T[], double M[])
{
  PetscInt na = ly->din + 1, nd = ly->dout;

  sequence_gradient(ly, cap, b, a, ds, M);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, nd, 1.0, ly->QS, nd, M, na, 0.0, T, na);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nd, na, na, 1.0, T, na, ly->QA, na, 0.0, M, na);
}

/* Scratch of the sequence paths: the capture's rows of layer l in double (when it is in single precision) and two
 * (dout, din+1) matrices.  Returns the double views of a and Ds. */
static PetscErrorCode sequence_work(InflEKFAC ek, PetscInt l, const InflCapture *cap, const double **a, const double **ds, double **T, double **M)
{
  PetscInt na = ek->layers[l].din + 1, nd = ek->layers[l].dout;
  size_t   rows = cap->prec == INFL_PREC_SINGLE ? (size_t)cap->T * (na + nd) : 0;
  double  *w = NULL;

  PetscFunctionBegin;
  PetscCall(ekfac_work(ek, rows + 2 * (size_t)nd * na, &w));
  *T = w + rows;
  *M = *T + (size_t)nd * na;
  InflCaptureGetDouble(cap, l, w, w + (size_t)cap->T * na, a, ds);
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACSelfInfluenceCapture(InflEKFAC ek, PetscInt l, const InflCapture *cap, double out[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, nd = ly->dout, n = cap->B;
  double         *ta, *td, *W, *X;

  PetscFunctionBegin;
  EKFAC_CHECK_OWNED(ek, l);
  EKFAC_CHECK_WHOLE(ek, l);
  if (n == 0) PetscFunctionReturn(0);
  if (cap->T != cap->B) { /* sequences: the rotated gradient of each sequence, weighted by the damped inverse */
    const double *a = NULL, *ds = NULL;
    double       *T = NULL, *M = NULL;
    PetscCall(sequence_work(ek, l, cap, &a, &ds, &T, &M));
    for (PetscInt b = 0; b < n; b++) {
      double v = 0;
      rotated_sequence_gradient(ly, cap, b, a, ds, T, M);
      for (int64_t i = 0; i < (int64_t)nd * na; i++) v += M[i] * M[i] / (ly->Lambda[i] + ly->damping);
      out[b] += v;
    }
    PetscFunctionReturn(0);
  }
  PetscCall(ekfac_work(ek, (size_t)n * (na + 2 * nd) + (size_t)nd * na, &ta));
  td = ta + (size_t)n * na;
  X  = td + (size_t)n * nd;
  W  = X + (size_t)n * nd;
  PetscCall(InflEKFACRotatedSquares(ek, l, cap, ta, td));
  for (int64_t i = 0; i < (int64_t)nd * na; i++) W[i] = 1.0 / (ly->Lambda[i] + ly->damping);
  /* X (n, nd) = ta2 W^T; out_k += sum_i td2[k,i] X[k,i] */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nd, na, 1.0, ta, na, W, na, 0.0, X, nd);
  for (PetscInt k = 0; k < n; k++) {
    double s = 0;
    for (PetscInt i = 0; i < nd; i++) s += td[(int64_t)k * nd + i] * X[(int64_t)k * nd + i];
    out[k] += s;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACAccumulateLambda(InflEKFAC ek, PetscInt l, const InflCapture *cap, double ta[], double td[], double Lsum[])
{
  InflEKFACLayer *ly = &ek->layers[l];
  PetscInt        na = ly->din + 1, nd = ly->dout;

  PetscFunctionBegin;
  EKFAC_CHECK_OWNED(ek, l);
  EKFAC_CHECK_WHOLE(ek, l);
  if (cap->B == 0) PetscFunctionReturn(0);
  if (cap->T == cap->B) { /* rank one: Lsum += (Q_S^T ds)^2 ((Q_A^T a)^2)^T summed over the examples, one GEMM */
    PetscCall(InflEKFACRotatedSquares(ek, l, cap, ta, td));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, cap->B, 1.0, td, nd, ta, na, 1.0, Lsum, na);
  } else { /* the rows in double in the caller's scratch (the fit's chunk-sized buffers), not in another copy */
    const double *a, *ds;
    double       *T, *M;
    PetscCall(ekfac_work(ek, 2 * (size_t)nd * na, &T));
    M = T + (size_t)nd * na;
    InflCaptureGetDouble(cap, l, ta, td, &a, &ds);
    for (PetscInt b = 0; b < cap->B; b++) {
      rotated_sequence_gradient(ly, cap, b, a, ds, T, M);
      for (int64_t i = 0; i < (int64_t)nd * na; i++) Lsum[i] += M[i] * M[i];
    }
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflEKFACPreconditionCapture(InflEKFAC ek, PetscInt l, const InflCapture *cap, double P[])
{
  InflEKFACLayer *ly  = &ek->layers[l];
  PetscInt        na  = ly->din + 1, nd = ly->dout;
  int64_t         per = (int64_t)nd * na;

  PetscFunctionBegin;
  EKFAC_CHECK_OWNED(ek, l);
  EKFAC_CHECK_WHOLE(ek, l);
  PetscCheck(cap->prec == INFL_PREC_DOUBLE, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "queries are preconditioned from a double-precision capture");
  if (cap->T == cap->B) PetscCall(InflEKFACPreconditionRankOne(ek, l, cap->B, cap->ds64[l], cap->a64[l], P));
  else
    for (PetscInt b = 0; b < cap->B; b++) { /* G_b = Ds_b^T A_b, then the EK-FAC inverse */
      sequence_gradient(ly, cap, b, cap->a64[l], cap->ds64[l], P + b * per);
      PetscCall(InflEKFACPrecondition(ek, l, P + b * per));
    }
  /* the scratch, one layer's weights in double, is not kept through the scoring pass that follows */
  PetscCall(PetscFree(ek->work));
  ek->nwork = 0;
  PetscFunctionReturn(0);
}

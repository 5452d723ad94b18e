/* The layer layout: layers assigned to groups of ranks, and the transfers between the ranks that capture examples
 * and the ranks that own layers.  See infl/layout.h. */
#include <infl/layout.h>
#include <infl/eigen.h>
#include <petscviewer.h>

struct _p_InflLayerLayout {
  MPI_Comm    comm, group, cross; /* group and cross are MPI_COMM_NULL until SetUp */
  PetscMPIInt size, rank;
  PetscInt    G_set;              /* InflLayerLayoutSetGroups / -layer_groups (0: default) */
  PetscBool   fixed;              /* G_set came from InflLayerLayoutSetGroups */
  PetscBool   split_set, split_fixed; /* -layer_split / InflLayerLayoutSetSplit */
  PetscBool   split_given;        /* split_set was given (option or call): -mem_limit's default does not choose it */
  PetscBool   split;              /* after SetUp: split_set and E > 1 */
  PetscInt    G, E, mygroup, myindex;
  PetscInt    L;
  int        *owner;              /* (L) */
  size_t     *bytes;              /* (L) factor bytes of each layer */
  double     *weights;            /* (L) dout (din+1): the layer's weights, for the stage's bytes per weight */
  PetscBool  *wide;               /* (L) dout > din+1 (InflLayerLayoutStage once_wide) */
  size_t      mine, max, total;
};

size_t InflLayerLayoutLayerBytes(PetscInt din, PetscInt dout)
{
  size_t na = (size_t)din + 1, nd = (size_t)dout;
  return sizeof(double) * (2 * na * na + 2 * nd * nd + na + nd + nd * na);
}

size_t InflLayerLayoutLayerBytesSplit(PetscInt din, PetscInt dout, PetscInt E)
{
  size_t na = (size_t)din + 1, nd = (size_t)dout;
  size_t ra = (size_t)InflBlacsLocalCount((int64_t)na, InflLayerLayoutSplitBlock(din + 1, E), 0, (int)E);
  size_t rs = (size_t)InflBlacsLocalCount((int64_t)nd, InflLayerLayoutSplitBlock(dout, E), 0, (int)E);
  return sizeof(double) * (2 * ra * na + 2 * rs * nd + na + nd + rs * na);
}

int InflLayerLayoutSplitBlock(PetscInt n, PetscInt E)
{
  int64_t b = E > 0 ? (n + E - 1) / E : n;
  return (int)PetscMax(1, PetscMin((int64_t)INFL_SPLIT_BLOCK, b));
}

PetscErrorCode InflLayerLayoutSetSplit(InflLayerLayout lay, PetscBool split)
{
  PetscFunctionBegin;
  lay->split_set   = split;
  lay->split_fixed = PETSC_TRUE;
  lay->split_given = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscBool InflLayerLayoutIsSplit(InflLayerLayout lay)
{
  return lay->split;
}

void InflAssignLargestFirst(PetscInt n, const double cost[], PetscInt G, int group_of[], double load[])
{
  for (PetscInt g = 0; g < G; g++) load[g] = 0;
  for (PetscInt k = 0; k < n; k++) group_of[k] = -1;
  for (PetscInt k = 0; k < n; k++) {
    PetscInt f = -1, best = 0;
    for (PetscInt i = 0; i < n; i++) /* the largest unassigned item, the first on ties */
      if (group_of[i] < 0 && (f < 0 || cost[i] > cost[f])) f = i;
    for (PetscInt g = 1; g < G; g++)
      if (load[g] < load[best]) best = g;
    group_of[f] = (int)best;
    load[best] += cost[f];
  }
}

PetscErrorCode InflLayerLayoutCreate(MPI_Comm comm, InflLayerLayout *lay)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(lay));
  (*lay)->comm  = comm;
  (*lay)->group = MPI_COMM_NULL;
  (*lay)->cross = MPI_COMM_NULL;
  PetscCallMPI(MPI_Comm_size(comm, &(*lay)->size));
  PetscCallMPI(MPI_Comm_rank(comm, &(*lay)->rank));
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutSetGroups(InflLayerLayout lay, PetscInt G)
{
  PetscFunctionBegin;
  PetscCheck(G >= 0, lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer groups %d must be >= 0 (0: the default)", (int)G);
  lay->G_set = G;
  lay->fixed = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutSetFromOptions(InflLayerLayout lay)
{
  PetscInt G = lay->G_set;

  PetscFunctionBegin;
  PetscOptionsBegin(lay->comm, NULL, "Layer layout options", "InflLayerLayout");
  if (!lay->split_fixed) PetscCall(PetscOptionsBool("-layer_split", "split each layer's factors and preconditioned queries over the ranks of its layer group (block-cyclic, as ScaLAPACK holds them) instead of a whole copy on each (default: false, or under -mem_limit true when no layout of whole layers fits)", "InflLayerLayoutSetUp", lay->split_set, &lay->split_set, &lay->split_given));
  if (!lay->fixed) PetscCall(PetscOptionsInt("-layer_groups", "groups of ranks the layers' factors and preconditioned queries are spread over (a divisor of the rank count; 1: every layer on every rank; 0: the fewest whose share fits -mem_limit, else 1)", "InflLayerLayoutSetUp", G, &G, NULL));
  PetscOptionsEnd();
  if (lay->fixed) PetscFunctionReturn(0);
  PetscCheck(G >= 0, lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "-layer_groups %d must be >= 0 (0: the default)", (int)G);
  PetscCheck(G == 0 || lay->size % G == 0, lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "-layer_groups %d does not divide the %d ranks: the groups have equal rank counts; give a divisor of %d", (int)G, (int)lay->size, (int)lay->size);
  lay->G_set = G;
  PetscFunctionReturn(0);
}

/* The layout that needs the least whatever the chunk, among those tried by InflLayerLayoutSetUp. */
typedef struct {
  double    total; /* < 0: none tried yet */
  PetscInt  G;
  PetscBool split;
} LayoutLeast;

/* A layout tried under -mem_limit: its -info line, and the least so far. */
static PetscErrorCode layout_tried(LayoutLeast *least, PetscInt G, PetscBool split, double total, double example, double other, double limit)
{
  PetscFunctionBegin;
  PetscCall(PetscInfo(NULL, "layer layout: %d group%s%s: %.1f MiB whatever the chunk (the libraries' 64, %.1f other) + %.3f MiB one example, -mem_limit %.1f MiB\n", (int)G, G > 1 ? "s" : "", split ? " (split)" : "", total / 1048576.0, other / 1048576.0, example / 1048576.0, limit / 1048576.0));
  if (least->total < 0 || total < least->total) *least = (LayoutLeast){total, G, split};
  PetscFunctionReturn(0);
}

/* Collective (the arguments agree over the ranks).  No layout fits: a named stage (InflLayerLayoutStage stage) whose
 * part held whatever the chunk plus per_example (the part of one example every layout counts: a capture and its
 * query scratch) does not fit in the layout that needs the least is refused (the layouts' further example terms are
 * bounds here, every layer counted as owned: the stage's chunk derivation, which counts them exactly, decides). */
static PetscErrorCode layout_refuse(InflLayerLayout lay, const InflLayerLayoutStage *st, double limit, PetscBool held, const LayoutLeast *least)
{
  char text[64] = "", how[64] = "";

  PetscFunctionBegin;
  if (!st->stage || least->total + st->per_example <= limit) PetscFunctionReturn(0);
  PetscCall(PetscOptionsGetString(NULL, NULL, "-mem_limit", text, sizeof(text), NULL));
  if (least->split) PetscCall(PetscSNPrintf(how, sizeof(how), ", each layer split over %d ranks", (int)(lay->size / least->G)));
  SETERRQ(lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "-mem_limit %s (%.0f MiB per rank) cannot hold the %.0f MiB that %s keeps whatever the chunk size%s plus one example (%.3f MiB) in the layer layout that needs the least (%d layer group%s%s); raise -mem_limit or use more ranks", text, limit / 1048576.0, least->total / 1048576.0, st->stage, held ? " (with what the run keeps for its later steps)" : "", st->per_example / 1048576.0, (int)least->G, least->G > 1 ? "s" : "", how);
}

/* The layers assigned to G groups by the bytes the stage holds for each, copies x its factor bytes plus per_weight
 * bytes per weight (group_of filled); returns the largest group's bytes including the stage's `once` bytes of the
 * group's layer that needs the most (-1 if out of memory). */
/* The stage's bytes of one example of its chunk at G groups of E ranks, split or not. */
static double layout_example(const InflLayerLayoutStage *st, PetscInt G, PetscInt E, PetscBool split)
{
  double g = (double)PetscMax(G, 1), e = (double)E;
  return st->per_example + (G > 1 ? g * st->per_example_group : 0) + (split && E > 1 ? e * g * (st->per_example_split + e * st->per_example_split_sq) : 0);
}

static double layout_assign(InflLayerLayout lay, PetscInt G, const InflLayerLayoutStage *st, int group_of[])
{
  double  *cost, *load, *once, mx = 0;
  PetscInt E = lay->size / G, items = (st->items + E - 1) / E; /* this rank's block of the items */

  if (PetscMalloc3(lay->L, &cost, G, &load, G, &once)) return -1;
  for (PetscInt l = 0; l < lay->L; l++) cost[l] = st->copies * (double)lay->bytes[l] + st->per_weight * lay->weights[l];
  InflAssignLargestFirst(lay->L, cost, G, group_of, load);
  for (PetscInt g = 0; g < G; g++) once[g] = 0;
  for (PetscInt l = 0; l < lay->L; l++)
    once[group_of[l]] = PetscMax(once[group_of[l]], lay->weights[l] * (st->once_weight + st->once_per_item * (double)items + (lay->wide[l] ? st->once_wide : 0)));
  for (PetscInt g = 0; g < G; g++) mx = PetscMax(mx, load[g] + once[g]);
  if (PetscFree3(cost, load, once)) return -1;
  return mx;
}

PetscErrorCode InflLayerLayoutSetUp(InflLayerLayout lay, PetscInt L, const PetscInt din[], const PetscInt dout[], const InflLayerLayoutStage *stage)
{
  PetscInt             G  = lay->G_set;
  InflLayerLayoutStage st = {1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL};

  PetscFunctionBegin;
  PetscCheck(!lay->owner, lay->comm, PETSC_ERR_ARG_WRONGSTATE, "the layer layout is already set up");
  PetscCheck(G == 0 || lay->size % G == 0, lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer groups %d does not divide the %d ranks; give a divisor of %d", (int)G, (int)lay->size, (int)lay->size);
  lay->L = L;
  if (stage) st = *stage;
  PetscCheck(st.copies >= 1 && st.per_weight >= 0 && st.once_weight >= 0 && st.once_per_item >= 0 && st.once_wide >= 0 && st.items >= 0 && st.per_example >= 0 && st.per_example_group >= 0 && st.per_example_split >= 0 && st.per_example_split_sq >= 0, lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer layout: copies %g must be >= 1, and the bytes per weight %g, %g, %g and the items %d >= 0", st.copies, st.per_weight, st.once_per_item, st.once_wide, (int)st.items);
  PetscCall(PetscMalloc4(PetscMax(L, 1), &lay->owner, PetscMax(L, 1), &lay->bytes, PetscMax(L, 1), &lay->weights, PetscMax(L, 1), &lay->wide));
  lay->total = 0;
  for (PetscInt l = 0; l < L; l++) {
    PetscCheck(din[l] >= 0 && dout[l] >= 0, lay->comm, PETSC_ERR_ARG_OUTOFRANGE, "layer %d has sizes din %d, dout %d", (int)l, (int)din[l], (int)dout[l]);
    lay->bytes[l]   = InflLayerLayoutLayerBytes(din[l], dout[l]);
    lay->weights[l] = (double)dout[l] * (double)(din[l] + 1);
    lay->wide[l]    = dout[l] > din[l] + 1 ? PETSC_TRUE : PETSC_FALSE;
    lay->total += lay->bytes[l];
  }
  if (G == 0) { /* default: 1, or under -mem_limit the fewest groups whose share fits */
    double    limit;
    PetscBool set;
    PetscCall(InflGetMemLimit(lay->comm, &limit, &set));
    G = 1;
    if (set) {
      const double fixed = 64.0 * 1024 * 1024; /* the libraries' margin of InflChunkFromMemLimit */
      double       o[2]  = {(double)st.other + (double)InflMemLimitGetHeld(), (double)InflMemLimitGetHeld()};
      LayoutLeast  least = {-1, 1, PETSC_FALSE};
      PetscBool    held;
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, o, 2, MPI_DOUBLE, MPI_MAX, lay->comm)); /* with what the caller holds beside (InflMemLimitSetHeld) */
      held = o[1] > 0 ? PETSC_TRUE : PETSC_FALSE;
      for (G = 1; G <= lay->size; G++) {
        if (lay->size % G) continue;
        double    need = layout_assign(lay, G, &st, lay->owner), total;
        PetscBool s    = lay->split_set && lay->size > G ? PETSC_TRUE : PETSC_FALSE;
        double    ex   = layout_example(&st, G, lay->size / G, s);
        PetscCheck(need >= 0, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory assigning layers to groups");
        total = fixed + o[0] + (s ? need / (double)(lay->size / G) : need); /* held whatever the chunk */
        PetscCall(layout_tried(&least, G, s, total, ex, o[0], limit));
        if (total + ex <= limit) break;
      }
      if (G > lay->size && !lay->split_given) { /* no whole layers fit: split them, in the most groups that fit (the
                                                 * fewest ranks per layer: the least communication), else in one */
        for (G = lay->size / 2; G >= 1; G--) {
          double need, total, ex;
          if (lay->size % G) continue;
          need = layout_assign(lay, G, &st, lay->owner);
          PetscCheck(need >= 0, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory assigning layers to groups");
          total = fixed + o[0] + need / (double)(lay->size / G); /* a split layer: about 1/E per rank */
          ex    = layout_example(&st, G, lay->size / G, PETSC_TRUE);
          PetscCall(layout_tried(&least, G, PETSC_TRUE, total, ex, o[0], limit));
          if (total + ex <= limit) break;
        }
        if (G < 1) { /* nothing fits, split or not */
          PetscCall(layout_refuse(lay, &st, limit, held, &least));
          G = 1;
        }
        if (lay->size > 1) lay->split_set = PETSC_TRUE;
      }
      if (G > lay->size) { /* nothing fits with -layer_split given: the most groups; the stage's chunk derivation says why */
        PetscCall(layout_refuse(lay, &st, limit, held, &least));
        G = lay->size;
      }
    }
  }
  lay->G       = G;
  lay->E       = lay->size / G;
  lay->mygroup = lay->rank / lay->E;
  lay->myindex = lay->rank % lay->E;
  PetscCheck(layout_assign(lay, G, &st, lay->owner) >= 0, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory assigning layers to groups");
  lay->split = lay->split_set && lay->E > 1 ? PETSC_TRUE : PETSC_FALSE;
  lay->mine = 0;
  lay->max  = 0;
  for (PetscInt g = 0; g < G; g++) { /* the factor bytes of each group (one copy), per rank */
    size_t b = 0;
    for (PetscInt l = 0; l < L; l++)
      if (lay->owner[l] == g) b += lay->split ? InflLayerLayoutLayerBytesSplit(din[l], dout[l], lay->E) : lay->bytes[l];
    lay->max = PetscMax(lay->max, b);
    if (g == lay->mygroup) lay->mine = b;
  }
  if (G == 1) {
    PetscCallMPI(MPI_Comm_dup(lay->comm, &lay->group));
  } else PetscCallMPI(MPI_Comm_split(lay->comm, (int)lay->mygroup, (int)lay->myindex, &lay->group));
  PetscCallMPI(MPI_Comm_split(lay->comm, (int)lay->myindex, (int)lay->mygroup, &lay->cross));
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutGetGroups(InflLayerLayout lay, PetscInt *G, PetscInt *E, PetscInt *group, PetscInt *index)
{
  PetscFunctionBegin;
  if (G) *G = lay->G;
  if (E) *E = lay->E;
  if (group) *group = lay->mygroup;
  if (index) *index = lay->myindex;
  PetscFunctionReturn(0);
}

PetscBool InflLayerLayoutOwns(InflLayerLayout lay, PetscInt l)
{
  return lay->owner[l] == lay->mygroup ? PETSC_TRUE : PETSC_FALSE;
}

PetscInt InflLayerLayoutOwner(InflLayerLayout lay, PetscInt l)
{
  return lay->owner[l];
}

PetscErrorCode InflLayerLayoutGetComms(InflLayerLayout lay, MPI_Comm *comm, MPI_Comm *group, MPI_Comm *cross)
{
  PetscFunctionBegin;
  if (comm) *comm = lay->comm;
  if (group) *group = lay->group;
  if (cross) *cross = lay->cross;
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutGetBytes(InflLayerLayout lay, size_t *mine, size_t *max, size_t *total)
{
  PetscFunctionBegin;
  if (mine) *mine = lay->mine;
  if (max) *max = lay->max;
  if (total) *total = lay->total;
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutView(InflLayerLayout lay, PetscViewer viewer)
{
  PetscFunctionBegin;
  if (!viewer) PetscCall(PetscViewerASCIIGetStdout(lay->comm, &viewer));
  PetscCall(PetscViewerASCIIPrintf(viewer, "layer layout: %d group%s of %d rank%s%s; factor bytes per rank %.1f MiB (largest group share%s) of %.1f MiB in all\n", (int)lay->G, lay->G > 1 ? "s" : "", (int)lay->E, lay->E > 1 ? "s" : "", lay->split ? ", layers split inside groups" : "", (double)lay->max / 1048576.0, lay->split ? " per rank" : "", (double)lay->total / 1048576.0));
  if (lay->G > 1)
    for (PetscInt g = 0; g < lay->G; g++) {
      char     text[1024] = "";
      size_t   n = 0, b = 0;
      for (PetscInt l = 0; l < lay->L; l++)
        if (lay->owner[l] == g) {
          b += lay->bytes[l];
          if (n + 16 < sizeof(text)) n += (size_t)snprintf(text + n, sizeof(text) - n, " %d", (int)l);
        }
      PetscCall(PetscViewerASCIIPrintf(viewer, "  group %d (ranks %d-%d): layers%s (%.1f MiB)\n", (int)g, (int)(g * lay->E), (int)((g + 1) * lay->E - 1), n ? text : " none", (double)b / 1048576.0));
    }
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutDestroy(InflLayerLayout *lay)
{
  PetscFunctionBegin;
  if (!*lay) PetscFunctionReturn(0);
  if ((*lay)->group != MPI_COMM_NULL) PetscCallMPI(MPI_Comm_free(&(*lay)->group));
  if ((*lay)->cross != MPI_COMM_NULL) PetscCallMPI(MPI_Comm_free(&(*lay)->cross));
  PetscCall(PetscFree4((*lay)->owner, (*lay)->bytes, (*lay)->weights, (*lay)->wide));
  PetscCall(PetscFree(*lay));
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutCaptureCreate(InflLayerLayout lay, const InflCapture *cap, InflCapture **recv)
{
  PetscInt   mx[2] = {cap->Bmax, cap->Tmax};
  PetscBool *owned;

  PetscFunctionBegin;
  /* the captures of the cross ranks may be of different capacities (chunks derived from their own memory) */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, mx, 2, MPIU_INT, MPI_MAX, lay->cross));
  PetscCall(PetscMalloc1(cap->L, &owned));
  for (PetscInt l = 0; l < cap->L; l++) owned[l] = InflLayerLayoutOwns(lay, l);
  PetscCall(InflCaptureAllocate(cap->prec, cap->L, cap->din, cap->dout, owned, mx[0] * (PetscInt)lay->G, mx[1] * (PetscInt)lay->G, recv));
  PetscCall(PetscFree(owned));
  PetscFunctionReturn(0);
}

/* Post the point-to-point transfer of n elements of `type` at buf, in pieces of at most 2^30 (tag base + piece). */
static PetscErrorCode post_pieces(PetscBool send, void *buf, int64_t n, MPI_Datatype type, int peer, int tag, MPI_Comm comm, MPI_Request req[], int *nreq)
{
  const int64_t piece = (int64_t)1 << 30;
  int           tsize;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Type_size(type, &tsize));
  for (int64_t off = 0, k = 0; off < n; off += piece, k++) {
    int c = (int)PetscMin(piece, n - off);
    if (send) PetscCallMPI(MPI_Isend((char *)buf + off * tsize, c, type, peer, tag + (int)k, comm, &req[(*nreq)++]));
    else PetscCallMPI(MPI_Irecv((char *)buf + off * tsize, c, type, peer, tag + (int)k, comm, &req[(*nreq)++]));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutGatherCapture(InflLayerLayout lay, const InflCapture *cap, InflCapture *recv, PetscInt bstart[])
{
  PetscInt     G = lay->G, *bt, *rstart;
  PetscMPIInt  me;
  MPI_Datatype type = cap->prec == INFL_PREC_DOUBLE ? MPI_DOUBLE : MPI_FLOAT;
  size_t       es   = cap->prec == INFL_PREC_DOUBLE ? sizeof(double) : sizeof(float);
  MPI_Request *req;
  int          nreq = 0, maxreq = 0;
  int64_t      maxT = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(lay->cross, &me));
  PetscCall(PetscMalloc2(2 * G, &bt, G + 1, &rstart));
  {
    PetscInt mine[2] = {cap->B, cap->T};
    PetscCallMPI(MPI_Allgather(mine, 2, MPIU_INT, bt, 2, MPIU_INT, lay->cross));
  }
  recv->B = recv->T = 0;
  rstart[0] = 0;
  for (PetscInt s = 0; s < G; s++) {
    if (bstart) bstart[s] = recv->B;
    recv->B += bt[2 * s];
    recv->T += bt[2 * s + 1];
    rstart[s + 1] = recv->T;
    maxT = PetscMax(maxT, bt[2 * s + 1]);
  }
  if (bstart) bstart[G] = recv->B;
  PetscCheck(recv->B <= recv->Bmax && recv->T <= recv->Tmax, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "gathered capture of %d sequences, %d rows exceeds its capacity %d, %d", (int)recv->B, (int)recv->T, (int)recv->Bmax, (int)recv->Tmax);
  { /* the sequences' offsets (and losses): small, every rank of the cross communicator gets all */
    PetscMPIInt *counts, *displs;
    int64_t     *off;
    PetscCall(PetscMalloc3(G, &counts, G, &displs, PetscMax(recv->B, 1), &off));
    for (PetscInt s = 0; s < G; s++) {
      counts[s] = (PetscMPIInt)bt[2 * s];
      displs[s] = (PetscMPIInt)(bstart ? bstart[s] : 0);
    }
    if (!bstart) {
      displs[0] = 0;
      for (PetscInt s = 1; s < G; s++) displs[s] = displs[s - 1] + counts[s - 1];
    }
    /* offsets[b+1] of each source's sequences, shifted by the rows before it */
    PetscCallMPI(MPI_Allgatherv(cap->offsets + 1, (int)cap->B, MPI_INT64_T, off, counts, displs, MPI_INT64_T, lay->cross));
    recv->offsets[0] = 0;
    for (PetscInt s = 0; s < G; s++)
      for (PetscInt b = 0; b < counts[s]; b++) recv->offsets[displs[s] + b + 1] = rstart[s] + off[displs[s] + b];
    PetscCallMPI(MPI_Allgatherv(cap->loss, (int)cap->B, MPI_DOUBLE, recv->loss, counts, displs, MPI_DOUBLE, lay->cross));
    PetscCall(PetscFree3(counts, displs, off));
  }
  /* the rows: each layer's to its owner (cross rank owner(l)) */
  {
    int64_t pieces = 0;
    for (PetscInt l = 0; l < cap->L; l++) pieces += 2 * (1 + ((int64_t)maxT * (PetscMax(cap->din[l] + 1, cap->dout[l])) >> 30));
    maxreq = (int)(pieces * (G + 1));
  }
  PetscCall(PetscMalloc1(PetscMax(maxreq, 1), &req));
  for (PetscInt l = 0; l < cap->L; l++) {
    int     o    = lay->owner[l];
    int64_t n[2] = {(int64_t)cap->din[l] + 1, cap->dout[l]};
    for (int w = 0; w < 2; w++) {
      void *src = cap->prec == INFL_PREC_DOUBLE ? (void *)(w ? cap->ds64[l] : cap->a64[l]) : (void *)(w ? cap->ds32[l] : cap->a32[l]);
      void *dst = recv->prec == INFL_PREC_DOUBLE ? (void *)(w ? recv->ds64[l] : recv->a64[l]) : (void *)(w ? recv->ds32[l] : recv->a32[l]);
      int   tag = (int)(((int64_t)l * 2 + w) * 64) % (1 << 20);
      if (o == me) {
        for (PetscInt s = 0; s < G; s++) {
          if (s == me) {
            if (cap->T) PetscCall(PetscMemcpy((char *)dst + (size_t)rstart[s] * n[w] * es, src, (size_t)cap->T * n[w] * es));
          } else PetscCall(post_pieces(PETSC_FALSE, (char *)dst + (size_t)rstart[s] * n[w] * es, (int64_t)bt[2 * s + 1] * n[w], type, (int)s, tag, lay->cross, req, &nreq));
        }
      } else PetscCall(post_pieces(PETSC_TRUE, src, (int64_t)cap->T * n[w], type, o, tag, lay->cross, req, &nreq));
    }
  }
  PetscCallMPI(MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE));
  PetscCall(PetscFree(req));
  PetscCall(PetscFree2(bt, rstart));
  PetscFunctionReturn(0);
}

/* The columns of the nsrc sources of comm (source s: columns bstart[s] .. bstart[s+1] of part) summed onto them. */
static PetscErrorCode reduce_to_sources(MPI_Comm comm, PetscInt nsrc, PetscInt nrow, int64_t ldp, const double part[], const PetscInt bstart[], PetscInt B, double out[])
{
  PetscMPIInt me;
  double     *blk;
  int64_t     maxb = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &me));
  for (PetscInt s = 0; s < nsrc; s++) maxb = PetscMax(maxb, bstart[s + 1] - bstart[s]);
  PetscCall(PetscMalloc1((size_t)PetscMax(nrow * maxb, 1), &blk));
  for (PetscInt s = 0; s < nsrc; s++) { /* source s's columns, packed (nrow, B_s), summed onto s */
    int64_t nb = bstart[s + 1] - bstart[s];
    for (PetscInt i = 0; i < nrow; i++) PetscCall(PetscArraycpy(blk + i * nb, part + i * ldp + bstart[s], nb));
    PetscCall(InflReduceSum(blk, out, (int64_t)nrow * nb, MPI_DOUBLE, (int)s, comm));
  }
  PetscAssert(bstart[me + 1] - bstart[me] == B, PETSC_COMM_SELF, PETSC_ERR_PLIB, "source block %d != capture %d", (int)(bstart[me + 1] - bstart[me]), (int)B);
  PetscCall(PetscFree(blk));
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutReduceToSources(InflLayerLayout lay, PetscInt nrow, int64_t ldp, const double part[], const PetscInt bstart[], PetscInt B, double out[])
{
  PetscFunctionBegin;
  PetscCall(reduce_to_sources(lay->cross, lay->G, nrow, ldp, part, bstart, B, out));
  PetscFunctionReturn(0);
}

PetscErrorCode InflLayerLayoutGroupReduceToSources(InflLayerLayout lay, PetscInt nrow, int64_t ldp, const double part[], const PetscInt bstart[], PetscInt B, double out[])
{
  PetscFunctionBegin;
  PetscCall(reduce_to_sources(lay->group, lay->E, nrow, ldp, part, bstart, B, out));
  PetscFunctionReturn(0);
}

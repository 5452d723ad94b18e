/* infl/layout.h -- the layer layout: which ranks hold each linear layer's factors and preconditioned queries.
 *
 * EK-FAC keeps, per linear layer l, the factors A (din+1)^2, S dout^2, their eigenbases, and Lambda (dout, din+1)
 * (infl/ekfac.h); scoring keeps each query's preconditioned gradient P_l(q) (dout, din+1) (infl/score.h).  Held on
 * every rank, they bound the model size by one rank's memory (GPT-2 large: about 46 GB of factors in double).  A
 * layout, like PETSc's PetscLayout for the rows of a vector, assigns the layers to G groups of ranks:
 *
 *   P ranks form G groups of E = P / G consecutive ranks (G must divide P): group g holds ranks [g E, (g+1) E) and
 *   rank r has group r / E and index r % E in it.  Each layer is owned by one group; every rank of the group holds
 *   the layer's factors and its preconditioned queries (replicated inside the group), the other ranks hold none.
 *   The layers go largest first to the group holding the fewest bytes so far (bytes per layer
 *   8 (2 (din+1)^2 + 2 dout^2 + din+1 + dout + dout (din+1)), ties by layer index), the greedy rule the eigensolver
 *   uses for its factor groups (infl/eigen.h), so the largest group share is close to total / G when the layers
 *   are many.
 *
 * Training examples stay sharded over all P ranks as before (InflDataGetShard).  The per-example work of a layer
 * reaches its owners through two communicators: `group` (the E ranks of this rank's group) and `cross` (the G ranks
 * with this rank's index, one per group, cross rank = group).  InflLayerLayoutGatherCapture sends each layer's
 * captured rows of every rank to the rank of the owning group with the same index (the cross rank owner(l)), so each
 * owner receives the rows of G shards and the E ranks of a group together see every training example once; partial
 * results of the owners (scores, self-influence terms) go back to the ranks that captured the examples by
 * InflLayerLayoutReduceToSources, summed over the groups.  Sums over examples of an owned layer (A, S, Lambda) are
 * completed by a reduction over `group`.
 *
 * Split layers (-layer_split true): inside a group of E > 1 ranks each owned layer is further split over the E ranks
 * as on a 1 x E ScaLAPACK grid: the din+1 indices of A and the dout indices of S in blocks of
 * InflLayerLayoutSplitBlock(n, E) dealt round-robin (rank index e holds blocks e, e+E, ...), and rank e holds the rows
 * of A, S and Lambda and the eigenvectors of those indices (infl/ekfac.h, InflEKFACLayer).  Factor bytes per rank are
 * then about the group's share / E.  Without -layer_split every rank of the group holds the layer's whole factors.
 *
 * G = 1 is the replicated layout: every rank owns every layer, `group` is the whole communicator, nothing is
 * gathered and every stage computes exactly as without a layout.  G = P puts each layer on one rank.
 *
 * Options: -layer_groups G (read by InflLayerLayoutSetFromOptions; 0 or absent: the default), -layer_split
 * true|false.  Default: 1 group of whole layers without -mem_limit; with -mem_limit the smallest divisor G of P whose
 * largest group share of what the stage holds per layer (the factors times the copies it keeps, plus its bytes per
 * weight: the preconditioned queries of infl score; InflLayerLayoutSetUp), plus the stage's other resident bytes fits
 * the limit (with -layer_split true: the share divided by E).  If no G fits whole layers and -layer_split is not
 * given, the layers are split: the largest G whose share / E fits (else G = 1, every layer over all P ranks).  If
 * nothing fits, the largest G, and the stage's chunk derivation then names the shortfall; but a stage that gives its
 * name (InflLayerLayoutStage stage: infl score) is refused at once, before the factors are read and the queries
 * preconditioned, when even the layout that holds the least whatever the chunk does not fit.
 *
 * Errors: -layer_groups < 0, or not a divisor of the rank count (names both and the divisors); a layer with
 * negative sizes.
 */
#ifndef INFL_LAYOUT_H
#define INFL_LAYOUT_H

#include <infl/model.h>

typedef struct _p_InflLayerLayout *InflLayerLayout;

/* Collective.  An empty layout on comm (G not chosen yet). */
PetscErrorCode InflLayerLayoutCreate(MPI_Comm comm, InflLayerLayout *lay);
/* Not collective.  G >= 1 groups, or 0 for the default (above).  Overrides -layer_groups. */
PetscErrorCode InflLayerLayoutSetGroups(InflLayerLayout lay, PetscInt G);
/* Collective.  Reads -layer_groups unless InflLayerLayoutSetGroups fixed G. */
PetscErrorCode InflLayerLayoutSetFromOptions(InflLayerLayout lay);
/* What a stage holds per rank at its peak, for the default G under -mem_limit (InflLayerLayoutSetUp): copies x the
 * factor bytes of its layers, per_weight bytes per weight dout (din+1) of each of its layers (infl score: the
 * preconditioned queries), for one of its layers at a time (the one that needs the most) once_weight bytes per
 * weight (scratch) plus once_per_item bytes per weight per item of this rank's block of `items` split over the E ranks of its group (ceil(items / E): the queries a
 * rank preconditions) plus once_wide bytes per weight if the layer is wide (dout > din+1: infl score transposes its
 * queries), and `other` bytes whatever the layers (data shard, model, one chunk). */
typedef struct {
  double   copies;        /* >= 1 */
  double   per_weight, once_weight, once_per_item, once_wide; /* >= 0 */
  PetscInt items;         /* >= 0 */
  size_t   other;
  /* one example of the stage's chunk (the least a chunk holds), >= 0: per_example bytes, plus per_example_group x G
   * with G > 1 groups, plus with split layers per_example_split x E max(G, 1) + per_example_split_sq x E^2 max(G, 1)
   * (infl score: the group's gathered and rotated rows, InflScorerGetQueryBytes) */
  double   per_example, per_example_group, per_example_split, per_example_split_sq;
  /* the stage's name ("infl score"), or NULL: when no layout fits -mem_limit and even the least any layout holds
   * whatever the chunk does not, a named stage is refused at once (before the factors are read); otherwise it gets the
   * most groups and its chunk derivation names the shortfall */
  const char *stage;
} InflLayerLayoutStage;

/* Collective.  The L layers' sizes (the same on every rank) and what the stage holds (NULL: the factors once).  The
 * layers go to the groups by copies x factor bytes + per_weight x weights (largest first, as above); under
 * -mem_limit without -layer_groups G is the smallest divisor of the ranks whose largest group need (with `once`)
 * fits beside `other` and the libraries' 64 MiB.  Chooses G, assigns the layers and builds the communicators. */
PetscErrorCode InflLayerLayoutSetUp(InflLayerLayout lay, PetscInt L, const PetscInt din[], const PetscInt dout[], const InflLayerLayoutStage *stage);
/* Not collective.  Split the layers inside groups of more than one rank (overrides -layer_split). */
PetscErrorCode InflLayerLayoutSetSplit(InflLayerLayout lay, PetscBool split);
/* After SetUp: are the owned layers split over the E > 1 ranks of their group? */
PetscBool      InflLayerLayoutIsSplit(InflLayerLayout lay);
/* Not collective.  Block size of the split of n indices over E ranks: min(INFL_SPLIT_BLOCK, ceil(n / E)), >= 1, so
 * that every rank holds indices when n >= E. */
#define INFL_SPLIT_BLOCK 64
int InflLayerLayoutSplitBlock(PetscInt n, PetscInt E);
/* G groups, E ranks per group, this rank's group and its index in the group. */
PetscErrorCode InflLayerLayoutGetGroups(InflLayerLayout lay, PetscInt *G, PetscInt *E, PetscInt *group, PetscInt *index);
/* Does this rank hold layer l? */
PetscBool      InflLayerLayoutOwns(InflLayerLayout lay, PetscInt l);
/* The group owning layer l (its cross rank in every cross communicator). */
PetscInt       InflLayerLayoutOwner(InflLayerLayout lay, PetscInt l);
/* The communicators: the whole one, this rank's group, this rank's cross communicator (owned by the layout). */
PetscErrorCode InflLayerLayoutGetComms(InflLayerLayout lay, MPI_Comm *comm, MPI_Comm *group, MPI_Comm *cross);
/* Factor bytes held by this rank, the largest over the ranks, and the total over the layers (one copy). */
PetscErrorCode InflLayerLayoutGetBytes(InflLayerLayout lay, size_t *mine, size_t *max, size_t *total);
/* Collective.  Prints the groups, the layers of each and the factor bytes per rank. */
PetscErrorCode InflLayerLayoutView(InflLayerLayout lay, PetscViewer viewer);
PetscErrorCode InflLayerLayoutDestroy(InflLayerLayout *lay);

/* Not collective.  Bytes held per layer (the factors of infl/ekfac.h in double). */
size_t InflLayerLayoutLayerBytes(PetscInt din, PetscInt dout);
/* Not collective.  The same for the rank holding the most of a layer split over E ranks (the eigenvalues whole). */
size_t InflLayerLayoutLayerBytesSplit(PetscInt din, PetscInt dout, PetscInt E);
/* Not collective.  Greedy assignment of n items of cost[] to G groups: the largest unassigned item (the first on
 * ties) to the group of least load (the first on ties); group_of (n) out, load (G) out.  Used by the layout and by
 * the eigensolver's factor groups. */
void InflAssignLargestFirst(PetscInt n, const double cost[], PetscInt G, int group_of[], double load[]);

/* Collective.  recv <- the rows of the layers this rank owns, of the captures of the G ranks of its cross
 * communicator (cross rank order; this rank's own capture among them), with their sequences' offsets: recv->B and
 * recv->T are the sums over those captures.  cap is this rank's capture, empty (B = T = 0) when it captured nothing
 * this round.  recv comes from InflLayerLayoutCaptureCreate (capacity G x cap's); its arrays of layers not owned stay
 * NULL.  Transfers are point to point in pieces of at most 2^30 elements.  With G = 1 recv is a copy of cap's rows;
 * callers use cap directly instead.  bstart (G+1), may be NULL: the first sequence of each cross rank's capture in
 * recv. */
PetscErrorCode InflLayerLayoutGatherCapture(InflLayerLayout lay, const InflCapture *cap, InflCapture *recv, PetscInt bstart[]);
/* Collective over the cross communicator.  A capture for InflLayerLayoutGatherCapture: G x the largest capacity of
 * the cross ranks' captures, arrays only for owned layers. */
PetscErrorCode InflLayerLayoutCaptureCreate(InflLayerLayout lay, const InflCapture *cap, InflCapture **recv);
/* Collective over the cross communicator.  part (nrow, ldp) holds this rank's partial results of the sequences of
 * recv (columns bstart[s] .. bstart[s+1] for cross rank s, InflLayerLayoutGatherCapture); on return out (nrow, B)
 * (B = this rank's capture's sequences) holds the sum over the G ranks of the cross communicator of their columns
 * for this rank's sequences.  Reductions chunked below 2^31 elements. */
PetscErrorCode InflLayerLayoutReduceToSources(InflLayerLayout lay, PetscInt nrow, int64_t ldp, const double part[], const PetscInt bstart[], PetscInt B, double out[]);
/* Collective over the group communicator.  The same within a layer group of split layers: part (nrow, ldp) holds this
 * rank's partial results of the group's sequences (columns bstart[e] .. bstart[e+1] for group rank e, e.g.
 * InflEKFACGroupRows bstart); out (nrow, B) <- the sum over the E ranks of the group of their columns of this rank's
 * B sequences. */
PetscErrorCode InflLayerLayoutGroupReduceToSources(InflLayerLayout lay, PetscInt nrow, int64_t ldp, const double part[], const PetscInt bstart[], PetscInt B, double out[]);

#endif

/* infl/project.h -- random projections of per-example (per-sequence) gradients, from the capture.
 *
 * A projector maps the gradient of a sequence's summed loss, g = concat over captured linear layers l of
 * DW_l = sum_t Ds_t a_t^T (dout_l, din_l+1) flattened row-major (P = sum_l dout_l (din_l+1) numbers), to k numbers.
 * It sees only InflCapture (infl/model.h), so the MLP (one row per example) and GPT-2 (one row per token) take the
 * same code.  Kinds:
 *   kronecker   (LoGra; Choe et al. 2024, "What is your data worth to GPT?"): per layer P_in (k_in, din+1) and
 *               P_out (k_out, dout) with N(0, 1) entries scaled 1/sqrt(k_in) and 1/sqrt(k_out); the projected
 *               layer gradient is P_out DW P_in^T = sum_t (P_out Ds_t)(P_in a_t)^T (k_out, k_in), computed as two
 *               GEMMs on the capture rows ((T, din+1) x (din+1, k_in) and (T, dout) x (dout, k_out)) and one
 *               product per sequence, never forming DW.  k_in = min(-project_in, din+1), k_out = min(-project_out,
 *               dout); the output is the layers' (k_out, k_in) blocks row-major, concatenated:
 *               k = sum_l k_out_l k_in_l.
 *   gaussian,   (TRAK; Park et al. 2023): R g with R (k, P), N(0, 1) or +-1 entries scaled 1/sqrt(k),
 *   rademacher  k = -project_dim.  R is generated block by block (a block of whole rows of one layer's DW at a time,
 *               about 16 MiB of R) and never stored whole; g is formed for the block only (Ds^T A of the block's rows).
 *               Each block of R is generated once per call, so a call on B sequences costs k P generated numbers plus
 *               2 B k P flops: call it on chunks of hundreds of sequences.
 * Entries are a function of (seed, matrix, row, column) only, so projections do not depend on blocking, chunking or
 * the rank count:  with c1 = INFL_STREAM_PROJECTION + 256 id (id 0: R; 2 l + 1: P_in of layer l; 2 l + 2: P_out of
 * layer l) and c0 = row * columns + column (row-major index in the matrix),
 *   Gaussian entry   = InflNormal(seed, c0, c1) / sqrt(rows),
 *   Rademacher entry = (word 0 of InflPhilox(seed, c0, c1) odd ? -1 : +1) / sqrt(rows).
 * Inner products are preserved in expectation: E[R^T R] = I (each kind), so E<R g, R h> = <g, h>.
 * Arithmetic in double (captures in single precision are converted); the outputs are double.
 *
 * Options (prefix -project_): -project_kind kronecker|gaussian|rademacher (kronecker), -project_in K (16),
 * -project_out K (16), -project_dim K (1024, gaussian and rademacher), -project_seed S (0), -project_chunk B
 * (sequences per chunk of a store build, 256).
 */
#ifndef INFL_PROJECT_H
#define INFL_PROJECT_H

#include <infl/model.h>

typedef struct _p_InflProjector *InflProjector;

typedef enum { INFL_PROJECT_KRONECKER = 0, INFL_PROJECT_GAUSSIAN, INFL_PROJECT_RADEMACHER } InflProjectKind;
/* Names of the kinds in the order of the enum ("kronecker", "gaussian", "rademacher") and PETSc's enum suffix. */
extern const char *const InflProjectKinds[];

/* Not collective.  A projector of kind kronecker, k_in = k_out = 16, dim 1024, seed 0, chunk 256. */
PetscErrorCode InflProjectorCreate(MPI_Comm comm, InflProjector *p);
/* Collective.  Reads the -project_* options above.  Errors name the option and value: sizes < 1, chunk < 1. */
PetscErrorCode InflProjectorSetFromOptions(InflProjector p);
/* Not collective; before SetUp.  k_in, k_out (kronecker) and dim (gaussian, rademacher); a value <= 0 keeps the
 * current one. */
PetscErrorCode InflProjectorSetKind(InflProjector p, InflProjectKind kind);
PetscErrorCode InflProjectorSetSizes(InflProjector p, PetscInt k_in, PetscInt k_out, PetscInt dim);
PetscErrorCode InflProjectorSetSeed(InflProjector p, uint64_t seed);
PetscErrorCode InflProjectorGetKind(InflProjector p, InflProjectKind *kind);
PetscErrorCode InflProjectorGetSeed(InflProjector p, uint64_t *seed);
/* The -project_chunk value (sequences or examples per chunk of a store build) and whether it was given (given may be
 * NULL); InflStoreBuild derives the chunk of sequence data from it with InflModelGetChunk. */
PetscErrorCode InflProjectorGetChunk(InflProjector p, PetscInt *chunk, PetscBool *given);
/* Not collective.  Fix the layer sizes from the model's captured layers and generate the Kronecker factors
 * (memory sum_l k_in (din+1) + k_out dout doubles); a second call (another model) replaces them.  Error when a dense
 * kind's dim exceeds P (a projection to more dimensions than the gradient has). */
PetscErrorCode InflProjectorSetUp(InflProjector p, InflModel model);
/* After SetUp: k, the projected dimension, and P, the gradient dimension sum_l dout_l (din_l+1). */
PetscErrorCode InflProjectorGetSizes(InflProjector p, PetscInt *k, int64_t *P);
/* After SetUp: layers L, their din+1, dout, k_in, k_out (kronecker; 0 for the dense kinds) (each (L), may be NULL). */
PetscErrorCode InflProjectorGetLayers(InflProjector p, PetscInt *L, const PetscInt **din1, const PetscInt **dout, const PetscInt **k_in, const PetscInt **k_out);
/* After SetUp, kronecker: layer l's P_in (k_in, din+1) and P_out (k_out, dout), row-major, owned by the projector. */
PetscErrorCode InflProjectorGetKronecker(InflProjector p, PetscInt l, const double **P_in, const double **P_out);
/* After SetUp: rn (k) the Euclidean norm of each row of the effective projection matrix (k, P) -- exact for
 * kronecker (||P_out,i|| ||P_in,j||) and rademacher (sqrt(P / k)); for gaussian sqrt(P / k) (1 + 6 sqrt(2 / P)), a
 * six-sigma upper estimate of the chi-square norm (the matrix is never formed).  Used for the bound of
 * docs/FORMATS.md on stored rows. */
PetscErrorCode InflProjectorGetRowNorms(InflProjector p, double rn[]);
/* Text identifying the projection (kind, seed, sizes), for checkpoint keys and provenance. */
PetscErrorCode InflProjectorGetKey(InflProjector p, char key[], size_t len);
/* Not collective.  out (B, k): the projections of the capture's B sequences' gradients (sum over each sequence's rows
 * of Ds_t a_t^T in every layer).  gnorm (B), may be NULL: ||g||_2 of each sequence's unprojected gradient over all
 * layers (||Ds|| ||a|| per layer for a one-row sequence, else from the rows' Gram matrices, sqrt(sum_tt' (Ds_t .
 * Ds_t')(a_t . a_t'))). */
PetscErrorCode InflProjectorProjectCapture(InflProjector p, const InflCapture *cap, double out[], double gnorm[]);
/* Not collective.  out (B, nr): the components [r0, r0 + nr) of the capture's projections (InflProjectorProjectCapture
 * restricted to rows [r0, r0 + nr) of the projection matrix).  The dense kinds generate only those rows of R: split
 * over ranks (each its block of rows, then gathered), the query projection of a store-based scoring costs k P / size
 * generated numbers per rank instead of k P; the values are those of the whole projection (the same counters and the
 * same blocking of the columns).  The Kronecker kind forms the whole projection and cuts it. */
PetscErrorCode InflProjectorProjectCaptureRows(InflProjector p, const InflCapture *cap, PetscInt r0, PetscInt nr, double out[]);
/* Not collective.  out (n, k): projections of n flat gradients g (n, P) in the capture layout above (layer by
 * layer, DW_l (dout, din+1) row-major with the bias last in each row).  For tests and exact references. */
PetscErrorCode InflProjectorProjectGradients(InflProjector p, PetscInt n, const double g[], double out[]);
PetscErrorCode InflProjectorView(InflProjector p, PetscViewer viewer);
PetscErrorCode InflProjectorDestroy(InflProjector *p);

#endif

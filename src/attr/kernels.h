/* Scoring kernels (private to src/attr). */
#ifndef INFL_ATTR_KERNELS_H
#define INFL_ATTR_KERNELS_H
#include <petscsys.h>
#include <stdint.h>

/* out (Q, B) += one layer's score terms for a chunk of B training examples against Q queries:
 *   out[q, b] += sum_ij ds[b, i] P_q[i, j] a[b, j]
 * a (B, na) layer inputs with the trailing 1, ds (B, nd) pseudo-gradients.  P is the stacked preconditioned query
 * gradients in the layout chosen by by_input: (Q*nd, na) when by_input (a is contracted first: T = a P^T), else
 * (nd, Q*na) (T = ds P).  The kernel works on blocks of rows and queries so that T stays in cache; T is scratch of
 * InflScoreLayerScratch() elements.  Cost: 2 B Q nd na flops in GEMMs plus 2 B Q min(nd, na) in the row-wise dot
 * products, which are accumulated in double. */
void    InflScoreLayer_f32(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const float *P, const float *a, const float *ds, float *T, double *out);
void    InflScoreLayer_f64(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const double *P, const double *a, const double *ds, double *T, double *out);
/* Elements of scratch T the kernels need for these sizes and element size es (bytes); at most B*Q*max(nd, na). */
int64_t InflScoreLayerScratch(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, size_t es);
/* Block of training rows and bytes of T per block (defaults 1024 and 1 MiB; 0 restores a default).  Not thread-safe;
 * for bench/score_kernel.c and tests. */
void    InflScoreLayerSetBlocking(PetscInt rows, size_t bytes);
/* Reference kernels: the same contract (no T), plain loops in double; for tests. */
void    InflScoreLayerRef_f32(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const float *P, const float *a, const float *ds, double *out);
void    InflScoreLayerRef_f64(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, const double *P, const double *a, const double *ds, double *out);
/* out (Q, B) += the scores of B sequences against Q queries, one sequence's rows being offsets[b] .. offsets[b+1]-1
 * of a (rows, na) and ds (rows, nd):
 *   out[q, b] += <P_q, DW_b>,  DW_b = sum_t ds[t] a[t]^T (nd, na), the sequence's gradient
 * P (Q*nd, na): the by_input layout of InflScoreLayer_*, query q's (nd, na) block contiguous.  DW of a block of
 * sequences is formed by one GEMM per sequence (2 T_b nd na flops), then contracted with P by GEMMs (2 Q nd na flops
 * per sequence) over blocks of whole rows of DW of at most kb elements (one row when na > kb), accumulated in double:
 * no dot product is longer than max(kb, na, T_b), so callers pass the widest layer input (the d of the rounding bound,
 * docs/FORMATS.md).  Cheaper than InflScoreLayer_* on the rows when T_b Q > T_b + Q (sequences of several tokens
 * and several queries); no per-row terms.  W is scratch of InflScoreSequencesScratch() elements. */
void    InflScoreSequences_f32(PetscInt Q, PetscInt B, const int64_t offsets[], PetscInt nd, PetscInt na, PetscInt kb, const float *P, const float *a, const float *ds, float *W, double *out);
void    InflScoreSequences_f64(PetscInt Q, PetscInt B, const int64_t offsets[], PetscInt nd, PetscInt na, PetscInt kb, const double *P, const double *a, const double *ds, double *W, double *out);
/* Elements of scratch W the sequence kernels need for up to B sequences (nondecreasing in B). */
int64_t InflScoreSequencesScratch(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, size_t es);
/* Reference sequence kernels: the same contract (no W, kb), plain loops in double over the rows; for tests. */
void    InflScoreSequencesRef_f32(PetscInt Q, PetscInt B, const int64_t offsets[], PetscInt nd, PetscInt na, const float *P, const float *a, const float *ds, double *out);
void    InflScoreSequencesRef_f64(PetscInt Q, PetscInt B, const int64_t offsets[], PetscInt nd, PetscInt na, const double *P, const double *a, const double *ds, double *out);
#endif

/* Blocked scoring kernels against the plain reference kernels on random data: float and double, both layouts
 * (by_input: a contracted first; else ds first), odd sizes, Q = 1, 3, 64, with the default blocking and with blocks
 * smaller than the chunk; the sequence kernel on sequences of 0 to 40 rows, contraction blocks of one row, several
 * rows and the whole gradient, blocks of sequences smaller than the batch. */
#include <infl/sys.h>
#include "attr/kernels.h"
#include <math.h>

static double urand(uint64_t *s)
{
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
}

static PetscErrorCode check_case(PetscInt Q, PetscInt B, PetscInt nd, PetscInt na, PetscBool by_input, PetscBool dbl, PetscInt *fails)
{
  int64_t  nP = (int64_t)Q * nd * na, nT = InflScoreLayerScratch(Q, B, nd, na, by_input, dbl ? sizeof(double) : sizeof(float));
  uint64_t seed = 12345 + (uint64_t)(Q * 7 + B * 13 + nd * 17 + na * 19 + by_input);
  double  *P, *a, *ds, *T, *out, *ref, err = 0, scale = 0;
  float   *Pf, *af, *dsf, *Tf;

  PetscFunctionBegin;
  PetscCall(PetscMalloc4(nP, &P, (size_t)B * na, &a, (size_t)B * nd, &ds, nT, &T));
  PetscCall(PetscMalloc4(nP, &Pf, (size_t)B * na, &af, (size_t)B * nd, &dsf, nT, &Tf));
  PetscCall(PetscMalloc2((size_t)Q * B, &out, (size_t)Q * B, &ref));
  for (int64_t i = 0; i < nP; i++) Pf[i] = (float)(P[i] = urand(&seed));
  for (int64_t i = 0; i < (int64_t)B * na; i++) af[i] = (float)(a[i] = urand(&seed));
  for (int64_t i = 0; i < (int64_t)B * nd; i++) dsf[i] = (float)(ds[i] = urand(&seed));
  /* out starts nonzero: the kernels accumulate */
  for (int64_t i = 0; i < (int64_t)Q * B; i++) out[i] = ref[i] = 0.5 * (double)(i % 3);
  if (dbl) {
    InflScoreLayer_f64(Q, B, nd, na, by_input, P, a, ds, T, out);
    InflScoreLayerRef_f64(Q, B, nd, na, by_input, P, a, ds, ref);
  } else {
    InflScoreLayer_f32(Q, B, nd, na, by_input, Pf, af, dsf, Tf, out);
    InflScoreLayerRef_f32(Q, B, nd, na, by_input, Pf, af, dsf, ref);
  }
  for (int64_t i = 0; i < (int64_t)Q * B; i++) {
    err   = PetscMax(err, fabs(out[i] - ref[i]));
    scale = PetscMax(scale, fabs(ref[i]));
  }
  /* entries are sums of nd*na products of O(1) terms: their size is about sqrt(nd*na) */
  scale = PetscMax(scale, sqrt((double)nd * na));
  if (!(err <= (dbl ? 1e-12 : 2e-5) * scale)) {
    (*fails)++;
    PetscCall(PetscPrintf(PETSC_COMM_SELF, "FAIL %s Q=%d B=%d nd=%d na=%d by_input=%d: max error %g (scale %g)\n", dbl ? "double" : "float", (int)Q, (int)B, (int)nd, (int)na, (int)by_input, err, scale));
  }
  PetscCall(PetscFree4(P, a, ds, T));
  PetscCall(PetscFree4(Pf, af, dsf, Tf));
  PetscCall(PetscFree2(out, ref));
  PetscFunctionReturn(0);
}

/* The sequence kernel against its reference: B sequences of random lengths in [0, maxlen] (one of them empty). */
static PetscErrorCode check_sequences(PetscInt Q, PetscInt B, PetscInt maxlen, PetscInt nd, PetscInt na, PetscInt kb, PetscBool dbl, PetscInt *fails)
{
  uint64_t seed = 777 + (uint64_t)(Q * 7 + B * 13 + nd * 17 + na * 19 + kb * 23 + maxlen);
  int64_t *off, R, nP = (int64_t)Q * nd * na, nW;
  double  *P, *a, *ds, *W, *out, *ref, err = 0, scale = 0;
  float   *Pf, *af, *dsf, *Wf;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(B + 1, &off));
  off[0] = 0;
  for (PetscInt b = 0; b < B; b++) off[b + 1] = off[b] + (b == B / 2 ? 0 : (int64_t)((urand(&seed) + 1) * 0.5 * maxlen) + 1);
  R  = off[B];
  nW = InflScoreSequencesScratch(Q, B, nd, na, dbl ? sizeof(double) : sizeof(float));
  PetscCall(PetscMalloc4(nP, &P, (size_t)R * na + 1, &a, (size_t)R * nd + 1, &ds, nW, &W));
  PetscCall(PetscMalloc4(nP, &Pf, (size_t)R * na + 1, &af, (size_t)R * nd + 1, &dsf, nW, &Wf));
  PetscCall(PetscMalloc2((size_t)Q * B, &out, (size_t)Q * B, &ref));
  for (int64_t i = 0; i < nP; i++) Pf[i] = (float)(P[i] = urand(&seed));
  for (int64_t i = 0; i < R * na; i++) af[i] = (float)(a[i] = urand(&seed));
  for (int64_t i = 0; i < R * nd; i++) dsf[i] = (float)(ds[i] = urand(&seed));
  for (int64_t i = 0; i < (int64_t)Q * B; i++) out[i] = ref[i] = 0.25 * (double)(i % 5);
  if (dbl) {
    InflScoreSequences_f64(Q, B, off, nd, na, kb, P, a, ds, W, out);
    InflScoreSequencesRef_f64(Q, B, off, nd, na, P, a, ds, ref);
  } else {
    InflScoreSequences_f32(Q, B, off, nd, na, kb, Pf, af, dsf, Wf, out);
    InflScoreSequencesRef_f32(Q, B, off, nd, na, Pf, af, dsf, ref);
  }
  for (int64_t i = 0; i < (int64_t)Q * B; i++) {
    err   = PetscMax(err, fabs(out[i] - ref[i]));
    scale = PetscMax(scale, fabs(ref[i]));
  }
  /* a sequence's score sums T nd na products of O(1) terms */
  scale = PetscMax(scale, sqrt((double)maxlen * nd * na));
  if (!(err <= (dbl ? 1e-12 : 2e-5) * scale)) {
    (*fails)++;
    PetscCall(PetscPrintf(PETSC_COMM_SELF, "FAIL sequences %s Q=%d B=%d maxlen=%d nd=%d na=%d kb=%d: max error %g (scale %g)\n", dbl ? "double" : "float", (int)Q, (int)B, (int)maxlen, (int)nd, (int)na, (int)kb, err, scale));
  }
  PetscCall(PetscFree(off));
  PetscCall(PetscFree4(P, a, ds, W));
  PetscCall(PetscFree4(Pf, af, dsf, Wf));
  PetscCall(PetscFree2(out, ref));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscInt Qs[] = {1, 3, 64}, sizes[][3] = {{1, 1, 1}, {7, 5, 9}, {300, 17, 33}, {257, 40, 13}, {513, 10, 257}, {129, 256, 785}};
  PetscInt fails = 0, cases = 0;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  /* the default blocking, then small blocks so that the row and query remainders are exercised */
  for (int blk = 0; blk < 2; blk++) {
  InflScoreLayerSetBlocking(blk ? 64 : 0, blk ? (size_t)64 << 10 : 0);
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
    for (size_t q = 0; q < 3; q++)
      for (int bi = 0; bi < 2; bi++)
        for (int dbl = 0; dbl < 2; dbl++) {
          if (sizes[s][2] == 785 && Qs[q] == 64 && dbl) continue; /* the reference is slow; float covers the shape */
          PetscCall(check_case(Qs[q], sizes[s][0], sizes[s][1], sizes[s][2], bi ? PETSC_TRUE : PETSC_FALSE, dbl ? PETSC_TRUE : PETSC_FALSE, &fails));
          cases++;
        }
  }
  /* callers size the scratch for their largest chunk and then score smaller ones (remainders, resumed runs with other
   * chunk sizes): the scratch of B rows must cover every B' <= B, i.e. InflScoreLayerScratch is nondecreasing in B
   * (it was not: a resumed score wrote past its scratch) */
  for (int blk = 0; blk < 2; blk++) {
    InflScoreLayerSetBlocking(blk ? 64 : 0, blk ? (size_t)64 << 10 : 0);
    for (PetscInt Q = 1; Q <= 120; Q += 17)
      for (PetscInt w = 1; w <= 800; w += 97)
        for (int dbl = 0; dbl < 2; dbl++) {
          int64_t prev = 0;
          for (PetscInt B = 1; B <= 1500; B++) {
            int64_t n = InflScoreLayerScratch(Q, B, w, w + 3, PETSC_TRUE, dbl ? sizeof(double) : sizeof(float));
            if (n < prev) {
              fails++;
              PetscCall(PetscPrintf(PETSC_COMM_SELF, "FAIL scratch Q=%d w=%d B=%d: %lld elements, less than %lld for B-1\n", (int)Q, (int)w, (int)B, (long long)n, (long long)prev));
              break;
            }
            prev = n;
          }
          cases++;
        }
  }
  { /* the sequence kernel: contraction blocks of one row (kb 1), of several rows, of the whole gradient */
    PetscInt seqs[][4] = {{1, 1, 1, 1}, {5, 7, 9, 5}, {13, 40, 33, 17}, {9, 20, 130, 129}};
    for (int blk = 0; blk < 2; blk++) {
      InflScoreLayerSetBlocking(0, blk ? (size_t)4 << 10 : 0); /* 16 KiB of DW: blocks of 1 to 7 sequences */
      for (size_t s = 0; s < sizeof(seqs) / sizeof(seqs[0]); s++)
        for (size_t q = 0; q < 3; q++)
          for (int k = 0; k < 3; k++)
            for (int dbl = 0; dbl < 2; dbl++) {
              PetscInt nd = seqs[s][2], na = seqs[s][3], kb = k == 0 ? 1 : k == 1 ? 3 * na + 1 : nd * na;
              PetscCall(check_sequences(Qs[q] == 64 ? 17 : Qs[q], seqs[s][0], seqs[s][1], nd, na, kb, dbl ? PETSC_TRUE : PETSC_FALSE, &fails));
              cases++;
            }
    }
    InflScoreLayerSetBlocking(0, 0);
    for (PetscInt Q = 1; Q <= 40; Q += 13) /* the scratch of B sequences covers every B' <= B */
      for (PetscInt w = 1; w <= 700; w += 233)
        for (int dbl = 0; dbl < 2; dbl++) {
          int64_t prev = 0;
          for (PetscInt B = 1; B <= 300; B++) {
            int64_t n = InflScoreSequencesScratch(Q, B, w, w + 3, dbl ? sizeof(double) : sizeof(float));
            if (n < prev) {
              fails++;
              PetscCall(PetscPrintf(PETSC_COMM_SELF, "FAIL sequence scratch Q=%d w=%d B=%d: %lld elements, less than %lld for B-1\n", (int)Q, (int)w, (int)B, (long long)n, (long long)prev));
              break;
            }
            prev = n;
          }
          cases++;
        }
  }
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_kernels: %d cases, %d failures\n", (int)cases, (int)fails));
  PetscCheck(fails == 0, PETSC_COMM_WORLD, PETSC_ERR_PLIB, "%d kernel cases differ from the reference", (int)fails);
  PetscCall(PetscFinalize());
  return 0;
}

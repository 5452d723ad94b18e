/* Fidelity of approximate IHVPs (identity, K-FAC, EK-FAC) against the Krylov solution (ALGORITHMS.md section 6:
 * agreement with the exact damped IHVP: Pearson / Spearman of scores, top-k overlap). */
#include <infl/ihvp.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* P = Q_S [ (Q_S^T G Q_A) / (Lam + damping) ] Q_A^T for a given Lam (dout, din+1) (K-FAC: eS eA^T). */
static void precondition_with(const InflEKFACLayer *ly, const double Lam[], double G[], double T[])
{
  PetscInt na = ly->din + 1, nd = ly->dout;
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nd, na, nd, 1.0, ly->QS, nd, G, na, 0.0, T, na);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nd, na, na, 1.0, T, na, ly->QA, na, 0.0, G, na);
  for (int64_t i = 0; i < (int64_t)nd * na; i++) G[i] /= (Lam[i] + ly->damping);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nd, na, nd, 1.0, ly->QS, nd, G, na, 0.0, T, na);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, na, na, 1.0, T, na, ly->QA, na, 0.0, G, na);
}

typedef struct {
  double  v;
  int64_t i;
} Pair;

static int cmp_asc(const void *a, const void *b)
{
  const Pair *x = a, *y = b;
  if (x->v < y->v) return -1;
  if (x->v > y->v) return 1;
  return x->i < y->i ? -1 : (x->i > y->i);
}

static int cmp_desc(const void *a, const void *b)
{
  const Pair *x = a, *y = b;
  if (x->v > y->v) return -1;
  if (x->v < y->v) return 1;
  return x->i < y->i ? -1 : (x->i > y->i);
}

static double pearson(int64_t N, const double a[], const double b[])
{
  double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
  for (int64_t i = 0; i < N; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= N;
  mb /= N;
  for (int64_t i = 0; i < N; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

/* average ranks (ties share the mean rank) */
static void ranks(int64_t N, const double a[], Pair *w, double r[])
{
  for (int64_t i = 0; i < N; i++) w[i] = (Pair){a[i], i};
  qsort(w, N, sizeof(Pair), cmp_asc);
  for (int64_t i = 0; i < N;) {
    int64_t j = i;
    while (j + 1 < N && w[j + 1].v == w[i].v) j++;
    for (int64_t k = i; k <= j; k++) r[w[k].i] = 0.5 * (double)(i + j);
    i = j + 1;
  }
}

PetscErrorCode InflFidelityCompute(InflIHVP ih, InflModel model, InflEKFAC ek, InflData train, PetscInt Q, const double g[], const int64_t qindex[], PetscInt K, InflFidelity *fid)
{
  MPI_Comm          comm;
  PetscInt          L, M = 5; /* identity, K-FAC, EK-FAC, EK-FAC low rank, exact */
  PetscInt          rank = 32, n;
  InflLinear       *lin;
  InflEKFACLayer   *ekl;
  double          **P[5], *T, *S, *bufa, *bufd, *out, *rowsum;
  InflIHVPSolveInfo *info;
  int64_t           N, start, count, per_max = 1;
  const int64_t    *off;
  InflCapture      *cap;
  PetscInt          chunk = 256, maxw = 1, maxrows;

  PetscFunctionBegin;
  PetscCall(InflModelGetComm(model, &comm));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  PetscCall(InflIHVPGetSizes(ih, &n, NULL, &off));
  PetscCall(InflEKFACGetLayers(ek, NULL, &ekl));
  PetscCall(InflDataGetSizes(train, &N, NULL, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  PetscCheck(K > 0 && K <= N, comm, PETSC_ERR_ARG_OUTOFRANGE, "top-k size %d must be in [1, %" PRId64 "] (the training examples compared)", (int)K, N);
  PetscCall(PetscMemzero(fid, sizeof(*fid)));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-fidelity_rank", &rank, NULL));
  PetscCheck(rank >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "-fidelity_rank %d must be >= 1", (int)rank);
  fid->M = 4;
  fid->Q = Q;
  fid->K = K;
  PetscCall(PetscStrncpy(fid->names[0], "identity", 16));
  PetscCall(PetscStrncpy(fid->names[1], "K-FAC", 16));
  PetscCall(PetscStrncpy(fid->names[2], "EK-FAC", 16));
  PetscCall(PetscSNPrintf(fid->names[3], 16, "EK-FAC r%d", (int)rank));
  for (PetscInt l = 0; l < L; l++) {
    per_max    = PetscMax(per_max, off[l + 1] - off[l]);
    maxw       = PetscMax(maxw, PetscMax(lin[l].dout, lin[l].din + 1));
  }

  /* the exact IHVPs, then the approximations of the same query gradients */
  PetscCall(PetscMalloc1(Q, &info));
  for (PetscInt m = 0; m < M; m++) PetscCall(PetscCalloc1(L, &P[m]));
  PetscCall(InflIHVPSolveGradients(ih, Q, g, qindex, P[4], info));
  PetscCall(PetscMalloc1(Q, &fid->iterations));
  for (PetscInt q = 0; q < Q; q++) fid->iterations[q] = info[q].iterations;
  PetscCall(PetscMalloc2(per_max, &T, per_max, &S));
  for (PetscInt m = 0; m < 4; m++)
    for (PetscInt l = 0; l < L; l++) PetscCall(PetscMalloc1((size_t)Q * (off[l + 1] - off[l]), &P[m][l]));
  for (PetscInt q = 0; q < Q; q++) {
    for (PetscInt l = 0; l < L; l++) {
      PetscInt nd = lin[l].dout, na = lin[l].din + 1;
      int64_t  per = off[l + 1] - off[l];
      double  *Gi = P[0][l] + q * per, *Gk = P[1][l] + q * per, *Ge = P[2][l] + q * per;
      InflIHVPSlabToLayer(lin[l].din, nd, g + (int64_t)q * n + off[l], Gi);
      PetscCall(PetscArraycpy(Gk, Gi, per));
      PetscCall(PetscArraycpy(Ge, Gi, per));
      for (PetscInt i = 0; i < nd; i++)
        for (PetscInt j = 0; j < na; j++) S[i * na + j] = ekl[l].eS[i] * ekl[l].eA[j];
      precondition_with(&ekl[l], S, Gk, T);
      PetscCall(InflEKFACPrecondition(ek, l, Ge));
      { /* low rank: the EK-FAC result truncated to rank r (exact where min(nd, na) <= r) */
        double *Gr = P[3][l] + q * per;
        PetscCall(PetscArraycpy(Gr, Ge, per));
        if (PetscMin(nd, na) > rank) {
          double *U, *V;
          PetscCall(PetscMalloc2((size_t)nd * rank, &U, (size_t)na * rank, &V));
          PetscCall(InflLowRankApprox(nd, na, rank, Gr, U, V));
          PetscCall(PetscFree2(U, V));
        }
      }
    }
  }

  /* scores of every training example (columns of this rank's shard) for every method, summed over ranks: the terms
   * Ds_t^T P a_t of every row, summed over each sequence's rows (training examples with their data labels) */
  PetscCall(PetscCalloc1((size_t)M * Q * N, &out));
  PetscCall(InflModelGetMaxRows(model, &maxrows));
  PetscCall(InflCaptureCreate(model, chunk, &cap));
  PetscCall(PetscFree2(T, S));
  maxrows *= chunk;
  PetscCall(PetscMalloc4((size_t)maxrows * maxw, &bufa, (size_t)maxrows * maxw, &bufd, (size_t)maxrows * Q * maxw, &T, Q, &rowsum));
  for (int64_t lo = start; lo < start + count; lo += chunk) {
    int64_t hi = PetscMin(lo + chunk, start + count);
    InflCallAll(comm, InflModelCaptureShard(model, train, lo, hi, INFL_FISHER_EMPIRICAL, 0, cap));
    for (PetscInt l = 0; l < L; l++) {
      PetscInt      nd = lin[l].dout, na = lin[l].din + 1, Tr = cap->T;
      const double *a, *ds;
      InflCaptureGetDouble(cap, l, bufa, bufd, &a, &ds);
      for (PetscInt m = 0; m < M; m++) {
        /* T (rows, Q*nd) = a P^T with P stacked (Q*nd, na) */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tr, Q * nd, na, 1, a, na, P[m][l], na, 0, T, Q * nd);
        for (PetscInt b = 0; b < cap->B; b++) {
          PetscCall(PetscArrayzero(rowsum, Q));
          for (int64_t t = cap->offsets[b]; t < cap->offsets[b + 1]; t++)
            for (PetscInt q = 0; q < Q; q++) {
              double s = 0;
              for (PetscInt i = 0; i < nd; i++) s += T[t * Q * nd + (int64_t)q * nd + i] * ds[t * nd + i];
              rowsum[q] += s;
            }
          for (PetscInt q = 0; q < Q; q++) out[((int64_t)m * Q + q) * N + lo + b] += rowsum[q];
        }
      }
    }
  }
  PetscCall(InflAllreduceSum(out, (int64_t)M * Q * N, MPI_DOUBLE, comm));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree4(bufa, bufd, T, rowsum));

  /* metrics (every rank computes the same numbers) */
  PetscCall(PetscMalloc4(4 * Q, &fid->pearson, 4 * Q, &fid->spearman, 4 * Q, &fid->overlap, 4 * Q, &fid->relerr));
  {
    Pair   *w;
    double *rx, *rm;
    PetscCall(PetscMalloc3(N, &w, N, &rx, N, &rm));
    for (PetscInt q = 0; q < Q; q++) {
      const double *ex = out + ((int64_t)4 * Q + q) * N;
      int64_t      *topx;
      PetscCall(PetscMalloc1(K, &topx));
      ranks(N, ex, w, rx);
      for (int64_t i = 0; i < N; i++) w[i] = (Pair){ex[i], i};
      qsort(w, N, sizeof(Pair), cmp_desc);
      for (PetscInt k = 0; k < K; k++) topx[k] = w[k].i;
      for (PetscInt m = 0; m < 4; m++) {
        const double *sm = out + ((int64_t)m * Q + q) * N;
        double        num = 0, den = 0;
        PetscInt      common = 0;
        fid->pearson[m * Q + q] = pearson(N, sm, ex);
        ranks(N, sm, w, rm);
        fid->spearman[m * Q + q] = pearson(N, rm, rx);
        for (int64_t i = 0; i < N; i++) w[i] = (Pair){sm[i], i};
        qsort(w, N, sizeof(Pair), cmp_desc);
        for (PetscInt k = 0; k < K; k++)
          for (PetscInt k2 = 0; k2 < K; k2++) if (w[k].i == topx[k2]) common++;
        fid->overlap[m * Q + q] = (double)common / K;
        for (PetscInt l = 0; l < L; l++) {
          int64_t per = off[l + 1] - off[l];
          for (int64_t i = 0; i < per; i++) {
            double e = P[m][l][q * per + i] - P[4][l][q * per + i];
            num += e * e;
            den += P[4][l][q * per + i] * P[4][l][q * per + i];
          }
        }
        fid->relerr[m * Q + q] = den > 0 ? sqrt(num / den) : NAN;
      }
      PetscCall(PetscFree(topx));
    }
    PetscCall(PetscFree3(w, rx, rm));
  }
  for (PetscInt m = 0; m < M; m++) {
    for (PetscInt l = 0; l < L; l++) PetscCall(PetscFree(P[m][l]));
    PetscCall(PetscFree(P[m]));
  }
  PetscCall(PetscFree(out));
  PetscCall(PetscFree(info));
  PetscFunctionReturn(0);
}

PetscErrorCode InflFidelityView(InflFidelity *fid, MPI_Comm comm)
{
  char   cell[5][5][48]; /* the header and fid->M <= 4 rows of 5 columns */
  int    w[5] = {0, 0, 0, 0, 0};
  double it   = 0;

  PetscFunctionBegin;
  PetscCheck(fid->M <= 4, comm, PETSC_ERR_PLIB, "fidelity table of %d methods: at most 4", (int)fid->M);
  PetscCall(PetscSNPrintf(cell[0][0], 48, "method"));
  PetscCall(PetscSNPrintf(cell[0][1], 48, "Pearson"));
  PetscCall(PetscSNPrintf(cell[0][2], 48, "Spearman"));
  PetscCall(PetscSNPrintf(cell[0][3], 48, "top-%d overlap", (int)fid->K));
  PetscCall(PetscSNPrintf(cell[0][4], 48, "IHVP rel. error"));
  for (PetscInt m = 0; m < fid->M; m++) {
    double  s[4] = {0, 0, 0, 0}, mn[4] = {1e300, 1e300, 1e300, 1e300};
    double *a[4] = {fid->pearson, fid->spearman, fid->overlap, fid->relerr};
    for (int k = 0; k < 4; k++)
      for (PetscInt q = 0; q < fid->Q; q++) {
        s[k] += a[k][m * fid->Q + q] / fid->Q;
        mn[k] = PetscMin(mn[k], a[k][m * fid->Q + q]);
      }
    snprintf(cell[m + 1][0], 48, "%s", fid->names[m]);
    snprintf(cell[m + 1][1], 48, "%.4f [%.4f]", s[0], mn[0]);
    snprintf(cell[m + 1][2], 48, "%.4f [%.4f]", s[1], mn[1]);
    snprintf(cell[m + 1][3], 48, "%.3f [%.3f]", s[2], mn[2]);
    snprintf(cell[m + 1][4], 48, "%.4f", s[3]);
  }
  /* every column as wide as its widest cell, so that the rows line up whatever the names ("EK-FAC r32") and signs */
  for (PetscInt m = 0; m <= fid->M; m++)
    for (int k = 0; k < 5; k++) w[k] = PetscMax(w[k], (int)strlen(cell[m][k]));
  PetscCall(PetscPrintf(comm, "fidelity against the Krylov IHVP (%d queries; mean [min] over queries; top-%d overlap)\n", (int)fid->Q, (int)fid->K));
  for (PetscInt m = 0; m <= fid->M; m++) {
    PetscCall(PetscPrintf(comm, "| %-*s | %-*s | %-*s | %-*s | %-*s |\n", w[0], cell[m][0], w[1], cell[m][1], w[2], cell[m][2], w[3], cell[m][3], w[4], cell[m][4]));
    if (m == 0) PetscCall(PetscPrintf(comm, "|---|---|---|---|---|\n"));
  }
  for (PetscInt q = 0; q < fid->Q; q++) it += (double)fid->iterations[q] / fid->Q;
  PetscCall(PetscPrintf(comm, "Krylov solves: %.1f iterations on average\n", it));
  PetscFunctionReturn(0);
}

PetscErrorCode InflFidelitySave(InflFidelity *fid, MPI_Comm comm, InflModel model, InflData train, const int64_t qindex[], const char path[], PetscBool overwrite)
{
  char        partial[PETSC_MAX_PATH_LEN], methods[64];
  hid_t       file;
  const char *mh, *th;
  int64_t     dmq[2] = {fid->M, fid->Q}, dq[1] = {fid->Q}, *its;

  PetscFunctionBegin;
  InflCheckAll(comm, overwrite || !InflFileExists(path), PETSC_ERR_FILE_OPEN, "%s exists; pass -overwrite to replace it or choose another -out", path);
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", path));
  PetscCall(PetscSNPrintf(methods, sizeof(methods), "%s,%s,%s,%s", fid->names[0], fid->names[1], fid->names[2], fid->names[3]));
  PetscCall(InflH5Create(comm, partial, PETSC_TRUE, &file));
  PetscCall(InflModelGetHash(model, &mh));
  PetscCall(InflDataGetHash(train, &th));
  PetscCall(InflH5WriteProvenance(file, comm, "fidelity", mh, th, NULL));
  PetscCall(InflH5SetAttrString(file, "/", "methods", methods));
  PetscCall(InflH5SetAttrInt(file, "/", "topk", fid->K));
  PetscCall(InflH5WriteArray(file, "/pearson", H5T_NATIVE_DOUBLE, 2, dmq, fid->pearson));
  PetscCall(InflH5WriteArray(file, "/spearman", H5T_NATIVE_DOUBLE, 2, dmq, fid->spearman));
  PetscCall(InflH5WriteArray(file, "/topk_overlap", H5T_NATIVE_DOUBLE, 2, dmq, fid->overlap));
  PetscCall(InflH5WriteArray(file, "/relative_error", H5T_NATIVE_DOUBLE, 2, dmq, fid->relerr));
  PetscCall(InflH5WriteArray(file, "/query_indices", H5T_NATIVE_INT64, 1, dq, qindex));
  PetscCall(PetscMalloc1(fid->Q, &its));
  for (PetscInt q = 0; q < fid->Q; q++) its[q] = fid->iterations[q];
  PetscCall(InflH5WriteArray(file, "/krylov_iterations", H5T_NATIVE_INT64, 1, dq, its));
  PetscCall(PetscFree(its));
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(comm, partial, path));
  PetscFunctionReturn(0);
}

PetscErrorCode InflFidelityFree(InflFidelity *fid)
{
  PetscFunctionBegin;
  PetscCall(PetscFree4(fid->pearson, fid->spearman, fid->overlap, fid->relerr));
  PetscCall(PetscFree(fid->iterations));
  PetscFunctionReturn(0);
}

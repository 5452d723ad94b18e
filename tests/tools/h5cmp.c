/* h5cmp: compare a dataset of two infl outputs against the agreement that docs/FORMATS.md ("Agreement across rank
 * counts and chunkings") promises, and print how much of the bound the difference uses.
 *
 *   h5cmp MODE TOL REF.h5 OTHER.h5 DATASET [FACTORS.h5]
 *
 * MODE   bound on |other - ref| per entry
 *   trace  TOL * trace(ref)                     a covariance factor (A, S): square
 *   max    TOL * max |ref|                      eigenvalues
 *   sum    |sum other - sum ref| <= TOL * sum |ref|   a basis-independent total (Lambda)
 *   scores TOL * qn[q] * tn[m] + 2^-24 (|ref| + |other|)   (Q, N) scores; qn = REF's /query_norms, tn = REF's
 *                                               /train_norms; the second term is the float32 storage of /scores
 *   topk   DATASET is /topk or /bottomk: the entry OTHER keeps at place k of query q has, in REF's /scores, a score
 *          within 2 TOL qn[q] max_m tn[m] + 2^-24 |score| of REF's k-th score (lists agree up to near-ties within the
 *          bound; /scores is stored in float32)
 *   kept   DATASET is /topk or /bottomk: every entry OTHER keeps (index -1: none) has OTHER's score within
 *          TOL * qn[q] * tn[m] + 2^-24 |score| of REF's /scores at that pair (REF: the full matrix of the same queries;
 *          OTHER scored a subset, e.g. TF-IDF candidates), and when OTHER has /tfidf/candidates it is one of them
 *   store  TOL * rn[j] * tn[m] + 2^-24 (|ref| + |other|)   (N, k) projected gradients of a gradient store; rn = REF's
 *                                               /projection_norms, tn = REF's /train_norms (Cauchy-Schwarz per entry
 *                                               plus the float32 storage)
 *   self   TOL * sqrt(kappa) * |ref|            self-influence; kappa = max over layers of (max Lambda + damping) /
 *                                               (min Lambda + damping), from FACTORS.h5
 *   pertoken  DATASET is /per_token of OTHER (REF is not read): the layout of docs/FORMATS.md (rows of each query in
 *          order, its top-k entries then its bottom-k, train_index and rank_kind matching /topk and /bottomk) and
 *          every row's values summing to the pair's score in /topk/scores or /bottomk/scores within
 *          TOL * qn[q] * tn[m] (the per-token terms are computed in double, the scores in the working precision)
 * Exit 0 when every entry is within the bound, 1 when not, 2 on a usage or file error. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double *read_all(const char *path, const char *name, int *ndim, hsize_t dims[8], size_t *n)
{
  hid_t   f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d, s;
  double *buf;
  if (f < 0) { fprintf(stderr, "h5cmp: cannot open %s\n", path); exit(2); }
  d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) { fprintf(stderr, "h5cmp: %s has no dataset %s\n", path, name); exit(2); }
  s     = H5Dget_space(d);
  *ndim = H5Sget_simple_extent_dims(s, dims, NULL);
  *n    = 1;
  for (int i = 0; i < *ndim; i++) *n *= dims[i];
  buf = malloc(sizeof(double) * (*n ? *n : 1));
  if (!buf || H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) { fprintf(stderr, "h5cmp: cannot read %s:%s\n", path, name); exit(2); }
  H5Sclose(s);
  H5Dclose(d);
  H5Fclose(f);
  return buf;
}

/* kappa of the damped EK-FAC: max over layers of (max Lambda + damping) / (min Lambda + damping) */
static double ekfac_kappa(const char *factors)
{
  hid_t  f = H5Fopen(factors, H5F_ACC_RDONLY, H5P_DEFAULT);
  double kappa = 1;
  if (f < 0) { fprintf(stderr, "h5cmp: cannot open %s\n", factors); exit(2); }
  for (int l = 0;; l++) {
    char    name[64];
    int     nd;
    hsize_t dims[8];
    size_t  n;
    double *lam, damping, lo = INFINITY, hi = 0;
    hid_t   g, a;
    snprintf(name, sizeof(name), "/layers/%d", l);
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) break;
    g = H5Gopen2(f, name, H5P_DEFAULT);
    a = H5Aopen(g, "damping", H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &damping) < 0) { fprintf(stderr, "h5cmp: %s%s has no damping\n", factors, name); exit(2); }
    H5Aclose(a);
    H5Gclose(g);
    snprintf(name, sizeof(name), "/layers/%d/Lambda", l);
    lam = read_all(factors, name, &nd, dims, &n);
    for (size_t i = 0; i < n; i++) { lo = fmin(lo, lam[i]); hi = fmax(hi, lam[i]); }
    kappa = fmax(kappa, (hi + damping) / (lo + damping));
    free(lam);
  }
  H5Fclose(f);
  return kappa;
}

int main(int argc, char **argv)
{
  const char *mode, *ref, *oth, *ds;
  double      tol, *a, *b, worst = 0; /* largest |difference| / bound */
  int         na, nb;
  hsize_t     da[8], db[8];
  size_t      n, m, at = 0;

  if (argc < 6) { fprintf(stderr, "usage: h5cmp trace|max|sum|scores|self TOL REF.h5 OTHER.h5 DATASET [FACTORS.h5]\n"); return 2; }
  mode = argv[1]; tol = atof(argv[2]); ref = argv[3]; oth = argv[4]; ds = argv[5];
  if (!strcmp(mode, "pertoken")) {
    char    name[96];
    int     nd;
    hsize_t dd[8];
    size_t  R, M, R1, c, Q, N, K, row = 0;
    double *val, *off, *qry, *tix, *kind, *qn, *tn, *lists[2][2];
    snprintf(name, sizeof(name), "%s/values", ds);
    val = read_all(oth, name, &nd, dd, &M);
    snprintf(name, sizeof(name), "%s/offsets", ds);
    off = read_all(oth, name, &nd, dd, &R1);
    snprintf(name, sizeof(name), "%s/query", ds);
    qry = read_all(oth, name, &nd, dd, &R);
    snprintf(name, sizeof(name), "%s/train_index", ds);
    tix = read_all(oth, name, &nd, dd, &c);
    snprintf(name, sizeof(name), "%s/rank_kind", ds);
    kind = read_all(oth, name, &nd, dd, &c);
    qn = read_all(oth, "/query_norms", &nd, dd, &Q);
    tn = read_all(oth, "/train_norms", &nd, dd, &N);
    lists[0][0] = read_all(oth, "/topk/train_indices", &nd, dd, &c);
    K           = dd[1];
    lists[0][1] = read_all(oth, "/topk/scores", &nd, dd, &c);
    lists[1][0] = read_all(oth, "/bottomk/train_indices", &nd, dd, &c);
    lists[1][1] = read_all(oth, "/bottomk/scores", &nd, dd, &c);
    if (R1 != R + 1 || off[0] != 0 || (size_t)off[R] != M) { fprintf(stderr, "h5cmp: %s: offsets (%zu) do not bound %zu rows of %zu values\n", oth, R1, R, M); return 1; }
    for (size_t q = 0; q < Q; q++)
      for (int w = 0; w < 2; w++)
        for (size_t k = 0; k < K && lists[w][0][q * K + k] >= 0; k++, row++) {
          double m = lists[w][0][q * K + k], sum = 0, bound, r;
          if (row >= R || qry[row] != (double)q || tix[row] != m || kind[row] != (w ? -1 : 1)) { fprintf(stderr, "h5cmp: %s row %zu is (query %g, train %g, kind %g), expected (%zu, %g, %d)\n", oth, row, row < R ? qry[row] : -1, row < R ? tix[row] : -1, row < R ? kind[row] : 0, q, m, w ? -1 : 1); return 1; }
          for (size_t t = (size_t)off[row]; t < (size_t)off[row + 1]; t++) sum += val[t];
          bound = tol * qn[q] * tn[(size_t)m];
          r     = fabs(sum - lists[w][1][q * K + k]) / bound;
          if (!(r <= worst)) { worst = r; at = row; }
        }
    if (row != R) { fprintf(stderr, "h5cmp: %s has %zu rows, the lists %zu\n", oth, R, row); return 1; }
    printf("h5cmp pertoken %s: %zu rows, %zu values; largest |sum of a row - its score| uses %.3g of the bound (row %zu)\n", ds, R, M, worst, at);
    return worst <= 1 ? 0 : 1;
  }
  if (!strcmp(mode, "topk")) {
    char    name[64];
    int     n1, n2, n3, n4, n5;
    hsize_t d1[8], d2[8], d3[8], d4[8], d5[8];
    size_t  c1, c2, c3, Q, N;
    double *ri, *rs, *oi, *all, *qn, *tn, tmax = 0;
    snprintf(name, sizeof(name), "%s/train_indices", ds);
    ri = read_all(ref, name, &n1, d1, &c1);
    oi = read_all(oth, name, &n2, d2, &c2);
    snprintf(name, sizeof(name), "%s/scores", ds);
    rs  = read_all(ref, name, &n3, d3, &c3);
    all = read_all(ref, "/scores", &n4, d4, &n);
    qn  = read_all(ref, "/query_norms", &n5, d5, &Q);
    tn  = read_all(ref, "/train_norms", &n5, d5, &N);
    if (c1 != c2 || c1 != c3 || n4 != 2 || d4[0] != Q || d4[1] != N || d1[0] != Q) { fprintf(stderr, "h5cmp: %s lists or /scores have other shapes in %s and %s\n", ds, ref, oth); return 2; }
    for (size_t j = 0; j < N; j++) tmax = fmax(tmax, tn[j]);
    for (size_t i = 0; i < c1; i++) {
      size_t  q = i / d1[1];
      int64_t j = (int64_t)oi[i];
      double  bound = 2 * tol * qn[q] * tmax + 0x1p-24 * fabs(rs[i]), r;
      if (j < 0 || (size_t)j >= N) { fprintf(stderr, "h5cmp: %s keeps index %lld\n", oth, (long long)j); return 1; }
      r = fabs(all[q * N + (size_t)j] - rs[i]) / bound;
      if (r > worst) { worst = r; at = i; }
    }
    printf("h5cmp topk %s: largest difference uses %.3g of the bound (entry %zu: indices %.0f vs %.0f)\n", ds, worst, at, ri[at], oi[at]);
    return worst <= 1 ? 0 : 1;
  }
  if (!strcmp(mode, "kept")) {
    char    name[64];
    int     n1, n2, n3, n5, nc = 0;
    hsize_t d1[8], d2[8], d3[8], d5[8], dc[8] = {0, 0};
    size_t  c1, c2, cc = 0, Q, N;
    double *oi, *os, *all, *qn, *tn, *cand = NULL;
    snprintf(name, sizeof(name), "%s/train_indices", ds);
    oi = read_all(oth, name, &n1, d1, &c1);
    snprintf(name, sizeof(name), "%s/scores", ds);
    os  = read_all(oth, name, &n2, d2, &c2);
    all = read_all(ref, "/scores", &n3, d3, &n);
    qn  = read_all(ref, "/query_norms", &n5, d5, &Q);
    tn  = read_all(ref, "/train_norms", &n5, d5, &N);
    {
      hid_t f = H5Fopen(oth, H5F_ACC_RDONLY, H5P_DEFAULT);
      int   has = f >= 0 && H5Lexists(f, "/tfidf", H5P_DEFAULT) > 0 && H5Lexists(f, "/tfidf/candidates", H5P_DEFAULT) > 0;
      if (f >= 0) H5Fclose(f);
      if (has) cand = read_all(oth, "/tfidf/candidates", &nc, dc, &cc);
    }
    if (c1 != c2 || n3 != 2 || d3[0] != Q || d3[1] != N || d1[0] != Q || (cand && dc[0] != Q)) { fprintf(stderr, "h5cmp: %s lists of %s do not match the (Q, N) /scores of %s\n", ds, oth, ref); return 2; }
    for (size_t i = 0; i < c1; i++) {
      size_t  q = i / d1[1];
      int64_t j = (int64_t)oi[i];
      double  r;
      if (j == -1) continue;
      if (j < 0 || (size_t)j >= N) { fprintf(stderr, "h5cmp: %s keeps index %lld\n", oth, (long long)j); return 1; }
      if (cand) {
        int found = 0;
        for (size_t c = 0; c < dc[1]; c++) found |= (int64_t)cand[q * dc[1] + c] == j;
        if (!found) { fprintf(stderr, "h5cmp: %s keeps index %lld for query %zu, which is not one of its /tfidf/candidates\n", oth, (long long)j, q); return 1; }
      }
      r = fabs(all[q * N + (size_t)j] - os[i]) / (tol * qn[q] * tn[j] + 0x1p-24 * fabs(os[i]));
      if (!(r <= worst)) { worst = r; at = i; } /* NaN fails */
    }
    printf("h5cmp kept %s: largest difference from the full scores uses %.3g of the bound (entry %zu)\n", ds, worst, at);
    return worst <= 1 ? 0 : 1;
  }
  a = read_all(ref, ds, &na, da, &n);
  b = read_all(oth, ds, &nb, db, &m);
  if (na != nb || n != m || memcmp(da, db, sizeof(hsize_t) * (size_t)na)) { fprintf(stderr, "h5cmp: %s has other shapes in %s and %s\n", ds, ref, oth); return 2; }
  for (size_t i = 0; i < n; i++)
    if (!isfinite(a[i]) || !isfinite(b[i])) { fprintf(stderr, "h5cmp: %s[%zu] is not finite (%g, %g)\n", ds, i, a[i], b[i]); return 1; }
  if (!strcmp(mode, "trace") || !strcmp(mode, "max")) {
    double scale = 0;
    if (!strcmp(mode, "trace")) {
      if (na != 2 || da[0] != da[1]) { fprintf(stderr, "h5cmp: trace needs a square matrix, %s is not\n", ds); return 2; }
      for (hsize_t i = 0; i < da[0]; i++) scale += a[i * da[0] + i];
    } else for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(a[i]));
    for (size_t i = 0; i < n; i++) {
      double r = fabs(a[i] - b[i]) / (tol * scale);
      if (r > worst) { worst = r; at = i; }
    }
  } else if (!strcmp(mode, "sum")) {
    double sa = 0, sb = 0, sabs = 0;
    for (size_t i = 0; i < n; i++) { sa += a[i]; sb += b[i]; sabs += fabs(a[i]); }
    worst = fabs(sa - sb) / (tol * sabs);
  } else if (!strcmp(mode, "scores")) {
    int     nq, nt;
    hsize_t dq[8], dt[8];
    size_t  Q, N;
    double *qn = read_all(ref, "/query_norms", &nq, dq, &Q), *tn = read_all(ref, "/train_norms", &nt, dt, &N);
    if (na != 2 || da[0] != Q || da[1] != N) { fprintf(stderr, "h5cmp: %s is not (%zu, %zu)\n", ds, Q, N); return 2; }
    for (size_t q = 0; q < Q; q++)
      for (size_t j = 0; j < N; j++) {
        double bound = tol * qn[q] * tn[j] + 0x1p-24 * (fabs(a[q * N + j]) + fabs(b[q * N + j])), d = fabs(a[q * N + j] - b[q * N + j]);
        double r = bound > 0 ? d / bound : (d > 0 ? INFINITY : 0);
        if (r > worst) { worst = r; at = q * N + j; }
      }
    free(qn);
    free(tn);
  } else if (!strcmp(mode, "store")) {
    int     nr, nt;
    hsize_t dr[8], dt[8];
    size_t  K, N;
    double *rn = read_all(ref, "/projection_norms", &nr, dr, &K), *tn = read_all(ref, "/train_norms", &nt, dt, &N);
    if (na != 2 || da[0] != N || da[1] != K) { fprintf(stderr, "h5cmp: %s is not (%zu, %zu)\n", ds, N, K); return 2; }
    for (size_t i = 0; i < N; i++)
      for (size_t j = 0; j < K; j++) {
        double bound = tol * rn[j] * tn[i] + 0x1p-24 * (fabs(a[i * K + j]) + fabs(b[i * K + j])), d = fabs(a[i * K + j] - b[i * K + j]);
        double r = bound > 0 ? d / bound : (d > 0 ? INFINITY : 0);
        if (r > worst) { worst = r; at = i * K + j; }
      }
    free(rn);
    free(tn);
  } else if (!strcmp(mode, "self")) {
    double kappa;
    if (argc < 7) { fprintf(stderr, "h5cmp: self needs FACTORS.h5\n"); return 2; }
    kappa = ekfac_kappa(argv[6]);
    for (size_t i = 0; i < n; i++) {
      double bound = tol * sqrt(kappa) * fabs(a[i]), d = fabs(a[i] - b[i]);
      double r = bound > 0 ? d / bound : (d > 0 ? INFINITY : 0);
      if (r > worst) { worst = r; at = i; }
    }
    printf("h5cmp: kappa %.3e\n", kappa);
  } else { fprintf(stderr, "h5cmp: unknown mode %s\n", mode); return 2; }
  printf("h5cmp %s %s: largest difference uses %.3g of the bound (entry %zu: %.9g vs %.9g)\n", mode, ds, worst, at, a[at], b[at]);
  free(a);
  free(b);
  return worst <= 1 ? 0 : 1;
}

/* The report of a language model's scores: queries and training sequences as text, tokens coloured by their
 * per-token influence (infl/report.h). */
#include "reportimpl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

PetscErrorCode InflReportFreeText(InflReport r)
{
  PetscFunctionBegin;
  PetscCall(PetscFree3(r->qoff, r->qtok, r->qstart));
  PetscCall(PetscFree3(r->pt_values, r->pt_tokens, r->pt_offsets));
  PetscCall(PetscFree3(r->pt_query, r->pt_train, r->pt_kind));
  r->R = r->M = 0;
  PetscFunctionReturn(0);
}

/* Collective (every rank reads the small arrays).  Called by InflReportLoadScores with the scores file open. */
PetscErrorCode InflReportLoadText(InflReport r, hid_t file, const char path[], InflData query)
{
  int         nd, ndo, nds;
  int64_t     dt[8], dof[8], dst[8];
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(r->comm, &rank));
  PetscCall(InflReportFreeText(r));
  /* the queries' tokens: from the file, else from the -query data */
  PetscCall(InflH5GetDims(file, "/query_sequences/tokens", &nd, dt));
  PetscCall(InflH5GetDims(file, "/query_sequences/offsets", &ndo, dof));
  PetscCall(InflH5GetDims(file, "/query_sequences/loss_start", &nds, dst));
  if (nd == 1 && ndo == 1 && nds == 1) {
    int64_t bad = -1;
    InflCheckAll(r->comm, dof[0] == r->Q + 1 && dst[0] == r->Q, PETSC_ERR_FILE_UNEXPECTED, "%s: /query_sequences has offsets of %" PRId64 " entries and loss_start of %" PRId64 " for %" PRId64 " queries (want Q+1 and Q); the file is damaged: recompute it with infl score", path, dof[0], dst[0], r->Q);
    PetscCall(PetscMalloc3(r->Q + 1, &r->qoff, PetscMax(dt[0], 1), &r->qtok, r->Q, &r->qstart));
    PetscCall(InflH5ReadArray(file, "/query_sequences/offsets", H5T_NATIVE_INT64, 1, dof, NULL, r->qoff));
    PetscCall(InflH5ReadArray(file, "/query_sequences/tokens", H5T_NATIVE_INT32, 1, dt, NULL, r->qtok));
    PetscCall(InflH5ReadArray(file, "/query_sequences/loss_start", H5T_NATIVE_INT64, 1, dst, NULL, r->qstart));
    if (r->qoff[0] != 0 || r->qoff[r->Q] != dt[0]) bad = 0;
    for (int64_t q = 0; q < r->Q && bad < 0; q++)
      if (r->qoff[q + 1] <= r->qoff[q] || r->qstart[q] < 1 || r->qstart[q] >= r->qoff[q + 1] - r->qoff[q] + 1) bad = q;
    InflCheckAll(r->comm, bad < 0, PETSC_ERR_FILE_UNEXPECTED, "%s: /query_sequences/offsets or loss_start of query %" PRId64 " are out of order or outside its tokens; the file is damaged: recompute it with infl score", path, bad);
  } else {
    int64_t Nq, seq;
    InflCheckAll(r->comm, query != NULL, PETSC_ERR_FILE_UNEXPECTED, "%s has no /query_sequences (the queries' tokens) and no -query data was given; pass the -query data the scores were computed on", path);
    PetscCall(InflDataGetSizes(query, &Nq, &seq, NULL));
    PetscCall(PetscMalloc3(r->Q + 1, &r->qoff, PetscMax(r->Q * seq, 1), &r->qtok, r->Q, &r->qstart));
    if (rank == 0) PetscCall(InflDataGetSequences(query, (PetscInt)r->Q, r->qindex, r->qtok, r->qoff)); /* rank 0 renders */
    for (int64_t q = 0; q < r->Q; q++) r->qstart[q] = 1;
  }
  /* per-token terms (-score_per_token) */
  PetscCall(InflH5GetDims(file, "/per_token/offsets", &ndo, dof));
  if (ndo == 1 && dof[0] >= 1) {
    int64_t dR[1], bad = -1;
    r->R = dof[0] - 1;
    dR[0] = r->R;
    PetscCall(InflH5GetDims(file, "/per_token/values", &nd, dt));
    InflCheckAll(r->comm, nd == 1, PETSC_ERR_FILE_UNEXPECTED, "%s: /per_token/offsets without /per_token/values; the file is damaged: recompute it with infl score -score_per_token", path);
    r->M = dt[0];
    PetscCall(PetscMalloc3(PetscMax(r->M, 1), &r->pt_values, PetscMax(r->M, 1), &r->pt_tokens, r->R + 1, &r->pt_offsets));
    PetscCall(PetscMalloc3(PetscMax(r->R, 1), &r->pt_query, PetscMax(r->R, 1), &r->pt_train, PetscMax(r->R, 1), &r->pt_kind));
    PetscCall(InflH5ReadArray(file, "/per_token/values", H5T_NATIVE_DOUBLE, 1, dt, NULL, r->pt_values));
    PetscCall(InflH5ReadArray(file, "/per_token/tokens", H5T_NATIVE_INT32, 1, dt, NULL, r->pt_tokens));
    PetscCall(InflH5ReadArray(file, "/per_token/offsets", H5T_NATIVE_INT64, 1, dof, NULL, r->pt_offsets));
    PetscCall(InflH5ReadArray(file, "/per_token/query", H5T_NATIVE_INT64, 1, dR, NULL, r->pt_query));
    PetscCall(InflH5ReadArray(file, "/per_token/train_index", H5T_NATIVE_INT64, 1, dR, NULL, r->pt_train));
    PetscCall(InflH5ReadArray(file, "/per_token/rank_kind", H5T_NATIVE_INT32, 1, dR, NULL, r->pt_kind));
    if (r->pt_offsets[0] != 0 || r->pt_offsets[r->R] != r->M) bad = 0;
    for (int64_t i = 0; i < r->R && bad < 0; i++)
      if (r->pt_offsets[i + 1] < r->pt_offsets[i] || r->pt_query[i] < 0 || r->pt_query[i] >= r->Q || r->pt_train[i] < 0 || r->pt_train[i] >= r->N || (r->pt_kind[i] != 1 && r->pt_kind[i] != -1)) bad = i;
    InflCheckAll(r->comm, bad < 0, PETSC_ERR_FILE_UNEXPECTED, "%s: row %" PRId64 " of /per_token (its offsets, query, train_index or rank_kind) is out of range; the file is damaged: recompute it with infl score -score_per_token", path, bad);
  }
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- decoding tokens for display */
/* Length of the valid UTF-8 character at the start of s (n bytes left), 0 if none. */
static size_t utf8_char(const char *s, size_t n)
{
  for (size_t k = 1; k <= 4 && k <= n; k++) {
    int64_t bad;
    if (!InflUTF8Check(s, k, &bad, NULL) && bad < 0) return k;
  }
  return 0;
}

/* Display units of n tokens with weights w (NULL: zeros): the decoded text of each token, a token whose bytes end
 * inside a multi-byte character merged with the (at most 3) tokens that complete it, their weights summed; bytes
 * that are no part of valid UTF-8 written as \xNN.  Out: *nu units, text[] (each PetscMalloc'd) and uw[] (nu). */
static PetscErrorCode decode_units(InflTokenizer tok, int64_t n, const int32_t ids[], const double w[], PetscInt *nu, char ***text, double **uw)
{
  char  **t;
  double *v;
  char    buf[256];
  PetscInt m = 0;

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(PetscMax(n, 1), &t));
  PetscCall(PetscMalloc1(PetscMax(n, 1), &v));
  for (int64_t i = 0; i < n;) {
    size_t    len = 0, pos = 0, out = 0, cap;
    int64_t   j   = i;
    char     *s;
    double    sum = 0;
    PetscBool ok  = PETSC_FALSE;
    /* join tokens i..j until the bytes end on a character boundary (at most 4 tokens) */
    for (; j < n && j < i + 4; j++) {
      const char *b;
      size_t      bl;
      PetscCall(InflTokenizerGetToken(tok, ids[j], &b, &bl));
      if (len + bl > sizeof(buf)) break;
      memcpy(buf + len, b, bl);
      len += bl;
      sum += w ? w[j] : 0;
      {
        int64_t bad;
        PetscCall(InflUTF8Check(buf, len, &bad, NULL));
        if (bad < 0) {
          ok = PETSC_TRUE;
          break;
        }
      }
    }
    if (!ok) { /* no character boundary within 4 tokens: show token i alone */
      const char *b;
      size_t      bl;
      PetscCall(InflTokenizerGetToken(tok, ids[i], &b, &bl));
      len = PetscMin(bl, sizeof(buf));
      memcpy(buf, b, len);
      sum = w ? w[i] : 0;
      j   = i;
    }
    cap = 4 * len + 1;
    PetscCall(PetscMalloc1(cap, &s));
    while (pos < len) {
      size_t k = utf8_char(buf + pos, len - pos);
      if (k) {
        memcpy(s + out, buf + pos, k);
        out += k;
        pos += k;
      } else {
        snprintf(s + out, cap - out, "\\x%02X", (unsigned char)buf[pos]);
        out += 4;
        pos++;
      }
    }
    s[out] = 0;
    t[m]   = s;
    v[m++] = sum;
    i      = j + 1;
  }
  *nu   = m;
  *text = t;
  *uw   = v;
  PetscFunctionReturn(0);
}

static PetscErrorCode free_units(PetscInt nu, char ***text, double **uw)
{
  PetscFunctionBegin;
  for (PetscInt i = 0; i < nu; i++) PetscCall(PetscFree((*text)[i]));
  PetscCall(PetscFree(*text));
  PetscCall(PetscFree(*uw));
  PetscFunctionReturn(0);
}

/* One coloured text block: n tokens with weights (NULL: uncoloured). */
static PetscErrorCode tokens_block(InflPage page, InflReport r, const char title[], int64_t n, const int32_t ids[], const double w[])
{
  PetscInt nu   = 0;
  char   **text = NULL;
  double  *uw   = NULL;

  PetscFunctionBegin;
  PetscCall(decode_units(r->tok, n, ids, w, &nu, &text, &uw));
  PetscCall(InflPageTokens(page, title, nu, (const char *const *)text, uw));
  PetscCall(free_units(nu, &text, &uw));
  PetscFunctionReturn(0);
}

/* A training sequence shown for query q: its per-token row if the file has one, else its tokens from the data.  A
 * kept entry of the wrong sign (a bottom-k score >= 0 when the query has fewer negative scores than kept, or a top-k
 * score <= 0) is titled "Lowest" / "Highest" and says that it is no opponent / proponent. */
static PetscErrorCode train_block(InflPage page, InflReport r, PetscInt q, int kind, PetscInt k, int64_t idx, double score, int32_t *buf, int64_t seq)
{
  char        title[384];
  int64_t     row = -1;
  const int   wrong = kind > 0 ? !(score > 0) : !(score < 0);
  const char *label = kind > 0 ? (wrong ? "Highest" : "Proponent") : (wrong ? "Lowest" : "Opponent");
  const char *note  = !wrong ? "" : kind > 0 ? " - not a proponent: its score is not positive" : " - not an opponent: its score is not negative (upweighting it does not raise the query loss)";

  PetscFunctionBegin;
  for (int64_t i = 0; i < r->R && row < 0; i++)
    if (r->pt_query[i] == q && r->pt_train[i] == idx && r->pt_kind[i] == kind) row = i;
  if (row >= 0) {
    const int64_t o = r->pt_offsets[row], n = r->pt_offsets[row + 1] - o;
    double        sum = 0, m = 0;
    for (int64_t t = 0; t < n; t++) {
      sum += r->pt_values[o + t];
      m = PetscMax(m, fabs(r->pt_values[o + t]));
    }
    PetscCall(PetscSNPrintf(title, sizeof(title), "%s %d: training sequence %" PRId64 ", score %.4g (token terms sum to %.4g; full colour = |term| %.3g)%s", label, (int)k + 1, idx, score, sum, m, note));
    PetscCall(tokens_block(page, r, title, n, r->pt_tokens + o, r->pt_values + o));
  } else {
    int64_t off[2];
    PetscCall(InflDataGetSequences(r->train, 1, &idx, buf, off));
    PetscCall(PetscSNPrintf(title, sizeof(title), "%s %d: training sequence %" PRId64 ", score %.4g%s", label, (int)k + 1, idx, score, note));
    PetscCall(tokens_block(page, r, title, off[1] - off[0], buf, NULL));
  }
  (void)seq;
  PetscFunctionReturn(0);
}

static PetscErrorCode render_self_text(InflPage page, InflReport r, int32_t *buf)
{
  Ranked  *rk;
  int64_t  n;
  double   mean = 0;
  char     title[160];

  PetscFunctionBegin;
  PetscCall(InflPageSectionBegin(page, "self-influence", "Self-influence extremes"));
  PetscCall(InflPageText(page, NULL, "Training sequences whose own loss the model is most (and least) sensitive to: self-influence <P(z), grad L(z)> with the token-summed gradient of the sequence. High values often mark atypical, duplicated-against-the-grain or noisy documents; the lowest are those the model has learned to predict."));
  PetscCall(InflReportRankSelf(r, &rk, &mean));
  n = PetscMin((r->nself + 1) / 2, r->N);
  for (int side = 0; side < 2; side++) {
    PetscCall(PetscSNPrintf(title, sizeof(title), side == 0 ? "The %" PRId64 " training sequences of highest self-influence" : "The %" PRId64 " training sequences of lowest self-influence", n));
    PetscCall(InflPageText(page, NULL, "%s", title));
    for (int64_t i = 0; i < n; i++) {
      const Ranked *e = side == 0 ? &rk[i] : &rk[r->N - 1 - i];
      int64_t       off[2];
      char          t2[160];
      if (side == 1 && r->N - 1 - i < n) break; /* fewer than 2n sequences: each shown once */
      PetscCall(InflDataGetSequences(r->train, 1, &e->i, buf, off));
      PetscCall(PetscSNPrintf(t2, sizeof(t2), "training sequence %" PRId64 ": self-influence %.4g", e->i, e->v));
      PetscCall(tokens_block(page, r, t2, off[1] - off[0], buf, NULL));
    }
  }
  {
    double      m  = mean;
    const char *ml = "mean";
    PetscCall(PetscSNPrintf(title, sizeof(title), "Self-influence of all %" PRId64 " training sequences", r->N));
    PetscCall(InflPageHistogram(page, title, r->N, r->self, r->bins, PETSC_TRUE, 1, &m, &ml));
  }
  PetscCall(PetscFree(rk));
  PetscCall(InflPageSectionEnd(page));
  PetscFunctionReturn(0);
}

/* Rank 0: the summary, the shown queries and the self-influence extremes of a language model's scores. */
PetscErrorCode InflReportRenderText(InflPage page, InflReport r, PetscInt nq, PetscInt ks)
{
  int64_t  seq;
  int32_t *buf;
  char     title[256], id[32];

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(r->train, NULL, &seq, NULL));
  PetscCall(PetscMalloc1(PetscMax(seq, 1), &buf));
  PetscCall(InflPageSectionBegin(page, "summary", "Summary"));
  PetscCall(InflPageText(page, NULL, "Influence of training sequences on a language model's predictions (EK-FAC influence functions). For each query, proponents are the training sequences whose upweighting most lowers the query's loss (positive score), opponents those whose upweighting most raises it (negative score)."));
  if (r->R > 0) {
    const char  *keys[5] = {" -1 ", " -0.5 ", " 0 ", " +0.5 ", " +1 "};
    const double vals[5] = {-1, -0.5, 0, 0.5, 1};
    PetscCall(InflPageTokens(page, "Colour scale: a token's term divided by the largest |term| of its sequence", 5, keys, vals));
  }
  if (r->R > 0) PetscCall(InflPageText(page, NULL, "Colours: each training token's term sum over layers of Ds_t^T P_l a_t, where t is the token's position as input (it predicts the token after it); the terms of a sequence sum to its score. Red: the token's term is positive (it adds to the score), blue: negative; the intensity is |term| relative to the sequence's largest |term| (given in its title). Hover over a token for its term."));
  else PetscCall(InflPageText(page, "note", "The scores file has no per-token terms (infl score -score_per_token), so training sequences are shown uncoloured."));
  PetscCall(InflPageText(page, "note", "Showing %d of %" PRId64 " queries (-report_queries), %d of the %" PRId64 " proponents and opponents kept per query (-report_k).%s", (int)nq, r->Q, (int)ks, r->K, r->L > 0 ? " Per-layer contributions are shown." : ""));
  PetscCall(InflPageSectionEnd(page));
  for (PetscInt q = 0; q < nq; q++) {
    const int64_t o = r->qoff[q], n = r->qoff[q + 1] - o, p = r->qstart[q];
    PetscCall(PetscSNPrintf(title, sizeof(title), "Query %" PRId64 " (%" PRId64 " tokens)", r->qindex[q], n));
    PetscCall(PetscSNPrintf(id, sizeof(id), "query-%d", (int)q));
    PetscCall(InflPageSectionBegin(page, id, title));
    if (p > 1) { /* prompt/completion: the completion's tokens alone enter the query loss */
      PetscCall(tokens_block(page, r, "Prompt", p, r->qtok + o, NULL));
      PetscCall(tokens_block(page, r, "Completion (the query loss is -log p(completion | prompt))", n - p, r->qtok + o + p, NULL));
    } else PetscCall(tokens_block(page, r, "Query text (the query loss is the sequence's next-token loss)", n, r->qtok + o, NULL));
    for (int s = 0; s < 2; s++) {
      const int64_t *idx   = s == 0 ? r->top_idx : r->bot_idx;
      const double  *sc    = s == 0 ? r->top_s : r->bot_s;
      PetscInt       shown = 0;
      PetscCall(InflPageText(page, NULL, "%s", s == 0 ? "Proponents (highest scores: upweighting them lowers the query loss)" : "Opponents (most negative scores: upweighting them raises the query loss)"));
      for (PetscInt k = 0; k < ks; k++) {
        const int64_t e = (int64_t)q * r->K + k;
        if (idx[e] < 0) continue;
        PetscCall(train_block(page, r, q, s == 0 ? 1 : -1, k, idx[e], sc[e], buf, seq));
        shown++;
      }
      if (!shown) PetscCall(InflPageText(page, "note", "No entries (the scores file holds none for this query)."));
    }
    PetscCall(InflReportRenderLayers(page, r, q));
    PetscCall(InflPageSectionEnd(page));
  }
  if (r->has_self) PetscCall(render_self_text(page, r, buf));
  PetscCall(PetscFree(buf));
  PetscFunctionReturn(0);
}

/* Token corpora: text files tokenized here, llm.c .bin and HDF5 token files; windows of n_positions tokens.
 * The formats and rules are in include/infl/tokens.h and docs/FORMATS.md ("Text and token data"). */
#include "io/tokimpl.h"
#include <infl/tokens.h>
#include <infl/io.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LLMC_MAGIC 20240520
#define LLMC_HEADER_INTS 256

struct _p_InflTokens {
  MPI_Comm       comm;
  char          *prefix;
  InflTokenizer  tok;        /* not owned */
  InflTextFormat format;
  PetscInt       vocab_size; /* 0: unset */
  PetscInt       doc_start;  /* .bin document-start token, -1 none */
  int64_t        ndoc, ntok, skipped;
  int32_t       *tokens;     /* (ntok) */
  int64_t       *offsets;    /* (ndoc+1) */
  int            nfiles;
  char         **files;      /* (nfiles) paths */
  int32_t       *doc_file;   /* (ndoc) index into files */
  int64_t       *doc_line;   /* (ndoc) text: first line (1-based); tokens: first token's index in the file */
  char           hash[65];
  PetscBool      loaded;
};

PetscErrorCode InflTokensCreate(MPI_Comm comm, InflTokens *c)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(c));
  (*c)->comm      = comm;
  (*c)->format    = INFL_TEXT_FORTUNES;
  (*c)->doc_start = 50256;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensSetOptionsPrefix(InflTokens c, const char prefix[])
{
  PetscFunctionBegin;
  PetscCall(PetscFree(c->prefix));
  if (prefix) PetscCall(PetscStrallocpy(prefix, &c->prefix));
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensSetFromOptions(InflTokens c)
{
  static const char *const formats[] = {"fortunes", "lines"};
  PetscInt                 f         = (PetscInt)c->format, ds = c->doc_start;

  PetscFunctionBegin;
  PetscOptionsBegin(c->comm, c->prefix, "Token corpus options", NULL);
  PetscCall(PetscOptionsEList("-tokens_text_format", "text: documents separated by lines holding only %% (fortunes) or one per line (lines)", "InflTokensSetTextFormat", formats, 2, formats[f], &f, NULL));
  PetscCall(PetscOptionsInt("-tokens_document_start", "token that starts a document in an llm.c .bin file (-1: the file is one document)", "InflTokensSetDocumentStart", ds, &ds, NULL));
  PetscOptionsEnd();
  PetscCheck(ds >= -1, c->comm, PETSC_ERR_ARG_OUTOFRANGE, "-%stokens_document_start %" PetscInt_FMT ": give a token id >= 0, or -1 for none", c->prefix ? c->prefix : "", ds);
  c->format    = (InflTextFormat)f;
  c->doc_start = ds;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensSetTokenizer(InflTokens c, InflTokenizer t)
{
  PetscFunctionBegin;
  c->tok = t;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensSetTextFormat(InflTokens c, InflTextFormat f)
{
  PetscFunctionBegin;
  PetscCheck(f == INFL_TEXT_FORTUNES || f == INFL_TEXT_LINES, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "text format %d: use INFL_TEXT_FORTUNES or INFL_TEXT_LINES", (int)f);
  c->format = f;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensSetVocabSize(InflTokens c, PetscInt vocab_size)
{
  PetscFunctionBegin;
  PetscCheck(vocab_size > 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "vocab_size %" PetscInt_FMT ": must be positive", vocab_size);
  c->vocab_size = vocab_size;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensSetDocumentStart(InflTokens c, PetscInt id)
{
  PetscFunctionBegin;
  PetscCheck(id >= -1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "document-start token %" PetscInt_FMT ": give an id >= 0, or -1 for none", id);
  c->doc_start = id;
  PetscFunctionReturn(0);
}

static PetscErrorCode tokens_reset(InflTokens c)
{
  PetscFunctionBegin;
  PetscCall(PetscFree(c->tokens));
  PetscCall(PetscFree(c->offsets));
  PetscCall(PetscFree(c->doc_file));
  PetscCall(PetscFree(c->doc_line));
  for (int i = 0; i < c->nfiles; i++) PetscCall(PetscFree(c->files[i]));
  PetscCall(PetscFree(c->files));
  c->nfiles = 0;
  c->ndoc = c->ntok = c->skipped = 0;
  c->hash[0]                      = 0;
  c->loaded                       = PETSC_FALSE;
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- text (rank 0 part) */

static int name_cmp(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of PATH: itself, or a directory's regular files not starting with '.', in name order. */
static PetscErrorCode list_files(InflTokens c, const char path[])
{
  struct stat st;

  PetscFunctionBegin;
  PetscCheck(stat(path, &st) == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "text:%s: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode)) {
    PetscCall(PetscMalloc1(1, &c->files));
    PetscCall(PetscStrallocpy(path, &c->files[0]));
    c->nfiles = 1;
  } else {
    DIR           *d = opendir(path);
    struct dirent *e;
    int            cap = 16;
    PetscCheck(d, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "text:%s: cannot open the directory: %s", path, strerror(errno));
    PetscCall(PetscMalloc1(cap, &c->files));
    while ((e = readdir(d))) {
      char full[PETSC_MAX_PATH_LEN];
      if (e->d_name[0] == '.') continue;
      PetscCall(PetscSNPrintf(full, sizeof(full), "%s/%s", path, e->d_name));
      if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (c->nfiles == cap) {
        char **more;
        PetscCall(PetscMalloc1(2 * cap, &more));
        PetscCall(PetscArraycpy(more, c->files, cap));
        PetscCall(PetscFree(c->files));
        c->files = more;
        cap *= 2;
      }
      PetscCall(PetscStrallocpy(full, &c->files[c->nfiles++]));
    }
    closedir(d);
    PetscCheck(c->nfiles > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "text:%s: the directory holds no regular files (names starting with '.' are ignored)", path);
    qsort(c->files, (size_t)c->nfiles, sizeof(char *), name_cmp);
  }
  PetscFunctionReturn(0);
}

typedef struct {
  char    *text;              /* (len) all files' bytes, one after the other */
  size_t   len;
  int64_t  ndoc, cap;
  int64_t *begin, *end;       /* (ndoc) byte ranges of documents in text */
  int32_t *file;              /* (ndoc) */
  int64_t *line;              /* (ndoc) */
} TextPlan;

static PetscErrorCode plan_add(TextPlan *p, int64_t b, int64_t e, int32_t file, int64_t line, int64_t *skipped)
{
  PetscFunctionBegin;
  {
    int64_t k = b;
    while (k < e && p->text[k] == '\n') k++;
    if (k == e) { /* empty, or newlines only */
      (*skipped)++;
      PetscFunctionReturn(0);
    }
  }
  if (p->ndoc == p->cap) {
    int64_t  cap = PetscMax(64, 2 * p->cap);
    int64_t *nb, *ne, *nl;
    int32_t *nf;
    PetscCall(PetscMalloc4(cap, &nb, cap, &ne, cap, &nf, cap, &nl));
    if (p->ndoc) {
      PetscCall(PetscArraycpy(nb, p->begin, p->ndoc));
      PetscCall(PetscArraycpy(ne, p->end, p->ndoc));
      PetscCall(PetscArraycpy(nf, p->file, p->ndoc));
      PetscCall(PetscArraycpy(nl, p->line, p->ndoc));
    }
    PetscCall(PetscFree4(p->begin, p->end, p->file, p->line));
    p->begin = nb, p->end = ne, p->file = nf, p->line = nl, p->cap = cap;
  }
  p->begin[p->ndoc] = b;
  p->end[p->ndoc]   = e;
  p->file[p->ndoc]  = file;
  p->line[p->ndoc]  = line;
  p->ndoc++;
  PetscFunctionReturn(0);
}

/* Documents of file f, whose bytes are p->text[base, base+n). */
static PetscErrorCode split_documents(InflTokens c, TextPlan *p, int32_t f, int64_t base, int64_t n)
{
  const char *s = p->text;
  int64_t     ls = base, lineno = 1, dstart = base, dline = 1;

  PetscFunctionBegin;
  while (ls < base + n) {
    int64_t le = ls;
    while (le < base + n && s[le] != '\n') le++;
    if (le < base + n) le++; /* [ls, le) is the line with its newline */
    if (c->format == INFL_TEXT_LINES) PetscCall(plan_add(p, ls, le, f, lineno, &c->skipped));
    else if (s[ls] == '%' && (le - ls == 1 || (le - ls == 2 && s[ls + 1] == '\n'))) {
      PetscCall(plan_add(p, dstart, ls, f, dline, &c->skipped));
      dstart = le;
      dline  = lineno + 1;
    }
    ls = le;
    lineno++;
  }
  /* the text after the last "%" line: nothing when the file ends with one, as fortune files do */
  if (c->format == INFL_TEXT_FORTUNES && dstart < base + n) PetscCall(plan_add(p, dstart, base + n, f, dline, &c->skipped));
  PetscFunctionReturn(0);
}

static PetscErrorCode hash_bytes_with_length(InflHash h, const char *b, int64_t n)
{
  PetscFunctionBegin;
  PetscCall(InflHashUpdate(h, &n, sizeof(n)));
  PetscCall(InflHashUpdate(h, b, (size_t)n));
  PetscFunctionReturn(0);
}

/* Rank 0: list, read, check (UTF-8 for BPE), split, hash. */
static PetscErrorCode text_read(InflTokens c, const char path[], TextPlan *p)
{
  size_t            total = 0;
  InflTokenizerType type;
  InflHash          h;
  const char       *th;

  PetscFunctionBegin;
  PetscCall(list_files(c, path));
  for (int f = 0; f < c->nfiles; f++) {
    struct stat st;
    PetscCheck(stat(c->files[f], &st) == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "text:%s: cannot stat %s: %s", path, c->files[f], strerror(errno));
    total += (size_t)st.st_size;
  }
  PetscCall(PetscMalloc1(total + 1, &p->text));
  PetscCall(InflTokenizerGetType(c->tok, &type));
  PetscCall(InflTokenizerGetHash(c->tok, &th));
  PetscCall(InflHashCreate(&h));
  {
    char opts[256];
    PetscCall(PetscSNPrintf(opts, sizeof(opts), "infl tokens text format=%s tokenizer=%s", c->format == INFL_TEXT_LINES ? "lines" : "fortunes", th));
    PetscCall(InflHashUpdate(h, opts, strlen(opts)));
  }
  for (int f = 0; f < c->nfiles; f++) {
    char       *buf;
    size_t      n;
    int64_t     bad;
    const char *why;
    PetscCall(InflReadFile_Private(c->files[f], &buf, &n));
    PetscCheck(p->len + n <= total, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "text:%s: %s grew while it was read", path, c->files[f]);
    PetscCall(PetscMemcpy(p->text + p->len, buf, n));
    PetscCall(PetscFree(buf));
    PetscCall(hash_bytes_with_length(h, p->text + p->len, (int64_t)n));
    if (type == INFL_TOKENIZER_BPE) {
      PetscCall(InflUTF8Check(p->text + p->len, n, &bad, &why));
      if (bad >= 0) {
        int64_t line = 1;
        for (int64_t i = 0; i < bad; i++) line += p->text[p->len + i] == '\n';
        SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: line %" PRId64 ": invalid UTF-8 at byte offset %" PRId64 ": %s (byte 0x%02X); GPT-2's tokenizer reads UTF-8 text (convert the file, e.g. iconv -f latin1 -t utf-8)", c->files[f], line, bad, why, (unsigned)(unsigned char)p->text[p->len + bad]);
      }
    }
    PetscCall(split_documents(c, p, f, (int64_t)p->len, (int64_t)n));
    p->len += n;
  }
  PetscCall(InflHashFinal(&h, c->hash));
  PetscCheck(p->ndoc > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "text:%s: no document (%" PRId64 " empty ones skipped in %d file(s)); the corpus is empty", path, c->skipped, c->nfiles);
  PetscFunctionReturn(0);
}

/* Collective: the plan on rank 0 -> every rank. */
static PetscErrorCode plan_bcast(InflTokens c, TextPlan *p)
{
  PetscMPIInt rank;
  int64_t     sz[4];
  int64_t     namelen = 0;
  char       *names;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(c->comm, &rank));
  for (int f = 0; f < c->nfiles; f++) namelen += (int64_t)strlen(c->files[f]) + 1;
  sz[0] = (int64_t)p->len, sz[1] = p->ndoc, sz[2] = c->nfiles, sz[3] = namelen;
  PetscCall(InflBcast(sz, 4, MPI_INT64_T, 0, c->comm));
  PetscCall(InflBcast(&c->skipped, 1, MPI_INT64_T, 0, c->comm));
  PetscCall(InflBcast(c->hash, 65, MPI_CHAR, 0, c->comm));
  PetscCall(PetscMalloc1(sz[3] + 1, &names));
  if (rank == 0) {
    int64_t k = 0;
    for (int f = 0; f < c->nfiles; f++) {
      size_t l = strlen(c->files[f]) + 1;
      PetscCall(PetscMemcpy(names + k, c->files[f], l));
      k += (int64_t)l;
    }
  } else {
    p->len  = (size_t)sz[0];
    p->ndoc = p->cap = sz[1];
    PetscCall(PetscMalloc1(sz[0] + 1, &p->text));
    PetscCall(PetscMalloc4(p->ndoc, &p->begin, p->ndoc, &p->end, p->ndoc, &p->file, p->ndoc, &p->line));
  }
  PetscCall(InflBcast(names, sz[3], MPI_CHAR, 0, c->comm));
  if (rank != 0) {
    int64_t k = 0;
    c->nfiles = (int)sz[2];
    PetscCall(PetscMalloc1(c->nfiles, &c->files));
    for (int f = 0; f < c->nfiles; f++) {
      PetscCall(PetscStrallocpy(names + k, &c->files[f]));
      k += (int64_t)strlen(names + k) + 1;
    }
  }
  PetscCall(PetscFree(names));
  PetscCall(InflBcast(p->text, (int64_t)p->len, MPI_CHAR, 0, c->comm));
  PetscCall(InflBcast(p->begin, p->ndoc, MPI_INT64_T, 0, c->comm));
  PetscCall(InflBcast(p->end, p->ndoc, MPI_INT64_T, 0, c->comm));
  PetscCall(InflBcast(p->file, p->ndoc, MPI_INT32_T, 0, c->comm));
  PetscCall(InflBcast(p->line, p->ndoc, MPI_INT64_T, 0, c->comm));
  PetscFunctionReturn(0);
}

/* Shares of the documents: rank r tokenizes documents [first[r], first[r+1]).  Document d goes to rank
 * min(size-1, (bytes before d) / ceil(all bytes / size)): contiguous shares balanced by bytes, the same on every rank. */
static PetscErrorCode doc_shares(const TextPlan *p, PetscMPIInt size, int64_t first[])
{
  int64_t total = 0, before = 0, chunk, r = 0;

  PetscFunctionBegin;
  for (int64_t d = 0; d < p->ndoc; d++) total += p->end[d] - p->begin[d];
  chunk    = PetscMax(1, (total + size - 1) / size);
  first[0] = 0;
  for (int64_t d = 0; d < p->ndoc; d++) {
    int64_t owner = PetscMin((int64_t)size - 1, before / chunk);
    while (r < owner) first[++r] = d;
    before += p->end[d] - p->begin[d];
  }
  while (r < size) first[++r] = p->ndoc;
  PetscFunctionReturn(0);
}

static PetscErrorCode text_tokenize(InflTokens c, const TextPlan *p, int64_t d0, int64_t d1, InflIdBuf *b, int64_t *counts)
{
  PetscFunctionBegin;
  for (int64_t d = d0; d < d1; d++) {
    int64_t        n0 = b->n;
    PetscErrorCode e;
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    e = InflTokenizerEncodeAppend_Private(c->tok, p->text + p->begin[d], (size_t)(p->end[d] - p->begin[d]), b);
    PetscCall(PetscPopErrorHandler());
    if (e) {
      char       *specific = NULL;
      const char *generic  = NULL;
      PetscErrorMessage(e, &generic, &specific);
      SETERRQ(PETSC_COMM_SELF, e, "%s: document starting at line %" PRId64 ": %s", c->files[p->file[d]], p->line[d], specific ? specific : generic);
    }
    counts[d - d0] = b->n - n0;
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode text_load(InflTokens c, const char path[])
{
  TextPlan    p = {0};
  PetscMPIInt rank, size;
  int64_t     d0, d1, *counts; /* (d1-d0) tokens of each of this rank's documents */
  int64_t    *first;           /* (size+1) document shares of the ranks */
  InflIdBuf   b = {NULL, 0, 0};
  PetscInt    V;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(c->comm, &rank));
  PetscCallMPI(MPI_Comm_size(c->comm, &size));
  PetscCheck(c->tok, c->comm, PETSC_ERR_ORDER, "text:%s needs a tokenizer: call InflTokensSetTokenizer before InflTokensLoad", path);
  PetscCall(InflTokenizerGetVocabSize(c->tok, &V));
  PetscCheck(V > 0, c->comm, PETSC_ERR_ORDER, "text:%s: the tokenizer has no kind yet (InflTokenizerSetType or InflTokenizerLoad)", path);
  if (c->vocab_size) PetscCall(InflTokenizerCheckVocabSize(c->tok, c->vocab_size));
  InflCallAll(c->comm, rank == 0 ? text_read(c, path, &p) : 0);
  PetscCall(plan_bcast(c, &p));
  PetscCall(PetscMalloc1(size + 1, &first));
  PetscCall(doc_shares(&p, size, first));
  d0 = first[rank];
  d1 = first[rank + 1];
  PetscCall(PetscMalloc1(d1 - d0 + 1, &counts));
  PetscCall(InflIdBufReserve_Private(&b, 1));
  {
    PetscLogDouble t0, t1;
    PetscCall(PetscTime(&t0));
    InflCallAll(c->comm, text_tokenize(c, &p, d0, d1, &b, counts));
    PetscCall(PetscTime(&t1));
    PetscCall(PetscInfo(NULL, "text:%s: rank %d tokenized documents [%" PRId64 ", %" PRId64 ") of %" PRId64 " (%" PRId64 " bytes) into %" PRId64 " tokens in %.3f s\n", path, (int)rank, d0, d1, p.ndoc, d1 > d0 ? p.end[d1 - 1] - p.begin[d0] : 0, b.n, t1 - t0));
  }
  /* gather: every rank's counts and ids, broadcast in rank order */
  c->ndoc = p.ndoc;
  PetscCall(PetscMalloc1(c->ndoc + 1, &c->offsets));
  {
    int64_t *all = c->offsets + 1; /* (ndoc) counts, then prefix sums */
    int64_t  r0, r1, nloc = b.n, pos;
    for (PetscMPIInt r = 0; r < size; r++) {
      r0 = first[r], r1 = first[r + 1];
      if (r == rank) PetscCall(PetscArraycpy(all + r0, counts, r1 - r0));
      PetscCall(InflBcast(all + r0, r1 - r0, MPI_INT64_T, r, c->comm));
    }
    c->offsets[0] = 0;
    for (int64_t d = 0; d < c->ndoc; d++) c->offsets[d + 1] += c->offsets[d];
    c->ntok = c->offsets[c->ndoc];
    PetscCall(PetscMalloc1(c->ntok + 1, &c->tokens));
    for (PetscMPIInt r = 0; r < size; r++) {
      r0 = first[r], r1 = first[r + 1];
      pos = c->offsets[r0];
      if (r == rank) PetscCall(PetscArraycpy(c->tokens + pos, b.ids, nloc));
      PetscCall(InflBcast(c->tokens + pos, c->offsets[r1] - pos, MPI_INT32_T, r, c->comm));
    }
  }
  PetscCall(PetscFree(counts));
  PetscCall(PetscFree(first));
  PetscCall(PetscFree(b.ids));
  PetscCall(PetscMalloc1(c->ndoc, &c->doc_file));
  PetscCall(PetscMalloc1(c->ndoc, &c->doc_line));
  PetscCall(PetscArraycpy(c->doc_file, p.file, c->ndoc));
  PetscCall(PetscArraycpy(c->doc_line, p.line, c->ndoc));
  PetscCall(PetscFree(p.text));
  PetscCall(PetscFree4(p.begin, p.end, p.file, p.line));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- tokens: files (rank 0 part) */

static uint32_t le32(const unsigned char *b)
{
  return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* Documents from the ids: every c->doc_start token starts one. */
static PetscErrorCode split_at_document_start(InflTokens c)
{
  int64_t n = 0;

  PetscFunctionBegin;
  for (int64_t i = 0; i < c->ntok; i++)
    if (i == 0 || c->tokens[i] == c->doc_start) n++;
  c->ndoc = n;
  PetscCall(PetscMalloc1(n + 1, &c->offsets));
  n = 0;
  for (int64_t i = 0; i < c->ntok; i++)
    if (i == 0 || c->tokens[i] == c->doc_start) c->offsets[n++] = i;
  c->offsets[n] = c->ntok;
  PetscFunctionReturn(0);
}

static PetscErrorCode check_ids(InflTokens c, const char path[])
{
  PetscFunctionBegin;
  for (int64_t i = 0; i < c->ntok; i++)
    if (c->tokens[i] < 0 || c->tokens[i] >= c->vocab_size) {
      int64_t d = 0;
      if (c->offsets) /* the document holding token i */
        for (int64_t lo = 0, hi = c->ndoc; lo < hi;) {
          int64_t mid = (lo + hi) / 2;
          if (c->offsets[mid + 1] <= i) lo = mid + 1;
          else hi = mid, d = mid;
        }
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: token %" PRId64 " (document %" PRId64 ") has id %d, outside the vocabulary [0, %" PetscInt_FMT "); the file was made with another tokenizer, or give the model's vocab_size", path, i, d, (int)c->tokens[i], c->vocab_size);
    }
  PetscFunctionReturn(0);
}

static PetscErrorCode bin_read(InflTokens c, const char path[], const char *buf, size_t len)
{
  const unsigned char *u = (const unsigned char *)buf;
  int32_t              version, n;

  PetscFunctionBegin;
  PetscCheck(len >= 4 * LLMC_HEADER_INTS, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %zu bytes, shorter than llm.c's %d-byte header; the file is truncated", path, len, 4 * LLMC_HEADER_INTS);
  version = (int32_t)le32(u + 4);
  n       = (int32_t)le32(u + 8);
  PetscCheck(version == 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: llm.c header version %d; only version 1 (uint16 tokens) is read", path, (int)version);
  PetscCheck(n > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the llm.c header gives %d tokens; a token file needs at least one", path, (int)n);
  PetscCheck(len >= 4 * LLMC_HEADER_INTS + 2 * (size_t)n, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated: the header promises %d tokens (%zu bytes) but the file holds %zu bytes after the header", path, (int)n, 2 * (size_t)n, len - 4 * LLMC_HEADER_INTS);
  PetscCheck(len == 4 * LLMC_HEADER_INTS + 2 * (size_t)n, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %zu bytes follow the %d tokens that the header promises; the header is wrong or this is not an llm.c token file", path, len - 4 * LLMC_HEADER_INTS - 2 * (size_t)n, (int)n);
  c->ntok = n;
  PetscCall(PetscMalloc1(c->ntok, &c->tokens));
  for (int64_t i = 0; i < c->ntok; i++) c->tokens[i] = (int32_t)u[4 * LLMC_HEADER_INTS + 2 * i] | ((int32_t)u[4 * LLMC_HEADER_INTS + 2 * i + 1] << 8);
  if (c->doc_start >= 0) PetscCall(split_at_document_start(c));
  else {
    c->ndoc = 1;
    PetscCall(PetscMalloc1(2, &c->offsets));
    c->offsets[0] = 0;
    c->offsets[1] = c->ntok;
  }
  PetscCall(check_ids(c, path));
  PetscFunctionReturn(0);
}

/* 1-D integer dataset `name` of file f: its length; error naming the file otherwise. */
static PetscErrorCode h5_int_dataset(hid_t f, const char path[], const char name[], int64_t *n)
{
  hid_t       d, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
  int         nd = -1;
  hsize_t     dims[1] = {0};
  H5T_class_t cls     = H5T_NO_CLASS;
  size_t      sz      = 0;

  PetscFunctionBegin;
  PetscCheck(H5Lexists(f, name + 1, H5P_DEFAULT) > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: no dataset %s; an HDF5 token file holds /tokens (ntok) integers and /offsets (ndoc+1) int64", path, name);
  d = H5Dopen2(f, name, H5P_DEFAULT);
  PetscCheck(d >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %s is not a dataset", path, name);
  if ((t = H5Dget_type(d)) >= 0) {
    cls = H5Tget_class(t);
    sz  = H5Tget_size(t);
  }
  if ((s = H5Dget_space(d)) >= 0 && (nd = H5Sget_simple_extent_ndims(s)) == 1 && H5Sget_simple_extent_dims(s, dims, NULL) < 0) nd = -1;
  if (s >= 0) InflCallH5(H5Sclose(s));
  if (t >= 0) InflCallH5(H5Tclose(t));
  InflCallH5(H5Dclose(d));
  PetscCheck(t >= 0 && s >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: cannot read the type or shape of %s (the file is corrupt)", path, name);
  PetscCheck(cls == H5T_INTEGER && sz >= 1 && sz <= 8, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %s is not an integer dataset (store int32 or uint16 token ids and int64 offsets)", path, name);
  PetscCheck(nd == 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %s has %d dimensions, expected 1", path, name, nd);
  *n = (int64_t)dims[0];
  PetscFunctionReturn(0);
}

static PetscErrorCode h5_read_local(hid_t f, const char path[], const char name[], int64_t *buf)
{
  hid_t d;

  PetscFunctionBegin;
  d = H5Dopen2(f, name, H5P_DEFAULT);
  PetscCheck(d >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: cannot open %s", path, name);
  if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    H5Dclose(d);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: cannot read %s (the file is truncated or corrupt)", path, name);
  }
  InflCallH5(H5Dclose(d));
  PetscFunctionReturn(0);
}

static PetscErrorCode h5_tokens_read(InflTokens c, const char path[], hid_t f)
{
  int64_t  nt, no, *tmp; /* (nt) ids as int64 */

  PetscFunctionBegin;
  PetscCall(h5_int_dataset(f, path, "/tokens", &nt));
  PetscCall(h5_int_dataset(f, path, "/offsets", &no));
  PetscCheck(no >= 2, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /offsets has %" PRId64 " entries; it needs ndoc+1 >= 2 (0, then the end of each document)", path, no);
  PetscCheck(nt > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /tokens is empty", path);
  {
    struct stat st; /* a corrupt header can claim more than the file holds: bound it before allocating */
    PetscCheck(stat(path, &st) == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot stat %s", path);
    PetscCheck(nt <= 8 * (int64_t)st.st_size + 4096 && no <= 8 * (int64_t)st.st_size + 4096, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /tokens (%" PRId64 ") or /offsets (%" PRId64 ") is larger than a file of %lld bytes can hold; the file is corrupt", path, nt, no, (long long)st.st_size);
  }
  PetscCheck(nt <= INT64_MAX / 8, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /tokens has %" PRId64 " entries", path, nt);
  c->ndoc = no - 1;
  PetscCall(PetscMalloc1(no, &c->offsets));
  PetscCall(h5_read_local(f, path, "/offsets", c->offsets));
  PetscCheck(c->offsets[0] == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /offsets[0] = %" PRId64 "; it must be 0", path, c->offsets[0]);
  for (int64_t d = 0; d < c->ndoc; d++) PetscCheck(c->offsets[d + 1] >= c->offsets[d], PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /offsets[%" PRId64 "] = %" PRId64 " is smaller than /offsets[%" PRId64 "] = %" PRId64 "; offsets must be nondecreasing", path, d + 1, c->offsets[d + 1], d, c->offsets[d]);
  PetscCheck(c->offsets[c->ndoc] == nt, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the last of /offsets is %" PRId64 " but /tokens has %" PRId64 " entries; they must be equal", path, c->offsets[c->ndoc], nt);
  PetscCall(PetscMalloc1(nt, &tmp));
  {
    PetscErrorCode e;
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    e = h5_read_local(f, path, "/tokens", tmp);
    PetscCall(PetscPopErrorHandler());
    if (e) PetscCall(PetscFree(tmp));
    PetscCall(e);
  }
  c->ntok = nt;
  PetscCall(PetscMalloc1(nt, &c->tokens));
  for (int64_t i = 0; i < nt; i++) c->tokens[i] = tmp[i] < 0 ? -1 : tmp[i] > INT32_MAX ? INT32_MAX : (int32_t)tmp[i];
  PetscCall(PetscFree(tmp));
  PetscCall(check_ids(c, path));
  PetscFunctionReturn(0);
}

static PetscErrorCode tokens_read(InflTokens c, const char path[])
{
  static const unsigned char h5sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  unsigned char              head[8]  = {0};
  size_t                     got;
  FILE                      *fp;
  InflHash                   h;
  char                       opts[128];

  PetscFunctionBegin;
  PetscCall(PetscMalloc1(1, &c->files));
  PetscCall(PetscStrallocpy(path, &c->files[0]));
  c->nfiles = 1;
  fp        = fopen(path, "rb");
  PetscCheck(fp, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "tokens:%s: cannot open the file: %s", path, strerror(errno));
  got = fread(head, 1, 8, fp);
  fclose(fp);
  PetscCall(InflHashCreate(&h));
  PetscCall(PetscSNPrintf(opts, sizeof(opts), "infl tokens file document_start=%" PetscInt_FMT, c->doc_start));
  PetscCall(InflHashUpdate(h, opts, strlen(opts)));
  if (got == 8 && !memcmp(head, h5sig, 8)) {
    hid_t          f;
    PetscErrorCode e;
    H5E_auto2_t    func;
    void          *data;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) H5Eset_auto2(H5E_DEFAULT, func, data);
    PetscCheck(f >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "tokens:%s: cannot open the HDF5 file (corrupt?)", path);
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    e = h5_tokens_read(c, path, f);
    PetscCall(PetscPopErrorHandler());
    H5Eset_auto2(H5E_DEFAULT, func, data);
    InflCallH5(H5Fclose(f));
    PetscCall(e);
    {
      char *buf;
      size_t len;
      PetscCall(InflReadFile_Private(path, &buf, &len));
      PetscCall(hash_bytes_with_length(h, buf, (int64_t)len));
      PetscCall(PetscFree(buf));
    }
  } else if (got >= 4 && le32(head) == LLMC_MAGIC) {
    char  *buf;
    size_t len;
    PetscCall(InflReadFile_Private(path, &buf, &len));
    PetscCall(hash_bytes_with_length(h, buf, (int64_t)len));
    {
      PetscErrorCode e;
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      e = bin_read(c, path, buf, len);
      PetscCall(PetscPopErrorHandler());
      PetscCall(PetscFree(buf));
      PetscCall(e);
    }
  } else SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "tokens:%s: neither an llm.c token file (int32 magic %d first) nor HDF5 (/tokens, /offsets); %s", path, LLMC_MAGIC, got < 4 ? "the file is (nearly) empty" : "wrong file?");
  PetscCall(InflHashFinal(&h, c->hash));
  PetscCall(PetscMalloc1(c->ndoc, &c->doc_file));
  PetscCall(PetscMalloc1(c->ndoc, &c->doc_line));
  for (int64_t d = 0; d < c->ndoc; d++) c->doc_file[d] = 0, c->doc_line[d] = c->offsets[d];
  PetscFunctionReturn(0);
}

static PetscErrorCode tokens_load(InflTokens c, const char path[])
{
  PetscMPIInt rank;
  int64_t     sz[2];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(c->comm, &rank));
  PetscCheck(c->vocab_size > 0, c->comm, PETSC_ERR_ORDER, "tokens:%s: the vocabulary size is not known; call InflTokensSetVocabSize (the model's vocab_size) before InflTokensLoad", path);
  InflCallAll(c->comm, rank == 0 ? tokens_read(c, path) : 0);
  sz[0] = c->ndoc, sz[1] = c->ntok;
  PetscCall(InflBcast(sz, 2, MPI_INT64_T, 0, c->comm));
  PetscCall(InflBcast(c->hash, 65, MPI_CHAR, 0, c->comm));
  if (rank != 0) {
    c->ndoc = sz[0], c->ntok = sz[1];
    PetscCall(PetscMalloc1(c->ntok, &c->tokens));
    PetscCall(PetscMalloc1(c->ndoc + 1, &c->offsets));
    PetscCall(PetscMalloc1(c->ndoc, &c->doc_file));
    PetscCall(PetscMalloc1(c->ndoc, &c->doc_line));
    PetscCall(PetscMalloc1(1, &c->files));
    PetscCall(PetscStrallocpy(path, &c->files[0]));
    c->nfiles = 1;
    for (int64_t d = 0; d < c->ndoc; d++) c->doc_file[d] = 0;
  }
  PetscCall(InflBcast(c->tokens, c->ntok, MPI_INT32_T, 0, c->comm));
  PetscCall(InflBcast(c->offsets, c->ndoc + 1, MPI_INT64_T, 0, c->comm));
  if (rank != 0)
    for (int64_t d = 0; d < c->ndoc; d++) c->doc_line[d] = c->offsets[d];
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- public */

PetscErrorCode InflTokensLoad(InflTokens c, const char spec[])
{
  PetscBool text, tokens;

  PetscFunctionBegin;
  PetscCall(tokens_reset(c));
  PetscCall(PetscStrncmp(spec, "text:", 5, &text));
  PetscCall(PetscStrncmp(spec, "tokens:", 7, &tokens));
  PetscCheck(text || tokens, c->comm, PETSC_ERR_ARG_WRONG, "token data spec \"%s\" is not understood; use text:PATH (a text file or a directory of them) or tokens:PATH (an llm.c .bin or an HDF5 file with /tokens and /offsets)", spec);
  if (text) {
    if (!c->vocab_size && c->tok) PetscCall(InflTokenizerGetVocabSize(c->tok, &c->vocab_size));
    PetscCall(text_load(c, spec + 5));
  } else PetscCall(tokens_load(c, spec + 7));
  c->loaded = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensGetSizes(InflTokens c, int64_t *ndoc, int64_t *ntok)
{
  PetscFunctionBegin;
  if (ndoc) *ndoc = c->ndoc;
  if (ntok) *ntok = c->ntok;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensGetArrays(InflTokens c, const int32_t **tokens, const int64_t **offsets)
{
  PetscFunctionBegin;
  if (tokens) *tokens = c->tokens;
  if (offsets) *offsets = c->offsets;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensGetSkipped(InflTokens c, int64_t *skipped)
{
  PetscFunctionBegin;
  *skipped = c->skipped;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensGetDocumentSource(InflTokens c, int64_t d, const char **file, int64_t *line)
{
  PetscFunctionBegin;
  PetscCheck(c->loaded, PETSC_COMM_SELF, PETSC_ERR_ORDER, "the corpus is not loaded; call InflTokensLoad first");
  PetscCheck(d >= 0 && d < c->ndoc, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "document %" PRId64 " is outside [0, %" PRId64 ")", d, c->ndoc);
  if (file) *file = c->files[c->doc_file[d]];
  if (line) *line = c->doc_line[d];
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensGetHash(InflTokens c, const char **hex)
{
  PetscFunctionBegin;
  *hex = c->hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensGetSequences(InflTokens c, PetscInt n_positions, int64_t *nseq, int64_t **doc, int64_t **start, int32_t **length)
{
  int64_t n = 0, w = n_positions - 1;

  PetscFunctionBegin;
  PetscCheck(c->loaded, PETSC_COMM_SELF, PETSC_ERR_ORDER, "the corpus is not loaded; call InflTokensLoad first");
  PetscCheck(n_positions >= 2, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "n_positions %" PetscInt_FMT ": a sequence needs at least 2 positions to predict a token", n_positions);
  for (int64_t d = 0; d < c->ndoc; d++) {
    int64_t L = c->offsets[d + 1] - c->offsets[d];
    n += L == 0 ? 0 : L <= n_positions ? 1 : (L - 1 + w - 1) / w;
  }
  PetscCall(PetscMalloc1(n + 1, doc));
  PetscCall(PetscMalloc1(n + 1, start));
  PetscCall(PetscMalloc1(n + 1, length));
  *nseq = n;
  n     = 0;
  for (int64_t d = 0; d < c->ndoc; d++) {
    int64_t L = c->offsets[d + 1] - c->offsets[d];
    if (L == 0) continue;
    for (int64_t s = 0;; s += w) {
      int64_t len = PetscMin((int64_t)n_positions, L - s);
      (*doc)[n]    = d;
      (*start)[n]  = s;
      (*length)[n] = (int32_t)len;
      n++;
      if (s + len >= L) break;
    }
  }
  PetscCheck(n == *nseq, PETSC_COMM_SELF, PETSC_ERR_PLIB, "window count %" PRId64 " differs from the formula's %" PRId64, n, *nseq);
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensRestoreSequences(InflTokens c, int64_t **doc, int64_t **start, int32_t **length)
{
  PetscFunctionBegin;
  PetscCall(PetscFree(*doc));
  PetscCall(PetscFree(*start));
  PetscCall(PetscFree(*length));
  PetscFunctionReturn(0);
}

PetscErrorCode InflTokensDestroy(InflTokens *c)
{
  PetscFunctionBegin;
  if (!*c) PetscFunctionReturn(0);
  PetscCall(tokens_reset(*c));
  PetscCall(PetscFree((*c)->prefix));
  PetscCall(PetscFree(*c));
  PetscFunctionReturn(0);
}

static const char help[] = "Tokenizers without downloads (byte-level, a small hand-checked BPE, malformed files) and token corpora (text, llm.c .bin, HDF5, windows).\n";
#include "io/check.h"
#include <infl/tokenizer.h>
#include <infl/tokens.h>
#include <stdio.h>
#include <sys/stat.h>

static char dir[PETSC_MAX_PATH_LEN]; /* scratch directory of this rank count */

/* Rank 0 writes len bytes to dir/name (subdirectories created by the caller); all ranks wait. */
static PetscErrorCode put(MPI_Comm comm, const char name[], const void *bytes, size_t len)
{
  PetscMPIInt rank;
  char        path[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/%s", dir, name));
  if (rank == 0) {
    FILE *f = fopen(path, "wb");
    EXPECT(f && fwrite(bytes, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
  }
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}
static PetscErrorCode puts_(MPI_Comm comm, const char name[], const char *text)
{
  return put(comm, name, text, strlen(text));
}

static PetscErrorCode mkdir_(MPI_Comm comm, const char name[])
{
  PetscMPIInt rank;
  char        path[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/%s", dir, name));
  if (rank == 0) mkdir(path, 0755);
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

static PetscErrorCode expect_ids(const char what[], const int32_t *ids, int64_t n, const int32_t *want, int64_t nw)
{
  PetscFunctionBegin;
  for (int64_t i = 0; i < PetscMin(n, nw); i++) EXPECT(ids[i] == want[i], "%s: id %" PRId64 " is %d, expected %d", what, i, ids[i], want[i]);
  EXPECT(n == nw, "%s: %" PRId64 " ids, expected %" PRId64, what, n, nw);
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- byte-level */
static PetscErrorCode test_byte(MPI_Comm comm)
{
  InflTokenizer t;
  PetscInt      V;
  const char    text[] = "a\0\xff\xc3\xa9 \n"; /* any bytes, also a NUL and invalid UTF-8 */
  int32_t      *ids, want[7] = {97, 0, 255, 195, 169, 32, 10};
  int64_t       n;
  size_t        len;
  char         *back;

  PetscFunctionBegin;
  PetscCall(InflTokenizerCreate(comm, &t));
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerEncode(t, "x", 1, &n, &ids), "no kind yet", "encode before a kind");
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerSetType(t, INFL_TOKENIZER_BPE), "InflTokenizerLoad", "BPE set without files");
  PetscCall(InflTokenizerSetType(t, INFL_TOKENIZER_BYTE));
  PetscCall(InflTokenizerGetVocabSize(t, &V));
  EXPECT(V == 256, "byte-level vocabulary %" PetscInt_FMT, V);
  PetscCall(InflTokenizerEncode(t, text, 7, &n, &ids));
  PetscCall(expect_ids("byte-level", ids, n, want, 7));
  PetscCall(InflTokenizerDecode(t, ids, n, &len, &back));
  EXPECT(len == 7 && !memcmp(back, text, 7), "byte-level round trip");
  PetscCall(PetscFree(back));
  PetscCall(PetscFree(ids));
  PetscCall(InflTokenizerEncode(t, "", 0, &n, &ids));
  EXPECT(n == 0, "empty text gives %" PRId64 " ids", n);
  PetscCall(PetscFree(ids));
  want[0] = 256;
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerDecode(t, want, 1, &len, &back), "token 0 has id 256, outside the vocabulary [0, 256)", "byte decode out of range");
  PetscCall(InflTokenizerCheckVocabSize(t, 256));
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerCheckVocabSize(t, 50257), "vocab_size 50257 does not fit the byte-level tokenizer", "byte-level for a GPT-2 model");
  PetscCall(InflTokenizerDestroy(&t));
  /* a model's tokenizer: byte-level without files only for vocab_size 256 */
  PetscCall(InflTokenizerCreate(comm, &t));
  PetscCall(InflTokenizerSetUpForModel(t, NULL, 256));
  PetscCall(InflTokenizerGetVocabSize(t, &V));
  EXPECT(V == 256, "SetUpForModel(256) gives V = %" PetscInt_FMT, V);
  EXPECT_FAIL(comm, InflTokenizerSetUpForModel(t, dir, 50257), "the model has vocab_size 50257 but the directory", "no files for a BPE model");
  PetscCall(InflTokenizerDestroy(&t));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- a small BPE written here */

/* GPT-2's bytes_to_unicode(), as UTF-8 text of one byte. */
static void mapped(unsigned b, char out[3])
{
  unsigned cp = b, n = 0;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
    for (unsigned x = 0; x < b; x++) n += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF));
    cp = 256 + n;
  }
  if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
  else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

/* vocab.json text: the 256 bytes (id = byte value, but byte `skip` left out if >= 0) then `extra`, a JSON tail. */
static PetscErrorCode vocab_text(char *buf, size_t len, int skip, const char extra[])
{
  size_t k = 0;

  PetscFunctionBegin;
  k += (size_t)snprintf(buf + k, len - k, "{");
  for (unsigned b = 0; b < 256; b++) {
    char m[3];
    unsigned id = skip >= 0 && (int)b > skip ? b - 1 : b;
    if ((int)b == skip) continue;
    mapped(b, m);
    k += (size_t)snprintf(buf + k, len - k, "\"%s%s\": %u, ", b == '"' || b == '\\' ? "\\" : "", m, id);
  }
  k += (size_t)snprintf(buf + k, len - k, "%s}", extra);
  PetscFunctionReturn(0);
}

/* he 256, Ġt 257, Ġthe 258, in 259, sĠ 260, ĠĠ 261 */
static const char small_extra[]  = "\"he\": 256, \"\xc4\xa0t\": 257, \"\xc4\xa0the\": 258, \"in\": 259, \"s\xc4\xa0\": 260, \"\xc4\xa0\xc4\xa0\": 261";
static const char small_merges[] = "#version: 0.2\nh e\n\xc4\xa0 t\n\xc4\xa0t he\ni n\ns \xc4\xa0\n\xc4\xa0 \xc4\xa0\n";

static PetscErrorCode small_bpe(MPI_Comm comm, const char sub[], const char vname[], const char mname[], InflTokenizer *t)
{
  char buf[8192], name[256], path[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCall(mkdir_(comm, sub));
  PetscCall(vocab_text(buf, sizeof(buf), -1, small_extra));
  PetscCall(PetscSNPrintf(name, sizeof(name), "%s/%s", sub, vname));
  PetscCall(puts_(comm, name, buf));
  PetscCall(PetscSNPrintf(name, sizeof(name), "%s/%s", sub, mname));
  PetscCall(puts_(comm, name, small_merges));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/%s", dir, sub));
  PetscCall(InflTokenizerCreate(comm, t));
  PetscCall(InflTokenizerLoad(*t, path));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_small_bpe(MPI_Comm comm)
{
  InflTokenizer t, t2;
  PetscInt      V;
  struct {
    const char *text;
    int32_t     ids[12];
    int         n;
  } cases[] = {
    {" the", {258}, 1},                                          /* h e, then Ġ t, then Ġt he */
    {"the", {116, 256}, 2},
    {"thin in", {116, 104, 259, 32, 259}, 5},
    {"hehe", {256, 256}, 2},                                     /* both occurrences in one round */
    {"it's  ok", {105, 116, 39, 115, 32, 32, 111, 107}, 8},      /* "'s" and " " are separate pre-tokens: no sĠ */
    {"a   ", {97, 261, 32}, 3},                                  /* trailing spaces: one pre-token, ĠĠ then Ġ */
    {"a  b", {97, 32, 32, 98}, 4},                               /* " " then " b": no ĠĠ */
    {"\xc3\xa9t\xc3\xa9", {195, 169, 116, 195, 169}, 5},         /* été: bytes of one letter run */
    {"x\xe2\x80\x83 y", {120, 226, 128, 131, 32, 121}, 6},       /* U+2003 EM SPACE is white space */
  };
  char    name[64];
  int64_t n;
  int32_t *ids;

  PetscFunctionBegin;
  PetscCall(small_bpe(comm, "bpe_hf", "vocab.json", "merges.txt", &t));
  PetscCall(InflTokenizerGetVocabSize(t, &V));
  EXPECT(V == 262, "small BPE vocabulary %" PetscInt_FMT, V);
  PetscCall(small_bpe(comm, "bpe_openai", "encoder.json", "vocab.bpe", &t2));
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    size_t len;
    char  *back;
    PetscCall(PetscSNPrintf(name, sizeof(name), "small BPE case %zu", k));
    PetscCall(InflTokenizerEncode(t, cases[k].text, strlen(cases[k].text), &n, &ids));
    PetscCall(expect_ids(name, ids, n, cases[k].ids, cases[k].n));
    PetscCall(InflTokenizerDecode(t, ids, n, &len, &back));
    EXPECT(len == strlen(cases[k].text) && !memcmp(back, cases[k].text, len), "%s: round trip", name);
    PetscCall(PetscFree(back));
    PetscCall(PetscFree(ids));
    PetscCall(InflTokenizerEncode(t2, cases[k].text, strlen(cases[k].text), &n, &ids));
    PetscCall(expect_ids("openai file names", ids, n, cases[k].ids, cases[k].n));
    PetscCall(PetscFree(ids));
  }
  {
    const char *h1, *h2;
    PetscCall(InflTokenizerGetHash(t, &h1));
    PetscCall(InflTokenizerGetHash(t2, &h2));
    EXPECT(!strcmp(h1, h2), "the same files under both names must hash alike");
  }
  { /* InflTokenizerCopyFiles (infl train -tokenizer: the files beside the trained model): the copy loads to the same
     * tokenizer under the same names; a directory without the files is an error naming it; "" copies nothing */
    char          src[PETSC_MAX_PATH_LEN], dst[PETSC_MAX_PATH_LEN], other[PETSC_MAX_PATH_LEN];
    InflTokenizer t3;
    const char   *h2, *h3;
    PetscCall(mkdir_(comm, "bpe_copy"));
    PetscCall(PetscSNPrintf(src, sizeof(src), "%s/bpe_openai", dir));
    PetscCall(PetscSNPrintf(dst, sizeof(dst), "%s/bpe_copy", dir));
    PetscCall(InflTokenizerCopyFiles(comm, src, dst));
    PetscCall(InflTokenizerCopyFiles(comm, "", dst));
    PetscCall(PetscSNPrintf(other, sizeof(other), "%s/vocab.bpe", dst));
    EXPECT(InflFileExists(other), "InflTokenizerCopyFiles: %s missing", other);
    PetscCall(PetscSNPrintf(other, sizeof(other), "%s/vocab.bpe.tmp", dst));
    EXPECT(!InflFileExists(other), "InflTokenizerCopyFiles left %s", other);
    PetscCall(InflTokenizerCreate(comm, &t3));
    PetscCall(InflTokenizerLoad(t3, dst));
    PetscCall(InflTokenizerGetHash(t2, &h2));
    PetscCall(InflTokenizerGetHash(t3, &h3));
    EXPECT(!strcmp(h2, h3), "the copied tokenizer files must load to the same tokenizer");
    PetscCall(InflTokenizerDestroy(&t3));
    PetscCall(PetscSNPrintf(other, sizeof(other), "%s/bpe_none", dir));
    PetscCall(mkdir_(comm, "bpe_none"));
    EXPECT_FAIL(comm, InflTokenizerCopyFiles(comm, other, dst), "bpe_none holds neither vocab.json + merges.txt", "a directory without tokenizer files");
  }
  PetscCall(InflTokenizerDestroy(&t));
  PetscCall(InflTokenizerDestroy(&t2));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_bad_files(MPI_Comm comm)
{
  char          good[8192], buf[8192], path[PETSC_MAX_PATH_LEN];
  InflTokenizer t;
  struct {
    const char *vocab, *merges, *expect;
  } cases[] = {
    {"{\"a\": 0,", NULL, "vocab.json: line 1, column"},
    {"{\"a\": 0, \"a\": 1}", NULL, "duplicate object key"},
    {"{\"a\": 0, \"b\": 2}", NULL, "entry \"b\": id 2 is outside [0, 2)"},
    {"{\"a\": 0, \"b\": 0}", NULL, "have the same id 0"},
    {"{\"a\": \"x\"}", NULL, "entry \"a\": the id is not an integer"},
    {"[1, 2]", NULL, "not a non-empty JSON object"},
    {"{\"a b\": 0}", NULL, "entry \"a b\" (id 0): U+0020 is not in GPT-2's byte-to-unicode map"},
    {"{\"\": 0}", NULL, "entry with id 0 is the empty string"},
    {"MISSING_BYTE", NULL, "no token for the single byte 0x41"},
    {NULL, "#version: 0.2\nh e\nh e x\n", "merges.txt: line 3: \"h e x\" is not two tokens"},
    {NULL, "h\n", "merges.txt: line 1: \"h\" is not two tokens"},
    {NULL, "h  e\n", "merges.txt: line 1: \"h  e\" is not two tokens"},
    {NULL, "x y\n", "merges.txt: line 1: the merge of tokens 120 and 121 gives \"xy\", which is not in the vocabulary"},
    {NULL, "he zz\n", "merges.txt: line 1: right token \"zz\" is not in the vocabulary"},
    {NULL, "h e\ni n\nh e\n", "merges.txt: line 3: the merge of tokens 104 and 101 repeats line 1"},
    {NULL, "h \xff\n", "merges.txt: line 1: invalid UTF-8 at byte offset 2"},
  };

  PetscFunctionBegin;
  PetscCall(mkdir_(comm, "bad"));
  PetscCall(vocab_text(good, sizeof(good), -1, small_extra));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/bad", dir));
  PetscCall(InflTokenizerCreate(comm, &t));
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    const char *v = cases[k].vocab ? cases[k].vocab : good;
    if (cases[k].vocab && !strcmp(cases[k].vocab, "MISSING_BYTE")) {
      PetscCall(vocab_text(buf, sizeof(buf), 'A', "\"zz\": 255"));
      v = buf;
    }
    PetscCall(puts_(comm, "bad/vocab.json", v));
    PetscCall(puts_(comm, "bad/merges.txt", cases[k].merges ? cases[k].merges : small_merges));
    EXPECT_FAIL(comm, InflTokenizerLoad(t, path), cases[k].expect, cases[k].expect);
    {
      InflTokenizerType type;
      PetscInt          V;
      PetscCall(InflTokenizerGetType(t, &type));
      PetscCall(InflTokenizerGetVocabSize(t, &V));
      EXPECT(type == INFL_TOKENIZER_NONE && V == 0, "after a failed Load the tokenizer must have no kind (type %d, V %" PetscInt_FMT ")", (int)type, V);
    }
  }
  PetscCall(InflTokenizerDestroy(&t));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- text corpora */

static PetscErrorCode load(MPI_Comm comm, InflTokenizer t, InflTextFormat f, PetscInt vocab, PetscInt doc_start, const char spec[], InflTokens *c)
{
  PetscFunctionBegin;
  PetscCall(InflTokensCreate(comm, c));
  if (t) PetscCall(InflTokensSetTokenizer(*c, t));
  PetscCall(InflTokensSetTextFormat(*c, f));
  if (vocab) PetscCall(InflTokensSetVocabSize(*c, vocab));
  PetscCall(InflTokensSetDocumentStart(*c, doc_start));
  PetscCall(InflTokensLoad(*c, spec));
  PetscFunctionReturn(0);
}

/* The corpus holds exactly the documents docs[] (byte-level: ids = bytes). */
static PetscErrorCode expect_docs(InflTokens c, const char what[], int n, const char *const docs[], int64_t skipped)
{
  int64_t        ndoc, ntok, sk;
  const int32_t *tok;
  const int64_t *off;

  PetscFunctionBegin;
  PetscCall(InflTokensGetSizes(c, &ndoc, &ntok));
  PetscCall(InflTokensGetArrays(c, &tok, &off));
  PetscCall(InflTokensGetSkipped(c, &sk));
  EXPECT(ndoc == n, "%s: %" PRId64 " documents, expected %d", what, ndoc, n);
  EXPECT(sk == skipped, "%s: %" PRId64 " skipped, expected %" PRId64, what, sk, skipped);
  EXPECT(off[0] == 0 && off[ndoc] == ntok, "%s: offsets", what);
  for (int d = 0; d < n; d++) {
    int64_t L = (int64_t)strlen(docs[d]);
    EXPECT(off[d + 1] - off[d] == L, "%s: document %d has %" PRId64 " tokens, expected %" PRId64 " (\"%s\")", what, d, off[d + 1] - off[d], L, docs[d]);
    for (int64_t i = 0; i < L; i++) EXPECT(tok[off[d] + i] == (unsigned char)docs[d][i], "%s: document %d token %" PRId64, what, d, i);
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode test_text(MPI_Comm comm)
{
  InflTokenizer tb, tbpe;
  InflTokens    c, c2;
  char          spec[PETSC_MAX_PATH_LEN + 16];
  const char   *file, *h1, *h2;
  int64_t       line;

  PetscFunctionBegin;
  PetscCall(InflTokenizerCreate(comm, &tb));
  PetscCall(InflTokenizerSetType(tb, INFL_TOKENIZER_BYTE));
  /* fortunes rule: leading "%", "\n"-only and empty documents skipped; last document without a newline */
  PetscCall(puts_(comm, "f1", "%\nfirst doc\nline2\n%\n\n%\nsecond\n%\n%\nthird no newline"));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/f1", dir));
  PetscCall(load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c));
  {
    const char *docs[] = {"first doc\nline2\n", "second\n", "third no newline"};
    PetscCall(expect_docs(c, "fortunes rule", 3, docs, 3));
  }
  PetscCall(InflTokensGetDocumentSource(c, 1, &file, &line));
  EXPECT(strstr(file, "/f1") && line == 7, "document 1 comes from %s line %" PRId64 ", expected f1 line 7", file, line);
  PetscCall(InflTokensGetHash(c, &h1));
  EXPECT(strlen(h1) == 64, "hash");
  /* the same bytes elsewhere: the same hash; another format: another hash */
  PetscCall(puts_(comm, "f1copy", "%\nfirst doc\nline2\n%\n\n%\nsecond\n%\n%\nthird no newline"));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/f1copy", dir));
  PetscCall(load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c2));
  PetscCall(InflTokensGetHash(c2, &h2));
  EXPECT(!strcmp(h1, h2), "the same text at another path hashes differently: %s vs %s", h1, h2);
  PetscCall(InflTokensDestroy(&c2));
  PetscCall(load(comm, tb, INFL_TEXT_LINES, 0, 50256, spec, &c2));
  PetscCall(InflTokensGetHash(c2, &h2));
  EXPECT(strcmp(h1, h2), "the lines format must change the hash");
  {
    const char *docs[] = {"%\n", "first doc\n", "line2\n", "%\n", "%\n", "second\n", "%\n", "%\n", "third no newline"};
    PetscCall(expect_docs(c2, "lines format", 9, docs, 1));
  }
  PetscCall(InflTokensDestroy(&c2));
  /* the format from the options database, with the corpus's prefix */
  PetscCall(PetscOptionsSetValue(NULL, "-train_tokens_text_format", "lines"));
  PetscCall(InflTokensCreate(comm, &c2));
  PetscCall(InflTokensSetOptionsPrefix(c2, "train_"));
  PetscCall(InflTokensSetTokenizer(c2, tb));
  PetscCall(InflTokensSetFromOptions(c2));
  PetscCall(InflTokensLoad(c2, spec));
  PetscCall(InflTokensGetSizes(c2, &line, NULL));
  EXPECT(line == 9, "-train_tokens_text_format lines gave %" PRId64 " documents, expected 9", line);
  PetscCall(PetscOptionsSetValue(NULL, "-train_tokens_document_start", "-2"));
  EXPECT_FAIL(comm, InflTokensSetFromOptions(c2), "-train_tokens_document_start -2", "bad document start");
  PetscCall(PetscOptionsClearValue(NULL, "-train_tokens_text_format"));
  PetscCall(PetscOptionsClearValue(NULL, "-train_tokens_document_start"));
  PetscCall(InflTokensDestroy(&c2));
  PetscCall(InflTokensDestroy(&c));
  /* "%\r\n" and "% " are not separators; a file without "%" is one document */
  PetscCall(puts_(comm, "f2", "a\n%\r\nb\n% \nc\n"));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/f2", dir));
  PetscCall(load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c));
  {
    const char *docs[] = {"a\n%\r\nb\n% \nc\n"};
    PetscCall(expect_docs(c, "no separator", 1, docs, 0));
  }
  PetscCall(InflTokensDestroy(&c));
  /* a directory: regular files in name order, dot files and subdirectories ignored */
  PetscCall(mkdir_(comm, "d"));
  PetscCall(mkdir_(comm, "d/sub"));
  PetscCall(puts_(comm, "d/b.txt", "B1\n%\nB2\n"));
  PetscCall(puts_(comm, "d/a.txt", "A1\n"));
  PetscCall(puts_(comm, "d/.hidden", "H\n"));
  PetscCall(puts_(comm, "d/sub/x", "X\n"));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/d", dir));
  PetscCall(load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c));
  {
    const char *docs[] = {"A1\n", "B1\n", "B2\n"};
    PetscCall(expect_docs(c, "directory", 3, docs, 0));
  }
  PetscCall(InflTokensGetDocumentSource(c, 2, &file, &line));
  EXPECT(strstr(file, "/d/b.txt") && line == 3, "document 2 comes from %s line %" PRId64 ", expected b.txt line 3", file, line);
  PetscCall(InflTokensDestroy(&c));
  /* errors */
  PetscCall(puts_(comm, "empty", "%\n\n%\n"));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/empty", dir));
  EXPECT_FAIL(comm, load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c), "no document (2 empty ones skipped in 1 file(s))", "empty corpus");
  PetscCall(InflTokensDestroy(&c));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/nonexistent", dir));
  EXPECT_FAIL(comm, load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c), "nonexistent: No such file", "missing file");
  PetscCall(InflTokensDestroy(&c));
  EXPECT_FAIL(comm, load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, "txt:/x", &c), "token data spec \"txt:/x\" is not understood", "unknown spec");
  PetscCall(InflTokensDestroy(&c));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/f1", dir));
  EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 0, 50256, spec, &c), "needs a tokenizer", "no tokenizer");
  PetscCall(InflTokensDestroy(&c));
  EXPECT_FAIL(comm, load(comm, tb, INFL_TEXT_FORTUNES, 1000, 50256, spec, &c), "vocab_size 1000 does not fit the byte-level tokenizer", "tokenizer larger than the model");
  PetscCall(InflTokensDestroy(&c));
  /* invalid UTF-8: an error for BPE naming file, line and offset; byte-level reads the bytes */
  PetscCall(small_bpe(comm, "bpe_text", "vocab.json", "merges.txt", &tbpe));
  PetscCall(puts_(comm, "latin1.txt", "ok\ncaf\xe9\n"));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/latin1.txt", dir));
  EXPECT_FAIL(comm, load(comm, tbpe, INFL_TEXT_FORTUNES, 0, 50256, spec, &c), "latin1.txt: line 2: invalid UTF-8 at byte offset 6", "latin-1 text");
  PetscCall(InflTokensDestroy(&c));
  PetscCall(load(comm, tb, INFL_TEXT_FORTUNES, 0, 50256, spec, &c));
  {
    const char *docs[] = {"ok\ncaf\xe9\n"};
    PetscCall(expect_docs(c, "latin-1 as bytes", 1, docs, 0));
  }
  PetscCall(InflTokensDestroy(&c));
  /* many documents shared over the ranks: the corpus is each document's Encode, whatever the rank count */
  {
    PetscMPIInt    rank;
    char          *big;
    size_t         k = 0, cap = 200000;
    const char    *words[] = {"the", " the", "thin", " in", "hehe", "it's", "  ", "\n", "a   ", "\xc3\xa9t\xc3\xa9"};
    int64_t        ndoc, ntok;
    const int32_t *tok;
    const int64_t *off;
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    PetscCall(PetscMalloc1(cap, &big));
    for (int d = 0; d < 300; d++) {
      for (int w = 0; w < 1 + (d * 7) % 23; w++) k += (size_t)snprintf(big + k, cap - k, "%s", words[(d * 31 + w * 17) % 10]);
      k += (size_t)snprintf(big + k, cap - k, "x\n%%\n");
    }
    PetscCall(put(comm, "many", big, k));
    PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s/many", dir));
    PetscCall(load(comm, tbpe, INFL_TEXT_FORTUNES, 0, 50256, spec, &c));
    PetscCall(InflTokensGetSizes(c, &ndoc, &ntok));
    PetscCall(InflTokensGetArrays(c, &tok, &off));
    EXPECT(ndoc == 300, "many: %" PRId64 " documents", ndoc);
    for (int64_t d = 0, pos = 0; d < ndoc; d++) {
      const char *s = big + pos, *e = strstr(s, "x\n%\n");
      int64_t     n;
      int32_t    *ids;
      PetscCall(InflTokenizerEncode(tbpe, s, (size_t)(e + 2 - s), &n, &ids));
      PetscCall(expect_ids("many", tok + off[d], off[d + 1] - off[d], ids, n));
      PetscCall(PetscFree(ids));
      pos = e + 4 - big;
    }
    PetscCall(PetscFree(big));
    PetscCall(InflTokensDestroy(&c));
  }
  PetscCall(InflTokenizerDestroy(&tbpe));
  PetscCall(InflTokenizerDestroy(&tb));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- token files */

static void bin_bytes(unsigned char *b, int32_t magic, int32_t version, int32_t n, const uint16_t *tok, int ntok)
{
  int32_t h[3] = {magic, version, n};
  memset(b, 0, 1024);
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 4; k++) b[4 * i + k] = (unsigned char)((uint32_t)h[i] >> (8 * k));
  for (int i = 0; i < ntok; i++) b[1024 + 2 * i] = (unsigned char)tok[i], b[1025 + 2 * i] = (unsigned char)(tok[i] >> 8);
}

static PetscErrorCode expect_corpus(InflTokens c, const char what[], int ndoc, const int64_t *off, const int32_t *tok)
{
  int64_t        nd, nt;
  const int32_t *t;
  const int64_t *o;

  PetscFunctionBegin;
  PetscCall(InflTokensGetSizes(c, &nd, &nt));
  PetscCall(InflTokensGetArrays(c, &t, &o));
  EXPECT(nd == ndoc, "%s: %" PRId64 " documents, expected %d", what, nd, ndoc);
  for (int d = 0; d <= ndoc; d++) EXPECT(o[d] == off[d], "%s: offsets[%d] = %" PRId64 ", expected %" PRId64, what, d, o[d], off[d]);
  PetscCall(expect_ids(what, t, nt, tok, off[ndoc]));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_bin(MPI_Comm comm)
{
  unsigned char  b[1024 + 64];
  const uint16_t t1[7]  = {50256, 10, 20, 50256, 30, 50256, 5};
  const uint16_t t2[4]  = {1, 2, 50256, 3};
  char           spec[PETSC_MAX_PATH_LEN + 16];
  InflTokens     c;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/t.bin", dir));
  bin_bytes(b, 20240520, 1, 7, t1, 7);
  PetscCall(put(comm, "t.bin", b, 1024 + 14));
  PetscCall(load(comm, NULL, INFL_TEXT_FORTUNES, 50257, 50256, spec, &c));
  {
    const int64_t off[] = {0, 3, 5, 7};
    const int32_t tok[] = {50256, 10, 20, 50256, 30, 50256, 5};
    PetscCall(expect_corpus(c, ".bin with <|endoftext|>", 3, off, tok));
  }
  PetscCall(InflTokensDestroy(&c));
  PetscCall(load(comm, NULL, INFL_TEXT_FORTUNES, 50257, -1, spec, &c));
  {
    const int64_t off[] = {0, 7};
    const int32_t tok[] = {50256, 10, 20, 50256, 30, 50256, 5};
    PetscCall(expect_corpus(c, ".bin as one document", 1, off, tok));
  }
  PetscCall(InflTokensDestroy(&c));
  EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 50000, 50256, spec, &c), "t.bin: token 0 (document 0) has id 50256, outside the vocabulary [0, 50000)", "id out of range");
  PetscCall(InflTokensDestroy(&c));
  EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 0, 50256, spec, &c), "vocabulary size is not known", "no vocab size");
  PetscCall(InflTokensDestroy(&c));
  bin_bytes(b, 20240520, 1, 4, t2, 4);
  PetscCall(put(comm, "t.bin", b, 1024 + 8));
  PetscCall(load(comm, NULL, INFL_TEXT_FORTUNES, 50257, 50256, spec, &c));
  {
    const int64_t off[] = {0, 2, 4};
    const int32_t tok[] = {1, 2, 50256, 3};
    PetscCall(expect_corpus(c, ".bin not starting with <|endoftext|>", 2, off, tok));
  }
  PetscCall(InflTokensDestroy(&c));
  {
    struct {
      int32_t     magic, version, n;
      size_t      bytes;
      const char *expect;
    } cases[] = {
      {20240520, 1, 7, 1024 + 12, "truncated: the header promises 7 tokens (14 bytes) but the file holds 12 bytes after the header"},
      {20240520, 1, 5, 1024 + 14, "4 bytes follow the 5 tokens that the header promises"},
      {20240520, 2, 7, 1024 + 14, "llm.c header version 2; only version 1"},
      {20240520, 1, 0, 1024, "the llm.c header gives 0 tokens"},
      {20240520, 1, -3, 1024, "the llm.c header gives -3 tokens"},
      {20240520, 1, 7, 600, "600 bytes, shorter than llm.c's 1024-byte header"},
      {20240521, 1, 7, 1024 + 14, "neither an llm.c token file (int32 magic 20240520 first) nor HDF5"},
      {20240520, 1, 7, 2, "the file is (nearly) empty"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
      bin_bytes(b, cases[k].magic, cases[k].version, cases[k].n, t1, 7);
      PetscCall(put(comm, "t.bin", b, cases[k].bytes));
      EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 50257, 50256, spec, &c), cases[k].expect, cases[k].expect);
      PetscCall(InflTokensDestroy(&c));
    }
  }
  PetscFunctionReturn(0);
}

/* Rank 0 writes an HDF5 token file: /tokens of type ttype (n) from tok, /offsets (no) int64 (if no >= 0). */
static PetscErrorCode write_h5(MPI_Comm comm, const char name[], hid_t ttype, const void *tok, hsize_t n, const int64_t *off, hsize_t no)
{
  PetscMPIInt rank;
  char        path[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/%s", dir, name));
  if (rank == 0) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), s, d;
    EXPECT(f >= 0, "cannot create %s", path);
    s = H5Screate_simple(1, &n, NULL);
    d = H5Dcreate2(f, "tokens", ttype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT(H5Dwrite(d, ttype, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok) >= 0, "write /tokens");
    H5Dclose(d);
    H5Sclose(s);
    if (off) {
      s = H5Screate_simple(1, &no, NULL);
      d = H5Dcreate2(f, "offsets", H5T_NATIVE_INT64, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      EXPECT(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off) >= 0, "write /offsets");
      H5Dclose(d);
      H5Sclose(s);
    }
    H5Fclose(f);
  }
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_h5_and_windows(MPI_Comm comm)
{
  const uint16_t u16[19] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
  const int32_t  i32[19] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
  const int64_t  off[6]  = {0, 0, 1, 5, 10, 19}; /* documents of 0, 1, 4, 5 and 9 tokens */
  const float    f32[3]  = {1, 2, 3};
  char           spec[PETSC_MAX_PATH_LEN + 16];
  InflTokens     c;
  const char    *h1, *h2;

  PetscFunctionBegin;
  PetscCall(write_h5(comm, "u16.h5", H5T_NATIVE_UINT16, u16, 19, off, 6));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/u16.h5", dir));
  PetscCall(load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c));
  PetscCall(expect_corpus(c, "HDF5 uint16", 5, off, i32));
  PetscCall(InflTokensGetHash(c, &h1));
  {
    InflTokens c2;
    PetscCall(write_h5(comm, "i32.h5", H5T_NATIVE_INT32, i32, 19, off, 6));
    PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/i32.h5", dir));
    PetscCall(load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c2));
    PetscCall(expect_corpus(c2, "HDF5 int32", 5, off, i32));
    PetscCall(InflTokensGetHash(c2, &h2));
    EXPECT(strcmp(h1, h2), "different files must hash differently");
    PetscCall(InflTokensDestroy(&c2));
  }
  /* windows of n_positions = 4: L=0 none; 1 -> (0,1); 4 -> (0,4); 5 -> (0,4),(3,2); 9 -> (0,4),(3,4),(6,3) */
  {
    int64_t       nseq, *doc, *start;
    int32_t      *len;
    const int64_t wd[] = {1, 2, 3, 3, 4, 4, 4}, ws[] = {0, 0, 0, 3, 0, 3, 6};
    const int32_t wl[] = {1, 4, 4, 2, 4, 4, 3};
    PetscCall(InflTokensGetSequences(c, 4, &nseq, &doc, &start, &len));
    EXPECT(nseq == 7, "%" PRId64 " windows, expected 7", nseq);
    for (int s = 0; s < 7; s++) EXPECT(doc[s] == wd[s] && start[s] == ws[s] && len[s] == wl[s], "window %d is (%" PRId64 ", %" PRId64 ", %d), expected (%" PRId64 ", %" PRId64 ", %d)", s, doc[s], start[s], len[s], wd[s], ws[s], wl[s]);
    PetscCall(InflTokensRestoreSequences(c, &doc, &start, &len));
    EXPECT(doc == NULL && start == NULL && len == NULL, "Restore must null the arrays");
    /* every token after a document's first is predicted exactly once, for any n_positions */
    for (PetscInt np = 2; np <= 12; np++) {
      int predicted[19] = {0};
      PetscCall(InflTokensGetSequences(c, np, &nseq, &doc, &start, &len));
      for (int64_t s = 0; s < nseq; s++) {
        EXPECT(len[s] >= 1 && len[s] <= np, "n_positions %" PetscInt_FMT ": window length %d", np, len[s]);
        for (int64_t i = 1; i < len[s]; i++) predicted[off[doc[s]] + start[s] + i]++;
      }
      for (int d = 0; d < 5; d++)
        for (int64_t i = off[d]; i < off[d + 1]; i++) EXPECT(predicted[i] == (i == off[d] ? 0 : 1), "n_positions %" PetscInt_FMT ": token %" PRId64 " of document %d predicted %d times", np, i - off[d], d, predicted[i]);
      PetscCall(InflTokensRestoreSequences(c, &doc, &start, &len));
    }
    EXPECT_FAIL(PETSC_COMM_SELF, InflTokensGetSequences(c, 1, &nseq, &doc, &start, &len), "n_positions 1", "one position");
  }
  PetscCall(InflTokensDestroy(&c));
  /* bad HDF5 files */
  {
    const int64_t bad0[3] = {1, 2, 19}, dec[3] = {0, 10, 5}, end[3] = {0, 5, 18};
    const int32_t neg[19] = {5, -1};
    PetscCall(PetscSNPrintf(spec, sizeof(spec), "tokens:%s/bad.h5", dir));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_UINT16, u16, 19, bad0, 3));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c), "/offsets[0] = 1; it must be 0", "offsets not from 0");
    PetscCall(InflTokensDestroy(&c));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_UINT16, u16, 19, dec, 3));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c), "/offsets[2] = 5 is smaller than /offsets[1] = 10", "decreasing offsets");
    PetscCall(InflTokensDestroy(&c));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_UINT16, u16, 19, end, 3));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c), "the last of /offsets is 18 but /tokens has 19 entries", "offsets end");
    PetscCall(InflTokensDestroy(&c));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_UINT16, u16, 19, NULL, 0));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c), "no dataset /offsets", "no offsets");
    PetscCall(InflTokensDestroy(&c));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_INT32, neg, 19, off, 6));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c), "token 1 (document 2) has id -1, outside the vocabulary [0, 24)", "negative id");
    PetscCall(InflTokensDestroy(&c));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_UINT16, u16, 19, off, 6));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 23, 50256, spec, &c), "token 18 (document 4) has id 23, outside the vocabulary [0, 23)", "id = vocab size");
    PetscCall(InflTokensDestroy(&c));
    PetscCall(write_h5(comm, "bad.h5", H5T_NATIVE_FLOAT, f32, 3, off, 2));
    EXPECT_FAIL(comm, load(comm, NULL, INFL_TEXT_FORTUNES, 24, 50256, spec, &c), "/tokens is not an integer dataset", "float tokens");
    PetscCall(InflTokensDestroy(&c));
  }
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscMPIInt size;
  MPI_Comm    comm;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(dir, sizeof(dir), "tokens_np%d", (int)size));
  {
    PetscMPIInt rank;
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    if (rank == 0) mkdir(dir, 0755);
    PetscCallMPI(MPI_Barrier(comm));
  }
  PetscCall(test_byte(comm));
  PetscCall(test_small_bpe(comm));
  PetscCall(test_bad_files(comm));
  PetscCall(test_text(comm));
  PetscCall(test_bin(comm));
  PetscCall(test_h5_and_windows(comm));
  PetscCall(PetscPrintf(comm, "test_tokens: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

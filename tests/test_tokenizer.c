static const char help[] = "GPT-2 BPE against an independent encoder (npm gpt-3-encoder): tricky strings, the fortunes corpora, round trips.\n"
                           "Usage: test_tokenizer GPT2_DIR tests/tok/bpe_reference.json FORTUNES_DIR (exit 77 without GPT-2's files)\n";
#include "io/check.h"
#include "io/tokimpl.h"
#include <infl/tokenizer.h>
#include <infl/tokens.h>
#include <jansson.h>
#include <stdio.h>

/* The documents of a fortunes file, split here independently of src/io/tokens.c: text between lines holding only
 * "%", documents of newlines only dropped.  begin/end (n) byte ranges in text. */
static PetscErrorCode split_fortunes(const char *text, size_t len, int64_t *n, int64_t **begin, int64_t **end)
{
  int64_t cap = 16, ds = 0;

  PetscFunctionBegin;
  *n = 0;
  PetscCall(PetscMalloc2(cap, begin, cap, end));
  for (size_t ls = 0; ls <= len;) {
    size_t    le  = ls;
    PetscBool sep, last = ls == len ? PETSC_TRUE : PETSC_FALSE;
    while (le < len && text[le] != '\n') le++;
    sep = (!last && text[ls] == '%' && le == ls + 1) ? PETSC_TRUE : PETSC_FALSE;
    if (sep || last) {
      int64_t k = ds;
      while (k < (int64_t)ls && text[k] == '\n') k++;
      if (k < (int64_t)ls) {
        if (*n == cap) {
          int64_t *b2, *e2;
          PetscCall(PetscMalloc2(2 * cap, &b2, 2 * cap, &e2));
          PetscCall(PetscArraycpy(b2, *begin, cap));
          PetscCall(PetscArraycpy(e2, *end, cap));
          PetscCall(PetscFree2(*begin, *end));
          *begin = b2, *end = e2, cap *= 2;
        }
        (*begin)[*n] = ds, (*end)[*n] = (int64_t)ls, (*n)++;
      }
      ds = (int64_t)le + 1;
    }
    if (last) break;
    ls = le < len ? le + 1 : len;
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode hash_ids(const int32_t *ids, int64_t n, char hex[65])
{
  InflHash h;

  PetscFunctionBegin;
  PetscCall(InflHashCreate(&h));
  for (int64_t i = 0; i < n; i++) {
    unsigned char b[4] = {(unsigned char)ids[i], (unsigned char)(ids[i] >> 8), (unsigned char)(ids[i] >> 16), (unsigned char)(ids[i] >> 24)};
    PetscCall(InflHashUpdate(h, b, 4));
  }
  PetscCall(InflHashFinal(&h, hex));
  PetscFunctionReturn(0);
}

/* ids equal to the JSON array want?  Names the first difference. */
static PetscErrorCode compare_ids(const char what[], const int32_t *ids, int64_t n, json_t *want)
{
  PetscFunctionBegin;
  EXPECT(json_is_array(want), "%s: the fixture has no id array", what);
  for (int64_t i = 0; i < PetscMin(n, (int64_t)json_array_size(want)); i++) EXPECT(ids[i] == json_integer_value(json_array_get(want, i)), "%s: id %" PRId64 " is %d, the reference encoder gives %lld", what, i, ids[i], (long long)json_integer_value(json_array_get(want, i)));
  EXPECT(n == (int64_t)json_array_size(want), "%s: %" PRId64 " ids, the reference encoder gives %zu", what, n, json_array_size(want));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_strings(InflTokenizer t, json_t *ref)
{
  json_t *arr = json_object_get(ref, "strings");
  size_t  k;
  json_t *e;

  PetscFunctionBegin;
  EXPECT(json_array_size(arr) >= 20, "the fixture has %zu strings", json_array_size(arr));
  json_array_foreach(arr, k, e)
  {
    const char *s   = json_string_value(json_object_get(e, "text"));
    size_t      len = json_string_length(json_object_get(e, "text")), dlen;
    int32_t    *ids;
    int64_t     n;
    char       *back, what[160];
    PetscCall(PetscSNPrintf(what, sizeof(what), "string %zu \"%.60s\"", k, s));
    PetscCall(InflTokenizerEncode(t, s, len, &n, &ids));
    PetscCall(compare_ids(what, ids, n, json_object_get(e, "ids")));
    PetscCall(InflTokenizerDecode(t, ids, n, &dlen, &back));
    EXPECT(dlen == len && !memcmp(back, s, len), "%s: decode(encode(s)) differs from s", what);
    PetscCall(PetscFree(back));
    PetscCall(PetscFree(ids));
  }
  PetscFunctionReturn(0);
}

/* One corpus file: the reader's documents and ids against the reference, and against a per-document Encode; BPE and
 * byte-level round trips of every document. */
static PetscErrorCode test_corpus(MPI_Comm comm, InflTokenizer bpe, InflTokenizer bytes, json_t *entry, json_t *first, const char dir[])
{
  const char    *name = json_string_value(json_object_get(entry, "file"));
  char           path[PETSC_MAX_PATH_LEN], spec[PETSC_MAX_PATH_LEN + 8], hex[65], fhex[65];
  InflTokens     c;
  int64_t        ndoc, ntok, ns, *b, *e;
  const int32_t *tok;
  const int64_t *off;
  char          *text;
  size_t         len;
  double         t0, t1;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s/%s", dir, name));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "text:%s", path));
  PetscCall(InflHashFile(path, fhex));
  EXPECT(!strcmp(fhex, json_string_value(json_object_get(entry, "file_sha256"))), "%s has SHA-256 %s, but the reference ids were made from a file with %s (another version of the fortunes package?); regenerate tests/tok/bpe_reference.json (tests/tok/README.md)", path, fhex, json_string_value(json_object_get(entry, "file_sha256")));
  PetscCall(InflTokensCreate(comm, &c));
  PetscCall(InflTokensSetTokenizer(c, bpe));
  PetscCallMPI(MPI_Barrier(comm));
  PetscCall(PetscTime(&t0));
  PetscCall(InflTokensLoad(c, spec));
  PetscCall(PetscTime(&t1));
  PetscCall(InflTokensGetSizes(c, &ndoc, &ntok));
  PetscCall(InflTokensGetArrays(c, &tok, &off));
  EXPECT(ndoc == json_integer_value(json_object_get(entry, "documents")), "%s: %" PRId64 " documents, the reference splits %lld", name, ndoc, (long long)json_integer_value(json_object_get(entry, "documents")));
  EXPECT(ntok == json_integer_value(json_object_get(entry, "tokens")), "%s: %" PRId64 " tokens, the reference encoder gives %lld", name, ntok, (long long)json_integer_value(json_object_get(entry, "tokens")));
  PetscCall(hash_ids(tok, ntok, hex));
  EXPECT(!strcmp(hex, json_string_value(json_object_get(entry, "ids_sha256"))), "%s: SHA-256 of the ids %s, the reference encoder's %s", name, hex, json_string_value(json_object_get(entry, "ids_sha256")));
  if (first) {
    EXPECT(json_array_size(first) == 100, "the fixture has %zu first fortunes", json_array_size(first));
    for (size_t d = 0; d < json_array_size(first); d++) {
      char what[64];
      PetscCall(PetscSNPrintf(what, sizeof(what), "%s document %zu", name, d));
      PetscCall(compare_ids(what, tok + off[d], off[d + 1] - off[d], json_array_get(first, d)));
    }
  }
  /* every document: the reader's ids are Encode's, and both tokenizers give the text back */
  PetscCall(InflReadFile_Private(path, &text, &len));
  PetscCall(split_fortunes(text, len, &ns, &b, &e));
  EXPECT(ns == ndoc, "%s: the test splits %" PRId64 " documents, the reader %" PRId64, name, ns, ndoc);
  for (int64_t d = 0; d < ns; d++) {
    int32_t *ids;
    int64_t  n;
    size_t   dl;
    char    *back;
    const char *dt = text + b[d];
    size_t      dn = (size_t)(e[d] - b[d]);
    PetscCall(InflTokenizerEncode(bpe, dt, dn, &n, &ids));
    EXPECT(n == off[d + 1] - off[d] && !memcmp(ids, tok + off[d], sizeof(int32_t) * (size_t)n), "%s document %" PRId64 ": the corpus ids differ from Encode of the document", name, d);
    PetscCall(InflTokenizerDecode(bpe, ids, n, &dl, &back));
    EXPECT(dl == dn && !memcmp(back, dt, dn), "%s document %" PRId64 ": BPE decode(encode) is not the document", name, d);
    PetscCall(PetscFree(back));
    PetscCall(PetscFree(ids));
    PetscCall(InflTokenizerEncode(bytes, dt, dn, &n, &ids));
    EXPECT(n == (int64_t)dn, "%s document %" PRId64 ": byte-level gives %" PRId64 " tokens for %zu bytes", name, d, n, dn);
    for (int64_t i = 0; i < n; i++) EXPECT(ids[i] == (unsigned char)dt[i], "%s document %" PRId64 ": byte-level id %" PRId64 " is %d, the byte is %d", name, d, i, ids[i], (unsigned char)dt[i]);
    PetscCall(InflTokenizerDecode(bytes, ids, n, &dl, &back));
    EXPECT(dl == dn && !memcmp(back, dt, dn), "%s document %" PRId64 ": byte-level decode(encode) is not the document", name, d);
    PetscCall(PetscFree(back));
    PetscCall(PetscFree(ids));
  }
  PetscCall(PetscPrintf(comm, "%s: %" PRId64 " documents, %" PRId64 " tokens (%zu bytes) read and tokenized in %.3f s; ids match the reference encoder\n", name, ndoc, ntok, len, t1 - t0));
  PetscCall(PetscFree2(b, e));
  PetscCall(PetscFree(text));
  PetscCall(InflTokensDestroy(&c));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_errors(MPI_Comm comm, InflTokenizer t)
{
  int32_t *ids = NULL, bad[2] = {50256, 50257};
  int64_t  n;
  size_t   len;
  char    *back = NULL;
  struct {
    const char *text, *expect;
  } cases[] = {
    {"abc\xff", "invalid UTF-8 at byte offset 3"},
    {"ok \xe2\x82", "invalid UTF-8 at byte offset 3: a sequence cut short by the end of the text"},
    {"\xc0\xaf slash", "invalid UTF-8 at byte offset 0"},
    {"x\xe0\x80\xafy", "invalid UTF-8 at byte offset 1: an overlong encoding"},
    {"surrogate \xed\xa0\x80", "invalid UTF-8 at byte offset 10: a UTF-16 surrogate"},
    {"big \xf4\x90\x80\x80", "invalid UTF-8 at byte offset 4: a code point above U+10FFFF"},
    {"lone \x80 continuation", "invalid UTF-8 at byte offset 5: a continuation byte without a lead byte"},
    {"\xe2\x82x", "invalid UTF-8 at byte offset 0: a sequence cut short (a lead byte"},
  };

  PetscFunctionBegin;
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerEncode(t, cases[k].text, strlen(cases[k].text), &n, &ids), cases[k].expect, cases[k].expect);
  EXPECT(ids == NULL, "failed Encode must leave ids NULL");
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerDecode(t, bad, 2, &len, &back), "token 1 has id 50257, outside the vocabulary [0, 50257)", "decode of an id out of range");
  /* a valid 4-byte character, and the byte just before the invalid one */
  PetscCall(InflTokenizerEncode(t, "\xf0\x9f\x98\x80", 4, &n, &ids));
  EXPECT(n >= 1, "an emoji gives %" PRId64 " ids", n);
  PetscCall(PetscFree(ids));
  /* vocabulary sizes: equal or padded to a multiple of 128 (llm.c's 50304) */
  PetscCall(InflTokenizerCheckVocabSize(t, 50257));
  PetscCall(InflTokenizerCheckVocabSize(t, 50304));
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerCheckVocabSize(t, 50305), "the model's vocab_size 50305 does not fit", "model vocabulary larger than the padding");
  EXPECT_FAIL(PETSC_COMM_SELF, InflTokenizerCheckVocabSize(t, 50000), "the model's vocab_size 50000 does not fit", "model vocabulary smaller");
  EXPECT_FAIL(comm, InflTokenizerLoad(t, "/nonexistent-tokenizer-dir"), "tokenizer directory /nonexistent-tokenizer-dir: No such file or directory", "missing files");
  PetscFunctionReturn(0);
}

/* The checks; *skipped when GPT-2's files are absent. */
static PetscErrorCode run(int argc, char **argv, PetscBool *skipped)
{
  char          enc[PETSC_MAX_PATH_LEN], bpe[PETSC_MAX_PATH_LEN], fhex[65];
  PetscBool     have;
  InflTokenizer t, tb;
  PetscInt      V;
  json_t       *ref;
  json_error_t  jerr;
  const char   *type_hash;
  MPI_Comm      comm;

  PetscFunctionBegin;
  comm     = PETSC_COMM_WORLD;
  *skipped = PETSC_FALSE;
  PetscCheck(argc >= 4, comm, PETSC_ERR_ARG_WRONG, "usage: test_tokenizer GPT2_DIR tests/tok/bpe_reference.json FORTUNES_DIR");
  PetscCall(PetscSNPrintf(enc, sizeof(enc), "%s/encoder.json", argv[1]));
  PetscCall(PetscSNPrintf(bpe, sizeof(bpe), "%s/vocab.bpe", argv[1]));
  have = InflFileExists(enc) && InflFileExists(bpe) ? PETSC_TRUE : PETSC_FALSE;
  PetscCallMPI(MPI_Bcast(&have, 1, MPIU_BOOL, 0, comm));
  if (!have) {
    PetscCall(PetscPrintf(comm, "SKIPPED: no GPT-2 tokenizer files in %s (the fixture setup tokenizer_fetch_gpt2 fetches them with npm)\n", argv[1]));
    *skipped = PETSC_TRUE;
    PetscFunctionReturn(0);
  }
  ref = json_load_file(argv[2], 0, &jerr);
  PetscCheck(ref, comm, PETSC_ERR_FILE_OPEN, "%s: %s", argv[2], jerr.text);
  /* the files are the ones the reference ids were computed from */
  PetscCall(InflHashFile(enc, fhex));
  EXPECT(!strcmp(fhex, json_string_value(json_object_get(ref, "encoder_json_sha256"))), "%s is not the reference's encoder.json", enc);
  PetscCall(InflHashFile(bpe, fhex));
  EXPECT(!strcmp(fhex, json_string_value(json_object_get(ref, "vocab_bpe_sha256"))), "%s is not the reference's vocab.bpe", bpe);

  PetscCall(InflTokenizerCreate(comm, &t));
  PetscCall(InflTokenizerLoad(t, argv[1]));
  PetscCall(InflTokenizerGetVocabSize(t, &V));
  EXPECT(V == 50257, "GPT-2 vocabulary of %" PetscInt_FMT " tokens, expected 50257", V);
  {
    const char *b;
    size_t      l;
    PetscCall(InflTokenizerGetToken(t, 50256, &b, &l));
    EXPECT(l == 13 && !memcmp(b, "<|endoftext|>", 13), "token 50256 is not <|endoftext|>");
    PetscCall(InflTokenizerGetToken(t, 220, &b, &l));
    EXPECT(l == 1 && b[0] == ' ', "token 220 is not the space");
    PetscCall(InflTokenizerGetHash(t, &type_hash));
    EXPECT(strlen(type_hash) == 64, "tokenizer hash \"%s\"", type_hash);
  }
  PetscCall(InflTokenizerCreate(comm, &tb));
  PetscCall(InflTokenizerSetType(tb, INFL_TOKENIZER_BYTE));
  PetscCall(test_strings(t, ref));
  {
    json_t *corpus = json_object_get(ref, "corpus"), *e;
    size_t  k;
    EXPECT(json_array_size(corpus) == 3, "the fixture has %zu corpus files", json_array_size(corpus));
    json_array_foreach(corpus, k, e) PetscCall(test_corpus(comm, t, tb, e, k == 0 ? json_object_get(ref, "fortunes_first") : NULL, argv[3]));
  }
  PetscCall(test_errors(comm, t));
  /* the tokenizer still works after a failed Load? No: Load resets it; reload to check the collective load again */
  PetscCall(InflTokenizerLoad(t, argv[1]));
  PetscCall(test_strings(t, ref));
  PetscCall(InflTokenizerDestroy(&t));
  PetscCall(InflTokenizerDestroy(&tb));
  PetscCall(InflTokenizerDestroy(&t)); /* NULL accepted */
  json_decref(ref);
  PetscCall(PetscPrintf(comm, "test_tokenizer: all checks passed\n"));
  PetscFunctionReturn(0);
}

/* Exit status: 0 passed, 77 skipped (ctest SKIP_RETURN_CODE), 1 failed -- never a PETSc error code, since
 * PETSC_ERR_PLIB is 77 too. */
int main(int argc, char **argv)
{
  PetscBool      skipped = PETSC_FALSE;
  PetscErrorCode ierr;

  if (PetscInitialize(&argc, &argv, NULL, help)) return 1;
  ierr = run(argc, argv, &skipped);
  if (ierr) MPI_Abort(PETSC_COMM_WORLD, 1);
  if (PetscFinalize()) return 1;
  return skipped ? 77 : 0;
}

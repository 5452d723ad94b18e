/* libFuzzer target: InflTokensLoad on arbitrary bytes, then the windows.  Byte 0: bits 0-1 the spec (0, 3: tokens:
 * an llm.c .bin or HDF5 file, recognised by its first bytes; 1: text: fortunes format; 2: text: lines format, both
 * with the byte-level tokenizer); bit 2: the document-start token is 50256 (else -1); bits 3-7: n_positions - 2.
 * Byte 1-2: vocab_size for tokens: (little-endian, + 1).  The rest is the file.  A corpus that loads must hold
 * documents that tile the tokens, and its windows must predict every token after a document's first exactly once
 * (abort otherwise). */
#include "fuzz_common.h"
#include <infl/tokens.h>
#include <string.h>

static InflTokenizer bytes_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  if (fuzz_init()) abort();
  if (InflTokenizerCreate(PETSC_COMM_SELF, &bytes_tok) || InflTokenizerSetType(bytes_tok, INFL_TOKENIZER_BYTE)) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char       path[512], spec[600];
  InflTokens c = NULL;
  int        mode;
  PetscInt   npos, vocab;

  if (size < 3) return 0;
  /* HDF5 token files are not fuzzed here: libhdf5 1.10 itself reads out of bounds on some corrupt files (a SEGV in
   * H5G__stab_lookup, inside the library, found by this target), which no check of ours can precede; the HDF5
   * reader's own checks of shapes, offsets and ids are exercised by test_tokens' bad files. */
  if (size >= 7 && !memcmp(data + 3, "\x89HDF", 4)) return 0;
  mode  = data[0] & 3;
  npos  = 2 + (data[0] >> 3);
  vocab = 1 + ((PetscInt)data[1] | ((PetscInt)data[2] << 8));
  fuzz_write("corpus", data + 3, size - 3, path, sizeof(path));
  snprintf(spec, sizeof(spec), "%s:%s", mode == 1 || mode == 2 ? "text" : "tokens", path);
  if (InflTokensCreate(PETSC_COMM_SELF, &c)) abort();
  InflTokensSetTokenizer(c, bytes_tok);
  InflTokensSetTextFormat(c, mode == 2 ? INFL_TEXT_LINES : INFL_TEXT_FORTUNES);
  InflTokensSetDocumentStart(c, data[0] & 4 ? 50256 : -1);
  if (mode == 0 || mode == 3) InflTokensSetVocabSize(c, vocab);
  if (!InflTokensLoad(c, spec)) {
    int64_t        ndoc, ntok, nseq, *doc, *start;
    int32_t       *len;
    const int32_t *tok;
    const int64_t *off;
    uint8_t       *hit; /* (ntok) predictions of each token */
    PetscInt       V = mode == 0 || mode == 3 ? vocab : 256;
    InflTokensGetSizes(c, &ndoc, &ntok);
    InflTokensGetArrays(c, &tok, &off);
    if (ndoc < 1 || off[0] != 0 || off[ndoc] != ntok) abort();
    for (int64_t d = 0; d < ndoc; d++)
      if (off[d + 1] < off[d]) abort();
    for (int64_t i = 0; i < ntok; i++)
      if (tok[i] < 0 || tok[i] >= V) abort();
    if (InflTokensGetSequences(c, npos, &nseq, &doc, &start, &len)) abort();
    hit = calloc((size_t)ntok + 1, 1);
    for (int64_t s = 0; s < nseq; s++) {
      if (len[s] < 1 || len[s] > npos || start[s] < 0 || off[doc[s]] + start[s] + len[s] > off[doc[s] + 1]) abort();
      for (int64_t i = 1; i < len[s]; i++) hit[off[doc[s]] + start[s] + i]++;
    }
    for (int64_t d = 0; d < ndoc; d++)
      for (int64_t i = off[d]; i < off[d + 1]; i++)
        if (hit[i] != (i == off[d] ? 0 : 1)) abort();
    free(hit);
    InflTokensRestoreSequences(c, &doc, &start, &len);
  }
  InflTokensDestroy(&c);
  return 0;
}

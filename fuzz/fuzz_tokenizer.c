/* libFuzzer target: InflTokenizerLoad on arbitrary vocabulary and merges files, then Encode/Decode.
 * Input: byte 0 bit 0 picks the file names (0: vocab.json + merges.txt, 1: encoder.json + vocab.bpe); bytes 1-2 are
 * the vocabulary's length n (little-endian, clamped to what is there); the next n bytes are the vocabulary, the rest
 * the merges.  A tokenizer that loads encodes the merges text: if that text is valid UTF-8, decoding the ids must
 * give it back (abort otherwise). */
#include "fuzz_common.h"
#include <infl/tokenizer.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  return fuzz_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *names[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
  char               path[512];
  size_t             n;
  int                k;
  InflTokenizer      t = NULL;

  if (size < 3) return 0;
  k = data[0] & 1;
  n = (size_t)data[1] | ((size_t)data[2] << 8);
  data += 3;
  size -= 3;
  if (n > size) n = size;
  /* a directory of its own per input: the other pair of names from an earlier input must not be found */
  remove(strcat(strcpy(path, fuzz_dir), "/vocab.json"));
  remove(strcat(strcpy(path, fuzz_dir), "/merges.txt"));
  remove(strcat(strcpy(path, fuzz_dir), "/encoder.json"));
  remove(strcat(strcpy(path, fuzz_dir), "/vocab.bpe"));
  fuzz_write(names[k][0], data, n, path, sizeof(path));
  fuzz_write(names[k][1], data + n, size - n, path, sizeof(path));
  if (InflTokenizerCreate(PETSC_COMM_SELF, &t)) abort();
  if (!InflTokenizerLoad(t, fuzz_dir)) {
    const char *text = (const char *)data + n;
    size_t      len  = size - n, blen;
    int32_t    *ids;
    int64_t     m, bad;
    char       *back;
    if (InflUTF8Check(text, len, &bad, NULL)) abort();
    if (!InflTokenizerEncode(t, text, len, &m, &ids)) {
      if (bad >= 0) abort(); /* invalid UTF-8 must be refused */
      if (InflTokenizerDecode(t, ids, m, &blen, &back)) abort();
      if (blen != len || memcmp(back, text, len)) abort();
      PetscFree(back);
      PetscFree(ids);
    } else if (bad < 0) abort(); /* valid UTF-8 must encode */
  }
  InflTokenizerDestroy(&t);
  return 0;
}

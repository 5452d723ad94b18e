/* Private declarations shared by src/io/tokenizer.c and src/io/tokens.c. */
#ifndef INFL_TOKIMPL_H
#define INFL_TOKIMPL_H
#include <infl/tokenizer.h>

/* Read a whole file into *buf (len bytes plus a NUL), PetscMalloc'd.  Not collective; errors name the file. */
PetscErrorCode InflReadFile_Private(const char path[], char **buf, size_t *len);

/* Growable array of token ids. */
typedef struct {
  int32_t *ids; /* (cap) */
  int64_t  n, cap;
} InflIdBuf;
PetscErrorCode InflIdBufReserve_Private(InflIdBuf *b, int64_t extra);

/* Append the ids of len bytes of text to b (as InflTokenizerEncode; invalid UTF-8 names the offset in text). */
PetscErrorCode InflTokenizerEncodeAppend_Private(InflTokenizer t, const char text[], size_t len, InflIdBuf *b);

#endif

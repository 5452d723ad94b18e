/* infl/tokens.h -- a token corpus: documents of token ids, read from text (with a tokenizer) or from token files,
 * and cut into the sequences a language model of n_positions positions sees.
 *
 * A corpus is one int32 array of tokens (ntok) and int64 offsets (ndoc+1): document d is tokens[offsets[d],
 * offsets[d+1]).  Every rank holds the whole corpus (the same arrays on every rank).
 *
 * Specs (InflTokensLoad):
 *   text:PATH    UTF-8 text tokenized by the corpus's tokenizer (InflTokensSetTokenizer).  PATH is a file or a
 *                directory; a directory means all its regular files (symbolic links followed) whose names do not
 *                start with '.', in byte order of their names, each read as a file.  Text formats
 *                (InflTokensSetTextFormat, option -tokens_text_format):
 *       fortunes (default)  documents are separated by lines holding only "%" (the fortune(6) format): a document
 *                           is the text between two such lines, including its final newline (the newline before
 *                           the "%" line); a file without a "%" line is one document (its whole text).
 *       lines               one document per line, its text including its newline (a last line without a
 *                           newline is a document without one).
 *     The "%" line that ends a file (fortune files end with one) only ends its last document.  Other documents
 *     whose text is empty or holds only newlines ("\n") are skipped, and counted (InflTokensGetSkipped): a "%"
 *     line at the start of a file, two "%" lines in a row, a blank line between "%" lines, blank lines of a
 *     `lines` file.  No token is added at document boundaries.  A "%" line is "%" followed by "\n" or the end of
 *     the file ("%\r\n" is not one).  Invalid UTF-8 (BPE tokenizer) is an error naming the file, byte offset and
 *     line.
 *     Work: rank 0 reads the files and broadcasts their bytes; each rank tokenizes a contiguous share of the
 *     documents (balanced by bytes); the ids are gathered on every rank.  The result does not depend on the
 *     number of ranks.
 *   tokens:PATH  pre-tokenized ids, in one of two forms recognised by their first bytes:
 *       llm.c .bin  header of 256 little-endian int32: [0] magic 20240520, [1] version 1 (uint16 tokens),
 *                   [2] token count n; then n little-endian uint16 tokens, and nothing after them.  A .bin has no
 *                   document boundaries; as llm.c's data scripts write each document as <|endoftext|> followed by
 *                   its tokens, every occurrence of the document-start token (default 50256, GPT-2's
 *                   <|endoftext|>; InflTokensSetDocumentStart, option -tokens_document_start; -1: none) starts a
 *                   new document that includes it.  Tokens before the first such token form a document of their
 *                   own.  A file of n = 0 tokens is an error.
 *       HDF5        /tokens (ntok) of any integer type that fits int32 (int32 or uint16 in practice) and /offsets
 *                   (ndoc+1) int64: offsets[0] = 0, nondecreasing, offsets[ndoc] = ntok.  Empty documents are kept
 *                   (they give no sequence), so document d is row d of the user's data.
 *     Rank 0 reads and checks the file, the arrays are broadcast.
 *   Every token id must be in [0, vocab_size) (InflTokensSetVocabSize, e.g. the model's vocab_size; for text, the
 *   tokenizer's vocabulary size when not set); an id outside is an error naming the file, the token's position
 *   (and its document).  Truncated files and headers that disagree with the file size are errors naming both.
 *
 * Sequences (InflTokensGetSequences): a document of L <= n_positions tokens is one sequence; a longer one is cut
 * into windows of n_positions tokens starting at 0, n_positions-1, 2(n_positions-1), ... (the last window shorter),
 * consecutive windows sharing one token, so that every token after the document's first is predicted (is the
 * target of the token before it inside one window) exactly once: ceil((L-1)/(n_positions-1)) windows.  A document of one
 * token is one sequence of length 1 (nothing to predict); an empty document has none.
 *
 * Provenance: InflTokensGetHash is the SHA-256 of the input files' bytes (each preceded by its length, in reading
 * order) and of the options that change the result (spec kind; text: the format and the tokenizer's hash; token
 * files: the document-start token), so the same data read from another path has the same hash.  vocab_size only
 * checks the ids and is not part of it.
 */
#ifndef INFL_TOKENS_H
#define INFL_TOKENS_H

#include <infl/tokenizer.h>

typedef struct _p_InflTokens *InflTokens;

typedef enum { INFL_TEXT_FORTUNES = 0, INFL_TEXT_LINES } InflTextFormat;

/* Create an empty corpus on comm.  Not collective. */
PetscErrorCode InflTokensCreate(MPI_Comm comm, InflTokens *c);
/* Prefix of the options read by SetFromOptions (e.g. "train_" for -train_tokens_text_format). */
PetscErrorCode InflTokensSetOptionsPrefix(InflTokens c, const char prefix[]);
/* Options: -tokens_text_format fortunes|lines, -tokens_document_start ID (-1: none).  Collective (all ranks read the
 * same database). */
PetscErrorCode InflTokensSetFromOptions(InflTokens c);
/* The tokenizer of text: specs (referenced, not copied: keep it alive until Load returns). */
PetscErrorCode InflTokensSetTokenizer(InflTokens c, InflTokenizer t);
PetscErrorCode InflTokensSetTextFormat(InflTokens c, InflTextFormat f);
/* Token ids must be < vocab_size (> 0).  Default: the tokenizer's vocabulary size (text:), required for tokens:. */
PetscErrorCode InflTokensSetVocabSize(InflTokens c, PetscInt vocab_size);
/* Token that starts a document in a .bin file (default 50256; -1: the file is one document). */
PetscErrorCode InflTokensSetDocumentStart(InflTokens c, PetscInt id);

/* Collective.  Read spec ("text:PATH" or "tokens:PATH"; see above).  Errors are raised on every rank with the same
 * message: unknown spec, missing files, empty corpus (no document), invalid UTF-8, token ids out of range,
 * truncated files or lying headers, malformed /offsets. */
PetscErrorCode InflTokensLoad(InflTokens c, const char spec[]);

/* ndoc documents, ntok tokens. */
PetscErrorCode InflTokensGetSizes(InflTokens c, int64_t *ndoc, int64_t *ntok);
/* tokens (ntok) and offsets (ndoc+1), owned by the corpus (read only). */
PetscErrorCode InflTokensGetArrays(InflTokens c, const int32_t **tokens, const int64_t **offsets);
/* Documents skipped as empty (text: specs; 0 otherwise). */
PetscErrorCode InflTokensGetSkipped(InflTokens c, int64_t *skipped);
/* Where document d comes from: the file path and, for text, the line where its text starts (1-based; for
 * tokens: files, the index of its first token in the file). */
PetscErrorCode InflTokensGetDocumentSource(InflTokens c, int64_t d, const char **file, int64_t *line);
/* SHA-256 (hex) identifying the corpus (see Provenance above). */
PetscErrorCode InflTokensGetHash(InflTokens c, const char **hex);

/* Sequences of at most n_positions (>= 2) tokens: nseq of them; sequence s is tokens[offsets[doc[s]] + start[s],
 * ... + start[s] + length[s]) of document doc[s].  doc, start (nseq) int64, length (nseq) int32, allocated here and
 * freed by InflTokensRestoreSequences.  Not collective (every rank gets the same). */
PetscErrorCode InflTokensGetSequences(InflTokens c, PetscInt n_positions, int64_t *nseq, int64_t **doc, int64_t **start, int32_t **length);
PetscErrorCode InflTokensRestoreSequences(InflTokens c, int64_t **doc, int64_t **start, int32_t **length);

/* Accepts NULL; nulls the handle. */
PetscErrorCode InflTokensDestroy(InflTokens *c);

#endif

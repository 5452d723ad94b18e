/* infl/tokenizer.h -- tokenizers of text for language models: byte-level and GPT-2's byte-level BPE.
 *
 * Kinds:
 *   INFL_TOKENIZER_BYTE  vocabulary of 256 tokens, token = byte value.  Any bytes are accepted (no UTF-8 check);
 *                        it is the tokenizer of a model whose vocab_size is 256 and that comes without
 *                        tokenizer files.
 *   INFL_TOKENIZER_BPE   GPT-2's byte-level byte-pair encoding (Radford et al. 2019, "Language Models are
 *                        Unsupervised Multitask Learners"; Sennrich et al. 2016 for BPE), as openai/gpt-2's
 *                        encoder.py and Hugging Face's GPT2Tokenizer compute it:
 *     1. the text (UTF-8) is split into pre-tokens by GPT-2's pattern
 *          's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *        (PCRE2 in UTF mode; \s is spelled out as Unicode's White_Space property, as Python's `regex` module
 *        defines it: U+0009-000D, 0020, 0085, 00A0, 1680, 2000-200A, 2028, 2029, 202F, 205F, 3000);
 *     2. each pre-token's bytes become one symbol per byte; vocabulary strings are read through GPT-2's
 *        byte-to-unicode map (bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF map to the same code point, the 68 others
 *        to U+0100 + their rank among them, so that ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A);
 *     3. the adjacent pair of symbols with the lowest merge rank (line order of the merges file) is merged,
 *        every non-overlapping occurrence left to right, until no adjacent pair has a rank;
 *     4. each final symbol is looked up in the vocabulary.
 *     Special tokens get no treatment: "<|endoftext|>" in a text is encoded as ordinary text, as encoder.py does
 *     (its id, 50256 in GPT-2, decodes to those 13 bytes).
 *
 * Tokenizer files (InflTokenizerLoad looks in a directory, in this order):
 *   vocab.json + merges.txt      (Hugging Face names)
 *   encoder.json + vocab.bpe     (openai/gpt-2 names; the same contents)
 *   The vocabulary is a JSON object {token string: id}; ids must be exactly 0..V-1, each once; token strings
 *   must be distinct after the byte-to-unicode map is undone, and every single byte must have a token.  The
 *   merges file is text, one merge "left right" per line (two tokens separated by one space), ranked by line
 *   order; a first line starting with "#version" and empty lines are ignored.  Both parts of a merge and their
 *   concatenation must be vocabulary tokens; a merge given twice is an error.
 *
 * Errors (PETSc error codes; raised on every rank of the tokenizer's communicator with the same message):
 *   PETSC_ERR_FILE_OPEN        no tokenizer files in the directory (names the directory and both name pairs).
 *   PETSC_ERR_FILE_UNEXPECTED  malformed JSON (file, line, column, jansson's text), an id that is not an integer,
 *                              ids not dense 0..V-1 (names the first missing id), a duplicate token or id (names
 *                              both entries), a merges line that is not two tokens (file and line), a merge part
 *                              or result missing from the vocabulary (file, line, the token).
 *   PETSC_ERR_ARG_WRONG        invalid UTF-8 in text given to a BPE tokenizer (names the byte offset and the
 *                              reason; the caller adds the file).
 *   PETSC_ERR_ARG_OUTOFRANGE   an id outside [0, V) given to Decode or GetToken (names the position and the id).
 *   PETSC_ERR_ARG_INCOMP       CheckVocabSize: the model's vocab_size does not fit (names both sizes).
 */
#ifndef INFL_TOKENIZER_H
#define INFL_TOKENIZER_H

#include <infl/sys.h>

typedef struct _p_InflTokenizer *InflTokenizer;

typedef enum { INFL_TOKENIZER_NONE = 0, INFL_TOKENIZER_BYTE, INFL_TOKENIZER_BPE } InflTokenizerType;

/* Create an empty tokenizer on comm (no kind yet: SetType or Load gives it one).  Not collective. */
PetscErrorCode InflTokenizerCreate(MPI_Comm comm, InflTokenizer *t);

/* Make t a byte-level tokenizer (vocabulary 256).  INFL_TOKENIZER_BPE cannot be set this way (it needs files:
 * InflTokenizerLoad); asking for it is an error.  Not collective. */
PetscErrorCode InflTokenizerSetType(InflTokenizer t, InflTokenizerType type);

/* Collective.  Make t GPT-2 byte-level BPE from the files in directory `dir` (see above for names and checks).
 * Rank 0 reads and validates both files; the vocabulary (token bytes) and the merges (as id pairs) are broadcast
 * and every rank builds its hash tables.  Errors are agreed on all ranks and name the file and line or entry; after
 * a failed Load the tokenizer has no kind. */
PetscErrorCode InflTokenizerLoad(InflTokenizer t, const char dir[]);

/* Collective.  Copy the tokenizer files of directory `dir` (the pair InflTokenizerLoad would read: vocab.json +
 * merges.txt, else encoder.json + vocab.bpe) into directory `dest` (a trained model's), replacing files of the same
 * names there, so that the stages that read the model find its tokenizer beside it.  Nothing when dir is NULL or ""
 * (byte-level text has no files).  Rank 0 copies (through DEST/NAME.tmp, renamed); errors (a directory without the
 * files, unreadable or unwritable files) are agreed and name the file. */
PetscErrorCode InflTokenizerCopyFiles(MPI_Comm comm, const char dir[], const char dest[]);

/* Collective.  Does directory `dir` hold tokenizer files (vocab.json + merges.txt, or encoder.json + vocab.bpe)?
 * PETSC_FALSE for NULL or "".  Rank 0 looks; the answer is broadcast. */
PetscErrorCode InflTokenizerFilesIn(MPI_Comm comm, const char dir[], PetscBool *found);

/* Collective.  The tokenizer of a model with `vocab_size` tokens: BPE from `dir` when dir is non-NULL and holds
 * tokenizer files; otherwise byte-level when vocab_size is 256; otherwise an error naming dir and vocab_size.
 * Then InflTokenizerCheckVocabSize. */
PetscErrorCode InflTokenizerSetUpForModel(InflTokenizer t, const char dir[], PetscInt vocab_size);

/* Does the tokenizer fit a model with `vocab_size` tokens?  Yes if vocab_size == V, or if the model pads its
 * vocabulary (as llm.c does, 50257 -> 50304): V < vocab_size <= V rounded up to a multiple of 128.  Otherwise
 * PETSC_ERR_ARG_INCOMP naming both sizes and the tokenizer's kind/directory.  Not collective. */
PetscErrorCode InflTokenizerCheckVocabSize(InflTokenizer t, PetscInt vocab_size);

PetscErrorCode InflTokenizerGetType(InflTokenizer t, InflTokenizerType *type);
/* Number of tokens V (ids 0..V-1): 256 for byte-level, 50257 for GPT-2. */
PetscErrorCode InflTokenizerGetVocabSize(InflTokenizer t, PetscInt *V);
/* SHA-256 identifying the tokenizer (hex, 64 characters): of "byte" for byte-level, of the vocabulary and merges
 * files' bytes for BPE.  Used in provenance records of token data. */
PetscErrorCode InflTokenizerGetHash(InflTokenizer t, const char **hex);
/* The bytes of token `id` (not NUL-terminated; len bytes).  Error for id outside [0, V). */
PetscErrorCode InflTokenizerGetToken(InflTokenizer t, int32_t id, const char **bytes, size_t *len);

/* Encode len bytes of text (need not be NUL-terminated) to token ids.  Not collective; not thread-safe (the
 * tokenizer keeps its work space and a cache of the ids of pre-tokens of at most 32 bytes).
 * *ids (n) is allocated with PetscMalloc1 (PetscFree it); n may be 0 (then *ids is a valid 1-element block).
 * BPE: invalid UTF-8 (overlong forms, surrogates, code points above U+10FFFF, truncated sequences) is an error
 * naming the byte offset in `text`.  Byte-level: ids are the byte values, no check. */
PetscErrorCode InflTokenizerEncode(InflTokenizer t, const char text[], size_t len, int64_t *n, int32_t **ids);

/* Decode n ids to bytes: *bytes (len bytes, plus a NUL after them) allocated with PetscMalloc1.  Decode(Encode(x))
 * == x for any valid input x.  An id outside [0, V) is an error naming its position. Not collective. */
PetscErrorCode InflTokenizerDecode(InflTokenizer t, const int32_t ids[], int64_t n, size_t *len, char **bytes);

/* Strict UTF-8 check of len bytes (RFC 3629): *bad = offset of the first invalid sequence, or -1 if valid; reason
 * (may be NULL) a static text describing it. */
PetscErrorCode InflUTF8Check(const char text[], size_t len, int64_t *bad, const char **reason);

/* Accepts NULL; nulls the handle. */
PetscErrorCode InflTokenizerDestroy(InflTokenizer *t);

#endif

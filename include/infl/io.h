/* infl/io.h -- model files (safetensors), data sets (IDX, HDF5), and the helpers every stage uses to write HDF5.
 *
 * Formats:
 *   safetensors: 8-byte little-endian header length n, n bytes of JSON {name: {dtype, shape, data_offsets}, ...,
 *     "__metadata__": {str: str}}, then the tensor bytes (row-major, little-endian).  Spec: huggingface/safetensors.
 *   IDX (LeCun's MNIST format, also Fashion-MNIST): big-endian magic 0x0000 type ndim, ndim big-endian uint32 sizes,
 *     then data; optionally gzip-compressed (.gz).
 *   HDF5 data set: /inputs (N, d) float (float32 or float64 on disk), /labels (N) integer.
 *   Token sequences: text:PATH and tokens:PATH as infl/tokens.h reads them (see "token-sequence data" below).
 */
#ifndef INFL_IO_H
#define INFL_IO_H

#include <infl/sys.h>
#include <hdf5.h>

/* ---------------------------------------------------------------- tensors and safetensors files */
typedef enum { INFL_F32 = 0, INFL_F64, INFL_I64, INFL_I32, INFL_U8, INFL_F16, INFL_BF16, INFL_DTYPE_UNKNOWN } InflDType;

PetscErrorCode InflDTypeFromString(const char s[], InflDType *t); /* "F32" -> INFL_F32; unknown -> INFL_DTYPE_UNKNOWN */
const char    *InflDTypeName(InflDType t);                         /* INFL_F32 -> "F32" */
size_t         InflDTypeSize(InflDType t);                         /* bytes per element */

typedef struct {
  char     *name;     /* owned */
  InflDType dtype;
  int       ndim;     /* 0..8 */
  int64_t   shape[8];
  int64_t   numel;
  void     *data;     /* owned, numel * InflDTypeSize(dtype) bytes, native byte order */
} InflTensor;

typedef struct _p_InflSafetensors *InflSafetensors;

/* Collective.  Rank 0 reads and validates `path` (header length within the file, JSON well formed, every tensor's
 * dtype known, data_offsets consistent with shape and dtype, inside the data section and not overlapping, file
 * not truncated); the result is broadcast so that every rank holds all tensors.  Errors (on all ranks) name the
 * file, the tensor and the offending value. */
PetscErrorCode InflSafetensorsRead(MPI_Comm comm, const char path[], InflSafetensors *st);
/* Tensor by name, or NULL if absent.  Not collective. */
PetscErrorCode InflSafetensorsGet(InflSafetensors st, const char name[], const InflTensor **t);
/* Number of tensors and the i-th (in file order: ascending data_offsets, whatever the order of the JSON header). */
PetscErrorCode InflSafetensorsGetSize(InflSafetensors st, PetscInt *n);
PetscErrorCode InflSafetensorsGetIndex(InflSafetensors st, PetscInt i, const InflTensor **t);
/* Metadata value by key, or NULL if absent.  Not collective. */
PetscErrorCode InflSafetensorsGetMetadata(InflSafetensors st, const char key[], const char **value);
/* Collective; rank 0 reads only the header of `path`.  value (len): the __metadata__ entry `key` ("" when absent; cut
 * to len - 1 characters).  Errors (every rank) name the file: missing, truncated, not safetensors. */
PetscErrorCode InflSafetensorsReadMetadata(MPI_Comm comm, const char path[], const char key[], char value[], size_t len);
/* SHA-256 of the file bytes, computed while reading. */
PetscErrorCode InflSafetensorsGetHash(InflSafetensors st, const char **hex);
PetscErrorCode InflSafetensorsDestroy(InflSafetensors *st);

/* Collective; rank 0 writes `path` (first to `path`.partial, then renamed).  Tensors from rank 0's arguments.
 * Metadata: nmeta key/value string pairs.  Tensors are laid out in the order given, 8-byte aligned header
 * (padded with spaces, as the reference implementation does). */
PetscErrorCode InflSafetensorsWrite(MPI_Comm comm, const char path[], PetscInt ntensors, const InflTensor tensors[], PetscInt nmeta, const char *const keys[], const char *const values[]);

/* Not collective.  A floating-point tensor (F32, F64, F16, BF16) as float32 into dst (numel): F64 is rounded,
 * F16 (IEEE 754 binary16, subnormals included) and BF16 are exact.  Error for other dtypes, naming the tensor. */
PetscErrorCode InflTensorToFloat(const InflTensor *t, float dst[]);
float          InflHalfToFloat(uint16_t h);
float          InflBFloat16ToFloat(uint16_t h);

/* ---------------------------------------------------------------- data sets */
typedef struct _p_InflData *InflData;

/* Collective.  spec is "idx:PREFIX" (PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]; images
 * become float rows of pixel/255, row-major (N, rows*cols)) or "h5:FILE" (/inputs (N, d), /labels (N)).
 * limit > 0 keeps only the first `limit` examples (limit larger than the file's N is an error naming both);
 * limit 0 keeps all, a negative limit is an error.  /labels of any HDF5 integer type are read as int64, /inputs
 * of float32 or float64 as float32 (non-finite after that conversion is an error).
 * Each rank then holds its shard: the InflPartition block of [0, N) for its rank.
 * Errors (all ranks): missing file, bad magic, truncated data, N mismatch between images and labels,
 * negative labels, non-finite inputs (naming the example index), empty data set.
 * "text:PATH" and "tokens:PATH" open token-sequence data, read later for the model (see below). */
PetscErrorCode InflDataOpen(MPI_Comm comm, const char spec[], int64_t limit, InflData *data);
/* Collective.  InflDataOpen with the data set's role name (InflDataSetName) given from the start, so that errors of
 * the opening already name it: a limit beyond the examples of the files is "-NAME_limit V" (the option that set it). */
PetscErrorCode InflDataOpenNamed(MPI_Comm comm, const char spec[], const char name[], int64_t limit, InflData *data);
/* N examples in all, d features per example, nclasses = 1 + max label over the whole set. */
PetscErrorCode InflDataGetSizes(InflData data, int64_t *N, int64_t *d, int64_t *nclasses);
/* This rank's shard: global indices [start, start+count), x (count, d) row-major, labels (count).  Rows data.  For
 * token-sequence data start and count are the shard of sequences (0 until InflDataSetUpSequences), and *x and
 * *labels are set to NULL: a sequence is no row of floats; its tokens come from InflDataGetSequenceShard. */
PetscErrorCode InflDataGetShard(InflData data, int64_t *start, int64_t *count, const float **x, const int64_t **labels);
/* Any examples by global index (not collective; reads the file again as needed, or from the shard: raw IDX files
 * by seeking, .gz IDX files decompressed whole into memory on the first non-local index, HDF5 files reopened by
 * this rank alone).
 * x (n, d), labels (n).  Index out of [0, N) is an error naming the index and N. */
PetscErrorCode InflDataGetExamples(InflData data, PetscInt n, const int64_t idx[], float x[], int64_t labels[]);
/* Not collective.  Free the decompressed copy of a .gz IDX file that InflDataGetExamples made for non-local
 * examples (N d bytes; of the parent for a subset); the next such access makes it again.  A caller that has read
 * what it needs (the scorer its queries) frees it, so that it does not stay beside the stages that follow. */
PetscErrorCode InflDataFreeCache(InflData data);
/* Not collective.  *bytes = what this rank holds for the data set, for the -mem_limit estimates: rows: its shard
 * (count (d floats + an int64 label)) and the decompressed copy of InflDataGetExamples if made; token sequences:
 * the corpus' tokens and document offsets, the window tables (N (two int64 and an int32)) and the shard's tokens
 * and offsets.  A subset counts its own shard only. */
PetscErrorCode InflDataGetBytes(InflData data, size_t *bytes);
/* Collective on comm (which may be any communicator, e.g. a group of the ranks of parent's).  A data set of the n
 * examples idx (n) of `parent` (in that order; an index may repeat), sharded over comm's ranks by InflPartition: the
 * subsets of leave-one-out and linear datamodeling retraining (infl/eval.h).  Rows: labels (n) replace the parent's
 * labels (mislabeled copies), or NULL keeps them.  Token sequences (a parent whose sequences are set up): the
 * parent's windows, ready for a model of the parent's (labels must be NULL).  The examples are read now from the
 * parent (InflDataGetExamples, InflDataGetSequences), which must outlive the subset (later random access goes through
 * it).  Its hash is the SHA-256 of the parent's hash, `tag` (may be NULL) and the members (with their labels).
 * Errors: n < 1, an index outside the parent, a negative label, labels for sequences, sequences not set up. */
PetscErrorCode InflDataCreateSubset(InflData parent, MPI_Comm comm, int64_t n, const int64_t idx[], const int64_t labels[], const char tag[], InflData *sub);
/* Collective on comm.  The corrupted-document copy of token-sequence data (the "mislabeled" training set of a language
 * model, infl lds -lds_mislabel_fraction): every window of `parent` in order (set up), those with corrupt[i] != 0
 * (corrupt (N)) with their tokens permuted by InflDataCorruptWindow(seed, i, ...), the others unchanged.  Hash: as a
 * subset, with the seed and the corrupted windows.  Errors: rows data (corrupt their labels instead), sequences not
 * set up. */
PetscErrorCode InflDataCreateCorrupted(InflData parent, MPI_Comm comm, uint64_t seed, const uint8_t corrupt[], const char tag[], InflData *sub);
/* Not collective.  Corrupt window `index` (its len tokens, in place): a random permutation of its tokens, the
 * Fisher-Yates shuffle whose step t (t = len-1 .. 1) swaps t with floor(u_t (t+1)), u_t = InflUniform(seed, t,
 * INFL_STREAM_MISLABEL + 512 + 256 index) (infl/sys.h): the same tokens (byte or token frequencies unchanged), their
 * order destroyed.  Errors: a negative index or length. */
PetscErrorCode InflDataCorruptWindow(uint64_t seed, int64_t index, int64_t len, int32_t tokens[]);
/* SHA-256 over the files' bytes and the limit: identifies the data set in provenance records. */
PetscErrorCode InflDataGetHash(InflData data, const char **hex);
PetscErrorCode InflDataGetSpec(InflData data, const char **spec);
/* What a data set holds: rows of float features with a class label each (idx:, h5:), or token sequences (text:,
 * tokens:).  A model says which it consumes in its data check (InflModelCheckData). */
typedef enum { INFL_DATA_ROWS = 0, INFL_DATA_SEQUENCES } InflDataContent;
PetscErrorCode InflDataGetContent(InflData data, InflDataContent *kind);

/* ---------------------------------------------------------------- token-sequence data (text:PATH, tokens:PATH)
 * InflDataOpen of "text:PATH" or "tokens:PATH" (formats: infl/tokens.h) only records the spec and the limit: the
 * windows depend on the model (its vocabulary, its tokenizer and its n_positions), so the corpus is read by
 * InflDataSetUpSequences, which the gpt2 model's data check (InflModelCheckData) calls with the model's sizes and
 * path.  Until then the data set is not ready (InflDataSequencesReady) and its N is 0.
 * The examples are the windows of InflTokensGetSequences (documents cut into windows of seq_len tokens, consecutive
 * windows sharing one token); N is their number (the first `limit` of them when limit > 0), sharded over ranks
 * by InflPartition like rows.  InflDataGetSizes gives N, d = seq_len and nclasses = the vocabulary size.
 * Tokenizer of text: the directory set by InflDataSetTokenizerDir (the drivers' -tokenizer DIR; GPT-2 BPE files
 * there), else tokenizer files beside the model (in its directory, or the directory of its file), else byte-level
 * when vocab_size is 256 (InflTokenizerSetUpForModel); it must fit vocab_size (InflTokenizerCheckVocabSize).
 * Hash: SHA-256 of the corpus hash (InflTokensGetHash: files, format, tokenizer), seq_len and N. */
/* Not collective.  Tokenizer directory for text: data ("" or NULL: beside the model, else byte-level). */
PetscErrorCode InflDataSetTokenizerDir(InflData data, const char dir[]);
/* Not collective.  Window length (tokens per sequence; 0, the default: the model's n_positions).  A window longer
 * than the model's n_positions is refused by the model's data check, naming the sequence and both lengths. */
PetscErrorCode InflDataSetSequenceLength(InflData data, PetscInt seq_len);
/* Collective.  Read the corpus for a model of vocab_size tokens and n_positions positions loaded from model_path
 * (a file or directory; may be NULL), cut the windows, take this rank's shard.  Errors (all ranks; the data
 * set stays not ready): those of InflTokensLoad (missing files, invalid UTF-8, token ids >= vocab_size
 * naming the file and position), no tokenizer for the model, a limit larger than the number of windows, no window.
 * A second call is an error. */
PetscErrorCode InflDataSetUpSequences(InflData data, PetscInt vocab_size, PetscInt n_positions, const char model_path[]);
/* Is the sequence data set up (PETSC_FALSE for rows data)? */
PetscErrorCode InflDataSequencesReady(InflData data, PetscBool *ready);
/* This rank's shard of sequences: global indices [start, start+count), tokens of the shard concatenated and
 * offsets (count+1), offsets[0] = 0 (read only, owned by the data set). */
PetscErrorCode InflDataGetSequenceShard(InflData data, int64_t *start, int64_t *count, const int32_t **tokens, const int64_t **offsets);
/* Not collective.  Any sequences by global index: tokens (at least n seq_len) concatenated, offsets (n+1) out,
 * offsets[0] = 0.  An index outside [0, N) is an error naming it and N. */
PetscErrorCode InflDataGetSequences(InflData data, PetscInt n, const int64_t idx[], int32_t tokens[], int64_t offsets[]);
/* Collective.  Prompt/completion queries (-query_prompts FILE) for a model of vocab_size tokens and n_positions
 * positions, tokenized like text: data (tokenizer from tokdir when non-empty, else beside model_path, else
 * byte-level for a vocabulary of 256).  FILE is UTF-8 text: queries separated by lines holding only "%" (as fortune
 * files; empty or blank queries skipped); in each query the first line holding only ">>>" separates the prompt
 * (the text before it, with its final newline) from the completion (the text after it, to the "%" line, with its
 * final newline).  Prompt and completion are tokenized separately and concatenated: query q is tokens
 * [offsets[q], offsets[q+1]) and row t of it predicts token t+1 only when that token belongs to the completion:
 * targets[t] = tokens[t+1] there, -1 elsewhere, so that the query's loss is -log p(completion | prompt).  Rank 0
 * reads the file; every rank parses it.  Out: Q, offsets (Q+1), tokens and targets (offsets[Q]) allocated with
 * PetscMalloc3 (PetscFree3(offsets, tokens, targets)), hash: SHA-256 of the file's bytes and the tokenizer.
 * Errors (every rank): the file cannot be read, a query without a ">>>" line, an empty prompt or completion, a
 * query longer than n_positions tokens (each naming the query, its line and the fix), no query at all. */
PetscErrorCode InflPromptsLoad(MPI_Comm comm, const char path[], const char tokdir[], PetscInt vocab_size, PetscInt n_positions, const char model_path[], PetscInt *Q, int64_t **offsets, int32_t **tokens, int32_t **targets, char hash[65]);
/* The data set's role in messages ("train", "query", ...; default "" for none): errors then say "query data SPEC". */
PetscErrorCode InflDataSetName(InflData data, const char name[]);
PetscErrorCode InflDataGetName(InflData data, const char **name);
PetscErrorCode InflDataDestroy(InflData *data);

/* ---------------------------------------------------------------- HDF5 helpers (parallel, mpio) */
/* Wrap an HDF5 call: negative status is an error naming the call. */
#define InflCallH5(call) \
  do { \
    if ((long long)(call) < 0) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_LIB, "HDF5 call failed: %s", #call); \
  } while (0)

/* Collective.  Create `path` with mpio access (truncating); file id out.  Existing `path` is an error unless
 * overwrite (checked on rank 0 and agreed). */
PetscErrorCode InflH5Create(MPI_Comm comm, const char path[], PetscBool overwrite, hid_t *file);
/* Collective open for reading (or read-write) with mpio; errors name the file. */
PetscErrorCode InflH5Open(MPI_Comm comm, const char path[], PetscBool readwrite, hid_t *file);
/* Not collective for a file opened read-only; collective for one created or opened for writing (the last metadata is
 * written now).  Writes (InflH5WriteArray, InflH5WriteRows, InflH5WriteRowsAt, InflH5ColumnBlock and this close) are
 * agreed on every rank of the file's communicator: a failure (disk full, quota, file size limit) raises
 * PETSC_ERR_FILE_WRITE on all of them with one message naming the file, the cause (errno text) and the fix, without
 * HDF5's diagnostics; a file whose name ends in ".tmp" is then emptied and removed (it is never resumed from). */
PetscErrorCode InflH5Close(hid_t *file);
/* Collective.  Write a whole small array (rank 0's buffer is written; all ranks call). group path like
 * "/topk/scores"; intermediate groups are created.  type: H5T_NATIVE_DOUBLE, H5T_NATIVE_FLOAT, H5T_NATIVE_INT64. */
PetscErrorCode InflH5WriteArray(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[], const void *buf);
/* Collective.  Create dataset `name` (ndim, dims) and write this rank's block of rows [row0, row0+nrows) (possibly
 * empty) of a row-major array whose rows have the trailing dims. */
PetscErrorCode InflH5WriteRows(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[], int64_t row0, int64_t nrows, const void *buf);
/* Collective.  Create dataset `name` (ndim, dims) with its storage allocated now and never filled (later writes touch
 * raw data only, so a file flushed after creation keeps consistent metadata through a kill during a write), for
 * InflH5WriteRowsAt.  Intermediate groups are created; error if it exists. */
PetscErrorCode InflH5CreateDataset(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[]);
/* Collective write of this rank's rows [row0, row0+nrows) (possibly none) of the existing dataset `name`. */
PetscErrorCode InflH5WriteRowsAt(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, const void *buf);
/* Collective read of a whole array into buf (every rank gets it); dims checked against the expected ones when
 * expect != NULL (error names file, dataset, both shapes). */
PetscErrorCode InflH5ReadArray(hid_t file, const char name[], hid_t type, int ndim, const int64_t expect[], int64_t dims_out[], void *buf);
/* Collective read of a block of rows. */
PetscErrorCode InflH5ReadRows(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, void *buf);
/* Not collective: bytes of dataset elements this process has read through InflH5ReadRows and the data layer's row
 * reads since it started (what its hyperslab selections asked for; collective buffering may move
 * other bytes on the wire). */
PetscErrorCode InflH5GetBytesRead(size_t *bytes);
/* Collective: the float32 dataset `name` of dims (lead..., N), ndim <= 3, sharded by its last dimension: this rank
 * writes (write: creating the dataset) or reads the columns [c0, c0+nc) of every leading row, from or to buf (rows,
 * nc) row-major in double (rounded to float32 on write).  Ranks with no columns take part with an empty selection. */
PetscErrorCode InflH5ColumnBlock(hid_t file, const char name[], int ndim, const int64_t dims[], int64_t c0, int64_t nc, double buf[], PetscBool write);
/* Collective: the 2-D double dataset `name` (dims) split block-cyclically along dimension dim (0: rows, 1: columns)
 * in blocks of nb indices over np ranks (rank p holds blocks p, p+np, ...: InflBlacsGlobal, infl/eigen.h): this rank
 * writes (write: creating the dataset) or reads its indices, buf (nloc, dims[1]) for rows or (dims[0], nloc) for
 * columns, row-major, nloc = InflBlacsLocalCount(dims[dim], nb, p, np).  A rank with mine false (or no indices)
 * takes part with an empty selection.  The layer split of infl/layout.h writes and reads factors.h5 this way. */
PetscErrorCode InflH5CyclicBlock(hid_t file, const char name[], const int64_t dims[2], int dim, int nb, int p, int np, PetscBool mine, double buf[], PetscBool write);
/* Dataset dims (ndim <= 8); -1 ndim if absent. */
PetscErrorCode InflH5GetDims(hid_t file, const char name[], int *ndim, int64_t dims[]);
/* String and numeric attributes on an object ("/" for the file). */
PetscErrorCode InflH5SetAttrString(hid_t file, const char obj[], const char name[], const char value[]);
PetscErrorCode InflH5GetAttrString(hid_t file, const char obj[], const char name[], char value[], size_t len); /* "" if absent */
PetscErrorCode InflH5SetAttrDouble(hid_t file, const char obj[], const char name[], double value);
PetscErrorCode InflH5SetAttrInt(hid_t file, const char obj[], const char name[], int64_t value);
PetscErrorCode InflH5GetAttrDouble(hid_t file, const char obj[], const char name[], double *value);
PetscErrorCode InflH5GetAttrInt(hid_t file, const char obj[], const char name[], int64_t *value);

/* Provenance on the root of every output file: attributes "infl_version", "stage", "ranks", "options" (the whole
 * PETSc options database as text), "model_sha256", "train_sha256", "query_sha256" (those given non-NULL),
 * "created" (UTC time). */
PetscErrorCode InflH5WriteProvenance(hid_t file, MPI_Comm comm, const char stage[], const char model_hash[], const char train_hash[], const char query_hash[]);

#endif

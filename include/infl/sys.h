/* infl/sys.h -- errors, collective checks, partitions, hashing, counter-based random numbers.
 *
 * Every library function returns PetscErrorCode and follows PETSc's error conventions
 * (PetscFunctionBegin / PetscCall / PetscCheck).  Checks that depend on data only some ranks see
 * (a file read by rank 0, a value in one shard) go through InflCheckAll, which every rank of the
 * communicator calls: the ranks agree on the failure before the next collective, and all of them
 * raise the same error with the message of the lowest failing rank.
 */
#ifndef INFL_SYS_H
#define INFL_SYS_H

#include <petscsys.h>
#include <stdint.h>
#include <stddef.h>

#ifndef INFL_VERSION_STRING
#define INFL_VERSION_STRING "0.1.0"
#endif

#define INFL_MSG_LEN 1024

/* Raise error `code` on every rank of `comm` if `cond` is false on any rank.  Collective.
 * The printf-style message is formatted on the failing rank(s); the lowest failing rank's text is used. */
#define InflCheckAll(comm, cond, code, ...) \
  do { \
    char      _infl_msg[INFL_MSG_LEN] = ""; \
    PetscBool _infl_ok                = (cond) ? PETSC_TRUE : PETSC_FALSE; \
    if (!_infl_ok) PetscCall(PetscSNPrintf(_infl_msg, sizeof(_infl_msg), __VA_ARGS__)); \
    PetscCall(InflAgree_Private(comm, _infl_ok, code, _infl_msg, __LINE__, PETSC_FUNCTION_NAME, __FILE__)); \
  } while (0)

/* Collective: like InflCheckAll for a message already formatted (msg may be NULL on ranks where ok). */
PetscErrorCode InflAgree_Private(MPI_Comm comm, PetscBool ok, PetscErrorCode code, const char msg[], int line, const char func[], const char file[]);

/* Collective wrapper for code that may fail on some ranks only: run `call` (an expression returning
 * PetscErrorCode) with PETSc's error printing turned off, then agree.  A rank whose call failed passes on the
 * message of its innermost error; all ranks then fail together. */
#define InflCallAll(comm, call) \
  do { \
    PetscErrorCode _infl_e; \
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL)); \
    _infl_e = (call); \
    PetscCall(PetscPopErrorHandler()); \
    PetscCall(InflAgreeError_Private(comm, _infl_e, __LINE__, PETSC_FUNCTION_NAME, __FILE__)); \
  } while (0)
PetscErrorCode InflAgreeError_Private(MPI_Comm comm, PetscErrorCode err, int line, const char func[], const char file[]);

/* Contiguous block partition of [0, N) over `size` ranks: rank r gets [start, start+count).
 * The first N % size ranks get one more element.  A function of (N, size, rank) only. */
void InflPartition(int64_t N, int size, int rank, int64_t *start, int64_t *count);
/* The rank whose InflPartition block of [0, N) over `size` ranks holds index i (0 <= i < N): the last rank whose
 * block starts at or before i (a rank with an empty block never holds i).  O(log size); a function of (N, size, i). */
int InflPartitionOwner(int64_t N, int size, int64_t i);

/* Checked casts; error names `what`. */
PetscErrorCode InflBLASIntCast(int64_t n, const char what[], PetscBLASInt *b);
PetscErrorCode InflMPIIntCast(int64_t n, const char what[], PetscMPIInt *m);

/* MPI transfers of any length (chunked below 2^31 elements; MPI 3.1 counts are int). Collective. */
PetscErrorCode InflBcast(void *buf, int64_t count, MPI_Datatype type, int root, MPI_Comm comm);
PetscErrorCode InflAllreduceSum(void *buf, int64_t count, MPI_Datatype type, MPI_Comm comm); /* in place */
/* Sum to root; send may be MPI_IN_PLACE (then recv holds this rank's part on every rank); recv used on root only. */
PetscErrorCode InflReduceSum(const void *send, void *recv, int64_t count, MPI_Datatype type, int root, MPI_Comm comm);

/* SHA-256 (OpenSSL libcrypto).  Hex digests are 64 characters plus NUL. */
typedef struct InflHash_s *InflHash;
PetscErrorCode InflHashCreate(InflHash *h);
PetscErrorCode InflHashUpdate(InflHash h, const void *data, size_t n);
PetscErrorCode InflHashFinal(InflHash *h, char hex[65]); /* destroys h */
PetscErrorCode InflHashFile(const char path[], char hex[65]); /* not collective; error names the file */

/* Counter-based random numbers: Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as
 * 1, 2, 3"; Random123).  key = seed (64 bits), counter = (c0 (64 bits), c1 (64 bits)).  Results depend only
 * on (seed, c0, c1), never on which rank asks, so sampled labels and projections are rank-invariant.
 *   InflPhilox:  the 4 raw 32-bit words, counter words (lo32(c0), hi32(c0), lo32(c1), hi32(c1)),
 *                key words (lo32(seed), hi32(seed)).
 *   InflUniform: ((x0 | x1 << 32) >> 11) * 2^-53, in [0, 1).
 *   InflNormal:  Box-Muller from words (x0,x1) and (x2,x3): sqrt(-2 ln(1-u1)) cos(2 pi u2). */
void   InflPhilox(uint64_t seed, uint64_t c0, uint64_t c1, uint32_t out[4]);
double InflUniform(uint64_t seed, uint64_t c0, uint64_t c1);
double InflNormal(uint64_t seed, uint64_t c0, uint64_t c1);

/* Streams of the counter c1 used by the library (so that two uses never share random numbers). */
enum { INFL_STREAM_FISHER_LABEL = 1, INFL_STREAM_INIT = 2, INFL_STREAM_SHUFFLE = 3, INFL_STREAM_PROJECTION = 4, INFL_STREAM_SUBSET = 5, INFL_STREAM_MISLABEL = 6, INFL_STREAM_LANCZOS = 7 };
/* (the projection uses c1 = 4 + 256 id, retraining subsets c1 = 5 + 256 j, mislabel draws 6 and 6 + 256: disjoint) */

/* Peak resident memory of this process in bytes since it started or since the last InflPeakMemoryReset (Linux:
 * VmHWM of /proc/self/status; elsewhere getrusage's ru_maxrss, which is never reset). */
PetscErrorCode InflPeakMemory(size_t *bytes);
/* Not collective.  Start a new peak at the memory resident now (Linux: "5" written to /proc/self/clear_refs resets
 * VmHWM), so that the next InflPeakMemory is the peak of what runs in between: infl run calls it before each stage.
 * *reset (may be NULL) tells whether it worked (elsewhere the peak stays the process's). */
PetscErrorCode InflPeakMemoryReset(PetscBool *reset);
/* Collective: print "STAGE: peak memory per rank X MiB (max over ranks)" on rank 0 of comm. */
PetscErrorCode InflReportPeakMemory(MPI_Comm comm, const char stage[]);
/* Not collective.  Bytes this process holds beside what the stage it runs next counts (the data sets a driver keeps
 * for later steps, e.g. infl run's query and test data during fit and self-influence), counted by every -mem_limit
 * estimate (InflChunkFromMemLimit, the default layer layout of infl/layout.h) with the libraries' 64 MiB.  0 until set;
 * a driver sets it before a stage and back to 0 after. */
PetscErrorCode InflMemLimitSetHeld(size_t bytes);
size_t         InflMemLimitGetHeld(void);

/* Not collective.  v for a message, as "%s" in place of "%g": C's %g ("1", "1e-06"; PETSc's printf writes a %g that
 * looks like an integer as "1." and a NaN as "nan."), a value that is not finite spelled out: "nan (not a number)",
 * "inf (infinite)", "-inf (infinite)".  Returns buf (at least 32 characters). */
const char *InflDoubleString(double v, char buf[], size_t len);
/* InflDoubleString into a buffer of the enclosing block: PetscCheck(..., "-opt %s must be > 0", INFL_DSTR(x)). */
#define INFL_DSTR(v) InflDoubleString((double)(v), (char[48]){0}, 48)
/* Not collective.  v as the shortest %g (1 to 17 significant digits) that reads back as v, e.g. "0.003" where %.17g
 * writes 0.0030000000000000001 (for numbers that a summary line shows exactly; keys and hashes keep %.17g); a value
 * that is not finite as InflDoubleString.  Returns buf (at least 32 characters). */
const char *InflDoubleStringShortest(double v, char buf[], size_t len);
/* InflDoubleStringShortest into a buffer of the enclosing block. */
#define INFL_DSHORT(v) InflDoubleStringShortest((double)(v), (char[48]){0}, 48)
/* Not collective.  -mem_limit in bytes per rank (*set false and 0 when not given); errors as InflChunkFromMemLimit. */
PetscErrorCode InflGetMemLimit(MPI_Comm comm, double *bytes, PetscBool *set);
/* Collective.  Chunk size of a stage over `count` examples on this rank: *chunk is first capped at the largest count
 * over the ranks (at least 1: a larger chunk would only allocate), then, with -mem_limit (bytes per rank; suffixes
 * K, M, G; e.g. 2G), `resident` bytes held whatever the chunk (data shard, factors, queries, a margin for the
 * libraries) and `per_example` bytes per example of a chunk, *chunk = min(*chunk, (limit - resident) / per_example).
 * Error if the limit does not hold `resident` plus one example (names the stage and both numbers). */
PetscErrorCode InflChunkFromMemLimit(MPI_Comm comm, const char stage[], int64_t count, size_t resident, size_t per_example, PetscInt *chunk);

/* Rename `from` to `to` on rank 0 of comm, agreed on all ranks (the atomic end of a stage). Collective. */
PetscErrorCode InflRenameAll(MPI_Comm comm, const char from[], const char to[]);

/* Options read into fixed buffers are never truncated: error (naming the option, the length and `hint`, what to do
 * instead) if the value of option `name` (with its '-') has `len` characters or more.  Not collective: every rank
 * sees the same options database, so all of them raise the same error. */
PetscErrorCode InflOptionsCheckLength(MPI_Comm comm, const char name[], size_t len, const char hint[]);

/* A 64-bit count option: *v (unchanged if absent) from option `name`, parsed with strtoll and checked: a value that is
 * not an integer or lies outside [min, max] (including values beyond int64) is an error naming the option, the value
 * as given and the range.  Not collective (the same on every rank). */
PetscErrorCode InflOptionsGetInt64(MPI_Comm comm, const char name[], int64_t min, int64_t max, int64_t *v, PetscBool *set);

/* Not collective.  The index of the first NaN or Inf among the n values of x, or -1 if all are finite.  For checks of
 * arrays read from files (checkpoints, factors) before they are used. */
int64_t InflFirstNonFinite(int64_t n, const double x[]);
int64_t InflFirstNonFiniteFloat(int64_t n, const float x[]);

/* Does a path exist? (stat) */
PetscBool InflFileExists(const char path[]);

#endif

#include <infl/sys.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#if defined(__GLIBC__)
#include <malloc.h> /* malloc_trim */
#endif

PetscErrorCode InflAgree_Private(MPI_Comm comm, PetscBool ok, PetscErrorCode code, const char msg[], int line, const char func[], const char file[])
{
  PetscMPIInt rank, size, first, info[2];
  char        text[INFL_MSG_LEN];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  first = ok ? size : rank;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == size) PetscFunctionReturn(0);
  info[0] = (PetscMPIInt)code;
  info[1] = 0;
  text[0] = 0;
  if (rank == first && msg) PetscCall(PetscStrncpy(text, msg, sizeof(text)));
  PetscCallMPI(MPI_Bcast(info, 1, MPI_INT, first, comm));
  PetscCallMPI(MPI_Bcast(text, INFL_MSG_LEN, MPI_CHAR, first, comm));
  return PetscError(comm, line, func, file, info[0] ? info[0] : PETSC_ERR_LIB, PETSC_ERROR_INITIAL, "%s", text);
}

PetscErrorCode InflAgreeError_Private(MPI_Comm comm, PetscErrorCode err, int line, const char func[], const char file[])
{
  char *specific = NULL;
  char  msg[INFL_MSG_LEN] = "";

  PetscFunctionBegin;
  if (err) {
    const char *generic = NULL;
    PetscErrorMessage(err, &generic, &specific);
    if (specific && specific[0]) PetscCall(PetscStrncpy(msg, specific, sizeof(msg)));
    else if (generic) PetscCall(PetscStrncpy(msg, generic, sizeof(msg)));
  }
  PetscCall(InflAgree_Private(comm, err ? PETSC_FALSE : PETSC_TRUE, err, msg, line, func, file));
  PetscFunctionReturn(0);
}

void InflPartition(int64_t N, int size, int rank, int64_t *start, int64_t *count)
{
  int64_t base = N / size, rem = N % size;
  *count = base + (rank < rem ? 1 : 0);
  *start = rank * base + (rank < rem ? rank : rem);
}

int InflPartitionOwner(int64_t N, int size, int64_t i)
{
  int lo = 0, hi = size - 1;

  while (lo < hi) { /* the last rank whose block starts at or before i */
    int     mid = (lo + hi + 1) / 2;
    int64_t s0, sn;
    InflPartition(N, size, mid, &s0, &sn);
    if (s0 <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

PetscErrorCode InflBLASIntCast(int64_t n, const char what[], PetscBLASInt *b)
{
  PetscFunctionBegin;
  PetscCheck(n >= 0 && n <= (int64_t)PETSC_BLAS_INT_MAX, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s = %" PRId64 " does not fit in a BLAS integer; use smaller chunks (-mem_limit)", what, n);
  *b = (PetscBLASInt)n;
  PetscFunctionReturn(0);
}

PetscErrorCode InflMPIIntCast(int64_t n, const char what[], PetscMPIInt *m)
{
  PetscFunctionBegin;
  PetscCheck(n >= 0 && n <= (int64_t)PETSC_MPI_INT_MAX, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s = %" PRId64 " does not fit in an MPI count", what, n);
  *m = (PetscMPIInt)n;
  PetscFunctionReturn(0);
}

#define INFL_MPI_CHUNK ((int64_t)1 << 30)

PetscErrorCode InflBcast(void *buf, int64_t count, MPI_Datatype type, int root, MPI_Comm comm)
{
  int tsize;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Type_size(type, &tsize));
  for (int64_t off = 0; off < count; off += INFL_MPI_CHUNK) {
    int64_t n = PetscMin(INFL_MPI_CHUNK, count - off);
    PetscCallMPI(MPI_Bcast((char *)buf + off * tsize, (int)n, type, root, comm));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflAllreduceSum(void *buf, int64_t count, MPI_Datatype type, MPI_Comm comm)
{
  int tsize;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Type_size(type, &tsize));
  for (int64_t off = 0; off < count; off += INFL_MPI_CHUNK) {
    int64_t n = PetscMin(INFL_MPI_CHUNK, count - off);
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * tsize, (int)n, type, MPI_SUM, comm));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflReduceSum(const void *send, void *recv, int64_t count, MPI_Datatype type, int root, MPI_Comm comm)
{
  int         tsize;
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Type_size(type, &tsize));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  for (int64_t off = 0; off < count; off += INFL_MPI_CHUNK) {
    int64_t n = PetscMin(INFL_MPI_CHUNK, count - off);
    const void *s = send == MPI_IN_PLACE ? (rank == root ? MPI_IN_PLACE : (const char *)recv + off * tsize) : (const char *)send + off * tsize;
    PetscCallMPI(MPI_Reduce(s, rank == root ? (char *)recv + off * tsize : NULL, (int)n, type, MPI_SUM, root, comm));
  }
  PetscFunctionReturn(0);
}

struct InflHash_s {
  EVP_MD_CTX *ctx;
};

PetscErrorCode InflHashCreate(InflHash *h)
{
  PetscFunctionBegin;
  PetscCall(PetscNew(h));
  (*h)->ctx = EVP_MD_CTX_new();
  PetscCheck((*h)->ctx && EVP_DigestInit_ex((*h)->ctx, EVP_sha256(), NULL) == 1, PETSC_COMM_SELF, PETSC_ERR_LIB, "OpenSSL SHA-256 initialization failed");
  PetscFunctionReturn(0);
}

PetscErrorCode InflHashUpdate(InflHash h, const void *data, size_t n)
{
  PetscFunctionBegin;
  PetscCheck(EVP_DigestUpdate(h->ctx, data, n) == 1, PETSC_COMM_SELF, PETSC_ERR_LIB, "OpenSSL SHA-256 update failed");
  PetscFunctionReturn(0);
}

PetscErrorCode InflHashFinal(InflHash *h, char hex[65])
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int  len = 0;

  PetscFunctionBegin;
  PetscCheck(EVP_DigestFinal_ex((*h)->ctx, md, &len) == 1 && len == 32, PETSC_COMM_SELF, PETSC_ERR_LIB, "OpenSSL SHA-256 final failed");
  for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  EVP_MD_CTX_free((*h)->ctx);
  PetscCall(PetscFree(*h));
  PetscFunctionReturn(0);
}

PetscErrorCode InflHashFile(const char path[], char hex[65])
{
  FILE         *f = fopen(path, "rb");
  InflHash      h;
  unsigned char buf[1 << 16];
  size_t        n;

  PetscFunctionBegin;
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot open %s: %s", path, strerror(errno));
  PetscCall(InflHashCreate(&h));
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) PetscCall(InflHashUpdate(h, buf, n));
  PetscCheck(!ferror(f), PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "error reading %s", path);
  fclose(f);
  PetscCall(InflHashFinal(&h, hex));
  PetscFunctionReturn(0);
}

/* Philox4x32-10, constants from Salmon et al. (2011). */
void InflPhilox(uint64_t seed, uint64_t c0, uint64_t c1, uint32_t out[4])
{
  uint32_t x[4] = {(uint32_t)c0, (uint32_t)(c0 >> 32), (uint32_t)c1, (uint32_t)(c1 >> 32)};
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);

  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * x[0], p1 = (uint64_t)0xCD9E8D57u * x[2];
    uint32_t y0 = (uint32_t)(p1 >> 32) ^ x[1] ^ k0, y1 = (uint32_t)p1, y2 = (uint32_t)(p0 >> 32) ^ x[3] ^ k1, y3 = (uint32_t)p0;
    x[0] = y0; x[1] = y1; x[2] = y2; x[3] = y3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int i = 0; i < 4; i++) out[i] = x[i];
}

double InflUniform(uint64_t seed, uint64_t c0, uint64_t c1)
{
  uint32_t x[4];
  InflPhilox(seed, c0, c1, x);
  return (double)(((uint64_t)x[0] | ((uint64_t)x[1] << 32)) >> 11) * 0x1.0p-53;
}

double InflNormal(uint64_t seed, uint64_t c0, uint64_t c1)
{
  uint32_t x[4];
  double   u1, u2;
  InflPhilox(seed, c0, c1, x);
  u1 = (double)(((uint64_t)x[0] | ((uint64_t)x[1] << 32)) >> 11) * 0x1.0p-53;
  u2 = (double)(((uint64_t)x[2] | ((uint64_t)x[3] << 32)) >> 11) * 0x1.0p-53;
  return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586476925286766559 * u2);
}

PetscErrorCode InflPeakMemory(size_t *bytes)
{
  struct rusage ru;
  FILE         *f = fopen("/proc/self/status", "r");
  char          line[256];
  PetscFunctionBegin;
  *bytes = 0;
  while (f && fgets(line, sizeof(line), f)) {
    unsigned long long kb;
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
      *bytes = (size_t)kb * 1024;
      break;
    }
  }
  if (f) fclose(f);
  if (*bytes) PetscFunctionReturn(0);
  getrusage(RUSAGE_SELF, &ru);
  *bytes = (size_t)ru.ru_maxrss * 1024;
  PetscFunctionReturn(0);
}

PetscErrorCode InflPeakMemoryReset(PetscBool *reset)
{
  FILE *f;
  int   ok;
  PetscFunctionBegin;
#if defined(__GLIBC__)
  /* the previous stage's freed blocks go back to the system first: glibc keeps them in the heap (its mmap threshold
   * rises as large blocks are freed), and they would count in the next stage's resident and peak bytes */
  malloc_trim(0);
#endif
  f = fopen("/proc/self/clear_refs", "w");
  ok = f && fputs("5", f) >= 0;
  if (f && fclose(f) != 0) ok = 0;
  if (reset) *reset = ok ? PETSC_TRUE : PETSC_FALSE;
  PetscFunctionReturn(0);
}

static size_t mem_held; /* InflMemLimitSetHeld */

PetscErrorCode InflMemLimitSetHeld(size_t bytes)
{
  PetscFunctionBegin;
  mem_held = bytes;
  PetscFunctionReturn(0);
}

size_t InflMemLimitGetHeld(void)
{
  return mem_held;
}

PetscErrorCode InflRenameAll(MPI_Comm comm, const char from[], const char to[])
{
  PetscMPIInt rank;
  int         ok = 1, err = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Barrier(comm));
  if (rank == 0 && rename(from, to) != 0) {
    ok  = 0;
    err = errno;
  }
  InflCheckAll(comm, ok, PETSC_ERR_FILE_WRITE, "cannot rename %s to %s: %s", from, to, strerror(err));
  PetscFunctionReturn(0);
}

int64_t InflFirstNonFinite(int64_t n, const double x[])
{
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

int64_t InflFirstNonFiniteFloat(int64_t n, const float x[])
{
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

PetscBool InflFileExists(const char path[])
{
  struct stat st;
  return stat(path, &st) == 0 ? PETSC_TRUE : PETSC_FALSE;
}

PetscErrorCode InflOptionsCheckLength(MPI_Comm comm, const char name[], size_t len, const char hint[])
{
  const char *value = NULL;
  PetscBool   set;
  size_t      n = 0;

  PetscFunctionBegin;
  PetscCall(PetscOptionsFindPair(NULL, NULL, name, &value, &set));
  if (set && value) PetscCall(PetscStrlen(value, &n));
  PetscCheck(n < len, comm, PETSC_ERR_ARG_SIZ, "the value of %s has %zu characters (\"%.40s...\"), more than the %zu it may have; %s", name, n, value, len - 1, hint && hint[0] ? hint : "give a shorter value");
  PetscFunctionReturn(0);
}

PetscErrorCode InflOptionsGetInt64(MPI_Comm comm, const char name[], int64_t min, int64_t max, int64_t *v, PetscBool *set)
{
  const char *value = NULL;
  PetscBool   has;
  char       *end;
  long long   x;

  PetscFunctionBegin;
  PetscCall(PetscOptionsFindPair(NULL, NULL, name, &value, &has));
  if (set) *set = has;
  if (!has) PetscFunctionReturn(0);
  PetscCheck(value && value[0], comm, PETSC_ERR_ARG_WRONG, "option %s was given without a value; give an integer in [%" PRId64 ", %" PRId64 "]", name, min, max);
  errno = 0;
  x     = strtoll(value, &end, 10);
  PetscCheck(end != value && *end == 0, comm, PETSC_ERR_ARG_WRONG, "%s %s is not an integer; give an integer in [%" PRId64 ", %" PRId64 "]", name, value, min, max);
  PetscCheck(errno != ERANGE && x >= min && x <= max, comm, PETSC_ERR_ARG_OUTOFRANGE, "%s %s must be >= %" PRId64 " and <= %" PRId64 "; give an integer in that range", name, value, min, max);
  *v = (int64_t)x;
  PetscFunctionReturn(0);
}

PetscErrorCode InflReportPeakMemory(MPI_Comm comm, const char stage[])
{
  size_t peak;
  double mb;

  PetscFunctionBegin;
  PetscCall(InflPeakMemory(&peak));
  mb = (double)peak / (1024.0 * 1024.0);
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &mb, 1, MPI_DOUBLE, MPI_MAX, comm));
  PetscCall(PetscPrintf(comm, "%s: peak memory per rank %.0f MiB (max over ranks)\n", stage, mb));
  PetscFunctionReturn(0);
}

static PetscErrorCode parse_bytes(MPI_Comm comm, const char text[], double *bytes)
{
  char  *end;
  double v = strtod(text, &end);

  PetscFunctionBegin;
  switch (*end) {
  case 'k': case 'K': v *= 1024.0; end++; break;
  case 'm': case 'M': v *= 1024.0 * 1024.0; end++; break;
  case 'g': case 'G': v *= 1024.0 * 1024.0 * 1024.0; end++; break;
  case 't': case 'T': v *= 1024.0 * 1024.0 * 1024.0 * 1024.0; end++; break;
  default: break;
  }
  if (*end == 'B' || *end == 'b') end++;
  PetscCheck(end != text && *end == 0 && v > 0 && isfinite(v), comm, PETSC_ERR_ARG_WRONG, "-mem_limit %s: give bytes per rank as a positive number with an optional suffix K, M, G or T (e.g. 2G)", text);
  PetscCheck(v < 0x1p64, comm, PETSC_ERR_ARG_OUTOFRANGE, "-mem_limit %s is %.4g bytes per rank, more than the 16 EiB (2^64 bytes) a process can address; give the memory of a rank, e.g. 2G", text, v);
  *bytes = v;
  PetscFunctionReturn(0);
}

const char *InflDoubleString(double v, char buf[], size_t len)
{
  if (isnan(v)) snprintf(buf, len, "nan (not a number)");
  else if (isinf(v)) snprintf(buf, len, "%sinf (infinite)", v < 0 ? "-" : "");
  else snprintf(buf, len, "%g", v);
  return buf;
}

const char *InflDoubleStringShortest(double v, char buf[], size_t len)
{
  if (!isfinite(v)) return InflDoubleString(v, buf, len);
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, len, "%.*g", p, v);
    if (strtod(buf, NULL) == v) break;
  }
  return buf;
}

PetscErrorCode InflGetMemLimit(MPI_Comm comm, double *bytes, PetscBool *set)
{
  char text[64];

  PetscFunctionBegin;
  *bytes = 0;
  PetscCall(InflOptionsCheckLength(comm, "-mem_limit", sizeof(text), "give bytes per rank, e.g. 2G"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-mem_limit", text, sizeof(text), set));
  if (*set) PetscCall(parse_bytes(comm, text, bytes));
  PetscFunctionReturn(0);
}

PetscErrorCode InflChunkFromMemLimit(MPI_Comm comm, const char stage[], int64_t count, size_t resident, size_t per_example, PetscInt *chunk)
{
  char      text[64];
  PetscBool set;
  double    limit, fixed = (double)resident + 64.0 * 1024 * 1024 + (double)mem_held; /* libraries (MPI, PETSc, HDF5, OpenBLAS buffers), what the caller holds beside the stage */
  int64_t   c, maxcount = count;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &maxcount, 1, MPI_INT64_T, MPI_MAX, comm));
  *chunk = (PetscInt)PetscMax(1, PetscMin((int64_t)*chunk, maxcount));
  PetscCall(InflOptionsCheckLength(comm, "-mem_limit", sizeof(text), "give bytes per rank, e.g. 2G"));
  PetscCall(PetscOptionsGetString(NULL, NULL, "-mem_limit", text, sizeof(text), &set));
  if (!set) PetscFunctionReturn(0);
  PetscCall(parse_bytes(comm, text, &limit));
  {
    double f = fixed;
    PetscCallMPI(MPI_Allreduce(&f, &fixed, 1, MPI_DOUBLE, MPI_MAX, comm));
  }
  PetscCheck(limit >= fixed + (double)per_example, comm, PETSC_ERR_ARG_OUTOFRANGE, "-mem_limit %s (%.0f MiB per rank) cannot hold the %.0f MiB that %s keeps whatever the chunk size%s plus one example (%.3f MiB); raise -mem_limit or use more ranks", text, limit / 1048576.0, fixed / 1048576.0, stage, mem_held ? " (with what the run keeps for its later steps)" : "", (double)per_example / 1048576.0);
  c = (int64_t)((limit - fixed) / (double)per_example);
  c = PetscMax(1, PetscMin(c, (int64_t)*chunk));
  *chunk = (PetscInt)c;
  PetscCall(PetscInfo(NULL, "%s: chunk of %d examples from -mem_limit %s (%.1f MiB held whatever the chunk, %.1f KiB per example)\n", stage, (int)c, text, fixed / 1048576.0, (double)per_example / 1024.0));
  PetscFunctionReturn(0);
}

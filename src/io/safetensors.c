/* safetensors model files: read (rank 0 reads and validates, then broadcasts) and write (rank 0 writes).
 *
 * Format (huggingface/safetensors, docs "Format"): 8-byte little-endian unsigned header length n, then n bytes
 * of UTF-8 JSON {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 * then the data section.  Offsets are relative to the start of the data section.  The reference implementation
 * limits the header to 100,000,000 bytes and requires the tensors to cover the data section exactly (no holes,
 * no overlaps), which is what is checked here.
 */
#include <infl/io.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <jansson.h>

#define ST_MAX_HEADER 100000000ULL /* MAX_HEADER_SIZE of the reference implementation */

struct _p_InflSafetensors {
  PetscInt    n;        /* number of tensors */
  InflTensor *t;        /* (n) tensors in file order (ascending data_offsets) */
  int64_t    *begin;    /* (n) data_offsets[0] of each tensor */
  PetscInt    nmeta;
  char      **keys;     /* (nmeta) */
  char      **values;   /* (nmeta) */
  char        hash[65]; /* SHA-256 of the file bytes */
};

static const char *dtype_names[] = {"F32", "F64", "I64", "I32", "U8", "F16", "BF16"};
static const size_t dtype_sizes[] = {4, 8, 8, 4, 1, 2, 2};

PetscErrorCode InflDTypeFromString(const char s[], InflDType *t)
{
  PetscFunctionBegin;
  *t = INFL_DTYPE_UNKNOWN;
  for (int i = 0; i < (int)INFL_DTYPE_UNKNOWN; i++)
    if (s && !strcmp(s, dtype_names[i])) *t = (InflDType)i;
  PetscFunctionReturn(0);
}

const char *InflDTypeName(InflDType t)
{
  return (t >= 0 && t < INFL_DTYPE_UNKNOWN) ? dtype_names[t] : "unknown";
}

size_t InflDTypeSize(InflDType t)
{
  return (t >= 0 && t < INFL_DTYPE_UNKNOWN) ? dtype_sizes[t] : 0;
}

static PetscBool host_is_little_endian(void)
{
  const uint32_t one = 1;
  return *(const unsigned char *)&one == 1 ? PETSC_TRUE : PETSC_FALSE;
}

/* "[256, 784]" */
static void shape_string(int ndim, const int64_t shape[], char *buf, size_t len)
{
  size_t k = 0;
  k += (size_t)snprintf(buf + k, len - k, "[");
  for (int i = 0; i < ndim && k < len; i++) k += (size_t)snprintf(buf + k, len - k, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (k < len) snprintf(buf + k, len - k, "]");
}

/* A JSON integer that is >= 0, else -1. */
static int64_t json_nonneg(json_t *v)
{
  if (!json_is_integer(v)) return -1;
  return json_integer_value(v) < 0 ? -1 : (int64_t)json_integer_value(v);
}

typedef struct {
  int64_t  begin, end;
  PetscInt order;
} OffsetKey;

static int offset_cmp(const void *a, const void *b)
{
  const OffsetKey *x = (const OffsetKey *)a, *y = (const OffsetKey *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1; /* empty tensors first */
  return (x->order > y->order) - (x->order < y->order);
}

/* Fill st from the parsed JSON header; datalen = bytes after the header.  Validates everything.  On error, what
 * was allocated hangs off st (freed by InflSafetensorsDestroy). */
static PetscErrorCode st_from_json(const char path[], json_t *root, int64_t datalen, InflSafetensors st)
{
  const char *key;
  json_t     *val;
  OffsetKey  *order;  /* (n) */
  InflTensor *sorted; /* (n) */
  int64_t    *sbegin; /* (n) */
  PetscInt    n = 0, bad = -1;
  int64_t     covered = 0;

  PetscFunctionBegin;
  PetscCheck(json_is_object(root), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: safetensors header is JSON but not an object {name: {dtype, shape, data_offsets}}; the file is corrupt or not safetensors", path);
  json_object_foreach(root, key, val)
  {
    if (strcmp(key, "__metadata__")) n++;
  }
  PetscCall(PetscCalloc1(n ? n : 1, &st->t));
  PetscCall(PetscCalloc1(n ? n : 1, &st->begin));
  json_object_foreach(root, key, val)
  {
    if (!strcmp(key, "__metadata__")) {
      const char *mk;
      json_t     *mv;
      PetscCheck(json_is_object(val), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: __metadata__ is not a JSON object of strings; the file is corrupt or not safetensors", path);
      PetscCall(PetscCalloc1(json_object_size(val) + 1, &st->keys));
      PetscCall(PetscCalloc1(json_object_size(val) + 1, &st->values));
      json_object_foreach(val, mk, mv)
      {
        PetscCheck(json_is_string(mv), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: __metadata__ entry \"%s\" is not a string (safetensors metadata maps strings to strings)", path, mk);
        PetscCall(PetscStrallocpy(mk, &st->keys[st->nmeta]));
        PetscCall(PetscStrallocpy(json_string_value(mv), &st->values[st->nmeta]));
        st->nmeta++;
      }
      continue;
    }
    {
      json_t     *jd = json_is_object(val) ? json_object_get(val, "dtype") : NULL;
      json_t     *js = json_is_object(val) ? json_object_get(val, "shape") : NULL;
      json_t     *jo = json_is_object(val) ? json_object_get(val, "data_offsets") : NULL;
      InflTensor *x  = &st->t[st->n];
      char        shp[256];
      int64_t     b, e, need;

      PetscCheck(json_is_object(val), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: header entry is not an object {dtype, shape, data_offsets}; the file is corrupt or not safetensors", path, key);
      PetscCheck(json_is_string(jd), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: missing or non-string \"dtype\"; the file is corrupt or not safetensors", path, key);
      PetscCall(InflDTypeFromString(json_string_value(jd), &x->dtype));
      PetscCheck(x->dtype != INFL_DTYPE_UNKNOWN, PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: tensor %s: unknown dtype \"%s\"; infl reads F32, F64, F16, BF16, I64, I32 and U8 (convert the tensor, e.g. tensor.float(), before saving)", path, key, json_string_value(jd));
      PetscCheck(json_is_array(js), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: missing or non-array \"shape\"; the file is corrupt or not safetensors", path, key);
      PetscCheck(json_array_size(js) <= 8, PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: tensor %s: %d dimensions, infl supports at most 8", path, key, (int)json_array_size(js));
      x->ndim  = (int)json_array_size(js);
      x->numel = 1;
      for (int i = 0; i < x->ndim; i++) {
        x->shape[i] = json_nonneg(json_array_get(js, (size_t)i));
        PetscCheck(x->shape[i] >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: shape entry %d is not a non-negative integer; the file is corrupt or not safetensors", path, key, i);
        PetscCheck(x->shape[i] == 0 || x->numel <= INT64_MAX / 8 / x->shape[i], PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: shape is absurdly large (element count overflows); the file is corrupt", path, key);
        x->numel *= x->shape[i];
      }
      shape_string(x->ndim, x->shape, shp, sizeof(shp));
      PetscCheck(json_is_array(jo) && json_array_size(jo) == 2, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: \"data_offsets\" must be an array [begin, end]; the file is corrupt or not safetensors", path, key);
      b = json_nonneg(json_array_get(jo, 0));
      e = json_nonneg(json_array_get(jo, 1));
      PetscCheck(b >= 0 && e >= b, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: data_offsets [%" PRId64 ", %" PRId64 "] are not 0 <= begin <= end; the file is corrupt or not safetensors", path, key, b, e);
      need = x->numel * (int64_t)InflDTypeSize(x->dtype);
      PetscCheck(e - b == need, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: data_offsets [%" PRId64 ", %" PRId64 "] give %" PRId64 " bytes but dtype %s and shape %s need %" PRId64 "; the file is corrupt or was not written as safetensors", path, key, b, e, e - b, InflDTypeName(x->dtype), shp, need);
      PetscCheck(e <= datalen, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensor %s: data_offsets [%" PRId64 ", %" PRId64 "] reach beyond the end of the data section (%" PRId64 " bytes after the header); the file is truncated", path, key, b, e, datalen);
      PetscCall(PetscStrallocpy(key, &x->name));
      st->begin[st->n] = b;
      st->n++;
    }
  }
  /* file order: ascending (begin, end), ties in header order */
  PetscCall(PetscMalloc3(n ? n : 1, &order, n ? n : 1, &sorted, n ? n : 1, &sbegin));
  for (PetscInt i = 0; i < n; i++) {
    order[i].begin = st->begin[i];
    order[i].end   = st->begin[i] + st->t[i].numel * (int64_t)InflDTypeSize(st->t[i].dtype);
    order[i].order = i;
  }
  qsort(order, (size_t)n, sizeof(OffsetKey), offset_cmp);
  for (PetscInt i = 0; i < n; i++) {
    sorted[i] = st->t[order[i].order];
    sbegin[i] = st->begin[order[i].order];
  }
  memcpy(st->t, sorted, (size_t)n * sizeof(InflTensor));
  memcpy(st->begin, sbegin, (size_t)n * sizeof(int64_t));
  PetscCall(PetscFree3(order, sorted, sbegin));
  /* the tensors must tile the data section exactly: no overlap, no hole, nothing after */
  for (PetscInt i = 0; i < n && bad < 0; i++) {
    if (st->begin[i] != covered) bad = i;
    else covered += st->t[i].numel * (int64_t)InflDTypeSize(st->t[i].dtype);
  }
  if (bad >= 0) {
    const InflTensor *p = bad ? &st->t[bad - 1] : NULL, *q = &st->t[bad];
    int64_t           qb = st->begin[bad], qe = qb + q->numel * (int64_t)InflDTypeSize(q->dtype);
    PetscCheck(!p || qb >= covered, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: tensors %s data_offsets [%" PRId64 ", %" PRId64 "] and %s data_offsets [%" PRId64 ", %" PRId64 "] overlap; the file is corrupt", path, p ? p->name : "", p ? st->begin[bad - 1] : 0, covered, q->name, qb, qe);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: bytes [%" PRId64 ", %" PRId64 ") of the data section belong to no tensor (a hole before tensor %s); safetensors files have none; the file is corrupt", path, covered, qb, q->name);
  }
  PetscCheck(covered == datalen, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the data section has %" PRId64 " bytes but the tensors cover only %" PRId64 "; the file has trailing bytes, is corrupt or not safetensors", path, datalen, covered);
  for (PetscInt i = 0; i < n; i++) PetscCall(PetscMalloc(st->t[i].numel * InflDTypeSize(st->t[i].dtype) + 1, &st->t[i].data));
  PetscFunctionReturn(0);
}

/* Parse the header text (any rank); decref the JSON whatever happens. */
static PetscErrorCode st_parse_header(const char path[], const char *hdr, size_t hlen, int64_t datalen, InflSafetensors st)
{
  json_error_t   jerr;
  json_t        *root;
  PetscErrorCode ierr;

  PetscFunctionBegin;
  root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
  PetscCheck(root, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the safetensors header (%zu bytes) is not valid JSON: %s (line %d, column %d); the file is corrupt or not safetensors", path, hlen, jerr.text, jerr.line, jerr.column);
  ierr = st_from_json(path, root, datalen, st);
  json_decref(root);
  PetscCall(ierr);
  PetscFunctionReturn(0);
}

static PetscErrorCode st_read_rank0_file(const char path[], FILE *f, int64_t fsize, InflSafetensors st, char **hdr, int64_t *hlen)
{
  unsigned char len8[8];
  uint64_t      n = 0;
  InflHash      h;

  PetscFunctionBegin;
  PetscCheck(fsize >= 8, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: file has %" PRId64 " bytes, fewer than the 8-byte header length that starts a safetensors file; the file is truncated or not safetensors", path, fsize);
  PetscCheck(fread(len8, 1, 8, f) == 8, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: cannot read the header length: %s", path, strerror(errno));
  for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
  PetscCheck(n <= ST_MAX_HEADER, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: header length %llu is absurd (the safetensors limit is %llu bytes); the file is corrupt or not safetensors", path, (unsigned long long)n, ST_MAX_HEADER);
  PetscCheck((int64_t)n <= fsize - 8, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: header length %llu is larger than the %" PRId64 " bytes that follow it in the file; the file is truncated or not safetensors", path, (unsigned long long)n, fsize - 8);
  PetscCall(PetscMalloc1(n + 1, hdr));
  PetscCheck(fread(*hdr, 1, n, f) == n, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: cannot read the %llu-byte header", path, (unsigned long long)n);
  (*hdr)[n] = 0;
  *hlen     = (int64_t)n;
  PetscCall(st_parse_header(path, *hdr, n, fsize - 8 - (int64_t)n, st));
  /* data section, sequentially in file order (the tensors tile it), hashed as read */
  PetscCall(InflHashCreate(&h));
  PetscCall(InflHashUpdate(h, len8, 8));
  PetscCall(InflHashUpdate(h, *hdr, n));
  for (PetscInt i = 0; i < st->n; i++) {
    size_t nb = (size_t)st->t[i].numel * InflDTypeSize(st->t[i].dtype);
    if (fread(st->t[i].data, 1, nb, f) != nb) {
      PetscCall(InflHashFinal(&h, st->hash));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: tensor %s: short read of %zu bytes; the file changed while being read or the disk failed", path, st->t[i].name, nb);
    }
    PetscCall(InflHashUpdate(h, st->t[i].data, nb));
  }
  PetscCall(InflHashFinal(&h, st->hash));
  PetscFunctionReturn(0);
}

static PetscErrorCode st_read_rank0(const char path[], InflSafetensors st, char **hdr, int64_t *hlen)
{
  struct stat    sb;
  FILE          *f;
  PetscErrorCode ierr;

  PetscFunctionBegin;
  PetscCheck(host_is_little_endian(), PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: safetensors data are little-endian; big-endian hosts are not supported", path);
  PetscCheck(stat(path, &sb) == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "%s: cannot open the model file: %s; check the path (-model, or -checkpoints of TracIn)", path, strerror(errno));
  PetscCheck(S_ISREG(sb.st_mode), PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "%s: not a regular file; give the path of a .safetensors file", path);
  f = fopen(path, "rb");
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "%s: cannot open the model file: %s", path, strerror(errno));
  ierr = st_read_rank0_file(path, f, (int64_t)sb.st_size, st, hdr, hlen);
  fclose(f);
  PetscCall(ierr);
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsRead(MPI_Comm comm, const char path[], InflSafetensors *out)
{
  InflSafetensors st;
  PetscMPIInt     rank;
  PetscErrorCode  ierr = 0;
  char           *hdr  = NULL;
  int64_t         sizes[2] = {0, 0}; /* header length, data section length */

  PetscFunctionBegin;
  *out = NULL;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscNew(&st));
  if (rank == 0) {
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    ierr = st_read_rank0(path, st, &hdr, &sizes[0]);
    PetscCall(PetscPopErrorHandler());
    if (!ierr) {
      sizes[1] = 0;
      for (PetscInt i = 0; i < st->n; i++) sizes[1] += st->t[i].numel * (int64_t)InflDTypeSize(st->t[i].dtype);
    }
  }
  if (ierr) {
    PetscCall(PetscFree(hdr));
    PetscCall(InflSafetensorsDestroy(&st));
  }
  PetscCall(InflAgreeError_Private(comm, ierr, __LINE__, PETSC_FUNCTION_NAME, __FILE__));

  /* every rank parses the same (validated) header, then receives the tensor bytes */
  PetscCallMPI(MPI_Bcast(sizes, 2, MPI_INT64_T, 0, comm));
  if (rank != 0) PetscCall(PetscMalloc1(sizes[0] + 1, &hdr));
  PetscCall(InflBcast(hdr, sizes[0], MPI_CHAR, 0, comm));
  PetscCallMPI(MPI_Bcast(st->hash, 65, MPI_CHAR, 0, comm));
  if (rank != 0) PetscCall(st_parse_header(path, hdr, (size_t)sizes[0], sizes[1], st));
  PetscCall(PetscFree(hdr));
  for (PetscInt i = 0; i < st->n; i++) PetscCall(InflBcast(st->t[i].data, st->t[i].numel * (int64_t)InflDTypeSize(st->t[i].dtype), MPI_BYTE, 0, comm));
  *out = st;
  PetscFunctionReturn(0);
}

/* Rank 0: the value of metadata `key` of the file's header (value[0] = 0 when absent), without reading the tensors. */
static PetscErrorCode st_metadata_rank0(const char path[], const char key[], char value[], size_t len)
{
  struct stat   sb;
  FILE         *f;
  unsigned char len8[8];
  uint64_t      n = 0;
  char         *hdr;
  json_error_t  jerr;
  json_t       *root, *meta, *v;
  size_t        got;

  PetscFunctionBegin;
  value[0] = 0;
  PetscCheck(stat(path, &sb) == 0 && S_ISREG(sb.st_mode), PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "%s: cannot open the model file: %s; check the path", path, stat(path, &sb) ? strerror(errno) : "not a regular file");
  f = fopen(path, "rb");
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "%s: cannot open the model file: %s", path, strerror(errno));
  got = fread(len8, 1, 8, f);
  for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
  if (got != 8 || n > ST_MAX_HEADER || (int64_t)n > (int64_t)sb.st_size - 8) {
    fclose(f);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the safetensors header length is missing or larger than the file; the file is truncated or not safetensors", path);
  }
  if (PetscMalloc1(n + 1, &hdr)) {
    fclose(f);
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_MEM, "%s: cannot allocate the %llu-byte header", path, (unsigned long long)n);
  }
  got = fread(hdr, 1, n, f);
  fclose(f);
  if (got != n) {
    PetscCall(PetscFree(hdr));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: cannot read the %llu-byte header", path, (unsigned long long)n);
  }
  root = json_loadb(hdr, n, 0, &jerr);
  PetscCall(PetscFree(hdr));
  PetscCheck(root, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the safetensors header is not valid JSON: %s; the file is corrupt or not safetensors", path, jerr.text);
  meta = json_object_get(root, "__metadata__");
  v    = meta && json_is_object(meta) ? json_object_get(meta, key) : NULL;
  if (v && json_is_string(v)) PetscCall(PetscStrncpy(value, json_string_value(v), len));
  json_decref(root);
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsReadMetadata(MPI_Comm comm, const char path[], const char key[], char value[], size_t len)
{
  PetscMPIInt    rank;
  PetscErrorCode ierr = 0;
  int            n;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  value[0] = 0;
  if (rank == 0) {
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    ierr = st_metadata_rank0(path, key, value, len);
    PetscCall(PetscPopErrorHandler());
  }
  PetscCall(InflAgreeError_Private(comm, ierr, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
  PetscCall(InflMPIIntCast((int64_t)len, "metadata value length", &n));
  PetscCallMPI(MPI_Bcast(value, n, MPI_CHAR, 0, comm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsGet(InflSafetensors st, const char name[], const InflTensor **t)
{
  PetscFunctionBegin;
  *t = NULL;
  for (PetscInt i = 0; i < st->n; i++)
    if (!strcmp(st->t[i].name, name)) *t = &st->t[i];
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsGetSize(InflSafetensors st, PetscInt *n)
{
  PetscFunctionBegin;
  *n = st->n;
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsGetIndex(InflSafetensors st, PetscInt i, const InflTensor **t)
{
  PetscFunctionBegin;
  PetscCheck(i >= 0 && i < st->n, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "tensor index %" PetscInt_FMT " is outside [0, %" PetscInt_FMT ")", i, st->n);
  *t = &st->t[i];
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsGetMetadata(InflSafetensors st, const char key[], const char **value)
{
  PetscFunctionBegin;
  *value = NULL;
  for (PetscInt i = 0; i < st->nmeta; i++)
    if (!strcmp(st->keys[i], key)) *value = st->values[i];
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsGetHash(InflSafetensors st, const char **hex)
{
  PetscFunctionBegin;
  *hex = st->hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsDestroy(InflSafetensors *st)
{
  PetscFunctionBegin;
  if (!*st) PetscFunctionReturn(0);
  for (PetscInt i = 0; i < (*st)->n; i++) {
    PetscCall(PetscFree((*st)->t[i].name));
    PetscCall(PetscFree((*st)->t[i].data));
  }
  for (PetscInt i = 0; i < (*st)->nmeta; i++) {
    if ((*st)->keys) PetscCall(PetscFree((*st)->keys[i]));
    if ((*st)->values) PetscCall(PetscFree((*st)->values[i]));
  }
  PetscCall(PetscFree((*st)->t));
  PetscCall(PetscFree((*st)->begin));
  PetscCall(PetscFree((*st)->keys));
  PetscCall(PetscFree((*st)->values));
  PetscCall(PetscFree(*st));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- write */

/* Build the header JSON text (rank 0): metadata first, then tensors in the order given, packed. */
static PetscErrorCode st_build_header(const char path[], PetscInt ntensors, const InflTensor tensors[], PetscInt nmeta, const char *const keys[], const char *const values[], char **text)
{
  json_t        *root = json_object();
  int64_t        off  = 0;
  PetscErrorCode ierr = 0;

  PetscFunctionBegin;
  PetscCheck(root, PETSC_COMM_SELF, PETSC_ERR_MEM, "out of memory building the safetensors header of %s", path);
  if (nmeta > 0) {
    json_t *meta = json_object();
    for (PetscInt i = 0; i < nmeta; i++) json_object_set_new(meta, keys[i], json_string(values[i] ? values[i] : ""));
    json_object_set_new(root, "__metadata__", meta);
  }
  for (PetscInt i = 0; i < ntensors && !ierr; i++) {
    const InflTensor *x = &tensors[i];
    json_t           *e, *shape;
    int64_t           numel = 1, nb;

    for (int k = 0; k < x->ndim; k++) numel *= x->shape[k];
    if (!x->name || !x->name[0] || !strcmp(x->name, "__metadata__") || json_object_get(root, x->name)) {
      ierr = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_ARG_WRONG, PETSC_ERROR_INITIAL, "%s: tensor %" PetscInt_FMT " has an empty, reserved or repeated name \"%s\"; tensor names must be unique", path, i, x->name ? x->name : "");
      break;
    }
    if (x->dtype < 0 || x->dtype >= INFL_DTYPE_UNKNOWN || x->ndim < 0 || x->ndim > 8 || numel != x->numel) {
      ierr = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_ARG_WRONG, PETSC_ERROR_INITIAL, "%s: tensor %s: dtype %d, ndim %d or numel %" PRId64 " (shape gives %" PRId64 ") is invalid", path, x->name, (int)x->dtype, x->ndim, x->numel, numel);
      break;
    }
    nb    = numel * (int64_t)InflDTypeSize(x->dtype);
    e     = json_object();
    shape = json_array();
    json_object_set_new(e, "dtype", json_string(InflDTypeName(x->dtype)));
    for (int k = 0; k < x->ndim; k++) json_array_append_new(shape, json_integer(x->shape[k]));
    json_object_set_new(e, "shape", shape);
    json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
    json_object_set_new(root, x->name, e);
    off += nb;
  }
  if (!ierr) {
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) ierr = PetscError(PETSC_COMM_SELF, __LINE__, PETSC_FUNCTION_NAME, __FILE__, PETSC_ERR_MEM, PETSC_ERROR_INITIAL, "%s: cannot serialize the safetensors header", path);
    else {
      size_t n = strlen(s), padded = (n + 7) / 8 * 8;
      ierr     = PetscMalloc1(padded + 1, text);
      if (!ierr) {
        memcpy(*text, s, n);
        memset(*text + n, ' ', padded - n);
        (*text)[padded] = 0;
      }
      free(s);
    }
  }
  json_decref(root);
  PetscCall(ierr);
  PetscFunctionReturn(0);
}

static PetscErrorCode st_write_rank0(const char path[], const char partial[], PetscInt ntensors, const InflTensor tensors[], PetscInt nmeta, const char *const keys[], const char *const values[])
{
  char         *hdr = NULL;
  unsigned char len8[8];
  uint64_t      n;
  FILE         *f;
  int           bad = 0;

  PetscFunctionBegin;
  PetscCheck(host_is_little_endian(), PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: safetensors data are little-endian; big-endian hosts are not supported", path);
  PetscCall(st_build_header(path, ntensors, tensors, nmeta, keys, values, &hdr));
  n = strlen(hdr);
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
  f = fopen(partial, "wb");
  if (!f) {
    PetscCall(PetscFree(hdr));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot create %s: %s; check that the directory exists and is writable", partial, strerror(errno));
  }
  bad |= fwrite(len8, 1, 8, f) != 8;
  bad |= fwrite(hdr, 1, n, f) != n;
  for (PetscInt i = 0; i < ntensors && !bad; i++) {
    size_t nb = (size_t)tensors[i].numel * InflDTypeSize(tensors[i].dtype);
    if (nb) bad |= fwrite(tensors[i].data, 1, nb, f) != nb;
  }
  bad |= fclose(f) != 0;
  PetscCall(PetscFree(hdr));
  PetscCheck(!bad, PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE, "error writing %s: %s (disk full?)", partial, strerror(errno));
  PetscFunctionReturn(0);
}

PetscErrorCode InflSafetensorsWrite(MPI_Comm comm, const char path[], PetscInt ntensors, const InflTensor tensors[], PetscInt nmeta, const char *const keys[], const char *const values[])
{
  PetscMPIInt rank;
  char        partial[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", path));
  InflCallAll(comm, rank == 0 ? st_write_rank0(path, partial, ntensors, tensors, nmeta, keys, values) : 0);
  PetscCall(InflRenameAll(comm, partial, path));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- conversions */

float InflHalfToFloat(uint16_t h)
{
  uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  float    f;
  if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
    f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  if (e == 31) bits = sign | 0x7f800000u | (m << 13); /* inf, nan */
  else bits = sign | ((e - 15 + 127) << 23) | (m << 13);
  memcpy(&f, &bits, 4);
  return f;
}

float InflBFloat16ToFloat(uint16_t h)
{
  uint32_t bits = (uint32_t)h << 16;
  float    f;
  memcpy(&f, &bits, 4);
  return f;
}

PetscErrorCode InflTensorToFloat(const InflTensor *t, float dst[])
{
  PetscFunctionBegin;
  switch (t->dtype) {
  case INFL_F32: PetscCall(PetscArraycpy(dst, (const float *)t->data, t->numel)); break;
  case INFL_F64: for (int64_t i = 0; i < t->numel; i++) dst[i] = (float)((const double *)t->data)[i]; break;
  case INFL_F16: for (int64_t i = 0; i < t->numel; i++) dst[i] = InflHalfToFloat(((const uint16_t *)t->data)[i]); break;
  case INFL_BF16: for (int64_t i = 0; i < t->numel; i++) dst[i] = InflBFloat16ToFloat(((const uint16_t *)t->data)[i]); break;
  default: SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "tensor %s has dtype %s; weights must be F32, F64, F16 or BF16", t->name, InflDTypeName(t->dtype));
  }
  PetscFunctionReturn(0);
}

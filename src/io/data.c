/* Data sets: IDX files (LeCun's MNIST format, raw or gzip) and HDF5 (/inputs, /labels).  Every rank reads only
 * its shard (InflPartition block of [0, N)); examples of other shards are read again on demand. */
#include "io/ioimpl.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

typedef enum { DATA_IDX, DATA_H5 } DataKind;

struct _p_InflData {
  char    *spec;
  char     name[32];          /* role in messages ("train", "query"; "" none) */
  DataKind kind;
  InflDataContent content;    /* rows (idx, h5) */
  char     images[PETSC_MAX_PATH_LEN]; /* idx: images file; h5: the file */
  char     labels[PETSC_MAX_PATH_LEN]; /* idx: labels file */
  int64_t  N, Nfile, d, nclasses, limit;
  int64_t  start, count;
  float   *x; /* (count, d) this rank's inputs */
  int64_t *y; /* (count) this rank's labels */
  char     hash[65];
  /* random access for InflDataGetExamples */
  gzFile         gimg, glab;       /* idx files, kept open after the shard read */
  int            img_gz, lab_gz;   /* compressed (not transparent)? */
  unsigned char *cimg;             /* (N, d) decompressed images, on first non-local access to a .gz file */
  unsigned char *clab;             /* (N) decompressed labels, likewise */
  hid_t          h5;               /* h5 file opened by this rank alone, on first non-local access */
};

/* Run `call` on every rank, destroy the half-built data set on all ranks if any failed, then fail together. */
#define DATA_CALL_ALL(comm, call, data) \
  do { \
    PetscErrorCode _e; \
    PetscMPIInt    _bad; \
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL)); \
    _e = (call); \
    PetscCall(PetscPopErrorHandler()); \
    _bad = _e != 0; \
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &_bad, 1, MPI_INT, MPI_MAX, comm)); \
    if (_bad) PetscCall(InflDataDestroy(data)); \
    PetscCall(InflAgreeError_Private(comm, _e, __LINE__, PETSC_FUNCTION_NAME, __FILE__)); \
  } while (0)

static PetscErrorCode hash_file_bytes(InflHash h, const char path[])
{
  FILE         *f = fopen(path, "rb");
  unsigned char buf[1 << 16];
  size_t        n;

  PetscFunctionBegin;
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot open %s: %s", path, strerror(errno));
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) PetscCall(InflHashUpdate(h, buf, n));
  n = (size_t)ferror(f);
  fclose(f);
  PetscCheck(!n, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "error reading %s", path);
  PetscFunctionReturn(0);
}

/* Rank 0 hashes the files and the limit; every rank gets the hex digest. */
static PetscErrorCode data_hash(MPI_Comm comm, InflData data)
{
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    InflHash h;
    char     lim[64];
    PetscCall(InflHashCreate(&h));
    PetscCall(hash_file_bytes(h, data->images));
    if (data->kind == DATA_IDX) PetscCall(hash_file_bytes(h, data->labels));
    PetscCall(PetscSNPrintf(lim, sizeof(lim), "limit=%" PRId64, data->N));
    PetscCall(InflHashUpdate(h, lim, strlen(lim)));
    PetscCall(InflHashFinal(&h, data->hash));
  }
  PetscCallMPI(MPI_Bcast(data->hash, 65, MPI_CHAR, 0, comm));
  PetscFunctionReturn(0);
}

/* gzread of any length; *got = bytes read (short at end of file). */
static PetscErrorCode gz_read_all(gzFile f, const char path[], void *buf, int64_t n, int64_t *got)
{
  PetscFunctionBegin;
  *got = 0;
  while (*got < n) {
    unsigned chunk = (unsigned)PetscMin(n - *got, (int64_t)1 << 30);
    int      r     = gzread(f, (char *)buf + *got, chunk);
    if (r < 0) {
      int         e;
      const char *msg = gzerror(f, &e);
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: read error: %s; the file is corrupt or truncated", path, msg);
    }
    if (r == 0) break;
    *got += r;
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode gz_seek(gzFile f, const char path[], int64_t off)
{
  PetscFunctionBegin;
  PetscCheck(gzseek(f, (z_off_t)off, SEEK_SET) == (z_off_t)off, PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: cannot seek to byte %" PRId64 " of the uncompressed data; the file is truncated or corrupt", path, off);
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- IDX */

/* PREFIX-what or PREFIX-what.gz */
static PetscErrorCode idx_find(const char prefix[], const char what[], char path[])
{
  char raw[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(raw, sizeof(raw), "%s-%s", prefix, what));
  PetscCall(PetscSNPrintf(path, PETSC_MAX_PATH_LEN, "%s.gz", raw));
  if (InflFileExists(raw)) PetscCall(PetscStrncpy(path, raw, PETSC_MAX_PATH_LEN));
  PetscCheck(InflFileExists(path), PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "data idx:%s: neither %s nor %s.gz exists; check the prefix (e.g. idx:/data/fashion-mnist/train)", prefix, raw, raw);
  PetscFunctionReturn(0);
}

/* Open an IDX file and read its header: unsigned-byte type, `ndim` dimensions. */
static PetscErrorCode idx_open(const char path[], int ndim, const char what[], gzFile *f, int64_t dims[], int *compressed)
{
  unsigned char h[16];
  int64_t       got;
  uint32_t      magic;

  PetscFunctionBegin;
  *f = gzopen(path, "rb");
  PetscCheck(*f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot open %s: %s", path, strerror(errno));
  PetscCall(gz_read_all(*f, path, h, 4 + 4 * ndim, &got));
  *compressed = !gzdirect(*f);
  PetscCheck(got == 4 + 4 * ndim, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: only %" PRId64 " bytes, shorter than the %d-byte IDX header; the file is truncated", path, got, 4 + 4 * ndim);
  magic = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
  PetscCheck(magic == (0x00000800u | (uint32_t)ndim), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: IDX magic number 0x%08x, expected 0x%08x (unsigned bytes, %d dimensions) for %s; is this the right IDX file?", path, magic, 0x00000800u | (uint32_t)ndim, ndim, what);
  for (int i = 0; i < ndim; i++) dims[i] = ((int64_t)h[4 + 4 * i] << 24) | ((int64_t)h[5 + 4 * i] << 16) | ((int64_t)h[6 + 4 * i] << 8) | (int64_t)h[7 + 4 * i];
  PetscFunctionReturn(0);
}

/* Headers, sizes and this rank's shard (local work; errors agreed by the caller). */
static PetscErrorCode idx_load(MPI_Comm comm, const char prefix[], int64_t limit, InflData data)
{
  int64_t        idims[3], ldims[1], got;
  unsigned char *buf; /* (count, d) pixels */
  PetscMPIInt    size, rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(idx_find(prefix, "images-idx3-ubyte", data->images));
  PetscCall(idx_find(prefix, "labels-idx1-ubyte", data->labels));
  PetscCall(idx_open(data->images, 3, "images (idx3)", &data->gimg, idims, &data->img_gz));
  PetscCall(idx_open(data->labels, 1, "labels (idx1)", &data->glab, ldims, &data->lab_gz));
  PetscCheck(idims[0] == ldims[0], PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "data idx:%s: %s has %" PRId64 " images but %s has %" PRId64 " labels; the two files do not belong together", prefix, data->images, idims[0], data->labels, ldims[0]);
  PetscCheck(idims[1] * idims[2] <= ((int64_t)1 << 31), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the IDX header gives images of %" PRId64 " x %" PRId64 " pixels; the header is corrupt", data->images, idims[1], idims[2]);
  data->Nfile = idims[0];
  data->d     = idims[1] * idims[2];
  if (!data->img_gz) { /* raw file: its size must hold what the header promises, before anything is allocated */
    struct stat sb;
    PetscCheck(stat(data->images, &sb) == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot stat %s: %s", data->images, strerror(errno));
    PetscCheck((int64_t)sb.st_size >= 16 + data->Nfile * data->d, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated: the header promises %" PRId64 " images but the data end inside image %" PRId64 " (%" PRId64 " x %" PRId64 " pixels each, a file of %" PRId64 " bytes); re-download or regenerate the file", data->images, data->Nfile, ((int64_t)sb.st_size - 16) / data->d, idims[1], idims[2], (int64_t)sb.st_size);
  }
  if (data->img_gz) { /* compressed: deflate expands at most 1032:1, so the file size bounds what it can hold */
    struct stat sb;
    PetscCheck(stat(data->images, &sb) == 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot stat %s: %s", data->images, strerror(errno));
    PetscCheck(16 + data->Nfile * data->d <= 1032 * (int64_t)sb.st_size + 1024, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the header promises %" PRId64 " images of %" PRId64 " x %" PRId64 " pixels, more than a compressed file of %" PRId64 " bytes can hold; the file is truncated or corrupt", data->images, data->Nfile, idims[1], idims[2], (int64_t)sb.st_size);
  }
  PetscCheck(limit <= data->Nfile, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data idx:%s: limit %" PRId64 " is larger than the %" PRId64 " examples in the files; lower the limit", prefix, limit, data->Nfile);
  data->N = limit > 0 ? limit : data->Nfile;
  PetscCheck(data->N > 0 && data->d > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "data idx:%s: the data set is empty (%" PRId64 " images of %" PRId64 " x %" PRId64 " pixels)", prefix, data->Nfile, idims[1], idims[2]);
  InflPartition(data->N, size, rank, &data->start, &data->count);
  PetscCall(PetscMalloc1(data->count * data->d + 1, &data->x));
  PetscCall(PetscMalloc1(data->count + 1, &data->y));
  PetscCall(PetscMalloc1(data->count * data->d + 1, &buf));
  if (data->count > 0) {
    /* images: decompress (or seek) to the shard, then read it */
    PetscCall(gz_seek(data->gimg, data->images, 16 + data->start * data->d));
    PetscCall(gz_read_all(data->gimg, data->images, buf, data->count * data->d, &got));
    if (got != data->count * data->d) {
      PetscCall(PetscFree(buf));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated: the header promises %" PRId64 " images but the data end inside image %" PRId64 "; re-download or regenerate the file", data->images, data->Nfile, data->start + got / data->d);
    }
    for (int64_t i = 0; i < data->count * data->d; i++) data->x[i] = (float)buf[i] / 255.0f;
    PetscCall(gz_seek(data->glab, data->labels, 8 + data->start));
    PetscCall(gz_read_all(data->glab, data->labels, buf, data->count, &got));
    if (got != data->count) {
      PetscCall(PetscFree(buf));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated: the header promises %" PRId64 " labels but the data end at label %" PRId64 "; re-download or regenerate the file", data->labels, data->Nfile, data->start + got);
    }
    for (int64_t i = 0; i < data->count; i++) data->y[i] = buf[i];
  }
  PetscCall(PetscFree(buf));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- HDF5 */

static PetscErrorCode h5_check_layout(hid_t fid, const char path[], int64_t limit, InflData data)
{
  int     nd_in, nd_lab;
  int64_t din[8], dlab[8];
  hid_t   dset, type;
  H5T_class_t cin, clab;
  size_t      sin, slab; /* bytes per element as stored */

  PetscFunctionBegin;
  PetscCall(InflH5GetDims(fid, "/inputs", &nd_in, din));
  PetscCall(InflH5GetDims(fid, "/labels", &nd_lab, dlab));
  PetscCheck(nd_in >= 0 && nd_lab >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: no dataset %s; an h5 data set holds /inputs (N, d) float32 or float64 and /labels (N) integers", path, nd_in < 0 ? "/inputs" : "/labels");
  PetscCheck(nd_in == 2, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /inputs has %d dimensions, expected 2 (N, d)", path, nd_in);
  PetscCheck(nd_lab == 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /labels has %d dimensions, expected 1 (N)", path, nd_lab);
  InflCallH5(dset = H5Dopen2(fid, "/inputs", H5P_DEFAULT));
  InflCallH5(type = H5Dget_type(dset));
  cin = H5Tget_class(type);
  sin = H5Tget_size(type);
  InflCallH5(H5Tclose(type));
  InflCallH5(H5Dclose(dset));
  InflCallH5(dset = H5Dopen2(fid, "/labels", H5P_DEFAULT));
  InflCallH5(type = H5Dget_type(dset));
  clab = H5Tget_class(type);
  slab = H5Tget_size(type);
  InflCallH5(H5Tclose(type));
  InflCallH5(H5Dclose(dset));
  PetscCheck(cin == H5T_FLOAT, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /inputs is not a floating-point dataset; store float32 or float64 (e.g. x.astype(numpy.float32))", path);
  PetscCheck(clab == H5T_INTEGER, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /labels is not an integer dataset; store class indices as integers", path);
  /* a corrupt type header can claim elements of gigabytes, which HDF5's conversion would then allocate */
  PetscCheck(sin >= 2 && sin <= 16, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /inputs has %zu-byte floating-point elements; store float32 or float64 (the file may be corrupt)", path, sin);
  PetscCheck(slab >= 1 && slab <= 8, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /labels has %zu-byte integers; store 8- to 64-bit integers (the file may be corrupt)", path, slab);
  PetscCheck(din[0] == dlab[0], PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /inputs has %" PRId64 " rows but /labels has %" PRId64 "; they must match", path, din[0], dlab[0]);
  data->Nfile = din[0];
  data->d     = din[1];
  PetscCheck(limit <= data->Nfile, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data h5:%s: limit %" PRId64 " is larger than the %" PRId64 " examples in the file; lower the limit", path, limit, data->Nfile);
  data->N = limit > 0 ? limit : data->Nfile;
  PetscCheck(data->N > 0 && data->d > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: the data set is empty (/inputs is (%" PRId64 ", %" PRId64 "))", path, data->Nfile, data->d);
  PetscFunctionReturn(0);
}

/* Collective: layout checks (same on every rank), then the shard by collective hyperslab reads. */
static PetscErrorCode h5_load(MPI_Comm comm, const char path[], int64_t limit, InflData data)
{
  hid_t          fid;
  PetscMPIInt    size, rank;
  PetscErrorCode ierr;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscStrncpy(data->images, path, sizeof(data->images)));
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &fid));
  PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
  ierr = h5_check_layout(fid, path, limit, data);
  PetscCall(PetscPopErrorHandler());
  if (ierr) { /* the file is the same on every rank, so every rank is here */
    InflCallH5(H5Fclose(fid));
    PetscCall(InflAgreeError_Private(comm, ierr, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
  }
  PetscCall(InflAgreeError_Private(comm, 0, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
  InflPartition(data->N, size, rank, &data->start, &data->count);
  PetscCall(PetscMalloc1(data->count * data->d + 1, &data->x));
  PetscCall(PetscMalloc1(data->count + 1, &data->y));
  PetscCall(InflH5ReadRows(fid, "/inputs", H5T_NATIVE_FLOAT, data->start, data->count, data->x));
  PetscCall(InflH5ReadRows(fid, "/labels", H5T_NATIVE_INT64, data->start, data->count, data->y));
  PetscCall(InflH5Close(&fid));
  PetscFunctionReturn(0);
}

/* Local checks of the shard: labels >= 0, inputs finite.  The first bad example of this rank is named. */
static PetscErrorCode data_check_shard(InflData data)
{
  PetscFunctionBegin;
  for (int64_t i = 0; i < data->count; i++) {
    PetscCheck(data->y[i] >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "data %s: example %" PRId64 " has negative label %" PRId64 "; labels must be class indices 0, 1, ...", data->spec, data->start + i, data->y[i]);
    for (int64_t j = 0; j < data->d; j++) PetscCheck(isfinite(data->x[i * data->d + j]), PETSC_COMM_SELF, PETSC_ERR_FP, "data %s: example %" PRId64 " has a non-finite input (%s) at feature %" PRId64 " (as float32); clean or rescale the data", data->spec, data->start + i, isnan(data->x[i * data->d + j]) ? "NaN" : "Inf", j);
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataOpen(MPI_Comm comm, const char spec[], int64_t limit, InflData *out)
{
  InflData  data;
  PetscBool idx, h5;
  int64_t   ymax = -1;

  PetscFunctionBegin;
  *out = NULL;
  PetscCall(PetscStrncmp(spec, "idx:", 4, &idx));
  PetscCall(PetscStrncmp(spec, "h5:", 3, &h5));
  PetscCheck(idx || h5, comm, PETSC_ERR_ARG_WRONG, "data spec \"%s\" is not understood; use idx:PREFIX (files PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]) or h5:FILE (datasets /inputs (N, d) and /labels (N))", spec);
  PetscCheck(limit >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "data %s: limit %" PRId64 " is negative; use 0 for all examples", spec, limit);
  PetscCall(PetscNew(&data));
  data->h5 = H5I_INVALID_HID;
  data->limit = limit;
  data->content = INFL_DATA_ROWS;
  PetscCall(PetscStrallocpy(spec, &data->spec));
  if (idx) {
    data->kind = DATA_IDX;
    DATA_CALL_ALL(comm, idx_load(comm, spec + 4, limit, data), &data);
  } else {
    PetscErrorCode ierr;
    data->kind = DATA_H5;
    ierr       = h5_load(comm, spec + 3, limit, data); /* collective; its errors are raised on all ranks */
    if (ierr) PetscCall(InflDataDestroy(&data));
    PetscCall(ierr);
  }
  DATA_CALL_ALL(comm, data_check_shard(data), &data);
  for (int64_t i = 0; i < data->count; i++) ymax = PetscMax(ymax, data->y[i]);
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &ymax, 1, MPI_INT64_T, MPI_MAX, comm));
  data->nclasses = ymax + 1;
  DATA_CALL_ALL(comm, data_hash(comm, data), &data);
  *out = data;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetSizes(InflData data, int64_t *N, int64_t *d, int64_t *nclasses)
{
  PetscFunctionBegin;
  if (N) *N = data->N;
  if (d) *d = data->d;
  if (nclasses) *nclasses = data->nclasses;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetShard(InflData data, int64_t *start, int64_t *count, const float **x, const int64_t **labels)
{
  PetscFunctionBegin;
  if (start) *start = data->start;
  if (count) *count = data->count;
  if (x) *x = data->x;
  if (labels) *labels = data->y;
  PetscFunctionReturn(0);
}

/* One non-local IDX example: from the decompressed cache (.gz) or by seeking in the raw file. */
static PetscErrorCode idx_fetch(InflData data, int64_t i, float x[], int64_t *label)
{
  unsigned char *row = NULL, lab = 0;
  unsigned char *buf = NULL; /* (d) */
  int64_t        got;

  PetscFunctionBegin;
  if (data->img_gz && !data->cimg) {
    PetscCall(PetscMalloc1(data->N * data->d, &data->cimg));
    PetscCall(gz_seek(data->gimg, data->images, 16));
    PetscCall(gz_read_all(data->gimg, data->images, data->cimg, data->N * data->d, &got));
    PetscCheck(got == data->N * data->d, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated: %" PRId64 " of %" PRId64 " bytes of image data", data->images, got, data->N * data->d);
  }
  if (data->lab_gz && !data->clab) {
    PetscCall(PetscMalloc1(data->N, &data->clab));
    PetscCall(gz_seek(data->glab, data->labels, 8));
    PetscCall(gz_read_all(data->glab, data->labels, data->clab, data->N, &got));
    PetscCheck(got == data->N, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated: %" PRId64 " of %" PRId64 " labels", data->labels, got, data->N);
  }
  if (data->cimg) row = data->cimg + i * data->d;
  else {
    PetscCall(PetscMalloc1(data->d, &buf));
    PetscCall(gz_seek(data->gimg, data->images, 16 + i * data->d));
    PetscCall(gz_read_all(data->gimg, data->images, buf, data->d, &got));
    PetscCheck(got == data->d, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated inside image %" PRId64, data->images, i);
    row = buf;
  }
  if (data->clab) lab = data->clab[i];
  else {
    PetscCall(gz_seek(data->glab, data->labels, 8 + i));
    PetscCall(gz_read_all(data->glab, data->labels, &lab, 1, &got));
    PetscCheck(got == 1, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: truncated at label %" PRId64, data->labels, i);
  }
  for (int64_t j = 0; j < data->d; j++) x[j] = (float)row[j] / 255.0f;
  *label = lab;
  PetscCall(PetscFree(buf));
  PetscFunctionReturn(0);
}

/* One non-local HDF5 example, from the file opened by this rank alone (sec2 driver, read-only). */
static PetscErrorCode h5_fetch(InflData data, int64_t i, float x[], int64_t *label)
{
  PetscFunctionBegin;
  if (data->h5 < 0) {
    data->h5 = H5Fopen(data->images, H5F_ACC_RDONLY, H5P_DEFAULT);
    PetscCheck(data->h5 >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot reopen %s to read examples of other ranks", data->images);
  }
  PetscCall(InflH5ReadRowsLocal_Private(data->h5, "/inputs", H5T_NATIVE_FLOAT, i, 1, x));
  PetscCall(InflH5ReadRowsLocal_Private(data->h5, "/labels", H5T_NATIVE_INT64, i, 1, label));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetExamples(InflData data, PetscInt n, const int64_t idx[], float x[], int64_t labels[])
{
  PetscFunctionBegin;
  for (PetscInt k = 0; k < n; k++) {
    int64_t i = idx[k];
    PetscCheck(i >= 0 && i < data->N, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: example index %" PRId64 " is outside [0, %" PRId64 ")", data->spec, i, data->N);
    if (i >= data->start && i < data->start + data->count) {
      PetscCall(PetscArraycpy(x + (size_t)k * data->d, data->x + (i - data->start) * data->d, data->d));
      labels[k] = data->y[i - data->start];
    } else if (data->kind == DATA_IDX) PetscCall(idx_fetch(data, i, x + (size_t)k * data->d, &labels[k]));
    else PetscCall(h5_fetch(data, i, x + (size_t)k * data->d, &labels[k]));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetHash(InflData data, const char **hex)
{
  PetscFunctionBegin;
  *hex = data->hash;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetSpec(InflData data, const char **spec)
{
  PetscFunctionBegin;
  *spec = data->spec;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetContent(InflData data, InflDataContent *kind)
{
  PetscFunctionBegin;
  *kind = data->content;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataSetName(InflData data, const char name[])
{
  PetscFunctionBegin;
  PetscCall(PetscStrncpy(data->name, name ? name : "", sizeof(data->name)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetName(InflData data, const char **name)
{
  PetscFunctionBegin;
  *name = data->name;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataDestroy(InflData *data)
{
  PetscFunctionBegin;
  if (!*data) PetscFunctionReturn(0);
  if ((*data)->gimg) gzclose((*data)->gimg);
  if ((*data)->glab) gzclose((*data)->glab);
  if ((*data)->h5 >= 0) InflCallH5(H5Fclose((*data)->h5));
  PetscCall(PetscFree((*data)->cimg));
  PetscCall(PetscFree((*data)->clab));
  PetscCall(PetscFree((*data)->x));
  PetscCall(PetscFree((*data)->y));
  PetscCall(PetscFree((*data)->spec));
  PetscCall(PetscFree(*data));
  PetscFunctionReturn(0);
}

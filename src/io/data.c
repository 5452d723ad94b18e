/* Data sets: IDX files (LeCun's MNIST format, raw or gzip) and HDF5 (/inputs, /labels).  Every rank reads only
 * its shard (InflPartition block of [0, N)); examples of other shards are read again on demand. */
#include "io/ioimpl.h"
#include <infl/tokens.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

typedef enum { DATA_IDX, DATA_H5, DATA_TEXT, DATA_TOKENS, DATA_SUBSET } DataKind;

struct _p_InflData {
  MPI_Comm comm;
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
  /* token sequences (text:, tokens:), after InflDataSetUpSequences */
  char           tokdir[PETSC_MAX_PATH_LEN]; /* tokenizer directory ("" beside the model / byte-level) */
  PetscInt       seq_len;          /* window length asked for (0: the model's n_positions) */
  PetscInt       vocab_size;       /* of the model the sequences were set up for */
  PetscBool      seq_ready;
  InflTokens     corpus;
  int64_t       *sdoc, *sstart;    /* (N) window s: document and first token in it */
  int32_t       *slen;             /* (N) window lengths */
  int32_t       *stok;             /* (shard tokens) this rank's windows concatenated */
  int64_t       *soff;             /* (count+1) offsets into stok */
  /* a subset (InflDataCreateSubset): example i is example pidx[i] of parent, with label plab[i] */
  InflData       parent;
  int64_t       *pidx, *plab;     /* (N); sequences: plab[i] = 1 for a corrupted window (InflDataCreateCorrupted) */
  uint64_t       cseed;           /* the seed of the corrupted windows' permutations */
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

/* The limit in messages: "-NAME_limit V" when the data set has a role name (the option that set it), else "limit V". */
static void limit_text(InflData data, int64_t limit, char buf[], size_t len)
{
  if (data->name[0]) snprintf(buf, len, "-%s_limit %" PRId64, data->name, limit);
  else snprintf(buf, len, "limit %" PRId64, limit);
}

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
      size_t      lp  = strlen(path);
      if (!strncmp(msg, path, lp) && msg[lp] == ':') msg += lp + 1 + (msg[lp + 1] == ' '); /* zlib prefixes the path */
      if (e == Z_ERRNO) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: reading the file failed after %" PRId64 " bytes: %s; check the file system", path, *got, strerror(errno));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_READ, "%s: the gzip data are corrupt (zlib: %s); the file is damaged: replace it by a good copy (gzip -t %s checks one)", path, msg, path);
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
  if (limit > data->Nfile) {
    char lt[96];
    limit_text(data, limit, lt, sizeof(lt));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data idx:%s: %s is larger than the %" PRId64 " examples in the files; give at most %" PRId64 " (0: all)", prefix, lt, data->Nfile, data->Nfile);
  }
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
  if (limit > data->Nfile) {
    char lt[96];
    limit_text(data, limit, lt, sizeof(lt));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data h5:%s: %s is larger than the %" PRId64 " examples in the file; give at most %" PRId64 " (0: all)", path, lt, data->Nfile, data->Nfile);
  }
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
  PetscFunctionBegin;
  PetscCall(InflDataOpenNamed(comm, spec, NULL, limit, out));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataOpenNamed(MPI_Comm comm, const char spec[], const char name[], int64_t limit, InflData *out)
{
  InflData  data;
  PetscBool idx, h5, text, tokens;
  int64_t   ymax = -1;

  PetscFunctionBegin;
  *out = NULL;
  PetscCall(PetscStrncmp(spec, "idx:", 4, &idx));
  PetscCall(PetscStrncmp(spec, "h5:", 3, &h5));
  PetscCall(PetscStrncmp(spec, "text:", 5, &text));
  PetscCall(PetscStrncmp(spec, "tokens:", 7, &tokens));
  PetscCheck(idx || h5 || text || tokens, comm, PETSC_ERR_ARG_WRONG, "data spec \"%s\" is not understood; use idx:PREFIX (files PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]), h5:FILE (datasets /inputs (N, d) and /labels (N)), text:PATH (UTF-8 text) or tokens:PATH (token ids: llm.c .bin or HDF5 /tokens, /offsets)", spec);
  PetscCheck(limit >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "data %s: limit %" PRId64 " is negative; use 0 for all examples", spec, limit);
  if (text || tokens) { /* read by InflDataSetUpSequences, once the model is known */
    PetscCall(PetscNew(&data));
    PetscCall(PetscStrncpy(data->name, name ? name : "", sizeof(data->name)));
    data->h5      = H5I_INVALID_HID;
    data->limit   = limit;
    data->content = INFL_DATA_SEQUENCES;
    data->kind    = text ? DATA_TEXT : DATA_TOKENS;
    data->comm    = comm;
    PetscCall(PetscStrallocpy(spec, &data->spec));
    *out = data;
    PetscFunctionReturn(0);
  }
  PetscCall(PetscNew(&data));
  PetscCall(PetscStrncpy(data->name, name ? name : "", sizeof(data->name)));
  data->h5 = H5I_INVALID_HID;
  data->comm = comm;
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

/* The rows subset of InflDataCreateSubset (rows parent). */
static PetscErrorCode rows_subset(InflData parent, MPI_Comm comm, int64_t n, const int64_t idx[], const int64_t labels[], const char tag[], InflData *out)
{
  InflData    data;
  PetscMPIInt rank, size;
  int64_t     ymax = -1;

  PetscFunctionBegin;
  for (int64_t i = 0; i < n; i++) PetscCheck(!labels || labels[i] >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "subset of data %s: label %" PRId64 " of entry %" PRId64 " is negative", parent->spec, labels[i], i);
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscNew(&data));
  PetscCall(PetscStrncpy(data->name, parent->name, sizeof(data->name)));
  data->h5      = H5I_INVALID_HID;
  data->comm    = comm;
  data->kind    = DATA_SUBSET;
  data->content = INFL_DATA_ROWS;
  data->parent  = parent;
  data->N       = n;
  data->Nfile   = n;
  data->limit   = n;
  data->d       = parent->d;
  PetscCall(PetscStrallocpy(parent->spec, &data->spec));
  PetscCall(PetscMalloc2(n, &data->pidx, n, &data->plab));
  PetscCall(PetscArraycpy(data->pidx, idx, n));
  InflPartition(n, size, rank, &data->start, &data->count);
  PetscCall(PetscMalloc1(data->count * data->d + 1, &data->x));
  PetscCall(PetscMalloc1(data->count + 1, &data->y));
  InflCallAll(comm, InflDataGetExamples(parent, (PetscInt)data->count, data->pidx + data->start, data->x, data->y));
  if (labels) PetscCall(PetscArraycpy(data->plab, labels, n));
  else { /* the parent's labels of every member (its shard and InflDataGetExamples): gathered by the ranks' blocks */
    PetscMPIInt *counts, *displs;
    PetscCall(PetscMalloc2(size, &counts, size, &displs));
    for (PetscMPIInt r = 0; r < size; r++) {
      int64_t s0, c0;
      InflPartition(n, size, r, &s0, &c0);
      PetscCall(InflMPIIntCast(c0, "subset examples per rank", &counts[r]));
      PetscCall(InflMPIIntCast(s0, "subset offset", &displs[r]));
    }
    PetscCallMPI(MPI_Allgatherv(data->y, counts[rank], MPI_INT64_T, data->plab, counts, displs, MPI_INT64_T, comm));
    PetscCall(PetscFree2(counts, displs));
  }
  for (int64_t i = 0; i < data->count; i++) data->y[i] = data->plab[data->start + i];
  for (int64_t i = 0; i < n; i++) ymax = PetscMax(ymax, data->plab[i]);
  data->nclasses = PetscMax(ymax + 1, parent->nclasses);
  { /* the parent's hash, the tag and every member with its label: the same on every rank */
    InflHash h;
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, parent->hash, 64));
    PetscCall(InflHashUpdate(h, tag ? tag : "", tag ? strlen(tag) : 0));
    PetscCall(InflHashUpdate(h, data->pidx, sizeof(int64_t) * (size_t)n));
    PetscCall(InflHashUpdate(h, data->plab, sizeof(int64_t) * (size_t)n));
    PetscCall(InflHashFinal(&h, data->hash));
  }
  *out = data;
  PetscFunctionReturn(0);
}

/* The sequences subset of InflDataCreateSubset / InflDataCreateCorrupted (a parent whose sequences are set up):
 * window i is window idx[i] of the parent, its tokens permuted (InflDataCorruptWindow with the parent's index) when
 * corrupt (may be NULL) marks it. */
static PetscErrorCode seq_subset(InflData parent, MPI_Comm comm, int64_t n, const int64_t idx[], uint64_t seed, const uint8_t corrupt[], const char tag[], InflData *out)
{
  InflData    data;
  PetscMPIInt rank, size;
  int64_t    *off;

  PetscFunctionBegin;
  PetscCheck(parent->seq_ready, comm, PETSC_ERR_ARG_WRONGSTATE, "a subset of data %s: its sequences are not set up; check the data against the model (InflModelCheckData) first", parent->spec);
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscNew(&data));
  PetscCall(PetscStrncpy(data->name, parent->name, sizeof(data->name)));
  PetscCall(PetscStrncpy(data->tokdir, parent->tokdir, sizeof(data->tokdir)));
  data->h5         = H5I_INVALID_HID;
  data->comm       = comm;
  data->kind       = DATA_SUBSET;
  data->content    = INFL_DATA_SEQUENCES;
  data->parent     = parent;
  data->N          = n;
  data->Nfile      = n;
  data->limit      = n;
  data->d          = parent->d;
  data->nclasses   = parent->nclasses;
  data->seq_len    = parent->seq_len;
  data->vocab_size = parent->vocab_size;
  data->cseed      = seed;
  PetscCall(PetscStrallocpy(parent->spec, &data->spec));
  PetscCall(PetscMalloc2(n, &data->pidx, n, &data->plab));
  PetscCall(PetscArraycpy(data->pidx, idx, n));
  for (int64_t i = 0; i < n; i++) data->plab[i] = corrupt && corrupt[idx[i]] ? 1 : 0; /* a sequence's "label": corrupted */
  InflPartition(n, size, rank, &data->start, &data->count);
  PetscCall(PetscMalloc1(data->count + 1, &data->soff));
  PetscCall(PetscMalloc1(data->count * data->d + 1, &data->stok));
  PetscCall(PetscMalloc1(data->count + 1, &off));
  InflCallAll(comm, InflDataGetSequences(parent, (PetscInt)data->count, data->pidx + data->start, data->stok, off));
  for (int64_t s = 0; s <= data->count; s++) data->soff[s] = off[s];
  PetscCall(PetscFree(off));
  for (int64_t s = 0; s < data->count; s++)
    if (data->plab[data->start + s]) PetscCall(InflDataCorruptWindow(seed, data->pidx[data->start + s], data->soff[s + 1] - data->soff[s], data->stok + data->soff[s]));
  data->seq_ready = PETSC_TRUE;
  { /* the parent's hash, the tag, the members and which are corrupted (with the seed): the same on every rank */
    InflHash h;
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, parent->hash, 64));
    PetscCall(InflHashUpdate(h, tag ? tag : "", tag ? strlen(tag) : 0));
    PetscCall(InflHashUpdate(h, data->pidx, sizeof(int64_t) * (size_t)n));
    if (corrupt) {
      PetscCall(InflHashUpdate(h, &seed, sizeof(seed)));
      PetscCall(InflHashUpdate(h, data->plab, sizeof(int64_t) * (size_t)n));
    }
    PetscCall(InflHashFinal(&h, data->hash));
  }
  *out = data;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataCreateSubset(InflData parent, MPI_Comm comm, int64_t n, const int64_t idx[], const int64_t labels[], const char tag[], InflData *out)
{
  PetscFunctionBegin;
  *out = NULL;
  PetscCheck(n >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "a subset of data %s needs at least one example (got %" PRId64 ")", parent->spec, n);
  for (int64_t i = 0; i < n; i++) PetscCheck(idx[i] >= 0 && idx[i] < parent->N, comm, PETSC_ERR_ARG_OUTOFRANGE, "subset of data %s: example index %" PRId64 " (entry %" PRId64 ") is outside [0, %" PRId64 ")", parent->spec, idx[i], i, parent->N);
  if (parent->content == INFL_DATA_SEQUENCES) {
    PetscCheck(!labels, comm, PETSC_ERR_ARG_WRONG, "a subset of data %s: token sequences have no labels to replace (corrupt windows with InflDataCreateCorrupted)", parent->spec);
    PetscCall(seq_subset(parent, comm, n, idx, 0, NULL, tag, out));
  } else PetscCall(rows_subset(parent, comm, n, idx, labels, tag, out));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataCreateCorrupted(InflData parent, MPI_Comm comm, uint64_t seed, const uint8_t corrupt[], const char tag[], InflData *out)
{
  int64_t *idx;

  PetscFunctionBegin;
  *out = NULL;
  PetscCheck(parent->content == INFL_DATA_SEQUENCES, comm, PETSC_ERR_ARG_WRONG, "data %s holds rows of features: corrupt their labels (InflDataCreateSubset with labels), not their windows", parent->spec);
  PetscCheck(parent->N >= 1, comm, PETSC_ERR_ARG_WRONGSTATE, "data %s: its sequences are not set up; check the data against the model (InflModelCheckData) first", parent->spec);
  PetscCall(PetscMalloc1(parent->N, &idx));
  for (int64_t i = 0; i < parent->N; i++) idx[i] = i;
  PetscCall(seq_subset(parent, comm, parent->N, idx, seed, corrupt, tag, out));
  PetscCall(PetscFree(idx));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataCorruptWindow(uint64_t seed, int64_t index, int64_t len, int32_t tokens[])
{
  PetscFunctionBegin;
  PetscCheck(index >= 0 && len >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "corrupting window %" PRId64 " of %" PRId64 " tokens: give a non-negative index and length", index, len);
  for (int64_t t = len - 1; t >= 1; t--) {
    int64_t j = (int64_t)(InflUniform(seed, (uint64_t)t, INFL_STREAM_MISLABEL + 512 + 256 * (uint64_t)index) * (double)(t + 1));
    int32_t v;
    if (j > t) j = t;
    v         = tokens[t];
    tokens[t] = tokens[j];
    tokens[j] = v;
  }
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- token sequences */
static PetscErrorCode seq_free(InflData data)
{
  PetscFunctionBegin;
  if (data->corpus && data->sdoc) PetscCall(InflTokensRestoreSequences(data->corpus, &data->sdoc, &data->sstart, &data->slen));
  PetscCall(InflTokensDestroy(&data->corpus));
  PetscCall(PetscFree(data->stok));
  PetscCall(PetscFree(data->soff));
  data->seq_ready = PETSC_FALSE;
  data->N = data->start = data->count = 0;
  PetscFunctionReturn(0);
}

#define CHECK_SEQ_DATA(data, what) PetscCheck((data)->content == INFL_DATA_SEQUENCES, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "%s: data %s holds rows of features, not token sequences", what, (data)->spec)
#define CHECK_SEQ_READY(data, what) PetscCheck((data)->seq_ready, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "%s: the sequences of data %s are not set up; check the data against the model (InflModelCheckData) first", what, (data)->spec)

PetscErrorCode InflDataSetTokenizerDir(InflData data, const char dir[])
{
  PetscFunctionBegin;
  PetscCall(PetscStrncpy(data->tokdir, dir ? dir : "", sizeof(data->tokdir)));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataSetSequenceLength(InflData data, PetscInt seq_len)
{
  PetscFunctionBegin;
  PetscCheck(seq_len == 0 || seq_len >= 2, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: window length %d: give at least 2 tokens (or 0 for the model's n_positions)", data->spec, (int)seq_len);
  data->seq_len = seq_len;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataSequencesReady(InflData data, PetscBool *ready)
{
  PetscFunctionBegin;
  *ready = data->seq_ready;
  PetscFunctionReturn(0);
}

/* The tokenizer of text data: -tokenizer DIR, else files beside the model, else byte-level for 256 tokens. */
static PetscErrorCode seq_tokenizer(MPI_Comm comm, const char tokdir[], PetscInt vocab_size, const char model_path[], InflTokenizer *tok)
{
  char dir[PETSC_MAX_PATH_LEN] = "";
  int  isdir                   = 0;

  PetscFunctionBegin;
  PetscCall(InflTokenizerCreate(comm, tok));
  if (tokdir && tokdir[0]) {
    PetscCall(InflTokenizerLoad(*tok, tokdir));
    PetscCall(InflTokenizerCheckVocabSize(*tok, vocab_size)); /* same on every rank */
    PetscFunctionReturn(0);
  }
  if (model_path && model_path[0]) {
    struct stat sb;
    isdir = stat(model_path, &sb) == 0 && S_ISDIR(sb.st_mode);
    PetscCallMPI(MPI_Bcast(&isdir, 1, MPI_INT, 0, comm));
    if (isdir) PetscCall(PetscStrncpy(dir, model_path, sizeof(dir)));
    else {
      const char *slash = strrchr(model_path, '/');
      if (slash) PetscCall(PetscStrncpy(dir, model_path, PetscMin(sizeof(dir), (size_t)(slash - model_path) + 1)));
      else PetscCall(PetscStrncpy(dir, ".", sizeof(dir)));
    }
  }
  PetscCall(InflTokenizerSetUpForModel(*tok, dir[0] ? dir : NULL, vocab_size));
  PetscFunctionReturn(0);
}

/* Collective part after the corpus: windows, limit, shard, hash.  Errors agreed by the caller. */
static PetscErrorCode seq_windows(MPI_Comm comm, InflData data, PetscInt len)
{
  const int32_t *tok;
  const int64_t *doff;
  int64_t        nseq, ntok = 0;
  PetscMPIInt    rank, size;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(InflTokensGetSequences(data->corpus, len, &nseq, &data->sdoc, &data->sstart, &data->slen));
  PetscCheck(nseq > 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "data %s holds no token sequence", data->spec);
  if (data->limit > nseq) {
    char lt[96];
    limit_text(data, data->limit, lt, sizeof(lt));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: %s is larger than its %" PRId64 " sequences (windows of %d tokens); give at most %" PRId64 " (0: all)", data->spec, lt, nseq, (int)len, nseq);
  }
  data->N     = data->limit > 0 ? data->limit : nseq;
  data->Nfile = nseq;
  data->d        = len;
  data->nclasses = data->vocab_size;
  InflPartition(data->N, size, rank, &data->start, &data->count);
  PetscCall(InflTokensGetArrays(data->corpus, &tok, &doff));
  PetscCall(PetscMalloc1(data->count + 1, &data->soff));
  data->soff[0] = 0;
  for (int64_t s = 0; s < data->count; s++) data->soff[s + 1] = data->soff[s] + data->slen[data->start + s];
  ntok = data->soff[data->count];
  PetscCall(PetscMalloc1(PetscMax(ntok, 1), &data->stok));
  for (int64_t s = 0; s < data->count; s++) {
    int64_t g = data->start + s;
    PetscCall(PetscArraycpy(data->stok + data->soff[s], tok + doff[data->sdoc[g]] + data->sstart[g], data->slen[g]));
  }
  {
    const char *ch;
    char        buf[160];
    InflHash    h;
    PetscCall(InflTokensGetHash(data->corpus, &ch));
    PetscCall(InflHashCreate(&h));
    PetscCall(InflHashUpdate(h, ch, strlen(ch)));
    PetscCall(PetscSNPrintf(buf, sizeof(buf), "|seq_len=%d|N=%" PRId64, (int)len, data->N));
    PetscCall(InflHashUpdate(h, buf, strlen(buf)));
    PetscCall(InflHashFinal(&h, data->hash));
  }
  PetscFunctionReturn(0);
}

/* The steps of InflDataSetUpSequences: the corpus read (with the tokenizer *tok for text) and cut into windows. */
static PetscErrorCode seq_setup(MPI_Comm comm, InflData data, PetscInt len, const char model_path[], InflTokenizer *tok)
{
  PetscFunctionBegin;
  PetscCall(InflTokensCreate(comm, &data->corpus));
  PetscCall(InflTokensSetFromOptions(data->corpus));
  PetscCall(InflTokensSetVocabSize(data->corpus, data->vocab_size));
  if (data->kind == DATA_TEXT) {
    PetscCall(seq_tokenizer(comm, data->tokdir, data->vocab_size, model_path, tok)); /* collective; errors agreed inside */
    PetscCall(InflTokensSetTokenizer(data->corpus, *tok));
  }
  PetscCall(InflTokensLoad(data->corpus, data->spec));  /* collective; errors raised on every rank */
  InflCallAll(comm, seq_windows(comm, data, len)); /* the same on every rank but the shard */
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataSetUpSequences(InflData data, PetscInt vocab_size, PetscInt n_positions, const char model_path[])
{
  MPI_Comm       comm;
  InflTokenizer  tok = NULL;
  PetscInt       len = data->seq_len ? data->seq_len : n_positions;
  PetscErrorCode ierr;

  PetscFunctionBegin;
  CHECK_SEQ_DATA(data, "InflDataSetUpSequences");
  PetscCheck(!data->seq_ready, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONGSTATE, "data %s: its sequences are already set up", data->spec);
  PetscCheck(vocab_size > 0 && n_positions >= 2, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: a model of vocab_size %d and n_positions %d cannot read token sequences (n_positions >= 2 needed)", data->spec, (int)vocab_size, (int)n_positions);
  comm = data->comm;
  data->vocab_size = vocab_size;
  /* on an error of any step (all collective, raised on every rank) the corpus, the tokenizer and the windows made
   * so far are freed: the data set is left as before the call */
  ierr = seq_setup(comm, data, len, model_path, &tok);
  PetscCall(InflTokenizerDestroy(&tok));
  if (ierr) PetscCall(seq_free(data));
  PetscCall(ierr);
  data->seq_ready = PETSC_TRUE;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetSequenceShard(InflData data, int64_t *start, int64_t *count, const int32_t **tokens, const int64_t **offsets)
{
  PetscFunctionBegin;
  CHECK_SEQ_DATA(data, "InflDataGetSequenceShard");
  CHECK_SEQ_READY(data, "InflDataGetSequenceShard");
  if (start) *start = data->start;
  if (count) *count = data->count;
  if (tokens) *tokens = data->stok;
  if (offsets) *offsets = data->soff;
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetSequences(InflData data, PetscInt n, const int64_t idx[], int32_t tokens[], int64_t offsets[])
{
  const int32_t *tok;
  const int64_t *doff;

  PetscFunctionBegin;
  CHECK_SEQ_DATA(data, "InflDataGetSequences");
  CHECK_SEQ_READY(data, "InflDataGetSequences");
  if (data->parent) { /* a subset: the parent's windows, corrupted ones permuted */
    offsets[0] = 0;
    for (PetscInt k = 0; k < n; k++) {
      int64_t i = idx[k], o[2];
      PetscCheck(i >= 0 && i < data->N, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: sequence index %" PRId64 " is outside [0, %" PRId64 ")", data->spec, i, data->N);
      PetscCall(InflDataGetSequences(data->parent, 1, &data->pidx[i], tokens + offsets[k], o));
      if (data->plab[i]) PetscCall(InflDataCorruptWindow(data->cseed, data->pidx[i], o[1], tokens + offsets[k]));
      offsets[k + 1] = offsets[k] + o[1];
    }
    PetscFunctionReturn(0);
  }
  PetscCall(InflTokensGetArrays(data->corpus, &tok, &doff));
  offsets[0] = 0;
  for (PetscInt k = 0; k < n; k++) {
    int64_t i = idx[k];
    PetscCheck(i >= 0 && i < data->N, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: sequence index %" PRId64 " is outside [0, %" PRId64 ")", data->spec, i, data->N);
    PetscCall(PetscArraycpy(tokens + offsets[k], tok + doff[data->sdoc[i]] + data->sstart[i], data->slen[i]));
    offsets[k + 1] = offsets[k] + data->slen[i];
  }
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
  PetscCheck(data->content == INFL_DATA_ROWS, PETSC_COMM_SELF, PETSC_ERR_ARG_WRONG, "data %s holds token sequences, not rows of features (InflDataGetSequences)", data->spec);
  for (PetscInt k = 0; k < n; k++) {
    int64_t i = idx[k];
    PetscCheck(i >= 0 && i < data->N, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "data %s: example index %" PRId64 " is outside [0, %" PRId64 ")", data->spec, i, data->N);
    if (i >= data->start && i < data->start + data->count) {
      PetscCall(PetscArraycpy(x + (size_t)k * data->d, data->x + (i - data->start) * data->d, data->d));
      labels[k] = data->y[i - data->start];
    } else if (data->kind == DATA_SUBSET) {
      int64_t ignored;
      PetscCall(InflDataGetExamples(data->parent, 1, &data->pidx[i], x + (size_t)k * data->d, &ignored));
      labels[k] = data->plab[i];
    } else if (data->kind == DATA_IDX) PetscCall(idx_fetch(data, i, x + (size_t)k * data->d, &labels[k]));
    else PetscCall(h5_fetch(data, i, x + (size_t)k * data->d, &labels[k]));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataFreeCache(InflData data)
{
  PetscFunctionBegin;
  if (data->kind == DATA_SUBSET && data->parent) PetscCall(InflDataFreeCache(data->parent));
  PetscCall(PetscFree(data->cimg));
  PetscCall(PetscFree(data->clab));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDataGetBytes(InflData data, size_t *bytes)
{
  PetscFunctionBegin;
  if (data->content != INFL_DATA_SEQUENCES) { /* the shard's images and labels, and a .gz file's decompressed copy */
    *bytes = (size_t)data->count * (sizeof(float) * (size_t)data->d + sizeof(int64_t));
    if (data->cimg) *bytes += (size_t)data->N * (size_t)data->d;
    if (data->clab) *bytes += (size_t)data->N;
  } else { /* the token corpus, the window table, the shard's windows */
    *bytes = 0;
    if (data->corpus) {
      int64_t ndoc = 0, ntok = 0;
      PetscCall(InflTokensGetSizes(data->corpus, &ndoc, &ntok));
      *bytes += sizeof(int32_t) * (size_t)ntok + sizeof(int64_t) * (size_t)(ndoc + 1);
    }
    if (data->sdoc) *bytes += (size_t)data->N * (2 * sizeof(int64_t) + sizeof(int32_t));
    if (data->soff) *bytes += sizeof(int64_t) * (size_t)(data->count + 1) + sizeof(int32_t) * (size_t)data->soff[data->count];
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
  PetscCall(seq_free(*data));
  if ((*data)->gimg) gzclose((*data)->gimg);
  if ((*data)->glab) gzclose((*data)->glab);
  if ((*data)->h5 >= 0) InflCallH5(H5Fclose((*data)->h5));
  PetscCall(PetscFree((*data)->cimg));
  PetscCall(PetscFree((*data)->clab));
  PetscCall(PetscFree((*data)->x));
  PetscCall(PetscFree((*data)->y));
  PetscCall(PetscFree((*data)->spec));
  PetscCall(PetscFree2((*data)->pidx, (*data)->plab));
  PetscCall(PetscFree(*data));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- prompt/completion queries */
/* Does the line at p (of the n bytes left) hold only `mark` ("%" or ">>>"), followed by "\n" or the end? */
static int mark_line(const char *p, size_t n, const char mark[])
{
  size_t m = strlen(mark);
  return n >= m && !memcmp(p, mark, m) && (n == m || p[m] == '\n');
}

PetscErrorCode InflPromptsLoad(MPI_Comm comm, const char path[], const char tokdir[], PetscInt vocab_size, PetscInt n_positions, const char model_path[], PetscInt *Q, int64_t **offsets, int32_t **tokens, int32_t **targets, char hash[65])
{
  PetscMPIInt   rank;
  char         *buf = NULL, msg[INFL_MSG_LEN] = "";
  int64_t       nbytes = 0, nq = 0, cap = 16, ntok = 0, tcap = 256, line = 1;
  int64_t      *off;
  int32_t      *tk, *tg;
  InflTokenizer tok = NULL;
  InflHash      h;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) { /* rank 0 reads the file; its bytes are broadcast */
    FILE *f = fopen(path, "rb");
    if (!f) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: cannot open it (%s); give a UTF-8 text file of prompt/completion pairs (docs/FORMATS.md)", path, strerror(errno)));
    else {
      fseek(f, 0, SEEK_END);
      nbytes = ftell(f);
      fseek(f, 0, SEEK_SET);
      PetscCall(PetscMalloc1(nbytes + 1, &buf));
      if (nbytes > 0 && fread(buf, 1, (size_t)nbytes, f) != (size_t)nbytes) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: reading it failed (%s)", path, strerror(errno)));
      fclose(f);
    }
  }
  PetscCall(InflAgree_Private(comm, msg[0] ? PETSC_FALSE : PETSC_TRUE, PETSC_ERR_FILE_OPEN, msg, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
  PetscCallMPI(MPI_Bcast(&nbytes, 1, MPI_INT64_T, 0, comm));
  if (rank) PetscCall(PetscMalloc1(nbytes + 1, &buf));
  PetscCall(InflBcast(buf, nbytes, MPI_CHAR, 0, comm));
  buf[nbytes] = 0;
  PetscCall(seq_tokenizer(comm, tokdir, vocab_size, model_path, &tok)); /* collective; errors agreed inside */
  { /* GPT-2's BPE reads UTF-8 only: name the line of the first invalid byte (every rank finds the same) */
    InflTokenizerType type;
    int64_t           bad;
    const char       *why;
    PetscCall(InflTokenizerGetType(tok, &type));
    if (type == INFL_TOKENIZER_BPE) {
      PetscCall(InflUTF8Check(buf, (size_t)nbytes, &bad, &why));
      if (bad >= 0) {
        int64_t l = 1;
        for (int64_t i = 0; i < bad; i++) l += buf[i] == '\n';
        PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: line %" PRId64 ": invalid UTF-8 at byte offset %" PRId64 ": %s (byte 0x%02X); GPT-2's tokenizer reads UTF-8 text (convert the file, e.g. iconv -f latin1 -t utf-8)", path, l, bad, why, (unsigned)(unsigned char)buf[bad]));
      }
    }
  }
  PetscCall(PetscMalloc1(cap + 1, &off));
  PetscCall(PetscMalloc2(tcap, &tk, tcap, &tg));
  off[0] = 0;
  /* every rank parses and tokenizes the whole (small) file: the same result everywhere */
  for (int64_t p = 0; p < nbytes && !msg[0];) {
    int64_t d0 = p, dline = line, sep = -1, sepend = -1, e;
    /* the query's text runs to the next "%" line (or the end); its ">>>" line splits it */
    for (e = p; e < nbytes;) {
      const char *nl = memchr(buf + e, '\n', (size_t)(nbytes - e));
      int64_t     next = nl ? (int64_t)(nl - buf) + 1 : nbytes;
      if (mark_line(buf + e, (size_t)(nbytes - e), "%")) break;
      if (sep < 0 && mark_line(buf + e, (size_t)(nbytes - e), ">>>")) {
        sep    = e;
        sepend = next;
      }
      e = next;
      line++;
    }
    { /* skip documents of whitespace only (between "%" lines, as in fortune files) */
      int blank = 1;
      for (int64_t i = d0; i < e; i++) if (buf[i] != '\n' && buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r') blank = 0;
      p = e;
      if (p < nbytes) { /* past the "%" line */
        const char *nl = memchr(buf + p, '\n', (size_t)(nbytes - p));
        p = nl ? (int64_t)(nl - buf) + 1 : nbytes;
        line++;
      }
      if (blank) continue;
    }
    if (sep < 0) {
      int64_t near = -1; /* a line starting with ">>>" followed by other characters (a CR of CRLF line ends, blanks) */
      for (int64_t i = d0, l = dline; i < e && near < 0; l++) {
        const char *nl = memchr(buf + i, '\n', (size_t)(e - i));
        if (e - i >= 3 && !memcmp(buf + i, ">>>", 3)) near = l;
        i = nl ? (int64_t)(nl - buf) + 1 : e;
      }
      if (near >= 0) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: query %" PRId64 ": line %" PRId64 " starts with \">>>\" but holds more (a carriage return of Windows line ends, or blanks); the separating line must hold only >>> (convert the file with dos2unix, or remove the trailing characters)", path, nq, near));
      else PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: query %" PRId64 " (line %" PRId64 ") has no line \">>>\" separating its prompt from its completion; write the prompt, a line holding only >>>, then the completion", path, nq, dline));
      break;
    }
    {
      int64_t  np, nc;
      int32_t *ip, *ic;
      PetscCall(InflTokenizerEncode(tok, buf + d0, (size_t)(sep - d0), &np, &ip));
      PetscCall(InflTokenizerEncode(tok, buf + sepend, (size_t)(e - sepend), &nc, &ic));
      if (np < 1 || nc < 1) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: query %" PRId64 " (line %" PRId64 ") has an empty %s; both the prompt and the completion need at least one token", path, nq, dline, np < 1 ? "prompt" : "completion"));
      else if (np + nc > n_positions) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s: query %" PRId64 " (line %" PRId64 ") has %" PRId64 " prompt and %" PRId64 " completion tokens, more than the model's n_positions = %d; shorten it", path, nq, dline, np, nc, (int)n_positions));
      else {
        if (nq + 1 > cap) {
          int64_t *o2;
          PetscCall(PetscMalloc1(2 * cap + 1, &o2));
          PetscCall(PetscArraycpy(o2, off, nq + 1));
          PetscCall(PetscFree(off));
          off = o2;
          cap *= 2;
        }
        while (ntok + np + nc > tcap) {
          int32_t *t2, *g2;
          PetscCall(PetscMalloc2(2 * tcap, &t2, 2 * tcap, &g2));
          PetscCall(PetscArraycpy(t2, tk, ntok));
          PetscCall(PetscArraycpy(g2, tg, ntok));
          PetscCall(PetscFree2(tk, tg));
          tk = t2;
          tg = g2;
          tcap *= 2;
        }
        PetscCall(PetscArraycpy(tk + ntok, ip, np));
        PetscCall(PetscArraycpy(tk + ntok + np, ic, nc));
        /* row t predicts token t+1: a target only where that token belongs to the completion */
        for (int64_t t = 0; t < np + nc; t++) tg[ntok + t] = (t + 1 >= np && t + 1 < np + nc) ? tk[ntok + t + 1] : -1;
        ntok += np + nc;
        off[++nq] = ntok;
      }
      PetscCall(PetscFree(ip));
      PetscCall(PetscFree(ic));
    }
  }
  if (!msg[0] && nq == 0) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s holds no query; write prompt/completion pairs separated by \"%%\" lines (docs/FORMATS.md)", path));
  if (!msg[0] && nq > PETSC_MAX_INT) PetscCall(PetscSNPrintf(msg, sizeof(msg), "-query_prompts %s holds %" PRId64 " queries, more than %d", path, nq, (int)PETSC_MAX_INT));
  PetscCall(InflHashCreate(&h)); /* the file's bytes and the tokenizer */
  PetscCall(InflHashUpdate(h, "prompts|", 8));
  PetscCall(InflHashUpdate(h, buf, (size_t)nbytes));
  {
    const char *th;
    PetscCall(InflTokenizerGetHash(tok, &th));
    PetscCall(InflHashUpdate(h, th, strlen(th)));
  }
  PetscCall(InflHashFinal(&h, hash));
  PetscCall(InflTokenizerDestroy(&tok));
  PetscCall(PetscFree(buf));
  if (msg[0]) {
    PetscCall(PetscFree(off));
    PetscCall(PetscFree2(tk, tg));
  }
  PetscCheck(!msg[0], comm, PETSC_ERR_ARG_WRONG, "%s", msg); /* the same message on every rank */
  *Q = (PetscInt)nq;
  PetscCall(PetscMalloc3(nq + 1, offsets, PetscMax(ntok, 1), tokens, PetscMax(ntok, 1), targets));
  PetscCall(PetscArraycpy(*offsets, off, nq + 1));
  PetscCall(PetscArraycpy(*tokens, tk, ntok));
  PetscCall(PetscArraycpy(*targets, tg, ntok));
  PetscCall(PetscFree(off));
  PetscCall(PetscFree2(tk, tg));
  PetscFunctionReturn(0);
}

/* Parallel HDF5 helpers: mpio file access, collective dataset creation and transfers (every rank calls, ranks
 * with nothing to move select none), attributes, provenance.  Pattern of the HDF5 parallel examples
 * (ph5example.c: H5Pset_fapl_mpio, H5Pset_dxpl_mpio(H5FD_MPIO_COLLECTIVE), hyperslab per rank). */
#include "io/ioimpl.h"
#include <infl/eigen.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* The communicator of an mpio file (a duplicate: free with MPI_Comm_free). */
static PetscErrorCode h5_comm(hid_t file, MPI_Comm *comm)
{
  hid_t    fapl;
  MPI_Info info = MPI_INFO_NULL;

  PetscFunctionBegin;
  InflCallH5(fapl = H5Fget_access_plist(file));
  InflCallH5(H5Pget_fapl_mpio(fapl, comm, &info));
  if (info != MPI_INFO_NULL) PetscCallMPI(MPI_Info_free(&info));
  InflCallH5(H5Pclose(fapl));
  PetscFunctionReturn(0);
}

static void h5_filename(hid_t file, char *buf, size_t len)
{
  if (H5Fget_name(file, buf, len) < 0) snprintf(buf, len, "(HDF5 file)");
}

/* The directory of `fname` ("." when it has none). */
static void h5_dirname(const char fname[], char *dir, size_t len)
{
  const char *slash = strrchr(fname, '/');

  if (slash) snprintf(dir, len, "%.*s", (int)(slash - fname) + (slash == fname), fname);
  else snprintf(dir, len, ".");
}

/* Why a write to the file `fname` failed, for the message: the errno seen right after the call when it names a storage
 * condition, else what the file system says (no free blocks: ENOSPC; the file at the size limit of `ulimit -f`: EFBIG),
 * else 0 (unknown; HDF5 or MPI-IO did not say). */
static int h5_write_cause(const char fname[], int err)
{
  char           dir[PETSC_MAX_PATH_LEN];
  struct statvfs vfs;
  struct rlimit  rl;
  struct stat    st;

  if (err == ENOSPC || err == EFBIG || err == EDQUOT || err == EROFS || err == EIO) return err;
  h5_dirname(fname, dir, sizeof(dir));
  if (statvfs(dir, &vfs) == 0 && vfs.f_bavail == 0) return ENOSPC;
  if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && stat(fname, &st) == 0 && (rlim_t)st.st_size + 65536 >= rl.rlim_cur) return EFBIG;
  return 0;
}

/* Is `fname` a temporary file (".tmp" at the end: written whole, then renamed), never resumed from? */
static PetscBool h5_is_tmp(const char fname[])
{
  size_t n = strlen(fname);
  return n >= 4 && !strcmp(fname + n - 4, ".tmp") ? PETSC_TRUE : PETSC_FALSE;
}

/* Collective over `comm`, that of the HDF5 file `fname` (every rank calls it after the same collective HDF5 write or
 * close `call`, whose return value was `status` and errno right after it `err`): the ranks agree on the outcome before
 * the next collective, since an MPI-IO aggregator may be the only rank to see a failure.  On failure every rank
 * raises the same error, naming the file and the cause (e.g. "No space left on device") with the fix; a temporary
 * file (h5_is_tmp) is removed by rank 0 so that it does not keep the disk full (the process holds it until exit). */
static PetscErrorCode h5_agree_write(const char fname[], MPI_Comm comm, long long status, int err, const char call[])
{
  char           dir[PETSC_MAX_PATH_LEN], msg[INFL_MSG_LEN] = "";
  PetscMPIInt    rank;
  PetscErrorCode ierr;
  PetscBool      tmp;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  tmp = h5_is_tmp(fname);
  if (status < 0) {
    int         cause = h5_write_cause(fname, err);
    char        what[PETSC_MAX_PATH_LEN + 96];
    if (tmp) PetscCall(PetscStrncpy(what, "; the unfinished file was removed", sizeof(what)));
    else PetscCall(PetscSNPrintf(what, sizeof(what), "; %s is kept for resuming (delete it to get its space back)", fname));
    h5_dirname(fname, dir, sizeof(dir));
    if (cause == ENOSPC || cause == EDQUOT) PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write %s: %s: free space in %s or choose another -out%s", fname, strerror(cause), dir, what));
    else if (cause == EFBIG) PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write %s: %s: the file size limit (ulimit -f) is reached; raise it or choose another -out%s", fname, strerror(cause), what));
    else if (cause) PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write %s: %s; check the file system of %s or choose another -out%s", fname, strerror(cause), dir, what));
    else PetscCall(PetscSNPrintf(msg, sizeof(msg), "cannot write %s: the HDF5 call %s failed (is %s full or not writable?); free space there or choose another -out%s", fname, call, dir, what));
  }
  ierr = InflAgree_Private(comm, status >= 0 ? PETSC_TRUE : PETSC_FALSE, PETSC_ERR_FILE_WRITE, msg, __LINE__, PETSC_FUNCTION_NAME, __FILE__);
  if (ierr) {
    /* The file stays open: MPI_Finalize ends HDF5, which then flushes it once more (collectively; printing nothing).
     * Emptying a temporary file first gives its space back, so that this last flush of a few metadata blocks at the
     * start of the file can succeed on every rank (a flush failing on the metadata writer alone would hang the
     * others); the name is removed too. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (rank == 0 && tmp) {
      if (truncate(fname, 0) == 0) { /* nothing more to do if it fails: the name goes anyway */
      }
      (void)unlink(fname);
    }
    { /* a soft file size limit (ulimit -S -f) would fail that flush too: lift it to the hard one */
      struct rlimit rl;
      if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_FSIZE, &rl);
      }
    }
    PetscCallMPI(MPI_Barrier(comm));
    PetscCall(ierr);
  }
  PetscFunctionReturn(0);
}

/* A collective HDF5 call that writes to the file of `obj` (a file or dataset id; the call may close it): run it without
 * HDF5's error printing, then agree on the outcome (h5_agree_write). */
#define InflCallH5Write(obj, call) \
  do { \
    H5E_auto2_t _h5_func; \
    void       *_h5_data; \
    long long   _h5_status; \
    int         _h5_errno; \
    hid_t       _h5_file; \
    MPI_Comm    _h5_comm; \
    char        _h5_name[PETSC_MAX_PATH_LEN]; \
    InflCallH5(_h5_file = H5Iget_file_id(obj)); \
    PetscCall(h5_comm(_h5_file, &_h5_comm)); \
    h5_filename(_h5_file, _h5_name, sizeof(_h5_name)); \
    InflCallH5(H5Fclose(_h5_file)); /* the reference taken by H5Iget_file_id */ \
    InflCallH5(H5Eget_auto2(H5E_DEFAULT, &_h5_func, &_h5_data)); \
    InflCallH5(H5Eset_auto2(H5E_DEFAULT, NULL, NULL)); \
    errno      = 0; \
    _h5_status = (long long)(call); \
    _h5_errno  = errno; \
    InflCallH5(H5Eset_auto2(H5E_DEFAULT, _h5_func, _h5_data)); \
    PetscCall(h5_agree_write(_h5_name, _h5_comm, _h5_status, _h5_errno, #call)); \
    PetscCallMPI(MPI_Comm_free(&_h5_comm)); \
  } while (0)

/* Does the link `name` ("/a/b/c") exist, checking each component so that missing groups are not an error. */
static PetscBool h5_exists(hid_t file, const char name[])
{
  char   path[PETSC_MAX_PATH_LEN];
  size_t n = strlen(name);

  if (!strcmp(name, "/")) return PETSC_TRUE;
  if (n >= sizeof(path)) return PETSC_FALSE;
  memcpy(path, name, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (path[i] == '/' || path[i] == 0) {
      char c = path[i];
      path[i] = 0;
      if (H5Lexists(file, path, H5P_DEFAULT) <= 0) return PETSC_FALSE;
      path[i] = c;
    }
  }
  return PETSC_TRUE;
}

static void shape_text(int ndim, const int64_t dims[], char *buf, size_t len)
{
  size_t k = (size_t)snprintf(buf, len, "(");
  for (int i = 0; i < ndim && k < len; i++) k += (size_t)snprintf(buf + k, len - k, "%s%" PRId64, i ? ", " : "", dims[i]);
  if (k < len) snprintf(buf + k, len - k, ")");
}

PetscErrorCode InflH5Create(MPI_Comm comm, const char path[], PetscBool overwrite, hid_t *file)
{
  PetscMPIInt rank;
  hid_t       fapl;
  H5E_auto2_t func;
  void       *data;

  PetscFunctionBegin;
  *file = H5I_INVALID_HID;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  InflCheckAll(comm, rank != 0 || overwrite || !InflFileExists(path), PETSC_ERR_FILE_OPEN, "%s exists; pass -overwrite to replace it, or remove it", path);
  InflCallH5(fapl = H5Pcreate(H5P_FILE_ACCESS));
  InflCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  InflCallH5(H5Eget_auto2(H5E_DEFAULT, &func, &data));
  InflCallH5(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
  *file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  InflCallH5(H5Eset_auto2(H5E_DEFAULT, func, data));
  InflCallH5(H5Pclose(fapl));
  InflCheckAll(comm, *file >= 0, PETSC_ERR_FILE_OPEN, "cannot create HDF5 file %s; check that its directory exists and is writable", path);
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5Open(MPI_Comm comm, const char path[], PetscBool readwrite, hid_t *file)
{
  PetscMPIInt rank;
  hid_t       fapl;
  H5E_auto2_t func;
  void       *data;

  PetscFunctionBegin;
  *file = H5I_INVALID_HID;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  InflCheckAll(comm, rank != 0 || InflFileExists(path), PETSC_ERR_FILE_OPEN, "cannot open HDF5 file %s: no such file; check the path", path);
  { /* MPI-IO would print an error for every read of a directory before HDF5 gives up */
    struct stat st;
    InflCheckAll(comm, rank != 0 || (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)), PETSC_ERR_FILE_OPEN, "cannot open HDF5 file %s: it is a directory; give the path of the HDF5 file", path);
  }
  InflCallH5(fapl = H5Pcreate(H5P_FILE_ACCESS));
  InflCallH5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  InflCallH5(H5Eget_auto2(H5E_DEFAULT, &func, &data));
  InflCallH5(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
  *file = H5Fopen(path, readwrite ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
  InflCallH5(H5Eset_auto2(H5E_DEFAULT, func, data));
  InflCallH5(H5Pclose(fapl));
  {
    htri_t is = 0; /* rank 0's look at the signature: a file cut short still has it */
    if (*file < 0 && rank == 0) {
      InflCallH5(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
      is = H5Fis_hdf5(path);
      InflCallH5(H5Eset_auto2(H5E_DEFAULT, func, data));
    }
    PetscCallMPI(MPI_Bcast(&is, sizeof(is), MPI_BYTE, 0, comm));
    InflCheckAll(comm, *file >= 0 || is <= 0, PETSC_ERR_FILE_OPEN, "cannot open %s as an HDF5 file%s: it starts as one but HDF5 cannot read it, so it is damaged or cut short (a copy or a write that did not finish, a full disk); write it again with the infl stage that made it", path, readwrite ? " for writing" : "");
  }
  InflCheckAll(comm, *file >= 0, PETSC_ERR_FILE_OPEN, "cannot open %s as an HDF5 file%s; is it HDF5, and readable?", path, readwrite ? " for writing" : "");
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5Close(hid_t *file)
{
  PetscFunctionBegin;
  if (*file >= 0) {
    unsigned intent = 0;
    InflCallH5(H5Fget_intent(*file, &intent));
    /* written: the last metadata goes to the file now (collective), and may find the disk full */
    if (intent & H5F_ACC_RDWR) InflCallH5Write(*file, H5Fclose(*file));
    else InflCallH5(H5Fclose(*file));
  }
  *file = H5I_INVALID_HID;
  PetscFunctionReturn(0);
}

/* Create dataset `name` (ndim, dims), intermediate groups included; error if it exists. */
static PetscErrorCode h5_create_dataset(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[], hid_t *dset)
{
  hsize_t hd[8];
  hid_t   lcpl, space;
  char    fname[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCheck(ndim >= 1 && ndim <= 8, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: dataset %s: ndim %d is outside [1, 8]", fname, name, ndim);
  for (int i = 0; i < ndim; i++) {
    PetscCheck(dims[i] >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: dataset %s: dimension %d is negative (%" PRId64 ")", fname, name, i, dims[i]);
    hd[i] = (hsize_t)dims[i];
  }
  PetscCheck(!h5_exists(file, name), PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE, "%s: dataset %s already exists; write to a new file (-overwrite) or another name", fname, name);
  InflCallH5(lcpl = H5Pcreate(H5P_LINK_CREATE));
  InflCallH5(H5Pset_create_intermediate_group(lcpl, 1));
  InflCallH5(space = H5Screate_simple(ndim, hd, NULL));
  InflCallH5(*dset = H5Dcreate2(file, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
  InflCallH5(H5Sclose(space));
  InflCallH5(H5Pclose(lcpl));
  PetscFunctionReturn(0);
}

/* Collective write of rows [row0, row0+nrows) of dataset dset (nrows may be 0). */
/* Select rows [row0, row0+nrows) of fspace (whose extent is count, ndim dims; count[0] is overwritten) and create the
 * matching memory space; a rank with no rows selects none in both (it still joins the collective transfer). */
static PetscErrorCode select_rows(hid_t fspace, int ndim, hsize_t count[], int64_t row0, int64_t nrows, hid_t *mspace)
{
  hsize_t start[8] = {0}, one = 1;

  PetscFunctionBegin;
  if (nrows > 0) {
    start[0] = (hsize_t)row0;
    count[0] = (hsize_t)nrows;
    InflCallH5(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
    InflCallH5(*mspace = H5Screate_simple(ndim, count, NULL));
  } else {
    InflCallH5(H5Sselect_none(fspace));
    InflCallH5(*mspace = H5Screate_simple(1, &one, NULL));
    InflCallH5(H5Sselect_none(*mspace));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode h5_write_rows(hid_t dset, hid_t type, int64_t row0, int64_t nrows, const void *buf)
{
  hid_t   fspace, mspace, dxpl;
  hsize_t count[8];
  int     ndim;
  char    dummy = 0;

  PetscFunctionBegin;
  InflCallH5(fspace = H5Dget_space(dset));
  InflCallH5(ndim = H5Sget_simple_extent_ndims(fspace));
  InflCallH5(H5Sget_simple_extent_dims(fspace, count, NULL));
  PetscCheck(row0 >= 0 && nrows >= 0 && (hsize_t)(row0 + nrows) <= count[0], PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "rows [%" PRId64 ", %" PRId64 ") are outside the dataset's %llu rows", row0, row0 + nrows, (unsigned long long)count[0]);
  if (H5Sget_simple_extent_npoints(fspace) == 0) { /* nothing to write on any rank; HDF5 has no storage for it */
    InflCallH5(H5Sclose(fspace));
    PetscFunctionReturn(0);
  }
  PetscCall(select_rows(fspace, ndim, count, row0, nrows, &mspace));
  InflCallH5(dxpl = H5Pcreate(H5P_DATASET_XFER));
  InflCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  InflCallH5Write(dset, H5Dwrite(dset, type, mspace, fspace, dxpl, nrows > 0 ? buf : (const void *)&dummy));
  InflCallH5(H5Pclose(dxpl));
  InflCallH5(H5Sclose(mspace));
  InflCallH5(H5Sclose(fspace));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5WriteArray(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[], const void *buf)
{
  MPI_Comm    comm;
  PetscMPIInt rank;
  hid_t       dset;

  PetscFunctionBegin;
  PetscCall(h5_comm(file, &comm));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_free(&comm));
  PetscCall(h5_create_dataset(file, name, type, ndim, dims, &dset));
  /* rank 0 writes everything (as a block of rows), the others nothing */
  PetscCall(h5_write_rows(dset, type, 0, rank == 0 ? dims[0] : 0, buf));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5WriteRows(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[], int64_t row0, int64_t nrows, const void *buf)
{
  hid_t dset;

  PetscFunctionBegin;
  PetscCall(h5_create_dataset(file, name, type, ndim, dims, &dset));
  PetscCall(h5_write_rows(dset, type, row0, nrows, buf));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5CreateDataset(hid_t file, const char name[], hid_t type, int ndim, const int64_t dims[])
{
  hsize_t hd[8];
  hid_t   lcpl, dcpl, space, dset;
  char    fname[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCheck(ndim >= 1 && ndim <= 8, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: dataset %s: ndim %d is outside [1, 8]", fname, name, ndim);
  for (int i = 0; i < ndim; i++) {
    PetscCheck(dims[i] >= 0, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: dataset %s: dimension %d is negative (%" PRId64 ")", fname, name, i, dims[i]);
    hd[i] = (hsize_t)dims[i];
  }
  PetscCheck(!h5_exists(file, name), PETSC_COMM_SELF, PETSC_ERR_FILE_WRITE, "%s: dataset %s already exists; write to a new file (-overwrite) or another name", fname, name);
  InflCallH5(lcpl = H5Pcreate(H5P_LINK_CREATE));
  InflCallH5(H5Pset_create_intermediate_group(lcpl, 1));
  InflCallH5(dcpl = H5Pcreate(H5P_DATASET_CREATE));
  InflCallH5(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));
  InflCallH5(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
  InflCallH5(space = H5Screate_simple(ndim, hd, NULL));
  InflCallH5(dset = H5Dcreate2(file, name, type, space, lcpl, dcpl, H5P_DEFAULT));
  InflCallH5(H5Sclose(space));
  InflCallH5(H5Pclose(dcpl));
  InflCallH5(H5Pclose(lcpl));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5WriteRowsAt(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, const void *buf)
{
  hid_t dset;
  char  fname[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCheck(h5_exists(file, name), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s is missing", fname, name);
  InflCallH5(dset = H5Dopen2(file, name, H5P_DEFAULT));
  PetscCall(h5_write_rows(dset, type, row0, nrows, buf));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5GetDims(hid_t file, const char name[], int *ndim, int64_t dims[])
{
  hid_t   dset, space;
  hsize_t hd[8];

  PetscFunctionBegin;
  *ndim = -1;
  if (!h5_exists(file, name)) PetscFunctionReturn(0);
  InflCallH5(dset = H5Dopen2(file, name, H5P_DEFAULT));
  InflCallH5(space = H5Dget_space(dset));
  InflCallH5(*ndim = H5Sget_simple_extent_ndims(space));
  if (*ndim > 8) {
    char fname[PETSC_MAX_PATH_LEN];
    h5_filename(file, fname, sizeof(fname));
    SETERRQ(PETSC_COMM_SELF, PETSC_ERR_SUP, "%s: dataset %s has %d dimensions, infl supports at most 8", fname, name, *ndim);
  }
  InflCallH5(H5Sget_simple_extent_dims(space, hd, NULL));
  for (int i = 0; i < *ndim; i++) dims[i] = (int64_t)hd[i];
  InflCallH5(H5Sclose(space));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5ReadArray(hid_t file, const char name[], hid_t type, int ndim, const int64_t expect[], int64_t dims_out[], void *buf)
{
  int     nd;
  int64_t dims[8];
  char    fname[PETSC_MAX_PATH_LEN];
  hid_t   dset, dxpl;

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCall(InflH5GetDims(file, name, &nd, dims));
  PetscCheck(nd >= 0, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s is missing; was the file written by the right stage?", fname, name);
  if (expect) {
    PetscBool same = nd == ndim ? PETSC_TRUE : PETSC_FALSE;
    for (int i = 0; same && i < nd; i++)
      if (dims[i] != expect[i]) same = PETSC_FALSE;
    if (!same) {
      char a[256], b[256];
      shape_text(nd, dims, a, sizeof(a));
      shape_text(ndim, expect, b, sizeof(b));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s has shape %s but %s is expected; the file does not match this model or data", fname, name, a, b);
    }
  } else PetscCheck(nd == ndim, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s has %d dimensions but %d are expected", fname, name, nd, ndim);
  if (dims_out)
    for (int i = 0; i < nd; i++) dims_out[i] = dims[i];
  {
    int64_t numel = 1;
    for (int i = 0; i < nd; i++) numel *= dims[i];
    if (numel == 0) PetscFunctionReturn(0); /* same on every rank */
  }
  InflCallH5(dset = H5Dopen2(file, name, H5P_DEFAULT));
  InflCallH5(dxpl = H5Pcreate(H5P_DATASET_XFER));
  InflCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  InflCallH5(H5Dread(dset, type, H5S_ALL, H5S_ALL, dxpl, buf));
  InflCallH5(H5Pclose(dxpl));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

/* Elements this process has read from datasets through the helpers below, in bytes (InflH5GetBytesRead). */
static size_t h5_bytes_read;

/* Read rows [row0, row0+nrows) of dataset `name` (mem type `type`) with transfer mode `mode`. */
static PetscErrorCode h5_read_rows(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, void *buf, H5FD_mpio_xfer_t mode)
{
  hid_t   dset, fspace, mspace, dxpl;
  hsize_t count[8];
  int     ndim;
  char    dummy, fname[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCheck(h5_exists(file, name), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s is missing", fname, name);
  InflCallH5(dset = H5Dopen2(file, name, H5P_DEFAULT));
  InflCallH5(fspace = H5Dget_space(dset));
  InflCallH5(ndim = H5Sget_simple_extent_ndims(fspace));
  PetscCheck(ndim >= 1 && ndim <= 8, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s has %d dimensions; rows need 1 to 8", fname, name, ndim);
  InflCallH5(H5Sget_simple_extent_dims(fspace, count, NULL));
  PetscCheck(row0 >= 0 && nrows >= 0 && (hsize_t)(row0 + nrows) <= count[0], PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: dataset %s: rows [%" PRId64 ", %" PRId64 ") are outside its %llu rows", fname, name, row0, row0 + nrows, (unsigned long long)count[0]);
  if (H5Sget_simple_extent_npoints(fspace) == 0) { /* empty dataset: nothing to read on any rank */
    InflCallH5(H5Sclose(fspace));
    InflCallH5(H5Dclose(dset));
    PetscFunctionReturn(0);
  }
  { /* a compact dataset keeps all its elements in its header: one that holds fewer is damaged (HDF5 would read past it) */
    hid_t dcpl, ftype;
    InflCallH5(dcpl = H5Dget_create_plist(dset));
    if (H5Pget_layout(dcpl) == H5D_COMPACT) {
      hsize_t  have = H5Dget_storage_size(dset);
      hssize_t np   = H5Sget_simple_extent_npoints(fspace);
      size_t   esz;
      InflCallH5(ftype = H5Dget_type(dset));
      esz = H5Tget_size(ftype);
      InflCallH5(H5Tclose(ftype));
      PetscCheck(np >= 0 && esz > 0 && have >= (hsize_t)np * esz, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s is damaged: its compact storage holds %llu bytes of the %llu its %lld elements need; write the file again", fname, name, (unsigned long long)have, (unsigned long long)((hsize_t)np * esz), (long long)np);
    }
    InflCallH5(H5Pclose(dcpl));
  }
  PetscCall(select_rows(fspace, ndim, count, row0, nrows, &mspace));
  {
    hssize_t np = H5Sget_select_npoints(fspace);
    size_t   sz = H5Tget_size(type);
    InflCallH5(np);
    PetscCheck(sz > 0, PETSC_COMM_SELF, PETSC_ERR_LIB, "HDF5 call failed: H5Tget_size(type)");
    h5_bytes_read += (size_t)np * sz;
  }
  InflCallH5(dxpl = H5Pcreate(H5P_DATASET_XFER));
  if (mode == H5FD_MPIO_COLLECTIVE) InflCallH5(H5Pset_dxpl_mpio(dxpl, mode));
  InflCallH5(H5Dread(dset, type, mspace, fspace, dxpl, nrows > 0 ? buf : (void *)&dummy));
  InflCallH5(H5Pclose(dxpl));
  InflCallH5(H5Sclose(mspace));
  InflCallH5(H5Sclose(fspace));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5ReadRows(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, void *buf)
{
  PetscFunctionBegin;
  PetscCall(h5_read_rows(file, name, type, row0, nrows, buf, H5FD_MPIO_COLLECTIVE));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5GetBytesRead(size_t *bytes)
{
  PetscFunctionBegin;
  *bytes = h5_bytes_read;
  PetscFunctionReturn(0);
}

/* Non-collective row read (file opened by this rank alone); used by the data layer. */
PetscErrorCode InflH5ReadRowsLocal_Private(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, void *buf)
{
  PetscFunctionBegin;
  PetscCall(h5_read_rows(file, name, type, row0, nrows, buf, H5FD_MPIO_INDEPENDENT));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- attributes */

static PetscErrorCode h5_open_obj(hid_t file, const char obj[], hid_t *o)
{
  char fname[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCheck(h5_exists(file, obj), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: object %s does not exist (cannot access its attributes)", fname, obj);
  InflCallH5(*o = H5Oopen(file, obj, H5P_DEFAULT));
  PetscFunctionReturn(0);
}

static PetscErrorCode h5_set_attr(hid_t file, const char obj[], const char name[], hid_t type, const void *value)
{
  hid_t o, space, a;

  PetscFunctionBegin;
  PetscCall(h5_open_obj(file, obj, &o));
  if (H5Aexists(o, name) > 0) InflCallH5(H5Adelete(o, name));
  InflCallH5(space = H5Screate(H5S_SCALAR));
  InflCallH5(a = H5Acreate2(o, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
  InflCallH5(H5Awrite(a, type, value));
  InflCallH5(H5Aclose(a));
  InflCallH5(H5Sclose(space));
  InflCallH5(H5Oclose(o));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5SetAttrString(hid_t file, const char obj[], const char name[], const char value[])
{
  hid_t type;

  PetscFunctionBegin;
  InflCallH5(type = H5Tcopy(H5T_C_S1));
  InflCallH5(H5Tset_size(type, strlen(value) + 1));
  InflCallH5(H5Tset_strpad(type, H5T_STR_NULLTERM));
  PetscCall(h5_set_attr(file, obj, name, type, value));
  InflCallH5(H5Tclose(type));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5SetAttrDouble(hid_t file, const char obj[], const char name[], double value)
{
  PetscFunctionBegin;
  PetscCall(h5_set_attr(file, obj, name, H5T_NATIVE_DOUBLE, &value));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5SetAttrInt(hid_t file, const char obj[], const char name[], int64_t value)
{
  PetscFunctionBegin;
  PetscCall(h5_set_attr(file, obj, name, H5T_NATIVE_INT64, &value));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5GetAttrString(hid_t file, const char obj[], const char name[], char value[], size_t len)
{
  hid_t  o, a, ftype, mtype;
  char   fname[PETSC_MAX_PATH_LEN];
  char     *text = NULL;
  size_t    n;
  PetscBool isstr;

  PetscFunctionBegin;
  PetscCheck(len > 0, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "buffer length must be positive");
  value[0] = 0;
  PetscCall(h5_open_obj(file, obj, &o));
  if (H5Aexists(o, name) <= 0) {
    InflCallH5(H5Oclose(o));
    PetscFunctionReturn(0);
  }
  h5_filename(file, fname, sizeof(fname));
  InflCallH5(a = H5Aopen(o, name, H5P_DEFAULT));
  InflCallH5(ftype = H5Aget_type(a));
  isstr = H5Tget_class(ftype) == H5T_STRING ? PETSC_TRUE : PETSC_FALSE;
  if (!isstr) { /* close before the error, so that the file can still be closed */
    InflCallH5(H5Tclose(ftype));
    InflCallH5(H5Aclose(a));
    InflCallH5(H5Oclose(o));
  }
  PetscCheck(isstr, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: attribute %s of %s is not a string", fname, name, obj);
  InflCallH5(mtype = H5Tcopy(H5T_C_S1));
  if (H5Tis_variable_str(ftype) > 0) { /* e.g. written by h5py */
    char *p = NULL;
    InflCallH5(H5Tset_size(mtype, H5T_VARIABLE));
    InflCallH5(H5Aread(a, mtype, &p));
    PetscCall(PetscStrallocpy(p ? p : "", &text));
    if (p) H5free_memory(p);
  } else {
    n = H5Tget_size(ftype);
    InflCallH5(H5Tset_size(mtype, n + 1));
    InflCallH5(H5Tset_strpad(mtype, H5T_STR_NULLTERM));
    PetscCall(PetscCalloc1(n + 2, &text));
    InflCallH5(H5Aread(a, mtype, text));
  }
  InflCallH5(H5Tclose(mtype));
  InflCallH5(H5Tclose(ftype));
  InflCallH5(H5Aclose(a));
  InflCallH5(H5Oclose(o));
  n = strlen(text);
  if (n < len) memcpy(value, text, n + 1);
  PetscCall(PetscFree(text));
  PetscCheck(n < len, PETSC_COMM_SELF, PETSC_ERR_ARG_SIZ, "%s: attribute %s of %s has %zu characters, more than the buffer of %zu", fname, name, obj, n, len);
  PetscFunctionReturn(0);
}

static PetscErrorCode h5_get_attr(hid_t file, const char obj[], const char name[], hid_t type, void *value)
{
  hid_t     o, a;
  char      fname[PETSC_MAX_PATH_LEN];
  PetscBool has;

  PetscFunctionBegin;
  PetscCall(h5_open_obj(file, obj, &o));
  h5_filename(file, fname, sizeof(fname));
  has = H5Aexists(o, name) > 0 ? PETSC_TRUE : PETSC_FALSE;
  if (!has) InflCallH5(H5Oclose(o));
  PetscCheck(has, PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: %s has no attribute %s; was the file written by infl's stage that produces it?", fname, obj, name);
  InflCallH5(a = H5Aopen(o, name, H5P_DEFAULT));
  InflCallH5(H5Aread(a, type, value));
  InflCallH5(H5Aclose(a));
  InflCallH5(H5Oclose(o));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5GetAttrDouble(hid_t file, const char obj[], const char name[], double *value)
{
  PetscFunctionBegin;
  PetscCall(h5_get_attr(file, obj, name, H5T_NATIVE_DOUBLE, value));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5GetAttrInt(hid_t file, const char obj[], const char name[], int64_t *value)
{
  PetscFunctionBegin;
  PetscCall(h5_get_attr(file, obj, name, H5T_NATIVE_INT64, value));
  PetscFunctionReturn(0);
}

/* Collective: a string identical on all ranks (rank 0's). */
static PetscErrorCode bcast_string(MPI_Comm comm, char **s)
{
  PetscMPIInt rank;
  int64_t     n = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) n = (int64_t)strlen(*s);
  PetscCallMPI(MPI_Bcast(&n, 1, MPI_INT64_T, 0, comm));
  if (rank != 0) {
    PetscCall(PetscFree(*s));
    PetscCall(PetscCalloc1(n + 1, s));
  }
  PetscCall(InflBcast(*s, n, MPI_CHAR, 0, comm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5WriteProvenance(hid_t file, MPI_Comm comm, const char stage[], const char model_hash[], const char train_hash[], const char query_hash[])
{
  PetscMPIInt size;
  char       *options = NULL, *created;
  time_t      now = time(NULL);
  struct tm   utc;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscOptionsGetAll(NULL, &options));
  PetscCall(bcast_string(comm, &options));
  PetscCall(PetscCalloc1(32, &created));
  gmtime_r(&now, &utc);
  strftime(created, 32, "%Y-%m-%dT%H:%M:%SZ", &utc);
  PetscCall(bcast_string(comm, &created));
  PetscCall(InflH5SetAttrString(file, "/", "infl_version", INFL_VERSION_STRING));
  PetscCall(InflH5SetAttrString(file, "/", "stage", stage ? stage : ""));
  PetscCall(InflH5SetAttrInt(file, "/", "ranks", (int64_t)size));
  PetscCall(InflH5SetAttrString(file, "/", "options", options));
  if (model_hash) PetscCall(InflH5SetAttrString(file, "/", "model_sha256", model_hash));
  if (train_hash) PetscCall(InflH5SetAttrString(file, "/", "train_sha256", train_hash));
  if (query_hash) PetscCall(InflH5SetAttrString(file, "/", "query_sha256", query_hash));
  PetscCall(InflH5SetAttrString(file, "/", "created", created));
  PetscCall(PetscFree(options));
  PetscCall(PetscFree(created));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5ColumnBlock(hid_t file, const char name[], int ndim, const int64_t dims[], int64_t c0, int64_t nc, double buf[], PetscBool write)
{
  hsize_t hd[3], start[3] = {0, 0, 0}, cnt[3];
  hid_t   space, mem, dset, dxpl;
  int64_t rows = 1;
  float  *f;

  PetscFunctionBegin;
  for (int i = 0; i < ndim; i++) {
    hd[i]  = (hsize_t)dims[i];
    cnt[i] = (hsize_t)dims[i];
  }
  for (int i = 0; i < ndim - 1; i++) rows *= dims[i];
  start[ndim - 1] = (hsize_t)c0;
  cnt[ndim - 1]   = (hsize_t)nc;
  PetscCall(PetscMalloc1((size_t)PetscMax(rows * nc, 1), &f));
  if (write) {
    for (int64_t i = 0; i < rows * nc; i++) f[i] = (float)buf[i];
    hid_t lcpl; /* missing groups of the name created (/ensemble/member_scores) */
    space = H5Screate_simple(ndim, hd, NULL);
    InflCallH5(space);
    InflCallH5(lcpl = H5Pcreate(H5P_LINK_CREATE));
    InflCallH5(H5Pset_create_intermediate_group(lcpl, 1));
    dset = H5Dcreate2(file, name, H5T_NATIVE_FLOAT, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    InflCallH5(dset);
    InflCallH5(H5Pclose(lcpl));
  } else {
    dset = H5Dopen2(file, name, H5P_DEFAULT);
    InflCallH5(dset);
    space = H5Dget_space(dset);
    InflCallH5(space);
  }
  mem = H5Screate_simple(ndim, cnt, NULL);
  InflCallH5(mem);
  if (nc > 0 && rows > 0) InflCallH5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, cnt, NULL));
  else {
    InflCallH5(H5Sselect_none(space));
    InflCallH5(H5Sselect_none(mem));
  }
  dxpl = H5Pcreate(H5P_DATASET_XFER);
  InflCallH5(dxpl);
  InflCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  if (write) InflCallH5Write(dset, H5Dwrite(dset, H5T_NATIVE_FLOAT, mem, space, dxpl, f));
  else {
    InflCallH5(H5Dread(dset, H5T_NATIVE_FLOAT, mem, space, dxpl, f));
    for (int64_t i = 0; i < rows * nc; i++) buf[i] = f[i];
  }
  InflCallH5(H5Pclose(dxpl));
  InflCallH5(H5Sclose(mem));
  InflCallH5(H5Dclose(dset));
  InflCallH5(H5Sclose(space));
  PetscCall(PetscFree(f));
  PetscFunctionReturn(0);
}

PetscErrorCode InflH5CyclicBlock(hid_t file, const char name[], const int64_t dims[2], int dim, int nb, int p, int np, PetscBool mine, double buf[], PetscBool write)
{
  hsize_t hd[2] = {(hsize_t)dims[0], (hsize_t)dims[1]}, one = 1;
  hid_t   dset, fspace, mspace, dxpl;
  int64_t n = dims[dim], nloc = mine ? InflBlacsLocalCount(n, nb, p, np) : 0, other = dims[1 - dim];
  char    dummy = 0, fname[PETSC_MAX_PATH_LEN];

  PetscFunctionBegin;
  h5_filename(file, fname, sizeof(fname));
  PetscCheck(dim == 0 || dim == 1, PETSC_COMM_SELF, PETSC_ERR_ARG_OUTOFRANGE, "%s: dataset %s: dimension %d is not 0 or 1", fname, name, dim);
  if (write) PetscCall(h5_create_dataset(file, name, H5T_NATIVE_DOUBLE, 2, dims, &dset));
  else {
    PetscCheck(h5_exists(file, name), PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s is missing", fname, name);
    InflCallH5(dset = H5Dopen2(file, name, H5P_DEFAULT));
  }
  InflCallH5(fspace = H5Dget_space(dset));
  if (dims[0] * dims[1] == 0) { /* nothing to transfer on any rank */
    InflCallH5(H5Sclose(fspace));
    InflCallH5(H5Dclose(dset));
    PetscFunctionReturn(0);
  }
  if (nloc > 0 && other > 0) {
    /* the whole blocks of nb indices p, p+np, ..., then the partial last block if it is this rank's */
    int64_t nblk = n / nb, mine_full = nblk / np + (p < nblk % np ? 1 : 0), rest = n % nb;
    hsize_t start[2] = {0, 0}, stride[2] = {1, 1}, count[2] = {1, 1}, block[2] = {hd[0], hd[1]}, mdims[2];
    H5S_seloper_t op = H5S_SELECT_SET;
    if (mine_full > 0) {
      start[dim]  = (hsize_t)p * nb;
      stride[dim] = (hsize_t)np * nb;
      count[dim]  = (hsize_t)mine_full;
      block[dim]  = (hsize_t)nb;
      InflCallH5(H5Sselect_hyperslab(fspace, op, start, stride, count, block));
      op = H5S_SELECT_OR;
    }
    if (rest && nblk % np == p) {
      start[dim]  = (hsize_t)(nblk * nb);
      stride[dim] = 1;
      count[dim]  = 1;
      block[dim]  = (hsize_t)rest;
      InflCallH5(H5Sselect_hyperslab(fspace, op, start, stride, count, block));
    }
    mdims[dim]     = (hsize_t)nloc;
    mdims[1 - dim] = (hsize_t)other;
    InflCallH5(mspace = H5Screate_simple(2, mdims, NULL));
  } else {
    InflCallH5(H5Sselect_none(fspace));
    InflCallH5(mspace = H5Screate_simple(1, &one, NULL));
    InflCallH5(H5Sselect_none(mspace));
  }
  InflCallH5(dxpl = H5Pcreate(H5P_DATASET_XFER));
  InflCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  if (write) InflCallH5Write(dset, H5Dwrite(dset, H5T_NATIVE_DOUBLE, mspace, fspace, dxpl, nloc > 0 && other > 0 ? (const void *)buf : (const void *)&dummy));
  else InflCallH5(H5Dread(dset, H5T_NATIVE_DOUBLE, mspace, fspace, dxpl, nloc > 0 && other > 0 ? (void *)buf : (void *)&dummy));
  InflCallH5(H5Pclose(dxpl));
  InflCallH5(H5Sclose(mspace));
  InflCallH5(H5Sclose(fspace));
  InflCallH5(H5Dclose(dset));
  PetscFunctionReturn(0);
}

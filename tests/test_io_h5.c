static const char help[] = "HDF5 helpers and h5 data sets: collective row writes (ranks with zero rows), reads, attributes, bad data.\n";
#include "io/check.h"
#include <math.h>
#include <stdio.h>

/* the values written, as functions of (example, feature): independent of the rank count */
static double  x_value(int64_t i, int64_t j) { return sin(0.1 * (double)(i * 31 + j)) * (double)(j + 1); }
static int64_t y_value(int64_t i) { return (i * 3) % 7; }

/* Write an h5 data set of N examples, d features, inputs as `xtype`, labels as `ytype`, every rank its block.
 * bad_label >= 0 makes that example's label -1; bad_x >= 0 puts a NaN in that example; nlab != N writes that many labels. */
static PetscErrorCode write_data(MPI_Comm comm, const char path[], int64_t N, int64_t d, hid_t xtype, hid_t ytype, int64_t bad_label, int64_t bad_x, int64_t nlab)
{
  PetscMPIInt size, rank;
  int64_t     start, count, lstart, lcount, dims[2] = {N, d}, ldims[1] = {nlab};
  double     *x; /* (count, d) */
  int64_t    *y; /* (lcount) */
  hid_t       file;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  InflPartition(N, size, rank, &start, &count);
  InflPartition(nlab, size, rank, &lstart, &lcount);
  PetscCall(PetscMalloc2(count * d + 1, &x, lcount + 1, &y));
  for (int64_t i = 0; i < count; i++)
    for (int64_t j = 0; j < d; j++) x[i * d + j] = (start + i == bad_x && j == d - 1) ? NAN : x_value(start + i, j);
  for (int64_t i = 0; i < lcount; i++) y[i] = lstart + i == bad_label ? -1 : y_value(lstart + i);
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &file));
  if (xtype == H5T_NATIVE_DOUBLE && ytype == H5T_NATIVE_INT64) { /* through the helper: collective row blocks */
    PetscCall(InflH5WriteRows(file, "/inputs", H5T_NATIVE_DOUBLE, 2, dims, start, count, x));
    PetscCall(InflH5WriteRows(file, "/labels", H5T_NATIVE_INT64, 1, ldims, lstart, lcount, y));
  } else { /* other file types: memory double / int64, HDF5 converts to the dataset's file type */
    hid_t sx, sy, dx, dy, dxpl;
    hsize_t hd[2] = {(hsize_t)N, (hsize_t)d}, hl = (hsize_t)nlab;
    /* create with the requested file types, then write rows collectively through the helper's pattern */
    InflCallH5(sx = H5Screate_simple(2, hd, NULL));
    InflCallH5(sy = H5Screate_simple(1, &hl, NULL));
    InflCallH5(dx = H5Dcreate2(file, "/inputs", xtype, sx, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    InflCallH5(dy = H5Dcreate2(file, "/labels", ytype, sy, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    InflCallH5(dxpl = H5Pcreate(H5P_DATASET_XFER));
    InflCallH5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    {
      hsize_t st[2] = {(hsize_t)start, 0}, ct[2] = {(hsize_t)count, (hsize_t)d}, one = 1;
      hid_t   m;
      if (count > 0) {
        InflCallH5(H5Sselect_hyperslab(sx, H5S_SELECT_SET, st, NULL, ct, NULL));
        InflCallH5(m = H5Screate_simple(2, ct, NULL));
      } else {
        InflCallH5(H5Sselect_none(sx));
        InflCallH5(m = H5Screate_simple(1, &one, NULL));
        InflCallH5(H5Sselect_none(m));
      }
      InflCallH5(H5Dwrite(dx, H5T_NATIVE_DOUBLE, m, sx, dxpl, x));
      InflCallH5(H5Sclose(m));
      st[0] = (hsize_t)lstart;
      ct[0] = (hsize_t)lcount;
      if (lcount > 0) {
        InflCallH5(H5Sselect_hyperslab(sy, H5S_SELECT_SET, st, NULL, ct, NULL));
        InflCallH5(m = H5Screate_simple(1, ct, NULL));
      } else {
        InflCallH5(H5Sselect_none(sy));
        InflCallH5(m = H5Screate_simple(1, &one, NULL));
        InflCallH5(H5Sselect_none(m));
      }
      InflCallH5(H5Dwrite(dy, H5T_NATIVE_INT64, m, sy, dxpl, y));
      InflCallH5(H5Sclose(m));
    }
    InflCallH5(H5Pclose(dxpl));
    InflCallH5(H5Dclose(dx));
    InflCallH5(H5Dclose(dy));
    InflCallH5(H5Sclose(sx));
    InflCallH5(H5Sclose(sy));
  }
  PetscCall(InflH5Close(&file));
  PetscCall(PetscFree2(x, y));
  PetscFunctionReturn(0);
}

/* Check an opened data set against x_value / y_value (inputs stored as float32 or float64: compare in float). */
static PetscErrorCode check_data(InflData data, int64_t Nexp, int64_t dexp)
{
  int64_t        N, d, nc, start, count, idx[3], lab[3], ymax = 0;
  const float   *x;
  const int64_t *y;
  float         *ex; /* (3, d) */

  PetscFunctionBegin;
  PetscCall(InflDataGetSizes(data, &N, &d, &nc));
  for (int64_t i = 0; i < Nexp; i++) ymax = PetscMax(ymax, y_value(i));
  EXPECT(N == Nexp && d == dexp && nc == ymax + 1, "h5 data sizes N %" PRId64 " d %" PRId64 " nclasses %" PRId64 ", expected %" PRId64 " %" PRId64 " %" PRId64, N, d, nc, Nexp, dexp, ymax + 1);
  PetscCall(InflDataGetShard(data, &start, &count, &x, &y));
  for (int64_t i = 0; i < count; i++) {
    EXPECT(y[i] == y_value(start + i), "h5 label of example %" PRId64, start + i);
    for (int64_t j = 0; j < d; j++) EXPECT(x[i * d + j] == (float)x_value(start + i, j), "h5 input (%" PRId64 ", %" PRId64 "): %g vs %g", start + i, j, (double)x[i * d + j], x_value(start + i, j));
  }
  idx[0] = N - 1;
  idx[1] = 0;
  idx[2] = (start + count) % N;
  PetscCall(PetscMalloc1(3 * d, &ex));
  PetscCall(InflDataGetExamples(data, 3, idx, ex, lab));
  for (int k = 0; k < 3; k++) {
    EXPECT(lab[k] == y_value(idx[k]), "h5 GetExamples label of %" PRId64, idx[k]);
    for (int64_t j = 0; j < d; j++) EXPECT(ex[k * d + j] == (float)x_value(idx[k], j), "h5 GetExamples input of %" PRId64, idx[k]);
  }
  PetscCall(PetscFree(ex));
  PetscFunctionReturn(0);
}

static PetscErrorCode test_data(MPI_Comm comm)
{
  PetscMPIInt size;
  char        path[64], spec[80];
  InflData    data;
  /* N = 2 leaves ranks 2, 3 without rows at 3-4 ranks */
  const int64_t Ns[3] = {2, 53, 1};
  const hid_t   xt[3] = {H5T_NATIVE_DOUBLE, H5T_IEEE_F32LE, H5T_IEEE_F32BE};
  const hid_t   yt[3] = {H5T_NATIVE_INT64, H5T_STD_U8LE, H5T_STD_I32LE};

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(path, sizeof(path), "io_h5data_np%d.h5", size));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "h5:%s", path));
  for (int c = 0; c < 3; c++) {
    PetscCall(write_data(comm, path, Ns[c], 5, xt[c], yt[c], -1, -1, Ns[c]));
    PetscCall(InflDataOpen(comm, spec, 0, &data));
    PetscCall(check_data(data, Ns[c], 5));
    PetscCall(InflDataDestroy(&data));
  }
  /* limit */
  PetscCall(write_data(comm, path, 53, 5, H5T_IEEE_F32LE, H5T_STD_I64LE, -1, -1, 53));
  PetscCall(InflDataOpen(comm, spec, 3, &data));
  PetscCall(check_data(data, 3, 5));
  PetscCall(InflDataDestroy(&data));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 54, &data), "limit 54 is larger than the 53 examples", "limit > N");
  /* bad data */
  PetscCall(write_data(comm, path, 53, 5, H5T_NATIVE_DOUBLE, H5T_NATIVE_INT64, 17, -1, 53));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "example 17 has negative label -1", "negative label");
  PetscCall(write_data(comm, path, 53, 5, H5T_NATIVE_DOUBLE, H5T_NATIVE_INT64, -1, 41, 53));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "example 41 has a non-finite input (NaN) at feature 4", "NaN input");
  PetscCall(write_data(comm, path, 53, 5, H5T_IEEE_F64LE, H5T_STD_I64LE, -1, -1, 52));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "/inputs has 53 rows but /labels has 52", "N mismatch");
  PetscCall(write_data(comm, path, 0, 5, H5T_NATIVE_DOUBLE, H5T_NATIVE_INT64, -1, -1, 0));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "the data set is empty", "empty");
  EXPECT_FAIL(comm, InflDataOpen(comm, "h5:no-such-data.h5", 0, &data), "cannot open HDF5 file no-such-data.h5: no such file", "missing file");
  PetscFunctionReturn(0);
}

/* Helpers: WriteRows / WriteArray / ReadArray / ReadRows / attributes / provenance / refusal of an existing file. */
static PetscErrorCode test_helpers(MPI_Comm comm)
{
  PetscMPIInt size, rank;
  char        path[64], s[256];
  hid_t       file;
  int64_t     N = 3, d = 4, start, count, dims[2] = {3, 4}, adims[1] = {5}, got[2], r0, rn;
  float      *rows;                    /* (count, d) */
  float       all[12];                 /* (N, d) */
  double      arr[5] = {1, 2, 3, 4, 5}, back[5], dv;
  int64_t     iv;
  int         nd;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(path, sizeof(path), "io_h5helpers_np%d.h5", size));
  InflPartition(N, size, rank, &start, &count); /* N = 3 < 4 ranks: rank 3 writes zero rows */
  PetscCall(PetscMalloc1(count * d + 1, &rows));
  for (int64_t i = 0; i < count * d; i++) rows[i] = (float)(start * d + i) + 0.5f;
  PetscCall(InflH5Create(comm, path, PETSC_TRUE, &file));
  PetscCall(InflH5WriteRows(file, "/scores/full", H5T_NATIVE_FLOAT, 2, dims, start, count, rows));
  PetscCall(InflH5WriteArray(file, "/a/b/c", H5T_NATIVE_DOUBLE, 1, adims, arr));
  PetscCall(InflH5SetAttrString(file, "/", "note", "hello"));
  PetscCall(InflH5SetAttrString(file, "/a/b/c", "unit", "nats"));
  PetscCall(InflH5SetAttrDouble(file, "/a", "damping", 1e-3));
  PetscCall(InflH5SetAttrInt(file, "/", "count", -42));
  PetscCall(InflH5WriteProvenance(file, comm, "test", "abc123", NULL, NULL));
  EXPECT_FAIL(comm, InflH5WriteArray(file, "/a/b/c", H5T_NATIVE_DOUBLE, 1, adims, arr), "dataset /a/b/c already exists", "dataset exists");
  PetscCall(InflH5Close(&file));
  EXPECT(file < 0, "Close must invalidate the id");
  PetscCall(PetscFree(rows));

  /* an existing file is refused without overwrite */
  EXPECT_FAIL(comm, InflH5Create(comm, path, PETSC_FALSE, &file), "exists; pass -overwrite to replace it, or remove it", "existing file");
  EXPECT(InflFileExists(path), "the refused file must still exist");

  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
  PetscCall(InflH5ReadArray(file, "/scores/full", H5T_NATIVE_FLOAT, 2, dims, got, all));
  EXPECT(got[0] == 3 && got[1] == 4, "dims out");
  for (int i = 0; i < 12; i++) EXPECT(all[i] == (float)i + 0.5f, "row data [%d] = %g", i, (double)all[i]);
  /* rows by block, a different partition (by rank from the end) to exercise other shapes */
  InflPartition(N, size, size - 1 - rank, &r0, &rn);
  PetscCall(InflH5ReadRows(file, "/scores/full", H5T_NATIVE_FLOAT, r0, rn, all));
  for (int64_t i = 0; i < rn * d; i++) EXPECT(all[i] == (float)(r0 * d + i) + 0.5f, "ReadRows data");
  PetscCall(InflH5ReadArray(file, "/a/b/c", H5T_NATIVE_DOUBLE, 1, NULL, NULL, back));
  for (int i = 0; i < 5; i++) EXPECT(back[i] == arr[i], "array data");
  {
    int64_t wrong[2] = {3, 5};
    EXPECT_FAIL(comm, InflH5ReadArray(file, "/scores/full", H5T_NATIVE_FLOAT, 2, wrong, NULL, all), "dataset /scores/full has shape (3, 4) but (3, 5) is expected", "shape mismatch");
  }
  PetscCall(InflH5GetDims(file, "/missing/x", &nd, got));
  EXPECT(nd == -1, "absent dataset ndim %d", nd);
  PetscCall(InflH5GetDims(file, "/a/b/c", &nd, got));
  EXPECT(nd == 1 && got[0] == 5, "GetDims");
  PetscCall(InflH5GetAttrString(file, "/", "note", s, sizeof(s)));
  EXPECT(!strcmp(s, "hello"), "string attribute \"%s\"", s);
  PetscCall(InflH5GetAttrString(file, "/a/b/c", "unit", s, sizeof(s)));
  EXPECT(!strcmp(s, "nats"), "string attribute on a dataset \"%s\"", s);
  PetscCall(InflH5GetAttrString(file, "/", "absent", s, sizeof(s)));
  EXPECT(s[0] == 0, "absent string attribute must be empty");
  PetscCall(InflH5GetAttrDouble(file, "/a", "damping", &dv));
  EXPECT(dv == 1e-3, "double attribute %g", dv);
  PetscCall(InflH5GetAttrInt(file, "/", "count", &iv));
  EXPECT(iv == -42, "int attribute %" PRId64, iv);
  PetscCall(InflH5GetAttrInt(file, "/", "ranks", &iv));
  EXPECT(iv == size, "provenance ranks %" PRId64, iv);
  PetscCall(InflH5GetAttrString(file, "/", "stage", s, sizeof(s)));
  EXPECT(!strcmp(s, "test"), "provenance stage");
  PetscCall(InflH5GetAttrString(file, "/", "model_sha256", s, sizeof(s)));
  EXPECT(!strcmp(s, "abc123"), "provenance model hash");
  PetscCall(InflH5GetAttrString(file, "/", "infl_version", s, sizeof(s)));
  EXPECT(!strcmp(s, INFL_VERSION_STRING), "provenance version");
  PetscCall(InflH5GetAttrString(file, "/", "created", s, sizeof(s)));
  EXPECT(strlen(s) == 20 && s[10] == 'T' && s[19] == 'Z', "provenance time \"%s\"", s);
  PetscCall(InflH5GetAttrString(file, "/", "options", s, sizeof(s)));
  EXPECT(strstr(s, "-io_test_marker 7") != NULL, "provenance options \"%s\" lack -io_test_marker 7", s);
  PetscCall(InflH5GetAttrString(file, "/", "train_sha256", s, sizeof(s)));
  EXPECT(s[0] == 0, "train hash was not given, must be absent");
  EXPECT_FAIL(comm, InflH5GetAttrString(file, "/", "note", s, 3), "has 5 characters, more than the buffer of 3", "short buffer");
  EXPECT_FAIL(comm, InflH5GetAttrDouble(file, "/", "absent", &dv), "has no attribute absent", "absent numeric attribute");
  PetscCall(InflH5Close(&file));
  EXPECT_FAIL(comm, InflH5Open(comm, "no-such-file.h5", PETSC_FALSE, &file), "cannot open HDF5 file no-such-file.h5: no such file", "missing file");
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  PetscCall(PetscOptionsSetValue(NULL, "-io_test_marker", "7"));
  PetscCall(test_helpers(PETSC_COMM_WORLD));
  PetscCall(test_data(PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_io_h5: ok\n"));
  PetscCall(PetscFinalize());
  return 0;
}

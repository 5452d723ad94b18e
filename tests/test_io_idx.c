static const char help[] = "IDX data sets: Fashion-MNIST t10k shards and examples, raw IDX files, bad files.\n";
#include "io/check.h"
#include <math.h>
#include <stdio.h>

/* Reference values, computed independently with
 *   /usr/bin/python3 -c "import gzip,numpy as np; D='/usr/share/datasets/fashion-mnist/';
 *     x=np.frombuffer(gzip.open(D+'t10k-images-idx3-ubyte.gz').read()[16:],np.uint8).reshape(-1,784);
 *     y=np.frombuffer(gzip.open(D+'t10k-labels-idx1-ubyte.gz').read()[8:],np.uint8);
 *     print([(i,int(x[i].sum()),int(y[i])) for i in (0,1,4999,9999)], int(x.astype(np.int64).sum()), np.bincount(y))"
 * -> [(0, 33456, 9), (1, 100994, 2), (4999, 27552, 7), (9999, 24390, 5)] 573469082 [1000 ... 1000] */
static const int64_t ref_index[4] = {0, 1, 4999, 9999};
static const int64_t ref_sum[4]   = {33456, 100994, 27552, 24390};
static const int64_t ref_label[4] = {9, 2, 7, 5};
#define REF_TOTAL 573469082LL

static int64_t pixel_sum(const float *x, int64_t d) /* x = pixel / 255 */
{
  int64_t s = 0;
  for (int64_t j = 0; j < d; j++) s += lrintf(x[j] * 255.0f);
  return s;
}

static PetscErrorCode test_fashion(MPI_Comm comm, const char prefix[])
{
  InflData       data, sub;
  char           spec[PETSC_MAX_PATH_LEN];
  int64_t        N, d, nc, start, count, s0, c0, total = 0, hist[10] = {0}, next = 0;
  const float   *x;
  const int64_t *y;
  float         *ex; /* (4, d) */
  int64_t        lab[4];
  PetscMPIInt    rank, size;
  const char    *h1, *h2;
  char           hash0[65];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "idx:%s", prefix));
  PetscCall(InflDataOpen(comm, spec, 0, &data));
  PetscCall(InflDataGetSizes(data, &N, &d, &nc));
  EXPECT(N == 10000 && d == 784 && nc == 10, "sizes N %" PRId64 " d %" PRId64 " nclasses %" PRId64 ", expected 10000 784 10", N, d, nc);
  /* shards tile [0, N) in rank order */
  PetscCall(InflDataGetShard(data, &start, &count, &x, &y));
  InflPartition(N, size, rank, &s0, &c0);
  EXPECT(start == s0 && count == c0, "shard [%" PRId64 ", +%" PRId64 ") is not the partition block", start, count);
  PetscCallMPI(MPI_Exscan(&count, &next, 1, MPI_INT64_T, MPI_SUM, comm));
  if (rank == 0) next = 0;
  EXPECT(start == next, "shard start %" PRId64 " does not follow the previous shard's end %" PRId64, start, next);
  PetscCallMPI(MPI_Allreduce(&count, &next, 1, MPI_INT64_T, MPI_SUM, comm));
  EXPECT(next == N, "shards cover %" PRId64 " examples, not %" PRId64, next, N);
  /* InflPartitionOwner against a scan of the blocks, also with fewer indices than ranks (empty blocks) */
  for (int64_t n = 1; n <= 13; n += 3)
    for (int sz = 1; sz <= 6; sz++)
      for (int64_t i = 0; i < n; i++) {
        int owner = -1;
        for (int r = 0; r < sz; r++) {
          InflPartition(n, sz, r, &s0, &c0);
          if (i >= s0 && i < s0 + c0) owner = r;
        }
        EXPECT(InflPartitionOwner(n, sz, i) == owner, "InflPartitionOwner(%" PRId64 ", %d, %" PRId64 ") is %d, not the block holding it, %d", n, sz, i, InflPartitionOwner(n, sz, i), owner);
      }
  /* the whole set: pixel total and class histogram */
  for (int64_t i = 0; i < count; i++) {
    total += pixel_sum(x + i * d, d);
    hist[y[i]]++;
  }
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT64_T, MPI_SUM, comm));
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, hist, 10, MPI_INT64_T, MPI_SUM, comm));
  EXPECT(total == REF_TOTAL, "pixel total %" PRId64 ", python says %lld", total, REF_TOTAL);
  for (int k = 0; k < 10; k++) EXPECT(hist[k] == 1000, "class %d has %" PRId64 " examples, expected 1000", k, hist[k]);
  /* specific examples, local or not */
  PetscCall(PetscMalloc1(4 * d, &ex));
  PetscCall(InflDataGetExamples(data, 4, ref_index, ex, lab));
  for (int k = 0; k < 4; k++) {
    EXPECT(pixel_sum(ex + k * d, d) == ref_sum[k], "example %" PRId64 ": pixel sum %" PRId64 ", python says %" PRId64, ref_index[k], pixel_sum(ex + k * d, d), ref_sum[k]);
    EXPECT(lab[k] == ref_label[k], "example %" PRId64 ": label %" PRId64 ", python says %" PRId64, ref_index[k], lab[k], ref_label[k]);
  }
  PetscCall(PetscFree(ex));
  /* GetExamples of any index equals the owner's shard row, bit for bit */
  PetscCall(PetscMalloc1(d + 1, &ex));
  for (int64_t i = 3; i < N; i += 997) {
    float  *row; /* (d + 1): owner's row, then its label */
    int64_t got;
    int     owner = InflPartitionOwner(N, size, i);
    PetscCall(PetscMalloc1(d + 1, &row));
    if (rank == owner) {
      PetscCall(PetscArraycpy(row, x + (i - start) * d, d));
      row[d] = (float)y[i - start];
    }
    PetscCallMPI(MPI_Bcast(row, (int)d + 1, MPI_FLOAT, owner, comm));
    PetscCall(InflDataGetExamples(data, 1, &i, ex, &got));
    EXPECT(!memcmp(ex, row, (size_t)d * sizeof(float)) && got == (int64_t)row[d], "example %" PRId64 " read by rank %d differs from the shard of rank %d", i, rank, owner);
    PetscCall(PetscFree(row));
  }
  { /* InflDataGetBytes (the -mem_limit estimates): the shard, plus the whole decompressed copy of the .gz files that
     * the non-local examples above made (several ranks), which InflDataFreeCache frees; the next non-local read makes
     * it again and reads the same row */
    size_t  b, shard = (size_t)count * (sizeof(float) * (size_t)d + sizeof(int64_t));
    int64_t i = (start + count) % N, got, lab0;
    PetscCall(InflDataGetBytes(data, &b));
    EXPECT(b == shard + (size > 1 ? (size_t)N * (size_t)(d + 1) : 0), "InflDataGetBytes %zu, expected the shard %zu%s", b, shard, size > 1 ? " plus the decompressed copy of the files" : "");
    PetscCall(InflDataGetExamples(data, 1, &i, ex, &lab0));
    PetscCall(InflDataFreeCache(data));
    PetscCall(InflDataGetBytes(data, &b));
    EXPECT(b == shard, "InflDataGetBytes %zu after InflDataFreeCache, expected the shard %zu", b, shard);
    {
      float *again; /* (d) */
      PetscCall(PetscMalloc1(d, &again));
      PetscCall(InflDataGetExamples(data, 1, &i, again, &got));
      EXPECT(!memcmp(ex, again, (size_t)d * sizeof(float)) && got == lab0, "example %" PRId64 " read again after InflDataFreeCache differs", i);
      PetscCall(PetscFree(again));
    }
    PetscCall(InflDataFreeCache(data));
  }
  PetscCall(PetscFree(ex));
  /* a subset has its own hash; hashes agree over ranks */
  PetscCall(InflDataOpen(comm, spec, 100, &sub));
  PetscCall(InflDataGetSizes(sub, &N, &d, &nc));
  EXPECT(N == 100 && d == 784, "limit 100 gave N %" PRId64, N);
  PetscCall(InflDataGetHash(data, &h1));
  PetscCall(InflDataGetHash(sub, &h2));
  EXPECT(strlen(h1) == 64 && strcmp(h1, h2), "hash of the full set %s and of the first 100 %s must differ", h1, h2);
  PetscCall(PetscStrncpy(hash0, h1, sizeof(hash0)));
  PetscCallMPI(MPI_Bcast(hash0, 65, MPI_CHAR, 0, comm));
  EXPECT(!strcmp(hash0, h1), "data hash differs between ranks");
  PetscCall(InflDataDestroy(&sub));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 10001, &sub), "limit 10001 is larger than the 10000 examples", "limit > N");
  EXPECT_FAIL(comm, InflDataOpenNamed(comm, spec, "query", 10001, &sub), "-query_limit 10001 is larger than the 10000 examples in the files; give at most 10000", "limit > N names the option of a named data set");
  PetscCall(InflDataDestroy(&data));
  PetscFunctionReturn(0);
}

/* ---------------------------------------------------------------- synthetic raw IDX files */
#define SN 37
#define SR 3
#define SC 4
static unsigned char syn_pixel(int64_t i, int64_t j) { return (unsigned char)((i * 7 + j * 13) % 256); }
static unsigned char syn_label(int64_t i) { return (unsigned char)(i % 5); }

static void put32(FILE *f, uint32_t v)
{
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
  fwrite(b, 1, 4, f);
}

/* images: magic, n in header, nimg images actually written; labels likewise */
static void write_idx(const char prefix[], uint32_t imagic, uint32_t n_img_hdr, int64_t n_img, uint32_t n_lab_hdr, int64_t n_lab)
{
  char  path[PETSC_MAX_PATH_LEN];
  FILE *f;
  snprintf(path, sizeof(path), "%s-images-idx3-ubyte", prefix);
  f = fopen(path, "wb");
  put32(f, imagic);
  put32(f, n_img_hdr);
  put32(f, SR);
  put32(f, SC);
  for (int64_t i = 0; i < n_img; i++)
    for (int64_t j = 0; j < SR * SC; j++) fputc(syn_pixel(i, j), f);
  fclose(f);
  snprintf(path, sizeof(path), "%s-labels-idx1-ubyte", prefix);
  f = fopen(path, "wb");
  put32(f, 0x801);
  put32(f, n_lab_hdr);
  for (int64_t i = 0; i < n_lab; i++) fputc(syn_label(i), f);
  fclose(f);
}

static PetscErrorCode test_raw(MPI_Comm comm)
{
  InflData       data;
  PetscMPIInt    rank, size;
  char           prefix[64], spec[80];
  int64_t        N, d, nc, start, count, idx[3];
  const float   *x;
  const int64_t *y;
  float          ex[3 * SR * SC];
  int64_t        lab[3];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(prefix, sizeof(prefix), "io_idx_np%d", size));
  PetscCall(PetscSNPrintf(spec, sizeof(spec), "idx:%s", prefix));
  if (rank == 0) write_idx(prefix, 0x803, SN, SN, SN, SN);
  PetscCallMPI(MPI_Barrier(comm));
  PetscCall(InflDataOpen(comm, spec, 0, &data));
  PetscCall(InflDataGetSizes(data, &N, &d, &nc));
  EXPECT(N == SN && d == SR * SC && nc == 5, "raw IDX sizes %" PRId64 " %" PRId64 " %" PRId64, N, d, nc);
  PetscCall(InflDataGetShard(data, &start, &count, &x, &y));
  for (int64_t i = 0; i < count; i++) {
    EXPECT(y[i] == syn_label(start + i), "raw IDX label of example %" PRId64, start + i);
    for (int64_t j = 0; j < d; j++) EXPECT(x[i * d + j] == (float)syn_pixel(start + i, j) / 255.0f, "raw IDX pixel %" PRId64 " of example %" PRId64, j, start + i);
  }
  idx[0] = SN - 1;
  idx[1] = 0;
  idx[2] = (start + count) % SN; /* the next rank's first example */
  PetscCall(InflDataGetExamples(data, 3, idx, ex, lab));
  for (int k = 0; k < 3; k++) {
    EXPECT(lab[k] == syn_label(idx[k]), "raw IDX GetExamples label of %" PRId64, idx[k]);
    for (int64_t j = 0; j < d; j++) EXPECT(ex[k * d + j] == (float)syn_pixel(idx[k], j) / 255.0f, "raw IDX GetExamples pixel of %" PRId64, idx[k]);
  }
  idx[0] = SN;
  EXPECT_FAIL(comm, InflDataGetExamples(data, 1, idx, ex, lab), "example index 37 is outside [0, 37)", "index out of range");
  PetscCall(InflDataDestroy(&data));

  /* bad files */
  if (rank == 0) write_idx(prefix, 0x802, SN, SN, SN, SN);
  PetscCallMPI(MPI_Barrier(comm));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "IDX magic number 0x00000802, expected 0x00000803", "bad magic");
  if (rank == 0) write_idx(prefix, 0x803, SN, SN - 5, SN, SN);
  PetscCallMPI(MPI_Barrier(comm));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "truncated: the header promises 37 images but the data end inside image 32", "truncated images");
  if (rank == 0) write_idx(prefix, 0x803, SN, SN, SN - 1, SN - 1);
  PetscCallMPI(MPI_Barrier(comm));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "has 37 images but", "N images != N labels");
  if (rank == 0) write_idx(prefix, 0x803, 0, 0, 0, 0);
  PetscCallMPI(MPI_Barrier(comm));
  EXPECT_FAIL(comm, InflDataOpen(comm, spec, 0, &data), "the data set is empty", "empty");
  EXPECT_FAIL(comm, InflDataOpen(comm, "idx:/nonexistent/fmnist", 0, &data), "neither /nonexistent/fmnist-images-idx3-ubyte nor", "missing files");
  EXPECT_FAIL(comm, InflDataOpen(comm, "csv:foo.csv", 0, &data), "use idx:PREFIX", "unknown spec");
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  PetscCheck(argc >= 2, PETSC_COMM_WORLD, PETSC_ERR_ARG_WRONG, "usage: test_io_idx FASHION_MNIST_PREFIX (e.g. /usr/share/datasets/fashion-mnist/t10k)");
  PetscCall(test_fashion(PETSC_COMM_WORLD, argv[1]));
  PetscCall(test_raw(PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_io_idx: ok\n"));
  PetscCall(PetscFinalize());
  return 0;
}

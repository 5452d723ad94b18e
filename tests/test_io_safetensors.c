static const char help[] = "safetensors: a file written by python, write/read round trip, corrupt files.\n";
#include "io/check.h"
#include <stdio.h>

/* SHA-256 printed by /usr/bin/python3 tests/io/make_safetensors_fixture.py */
#define FIXTURE_SHA256 "329622e61df798f82444de176faffbaf5ce84305d2f18112eb51a5fd7a3841c3"

static PetscErrorCode test_fixture(MPI_Comm comm, const char path[])
{
  InflSafetensors   st;
  const InflTensor *t;
  const char       *v, *hash;
  PetscInt          n;
  /* file order = data order of the script, whatever the header order */
  const char *names[6] = {"layers.0.weight", "layers.0.bias", "steps", "double", "empty", "bytes"};

  PetscFunctionBegin;
  PetscCall(InflSafetensorsRead(comm, path, &st));
  PetscCall(InflSafetensorsGetSize(st, &n));
  EXPECT(n == 6, "fixture has %" PetscInt_FMT " tensors, expected 6", n);
  for (PetscInt i = 0; i < n; i++) {
    PetscCall(InflSafetensorsGetIndex(st, i, &t));
    EXPECT(!strcmp(t->name, names[i]), "tensor %" PetscInt_FMT " is %s, expected %s (file order)", i, t->name, names[i]);
  }
  PetscCall(InflSafetensorsGet(st, "layers.0.weight", &t));
  EXPECT(t && t->dtype == INFL_F32 && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 4 && t->numel == 12, "layers.0.weight header");
  for (int i = 0; i < 12; i++) EXPECT(((float *)t->data)[i] == 0.5f * i - 1.0f, "layers.0.weight[%d] = %g", i, (double)((float *)t->data)[i]);
  PetscCall(InflSafetensorsGet(st, "layers.0.bias", &t));
  EXPECT(t && t->ndim == 1 && t->shape[0] == 3 && ((float *)t->data)[0] == 0.25f && ((float *)t->data)[1] == -0.5f && ((float *)t->data)[2] == 2.0f, "layers.0.bias values");
  PetscCall(InflSafetensorsGet(st, "steps", &t));
  EXPECT(t && t->dtype == INFL_I64 && t->numel == 5, "steps header");
  {
    const int64_t *s = (const int64_t *)t->data;
    EXPECT(s[0] == 1 && s[1] == -2 && s[2] == 3 && s[3] == ((int64_t)1 << 40) && s[4] == -((int64_t)1 << 40), "steps values");
  }
  PetscCall(InflSafetensorsGet(st, "double", &t));
  EXPECT(t && t->dtype == INFL_F64 && t->ndim == 2, "double header");
  {
    const double *dd = (const double *)t->data;
    EXPECT(dd[0] == 1.0 / 3.0 && dd[1] == -2.5 && dd[2] == 1e-300 && dd[3] == 7.0, "double values");
  }
  PetscCall(InflSafetensorsGet(st, "empty", &t));
  EXPECT(t && t->numel == 0 && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4, "empty tensor");
  PetscCall(InflSafetensorsGet(st, "bytes", &t));
  EXPECT(t && t->dtype == INFL_U8 && ((unsigned char *)t->data)[1] == 127 && ((unsigned char *)t->data)[2] == 255, "U8 values");
  PetscCall(InflSafetensorsGet(st, "absent", &t));
  EXPECT(t == NULL, "absent tensor must give NULL");
  PetscCall(InflSafetensorsGetMetadata(st, "architecture", &v));
  EXPECT(v && !strcmp(v, "mlp"), "metadata architecture");
  PetscCall(InflSafetensorsGetMetadata(st, "dims", &v));
  EXPECT(v && !strcmp(v, "4,3"), "metadata dims");
  PetscCall(InflSafetensorsGetMetadata(st, "nope", &v));
  EXPECT(v == NULL, "absent metadata must give NULL");
  PetscCall(InflSafetensorsGetHash(st, &hash));
  EXPECT(!strcmp(hash, FIXTURE_SHA256), "hash %s, python says %s", hash, FIXTURE_SHA256);
  PetscCall(InflSafetensorsDestroy(&st));
  EXPECT(st == NULL, "Destroy must null the handle");
  PetscFunctionReturn(0);
}

static PetscErrorCode test_roundtrip(MPI_Comm comm)
{
  PetscMPIInt       rank, size;
  char              path[64], path2[64], partial[80], fhash[65];
  float             w[6]   = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f}; /* (2, 3) */
  int64_t           ids[3] = {-7, 0, 9000000000LL};
  uint16_t          half[2] = {0x3c00, 0xc000}; /* F16 1.0, -2.0 */
  double            s       = -1.0 / 7.0;        /* scalar */
  InflTensor        in[4]   = {
    {.name = "layers.0.weight", .dtype = INFL_F32, .ndim = 2, .shape = {2, 3}, .numel = 6, .data = w},
    {.name = "ids", .dtype = INFL_I64, .ndim = 1, .shape = {3}, .numel = 3, .data = ids},
    {.name = "half", .dtype = INFL_F16, .ndim = 1, .shape = {2}, .numel = 2, .data = half},
    {.name = "scalar", .dtype = INFL_F64, .ndim = 0, .numel = 1, .data = &s},
  };
  const char *const keys[2] = {"architecture", "activation"}, *const vals[2] = {"mlp", "relu \"quoted\" \xc3\xa9"};
  InflSafetensors   st, st2;
  const InflTensor *t;
  const char       *v, *h1, *h2;
  PetscInt          n;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(path, sizeof(path), "io_st_np%d.safetensors", size));
  PetscCall(PetscSNPrintf(path2, sizeof(path2), "io_st2_np%d.safetensors", size));
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", path));
  PetscCall(InflSafetensorsWrite(comm, path, 4, in, 2, keys, vals));
  EXPECT(InflFileExists(path) && !InflFileExists(partial), "after write: %s must exist and %s must not", path, partial);
  PetscCall(InflSafetensorsRead(comm, path, &st));
  PetscCall(InflSafetensorsGetSize(st, &n));
  EXPECT(n == 4, "round trip: %" PetscInt_FMT " tensors", n);
  for (int i = 0; i < 4; i++) {
    PetscCall(InflSafetensorsGetIndex(st, i, &t));
    EXPECT(!strcmp(t->name, in[i].name) && t->dtype == in[i].dtype && t->ndim == in[i].ndim && t->numel == in[i].numel, "round trip header of %s", in[i].name);
    for (int k = 0; k < t->ndim; k++) EXPECT(t->shape[k] == in[i].shape[k], "round trip shape of %s", in[i].name);
    EXPECT(!memcmp(t->data, in[i].data, (size_t)t->numel * InflDTypeSize(t->dtype)), "round trip bytes of %s", in[i].name);
  }
  PetscCall(InflSafetensorsGetMetadata(st, "activation", &v));
  EXPECT(v && !strcmp(v, vals[1]), "round trip metadata: \"%s\"", v ? v : "(null)");
  /* the hash is the SHA-256 of the file, and the same file content gives the same hash */
  PetscCall(InflSafetensorsGetHash(st, &h1));
  PetscCall(InflHashFile(path, fhash));
  EXPECT(!strcmp(h1, fhash), "hash %s is not the file's SHA-256 %s", h1, fhash);
  PetscCall(InflSafetensorsWrite(comm, path2, 4, in, 2, keys, vals));
  PetscCall(InflSafetensorsRead(comm, path2, &st2));
  PetscCall(InflSafetensorsGetHash(st2, &h2));
  EXPECT(!strcmp(h1, h2), "writing the same tensors twice gave hashes %s and %s", h1, h2);
  /* header 8-byte aligned, as the reference writer pads it */
  if (rank == 0) {
    FILE         *f = fopen(path, "rb");
    unsigned char b[8];
    uint64_t      hl = 0;
    EXPECT(f && fread(b, 1, 8, f) == 8, "cannot reread %s", path);
    fclose(f);
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    EXPECT(hl % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)hl);
  }
  PetscCall(InflSafetensorsDestroy(&st));
  PetscCall(InflSafetensorsDestroy(&st2));
  EXPECT_FAIL(comm, InflSafetensorsWrite(comm, "/nonexistent-dir/x.safetensors", 4, in, 0, NULL, NULL), "cannot create /nonexistent-dir/x.safetensors.partial", "unwritable path");
  in[1].name = "layers.0.weight";
  EXPECT_FAIL(comm, InflSafetensorsWrite(comm, path, 4, in, 0, NULL, NULL), "repeated name \"layers.0.weight\"", "duplicate tensor name");
  PetscFunctionReturn(0);
}

/* A file with header text `json` padded to a multiple of 8 (header length field `hlen` if nonzero) and
 * `ndata` data bytes (i & 0xff). */
static void write_raw(const char path[], const char *json, uint64_t hlen, size_t ndata)
{
  FILE    *f = fopen(path, "wb");
  size_t   n = strlen(json), padded = (n + 7) / 8 * 8;
  uint64_t len = hlen ? hlen : padded;
  for (int i = 0; i < 8; i++) fputc((int)((len >> (8 * i)) & 0xff), f);
  fwrite(json, 1, n, f);
  for (size_t i = n; i < padded; i++) fputc(' ', f);
  for (size_t i = 0; i < ndata; i++) fputc((int)(i & 0xff), f);
  fclose(f);
}

typedef struct {
  const char *what, *json;
  uint64_t    hlen;
  size_t      ndata;
  const char *expect;
} BadCase;

static PetscErrorCode test_bad(MPI_Comm comm)
{
  PetscMPIInt     rank, size;
  char            path[64];
  InflSafetensors st = NULL;
  const BadCase   cases[] = {
    {"header length larger than the file", "{}", 1000, 0, "header length 1000 is larger than the 8 bytes that follow"},
    {"absurd header length", "{}", (uint64_t)1 << 62, 0, "header length 4611686018427387904 is absurd"},
    {"invalid JSON", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1", 0, 0, "is not valid JSON"},
    {"unknown dtype", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2, "tensor w: unknown dtype \"F8_E4M3\""},
    {"header lies about sizes", "{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[256,784],\"data_offsets\":[0,1000]}}", 0, 1000,
     "tensor layers.0.weight: data_offsets [0, 1000] give 1000 bytes but dtype F32 and shape [256, 784] need 802816; the file is corrupt or was not written as safetensors"},
    {"truncated data", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 0, 8, "tensor w: data_offsets [0, 16] reach beyond the end of the data section (8 bytes after the header); the file is truncated"},
    {"overlapping tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 0, 24, "tensors a data_offsets [0, 16] and b data_offsets [8, 24] overlap"},
    {"hole", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 0, 8, "bytes [0, 4) of the data section belong to no tensor"},
    {"trailing bytes", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 0, 9, "the data section has 9 bytes but the tensors cover only 4"},
    {"negative shape", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-4],\"data_offsets\":[0,4]}}", 0, 4, "tensor a: shape entry 0 is not a non-negative integer"},
    {"metadata not a string", "{\"__metadata__\":{\"dims\":3}}", 0, 0, "__metadata__ entry \"dims\" is not a string"},
    {"header not an object", "[1, 2]", 0, 0, "header is JSON but not an object"},
  };

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscSNPrintf(path, sizeof(path), "io_st_bad_np%d.safetensors", size));
  EXPECT_FAIL(comm, InflSafetensorsRead(comm, "no-such-model.safetensors", &st), "no-such-model.safetensors: cannot open the model file", "missing file");
  if (rank == 0) {
    FILE *f = fopen(path, "wb");
    fwrite("\x05\0\0\0\0", 1, 5, f);
    fclose(f);
  }
  PetscCallMPI(MPI_Barrier(comm));
  EXPECT_FAIL(comm, InflSafetensorsRead(comm, path, &st), "file has 5 bytes, fewer than the 8-byte header length", "shorter than 8 bytes");
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    if (rank == 0) write_raw(path, cases[c].json, cases[c].hlen, cases[c].ndata);
    PetscCallMPI(MPI_Barrier(comm));
    EXPECT_FAIL(comm, InflSafetensorsRead(comm, path, &st), cases[c].expect, cases[c].what);
    EXPECT(st == NULL, "case %s: handle must stay NULL on failure", cases[c].what);
    PetscCallMPI(MPI_Barrier(comm));
  }
  /* the error names the file */
  if (rank == 0) write_raw(path, "{\"w\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1);
  PetscCallMPI(MPI_Barrier(comm));
  EXPECT_FAIL(comm, InflSafetensorsRead(comm, path, &st), path, "file named in the error");
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  PetscCheck(argc >= 2, PETSC_COMM_WORLD, PETSC_ERR_ARG_WRONG, "usage: test_io_safetensors tests/io/fixture.safetensors");
  PetscCall(test_fixture(PETSC_COMM_WORLD, argv[1]));
  PetscCall(test_roundtrip(PETSC_COMM_WORLD));
  PetscCall(test_bad(PETSC_COMM_WORLD));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_io_safetensors: ok\n"));
  PetscCall(PetscFinalize());
  return 0;
}

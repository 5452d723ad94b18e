static const char help[] = "Model files: InflModelSave / InflModelLoad round trip (parameters and hash), F64 weights converted,\n"
                           "and bad model files give one error on every rank naming the file and the tensor.  Model types:\n"
                           "the type comes from the file, unknown types are refused, a GPT-2 directory or a file with\n"
                           "config.json beside it is read as gpt2, a type without products says so.\n";
#include "io/check.h"
#include "nn/modelimpl.h"
#include <infl/model.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

/* A model type with no operations beyond what every type must have: the optional products are NULL. */
static PetscErrorCode create_bare(InflModel model)
{
  PetscFunctionBegin;
  model->data = NULL;
  PetscFunctionReturn(0);
}

static const PetscInt dims[4] = {7, 5, 4, 3};

/* The tensors of a 7,5,4,3 model (from `model`), writable copies; tensor k is layer k/2, weight (k even) or bias. */
typedef struct {
  InflTensor t[6];
  char       names[6][32];
  float      data[6][64];
} Tensors;

static PetscErrorCode tensors_from_model(InflModel model, Tensors *T)
{
  InflLinear *ly;

  PetscFunctionBegin;
  PetscCall(InflModelGetLayers(model, NULL, &ly));
  for (int k = 0; k < 6; k++) {
    const InflLinear *L = &ly[k / 2];
    int64_t           n = k % 2 ? L->dout : (int64_t)L->dout * L->din;
    PetscCall(PetscSNPrintf(T->names[k], 32, "layers.%d.%s", k / 2, k % 2 ? "bias" : "weight"));
    PetscCall(PetscArraycpy(T->data[k], k % 2 ? L->b : L->W, n));
    T->t[k] = (InflTensor){.name = T->names[k], .dtype = INFL_F32, .ndim = k % 2 ? 1 : 2, .shape = {L->dout, k % 2 ? 0 : L->din}, .numel = n, .data = T->data[k]};
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode write_model(MPI_Comm comm, const char path[], PetscInt nt, const InflTensor t[], const char arch[], const char dims_s[])
{
  const char *keys[3] = {"architecture", "dims", "activation"}, *vals[3] = {arch, dims_s, "tanh"};

  PetscFunctionBegin;
  PetscCall(InflSafetensorsWrite(comm, path, nt, t, 3, keys, vals));
  PetscFunctionReturn(0);
}

/* Loading `path` must fail on every rank with a message containing the file name and each of expect[]. */
static PetscErrorCode expect_load_fails(MPI_Comm comm, const char path[], const char what[], const char *expect1, const char *expect2)
{
  InflModel m;

  PetscFunctionBegin;
  PetscCall(InflModelCreate(comm, &m));
  EXPECT_FAIL(comm, InflModelLoad(m, path), path, what);
  if (expect1) EXPECT_FAIL(comm, InflModelLoad(m, path), expect1, what);
  if (expect2) EXPECT_FAIL(comm, InflModelLoad(m, path), expect2, what);
  PetscCall(InflModelDestroy(&m));
  PetscCall(PetscPrintf(comm, "bad file \"%s\": fails on every rank, names the file%s%s%s%s\n", what, expect1 ? " and \"" : "", expect1 ? expect1 : "", expect1 ? "\"" : "", expect2 ? " ..." : ""));
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm    comm;
  InflModel   model, back;
  Tensors     T;
  PetscMPIInt size, rank;
  char        path[PETSC_MAX_PATH_LEN], bad[PETSC_MAX_PATH_LEN];
  const char *h1, *h2, *act;
  float      *p1, *p2;
  int64_t     n1, n2;
  PetscInt    L;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  /* file names per rank count: ctest may run the np variants at the same time */
  PetscCall(PetscSNPrintf(path, sizeof(path), "nn_file_np%d.safetensors", (int)size));
  PetscCall(PetscSNPrintf(bad, sizeof(bad), "nn_file_bad_np%d.safetensors", (int)size));

  /* round trip */
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, 4, dims, INFL_ACT_TANH, 21));
  PetscCall(InflModelSave(model, path));
  PetscCall(InflModelCreate(comm, &back));
  PetscCall(InflModelLoad(back, path));
  PetscCall(InflModelGetParameters(model, &n1, &p1, NULL));
  PetscCall(InflModelGetParameters(back, &n2, &p2, NULL));
  EXPECT(n1 == n2 && n1 == 5 * 8 + 4 * 6 + 3 * 5, "parameter count %" PRId64 " after loading, %" PRId64 " saved", n2, n1);
  EXPECT(!memcmp(p1, p2, sizeof(float) * n1), "parameters changed in the save/load round trip");
  PetscCall(InflModelGetLayers(back, &L, NULL));
  EXPECT(L == 3, "%d layers after loading", (int)L);
  PetscCall(InflModelGetActivationName(back, &act));
  EXPECT(!strcmp(act, "tanh"), "activation %s after loading, tanh saved", act);
  PetscCall(InflModelGetHash(model, &h1));
  PetscCall(InflModelGetHash(back, &h2));
  EXPECT(!strcmp(h1, h2), "hash %s after loading, %s saved", h2, h1);
  /* the hash follows the parameters (changed after InflModelGetParameters, which marks the hash stale) */
  PetscCall(InflModelGetParameters(back, NULL, &p2, NULL));
  p2[3] += 1;
  PetscCall(InflModelGetHash(back, &h2));
  EXPECT(strcmp(h1, h2), "hash did not change with a parameter");
  PetscCall(PetscPrintf(comm, "round trip: parameters bitwise equal, hash %.16s... equal\n", h1));

  /* F64 weights are accepted and converted */
  PetscCall(tensors_from_model(model, &T));
  {
    double w64[64];
    for (int i = 0; i < T.t[2].numel; i++) w64[i] = T.data[2][i];
    T.t[2].dtype = INFL_F64;
    T.t[2].data  = w64;
    PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,5,4,3"));
    PetscCall(InflModelLoad(back, bad));
    PetscCall(InflModelGetParameters(back, NULL, &p2, NULL));
    EXPECT(!memcmp(p1, p2, sizeof(float) * n1), "F64 weights not converted to the same floats");
    PetscCall(InflModelGetHash(back, &h2));
    EXPECT(!strcmp(h1, h2), "hash of a model read from F64 weights differs");
  }

  /* bad files */
  PetscCall(tensors_from_model(model, &T));
  T.t[2].shape[1] = 4; /* layers.1.weight (4, 5) declared (4, 4)... */
  T.t[2].shape[0] = 5; /* ...as (5, 4) */
  PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,5,4,3"));
  PetscCall(expect_load_fails(comm, bad, "wrong shape", "layers.1.weight", "[5, 4]"));

  PetscCall(tensors_from_model(model, &T));
  T.t[4].dtype = INFL_F16; /* layers.2.weight (3, 4): 12 halves */
  PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,5,4,3"));
  PetscCall(expect_load_fails(comm, bad, "F16 weight", "layers.2.weight", "F16"));

  PetscCall(tensors_from_model(model, &T));
  T.data[0][13] = NAN;
  PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,5,4,3"));
  PetscCall(expect_load_fails(comm, bad, "NaN in a weight", "layers.0.weight", "non-finite"));

  PetscCall(tensors_from_model(model, &T));
  T.data[3][2] = INFINITY;
  PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,5,4,3"));
  PetscCall(expect_load_fails(comm, bad, "Inf in a bias", "layers.1.bias", "non-finite"));

  PetscCall(tensors_from_model(model, &T));
  PetscCall(write_model(comm, bad, 6, T.t, "transformer", "7,5,4,3"));
  PetscCall(expect_load_fails(comm, bad, "unknown architecture", "transformer", NULL));

  PetscCall(write_model(comm, bad, 5, T.t, "mlp", "7,5,4,3")); /* no layers.2.bias */
  PetscCall(expect_load_fails(comm, bad, "missing tensor", "layers.2.bias", "missing"));

  PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,6,4,3")); /* dims do not match the tensors */
  PetscCall(expect_load_fails(comm, bad, "dims not matching the tensors", "layers.0.weight", "7,6,4,3"));

  PetscCall(write_model(comm, bad, 6, T.t, "mlp", "7,5,x,3"));
  PetscCall(expect_load_fails(comm, bad, "malformed dims", "7,5,x,3", NULL));

  {
    const char *keys[2] = {"architecture", "dims"}, *vals[2] = {"mlp", "7,5,4,3"};
    const char *keys3[3] = {"architecture", "dims", "activation"}, *vals3[3] = {"mlp", "7,5,4,3", "swish"};
    PetscCall(InflSafetensorsWrite(comm, bad, 6, T.t, 3, keys3, vals3));
    PetscCall(expect_load_fails(comm, bad, "unknown activation", "swish", NULL));
    PetscCall(InflSafetensorsWrite(comm, bad, 6, T.t, 1, keys, vals)); /* no dims */
    PetscCall(expect_load_fails(comm, bad, "no dims metadata", "dims", NULL));
    PetscCall(InflSafetensorsWrite(comm, bad, 6, T.t, 0, NULL, NULL)); /* no metadata */
    PetscCall(expect_load_fails(comm, bad, "no architecture metadata", "architecture", NULL));
  }
  PetscCall(expect_load_fails(comm, "nn_file_does_not_exist.safetensors", "missing file", NULL, NULL));

  /* types */
  {
    InflModel   m;
    const char *type;
    char        dir[PETSC_MAX_PATH_LEN], cfg[PETSC_MAX_PATH_LEN + 16], file[PETSC_MAX_PATH_LEN + 32];
    double      v[64] = {0}, u[64] = {0};
    float       xin[7] = {0};
    PetscCall(InflModelGetType(back, &type));
    EXPECT(!strcmp(type, "mlp"), "type \"%s\" after loading an MLP file", type);
    PetscCall(InflModelCreate(comm, &m));
    PetscCall(InflModelGetType(m, &type));
    EXPECT(!strcmp(type, ""), "a new model has type \"%s\", expected none", type);
    EXPECT_FAIL(comm, InflModelSetType(m, "transformer"), "unknown model type \"transformer\"; this build has: mlp, gpt2", "unknown type");
    /* gpt2 is a type of token-sequence models: before loading it has no parameters; row verbs name the sequence verb */
    PetscCall(InflModelSetType(m, "gpt2"));
    PetscCall(InflModelGetType(m, &type));
    EXPECT(!strcmp(type, "gpt2"), "type \"%s\" after InflModelSetType(gpt2)", type);
    EXPECT_FAIL(comm, InflModelForward(m, 1, xin, (float *)u), "model type gpt2 consumes token sequences, not rows of features; use InflModelSequenceLoss", "row verb on gpt2");
    EXPECT_FAIL(comm, InflModelGetHash(m, &h2), "the gpt2 model has no parameters; load it", "gpt2 hash before loading");
    /* a Hugging Face directory (config.json inside) and a safetensors file without architecture beside one */
    PetscCall(PetscSNPrintf(dir, sizeof(dir), "nn_file_hf_np%d", (int)size));
    PetscCall(PetscSNPrintf(cfg, sizeof(cfg), "%s/config.json", dir));
    PetscCall(PetscSNPrintf(file, sizeof(file), "%s/model.safetensors", dir));
    if (rank == 0) {
      FILE *f;
      mkdir(dir, 0755);
      f = fopen(cfg, "w");
      PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot write %s", cfg);
      fputs("{\"model_type\": \"gpt2\"}\n", f);
      fclose(f);
    }
    PetscCallMPI(MPI_Barrier(comm));
    EXPECT_FAIL(comm, InflModelLoad(m, dir), "config.json: GPT-2 config key \"n_embd\" is missing", "GPT-2 directory read as gpt2");
    PetscCall(InflSafetensorsWrite(comm, file, 6, T.t, 0, NULL, NULL));
    EXPECT_FAIL(comm, InflModelLoad(m, file), "config.json: GPT-2 config key \"n_embd\" is missing", "file beside config.json read as gpt2");
    /* an MLP file beside config.json is still an MLP (its metadata names the architecture) */
    PetscCall(InflModelSave(model, file));
    PetscCall(InflModelLoad(m, file));
    PetscCall(InflModelGetHash(m, &h2));
    EXPECT(!strcmp(h1, h2), "an MLP file beside config.json loads with hash %s, expected %s", h2, h1);
    PetscCallMPI(MPI_Barrier(comm));
    if (rank == 0) {
      remove(file);
      remove(cfg);
      rmdir(dir);
    }
    /* a type without the optional products: the public wrappers name the type and the way out */
    PetscCall(InflModelRegister("bare", create_bare));
    PetscCall(InflModelSetType(m, "bare"));
    PetscCall(InflModelGetType(m, &type));
    EXPECT(!strcmp(type, "bare"), "type \"%s\" after InflModelSetType(bare)", type);
    EXPECT_FAIL(comm, InflModelGaussNewtonProduct(m, 1, xin, v, u), "model type bare has no Gauss-Newton product; use -ihvp_curvature empirical", "no Gauss-Newton product");
    EXPECT_FAIL(comm, InflModelJacobianVectorProduct(m, 1, xin, v, u, NULL), "model type bare has no Jacobian-vector product", "no Jacobian-vector product");
    EXPECT_FAIL(comm, InflModelSetUpMLP(m, 4, dims, INFL_ACT_TANH, 21), "InflModelSetUpMLP on a model of type bare", "SetUpMLP on another type");
    EXPECT_FAIL(comm, InflModelForward(m, 1, xin, (float *)u), "model type bare has no operation forward", "missing required operation");
    /* and back to an MLP by loading a file */
    PetscCall(InflModelLoad(m, path));
    PetscCall(InflModelGetHash(m, &h2));
    EXPECT(!strcmp(h1, h2), "an MLP loaded into a model of type bare has hash %s, expected %s", h2, h1);
    PetscCall(InflModelDestroy(&m));
    PetscCall(PetscPrintf(comm, "types: mlp from the file, unknown type refused, gpt2 from a directory or a file beside config.json, optional products missing say so\n"));
  }

  /* a model object stays usable after a failed load */
  PetscCall(InflModelLoad(back, path));
  PetscCall(InflModelGetHash(back, &h2));
  EXPECT(!strcmp(h1, h2), "reloading after failures gives hash %s, expected %s", h2, h1);

  PetscCall(InflModelDestroy(&model));
  PetscCall(InflModelDestroy(&back));
  PetscCallMPI(MPI_Barrier(comm));
  if (rank == 0) {
    remove(path);
    remove(bad);
  }
  PetscCall(PetscPrintf(comm, "test_nn_file: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

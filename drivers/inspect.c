/* infl inspect: a summary of an infl HDF5 file or a model file. */
#include "driver.h"
#include <string.h>
#include <sys/stat.h>

static herr_t print_object(hid_t obj, const char *name, const H5O_info_t *info, void *ctx)
{
  if (info->type == H5O_TYPE_DATASET) {
    hid_t   d = H5Dopen2(obj, name, H5P_DEFAULT), s = H5Dget_space(d), t = H5Dget_type(d);
    hsize_t dims[8];
    int     nd = H5Sget_simple_extent_dims(s, dims, NULL);
    printf("  /%s  (", name);
    for (int i = 0; i < nd; i++) printf(i ? ", %llu" : "%llu", (unsigned long long)dims[i]);
    printf(") %s\n", H5Tget_class(t) == H5T_FLOAT ? (H5Tget_size(t) == 4 ? "float32" : "float64") : "integer");
    H5Tclose(t);
    H5Sclose(s);
    H5Dclose(d);
  }
  return 0;
}

static herr_t print_attr(hid_t loc, const char *name, const H5A_info_t *ainfo, void *ctx)
{
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT), t = H5Aget_type(a);
  if (H5Tget_class(t) == H5T_STRING) {
    char value[4096] = "";
    InflH5GetAttrString(loc, "/", name, value, sizeof(value)); /* attributes of the root group */
    if (strlen(value) > 200) strcpy(value + 197, "...");
    for (char *p = value; *p; p++) if (*p == '\n') *p = ' ';
    printf("  %s = %s\n", name, value);
  } else if (H5Tget_class(t) == H5T_FLOAT) {
    double v = 0;
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    printf("  %s = %g\n", name, v);
  } else {
    long long v = 0;
    H5Aread(a, H5T_NATIVE_LLONG, &v);
    printf("  %s = %lld\n", name, v);
  }
  H5Tclose(t);
  H5Aclose(a);
  return 0;
}

PetscErrorCode InflDriverInspect(MPI_Comm comm, PetscBool help)
{
  char        path[PETSC_MAX_PATH_LEN];
  size_t      len;
  PetscMPIInt rank;
  PetscBool   is_model;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-file", "an infl HDF5 output or a model (.safetensors, or a GPT-2 directory)", path, sizeof(path), PETSC_TRUE, help));
  if (help) PetscFunctionReturn(0);
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscStrlen(path, &len));
  { /* a model: a .safetensors file, or a directory (a GPT-2: config.json, model.safetensors) */
    struct stat st;
    int         dir = rank == 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    PetscCallMPI(MPI_Bcast(&dir, 1, MPI_INT, 0, comm));
    is_model = dir || (len > 12 && !strcmp(path + len - 12, ".safetensors")) ? PETSC_TRUE : PETSC_FALSE;
  }
  if (is_model) {
    InflModel model;
    PetscCall(InflModelCreate(comm, &model));
    PetscCall(InflModelLoad(model, path));
    PetscCall(InflModelView(model, NULL));
    PetscCall(InflModelDestroy(&model));
    PetscFunctionReturn(0);
  }
  {
    hid_t file;
    PetscCall(InflH5Open(comm, path, PETSC_FALSE, &file));
    if (rank == 0) {
      printf("%s\n attributes:\n", path);
      H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, NULL, print_attr, NULL);
      printf(" datasets:\n");
      H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, print_object, NULL, H5O_INFO_BASIC);
      fflush(stdout);
    }
    PetscCall(InflH5Close(&file));
  }
  PetscFunctionReturn(0);
}

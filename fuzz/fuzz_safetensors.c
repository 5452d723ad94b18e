/* libFuzzer target: InflSafetensorsRead on arbitrary bytes. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  return fuzz_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char            path[512];
  InflSafetensors st = NULL;

  fuzz_write("model.safetensors", data, size, path, sizeof(path));
  if (!InflSafetensorsRead(PETSC_COMM_SELF, path, &st)) {
    PetscInt          n;
    const InflTensor *t;
    const char       *v;
    InflSafetensorsGetSize(st, &n);
    for (PetscInt i = 0; i < n; i++) InflSafetensorsGetIndex(st, i, &t);
    InflSafetensorsGetMetadata(st, "dims", &v);
    InflSafetensorsDestroy(&st);
  }
  return 0;
}

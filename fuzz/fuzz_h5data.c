/* libFuzzer target: InflDataOpen("h5:...") (and InflH5Open, as for -factors) on arbitrary bytes. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  return fuzz_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char     path[512], spec[600];
  InflData d = NULL;

  fuzz_write("data.h5", data, size, path, sizeof(path));
  snprintf(spec, sizeof(spec), "h5:%s", path);
  if (!InflDataOpen(PETSC_COMM_SELF, spec, 0, &d)) {
    int64_t N, dd, C;
    InflDataGetSizes(d, &N, &dd, &C);
    InflDataDestroy(&d);
  }
  return 0;
}

/* libFuzzer target: InflDataOpen("idx:...") on arbitrary bytes.  The first byte picks the layout: bit 1 set: the
 * labels file holds the same bytes as the images file, else a valid idx1 file of 3 labels; bits 2-3: the limit
 * (0..3).  The rest is the images file, raw or gzip (both seeded).  */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  return fuzz_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const uint8_t labels3[] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
  char                 path[512], prefix[512], spec[600];
  InflData             d = NULL;
  uint8_t              mode;

  if (size < 1) return 0;
  mode = data[0];
  data++;
  size--;
  fuzz_write("d-images-idx3-ubyte", data, size, path, sizeof(path));
  if (mode & 2) fuzz_write("d-labels-idx1-ubyte", data, size, path, sizeof(path));
  else fuzz_write("d-labels-idx1-ubyte", labels3, sizeof(labels3), path, sizeof(path));
  snprintf(prefix, sizeof(prefix), "%s/d", fuzz_dir);
  snprintf(spec, sizeof(spec), "idx:%s", prefix);
  if (!InflDataOpen(PETSC_COMM_SELF, spec, (mode >> 2) & 3, &d)) {
    int64_t N, dd, C;
    InflDataGetSizes(d, &N, &dd, &C);
    if (N > 0 && dd > 0 && dd < (1 << 20)) {
      float  *x = malloc(sizeof(float) * (size_t)dd);
      int64_t y, i = N - 1;
      InflDataGetExamples(d, 1, &i, x, &y);
      free(x);
    }
    InflDataDestroy(&d);
  }
  return 0;
}

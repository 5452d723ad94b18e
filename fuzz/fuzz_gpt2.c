/* libFuzzer target: InflGPT2Load on an arbitrary config.json and model.safetensors, then a forward pass.
 * Input: bytes 0-1 are the length n of the config.json (little-endian, clamped to what is there); the next n bytes
 * are config.json, the rest model.safetensors.  A model that loads must have the sizes its config states, finite
 * parameters, and give finite logits and losses on a short sequence (abort otherwise). */
#include "fuzz_common.h"
#include <infl/gpt2.h>
#include <math.h>

/* abort with the reason on stderr (libFuzzer keeps the input) */
#define FUZZ_REQUIRE(cond) \
  do { \
    if (!(cond)) { \
      fprintf(stderr, "fuzz_gpt2: %s does not hold\n", #cond); \
      abort(); \
    } \
  } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  return fuzz_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char     path[512];
  size_t   n;
  InflGPT2 g = NULL;

  if (size < 2) return 0;
  n = (size_t)data[0] | ((size_t)data[1] << 8);
  data += 2;
  size -= 2;
  if (n > size) n = size;
  fuzz_write("config.json", data, n, path, sizeof(path));
  fuzz_write("model.safetensors", data + n, size - n, path, sizeof(path));
  FUZZ_REQUIRE(!InflGPT2Create(PETSC_COMM_SELF, &g));
  if (!InflGPT2Load(g, fuzz_dir)) {
    InflGPT2Config cfg;
    int64_t        np, expect;
    float         *params;
    PetscInt       T, offsets[2];
    int32_t        tokens[8];
    double         loss[8], seq_loss[1];
    FUZZ_REQUIRE(!InflGPT2GetConfig(g, &cfg) && !InflGPT2GetParameters(g, &np, &params, NULL));
    expect = (int64_t)cfg.vocab_size * cfg.n_embd + (int64_t)cfg.n_positions * cfg.n_embd + 2 * (int64_t)cfg.n_embd + (int64_t)cfg.n_layer * (12 * (int64_t)cfg.n_embd * cfg.n_embd + 13 * (int64_t)cfg.n_embd);
    FUZZ_REQUIRE(np == expect);
    for (int64_t i = 0; i < np; i++)
      FUZZ_REQUIRE(isfinite(params[i]));
    T = PetscMin(8, cfg.n_positions);
    for (PetscInt t = 0; t < T; t++) tokens[t] = (int32_t)((7 * t + 3) % cfg.vocab_size);
    offsets[0] = 0;
    offsets[1] = T;
    /* the parameters are finite but may be huge: a non-finite loss must then be an error, never a value */
    if (!InflGPT2Forward(g, 1, offsets, tokens, NULL, NULL, NULL, loss)) {
      for (PetscInt t = 0; t + 1 < T; t++)
        FUZZ_REQUIRE(isfinite(loss[t]));
    }
    FUZZ_REQUIRE(!InflGPT2ZeroGrad(g));
    if (!InflGPT2LossBackward(g, 1, offsets, tokens, NULL, seq_loss))
      FUZZ_REQUIRE(isfinite(seq_loss[0]));
  }
  InflGPT2Destroy(&g);
  return 0;
}

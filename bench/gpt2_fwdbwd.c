/* GPT-2 forward + backward speed on one rank: tokens/s and GFLOP/s of InflGPT2LossBackward (training) and
 * InflGPT2Capture (the EK-FAC pass: no parameter gradients), GPT-2-small width on a few layers.
 *   bench_gpt2_fwdbwd [-n_layer 2] [-n_embd 768] [-n_head 12] [-vocab 50257] [-batch 2] [-seq 128] [-reps 3]
 *                     [-double]
 * Run with OPENBLAS_NUM_THREADS=1 for a single-thread figure (bench/gpt2_torch.py takes the same sizes).
 * Flops (multiply-add = 2) are the GEMM work: per token 2 sum_l din dout (the Conv1D layers) + 2 C V (the tied head)
 * forward, and 4 T C per layer for the attention scores and the weighted sum (the full T x T square, as computed);
 * the backward pass is twice the forward; a capture skips the weight gradients (forward + input gradients). */
#include <infl/gpt2.h>
#include <time.h>

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
  InflGPT2        g;
  InflGPT2Config  cfg = {.n_embd = 768, .n_layer = 2, .n_head = 12, .vocab_size = 50257, .n_positions = 1024, .layer_norm_epsilon = 1e-5, .activation = INFL_GPT2_GELU_NEW};
  PetscInt        B = 2, T = 128, reps = 3, *off, N;
  PetscBool       dbl = PETSC_FALSE;
  int32_t        *tokens;
  float          *params;
  int64_t         n;
  double          tlb = 1e30, tcap = 1e30, fl_fwd, fl_lin, fl_att, fl_head, seq[64];
  InflCapture    *cap;

  PetscCall(PetscInitialize(&argc, &argv, NULL, "GPT-2 forward + backward benchmark\n"));
  PetscOptionsBegin(PETSC_COMM_WORLD, NULL, "GPT-2 benchmark", NULL);
  PetscCall(PetscOptionsInt("-n_layer", "blocks", NULL, cfg.n_layer, &cfg.n_layer, NULL));
  PetscCall(PetscOptionsInt("-n_embd", "width", NULL, cfg.n_embd, &cfg.n_embd, NULL));
  PetscCall(PetscOptionsInt("-n_head", "heads", NULL, cfg.n_head, &cfg.n_head, NULL));
  PetscCall(PetscOptionsInt("-vocab", "vocabulary", NULL, cfg.vocab_size, &cfg.vocab_size, NULL));
  PetscCall(PetscOptionsInt("-batch", "sequences per batch", NULL, B, &B, NULL));
  PetscCall(PetscOptionsInt("-seq", "tokens per sequence", NULL, T, &T, NULL));
  PetscCall(PetscOptionsInt("-reps", "repetitions (best of)", NULL, reps, &reps, NULL));
  PetscCall(PetscOptionsBool("-double", "double precision", NULL, dbl, &dbl, NULL));
  PetscOptionsEnd();
  PetscCheck(B >= 1 && B <= 64 && T >= 2 && T <= cfg.n_positions, PETSC_COMM_WORLD, PETSC_ERR_ARG_OUTOFRANGE, "-batch must be in [1, 64] and -seq in [2, %d]", (int)cfg.n_positions);
  PetscCall(InflGPT2Create(PETSC_COMM_SELF, &g));
  PetscCall(InflGPT2SetUp(g, &cfg));
  PetscCall(InflGPT2SetPrecision(g, dbl ? INFL_PREC_DOUBLE : INFL_PREC_SINGLE));
  PetscCall(InflGPT2GetParameters(g, &n, &params, NULL));
  for (int64_t i = 0; i < n; i++) params[i] = (float)(0.02 * InflNormal(1, (uint64_t)i, INFL_STREAM_INIT));
  {
    const char *ln[] = {"ln_1.weight", "ln_2.weight"};
    float      *p;
    int64_t     m;
    for (PetscInt l = 0; l < cfg.n_layer; l++)
      for (int k = 0; k < 2; k++) {
        char name[64];
        PetscCall(PetscSNPrintf(name, sizeof(name), "h.%d.%s", (int)l, ln[k]));
        PetscCall(InflGPT2GetTensor(g, name, &p, NULL, &m, NULL, NULL));
        for (int64_t i = 0; i < m; i++) p[i] = 1;
      }
    PetscCall(InflGPT2GetTensor(g, "ln_f.weight", &p, NULL, &m, NULL, NULL));
    for (int64_t i = 0; i < m; i++) p[i] = 1;
  }
  N = B * T;
  PetscCall(PetscMalloc2(B + 1, &off, N, &tokens));
  for (PetscInt b = 0; b <= B; b++) off[b] = b * T;
  for (PetscInt t = 0; t < N; t++) tokens[t] = (int32_t)(InflUniform(2, (uint64_t)t, 0) * cfg.vocab_size);
  PetscCall(InflGPT2CaptureCreate(g, B, N, &cap));
  for (PetscInt r = 0; r <= reps; r++) { /* r = 0 warms up */
    double t0 = now(), t1;
    PetscCall(InflGPT2ZeroGrad(g));
    PetscCall(InflGPT2LossBackward(g, B, off, tokens, NULL, seq));
    t1 = now();
    PetscCall(InflGPT2Capture(g, B, off, tokens, NULL, cap));
    if (r > 0) {
      tlb  = PetscMin(tlb, t1 - t0);
      tcap = PetscMin(tcap, now() - t1);
    }
  }
  fl_lin  = 2.0 * N * cfg.n_layer * 12.0 * cfg.n_embd * cfg.n_embd;
  fl_head = 2.0 * N * cfg.n_embd * cfg.vocab_size;
  fl_att  = 4.0 * B * T * T * cfg.n_embd * cfg.n_layer;
  fl_fwd  = fl_lin + fl_head + fl_att;
  PetscCall(PetscPrintf(PETSC_COMM_SELF, "gpt2 %s n_layer %d n_embd %d n_head %d vocab %d batch %d x %d tokens: loss %.4f per token\n", dbl ? "double" : "single", (int)cfg.n_layer, (int)cfg.n_embd, (int)cfg.n_head, (int)cfg.vocab_size, (int)B, (int)T, (seq[0] + (B > 1 ? seq[1] : 0)) / ((T - 1) * PetscMin(B, 2))));
  PetscCall(PetscPrintf(PETSC_COMM_SELF, "infl_gpt2_train   %.4f s  %.0f tokens/s  %.1f GFLOP/s (%.1f GFLOP)\n", tlb, N / tlb, 3 * fl_fwd / tlb * 1e-9, 3 * fl_fwd * 1e-9));
  /* capture: forward, head backward (input only), no weight gradients: fwd + (fwd of the input-gradient GEMMs) */
  PetscCall(PetscPrintf(PETSC_COMM_SELF, "infl_gpt2_capture %.4f s  %.0f tokens/s  %.1f GFLOP/s (%.1f GFLOP)\n", tcap, N / tcap, (2 * fl_fwd + fl_att) / tcap * 1e-9, (2 * fl_fwd + fl_att) * 1e-9));
  PetscCall(InflCaptureDestroy(&cap));
  PetscCall(PetscFree2(off, tokens));
  PetscCall(InflGPT2Destroy(&g));
  PetscCall(PetscFinalize());
  return 0;
}

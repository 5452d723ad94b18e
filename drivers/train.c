/* infl train: train a model, data-parallel: an MLP on rows of features, a GPT-2 on token sequences. */
#include "driver.h"
#include <infl/checkpoint.h>
#include <infl/gpt2.h>
#include <string.h>

/* One line saying what the run does (both model kinds). */
static PetscErrorCode print_recipe(MPI_Comm comm, const InflTrainOptions *topt, int64_t N, const char unit[])
{
  const char *optn[] = {"adam", "sgd", "adamw"};
  char        sched[256] = "";

  PetscFunctionBegin;
  if (topt->optimizer != INFL_OPT_SGD) PetscCall(PetscSNPrintf(sched, sizeof(sched), ", betas %g %g", topt->beta1, topt->beta2));
  if (topt->warmup > 0) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", warm-up %d steps", (int)topt->warmup));
  if (topt->schedule == INFL_SCHEDULE_COSINE) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", cosine to %g", topt->lr_min));
  if (topt->clip > 0) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", clip %g", topt->clip));
  if (topt->weight_decay > 0) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", weight decay %g (%s)", topt->weight_decay, topt->decay_matrices_only ? "matrices" : "all parameters"));
  PetscCall(PetscPrintf(comm, "training on %" PRId64 " %s: %s, %d epochs, batch %d, lr %g%s\n", N, unit, optn[topt->optimizer], (int)topt->epochs, (int)topt->batch, topt->lr, sched));
  PetscFunctionReturn(0);
}

/* Remove OUT.partial and report what was written. */
static PetscErrorCode finish(MPI_Comm comm, InflModel model, const char out[])
{
  char        partial[PETSC_MAX_PATH_LEN + 16];
  const char *hash;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
  PetscCall(InflRemoveAll(comm, partial));
  PetscCall(InflModelGetHash(model, &hash));
  PetscCall(PetscPrintf(comm, "wrote %s (model sha256 %.16s...)\n", out, hash));
  PetscFunctionReturn(0);
}

/* A GPT-2 of the -gpt2_* options on token data (text:, tokens:), saved as a Hugging Face directory. */
static PetscErrorCode train_gpt2(MPI_Comm comm, InflData train, InflData test, InflTrainOptions *topt, char out[], PetscBool overwrite)
{
  InflModel model;
  int64_t   N, ntok;
  size_t    len;
  PetscBool isfile;

  PetscFunctionBegin;
  PetscCall(PetscStrlen(out, &len));
  while (len > 1 && out[len - 1] == '/') out[--len] = 0; /* OUT/ names the directory OUT */
  PetscCall(PetscStrendswith(out, ".safetensors", &isfile));
  PetscCall(DriverNewGPT2(comm, topt->seed, &model)); /* -model_precision, -gpt2_* */
  { /* text without tokenizer files is read byte by byte: say so in terms of this command's options */
    InflData    d[2]     = {train, test};
    const char *names[2] = {"-train", "-test"};
    PetscCall(DriverCheckTextVocab(comm, model, 2, d, names, NULL));
  }
  PetscCall(InflModelCheckData(model, train)); /* reads the corpus for this model (the -tokens_* options too) */
  if (test) PetscCall(InflModelCheckData(model, test));
  PetscCall(DriverCheckUnusedOptions(comm));
  if (isfile) PetscCall(DriverCheckOutput(comm, out, overwrite));
  else PetscCall(DriverCheckOutputDirectory(comm, out, overwrite));
  PetscCall(PetscPrintf(comm, "initialized with seed %d (before training): ", (int)topt->seed));
  PetscCall(InflModelView(model, NULL));
  PetscCall(InflDataGetSizes(train, &N, NULL, NULL));
  {
    int64_t        start, count;
    const int64_t *off;
    PetscCall(InflDataGetSequenceShard(train, &start, &count, NULL, &off));
    ntok = off[count];
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &ntok, 1, MPI_INT64_T, MPI_SUM, comm));
    PetscCall(PetscPrintf(comm, "train data: %" PRId64 " sequences (windows), %" PRId64 " tokens\n", N, ntok));
  }
  PetscCall(print_recipe(comm, topt, N, "sequences"));
  PetscCall(PetscStrncpy(topt->checkpoint, out, sizeof(topt->checkpoint)));
  PetscCall(InflModelTrain(model, train, test, topt));
  PetscCall(InflModelSave(model, out));
  { /* the -tokenizer files beside the model, where the later stages look for them */
    char tokdir[PETSC_MAX_PATH_LEN] = "", dest[PETSC_MAX_PATH_LEN];
    PetscCall(PetscOptionsGetString(NULL, NULL, "-tokenizer", tokdir, sizeof(tokdir), NULL));
    PetscCall(PetscStrncpy(dest, out, sizeof(dest)));
    if (isfile) { /* FILE.safetensors: its directory */
      char *slash = strrchr(dest, '/');
      if (slash) slash[slash == dest ? 1 : 0] = 0;
      else PetscCall(PetscStrncpy(dest, ".", sizeof(dest)));
    }
    PetscCall(InflTokenizerCopyFiles(comm, tokdir, dest));
    if (tokdir[0]) PetscCall(PetscPrintf(comm, "copied the tokenizer files of %s into %s\n", tokdir, dest));
  }
  PetscCall(finish(comm, model, out));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

static PetscErrorCode train_mlp(MPI_Comm comm, InflData train, InflData test, InflTrainOptions *topt, const char out[], PetscBool overwrite, PetscInt dims[], PetscInt nd, PetscBool dset, InflActivation act)
{
  InflModel model;
  int64_t   N;
  double    tl, ta;

  PetscFunctionBegin;
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(InflDataGetSizes(train, &N, NULL, NULL));
  PetscCall(DriverMLPDims(comm, train, dims, &nd, dset));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, nd, dims, act, topt->seed));
  PetscCall(PetscPrintf(comm, "initialized with seed %d (before training): ", (int)topt->seed)); /* the hash is the initial one */
  PetscCall(InflModelView(model, NULL));
  PetscCall(print_recipe(comm, topt, N, "examples"));
  PetscCall(PetscStrncpy(topt->checkpoint, out, sizeof(topt->checkpoint)));
  PetscCall(InflModelTrain(model, train, test, topt));
  PetscCall(InflModelEvaluate(model, train, &tl, &ta));
  PetscCall(PetscPrintf(comm, "final: train loss %.4f accuracy %.4f\n", tl, ta));
  if (test) {
    PetscCall(InflModelEvaluate(model, test, &tl, &ta));
    PetscCall(PetscPrintf(comm, "final: test loss %.4f accuracy %.4f\n", tl, ta));
  }
  PetscCall(InflModelSave(model, out));
  PetscCall(finish(comm, model, out));
  PetscCall(InflModelDestroy(&model));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverTrain(MPI_Comm comm, PetscBool help)
{
  char             out[PETSC_MAX_PATH_LEN], acts[16] = "relu";
  PetscInt         dims[64] = {0}, nd = 64;
  PetscBool        dset, aset, overwrite = PETSC_FALSE;
  InflData         train, test;
  InflTrainOptions topt;
  const char      *actnames[] = {"relu", "tanh", "gelu", "identity"};
  PetscInt         iact = 0;
  InflDataContent  kind = INFL_DATA_ROWS, tkind;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-out", "where to write the trained model: an MLP's safetensors file, or a GPT-2's directory (config.json, model.safetensors; or FILE.safetensors with config.json beside it)", out, sizeof(out), PETSC_TRUE, help));
  PetscOptionsBegin(comm, NULL, "infl train", NULL);
  PetscCall(PetscOptionsIntArray("-model_dims", "MLP (rows data) layer sizes: input, hidden..., classes (default: input,256,256,classes)", NULL, dims, &nd, &dset));
  PetscCall(PetscOptionsEList("-model_activation", "MLP (rows data): activation between linear layers", NULL, actnames, 4, acts, &iact, &aset));
  PetscCall(PetscOptionsBool("-overwrite", "replace existing outputs", NULL, overwrite, &overwrite, NULL));
  PetscOptionsEnd();
  PetscCall(InflTrainOptionsFromOptions(comm, &topt));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "test", PETSC_FALSE, help, &test));
  if (help) { /* list the options of a new GPT-2 (token data) */
    InflModel g;
    PetscCall(InflModelCreate(comm, &g));
    PetscCall(InflModelSetType(g, "gpt2"));
    PetscCall(InflModelSetFromOptions(g));
    PetscCall(InflModelDestroy(&g));
    PetscFunctionReturn(0);
  }
  PetscCall(InflDataGetContent(train, &kind));
  if (test) {
    const char *ts, *ss;
    PetscCall(InflDataGetContent(test, &tkind));
    PetscCall(InflDataGetSpec(train, &ss));
    PetscCall(InflDataGetSpec(test, &ts));
    PetscCheck(tkind == kind, comm, PETSC_ERR_ARG_INCOMP, "infl train: -test data %s holds %s but -train data %s holds %s; give both as %s", ts, tkind == INFL_DATA_ROWS ? "rows of features" : "token sequences", ss, kind == INFL_DATA_ROWS ? "rows of features" : "token sequences", kind == INFL_DATA_ROWS ? "idx: or h5: data" : "text: or tokens: data");
  }
  if (kind == INFL_DATA_SEQUENCES) {
    PetscCheck(!dset && !aset, comm, PETSC_ERR_ARG_INCOMP, "infl train: %s is an MLP option, but the -train data are token sequences, which train a GPT-2: give its shape with -gpt2_n_layer, -gpt2_n_embd, -gpt2_n_head, -gpt2_n_positions (-help lists them)", dset ? "-model_dims" : "-model_activation");
    PetscCall(train_gpt2(comm, train, test, &topt, out, overwrite));
  } else PetscCall(train_mlp(comm, train, test, &topt, out, overwrite, dims, nd, dset, (InflActivation)iact));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&test));
  PetscFunctionReturn(0);
}

PetscErrorCode InflDriverEval(MPI_Comm comm, PetscBool help)
{
  char      path[PETSC_MAX_PATH_LEN];
  InflData  data;
  InflModel model;
  double    loss, acc;
  int64_t   N, d;
  PetscInt  batch = 8;
  PetscBool seq;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-model", "model: safetensors file (MLP) or GPT-2 directory (config.json, model.safetensors)", path, sizeof(path), PETSC_TRUE, help));
  PetscCall(DriverOpenData(comm, "data", PETSC_TRUE, help, &data));
  PetscOptionsBegin(comm, NULL, "infl eval options", NULL);
  PetscCall(PetscOptionsInt("-eval_batch", "token sequences per forward pass (sequence data)", "InflModelEvaluateSequences", batch, &batch, NULL));
  PetscOptionsEnd();
  if (help) PetscFunctionReturn(0);
  PetscCheck(batch > 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-eval_batch %d: give a positive number of sequences", (int)batch);
  PetscCall(DriverLoadModel(comm, path, &model));
  PetscCall(InflModelCheckData(model, data)); /* sequence data: reads the corpus and cuts the model's windows (and the -tokens_* options) */
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflDataGetSizes(data, &N, &d, NULL));
  PetscCall(InflModelIsSequential(model, &seq));
  if (seq) {
    double  ppl;
    int64_t ntok;
    PetscCall(InflModelEvaluateSequences(model, data, batch, &loss, &ppl, &ntok));
    PetscCall(PetscPrintf(comm, "sequences %" PRId64 "  predicted tokens %" PRId64 "  mean loss per token %.10f  perplexity %.6f\n", N, ntok, loss, ppl));
  } else {
    PetscCall(InflModelEvaluate(model, data, &loss, &acc));
    PetscCall(PetscPrintf(comm, "examples %" PRId64 "  mean loss %.6f  accuracy %.4f\n", N, loss, acc));
  }
  PetscCall(InflModelDestroy(&model));
  PetscCall(InflDataDestroy(&data));
  PetscFunctionReturn(0);
}

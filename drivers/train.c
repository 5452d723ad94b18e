/* infl train: train an MLP, data-parallel. */
#include "driver.h"
#include <infl/checkpoint.h>
#include <string.h>

PetscErrorCode InflDriverTrain(MPI_Comm comm, PetscBool help)
{
  char             out[PETSC_MAX_PATH_LEN], acts[16] = "relu";
  PetscInt         dims[64] = {0}, nd = 64;
  PetscBool        dset, overwrite = PETSC_FALSE;
  InflData         train, test;
  InflModel        model;
  InflTrainOptions topt;
  int64_t          N, d, C;
  InflActivation   act = INFL_ACT_RELU;
  const char      *actnames[] = {"relu", "tanh", "gelu", "identity"};
  PetscInt         iact = 0;
  double           tl, ta;

  PetscFunctionBegin;
  PetscCall(DriverGetString(comm, "-out", "where to write the trained model (safetensors)", out, sizeof(out), PETSC_TRUE, help));
  PetscOptionsBegin(comm, NULL, "infl train", NULL);
  PetscCall(PetscOptionsIntArray("-model_dims", "MLP layer sizes: input, hidden..., classes (default: input,256,256,classes)", NULL, dims, &nd, &dset));
  PetscCall(PetscOptionsEList("-model_activation", "activation between linear layers", NULL, actnames, 4, acts, &iact, NULL));
  PetscCall(PetscOptionsBool("-overwrite", "replace existing outputs", NULL, overwrite, &overwrite, NULL));
  PetscOptionsEnd();
  act = (InflActivation)iact;
  PetscCall(InflTrainOptionsFromOptions(&topt));
  PetscCall(DriverOpenData(comm, "train", PETSC_TRUE, help, &train));
  PetscCall(DriverOpenData(comm, "test", PETSC_FALSE, help, &test));
  if (!help) PetscCall(DriverRequireRows(comm, "infl train", train));
  if (!help) PetscCall(DriverRequireRows(comm, "infl train", test));
  if (help) PetscFunctionReturn(0);
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(DriverCheckOutput(comm, out, overwrite));
  PetscCall(InflDataGetSizes(train, &N, &d, &C));
  PetscCall(DriverMLPDims(comm, train, dims, &nd, dset));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetUpMLP(model, nd, dims, act, topt.seed));
  PetscCall(PetscPrintf(comm, "initialized with seed %d (before training): ", (int)topt.seed)); /* the hash is the initial one */
  PetscCall(InflModelView(model, NULL));
  {
    const char *optn[] = {"adam", "sgd", "adamw"};
    char        sched[128] = "";
    if (topt.warmup > 0) PetscCall(PetscSNPrintf(sched, sizeof(sched), ", warm-up %d steps", (int)topt.warmup));
    if (topt.schedule == INFL_SCHEDULE_COSINE) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", cosine to %g", topt.lr_min));
    if (topt.clip > 0) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", clip %g", topt.clip));
    if (topt.weight_decay > 0) PetscCall(PetscSNPrintf(sched + strlen(sched), sizeof(sched) - strlen(sched), ", weight decay %g (%s)", topt.weight_decay, topt.decay_matrices_only ? "matrices" : "all parameters"));
    PetscCall(PetscPrintf(comm, "training on %" PRId64 " examples: %s, %d epochs, batch %d, lr %g%s\n", N, optn[topt.optimizer], (int)topt.epochs, (int)topt.batch, topt.lr, sched));
  }
  PetscCall(PetscStrncpy(topt.checkpoint, out, sizeof(topt.checkpoint)));
  PetscCall(InflModelTrain(model, train, test, &topt));
  PetscCall(InflModelEvaluate(model, train, &tl, &ta));
  PetscCall(PetscPrintf(comm, "final: train loss %.4f accuracy %.4f\n", tl, ta));
  if (test) {
    PetscCall(InflModelEvaluate(model, test, &tl, &ta));
    PetscCall(PetscPrintf(comm, "final: test loss %.4f accuracy %.4f\n", tl, ta));
  }
  PetscCall(InflModelSave(model, out));
  {
    char partial[PETSC_MAX_PATH_LEN + 16];
    PetscCall(PetscSNPrintf(partial, sizeof(partial), "%s.partial", out));
    PetscCall(InflRemoveAll(comm, partial));
  }
  {
    const char *hash;
    PetscCall(InflModelGetHash(model, &hash));
    PetscCall(PetscPrintf(comm, "wrote %s (model sha256 %.16s...)\n", out, hash));
  }
  PetscCall(InflModelDestroy(&model));
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
  PetscCall(DriverCheckUnusedOptions(comm));
  PetscCall(InflModelCheckData(model, data)); /* sequence data: reads the corpus and cuts the model's windows */
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

/* Evaluation of a sequence model (gpt2) on token-sequence data: mean loss per predicted token and perplexity. */
#include "modelimpl.h"
#include <math.h>

/* sums[0] += the summed loss of this rank's shard, sums[1] += its predicted tokens, in batches of `batch` sequences. */
static PetscErrorCode evaluate_shard(InflModel m, InflData data, PetscInt batch, double sums[2])
{
  int64_t        count, npred = 0;
  const int32_t *tok;
  const int64_t *off;
  int64_t       *boff; /* (batch+1) offsets of one batch */
  double        *seq;  /* (batch) per-sequence losses */

  PetscFunctionBegin;
  PetscCall(InflDataGetSequenceShard(data, NULL, &count, &tok, &off));
  PetscCall(PetscMalloc2(batch + 1, &boff, batch, &seq));
  for (int64_t s0 = 0; s0 < count; s0 += batch) {
    PetscInt B = (PetscInt)PetscMin((int64_t)batch, count - s0);
    int64_t  np;
    for (PetscInt b = 0; b <= B; b++) boff[b] = off[s0 + b] - off[s0];
    PetscCall(InflModelSequenceLoss(m, B, boff, tok + off[s0], NULL, seq, &np));
    for (PetscInt b = 0; b < B; b++) sums[0] += seq[b];
    npred += np;
  }
  PetscCall(PetscFree2(boff, seq));
  sums[1] += (double)npred;
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelEvaluateSequences(InflModel m, InflData data, PetscInt batch, double *mean_loss, double *perplexity, int64_t *ntokens)
{
  double    sums[2] = {0, 0}; /* total loss, predicted tokens (exact in double below 2^53) */
  PetscBool seqmodel;

  PetscFunctionBegin;
  PetscCall(InflModelIsSequential(m, &seqmodel));
  PetscCheck(seqmodel, m->comm, PETSC_ERR_ARG_WRONG, "InflModelEvaluateSequences: model type %s reads rows; use InflModelEvaluate", m->type);
  PetscCheck(batch > 0, m->comm, PETSC_ERR_ARG_OUTOFRANGE, "evaluation batch of %d sequences: give a positive number", (int)batch);
  InflCallAll(m->comm, evaluate_shard(m, data, batch, sums)); /* an error on one rank's shard, agreed before the sum */
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, m->comm));
  PetscCheck(sums[1] > 0, m->comm, PETSC_ERR_ARG_WRONG, "the data set has no token to predict (every sequence is one token long)");
  *mean_loss = sums[0] / sums[1];
  if (perplexity) *perplexity = exp(*mean_loss);
  if (ntokens) *ntokens = (int64_t)sums[1];
  PetscFunctionReturn(0);
}

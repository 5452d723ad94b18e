/* Prompt/completion queries of a language model (-query_prompts): InflPromptsLoad parses the documented format
 * (queries separated by "%" lines, prompt and completion by a ">>>" line), and the query loss whose gradient infl
 * score preconditions is log p(completion | prompt): for every query, the loss InflScorerSetQuerySequences measured
 * (InflScorerGetQueryLoss) equals InflModelSequenceLoss of the same tokens with targets built here -- the next token
 * where it belongs to the completion, -1 on the rows that predict prompt tokens -- and differs from the loss of the
 * whole sequence.  Malformed files are errors naming the query and line.  At 1-3 ranks (the file is read by rank 0,
 * the queries preconditioned by blocks of ranks). */
static const char help[] = "Prompt/completion queries of a language model.\n";

#include <infl/score.h>
#include <math.h>
#include <stdio.h>
#include "lib/infl_test.h"

static PetscErrorCode write_file(MPI_Comm comm, const char path[], const char text[])
{
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    FILE *f = fopen(path, "w");
    EXPECT(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
  }
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

/* Keeps the message of the error where it was raised. */
static PetscErrorCode keep_message(MPI_Comm comm, int line, const char *fun, const char *file, PetscErrorCode n, PetscErrorType p, const char *mess, void *ctx)
{
  (void)comm; (void)line; (void)fun; (void)file;
  if (p == PETSC_ERROR_INITIAL && mess) snprintf((char *)ctx, 1024, "%s", mess);
  return n;
}

/* InflPromptsLoad of `text` must fail with a message containing `want`. */
static PetscErrorCode expect_error(MPI_Comm comm, const char path[], const char text[], const char want[])
{
  PetscInt       Q;
  int64_t       *off;
  int32_t       *tok, *tgt;
  char           hash[65];
  PetscErrorCode ierr;
  PetscFunctionBegin;
  PetscCall(write_file(comm, path, text));
  char           msg[1024] = "";

  PetscCall(PetscPushErrorHandler(keep_message, msg));
  ierr = InflPromptsLoad(comm, path, NULL, 256, 16, NULL, &Q, &off, &tok, &tgt, hash);
  PetscCall(PetscPopErrorHandler());
  EXPECT(ierr, "a malformed prompt file was accepted: %s", want);
  EXPECT(strstr(msg, want), "error message \"%s\" lacks \"%s\"", msg, want);
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm   comm;
  char       model_path[PETSC_MAX_PATH_LEN], text[PETSC_MAX_PATH_LEN], hash[65];
  const char *src;
  InflModel  model;
  InflData   train;
  InflEKFAC  ek;
  InflScorer sc;
  PetscInt   Q;
  int64_t   *off, *qidx;
  int32_t   *tok, *tgt;
  const double *qloss;

  PetscFunctionBeginUser;
  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  comm = PETSC_COMM_WORLD;
  src  = getenv("INFL_SOURCE_DIR");
  EXPECT(src, "INFL_SOURCE_DIR is not set (ctest sets it)");
  PetscCall(PetscSNPrintf(model_path, sizeof(model_path), "%s/tests/ref/gpt2_bytes", src));
  PetscCall(PetscSNPrintf(text, sizeof(text), "text:%s/tests/ref/gpt2_bytes_text.txt", src));
  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_DOUBLE));
  PetscCall(InflModelLoad(model, model_path));
  PetscCall(InflDataOpen(comm, text, 0, &train));
  PetscCall(InflEKFACCreate(comm, &ek));
  PetscCall(InflEKFACSetFisher(ek, INFL_FISHER_EMPIRICAL, 0));
  PetscCall(InflEKFACFit(ek, model, train));

  /* three queries; the second has a blank line in its prompt, the third ends the file without a "%" line */
  PetscCall(write_file(comm, "lmq_prompts.txt", "The cat\n>>>\n sat on\n%\n\n%\nA st\n\nitch\n>>>\n in\n%\nWhere\n>>>\n there"));
  PetscCall(InflPromptsLoad(comm, "lmq_prompts.txt", NULL, 256, 16, model_path, &Q, &off, &tok, &tgt, hash));
  EXPECT(Q == 3, "3 queries expected, got %d", (int)Q);
  const char *prompt[3] = {"The cat\n", "A st\n\nitch\n", "Where\n"}, *compl[3] = {" sat on\n", " in\n", " there"};
  {
    for (PetscInt q = 0; q < Q; q++) {
      size_t np = strlen(prompt[q]), nc = strlen(compl[q]);
      EXPECT(off[q + 1] - off[q] == (int64_t)(np + nc), "query %d has %d tokens, expected %d", (int)q, (int)(off[q + 1] - off[q]), (int)(np + nc));
      for (size_t t = 0; t < np + nc; t++) { /* byte-level: the tokens are the bytes; targets only on the completion */
        int32_t want = (int32_t)(unsigned char)(t < np ? prompt[q][t] : compl[q][t - np]);
        int32_t wt   = t + 1 >= np && t + 1 < np + nc ? (int32_t)(unsigned char)(t + 1 < np ? prompt[q][t + 1] : compl[q][t + 1 - np]) : -1;
        EXPECT(tok[off[q] + t] == want, "query %d token %d is %d, expected %d", (int)q, (int)t, (int)tok[off[q] + t], (int)want);
        EXPECT(tgt[off[q] + t] == wt, "query %d target %d is %d, expected %d", (int)q, (int)t, (int)tgt[off[q] + t], (int)wt);
      }
    }
  }

  /* the loss infl score preconditions against InflModelSequenceLoss with the masked targets built here */
  PetscCall(PetscMalloc1(Q, &qidx));
  for (PetscInt q = 0; q < Q; q++) qidx[q] = q;
  PetscCall(InflScorerCreate(comm, &sc));
  PetscCall(InflScorerSetQuerySequences(sc, model, ek, Q, off, tok, tgt, qidx));
  PetscCall(InflScorerGetQueryLoss(sc, &qloss));
  {
    double  *ref, *full;
    int32_t *mask;
    PetscCall(PetscMalloc3(Q, &ref, Q, &full, off[Q], &mask));
    for (PetscInt q = 0; q < Q; q++) {
      int64_t np = (int64_t)strlen(prompt[q]);
      for (int64_t t = off[q]; t < off[q + 1]; t++) mask[t] = (t + 1 < off[q + 1] && t + 1 - off[q] >= np) ? tok[t + 1] : -1;
    }
    PetscCall(InflModelSequenceLoss(model, Q, off, tok, mask, ref, NULL));
    PetscCall(InflModelSequenceLoss(model, Q, off, tok, NULL, full, NULL));
    for (PetscInt q = 0; q < Q; q++) {
      PetscCall(PetscPrintf(comm, "query %d: completion loss %.12g (reference %.12g), whole sequence %.12g\n", (int)q, qloss[q], ref[q], full[q]));
      EXPECT(fabs(qloss[q] - ref[q]) <= 1e-12 * fabs(ref[q]), "query %d: loss %.17g, completion-only reference %.17g", (int)q, qloss[q], ref[q]);
      EXPECT(fabs(full[q] - ref[q]) > 1e-3 * fabs(ref[q]), "query %d: the prompt's tokens changed nothing (%.17g vs %.17g): the test cannot tell them apart", (int)q, full[q], ref[q]);
    }
    PetscCall(PetscFree3(ref, full, mask));
  }

  /* malformed files: one error naming the query and line */
  PetscCall(expect_error(comm, "lmq_bad.txt", "The cat\n>>>\n sat\n%\nno marker here\n%\n", "query 1 (line 5) has no line \">>>\""));
  PetscCall(expect_error(comm, "lmq_bad.txt", ">>>\n sat\n", "has an empty prompt"));
  PetscCall(expect_error(comm, "lmq_bad.txt", "The cat\n>>>\n", "has an empty completion"));
  PetscCall(expect_error(comm, "lmq_bad.txt", "The cat sat on the\n>>>\n mat\n", "more than the model's n_positions = 16"));
  PetscCall(expect_error(comm, "lmq_bad.txt", "%\n\n%\n", "holds no query"));

  PetscCall(PetscFree3(off, tok, tgt));
  PetscCall(PetscFree(qidx));
  PetscCall(InflScorerDestroy(&sc));
  PetscCall(InflEKFACDestroy(&ek));
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflModelDestroy(&model));
  PetscCall(PetscPrintf(comm, "test_lm_queries: all checks passed\n"));
  PetscCall(PetscFinalize());
  return 0;
}

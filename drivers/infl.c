static const char help[] = "infl: influence functions (training-data attribution) at HPC scale.\n\n"
                           "usage: infl SUBCOMMAND [options]   (infl SUBCOMMAND -help lists its options)\n"
                           "  train    train an MLP (or a GPT-2 on text)     -train SPEC -model_dims 784,256,256,10 -out model.safetensors\n"
                           "  eval     mean loss; accuracy or perplexity   -model FILE|DIR -data SPEC\n"
                           "  fit      EK-FAC factors                        -model FILE -train SPEC -out factors.h5\n"
                           "  score    influence of train on queries, top-k  -model FILE -factors FILE -train SPEC -query SPEC -out scores.h5\n"
                           "           (or against a gradient store)         -model FILE -store store.h5 -query SPEC -out scores.h5\n"
                           "  project  gradient store (projected gradients)  -model FILE -train SPEC -project_kind kronecker -out store.h5\n"
                           "  self     self-influence of train examples      -model FILE -factors FILE -train SPEC -out self.h5\n"
                           "  ihvp     scores with exact Krylov IHVP queries -model FILE -factors FILE -train SPEC -query SPEC -out scores.h5\n"
                           "  fidelity identity/K-FAC/EK-FAC vs Krylov IHVP -model FILE -factors FILE -train SPEC -query SPEC -out fidelity.h5\n"
                           "  report   HTML page of scores, self-influence   -scores FILE -train SPEC -query SPEC [-self FILE] -out report.html\n"
                           "  lds      linear datamodeling score of scores   -options_file STUDY -lds_subsets J -scores s1.h5,s2.h5 -out lds.h5\n"
                           "  run      the whole study of an options file    -options_file jobs/fashion-mnist.opts\n"
                           "  inspect  summary of an infl or model file      -file PATH\n";

#include "driver.h"
#include <infl/eigen.h>
#include <infl/checkpoint.h>
#include <cblas.h>
#include <stdlib.h>
#include <stdio.h>
#include <errno.h>
#include <time.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>

static const char *subcommand  = "";
static PetscBool   local_error = PETSC_FALSE; /* the first error was raised on a part of the ranks only */
static char        local_msg[INFL_MSG_LEN];
static MPI_Comm    agree_comm = MPI_COMM_NULL;

/* PETSc's messages for an option value it cannot parse name the value but not the option: find the option given that
 * value on the command line or in the options file, and say what the value should be. */
static const char *option_hint(const char *mess)
{
  static char hint[512];
  const char *kind, *p;
  char        value[128] = "", *all = NULL, *save = NULL, *prev = NULL;
  size_t      n = 0;

  if (!mess) return "";
  if ((p = strstr(mess, "Input string ")) != NULL) {
    p += strlen("Input string ");
    kind = strstr(mess, "integer") ? "an integer" : "a number";
  } else if ((p = strstr(mess, "Unknown logical value: ")) != NULL) {
    p += strlen("Unknown logical value: ");
    kind = "0 or 1, true or false";
  } else return "";
  while (p[n] && p[n] != ' ' && n + 1 < sizeof(value)) {
    value[n] = p[n];
    n++;
  }
  value[n] = 0;
  snprintf(hint, sizeof(hint), ": a malformed option value; give %s (-help lists the options)", kind);
  if (n && !PetscOptionsGetAll(NULL, &all) && all) {
    for (char *tok = strtok_r(all, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
      if (prev && prev[0] == '-' && !strcmp(tok, value)) {
        snprintf(hint, sizeof(hint), ": the value of %s is malformed; give %s (-help lists the options)", prev, kind);
        break;
      }
      prev = tok;
    }
    PetscFree(all);
  }
  return hint;
}

/* Print the first error once: on rank 0 of the communicator it was raised on (all its ranks agree on it). */
static PetscErrorCode error_handler(MPI_Comm comm, int line, const char *fun, const char *file, PetscErrorCode n, PetscErrorType p, const char *mess, void *ctx)
{
  PetscMPIInt rank = 0, size = 1, wrank = 0, wsize = 1;

  if (p != PETSC_ERROR_INITIAL) return n;
  if (comm != MPI_COMM_NULL) {
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  if (size < wsize && n != INFL_ERR_INTERRUPTED) {
    /* raised on a part of the ranks (often all of them, e.g. a malformed option value): main() finds out whether
     * every rank failed before printing, so that the message appears once */
    local_error = PETSC_TRUE;
    snprintf(local_msg, sizeof(local_msg), "%s%s", mess ? mess : "", option_hint(mess));
  } else if (rank == 0) {
    if (n == INFL_ERR_INTERRUPTED) fprintf(stderr, "infl %s: %s\n", subcommand, mess ? mess : "");
    else fprintf(stderr, "infl %s: error: %s%s\n", subcommand, mess ? mess : "", option_hint(mess));
    fflush(stderr);
  }
  if (getenv("INFL_DEBUG")) fprintf(stderr, "  [rank %d] raised in %s() at %s:%d (code %d)\n", wrank, fun, file, line, (int)n);
  return n;
}

/* After an error raised on a part of the ranks: if every rank failed (they all reach a barrier on a communicator of
 * their own within a few seconds) rank 0 prints the message once and all finish normally; otherwise the failing
 * ranks print theirs and abort the job, since the others may be waiting in a collective. */
static int finish_local_error(void)
{
  MPI_Request req;
  int         done = 0, wrank;

  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  MPI_Ibarrier(agree_comm, &req);
  for (int t = 0; t < 500 && !done; t++) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) {
      struct timespec ts = {0, 10000000};
      nanosleep(&ts, NULL);
    }
  }
  if (!done) {
    fprintf(stderr, "infl %s: error (rank %d): %s\n", subcommand, wrank, local_msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (wrank == 0) {
    fprintf(stderr, "infl %s: error: %s\n", subcommand, local_msg);
    fflush(stderr);
  }
  MPI_Comm_free(&agree_comm);
  PetscFinalize();
  return 1;
}

static PetscErrorCode common_options(void)
{
  double   ci = 600, pi = 10;
  PetscInt sa = 0;
  char     ml[64] = "";

  PetscFunctionBegin;
  PetscCall(InflOptionsCheckLength(PETSC_COMM_WORLD, "-mem_limit", sizeof(ml), "give bytes per rank, e.g. 2G"));
  PetscOptionsBegin(PETSC_COMM_WORLD, NULL, "Options of every long stage", NULL);
  PetscCall(PetscOptionsReal("-checkpoint_interval", "seconds between checkpoints to OUT.partial (0: after every chunk)", NULL, ci, &ci, NULL));
  PetscCall(PetscOptionsReal("-progress_interval", "seconds between progress lines", NULL, pi, &pi, NULL));
  PetscCall(PetscOptionsInt("-checkpoint_stop_after", "checkpoint and stop (exit status 3, as on a signal) after this many steps of a long stage's pass (0: never; for tests of resumption)", NULL, sa, &sa, NULL));
  PetscCall(PetscOptionsString("-mem_limit", "memory per rank (e.g. 2G): the chunk sizes of fit, score and self are derived from it", NULL, ml, ml, sizeof(ml), NULL));
  PetscOptionsEnd();
  { /* a malformed value is refused here, not after the stages before the first that reads it (infl run trains
     * first); with -help the options are listed, not checked */
    double    bytes;
    PetscBool set, help;
    PetscCall(PetscOptionsHasHelp(NULL, &help));
    if (!help) PetscCall(InflGetMemLimit(PETSC_COMM_WORLD, &bytes, &set));
  }
  PetscFunctionReturn(0);
}

/* A missing or unreadable -options_file would stop PetscInitialize with a long trace, and one that includes itself
 * would make PETSc recurse until the stack overflows: say it plainly instead (every rank finds the same). */
static int check_options_files(int argc, char **argv)
{
  const char *r = getenv("OMPI_COMM_WORLD_RANK");
  char        msg[2 * INFL_MSG_LEN];

  if (!DriverScanOptionsFiles(argc, argv, msg, sizeof(msg))) return 0;
  if (!r || !strcmp(r, "0")) fprintf(stderr, "infl: error: %s\n", msg);
  else sleep(2); /* MPI is not running yet: let rank 0 print before mpiexec sees another rank fail and kills the job */
  return 1;
}

typedef struct {
  const char *name;
  PetscErrorCode (*run)(MPI_Comm, PetscBool);
} Subcommand;

static const Subcommand subcommands[] = {
  {"train", InflDriverTrain}, {"eval", InflDriverEval}, {"fit", InflDriverFit},       {"score", InflDriverScore},
  {"self", InflDriverSelf},   {"run", InflDriverRun},   {"inspect", InflDriverInspect},
  {"ihvp", InflDriverIhvp},   {"fidelity", InflDriverFidelity}, {"report", InflDriverReport},
  {"project", InflDriverProject}, {"lds", InflDriverLDS},
};

int main(int argc, char **argv)
{
  const Subcommand *sub = NULL;
  PetscErrorCode    ierr;
  PetscBool         helpflg = PETSC_FALSE;
  int               nargc   = argc > 1 ? argc - 1 : argc;
  char            **nargv   = argv;

  if (argc > 1) {
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
      if (!strcmp(argv[1], subcommands[i].name)) sub = &subcommands[i];
    if (sub) { /* drop the subcommand from the arguments PETSc parses */
      nargv    = argv + 1;
      nargv[0] = argv[0];
    } else nargc = argc;
  }
  if (check_options_files(nargc, nargv)) return 1;
  PetscCall(PetscInitialize(&nargc, &nargv, NULL, help));
  if (!sub) {
    PetscCall(PetscOptionsHasHelp(NULL, &helpflg));
    if (argc > 1 && argv[1][0] != '-') PetscCall(PetscPrintf(PETSC_COMM_WORLD, "infl: unknown subcommand \"%s\"\n%s", argv[1], help));
    else if (!helpflg) PetscCall(PetscPrintf(PETSC_COMM_WORLD, "%s", help));
    PetscCall(PetscFinalize());
    return helpflg ? 0 : 1;
  }
  subcommand = sub->name;
  /* one BLAS thread per rank unless the environment says otherwise: ranks are the unit of parallelism */
  if (!getenv("OPENBLAS_NUM_THREADS") && !getenv("OMP_NUM_THREADS")) openblas_set_num_threads(1);
  /* OpenBLAS falls back to its SSE3 (Prescott) kernels on processors it does not know; matrix products are then
   * several times slower than the processor allows (docs/PERFORMANCE.md) */
  if (!getenv("OPENBLAS_CORETYPE")) {
    const char *core = openblas_get_corename();
    __builtin_cpu_init();
    if (core && !strcasecmp(core, "prescott") && __builtin_cpu_supports("avx2"))
      PetscCall(PetscPrintf(PETSC_COMM_WORLD, "note: OpenBLAS chose its %s kernels on a processor with %s; for faster matrix products set OPENBLAS_CORETYPE=%s\n", core, __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell"));
  }
  PetscCallMPI(MPI_Comm_dup(MPI_COMM_WORLD, &agree_comm));
  PetscCall(PetscPushErrorHandler(error_handler, NULL));
  PetscCall(PetscOptionsHasHelp(NULL, &helpflg));
  PetscCall(InflSignalsInstall());
  ierr = common_options();
  if (!ierr && !helpflg) ierr = DriverCheckIntegerOptions(PETSC_COMM_WORLD);
  if (!ierr) ierr = sub->run(PETSC_COMM_WORLD, helpflg);
  DriverReleaseOutputs();
  if (ierr) {
    if (local_error) return finish_local_error();
    MPI_Comm_free(&agree_comm);
    PetscFinalize();
    return ierr == INFL_ERR_INTERRUPTED ? INFL_EXIT_INTERRUPTED : 1;
  }
  PetscCallMPI(MPI_Comm_free(&agree_comm));
  PetscCall(PetscPopErrorHandler());
  PetscCall(PetscFinalize());
  return 0;
}

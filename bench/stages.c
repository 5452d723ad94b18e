/* Time each stage of an EK-FAC influence study of the Fashion-MNIST MLP (784-256-256-10) at this rank count.
 *   mpiexec -n R bench/stages -model M.safetensors -train idx:.../train -query idx:.../t10k [-queries 100]
 *           [-train_limit N] [-reps 1] [-skip_train] [-score_chunk 1024] [other -ekfac_* / -score_* options]
 * Prints one line per stage: "stage NAME seconds S gflop F examples E" (max over ranks of the best of -reps), and
 * "peak_memory_mb M" (max over ranks, InflPeakMemory).  bench/run.sh turns these into the table of
 * docs/PERFORMANCE.md.  Flop counts are the GEMM work of each stage (multiply-add = 2 flops):
 *   P = sum_l dout (din+1) parameters; forward+backward (capture) 2P + 2(P - P_0) per example (no input gradient
 *   of layer 0); training adds the weight gradient 2P; covariance adds sum_l (na^2 + nd^2) in double (DSYRK);
 *   Lambda and self-influence add 2 sum_l (na^2 + nd^2) in single precision (rotations) and 2 sum_l nd na in double;
 *   scoring adds 2 Q P; query preconditioning is 2 sum_l (nd^2 na + nd na^2) per query, in double.  Each line also
 *   gives the single- and double-precision parts (sgflop, dgflop), so that bench/run.sh can relate the time to the
 *   time the same work takes at the measured SGEMM and DGEMM rates. */
#include <infl/score.h>
#include <stdio.h>
#include <string.h>

static double wall(MPI_Comm comm)
{
  MPI_Barrier(comm);
  return MPI_Wtime();
}

/* sflops, dflops: the stage's single- and double-precision GEMM work */
static PetscErrorCode report(MPI_Comm comm, const char name[], double t, double sflops, double dflops, double examples)
{
  double tmax;
  PetscFunctionBegin;
  PetscCallMPI(MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, comm));
  PetscCall(PetscPrintf(comm, "stage %-14s seconds %10.4f gflop %10.3f examples %.0f sgflop %.3f dgflop %.3f\n", name, tmax, (sflops + dflops) * 1e-9, examples, sflops * 1e-9, dflops * 1e-9));
  PetscFunctionReturn(0);
}

/* The three sub-times of InflEKFACFit, from its PetscInfo line in this rank's info file. */
static PetscErrorCode fit_times(const char base[], PetscMPIInt rank, double t[3])
{
  char  path[PETSC_MAX_PATH_LEN], line[1024];
  FILE *f;
  PetscFunctionBegin;
  t[0] = t[1] = t[2] = -1;
  PetscCall(PetscSNPrintf(path, sizeof(path), "%s.%d", base, rank));
  f = fopen(path, "r");
  if (!f) f = fopen(base, "r");
  PetscCheck(f, PETSC_COMM_SELF, PETSC_ERR_FILE_OPEN, "cannot read the info file %s", path);
  while (fgets(line, sizeof(line), f)) {
    char *p = strstr(line, "EK-FAC fit: covariance pass");
    if (p) sscanf(p, "EK-FAC fit: covariance pass %lf s, eigensolves %lf s, Lambda pass %lf s", &t[0], &t[1], &t[2]);
  }
  fclose(f);
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  MPI_Comm      comm;
  char          mpath[PETSC_MAX_PATH_LEN] = "", tspec[PETSC_MAX_PATH_LEN] = "", qspec[PETSC_MAX_PATH_LEN] = "", info[PETSC_MAX_PATH_LEN] = "bench-info.log";
  PetscInt      Q = 100, reps = 1, limit = 0, L, chunk = 1024;
  PetscBool     skip_train = PETSC_FALSE;
  PetscMPIInt   rank, size;
  InflModel     model;
  InflData      train, query;
  InflLinear   *lin;
  int64_t       N, d, start, count, *qidx, *yq;
  float        *xq;
  double        P = 0, P0, cov = 0, rot = 0, lam = 0, pre = 0, best, t0;
  size_t        peak;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  comm = PETSC_COMM_WORLD;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscOptionsBegin(comm, NULL, "Stage benchmark", NULL);
  PetscCall(PetscOptionsString("-model", "model (safetensors)", NULL, mpath, mpath, sizeof(mpath), NULL));
  PetscCall(PetscOptionsString("-train", "training data spec", NULL, tspec, tspec, sizeof(tspec), NULL));
  PetscCall(PetscOptionsString("-query", "query data spec", NULL, qspec, qspec, sizeof(qspec), NULL));
  PetscCall(PetscOptionsString("-bench_info", "file for the PetscInfo lines read back", NULL, info, info, sizeof(info), NULL));
  PetscCall(PetscOptionsInt("-queries", "queries: the first Q of the query set", NULL, Q, &Q, NULL));
  PetscCall(PetscOptionsInt("-reps", "repetitions of each stage (the best is reported)", NULL, reps, &reps, NULL));
  PetscCall(PetscOptionsInt("-train_limit", "first N training examples (0: all)", NULL, limit, &limit, NULL));
  PetscCall(PetscOptionsInt("-score_chunk", "training examples per chunk", NULL, chunk, &chunk, NULL));
  PetscCall(PetscOptionsBool("-skip_train", "do not time a training epoch", NULL, skip_train, &skip_train, NULL));
  PetscOptionsEnd();
  PetscCheck(mpath[0] && tspec[0] && qspec[0], comm, PETSC_ERR_ARG_WRONG, "give -model, -train and -query");
  PetscCall(PetscInfoSetFile(info, "w")); /* InflEKFACFit reports its three phases by PetscInfo */
  PetscCall(PetscInfoAllow(PETSC_FALSE));

  PetscCall(InflModelCreate(comm, &model));
  PetscCall(InflModelLoad(model, mpath));
  PetscCall(InflModelSetPrecision(model, INFL_PREC_SINGLE));
  PetscCall(InflDataOpen(comm, tspec, limit, &train));
  PetscCall(InflDataOpen(comm, qspec, 0, &query));
  PetscCall(InflDataGetSizes(train, &N, &d, NULL));
  PetscCall(InflDataGetShard(train, &start, &count, NULL, NULL));
  PetscCall(InflModelGetLayers(model, &L, &lin));
  for (PetscInt l = 0; l < L; l++) {
    double na = lin[l].din + 1, nd = lin[l].dout;
    P += nd * na;
    cov += na * na + nd * nd;
    rot += 2 * (na * na + nd * nd); /* rotations into the eigenbases: single precision (double with -model_precision double) */
    lam += 2 * nd * na;               /* the Lambda (or self-influence) product, double */
    pre += 2 * (nd * nd * na + nd * na * na) + 2 * (na * na + nd * nd); /* rank-one transform, full back transform */
  }
  P0 = (double)lin[0].dout * (lin[0].din + 1);
  PetscCall(PetscPrintf(comm, "ranks %d train_examples %" PRId64 " queries %d parameters %.0f\n", (int)size, N, (int)Q, P));

  /* training epoch (a separate copy of the model: training changes it) */
  if (!skip_train) {
    InflTrainOptions opt;
    InflModel        m2;
    PetscCall(InflTrainOptionsFromOptions(comm, &opt));
    opt.epochs = 1;
    best       = 1e30;
    for (PetscInt r = 0; r < reps; r++) {
      PetscCall(InflModelCreate(comm, &m2));
      PetscCall(InflModelLoad(m2, mpath));
      t0 = wall(comm);
      PetscCall(InflModelTrain(m2, train, NULL, &opt));
      best = PetscMin(best, wall(comm) - t0);
      PetscCall(InflModelDestroy(&m2));
    }
    PetscCall(report(comm, "train_epoch", best, (double)N * (6 * P - 2 * P0), 0, (double)N));
  }

  /* one forward+backward (capture) pass over the training set: the yardstick of the covariance and Lambda passes */
  {
    InflCapture   *cap;
    const float   *x;
    const int64_t *y;
    PetscCall(InflDataGetShard(train, &start, &count, &x, &y));
    PetscCall(InflCaptureCreate(model, chunk, &cap));
    best = 1e30;
    for (PetscInt r = 0; r < reps; r++) {
      t0 = wall(comm);
      for (int64_t off = 0; off < count; off += chunk) PetscCall(InflModelCapture(model, (PetscInt)PetscMin(chunk, count - off), x + off * d, y + off, cap));
      best = PetscMin(best, wall(comm) - t0);
    }
    PetscCall(InflCaptureDestroy(&cap));
    PetscCall(report(comm, "fwd_bwd", best, (double)N * (4 * P - 2 * P0), 0, (double)N));
  }

  /* fit: covariance pass, eigensolves, Lambda pass */
  {
    InflEKFAC ek = NULL;
    double    t[3], bt[3] = {1e30, 1e30, 1e30}, tq = 1e30, ts = 1e30, tf = 1e30, *self;
    PetscCall(PetscMalloc3(Q, &qidx, Q, &yq, (size_t)Q * d, &xq));
    PetscCall(PetscMalloc1(PetscMax(count, 1), &self));
    for (PetscInt q = 0; q < Q; q++) qidx[q] = q;
    PetscCall(InflDataGetExamples(query, Q, qidx, xq, yq));
    for (PetscInt r = 0; r < reps; r++) {
      PetscCall(InflEKFACDestroy(&ek));
      PetscCall(PetscInfoAllow(PETSC_TRUE));
      PetscCall(InflEKFACCreate(comm, &ek));
      PetscCall(InflEKFACSetFromOptions(ek));
      t0 = wall(comm);
      PetscCall(InflEKFACFit(ek, model, train));
      tf = PetscMin(tf, wall(comm) - t0);
      PetscCall(PetscInfoAllow(PETSC_FALSE));
      {
        char *name;
        FILE *fp;
        PetscCall(PetscInfoGetFile(&name, &fp));
        if (fp) fflush(fp);
      }
      PetscCall(fit_times(info, rank, t));
      for (int k = 0; k < 3; k++) bt[k] = PetscMin(bt[k], t[k]);
    }
    PetscCall(report(comm, "covariance", bt[0], (double)N * (4 * P - 2 * P0), (double)N * cov, (double)N));
    PetscCall(report(comm, "eigensolve", bt[1], 0, 0, 0));
    PetscCall(report(comm, "lambda", bt[2], (double)N * (4 * P - 2 * P0 + rot), (double)N * lam, (double)N));
    PetscCall(report(comm, "fit_total", tf, 0, 0, (double)N));

    for (PetscInt r = 0; r < reps; r++) {
      InflScorer sc;
      double     t1;
      PetscCall(InflScorerCreate(comm, &sc));
      PetscCall(InflScorerSetFromOptions(sc));
      t0 = wall(comm);
      PetscCall(InflScorerSetQueries(sc, model, ek, Q, xq, yq, qidx));
      t1 = wall(comm);
      PetscCall(InflScorerScore(sc, train));
      tq = PetscMin(tq, t1 - t0);
      ts = PetscMin(ts, wall(comm) - t1);
      PetscCall(InflScorerDestroy(&sc));
    }
    PetscCall(report(comm, "precondition", tq, 0, (double)Q * pre, (double)Q));
    PetscCall(report(comm, "score", ts, (double)N * (4 * P - 2 * P0 + 2.0 * Q * P), 0, (double)N));
    PetscCall(report(comm, "score_kernel", 0, (double)N * 2.0 * Q * P, 0, (double)N));
    best = 1e30;
    for (PetscInt r = 0; r < reps; r++) {
      t0 = wall(comm);
      PetscCall(InflSelfInfluence(model, ek, train, 512, self));
      best = PetscMin(best, wall(comm) - t0);
    }
    PetscCall(report(comm, "self", best, (double)N * (4 * P - 2 * P0 + rot), (double)N * lam, (double)N));
    PetscCall(InflEKFACDestroy(&ek));
    PetscCall(PetscFree3(qidx, yq, xq));
    PetscCall(PetscFree(self));
  }
  PetscCall(InflPeakMemory(&peak));
  {
    double mb = (double)peak / 1048576.0, mx;
    PetscCallMPI(MPI_Allreduce(&mb, &mx, 1, MPI_DOUBLE, MPI_MAX, comm));
    PetscCall(PetscPrintf(comm, "peak_memory_mb %.1f\n", mx));
  }
  PetscCall(InflDataDestroy(&train));
  PetscCall(InflDataDestroy(&query));
  PetscCall(InflModelDestroy(&model));
  PetscCall(PetscFinalize());
  return 0;
}

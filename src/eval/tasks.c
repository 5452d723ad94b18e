/* Rank groups and the resumable runner of tasks (models to train) that the groups share. */
#include <infl/eval.h>
#include <infl/checkpoint.h>
#include <math.h>

PetscErrorCode InflGroupsCreate(MPI_Comm comm, PetscInt T, PetscInt group_size, InflGroups *g)
{
  PetscMPIInt size, rank, color, sub;
  PetscInt    G = 1;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCheck(T >= 1, comm, PETSC_ERR_ARG_OUTOFRANGE, "rank groups need at least one task (got %d)", (int)T);
  PetscCheck(group_size >= 0 && group_size <= size, comm, PETSC_ERR_ARG_OUTOFRANGE, "group size %d: give 0 (chosen by infl) or a number of ranks in [1, %d] (the ranks of the job)", (int)group_size, (int)size);
  if (group_size > 0) G = size / group_size;
  else { /* minimize ceil(T / G) / floor(P / G); ties: more groups */
    double best = PETSC_MAX_REAL;
    for (PetscInt c = 1; c <= PetscMin(size, T); c++) {
      double cost = (double)((T + c - 1) / c) / (double)(size / c);
      if (cost <= best * (1 + 1e-12)) {
        best = cost;
        G    = c;
      }
    }
  }
  if (group_size > 0) color = (PetscMPIInt)PetscMin(rank / group_size, G - 1); /* the last group takes the rest */
  else color = (PetscMPIInt)(((int64_t)rank * G) / size); /* contiguous blocks whose sizes differ by at most one */
  PetscCallMPI(MPI_Comm_split(comm, color, rank, &g->comm));
  PetscCallMPI(MPI_Comm_size(g->comm, &sub));
  g->group   = color;
  g->ngroups = G;
  g->size    = sub;
  PetscFunctionReturn(0);
}

PetscErrorCode InflGroupsDestroy(InflGroups *g)
{
  PetscFunctionBegin;
  if (g->comm != MPI_COMM_NULL) PetscCallMPI(MPI_Comm_free(&g->comm));
  g->comm = MPI_COMM_NULL;
  PetscFunctionReturn(0);
}

static PetscErrorCode tasks_write(MPI_Comm comm, const char stage[], PetscInt T, PetscInt R, const char partial[], const char key[], const int status[], const double results[])
{
  char    tmp[PETSC_MAX_PATH_LEN + 8], st[96];
  hid_t   file;
  int64_t dt[1] = {T}, dr[2] = {T, R};
  int    *s;

  PetscFunctionBegin;
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.tmp", partial));
  PetscCall(PetscSNPrintf(st, sizeof(st), "%s (partial)", stage));
  PetscCall(InflH5Create(comm, tmp, PETSC_TRUE, &file));
  PetscCall(InflH5WriteProvenance(file, comm, st, NULL, NULL, NULL));
  PetscCall(InflH5SetAttrString(file, "/", "checkpoint_key", key));
  PetscCall(PetscMalloc1(T, &s));
  PetscCall(PetscArraycpy(s, status, T));
  PetscCall(InflH5WriteArray(file, "/tasks/status", H5T_NATIVE_INT, 1, dt, s));
  PetscCall(PetscFree(s));
  if (R > 0) { /* the rows of unfinished or diverged tasks hold whatever the caller's buffer had: written as 0 */
    double *r;
    PetscCall(PetscCalloc1((size_t)T * R, &r));
    for (PetscInt t = 0; t < T; t++)
      if (status[t] == INFL_TASK_DONE) PetscCall(PetscArraycpy(r + (size_t)t * R, results + (size_t)t * R, R));
    PetscCall(InflH5WriteArray(file, "/tasks/results", H5T_NATIVE_DOUBLE, 2, dr, r));
    PetscCall(PetscFree(r));
  }
  PetscCall(InflH5Close(&file));
  PetscCall(InflRenameAll(comm, tmp, partial));
  PetscFunctionReturn(0);
}

PetscErrorCode InflTasksRestore(MPI_Comm comm, const char stage[], PetscInt T, PetscInt R, const char partial[], const char key[], int status[], double results[])
{
  hid_t   file;
  int64_t dt[1] = {T}, dr[2] = {T, R};
  char    st[96];

  PetscFunctionBegin;
  for (PetscInt t = 0; t < T; t++) status[t] = INFL_TASK_TODO;
  if (!InflFileExists(partial)) PetscFunctionReturn(0);
  PetscCall(PetscSNPrintf(st, sizeof(st), "%s (partial)", stage));
  PetscCall(InflCheckpointOpen(comm, partial, st, NULL, NULL, key, &file));
  PetscCall(InflH5ReadArray(file, "/tasks/status", H5T_NATIVE_INT, 1, dt, NULL, status));
  if (R > 0) PetscCall(InflH5ReadArray(file, "/tasks/results", H5T_NATIVE_DOUBLE, 2, dr, NULL, results));
  PetscCall(InflH5Close(&file));
  for (PetscInt t = 0; t < T; t++) {
    char what[64];
    PetscCall(PetscSNPrintf(what, sizeof(what), "entry %d of /tasks/status", (int)t));
    PetscCall(InflCheckpointCheckRange(comm, partial, what, status[t], INFL_TASK_TODO, INFL_TASK_DIVERGED));
  }
  if (R > 0) PetscCall(InflCheckpointCheckFinite(comm, partial, "/tasks/results", T, 0, R, results)); /* (T, R): rows of tasks not done are 0 */
  PetscFunctionReturn(0);
}

/* The error message of a failed call (its innermost error), as InflAgreeError_Private takes it. */
static void error_text(PetscErrorCode err, char msg[], size_t len)
{
  const char *generic = NULL;
  char       *specific = NULL;

  msg[0] = 0;
  PetscErrorMessage(err, &generic, &specific);
  if (specific && specific[0]) PetscStrncpy(msg, specific, len);
  else if (generic) PetscStrncpy(msg, generic, len);
}

PetscErrorCode InflTasksRun(MPI_Comm comm, const char stage[], const InflTaskSet *ts, PetscInt group_size, const char partial[], const char key[], int status[], double results[])
{
  InflGroups     g;
  PetscInt       nt = 0, *todo, rounds, stop_after = 0, R = ts->R;
  PetscMPIInt    grank;
  int           *st;
  double        *res, *mine;
  PetscLogDouble t0, now;

  PetscFunctionBegin;
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-checkpoint_stop_after", &stop_after, NULL));
  PetscCall(PetscMalloc1(ts->T, &todo));
  for (PetscInt t = 0; t < ts->T; t++)
    if (status[t] == INFL_TASK_TODO) todo[nt++] = t;
  if (nt == 0) {
    PetscCall(PetscFree(todo));
    PetscFunctionReturn(0);
  }
  PetscCall(InflGroupsCreate(comm, nt, group_size, &g));
  PetscCallMPI(MPI_Comm_rank(g.comm, &grank));
  rounds = (nt + g.ngroups - 1) / g.ngroups;
  PetscCall(PetscPrintf(comm, "%s: %d %ss to run in %d rank group%s of about %d rank%s (%d round%s)\n", stage, (int)nt, ts->what, (int)g.ngroups, g.ngroups > 1 ? "s" : "", (int)g.size, g.size > 1 ? "s" : "", (int)rounds, rounds > 1 ? "s" : ""));
  PetscCall(PetscMalloc3(g.ngroups, &st, (size_t)g.ngroups * R + 1, &res, R + 1, &mine));
  PetscCall(PetscTime(&t0));
  for (PetscInt r = 0; r < rounds; r++) {
    const PetscInt k = r * g.ngroups + g.group, t = k < nt ? todo[k] : -1;
    PetscErrorCode err  = 0;
    int            code = 0; /* of this group's task: 0 done, 1 diverged, 2 interrupted, 3 failed */
    char           msg[INFL_MSG_LEN] = "";
    PetscBool      stop;
    if (t >= 0) {
      PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
      err = ts->run(ts->ctx, g.comm, t, mine);
      PetscCall(PetscPopErrorHandler());
      if (err) error_text(err, msg, sizeof(msg));
      if (!err)
        for (PetscInt i = 0; i < R; i++)
          if (!isfinite(mine[i])) {
            err = PETSC_ERR_FP;
            PetscCall(PetscSNPrintf(msg, sizeof(msg), "result %d of the %s is %g (non-finite)", (int)i, ts->what, mine[i]));
            break;
          }
      code = !err ? 0 : err == PETSC_ERR_FP ? 1 : err == INFL_ERR_INTERRUPTED ? 2 : 3;
      if (code == 1 && grank == 0) {
        PetscCall(PetscPrintf(PETSC_COMM_SELF, "%s: %s %d diverged and is left out: %s\n", stage, ts->what, (int)t, msg));
        fflush(stdout);
      }
    }
    /* every rank learns how each group's task ended (its rank 0 speaks for the group), then the results */
    for (PetscInt c = 0; c < g.ngroups; c++) st[c] = 0;
    PetscCall(PetscArrayzero(res, (size_t)g.ngroups * R));
    if (t >= 0 && grank == 0) {
      st[g.group] = code;
      if (code == 0) PetscCall(PetscArraycpy(res + (size_t)g.group * R, mine, R));
    }
    PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, st, (PetscMPIInt)g.ngroups, MPI_INT, MPI_SUM, comm));
    PetscCall(InflAllreduceSum(res, (int64_t)g.ngroups * R, MPI_DOUBLE, comm));
    {
      PetscBool failed = PETSC_FALSE;
      for (PetscInt c = 0; c < g.ngroups; c++) failed = (PetscBool)(failed || st[c] == 3);
      if (failed) PetscCall(InflAgree_Private(comm, code != 3 ? PETSC_TRUE : PETSC_FALSE, err ? err : PETSC_ERR_LIB, msg, __LINE__, PETSC_FUNCTION_NAME, __FILE__));
    }
    stop = PETSC_FALSE;
    for (PetscInt c = 0; c < g.ngroups; c++) {
      const PetscInt kc = r * g.ngroups + c;
      if (kc >= nt) continue;
      if (st[c] == 0) {
        status[todo[kc]] = INFL_TASK_DONE;
        PetscCall(PetscArraycpy(results + (size_t)todo[kc] * R, res + (size_t)c * R, R));
      } else if (st[c] == 1) status[todo[kc]] = INFL_TASK_DIVERGED;
      else stop = PETSC_TRUE;
    }
    {
      PetscMPIInt sig = InflSignalReceived() ? 1 : 0;
      PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &sig, 1, MPI_INT, MPI_MAX, comm));
      if (sig) stop = PETSC_TRUE;
    }
    if (partial) PetscCall(tasks_write(comm, stage, ts->T, R, partial, key, status, results));
    PetscCall(PetscTime(&now));
    {
      PetscInt done = 0;
      for (PetscInt i = 0; i < ts->T; i++) done += status[i] != INFL_TASK_TODO;
      PetscCall(PetscPrintf(comm, "%s: round %d of %d: %d of %d %ss finished, %.0f s, ETA %.0f s\n", stage, (int)r + 1, (int)rounds, (int)done, (int)ts->T, ts->what, now - t0, (now - t0) / (r + 1) * (rounds - r - 1)));
    }
    if (stop) {
      PetscCall(PetscFree(todo));
      PetscCall(PetscFree3(st, res, mine));
      PetscCall(InflGroupsDestroy(&g));
      PetscCall(InflInterrupted(comm, stage, partial ? partial : "(no partial file)"));
    }
    if (stop_after > 0 && r + 1 == stop_after && r < rounds - 1) {
      PetscCall(PetscFree(todo));
      PetscCall(PetscFree3(st, res, mine));
      PetscCall(InflGroupsDestroy(&g));
      SETERRQ(comm, INFL_ERR_INTERRUPTED, "%s stopped after round %d (-checkpoint_stop_after); its progress is saved in %s: run the same command again to resume", stage, (int)r + 1, partial ? partial : "(no partial file)");
    }
  }
  PetscCall(PetscFree(todo));
  PetscCall(PetscFree3(st, res, mine));
  PetscCall(InflGroupsDestroy(&g));
  PetscFunctionReturn(0);
}

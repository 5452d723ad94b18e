/* Signals, progress, resumable ranges. */
#include <infl/checkpoint.h>
#include <errno.h>
#include <string.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

static volatile sig_atomic_t signal_received = 0;

static void on_signal(int sig)
{
  signal_received = sig;
}

PetscErrorCode InflSignalsInstall(void)
{
  struct sigaction sa;

  PetscFunctionBegin;
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  PetscCheck(sigaction(SIGTERM, &sa, NULL) == 0 && sigaction(SIGUSR1, &sa, NULL) == 0 && sigaction(SIGINT, &sa, NULL) == 0, PETSC_COMM_SELF, PETSC_ERR_SYS, "cannot install signal handlers");
  PetscFunctionReturn(0);
}

PetscBool InflSignalReceived(void)
{
  return signal_received ? PETSC_TRUE : PETSC_FALSE;
}

PetscErrorCode InflRangesReset(InflRanges *r)
{
  PetscFunctionBegin;
  r->n = 0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflRangesDestroy(InflRanges *r)
{
  PetscFunctionBegin;
  PetscCall(PetscFree2(r->lo, r->hi));
  r->n = r->cap = 0;
  PetscFunctionReturn(0);
}

int64_t InflRangesCount(const InflRanges *r)
{
  int64_t c = 0;
  for (int64_t i = 0; i < r->n; i++) c += r->hi[i] - r->lo[i];
  return c;
}

PetscErrorCode InflRangesAdd(InflRanges *r, int64_t lo, int64_t hi)
{
  int64_t i, j, k;

  PetscFunctionBegin;
  if (hi <= lo) PetscFunctionReturn(0);
  if (r->n + 1 > r->cap) {
    int64_t  cap = PetscMax(16, 2 * r->cap), *nlo, *nhi;
    PetscCall(PetscMalloc2(cap, &nlo, cap, &nhi));
    if (r->n) {
      PetscCall(PetscArraycpy(nlo, r->lo, r->n));
      PetscCall(PetscArraycpy(nhi, r->hi, r->n));
    }
    PetscCall(PetscFree2(r->lo, r->hi));
    r->lo  = nlo;
    r->hi  = nhi;
    r->cap = cap;
  }
  /* ranges i..j-1 touch [lo, hi): merge them with it */
  for (i = 0; i < r->n && r->hi[i] < lo; i++) {}
  for (j = i; j < r->n && r->lo[j] <= hi; j++) {}
  if (j > i) {
    lo = PetscMin(lo, r->lo[i]);
    hi = PetscMax(hi, r->hi[j - 1]);
  }
  /* replace i..j-1 by one range */
  k = r->n - j;
  if (j == i) { /* insert */
    for (int64_t m = r->n; m > i; m--) {
      r->lo[m] = r->lo[m - 1];
      r->hi[m] = r->hi[m - 1];
    }
    r->n++;
  } else {
    for (int64_t m = 0; m < k; m++) {
      r->lo[i + 1 + m] = r->lo[j + m];
      r->hi[i + 1 + m] = r->hi[j + m];
    }
    r->n = i + 1 + k;
  }
  r->lo[i] = lo;
  r->hi[i] = hi;
  PetscFunctionReturn(0);
}

PetscErrorCode InflRangesSubtract(int64_t lo, int64_t hi, const InflRanges *done, InflRanges *todo)
{
  int64_t cur = lo;

  PetscFunctionBegin;
  PetscCall(InflRangesReset(todo));
  for (int64_t i = 0; i < done->n && cur < hi; i++) {
    if (done->hi[i] <= cur) continue;
    if (done->lo[i] >= hi) break;
    if (done->lo[i] > cur) PetscCall(InflRangesAdd(todo, cur, PetscMin(done->lo[i], hi)));
    cur = PetscMax(cur, done->hi[i]);
  }
  if (cur < hi) PetscCall(InflRangesAdd(todo, cur, hi));
  PetscFunctionReturn(0);
}

PetscErrorCode InflRangesAllUnion(MPI_Comm comm, const InflRanges *in, InflRanges *out)
{
  PetscMPIInt size, n = (PetscMPIInt)(2 * in->n), *counts, *displs;
  int64_t    *mine, *all;
  int64_t     total = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_size(comm, &size));
  PetscCall(PetscMalloc2(size, &counts, size, &displs));
  PetscCallMPI(MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, comm));
  for (PetscMPIInt r = 0; r < size; r++) {
    displs[r] = (PetscMPIInt)total;
    total += counts[r];
  }
  PetscCall(PetscMalloc2(PetscMax(n, 1), &mine, PetscMax(total, 1), &all));
  for (int64_t i = 0; i < in->n; i++) {
    mine[2 * i]     = in->lo[i];
    mine[2 * i + 1] = in->hi[i];
  }
  PetscCallMPI(MPI_Allgatherv(mine, n, MPI_INT64_T, all, counts, displs, MPI_INT64_T, comm));
  PetscCall(InflRangesReset(out));
  for (int64_t i = 0; i < total; i += 2) PetscCall(InflRangesAdd(out, all[i], all[i + 1]));
  PetscCall(PetscFree2(mine, all));
  PetscCall(PetscFree2(counts, displs));
  PetscFunctionReturn(0);
}

PetscErrorCode InflRangesWrite(hid_t file, const InflRanges *r)
{
  int64_t dims[1] = {r->n};
  int64_t zero    = 0;

  PetscFunctionBegin;
  PetscCall(InflH5WriteArray(file, "/progress/done_lo", H5T_NATIVE_INT64, 1, dims, r->n ? r->lo : &zero));
  PetscCall(InflH5WriteArray(file, "/progress/done_hi", H5T_NATIVE_INT64, 1, dims, r->n ? r->hi : &zero));
  PetscFunctionReturn(0);
}

PetscErrorCode InflRangesRead(hid_t file, InflRanges *r)
{
  int      nd;
  int64_t  dims[8], *lo, *hi;

  PetscFunctionBegin;
  PetscCall(InflRangesReset(r));
  PetscCall(InflH5GetDims(file, "/progress/done_lo", &nd, dims));
  if (nd != 1 || dims[0] == 0) PetscFunctionReturn(0);
  PetscCall(PetscMalloc2(dims[0], &lo, dims[0], &hi));
  PetscCall(InflH5ReadArray(file, "/progress/done_lo", H5T_NATIVE_INT64, 1, dims, NULL, lo));
  PetscCall(InflH5ReadArray(file, "/progress/done_hi", H5T_NATIVE_INT64, 1, dims, NULL, hi));
  for (int64_t i = 0; i < dims[0]; i++) {
    if (lo[i] < 0 || hi[i] < lo[i]) {
      char fname[PETSC_MAX_PATH_LEN] = "(checkpoint)";
      H5Fget_name(file, fname, sizeof(fname));
      PetscCall(PetscFree2(lo, hi));
      SETERRQ(PETSC_COMM_SELF, PETSC_ERR_FILE_UNEXPECTED, "%s: /progress/done_lo, /progress/done_hi entry %" PRId64 " is the range [%" PRId64 ", %" PRId64 "), not a range of example indices; the checkpoint is damaged: delete %s to start this stage over", fname, i, lo[i], hi[i], fname);
    }
    PetscCall(InflRangesAdd(r, lo[i], hi[i]));
  }
  PetscCall(PetscFree2(lo, hi));
  PetscFunctionReturn(0);
}

int64_t InflRangesChunks(const InflRanges *r, int64_t chunk)
{
  int64_t c = 0;
  for (int64_t i = 0; i < r->n; i++) c += (r->hi[i] - r->lo[i] + chunk - 1) / chunk;
  return c;
}

void InflRangesChunk(const InflRanges *r, int64_t chunk, int64_t c, int64_t *lo, int64_t *hi)
{
  for (int64_t i = 0; i < r->n; i++) {
    int64_t k = (r->hi[i] - r->lo[i] + chunk - 1) / chunk;
    if (c < k) {
      *lo = r->lo[i] + c * chunk;
      *hi = PetscMin(r->hi[i], *lo + chunk);
      return;
    }
    c -= k;
  }
  *lo = *hi = 0;
}

PetscErrorCode InflRounds(MPI_Comm comm, int64_t nlocal, int64_t *rounds)
{
  PetscFunctionBegin;
  *rounds = nlocal;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, rounds, 1, MPI_INT64_T, MPI_MAX, comm));
  PetscFunctionReturn(0);
}

PetscErrorCode InflProgressGetInterval(MPI_Comm comm, double *seconds)
{
  PetscFunctionBegin;
  *seconds = 10;
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-progress_interval", seconds, NULL));
  PetscCheck(*seconds >= 0 && isfinite(*seconds), comm, PETSC_ERR_ARG_OUTOFRANGE, "-progress_interval %s must be a number of seconds >= 0 (0: a progress line at every step)", INFL_DSTR(*seconds));
  PetscFunctionReturn(0);
}

PetscErrorCode InflProgressStart(MPI_Comm comm, const char stage[], int64_t todo_local, InflProgress *p)
{
  PetscFunctionBegin;
  PetscCall(PetscMemzero(p, sizeof(*p)));
  p->comm           = comm;
  p->unit           = "examples";
  p->ckpt_interval  = 600;
  PetscCall(PetscStrncpy(p->stage, stage, sizeof(p->stage)));
  PetscCall(PetscOptionsGetReal(NULL, NULL, "-checkpoint_interval", &p->ckpt_interval, NULL));
  PetscCall(InflProgressGetInterval(comm, &p->print_interval));
  PetscCheck(p->ckpt_interval >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-checkpoint_interval %s must be >= 0 seconds", INFL_DSTR(p->ckpt_interval));
  PetscCall(PetscOptionsGetInt(NULL, NULL, "-checkpoint_stop_after", &p->stop_after, NULL));
  PetscCheck(p->stop_after >= 0, comm, PETSC_ERR_ARG_OUTOFRANGE, "-checkpoint_stop_after %d must be a number of steps >= 0 (0: never)", (int)p->stop_after);
  p->todo = todo_local;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, &p->todo, 1, MPI_INT64_T, MPI_SUM, comm));
  PetscCall(PetscTime(&p->t0));
  p->last_print = p->last_ckpt = p->t0;
  PetscFunctionReturn(0);
}

PetscErrorCode InflProgressStep(InflProgress *p, int64_t n, PetscBool *checkpoint, PetscBool *stop)
{
  PetscLogDouble now;
  PetscMPIInt    rank;
  int64_t        v[3];

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(p->comm, &rank));
  PetscCall(PetscTime(&now));
  v[0] = n;
  v[1] = InflSignalReceived() ? 1 : 0;
  v[2] = rank == 0 && now - p->last_ckpt >= p->ckpt_interval ? 1 : 0;
  PetscCallMPI(MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_INT64_T, MPI_SUM, p->comm));
  p->done += v[0];
  *stop       = v[1] ? PETSC_TRUE : PETSC_FALSE;
  *checkpoint = v[2] || v[1] ? PETSC_TRUE : PETSC_FALSE;
  if (v[2]) p->last_ckpt = now;
  if (rank == 0 && (now - p->last_print >= p->print_interval || *stop)) {
    double rate = (double)p->done / PetscMax(now - p->t0, 1e-9);
    printf("  %s: %" PRId64 "/%" PRId64 " %s (%.1f%%), %.0f %s/s, ETA %.0f s%s\n", p->stage, p->done, p->todo, p->unit, p->todo ? 100.0 * (double)p->done / (double)p->todo : 100.0, rate, p->unit, rate > 0 ? (double)(p->todo - p->done) / rate : 0.0, *stop ? "  [signal received: checkpointing and stopping]" : "");
    fflush(stdout);
    p->last_print = now;
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflInterrupted(MPI_Comm comm, const char stage[], const char partial[])
{
  PetscFunctionBegin;
  SETERRQ(comm, INFL_ERR_INTERRUPTED, "%s interrupted by a signal; its progress is saved in %s: run the same command again to resume", stage, partial);
}

PetscErrorCode InflCheckpointCheckAttr(MPI_Comm comm, hid_t file, const char path[], const char key[], const char value[])
{
  char      have[1024];
  PetscBool same;

  PetscFunctionBegin;
  PetscCall(InflH5GetAttrString(file, "/", key, have, sizeof(have)));
  PetscCall(PetscStrcmp(have, value, &same));
  PetscCheck(same, comm, PETSC_ERR_ARG_INCOMP, "%s holds the progress of another run (%s %s, this run %s); remove it to start over, or rerun with the inputs it was made with", path, key, have[0] ? have : "(none)", value);
  PetscFunctionReturn(0);
}

PetscErrorCode InflCheckpointOpen(MPI_Comm comm, const char path[], const char stage[], const char model_sha256[], const char train_sha256[], const char checkpoint_key[], hid_t *file)
{
  const char *keys[4]   = {"stage", "model_sha256", "train_sha256", "checkpoint_key"};
  const char *values[4] = {stage, model_sha256, train_sha256, checkpoint_key};

  PetscFunctionBegin;
  { /* a directory or a damaged file at PATH.partial would otherwise give MPI-IO errors or HDF5's trace */
    PetscMPIInt rank;
    struct stat st;
    int         ok = 1;
    char        what[64] = "";
    PetscCallMPI(MPI_Comm_rank(comm, &rank));
    if (rank == 0) {
      if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        ok = 0;
        PetscCall(PetscStrncpy(what, stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? "a directory" : "not a regular file", sizeof(what)));
      } else if (H5Fis_hdf5(path) <= 0) {
        ok = 0;
        PetscCall(PetscSNPrintf(what, sizeof(what), "not an HDF5 file (%lld bytes)", (long long)st.st_size));
      }
    }
    InflCheckAll(comm, ok, PETSC_ERR_FILE_UNEXPECTED, "%s, the checkpoint this run would resume, is %s: it is damaged or not infl's; delete it (rm -r %s) to start this stage over", path, what, path);
  }
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, file));
  for (int i = 0; i < 4; i++)
    if (values[i]) PetscCall(InflCheckpointCheckAttr(comm, *file, path, keys[i], values[i]));
  PetscFunctionReturn(0);
}

/* Collective: the error of a non-finite entry i (-1: none) of a block x (rows, nc) of columns c0.. of `name`. */
static PetscErrorCode check_finite_block(MPI_Comm comm, const char path[], const char name[], int64_t rows, int64_t c0, int64_t nc, int64_t i, double value)
{
  char where[96] = "", v[32];

  PetscFunctionBegin;
  snprintf(v, sizeof(v), "%g", value); /* PETSc's printf would write nan as "nan." */
  if (i >= 0 && rows > 1) PetscCall(PetscSNPrintf(where, sizeof(where), "entry (%" PRId64 ", %" PRId64 ")", i / nc, c0 + i % nc));
  else if (i >= 0) PetscCall(PetscSNPrintf(where, sizeof(where), "entry %" PRId64, c0 + i));
  InflCheckAll(comm, i < 0, PETSC_ERR_FILE_UNEXPECTED, "%s: dataset %s holds %s at %s; infl never writes a non-finite value to a checkpoint, so the file is damaged: delete %s to start this stage over (the work it saved is lost)", path, name, v, where, path);
  PetscFunctionReturn(0);
}

PetscErrorCode InflCheckpointCheckFinite(MPI_Comm comm, const char path[], const char name[], int64_t rows, int64_t c0, int64_t nc, const double x[])
{
  int64_t i = InflFirstNonFinite(rows * nc, x);

  PetscFunctionBegin;
  PetscCall(check_finite_block(comm, path, name, rows, c0, nc, i, i < 0 ? 0.0 : x[i]));
  PetscFunctionReturn(0);
}

PetscErrorCode InflCheckpointCheckFiniteFloat(MPI_Comm comm, const char path[], const char name[], int64_t rows, int64_t c0, int64_t nc, const float x[])
{
  int64_t i = InflFirstNonFiniteFloat(rows * nc, x);

  PetscFunctionBegin;
  PetscCall(check_finite_block(comm, path, name, rows, c0, nc, i, i < 0 ? 0.0 : (double)x[i]));
  PetscFunctionReturn(0);
}

PetscErrorCode InflCheckpointCheckRange(MPI_Comm comm, const char path[], const char what[], int64_t value, int64_t lo, int64_t hi)
{
  PetscFunctionBegin;
  InflCheckAll(comm, value >= lo && value <= hi, PETSC_ERR_FILE_UNEXPECTED, "%s: %s is %" PRId64 ", outside [%" PRId64 ", %" PRId64 "]; the checkpoint is damaged: delete %s to start this stage over (the work it saved is lost)", path, what, value, lo, hi, path);
  PetscFunctionReturn(0);
}

PetscErrorCode InflRemoveAll(MPI_Comm comm, const char path[])
{
  PetscMPIInt rank;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0 && InflFileExists(path)) unlink(path);
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}

/* Chunk r of the loop on this rank, if it has one (a rank with fewer chunks only joins the agreement). */
static PetscErrorCode run_chunk(const InflChunkLoop *loop, const InflRanges *todo, PetscInt chunk, int64_t r, int64_t nchunks, int64_t *lo, int64_t *hi)
{
  PetscFunctionBegin;
  *lo = *hi = 0;
  if (r < nchunks) {
    InflRangesChunk(todo, chunk, r, lo, hi);
    PetscCall(loop->chunk(loop->ctx, *lo, *hi));
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflRunChunks(MPI_Comm comm, const char stage[], int64_t start, int64_t count, PetscInt chunk, const InflRanges *done, const InflChunkLoop *loop, const char partial[])
{
  PetscFunctionBegin;
  PetscCall(InflRunChunksStep(comm, stage, start, count, chunk, done, loop, NULL, partial));
  PetscFunctionReturn(0);
}

PetscErrorCode InflRunChunksStep(MPI_Comm comm, const char stage[], int64_t start, int64_t count, PetscInt chunk, const InflRanges *done, const InflChunkLoop *loop, PetscErrorCode (*step)(void *ctx, int64_t lo, int64_t hi), const char partial[])
{
  InflRanges   todo = {0}, mine = {0};
  int64_t      nchunks, rounds;
  InflProgress prog;

  PetscFunctionBegin;
  PetscCall(InflRangesSubtract(start, start + count, done, &todo));
  nchunks = InflRangesChunks(&todo, chunk);
  PetscCall(InflRounds(comm, nchunks, &rounds));
  PetscCall(InflProgressStart(comm, stage, InflRangesCount(&todo), &prog));
  if (loop->unit) prog.unit = loop->unit;
  for (int64_t r = 0; r < rounds; r++) {
    int64_t   lo = 0, hi = 0;
    PetscBool ckpt, stop;
    /* an error of a chunk on some ranks (a non-finite score, a bad label) stops every rank with its message */
    InflCallAll(comm, run_chunk(loop, &todo, chunk, r, nchunks, &lo, &hi));
    if (step) PetscCall(step(loop->ctx, lo, hi));
    if (r < nchunks) PetscCall(InflRangesAdd(&mine, lo, hi));
    PetscCall(InflProgressStep(&prog, hi - lo, &ckpt, &stop));
    if (prog.stop_after > 0 && r + 1 == prog.stop_after && r < rounds - 1) { /* the same on every rank */
      PetscCall(PetscPrintf(comm, "%s: stopping after step %" PRId64 " of %" PRId64 " (-checkpoint_stop_after)\n", stage, r + 1, rounds));
      ckpt = stop = PETSC_TRUE;
    }
    if (ckpt && loop->checkpoint && r < rounds - 1) {
      InflRanges all = {0};
      PetscCall(InflRangesAllUnion(comm, &mine, &all));
      for (int64_t i = 0; i < done->n; i++) PetscCall(InflRangesAdd(&all, done->lo[i], done->hi[i]));
      PetscCall(loop->checkpoint(loop->ctx, &all));
      PetscCall(InflRangesDestroy(&all));
    }
    if (stop && r < rounds - 1 && !InflSignalReceived() && prog.stop_after > 0) SETERRQ(comm, INFL_ERR_INTERRUPTED, "%s stopped after step %" PRId64 " (-checkpoint_stop_after); its progress is saved in %s: run the same command again to resume", stage, r + 1, partial);
    if (stop && r < rounds - 1) PetscCall(InflInterrupted(comm, stage, partial));
  }
  PetscCall(InflRangesDestroy(&todo));
  PetscCall(InflRangesDestroy(&mine));
  PetscFunctionReturn(0);
}

PetscErrorCode InflCheckpointRemoveStaleTmp(MPI_Comm comm, const char partial[], const char stage[])
{
  char        tmp[PETSC_MAX_PATH_LEN + 8];
  PetscMPIInt rank;
  int         removed = 0, err = 0;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCall(PetscSNPrintf(tmp, sizeof(tmp), "%s.tmp", partial));
  if (rank == 0) {
    struct stat st;
    if (stat(tmp, &st) == 0 && S_ISREG(st.st_mode)) {
      H5E_auto2_t func;
      void       *data;
      htri_t      is;
      H5Eget_auto2(H5E_DEFAULT, &func, &data);
      H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
      is = H5Fis_hdf5(tmp); /* the signature: a file cut short still has it */
      H5Eset_auto2(H5E_DEFAULT, func, data);
      if (is > 0) {
        if (unlink(tmp) == 0) removed = 1;
        else err = errno;
      }
    }
  }
  PetscCallMPI(MPI_Bcast(&removed, 1, MPI_INT, 0, comm));
  PetscCallMPI(MPI_Bcast(&err, 1, MPI_INT, 0, comm));
  if (removed) PetscCall(PetscPrintf(comm, "%s: removed %s, left by a run stopped while writing its checkpoint (%s, the last complete one, is %s)\n", stage, tmp, partial, InflFileExists(partial) ? "kept and resumed from" : "absent: the run starts over"));
  InflCheckAll(comm, !err, PETSC_ERR_FILE_WRITE, "%s: cannot remove %s, left by a run stopped while writing its checkpoint: %s; remove it by hand", stage, tmp, strerror(err));
  PetscFunctionReturn(0);
}

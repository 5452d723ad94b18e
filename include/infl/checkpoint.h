/* infl/checkpoint.h -- interruption, progress and resumption of long stages.
 *
 * A long stage (train, the fit passes, score, self) loops over chunks of its examples.  At every chunk boundary all
 * ranks call InflProgressStep, which (one small MPI_Allreduce) prints progress on rank 0 at most every
 * -progress_interval seconds, and tells every rank at once whether a checkpoint is due (every
 * -checkpoint_interval seconds of rank 0's clock, 0 = every chunk) and whether to stop (SIGTERM, SIGUSR1 or SIGINT
 * received by any rank: what Slurm sends before the time limit).  A checkpoint replaces NAME.partial atomically
 * (written as NAME.partial.tmp, then renamed), so that after a kill, even SIGKILL, NAME.partial is the last
 * consistent state.  On a stop the stage writes its checkpoint and fails with INFL_ERR_INTERRUPTED; infl then exits
 * with status 3.  Rerunning the same command resumes: the examples already done are recorded as global index ranges,
 * so a rerun may use another rank count.
 */
#ifndef INFL_CHECKPOINT_H
#define INFL_CHECKPOINT_H

#include <infl/io.h>

#define INFL_ERR_INTERRUPTED 250 /* error code of a stage stopped by a signal; infl exits with status 3 */
#define INFL_EXIT_INTERRUPTED 3

/* Install handlers of SIGTERM, SIGUSR1 and SIGINT that record the signal (async-signal-safe flag). */
PetscErrorCode InflSignalsInstall(void);
/* Has this process received one of those signals? */
PetscBool InflSignalReceived(void);

/* Sorted, disjoint, half-open ranges [lo, hi) of global example indices. */
typedef struct {
  int64_t  n, cap;
  int64_t *lo, *hi;
} InflRanges;
PetscErrorCode InflRangesAdd(InflRanges *r, int64_t lo, int64_t hi); /* union with [lo, hi) */
PetscErrorCode InflRangesReset(InflRanges *r);
PetscErrorCode InflRangesDestroy(InflRanges *r);
int64_t        InflRangesCount(const InflRanges *r);
/* todo = [lo, hi) minus done. */
PetscErrorCode InflRangesSubtract(int64_t lo, int64_t hi, const InflRanges *done, InflRanges *todo);
/* Collective: out = union over ranks of in (out may be in). */
PetscErrorCode InflRangesAllUnion(MPI_Comm comm, const InflRanges *in, InflRanges *out);
/* Collective HDF5 write / read of ranges as /progress/done_lo, /progress/done_hi (rank 0's data).  The read refuses a
 * damaged list (a range with lo < 0 or hi < lo), naming the file and the fix (delete it). */
PetscErrorCode InflRangesWrite(hid_t file, const InflRanges *r);
PetscErrorCode InflRangesRead(hid_t file, InflRanges *r);

typedef struct {
  MPI_Comm       comm;
  char           stage[64];
  int64_t        todo;         /* examples to do in all ranks in this pass */
  int64_t        done;         /* examples done in all ranks (as of the last step) */
  int64_t        local;        /* examples done by this rank since the last step */
  double         ckpt_interval, print_interval;
  PetscInt       stop_after;   /* -checkpoint_stop_after: checkpoint and stop after this many steps (0: never) */
  PetscLogDouble t0, last_print, last_ckpt;
  const char    *unit;         /* what is counted in the progress lines: "examples" (set by InflProgressStart), or
                                  "sequences" for sequence data (set it after InflProgressStart) */
} InflProgress;

/* Not collective.  The seconds between progress lines of every long stage and of the Krylov solves: the option
 * -progress_interval (default 10; 0 prints at every step).  Error naming the option if it is negative or not finite. */
PetscErrorCode InflProgressGetInterval(MPI_Comm comm, double *seconds);
/* Collective.  todo_local: examples this rank will process in this pass.  Reads -checkpoint_interval (s, default 600),
 * -progress_interval (s, default 10) and -checkpoint_stop_after (steps, default 0: never; InflRunChunks then
 * checkpoints and stops as on a signal after that many steps of the pass, which makes a checkpoint for tests of
 * resumption without timing a signal). */
PetscErrorCode InflProgressStart(MPI_Comm comm, const char stage[], int64_t todo_local, InflProgress *p);
/* Collective, at a chunk boundary, after this rank processed n more examples (0 for a rank without work). */
PetscErrorCode InflProgressStep(InflProgress *p, int64_t n, PetscBool *checkpoint, PetscBool *stop);
/* Collective: the number of rounds of a loop in which rank r has nlocal chunks (max over ranks). */
PetscErrorCode InflRounds(MPI_Comm comm, int64_t nlocal, int64_t *rounds);

/* Chunks of a range list: the c-th piece of at most `chunk` examples.  Returns the count of pieces. */
int64_t InflRangesChunks(const InflRanges *r, int64_t chunk);
void    InflRangesChunk(const InflRanges *r, int64_t chunk, int64_t c, int64_t *lo, int64_t *hi);

/* A resumable loop over this rank's examples: `chunk` processes the global indices [lo, hi) (inside this rank's
 * shard); `checkpoint` (collective, may be NULL) saves the state after the examples in `done` (all ranks). */
typedef struct {
  PetscErrorCode (*chunk)(void *ctx, int64_t lo, int64_t hi);
  PetscErrorCode (*checkpoint)(void *ctx, const InflRanges *done);
  void *ctx;
  const char *unit; /* the examples' name in progress lines (NULL: "examples"; "sequences" for sequence data) */
} InflChunkLoop;

/* Collective.  Run loop->chunk over [start, start+count) minus `done` (the examples of earlier runs) in pieces of at
 * most `chunk` examples; all ranks step together (ranks with fewer pieces join every step), print progress, call
 * loop->checkpoint when due (and, with the union of `done` and this run's work, before stopping on a signal), and on a
 * signal (or after -checkpoint_stop_after steps, if that is not the last one) raise INFL_ERR_INTERRUPTED naming
 * `stage` and `partial`.  An error of loop->chunk on any rank is agreed on
 * after each step: every rank raises it with the message of the lowest failing rank (no rank waits in a collective). */
PetscErrorCode InflRunChunks(MPI_Comm comm, const char stage[], int64_t start, int64_t count, PetscInt chunk, const InflRanges *done, const InflChunkLoop *loop, const char partial[]);

/* Collective.  InflRunChunks with `step` (may be NULL) called by every rank after each round, once the ranks agreed
 * that the round's chunks succeeded, with the range [lo, hi) the rank processed in it (lo == hi for a rank without a
 * chunk that round): for collective writes of each round's results (the gradient store, infl/store.h). */
PetscErrorCode InflRunChunksStep(MPI_Comm comm, const char stage[], int64_t start, int64_t count, PetscInt chunk, const InflRanges *done, const InflChunkLoop *loop, PetscErrorCode (*step)(void *ctx, int64_t lo, int64_t hi), const char partial[]);

/* Collective: raise INFL_ERR_INTERRUPTED naming the stage and the partial file. */
PetscErrorCode InflInterrupted(MPI_Comm comm, const char stage[], const char partial[]);

/* Collective: check that an existing partial file belongs to this run: its root attribute `key` equals `value`
 * (e.g. model_sha256); error naming the file, both values and the fix (remove it) otherwise. */
PetscErrorCode InflCheckpointCheckAttr(MPI_Comm comm, hid_t file, const char path[], const char key[], const char value[]);

/* Collective: open the partial file `path` of a run to resume it, after checking (InflCheckpointCheckAttr) that its
 * attributes stage, model_sha256, train_sha256 and checkpoint_key equal the given values (a NULL value is not
 * checked).  A path that is not a regular HDF5 file (a directory, a file cut short or overwritten) is an error naming
 * it and the fix (delete it to start over).  The caller closes *file. */
PetscErrorCode InflCheckpointOpen(MPI_Comm comm, const char path[], const char stage[], const char model_sha256[], const char train_sha256[], const char checkpoint_key[], hid_t *file);
/* Collective.  A checkpoint `partial` is written as PARTIAL.tmp and renamed; a run stopped while writing leaves
 * PARTIAL.tmp behind.  If PARTIAL.tmp is a regular file that starts as an HDF5 file (the signature written when it is
 * created), rank 0 removes it and prints "STAGE: removed PARTIAL.tmp, ..." (PARTIAL itself, the last complete
 * checkpoint, is kept and resumed from); anything else of that name is left alone (the next checkpoint write replaces
 * or refuses it). */
PetscErrorCode InflCheckpointRemoveStaleTmp(MPI_Comm comm, const char partial[], const char stage[]);

/* Collective.  Check the values this rank restored from dataset `name` of the checkpoint `path`: x (rows, nc) holds
 * columns [c0, c0 + nc) of the dataset seen as (rows, columns) (a rank's block of examples; a whole array is rows 1,
 * c0 0, nc its size).  infl never writes a NaN or an Inf to a checkpoint, so one is a damaged file: error on every rank
 * naming the file, the dataset, the entry (row and column) and the value, and the fix (delete the file to start the
 * stage over).  Called on every array a stage restores, before it is used (a resumed run must not carry NaN into
 * its results).  The Float variant checks float32 values. */
PetscErrorCode InflCheckpointCheckFinite(MPI_Comm comm, const char path[], const char name[], int64_t rows, int64_t c0, int64_t nc, const double x[]);
PetscErrorCode InflCheckpointCheckFiniteFloat(MPI_Comm comm, const char path[], const char name[], int64_t rows, int64_t c0, int64_t nc, const float x[]);
/* Collective.  A restored integer `what` (an attribute or an entry of a dataset, named in full by the caller) must lie
 * in [lo, hi]; error as above otherwise. */
PetscErrorCode InflCheckpointCheckRange(MPI_Comm comm, const char path[], const char what[], int64_t value, int64_t lo, int64_t hi);

/* Collective: rank 0 removes `path` if it exists. */
PetscErrorCode InflRemoveAll(MPI_Comm comm, const char path[]);

#endif

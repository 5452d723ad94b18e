/* Helpers shared by the test programs in tests/ (header-only: each program includes what it uses). */
#ifndef INFL_TEST_H
#define INFL_TEST_H

#include <infl/model.h>
#include <infl/checkpoint.h>
#include <infl/io.h>

/* A failed check of a test: an error with the message (which names what was compared and the values). */
#define EXPECT(cond, ...) PetscCheck(cond, PETSC_COMM_SELF, PETSC_ERR_PLIB, __VA_ARGS__)

/* Reads the double dataset `name` of the HDF5 fixture `path` (a scalar or any shape, n entries in all) into buf (n).
 * Collective on comm; an error names the file, the dataset and both counts when the sizes differ. */
static inline PetscErrorCode InflTestReadDoubles(MPI_Comm comm, const char path[], const char name[], int64_t n, double buf[])
{
  hid_t   f;
  int     nd;
  int64_t dims[8], numel = 1;

  PetscFunctionBegin;
  PetscCall(InflH5Open(comm, path, PETSC_FALSE, &f));
  PetscCall(InflH5GetDims(f, name, &nd, dims));
  EXPECT(nd >= 0, "%s: no dataset %s", path, name);
  for (int i = 0; i < nd; i++) numel *= dims[i];
  EXPECT(numel == n, "%s: %s has %" PRId64 " entries, expected %" PRId64, path, name, numel, n);
  PetscCall(InflH5ReadArray(f, name, H5T_NATIVE_DOUBLE, nd, NULL, NULL, buf));
  PetscCall(InflH5Close(&f));
  PetscFunctionReturn(0);
}

/* The first half of comm's ranks (at least one) train a model made by fresh() on data `spec` (limit examples, 0 for
 * all) with opt, which names the checkpoint, and stop after global step stop_after: training must end with
 * INFL_ERR_INTERRUPTED, leaving opt->checkpoint's .partial file for a resume on all ranks.  *subsize gets the ranks
 * that trained.  Collective on comm. */
static inline PetscErrorCode InflTestTrainStopped(MPI_Comm comm, const char spec[], PetscInt limit, PetscErrorCode (*fresh)(MPI_Comm, InflModel *), InflTrainOptions *opt, PetscInt stop_after, PetscMPIInt *subsize)
{
  PetscMPIInt rank, size;
  MPI_Comm    sub;

  PetscFunctionBegin;
  PetscCallMPI(MPI_Comm_rank(comm, &rank));
  PetscCallMPI(MPI_Comm_size(comm, &size));
  *subsize = size > 1 ? (size + 1) / 2 : 1;
  PetscCallMPI(MPI_Comm_split(comm, rank < *subsize ? 0 : MPI_UNDEFINED, rank, &sub));
  if (sub != MPI_COMM_NULL) {
    InflData       d2;
    InflModel      model;
    PetscErrorCode ierr;
    PetscCall(InflDataOpen(sub, spec, limit, &d2));
    PetscCall(fresh(sub, &model));
    opt->stop_after = stop_after;
    PetscCall(PetscPushErrorHandler(PetscReturnErrorHandler, NULL));
    ierr = InflModelTrain(model, d2, NULL, opt);
    PetscCall(PetscPopErrorHandler());
    EXPECT(ierr == INFL_ERR_INTERRUPTED, "-train_stop_after %d ended the training with error code %d, not %d (interrupted)", (int)stop_after, (int)ierr, INFL_ERR_INTERRUPTED);
    PetscCall(InflModelDestroy(&model));
    PetscCall(InflDataDestroy(&d2));
    PetscCallMPI(MPI_Comm_free(&sub));
  }
  opt->stop_after = 0;
  PetscCallMPI(MPI_Barrier(comm));
  PetscFunctionReturn(0);
}
#endif

/* Which parameters of a model are matrices (for weight decay), from the model type's operation. */
#include "modelimpl.h"

PetscErrorCode InflModelGetMatrixRanges(InflModel m, PetscInt *n, InflParamRange **ranges)
{
  PetscFunctionBegin;
  PetscCheck(m->ops->matrix_ranges, m->comm, PETSC_ERR_SUP, "model type %s does not say which of its parameters are matrices; use -train_decay_matrices_only 0 (decay every parameter)", m->type);
  PetscCall((*m->ops->matrix_ranges)(m, n, ranges));
  for (PetscInt i = 0; i < *n; i++) {
    const InflParamRange *r = &(*ranges)[i];
    PetscCheck(r->start >= 0 && r->count >= 0 && r->start + r->count <= m->nparams && (i == 0 || r->start >= (*ranges)[i - 1].start + (*ranges)[i - 1].count), m->comm, PETSC_ERR_PLIB, "model type %s: matrix range %d [%" PRId64 ", %" PRId64 ") is not ascending, disjoint and inside the %" PRId64 " parameters", m->type, (int)i, r->start, r->start + r->count, m->nparams);
  }
  PetscFunctionReturn(0);
}

PetscErrorCode InflModelRestoreMatrixRanges(InflModel m, PetscInt *n, InflParamRange **ranges)
{
  PetscFunctionBegin;
  (void)m;
  *n = 0;
  PetscCall(PetscFree(*ranges));
  PetscFunctionReturn(0);
}

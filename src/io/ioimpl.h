/* Private declarations shared by the files of src/io. */
#ifndef INFL_IOIMPL_H
#define INFL_IOIMPL_H
#include <infl/io.h>

/* Read rows [row0, row0+nrows) of dataset `name` of a file opened by this rank alone (independent transfer). */
PetscErrorCode InflH5ReadRowsLocal_Private(hid_t file, const char name[], hid_t type, int64_t row0, int64_t nrows, void *buf);

#endif

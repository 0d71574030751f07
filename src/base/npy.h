/* npy.h - numpy .npy files (format 1.0 / 2.0 / 3.0; little-endian; C order) to and from hs_tensor. */
#ifndef HS_BASE_NPY_H
#define HS_BASE_NPY_H

#include <stddef.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"

/* Parses an in-memory .npy image. On success out->data is a malloc'ed copy of the array's bytes
 * (the caller frees it; NULL for an empty array). Big-endian, Fortran-order, object and unknown
 * dtypes, more than HS_MAX_DIMS dimensions, a header over 64 KiB, or a byte count that does not
 * match the shape are HS_PARSE / HS_UNSUPPORTED errors. */
int hs_npy_parse(const void *buf, size_t len, hs_tensor *out, hs_error *err);

/* Reads the .npy file at path with hs_file_read (a regular file of at most HS_FILE_MAX_DEFAULT bytes);
 * same ownership and errors as hs_npy_parse, plus hs_file_read's. */
int hs_npy_read(const char *path, hs_tensor *out, hs_error *err);

/* Writes t to path as a version 1.0 .npy (numpy's own layout: header padded to 64 bytes). */
int hs_npy_write(const char *path, const hs_tensor *t, hs_error *err);

#endif

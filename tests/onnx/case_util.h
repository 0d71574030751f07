/* case_util.h - shared by the engine tests: reading generated cases (model + .npy inputs and
 * expected outputs) and comparing tensors the way ONNX's backend tests do. */
#ifndef HS_TESTS_CASE_UTIL_H
#define HS_TESTS_CASE_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/npy.h"
#include "hotserve/tensor.h"

#ifndef HS_CASES_DIR
#error "HS_CASES_DIR must name the generated cases folder"
#endif

static inline int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* Loads DIR/<prefix>_<k>.npy for k = 0.. until one is missing; returns how many. */
static inline int load_npys(const char *dir, const char *prefix, hs_tensor *out, int max) {
  int n = 0;
  for (; n < max; n++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s_%d.npy", dir, prefix, n);
    if (!file_exists(path)) break;
    hs_error err;
    if (hs_npy_read(path, &out[n], &err)) {
      fprintf(stderr, "%s\n", err.message);
      break;
    }
  }
  return n;
}

static inline void free_tensors(hs_tensor *t, int n) {
  for (int i = 0; i < n; i++) free(t[i].data);
}

/* 0 when actual matches expected: same dtype and shape, |a-e| <= 1e-7 + 1e-3*|e| for floats,
 * exact for everything else. Prints the first difference. */
static inline int compare_tensors(const char *what, const hs_tensor *a, const hs_tensor *e) {
  if (a->dtype != e->dtype) {
    fprintf(stderr, "%s: dtype %d, expected %d\n", what, a->dtype, e->dtype);
    return 1;
  }
  if (a->ndim != e->ndim || memcmp(a->dims, e->dims, sizeof(int64_t) * (size_t)a->ndim) != 0) {
    fprintf(stderr, "%s: shape differs (rank %d vs %d)\n", what, a->ndim, e->ndim);
    return 1;
  }
  int64_t n = hs_shape_numel(a->dims, a->ndim);
  for (int64_t i = 0; i < n; i++) {
    double x, y;
    if (a->dtype == HS_DT_FLOAT32) {
      x = ((const float *)a->data)[i];
      y = ((const float *)e->data)[i];
    } else if (a->dtype == HS_DT_FLOAT64) {
      x = ((const double *)a->data)[i];
      y = ((const double *)e->data)[i];
    } else {
      size_t sz = hs_dtype_size(a->dtype);
      if (memcmp((const char *)a->data + i * sz, (const char *)e->data + i * sz, sz) != 0) {
        fprintf(stderr, "%s: element %lld differs\n", what, (long long)i);
        return 1;
      }
      continue;
    }
    if (isnan(y) ? !isnan(x) : !(fabs(x - y) <= 1e-7 + 1e-3 * fabs(y))) {
      fprintf(stderr, "%s: element %lld is %.9g, expected %.9g\n", what, (long long)i, x, y);
      return 1;
    }
  }
  return 0;
}

#endif

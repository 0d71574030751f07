/* tensor.c - dtype tables and overflow-safe shape arithmetic. */
#include "hotserve/tensor.h"

#include <string.h>

size_t hs_dtype_size(hs_dtype dt) {
  switch (dt) {
#define HS_DTYPE_SIZE(name, onnx, size, kserve, npy) \
  case HS_DT_##name:                                  \
    return size;
    HS_DTYPE_MAP(HS_DTYPE_SIZE)
#undef HS_DTYPE_SIZE
    default:
      return 0;
  }
}

const char *hs_dtype_kserve_name(hs_dtype dt) {
  switch (dt) {
#define HS_DTYPE_KS(name, onnx, size, kserve, npy) \
  case HS_DT_##name:                                \
    return kserve;
    HS_DTYPE_MAP(HS_DTYPE_KS)
#undef HS_DTYPE_KS
    default:
      return NULL;
  }
}

hs_dtype hs_dtype_from_kserve(const char *name) {
  if (!name) return HS_DT_UNDEFINED;
#define HS_DTYPE_FROM_KS(n, onnx, size, kserve, npy) \
  if (strcmp(name, kserve) == 0) return HS_DT_##n;
  HS_DTYPE_MAP(HS_DTYPE_FROM_KS)
#undef HS_DTYPE_FROM_KS
  return HS_DT_UNDEFINED;
}

const char *hs_dtype_npy_descr(hs_dtype dt) {
  switch (dt) {
#define HS_DTYPE_NPY(name, onnx, size, kserve, npy) \
  case HS_DT_##name:                                 \
    return npy;
    HS_DTYPE_MAP(HS_DTYPE_NPY)
#undef HS_DTYPE_NPY
    default:
      return NULL;
  }
}

hs_dtype hs_dtype_from_npy(const char *descr) {
  if (!descr) return HS_DT_UNDEFINED;
  /* numpy writes single-byte types with '|' but accepts '<' and '=' too. */
  char norm[8];
  size_t len = strlen(descr);
  if (len < 2 || len >= sizeof norm) return HS_DT_UNDEFINED;
  memcpy(norm, descr, len + 1);
  if (norm[0] == '=') norm[0] = '<';
#define HS_DTYPE_FROM_NPY(n, onnx, size, kserve, npy)                                   \
  if (strcmp(norm, npy) == 0 || (npy[0] == '|' && strcmp(norm + 1, npy + 1) == 0)) \
    return HS_DT_##n;
  HS_DTYPE_MAP(HS_DTYPE_FROM_NPY)
#undef HS_DTYPE_FROM_NPY
  return HS_DT_UNDEFINED;
}

int64_t hs_shape_numel(const int64_t *dims, int ndim) {
  if (ndim < 0 || ndim > HS_MAX_DIMS) return -1;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (dims[i] < 0) return -1;
    if (dims[i] != 0 && n > INT64_MAX / dims[i]) return -1;
    n *= dims[i];
  }
  return n;
}

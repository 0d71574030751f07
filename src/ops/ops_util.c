/* ops_util.c - helpers shared by the op family files: shapes, broadcasting, axes, errors. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kernels/kernels.h"
#include "ops/ops.h"

int hs_op_errf(hs_error *err, const hs_node *n, int code, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return hs_error_set(err, code, "node '%s' (%s): %s", n->name, n->op_type, msg);
}

int hs_set_shape(hs_tensor *t, hs_dtype dt, int ndim, const int64_t *dims, const hs_node *n, hs_error *err) {
  if (ndim < 0 || ndim > HS_MAX_DIMS) return hs_op_errf(err, n, HS_UNSUPPORTED, "output rank %d", ndim);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->dims[i] = dims[i];
  for (int i = 0; i < ndim; i++)
    if (dims[i] < 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output dimension %d is negative (%lld)", i, (long long)dims[i]);
  int64_t c = hs_shape_numel(t->dims, ndim);
  size_t esz = hs_dtype_size(dt);
  if (c < 0 || esz == 0 || (uint64_t)c > (uint64_t)INT64_MAX / esz)
    return hs_op_errf(err, n, HS_LIMIT, "output shape is too large");
  t->nbytes = (size_t)c * esz;
  return 0;
}

int hs_broadcast_shape(const hs_tensor *a, const hs_tensor *b, int *ndim, int64_t *dims, const hs_node *n,
                       hs_error *err) {
  int r = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->ndim), ib = i - (r - b->ndim);
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    if (da == db || db == 1) dims[i] = da;
    else if (da == 1) dims[i] = db;
    else return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "shapes do not broadcast (dimension %d: %lld vs %lld)", i,
                           (long long)da, (long long)db);
  }
  *ndim = r;
  return 0;
}

int hs_norm_axis(int64_t axis, int r, int *out, const hs_node *n, hs_error *err) {
  if (axis < -r || axis >= (r > 0 ? r : 1))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis %lld out of range for rank %d", (long long)axis, r);
  *out = (int)(axis < 0 ? axis + r : axis);
  return 0;
}

int64_t hs_get_int(const hs_tensor *t, int64_t i) {
  switch (t->dtype) {
    case HS_DT_INT64: return ((const int64_t *)t->data)[i];
    case HS_DT_INT32: return ((const int32_t *)t->data)[i];
    default: return 0;
  }
}

double hs_get_scalar(const hs_tensor *t) {
  if (!t->data || t->nbytes == 0) return 0;
  switch (t->dtype) {
    case HS_DT_FLOAT32: return *(const float *)t->data;
    case HS_DT_FLOAT64: return *(const double *)t->data;
    case HS_DT_INT64: return (double)*(const int64_t *)t->data;
    case HS_DT_INT32: return *(const int32_t *)t->data;
    case HS_DT_INT8: return *(const int8_t *)t->data;
    case HS_DT_UINT8: case HS_DT_BOOL: return *(const uint8_t *)t->data;
    default: return 0;
  }
}

void hs_sgemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,
              int64_t ldc, int accumulate) {
  /* the kernels layer's GEMM (oneDNN's jit sgemm); the loops below stay as the fallback */
  if (hs_kernel_sgemm(0, 0, M, N, K, 1.0f, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C, ldc) == 0) return;
  enum { KB = 256, NB = 512 };
  if (!accumulate)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = 0;
  for (int64_t j0 = 0; j0 < N; j0 += NB) {
    int64_t nb = N - j0 < NB ? N - j0 : NB;
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
      int64_t kb = K - k0 < KB ? K - k0 : KB;
      for (int64_t i = 0; i < M; i++) {
        float *restrict c = C + i * ldc + j0;
        const float *a = A + i * lda + k0;
        for (int64_t k = 0; k < kb; k++) {
          const float av = a[k];
          const float *restrict b = B + (k0 + k) * ldb + j0;
          for (int64_t j = 0; j < nb; j++) c[j] += av * b[j];
        }
      }
    }
  }
}

double hs_load_f64(const hs_tensor *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
    case HS_DT_FLOAT32: return ((const float *)p)[i];
    case HS_DT_FLOAT64: return ((const double *)p)[i];
    case HS_DT_INT64: return (double)((const int64_t *)p)[i];
    case HS_DT_INT32: return ((const int32_t *)p)[i];
    case HS_DT_INT16: return ((const int16_t *)p)[i];
    case HS_DT_INT8: return ((const int8_t *)p)[i];
    case HS_DT_UINT64: return (double)((const uint64_t *)p)[i];
    case HS_DT_UINT32: return ((const uint32_t *)p)[i];
    case HS_DT_UINT16: return ((const uint16_t *)p)[i];
    case HS_DT_UINT8: case HS_DT_BOOL: return ((const uint8_t *)p)[i];
    default: return 0;
  }
}

static int64_t to_i64(double v) {
  if (!(v > -9.2e18 && v < 9.2e18)) return 0;
  return (int64_t)v;
}

void hs_store_f64(hs_tensor *t, int64_t i, double v) {
  void *p = t->data;
  switch (t->dtype) {
    case HS_DT_FLOAT32: ((float *)p)[i] = (float)v; break;
    case HS_DT_FLOAT64: ((double *)p)[i] = v; break;
    case HS_DT_INT64: ((int64_t *)p)[i] = to_i64(v); break;
    case HS_DT_INT32: ((int32_t *)p)[i] = (int32_t)(uint32_t)to_i64(v); break;
    case HS_DT_INT16: ((int16_t *)p)[i] = (int16_t)(uint16_t)to_i64(v); break;
    case HS_DT_INT8: ((int8_t *)p)[i] = (int8_t)(uint8_t)to_i64(v); break;
    case HS_DT_UINT64: ((uint64_t *)p)[i] = v >= 0 && v < 1.8e19 ? (uint64_t)v : 0; break;
    case HS_DT_UINT32: ((uint32_t *)p)[i] = (uint32_t)to_i64(v); break;
    case HS_DT_UINT16: ((uint16_t *)p)[i] = (uint16_t)to_i64(v); break;
    case HS_DT_UINT8: ((uint8_t *)p)[i] = (uint8_t)to_i64(v); break;
    case HS_DT_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: break;
  }
}

int hs_need_dtype(const hs_node *n, const hs_tensor *t, const char *what, hs_error *err, ...) {
  va_list ap;
  va_start(ap, err);
  for (;;) {
    int dt = va_arg(ap, int);
    if (dt == HS_DT_UNDEFINED) break;
    if (dt == (int)t->dtype) {
      va_end(ap);
      return 0;
    }
  }
  va_end(ap);
  const char *name = hs_dtype_kserve_name(t->dtype);
  return hs_op_errf(err, n, HS_UNSUPPORTED, "%s of type %s is not supported (opset %d)", what, name ? name : "?",
                    n->opset);
}

int hs_post_ops_room(const hs_post_ops *p, int steps) {
  int used = 0;
  for (int i = 0; i < p->count; i++)
    used += p->op[i].kind == HS_POST_ACT ? hs_post_act_steps(p->op[i].act) : 1;
  return p->count < HS_KERNEL_MAX_POST && used + steps <= HS_KERNEL_MAX_POST;
}

int hs_known_dtype(const hs_node *n, const hs_tensor *t, hs_error *err) {
  if (hs_dtype_size(t->dtype) == 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "input type not supported");
  return 0;
}

int hs_read_ints(const hs_node *n, const hs_tensor *t, const char *what, int64_t *v, int max, int *count,
                     hs_error *err) {
  if ((t->dtype != HS_DT_INT64 && t->dtype != HS_DT_INT32) || t->ndim > 1)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%s must be a 1-D int64 tensor", what);
  int64_t c = hs_numel(t);
  if (c > max) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%s has %lld entries (at most %d)", what, (long long)c, max);
  for (int64_t i = 0; i < c; i++) v[i] = hs_get_int(t, i);
  *count = (int)c;
  return 0;
}

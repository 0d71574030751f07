/* generate.c - Shape, Size, Cast, CastLike, ConstantOfShape, Range: shapes, types and generated tensors. */
#include <math.h>
#include <string.h>

#include "base/half.h"
#include "ops/ops.h"

/* ---- Shape ------------------------------------------------------------------------------------ */

typedef struct {
  int64_t start, end;
  int has_end;
} shape_params;

static int shape_check(hs_node *n, const hs_graph *g, hs_error *err) {
  shape_params *p = (shape_params *)n->params.bytes;
  int rc = hs_node_only_attrs(n, n->opset >= 15 ? "start,end" : "", err);
  if (rc) return rc;
  p->has_end = hs_node_attr(n, "end") != NULL;
  if ((rc = hs_attr_int(n, "start", 0, &p->start, err)) || (rc = hs_attr_int(n, "end", 0, &p->end, err))) return rc;
  return 0;
}

static void shape_range(const shape_params *p, int r, int64_t *s, int64_t *e) {
  int64_t a = p->start < 0 ? p->start + r : p->start, b = p->has_end ? (p->end < 0 ? p->end + r : p->end) : r;
  a = a < 0 ? 0 : a > r ? r : a;
  b = b < 0 ? 0 : b > r ? r : b;
  *s = a;
  *e = b < a ? a : b;
}

static int shape_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t s, e;
  shape_range((const shape_params *)n->params.bytes, in[0].ndim, &s, &e);
  int64_t d = e - s;
  return hs_set_shape(&out[0], HS_DT_INT64, 1, &d, n, err);
}

static int shape_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  int64_t s, e;
  shape_range((const shape_params *)n->params.bytes, in[0].ndim, &s, &e);
  for (int64_t i = s; i < e; i++) ((int64_t *)out[0].data)[i - s] = in[0].dims[i];
  return 0;
}

/* ---- Cast ------------------------------------------------------------------------------------- */

static int cast_check(hs_node *n, const hs_graph *g, hs_error *err) {
  int64_t to;
  int rc = hs_node_only_attrs(n, "to", err);
  if (rc || (rc = hs_attr_int(n, "to", 0, &to, err))) return rc;
  if (hs_dtype_size((hs_dtype)to) == 0 || to == HS_DT_UINT64 || to == HS_DT_UINT32)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "cast to type %lld is not supported (opset %d)", (long long)to, n->opset);
  *(int64_t *)n->params.bytes = to;
  return 0;
}

static int cast_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_FLOAT16, HS_DT_INT64,
                         HS_DT_INT32, HS_DT_INT16, HS_DT_INT8, HS_DT_UINT8, HS_DT_UINT16, HS_DT_BOOL, HS_DT_UNDEFINED);
  if (rc) return rc;
  return hs_set_shape(&out[0], (hs_dtype)*(const int64_t *)n->params.bytes, in[0].ndim, in[0].dims, n, err);
}

static double load_as_double(const void *p, hs_dtype dt, int64_t i, int64_t *as_int, int *is_int) {
  *is_int = 1;
  switch (dt) {
    case HS_DT_FLOAT32: *is_int = 0; return ((const float *)p)[i];
    case HS_DT_FLOAT64: *is_int = 0; return ((const double *)p)[i];
    case HS_DT_FLOAT16: *is_int = 0; return hs_half_to_float(((const uint16_t *)p)[i]);
    case HS_DT_INT64: *as_int = ((const int64_t *)p)[i]; break;
    case HS_DT_INT32: *as_int = ((const int32_t *)p)[i]; break;
    case HS_DT_INT16: *as_int = ((const int16_t *)p)[i]; break;
    case HS_DT_INT8: *as_int = ((const int8_t *)p)[i]; break;
    case HS_DT_UINT16: *as_int = ((const uint16_t *)p)[i]; break;
    case HS_DT_UINT8: *as_int = ((const uint8_t *)p)[i]; break;
    case HS_DT_BOOL: *as_int = ((const uint8_t *)p)[i] != 0; break;
    default: *as_int = 0; break;
  }
  return (double)*as_int;
}

/* float -> integer conversions saturate-free but never invoke UB: NaN and out-of-range become 0 / wrap */
static int64_t f2i(double v) {
  if (!(v > -9.2e18 && v < 9.2e18)) return v != v ? 0 : (v > 0 ? INT64_MAX : INT64_MIN);
  return (int64_t)v;
}

static int cast_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  int64_t c = hs_numel(&in[0]);
  hs_dtype to = out[0].dtype;
  for (int64_t i = 0; i < c; i++) {
    int64_t iv = 0;
    int is_int;
    double v = load_as_double(in[0].data, in[0].dtype, i, &iv, &is_int);
    int64_t x = is_int ? iv : f2i(v);
    void *o = out[0].data;
    switch (to) {
      case HS_DT_FLOAT32: ((float *)o)[i] = (float)v; break;
      case HS_DT_FLOAT64: ((double *)o)[i] = v; break;
      case HS_DT_FLOAT16: ((uint16_t *)o)[i] = hs_float_to_half((float)v); break;
      case HS_DT_INT64: ((int64_t *)o)[i] = x; break;
      case HS_DT_INT32: ((int32_t *)o)[i] = (int32_t)(uint32_t)x; break;
      case HS_DT_INT16: ((int16_t *)o)[i] = (int16_t)(uint16_t)x; break;
      case HS_DT_INT8: ((int8_t *)o)[i] = (int8_t)(uint8_t)x; break;
      case HS_DT_UINT16: ((uint16_t *)o)[i] = (uint16_t)x; break;
      case HS_DT_UINT8: ((uint8_t *)o)[i] = (uint8_t)x; break;
      case HS_DT_BOOL: ((uint8_t *)o)[i] = is_int ? iv != 0 : v != 0; break;
      default: return hs_op_errf(err, n, HS_UNSUPPORTED, "cast target not supported");
    }
  }
  return 0;
}

/* ---- ConstantOfShape -------------------------------------------------------------------------- */

typedef struct {
  hs_dtype dt;
  unsigned char value[8];
} cos_params;

static int cos_check(hs_node *n, const hs_graph *g, hs_error *err) {
  cos_params *p = (cos_params *)n->params.bytes;
  int rc = hs_node_only_attrs(n, "value", err);
  if (rc) return rc;
  const hs_attr *a = hs_node_attr(n, "value");
  memset(p, 0, sizeof *p);
  p->dt = HS_DT_FLOAT32;
  if (a) {
    if (a->type != HS_ATTR_TENSOR || hs_shape_numel(a->tensor->t.dims, a->tensor->t.ndim) != 1 ||
        a->tensor->t.nbytes > 8)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "value must be a one-element tensor");
    p->dt = a->tensor->t.dtype;
    hs_memcpy(p->value, a->tensor->t.data, a->tensor->t.nbytes);
  }
  return 0;
}

static int cos_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t d[HS_MAX_DIMS];
  int c, rc;
  if ((rc = hs_read_ints(n, &in[0], "shape", d, HS_MAX_DIMS, &c, err))) return rc;
  return hs_set_shape(&out[0], ((const cos_params *)n->params.bytes)->dt, c, d, n, err);
}

static int cos_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  const cos_params *p = (const cos_params *)n->params.bytes;
  size_t esz = hs_dtype_size(p->dt);
  int64_t c = hs_numel(&out[0]);
  for (int64_t i = 0; i < c; i++) hs_memcpy((char *)out[0].data + (size_t)i * esz, p->value, esz);
  return 0;
}

/* ---- Range, Size, CastLike -------------------------------------------------------------------- */

static int range_count(const hs_node *n, const hs_tensor *in, int64_t *count, hs_error *err) {
  for (int i = 0; i < 3; i++)
    if (in[i].dtype != in[0].dtype || hs_numel(&in[i]) != 1)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "start, limit and delta must be scalars of one type");
  double s = hs_load_f64(&in[0], 0), l = hs_load_f64(&in[1], 0), d = hs_load_f64(&in[2], 0);
  if (d == 0 || isnan(d) || isnan(s) || isnan(l)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "delta must be non-zero");
  double c = ceil((l - s) / d);
  if (c > (double)((int64_t)1 << 40)) return hs_op_errf(err, n, HS_LIMIT, "range too long");
  *count = c > 0 ? (int64_t)c : 0;
  return 0;
}

static int range_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "start", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT16, HS_DT_INT32,
                         HS_DT_INT64, HS_DT_UNDEFINED);
  int64_t c;
  if (rc || (rc = range_count(n, in, &c, err))) return rc;
  return hs_set_shape(&out[0], in[0].dtype, 1, &c, n, err);
}

static int range_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  int64_t c;
  int rc = range_count(n, in, &c, err);
  if (rc) return rc;
  if (in[0].dtype == HS_DT_INT64) {
    int64_t s = ((const int64_t *)in[0].data)[0], d = ((const int64_t *)in[2].data)[0];
    for (int64_t i = 0; i < c; i++) ((int64_t *)out[0].data)[i] = (int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d);
    return 0;
  }
  double s = hs_load_f64(&in[0], 0), d = hs_load_f64(&in[2], 0);
  if (in[0].dtype == HS_DT_FLOAT32) { /* accumulate in float as the reference does */
    float v = (float)s;
    for (int64_t i = 0; i < c; i++, v += (float)d) ((float *)out[0].data)[i] = v;
    return 0;
  }
  for (int64_t i = 0; i < c; i++) hs_store_f64(&out[0], i, s + (double)i * d);
  return 0;
}

static int size_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  return hs_set_shape(&out[0], HS_DT_INT64, 0, NULL, n, err);
}

static int size_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  *(int64_t *)out[0].data = hs_numel(&in[0]);
  return 0;
}

static int castlike_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_FLOAT16, HS_DT_INT64,
                         HS_DT_INT32, HS_DT_INT16, HS_DT_INT8, HS_DT_UINT8, HS_DT_UINT16, HS_DT_BOOL, HS_DT_UNDEFINED);
  if (rc) return rc;
  if (hs_dtype_size(in[1].dtype) == 0 || in[1].dtype == HS_DT_UINT32 || in[1].dtype == HS_DT_UINT64)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "target type not supported");
  return hs_set_shape(&out[0], in[1].dtype, in[0].ndim, in[0].dims, n, err);
}

const hs_op_impl hs_op_impl_shape = {
    .check = shape_check,
    .infer = shape_infer,
    .run = shape_run,
};
const hs_op_impl hs_op_impl_size = {
    .infer = size_infer,
    .run = size_run,
};
const hs_op_impl hs_op_impl_cast = {
    .check = cast_check,
    .infer = cast_infer,
    .run = cast_run,
};
const hs_op_impl hs_op_impl_cast_like = {
    .infer = castlike_infer,
    .run = cast_run,
};
const hs_op_impl hs_op_impl_constant_of_shape = {
    .check = cos_check,
    .infer = cos_infer,
    .run = cos_run,
};
const hs_op_impl hs_op_impl_range = {
    .infer = range_infer,
    .run = range_run,
};

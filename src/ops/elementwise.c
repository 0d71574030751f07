/* elementwise.c - binary ops with numpy broadcasting (Add, Sub, Mul, Div, Pow, PRelu), unary
 * activations and math (Relu, Sigmoid, Tanh, Erf, ...), Clip, Identity and inference Dropout. */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

/* ---- broadcasting ----------------------------------------------------------------------------- */

/* Output shape of rank r and, per input, element strides with 0 on broadcast dimensions. */
typedef struct {
  int r;
  int64_t dims[HS_MAX_DIMS];
  int64_t sa[HS_MAX_DIMS], sb[HS_MAX_DIMS];
} bcast;

static void strides_for(const hs_tensor *t, int r, const int64_t *odims, int64_t *s) {
  int64_t acc = 1;
  for (int i = r - 1; i >= 0; i--) {
    int ti = i - (r - t->ndim);
    int64_t d = ti >= 0 ? t->dims[ti] : 1;
    s[i] = d == 1 ? 0 : acc;
    acc *= d;
  }
}

static void bcast_init(bcast *b, const hs_tensor *x, const hs_tensor *y, const hs_tensor *out) {
  b->r = out->ndim;
  hs_memcpy(b->dims, out->dims, sizeof b->dims);
  strides_for(x, b->r, b->dims, b->sa);
  strides_for(y, b->r, b->dims, b->sb);
}

typedef void (*row_fn)(const void *a, int64_t sa, const void *b, int64_t sb, void *o, int64_t n);

/* Calls fn once per innermost row; element offsets follow the broadcast strides. */
static void bcast_run(const bcast *b, const void *a, size_t asz, const void *y, size_t bsz, void *o, size_t osz,
                      row_fn fn) {
  if (b->r == 0) {
    fn(a, 0, y, 0, o, 1);
    return;
  }
  int64_t inner = b->dims[b->r - 1];
  int64_t outer = 1;
  for (int i = 0; i < b->r - 1; i++) outer *= b->dims[i];
  if (inner == 0) return;
  int64_t idx[HS_MAX_DIMS] = {0};
  int64_t oa = 0, ob = 0;
  for (int64_t k = 0; k < outer; k++) {
    fn((const char *)a + oa * (int64_t)asz, b->sa[b->r - 1], (const char *)y + ob * (int64_t)bsz,
       b->sb[b->r - 1], (char *)o + k * inner * (int64_t)osz, inner);
    for (int d = b->r - 2; d >= 0; d--) {
      idx[d]++;
      oa += b->sa[d];
      ob += b->sb[d];
      if (idx[d] < b->dims[d]) break;
      oa -= b->sa[d] * b->dims[d];
      ob -= b->sb[d] * b->dims[d];
      idx[d] = 0;
    }
  }
}

/* ---- binary kernels --------------------------------------------------------------------------- */

enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_PRELU, B_MAX, B_MIN };

#define ROW(name, T, expr)                                                                          \
  static void name(const void *pa, int64_t sa, const void *pb, int64_t sb, void *po, int64_t n) { \
    const T *a = pa, *b = pb;                                                                       \
    T *o = po;                                                                                      \
    if (sa == 1 && sb == 1) {                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T x = a[i], y = b[i];                                                                       \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    } else if (sa == 1 && sb == 0) {                                                                \
      T y = b[0];                                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T x = a[i];                                                                                 \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    } else {                                                                                        \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T x = a[i * sa], y = b[i * sb];                                                             \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    }                                                                                               \
  }

#define ROWS_FOR(T, tag)                          \
  ROW(add_##tag, T, x + y)                        \
  ROW(sub_##tag, T, x - y)                        \
  ROW(mul_##tag, T, x * y)                        \
  ROW(max_##tag, T, x > y ? x : y)                \
  ROW(min_##tag, T, x < y ? x : y)

ROWS_FOR(float, f32)
ROWS_FOR(double, f64)
ROWS_FOR(int32_t, i32)
ROWS_FOR(int64_t, i64)
ROWS_FOR(int8_t, i8)
ROWS_FOR(uint8_t, u8)
ROWS_FOR(int16_t, i16)
ROWS_FOR(uint16_t, u16)
ROWS_FOR(uint32_t, u32)
ROWS_FOR(uint64_t, u64)
ROW(div_f32, float, x / y)
ROW(div_f64, double, x / y)
/* integer division: run() refuses a zero divisor first; the guards only keep C defined */
ROW(div_i32, int32_t, (y == 0 || (y == -1 && x == INT32_MIN)) ? 0 : x / y)
ROW(div_i64, int64_t, (y == 0 || (y == -1 && x == INT64_MIN)) ? 0 : x / y)
ROW(div_i8, int8_t, (y == 0 || (y == -1 && x == INT8_MIN)) ? 0 : x / y)
ROW(div_i16, int16_t, (y == 0 || (y == -1 && x == INT16_MIN)) ? 0 : x / y)
ROW(div_u8, uint8_t, y == 0 ? 0 : x / y)
ROW(div_u16, uint16_t, y == 0 ? 0 : x / y)
ROW(div_u32, uint32_t, y == 0 ? 0 : x / y)
ROW(div_u64, uint64_t, y == 0 ? 0 : x / y)
ROW(prelu_f32, float, x < 0 ? x * y : x)
ROW(pow_f32, float, powf(x, y))
ROW(pow_f64, double, pow(x, y))

typedef struct {
  int kind;
  int legacy;      /* opset < 7: "broadcast" / "axis" attributes instead of numpy broadcasting */
  int broadcast;
  int64_t axis;    /* legacy: where B's dims start in A; -1 = aligned to the right */
} binary_params;

/* Before opset 7, B broadcasts to A only with broadcast=1, placed at `axis`: give B's view the
 * trailing 1s that make numpy broadcasting mean the same thing. */
static int legacy_view(const hs_node *n, const hs_tensor *a, const hs_tensor *b, hs_tensor *view, hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  *view = *b;
  if (!p->legacy) return 0;
  if (!p->broadcast) {
    if (a->ndim != b->ndim || memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->ndim) != 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "shapes differ and broadcast is 0");
    return 0;
  }
  if (p->axis < 0) return 0;
  int64_t trailing = a->ndim - p->axis - b->ndim;
  if (p->axis > a->ndim || trailing < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  for (int64_t i = 0; i < trailing; i++) view->dims[view->ndim++] = 1;
  return 0;
}

static int binary_check(hs_node *n, const hs_graph *g, hs_error *err) {
  binary_params *p = (binary_params *)n->params.bytes;
  const char *t = n->op_type;
  p->kind = strcmp(t, "Add") == 0   ? B_ADD
            : strcmp(t, "Sub") == 0 ? B_SUB
            : strcmp(t, "Mul") == 0 ? B_MUL
            : strcmp(t, "Div") == 0 ? B_DIV
            : strcmp(t, "Pow") == 0 ? B_POW
            : strcmp(t, "PRelu") == 0 ? B_PRELU
            : strcmp(t, "Max") == 0 ? B_MAX
                                    : B_MIN;
  p->legacy = n->opset < 7;
  int rc = hs_node_only_attrs(n, p->legacy ? "broadcast,axis" : "", err);
  int64_t b;
  if (rc || (rc = hs_attr_int(n, "broadcast", 0, &b, err)) || (rc = hs_attr_int(n, "axis", -1, &p->axis, err)))
    return rc;
  p->broadcast = b != 0;
  if (p->legacy && p->kind == B_PRELU) { /* opset 6 PRelu: slope [C] runs along axis 1 */
    p->broadcast = 1;
    p->axis = 1;
  }
  return 0;
}

#define INT_TYPES HS_DT_INT32, HS_DT_INT64, HS_DT_INT8, HS_DT_UINT8, HS_DT_INT16, HS_DT_UINT16, HS_DT_UINT32, HS_DT_UINT64

static int binary_infer(const hs_node *n, const hs_tensor *in_raw, int nin, hs_tensor *out, int nout, hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  int rc;
  hs_tensor in[2] = {in_raw[0]};
  if ((rc = legacy_view(n, &in_raw[0], &in_raw[1], &in[1], err))) return rc;
  if (p->kind == B_POW) {
    if ((rc = hs_need_dtype(n, &in[0], "base", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT32, HS_DT_INT64,
                            HS_DT_UNDEFINED)))
      return rc;
    if ((rc = hs_need_dtype(n, &in[1], "exponent", err, HS_DT_FLOAT32, HS_DT_FLOAT64, INT_TYPES, HS_DT_UNDEFINED)))
      return rc;
  } else if (p->kind == B_PRELU) {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
    if (in[1].dtype != in[0].dtype) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs differ in type");
  } else {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, INT_TYPES, HS_DT_UNDEFINED)))
      return rc;
    if (in[1].dtype != in[0].dtype) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs differ in type");
  }
  int r;
  int64_t dims[HS_MAX_DIMS];
  if ((rc = hs_broadcast_shape(&in[0], &in[1], &r, dims, n, err))) return rc;
  if (p->kind == B_PRELU) { /* the slope broadcasts to the input, never the other way */
    if (r != in[0].ndim || memcmp(dims, in[0].dims, sizeof(int64_t) * (size_t)r) != 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "slope does not broadcast to the input");
  }
  return hs_set_shape(&out[0], in[0].dtype, r, dims, n, err);
}

static row_fn pick_row(int kind, hs_dtype dt) {
#define PICK(tag)           \
  switch (kind) {           \
    case B_ADD: return add_##tag; \
    case B_SUB: return sub_##tag; \
    case B_MUL: return mul_##tag; \
    case B_DIV: return div_##tag; \
    case B_MAX: return max_##tag; \
    case B_MIN: return min_##tag; \
    default: break;         \
  }                         \
  if (kind == B_POW && dt == HS_DT_FLOAT32) return pow_f32; \
  if (kind == B_POW && dt == HS_DT_FLOAT64) return pow_f64; \
  return NULL;              \
  {                         \
  }
  if (kind == B_PRELU) return dt == HS_DT_FLOAT32 ? prelu_f32 : NULL;
  switch (dt) {
    case HS_DT_FLOAT32: PICK(f32)
    case HS_DT_FLOAT64: PICK(f64)
    case HS_DT_INT32: PICK(i32)
    case HS_DT_INT64: PICK(i64)
    case HS_DT_INT8: PICK(i8)
    case HS_DT_UINT8: PICK(u8)
    case HS_DT_INT16: PICK(i16)
    case HS_DT_UINT16: PICK(u16)
    case HS_DT_UINT32: PICK(u32)
    case HS_DT_UINT64: PICK(u64)
    default: return NULL;
  }
#undef PICK
}

static int binary_run(const hs_node *n, const hs_tensor *in_raw, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  hs_tensor in[2] = {in_raw[0]};
  int rc = legacy_view(n, &in_raw[0], &in_raw[1], &in[1], err);
  if (rc) return rc;
  bcast b;
  bcast_init(&b, &in[0], &in[1], &out[0]);
  size_t esz = hs_dtype_size(out[0].dtype);
  if (p->kind == B_POW && (in[1].dtype != in[0].dtype || (in[0].dtype != HS_DT_FLOAT32 && in[0].dtype != HS_DT_FLOAT64))) {
    /* mixed or integer types: element by element through double */
    int64_t total = hs_numel(&out[0]);
    if (total == 0) return 0;
    int64_t idx[HS_MAX_DIMS] = {0};
    for (int64_t k = 0; k < total; k++) {
      int64_t oa = 0, ob = 0;
      for (int d = 0; d < b.r; d++) {
        oa += idx[d] * b.sa[d];
        ob += idx[d] * b.sb[d];
      }
      double x = hs_load_f64(&in[0], oa), y = hs_load_f64(&in[1], ob);
      if (out[0].dtype == HS_DT_FLOAT32 && in[1].dtype == HS_DT_FLOAT32)
        ((float *)out[0].data)[k] = powf((float)x, (float)y);
      else
        hs_store_f64(&out[0], k, pow(x, y));
      for (int d = b.r - 1; d >= 0; d--) {
        if (++idx[d] < b.dims[d]) break;
        idx[d] = 0;
      }
    }
    return 0;
  }
  if (p->kind == B_DIV && in[1].dtype != HS_DT_FLOAT32 && in[1].dtype != HS_DT_FLOAT64) {
    int64_t m = hs_numel(&in[1]);
    for (int64_t i = 0; i < m; i++)
      if (hs_load_f64(&in[1], i) == 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "integer division by zero");
  }
  row_fn fn = pick_row(p->kind, out[0].dtype);
  if (!fn) return hs_op_errf(err, n, HS_UNSUPPORTED, "type not supported");
  bcast_run(&b, in[0].data, esz, in[1].data, esz, out[0].data, esz, fn);
  return 0;
}

/* ---- unary ------------------------------------------------------------------------------------ */

enum { U_RELU, U_LEAKY, U_SIGMOID, U_HSIGMOID, U_HSWISH, U_TANH, U_ERF, U_EXP, U_LOG, U_NEG, U_ABS, U_RECIP,
       U_SQRT, U_FLOOR, U_CEIL, U_ELU, U_SOFTPLUS, U_CLIP, U_IDENTITY };

typedef struct {
  int kind;
  float alpha, beta;
  float lo, hi; /* Clip before opset 11 */
} unary_params;

static int unary_check(hs_node *n, const hs_graph *g, hs_error *err) {
  unary_params *p = (unary_params *)n->params.bytes;
  static const struct { const char *name; int kind; const char *attrs; float alpha, beta; } k[] = {
      {"Relu", U_RELU, "", 0, 0},
      {"LeakyRelu", U_LEAKY, "alpha", 0.01f, 0},
      {"Sigmoid", U_SIGMOID, "", 0, 0},
      {"HardSigmoid", U_HSIGMOID, "alpha,beta", 0.2f, 0.5f},
      {"HardSwish", U_HSWISH, "", 0, 0},
      {"Tanh", U_TANH, "", 0, 0},
      {"Erf", U_ERF, "", 0, 0},
      {"Exp", U_EXP, "", 0, 0},
      {"Log", U_LOG, "", 0, 0},
      {"Neg", U_NEG, "", 0, 0},
      {"Abs", U_ABS, "", 0, 0},
      {"Reciprocal", U_RECIP, "", 0, 0},
      {"Sqrt", U_SQRT, "", 0, 0},
      {"Floor", U_FLOOR, "", 0, 0},
      {"Ceil", U_CEIL, "", 0, 0},
      {"Elu", U_ELU, "alpha", 1.0f, 0},
      {"Softplus", U_SOFTPLUS, "", 0, 0},
      {"Clip", U_CLIP, "min,max", 0, 0},
      {"Identity", U_IDENTITY, "", 0, 0},
      {"Dropout", U_IDENTITY, "ratio,seed", 0, 0},
  };
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
    if (strcmp(n->op_type, k[i].name) != 0) continue;
    p->kind = k[i].kind;
    int rc = hs_node_only_attrs(n, k[i].attrs, err);
    if (rc) return rc;
    if ((rc = hs_attr_float(n, "alpha", k[i].alpha, &p->alpha, err))) return rc;
    if ((rc = hs_attr_float(n, "beta", k[i].beta, &p->beta, err))) return rc;
    if (p->kind == U_CLIP) {
      if ((rc = hs_attr_float(n, "min", -INFINITY, &p->lo, err))) return rc;
      if ((rc = hs_attr_float(n, "max", INFINITY, &p->hi, err))) return rc;
      if (n->opset >= 11 && (hs_node_attr(n, "min") || hs_node_attr(n, "max")))
        return hs_op_errf(err, n, HS_PARSE, "min/max are inputs from opset 11 on");
    }
    return 0;
  }
  return hs_op_errf(err, n, HS_INTERNAL, "not a unary op");
}

static int unary_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const unary_params *p = (const unary_params *)n->params.bytes;
  int rc;
  if (p->kind == U_IDENTITY) {
    if (in[0].dtype == HS_DT_UNDEFINED || hs_dtype_size(in[0].dtype) == 0)
      return hs_op_errf(err, n, HS_UNSUPPORTED, "input type not supported");
    if (strcmp(n->op_type, "Dropout") == 0 && nin > 2 && HS_PRESENT(&in[2])) {
      if (!in[2].data) return hs_op_errf(err, n, HS_UNSUPPORTED, "training_mode must be a constant");
      if (hs_get_scalar(&in[2]) != 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "training mode is not supported");
    }
    if (nout > 1 && (rc = hs_set_shape(&out[1], HS_DT_BOOL, in[0].ndim, in[0].dims, n, err))) return rc;
  } else if ((p->kind == U_NEG || p->kind == U_ABS) &&
             (in[0].dtype == HS_DT_INT64 || in[0].dtype == HS_DT_INT32)) {
    /* integer negation / abs is fine too */
  } else if (p->kind == U_CLIP && in[0].dtype != HS_DT_FLOAT32) {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT64, INT_TYPES, HS_DT_UNDEFINED))) return rc;
  } else if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) {
    return rc;
  }
  if (p->kind == U_CLIP)
    for (int i = 1; i < nin && i < 3; i++)
      if (HS_PRESENT(&in[i]) && (in[i].dtype != in[0].dtype || hs_numel(&in[i]) != 1))
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "min/max must be scalars of the input's type");
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err);
}

static inline float sigmoidf(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static int unary_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  const unary_params *p = (const unary_params *)n->params.bytes;
  int64_t c = hs_numel(&in[0]);
  if (p->kind == U_IDENTITY) {
    if (out[0].nbytes && out[0].data != in[0].data) hs_memcpy(out[0].data, in[0].data, out[0].nbytes);
    if (nout > 1 && out[1].data) memset(out[1].data, 1, out[1].nbytes);
    return 0;
  }
  if (p->kind == U_CLIP && in[0].dtype != HS_DT_FLOAT32) {
    double lo = -INFINITY, hi = INFINITY;
    if (nin > 1 && HS_PRESENT(&in[1])) lo = hs_load_f64(&in[1], 0);
    if (nin > 2 && HS_PRESENT(&in[2])) hi = hs_load_f64(&in[2], 0);
    for (int64_t i = 0; i < c; i++) {
      double v = hs_load_f64(&in[0], i);
      v = v < lo ? lo : v;
      hs_store_f64(&out[0], i, v > hi ? hi : v);
    }
    return 0;
  }
  if (in[0].dtype == HS_DT_INT64 || in[0].dtype == HS_DT_INT32) {
    for (int64_t i = 0; i < c; i++) {
      int64_t v = hs_get_int(&in[0], i);
      v = p->kind == U_NEG ? (int64_t)(0ull - (uint64_t)v) : (v < 0 ? (int64_t)(0ull - (uint64_t)v) : v);
      if (in[0].dtype == HS_DT_INT64) ((int64_t *)out[0].data)[i] = v;
      else ((int32_t *)out[0].data)[i] = (int32_t)v;
    }
    return 0;
  }
  const float *x = in[0].data;
  float *y = out[0].data;
  const float a = p->alpha, b = p->beta;
  switch (p->kind) {
    case U_RELU: for (int64_t i = 0; i < c; i++) y[i] = x[i] > 0 ? x[i] : 0; break;
    case U_LEAKY: for (int64_t i = 0; i < c; i++) y[i] = x[i] >= 0 ? x[i] : a * x[i]; break;
    case U_SIGMOID: for (int64_t i = 0; i < c; i++) y[i] = sigmoidf(x[i]); break;
    case U_HSIGMOID: for (int64_t i = 0; i < c; i++) y[i] = fmaxf(0, fminf(1, a * x[i] + b)); break;
    case U_HSWISH: for (int64_t i = 0; i < c; i++) y[i] = x[i] * fmaxf(0, fminf(1, x[i] / 6.0f + 0.5f)); break;
    case U_TANH: for (int64_t i = 0; i < c; i++) y[i] = tanhf(x[i]); break;
    case U_ERF: for (int64_t i = 0; i < c; i++) y[i] = erff(x[i]); break;
    case U_EXP: for (int64_t i = 0; i < c; i++) y[i] = expf(x[i]); break;
    case U_LOG: for (int64_t i = 0; i < c; i++) y[i] = logf(x[i]); break;
    case U_NEG: for (int64_t i = 0; i < c; i++) y[i] = -x[i]; break;
    case U_ABS: for (int64_t i = 0; i < c; i++) y[i] = fabsf(x[i]); break;
    case U_RECIP: for (int64_t i = 0; i < c; i++) y[i] = 1.0f / x[i]; break;
    case U_SQRT: for (int64_t i = 0; i < c; i++) y[i] = sqrtf(x[i]); break;
    case U_FLOOR: for (int64_t i = 0; i < c; i++) y[i] = floorf(x[i]); break;
    case U_CEIL: for (int64_t i = 0; i < c; i++) y[i] = ceilf(x[i]); break;
    case U_ELU: for (int64_t i = 0; i < c; i++) y[i] = x[i] >= 0 ? x[i] : a * (expf(x[i]) - 1); break;
    case U_SOFTPLUS:
      for (int64_t i = 0; i < c; i++) y[i] = x[i] > 20 ? x[i] : log1pf(expf(x[i]));
      break;
    case U_CLIP: {
      float lo = p->lo, hi = p->hi;
      if (nin > 1 && HS_PRESENT(&in[1])) lo = *(const float *)in[1].data;
      if (nin > 2 && HS_PRESENT(&in[2])) hi = *(const float *)in[2].data;
      for (int64_t i = 0; i < c; i++) {
        float v = x[i] < lo ? lo : x[i];
        y[i] = v > hi ? hi : v;
      }
      break;
    }
    default:
      return hs_op_errf(err, n, HS_INTERNAL, "unknown unary kind");
  }
  return 0;
}

#define BIN(name) {name, 6, 2, 2, 1, 1, 0, 0, binary_check, binary_infer, NULL, NULL, binary_run}
#define UN(name, maxin, maxout) {name, 6, 1, maxin, 1, maxout, 0, 0, unary_check, unary_infer, NULL, NULL, unary_run}

const hs_op_def hs_ops_elementwise[] = {
    BIN("Add"), BIN("Sub"), BIN("Mul"), BIN("Div"), BIN("Pow"), BIN("PRelu"),
    UN("Relu", 1, 1), UN("LeakyRelu", 1, 1), UN("Sigmoid", 1, 1), UN("HardSigmoid", 1, 1), UN("HardSwish", 1, 1),
    UN("Tanh", 1, 1), UN("Erf", 1, 1), UN("Exp", 1, 1), UN("Log", 1, 1), UN("Neg", 1, 1), UN("Abs", 1, 1),
    UN("Reciprocal", 1, 1), UN("Sqrt", 1, 1), UN("Floor", 1, 1), UN("Ceil", 1, 1), UN("Elu", 1, 1),
    {"Softplus", 1, 1, 1, 1, 1, 0, 0, unary_check, unary_infer, NULL, NULL, unary_run},
    UN("Clip", 3, 1),
    {"Identity", 1, 1, 1, 1, 1, 0, HS_OP_ALIAS, unary_check, unary_infer, NULL, NULL, unary_run},
    {"Dropout", 7, 1, 3, 1, 2, 0, HS_OP_ALIAS, unary_check, unary_infer, NULL, NULL, unary_run},
    {NULL},
};

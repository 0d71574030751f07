/* math.c - element-wise math beyond elementwise.c: trigonometric and hyperbolic functions, Sign, Round, Softsign,
 * Selu, Celu, ThresholdedRelu, Shrink, Mish, Gelu, IsInf, IsNaN, Mod, BitShift, BitwiseAnd / Or / Xor / Not. */

/*
 * DESIGN
 * Plain C, one value at a time, computed in double and stored in the input's type (float32 or
 * float64; Sign, Mod and BitShift also integers). These ops are rare in exported models and never on
 * a hot path, so no oneDNN kernel backs them. Mod, BitShift and the Bitwise ops broadcast their two
 * inputs as numpy; the Bitwise ops work on the integer bits (any integer type, bool for none).
 */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

enum {
  M_COS, M_SIN, M_TAN, M_ACOS, M_ASIN, M_ATAN, M_COSH, M_SINH, M_ACOSH, M_ASINH, M_ATANH,
  M_SIGN, M_ROUND, M_SOFTSIGN, M_SELU, M_CELU, M_THRELU, M_SHRINK, M_MISH, M_GELU, M_GELU_TANH,
  M_ISINF, M_ISNAN, M_MOD, M_BITSHIFT, M_BAND, M_BOR, M_BXOR, M_BNOT,
};

static const struct {
  int op; /* hs_op_id */
  int kind;
  const char *attrs;
  float alpha, beta; /* defaults of the first two float attributes */
} k_math[] = {
    {HS_OP_Cos, M_COS, "", 0, 0},       {HS_OP_Sin, M_SIN, "", 0, 0},         {HS_OP_Tan, M_TAN, "", 0, 0},
    {HS_OP_Acos, M_ACOS, "", 0, 0},     {HS_OP_Asin, M_ASIN, "", 0, 0},       {HS_OP_Atan, M_ATAN, "", 0, 0},
    {HS_OP_Cosh, M_COSH, "", 0, 0},     {HS_OP_Sinh, M_SINH, "", 0, 0},       {HS_OP_Acosh, M_ACOSH, "", 0, 0},
    {HS_OP_Asinh, M_ASINH, "", 0, 0},   {HS_OP_Atanh, M_ATANH, "", 0, 0},     {HS_OP_Sign, M_SIGN, "", 0, 0},
    {HS_OP_Round, M_ROUND, "", 0, 0},   {HS_OP_Softsign, M_SOFTSIGN, "", 0, 0},
    {HS_OP_Selu, M_SELU, "alpha,gamma", 1.67326319217681884765625f, 1.05070102214813232421875f},
    {HS_OP_Celu, M_CELU, "alpha", 1.0f, 0},
    {HS_OP_ThresholdedRelu, M_THRELU, "alpha", 1.0f, 0},
    {HS_OP_Shrink, M_SHRINK, "bias,lambd", 0.0f, 0.5f},
    {HS_OP_Mish, M_MISH, "", 0, 0},
    {HS_OP_Gelu, M_GELU, "approximate", 0, 0},
    {HS_OP_IsInf, M_ISINF, "detect_negative,detect_positive", 0, 0},
    {HS_OP_IsNaN, M_ISNAN, "", 0, 0},
    {HS_OP_Mod, M_MOD, "fmod", 0, 0},
    {HS_OP_BitShift, M_BITSHIFT, "direction", 0, 0},
    {HS_OP_BitwiseAnd, M_BAND, "", 0, 0},
    {HS_OP_BitwiseOr, M_BOR, "", 0, 0},
    {HS_OP_BitwiseXor, M_BXOR, "", 0, 0},
    {HS_OP_BitwiseNot, M_BNOT, "", 0, 0},
};

typedef struct {
  int kind;
  float a, b;
  int flag1, flag2; /* IsInf: detect_negative / detect_positive; Mod: fmod; BitShift: left */
} math_params;

static int math_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  math_params *p = (math_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int e = -1;
  for (int i = 0; i < (int)(sizeof k_math / sizeof k_math[0]); i++)
    if (n->op == k_math[i].op) e = i;
  if (e < 0) return hs_op_errf(err, n, HS_INTERNAL, "not a math op");
  p->kind = k_math[e].kind;
  int rc = hs_node_only_attrs(n, k_math[e].attrs, err);
  if (rc) return rc;
  int64_t i1, i2;
  const char *s;
  switch (p->kind) {
    case M_SELU:
      if ((rc = hs_attr_float(n, "alpha", k_math[e].alpha, &p->a, err)) ||
          (rc = hs_attr_float(n, "gamma", k_math[e].beta, &p->b, err)))
        return rc;
      break;
    case M_CELU:
    case M_THRELU: return hs_attr_float(n, "alpha", k_math[e].alpha, &p->a, err);
    case M_SHRINK:
      if ((rc = hs_attr_float(n, "bias", 0.0f, &p->a, err)) || (rc = hs_attr_float(n, "lambd", 0.5f, &p->b, err)))
        return rc;
      break;
    case M_GELU:
      if ((rc = hs_attr_string(n, "approximate", "none", &s, err))) return rc;
      if (strcmp(s, "tanh") == 0) p->kind = M_GELU_TANH;
      else if (strcmp(s, "none") != 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "approximate '%s'", s);
      break;
    case M_ISINF:
      if ((rc = hs_attr_int(n, "detect_negative", 1, &i1, err)) || (rc = hs_attr_int(n, "detect_positive", 1, &i2, err)))
        return rc;
      p->flag1 = i1 != 0, p->flag2 = i2 != 0;
      break;
    case M_MOD:
      if ((rc = hs_attr_int(n, "fmod", 0, &i1, err))) return rc;
      p->flag1 = i1 != 0;
      break;
    case M_BITSHIFT:
      if ((rc = hs_attr_string(n, "direction", "", &s, err))) return rc;
      if (strcmp(s, "LEFT") && strcmp(s, "RIGHT"))
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "direction must be LEFT or RIGHT");
      p->flag1 = strcmp(s, "LEFT") == 0;
      break;
    default: break;
  }
  return 0;
}

static int is_float(hs_dtype t) { return t == HS_DT_FLOAT32 || t == HS_DT_FLOAT64; }
static int is_int(hs_dtype t) {
  return t == HS_DT_INT64 || t == HS_DT_INT32 || t == HS_DT_INT16 || t == HS_DT_INT8 || t == HS_DT_UINT64 ||
         t == HS_DT_UINT32 || t == HS_DT_UINT16 || t == HS_DT_UINT8;
}
static int is_unsigned(hs_dtype t) {
  return t == HS_DT_UINT64 || t == HS_DT_UINT32 || t == HS_DT_UINT16 || t == HS_DT_UINT8;
}

static int math_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  const math_params *p = (const math_params *)n->params.bytes;
  hs_dtype t = in[0].dtype;
  const int bitwise = p->kind >= M_BAND;
  int ok = p->kind == M_SIGN || p->kind == M_MOD ? is_float(t) || is_int(t)
           : p->kind == M_BITSHIFT               ? is_unsigned(t)
           : bitwise                             ? is_int(t)
                                                 : is_float(t);
  if (!ok) {
    const char *name = hs_dtype_kserve_name(t);
    return hs_op_errf(err, n, HS_UNSUPPORTED, "input of type %s is not supported (opset %d)", name ? name : "?",
                      n->opset);
  }
  if (p->kind == M_BNOT) return hs_set_shape(&out[0], t, in[0].ndim, in[0].dims, n, err);
  if (p->kind == M_MOD || p->kind == M_BITSHIFT || bitwise) {
    if (nin < 2 || in[1].dtype != t) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "both inputs must have one type");
    if (p->kind == M_MOD && is_float(t) && !p->flag1)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fmod must be 1 for floating-point inputs");
    int r;
    int64_t d[HS_MAX_DIMS];
    int rc = hs_broadcast_shape(&in[0], &in[1], &r, d, n, err);
    return rc ? rc : hs_set_shape(&out[0], t, r, d, n, err);
  }
  hs_dtype ot = p->kind == M_ISINF || p->kind == M_ISNAN ? HS_DT_BOOL : t;
  return hs_set_shape(&out[0], ot, in[0].ndim, in[0].dims, n, err);
}

static double unary(const math_params *p, double x) {
  switch (p->kind) {
    case M_COS: return cos(x);
    case M_SIN: return sin(x);
    case M_TAN: return tan(x);
    case M_ACOS: return acos(x);
    case M_ASIN: return asin(x);
    case M_ATAN: return atan(x);
    case M_COSH: return cosh(x);
    case M_SINH: return sinh(x);
    case M_ACOSH: return acosh(x);
    case M_ASINH: return asinh(x);
    case M_ATANH: return atanh(x);
    case M_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case M_ROUND: return nearbyint(x); /* halves to even (the default rounding mode) */
    case M_SOFTSIGN: return x / (1 + fabs(x));
    case M_SELU: return x > 0 ? p->b * x : p->b * (p->a * exp(x) - p->a);
    case M_CELU: return (x > 0 ? x : 0) + fmin(0, p->a * (exp(x / p->a) - 1));
    case M_THRELU: return x > p->a ? x : 0;
    case M_SHRINK: return x < -p->b ? x + p->a : x > p->b ? x - p->a : 0;
    case M_MISH: return x * tanh(log1p(exp(x)));
    case M_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case M_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case M_ISINF: return isinf(x) && ((x > 0 && p->flag2) || (x < 0 && p->flag1));
    case M_ISNAN: return isnan(x);
    default: return 0;
  }
}

/* Element index in a (broadcast to out's shape) of out's flat index i. */
static int64_t bcast_index(const hs_tensor *a, const hs_tensor *out, int64_t i) {
  int64_t idx = 0, stride = 1;
  for (int k = out->ndim - 1; k >= 0; k--) {
    int64_t pos = i % out->dims[k];
    i /= out->dims[k];
    int ka = k - (out->ndim - a->ndim);
    if (ka >= 0) {
      if (a->dims[ka] != 1) idx += pos * stride;
      stride *= a->dims[ka];
    }
  }
  return idx;
}

static int math_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  (void)nin, (void)nout, (void)scratch, (void)err;
  const math_params *p = (const math_params *)n->params.bytes;
  int64_t total = hs_numel(&out[0]);
  if (p->kind >= M_BAND) { /* on the bytes of each element: the same for every integer width */
    size_t esz = hs_dtype_size(out[0].dtype);
    for (int64_t i = 0; i < total; i++) {
      uint64_t a = 0, b = 0, r;
      memcpy(&a, (const char *)in[0].data + (size_t)(p->kind == M_BNOT ? i : bcast_index(&in[0], &out[0], i)) * esz, esz);
      if (p->kind != M_BNOT) memcpy(&b, (const char *)in[1].data + (size_t)bcast_index(&in[1], &out[0], i) * esz, esz);
      r = p->kind == M_BAND ? a & b : p->kind == M_BOR ? a | b : p->kind == M_BXOR ? a ^ b : ~a;
      memcpy((char *)out[0].data + (size_t)i * esz, &r, esz); /* little-endian: the low bytes */
    }
    return 0;
  }
  if (p->kind == M_MOD || p->kind == M_BITSHIFT) {
    int u = is_unsigned(in[0].dtype);
    for (int64_t i = 0; i < total; i++) {
      int64_t ia = bcast_index(&in[0], &out[0], i), ib = bcast_index(&in[1], &out[0], i);
      if (p->kind == M_BITSHIFT) {
        uint64_t a = (uint64_t)hs_load_f64(&in[0], ia), b = (uint64_t)hs_load_f64(&in[1], ib);
        uint64_t r = b >= 64 ? 0 : p->flag1 ? a << b : a >> b;
        hs_store_f64(&out[0], i, (double)(r & (in[0].dtype == HS_DT_UINT64 ? ~0ull : (1ull << (8 * hs_dtype_size(in[0].dtype))) - 1)));
      } else if (is_float(in[0].dtype)) {
        hs_store_f64(&out[0], i, fmod(hs_load_f64(&in[0], ia), hs_load_f64(&in[1], ib)));
      } else {
        int64_t a = (int64_t)hs_load_f64(&in[0], ia), b = (int64_t)hs_load_f64(&in[1], ib), r;
        if (b == 0) r = 0; /* undefined in ONNX; never a crash here */
        else if (u || p->flag1) r = b == -1 ? 0 : a % b; /* fmod: the sign of the dividend */
        else {
          r = b == -1 ? 0 : a % b; /* Python's %: the sign of the divisor */
          if (r != 0 && ((r < 0) != (b < 0))) r += b;
        }
        hs_store_f64(&out[0], i, (double)r);
      }
    }
    return 0;
  }
  if (out[0].dtype == HS_DT_FLOAT32) {
    const float *x = in[0].data;
    float *y = out[0].data;
    for (int64_t i = 0; i < total; i++) y[i] = (float)unary(p, x[i]);
  } else {
    for (int64_t i = 0; i < total; i++) hs_store_f64(&out[0], i, unary(p, hs_load_f64(&in[0], i)));
  }
  return 0;
}

const hs_op_impl hs_op_impl_math = {
    .check = math_check,
    .infer = math_infer,
    .run = math_run,
};

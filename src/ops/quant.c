/* quant.c - QuantizeLinear, DequantizeLinear (per tensor or per axis), DynamicQuantizeLinear, MatMulInteger and
 * QLinearMatMul, in plain C. */

/*
 * DESIGN
 * Quantized tensors are int8 / uint8 (int32 for DequantizeLinear's input); the float side is
 * float32. Rounding is half to even (nearbyint in the default rounding mode) and results saturate
 * to the integer type, as the spec says. A 1-D scale / zero point applies along `axis` (opset 13);
 * a scalar one to the whole tensor. The engine computes in float32: these ops let graphs that
 * quantize / dequantize at their edges run, not integer kernels. MatMulInteger / QLinearMatMul
 * multiply in int32 / double with numpy's batch broadcasting (operands of rank >= 2).
 */
#include <stdatomic.h>
#include <math.h>
#include <string.h>

#include "ops/ops.h"

typedef struct {
  int64_t axis;
} quant_params;

static int quant_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  quant_params *p = (quant_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int dyn = n->op == HS_OP_DynamicQuantizeLinear;
  int rc = hs_node_only_attrs(n, dyn || n->opset < 13 ? "" : "axis", err);
  return rc ? rc : hs_attr_int(n, "axis", 1, &p->axis, err);
}

/* Per-element index into scale / zero point: 0 for per-tensor, else the coordinate on axis. */
static int quant_layout(const hs_node *n, const hs_tensor *x, const hs_tensor *scale, int64_t *inner, int64_t *len,
                        hs_error *err) {
  const quant_params *p = (const quant_params *)n->params.bytes;
  *inner = 1;
  *len = 1;
  if (scale->ndim == 0 || hs_numel(scale) == 1) return 0;
  int a, rc = hs_norm_axis(p->axis, x->ndim, &a, n, err);
  if (rc) return rc;
  if (scale->ndim != 1 || scale->dims[0] != x->dims[a])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale must be a scalar or [%lld]", (long long)x->dims[a]);
  for (int i = a + 1; i < x->ndim; i++) *inner *= x->dims[i];
  *len = x->dims[a];
  return 0;
}

static double saturate(hs_dtype t, double v) {
  double lo = t == HS_DT_INT8 ? -128 : t == HS_DT_UINT8 ? 0 : -2147483648.0;
  double hi = t == HS_DT_INT8 ? 127 : t == HS_DT_UINT8 ? 255 : 2147483647.0;
  return v < lo ? lo : v > hi ? hi : v;
}

static int fast_8bit(hs_dtype t) { return t == HS_DT_INT8 || t == HS_DT_UINT8; }

/* Rows of the common int8 / uint8 cases, written so the compiler vectorizes them: one copy per vector
 * extension (AVX-512, AVX2, baseline), picked per call by the CPU's features. Explicit copies rather
 * than target_clones: an ifunc resolver runs before the sanitizers' runtimes start and crashes them.
 * Quantize: x / s is first clamped to just outside the range that can reach [lo, hi] (NaN goes to the
 * low end), so that adding and subtracting 1.5 * 2^23 rounds it half to even in the default rounding
 * mode, exactly as nearbyintf; then + z, saturated. Dequantize: (q - z) * s, exact in float32 as the
 * general loop computes it in double. */
#if defined(__clang__) /* vectorizes these at -O2; has no optimize attribute */
#define HS_QUANT_OPT
#else
#define HS_QUANT_OPT optimize("O3"),
#endif
#define HS_QUANT_ISA(name, isa) __attribute__((HS_QUANT_OPT target(isa))) static
#define HS_QUANT_BASE __attribute__((HS_QUANT_OPT)) static
enum { QUANT_ISA_BASE, QUANT_ISA_AVX2, QUANT_ISA_AVX512 };
static int quant_isa(void) {
  static atomic_int isa = -1; /* threads racing on the first use all store the same value */
  int v = atomic_load_explicit(&isa, memory_order_relaxed);
  if (v < 0) {
    v = __builtin_cpu_supports("avx512f") ? QUANT_ISA_AVX512
        : __builtin_cpu_supports("avx2") ? QUANT_ISA_AVX2
                                         : QUANT_ISA_BASE;
    atomic_store_explicit(&isa, v, memory_order_relaxed);
  }
  return v;
}
#define HS_QUANT_ROW_BODY(T)                                                                         \
  {                                                                                                   \
    const float a = lo - z - 1.0f, b = hi - z + 1.0f;                                                 \
    for (int64_t i = 0; i < n; i++) {                                                                 \
      float v = x[i] / s;                                                                             \
      v = v > a ? v : a;                                                                              \
      v = v < b ? v : b;                                                                              \
      v = (v + 12582912.0f) - 12582912.0f + z;                                                        \
      v = v > lo ? v : lo;                                                                            \
      v = v < hi ? v : hi;                                                                            \
      y[i] = (T)(int32_t)v;                                                                           \
    }                                                                                                 \
  }
#define HS_QUANT_ROW(name, T)                                                                        \
  HS_QUANT_ISA(name##_avx512, "avx512f")                                                             \
  void name##_avx512(const float *x, T *y, int64_t n, float s, float z, float lo, float hi)            \
      HS_QUANT_ROW_BODY(T)                                                                            \
  HS_QUANT_ISA(name##_avx2, "avx2")                                                                   \
  void name##_avx2(const float *x, T *y, int64_t n, float s, float z, float lo, float hi)              \
      HS_QUANT_ROW_BODY(T)                                                                            \
  HS_QUANT_BASE                                                                \
  void name##_base(const float *x, T *y, int64_t n, float s, float z, float lo, float hi)              \
      HS_QUANT_ROW_BODY(T)                                                                            \
  static void name(const float *x, T *y, int64_t n, float s, float z, float lo, float hi) {           \
    switch (quant_isa()) {                                                                            \
    case QUANT_ISA_AVX512: name##_avx512(x, y, n, s, z, lo, hi); break;                               \
    case QUANT_ISA_AVX2: name##_avx2(x, y, n, s, z, lo, hi); break;                                   \
    default: name##_base(x, y, n, s, z, lo, hi); break;                                               \
    }                                                                                                 \
  }
HS_QUANT_ROW(quant_row_u8, uint8_t)
HS_QUANT_ROW(quant_row_s8, int8_t)
#define HS_DEQUANT_ROW_BODY \
  { for (int64_t i = 0; i < n; i++) y[i] = ((float)x[i] - z) * s; }
#define HS_DEQUANT_ROW(name, T)                                                                      \
  HS_QUANT_ISA(name##_avx512, "avx512f")                                                             \
  void name##_avx512(const T *x, float *y, int64_t n, float s, float z) HS_DEQUANT_ROW_BODY           \
  HS_QUANT_ISA(name##_avx2, "avx2")                                                                   \
  void name##_avx2(const T *x, float *y, int64_t n, float s, float z) HS_DEQUANT_ROW_BODY             \
  HS_QUANT_BASE                                                                \
  void name##_base(const T *x, float *y, int64_t n, float s, float z) HS_DEQUANT_ROW_BODY             \
  static void name(const T *x, float *y, int64_t n, float s, float z) {                               \
    switch (quant_isa()) {                                                                            \
    case QUANT_ISA_AVX512: name##_avx512(x, y, n, s, z); break;                                       \
    case QUANT_ISA_AVX2: name##_avx2(x, y, n, s, z); break;                                           \
    default: name##_base(x, y, n, s, z); break;                                                       \
    }                                                                                                 \
  }
HS_DEQUANT_ROW(dequant_row_u8, uint8_t)
HS_DEQUANT_ROW(dequant_row_s8, int8_t)

static void fast_quant(int q, const hs_tensor *x, hs_tensor *y, const float *scale, const hs_tensor *zp,
                       int64_t inner, int64_t len, int64_t total) {
  hs_dtype t = q ? y->dtype : x->dtype;
  const float lo = t == HS_DT_INT8 ? -128.0f : 0.0f, hi = t == HS_DT_INT8 ? 127.0f : 255.0f;
  if (len <= 1) inner = total;
  for (int64_t r = 0; r * inner < total; r++) {
    int64_t k = len > 1 ? r % len : 0, base = r * inner;
    const float s = scale[k], z = zp ? (float)hs_load_f64(zp, k) : 0.0f;
    const float *xf = (const float *)x->data + base;
    float *yf = (float *)y->data + base;
    if (q && t == HS_DT_UINT8) quant_row_u8(xf, (uint8_t *)y->data + base, inner, s, z, lo, hi);
    else if (q) quant_row_s8(xf, (int8_t *)y->data + base, inner, s, z, lo, hi);
    else if (t == HS_DT_UINT8) dequant_row_u8((const uint8_t *)x->data + base, yf, inner, s, z);
    else dequant_row_s8((const int8_t *)x->data + base, yf, inner, s, z);
  }
}

static int quant_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int dyn = n->op == HS_OP_DynamicQuantizeLinear, q = n->op == HS_OP_QuantizeLinear, rc;
  if (dyn) {
    if ((rc = hs_need_dtype(n, &in[0], "x", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
    if ((rc = hs_set_shape(&out[0], HS_DT_UINT8, in[0].ndim, in[0].dims, n, err))) return rc;
    if (nout > 1 && (rc = hs_set_shape(&out[1], HS_DT_FLOAT32, 0, NULL, n, err))) return rc;
    return nout > 2 ? hs_set_shape(&out[2], HS_DT_UINT8, 0, NULL, n, err) : 0;
  }
  const hs_tensor *zp = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  int64_t inner, len;
  if (q) rc = hs_need_dtype(n, &in[0], "x", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  else rc = hs_need_dtype(n, &in[0], "x", err, HS_DT_INT8, HS_DT_UINT8, HS_DT_INT32, HS_DT_UNDEFINED);
  if (rc || (rc = hs_need_dtype(n, &in[1], "scale", err, HS_DT_FLOAT32, HS_DT_UNDEFINED)) ||
      (rc = quant_layout(n, &in[0], &in[1], &inner, &len, err)))
    return rc;
  if (zp && (hs_numel(zp) != hs_numel(&in[1]) || (!q && zp->dtype != in[0].dtype)))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "zero point must match scale's shape and x's type");
  hs_dtype ot = q ? (zp ? zp->dtype : HS_DT_UINT8) : HS_DT_FLOAT32;
  if (ot != HS_DT_INT8 && ot != HS_DT_UINT8 && ot != HS_DT_FLOAT32)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "quantized type is not supported (opset %d)", n->opset);
  return hs_set_shape(&out[0], ot, in[0].ndim, in[0].dims, n, err);
}

static int quant_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  (void)scratch;
  int64_t total = hs_numel(&in[0]);
  if (n->op == HS_OP_DynamicQuantizeLinear) {
    const float *x = in[0].data;
    float lo = 0, hi = 0; /* in float32, as the spec's reference computes */
    for (int64_t i = 0; i < total; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
    float scale = (hi - lo) / 255.0f;
    double zp = scale > 0 ? nearbyintf((float)saturate(HS_DT_UINT8, 0.0f - lo / scale)) : 0;
    for (int64_t i = 0; i < total; i++)
      ((uint8_t *)out[0].data)[i] = (uint8_t)(scale > 0 ? saturate(HS_DT_UINT8, nearbyintf(x[i] / scale) + zp) : zp);
    if (nout > 1 && n->out[1] >= 0) *(float *)out[1].data = scale;
    if (nout > 2 && n->out[2] >= 0) *(uint8_t *)out[2].data = (uint8_t)zp;
    return 0;
  }
  const int q = n->op == HS_OP_QuantizeLinear;
  const hs_tensor *zp = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  int64_t inner, len;
  int rc = quant_layout(n, &in[0], &in[1], &inner, &len, err);
  if (rc) return rc;
  const float *scale = in[1].data;
  if (fast_8bit(q ? out[0].dtype : in[0].dtype)) {
    fast_quant(q, &in[0], &out[0], scale, zp, inner, len, total);
    return 0;
  }
  for (int64_t i = 0; i < total; i++) {
    int64_t k = len > 1 ? (i / inner) % len : 0;
    double z = zp ? hs_load_f64(zp, k) : 0, x = hs_load_f64(&in[0], i);
    if (q) hs_store_f64(&out[0], i, saturate(out[0].dtype, nearbyintf((float)x / scale[k]) + z));
    else ((float *)out[0].data)[i] = (float)((x - z) * scale[k]);
  }
  return 0;
}

/* ---- MatMulInteger / QLinearMatMul ---- */

static int qmm_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  return hs_node_only_attrs(n, "", err);
}

/* Operand positions: MatMulInteger (A, B, a_zp, b_zp); QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp,
 * y_scale, y_zp). */
typedef struct {
  const hs_tensor *a, *b, *azp, *bzp;
  double scale; /* a_scale * b_scale / y_scale (QLinearMatMul) */
  const hs_tensor *yzp;
  int qlinear;
} qmm_args;

static int int8ish(hs_dtype t) { return t == HS_DT_INT8 || t == HS_DT_UINT8; }

static int qmm_args_of(const hs_node *n, const hs_tensor *in, int nin, qmm_args *q, int64_t *od, int *ond,
                       hs_error *err) {
  memset(q, 0, sizeof *q);
  q->qlinear = n->op == HS_OP_QLinearMatMul;
  q->a = &in[0];
  q->b = &in[q->qlinear ? 3 : 1];
  q->azp = q->qlinear ? &in[2] : nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  q->bzp = q->qlinear ? &in[5] : nin > 3 && HS_PRESENT(&in[3]) ? &in[3] : NULL;
  if (!int8ish(q->a->dtype) || !int8ish(q->b->dtype) || q->a->ndim < 2 || q->b->ndim < 2)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "operands must be int8 / uint8 of rank >= 2 (opset %d)", n->opset);
  const hs_tensor *zps[2] = {q->azp, q->bzp}, *ops[2] = {q->a, q->b};
  for (int i = 0; i < 2; i++)
    if (zps[i] && (zps[i]->dtype != ops[i]->dtype || hs_numel(zps[i]) != 1))
      return hs_op_errf(err, n, HS_UNSUPPORTED, "zero points must be one value of the operand's type");
  if (q->qlinear) {
    q->yzp = &in[7];
    if (!int8ish(q->yzp->dtype) || hs_numel(q->yzp) != 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "y_zero_point");
    for (int i = 1; i < 7; i += 3)
      if (in[i].dtype != HS_DT_FLOAT32 || hs_numel(&in[i]) != 1)
        return hs_op_errf(err, n, HS_UNSUPPORTED, "scales must be one float32 (per-tensor)");
    if (in[6].dtype != HS_DT_FLOAT32 || hs_numel(&in[6]) != 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "y_scale");
  }
  int ra = q->a->ndim, rb = q->b->ndim;
  if (q->a->dims[ra - 1] != q->b->dims[rb - 2]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inner dimensions differ");
  hs_tensor ba = *q->a, bb = *q->b; /* batch dims only */
  ba.ndim = ra - 2, bb.ndim = rb - 2;
  int rc = hs_broadcast_shape(&ba, &bb, ond, od, n, err);
  if (rc) return rc;
  od[(*ond)++] = q->a->dims[ra - 2];
  od[(*ond)++] = q->b->dims[rb - 1];
  return 0;
}

static int qmm_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  qmm_args q;
  int64_t od[HS_MAX_DIMS + 2];
  int r, rc = qmm_args_of(n, in, nin, &q, od, &r, err);
  if (rc) return rc;
  return hs_set_shape(&out[0], q.qlinear ? q.yzp->dtype : HS_DT_INT32, r, od, n, err);
}

/* Element offset of matrix number `batch` (over out's batch dims) in operand t (broadcast). */
static int64_t batch_offset(const hs_tensor *t, const hs_tensor *out, int64_t batch) {
  int ob = out->ndim - 2, tb = t->ndim - 2;
  int64_t off = 0, stride = t->dims[t->ndim - 1] * t->dims[t->ndim - 2];
  for (int k = ob - 1; k >= 0; k--) {
    int64_t pos = batch % out->dims[k];
    batch /= out->dims[k];
    int kt = k - (ob - tb);
    if (kt >= 0) {
      if (t->dims[kt] != 1) off += pos * stride;
      stride *= t->dims[kt];
    }
  }
  return off;
}

static int qmm_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)nout, (void)scratch;
  qmm_args q;
  int64_t od[HS_MAX_DIMS + 2];
  int r, rc = qmm_args_of(n, in, nin, &q, od, &r, err);
  if (rc) return rc;
  const int64_t M = q.a->dims[q.a->ndim - 2], K = q.a->dims[q.a->ndim - 1], N = q.b->dims[q.b->ndim - 1];
  const int64_t mats = M * N != 0 ? hs_numel(&out[0]) / (M * N) : 0;
  const double azp = q.azp ? hs_load_f64(q.azp, 0) : 0, bzp = q.bzp ? hs_load_f64(q.bzp, 0) : 0;
  double scale = 1, yzp = 0, lo = 0, hi = 0;
  if (q.qlinear) {
    scale = (double)*(const float *)in[1].data * *(const float *)in[4].data / *(const float *)in[6].data;
    yzp = hs_load_f64(q.yzp, 0);
    lo = q.yzp->dtype == HS_DT_INT8 ? -128 : 0, hi = q.yzp->dtype == HS_DT_INT8 ? 127 : 255;
  }
  for (int64_t t = 0; t < mats; t++) {
    int64_t oa = batch_offset(q.a, &out[0], t), ob = batch_offset(q.b, &out[0], t);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        int64_t acc = 0;
        for (int64_t k = 0; k < K; k++)
          acc += (int64_t)(hs_load_f64(q.a, oa + i * K + k) - azp) * (int64_t)(hs_load_f64(q.b, ob + k * N + j) - bzp);
        int64_t o = (t * M + i) * N + j;
        if (q.qlinear) {
          double v = nearbyint((double)acc * scale) + yzp;
          hs_store_f64(&out[0], o, v < lo ? lo : v > hi ? hi : v);
        } else {
          ((int32_t *)out[0].data)[o] = (int32_t)acc;
        }
      }
  }
  return 0;
}

const hs_op_impl hs_op_impl_quant_matmul = {
    .check = qmm_check,
    .infer = qmm_infer,
    .run = qmm_run,
};
const hs_op_impl hs_op_impl_quant = {
    .check = quant_check,
    .infer = quant_infer,
    .run = quant_run,
};

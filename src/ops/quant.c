/* quant.c - QuantizeLinear, DequantizeLinear (per tensor or per axis), DynamicQuantizeLinear, and MatMulInteger /
 * QLinearMatMul (oneDNN's int8 matmul for a constant B, plain C otherwise). */

/*
 * DESIGN
 * Quantized tensors are int8 / uint8 (int32 for DequantizeLinear's input); the float side is
 * float32. Rounding is half to even (nearbyint in the default rounding mode) and results saturate
 * to the integer type, as the spec says. A 1-D scale / zero point applies along `axis` (opset 13);
 * a scalar one to the whole tensor. The engine computes in float32: these ops let graphs that
 * quantize / dequantize at their edges run. MatMulInteger / QLinearMatMul accumulate
 * (a - a_zp) * (b - b_zp[j]) in int32 with numpy's batch broadcasting (operands of rank >= 2);
 * QLinearMatMul scales by a_scale * b_scale[j] / y_scale in float32, rounds half to even, adds y_zp
 * and saturates (b_scale / b_zp per tensor or per column of B). With a constant 2-D B they run on the
 * kernels' `qmatmul` (oneDNN's int8 matmul, VNNI where the CPU has it; see qmm_prepare for what it
 * takes), a batch MatMul as one [rows, K] product; else the plain C below, the kernel's reference in
 * the tests. The QDQ pass (engine/pass_qdq.c) writes QLinearMatMul for DequantizeLinear -> MatMul
 * [-> Add bias] -> QuantizeLinear, with fusions no model file can state: an int32 bias as a 9th
 * input, and a float32 output (y = a_scale * b_scale[j] * (acc + bias), not requantized) for a MatMul
 * whose result is read as float, which then takes activations (the fusion passes' GELU) as MatMul
 * does.
 */
#include <stdatomic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kernels/kcache.h"
#include "ops/opkernel.h"
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

/* Set by the passes through fuse(), never by the model file: a bias (HS_FUSE_BIAS: input QM_BIAS, int32 [N] in
 * accumulator units a_scale * b_scale[j]), a dequantized float32 output (HS_FUSE_FLOAT_OUTPUT), and on a float32
 * output, activations as post-ops (the fusion passes' GELU). A residual Add is not taken: the fusion pass puts
 * residuals at input 3, B's place here, and on a transformer's [rows, N] it costs little unfused. */
enum { QM_BIAS = 8 };
typedef struct qmm_fused {
  int bias;
  int float_out;
  hs_post_ops post; /* HS_POST_ACT steps only */
} qmm_fused;
_Static_assert(sizeof(qmm_fused) <= HS_OP_PARAMS_BYTES, "qmm_fused fits in the node");

static int qmm_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  memset(n->params.bytes, 0, sizeof(qmm_fused));
  return hs_node_only_attrs(n, "", err);
}

static int qmm_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  (void)err;
  qmm_fused *p = (qmm_fused *)n->params.bytes;
  if (n->op != HS_OP_QLinearMatMul) return HS_FUSE_REFUSED;
  if (f->kind == HS_FUSE_BIAS && f->input == QM_BIAS && !p->bias) {
    if (!f->dry_run) p->bias = 1;
    return 0;
  }
  if (f->kind == HS_FUSE_FLOAT_OUTPUT && !p->float_out) {
    if (!f->dry_run) p->float_out = 1;
    return 0;
  }
  if (!p->float_out) return HS_FUSE_REFUSED; /* post-ops act on float32 values only */
  if (f->kind == HS_FUSE_ACTIVATION && f->act.kind == HS_POST_ACT &&
      hs_post_ops_room(&p->post, hs_post_act_steps(f->act.act))) {
    if (!f->dry_run) p->post.op[p->post.count++] = f->act;
    return 0;
  }
  return HS_FUSE_REFUSED;
}

/* Operand positions: MatMulInteger (A, B, a_zp, b_zp); QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp,
 * y_scale, y_zp [, bias]). */
typedef struct {
  const hs_tensor *a, *b, *azp, *bzp, *bias;
  const hs_tensor *yzp;
  hs_tensor a_row; /* a 1-D A seen as [1, K] (numpy.matmul's vector) */
  int a_vec;
  int qlinear, float_out;
  int64_t nbs; /* b_scale's and b_zp's count: 1 (per tensor) or N (per column of B) */
} qmm_args;

static int int8ish(hs_dtype t) { return t == HS_DT_INT8 || t == HS_DT_UINT8; }

static int qmm_args_of(const hs_node *n, const hs_tensor *in, int nin, qmm_args *q, int64_t *od, int *ond,
                       hs_error *err) {
  const qmm_fused *f = (const qmm_fused *)n->params.bytes;
  memset(q, 0, sizeof *q);
  q->qlinear = n->op == HS_OP_QLinearMatMul;
  q->float_out = q->qlinear && f->float_out;
  q->a = &in[0];
  q->b = &in[q->qlinear ? 3 : 1];
  q->azp = q->qlinear ? &in[2] : nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  q->bzp = q->qlinear ? &in[5] : nin > 3 && HS_PRESENT(&in[3]) ? &in[3] : NULL;
  if (q->a->ndim == 1) {
    q->a_row = *q->a;
    q->a_row.ndim = 2;
    q->a_row.dims[0] = 1;
    q->a_row.dims[1] = q->a->dims[0];
    q->a = &q->a_row;
    q->a_vec = 1;
  }
  if (!int8ish(q->a->dtype) || !int8ish(q->b->dtype) || q->a->ndim < 2 || q->b->ndim < 2)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "operands must be int8 / uint8, b of rank >= 2 (opset %d)", n->opset);
  const int64_t N = q->b->dims[q->b->ndim - 1];
  q->nbs = q->bzp ? hs_numel(q->bzp) : 1;
  if (q->azp && (q->azp->dtype != q->a->dtype || hs_numel(q->azp) != 1))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "a_zero_point must be one value of a's type (per tensor)");
  if (q->bzp && (q->bzp->dtype != q->b->dtype || q->bzp->ndim > 1 || (q->nbs != 1 && q->nbs != N)))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "b_zero_point must be b's type, per tensor or per column of b");
  if (q->qlinear) {
    q->yzp = &in[7];
    if (!int8ish(q->yzp->dtype) || hs_numel(q->yzp) != 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "y_zero_point");
    int64_t nbs = hs_numel(&in[4]);
    if (in[1].dtype != HS_DT_FLOAT32 || hs_numel(&in[1]) != 1 || in[6].dtype != HS_DT_FLOAT32 ||
        hs_numel(&in[6]) != 1 || in[4].dtype != HS_DT_FLOAT32 || in[4].ndim > 1 || (nbs != 1 && nbs != N) ||
        (q->bzp && q->nbs != nbs && q->nbs != 1))
      return hs_op_errf(err, n, HS_UNSUPPORTED, "scales must be float32, per tensor (b: or per column)");
    if (nbs > q->nbs) q->nbs = nbs;
    if (nin > QM_BIAS && HS_PRESENT(&in[QM_BIAS])) {
      if (!f->bias) return hs_op_errf(err, n, HS_PARSE, "QLinearMatMul takes 8 inputs");
      q->bias = &in[QM_BIAS];
      if (q->bias->dtype != HS_DT_INT32 || hs_numel(q->bias) != N)
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused bias must be int32 [%lld]", (long long)N);
    }
  } else if (nin > 4) {
    return hs_op_errf(err, n, HS_PARSE, "MatMulInteger takes 4 inputs");
  }
  int ra = q->a->ndim, rb = q->b->ndim;
  if (q->a->dims[ra - 1] != q->b->dims[rb - 2]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inner dimensions differ");
  hs_tensor ba = *q->a, bb = *q->b; /* batch dims only */
  ba.ndim = ra - 2, bb.ndim = rb - 2;
  int rc = hs_broadcast_shape(&ba, &bb, ond, od, n, err);
  if (rc) return rc;
  od[(*ond)++] = q->a->dims[ra - 2];
  od[(*ond)++] = N;
  return 0;
}

static int qmm_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  qmm_args q;
  int64_t od[HS_MAX_DIMS + 2];
  int r, rc = qmm_args_of(n, in, nin, &q, od, &r, err);
  if (rc) return rc;
  hs_dtype t = !q.qlinear ? HS_DT_INT32 : q.float_out ? HS_DT_FLOAT32 : q.yzp->dtype;
  if (q.a_vec) od[r - 2] = od[r - 1], r--; /* numpy drops the vector's row */
  return hs_set_shape(&out[0], t, r, od, n, err);
}

/* ---- oneDNN path: a constant 2-D B (int8 with zero point 0, or uint8 with zero point 128, shifted to int8),
 * per-tensor or per-column b_scale, a_scale / y_scale / y_zp constants, a_zp constant or given at run time.
 * The plain C below takes the rest: a B given at run time (oneDNN's int8 matmul needs B's layout and its
 * compensation terms made ahead), a batch of Bs, other B zero points (oneDNN has none for weights here). ---- */

typedef struct qmm_state {
  hs_kcache cache;
  const int8_t *w; /* B [K, N]: the graph constant, or w_own; NULL once released to `holder` */
  int8_t *w_own;   /* uint8 B shifted by -128 */
  const hs_kernel *holder; /* after the release: the cached kernel (slot 0) holding the only plain copy of B */
  int b_u8;        /* B is uint8 (the kernel holds it shifted by -128) */
  float *scales;   /* a_scale * b_scale[j] / y_scale, nscales of them (NULL for MatMulInteger) */
  float *bias;     /* the fused bias as float, or NULL */
  int nscales;
  int64_t K, N;
  int32_t azp, yzp;
  int azp_runtime;
  hs_qtype at, yt;
  int s32;
  hs_post_ops post;
} qmm_state;

static void qmm_free_state(void *p) {
  qmm_state *st = p;
  if (!st) return;
  hs_kcache_destroy(&st->cache);
  free(st->w_own);
  free(st->scales);
  free(st->bias);
  free(st);
}

static const hs_value *qmm_const(const hs_node *n, const hs_graph *g, int i) {
  if (i >= n->n_in || n->in[i] < 0) return NULL;
  const hs_value *v = &g->values[n->in[i]];
  return v->kind == HS_VAL_CONST && v->data ? v : NULL;
}

/* hs_node.release_consts (see ir.h): runs at the end of compiling, single-threaded. Once a kernel holds
 * B (its reordered copy, read back exactly by hs_kernel_qmatmul_b) and no other node reads it, the graph's B
 * and the shifted copy of a uint8 B go: new kernels and the plain C read B back from it. */
static void qmm_release_b(hs_node *n, hs_graph *g) {
  qmm_state *st = n->state;
  int bi = n->in[n->op == HS_OP_QLinearMatMul ? 3 : 1];
  hs_value *b = &g->values[bi];
  if (!st || !st->w || b->n_uses != 1 || !b->data) return; /* released already, or shared */
  if (atomic_load_explicit(&st->cache.n, memory_order_acquire) < 1) return; /* no kernel yet: keep B */
  st->holder = hs_kcache_kernel(&st->cache, 0);
  st->w = NULL;
  free(st->w_own);
  st->w_own = NULL;
  hs_graph_release_const(g, bi);
  HS_LOGD("node '%s' (%s): %lld bytes of B now held by its kernel only", n->name, n->op_type,
          (long long)(st->K * st->N));
}

static int qmm_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const int ql = n->op == HS_OP_QLinearMatMul;
  const qmm_fused *f = (const qmm_fused *)n->params.bytes;
  const hs_value *b = qmm_const(n, g, ql ? 3 : 1), *bz = qmm_const(n, g, ql ? 5 : 3);
  const int ia = 2, has_bz = (ql ? 5 : 3) < n->n_in && n->in[ql ? 5 : 3] >= 0;
  if (!b || b->ndim != 2 || !int8ish(b->dtype) || (has_bz && (!bz || bz->dtype != b->dtype))) return 0;
  const int64_t K = b->dims[0], N = b->dims[1];
  if (K < 1 || N < 1) return 0; /* an empty product: plain C writes nothing */
  const int32_t want_bz = b->dtype == HS_DT_UINT8 ? 128 : 0;
  for (size_t i = 0; bz && i < bz->nbytes; i++) {
    int32_t z = b->dtype == HS_DT_UINT8 ? ((const uint8_t *)bz->data)[i] : ((const int8_t *)bz->data)[i];
    if (z != want_bz) return 0;
  }
  if (!bz && want_bz) return 0;
  const hs_value *az = qmm_const(n, g, ia), *as = NULL, *bs = NULL, *ys = NULL, *yz = NULL, *bias = NULL;
  int has_az = ia < n->n_in && n->in[ia] >= 0;
  if (az && (!int8ish(az->dtype) || az->nbytes != 1)) return 0;
  if (ql) {
    as = qmm_const(n, g, 1), bs = qmm_const(n, g, 4), ys = qmm_const(n, g, 6), yz = qmm_const(n, g, 7);
    if (!as || !bs || !ys || !yz || as->dtype != HS_DT_FLOAT32 || as->nbytes != 4 || bs->dtype != HS_DT_FLOAT32 ||
        (bs->nbytes != 4 && (int64_t)bs->nbytes != 4 * N) || ys->dtype != HS_DT_FLOAT32 || ys->nbytes != 4 ||
        !int8ish(yz->dtype) || yz->nbytes != 1)
      return 0;
    if (f->bias && (!(bias = qmm_const(n, g, QM_BIAS)) || bias->dtype != HS_DT_INT32 || (int64_t)bias->nbytes != 4 * N))
      return 0;
  }
  qmm_state *st = calloc(1, sizeof *st);
  if (!st) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  st->K = K, st->N = N;
  st->w = b->data;
  st->b_u8 = want_bz != 0;
  if (want_bz) {
    if (!(st->w_own = malloc((size_t)(K * N)))) goto oom;
    for (int64_t i = 0; i < K * N; i++) st->w_own[i] = (int8_t)(((const uint8_t *)b->data)[i] - 128);
    st->w = st->w_own;
  }
  st->azp_runtime = has_az && !az;
  st->azp = az ? (az->dtype == HS_DT_INT8 ? *(const int8_t *)az->data : *(const uint8_t *)az->data) : 0;
  st->at = g->values[n->in[0]].dtype == HS_DT_INT8 ? HS_Q_S8 : HS_Q_U8;
  st->s32 = !ql;
  if (ql) {
    st->nscales = (int)(bs->nbytes / 4);
    if (!(st->scales = malloc(sizeof(float) * (size_t)st->nscales))) goto oom;
    const float a_s = *(const float *)as->data, y_s = f->float_out ? 1.0f : *(const float *)ys->data;
    for (int i = 0; i < st->nscales; i++) st->scales[i] = a_s * ((const float *)bs->data)[i] / y_s;
    if (bias) {
      if (!(st->bias = malloc(sizeof(float) * (size_t)N))) goto oom;
      for (int64_t j = 0; j < N; j++) st->bias[j] = (float)((const int32_t *)bias->data)[j];
    }
    st->yzp = f->float_out ? 0 : yz->dtype == HS_DT_INT8 ? *(const int8_t *)yz->data : *(const uint8_t *)yz->data;
    st->yt = f->float_out ? HS_Q_F32 : yz->dtype == HS_DT_INT8 ? HS_Q_S8 : HS_Q_U8;
    st->post = f->post;
  }
  hs_kcache_init(&st->cache);
  n->state = st;
  n->free_state = qmm_free_state;
  n->release_consts = qmm_release_b;
  return 0;
oom:
  qmm_free_state(st);
  return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
}

static int qmm_build_kernel(void *ctx, hs_kernel **out, hs_error *err) {
  const qmm_state *st = ((const void **)ctx)[0];
  const int64_t *rows = ((const void **)ctx)[1];
  hs_qmatmul_params p = {.device = HS_KDEV_CPU, .src_type = st->at, .dst_type = st->yt, .dst_s32 = st->s32,
                         .rows = *rows, .k = st->K, .n = st->N, .weights = st->w, .bias = st->bias,
                         .scales = st->scales, .nscales = st->nscales, .src_zp = st->azp, .dst_zp = st->yzp,
                         .src_zp_runtime = st->azp_runtime, .post = st->post};
  if (st->w) return hs_kernel_qmatmul_create(&p, out, err);
  /* B released: this kernel (batch-many products) copies it from a temporary read back from the holder */
  if (!st->holder) return hs_error_set(err, HS_INTERNAL, "qmatmul: B was released");
  int8_t *w = malloc((size_t)(st->K * st->N));
  if (!w) return hs_error_set(err, HS_NO_MEMORY, "qmatmul: reading B back");
  int rc = hs_kernel_qmatmul_b(st->holder, w, (size_t)(st->K * st->N), err);
  if (!rc) {
    p.weights = w;
    rc = hs_kernel_qmatmul_create(&p, out, err);
  }
  free(w);
  return rc;
}

/* The kernel for A (NULL: plain C), run *runs times on *rows rows each. A kernel keeps at most 8 row counts
 * (kernels.h variants); past them a batch MatMul (rank >= 3) runs as batch-many products of its last-but-one
 * dimension's rows, on a second kernel kept for that, rather than on the plain C. */
static hs_kernel *qmm_kernel_for(const hs_node *n, const hs_tensor *a, int64_t *rows, int64_t *runs,
                                 hs_error *strict_err) {
  qmm_state *st = n->state;
  *rows = 0;
  *runs = 1;
  if (!st || a->dims[a->ndim - 1] != st->K || (a->dtype == HS_DT_INT8) != (st->at == HS_Q_S8)) return NULL;
  *rows = hs_numel(a) / st->K;
  if (*rows < 1) return NULL;
  const void *ctx[2] = {st, rows};
  int64_t key[2] = {st->K, -1};
  hs_kernel *k = hs_op_kernel(n, &st->cache, key, 1, qmm_build_kernel, ctx, *rows, strict_err);
  int64_t m = a->ndim >= 3 ? a->dims[a->ndim - 2] : 0;
  if (k || m < 1 || m >= *rows) return k;
  const void *ctx_m[2] = {st, &m};
  if ((k = hs_op_kernel(n, &st->cache, key, 2, qmm_build_kernel, ctx_m, m, strict_err))) {
    *runs = *rows / m;
    *rows = m;
  }
  return k;
}

/* Bytes the plain C needs in scratch for B (0 while the graph holds it). */
static size_t qmm_plain_b_bytes(const hs_node *n) {
  const qmm_state *st = n->state;
  return st && !st->w ? (size_t)(st->K * st->N) : 0;
}

static size_t qmm_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)nin, (void)out, (void)nout;
  int64_t rows, runs;
  if (!n->state || in[0].ndim < 1) return 0;
  hs_kernel *k = qmm_kernel_for(n, &in[0], &rows, &runs, NULL);
  return k ? hs_op_kernel_scratch(k, rows) : qmm_plain_b_bytes(n);
}

/* ---- plain C ---- */

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
  (void)nout;
  qmm_args q;
  int64_t od[HS_MAX_DIMS + 2];
  int r, rc = qmm_args_of(n, in, nin, &q, od, &r, err);
  if (rc) return rc;
  if (hs_numel(&out[0]) == 0) return 0;
  hs_error kerr = {0};
  int64_t rows, runs;
  hs_kernel *k = qmm_kernel_for(n, q.a, &rows, &runs, &kerr);
  if (k) {
    int32_t azp = q.azp ? (int32_t)hs_load_f64(q.azp, 0) : 0;
    const size_t a_step = (size_t)(rows * q.a->dims[q.a->ndim - 1]), y_step = out[0].nbytes / (size_t)runs;
    for (int64_t r = 0; r < runs && !rc; r++) {
      const void *src[2] = {(const char *)q.a->data + (size_t)r * a_step, &azp};
      hs_kernel_args a = {.batch = rows, .src = src, .nsrc = 2, .dst = (char *)out[0].data + (size_t)r * y_step,
                          .scratch = scratch};
      rc = hs_op_run_kernel(n, k, &a, err);
    }
    return rc;
  }
  if (n->state && hs_ops_strict()) return hs_op_strict_error(n, &kerr, err);
  if (r > HS_MAX_DIMS) return hs_op_errf(err, n, HS_UNSUPPORTED, "rank %d", r);
  const qmm_state *st = n->state;
  hs_tensor b_back;
  if (st && !st->w) {
    /* B released: the holder's plain copy, read back into scratch (a uint8 B shifted back by +128) */
    if (!scratch) return hs_op_errf(err, n, HS_INTERNAL, "no scratch planned for B");
    size_t nb = (size_t)(st->K * st->N);
    if ((rc = hs_kernel_qmatmul_b(st->holder, scratch, nb, err)))
      return hs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
    if (st->b_u8)
      for (size_t i = 0; i < nb; i++) ((uint8_t *)scratch)[i] = (uint8_t)(((int8_t *)scratch)[i] + 128);
    b_back = *q.b;
    b_back.data = scratch;
    q.b = &b_back;
  }
  hs_tensor o = out[0]; /* with a 1-D A: the output's shape with its row of 1 back */
  o.ndim = r;
  memcpy(o.dims, od, sizeof(int64_t) * (size_t)r);
  const int64_t M = q.a->dims[q.a->ndim - 2], K = q.a->dims[q.a->ndim - 1], N = q.b->dims[q.b->ndim - 1];
  const int64_t mats = M * N != 0 ? hs_numel(&out[0]) / (M * N) : 0;
  const int64_t nbz = q.bzp ? hs_numel(q.bzp) : 0, nbs = q.qlinear ? hs_numel(&in[4]) : 0;
  const double azp = q.azp ? hs_load_f64(q.azp, 0) : 0;
  double yzp = 0, lo = 0, hi = 0;
  if (q.qlinear && !q.float_out) {
    yzp = hs_load_f64(q.yzp, 0);
    lo = q.yzp->dtype == HS_DT_INT8 ? -128 : 0, hi = q.yzp->dtype == HS_DT_INT8 ? 127 : 255;
  }
  for (int64_t t = 0; t < mats; t++) {
    int64_t oa = batch_offset(q.a, &o, t), ob = batch_offset(q.b, &o, t);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        const double bzp = nbz ? hs_load_f64(q.bzp, nbz > 1 ? j : 0) : 0;
        int64_t acc = q.bias ? ((const int32_t *)q.bias->data)[j] : 0;
        for (int64_t k = 0; k < K; k++)
          acc += (int64_t)(hs_load_f64(q.a, oa + i * K + k) - azp) * (int64_t)(hs_load_f64(q.b, ob + k * N + j) - bzp);
        int64_t o = (t * M + i) * N + j;
        if (!q.qlinear) {
          ((int32_t *)out[0].data)[o] = (int32_t)acc;
          continue;
        }
        /* in float32, as ONNX Runtime and the kernel compute it */
        float scale = *(const float *)in[1].data * ((const float *)in[4].data)[nbs > 1 ? j : 0];
        if (q.float_out) {
          ((float *)out[0].data)[o] = (float)acc * scale;
          continue;
        }
        scale /= *(const float *)in[6].data;
        double v = nearbyintf((float)acc * scale) + yzp;
        hs_store_f64(&out[0], o, !(v >= lo) ? lo : v > hi ? hi : v); /* NaN (a hostile scale) saturates low */
      }
  }
  if (q.float_out) {
    const qmm_fused *f = (const qmm_fused *)n->params.bytes;
    hs_post_apply(&f->post, out[0].data, NULL, hs_numel(&out[0]));
  }
  return 0;
}

const hs_op_impl hs_op_impl_quant_matmul = {
    .check = qmm_check,
    .infer = qmm_infer,
    .prepare = qmm_prepare,
    .scratch_bytes = qmm_scratch,
    .run = qmm_run,
    .fuse = qmm_fuse,
};
const hs_op_impl hs_op_impl_quant = {
    .check = quant_check,
    .infer = quant_infer,
    .run = quant_run,
};

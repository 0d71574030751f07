/* quant.c - QuantizeLinear, DequantizeLinear (per tensor or per axis) and DynamicQuantizeLinear, in plain C. */

/*
 * DESIGN
 * Quantized tensors are int8 / uint8 (int32 for DequantizeLinear's input); the float side is
 * float32. Rounding is half to even (nearbyint in the default rounding mode) and results saturate
 * to the integer type, as the spec says. A 1-D scale / zero point applies along `axis` (opset 13);
 * a scalar one to the whole tensor. The engine computes in float32: these ops let graphs that
 * quantize / dequantize at their edges run, not integer kernels.
 */
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
  int dyn = strcmp(n->op_type, "DynamicQuantizeLinear") == 0;
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

static int quant_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int dyn = strcmp(n->op_type, "DynamicQuantizeLinear") == 0, q = strcmp(n->op_type, "QuantizeLinear") == 0, rc;
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
  if (strcmp(n->op_type, "DynamicQuantizeLinear") == 0) {
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
  const int q = strcmp(n->op_type, "QuantizeLinear") == 0;
  const hs_tensor *zp = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  int64_t inner, len;
  int rc = quant_layout(n, &in[0], &in[1], &inner, &len, err);
  if (rc) return rc;
  const float *scale = in[1].data;
  for (int64_t i = 0; i < total; i++) {
    int64_t k = len > 1 ? (i / inner) % len : 0;
    double z = zp ? hs_load_f64(zp, k) : 0, x = hs_load_f64(&in[0], i);
    if (q) hs_store_f64(&out[0], i, saturate(out[0].dtype, nearbyintf((float)x / scale[k]) + z));
    else ((float *)out[0].data)[i] = (float)((x - z) * scale[k]);
  }
  return 0;
}

const hs_op_def hs_ops_quant[] = {
    {"QuantizeLinear", 10, 2, 3, 1, 1, 0, 0, quant_check, quant_infer, NULL, NULL, quant_run},
    {"DequantizeLinear", 10, 2, 3, 1, 1, 0, 0, quant_check, quant_infer, NULL, NULL, quant_run},
    {"DynamicQuantizeLinear", 11, 1, 1, 1, 3, 0, 0, quant_check, quant_infer, NULL, NULL, quant_run},
    {NULL},
};

/* pass_qdq.c - QDQ models: DequantizeLinear -> Conv / MatMul -> QuantizeLinear become QLinearConv / QLinearMatMul (int8 kernels). */

/*
 * DESIGN
 * A QDQ ("quantize-dequantize") model, as quantizers write them (tools/quantize.py, ONNX Runtime's
 * quantize_static), keeps float ops and marks where values are int8: an activation is quantized
 * once (QuantizeLinear) and read through DequantizeLinear; weights are int8 constants read through
 * DequantizeLinear. Run as written, every such Conv computes in float32 on dequantized copies. This
 * pass finds
 *     x_q -> DequantizeLinear(x_s, x_zp) ----\
 *     w_q (const) -> DequantizeLinear(w_s) -> Conv [-> Relu | Clip(0, c)] -> QuantizeLinear(y_s, y_zp) -> y_q
 *     bias (float const, or DequantizeLinear of an int32 const) -/
 * and writes one QLinearConv(x_q, x_s, x_zp, w_q, w_s, w_zp, y_s, y_zp, B) producing y_q, which
 * ops/qconv.c runs on oneDNN's int8 convolution. Activations are per tensor, weights per tensor or
 * per output channel (axis 0). It runs between two rounds of constant folding: the first leaves
 * DequantizeLinear nodes alone (it would turn the weights into float32 constants) but computes the
 * rest (Clip's bounds from Constant nodes), the second folds whatever DequantizeLinear of a constant
 * the pass left.
 * What changes against the QDQ graph run literally: a float bias is quantized to int32 with scale
 * x_s * w_s[c] (an error of at most half a step of the accumulator, far below one output step),
 * which is what QLinearConv's B is; the sums are exact integers where the literal graph rounds
 * float32 ones. A Relu, or a Clip(0, c), between the Conv and the QuantizeLinear is dropped only
 * where it changes nothing: QuantizeLinear's saturation already clamps at y_zp (y_zp is the type's
 * minimum) and, for Clip, at c (round(c / y_s) + y_zp reaches the type's maximum); the same holds
 * for such an activation anywhere right before a QuantizeLinear (ResNet's Add -> Relu), which then
 * reads the activation's input. Anything else is left as it is (activations per channel, weights
 * that are not int8 or have a zero point other than 0: oneDNN has no weight zero point).
 * Then a QLinearConv whose output is dequantized, added to another dequantized value and quantized
 * again (a residual connection) takes that Add as a fused sum (fuse_residual: the convolution's
 * result is then not rounded to its own grid before the sum), and last, a
 * QLinearConv output that only QLinearConvs read (as input or residual) is kept in NHWC between
 * them (their logical shapes stay NCHW; only these ops see the physical layout).
 * A transformer's Linears: DequantizeLinear(x_q) -> MatMul(DequantizeLinear(w_q), w a constant int8
 * [K, N], scale per tensor or per column) [-> Add(bias [N])] becomes one QLinearMatMul (ops/quant.c:
 * oneDNN's int8 matmul), writing the following QuantizeLinear's y_q, or, when the result is read as
 * float32, the dequantized value (HS_FUSE_FLOAT_OUTPUT, y_scale 1): no output grid, so the bias's
 * rounding to int32 (HS_FUSE_BIAS, input 8) is the only difference from the literal graph there.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/pass_fuse.h"
#include "engine/passes.h"
#include "ops/ops.h"

/* Constant value v, or NULL. */
static const hs_value *const_val(const hs_graph *g, int v) {
  if (v < 0) return NULL;
  const hs_value *val = &g->values[v];
  return val->kind == HS_VAL_CONST && val->data ? val : NULL;
}

static int64_t numel_of(const hs_value *v) { return (int64_t)(v->nbytes / hs_dtype_size(v->dtype)); }

/* Live node producing value v with op id `op`, or NULL. */
static hs_node *producer_op(hs_graph *g, int v, int op) {
  if (v < 0 || g->values[v].producer < 0) return NULL;
  hs_node *n = &g->nodes[g->values[v].producer];
  return hs__fuse_is_op(n, op) ? n : NULL;
}

/* A Quantize/DequantizeLinear with per-tensor constant scale (float32) and zero point (int8/uint8 or
 * absent); *zp_type: the zero point's type, or HS_DT_UNDEFINED when absent. */
static int per_tensor_qdq(const hs_graph *g, const hs_node *n, float *scale, int32_t *zp, hs_dtype *zp_type) {
  const hs_value *s = n->n_in > 1 ? const_val(g, n->in[1]) : NULL;
  if (!s || s->dtype != HS_DT_FLOAT32 || numel_of(s) != 1) return 0;
  *scale = *(const float *)s->data;
  *zp = 0;
  *zp_type = HS_DT_UNDEFINED;
  if (n->n_in > 2 && n->in[2] >= 0) {
    const hs_value *z = const_val(g, n->in[2]);
    if (!z || numel_of(z) != 1 || (z->dtype != HS_DT_UINT8 && z->dtype != HS_DT_INT8)) return 0;
    *zp = z->dtype == HS_DT_INT8 ? *(const int8_t *)z->data : *(const uint8_t *)z->data;
    *zp_type = z->dtype;
  }
  return *scale > 0 && isfinite(*scale);
}

/* A fresh constant; returns its value index or a negative status. */
static int add_const(hs_graph *g, const char *base, const char *what, hs_dtype dt, int ndim, int64_t n0,
                     const void *data, hs_error *err) {
  char name[300];
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, i ? "%s/%s.%d" : "%s/%s", base, what, i);
    if (hs_graph_find(g, name) < 0) break;
  }
  hs_tensor t = {.dtype = dt, .ndim = ndim, .dims = {n0}};
  t.nbytes = (size_t)(ndim ? n0 : 1) * hs_dtype_size(dt);
  t.data = (void *)data;
  int idx, rc = hs_graph_add_value(g, name, HS_VAL_CONST, &idx, err);
  if (!rc) rc = hs_value_set_const(&g->values[idx], &t, err);
  return rc ? rc : idx;
}

/* Marks node n dead when nothing reads its output any more. */
static void drop_if_unused(hs_graph *g, hs_node *n) {
  if (n && !n->dead && n->out[0] >= 0 && hs__fuse_count_uses(g, n->out[0]) == 0) n->dead = 1;
}

/* Whether activation node a between the Conv and a QuantizeLinear with (y_s, y_zp) of type t can go:
 * QuantizeLinear's saturation computes it. */
static int act_absorbed(const hs_graph *g, const hs_node *a, float ys, int32_t yzp, hs_dtype t) {
  int32_t qmin = t == HS_DT_INT8 ? -128 : 0, qmax = t == HS_DT_INT8 ? 127 : 255;
  if (yzp != qmin) return 0;
  if (a->op == HS_OP_Relu) return 1;
  if (a->op != HS_OP_Clip) return 0;
  float lo = -INFINITY, hi = INFINITY;
  hs_error tmp;
  if (a->opset < 11) {
    if (hs_attr_float(a, "min", -INFINITY, &lo, &tmp) || hs_attr_float(a, "max", INFINITY, &hi, &tmp)) return 0;
  } else {
    const hs_value *mn = a->n_in > 1 ? const_val(g, a->in[1]) : NULL, *mx = a->n_in > 2 ? const_val(g, a->in[2]) : NULL;
    if ((a->n_in > 1 && a->in[1] >= 0 && (!mn || mn->dtype != HS_DT_FLOAT32)) ||
        (a->n_in > 2 && a->in[2] >= 0 && (!mx || mx->dtype != HS_DT_FLOAT32)))
      return 0;
    if (mn) lo = *(const float *)mn->data;
    if (mx) hi = *(const float *)mx->data;
  }
  /* QuantizeLinear maps every x <= 0 to qmin (= y_zp) and every x >= hi to qmax, as Clip would. */
  return lo == 0.0f && (hi == INFINITY || nearbyintf(hi / ys) + (float)yzp >= (float)qmax);
}

/* Rewrites Conv node ci when it is the pattern above; 1 when it did. */
static int rewrite_conv(hs_graph *g, int ci, hs_error *err) {
  hs_node *c = &g->nodes[ci];
  if (c->n_in < 2 || c->n_out != 1) return 0;
  hs_node *dx = producer_op(g, c->in[0], HS_OP_DequantizeLinear), *dw = producer_op(g, c->in[1], HS_OP_DequantizeLinear);
  if (!dx || !dw) return 0;
  float xs, ys;
  int32_t xzp, yzp;
  hs_dtype xzt, yzt;
  if (!per_tensor_qdq(g, dx, &xs, &xzp, &xzt) || xzt == HS_DT_UNDEFINED) return 0;
  /* weights: int8 constant, zero point absent or 0, scale per tensor or per output channel (axis 0) */
  const hs_value *wq = const_val(g, dw->in[0]), *ws = dw->n_in > 1 ? const_val(g, dw->in[1]) : NULL;
  if (!wq || wq->dtype != HS_DT_INT8 || wq->ndim < 3 || !ws || ws->dtype != HS_DT_FLOAT32) return 0;
  int64_t oc = wq->dims[0], nws = numel_of(ws), axis = 1;
  hs_error tmp;
  if (hs_attr_int(dw, "axis", 1, &axis, &tmp)) return 0;
  if (nws != 1 && (nws != oc || ws->ndim != 1 || axis != 0)) return 0;
  if (dw->n_in > 2 && dw->in[2] >= 0) {
    const hs_value *wz = const_val(g, dw->in[2]);
    if (!wz || wz->dtype != HS_DT_INT8 || numel_of(wz) != nws) return 0;
    for (int64_t i = 0; i < nws; i++)
      if (((const int8_t *)wz->data)[i]) return 0;
  }
  /* bias: float32 constant, or DequantizeLinear of an int32 constant */
  const hs_value *bf = NULL, *bq = NULL;
  hs_node *db = NULL;
  if (c->n_in > 2 && c->in[2] >= 0) {
    if ((db = producer_op(g, c->in[2], HS_OP_DequantizeLinear))) {
      bq = const_val(g, db->in[0]);
      if (!bq || bq->dtype != HS_DT_INT32 || numel_of(bq) != oc) return 0;
      /* its scale must be the accumulator's, x_s * w_s[c], with zero point 0 */
      const hs_value *bs = db->n_in > 1 ? const_val(g, db->in[1]) : NULL;
      if (!bs || bs->dtype != HS_DT_FLOAT32 || (numel_of(bs) != 1 && numel_of(bs) != oc)) return 0;
      if (db->n_in > 2 && db->in[2] >= 0) {
        const hs_value *bz = const_val(g, db->in[2]);
        if (!bz || bz->dtype != HS_DT_INT32) return 0;
        for (int64_t i = 0; i < numel_of(bz); i++)
          if (((const int32_t *)bz->data)[i]) return 0;
      }
      for (int64_t i = 0; i < oc; i++) {
        double want = (double)xs * ((const float *)ws->data)[nws > 1 ? i : 0];
        if (fabs(((const float *)bs->data)[numel_of(bs) > 1 ? i : 0] - want) > 1e-6 * want) return 0;
      }
    } else if (!(bf = const_val(g, c->in[2])) || bf->dtype != HS_DT_FLOAT32 || numel_of(bf) != oc) {
      return 0;
    }
  }
  /* output: [activation ->] QuantizeLinear, each the only reader */
  int qi = hs__fuse_sole_consumer(g, c->out[0], NULL), ai = -1;
  if (qi < 0) return 0;
  if (!hs__fuse_is_op(&g->nodes[qi], HS_OP_QuantizeLinear)) {
    ai = qi;
    if (!hs__fuse_is_op(&g->nodes[ai], HS_OP_Relu) && !hs__fuse_is_op(&g->nodes[ai], HS_OP_Clip)) return 0;
    qi = hs__fuse_sole_consumer(g, g->nodes[ai].out[0], NULL);
    if (qi < 0 || !hs__fuse_is_op(&g->nodes[qi], HS_OP_QuantizeLinear)) return 0;
  }
  hs_node *q = &g->nodes[qi];
  if (!per_tensor_qdq(g, q, &ys, &yzp, &yzt) || q->n_out != 1) return 0;
  if (yzt == HS_DT_UNDEFINED) yzt = HS_DT_UINT8;
  if (ai >= 0 && !act_absorbed(g, &g->nodes[ai], ys, yzp, yzt)) return 0;
  /* the rewrite: new constants first (they may move g->values), then the node */
  int rc, bias_v = -1, yzp_v = q->n_in > 2 ? q->in[2] : -1;
  if (bf) {
    int32_t *b = malloc(sizeof(int32_t) * (size_t)oc);
    if (!b) return hs_error_set(err, HS_NO_MEMORY, "out of memory quantizing a bias");
    for (int64_t i = 0; i < oc; i++) {
      double v = nearbyint((double)((const float *)bf->data)[i] / ((double)xs * ((const float *)ws->data)[nws > 1 ? i : 0]));
      b[i] = (int32_t)(v > 2147483647.0 ? 2147483647.0 : v < -2147483648.0 ? -2147483648.0 : v);
    }
    bias_v = add_const(g, c->name, "bias_q", HS_DT_INT32, 1, oc, b, err);
    free(b);
    if (bias_v < 0) return bias_v;
  } else if (bq) {
    bias_v = db->in[0];
  }
  if (yzp_v < 0) {
    uint8_t zero = 0;
    if ((yzp_v = add_const(g, c->name, "y_zero_point", HS_DT_UINT8, 0, 0, &zero, err)) < 0) return yzp_v;
  }
  int wzp_v = dw->n_in > 2 ? dw->in[2] : -1;
  if (wzp_v < 0) {
    int8_t zero = 0;
    if ((wzp_v = add_const(g, c->name, "w_zero_point", HS_DT_INT8, 0, 0, &zero, err)) < 0) return wzp_v;
  }
  c = &g->nodes[ci];
  q = &g->nodes[qi];
  if ((rc = hs__fuse_grow_inputs(c, 9, err))) return rc;
  int ins[9] = {dx->in[0], dx->in[1], dx->in[2], dw->in[0], dw->in[1], wzp_v, q->in[1], yzp_v, bias_v};
  memcpy(c->in, ins, sizeof ins);
  c->n_in = bias_v >= 0 ? 9 : 8;
  char *ot = strdup("QLinearConv");
  if (!ot) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  free(c->op_type);
  c->op_type = ot;
  if (ai >= 0) g->nodes[ai].dead = 1;
  hs__fuse_take_output(g, ci, qi);
  if ((rc = hs_op_bind(c, g, err))) return rc;
  drop_if_unused(g, dx);
  drop_if_unused(g, dw);
  drop_if_unused(g, db);
  return 1;
}

/* The float32 constant [N] (rank 1) that Add node a adds to value v, or NULL. */
static const hs_value *bias_of_add(const hs_graph *g, const hs_node *a, int v, int64_t n) {
  if (a->n_in != 2) return NULL;
  const hs_value *b = const_val(g, a->in[a->in[0] == v ? 1 : 0]);
  if (a->in[0] == a->in[1] || !b || b->dtype != HS_DT_FLOAT32 || b->ndim != 1 || numel_of(b) != n) return NULL;
  return b;
}

/* Rewrites MatMul node mi when it reads DequantizeLinear(x_q) (per tensor) and DequantizeLinear of a constant int8
 * [K, N] (zero point 0, scale per tensor or per column: axis 1) into one QLinearMatMul; 1 when it did. Its output:
 *   MatMul [-> Add(bias [N])] -> QuantizeLinear(y_s, y_zp)   the QuantizeLinear's y_q;
 *   MatMul [-> Add(bias [N])] read as float32 otherwise      the float32 value (HS_FUSE_FLOAT_OUTPUT, y_s 1).
 * The bias becomes an int32 input (HS_FUSE_BIAS) with scale x_s * w_s[j], as for Conv. */
static int rewrite_matmul(hs_graph *g, int mi, hs_error *err) {
  hs_node *m = &g->nodes[mi];
  if (m->n_in != 2 || m->n_out != 1) return 0;
  hs_node *dx = producer_op(g, m->in[0], HS_OP_DequantizeLinear), *dw = producer_op(g, m->in[1], HS_OP_DequantizeLinear);
  if (!dx || !dw) return 0;
  float xs, ys = 1.0f;
  int32_t xzp, yzp = 0;
  hs_dtype xzt, yzt = HS_DT_UINT8;
  if (!per_tensor_qdq(g, dx, &xs, &xzp, &xzt) || xzt == HS_DT_UNDEFINED) return 0;
  const hs_value *wq = const_val(g, dw->in[0]), *ws = dw->n_in > 1 ? const_val(g, dw->in[1]) : NULL;
  if (!wq || wq->dtype != HS_DT_INT8 || wq->ndim != 2 || !ws || ws->dtype != HS_DT_FLOAT32) return 0;
  int64_t nc = wq->dims[1], nws = numel_of(ws), axis = 1;
  hs_error tmp;
  if (hs_attr_int(dw, "axis", 1, &axis, &tmp)) return 0;
  if (nws != 1 && (nws != nc || ws->ndim != 1 || (axis != 1 && axis != -1))) return 0;
  if (dw->n_in > 2 && dw->in[2] >= 0) {
    const hs_value *wz = const_val(g, dw->in[2]);
    if (!wz || wz->dtype != HS_DT_INT8 || numel_of(wz) != nws) return 0;
    for (int64_t i = 0; i < nws; i++)
      if (((const int8_t *)wz->data)[i]) return 0;
  }
  for (int64_t i = 0; i < nws; i++)
    if (!(((const float *)ws->data)[i] > 0) || !isfinite(((const float *)ws->data)[i])) return 0;
  /* the output: [Add(bias) ->] QuantizeLinear, each the only reader, or float */
  int out = m->out[0], ai = hs__fuse_sole_consumer(g, out, NULL), qi = -1;
  const hs_value *bf = NULL;
  if (ai >= 0 && hs__fuse_is_op(&g->nodes[ai], HS_OP_Add) && (bf = bias_of_add(g, &g->nodes[ai], out, nc)))
    out = g->nodes[ai].out[0];
  else
    ai = -1;
  qi = hs__fuse_sole_consumer(g, out, NULL);
  if (qi >= 0 && (!hs__fuse_is_op(&g->nodes[qi], HS_OP_QuantizeLinear) || g->nodes[qi].n_out != 1 ||
                  !per_tensor_qdq(g, &g->nodes[qi], &ys, &yzp, &yzt)))
    qi = -1;
  if (qi < 0) ys = 1.0f, yzp = 0, yzt = HS_DT_UINT8;
  if (yzt == HS_DT_UNDEFINED) yzt = HS_DT_UINT8;
  /* new constants first (they may move g->values), then the node */
  int rc, bias_v = -1, ys_v = qi >= 0 ? g->nodes[qi].in[1] : -1, yzp_v = qi >= 0 && g->nodes[qi].n_in > 2 ? g->nodes[qi].in[2] : -1;
  if (bf) {
    int32_t *b = malloc(sizeof(int32_t) * (size_t)nc);
    if (!b) return hs_error_set(err, HS_NO_MEMORY, "out of memory quantizing a bias");
    for (int64_t i = 0; i < nc; i++) {
      double v = nearbyint((double)((const float *)bf->data)[i] / ((double)xs * ((const float *)ws->data)[nws > 1 ? i : 0]));
      b[i] = (int32_t)(v > 2147483647.0 ? 2147483647.0 : v < -2147483648.0 ? -2147483648.0 : v);
    }
    bias_v = add_const(g, m->name, "bias_q", HS_DT_INT32, 1, nc, b, err);
    free(b);
    if (bias_v < 0) return bias_v;
  }
  if (ys_v < 0 && (ys_v = add_const(g, m->name, "y_scale", HS_DT_FLOAT32, 0, 0, &ys, err)) < 0) return ys_v;
  if (yzp_v < 0) {
    uint8_t zero = 0;
    if ((yzp_v = add_const(g, m->name, "y_zero_point", HS_DT_UINT8, 0, 0, &zero, err)) < 0) return yzp_v;
  }
  int wzp_v = dw->n_in > 2 ? dw->in[2] : -1;
  if (wzp_v < 0) {
    int8_t zero = 0;
    if ((wzp_v = add_const(g, m->name, "w_zero_point", HS_DT_INT8, 0, 0, &zero, err)) < 0) return wzp_v;
  }
  m = &g->nodes[mi];
  if ((rc = hs__fuse_grow_inputs(m, 9, err))) return rc;
  int ins[9] = {dx->in[0], dx->in[1], dx->in[2], dw->in[0], dw->in[1], wzp_v, ys_v, yzp_v, bias_v};
  memcpy(m->in, ins, sizeof ins);
  m->n_in = 8;
  char *ot = strdup("QLinearMatMul");
  if (!ot) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  free(m->op_type);
  m->op_type = ot;
  if ((rc = hs_op_bind(m, g, err))) return rc;
  if (bias_v >= 0) {
    m->n_in = 9;
    hs_fusion f = {.kind = HS_FUSE_BIAS, .input = 8};
    if ((rc = hs__fuse_apply(m, &f, err))) return rc;
  }
  if (qi < 0) {
    hs_fusion f = {.kind = HS_FUSE_FLOAT_OUTPUT};
    if ((rc = hs__fuse_apply(m, &f, err))) return rc;
  }
  if (ai >= 0) hs__fuse_take_output(g, mi, ai);
  if (qi >= 0) hs__fuse_take_output(g, mi, qi);
  drop_if_unused(g, dx);
  drop_if_unused(g, dw);
  return 1;
}

/* Relu / Clip(0, c) -> QuantizeLinear where the quantizer's saturation computes the activation (ResNet's
 * Add -> Relu -> QuantizeLinear): the QuantizeLinear reads the activation's input. 1 when it did. */
static int drop_absorbed_activation(hs_graph *g, int ai) {
  hs_node *a = &g->nodes[ai];
  if (a->n_in < 1 || a->in[0] < 0 || a->n_out != 1) return 0;
  int slot, qi = hs__fuse_sole_consumer(g, a->out[0], &slot);
  if (qi < 0 || slot != 0 || !hs__fuse_is_op(&g->nodes[qi], HS_OP_QuantizeLinear)) return 0;
  float ys;
  int32_t yzp;
  hs_dtype yzt;
  if (!per_tensor_qdq(g, &g->nodes[qi], &ys, &yzp, &yzt)) return 0;
  if (!act_absorbed(g, a, ys, yzp, yzt == HS_DT_UNDEFINED ? HS_DT_UINT8 : yzt)) return 0;
  g->nodes[qi].in[0] = a->in[0];
  a->dead = 1;
  return 1;
}


/* Shapes the model file states for a and b differ (unknown ones do not). */
static int shapes_differ(const hs_graph *g, int a, int b) {
  const hs_value *va = &g->values[a], *vb = &g->values[b];
  if (va->ndim <= 0 || vb->ndim <= 0) return 0;
  if (va->ndim != vb->ndim) return 1;
  for (int i = 0; i < va->ndim; i++)
    if (va->dims[i] > 0 && vb->dims[i] > 0 && va->dims[i] != vb->dims[i]) return 1;
  return 0;
}

/* QLinearConv(y_s, y_zp) -> DequantizeLinear(y_s, y_zp) -> Add(DequantizeLinear(r_q)) -> QuantizeLinear(o_s, o_zp)
 * (ResNet's and MobileNetV2's residuals, once pass rewrote the Relu away) becomes the QLinearConv with output
 * (o_s, o_zp) and a fused residual sum (HS_FUSE_SUM, r_q, r_s, r_zp at inputs 9..11): y is no longer rounded
 * to its own grid before the sum, the one difference from the QDQ graph. 1 when it did. */
static int fuse_residual(hs_graph *g, int pi, hs_error *err) {
  hs_node *p = &g->nodes[pi];
  if (p->n_in > 9) return 0;
  int slot, di = hs__fuse_sole_consumer(g, p->out[0], &slot);
  if (di < 0 || slot != 0 || !hs__fuse_is_op(&g->nodes[di], HS_OP_DequantizeLinear)) return 0;
  hs_node *d = &g->nodes[di];
  /* the dequantizer must undo exactly the QLinearConv's own quantization */
  const hs_value *ys = const_val(g, p->in[6]), *yz = const_val(g, p->in[7]);
  const hs_value *ds = d->n_in > 1 ? const_val(g, d->in[1]) : NULL, *dz = d->n_in > 2 ? const_val(g, d->in[2]) : NULL;
  if (!ys || !yz || !ds || !dz || ds->nbytes != ys->nbytes || dz->nbytes != yz->nbytes || dz->dtype != yz->dtype ||
      memcmp(ds->data, ys->data, ys->nbytes) || memcmp(dz->data, yz->data, yz->nbytes))
    return 0;
  int ai = hs__fuse_sole_consumer(g, d->out[0], &slot);
  if (ai < 0 || !hs__fuse_is_op(&g->nodes[ai], HS_OP_Add)) return 0;
  hs_node *a = &g->nodes[ai];
  int other = a->in[1 - slot];
  hs_node *d2 = producer_op(g, other, HS_OP_DequantizeLinear);
  float rs, os;
  int32_t rz, oz;
  hs_dtype rzt, ozt;
  if (!d2 || d2 == d || !per_tensor_qdq(g, d2, &rs, &rz, &rzt) || rzt == HS_DT_UNDEFINED) return 0;
  if (shapes_differ(g, d->out[0], other)) return 0; /* a broadcasting Add */
  int qi = hs__fuse_sole_consumer(g, a->out[0], &slot);
  if (qi < 0 || slot != 0 || !hs__fuse_is_op(&g->nodes[qi], HS_OP_QuantizeLinear)) return 0;
  hs_node *q = &g->nodes[qi];
  if (!per_tensor_qdq(g, q, &os, &oz, &ozt) || ozt == HS_DT_UNDEFINED || q->n_out != 1) return 0;
  hs_fusion f = {.kind = HS_FUSE_SUM, .input = 9, .dry_run = 1};
  if (hs_op_fuse(p, &f, err) != 0) return 0;
  int rc = hs__fuse_grow_inputs(p, 12, err);
  if (rc) return rc;
  p->in[6] = q->in[1];
  p->in[7] = q->in[2];
  p->in[9] = d2->in[0];
  p->in[10] = d2->in[1];
  p->in[11] = d2->in[2];
  f.dry_run = 0;
  if ((rc = hs__fuse_apply(p, &f, err))) return rc;
  d->dead = 1;
  a->dead = 1;
  hs__fuse_take_output(g, pi, qi);
  drop_if_unused(g, d2);
  return 1;
}

/* 1 when every live reader of value v is a QLinearConv reading it as x (input 0) or as its fused residual
 * (input 9), and v is no graph output. */
static int read_only_by_qconvs(const hs_graph *g, int v) {
  int uses = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == v) {
        if (n->op != HS_OP_QLinearConv || (k != 0 && k != 9)) return 0;
        uses++;
      }
  }
  for (int k = 0; k < g->n_outputs; k++)
    if (g->outputs[k] == v) return 0;
  return uses > 0;
}

/* Values between QLinearConvs stay in NHWC: oneDNN's int8 kernels want it, and NCHW costs a reorder on
 * each side. A QLinearConv output is kept NHWC when only QLinearConvs read it (as x or as a residual);
 * a fused residual is read in its reader's output layout, so a residual and the output of the node
 * that adds it are NHWC together or not at all (settled by removing pairs until none disagrees). The
 * layouts are decided here for the whole graph, then each QLinearConv is told its pair once
 * (HS_FUSE_LAYOUT). */
static int qconv_layouts(hs_graph *g, int *changed, hs_error *err) {
  char *nhwc = calloc((size_t)g->n_values + 1, 1); /* value is kept in NHWC */
  if (!nhwc) return hs_error_set(err, HS_NO_MEMORY, "out of memory choosing layouts");
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *p = &g->nodes[i];
    if (!hs__fuse_is_op(p, HS_OP_QLinearConv) || !read_only_by_qconvs(g, p->out[0])) continue;
    hs_fusion dry = {.kind = HS_FUSE_LAYOUT, .dry_run = 1, .src = HS_LAYOUT_NHWC, .dst = HS_LAYOUT_NHWC};
    if (hs_op_fuse(p, &dry, err) == 0) nhwc[p->out[0]] = 1;
  }
  for (int again = 1, rounds = 0; again && rounds <= g->n_nodes; rounds++) {
    again = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      hs_node *n = &g->nodes[i];
      if (!hs__fuse_is_op(n, HS_OP_QLinearConv) || n->n_in <= 9 || n->in[9] < 0) continue;
      if (nhwc[n->in[9]] != nhwc[n->out[0]]) {
        nhwc[n->in[9]] = nhwc[n->out[0]] = 0;
        again = 1;
      }
    }
  }
  int rc = 0;
  for (int i = 0; i < g->n_nodes && !rc; i++) {
    hs_node *n = &g->nodes[i];
    if (!hs__fuse_is_op(n, HS_OP_QLinearConv)) continue;
    int s = n->in[0] >= 0 && nhwc[n->in[0]], d = nhwc[n->out[0]];
    if (!s && !d) continue;
    hs_fusion f = {.kind = HS_FUSE_LAYOUT, .src = s ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW,
                   .dst = d ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW, .res = d ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW};
    rc = hs__fuse_apply(n, &f, err);
    *changed = 1;
  }
  free(nhwc);
  return rc;
}

int hs_pass_qdq(hs_graph *g, int *changed, hs_error *err) {
  for (int i = 0; i < g->n_nodes; i++) {
    if ((hs__fuse_is_op(&g->nodes[i], HS_OP_Relu) || hs__fuse_is_op(&g->nodes[i], HS_OP_Clip)) &&
        drop_absorbed_activation(g, i))
      *changed = 1;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    if (!hs__fuse_is_op(&g->nodes[i], HS_OP_Conv)) continue;
    int rc = rewrite_conv(g, i, err);
    if (rc < 0) return rc;
    if (rc) *changed = 1;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    if (!hs__fuse_is_op(&g->nodes[i], HS_OP_MatMul)) continue;
    int rc = rewrite_matmul(g, i, err);
    if (rc < 0) return rc;
    if (rc) *changed = 1;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    if (!hs__fuse_is_op(&g->nodes[i], HS_OP_QLinearConv)) continue;
    int rc = fuse_residual(g, i, err);
    if (rc < 0) return rc;
    if (rc) *changed = 1;
  }
  return qconv_layouts(g, changed, err);
}

/* pass_fuse_matmul.c - fusion passes around MatMul / Gemm: a constant bias Add, activations (GELU included) and the residual Add. */

/*
 * Each pass finds a MatMul or Gemm whose output is read by exactly one node (and is not a graph
 * output), folds that node into it and marks it dead; the MatMul then writes the folded node's output
 * value. The passes decide what to fuse; the op takes it into its own params through the op table's
 * fuse() hook and may refuse it (ops/matmul.c: the bias goes into the oneDNN matmul's bias, the
 * activations and the residual Add become its post-ops). The exporter's GELU
 * (x * 0.5 * (1 + erf(x / sqrt 2)), five nodes reading x twice) is matched node by node, with every
 * constant checked, and becomes one HS_ACT_GELU_ERF step; the tanh form (nine nodes, or seven with Pow(x, 3))
 * likewise becomes HS_ACT_GELU_TANH. Anything not provably equivalent (a bias
 * that is not one row of N constants, Clip bounds given at run time, an output read twice) is left alone.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/pass_fuse.h"
#include "ops/ops.h"


/* QLinearMatMul: the QDQ pass's int8 MatMuls; the op takes activations only on a float32 output (no sums). */
static int is_matmul(const hs_node *n) {
  return hs__fuse_is_op(n, HS_OP_MatMul) || hs__fuse_is_op(n, HS_OP_Gemm) || hs__fuse_is_op(n, HS_OP_QLinearMatMul);
}

/* The float32 constant value v, or NULL. */
static const hs_value *const_f32(const hs_graph *g, int v) {
  if (v < 0) return NULL;
  const hs_value *val = &g->values[v];
  return val->kind == HS_VAL_CONST && val->dtype == HS_DT_FLOAT32 && val->data ? val : NULL;
}

/* 1 when value v is a float32 constant holding exactly one number close to want. */
static int is_scalar_near(const hs_graph *g, int v, double want) {
  const hs_value *c = const_f32(g, v);
  if (!c || c->nbytes != sizeof(float)) return 0;
  return fabs(*(const float *)c->data - want) <= 1e-6 + 1e-5 * fabs(want);
}

/* ---- MatMul + Add(constant bias over the last dim) ---- */

int hs__pass_fuse_matmul_bias(hs_graph *g, int *changed, hs_error *err) {
  for (int mi = 0; mi < g->n_nodes; mi++) {
    hs_node *m = &g->nodes[mi];
    if (!hs__fuse_is_op(m, HS_OP_MatMul) || m->n_in != 2) continue;
    hs_fusion bias_fusion = {.kind = HS_FUSE_BIAS, .input = 2, .dry_run = 1};
    int rc = hs_op_fuse(m, &bias_fusion, err); /* refused once anything else is fused */
    if (rc < 0) return rc;
    if (rc) continue;
    /* B must be a constant matrix so that N is known: the bias must be exactly N numbers, 1-D, so the
     * Add cannot broadcast the product to a larger shape */
    const hs_value *b = const_f32(g, m->in[1]);
    if (!b || b->ndim < 2) continue;
    int64_t N = b->dims[b->ndim - 1];
    int slot = -1;
    int ai = hs__fuse_sole_consumer(g, m->out[0], &slot);
    if (ai < 0) continue;
    hs_node *add = &g->nodes[ai];
    if (!hs__fuse_is_op(add, HS_OP_Add) || add->n_in != 2 || add->n_out != 1) continue;
    int bias = add->in[1 - slot];
    const hs_value *bv = const_f32(g, bias);
    if (!bv || bv->ndim != 1 || bv->dims[0] != N || (int64_t)(bv->nbytes / sizeof(float)) != N) continue;
    if ((rc = hs__fuse_grow_inputs(m, 3, err))) return rc;
    m->in[2] = bias;
    bias_fusion.dry_run = 0;
    if ((rc = hs__fuse_apply(m, &bias_fusion, err))) return rc;
    hs__fuse_take_output(g, mi, ai);
    *changed = 1;
  }
  return 0;
}

/* ---- activations after MatMul / Gemm become post-ops ---- */

/* Matches the exporter's erf GELU reading value x:
 *   d = Div(x, sqrt 2); e = Erf(d); p = Add(e, 1); q = Mul(x, p); y = Mul(q, 0.5)
 * (Add and Mul operands in either order). x must be read by exactly Div and the first Mul, every
 * intermediate by exactly the next node. Fills nodes[0..5) and returns 1 on a match. */
static int match_gelu(const hs_graph *g, int x, int nodes[5]) {
  if (hs__fuse_count_uses(g, x) != 2) return 0;
  int di = -1, qi = -1;
  for (int i = 0; i < g->n_nodes; i++) {
    const hs_node *n = &g->nodes[i];
    if (n->dead || n->n_in != 2 || n->n_out != 1) continue;
    if (hs__fuse_is_op(n, HS_OP_Div) && n->in[0] == x && n->in[1] != x && is_scalar_near(g, n->in[1], sqrt(2.0))) di = i;
    else if (hs__fuse_is_op(n, HS_OP_Mul) && (n->in[0] == x) != (n->in[1] == x)) qi = i;
  }
  if (di < 0 || qi < 0) return 0;
  int ei = hs__fuse_sole_consumer(g, g->nodes[di].out[0], NULL);
  if (ei < 0 || !hs__fuse_is_op(&g->nodes[ei], HS_OP_Erf) || g->nodes[ei].n_out != 1) return 0;
  int slot = -1;
  int pi = hs__fuse_sole_consumer(g, g->nodes[ei].out[0], &slot);
  if (pi < 0 || !hs__fuse_is_op(&g->nodes[pi], HS_OP_Add) || g->nodes[pi].n_in != 2 || g->nodes[pi].n_out != 1 ||
      !is_scalar_near(g, g->nodes[pi].in[1 - slot], 1.0))
    return 0;
  const hs_node *q = &g->nodes[qi];
  if (q->in[q->in[0] == x ? 1 : 0] != g->nodes[pi].out[0]) return 0;
  if (hs__fuse_sole_consumer(g, g->nodes[pi].out[0], NULL) != qi) return 0;
  int yi = hs__fuse_sole_consumer(g, q->out[0], &slot);
  if (yi < 0 || !hs__fuse_is_op(&g->nodes[yi], HS_OP_Mul) || g->nodes[yi].n_in != 2 || g->nodes[yi].n_out != 1 ||
      !is_scalar_near(g, g->nodes[yi].in[1 - slot], 0.5))
    return 0;
  nodes[0] = di;
  nodes[1] = ei;
  nodes[2] = pi;
  nodes[3] = qi;
  nodes[4] = yi;
  return 1;
}

/* The live node reading value v with op `op`, two inputs and one output, whose other input is `other`
 * (either order; `other` < 0: a float32 scalar constant near `near`), when it is v's only reader. */
static int sole_binary(const hs_graph *g, int v, int op, int other, double near) {
  int slot = -1;
  int i = hs__fuse_sole_consumer(g, v, &slot);
  if (i < 0) return -1;
  const hs_node *n = &g->nodes[i];
  if (!hs__fuse_is_op(n, op) || n->n_in != 2 || n->n_out != 1) return -1;
  int o = n->in[1 - slot];
  return (other >= 0 ? o == other : is_scalar_near(g, o, near)) ? i : -1;
}

/* Matches the exporter's tanh GELU reading value x (torch.nn.GELU(approximate='tanh') at opsets < 20):
 *   c = x * x * x (Mul(x, Mul(x, x)) or Pow(x, 3)); d = Add(x, Mul(c, 0.044715)); e = Mul(d, sqrt(2 / pi));
 *   t = Tanh(e); p = Add(t, 1); q = Mul(x, p); y = Mul(q, 0.5)
 * x must be read by exactly these nodes, every intermediate by exactly the next node. Fills nodes[0..*count)
 * (y last) and returns 1 on a match. */
static int match_gelu_tanh(const hs_graph *g, int x, int nodes[10], int *count) {
  int uses = hs__fuse_count_uses(g, x), k = 0, cube = -1;
  for (int i = 0; i < g->n_nodes && cube < 0; i++) {
    const hs_node *n = &g->nodes[i];
    if (n->dead || n->n_in != 2 || n->n_out != 1) continue;
    if (uses == 5 && hs__fuse_is_op(n, HS_OP_Mul) && n->in[0] == x && n->in[1] == x) {
      int b = sole_binary(g, n->out[0], HS_OP_Mul, x, 0);
      if (b < 0) return 0;
      nodes[k++] = i;
      nodes[k++] = b;
      cube = g->nodes[b].out[0];
    } else if (uses == 3 && hs__fuse_is_op(n, HS_OP_Pow) && n->in[0] == x && is_scalar_near(g, n->in[1], 3.0)) {
      nodes[k++] = i;
      cube = n->out[0];
    }
  }
  if (cube < 0) return 0;
  int c = sole_binary(g, cube, HS_OP_Mul, -1, 0.044715);
  if (c < 0) return 0;
  int d = sole_binary(g, g->nodes[c].out[0], HS_OP_Add, x, 0);
  if (d < 0) return 0;
  int e = sole_binary(g, g->nodes[d].out[0], HS_OP_Mul, -1, 0.7978845608028654) /* sqrt(2 / pi) */;
  if (e < 0) return 0;
  int t = hs__fuse_sole_consumer(g, g->nodes[e].out[0], NULL);
  if (t < 0 || !hs__fuse_is_op(&g->nodes[t], HS_OP_Tanh) || g->nodes[t].n_out != 1) return 0;
  int p = sole_binary(g, g->nodes[t].out[0], HS_OP_Add, -1, 1.0);
  if (p < 0) return 0;
  int q = sole_binary(g, g->nodes[p].out[0], HS_OP_Mul, x, 0);
  if (q < 0) return 0;
  int y = sole_binary(g, g->nodes[q].out[0], HS_OP_Mul, -1, 0.5);
  if (y < 0) return 0;
  int rest[] = {c, d, e, t, p, q, y};
  for (int i = 0; i < 7; i++) nodes[k++] = rest[i];
  *count = k;
  return 1;
}

int hs__pass_fuse_matmul_activation(hs_graph *g, int *changed, hs_error *err) {
  hs_fusion gelu_fusion = {.kind = HS_FUSE_ACTIVATION, .act = {.kind = HS_POST_ACT, .act = HS_ACT_GELU_ERF}};
  hs_fusion gelu_tanh = {.kind = HS_FUSE_ACTIVATION, .act = {.kind = HS_POST_ACT, .act = HS_ACT_GELU_TANH}};
  for (int mi = 0; mi < g->n_nodes; mi++) {
    hs_node *m = &g->nodes[mi];
    if (!is_matmul(m)) continue;
    for (;;) { /* a chain of activations folds one after the other */
      int gelu[10], rc, count = 0;
      if (match_gelu_tanh(g, m->out[0], gelu, &count)) {
        if ((rc = hs_op_fuse(m, &gelu_tanh, err)) < 0) return rc;
        if (rc == 0) {
          for (int i = 0; i < count - 1; i++) g->nodes[gelu[i]].dead = 1;
          hs__fuse_take_output(g, mi, gelu[count - 1]);
          *changed = 1;
          continue;
        }
      }
      if (match_gelu(g, m->out[0], gelu)) {
        if ((rc = hs_op_fuse(m, &gelu_fusion, err)) < 0) return rc;
        if (rc == 0) {
          for (int i = 0; i < 4; i++) g->nodes[gelu[i]].dead = 1;
          hs__fuse_take_output(g, mi, gelu[4]);
          *changed = 1;
          continue;
        }
      }
      int ai = hs__fuse_sole_consumer(g, m->out[0], NULL);
      hs_fusion f = {.kind = HS_FUSE_ACTIVATION};
      if (ai < 0 || !hs__fuse_activation_of(g, &g->nodes[ai], &f.act)) break;
      if ((rc = hs_op_fuse(m, &f, err)) < 0) return rc;
      if (rc) break; /* the kernel's post-ops are full */
      hs__fuse_take_output(g, mi, ai);
      *changed = 1;
    }
  }
  return 0;
}

/* ---- residual Add into MatMul / Gemm as a sum post-op ---- */

int hs__pass_fuse_matmul_residual(hs_graph *g, int *changed, hs_error *err) {
  return hs__fuse_residual_add(g, is_matmul, changed, err);
}

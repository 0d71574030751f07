/* pass_fuse_attention.c - the exporter's attention chain (Transposes, MatMul, scale, mask, Softmax, MatMul, Transpose)
 * becomes one FusedAttention node (ops/attention.c). */

/*
 * Matched from each Softmax over the last axis, walking up and down one sole reader at a time:
 *   s = MatMul(Tq, Tk)                 Tq = Transpose(xq, perm_q) or xq itself, same for Tk
 *   s = Div(s, c) | Mul(s, c)          optional, c a float32 scalar constant (scale 1/c or c)
 *   s = Add(s, mask)                   optional, mask any non-constant or constant float32 value
 *   p = Softmax(s, axis = last)
 *   y = MatMul(p, Tv)                  Tv = Transpose(xv, perm_v) or xv itself
 *   y = Transpose(y, perm_o)           optional
 * Every intermediate must have exactly one reader and must not be a graph output; a Transpose is only
 * peeled when this chain is its only reader; an operand without a Transpose must be known to have rank
 * 4 (the op works on rank-4 views). The first MatMul node becomes the FusedAttention node (inputs xq,
 * xk, xv[, mask]) and writes the chain's last output; the other nodes are removed. The pass runs
 * before the MatMul fusions, so neither MatMul has anything fused into it yet.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/pass_fuse.h"
#include "ops/ops.h"

/* The float32 constant value v holding exactly one number (in *out), else 0. */
static int scalar_const(const hs_graph *g, int v, float *out) {
  if (v < 0) return 0;
  const hs_value *c = &g->values[v];
  if (c->kind != HS_VAL_CONST || c->dtype != HS_DT_FLOAT32 || !c->data || c->nbytes != sizeof(float)) return 0;
  *out = *(const float *)c->data;
  return isfinite(*out);
}

/* The producer of value v when it is a live node of op `op` with one output, else -1. */
static int producer_op(const hs_graph *g, int v, int op) {
  int p = v >= 0 ? g->values[v].producer : -1;
  return p >= 0 && hs__fuse_is_op(&g->nodes[p], op) && g->nodes[p].n_out == 1 ? p : -1;
}

/* The 4-element permutation of Transpose node t in perm (0 when it has another length or none). */
static int transpose_perm(const hs_node *t, int64_t perm[4]) {
  const int64_t *p;
  size_t c;
  hs_error e;
  if (!hs_node_attr(t, "perm") || hs_attr_ints(t, "perm", &p, &c, &e) || c != 4) return 0;
  memcpy(perm, p, sizeof(int64_t) * 4);
  return 1;
}

/* Operand v of the chain: peels a Transpose that only the chain reads (its input and perm in *src and
 * perm, its node in *peeled), else v itself with the identity, when v is known to have rank 4. */
static int operand(const hs_graph *g, int v, int *src, int64_t perm[4], int *peeled) {
  *peeled = -1;
  int t = producer_op(g, v, HS_OP_Transpose);
  if (t >= 0 && hs__fuse_count_uses(g, v) == 1 && transpose_perm(&g->nodes[t], perm)) {
    *src = g->nodes[t].in[0];
    *peeled = t;
    return 1;
  }
  if (g->values[v].ndim != 4) return 0;
  for (int i = 0; i < 4; i++) perm[i] = i;
  *src = v;
  return 1;
}

static int softmax_over_last(const hs_node *s) {
  int64_t axis;
  hs_error e;
  if (s->n_in != 1 || s->n_out != 1) return 0;
  if (hs_attr_int(s, "axis", s->opset >= 13 ? -1 : 1, &axis, &e)) return 0;
  return axis == -1 || axis == 3; /* the scores are rank 4 */
}

/* Tries to fuse the chain around Softmax node si; 1 when it did. */
static int fuse_one(hs_graph *g, int si, hs_error *err, int *rc) {
  *rc = 0;
  hs_node *sm = &g->nodes[si];
  if (!softmax_over_last(sm)) return 0;
  int dead[8], nd = 0;
  int v = sm->in[0], mask = -1;
  float scale = 1.0f, c;
  int a = producer_op(g, v, HS_OP_Add);
  if (a >= 0 && hs__fuse_count_uses(g, v) == 1 && g->nodes[a].n_in == 2) {
    /* the side produced by the scale or the first MatMul is the scores; the other is the mask */
    const hs_node *an = &g->nodes[a];
    int side = -1;
    for (int k = 0; k < 2 && side < 0; k++) {
      int pv = an->in[k];
      if (producer_op(g, pv, HS_OP_MatMul) >= 0 || producer_op(g, pv, HS_OP_Div) >= 0 ||
          producer_op(g, pv, HS_OP_Mul) >= 0)
        side = k;
    }
    if (side < 0) return 0;
    mask = an->in[1 - side];
    if (g->values[mask].dtype != HS_DT_FLOAT32 && g->values[mask].dtype != HS_DT_UNDEFINED) return 0;
    dead[nd++] = a;
    v = an->in[side];
  }
  int d = producer_op(g, v, HS_OP_Div), m = producer_op(g, v, HS_OP_Mul);
  if ((d >= 0 || m >= 0) && hs__fuse_count_uses(g, v) == 1) {
    const hs_node *sn = &g->nodes[d >= 0 ? d : m];
    if (sn->n_in != 2) return 0;
    int k = -1;
    if (d >= 0 && scalar_const(g, sn->in[1], &c) && c != 0.0f) {
      scale = 1.0f / c;
      k = 0;
    } else if (m >= 0 && scalar_const(g, sn->in[1], &c)) {
      scale = c;
      k = 0;
    } else if (m >= 0 && scalar_const(g, sn->in[0], &c)) {
      scale = c;
      k = 1;
    }
    if (k < 0) return 0;
    dead[nd++] = d >= 0 ? d : m;
    v = sn->in[k];
  }
  int qk = producer_op(g, v, HS_OP_MatMul);
  if (qk < 0 || g->nodes[qk].n_in != 2 || hs__fuse_count_uses(g, v) != 1) return 0;
  /* down from the Softmax: the second MatMul and an optional Transpose */
  int slot = -1;
  int pv = hs__fuse_sole_consumer(g, sm->out[0], &slot);
  if (pv < 0 || slot != 0 || !hs__fuse_is_op(&g->nodes[pv], HS_OP_MatMul) || g->nodes[pv].n_in != 2 ||
      g->nodes[pv].n_out != 1)
    return 0;
  hs_attention_fusion af = {.scale = scale, .has_mask = mask >= 0};
  int last = pv;
  for (int i = 0; i < 4; i++) af.perm[3][i] = i;
  int to = hs__fuse_sole_consumer(g, g->nodes[pv].out[0], NULL);
  if (to >= 0 && hs__fuse_is_op(&g->nodes[to], HS_OP_Transpose) && g->nodes[to].n_out == 1 &&
      transpose_perm(&g->nodes[to], af.perm[3]))
    last = to;
  /* the operands, peeling their Transposes */
  int src[3], peeled[3];
  const int opv[3] = {g->nodes[qk].in[0], g->nodes[qk].in[1], g->nodes[pv].in[1]};
  for (int i = 0; i < 3; i++)
    if (!operand(g, opv[i], &src[i], af.perm[i], &peeled[i])) return 0;
  /* A value read twice by the chain (Q x Q^T) would have two uses: operand() then keeps its Transpose. */
  hs_fusion f = {.kind = HS_FUSE_ATTENTION, .dry_run = 1, .attn = af};
  hs_node *q = &g->nodes[qk];
  int save_op = q->op;
  q->op = HS_OP_FusedAttention; /* ask the op that will run it */
  *rc = hs_op_fuse(q, &f, err);
  q->op = save_op;
  if (*rc) {
    if (*rc > 0) *rc = 0; /* refused: leave the chain alone */
    return 0;
  }
  char *type = strdup("FusedAttention");
  if (!type) {
    *rc = hs_error_set(err, HS_NO_MEMORY, "out of memory fusing '%s'", q->name);
    return 0;
  }
  if ((*rc = hs__fuse_grow_inputs(q, mask >= 0 ? 4 : 3, err))) {
    free(type);
    return 0;
  }
  free(q->op_type);
  q->op_type = type;
  q->op = HS_OP_FusedAttention;
  for (int i = 0; i < 3; i++) q->in[i] = src[i];
  if (mask >= 0) q->in[3] = mask;
  f.dry_run = 0;
  if ((*rc = hs__fuse_apply(q, &f, err))) return 0;
  for (int i = 0; i < 3; i++)
    if (peeled[i] >= 0) g->nodes[peeled[i]].dead = 1;
  for (int i = 0; i < nd; i++) g->nodes[dead[i]].dead = 1;
  sm->dead = 1;
  if (last != pv) g->nodes[pv].dead = 1;
  hs__fuse_take_output(g, qk, last);
  return 1;
}

int hs__pass_fuse_attention(hs_graph *g, int *changed, hs_error *err) {
  for (int i = 0; i < g->n_nodes; i++) {
    if (!hs__fuse_is_op(&g->nodes[i], HS_OP_Softmax)) continue;
    int rc;
    if (fuse_one(g, i, err, &rc)) *changed = 1;
    if (rc) return rc;
  }
  return 0;
}

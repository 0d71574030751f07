/* pass_fuse_conv.c - fusion passes around Conv: fold BatchNormalization (into ConvTranspose too), fuse activations, the residual Add and a depthwise 3x3 Conv after a 1x1 one. */

/*
 * Each pass finds a Conv whose output is read by exactly one node (and is not a graph output),
 * folds that node into the Conv and marks it dead; the Conv then writes the folded node's output
 * value. The passes decide what to fuse; the op takes it into its own params through the op table's
 * fuse() hook (ops/conv.c: activations and the residual Add become post-ops of the oneDNN kernel)
 * and may refuse it. Folded BN weights are plain constants the pass writes into the Conv's inputs,
 * once the op agreed (HS_FUSE_CHANNEL_AFFINE).
 * Patterns that are not provably equivalent (non-constant BN parameters, Clip bounds given at run
 * time, training-mode BN, a Conv output read twice) are left alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/wblock.h"
#include "engine/engine.h"
#include "engine/pass_fuse.h"
#include "ops/ops.h"

int hs__fuse_count_uses(const hs_graph *g, int v) {
  int uses = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++) uses += n->in[k] == v;
  }
  for (int k = 0; k < g->n_outputs; k++) uses += g->outputs[k] == v ? 1000 : 0; /* never fold graph outputs */
  return uses;
}

/* The only live node reading value v (and its input slot), or -1. */
int hs__fuse_sole_consumer(const hs_graph *g, int v, int *slot) {
  if (hs__fuse_count_uses(g, v) != 1) return -1;
  for (int i = 0; i < g->n_nodes; i++) {
    const hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == v) {
        if (slot) *slot = k;
        return i;
      }
  }
  return -1;
}

int hs__fuse_is_op(const hs_node *n, int op) { return !n->dead && n->op == op; }

int hs__fuse_apply(hs_node *n, const hs_fusion *f, hs_error *err) {
  int rc = hs_op_fuse(n, f, err);
  if (rc == HS_FUSE_REFUSED)
    return hs_error_set(err, HS_INTERNAL, "node '%s' (%s) refused a fusion it had accepted", n->name, n->op_type);
  return rc;
}

/* A float32 constant with exactly `count` elements, or NULL. */
static const float *const_floats(const hs_graph *g, int v, int64_t count) {
  if (v < 0) return NULL;
  const hs_value *val = &g->values[v];
  if (val->kind != HS_VAL_CONST || val->dtype != HS_DT_FLOAT32 || !val->data) return NULL;
  if ((int64_t)(val->nbytes / sizeof(float)) != count) return NULL;
  return val->data;
}

void hs__fuse_take_output(hs_graph *g, int conv, int dead) {
  hs_node *c = &g->nodes[conv], *d = &g->nodes[dead];
  c->out[0] = d->out[0];
  g->values[d->out[0]].producer = conv;
  d->dead = 1;
}

/* A fresh constant value named after the node; returns its index or a negative status. */
static int new_const(hs_graph *g, const char *base, const char *what, const hs_tensor *t, hs_error *err) {
  char name[256];
  int idx = -1, rc = 0;
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, i ? "%s/%s.%d" : "%s/%s", base, what, i);
    if (hs_graph_find(g, name) < 0) break;
  }
  if ((rc = hs_graph_add_value(g, name, HS_VAL_CONST, &idx, err))) return rc;
  if ((rc = hs_value_set_const(&g->values[idx], t, err))) return rc;
  return idx;
}

int hs__fuse_grow_inputs(hs_node *nd, int n, hs_error *err) {
  if (nd->n_in >= n) return 0;
  int *in = realloc(nd->in, sizeof(int) * (size_t)n);
  if (!in) return hs_error_set(err, HS_NO_MEMORY, "out of memory fusing '%s'", nd->name);
  for (int i = nd->n_in; i < n; i++) in[i] = -1;
  nd->in = in;
  nd->n_in = n;
  return 0;
}

/* ---- BatchNormalization folded into the preceding Conv ---- */

static int fold_one_bn(hs_graph *g, int ci, int bi, hs_error *err) {
  hs_node *c = &g->nodes[ci], *b = &g->nodes[bi];
  hs_fusion affine = {.kind = HS_FUSE_CHANNEL_AFFINE, .dry_run = 1};
  int rc = hs_op_fuse(c, &affine, err);
  if (rc) return rc;
  if (b->n_in < 5 || b->in[0] != c->out[0]) return 1;
  for (int k = 1; k < b->n_out; k++)
    if (b->out[k] >= 0 && hs__fuse_count_uses(g, b->out[k]) > 0) return 1; /* training outputs read */
  int64_t training = 0, spatial = 1;
  float eps = 1e-5f;
  hs_error tmp;
  if (hs_attr_int(b, "training_mode", 0, &training, &tmp) || training) return 1;
  if (hs_attr_int(b, "spatial", 1, &spatial, &tmp) || !spatial) return 1;
  if (hs_attr_float(b, "epsilon", 1e-5f, &eps, &tmp)) return 1;
  const hs_value *w = &g->values[c->in[1]];
  if (w->kind != HS_VAL_CONST || w->dtype != HS_DT_FLOAT32 || w->ndim < 3 || !w->data) return 1;
  /* Conv weights [O, C/g, k...]: output channel o is the outer axis. ConvTranspose (one group, the op
   * refused the others) [C, O, k...]: each of the C rows holds every output channel's block. */
  int transposed = c->op == HS_OP_ConvTranspose;
  int64_t oc = w->dims[transposed ? 1 : 0], rows = transposed ? w->dims[0] : 1;
  if (oc < 1 || rows < 1) return 1;
  int64_t per = (int64_t)(w->nbytes / sizeof(float)) / oc / rows;
  const float *scale = const_floats(g, b->in[1], oc), *shift = const_floats(g, b->in[2], oc);
  const float *mean = const_floats(g, b->in[3], oc), *var = const_floats(g, b->in[4], oc);
  int bias_v = c->n_in > 2 ? c->in[2] : -1;
  const float *bias = bias_v >= 0 ? const_floats(g, bias_v, oc) : NULL;
  if (!scale || !shift || !mean || !var || (bias_v >= 0 && !bias)) return 1;

  float *nw = malloc(w->nbytes), *nb = malloc(sizeof(float) * (size_t)oc);
  if (!nw || !nb) {
    free(nw);
    free(nb);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory folding '%s'", b->name);
  }
  const float *ow = w->data;
  for (int64_t o = 0; o < oc; o++) {
    double s = (double)scale[o] / sqrt((double)var[o] + (double)eps);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t i = 0; i < per; i++) nw[(r * oc + o) * per + i] = (float)(ow[(r * oc + o) * per + i] * s);
    nb[o] = (float)(((bias ? bias[o] : 0.0) - mean[o]) * s + shift[o]);
  }
  hs_tensor tw = {.dtype = HS_DT_FLOAT32, .ndim = w->ndim, .data = nw, .nbytes = w->nbytes};
  memcpy(tw.dims, w->dims, sizeof tw.dims);
  hs_tensor tb = {.dtype = HS_DT_FLOAT32, .ndim = 1, .dims = {oc}, .data = nb, .nbytes = sizeof(float) * (size_t)oc};
  int old_w = c->in[1];
  int wi = new_const(g, c->name, "bn_folded_weight", &tw, err);
  int bidx = wi >= 0 ? new_const(g, c->name, "bn_folded_bias", &tb, err) : wi;
  free(nw);
  free(nb);
  if (wi < 0) return wi;
  if (bidx < 0) return bidx;
  c = &g->nodes[ci]; /* g->values may have moved; nodes did not, but keep the pattern uniform */
  rc = hs__fuse_grow_inputs(c, 3, err);
  if (rc) return rc;
  c->in[1] = wi;
  c->in[2] = bidx;
  hs__fuse_take_output(g, ci, bi);
  /* The old weights are garbage now unless someone else reads them: free their bytes. */
  if (hs__fuse_count_uses(g, old_w) == 0) {
    hs_value *ov = &g->values[old_w];
    hs_wblock_free(ov->data);
    ov->data = NULL;
    ov->nbytes = 0;
  }
  return 0;
}

int hs__pass_fold_bn(hs_graph *g, int *changed, hs_error *err) {
  for (int ci = 0; ci < g->n_nodes; ci++) {
    if (!hs__fuse_is_op(&g->nodes[ci], HS_OP_Conv) && !hs__fuse_is_op(&g->nodes[ci], HS_OP_ConvTranspose)) continue;
    int bi = hs__fuse_sole_consumer(g, g->nodes[ci].out[0], NULL);
    if (bi < 0 || !hs__fuse_is_op(&g->nodes[bi], HS_OP_BatchNormalization)) continue;
    int rc = fold_one_bn(g, ci, bi, err);
    if (rc < 0) return rc;
    if (rc == 0) *changed = 1;
  }
  return 0;
}

/* ---- activations after Conv become post-ops ---- */

/* Reads the activation that node n computes; returns 1 when it is one oneDNN can fuse. */
int hs__fuse_activation_of(const hs_graph *g, const hs_node *n, hs_post_op *op) {
  hs_error tmp;
  memset(op, 0, sizeof *op);
  op->kind = HS_POST_ACT;
  if (n->n_in < 1 || n->n_out < 1) return 0;
  if (hs__fuse_is_op(n, HS_OP_Relu)) {
    op->act = HS_ACT_RELU;
  } else if (hs__fuse_is_op(n, HS_OP_LeakyRelu)) {
    op->act = HS_ACT_RELU;
    if (hs_attr_float(n, "alpha", 0.01f, &op->alpha, &tmp)) return 0;
  } else if (hs__fuse_is_op(n, HS_OP_Sigmoid)) {
    op->act = HS_ACT_SIGMOID;
  } else if (hs__fuse_is_op(n, HS_OP_Tanh)) {
    op->act = HS_ACT_TANH;
  } else if (hs__fuse_is_op(n, HS_OP_HardSwish)) {
    op->act = HS_ACT_HARDSWISH;
  } else if (hs__fuse_is_op(n, HS_OP_HardSigmoid)) {
    op->act = HS_ACT_HARDSIGMOID;
    if (hs_attr_float(n, "alpha", 0.2f, &op->alpha, &tmp) || hs_attr_float(n, "beta", 0.5f, &op->beta, &tmp)) return 0;
  } else if (hs__fuse_is_op(n, HS_OP_Elu)) {
    op->act = HS_ACT_ELU;
    if (hs_attr_float(n, "alpha", 1.0f, &op->alpha, &tmp)) return 0;
  } else if (hs__fuse_is_op(n, HS_OP_Clip)) {
    op->act = HS_ACT_CLIP;
    op->alpha = -INFINITY;
    op->beta = INFINITY;
    if (n->opset < 11) {
      if (hs_attr_float(n, "min", -INFINITY, &op->alpha, &tmp) || hs_attr_float(n, "max", INFINITY, &op->beta, &tmp))
        return 0;
    } else {
      for (int k = 1; k <= 2; k++) {
        if (n->n_in <= k || n->in[k] < 0) continue;
        const float *v = const_floats(g, n->in[k], 1);
        if (!v) return 0; /* bounds computed at run time */
        if (k == 1) op->alpha = *v;
        else op->beta = *v;
      }
    }
    if (isinf(op->alpha) && isinf(op->beta)) { /* no bounds: identity */
      op->act = HS_ACT_LINEAR;
      op->alpha = 1.f;
      op->beta = 0.f;
    } else {
      if (isinf(op->alpha)) op->alpha = -3.402823466e38f;
      if (isinf(op->beta)) op->beta = 3.402823466e38f;
    }
  } else {
    return 0;
  }
  return 1;
}

int hs__pass_fuse_conv_activation(hs_graph *g, int *changed, hs_error *err) {
  for (int ci = 0; ci < g->n_nodes; ci++) {
    hs_node *c = &g->nodes[ci];
    if (!hs__fuse_is_op(c, HS_OP_Conv) && !hs__fuse_is_op(c, HS_OP_ConvTranspose)) continue;
    for (;;) { /* a chain of activations folds one after the other */
      int ai = hs__fuse_sole_consumer(g, c->out[0], NULL);
      if (ai < 0) break;
      hs_fusion f = {.kind = HS_FUSE_ACTIVATION};
      if (!hs__fuse_activation_of(g, &g->nodes[ai], &f.act)) break;
      int rc = hs_op_fuse(c, &f, err); /* refused when the kernel's post-ops are full */
      if (rc < 0) return rc;
      if (rc) break;
      hs__fuse_take_output(g, ci, ai);
      *changed = 1;
    }
  }
  return 0;
}

/* ---- residual Add into Conv as a sum post-op ---- */

int hs__fuse_residual_add(hs_graph *g, int (*is_target)(const hs_node *n), int *changed, hs_error *err) {
  hs_fusion sum = {.kind = HS_FUSE_SUM, .input = HS_FUSE_RESIDUAL_INPUT, .dry_run = 1};
  for (int ai = 0; ai < g->n_nodes; ai++) {
    hs_node *add = &g->nodes[ai];
    if (!hs__fuse_is_op(add, HS_OP_Add) || add->n_in != 2 || add->n_out != 1 || add->in[0] < 0 || add->in[1] < 0 ||
        add->in[0] == add->in[1])
      continue;
    /* Prefer the producer computed last, so the residual is ready earlier. */
    int pick = -1, pick_pos = -1;
    for (int k = 0; k < 2; k++) {
      int v = add->in[k];
      int p = g->values[v].kind == HS_VAL_INTERMEDIATE ? g->values[v].producer : -1;
      if (p < 0 || !is_target(&g->nodes[p]) || hs__fuse_count_uses(g, v) != 1) continue;
      int rc = hs_op_fuse(&g->nodes[p], &sum, err); /* a dry run: would the op take a sum? */
      if (rc < 0) return rc;
      if (rc) continue;
      if (g->values[add->in[1 - k]].kind == HS_VAL_CONST) continue; /* a bias-like constant: may broadcast */
      int pos = -1;
      for (int oi = 0; oi < g->n_order; oi++)
        if (g->order[oi] == p) pos = oi;
      if (pos > pick_pos) {
        pick = k;
        pick_pos = pos;
      }
    }
    if (pick < 0) continue;
    int pi = g->values[add->in[pick]].producer;
    int residual = add->in[1 - pick];
    hs_node *p = &g->nodes[pi];
    int rc = hs__fuse_grow_inputs(p, HS_FUSE_RESIDUAL_INPUT + 1, err);
    if (rc) return rc;
    p->in[HS_FUSE_RESIDUAL_INPUT] = residual;
    hs_fusion apply = sum;
    apply.dry_run = 0;
    if ((rc = hs__fuse_apply(p, &apply, err))) return rc;
    hs__fuse_take_output(g, pi, ai);
    *changed = 1;
  }
  return 0;
}

static int is_conv(const hs_node *n) { return hs__fuse_is_op(n, HS_OP_Conv); }

int hs__pass_fuse_conv_residual(hs_graph *g, int *changed, hs_error *err) {
  return hs__fuse_residual_add(g, is_conv, changed, err);
}

/* ---- a depthwise 3x3 Conv into the 1x1 Conv before it ----
 * MobileNet's expand (1x1 Conv, activation) -> depthwise 3x3 (stride 1 or 2, padding 1): the 1x1
 * Conv takes the activations between them, then the depthwise Conv (its weights and bias become
 * the 1x1 Conv's inputs HS_FUSE_DW_INPUT and the one after); the kernel runs the two as one oneDNN
 * primitive where that pays, else in sequence (kernels/cpu_dnnl_conv.c). Only constant weights, and
 * only when each value between them has one reader. */

/* 1 when value v is a float32 constant of rank nd with dims d (-1: any) whose bytes the graph holds, or
 * (by_ref) that a kernel of another version holds (decode-time sharing, kernels/kshare.h: Conv weights,
 * the depthwise ones of a fused kernel too; ops/conv.c reads those back). */
static int const_shaped(const hs_graph *g, int v, int nd, const int64_t *d, int by_ref) {
  if (v < 0 || v >= g->n_values) return 0;
  const hs_value *val = &g->values[v];
  if (val->kind != HS_VAL_CONST || val->dtype != HS_DT_FLOAT32 || val->ndim != nd) return 0;
  if (!val->data && !(by_ref && val->ref)) return 0;
  for (int i = 0; i < nd; i++)
    if (d[i] >= 0 && val->dims[i] != d[i]) return 0;
  return 1;
}

/* 1 when node d is a depthwise 3x3 Conv over `channels` channels, padding 1, dilation 1, the same
 * stride (1 or 2: *stride) on both axes, with constant weights and bias. */
static int depthwise_3x3(const hs_graph *g, const hs_node *d, int64_t channels, int64_t *stride) {
  hs_error tmp;
  const int64_t *v;
  size_t cnt;
  int64_t group = 1, wd[4] = {channels, 1, 3, 3}, bd[1] = {channels};
  const char *ap = "NOTSET";
  if (!hs__fuse_is_op(d, HS_OP_Conv) || d->n_in < 2 || d->n_out != 1 || !const_shaped(g, d->in[1], 4, wd, 1)) return 0;
  if (d->n_in > 2 && d->in[2] >= 0 && !const_shaped(g, d->in[2], 1, bd, 0)) return 0;
  if (d->n_in > 3 || hs_attr_int(d, "group", 1, &group, &tmp) || group != channels) return 0;
  if (hs_attr_string(d, "auto_pad", "NOTSET", &ap, &tmp) || strcmp(ap, "NOTSET") != 0) return 0;
  if (hs_attr_ints(d, "pads", &v, &cnt, &tmp) || !v || cnt != 4) return 0;
  for (size_t i = 0; i < cnt; i++)
    if (v[i] != 1) return 0;
  if (hs_attr_ints(d, "dilations", &v, &cnt, &tmp) || (v && cnt != 2)) return 0;
  for (size_t i = 0; v && i < cnt; i++)
    if (v[i] != 1) return 0;
  *stride = 1;
  if (hs_attr_ints(d, "strides", &v, &cnt, &tmp) || (v && (cnt != 2 || v[0] != v[1]))) return 0;
  if (v) *stride = v[0];
  return *stride == 1 || *stride == 2;
}

int hs__pass_fuse_conv_depthwise(hs_graph *g, int *changed, hs_error *err) {
  for (int ci = 0; ci < g->n_nodes; ci++) {
    hs_node *c = &g->nodes[ci];
    int64_t any[4] = {-1, -1, 1, 1};
    if (!hs__fuse_is_op(c, HS_OP_Conv) || c->n_in < 2 || c->n_in > 3 || c->n_out != 1 ||
        !const_shaped(g, c->in[1], 4, any, 1))
      continue;
    int64_t channels = g->values[c->in[1]].dims[0], bd[1] = {channels}, stride;
    if (c->n_in > 2 && c->in[2] >= 0 && !const_shaped(g, c->in[2], 1, bd, 0)) continue;
    /* the activations between them (at most HS_KERNEL_MAX_POST), then the depthwise Conv */
    int acts[HS_KERNEL_MAX_POST], n_acts = 0, slot = -1, di = hs__fuse_sole_consumer(g, c->out[0], &slot);
    hs_fusion f[HS_KERNEL_MAX_POST];
    while (di >= 0 && n_acts < HS_KERNEL_MAX_POST) {
      f[n_acts] = (hs_fusion){.kind = HS_FUSE_ACTIVATION};
      if (slot != 0 || !hs__fuse_activation_of(g, &g->nodes[di], &f[n_acts].act)) break;
      acts[n_acts++] = di;
      di = hs__fuse_sole_consumer(g, g->nodes[di].out[0], &slot);
    }
    if (di < 0 || slot != 0 || !depthwise_3x3(g, &g->nodes[di], channels, &stride)) continue;
    hs_fusion dw = {.kind = HS_FUSE_DEPTHWISE, .dry_run = 1, .input = HS_FUSE_DW_INPUT, .stride = stride};
    int rc = hs_op_fuse(c, &dw, err);
    if (rc < 0) return rc;
    if (rc) continue;
    int steps = 0;
    for (int k = 0; k < n_acts; k++) steps += hs_post_act_steps(f[k].act.act);
    if (steps > HS_KERNEL_MAX_POST) continue; /* the 1x1 Conv's post-ops would not hold them */
    for (int k = 0; k < n_acts; k++) {
      if ((rc = hs__fuse_apply(c, &f[k], err))) return rc;
      hs__fuse_take_output(g, ci, acts[k]);
    }
    hs_node *d = &g->nodes[di];
    int dw_w = d->in[1], dw_b = d->n_in > 2 ? d->in[2] : -1;
    if ((rc = hs__fuse_grow_inputs(c, HS_FUSE_DW_INPUT + 2, err))) return rc;
    c->in[HS_FUSE_DW_INPUT] = dw_w;
    c->in[HS_FUSE_DW_INPUT + 1] = dw_b;
    dw.dry_run = 0;
    if ((rc = hs__fuse_apply(c, &dw, err))) return rc;
    hs__fuse_take_output(g, ci, di);
    *changed = 1;
  }
  return 0;
}

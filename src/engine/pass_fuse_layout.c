/* pass_fuse_layout.c - keeps activations between consecutive convolutions (and the pools between them) in the kernels' preferred layout. */

/*
 * The graph's values keep their logical NCHW shapes; this pass only changes the physical layout of
 * values that flow from one Conv straight into others, so no reorder runs between them. A value
 * takes the preferred layout (hs_kernels_preferred_layout: channels-last or 8-channel blocks) when
 *   - a Conv (or a one-group ConvTranspose) with constant weights (so a oneDNN kernel runs it)
 *     produces it, or a MaxPool /
 *     AveragePool whose input takes it (pools keep the channel count), and
 *   - every reader is such a Conv, reading it as its input or as its fused residual, or a pool
 *     (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool) reading it as its input, and
 *   - it is not a graph output.
 * A MaxPool/AveragePool reads and writes the same layout, so its input and output keep or lose the
 * preferred layout together, except that with NHWC preferred it may read it and write NCHW (the pool
 * converts its output, smaller than the input the Conv would otherwise convert: ops/pool.c). With NHWC preferred, squeeze-and-excite's x * gate (Mul or Add, the gate
 * provably [N, C, 1, 1]) does too: x and the output together, the gate read in any layout. So do an
 * FPN's 4-D Add/Mul of two such values, a nearest/linear Resize and a Concat (any axis): their
 * value inputs and output keep or lose the layout together (the ops index the physical layout
 * exactly: elementwise.c, resize.c, select.c). A global pool's output ([N, C, 1, 1]) stays NCHW.
 * A fused residual may have another layout than the Conv's output: the kernel reorders it into the
 * output before accumulating. Convs at the edges convert: the kernel reads NCHW and writes the
 * preferred layout or the reverse.
 * Must run after the fusion passes (the residual inputs are known then). The chosen layouts go to
 * each Conv and pool through its op's fuse() hook (HS_FUSE_LAYOUT); the op records them.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "engine/engine.h"
#include "engine/pass_fuse.h"
#include "ops/ops.h"

/* A Conv, or a ConvTranspose with one group, the kernels will run (constant float weights), with its
 * output channel count. */
static int kernel_conv(const hs_graph *g, const hs_node *n, int64_t *out_c) {
  int transposed = hs__fuse_is_op(n, HS_OP_ConvTranspose);
  if ((!hs__fuse_is_op(n, HS_OP_Conv) && !transposed) || n->n_in < 2 || n->in[1] < 0) return 0;
  const hs_value *w = &g->values[n->in[1]];
  if (w->kind != HS_VAL_CONST || w->dtype != HS_DT_FLOAT32 || w->ndim < 3 || w->ndim > 5) return 0;
  if (n->n_in > 2 && n->in[2] >= 0 && g->values[n->in[2]].kind != HS_VAL_CONST) return 0;
  if (transposed) { /* weights [C, O/group, k...] */
    int64_t group = 1;
    hs_error tmp;
    if (hs_attr_int(n, "group", 1, &group, &tmp) || group != 1) return 0;
  }
  *out_c = w->dims[transposed ? 1 : 0];
  return 1;
}

/* A pooling node (all of them run on kernels that take layouts); *global: a Global*Pool. */
static int layout_pool(const hs_node *n, int *global) {
  if (n->dead || n->n_in < 1 || n->n_out < 1 || n->in[0] < 0 || n->out[0] < 0) return 0;
  *global = n->op == HS_OP_GlobalAveragePool || n->op == HS_OP_GlobalMaxPool;
  return *global || n->op == HS_OP_MaxPool || n->op == HS_OP_AveragePool;
}

/* 1 when value v is provably [N, C, 1, 1] from the graph's structure (static shapes are mostly unknown
 * here): a global pool's output, or a 1x1 unpadded Conv or an element-wise activation of such a value
 * (squeeze-and-excite's GlobalAveragePool -> Conv -> Relu -> Conv -> HardSigmoid, activations fused or not). */
static int spatially_1x1(const hs_graph *g, int v, int depth) {
  if (v < 0 || depth > 8 || g->values[v].kind != HS_VAL_INTERMEDIATE || g->values[v].producer < 0) return 0;
  const hs_node *n = &g->nodes[g->values[v].producer];
  if (n->dead || n->n_in < 1) return 0;
  if (n->op == HS_OP_GlobalAveragePool || n->op == HS_OP_GlobalMaxPool) return 1;
  if (n->op == HS_OP_Relu || n->op == HS_OP_Sigmoid || n->op == HS_OP_HardSigmoid || n->op == HS_OP_HardSwish ||
      n->op == HS_OP_Clip || n->op == HS_OP_LeakyRelu || n->op == HS_OP_Tanh)
    return spatially_1x1(g, n->in[0], depth + 1);
  if (n->op != HS_OP_Conv || n->n_in < 2 || n->in[1] < 0 || n->n_in > HS_FUSE_RESIDUAL_INPUT) return 0;
  const hs_value *w = &g->values[n->in[1]];
  if (w->ndim != 4 || w->dims[2] != 1 || w->dims[3] != 1) return 0;
  const int64_t *pads;
  size_t np = 0;
  hs_error tmp;
  if (hs_attr_ints(n, "pads", &pads, &np, &tmp) == 0)
    for (size_t i = 0; i < np; i++)
      if (pads[i] != 0) return 0;
  const char *ap = "NOTSET";
  if (hs_attr_string(n, "auto_pad", "NOTSET", &ap, &tmp) || (strcmp(ap, "NOTSET") != 0 && strcmp(ap, "VALID") != 0))
    return 0;
  return spatially_1x1(g, n->in[0], depth + 1);
}

/* 1 when value v is provably 4-D: its stated rank, or traced back through layout-passing nodes to a
 * 2-D convolution. */
static int four_d(const hs_graph *g, int v, int depth) {
  if (v < 0 || depth > 16) return 0;
  const hs_value *val = &g->values[v];
  if (val->ndim >= 0 && val->kind == HS_VAL_INTERMEDIATE) return val->ndim == 4;
  if (val->kind != HS_VAL_INTERMEDIATE || val->producer < 0) return 0;
  const hs_node *n = &g->nodes[val->producer];
  int64_t oc;
  if (n->dead || n->n_in < 1) return 0;
  if (kernel_conv(g, n, &oc)) return g->values[n->in[1]].ndim == 4;
  if (n->op == HS_OP_MaxPool || n->op == HS_OP_AveragePool || n->op == HS_OP_Resize || n->op == HS_OP_Add ||
      n->op == HS_OP_Mul || n->op == HS_OP_Concat || n->op == HS_OP_Relu)
    return four_d(g, n->in[0], depth + 1);
  return 0;
}

/* A node that passes the preferred layout through (NHWC only; the ops index it exactly): its value
 * inputs marked in mask (bit k: input k) and its output keep or lose the layout together; other
 * inputs are read in any layout (a squeeze-and-excite gate, provably [N, C, 1, 1]: the same bytes in
 * every layout) or are constants (Resize's scales). Shapes are checked at run time.
 *   - Mul or Add x * gate (squeeze-and-excite), or of two 4-D values (an FPN's top-down sum);
 *   - a 4-D Resize the op takes channels-last (nearest, linear);
 *   - a 4-D Concat. */
static int layout_follower(const hs_graph *g, const hs_node *n, hs_layout pref, unsigned *mask) {
  if (pref != HS_LAYOUT_NHWC || n->dead || n->n_out < 1 || n->out[0] < 0 || n->n_in < 1 || n->in[0] < 0) return 0;
  if (n->op == HS_OP_Add || n->op == HS_OP_Mul) {
    if (n->opset < 7 || n->n_in != 2 || n->in[1] < 0 || n->in[0] == n->in[1]) return 0;
    for (int k = 0; k < 2; k++)
      if (spatially_1x1(g, n->in[k], 0) && !spatially_1x1(g, n->in[1 - k], 0)) {
        *mask = 1u << (1 - k);
        return 1;
      }
    *mask = 3;
    return four_d(g, n->in[0], 0) && four_d(g, n->in[1], 0);
  }
  if (n->op == HS_OP_Resize || n->op == HS_OP_Concat) {
    if (n->n_in > 32) return 0;
    hs_fusion dry = {.kind = HS_FUSE_LAYOUT, .dry_run = 1, .src = pref, .dst = pref};
    hs_error tmp;
    if (hs_op_fuse((hs_node *)n, &dry, &tmp) != 0) return 0;
    *mask = 1;
    if (n->op == HS_OP_Concat)
      for (int k = 1; k < n->n_in; k++) *mask |= 1u << k;
    for (int k = 0; k < n->n_in; k++)
      if ((*mask >> k & 1) && !four_d(g, n->in[k], 0)) return 0;
    return 1;
  }
  return 0;
}

/* For a layout_follower node: 1 when its masked inputs and its output are marked alike in
 * `blocked` (*all: all marked). */
static int follower_agrees(const hs_node *n, unsigned mask, const char *blocked, int *all) {
  int want = blocked[n->out[0]], same = 1;
  for (int k = 0; k < n->n_in; k++)
    if (mask >> k & 1) same &= n->in[k] >= 0 && blocked[n->in[k]] == want;
  *all = same && want;
  return same;
}

/* 1 when input k of Conv n holds a fused residual (the residual pass put it there). */
static int is_residual(const hs_node *n, int k) {
  return k == HS_FUSE_RESIDUAL_INPUT && k < n->n_in && n->in[k] >= 0;
}

/* A Conv of a provably 1x1 input with a fused residual: the residual may be larger and widen the output
 * (squeeze-and-excite's gate + x fused into the gate's Conv); such a Conv runs NCHW throughout
 * (ops/conv.c refuses a broadcasting residual in another layout). */
static int widening_residual(const hs_graph *g, const hs_node *n) {
  return is_residual(n, HS_FUSE_RESIDUAL_INPUT) && spatially_1x1(g, n->in[0], 0);
}

/* 1 when node n can read a preferred-layout value as its input k. */
static int reads_layout(const hs_graph *g, const hs_node *n, int k, hs_layout pref) {
  int64_t oc;
  int global;
  unsigned mask;
  if (kernel_conv(g, n, &oc)) return !widening_residual(g, n) && (k == 0 || is_residual(n, k));
  if (layout_follower(g, n, pref, &mask)) return 1; /* masked inputs agree (below); the others: any layout */
  return layout_pool(n, &global) && k == 0;
}

/* Gives node n its layouts; *changed when any is not the NCHW every node starts with. */
static int set_layouts(hs_node *n, hs_layout src, hs_layout dst, hs_layout res, int *changed, hs_error *err) {
  if (src == HS_LAYOUT_NCHW && dst == HS_LAYOUT_NCHW && res == HS_LAYOUT_NCHW) return 0;
  hs_fusion f = {.kind = HS_FUSE_LAYOUT, .src = src, .dst = dst, .res = res};
  int rc = hs_op_fuse(n, &f, err);
  if (rc == HS_FUSE_REFUSED) return hs_error_set(err, HS_INTERNAL, "node '%s' (%s) refused its layouts", n->name,
                                                 n->op_type);
  if (rc == 0) *changed = 1;
  return rc;
}

int hs__pass_conv_layout(hs_graph *g, int *changed, hs_error *err) {
  hs_layout pref = hs_kernels_preferred_layout(HS_KDEV_CPU);
  if (pref == HS_LAYOUT_NCHW) return 0;
  /* blocked[v]: value v is to be kept in the preferred layout */
  char *blocked = calloc((size_t)g->n_values + 1, 1);
  if (!blocked) return hs_error_set(err, HS_NO_MEMORY, "out of memory choosing layouts");
  for (int i = 0; i < g->n_nodes; i++) {
    int64_t oc;
    const hs_node *n = &g->nodes[i];
    if (!kernel_conv(g, n, &oc) || n->out[0] < 0 || widening_residual(g, n)) continue;
    if (pref == HS_LAYOUT_NCHW8C && oc % 8 != 0) continue;
    if (g->values[n->out[0]].ndim >= 0 && g->values[n->out[0]].ndim != g->values[n->in[1]].ndim) continue;
    blocked[n->out[0]] = 1;
  }
  /* pools pass the layout on, and so does a follower whose masked inputs all have it (repeated for chains) */
  for (int more = 1; more;) {
    more = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      const hs_node *n = &g->nodes[i];
      int global, all = 1;
      unsigned mask;
      if (layout_pool(n, &global) && !global && blocked[n->in[0]] && !blocked[n->out[0]])
        blocked[n->out[0]] = more = 1;
      if (layout_follower(g, n, pref, &mask) && !blocked[n->out[0]]) {
        for (int k = 0; k < n->n_in; k++)
          if (mask >> k & 1) all &= n->in[k] >= 0 && blocked[n->in[k]];
        if (all) blocked[n->out[0]] = more = 1;
      }
    }
  }
  for (int k = 0; k < g->n_outputs; k++) blocked[g->outputs[k]] = 0;
  /* every reader must accept the layout, and a pool's input and output go together: repeat until
     nothing more is dropped */
  for (int more = 1; more;) {
    more = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      const hs_node *n = &g->nodes[i];
      if (n->dead) continue;
      for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        if (v >= 0 && blocked[v] && !reads_layout(g, n, k, pref)) blocked[v] = 0, more = 1;
      }
      int global, all;
      unsigned mask;
      /* (with NHWC preferred a pool may read it and write NCHW: ops/pool.c converts its smaller output) */
      if (layout_pool(n, &global) && !global && blocked[n->in[0]] != blocked[n->out[0]] &&
          !(pref == HS_LAYOUT_NHWC && blocked[n->in[0]]))
        blocked[n->in[0]] = blocked[n->out[0]] = 0, more = 1;
      if (layout_follower(g, n, pref, &mask) && !follower_agrees(n, mask, blocked, &all)) {
        for (int k = 0; k < n->n_in; k++)
          if ((mask >> k & 1) && n->in[k] >= 0) blocked[n->in[k]] = 0;
        blocked[n->out[0]] = 0;
        more = 1;
      }
    }
  }
  int rc = 0;
  for (int i = 0; i < g->n_nodes && rc == 0; i++) {
    hs_node *n = &g->nodes[i];
    int global, all;
    unsigned mask;
    int64_t oc;
    if (layout_follower(g, n, pref, &mask)) {
      if (follower_agrees(n, mask, blocked, &all) && all) rc = set_layouts(n, pref, pref, HS_LAYOUT_NCHW, changed, err);
    } else if (layout_pool(n, &global)) {
      hs_layout src = blocked[n->in[0]] ? pref : HS_LAYOUT_NCHW;
      hs_layout dst = !global && blocked[n->out[0]] ? pref : HS_LAYOUT_NCHW;
      rc = set_layouts(n, src, dst, HS_LAYOUT_NCHW, changed, err);
    } else if (kernel_conv(g, n, &oc)) {
      hs_layout src = blocked[n->in[0]] ? pref : HS_LAYOUT_NCHW, dst = blocked[n->out[0]] ? pref : HS_LAYOUT_NCHW;
      int r = HS_FUSE_RESIDUAL_INPUT;
      hs_layout res = is_residual(n, r) && blocked[n->in[r]] ? pref : HS_LAYOUT_NCHW;
      rc = set_layouts(n, src, dst, res, changed, err);
    }
  }
  free(blocked);
  return rc;
}

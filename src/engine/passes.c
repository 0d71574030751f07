/* passes.c - the graph pass framework (named pipelines of small rewrites) and the generic passes:
 * drop Identity / inference Dropout, fold constant subgraphs.
 *
 * A pass sees a graph whose ops are bound (node->op, node->params valid) and rewrites it in place:
 * it marks nodes dead, points consumers at other values, or turns values into constants. After a
 * pass that changed something the framework recomputes uses and the topological order.
 */
#include <stdlib.h>
#include <string.h>

#include "base/wblock.h"
#include "engine/engine.h"
#include "engine/passes.h"
#include "ops/ops.h"

#define FOLD_LIMIT ((size_t)256 << 20) /* constant results larger than this stay computed at run time */

int hs_eval_const_node(hs_graph *g, int ni, hs_error *err) {
  hs_node *n = &g->nodes[ni];
  const hs_op_def *d = hs_op_get(n->op);
  hs_tensor in[32], out[16];
  if (n->n_in > 32 || n->n_out > 16) return 1; /* not folded */
  for (int i = 0; i < n->n_in; i++) {
    memset(&in[i], 0, sizeof in[i]);
    if (n->in[i] < 0) continue;
    const hs_value *v = &g->values[n->in[i]];
    in[i].dtype = v->dtype;
    in[i].ndim = v->ndim;
    memcpy(in[i].dims, v->dims, sizeof v->dims);
    static _Alignas(64) unsigned char empty[64]; /* a non-NULL buffer for empty constants */
    in[i].data = v->data ? v->data : empty;
    in[i].nbytes = v->nbytes;
  }
  memset(out, 0, sizeof out);
  int rc = d->impl->infer(n, in, n->n_in, out, n->n_out, err);
  if (rc) return rc;
  size_t total = 0;
  for (int k = 0; k < n->n_out; k++) total += n->out[k] >= 0 ? out[k].nbytes : 0;
  if (total > FOLD_LIMIT) return 1;
  size_t sb = d->impl->scratch_bytes ? d->impl->scratch_bytes(n, in, n->n_in, out, n->n_out) : 0;
  void *scratch = sb ? malloc(sb) : NULL;
  if (sb && !scratch) return hs_error_set(err, HS_NO_MEMORY, "out of memory folding '%s'", n->name);
  for (int k = 0; k < n->n_out && rc == 0; k++) {
    out[k].data = malloc(out[k].nbytes ? out[k].nbytes : 1);
    if (!out[k].data) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory folding '%s'", n->name);
  }
  if (rc == 0) rc = d->impl->run(n, in, n->n_in, out, n->n_out, scratch, err);
  for (int k = 0; k < n->n_out && rc == 0; k++) {
    if (n->out[k] < 0) continue;
    hs_value *v = &g->values[n->out[k]];
    hs_wblock_free(v->data);
    v->data = out[k].data;
    out[k].data = NULL;
    v->nbytes = out[k].nbytes;
    v->kind = HS_VAL_CONST;
    v->dtype = out[k].dtype;
    v->ndim = out[k].ndim;
    memcpy(v->dims, out[k].dims, sizeof v->dims);
    v->producer = -1;
  }
  for (int k = 0; k < n->n_out; k++) free(out[k].data);
  free(scratch);
  if (rc == 0) n->dead = 1;
  return rc;
}

/* Nodes whose inputs are all constants are computed once, at load; keep_dq leaves DequantizeLinear
 * for the QDQ pass (pass_qdq.c), which reads the quantized weights through it. */
static int fold_constants(hs_graph *g, int keep_dq, int *changed, hs_error *err) {
  for (int oi = 0; oi < g->n_order; oi++) {
    int ni = g->order[oi];
    hs_node *n = &g->nodes[ni];
    if (n->dead || n->n_in == 0 || (hs_op_get(n->op)->flags & HS_OP_CONTROL)) continue;
    if (keep_dq && n->op == HS_OP_DequantizeLinear) continue;
    int all_const = 1;
    for (int i = 0; i < n->n_in; i++)
      if (n->in[i] >= 0 && g->values[n->in[i]].kind != HS_VAL_CONST) all_const = 0;
    if (!all_const) continue;
    int rc = hs_eval_const_node(g, ni, err);
    if (rc < 0) return rc;
    if (rc == 0) *changed = 1;
  }
  return 0;
}

static int pass_fold_constants(hs_graph *g, int *changed, hs_error *err) { return fold_constants(g, 0, changed, err); }
static int pass_fold_constants_keep_dq(hs_graph *g, int *changed, hs_error *err) {
  return fold_constants(g, 1, changed, err);
}

static int is_graph_output(const hs_graph *g, int v) {
  for (int k = 0; k < g->n_outputs; k++)
    if (g->outputs[k] == v) return 1;
  return 0;
}

/* Identity, and Dropout whose mask nobody reads, forward their input: consumers read it directly. */
static int pass_drop_identity(hs_graph *g, int *changed, hs_error *err) {
  for (int ni = 0; ni < g->n_nodes; ni++) {
    hs_node *n = &g->nodes[ni];
    if (n->dead || n->n_in < 1 || n->in[0] < 0 || n->n_out < 1 || n->out[0] < 0) continue;
    int ident = n->op == HS_OP_Identity;
    if (!ident && n->op == HS_OP_Dropout) {
      int mask_used = n->n_out > 1 && n->out[1] >= 0 &&
                      (g->values[n->out[1]].n_uses > 0 || is_graph_output(g, n->out[1]));
      int training = n->n_in > 2 && n->in[2] >= 0; /* a training_mode input: leave it to the op */
      ident = !mask_used && !training;
    }
    if (!ident) continue;
    int from = n->out[0], to = n->in[0];
    if (is_graph_output(g, from)) continue; /* the output keeps its name */
    for (int mi = 0; mi < g->n_nodes; mi++) {
      hs_node *c = &g->nodes[mi];
      if (c->dead) continue;
      for (int i = 0; i < c->n_in; i++)
        if (c->in[i] == from) c->in[i] = to;
    }
    n->dead = 1;
    *changed = 1;
  }
  return 0;
}

/* pass_f16.c: float16 models computed in float32 (first: the passes below see float32 only) */
int hs_pass_f16_to_f32(hs_graph *g, int *changed, hs_error *err);

/* pass_qdq.c: DequantizeLinear -> Conv -> QuantizeLinear as QLinearConv (before folding dequantizes the weights) */
int hs_pass_qdq(hs_graph *g, int *changed, hs_error *err);

static const hs_pass k_generic[] = {
    {"f16_to_f32", hs_pass_f16_to_f32},
    {"drop_identity", pass_drop_identity},
    {"fold_constants_keep_dequantize", pass_fold_constants_keep_dq},
    {"qdq_to_qlinear", hs_pass_qdq},
    {"fold_constants", pass_fold_constants},
};

/* Fusion passes live in pass_fuse*.c (owned by the kernels layer) and are listed there. */
extern const hs_pass hs_fuse_passes[];

static int run_pass(hs_graph *g, const hs_pass *p, hs_error *err) {
  int changed = 0;
  int rc = p->run(g, &changed, err);
  if (rc) return hs_error_prefix(err, "pass %s", p->name);
  if (changed && (rc = hs_graph_finish(g, err))) return hs_error_prefix(err, "after pass %s", p->name);
  return 0;
}

int hs_pass_pipeline(hs_graph *g, const char *pipeline, hs_error *err) {
  if (strcmp(pipeline, "none") == 0) return 0;
  if (strcmp(pipeline, "default") != 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "unknown pass pipeline '%s'", pipeline);
  int rc;
  for (size_t i = 0; i < sizeof k_generic / sizeof k_generic[0]; i++)
    if ((rc = run_pass(g, &k_generic[i], err))) return rc;
  for (const hs_pass *p = hs_fuse_passes; p->name; p++)
    if ((rc = run_pass(g, p, err))) return rc;
  return 0;
}

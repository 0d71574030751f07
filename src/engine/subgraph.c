/* subgraph.c - subgraphs in the engine: compiled once as models of their own, run for control-flow
 * ops through the hs_run_ctx callbacks, and the node-by-node runner of dynamic graphs.
 *
 * DESIGN. A subgraph (If branch, Loop / Scan body) is compiled exactly like a model: its graph stays
 * owned by the node attribute that holds it (the model borrows it), its inputs are the formal ones
 * followed by its outer-scope references (ir.h, Subgraphs), and the parent model keeps it in subs[].
 * A session runs a subgraph through a session of its own, made on first use, so each body keeps its
 * own plan cache and arena: a Loop whose body sees the same shapes every iteration plans once.
 *
 * A graph holding a control-flow node cannot be planned ahead: how many times a Loop runs, which
 * branch an If takes, and so the shapes after it, are known only at run time. Such a graph runs node
 * by node here: each node's outputs are inferred from the actual inputs, written into a buffer the
 * session keeps per value (grown when a run needs more, reused otherwise), and control-flow nodes call
 * back into the engine for their subgraphs and their output memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/subgraph.h"
#include "kernels/kernels.h"
#include "ops/ops.h"

/* ---- compiling ---------------------------------------------------------------------------------- */

static int add_sub(hs_engine_model *m, hs_engine_model *sub) {
  hs_engine_model **ns = realloc(m->subs, sizeof *ns * (size_t)(m->n_subs + 1));
  if (!ns) return HS_NO_MEMORY;
  m->subs = ns;
  m->subs[m->n_subs++] = sub;
  return 0;
}

/* Compiles attribute a's graph as a model that borrows it (a->graph keeps owning it: the compiled
 * graph is written back whether compiling worked or not, so nothing is freed twice). */
static int compile_one(hs_engine_model *m, hs_node *n, hs_attr *a, const hs_backend_options *opts, hs_error *err) {
  hs_engine_model *sub = calloc(1, sizeof *sub);
  if (!sub) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  sub->g = *a->graph;
  sub->graph_borrowed = 1;
  sub->is_sub = 1;
  int rc = hs_engine_compile_graph(sub, opts, err);
  *a->graph = sub->g;
  if (rc == 0 && add_sub(m, sub)) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
  if (rc) {
    hs_engine_free(sub);
    return hs_error_prefix(err, "subgraph '%s' of node '%s'", a->name, n->name);
  }
  a->sub = m->n_subs - 1;
  return 0;
}

int hs_subgraphs_compile(hs_engine_model *m, const hs_backend_options *opts, hs_error *err) {
  hs_graph *g = &m->g;
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int a = 0; a < n->n_attrs; a++) {
      if (n->attrs[a].type != HS_ATTR_GRAPH || !n->attrs[a].graph) continue;
      int rc = compile_one(m, n, &n->attrs[a], opts, err);
      if (rc) return rc;
    }
  }
  return 0;
}

/* ---- If on a constant condition: the live branch inlined, the dead one dropped ------------------ */

/* A new value of g named "<prefix>/<name>" (with a counter when that is taken). */
static int add_scoped_value(hs_graph *g, const char *prefix, const char *name, hs_value_kind kind, int *out,
                            hs_error *err) {
  size_t len = strlen(prefix) + strlen(name) + 24;
  char *buf = malloc(len);
  if (!buf) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  int rc = 0;
  for (int k = 0; k < 1000; k++) {
    if (k == 0) snprintf(buf, len, "%s/%s", prefix, name);
    else snprintf(buf, len, "%s/%s_%d", prefix, name, k);
    if (hs_graph_find(g, buf) < 0) break;
  }
  rc = hs_graph_add_value(g, buf, kind, out, err);
  free(buf);
  return rc;
}

/* Moves the branch `sg` of If node ni into g: its values under the node's name, its nodes as they are
 * (their own subgraphs move with them), an Identity per output onto the If's outputs; the If dies. */
static int inline_branch(hs_graph *g, int ni, hs_graph *sg, hs_error *err) {
  int rc = 0;
  int *vm = malloc(sizeof(int) * ((size_t)sg->n_values + 1));
  if (!vm) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  char *prefix = strdup(g->nodes[ni].name);
  if (!prefix) {
    free(vm);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  for (int v = 0; v < sg->n_values && rc == 0; v++) {
    hs_value *sv = &sg->values[v];
    if (sv->kind == HS_VAL_INPUT) { /* a branch has no formal inputs: an outer-scope reference */
      vm[v] = g->nodes[ni].in[sg->outer_base + sv->input_index];
      continue;
    }
    rc = add_scoped_value(g, prefix, sv->name, sv->kind, &vm[v], err);
    if (rc) break;
    hs_value *pv = &g->values[vm[v]];
    pv->dtype = sv->dtype;
    pv->ndim = sv->ndim;
    memcpy(pv->dims, sv->dims, sizeof pv->dims);
    if (sv->kind == HS_VAL_CONST) { /* the contents move */
      pv->data = sv->data;
      pv->nbytes = sv->nbytes;
      sv->data = NULL;
    }
  }
  for (int i = 0; i < sg->n_nodes && rc == 0; i++) {
    hs_node *sn = &sg->nodes[i];
    if (sn->dead) continue;
    int idx;
    if ((rc = hs_graph_add_node(g, &idx, err))) break;
    hs_node *n = &g->nodes[idx];
    *n = *sn; /* strings, attributes and arrays move; sn keeps nothing */
    memset(sn, 0, sizeof *sn);
    sn->dead = 1;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) n->in[k] = vm[n->in[k]];
    for (int k = 0; k < n->n_out; k++)
      if (n->out[k] >= 0) {
        n->out[k] = vm[n->out[k]];
        g->values[n->out[k]].producer = idx;
      }
  }
  for (int k = 0; k < sg->n_outputs && rc == 0; k++) { /* Identity: branch output -> the If's output */
    int dst = g->nodes[ni].out[k];
    if (dst < 0) continue;
    int idx;
    if ((rc = hs_graph_add_node(g, &idx, err))) break;
    hs_node *n = &g->nodes[idx];
    n->op_type = strdup("Identity");
    n->domain = strdup("");
    n->name = malloc(strlen(prefix) + 32);
    n->in = malloc(sizeof(int));
    n->out = malloc(sizeof(int));
    if (!n->op_type || !n->domain || !n->name || !n->in || !n->out) {
      rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
      break;
    }
    sprintf(n->name, "%s/output_%d", prefix, k);
    n->opset = g->opset;
    n->n_in = n->n_out = 1;
    n->in[0] = vm[sg->outputs[k]];
    n->out[0] = dst;
    g->values[dst].producer = idx;
  }
  if (rc == 0) g->nodes[ni].dead = 1;
  free(vm);
  free(prefix);
  return rc;
}

int hs_fold_const_ifs(hs_graph *g, int *folded, hs_error *err) {
  *folded = 0;
  for (int ni = 0; ni < g->n_nodes; ni++) {
    hs_node *n = &g->nodes[ni];
    if (n->dead || n->domain[0] || strcmp(n->op_type, "If") != 0 || n->n_in - n->n_implicit != 1 || n->in[0] < 0)
      continue;
    const hs_value *c = &g->values[n->in[0]];
    if (c->kind != HS_VAL_CONST || !c->data || c->nbytes == 0) continue;
    hs_tensor t = {.dtype = c->dtype, .ndim = c->ndim, .data = c->data, .nbytes = c->nbytes};
    memcpy(t.dims, c->dims, sizeof t.dims);
    if (hs_shape_numel(t.dims, t.ndim) != 1) continue; /* left to the op, which reports it */
    const char *want = hs_get_scalar(&t) != 0 ? "then_branch" : "else_branch";
    hs_graph *live = NULL;
    for (int a = 0; a < n->n_attrs; a++)
      if (n->attrs[a].type == HS_ATTR_GRAPH && strcmp(n->attrs[a].name, want) == 0) live = n->attrs[a].graph;
    if (!live || live->n_inputs != live->n_outer || live->n_outputs != n->n_out) continue; /* the op refuses it */
    int rc = inline_branch(g, ni, live, err);
    if (rc) return hs_error_prefix(err, "inlining the live branch of If '%s'", g->nodes[ni].name);
    (*folded)++;
  }
  return *folded ? hs_graph_finish(g, err) : 0;
}

/* ---- running a subgraph ------------------------------------------------------------------------- */

/* Runs compiled subgraph `a` of a node of session s's model, through s's session for it. */
static int run_subgraph(hs_engine_session *s, const hs_attr *a, const hs_tensor *in, int n_in, hs_tensor *out,
                        int n_out, hs_error *err) {
  const hs_engine_model *m = s->m;
  if (a->sub < 0 || a->sub >= m->n_subs) return hs_error_set(err, HS_INTERNAL, "subgraph '%s' is not compiled", a->name);
  const hs_engine_model *sm = m->subs[a->sub];
  if (n_in != sm->n_inputs || n_out != sm->n_outputs)
    return hs_error_set(err, HS_INTERNAL, "subgraph '%s': %d inputs and %d outputs given, it has %d and %d", a->name,
                        n_in, n_out, sm->n_inputs, sm->n_outputs);
  for (int i = 0; i < n_in; i++) {
    const hs_io_desc *d = &sm->inputs[i];
    if (d->dtype != HS_DT_UNDEFINED && in[i].dtype != d->dtype) {
      const char *want = hs_dtype_kserve_name(d->dtype), *got = hs_dtype_kserve_name(in[i].dtype);
      return hs_error_set(err, HS_INVALID_ARGUMENT, "subgraph '%s' input '%s': type %s, it declares %s", a->name,
                          d->name, got ? got : "?", want ? want : "?");
    }
  }
  if (!s->subs[a->sub]) {
    int rc = hs_engine_session_create(sm, &s->subs[a->sub], err);
    if (rc) return rc;
  }
  return hs_engine_session_exec(s->subs[a->sub], in, out, err);
}

/* ---- running a dynamic graph node by node ------------------------------------------------------- */

typedef struct hs_eager {
  int n_values, n_outputs;
  hs_tensor *val; /* per value: its current view */
  void **buf;     /* per value: the buffer this session keeps for it */
  size_t *cap;
  void **out_buf; /* per graph output: where its result is copied */
  size_t *out_cap;
  void *scratch;
  size_t scratch_cap;
  void **discard; /* per output slot (max_out): where a control-flow op writes an output nobody wants */
  size_t *discard_cap;
  int n_discard;
  size_t held; /* bytes of all the buffers above (hs_dynamic_limit_bytes) */
} hs_eager;

static _Alignas(64) unsigned char g_empty[64]; /* never written: the data of empty tensors */

void hs_eager_free(hs_eager *e) {
  if (!e) return;
  free(e->val);
  for (int i = 0; e->buf && i < e->n_values; i++) free(e->buf[i]);
  for (int i = 0; e->out_buf && i < e->n_outputs; i++) free(e->out_buf[i]);
  free(e->buf);
  free(e->cap);
  free(e->out_buf);
  free(e->out_cap);
  free(e->scratch);
  for (int i = 0; e->discard && i < e->n_discard; i++) free(e->discard[i]);
  free(e->discard);
  free(e->discard_cap);
  free(e);
}

/* *buf holds at least need bytes (64-byte aligned); e->held counts them all against the limit. */
static int ensure(hs_eager *e, void **buf, size_t *cap, size_t need, hs_error *err) {
  if (need <= *cap && *buf) return 0;
  if (need > hs_dynamic_limit_bytes || e->held - *cap > hs_dynamic_limit_bytes - need)
    return hs_error_set(err, HS_LIMIT, "the run needs more than %zu bytes", hs_dynamic_limit_bytes);
  size_t sz = ((need ? need : 1) + 63) & ~(size_t)63;
  void *nb = aligned_alloc(64, sz);
  if (!nb) return hs_error_set(err, HS_NO_MEMORY, "out of memory (%zu bytes)", sz);
  free(*buf);
  e->held = e->held - *cap + sz;
  *buf = nb;
  *cap = sz;
  return 0;
}

static int eager_create(const hs_engine_model *m, hs_eager **out, hs_error *err) {
  const hs_graph *g = &m->g;
  hs_eager *e = calloc(1, sizeof *e);
  if (!e) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  e->n_values = g->n_values;
  e->n_outputs = g->n_outputs;
  e->val = calloc((size_t)g->n_values + 1, sizeof *e->val);
  e->buf = calloc((size_t)g->n_values + 1, sizeof *e->buf);
  e->cap = calloc((size_t)g->n_values + 1, sizeof *e->cap);
  e->out_buf = calloc((size_t)g->n_outputs + 1, sizeof *e->out_buf);
  e->out_cap = calloc((size_t)g->n_outputs + 1, sizeof *e->out_cap);
  e->n_discard = m->max_out;
  e->discard = calloc((size_t)m->max_out + 1, sizeof *e->discard);
  e->discard_cap = calloc((size_t)m->max_out + 1, sizeof *e->discard_cap);
  if (!e->val || !e->buf || !e->cap || !e->out_buf || !e->out_cap || !e->discard || !e->discard_cap) {
    hs_eager_free(e);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  *out = e;
  return 0;
}

/* What a control-flow node's callbacks need: the session running it and the node. */
typedef struct {
  hs_engine_session *s;
  const hs_node *n;
} eager_call;

static int cb_run_subgraph(hs_run_ctx *ctx, const hs_attr *sub, const hs_tensor *in, int n_in, hs_tensor *out,
                           int n_out, hs_error *err) {
  eager_call *c = ctx->engine;
  return run_subgraph(c->s, sub, in, n_in, out, n_out, err);
}

static int cb_alloc_output(hs_run_ctx *ctx, int k, hs_tensor *t, hs_error *err) {
  eager_call *c = ctx->engine;
  if (k < 0 || k >= c->n->n_out) return hs_error_set(err, HS_INTERNAL, "node '%s': no output %d", c->n->name, k);
  int v = c->n->out[k];
  hs_eager *e = c->s->eager;
  void **buf = v < 0 ? &e->discard[k] : &e->buf[v];
  size_t *cap = v < 0 ? &e->discard_cap[k] : &e->cap[v];
  int rc = ensure(e, buf, cap, t->nbytes, err);
  if (rc) return rc;
  t->data = *buf;
  return 0;
}

/* Runs node n over the current views: its outputs' views point into the session's buffers after. */
static int eager_node(hs_engine_session *s, const hs_node *n, hs_error *err) {
  const hs_graph *g = &s->m->g;
  hs_eager *e = s->eager;
  const hs_op_def *d = hs_op_get(n->op);
  hs_tensor *vin = s->vin, *vout = s->vout;
  int rc;
  for (int i = 0; i < n->n_in; i++) {
    memset(&vin[i], 0, sizeof vin[i]);
    if (n->in[i] < 0) continue;
    vin[i] = e->val[n->in[i]];
    if (vin[i].dtype == HS_DT_UNDEFINED)
      return hs_error_set(err, HS_INTERNAL, "node '%s' reads '%s' before it is computed", n->name,
                          g->values[n->in[i]].name);
  }
  for (int k = 0; k < n->n_out; k++) memset(&vout[k], 0, sizeof vout[k]);
  if (d->flags & HS_OP_CONTROL) {
    eager_call c = {s, n};
    hs_run_ctx ctx = {.run_subgraph = cb_run_subgraph, .alloc_output = cb_alloc_output, .engine = &c};
    if ((rc = d->impl->run_ctl(n, vin, n->n_in, vout, n->n_out, &ctx, err))) return rc;
  } else {
    if ((rc = d->impl->infer(n, vin, n->n_in, vout, n->n_out, err))) return rc;
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      if (v < 0) continue;
      if (vout[k].dtype == HS_DT_UNDEFINED) return hs_op_errf(err, n, HS_INTERNAL, "output %d has no type", k);
      if ((rc = ensure(e, &e->buf[v], &e->cap[v], vout[k].nbytes, err))) return rc;
      vout[k].data = e->buf[v];
    }
    size_t sb = d->impl->scratch_bytes ? d->impl->scratch_bytes(n, vin, n->n_in, vout, n->n_out) : 0;
    if ((rc = ensure(e, &e->scratch, &e->scratch_cap, sb, err))) return rc;
    if ((rc = d->impl->run(n, vin, n->n_in, vout, n->n_out, e->scratch, err))) return rc;
  }
  for (int k = 0; k < n->n_out; k++) {
    int v = n->out[k];
    if (v < 0) continue;
    if (vout[k].dtype == HS_DT_UNDEFINED || (!vout[k].data && vout[k].nbytes))
      return hs_op_errf(err, n, HS_INTERNAL, "output %d was not produced", k);
    e->val[v] = vout[k];
  }
  return 0;
}

int hs_eager_run(hs_engine_session *s, const hs_tensor *inputs, hs_tensor *outputs, hs_error *err) {
  const hs_engine_model *m = s->m;
  const hs_graph *g = &m->g;
  int rc;
  hs_kernels_set_threads(m->threads); /* kernels made during this run get the model's threads */
  if (!s->eager && (rc = eager_create(m, &s->eager, err))) return rc;
  hs_eager *e = s->eager;
  for (int v = 0; v < g->n_values; v++) {
    const hs_value *val = &g->values[v];
    hs_tensor *t = &e->val[v];
    memset(t, 0, sizeof *t);
    if (val->kind == HS_VAL_CONST) {
      if (!val->data && val->nbytes) continue; /* released into its reader's state; never read here */
      t->dtype = val->dtype;
      t->ndim = val->ndim;
      memcpy(t->dims, val->dims, sizeof t->dims);
      t->nbytes = val->nbytes;
      t->data = val->data ? val->data : g_empty;
    } else if (val->kind == HS_VAL_INPUT && val->input_index >= 0) {
      *t = inputs[val->input_index];
      if (!t->data) t->data = g_empty;
    }
  }
  for (int oi = 0; oi < g->n_order; oi++)
    if ((rc = eager_node(s, &g->nodes[g->order[oi]], err))) return rc;
  for (int k = 0; k < g->n_outputs; k++) { /* copied: an output may be an input or a constant */
    const hs_tensor *t = &e->val[g->outputs[k]];
    if (t->dtype == HS_DT_UNDEFINED)
      return hs_error_set(err, HS_PARSE, "graph output '%s' is never computed", g->values[g->outputs[k]].name);
    if ((rc = ensure(e, &e->out_buf[k], &e->out_cap[k], t->nbytes, err))) return rc;
    outputs[k] = *t;
    outputs[k].data = e->out_buf[k];
    if (t->nbytes) memcpy(outputs[k].data, t->data, t->nbytes);
  }
  return 0;
}

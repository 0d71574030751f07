/* plan.c - per-shape run plans: shape propagation, plan-time folding of shape arithmetic, and a
 * liveness-based memory plan so a run needs exactly one scratch arena; plus the node loop that
 * executes a plan.
 *
 * A plan is built off the hot path (first run with new input shapes) and cached by the session.
 * It owns the small constants it folded (e.g. Shape -> Gather -> Concat results); everything else
 * points into the model (constants), the caller's inputs, or the arena.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/plan.h"
#include "ops/ops.h"

#define ALIGN 64
#define FOLD_MAX_BYTES (1u << 20)           /* fold at plan time only small results (shape arithmetic) */
#define ARENA_LIMIT ((size_t)16 << 30)      /* refuse plans beyond 16 GiB of scratch */

enum { LOC_NONE, LOC_INPUT, LOC_CONST, LOC_FOLDED, LOC_ARENA };

/* Empty tensors (0 bytes) may have no buffer; ops get this instead of NULL so that pointer
 * arithmetic on an empty view stays defined. Nothing is ever read or written through it. */
static _Alignas(64) unsigned char g_empty[64];
static void *nonnull(const void *p) { return p ? (void *)p : g_empty; }

typedef struct {
  hs_tensor t;      /* dtype and shape (data unused) */
  int loc;
  size_t off;       /* LOC_INPUT: input position; LOC_ARENA: offset */
  const void *data; /* LOC_CONST / LOC_FOLDED contents */
} pval;

struct hs_plan {
  int n_values;
  pval *v;
  uint8_t *skip;        /* per node: folded while planning, not run */
  size_t *scratch_off;  /* per node */
  size_t *copy_off;     /* per graph output: arena slot to copy into, or SIZE_MAX */
  size_t arena;
  int n_inplace;        /* outputs that took over an input's buffer (inplace_output) */
  void **folded;        /* buffers this plan owns */
  int n_folded;
  /* key: the input shapes and the contents of key inputs this plan was made for */
  hs_tensor *in_shapes;
  void **key_data;
  size_t *key_len;
};

void hs_plan_free(hs_plan *p) {
  if (!p) return;
  for (int i = 0; i < p->n_folded; i++) free(p->folded[i]);
  free(p->folded);
  free(p->v);
  free(p->skip);
  free(p->scratch_off);
  free(p->copy_off);
  free(p->in_shapes);
  if (p->key_data) {
    /* key_data entries are owned */
    for (int i = 0; p->key_len && p->key_len[i] != SIZE_MAX; i++) free(p->key_data[i]);
  }
  free(p->key_data);
  free(p->key_len);
  free(p);
}

size_t hs_plan_arena_bytes(const hs_plan *p) { return p->arena; }
int hs_plan_inplace_count(const hs_plan *p) { return p->n_inplace; }

static int is_key_input(const hs_engine_model *m, int pos) {
  for (int i = 0; i < m->n_key_inputs; i++)
    if (m->key_inputs[i] == pos) return 1;
  return 0;
}

int hs_plan_matches(const hs_plan *p, const hs_engine_model *m, const hs_tensor *inputs) {
  for (int i = 0; i < m->n_inputs; i++) {
    if (p->in_shapes[i].ndim != inputs[i].ndim) return 0;
    if (memcmp(p->in_shapes[i].dims, inputs[i].dims, sizeof(int64_t) * (size_t)inputs[i].ndim) != 0) return 0;
  }
  for (int k = 0; k < m->n_key_inputs; k++) {
    const hs_tensor *t = &inputs[m->key_inputs[k]];
    if (t->nbytes != p->key_len[k] || (t->nbytes && memcmp(t->data, p->key_data[k], t->nbytes) != 0)) return 0;
  }
  return 1;
}

/* ---- first-fit offset allocator over the arena ------------------------------------------------- */

typedef struct {
  size_t off, len;
} block;

typedef struct {
  block *b;
  int n, cap;
  size_t high;
} allocator;

static size_t round_up(size_t x) { return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static int alloc_block(allocator *a, size_t len, size_t *off) {
  len = round_up(len ? len : 1);
  size_t pos = 0;
  int at = 0;
  for (; at < a->n; at++) {
    if (a->b[at].off >= pos + len) break;
    size_t end = a->b[at].off + a->b[at].len;
    if (end > pos) pos = end;
  }
  if (a->n == a->cap) {
    int cap = a->cap ? a->cap * 2 : 32;
    block *nb = realloc(a->b, sizeof *nb * (size_t)cap);
    if (!nb) return HS_NO_MEMORY;
    a->b = nb;
    a->cap = cap;
  }
  memmove(&a->b[at + 1], &a->b[at], sizeof(block) * (size_t)(a->n - at));
  a->b[at] = (block){pos, len};
  a->n++;
  if (pos + len > a->high) a->high = pos + len;
  *off = pos;
  return 0;
}

static void free_block(allocator *a, size_t off) {
  for (int i = 0; i < a->n; i++)
    if (a->b[i].off == off) {
      memmove(&a->b[i], &a->b[i + 1], sizeof(block) * (size_t)(a->n - i - 1));
      a->n--;
      return;
    }
}

/* ---- building ---------------------------------------------------------------------------------- */

static int keep_folded(hs_plan *p, void *buf) {
  void **nf = realloc(p->folded, sizeof(void *) * (size_t)(p->n_folded + 1));
  if (!nf) return HS_NO_MEMORY;
  p->folded = nf;
  p->folded[p->n_folded++] = buf;
  return 0;
}

/* Fills views of node n's inputs from the plan (data = known contents or NULL). */
static void input_views(const hs_plan *p, const hs_node *n, hs_tensor *vin) {
  for (int i = 0; i < n->n_in; i++) {
    memset(&vin[i], 0, sizeof vin[i]);
    if (n->in[i] < 0) continue;
    const pval *pv = &p->v[n->in[i]];
    vin[i] = pv->t;
    vin[i].data = pv->data || !pv->t.nbytes ? nonnull(pv->data) : NULL; /* NULL: contents unknown */
  }
}

/* What building one plan needs besides the plan itself; freed when building ends. */
typedef struct plan_builder {
  const hs_engine_model *m;
  const hs_graph *g;
  hs_plan *p;
  hs_tensor *vin, *vout; /* node argument views, max_in / max_out long */
  int *last_use;         /* per value: order position of its last reader, -1 when none */
  uint8_t *is_out;       /* per value: a graph output */
  allocator al;
  hs_graph *release_in;  /* hs_plan_build_releasing: the model's graph, whose constants nodes release */
} plan_builder;

static int no_memory(hs_error *err) { return hs_error_set(err, HS_NO_MEMORY, "out of memory while planning"); }

/* Phase 1: the plan's arrays, and its key (the input shapes, and key inputs' contents when known). */
static int plan_alloc(plan_builder *b, const hs_tensor *inputs, int data_known, hs_error *err) {
  const hs_engine_model *m = b->m;
  const hs_graph *g = b->g;
  hs_plan *p = b->p = calloc(1, sizeof *p);
  b->vin = calloc((size_t)m->max_in + 1, sizeof *b->vin);
  b->vout = calloc((size_t)m->max_out + 1, sizeof *b->vout);
  b->last_use = malloc(sizeof(int) * ((size_t)g->n_values + 1));
  b->is_out = calloc((size_t)g->n_values + 1, 1);
  if (!p || !b->vin || !b->vout || !b->last_use || !b->is_out) return no_memory(err);
  p->n_values = g->n_values;
  p->v = calloc((size_t)g->n_values + 1, sizeof *p->v);
  p->skip = calloc((size_t)g->n_nodes + 1, 1);
  p->scratch_off = calloc((size_t)g->n_nodes + 1, sizeof(size_t));
  p->copy_off = malloc(sizeof(size_t) * ((size_t)g->n_outputs + 1));
  p->in_shapes = calloc((size_t)m->n_inputs + 1, sizeof(hs_tensor));
  p->key_data = calloc((size_t)m->n_key_inputs + 1, sizeof(void *));
  p->key_len = malloc(sizeof(size_t) * ((size_t)m->n_key_inputs + 1));
  if (p->key_len) /* terminator for hs_plan_free, set before anything can fail */
    for (int k = 0; k <= m->n_key_inputs; k++) p->key_len[k] = SIZE_MAX;
  if (!p->v || !p->skip || !p->scratch_off || !p->copy_off || !p->in_shapes || !p->key_data || !p->key_len)
    return no_memory(err);

  for (int i = 0; i < m->n_inputs; i++) {
    p->in_shapes[i].ndim = inputs[i].ndim;
    memcpy(p->in_shapes[i].dims, inputs[i].dims, sizeof inputs[i].dims);
  }
  if (data_known)
    for (int k = 0; k < m->n_key_inputs; k++) {
      const hs_tensor *t = &inputs[m->key_inputs[k]];
      p->key_data[k] = malloc(t->nbytes ? t->nbytes : 1);
      if (!p->key_data[k]) return no_memory(err);
      if (t->nbytes) memcpy(p->key_data[k], t->data, t->nbytes);
      p->key_len[k] = t->nbytes;
    }
  return 0;
}

/* Phase 2: where every value starts: constants and graph inputs are known, the rest LOC_NONE. */
static void place_sources(plan_builder *b, const hs_tensor *inputs, int data_known) {
  const hs_graph *g = b->g;
  for (int v = 0; v < g->n_values; v++) {
    const hs_value *val = &g->values[v];
    pval *pv = &b->p->v[v];
    if (val->kind == HS_VAL_CONST) {
      pv->loc = LOC_CONST;
      pv->t.dtype = val->dtype;
      pv->t.ndim = val->ndim;
      memcpy(pv->t.dims, val->dims, sizeof val->dims);
      pv->t.nbytes = val->nbytes;
      pv->data = val->data;
    } else if (val->kind == HS_VAL_INPUT && val->input_index >= 0) {
      const hs_tensor *t = &inputs[val->input_index];
      pv->loc = LOC_INPUT;
      pv->off = (size_t)val->input_index;
      pv->t = *t;
      pv->t.data = NULL;
      pv->data = data_known && is_key_input(b->m, val->input_index) ? t->data : NULL;
    }
  }
}

/* Runs node n now, on inputs known while planning (vin) into buffers the plan keeps. */
static int fold_node(plan_builder *b, int ni, hs_error *err) {
  const hs_node *n = &b->g->nodes[ni];
  const hs_op_def *d = hs_op_get(n->op);
  hs_tensor *vin = b->vin, *vout = b->vout;
  hs_plan *p = b->p;
  size_t sb = d->impl->scratch_bytes ? d->impl->scratch_bytes(n, vin, n->n_in, vout, n->n_out) : 0;
  void *scratch = sb ? malloc(sb) : NULL;
  if (sb && !scratch) return no_memory(err);
  for (int k = 0; k < n->n_out; k++) {
    vout[k].data = NULL;
    if (n->out[k] < 0) continue;
    void *buf = malloc(vout[k].nbytes ? vout[k].nbytes : 1);
    if (!buf || keep_folded(p, buf)) {
      free(buf);
      free(scratch);
      return no_memory(err);
    }
    vout[k].data = buf;
  }
  int rc = d->impl->run(n, vin, n->n_in, vout, n->n_out, scratch, err);
  free(scratch);
  if (rc) return rc;
  for (int k = 0; k < n->n_out; k++) {
    if (n->out[k] < 0) continue;
    p->v[n->out[k]].loc = LOC_FOLDED;
    p->v[n->out[k]].data = vout[k].data;
  }
  p->skip[ni] = 1;
  return 0;
}

/* Phase 3: every output's shape, node by node in order; what is small and computable now (shape
 * arithmetic) is folded into the plan. */
static int infer_shapes(plan_builder *b, int data_known, hs_error *err) {
  const hs_graph *g = b->g;
  hs_plan *p = b->p;
  hs_tensor *vin = b->vin, *vout = b->vout;
  int rc;
  for (int oi = 0; oi < g->n_order; oi++) {
    int ni = g->order[oi];
    const hs_node *n = &g->nodes[ni];
    const hs_op_def *d = hs_op_get(n->op);
    input_views(p, n, vin);
    int all_known = 1;
    for (int i = 0; i < n->n_in; i++) {
      if (n->in[i] < 0) continue;
      int v = n->in[i];
      if (p->v[v].loc == LOC_NONE)
        return hs_error_set(err, HS_INTERNAL, "node '%s' reads '%s' before it is computed", n->name,
                            g->values[v].name);
      if (!vin[i].data) all_known = 0;
      if (hs_op_value_input(d, i) && !vin[i].data) {
        if (!data_known && g->values[v].kind == HS_VAL_INPUT)
          return hs_error_set(err, HS_UNAVAILABLE, "shapes depend on the contents of input '%s'", g->values[v].name);
        /* a subgraph then runs node by node (subgraph.c); a model is refused */
        return hs_op_errf(err, n, b->m->is_sub ? HS_UNAVAILABLE : HS_UNSUPPORTED, "input %d ('%s') decides output "
                          "shapes but is computed at run time (opset %d)", i, g->values[v].name, n->opset);
      }
    }
    for (int k = 0; k < n->n_out; k++) memset(&vout[k], 0, sizeof vout[k]);
    if ((rc = d->impl->infer(n, vin, n->n_in, vout, n->n_out, err))) return rc;
    size_t total = 0;
    for (int k = 0; k < n->n_out; k++) {
      if (n->out[k] < 0) continue;
      if (vout[k].dtype == HS_DT_UNDEFINED) return hs_op_errf(err, n, HS_INTERNAL, "output %d has no type", k);
      pval *pv = &p->v[n->out[k]];
      pv->t = vout[k];
      pv->t.data = NULL;
      pv->loc = LOC_ARENA;
      total += vout[k].nbytes;
      if (total > ARENA_LIMIT) return hs_op_errf(err, n, HS_LIMIT, "outputs need more than %zu bytes", ARENA_LIMIT);
    }
    if ((all_known || (d->flags & HS_OP_SHAPE_ONLY)) && total <= FOLD_MAX_BYTES && (rc = fold_node(b, ni, err)))
      return rc;
  }
  return 0;
}

/* Phase 4: liveness: the last reader of every value among the nodes that run. */
static void find_last_uses(plan_builder *b) {
  const hs_graph *g = b->g;
  for (int v = 0; v < g->n_values; v++) b->last_use[v] = -1;
  for (int k = 0; k < g->n_outputs; k++) b->is_out[g->outputs[k]] = 1;
  for (int oi = 0; oi < g->n_order; oi++) {
    const hs_node *n = &g->nodes[g->order[oi]];
    if (b->p->skip[g->order[oi]]) continue;
    for (int i = 0; i < n->n_in; i++)
      if (n->in[i] >= 0) b->last_use[n->in[i]] = oi;
  }
}

/* An alias node (Reshape...) at order position oi takes over its input's bytes when it may: then it
 * never runs. Returns 1 when it did. */
static int alias_node(plan_builder *b, int ni, int oi) {
  const hs_node *n = &b->g->nodes[ni];
  hs_plan *p = b->p;
  int live_outs = 0;
  for (int k = 0; k < n->n_out; k++) live_outs += n->out[k] >= 0;
  if (!(hs_op_get(n->op)->flags & HS_OP_ALIAS) || live_outs != 1 || n->out[0] < 0 || n->in[0] < 0) return 0;
  /* the output takes over the input's bytes (its buffer, when this is the input's last reader; a
   * graph input or constant, always) */
  int v = n->in[0];
  pval *src = &p->v[v], *dst = &p->v[n->out[0]];
  int transfer = src->loc == LOC_ARENA && b->last_use[v] == oi && !b->is_out[v];
  for (int i = 1; i < n->n_in; i++) transfer &= n->in[i] != v;
  if (!transfer && src->loc != LOC_INPUT && src->loc != LOC_CONST && src->loc != LOC_FOLDED) return 0;
  dst->loc = src->loc;
  dst->off = src->off;
  dst->data = src->data;
  p->skip[ni] = 1;
  for (int i = 1; i < n->n_in; i++) {
    int u = n->in[i];
    if (u >= 0 && p->v[u].loc == LOC_ARENA && !b->is_out[u] && b->last_use[u] == oi) free_block(&b->al, p->v[u].off);
  }
  if (dst->loc == LOC_ARENA && !b->is_out[n->out[0]] && b->last_use[n->out[0]] < 0) free_block(&b->al, dst->off);
  return 1;
}

/* Output 0 of the node at order position oi takes over the buffer of the input its op names
 * (hs_op_impl.inplace_input: a Conv's fused residual, which its sum post-op then accumulates into
 * without a copy) when nothing else can see the change: that input lives in the arena (not a graph
 * input, constant or folded value, nor an alias of one), is no graph output, this node is its last
 * reader and reads it in no other slot, and its dtype and size are the output's. Ownership of an
 * arena block is unique (alias_node only transfers a block at its source's last read), so no other
 * value shares it. Returns the value whose block output 0 took, or -1. HS_PLAN_INPLACE=0 turns this
 * off (tests compare both plans bit for bit). */
static int inplace_output(plan_builder *b, int ni, int oi) {
  const hs_node *n = &b->g->nodes[ni];
  const hs_op_impl *impl = hs_op_get(n->op)->impl;
  hs_plan *p = b->p;
  const char *env = getenv("HS_PLAN_INPLACE");
  if (!impl->inplace_input || n->n_out < 1 || n->out[0] < 0 || (env && env[0] == '0')) return -1;
  input_views(p, n, b->vin);
  for (int k = 0; k < n->n_out; k++) {
    memset(&b->vout[k], 0, sizeof b->vout[k]);
    if (n->out[k] >= 0) b->vout[k] = p->v[n->out[k]].t;
  }
  int i = impl->inplace_input(n, b->vin, n->n_in, b->vout, n->n_out);
  if (i < 0 || i >= n->n_in || n->in[i] < 0) return -1;
  int v = n->in[i];
  pval *src = &p->v[v], *dst = &p->v[n->out[0]];
  if (src->loc != LOC_ARENA || b->is_out[v] || b->last_use[v] != oi || src->t.dtype != dst->t.dtype ||
      src->t.nbytes != dst->t.nbytes)
    return -1;
  for (int j = 0; j < n->n_in; j++)
    if (j != i && n->in[j] == v) return -1;
  dst->off = src->off;
  p->n_inplace++;
  return v;
}

/* Phase 5: arena offsets for outputs and scratch of the nodes that run, in order, reusing a block
 * once its value's last reader has run. */
static int assign_offsets(plan_builder *b, hs_error *err) {
  const hs_graph *g = b->g;
  hs_plan *p = b->p;
  allocator *al = &b->al;
  for (int oi = 0; oi < g->n_order; oi++) {
    int ni = g->order[oi];
    const hs_node *n = &g->nodes[ni];
    if (p->skip[ni] || alias_node(b, ni, oi)) continue;
    const hs_op_def *d = hs_op_get(n->op);
    int taken = inplace_output(b, ni, oi); /* a value whose block output 0 now owns, or -1 */
    for (int k = 0; k < n->n_out; k++) {
      if (n->out[k] < 0 || (k == 0 && taken >= 0)) continue;
      pval *pv = &p->v[n->out[k]];
      if (alloc_block(al, pv->t.nbytes, &pv->off)) return no_memory(err);
    }
    if (d->impl->scratch_bytes) {
      input_views(p, n, b->vin);
      for (int k = 0; k < n->n_out; k++) {
        memset(&b->vout[k], 0, sizeof b->vout[k]);
        if (n->out[k] >= 0) b->vout[k] = p->v[n->out[k]].t;
      }
      size_t sb = d->impl->scratch_bytes(n, b->vin, n->n_in, b->vout, n->n_out);
      hs_engine_pace_point(); /* a kernel (and its reordered weights) may have been built */
      if (sb) {
        if (alloc_block(al, sb, &p->scratch_off[ni])) return no_memory(err);
        free_block(al, p->scratch_off[ni]);
      }
      /* scratch_bytes built the node's kernel for these shapes: its constants may go now. The
       * value's plan entry keeps a stale pointer, but a trial plan never runs and nothing after
       * this node reads the value (release_consts only frees what this node alone reads). */
      if (b->release_in && n->release_consts) {
        hs_node *mn = &b->release_in->nodes[ni];
        mn->release_consts(mn, b->release_in);
      }
    }
    for (int i = 0; i < n->n_in; i++) {
      int v = n->in[i];
      if (v < 0 || v == taken || p->v[v].loc != LOC_ARENA || b->is_out[v] || b->last_use[v] != oi) continue;
      int dup = 0; /* the same value twice among the inputs: free once */
      for (int j = 0; j < i; j++) dup |= n->in[j] == v;
      if (!dup) free_block(al, p->v[v].off);
    }
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      if (v >= 0 && !b->is_out[v] && b->last_use[v] < 0) free_block(al, p->v[v].off);
    }
  }
  return 0;
}

/* Phase 6: a slot to copy each graph output into when it does not already live in the arena; the
 * arena's size. */
static int place_outputs(plan_builder *b, hs_error *err) {
  const hs_graph *g = b->g;
  hs_plan *p = b->p;
  for (int k = 0; k < g->n_outputs; k++) {
    pval *pv = &p->v[g->outputs[k]];
    p->copy_off[k] = SIZE_MAX;
    if (pv->loc == LOC_NONE)
      return hs_error_set(err, HS_PARSE, "graph output '%s' is never computed", g->values[g->outputs[k]].name);
    if (pv->loc != LOC_ARENA && alloc_block(&b->al, pv->t.nbytes, &p->copy_off[k])) return no_memory(err);
  }
  p->arena = b->al.high;
  if (p->arena > ARENA_LIMIT)
    return hs_error_set(err, HS_LIMIT, "the plan needs %zu bytes of scratch (limit %zu)", p->arena, ARENA_LIMIT);
  return 0;
}

static int build(plan_builder b, const hs_tensor *inputs, int data_known, hs_plan **out, hs_error *err);

int hs_plan_build(const hs_engine_model *m, const hs_tensor *inputs, int data_known, hs_plan **out,
                  hs_error *err) {
  return build((plan_builder){.m = m, .g = &m->g}, inputs, data_known, out, err);
}

int hs_plan_build_releasing(hs_engine_model *m, const hs_tensor *inputs, hs_plan **out, hs_error *err) {
  return build((plan_builder){.m = m, .g = &m->g, .release_in = &m->g}, inputs, 0, out, err);
}

static int build(plan_builder b, const hs_tensor *inputs, int data_known, hs_plan **out, hs_error *err) {
  int rc = plan_alloc(&b, inputs, data_known, err);
  if (rc == 0) {
    place_sources(&b, inputs, data_known);
    rc = infer_shapes(&b, data_known, err);
  }
  if (rc == 0) {
    find_last_uses(&b);
    rc = assign_offsets(&b, err);
  }
  if (rc == 0) rc = place_outputs(&b, err);
  free(b.al.b);
  free(b.vin);
  free(b.vout);
  free(b.last_use);
  free(b.is_out);
  if (rc) {
    hs_plan_free(b.p);
    return rc;
  }
  *out = b.p;
  return 0;
}

void hs_plan_output_shape(const hs_plan *p, const hs_engine_model *m, int k, hs_tensor *t) {
  *t = p->v[m->g.outputs[k]].t;
  t->data = NULL;
}

/* ---- executing --------------------------------------------------------------------------------- */

static void *value_data(const pval *pv, const hs_tensor *inputs, void *arena) {
  switch (pv->loc) {
    case LOC_INPUT: return nonnull(inputs[pv->off].data);
    case LOC_CONST:
    case LOC_FOLDED: return nonnull(pv->data);
    case LOC_ARENA: return (char *)nonnull(arena) + pv->off;
    default: return NULL;
  }
}

int hs_plan_execute(const hs_plan *p, const hs_engine_model *m, const hs_tensor *inputs, void *arena,
                    hs_tensor *vin, hs_tensor *vout, hs_tensor *outputs, hs_error *err) {
  const hs_graph *g = &m->g;
  for (int oi = 0; oi < g->n_order; oi++) {
    int ni = g->order[oi];
    if (p->skip[ni]) continue;
    hs_engine_pace_point(); /* a loader's warm-up run may be paced; a request's never is */
    const hs_node *n = &g->nodes[ni];
    for (int i = 0; i < n->n_in; i++) {
      if (n->in[i] < 0) {
        memset(&vin[i], 0, sizeof vin[i]);
        continue;
      }
      const pval *pv = &p->v[n->in[i]];
      vin[i] = pv->t;
      vin[i].data = value_data(pv, inputs, arena);
    }
    for (int k = 0; k < n->n_out; k++) {
      if (n->out[k] < 0) {
        memset(&vout[k], 0, sizeof vout[k]);
        continue;
      }
      const pval *pv = &p->v[n->out[k]];
      vout[k] = pv->t;
      vout[k].data = (char *)nonnull(arena) + pv->off;
    }
    int rc = hs_op_get(n->op)->impl->run(n, vin, n->n_in, vout, n->n_out, (char *)nonnull(arena) + p->scratch_off[ni], err);
    if (rc) return rc;
  }
  for (int k = 0; k < g->n_outputs; k++) {
    const pval *pv = &p->v[g->outputs[k]];
    outputs[k] = pv->t;
    if (p->copy_off[k] == SIZE_MAX) {
      outputs[k].data = (char *)nonnull(arena) + pv->off;
    } else {
      outputs[k].data = (char *)nonnull(arena) + p->copy_off[k];
      if (pv->t.nbytes) memcpy(outputs[k].data, value_data(pv, inputs, arena), pv->t.nbytes);
    }
  }
  return 0;
}

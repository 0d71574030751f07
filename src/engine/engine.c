/* engine.c - compiling a decoded graph into an immutable model, and sessions that run it
 * (see engine.h for the design: immutable model, per-session arena and plan cache). */
#include "engine/engine.h"
#include "engine/arena.h"
#include "engine/passes.h"
#include "engine/plan.h"
#include "engine/subgraph.h"

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "base/log.h"
#include "kernels/kernels.h"
#include "kernels/kshare.h"
#include "onnx/onnx.h"
#include "onnx/pb.h"
#include "ops/ops.h"

void hs_engine_free(hs_engine_model *m) {
  if (!m) return;
  if (!m->graph_borrowed) hs_graph_free(&m->g);
  for (int i = 0; i < m->n_subs; i++) hs_engine_free(m->subs[i]);
  free(m->subs);
  free(m->inputs);
  free(m->outputs);
  free(m->key_inputs);
  free(m);
}

static void prefer_heap_once(void) { mallopt(M_MMAP_THRESHOLD, 32 << 20); }

void hs_engine_prefer_heap(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, prefer_heap_once);
}

static void fill_desc(hs_io_desc *d, const hs_value *v) {
  memset(d, 0, sizeof *d);
  size_t len = strlen(v->name);
  if (len >= sizeof d->name) len = sizeof d->name - 1;
  memcpy(d->name, v->name, len);
  d->dtype = v->dtype;
  d->ndim = v->ndim < 0 ? 0 : v->ndim;
  for (int i = 0; i < d->ndim; i++) d->dims[i] = v->dims[i] < 0 ? -1 : v->dims[i];
}

/* Shape-only input tensors with every symbolic dim set to sym: the load-time shapes (sym = 1, the
 * shapes warm-up uses too) and the second trial shape (sym = 2). */
static void load_time_inputs(const hs_engine_model *m, int64_t sym, hs_tensor *in) {
  for (int i = 0; i < m->n_inputs; i++) {
    memset(&in[i], 0, sizeof in[i]);
    in[i].dtype = m->inputs[i].dtype;
    in[i].ndim = m->inputs[i].ndim;
    for (int k = 0; k < in[i].ndim; k++) in[i].dims[k] = m->inputs[i].dims[k] < 0 ? sym : m->inputs[i].dims[k];
    int64_t c = hs_shape_numel(in[i].dims, in[i].ndim);
    in[i].nbytes = c < 0 ? 0 : (size_t)c * hs_dtype_size(in[i].dtype);
  }
}

static bool has_symbolic_dims(const hs_engine_model *m) {
  for (int i = 0; i < m->n_inputs; i++)
    for (int k = 0; k < m->inputs[i].ndim; k++)
      if (m->inputs[i].dims[k] < 0) return true;
  return false;
}

/* Output descriptors from two trial plans (symbolic dims = 1 and = 2): dims that differ are
 * dynamic. A model without symbolic dims needs one. Returns HS_UNAVAILABLE when shapes depend on
 * input contents (then the declared ValueInfo is used). */
static int trial_plans(hs_engine_model *m, hs_error *err) {
  hs_tensor *in = calloc((size_t)m->n_inputs + 1, sizeof *in);
  if (!in) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  hs_plan *p[2] = {NULL, NULL};
  int rc = 0, trials = has_symbolic_dims(m) ? 2 : 1;
  for (int t = 0; t < trials && rc == 0; t++) {
    load_time_inputs(m, t + 1, in);
    rc = hs_plan_build_releasing(m, in, &p[t], err); /* weights leave the graph as kernels take them */
  }
  /* The first trial's arena is what a session plans at creation (session_prime), so it is known
   * even when the second trial failed: memory admission and callers that bound a run read it. */
  if (p[0]) m->planned_bytes = hs_plan_arena_bytes(p[0]);
  if (rc == 0) {
    for (int k = 0; k < m->n_outputs; k++) {
      hs_tensor a, b;
      hs_plan_output_shape(p[0], m, k, &a);
      hs_plan_output_shape(p[trials - 1], m, k, &b);
      hs_io_desc *d = &m->outputs[k];
      d->dtype = a.dtype;
      d->ndim = a.ndim;
      for (int i = 0; i < a.ndim; i++) d->dims[i] = (b.ndim == a.ndim && a.dims[i] == b.dims[i]) ? a.dims[i] : -1;
    }
  }
  hs_plan_free(p[0]);
  hs_plan_free(p[1]);
  free(in);
  return rc;
}

/* ---- weights shared at decode time ----------------------------------------------------------- */

/* hs_onnx_share's find: an initializer that is byte for byte a registered Conv kernel's weights
 * (kernels/kshare.h) is not copied; the value refers to that kernel. */
static int share_find(void *user, const void *bytes, size_t nbytes, void **ref) {
  (void)user;
  hs_kernel *k;
  if (hs_kshare_find_weights(bytes, nbytes, &k) != 1) return 0;
  *ref = k;
  return 1;
}

static void share_release(void *ref) { hs_kernel_destroy(ref); }

/* The streaming form (kernels/kshare.h, hs_kshare_match_*). */
static void *share_begin(void *user, size_t nbytes) {
  (void)user;
  hs_kshare_match *m;
  return hs_kshare_match_begin(nbytes, &m) == 1 ? m : NULL;
}

static int share_feed(void *m, const void *piece, size_t n) { return hs_kshare_match_feed(m, piece, n); }

static int share_prefix(void *m, void *dst, size_t n) { return hs_kshare_match_prefix(m, dst, n); }

static int share_end(void *m, void **ref) {
  hs_kernel *k;
  int held = hs_kshare_match_end(m, ref ? &k : NULL);
  if (held) *ref = k;
  return held;
}

static const hs_onnx_share k_share = {.find = share_find,
                                      .release = share_release,
                                      .begin = share_begin,
                                      .feed = share_feed,
                                      .prefix = share_prefix,
                                      .end = share_end};

/* Whether value v, left by the decoder as a reference to a shared kernel, may stay so: its one
 * reader is a Conv taking it as weights, whose input is not a constant (constant folding would need
 * the bytes) and whose output no BatchNormalization reads (folding it rewrites the weights). A graph
 * with subgraphs, or a subgraph, gives every value its bytes back: a subgraph may read an outer
 * value by name. */
static bool shared_ref_stays(const hs_graph *g, int v, bool has_subgraphs) {
  const hs_value *val = &g->values[v];
  if (has_subgraphs || val->n_uses != 1) return false;
  for (int k = 0; k < g->n_outputs; k++)
    if (g->outputs[k] == v) return false;
  const hs_node *conv = NULL;
  for (int i = 0; i < g->n_nodes && !conv; i++) {
    const hs_node *n = &g->nodes[i];
    for (int k = 0; !n->dead && k < n->n_in; k++)
      if (n->in[k] == v) {
        if (n->op != HS_OP_Conv || k != 1 || n->n_out < 1) return false;
        conv = n;
      }
  }
  if (!conv || conv->in[0] < 0 || g->values[conv->in[0]].kind == HS_VAL_CONST) return false;
  for (int i = 0; i < g->n_nodes; i++) {
    const hs_node *n = &g->nodes[i];
    if (n->dead || n->op != HS_OP_BatchNormalization) continue;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == conv->out[0]) return false;
  }
  return true;
}

/* Whether m is a subgraph or has nodes with subgraph attributes (If, Loop, Scan). */
static bool has_subgraphs(const hs_engine_model *m) {
  const hs_graph *g = &m->g;
  bool any = m->is_sub;
  for (int i = 0; i < g->n_nodes && !any; i++)
    for (int a = 0; a < g->nodes[i].n_attrs; a++) any |= g->nodes[i].attrs[a].type == HS_ATTR_GRAPH;
  return any;
}

/* Gives back its bytes to every value the decoder shared where the sharing may not stay
 * (shared_ref_stays): the shared kernel writes its weights back in ONNX's layout (exact).
 * had_subgraphs: has_subgraphs() before the If folding, which may inline a branch. */
static int resolve_shared_refs(hs_engine_model *m, bool had_subgraphs, hs_error *err) {
  hs_graph *g = &m->g;
  for (int v = 0; v < g->n_values; v++) {
    hs_value *val = &g->values[v];
    if (!val->ref || shared_ref_stays(g, v, had_subgraphs)) continue;
    void *data = malloc(val->nbytes);
    if (!data) return hs_error_set(err, HS_NO_MEMORY, "out of memory for '%s'", val->name);
    int rc = hs_kernel_conv_weights(val->ref, data, val->nbytes, err);
    if (rc) {
      free(data);
      return hs_error_prefix(err, "initializer '%s'", val->name);
    }
    val->ref_free(val->ref);
    val->ref = NULL;
    val->data = data;
  }
  return 0;
}

int hs_engine_compile_graph(hs_engine_model *m, const hs_backend_options *opts, hs_error *err) {
  int rc;
  hs_graph *g = &m->g;
  m->threads = opts && opts->threads > 0 ? opts->threads : 0; /* 0: the kernels' default */
  m->max_run_bytes = opts && opts->max_run_bytes ? opts->max_run_bytes : SIZE_MAX;
  /* kernels keep the thread count they were created with (kernels.h): the ones the passes and the
   * trial plans create below must have the model's, not whatever this thread was left with */
  hs_kernels_set_threads(m->threads);

  int folded;
  bool had_subgraphs = has_subgraphs(m);
  if ((rc = hs_fold_const_ifs(g, &folded, err)) || (rc = hs_subgraphs_compile(m, opts, err))) return rc;
  for (int i = 0; i < g->n_nodes; i++)
    if (!g->nodes[i].dead && (rc = hs_op_bind(&g->nodes[i], g, err))) return rc;
  if ((rc = resolve_shared_refs(m, had_subgraphs, err))) return rc;
  for (int k = 0; k < g->n_outputs; k++) {
    const hs_value *v = &g->values[g->outputs[k]];
    if (v->kind == HS_VAL_INTERMEDIATE && v->producer < 0) {
      return hs_error_set(err, HS_PARSE, "graph output '%s' is not produced by any node", v->name);
    }
  }
  /* Input and output names must fit hs_io_desc and the request decoders (127 bytes): a longer name
   * would be truncated and the model could never be called (class 15 of issue 16). A subgraph's
   * inputs and outputs are never named by a request. */
  for (int i = 0; !m->is_sub && i < g->n_inputs + g->n_outputs; i++) {
    bool is_in = i < g->n_inputs;
    const hs_value *v = &g->values[is_in ? g->inputs[i] : g->outputs[i - g->n_inputs]];
    if (strlen(v->name) >= sizeof m->inputs->name) {
      return hs_error_set(err, HS_INVALID_ARGUMENT, "%s name '%.40s...' is %zu bytes; requests name at most %zu",
                          is_in ? "input" : "output", v->name, strlen(v->name), sizeof m->inputs->name - 1);
    }
  }
  if ((rc = hs_pass_pipeline(g, "default", err))) return rc;
  for (int oi = 0; oi < g->n_order; oi++) {
    hs_node *n = &g->nodes[g->order[oi]];
    const hs_op_def *d = hs_op_get(n->op);
    if (d->flags & HS_OP_CONTROL) m->dynamic = 1;
    if (d->impl->prepare && (rc = d->impl->prepare(n, g, err))) return rc;
    hs_engine_pace_point();
  }

  /* io, key inputs, widest node */
  m->n_inputs = g->n_inputs;
  m->n_outputs = g->n_outputs;
  m->inputs = calloc((size_t)g->n_inputs + 1, sizeof *m->inputs);
  m->outputs = calloc((size_t)g->n_outputs + 1, sizeof *m->outputs);
  m->key_inputs = calloc((size_t)g->n_inputs + 1, sizeof(int));
  if (!m->inputs || !m->outputs || !m->key_inputs) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  for (int i = 0; i < g->n_inputs; i++) fill_desc(&m->inputs[i], &g->values[g->inputs[i]]);
  for (int k = 0; k < g->n_outputs; k++) fill_desc(&m->outputs[k], &g->values[g->outputs[k]]);
  for (int oi = 0; oi < g->n_order; oi++) {
    const hs_node *n = &g->nodes[g->order[oi]];
    const hs_op_def *d = hs_op_get(n->op);
    if (n->n_in > m->max_in) m->max_in = n->n_in;
    if (n->n_out > m->max_out) m->max_out = n->n_out;
    for (int i = 0; i < n->n_in; i++) {
      if (!hs_op_value_input(d, i) || n->in[i] < 0) continue;
      const hs_value *v = &g->values[n->in[i]];
      if (v->kind != HS_VAL_INPUT) continue;
      int dup = 0;
      for (int k = 0; k < m->n_key_inputs; k++) dup |= m->key_inputs[k] == v->input_index;
      if (!dup) m->key_inputs[m->n_key_inputs++] = v->input_index;
    }
  }
  for (int v = 0; v < g->n_values; v++)
    if (g->values[v].kind == HS_VAL_CONST) m->const_bytes += g->values[v].nbytes;
  for (int i = 0; i < m->n_subs; i++) m->const_bytes += m->subs[i]->const_bytes;
  /* a subgraph's input shapes are known only per run; a dynamic graph's outputs only once it ran (its
   * declared output types stand) */
  if (m->is_sub || m->dynamic) return 0;

  /* a trial plan validates every shape now, so a bad model fails at load rather than on a request */
  hs_error terr;
  hs_error_clear(&terr);
  rc = trial_plans(m, &terr);
  bool symbolic = has_symbolic_dims(m);
  if (rc == HS_UNAVAILABLE) {
    rc = 0; /* shapes depend on input contents: checked per run */
  } else if (rc && symbolic && rc != HS_UNSUPPORTED && rc != HS_NO_MEMORY) {
    /* sizes 1 and 2 for the symbolic dims were only a guess (a model may need, say, a multiple
     * of 8): the real shapes are checked when a request plans */
    HS_LOGW("model compiled; trial shapes with symbolic dims = 1, 2 failed: %s", terr.message);
    rc = 0;
  } else if (rc) {
    *err = terr;
    return rc;
  }
  /* the trial plans built the kernels for the load-time shapes and let each node release the
   * constants its kernels hold in their own layout (Conv weights) as they went, so the model keeps
   * one copy of each; this catches what a failed or skipped trial plan left */
  for (int oi = 0; oi < g->n_order; oi++) {
    hs_node *n = &g->nodes[g->order[oi]];
    if (n->release_consts) n->release_consts(n, g);
  }
  return 0;
}

int hs_engine_compile(hs_graph *g, const hs_backend_options *opts, hs_engine_model **out, hs_error *err) {
  hs_engine_model *m = calloc(1, sizeof *m);
  if (!m) {
    hs_graph_free(g);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  m->g = *g; /* the model owns the graph from here on */
  memset(g, 0, sizeof *g);
  int rc = hs_engine_compile_graph(m, opts, err);
  if (rc) {
    hs_error_prefix(err, "compiling the model");
    hs_engine_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int hs_engine_load(const char *path, const hs_backend_options *opts, hs_engine_model **out, hs_error *err) {
  hs_graph g;
  hs_graph_init(&g);
  int rc = hs_onnx_load_file(path, opts ? opts->max_model_bytes : 0, &g, err);
  if (rc) {
    hs_graph_free(&g);
    return rc;
  }
  return hs_engine_compile(&g, opts, out, err);
}

int hs_engine_load_buffer(const void *model, size_t len, const hs_backend_file *files, size_t n_files,
                          const hs_backend_options *opts, hs_engine_model **out, hs_error *err) {
  hs_pb_mem m;
  hs_backend_stream in;
  hs_pb_mem_stream(&m, model, len, 0, &in);
  return hs_engine_load_stream(&in, files, n_files, opts, out, err);
}

/* ---- load pacing (hs_engine_set_pace) ---- */

static _Thread_local void (*t_pace)(void *user, uint64_t streamed);
static _Thread_local void *t_pace_user;
static _Thread_local uint64_t t_pace_streamed;

void hs_engine_set_pace(void (*fn)(void *user, uint64_t streamed), void *user) {
  t_pace = fn;
  t_pace_user = user;
  t_pace_streamed = 0;
}

void hs_engine_pace_point(void) {
  if (t_pace) t_pace(t_pace_user, t_pace_streamed);
}

/* The model stream as the decoder sees it: a pace point before each piece (hs_engine_set_pace). */
static int paced_next(void *user, const void **data, size_t *len, hs_error *err) {
  const hs_backend_stream *in = user;
  hs_engine_pace_point();
  int rc = in->next(in->user, data, len, err);
  if (rc == 0) t_pace_streamed += *len;
  return rc;
}

/* read_into of the paced stream (a tensor's payload read straight into it): in pieces of at most
 * PACE_PIECE bytes, a pace point before each, so a large tensor is paced as the ring's pieces are
 * (one pace point for a whole 16 MiB tensor let a load beside requests run unpaced:
 * system.loader_pace). Fewer bytes than n: the stream ended. */
#define PACE_PIECE ((size_t)1 << 20)
static long long paced_read_into(void *user, void *dst, size_t n, hs_error *err) {
  const hs_backend_stream *in = user;
  size_t done = 0;
  while (done < n) {
    size_t want = n - done < PACE_PIECE ? n - done : PACE_PIECE;
    hs_engine_pace_point();
    long long got = in->read_into(in->user, (char *)dst + done, want, err);
    if (got < 0) return got;
    t_pace_streamed += (uint64_t)got;
    done += (size_t)got;
    if ((size_t)got < want) break;
  }
  return (long long)done;
}

static void paced_settle(void *user) {
  const hs_backend_stream *in = user;
  in->settle(in->user);
}

int hs_engine_load_stream(const hs_backend_stream *model, const hs_backend_file *files, size_t n_files,
                          const hs_backend_options *opts, hs_engine_model **out, hs_error *err) {
  if (opts && opts->max_model_bytes && model->size > opts->max_model_bytes)
    return hs_error_set(err, HS_LIMIT, "model is %llu bytes, over the limit of %zu", (unsigned long long)model->size,
                        opts->max_model_bytes);
  hs_graph g;
  hs_graph_init(&g);
  /* files == NULL would mean "external data from disk": an empty list must still mean "none" */
  static const hs_backend_file k_none;
  hs_onnx_source src = {.files = files ? files : &k_none, .n_files = files ? n_files : 0};
  if (opts && opts->open_file) { /* external data streamed by the caller (ABI 3.1) */
    src.open = opts->open_file;
    src.open_user = opts->open_file_user;
  }
  /* Conv weights another loaded model's kernels hold are not copied (kernels/kshare.h) */
  if (hs_kshare_enabled()) src.share = &k_share;
  hs_backend_stream paced = *model;
  if (t_pace) { /* only a paced thread pays the indirection */
    paced.next = paced_next;
    paced.user = (void *)model;
    paced.read_into = model->read_into && model->settle ? paced_read_into : NULL;
    paced.settle = paced.read_into ? paced_settle : NULL;
  }
  int rc = hs_onnx_decode_model_stream(&paced, &src, &g, err);
  hs_kshare_release_scratch(); /* the decode-time lookups' read-back buffer */
  /* the decoded graph owns copies of everything it needs: the caller may free the bytes now */
  if (opts && opts->bytes_done) opts->bytes_done(opts->bytes_done_user);
  if (rc) {
    hs_graph_free(&g);
    return rc;
  }
  return hs_engine_compile(&g, opts, out, err);
}

/* ---- sessions ---------------------------------------------------------------------------------- */

/* An arena at most this big is kept between runs; a bigger one, grown for an outlier request, is
 * handed back as soon as a run needs less than half of it (issue 16, class 3). */
#define ARENA_KEEP_BYTES ((size_t)64 << 20)
#define ARENA_HUGE_MIN ((size_t)4 << 20)   /* arenas from this size get huge pages offered */
#define ARENA_HUGE_ALIGN ((size_t)2 << 20) /* x86-64's huge page */

/* The session's plan for these inputs (from its cache, or built and cached), with an arena big
 * enough for it. A plan whose arena is over the model's max_run_bytes is HS_LIMIT, refused before
 * any of it is allocated or cached. */
static int session_plan(hs_engine_session *s, const hs_tensor *inputs, int data_known, hs_plan **out,
                        hs_error *err) {
  const hs_engine_model *m = s->m;
  /* before planning: a new shape's kernels are created by the plan (kernels.h, Threads) */
  hs_kernels_set_threads(m->threads);
  /* most recently used first: a hit moves to the front, a new plan evicts the least recently used */
  hs_plan *plan = NULL;
  int at = 0;
  while (at < HS_PLAN_CACHE && s->plans[at] && !hs_plan_matches(s->plans[at], m, inputs)) at++;
  if (at < HS_PLAN_CACHE && s->plans[at]) {
    plan = s->plans[at];
  } else { /* new shapes: plan once, then every run with these shapes reuses it */
    int rc = hs_plan_build(m, inputs, data_known, &plan, err);
    if (rc) return rc;
    if (hs_plan_arena_bytes(plan) > m->max_run_bytes) {
      rc = hs_error_set(err, HS_LIMIT, "these input shapes need %zu bytes of scratch memory, over the "
                        "per-request budget of %zu bytes (--max-request-memory)", hs_plan_arena_bytes(plan),
                        m->max_run_bytes);
      hs_plan_free(plan);
      return rc;
    }
    at = HS_PLAN_CACHE - 1;
    hs_plan_free(s->plans[at]);
  }
  memmove(&s->plans[1], &s->plans[0], (size_t)at * sizeof s->plans[0]);
  s->plans[0] = plan;
  *out = plan;
  return 0;
}

/* Makes s's arena big enough for need bytes (and hands back one grown for an outlier). */
static int arena_fit(hs_engine_session *s, size_t need, hs_error *err) {
  if (s->arena_bytes > ARENA_KEEP_BYTES && need < s->arena_bytes / 2) { /* shrink after an outlier */
    free(s->arena);
    s->arena = NULL;
    s->arena_bytes = 0;
  }
  if (need > s->arena_bytes) {
    /* A large arena is aligned to 2 MiB and offered transparent huge pages (THP in "madvise" mode,
     * Debian's default, gives them only to regions that ask): fewer TLB misses over the activations. */
    size_t align = need >= ARENA_HUGE_MIN ? ARENA_HUGE_ALIGN : 64;
    size_t sz = (need + align - 1) & ~(align - 1);
    void *a = aligned_alloc(align, sz);
#ifdef MADV_HUGEPAGE
    if (a && align == ARENA_HUGE_ALIGN) (void)madvise(a, sz, MADV_HUGEPAGE); /* advice only */
#endif
    if (!a) return hs_error_set(err, HS_NO_MEMORY, "out of memory for a %zu-byte arena", sz);
    free(s->arena);
    s->arena = a;
    s->arena_bytes = sz;
  }
  return 0;
}

/* Makes s hold an arena big enough for plan: its own, or (with a pool) the one it holds since its
 * last run, else one taken from the pool (engine/arena.c), else a new one. */
static int session_arena(hs_engine_session *s, const hs_plan *plan, hs_error *err) {
  size_t need = hs_plan_arena_bytes(plan);
  if (!s->pool) return arena_fit(s, need, err);
  if (!s->held) {
    s->held = hs__arena_pool_take(s->pool, need);
    if (!s->held && !(s->held = hs__arena_new(s->pool))) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
    s->arena = s->held->p;
    s->arena_bytes = s->held->bytes;
  }
  size_t before = s->arena_bytes;
  int rc = arena_fit(s, need, err);
  s->held->p = s->arena;
  s->held->bytes = s->arena_bytes;
  if (s->arena_bytes != before) hs__arena_pool_resized(s->pool, before, s->arena_bytes);
  return rc;
}

void hs_engine_session_idle(hs_engine_session *s) {
  if (!s || !s->held) return;
  hs__arena_pool_put(s->pool, s->held);
  s->held = NULL;
  s->arena = NULL;
  s->arena_bytes = 0;
}

/* ---- the process's budget for the arenas of runs in flight ------------------------------------- */

static pthread_mutex_t g_budget_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_budget_cv = PTHREAD_COND_INITIALIZER;
static size_t g_budget;       /* 0: none */
static unsigned g_budget_wait_ms;
static size_t g_in_flight;    /* plan-arena bytes of the runs between reserve and release */
static _Thread_local bool t_exempt;

void hs_engine_memory_budget_exempt(int on) { t_exempt = on != 0; }

void hs_engine_set_memory_budget(size_t bytes, unsigned wait_ms) {
  pthread_mutex_lock(&g_budget_mu);
  g_budget = bytes;
  g_budget_wait_ms = wait_ms;
  pthread_cond_broadcast(&g_budget_cv);
  pthread_mutex_unlock(&g_budget_mu);
}

size_t hs_engine_memory_in_flight(void) {
  pthread_mutex_lock(&g_budget_mu);
  size_t n = g_in_flight;
  pthread_mutex_unlock(&g_budget_mu);
  return n;
}

size_t hs_engine_memory_budget(void) {
  pthread_mutex_lock(&g_budget_mu);
  size_t n = g_budget;
  pthread_mutex_unlock(&g_budget_mu);
  return n;
}

/* Counts need bytes in flight, waiting (up to the budget's wait) while they would not fit. */
static int budget_reserve(size_t need, hs_error *err) {
  pthread_mutex_lock(&g_budget_mu);
  int rc = 0;
  if (g_budget && need > g_budget) {
    rc = hs_error_set(err, HS_LIMIT, "these input shapes need %zu bytes of scratch memory, over the server's "
                      "budget of %zu bytes for all requests in flight (--max-total-request-memory)", need, g_budget);
  } else if (g_budget && g_in_flight + need > g_budget) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* the condition variable's default clock */
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)g_budget_wait_ms * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    while (g_budget && g_in_flight + need > g_budget &&
           pthread_cond_timedwait(&g_budget_cv, &g_budget_mu, &ts) == 0) {
    }
    if (g_budget && g_in_flight + need > g_budget)
      rc = hs_error_set(err, HS_OVERLOADED, "the server is overloaded: this request needs %zu bytes of scratch memory "
                        "and the requests in flight hold %zu of the %zu bytes all requests may use at once "
                        "(--max-total-request-memory); retry later", need, g_in_flight, g_budget);
  }
  if (rc == 0) g_in_flight += need;
  pthread_mutex_unlock(&g_budget_mu);
  return rc;
}

static void budget_release(size_t need) {
  pthread_mutex_lock(&g_budget_mu);
  g_in_flight -= need;
  pthread_cond_broadcast(&g_budget_cv);
  pthread_mutex_unlock(&g_budget_mu);
}

/* Readies a new session for the load-time shapes (those warm-up runs), so that its first request
 * does not pay for them: the plan is built and cached, and an arena is allocated and its pages
 * touched: the session's own, or with a pool one more of the pool's while it holds fewer arenas
 * than the model has sessions (a reload whose plan keeps its size finds the replaced version's, and
 * allocates none). Best effort: a model whose plan needs input contents (key inputs) is planned by
 * its first run instead, and so is any shape this cannot plan (the run then reports why). */
static void session_prime(hs_engine_session *s) {
  const hs_engine_model *m = s->m;
  if (m->n_key_inputs > 0) return;
  hs_tensor *in = calloc((size_t)m->n_inputs + 1, sizeof *in);
  if (!in) return;
  load_time_inputs(m, 1, in);
  hs_plan *plan;
  hs_error err;
  hs_error_clear(&err);
  if (session_plan(s, in, 0, &plan, &err) == 0 && (!s->pool || !hs__arena_pool_enough(s->pool, m))) {
    if (s->pool && !(s->held = hs__arena_new(s->pool))) { /* a new arena for the pool */
      free(in);
      return;
    }
    if (session_arena(s, plan, &err) == 0 && s->arena) {
      /* one write per page faults the arena in (the kernel zeroes the page); no need to clear it */
      volatile unsigned char *a = s->arena;
      for (size_t off = 0; off < s->arena_bytes; off += 4096) a[off] = 0;
    }
    hs_engine_session_idle(s); /* a pooled arena waits in the pool for whichever session runs first */
  }
  free(in);
}

int hs_engine_session_create(const hs_engine_model *m, hs_engine_session **out, hs_error *err) {
  hs_engine_session *s = calloc(1, sizeof *s);
  if (!s) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  s->m = m;
  s->vin = calloc((size_t)m->max_in + 1, sizeof *s->vin);
  s->vout = calloc((size_t)m->max_out + 1, sizeof *s->vout);
  s->subs = calloc((size_t)m->n_subs + 1, sizeof *s->subs);
  if (!s->vin || !s->vout || !s->subs) {
    hs_engine_session_free(s);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  /* a model's own sessions share arenas with those of models planned to the same size */
  if (!m->is_sub && !m->dynamic && m->planned_bytes > 0) s->pool = hs__arena_pool_join(m->planned_bytes, m);
  if (!m->is_sub && !m->dynamic) session_prime(s);
  *out = s;
  return 0;
}

void hs_engine_session_free(hs_engine_session *s) {
  if (!s) return;
  for (int i = 0; s->subs && i < s->m->n_subs; i++) hs_engine_session_free(s->subs[i]);
  free(s->subs);
  hs_eager_free(s->eager);
  for (int i = 0; i < HS_PLAN_CACHE; i++) hs_plan_free(s->plans[i]);
  if (s->pool) {
    hs_engine_session_idle(s);
    hs__arena_pool_leave(s->pool, s->m);
  } else {
    free(s->arena);
  }
  free(s->vin);
  free(s->vout);
  free(s);
}

static int check_inputs(const hs_engine_model *m, const hs_tensor *in, size_t n, hs_error *err) {
  if (n != (size_t)m->n_inputs)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "the model takes %d inputs, got %zu", m->n_inputs, n);
  for (int i = 0; i < m->n_inputs; i++) {
    const hs_io_desc *d = &m->inputs[i];
    const hs_tensor *t = &in[i];
    if (t->dtype != d->dtype) {
      const char *want = hs_dtype_kserve_name(d->dtype), *got = hs_dtype_kserve_name(t->dtype);
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input '%s': type %s, the model needs %s", d->name,
                          got ? got : "?", want ? want : "?");
    }
    if (t->ndim != d->ndim)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input '%s': rank %d, the model needs %d", d->name, t->ndim,
                          d->ndim);
    for (int k = 0; k < d->ndim; k++)
      if (t->dims[k] < 0 || (d->dims[k] >= 0 && t->dims[k] != d->dims[k]))
        return hs_error_set(err, HS_INVALID_ARGUMENT, "input '%s': dimension %d is %lld, the model needs %lld",
                            d->name, k, (long long)t->dims[k], (long long)d->dims[k]);
    int64_t c = hs_shape_numel(t->dims, t->ndim);
    if (c < 0 || (uint64_t)c > SIZE_MAX / hs_dtype_size(t->dtype) || (size_t)c * hs_dtype_size(t->dtype) != t->nbytes)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input '%s': %zu bytes do not match its shape", d->name,
                          t->nbytes);
    if (t->nbytes && !t->data) return hs_error_set(err, HS_INVALID_ARGUMENT, "input '%s' has no data", d->name);
  }
  return 0;
}

int hs_engine_run(hs_engine_session *s, const hs_tensor *inputs, size_t n_inputs, hs_tensor *outputs,
                  size_t n_outputs, hs_error *err) {
  const hs_engine_model *m = s->m;
  int rc = check_inputs(m, inputs, n_inputs, err);
  if (rc) return rc;
  if (n_outputs != (size_t)m->n_outputs)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "the model has %d outputs, %zu requested", m->n_outputs,
                        n_outputs);
  return hs_engine_session_exec(s, inputs, outputs, err);
}

int hs_engine_session_exec(hs_engine_session *s, const hs_tensor *inputs, hs_tensor *outputs, hs_error *err) {
  if (s->m->dynamic || s->eager_only) return hs_eager_run(s, inputs, outputs, err);
  hs_plan *plan;
  int rc = session_plan(s, inputs, 1, &plan, err);
  if (rc == HS_UNAVAILABLE && s->m->is_sub) { /* shapes computed inside the subgraph: node by node from now on */
    s->eager_only = 1;
    return hs_eager_run(s, inputs, outputs, err);
  }
  if (rc) return rc;
  /* a model's own run (not a subgraph's, which its parent's run counts) holds its arena's bytes in the
   * process's budget from before the arena may grow until the run is over */
  size_t need = s->m->is_sub || t_exempt ? 0 : hs_plan_arena_bytes(plan);
  if (need && (rc = budget_reserve(need, err))) return rc;
  rc = session_arena(s, plan, err);
  if (rc == 0) rc = hs_plan_execute(plan, s->m, inputs, s->arena, s->vin, s->vout, outputs, err);
  if (need) budget_release(need);
  return rc;
}

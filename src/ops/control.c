/* control.c - control flow: If, Loop and Scan, which run subgraphs through the engine's hs_run_ctx.
 *
 * These ops never see the engine: the engine hands run_ctl a context with two callbacks, one that
 * runs one of the node's subgraphs (compiled once, planned per shape like a model) and one that
 * gives an output its memory once the op knows the output's size. Loop-carried values and scan
 * states are copied out of each iteration's results (which the next iteration overwrites), so their
 * shapes may change from one iteration to the next; scan outputs must keep one shape and are stacked
 * along the scan axis (Loop: a new axis 0).
 */
#include <stdlib.h>

#include "ops/ops.h"

#define MAX_SCAN 32                  /* Scan inputs / outputs handled */

size_t hs_dynamic_limit_bytes = (size_t)16 << 30;
int64_t hs_loop_limit_iterations = (int64_t)1 << 20;

typedef struct {
  int a_then, a_else;
} if_params;

typedef struct {
  int a_body;
  int n_carried, n_scan;
} loop_params;

typedef struct {
  int a_body;
  int n_state, n_in, n_out;
  int8_t in_axis[MAX_SCAN], in_rev[MAX_SCAN], out_axis[MAX_SCAN], out_rev[MAX_SCAN];
} scan_params;

_Static_assert(sizeof(scan_params) <= HS_OP_PARAMS_BYTES, "scan params fit the node");

/* Index of the GRAPH attribute `name`; HS_PARSE naming the node when it is missing. */
static int graph_attr(const hs_node *n, const char *name, int *out, hs_error *err) {
  for (int a = 0; a < n->n_attrs; a++)
    if (strcmp(n->attrs[a].name, name) == 0 && n->attrs[a].type == HS_ATTR_GRAPH && n->attrs[a].graph) {
      *out = a;
      return 0;
    }
  return hs_op_errf(err, n, HS_PARSE, "needs a graph attribute '%s'", name);
}

static int formal_inputs(const hs_node *n) { return n->n_in - n->n_implicit; }
static int sub_formal_inputs(const hs_graph *sg) { return sg->n_inputs - sg->n_outer; }

/* Counts nbytes more into *held, the bytes one run of the op holds; HS_LIMIT past hs_dynamic_limit_bytes. */
static int hold(const hs_node *n, size_t *held, size_t nbytes, hs_error *err) {
  if (*held > hs_dynamic_limit_bytes || nbytes > hs_dynamic_limit_bytes - *held)
    return hs_op_errf(err, n, HS_LIMIT, "its carried values and scan outputs exceed %zu bytes", hs_dynamic_limit_bytes);
  *held += nbytes;
  return 0;
}

/* A copy of t's bytes into a new malloc'ed buffer (t itself keeps pointing at the original). */
static int copy_tensor(const hs_node *n, const hs_tensor *t, hs_tensor *dst, size_t *held, hs_error *err) {
  int rc = hold(n, held, t->nbytes, err);
  if (rc) return rc;
  *dst = *t;
  dst->data = malloc(t->nbytes ? t->nbytes : 1);
  if (!dst->data) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  hs_memcpy(dst->data, t->data, t->nbytes);
  return 0;
}

/* Node output k takes t's shape and a copy of its bytes. */
static int emit(const hs_node *n, int k, const hs_tensor *t, hs_tensor *out, hs_run_ctx *ctx, hs_error *err) {
  if (n->out[k] < 0) return 0;
  out[k] = *t;
  out[k].data = NULL;
  int rc = ctx->alloc_output(ctx, k, &out[k], err);
  if (rc) return rc;
  hs_memcpy(out[k].data, t->data, t->nbytes);
  return 0;
}

static int truth(const hs_node *n, const hs_tensor *t, const char *what, int *out, hs_error *err) {
  if (hs_numel(t) != 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%s must hold one value", what);
  *out = hs_get_scalar(t) != 0;
  return 0;
}

/* ---- If ----------------------------------------------------------------------------------------- */

static int if_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  if_params *p = (if_params *)n->params.bytes;
  int rc;
  if ((rc = hs_node_only_attrs(n, "then_branch,else_branch", err)) || (rc = graph_attr(n, "then_branch", &p->a_then, err)) ||
      (rc = graph_attr(n, "else_branch", &p->a_else, err)))
    return rc;
  if (formal_inputs(n) != 1) return hs_op_errf(err, n, HS_PARSE, "takes one input, the condition");
  for (int b = 0; b < 2; b++) {
    const hs_graph *sg = n->attrs[b ? p->a_else : p->a_then].graph;
    if (sub_formal_inputs(sg) != 0) return hs_op_errf(err, n, HS_PARSE, "a branch takes no inputs");
    if (sg->n_outputs != n->n_out)
      return hs_op_errf(err, n, HS_PARSE, "%s branch has %d outputs, the node %d", b ? "else" : "then", sg->n_outputs,
                        n->n_out);
  }
  return 0;
}

static int if_run(const hs_node *n, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_run_ctx *ctx,
                  hs_error *err) {
  (void)n_in;
  const if_params *p = (const if_params *)n->params.bytes;
  int cond = 0, rc;
  if ((rc = truth(n, &in[0], "the condition", &cond, err))) return rc;
  const hs_attr *br = &n->attrs[cond ? p->a_then : p->a_else];
  const hs_graph *sg = br->graph;
  hs_tensor *res = calloc((size_t)n_out + 1, sizeof *res);
  if (!res) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  rc = ctx->run_subgraph(ctx, br, in + sg->outer_base, sg->n_outer, res, n_out, err);
  for (int k = 0; k < n_out && rc == 0; k++) rc = emit(n, k, &res[k], out, ctx, err);
  free(res);
  return rc;
}

/* ---- Loop --------------------------------------------------------------------------------------- */

static int loop_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  loop_params *p = (loop_params *)n->params.bytes;
  int rc;
  if ((rc = hs_node_only_attrs(n, "body", err)) || (rc = graph_attr(n, "body", &p->a_body, err))) return rc;
  const hs_graph *sg = n->attrs[p->a_body].graph;
  if (formal_inputs(n) < 2) return hs_op_errf(err, n, HS_PARSE, "needs inputs M and cond (either may be empty)");
  p->n_carried = formal_inputs(n) - 2;
  p->n_scan = n->n_out - p->n_carried;
  if (p->n_scan < 0) return hs_op_errf(err, n, HS_PARSE, "fewer outputs than loop-carried values");
  if (sub_formal_inputs(sg) != 2 + p->n_carried || sg->n_outputs != 1 + p->n_carried + p->n_scan)
    return hs_op_errf(err, n, HS_PARSE, "the body takes %d inputs and gives %d outputs; %d carried values need %d "
                      "and %d", sub_formal_inputs(sg), sg->n_outputs, p->n_carried, 2 + p->n_carried,
                      1 + n->n_out);
  return 0;
}

typedef struct {
  void *buf;
  size_t len, cap;
  hs_tensor elem; /* the first iteration's element: dtype and shape every later one must match */
} stack;

static int same_shape(const hs_tensor *a, const hs_tensor *b) {
  return a->dtype == b->dtype && a->ndim == b->ndim && memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

static int stack_push(const hs_node *n, stack *s, const hs_tensor *e, int first, size_t *held, hs_error *err) {
  if (first) s->elem = *e;
  else if (!same_shape(&s->elem, e))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "a scan output changes shape between iterations");
  int rc = hold(n, held, e->nbytes, err);
  if (rc) return rc;
  if (s->len + e->nbytes > s->cap) {
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->len + e->nbytes) cap *= 2;
    void *nb = realloc(s->buf, cap);
    if (!nb) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory for scan outputs");
    s->buf = nb;
    s->cap = cap;
  }
  hs_memcpy((char *)s->buf + s->len, e->data, e->nbytes);
  s->len += e->nbytes;
  return 0;
}

static int loop_run(const hs_node *n, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_run_ctx *ctx,
                    hs_error *err) {
  (void)n_in;
  const loop_params *p = (const loop_params *)n->params.bytes;
  const hs_attr *body = &n->attrs[p->a_body];
  const hs_graph *sg = body->graph;
  int N = p->n_carried, K = p->n_scan, rc = 0, cond = 1;
  int64_t max_trip = INT64_MAX;
  size_t held = 0; /* bytes of carried values and scan outputs, against hs_dynamic_limit_bytes */
  if (HS_PRESENT(&in[0])) {
    if (hs_numel(&in[0]) != 1 || (in[0].dtype != HS_DT_INT64 && in[0].dtype != HS_DT_INT32))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "M must hold one integer");
    max_trip = hs_get_int(&in[0], 0);
  }
  if (HS_PRESENT(&in[1]) && (rc = truth(n, &in[1], "cond", &cond, err))) return rc;
  int nb = 2 + N + sg->n_outer;
  hs_tensor *bin = calloc((size_t)nb + 1, sizeof *bin);
  hs_tensor *bout = calloc((size_t)(1 + N + K) + 1, sizeof *bout);
  hs_tensor *car = calloc((size_t)N + 1, sizeof *car);
  stack *scans = calloc((size_t)K + 1, sizeof *scans);
  if (!bin || !bout || !car || !scans) {
    rc = hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
    goto done;
  }
  for (int j = 0; j < N && rc == 0; j++) rc = copy_tensor(n, &in[2 + j], &car[j], &held, err);
  int64_t it = 0;
  uint8_t cond_in = 1;
  for (; rc == 0 && it < max_trip && cond; it++) {
    if (it >= hs_loop_limit_iterations) {
      rc = hs_op_errf(err, n, HS_LIMIT, "more than %lld iterations", (long long)hs_loop_limit_iterations);
      break;
    }
    cond_in = (uint8_t)cond;
    bin[0] = (hs_tensor){.dtype = HS_DT_INT64, .ndim = 0, .data = &it, .nbytes = 8};
    bin[1] = (hs_tensor){.dtype = HS_DT_BOOL, .ndim = 0, .data = &cond_in, .nbytes = 1};
    for (int j = 0; j < N; j++) bin[2 + j] = car[j];
    for (int j = 0; j < sg->n_outer; j++) bin[2 + N + j] = in[sg->outer_base + j];
    if ((rc = ctx->run_subgraph(ctx, body, bin, nb, bout, 1 + N + K, err))) break;
    if ((rc = truth(n, &bout[0], "the body's condition output", &cond, err))) break;
    for (int j = 0; j < N && rc == 0; j++) { /* the next iteration's inputs: out of the body's memory */
      hs_tensor next;
      if ((rc = copy_tensor(n, &bout[1 + j], &next, &held, err))) break;
      held -= car[j].nbytes;
      free(car[j].data);
      car[j] = next;
    }
    for (int k = 0; k < K && rc == 0; k++) rc = stack_push(n, &scans[k], &bout[1 + N + k], it == 0, &held, err);
  }
  for (int j = 0; j < N && rc == 0; j++) rc = emit(n, j, &car[j], out, ctx, err);
  for (int k = 0; k < K && rc == 0; k++) {
    hs_tensor t;
    memset(&t, 0, sizeof t);
    if (it > 0) {
      t = scans[k].elem;
    } else { /* no iteration ran: an empty stack of the body's declared element */
      const hs_value *v = &sg->values[sg->outputs[1 + N + k]];
      t.dtype = v->dtype;
      t.ndim = v->ndim < 0 ? 0 : v->ndim;
      for (int d = 0; d < t.ndim; d++) t.dims[d] = v->dims[d] < 0 ? 0 : v->dims[d];
      if (t.dtype == HS_DT_UNDEFINED) {
        rc = hs_op_errf(err, n, HS_UNSUPPORTED, "no iteration ran and scan output %d has no declared type", k);
        break;
      }
    }
    if (t.ndim >= HS_MAX_DIMS) {
      rc = hs_op_errf(err, n, HS_UNSUPPORTED, "scan output %d has too many dimensions", k);
      break;
    }
    hs_tensor o;
    int64_t dims[HS_MAX_DIMS];
    dims[0] = it;
    for (int d = 0; d < t.ndim; d++) dims[d + 1] = t.dims[d];
    if ((rc = hs_set_shape(&o, t.dtype, t.ndim + 1, dims, n, err))) break;
    o.data = scans[k].buf;
    if (o.nbytes != scans[k].len) {
      rc = hs_op_errf(err, n, HS_INTERNAL, "scan output %d: %zu bytes stacked for %zu", k, scans[k].len, o.nbytes);
      break;
    }
    rc = emit(n, N + k, &o, out, ctx, err);
  }
done:
  for (int j = 0; car && j < N; j++) free(car[j].data);
  for (int k = 0; scans && k < K; k++) free(scans[k].buf);
  free(bin);
  free(bout);
  free(car);
  free(scans);
  (void)n_out;
  return rc;
}

/* ---- Scan --------------------------------------------------------------------------------------- */

static int read_small_ints(const hs_node *n, const char *name, int count, int def, int8_t *dst, hs_error *err) {
  const int64_t *v;
  size_t c;
  int rc = hs_attr_ints(n, name, &v, &c, err);
  if (rc) return rc;
  if (v && (int)c != count) return hs_op_errf(err, n, HS_PARSE, "'%s' has %zu entries, expected %d", name, c, count);
  for (int i = 0; i < count; i++) {
    int64_t x = v ? v[i] : def;
    if (x < -HS_MAX_DIMS || x > HS_MAX_DIMS) return hs_op_errf(err, n, HS_PARSE, "'%s' value %lld", name, (long long)x);
    dst[i] = (int8_t)x;
  }
  return 0;
}

static int scan_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  scan_params *p = (scan_params *)n->params.bytes;
  int rc;
  int64_t m;
  if ((rc = hs_node_only_attrs(n, "body,num_scan_inputs,scan_input_axes,scan_input_directions,scan_output_axes,"
                                  "scan_output_directions", err)) ||
      (rc = graph_attr(n, "body", &p->a_body, err)) || (rc = hs_attr_int(n, "num_scan_inputs", -1, &m, err)))
    return rc;
  const hs_graph *sg = n->attrs[p->a_body].graph;
  int nf = formal_inputs(n);
  if (m < 1 || m > nf || m > MAX_SCAN) return hs_op_errf(err, n, HS_PARSE, "num_scan_inputs %lld for %d inputs", (long long)m, nf);
  p->n_in = (int)m;
  p->n_state = nf - p->n_in;
  p->n_out = n->n_out - p->n_state;
  if (p->n_out < 0 || p->n_out > MAX_SCAN) return hs_op_errf(err, n, HS_UNSUPPORTED, "%d outputs", n->n_out);
  for (int i = 0; i < nf; i++)
    if (n->in[i] < 0) return hs_op_errf(err, n, HS_PARSE, "input %d is empty", i);
  if (sub_formal_inputs(sg) != nf || sg->n_outputs != n->n_out)
    return hs_op_errf(err, n, HS_PARSE, "the body takes %d inputs and gives %d outputs, the node has %d and %d",
                      sub_formal_inputs(sg), sg->n_outputs, nf, n->n_out);
  if ((rc = read_small_ints(n, "scan_input_axes", p->n_in, 0, p->in_axis, err)) ||
      (rc = read_small_ints(n, "scan_input_directions", p->n_in, 0, p->in_rev, err)) ||
      (rc = read_small_ints(n, "scan_output_axes", p->n_out, 0, p->out_axis, err)) ||
      (rc = read_small_ints(n, "scan_output_directions", p->n_out, 0, p->out_rev, err)))
    return rc;
  return 0;
}

/* Bytes before and after `axis` of a shape: outer = product of dims[0..axis), inner = the rest's bytes. */
static void split_at(const int64_t *dims, int ndim, int axis, size_t esz, size_t *outer, size_t *inner) {
  *outer = 1;
  *inner = esz;
  for (int d = 0; d < axis; d++) *outer *= (size_t)dims[d];
  for (int d = axis; d < ndim; d++) *inner *= (size_t)dims[d];
}

static int scan_run(const hs_node *n, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_run_ctx *ctx,
                    hs_error *err) {
  (void)n_in;
  (void)n_out;
  const scan_params *p = (const scan_params *)n->params.bytes;
  const hs_attr *body = &n->attrs[p->a_body];
  const hs_graph *sg = body->graph;
  int N = p->n_state, M = p->n_in, K = p->n_out, rc = 0;
  int in_axis[MAX_SCAN], out_axis[MAX_SCAN];
  int64_t L = -1;
  size_t held = 0; /* bytes of the states, against hs_dynamic_limit_bytes */
  for (int j = 0; j < M; j++) {
    const hs_tensor *t = &in[N + j];
    if ((rc = hs_norm_axis(p->in_axis[j], t->ndim, &in_axis[j], n, err))) return rc;
    int64_t l = t->dims[in_axis[j]];
    if (L >= 0 && l != L) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scan inputs of lengths %lld and %lld",
                                            (long long)L, (long long)l);
    L = l;
  }
  int nb = N + M + sg->n_outer;
  hs_tensor *bin = calloc((size_t)nb + 1, sizeof *bin);
  hs_tensor *bout = calloc((size_t)(N + K) + 1, sizeof *bout);
  hs_tensor *state = calloc((size_t)N + 1, sizeof *state);
  hs_tensor *slice = calloc((size_t)M + 1, sizeof *slice);
  if (!bin || !bout || !state || !slice) {
    rc = hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
    goto done;
  }
  for (int j = 0; j < N && rc == 0; j++) rc = copy_tensor(n, &in[j], &state[j], &held, err);
  for (int j = 0; j < M && rc == 0; j++) { /* one slice of scan input j: its shape without the scan axis */
    const hs_tensor *t = &in[N + j];
    int64_t dims[HS_MAX_DIMS];
    int r = 0;
    for (int d = 0; d < t->ndim; d++)
      if (d != in_axis[j]) dims[r++] = t->dims[d];
    if ((rc = hs_set_shape(&slice[j], t->dtype, r, dims, n, err))) break;
    if (!(slice[j].data = malloc(slice[j].nbytes ? slice[j].nbytes : 1))) rc = hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  }
  for (int64_t t = 0; rc == 0 && t < L; t++) {
    for (int j = 0; j < M; j++) {
      const hs_tensor *src = &in[N + j];
      size_t outer, inner;
      split_at(src->dims, src->ndim, in_axis[j], hs_dtype_size(src->dtype), &outer, &inner);
      inner /= (size_t)L; /* one step along the scan axis (L > 0 inside this loop) */
      int64_t idx = p->in_rev[j] ? L - 1 - t : t;
      for (size_t o = 0; o < outer; o++)
        hs_memcpy((char *)slice[j].data + o * inner, (const char *)src->data + (o * (size_t)L + (size_t)idx) * inner, inner);
    }
    for (int j = 0; j < N; j++) bin[j] = state[j];
    for (int j = 0; j < M; j++) bin[N + j] = slice[j];
    for (int j = 0; j < sg->n_outer; j++) bin[N + M + j] = in[sg->outer_base + j];
    if ((rc = ctx->run_subgraph(ctx, body, bin, nb, bout, N + K, err))) break;
    for (int j = 0; j < N && rc == 0; j++) {
      hs_tensor next;
      if ((rc = copy_tensor(n, &bout[j], &next, &held, err))) break;
      held -= state[j].nbytes;
      free(state[j].data);
      state[j] = next;
    }
    for (int k = 0; k < K && rc == 0; k++) {
      const hs_tensor *e = &bout[N + k];
      if (t == 0) { /* the output's shape: the element's with L inserted at the scan axis */
        if ((rc = hs_norm_axis(p->out_axis[k], e->ndim + 1, &out_axis[k], n, err))) break;
        if (e->ndim + 1 > HS_MAX_DIMS) {
          rc = hs_op_errf(err, n, HS_UNSUPPORTED, "scan output %d has too many dimensions", k);
          break;
        }
        int64_t dims[HS_MAX_DIMS];
        for (int d = 0, s = 0; d <= e->ndim; d++) dims[d] = d == out_axis[k] ? L : e->dims[s++];
        if ((rc = hs_set_shape(&out[N + k], e->dtype, e->ndim + 1, dims, n, err))) break;
        if ((rc = ctx->alloc_output(ctx, N + k, &out[N + k], err))) break;
      }
      int64_t dims[HS_MAX_DIMS];
      for (int d = 0, s = 0; d < out[N + k].ndim; d++)
        if (d != out_axis[k]) dims[s++] = out[N + k].dims[d];
      if (e->dtype != out[N + k].dtype || e->ndim != out[N + k].ndim - 1 ||
          memcmp(dims, e->dims, sizeof(int64_t) * (size_t)e->ndim) != 0) {
        rc = hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scan output %d changes shape between iterations", k);
        break;
      }
      size_t outer, inner;
      split_at(e->dims, e->ndim, out_axis[k], hs_dtype_size(e->dtype), &outer, &inner);
      int64_t pos = p->out_rev[k] ? L - 1 - t : t;
      for (size_t o = 0; o < outer; o++)
        hs_memcpy((char *)out[N + k].data + (o * (size_t)L + (size_t)pos) * inner, (const char *)e->data + o * inner, inner);
    }
  }
  for (int k = 0; k < K && rc == 0 && L == 0; k++) { /* no iteration: empty outputs of the declared element */
    const hs_value *v = &sg->values[sg->outputs[N + k]];
    if (v->dtype == HS_DT_UNDEFINED || v->ndim < 0 || v->ndim + 1 > HS_MAX_DIMS) {
      rc = hs_op_errf(err, n, HS_UNSUPPORTED, "empty scan and output %d has no declared type and shape", k);
      break;
    }
    int axis;
    if ((rc = hs_norm_axis(p->out_axis[k], v->ndim + 1, &axis, n, err))) break;
    int64_t dims[HS_MAX_DIMS];
    for (int d = 0, s = 0; d <= v->ndim; d++) {
      if (d == axis) {
        dims[d] = 0;
        continue;
      }
      dims[d] = v->dims[s] < 0 ? 0 : v->dims[s];
      s++;
    }
    if ((rc = hs_set_shape(&out[N + k], v->dtype, v->ndim + 1, dims, n, err))) break;
    rc = ctx->alloc_output(ctx, N + k, &out[N + k], err);
  }
  for (int j = 0; j < N && rc == 0; j++) rc = emit(n, j, &state[j], out, ctx, err);
done:
  for (int j = 0; state && j < N; j++) free(state[j].data);
  for (int j = 0; slice && j < M; j++) free(slice[j].data);
  free(bin);
  free(bout);
  free(state);
  free(slice);
  return rc;
}

/* Control ops have no plan-time infer: their shapes are known once they have run. */
static int ctl_infer(const hs_node *n, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_error *err) {
  (void)in, (void)n_in, (void)out, (void)n_out;
  return hs_op_errf(err, n, HS_INTERNAL, "control flow has no static shapes (the engine runs it node by node)");
}

const hs_op_impl hs_op_impl_ctl_if = {.check = if_check, .infer = ctl_infer, .run_ctl = if_run};
const hs_op_impl hs_op_impl_ctl_loop = {.check = loop_check, .infer = ctl_infer, .run_ctl = loop_run};
const hs_op_impl hs_op_impl_ctl_scan = {.check = scan_check, .infer = ctl_infer, .run_ctl = scan_run};

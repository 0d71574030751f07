/* matmul.c - MatMul and Gemm: oneDNN matmul kernels (via src/kernels) when B is a constant, plain C otherwise. */

/*
 * DESIGN
 * check() parses the attributes into hs_matmul_attrs; the fusion passes (pass_fuse_matmul.c) may
 * offer a constant bias, activations and a residual sum, which mm_fuse() records there. prepare() runs once at load: when B
 * is a constant (a Linear layer's weights, a transformer's projections) and, for Gemm, C is absent or
 * constant, it gives the node a state holding a kernel cache. The kernel copies B, folds alpha into it
 * and reorders it once into oneDNN's blocked layout; the bias (MatMul's fused bias, Gemm's beta * C)
 * and the post-ops run inside the same primitive. A needs only its shape, known when a session plans:
 * scratch_bytes() builds the kernel and run() finds it again without locking. When B is 2-D (or 1-D)
 * the leading dims of A are flattened into rows, so every batch size and sequence length is a variant
 * of one kernel that shares the reordered B.
 * Everything else (B or C given at run time, as in attention's Q x K^T, an empty operand, a residual
 * that broadcasts) runs the plain path: oneDNN's sgemm per matrix (hs_sgemm, with plain-C loops as its
 * own fallback), then bias, post-ops and residual in C, computing the same answer.
 *
 * B is held once. At the end of compiling (after the trial plans built the kernels for the
 * load-time shapes) release_b() lets the graph free its copy of B (hs_graph_release_const) when
 * this node is its only reader and the node's first kernel holds B exactly (MatMul, or Gemm with
 * alpha 1: the kernel folds alpha into its copy, and alpha * B / alpha need not be B); the state
 * records that kernel as the holder. Later row counts are variants of the holder (they reorder from
 * its copy); whatever else still needs B in its own layout reads it back from the holder
 * (hs_kernel_matmul_b, an exact float reorder): a kernel for another batched shape of A, built with
 * a temporary copy, and the plain path (a small product, a residual that broadcasts, a full kernel
 * cache), into the front of its scratch. The bias is held once too (release_bias): the kernel's copy
 * replaces Gemm's beta * C in the state and a MatMul's fused bias in the graph (when no other node reads
 * it), and new kernels and the plain path read that copy; Gemm's C stays in the graph for the plain
 * path, which adds beta * C itself. The state changes only while compiling, single-threaded; after
 * that it is read-only like the rest of the model.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kernels/kcache.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

/* Lives in hs_node.params of MatMul and Gemm nodes. */
typedef struct hs_matmul_attrs {
  int gemm;             /* 1: Gemm (2-D, attributes below); 0: MatMul (batched, numpy broadcasting) */
  float alpha, beta;    /* Gemm; MatMul: 1, 1 */
  int trans_a, trans_b; /* Gemm; MatMul: 0, 0 */
  /* Set by mm_fuse() when a pass fuses, never by the model file: */
  int bias_input;       /* MatMul: node input index of a fused constant bias [N] added to every row, or -1 */
  int sum_input;        /* node input index of the residual that a HS_POST_SUM adds, or -1 */
  hs_post_ops post;     /* applied to alpha * A x B + bias in order */
} hs_matmul_attrs;

_Static_assert(sizeof(hs_matmul_attrs) <= HS_OP_PARAMS_BYTES, "matmul attributes fit in hs_op_params");

typedef struct mm_state {
  hs_kcache cache;
  const float *b;       /* graph constant B, or NULL once released to `holder` */
  const hs_kernel *holder; /* after the release: the cached kernel (slot 0) holding the only copy of B */
  size_t b_bytes;       /* B's size, as the graph gave it */
  const float *bias;    /* the kernel's bias (a graph constant or owned_bias; once a kernel holds it, that
                           kernel's copy), or NULL */
  float *owned_bias;    /* Gemm: beta * C, until a kernel holds it */
  int bias_released;    /* MatMul: the graph's copy of the fused bias went (bias is the kernel's) */
  int bias_ndim;
  int64_t bias_dims[HS_MAX_DIMS];
} mm_state;

static const hs_matmul_attrs *attrs_of(const hs_node *n) { return (const hs_matmul_attrs *)n->params.bytes; }

static void attrs_init(hs_matmul_attrs *a, int gemm) {
  memset(a, 0, sizeof *a);
  a->gemm = gemm;
  a->alpha = a->beta = 1.0f;
  a->bias_input = a->sum_input = -1;
}

/* ---- shapes ---------------------------------------------------------------------------------- */

/* A product's geometry: batch dims, M, K, N (1-D MatMul operands promoted as numpy does). */
typedef struct mm_shape {
  int64_t M, K, N;
  int rb;                                   /* batch rank */
  int64_t bdims[HS_MAX_DIMS];               /* broadcast batch dims */
  int64_t sa[HS_MAX_DIMS], sb[HS_MAX_DIMS]; /* batch strides in matrices */
  int ndim;                                 /* the product's own output shape */
  int64_t dims[HS_MAX_DIMS];
} mm_shape;

static int matmul_shape(const hs_node *n, const hs_tensor *a, const hs_tensor *b, mm_shape *s, hs_error *err) {
  if (a->ndim < 1 || b->ndim < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs must have rank >= 1");
  int64_t M = a->ndim >= 2 ? a->dims[a->ndim - 2] : 1, Ka = a->dims[a->ndim - 1];
  int64_t Kb = b->ndim >= 2 ? b->dims[b->ndim - 2] : b->dims[0], N = b->ndim >= 2 ? b->dims[b->ndim - 1] : 1;
  if (Ka != Kb)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inner dimensions differ (%lld vs %lld)", (long long)Ka,
                      (long long)Kb);
  int ra = a->ndim > 2 ? a->ndim - 2 : 0, rbb = b->ndim > 2 ? b->ndim - 2 : 0;
  int r = ra > rbb ? ra : rbb;
  int64_t astr = 1, bstr = 1;
  for (int i = r - 1; i >= 0; i--) {
    int ia = i - (r - ra), ib = i - (r - rbb);
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    if (da != db && da != 1 && db != 1)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "batch dimensions do not broadcast");
    s->bdims[i] = da == 1 ? db : da;
    s->sa[i] = da == 1 ? 0 : astr;
    s->sb[i] = db == 1 ? 0 : bstr;
    astr *= da;
    bstr *= db;
  }
  s->M = M;
  s->K = Ka;
  s->N = N;
  s->rb = r;
  int k = 0;
  for (int i = 0; i < r; i++) s->dims[k++] = s->bdims[i];
  if (a->ndim >= 2) s->dims[k++] = M;
  if (b->ndim >= 2) s->dims[k++] = N;
  s->ndim = k;
  return 0;
}

static int gemm_shape(const hs_node *n, const hs_tensor *in, int nin, mm_shape *s, hs_error *err) {
  const hs_matmul_attrs *p = attrs_of(n);
  if (in[0].ndim != 2 || in[1].ndim != 2) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "A and B must be 2-D");
  memset(s, 0, sizeof *s);
  s->M = p->trans_a ? in[0].dims[1] : in[0].dims[0];
  s->K = p->trans_a ? in[0].dims[0] : in[0].dims[1];
  int64_t Kb = p->trans_b ? in[1].dims[1] : in[1].dims[0];
  s->N = p->trans_b ? in[1].dims[0] : in[1].dims[1];
  if (s->K != Kb) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inner dimensions differ");
  s->ndim = 2;
  s->dims[0] = s->M;
  s->dims[1] = s->N;
  if (nin > 2 && HS_PRESENT(&in[2])) {
    hs_tensor o = {.ndim = 2, .dims = {s->M, s->N}};
    int r, rc;
    int64_t bd[HS_MAX_DIMS];
    if ((rc = hs_broadcast_shape(&o, &in[2], &r, bd, n, err))) return rc;
    if (r != 2 || bd[0] != s->M || bd[1] != s->N)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "C does not broadcast to [M, N]");
  }
  return 0;
}

static int node_shape(const hs_node *n, const hs_tensor *in, int nin, mm_shape *s, hs_error *err) {
  return attrs_of(n)->gemm ? gemm_shape(n, in, nin, s, err) : matmul_shape(n, &in[0], &in[1], s, err);
}

static int64_t shape_numel(const mm_shape *s) {
  int64_t c = 1;
  for (int i = 0; i < s->ndim; i++) c *= s->dims[i];
  return c;
}

/* 1 when the fused residual has exactly the product's own shape (the kernel's fused sum). */
static int residual_is_own_shape(const hs_tensor *r, const mm_shape *s) {
  return r->ndim == s->ndim && memcmp(r->dims, s->dims, sizeof(int64_t) * (size_t)s->ndim) == 0;
}

static const hs_tensor *residual_of(const hs_node *n, const hs_tensor *in, int nin) {
  int k = attrs_of(n)->sum_input;
  return k >= 0 && k < nin && HS_PRESENT(&in[k]) ? &in[k] : NULL;
}

static int mm_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const hs_matmul_attrs *a = attrs_of(n);
  int rc;
  if ((rc = hs_need_dtype(n, &in[0], "A", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  if ((rc = hs_need_dtype(n, &in[1], "B", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  if (a->gemm && nin > 2 && HS_PRESENT(&in[2]) &&
      (rc = hs_need_dtype(n, &in[2], "C", err, HS_DT_FLOAT32, HS_DT_UNDEFINED)))
    return rc;
  mm_shape s;
  if ((rc = node_shape(n, in, nin, &s, err))) return rc;
  if (a->bias_input >= 0) {
    if (a->bias_input >= nin || in[a->bias_input].dtype != HS_DT_FLOAT32 || s.ndim < 1 ||
        hs_numel(&in[a->bias_input]) != s.N)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused bias must be float32 with %lld elements", (long long)s.N);
  }
  if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, s.ndim, s.dims, n, err))) return rc;
  const hs_tensor *r = residual_of(n, in, nin);
  if (a->sum_input >= 0) {
    /* A fused residual Add: the output is the numpy broadcast of the product and the residual. */
    if (!r || r->dtype != HS_DT_FLOAT32) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused residual must be float32");
    if (!residual_is_own_shape(r, &s)) {
      hs_tensor c = out[0];
      int nd;
      int64_t bd[HS_MAX_DIMS];
      if ((rc = hs_broadcast_shape(&c, r, &nd, bd, n, err))) return rc;
      if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, nd, bd, n, err))) return rc;
    }
  }
  return 0;
}

/* ---- oneDNN path ---------------------------------------------------------------------------- */

typedef struct build_ctx {
  const hs_node *n;
  const mm_state *st;
  hs_matmul_params p; /* shapes filled by kernel_for; constants and post-ops by build_kernel */
} build_ctx;

static int build_kernel(void *ctx, hs_kernel **out, hs_error *err) {
  build_ctx *c = ctx;
  const hs_matmul_attrs *a = attrs_of(c->n);
  hs_matmul_params *p = &c->p;
  p->device = HS_KDEV_CPU;
  p->alpha = a->gemm ? a->alpha : 1.0f;
  p->b_const = c->st->b;
  p->b_lend = 1; /* the graph's B outlives the kernel, or is handed to it (release_b) */
  p->bias = c->st->bias;
  p->bias_ndim = c->st->bias_ndim;
  memcpy(p->bias_dims, c->st->bias_dims, sizeof p->bias_dims);
  p->post = a->post;
  if (p->b_const) return hs_kernel_matmul_create(p, out, err);
  /* B released (a row count of a 2-D B is a variant of the holder, so this is another batched
   * shape of A): the new kernel copies B from a temporary read back from the holder */
  if (!c->st->holder) return hs_error_set(err, HS_INTERNAL, "matmul: B was released");
  p->b_lend = 0; /* a temporary */
  float *b = malloc(c->st->b_bytes ? c->st->b_bytes : 1);
  if (!b) return hs_error_set(err, HS_NO_MEMORY, "matmul: reading B back");
  int rc = hs_kernel_matmul_b(c->st->holder, b, c->st->b_bytes, err);
  if (!rc) {
    p->b_const = b;
    rc = hs_kernel_matmul_create(p, out, err);
  }
  free(b);
  return rc;
}

/* The kernel for these shapes, or NULL when the plain path must run (opkernel.h). *rows is the
 * leading dimension to run it with. */
static hs_kernel *kernel_for(const hs_node *n, const hs_tensor *in, const mm_shape *s, int64_t *rows,
                             hs_error *strict_err) {
  mm_state *st = n->state;
  const hs_matmul_attrs *a = attrs_of(n);
  if (!st) {
    HS_LOGD("node '%s' (%s): B or C given at run time, using plain code", n->name, n->op_type);
    return NULL;
  }
  build_ctx c = {.n = n, .st = st};
  hs_matmul_params *p = &c.p;
  int64_t key[HS_KCACHE_KEY_MAX];
  int nkey;
  if (a->gemm || in[1].ndim <= 2) {
    /* B is one matrix: A's leading dims flatten into rows, a variant per row count */
    *rows = a->gemm ? s->M : shape_numel(s) / s->N;
    p->ndim = 2;
    p->a_dims[0] = *rows;
    p->a_dims[1] = s->K;
    p->b_dims[0] = s->K;
    p->b_dims[1] = s->N;
    p->trans_a = a->trans_a;
    p->trans_b = a->trans_b;
    key[0] = -1;
    nkey = 1;
  } else {
    /* batched B: one kernel per shape of A, with the batch dims broadcast as numpy does */
    int nd = s->rb + 2;
    p->ndim = nd;
    for (int i = 0; i < s->rb; i++) {
      int ia = i - (s->rb - (in[0].ndim - 2)), ib = i - (s->rb - (in[1].ndim - 2));
      p->a_dims[i] = ia >= 0 ? in[0].dims[ia] : 1;
      p->b_dims[i] = ib >= 0 ? in[1].dims[ib] : 1;
    }
    p->a_dims[nd - 2] = s->M;
    p->a_dims[nd - 1] = s->K;
    p->b_dims[nd - 2] = s->K;
    p->b_dims[nd - 1] = s->N;
    for (int i = 0; i < nd; i++) key[i] = p->a_dims[i];
    nkey = nd;
    *rows = p->a_dims[0];
  }
  return hs_op_kernel(n, &st->cache, key, nkey, build_kernel, &c, *rows, strict_err);
}

/* 1 when the product has no work for a kernel: an empty operand or output (the plain path fills it). */
static int degenerate(const mm_shape *s) { return s->K == 0 || shape_numel(s) == 0; }

static void free_state(void *p) {
  mm_state *st = p;
  if (!st) return;
  hs_kcache_destroy(&st->cache);
  free(st->owned_bias);
  free(st);
}

static int is_const_f32(const hs_graph *g, int v) {
  return v >= 0 && g->values[v].kind == HS_VAL_CONST && g->values[v].dtype == HS_DT_FLOAT32 && g->values[v].data;
}

/* Once a kernel holds the bias (the same floats: hs_kernel_matmul_bias), the state's beta * C goes, and so does
 * the graph's copy of a MatMul's fused bias that no other node reads; new kernels and the plain path read the
 * kernel's. Gemm's C stays in the graph: the plain path adds beta * C itself. */
static void release_bias(hs_node *n, hs_graph *g, mm_state *st) {
  const hs_matmul_attrs *a = attrs_of(n);
  if (!st->bias || atomic_load_explicit(&st->cache.n, memory_order_acquire) < 1) return;
  const float *held = hs_kernel_matmul_bias(hs_kcache_kernel(&st->cache, 0));
  if (!held || held == st->bias) return; /* none, or done already */
  if (st->owned_bias) {
    free(st->owned_bias);
    st->owned_bias = NULL;
    st->bias = held;
    return;
  }
  hs_value *bias = a->bias_input >= 0 ? &g->values[n->in[a->bias_input]] : NULL;
  if (!bias || bias->n_uses != 1 || bias->data != st->bias) return; /* shared: the graph keeps it */
  st->bias = held;
  st->bias_released = 1;
  hs_graph_release_const(g, n->in[a->bias_input]);
}

/* hs_node.release_consts (see ir.h): runs at the end of compiling, single-threaded. When a kernel
 * holds B exactly and no other node reads it, the graph's copy goes; the bias likewise (release_bias). */
static void release_b(hs_node *n, hs_graph *g) {
  mm_state *st = n->state;
  const hs_matmul_attrs *a = attrs_of(n);
  hs_value *b = &g->values[n->in[1]];
  if (st) release_bias(n, g, st);
  if (!st || !st->b || b->n_uses != 1 || b->data != st->b) return; /* released already, or shared */
  /* the kernel holds alpha * B, which gives B back exactly only for alpha 1: keep the graph's copy */
  if (a->gemm && a->alpha != 1.0f) return;
  if (atomic_load_explicit(&st->cache.n, memory_order_acquire) < 1) return; /* no kernel yet: keep B */
  st->holder = hs_kcache_kernel(&st->cache, 0);
  /* a kernel that reads B in place (a classifier head at batch 1: hs_matmul_params.b_lend) takes the graph's
   * buffer over, so no second copy of B is ever made; otherwise it holds its own and the graph's goes */
  if (hs_kernel_matmul_adopt_b(hs_kcache_kernel(&st->cache, 0), st->b)) b->data = NULL;
  st->b = NULL;
  hs_graph_release_const(g, n->in[1]);
  HS_LOGD("node '%s' (%s): %zu bytes of B now held by its kernel only", n->name, n->op_type, st->b_bytes);
}

static int mm_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const hs_matmul_attrs *a = attrs_of(n);
  if (!is_const_f32(g, n->in[1])) return 0; /* B at run time: plain path */
  if (a->gemm && a->alpha == 0.0f) return 0; /* Y = beta * C: the kernel reads alpha 0 as "unset" (1) */
  const hs_value *c = NULL;
  if (a->gemm && n->n_in > 2 && n->in[2] >= 0 && a->beta != 0.0f) {
    if (!is_const_f32(g, n->in[2])) return 0; /* C at run time: plain path */
    c = &g->values[n->in[2]];
    if (c->ndim > 2 || c->nbytes < sizeof(float)) return 0; /* refused or empty: plain path */
  }
  const hs_value *bias = a->bias_input >= 0 && a->bias_input < n->n_in ? &g->values[n->in[a->bias_input]] : NULL;
  if (bias && !is_const_f32(g, n->in[a->bias_input])) return 0;
  mm_state *st = calloc(1, sizeof *st);
  if (!st) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  hs_kcache_init(&st->cache);
  st->b = g->values[n->in[1]].data;
  st->b_bytes = g->values[n->in[1]].nbytes;
  if (bias) {
    st->bias = bias->data;
    st->bias_ndim = 1;
    st->bias_dims[0] = (int64_t)(bias->nbytes / sizeof(float));
  } else if (c) {
    /* beta * C, broadcast by the kernel like any bias (a 0-d C is one element) */
    size_t count = c->nbytes / sizeof(float);
    st->owned_bias = malloc(c->nbytes);
    if (!st->owned_bias) {
      free_state(st);
      return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
    }
    const float *cv = c->data;
    for (size_t i = 0; i < count; i++) st->owned_bias[i] = a->beta * cv[i];
    st->bias = st->owned_bias;
    st->bias_ndim = c->ndim > 0 ? c->ndim : 1;
    for (int i = 0; i < st->bias_ndim; i++) st->bias_dims[i] = c->ndim > 0 ? c->dims[i] : 1;
  }
  n->state = st;
  n->free_state = free_state;
  n->release_consts = release_b;
  return 0;
}

/* Below this many multiply-adds a oneDNN matmul call costs more than the product: its fixed cost per
 * run (~12 us here, measured by bench/serve's 64-wide MLP: 13 us of compute on the kernel against
 * 5 us on the plain path) dominates, so small products take the plain path. Strict mode ignores the
 * threshold, so the tests still prove the kernel path on small shapes. */
#define HS_MATMUL_KERNEL_MIN_MACS (1 << 15)

static int small_product(const mm_shape *s) {
  return !hs_ops_strict() && (double)shape_numel(s) * (double)s->K < HS_MATMUL_KERNEL_MIN_MACS;
}

static size_t own_bytes(const mm_shape *s) { return (size_t)shape_numel(s) * sizeof(float); }

/* Bytes the plain path needs in front of its other scratch for B (0 while the graph holds it). */
static size_t plain_b_bytes(const hs_node *n) {
  const mm_state *st = n->state;
  return st && !st->b ? (st->b_bytes + 63) & ~(size_t)63 : 0;
}

static size_t mm_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  mm_shape s;
  hs_error e;
  if (node_shape(n, in, nin, &s, &e)) return 0;
  const hs_tensor *r = residual_of(n, in, nin);
  size_t pb = plain_b_bytes(n);
  if (r && !residual_is_own_shape(r, &s)) return pb + own_bytes(&s); /* plain: product, then the broadcast add */
  if (degenerate(&s) || small_product(&s)) return pb;
  int64_t rows = 0; /* set by kernel_for: two statements, as argument order is unspecified */
  hs_kernel *k = kernel_for(n, in, &s, &rows, NULL);
  return k ? hs_op_kernel_scratch(k, rows) : pb;
}

/* ---- plain path ------------------------------------------------------------------------------ */

/* y = A x B for MatMul, batch by batch. */
static void matmul_plain(const mm_shape *s, const float *A, const float *B, float *C) {
  int64_t batches = 1;
  for (int i = 0; i < s->rb; i++) batches *= s->bdims[i];
  int64_t idx[HS_MAX_DIMS] = {0};
  for (int64_t bt = 0; bt < batches; bt++) {
    int64_t oa = 0, ob = 0;
    for (int i = 0; i < s->rb; i++) {
      oa += idx[i] * s->sa[i];
      ob += idx[i] * s->sb[i];
    }
    hs_sgemm(s->M, s->N, s->K, A + oa * s->M * s->K, s->K, B + ob * s->K * s->N, s->N, C + bt * s->M * s->N, s->N, 0);
    for (int i = s->rb - 1; i >= 0; i--) {
      if (++idx[i] < s->bdims[i]) break;
      idx[i] = 0;
    }
  }
}

/* Y = alpha * op(A) x op(B) + beta * C for Gemm. */
static void gemm_plain(const hs_matmul_attrs *p, const mm_shape *s, const float *A, const float *B, const hs_tensor *C,
                       float *Y) {
  int64_t M = s->M, N = s->N, K = s->K;
  if (hs_kernel_sgemm(p->trans_a, p->trans_b, M, N, K, 1.0f, A, p->trans_a ? M : K, B, p->trans_b ? K : N, 0.0f, Y,
                      N) != 0) {
    /* the kernels layer's GEMM refused: plain loops */
    for (int64_t i = 0; i < M * N; i++) Y[i] = 0;
    for (int64_t i = 0; i < M; i++) {
      float *y = Y + i * N;
      for (int64_t k = 0; k < K; k++) {
        float a = p->trans_a ? A[k * M + i] : A[i * K + k];
        for (int64_t j = 0; j < N; j++) y[j] += a * (p->trans_b ? B[j * K + k] : B[k * N + j]);
      }
    }
  }
  int64_t cm = 0, cn = 0;
  if (C) {
    cm = C->ndim == 2 ? C->dims[0] : 1;
    cn = C->ndim >= 1 ? C->dims[C->ndim - 1] : 1;
  }
  const float *c = C ? C->data : NULL;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      float v = p->alpha * Y[i * N + j];
      if (c && p->beta != 0.0f) v += p->beta * c[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
      Y[i * N + j] = v;
    }
}

/* out = broadcast(y, r) where y has the product's shape s (output dims right-aligned, as numpy). */
static void broadcast_add(const mm_shape *s, const float *y, const hs_tensor *r, hs_tensor *out) {
  int nd = out->ndim;
  int64_t total = hs_numel(out);
  float *o = out->data;
  const float *rv = r->data;
  for (int64_t i = 0; i < total; i++) {
    int64_t rem = i, yo = 0, ro = 0, ys = 1, rs = 1;
    for (int d = nd - 1; d >= 0; d--) {
      int64_t idx = rem % out->dims[d];
      rem /= out->dims[d];
      int dy = d - (nd - s->ndim), dr = d - (nd - r->ndim);
      if (dy >= 0) {
        if (s->dims[dy] != 1) yo += idx * ys;
        ys *= s->dims[dy];
      }
      if (dr >= 0) {
        if (r->dims[dr] != 1) ro += idx * rs;
        rs *= r->dims[dr];
      }
    }
    o[i] = y[yo] + rv[ro];
  }
}

/* B for the plain path: the graph's (or the run's input), or (released) the holder's read back into
 * the front of scratch, which *rest then points past. */
static int plain_b(const hs_node *n, const hs_tensor *b, void *scratch, const float **out, void **rest,
                   hs_error *err) {
  const mm_state *st = n->state;
  *rest = scratch;
  if (!st || st->b) {
    *out = b->data;
    return 0;
  }
  if (!scratch) return hs_op_errf(err, n, HS_INTERNAL, "no scratch planned for B");
  int rc = hs_kernel_matmul_b(st->holder, scratch, st->b_bytes, err);
  if (rc) return hs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
  *out = scratch;
  *rest = (char *)scratch + plain_b_bytes(n);
  return 0;
}

static void plain_run(const hs_node *n, const mm_shape *s, const hs_tensor *in, int nin, const float *B,
                      hs_tensor *out, void *scratch) {
  const hs_matmul_attrs *a = attrs_of(n);
  const hs_tensor *r = residual_of(n, in, nin);
  int widen = r && !residual_is_own_shape(r, s);
  float *y = widen ? scratch : out[0].data;
  int64_t total = shape_numel(s);
  if (a->gemm) {
    const hs_tensor *C = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
    gemm_plain(a, s, in[0].data, B, C, y);
  } else {
    matmul_plain(s, in[0].data, B, y);
  }
  if (a->bias_input >= 0 && s->N > 0) {
    const mm_state *st = n->state;
    const float *bias = st && st->bias_released ? st->bias : in[a->bias_input].data; /* released: the kernel's */
    for (int64_t i = 0; i < total; i++) y[i] += bias[i % s->N];
  }
  if (!widen) {
    hs_post_apply(&a->post, y, r ? r->data : NULL, total);
    return;
  }
  /* the residual widens the output: post-ops before the sum apply to the product, the rest to the sum */
  hs_post_ops before = {0}, after = {0};
  int seen = 0;
  for (int i = 0; i < a->post.count; i++) {
    if (a->post.op[i].kind == HS_POST_SUM) seen = 1;
    else if (seen) after.op[after.count++] = a->post.op[i];
    else before.op[before.count++] = a->post.op[i];
  }
  hs_post_apply(&before, y, NULL, total);
  broadcast_add(s, y, r, &out[0]);
  hs_post_apply(&after, out[0].data, NULL, hs_numel(&out[0]));
}

static int mm_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  mm_shape s;
  int rc = node_shape(n, in, nin, &s, err);
  if (rc) return rc;
  const hs_tensor *r = residual_of(n, in, nin);
  if (!degenerate(&s) && !small_product(&s) && (!r || residual_is_own_shape(r, &s))) {
    hs_error kerr;
    hs_error_clear(&kerr);
    int64_t rows = 0;
    hs_kernel *k = kernel_for(n, in, &s, &rows, &kerr);
    if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
    if (k) {
      const void *src[1] = {in[0].data};
      hs_kernel_args args = {.batch = rows, .src = src, .nsrc = 1, .residual = r ? r->data : NULL,
                             .dst = out[0].data, .scratch = scratch};
      return hs_op_run_kernel(n, k, &args, err);
    }
  }
  const float *B = NULL;
  void *rest = NULL;
  if ((rc = plain_b(n, &in[1], scratch, &B, &rest, err))) return rc;
  plain_run(n, &s, in, nin, B, out, rest);
  return 0;
}

/* ---- attributes ------------------------------------------------------------------------------ */

static int matmul_check(hs_node *n, const hs_graph *g, hs_error *err) {
  attrs_init((hs_matmul_attrs *)n->params.bytes, 0);
  return hs_node_only_attrs(n, "", err);
}

static int gemm_check(hs_node *n, const hs_graph *g, hs_error *err) {
  hs_matmul_attrs *p = (hs_matmul_attrs *)n->params.bytes;
  attrs_init(p, 1);
  int64_t ta, tb;
  int rc;
  if ((rc = hs_node_only_attrs(n, n->opset < 7 ? "alpha,beta,transA,transB,broadcast" : "alpha,beta,transA,transB", err)))
    return rc;
  if ((rc = hs_attr_float(n, "alpha", 1.0f, &p->alpha, err)) || (rc = hs_attr_float(n, "beta", 1.0f, &p->beta, err)) ||
      (rc = hs_attr_int(n, "transA", 0, &ta, err)) || (rc = hs_attr_int(n, "transB", 0, &tb, err)))
    return rc;
  p->trans_a = ta != 0;
  p->trans_b = tb != 0;
  return 0;
}

/* Fusions MatMul and Gemm take: activations and a residual sum while the post-ops have room, and
 * (MatMul only) a constant bias before anything else is fused. */
static int mm_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  hs_matmul_attrs *a = (hs_matmul_attrs *)n->params.bytes;
  switch (f->kind) {
    case HS_FUSE_ACTIVATION:
      if (f->act.kind != HS_POST_ACT || !hs_post_ops_room(&a->post, hs_post_act_steps(f->act.act)))
        return HS_FUSE_REFUSED;
      if (!f->dry_run) a->post.op[a->post.count++] = f->act;
      return 0;
    case HS_FUSE_SUM:
      if (a->sum_input >= 0 || !hs_post_ops_room(&a->post, 1)) return HS_FUSE_REFUSED;
      if (!f->dry_run) {
        a->sum_input = f->input;
        hs_post_ops_add_sum(&a->post, 1.f);
      }
      return 0;
    case HS_FUSE_BIAS:
      if (a->gemm || a->bias_input >= 0 || a->sum_input >= 0 || a->post.count) return HS_FUSE_REFUSED;
      if (!f->dry_run) a->bias_input = f->input;
      return 0;
    default:
      return HS_FUSE_REFUSED;
  }
}

const hs_op_impl hs_op_impl_matmul = {
    .check = matmul_check,
    .infer = mm_infer,
    .prepare = mm_prepare,
    .scratch_bytes = mm_scratch,
    .run = mm_run,
    .fuse = mm_fuse,
};
const hs_op_impl hs_op_impl_gemm = {
    .check = gemm_check,
    .infer = mm_infer,
    .prepare = mm_prepare,
    .scratch_bytes = mm_scratch,
    .run = mm_run,
    .fuse = mm_fuse,
};

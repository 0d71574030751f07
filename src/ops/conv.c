/* conv.c - Conv and ConvTranspose: oneDNN kernels (via src/kernels) when weights are constants, plain C otherwise. */

/*
 * DESIGN
 * check() parses the attributes into hs_conv_attrs; the fusion passes then offer activations, a
 * residual sum and layouts, which conv_fuse() records there (post-ops of the kernel). prepare() runs once at load: when the weights
 * (and bias) are constants it gives the node a state holding a kernel cache; a kernel needs the
 * input's spatial shape, which is known only when a session plans, so scratch_bytes() (called while
 * planning) builds the kernel for that shape and run() finds it again without locking. Batch sizes
 * are variants of one kernel, so weights are reordered once per spatial shape. When no kernel can be
 * built (weights given at run time, as ONNX's node tests do, or an unsupported combination) run()
 * uses the plain-C convolution below, which honours the same fused post-ops and layouts.
 *
 * Weights are held once. The node's first kernel copies them from the graph; every later kernel
 * (another spatial shape) is made from the first one's (hs_conv_params.weights_from), sharing its
 * buffer when its implementation wants the same layout. At the end of compiling (after the trial
 * plans built the kernels for the load-time shapes) release_weights() lets the graph free its
 * ONNX-layout copy (hs_graph_release_const) when this node is its only reader; the state records
 * the first kernel as the holder. The plain-C path, when it still runs (a full kernel cache, a
 * residual that broadcasts), then reads the holder's weights back in ONNX's layout into its scratch
 * (hs_kernel_conv_weights). The state changes only while compiling, single-threaded; after that it
 * is read-only like the rest of the model.
 * Weights another loaded version's kernel already holds never get a graph copy: the decoder left
 * the value as a reference to that kernel (hs_value.ref, kernels/kshare.h), which is the holder from
 * the start; the first kernel is then that kernel itself when the parameters and bias agree
 * (hs_kshare_conv_from), or one built from its weights read back, and the reference goes at
 * release_weights() like a graph copy would.
 * The state is owned by the node and freed with the graph (node->free_state).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kernels/kcache.h"
#include "kernels/kshare.h"
#include "ops/conv.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

enum { HS_AUTOPAD_NOTSET = 0, HS_AUTOPAD_SAME_UPPER, HS_AUTOPAD_SAME_LOWER, HS_AUTOPAD_VALID };

/* Lives in hs_node.params of Conv and ConvTranspose nodes. */
typedef struct hs_conv_attrs {
  int transposed;
  int auto_pad;
  int nsp;                  /* spatial rank from the attributes, 0 when none gave it */
  int has_kernel, has_pads, has_output_shape;
  int64_t group;
  int64_t kernel[3], strides[3], dilations[3];
  int64_t pads[6];          /* begin[0..nsp), end[0..nsp) as ONNX lists them */
  int64_t output_padding[3], output_shape[3];
  /* Set by conv_fuse() when a pass fuses, never by the model file: */
  hs_post_ops post;         /* applied to the output in order */
  int sum_input;            /* node input index of the residual that a HS_POST_SUM adds, or -1 */
  hs_layout src_layout, dst_layout; /* physical layouts of input 0 and the output (logical shapes stay NCHW) */
  hs_layout res_layout;             /* physical layout of the fused residual */
  int dw_input;             /* a fused depthwise 3x3 Conv: node input of its weights (its bias next), or -1 */
  int64_t dw_stride;        /* its stride on both axes (padding 1 on every side) */
  hs_post_ops dw_post;      /* applied to its output, in order (post then applies before it) */
} hs_conv_attrs;

_Static_assert(sizeof(hs_conv_attrs) <= HS_CONV_ATTRS_BYTES && HS_CONV_ATTRS_BYTES <= HS_OP_PARAMS_BYTES,
               "conv attributes fit in hs_op_params, leaving room for qconv.c's own");

typedef struct conv_state {
  hs_kcache cache;
  const float *w;         /* the graph's weights, or NULL once released to `holder` */
  const float *b;         /* graph constant: lives as long as the model */
  const float *dww, *dwb; /* a fused depthwise Conv's weights and bias (graph constants, NULL: none); dww
                             may instead be a kernel's own copy: the one the graph's value refers to (until
                             release_weights), then the node's first kernel's; or dww_own */
  float *dww_own;         /* dww when the graph's value refers to another version's kernel that cannot lend them */
  size_t dww_own_bytes;
  size_t w_bytes;         /* size of the weights in ONNX's layout */
  const hs_kernel *holder; /* after the release: the cached kernel that holds the only copy; with
                              weights shared at decode time, the graph's reference until then */
} conv_state;

static const hs_conv_attrs *attrs_of(const hs_node *n) { return (const hs_conv_attrs *)n->params.bytes; }

static int read_ints(const hs_node *n, const char *name, int64_t *dst, int want, int *have, hs_error *err) {
  const int64_t *v;
  size_t cnt;
  int rc = hs_attr_ints(n, name, &v, &cnt, err);
  if (rc) return rc;
  *have = 0;
  if (!v) return 0;
  if ((int)cnt != want || cnt > 6)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attribute %s has %zu values, expected %d", name, cnt, want);
  memcpy(dst, v, sizeof(int64_t) * cnt);
  *have = 1;
  return 0;
}

static int conv_check_common(hs_node *n, int transposed, hs_error *err) {
  hs_conv_attrs *a = (hs_conv_attrs *)n->params.bytes;
  memset(a, 0, sizeof *a);
  a->transposed = transposed;
  a->sum_input = -1;
  a->dw_input = -1;
  int rc = hs_node_only_attrs(
      n, transposed ? "auto_pad,dilations,group,kernel_shape,output_padding,output_shape,pads,strides"
                    : "auto_pad,dilations,group,kernel_shape,pads,strides",
      err);
  if (rc) return rc;
  const char *ap;
  if ((rc = hs_attr_string(n, "auto_pad", "NOTSET", &ap, err))) return rc;
  if (!strcmp(ap, "NOTSET")) a->auto_pad = HS_AUTOPAD_NOTSET;
  else if (!strcmp(ap, "SAME_UPPER")) a->auto_pad = HS_AUTOPAD_SAME_UPPER;
  else if (!strcmp(ap, "SAME_LOWER")) a->auto_pad = HS_AUTOPAD_SAME_LOWER;
  else if (!strcmp(ap, "VALID")) a->auto_pad = HS_AUTOPAD_VALID;
  else return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "auto_pad '%s' is not valid", ap);
  if ((rc = hs_attr_int(n, "group", 1, &a->group, err))) return rc;
  if (a->group < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "group %lld", (long long)a->group);
  /* The spatial rank comes from the first list attribute present; the rest must agree. */
  const char *lists[] = {"kernel_shape", "strides", "dilations", "output_padding", "output_shape"};
  for (int i = 0; i < 5 && !a->nsp; i++) {
    const int64_t *v;
    size_t cnt;
    if ((rc = hs_attr_ints(n, lists[i], &v, &cnt, err))) return rc;
    if (v) a->nsp = (int)(cnt <= 3 ? cnt : 99);
  }
  if (!a->nsp) {
    const int64_t *v;
    size_t cnt;
    if ((rc = hs_attr_ints(n, "pads", &v, &cnt, err))) return rc;
    if (v) a->nsp = (int)(cnt % 2 == 0 && cnt <= 6 ? cnt / 2 : 99);
  }
  if (a->nsp > 3) return hs_op_errf(err, n, HS_UNSUPPORTED, "only 1 to 3 spatial dimensions are supported");
  int have, ns = a->nsp ? a->nsp : 0;
  for (int i = 0; i < 3; i++) a->strides[i] = a->dilations[i] = 1;
  if (ns) {
    if ((rc = read_ints(n, "kernel_shape", a->kernel, ns, &a->has_kernel, err))) return rc;
    if ((rc = read_ints(n, "strides", a->strides, ns, &have, err))) return rc;
    if ((rc = read_ints(n, "dilations", a->dilations, ns, &have, err))) return rc;
    if ((rc = read_ints(n, "pads", a->pads, 2 * ns, &a->has_pads, err))) return rc;
    if (transposed) {
      if ((rc = read_ints(n, "output_padding", a->output_padding, ns, &have, err))) return rc;
      if ((rc = read_ints(n, "output_shape", a->output_shape, ns, &a->has_output_shape, err))) return rc;
    }
  }
  for (int i = 0; i < ns; i++) {
    if (a->strides[i] < 1 || a->dilations[i] < 1 || (a->has_kernel && a->kernel[i] < 1))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "non-positive stride, dilation or kernel size");
    if (a->pads[i] < 0 || a->pads[ns + i] < 0 || a->output_padding[i] < 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "negative padding");
    if (a->strides[i] > (1 << 20) || a->dilations[i] > (1 << 20) || a->kernel[i] > (1 << 20) ||
        a->pads[i] > (1 << 20) || a->pads[ns + i] > (1 << 20) || a->output_padding[i] > (1 << 20))
      return hs_op_errf(err, n, HS_LIMIT, "stride, dilation, kernel or padding too large");
    if (transposed && a->output_padding[i] >= a->strides[i] && a->output_padding[i] >= a->dilations[i])
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output_padding must be smaller than stride or dilation");
  }
  a->src_layout = a->dst_layout = HS_LAYOUT_NCHW;
  return 0;
}

static int conv_check(hs_node *n, const hs_graph *g, hs_error *err) { return conv_check_common(n, 0, err); }
static int convt_check(hs_node *n, const hs_graph *g, hs_error *err) { return conv_check_common(n, 1, err); }

/* Shapes: x [N, C, spatial...], w [M, C/group, k...] (Conv) or [C, M/group, k...] (ConvTranspose). */
int hs_conv_shape_of(const hs_node *n, const hs_tensor *x, const hs_tensor *w, hs_conv_shape *g, hs_error *err) {
  const hs_conv_attrs *a = attrs_of(n);
  memset(g, 0, sizeof *g);
  if (x->ndim < 3 || x->ndim > 5) return hs_op_errf(err, n, HS_UNSUPPORTED, "input rank %d (3 to 5 supported)", x->ndim);
  if (w->ndim != x->ndim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "weights rank %d differs from input rank %d", w->ndim, x->ndim);
  int ns = x->ndim - 2;
  if (a->nsp && a->nsp != ns)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attributes give %d spatial dims, the input has %d", a->nsp, ns);
  g->nsp = ns;
  g->n = x->dims[0];
  g->in_c = x->dims[1];
  g->group = a->group;
  if (!a->transposed) {
    g->out_c = w->dims[0];
    if (w->dims[1] * a->group != g->in_c || g->out_c % a->group)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "channels (input %lld, weights %lldx%lld) do not match group %lld",
                        (long long)g->in_c, (long long)w->dims[0], (long long)w->dims[1], (long long)a->group);
  } else {
    if (w->dims[0] != g->in_c || g->in_c % a->group)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "weights' first dim %lld differs from input channels %lld",
                        (long long)w->dims[0], (long long)g->in_c);
    if (w->dims[1] > INT64_MAX / a->group) return hs_op_errf(err, n, HS_LIMIT, "too many output channels");
    g->out_c = w->dims[1] * a->group;
  }
  for (int i = 0; i < ns; i++) {
    g->in[i] = x->dims[2 + i];
    g->k[i] = w->dims[2 + i];
    if (a->has_kernel && a->kernel[i] != g->k[i])
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel_shape disagrees with the weights");
    g->s[i] = a->strides[i];
    g->d[i] = a->dilations[i];
    g->opad[i] = a->transposed ? a->output_padding[i] : 0;
    if (g->k[i] < 1 || g->k[i] > (1 << 20) || g->in[i] > ((int64_t)1 << 40))
      return hs_op_errf(err, n, HS_LIMIT, "kernel or input size out of range");
    int64_t span = (g->k[i] - 1) * g->d[i] + 1;
    if (!a->transposed) {
      if (a->auto_pad == HS_AUTOPAD_NOTSET) {
        g->pb[i] = a->pads[i];
        g->pe[i] = a->pads[ns + i];
      } else if (a->auto_pad == HS_AUTOPAD_SAME_UPPER || a->auto_pad == HS_AUTOPAD_SAME_LOWER) {
        int64_t out = (g->in[i] + g->s[i] - 1) / g->s[i];
        int64_t total = (out - 1) * g->s[i] + span - g->in[i];
        if (total < 0) total = 0;
        int64_t small = total / 2, big = total - small;
        g->pb[i] = a->auto_pad == HS_AUTOPAD_SAME_UPPER ? small : big;
        g->pe[i] = a->auto_pad == HS_AUTOPAD_SAME_UPPER ? big : small;
      }
      int64_t room = g->in[i] + g->pb[i] + g->pe[i] - span;
      if (room < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel larger than the padded input");
      g->out[i] = room / g->s[i] + 1;
    } else {
      int64_t full = g->s[i] * (g->in[i] - 1) + g->opad[i] + span;
      if (a->has_output_shape || a->auto_pad == HS_AUTOPAD_SAME_UPPER || a->auto_pad == HS_AUTOPAD_SAME_LOWER) {
        int64_t want = a->has_output_shape ? a->output_shape[i] : g->in[i] * g->s[i];
        /* total may be negative (output_shape asks for more than the full result): padding then
         * turns negative, as ONNX's reference computes it with floor division. */
        int64_t total = full - want;
        if (want < 1 || want > full + (1 << 20)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output_shape out of range");
        int64_t small = total >= 0 ? total / 2 : -((-total + 1) / 2), big = total - small;
        g->pb[i] = a->auto_pad == HS_AUTOPAD_SAME_UPPER ? small : big;
        g->pe[i] = a->auto_pad == HS_AUTOPAD_SAME_UPPER ? big : small;
      } else if (a->auto_pad == HS_AUTOPAD_NOTSET) {
        g->pb[i] = a->pads[i];
        g->pe[i] = a->pads[ns + i];
      }
      g->out[i] = full - g->pb[i] - g->pe[i];
      if (g->out[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "padding removes the whole output");
    }
  }
  return 0;
}

int hs_conv_parse_attrs(hs_node *n, hs_error *err) { return conv_check_common(n, 0, err); }

int hs_conv_out_dims(const hs_conv_shape *s, int64_t dims[5]) {
  dims[0] = s->n;
  dims[1] = s->out_c;
  for (int i = 0; i < s->nsp; i++) dims[2 + i] = s->out[i];
  return 2 + s->nsp;
}

static int residual_matches(const hs_tensor *r, const hs_tensor *y) {
  return r->ndim == y->ndim && memcmp(r->dims, y->dims, sizeof(int64_t) * (size_t)r->ndim) == 0;
}

/* 1 when the residual has exactly the convolution's own output shape (the fused fast path). */
static int residual_is_conv_shape(const hs_tensor *r, const hs_conv_shape *g) {
  if (r->ndim != 2 + g->nsp || r->dims[0] != g->n || r->dims[1] != g->out_c) return 0;
  for (int i = 0; i < g->nsp; i++)
    if (r->dims[2 + i] != g->out[i]) return 0;
  return 1;
}

/* Bytes of the convolution's own result (before a broadcasting residual widens it). */
static size_t conv_out_bytes(const hs_conv_shape *g) {
  size_t b = (size_t)g->n * (size_t)g->out_c * sizeof(float);
  for (int i = 0; i < g->nsp; i++) b *= (size_t)g->out[i];
  return b;
}

static int conv_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc;
  if ((rc = hs_need_dtype(n, &in[0], "X", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  if ((rc = hs_need_dtype(n, &in[1], "W", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  hs_conv_shape g;
  if ((rc = hs_conv_shape_of(n, &in[0], &in[1], &g, err))) return rc;
  if (nin > 2 && HS_PRESENT(&in[2])) {
    if ((rc = hs_need_dtype(n, &in[2], "B", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
    if (in[2].ndim != 1 || in[2].dims[0] != g.out_c)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bias must have %lld elements", (long long)g.out_c);
  }
  int64_t dims[5];
  int nd = hs_conv_out_dims(&g, dims);
  const hs_conv_attrs *a = attrs_of(n);
  if (a->dw_input >= 0) { /* a fused depthwise Conv: its weights [out_c, 1, 3, 3], its output's shape */
    const hs_tensor *dw = a->dw_input < nin ? &in[a->dw_input] : NULL;
    const hs_tensor *db = a->dw_input + 1 < nin && HS_PRESENT(&in[a->dw_input + 1]) ? &in[a->dw_input + 1] : NULL;
    if (!dw || dw->dtype != HS_DT_FLOAT32 || dw->ndim != 4 || dw->dims[0] != g.out_c || dw->dims[1] != 1 ||
        dw->dims[2] != 3 || dw->dims[3] != 3 || g.nsp != 2 ||
        (db && (db->dtype != HS_DT_FLOAT32 || db->ndim != 1 || db->dims[0] != g.out_c)))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused depthwise weights do not match %lld channels",
                        (long long)g.out_c);
    for (int i = 0; i < 2; i++) dims[2 + i] = (dims[2 + i] - 1) / a->dw_stride + 1;
  }
  if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, nd, dims, n, err))) return rc;
  if (a->sum_input >= 0) {
    /* A fused residual Add: the output is the numpy broadcast of the convolution and the residual
     * (almost always the convolution's own shape; anything else takes the plain-C path). */
    if (a->sum_input >= nin || in[a->sum_input].dtype != HS_DT_FLOAT32)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused residual must be float32");
    if (!residual_matches(&in[a->sum_input], &out[0])) {
      hs_tensor c = out[0];
      int r;
      int64_t bd[HS_MAX_DIMS];
      if ((rc = hs_broadcast_shape(&c, &in[a->sum_input], &r, bd, n, err))) return rc;
      /* the plain-C broadcast (residual_broadcast) indexes a layout the pass chose only on values of
       * the convolution's own rank, and 8-channel blocks only over whole blocks */
      int cn = 2 + g.nsp;
      if ((a->dst_layout != HS_LAYOUT_NCHW && r != cn) ||
          (a->res_layout != HS_LAYOUT_NCHW && in[a->sum_input].ndim != cn) ||
          (a->dst_layout == HS_LAYOUT_NCHW8C && bd[1] % 8 != 0) ||
          (a->res_layout == HS_LAYOUT_NCHW8C && in[a->sum_input].dims[1] % 8 != 0))
        return hs_op_errf(err, n, HS_UNSUPPORTED, "fused residual broadcasts to rank %d in a blocked layout", r);
      if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, r, bd, n, err))) return rc;
    }
  }
  return 0;
}

/* ---- oneDNN path ---- */

typedef struct build_ctx {
  const hs_node *n;
  const conv_state *st;
  const hs_conv_shape *g;
} build_ctx;

static int build_kernel(void *ctx, hs_kernel **out, hs_error *err) {
  const build_ctx *c = ctx;
  const hs_conv_attrs *a = attrs_of(c->n);
  const hs_conv_shape *g = c->g;
  hs_conv_params p = {0};
  p.device = HS_KDEV_CPU;
  p.src_layout = a->src_layout;
  p.dst_layout = a->dst_layout;
  p.res_layout = a->res_layout;
  p.transposed = a->transposed;
  p.nsp = g->nsp;
  p.batch = g->n;
  p.in_c = g->in_c;
  p.out_c = g->out_c;
  p.groups = g->group;
  for (int i = 0; i < g->nsp; i++) {
    p.in[i] = g->in[i];
    p.out[i] = g->out[i];
    p.kernel[i] = g->k[i];
    p.stride[i] = g->s[i];
    p.dilation[i] = g->d[i];
    p.pad_begin[i] = g->pb[i];
    p.pad_end[i] = g->pe[i] - g->opad[i];
  }
  p.bias = c->st->b;
  p.post = a->post;
  if (a->dw_input >= 0) {
    p.dw_weights = c->st->dww;
    p.dw_bias = c->st->dwb;
    p.dw_stride = a->dw_stride;
    p.dw_post = a->dw_post;
    for (int i = 0; i < 2; i++) p.dw_out[i] = (g->out[i] - 1) / a->dw_stride + 1;
  }
  /* Every kernel after the node's first takes its weights from the first (sharing its buffer when
   * the layout agrees), so the graph's copy is needed only once and can be released. This runs
   * under the cache's lock; slot 0, once counted, is published and stays for the model's life. */
  const hs_kcache *cache = &c->st->cache;
  if (atomic_load_explicit(&cache->n, memory_order_acquire) > 0) p.weights_from = hs_kcache_kernel(cache, 0);
  else if (c->st->w) p.weights = c->st->w;
  else if (c->st->holder) /* shared at decode time: the kernel holding these weights (kshare.h) */
    return hs_kshare_conv_from(&p, c->st->holder, out, NULL, err);
  if (!p.weights && !p.weights_from) return hs_error_set(err, HS_INTERNAL, "conv: the weights were released");
  /* a kernel with the same content another version built is shared, not rebuilt (kshare.h) */
  return hs_kshare_conv(&p, out, NULL, err);
}

/* The kernel for these shapes, or NULL when the plain-C path must run (opkernel.h). Weights given
 * at run time (ONNX's node tests) have no state and always take plain C. */
static hs_kernel *kernel_for(const hs_node *n, const hs_conv_shape *g, hs_error *strict_err) {
  conv_state *st = n->state;
  if (!st) {
    HS_LOGD("node '%s' (%s): weights given at run time, using plain C", n->name, n->op_type);
    return NULL;
  }
  int64_t key[8] = {g->in_c};
  for (int i = 0; i < g->nsp; i++) key[1 + i] = g->in[i];
  build_ctx c = {n, st, g};
  /* the batch is a variant of the kernel built for the first batch seen */
  return hs_op_kernel(n, &st->cache, key, 1 + g->nsp, build_kernel, &c, g->n, strict_err);
}

static void free_state(void *p) {
  conv_state *st = p;
  if (!st) return;
  hs_kcache_destroy(&st->cache);
  free(st->dww_own);
  free(st);
}

/* hs_node.release_consts (see ir.h): runs once at the end of compiling, single-threaded. When a
 * kernel holds the weights and no other node reads them, the graph's copy goes. */
static void release_weights(hs_node *n, hs_graph *g) {
  conv_state *st = n->state;
  hs_value *w = &g->values[n->in[1]];
  const hs_conv_attrs *a = attrs_of(n);
  if (st && st->dww && a->dw_input >= 0 && g->values[n->in[a->dw_input]].n_uses == 1) {
    /* The fused depthwise weights: the node's first kernel holds a copy of its own (the graph's or
     * the referenced kernel's are then not needed), read there; with no kernel yet, the graph keeps
     * them. A reference another version's kernel could not lend them through was copied. */
    const hs_value *dw = &g->values[n->in[a->dw_input]];
    const float *held = atomic_load_explicit(&st->cache.n, memory_order_acquire) > 0
                            ? hs_kernel_conv_dw_weights(hs_kcache_kernel(&st->cache, 0), dw->nbytes)
                            : NULL;
    if (held) {
      st->dww = held;
      free(st->dww_own);
      st->dww_own = NULL;
    }
    if (held || st->dww_own) hs_graph_release_const(g, n->in[a->dw_input]);
  }
  if (!st || w->n_uses != 1) return; /* shared: the graph keeps them */
  int by_ref = !st->w && w->ref && st->holder == w->ref; /* shared at decode time */
  if (!by_ref && (!st->w || w->data != st->w)) return;
  int have = atomic_load_explicit(&st->cache.n, memory_order_acquire);
  if (have < 1) return; /* no kernel yet (the trial plans took plain C): keep them for the first one */
  st->holder = hs_kcache_kernel(&st->cache, 0);
  st->w = NULL;
  hs_graph_release_const(g, n->in[1]);
  HS_LOGD("node '%s' (%s): %zu bytes of weights now held by its kernel only", n->name, n->op_type, st->w_bytes);
}

static int conv_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const hs_value *w = &g->values[n->in[1]];
  const hs_value *b = n->n_in > 2 && n->in[2] >= 0 ? &g->values[n->in[2]] : NULL;
  const hs_conv_attrs *a = attrs_of(n);
  const hs_value *dw = a->dw_input >= 0 ? &g->values[n->in[a->dw_input]] : NULL;
  const hs_value *db = dw && n->in[a->dw_input + 1] >= 0 ? &g->values[n->in[a->dw_input + 1]] : NULL;
  if (w->kind != HS_VAL_CONST || w->dtype != HS_DT_FLOAT32 || (!w->data && !w->ref) ||
      (b && (b->kind != HS_VAL_CONST || b->dtype != HS_DT_FLOAT32)) ||
      (dw && (dw->kind != HS_VAL_CONST || (!dw->data && !dw->ref))) ||
      (db && (db->kind != HS_VAL_CONST || !db->data)))
    return 0; /* weights at run time: plain C */
  conv_state *st = calloc(1, sizeof *st);
  if (!st) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  hs_kcache_init(&st->cache);
  st->w = w->data;
  if (!w->data) st->holder = w->ref; /* shared at decode time (engine.c): a kernel holds them */
  st->w_bytes = w->nbytes;
  st->b = b ? b->data : NULL;
  st->dww = dw ? dw->data : NULL;
  st->dwb = db ? db->data : NULL;
  if (dw && !dw->data) /* shared at decode time: read in the kernel holding them, which the reference keeps */
    st->dww = hs_kernel_conv_dw_weights(dw->ref, dw->nbytes);
  if (dw && !st->dww) { /* a kernel that cannot lend them writes them back (small) */
    st->dww_own_bytes = dw->nbytes;
    int rc = (st->dww_own = malloc(dw->nbytes)) ? hs_kernel_conv_weights(dw->ref, st->dww_own, dw->nbytes, err)
                                                 : hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
    st->dww = st->dww_own;
    if (rc) {
      free_state(st);
      return hs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
    }
  }
  n->state = st;
  n->free_state = free_state;
  n->release_consts = release_weights;
  return 0;
}

int hs_conv_fused_dw_weights(const hs_node *n, size_t *copied) {
  const conv_state *st = n->state;
  if (copied) *copied = st && st->dww_own ? st->dww_own_bytes : 0;
  return attrs_of(n)->dw_input;
}

size_t hs_conv_weight_bytes(const hs_node *n) {
  const conv_state *st = n->state;
  if (!st) return 0;
  size_t total = 0;
  int have = atomic_load_explicit(&st->cache.n, memory_order_acquire);
  for (int i = 0; i < have; i++) total += hs_kernel_conv_owned_weight_bytes(hs_kcache_kernel(&st->cache, i));
  return total;
}

/* Bytes the plain-C path needs in front of its other scratch for the weights (0 while the graph
 * holds them). */
static size_t plain_weights_bytes(const hs_node *n) {
  const conv_state *st = n->state;
  return st && !st->w ? (st->w_bytes + 63) & ~(size_t)63 : 0;
}

static size_t conv_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  hs_conv_shape g;
  hs_error e;
  if (hs_conv_shape_of(n, &in[0], &in[1], &g, &e)) return 0;
  const hs_conv_attrs *a = attrs_of(n);
  if (a->sum_input >= 0 && a->sum_input < nin && !residual_is_conv_shape(&in[a->sum_input], &g))
    return plain_weights_bytes(n) + conv_out_bytes(&g); /* plain C: conv to scratch, then the broadcast add */
  hs_kernel *k = kernel_for(n, &g, NULL);
  if (k) return hs_op_kernel_scratch(k, g.n);
  /* plain C zeroes its output first: a residual the planner put in that buffer is saved here; a
   * fused depthwise Conv reads the 1x1 result from there */
  return plain_weights_bytes(n) + (a->sum_input >= 0 || a->dw_input >= 0 ? conv_out_bytes(&g) : 0);
}

/* hs_op_impl.inplace_input: a fused residual of the convolution's own shape, stored in the output's
 * layout, may be the output's buffer; the kernel's sum post-op then accumulates into it without
 * copying it first (docs/KERNELS.md, "Convolutional speed levers"). */
static int conv_inplace_input(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  const hs_conv_attrs *a = attrs_of(n);
  hs_conv_shape g;
  hs_error e;
  if (a->transposed || a->sum_input < 1 || a->sum_input >= nin || nout < 1 || a->res_layout != a->dst_layout)
    return -1;
  const hs_tensor *r = &in[a->sum_input];
  if (hs_conv_shape_of(n, &in[0], &in[1], &g, &e) || !residual_is_conv_shape(r, &g) || !residual_matches(r, &out[0]) ||
      r->dtype != out[0].dtype || r->nbytes != out[0].nbytes)
    return -1;
  return a->sum_input;
}

/* The weights in ONNX's layout for the plain-C path: the graph's, the run's input, or (released)
 * the holder's written into the front of scratch, which *rest then points past. */
static int plain_weights(const hs_node *n, const hs_tensor *w, void *scratch, const float **out, void **rest,
                         hs_error *err) {
  const conv_state *st = n->state;
  *rest = scratch;
  if (!st || st->w) {
    *out = w->data;
    return 0;
  }
  size_t pad = plain_weights_bytes(n);
  if (!scratch) return hs_op_errf(err, n, HS_INTERNAL, "no scratch planned for the weights");
  int rc = hs_kernel_conv_weights(st->holder, scratch, st->w_bytes, err);
  if (rc) return hs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
  *out = scratch;
  *rest = (char *)scratch + pad;
  return 0;
}

/* ---- plain C ---- */

/* Offset of element (b, c, spatial index s) of an activation with C channels and S spatial elements. */
static inline int64_t act_off(hs_layout l, int64_t C, int64_t S, int64_t b, int64_t c, int64_t s) {
  if (l == HS_LAYOUT_NHWC) return (b * S + s) * C + c;
  if (l == HS_LAYOUT_NCHW8C) return ((b * (C / 8) + c / 8) * S + s) * 8 + (c % 8);
  return (b * C + c) * S + s;
}

/* The convolution in plain C, y written in layout yl (the node's dst_layout, or NCHW for a scratch
 * result). */
static void conv_reference(const hs_node *n, const hs_conv_shape *g, const float *x, const float *w, const float *bias,
                           const hs_post_ops *post, const float *res, hs_layout yl, float *y) {
  const hs_conv_attrs *a = attrs_of(n);
  int64_t in3[3] = {1, 1, 1}, out3[3] = {1, 1, 1}, k3[3] = {1, 1, 1}, s3[3] = {1, 1, 1}, d3[3] = {1, 1, 1},
          p3[3] = {0, 0, 0};
  int off = 3 - g->nsp;
  for (int i = 0; i < g->nsp; i++) {
    in3[off + i] = g->in[i];
    out3[off + i] = g->out[i];
    k3[off + i] = g->k[i];
    s3[off + i] = g->s[i];
    d3[off + i] = g->d[i];
    p3[off + i] = g->pb[i];
  }
  int64_t G = g->group, icg = g->in_c / G, ocg = g->out_c / G;
  int64_t isz = in3[0] * in3[1] * in3[2], osz = out3[0] * out3[1] * out3[2], ksz = k3[0] * k3[1] * k3[2];
  hs_layout xl = a->src_layout;
  int64_t total = g->n * g->out_c * osz;
  memset(y, 0, sizeof(float) * (size_t)total);
  for (int64_t b = 0; b < g->n; b++)
    for (int64_t gr = 0; gr < G; gr++)
      for (int64_t oc = 0; oc < ocg; oc++)
        for (int64_t ic = 0; ic < icg; ic++) {
          int64_t ci = gr * icg + ic, co = gr * ocg + oc;
          const float *wk = a->transposed ? w + ((gr * icg + ic) * ocg + oc) * ksz : w + ((gr * ocg + oc) * icg + ic) * ksz;
          for (int64_t kd = 0; kd < k3[0]; kd++)
            for (int64_t kh = 0; kh < k3[1]; kh++)
              for (int64_t kw = 0; kw < k3[2]; kw++) {
                float wv = wk[(kd * k3[1] + kh) * k3[2] + kw];
                if (!a->transposed) {
                  for (int64_t od = 0; od < out3[0]; od++) {
                    int64_t id = od * s3[0] - p3[0] + kd * d3[0];
                    if (id < 0 || id >= in3[0]) continue;
                    for (int64_t oh = 0; oh < out3[1]; oh++) {
                      int64_t ih = oh * s3[1] - p3[1] + kh * d3[1];
                      if (ih < 0 || ih >= in3[1]) continue;
                      for (int64_t ow = 0; ow < out3[2]; ow++) {
                        int64_t iw = ow * s3[2] - p3[2] + kw * d3[2];
                        if (iw < 0 || iw >= in3[2]) continue;
                        int64_t si = (id * in3[1] + ih) * in3[2] + iw, so = (od * out3[1] + oh) * out3[2] + ow;
                        y[act_off(yl, g->out_c, osz, b, co, so)] += wv * x[act_off(xl, g->in_c, isz, b, ci, si)];
                      }
                    }
                  }
                } else {
                  for (int64_t id = 0; id < in3[0]; id++) {
                    int64_t od = id * s3[0] - p3[0] + kd * d3[0];
                    if (od < 0 || od >= out3[0]) continue;
                    for (int64_t ih = 0; ih < in3[1]; ih++) {
                      int64_t oh = ih * s3[1] - p3[1] + kh * d3[1];
                      if (oh < 0 || oh >= out3[1]) continue;
                      for (int64_t iw = 0; iw < in3[2]; iw++) {
                        int64_t ow = iw * s3[2] - p3[2] + kw * d3[2];
                        if (ow < 0 || ow >= out3[2]) continue;
                        int64_t si = (id * in3[1] + ih) * in3[2] + iw, so = (od * out3[1] + oh) * out3[2] + ow;
                        y[act_off(yl, g->out_c, osz, b, co, so)] += wv * x[act_off(xl, g->in_c, isz, b, ci, si)];
                      }
                    }
                  }
                }
              }
        }
  if (bias)
    for (int64_t b = 0; b < g->n; b++)
      for (int64_t c = 0; c < g->out_c; c++)
        for (int64_t s = 0; s < osz; s++) y[act_off(yl, g->out_c, osz, b, c, s)] += bias[c];
  if (!res || a->res_layout == yl) {
    hs_post_apply(post, y, res, total);
    return;
  }
  /* the residual is stored in another layout: add it element by element at the SUM step */
  hs_post_ops part = {0};
  for (int i = 0; i <= post->count; i++) {
    if (i < post->count && post->op[i].kind != HS_POST_SUM) {
      part.op[part.count++] = post->op[i];
      continue;
    }
    hs_post_apply(&part, y, NULL, total);
    part.count = 0;
    if (i == post->count) break;
    float sc = post->op[i].scale == 0.f ? 1.f : post->op[i].scale;
    for (int64_t b = 0; b < g->n; b++)
      for (int64_t c = 0; c < g->out_c; c++)
        for (int64_t s = 0; s < osz; s++)
          y[act_off(yl, g->out_c, osz, b, c, s)] += sc * res[act_off(a->res_layout, g->out_c, osz, b, c, s)];
  }
}

/* A fused depthwise 3x3 Conv (padding 1, stride dw_stride) of the 1x1 result x (NCHW, g's output
 * shape), its post-ops after, into y in the node's dst_layout. */
static void dw_reference(const hs_node *n, const hs_conv_shape *g, const float *x, const float *w, const float *bias,
                         float *y) {
  const hs_conv_attrs *a = attrs_of(n);
  int64_t C = g->out_c, H = g->out[0], W = g->out[1], s = a->dw_stride;
  int64_t OH = (H - 1) / s + 1, OW = (W - 1) / s + 1;
  for (int64_t b = 0; b < g->n; b++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          float acc = bias ? bias[c] : 0.f;
          for (int64_t kh = 0; kh < 3; kh++)
            for (int64_t kw = 0; kw < 3; kw++) {
              int64_t ih = oh * s - 1 + kh, iw = ow * s - 1 + kw;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                acc += w[c * 9 + kh * 3 + kw] * x[((b * C + c) * H + ih) * W + iw];
            }
          y[act_off(a->dst_layout, C, OH * OW, b, c, oh * OW + ow)] = acc;
        }
  hs_post_apply(&a->dw_post, y, NULL, g->n * C * OH * OW);
}

/* Offset of the element at logical index idx (rank nd) of a tensor with dims in layout l; a layout
 * other than NCHW is only ever given for tensors of the convolution's rank (conv_infer). */
static int64_t layout_off(hs_layout l, int nd, const int64_t *dims, const int64_t *idx) {
  int64_t off = 0;
  if (l == HS_LAYOUT_NCHW || nd < 3) {
    for (int d = 0; d < nd; d++) off = off * dims[d] + idx[d];
    return off;
  }
  int64_t S = 1, s = 0;
  for (int d = 2; d < nd; d++) {
    S *= dims[d];
    s = s * dims[d] + idx[d];
  }
  return act_off(l, dims[1], S, idx[0], idx[1], s);
}

/* y = broadcast(conv, residual) for a fused Add whose residual has another shape: the convolution
 * goes to scratch in NCHW, then each output element is the sum read through the residual's and the
 * output's layouts (the layout pass may keep either channels-last); post-ops before the sum apply to
 * the convolution, the rest to the sum. */
static void residual_broadcast(const hs_node *n, const hs_conv_shape *g, const hs_tensor *in, int nin, const float *w,
                               hs_tensor *out, float *tmp) {
  const hs_conv_attrs *a = attrs_of(n);
  hs_post_ops before = {0}, after = {0};
  int seen = 0;
  for (int i = 0; i < a->post.count; i++) {
    if (a->post.op[i].kind == HS_POST_SUM) seen = 1;
    else if (seen) after.op[after.count++] = a->post.op[i];
    else before.op[before.count++] = a->post.op[i];
  }
  const float *bias = nin > 2 && HS_PRESENT(&in[2]) ? in[2].data : NULL;
  conv_reference(n, g, in[0].data, w, bias, &before, NULL, HS_LAYOUT_NCHW, tmp);
  int64_t cd[5] = {g->n, g->out_c};
  for (int i = 0; i < g->nsp; i++) cd[2 + i] = g->out[i];
  const hs_tensor *r = &in[a->sum_input];
  int nd = out[0].ndim, cn = 2 + g->nsp;
  int64_t total = hs_numel(&out[0]);
  float *y = out[0].data;
  const float *rv = r->data;
  int64_t idx[HS_MAX_DIMS], ri[HS_MAX_DIMS];
  for (int64_t i = 0; i < total; i++) {
    int64_t rem = i, co = 0, cs = 1;
    for (int d = nd - 1; d >= 0; d--) {
      idx[d] = rem % out[0].dims[d];
      rem /= out[0].dims[d];
      int dc = d - (nd - cn), dr = d - (nd - r->ndim);
      if (dc >= 0) {
        if (cd[dc] != 1) co += idx[d] * cs;
        cs *= cd[dc];
      }
      if (dr >= 0) ri[dr] = r->dims[dr] != 1 ? idx[d] : 0;
    }
    y[layout_off(a->dst_layout, nd, out[0].dims, idx)] = tmp[co] + rv[layout_off(a->res_layout, r->ndim, r->dims, ri)];
  }
  hs_post_apply(&after, y, NULL, total);
}

static int conv_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  const hs_conv_attrs *a = attrs_of(n);
  hs_conv_shape g;
  int rc = hs_conv_shape_of(n, &in[0], &in[1], &g, err);
  if (rc) return rc;
  const float *res = a->sum_input >= 0 && a->sum_input < nin ? in[a->sum_input].data : NULL;
  const float *w;
  void *rest;
  if (res && !residual_is_conv_shape(&in[a->sum_input], &g)) {
    if ((rc = plain_weights(n, &in[1], scratch, &w, &rest, err))) return rc;
    residual_broadcast(n, &g, in, nin, w, out, rest);
    return 0;
  }
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = kernel_for(n, &g, &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) {
    const void *src[1] = {in[0].data};
    hs_kernel_args args = {.batch = g.n, .src = src, .nsrc = 1, .residual = res, .dst = out[0].data, .scratch = scratch};
    return hs_op_run_kernel(n, k, &args, err);
  }
  if ((rc = plain_weights(n, &in[1], scratch, &w, &rest, err))) return rc;
  if (res && res == out[0].data) { /* in place (conv_inplace_input): keep the residual from the zeroing */
    if (!rest) return hs_op_errf(err, n, HS_INTERNAL, "no scratch planned for the residual");
    memcpy(rest, res, conv_out_bytes(&g));
    res = rest;
  }
  const float *bias = nin > 2 && HS_PRESENT(&in[2]) ? in[2].data : NULL;
  if (a->dw_input >= 0) { /* the 1x1 result in NCHW in scratch, then the depthwise Conv */
    if (!rest) return hs_op_errf(err, n, HS_INTERNAL, "no scratch planned for the depthwise input");
    conv_reference(n, &g, in[0].data, w, bias, &a->post, NULL, HS_LAYOUT_NCHW, rest);
    const float *db = a->dw_input + 1 < nin && HS_PRESENT(&in[a->dw_input + 1]) ? in[a->dw_input + 1].data : NULL;
    const conv_state *st = n->state; /* its copy when the graph's value is a reference (conv_prepare) */
    dw_reference(n, &g, rest, st && st->dww ? st->dww : in[a->dw_input].data, db, out[0].data);
    return 0;
  }
  conv_reference(n, &g, in[0].data, w, bias, &a->post, res, a->dst_layout, out[0].data);
  return 0;
}

/* Fusions a Conv takes: activations (ConvTranspose too), then for Conv a residual sum, the
 * per-channel affine of a folded BatchNormalization (only while nothing is fused; ConvTranspose too
 * when it has one group), and layouts. */
static int conv_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  hs_conv_attrs *a = (hs_conv_attrs *)n->params.bytes;
  switch (f->kind) {
    case HS_FUSE_ACTIVATION: { /* after a fused depthwise Conv: on its output */
      hs_post_ops *post = a->dw_input >= 0 ? &a->dw_post : &a->post;
      if (f->act.kind != HS_POST_ACT || !hs_post_ops_room(post, hs_post_act_steps(f->act.act))) return HS_FUSE_REFUSED;
      if (!f->dry_run) post->op[post->count++] = f->act;
      return 0;
    }
    case HS_FUSE_DEPTHWISE: /* a 1x1 Conv (the pass checks its weights), one group, stride 1, unpadded, no sum */
      if (a->transposed || a->dw_input >= 0 || a->sum_input >= 0 || a->group != 1 || (a->nsp != 2 && a->nsp != 0) ||
          (a->has_kernel && (a->kernel[0] != 1 || a->kernel[1] != 1)) ||
          (a->auto_pad != HS_AUTOPAD_NOTSET && a->auto_pad != HS_AUTOPAD_VALID) || (f->stride != 1 && f->stride != 2))
        return HS_FUSE_REFUSED;
      for (int i = 0; i < 2; i++)
        if (a->strides[i] != 1 || a->dilations[i] != 1 || a->pads[i] || a->pads[2 + i]) return HS_FUSE_REFUSED;
      if (!f->dry_run) {
        a->dw_input = f->input;
        a->dw_stride = f->stride;
      }
      return 0;
    case HS_FUSE_SUM:
      if (a->transposed || a->sum_input >= 0 || a->dw_input >= 0 || a->post.count >= HS_KERNEL_MAX_POST)
        return HS_FUSE_REFUSED;
      if (!f->dry_run) {
        a->sum_input = f->input;
        hs_post_ops_add_sum(&a->post, 1.f);
      }
      return 0;
    case HS_FUSE_CHANNEL_AFFINE:
      /* ConvTranspose with one group: its weights [C, O, k...] scale along axis 1 (pass_fuse_conv.c) */
      return (a->transposed && a->group != 1) || a->post.count || a->sum_input >= 0 || a->dw_input >= 0
                 ? HS_FUSE_REFUSED
                 : 0;
    case HS_FUSE_LAYOUT: /* ConvTranspose too: the layout pass offers it only with one group */
      if (!f->dry_run) {
        a->src_layout = f->src;
        a->dst_layout = f->dst;
        a->res_layout = f->res;
      }
      return 0;
    default:
      return HS_FUSE_REFUSED;
  }
}

const hs_op_impl hs_op_impl_conv = {
    .check = conv_check,
    .infer = conv_infer,
    .prepare = conv_prepare,
    .scratch_bytes = conv_scratch,
    .run = conv_run,
    .fuse = conv_fuse,
    .inplace_input = conv_inplace_input,
};
const hs_op_impl hs_op_impl_conv_transpose = {
    .check = convt_check,
    .infer = conv_infer,
    .prepare = conv_prepare,
    .scratch_bytes = conv_scratch,
    .run = conv_run,
    .fuse = conv_fuse,
};

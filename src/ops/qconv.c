/* qconv.c - QLinearConv and ConvInteger: oneDNN's int8 convolution when the weights are constants, plain C otherwise. */

/*
 * DESIGN
 * Both ops convolve integer tensors as Conv does (Conv's attributes and geometry: conv.h) and
 * accumulate (x - x_zp) * (w - w_zp) in int32. ConvInteger returns the int32 sums; QLinearConv adds
 * its int32 bias B, multiplies by x_scale * w_scale[c] / y_scale in float32, rounds half to even,
 * adds y_zp and saturates to y's type, as ONNX Runtime computes it. x_zp, x_scale, y_scale, y_zp are
 * per tensor; w_scale and w_zp per tensor or per output channel.
 * prepare() gives a QLinearConv whose weights, scales and zero points are graph constants, with int8
 * weights of zero point 0, a state with a kernel cache: the kernel (src/kernels qconv: VNNI on CPUs
 * that have it) is built per input spatial shape while planning (batch sizes are its variants), as
 * Conv does. Every other case (weights given at run time, uint8 weights, a weight zero point) runs
 * the plain-C reference below, which also serves as the kernel's reference in the tests. The QDQ
 * pass (engine/pass_qdq.c) writes QLinearConv nodes for DequantizeLinear -> Conv -> QuantizeLinear.
 * The weights are held once, as Conv's are: at the end of compiling (after the trial plans built the kernels
 * for the load-time shapes) release_weights() frees the graph's copy when this node alone reads it and a
 * kernel holds it; the state records that kernel as the holder. A kernel for another spatial shape is then
 * made from the weights read back (hs_kernel_qconv_weights, exact), and the plain C, when it still runs
 * (a full kernel cache), reads them back into the front of its scratch. The state changes only while
 * compiling, single-threaded.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kernels/kcache.h"
#include "ops/conv.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

/* Input positions. */
enum { QX = 0, QXS = 1, QXZ = 2, QW = 3, QWS = 4, QWZ = 5, QYS = 6, QYZ = 7, QB = 8, QR = 9, QRS = 10, QRZ = 11 };

typedef struct qconv_state {
  hs_kcache cache;
  const int8_t *w;  /* graph constant, or NULL once released to `holder` */
  const hs_kernel *holder; /* after the release: the cached kernel (slot 0) holding the only copy */
  size_t w_bytes;   /* the weights' size, as the graph gave them */
  float *scales;    /* nscales output scales: x_scale * w_scale[c] / y_scale */
  float *bias;      /* B as float (exact below 2^24), or NULL */
  int nscales;
  int32_t xzp, yzp;
  hs_qtype xt, yt;
  int sum;          /* fused residual: r_scale / y_scale, r_zp, r's type */
  float sum_scale;
  int32_t sum_zp;
  hs_qtype sum_type;
} qconv_state;

/* Set by the QDQ pass through fuse() (HS_FUSE_LAYOUT), never by the model file; lives in n->params
 * after Conv's attributes. */
typedef struct qconv_fused {
  hs_layout src_layout, dst_layout; /* physical layouts of x and y: NCHW or NHWC (shapes stay NCHW) */
  int sum_input;                    /* HS_FUSE_SUM: inputs QR.. hold (r_q, r_scale, r_zp) of a residual
                                       added before y is quantized; -1 when none */
} qconv_fused;
_Static_assert(HS_CONV_ATTRS_BYTES + sizeof(qconv_fused) <= HS_OP_PARAMS_BYTES, "qconv params fit in the node");

static qconv_fused *fused_of(hs_node *n) { return (qconv_fused *)(n->params.bytes + HS_CONV_ATTRS_BYTES); }
static const qconv_fused *fused_of_c(const hs_node *n) {
  return (const qconv_fused *)(n->params.bytes + HS_CONV_ATTRS_BYTES);
}

static int qconv_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  memset(fused_of(n), 0, sizeof(qconv_fused));
  fused_of(n)->src_layout = fused_of(n)->dst_layout = HS_LAYOUT_NCHW;
  fused_of(n)->sum_input = -1;
  return hs_conv_parse_attrs(n, err);
}

/* QLinearConv only: layouts (NCHW or NHWC for x and y), and a residual sum whose (r_q, r_scale, r_zp)
 * the pass placed at inputs QR, QRS, QRZ (the residual is read in y's layout). */
static int qconv_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  (void)err;
  if (n->op != HS_OP_QLinearConv) return HS_FUSE_REFUSED;
  if (f->kind == HS_FUSE_SUM) {
    if (f->input != QR || fused_of(n)->sum_input >= 0) return HS_FUSE_REFUSED;
    if (!f->dry_run) fused_of(n)->sum_input = QR;
    return 0;
  }
  if (f->kind != HS_FUSE_LAYOUT) return HS_FUSE_REFUSED;
  if ((f->src != HS_LAYOUT_NCHW && f->src != HS_LAYOUT_NHWC) || (f->dst != HS_LAYOUT_NCHW && f->dst != HS_LAYOUT_NHWC))
    return HS_FUSE_REFUSED;
  if (!f->dry_run) {
    fused_of(n)->src_layout = f->src;
    fused_of(n)->dst_layout = f->dst;
  }
  return 0;
}

static int int8ish(hs_dtype t) { return t == HS_DT_INT8 || t == HS_DT_UINT8; }

/* Input positions of x, w and their zero points for either op (-1: absent). */
static void positions(const hs_node *n, int nin, const hs_tensor *in, int *x, int *w, int *xz, int *wz) {
  int ql = n->op == HS_OP_QLinearConv;
  *x = 0;
  *w = ql ? QW : 1;
  *xz = ql ? QXZ : 2;
  *wz = ql ? QWZ : 3;
  if (*xz >= nin || !HS_PRESENT(&in[*xz])) *xz = -1;
  if (*wz >= nin || !HS_PRESENT(&in[*wz])) *wz = -1;
}

static int qconv_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  int x, w, xz, wz, rc;
  positions(n, nin, in, &x, &w, &xz, &wz);
  if (!int8ish(in[x].dtype) || !int8ish(in[w].dtype))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "x and w must be int8 or uint8");
  hs_conv_shape s;
  if ((rc = hs_conv_shape_of(n, &in[x], &in[w], &s, err))) return rc;
  if (xz >= 0 && (in[xz].dtype != in[x].dtype || hs_numel(&in[xz]) != 1))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "x_zero_point must be one value of x's type");
  if (wz >= 0 && (in[wz].dtype != in[w].dtype || (hs_numel(&in[wz]) != 1 && hs_numel(&in[wz]) != s.out_c)))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "w_zero_point must be w's type, per tensor or per output channel");
  hs_dtype yt = HS_DT_INT32;
  if (n->op == HS_OP_QLinearConv) {
    if (in[QXS].dtype != HS_DT_FLOAT32 || hs_numel(&in[QXS]) != 1 || in[QYS].dtype != HS_DT_FLOAT32 ||
        hs_numel(&in[QYS]) != 1 || in[QWS].dtype != HS_DT_FLOAT32 ||
        (hs_numel(&in[QWS]) != 1 && hs_numel(&in[QWS]) != s.out_c))
      return hs_op_errf(err, n, HS_UNSUPPORTED, "scales must be float32, per tensor (w: or per output channel)");
    if (!int8ish(in[QYZ].dtype) || hs_numel(&in[QYZ]) != 1)
      return hs_op_errf(err, n, HS_UNSUPPORTED, "y_zero_point must be one int8 or uint8");
    if (nin > QB && HS_PRESENT(&in[QB]) && (in[QB].dtype != HS_DT_INT32 || hs_numel(&in[QB]) != s.out_c))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "B must be int32 with %lld values", (long long)s.out_c);
    yt = in[QYZ].dtype;
    if (fused_of_c(n)->sum_input >= 0) {
      if (nin <= QRZ || !int8ish(in[QR].dtype) || in[QRS].dtype != HS_DT_FLOAT32 || hs_numel(&in[QRS]) != 1 ||
          in[QRZ].dtype != in[QR].dtype || hs_numel(&in[QRZ]) != 1)
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused residual must be int8 / uint8, per tensor");
      int64_t want = s.n * s.out_c;
      for (int i = 0; i < s.nsp; i++) want *= s.out[i];
      if (hs_numel(&in[QR]) != want || in[QR].ndim != 2 + s.nsp)
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "fused residual must have the output's shape");
    }
  }
  int64_t dims[5];
  return hs_set_shape(&out[0], yt, hs_conv_out_dims(&s, dims), dims, n, err);
}

/* ---- oneDNN path (QLinearConv with constant int8 weights of zero point 0) ---- */

static void free_state(void *p) {
  qconv_state *st = p;
  if (!st) return;
  hs_kcache_destroy(&st->cache);
  free(st->scales);
  free(st->bias);
  free(st);
}

/* A graph constant of dtype t with count elements, or NULL. */
static const hs_value *const_in(const hs_node *n, const hs_graph *g, int i, hs_dtype t) {
  if (i >= n->n_in || n->in[i] < 0) return NULL;
  const hs_value *v = &g->values[n->in[i]];
  return v->kind == HS_VAL_CONST && v->data && (t == HS_DT_UNDEFINED || v->dtype == t) ? v : NULL;
}

/* hs_node.release_consts (see ir.h): runs once at the end of compiling, single-threaded. When a kernel holds
 * the weights and no other node reads them, the graph's copy goes. */
static void release_weights(hs_node *n, hs_graph *g) {
  qconv_state *st = n->state;
  hs_value *w = &g->values[n->in[QW]];
  if (!st || !st->w || w->n_uses != 1 || w->data != st->w) return; /* released already, or shared */
  if (atomic_load_explicit(&st->cache.n, memory_order_acquire) < 1) return; /* no kernel yet: keep them */
  st->holder = hs_kcache_kernel(&st->cache, 0);
  st->w = NULL;
  hs_graph_release_const(g, n->in[QW]);
  HS_LOGD("node '%s' (%s): %zu bytes of weights now held by its kernel only", n->name, n->op_type, st->w_bytes);
}

static int32_t zp_value(const hs_value *v) {
  return v->dtype == HS_DT_INT8 ? *(const int8_t *)v->data : *(const uint8_t *)v->data;
}

static int qconv_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  if (n->op != HS_OP_QLinearConv) return 0;
  const hs_value *xs = const_in(n, g, QXS, HS_DT_FLOAT32), *xz = const_in(n, g, QXZ, HS_DT_UNDEFINED),
                 *w = const_in(n, g, QW, HS_DT_INT8), *ws = const_in(n, g, QWS, HS_DT_FLOAT32),
                 *wz = const_in(n, g, QWZ, HS_DT_INT8), *ys = const_in(n, g, QYS, HS_DT_FLOAT32),
                 *yz = const_in(n, g, QYZ, HS_DT_UNDEFINED), *b = const_in(n, g, QB, HS_DT_INT32);
  int has_b = n->n_in > QB && n->in[QB] >= 0;
  if (!xs || !xz || !w || w->ndim < 3 || !ws || !ys || !yz || (has_b && !b) || xs->nbytes != 4 || ys->nbytes != 4 ||
      !int8ish(xz->dtype) || !int8ish(yz->dtype) || xz->nbytes != 1 || yz->nbytes != 1)
    return 0; /* plain C */
  int64_t oc = w->dims[0];
  int nscales = (int)(ws->nbytes / 4);
  if ((nscales != 1 && nscales != oc) || (b && (int64_t)(b->nbytes / 4) != oc)) return 0;
  if (n->in[QWZ] >= 0) {
    if (!wz) return 0;
    for (size_t i = 0; i < wz->nbytes; i++)
      if (((const int8_t *)wz->data)[i]) return 0; /* oneDNN has no weight zero point */
  }
  const hs_value *rs = NULL, *rz = NULL;
  if (fused_of(n)->sum_input >= 0) {
    rs = const_in(n, g, QRS, HS_DT_FLOAT32);
    rz = const_in(n, g, QRZ, HS_DT_UNDEFINED);
    if (!rs || !rz || rs->nbytes != 4 || !int8ish(rz->dtype) || rz->nbytes != 1) return 0;
  }
  qconv_state *st = calloc(1, sizeof *st);
  if (!st) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  if (rs) {
    st->sum = 1;
    st->sum_scale = *(const float *)rs->data / *(const float *)ys->data;
    st->sum_zp = zp_value(rz);
    st->sum_type = rz->dtype == HS_DT_UINT8 ? HS_Q_U8 : HS_Q_S8;
  }
  st->scales = malloc(sizeof(float) * (size_t)nscales);
  st->bias = b ? malloc(sizeof(float) * (size_t)oc) : NULL;
  if (!st->scales || (b && !st->bias)) {
    free_state(st);
    return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  }
  float x_scale = *(const float *)xs->data, y_scale = *(const float *)ys->data;
  for (int i = 0; i < nscales; i++) st->scales[i] = x_scale * ((const float *)ws->data)[i] / y_scale;
  for (int64_t i = 0; b && i < oc; i++) st->bias[i] = (float)((const int32_t *)b->data)[i];
  st->nscales = nscales;
  st->w = w->data;
  st->w_bytes = w->nbytes;
  st->xzp = zp_value(xz);
  st->yzp = zp_value(yz);
  st->xt = xz->dtype == HS_DT_UINT8 ? HS_Q_U8 : HS_Q_S8;
  st->yt = yz->dtype == HS_DT_UINT8 ? HS_Q_U8 : HS_Q_S8;
  hs_kcache_init(&st->cache);
  n->state = st;
  n->free_state = free_state;
  n->release_consts = release_weights;
  return 0;
}

typedef struct build_ctx {
  const qconv_state *st;
  const hs_conv_shape *s;
  const qconv_fused *lay;
} build_ctx;

static int build_kernel(void *ctx, hs_kernel **out, hs_error *err) {
  const build_ctx *c = ctx;
  const hs_conv_shape *s = c->s;
  hs_qconv_params p = {0};
  p.device = HS_KDEV_CPU;
  p.src_layout = c->lay->src_layout;
  p.dst_layout = c->lay->dst_layout;
  p.src_type = c->st->xt;
  p.dst_type = c->st->yt;
  p.nsp = s->nsp;
  p.batch = s->n;
  p.in_c = s->in_c;
  p.out_c = s->out_c;
  p.groups = s->group;
  for (int i = 0; i < s->nsp; i++) {
    p.in[i] = s->in[i], p.out[i] = s->out[i], p.kernel[i] = s->k[i], p.stride[i] = s->s[i];
    p.dilation[i] = s->d[i], p.pad_begin[i] = s->pb[i], p.pad_end[i] = s->pe[i];
  }
  p.weights = c->st->w;
  p.bias = c->st->bias;
  p.scales = c->st->scales;
  p.nscales = c->st->nscales;
  p.src_zp = c->st->xzp;
  p.dst_zp = c->st->yzp;
  p.sum = c->st->sum;
  p.sum_type = c->st->sum_type;
  p.sum_scale = c->st->sum_scale;
  p.sum_zp = c->st->sum_zp;
  if (p.weights) return hs_kernel_qconv_create(&p, out, err);
  /* released: the new kernel copies the weights from a temporary read back from the holder */
  if (!c->st->holder) return hs_error_set(err, HS_INTERNAL, "qconv: the weights were released");
  int8_t *w = malloc(c->st->w_bytes ? c->st->w_bytes : 1);
  if (!w) return hs_error_set(err, HS_NO_MEMORY, "qconv: reading the weights back");
  int rc = hs_kernel_qconv_weights(c->st->holder, w, c->st->w_bytes, err);
  if (!rc) {
    p.weights = w;
    rc = hs_kernel_qconv_create(&p, out, err);
  }
  free(w);
  return rc;
}

static hs_kernel *kernel_for(const hs_node *n, const hs_conv_shape *s, hs_error *strict_err) {
  qconv_state *st = n->state;
  if (!st) return NULL;
  int64_t key[4] = {s->in_c};
  for (int i = 0; i < s->nsp; i++) key[1 + i] = s->in[i];
  build_ctx c = {st, s, fused_of_c(n)};
  return hs_op_kernel(n, &st->cache, key, 1 + s->nsp, build_kernel, &c, s->n, strict_err);
}

static size_t qconv_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)nin, (void)out, (void)nout;
  hs_conv_shape s;
  hs_error e;
  if (!n->state || hs_conv_shape_of(n, &in[0], &in[QW], &s, &e)) return 0;
  hs_kernel *k = kernel_for(n, &s, NULL);
  if (k) return hs_op_kernel_scratch(k, s.n);
  const qconv_state *st = n->state;
  return st->w ? 0 : st->w_bytes; /* the plain C reads released weights back into scratch */
}

/* ---- plain C ---- */

static int32_t load_i(const hs_tensor *t, int64_t i) {
  return t->dtype == HS_DT_INT8 ? ((const int8_t *)t->data)[i] : t->dtype == HS_DT_UINT8 ? ((const uint8_t *)t->data)[i]
                                                                                        : ((const int32_t *)t->data)[i];
}

static int qconv_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  (void)nout;
  int x, w, xz, wz, rc;
  positions(n, nin, in, &x, &w, &xz, &wz);
  hs_conv_shape s;
  if ((rc = hs_conv_shape_of(n, &in[x], &in[w], &s, err))) return rc;
  if (hs_numel(&out[0]) == 0) return 0;
  hs_error kerr = {0};
  hs_kernel *k = kernel_for(n, &s, &kerr);
  if (k) {
    const void *src[1] = {in[x].data};
    hs_kernel_args a = {.batch = s.n, .src = src, .nsrc = 1, .dst = out[0].data, .scratch = scratch};
    if (fused_of_c(n)->sum_input >= 0) a.residual = in[QR].data;
    return hs_op_run_kernel(n, k, &a, err);
  }
  if (n->state && hs_ops_strict()) return hs_op_strict_error(n, &kerr, err);
  const qconv_state *st = n->state;
  hs_tensor w_back = {0};
  if (st && !st->w) {
    /* released: the holder's weights, read back into scratch */
    if (!scratch) return hs_op_errf(err, n, HS_INTERNAL, "no scratch planned for the weights");
    if ((rc = hs_kernel_qconv_weights(st->holder, scratch, st->w_bytes, err)))
      return hs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
    w_back = in[w];
    w_back.data = scratch;
  }
  const hs_tensor *wt = st && !st->w ? &w_back : &in[w];
  int ql = n->op == HS_OP_QLinearConv;
  int64_t in3[3] = {1, 1, 1}, out3[3] = {1, 1, 1}, k3[3] = {1, 1, 1}, s3[3] = {1, 1, 1}, d3[3] = {1, 1, 1},
          p3[3] = {0, 0, 0};
  int off = 3 - s.nsp;
  for (int i = 0; i < s.nsp; i++) {
    in3[off + i] = s.in[i], out3[off + i] = s.out[i], k3[off + i] = s.k[i];
    s3[off + i] = s.s[i], d3[off + i] = s.d[i], p3[off + i] = s.pb[i];
  }
  const int64_t G = s.group, icg = s.in_c / G, ocg = s.out_c / G;
  const int64_t isz = in3[0] * in3[1] * in3[2], osz = out3[0] * out3[1] * out3[2], ksz = k3[0] * k3[1] * k3[2];
  const int xnhwc = fused_of_c(n)->src_layout == HS_LAYOUT_NHWC, ynhwc = fused_of_c(n)->dst_layout == HS_LAYOUT_NHWC;
  const int32_t x0 = xz >= 0 ? load_i(&in[xz], 0) : 0;
  const int nwz = wz >= 0 ? (int)hs_numel(&in[wz]) : 0, nws = ql ? (int)hs_numel(&in[QWS]) : 0;
  const int has_b = ql && nin > QB && HS_PRESENT(&in[QB]);
  float ys = ql ? *(const float *)in[QYS].data : 1, xs = ql ? *(const float *)in[QXS].data : 1;
  int32_t y0 = ql ? load_i(&in[QYZ], 0) : 0;
  const int sum = ql && fused_of_c(n)->sum_input >= 0;
  const float rscale = sum ? *(const float *)in[QRS].data / ys : 0;
  const int32_t r0 = sum ? load_i(&in[QRZ], 0) : 0;
  int lo = out[0].dtype == HS_DT_INT8 ? -128 : 0, hi = out[0].dtype == HS_DT_INT8 ? 127 : 255;
  for (int64_t b = 0; b < s.n; b++)
    for (int64_t co = 0; co < s.out_c; co++) {
      int64_t gr = co / ocg;
      int32_t w0 = nwz ? load_i(&in[wz], nwz > 1 ? co : 0) : 0;
      float scale = ql ? xs * ((const float *)in[QWS].data)[nws > 1 ? co : 0] / ys : 1;
      for (int64_t od = 0; od < out3[0]; od++)
        for (int64_t oh = 0; oh < out3[1]; oh++)
          for (int64_t ow = 0; ow < out3[2]; ow++) {
            int64_t acc = has_b ? ((const int32_t *)in[QB].data)[co] : 0;
            for (int64_t ic = 0; ic < icg; ic++) {
              int64_t ci = gr * icg + ic, wbase = (co * icg + ic) * ksz;
              for (int64_t kd = 0; kd < k3[0]; kd++) {
                int64_t id = od * s3[0] - p3[0] + kd * d3[0];
                if (id < 0 || id >= in3[0]) continue;
                for (int64_t kh = 0; kh < k3[1]; kh++) {
                  int64_t ih = oh * s3[1] - p3[1] + kh * d3[1];
                  if (ih < 0 || ih >= in3[1]) continue;
                  for (int64_t kw = 0; kw < k3[2]; kw++) {
                    int64_t iw = ow * s3[2] - p3[2] + kw * d3[2];
                    if (iw < 0 || iw >= in3[2]) continue;
                    int64_t sp = (id * in3[1] + ih) * in3[2] + iw;
                    int64_t xi = xnhwc ? (b * isz + sp) * s.in_c + ci : (b * s.in_c + ci) * isz + sp;
                    int64_t wi = wbase + (kd * k3[1] + kh) * k3[2] + kw;
                    acc += (int64_t)(load_i(&in[x], xi) - x0) * (load_i(wt, wi) - w0);
                  }
                }
              }
            }
            int64_t so = (od * out3[1] + oh) * out3[2] + ow;
            int64_t oi = ynhwc ? (b * osz + so) * s.out_c + co : (b * s.out_c + co) * osz + so;
            if (!ql) {
              ((int32_t *)out[0].data)[oi] = (int32_t)acc;
              continue;
            }
            float v = (float)acc * scale;
            if (sum) v += rscale * (float)(load_i(&in[QR], oi) - r0); /* r is in y's layout */
            v = nearbyintf(v) + (float)y0;
            v = !(v >= lo) ? (float)lo : v > hi ? (float)hi : v; /* NaN (a hostile scale) saturates low */
            if (out[0].dtype == HS_DT_INT8) ((int8_t *)out[0].data)[oi] = (int8_t)v;
            else ((uint8_t *)out[0].data)[oi] = (uint8_t)v;
          }
    }
  return 0;
}

const hs_op_impl hs_op_impl_qconv = {
    .check = qconv_check,
    .infer = qconv_infer,
    .prepare = qconv_prepare,
    .scratch_bytes = qconv_scratch,
    .run = qconv_run,
    .fuse = qconv_fuse,
};

/* norm.c - BatchNormalization (inference), LayerNormalization, InstanceNormalization, Softmax, LogSoftmax: oneDNN kernels where they apply, plain C as fallback and reference. */

/*
 * DESIGN
 * Softmax / LogSoftmax (opset < 13: the input coerced to 2-D at axis; from 13: one axis) always
 * get a kernel cache in prepare(); the input is viewed as [batch, outer, len(, inner)] with the
 * softmax over len, so batch sizes are variants of one kernel (when axis is 0 the batch is part of
 * len and the kernel is built for the exact shape). LayerNormalization and BatchNormalization get
 * one only when their parameters (scale, bias; mean, var) are graph constants, since the kernels
 * copy them at creation; given at run time (ONNX's node tests), they run plain C, as Conv does.
 * Kernels are built while a session plans (scratch_bytes()) and found again by run() (opkernel.h).
 * LayerNormalization's optional Mean / InvStdDev outputs are computed by a plain-C pass next to the
 * kernel. InstanceNormalization runs plain C. The plain-C code below is the reference for all.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

/* ---- kernel state of the ops with constant parameters ----------------------------------------- */

typedef struct norm_state {
  hs_kcache cache;
  hs_tensor c[4]; /* inputs 1..4 as graph constants (dtype HS_DT_UNDEFINED when absent) */
} norm_state;

static void norm_free(void *p) {
  norm_state *st = p;
  if (!st) return;
  hs_kcache_destroy(&st->cache);
  free(st);
}

/* Gives n a norm_state when its inputs 1..count (those present) are float32 graph constants;
 * otherwise leaves n without state, so it runs plain C. */
static int attach_consts(hs_node *n, const hs_graph *g, int count, hs_error *err) {
  for (int i = 1; i <= count && i < n->n_in; i++) {
    if (n->in[i] < 0) continue;
    const hs_value *v = &g->values[n->in[i]];
    if (v->kind != HS_VAL_CONST || v->dtype != HS_DT_FLOAT32 || v->ndim < 0) return 0;
  }
  norm_state *st = calloc(1, sizeof *st);
  if (!st) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  hs_kcache_init(&st->cache);
  for (int i = 1; i <= count && i < n->n_in; i++) {
    if (n->in[i] < 0) continue;
    const hs_value *v = &g->values[n->in[i]];
    hs_tensor *t = &st->c[i - 1];
    t->dtype = v->dtype;
    t->ndim = v->ndim;
    memcpy(t->dims, v->dims, sizeof(int64_t) * (size_t)v->ndim);
    t->data = v->data;
    t->nbytes = v->nbytes;
  }
  n->state = st;
  n->free_state = norm_free;
  return 0;
}

/* Runs kernel k (found by the caller) from src into dst for leading dimension batch. */
static int run_kernel(const hs_node *n, hs_kernel *k, int64_t batch, const void *src, void *dst, void *scratch,
                      hs_error *err) {
  const void *s[1] = {src};
  hs_kernel_args args = {.batch = batch, .src = s, .nsrc = 1, .dst = dst, .scratch = scratch};
  return hs_op_run_kernel(n, k, &args, err);
}

/* ---- BatchNormalization ----------------------------------------------------------------------- */

typedef struct {
  float eps;
} bn_params;

static int bn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  bn_params *p = (bn_params *)n->params.bytes;
  int rc = hs_node_only_attrs(n, n->opset < 9 ? "epsilon,momentum,spatial,is_test" : "epsilon,momentum,training_mode", err);
  int64_t training, spatial, is_test;
  if (rc || (rc = hs_attr_float(n, "epsilon", 1e-5f, &p->eps, err)) ||
      (rc = hs_attr_int(n, "training_mode", 0, &training, err)) || (rc = hs_attr_int(n, "spatial", 1, &spatial, err)) ||
      (rc = hs_attr_int(n, "is_test", 1, &is_test, err)))
    return rc;
  if (training) return hs_op_errf(err, n, HS_UNSUPPORTED, "training_mode is not supported (opset %d)", n->opset);
  if (!spatial) return hs_op_errf(err, n, HS_UNSUPPORTED, "spatial=0 is not supported (opset %d)", n->opset);
  int nout = n->n_out;
  while (nout > 0 && n->out[nout - 1] < 0) nout--;
  if (nout > 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "training outputs (mean/var) are not supported");
  return 0;
}

static int bn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  if (in[0].ndim < 2) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input rank must be >= 2");
  for (int i = 1; i < 5; i++)
    if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim != 1 || in[i].dims[0] != in[0].dims[1])
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input %d must be float32 [%lld]", i, (long long)in[0].dims[1]);
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

typedef struct bn_ctx {
  const hs_node *n;
  const hs_tensor *x;
} bn_ctx;

static int bn_build(void *ctx, hs_kernel **out, hs_error *err) {
  const bn_ctx *c = ctx;
  const norm_state *st = c->n->state;
  hs_batchnorm_params p = {0};
  p.device = HS_KDEV_CPU;
  p.layout = HS_LAYOUT_NCHW;
  p.ndim = c->x->ndim;
  memcpy(p.dims, c->x->dims, sizeof(int64_t) * (size_t)c->x->ndim);
  p.epsilon = ((const bn_params *)c->n->params.bytes)->eps;
  p.scale = st->c[0].data;
  p.bias = st->c[1].data;
  p.mean = st->c[2].data;
  p.var = st->c[3].data;
  return hs_kernel_batchnorm_create(&p, out, err);
}

/* The kernel for x's shape, or NULL when the plain-C path must run (opkernel.h). */
static hs_kernel *bn_kernel(const hs_node *n, const hs_tensor *x, hs_error *strict_err) {
  if (!n->state) {
    HS_LOGD("node '%s' (%s): parameters given at run time, using plain C", n->name, n->op_type);
    return NULL;
  }
  if (hs_numel(x) == 0 || x->ndim > 8) return NULL;
  bn_ctx c = {n, x};
  /* key: the dims after the batch, which is a variant */
  return hs_op_kernel(n, &((norm_state *)n->state)->cache, x->dims + 1, x->ndim - 1, bn_build, &c, x->dims[0],
                      strict_err);
}

static int bn_prepare(hs_node *n, const hs_graph *g, hs_error *err) { return attach_consts(n, g, 4, err); }

static size_t bn_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  return hs_op_kernel_scratch(bn_kernel(n, &in[0], NULL), in[0].dims[0]);
}

static int bn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  const bn_params *p = (const bn_params *)n->params.bytes;
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = bn_kernel(n, &in[0], &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) return run_kernel(n, k, in[0].dims[0], in[0].data, out[0].data, scratch, err);
  const float *x = in[0].data, *sc = in[1].data, *b = in[2].data, *mean = in[3].data, *var = in[4].data;
  float *y = out[0].data;
  int64_t N = in[0].dims[0], C = in[0].dims[1], sp = 1;
  for (int i = 2; i < in[0].ndim; i++) sp *= in[0].dims[i];
  for (int64_t c = 0; c < C; c++) {
    float k = sc[c] / sqrtf(var[c] + p->eps), off = b[c] - mean[c] * k;
    for (int64_t bi = 0; bi < N; bi++) {
      const float *xc = x + (bi * C + c) * sp;
      float *yc = y + (bi * C + c) * sp;
      for (int64_t i = 0; i < sp; i++) yc[i] = xc[i] * k + off;
    }
  }
  return 0;
}

/* ---- LayerNormalization / InstanceNormalization ----------------------------------------------- */

typedef struct {
  int64_t axis;
  float eps;
  int instance;
} ln_params;

static int ln_check(hs_node *n, const hs_graph *g, hs_error *err) {
  ln_params *p = (ln_params *)n->params.bytes;
  p->instance = n->op == HS_OP_InstanceNormalization;
  int rc = hs_node_only_attrs(n, p->instance ? "epsilon" : "axis,epsilon,stash_type", err);
  int64_t stash;
  if (rc || (rc = hs_attr_int(n, "axis", -1, &p->axis, err)) || (rc = hs_attr_float(n, "epsilon", 1e-5f, &p->eps, err)) ||
      (rc = hs_attr_int(n, "stash_type", 1, &stash, err)))
    return rc;
  if (stash != 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "stash_type %lld is not supported", (long long)stash);
  return 0;
}

static int ln_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const ln_params *p = (const ln_params *)n->params.bytes;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED), a;
  if (rc) return rc;
  int r = in[0].ndim;
  if (p->instance) {
    if (r < 3) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input rank must be >= 3");
    for (int i = 1; i < 3; i++)
      if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim != 1 || in[i].dims[0] != in[0].dims[1])
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale and B must be float32 [C]");
    return hs_set_shape(&out[0], HS_DT_FLOAT32, r, in[0].dims, n, err);
  }
  if ((rc = hs_norm_axis(p->axis, r, &a, n, err))) return rc;
  /* scale and bias broadcast to the normalized dims [a..r) */
  for (int i = 1; i < nin && i < 3; i++) {
    if (!HS_PRESENT(&in[i])) continue;
    if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim > r - a)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale/bias must be float32 over the normalized axes");
    for (int k = 0; k < in[i].ndim; k++) {
      int64_t want = in[0].dims[r - in[i].ndim + k];
      if (in[i].dims[k] != want && in[i].dims[k] != 1)
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale/bias shape does not match the normalized axes");
    }
  }
  if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, r, in[0].dims, n, err))) return rc;
  int64_t d[HS_MAX_DIMS];
  for (int i = 0; i < r; i++) d[i] = i < a ? in[0].dims[i] : 1;
  for (int k = 1; k < nout && k < 3; k++)
    if ((rc = hs_set_shape(&out[k], HS_DT_FLOAT32, r, d, n, err))) return rc;
  return 0;
}

/* Value of a scale/bias tensor (broadcast to the inner block of `inner` elements) at position j. */
static float inner_at(const hs_tensor *t, const int64_t *xdims, int r, int64_t j) {
  if (t->ndim == 0) return *(const float *)t->data;
  int64_t off = 0, mul = 1;
  for (int k = t->ndim - 1; k >= 0; k--) {
    int64_t xd = xdims[r - t->ndim + k], idx = j % xd;
    j /= xd;
    if (t->dims[k] != 1) off += idx * mul;
    mul *= t->dims[k];
  }
  return ((const float *)t->data)[off];
}

/* Mean and 1/sqrt(var + eps) of xo[0..inner), as the reference computes them. */
static void ln_stats(const float *xo, int64_t inner, float eps, float *mean, float *inv) {
  double s = 0, ss = 0;
  for (int64_t j = 0; j < inner; j++) s += xo[j];
  double m = inner ? s / (double)inner : 0;
  for (int64_t j = 0; j < inner; j++) {
    double dlt = xo[j] - m;
    ss += dlt * dlt;
  }
  double var = inner ? ss / (double)inner : 0;
  *inv = (float)(1.0 / sqrt(var + eps));
  *mean = (float)m;
}

/* LayerNormalization's input seen as [batch, outer, inner] (normalized over inner), with the
 * batch a kernel variant; when axis is 0 the batch is part of inner and the view is [1, 1, inner]. */
typedef struct ln_view {
  int64_t batch, outer, inner;
  int axis0;
} ln_view;

static ln_view ln_view_of(const hs_tensor *x, int a) {
  ln_view v = {1, 1, 1, a == 0};
  for (int i = 0; i < x->ndim; i++) {
    if (i >= a) v.inner *= x->dims[i];
    else if (i == 0) v.batch = x->dims[0];
    else v.outer *= x->dims[i];
  }
  return v;
}

typedef struct ln_ctx {
  const hs_node *n;
  const hs_tensor *x;
  const ln_view *v;
} ln_ctx;

/* One constant scale/bias as the kernel wants it: dense over inner. Broadcasting ones are
 * expanded into *buf (freed by the caller). */
static int ln_dense(const hs_tensor *t, const hs_tensor *x, int64_t inner, const float **out, float **buf,
                    hs_error *err) {
  *out = NULL;
  if (t->dtype == HS_DT_UNDEFINED) return 0;
  if (hs_numel(t) == inner) {
    *out = t->data;
    return 0;
  }
  if ((uint64_t)inner > SIZE_MAX / sizeof(float)) return hs_error_set(err, HS_LIMIT, "layernorm: too many values");
  *buf = malloc((size_t)inner * sizeof(float));
  if (!*buf) return hs_error_set(err, HS_NO_MEMORY, "layernorm: expanding scale/bias");
  for (int64_t j = 0; j < inner; j++) (*buf)[j] = inner_at(t, x->dims, x->ndim, j);
  *out = *buf;
  return 0;
}

static int ln_build(void *ctx, hs_kernel **out, hs_error *err) {
  const ln_ctx *c = ctx;
  const norm_state *st = c->n->state;
  hs_layernorm_params p = {0};
  p.device = HS_KDEV_CPU;
  p.ndim = 3;
  p.dims[0] = c->v->batch;
  p.dims[1] = c->v->outer;
  p.dims[2] = c->v->inner;
  p.axis = 2;
  p.epsilon = ((const ln_params *)c->n->params.bytes)->eps;
  float *sbuf = NULL, *bbuf = NULL;
  int rc = ln_dense(&st->c[0], c->x, c->v->inner, &p.scale, &sbuf, err);
  if (!rc) rc = ln_dense(&st->c[1], c->x, c->v->inner, &p.bias, &bbuf, err);
  if (!rc) rc = hs_kernel_layernorm_create(&p, out, err); /* copies scale and bias */
  free(sbuf);
  free(bbuf);
  return rc;
}

/* The kernel for x's shape, or NULL when the plain-C path must run (opkernel.h). */
static hs_kernel *ln_kernel(const hs_node *n, const hs_tensor *x, const ln_view *v, hs_error *strict_err) {
  if (!n->state) {
    HS_LOGD("node '%s' (%s): scale/bias given at run time, using plain C", n->name, n->op_type);
    return NULL;
  }
  if (hs_numel(x) == 0) return NULL;
  int64_t key[3] = {v->axis0, v->outer, v->inner};
  ln_ctx c = {n, x, v};
  return hs_op_kernel(n, &((norm_state *)n->state)->cache, key, 3, ln_build, &c, v->axis0 ? 0 : v->batch, strict_err);
}

static int ln_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const ln_params *p = (const ln_params *)n->params.bytes;
  return p->instance ? 0 : attach_consts(n, g, 2, err);
}

static size_t ln_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  const ln_params *p = (const ln_params *)n->params.bytes;
  int a;
  hs_error e;
  if (p->instance || hs_norm_axis(p->axis, in[0].ndim, &a, n, &e)) return 0;
  ln_view v = ln_view_of(&in[0], a);
  return hs_op_kernel_scratch(ln_kernel(n, &in[0], &v, NULL), v.axis0 ? 0 : v.batch);
}

static int ln_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  const ln_params *p = (const ln_params *)n->params.bytes;
  int r = in[0].ndim, a = 2, rc;
  if (!p->instance && (rc = hs_norm_axis(p->axis, r, &a, n, err))) return rc;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < a; i++) outer *= in[0].dims[i];
  for (int i = a; i < r; i++) inner *= in[0].dims[i];
  const float *x = in[0].data;
  float *y = out[0].data;
  float *mean_out = nout > 1 ? out[1].data : NULL, *inv_out = nout > 2 ? out[2].data : NULL;
  if (!p->instance) {
    ln_view v = ln_view_of(&in[0], a);
    hs_error kerr;
    hs_error_clear(&kerr);
    hs_kernel *k = ln_kernel(n, &in[0], &v, &kerr);
    if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
    if (k) {
      if ((rc = run_kernel(n, k, v.axis0 ? 0 : v.batch, x, y, scratch, err))) return rc;
      if (mean_out || inv_out) /* the optional statistics outputs: a plain-C pass */
        for (int64_t o = 0; o < outer; o++) {
          float m, inv;
          ln_stats(x + o * inner, inner, p->eps, &m, &inv);
          if (mean_out) mean_out[o] = m;
          if (inv_out) inv_out[o] = inv;
        }
      return 0;
    }
  }
  const hs_tensor *sc = nin > 1 && HS_PRESENT(&in[1]) ? &in[1] : NULL, *b = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  /* a dense scale/bias covering the whole inner block is indexed directly */
  int sc_dense = sc && hs_numel(sc) == inner, b_dense = b && hs_numel(b) == inner;
  for (int64_t o = 0; o < outer; o++) {
    const float *xo = x + o * inner;
    float *yo = y + o * inner;
    float m, inv;
    ln_stats(xo, inner, p->eps, &m, &inv);
    if (p->instance) {
      int64_t c = o % in[0].dims[1];
      float k = ((const float *)in[1].data)[c] * inv, off = ((const float *)in[2].data)[c];
      for (int64_t j = 0; j < inner; j++) yo[j] = (xo[j] - m) * k + off;
      continue;
    }
    for (int64_t j = 0; j < inner; j++) {
      float v = (xo[j] - m) * inv;
      if (sc) v *= sc_dense ? ((const float *)sc->data)[j] : inner_at(sc, in[0].dims, r, j);
      if (b) v += b_dense ? ((const float *)b->data)[j] : inner_at(b, in[0].dims, r, j);
      yo[j] = v;
    }
    if (mean_out) mean_out[o] = m;
    if (inv_out) inv_out[o] = inv;
  }
  return 0;
}

/* ---- Softmax / LogSoftmax --------------------------------------------------------------------- */

typedef struct {
  int64_t axis;
  int log;
} sm_params;

static int sm_check(hs_node *n, const hs_graph *g, hs_error *err) {
  sm_params *p = (sm_params *)n->params.bytes;
  p->log = n->op == HS_OP_LogSoftmax;
  int rc = hs_node_only_attrs(n, "axis", err);
  return rc ? rc : hs_attr_int(n, "axis", n->opset >= 13 ? -1 : 1, &p->axis, err);
}

static int sm_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const sm_params *p = (const sm_params *)n->params.bytes;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED), a;
  if (rc) return rc;
  if (n->opset < 13 ? (p->axis < -in[0].ndim || p->axis > in[0].ndim) : 0)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  if (n->opset >= 13 && (rc = hs_norm_axis(p->axis, in[0].ndim, &a, n, err))) return rc;
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

/* The input seen as [batch, outer, len, inner] with the softmax over len (opset < 13: inner is 1
 * and len all the dims from axis on). When axis is 0 the batch is part of len: batch is then 1 and
 * not a kernel variant. */
typedef struct sm_view {
  int64_t batch, outer, len, inner;
  int axis0;
} sm_view;

static sm_view sm_view_of(const hs_node *n, const hs_tensor *x) {
  const sm_params *p = (const sm_params *)n->params.bytes;
  int r = x->ndim;
  int64_t a = p->axis < 0 ? p->axis + r : p->axis;
  sm_view v = {1, 1, 1, 1, a == 0};
  for (int i = 0; i < r; i++) {
    int64_t d = x->dims[i];
    if (i < a) *(i == 0 ? &v.batch : &v.outer) *= d;
    else if (i == a || n->opset < 13) v.len *= d;
    else v.inner *= d;
  }
  return v;
}

typedef struct sm_ctx {
  const hs_node *n;
  const sm_view *v;
} sm_ctx;

static int sm_build(void *ctx, hs_kernel **out, hs_error *err) {
  const sm_ctx *c = ctx;
  hs_softmax_params p = {0};
  p.device = HS_KDEV_CPU;
  p.log = ((const sm_params *)c->n->params.bytes)->log;
  p.ndim = c->v->inner > 1 ? 4 : 3; /* a trailing 1 would hide that the axis is the dense one */
  p.dims[0] = c->v->batch;
  p.dims[1] = c->v->outer;
  p.dims[2] = c->v->len;
  p.dims[3] = c->v->inner;
  p.axis = 2;
  return hs_kernel_softmax_create(&p, out, err);
}

/* The kernel for x's shape, or NULL when the plain-C path must run (opkernel.h). */
static hs_kernel *sm_kernel(const hs_node *n, const sm_view *v, hs_error *strict_err) {
  if (v->batch * v->outer * v->len * v->inner == 0) return NULL; /* empty: nothing to compute */
  int64_t key[4] = {v->axis0, v->outer, v->len, v->inner};
  sm_ctx c = {n, v};
  return hs_op_kernel(n, hs_op_cache(n), key, 4, sm_build, &c, v->axis0 ? 0 : v->batch, strict_err);
}

static int sm_prepare(hs_node *n, const hs_graph *g, hs_error *err) { return hs_op_attach_cache(n, err); }

static size_t sm_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  sm_view v = sm_view_of(n, &in[0]);
  return hs_op_kernel_scratch(sm_kernel(n, &v, NULL), v.axis0 ? 0 : v.batch);
}

static int sm_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  const sm_params *p = (const sm_params *)n->params.bytes;
  sm_view v = sm_view_of(n, &in[0]);
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = sm_kernel(n, &v, &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) return run_kernel(n, k, v.axis0 ? 0 : v.batch, in[0].data, out[0].data, scratch, err);
  int r = in[0].ndim;
  int64_t a = p->axis < 0 ? p->axis + r : p->axis;
  int64_t outer = 1, len = 1, inner = 1;
  if (n->opset < 13) { /* coerced to 2-D: [prod(dims[:a]), prod(dims[a:])] */
    for (int i = 0; i < a; i++) outer *= in[0].dims[i];
    for (int i = (int)a; i < r; i++) len *= in[0].dims[i];
  } else {
    for (int i = 0; i < a; i++) outer *= in[0].dims[i];
    len = in[0].dims[a];
    for (int i = (int)a + 1; i < r; i++) inner *= in[0].dims[i];
  }
  const float *x = in[0].data;
  float *y = out[0].data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *xv = x + o * len * inner + i;
      float *yv = y + o * len * inner + i;
      float m = -INFINITY;
      for (int64_t k = 0; k < len; k++) m = xv[k * inner] > m ? xv[k * inner] : m;
      double s = 0;
      for (int64_t k = 0; k < len; k++) {
        float e = expf(xv[k * inner] - m);
        if (!p->log) yv[k * inner] = e;
        s += e;
      }
      if (p->log) {
        float ls = (float)log(s);
        for (int64_t k = 0; k < len; k++) yv[k * inner] = xv[k * inner] - m - ls;
      } else {
        float inv = (float)(1.0 / s);
        for (int64_t k = 0; k < len; k++) yv[k * inner] *= inv;
      }
    }
  return 0;
}

const hs_op_impl hs_op_impl_batch_norm = {
    .check = bn_check,
    .infer = bn_infer,
    .prepare = bn_prepare,
    .scratch_bytes = bn_scratch,
    .run = bn_run,
};
const hs_op_impl hs_op_impl_layer_norm = {
    .check = ln_check,
    .infer = ln_infer,
    .prepare = ln_prepare,
    .scratch_bytes = ln_scratch,
    .run = ln_run,
};
const hs_op_impl hs_op_impl_instance_norm = {
    .check = ln_check,
    .infer = ln_infer,
    .run = ln_run,
};
const hs_op_impl hs_op_impl_softmax = {
    .check = sm_check,
    .infer = sm_infer,
    .prepare = sm_prepare,
    .scratch_bytes = sm_scratch,
    .run = sm_run,
};

/* cpu_dnnl_ops.c - the lighter oneDNN kernels: pooling, eltwise, binary, softmax, norms, reduce, concat, resize,
 * reorder; and reading a matmul kernel's constant B back. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_dnnl.h"

/* Slots in hs__variant.md */
enum { MD_SRC = 0, MD_DST = 1, MD_C0 = 2, MD_C1 = 3, MD_SRC1 = 4 };

#define CAT_MAX_INPUTS 64

static int invalid(hs_error *err, const char *what) {
  return hs_error_set(err, HS_INVALID_ARGUMENT, "%s", what);
}

static int check_shape(int ndim, const int64_t *dims, hs_error *err) {
  if (ndim < 1 || ndim > 8) return hs_error_set(err, HS_UNSUPPORTED, "rank %d (1 to 8 supported)", ndim);
  for (int i = 0; i < ndim; i++)
    if (dims[i] < 1) return hs_error_set(err, HS_INVALID_ARGUMENT, "dimension %d is %lld", i, (long long)dims[i]);
  return 0;
}

/* Runs prim with src (and optional src1, constants) into dst. */
typedef struct {
  int arg;
  int md;
  const void *ptr;
} bind;

static int run_one(dnnl_primitive_t prim, const hs__variant *v, const bind *b, int nb, dnnl_stream_t s,
                   dnnl_memory_t scratch, hs_error *err) {
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n, rc = 0;
  for (int i = 0; i < nb && !rc; i++) rc = hs__argv_add(&av, b[i].arg, &v->md[b[i].md], b[i].ptr, err);
  if (!rc) rc = hs__exec(prim, s, &av, err);
  hs__argv_release(&av, owned);
  return rc;
}

static int need_src(const hs_kernel_args *a, int n, hs_error *err) {
  for (int i = 0; i < n; i++)
    if (a->nsrc <= i || !a->src[i]) return hs_error_set(err, HS_INVALID_ARGUMENT, "kernel needs %d inputs", n);
  return 0;
}

static int finish_pd(hs__variant *v, dnnl_status_t st, dnnl_primitive_desc_t pd, const char *what,
                     hs_error *err) {
  if (st != dnnl_success) {
    if (pd) dnnl_primitive_desc_destroy(pd);
    return hs__dnnl_fail(err, st, what);
  }
  return hs__add_prim(v, pd, err);
}

static dnnl_status_t make_pd(dnnl_primitive_desc_t *pd, const void *op_desc, const hs_post_ops *post,
                             hs_error *err, int *rc) {
  dnnl_primitive_attr_t attr;
  *pd = NULL;
  *rc = hs__make_attr(post, &attr, err);
  if (*rc) return dnnl_success;
  dnnl_status_t st = dnnl_primitive_desc_create(pd, op_desc, attr, hs__dnnl_engine(), NULL);
  dnnl_primitive_attr_destroy(attr);
  return st;
}

/* A kernel of kind vt with parameters p (n bytes: its member of hs_kernel.p) and nothing else to own, built for
 * batch; sets *out. */
static int make_kernel(const hs__kvt *vt, const void *p, size_t n, int64_t batch, hs_kernel **out, hs_error *err) {
  hs_kernel *k;
  int rc = hs__kernel_new(vt, &k, err);
  if (rc) return rc;
  memcpy(&k->p, p, n);
  rc = hs__kernel_finish(k, batch, err);
  if (!rc) *out = k;
  return rc;
}

/* ================= pooling ================= */

static int pool_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_pool_params *p = &k->p.pool;
  int nd = 2 + p->nsp;
  int64_t sd[5] = {batch, p->channels}, dd[5] = {batch, p->channels};
  dnnl_dims_t str, ker, dil, pl, pr;
  for (int i = 0; i < p->nsp; i++) {
    sd[2 + i] = p->in[i];
    dd[2 + i] = p->out[i];
    str[i] = p->stride[i];
    ker[i] = p->kernel[i];
    dil[i] = p->dilation[i] - 1;
    pl[i] = p->pad_begin[i];
    pr[i] = p->pad_end[i];
  }
  int rc = hs__md_act(&v->md[MD_SRC], nd, sd, p->src_layout, err);
  if (!rc) rc = hs__md_act(&v->md[MD_DST], nd, dd, p->dst_layout, err);
  if (rc) return rc;
  dnnl_alg_kind_t alg = p->kind == HS_POOL_MAX ? dnnl_pooling_max
                        : p->kind == HS_POOL_AVG_INCLUDE_PAD ? dnnl_pooling_avg_include_padding
                                                             : dnnl_pooling_avg_exclude_padding;
  dnnl_pooling_v2_desc_t d;
  dnnl_status_t st = dnnl_pooling_v2_forward_desc_init(&d, dnnl_forward_inference, alg, &v->md[MD_SRC],
                                                       &v->md[MD_DST], str, ker, dil, pl, pr);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &d, NULL, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "pooling", err);
}

/* Runs a kernel of one primitive, one source and one destination (pooling, softmax, reduce, resample and
 * reorder: DNNL_ARG_FROM / TO are DNNL_ARG_SRC / DST). */
static int unary_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                      dnnl_memory_t scratch, hs_error *err) {
  (void)k;
  int rc = need_src(a, 1, err);
  if (rc) return rc;
  bind b[] = {{DNNL_ARG_SRC, MD_SRC, a->src[0]}, {DNNL_ARG_DST, MD_DST, a->dst}};
  return run_one(v->prim[0], v, b, 2, s, scratch, err);
}

static const hs__kvt pool_vt = {"pool", pool_build, unary_exec, NULL};

int hs_kernel_pool_create(const hs_pool_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "pool: device not available");
  if (p->nsp < 1 || p->nsp > 3) return hs_error_set(err, HS_UNSUPPORTED, "pool: %d spatial dims", p->nsp);
  if (p->batch < 1 || p->channels < 1) return invalid(err, "pool: non-positive batch or channels");
  for (int i = 0; i < p->nsp; i++)
    if (p->kernel[i] < 1 || p->stride[i] < 1 || p->dilation[i] < 1 || p->in[i] < 1 || p->out[i] < 1 ||
        p->pad_begin[i] < 0 || p->pad_end[i] < 0)
      return invalid(err, "pool: bad window, stride, padding or size");
  for (int i = 0; i < p->nsp; i++) {
    int64_t span = (p->kernel[i] - 1) * p->dilation[i] + 1;
    int64_t room = p->in[i] + p->pad_begin[i] + p->pad_end[i] - span;
    if (room < 0 || room / p->stride[i] + 1 != p->out[i] || p->pad_begin[i] >= span || p->pad_end[i] >= span)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "pool: output size %lld on spatial axis %d does not match",
                          (long long)p->out[i], i);
  }
  return make_kernel(&pool_vt, p, sizeof *p, p->batch, out, err);
}

/* ================= eltwise ================= */

static int elt_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_eltwise_params *p = &k->p.elt;
  int64_t d[8];
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[0] = batch;
  int rc = hs__md_plain(&v->md[MD_SRC], p->ndim, d, err);
  if (rc) return rc;
  v->md[MD_DST] = v->md[MD_SRC];
  for (int i = 0; i < p->ops.count; i++) {
    const hs_post_op *o = &p->ops.op[i];
    dnnl_alg_kind_t alg[2];
    float al[2], be[2];
    int n = hs__act_to_dnnl(o->act, o->alpha, o->beta, alg, al, be);
    if (n == 0) return hs_error_set(err, HS_UNSUPPORTED, "eltwise: %s", hs_act_name(o->act));
    for (int j = 0; j < n; j++) {
      dnnl_eltwise_desc_t ed;
      dnnl_status_t st =
          dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg[j], &v->md[MD_SRC], al[j], be[j]);
      dnnl_primitive_desc_t pd = NULL;
      if (st == dnnl_success) st = make_pd(&pd, &ed, NULL, err, &rc);
      if (rc) return rc;
      rc = finish_pd(v, st, pd, "eltwise", err);
      if (rc) return rc;
    }
  }
  return 0;
}

static int elt_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                    dnnl_memory_t scratch, hs_error *err) {
  int rc = need_src(a, 1, err);
  for (int i = 0; i < v->nprim && !rc; i++) {
    bind b[] = {{DNNL_ARG_SRC, MD_SRC, i == 0 ? a->src[0] : a->dst}, {DNNL_ARG_DST, MD_DST, a->dst}};
    rc = run_one(v->prim[i], v, b, 2, s, scratch, err);
  }
  return rc;
}

static const hs__kvt elt_vt = {"eltwise", elt_build, elt_exec, NULL};

int hs_kernel_eltwise_create(const hs_eltwise_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "eltwise: device not available");
  int rc = check_shape(p->ndim, p->dims, err);
  if (rc) return rc;
  if (p->ops.count < 1) return invalid(err, "eltwise: no function");
  for (int i = 0; i < p->ops.count; i++)
    if (p->ops.op[i].kind != HS_POST_ACT) return invalid(err, "eltwise: only activations can be chained");
  return make_kernel(&elt_vt, p, sizeof *p, p->dims[0], out, err);
}

/* ================= binary ================= */

#define BIN_SWAPPED 1 /* k->flags: src0 is b (a broadcasts, b does not) */

static void bin_dims(const hs_kernel *k, int64_t batch, int64_t *ad, int64_t *bd, int64_t *dd) {
  const hs_binary_params *p = &k->p.bin;
  int nd = p->ndim;
  for (int i = 0; i < nd; i++) {
    ad[i] = i < nd - p->a_ndim ? 1 : p->a_dims[i - (nd - p->a_ndim)];
    bd[i] = i < nd - p->b_ndim ? 1 : p->b_dims[i - (nd - p->b_ndim)];
    dd[i] = ad[i] > bd[i] ? ad[i] : bd[i];
  }
  int64_t d0 = dd[0];
  if (d0 != 1) {
    if (ad[0] == d0) ad[0] = batch;
    if (bd[0] == d0) bd[0] = batch;
    dd[0] = batch;
  }
}

static int bin_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_binary_params *p = &k->p.bin;
  int64_t ad[8], bd[8], dd[8];
  bin_dims(k, batch, ad, bd, dd);
  int swapped = k->flags & BIN_SWAPPED;
  int rc = hs__md_plain(&v->md[MD_SRC], p->ndim, swapped ? bd : ad, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_SRC1], p->ndim, swapped ? ad : bd, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_DST], p->ndim, dd, err);
  if (rc) return rc;
  static const dnnl_alg_kind_t algs[] = {dnnl_binary_add, dnnl_binary_sub, dnnl_binary_mul,
                                         dnnl_binary_div, dnnl_binary_max, dnnl_binary_min};
  hs_post_ops post = {0};
  if (swapped && p->kind == HS_BIN_SUB) hs_post_ops_add_act(&post, HS_ACT_LINEAR, -1.f, 0.f); /* a-b = -(b-a) */
  for (int i = 0; i < p->post.count; i++)
    if (post.count < HS_KERNEL_MAX_POST) post.op[post.count++] = p->post.op[i];
    else return hs_error_set(err, HS_UNSUPPORTED, "binary: too many post-ops");
  dnnl_binary_desc_t d;
  dnnl_status_t st = dnnl_binary_desc_init(&d, algs[p->kind], &v->md[MD_SRC], &v->md[MD_SRC1], &v->md[MD_DST]);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &d, &post, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "binary", err);
}

static int bin_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                    dnnl_memory_t scratch, hs_error *err) {
  int rc = need_src(a, 2, err);
  if (rc) return rc;
  int sw = k->flags & BIN_SWAPPED;
  bind b[] = {{DNNL_ARG_SRC_0, MD_SRC, a->src[sw ? 1 : 0]},
              {DNNL_ARG_SRC_1, MD_SRC1, a->src[sw ? 0 : 1]},
              {DNNL_ARG_DST, MD_DST, a->dst}};
  return run_one(v->prim[0], v, b, 3, s, scratch, err);
}

static const hs__kvt bin_vt = {"binary", bin_build, bin_exec, NULL};

int hs_kernel_binary_create(const hs_binary_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "binary: device not available");
  if ((unsigned)p->kind > HS_BIN_MIN) return invalid(err, "binary: unknown kind");
  if (p->ndim < 1 || p->ndim > 8 || p->a_ndim > p->ndim || p->b_ndim > p->ndim || p->a_ndim < 0 ||
      p->b_ndim < 0)
    return hs_error_set(err, HS_UNSUPPORTED, "binary: ranks %d, %d -> %d", p->a_ndim, p->b_ndim, p->ndim);
  for (int i = 0; i < p->post.count; i++)
    if (p->post.op[i].kind != HS_POST_ACT) return hs_error_set(err, HS_UNSUPPORTED, "binary: sum post-op");
  hs_kernel *k;
  int rc = hs__kernel_new(&bin_vt, &k, err);
  if (rc) return rc;
  k->p.bin = *p;
  int64_t ad[8], bd[8], dd[8];
  int a_full = 1, b_full = 1;
  for (int i = 0; i < p->ndim; i++) {
    ad[i] = i < p->ndim - p->a_ndim ? 1 : p->a_dims[i - (p->ndim - p->a_ndim)];
    bd[i] = i < p->ndim - p->b_ndim ? 1 : p->b_dims[i - (p->ndim - p->b_ndim)];
    if (ad[i] < 1 || bd[i] < 1 || (ad[i] != bd[i] && ad[i] != 1 && bd[i] != 1)) {
      hs_kernel_destroy(k);
      return invalid(err, "binary: shapes do not broadcast");
    }
    dd[i] = ad[i] > bd[i] ? ad[i] : bd[i];
    a_full &= ad[i] == dd[i];
    b_full &= bd[i] == dd[i];
  }
  if (!a_full) {
    /* oneDNN broadcasts only its second source: swap when b is the full one and the op allows. */
    if (!b_full || p->kind == HS_BIN_DIV) {
      hs_kernel_destroy(k);
      return hs_error_set(err, HS_UNSUPPORTED, "binary: first operand broadcasts");
    }
    k->flags |= BIN_SWAPPED;
  }
  rc = hs__kernel_finish(k, dd[0], err);
  if (!rc) *out = k;
  return rc;
}

/* ================= softmax ================= */

static int sm_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_softmax_params *p = &k->p.sm;
  int64_t d[8];
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[0] = batch;
  int rc = hs__md_plain(&v->md[MD_SRC], p->ndim, d, err);
  if (rc) return rc;
  v->md[MD_DST] = v->md[MD_SRC];
  dnnl_softmax_v2_desc_t sd;
  dnnl_status_t st = dnnl_softmax_v2_forward_desc_init(&sd, dnnl_forward_inference,
                                                       p->log ? dnnl_softmax_log : dnnl_softmax_accurate,
                                                       &v->md[MD_SRC], &v->md[MD_DST], p->axis);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &sd, NULL, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "softmax", err);
}

static const hs__kvt sm_vt = {"softmax", sm_build, unary_exec, NULL};

int hs_kernel_softmax_create(const hs_softmax_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "softmax: device not available");
  int rc = check_shape(p->ndim, p->dims, err);
  if (rc) return rc;
  if (p->axis < 0 || p->axis >= p->ndim) return invalid(err, "softmax: axis out of range");
  return make_kernel(&sm_vt, p, sizeof *p, p->dims[0], out, err);
}

/* ================= layer normalization ================= */

static void ln_split(const hs_layernorm_params *p, int64_t batch, int64_t *outer, int64_t *inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < p->ndim; i++) {
    int64_t d = i == 0 ? batch : p->dims[i];
    if (i < p->axis) *outer *= d;
    else *inner *= d;
  }
}

static int ln_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_layernorm_params *p = &k->p.ln;
  int64_t d[2], c[1];
  ln_split(p, batch, &d[0], &d[1]);
  c[0] = d[1];
  int rc = hs__md_plain(&v->md[MD_SRC], 2, d, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_C0], 1, c, err);
  if (rc) return rc;
  v->md[MD_DST] = v->md[MD_SRC];
  unsigned flags = (p->scale ? dnnl_use_scale : 0) | (p->bias ? dnnl_use_shift : 0);
  dnnl_layer_normalization_desc_t ld;
  dnnl_status_t st = dnnl_layer_normalization_forward_desc_init(&ld, dnnl_forward_inference,
                                                                &v->md[MD_SRC], NULL, p->epsilon, flags);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &ld, NULL, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "layer normalization", err);
}

static int ln_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                   dnnl_memory_t scratch, hs_error *err) {
  const hs_layernorm_params *p = &k->p.ln;
  int rc = need_src(a, 1, err);
  if (rc) return rc;
  bind b[4] = {{DNNL_ARG_SRC, MD_SRC, a->src[0]}, {DNNL_ARG_DST, MD_DST, a->dst}};
  int n = 2;
  if (p->scale) b[n++] = (bind){DNNL_ARG_SCALE, MD_C0, p->scale};
  if (p->bias) b[n++] = (bind){DNNL_ARG_SHIFT, MD_C0, p->bias};
  return run_one(v->prim[0], v, b, n, s, scratch, err);
}

static const hs__kvt ln_vt = {"layernorm", ln_build, ln_exec, NULL};

int hs_kernel_layernorm_create(const hs_layernorm_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "layernorm: device not available");
  int rc = check_shape(p->ndim, p->dims, err);
  if (rc) return rc;
  if (p->axis < 0 || p->axis >= p->ndim) return invalid(err, "layernorm: axis out of range");
  hs_kernel *k;
  rc = hs__kernel_new(&ln_vt, &k, err);
  if (rc) return rc;
  k->p.ln = *p;
  int64_t outer, inner;
  ln_split(p, p->dims[0], &outer, &inner);
  rc = hs__own_floats(k, p->scale, inner, &k->p.ln.scale, err);
  if (!rc) rc = hs__own_floats(k, p->bias, inner, &k->p.ln.bias, err);
  if (rc) {
    hs_kernel_destroy(k);
    return rc;
  }
  rc = hs__kernel_finish(k, p->dims[0], err);
  if (!rc) *out = k;
  return rc;
}

/* ================= batch normalization (inference) ================= */

#define BN_FUSE_RELU 1

static int bn_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_batchnorm_params *p = &k->p.bn;
  int64_t d[8], c[1] = {p->dims[1]};
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[0] = batch;
  int rc = hs__md_act(&v->md[MD_SRC], p->ndim, d, p->layout, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_C0], 1, c, err);
  if (rc) return rc;
  v->md[MD_DST] = v->md[MD_SRC];
  unsigned flags = dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift;
  if (k->flags & BN_FUSE_RELU) flags |= dnnl_fuse_norm_relu;
  dnnl_batch_normalization_desc_t bd;
  dnnl_status_t st =
      dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &v->md[MD_SRC], p->epsilon, flags);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &bd, NULL, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "batch normalization", err);
}

static int bn_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                   dnnl_memory_t scratch, hs_error *err) {
  const hs_batchnorm_params *p = &k->p.bn;
  int rc = need_src(a, 1, err);
  if (rc) return rc;
  bind b[] = {{DNNL_ARG_SRC, MD_SRC, a->src[0]},   {DNNL_ARG_DST, MD_DST, a->dst},
              {DNNL_ARG_MEAN, MD_C0, p->mean},     {DNNL_ARG_VARIANCE, MD_C0, p->var},
              {DNNL_ARG_SCALE, MD_C0, p->scale},   {DNNL_ARG_SHIFT, MD_C0, p->bias}};
  return run_one(v->prim[0], v, b, 6, s, scratch, err);
}

static const hs__kvt bn_vt = {"batchnorm", bn_build, bn_exec, NULL};

int hs_kernel_batchnorm_create(const hs_batchnorm_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "batchnorm: device not available");
  int rc = check_shape(p->ndim, p->dims, err);
  if (rc) return rc;
  if (p->ndim < 2) return invalid(err, "batchnorm: rank below 2");
  if (!p->scale || !p->bias || !p->mean || !p->var) return invalid(err, "batchnorm: missing parameters");
  int relu = 0;
  for (int i = 0; i < p->post.count; i++) {
    const hs_post_op *o = &p->post.op[i];
    if (i == 0 && o->kind == HS_POST_ACT && o->act == HS_ACT_RELU && o->alpha == 0.f) relu = 1;
    else return hs_error_set(err, HS_UNSUPPORTED, "batchnorm: only a fused Relu is supported");
  }
  hs_kernel *k;
  rc = hs__kernel_new(&bn_vt, &k, err);
  if (rc) return rc;
  k->p.bn = *p;
  if (relu) k->flags |= BN_FUSE_RELU;
  int64_t c = p->dims[1];
  rc = hs__own_floats(k, p->scale, c, &k->p.bn.scale, err);
  if (!rc) rc = hs__own_floats(k, p->bias, c, &k->p.bn.bias, err);
  if (!rc) rc = hs__own_floats(k, p->mean, c, &k->p.bn.mean, err);
  if (!rc) rc = hs__own_floats(k, p->var, c, &k->p.bn.var, err);
  if (rc) {
    hs_kernel_destroy(k);
    return rc;
  }
  rc = hs__kernel_finish(k, p->dims[0], err);
  if (!rc) *out = k;
  return rc;
}

/* ================= reduction ================= */

static int red_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_reduce_params *p = &k->p.red;
  int64_t d[8], o[8];
  for (int i = 0; i < p->ndim; i++) {
    d[i] = i == 0 ? batch : p->dims[i];
    o[i] = (p->axes_mask >> i) & 1 ? 1 : d[i];
  }
  int rc = hs__md_plain(&v->md[MD_SRC], p->ndim, d, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_DST], p->ndim, o, err);
  if (rc) return rc;
  static const dnnl_alg_kind_t algs[] = {dnnl_reduction_sum, dnnl_reduction_mean, dnnl_reduction_max,
                                         dnnl_reduction_min, dnnl_reduction_mul};
  dnnl_reduction_desc_t rd;
  dnnl_status_t st = dnnl_reduction_desc_init(&rd, algs[p->kind], &v->md[MD_SRC], &v->md[MD_DST], 0.f, 0.f);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &rd, NULL, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "reduction", err);
}

static const hs__kvt red_vt = {"reduce", red_build, unary_exec, NULL};

int hs_kernel_reduce_create(const hs_reduce_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "reduce: device not available");
  int rc = check_shape(p->ndim, p->dims, err);
  if (rc) return rc;
  if ((unsigned)p->kind > HS_REDUCE_PROD) return invalid(err, "reduce: unknown kind");
  if (p->axes_mask == 0 || (p->axes_mask >> p->ndim) != 0) return invalid(err, "reduce: bad axes");
  return make_kernel(&red_vt, p, sizeof *p, p->dims[0], out, err);
}

/* ================= concat ================= */

static int cat_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_concat_params *p = &k->p.cat;
  if (p->axis == 0 && batch != k->batch0 && k->batch0 != 0)
    return hs_error_set(err, HS_UNSUPPORTED, "concat along the batch axis with another batch size");
  dnnl_memory_desc_t srcs[CAT_MAX_INPUTS];
  int64_t d[8];
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[0] = batch;
  int64_t total = 0;
  for (int i = 0; i < p->ninputs; i++) {
    d[p->axis] = p->axis_sizes[i];
    total += p->axis_sizes[i];
    int rc = hs__md_plain(&srcs[i], p->ndim, d, err);
    if (rc) return rc;
  }
  d[p->axis] = total;
  int rc = hs__md_plain(&v->md[MD_DST], p->ndim, d, err);
  if (rc) return rc;
  dnnl_primitive_attr_t attr;
  rc = hs__make_attr(NULL, &attr, err);
  if (rc) return rc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_concat_primitive_desc_create(&pd, &v->md[MD_DST], p->ninputs, p->axis, srcs, attr,
                                                       hs__dnnl_engine());
  dnnl_primitive_attr_destroy(attr);
  return finish_pd(v, st, pd, "concat", err);
}

static int cat_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                    dnnl_memory_t scratch, hs_error *err) {
  const hs_concat_params *p = &k->p.cat;
  int rc = need_src(a, p->ninputs, err);
  if (rc) return rc;
  dnnl_exec_arg_t args[CAT_MAX_INPUTS + 2];
  int n = 0;
  if (scratch) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, scratch};
  int first = n;
  int64_t d[8];
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[0] = v->batch;
  dnnl_status_t st = dnnl_success;
  for (int i = 0; i <= p->ninputs && st == dnnl_success && !rc; i++) {
    dnnl_memory_desc_t md;
    const void *ptr;
    int arg;
    if (i < p->ninputs) {
      d[p->axis] = p->axis_sizes[i];
      rc = hs__md_plain(&md, p->ndim, d, err);
      ptr = a->src[i];
      arg = DNNL_ARG_MULTIPLE_SRC + i;
    } else {
      md = v->md[MD_DST];
      ptr = a->dst;
      arg = DNNL_ARG_DST;
    }
    if (rc) break;
    dnnl_memory_t m;
    st = dnnl_memory_create(&m, &md, hs__dnnl_engine(), (void *)ptr);
    if (st == dnnl_success) args[n++] = (dnnl_exec_arg_t){arg, m};
  }
  if (!rc && st == dnnl_success) {
    st = dnnl_primitive_execute(v->prim[0], s, n, args);
    if (st == dnnl_success) st = dnnl_stream_wait(s);
  }
  for (int i = first; i < n; i++) dnnl_memory_destroy(args[i].memory);
  if (!rc && st != dnnl_success) rc = hs__dnnl_fail(err, st, "concat");
  return rc;
}

static const hs__kvt cat_vt = {"concat", cat_build, cat_exec, NULL};

int hs_kernel_concat_create(const hs_concat_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "concat: device not available");
  if (p->ninputs < 1 || p->ninputs > CAT_MAX_INPUTS || !p->axis_sizes)
    return hs_error_set(err, HS_UNSUPPORTED, "concat: %d inputs (1 to %d supported)", p->ninputs, CAT_MAX_INPUTS);
  if (p->axis < 0 || p->axis >= p->ndim) return invalid(err, "concat: axis out of range");
  int64_t d[8];
  if (p->ndim < 1 || p->ndim > 8) return hs_error_set(err, HS_UNSUPPORTED, "concat: rank %d", p->ndim);
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[p->axis] = 1;
  int rc = check_shape(p->ndim, d, err);
  if (rc) return rc;
  for (int i = 0; i < p->ninputs; i++)
    if (p->axis_sizes[i] < 1) return invalid(err, "concat: an input is empty along the axis");
  hs_kernel *k;
  rc = hs__kernel_new(&cat_vt, &k, err);
  if (rc) return rc;
  k->p.cat = *p;
  k->owned_i64 = malloc(sizeof(int64_t) * p->ninputs);
  if (!k->owned_i64) {
    hs_kernel_destroy(k);
    return hs_error_set(err, HS_NO_MEMORY, "concat: copying sizes");
  }
  memcpy(k->owned_i64, p->axis_sizes, sizeof(int64_t) * p->ninputs);
  k->p.cat.axis_sizes = k->owned_i64;
  rc = hs__kernel_finish(k, p->dims[0], err);
  if (!rc) *out = k;
  return rc;
}

/* ================= resampling ================= */

static int rs_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_resample_params *p = &k->p.rs;
  int nd = 2 + p->nsp;
  int64_t sd[5] = {batch, p->channels}, dd[5] = {batch, p->channels};
  for (int i = 0; i < p->nsp; i++) {
    sd[2 + i] = p->in[i];
    dd[2 + i] = p->out[i];
  }
  int rc = hs__md_act(&v->md[MD_SRC], nd, sd, p->layout, err);
  if (!rc) rc = hs__md_act(&v->md[MD_DST], nd, dd, p->layout, err);
  if (rc) return rc;
  dnnl_resampling_desc_t rd;
  dnnl_status_t st = dnnl_resampling_forward_desc_init(
      &rd, dnnl_forward_inference, p->kind == HS_RESAMPLE_LINEAR ? dnnl_resampling_linear : dnnl_resampling_nearest,
      NULL, &v->md[MD_SRC], &v->md[MD_DST]);
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success) st = make_pd(&pd, &rd, NULL, err, &rc);
  if (rc) return rc;
  return finish_pd(v, st, pd, "resampling", err);
}

static const hs__kvt rs_vt = {"resample", rs_build, unary_exec, NULL};

int hs_kernel_resample_create(const hs_resample_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "resample: device not available");
  if (p->nsp < 1 || p->nsp > 3) return hs_error_set(err, HS_UNSUPPORTED, "resample: %d spatial dims", p->nsp);
  if (p->batch < 1 || p->channels < 1) return invalid(err, "resample: non-positive batch or channels");
  for (int i = 0; i < p->nsp; i++)
    if (p->in[i] < 1 || p->out[i] < 1) return invalid(err, "resample: non-positive size");
  return make_kernel(&rs_vt, p, sizeof *p, p->batch, out, err);
}

/* ================= reorder (layout change) ================= */

static int ro_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_reorder_params *p = &k->p.ro;
  int64_t d[8];
  memcpy(d, p->dims, sizeof(int64_t) * p->ndim);
  d[0] = batch;
  int rc = hs__md_act(&v->md[MD_SRC], p->ndim, d, p->from, err);
  if (!rc) rc = hs__md_act(&v->md[MD_DST], p->ndim, d, p->to, err);
  if (rc) return rc;
  dnnl_primitive_attr_t attr;
  rc = hs__make_attr(NULL, &attr, err);
  if (rc) return rc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, &v->md[MD_SRC], hs__dnnl_engine(), &v->md[MD_DST],
                                                        hs__dnnl_engine(), attr);
  dnnl_primitive_attr_destroy(attr);
  return finish_pd(v, st, pd, "reorder", err);
}

_Static_assert(DNNL_ARG_FROM == DNNL_ARG_SRC && DNNL_ARG_TO == DNNL_ARG_DST, "a reorder runs as unary_exec");

static const hs__kvt ro_vt = {"reorder", ro_build, unary_exec, NULL};

int hs_kernel_reorder_create(const hs_reorder_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "reorder: device not available");
  int rc = check_shape(p->ndim, p->dims, err);
  if (rc) return rc;
  if (p->ndim < 3) return invalid(err, "reorder: rank below 3");
  return make_kernel(&ro_vt, p, sizeof *p, p->dims[0], out, err);
}

/* ================= a matmul kernel's constant B, read back ================= */

const float *hs_kernel_matmul_bias(const hs_kernel *k) {
  return k && !strcmp(k->vt->name, "matmul") ? k->p.mm.bias : NULL; /* its own copy (hs__own_floats) */
}

int hs_kernel_matmul_b(const hs_kernel *k, float *dst, size_t dst_bytes, hs_error *err) {
  /* a matmul kernel made with a constant B is the only one with a plain descriptor of its own
   * operand (w_plain_md, B's buffer as given, transposed or not) */
  if (!k || strcmp(k->vt->name, "matmul") != 0 || k->w_plain_md.ndims == 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul B: not a matmul kernel with a constant B");
  size_t want = dnnl_memory_desc_get_size(&k->w_plain_md);
  if (dst_bytes != want)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul B: %zu bytes given, B is %zu", dst_bytes, want);
  /* variant 0 is published (hs__kernel_finish built it) and immutable; its weights are the
   * kernel's only copy once w_plain is gone */
  if (atomic_load_explicit(&((hs_kernel *)k)->nvar, memory_order_acquire) < 1 || !k->var[0]->weights)
    return hs_error_set(err, HS_INTERNAL, "matmul B: the kernel holds none");
  if (k->w_plain) {
    memcpy(dst, k->w_plain, want);
    return 0;
  }
  /* a float reorder copies values, so the bytes are exactly the ones the kernel was given */
  int rc = hs__reorder_into(&k->var[0]->md[HS__MAX_MDS - 1], k->var[0]->weights, &k->w_plain_md, dst, err);
  if (rc) hs_error_prefix(err, "matmul B");
  return rc;
}

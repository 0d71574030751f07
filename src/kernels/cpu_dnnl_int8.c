/* cpu_dnnl_int8.c - quantized (int8 / uint8) convolution and matrix-product kernels on oneDNN: VNNI where the CPU has it. */

/*
 * DESIGN
 * One kernel kind, `qconv`: QLinearConv's arithmetic (src - src_zp) * w accumulated in int32, plus a
 * bias in accumulator units, times a per-tensor or per-output-channel scale, rounded half to even,
 * plus dst_zp, saturated to the dst type (or kept in float32). oneDNN 2.x says exactly this with
 * output scales and zero points on its int8 convolution. The weights must be int8 with zero point 0
 * (the symmetric per-channel weights every QDQ quantizer writes); oneDNN has no weight zero point,
 * and callers keep their plain-C path for other cases. The weights are reordered once into the
 * implementation's layout, including the compensation terms oneDNN's int8 kernels keep after them, and
 * held once: the plain copy goes when variant 0 holds them (hs__variant_weights), and a variant in
 * another layout, or a reader of the plain values, reorders variant 0's values (the compensation terms
 * are not read). A CPU without VNNI halves the weights (scale_adjust), which no reorder undoes: there
 * the plain copy stays (hs__weights_one_way).
 * As for float convolutions (cpu_dnnl_conv.c), when the caller's activation layouts only reach
 * oneDNN's reference or im2col path, the convolution runs in the layouts oneDNN prefers (NHWC)
 * with reorders into and out of scratch. An optional residual (QDQ's Add, fused) is oneDNN's sum
 * post-op with its own scale, zero point and type: it is copied (or reordered) into the buffer the
 * convolution writes, which accumulates into it before the output zero point and saturation.
 * A second kind, `qmatmul`, is the same arithmetic on oneDNN's int8 matmul: A [rows, k] (u8 / s8) times
 * a constant s8 B [k, n] with zero point 0, per-tensor or per-column (of B) output scales, zero
 * points of A and the output (A's may come with each run: the dynamic quantization of
 * DynamicQuantizeLinear -> MatMulInteger), and a u8 / s8 / f32 output or the raw s32 sums. Its
 * variants are row counts (a batch MatMul with a 2-D B is one [rows, k] product); B is held once, as
 * qconv's weights are, and hs_kernel_qmatmul_b reads it back exactly. A float32 output takes
 * post-ops as the float matmul does (GELU, a residual sum).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_dnnl.h"

/* Slots in hs__variant.md and .prim */
enum { MD_SRC = 0, MD_DST = 1, MD_BIAS = 2, MD_ZP = 3, MD_ISRC = 4, MD_IDST = 5, MD_RES = 6, MD_WEIGHTS = HS__MAX_MDS - 1 };
enum { QP_CONV = 0, QP_SRC = 1, QP_DST = 2, QP_RES = 3 };


static dnnl_data_type_t dt_of(hs_qtype t) { return t == HS_Q_U8 ? dnnl_u8 : t == HS_Q_S8 ? dnnl_s8 : dnnl_f32; }

/* An activation descriptor of type t in NCHW or NHWC (any: oneDNN's choice). */
static int act_md(dnnl_memory_desc_t *md, int nd, const int64_t *dims, hs_qtype t, hs_layout layout, int any,
                  hs_error *err) {
  static const dnnl_format_tag_t nchw[3] = {dnnl_ncw, dnnl_nchw, dnnl_ncdhw};
  static const dnnl_format_tag_t nhwc[3] = {dnnl_nwc, dnnl_nhwc, dnnl_ndhwc};
  dnnl_dims_t d;
  for (int i = 0; i < nd; i++) d[i] = dims[i];
  dnnl_format_tag_t tag = any ? dnnl_format_tag_any : layout == HS_LAYOUT_NHWC ? nhwc[nd - 3] : nchw[nd - 3];
  if (!any && layout != HS_LAYOUT_NCHW && layout != HS_LAYOUT_NHWC)
    return hs_error_set(err, HS_UNSUPPORTED, "qconv: only NCHW and NHWC activations");
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(md, nd, d, dt_of(t), tag);
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "qconv: describing an activation");
}

static int weight_dims(const hs_qconv_params *p, dnnl_dims_t wd) {
  int n = 0;
  if (p->groups > 1) wd[n++] = p->groups;
  wd[n++] = p->out_c / p->groups;
  wd[n++] = p->in_c / p->groups;
  for (int i = 0; i < p->nsp; i++) wd[n++] = p->kernel[i];
  return n;
}

static const char *impl_of(const_dnnl_primitive_desc_t pd) {
  const char *impl = NULL;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return "";
  return impl;
}

/* The reference path, or im2col + gemm for a window larger than 1x1: worth reorders around a jit kernel. */
static int slow_impl(const hs_qconv_params *p, const_dnnl_primitive_desc_t pd) {
  const char *impl = impl_of(pd);
  if (!strncmp(impl, "ref", 3)) return 1;
  if (!strstr(impl, "gemm")) return 0;
  for (int i = 0; i < p->nsp; i++)
    if (p->kernel[i] > 1) return 1;
  return 0;
}

static dnnl_status_t qconv_pd(const hs_qconv_params *p, const dnnl_memory_desc_t *s, const dnnl_memory_desc_t *w,
                              const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *d, const_dnnl_primitive_attr_t attr,
                              dnnl_primitive_desc_t *pd) {
  dnnl_dims_t strides, dil, pl, pr;
  for (int i = 0; i < p->nsp; i++) {
    strides[i] = p->stride[i];
    dil[i] = p->dilation[i] - 1;
    pl[i] = p->pad_begin[i];
    pr[i] = p->pad_end[i];
  }
  dnnl_convolution_desc_t cd;
  *pd = NULL;
  dnnl_status_t st = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                                s, w, b, d, strides, dil, pl, pr);
  return st == dnnl_success ? dnnl_primitive_desc_create(pd, &cd, attr, hs__dnnl_engine(), NULL) : st;
}

static int qconv_attr(const hs_qconv_params *p, dnnl_primitive_attr_t *attr, hs_error *err) {
  int rc = hs__make_attr(NULL, attr, err);
  if (rc) return rc;
  dnnl_status_t st = dnnl_primitive_attr_set_output_scales(*attr, p->nscales, p->nscales > 1 ? 1 << 1 : 0, p->scales);
  if (st == dnnl_success && p->sum) {
    dnnl_post_ops_t po;
    st = dnnl_post_ops_create(&po);
    if (st == dnnl_success) {
      st = dnnl_post_ops_append_sum_v3(po, p->sum_scale, p->sum_zp, dt_of(p->sum_type));
      if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(*attr, po);
      dnnl_post_ops_destroy(po);
    }
  }
  const int32_t runtime = DNNL_RUNTIME_S32_VAL;
  if (st == dnnl_success && p->src_zp) st = dnnl_primitive_attr_set_zero_points(*attr, DNNL_ARG_SRC, 1, 0, &runtime);
  if (st == dnnl_success && p->dst_zp) st = dnnl_primitive_attr_set_zero_points(*attr, DNNL_ARG_DST, 1, 0, &runtime);
  if (st != dnnl_success) {
    dnnl_primitive_attr_destroy(*attr);
    return hs__dnnl_fail(err, st, "qconv: scales and zero points");
  }
  return 0;
}

static int qconv_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_qconv_params *p = &k->p.qc;
  int nd = 2 + p->nsp;
  int64_t sd[5] = {batch, p->in_c}, dd[5] = {batch, p->out_c};
  for (int i = 0; i < p->nsp; i++) sd[2 + i] = p->in[i], dd[2 + i] = p->out[i];
  int rc = act_md(&v->md[MD_SRC], nd, sd, p->src_type, p->src_layout, 0, err);
  if (!rc) rc = act_md(&v->md[MD_DST], nd, dd, p->dst_type, p->dst_layout, 0, err);
  if (rc) return rc;
  dnnl_dims_t wd, one = {1};
  int wn = weight_dims(p, wd);
  dnnl_memory_desc_t w_any;
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&w_any, wn, wd, dnnl_s8, dnnl_format_tag_any);
  if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&v->md[MD_ZP], 1, one, dnnl_s32, dnnl_a);
  memset(&v->md[MD_BIAS], 0, sizeof v->md[MD_BIAS]);
  if (st == dnnl_success && p->bias) {
    dnnl_dims_t bd = {p->out_c};
    st = dnnl_memory_desc_init_by_tag(&v->md[MD_BIAS], 1, bd, dnnl_f32, dnnl_a);
  }
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "qconv: describing weights");
  const dnnl_memory_desc_t *bias = p->bias ? &v->md[MD_BIAS] : NULL;
  dnnl_primitive_attr_t attr;
  if ((rc = qconv_attr(p, &attr, err))) return rc;
  dnnl_primitive_desc_t pd = NULL;
  st = qconv_pd(p, &v->md[MD_SRC], &w_any, bias, &v->md[MD_DST], attr, &pd);
  if (st != dnnl_success || slow_impl(p, pd)) {
    dnnl_memory_desc_t s_any, d_any;
    dnnl_primitive_desc_t pd2 = NULL;
    rc = act_md(&s_any, nd, sd, p->src_type, p->src_layout, 1, err);
    if (!rc) rc = act_md(&d_any, nd, dd, p->dst_type, p->dst_layout, 1, err);
    dnnl_status_t st2 = rc ? dnnl_invalid_arguments : qconv_pd(p, &s_any, &w_any, bias, &d_any, attr, &pd2);
    if (st2 == dnnl_success && strncmp(impl_of(pd2), "ref", 3)) {
      if (pd) dnnl_primitive_desc_destroy(pd);
      pd = pd2;
      st = dnnl_success;
      v->reordered = 1;
    } else if (pd2) {
      dnnl_primitive_desc_destroy(pd2);
    }
    rc = 0;
  }
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "qconv: int8 convolution");
  v->md[MD_WEIGHTS] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *sp_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t sp = sp_md ? dnnl_memory_desc_get_size(sp_md) : 0;
  if (v->reordered) {
    v->md[MD_ISRC] = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    v->md[MD_IDST] = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  }
  rc = hs__variant_weights(k, v, &v->md[MD_WEIGHTS], err);
  if (!rc && (st = dnnl_primitive_create(&v->prim[QP_CONV], pd)) != dnnl_success)
    rc = hs__dnnl_fail(err, st, "qconv: creating the convolution");
  dnnl_primitive_desc_destroy(pd);
  v->nprim = 4;
  if (rc) return rc;
  size_t sp1 = 0, sp2 = 0;
  if (v->reordered && !dnnl_memory_desc_equal(&v->md[MD_ISRC], &v->md[MD_SRC]))
    rc = hs__make_reorder(&v->md[MD_SRC], &v->md[MD_ISRC], &v->prim[QP_SRC], &sp1, err);
  if (!rc && v->reordered && !dnnl_memory_desc_equal(&v->md[MD_IDST], &v->md[MD_DST]))
    rc = hs__make_reorder(&v->md[MD_IDST], &v->md[MD_DST], &v->prim[QP_DST], &sp2, err);
  /* a residual in the caller's dst layout, reordered into the internal one (same type size) */
  size_t sp3 = 0;
  if (!rc && p->sum && v->prim[QP_DST]) {
    rc = act_md(&v->md[MD_RES], nd, dd, p->sum_type, p->dst_layout, 0, err);
    dnnl_memory_desc_t imd = v->md[MD_IDST];
    imd.data_type = dt_of(p->sum_type);
    if (!rc) rc = hs__make_reorder(&v->md[MD_RES], &imd, &v->prim[QP_RES], &sp3, err);
  }
  if (rc) return rc;
  if (sp3 > sp) sp = sp3;
  if (sp1 > sp) sp = sp1;
  if (sp2 > sp) sp = sp2;
  hs__place_temps(v, sp, v->prim[QP_SRC] ? &v->md[MD_ISRC] : NULL, v->prim[QP_DST] ? &v->md[MD_IDST] : NULL);
  return 0;
}

static int qconv_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                      dnnl_memory_t scratch, hs_error *err) {
  const hs_qconv_params *p = &k->p.qc;
  if (a->nsrc < 1 || !a->src[0]) return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv needs an input");
  int rc = 0;
  const void *src = a->src[0];
  const dnnl_memory_desc_t *smd = &v->md[MD_SRC], *dmd = &v->md[MD_DST];
  void *dst = a->dst;
  if (v->prim[QP_SRC]) {
    void *t = (char *)a->scratch + v->off[0];
    rc = hs__run_reorder(v->prim[QP_SRC], s, scratch, &v->md[MD_SRC], src, &v->md[MD_ISRC], t, err);
    src = t;
    smd = &v->md[MD_ISRC];
  }
  if (rc) return rc;
  if (v->reordered) {
    smd = &v->md[MD_ISRC];
    if (v->prim[QP_DST]) dst = (char *)a->scratch + v->off[1];
    dmd = &v->md[MD_IDST];
  }
  /* the sum post-op reads the residual from the buffer the convolution writes */
  if (p->sum) {
    if (!a->residual) return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv: fused sum needs a residual");
    dnnl_memory_desc_t imd = *dmd;
    imd.data_type = dt_of(p->sum_type);
    if (v->prim[QP_RES]) rc = hs__run_reorder(v->prim[QP_RES], s, scratch, &v->md[MD_RES], a->residual, &imd, dst, err);
    else if (a->residual != dst) memcpy(dst, a->residual, dnnl_memory_desc_get_size(dmd));
    if (rc) return rc;
  }
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  rc = hs__argv_add(&av, DNNL_ARG_SRC, smd, src, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_WEIGHTS], v->weights, err);
  if (!rc && p->bias) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MD_BIAS], p->bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, dmd, dst, err);
  if (!rc && p->src_zp) rc = hs__argv_add(&av, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, &v->md[MD_ZP], &p->src_zp, err);
  if (!rc && p->dst_zp) rc = hs__argv_add(&av, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, &v->md[MD_ZP], &p->dst_zp, err);
  if (!rc) rc = hs__exec(v->prim[QP_CONV], s, &av, err);
  hs__argv_release(&av, owned);
  if (!rc && v->prim[QP_DST]) rc = hs__run_reorder(v->prim[QP_DST], s, scratch, dmd, dst, &v->md[MD_DST], a->dst, err);
  return rc;
}

static const char *qconv_describe(const hs_kernel *k) {
  static _Thread_local char buf[160];
  const hs_qconv_params *p = &k->p.qc;
  static const char *ty[] = {"u8", "s8", "f32"}, *lay[] = {"nchw", "nhwc", "nChw8c"};
  snprintf(buf, sizeof buf, "qconv %s->%s ic %lld oc %lld g %lld in %lldx%lld k %lld s %lld %s->%s zp %d/%d",
           ty[p->src_type], ty[p->dst_type], (long long)p->in_c, (long long)p->out_c, (long long)p->groups,
           (long long)p->in[0], (long long)(p->nsp > 1 ? p->in[1] : 1), (long long)p->kernel[0],
           (long long)p->stride[0], lay[p->src_layout], lay[p->dst_layout], (int)p->src_zp, (int)p->dst_zp);
  return buf;
}

static const hs__kvt qconv_vt = {"qconv", qconv_build, qconv_exec, qconv_describe};

int hs_kernel_qconv_create(const hs_qconv_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "qconv: device not available");
  if (p->nsp < 1 || p->nsp > 3) return hs_error_set(err, HS_UNSUPPORTED, "qconv: %d spatial dims", p->nsp);
  if (p->src_type > HS_Q_S8 || p->dst_type > HS_Q_F32 || (p->dst_type == HS_Q_F32 && p->dst_zp) ||
      (p->sum && (p->sum_type > HS_Q_S8 || p->dst_type == HS_Q_F32)))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv: bad data types");
  if (p->groups < 1 || p->in_c < 1 || p->out_c < 1 || p->in_c % p->groups || p->out_c % p->groups || p->batch < 1)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv: channels %lld -> %lld do not split into %lld groups",
                        (long long)p->in_c, (long long)p->out_c, (long long)p->groups);
  if (!p->weights || !p->scales || (p->nscales != 1 && p->nscales != p->out_c))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv: weights and 1 or out_c scales are required");
  int64_t wcount = p->out_c * (p->in_c / p->groups);
  for (int i = 0; i < p->nsp; i++) {
    if (p->kernel[i] < 1 || p->stride[i] < 1 || p->dilation[i] < 1 || p->in[i] < 1 || p->out[i] < 1 ||
        p->pad_begin[i] < 0 || p->pad_end[i] < 0 || p->kernel[i] > (1 << 20))
      return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv: bad size on spatial axis %d", i);
    /* oneDNN trusts these sizes: an inconsistent output size would read out of bounds. */
    int64_t room = p->in[i] + p->pad_begin[i] + p->pad_end[i] - ((p->kernel[i] - 1) * p->dilation[i] + 1);
    if (room < 0 || p->out[i] != room / p->stride[i] + 1)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv: output size %lld on spatial axis %d is wrong",
                          (long long)p->out[i], i);
    if (wcount > ((int64_t)1 << 40) / p->kernel[i]) return hs_error_set(err, HS_LIMIT, "qconv: weights too large");
    wcount *= p->kernel[i];
  }
  hs_kernel *k;
  int rc = hs__kernel_new(&qconv_vt, &k, err);
  if (rc) return rc;
  k->p.qc = *p;
  dnnl_dims_t wd;
  int wn = weight_dims(p, wd);
  static const dnnl_format_tag_t plain[2][3] = {{dnnl_oiw, dnnl_oihw, dnnl_oidhw}, {dnnl_goiw, dnnl_goihw, dnnl_goidhw}};
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&k->w_plain_md, wn, wd, dnnl_s8, plain[p->groups > 1][p->nsp - 1]);
  if (st != dnnl_success) {
    hs_kernel_destroy(k);
    return hs__dnnl_fail(err, st, "qconv: describing weights");
  }
  k->w_plain = malloc((size_t)wcount);
  if (!k->w_plain) {
    hs_kernel_destroy(k);
    return hs_error_set(err, HS_NO_MEMORY, "qconv: copying %lld weights", (long long)wcount);
  }
  memcpy(k->w_plain, p->weights, (size_t)wcount);
  k->p.qc.weights = NULL;
  rc = hs__own_floats(k, p->bias, p->out_c, &k->p.qc.bias, err);
  if (!rc) rc = hs__own_floats(k, p->scales, p->nscales, &k->p.qc.scales, err);
  if (rc) {
    hs_kernel_destroy(k);
    return rc;
  }
  rc = hs__kernel_finish(k, p->batch, err);
  if (rc) return rc;
  *out = k;
  return 0;
}

/* ---- qmatmul ---- */

enum { MM_A = 0, MM_DST = 1, MM_BIAS = 2, MM_ZP = 3 };

static int qmm_build(hs_kernel *k, int64_t rows, hs__variant *v, hs_error *err) {
  const hs_qmatmul_params *p = &k->p.qmm;
  dnnl_dims_t ad = {rows, p->k}, wd = {p->k, p->n}, dd = {rows, p->n}, bd = {1, p->n}, one = {1};
  dnnl_memory_desc_t w_any;
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&v->md[MM_A], 2, ad, dt_of(p->src_type), dnnl_ab);
  if (st == dnnl_success)
    st = dnnl_memory_desc_init_by_tag(&v->md[MM_DST], 2, dd, p->dst_s32 ? dnnl_s32 : dt_of(p->dst_type), dnnl_ab);
  if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&w_any, 2, wd, dnnl_s8, dnnl_format_tag_any);
  if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&v->md[MM_ZP], 1, one, dnnl_s32, dnnl_a);
  if (st == dnnl_success && p->bias) st = dnnl_memory_desc_init_by_tag(&v->md[MM_BIAS], 2, bd, dnnl_f32, dnnl_ab);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "qmatmul: describing operands");
  dnnl_primitive_attr_t attr;
  int rc = hs__make_attr(&p->post, &attr, err);
  if (rc) return rc;
  const int32_t runtime = DNNL_RUNTIME_S32_VAL;
  if (!p->dst_s32) st = dnnl_primitive_attr_set_output_scales(attr, p->nscales, p->nscales > 1 ? 1 << 1 : 0, p->scales);
  if (st == dnnl_success && (p->src_zp || p->src_zp_runtime))
    st = dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &runtime);
  if (st == dnnl_success && p->dst_zp) st = dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_DST, 1, 0, &runtime);
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success)
    st = dnnl_matmul_desc_init(&md, &v->md[MM_A], &w_any, p->bias ? &v->md[MM_BIAS] : NULL, &v->md[MM_DST]);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &md, attr, hs__dnnl_engine(), NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "qmatmul: int8 matmul");
  return hs__add_weights_prim(k, v, pd, err);
}

static int qmm_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                    dnnl_memory_t scratch, hs_error *err) {
  const hs_qmatmul_params *p = &k->p.qmm;
  if (a->nsrc < 1 || !a->src[0] || (p->src_zp_runtime && (a->nsrc < 2 || !a->src[1])))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qmatmul needs A%s", p->src_zp_runtime ? " and its zero point" : "");
  const int32_t *src_zp = p->src_zp_runtime ? a->src[1] : &p->src_zp;
  int rc = hs__prepare_sum(&p->post, a, dnnl_memory_desc_get_size(&v->md[MM_DST]), err);
  if (rc) return rc;
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  rc = hs__argv_add(&av, DNNL_ARG_SRC, &v->md[MM_A], a->src[0], err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_WEIGHTS], v->weights, err);
  if (!rc && p->bias) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MM_BIAS], p->bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, &v->md[MM_DST], a->dst, err);
  if (!rc && (p->src_zp || p->src_zp_runtime))
    rc = hs__argv_add(&av, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, &v->md[MM_ZP], src_zp, err);
  if (!rc && p->dst_zp) rc = hs__argv_add(&av, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, &v->md[MM_ZP], &p->dst_zp, err);
  if (!rc) rc = hs__exec(v->prim[0], s, &av, err);
  hs__argv_release(&av, owned);
  return rc;
}

static const char *qmm_describe(const hs_kernel *k) {
  static _Thread_local char buf[128];
  const hs_qmatmul_params *p = &k->p.qmm;
  static const char *ty[] = {"u8", "s8", "f32"};
  snprintf(buf, sizeof buf, "qmatmul %s->%s k %lld n %lld scales %d zp %d%s/%d%s post %d", ty[p->src_type],
           p->dst_s32 ? "s32" : ty[p->dst_type], (long long)p->k, (long long)p->n, p->nscales, (int)p->src_zp,
           p->src_zp_runtime ? "(run)" : "", (int)p->dst_zp, p->bias ? " bias" : "", p->post.count);
  return buf;
}

static const hs__kvt qmm_vt = {"qmatmul", qmm_build, qmm_exec, qmm_describe};

int hs_kernel_qmatmul_create(const hs_qmatmul_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "qmatmul: device not available");
  if (p->src_type > HS_Q_S8 || (!p->dst_s32 && (p->dst_type > HS_Q_F32 || (p->dst_type == HS_Q_F32 && p->dst_zp))) ||
      (p->dst_s32 && (p->bias || p->dst_zp)) || (p->post.count && (p->dst_s32 || p->dst_type != HS_Q_F32)))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qmatmul: bad data types");
  if (p->rows < 1 || p->k < 1 || p->n < 1 || p->k > ((int64_t)1 << 20) || p->n > ((int64_t)1 << 20))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qmatmul: bad sizes %lld x %lld x %lld", (long long)p->rows,
                        (long long)p->k, (long long)p->n);
  if (!p->weights || (!p->dst_s32 && (!p->scales || (p->nscales != 1 && p->nscales != p->n))))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "qmatmul: B and 1 or n scales are required");
  hs_kernel *k;
  int rc = hs__kernel_new(&qmm_vt, &k, err);
  if (rc) return rc;
  k->p.qmm = *p;
  k->p.qmm.weights = NULL;
  k->p.qmm.bias = k->p.qmm.scales = NULL;
  size_t wbytes = (size_t)(p->k * p->n);
  dnnl_dims_t wd = {p->k, p->n};
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&k->w_plain_md, 2, wd, dnnl_s8, dnnl_ab);
  if (st != dnnl_success) {
    hs_kernel_destroy(k);
    return hs__dnnl_fail(err, st, "qmatmul: describing B");
  }
  if (!(k->w_plain = malloc(wbytes))) {
    hs_kernel_destroy(k);
    return hs_error_set(err, HS_NO_MEMORY, "qmatmul: copying %zu bytes of B", wbytes);
  }
  memcpy(k->w_plain, p->weights, wbytes);
  rc = hs__own_floats(k, p->bias, p->n, &k->p.qmm.bias, err);
  if (!rc && !p->dst_s32) rc = hs__own_floats(k, p->scales, p->nscales, &k->p.qmm.scales, err);
  if (rc) {
    hs_kernel_destroy(k);
    return rc;
  }
  rc = hs__kernel_finish(k, p->rows, err);
  if (rc) return rc;
  *out = k;
  return 0;
}

/* Writes k's int8 weights back in their plain layout (w_plain_md) into dst, `want` bytes. Variant 0 is published
 * (hs__kernel_finish built it) and immutable: its weights, in the implementation's layout, are the kernel's only
 * copy once w_plain is gone (w_plain stays while they are halved, which no reorder gives back:
 * hs__weights_one_way). An s8 to s8 reorder of their values gives them back exactly. */
static int int8_weights_back(const hs_kernel *k, int8_t *dst, size_t dst_bytes, const char *what, hs_error *err) {
  size_t want = dnnl_memory_desc_get_size(&k->w_plain_md);
  if (dst_bytes != want)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s: %zu bytes given, they are %zu", what, dst_bytes, want);
  if (atomic_load_explicit(&((hs_kernel *)k)->nvar, memory_order_acquire) < 1 || !k->var[0]->weights)
    return hs_error_set(err, HS_INTERNAL, "%s: the kernel holds none", what);
  if (k->w_plain) {
    memcpy(dst, k->w_plain, want);
    return 0;
  }
  int rc = hs__reorder_into(&k->var[0]->md[MD_WEIGHTS], k->var[0]->weights, &k->w_plain_md, dst, err);
  if (rc) hs_error_prefix(err, "%s", what);
  return rc;
}

int hs_kernel_qmatmul_b(const hs_kernel *k, int8_t *dst, size_t dst_bytes, hs_error *err) {
  if (!k || k->vt != &qmm_vt) return hs_error_set(err, HS_INVALID_ARGUMENT, "qmatmul B: not a qmatmul kernel");
  return int8_weights_back(k, dst, dst_bytes, "qmatmul B", err);
}

int hs_kernel_qconv_weights(const hs_kernel *k, int8_t *dst, size_t dst_bytes, hs_error *err) {
  if (!k || k->vt != &qconv_vt) return hs_error_set(err, HS_INVALID_ARGUMENT, "qconv weights: not a qconv kernel");
  return int8_weights_back(k, dst, dst_bytes, "qconv weights", err);
}

/* cpu_dnnl_conv.c - convolution, deconvolution and matmul kernels on oneDNN, with fused post-ops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/wblock.h"
#include "kernels/cpu_dnnl.h"
#include "kernels/parallel.h"

/* Slots in hs__variant.md */
enum { MD_SRC = 0, MD_DST = 1, MD_BIAS = 2, MD_SRC1 = 3, MD_WEIGHTS = HS__MAX_MDS - 1 };

/* k->flags bit of a matmul whose B is a constant held by the kernel. */
#define MM_B_CONST 1

static int64_t numel(int ndim, const int64_t *dims) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (dims[i] <= 0 || n > INT64_MAX / dims[i]) return -1;
    n *= dims[i];
  }
  return n;
}

/* ================= convolution / deconvolution ================= */

static dnnl_format_tag_t conv_weights_tag(int nsp, int grouped, int transposed) {
  static const dnnl_format_tag_t tags[2][2][3] = {
      {{dnnl_oiw, dnnl_oihw, dnnl_oidhw}, {dnnl_bac /* iow */, dnnl_iohw, dnnl_iodhw}},
      {{dnnl_goiw, dnnl_goihw, dnnl_goidhw}, {dnnl_acbd /* giow */, dnnl_giohw, dnnl_giodhw}}};
  return tags[grouped][transposed][nsp - 1];
}

/* oneDNN weight dims: [g,] oc/g, ic/g, k... for both convolution and deconvolution. */
static int conv_weight_dims(const hs_conv_params *p, int64_t *wd) {
  int n = 0;
  if (p->groups > 1) wd[n++] = p->groups;
  wd[n++] = p->out_c / p->groups;
  wd[n++] = p->in_c / p->groups;
  for (int i = 0; i < p->nsp; i++) wd[n++] = p->kernel[i];
  return n;
}

/* Conv variants use fixed prim[] slots (NULL when unused). */
enum { CP_CONV = 0, CP_SRC = 1, CP_DST = 2, CP_RES = 3 };
/* Internal activation descriptors when the caller's layouts would force a slow implementation. */
enum { MD_ISRC = 4, MD_IDST = 5, MD_RES = 6 };

static int has_sum(const hs_post_ops *p) {
  for (int i = 0; i < p->count; i++)
    if (p->op[i].kind == HS_POST_SUM) return 1;
  return 0;
}


/* Creates the (de)convolution primitive descriptor for src/dst descriptors s and d. */
static dnnl_status_t conv_pd(const hs_conv_params *p, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *s,
                             const dnnl_memory_desc_t *w, const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *d,
                             const dnnl_dims_t strides, const dnnl_dims_t dil, const dnnl_dims_t pl,
                             const dnnl_dims_t pr, const_dnnl_primitive_attr_t attr, dnnl_primitive_desc_t *pd) {
  dnnl_status_t st;
  *pd = NULL;
  if (!p->transposed) {
    dnnl_convolution_desc_t cd;
    st = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, alg, s, w, b, d, strides, dil, pl,
                                                    pr);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(pd, &cd, attr, hs__dnnl_engine(), NULL);
  } else {
    dnnl_deconvolution_desc_t cd;
    st = dnnl_dilated_deconvolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_deconvolution_direct, s, w,
                                                      b, d, strides, dil, pl, pr);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(pd, &cd, attr, hs__dnnl_engine(), NULL);
  }
  return st;
}

static int is_reference_impl(const_dnnl_primitive_desc_t pd) {
  const char *impl = NULL;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return 0;
  return strncmp(impl, "ref", 3) == 0;
}

static int is_gemm_impl(const_dnnl_primitive_desc_t pd) {
  const char *impl = NULL;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return 0;
  return strstr(impl, "gemm") != NULL;
}

/* A spatial window larger than 1x1: there oneDNN's direct jit kernels beat its im2col + gemm path by
 * far (ResNet-50's 7x7 stem: 14 ms against 37 ms here), enough to pay for reorders around them. */
static int has_window(const hs_conv_params *p) {
  for (int i = 0; i < p->nsp; i++)
    if (p->kernel[i] > 1) return 1;
  return 0;
}

/* A 3x3, stride-1, undilated, one-group 2-D convolution with input channels in whole 16-lane blocks
 * and output channels that fill their blocks at least three quarters (24 of 32 does): oneDNN's
 * Winograd kernels (AVX-512 only, nChw16c activations) take it. Measured on this AVX-512 EPYC, one
 * thread, CPU per execution: ResNet-50's 3x3 layers (+relu) 0.4-0.8 ms against brgconv's 0.8-1.0 ms
 * at batch 1 and 3.6-4.6 against 6.6-7.2 ms at batch 8 (c512 at 7x7: 7.9 against 7.5, the one loss);
 * the detector's 96 -> 24 channels at 160x160 3.1 against 5.9 ms (batch 1), 29.8 against 48.1 (batch
 * 8); outputs within 5e-6 of the direct kernels' (docs/KERNELS.md, Winograd). Off unless
 * HS_KERNELS_WINOGRAD=1: the Winograd weights and the plain copy they force cost ResNet-50 +34 MB max RSS
 * (batch-1 file; +150 MB for the dynamic-batch file at batch 8, two weight formats) and 45-65% more load
 * CPU (a reload's price) for 3-8% less time per run (bench/results/engine-s23-resnet50-2026-12-07.md). */
static int winograd_candidate(const hs_conv_params *p) {
  if (p->transposed || p->nsp != 2 || p->groups != 1 || p->in_c % 16) return 0;
  if (p->out_c * 4 < (p->out_c + 15) / 16 * 16 * 3) return 0; /* output blocks padded by more than a quarter */
  for (int i = 0; i < 2; i++)
    if (p->kernel[i] != 3 || p->stride[i] != 1 || p->dilation[i] != 1) return 0;
  /* not below 8x8 outputs, at any batch: the 4x3 tiles lose on 7x7 at batch 8, and at batch 1 ResNet-50's two
   * 512-channel 7x7 layers saved 0.1-0.4 of Winograd's ~4 ms (one thread) for 34 of the 61 MB it cost */
  if (p->out[0] * p->out[1] < 64) return 0;
  const char *env = getenv("HS_KERNELS_WINOGRAD");
  return env && strcmp(env, "1") == 0;
}

static int is_winograd_impl(const_dnnl_primitive_desc_t pd) {
  const char *impl = NULL;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return 0;
  return strstr(impl, "wino") != NULL;
}

static size_t pd_scratchpad(const_dnnl_primitive_desc_t pd) {
  const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  return sp ? dnnl_memory_desc_get_size(sp) : 0;
}

/* Sets v->weights for v->md[MD_WEIGHTS]. A kernel made from another's weights (weights_from) has no
 * plain copy: a variant shares its own variant 0's or the other's buffer when the layouts agree, else
 * reorders the other's plain copy (kept while its weights are in Winograd's one-way format) or its
 * variant 0; every other case is the shared rule of hs__variant_weights. */
static int conv_variant_weights(hs_kernel *k, hs__variant *v, hs_error *err) {
  const dnnl_memory_desc_t *want = &v->md[MD_WEIGHTS];
  if (!k->w_from) return hs__variant_weights(k, v, want, err);
  const hs__variant *own = atomic_load_explicit(&k->nvar, memory_order_acquire) > 0 ? k->var[0] : NULL;
  const hs_kernel *f = k->w_from; /* its variant 0 was published before k was created: immutable */
  const hs__variant *from = f->var[0];
  const void *share = own && dnnl_memory_desc_equal(&own->md[MD_WEIGHTS], want) ? own->weights
                      : dnnl_memory_desc_equal(&from->md[MD_WEIGHTS], want) ? from->weights
                                                                            : NULL;
  if (share) {
    v->weights = (void *)share;
    v->weights_shared = 1;
    return 0;
  }
  if (f->w_plain) return hs__reorder_alloc(&f->w_plain_md, f->w_plain, want, &v->weights, err);
  if (want->format_kind != dnnl_format_kind_wino)
    return hs__reorder_alloc(&from->md[MD_WEIGHTS], from->weights, want, &v->weights, err);
  /* Winograd's format from the other's direct layout: oneDNN reorders into it only from a plain layout,
   * so through a temporary plain copy (a 7x7 kernel runs direct, the same weights at 12x10 Winograd) */
  void *plain = NULL;
  int rc = hs__reorder_alloc(&from->md[MD_WEIGHTS], from->weights, &f->w_plain_md, &plain, err);
  if (!rc) rc = hs__reorder_alloc(&f->w_plain_md, plain, want, &v->weights, err);
  hs_wblock_free(plain);
  return rc;
}

/* Builds the variant. The caller's activation layouts are tried first; when oneDNN only has its
 * reference implementation for them (e.g. NCHW in, NHWC out), the convolution is built with the
 * layouts oneDNN prefers and reorders into/out of scratch wrap it. */
static int is_shuffle_deconv(const hs_conv_params *p);
static int dw_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err);
static int shuffle_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err);
static int is_planes_to_nhwc(const hs_conv_params *p, int64_t batch, const dnnl_memory_desc_t *smd,
                             const dnnl_memory_desc_t *imd);

static int conv_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_conv_params *p = &k->p.conv;
  if (is_shuffle_deconv(p)) return shuffle_build(k, batch, v, err);
  if (p->dw_weights) return dw_build(k, batch, v, err);
  int nd = 2 + p->nsp;
  int64_t sd[5] = {batch, p->in_c}, dd[5] = {batch, p->out_c}, wd[6];
  for (int i = 0; i < p->nsp; i++) {
    sd[2 + i] = p->in[i];
    dd[2 + i] = p->out[i];
  }
  int rc = hs__md_act(&v->md[MD_SRC], nd, sd, p->src_layout, err);
  if (!rc) rc = hs__md_act(&v->md[MD_DST], nd, dd, p->dst_layout, err);
  if (rc) return rc;
  int wn = conv_weight_dims(p, wd);
  dnnl_dims_t wdims, strides, dil, pl, pr;
  for (int i = 0; i < wn; i++) wdims[i] = wd[i];
  for (int i = 0; i < p->nsp; i++) {
    strides[i] = p->stride[i];
    dil[i] = p->dilation[i] - 1;
    pl[i] = p->pad_begin[i];
    pr[i] = p->pad_end[i];
  }
  dnnl_memory_desc_t w_any;
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&w_any, wn, wdims, dnnl_f32, dnnl_format_tag_any);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "describing weights");
  memset(&v->md[MD_BIAS], 0, sizeof v->md[MD_BIAS]);
  if (p->bias) {
    dnnl_dims_t bd = {p->out_c};
    st = dnnl_memory_desc_init_by_tag(&v->md[MD_BIAS], 1, bd, dnnl_f32, dnnl_a);
    if (st != dnnl_success) return hs__dnnl_fail(err, st, "describing bias");
  }
  const dnnl_memory_desc_t *bias = p->bias ? &v->md[MD_BIAS] : NULL;
  dnnl_primitive_attr_t attr;
  rc = hs__make_attr(&p->post, &attr, err);
  if (rc) return rc;
  dnnl_primitive_desc_t pd = NULL;
  if (winograd_candidate(p)) {
    /* Winograd in the layouts it wants (nChw16c), reorders around it where the caller's differ */
    dnnl_memory_desc_t s_any, d_any;
    dnnl_dims_t sdd = {sd[0], sd[1], sd[2], sd[3]}, ddd = {dd[0], dd[1], dd[2], dd[3]};
    st = dnnl_memory_desc_init_by_tag(&s_any, nd, sdd, dnnl_f32, dnnl_format_tag_any);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&d_any, nd, ddd, dnnl_f32, dnnl_format_tag_any);
    if (st == dnnl_success)
      st = conv_pd(p, dnnl_convolution_winograd, &s_any, &w_any, bias, &d_any, strides, dil, pl, pr, attr, &pd);
    if (st == dnnl_success && is_winograd_impl(pd)) {
      v->reordered = 1;
    } else if (pd) {
      dnnl_primitive_desc_destroy(pd);
      pd = NULL;
    }
  }
  if (!pd) st = conv_pd(p, dnnl_convolution_direct, &v->md[MD_SRC], &w_any, bias, &v->md[MD_DST], strides, dil, pl, pr, attr, &pd);
  int slow = !v->reordered && st == dnnl_success &&
             (is_reference_impl(pd) || (is_gemm_impl(pd) && has_window(p) && !p->transposed));
  if (st != dnnl_success || slow) {
    dnnl_memory_desc_t s_any, d_any;
    dnnl_dims_t sdd, ddd;
    for (int i = 0; i < nd; i++) {
      sdd[i] = sd[i];
      ddd[i] = dd[i];
    }
    dnnl_primitive_desc_t pd2 = NULL;
    dnnl_status_t st2 = dnnl_memory_desc_init_by_tag(&s_any, nd, sdd, dnnl_f32, dnnl_format_tag_any);
    if (st2 == dnnl_success) st2 = dnnl_memory_desc_init_by_tag(&d_any, nd, ddd, dnnl_f32, dnnl_format_tag_any);
    if (st2 == dnnl_success) st2 = conv_pd(p, dnnl_convolution_direct, &s_any, &w_any, bias, &d_any, strides, dil, pl, pr, attr, &pd2);
    if (st2 == dnnl_success && !is_reference_impl(pd2) && (st != dnnl_success || !is_gemm_impl(pd2) || is_reference_impl(pd))) {
      if (pd) dnnl_primitive_desc_destroy(pd);
      pd = pd2;
      st = dnnl_success;
      v->reordered = 1;
    } else if (pd2) {
      dnnl_primitive_desc_destroy(pd2);
    }
  }
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, p->transposed ? "deconvolution" : "convolution");
  v->md[MD_WEIGHTS] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  size_t sp = pd_scratchpad(pd);
  if (v->reordered) {
    v->md[MD_ISRC] = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    v->md[MD_IDST] = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  }
  rc = conv_variant_weights(k, v, err);
  if (!rc) {
    st = dnnl_primitive_create(&v->prim[CP_CONV], pd);
    if (st != dnnl_success) rc = hs__dnnl_fail(err, st, "creating a convolution");
  }
  dnnl_primitive_desc_destroy(pd);
  v->nprim = 4;
  if (rc) return rc;
  size_t sp1 = 0, sp2 = 0, sp3 = 0;
  if (v->reordered) {
    if (!dnnl_memory_desc_equal(&v->md[MD_ISRC], &v->md[MD_SRC]))
      rc = hs__make_reorder(&v->md[MD_SRC], &v->md[MD_ISRC], &v->prim[CP_SRC], &sp1, err);
    if (!rc && v->prim[CP_SRC]) v->src_planes = is_planes_to_nhwc(p, batch, &v->md[MD_SRC], &v->md[MD_ISRC]);
    if (!rc && !dnnl_memory_desc_equal(&v->md[MD_IDST], &v->md[MD_DST]))
      rc = hs__make_reorder(&v->md[MD_IDST], &v->md[MD_DST], &v->prim[CP_DST], &sp2, err);
    if (rc) return rc;
  }
  /* The residual of a fused sum is copied (same layout) or reordered into the buffer the
   * convolution writes, which then accumulates into it. */
  const dnnl_memory_desc_t *conv_dst = v->prim[CP_DST] ? &v->md[MD_IDST] : &v->md[MD_DST];
  if (has_sum(&p->post)) {
    int64_t rd[5] = {batch, p->out_c};
    for (int i = 0; i < p->nsp; i++) rd[2 + i] = p->out[i];
    rc = hs__md_act(&v->md[MD_RES], nd, rd, p->res_layout, err);
    if (!rc && !dnnl_memory_desc_equal(&v->md[MD_RES], conv_dst))
      rc = hs__make_reorder(&v->md[MD_RES], conv_dst, &v->prim[CP_RES], &sp3, err);
    if (rc) return rc;
  }
  if (sp1 > sp) sp = sp1;
  if (sp2 > sp) sp = sp2;
  if (sp3 > sp) sp = sp3;
  hs__place_temps(v, sp, v->prim[CP_SRC] ? &v->md[MD_ISRC] : NULL, v->prim[CP_DST] ? &v->md[MD_IDST] : NULL);
  return 0;
}

/* ---- a 1x1 convolution with a depthwise 3x3 convolution fused after it ----
 *
 * MobileNet's inverted residual expands with a 1x1 convolution, then filters each channel with a
 * depthwise 3x3: the expanded tensor, 4-6x the block's input, is written whole by the first and read
 * back by the second. oneDNN's depthwise post-op (dnnl_post_ops_append_dw) computes the 3x3 from rows
 * of the 1x1 result still in cache. oneDNN 2.6.3 offers it for f32 on AVX-512 in two ways: jit_1x1 (a
 * real fusion) and ref_fused_convolution (the two primitives one after the other: nothing gained),
 * which it picks for most batch-1 shapes. jit_1x1 computes wrong values with channels-last activations
 * (every shape tried), so the fused primitive runs in the layouts oneDNN picks (nChw16c) with reorders
 * from and to the caller's. Measured on this AVX-512 EPYC, 2 threads, expand + dw alone
 * (bench/engine/dw_fusion.c, bench/results/dw-fusion-2026-12-07.md): with those reorders, and the 1x1's
 * input padded to 16 channels, the fusion wins only where the input has whole 16-channel blocks, the
 * depthwise stride is 2 (its output, reordered back, is a quarter of the 1x1 result) and the 1x1 result
 * is tens of MB (MobileNetV2's 16 -> 96 channels at 112x112, batch 8: 2.32 -> 1.61 ms; MobileNetV3's
 * 16 -> 64: 1.25 -> 1.08); it loses elsewhere (the detector's 8 -> 32 at 320x320: 6.7 -> 8.3 ms). So a
 * variant fuses there only (HS_KERNELS_DW_FUSE=1: wherever oneDNN has jit_1x1; =0: never) and otherwise
 * runs the pair: the 1x1 into a scratch temporary in dst's layout, the depthwise from it. */
#define DW_FUSE_MIN_BYTES ((size_t)16 << 20)
enum { CP_DW = 4 };                          /* the depthwise primitive of the pair */
/* the depthwise weights and bias; MD_IDST: the pair's 1x1 result, or the fused primitive's blocked dst */
enum { MD_DWW = MD_SRC1, MD_DWB = MD_RES };

/* Whether variant `batch` should try the fused primitive. */
static int dw_fuse_wanted(const hs_conv_params *p, int64_t batch) {
  const char *env = getenv("HS_KERNELS_DW_FUSE");
  if (env && strcmp(env, "0") == 0) return 0;
  if (env && strcmp(env, "1") == 0) return 1;
  size_t mid = (size_t)batch * (size_t)p->out_c * (size_t)p->in[0] * (size_t)p->in[1] * sizeof(float);
  return mid >= DW_FUSE_MIN_BYTES && p->in_c % 16 == 0 && p->dw_stride == 2;
}

/* The attribute of the fused primitive: post, the depthwise step, dw_post. */
static int dw_fused_attr(const hs_conv_params *p, dnnl_primitive_attr_t *attr, hs_error *err) {
  dnnl_post_ops_t ops = NULL;
  dnnl_status_t st = dnnl_primitive_attr_create(attr);
  if (st == dnnl_success) st = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
  if (st == dnnl_success) st = dnnl_post_ops_create(&ops);
  int rc = st == dnnl_success ? hs__append_post_ops(ops, &p->post, err) : hs__dnnl_fail(err, st, "depthwise post-op");
  if (!rc) {
    st = dnnl_post_ops_append_dw(ops, dnnl_f32, dnnl_f32, dnnl_f32, 3, p->dw_stride, 1, 0, 0, NULL);
    rc = st == dnnl_success ? hs__append_post_ops(ops, &p->dw_post, err) : hs__dnnl_fail(err, st, "depthwise post-op");
  }
  if (!rc && (st = dnnl_primitive_attr_set_post_ops(*attr, ops)) != dnnl_success)
    rc = hs__dnnl_fail(err, st, "setting post-ops");
  if (ops) dnnl_post_ops_destroy(ops);
  if (rc && *attr) {
    dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
  }
  return rc;
}

/* The depthwise weights as the kernel holds them (ONNX's [out_c, 1, 3, 3], seen as goihw). */
static int dw_plain_md(const hs_conv_params *p, dnnl_memory_desc_t *md) {
  dnnl_dims_t d = {p->out_c, 1, 1, 3, 3};
  return dnnl_memory_desc_init_by_tag(md, 5, d, dnnl_f32, dnnl_goihw) == dnnl_success ? 0 : -1;
}

static int dw_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_conv_params *p = &k->p.conv;
  int64_t sd[4] = {batch, p->in_c, p->in[0], p->in[1]}, md4[4] = {batch, p->out_c, p->in[0], p->in[1]};
  int64_t dd[4] = {batch, p->out_c, p->dw_out[0], p->dw_out[1]};
  int rc = hs__md_act(&v->md[MD_SRC], 4, sd, p->src_layout, err);
  if (!rc) rc = hs__md_act(&v->md[MD_DST], 4, dd, p->dst_layout, err);
  if (!rc) rc = hs__md_act(&v->md[MD_IDST], 4, md4, p->dst_layout, err);
  if (rc) return rc;
  dnnl_memory_desc_t w_any, dw_any, dw_plain;
  dnnl_dims_t wdims = {p->out_c, p->in_c, 1, 1}, dwdims = {p->out_c, 1, 1, 3, 3}, bd = {p->out_c};
  dnnl_dims_t one = {1, 1}, zero = {0, 0}, dws = {p->dw_stride, p->dw_stride}, pad1 = {1, 1};
  dnnl_dims_t pr = {(p->dw_out[0] - 1) * p->dw_stride + 2 - p->in[0], (p->dw_out[1] - 1) * p->dw_stride + 2 - p->in[1]};
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&w_any, 4, wdims, dnnl_f32, dnnl_format_tag_any);
  if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&dw_any, 5, dwdims, dnnl_f32, dnnl_format_tag_any);
  if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&v->md[MD_BIAS], 1, bd, dnnl_f32, dnnl_a);
  if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&v->md[MD_DWB], 1, bd, dnnl_f32, dnnl_a);
  if (st != dnnl_success || dw_plain_md(p, &dw_plain))
    return hs__dnnl_fail(err, st == dnnl_success ? dnnl_invalid_arguments : st, "describing a depthwise fusion");
  const dnnl_memory_desc_t *bias = p->bias ? &v->md[MD_BIAS] : NULL;
  dnnl_primitive_desc_t pd = NULL, pd_dw = NULL;
  dnnl_primitive_attr_t attr = NULL;
  if (dw_fuse_wanted(p, batch) && dw_fused_attr(p, &attr, err) == 0) {
    /* The descriptor is the 1x1 convolution's; the primitive's dst is the depthwise result. Layouts are
     * oneDNN's choice (nChw16c) with reorders around: its channels-last f32 fusion (jit_1x1, 2.6.3)
     * computes wrong values (every shape tried, 1 and 2 threads, docs/KERNELS.md). */
    dnnl_memory_desc_t s_any, m_any;
    dnnl_dims_t sdd = {sd[0], sd[1], sd[2], sd[3]}, mdd = {md4[0], md4[1], md4[2], md4[3]};
    st = dnnl_memory_desc_init_by_tag(&s_any, 4, sdd, dnnl_f32, dnnl_format_tag_any);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&m_any, 4, mdd, dnnl_f32, dnnl_format_tag_any);
    if (st == dnnl_success)
      st = conv_pd(p, dnnl_convolution_direct, &s_any, &w_any, bias, &m_any, one, zero, zero, zero, attr, &pd);
    dnnl_primitive_attr_destroy(attr);
    dnnl_memory_desc_t nhwc;
    int64_t ddims[4] = {dd[0], dd[1], dd[2], dd[3]};
    if (st == dnnl_success && (is_reference_impl(pd) || /* ref_fused_convolution: the pair, slower */
                               hs__md_act(&nhwc, 4, ddims, HS_LAYOUT_NHWC, err) ||
                               dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &nhwc))) {
      dnnl_primitive_desc_destroy(pd);
      pd = NULL;
    }
    if (pd) {
      v->fused = 1;
      v->md[MD_ISRC] = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
      v->md[MD_IDST] = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
      v->md[MD_DWW] =
          *dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS);
    }
  }
  hs_error_clear(err);
  if (!pd) { /* the pair: 1x1 into the temporary, then the depthwise convolution */
    if ((rc = hs__make_attr(&p->post, &attr, err))) return rc;
    st = conv_pd(p, dnnl_convolution_direct, &v->md[MD_SRC], &w_any, bias, &v->md[MD_IDST], one, zero, zero, zero,
                 attr, &pd);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return hs__dnnl_fail(err, st, "convolution before a depthwise one");
    hs_conv_params q = *p;
    q.groups = q.in_c = p->out_c;
    if ((rc = hs__make_attr(&p->dw_post, &attr, err))) {
      dnnl_primitive_desc_destroy(pd);
      return rc;
    }
    st = conv_pd(&q, dnnl_convolution_direct, &v->md[MD_IDST], &dw_any, &v->md[MD_DWB], &v->md[MD_DST], dws, zero,
                 pad1, pr, attr, &pd_dw);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) {
      dnnl_primitive_desc_destroy(pd);
      return hs__dnnl_fail(err, st, "depthwise convolution");
    }
    v->md[MD_DWW] = *dnnl_primitive_desc_query_md(pd_dw, dnnl_query_weights_md, 0);
  }
  v->md[MD_WEIGHTS] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  size_t sp = pd_scratchpad(pd), sp2 = pd_dw ? pd_scratchpad(pd_dw) : 0;
  rc = conv_variant_weights(k, v, err);
  if (!rc) rc = hs__reorder_alloc(&dw_plain, p->dw_weights, &v->md[MD_DWW], &v->weights2, err);
  if (!rc && (st = dnnl_primitive_create(&v->prim[CP_CONV], pd)) != dnnl_success)
    rc = hs__dnnl_fail(err, st, "creating a convolution");
  if (!rc && pd_dw && (st = dnnl_primitive_create(&v->prim[CP_DW], pd_dw)) != dnnl_success)
    rc = hs__dnnl_fail(err, st, "creating a depthwise convolution");
  dnnl_primitive_desc_destroy(pd);
  if (pd_dw) dnnl_primitive_desc_destroy(pd_dw);
  v->nprim = 5;
  if (rc) return rc;
  size_t sp3 = 0, sp4 = 0; /* the fused primitive's reorders from and to the caller's layouts */
  if (v->fused && !dnnl_memory_desc_equal(&v->md[MD_ISRC], &v->md[MD_SRC]))
    rc = hs__make_reorder(&v->md[MD_SRC], &v->md[MD_ISRC], &v->prim[CP_SRC], &sp3, err);
  if (!rc && v->fused && !dnnl_memory_desc_equal(&v->md[MD_IDST], &v->md[MD_DST]))
    rc = hs__make_reorder(&v->md[MD_IDST], &v->md[MD_DST], &v->prim[CP_DST], &sp4, err);
  if (rc) return rc;
  if (sp2 > sp) sp = sp2;
  if (sp3 > sp) sp = sp3;
  if (sp4 > sp) sp = sp4;
  hs__place_temps(v, sp, v->prim[CP_SRC] ? &v->md[MD_ISRC] : NULL,
                  !v->fused || v->prim[CP_DST] ? &v->md[MD_IDST] : NULL);
  return 0;
}

static int dw_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                   dnnl_memory_t scratch, hs_error *err) {
  const hs_conv_params *p = &k->p.conv;
  const void *src = a->src[0];
  const dnnl_memory_desc_t *smd = &v->md[MD_SRC], *dmd = &v->md[MD_IDST]; /* the pair: the 1x1 result */
  void *mid = (char *)a->scratch + v->off[1];
  int rc = 0;
  if (v->fused) { /* the fused primitive in its own layouts */
    if (v->prim[CP_SRC]) {
      void *t = (char *)a->scratch + v->off[0];
      rc = hs__run_reorder(v->prim[CP_SRC], s, scratch, &v->md[MD_SRC], src, &v->md[MD_ISRC], t, err);
      src = t;
      smd = &v->md[MD_ISRC];
    }
    if (!v->prim[CP_DST]) {
      dmd = &v->md[MD_DST];
      mid = a->dst;
    }
  }
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_SRC, smd, src, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_WEIGHTS], v->weights, err);
  if (!rc && p->bias) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MD_BIAS], p->bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, dmd, mid, err);
  if (!rc && v->fused) {
    rc = hs__argv_add(&av, DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS, &v->md[MD_DWW], v->weights2, err);
    if (!rc) rc = hs__argv_add(&av, DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS, &v->md[MD_DWB], p->dw_bias, err);
  }
  if (!rc) rc = hs__exec(v->prim[CP_CONV], s, &av, err);
  hs__argv_release(&av, owned);
  if (!rc && v->fused && v->prim[CP_DST])
    rc = hs__run_reorder(v->prim[CP_DST], s, scratch, dmd, mid, &v->md[MD_DST], a->dst, err);
  if (rc || v->fused) return rc;
  av.n = 0;
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  rc = hs__argv_add(&av, DNNL_ARG_SRC, &v->md[MD_IDST], mid, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_DWW], v->weights2, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MD_DWB], p->dw_bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, &v->md[MD_DST], a->dst, err);
  if (!rc) rc = hs__exec(v->prim[CP_DW], s, &av, err);
  hs__argv_release(&av, owned);
  return rc;
}

/* ---- ConvTranspose with kernel == stride: a 1x1 convolution, then depth-to-space ----
 *
 * When a 2-D ConvTranspose's kernel equals its stride (no padding, dilation 1, one group) every input
 * pixel writes its own kh x kw block of the output: the deconvolution is a 1x1 convolution from C to
 * O*kh*kw channels (the ONNX weights [C][O][kh][kw] are exactly that convolution's weights in "iohw"
 * order) into a channels-last temporary G[n][y][x][o][ky][kx], then one strided reorder that moves G's
 * (o, ky, kx) to out[n][o][y*kh+ky][x*kw+kx]. Bias and activations act per element, so they go on the
 * 1x1 convolution (the bias repeated kh*kw times). oneDNN 2.6 has no fast path for this: its gemm
 * deconvolution (NCHW) took 9.8 ms for a DBNet head's 24 -> 1 channel, 320x320 -> 640x640 layer and
 * its blocked jit one 48 ms (1 output channel padded to 16), against well under 1 ms this way. */
enum { MD_G6 = MD_SRC1, MD_D6 = MD_RES }; /* the 6-D views of G and of the output */

static int is_shuffle_deconv(const hs_conv_params *p) {
  if (!p->transposed || p->groups != 1 || p->nsp != 2) return 0;
  if (p->src_layout == HS_LAYOUT_NCHW8C || p->dst_layout == HS_LAYOUT_NCHW8C) return 0;
  for (int i = 0; i < p->nsp; i++)
    if (p->kernel[i] != p->stride[i] || p->dilation[i] != 1 || p->pad_begin[i] || p->pad_end[i]) return 0;
  return 1;
}

/* The 6-D (n, o, y, ky, x, kx) view of a [batch, O, H*kh, W*kw] output in layout l (NCHW or NHWC). */
static int shuffle_out_md(const hs_conv_params *p, int64_t batch, hs_layout l, dnnl_memory_desc_t *md) {
  int64_t O = p->out_c, H = p->in[0], W = p->in[1], kh = p->kernel[0], kw = p->kernel[1];
  dnnl_dims_t d = {batch, O, H, kh, W, kw}, st;
  if (l == HS_LAYOUT_NHWC) {
    st[1] = 1, st[5] = O, st[4] = kw * O, st[3] = W * kw * O, st[2] = kh * W * kw * O, st[0] = H * kh * W * kw * O;
  } else {
    st[5] = 1, st[4] = kw, st[3] = W * kw, st[2] = kh * W * kw, st[1] = H * kh * W * kw, st[0] = O * st[1];
  }
  return dnnl_memory_desc_init_by_strides(md, 6, d, dnnl_f32, st) == dnnl_success ? 0 : -1;
}

/* The 6-D (n, o, y, ky, x, kx) view of the channels-last temporary G[n][y][x][o][ky][kx]. */
static int shuffle_tmp_md(const hs_conv_params *p, int64_t batch, dnnl_memory_desc_t *md) {
  int64_t O = p->out_c, H = p->in[0], W = p->in[1], kh = p->kernel[0], kw = p->kernel[1], ock = O * kh * kw;
  dnnl_dims_t d = {batch, O, H, kh, W, kw}, st = {H * W * ock, kh * kw, W * ock, kw, ock, 1};
  return dnnl_memory_desc_init_by_strides(md, 6, d, dnnl_f32, st) == dnnl_success ? 0 : -1;
}

/* The ONNX weights [C][O][kh][kw] seen as the 1x1 convolution's [O*kh*kw][C][1][1] ("iohw"). */
static int shuffle_weights_md(const hs_conv_params *p, dnnl_memory_desc_t *md) {
  dnnl_dims_t wd = {p->out_c * p->kernel[0] * p->kernel[1], p->in_c, 1, 1};
  return dnnl_memory_desc_init_by_tag(md, 4, wd, dnnl_f32, dnnl_iohw) == dnnl_success ? 0 : -1;
}

static int shuffle_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_conv_params *p = &k->p.conv;
  int64_t kk = p->kernel[0] * p->kernel[1], oc = p->out_c * kk;
  int64_t sd[4] = {batch, p->in_c, p->in[0], p->in[1]}, gd[4] = {batch, oc, p->in[0], p->in[1]};
  dnnl_memory_desc_t g4, w_any, w_plain;
  int rc = hs__md_act(&v->md[MD_SRC], 4, sd, p->src_layout, err);
  if (!rc) rc = hs__md_act(&g4, 4, gd, HS_LAYOUT_NHWC, err);
  if (rc) return rc;
  dnnl_dims_t wdims = {oc, p->in_c, 1, 1}, one = {1, 1}, zero = {0, 0};
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&w_any, 4, wdims, dnnl_f32, dnnl_format_tag_any);
  if (st != dnnl_success || shuffle_weights_md(p, &w_plain) ||
      shuffle_tmp_md(p, batch, &v->md[MD_G6]) ||
      shuffle_out_md(p, batch, p->dst_layout, &v->md[MD_D6]))
    return hs__dnnl_fail(err, st == dnnl_success ? dnnl_invalid_arguments : st, "describing a deconvolution");
  memset(&v->md[MD_BIAS], 0, sizeof v->md[MD_BIAS]);
  if (p->bias) {
    dnnl_dims_t bd = {oc};
    st = dnnl_memory_desc_init_by_tag(&v->md[MD_BIAS], 1, bd, dnnl_f32, dnnl_a);
    if (st != dnnl_success) return hs__dnnl_fail(err, st, "describing bias");
  }
  hs_conv_params q = *p; /* the 1x1 convolution */
  q.transposed = 0;
  dnnl_primitive_attr_t attr;
  if ((rc = hs__make_attr(&p->post, &attr, err))) return rc;
  const dnnl_memory_desc_t *bias = p->bias ? &v->md[MD_BIAS] : NULL;
  dnnl_primitive_desc_t pd = NULL;
  st = conv_pd(&q, dnnl_convolution_direct, &v->md[MD_SRC], &w_any, bias, &g4, one, zero, zero, zero, attr, &pd);
  v->md[MD_ISRC] = v->md[MD_SRC];
  if (st != dnnl_success || is_reference_impl(pd)) { /* read channels-last through a reorder */
    if (pd) dnnl_primitive_desc_destroy(pd);
    pd = NULL;
    rc = hs__md_act(&v->md[MD_ISRC], 4, sd, HS_LAYOUT_NHWC, err);
    if (!rc) st = conv_pd(&q, dnnl_convolution_direct, &v->md[MD_ISRC], &w_any, bias, &g4, one, zero, zero, zero, attr, &pd);
  }
  dnnl_primitive_attr_destroy(attr);
  if (rc) return rc;
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "deconvolution as a 1x1 convolution");
  v->md[MD_WEIGHTS] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  v->md[MD_IDST] = g4;
  v->md[MD_DST] = v->md[MD_D6]; /* (the output's size is all that is read from MD_DST) */
  size_t sp = pd_scratchpad(pd), sp1 = 0, sp2 = 0;
  /* the ONNX weights while the kernel holds them, else variant 0's copy or (weights_from) the other kernel's */
  if (k->w_plain || k->w_src)
    rc = hs__reorder_alloc(&w_plain, k->w_plain ? k->w_plain : k->w_src, &v->md[MD_WEIGHTS], &v->weights, err);
  else rc = conv_variant_weights(k, v, err);
  if (!rc) {
    st = dnnl_primitive_create(&v->prim[CP_CONV], pd);
    if (st != dnnl_success) rc = hs__dnnl_fail(err, st, "creating a convolution");
  }
  dnnl_primitive_desc_destroy(pd);
  v->nprim = 4;
  if (!rc && !dnnl_memory_desc_equal(&v->md[MD_ISRC], &v->md[MD_SRC]))
    rc = hs__make_reorder(&v->md[MD_SRC], &v->md[MD_ISRC], &v->prim[CP_SRC], &sp1, err);
  if (!rc) rc = hs__make_reorder(&v->md[MD_G6], &v->md[MD_D6], &v->prim[CP_DST], &sp2, err);
  if (rc) return rc;
  if (sp1 > sp) sp = sp1;
  if (sp2 > sp) sp = sp2;
  hs__place_temps(v, sp, v->prim[CP_SRC] ? &v->md[MD_ISRC] : NULL, &g4);
  v->reordered = 1;
  return 0;
}

static int shuffle_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                        dnnl_memory_t scratch, hs_error *err) {
  const void *src = a->src[0];
  void *g = (char *)a->scratch + v->off[1];
  int rc = 0;
  if (v->prim[CP_SRC]) {
    void *t = (char *)a->scratch + v->off[0];
    rc = hs__run_reorder(v->prim[CP_SRC], s, scratch, &v->md[MD_SRC], src, &v->md[MD_ISRC], t, err);
    src = t;
  }
  if (rc) return rc;
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  rc = hs__argv_add(&av, DNNL_ARG_SRC, &v->md[MD_ISRC], src, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_WEIGHTS], v->weights, err);
  if (!rc && k->p.conv.bias) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MD_BIAS], k->p.conv.bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, &v->md[MD_IDST], g, err);
  if (!rc) rc = hs__exec(v->prim[CP_CONV], s, &av, err);
  hs__argv_release(&av, owned);
  if (!rc) rc = hs__run_reorder(v->prim[CP_DST], s, scratch, &v->md[MD_G6], g, &v->md[MD_D6], a->dst, err);
  return rc;
}

/* memcpy split into one contiguous part per compute thread. A residual copied into the output before
 * the convolution accumulates is megabytes (ResNet-50 at batch 8: 3-26 MB per block), and one thread
 * copying while the others wait is a serial stretch in every residual block (docs/KERNELS.md,
 * "Convolutional speed levers"). */
typedef struct {
  char *dst;
  const char *src;
  size_t bytes, part;
} copy_job;

static void copy_part(void *ctx, int i) {
  const copy_job *j = ctx;
  size_t from = (size_t)i * j->part, n = from < j->bytes ? j->bytes - from : 0;
  if (n > j->part) n = j->part;
  if (n) memcpy(j->dst + from, j->src + from, n);
}

static void parallel_copy(void *dst, const void *src, size_t bytes) {
  int parts = hs_kernels_threads();
  if (parts < 2 || bytes < ((size_t)1 << 20)) { /* under 1 MiB waking a thread costs more than it saves */
    memcpy(dst, src, bytes);
    return;
  }
  copy_job j = {dst, src, bytes, (bytes / (size_t)parts + 63) & ~(size_t)63};
  hs_kernels_parallel_for(parts, copy_part, &j);
}

/* A network's input arrives NCHW with a few channels (an image: 3) while its first convolution reads
 * channels-last. oneDNN's reorder for that (jit:uni) interleaves 3x224x224 in 35.6 us on one thread and
 * 19.8 us on two; this loop, split over the threads by pixels, 21.1 / 12.4 us
 * (bench/results/engine-s23-mnv2-2026-12-07.md). */
#define PLANES_MAX_C 4

/* Whether a variant's source reorder from smd to imd is that interleave: plain NCHW (any spatial rank) to
 * dense channels-last f32, at most PLANES_MAX_C channels. */
static int is_planes_to_nhwc(const hs_conv_params *p, int64_t batch, const dnnl_memory_desc_t *smd,
                             const dnnl_memory_desc_t *imd) {
  if (p->src_layout != HS_LAYOUT_NCHW || p->in_c > PLANES_MAX_C) return 0;
  int64_t dims[5] = {batch, p->in_c};
  for (int i = 0; i < p->nsp; i++) dims[2 + i] = p->in[i];
  dnnl_memory_desc_t nchw, nhwc;
  hs_error e;
  if (hs__md_act(&nchw, 2 + p->nsp, dims, HS_LAYOUT_NCHW, &e) ||
      hs__md_act(&nhwc, 2 + p->nsp, dims, HS_LAYOUT_NHWC, &e))
    return 0;
  return dnnl_memory_desc_equal(smd, &nchw) && dnnl_memory_desc_equal(imd, &nhwc);
}

typedef struct {
  float *dst;
  const float *src;
  int64_t c, hw, pixels, part; /* pixels: batch x hw, split into parts of `part` */
} planes_job;

static void planes_part(void *ctx, int i) {
  const planes_job *j = ctx;
  int64_t q = (int64_t)i * j->part, end = q + j->part < j->pixels ? q + j->part : j->pixels;
  while (q < end) { /* one image's stretch of [q, end) at a time */
    int64_t n = q / j->hw, s0 = q % j->hw, s1 = end - n * j->hw < j->hw ? end - n * j->hw : j->hw;
    const float *x = j->src + n * j->c * j->hw;
    float *y = j->dst + n * j->hw * j->c;
    if (j->c == 3) {
      for (int64_t s = s0; s < s1; s++) {
        y[3 * s] = x[s];
        y[3 * s + 1] = x[j->hw + s];
        y[3 * s + 2] = x[2 * j->hw + s];
      }
    } else {
      for (int64_t s = s0; s < s1; s++)
        for (int64_t c = 0; c < j->c; c++) y[s * j->c + c] = x[c * j->hw + s];
    }
    q += s1 - s0;
  }
}

static void planes_to_nhwc(const hs_conv_params *p, int64_t batch, const void *src, void *dst) {
  int64_t hw = 1;
  for (int i = 0; i < p->nsp; i++) hw *= p->in[i];
  int parts = hs_kernels_threads();
  if (batch * hw * p->in_c < ((int64_t)1 << 15)) parts = 1; /* too small to wake a thread for */
  planes_job j = {dst, src, p->in_c, hw, batch * hw, (batch * hw + parts - 1) / parts};
  hs_kernels_parallel_for(parts, planes_part, &j);
}

static int conv_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                     dnnl_memory_t scratch, hs_error *err) {
  const hs_conv_params *p = &k->p.conv;
  if (a->nsrc < 1 || !a->src[0]) return hs_error_set(err, HS_INVALID_ARGUMENT, "conv needs an input");
  if (is_shuffle_deconv(p)) return shuffle_exec(k, v, a, s, scratch, err);
  if (p->dw_weights) return dw_exec(k, v, a, s, scratch, err);
  int rc = 0;
  const void *src = a->src[0];
  const dnnl_memory_desc_t *smd = &v->md[MD_SRC], *dmd = &v->md[MD_DST];
  void *dst = a->dst;
  if (v->prim[CP_SRC]) {
    void *t = (char *)a->scratch + v->off[0];
    if (v->src_planes) planes_to_nhwc(p, v->batch, src, t);
    else rc = hs__run_reorder(v->prim[CP_SRC], s, scratch, &v->md[MD_SRC], src, &v->md[MD_ISRC], t, err);
    src = t;
    smd = &v->md[MD_ISRC];
  }
  if (!rc && v->prim[CP_DST]) {
    dst = (char *)a->scratch + v->off[1];
    dmd = &v->md[MD_IDST];
  }
  if (!rc && has_sum(&p->post)) {
    if (!a->residual) return hs_error_set(err, HS_INVALID_ARGUMENT, "fused sum needs a residual input");
    /* a residual already in the output's buffer (the planner's in-place choice, engine/plan.c) is
     * accumulated into where it lies; a reorder cannot run in place */
    if (v->prim[CP_RES] && a->residual == dst)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: a residual in another layout cannot share the output");
    if (v->prim[CP_RES]) rc = hs__run_reorder(v->prim[CP_RES], s, scratch, &v->md[MD_RES], a->residual, dmd, dst, err);
    else if (a->residual != dst) parallel_copy(dst, a->residual, dnnl_memory_desc_get_size(dmd));
  }
  if (rc) return rc;
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  rc = hs__argv_add(&av, DNNL_ARG_SRC, smd, src, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_WEIGHTS], v->weights, err);
  if (!rc && p->bias) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MD_BIAS], p->bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, dmd, dst, err);
  if (!rc) rc = hs__exec(v->prim[CP_CONV], s, &av, err);
  hs__argv_release(&av, owned);
  if (!rc && v->prim[CP_DST]) rc = hs__run_reorder(v->prim[CP_DST], s, scratch, dmd, dst, &v->md[MD_DST], a->dst, err);
  return rc;
}

static const char *conv_describe(const hs_kernel *k) {
  static _Thread_local char buf[160];
  const hs_conv_params *p = &k->p.conv;
  static const char *lay[] = {"nchw", "nhwc", "nChw8c"};
  snprintf(buf, sizeof buf, "%s ic %lld oc %lld g %lld in %lldx%lld k %lld s %lld %s->%s post %d",
           p->transposed ? "deconv" : "conv", (long long)p->in_c, (long long)p->out_c, (long long)p->groups,
           (long long)p->in[0], (long long)(p->nsp > 1 ? p->in[1] : 1), (long long)p->kernel[0],
           (long long)p->stride[0], lay[p->src_layout], lay[p->dst_layout], p->post.count);
  return buf;
}

static const hs__kvt conv_vt = {"conv", conv_build, conv_exec, conv_describe};

int hs_kernel_conv_create(const hs_conv_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "conv: device not available");
  if (p->nsp < 1 || p->nsp > 3)
    return hs_error_set(err, HS_UNSUPPORTED, "conv: %d spatial dims (1 to 3 supported)", p->nsp);
  if (p->groups < 1 || p->in_c < 1 || p->out_c < 1 || p->in_c % p->groups || p->out_c % p->groups)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: channels %lld -> %lld do not split into %lld groups",
                        (long long)p->in_c, (long long)p->out_c, (long long)p->groups);
  if (!p->weights && !p->weights_from) return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: weights are required");
  for (int i = 0; i < p->nsp; i++) {
    if (p->kernel[i] < 1 || p->stride[i] < 1 || p->dilation[i] < 1 || p->in[i] < 1 || p->out[i] < 1)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: non-positive size on spatial axis %d", i);
    if (p->pad_begin[i] < 0 || (!p->transposed && p->pad_end[i] < 0))
      return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: negative padding on spatial axis %d", i);
    /* oneDNN trusts these sizes and would read out of bounds if they disagreed: check them here. */
    int64_t span = (p->kernel[i] - 1) * p->dilation[i] + 1, want;
    if (!p->transposed) {
      int64_t room = p->in[i] + p->pad_begin[i] + p->pad_end[i] - span;
      want = room < 0 ? 0 : room / p->stride[i] + 1;
    } else {
      want = (p->in[i] - 1) * p->stride[i] - p->pad_begin[i] - p->pad_end[i] + span;
    }
    if (p->out[i] != want)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: output size %lld on spatial axis %d, expected %lld",
                          (long long)p->out[i], i, (long long)want);
  }
  if (p->dw_weights) { /* what dw_build assumes */
    int plain_1x1 = !p->transposed && p->nsp == 2 && p->groups == 1 && !has_sum(&p->post) && !has_sum(&p->dw_post);
    for (int i = 0; i < p->nsp && plain_1x1; i++)
      plain_1x1 = p->kernel[i] == 1 && p->stride[i] == 1 && p->dilation[i] == 1 && !p->pad_begin[i] && !p->pad_end[i];
    if (!plain_1x1 || (p->dw_stride != 1 && p->dw_stride != 2))
      return hs_error_set(err, HS_UNSUPPORTED, "conv: a depthwise fusion needs a 1x1 convolution and stride 1 or 2");
    for (int i = 0; i < 2; i++)
      if (p->dw_out[i] != (p->out[i] - 1) / p->dw_stride + 1)
        return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: depthwise output size %lld on spatial axis %d",
                            (long long)p->dw_out[i], i);
  }
  int64_t wd[6];
  int wn = conv_weight_dims(p, wd);
  int64_t wcount = numel(wn, wd);
  if (wcount < 0 || p->batch < 1) return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: bad shape");
  hs_kernel *k;
  int rc = hs__kernel_new(&conv_vt, &k, err);
  if (rc) return rc;
  k->p.conv = *p;
  dnnl_dims_t wdims;
  for (int i = 0; i < wn; i++) wdims[i] = wd[i];
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&k->w_plain_md, wn, wdims, dnnl_f32,
                                                  conv_weights_tag(p->nsp, p->groups > 1, p->transposed));
  if (st != dnnl_success) {
    hs_kernel_destroy(k);
    return hs__dnnl_fail(err, st, "conv: describing weights");
  }
  if (p->weights) {
    /* variant 0 reorders the caller's weights themselves (w_src): a plain copy first would add every
     * weight's size to a load's copying and its peak (ResNet-50: ~100 MB per retrained reload) */
    k->w_src = p->weights;
  } else {
    const hs_kernel *f = p->weights_from;
    if (f->vt != &conv_vt || atomic_load_explicit(&((hs_kernel *)f)->nvar, memory_order_acquire) < 1 ||
        !f->var[0]->weights || !dnnl_memory_desc_equal(&f->w_plain_md, &k->w_plain_md)) {
      hs_kernel_destroy(k);
      return hs_error_set(err, HS_INVALID_ARGUMENT, "conv: weights_from is not a conv kernel with these weights' shape");
    }
    k->w_from = f;
  }
  k->p.conv.weights = NULL;
  k->p.conv.weights_from = NULL;
  if (p->dw_weights) { /* own copies; missing biases are zeros (oneDNN 2.6.3's fused jit_1x1 crashed without
                          a bias on the 1x1 convolution: kernels.fusion case dw_fuse_s2_hardswish_batch8_odd_wide) */
    float *zeros = calloc((size_t)p->out_c, sizeof(float));
    rc = !zeros ? hs_error_set(err, HS_NO_MEMORY, "conv: depthwise bias") : 0;
    if (!rc) rc = hs__own_floats(k, p->dw_weights, p->out_c * HS_CONV_DW_TAPS, &k->p.conv.dw_weights, err);
    if (!rc) rc = hs__own_floats(k, p->dw_bias ? p->dw_bias : zeros, p->out_c, &k->p.conv.dw_bias, err);
    if (!rc && !p->bias) rc = hs__own_floats(k, zeros, p->out_c, &k->p.conv.bias, err);
    free(zeros);
    if (rc) {
      hs_kernel_destroy(k);
      return rc;
    }
  }
  if (p->bias && is_shuffle_deconv(p)) { /* the 1x1 convolution's bias: each channel's kh*kw times */
    int64_t kk = p->kernel[0] * p->kernel[1];
    float *b = malloc(sizeof(float) * (size_t)(p->out_c * kk));
    if (!b) {
      hs_kernel_destroy(k);
      return hs_error_set(err, HS_NO_MEMORY, "conv: copying the bias");
    }
    for (int64_t o = 0; o < p->out_c * kk; o++) b[o] = p->bias[o / kk];
    rc = hs__own_floats(k, b, p->out_c * kk, &k->p.conv.bias, err);
    free(b);
  } else if (p->bias) { /* (none: NULL, or the zeros of a depthwise fusion above) */
    rc = hs__own_floats(k, p->bias, p->out_c, &k->p.conv.bias, err);
  }
  if (rc) {
    hs_kernel_destroy(k);
    return rc;
  }
  rc = hs__kernel_finish(k, p->batch, err);
  if (rc) return rc;
  *out = k;
  return 0;
}

const float *hs_kernel_conv_dw_weights(const hs_kernel *k, size_t bytes) {
  if (!k || k->vt != &conv_vt || !k->p.conv.dw_weights || hs_conv_dw_weight_bytes(&k->p.conv) != bytes) return NULL;
  return k->p.conv.dw_weights;
}

int hs_kernel_conv_weights(const hs_kernel *k, float *dst, size_t dst_bytes, hs_error *err) {
  if (!k || k->vt != &conv_vt) return hs_error_set(err, HS_INVALID_ARGUMENT, "conv weights: not a conv kernel");
  size_t want = dnnl_memory_desc_get_size(&k->w_plain_md);
  dnnl_memory_desc_t plain = k->w_plain_md; /* a shuffle deconvolution's are the same bytes seen as 1x1 */
  if (is_shuffle_deconv(&k->p.conv) && shuffle_weights_md(&k->p.conv, &plain))
    return hs_error_set(err, HS_INTERNAL, "conv weights: describing them");
  size_t dw_bytes = hs_conv_dw_weight_bytes(&k->p.conv);
  if (k->p.conv.dw_weights && dst_bytes == dw_bytes && dw_bytes != want) { /* the fused depthwise ones */
    memcpy(dst, k->p.conv.dw_weights, dw_bytes);
    return 0;
  }
  if (dst_bytes != want)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "conv weights: %zu bytes given, the weights are %zu", dst_bytes,
                        want);
  /* Variant 0 is published (hs__kernel_finish built it) and immutable: its weights, in the
   * implementation's layout, are the kernel's copy once w_plain is gone (w_plain stays while they
   * are in Winograd's format, which no reorder reads). */
  if (atomic_load_explicit(&((hs_kernel *)k)->nvar, memory_order_acquire) < 1 || !k->var[0]->weights)
    return hs_error_set(err, HS_INTERNAL, "conv weights: the kernel holds none");
  if (k->w_plain) {
    memcpy(dst, k->w_plain, want);
    return 0;
  }
  const dnnl_memory_desc_t *have = &k->var[0]->md[MD_WEIGHTS];
  if (k->w_from && hs__weights_one_way(have)) return hs_kernel_conv_weights(k->w_from, dst, dst_bytes, err);
  int rc = hs__reorder_into(have, k->var[0]->weights, &plain, dst, err);
  if (rc) hs_error_prefix(err, "conv weights");
  return rc;
}

size_t hs_kernel_conv_owned_weight_bytes(const hs_kernel *k) {
  /* w_plain is gone once the constructor returns (variant 0 holds the weights), unless variant 0's
   * are in Winograd's one-way format */
  return k && k->vt == &conv_vt ? hs_kernel_weight_bytes(k) : 0;
}

/* ================= matmul ================= */

/* Right-aligned dims of a tensor of rank n inside rank nd (leading 1s). */
static void pad_dims(int nd, int n, const int64_t *in, int64_t *outd) {
  for (int i = 0; i < nd; i++) outd[i] = i < nd - n ? 1 : in[i - (nd - n)];
}

/* Descriptor of a [.., R, C] operand whose buffer holds [.., C, R] when trans is set. */
static int md_maybe_trans(dnnl_memory_desc_t *md, int nd, const int64_t *dims, int trans, hs_error *err) {
  if (!trans) return hs__md_plain(md, nd, dims, err);
  int64_t phys[8];
  memcpy(phys, dims, sizeof(int64_t) * nd);
  phys[nd - 1] = dims[nd - 2];
  phys[nd - 2] = dims[nd - 1];
  dnnl_dims_t d, strides, ps;
  int64_t s = 1;
  for (int i = nd - 1; i >= 0; i--) {
    ps[i] = s;
    s *= phys[i];
  }
  for (int i = 0; i < nd; i++) {
    d[i] = dims[i];
    strides[i] = ps[i];
  }
  strides[nd - 1] = ps[nd - 2];
  strides[nd - 2] = ps[nd - 1];
  dnnl_status_t st = dnnl_memory_desc_init_by_strides(md, nd, d, dnnl_f32, strides);
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "describing a transposed operand");
}

static void mm_variant_dims(const hs_kernel *k, int64_t batch, int64_t *ad, int64_t *bd, int64_t *dd,
                            int64_t *biasd) {
  const hs_matmul_params *p = &k->p.mm;
  int nd = p->ndim;
  int64_t a0 = p->a_dims[0];
  memcpy(ad, p->a_dims, sizeof(int64_t) * nd);
  memcpy(bd, p->b_dims, sizeof(int64_t) * nd);
  ad[0] = batch;
  if (nd > 2 && !(k->flags & MM_B_CONST) && p->b_dims[0] == a0 && a0 != 1) bd[0] = batch;
  for (int i = 0; i < nd - 2; i++) dd[i] = ad[i] > bd[i] ? ad[i] : bd[i];
  dd[nd - 2] = ad[nd - 2];
  dd[nd - 1] = bd[nd - 1];
  if (p->bias) {
    pad_dims(nd, p->bias_ndim, p->bias_dims, biasd);
    if (biasd[0] == a0 && a0 != 1) biasd[0] = batch;
  }
}

/* Rows up to which a constant 2-D B is read in its given layout by an inner product (oneDNN's gemm:jit) instead
 * of a matmul over a blocked copy (brgemm): as fast at 1 and 2 rows (a classifier head at batch 1: 1x1280 by
 * 1280x1000 in 52-56 us either way, 1x2048 by 2048x1000 in 83-88), 2x slower from 4 rows with B given transposed
 * as Gemm's transB gives it (docs/KERNELS.md, "Constant B in place"). */
#define MM_INNER_ROWS 2

/* 1 when variant v (batch rows) of matmul kernel k is an inner product over B in its given layout: B constant
 * and 2-D, A not transposed, a bias of N values if any, few rows, and variant 0 one too (a later variant with
 * few rows shares variant 0's blocked copy rather than make a plain one). */
static int mm_inner(const hs_kernel *k, const hs__variant *v, int64_t batch) {
  const hs_matmul_params *p = &k->p.mm;
  if (!(k->flags & MM_B_CONST) || p->ndim != 2 || p->trans_a || batch > MM_INNER_ROWS) return 0;
  if (v != k->var[0] && !k->var[0]->inner) return 0;
  return !p->bias || (p->bias_dims[p->bias_ndim - 1] == p->b_dims[1] && numel(p->bias_ndim, p->bias_dims) == p->b_dims[1]);
}

/* Builds v as an inner product (mm_inner): dst [rows, N] = A [rows, K] x B + bias, B's buffer seen as the
 * weights [N, K] it is (transposed B: row-major [N, K]; else [K, N], which is [N, K] with swapped strides). Its
 * weights are the lent B itself when the caller lent it (w_lent), else a plain copy, or variant 0's. */
static int mm_build_inner(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  const hs_matmul_params *p = &k->p.mm;
  int64_t K = p->b_dims[0], N = p->b_dims[1], ad[2] = {batch, K}, dd[2] = {batch, N};
  int rc = hs__md_plain(&v->md[MD_SRC], 2, ad, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_DST], 2, dd, err);
  if (!rc && p->bias) rc = hs__md_plain(&v->md[MD_BIAS], 1, &N, err);
  if (rc) return rc;
  dnnl_dims_t wd = {N, K}, ws = {p->trans_b ? K : 1, p->trans_b ? 1 : N};
  dnnl_status_t st = dnnl_memory_desc_init_by_strides(&v->md[MD_SRC1], 2, wd, dnnl_f32, ws);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "describing matmul weights");
  dnnl_primitive_attr_t attr;
  rc = hs__make_attr(&p->post, &attr, err);
  if (rc) return rc;
  dnnl_inner_product_desc_t d;
  dnnl_primitive_desc_t pd = NULL;
  st = dnnl_inner_product_forward_desc_init(&d, dnnl_forward_inference, &v->md[MD_SRC], &v->md[MD_SRC1],
                                            p->bias ? &v->md[MD_BIAS] : NULL, &v->md[MD_DST]);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &d, attr, hs__dnnl_engine(), NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "matmul as an inner product");
  v->inner = 1;
  v->md[MD_WEIGHTS] = k->w_plain_md; /* the same bytes as B [K, N]: what other variants reorder from */
  if (k->w_lent) {
    v->weights = (void *)k->w_lent;
    v->weights_shared = 1; /* the caller's, or freed by the kernel once handed over */
  } else {
    rc = hs__variant_weights(k, v, &k->w_plain_md, err);
  }
  if (rc) {
    dnnl_primitive_desc_destroy(pd);
    return rc;
  }
  return hs__add_prim(v, pd, err);
}

static int mm_build(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err) {
  if (mm_inner(k, v, batch)) return mm_build_inner(k, batch, v, err);
  const hs_matmul_params *p = &k->p.mm;
  int nd = p->ndim;
  int64_t ad[8], bd[8], dd[8], biasd[8];
  mm_variant_dims(k, batch, ad, bd, dd, biasd);
  int rc = md_maybe_trans(&v->md[MD_SRC], nd, ad, p->trans_a, err);
  if (!rc) rc = hs__md_plain(&v->md[MD_DST], nd, dd, err);
  if (!rc && p->bias) rc = hs__md_plain(&v->md[MD_BIAS], nd, biasd, err);
  if (rc) return rc;
  dnnl_memory_desc_t wmd;
  int b_const = k->flags & MM_B_CONST;
  if (b_const) {
    dnnl_dims_t d;
    for (int i = 0; i < nd; i++) d[i] = bd[i];
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&wmd, nd, d, dnnl_f32, dnnl_format_tag_any);
    if (st != dnnl_success) return hs__dnnl_fail(err, st, "describing matmul weights");
  } else {
    rc = md_maybe_trans(&wmd, nd, bd, p->trans_b, err);
    if (rc) return rc;
    v->md[MD_SRC1] = wmd;
  }
  dnnl_primitive_attr_t attr;
  rc = hs__make_attr(&p->post, &attr, err);
  if (rc) return rc;
  dnnl_status_t st = dnnl_success;
  if (!b_const && p->alpha != 0.f && p->alpha != 1.f) {
    if (p->bias) {
      dnnl_primitive_attr_destroy(attr);
      return hs_error_set(err, HS_UNSUPPORTED, "matmul: alpha with bias and a runtime B");
    }
    st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &p->alpha);
  }
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  if (st == dnnl_success)
    st = dnnl_matmul_desc_init(&md, &v->md[MD_SRC], &wmd, p->bias ? &v->md[MD_BIAS] : NULL, &v->md[MD_DST]);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &md, attr, hs__dnnl_engine(), NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "matmul");
  return b_const ? hs__add_weights_prim(k, v, pd, err) : hs__add_prim(v, pd, err);
}

static int mm_exec(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
                   dnnl_memory_t scratch, hs_error *err) {
  const hs_matmul_params *p = &k->p.mm;
  int b_const = k->flags & MM_B_CONST;
  int need = b_const ? 1 : 2;
  if (a->nsrc < need || !a->src[0] || (need == 2 && !a->src[1]))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul needs %d inputs", need);
  int rc = hs__prepare_sum(&p->post, a, dnnl_memory_desc_get_size(&v->md[MD_DST]), err);
  if (rc) return rc;
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  rc = hs__argv_add(&av, DNNL_ARG_SRC, &v->md[MD_SRC], a->src[0], err);
  if (!rc) {
    if (b_const) rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[v->inner ? MD_SRC1 : MD_WEIGHTS], v->weights, err);
    else rc = hs__argv_add(&av, DNNL_ARG_WEIGHTS, &v->md[MD_SRC1], a->src[1], err);
  }
  if (!rc && p->bias) rc = hs__argv_add(&av, DNNL_ARG_BIAS, &v->md[MD_BIAS], p->bias, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_DST, &v->md[MD_DST], a->dst, err);
  if (!rc) rc = hs__exec(v->prim[0], s, &av, err);
  hs__argv_release(&av, owned);
  return rc;
}

static const hs__kvt mm_vt = {"matmul", mm_build, mm_exec, NULL};

int hs_kernel_matmul_create(const hs_matmul_params *p, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (p->device != HS_KDEV_CPU) return hs_error_set(err, HS_UNSUPPORTED, "matmul: device not available");
  int nd = p->ndim;
  if (nd < 2 || nd > 8) return hs_error_set(err, HS_UNSUPPORTED, "matmul: rank %d", nd);
  for (int i = 0; i < nd; i++)
    if (p->a_dims[i] < 1 || p->b_dims[i] < 1)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul: non-positive dimension");
  if (p->a_dims[nd - 1] != p->b_dims[nd - 2])
    return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul: inner dimensions %lld and %lld differ",
                        (long long)p->a_dims[nd - 1], (long long)p->b_dims[nd - 2]);
  for (int i = 0; i < nd - 2; i++)
    if (p->a_dims[i] != p->b_dims[i] && p->a_dims[i] != 1 && p->b_dims[i] != 1)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul: batch axis %d does not broadcast", i);
  if (p->bias && (p->bias_ndim < 1 || p->bias_ndim > nd))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "matmul: bias rank %d", p->bias_ndim);
  hs_kernel *k;
  int rc = hs__kernel_new(&mm_vt, &k, err);
  if (rc) return rc;
  k->p.mm = *p;
  k->p.mm.b_const = NULL;
  k->p.mm.bias = NULL;
  float alpha = (p->alpha == 0.f) ? 1.f : p->alpha; /* folded into the constant */
  int64_t bcount = p->b_const ? numel(nd, p->b_dims) : 0;
  if (p->b_const) {
    rc = bcount < 0 ? hs_error_set(err, HS_INVALID_ARGUMENT, "matmul: B too large") : 0;
    if (!rc) rc = md_maybe_trans(&k->w_plain_md, nd, p->b_dims, p->trans_b, err);
    /* with alpha 1 variant 0 reorders the caller's B itself (w_src): a plain copy would only add
     * B's size to a load's peak (a new classifier: 5 MB of MobileNetV2's reload) */
    if (!rc && alpha != 1.f && !(k->w_plain = hs_wblock_alloc((size_t)bcount * sizeof(float))))
      rc = hs_error_set(err, HS_NO_MEMORY, "matmul: copying B");
    if (rc) {
      hs_kernel_destroy(k);
      return rc;
    }
    float *w = k->w_plain;
    for (int64_t i = 0; w && i < bcount; i++) w[i] = p->b_const[i] * alpha;
    if (!w) k->w_src = p->b_const;
    if (!w && p->b_lend) k->w_lent = p->b_const; /* inner variants read it in place (mm_build_inner) */
    k->flags |= MM_B_CONST;
    k->p.mm.alpha = 1.f;
  }
  if (p->bias) {
    int64_t bc = numel(p->bias_ndim, p->bias_dims);
    rc = bc < 0 ? hs_error_set(err, HS_INVALID_ARGUMENT, "matmul: bad bias shape") : 0;
    if (!rc) rc = hs__own_floats(k, p->bias, bc, &k->p.mm.bias, err);
    if (rc) {
      hs_kernel_destroy(k);
      return rc;
    }
  }
  rc = hs__kernel_finish(k, p->a_dims[0], err);
  if (rc) return rc;
  if (!k->var[0]->inner) k->w_lent = NULL; /* variant 0 holds a blocked copy, which later variants share */
  *out = k;
  return 0;
}

int hs_kernel_matmul_adopt_b(hs_kernel *k, const float *b) {
  if (!k || k->vt != &mm_vt || !b || k->w_lent != b || k->w_lent_owned) return 0;
  k->w_lent_owned = 1;
  return 1;
}

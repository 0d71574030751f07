/* resize.c - Resize (nearest, linear and cubic, every coordinate transformation mode; scales or
 * sizes) and the older Upsample, plus Pad (constant, reflect, edge; negative pads crop). */

/*
 * DESIGN
 * Resize/Upsample computes the output size and per-axis scales (resize_dims) and maps every output
 * coordinate back to the input as ONNX's coordinate_transformation_mode says; the plain-C code
 * below does that for every mode. Two cases are what oneDNN's resampling computes, and run on
 * hs_kernel_resample when only the spatial axes (2..) change and the scale is exactly out/in:
 *   - linear with half_pixel (or pytorch_half_pixel with every output size above 1);
 *   - nearest with an integer upsampling factor, and asymmetric + floor or half_pixel (or
 *     pytorch_half_pixel) + round_prefer_floor/ceil: all of them then pick input index out / factor.
 * Everything else runs plain C by design; cubic (cubic_coeff_a, exclude_outside) always does, with
 * the four taps per axis floor(x) - 1 .. floor(x) + 2 of ONNX's reference (edge-clamped). prepare() gives the node a kernel cache; scratch_bytes()
 * builds the kernel for the planned shapes (batch sizes are variants) and run() finds it again.
 */
#include <math.h>
#include <string.h>

#include "ops/opkernel.h"
#include "ops/ops.h"

enum { CT_HALF_PIXEL, CT_PYTORCH_HALF_PIXEL, CT_ALIGN_CORNERS, CT_ASYMMETRIC, CT_TF_HALF_PIXEL_NN, CT_TF_CROP };
enum { NM_ROUND_FLOOR, NM_ROUND_CEIL, NM_FLOOR, NM_CEIL };

typedef struct {
  int linear;
  int cubic;
  int exclude_outside;
  float cubic_a;
  int coord;
  int nearest;
  float extrapolation;
  int legacy;      /* Upsample, or Resize-10: scales at input 1 */
  int n_scales;    /* Upsample-7: scales attribute */
  float scales[HS_MAX_DIMS];
  hs_layout layout; /* set by the layout pass: NHWC when input and output are channels-last (4-D only) */
} resize_params;
_Static_assert(sizeof(resize_params) <= HS_OP_PARAMS_BYTES, "resize params fit the node");

static int pick(const char *s, const char *const *names, int n, int *out) {
  for (int i = 0; i < n; i++)
    if (strcmp(s, names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}

static int resize_check(hs_node *n, const hs_graph *g, hs_error *err) {
  resize_params *p = (resize_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int upsample = n->op == HS_OP_Upsample;
  p->legacy = upsample || n->opset < 11;
  int rc = hs_node_only_attrs(n, upsample ? (n->opset < 9 ? "mode,scales" : "mode")
                                          : p->legacy ? "mode"
                                          : n->opset < 18 ? "mode,coordinate_transformation_mode,nearest_mode,"
                                                            "extrapolation_value,exclude_outside,cubic_coeff_a"
                                                          : "mode,coordinate_transformation_mode,nearest_mode,"
                                                            "extrapolation_value,exclude_outside,cubic_coeff_a,"
                                                            "antialias,keep_aspect_ratio_policy,axes",
                              err);
  /* opset 18's additions are accepted at their defaults only */
  int64_t antialias;
  const char *karp;
  if (rc || (rc = hs_attr_int(n, "antialias", 0, &antialias, err)) ||
      (rc = hs_attr_string(n, "keep_aspect_ratio_policy", "stretch", &karp, err)))
    return rc;
  if (antialias) return hs_op_errf(err, n, HS_UNSUPPORTED, "antialias=1 is not implemented (opset %d)", n->opset);
  if (strcmp(karp, "stretch") != 0)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "keep_aspect_ratio_policy '%s' is not implemented (opset %d)", karp,
                      n->opset);
  if (hs_node_attr(n, "axes"))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "the axes attribute is not implemented (opset %d)", n->opset);
  const char *mode, *ct, *nm;
  if (rc || (rc = hs_attr_string(n, "mode", "nearest", &mode, err)) ||
      (rc = hs_attr_string(n, "coordinate_transformation_mode", p->legacy ? "asymmetric" : "half_pixel", &ct, err)) ||
      (rc = hs_attr_string(n, "nearest_mode", p->legacy ? "floor" : "round_prefer_floor", &nm, err)) ||
      (rc = hs_attr_float(n, "extrapolation_value", 0.0f, &p->extrapolation, err)) ||
      (rc = hs_attr_float(n, "cubic_coeff_a", -0.75f, &p->cubic_a, err)))
    return rc;
  int64_t exclude;
  if ((rc = hs_attr_int(n, "exclude_outside", 0, &exclude, err))) return rc;
  p->exclude_outside = exclude != 0;
  static const char *const modes[] = {"nearest", "linear", "cubic"};
  int mode_index;
  static const char *const cts[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                                    "tf_half_pixel_for_nn", "tf_crop_and_resize"};
  static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  if (strcmp(mode, "bilinear") == 0 && upsample) mode = "linear";
  if (pick(mode, modes, p->legacy ? 2 : 3, &mode_index))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "mode '%s' is not supported (opset %d)", mode, n->opset);
  p->linear = mode_index == 1;
  p->cubic = mode_index == 2;
  if (pick(ct, cts, 6, &p->coord)) return hs_op_errf(err, n, HS_UNSUPPORTED, "coordinate_transformation_mode '%s' is not supported", ct);
  if (pick(nm, nms, 4, &p->nearest)) return hs_op_errf(err, n, HS_UNSUPPORTED, "nearest_mode '%s' is not supported", nm);
  if (upsample && n->opset < 9) {
    const hs_attr *a = hs_node_attr(n, "scales");
    if (!a || a->type != HS_ATTR_FLOATS || a->n > HS_MAX_DIMS) return hs_op_errf(err, n, HS_PARSE, "scales attribute is required");
    p->n_scales = (int)a->n;
    hs_memcpy(p->scales, a->floats, a->n * sizeof(float));
  }
  return 0;
}

/* Output dims and per-axis scales, from the scales or sizes input. */
static int resize_dims(const hs_node *n, const hs_tensor *in, int nin, int64_t *od, double *sc, const hs_tensor **roi,
                       hs_error *err) {
  const resize_params *p = (const resize_params *)n->params.bytes;
  int r = in[0].ndim;
  const hs_tensor *scales = NULL, *sizes = NULL;
  *roi = NULL;
  float attr_scales[HS_MAX_DIMS];
  if (p->n_scales) {
    if (p->n_scales != r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scales has %d entries for rank %d", p->n_scales, r);
    hs_memcpy(attr_scales, p->scales, sizeof attr_scales);
  } else if (p->legacy) {
    scales = nin > 1 && HS_PRESENT(&in[1]) ? &in[1] : NULL;
  } else {
    *roi = nin > 1 && HS_PRESENT(&in[1]) && hs_numel(&in[1]) > 0 ? &in[1] : NULL;
    scales = nin > 2 && HS_PRESENT(&in[2]) && hs_numel(&in[2]) > 0 ? &in[2] : NULL;
    sizes = nin > 3 && HS_PRESENT(&in[3]) && hs_numel(&in[3]) > 0 ? &in[3] : NULL;
  }
  if (!p->n_scales && !!scales == !!sizes) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "exactly one of scales and sizes is needed");
  if (scales && (scales->dtype != HS_DT_FLOAT32 || hs_numel(scales) != r))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scales must be float32 with one entry per dimension");
  if (sizes && (sizes->dtype != HS_DT_INT64 || hs_numel(sizes) != r))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "sizes must be int64 with one entry per dimension");
  if (*roi && ((*roi)->dtype != HS_DT_FLOAT32 || hs_numel(*roi) != 2 * r))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "roi must be float32 with 2 entries per dimension");
  for (int i = 0; i < r; i++) {
    if (sizes) {
      od[i] = ((const int64_t *)sizes->data)[i];
      if (od[i] < 0 || od[i] > ((int64_t)1 << 40)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "implausible size");
      sc[i] = in[0].dims[i] ? (double)od[i] / (double)in[0].dims[i] : 1.0;
    } else {
      double s = p->n_scales ? attr_scales[i] : ((const float *)scales->data)[i];
      if (!(s > 0) || s > 1e6) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale must be positive");
      double o = floor((double)in[0].dims[i] * s);
      if (o > (double)((int64_t)1 << 40)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output too large");
      od[i] = (int64_t)o;
      sc[i] = s;
    }
  }
  return 0;
}

static int resize_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  int64_t od[HS_MAX_DIMS];
  double sc[HS_MAX_DIMS];
  const hs_tensor *roi;
  if ((rc = resize_dims(n, in, nin, od, sc, &roi, err))) return rc;
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, od, n, err);
}

/* ---- oneDNN path ---- */

/* 1 when oneDNN's resampling computes what ONNX asks for these shapes (see DESIGN); *kind then
 * says which. */
static int kernel_applies(const resize_params *p, const hs_tensor *x, const int64_t *od, const double *sc,
                          hs_resample_kind *kind) {
  int r = x->ndim;
  if (p->cubic || r < 3 || r > 5 || od[0] != x->dims[0] || od[1] != x->dims[1]) return 0;
  int all_above_1 = 1;
  for (int i = 2; i < r; i++) {
    if (x->dims[i] < 1 || od[i] < 1) return 0;
    /* oneDNN scales by out/in: ONNX's scale must be exactly that */
    if (fabs(sc[i] * (double)x->dims[i] - (double)od[i]) > 1e-9 * (double)od[i]) return 0;
    all_above_1 &= od[i] > 1;
  }
  int half_pixel = p->coord == CT_HALF_PIXEL || (p->coord == CT_PYTORCH_HALF_PIXEL && all_above_1);
  if (p->linear) {
    *kind = HS_RESAMPLE_LINEAR;
    return half_pixel;
  }
  *kind = HS_RESAMPLE_NEAREST;
  for (int i = 2; i < r; i++)
    if (od[i] % x->dims[i]) return 0; /* integer upsampling factors only */
  return (p->coord == CT_ASYMMETRIC && p->nearest == NM_FLOOR) ||
         (half_pixel && (p->nearest == NM_ROUND_FLOOR || p->nearest == NM_ROUND_CEIL));
}

typedef struct build_ctx {
  const hs_tensor *x;
  const int64_t *od;
  hs_resample_kind kind;
  hs_layout layout;
} build_ctx;

static int build_kernel(void *ctx, hs_kernel **out, hs_error *err) {
  const build_ctx *c = ctx;
  hs_resample_params p = {0};
  p.device = HS_KDEV_CPU;
  p.layout = c->layout;
  p.kind = c->kind;
  p.nsp = c->x->ndim - 2;
  p.batch = c->x->dims[0];
  p.channels = c->x->dims[1];
  for (int i = 0; i < p.nsp; i++) {
    p.in[i] = c->x->dims[2 + i];
    p.out[i] = c->od[2 + i];
  }
  return hs_kernel_resample_create(&p, out, err);
}

/* The kernel for these shapes, or NULL when the plain-C path runs: by design for the modes the
 * kernel does not compute, or as a fallback (reported in strict mode, opkernel.h). */
static hs_kernel *kernel_for(const hs_node *n, const hs_tensor *x, const int64_t *od, const double *sc,
                             hs_error *strict_err) {
  build_ctx c = {x, od, HS_RESAMPLE_NEAREST, ((const resize_params *)n->params.bytes)->layout};
  if (hs_numel(x) == 0 || !kernel_applies((const resize_params *)n->params.bytes, x, od, sc, &c.kind)) return NULL;
  int64_t key[7] = {x->dims[1]};
  int nsp = x->ndim - 2;
  for (int i = 0; i < nsp; i++) {
    key[1 + i] = x->dims[2 + i];
    key[1 + nsp + i] = od[2 + i];
  }
  return hs_op_kernel(n, hs_op_cache(n), key, 1 + 2 * nsp, build_kernel, &c, x->dims[0], strict_err);
}

static int resize_prepare(hs_node *n, const hs_graph *g, hs_error *err) { return hs_op_attach_cache(n, err); }

/* The layout pass may keep a 4-D nearest / linear Resize channels-last (NHWC): oneDNN's resampling
 * takes the layout, and the plain-C loop below walks the output in physical order with physical
 * strides, so both stay exact. Cubic and tf_crop_and_resize stay NCHW. */
static int resize_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  (void)err;
  resize_params *p = (resize_params *)n->params.bytes;
  if (f->kind != HS_FUSE_LAYOUT || f->src != f->dst || (f->dst != HS_LAYOUT_NCHW && f->dst != HS_LAYOUT_NHWC) ||
      p->cubic || p->coord == CT_TF_CROP)
    return HS_FUSE_REFUSED;
  if (!f->dry_run) p->layout = f->dst;
  return 0;
}

int hs_resize_nearest_factors(const hs_node *n, const hs_graph *g, int64_t f[2]) {
  if (n->dead || (n->op != HS_OP_Resize && n->op != HS_OP_Upsample) || n->n_in < 1 || n->in[0] < 0) return 0;
  const resize_params *p = (const resize_params *)n->params.bytes;
  /* the modes that pick input index out / factor (kernel_applies; pytorch_half_pixel's depends on sizes) */
  int asym_floor = p->coord == CT_ASYMMETRIC && p->nearest == NM_FLOOR;
  int half_round = p->coord == CT_HALF_PIXEL && (p->nearest == NM_ROUND_FLOOR || p->nearest == NM_ROUND_CEIL);
  if (p->linear || p->cubic || (!asym_floor && !half_round)) return 0;
  float s[4];
  if (p->n_scales) {
    if (p->n_scales != 4) return 0;
    memcpy(s, p->scales, sizeof s);
  } else {
    int slot = p->legacy ? 1 : 2;
    if (!p->legacy && n->n_in > 3 && n->in[3] >= 0 && g->values[n->in[3]].nbytes) return 0; /* sizes */
    if (n->n_in <= slot || n->in[slot] < 0) return 0;
    const hs_value *v = &g->values[n->in[slot]];
    if (v->kind != HS_VAL_CONST || v->dtype != HS_DT_FLOAT32 || v->nbytes != sizeof s || !v->data) return 0;
    memcpy(s, v->data, sizeof s);
  }
  if (s[0] != 1.0f || s[1] != 1.0f) return 0;
  for (int k = 0; k < 2; k++) {
    if (!(s[2 + k] >= 1.0f && s[2 + k] <= 255.0f) || s[2 + k] != floorf(s[2 + k])) return 0;
    f[k] = (int64_t)s[2 + k];
  }
  return 1;
}

static size_t resize_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  int64_t total = 0;
  for (int i = 0; i < out[0].ndim; i++) total += out[0].dims[i];
  size_t plain = (size_t)total * (4 * sizeof(int64_t) + 4 * sizeof(double) + sizeof(float) + 1); /* cubic's taps */
  int64_t od[HS_MAX_DIMS];
  double sc[HS_MAX_DIMS];
  const hs_tensor *roi;
  hs_error e;
  if (resize_dims(n, in, nin, od, sc, &roi, &e)) return plain;
  size_t k = hs_op_kernel_scratch(kernel_for(n, &in[0], od, sc, NULL), in[0].dims[0]);
  return k > plain ? k : plain;
}

/* ---- plain C ---- */

/* Source coordinate of output index x along one axis. */
/* out_len is in_len * scale, unrounded, as ONNX's reference computes it. */
static double source_coord(const resize_params *p, double x, double scale, int64_t in_len, double out_len,
                           const float *roi_s, const float *roi_e) {
  switch (p->coord) {
    case CT_HALF_PIXEL: return (x + 0.5) / scale - 0.5;
    case CT_PYTORCH_HALF_PIXEL: return out_len > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
    case CT_ALIGN_CORNERS: return out_len == 1 ? 0.0 : x * (double)(in_len - 1) / (out_len - 1);
    case CT_ASYMMETRIC: return x / scale;
    case CT_TF_HALF_PIXEL_NN: return (x + 0.5) / scale;
    default: { /* tf_crop_and_resize */
      double s = roi_s ? *roi_s : 0, e = roi_e ? *roi_e : 1;
      return out_len > 1 ? s * (double)(in_len - 1) + x * (e - s) * (double)(in_len - 1) / (out_len - 1)
                         : 0.5 * (s + e) * (double)(in_len - 1);
    }
  }
}

static int64_t nearest_index(int mode, double x) {
  double f = floor(x);
  switch (mode) {
    case NM_ROUND_FLOOR: return (int64_t)(x - f == 0.5 ? f : round(x));
    case NM_ROUND_CEIL: return (int64_t)(x - f == 0.5 ? f + 1 : round(x));
    case NM_FLOOR: return (int64_t)f;
    default: return (int64_t)ceil(x);
  }
}

/* Cubic: per axis four taps (index, weight) around each source coordinate, then the tensor product
 * over the axes whose taps are not a single index with weight 1. */
static void resize_cubic(const resize_params *p, const hs_tensor *in, const hs_tensor *roi, const int64_t *od,
                         const double *sc, hs_tensor *out, void *scratch) {
  int r = in->ndim;
  int64_t *ti[HS_MAX_DIMS];
  double *tw[HS_MAX_DIMS];
  unsigned char *outside[HS_MAX_DIMS], trivial[HS_MAX_DIMS];
  char *sp = scratch;
  for (int a = 0; a < r; a++) ti[a] = (int64_t *)sp, sp += od[a] * 4 * 8;
  for (int a = 0; a < r; a++) tw[a] = (double *)sp, sp += od[a] * 4 * 8;
  for (int a = 0; a < r; a++) outside[a] = (unsigned char *)sp, sp += od[a];
  const double A = p->cubic_a;
  for (int a = 0; a < r; a++) {
    int64_t len = in->dims[a];
    const float *rs = roi ? (const float *)roi->data + a : NULL, *re = roi ? (const float *)roi->data + r + a : NULL;
    trivial[a] = od[a] == len && sc[a] == 1.0 && p->coord != CT_TF_CROP;
    for (int64_t o = 0; o < od[a]; o++) {
      double x = source_coord(p, (double)o, sc[a], len, (double)len * sc[a], rs, re), f = floor(x), t = x - f;
      outside[a][o] = p->coord == CT_TF_CROP && (x < 0 || x > (double)(len - 1));
      double c[4] = {((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A,
                     ((A + 2) * t - (A + 3)) * t * t + 1,
                     ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1,
                     ((A * (2 - t) - 5 * A) * (2 - t) + 8 * A) * (2 - t) - 4 * A};
      double sum = 0;
      for (int k = 0; k < 4; k++) {
        int64_t i = (int64_t)f - 1 + k;
        if (p->exclude_outside && (i < 0 || i >= len)) c[k] = 0;
        sum += c[k];
        ti[a][o * 4 + k] = i < 0 ? 0 : i >= len ? len - 1 : i;
      }
      for (int k = 0; k < 4; k++) tw[a][o * 4 + k] = p->exclude_outside && sum != 0 ? c[k] / sum : c[k];
    }
  }
  int64_t ist[HS_MAX_DIMS], acc = 1;
  for (int a = r - 1; a >= 0; a--) ist[a] = acc, acc *= in->dims[a];
  int axes[HS_MAX_DIMS], k = 0;
  for (int a = 0; a < r; a++)
    if (!trivial[a]) axes[k++] = a;
  const float *x = in->data;
  float *y = out->data;
  int64_t total = hs_numel(out), idx[HS_MAX_DIMS] = {0};
  for (int64_t e = 0; e < total; e++) {
    int oob = 0;
    int64_t base = 0;
    for (int a = 0; a < r; a++) {
      oob |= outside[a][idx[a]];
      if (trivial[a]) base += idx[a] * ist[a];
    }
    double v = 0;
    for (int m = 0; !oob && m < (1 << (2 * k)); m++) { /* 4^k combinations of taps */
      double wt = 1;
      int64_t off = base;
      for (int j = 0; j < k; j++) {
        int a = axes[j], tap = m >> (2 * j) & 3;
        wt *= tw[a][idx[a] * 4 + tap];
        off += ti[a][idx[a] * 4 + tap] * ist[a];
      }
      v += wt * x[off];
    }
    y[e] = oob ? p->extrapolation : (float)v;
    for (int a = r - 1; a >= 0; a--) {
      if (++idx[a] < od[a]) break;
      idx[a] = 0;
    }
  }
}

static int resize_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  const resize_params *p = (const resize_params *)n->params.bytes;
  int r = in[0].ndim, rc;
  int64_t od[HS_MAX_DIMS];
  double sc[HS_MAX_DIMS];
  const hs_tensor *roi;
  if ((rc = resize_dims(n, in, nin, od, sc, &roi, err))) return rc;
  int nhwc = p->layout == HS_LAYOUT_NHWC;
  if (nhwc && r != 4) return hs_op_errf(err, n, HS_UNSUPPORTED, "channels-last input must be 4-D");
  if (p->cubic) {
    resize_cubic(p, &in[0], roi, od, sc, &out[0], scratch);
    return 0;
  }
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = kernel_for(n, &in[0], od, sc, &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) {
    const void *src[1] = {in[0].data};
    hs_kernel_args args = {.batch = in[0].dims[0], .src = src, .nsrc = 1, .dst = out[0].data, .scratch = scratch};
    return hs_op_run_kernel(n, k, &args, err);
  }
  /* per axis: i0, i1, weight of i1, and whether the position is outside (tf_crop_and_resize) */
  int64_t *i0[HS_MAX_DIMS], *i1[HS_MAX_DIMS];
  float *w[HS_MAX_DIMS];
  unsigned char *outside[HS_MAX_DIMS];
  char *sp = scratch;
  for (int a = 0; a < r; a++) {
    i0[a] = (int64_t *)sp;
    sp += od[a] * 8;
    i1[a] = (int64_t *)sp;
    sp += od[a] * 8;
  }
  for (int a = 0; a < r; a++) {
    w[a] = (float *)sp;
    sp += od[a] * 4;
  }
  for (int a = 0; a < r; a++) {
    outside[a] = (unsigned char *)sp;
    sp += od[a];
  }
  for (int a = 0; a < r; a++) {
    int64_t len = in[0].dims[a];
    const float *rs = roi ? (const float *)roi->data + a : NULL, *re = roi ? (const float *)roi->data + r + a : NULL;
    for (int64_t o = 0; o < od[a]; o++) {
      double x = source_coord(p, (double)o, sc[a], len, (double)len * sc[a], rs, re);
      outside[a][o] = p->coord == CT_TF_CROP && (x < 0 || x > (double)(len - 1));
      if (!p->linear) {
        int64_t k = nearest_index(p->nearest, x);
        k = k < 0 ? 0 : k >= len ? len - 1 : k;
        i0[a][o] = i1[a][o] = k;
        w[a][o] = 0;
      } else {
        double xc = x < 0 ? 0 : x > (double)(len - 1) ? (double)(len - 1) : x;
        int64_t k = (int64_t)floor(xc);
        if (k >= len - 1) k = len - 1 > 0 ? len - 1 : 0;
        i0[a][o] = k;
        i1[a][o] = k + 1 < len ? k + 1 : k;
        w[a][o] = (float)(xc - (double)k);
      }
    }
  }
  /* ord: the logical axes in physical order (N, H, W, C when channels-last); ist: physical strides */
  int ord[HS_MAX_DIMS];
  for (int a = 0; a < r; a++) ord[a] = a;
  if (nhwc) ord[1] = 2, ord[2] = 3, ord[3] = 1;
  int64_t ist[HS_MAX_DIMS], acc = 1;
  for (int j = r - 1; j >= 0; j--) {
    ist[ord[j]] = acc;
    acc *= in[0].dims[ord[j]];
  }
  const float *x = in[0].data;
  float *y = out[0].data;
  int64_t total = hs_numel(&out[0]), idx[HS_MAX_DIMS] = {0};
  for (int64_t e = 0; e < total; e++) {
    int oob = 0, axes[HS_MAX_DIMS], k = 0;
    int64_t base = 0;
    for (int a = 0; a < r; a++) {
      oob |= outside[a][idx[a]];
      base += i0[a][idx[a]] * ist[a];
      if (w[a][idx[a]] != 0) axes[k++] = a;
    }
    if (oob) {
      y[e] = p->extrapolation;
    } else if (k == 0) {
      y[e] = x[base];
    } else {
      double v = 0;
      for (int m = 0; m < (1 << k); m++) {
        double wt = 1;
        int64_t off = base;
        for (int j = 0; j < k; j++) {
          int a = axes[j];
          float wa = w[a][idx[a]];
          if (m >> j & 1) {
            wt *= wa;
            off += (i1[a][idx[a]] - i0[a][idx[a]]) * ist[a];
          } else {
            wt *= 1 - wa;
          }
        }
        v += wt * x[off];
      }
      y[e] = (float)v;
    }
    for (int j = r - 1; j >= 0; j--) {
      if (++idx[ord[j]] < od[ord[j]]) break;
      idx[ord[j]] = 0;
    }
  }
  return 0;
}

/* ---- Pad -------------------------------------------------------------------------------------- */

enum { PM_CONSTANT, PM_REFLECT, PM_EDGE };

typedef struct {
  int mode;
  int from_inputs;
  int axes_input; /* opset 18: pads apply to the axes given by input 3 */
  float value;
  int n_pads;
  int64_t pads[2 * HS_MAX_DIMS];
} pad_params;

static int pad_check(hs_node *n, const hs_graph *g, hs_error *err) {
  pad_params *p = (pad_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  p->from_inputs = n->opset >= 11;
  p->axes_input = n->opset >= 18;
  if (!p->axes_input && n->n_in > 3 && n->in[3] >= 0) return hs_op_errf(err, n, HS_PARSE, "axes input needs opset 18");
  int rc = hs_node_only_attrs(n, p->from_inputs ? "mode" : (n->opset < 2 ? "mode,paddings,value" : "mode,pads,value"), err);
  const char *mode;
  if (rc || (rc = hs_attr_string(n, "mode", "constant", &mode, err)) || (rc = hs_attr_float(n, "value", 0.0f, &p->value, err)))
    return rc;
  static const char *const modes[] = {"constant", "reflect", "edge"};
  if (pick(mode, modes, 3, &p->mode)) return hs_op_errf(err, n, HS_UNSUPPORTED, "mode '%s' is not supported (opset %d)", mode, n->opset);
  if (!p->from_inputs) {
    const int64_t *v;
    size_t c;
    if ((rc = hs_attr_ints(n, n->opset < 2 ? "paddings" : "pads", &v, &c, err))) return rc;
    if (!v || c > 2 * HS_MAX_DIMS) return hs_op_errf(err, n, HS_PARSE, "pads attribute is required");
    p->n_pads = (int)c;
    hs_memcpy(p->pads, v, c * sizeof *v);
  } else if (n->n_in < 2 || n->in[1] < 0) {
    return hs_op_errf(err, n, HS_PARSE, "the pads input is required");
  }
  return 0;
}

static int pad_amounts(const hs_node *n, const hs_tensor *in, int nin, int64_t *pb, int64_t *pe, hs_error *err) {
  const pad_params *p = (const pad_params *)n->params.bytes;
  int r = in[0].ndim, c = p->n_pads;
  int64_t v[2 * HS_MAX_DIMS];
  if (p->from_inputs) {
    const hs_tensor *t = &in[1];
    if (t->dtype != HS_DT_INT64 || t->ndim != 1 || t->dims[0] > 2 * HS_MAX_DIMS)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "pads must be a 1-D int64 tensor");
    c = (int)t->dims[0];
    hs_memcpy(v, t->data, (size_t)c * 8);
  } else {
    hs_memcpy(v, p->pads, sizeof v);
  }
  if (p->axes_input && nin > 3 && HS_PRESENT(&in[3])) { /* pads for the listed axes only, zero elsewhere */
    const hs_tensor *a = &in[3];
    if ((a->dtype != HS_DT_INT64 && a->dtype != HS_DT_INT32) || a->ndim != 1 || a->dims[0] > r || c != 2 * a->dims[0])
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axes must be 1-D int with half as many entries as pads");
    int na = (int)a->dims[0], seen[HS_MAX_DIMS] = {0};
    int64_t full[2 * HS_MAX_DIMS] = {0};
    for (int i = 0; i < na; i++) {
      int ax, rc = hs_norm_axis(hs_get_int(a, i), r, &ax, n, err);
      if (rc) return rc;
      if (seen[ax]++) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis %d is listed twice", ax);
      full[ax] = v[i];
      full[r + ax] = v[na + i];
    }
    memcpy(v, full, sizeof full);
    c = 2 * r;
  }
  if (c != 2 * r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "pads has %d entries for rank %d", c, r);
  for (int i = 0; i < r; i++) {
    pb[i] = v[i];
    pe[i] = v[r + i];
    if (pb[i] > ((int64_t)1 << 32) || pe[i] > ((int64_t)1 << 32) || in[0].dims[i] + pb[i] + pe[i] < 0 ||
        pb[i] < -in[0].dims[i] || pe[i] < -in[0].dims[i])
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "pads out of range on axis %d", i);
  }
  return 0;
}

static int pad_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const pad_params *p = (const pad_params *)n->params.bytes;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_INT64, HS_DT_INT32, HS_DT_FLOAT64,
                         HS_DT_UINT8, HS_DT_INT8, HS_DT_BOOL, HS_DT_UNDEFINED);
  if (rc) return rc;
  int64_t pb[HS_MAX_DIMS], pe[HS_MAX_DIMS], od[HS_MAX_DIMS];
  if ((rc = pad_amounts(n, in, nin, pb, pe, err))) return rc;
  for (int i = 0; i < in[0].ndim; i++) {
    od[i] = in[0].dims[i] + pb[i] + pe[i];
    if (p->mode != PM_CONSTANT && in[0].dims[i] == 0 && od[i] > 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "cannot %s-pad an empty axis", p->mode == PM_EDGE ? "edge" : "reflect");
  }
  if (nin > 2 && HS_PRESENT(&in[2]) && (in[2].dtype != in[0].dtype || hs_numel(&in[2]) != 1))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "constant_value must be one element of the input's type");
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, od, n, err);
}

static int pad_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  const pad_params *p = (const pad_params *)n->params.bytes;
  int64_t pb[HS_MAX_DIMS], pe[HS_MAX_DIMS], ist[HS_MAX_DIMS], acc = 1;
  int rc = pad_amounts(n, in, nin, pb, pe, err), r = in[0].ndim;
  if (rc) return rc;
  for (int a = r - 1; a >= 0; a--) {
    ist[a] = acc;
    acc *= in[0].dims[a];
  }
  size_t esz = hs_dtype_size(in[0].dtype);
  unsigned char fill[8] = {0};
  if (nin > 2 && HS_PRESENT(&in[2])) hs_memcpy(fill, in[2].data, esz);
  else if (!p->from_inputs) {
    hs_tensor f = {.dtype = in[0].dtype, .data = fill};
    hs_store_f64(&f, 0, p->value);
  }
  int64_t total = hs_numel(&out[0]), idx[HS_MAX_DIMS] = {0};
  char *y = out[0].data;
  const char *x = in[0].data;
  for (int64_t e = 0; e < total; e++) {
    int64_t off = 0;
    int outside = 0;
    for (int a = 0; a < r; a++) {
      int64_t len = in[0].dims[a], i = idx[a] - pb[a];
      if (i < 0 || i >= len) {
        if (p->mode == PM_CONSTANT) {
          outside = 1;
          break;
        } else if (p->mode == PM_EDGE) {
          i = i < 0 ? 0 : len - 1;
        } else if (len == 1) {
          i = 0;
        } else {
          int64_t period = 2 * (len - 1);
          i = i < 0 ? -i : i;
          i %= period;
          if (i >= len) i = period - i;
        }
      }
      off += i * ist[a];
    }
    hs_memcpy(y + e * (int64_t)esz, outside ? (const char *)fill : x + off * (int64_t)esz, esz);
    for (int a = r - 1; a >= 0; a--) {
      if (++idx[a] < out[0].dims[a]) break;
      idx[a] = 0;
    }
  }
  return 0;
}

const hs_op_impl hs_op_impl_resize = {
    .check = resize_check,
    .infer = resize_infer,
    .prepare = resize_prepare,
    .scratch_bytes = resize_scratch,
    .run = resize_run,
    .fuse = resize_fuse,
};
const hs_op_impl hs_op_impl_pad = {
    .check = pad_check,
    .infer = pad_infer,
    .run = pad_run,
};

/* conv.c - Conv and ConvTranspose (1-3 spatial dims, groups, dilations, pads, auto_pad) as plain-C
 * reference kernels: im2col / col2im around hs_sgemm. Everything runs in 3-D form (missing
 * spatial dims have size 1), so one code path covers Conv1d/2d/3d. */
#include <string.h>

#include "ops/ops.h"

enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID };

typedef struct {
  int transposed;
  int auto_pad;
  int64_t group;
  int nk;                      /* entries in kernel_shape, 0 when absent */
  int64_t kernel[3], stride[3], dilation[3], pads[6];
  int n_strides, n_dil, n_pads;
  int64_t out_pad[3], out_shape[3];
  int n_out_pad, n_out_shape;
} conv_params;

/* The geometry of one call, in 3-D form. */
typedef struct {
  int nsp;
  int64_t N, C, M, G;          /* batch, input channels, output channels, groups */
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
} conv_geom;

static int parse_auto_pad(const hs_node *n, int *out, hs_error *err) {
  const char *s;
  int rc = hs_attr_string(n, "auto_pad", "NOTSET", &s, err);
  if (rc) return rc;
  if (strcmp(s, "NOTSET") == 0) *out = PAD_NOTSET;
  else if (strcmp(s, "SAME_UPPER") == 0) *out = PAD_SAME_UPPER;
  else if (strcmp(s, "SAME_LOWER") == 0) *out = PAD_SAME_LOWER;
  else if (strcmp(s, "VALID") == 0) *out = PAD_VALID;
  else return hs_op_errf(err, n, HS_UNSUPPORTED, "auto_pad '%s' is not supported", s);
  return 0;
}

static int ints_into(const hs_node *n, const char *name, int64_t *dst, int max, int *count, hs_error *err) {
  const int64_t *v;
  size_t c;
  int rc = hs_attr_ints(n, name, &v, &c, err);
  if (rc) return rc;
  if ((int)c > max) return hs_op_errf(err, n, HS_UNSUPPORTED, "%s has %zu entries (at most %d spatial dims)", name, c, max / (strcmp(name, "pads") == 0 ? 2 : 1));
  memcpy(dst, v, c * sizeof *v);
  *count = (int)c;
  return 0;
}

static int conv_check(hs_node *n, const hs_graph *g, hs_error *err) {
  conv_params *p = (conv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  p->transposed = strcmp(n->op_type, "ConvTranspose") == 0;
  int rc = hs_node_only_attrs(n, p->transposed ? "auto_pad,dilations,group,kernel_shape,output_padding,output_shape,pads,strides"
                                               : "auto_pad,dilations,group,kernel_shape,pads,strides", err);
  if (rc || (rc = parse_auto_pad(n, &p->auto_pad, err)) || (rc = hs_attr_int(n, "group", 1, &p->group, err)) ||
      (rc = ints_into(n, "kernel_shape", p->kernel, 3, &p->nk, err)) ||
      (rc = ints_into(n, "strides", p->stride, 3, &p->n_strides, err)) ||
      (rc = ints_into(n, "dilations", p->dilation, 3, &p->n_dil, err)) ||
      (rc = ints_into(n, "pads", p->pads, 6, &p->n_pads, err)) ||
      (rc = ints_into(n, "output_padding", p->out_pad, 3, &p->n_out_pad, err)) ||
      (rc = ints_into(n, "output_shape", p->out_shape, 3, &p->n_out_shape, err)))
    return rc;
  if (p->group < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "group must be >= 1");
  for (int i = 0; i < p->n_strides; i++)
    if (p->stride[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "strides must be >= 1");
  for (int i = 0; i < p->n_dil; i++)
    if (p->dilation[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "dilations must be >= 1");
  for (int i = 0; i < p->n_pads; i++)
    if (p->pads[i] < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "pads must be >= 0");
  for (int i = 0; i < p->nk; i++)
    if (p->kernel[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel_shape must be >= 1");
  return 0;
}

#define LIM ((int64_t)1 << 40) /* no spatial size / channel count beyond this is plausible */

static int conv_geometry(const hs_node *n, const hs_tensor *x, const hs_tensor *w, conv_geom *gm, hs_error *err) {
  const conv_params *p = (const conv_params *)n->params.bytes;
  if (x->ndim < 3 || x->ndim > 5) return hs_op_errf(err, n, HS_UNSUPPORTED, "input rank %d (1-3 spatial dims supported)", x->ndim);
  if (w->ndim != x->ndim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "weights rank %d differs from input rank %d", w->ndim, x->ndim);
  int nsp = x->ndim - 2;
  if ((p->nk && p->nk != nsp) || (p->n_strides && p->n_strides != nsp) || (p->n_dil && p->n_dil != nsp) ||
      (p->n_pads && p->n_pads != 2 * nsp) || (p->n_out_pad && p->n_out_pad != nsp) ||
      (p->n_out_shape && p->n_out_shape != nsp))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attribute lengths do not match %d spatial dims", nsp);
  memset(gm, 0, sizeof *gm);
  gm->nsp = nsp;
  gm->N = x->dims[0];
  gm->C = x->dims[1];
  gm->G = p->group;
  if (gm->C % gm->G) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%lld channels do not split into %lld groups", (long long)gm->C, (long long)gm->G);
  if (!p->transposed) {
    gm->M = w->dims[0];
    if (w->dims[1] * gm->G != gm->C) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "weights expect %lld input channels, input has %lld", (long long)(w->dims[1] * gm->G), (long long)gm->C);
    if (gm->M % gm->G) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output channels do not split into groups");
  } else {
    if (w->dims[0] != gm->C) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "weights expect %lld input channels, input has %lld", (long long)w->dims[0], (long long)gm->C);
    gm->M = w->dims[1] * gm->G;
  }
  for (int i = 0; i < 3; i++) {
    gm->in[i] = gm->out[i] = gm->k[i] = gm->s[i] = gm->d[i] = 1;
    gm->pb[i] = gm->pe[i] = 0;
  }
  for (int i = 0; i < nsp; i++) {
    gm->in[i] = x->dims[2 + i];
    gm->k[i] = w->dims[2 + i];
    if (p->nk && p->kernel[i] != gm->k[i]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel_shape differs from the weights");
    gm->s[i] = p->n_strides ? p->stride[i] : 1;
    gm->d[i] = p->n_dil ? p->dilation[i] : 1;
    if (gm->in[i] > LIM || gm->k[i] > LIM || gm->s[i] > LIM || gm->d[i] > LIM || gm->k[i] < 1)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "implausible sizes");
    int64_t ext = (gm->k[i] - 1) * gm->d[i] + 1;
    if (!p->transposed) {
      if (p->auto_pad == PAD_SAME_UPPER || p->auto_pad == PAD_SAME_LOWER) {
        gm->out[i] = (gm->in[i] + gm->s[i] - 1) / gm->s[i];
        int64_t total = (gm->out[i] - 1) * gm->s[i] + ext - gm->in[i];
        if (total < 0) total = 0;
        gm->pb[i] = p->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
        gm->pe[i] = total - gm->pb[i];
      } else {
        if (p->auto_pad == PAD_NOTSET && p->n_pads) {
          gm->pb[i] = p->pads[i];
          gm->pe[i] = p->pads[nsp + i];
        }
        if (gm->pb[i] > LIM || gm->pe[i] > LIM) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "implausible pads");
        int64_t span = gm->in[i] + gm->pb[i] + gm->pe[i] - ext;
        if (span < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel larger than the padded input");
        gm->out[i] = span / gm->s[i] + 1;
      }
    } else {
      int64_t opad = p->n_out_pad ? p->out_pad[i] : 0;
      int64_t full = gm->s[i] * (gm->in[i] - 1) + opad + ext;
      if (p->n_out_shape || p->auto_pad == PAD_SAME_UPPER || p->auto_pad == PAD_SAME_LOWER) {
        int64_t want = p->n_out_shape ? p->out_shape[i] : gm->in[i] * gm->s[i];
        int64_t total = full - want;
        if (want < 0 || want > LIM) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "implausible output_shape");
        if (total < 0) total = 0; /* the output is larger than the full result: extra rows are zero-filled */
        if (p->auto_pad == PAD_SAME_UPPER) {
          gm->pb[i] = total / 2;
          gm->pe[i] = total - total / 2;
        } else {
          gm->pb[i] = total - total / 2;
          gm->pe[i] = total / 2;
        }
        gm->out[i] = want;
      } else {
        if (p->n_pads && p->auto_pad == PAD_NOTSET) {
          gm->pb[i] = p->pads[i];
          gm->pe[i] = p->pads[nsp + i];
        }
        gm->out[i] = full - gm->pb[i] - gm->pe[i];
        if (gm->out[i] < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "pads larger than the output");
      }
    }
  }
  return 0;
}

static int conv_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc;
  if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  if (in[1].dtype != HS_DT_FLOAT32) return hs_op_errf(err, n, HS_UNSUPPORTED, "weights must be float32");
  conv_geom gm;
  if ((rc = conv_geometry(n, &in[0], &in[1], &gm, err))) return rc;
  if (nin > 2 && HS_PRESENT(&in[2]) && (in[2].dtype != HS_DT_FLOAT32 || in[2].ndim != 1 || in[2].dims[0] != gm.M))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bias must be float32 [%lld]", (long long)gm.M);
  int64_t d[5] = {gm.N, gm.M};
  for (int i = 0; i < gm.nsp; i++) d[2 + i] = gm.out[i];
  return hs_set_shape(&out[0], HS_DT_FLOAT32, 2 + gm.nsp, d, n, err);
}

static size_t conv_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  conv_geom gm;
  hs_error err;
  if (conv_geometry(n, &in[0], &in[1], &gm, &err)) return 0;
  const conv_params *p = (const conv_params *)n->params.bytes;
  int64_t ksz = gm.k[0] * gm.k[1] * gm.k[2];
  if (!p->transposed) {
    int64_t osp = gm.out[0] * gm.out[1] * gm.out[2];
    int is_1x1 = ksz == 1 && gm.s[0] * gm.s[1] * gm.s[2] == 1 && gm.pb[0] + gm.pb[1] + gm.pb[2] + gm.pe[0] + gm.pe[1] + gm.pe[2] == 0;
    return is_1x1 ? 0 : (size_t)((gm.C / gm.G) * ksz * osp) * sizeof(float);
  }
  int64_t isp = gm.in[0] * gm.in[1] * gm.in[2];
  return (size_t)((gm.M / gm.G) * ksz * isp) * sizeof(float);
}

/* col[(c, kd, kh, kw), (od, oh, ow)] for the channels of one group of one image. */
static void im2col(const float *x, const conv_geom *g, int64_t channels, float *col) {
  int64_t osp = g->out[0] * g->out[1] * g->out[2];
  for (int64_t c = 0; c < channels; c++)
    for (int64_t kd = 0; kd < g->k[0]; kd++)
      for (int64_t kh = 0; kh < g->k[1]; kh++)
        for (int64_t kw = 0; kw < g->k[2]; kw++) {
          float *row = col + (((c * g->k[0] + kd) * g->k[1] + kh) * g->k[2] + kw) * osp;
          const float *xc = x + c * g->in[0] * g->in[1] * g->in[2];
          for (int64_t od = 0; od < g->out[0]; od++) {
            int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];
            for (int64_t oh = 0; oh < g->out[1]; oh++) {
              int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];
              float *r = row + (od * g->out[1] + oh) * g->out[2];
              if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1]) {
                memset(r, 0, sizeof(float) * (size_t)g->out[2]);
                continue;
              }
              const float *xr = xc + (id * g->in[1] + ih) * g->in[2];
              for (int64_t ow = 0; ow < g->out[2]; ow++) {
                int64_t iw = ow * g->s[2] - g->pb[2] + kw * g->d[2];
                r[ow] = (iw >= 0 && iw < g->in[2]) ? xr[iw] : 0.0f;
              }
            }
          }
        }
}

/* Scatter-adds col[(m, kd, kh, kw), (id, ih, iw)] into y (one group of one image) for ConvTranspose. */
static void col2im(const float *col, const conv_geom *g, int64_t channels, float *y) {
  int64_t isp = g->in[0] * g->in[1] * g->in[2];
  for (int64_t c = 0; c < channels; c++)
    for (int64_t kd = 0; kd < g->k[0]; kd++)
      for (int64_t kh = 0; kh < g->k[1]; kh++)
        for (int64_t kw = 0; kw < g->k[2]; kw++) {
          const float *row = col + (((c * g->k[0] + kd) * g->k[1] + kh) * g->k[2] + kw) * isp;
          float *yc = y + c * g->out[0] * g->out[1] * g->out[2];
          for (int64_t id = 0; id < g->in[0]; id++) {
            int64_t od = id * g->s[0] - g->pb[0] + kd * g->d[0];
            if (od < 0 || od >= g->out[0]) continue;
            for (int64_t ih = 0; ih < g->in[1]; ih++) {
              int64_t oh = ih * g->s[1] - g->pb[1] + kh * g->d[1];
              if (oh < 0 || oh >= g->out[1]) continue;
              const float *r = row + (id * g->in[1] + ih) * g->in[2];
              float *yr = yc + (od * g->out[1] + oh) * g->out[2];
              for (int64_t iw = 0; iw < g->in[2]; iw++) {
                int64_t ow = iw * g->s[2] - g->pb[2] + kw * g->d[2];
                if (ow >= 0 && ow < g->out[2]) yr[ow] += r[iw];
              }
            }
          }
        }
}

static int conv_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  const conv_params *p = (const conv_params *)n->params.bytes;
  conv_geom g;
  int rc = conv_geometry(n, &in[0], &in[1], &g, err);
  if (rc) return rc;
  const float *x = in[0].data, *w = in[1].data, *bias = nin > 2 && HS_PRESENT(&in[2]) ? in[2].data : NULL;
  float *y = out[0].data, *col = scratch;
  int64_t isp = g.in[0] * g.in[1] * g.in[2], osp = g.out[0] * g.out[1] * g.out[2];
  int64_t ksz = g.k[0] * g.k[1] * g.k[2], Cg = g.C / g.G, Mg = g.M / g.G;
  for (int64_t b = 0; b < g.N; b++) {
    const float *xb = x + b * g.C * isp;
    float *yb = y + b * g.M * osp;
    if (!p->transposed) {
      for (int64_t gi = 0; gi < g.G; gi++) {
        const float *src;
        if (col) {
          im2col(xb + gi * Cg * isp, &g, Cg, col);
          src = col;
        } else {
          src = xb + gi * Cg * isp; /* 1x1, stride 1, no pads: the input is its own im2col */
        }
        hs_sgemm(Mg, osp, Cg * ksz, w + gi * Mg * Cg * ksz, Cg * ksz, src, osp, yb + gi * Mg * osp, osp, 0);
      }
    } else {
      memset(yb, 0, sizeof(float) * (size_t)(g.M * osp));
      for (int64_t gi = 0; gi < g.G; gi++) {
        /* col[Mg*K, isp] = W_g^T [Mg*K, Cg] x X_g [Cg, isp]; W is [C, Mg, k...] */
        const float *wg = w + gi * Cg * Mg * ksz;
        const float *xg = xb + gi * Cg * isp;
        int64_t rows = Mg * ksz;
        for (int64_t r = 0; r < rows; r++) {
          float *cr = col + r * isp;
          memset(cr, 0, sizeof(float) * (size_t)isp);
          for (int64_t c = 0; c < Cg; c++) {
            float wv = wg[c * rows + r];
            const float *xr = xg + c * isp;
            for (int64_t i = 0; i < isp; i++) cr[i] += wv * xr[i];
          }
        }
        col2im(col, &g, Mg, yb + gi * Mg * osp);
      }
    }
    if (bias)
      for (int64_t m = 0; m < g.M; m++) {
        float bv = bias[m], *ym = yb + m * osp;
        for (int64_t i = 0; i < osp; i++) ym[i] += bv;
      }
  }
  return 0;
}

const hs_op_def hs_ops_conv[] = {
    {"Conv", 1, 2, 3, 1, 1, 0, 0, conv_check, conv_infer, NULL, conv_scratch, conv_run},
    {"ConvTranspose", 1, 2, 3, 1, 1, 0, 0, conv_check, conv_infer, NULL, conv_scratch, conv_run},
    {NULL},
};

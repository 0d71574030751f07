/* refs.h - naive C reference implementations the kernel tests compare oneDNN's results against. */
#ifndef HS_TESTS_KERNELS_REFS_H
#define HS_TESTS_KERNELS_REFS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
  g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((g_rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}
static float *rand_buf(int64_t n) {
  float *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  for (int64_t i = 0; i < n; i++) b[i] = frand();
  return b;
}
static int64_t prod(int n, const int64_t *d) {
  int64_t p = 1;
  for (int i = 0; i < n; i++) p *= d[i];
  return p;
}

/* Largest violation of |a - e| <= atol + rtol * |e|, as a ratio (<= 1 passes). */
static double worst(const float *a, const float *e, int64_t n, double atol, double rtol, int64_t *at) {
  double w = 0;
  for (int64_t i = 0; i < n; i++) {
    double lim = atol + rtol * fabs((double)e[i]);
    double r = fabs((double)a[i] - (double)e[i]) / lim;
    if (!(r <= w)) { /* also catches NaN */
      w = isnan(r) ? 1e30 : r;
      if (at) *at = i;
    }
  }
  return w;
}

static float ref_act(hs_act_kind a, float al, float be, float x) {
  switch (a) {
    case HS_ACT_RELU: return x > 0 ? x : al * x;
    case HS_ACT_CLIP: return x < al ? al : (x > be ? be : x);
    case HS_ACT_SIGMOID: return 1.f / (1.f + expf(-x));
    case HS_ACT_TANH: return tanhf(x);
    case HS_ACT_HARDSIGMOID: { float y = al * x + be; return y < 0 ? 0 : (y > 1 ? 1 : y); }
    case HS_ACT_HARDSWISH: { float y = x / 6.f + 0.5f; return x * (y < 0 ? 0 : (y > 1 ? 1 : y)); }
    case HS_ACT_ELU: return x > 0 ? x : al * (expf(x) - 1);
    case HS_ACT_GELU_ERF: return 0.5f * x * (1.f + erff(x / sqrtf(2.f)));
    case HS_ACT_EXP: return expf(x);
    case HS_ACT_LOG: return logf(x);
    case HS_ACT_SQRT: return sqrtf(x);
    case HS_ACT_ABS: return fabsf(x);
    case HS_ACT_SQUARE: return x * x;
    case HS_ACT_LINEAR: return al * x + be;
    case HS_ACT_POW: return al * powf(x, be);
    case HS_ACT_SOFTPLUS: return logf(1.f + expf(x));
    case HS_ACT_SWISH: return x / (1.f + expf(-al * x));
    default: return x;
  }
}

/* dst[i] = post(dst[i]) with res the residual for SUM entries. */
static void ref_post(const hs_post_ops *p, float *dst, const float *res, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = dst[i];
    for (int j = 0; j < p->count; j++) {
      const hs_post_op *o = &p->op[j];
      if (o->kind == HS_POST_SUM) v += (o->scale == 0.f ? 1.f : o->scale) * res[i];
      else v = ref_act(o->act, o->alpha, o->beta, v);
    }
    dst[i] = v;
  }
}

/* NCHW <-> NHWC for dims (N, C, S) where S is the product of spatial dims. */
static void to_nhwc(const float *src, float *dst, int64_t n, int64_t c, int64_t s) {
  for (int64_t a = 0; a < n; a++)
    for (int64_t b = 0; b < c; b++)
      for (int64_t i = 0; i < s; i++) dst[(a * s + i) * c + b] = src[(a * c + b) * s + i];
}
static void to_nchw(const float *src, float *dst, int64_t n, int64_t c, int64_t s) {
  for (int64_t a = 0; a < n; a++)
    for (int64_t b = 0; b < c; b++)
      for (int64_t i = 0; i < s; i++) dst[(a * c + b) * s + i] = src[(a * s + i) * c + b];
}

/* Spatial params as 3-D (leading axes of size 1). */
typedef struct {
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3];
} sp3;
static sp3 to_sp3(int nsp, const int64_t *in, const int64_t *out, const int64_t *k, const int64_t *s,
                  const int64_t *d, const int64_t *pb) {
  sp3 r;
  for (int i = 0; i < 3; i++) {
    int j = i - (3 - nsp);
    r.in[i] = j >= 0 ? in[j] : 1;
    r.out[i] = j >= 0 ? out[j] : 1;
    r.k[i] = j >= 0 ? k[j] : 1;
    r.s[i] = j >= 0 ? s[j] : 1;
    r.d[i] = j >= 0 ? d[j] : 1;
    r.pb[i] = j >= 0 ? pb[j] : 0;
  }
  return r;
}

/* NCHW convolution (or deconvolution) with bias and post-ops. */
static void ref_conv(const hs_conv_params *p, int64_t n, const float *x, const float *res, float *y) {
  sp3 g = to_sp3(p->nsp, p->in, p->out, p->kernel, p->stride, p->dilation, p->pad_begin);
  int64_t G = p->groups, icg = p->in_c / G, ocg = p->out_c / G;
  int64_t isz = g.in[0] * g.in[1] * g.in[2], osz = g.out[0] * g.out[1] * g.out[2];
  int64_t ksz = g.k[0] * g.k[1] * g.k[2];
  int64_t total = n * p->out_c * osz;
  for (int64_t i = 0; i < total; i++) y[i] = 0;
  for (int64_t b = 0; b < n; b++)
    for (int64_t gr = 0; gr < G; gr++)
      for (int64_t oc = 0; oc < ocg; oc++)
        for (int64_t ic = 0; ic < icg; ic++)
          for (int64_t kd = 0; kd < g.k[0]; kd++)
            for (int64_t kh = 0; kh < g.k[1]; kh++)
              for (int64_t kw = 0; kw < g.k[2]; kw++) {
                int64_t kidx = (kd * g.k[1] + kh) * g.k[2] + kw;
                float w = p->transposed ? p->weights[((gr * icg + ic) * ocg + oc) * ksz + kidx]
                                        : p->weights[((gr * ocg + oc) * icg + ic) * ksz + kidx];
                const float *xc = x + (b * p->in_c + gr * icg + ic) * isz;
                float *yc = y + (b * p->out_c + gr * ocg + oc) * osz;
                if (!p->transposed) {
                  for (int64_t od = 0; od < g.out[0]; od++)
                    for (int64_t oh = 0; oh < g.out[1]; oh++)
                      for (int64_t ow = 0; ow < g.out[2]; ow++) {
                        int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
                        int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                        int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                        if (id < 0 || ih < 0 || iw < 0 || id >= g.in[0] || ih >= g.in[1] || iw >= g.in[2]) continue;
                        yc[(od * g.out[1] + oh) * g.out[2] + ow] += w * xc[(id * g.in[1] + ih) * g.in[2] + iw];
                      }
                } else {
                  for (int64_t id = 0; id < g.in[0]; id++)
                    for (int64_t ih = 0; ih < g.in[1]; ih++)
                      for (int64_t iw = 0; iw < g.in[2]; iw++) {
                        int64_t od = id * g.s[0] - g.pb[0] + kd * g.d[0];
                        int64_t oh = ih * g.s[1] - g.pb[1] + kh * g.d[1];
                        int64_t ow = iw * g.s[2] - g.pb[2] + kw * g.d[2];
                        if (od < 0 || oh < 0 || ow < 0 || od >= g.out[0] || oh >= g.out[1] || ow >= g.out[2]) continue;
                        yc[(od * g.out[1] + oh) * g.out[2] + ow] += w * xc[(id * g.in[1] + ih) * g.in[2] + iw];
                      }
                }
              }
  if (p->bias)
    for (int64_t b = 0; b < n; b++)
      for (int64_t c = 0; c < p->out_c; c++)
        for (int64_t i = 0; i < osz; i++) y[(b * p->out_c + c) * osz + i] += p->bias[c];
  ref_post(&p->post, y, res, total);
}

/* NCHW pooling. ONNX: avg excluding pads counts only in-image elements. */
static void ref_pool(const hs_pool_params *p, int64_t n, const float *x, float *y) {
  sp3 g = to_sp3(p->nsp, p->in, p->out, p->kernel, p->stride, p->dilation, p->pad_begin);
  int64_t isz = g.in[0] * g.in[1] * g.in[2], osz = g.out[0] * g.out[1] * g.out[2];
  for (int64_t bc = 0; bc < n * p->channels; bc++)
    for (int64_t od = 0; od < g.out[0]; od++)
      for (int64_t oh = 0; oh < g.out[1]; oh++)
        for (int64_t ow = 0; ow < g.out[2]; ow++) {
          double acc = p->kind == HS_POOL_MAX ? -INFINITY : 0;
          int64_t cnt = 0, cnt_pad = 0;
          for (int64_t kd = 0; kd < g.k[0]; kd++)
            for (int64_t kh = 0; kh < g.k[1]; kh++)
              for (int64_t kw = 0; kw < g.k[2]; kw++) {
                int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
                int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                /* include-pad counts window cells inside the padded image (not past pad_end) */
                int inside_pad = 1;
                for (int a = 0; a < 3; a++) {
                  int64_t ix = a == 0 ? id : a == 1 ? ih : iw;
                  int j = a - (3 - p->nsp);
                  int64_t pe = j >= 0 ? p->pad_end[j] : 0;
                  if (ix < -g.pb[a] || ix >= g.in[a] + pe) inside_pad = 0;
                }
                cnt_pad += inside_pad;
                if (id < 0 || ih < 0 || iw < 0 || id >= g.in[0] || ih >= g.in[1] || iw >= g.in[2]) continue;
                float v = x[bc * isz + (id * g.in[1] + ih) * g.in[2] + iw];
                if (p->kind == HS_POOL_MAX) acc = v > acc ? v : acc;
                else acc += v;
                cnt++;
              }
          if (p->kind == HS_POOL_AVG_EXCLUDE_PAD) acc /= cnt;
          else if (p->kind == HS_POOL_AVG_INCLUDE_PAD) acc /= cnt_pad;
          y[bc * osz + (od * g.out[1] + oh) * g.out[2] + ow] = (float)acc;
        }
}

/* Broadcast index: offset in a tensor of dims sd (rank nd, right-aligned padded) for dst index idx. */
static int64_t bcast_off(int nd, const int64_t *dd, const int64_t *sd, int64_t idx) {
  int64_t off = 0, stride = 1;
  for (int i = nd - 1; i >= 0; i--) {
    int64_t c = idx % dd[i];
    idx /= dd[i];
    if (sd[i] != 1) off += c * stride;
    stride *= sd[i];
  }
  return off;
}

#endif

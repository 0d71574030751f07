/* test_kernels.c - checks every oneDNN kernel against naive C references on random data and odd shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>
#include <malloc.h>

#include "base/wblock.h"
#include "kernels/cpu_dnnl.h"
#include "kernels/kcache.h"
#include "refs.h"

#define ATOL 1e-4
#define RTOL 1e-3

/* Runs k once with its own scratch; returns the status. */
static int run_k(hs_kernel *k, int64_t batch, const void *const *src, int nsrc, const void *res, void *dst,
                 hs_error *err) {
  size_t sz = hs_kernel_scratch_size(k, batch);
  assert_true(sz != (size_t)-1);
  void *scratch = NULL;
  if (sz) assert_int_equal(posix_memalign(&scratch, 64, sz), 0);
  hs_kernel_args a = {.batch = batch, .src = src, .nsrc = nsrc, .residual = res, .dst = dst, .scratch = scratch};
  int rc = hs_kernel_run(k, &a, err);
  free(scratch);
  return rc;
}

static void expect_close(const char *what, const float *got, const float *want, int64_t n) {
  int64_t at = 0;
  double w = worst(got, want, n, ATOL, RTOL, &at);
  if (w > 1.0) {
    fprintf(stderr, "%s: mismatch at %lld: got %g want %g\n", what, (long long)at, got[at], want[at]);
    fail();
  }
}

/* ---------------- convolution ---------------- */

typedef struct {
  const char *name;
  int nsp, transposed;
  int64_t n, ic, oc, g;
  int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], opad[3];
  int bias;
  hs_post_ops post;
} conv_case;

static int64_t conv_out(const conv_case *c, int i) {
  if (c->transposed)
    return (c->in[i] - 1) * c->s[i] - c->pb[i] - c->pe[i] + (c->k[i] - 1) * c->d[i] + 1 + c->opad[i];
  return (c->in[i] + c->pb[i] + c->pe[i] - ((c->k[i] - 1) * c->d[i] + 1)) / c->s[i] + 1;
}

/* Builds the case in the given layout, runs it at batch c->n and at batch c->n + 1, compares. */
static void check_conv(const conv_case *c, hs_layout in_layout, hs_layout layout, hs_layout res_layout) {
  hs_conv_params p = {0};
  p.src_layout = in_layout;
  p.dst_layout = layout;
  p.res_layout = res_layout;
  p.transposed = c->transposed;
  p.nsp = c->nsp;
  p.batch = c->n;
  p.in_c = c->ic;
  p.out_c = c->oc;
  p.groups = c->g;
  for (int i = 0; i < c->nsp; i++) {
    p.in[i] = c->in[i];
    p.out[i] = conv_out(c, i);
    p.kernel[i] = c->k[i];
    p.stride[i] = c->s[i];
    p.dilation[i] = c->d[i];
    p.pad_begin[i] = c->pb[i];
    p.pad_end[i] = c->pe[i] - c->opad[i];
  }
  int64_t ksz = prod(c->nsp, c->k), isz = prod(c->nsp, p.in), osz = prod(c->nsp, p.out);
  int64_t wn = c->oc * (c->ic / c->g) * ksz;
  float *w = rand_buf(wn), *b = c->bias ? rand_buf(c->oc) : NULL;
  p.weights = w;
  p.bias = b;
  p.post = c->post;
  hs_kernel *k = NULL;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_kernel_conv_create(&p, &k, &err);
  if (rc) fprintf(stderr, "%s: %s\n", c->name, err.message);
  assert_int_equal(rc, 0);
  /* The kernel copied the weights: scribbling on ours must not change its results. */
  float *wsave = malloc(sizeof(float) * wn);
  memcpy(wsave, w, sizeof(float) * wn);
  for (int64_t i = 0; i < wn; i++) w[i] = 1e6f;
  for (int pass = 0; pass < 2; pass++) {
    int64_t n = c->n + pass;
    int64_t xn = n * c->ic * isz, yn = n * c->oc * osz;
    float *x = rand_buf(xn), *res = rand_buf(yn), *want = malloc(sizeof(float) * yn);
    hs_conv_params rp = p;
    rp.weights = wsave;
    ref_conv(&rp, n, x, res, want);
    float *xl = x, *resl = res, *got = malloc(sizeof(float) * yn);
    if (in_layout == HS_LAYOUT_NHWC) {
      xl = malloc(sizeof(float) * xn);
      to_nhwc(x, xl, n, c->ic, isz);
    }
    if (res_layout == HS_LAYOUT_NHWC) {
      resl = malloc(sizeof(float) * yn);
      to_nhwc(res, resl, n, c->oc, osz);
    }
    const void *src[1] = {xl};
    rc = run_k(k, n, src, 1, resl, got, &err);
    if (rc) fprintf(stderr, "%s: %s\n", c->name, err.message);
    assert_int_equal(rc, 0);
    if (res_layout == layout && c->post.count) {
      /* the residual in the output's own buffer (the engine may pass it so): the same answer */
      float *inplace = malloc(sizeof(float) * yn);
      memcpy(inplace, resl, sizeof(float) * yn);
      assert_int_equal(run_k(k, n, src, 1, inplace, inplace, &err), 0);
      expect_close(c->name, inplace, got, yn);
      free(inplace);
    }
    if (layout == HS_LAYOUT_NHWC) {
      float *t = malloc(sizeof(float) * yn);
      to_nchw(got, t, n, c->oc, osz);
      free(got);
      got = t;
    }
    if (xl != x) free(xl);
    if (resl != res) free(resl);
    char what[160];
    snprintf(what, sizeof what, "%s (%s -> %s, batch %lld, %s)", c->name,
             in_layout == HS_LAYOUT_NHWC ? "nhwc" : "nchw", layout == HS_LAYOUT_NHWC ? "nhwc" : "nchw",
             (long long)n, hs_kernel_impl_name(k));
    if (getenv("HS_TEST_VERBOSE")) fprintf(stderr, "%s\n", what);
    expect_close(what, got, want, yn);
    free(x);
    free(res);
    free(want);
    free(got);
  }
  hs_kernel_destroy(k);
  free(w);
  free(wsave);
  free(b);
}

static hs_post_ops post_of(int n, ...) {
  hs_post_ops p = {0};
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    int kind = va_arg(ap, int);
    if (kind == HS_POST_SUM) hs_post_ops_add_sum(&p, (float)va_arg(ap, double));
    else {
      hs_act_kind a = va_arg(ap, int);
      float al = (float)va_arg(ap, double), be = (float)va_arg(ap, double);
      hs_post_ops_add_act(&p, a, al, be);
    }
  }
  va_end(ap);
  return p;
}

static void test_conv(void **state) {
  conv_case cases[] = {
      {"3x3 pad1", 2, 0, 1, 3, 8, 1, {7, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1, {0}},
      {"stride2 asym pads", 2, 0, 1, 16, 32, 1, {13, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 0}, {2, 1}, {0}, 1, {0}},
      {"groups2", 2, 0, 2, 8, 12, 2, {6, 5}, {3, 2}, {1, 1}, {1, 1}, {1, 0}, {1, 1}, {0}, 0, {0}},
      {"depthwise relu6", 2, 0, 1, 24, 24, 24, {15, 15}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_CLIP, 0.0, 6.0)},
      {"dilated 5x5", 2, 0, 1, 5, 7, 1, {17, 12}, {5, 3}, {1, 2}, {2, 3}, {4, 2}, {4, 2}, {0}, 1, {0}},
      {"1x1 residual relu", 2, 0, 1, 64, 40, 1, {7, 7}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {0}, 1,
       post_of(2, HS_POST_SUM, 1.0, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      /* residuals from 1 MiB are copied into the output by all the threads (cpu_dnnl_conv.c), here
       * after a two-step activation */
      {"1x1 hardsigmoid then residual 4 MiB", 2, 0, 1, 16, 64, 1, {128, 128}, {1, 1}, {1, 1}, {1, 1}, {0, 0},
       {0, 0}, {0}, 1, post_of(2, HS_POST_ACT, HS_ACT_HARDSIGMOID, 0.2, 0.5, HS_POST_SUM, 1.0)},
      {"3x3 hardsigmoid then residual", 2, 0, 1, 16, 24, 1, {9, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(2, HS_POST_ACT, HS_ACT_HARDSIGMOID, 0.2, 0.5, HS_POST_SUM, 1.0)},
      {"depthwise residual hardswish 2.6 MB (uneven parts)", 2, 0, 1, 40, 40, 40, {131, 129}, {3, 3}, {1, 1},
       {1, 1}, {1, 1}, {1, 1}, {0}, 1, post_of(2, HS_POST_SUM, 1.0, HS_POST_ACT, HS_ACT_HARDSWISH, 0.0, 0.0)},
      {"leaky hardswish", 2, 0, 1, 9, 17, 1, {5, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(2, HS_POST_ACT, HS_ACT_RELU, 0.1, 0.0, HS_POST_ACT, HS_ACT_HARDSWISH, 0.0, 0.0)},
      {"hardsigmoid sigmoid", 2, 0, 1, 4, 5, 1, {6, 6}, {3, 3}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {0}, 0,
       post_of(2, HS_POST_ACT, HS_ACT_HARDSIGMOID, 0.2, 0.5, HS_POST_ACT, HS_ACT_SIGMOID, 0.0, 0.0)},
      {"conv1d", 1, 0, 2, 6, 10, 2, {31}, {4}, {3}, {1}, {2}, {1}, {0}, 1, {0}},
      {"conv3d", 3, 0, 1, 3, 4, 1, {5, 6, 7}, {3, 3, 3}, {1, 2, 1}, {1, 1, 1}, {1, 1, 1}, {1, 0, 1}, {0}, 1, {0}},
      {"7x7 s2 stem", 2, 0, 1, 3, 16, 1, {33, 33}, {7, 7}, {2, 2}, {1, 1}, {3, 3}, {3, 3}, {0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      /* a few NCHW input channels go channels-last through a plain loop split over the threads by pixels
       * (cpu_dnnl_conv.c); 3 images of 4 x 61 x 67 make two parts, the first ending inside image 1 */
      {"4-channel images, 3 at once", 2, 0, 3, 4, 8, 1, {61, 67}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_CLIP, 0.0, 6.0)},
      {"deconv s2 outpad", 2, 1, 1, 6, 4, 1, {5, 7}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, 1, {0}},
      {"deconv groups", 2, 1, 2, 8, 6, 2, {4, 5}, {4, 4}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, 0, {0}},
      {"deconv1d dilated", 1, 1, 1, 3, 5, 1, {9}, {3}, {1}, {2}, {0}, {0}, {0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_TANH, 0.0, 0.0)},
      /* kernel == stride: run as a 1x1 convolution + depth-to-space reorder (cpu_dnnl_conv.c) */
      {"deconv k=s=2 sigmoid", 2, 1, 2, 24, 1, 1, {6, 7}, {2, 2}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_SIGMOID, 0.0, 0.0)},
      {"deconv k=s=3x2 relu", 2, 1, 1, 5, 7, 1, {4, 5}, {3, 2}, {3, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, 0,
       post_of(1, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      /* 3x3 stride 1 in whole 16-channel blocks: oneDNN's Winograd kernels where the CPU has AVX-512
       * (cpu_dnnl_conv.c); at 8x8 the batch-3 variant takes another Winograd weight format than the
       * batch-2 one (oneDNN 2.6.3 here), made from the plain copy the kernel keeps (Winograd's format is
       * not reordered back); below 8x8 the direct kernels run */
      {"3x3 winograd residual relu", 2, 0, 2, 32, 16, 1, {12, 10}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(2, HS_POST_SUM, 1.0, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      {"3x3 winograd 8x8, two formats", 2, 0, 2, 16, 32, 1, {8, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      {"3x3 7x7 (direct)", 2, 0, 1, 16, 32, 1, {7, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1,
       post_of(1, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      {"3x3 winograd 24 outputs (padded block)", 2, 0, 1, 32, 24, 1, {10, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1},
       {1, 1}, {0}, 1, post_of(2, HS_POST_SUM, 1.0, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    check_conv(&cases[i], HS_LAYOUT_NCHW, HS_LAYOUT_NCHW, HS_LAYOUT_NCHW);
    check_conv(&cases[i], HS_LAYOUT_NHWC, HS_LAYOUT_NHWC, HS_LAYOUT_NHWC);
    check_conv(&cases[i], HS_LAYOUT_NCHW, HS_LAYOUT_NHWC, HS_LAYOUT_NHWC);
    check_conv(&cases[i], HS_LAYOUT_NHWC, HS_LAYOUT_NCHW, HS_LAYOUT_NHWC); /* residual in another layout */
    check_conv(&cases[i], HS_LAYOUT_NCHW, HS_LAYOUT_NHWC, HS_LAYOUT_NCHW);
  }
}

static void test_conv_errors(void **state) {
  float w[64] = {0};
  hs_conv_params p = {.nsp = 2, .batch = 1, .in_c = 3, .out_c = 4, .groups = 2, .in = {5, 5}, .out = {5, 5},
                      .kernel = {1, 1}, .stride = {1, 1}, .dilation = {1, 1}, .weights = w};
  hs_kernel *k = (hs_kernel *)&p;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), HS_INVALID_ARGUMENT); /* 3 channels, 2 groups */
  assert_null(k);
  p.groups = 1;
  p.out[0] = 9; /* inconsistent with the window arithmetic */
  int rc = hs_kernel_conv_create(&p, &k, &err);
  assert_true(rc < 0);
  assert_null(k);
  assert_true(strlen(err.message) > 0);
  p.out[0] = 5;
  p.device = HS_KDEV_CUDA;
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), HS_UNSUPPORTED);
  p.device = HS_KDEV_CPU;
  p.weights = NULL;
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), HS_INVALID_ARGUMENT);
  p.weights = w;
  p.post = post_of(1, HS_POST_SUM, 1.0);
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), 0);
  float x[75] = {0}, y[100];
  const void *src[1] = {x};
  hs_kernel_args a = {.src = src, .nsrc = 1, .dst = y};
  size_t sz = hs_kernel_scratch_size(k, 0);
  void *scratch = sz ? malloc(sz) : NULL;
  a.scratch = scratch;
  assert_int_equal(hs_kernel_run(k, &a, &err), HS_INVALID_ARGUMENT); /* sum without residual */
  a.residual = y;
  a.batch = -3;
  assert_int_equal(hs_kernel_run(k, &a, &err), HS_INVALID_ARGUMENT);
  free(scratch);
  hs_kernel_destroy(k);
}

/* ---------------- matmul ---------------- */

typedef struct {
  const char *name;
  int ndim;
  int64_t a[6], b[6];
  int ta, tb, bconst;
  float alpha;
  int bias_ndim;
  int64_t bias[6];
  hs_post_ops post;
} mm_case;

static void ref_mm(const mm_case *c, const float *A, const float *B, const float *bias, const float *res,
                   float *D, const int64_t *dd, float alpha) {
  int nd = c->ndim;
  int64_t M = c->a[nd - 2], K = c->a[nd - 1], N = c->b[nd - 1];
  int64_t batches = prod(nd - 2, dd);
  int64_t bdims[8];
  for (int i = 0; i < nd; i++) bdims[i] = i < nd - c->bias_ndim ? 1 : c->bias[i - (nd - c->bias_ndim)];
  for (int64_t bt = 0; bt < batches; bt++) {
    int64_t ao = 0, bo = 0, rem = bt, as = 1, bs = 1;
    for (int i = nd - 3; i >= 0; i--) {
      int64_t ci = rem % dd[i];
      rem /= dd[i];
      if (c->a[i] != 1) ao += ci * as;
      if (c->b[i] != 1) bo += ci * bs;
      as *= c->a[i];
      bs *= c->b[i];
    }
    const float *a = A + ao * M * K, *b = B + bo * K * N;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        double acc = 0;
        for (int64_t kk = 0; kk < K; kk++) {
          float av = c->ta ? a[kk * M + m] : a[m * K + kk];
          float bv = c->tb ? b[n * K + kk] : b[kk * N + n];
          acc += (double)av * bv;
        }
        int64_t di = (bt * M + m) * N + n;
        float v = alpha * (float)acc;
        if (bias) v += bias[bcast_off(nd, dd, bdims, di)];
        D[di] = v;
      }
  }
  ref_post(&c->post, D, res, prod(nd, dd));
}

static void check_mm(const mm_case *c) {
  hs_matmul_params p = {0};
  int nd = c->ndim;
  p.ndim = nd;
  memcpy(p.a_dims, c->a, sizeof(int64_t) * nd);
  memcpy(p.b_dims, c->b, sizeof(int64_t) * nd);
  p.trans_a = c->ta;
  p.trans_b = c->tb;
  p.alpha = c->alpha;
  p.post = c->post;
  int64_t dd[8];
  for (int i = 0; i < nd - 2; i++) dd[i] = c->a[i] > c->b[i] ? c->a[i] : c->b[i];
  dd[nd - 2] = c->a[nd - 2];
  dd[nd - 1] = c->b[nd - 1];
  int64_t an = prod(nd, c->a), bn = prod(nd, c->b), dn = prod(nd, dd);
  float *A = rand_buf(an), *B = rand_buf(bn), *res = rand_buf(dn);
  float *bias = c->bias_ndim ? rand_buf(prod(c->bias_ndim, c->bias)) : NULL;
  if (c->bconst) p.b_const = B;
  p.bias = bias;
  p.bias_ndim = c->bias_ndim;
  memcpy(p.bias_dims, c->bias, sizeof c->bias);
  hs_kernel *k;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_kernel_matmul_create(&p, &k, &err);
  if (rc) fprintf(stderr, "%s: %s\n", c->name, err.message);
  assert_int_equal(rc, 0);
  float *want = malloc(sizeof(float) * dn), *got = malloc(sizeof(float) * dn);
  ref_mm(c, A, B, bias, res, want, dd, c->alpha == 0.f ? 1.f : c->alpha);
  const void *src[2] = {A, B};
  rc = run_k(k, 0, src, 2, res, got, &err);
  if (rc) fprintf(stderr, "%s: %s\n", c->name, err.message);
  assert_int_equal(rc, 0);
  char what[128];
  snprintf(what, sizeof what, "matmul %s (%s)", c->name, hs_kernel_impl_name(k));
  expect_close(what, got, want, dn);
  hs_kernel_destroy(k);
  free(A);
  free(B);
  free(res);
  free(bias);
  free(want);
  free(got);
}

static void test_matmul(void **state) {
  mm_case cases[] = {
      {"gemm transB bias", 2, {3, 37}, {37, 11}, 0, 1, 1, 1.f, 1, {11}, {0}},
      {"gemm alpha transA bias MN", 2, {5, 9}, {9, 7}, 1, 0, 1, 0.5f, 2, {5, 7}, post_of(1, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0)},
      {"fc 2048x1000", 2, {1, 2048}, {2048, 1000}, 0, 1, 1, 1.f, 2, {1, 1000}, {0}},
      {"batched const B gelu", 3, {2, 13, 24}, {1, 24, 40}, 0, 0, 1, 1.f, 1, {40},
       post_of(1, HS_POST_ACT, HS_ACT_GELU_ERF, 0.0, 0.0)},
      {"attention QK^T runtime", 4, {2, 3, 7, 8}, {2, 3, 8, 7}, 0, 0, 0, 0.125f, 0, {0}, {0}},
      {"broadcast runtime", 4, {2, 1, 5, 6}, {1, 3, 6, 4}, 0, 1, 0, 1.f, 0, {0},
       post_of(1, HS_POST_SUM, 1.0)},
      {"vector-like", 3, {4, 1, 17}, {4, 17, 1}, 0, 0, 0, 1.f, 0, {0}, {0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_mm(&cases[i]);
}

static void test_sgemm(void **state) {
  int64_t shapes[][3] = {{1, 1000, 2048}, {7, 5, 3}, {33, 17, 65}};
  for (size_t si = 0; si < 3; si++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *A = rand_buf(M * K), *B = rand_buf(K * N), *C = rand_buf(M * N), *want = malloc(sizeof(float) * M * N);
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
              acc += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
            want[i * N + j] = (float)(0.5 * acc + 2.0 * C[i * N + j]);
          }
        assert_int_equal(hs_kernel_sgemm(ta, tb, M, N, K, 0.5f, A, ta ? M : K, B, tb ? K : N, 2.0f, C, N), 0);
        expect_close("sgemm", C, want, M * N);
        free(A); free(B); free(C); free(want);
      }
}

/* ---------------- pooling ---------------- */

static void check_pool(hs_pool_kind kind, int nsp, int64_t n, int64_t c, const int64_t *in, const int64_t *kk,
                       const int64_t *s, const int64_t *d, const int64_t *pb, const int64_t *pe, int ceil_mode,
                       hs_layout layout) {
  hs_pool_params p = {.src_layout = layout, .dst_layout = layout, .kind = kind, .nsp = nsp, .batch = n, .channels = c};
  for (int i = 0; i < nsp; i++) {
    p.in[i] = in[i];
    p.kernel[i] = kk[i];
    p.stride[i] = s[i];
    p.dilation[i] = d[i];
    p.pad_begin[i] = pb[i];
    int64_t span = (kk[i] - 1) * d[i] + 1, room = in[i] + pb[i] + pe[i] - span;
    p.out[i] = (ceil_mode ? (room + s[i] - 1) / s[i] : room / s[i]) + 1;
    /* ceil mode: extend pad_end so the last window exists (it is still excluded from averages) */
    p.pad_end[i] = (p.out[i] - 1) * s[i] + span - in[i] - pb[i];
    if (p.pad_end[i] < pe[i]) p.pad_end[i] = pe[i];
  }
  int64_t isz = prod(nsp, p.in), osz = prod(nsp, p.out);
  float *x = rand_buf(n * c * isz), *want = malloc(sizeof(float) * n * c * osz), *got = malloc(sizeof(float) * n * c * osz);
  ref_pool(&p, n, x, want);
  hs_kernel *k;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_kernel_pool_create(&p, &k, &err);
  if (rc) fprintf(stderr, "pool: %s\n", err.message);
  assert_int_equal(rc, 0);
  float *xl = x;
  if (layout == HS_LAYOUT_NHWC) {
    xl = malloc(sizeof(float) * n * c * isz);
    to_nhwc(x, xl, n, c, isz);
  }
  const void *src[1] = {xl};
  rc = run_k(k, 0, src, 1, NULL, got, &err);
  assert_int_equal(rc, 0);
  if (layout == HS_LAYOUT_NHWC) {
    float *t = malloc(sizeof(float) * n * c * osz);
    to_nchw(got, t, n, c, osz);
    free(got);
    got = t;
    free(xl);
  }
  char what[96];
  snprintf(what, sizeof what, "pool kind %d nsp %d ceil %d layout %d", kind, nsp, ceil_mode, layout);
  expect_close(what, got, want, n * c * osz);
  hs_kernel_destroy(k);
  free(x);
  free(want);
  free(got);
}

/* Attention over strided views: every operand in an awkward layout (a column stride of 2 that sgemm cannot
 * read, a transposed K, V read through sgemm's trans flag, a broadcast head dim, a mask broadcast over heads
 * and rows, the output transposed so it is staged and scattered), against a double-precision reference. */
static void test_attention(void **state) {
  enum { B = 2, H = 3, SQ = 5, SK = 7, DK = 4, DV = 6 };
  /* Q: [B, H, SQ, DK] inside a buffer twice as wide (column stride 2) */
  float *q = rand_buf(B * H * SQ * DK * 2), *k = rand_buf(B * SK * DK), *v = rand_buf(B * H * DV * SK);
  float *mask = rand_buf(B * SK), *o = calloc(B * H * SQ * DV, sizeof(float)), *want = malloc(sizeof(float) * B * H * SQ * DV);
  hs_attention_params p = {.batch = B, .heads = H, .sq = SQ, .sk = SK, .dk = DK, .dv = DV, .q = q, .k = k, .v = v,
                           .mask = mask, .o = o, .scale = 0.37f, .threads = 2};
  int64_t qs[4] = {H * SQ * DK * 2, SQ * DK * 2, DK * 2, 2};
  int64_t ks[4] = {SK * DK, 0, 1, SK};      /* K stored [B, DK, SK], one head shared by all */
  int64_t vs[4] = {H * DV * SK, DV * SK, 1, SK}; /* V stored [B, H, DV, SK] */
  int64_t ms[4] = {SK, 0, 0, 1};             /* mask [B, 1, 1, SK] */
  int64_t os[4] = {H * SQ * DV, SQ * DV, 1, SQ}; /* output stored [B, H, DV, SQ] */
  memcpy(p.q_str, qs, sizeof qs);
  memcpy(p.k_str, ks, sizeof ks);
  memcpy(p.v_str, vs, sizeof vs);
  memcpy(p.mask_str, ms, sizeof ms);
  memcpy(p.o_str, os, sizeof os);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < SQ; i++) {
        double sc[SK], mx = -1e30, sum = 0;
        for (int j = 0; j < SK; j++) {
          double acc = 0;
          for (int d = 0; d < DK; d++) acc += (double)q[b * qs[0] + h * qs[1] + i * qs[2] + d * qs[3]] * k[b * ks[0] + j * ks[2] + d * ks[3]];
          sc[j] = 0.37 * acc + mask[b * SK + j];
          mx = sc[j] > mx ? sc[j] : mx;
        }
        for (int j = 0; j < SK; j++) sum += (sc[j] = exp(sc[j] - mx));
        for (int e = 0; e < DV; e++) {
          double acc = 0;
          for (int j = 0; j < SK; j++) acc += sc[j] / sum * v[b * vs[0] + h * vs[1] + j * vs[2] + e * vs[3]];
          want[b * os[0] + h * os[1] + i * os[2] + e * os[3]] = (float)acc;
        }
      }
  size_t bytes = hs_kernel_attention_scratch(2, SQ, SK, DK, DV);
  assert_true(bytes > 0);
  p.scratch = malloc(bytes);
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_kernel_attention(&p, &err), 0);
  expect_close("attention", o, want, B * H * SQ * DV);
  p.threads = 1; /* the same on one thread */
  memset(o, 0, sizeof(float) * B * H * SQ * DV);
  assert_int_equal(hs_kernel_attention(&p, &err), 0);
  expect_close("attention 1 thread", o, want, B * H * SQ * DV);
  p.sk = 0; /* no keys: refused, nothing written */
  assert_int_equal(hs_kernel_attention(&p, &err), HS_INVALID_ARGUMENT);
  free(p.scratch); free(q); free(k); free(v); free(mask); free(o); free(want);
}

static void test_pool(void **state) {
  for (int l = 0; l < 2; l++) {
    hs_layout lay = l ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW;
    /* ResNet stem max pool */
    check_pool(HS_POOL_MAX, 2, 1, 16, (int64_t[]){17, 17}, (int64_t[]){3, 3}, (int64_t[]){2, 2},
               (int64_t[]){1, 1}, (int64_t[]){1, 1}, (int64_t[]){1, 1}, 0, lay);
    /* global average */
    check_pool(HS_POOL_AVG_EXCLUDE_PAD, 2, 2, 40, (int64_t[]){7, 7}, (int64_t[]){7, 7}, (int64_t[]){1, 1},
               (int64_t[]){1, 1}, (int64_t[]){0, 0}, (int64_t[]){0, 0}, 0, lay);
    check_pool(HS_POOL_AVG_EXCLUDE_PAD, 2, 1, 5, (int64_t[]){9, 8}, (int64_t[]){3, 2}, (int64_t[]){2, 1},
               (int64_t[]){1, 1}, (int64_t[]){1, 1}, (int64_t[]){1, 0}, 0, lay);
    check_pool(HS_POOL_AVG_INCLUDE_PAD, 2, 1, 5, (int64_t[]){9, 8}, (int64_t[]){3, 3}, (int64_t[]){2, 2},
               (int64_t[]){1, 1}, (int64_t[]){1, 1}, (int64_t[]){1, 1}, 0, lay);
    check_pool(HS_POOL_MAX, 2, 1, 3, (int64_t[]){10, 11}, (int64_t[]){2, 3}, (int64_t[]){1, 2},
               (int64_t[]){2, 2}, (int64_t[]){0, 1}, (int64_t[]){0, 1}, 0, lay);
    check_pool(HS_POOL_MAX, 2, 1, 3, (int64_t[]){10, 11}, (int64_t[]){3, 3}, (int64_t[]){2, 2},
               (int64_t[]){1, 1}, (int64_t[]){0, 0}, (int64_t[]){0, 0}, 1, lay);
    check_pool(HS_POOL_AVG_EXCLUDE_PAD, 1, 2, 4, (int64_t[]){13}, (int64_t[]){4}, (int64_t[]){3},
               (int64_t[]){1}, (int64_t[]){1}, (int64_t[]){0}, 1, lay);
  }
}

/* ---------------- eltwise, binary, softmax, norms, reduce, concat, resample, reorder ---------------- */

static void test_eltwise(void **state) {
  hs_act_kind acts[] = {HS_ACT_RELU, HS_ACT_CLIP, HS_ACT_SIGMOID, HS_ACT_TANH, HS_ACT_HARDSIGMOID, HS_ACT_HARDSWISH,
                        HS_ACT_ELU, HS_ACT_GELU_ERF, HS_ACT_EXP, HS_ACT_ABS, HS_ACT_SQUARE, HS_ACT_LINEAR,
                        HS_ACT_SOFTPLUS, HS_ACT_SWISH};
  float al[] = {0.01f, -0.5f, 0, 0, 0.2f, 0, 1.1f, 0, 0, 0, 0, -1.f, 0, 1.f};
  float be[] = {0, 0.7f, 0, 0, 0.5f, 0, 0, 0, 0, 0, 0, 0.25f, 0, 0};
  int64_t dims[3] = {3, 7, 11}, n = prod(3, dims);
  for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
    hs_eltwise_params p = {.ndim = 3, .dims = {3, 7, 11}};
    hs_post_ops_add_act(&p.ops, acts[i], al[i], be[i]);
    if (i % 3 == 0) hs_post_ops_add_act(&p.ops, HS_ACT_TANH, 0, 0); /* chains too */
    float *x = rand_buf(n), *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    for (int64_t j = 0; j < n; j++) x[j] *= 4.f;
    memcpy(want, x, sizeof(float) * n);
    ref_post(&p.ops, want, NULL, n);
    hs_kernel *k;
    hs_error err;
    assert_int_equal(hs_kernel_eltwise_create(&p, &k, &err), 0);
    const void *src[1] = {x};
    assert_int_equal(run_k(k, 0, src, 1, NULL, got, &err), 0);
    expect_close(hs_act_name(acts[i]), got, want, n);
    /* in place */
    assert_int_equal(run_k(k, 0, src, 1, NULL, x, &err), 0);
    expect_close(hs_act_name(acts[i]), x, want, n);
    hs_kernel_destroy(k);
    free(x);
    free(want);
    free(got);
  }
}

static void check_binary(hs_binary_kind kind, int an, const int64_t *ad, int bn, const int64_t *bd, int expect_rc) {
  hs_binary_params p = {.kind = kind, .a_ndim = an, .b_ndim = bn};
  p.ndim = an > bn ? an : bn;
  memcpy(p.a_dims, ad, sizeof(int64_t) * an);
  memcpy(p.b_dims, bd, sizeof(int64_t) * bn);
  int64_t pa[8], pbd[8], dd[8];
  for (int i = 0; i < p.ndim; i++) {
    pa[i] = i < p.ndim - an ? 1 : ad[i - (p.ndim - an)];
    pbd[i] = i < p.ndim - bn ? 1 : bd[i - (p.ndim - bn)];
    dd[i] = pa[i] > pbd[i] ? pa[i] : pbd[i];
  }
  hs_kernel *k;
  hs_error err;
  int rc = hs_kernel_binary_create(&p, &k, &err);
  assert_int_equal(rc, expect_rc);
  if (rc) return;
  int64_t n = prod(p.ndim, dd);
  float *a = rand_buf(prod(an, ad)), *b = rand_buf(prod(bn, bd));
  float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
  for (int64_t i = 0; i < prod(bn, bd); i++) b[i] += 2.f; /* keep divisors away from 0 */
  for (int64_t i = 0; i < n; i++) {
    float x = a[bcast_off(p.ndim, dd, pa, i)], y = b[bcast_off(p.ndim, dd, pbd, i)];
    want[i] = kind == HS_BIN_ADD ? x + y : kind == HS_BIN_SUB ? x - y : kind == HS_BIN_MUL ? x * y
            : kind == HS_BIN_DIV ? x / y : kind == HS_BIN_MAX ? (x > y ? x : y) : (x < y ? x : y);
  }
  const void *src[2] = {a, b};
  assert_int_equal(run_k(k, 0, src, 2, NULL, got, &err), 0);
  expect_close("binary", got, want, n);
  hs_kernel_destroy(k);
  free(a);
  free(b);
  free(want);
  free(got);
}

static void test_binary(void **state) {
  for (int kind = HS_BIN_ADD; kind <= HS_BIN_MIN; kind++) {
    check_binary(kind, 4, (int64_t[]){2, 3, 4, 5}, 3, (int64_t[]){3, 1, 1}, 0);
    check_binary(kind, 2, (int64_t[]){6, 7}, 2, (int64_t[]){6, 7}, 0);
    check_binary(kind, 2, (int64_t[]){4, 5}, 4, (int64_t[]){2, 3, 4, 5}, kind == HS_BIN_DIV ? HS_UNSUPPORTED : 0);
  }
  check_binary(HS_BIN_ADD, 2, (int64_t[]){3, 1}, 2, (int64_t[]){1, 4}, HS_UNSUPPORTED);
  check_binary(HS_BIN_ADD, 2, (int64_t[]){3, 2}, 2, (int64_t[]){3, 4}, HS_INVALID_ARGUMENT);
}

static void test_softmax(void **state) {
  int64_t dims[3] = {2, 5, 7}, n = 70;
  for (int log = 0; log < 2; log++)
    for (int axis = 0; axis < 3; axis++) {
      hs_softmax_params p = {.log = log, .ndim = 3, .dims = {2, 5, 7}, .axis = axis};
      float *x = rand_buf(n), *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
      int64_t inner = 1;
      for (int i = axis + 1; i < 3; i++) inner *= dims[i];
      int64_t outer = n / (inner * dims[axis]);
      for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
          double mx = -1e30, s = 0;
          for (int64_t j = 0; j < dims[axis]; j++) mx = fmax(mx, x[(o * dims[axis] + j) * inner + in]);
          for (int64_t j = 0; j < dims[axis]; j++) s += exp(x[(o * dims[axis] + j) * inner + in] - mx);
          for (int64_t j = 0; j < dims[axis]; j++) {
            int64_t idx = (o * dims[axis] + j) * inner + in;
            want[idx] = log ? (float)(x[idx] - mx - log1p(s - 1)) : (float)(exp(x[idx] - mx) / s);
          }
        }
      hs_kernel *k;
      hs_error err;
      assert_int_equal(hs_kernel_softmax_create(&p, &k, &err), 0);
      const void *src[1] = {x};
      assert_int_equal(run_k(k, 0, src, 1, NULL, got, &err), 0);
      expect_close("softmax", got, want, n);
      hs_kernel_destroy(k);
      free(x);
      free(want);
      free(got);
    }
}

static void test_layernorm(void **state) {
  for (int axis = 1; axis < 3; axis++)
    for (int affine = 0; affine < 2; affine++) {
      hs_layernorm_params p = {.ndim = 3, .dims = {2, 3, 24}, .axis = axis, .epsilon = 1e-5f};
      int64_t n = 144, inner = axis == 1 ? 72 : 24, outer = n / inner;
      float *x = rand_buf(n), *sc = rand_buf(inner), *bi = rand_buf(inner);
      float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
      if (affine) {
        p.scale = sc;
        p.bias = bi;
      }
      for (int64_t o = 0; o < outer; o++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < inner; i++) m += x[o * inner + i];
        m /= inner;
        for (int64_t i = 0; i < inner; i++) v += (x[o * inner + i] - m) * (x[o * inner + i] - m);
        v /= inner;
        for (int64_t i = 0; i < inner; i++) {
          double y = (x[o * inner + i] - m) / sqrt(v + 1e-5);
          want[o * inner + i] = affine ? (float)(y * sc[i] + bi[i]) : (float)y;
        }
      }
      hs_kernel *k;
      hs_error err;
      int rc = hs_kernel_layernorm_create(&p, &k, &err);
      if (rc) fprintf(stderr, "layernorm: %s\n", err.message);
      assert_int_equal(rc, 0);
      const void *src[1] = {x};
      rc = run_k(k, 0, src, 1, NULL, got, &err);
      if (rc) fprintf(stderr, "layernorm: %s\n", err.message);
      assert_int_equal(rc, 0);
      expect_close("layernorm", got, want, n);
      /* another batch size */
      float *x2 = rand_buf(n / 2), *got2 = malloc(sizeof(float) * n / 2);
      memcpy(x2, x, sizeof(float) * n / 2);
      src[0] = x2;
      assert_int_equal(run_k(k, 1, src, 1, NULL, got2, &err), 0);
      expect_close("layernorm batch 1", got2, want, n / 2);
      hs_kernel_destroy(k);
      free(x);
      free(x2);
      free(got2);
      free(sc);
      free(bi);
      free(want);
      free(got);
    }
}

static void test_batchnorm(void **state) {
  for (int l = 0; l < 2; l++)
    for (int relu = 0; relu < 2; relu++) {
      int64_t N = 2, C = 6, S = 15, n = N * C * S;
      hs_batchnorm_params p = {.layout = l ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW, .ndim = 4, .dims = {N, C, 3, 5},
                               .epsilon = 1e-3f};
      float *x = rand_buf(n), *sc = rand_buf(C), *bi = rand_buf(C), *mean = rand_buf(C), *var = rand_buf(C);
      for (int i = 0; i < C; i++) var[i] = fabsf(var[i]) + 0.1f;
      p.scale = sc;
      p.bias = bi;
      p.mean = mean;
      p.var = var;
      if (relu) hs_post_ops_add_act(&p.post, HS_ACT_RELU, 0, 0);
      float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n), *xl = malloc(sizeof(float) * n);
      for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++)
          for (int64_t i = 0; i < S; i++) {
            int64_t idx = (b * C + c) * S + i;
            float y = (x[idx] - mean[c]) / sqrtf(var[c] + 1e-3f) * sc[c] + bi[c];
            want[idx] = relu && y < 0 ? 0 : y;
          }
      if (l) to_nhwc(x, xl, N, C, S);
      else memcpy(xl, x, sizeof(float) * n);
      hs_kernel *k;
      hs_error err;
      assert_int_equal(hs_kernel_batchnorm_create(&p, &k, &err), 0);
      const void *src[1] = {xl};
      assert_int_equal(run_k(k, 0, src, 1, NULL, got, &err), 0);
      if (l) {
        to_nchw(got, xl, N, C, S);
        memcpy(got, xl, sizeof(float) * n);
      }
      expect_close("batchnorm", got, want, n);
      hs_kernel_destroy(k);
      free(x); free(sc); free(bi); free(mean); free(var); free(want); free(got); free(xl);
    }
}

static void test_reduce(void **state) {
  int64_t dims[4] = {2, 3, 4, 5}, n = 120;
  uint32_t masks[] = {0x2, 0xC, 0x1, 0xF, 0x8};
  for (int kind = HS_REDUCE_SUM; kind <= HS_REDUCE_PROD; kind++)
    for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
      hs_reduce_params p = {.kind = kind, .ndim = 4, .dims = {2, 3, 4, 5}, .axes_mask = masks[m]};
      int64_t od[4];
      for (int i = 0; i < 4; i++) od[i] = (masks[m] >> i) & 1 ? 1 : dims[i];
      int64_t on = prod(4, od);
      float *x = rand_buf(n), *want = malloc(sizeof(float) * on), *got = malloc(sizeof(float) * on);
      double *acc = calloc((size_t)on, sizeof(double));
      int64_t *cnt = calloc((size_t)on, sizeof(int64_t));
      for (int64_t i = 0; i < n; i++) x[i] = x[i] * 0.5f + (kind == HS_REDUCE_PROD ? 1.f : 0.f);
      for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, o = 0, st = 1, c[4];
        for (int a = 3; a >= 0; a--) { c[a] = rem % dims[a]; rem /= dims[a]; }
        for (int a = 3; a >= 0; a--) { if (od[a] != 1) o += c[a] * st; st *= od[a]; }
        if (cnt[o] == 0) acc[o] = x[i];
        else if (kind == HS_REDUCE_MAX) acc[o] = fmax(acc[o], x[i]);
        else if (kind == HS_REDUCE_MIN) acc[o] = fmin(acc[o], x[i]);
        else if (kind == HS_REDUCE_PROD) acc[o] *= x[i];
        else acc[o] += x[i];
        cnt[o]++;
      }
      for (int64_t o = 0; o < on; o++) want[o] = (float)(kind == HS_REDUCE_MEAN ? acc[o] / cnt[o] : acc[o]);
      hs_kernel *k;
      hs_error err;
      int rc = hs_kernel_reduce_create(&p, &k, &err);
      if (rc) fprintf(stderr, "reduce: %s\n", err.message);
      assert_int_equal(rc, 0);
      const void *src[1] = {x};
      assert_int_equal(run_k(k, 0, src, 1, NULL, got, &err), 0);
      expect_close("reduce", got, want, on);
      hs_kernel_destroy(k);
      free(x); free(want); free(got); free(acc); free(cnt);
    }
}

static void test_concat(void **state) {
  for (int axis = 0; axis < 3; axis++) {
    int64_t sizes[3] = {2, 5, 1}, base[3] = {3, 4, 6};
    hs_concat_params p = {.ndim = 3, .dims = {3, 4, 6}, .axis = axis, .ninputs = 3, .axis_sizes = sizes};
    float *in[3];
    int64_t total = 0, outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= base[i];
    for (int i = axis + 1; i < 3; i++) inner *= base[i];
    for (int i = 0; i < 3; i++) { in[i] = rand_buf(outer * sizes[i] * inner); total += sizes[i]; }
    int64_t n = outer * total * inner;
    float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    for (int64_t o = 0; o < outer; o++) {
      int64_t off = 0;
      for (int i = 0; i < 3; i++) {
        memcpy(want + (o * total + off) * inner, in[i] + o * sizes[i] * inner, sizeof(float) * sizes[i] * inner);
        off += sizes[i];
      }
    }
    hs_kernel *k;
    hs_error err;
    int rc = hs_kernel_concat_create(&p, &k, &err);
    if (rc) fprintf(stderr, "concat: %s\n", err.message);
    assert_int_equal(rc, 0);
    const void *src[3] = {in[0], in[1], in[2]};
    assert_int_equal(run_k(k, 0, src, 3, NULL, got, &err), 0);
    expect_close("concat", got, want, n);
    hs_kernel_destroy(k);
    for (int i = 0; i < 3; i++) free(in[i]);
    free(want);
    free(got);
  }
}

/* ONNX Resize on H, W: linear with half_pixel coordinates; nearest with asymmetric coordinates and floor. */
static void test_resample(void **state) {
  for (int kind = 0; kind < 2; kind++)
    for (int l = 0; l < 2; l++) {
      int64_t N = 1, C = 3, H = 5, W = 4, OH = 10, OW = 12;
      hs_resample_params p = {.layout = l ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW, .kind = kind, .nsp = 2, .batch = N,
                              .channels = C, .in = {H, W}, .out = {OH, OW}};
      float *x = rand_buf(N * C * H * W), *want = malloc(sizeof(float) * N * C * OH * OW);
      float *got = malloc(sizeof(float) * N * C * OH * OW), *xl = malloc(sizeof(float) * N * C * H * W);
      for (int64_t c = 0; c < N * C; c++)
        for (int64_t oh = 0; oh < OH; oh++)
          for (int64_t ow = 0; ow < OW; ow++) {
            float v;
            if (kind == HS_RESAMPLE_NEAREST) {
              int64_t ih = (int64_t)floor(oh * (double)H / OH), iw = (int64_t)floor(ow * (double)W / OW);
              v = x[(c * H + ih) * W + iw];
            } else {
              double fh = (oh + 0.5) * H / OH - 0.5, fw = (ow + 0.5) * W / OW - 0.5;
              if (fh < 0) fh = 0;
              if (fw < 0) fw = 0;
              int64_t h0 = (int64_t)fh, w0 = (int64_t)fw;
              int64_t h1 = h0 + 1 < H ? h0 + 1 : H - 1, w1 = w0 + 1 < W ? w0 + 1 : W - 1;
              double ah = fh - h0, aw = fw - w0;
              const float *xc = x + c * H * W;
              v = (float)((1 - ah) * ((1 - aw) * xc[h0 * W + w0] + aw * xc[h0 * W + w1]) +
                          ah * ((1 - aw) * xc[h1 * W + w0] + aw * xc[h1 * W + w1]));
            }
            want[(c * OH + oh) * OW + ow] = v;
          }
      if (l) to_nhwc(x, xl, N, C, H * W);
      else memcpy(xl, x, sizeof(float) * N * C * H * W);
      hs_kernel *k;
      hs_error err;
      assert_int_equal(hs_kernel_resample_create(&p, &k, &err), 0);
      const void *src[1] = {xl};
      assert_int_equal(run_k(k, 0, src, 1, NULL, got, &err), 0);
      if (l) {
        float *t = malloc(sizeof(float) * N * C * OH * OW);
        to_nchw(got, t, N, C, OH * OW);
        free(got);
        got = t;
      }
      expect_close(kind ? "resample linear" : "resample nearest", got, want, N * C * OH * OW);
      hs_kernel_destroy(k);
      free(x); free(want); free(got); free(xl);
    }
}

static void test_reorder(void **state) {
  int64_t N = 2, C = 5, S = 21, n = N * C * S;
  hs_reorder_params to = {.ndim = 4, .dims = {N, C, 3, 7}, .from = HS_LAYOUT_NCHW, .to = HS_LAYOUT_NHWC};
  hs_reorder_params back = to;
  back.from = HS_LAYOUT_NHWC;
  back.to = HS_LAYOUT_NCHW;
  hs_kernel *k1, *k2;
  hs_error err;
  assert_int_equal(hs_kernel_reorder_create(&to, &k1, &err), 0);
  assert_int_equal(hs_kernel_reorder_create(&back, &k2, &err), 0);
  float *x = rand_buf(n), *want = malloc(sizeof(float) * n), *mid = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n);
  to_nhwc(x, want, N, C, S);
  const void *src[1] = {x};
  assert_int_equal(run_k(k1, 0, src, 1, NULL, mid, &err), 0);
  expect_close("to nhwc", mid, want, n);
  src[0] = mid;
  assert_int_equal(run_k(k2, 0, src, 1, NULL, out, &err), 0);
  assert_memory_equal(out, x, sizeof(float) * n);
  hs_kernel_destroy(k1);
  hs_kernel_destroy(k2);
  free(x); free(want); free(mid); free(out);
}

/* ---------------- concurrency: one kernel, several threads, each with its own buffers ---------------- */

typedef struct {
  hs_kernel *k;
  const float *x;
  float *y;
  int64_t batch;
  int rc;
} thread_job;

static void *thread_main(void *arg) {
  thread_job *j = arg;
  hs_kernels_set_threads(1);
  hs_error err;
  const void *src[1] = {j->x};
  size_t sz = hs_kernel_scratch_size(j->k, j->batch);
  void *scratch = NULL;
  if (sz && posix_memalign(&scratch, 64, sz)) return NULL;
  hs_kernel_args a = {.batch = j->batch, .src = src, .nsrc = 1, .dst = j->y, .scratch = scratch};
  j->rc = 0;
  for (int i = 0; i < 20 && !j->rc; i++) j->rc = hs_kernel_run(j->k, &a, &err);
  free(scratch);
  return NULL;
}

static void test_threads(void **state) {
  hs_conv_params p = {.src_layout = HS_LAYOUT_NHWC, .dst_layout = HS_LAYOUT_NHWC, .nsp = 2, .batch = 1, .in_c = 16, .out_c = 16, .groups = 1,
                      .in = {9, 9}, .out = {9, 9}, .kernel = {3, 3}, .stride = {1, 1}, .dilation = {1, 1},
                      .pad_begin = {1, 1}, .pad_end = {1, 1}};
  float *w = rand_buf(16 * 16 * 9);
  p.weights = w;
  hs_kernel *k;
  hs_error err;
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), 0);
  enum { T = 4 };
  thread_job jobs[T];
  pthread_t th[T];
  int64_t per = 16 * 81;
  for (int t = 0; t < T; t++) {
    jobs[t].k = k;
    jobs[t].batch = 1 + t % 3; /* also builds variants concurrently */
    jobs[t].x = rand_buf(per * jobs[t].batch);
    jobs[t].y = malloc(sizeof(float) * per * jobs[t].batch);
    jobs[t].rc = -1;
    assert_int_equal(pthread_create(&th[t], NULL, thread_main, &jobs[t]), 0);
  }
  for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < T; t++) {
    assert_int_equal(jobs[t].rc, 0);
    int64_t n = jobs[t].batch;
    float *xn = malloc(sizeof(float) * per * n), *want = malloc(sizeof(float) * per * n);
    float *got = malloc(sizeof(float) * per * n);
    to_nchw(jobs[t].x, xn, n, 16, 81);
    ref_conv(&p, n, xn, NULL, want);
    to_nchw(jobs[t].y, got, n, 16, 81);
    expect_close("threaded conv", got, want, per * n);
    free(xn); free(want); free(got);
    free((void *)jobs[t].x);
    free(jobs[t].y);
  }
  hs_kernel_destroy(k);
  free(w);
}

/* ---------------- weight reorders on the creating thread alone ---------------- */

/* Threads of this process ("Threads:" of /proc/self/status). */
static int task_count(void) {
  char line[256];
  int n = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  fclose(f);
  return n;
}

typedef struct {
  int serial;
  hs_kernel *k;
  int threads_after, tasks_before, tasks_after, rc;
} serial_job;

static const float *g_serial_w; /* 256x256x3x3 weights, one set for both kernels */

static hs_conv_params serial_conv(void) {
  hs_conv_params p = {.src_layout = HS_LAYOUT_NHWC, .dst_layout = HS_LAYOUT_NHWC, .nsp = 2, .batch = 1,
                      .in_c = 256, .out_c = 256, .groups = 1, .in = {7, 7}, .out = {7, 7}, .kernel = {3, 3},
                      .stride = {1, 1}, .dilation = {1, 1}, .pad_begin = {1, 1}, .pad_end = {1, 1}};
  p.weights = g_serial_w;
  return p;
}

/* A fresh thread (no OpenMP team of its own yet) creates the kernel, its weights reordered. */
static void *serial_main(void *arg) {
  serial_job *j = arg;
  hs_kernels_set_threads(2);
  hs_kernels_serial_reorders(j->serial);
  hs_conv_params p = serial_conv();
  hs_error err;
  hs_error_clear(&err);
  j->tasks_before = task_count();
  j->rc = hs_kernel_conv_create(&p, &j->k, &err);
  j->tasks_after = task_count();
  j->threads_after = hs_kernels_threads();
  hs_kernels_serial_reorders(0);
  return NULL;
}

/* hs_kernels_serial_reorders: the weights' reorder starts no OpenMP thread (a thread without a team
 * creates one for its first parallel region, so the process's thread count shows it), the creating
 * thread's count is what it was, and the kernel computes bit for bit what one made in parallel does. */
static void test_serial_reorders(void **state) {
  (void)state;
  float *w = rand_buf(256 * 256 * 9);
  g_serial_w = w;
  serial_job jobs[2] = {{.serial = 0, .rc = -1}, {.serial = 1, .rc = -1}};
  for (int i = 0; i < 2; i++) {
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, serial_main, &jobs[i]), 0);
    pthread_join(th, NULL);
    assert_int_equal(jobs[i].rc, 0);
    assert_int_equal(jobs[i].threads_after, 2);
  }
  assert_true(jobs[0].tasks_after > jobs[0].tasks_before); /* parallel: the thread's team was started */
  assert_int_equal(jobs[1].tasks_after, jobs[1].tasks_before); /* serial: no team */
  int64_t n = 256 * 49;
  float *x = rand_buf(n), *y0 = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n);
  hs_error err;
  const void *src[1] = {x};
  assert_int_equal(run_k(jobs[0].k, 1, src, 1, NULL, y0, &err), 0);
  assert_int_equal(run_k(jobs[1].k, 1, src, 1, NULL, y1, &err), 0);
  assert_memory_equal(y0, y1, sizeof(float) * n);
  hs_conv_params p = serial_conv();
  float *xn = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
  to_nchw(x, xn, 1, 256, 49);
  ref_conv(&p, 1, xn, NULL, want);
  to_nchw(y1, got, 1, 256, 49);
  expect_close("serial reorders", got, want, n);
  for (int i = 0; i < 2; i++) hs_kernel_destroy(jobs[i].k);
  free(x); free(y0); free(y1); free(xn); free(want); free(got); free(w);
}

/* ---------------- padding of reordered weights ---------------- */

/* hs__gaps_from: where a buffer of a weight layout may hold bytes no reorder writes. Output channels
 * padded to 48 (Acdb48a, outermost): only the last block of 48; a padded inner dimension (aBcd16b):
 * from its first padded block on; no padding: none; plain: none. And hs__reorder_alloc clears that
 * part of a pool block that held other bytes: the padding lanes come out zero, the values exact. */
static void test_reorder_padding(void **state) {
  (void)state;
  const int64_t O = 1000, I = 256; /* a 1 MB block: the pool's (256 KiB or more) */
  dnnl_dims_t dims = {O, I, 1, 1}, d64 = {1024, I, 1, 1}, dinner = {2, 20, 3, 3};
  dnnl_memory_desc_t plain, b48, b64, inner;
  assert_int_equal(dnnl_memory_desc_init_by_tag(&plain, 4, dims, dnnl_f32, dnnl_abcd), dnnl_success);
  assert_int_equal(dnnl_memory_desc_init_by_tag(&b48, 4, dims, dnnl_f32, dnnl_Acdb48a), dnnl_success);
  assert_int_equal(dnnl_memory_desc_init_by_tag(&b64, 4, d64, dnnl_f32, dnnl_Acdb64a),
                   dnnl_success);
  assert_int_equal(dnnl_memory_desc_init_by_tag(&inner, 4, dinner, dnnl_f32, dnnl_aBcd16b),
                   dnnl_success);
  size_t bytes = dnnl_memory_desc_get_size(&b48);
  assert_int_equal(bytes, (size_t)1008 * I * 4); /* 1000 padded to 21 blocks of 48 */
  assert_int_equal(hs__gaps_from(&b48, bytes), (size_t)20 * 48 * I * 4); /* the 21st block */
  assert_int_equal(hs__gaps_from(&b64, dnnl_memory_desc_get_size(&b64)), dnnl_memory_desc_get_size(&b64));
  assert_int_equal(hs__gaps_from(&plain, dnnl_memory_desc_get_size(&plain)), dnnl_memory_desc_get_size(&plain));
  /* [2][2 blocks of 16][3][3][16]: a = 0's second block (channels 16..31, 20..31 padding) starts at 9 * 16 */
  assert_int_equal(hs__gaps_from(&inner, dnnl_memory_desc_get_size(&inner)), (size_t)9 * 16 * 4);

  hs_wblock_keep((size_t)64 << 20); /* the pool on: the block freed below comes back, dirty */
  float *dirty = hs_wblock_alloc(bytes);
  assert_non_null(dirty);
  memset(dirty, 0xff, bytes); /* NaN everywhere */
  hs_wblock_free(dirty);
  float *w = rand_buf(O * I);
  void *out = NULL;
  hs_error err;
  assert_int_equal(hs__reorder_alloc(&plain, w, &b48, &out, &err), 0);
  assert_ptr_equal(out, dirty); /* the dirty block, back from the pool */
  const float *r = out;
  for (int64_t o = 0; o < 1008; o++)
    for (int64_t i = 0; i < I; i++) {
      float got = r[(o / 48) * 48 * I + i * 48 + o % 48];
      if (o < O) assert_memory_equal(&got, &w[o * I + i], sizeof got);
      else assert_true(got == 0.0f && !signbit(got));
    }
  hs_wblock_free(out);
  hs_wblock_trim();
  free(w);
}

/* hs__reorder_into's own loop for plain 1x1 weights into blocks of output channels (rows of a multiple of
 * 4 KiB, where oneDNN's reorder is slow): taken for those (and only those), into a dirty buffer, and bit for
 * bit what oneDNN's reorder writes, padding lanes zero; O not a multiple of 4 nor of the block, 3-D too. */
static void test_reorder_rows(void **state) {
  (void)state;
  struct { int64_t o, i; int nd; dnnl_format_tag_t tag; int ours; } cs[] = {
      {2048, 1024, 4, dnnl_Acdb48a, 1}, {203, 1024, 4, dnnl_Acdb48a, 1}, {130, 2048, 4, dnnl_Acdb64a, 1},
      {61, 1024, 3, dnnl_Acb32a, 1},    {1000, 256, 4, dnnl_Acdb48a, 0}, {64, 1024, 4, dnnl_Acdb16a, 1}};
  dnnl_engine_t eng;
  dnnl_stream_t st;
  assert_int_equal(dnnl_engine_create(&eng, dnnl_cpu, 0), dnnl_success);
  assert_int_equal(dnnl_stream_create(&st, eng, dnnl_stream_default_flags), dnnl_success);
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    const int64_t O = cs[c].o, I = cs[c].i;
    dnnl_dims_t dims = {O, I, 1, 1};
    dnnl_memory_desc_t plain, blk;
    assert_int_equal(dnnl_memory_desc_init_by_tag(&plain, cs[c].nd, dims, dnnl_f32, cs[c].nd == 4 ? dnnl_abcd : dnnl_abc),
                     dnnl_success);
    assert_int_equal(dnnl_memory_desc_init_by_tag(&blk, cs[c].nd, dims, dnnl_f32, cs[c].tag), dnnl_success);
    size_t bytes = dnnl_memory_desc_get_size(&blk);
    float *w = rand_buf(O * I), *ours = malloc(bytes), *theirs = malloc(bytes);
    memset(ours, 0xff, bytes);
    memset(theirs, 0, bytes);
    size_t before = hs__rows_reorders();
    hs_error err;
    assert_int_equal(hs__reorder_into(&plain, w, &blk, ours, &err), 0);
    assert_int_equal(hs__rows_reorders() - before, (size_t)cs[c].ours);
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t ms, md;
    assert_int_equal(dnnl_reorder_primitive_desc_create(&pd, &plain, eng, &blk, eng, NULL), dnnl_success);
    assert_int_equal(dnnl_primitive_create(&prim, pd), dnnl_success);
    assert_int_equal(dnnl_memory_create(&ms, &plain, eng, w), dnnl_success);
    assert_int_equal(dnnl_memory_create(&md, &blk, eng, theirs), dnnl_success);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    assert_int_equal(dnnl_primitive_execute(prim, st, 2, args), dnnl_success);
    assert_int_equal(dnnl_stream_wait(st), dnnl_success);
    assert_memory_equal(ours, theirs, bytes);
    const int64_t B = blk.format_desc.blocking.inner_blks[0];
    for (int64_t o = 0; o < blk.padded_dims[0]; o++)
      for (int64_t i = 0; i < I; i += 97) {
        float got = ours[(o / B) * I * B + i * B + o % B];
        if (o < O) assert_memory_equal(&got, &w[o * I + i], sizeof got);
        else assert_true(got == 0.0f && !signbit(got));
      }
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(md);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    free(w);
    free(ours);
    free(theirs);
  }
  dnnl_stream_destroy(st);
  dnnl_engine_destroy(eng);
}

/* ---------------- buffers that move between runs ---------------- */

/* True when mallinfo2 counts this process's allocations: not under a sanitizer's allocator (ASan,
 * TSan), which leaves glibc's counters at zero. */
static bool heap_counted(void) {
  size_t before = mallinfo2().uordblks;
  void *probe = malloc(64 * 1024);
  bool counted = probe && mallinfo2().uordblks >= before + 64 * 1024;
  free(probe);
  return counted;
}

/* What a kernel holds besides its weights: one variant per batch size it ran, not room for all
 * HS__MAX_VARIANTS (eight inline variants made each kernel 47 KB of heap, allocated and cleared per
 * kernel, ~50 per MobileNetV2 version). Counted on the heap (mallinfo2) around a second creation of
 * the same small Conv, whose primitives oneDNN's cache already holds; where a sanitizer's allocator
 * keeps glibc's counters at zero, the kernel's own size is checked (and the leak check sees the
 * second variant freed). */
static void test_kernel_footprint(void **state) {
  (void)state;
  assert_true(sizeof(hs_kernel) < 24 * 1024); /* no room for every variant inline */
  bool counted = heap_counted();
  hs_conv_params p = {.src_layout = HS_LAYOUT_NHWC, .dst_layout = HS_LAYOUT_NHWC, .nsp = 2, .batch = 1, .in_c = 8,
                      .out_c = 8, .groups = 1, .in = {4, 4}, .out = {4, 4}, .kernel = {1, 1}, .stride = {1, 1},
                      .dilation = {1, 1}};
  float *w = rand_buf(8 * 8);
  p.weights = w;
  hs_kernel *k;
  hs_error err;
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), 0);
  hs_kernel_destroy(k);
  size_t before = mallinfo2().uordblks;
  assert_int_equal(hs_kernel_conv_create(&p, &k, &err), 0);
  size_t one = mallinfo2().uordblks - before;
  float x[2 * 8 * 16], y[2 * 8 * 16];
  for (int i = 0; i < 2 * 8 * 16; i++) x[i] = (float)i;
  const void *src[1] = {x};
  assert_int_equal(run_k(k, 2, src, 1, NULL, y, &err), 0); /* a second variant, allocated now */
  size_t two = mallinfo2().uordblks - before;
  print_message("kernel heap: %zu bytes with one variant, %zu with two (hs_kernel %zu, a variant %zu)\n", one, two,
                sizeof(hs_kernel), sizeof(hs__variant));
  if (counted) {
    assert_true(one < 24 * 1024);
    assert_true(two > one);
  } else {
    print_message("heap not counted here (a sanitizer's allocator): only the kernel's size checked\n");
  }
  hs_kernel_destroy(k); /* frees the second variant too (leak checks: ASan in CI) */
  free(w);
}

/* A kernel run in turns on buffers that differ from run to run (and at batch 1 and 2), then made again with
 * other weights, most likely at the address the last one freed: each run must read the buffers and weights it
 * is given, since a thread keeps the memory objects of earlier runs and re-points them (cpu_dnnl_core.c). */
static void test_moving_buffers(void **state) {
  (void)state;
  hs_conv_params p = {.src_layout = HS_LAYOUT_NHWC, .dst_layout = HS_LAYOUT_NHWC, .res_layout = HS_LAYOUT_NHWC,
                      .nsp = 2, .batch = 1, .in_c = 16, .out_c = 24, .groups = 1, .in = {6, 5}, .out = {6, 5},
                      .kernel = {1, 1}, .stride = {1, 1}, .dilation = {1, 1}};
  p.post = post_of(2, HS_POST_SUM, 1.0, HS_POST_ACT, HS_ACT_RELU, 0.0, 0.0);
  enum { S = 30 };
  for (int made = 0; made < 3; made++) {
    float *w = rand_buf(24 * 16), *b = rand_buf(24);
    p.weights = w;
    p.bias = b;
    hs_kernel *k;
    hs_error err;
    assert_int_equal(hs_kernel_conv_create(&p, &k, &err), 0);
    for (int r = 0; r < 4; r++) {
      int64_t n = 1 + r % 2, xn = n * 16 * S, yn = n * 24 * S;
      float *x = rand_buf(xn), *res = rand_buf(yn), *want = malloc(sizeof(float) * yn);
      float *xl = malloc(sizeof(float) * xn), *resl = malloc(sizeof(float) * yn);
      float *got = malloc(sizeof(float) * yn), *gotc = malloc(sizeof(float) * yn);
      ref_conv(&p, n, x, res, want);
      to_nhwc(x, xl, n, 16, S);
      to_nhwc(res, resl, n, 24, S);
      const void *src[1] = {xl};
      assert_int_equal(run_k(k, n, src, 1, resl, got, &err), 0);
      to_nchw(got, gotc, n, 24, S);
      expect_close("moving buffers", gotc, want, yn);
      free(x); free(res); free(want); free(xl); free(resl); free(got); free(gotc);
    }
    hs_kernel_destroy(k);
    free(w);
    free(b);
  }
}

/* ---------------- kernel cache ---------------- */

typedef struct {
  int64_t c;
  int builds;
} cache_ctx;

static int build_relu(void *ctx, hs_kernel **out, hs_error *err) {
  cache_ctx *cx = ctx;
  cx->builds++;
  hs_eltwise_params p = {.ndim = 2, .dims = {1, cx->c}};
  hs_post_ops_add_act(&p.ops, HS_ACT_RELU, 0, 0);
  return hs_kernel_eltwise_create(&p, out, err);
}

/* ---------------- qmatmul (int8) ---------------- */

/* Reference of the qmatmul kernel for A [rows, k] (u8 when au8, else s8), B [k, n] s8: as kernels.h states it. */
static void ref_qmatmul(const hs_qmatmul_params *p, int64_t rows, const void *a, int au8, int32_t azp, void *dst) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < p->n; j++) {
      int64_t acc = 0;
      for (int64_t kk = 0; kk < p->k; kk++) {
        int32_t av = au8 ? ((const uint8_t *)a)[i * p->k + kk] : ((const int8_t *)a)[i * p->k + kk];
        acc += (int64_t)(av - azp) * p->weights[kk * p->n + j];
      }
      if (p->dst_s32) {
        ((int32_t *)dst)[i * p->n + j] = (int32_t)acc;
        continue;
      }
      float v = ((float)acc + (p->bias ? p->bias[j] : 0.f)) * p->scales[p->nscales > 1 ? j : 0];
      if (p->dst_type == HS_Q_F32) {
        for (int o = 0; o < p->post.count; o++) v = hs_act_apply(p->post.op[o].act, p->post.op[o].alpha, p->post.op[o].beta, v);
        ((float *)dst)[i * p->n + j] = v;
        continue;
      }
      float lo = p->dst_type == HS_Q_S8 ? -128.f : 0.f, hi = p->dst_type == HS_Q_S8 ? 127.f : 255.f;
      v = nearbyintf(v) + (float)p->dst_zp;
      v = v < lo ? lo : v > hi ? hi : v;
      if (p->dst_type == HS_Q_S8) ((int8_t *)dst)[i * p->n + j] = (int8_t)v;
      else ((uint8_t *)dst)[i * p->n + j] = (uint8_t)v;
    }
}

/* One kernel run at several row counts (its variants), each output kind, against ref_qmatmul: integer outputs
 * within one step (float32 rounding of the scaled sum), exact for s32, float32 within tolerance. */
static void test_qmatmul(void **state) {
  (void)state;
  enum { K = 67, N = 45, MAXR = 37 };
  static int8_t w[K * N];
  static uint8_t a[MAXR * K];
  float bias[N], scales[N];
  for (int i = 0; i < K * N; i++) w[i] = (int8_t)((i * 37 + 11) % 255 - 127);
  for (int i = 0; i < MAXR * K; i++) a[i] = (uint8_t)((i * 91 + 7) % 256);
  for (int j = 0; j < N; j++) bias[j] = (float)((j * 131) % 2001 - 1000), scales[j] = 1e-4f * (float)(1 + j % 7);
  static const int64_t rows[] = {5, 1, MAXR, 16};
  for (int kind = 0; kind < 5; kind++) {
    hs_qmatmul_params p = {.device = HS_KDEV_CPU, .src_type = HS_Q_U8, .rows = rows[0], .k = K, .n = N, .weights = w,
                           .scales = scales, .nscales = N, .src_zp = 100};
    int au8 = 1;
    if (kind == 0) p.dst_type = HS_Q_U8, p.dst_zp = 120, p.bias = bias;
    if (kind == 1) p.src_type = HS_Q_S8, au8 = 0, p.dst_type = HS_Q_S8, p.dst_zp = -3, p.nscales = 1, p.src_zp = -20;
    if (kind == 2) p.dst_type = HS_Q_F32, p.bias = bias, assert_int_equal(hs_post_ops_add_act(&p.post, HS_ACT_GELU_ERF, 0, 0), 0);
    if (kind == 3) p.dst_s32 = 1, p.scales = NULL, p.nscales = 0;
    if (kind == 4) p.dst_s32 = 1, p.scales = NULL, p.nscales = 0, p.src_zp = 0, p.src_zp_runtime = 1;
    hs_kernel *k = NULL;
    hs_error err = {0};
    assert_int_equal(hs_kernel_qmatmul_create(&p, &k, &err), 0);
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
      static float got[MAXR * N], want[MAXR * N];
      int32_t zp = 33 + (int32_t)r; /* kind 4: a different run-time zero point per run */
      const void *src[2] = {a, &zp};
      assert_int_equal(run_k(k, rows[r], src, 2, NULL, got, &err), 0);
      ref_qmatmul(&p, rows[r], a, au8, kind == 4 ? zp : p.src_zp, want);
      int64_t cnt = rows[r] * N;
      if (kind == 2) {
        expect_close("qmatmul f32", got, want, cnt);
      } else if (kind >= 3) {
        assert_memory_equal(got, want, (size_t)cnt * 4);
      } else {
        for (int64_t i = 0; i < cnt; i++) {
          int g = kind == 1 ? ((int8_t *)got)[i] : ((uint8_t *)got)[i];
          int e = kind == 1 ? ((int8_t *)want)[i] : ((uint8_t *)want)[i];
          assert_true(abs(g - e) <= 1);
        }
      }
    }
    hs_kernel_destroy(k);
  }
  /* refused: post-ops on an integer output, a scale count that is neither 1 nor n, no weights */
  hs_qmatmul_params bad = {.device = HS_KDEV_CPU, .rows = 2, .k = K, .n = N, .weights = w, .scales = scales,
                           .nscales = N, .dst_type = HS_Q_U8};
  hs_kernel *k = NULL;
  hs_error err = {0};
  assert_int_equal(hs_post_ops_add_act(&bad.post, HS_ACT_RELU, 0, 0), 0);
  assert_int_equal(hs_kernel_qmatmul_create(&bad, &k, &err), HS_INVALID_ARGUMENT);
  bad.post.count = 0;
  bad.nscales = 3;
  assert_int_equal(hs_kernel_qmatmul_create(&bad, &k, &err), HS_INVALID_ARGUMENT);
  bad.nscales = 1;
  bad.weights = NULL;
  assert_int_equal(hs_kernel_qmatmul_create(&bad, &k, &err), HS_INVALID_ARGUMENT);
  assert_null(k);
}

static void test_kcache(void **state) {
  hs_kcache c;
  /* every Conv of a loaded version holds one, most with one shape: the other slots take no room
   * until they are used (16 inline slots made it 3.4 KiB) */
  assert_true(sizeof(hs_kcache) <= 512);
  hs_kcache_init(&c);
  cache_ctx cx = {0};
  hs_kernel *k1, *k2, *k3;
  hs_error err;
  int64_t key_a[2] = {1, 8}, key_b[2] = {1, 9};
  cx.c = 8;
  assert_int_equal(hs_kcache_get(&c, key_a, 2, build_relu, &cx, &k1, &err), 0);
  assert_int_equal(hs_kcache_get(&c, key_a, 2, build_relu, &cx, &k2, &err), 0);
  assert_ptr_equal(k1, k2);
  assert_int_equal(cx.builds, 1);
  cx.c = 9;
  assert_int_equal(hs_kcache_get(&c, key_b, 2, build_relu, &cx, &k3, &err), 0);
  assert_ptr_not_equal(k1, k3);
  assert_int_equal(cx.builds, 2);
  float x[9] = {-1, 2, -3, 4, -5, 6, -7, 8, -9}, y[9];
  const void *src[1] = {x};
  assert_int_equal(run_k(k3, 0, src, 1, NULL, y, &err), 0);
  for (int i = 0; i < 9; i++) assert_true(y[i] == (x[i] > 0 ? x[i] : 0));
  for (int64_t i = 2; i < HS_KCACHE_SLOTS; i++) {
    int64_t key[2] = {1, 100 + i};
    cx.c = 100 + i;
    assert_int_equal(hs_kcache_get(&c, key, 2, build_relu, &cx, &k1, &err), 0);
  }
  for (int64_t i = 2; i < HS_KCACHE_SLOTS; i++) { /* each slot still found, in its allocated place */
    int64_t key[2] = {1, 100 + i};
    assert_int_equal(hs_kcache_get(&c, key, 2, build_relu, &cx, &k1, &err), 0);
    assert_ptr_equal(k1, hs_kcache_kernel(&c, (int)i));
  }
  assert_ptr_equal(hs_kcache_kernel(&c, 1), k3);
  assert_int_equal(cx.builds, HS_KCACHE_SLOTS);
  int64_t full[2] = {1, 7};
  cx.c = 7;
  assert_int_equal(hs_kcache_get(&c, full, 2, build_relu, &cx, &k1, &err), HS_LIMIT);
  assert_null(k1);
  hs_kcache_destroy(&c);
}

int main(void) {
  setenv("HS_KERNELS_WINOGRAD", "1", 1); /* off by default; the 3x3 cases must cover it */
  hs_kernels_set_threads(2);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv),      cmocka_unit_test(test_conv_errors), cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_pool),      cmocka_unit_test(test_eltwise),     cmocka_unit_test(test_binary),
      cmocka_unit_test(test_softmax),   cmocka_unit_test(test_layernorm),   cmocka_unit_test(test_batchnorm),
      cmocka_unit_test(test_reduce),    cmocka_unit_test(test_concat),      cmocka_unit_test(test_resample),
      cmocka_unit_test(test_reorder),   cmocka_unit_test(test_threads),    cmocka_unit_test(test_kcache),     cmocka_unit_test(test_sgemm),
      cmocka_unit_test(test_attention), cmocka_unit_test(test_qmatmul),
      cmocka_unit_test(test_moving_buffers),
      cmocka_unit_test(test_kernel_footprint), cmocka_unit_test(test_serial_reorders),
      cmocka_unit_test(test_reorder_padding), cmocka_unit_test(test_reorder_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

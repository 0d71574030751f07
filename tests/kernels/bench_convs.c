/* bench_convs.c - times ResNet-50's 53 convolutions through the kernel interface (not a test: speed only).
 * Usage: bench_convs [nchw|nhwc] [batch] [repeats]   (thread count from OMP_NUM_THREADS) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

typedef struct {
  int64_t ic, oc, h, k, s;
} conv_shape;

static int resnet50(conv_shape *c) {
  int n = 0;
  c[n++] = (conv_shape){3, 64, 224, 7, 2};
  int64_t in_c = 64, h = 56;
  const int blocks[4] = {3, 4, 6, 3};
  for (int s = 0; s < 4; s++) {
    int64_t w = 64 << s;
    for (int b = 0; b < blocks[s]; b++) {
      int64_t st = (s > 0 && b == 0) ? 2 : 1;
      c[n++] = (conv_shape){in_c, w, h, 1, 1};
      c[n++] = (conv_shape){w, w, h, 3, st};
      c[n++] = (conv_shape){w, 4 * w, h / st, 1, 1};
      if (b == 0) c[n++] = (conv_shape){in_c, 4 * w, h, 1, st};
      h /= st;
      in_c = 4 * w;
    }
  }
  return n;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  const char *lname = argc > 1 ? argv[1] : "nhwc";
  hs_layout layout = strcmp(lname, "nchw") == 0 ? HS_LAYOUT_NCHW
                     : strcmp(lname, "blocked") == 0 ? HS_LAYOUT_NCHW8C : HS_LAYOUT_NHWC;
  int64_t batch = argc > 2 ? atoll(argv[2]) : 1;
  int reps = argc > 3 ? atoi(argv[3]) : 10;
  conv_shape cs[64];
  int n = resnet50(cs);
  hs_kernel *k[64];
  float *bufs[2];
  size_t maxact = 0, maxscratch = 0;
  double gflop = 0;
  double t0 = now_ms();
  for (int i = 0; i < n; i++) {
    conv_shape c = cs[i];
    int64_t pad = c.k / 2, out = (c.h + 2 * pad - c.k) / c.s + 1;
    float *w = calloc((size_t)(c.oc * c.ic * c.k * c.k), sizeof(float));
    float *b = calloc((size_t)c.oc, sizeof(float));
    hs_conv_params p = {.src_layout = i == 0 ? HS_LAYOUT_NCHW : layout, .dst_layout = layout, .nsp = 2, .batch = batch, .in_c = c.ic, .out_c = c.oc, .groups = 1,
                        .in = {c.h, c.h}, .out = {out, out}, .kernel = {c.k, c.k}, .stride = {c.s, c.s},
                        .dilation = {1, 1}, .pad_begin = {pad, pad}, .pad_end = {pad, pad}, .weights = w, .bias = b};
    hs_post_ops_add_act(&p.post, HS_ACT_RELU, 0, 0);
    hs_error err;
    if (hs_kernel_conv_create(&p, &k[i], &err)) {
      fprintf(stderr, "conv %d: %s\n", i, err.message);
      return 1;
    }
    free(w);
    free(b);
    size_t a = (size_t)(batch * (c.ic * c.h * c.h > c.oc * out * out ? c.ic * c.h * c.h : c.oc * out * out));
    if (a > maxact) maxact = a;
    size_t sz = hs_kernel_scratch_size(k[i], 0);
    if (sz > maxscratch) maxscratch = sz;
    gflop += 2.0 * batch * c.oc * out * out * c.ic * c.k * c.k / 1e9;
  }
  double t_create = now_ms() - t0;
  bufs[0] = calloc(maxact, sizeof(float));
  bufs[1] = calloc(maxact, sizeof(float));
  void *scratch = NULL;
  if (posix_memalign(&scratch, 64, maxscratch ? maxscratch : 64)) return 1;
  double per[64] = {0}, best = 1e30;
  for (int r = 0; r < reps; r++) {
    double tr = now_ms();
    for (int i = 0; i < n; i++) {
      const void *src[1] = {bufs[0]};
      hs_kernel_args a = {.src = src, .nsrc = 1, .dst = bufs[1], .scratch = scratch};
      hs_error err;
      double ti = now_ms();
      if (hs_kernel_run(k[i], &a, &err)) {
        fprintf(stderr, "run %d: %s\n", i, err.message);
        return 1;
      }
      per[i] += now_ms() - ti;
    }
    double t = now_ms() - tr;
    if (t < best) best = t;
  }
  printf("layout %s batch %lld threads %d: create %.1f ms, best run %.2f ms (%.0f GFLOP/s)\n",
         lname, (long long)batch, hs_kernels_threads(), t_create, best,
         gflop / best * 1e3);
  if (getenv("HS_BENCH_DETAIL"))
    for (int i = 0; i < n; i++)
      printf("  %2d ic %4lld oc %4lld h %3lld k %lld s %lld: %.3f ms  %s\n", i, (long long)cs[i].ic,
             (long long)cs[i].oc, (long long)cs[i].h, (long long)cs[i].k, (long long)cs[i].s, per[i] / reps,
             hs_kernel_impl_name(k[i]));
  for (int i = 0; i < n; i++) hs_kernel_destroy(k[i]);
  free(bufs[0]);
  free(bufs[1]);
  free(scratch);
  return 0;
}

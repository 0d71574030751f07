/* conv_layers.c - times ResNet-50's convolution shapes on oneDNN directly, hot and cold, against the CPU's peak. */

/*
 * DESIGN
 * A per-layer floor for bench/engine's ResNet-50 rows, outside hotserve: each distinct convolution shape of
 * ResNet-50 (bias + ReLU, a sum post-op where the block's residual joins) is built the way hotserve's kernel
 * builds it (NHWC activations, weights in the layout oneDNN picks, user scratchpad) and executed alone, so the
 * per-layer times of `DNNL_VERBOSE=1 hotserve run ...` can be split into what the kernel costs with its data in
 * cache ("hot": the same layer again and again) and what a run costs because weights and activations come from
 * memory ("cold": a 96 MB buffer is read between executions; "cold+touch": the weights are read on all threads
 * right before the execution, a prefetch pass). `--peak` measures the two bounds those times meet: AVX-512 FMA
 * throughput and read bandwidth, on the same threads. Build and run (oneDNN 2.x headers, libgomp):
 *
 *   cc -O2 -march=native -fopenmp bench/engine/conv_layers.c -ldnnl -o /tmp/conv_layers
 *   OMP_NUM_THREADS=2 OMP_WAIT_POLICY=ACTIVE /tmp/conv_layers BATCH [--peak] [--any | --blocked] [--wino | --wino4x3] [--hot] [--cpu]
 *
 * --any lets oneDNN pick the activation layout too (format_tag_any); each line names the implementation and the
 * source layout (nhwc, nchw or blocked). --blocked gives every layer nChw16c activations (the stem's 3-channel
 * input: oneDNN's pick); --wino runs the 3x3 stride-1 layers on oneDNN's Winograd kernels in nChw16c (what
 * HS_KERNELS_WINOGRAD=1 builds, without the reorders around them), --wino4x3 on its 4x3 tiles only; --hot times the hot mode only; --cpu
 * times the process's CPU time instead of wall time (steadier on a shared machine; with OMP_NUM_THREADS=1).
 * Times are medians of 40 (batch 1) or 10 executions, in ms; the weighted totals count each shape as often as
 * ResNet-50 has it. bench/results/engine-2026-12-07-conv.md is the first use.
 */
#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { HOT, COLD, COLD_TOUCH, MODES };
static const char *mode_name[MODES] = {"hot", "cold", "cold+touch"};

typedef struct {
  int ic, oc, hw, k, stride, sum, count; /* count: how many layers of ResNet-50 have this shape */
} layer;

static const layer resnet50[] = {
    {3, 64, 224, 7, 2, 0, 1},     {64, 64, 56, 1, 1, 0, 1},     {64, 256, 56, 1, 1, 0, 1},
    {64, 256, 56, 1, 1, 1, 3},    {256, 64, 56, 1, 1, 0, 2},    {64, 64, 56, 3, 1, 0, 3},
    {256, 128, 56, 1, 1, 0, 1},   {256, 512, 56, 1, 2, 0, 1},   {128, 128, 56, 3, 2, 0, 1},
    {128, 512, 28, 1, 1, 1, 4},   {512, 128, 28, 1, 1, 0, 3},   {128, 128, 28, 3, 1, 0, 3},
    {512, 256, 28, 1, 1, 0, 1},   {512, 1024, 28, 1, 2, 0, 1},  {256, 256, 28, 3, 2, 0, 1},
    {256, 256, 14, 3, 1, 0, 5},   {256, 1024, 14, 1, 1, 1, 6},  {1024, 256, 14, 1, 1, 0, 5},
    {1024, 512, 14, 1, 1, 0, 1},  {1024, 2048, 14, 1, 2, 0, 1}, {512, 512, 14, 3, 2, 0, 1},
    {512, 512, 7, 3, 1, 0, 2},    {512, 2048, 7, 1, 1, 1, 3},   {2048, 512, 7, 1, 1, 0, 2},
};

static dnnl_engine_t engine;
/* --blocked: nChw16c activations; --wino: 3x3 stride-1 layers on Winograd (nChw16c), --wino4x3: on its 4x3 tiles
 * only (the next implementation after 2x3); --hot: modes 1 */
static int blocked, wino, wino4x3, modes = MODES;
static clockid_t timing_clock = CLOCK_MONOTONIC; /* --cpu: the process's CPU time */
static dnnl_stream_t stream;
static float *flush_buf;
static const size_t flush_floats = (size_t)24 << 20; /* 96 MB: three times the L3 */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(timing_clock, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Reads every cache line of n floats (n a multiple of 64) on all threads, four independent streams per
 * thread; returns a sum of what it read so that the loads stay. */
static float touch(const float *p, size_t n) {
  float acc = 0;
#pragma omp parallel reduction(+ : acc)
  {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
#pragma omp for schedule(static)
    for (size_t i = 0; i < n / 64; i++) {
      s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i * 64));
      s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i * 64 + 16));
      s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i * 64 + 32));
      s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i * 64 + 48));
    }
    acc += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  }
  return acc;
}

static dnnl_memory_t zeroed(const dnnl_memory_desc_t *md) {
  dnnl_memory_t m = NULL;
  void *p = NULL;
  if (dnnl_memory_create(&m, md, engine, DNNL_MEMORY_ALLOCATE) != dnnl_success) return NULL;
  dnnl_memory_get_data_handle(m, &p);
  memset(p, 0, dnnl_memory_desc_get_size(md));
  return m;
}

/* Median ms of one layer's executions in `mode`; -1 when oneDNN cannot build it. Names the implementation and
 * the source layout it chose. */
static double time_layer(const layer *l, int batch, int any, int mode, const char **impl, const char **layout) {
  int pad = l->k / 2, out = (l->hw + 2 * pad - l->k) / l->stride + 1;
  dnnl_dims_t sd = {batch, l->ic, l->hw, l->hw}, wd = {l->oc, l->ic, l->k, l->k}, dd = {batch, l->oc, out, out};
  dnnl_dims_t bd = {l->oc}, st = {l->stride, l->stride}, pd_ = {pad, pad};
  int use_wino = wino && l->k == 3 && l->stride == 1;
  dnnl_format_tag_t act = any ? dnnl_format_tag_any : blocked || use_wino ? dnnl_nChw16c : dnnl_nhwc;
  dnnl_memory_desc_t s, w, d, b;
  dnnl_memory_desc_init_by_tag(&s, 4, sd, dnnl_f32, l->ic % 16 && act == dnnl_nChw16c ? dnnl_format_tag_any : act);
  dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&d, 4, dd, dnnl_f32, act);
  dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_a);
  dnnl_post_ops_t po;
  dnnl_primitive_attr_t attr;
  dnnl_post_ops_create(&po);
  if (l->sum) dnnl_post_ops_append_sum(po, 1.f);
  dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f);
  dnnl_primitive_attr_create(&attr);
  dnnl_primitive_attr_set_post_ops(attr, po);
  dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t prim = NULL;
  double result = -1;
  if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                         use_wino ? dnnl_convolution_winograd : dnnl_convolution_direct, &s, &w, &b, &d, st,
                                         pd_, pd_) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &cd, attr, engine, NULL) != dnnl_success)
    goto done;
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
  if (wino4x3 && use_wino && strstr(*impl, "2x3")) { /* the implementations after it, in oneDNN's order */
    dnnl_primitive_desc_iterator_t it;
    if (dnnl_primitive_desc_iterator_create(&it, &cd, attr, engine, NULL) == dnnl_success) {
      while (dnnl_primitive_desc_iterator_next(it) == dnnl_success) {
        dnnl_primitive_desc_t cand = dnnl_primitive_desc_iterator_fetch(it);
        const char *name = "";
        dnnl_primitive_desc_query(cand, dnnl_query_impl_info_str, 0, &name);
        if (strstr(name, "4x3")) {
          dnnl_primitive_desc_destroy(pd);
          pd = cand;
          break;
        }
        dnnl_primitive_desc_destroy(cand);
      }
      dnnl_primitive_desc_iterator_destroy(it);
    }
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
  }
  if (dnnl_primitive_create(&prim, pd) != dnnl_success) goto done;
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  *layout = smd->format_desc.blocking.inner_nblks ? "blocked" : smd->format_desc.blocking.strides[1] == 1 ? "nhwc" : "nchw";
  const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *spmd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, zeroed(dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0))},
                             {DNNL_ARG_WEIGHTS, zeroed(wmd)},
                             {DNNL_ARG_BIAS, zeroed(&b)},
                             {DNNL_ARG_DST, zeroed(dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0))},
                             {DNNL_ARG_SCRATCHPAD, NULL}};
  int nargs = 4;
  if (spmd && dnnl_memory_desc_get_size(spmd)) args[nargs++].memory = zeroed(spmd);
  void *wptr = NULL;
  dnnl_memory_get_data_handle(args[1].memory, &wptr);
  size_t wfloats = dnnl_memory_desc_get_size(wmd) / sizeof(float);
  enum { MAX_RUNS = 40 };
  int runs = batch == 1 ? MAX_RUNS : 10;
  double t[MAX_RUNS];
  volatile float sink = 0;
  for (int i = 0; i < 3; i++) dnnl_primitive_execute(prim, stream, nargs, args);
  dnnl_stream_wait(stream);
  for (int i = 0; i < runs; i++) {
    if (mode != HOT) sink += touch(flush_buf, flush_floats);
    double t0 = now_ms();
    if (mode == COLD_TOUCH) sink += touch(wptr, wfloats);
    dnnl_primitive_execute(prim, stream, nargs, args);
    dnnl_stream_wait(stream);
    t[i] = now_ms() - t0;
  }
  qsort(t, (size_t)runs, sizeof t[0], by_value);
  result = t[runs / 2];
  for (int i = 0; i < nargs; i++) dnnl_memory_destroy(args[i].memory);
done:
  if (prim) dnnl_primitive_destroy(prim);
  if (pd) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_attr_destroy(attr);
  dnnl_post_ops_destroy(po);
  return result;
}

/* FMA throughput (16 independent chains per thread, in registers) and read bandwidth over 256 MB, on all
 * threads. */
static void peak(void) {
  const long iters = 20000000;
  double t0 = now_ms();
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    __m512 m = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2), a3 = _mm512_set1_ps(3);
    __m512 a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5), a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7);
    __m512 a8 = _mm512_set1_ps(8), a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
    __m512 a12 = _mm512_set1_ps(12), a13 = _mm512_set1_ps(13), a14 = _mm512_set1_ps(14), a15 = _mm512_set1_ps(15);
    for (long it = 0; it < iters; it++) {
      a0 = _mm512_fmadd_ps(a0, m, c), a1 = _mm512_fmadd_ps(a1, m, c), a2 = _mm512_fmadd_ps(a2, m, c);
      a3 = _mm512_fmadd_ps(a3, m, c), a4 = _mm512_fmadd_ps(a4, m, c), a5 = _mm512_fmadd_ps(a5, m, c);
      a6 = _mm512_fmadd_ps(a6, m, c), a7 = _mm512_fmadd_ps(a7, m, c), a8 = _mm512_fmadd_ps(a8, m, c);
      a9 = _mm512_fmadd_ps(a9, m, c), a10 = _mm512_fmadd_ps(a10, m, c), a11 = _mm512_fmadd_ps(a11, m, c);
      a12 = _mm512_fmadd_ps(a12, m, c), a13 = _mm512_fmadd_ps(a13, m, c), a14 = _mm512_fmadd_ps(a14, m, c);
      a15 = _mm512_fmadd_ps(a15, m, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                                       _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));
    sink += _mm512_reduce_add_ps(s);
  }
  double ms = now_ms() - t0;
  printf("FMA peak: %.0f GFLOP/s on %d threads (%g)\n", 2.0 * 16 * 16 * iters * omp_get_max_threads() / ms / 1e6,
         omp_get_max_threads(), sink);
  size_t n = (size_t)64 << 20;
  float *buf = malloc(n * sizeof(float));
  if (!buf) return;
  for (size_t i = 0; i < n; i++) buf[i] = 1.f;
  for (int r = 0; r < 3; r++) {
    t0 = now_ms();
    float s = touch(buf, n);
    printf("read bandwidth: %.1f GB/s (%g)\n", n * sizeof(float) / (now_ms() - t0) / 1e6, s);
  }
  free(buf);
}

int main(int argc, char **argv) {
  int batch = argc > 1 ? atoi(argv[1]) : 0, any = 0, want_peak = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--any")) any = 1;
    else if (!strcmp(argv[i], "--peak")) want_peak = 1;
    else if (!strcmp(argv[i], "--blocked")) blocked = 1;
    else if (!strcmp(argv[i], "--wino")) wino = 1;
    else if (!strcmp(argv[i], "--wino4x3")) wino = wino4x3 = 1;
    else if (!strcmp(argv[i], "--hot")) modes = 1;
    else if (!strcmp(argv[i], "--cpu")) timing_clock = CLOCK_PROCESS_CPUTIME_ID;
  }
  if (batch < 1) {
    fprintf(stderr, "usage: %s BATCH [--peak] [--any | --blocked] [--wino | --wino4x3] [--hot] [--cpu]\n", argv[0]);
    return 2;
  }
  if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
      dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success)
    return 1;
  flush_buf = malloc(flush_floats * sizeof(float));
  if (!flush_buf) return 1;
  for (size_t i = 0; i < flush_floats; i++) flush_buf[i] = 1.f;
  if (want_peak) peak();
  double total[MODES] = {0}, t[MODES] = {0}, gflop = 0;
  printf("batch %d, %s activations%s; ms per execution (GFLOP/s hot)\n", batch,
         any ? "oneDNN's" : blocked ? "nChw16c" : "NHWC", wino ? ", 3x3 stride-1 layers on Winograd (nChw16c)" : "");
  for (size_t i = 0; i < sizeof resnet50 / sizeof resnet50[0]; i++) {
    const layer *l = &resnet50[i];
    int out = (l->hw + 2 * (l->k / 2) - l->k) / l->stride + 1;
    double flop = 2.0 * batch * l->ic * l->oc * out * out * l->k * l->k;
    const char *impl = "?", *layout = "?";
    printf("ic %4d oc %4d %3dx%-3d k%d s%d%s x%d:", l->ic, l->oc, l->hw, l->hw, l->k, l->stride, l->sum ? " sum" : "    ",
           l->count);
    for (int m = 0; m < modes; m++) {
      t[m] = time_layer(l, batch, any, m, &impl, &layout);
      total[m] += t[m] * l->count;
      printf("  %s %.3f", mode_name[m], t[m]);
    }
    gflop += flop * l->count / 1e9;
    printf("  (%.0f)  %s %s\n", flop / t[HOT] / 1e6, impl, layout);
  }
  printf("ResNet-50's %.2f GFLOP of convolutions: hot %.2f ms, cold %.2f ms, cold+touch %.2f ms\n", gflop, total[HOT],
         total[COLD], total[COLD_TOUCH]);
  free(flush_buf);
  dnnl_stream_destroy(stream);
  dnnl_engine_destroy(engine);
  return 0;
}

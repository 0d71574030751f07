/* test_matmul_consts.c - MatMul/Gemm hold B once: the graph's copy goes, and every path answers as before, bit for bit. */
/*
 * The models come from gen_matmul_consts.py: released.onnx, whose B are read by their MatMul/Gemm only, and
 * kept.onnx, the same nodes with each B also read by a Mul with a fourth input (a second reader keeps it in the graph).
 * Compiling released.onnx must free B1, B2 and B3 (their kernels hold them) and keep B4 (a Gemm with alpha
 * 0.5: its kernel holds 0.5 * B4). Both models then run the same inputs at many shapes on one session each:
 * row counts past a kernel's 8 variants and batched shapes past a node's 16 cached kernels reach the plain
 * path, which reads B back from the kernel; new batched shapes build kernels from B read back. Every output
 * must equal kept.onnx's bit for bit. (Their first kernels, at one row, read B in place: released.onnx's take the
 * graph's B over, kept.onnx's read the graph's, which stays: hs_matmul_params.b_lend.) The kernels interface: hs_kernel_matmul_b gives B back exactly.
 * qreleased.onnx / qkept.onnx do the same for the int8 kernel (QLinearMatMul with a uint8 and an int8 B,
 * MatMulInteger): B goes from the graph, and the answers at 25 shapes (row counts past the variants run as
 * batch-many products on a kernel built from B read back, or on the plain C with B read back) equal qkept.onnx's.
 * The int8 kernels hold their weights once too: creating a qmatmul (three kinds of A) or a qconv kernel and
 * variants for more batches grows the live heap by one copy of the weights (plus the compensation terms and
 * oneDNN's primitives), not two, and hs_kernel_qmatmul_b still gives B back exactly.
 * gemm_alpha0.onnx: a Gemm with alpha 0 and a constant B answers beta * C (it once ran A x B + C on the kernel).
 * A lent B (hs_matmul_params.b_lend: a classifier head at batch 1) is read in place: the kernel holds no copy and
 * its creation adds far less than B to the RSS, its answers at 1, 2 and 7 rows equal those of a kernel made from
 * a copy of B bit for bit (and A x B + bias within float rounding), and once handed over
 * (hs_kernel_matmul_adopt_b) the kernel frees B and still gives it back exactly.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dnnl.h>

#include "base/wblock.h"
#include "engine/engine.h"
#include "kernels/kernels.h"
#include "../rss.h"

static const char *g_dir;

enum { K1 = 128, K3 = 32, NOUT = 5 };

static float *random_floats(size_t n, uint32_t seed) {
  float *v = malloc(n * sizeof(float));
  assert_non_null(v);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = (float)(seed >> 8) / 16777216.f - .5f;
  }
  return v;
}

static hs_engine_model *load(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  hs_engine_model *m = NULL;
  hs_error err;
  int rc = hs_engine_load(path, NULL, &m, &err);
  if (rc) fprintf(stderr, "%s: %s\n", path, err.message);
  assert_int_equal(rc, 0);
  return m;
}

static int graph_holds(const hs_engine_model *m, const char *name) {
  int v = hs_graph_find(&m->g, name);
  assert_true(v >= 0);
  return m->g.values[v].data != NULL;
}

/* Runs s on nin inputs; returns its first NOUT outputs, copied (malloc'ed, in out). */
static void run(hs_engine_session *s, size_t nin, size_t nout, const hs_tensor *in, hs_tensor *out) {
  hs_tensor o[NOUT + 6];
  hs_error err;
  int rc = hs_engine_run(s, in, nin, o, nout, &err);
  if (rc) fprintf(stderr, "run: %s\n", err.message);
  assert_int_equal(rc, 0);
  for (int i = 0; i < NOUT; i++) {
    out[i] = o[i];
    out[i].data = malloc(o[i].nbytes ? o[i].nbytes : 1);
    assert_non_null(out[i].data);
    memcpy(out[i].data, o[i].data, o[i].nbytes);
  }
}

static void test_released_answers_as_kept(void **state) {
  (void)state;
  hs_engine_model *rel = load("released.onnx"), *kept = load("kept.onnx");
  /* B read only by its node: the kernel holds it; a second reader or alpha != 1 keeps it */
  assert_false(graph_holds(rel, "B1"));
  assert_false(graph_holds(rel, "B2"));
  assert_false(graph_holds(rel, "B3"));
  assert_false(graph_holds(rel, "B5"));
  assert_false(graph_holds(rel, "C5")); /* the fused bias: its kernel holds it */
  assert_true(graph_holds(rel, "B4"));
  assert_true(graph_holds(rel, "C2"));
  assert_true(graph_holds(kept, "B1") && graph_holds(kept, "B2") && graph_holds(kept, "B3") && graph_holds(kept, "B4"));
  assert_true(graph_holds(kept, "B5") && graph_holds(kept, "C5"));
  hs_engine_session *sr = NULL, *sk = NULL;
  hs_error err;
  assert_int_equal(hs_engine_session_create(rel, &sr, &err), 0);
  assert_int_equal(hs_engine_session_create(kept, &sk, &err), 0);
  int runs = 0;
  /* 3 x 7 shapes: 12 row counts of A1 (rows b * s) and 21 shapes of A3 */
  for (int64_t b = 1; b <= 3; b++)
    for (int64_t sq = 1; sq <= 7; sq++) {
      int64_t m2 = b * 5 + sq;
      float *a1 = random_floats((size_t)(b * sq * K1), (uint32_t)(b * 100 + sq));
      float *a2 = random_floats((size_t)(m2 * K1), (uint32_t)(b * 1000 + sq));
      float *a3 = random_floats((size_t)(b * 2 * sq * K3), (uint32_t)(b * 10000 + sq));
      static float one = 1.f;
      hs_tensor in[4] = {
          {.dtype = HS_DT_FLOAT32, .ndim = 3, .dims = {b, sq, K1}, .data = a1, .nbytes = sizeof(float) * (size_t)(b * sq * K1)},
          {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {m2, K1}, .data = a2, .nbytes = sizeof(float) * (size_t)(m2 * K1)},
          {.dtype = HS_DT_FLOAT32, .ndim = 4, .dims = {b, 2, sq, K3}, .data = a3,
           .nbytes = sizeof(float) * (size_t)(b * 2 * sq * K3)},
          {.dtype = HS_DT_FLOAT32, .ndim = 1, .dims = {1}, .data = &one, .nbytes = sizeof one}}; /* kept.onnx's S */
      hs_tensor yr[NOUT], yk[NOUT];
      run(sr, 3, NOUT, in, yr);
      run(sk, 4, NOUT + 6, in, yk);
      for (int i = 0; i < NOUT; i++) {
        assert_int_equal(yr[i].nbytes, yk[i].nbytes);
        assert_true(yr[i].nbytes > 0);
        if (memcmp(yr[i].data, yk[i].data, yr[i].nbytes))
          fail_msg("output %d differs at b=%lld s=%lld", i, (long long)b, (long long)sq);
        free(yr[i].data);
        free(yk[i].data);
      }
      free(a1);
      free(a2);
      free(a3);
      runs++;
    }
  printf("%d runs: outputs with B released equal the ones with B kept, bit for bit\n", runs);
  /* the graph still does not hold them: nothing put B back */
  assert_false(graph_holds(rel, "B1") || graph_holds(rel, "B2") || graph_holds(rel, "B3") || graph_holds(rel, "C5"));
  hs_engine_session_free(sr);
  hs_engine_session_free(sk);
  hs_engine_free(rel);
  hs_engine_free(kept);
}

/* Runs s on nin uint8 / other inputs; returns its first n outputs, copied. */
static void qrun(hs_engine_session *s, const hs_tensor *in, size_t nin, size_t nout, size_t n, hs_tensor *out) {
  hs_tensor o[8];
  hs_error err;
  int rc = hs_engine_run(s, in, nin, o, nout, &err);
  if (rc) fprintf(stderr, "run: %s\n", err.message);
  assert_int_equal(rc, 0);
  for (size_t i = 0; i < n; i++) {
    out[i] = o[i];
    out[i].data = malloc(o[i].nbytes ? o[i].nbytes : 1);
    assert_non_null(out[i].data);
    memcpy(out[i].data, o[i].data, o[i].nbytes);
  }
}

static void test_int8_released_answers_as_kept(void **state) {
  (void)state;
  enum { QK = 64, QOUT = 3 };
  hs_engine_model *rel = load("qreleased.onnx"), *kept = load("qkept.onnx");
  assert_false(graph_holds(rel, "QB1"));
  assert_false(graph_holds(rel, "QB2"));
  assert_false(graph_holds(rel, "QB3"));
  assert_true(graph_holds(kept, "QB1") && graph_holds(kept, "QB2") && graph_holds(kept, "QB3"));
  hs_engine_session *sr = NULL, *sk = NULL;
  hs_error err;
  assert_int_equal(hs_engine_session_create(rel, &sr, &err), 0);
  assert_int_equal(hs_engine_session_create(kept, &sk, &err), 0);
  static uint8_t z[48]; /* qkept.onnx's Concat inputs: zeros */
  /* batches from 5 down: the first kernel's 8 row counts fill up, then products of sq rows run batch-many
   * times on a second kernel; at batch 1 a row count past them has no kernel left (rows == sq): plain C */
  static const int64_t seqs[] = {1, 2, 3, 4, 7};
  int runs = 0;
  for (int64_t b = 5; b >= 1; b--)
    for (size_t si = 0; si < sizeof seqs / sizeof seqs[0]; si++) {
      const int64_t sq = seqs[si];
      size_t na = (size_t)(b * sq * QK);
      uint8_t *a = malloc(na);
      assert_non_null(a);
      uint32_t r = (uint32_t)(b * 31 + sq);
      for (size_t i = 0; i < na; i++) a[i] = (uint8_t)((r = r * 1664525u + 1013904223u) >> 24);
      hs_tensor in[4] = {{.dtype = HS_DT_UINT8, .ndim = 3, .dims = {b, sq, QK}, .data = a, .nbytes = na},
                         {.dtype = HS_DT_UINT8, .ndim = 2, .dims = {1, 48}, .data = z, .nbytes = 48},
                         {.dtype = HS_DT_INT8, .ndim = 2, .dims = {1, 40}, .data = z, .nbytes = 40},
                         {.dtype = HS_DT_INT8, .ndim = 2, .dims = {1, 40}, .data = z, .nbytes = 40}};
      hs_tensor yr[QOUT], yk[QOUT];
      qrun(sr, in, 1, QOUT, QOUT, yr);
      qrun(sk, in, 4, QOUT + 3, QOUT, yk);
      for (int i = 0; i < QOUT; i++) {
        assert_int_equal(yr[i].nbytes, yk[i].nbytes);
        assert_true(yr[i].nbytes > 0);
        if (memcmp(yr[i].data, yk[i].data, yr[i].nbytes))
          fail_msg("int8 output %d differs at b=%lld s=%lld", i, (long long)b, (long long)sq);
        free(yr[i].data);
        free(yk[i].data);
      }
      free(a);
      runs++;
    }
  printf("%d int8 runs: outputs with B released equal the ones with B kept, bit for bit\n", runs);
  hs_engine_session_free(sr);
  hs_engine_session_free(sk);
  hs_engine_free(rel);
  hs_engine_free(kept);
}

/* QLinearConv's weights: released from the graph, and the answers at 20 spatial shapes (new kernels built from the
 * weights read back; past the node's 16 cached kernels the plain C with the weights read back) equal qckept.onnx's. */
static void test_qconv_released_answers_as_kept(void **state) {
  (void)state;
  hs_engine_model *rel = load("qcreleased.onnx"), *kept = load("qckept.onnx");
  assert_false(graph_holds(rel, "QW1"));
  assert_false(graph_holds(rel, "QW2"));
  assert_true(graph_holds(kept, "QW1") && graph_holds(kept, "QW2"));
  hs_engine_session *sr = NULL, *sk = NULL;
  hs_error err;
  assert_int_equal(hs_engine_session_create(rel, &sr, &err), 0);
  assert_int_equal(hs_engine_session_create(kept, &sk, &err), 0);
  static int8_t z[72]; /* qckept.onnx's Concat inputs: zeros */
  int runs = 0;
  for (int64_t i = 0; i < 20; i++) {
    const int64_t b = 1 + i % 3, h = 5 + i, w = 4 + (i * 7) % 9;
    size_t nx = (size_t)(b * 8 * h * w);
    uint8_t *x = malloc(nx);
    assert_non_null(x);
    uint32_t r = (uint32_t)(i * 977 + 3);
    for (size_t j = 0; j < nx; j++) x[j] = (uint8_t)((r = r * 1664525u + 1013904223u) >> 24);
    hs_tensor in[3] = {{.dtype = HS_DT_UINT8, .ndim = 4, .dims = {b, 8, h, w}, .data = x, .nbytes = nx},
                       {.dtype = HS_DT_INT8, .ndim = 4, .dims = {1, 8, 3, 3}, .data = z, .nbytes = 72},
                       {.dtype = HS_DT_INT8, .ndim = 4, .dims = {1, 1, 3, 3}, .data = z, .nbytes = 9}};
    hs_tensor yr[2], yk[2];
    qrun(sr, in, 1, 2, 2, yr);
    qrun(sk, in, 3, 4, 2, yk);
    for (int o = 0; o < 2; o++) {
      assert_int_equal(yr[o].nbytes, yk[o].nbytes);
      assert_true(yr[o].nbytes > 0);
      if (memcmp(yr[o].data, yk[o].data, yr[o].nbytes))
        fail_msg("qconv output %d differs at b=%lld h=%lld w=%lld", o, (long long)b, (long long)h, (long long)w);
      free(yr[o].data);
      free(yk[o].data);
    }
    free(x);
    runs++;
  }
  printf("%d qconv runs: outputs with the weights released equal the ones with them kept, bit for bit\n", runs);
  assert_false(graph_holds(rel, "QW1") || graph_holds(rel, "QW2"));
  hs_engine_session_free(sr);
  hs_engine_session_free(sk);
  hs_engine_free(rel);
  hs_engine_free(kept);
}

static void test_gemm_alpha0(void **state) {
  (void)state;
  hs_engine_model *m = load("gemm_alpha0.onnx");
  hs_engine_session *s = NULL;
  hs_error err;
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  for (int64_t rows = 1; rows <= 64; rows *= 4) {
    float *a = random_floats((size_t)(rows * 64), (uint32_t)rows);
    hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {rows, 64}, .data = a,
                    .nbytes = sizeof(float) * (size_t)(rows * 64)};
    hs_tensor y;
    assert_int_equal(hs_engine_run(s, &in, 1, &y, 1, &err), 0);
    assert_int_equal(y.nbytes, sizeof(float) * (size_t)(rows * 8));
    for (int64_t i = 0; i < rows * 8; i++) assert_true(((const float *)y.data)[i] == (float)(i % 8) - 3.5f);
    free(a);
  }
  hs_engine_session_free(s);
  hs_engine_free(m);
}

/* hs_kernel_matmul_b: B back exactly, plain or transposed, batched, after more variants; refusals. */
static void test_kernel_gives_b_back(void **state) {
  (void)state;
  enum { M = 6, K = 48, N = 40 };
  float *b = random_floats(2 * K * N, 5);
  float *back = malloc(sizeof(float) * 2 * K * N);
  assert_non_null(back);
  hs_error err;
  for (int trans = 0; trans <= 1; trans++) {
    hs_matmul_params p = {.device = HS_KDEV_CPU, .ndim = 2, .a_dims = {M, K}, .b_dims = {K, N}, .trans_b = trans,
                          .alpha = 1.f, .b_const = b};
    hs_kernel *k = NULL;
    assert_int_equal(hs_kernel_matmul_create(&p, &k, &err), 0);
    assert_int_equal(hs_kernel_prepare_batch(k, 17, &err), 0); /* another row count: a variant */
    memset(back, 0, sizeof(float) * K * N);
    assert_int_equal(hs_kernel_matmul_b(k, back, sizeof(float) * K * N, &err), 0);
    assert_memory_equal(back, b, sizeof(float) * K * N);
    assert_int_equal(hs_kernel_matmul_b(k, back, sizeof(float) * K * N - 4, &err), HS_INVALID_ARGUMENT);
    hs_kernel_destroy(k);
  }
  hs_matmul_params p = {.device = HS_KDEV_CPU, .ndim = 3, .a_dims = {2, M, K}, .b_dims = {2, K, N}, .alpha = 1.f,
                        .b_const = b};
  hs_kernel *k = NULL;
  assert_int_equal(hs_kernel_matmul_create(&p, &k, &err), 0);
  memset(back, 0, sizeof(float) * 2 * K * N);
  assert_int_equal(hs_kernel_matmul_b(k, back, sizeof(float) * 2 * K * N, &err), 0);
  assert_memory_equal(back, b, sizeof(float) * 2 * K * N);
  hs_kernel_destroy(k);
  /* B given at run time: the kernel holds none */
  p.b_const = NULL;
  assert_int_equal(hs_kernel_matmul_create(&p, &k, &err), 0);
  assert_int_equal(hs_kernel_matmul_b(k, back, sizeof(float) * 2 * K * N, &err), HS_INVALID_ARGUMENT);
  hs_kernel_destroy(k);
  free(b);
  free(back);
}

/* y[r, n] = sum_k a[r, k] * B[k, n] + bias[n] in double, B given transposed ([N, K]) or not ([K, N]). */
static void reference(const float *a, const float *b, const float *bias, int trans, int rows, int K, int N, double *y) {
  for (int r = 0; r < rows; r++)
    for (int n = 0; n < N; n++) {
      double acc = bias[n];
      for (int k = 0; k < K; k++) acc += (double)a[r * K + k] * b[trans ? n * K + k : k * N + n];
      y[r * N + n] = acc;
    }
}

/* A lent B: read in place, answers as a copied one, handed over and freed by the kernel (see the header). */
static void test_lent_b_read_in_place(void **state) {
  (void)state;
  enum { K = 2048, N = 1000, RMAX = 7 };
  const size_t bbytes = sizeof(float) * K * N; /* 8 MB: ResNet-50's classifier */
  float *a = random_floats(RMAX * K, 11), *bias = random_floats(N, 12);
  float *y_lent = malloc(sizeof(float) * RMAX * N), *y_copy = malloc(sizeof(float) * RMAX * N);
  double *ref = malloc(sizeof(double) * RMAX * N);
  assert_non_null(y_lent);
  assert_non_null(y_copy);
  assert_non_null(ref);
  hs_error err;
  for (int trans = 0; trans <= 1; trans++) {
    float *b = random_floats((size_t)K * N, 13 + trans), *b_copy = malloc(bbytes);
    assert_non_null(b_copy);
    memcpy(b_copy, b, bbytes);
    hs_matmul_params p = {.device = HS_KDEV_CPU, .ndim = 2, .a_dims = {1, K}, .b_dims = {K, N}, .trans_b = trans,
                          .alpha = 1.f, .b_const = b, .b_lend = 1, .bias = bias, .bias_ndim = 1, .bias_dims = {N}};
    hs_kernel *lent = NULL, *copied = NULL;
    size_t rss0 = rss_bytes();
    assert_int_equal(hs_kernel_matmul_create(&p, &lent, &err), 0);
    size_t grown = rss_bytes() - rss0;
    assert_true(grown < bbytes / 4); /* a copy would add all of B */
    assert_int_equal(hs_kernel_weight_bytes(lent), 0); /* B is the caller's */
    p.b_const = b_copy;
    p.b_lend = 0;
    assert_int_equal(hs_kernel_matmul_create(&p, &copied, &err), 0);
    assert_true(hs_kernel_weight_bytes(copied) >= bbytes);
    assert_string_equal(hs_kernel_impl_name(lent), hs_kernel_impl_name(copied));
    free(b_copy); /* the copied kernel keeps its own */
    for (int rows = 1; rows <= RMAX; rows += rows < 2 ? 1 : 5) { /* 1, 2 (inner products) and 7 (a matmul) */
      const void *src[1] = {a};
      hs_kernel_args args = {.batch = rows, .src = src, .nsrc = 1, .dst = y_lent};
      size_t sb = hs_kernel_scratch_size(lent, rows);
      assert_true(sb != (size_t)-1 && sb == hs_kernel_scratch_size(copied, rows));
      void *scratch = sb ? malloc(sb) : NULL;
      args.scratch = scratch;
      assert_int_equal(hs_kernel_run(lent, &args, &err), 0);
      args.dst = y_copy;
      assert_int_equal(hs_kernel_run(copied, &args, &err), 0);
      free(scratch);
      assert_memory_equal(y_lent, y_copy, sizeof(float) * rows * N);
      reference(a, b, bias, trans, rows, K, N, ref);
      for (int i = 0; i < rows * N; i++) assert_true(fabs(y_lent[i] - ref[i]) < 1e-3);
    }
    assert_int_equal(hs_kernel_matmul_adopt_b(copied, b), 0); /* it holds its own: the caller keeps b */
    assert_int_equal(hs_kernel_matmul_adopt_b(lent, a), 0); /* not the B it reads */
    assert_int_equal(hs_kernel_matmul_adopt_b(lent, b), 1);
    assert_int_equal(hs_kernel_matmul_adopt_b(lent, b), 0); /* once */
    assert_true(hs_kernel_weight_bytes(lent) >= bbytes);
    float *back = malloc(bbytes);
    assert_non_null(back);
    memset(back, 0, bbytes);
    assert_int_equal(hs_kernel_matmul_b(lent, back, bbytes, &err), 0);
    assert_memory_equal(back, b, bbytes);
    free(back);
    hs_kernel_destroy(lent); /* frees b (ASan: no leak, no double free) */
    hs_kernel_destroy(copied);
  }
  free(a);
  free(bias);
  free(y_lent);
  free(y_copy);
  free(ref);
}

/* Bytes the heap holds now: the allocator's live bytes (ASan's own allocator under ASan, whose quarantine
 * keeps freed blocks out of the count; glibc's arenas and mmapped blocks otherwise), plus the weight
 * blocks in use (base/wblock.h: the kernels' reordered weights are mappings of their own). */
static size_t wblock_used_bytes(void) {
  size_t used = 0;
  hs_wblock_stats(NULL, &used);
  return used;
}
#if defined(__SANITIZE_ADDRESS__)
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_live_bytes(void) { return __sanitizer_get_current_allocated_bytes() + wblock_used_bytes(); }
#else
#include <malloc.h>
static size_t heap_live_bytes(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd + wblock_used_bytes();
}
#endif

/* The int8 kernels hold their weights once: creating one adds about one copy of them to the heap (the
 * reordered copy with its compensation terms), not two (it once kept a plain copy beside it for later
 * layouts and for reading B back). Variants for more row counts add none, and B still comes back exactly. */
static void test_int8_kernels_hold_weights_once(void **state) {
  (void)state;
  /* Without VNNI oneDNN halves int8 weights (scale_adjust), which no reorder undoes: there the kernel keeps its plain
   * copy too (cpu_dnnl.h, hs__weights_one_way), so up to two copies, never three */
  unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(), vnni = (unsigned)dnnl_cpu_isa_avx512_core_vnni;
  const size_t copies = (isa & vnni) == vnni ? 1 : 2;
  if (copies > 1) printf("no AVX-512 VNNI: the int8 kernels may keep a plain copy beside the reordered one\n");
  enum { K = 1024, N = 2048, OC = 512, IC = 512 };
  const size_t wb = (size_t)K * N, cwb = (size_t)OC * IC * 9;
  int8_t *b = malloc(wb), *back = malloc(wb), *cw = malloc(cwb);
  assert_true(b && back && cw);
  uint32_t r = 7;
  for (size_t i = 0; i < wb; i++) b[i] = (int8_t)((r = r * 1664525u + 1013904223u) >> 24);
  for (size_t i = 0; i < cwb; i++) cw[i] = (int8_t)((r = r * 1664525u + 1013904223u) >> 24);
  static float scale = 0.01f;
  hs_error err;
  /* u8 A with a zero point (asymmetric compensation), s8 A (s8s8 compensation), raw s32 sums */
  const hs_qmatmul_params cases[3] = {
      {.device = HS_KDEV_CPU, .src_type = HS_Q_U8, .dst_type = HS_Q_U8, .rows = 8, .k = K, .n = N, .weights = b,
       .scales = &scale, .nscales = 1, .src_zp = 3, .dst_zp = 128},
      {.device = HS_KDEV_CPU, .src_type = HS_Q_S8, .dst_type = HS_Q_F32, .rows = 8, .k = K, .n = N, .weights = b,
       .scales = &scale, .nscales = 1},
      {.device = HS_KDEV_CPU, .src_type = HS_Q_U8, .dst_s32 = 1, .rows = 8, .k = K, .n = N, .weights = b,
       .src_zp_runtime = 1}};
  for (int c = 0; c < 3; c++) {
    size_t before = heap_live_bytes();
    hs_kernel *k = NULL;
    assert_int_equal(hs_kernel_qmatmul_create(&cases[c], &k, &err), 0);
    for (int64_t rows = 1; rows <= 64; rows *= 4) assert_int_equal(hs_kernel_prepare_batch(k, rows, &err), 0);
    size_t grew = heap_live_bytes() - before, held = hs_kernel_weight_bytes(k);
    printf("qmatmul case %d (%s): B %zu bytes, the kernel holds %zu, the heap grew %zu\n", c, hs_kernel_impl_name(k), wb,
           held, grew);
    assert_true(held >= wb && held < copies * wb + wb / 4);
    assert_true(grew >= wb && grew < copies * wb + wb / 2);
    memset(back, 0, wb);
    assert_int_equal(hs_kernel_qmatmul_b(k, back, wb, &err), 0);
    assert_memory_equal(back, b, wb);
    hs_kernel_destroy(k);
  }
  hs_qconv_params qc = {.device = HS_KDEV_CPU, .src_layout = HS_LAYOUT_NHWC, .dst_layout = HS_LAYOUT_NHWC,
                        .src_type = HS_Q_U8, .dst_type = HS_Q_U8, .nsp = 2, .batch = 1, .in_c = IC, .out_c = OC,
                        .groups = 1, .in = {14, 14}, .out = {14, 14}, .kernel = {3, 3}, .stride = {1, 1},
                        .dilation = {1, 1}, .pad_begin = {1, 1}, .pad_end = {1, 1}, .weights = cw, .scales = &scale,
                        .nscales = 1, .src_zp = 5, .dst_zp = 128};
  size_t before = heap_live_bytes();
  hs_kernel *k = NULL;
  assert_int_equal(hs_kernel_qconv_create(&qc, &k, &err), 0);
  for (int64_t batch = 2; batch <= 8; batch *= 2) assert_int_equal(hs_kernel_prepare_batch(k, batch, &err), 0);
  size_t grew = heap_live_bytes() - before, held = hs_kernel_weight_bytes(k);
  printf("qconv (%s): weights %zu bytes, the kernel holds %zu, the heap grew %zu\n", hs_kernel_impl_name(k), cwb, held,
         grew);
  assert_true(held >= cwb && held < copies * cwb + cwb / 4);
  assert_true(grew >= cwb && grew < copies * cwb + cwb / 2);
  int8_t *cback = malloc(cwb);
  assert_non_null(cback);
  assert_int_equal(hs_kernel_qconv_weights(k, cback, cwb, &err), 0);
  assert_memory_equal(cback, cw, cwb);
  assert_int_equal(hs_kernel_qconv_weights(k, cback, cwb - 1, &err), HS_INVALID_ARGUMENT);
  hs_kernel_destroy(k);
  /* depthwise, 112 channels: batch 8 wants another layout than batch 1 here, reordered from variant 0's values */
  hs_qconv_params dw = qc;
  dw.in_c = dw.out_c = dw.groups = 112;
  dw.in[0] = dw.in[1] = dw.out[0] = dw.out[1] = 28;
  assert_int_equal(hs_kernel_qconv_create(&dw, &k, &err), 0);
  assert_int_equal(hs_kernel_prepare_batch(k, 8, &err), 0);
  memset(cback, 0, 112 * 9);
  assert_int_equal(hs_kernel_qconv_weights(k, cback, 112 * 9, &err), 0);
  assert_memory_equal(cback, cw, 112 * 9);
  printf("depthwise qconv (%s): the kernel holds %zu bytes for weights of %d\n", hs_kernel_impl_name(k),
         hs_kernel_weight_bytes(k), 112 * 9);
  hs_kernel_destroy(k);
  free(cback);
  free(b);
  free(back);
  free(cw);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kernel_gives_b_back),
      cmocka_unit_test(test_lent_b_read_in_place),
      cmocka_unit_test(test_int8_kernels_hold_weights_once),
      cmocka_unit_test(test_released_answers_as_kept),
      cmocka_unit_test(test_int8_released_answers_as_kept),
      cmocka_unit_test(test_qconv_released_answers_as_kept),
      cmocka_unit_test(test_gemm_alpha0),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

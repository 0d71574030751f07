/* test_matmul_consts.c - MatMul/Gemm hold B once: the graph's copy goes, and every path answers as before, bit for bit. */
/*
 * The models come from gen_matmul_consts.py: released.onnx, whose B are read by their MatMul/Gemm only, and
 * kept.onnx, the same nodes with each B also read by a Mul with a fourth input (a second reader keeps it in the graph).
 * Compiling released.onnx must free B1, B2 and B3 (their kernels hold them) and keep B4 (a Gemm with alpha
 * 0.5: its kernel holds 0.5 * B4). Both models then run the same inputs at many shapes on one session each:
 * row counts past a kernel's 8 variants and batched shapes past a node's 16 cached kernels reach the plain
 * path, which reads B back from the kernel; new batched shapes build kernels from B read back. Every output
 * must equal kept.onnx's bit for bit. The kernels interface: hs_kernel_matmul_b gives B back exactly.
 * qreleased.onnx / qkept.onnx do the same for the int8 kernel (QLinearMatMul with a uint8 and an int8 B,
 * MatMulInteger): B goes from the graph, and the answers at 25 shapes (row counts past the variants run as
 * batch-many products on a kernel built from B read back, or on the plain C with B read back) equal qkept.onnx's.
 * gemm_alpha0.onnx: a Gemm with alpha 0 and a constant B answers beta * C (it once ran A x B + C on the kernel).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "kernels/kernels.h"

static const char *g_dir;

enum { K1 = 128, K3 = 32, NOUT = 4 };

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
  hs_tensor o[NOUT + 4];
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
  assert_true(graph_holds(rel, "B4"));
  assert_true(graph_holds(rel, "C2"));
  assert_true(graph_holds(kept, "B1") && graph_holds(kept, "B2") && graph_holds(kept, "B3") && graph_holds(kept, "B4"));
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
      run(sk, 4, NOUT + 4, in, yk);
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
  assert_false(graph_holds(rel, "B1") || graph_holds(rel, "B2") || graph_holds(rel, "B3"));
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

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kernel_gives_b_back),
      cmocka_unit_test(test_released_answers_as_kept),
      cmocka_unit_test(test_int8_released_answers_as_kept),
      cmocka_unit_test(test_gemm_alpha0),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

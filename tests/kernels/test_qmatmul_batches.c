/* test_qmatmul_batches.c - a QLinearMatMul on the int8 kernel stays on it past the kernel's 8 row counts. */
/*
 * The model (check_qmatmul.py --write-batch-model) is one QLinearMatMul with A [batch, 4, 40] and a constant B.
 * One session runs it at batch sizes 1 to 12 in strict mode (HS_KERNELS_STRICT=1: a fall back to the plain C is an
 * error): the kernel keeps variants for 8 row counts, so batches 9 to 12 must run as batch-many [4, 40] products
 * (ops/quant.c). Every batch's output must equal, bit for bit, the outputs of each of its sequences run alone.
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

static const char *g_model;

enum { SEQ = 4, K = 40, N = 24, MAXB = 12 };

/* Runs session s on the first `batch` sequences of a into y (batch * SEQ * N bytes). */
static void run_batch(hs_engine_session *s, const uint8_t *a, int64_t batch, uint8_t *y) {
  hs_tensor in = {.dtype = HS_DT_UINT8, .ndim = 3, .dims = {batch, SEQ, K}, .data = (void *)a,
                  .nbytes = (size_t)(batch * SEQ * K)};
  hs_tensor out;
  hs_error err;
  int rc = hs_engine_run(s, &in, 1, &out, 1, &err);
  if (rc) fprintf(stderr, "batch %lld: %s\n", (long long)batch, err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(out.nbytes, (size_t)(batch * SEQ * N));
  memcpy(y, out.data, out.nbytes);
}

static void test_batches_past_the_variants(void **state) {
  (void)state;
  hs_engine_model *m = NULL;
  hs_engine_session *s = NULL;
  hs_error err;
  int rc = hs_engine_load(g_model, NULL, &m, &err);
  if (rc) fprintf(stderr, "load: %s\n", err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  static uint8_t a[MAXB * SEQ * K], alone[MAXB * SEQ * N], y[MAXB * SEQ * N];
  uint32_t r = 99;
  for (size_t i = 0; i < sizeof a; i++) {
    r = r * 1664525u + 1013904223u;
    a[i] = (uint8_t)(r >> 24);
  }
  for (int64_t b = 0; b < MAXB; b++) run_batch(s, a + b * SEQ * K, 1, alone + b * SEQ * N);
  for (int64_t batch = 2; batch <= MAXB; batch++) {
    run_batch(s, a, batch, y);
    assert_memory_equal(y, alone, (size_t)(batch * SEQ * N));
  }
  hs_engine_session_free(s);
  hs_engine_free(m);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_qmatmul_batches MODEL.onnx\n");
    return 2;
  }
  g_model = argv[1];
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batches_past_the_variants)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

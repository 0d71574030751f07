/* test_inplace.c - a Conv with a fused residual writes over the residual's buffer, with the bits of the copying plan. */
/*
 * The planner lets such a Conv's output take over its residual's arena block (engine/plan.c,
 * inplace_output), so the kernel's sum post-op accumulates where the residual lies instead of
 * copying it first. For each model and batch: a plan built with that choice on must count the
 * expected number of in-place outputs (every fused residual of ResNet-50, 16; of MobileNetV2, 10)
 * and a plan with HS_PLAN_INPLACE=0 none, and a whole run with each (fresh compile, fresh session)
 * must give bit-equal outputs.
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
#include "engine/plan.h"

static const char *g_dir;

/* A fixed pseudo-random [batch, 3, 224, 224] input (caller frees data). */
static hs_tensor make_input(int64_t batch) {
  size_t n = (size_t)batch * 3 * 224 * 224;
  float *x = malloc(n * sizeof(float));
  assert_non_null(x);
  uint32_t s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
  }
  return (hs_tensor){.dtype = HS_DT_FLOAT32, .ndim = 4, .dims = {batch, 3, 224, 224}, .data = x,
                     .nbytes = n * sizeof(float)};
}

/* Compiles the model with the planner's in-place choice on or off, checks how many outputs a plan
 * for these input shapes takes in place, runs it once and returns a copy of output 0. */
static float *run_once(const char *file, const hs_tensor *in, int inplace, int want_inplace, size_t *nbytes) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", g_dir, file);
  if (inplace) unsetenv("HS_PLAN_INPLACE");
  else setenv("HS_PLAN_INPLACE", "0", 1);
  hs_engine_model *m = NULL;
  hs_error err;
  int rc = hs_engine_load(path, NULL, &m, &err);
  if (rc) fprintf(stderr, "load %s: %s\n", path, err.message);
  assert_int_equal(rc, 0);

  hs_tensor shape = *in;
  shape.data = NULL;
  hs_plan *p = NULL;
  rc = hs_plan_build(m, &shape, 0, &p, &err);
  if (rc) fprintf(stderr, "plan: %s\n", err.message);
  assert_int_equal(rc, 0);
  printf("%s batch %lld, in place %s: %d outputs over a residual, arena %zu bytes\n", file, (long long)in->dims[0],
         inplace ? "on" : "off", hs_plan_inplace_count(p), hs_plan_arena_bytes(p));
  assert_int_equal(hs_plan_inplace_count(p), inplace ? want_inplace : 0);
  hs_plan_free(p);

  hs_engine_session *ses = NULL;
  assert_int_equal(hs_engine_session_create(m, &ses, &err), 0);
  hs_tensor o;
  rc = hs_engine_run(ses, in, 1, &o, 1, &err);
  if (rc) fprintf(stderr, "run: %s\n", err.message);
  assert_int_equal(rc, 0);
  float *copy = malloc(o.nbytes);
  assert_non_null(copy);
  memcpy(copy, o.data, o.nbytes);
  *nbytes = o.nbytes;
  hs_engine_session_free(ses);
  hs_engine_free(m);
  unsetenv("HS_PLAN_INPLACE");
  return copy;
}

static void check(const char *file, int64_t batch, int want_inplace) {
  hs_tensor in = make_input(batch);
  size_t n_on = 0, n_off = 0;
  float *on = run_once(file, &in, 1, want_inplace, &n_on);
  float *off = run_once(file, &in, 0, want_inplace, &n_off);
  assert_int_equal(n_on, n_off);
  assert_true(n_on >= (size_t)batch * 1000 * sizeof(float)); /* 1000 classes per image */
  assert_memory_equal(on, off, n_on);
  free(on);
  free(off);
  free(in.data);
}

static void resnet50_b1(void **state) {
  (void)state;
  check("resnet50_dyn.onnx", 1, 16);
}
static void resnet50_b8(void **state) {
  (void)state;
  check("resnet50_dyn.onnx", 8, 16);
}
static void mobilenet_v2_b1(void **state) {
  (void)state;
  check("mobilenet_v2_dyn.onnx", 1, 10);
}
static void mobilenet_v2_b8(void **state) {
  (void)state;
  check("mobilenet_v2_dyn.onnx", 8, 10);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_CACHE_DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(resnet50_b1),
      cmocka_unit_test(resnet50_b8),
      cmocka_unit_test(mobilenet_v2_b1),
      cmocka_unit_test(mobilenet_v2_b8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

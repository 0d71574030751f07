/* test_infer.c - hs_serving_infer on a real repository and the real engine: the version that answers,
 * a request that holds its version and stays in flight until its result is freed, every refusal
 * with its status, and the accounting in the model's counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <stdatomic.h>

#include "serving/infer.h"

static const char *g_make_model; /* tools/testmodels/make_test_model.py */
static char g_root[256];

static void sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  assert_int_equal(system(cmd), 0);
}

/* Version v of model "m": y = x + v, x FP32 [1,4]. */
static void put_version(int v) {
  sh("set -e; d=$(mktemp -d %s.scratch.XXXXXX); /usr/bin/python3 %s $d/model.onnx --add %d --shape 1,4; "
     "mkdir -p %s/m; mv $d %s/m/%d",
     g_root, g_make_model, v, g_root, g_root, v);
}

static uint64_t count(hs_model *m, int64_t version, hs_outcome o) {
  for (hs_version_counter *c = atomic_load(&hs_model_metrics_get(m)->requests); c; c = c->next)
    if (c->version == version) return atomic_load(&c->outcome[o]);
  return 0;
}

static float g_x[4] = {1, 2, 3, 4};

static hs_named_tensor x_input(void) {
  return (hs_named_tensor){"x", {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {1, 4}, .data = g_x, .nbytes = sizeof g_x}};
}

/* Runs one request that must fail with want; returns the message. */
static void expect_refusal(hs_model *m, int64_t version, const hs_infer_inputs *in, int want, const char *text) {
  hs_infer_result res;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_serving_infer(m, version, in, &res, &err), want);
  assert_int_equal(res.n_outputs, 0);
  assert_null(res.outputs);
  if (!strstr(err.message, text)) fail_msg("\"%s\" lacks \"%s\"", err.message, text);
  hs_infer_result_free(&res);
}

static void infer_and_refusals(void **state) {
  (void)state;
  put_version(3);
  hs_registry_options o = {.root = g_root, .settle_ms = 0, .instances = 1, .threads = 1, .watch = false};
  hs_registry *r = NULL;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_registry_create(&o, &r, &err), HS_OK);
  hs_model *m = hs_registry_find(r, "m");
  assert_non_null(m);

  hs_named_tensor x = x_input();
  hs_infer_inputs in = {.inputs = &x, .n_inputs = 1};
  hs_infer_result res;
  assert_int_equal(hs_serving_infer(m, -1, &in, &res, &err), HS_OK);
  assert_int_equal(res.version, 3);
  assert_int_equal(res.n_outputs, 1);
  assert_string_equal(res.names[0], "y");
  assert_int_equal(res.outputs[0].nbytes, sizeof g_x);
  assert_int_equal(res.outputs[0].ndim, 2);

  /* version 4 replaces 3; the request is not over until its result is freed: it still holds
   * version 3 (live), is still in flight, and counts as a success only then */
  put_version(4);
  assert_int_equal(hs_registry_rescan_sync(r, &err), HS_OK);
  assert_int_equal(atomic_load(&hs_registry_metrics_get(r)->versions_live), 2);
  assert_int_equal(atomic_load(&hs_model_metrics_get(m)->inflight), 1);
  assert_int_equal(count(m, 3, HS_OUTCOME_SUCCESS), 0);
  for (int i = 0; i < 4; i++) assert_true(((const float *)res.outputs[0].data)[i] == g_x[i] + 3.0f);
  hs_infer_result_free(&res);
  assert_null(res.outputs);
  assert_int_equal(count(m, 3, HS_OUTCOME_SUCCESS), 1);
  assert_int_equal(atomic_load(&hs_model_metrics_get(m)->inflight), 0);
  for (int i = 0; i < 1000 && atomic_load(&hs_registry_metrics_get(r)->versions_live) != 1; i++) usleep(10000);
  assert_int_equal(atomic_load(&hs_registry_metrics_get(r)->versions_live), 1); /* version 3 freed */

  /* an explicit version, outputs asked by name (a repeated name beyond the model's count is dropped) */
  const char *const want_y[] = {"y", "y"};
  hs_infer_inputs named = {.inputs = &x, .n_inputs = 1, .outputs = want_y, .n_outputs = 2};
  assert_int_equal(hs_serving_infer(m, 4, &named, &res, &err), HS_OK);
  assert_int_equal(res.version, 4);
  assert_int_equal(res.n_outputs, 1);
  for (int i = 0; i < 4; i++) assert_true(((const float *)res.outputs[0].data)[i] == g_x[i] + 4.0f);
  hs_infer_result_free(&res);
  assert_int_equal(count(m, 4, HS_OUTCOME_SUCCESS), 1);

  expect_refusal(m, 3, &in, HS_NOT_FOUND, "model m has no version 3 loaded");
  hs_infer_inputs none = {.n_inputs = 0};
  expect_refusal(m, -1, &none, HS_INVALID_ARGUMENT, "input x is missing");
  hs_named_tensor bad = x;
  bad.name = "z";
  hs_infer_inputs wrong_name = {.inputs = &bad, .n_inputs = 1};
  expect_refusal(m, -1, &wrong_name, HS_INVALID_ARGUMENT, "input z is not an input of model m");
  hs_named_tensor two[2] = {x, bad};
  hs_infer_inputs extra = {.inputs = two, .n_inputs = 2};
  expect_refusal(m, -1, &extra, HS_INVALID_ARGUMENT, "input z is not an input of model m");
  bad = x;
  bad.t.dtype = HS_DT_INT32;
  hs_infer_inputs wrong_type = {.inputs = &bad, .n_inputs = 1};
  expect_refusal(m, -1, &wrong_type, HS_INVALID_ARGUMENT, "datatype INT32, the model expects FP32");
  bad = x;
  bad.t.dims[0] = 2;
  bad.t.dims[1] = 2;
  hs_infer_inputs wrong_shape = {.inputs = &bad, .n_inputs = 1};
  expect_refusal(m, -1, &wrong_shape, HS_INVALID_ARGUMENT, "shape [2,2] does not match the model's [1,4]");
  const char *const want_q[] = {"q"};
  hs_infer_inputs wrong_out = {.inputs = &x, .n_inputs = 1, .outputs = want_q, .n_outputs = 1};
  expect_refusal(m, -1, &wrong_out, HS_INVALID_ARGUMENT, "output q is not an output of model m");
  /* all but the first refusal got version 4; the first got none */
  assert_int_equal(count(m, 4, HS_OUTCOME_CLIENT_ERROR), 6);
  assert_int_equal(count(m, -1, HS_OUTCOME_CLIENT_ERROR), 1);

  /* nothing serving: unavailable, a server-side error; a refused request counts as asked */
  assert_int_equal(hs_registry_unload_model(r, "m", &err), HS_OK);
  expect_refusal(m, -1, &in, HS_UNAVAILABLE, "model m has no version ready");
  assert_int_equal(count(m, -1, HS_OUTCOME_SERVER_ERROR), 1);
  hs_serving_count_refused(m, HS_OUTCOME_CLIENT_ERROR, 0);
  assert_int_equal(count(m, -1, HS_OUTCOME_CLIENT_ERROR), 2);
  assert_int_equal(atomic_load(&hs_model_metrics_get(m)->inflight), 0);
  hs_registry_destroy(r);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_infer path/to/make_test_model.py\n");
    return 2;
  }
  g_make_model = argv[1];
  snprintf(g_root, sizeof g_root, "/tmp/hs-infer-XXXXXX");
  if (!mkdtemp(g_root)) return 1;
  const struct CMUnitTest tests[] = {cmocka_unit_test(infer_and_refusals)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
  return rc;
}

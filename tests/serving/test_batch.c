/* test_batch.c - dynamic batching: config.json validation, the gatherer's "run now" decision, and
 * concurrent hs_serving_infer calls on the real engine that are gathered into batches and each get
 * their own rows back (a request larger than max_batch_size runs alone), and a swap that closes the
 * open batch of the version it retires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "repo/repo.h"
#include "serving/batch.h"
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

static int parse(const char *text, hs_model_config *c, hs_error *err) {
  hs_error_clear(err);
  return hs_repo_parse_config(text, strlen(text), c, err);
}

static void expect_parse_error(const char *text, const char *want) {
  hs_model_config c;
  hs_error err;
  assert_int_equal(parse(text, &c, &err), HS_PARSE);
  if (!strstr(err.message, want)) fail_msg("\"%s\" lacks \"%s\"", err.message, want);
  assert_int_equal(c.max_batch_size, 0); /* a refused config leaves the defaults */
  assert_false(c.dynamic_batching);
}

static void config_validation(void **state) {
  (void)state;
  hs_model_config c;
  hs_error err;
  assert_int_equal(parse("{}", &c, &err), HS_OK);
  assert_int_equal(c.max_batch_size, 0);
  assert_false(c.dynamic_batching);
  assert_int_equal(parse("{\"max_batch_size\": 8, \"dynamic_batching\": {\"preferred_batch_size\": [4, 8], "
                         "\"max_queue_delay_microseconds\": 500}}",
                         &c, &err),
                   HS_OK);
  assert_int_equal(c.max_batch_size, 8);
  assert_true(c.dynamic_batching);
  assert_int_equal(c.n_preferred, 2);
  assert_int_equal(c.preferred_batch_size[0], 4);
  assert_int_equal(c.preferred_batch_size[1], 8);
  assert_int_equal(c.max_queue_delay_us, 500);
  assert_int_equal(parse("{\"max_batch_size\": 4, \"dynamic_batching\": {}}", &c, &err), HS_OK);
  assert_true(c.dynamic_batching);
  assert_int_equal(c.max_queue_delay_us, 0);
  assert_int_equal(parse("{\"max_batch_size\": 4}", &c, &err), HS_OK); /* no dynamic_batching: off */
  assert_false(c.dynamic_batching);

  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": {\"preferred_batch_size\": [4, 16]}}",
                     "preferred_batch_size[1] must be an integer from 1 to max_batch_size (8)");
  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": {\"preferred_batch_size\": [0]}}",
                     "preferred_batch_size[0]");
  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": {\"preferred_batch_size\": 4}}",
                     "preferred_batch_size must be an array");
  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": {\"max_queue_delay_microseconds\": 1000001}}",
                     "max_queue_delay_microseconds must be an integer from 0 to 1000000");
  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": {\"max_queue_delay_microseconds\": -1}}",
                     "max_queue_delay_microseconds");
  expect_parse_error("{\"dynamic_batching\": {}}", "dynamic_batching needs max_batch_size from 1 to 1024 (it is 0)");
  expect_parse_error("{\"max_batch_size\": 0, \"dynamic_batching\": {}}", "dynamic_batching needs max_batch_size");
  expect_parse_error("{\"max_batch_size\": 2000}", "max_batch_size must be an integer from 0 to 1024");
  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": []}", "dynamic_batching must be an object");
  expect_parse_error("{\"max_batch_size\": 8, \"dynamic_batching\": {\"priority_levels\": 2}}",
                     "dynamic_batching: unknown field 'priority_levels'");
}

static void full_decision(void **state) {
  (void)state;
  int pref[2] = {4, 8};
  assert_false(hs_batch_full(pref, 2, 8, 1));
  assert_false(hs_batch_full(pref, 2, 8, 3));
  assert_true(hs_batch_full(pref, 2, 8, 4));
  assert_false(hs_batch_full(pref, 2, 8, 5));
  assert_true(hs_batch_full(pref, 2, 8, 8));
  assert_true(hs_batch_full(NULL, 0, 6, 6)); /* no preferred sizes: only the maximum */
  assert_false(hs_batch_full(NULL, 0, 6, 5));
}

#define N_CLIENTS 8

typedef struct client {
  hs_model *m;
  float x[4];
  int rc;
  int64_t version;
  float y[4];
  size_t nbytes;
  uint32_t batch;
} client;

static void *run_client(void *arg) {
  client *c = arg;
  hs_named_tensor t = {"x", {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {1, 4}, .data = c->x, .nbytes = sizeof c->x}};
  hs_infer_inputs in = {.inputs = &t, .n_inputs = 1};
  hs_infer_result res;
  hs_error err;
  hs_error_clear(&err);
  c->rc = hs_serving_infer(c->m, -1, &in, &res, &err);
  if (c->rc == HS_OK) {
    c->version = res.version;
    c->nbytes = res.outputs[0].nbytes;
    c->batch = res.batch_size;
    if (c->nbytes == sizeof c->y) memcpy(c->y, res.outputs[0].data, sizeof c->y);
  }
  hs_infer_result_free(&res);
  return NULL;
}

/* Eight concurrent requests on a model with one session, a slow run and a long delay: they are
 * gathered into batches, each gets exactly x + 5 for its own x, and the rows add up. */
static void gathered_on_the_engine(void **state) {
  (void)state;
  sh("set -e; mkdir -p %s/b/1; /usr/bin/python3 %s %s/b/1/model.onnx --add 5 --shape=-1,4 --slow 8; "
     "printf '%%s' '{\"instances\": 1, \"max_batch_size\": 8, \"dynamic_batching\": "
     "{\"preferred_batch_size\": [8], \"max_queue_delay_microseconds\": 200000}}' > %s/b/config.json",
     g_root, g_make_model, g_root, g_root);
  hs_registry_options o = {.root = g_root, .settle_ms = 0, .instances = 2, .threads = 1, .watch = false};
  hs_registry *r = NULL;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_registry_create(&o, &r, &err), HS_OK);
  hs_model *m = hs_registry_find(r, "b");
  assert_non_null(m);

  client cs[N_CLIENTS];
  pthread_t th[N_CLIENTS];
  for (int i = 0; i < N_CLIENTS; i++) {
    memset(&cs[i], 0, sizeof cs[i]);
    cs[i].m = m;
    for (int k = 0; k < 4; k++) cs[i].x[k] = (float)(i * 10 + k);
    assert_int_equal(pthread_create(&th[i], NULL, run_client, &cs[i]), 0);
  }
  for (int i = 0; i < N_CLIENTS; i++) pthread_join(th[i], NULL);
  uint32_t biggest = 0;
  for (int i = 0; i < N_CLIENTS; i++) {
    assert_int_equal(cs[i].rc, HS_OK);
    assert_int_equal(cs[i].version, 1);
    assert_int_equal(cs[i].nbytes, sizeof cs[i].y);
    for (int k = 0; k < 4; k++) assert_true(cs[i].y[k] == cs[i].x[k] + 5.0f);
    assert_in_range(cs[i].batch, 1, 8);
    if (cs[i].batch > biggest) biggest = cs[i].batch;
  }
  assert_true(biggest > 1);
  const hs_batch_stats *bs = &hs_model_metrics_get(m)->batch;
  uint64_t cum[HS_BATCH_BUCKETS + 1], sum;
  hs_batch_stats_read(bs, cum, &sum);
  assert_int_equal(sum, N_CLIENTS);               /* every row ran exactly once */
  assert_true(cum[HS_BATCH_BUCKETS] < N_CLIENTS); /* in fewer runs than requests */

  /* 9 rows: more than max_batch_size, so it runs alone, not through the batcher */
  float big[9][4];
  for (int i = 0; i < 9; i++)
    for (int k = 0; k < 4; k++) big[i][k] = (float)(i - k);
  hs_named_tensor t = {"x", {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {9, 4}, .data = big, .nbytes = sizeof big}};
  hs_infer_inputs in = {.inputs = &t, .n_inputs = 1};
  hs_infer_result res;
  assert_int_equal(hs_serving_infer(m, -1, &in, &res, &err), HS_OK);
  assert_int_equal(res.batch_size, 1);
  assert_int_equal(res.outputs[0].dims[0], 9);
  const float *y = res.outputs[0].data;
  for (int i = 0; i < 9; i++)
    for (int k = 0; k < 4; k++) assert_true(y[i * 4 + k] == big[i][k] + 5.0f);
  hs_infer_result_free(&res);
  hs_batch_stats_read(bs, cum, &sum);
  assert_int_equal(sum, N_CLIENTS); /* not counted as a batch */
  hs_registry_destroy(r);
}

typedef struct swap_client {
  hs_model *m;
  int rc;
  int64_t version;
  uint64_t queue_ns;
} swap_client;

static void *run_swap_client(void *arg) {
  swap_client *c = arg;
  static float x[4] = {1, 2, 3, 4};
  hs_named_tensor t = {"x", {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {1, 4}, .data = x, .nbytes = sizeof x}};
  hs_infer_inputs in = {.inputs = &t, .n_inputs = 1};
  hs_infer_result res;
  hs_error err;
  hs_error_clear(&err);
  c->rc = hs_serving_infer(c->m, -1, &in, &res, &err);
  c->version = res.version;
  c->queue_ns = res.queue_ns;
  hs_infer_result_free(&res);
  return NULL;
}

/* A swap closes the open batch: a request gathering on version 1 (1 s delay, nobody else coming)
 * runs on version 1 as soon as version 2 is published, long before its delay is over. */
static void swap_closes_open_batch(void **state) {
  (void)state;
  char root[300];
  snprintf(root, sizeof root, "%s/swap", g_root);
  /* version 2 is made beforehand (python is slow to start) and only moved in during the test */
  sh("set -e; mkdir -p %s/s/1 %s/v2; /usr/bin/python3 %s %s/s/1/model.onnx --add 1 --shape=-1,4; "
     "/usr/bin/python3 %s %s/v2/model.onnx --add 2 --shape=-1,4; "
     "printf '%%s' '{\"max_batch_size\": 8, \"dynamic_batching\": {\"max_queue_delay_microseconds\": 1000000}}' "
     "> %s/s/config.json",
     root, g_root, g_make_model, root, g_make_model, g_root, root);
  hs_registry_options o = {.root = root, .settle_ms = 0, .instances = 1, .threads = 1, .watch = false};
  hs_registry *r = NULL;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_registry_create(&o, &r, &err), HS_OK);
  hs_model *m = hs_registry_find(r, "s");
  assert_non_null(m);
  hs_version *v1 = NULL;
  assert_int_equal(hs_model_acquire(m, -1, &v1), HS_OK);
  assert_non_null(hs_version_batcher(v1));

  swap_client c = {.m = m};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_swap_client, &c), 0);
  for (int i = 0; i < 5000 && hs_batcher_open_requests(hs_version_batcher(v1)) == 0; i++) usleep(1000);
  assert_int_equal(hs_batcher_open_requests(hs_version_batcher(v1)), 1); /* gathering on version 1 */
  sh("mv %s/v2 %s/s/2", g_root, root);
  assert_int_equal(hs_registry_rescan_sync(r, &err), HS_OK);
  pthread_join(th, NULL);
  assert_int_equal(c.rc, HS_OK);
  assert_int_equal(c.version, 1);
  assert_true(c.queue_ns < 1000000000u); /* it did not wait out its delay */
  assert_int_equal(hs_batcher_open_requests(hs_version_batcher(v1)), 0);
  hs_version_release(v1);
  hs_registry_destroy(r);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_batch path/to/make_test_model.py\n");
    return 2;
  }
  g_make_model = argv[1];
  snprintf(g_root, sizeof g_root, "/tmp/hs-batch-XXXXXX");
  if (!mkdtemp(g_root)) return 1;
  const struct CMUnitTest tests[] = {cmocka_unit_test(config_validation), cmocka_unit_test(full_decision),
                                     cmocka_unit_test(gathered_on_the_engine),
                                     cmocka_unit_test(swap_closes_open_batch)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
  return rc;
}

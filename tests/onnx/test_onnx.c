/* test_onnx.c - the ONNX front end and engine on generated models: every case against numpy's
 * answer, hostile models rejected with a clear error, truncated and corrupted bytes never crash. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "case_util.h"
#include "hotserve/backend.h"
#include "engine/engine.h"
#include "onnx/onnx.h"
#include "ops/ops.h"

static int run_case(const char *dir) {
  const hs_backend *be = hs_backend_onnx_cpu();
  char path[1024];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  hs_backend_model *m = NULL;
  hs_backend_session *s = NULL;
  hs_error err;
  hs_tensor in[16], exp[16], out[16];
  int ni = load_npys(dir, "input", in, 16), ne = load_npys(dir, "expected", exp, 16), bad = 0;
  if (be->load(path, NULL, &m, &err)) {
    fprintf(stderr, "%s: %s\n", dir, err.message);
    bad = 1;
    goto done;
  }
  if ((size_t)ni != be->num_inputs(m) || (size_t)ne != be->num_outputs(m)) {
    fprintf(stderr, "%s: model has %zu inputs / %zu outputs, case has %d / %d\n", dir, be->num_inputs(m),
            be->num_outputs(m), ni, ne);
    bad = 1;
    goto done;
  }
  if (be->session_create(m, &s, &err)) {
    bad = 1;
    goto done;
  }
  for (int rep = 0; rep < 2 && !bad; rep++) { /* the second run reuses the cached plan */
    if (be->run(s, in, (size_t)ni, out, (size_t)ne, &err)) {
      fprintf(stderr, "%s: run: %s\n", dir, err.message);
      bad = 1;
      break;
    }
    for (int k = 0; k < ne; k++) bad |= compare_tensors(dir, &out[k], &exp[k]);
  }
done:
  if (s) be->session_free(s);
  if (m) be->free_model(m);
  free_tensors(in, ni);
  free_tensors(exp, ne);
  return bad;
}

static void test_generated_cases(void **state) {
  (void)state;
  DIR *d = opendir(HS_CASES_DIR "/cases");
  assert_non_null(d);
  struct dirent *e;
  int n = 0, failed = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/cases/%s", HS_CASES_DIR, e->d_name);
    int bad = run_case(dir);
    printf("%-28s %s\n", e->d_name, bad ? "FAIL" : "ok");
    failed += bad;
    n++;
  }
  closedir(d);
  assert_true(n >= 20);
  assert_int_equal(failed, 0);
}

static void test_hostile_models(void **state) {
  (void)state;
  DIR *d = opendir(HS_CASES_DIR "/hostile");
  assert_non_null(d);
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".onnx") != 0) continue;
    char path[1024], expect_path[1024], expect[256] = {0};
    snprintf(path, sizeof path, "%s/hostile/%s", HS_CASES_DIR, e->d_name);
    snprintf(expect_path, sizeof expect_path, "%s/hostile/%.*s.expect", HS_CASES_DIR, (int)(len - 5), e->d_name);
    FILE *f = fopen(expect_path, "r");
    assert_non_null(f);
    size_t got = fread(expect, 1, sizeof expect - 1, f);
    expect[got] = 0;
    fclose(f);
    hs_backend_model *m = NULL;
    hs_error err;
    hs_error_clear(&err);
    int rc = hs_backend_onnx_cpu()->load(path, NULL, &m, &err);
    printf("%-24s -> %s\n", e->d_name, err.message);
    assert_true(rc < 0);
    assert_null(m);
    assert_non_null(strstr(err.message, expect));
    n++;
  }
  closedir(d);
  assert_true(n >= 14);
}

/* Decodes and compiles a byte image; any outcome but a crash or leak is acceptable. */
static int try_bytes(const void *buf, size_t len) {
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  int rc = hs_onnx_decode_model(buf, len, NULL, &g, &err);
  if (rc) {
    hs_graph_free(&g);
    return rc;
  }
  hs_engine_model *m = NULL;
  rc = hs_engine_compile(&g, NULL, &m, &err);
  if (rc == 0) hs_engine_free(m);
  return rc;
}

static void test_truncated_and_corrupted(void **state) {
  (void)state;
  void *buf;
  size_t len;
  hs_error err;
  assert_int_equal(hs_read_file(HS_CASES_DIR "/cases/dyn_batch_mlp/model.onnx", 0, &buf, &len, &err), 0);
  assert_int_equal(try_bytes(buf, len), 0);
  int failures = 0;
  for (size_t cut = 0; cut < len; cut++) failures += try_bytes(buf, cut) != 0;
  assert_true(failures > 0); /* most prefixes are not valid models */
  unsigned char *copy = malloc(len);
  assert_non_null(copy);
  uint32_t seed = 12345;
  for (int round = 0; round < 3000; round++) {
    memcpy(copy, buf, len);
    for (int k = 0; k < 1 + round % 4; k++) {
      seed = seed * 1103515245u + 12345u;
      size_t at = (seed >> 8) % len;
      seed = seed * 1103515245u + 12345u;
      copy[at] = (unsigned char)(seed >> 16);
    }
    try_bytes(copy, len);
  }
  free(copy);
  free(buf);
}

/* Liveness: ten 256 KiB intermediates fit in a few buffers, and the plan is reused across runs. */
static void test_memory_plan_reuses_buffers(void **state) {
  (void)state;
  hs_engine_model *m;
  hs_error err;
  assert_int_equal(hs_engine_load(HS_CASES_DIR "/cases/relu_chain/model.onnx", NULL, &m, &err), 0);
  const size_t one = 256 * 256 * sizeof(float);
  printf("relu_chain: arena %zu bytes for 10 values of %zu\n", m->planned_bytes, one);
  assert_true(m->planned_bytes >= 2 * one); /* an input and an output buffer at least */
  assert_true(m->planned_bytes <= 3 * one); /* never one buffer per value */
  hs_engine_free(m);
}

/* Shape arithmetic on a dynamic batch is folded while planning; other batch sizes work too. */
static void test_dynamic_shape_arithmetic(void **state) {
  (void)state;
  hs_engine_model *m;
  hs_engine_session *s;
  hs_error err;
  assert_int_equal(hs_engine_load(HS_CASES_DIR "/cases/dyn_shape_arith/model.onnx", NULL, &m, &err), 0);
  assert_int_equal(m->inputs[0].dims[0], -1);
  assert_int_equal(m->outputs[0].dims[0], 8);
  assert_int_equal(m->outputs[0].dims[1], -1);
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  for (int b = 1; b <= 6; b++) {
    float x[6 * 12];
    for (int i = 0; i < b * 12; i++) x[i] = (float)i;
    hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 3, .dims = {b, 3, 4}, .data = x, .nbytes = (size_t)b * 48};
    hs_tensor out;
    assert_int_equal(hs_engine_run(s, &in, 1, &out, 1, &err), 0);
    assert_int_equal(out.ndim, 2);
    assert_int_equal(out.dims[0], 8);
    assert_int_equal(out.dims[1], b);
    for (int r = 0; r < 8; r++)
      for (int c = 0; c < b; c++) assert_float_equal(((float *)out.data)[r * b + c], (float)(c * 12 + r + 2), 0);
  }
  hs_engine_session_free(s);
  hs_engine_free(m);
}

/* An If on a constant condition is gone after compiling: its live branch runs as part of the planned main graph
 * (the model is not dynamic, no subgraph is compiled), and the dead branch, which holds an op the engine does not
 * know, never reached the compiler (with the condition an input, the same model is refused: hostile/
 * if_runtime_cond_unknown_op). */
static void test_const_if_folded(void **state) {
  (void)state;
  hs_engine_model *m = NULL;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_engine_load(HS_CASES_DIR "/cases/if_const_cond/model.onnx", NULL, &m, &err), 0);
  assert_int_equal(m->dynamic, 0);
  assert_int_equal(m->n_subs, 0);
  for (int oi = 0; oi < m->g.n_order; oi++) assert_int_not_equal(m->g.nodes[m->g.order[oi]].op, HS_OP_If);
  hs_engine_free(m);
}

/* A Scan's body is a compiled model of its own, planned once for the shapes every iteration sees: after two runs
 * of four iterations each, the session's body session holds exactly one plan and never ran node by node; the main
 * graph (it holds the Scan) is dynamic. Outputs match numpy's on both runs. */
static void test_subgraph_planned_once(void **state) {
  (void)state;
  const char *dir = HS_CASES_DIR "/cases/scan_axes_directions";
  hs_engine_model *m = NULL;
  hs_engine_session *s = NULL;
  hs_error err;
  hs_tensor in[4], want[4], out[4];
  assert_int_equal(hs_engine_load(HS_CASES_DIR "/cases/scan_axes_directions/model.onnx", NULL, &m, &err), 0);
  assert_int_equal(m->dynamic, 1);
  assert_int_equal(m->n_subs, 1);
  assert_int_equal(m->subs[0]->dynamic, 0);
  int n_in = load_npys(dir, "input", in, 4), n_want = load_npys(dir, "expected", want, 4);
  assert_int_equal(n_in, 2);
  assert_int_equal(n_want, 3);
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  for (int r = 0; r < 2; r++) {
    assert_int_equal(hs_engine_run(s, in, 2, out, 3, &err), 0);
    for (int k = 0; k < 3; k++) assert_int_equal(compare_tensors("scan output", &out[k], &want[k]), 0);
  }
  assert_non_null(s->subs[0]);
  int plans = 0;
  for (int i = 0; i < HS_PLAN_CACHE; i++) plans += s->subs[0]->plans[i] != NULL;
  assert_int_equal(plans, 1);
  assert_null(s->subs[0]->eager);
  free_tensors(in, n_in);
  free_tensors(want, n_want);
  hs_engine_session_free(s);
  hs_engine_free(m);
}

/* A Loop that never ends (no trip count, a condition that stays true) is refused with HS_LIMIT once it passes
 * hs_loop_limit_iterations (2^20 by default; lowered here so the test is quick), and the session still runs. */
static void test_loop_iteration_limit(void **state) {
  (void)state;
  hs_engine_model *m = NULL;
  hs_engine_session *s = NULL;
  hs_error err;
  assert_int_equal(hs_loop_limit_iterations, (int64_t)1 << 20);
  assert_int_equal(hs_engine_load(HS_CASES_DIR "/runtime/loop_forever.onnx", NULL, &m, &err), 0);
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  float x[2] = {1, 2};
  hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 1, .dims = {2}, .data = x, .nbytes = sizeof x}, out;
  hs_loop_limit_iterations = 1000;
  for (int r = 0; r < 2; r++) {
    hs_error_clear(&err);
    assert_int_equal(hs_engine_run(s, &in, 1, &out, 1, &err), HS_LIMIT);
    assert_non_null(strstr(err.message, "more than 1000 iterations"));
  }
  hs_loop_limit_iterations = (int64_t)1 << 20;
  hs_engine_session_free(s);
  hs_engine_free(m);
}

/* One compiled model with control flow, four threads, each with its own session (whose body sessions and
 * node-by-node buffers are its own): every run of every thread gives numpy's answers. */
typedef struct {
  const hs_engine_model *m;
  const hs_tensor *in, *want;
  int n_in, n_out, bad;
} ctl_thread;

static void *ctl_thread_main(void *arg) {
  ctl_thread *t = arg;
  hs_engine_session *s = NULL;
  hs_error err;
  hs_tensor out[4];
  if (hs_engine_session_create(t->m, &s, &err) != 0) {
    t->bad++;
    return NULL;
  }
  for (int r = 0; r < 50; r++) {
    if (hs_engine_run(s, t->in, (size_t)t->n_in, out, (size_t)t->n_out, &err) != 0) {
      t->bad++;
      continue;
    }
    for (int k = 0; k < t->n_out; k++) t->bad += compare_tensors("loop output", &out[k], &t->want[k]) != 0;
  }
  hs_engine_session_free(s);
  return NULL;
}

static void test_control_flow_threads(void **state) {
  (void)state;
  const char *dir = HS_CASES_DIR "/cases/loop_early_exit";
  hs_engine_model *m = NULL;
  hs_error err;
  hs_tensor in[4], want[4];
  assert_int_equal(hs_engine_load(HS_CASES_DIR "/cases/loop_early_exit/model.onnx", NULL, &m, &err), 0);
  assert_int_equal(m->dynamic, 1);
  int n_in = load_npys(dir, "input", in, 4), n_want = load_npys(dir, "expected", want, 4);
  assert_int_equal(n_in, 1);
  assert_int_equal(n_want, 3);
  ctl_thread t[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    t[i] = (ctl_thread){.m = m, .in = in, .want = want, .n_in = n_in, .n_out = n_want};
    assert_int_equal(pthread_create(&th[i], NULL, ctl_thread_main, &t[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(t[i].bad, 0);
  }
  free_tensors(in, n_in);
  free_tensors(want, n_want);
  hs_engine_free(m);
}

/* The table generated from ops/op_list.h: each row is found by its name under its own id, has the
 * entry points every op needs (run, or run_ctl for control flow), and declares value inputs only among the inputs it accepts. */
static void test_op_table_rows(void **state) {
  (void)state;
  for (int id = 0; id < HS_OP_COUNT; id++) {
    const hs_op_def *d = hs_op_get(id);
    assert_non_null(d);
    assert_int_equal(d->id, id);
    assert_int_equal(hs_op_find(d->name), id);
    assert_non_null(d->impl);
    assert_non_null(d->impl->infer);
    /* control flow runs through run_ctl (with the engine's callbacks), every other op through run */
    if (d->flags & HS_OP_CONTROL) assert_non_null(d->impl->run_ctl);
    else assert_non_null(d->impl->run);
    assert_true(d->since >= 1 && d->min_in <= d->max_in && d->min_out <= d->max_out && d->min_out >= 1);
    assert_true(d->max_in >= 32 || (d->value_inputs >> d->max_in) == 0);
  }
  assert_null(hs_op_get(HS_OP_COUNT));
  assert_null(hs_op_get(-1));
  assert_int_equal(hs_op_find("NoSuchOp"), -1);
  assert_string_equal(hs_op_get(HS_OP_Conv)->name, "Conv");
}

/* A bound MatMul takes the fusions it can run and refuses the rest through the op table's hook:
 * one bias (before anything else), post-ops until the kernel's steps are used up, no layout. */
static void test_op_fusion_hook(void **state) {
  (void)state;
  hs_graph g;
  hs_error err;
  int a, b, y, ni;
  hs_graph_init(&g);
  assert_int_equal(hs_graph_add_value(&g, "a", HS_VAL_INPUT, &a, &err), 0);
  assert_int_equal(hs_graph_add_value(&g, "b", HS_VAL_INPUT, &b, &err), 0);
  assert_int_equal(hs_graph_add_value(&g, "y", HS_VAL_INTERMEDIATE, &y, &err), 0);
  assert_int_equal(hs_graph_add_node(&g, &ni, &err), 0);
  hs_node *n = &g.nodes[ni];
  n->name = strdup("mm");
  n->op_type = strdup("MatMul");
  n->domain = strdup("");
  n->opset = 13;
  n->n_in = 2;
  n->in = malloc(2 * sizeof(int));
  n->n_out = 1;
  n->out = malloc(sizeof(int));
  assert_non_null(n->name);
  assert_non_null(n->in);
  assert_non_null(n->out);
  n->in[0] = a;
  n->in[1] = b;
  n->out[0] = y;
  assert_int_equal(hs_op_bind(n, &g, &err), 0);
  assert_int_equal(n->op, HS_OP_MatMul);

  hs_fusion layout = {.kind = HS_FUSE_LAYOUT, .src = HS_LAYOUT_NHWC, .dst = HS_LAYOUT_NHWC};
  assert_int_equal(hs_op_fuse(n, &layout, &err), HS_FUSE_REFUSED);
  hs_fusion bias = {.kind = HS_FUSE_BIAS, .input = 2, .dry_run = 1};
  assert_int_equal(hs_op_fuse(n, &bias, &err), 0);
  assert_int_equal(hs_op_fuse(n, &bias, &err), 0); /* a dry run changed nothing */
  bias.dry_run = 0;
  assert_int_equal(hs_op_fuse(n, &bias, &err), 0);
  assert_int_equal(hs_op_fuse(n, &bias, &err), HS_FUSE_REFUSED); /* one bias only */
  hs_fusion hsig = {.kind = HS_FUSE_ACTIVATION, .act = {.kind = HS_POST_ACT, .act = HS_ACT_HARDSIGMOID}};
  hs_fusion relu = {.kind = HS_FUSE_ACTIVATION, .act = {.kind = HS_POST_ACT, .act = HS_ACT_RELU}};
  assert_int_equal(hs_op_fuse(n, &hsig, &err), 0); /* two oneDNN steps */
  assert_int_equal(hs_op_fuse(n, &relu, &err), 0);
  assert_int_equal(hs_op_fuse(n, &hsig, &err), HS_FUSE_REFUSED); /* would need a fifth step */
  hs_fusion sum = {.kind = HS_FUSE_SUM, .input = 3};
  assert_int_equal(hs_op_fuse(n, &sum, &err), 0);
  assert_int_equal(hs_op_fuse(n, &relu, &err), HS_FUSE_REFUSED); /* four steps used */
  hs_graph_free(&g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_op_table_rows),
      cmocka_unit_test(test_op_fusion_hook),
      cmocka_unit_test(test_generated_cases),
      cmocka_unit_test(test_hostile_models),
      cmocka_unit_test(test_truncated_and_corrupted),
      cmocka_unit_test(test_memory_plan_reuses_buffers),
      cmocka_unit_test(test_dynamic_shape_arithmetic),
      cmocka_unit_test(test_const_if_folded),
      cmocka_unit_test(test_subgraph_planned_once),
      cmocka_unit_test(test_loop_iteration_limit),
      cmocka_unit_test(test_control_flow_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

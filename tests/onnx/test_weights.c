/* test_weights.c - a compiled model holds each Conv weight once, and still answers like torch for new shapes. */
/*
 * The model and torch's outputs come from gen_weights_case.py. Compiling must leave the graph without
 * the Conv weights that only one node reads (its kernel holds them) and with the ones two nodes share;
 * runs at spatial sizes the load never saw must then build kernels from the kernels' copy, and once a
 * node's kernel cache is full, the plain-C path must get the weights from there too. With
 * HS_KERNELS_STRICT=1 the test also proves which path ran: every new size up to the cache's capacity
 * runs on a kernel, the next one is refused (the path that, without strict mode, is plain C).
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/npy.h"
#include "kernels/kcache.h"
#include "engine/engine.h"
#include "onnx/onnx.h"
#include "ops/conv.h"

#define MODEL HS_WEIGHTS_DIR "/model.onnx"
#define MAX_CASES 64

static int strict_mode(void) {
  const char *s = getenv("HS_KERNELS_STRICT");
  return s && s[0] == '1';
}

static int load_npy(const char *prefix, int k, hs_tensor *t) {
  char path[512];
  struct stat sb;
  snprintf(path, sizeof path, "%s/%s_%d.npy", HS_WEIGHTS_DIR, prefix, k);
  if (stat(path, &sb) != 0) return -1;
  hs_error err;
  if (hs_npy_read(path, t, &err)) {
    fprintf(stderr, "%s: %s\n", path, err.message);
    return -1;
  }
  return 0;
}

/* Same shape, and |a - e| <= 1e-5 + 1e-4 |e| everywhere (torch computed in float64). */
static int close_to(const char *what, int k, const hs_tensor *a, const hs_tensor *e) {
  if (a->dtype != HS_DT_FLOAT32 || a->ndim != e->ndim || memcmp(a->dims, e->dims, sizeof(int64_t) * (size_t)a->ndim)) {
    fprintf(stderr, "%s (case %d): shape or type differs\n", what, k);
    return 1;
  }
  int64_t n = hs_shape_numel(a->dims, a->ndim);
  const float *x = a->data, *y = e->data;
  for (int64_t i = 0; i < n; i++)
    if (!(fabs((double)x[i] - y[i]) <= 1e-5 + 1e-4 * fabs((double)y[i]))) {
      fprintf(stderr, "%s (case %d): element %lld is %.9g, expected %.9g\n", what, k, (long long)i, x[i], y[i]);
      return 1;
    }
  return 0;
}

/* Runs case k on session s. Returns 0 when every output matches torch, 1 when one differs, and
 * -1 with err filled when the run failed. */
static int run_case(hs_engine_session *s, int k, hs_error *err) {
  static const char *names[3] = {"y", "s", "t"};
  hs_tensor x, exp[3], out[3];
  assert_int_equal(load_npy("x", k, &x), 0);
  for (int i = 0; i < 3; i++) assert_int_equal(load_npy(names[i], k, &exp[i]), 0);
  int bad = 0;
  if (hs_engine_run(s, &x, 1, out, 3, err)) bad = -1;
  for (int i = 0; i < 3 && !bad; i++) bad |= close_to(names[i], k, &out[i], &exp[i]);
  free(x.data);
  for (int i = 0; i < 3; i++) free(exp[i].data);
  return bad;
}

static int count_cases(void) {
  int n = 0;
  char path[512];
  struct stat sb;
  for (; n < MAX_CASES; n++) {
    snprintf(path, sizeof path, "%s/x_%d.npy", HS_WEIGHTS_DIR, n);
    if (stat(path, &sb) != 0) break;
  }
  return n;
}

static const hs_value *value_named(const hs_graph *g, const char *name) {
  int v = hs_graph_find(g, name);
  assert_true(v >= 0);
  return &g->values[v];
}

/* The graph gives up exactly the weights only one Conv reads; the kernels hold them. */
static void test_weights_held_once(void **state) {
  (void)state;
  size_t released = 0, kept = 0;
  FILE *f = fopen(HS_WEIGHTS_DIR "/weights.txt", "r");
  assert_non_null(f);
  assert_int_equal(fscanf(f, "%zu %zu", &released, &kept), 2);
  fclose(f);
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  assert_int_equal(hs_onnx_load_file(MODEL, 0, &g, &err), 0);
  assert_int_equal(hs_graph_const_bytes(&g), released + kept);
  hs_engine_model *m = NULL;
  assert_int_equal(hs_engine_compile(&g, NULL, &m, &err), 0);
  printf("graph constants: %zu bytes before compiling, %zu after (%zu released)\n", released + kept,
         hs_graph_const_bytes(&m->g), released);
  assert_int_equal(hs_graph_const_bytes(&m->g), kept);
  const hs_value *w1 = value_named(&m->g, "W1"), *w2 = value_named(&m->g, "W2"), *ws = value_named(&m->g, "WS");
  assert_null(w1->data);
  assert_null(w2->data);
  assert_non_null(ws->data); /* two Convs read it: shared, so the graph keeps it */
  assert_int_equal(w1->nbytes, 24 * 16 * 3 * 3 * sizeof(float)); /* the value keeps its shape */
  assert_int_equal(m->const_bytes, released + kept); /* the memory estimate still counts them */
  /* the kernels (built by the load's trial plans, 1x1 and 2x2) hold every Conv's weights */
  int convs = 0;
  for (int oi = 0; oi < m->g.n_order; oi++) {
    const hs_node *n = &m->g.nodes[m->g.order[oi]];
    if (strcmp(n->op_type, "Conv") && strcmp(n->op_type, "ConvTranspose")) continue;
    const hs_value *w = &m->g.values[n->in[1]];
    size_t held = hs_conv_weight_bytes(n);
    printf("%s (%s): weights %zu bytes, graph holds %zu, its kernels %zu\n", n->name, w->name, w->nbytes,
           w->data ? w->nbytes : 0, held);
    assert_true(held >= w->nbytes); /* a blocked layout may pad */
    convs++;
  }
  assert_int_equal(convs, 4);
  hs_engine_free(m);
}

/* Every spatial size, in order, on one session. Strict mode: the sizes the kernel caches hold run on
 * kernels built from the released weights, the first size past them is refused. */
static void test_new_shapes(void **state) {
  (void)state;
  int n = count_cases();
  /* the load's trial plans took two cache slots (spatial 1x1 and 2x2); case 0 is 1x1, the rest are new */
  int kernel_cases = 1 + (HS_KCACHE_SLOTS - 2);
  assert_true(n > kernel_cases + 1);
  hs_engine_model *m = NULL;
  hs_engine_session *s = NULL;
  hs_error err;
  assert_int_equal(hs_engine_load(MODEL, NULL, &m, &err), 0);
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  int ran = 0;
  for (int k = 0; k < n; k++) {
    hs_error_clear(&err);
    int rc = run_case(s, k, &err);
    if (strict_mode() && k >= kernel_cases) {
      printf("case %d (strict): %s\n", k, err.message);
      assert_int_equal(rc, -1);
      assert_non_null(strstr(err.message, "strict mode"));
      break;
    }
    if (rc < 0) fprintf(stderr, "case %d: %s\n", k, err.message);
    assert_int_equal(rc, 0);
    ran++;
  }
  printf("%d spatial sizes matched torch (%s)\n", ran, strict_mode() ? "kernels only" : "kernels, then plain C");
  assert_int_equal(ran, strict_mode() ? kernel_cases : n);
  hs_engine_session_free(s);
  hs_engine_free(m);
}

/* Runs conv kernel k once on x; returns its output (malloc'ed). */
static float *run_kernel(hs_kernel *k, const float *x, size_t out_floats) {
  size_t sb = hs_kernel_scratch_size(k, 1);
  assert_true(sb != (size_t)-1);
  void *scratch = sb ? malloc(sb) : NULL;
  float *y = malloc(out_floats * sizeof(float));
  assert_non_null(y);
  const void *src[1] = {x};
  hs_kernel_args a = {.batch = 1, .src = src, .nsrc = 1, .dst = y, .scratch = scratch};
  hs_error err;
  assert_int_equal(hs_kernel_run(k, &a, &err), 0);
  free(scratch);
  return y;
}

/* The kernels interface: a conv kernel made from another's weights shares them when the layout
 * agrees, computes exactly what a kernel made from the weights computes, and gives them back intact.
 * OC = 24 runs the direct kernels; OC = 32 (whole 16-channel blocks) runs oneDNN's Winograd kernels
 * where the CPU has AVX-512, whose weight format no reorder reads back (the kernel keeps a plain copy). */
static void check_kernel_weights_from(int OC) {
  enum { IC = 16, H = 12, W = 10, OCMAX = 32 };
  static float w[OCMAX * IC * 9], bias[OCMAX], x[IC * H * W];
  uint32_t seed = 7;
  for (int i = 0; i < OC * IC * 9; i++) w[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16) / 65536.f - .5f;
  for (int i = 0; i < OC; i++) bias[i] = (float)i / OC;
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16) / 65536.f;
  hs_conv_params p = {.device = HS_KDEV_CPU, .nsp = 2, .batch = 1, .in_c = IC, .out_c = OC, .groups = 1,
                      .in = {8, 8}, .out = {8, 8}, .kernel = {3, 3}, .stride = {1, 1}, .dilation = {1, 1},
                      .pad_begin = {1, 1}, .pad_end = {1, 1}, .weights = w, .bias = bias};
  hs_error err;
  hs_kernel *a = NULL, *same = NULL, *other = NULL, *fresh = NULL, *bad = NULL;
  assert_int_equal(hs_kernel_conv_create(&p, &a, &err), 0);
  size_t wbytes = sizeof(float) * (size_t)(OC * IC * 9);
  assert_true(hs_kernel_conv_owned_weight_bytes(a) >= wbytes);
  hs_conv_params q = p;
  q.weights = NULL;
  q.weights_from = a;
  assert_int_equal(hs_kernel_conv_create(&q, &same, &err), 0); /* same shapes: same layout, shared */
  assert_int_equal(hs_kernel_conv_owned_weight_bytes(same), 0);
  q.in[0] = q.out[0] = H;
  q.in[1] = q.out[1] = W;
  assert_int_equal(hs_kernel_conv_create(&q, &other, &err), 0);
  hs_conv_params r = p;
  r.in[0] = r.out[0] = H;
  r.in[1] = r.out[1] = W;
  assert_int_equal(hs_kernel_conv_create(&r, &fresh, &err), 0);
  printf("%s, oc %d: kernel weights owned: first %zu, same shapes %zu, %dx%d from the first %zu, from the "
         "weights %zu\n", hs_kernel_impl_name(a), OC, hs_kernel_conv_owned_weight_bytes(a), hs_kernel_conv_owned_weight_bytes(same), H, W,
         hs_kernel_conv_owned_weight_bytes(other), hs_kernel_conv_owned_weight_bytes(fresh));
  float *y1 = run_kernel(other, x, OC * H * W), *y2 = run_kernel(fresh, x, OC * H * W);
  assert_memory_equal(y1, y2, sizeof(float) * OC * H * W);
  free(y1);
  free(y2);
  static float back[OCMAX * IC * 9];
  assert_int_equal(hs_kernel_conv_weights(other, back, wbytes, &err), 0);
  assert_memory_equal(back, w, wbytes);
  memset(back, 0, wbytes);
  assert_int_equal(hs_kernel_conv_weights(a, back, wbytes, &err), 0);
  assert_memory_equal(back, w, wbytes);
  assert_int_equal(hs_kernel_conv_weights(other, back, wbytes - 4, &err), HS_INVALID_ARGUMENT);
  /* a batch variant of the first kernel: its implementation may want another weight layout */
  float *xb = malloc(sizeof x * 2), *yb = malloc(sizeof(float) * OC * 8 * 8 * 2), *y0 = run_kernel(a, x, OC * 8 * 8);
  assert_non_null(xb);
  assert_non_null(yb);
  memcpy(xb, x, sizeof(float) * IC * 8 * 8);
  memcpy(xb + IC * 8 * 8, x, sizeof(float) * IC * 8 * 8);
  size_t sb = hs_kernel_scratch_size(a, 2);
  assert_true(sb != (size_t)-1);
  void *scratch = sb ? malloc(sb) : NULL;
  const void *src[1] = {xb};
  hs_kernel_args args = {.batch = 2, .src = src, .nsrc = 1, .dst = yb, .scratch = scratch};
  assert_int_equal(hs_kernel_run(a, &args, &err), 0);
  for (int i = 0; i < OC * 8 * 8; i++) {
    assert_true(fabsf(yb[i] - y0[i]) <= 1e-4f + 1e-4f * fabsf(y0[i]));
    assert_true(fabsf(yb[OC * 8 * 8 + i] - y0[i]) <= 1e-4f + 1e-4f * fabsf(y0[i]));
  }
  free(scratch);
  free(xb);
  free(yb);
  free(y0);
  q.out_c = 12; /* weights of another shape */
  assert_int_equal(hs_kernel_conv_create(&q, &bad, &err), HS_INVALID_ARGUMENT);
  assert_null(bad);
  hs_kernel_destroy(other);
  hs_kernel_destroy(same);
  hs_kernel_destroy(fresh);
  hs_kernel_destroy(a);
}

static void test_kernel_weights_from(void **state) {
  (void)state;
  check_kernel_weights_from(24);
  check_kernel_weights_from(32);
}

typedef struct worker {
  const hs_engine_model *m;
  int first, n, failed;
} worker;

static void *work(void *p) {
  worker *w = p;
  hs_engine_session *s = NULL;
  hs_error err;
  if (hs_engine_session_create(w->m, &s, &err)) {
    w->failed = 1;
    return NULL;
  }
  for (int i = 0; i < w->n; i++) {
    int k = (w->first + i) % w->n;
    if (run_case(s, k, &err)) {
      fprintf(stderr, "thread from case %d, case %d: %s\n", w->first, k, err.message);
      w->failed++;
    }
  }
  hs_engine_session_free(s);
  return NULL;
}

/* Sessions on three threads plan new sizes at once: kernels are built from the released weights,
 * and the plain-C path reads them back, concurrently. */
static void test_threads(void **state) {
  (void)state;
  if (strict_mode()) skip(); /* the later sizes run on plain C by design */
  int n = count_cases();
  hs_engine_model *m = NULL;
  hs_error err;
  assert_int_equal(hs_engine_load(MODEL, NULL, &m, &err), 0);
  worker w[3];
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    w[i] = (worker){m, i * n / 3, n, 0};
    assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
  }
  for (int i = 0; i < 3; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(w[i].failed, 0);
  }
  hs_engine_free(m);
}

int main(void) {
  setenv("HS_KERNELS_WINOGRAD", "1", 1); /* off by default; OC = 32 must reach it */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kernel_weights_from),
      cmocka_unit_test(test_weights_held_once),
      cmocka_unit_test(test_new_shapes),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_arena.c - two versions of MobileNetV2 share their sessions' scratch arenas (engine/arena.c), exactly. */
/*
 * Version A is the exported model; version B is A with the last Conv's weights scaled (a "new
 * head": the same plan, so the same arena size). B's sessions, created while A's are alive, must
 * allocate no arena of their own (hs_engine_arena_stats: A's two are enough), a pool must hold no
 * more arenas than member sessions (a third run in flight at once adds one) except the one kept
 * when A retires, which the next version's third run takes instead of a new one and the trim
 * (hs_engine_arena_trim) frees, B's outputs on arenas A ran on must be bit-equal to those of B loaded
 * alone, and every arena must be gone once the sessions are (ASan checks the frees). A session
 * that is never told it is idle keeps its arena, as a private one.
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
#include "onnx/onnx.h"

static const char *g_model;

#define OUT_FLOATS 1000 /* MobileNetV2's 1000 classes */

/* Compiles the model file; with new_head, the last Conv's weights are scaled by 1.5 first. */
static hs_engine_model *compile(int new_head) {
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  assert_int_equal(hs_onnx_load_file(g_model, 0, &g, &err), 0);
  for (int i = g.n_nodes - 1; new_head && i >= 0; i--) {
    if (strcmp(g.nodes[i].op_type, "Conv") != 0) continue;
    hs_value *w = &g.values[g.nodes[i].in[1]];
    assert_non_null(w->data);
    float *f = w->data;
    for (size_t k = 0; k < w->nbytes / sizeof(float); k++) f[k] *= 1.5f;
    break;
  }
  hs_engine_model *m = NULL;
  int rc = hs_engine_compile(&g, NULL, &m, &err);
  if (rc) fprintf(stderr, "compile: %s\n", err.message);
  assert_int_equal(rc, 0);
  assert_true(m->planned_bytes > 0);
  return m;
}

static hs_engine_session *session(const hs_engine_model *m) {
  hs_engine_session *s = NULL;
  hs_error err;
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  return s;
}

/* One run on a fixed input (seed picks it); the output is copied into out. */
static void run(hs_engine_session *s, uint32_t seed, float out[OUT_FLOATS]) {
  static float x[3 * 224 * 224];
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
  }
  hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 4, .dims = {1, 3, 224, 224}, .data = x, .nbytes = sizeof x};
  hs_tensor o;
  hs_error err;
  int rc = hs_engine_run(s, &in, 1, &o, 1, &err);
  if (rc) fprintf(stderr, "run: %s\n", err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(o.nbytes, OUT_FLOATS * sizeof(float));
  memcpy(out, o.data, o.nbytes);
}

static hs_engine_arena_stats stats(void) {
  hs_engine_arena_stats st;
  hs_engine_arena_stats_get(&st);
  return st;
}

static void test_versions_share_arenas(void **state) {
  (void)state;
  static float ref_b[2][OUT_FLOATS], ref_a[OUT_FLOATS], got[OUT_FLOATS];
  /* B alone: the reference bits; its one session primes one arena, gone with it */
  hs_engine_model *b0 = compile(1);
  hs_engine_session *s0 = session(b0);
  assert_int_equal(stats().arenas, 1);
  run(s0, 1, ref_b[0]);
  run(s0, 2, ref_b[1]);
  hs_engine_session_free(s0);
  hs_engine_free(b0);
  assert_int_equal(stats().arenas, 0);
  assert_int_equal(stats().pools, 0);

  /* A: two sessions, two arenas, faulted in once */
  hs_engine_model *a = compile(0);
  hs_engine_session *sa[2] = {session(a), session(a)};
  size_t created = stats().created;
  assert_int_equal(stats().arenas, 2);
  for (int i = 0; i < 2; i++) {
    run(sa[i], 3, i ? got : ref_a);
    hs_engine_session_idle(sa[i]);
  }
  assert_memory_equal(got, ref_a, sizeof got);
  assert_int_equal(stats().created, created);

  /* B while A lives: its two sessions find A's arenas (one pool: the same plan size) */
  hs_engine_model *b = compile(1);
  hs_engine_session *sb[2] = {session(b), session(b)};
  assert_int_equal(stats().created, created);
  assert_int_equal(stats().arenas, 2);
  assert_int_equal(stats().pools, 1);
  for (int k = 0; k < 2; k++) {
    run(sb[k], 1 + (uint32_t)k, got); /* on an arena A's runs left their values in */
    assert_memory_equal(got, ref_b[k], sizeof got);
    hs_engine_session_idle(sb[k]);
  }
  assert_int_equal(stats().created, created);
  assert_int_equal(stats().in_use, 0);

  /* three runs holding arenas at once (both of A's, one of B's): a third arena, within the four sessions */
  run(sa[0], 3, got);
  run(sa[1], 3, got);
  run(sb[0], 2, got);
  assert_memory_equal(got, ref_b[1], sizeof got);
  assert_int_equal(stats().in_use, 3);
  assert_int_equal(stats().arenas, 3);
  assert_int_equal(stats().created, created + 1);
  /* a session not told it is idle keeps its arena: its next run takes no other */
  size_t in_use = stats().in_use;
  void *held = sb[0]->arena;
  run(sb[0], 1, got);
  assert_memory_equal(got, ref_b[0], sizeof got);
  assert_ptr_equal(sb[0]->arena, held);
  assert_int_equal(stats().in_use, in_use);
  for (int i = 0; i < 2; i++) {
    hs_engine_session_idle(sa[i]);
    hs_engine_session_idle(sb[i]);
  }
  assert_int_equal(stats().in_use, 0);

  /* A retires: the pool keeps the third arena (a reload's warm-up added it) for the next reload */
  hs_engine_session_free(sa[0]);
  hs_engine_session_free(sa[1]);
  hs_engine_free(a);
  assert_int_equal(stats().arenas, 3);
  /* the next version C: three runs in flight again (B's two and C's warm-up) allocate none */
  created = stats().created;
  hs_engine_model *c = compile(0);
  hs_engine_session *sc = session(c);
  run(sb[0], 1, got);
  run(sb[1], 2, got);
  run(sc, 3, got);
  assert_memory_equal(got, ref_a, sizeof got);
  assert_int_equal(stats().in_use, 3);
  assert_int_equal(stats().created, created);
  hs_engine_session_idle(sb[0]);
  hs_engine_session_idle(sb[1]);
  hs_engine_session_free(sc);
  hs_engine_free(c);
  assert_int_equal(stats().arenas, 3);
  /* the trim (the server's, once reloads stop) leaves no more arenas than the two sessions left */
  hs_engine_arena_trim();
  assert_int_equal(stats().arenas, 2);
  run(sb[1], 2, got);
  assert_memory_equal(got, ref_b[1], sizeof got);
  hs_engine_session_free(sb[0]);
  hs_engine_session_free(sb[1]);
  hs_engine_free(b);
  assert_int_equal(stats().arenas, 0);
  assert_int_equal(stats().bytes, 0);
  assert_int_equal(stats().pools, 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s mobilenet_v2.onnx\n", argv[0]);
    return 2;
  }
  g_model = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_versions_share_arenas),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

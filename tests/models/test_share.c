/* test_share.c - two versions of MobileNetV2 differing in their last Conv share every other Conv kernel, exactly. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
/*
 * Version A is the exported model; version B is A with the last Conv's weights scaled (a "new
 * head"). Compiling B while A is alive must take every Conv kernel but that one from the registry
 * (kernels/kshare.h; counted with the loading thread's counters), B's outputs must be bit-equal to
 * those of a cold compile of B with sharing off, A must still give its own outputs, and the
 * registry must be empty again once both are freed, in either order (ASan checks the frees).
 * test_decode_time does the same through the server's path, hs_engine_load_buffer on file bytes:
 * the decoder must not copy the weights a loaded kernel already holds (found_bytes), and three
 * variants of the file (last Conv's weights scaled; its bias changed, so its weights are found but
 * its kernel differs; one weight changed away from the positions the pre-filter samples, so only
 * the full comparison tells) must each give the bits of a cold load with sharing off.
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
#include "kernels/kshare.h"
#include "onnx/onnx.h"
#include "ops/conv.h"

static const char *g_model;

#define OUT_MAX (1 << 16)

/* Compiles the model file; with new_head, the last Conv's weights are scaled by 1.5 first. */
static hs_engine_model *compile(int new_head) {
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  assert_int_equal(hs_onnx_load_file(g_model, 0, &g, &err), 0);
  if (new_head) {
    int done = 0;
    for (int i = g.n_nodes - 1; i >= 0 && !done; i--) {
      if (strcmp(g.nodes[i].op_type, "Conv") != 0) continue;
      hs_value *w = &g.values[g.nodes[i].in[1]];
      assert_non_null(w->data);
      float *f = w->data;
      for (size_t k = 0; k < w->nbytes / sizeof(float); k++) f[k] *= 1.5f;
      done = 1;
    }
    assert_true(done);
  }
  hs_engine_model *m = NULL;
  int rc = hs_engine_compile(&g, NULL, &m, &err);
  if (rc) fprintf(stderr, "compile: %s\n", err.message);
  assert_int_equal(rc, 0);
  return m;
}

/* One run on a fixed input; the first output is copied into out (at most OUT_MAX floats). */
static size_t run(const hs_engine_model *m, float *out) {
  static float x[3 * 224 * 224];
  uint32_t s = 12345;
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
  }
  hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 4, .dims = {1, 3, 224, 224}, .data = x, .nbytes = sizeof x};
  hs_engine_session *ses = NULL;
  hs_error err;
  assert_int_equal(hs_engine_session_create(m, &ses, &err), 0);
  hs_tensor o;
  int rc = hs_engine_run(ses, &in, 1, &o, 1, &err);
  if (rc) fprintf(stderr, "run: %s\n", err.message);
  assert_int_equal(rc, 0);
  assert_true(o.nbytes <= OUT_MAX * sizeof(float));
  memcpy(out, o.data, o.nbytes);
  size_t n = o.nbytes / sizeof(float);
  hs_engine_session_free(ses);
  return n;
}

static void check_versions(int free_a_first) {
  static float out_a[OUT_MAX], out_a2[OUT_MAX], out_b[OUT_MAX], out_cold[OUT_MAX];
  hs_kshare_stats base, st, reg;
  hs_kshare_get_stats(&base);
  assert_int_equal(base.kernels, 0);

  hs_kshare_thread_stats(&st, 1);
  hs_engine_model *a = compile(0);
  hs_kshare_thread_stats(&st, 1);
  uint64_t convs = st.builds;
  printf("version A: %llu conv kernels built (%llu weight bytes), %llu shared\n", (unsigned long long)st.builds,
         (unsigned long long)st.build_bytes, (unsigned long long)st.hits);
  assert_true(convs > 10); /* MobileNetV2 has 52 Convs */
  assert_int_equal(st.hits, 0);
  size_t n = run(a, out_a);

  hs_engine_model *b = compile(1);
  hs_kshare_thread_stats(&st, 1);
  printf("version B (new head): %llu built (%llu bytes), %llu shared (%llu bytes)\n", (unsigned long long)st.builds,
         (unsigned long long)st.build_bytes, (unsigned long long)st.hits, (unsigned long long)st.hit_bytes);
  assert_int_equal(st.builds, 1);
  assert_int_equal(st.hits, convs - 1);
  assert_true(st.hit_bytes > 4 * st.build_bytes); /* the last Conv is 1280x320, a fifth of the rest */
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, convs + 1);
  assert_int_equal(run(b, out_b), n);
  assert_true(memcmp(out_a, out_b, n * sizeof(float)) != 0); /* the new head changes the answer */

  /* A cold compile of B, sharing off: the same bits. */
  hs_kshare_set_enabled(0);
  hs_engine_model *cold = compile(1);
  hs_kshare_set_enabled(1);
  hs_kshare_thread_stats(&st, 1);
  assert_int_equal(st.hits + st.builds, 0);
  assert_int_equal(run(cold, out_cold), n);
  assert_memory_equal(out_b, out_cold, n * sizeof(float));
  hs_engine_free(cold);

  /* A still answers as before, then both go in the given order. */
  assert_int_equal(run(a, out_a2), n);
  assert_memory_equal(out_a, out_a2, n * sizeof(float));
  hs_engine_free(free_a_first ? a : b);
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, free_a_first ? 1 + (convs - 1) : convs); /* the survivor's kernels stay */
  if (free_a_first) {
    assert_int_equal(run(b, out_a2), n);
    assert_memory_equal(out_b, out_a2, n * sizeof(float));
  } else {
    assert_int_equal(run(a, out_a2), n);
    assert_memory_equal(out_a, out_a2, n * sizeof(float));
  }
  hs_engine_free(free_a_first ? b : a);
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, 0);
  assert_int_equal(reg.bytes, 0);
}

/* ---- through hs_engine_load_buffer: sharing at decode time ---- */

static hs_engine_model *load_bytes(const void *buf, size_t len) {
  hs_engine_model *m = NULL;
  hs_error err;
  int rc = hs_engine_load_buffer(buf, len, NULL, 0, NULL, &m, &err);
  if (rc) fprintf(stderr, "load: %s\n", err.message);
  assert_int_equal(rc, 0);
  return m;
}

/* Where the bytes of value v of the decoded model sit in the file (raw_data is stored verbatim;
 * they must occur exactly once). */
static uint8_t *locate(uint8_t *file, size_t len, const hs_value *v) {
  assert_non_null(v->data);
  uint8_t *at = memmem(file, len, v->data, v->nbytes);
  assert_non_null(at);
  assert_null(memmem(at + 1, len - (size_t)(at + 1 - file), v->data, v->nbytes));
  return at;
}

enum { NEW_WEIGHTS, NEW_BIAS, ONE_WEIGHT };

/* Convs whose weights the decoder offers for sharing (the smaller ones are shared when their
 * kernel is built: hs_kshare_conv). */
static uint64_t offered_convs(void) {
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  assert_int_equal(hs_onnx_load_file(g_model, 0, &g, &err), 0);
  uint64_t n = 0;
  for (int i = 0; i < g.n_nodes; i++)
    n += strcmp(g.nodes[i].op_type, "Conv") == 0 && g.values[g.nodes[i].in[1]].nbytes >= HS_ONNX_SHARE_MIN_BYTES;
  hs_graph_free(&g);
  return n;
}

/* A copy of the model file with its last Conv changed as `what` says. */
static uint8_t *variant(const uint8_t *file, size_t len, int what) {
  uint8_t *out = malloc(len);
  assert_non_null(out);
  memcpy(out, file, len);
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  assert_int_equal(hs_onnx_load_file(g_model, 0, &g, &err), 0);
  int last = -1;
  for (int i = 0; i < g.n_nodes; i++)
    if (strcmp(g.nodes[i].op_type, "Conv") == 0) last = i;
  assert_true(last >= 0 && g.nodes[last].n_in > 2);
  const hs_value *w = &g.values[g.nodes[last].in[1]], *b = &g.values[g.nodes[last].in[2]];
  float f;
  if (what == NEW_WEIGHTS || what == ONE_WEIGHT) {
    uint8_t *at = locate(out, len, w);
    size_t n = what == ONE_WEIGHT ? 2 : w->nbytes / sizeof f;
    for (size_t k = what == ONE_WEIGHT ? 1 : 0; k < n; k++) { /* element 1: no sampled position */
      memcpy(&f, at + k * sizeof f, sizeof f);
      f = what == ONE_WEIGHT ? f + 1.0f : f * 1.5f;
      memcpy(at + k * sizeof f, &f, sizeof f);
    }
  } else {
    uint8_t *at = locate(out, len, b);
    for (size_t k = 0; k < b->nbytes / sizeof f; k++) {
      memcpy(&f, at + k * sizeof f, sizeof f);
      f += 0.25f;
      memcpy(at + k * sizeof f, &f, sizeof f);
    }
  }
  hs_graph_free(&g);
  return out;
}

/* Every Conv of m with a depthwise convolution fused after it reads that one's weights in its kernel's
 * copy: the graph's value is released (no data, no reference to another version's kernel) and the
 * node holds no copy of its own. Returns how many such Convs m has. */
static int fused_dw_held_once(const hs_engine_model *m) {
  int fused = 0;
  for (int i = 0; i < m->g.n_nodes; i++) {
    const hs_node *n = &m->g.nodes[i];
    if (n->dead || strcmp(n->op_type, "Conv") != 0) continue;
    size_t copied = 1;
    int d = hs_conv_fused_dw_weights(n, &copied);
    if (d < 0) continue;
    fused++;
    assert_int_equal(copied, 0);
    assert_null(m->g.values[n->in[d]].data);
    assert_null(m->g.values[n->in[d]].ref);
  }
  return fused;
}

static void test_decode_time(void **state) {
  (void)state;
  static float out_a[OUT_MAX], out_b[OUT_MAX], out_cold[OUT_MAX];
  void *file;
  size_t len;
  hs_error err;
  assert_int_equal(hs_read_file(g_model, 0, &file, &len, &err), 0);
  hs_kshare_stats st, reg;
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, 0);

  hs_kshare_thread_stats(&st, 1);
  hs_engine_model *a = load_bytes(file, len);
  hs_kshare_thread_stats(&st, 1);
  uint64_t convs = st.builds;
  assert_true(convs > 10);
  assert_int_equal(st.found + st.hits, 0);
  size_t n = run(a, out_a);
  int fused = fused_dw_held_once(a); /* a cold load: the graph's copies went */
  assert_true(fused > 10);
  uint64_t offered = offered_convs();
  assert_true(offered > convs / 2);

  for (int what = NEW_WEIGHTS; what <= ONE_WEIGHT; what++) {
    uint8_t *buf = variant(file, len, what);
    hs_engine_model *b = load_bytes(buf, len);
    hs_kshare_thread_stats(&st, 1);
    printf("variant %d: %llu initializers not copied (%llu bytes), %llu kernels shared, %llu built\n", what,
           (unsigned long long)st.found, (unsigned long long)st.found_bytes, (unsigned long long)st.hits,
           (unsigned long long)st.builds);
    /* the new bias leaves the last Conv's weights as they were: found, but its kernel is built anew */
    assert_int_equal(st.found, what == NEW_BIAS ? offered : offered - 1);
    assert_int_equal(st.hits, convs - 1);
    assert_int_equal(st.builds, 1);
    assert_true(st.found_bytes >= st.hit_bytes / 2); /* reordered kernels may pad; the bytes are the weights */
    assert_int_equal(run(b, out_b), n);
    assert_true(memcmp(out_a, out_b, n * sizeof(float)) != 0);
    assert_int_equal(fused_dw_held_once(b), fused); /* found at decode time: read in the kernels, not copied */

    hs_kshare_set_enabled(0);
    hs_engine_model *cold = load_bytes(buf, len);
    hs_kshare_set_enabled(1);
    hs_kshare_thread_stats(&st, 1);
    assert_int_equal(st.found + st.hits + st.builds, 0);
    assert_int_equal(run(cold, out_cold), n);
    assert_memory_equal(out_b, out_cold, n * sizeof(float));
    hs_engine_free(cold);
    hs_engine_free(b);
    free(buf);
    hs_kshare_get_stats(&reg);
    assert_int_equal(reg.kernels, convs); /* B's own kernel went with it */
  }
  assert_int_equal(run(a, out_b), n);
  assert_memory_equal(out_a, out_b, n * sizeof(float));
  hs_engine_free(a);
  free(file);
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, 0);
  assert_int_equal(reg.bytes, 0);
}

static void test_free_old_first(void **state) {
  (void)state;
  check_versions(1);
}

static void test_free_new_first(void **state) {
  (void)state;
  check_versions(0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MOBILENET_V2.onnx\n", argv[0]);
    return 2;
  }
  g_model = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_free_old_first),
      cmocka_unit_test(test_free_new_first),
      cmocka_unit_test(test_decode_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

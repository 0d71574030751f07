/* test_parallel_build.c - a load that builds its kernels on several threads gives the serial build's plan and bits. */
/*
 * The load-time trial plan builds every node's kernel (engine/plan.c, build_kernels) on the model's
 * threads at once. test_bit_equal compiles each model given on the command line twice on 2
 * threads, once with the kernels built node by node on the calling thread
 * (hs_plan_set_parallel_build(0)) and once on 2 builder threads, and checks that the two have the
 * same arena size, hold the same constant bytes after releasing (every Conv's weights moved into
 * its kernel) and give bit-equal outputs on a fixed input. test_concurrent_loads compiles the same
 * model on two threads at once, each building on 2 threads, so the builds of equal Conv kernels race
 * in the sharing registry (kernels/kshare.c): the registry must end with one kernel per distinct
 * content, both models must give the serial build's bits, and the registry must be empty once both
 * are freed (ASan checks the frees; run it under TSan for the locking).
 */
#include <pthread.h>
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
#include "kernels/kshare.h"
#include "onnx/onnx.h"

#define OUT_MAX (1 << 16)
#define MODELS_MAX 4

static const char *g_models[MODELS_MAX];
static int g_n_models;

/* Compiles the model file on 2 compute threads; NULL with the error printed when it fails. */
static hs_engine_model *compile(const char *path) {
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  if (hs_onnx_load_file(path, 0, &g, &err) != 0) {
    fprintf(stderr, "%s: %s\n", path, err.message);
    hs_graph_free(&g);
    return NULL;
  }
  hs_engine_model *m = NULL;
  hs_backend_options opts = {.threads = 2};
  if (hs_engine_compile(&g, &opts, &m, &err) != 0) {
    fprintf(stderr, "%s: compile: %s\n", path, err.message);
    return NULL;
  }
  return m;
}

/* One run on a fixed input (every input filled from one generator, its symbolic dims 1); the
 * first output is copied into out (at most OUT_MAX floats). Returns its float count. */
static size_t run(const hs_engine_model *m, float *out) {
  assert_int_equal(m->n_inputs, 1);
  const hs_io_desc *d = &m->inputs[0];
  assert_int_equal(d->dtype, HS_DT_FLOAT32);
  hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = d->ndim};
  size_t count = 1;
  for (int k = 0; k < d->ndim; k++) {
    in.dims[k] = d->dims[k] < 0 ? 1 : d->dims[k];
    count *= (size_t)in.dims[k];
  }
  float *x = malloc(count * sizeof *x);
  assert_non_null(x);
  uint32_t s = 12345;
  for (size_t i = 0; i < count; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
  }
  in.data = x;
  in.nbytes = count * sizeof *x;
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
  free(x);
  return n;
}

static void test_bit_equal(void **state) {
  (void)state;
  static float out_serial[OUT_MAX], out_parallel[OUT_MAX];
  for (int i = 0; i < g_n_models; i++) {
    hs_kshare_stats st;
    hs_plan_set_parallel_build(0);
    hs_kshare_thread_stats(&st, 1);
    hs_engine_model *serial = compile(g_models[i]);
    hs_plan_set_parallel_build(1);
    assert_non_null(serial);
    hs_kshare_stats built_serial;
    hs_kshare_thread_stats(&built_serial, 1);
    size_t n = run(serial, out_serial);
    size_t arena = serial->planned_bytes, consts = hs_graph_const_bytes(&serial->g);
    hs_engine_free(serial);

    hs_engine_model *par = compile(g_models[i]);
    assert_non_null(par);
    hs_kshare_stats built_par;
    hs_kshare_thread_stats(&built_par, 1); /* the builder threads' counters are added to this thread's */
    printf("%s: serial %llu conv kernels built, parallel %llu; arena %zu / %zu bytes; constants %zu / %zu bytes\n",
           g_models[i], (unsigned long long)built_serial.builds, (unsigned long long)built_par.builds, arena,
           par->planned_bytes, consts, hs_graph_const_bytes(&par->g));
    assert_true(built_serial.builds > 10);
    assert_int_equal(built_par.builds, built_serial.builds);
    assert_int_equal(built_par.build_bytes, built_serial.build_bytes);
    assert_int_equal(par->planned_bytes, arena);
    assert_int_equal(hs_graph_const_bytes(&par->g), consts);
    assert_int_equal(run(par, out_parallel), n);
    assert_memory_equal(out_serial, out_parallel, n * sizeof(float));
    hs_engine_free(par);
  }
}

typedef struct {
  const char *path;
  hs_engine_model *m;
} load_job;

static void *load_thread(void *arg) {
  load_job *j = arg;
  j->m = compile(j->path);
  return NULL;
}

static void test_concurrent_loads(void **state) {
  (void)state;
  static float ref[OUT_MAX], out[OUT_MAX];
  const char *path = g_models[0];
  hs_kshare_stats reg, st;
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, 0);

  hs_plan_set_parallel_build(0);
  hs_kshare_thread_stats(&st, 1);
  hs_engine_model *serial = compile(path);
  hs_plan_set_parallel_build(1);
  assert_non_null(serial);
  hs_kshare_thread_stats(&st, 1);
  uint64_t distinct = st.builds; /* one model alone: each of its Conv kernels, once */
  size_t n = run(serial, ref);
  hs_engine_free(serial);

  load_job jobs[2] = {{.path = path}, {.path = path}};
  pthread_t tid[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&tid[i], NULL, load_thread, &jobs[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(tid[i], NULL);
  assert_non_null(jobs[0].m);
  assert_non_null(jobs[1].m);
  hs_kshare_get_stats(&reg);
  printf("two loads at once: %llu kernels registered (one load builds %llu)\n", (unsigned long long)reg.kernels,
         (unsigned long long)distinct);
  assert_int_equal(reg.kernels, distinct);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(run(jobs[i].m, out), n);
    assert_memory_equal(ref, out, n * sizeof(float));
  }
  hs_engine_free(jobs[0].m);
  hs_engine_free(jobs[1].m);
  hs_kshare_get_stats(&reg);
  assert_int_equal(reg.kernels, 0);
  assert_int_equal(reg.bytes, 0);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc - 1 > MODELS_MAX) {
    fprintf(stderr, "usage: %s MODEL.onnx... (at most %d)\n", argv[0], MODELS_MAX);
    return 2;
  }
  for (int i = 1; i < argc; i++) g_models[g_n_models++] = argv[i];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bit_equal),
      cmocka_unit_test(test_concurrent_loads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

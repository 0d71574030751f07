/* test_hot_path.c - a run with shapes the session has seen allocates nothing: malloc, calloc,
 * realloc and aligned_alloc are wrapped at link time (-Wl,--wrap) and counted around runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "case_util.h"
#include "hotserve/backend.h"

static _Thread_local int g_counting;
static _Thread_local long g_allocs;

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t al, size_t n);
void *__wrap_malloc(size_t n) {
  g_allocs += g_counting;
  return __real_malloc(n);
}
void *__wrap_calloc(size_t a, size_t b) {
  g_allocs += g_counting;
  return __real_calloc(a, b);
}
void *__wrap_realloc(void *p, size_t n) {
  g_allocs += g_counting;
  return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t al, size_t n) {
  g_allocs += g_counting;
  return __real_aligned_alloc(al, n);
}

/* Runs the model `runs` times on batch b and returns how many allocations the runs made. */
static long count_runs(const hs_backend *be, hs_backend_session *s, int b, int runs) {
  static float x[16 * 12];
  for (int i = 0; i < 16 * 12; i++) x[i] = (float)i;
  hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 3, .dims = {b, 3, 4}, .data = x, .nbytes = (size_t)b * 48};
  hs_tensor out;
  hs_error err;
  g_allocs = 0;
  g_counting = 1;
  for (int i = 0; i < runs; i++) assert_int_equal(be->run(s, &in, 1, &out, 1, &err), 0);
  g_counting = 0;
  return g_allocs;
}

static void test_cached_shapes_allocate_nothing(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_backend_model *m;
  hs_backend_session *s;
  hs_error err;
  assert_int_equal(be->load(HS_CASES_DIR "/cases/dyn_shape_arith/model.onnx", NULL, &m, &err), 0);
  assert_int_equal(be->session_create(m, &s, &err), 0);
  assert_true(count_runs(be, s, 3, 1) > 0);    /* first run with batch 3: plans and sizes the arena */
  assert_int_equal(count_runs(be, s, 3, 50), 0); /* then nothing */
  assert_true(count_runs(be, s, 7, 1) > 0);    /* a new batch plans once more */
  assert_int_equal(count_runs(be, s, 7, 20), 0);
  assert_int_equal(count_runs(be, s, 3, 20), 0); /* both plans stay cached */
  be->session_free(s);
  be->free_model(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cached_shapes_allocate_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_pace.c - load pacing (serving/pace.c): idle pace points read no clock, busy ones pace the loader
 * to its share, and CPU a load used while the server was idle is not charged to later requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "base/clock.h"
#include "serving/pace.h"
#include "serving/registry_impl.h"

/* A registry as the pacer sees it (its model list, stopping, metrics, the graveyard's lock): one
 * model whose requests in flight the test sets (the pacer reads nothing else of a model). */
typedef struct fake {
  hs_registry *r;
  hs_model_array *arr;
  hs_model *m;
} fake;

static void open_registry(fake *f) {
  f->r = calloc(1, sizeof *f->r);
  f->m = calloc(1, sizeof *f->m);
  f->arr = calloc(1, sizeof *f->arr + sizeof f->arr->m[0]);
  assert_non_null(f->r);
  assert_non_null(f->m);
  assert_non_null(f->arr);
  pthread_mutex_init(&f->r->mu, NULL);
  f->arr->n = 1;
  f->arr->m[0] = f->m;
  atomic_store(&f->r->models, f->arr);
}

static void close_registry(fake *f) {
  pthread_mutex_destroy(&f->r->mu);
  free(f->r);
  free(f->arr);
  free(f->m);
}

static void set_inflight(fake *f, int64_t n) { atomic_store(&f->m->metrics.inflight, n); }

/* Spins until this thread has used ms more CPU. */
static void burn_cpu(double ms) {
  uint64_t end = hs_thread_cpu_ns() + (uint64_t)(ms * 1e6);
  volatile uint64_t x = 0;
  while (hs_thread_cpu_ns() < end)
    for (int i = 0; i < 10000; i++) x += (uint64_t)i;
}

/* With no request in flight a load runs at full speed, and its pace points (a few hundred per
 * MobileNetV2 reload) read no clock: each read is a system call. */
static void idle_points_read_no_clock(void **state) {
  (void)state;
  fake f;
  open_registry(&f);
  set_inflight(&f, 0);
  hs_pacer p;
  hs_pacer_begin(&p, f.r, 10);
  for (uint64_t i = 1; i <= 1000; i++) hs_pacer_point(&p, i << 16);
  burn_cpu(20); /* far past the burst: an idle load is not paced */
  hs_pacer_point(&p, 1001 << 16);
  assert_int_equal(p.clock_reads, 0);
  assert_int_equal(p.slept_ns, 0);
  hs_pacer_end(&p, 0, 0);
  close_registry(&f);
}

/* With requests in flight the load keeps to its share (10%): 10 ms of CPU past the 2 ms burst
 * sleeps about 80 ms. */
static void busy_points_pace(void **state) {
  (void)state;
  fake f;
  open_registry(&f);
  set_inflight(&f, 1);
  hs_pacer p;
  hs_pacer_begin(&p, f.r, 10);
  for (int i = 0; i < 10; i++) {
    burn_cpu(1);
    hs_pacer_point(&p, 0);
  }
  assert_true(p.clock_reads > 0);
  assert_true(p.slept_ns > 40 * 1000000ull);
  hs_pacer_end(&p, 0, 0);
  close_registry(&f);
}

/* CPU used while no request was in flight is not charged when requests come: the first busy point
 * starts the bucket full (before, the idle stretch was charged and the loader slept ~100 ms at once). */
static void idle_cpu_not_charged(void **state) {
  (void)state;
  fake f;
  open_registry(&f);
  set_inflight(&f, 0);
  hs_pacer p;
  hs_pacer_begin(&p, f.r, 10);
  hs_pacer_point(&p, 0);
  burn_cpu(10);
  set_inflight(&f, 1);
  hs_pacer_point(&p, 1 << 20);
  assert_true(p.clock_reads > 0);
  assert_int_equal(p.slept_ns, 0);
  burn_cpu(5); /* then paced from there */
  hs_pacer_point(&p, 1 << 20);
  assert_true(p.slept_ns > 10 * 1000000ull);
  hs_pacer_end(&p, 0, 0);
  close_registry(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(idle_points_read_no_clock),
      cmocka_unit_test(busy_points_pace),
      cmocka_unit_test(idle_cpu_not_charged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

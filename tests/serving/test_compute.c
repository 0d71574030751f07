/* test_compute.c - the compute pool (serving/compute.c): every run runs once, on a pool thread, the
 * pool never grows past its cap (runs beyond it wait their turn), and a run inside a run is inline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "serving/compute.h"

#define CAP 3
#define CALLERS 12
#define RUNS 50

static atomic_int g_running, g_peak, g_total;

typedef struct run_arg {
  pthread_t caller;
  int on_other_thread; /* set by the run: it did not run on its caller's thread */
  int nested_inline;   /* set by a nested run: it ran on the same thread as its parent */
  pthread_t parent;
} run_arg;

static void nested(void *p) {
  run_arg *a = p;
  a->nested_inline = pthread_equal(pthread_self(), a->parent);
}

static void body(void *p) {
  run_arg *a = p;
  int now = atomic_fetch_add(&g_running, 1) + 1;
  int peak = atomic_load(&g_peak);
  while (now > peak && !atomic_compare_exchange_weak(&g_peak, &peak, now)) {
  }
  a->on_other_thread = !pthread_equal(pthread_self(), a->caller);
  a->parent = pthread_self();
  hs_compute_run(nested, a);
  usleep(200); /* long enough that callers pile up at the cap */
  atomic_fetch_sub(&g_running, 1);
  atomic_fetch_add(&g_total, 1);
}

static void *caller(void *p) {
  int *bad = p;
  for (int i = 0; i < RUNS; i++) {
    run_arg a = {.caller = pthread_self()};
    hs_compute_run(body, &a);
    if (!a.on_other_thread || !a.nested_inline) (*bad)++;
  }
  return NULL;
}

static void inline_when_one_thread(void **state) {
  (void)state;
  run_arg a = {.caller = pthread_self()};
  run_arg b = {.parent = pthread_self()};
  hs_compute_run_for(1, nested, &b);
  assert_int_equal(b.nested_inline, 1); /* a one-thread run stays on its caller's thread */
  hs_compute_run_for(2, body, &a);
  assert_int_equal(a.on_other_thread, 1); /* a multi-thread run goes to the pool */
}

static void bounded_and_complete(void **state) {
  (void)state;
  assert_int_equal(hs_compute_start(CAP, 1), CAP);
  pthread_t th[CALLERS];
  int bad[CALLERS] = {0};
  for (int i = 0; i < CALLERS; i++) assert_int_equal(pthread_create(&th[i], NULL, caller, &bad[i]), 0);
  for (int i = 0; i < CALLERS; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < CALLERS; i++) assert_int_equal(bad[i], 0);
  assert_int_equal(atomic_load(&g_total), CALLERS * RUNS + 1); /* + inline_when_one_thread's */
  assert_true(atomic_load(&g_peak) <= CAP);
  assert_true(atomic_load(&g_peak) >= 2); /* the callers did overlap: the cap was what held them */
  assert_true(hs_compute_threads() <= CAP);
  assert_int_equal(hs_compute_max_threads(), CAP);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(inline_when_one_thread), cmocka_unit_test(bounded_and_complete)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_watcher.c - the repository watcher fires on a rename into the repository, on a `..data`
 * flip, on a new version dir appearing below a new model, after a kick, and on its polling timer;
 * with inotify switched off (`serve --no-inotify`), only on its polling timer and kicks.
 * Waits are bounded (10 s) so a broken watcher fails instead of hanging; nothing asserts speed. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "repo/repo.h"
#include "testfs.h"

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int count;
} counter;

static void on_change(void *user) {
  counter *c = user;
  pthread_mutex_lock(&c->mu);
  c->count++;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

/* Waits until the count exceeds `seen` (at most 10 s); returns the new count or -1 on timeout. */
static int wait_beyond(counter *c, int seen) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 10;
  pthread_mutex_lock(&c->mu);
  while (c->count <= seen) {
    if (pthread_cond_timedwait(&c->cv, &c->mu, &deadline) != 0) break;
  }
  int n = c->count > seen ? c->count : -1;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static int current(counter *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->count;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* Lets a burst's debounced callback through, then returns the quiet count. */
static int settle_count(counter *c) {
  struct timespec t = {0, 300 * 1000000L};
  nanosleep(&t, NULL);
  return current(c);
}

static void test_inotify_kick_and_flip(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char root[4096];
  snprintf(root, sizeof root, "%s/repo", dir);
  mkdirs(P("%s/m/1", root));
  counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  hs_watcher *w = NULL;
  hs_error err;
  hs_error_clear(&err);
  /* Polling every 10 min: anything sooner comes from inotify or a kick. */
  assert_int_equal(hs_watcher_start(root, 600000, true, on_change, &c, &w, &err), HS_OK);
  int seen = settle_count(&c);

  /* A version built elsewhere and renamed into the model dir. */
  write_text(P("%s/staging/model.onnx", dir), "v2");
  assert_int_equal(rename(P("%s/staging", dir), P("%s/m/2", root)), 0);
  assert_true(wait_beyond(&c, seen) > seen);
  seen = settle_count(&c);

  /* A file rewritten inside a version directory that appeared after the watcher started. */
  write_text(P("%s/m/2/model.onnx", root), "v2 again");
  assert_true(wait_beyond(&c, seen) > seen);
  seen = settle_count(&c);

  /* A new model with a version inside, created in two steps: both levels get watches. */
  mkdirs(P("%s/n", root));
  seen = settle_count(&c);
  mkdirs(P("%s/n/1", root));
  assert_true(wait_beyond(&c, seen) > seen);
  seen = settle_count(&c);
  write_text(P("%s/n/1/model.onnx", root), "n1");
  assert_true(wait_beyond(&c, seen) > seen);
  seen = settle_count(&c);

  /* A ConfigMap-style ..data flip. */
  mkdirs(P("%s/m/..2024_a/1", root));
  assert_int_equal(symlink("..2024_a", P("%s/m/..data", root)), 0);
  seen = settle_count(&c);
  mkdirs(P("%s/m/..2024_b/1", root));
  seen = settle_count(&c);
  assert_int_equal(symlink("..2024_b", P("%s/m/..data_tmp", root)), 0);
  assert_int_equal(rename(P("%s/m/..data_tmp", root), P("%s/m/..data", root)), 0);
  assert_true(wait_beyond(&c, seen) > seen);
  seen = settle_count(&c);

  /* A burst (200 files copied into a version) is debounced into a few callbacks, not 200+. */
  for (int i = 0; i < 200; i++) write_text(P("%s/m/2/part%03d.bin", root, i), "part");
  assert_true(wait_beyond(&c, seen) > seen);
  int after = settle_count(&c);
  assert_true(after - seen < 50);
  seen = after;

  /* A kick (what SIGHUP and POST /v2/repository/index do). */
  hs_watcher_kick(w);
  assert_true(wait_beyond(&c, seen) > seen);

  hs_watcher_stop(w);
  rm_tree(dir);
  free(dir);
}

static void test_polling_and_missing_root(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  hs_watcher *w = NULL;
  hs_error err;
  hs_error_clear(&err);
  /* The root does not exist yet: the watcher keeps polling and picks it up once it does. */
  char root[4096];
  snprintf(root, sizeof root, "%s/later", dir);
  assert_int_equal(hs_watcher_start(root, 100, true, on_change, &c, &w, &err), HS_OK);
  int seen = current(&c);
  assert_true(wait_beyond(&c, seen) > seen);
  seen = wait_beyond(&c, current(&c));
  assert_true(seen > 0); /* keeps firing: it never stops on an error */
  mkdirs(P("%s/m/1", root));
  seen = current(&c);
  assert_true(wait_beyond(&c, seen) > seen);
  hs_watcher_stop(w);
  rm_tree(dir);
  free(dir);
}

static void test_inotify_off(void **state) {
  (void)state;
  char *dir = make_tmpdir();
  char root[4096];
  snprintf(root, sizeof root, "%s/repo", dir);
  mkdirs(P("%s/m/1", root));
  counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  hs_watcher *w = NULL;
  hs_error err;
  hs_error_clear(&err);
  /* Polling every 10 min and no inotify: a new version stays unseen until a poll or a kick. */
  assert_int_equal(hs_watcher_start(root, 600000, false, on_change, &c, &w, &err), HS_OK);
  int seen = settle_count(&c);
  write_text(P("%s/staging/model.onnx", dir), "v2");
  assert_int_equal(rename(P("%s/staging", dir), P("%s/m/2", root)), 0);
  assert_int_equal(settle_count(&c), seen); /* the inotify watcher fires here (test above) */
  assert_int_equal(settle_count(&c), seen);
  hs_watcher_kick(w);
  assert_true(wait_beyond(&c, seen) > seen);
  hs_watcher_stop(w);

  /* The polling timer alone still fires. */
  assert_int_equal(hs_watcher_start(root, 100, false, on_change, &c, &w, &err), HS_OK);
  seen = current(&c);
  assert_true(wait_beyond(&c, seen) > seen);
  hs_watcher_stop(w);
  rm_tree(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_inotify_kick_and_flip),
      cmocka_unit_test(test_polling_and_missing_root),
      cmocka_unit_test(test_inotify_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

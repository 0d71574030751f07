/* test_watcher.c - the repository watcher fires on a rename into the repository, on a `..data`
 * flip, on a new version dir appearing below a new model, after a kick, and on its polling timer;
 * with inotify switched off (`serve --no-inotify`), only on its polling timer and kicks.
 * Waits are bounded (10 s) so a broken watcher fails instead of hanging; nothing asserts speed. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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

/* Asserts that the watcher fires after `seen` (within 10 s), then returns the settled count. */
static int expect_fire(counter *c, int seen) {
  assert_true(wait_beyond(c, seen) > seen);
  return settle_count(c);
}

/* A temporary directory, the repository root below it, and a watcher on that root counting its callbacks. */
typedef struct {
  char *dir;
  char root[4096];
  counter c;
  hs_watcher *w;
} fixture;

/* Makes DIR, names the root DIR/ROOT_NAME and, when with_model, creates ROOT/m/1. */
static void fixture_init(fixture *f, const char *root_name, bool with_model) {
  *f = (fixture){.dir = make_tmpdir(), .c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}};
  snprintf(f->root, sizeof f->root, "%s/%s", f->dir, root_name);
  if (with_model) mkdirs(P("%s/m/1", f->root));
}

static void fixture_start(fixture *f, int poll_ms, bool inotify) {
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_watcher_start(f->root, poll_ms, inotify, on_change, &f->c, &f->w, &err), HS_OK);
}

static void fixture_done(fixture *f) {
  hs_watcher_stop(f->w);
  rm_tree(f->dir);
  free(f->dir);
}

static void test_inotify_kick_and_flip(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "repo", true);
  const char *root = f.root;
  counter *c = &f.c;
  /* Polling every 10 min: anything sooner comes from inotify or a kick. */
  fixture_start(&f, 600000, true);
  int seen = settle_count(c);

  /* A version built elsewhere and renamed into the model dir. */
  write_text(P("%s/staging/model.onnx", f.dir), "v2");
  assert_int_equal(rename(P("%s/staging", f.dir), P("%s/m/2", root)), 0);
  seen = expect_fire(c, seen);

  /* A file rewritten inside a version directory that appeared after the watcher started. */
  write_text(P("%s/m/2/model.onnx", root), "v2 again");
  seen = expect_fire(c, seen);

  /* A new model with a version inside, created in two steps: both levels get watches. */
  mkdirs(P("%s/n", root));
  seen = settle_count(c);
  mkdirs(P("%s/n/1", root));
  seen = expect_fire(c, seen);
  write_text(P("%s/n/1/model.onnx", root), "n1");
  seen = expect_fire(c, seen);

  /* A ConfigMap-style ..data flip. */
  mkdirs(P("%s/m/..2024_a/1", root));
  assert_int_equal(symlink("..2024_a", P("%s/m/..data", root)), 0);
  seen = settle_count(c);
  mkdirs(P("%s/m/..2024_b/1", root));
  seen = settle_count(c);
  assert_int_equal(symlink("..2024_b", P("%s/m/..data_tmp", root)), 0);
  assert_int_equal(rename(P("%s/m/..data_tmp", root), P("%s/m/..data", root)), 0);
  seen = expect_fire(c, seen);

  /* A burst (200 files copied into a version) is debounced into a few callbacks, not 200+. */
  for (int i = 0; i < 200; i++) write_text(P("%s/m/2/part%03d.bin", root, i), "part");
  int after = expect_fire(c, seen);
  assert_true(after - seen < 50);
  seen = after;

  /* A kick (what SIGHUP and POST /v2/repository/index do). */
  hs_watcher_kick(f.w);
  assert_true(wait_beyond(c, seen) > seen);

  fixture_done(&f);
}

static void test_polling_and_missing_root(void **state) {
  (void)state;
  fixture f;
  /* The root does not exist yet: the watcher keeps polling and picks it up once it does. */
  fixture_init(&f, "later", false);
  counter *c = &f.c;
  fixture_start(&f, 100, true);
  int seen = current(c);
  assert_true(wait_beyond(c, seen) > seen);
  seen = wait_beyond(c, current(c));
  assert_true(seen > 0); /* keeps firing: it never stops on an error */
  mkdirs(P("%s/m/1", f.root));
  seen = current(c);
  assert_true(wait_beyond(c, seen) > seen);
  fixture_done(&f);
}

static void test_inotify_off(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "repo", true);
  counter *c = &f.c;
  /* Polling every 10 min and no inotify: a new version stays unseen until a poll or a kick. */
  fixture_start(&f, 600000, false);
  int seen = settle_count(c);
  write_text(P("%s/staging/model.onnx", f.dir), "v2");
  assert_int_equal(rename(P("%s/staging", f.dir), P("%s/m/2", f.root)), 0);
  assert_int_equal(settle_count(c), seen); /* the inotify watcher fires here (test above) */
  assert_int_equal(settle_count(c), seen);
  hs_watcher_kick(f.w);
  assert_true(wait_beyond(c, seen) > seen);
  hs_watcher_stop(f.w);

  /* The polling timer alone still fires. */
  fixture_start(&f, 100, false);
  seen = current(c);
  assert_true(wait_beyond(c, seen) > seen);
  fixture_done(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_inotify_kick_and_flip),
      cmocka_unit_test(test_polling_and_missing_root),
      cmocka_unit_test(test_inotify_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

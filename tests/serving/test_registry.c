/* test_registry.c - the registry on a real repository and the real engine: publish, acquire across swaps,
 * retire-after-last-request, failures that change nothing, unload/load, readiness; request threads run while
 * the loader publishes (run it under TSan/ASan too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "repo/repo_internal.h"
#include "serving/registry.h"

static const char *g_make_model; /* tools/testmodels/make_test_model.py */
static char g_root[256];

static void sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  assert_int_equal(system(cmd), 0);
}

/* Writes version v of model "m" (y = x + v) in a scratch folder, then renames it into place. */
static int g_slow; /* make_test_model.py --slow: a chain of MatMuls on one 256x256 weight (256 KiB) */

static void put_version(int v) {
  sh("set -e; d=$(mktemp -d %s.scratch.XXXXXX); /usr/bin/python3 %s $d/model.onnx --add %d --shape 1,4 --slow %d; "
     "mkdir -p %s/m; mv $d %s/m/%d",
     g_root, g_make_model, v, g_slow, g_root, g_root, v);
}

static hs_registry *open_registry(void) {
  hs_registry_options o = {.root = g_root, .settle_ms = 0, .instances = 2, .threads = 1, .watch = false};
  hs_registry *r = NULL;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_registry_create(&o, &r, &err);
  if (rc != HS_OK) fprintf(stderr, "registry: %s\n", err.message);
  assert_int_equal(rc, HS_OK);
  return r;
}

/* Runs x = [1,2,3,4] on the version a request acquires; returns the version and checks y = x + v. */
static int64_t infer_once(hs_model *m, int64_t want_version, int *status) {
  hs_version *v = NULL;
  *status = hs_model_acquire(m, want_version, &v);
  if (*status != HS_OK) return -1;
  float x[4] = {1, 2, 3, 4};
  hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {1, 4}, .data = x, .nbytes = sizeof x};
  hs_tensor out;
  memset(&out, 0, sizeof out);
  hs_backend_session *s = hs_version_take(v);
  hs_error err;
  int rc = hs_version_backend(v)->run(s, &in, 1, &out, 1, &err);
  int64_t ver = hs_version_number(v);
  bool ok = rc == HS_OK && out.nbytes == sizeof x;
  for (int i = 0; ok && i < 4; i++) ok = ((const float *)out.data)[i] == x[i] + (float)ver;
  hs_version_give(v, s);
  hs_version_release(v);
  *status = ok ? HS_OK : HS_INTERNAL;
  return ver;
}

static void rescan(hs_registry *r) {
  hs_error err;
  assert_int_equal(hs_registry_rescan_sync(r, &err), HS_OK);
}

static int64_t live(hs_registry *r) { return atomic_load(&hs_registry_metrics_get(r)->versions_live); }

/* A version whose last reference drops is freed by the loader thread moments later (so request
 * threads never pay for it): the live count once it has caught up, or after 10 s. */
static int64_t live_settled(hs_registry *r, int64_t want) {
  for (int i = 0; i < 1000 && live(r) != want; i++) usleep(10000);
  return live(r);
}

static void publish_and_fail(void **state) {
  (void)state;
  put_version(1);
  hs_registry *r = open_registry();
  hs_model *m = hs_registry_find(r, "m");
  assert_non_null(m);
  int st;
  assert_int_equal(infer_once(m, -1, &st), 1);
  assert_int_equal(st, HS_OK);

  /* a reference taken before the swap keeps version 1 alive and correct afterwards */
  hs_version *held = NULL;
  assert_int_equal(hs_model_acquire(m, 1, &held), HS_OK);
  put_version(2);
  rescan(r);
  assert_int_equal(infer_once(m, -1, &st), 2);
  assert_int_equal(live(r), 2); /* 2 serving + 1 retiring, still referenced */
  hs_model_status ms;
  hs_model_status_get(m, &ms);
  assert_int_equal(ms.serving_version, 2);
  assert_int_equal(ms.history[0].state, HS_VS_RETIRING);
  assert_int_equal(hs_version_number(held), 1);
  hs_version_release(held); /* the last reference: the loader frees version 1 now */
  assert_int_equal(live_settled(r, 1), 1);
  for (int i = 0; i < 1000; i++) {
    hs_model_status_get(m, &ms);
    if (ms.history[0].state == HS_VS_UNLOADED) break;
    usleep(10000);
  }
  assert_int_equal(ms.history[0].state, HS_VS_UNLOADED);
  assert_int_equal(infer_once(m, 1, &st), -1);
  assert_int_equal(st, HS_NOT_FOUND);

  /* garbage: refused, recorded once, version 2 keeps serving */
  sh("mkdir -p %s/m/3 && printf 'garbage' > %s/m/3/model.onnx", g_root, g_root);
  rescan(r);
  rescan(r); /* the same content is not retried */
  hs_model_status_get(m, &ms);
  assert_int_equal(ms.serving_version, 2);
  int failed = 0;
  for (size_t i = 0; i < ms.n; i++)
    if (ms.history[i].version == 3) {
      failed++;
      assert_int_equal(ms.history[i].state, HS_VS_FAILED);
      assert_string_equal(ms.history[i].reason, "load_error");
    }
  assert_int_equal(failed, 1);
  assert_int_equal(infer_once(m, -1, &st), 2);

  /* unload empties the model; load brings the policy's version back */
  hs_error err;
  assert_int_equal(hs_registry_unload_model(r, "m", &err), HS_OK);
  assert_int_equal(infer_once(m, -1, &st), -1);
  assert_int_equal(st, HS_UNAVAILABLE);
  assert_int_equal(live_settled(r, 0), 0);
  sh("rm -rf %s/m/3", g_root);
  assert_int_equal(hs_registry_load_model(r, "m", &err), HS_OK);
  assert_int_equal(infer_once(m, -1, &st), 2);
  assert_int_equal(hs_registry_load_model(r, "nope", &err), HS_NOT_FOUND);
  hs_registry_destroy(r);
  sh("rm -rf %s/m", g_root);
}

typedef struct {
  hs_model *m;
  atomic_bool stop;
  atomic_int errors;
  atomic_long runs;
} storm;

static void *client(void *arg) {
  storm *s = arg;
  int64_t last = 0;
  while (!atomic_load(&s->stop)) {
    int st;
    int64_t v = infer_once(s->m, -1, &st);
    if (st != HS_OK || v < last) atomic_fetch_add(&s->errors, 1); /* wrong answer or went backwards */
    last = v;
    atomic_fetch_add(&s->runs, 1);
  }
  return NULL;
}

static void swaps_under_load(void **state) {
  (void)state;
  put_version(1);
  hs_registry *r = open_registry();
  storm s = {.m = hs_registry_find(r, "m")};
  assert_non_null(s.m);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, client, &s), 0);
  for (int v = 2; v <= 8; v++) {
    put_version(v);
    rescan(r);
  }
  atomic_store(&s.stop, true);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_int_equal(atomic_load(&s.errors), 0);
  assert_true(atomic_load(&s.runs) > 0);
  assert_int_equal(live_settled(r, 1), 1); /* every retired version was freed after its last request */
  int st;
  assert_int_equal(infer_once(s.m, -1, &st), 8);
  hs_registry_destroy(r);
  sh("rm -rf %s/m", g_root);
}

typedef struct taker {
  hs_version *v;
  atomic_bool got;
  hs_backend_session *s;
} taker;

static void *take_one(void *arg) {
  taker *t = arg;
  t->s = hs_version_take(t->v);
  atomic_store(&t->got, true);
  return NULL;
}

/* While a swap overlaps two versions, their requests share the model's compute slots: with both of
 * version 1's sessions busy, a request on the new version 2 waits until one of them ends. */
static void swap_keeps_concurrency(void **state) {
  (void)state;
  put_version(1);
  hs_registry *r = open_registry(); /* instances = 2 */
  hs_model *m = hs_registry_find(r, "m");
  hs_version *v1 = NULL, *v2 = NULL;
  assert_int_equal(hs_model_acquire(m, 1, &v1), HS_OK);
  hs_backend_session *a = hs_version_take(v1), *b = hs_version_take(v1);
  put_version(2);
  rescan(r);
  assert_int_equal(hs_model_acquire(m, -1, &v2), HS_OK);
  assert_int_equal(hs_version_number(v2), 2);
  taker t = {.v = v2};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, take_one, &t), 0);
  usleep(200 * 1000);
  assert_false(atomic_load(&t.got)); /* version 2 has idle sessions, but the model's 2 slots are taken */
  hs_version_give(v1, a);
  for (int i = 0; i < 1000 && !atomic_load(&t.got); i++) usleep(10000);
  assert_true(atomic_load(&t.got));
  pthread_join(th, NULL);
  hs_version_give(v2, t.s);
  hs_version_give(v1, b);
  hs_version_release(v1);
  hs_version_release(v2);
  hs_registry_destroy(r);
  sh("rm -rf %s/m", g_root);
}

/* hs_registry_ready: not ready before a background start-up scan, ready after it; a new model whose only
 * version fails to load keeps a ready registry ready (with strict_readiness it does not, until the model
 * is gone); an unload is deliberate and changes nothing; the lame-duck period makes it unready. */
static void readiness(void **state) {
  (void)state;
  put_version(1);
  for (int strict = 0; strict < 2; strict++) {
    hs_registry_options o = {.root = g_root, .settle_ms = 0, .instances = 1, .threads = 1, .watch = false,
                             .background_start = true, .strict_readiness = strict};
    hs_registry *r = NULL;
    hs_error err;
    hs_error_clear(&err);
    assert_int_equal(hs_registry_create(&o, &r, &err), HS_OK);
    char why[256] = "";
    assert_false(hs_registry_ready(r, why, sizeof why));
    assert_non_null(strstr(why, "start-up"));
    rescan(r);
    assert_true(hs_registry_ready(r, why, sizeof why));
    int st;
    assert_int_equal(infer_once(hs_registry_find(r, "m"), -1, &st), 1);

    sh("mkdir -p %s/bad/1 && printf 'garbage' > %s/bad/1/model.onnx", g_root, g_root);
    rescan(r);
    hs_model_status ms;
    hs_model_status_get(hs_registry_find(r, "bad"), &ms);
    assert_int_equal(ms.n, 1);
    assert_int_equal(ms.history[0].state, HS_VS_FAILED);
    if (!strict) {
      assert_true(hs_registry_ready(r, why, sizeof why));
    } else {
      assert_false(hs_registry_ready(r, why, sizeof why));
      assert_non_null(strstr(why, "model bad"));
    }
    sh("rm -rf %s/bad", g_root);
    rescan(r);
    assert_true(hs_registry_ready(r, why, sizeof why));

    assert_int_equal(hs_registry_unload_model(r, "m", &err), HS_OK);
    assert_true(hs_registry_ready(r, why, sizeof why));
    assert_int_equal(hs_registry_load_model(r, "m", &err), HS_OK);
    assert_true(hs_registry_ready(r, why, sizeof why));

    hs_registry_begin_shutdown(r);
    assert_false(hs_registry_ready(r, why, sizeof why));
    assert_non_null(strstr(why, "shutting down"));
    assert_int_equal(infer_once(hs_registry_find(r, "m"), -1, &st), 1); /* still serving */
    hs_registry_destroy(r);
  }
}

/* Writes the manifest of m/<v> (every file's size and SHA-256), as `hotserve sign` would. */
static void write_manifest(int v) {
  char dir[512], model_dir[512], bound[4096];
  snprintf(dir, sizeof dir, "%s/m/%d", g_root, v);
  snprintf(model_dir, sizeof model_dir, "%s/m", g_root);
  assert_non_null(realpath(model_dir, bound));
  hs__listing l;
  hs__verdict vd;
  assert_int_equal(hs__list_dir(dir, bound, 0, 0, &l, &vd), HS__R_NONE);
  char *text = NULL;
  size_t len = 0;
  hs_error err;
  assert_int_equal(hs__manifest_build(&l, NULL, "m", v, &text, &len, &err), HS_OK);
  assert_int_equal(hs__write_file_atomic(dir, HS_REPO_MANIFEST_NAME, text, len, 0644, &err), HS_OK);
  free(text);
  hs__listing_free(&l);
}

/* Replaces a version's model.onnx, on the loader thread, after the scan verified the version and
 * right before the loader reads it (hs_registry_options.test_before_read). */
typedef struct tamper {
  int64_t version; /* the version to tamper with */
  int add;         /* the new file computes y = x + add */
  atomic_int calls, failures;
} tamper;

static void tamper_before_read(void *user, const char *model, int64_t version, const char *dir) {
  tamper *t = user;
  if (strcmp(model, "m") != 0 || version != t->version) return;
  atomic_fetch_add(&t->calls, 1);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "set -e; /usr/bin/python3 %s %s/new.tmp --add %d --shape 1,4 --slow %d; mv %s/new.tmp %s/model.onnx",
           g_make_model, dir, t->add, g_slow, dir, dir);
  if (system(cmd) != 0) atomic_fetch_add(&t->failures, 1); /* asserted on the test thread */
}

static const hs_version_status *status_of(const hs_model_status *ms, int64_t version) {
  const hs_version_status *last = NULL;
  for (size_t i = 0; i < ms->n; i++)
    if (ms->history[i].version == version) last = &ms->history[i];
  return last;
}

static uint64_t reason_count(_Atomic(hs_reason_counter *) const *head, const char *reason) {
  for (hs_reason_counter *c = atomic_load(head); c; c = c->next)
    if (strcmp(c->reason, reason) == 0) return atomic_load(&c->count);
  return 0;
}

/* Version 1 (with a manifest) served by a registry whose loader runs t's tamper hook before each
 * read; version 1's status entry in *vs (ms holds it). */
static hs_registry *open_tampered(tamper *t, hs_model **m, hs_model_status *ms, const hs_version_status **vs) {
  put_version(1);
  write_manifest(1);
  hs_registry_options o = {.root = g_root, .settle_ms = 0, .instances = 2, .threads = 1, .watch = false,
                           .test_before_read = tamper_before_read, .test_user = t};
  hs_registry *r = NULL;
  hs_error err;
  assert_int_equal(hs_registry_create(&o, &r, &err), HS_OK);
  *m = hs_registry_find(r, "m");
  int st;
  assert_int_equal(infer_once(*m, -1, &st), 1);
  assert_int_equal(st, HS_OK);
  hs_model_status_get(*m, ms);
  *vs = status_of(ms, 1);
  assert_non_null(*vs);
  return r;
}

/* Read once: a version whose model file is replaced after the scan verified it, before the loader
 * reads it, is never served. The loader reads the file once and hashes those very bytes against
 * the manifest, so it sees the replacement and refuses it (a loader that verified, then loaded by
 * path, would serve the replacement: y = x + 9 under version 2). */
static void replaced_after_verification_is_never_served(void **state) {
  (void)state;
  tamper t = {.version = 2, .add = 9};
  hs_model *m;
  hs_model_status ms;
  const hs_version_status *vs;
  hs_registry *r = open_tampered(&t, &m, &ms, &vs);
  int st;
  assert_true(vs->bytes_hashed > 0); /* the loader hashed what it loaded */
  assert_int_equal(vs->bytes_hashed, vs->bytes_read);

  put_version(2);
  write_manifest(2);
  rescan(r); /* scan: version 2 matches its manifest; then the hook replaces model.onnx */
  assert_int_equal(atomic_load(&t.calls), 1);
  assert_int_equal(atomic_load(&t.failures), 0);
  hs_version *v = NULL;
  assert_int_equal(hs_model_acquire(m, 2, &v), HS_NOT_FOUND);
  assert_int_equal(infer_once(m, -1, &st), 1); /* version 1 keeps serving, correct */
  assert_int_equal(st, HS_OK);
  /* the scan had checked names and sizes only (the loader hashes what it reads); after the load-time
   * mismatch the loader's next scan, 250 ms later by itself, checks the version in full and refuses
   * it for good: counted once, never retried, never served; its status entry goes from LOADING to
   * FAILED (one entry, not two) */
  for (int i = 0; i < 1000 && reason_count(&hs_model_metrics_get(m)->verify_failures, "manifest_mismatch") < 1; i++)
    usleep(10000);
  assert_int_equal(reason_count(&hs_model_metrics_get(m)->verify_failures, "manifest_mismatch"), 1);
  hs_model_status_get(m, &ms);
  vs = status_of(&ms, 2);
  assert_non_null(vs);
  assert_int_equal(vs->state, HS_VS_FAILED);
  assert_string_equal(vs->reason, "manifest_mismatch");
  int entries = 0;
  for (size_t i = 0; i < ms.n; i++) entries += ms.history[i].version == 2;
  assert_int_equal(entries, 1);
  rescan(r);
  assert_int_equal(reason_count(&hs_model_metrics_get(m)->verify_failures, "manifest_mismatch"), 1);
  assert_int_equal(atomic_load(&t.calls), 1); /* not read again */
  assert_int_equal(hs_model_acquire(m, 2, &v), HS_NOT_FOUND);
  assert_int_equal(infer_once(m, -1, &st), 1);

  /* without a manifest there is nothing to hash, but the loader still loads only the files the scan
   * settled on: a file replaced in between (here by a good copy) is refused as "changed", and the
   * next scan loads the new content */
  sh("rm -rf %s/m/2", g_root);
  t.version = 3;
  t.add = 3;
  put_version(3);
  rescan(r);
  assert_int_equal(atomic_load(&t.calls), 2);
  assert_int_equal(atomic_load(&t.failures), 0);
  hs_model_status_get(m, &ms);
  vs = status_of(&ms, 3);
  assert_non_null(vs);
  assert_int_equal(vs->state, HS_VS_FAILED);
  assert_string_equal(vs->reason, "changed");
  t.version = -1;
  rescan(r);
  assert_int_equal(infer_once(m, -1, &st), 3);
  assert_int_equal(st, HS_OK);
  hs_model_status_get(m, &ms);
  vs = status_of(&ms, 3);
  assert_int_equal(vs->bytes_hashed, 0);
  assert_true(vs->bytes_read > 0);
  hs_registry_destroy(r);
  sh("rm -rf %s/m", g_root);
}

/* The same refusal for a model whose 256 KiB weight is read straight into its tensor (read_into)
 * and compiled while the hash still reads it there (the loader gates the engine's frees on the hash,
 * hs_repo_bytes_gate_frees): the replacement (same size, y = x + 9) is decoded and its kernels
 * built, then refused by the verdict, never served, and leaves nothing behind: one live version,
 * holding version 1's bytes. */
static void replaced_big_after_verification_leaves_nothing(void **state) {
  (void)state;
  g_slow = 2;
  tamper t = {.version = 2, .add = 9};
  hs_model *m;
  hs_model_status ms;
  const hs_version_status *vs;
  hs_registry *r = open_tampered(&t, &m, &ms, &vs);
  int st;
  assert_int_equal(vs->bytes_hashed, vs->bytes_read);
  assert_true(vs->bytes_read > ((size_t)256 << 10));
  assert_true(vs->decode_ms > 0 && vs->compile_ms > 0); /* a streamed load, decode then compile */
  int64_t bytes1 = atomic_load(&hs_registry_metrics_get(r)->memory_bytes);
  assert_true(bytes1 > ((int64_t)256 << 10));

  put_version(2);
  write_manifest(2);
  rescan(r); /* version 2 verified by the scan, then replaced before the loader reads it */
  assert_int_equal(atomic_load(&t.calls), 1);
  assert_int_equal(atomic_load(&t.failures), 0);
  for (int i = 0; i < 1000 && reason_count(&hs_model_metrics_get(m)->verify_failures, "manifest_mismatch") < 1; i++)
    usleep(10000);
  assert_int_equal(reason_count(&hs_model_metrics_get(m)->verify_failures, "manifest_mismatch"), 1);
  hs_version *v = NULL;
  assert_int_equal(hs_model_acquire(m, 2, &v), HS_NOT_FOUND);
  assert_int_equal(infer_once(m, -1, &st), 1);
  assert_int_equal(st, HS_OK);
  assert_int_equal(live(r), 1);
  assert_int_equal(atomic_load(&hs_registry_metrics_get(r)->memory_bytes), bytes1);
  hs_registry_destroy(r);
  sh("rm -rf %s/m", g_root);
  g_slow = 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_registry path/to/make_test_model.py\n");
    return 2;
  }
  g_make_model = argv[1];
  snprintf(g_root, sizeof g_root, "/tmp/hs-registry-XXXXXX");
  if (!mkdtemp(g_root)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(publish_and_fail),
      cmocka_unit_test(swaps_under_load),
      cmocka_unit_test(swap_keeps_concurrency),
      cmocka_unit_test(readiness),
      cmocka_unit_test(replaced_after_verification_is_never_served),
      cmocka_unit_test(replaced_big_after_verification_leaves_nothing),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
  return rc;
}

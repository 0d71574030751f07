/* test_repo.c - repository scan, config, version policy, manifests, signatures, safety rules and
 * publishing, on real files in temporary directories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "../rss.h"
#include "base/wblock.h"

#include "repo/publish.h"
#include "repo/repo.h"
#include "repo/repo_internal.h"
#include "testfs.h"

typedef struct {
  char *dir;  /* scratch directory */
  char *root; /* dir/repo: the model repository */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->dir = make_tmpdir();
  f->root = strdup(P("%s/repo", f->dir));
  mkdirs(f->root);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  rm_tree(f->dir);
  free(f->dir);
  free(f->root);
  free(f);
  return 0;
}

/* A version directory with a model file and an external-data file, all mtimes 1 h old (settled). */
static void make_version(const char *dir, const char *payload) {
  write_text(P("%s/model.onnx", dir), payload);
  write_text(P("%s/weights/w.bin", dir), "weights");
  age_file(P("%s/model.onnx", dir), 3600);
  age_file(P("%s/weights/w.bin", dir), 3600);
  age_file(P("%s/weights", dir), 3600);
  age_file(dir, 3600);
}

static hs_repo *open_repo(const char *root, bool require, const hs_trusted_keys *keys, int settle_ms) {
  hs_repo_options o = {0};
  o.require_signature = require;
  o.keys = keys;
  o.settle_ms = settle_ms;
  hs_repo *r = NULL;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_repo_open(root, &o, &r, &err), HS_OK);
  return r;
}

static hs_repo_snapshot *scan(hs_repo *r) {
  hs_repo_snapshot *s = NULL;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_repo_scan(r, &s, &err);
  if (rc != HS_OK) fail_msg("scan: %s", err.message);
  return s;
}

static const hs_repo_model *find_model(const hs_repo_snapshot *s, const char *name) {
  for (size_t i = 0; i < s->n_models; i++)
    if (strcmp(s->models[i].name, name) == 0) return &s->models[i];
  return NULL;
}

static const hs_repo_version *find_version(const hs_repo_snapshot *s, const char *model, int64_t v) {
  const hs_repo_model *m = find_model(s, model);
  if (!m) return NULL;
  for (size_t i = 0; i < m->n_versions; i++)
    if (m->versions[i].version == v) return &m->versions[i];
  return NULL;
}

/* Scans once and returns the state of model/version (-1 when not listed), copying reason_code. */
static int state_of(hs_repo *r, const char *model, int64_t v, char *code) {
  hs_repo_snapshot *s = scan(r);
  const hs_repo_version *ver = find_version(s, model, v);
  int st = ver ? (int)ver->state : -1;
  if (code) snprintf(code, 32, "%s", ver ? ver->reason_code : "");
  hs_repo_snapshot_free(s);
  return st;
}

/* Asserts that version v of model is in state want, with the reason code want_code. */
static void expect_state(hs_repo *r, const char *model, int64_t v, int want, const char *want_code) {
  char code[32];
  assert_int_equal(state_of(r, model, v, code), want);
  assert_string_equal(code, want_code);
}

static void sign(const char *dir, const char *key) {
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_repo_sign_dir(dir, key, &err);
  if (rc != HS_OK) fail_msg("sign %s: %s", dir, err.message);
}

static hs_trusted_keys *trust(const char *path) {
  hs_trusted_keys *k = NULL;
  hs_error err;
  hs_error_clear(&err);
  const char *paths[] = {path};
  int rc = hs_trusted_keys_load(paths, 1, &k, &err);
  if (rc != HS_OK) fail_msg("trust %s: %s", path, err.message);
  return k;
}

/* ---- config ---- */

static void test_config_defaults_and_full(void **state) {
  fixture *f = *state;
  hs_model_config c;
  hs_error err;
  hs_error_clear(&err);
  mkdirs(P("%s/m", f->root));
  assert_int_equal(hs_repo_load_config(f->root, "m", &c, &err), HS_OK);
  assert_string_equal(c.backend, "onnx");
  assert_int_equal(c.policy, HS_POLICY_LATEST);
  assert_int_equal(c.latest_n, 1);
  assert_int_equal(c.warmup_runs, 1);
  assert_int_equal(c.n_inputs, 0);

  write_text(P("%s/m/config.json", f->root),
             "{\"backend\":\"onnx\",\"version_policy\":{\"specific\":{\"versions\":[1,3]}},"
             "\"warmup\":{\"runs\":5,\"inputs\":\"random\"},\"golden\":{\"enabled\":true,\"rtol\":0.01,"
             "\"atol\":0.5},\"threads\":2,\"instances\":4,"
             "\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-1,4]}],"
             "\"outputs\":[{\"name\":\"y\",\"datatype\":\"INT64\",\"shape\":[1]}]}");
  assert_int_equal(hs_repo_load_config(f->root, "m", &c, &err), HS_OK);
  assert_int_equal(c.policy, HS_POLICY_SPECIFIC);
  assert_int_equal(c.n_specific, 2);
  assert_int_equal(c.specific[1], 3);
  assert_int_equal(c.warmup_runs, 5);
  assert_int_equal(c.warmup_kind, HS_WARMUP_RANDOM);
  assert_true(c.golden_check);
  assert_true(c.golden_rtol == 0.01 && c.golden_atol == 0.5);
  assert_int_equal(c.threads, 2);
  assert_int_equal(c.instances, 4);
  assert_int_equal(c.n_inputs, 1);
  assert_string_equal(c.inputs[0].name, "x");
  assert_int_equal(c.inputs[0].dtype, HS_DT_FLOAT32);
  assert_int_equal(c.inputs[0].ndim, 2);
  assert_int_equal(c.inputs[0].dims[0], -1);
  assert_int_equal(c.outputs[0].dtype, HS_DT_INT64);
}

static void expect_config_error(const char *text, int code, const char *needle) {
  hs_model_config c;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_repo_parse_config(text, strlen(text), &c, &err);
  if (rc != code || !strstr(err.message, needle))
    fail_msg("config %s: got %d '%s', want %d mentioning '%s'", text, rc, err.message, code, needle);
  assert_string_equal(c.backend, "onnx"); /* left at defaults */
}

static void test_config_errors(void **state) {
  fixture *f = *state;
  expect_config_error("{\"bakend\":\"onnx\"}", HS_PARSE, "bakend");
  expect_config_error("{\"version_policy\":{\"latest\":{\"num_versions\":0}}}", HS_PARSE, "num_versions");
  expect_config_error("{\"version_policy\":{\"newest\":{}}}", HS_PARSE, "version_policy");
  expect_config_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FLOAT\",\"shape\":[1]}]}", HS_PARSE,
                      "inputs[0].datatype");
  expect_config_error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,2,3,4,5,6,7,8,9]}]}",
                      HS_PARSE, "inputs[0].shape");
  expect_config_error("{\"warmup\":{\"runs\":-1}}", HS_PARSE, "warmup.runs");
  expect_config_error("[1,2]", HS_PARSE, "object");
  expect_config_error("{\"threads\":1,", HS_PARSE, "not JSON");
  expect_config_error("{\"a\":1,\"a\":2}", HS_PARSE, "not JSON");
  expect_config_error("{\"backend\":\"../../lib/evil.so\"}", HS_VERIFY, "leads out");
  expect_config_error("{\"backend\":\"/usr/lib/evil.so\"}", HS_VERIFY, "absolute");

  /* A config.json symlink out of the model dir is refused; a scan reports it on the model. */
  write_text(P("%s/outside.json", f->dir), "{}");
  mkdirs(P("%s/m/1", f->root));
  assert_int_equal(symlink(P("%s/outside.json", f->dir), P("%s/m/config.json", f->root)), 0);
  hs_model_config c;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_repo_load_config(f->root, "m", &c, &err), HS_VERIFY);
  hs_repo *r = open_repo(f->root, false, NULL, 0);
  hs_repo_snapshot *s = scan(r);
  const hs_repo_model *m = find_model(s, "m");
  assert_non_null(m);
  assert_int_equal(m->config_status, HS_VERIFY);
  assert_string_equal(m->config_reason_code, "unsafe_path");
  assert_int_equal(m->n_versions, 0);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);

  /* Too big: limit. */
  unlink(P("%s/m/config.json", f->root));
  char *big = malloc((2 << 20) + 1);
  memset(big, ' ', 2 << 20);
  big[0] = '{';
  big[(2 << 20) - 1] = '}';
  big[2 << 20] = '\0';
  write_text(P("%s/m/config.json", f->root), big);
  free(big);
  assert_int_equal(hs_repo_load_config(f->root, "m", &c, &err), HS_LIMIT);
}

/* The rollout block: the documented defaults, the contract's shape, and each refusal naming its key. */
static void test_config_rollout(void **state) {
  (void)state;
  hs_model_config c;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_repo_parse_config("{}", 2, &c, &err), HS_OK);
  assert_int_equal(c.rollout.strategy, HS_ROLLOUT_IMMEDIATE);
  assert_true(c.rollout.weight == 10 && c.rollout.fraction == 1 && c.rollout.min_requests == 1000);
  assert_true(c.rollout.max_seconds == 300 && c.rollout.max_error_rate == 0.01 && c.rollout.max_latency_ratio == 1.5);
  assert_true(c.rollout.output_rtol == 1e-3 && c.rollout.output_atol == 1e-4 && c.rollout.max_disagreement_rate == 0);
  const char *canary = "{\"rollout\": {\"strategy\": \"canary\", \"weight\": 20, \"min_requests\": 2000,"
                       " \"max_seconds\": 60, \"max_error_rate\": 0.01, \"max_latency_ratio\": 1.5}}";
  assert_int_equal(hs_repo_parse_config(canary, strlen(canary), &c, &err), HS_OK);
  assert_int_equal(c.rollout.strategy, HS_ROLLOUT_CANARY);
  assert_true(c.rollout.weight == 20 && c.rollout.min_requests == 2000 && c.rollout.max_seconds == 60);
  assert_true(c.rollout.max_error_rate == 0.01 && c.rollout.max_latency_ratio == 1.5);
  const char *shadow = "{\"rollout\": {\"strategy\": \"shadow\", \"fraction\": 0.25, \"output_rtol\": 0.01,"
                       " \"output_atol\": 0.5, \"max_disagreement_rate\": 0.1}}";
  assert_int_equal(hs_repo_parse_config(shadow, strlen(shadow), &c, &err), HS_OK);
  assert_int_equal(c.rollout.strategy, HS_ROLLOUT_SHADOW);
  assert_true(c.rollout.fraction == 0.25 && c.rollout.output_rtol == 0.01 && c.rollout.output_atol == 0.5);
  assert_true(c.rollout.max_disagreement_rate == 0.1);
  expect_config_error("{\"rollout\":{\"strategy\":\"blue-green\"}}", HS_PARSE, "rollout.strategy");
  expect_config_error("{\"rollout\":{\"weight\":101}}", HS_PARSE, "rollout.weight");
  expect_config_error("{\"rollout\":{\"fraction\":1.5}}", HS_PARSE, "rollout.fraction");
  expect_config_error("{\"rollout\":{\"min_requests\":0}}", HS_PARSE, "rollout.min_requests");
  expect_config_error("{\"rollout\":{\"min_requests\":2.5}}", HS_PARSE, "rollout.min_requests");
  expect_config_error("{\"rollout\":{\"max_seconds\":0}}", HS_PARSE, "rollout.max_seconds");
  expect_config_error("{\"rollout\":{\"max_error_rate\":-0.1}}", HS_PARSE, "rollout.max_error_rate");
  expect_config_error("{\"rollout\":{\"max_latency_ratio\":\"2\"}}", HS_PARSE, "rollout.max_latency_ratio");
  expect_config_error("{\"rollout\":{\"wieght\":20}}", HS_PARSE, "wieght");
  expect_config_error("{\"rollout\":[]}", HS_PARSE, "rollout must be an object");
}

/* ---- layout and policy ---- */

static void test_layout_and_policies(void **state) {
  fixture *f = *state;
  for (int v = 1; v <= 3; v++) make_version(P("%s/b/%d", f->root, v), P("model v%d", v));
  make_version(P("%s/a/7", f->root), "a7");
  mkdirs(P("%s/empty", f->root));            /* a model without versions yet */
  mkdirs(P("%s/.hidden/1", f->root));         /* dot dirs are never models */
  mkdirs(P("%s/b/.staging-abc", f->root));   /* nor versions */
  mkdirs(P("%s/b/01", f->root));             /* leading zero: not a version */
  mkdirs(P("%s/b/latest", f->root));
  write_text(P("%s/README", f->root), "not a model");

  hs_repo *r = open_repo(f->root, false, NULL, 2000);
  hs_repo_snapshot *s = scan(r);
  assert_int_equal(s->n_models, 3);
  assert_string_equal(s->models[0].name, "a");
  assert_string_equal(s->models[1].name, "b");
  assert_string_equal(s->models[2].name, "empty");
  assert_int_equal(s->models[2].n_versions, 0);
  const hs_repo_model *b = find_model(s, "b");
  assert_int_equal(b->config_status, HS_OK);
  assert_int_equal(b->n_versions, 1); /* latest 1 */
  assert_int_equal(b->versions[0].version, 3);
  assert_int_equal(b->versions[0].state, HS_VERSION_READY);
  assert_non_null(strstr(b->versions[0].model_path, "/b/3/model.onnx"));
  assert_int_equal(b->versions[0].n_files, 2);
  assert_int_equal(b->versions[0].total_bytes, strlen("model v3") + strlen("weights"));
  hs_repo_snapshot_free(s);

  /* Each version policy selects its versions of b (1, 2 and 3 are present). */
  static const struct {
    const char *config;
    size_t n;
    int64_t want[3];
  } policies[] = {
      {"{\"version_policy\":{\"latest\":{\"num_versions\":2}}}", 2, {2, 3}},
      {"{\"version_policy\":{\"all\":{}}}", 3, {1, 2, 3}},
      {"{\"version_policy\":{\"specific\":{\"versions\":[1,3,9]}}}", 2, {1, 3}},
  };
  for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++) {
    write_text(P("%s/b/config.json", f->root), policies[i].config);
    s = scan(r);
    b = find_model(s, "b");
    assert_int_equal(b->n_versions, policies[i].n);
    for (size_t k = 0; k < policies[i].n; k++) assert_int_equal(b->versions[k].version, policies[i].want[k]);
    hs_repo_snapshot_free(s);
  }

  /* Latest 1 with a newer version still being copied (fresh mtimes, no manifest): the pending
   * version is listed, and the newest READY one is still selected beside it. */
  unlink(P("%s/b/config.json", f->root));
  write_text(P("%s/b/4/model.onnx", f->root), "half a mod");
  s = scan(r);
  b = find_model(s, "b");
  assert_int_equal(b->n_versions, 2);
  assert_int_equal(b->versions[0].version, 3);
  assert_int_equal(b->versions[0].state, HS_VERSION_READY);
  assert_int_equal(b->versions[1].version, 4);
  assert_int_equal(b->versions[1].state, HS_VERSION_PENDING);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);

  /* An unreadable root fails the scan itself. */
  r = open_repo(P("%s/nope", f->dir), false, NULL, 0);
  hs_repo_snapshot *none = NULL;
  hs_error err;
  assert_int_equal(hs_repo_scan(r, &none, &err), HS_IO);
  assert_null(none);
  hs_repo_close(r);
}

/* ---- manifests ---- */

static void test_manifest_states(void **state) {
  fixture *f = *state;
  const char *v1 = P("%s/m/1", f->root);
  char v1s[4096];
  snprintf(v1s, sizeof v1s, "%s", v1);
  make_version(v1s, "model bytes");
  sign(v1s, NULL);
  char code[32];
  hs_repo *r = open_repo(f->root, false, NULL, 0);
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);

  hs_repo_snapshot *s = scan(r);
  char fp1[65];
  snprintf(fp1, sizeof fp1, "%s", find_version(s, "m", 1)->fingerprint);
  assert_int_equal(strlen(fp1), 64);
  hs_repo_snapshot_free(s);

  /* One changed byte, same size. */
  write_text(P("%s/model.onnx", v1s), "model bytez");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  /* Restored content: READY again with the same fingerprint. */
  write_text(P("%s/model.onnx", v1s), "model bytes");
  s = scan(r);
  assert_int_equal(find_version(s, "m", 1)->state, HS_VERSION_READY);
  assert_string_equal(find_version(s, "m", 1)->fingerprint, fp1);
  hs_repo_snapshot_free(s);

  /* An extra file is a mismatch. */
  write_text(P("%s/extra.txt", v1s), "x");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  unlink(P("%s/extra.txt", v1s));
  /* A missing file is a mismatch. */
  rename(P("%s/weights/w.bin", v1s), P("%s/w.bin.moved", f->dir));
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  rename(P("%s/w.bin.moved", f->dir), P("%s/weights/w.bin", v1s));
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);

  /* Malformed manifests. */
  write_text(P("%s/hotserve-manifest.json", v1s), "{\"format\":\"hotserve-manifest/1\",\"files\":[");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "bad_manifest");
  write_text(P("%s/hotserve-manifest.json", v1s),
             "{\"format\":\"hotserve-manifest/1\",\"files\":[{\"path\":\"../../etc/passwd\",\"size\":1,"
             "\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]}");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "unsafe_path");
  write_text(P("%s/hotserve-manifest.json", v1s),
             "{\"format\":\"hotserve-manifest/1\",\"files\":[{\"path\":\"/etc/passwd\",\"size\":1,"
             "\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]}");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "unsafe_path");
  write_text(P("%s/hotserve-manifest.json", v1s),
             "{\"format\":\"hotserve-manifest/1\",\"files\":[{\"path\":\"model.onnx\",\"size\":99999999999999,"
             "\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\"}]}");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "limit");
  hs_repo_close(r);
}

/* Unchanged files are hashed once: rescans (even of a re-signed version where only one file
 * changed) do not read the others again. */
static void test_hash_cache(void **state) {
  fixture *f = *state;
  char big[200001];
  memset(big, 'b', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  write_text(P("%s/m/1/model.onnx", f->root), big);
  write_text(P("%s/m/1/small.txt", f->root), "small");
  sign(P("%s/m/1", f->root), NULL);
  hs_repo *r = open_repo(f->root, false, NULL, 0);
  char code[32];
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  uint64_t first = hs__repo_bytes_hashed(r);
  assert_int_equal(first, 200000 + 5);
  for (int i = 0; i < 3; i++) assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  assert_int_equal(hs__repo_bytes_hashed(r), first);
  write_text(P("%s/m/1/small.txt", f->root), "SMALL!");
  sign(P("%s/m/1", f->root), NULL);
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  assert_int_equal(hs__repo_bytes_hashed(r), first + 6);
  hs_repo_close(r);
}

/* A new scan of r (*s: the caller frees it) and m's version 1 in it, which must be READY. */
static const hs_repo_version *scan_ready_v1(hs_repo *r, hs_repo_snapshot **s) {
  *s = scan(r);
  const hs_repo_version *rv = find_version(*s, "m", 1);
  assert_non_null(rv);
  assert_int_equal(rv->state, HS_VERSION_READY);
  return rv;
}

/* Model m, version 1 ("model bytes" + weights, signed manifest) in v1 (m's folder in mdir), and a
 * repository opened on it that leaves the hashing to the read, as the server runs
 * (defer_content_check). */
static hs_repo *open_deferred_v1(const fixture *f, char v1[4096], char mdir[4096]) {
  snprintf(v1, 4096, "%s", P("%s/m/1", f->root));
  snprintf(mdir, 4096, "%s", P("%s/m", f->root));
  make_version(v1, "model bytes");
  sign(v1, NULL);
  hs_repo_options o = {.settle_ms = 0, .defer_content_check = true};
  hs_repo *r = NULL;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_repo_open(f->root, &o, &r, &err), HS_OK);
  return r;
}

/* Read once (read.c) with a scanner that leaves the hashing to it (defer_content_check, as the
 * server runs): the scan checks a new version's names and sizes only; hs_repo_read_version returns
 * the bytes it read and hashed, and refuses bytes that differ from the manifest; once a version was
 * READY, a change of its files' stat keys has the scan hash it in full (INVALID while it differs,
 * READY once it matches), and an unchanged version is not hashed again. */
static void test_read_once_and_deferred_check(void **state) {
  fixture *f = *state;
  char v1[4096], mdir[4096];
  hs_repo *r = open_deferred_v1(f, v1, mdir);
  hs_error err;
  hs_error_clear(&err);

  hs_repo_snapshot *s = NULL;
  const hs_repo_version *rv = scan_ready_v1(r, &s);
  assert_int_equal(hs__repo_bytes_hashed(r), 0); /* names and sizes only */
  hs_repo_bytes *b = NULL;
  char code[32];
  assert_int_equal(hs_repo_read_version(mdir, rv, false, NULL, &b, code, &err), HS_OK);
  assert_true(b->verified);
  assert_int_equal(b->n_files, 2);
  assert_int_equal(b->bytes_read, strlen("model bytes") + strlen("weights"));
  assert_int_equal(b->bytes_hashed, b->bytes_read);
  assert_int_equal(b->model->len, strlen("model bytes"));
  assert_memory_equal(b->model->data, "model bytes", b->model->len);
  hs_repo_bytes_free(b);

  /* one changed byte, same size, after the scan said READY: the read refuses the bytes */
  write_text(P("%s/model.onnx", v1), "model bytez");
  b = NULL;
  assert_int_equal(hs_repo_read_version(mdir, rv, false, NULL, &b, code, &err), HS_VERIFY);
  assert_null(b);
  assert_string_equal(code, "manifest_mismatch");
  assert_non_null(strstr(err.message, "model.onnx"));
  /* the next scan sees a file's stat key changed in a version that was READY and hashes it in full
   * (issue 16, class 7): refused while it differs, also after a recheck */
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  uint64_t hashed = hs__repo_bytes_hashed(r);
  assert_true(hashed > 0);
  hs_repo_version now;
  hs_repo_recheck(r, "m", mdir, rv, &now);
  assert_int_equal(now.state, HS_VERSION_INVALID);
  assert_string_equal(now.reason_code, "manifest_mismatch");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  /* restored: READY after a full check; an unchanged version then reads no contents */
  write_text(P("%s/model.onnx", v1), "model bytes");
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  hashed = hs__repo_bytes_hashed(r);
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  assert_int_equal(hs__repo_bytes_hashed(r), hashed);
  /* and its next same-size change is hashed in full again */
  write_text(P("%s/model.onnx", v1), "model bytez");
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  assert_true(hs__repo_bytes_hashed(r) > hashed);

  /* new content under the same version after the scan (another manifest): "changed" */
  write_text(P("%s/model.onnx", v1), "model bytes");
  hs_repo_snapshot_free(s);
  s = scan(r);
  rv = find_version(s, "m", 1);
  write_text(P("%s/model.onnx", v1), "other model!");
  sign(v1, NULL);
  assert_int_equal(hs_repo_read_version(mdir, rv, false, NULL, &b, code, &err), HS_VERIFY);
  assert_string_equal(code, "changed");
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
}

/* A mismatch only the load-time read sees (the file changed after its manifest was written, before
 * the first scan, same size): hs_repo_recheck decides the version at once by hashing it in full.
 * Settled files: INVALID manifest_mismatch, and the next scan says the same without hashing again.
 * Files still within the settle window (a copy in progress): PENDING, and later scans check them in
 * full (hashes cached by stat key) until they match (READY) or settle (INVALID). */
static void test_recheck_decides_at_once(void **state) {
  fixture *f = *state;
  char v1[4096], mdir[4096];
  hs_repo *r = open_deferred_v1(f, v1, mdir);
  write_text(P("%s/model.onnx", v1), "model bytez"); /* after the manifest, before any scan */
  age_file(P("%s/model.onnx", v1), 3600);
  hs_repo_snapshot *s = NULL;
  const hs_repo_version *rv = scan_ready_v1(r, &s); /* names and sizes match */
  assert_int_equal(hs__repo_bytes_hashed(r), 0);
  hs_repo_version now;
  hs_repo_recheck(r, "m", mdir, rv, &now);
  assert_int_equal(now.state, HS_VERSION_INVALID);
  assert_string_equal(now.reason_code, "manifest_mismatch");
  assert_non_null(strstr(now.reason, "model.onnx"));
  uint64_t hashed = hs__repo_bytes_hashed(r);
  assert_true(hashed >= strlen("model bytez"));
  hs_repo_snapshot_free(s);
  s = scan(r); /* the same verdict, same fingerprint, nothing hashed again */
  rv = find_version(s, "m", 1);
  assert_int_equal(rv->state, HS_VERSION_INVALID);
  assert_string_equal(rv->fingerprint, now.fingerprint);
  assert_int_equal(hs__repo_bytes_hashed(r), hashed);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);

  /* the same with files written just now and a settle window of a minute: undecided */
  hs_repo_options o = {.settle_ms = 60000, .defer_content_check = true};
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_repo_open(f->root, &o, &r, &err), HS_OK);
  write_text(P("%s/model.onnx", v1), "model bytey");
  rv = scan_ready_v1(r, &s);
  hs_repo_recheck(r, "m", mdir, rv, &now);
  assert_int_equal(now.state, HS_VERSION_PENDING);
  hs_repo_snapshot_free(s);
  expect_state(r, "m", 1, HS_VERSION_PENDING, "manifest_mismatch"); /* still checked in full */
  write_text(P("%s/model.onnx", v1), "model bytes"); /* the copy completes */
  expect_state(r, "m", 1, HS_VERSION_READY, "");
  hs_repo_close(r);
}

/* Hashing beside the load (hs_repo_read_start): the buffers handed out are the buffers hashed.
 * A file rewritten (same size, other bytes) after the read changes neither the buffer nor the
 * verdict; a file rewritten before the read is refused by the verdict, also when the caller
 * released the buffers before it asked (the hash thread then frees them: ASan checks both paths). */
static void test_read_start_hashes_what_it_hands_out(void **state) {
  fixture *f = *state;
  char v1[4096], mdir[4096];
  hs_repo *r = open_deferred_v1(f, v1, mdir);
  hs_error err;
  hs_error_clear(&err);
  hs_repo_snapshot *s = NULL;
  const hs_repo_version *rv = scan_ready_v1(r, &s);
  char code[32] = "";

  hs_repo_bytes *b = NULL;
  assert_int_equal(hs_repo_read_start(mdir, rv, false, NULL, &b, code, &err), HS_OK);
  write_text(P("%s/model.onnx", v1), "model bytez"); /* after the read: not what was handed out */
  assert_memory_equal(b->model->data, "model bytes", b->model->len);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK); /* the same verdict again */
  assert_true(b->verified);
  assert_int_equal(b->bytes_hashed, strlen("model bytes") + strlen("weights"));
  assert_memory_equal(b->model->data, "model bytes", b->model->len);
  hs_repo_bytes_free(b);

  /* the file now differs from the manifest: the read hands the bytes out, the verdict refuses them */
  b = NULL;
  assert_int_equal(hs_repo_read_start(mdir, rv, false, NULL, &b, code, &err), HS_OK);
  assert_memory_equal(b->model->data, "model bytez", b->model->len);
  hs_repo_bytes_release(b); /* done with them, maybe before the hash is */
  hs_error_clear(&err);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_VERIFY);
  assert_string_equal(code, "manifest_mismatch");
  assert_non_null(strstr(err.message, "model.onnx"));
  assert_false(b->verified);
  assert_null(b->files[0].data); /* freed by whichever finished last */
  assert_null(b->files[1].data);
  hs_repo_bytes_free(b);

  /* freed without asking for the verdict: the hash is waited for, nothing leaks */
  b = NULL;
  assert_int_equal(hs_repo_read_start(mdir, rv, false, NULL, &b, code, &err), HS_OK);
  hs_repo_bytes_free(b);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
}

/* ---- streaming the model file (hs_repo_read_stream_start) ---- */

#define STREAM_FILE_BYTES ((size_t)12 << 20) /* > the ring (4 pieces of 256 KiB): its buffers are reused */

static void write_bytes_at(const char *path, size_t off, const void *data, size_t n) {
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, data, n, (off_t)off), (ssize_t)n);
  close(fd);
}

static void rewrite_file(const char *path, const uint8_t *content, size_t size) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(content, 1, size, fp), size);
  fclose(fp);
}

/* Writes size bytes of a pattern (byte i: i * mul + (i >> shift)) to path, dated an hour back; returns
 * them (the caller frees them). */
static uint8_t *write_pattern(const char *path, size_t size, unsigned mul, int shift) {
  uint8_t *c = malloc(size);
  assert_non_null(c);
  for (size_t i = 0; i < size; i++) c[i] = (uint8_t)(i * mul + (i >> shift));
  rewrite_file(path, c, size);
  age_file(path, 3600);
  return c;
}

/* Model m, version 1: a STREAM_FILE_BYTES model.onnx (a byte pattern, returned in *content) and
 * weights, signed; a repository that leaves the hashing to the read, scanned: *rv READY. */
static hs_repo *open_stream_v1(const fixture *f, char v1[4096], char mdir[4096], uint8_t **content,
                               hs_repo_snapshot **s, const hs_repo_version **rv) {
  hs_repo *r = open_deferred_v1(f, v1, mdir);
  *content = write_pattern(P("%s/model.onnx", v1), STREAM_FILE_BYTES, 131, 12);
  sign(v1, NULL);
  *rv = scan_ready_v1(r, s);
  return r;
}

static bool g_drain_into; /* drain reads every other piece straight into got (read_into), 1 MiB at a time */

/* Reads the stream to its end into got (at most cap bytes); returns the bytes read. A hook runs
 * once, right after the first piece arrived. */
static size_t drain(const hs_backend_stream *st, uint8_t *got, size_t cap, void (*after_first)(void *), void *user) {
  size_t n = 0;
  for (int pieces = 0; pieces < 256; pieces++) { /* (a bound: 12 MiB is 96 pieces of 128 KiB) */
    const void *d = NULL;
    size_t len = 0;
    hs_error err;
    if (g_drain_into && pieces % 2) {
      assert_non_null(st->read_into);
      size_t want = cap - n < ((size_t)1 << 20) ? cap - n : (size_t)1 << 20;
      long long r = st->read_into(st->user, got + n, want, &err);
      assert_true(r >= 0);
      len = (size_t)r;
    } else {
      assert_int_equal(st->next(st->user, &d, &len, &err), HS_OK);
      assert_true(n + len <= cap);
      if (len) memcpy(got + n, d, len);
    }
    if (len == 0) break;
    n += len;
    if (pieces == 0 && after_first) after_first(user);
  }
  return n;
}

typedef struct {
  const char *path;
  size_t off;
  int what; /* 0: rewrite a byte at off, 1: truncate to off, 2: append a byte */
} file_change;

static void change_file(void *user) {
  const file_change *c = user;
  if (c->what == 0) {
    uint8_t x = 0x5a;
    write_bytes_at(c->path, c->off, &x, 1);
  } else if (c->what == 1) {
    assert_int_equal(truncate(c->path, (off_t)c->off), 0);
  } else {
    FILE *fp = fopen(c->path, "ab");
    fputc('!', fp);
    fclose(fp);
  }
}

/* ---- external data streamed too (hs_repo_read_stream_files_start, hs_repo_open_file) ---- */

#define EXT_FILE_BYTES ((size_t)3 << 20) /* twelve 256 KiB pieces */

/* Version 1 of open_stream_v1 with a 3 MiB weights/w.bin (content in *ext), signed again and rescanned. */
static hs_repo *open_ext_v1(const fixture *f, char v1[4096], char mdir[4096], uint8_t **content, uint8_t **ext,
                            hs_repo_snapshot **s, const hs_repo_version **rv) {
  hs_repo *r = open_stream_v1(f, v1, mdir, content, s, rv);
  *ext = write_pattern(P("%s/weights/w.bin", v1), EXT_FILE_BYTES, 7, 10);
  sign(v1, NULL);
  hs_repo_snapshot_free(*s);
  *rv = scan_ready_v1(r, s);
  return r;
}

/* Starts a read with every file streamed; checks what the backend is given. */
static hs_repo_bytes *start_ext(const char *mdir, const hs_repo_version *rv, char code[32]) {
  hs_repo_bytes *b = NULL;
  hs_error err;
  assert_int_equal(hs_repo_read_stream_files_start(mdir, rv, false, NULL, &b, code, &err), HS_OK);
  assert_int_equal(b->n_files, 2);
  for (size_t i = 0; i < b->n_files; i++) assert_null(b->files[i].data); /* nothing read whole */
  return b;
}

/* A file of a streamed read (read.c): model.onnx through b->stream, or another file through
 * hs_repo_open_file. */
typedef struct {
  const char *mdir;
  const hs_repo_version *rv;
  const char *ext; /* NULL: model.onnx (hs_repo_read_stream_start); else this file, opened on demand
                      (hs_repo_read_stream_files_start) */
} streamed_file;

/* Starts sf's read and hands back its file's stream (opened, for an external file). */
static hs_repo_bytes *start_streamed(const streamed_file *sf, const hs_backend_stream **st) {
  char code[32];
  hs_error err;
  hs_repo_bytes *b = NULL;
  if (!sf->ext) {
    assert_int_equal(hs_repo_read_stream_start(sf->mdir, sf->rv, false, NULL, &b, code, &err), HS_OK);
    *st = b->stream;
  } else {
    b = start_ext(sf->mdir, sf->rv, code);
    assert_int_equal(hs_repo_open_file(b, sf->ext, st, &err), HS_OK);
  }
  assert_non_null(*st);
  return b;
}

/* sf's file read to its end into got (cap bytes), with change made once its first piece was handed
 * out: n bytes handed out, then a verdict that refuses them ("manifest_mismatch", naming the file
 * and saying why). */
static void expect_refused_when_changed(const streamed_file *sf, file_change *change, uint8_t *got, size_t cap,
                                        size_t n, const char *why) {
  const hs_backend_stream *st = NULL;
  hs_repo_bytes *b = start_streamed(sf, &st);
  assert_int_equal(drain(st, got, cap, change_file, change), n);
  char code[32] = "";
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_VERIFY);
  assert_string_equal(code, "manifest_mismatch");
  assert_non_null(strstr(err.message, sf->ext ? sf->ext : "model.onnx"));
  assert_non_null(strstr(err.message, why));
  assert_false(b->verified);
  hs_repo_bytes_free(b);
}

/* What a streamed file (sf's, at path: size bytes of content) must refuse or survive while it is
 * read (read.c, DESIGN): a byte rewritten in place at `ahead` once the first piece was handed out
 * (not read yet) is what the stream hands out, and the verdict refuses it; a byte of the first piece
 * rewritten after it was handed out (behind the reader) changes neither the bytes nor the verdict; a
 * file cut short at `cut` ends the stream there and is refused; one that grows by a byte is refused.
 * The file is restored after each. */
static void expect_changes_judged(const streamed_file *sf, const char *path, const uint8_t *content, size_t size,
                                  size_t ahead, size_t cut) {
  uint8_t *got = malloc(size + 16);
  file_change in_place = {path, ahead, 0};
  expect_refused_when_changed(sf, &in_place, got, size + 16, size, "do not match the manifest");
  assert_int_equal(got[ahead], 0x5a);
  assert_int_not_equal(content[ahead], 0x5a);
  rewrite_file(path, content, size);

  file_change behind = {path, 100, 0};
  const hs_backend_stream *st = NULL;
  hs_repo_bytes *b = start_streamed(sf, &st);
  assert_int_equal(drain(st, got, size + 16, change_file, &behind), size);
  assert_memory_equal(got, content, size);
  char code[32];
  hs_error err;
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  assert_true(b->verified);
  hs_repo_bytes_free(b);
  rewrite_file(path, content, size);

  file_change shrink = {path, cut, 1};
  expect_refused_when_changed(sf, &shrink, got, size + 16, cut, "shrank");
  assert_memory_equal(got, content, cut);
  rewrite_file(path, content, size);

  file_change grow = {path, 0, 2};
  expect_refused_when_changed(sf, &grow, got, size + 16, size, "grew");
  rewrite_file(path, content, size);
  free(got);
}

/* A streamed read of open_stream_v1's version: its model.onnx (path, content), a buffer got for it. */
typedef struct {
  char v1[4096], mdir[4096], path[4096];
  uint8_t *content, *got;
  hs_repo_snapshot *s;
  const hs_repo_version *rv;
  hs_repo *r;
} stream_case;

static void stream_case_open(const fixture *f, stream_case *c) {
  c->r = open_stream_v1(f, c->v1, c->mdir, &c->content, &c->s, &c->rv);
  snprintf(c->path, sizeof c->path, "%s", P("%s/model.onnx", c->v1));
  c->got = malloc(STREAM_FILE_BYTES + 16);
  assert_non_null(c->got);
}

static void stream_case_close(stream_case *c) {
  free(c->got);
  free(c->content);
  hs_repo_snapshot_free(c->s);
  hs_repo_close(c->r);
}

/* Unchanged, the stream (drained as g_drain_into says) hands out every byte once, in order, never
 * read whole; verified, every byte hashed by the hash thread. Then the changes of
 * expect_changes_judged are refused or survived. */
static void expect_stream_read_once(stream_case *c) {
  char code[32] = "";
  hs_error err;
  hs_error_clear(&err);
  hs_repo_bytes *b = NULL;
  assert_int_equal(hs_repo_read_stream_start(c->mdir, c->rv, false, NULL, &b, code, &err), HS_OK);
  assert_non_null(b->stream);
  assert_null(b->model->data);
  assert_int_equal(b->model->len, STREAM_FILE_BYTES);
  assert_int_equal(b->stream->size, STREAM_FILE_BYTES);
  assert_int_equal(drain(b->stream, c->got, STREAM_FILE_BYTES + 16, NULL, NULL), STREAM_FILE_BYTES);
  assert_memory_equal(c->got, c->content, STREAM_FILE_BYTES);
  hs_repo_bytes_release(b);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  assert_true(b->verified);
  assert_int_equal(b->bytes_hashed, STREAM_FILE_BYTES + strlen("weights"));
  assert_int_equal(b->bytes_hashed_beside, b->bytes_hashed);
  assert_true(b->hash_cpu_ms > 0);
  hs_repo_bytes_free(b);

  streamed_file sf = {c->mdir, c->rv, NULL};
  expect_changes_judged(&sf, c->path, c->content, STREAM_FILE_BYTES, (size_t)10 << 20, ((size_t)19 << 20) / 2);
}

/* Streaming (read.c, DESIGN): model.onnx is never read whole; its pieces are the bytes hashed, by
 * the hash thread beside the reader; the changes of expect_changes_judged are refused or survived;
 * a reader that stops early still gets the verdict on the whole file. */
static void test_read_stream_hashes_what_it_hands_out(void **state) {
  stream_case c;
  stream_case_open(*state, &c);
  expect_stream_read_once(&c);
  char code[32] = "";
  hs_error err;
  hs_error_clear(&err);
  hs_repo_bytes *b = NULL;

  /* the reader stops after one piece (a decode error): the rest is read and hashed for the verdict */
  assert_int_equal(hs_repo_read_stream_start(c.mdir, c.rv, false, NULL, &b, code, &err), HS_OK);
  const void *d;
  size_t len;
  assert_int_equal(b->stream->next(b->stream->user, &d, &len, &err), HS_OK);
  assert_true(len > 0);
  hs_repo_bytes_release(b);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  assert_int_equal(b->bytes_hashed, STREAM_FILE_BYTES + strlen("weights"));
  hs_repo_bytes_free(b);

  /* freed without reading or asking: the reader is not left waiting, nothing leaks */
  assert_int_equal(hs_repo_read_stream_start(c.mdir, c.rv, false, NULL, &b, code, &err), HS_OK);
  hs_repo_bytes_free(b);

  /* a size other than the manifest's is refused before anything is handed out */
  assert_int_equal(truncate(c.path, 1000), 0);
  b = NULL;
  assert_int_equal(hs_repo_read_stream_start(c.mdir, c.rv, false, NULL, &b, code, &err), HS_VERIFY);
  assert_null(b);
  assert_string_equal(code, "manifest_mismatch");
  stream_case_close(&c);
}

/* read_into (read.c, DESIGN): pieces read straight into the reader's buffers, between pieces of the
 * ring, are hashed there in file order: the file's bytes in order, verified; the changes of
 * expect_changes_judged refused or survived as with the ring alone. Once settle (or the release,
 * bytes_done) returned, the hash is done with those buffers: the reader may change them and the
 * verdict stands. With frees gated on the hash (hs_repo_bytes_gate_frees), a weight block read into
 * and freed at once is unmapped only once the hash is done with it. */
static void test_read_stream_into_hashes_the_readers_buffers(void **state) {
  stream_case c;
  stream_case_open(*state, &c);
  g_drain_into = true;
  expect_stream_read_once(&c);
  g_drain_into = false;
  char code[32] = "";
  hs_error err;
  hs_error_clear(&err);
  hs_repo_bytes *b = NULL;

  /* settled, then overwritten by the reader: the verdict is on the bytes read */
  const size_t mib = (size_t)1 << 20;
  uint8_t *got = c.got;
  assert_int_equal(hs_repo_read_stream_start(c.mdir, c.rv, false, NULL, &b, code, &err), HS_OK);
  assert_int_equal(b->stream->read_into(b->stream->user, got, mib, &err), (long long)mib);
  assert_memory_equal(got, c.content, mib);
  b->stream->settle(b->stream->user);
  memset(got, 0, mib);
  assert_int_equal(b->stream->read_into(b->stream->user, got + mib, mib, &err), (long long)mib);
  hs_repo_bytes_release(b); /* bytes_done: settles too */
  memset(got + mib, 0, mib);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK); /* (the rest read and hashed by the check) */
  assert_int_equal(b->bytes_hashed, STREAM_FILE_BYTES + strlen("weights"));
  hs_repo_bytes_free(b);

  /* gated: a 4 MiB block is its own mapping here, so a hash reading it after the unmap would fault */
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  assert_int_equal(hs_repo_read_stream_start(c.mdir, c.rv, false, NULL, &b, code, &err), HS_OK);
  hs_repo_bytes_gate_frees(b, true);
  const void *d;
  size_t len;
  assert_int_equal(b->stream->next(b->stream->user, &d, &len, &err), HS_OK);
  for (int i = 0; i < 2; i++) {
    uint8_t *blk = hs_wblock_alloc((size_t)4 << 20);
    assert_non_null(blk);
    assert_int_equal(b->stream->read_into(b->stream->user, blk, (size_t)4 << 20, &err), (long long)4 << 20);
    b->stream->settle(b->stream->user); /* gated: returns at once, the free below waits instead */
    hs_wblock_free(blk);
  }
  hs_repo_bytes_release(b);
  hs_repo_bytes_gate_frees(b, false);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  assert_int_equal(b->bytes_hashed, STREAM_FILE_BYTES + strlen("weights"));
  hs_repo_bytes_free(b);
  stream_case_close(&c);
}

/* The ring's pages go back to the system once the read is over (read.c, ring_alloc), with the heap
 * set as the server sets it (engine/engine.c hs_engine_prefer_heap, the loader's trim threshold):
 * a large freed heap buffer stays resident there, beside the serving version. Runs last (mallopt
 * stays for the process). */
static void test_read_stream_ring_pages_go_back(void **state) {
  fixture *f = *state;
  char v1[4096], mdir[4096], code[32] = "";
  uint8_t *content = NULL;
  hs_repo_snapshot *s = NULL;
  const hs_repo_version *rv = NULL;
  hs_repo *r = open_stream_v1(f, v1, mdir, &content, &s, &rv);
  (void)mallopt(M_MMAP_THRESHOLD, 32 << 20); /* (AddressSanitizer: ignored, its quarantine keeps frees resident) */
  (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
  uint8_t *got = malloc(STREAM_FILE_BYTES + 16);
  assert_non_null(got);
  memset(got, 0, STREAM_FILE_BYTES + 16); /* resident before the first measure */
  hs_error err;
  hs_error_clear(&err);
  for (int round = 0; round < 2; round++) { /* the second: whatever the first allocated once is there */
    size_t before = rss_bytes();
    hs_repo_bytes *b = NULL;
    assert_int_equal(hs_repo_read_stream_start(mdir, rv, false, NULL, &b, code, &err), HS_OK);
    assert_int_equal(drain(b->stream, got, STREAM_FILE_BYTES + 16, NULL, NULL), STREAM_FILE_BYTES);
    size_t during = rss_bytes();
    hs_repo_bytes_release(b);
    assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
    hs_repo_bytes_free(b);
    size_t after = rss_bytes();
    assert_true(during >= before + ((size_t)3 << 17)); /* the ring (512 KiB) was written whole */
    if (round == 1) assert_true(after <= before + ((size_t)1 << 18)); /* and it went back */
  }
  assert_memory_equal(got, content, STREAM_FILE_BYTES);
  free(got);
  free(content);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
}

/* The read's ring is 4 pieces of 128 KiB, 512 KiB in all: in the server it is a warm scratch mapping
 * (base/wblock.h) that the warm-up input takes next, and with 256 KiB pieces its 1 MiB was at a
 * MobileNetV2 reload's peak where that input (1x3x224x224 fp32, 588 KiB) needed less than 600 KiB.
 * Seen through the warm mapping it leaves: the pool on, the read over, the smallest warm scratch that
 * fits one byte is the ring's. Runs after the others (the pool stays on for the process). */
static void test_read_stream_ring_is_512_kib(void **state) {
  fixture *f = *state;
  char v1[4096], mdir[4096], code[32] = "";
  uint8_t *content = NULL;
  hs_repo_snapshot *s = NULL;
  const hs_repo_version *rv = NULL;
  hs_repo *r = open_stream_v1(f, v1, mdir, &content, &s, &rv);
  hs_wblock_keep((size_t)64 << 20);
  hs_wblock_trim(); /* no warm scratch but the ring's */
  uint8_t *got = malloc(STREAM_FILE_BYTES + 16);
  assert_non_null(got);
  hs_error err;
  hs_error_clear(&err);
  hs_repo_bytes *b = NULL;
  assert_int_equal(hs_repo_read_stream_start(mdir, rv, false, NULL, &b, code, &err), HS_OK);
  assert_int_equal(drain(b->stream, got, STREAM_FILE_BYTES + 16, NULL, NULL), STREAM_FILE_BYTES);
  hs_repo_bytes_release(b);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  hs_repo_bytes_free(b);
  assert_memory_equal(got, content, STREAM_FILE_BYTES);
  hs_wscratch ring = {0};
  assert_non_null(hs_wscratch_get(&ring, 1));
  assert_int_equal(ring.bytes, (size_t)512 << 10);
  hs_wscratch_release(&ring);
  hs_wblock_trim();
  free(got);
  free(content);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
}

/* External data streamed (read.c, DESIGN "External data"): the file is handed out once, in order,
 * and those bytes are the ones hashed, by the same hash thread as model.onnx's, through a ring of
 * their own (a piece of model.onnx held by the decoder stays intact while they are read); a second
 * open is refused; a file nobody opened, or left half read, is read and hashed by the check; the
 * changes of expect_changes_judged are refused (with the file named) or survived, and so is a
 * file whose size changed before it was opened. */
static void test_read_stream_files_hash_what_they_hand_out(void **state) {
  fixture *f = *state;
  char v1[4096], mdir[4096], code[32] = "";
  uint8_t *content = NULL, *ext = NULL;
  hs_repo_snapshot *s = NULL;
  const hs_repo_version *rv = NULL;
  hs_repo *r = open_ext_v1(f, v1, mdir, &content, &ext, &s, &rv);
  char path[4096];
  snprintf(path, sizeof path, "%s", P("%s/weights/w.bin", v1));
  uint8_t *got = malloc(STREAM_FILE_BYTES + 16);
  hs_error err;
  hs_error_clear(&err);
  const hs_backend_stream *st = NULL;

  /* unchanged: both streamed, every byte once; the first piece of model.onnx, held while the whole
   * external file is read (as the decoder holds it while it fills the external tensors), is intact;
   * verified, every byte hashed by the hash thread */
  hs_repo_bytes *b = start_ext(mdir, rv, code);
  const void *first;
  size_t first_len;
  assert_int_equal(b->stream->next(b->stream->user, &first, &first_len, &err), HS_OK);
  assert_true(first_len > 0 && first_len < STREAM_FILE_BYTES);
  assert_int_equal(hs_repo_open_file(b, "weights/w.bin", &st, &err), HS_OK);
  assert_int_equal(st->size, EXT_FILE_BYTES);
  assert_int_equal(drain(st, got, STREAM_FILE_BYTES + 16, NULL, NULL), EXT_FILE_BYTES);
  assert_memory_equal(got, ext, EXT_FILE_BYTES);
  assert_memory_equal(first, content, first_len);
  assert_int_equal(drain(b->stream, got, STREAM_FILE_BYTES + 16, NULL, NULL), STREAM_FILE_BYTES - first_len);
  assert_memory_equal(got, content + first_len, STREAM_FILE_BYTES - first_len);
  assert_int_equal(hs_repo_open_file(b, "weights/w.bin", &st, &err), HS_INVALID_ARGUMENT); /* read once */
  assert_int_equal(hs_repo_open_file(b, "model.onnx", &st, &err), HS_NOT_FOUND); /* its bytes: b->stream only */
  hs_repo_bytes_release(b);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
  assert_true(b->verified);
  assert_int_equal(b->bytes_hashed, STREAM_FILE_BYTES + EXT_FILE_BYTES);
  assert_int_equal(b->bytes_hashed_beside, b->bytes_hashed);
  hs_repo_bytes_free(b);

  /* never opened, or one piece read: the check reads and hashes the rest (on the hash thread too) */
  for (int pieces = 0; pieces < 2; pieces++) {
    b = start_ext(mdir, rv, code);
    if (pieces) {
      const void *d;
      size_t len;
      assert_int_equal(hs_repo_open_file(b, "weights/w.bin", &st, &err), HS_OK);
      assert_int_equal(st->next(st->user, &d, &len, &err), HS_OK);
      assert_true(len > 0 && len < EXT_FILE_BYTES);
    }
    assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_OK);
    assert_int_equal(b->bytes_hashed, STREAM_FILE_BYTES + EXT_FILE_BYTES);
    assert_int_equal(b->bytes_hashed_beside, b->bytes_hashed);
    hs_repo_bytes_free(b);
  }

  streamed_file sf = {mdir, rv, "weights/w.bin"};
  expect_changes_judged(&sf, path, ext, EXT_FILE_BYTES, (size_t)2 << 20, ((size_t)3 << 20) / 2);

  /* a size other than the manifest's when opened: refused there and by the verdict */
  assert_int_equal(truncate(path, 1000), 0);
  b = start_ext(mdir, rv, code);
  assert_int_equal(hs_repo_open_file(b, "weights/w.bin", &st, &err), HS_VERIFY);
  assert_int_equal(hs_repo_bytes_check(b, code, &err), HS_VERIFY);
  assert_string_equal(code, "manifest_mismatch");
  assert_non_null(strstr(err.message, "weights/w.bin"));
  hs_repo_bytes_free(b);

  free(got);
  free(ext);
  free(content);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
}

static void test_settle_and_fingerprints(void **state) {
  fixture *f = *state;
  hs_repo *r = open_repo(f->root, false, NULL, 300);
  /* Fresh files, no manifest: pending until they stay unchanged for 300 ms. */
  write_text(P("%s/m/1/model.onnx", f->root), "first");
  char code[32];
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_PENDING);
  struct timespec t = {0, 400 * 1000000L};
  nanosleep(&t, NULL);
  hs_repo_snapshot *s = NULL;
  const hs_repo_version *v = scan_ready_v1(r, &s);
  char fp1[65];
  snprintf(fp1, sizeof fp1, "%s", v->fingerprint);
  hs_repo_snapshot_free(s);
  /* Unchanged: same fingerprint. */
  s = scan(r);
  assert_string_equal(find_version(s, "m", 1)->fingerprint, fp1);
  hs_repo_snapshot_free(s);
  /* Replaced in place: pending again (settling), then READY with a new fingerprint. */
  write_text(P("%s/m/1/model.onnx", f->root), "second, longer");
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_PENDING);
  nanosleep(&t, NULL);
  v = scan_ready_v1(r, &s);
  assert_string_not_equal(v->fingerprint, fp1);
  hs_repo_snapshot_free(s);

  /* A manifest that does not match yet while files are still arriving is pending, not refused. */
  make_version(P("%s/m/2", f->root), "two");
  sign(P("%s/m/2", f->root), NULL);
  write_text(P("%s/m/2/model.onnx", f->root), "tw");
  expect_state(r, "m", 2, HS_VERSION_PENDING, "manifest_mismatch");
  nanosleep(&t, NULL);
  expect_state(r, "m", 2, HS_VERSION_INVALID, "manifest_mismatch");
  hs_repo_close(r);
}

/* ---- signatures ---- */

static void test_signatures(void **state) {
  fixture *f = *state;
  hs_error err;
  hs_error_clear(&err);
  const char *k1 = P("%s/k1", f->dir), *k2 = P("%s/k2", f->dir), *hm = P("%s/hm", f->dir);
  char k1s[4096], k2s[4096], hms[4096];
  snprintf(k1s, sizeof k1s, "%s", k1);
  snprintf(k2s, sizeof k2s, "%s", k2);
  snprintf(hms, sizeof hms, "%s", hm);
  assert_int_equal(hs_repo_keygen(k1s, false, &err), HS_OK);
  assert_int_equal(hs_repo_keygen(k2s, false, &err), HS_OK);
  assert_int_equal(hs_repo_keygen(hms, true, &err), HS_OK);
  assert_int_equal(hs_repo_keygen(k1s, false, &err), HS_INVALID_ARGUMENT); /* never overwrites */
  struct stat st;
  assert_int_equal(stat(P("%s.key", k1s), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(P("%s.key", hms), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);

  /* The server refuses to be given a private key to trust. */
  hs_trusted_keys *bad = NULL;
  const char *priv[] = {P("%s.key", k1s)};
  assert_int_equal(hs_trusted_keys_load(priv, 1, &bad, &err), HS_INVALID_ARGUMENT);
  assert_null(bad);
  const char *garbage[] = {P("%s/model.onnx", f->dir)};
  write_text(garbage[0], "not a key");
  assert_int_equal(hs_trusted_keys_load(garbage, 1, &bad, &err), HS_PARSE);

  hs_trusted_keys *t1 = trust(P("%s.pub", k1s));
  hs_trusted_keys *t2 = trust(P("%s.pub", k2s));
  hs_trusted_keys *th = trust(P("%s.key", hms));

  make_version(P("%s/m/1", f->root), "signed by k1");
  sign(P("%s/m/1", f->root), P("%s.key", k1s));
  make_version(P("%s/h/1", f->root), "signed by hmac");
  sign(P("%s/h/1", f->root), P("%s.key", hms));
  make_version(P("%s/u/1", f->root), "manifest, no signature");
  sign(P("%s/u/1", f->root), NULL);
  make_version(P("%s/n/1", f->root), "no manifest at all");

  char code[32];
  hs_repo *r = open_repo(f->root, true, t1, 0);
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  expect_state(r, "h", 1, HS_VERSION_INVALID, "unknown_key");
  expect_state(r, "u", 1, HS_VERSION_INVALID, "unsigned");
  expect_state(r, "n", 1, HS_VERSION_INVALID, "unsigned");
  hs_repo_close(r);

  r = open_repo(f->root, true, t2, 0);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "unknown_key");
  hs_repo_close(r);

  r = open_repo(f->root, true, th, 0);
  assert_int_equal(state_of(r, "h", 1, code), HS_VERSION_READY);
  hs_repo_close(r);

  /* A tampered manifest (sizes and hashes still describe the files) breaks the signature. */
  char *text = read_text(P("%s/m/1/hotserve-manifest.json", f->root));
  char *gen = strstr(text, "hotserve 0.1.0");
  assert_non_null(gen);
  gen[9] = '9';
  write_text(P("%s/m/1/hotserve-manifest.json", f->root), text);
  r = open_repo(f->root, true, t1, 0);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "bad_signature");
  /* So does a garbled signature file. */
  write_text(P("%s/h/1/hotserve-manifest.sig", f->root), "{\"format\":1}");
  hs_repo_close(r);
  r = open_repo(f->root, true, th, 0);
  expect_state(r, "h", 1, HS_VERSION_INVALID, "bad_signature");
  hs_repo_close(r);

  /* A model file changed after signing: the signature is fine, the manifest does not match. */
  sign(P("%s/m/1", f->root), P("%s.key", k1s));
  write_text(P("%s/m/1/model.onnx", f->root), "signed by k2");
  r = open_repo(f->root, true, t1, 0);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "manifest_mismatch");
  hs_repo_close(r);

  /* hs_repo_verify_version, as the loader may call it. */
  hs_repo_version out;
  assert_int_equal(hs_repo_verify_version(P("%s/u/1", f->root), true, t1, &out, &err), HS_VERIFY);
  assert_string_equal(out.reason_code, "unsigned");
  assert_int_equal(hs_repo_verify_version(P("%s/u/1", f->root), false, NULL, &out, &err), HS_OK);
  assert_int_equal(out.state, HS_VERSION_READY);
  assert_int_equal(out.version, 1);

  hs_trusted_keys_free(t1);
  hs_trusted_keys_free(t2);
  hs_trusted_keys_free(th);
}

/* ---- paths that lead out ---- */

/* A manifest names its model and version: a copy elsewhere is wrong_binding; with signatures
 * required an unbound one is refused, and config.json needs a signature over its model's name. */
static void test_binding_and_signed_config(void **state) {
  fixture *f = *state;
  hs_error err;
  hs_error_clear(&err);
  char k[4096];
  snprintf(k, sizeof k, "%s", P("%s/bk", f->dir));
  assert_int_equal(hs_repo_keygen(k, false, &err), HS_OK);
  hs_trusted_keys *t = trust(P("%s.pub", k));
  char key[4200];
  snprintf(key, sizeof key, "%s.key", k);

  make_version(P("%s/a/1", f->root), "bound to a/1");
  sign(P("%s/a/1", f->root), key);
  char *manifest = strdup(read_text(P("%s/a/1/hotserve-manifest.json", f->root))); /* read_text: a static buffer */
  assert_non_null(strstr(manifest, "\"model\": \"a\""));
  assert_non_null(strstr(manifest, "\"version\": 1"));
  /* The same signed bytes under b/1 and a/2. */
  char *model = strdup(read_text(P("%s/a/1/model.onnx", f->root))); /* read_text: a static buffer */
  char *sig = strdup(read_text(P("%s/a/1/hotserve-manifest.sig", f->root))); /* read_text: a static buffer */
  const char *copies[] = {"b/1", "a/2"};
  for (size_t i = 0; i < 2; i++) {
    mkdirs(P("%s/%s", f->root, copies[i]));
    write_text(P("%s/%s/model.onnx", f->root, copies[i]), model);
    write_text(P("%s/%s/hotserve-manifest.json", f->root, copies[i]), manifest);
    write_text(P("%s/%s/hotserve-manifest.sig", f->root, copies[i]), sig);
  }
  /* An unbound signed manifest: signed as "not MODEL/VERSION", then moved to c/1. */
  make_version(P("%s/loose", f->dir), "unbound");
  sign(P("%s/loose", f->dir), key);
  mkdirs(P("%s/c", f->root));
  assert_int_equal(rename(P("%s/loose", f->dir), P("%s/c/1", f->root)), 0);

  char code[32];
  hs_repo *r = open_repo(f->root, true, t, 0);
  assert_int_equal(state_of(r, "a", 1, code), HS_VERSION_READY);
  expect_state(r, "b", 1, HS_VERSION_INVALID, "wrong_binding");
  expect_state(r, "c", 1, HS_VERSION_INVALID, "unbound");
  hs_repo_close(r);
  r = open_repo(f->root, false, NULL, 0); /* binding holds without signatures too; unbound is fine */
  expect_state(r, "b", 1, HS_VERSION_INVALID, "wrong_binding");
  assert_int_equal(state_of(r, "c", 1, code), HS_VERSION_READY);
  hs_repo_close(r);
  /* a/2 is reported only as a refused version above the ready a/1 under "latest 1". */
  r = open_repo(f->root, true, t, 0);
  hs_repo_snapshot *s = scan(r);
  const hs_repo_version *v2 = find_version(s, "a", 2);
  assert_non_null(v2);
  assert_int_equal(v2->state, HS_VERSION_INVALID);
  assert_string_equal(v2->reason_code, "wrong_binding");
  hs_repo_snapshot_free(s);

  /* config.json: unsigned refused, signed accepted, a signature for another model refused. */
  write_text(P("%s/a/config.json", f->root), "{\"threads\": 2}");
  s = scan(r);
  assert_int_equal(find_model(s, "a")->config_status, HS_VERIFY);
  assert_string_equal(find_model(s, "a")->config_reason_code, "unsigned");
  hs_repo_snapshot_free(s);
  assert_int_equal(hs_repo_sign_config(P("%s/a/config.json", f->root), key, NULL, &err), HS_OK);
  s = scan(r);
  assert_int_equal(find_model(s, "a")->config_status, HS_OK);
  assert_int_equal(find_model(s, "a")->config.threads, 2);
  hs_repo_snapshot_free(s);
  assert_int_equal(hs_repo_sign_config(P("%s/a/config.json", f->root), key, "b", &err), HS_OK);
  s = scan(r);
  assert_int_equal(find_model(s, "a")->config_status, HS_VERIFY);
  assert_string_equal(find_model(s, "a")->config_reason_code, "bad_signature");
  hs_repo_snapshot_free(s);
  /* A config.json.sig that is a link out of the model directory is not followed. */
  assert_int_equal(hs_repo_sign_config(P("%s/a/config.json", f->root), key, NULL, &err), HS_OK);
  assert_int_equal(rename(P("%s/a/config.json.sig", f->root), P("%s/outside.sig", f->dir)), 0);
  assert_int_equal(symlink(P("%s/outside.sig", f->dir), P("%s/a/config.json.sig", f->root)), 0);
  s = scan(r);
  assert_int_equal(find_model(s, "a")->config_status, HS_VERIFY);
  assert_string_equal(find_model(s, "a")->config_reason_code, "unsafe_path");
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
  free(manifest);
  free(model);
  free(sig);
  hs_trusted_keys_free(t);
}

static void test_unsafe_paths(void **state) {
  fixture *f = *state;
  write_text(P("%s/secret", f->dir), "outside the repository");
  make_version(P("%s/m/1", f->root), "one");
  assert_int_equal(symlink(P("%s/secret", f->dir), P("%s/m/1/weights/w2.bin", f->root)), 0);
  char code[32];
  hs_repo *r = open_repo(f->root, false, NULL, 0);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "unsafe_path");
  /* A relative link climbing out is the same. */
  unlink(P("%s/m/1/weights/w2.bin", f->root));
  assert_int_equal(symlink("../../../../secret", P("%s/m/1/weights/w2.bin", f->root)), 0);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "unsafe_path");
  /* A link to another file inside the model dir is fine. */
  unlink(P("%s/m/1/weights/w2.bin", f->root));
  write_text(P("%s/m/shared.bin", f->root), "shared weights");
  assert_int_equal(symlink("../../shared.bin", P("%s/m/1/weights/w2.bin", f->root)), 0);
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  /* A version directory that is a link out of the model dir is never a version. */
  make_version(P("%s/elsewhere/5", f->dir), "five");
  assert_int_equal(symlink(P("%s/elsewhere/5", f->dir), P("%s/m/5", f->root)), 0);
  assert_int_equal(state_of(r, "m", 5, code), -1);
  assert_int_equal(state_of(r, "m", 1, code), HS_VERSION_READY);
  /* Nor is a model directory that is a link out of the repository. */
  assert_int_equal(symlink(P("%s/elsewhere", f->dir), P("%s/evil", f->root)), 0);
  hs_repo_snapshot *s = scan(r);
  assert_null(find_model(s, "evil"));
  assert_non_null(find_model(s, "m"));
  hs_repo_snapshot_free(s);
  /* A FIFO is not a model file. */
  assert_int_equal(mkfifo(P("%s/m/1/pipe", f->root), 0644), 0);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "unsafe_path");
  hs_repo_close(r);
}

/* Kubernetes ConfigMap layout: m/..2024_a/1/..., m/..data -> ..2024_a, m/1 -> ..data/1. */
static void test_configmap_data_flip(void **state) {
  fixture *f = *state;
  make_version(P("%s/m/..2024_a/1", f->root), "generation a");
  assert_int_equal(symlink("..2024_a", P("%s/m/..data", f->root)), 0);
  assert_int_equal(symlink("..data/1", P("%s/m/1", f->root)), 0);
  hs_repo *r = open_repo(f->root, false, NULL, 0);
  hs_repo_snapshot *s = scan(r);
  const hs_repo_version *v = find_version(s, "m", 1);
  assert_non_null(v);
  assert_int_equal(v->state, HS_VERSION_READY);
  assert_non_null(strstr(v->dir, "..2024_a/1"));
  char fp[65];
  snprintf(fp, sizeof fp, "%s", v->fingerprint);
  hs_repo_snapshot_free(s);
  /* Flip ..data atomically to a new generation, as kubelet does. */
  make_version(P("%s/m/..2024_b/1", f->root), "generation b!");
  assert_int_equal(symlink("..2024_b", P("%s/m/..data_tmp", f->root)), 0);
  assert_int_equal(rename(P("%s/m/..data_tmp", f->root), P("%s/m/..data", f->root)), 0);
  v = scan_ready_v1(r, &s);
  assert_non_null(strstr(v->dir, "..2024_b/1"));
  assert_string_not_equal(v->fingerprint, fp);
  hs_repo_snapshot_free(s);
  hs_repo_close(r);
  /* hs_repo_verify_version (and so `hotserve verify`) judges links as the scanner does: a link
   * from the version to a file shared at the model level is inside. */
  write_text(P("%s/m/shared.bin", f->root), "shared");
  assert_int_equal(symlink("../../shared.bin", P("%s/m/..2024_b/1/shared.bin", f->root)), 0);
  hs_repo_version out;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_repo_verify_version(P("%s/m/1/", f->root), false, NULL, &out, &err);
  if (rc != HS_OK) fail_msg("verify: %s", err.message);
  assert_int_equal(out.version, 1);
  assert_int_equal(out.n_files, 3); /* model, weights, the shared link */
  /* While a link out of the model directory is refused. */
  write_text(P("%s/outside.bin", f->dir), "outside");
  assert_int_equal(symlink(P("%s/outside.bin", f->dir), P("%s/m/..2024_b/1/out.bin", f->root)), 0);
  assert_int_equal(hs_repo_verify_version(P("%s/m/1", f->root), false, NULL, &out, &err), HS_VERIFY);
  assert_string_equal(out.reason_code, "unsafe_path");
}

static void test_limits(void **state) {
  fixture *f = *state;
  make_version(P("%s/m/1", f->root), "0123456789");
  for (int i = 0; i < 5; i++) write_text(P("%s/m/1/extra%d", f->root, i), "x");
  hs_repo_options o = {0};
  o.max_files = 4;
  hs_repo *r = NULL;
  hs_error err;
  assert_int_equal(hs_repo_open(f->root, &o, &r, &err), HS_OK);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "limit");
  hs_repo_close(r);
  o.max_files = 0;
  o.max_file_bytes = 5;
  assert_int_equal(hs_repo_open(f->root, &o, &r, &err), HS_OK);
  expect_state(r, "m", 1, HS_VERSION_INVALID, "limit");
  hs_repo_close(r);
  /* require_signature without keys is a usage error, not a silent pass. */
  o.require_signature = true;
  assert_int_equal(hs_repo_open(f->root, &o, &r, &err), HS_INVALID_ARGUMENT);
}

/* ---- publish ---- */

static void test_publish(void **state) {
  fixture *f = *state;
  hs_error err;
  hs_error_clear(&err);
  const char *src = P("%s/src", f->dir);
  char srcs[4096];
  snprintf(srcs, sizeof srcs, "%s", src);
  write_text(P("%s/model.onnx", srcs), "published model");
  write_text(P("%s/sub/data.bin", srcs), "data");
  /* Leftovers of publishers that died: a day-old one is cleaned up, a fresh one is left alone. */
  write_text(P("%s/m/.staging-old123/model.onnx", f->root), "half");
  age_file(P("%s/m/.staging-old123", f->root), 2 * 24 * 3600);
  mkdirs(P("%s/m/.staging-live12", f->root));
  int64_t v = 0;
  assert_int_equal(hs_repo_publish(srcs, P("%s/m", f->root), 0, NULL, &v, &err), HS_OK);
  assert_int_equal(v, 1);
  struct stat st;
  assert_int_not_equal(stat(P("%s/m/.staging-old123", f->root), &st), 0);
  assert_int_equal(stat(P("%s/m/.staging-live12", f->root), &st), 0);
  rmdir(P("%s/m/.staging-live12", f->root));
  assert_int_equal(hs_repo_publish(srcs, P("%s/m", f->root), 0, NULL, &v, &err), HS_OK);
  assert_int_equal(v, 2);
  assert_int_equal(hs_repo_publish(srcs, P("%s/m", f->root), 7, NULL, &v, &err), HS_OK);
  assert_int_equal(v, 7);
  assert_int_equal(hs_repo_publish(srcs, P("%s/m", f->root), 0, NULL, &v, &err), HS_OK);
  assert_int_equal(v, 8);
  /* Never overwrites. */
  assert_int_equal(hs_repo_publish(srcs, P("%s/m", f->root), 2, NULL, &v, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "already exists"));
  /* No model.onnx: refused before anything is created. */
  write_text(P("%s/empty/readme", f->dir), "x");
  assert_int_equal(hs_repo_publish(P("%s/empty", f->dir), P("%s/m", f->root), 0, NULL, &v, &err),
                   HS_INVALID_ARGUMENT);
  /* No staging leftovers; versions are complete and match their manifests. */
  DIR *d = opendir(P("%s/m", f->root));
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d)) != NULL) {
    assert_null(strstr(e->d_name, "staging"));
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  assert_int_equal(n, 4);
  hs_repo *r = open_repo(f->root, false, NULL, 2000);
  hs_repo_snapshot *s = scan(r);
  const hs_repo_version *pv = find_version(s, "m", 8);
  assert_non_null(pv);
  assert_int_equal(pv->state, HS_VERSION_READY); /* manifest matches: no settle wait */
  assert_string_equal(read_text(pv->model_path), "published model");
  hs_repo_snapshot_free(s);
  hs_repo_close(r);

  /* Signed publish verifies under --require-signature. */
  assert_int_equal(hs_repo_keygen(P("%s/pk", f->dir), false, &err), HS_OK);
  assert_int_equal(hs_repo_publish(srcs, P("%s/s", f->root), 0, P("%s/pk.key", f->dir), &v, &err), HS_OK);
  hs_trusted_keys *t = trust(P("%s/pk.pub", f->dir));
  r = open_repo(f->root, true, t, 2000);
  char code[32];
  assert_int_equal(state_of(r, "s", 1, code), HS_VERSION_READY);
  /* Just written and unsigned: not refused while it may still be arriving... */
  expect_state(r, "m", 8, HS_VERSION_PENDING, "unsigned");
  hs_repo_close(r);
  /* ...and refused once settled. */
  r = open_repo(f->root, true, t, 0);
  expect_state(r, "m", 8, HS_VERSION_INVALID, "unsigned");
  hs_repo_close(r);
  hs_trusted_keys_free(t);
  /* A public key cannot sign. */
  assert_int_equal(hs_repo_publish(srcs, P("%s/s", f->root), 0, P("%s/pk.pub", f->dir), &v, &err),
                   HS_INVALID_ARGUMENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_config_defaults_and_full, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_rollout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_layout_and_policies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_manifest_states, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hash_cache, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_once_and_deferred_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recheck_decides_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_start_hashes_what_it_hands_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_stream_hashes_what_it_hands_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_stream_files_hash_what_they_hand_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_stream_into_hashes_the_readers_buffers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_settle_and_fingerprints, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signatures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_binding_and_signed_config, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unsafe_paths, setup, teardown),
      cmocka_unit_test_setup_teardown(test_configmap_data_flip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_stream_ring_pages_go_back, setup, teardown), /* mallopt */
      cmocka_unit_test_setup_teardown(test_read_stream_ring_is_512_kib, setup, teardown), /* last: the pool on */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

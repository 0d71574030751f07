/* config.c - the per-model config.json: defaults, strict parsing (unknown fields are errors), limits.
 *
 * Format (docs/REPOSITORY.md):
 *   {"backend": "onnx",
 *    "version_policy": {"latest": {"num_versions": 2}} | {"all": {}} | {"specific": {"versions": [1, 3]}},
 *    "warmup": {"runs": 1, "inputs": "zeros" | "random" | "files"},
 *    "golden": {"enabled": true, "rtol": 1e-3, "atol": 1e-4},
 *    "threads": 0, "instances": 0,
 *    "rollout": {"strategy": "canary", "weight": 20, "min_requests": 2000, "max_seconds": 60,
 *                "max_error_rate": 0.01, "max_latency_ratio": 1.5}   (docs/GRAY_RELEASE.md),
 *    "max_batch_size": 8,
 *    "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500},
 *    "inputs":  [{"name": "x", "datatype": "FP32", "shape": [1, 4]}],
 *    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "repo/repo_internal.h"

void hs_repo_config_defaults(hs_model_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->backend, sizeof cfg->backend, "onnx");
  cfg->policy = HS_POLICY_LATEST;
  cfg->latest_n = 1;
  cfg->warmup_runs = 1;
  cfg->warmup_kind = HS_WARMUP_ZEROS;
  cfg->golden_check = false; /* the loader turns it on when <version>/golden/ exists */
  cfg->golden_rtol = 1e-3;
  cfg->golden_atol = 1e-4;
  cfg->rollout = (hs_rollout_config){.strategy = HS_ROLLOUT_IMMEDIATE, .weight = 10, .fraction = 1,
                                     .min_requests = 1000, .max_seconds = 300, .max_error_rate = 0.01,
                                     .max_latency_ratio = 1.5, .output_rtol = 1e-3, .output_atol = 1e-4,
                                     .max_disagreement_rate = 0};
}

/* Fails when obj has a key outside the NULL-terminated list. */
static int only_keys(json_t *obj, const char *where, const char *const *allowed, hs_error *err) {
  const char *key;
  json_t *val;
  json_object_foreach(obj, key, val) {
    bool ok = false;
    for (const char *const *a = allowed; *a; a++) ok |= strcmp(*a, key) == 0;
    if (!ok) return hs_error_set(err, HS_PARSE, "%s: unknown field '%.64s'", where, key);
  }
  return HS_OK;
}

static int get_int(json_t *obj, const char *key, const char *where, long long lo, long long hi, int *out,
                   hs_error *err) {
  json_t *v = json_object_get(obj, key);
  if (!v) return HS_OK;
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
    return hs_error_set(err, HS_PARSE, "%s.%s must be an integer from %lld to %lld", where, key, lo, hi);
  *out = (int)json_integer_value(v);
  return HS_OK;
}

static int get_tolerance(json_t *obj, const char *key, double *out, hs_error *err) {
  json_t *v = json_object_get(obj, key);
  if (!v) return HS_OK;
  if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e6)
    return hs_error_set(err, HS_PARSE, "golden.%s must be a number from 0 to 1e6", key);
  *out = json_number_value(v);
  return HS_OK;
}

static int parse_policy(json_t *p, hs_model_config *cfg, hs_error *err) {
  static const char *const keys[] = {"latest", "all", "specific", NULL};
  if (!json_is_object(p) || json_object_size(p) != 1)
    return hs_error_set(err, HS_PARSE,
                        "version_policy must be one of {\"latest\":{\"num_versions\":N}}, {\"all\":{}}, "
                        "{\"specific\":{\"versions\":[...]}}");
  int rc = only_keys(p, "version_policy", keys, err);
  if (rc != HS_OK) return rc;
  json_t *v;
  if ((v = json_object_get(p, "latest"))) {
    static const char *const k[] = {"num_versions", NULL};
    if (!json_is_object(v)) return hs_error_set(err, HS_PARSE, "version_policy.latest must be an object");
    if ((rc = only_keys(v, "version_policy.latest", k, err)) != HS_OK) return rc;
    cfg->policy = HS_POLICY_LATEST;
    return get_int(v, "num_versions", "version_policy.latest", 1, HS__MAX_VERSIONS, &cfg->latest_n, err);
  }
  if ((v = json_object_get(p, "all"))) {
    if (!json_is_object(v) || json_object_size(v) != 0)
      return hs_error_set(err, HS_PARSE, "version_policy.all must be {}");
    cfg->policy = HS_POLICY_ALL;
    return HS_OK;
  }
  v = json_object_get(p, "specific");
  static const char *const k[] = {"versions", NULL};
  if (!json_is_object(v)) return hs_error_set(err, HS_PARSE, "version_policy.specific must be an object");
  if ((rc = only_keys(v, "version_policy.specific", k, err)) != HS_OK) return rc;
  json_t *list = json_object_get(v, "versions");
  size_t n = json_array_size(list);
  if (!json_is_array(list) || n == 0 || n > sizeof cfg->specific / sizeof cfg->specific[0])
    return hs_error_set(err, HS_PARSE, "version_policy.specific.versions must list 1 to %zu versions",
                        sizeof cfg->specific / sizeof cfg->specific[0]);
  cfg->policy = HS_POLICY_SPECIFIC;
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(list, i);
    if (!json_is_integer(e) || json_integer_value(e) < 1)
      return hs_error_set(err, HS_PARSE, "version_policy.specific.versions[%zu] must be a positive integer", i);
    cfg->specific[cfg->n_specific++] = (int64_t)json_integer_value(e);
  }
  return HS_OK;
}

/* max_batch_size and dynamic_batching (Triton's fields; see docs/SERVING.md, Batching). */
static int parse_batching(json_t *root, hs_model_config *cfg, hs_error *err) {
  int rc = get_int(root, "max_batch_size", "config", 0, HS_MAX_BATCH_SIZE, &cfg->max_batch_size, err);
  json_t *db = json_object_get(root, "dynamic_batching");
  if (rc != HS_OK || !db) return rc;
  static const char *const k[] = {"preferred_batch_size", "max_queue_delay_microseconds", NULL};
  if (!json_is_object(db)) return hs_error_set(err, HS_PARSE, "dynamic_batching must be an object");
  if ((rc = only_keys(db, "dynamic_batching", k, err)) != HS_OK) return rc;
  if (cfg->max_batch_size < 1)
    return hs_error_set(err, HS_PARSE, "dynamic_batching needs max_batch_size from 1 to %d (it is %d)",
                        HS_MAX_BATCH_SIZE, cfg->max_batch_size);
  cfg->dynamic_batching = true;
  if ((rc = get_int(db, "max_queue_delay_microseconds", "dynamic_batching", 0, HS_MAX_QUEUE_DELAY_US,
                    &cfg->max_queue_delay_us, err)) != HS_OK)
    return rc;
  json_t *pref = json_object_get(db, "preferred_batch_size");
  if (!pref) return HS_OK;
  size_t n = json_array_size(pref), cap = sizeof cfg->preferred_batch_size / sizeof cfg->preferred_batch_size[0];
  if (!json_is_array(pref) || n > cap)
    return hs_error_set(err, HS_PARSE, "dynamic_batching.preferred_batch_size must be an array of at most %zu sizes",
                        cap);
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(pref, i);
    if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > cfg->max_batch_size)
      return hs_error_set(err, HS_PARSE,
                          "dynamic_batching.preferred_batch_size[%zu] must be an integer from 1 to max_batch_size (%d)",
                          i, cfg->max_batch_size);
    cfg->preferred_batch_size[cfg->n_preferred++] = (int)json_integer_value(e);
  }
  return HS_OK;
}

static int parse_io(json_t *list, const char *where, hs_io_desc *out, size_t cap, size_t *n_out,
                    hs_error *err) {
  static const char *const keys[] = {"name", "datatype", "shape", NULL};
  size_t n = json_array_size(list);
  if (!json_is_array(list) || n > cap)
    return hs_error_set(err, HS_PARSE, "%s must be an array of at most %zu entries", where, cap);
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(list, i);
    char at[64];
    snprintf(at, sizeof at, "%s[%zu]", where, i);
    if (!json_is_object(e)) return hs_error_set(err, HS_PARSE, "%s must be an object", at);
    int rc = only_keys(e, at, keys, err);
    if (rc != HS_OK) return rc;
    json_t *name = json_object_get(e, "name");
    json_t *dt = json_object_get(e, "datatype");
    json_t *shape = json_object_get(e, "shape");
    hs_io_desc *d = &out[i];
    memset(d, 0, sizeof *d);
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) >= sizeof d->name || strlen(json_string_value(name)) != json_string_length(name))
      return hs_error_set(err, HS_PARSE, "%s.name must be a string of 1 to %zu bytes", at, sizeof d->name - 1);
    snprintf(d->name, sizeof d->name, "%s", json_string_value(name));
    d->dtype = json_is_string(dt) ? hs_dtype_from_kserve(json_string_value(dt)) : HS_DT_UNDEFINED;
    if (d->dtype == HS_DT_UNDEFINED)
      return hs_error_set(err, HS_PARSE, "%s.datatype must be a KServe datatype such as \"FP32\"", at);
    size_t nd = json_array_size(shape);
    if (!json_is_array(shape) || nd > HS_MAX_DIMS)
      return hs_error_set(err, HS_PARSE, "%s.shape must be an array of at most %d dimensions", at, HS_MAX_DIMS);
    d->ndim = (int)nd;
    for (size_t k = 0; k < nd; k++) {
      json_t *dim = json_array_get(shape, k);
      if (!json_is_integer(dim) || json_integer_value(dim) < -1 || json_integer_value(dim) > INT32_MAX)
        return hs_error_set(err, HS_PARSE, "%s.shape[%zu] must be -1 (dynamic) or a size up to 2^31-1", at, k);
      d->dims[k] = (int64_t)json_integer_value(dim);
    }
  }
  *n_out = n;
  return HS_OK;
}

/* A backend is "onnx" or the name of a plug-in in the server's --backend-dir (letters, digits,
 * '_', '-', '.'; not starting with '.'): never a path, so a repository cannot choose where code is
 * loaded from. */
static int check_backend(const char *b, hs_error *err) {
  if (b[0] == '\0') return hs_error_set(err, HS_PARSE, "backend must not be empty");
  if (b[0] == '/') return hs_error_set(err, HS_VERIFY, "backend '%.64s': absolute paths are not allowed", b);
  if (strstr(b, ".."))
    return hs_error_set(err, HS_VERIFY, "backend '%.64s' leads out of the model directory", b);
  if (strchr(b, '/'))
    return hs_error_set(err, HS_VERIFY,
                        "backend '%.64s' is a path: name a plug-in of the server's --backend-dir instead", b);
  for (const char *p = b; *p; p++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok || b[0] == '.')
      return hs_error_set(err, HS_PARSE, "backend '%.64s' must be \"onnx\" or a plug-in name (letters, digits, _-.)", b);
  }
  return HS_OK;
}

/* A number in [lo, hi] under key of the rollout block (absent: *out unchanged). */
static int get_rollout_number(json_t *obj, const char *key, double lo, double hi, double *out, hs_error *err) {
  json_t *v = json_object_get(obj, key);
  if (!v) return HS_OK;
  if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
    return hs_error_set(err, HS_PARSE, "rollout.%s must be a number from %g to %g", key, lo, hi);
  *out = json_number_value(v);
  return HS_OK;
}

/* The "rollout" block: strategy and the canary/shadow decision rules (docs/GRAY_RELEASE.md). */
static int parse_rollout(json_t *v, hs_rollout_config *ro, hs_error *err) {
  static const char *const k[] = {"strategy", "weight", "fraction", "min_requests", "max_seconds",
                                  "max_error_rate", "max_latency_ratio", "output_rtol", "output_atol",
                                  "max_disagreement_rate", NULL};
  if (!json_is_object(v)) return hs_error_set(err, HS_PARSE, "rollout must be an object");
  int rc = only_keys(v, "rollout", k, err);
  if (rc != HS_OK) return rc;
  json_t *s = json_object_get(v, "strategy");
  if (s) {
    const char *name = json_is_string(s) ? json_string_value(s) : "";
    if (strcmp(name, "immediate") == 0) ro->strategy = HS_ROLLOUT_IMMEDIATE;
    else if (strcmp(name, "canary") == 0) ro->strategy = HS_ROLLOUT_CANARY;
    else if (strcmp(name, "shadow") == 0) ro->strategy = HS_ROLLOUT_SHADOW;
    else return hs_error_set(err, HS_PARSE, "rollout.strategy must be \"immediate\", \"canary\" or \"shadow\"");
  }
  json_t *mr = json_object_get(v, "min_requests");
  if (mr) {
    if (!json_is_integer(mr) || json_integer_value(mr) < 1 || json_integer_value(mr) > 1000000000)
      return hs_error_set(err, HS_PARSE, "rollout.min_requests must be an integer from 1 to 1000000000");
    ro->min_requests = (long long)json_integer_value(mr);
  }
  if ((rc = get_rollout_number(v, "weight", 0, 100, &ro->weight, err)) != HS_OK) return rc;
  if ((rc = get_rollout_number(v, "fraction", 0, 1, &ro->fraction, err)) != HS_OK) return rc;
  if ((rc = get_rollout_number(v, "max_seconds", 0.1, 86400 * 30, &ro->max_seconds, err)) != HS_OK) return rc;
  if ((rc = get_rollout_number(v, "max_error_rate", 0, 1, &ro->max_error_rate, err)) != HS_OK) return rc;
  if ((rc = get_rollout_number(v, "max_latency_ratio", 0.01, 1e6, &ro->max_latency_ratio, err)) != HS_OK)
    return rc;
  if ((rc = get_rollout_number(v, "output_rtol", 0, 1e6, &ro->output_rtol, err)) != HS_OK) return rc;
  if ((rc = get_rollout_number(v, "output_atol", 0, 1e6, &ro->output_atol, err)) != HS_OK) return rc;
  return get_rollout_number(v, "max_disagreement_rate", 0, 1, &ro->max_disagreement_rate, err);
}

int hs_repo_parse_config(const char *text, size_t len, hs_model_config *cfg, hs_error *err) {
  hs_repo_config_defaults(cfg);
  if (len > HS__MAX_CONFIG_BYTES)
    return hs_error_set(err, HS_LIMIT, "config is %zu bytes, over the limit of %zu", len, HS__MAX_CONFIG_BYTES);
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return hs_error_set(err, HS_PARSE, "config is not JSON: line %d: %s", jerr.line, jerr.text);
  static const char *const keys[] = {"backend", "version_policy", "warmup", "golden", "threads",
                                     "instances", "inputs", "outputs", "rollout", "max_batch_size",
                                     "dynamic_batching", NULL};
  int rc = HS_OK;
  json_t *v;
  if (!json_is_object(root)) {
    rc = hs_error_set(err, HS_PARSE, "config must be a JSON object");
    goto done;
  }
  if ((rc = only_keys(root, "config", keys, err)) != HS_OK) goto done;
  if ((v = json_object_get(root, "backend"))) {
    if (!json_is_string(v) || json_string_length(v) >= sizeof cfg->backend ||
        strlen(json_string_value(v)) != json_string_length(v)) {
      rc = hs_error_set(err, HS_PARSE, "backend must be a string of at most %zu bytes", sizeof cfg->backend - 1);
      goto done;
    }
    if ((rc = check_backend(json_string_value(v), err)) != HS_OK) goto done;
    snprintf(cfg->backend, sizeof cfg->backend, "%s", json_string_value(v));
  }
  if ((v = json_object_get(root, "version_policy")) && (rc = parse_policy(v, cfg, err)) != HS_OK) goto done;
  if ((v = json_object_get(root, "warmup"))) {
    static const char *const k[] = {"runs", "inputs", NULL};
    if (!json_is_object(v)) {
      rc = hs_error_set(err, HS_PARSE, "warmup must be an object");
      goto done;
    }
    if ((rc = only_keys(v, "warmup", k, err)) != HS_OK) goto done;
    if ((rc = get_int(v, "runs", "warmup", 0, 1000, &cfg->warmup_runs, err)) != HS_OK) goto done;
    json_t *in = json_object_get(v, "inputs");
    if (in) {
      const char *s = json_is_string(in) ? json_string_value(in) : "";
      if (strcmp(s, "zeros") == 0) {
        cfg->warmup_kind = HS_WARMUP_ZEROS;
      } else if (strcmp(s, "random") == 0) {
        cfg->warmup_kind = HS_WARMUP_RANDOM;
      } else if (strcmp(s, "files") == 0) {
        cfg->warmup_kind = HS_WARMUP_FILES;
      } else {
        rc = hs_error_set(err, HS_PARSE, "warmup.inputs must be \"zeros\", \"random\" or \"files\"");
        goto done;
      }
    }
  }
  if ((v = json_object_get(root, "golden"))) {
    static const char *const k[] = {"enabled", "rtol", "atol", NULL};
    if (!json_is_object(v)) {
      rc = hs_error_set(err, HS_PARSE, "golden must be an object");
      goto done;
    }
    if ((rc = only_keys(v, "golden", k, err)) != HS_OK) goto done;
    json_t *en = json_object_get(v, "enabled");
    if (en && !json_is_boolean(en)) {
      rc = hs_error_set(err, HS_PARSE, "golden.enabled must be true or false");
      goto done;
    }
    if (en) cfg->golden_check = json_is_true(en);
    if ((rc = get_tolerance(v, "rtol", &cfg->golden_rtol, err)) != HS_OK) goto done;
    if ((rc = get_tolerance(v, "atol", &cfg->golden_atol, err)) != HS_OK) goto done;
  }
  if ((rc = get_int(root, "threads", "config", 0, 1024, &cfg->threads, err)) != HS_OK) goto done;
  if ((rc = get_int(root, "instances", "config", 0, 1024, &cfg->instances, err)) != HS_OK) goto done;
  if ((v = json_object_get(root, "rollout")) && (rc = parse_rollout(v, &cfg->rollout, err)) != HS_OK) goto done;
  if ((rc = parse_batching(root, cfg, err)) != HS_OK) goto done;
  if ((v = json_object_get(root, "inputs")) &&
      (rc = parse_io(v, "inputs", cfg->inputs, 16, &cfg->n_inputs, err)) != HS_OK)
    goto done;
  if ((v = json_object_get(root, "outputs")) &&
      (rc = parse_io(v, "outputs", cfg->outputs, 16, &cfg->n_outputs, err)) != HS_OK)
    goto done;
done:
  json_decref(root);
  if (rc != HS_OK) hs_repo_config_defaults(cfg);
  return rc;
}

int hs_repo_load_config(const char *root, const char *model, hs_model_config *cfg, hs_error *err) {
  char code[32];
  return hs__load_config(root, model, false, NULL, cfg, code, err);
}

int hs__config_message(const char *model, const char *text, size_t len, char **out, size_t *out_len, hs_error *err) {
  size_t ml = strlen(model), pl = strlen(HS__CONFIG_SIG_PREFIX);
  char *msg = malloc(pl + ml + 1 + len + 1);
  if (!msg) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  memcpy(msg, HS__CONFIG_SIG_PREFIX, pl);
  memcpy(msg + pl, model, ml);
  msg[pl + ml] = '\n';
  memcpy(msg + pl + ml + 1, text, len);
  *out = msg;
  *out_len = pl + ml + 1 + len;
  return HS_OK;
}

/* Checks ROOT/<model>/config.json.sig over (model, text): "" in code when it verifies. */
static int check_config_signature(const char *real_model, const char *model, const char *text, size_t len,
                                  const hs_trusted_keys *keys, char code[32], hs_error *err) {
  char sig_path[HS_PATH_MAX];
  int rc = hs__path_join(sig_path, sizeof sig_path, real_model, HS_REPO_CONFIG_SIGNATURE_NAME, err);
  if (rc != HS_OK) return rc;
  /* Like config.json itself, its signature may be a link only within the model directory. */
  char real_sig[PATH_MAX];
  if (realpath(sig_path, real_sig) && !hs__path_within(real_model, real_sig)) {
    snprintf(code, 32, "unsafe_path");
    return hs_error_set(err, HS_VERIFY, "%s leads out of the model directory", HS_REPO_CONFIG_SIGNATURE_NAME);
  }
  char *sig = NULL;
  size_t slen = 0;
  hs_error serr;
  hs_error_clear(&serr);
  rc = hs_file_read(sig_path, HS__MAX_SIGNATURE_BYTES, &sig, &slen, &serr);
  if (rc == HS_NOT_FOUND) {
    snprintf(code, 32, "unsigned");
    return hs_error_set(err, HS_VERIFY,
                        "config.json is not signed (no %s) and the server requires signatures: sign it with "
                        "`hotserve sign %s/config.json --key KEY`",
                        HS_REPO_CONFIG_SIGNATURE_NAME, model);
  }
  if (rc != HS_OK) {
    snprintf(code, 32, "%s", rc == HS_VERIFY ? "unsafe_path" : rc == HS_LIMIT ? "limit" : "io");
    return hs_error_set(err, rc == HS_IO ? HS_IO : HS_VERIFY, "%s", serr.message);
  }
  char *msg = NULL;
  size_t mlen = 0;
  rc = hs__config_message(model, text, len, &msg, &mlen, err);
  if (rc == HS_OK) {
    hs__verdict v = {0};
    hs__reason r = hs__verify_signature(keys, msg, mlen, sig, slen, &v);
    if (r != HS__R_NONE) {
      snprintf(code, 32, "%s", hs__reason_code(r));
      if (r == HS__R_BAD_SIGNATURE && strstr(v.message, "does not match"))
        rc = hs_error_set(err, HS_VERIFY,
                          "%s does not verify over this model's name and config.json (signed for another "
                          "model, or the config changed since it was signed)",
                          HS_REPO_CONFIG_SIGNATURE_NAME);
      else
        rc = hs_error_set(err, HS_VERIFY, "%s: %s", HS_REPO_CONFIG_SIGNATURE_NAME, v.message);
    }
  }
  free(msg);
  free(sig);
  return rc;
}

int hs__load_config(const char *root, const char *model, bool require_signature, const hs_trusted_keys *keys,
                    hs_model_config *cfg, char code[32], hs_error *err) {
  hs_repo_config_defaults(cfg);
  code[0] = '\0';
  char model_dir[HS_PATH_MAX], path[HS_PATH_MAX], real_model[PATH_MAX], real_cfg[PATH_MAX];
  int rc = hs__path_join(model_dir, sizeof model_dir, root, model, err);
  if (rc == HS_OK) rc = hs__path_join(path, sizeof path, model_dir, "config.json", err);
  if (rc != HS_OK) {
    snprintf(code, 32, "limit");
    return rc;
  }
  if (!realpath(model_dir, real_model)) {
    snprintf(code, 32, "io");
    return hs_error_set(err, HS_NOT_FOUND, "%s: %s", model_dir, strerror(errno));
  }
  if (!realpath(path, real_cfg)) {
    if (errno == ENOENT) {
      struct stat st;
      if (lstat(path, &st) == 0) {
        snprintf(code, 32, "unsafe_path");
        return hs_error_set(err, HS_VERIFY, "config.json: dangling symlink");
      }
      return HS_OK; /* no config: defaults */
    }
    snprintf(code, 32, "io");
    return hs_error_set(err, HS_IO, "%s: %s", path, strerror(errno));
  }
  if (!hs__path_within(real_model, real_cfg)) {
    snprintf(code, 32, "unsafe_path");
    return hs_error_set(err, HS_VERIFY, "config.json leads out of the model directory");
  }
  char *text = NULL;
  size_t len = 0;
  rc = hs_file_read(real_cfg, HS__MAX_CONFIG_BYTES, &text, &len, err);
  if (rc != HS_OK) {
    snprintf(code, 32, "%s", rc == HS_VERIFY ? "unsafe_path" : rc == HS_LIMIT ? "limit" : "io");
    return rc;
  }
  /* With signatures required, config.json counts only when signed: it picks the backend, the
   * versions served and what the golden check accepts. */
  if (require_signature) rc = check_config_signature(real_model, model, text, len, keys, code, err);
  if (rc == HS_OK) {
    rc = hs_repo_parse_config(text, len, cfg, err);
    if (rc != HS_OK) snprintf(code, 32, "%s", rc == HS_VERIFY ? "unsafe_path" : rc == HS_LIMIT ? "limit" : "bad_config");
  }
  free(text);
  if (rc != HS_OK) {
    hs_repo_config_defaults(cfg);
    hs_error_prefix(err, "%s", path);
  }
  return rc;
}

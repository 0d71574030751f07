/* handlers.c - KServe v2 routes: health, metadata, infer, repository extension, status, metrics. */
#include "http/handlers.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include "base/digest.h"
#include "base/clock.h"
#include "base/log.h"
#include "http/triton.h"
#include "serving/infer.h"
#include "serving/rollout.h"

#define HS_MAX_SEGMENTS 8

void hs_reply_error(hs_reply *reply, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  hs_sbuf_free(&reply->body);
  reply->status = status;
  reply->content_type = NULL;
  reply->header_len = -1;
  hs_sbuf_puts(&reply->body, "{\"error\":");
  hs_sbuf_json_str(&reply->body, msg);
  hs_sbuf_puts(&reply->body, "}");
}

/* Parses a version path segment: a positive decimal integer; -1 otherwise. */
static int64_t parse_version(const char *s) {
  if (!*s || *s == '0' || strlen(s) > 18) return -1;
  for (const char *p = s; *p; p++)
    if (*p < '0' || *p > '9') return -1;
  return strtoll(s, NULL, 10);
}

static void put_io(hs_sbuf *b, const hs_io_desc *d) {
  hs_sbuf_puts(b, "{\"name\":");
  hs_sbuf_json_str(b, d->name);
  const char *dt = hs_dtype_kserve_name(d->dtype);
  hs_sbuf_printf(b, ",\"datatype\":\"%s\",\"shape\":[", dt ? dt : "BYTES");
  for (int k = 0; k < d->ndim; k++) hs_sbuf_printf(b, k ? ",%lld" : "%lld", (long long)(d->dims[k] < 0 ? -1 : d->dims[k]));
  hs_sbuf_puts(b, "]}");
}

/* ---- health and metadata ---- */

static void handle_ready(const hs_handler_env *env, hs_reply *reply) {
  char why[256];
  if (!hs_registry_ready(env->reg, why, sizeof why)) {
    hs_reply_error(reply, 503, "not ready: %s", why);
    return;
  }
  hs_sbuf_puts(&reply->body, "{\"ready\":true}");
}

static void handle_server_metadata(hs_reply *reply) {
  hs_sbuf_puts(&reply->body,
               "{\"name\":\"hotserve\",\"version\":\"0.1.0\",\"extensions\":[\"binary_tensor_data\","
               "\"model_repository\",\"statistics\",\"model_configuration\",\"hotserve_status\"]}");
}

static void handle_model_metadata(hs_model *m, int64_t version, hs_reply *reply) {
  hs_version *v = NULL;
  int rc = hs_model_acquire(m, version, &v);
  if (rc == HS_NOT_FOUND) {
    hs_reply_error(reply, 404, "model %s has no version %" PRId64 " loaded", hs_model_name(m), version);
    return;
  }
  if (rc != HS_OK) {
    hs_reply_error(reply, 503, "model %s has no version ready", hs_model_name(m));
    return;
  }
  hs_model_status st;
  hs_model_status_get(m, &st);
  hs_sbuf *b = &reply->body;
  hs_sbuf_puts(b, "{\"name\":");
  hs_sbuf_json_str(b, hs_model_name(m));
  hs_sbuf_puts(b, ",\"versions\":[");
  if (version >= 0) {
    hs_sbuf_printf(b, "\"%" PRId64 "\"", version);
  } else {
    bool first = true;
    for (size_t i = 0; i < st.n; i++)
      if (st.history[i].serving) {
        hs_sbuf_printf(b, "%s\"%" PRId64 "\"", first ? "" : ",", st.history[i].version);
        first = false;
      }
  }
  hs_sbuf_puts(b, "],\"platform\":\"onnx\",\"inputs\":[");
  for (size_t i = 0; i < hs_version_num_inputs(v); i++) {
    if (i) hs_sbuf_puts(b, ",");
    put_io(b, hs_version_input(v, i));
  }
  hs_sbuf_puts(b, "],\"outputs\":[");
  for (size_t i = 0; i < hs_version_num_outputs(v); i++) {
    if (i) hs_sbuf_puts(b, ",");
    put_io(b, hs_version_output(v, i));
  }
  hs_sbuf_puts(b, "]}");
  hs_version_release(v);
}

/* The spec's model ready document: {"name": m, "ready": bool} (503 when not ready). */
static void handle_model_ready(hs_model *m, int64_t version, hs_reply *reply) {
  hs_version *v = NULL;
  int rc = hs_model_acquire(m, version, &v);
  hs_version_release(v);
  if (rc != HS_OK) reply->status = 503;
  hs_sbuf_puts(&reply->body, "{\"name\":");
  hs_sbuf_json_str(&reply->body, hs_model_name(m));
  hs_sbuf_puts(&reply->body, rc == HS_OK ? ",\"ready\":true}" : ",\"ready\":false}");
}

static void put_ms(hs_sbuf *b, const char *key, double ms) {
  if (ms < 0) hs_sbuf_printf(b, ",\"%s\":null", key);
  else hs_sbuf_printf(b, ",\"%s\":%.3f", key, ms);
}

/* A wall-clock time in ms since the epoch as an RFC 3339 UTC string ("...Z"); null when 0. */
static void put_time(hs_sbuf *b, const char *key, int64_t unix_ms) {
  if (unix_ms <= 0) {
    hs_sbuf_printf(b, ",\"%s\":null", key);
    return;
  }
  time_t s = (time_t)(unix_ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  hs_sbuf_printf(b, ",\"%s\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", key, tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
}

static void put_version_or_null(hs_sbuf *b, const char *key, int64_t v) {
  if (v < 0) hs_sbuf_printf(b, ",\"%s\":null", key);
  else hs_sbuf_printf(b, ",\"%s\":\"%" PRId64 "\"", key, v);
}

static void put_arm(hs_sbuf *b, const char *key, const hs_rollout_arm_status *a) {
  hs_sbuf_printf(b, ",\"%s\":{\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"error_rate\":%.6f", key,
                 a->requests, a->errors, a->error_rate);
  if (a->p99_ms < 0) hs_sbuf_puts(b, ",\"p99_ms\":null}");
  else hs_sbuf_printf(b, ",\"p99_ms\":%.3f}", a->p99_ms);
}

/* The "rollout" object of a model's status (docs/GRAY_RELEASE.md). */
static void put_rollout(hs_sbuf *b, hs_model *m) {
  hs_rollout_status rs;
  hs_rollout_status_get(m, &rs);
  hs_sbuf_printf(b, ",\"rollout\":{\"strategy\":\"%s\",\"state\":\"%s\"", hs_rollout_strategy_name(rs.strategy),
                 rs.active ? hs_rollout_strategy_name(rs.window_strategy) : "idle");
  put_version_or_null(b, "stable_version", rs.stable);
  put_version_or_null(b, "candidate_version", rs.candidate);
  if (rs.active) {
    if (rs.window_strategy == HS_ROLLOUT_CANARY) hs_sbuf_printf(b, ",\"weight\":%g", rs.weight);
    else hs_sbuf_printf(b, ",\"fraction\":%g", rs.fraction);
    hs_sbuf_printf(b, ",\"min_requests\":%lld,\"elapsed_s\":%.3f,\"time_left_s\":%.3f", rs.min_requests,
                   rs.elapsed_s, rs.time_left_s);
    put_arm(b, "stable", &rs.stable_arm);
    put_arm(b, "candidate", &rs.candidate_arm);
    if (rs.window_strategy == HS_ROLLOUT_SHADOW)
      hs_sbuf_printf(b, ",\"shadow\":{\"compared\":%" PRIu64 ",\"disagreements\":%" PRIu64 ",\"dropped\":%" PRIu64 "}",
                     rs.compared, rs.disagreements, rs.dropped);
  }
  hs_sbuf_puts(b, ",\"last_decision\":");
  if (!rs.decided) {
    hs_sbuf_puts(b, "null}");
    return;
  }
  hs_sbuf_printf(b, "{\"version\":\"%" PRId64 "\",\"outcome\":\"%s\",\"reason\":", rs.decision_version, rs.outcome);
  hs_sbuf_json_str(b, rs.reason);
  hs_sbuf_puts(b, ",\"detail\":");
  hs_sbuf_json_str(b, rs.detail);
  put_time(b, "timestamp", rs.decision_unix_ms);
  hs_sbuf_puts(b, "}}");
}

static void handle_status(hs_model *m, hs_reply *reply) {
  hs_model_status *st = malloc(sizeof *st);
  if (!st) {
    hs_reply_error(reply, 500, "out of memory");
    return;
  }
  hs_model_status_get(m, st);
  hs_sbuf *b = &reply->body;
  hs_sbuf_puts(b, "{\"name\":");
  hs_sbuf_json_str(b, st->name);
  if (st->serving_version >= 0) hs_sbuf_printf(b, ",\"serving_version\":\"%" PRId64 "\"", st->serving_version);
  else hs_sbuf_puts(b, ",\"serving_version\":null");
  hs_sbuf_puts(b, ",\"versions\":[");
  for (size_t i = 0; i < st->n; i++) {
    const hs_version_status *v = &st->history[i];
    if (i) hs_sbuf_puts(b, ",");
    hs_sbuf_printf(b, "{\"version\":\"%" PRId64 "\",\"generation\":%" PRIu64 ",\"state\":\"%s\",\"serving\":%s",
                   v->version, v->generation, hs_vstate_name(v->state), v->serving ? "true" : "false");
    hs_sbuf_puts(b, ",\"fingerprint\":");
    hs_sbuf_json_str(b, v->fingerprint);
    put_ms(b, "load_ms", v->load_ms);
    put_ms(b, "verify_ms", v->verify_ms);
    put_ms(b, "warmup_ms", v->warmup_ms);
    put_ms(b, "first_request_ms", v->first_request_ms);
    put_time(b, "timestamp", v->unix_ms);
    put_ms(b, "read_ms", v->read_ms);
    put_ms(b, "read_cpu_ms", v->read_cpu_ms);
    put_ms(b, "hash_cpu_ms", v->hash_cpu_ms);
    put_ms(b, "hash_wait_ms", v->hash_wait_ms);
    put_ms(b, "decode_ms", v->decode_ms);
    put_ms(b, "decode_cpu_ms", v->decode_cpu_ms);
    put_ms(b, "ring_wait_ms", v->ring_wait_ms);
    put_ms(b, "gate_wait_ms", v->gate_wait_ms);
    put_ms(b, "compile_ms", v->compile_ms);
    put_ms(b, "compile_cpu_ms", v->compile_cpu_ms);
    put_ms(b, "load_cpu_ms", v->load_cpu_ms);
    put_ms(b, "warmup_cpu_ms", v->warmup_cpu_ms);
    put_ms(b, "paced_ms", v->paced_ms);
    hs_sbuf_printf(b, ",\"bytes_read\":%" PRIu64 ",\"bytes_hashed\":%" PRIu64, v->bytes_read, v->bytes_hashed);
    hs_sbuf_printf(b, ",\"weights_shared_bytes\":%" PRIu64 ",\"weights_built_bytes\":%" PRIu64, v->weights_shared,
                   v->weights_built);
    hs_sbuf_puts(b, ",\"reason\":");
    if (v->reason[0]) hs_sbuf_json_str(b, v->reason);
    else hs_sbuf_puts(b, "null");
    hs_sbuf_puts(b, ",\"error\":");
    if (v->error[0]) hs_sbuf_json_str(b, v->error);
    else hs_sbuf_puts(b, "null");
    hs_sbuf_puts(b, "}");
  }
  hs_sbuf_puts(b, "]");
  put_rollout(b, m);
  hs_sbuf_puts(b, "}");
  free(st);
}

/* ---- request bodies of the repository extension (jansson; small documents) ---- */

/* Parses an optional JSON object body: *out is NULL for an empty body. On a bad body fills reply (400). */
static bool parse_object_body(const hs_request *req, json_t **out, hs_reply *reply) {
  *out = NULL;
  size_t i = 0;
  while (i < req->body_len && strchr(" \t\r\n", req->body[i])) i++;
  if (i == req->body_len) return true;
  json_error_t je;
  json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
  if (!doc || !json_is_object(doc)) {
    if (doc) hs_reply_error(reply, 400, "the request body must be a JSON object");
    else hs_reply_error(reply, 400, "malformed JSON near byte %d: %s", je.position, je.text);
    json_decref(doc);
    return false;
  }
  *out = doc;
  return true;
}

/* ---- repository extension ---- */

/* POST /v2/repository/index, body {"ready": bool} optional: rescans, then lists every model's versions
 * in Triton's states (hs_triton_index). */
static void handle_index(const hs_handler_env *env, const hs_request *req, hs_reply *reply) {
  json_t *doc;
  if (!parse_object_body(req, &doc, reply)) return;
  bool ready_only = false;
  const char *key;
  json_t *val;
  json_object_foreach(doc, key, val) {
    if (strcmp(key, "ready") == 0 && json_is_boolean(val)) {
      ready_only = json_is_true(val);
    } else {
      hs_reply_error(reply, 400, "repository index: %s \"%s\" is not supported (only \"ready\": boolean)",
                     strcmp(key, "ready") == 0 ? "a non-boolean" : "the field", key);
      json_decref(doc);
      return;
    }
  }
  json_decref(doc);
  hs_error err;
  hs_error_clear(&err);
  hs_index_entry *e = NULL;
  size_t n = 0;
  int rc = hs_triton_index(env->reg, ready_only, &e, &n, &err);
  if (rc != HS_OK) {
    hs_reply_error(reply, rc == HS_NO_MEMORY ? 500 : 503, "%s", err.message);
    return;
  }
  hs_sbuf *b = &reply->body;
  hs_sbuf_puts(b, "[");
  for (size_t i = 0; i < n; i++) {
    hs_sbuf_puts(b, i ? ",{\"name\":" : "{\"name\":");
    hs_sbuf_json_str(b, e[i].name);
    if (e[i].version >= 0) hs_sbuf_printf(b, ",\"version\":\"%" PRId64 "\"", e[i].version);
    hs_sbuf_printf(b, ",\"state\":\"%s\",\"reason\":", e[i].state);
    hs_sbuf_json_str(b, e[i].reason);
    hs_sbuf_puts(b, "}");
  }
  hs_sbuf_puts(b, "]");
  free(e);
}

/* Refuses the load parameters hotserve does not implement (Triton's "config" override, "file:..."). */
static bool load_params_ok(const hs_request *req, const char *verb, hs_reply *reply) {
  json_t *doc;
  if (!parse_object_body(req, &doc, reply)) return false;
  const char *key;
  json_t *val;
  bool ok = true;
  json_object_foreach(doc, key, val) {
    if (strcmp(key, "parameters") != 0) {
      hs_reply_error(reply, 400, "%s: the field \"%s\" is not supported", verb, key);
      ok = false;
      break;
    }
    if (!json_is_object(val)) {
      hs_reply_error(reply, 400, "%s: \"parameters\" must be an object", verb);
      ok = false;
      break;
    }
    const char *pk;
    json_t *pv;
    json_object_foreach(val, pk, pv) {
      (void)pv;
      hs_reply_error(reply, 400, "%s: parameters.%s is not supported (%s)", verb, pk, hs_triton_param_refusal(pk));
      ok = false;
      break;
    }
    if (!ok) break;
  }
  json_decref(doc);
  return ok;
}

/* POST /v2/repository/models/{m}/load and /unload. A failed load answers 400 with its reason (the
 * extension's status); an unknown model 404. */
static void handle_load_unload(const hs_handler_env *env, const hs_request *req, const char *name, bool unload,
                               hs_reply *reply) {
  if (!load_params_ok(req, unload ? "unload" : "load", reply)) return;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_triton_load(env->reg, name, unload, &err);
  if (rc == HS_NOT_FOUND) {
    hs_reply_error(reply, 404, "%s", err.message);
  } else if (rc == HS_UNAVAILABLE && !unload) {
    hs_reply_error(reply, 400, "%s", err.message);
  } else if (rc == HS_UNAVAILABLE) {
    hs_reply_error(reply, 503, "%s", err.message);
  } else if (rc != HS_OK) {
    hs_reply_error(reply, 500, "%s", err.message);
  } else {
    hs_sbuf_puts(&reply->body, "{}");
  }
}

/* ---- model configuration (Triton's GET /v2/models/{m}/config) ---- */

/* One input or output; with batching (skip = 1) dims leave out the batch dimension, as Triton's do. */
static void put_triton_io(hs_sbuf *b, const hs_io_desc *d, bool first, int skip) {
  hs_sbuf_puts(b, first ? "{\"name\":" : ",{\"name\":");
  hs_sbuf_json_str(b, d->name);
  hs_sbuf_printf(b, ",\"data_type\":\"%s\",\"dims\":[", hs_triton_dtype(d->dtype));
  for (int k = skip; k < d->ndim; k++)
    hs_sbuf_printf(b, k > skip ? ",%lld" : "%lld", (long long)(d->dims[k] < 0 ? -1 : d->dims[k]));
  hs_sbuf_puts(b, "]}");
}

/* The model's effective configuration in Triton's model config shape, plus hotserve's own fields
 * under "hotserve". Inputs and outputs are the serving version's (the pinned one with version >= 0, which
 * must serve: 404 otherwise), else config.json's declared ones. */
static void handle_model_config(hs_model *m, int64_t version, hs_reply *reply) {
  hs_version *v = NULL;
  bool have = hs_model_acquire(m, version, &v) == HS_OK;
  if (version >= 0 && !have) {
    hs_reply_error(reply, 404, "model %s has no version %" PRId64 " loaded", hs_model_name(m), version);
    return;
  }
  hs_model_config *cfg = malloc(sizeof *cfg);
  if (!cfg) {
    hs_version_release(v);
    hs_reply_error(reply, 500, "out of memory");
    return;
  }
  hs_model_config_get(m, cfg);
  hs_sbuf *b = &reply->body;
  hs_sbuf_puts(b, "{\"name\":");
  hs_sbuf_json_str(b, hs_model_name(m));
  hs_sbuf_puts(b, ",\"platform\":\"onnx\",\"backend\":");
  hs_sbuf_json_str(b, cfg->backend);
  hs_sbuf_puts(b, ",\"version_policy\":");
  if (cfg->policy == HS_POLICY_ALL) {
    hs_sbuf_puts(b, "{\"all\":{}}");
  } else if (cfg->policy == HS_POLICY_SPECIFIC) {
    hs_sbuf_puts(b, "{\"specific\":{\"versions\":[");
    for (size_t k = 0; k < cfg->n_specific; k++) hs_sbuf_printf(b, k ? ",%" PRId64 : "%" PRId64, cfg->specific[k]);
    hs_sbuf_puts(b, "]}}");
  } else {
    hs_sbuf_printf(b, "{\"latest\":{\"num_versions\":%d}}", cfg->latest_n);
  }
  /* with dynamic batching the first dimension is the batch: dims leave it out (Triton's meaning);
   * without, dims are whole shapes, as the model declares them */
  int skip = cfg->max_batch_size > 0 ? 1 : 0;
  hs_sbuf_printf(b, ",\"max_batch_size\":%d", cfg->max_batch_size);
  if (cfg->dynamic_batching) {
    hs_sbuf_puts(b, ",\"dynamic_batching\":{\"preferred_batch_size\":[");
    for (size_t k = 0; k < cfg->n_preferred; k++) hs_sbuf_printf(b, k ? ",%d" : "%d", cfg->preferred_batch_size[k]);
    hs_sbuf_printf(b, "],\"max_queue_delay_microseconds\":%d}", cfg->max_queue_delay_us);
  }
  hs_sbuf_puts(b, ",\"input\":[");
  size_t ni = have ? hs_version_num_inputs(v) : cfg->n_inputs, no = have ? hs_version_num_outputs(v) : cfg->n_outputs;
  for (size_t i = 0; i < ni; i++) put_triton_io(b, have ? hs_version_input(v, i) : &cfg->inputs[i], i == 0, skip);
  hs_sbuf_puts(b, "],\"output\":[");
  for (size_t i = 0; i < no; i++) put_triton_io(b, have ? hs_version_output(v, i) : &cfg->outputs[i], i == 0, skip);
  int64_t described = have ? hs_version_number(v) : -1;
  hs_version_release(v);
  hs_sbuf_puts(b, "],\"instance_group\":[{\"kind\":\"KIND_CPU\",\"count\":");
  hs_sbuf_printf(b, "%d}]", cfg->instances); /* 0: the server's --instances default */
  static const char *const warmups[] = {"zeros", "random", "files"};
  /* hotserve's own fields, named as in config.json */
  hs_sbuf_printf(b, ",\"hotserve\":{\"threads\":%d,\"instances\":%d,\"warmup\":{\"runs\":%d,\"inputs\":\"%s\"}",
                 cfg->threads, cfg->instances, cfg->warmup_runs, warmups[cfg->warmup_kind]);
  hs_sbuf_printf(b, ",\"golden\":{\"enabled\":%s,\"rtol\":%g,\"atol\":%g}", cfg->golden_check ? "true" : "false",
                 cfg->golden_rtol, cfg->golden_atol);
  hs_sbuf_printf(b, ",\"serving_version\":");
  if (have) hs_sbuf_printf(b, "\"%" PRId64 "\"", described);
  else hs_sbuf_puts(b, "null");
  hs_sbuf_printf(b, ",\"unloaded\":%s}}", hs_model_is_unloaded(m) ? "true" : "false");
  free(cfg);
}

/* ---- statistics extension (Triton's GET /v2/models[/{m}[/versions/{v}]]/stats) ---- */

static void put_stat(hs_sbuf *b, const char *key, hs_stat_duration d, bool first) {
  hs_sbuf_printf(b, "%s\"%s\":{\"count\":%" PRIu64 ",\"ns\":%" PRIu64 "}", first ? "" : ",", key, d.count, d.ns);
}

/* m NULL: every model (GET /v2/models/stats); version >= 0: that version, which must serve (404). */
static void handle_stats(const hs_handler_env *env, hs_model *m, int64_t version, hs_reply *reply) {
  hs_error err;
  hs_error_clear(&err);
  hs_stats_entry *e = NULL;
  size_t n = 0;
  int rc = hs_triton_stats(env->reg, m, version, &e, &n, &err);
  if (rc != HS_OK) {
    hs_reply_error(reply, rc == HS_NOT_FOUND ? 404 : 500, "%s", err.message);
    return;
  }
  hs_sbuf *b = &reply->body;
  hs_sbuf_puts(b, "{\"model_stats\":[");
  for (size_t i = 0; i < n; i++) {
    hs_sbuf_puts(b, i ? ",{\"name\":" : "{\"name\":");
    hs_sbuf_json_str(b, e[i].name);
    hs_sbuf_printf(b, ",\"version\":\"%" PRId64 "\",\"last_inference\":%" PRIu64 ",\"inference_count\":%" PRIu64
                      ",\"execution_count\":%" PRIu64 ",\"inference_stats\":{",
                   e[i].version, e[i].last_inference_ms, e[i].inference_count, e[i].execution_count);
    put_stat(b, "success", e[i].success, true);
    put_stat(b, "fail", e[i].fail, false);
    put_stat(b, "queue", e[i].queue, false);
    put_stat(b, "compute_input", e[i].compute_input, false);
    put_stat(b, "compute_infer", e[i].compute_infer, false);
    put_stat(b, "compute_output", e[i].compute_output, false);
    put_stat(b, "cache_hit", (hs_stat_duration){0, 0}, false);
    put_stat(b, "cache_miss", (hs_stat_duration){0, 0}, false);
    hs_sbuf_puts(b, "},\"batch_stats\":[]}");
  }
  hs_sbuf_puts(b, "]}");
  free(e);
}

/* POST /v2/repository/models/{m}/rollout/{promote,rollback}: decides the open window now. */
static void handle_rollout_command(const hs_handler_env *env, const char *name, const char *what, hs_reply *reply) {
  hs_rollout_cmd cmd;
  if (strcmp(what, "promote") == 0) cmd = HS_ROLLOUT_CMD_PROMOTE;
  else if (strcmp(what, "rollback") == 0) cmd = HS_ROLLOUT_CMD_ROLLBACK;
  else {
    hs_reply_error(reply, 404, "no such rollout command \"%s\" (promote or rollback)", what);
    return;
  }
  hs_model *m = hs_registry_find(env->reg, name);
  if (!m) {
    hs_reply_error(reply, 404, "unknown model %s", name);
    return;
  }
  hs_error err;
  hs_error_clear(&err);
  int64_t version = -1;
  int rc = hs_rollout_command(env->reg, m, cmd, &version, &err);
  if (rc == HS_NOT_FOUND) hs_reply_error(reply, 409, "%s", err.message);
  else if (rc == HS_UNAVAILABLE) hs_reply_error(reply, 503, "%s", err.message);
  else if (rc != HS_OK) hs_reply_error(reply, 500, "%s", err.message);
  else
    hs_sbuf_printf(&reply->body, "{\"version\":\"%" PRId64 "\",\"outcome\":\"%s\"}", version,
                   cmd == HS_ROLLOUT_CMD_PROMOTE ? "promoted" : "rolled_back");
}

/* ---- infer: decode, one call into serving, encode ---- */

/* Points the serving call at the decoded request: its tensors (views) and the outputs it names. */
static int infer_inputs_from(const hs_infer_request *req, hs_named_tensor **tensors, const char ***names,
                             hs_infer_inputs *in) {
  *tensors = calloc(req->n_inputs ? req->n_inputs : 1, sizeof **tensors);
  *names = calloc(req->n_outputs ? req->n_outputs : 1, sizeof **names);
  if (!*tensors || !*names) return HS_NO_MEMORY;
  for (size_t k = 0; k < req->n_inputs; k++) (*tensors)[k] = (hs_named_tensor){req->inputs[k].name, req->inputs[k].t};
  for (size_t k = 0; k < req->n_outputs; k++) (*names)[k] = req->outputs[k].name;
  in->inputs = *tensors;
  in->n_inputs = req->n_inputs;
  in->outputs = *names;
  in->n_outputs = req->n_outputs;
  return HS_OK;
}

/* Encodes a result into reply: each output binary as its request asked (or the default). */
static int encode_result(const hs_model *m, const hs_infer_request *req, const hs_infer_result *res,
                         hs_reply *reply) {
  hs_infer_output *enc = calloc(res->n_outputs ? res->n_outputs : 1, sizeof *enc);
  if (!enc) return HS_NO_MEMORY;
  for (size_t k = 0; k < res->n_outputs; k++)
    enc[k] = (hs_infer_output){.name = res->names[k], .t = &res->outputs[k],
                               .binary = req->n_outputs ? req->outputs[k].binary : req->binary_default};
  size_t json_len = 0;
  bool has_binary = false;
  int rc = hs_infer_response_encode(hs_model_name(m), res->version, req, enc, res->n_outputs, &reply->body,
                                    &json_len, &has_binary);
  free(enc);
  if (rc == HS_OK && has_binary) {
    reply->header_len = (long long)json_len;
    reply->content_type = "application/octet-stream";
  }
  return rc;
}

/* The HTTP status of a serving error (see hs_serving_infer). */
static int infer_http_status(int rc) {
  switch (rc) {
    case HS_NOT_FOUND: return 404;
    case HS_UNAVAILABLE: return 503;
    case HS_INVALID_ARGUMENT: return 400;
    case HS_LIMIT: return 413; /* the request's shapes are too large or over --max-request-memory */
    case HS_OVERLOADED: return 503; /* over --max-total-request-memory for now: with Retry-After */
    default: return 500;
  }
}

/* Parses Inference-Header-Content-Length: -1 when absent, -2 when not a non-negative integer. */
static long long parse_header_len(const char *s) {
  if (!s) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < 0) return -2;
  return v;
}

static void handle_infer(const hs_handler_env *env, hs_model *m, int64_t version, const hs_request *hreq,
                         hs_reply *reply) {
  uint64_t t0 = hs_now_ns();
  long long header_len = parse_header_len(hreq->header_len);
  hs_error err;
  hs_error_clear(&err);
  hs_infer_request req;
  if (hreq->too_large) {
    hs_reply_error(reply, 413, "request body exceeds the limit of %zu bytes", hreq->max_body_bytes);
    hs_serving_count_refused(m, HS_OUTCOME_CLIENT_ERROR, t0);
    return;
  }
  if (header_len == -2) {
    hs_reply_error(reply, 400, "Inference-Header-Content-Length must be a non-negative integer, got \"%.40s\"",
                   hreq->header_len);
    hs_serving_count_refused(m, HS_OUTCOME_CLIENT_ERROR, t0);
    return;
  }
  if (hs_infer_request_decode(hreq->body, hreq->body_len, header_len, &env->limits, &req, &err) != HS_OK) {
    int status = err.code == HS_NO_MEMORY ? 500 : 400;
    hs_reply_error(reply, status, "%s", err.message);
    hs_serving_count_refused(m, status == 400 ? HS_OUTCOME_CLIENT_ERROR : HS_OUTCOME_SERVER_ERROR, t0);
    return;
  }
  hs_named_tensor *tensors = NULL;
  const char **names = NULL;
  hs_infer_inputs in = {.arrival_ns = t0};
  if (infer_inputs_from(&req, &tensors, &names, &in) != HS_OK) {
    hs_reply_error(reply, 500, "out of memory");
    hs_serving_count_refused(m, HS_OUTCOME_SERVER_ERROR, t0);
  } else {
    hs_infer_result res;
    int rc = hs_serving_infer(m, version, &in, &res, &err);
    if (rc != HS_OK) {
      hs_reply_error(reply, infer_http_status(rc), "%s", err.message);
      if (rc == HS_OVERLOADED) reply->retry_after_s = 1;
    }
    else if (encode_result(m, &req, &res, reply) != HS_OK)
      hs_reply_error(reply, 500, "out of memory encoding the response");
    hs_infer_result_free(&res);
  }
  free(tensors);
  free(names);
  hs_infer_request_free(&req);
}

/* ---- routing ---- */

/* ---- repository control access (issue 16, class 11) ---- */

/* Whether the request may use the repository control API (index, load, unload); when not, fills
 * reply: 403 when the API is off (--model-control-mode none) or the token is wrong, 401 when a
 * token is required (--control-token-file) and none was sent. */
static bool control_allowed(const hs_handler_env *env, const hs_request *req, hs_reply *reply) {
  if (env->control_disabled) {
    hs_reply_error(reply, 403, "the repository control API is disabled (--model-control-mode none)");
    return false;
  }
  if (!env->control_token) return true;
  const char *auth = req->authorization;
  if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
    reply->www_authenticate = "Bearer realm=\"hotserve repository control\"";
    hs_reply_error(reply, 401, "the repository control API needs an Authorization: Bearer token");
    return false;
  }
  const char *token = auth + 7;
  while (*token == ' ') token++;
  if (!hs_secret_equal(token, env->control_token)) {
    hs_reply_error(reply, 403, "the bearer token is not the repository control token");
    return false;
  }
  return true;
}

static size_t split_path(char *path, char **seg, size_t cap) {
  size_t n = 0;
  char *save = NULL;
  for (char *p = strtok_r(path, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
    if (n == cap) return cap + 1;
    seg[n++] = p;
  }
  return n;
}

static bool is(const char *a, const char *b) { return strcmp(a, b) == 0; }

void hs_handle(const hs_handler_env *env, const hs_request *req, hs_reply *reply) {
  reply->status = 200;
  reply->header_len = -1;
  char path[1024];
  if (strlen(req->path) >= sizeof path) {
    hs_reply_error(reply, 404, "no such path");
    return;
  }
  snprintf(path, sizeof path, "%s", req->path);
  char *seg[HS_MAX_SEGMENTS];
  size_t n = split_path(path, seg, HS_MAX_SEGMENTS);
  bool get = is(req->method, "GET") || is(req->method, "HEAD"), post = is(req->method, "POST");
  bool infer_route = n >= 4 && is(seg[0], "v2") && is(seg[1], "models") && is(seg[n - 1], "infer");
  if (req->too_large && !infer_route) { /* infer counts it in the model's metrics first */
    hs_reply_error(reply, 413, "request body exceeds the limit of %zu bytes", req->max_body_bytes);
    return;
  }

  if (n == 1 && is(seg[0], "metrics")) {
    if (!get) goto bad_method;
    hs_metrics_render(env->reg, &reply->body);
    reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return;
  }
  if (n == 0 || !is(seg[0], "v2") || n > HS_MAX_SEGMENTS) goto not_found;
  if (n == 1) {
    if (!get) goto bad_method;
    handle_server_metadata(reply);
    return;
  }
  if (n == 3 && is(seg[1], "health")) {
    if (!get) goto bad_method;
    if (is(seg[2], "live")) hs_sbuf_puts(&reply->body, "{\"live\":true}");
    else if (is(seg[2], "ready")) handle_ready(env, reply);
    else goto not_found;
    return;
  }
  if (is(seg[1], "repository")) {
    if (!control_allowed(env, req, reply)) return;
    if (n == 3 && is(seg[2], "index")) {
      if (!post) goto bad_method;
      handle_index(env, req, reply);
      return;
    }
    if (n == 5 && is(seg[2], "models") && (is(seg[4], "load") || is(seg[4], "unload"))) {
      if (!post) goto bad_method;
      handle_load_unload(env, req, seg[3], is(seg[4], "unload"), reply);
      return;
    }
    if (n == 6 && is(seg[2], "models") && is(seg[4], "rollout")) {
      if (!post) goto bad_method;
      handle_rollout_command(env, seg[3], seg[5], reply);
      return;
    }
    goto not_found;
  }
  if (n == 3 && is(seg[1], "models") && is(seg[2], "stats")) {
    if (!get) goto bad_method;
    handle_stats(env, NULL, -1, reply);
    return;
  }
  if (is(seg[1], "models") && n >= 3) {
    hs_model *m = hs_registry_find(env->reg, seg[2]);
    size_t rest = 3;
    int64_t version = -1;
    if (n >= 5 && is(seg[3], "versions")) {
      version = parse_version(seg[4]);
      rest = 5;
      if (!m) {
        hs_reply_error(reply, 404, "unknown model %s", seg[2]);
        return;
      }
      if (version < 0) {
        hs_reply_error(reply, 404, "model %s has no version \"%s\"", seg[2], seg[4]);
        return;
      }
    }
    if (!m) {
      hs_reply_error(reply, 404, "unknown model %s", seg[2]);
      return;
    }
    if (n == rest) {
      if (!get) goto bad_method;
      handle_model_metadata(m, version, reply);
      return;
    }
    if (n == rest + 1 && is(seg[rest], "ready")) {
      if (!get) goto bad_method;
      handle_model_ready(m, version, reply);
      return;
    }
    if (n == rest + 1 && is(seg[rest], "infer")) {
      if (!post) goto bad_method;
      handle_infer(env, m, version, req, reply);
      return;
    }
    if (n == rest + 1 && is(seg[rest], "stats")) {
      if (!get) goto bad_method;
      handle_stats(env, m, version, reply);
      return;
    }
    if (n == rest + 1 && is(seg[rest], "config")) {
      if (!get) goto bad_method;
      handle_model_config(m, version, reply);
      return;
    }
    if (n == 4 && is(seg[3], "status")) {
      if (!get) goto bad_method;
      handle_status(m, reply);
      return;
    }
  }
not_found:
  hs_reply_error(reply, 404, "no such path: %s %s", req->method, req->path);
  return;
bad_method:
  hs_reply_error(reply, 405, "method %s is not allowed on %s", req->method, req->path);
}

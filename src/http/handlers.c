/* handlers.c - KServe v2 routes: health, metadata, infer, repository extension, status, metrics. */
#include "http/handlers.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/log.h"
#include "serving/infer.h"

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
               "\"model_repository\",\"hotserve_status\"]}");
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

static void handle_model_ready(hs_model *m, int64_t version, hs_reply *reply) {
  hs_version *v = NULL;
  int rc = hs_model_acquire(m, version, &v);
  hs_version_release(v);
  if (rc == HS_OK) {
    hs_sbuf_puts(&reply->body, "{\"ready\":true}");
  } else {
    reply->status = 503;
    hs_sbuf_puts(&reply->body, "{\"ready\":false}");
  }
}

static void put_ms(hs_sbuf *b, const char *key, double ms) {
  if (ms < 0) hs_sbuf_printf(b, ",\"%s\":null", key);
  else hs_sbuf_printf(b, ",\"%s\":%.3f", key, ms);
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
    hs_sbuf_puts(b, ",\"reason\":");
    if (v->reason[0]) hs_sbuf_json_str(b, v->reason);
    else hs_sbuf_puts(b, "null");
    hs_sbuf_puts(b, ",\"error\":");
    if (v->error[0]) hs_sbuf_json_str(b, v->error);
    else hs_sbuf_puts(b, "null");
    hs_sbuf_puts(b, "}");
  }
  hs_sbuf_puts(b, "]}");
  free(st);
}

/* ---- repository extension ---- */

static void handle_index(const hs_handler_env *env, hs_reply *reply) {
  hs_error err;
  hs_error_clear(&err);
  if (hs_registry_rescan_sync(env->reg, &err) != HS_OK) {
    hs_reply_error(reply, 503, "%s", err.message);
    return;
  }
  hs_model_status *st = malloc(sizeof *st);
  if (!st) {
    hs_reply_error(reply, 500, "out of memory");
    return;
  }
  hs_sbuf *b = &reply->body;
  hs_sbuf_puts(b, "[");
  bool first = true;
  size_t n = hs_registry_num_models(env->reg);
  for (size_t i = 0; i < n; i++) {
    hs_model *m = hs_registry_model_at(env->reg, i);
    if (!m) break; /* forgotten since n was read (registry.c) */
    hs_model_status_get(m, st);
    /* one entry per version: its newest history entry */
    for (size_t k = st->n; k-- > 0;) {
      const hs_version_status *v = &st->history[k];
      bool newer = false;
      for (size_t j = k + 1; j < st->n; j++)
        if (st->history[j].version == v->version) newer = true;
      if (newer) continue;
      hs_sbuf_puts(b, first ? "{\"name\":" : ",{\"name\":");
      first = false;
      hs_sbuf_json_str(b, st->name);
      hs_sbuf_printf(b, ",\"version\":\"%" PRId64 "\",\"state\":\"%s\",\"reason\":", v->version,
                     v->state == HS_VS_READY ? "READY" : v->state == HS_VS_FAILED ? "UNAVAILABLE"
                                                      : v->state == HS_VS_LOADING ? "LOADING" : "UNLOADED");
      if (v->reason[0]) hs_sbuf_json_str(b, v->error[0] ? v->error : v->reason);
      else hs_sbuf_puts(b, "\"\"");
      hs_sbuf_puts(b, "}");
    }
  }
  hs_sbuf_puts(b, "]");
  free(st);
}

static void handle_load_unload(const hs_handler_env *env, const char *name, bool unload, hs_reply *reply) {
  hs_error err;
  hs_error_clear(&err);
  int rc = unload ? hs_registry_unload_model(env->reg, name, &err) : hs_registry_load_model(env->reg, name, &err);
  if (rc == HS_NOT_FOUND) hs_reply_error(reply, 404, "%s", err.message);
  else if (rc == HS_UNAVAILABLE) hs_reply_error(reply, 503, "%s", err.message);
  else if (rc != HS_OK) hs_reply_error(reply, 500, "%s", err.message);
  else hs_sbuf_puts(&reply->body, "{}");
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
    if (rc != HS_OK)
      hs_reply_error(reply, infer_http_status(rc), "%s", err.message);
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

/* Compares a and b in time that depends on their lengths only, not on where they differ. */
static bool same_secret(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  unsigned char diff = la != lb;
  for (size_t i = 0; i < la && i < lb; i++) diff |= (unsigned char)(a[i] ^ b[i]);
  return diff == 0;
}

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
  if (!same_secret(token, env->control_token)) {
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
      handle_index(env, reply);
      return;
    }
    if (n == 5 && is(seg[2], "models") && (is(seg[4], "load") || is(seg[4], "unload"))) {
      if (!post) goto bad_method;
      handle_load_unload(env, seg[3], is(seg[4], "unload"), reply);
      return;
    }
    goto not_found;
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

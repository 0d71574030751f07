/* handlers.c - KServe v2 routes: health, metadata, infer, repository extension, status, metrics. */
#include "http/handlers.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

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
    hs_model_status_get(hs_registry_model_at(env->reg, i), st);
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

/* ---- infer ---- */

static bool shape_matches(const hs_io_desc *d, const hs_tensor *t) {
  if (d->ndim != t->ndim) return false;
  for (int k = 0; k < d->ndim; k++)
    if (d->dims[k] >= 0 && d->dims[k] != t->dims[k]) return false;
  return true;
}

static void shape_str(char *buf, size_t cap, const int64_t *dims, int ndim) {
  size_t off = (size_t)snprintf(buf, cap, "[");
  for (int k = 0; k < ndim && off < cap; k++)
    off += (size_t)snprintf(buf + off, cap - off, k ? ",%lld" : "%lld", (long long)dims[k]);
  if (off < cap) snprintf(buf + off, cap - off, "]");
}

/* Runs one decoded request on v. Returns the HTTP status; fills reply. */

/* Moves every output's bytes into one new block (*held, the caller frees it) and points the
 * outputs at it. HS_NO_MEMORY when the block cannot be had; the outputs are then untouched. */
static int copy_outputs_out(hs_tensor *outs, size_t n, void **held, hs_error *err) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += outs[i].nbytes;
  *held = NULL;
  if (total == 0) return HS_OK;
  unsigned char *block = malloc(total);
  if (!block) return hs_error_set(err, HS_NO_MEMORY, "out of memory copying %zu output bytes", total);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    if (outs[i].nbytes) memcpy(block + off, outs[i].data, outs[i].nbytes);
    outs[i].data = block + off;
    off += outs[i].nbytes;
  }
  *held = block;
  return HS_OK;
}

static int infer_on(const hs_handler_env *env, hs_model *m, hs_version *v, const hs_request *hreq,
                    const hs_infer_request *req, hs_reply *reply, uint64_t *queue_ns, uint64_t *compute_ns) {
  size_t n_in = hs_version_num_inputs(v), n_out = hs_version_num_outputs(v);
  if (req->n_inputs != n_in) {
    for (size_t i = 0; i < n_in; i++) {
      bool given = false;
      for (size_t k = 0; k < req->n_inputs; k++)
        if (strcmp(req->inputs[k].name, hs_version_input(v, i)->name) == 0) given = true;
      if (!given) {
        hs_reply_error(reply, 400, "input %s is missing (the model takes %zu inputs)", hs_version_input(v, i)->name, n_in);
        return 400;
      }
    }
  }
  hs_tensor *ins = calloc(n_in ? n_in : 1, sizeof *ins);
  hs_tensor *outs = calloc(n_out ? n_out : 1, sizeof *outs);
  hs_infer_output *enc = calloc(n_out ? n_out : 1, sizeof *enc);
  if (!ins || !outs || !enc) {
    free(ins), free(outs), free(enc);
    hs_reply_error(reply, 500, "out of memory");
    return 500;
  }
  int status = 200;
  for (size_t k = 0; k < req->n_inputs && status == 200; k++) {
    const hs_infer_input *in = &req->inputs[k];
    size_t i = 0;
    while (i < n_in && strcmp(hs_version_input(v, i)->name, in->name) != 0) i++;
    if (i == n_in) {
      hs_reply_error(reply, 400, "input %s is not an input of model %s", in->name, hs_model_name(m));
      status = 400;
      break;
    }
    const hs_io_desc *d = hs_version_input(v, i);
    if (d->dtype != in->t.dtype) {
      hs_reply_error(reply, 400, "input %s: datatype %s, the model expects %s", in->name,
                     hs_dtype_kserve_name(in->t.dtype), hs_dtype_kserve_name(d->dtype));
      status = 400;
      break;
    }
    if (!shape_matches(d, &in->t)) {
      char got[160], want[160];
      shape_str(got, sizeof got, in->t.dims, in->t.ndim);
      shape_str(want, sizeof want, d->dims, d->ndim);
      hs_reply_error(reply, 400, "input %s: shape %s does not match the model's %s (-1 = any)", in->name, got, want);
      status = 400;
      break;
    }
    ins[i] = in->t;
  }
  /* requested outputs */
  size_t n_enc = 0;
  if (status == 200) {
    if (req->n_outputs == 0) {
      for (size_t i = 0; i < n_out; i++)
        enc[n_enc++] = (hs_infer_output){.name = hs_version_output(v, i)->name, .t = &outs[i],
                                         .binary = req->binary_default};
    } else {
      for (size_t k = 0; k < req->n_outputs && status == 200; k++) {
        size_t i = 0;
        while (i < n_out && strcmp(hs_version_output(v, i)->name, req->outputs[k].name) != 0) i++;
        if (i == n_out) {
          hs_reply_error(reply, 400, "output %s is not an output of model %s", req->outputs[k].name, hs_model_name(m));
          status = 400;
          break;
        }
        if (n_enc < n_out) enc[n_enc++] = (hs_infer_output){.name = hs_version_output(v, i)->name, .t = &outs[i],
                                                             .binary = req->outputs[k].binary};
      }
    }
  }
  if (status == 200) {
    uint64_t tq = hs_now_ns();
    hs_backend_session *s = hs_version_take(v);
    uint64_t tc = hs_now_ns();
    *queue_ns = tc - tq;
    hs_error err;
    hs_error_clear(&err);
    int rc = hs_version_backend(v)->run(s, ins, n_in, outs, n_out, &err);
    *compute_ns = hs_now_ns() - tc;
    /* Outputs live in the session's arena. Copy them out and give the session back before
     * encoding, so the next request can run while this one formats its (possibly JSON) reply. */
    void *held = NULL;
    if (rc == HS_OK) rc = copy_outputs_out(outs, n_out, &held, &err);
    hs_version_give(v, s);
    if (rc == HS_INVALID_ARGUMENT) {
      hs_reply_error(reply, 400, "%s", err.message);
      status = 400;
    } else if (rc != HS_OK) {
      hs_reply_error(reply, 500, "model %s version %" PRId64 " failed: %s", hs_model_name(m), hs_version_number(v),
                     err.message);
      status = 500;
    } else {
      size_t json_len = 0;
      bool has_binary = false;
      if (hs_infer_response_encode(hs_model_name(m), hs_version_number(v), req, enc, n_enc, &reply->body, &json_len,
                                   &has_binary) != HS_OK) {
        hs_reply_error(reply, 500, "out of memory encoding the response");
        status = 500;
      } else if (has_binary) {
        reply->header_len = (long long)json_len;
        reply->content_type = "application/octet-stream";
      }
    }
    free(held);
  }
  (void)env;
  (void)hreq;
  free(ins);
  free(outs);
  free(enc);
  return status;
}

static void handle_infer(const hs_handler_env *env, hs_model *m, int64_t version, const hs_request *hreq,
                         hs_reply *reply) {
  uint64_t t0 = hs_now_ns(), queue_ns = 0, compute_ns = 0;
  hs_model_request_begin(m);
  hs_infer_request req;
  hs_error err;
  hs_error_clear(&err);
  hs_version *v = NULL;
  int status;
  long long header_len = -1;
  if (hreq->header_len) {
    char *end;
    errno = 0;
    header_len = strtoll(hreq->header_len, &end, 10);
    if (errno || end == hreq->header_len || *end != '\0' || header_len < 0) header_len = -2;
  }
  if (hreq->too_large) {
    status = 413;
    hs_reply_error(reply, 413, "request body exceeds the limit of %zu bytes", hreq->max_body_bytes);
  } else if (header_len == -2) {
    status = 400;
    hs_reply_error(reply, 400, "Inference-Header-Content-Length must be a non-negative integer, got \"%.40s\"",
                   hreq->header_len);
  } else if (hs_infer_request_decode(hreq->body, hreq->body_len, header_len, &env->limits, &req, &err) != HS_OK) {
    status = err.code == HS_NO_MEMORY ? 500 : 400;
    hs_reply_error(reply, status, "%s", err.message);
  } else {
    int rc = hs_model_acquire(m, version, &v);
    if (rc == HS_NOT_FOUND) {
      status = 404;
      hs_reply_error(reply, 404, "model %s has no version %" PRId64 " loaded", hs_model_name(m), version);
    } else if (rc != HS_OK) {
      status = 503;
      hs_reply_error(reply, 503, "model %s has no version ready", hs_model_name(m));
    } else {
      status = infer_on(env, m, v, hreq, &req, reply, &queue_ns, &compute_ns);
    }
    hs_infer_request_free(&req);
  }
  hs_outcome outcome = status == 200   ? HS_OUTCOME_SUCCESS
                       : status < 500 ? HS_OUTCOME_CLIENT_ERROR
                                      : HS_OUTCOME_SERVER_ERROR;
  hs_model_request_end(m, v, outcome, hs_now_ns() - t0, queue_ns, compute_ns);
  hs_version_release(v);
}

/* ---- routing ---- */

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

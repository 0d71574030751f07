/* server.c - libmicrohttpd front end: collects bodies, routes KServe v2 paths, runs handlers, drains on stop.
 *
 * DESIGN
 * libmicrohttpd runs one thread per connection (bounded by max_connections), so a handler may
 * block while its model runs without stalling other clients; a model's session pool bounds the
 * concurrent runs (requests beyond it queue there). A request's body is gathered into a buffer
 * owned by its req_ctx (allocated on MHD's first call, freed in the completed-notification);
 * a Content-Length above the limit gets 413 (before the body when the client sent "Expect:
 * 100-continue", else after reading and dropping it so the client sees the answer). Handlers
 * (handlers.c) get a decoded route and the whole body. Shutdown: MHD_quiesce_daemon stops accepting, then we wait for
 * the in-flight count (requests between first byte and response sent) to reach zero before
 * MHD_stop_daemon closes idle keep-alive connections.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "http/handlers.h"
#include "serving/stats.h"

struct hs_http_server {
  struct MHD_Daemon *daemon;
  hs_http_options opts;
  hs_handler_env env;
  atomic_int inflight;
  atomic_bool draining;
  int port;
};

typedef struct req_ctx {
  char *body;
  size_t len, cap;
  bool too_large;
} req_ctx;

static enum MHD_Result send_reply(struct MHD_Connection *c, hs_http_server *s, hs_reply *reply) {
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(reply->body.len, reply->body.data, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    hs_sbuf_free(&reply->body);
    return MHD_NO;
  }
  reply->body.data = NULL; /* MHD owns it now */
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                          reply->content_type ? reply->content_type : "application/json");
  if (reply->header_len >= 0) {
    char n[32];
    snprintf(n, sizeof n, "%lld", reply->header_len);
    MHD_add_response_header(resp, "Inference-Header-Content-Length", n);
  }
  if (atomic_load(&s->draining)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  enum MHD_Result r = MHD_queue_response(c, (unsigned)reply->status, resp);
  MHD_destroy_response(resp);
  return r;
}

static enum MHD_Result send_error(struct MHD_Connection *c, hs_http_server *s, int status, const char *msg) {
  hs_reply reply = {.status = status, .header_len = -1};
  hs_reply_error(&reply, status, "%s", msg);
  return send_reply(c, s, &reply);
}

/* Hands the gathered request to the handlers and queues their reply. */
static enum MHD_Result respond(struct MHD_Connection *c, hs_http_server *s, req_ctx *ctx, const char *url,
                               const char *method) {
  hs_request req = {.method = method, .path = url, .body = ctx->body ? ctx->body : "", .body_len = ctx->len,
                    .too_large = ctx->too_large, .max_body_bytes = s->opts.max_body_bytes,
                    .header_len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Inference-Header-Content-Length")};
  hs_reply reply = {.status = 200, .header_len = -1};
  hs_handle(&s->env, &req, &reply);
  return send_reply(c, s, &reply);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  (void)version;
  hs_http_server *s = cls;
  req_ctx *ctx = *con_cls;
  if (!ctx) {
    ctx = calloc(1, sizeof *ctx);
    if (!ctx) return MHD_NO;
    *con_cls = ctx;
    atomic_fetch_add(&s->inflight, 1);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
      char *end;
      unsigned long long n = strtoull(cl, &end, 10);
      if (n > s->opts.max_body_bytes) {
        ctx->too_large = true;
        /* Answer before the body when the client waits for "100 Continue" or the body is absurd;
         * otherwise read and drop it, so a client that sends first and reads later sees the 413. */
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        bool waits = expect && strcasecmp(expect, "100-continue") == 0;
        if (!waits && n / 8 <= s->opts.max_body_bytes) return MHD_YES;
        return respond(c, s, ctx, url, method);
      }
      if (*end == '\0' && n > 0) {
        ctx->body = malloc((size_t)n + 1);
        if (!ctx->body) return send_error(c, s, 500, "out of memory for the request body");
        ctx->cap = (size_t)n + 1;
      }
    }
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (ctx->too_large) return MHD_YES;
    if (n > s->opts.max_body_bytes - ctx->len) {
      ctx->too_large = true; /* keep reading (and dropping) so the 413 reaches the client */
      free(ctx->body);
      ctx->body = NULL;
      ctx->len = ctx->cap = 0;
      return MHD_YES;
    }
    if (ctx->len + n + 1 > ctx->cap) {
      size_t cap = ctx->cap ? ctx->cap : 4096;
      while (cap < ctx->len + n + 1) cap *= 2;
      if (cap > s->opts.max_body_bytes + 1) cap = s->opts.max_body_bytes + 1;
      char *p = realloc(ctx->body, cap);
      if (!p) return send_error(c, s, 500, "out of memory for the request body");
      ctx->body = p;
      ctx->cap = cap;
    }
    memcpy(ctx->body + ctx->len, upload_data, n);
    ctx->len += n;
    return MHD_YES;
  }
  return respond(c, s, ctx, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)c;
  (void)toe;
  hs_http_server *s = cls;
  req_ctx *ctx = *con_cls;
  if (!ctx) return;
  free(ctx->body);
  free(ctx);
  *con_cls = NULL;
  atomic_fetch_sub(&s->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  line[strcspn(line, "\n")] = '\0';
  HS_LOGD("http: %s", line);
}

int hs_http_start(const hs_http_options *opts, hs_registry *reg, hs_http_server **out, hs_error *err) {
  hs_http_server *s = calloc(1, sizeof *s);
  if (!s) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  s->opts = *opts;
  if (!s->opts.host) s->opts.host = "127.0.0.1";
  if (!s->opts.max_body_bytes) s->opts.max_body_bytes = 64u << 20;
  if (!s->opts.max_connections) s->opts.max_connections = 256;
  if (!s->opts.idle_timeout_s) s->opts.idle_timeout_s = 120;
  s->env.reg = reg;
  hs_codec_limits_default(&s->env.limits);

  /* IPv4 or IPv6; an IPv6 socket also takes IPv4 (dual stack), so "::" listens on every address. */
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                   MHD_USE_ERROR_LOG;
  if (inet_pton(AF_INET, s->opts.host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)opts->port);
  } else if (inet_pton(AF_INET6, s->opts.host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)opts->port);
    flags |= MHD_USE_DUAL_STACK;
  } else {
    hs_error_set(err, HS_INVALID_ARGUMENT, "--host %s is not an IPv4 or IPv6 address", s->opts.host);
    free(s);
    return HS_INVALID_ARGUMENT;
  }
  s->daemon = MHD_start_daemon(
      flags, (uint16_t)opts->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT, s->opts.max_connections,
      MHD_OPTION_CONNECTION_TIMEOUT, s->opts.idle_timeout_s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_END); /* no SO_REUSEPORT: a second server on a busy port must fail, not share it */
  if (!s->daemon) {
    int e = errno;
    free(s);
    return hs_error_set(err, HS_IO, "cannot listen on %s:%d: %s", opts->host ? opts->host : "127.0.0.1", opts->port,
                        e == EADDRINUSE ? "address in use (is another server on this port?)"
                                        : e ? strerror(e) : "libmicrohttpd could not start");
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : opts->port;
  *out = s;
  return HS_OK;
}

int hs_http_port(const hs_http_server *s) { return s->port; }

void hs_http_stop(hs_http_server *s, int drain_timeout_ms) {
  if (!s) return;
  atomic_store(&s->draining, true);
  MHD_socket lsock = MHD_quiesce_daemon(s->daemon);
  if (lsock != MHD_INVALID_SOCKET) close(lsock);
  uint64_t deadline = hs_now_ns() + (uint64_t)drain_timeout_ms * 1000000ull;
  while (atomic_load(&s->inflight) > 0 && hs_now_ns() < deadline) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  int left = atomic_load(&s->inflight);
  if (left > 0) HS_LOGW("shutdown: %d requests still in flight after %d ms; closing them", left, drain_timeout_ms);
  MHD_stop_daemon(s->daemon);
  free(s);
}

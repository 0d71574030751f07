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
 *
 * Hostile clients (docs/SECURITY.md): a request whose framing is ambiguous (Content-Length
 * repeated, not a number, or beside Transfer-Encoding) gets 400 and the connection is closed, so
 * no byte after it is read as another request. Each connection has a deadline (conn_slot): the
 * request head must arrive within request_timeout_s of the connection opening or of the previous
 * answer, and the body within request_timeout_s plus Content-Length / min_body_rate; a watchdog
 * thread shuts down the socket of a connection past its deadline (through its own dup of the
 * descriptor, so a descriptor number reused by the kernel is never touched). A client address
 * may hold at most per_ip_connections connections. libmicrohttpd admits probe_reserve
 * connections above max_connections; only /v2/health/ and /metrics requests may use them, so
 * probes still answer while the infer path has every ordinary slot.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "http/encoding.h"
#include "http/handlers.h"
#include "serving/stats.h"

#define PROBE_RESERVE 8 /* connections above max_connections, for health probes and /metrics */

/* One open connection, for its deadline. Guarded by hs_http_server.slots_mu. */
typedef struct conn_slot {
  int fd;               /* our own dup of the connection's socket; -1 when dup failed */
  uint64_t deadline_ns; /* 0: none (a handler runs or the answer is being sent) */
  bool cut;             /* shut down by the watchdog */
  struct conn_slot *prev, *next;
} conn_slot;

struct hs_http_server {
  struct MHD_Daemon *daemon;
  hs_http_options opts;
  hs_handler_env env;
  atomic_int inflight;
  atomic_int busy; /* requests other than probes between head and answer */
  atomic_bool draining;
  int port;
  pthread_mutex_t slots_mu;
  pthread_cond_t watchdog_cv;
  conn_slot *slots;
  bool watchdog_stop;
  bool watchdog_started;
  pthread_t watchdog;
  atomic_ullong cut_total;
};

typedef struct req_ctx {
  char *body;
  size_t len, cap;
  bool too_large;
  bool probe; /* /v2/health/... or /metrics: not counted in busy */
} req_ctx;

static uint64_t seconds_ns(double s) { return (uint64_t)(s * 1e9); }

static conn_slot *slot_of(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? (conn_slot *)ci->socket_context : NULL;
}

static void set_deadline(hs_http_server *s, struct MHD_Connection *c, uint64_t deadline_ns) {
  conn_slot *sl = slot_of(c);
  if (!sl) return;
  pthread_mutex_lock(&s->slots_mu);
  sl->deadline_ns = deadline_ns;
  pthread_mutex_unlock(&s->slots_mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  hs_http_server *s = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    conn_slot *sl = calloc(1, sizeof *sl);
    if (!sl) return; /* no deadline for this one; MHD's idle timeout still applies */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    sl->fd = ci ? fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
    sl->deadline_ns = hs_now_ns() + seconds_ns(s->opts.request_timeout_s);
    pthread_mutex_lock(&s->slots_mu);
    sl->next = s->slots;
    if (s->slots) s->slots->prev = sl;
    s->slots = sl;
    pthread_mutex_unlock(&s->slots_mu);
    *socket_context = sl;
    return;
  }
  conn_slot *sl = *socket_context;
  if (!sl) return;
  pthread_mutex_lock(&s->slots_mu);
  if (sl->prev) sl->prev->next = sl->next;
  else s->slots = sl->next;
  if (sl->next) sl->next->prev = sl->prev;
  pthread_mutex_unlock(&s->slots_mu);
  if (sl->fd >= 0) close(sl->fd);
  free(sl);
  *socket_context = NULL;
}

/* Shuts down connections past their deadline (slow or stalled request heads and bodies). */
static void *watchdog_main(void *arg) {
  hs_http_server *s = arg;
  pthread_mutex_lock(&s->slots_mu);
  while (!s->watchdog_stop) {
    uint64_t now = hs_now_ns();
    for (conn_slot *sl = s->slots; sl; sl = sl->next) {
      if (sl->cut || sl->deadline_ns == 0 || now < sl->deadline_ns || sl->fd < 0) continue;
      shutdown(sl->fd, SHUT_RDWR); /* the connection's thread sees end of file and closes it */
      sl->cut = true;
      atomic_fetch_add(&s->cut_total, 1);
      HS_LOGD("http: closed a connection that did not send its request in time");
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->watchdog_cv, &s->slots_mu, &ts);
  }
  pthread_mutex_unlock(&s->slots_mu);
  return NULL;
}

static enum MHD_Result send_reply(struct MHD_Connection *c, hs_http_server *s, hs_reply *reply, bool close) {
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
  if (reply->content_encoding) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, reply->content_encoding);
  if (reply->www_authenticate) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, reply->www_authenticate);
  if (reply->retry_after_s > 0) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", reply->retry_after_s);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
  }
  if (close || atomic_load(&s->draining)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  enum MHD_Result r = MHD_queue_response(c, (unsigned)reply->status, resp);
  MHD_destroy_response(resp);
  return r;
}

/* An error answer; the connection closes after it (what follows on it cannot be trusted). */
static enum MHD_Result send_error(struct MHD_Connection *c, hs_http_server *s, int status, const char *msg) {
  hs_reply reply = {.status = status, .header_len = -1};
  hs_reply_error(&reply, status, "%s", msg);
  return send_reply(c, s, &reply, true);
}

typedef struct framing {
  int content_length, transfer_encoding, bad_length;
  unsigned long long length;
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  framing *f = cls;
  if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
    f->content_length++;
    /* digits only: no sign, no blank, no list ("5, 5") */
    bool digits = value && *value && strlen(value) <= 19;
    for (const char *p = value; digits && *p; p++) digits = isdigit((unsigned char)*p) != 0;
    if (!digits) f->bad_length++;
    else f->length = strtoull(value, NULL, 10);
  } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
    f->transfer_encoding++;
  }
  return MHD_YES;
}

/* Why the request's framing is ambiguous, or NULL when it is not. */
static const char *framing_problem(struct MHD_Connection *c, framing *f) {
  memset(f, 0, sizeof *f);
  MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, f);
  if (f->content_length > 1) return "repeated Content-Length header";
  if (f->bad_length) return "Content-Length is not a decimal number";
  if (f->transfer_encoding > 1) return "repeated Transfer-Encoding header";
  if (f->content_length && f->transfer_encoding) return "Content-Length together with Transfer-Encoding";
  return NULL;
}

static bool is_probe(const char *url) {
  return strncmp(url, "/v2/health/", 11) == 0 || strcmp(url, "/metrics") == 0;
}

/* Hands the gathered request to the handlers and queues their reply. */
static enum MHD_Result respond(struct MHD_Connection *c, hs_http_server *s, req_ctx *ctx, const char *url,
                               const char *method) {
  hs_request req = {.method = method, .path = url, .body = ctx->body ? ctx->body : "", .body_len = ctx->len,
                    .too_large = ctx->too_large, .max_body_bytes = s->opts.max_body_bytes,
                    .header_len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Inference-Header-Content-Length"),
                    .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)};
  /* Content-Encoding: gzip|deflate bodies are decoded under the same limit as plain ones (413 beyond it) */
  const char *coding = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
  char *decoded = NULL;
  if (coding && strcasecmp(coding, "identity") != 0 && !ctx->too_large && ctx->len > 0) {
    hs_error err;
    hs_error_clear(&err);
    size_t len = 0;
    int rc = hs_http_decode_body(coding, req.body, req.body_len, s->opts.max_body_bytes, &decoded, &len, &err);
    if (rc == HS_LIMIT) {
      req.too_large = true;
      req.body = "";
      req.body_len = 0;
    } else if (rc != HS_OK) {
      return send_error(c, s, rc == HS_UNSUPPORTED ? 415 : rc == HS_NO_MEMORY ? 500 : 400, err.message);
    } else {
      req.body = decoded;
      req.body_len = len;
    }
  }
  hs_reply reply = {.status = 200, .header_len = -1};
  hs_handle(&s->env, &req, &reply);
  free(decoded);
  /* JSON replies are compressed when Accept-Encoding allows it (binary tensor replies are not) */
  const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
  const char *out_coding = reply.content_type == NULL && reply.header_len < 0 ? hs_http_pick_coding(accept) : NULL;
  if (out_coding && !reply.body.failed && hs_http_encode_body(out_coding, &reply.body) == HS_OK)
    reply.content_encoding = out_coding;
  return send_reply(c, s, &reply, false);
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
    ctx->probe = is_probe(url);
    if (!ctx->probe) atomic_fetch_add(&s->busy, 1);
    framing f;
    const char *problem = framing_problem(c, &f);
    if (problem) {
      char msg[128];
      snprintf(msg, sizeof msg, "ambiguous request framing: %s", problem);
      return send_error(c, s, 400, msg);
    }
    if (!ctx->probe && atomic_load(&s->busy) > (int)s->opts.max_connections)
      return send_error(c, s, 503, "server busy: every connection slot for requests is taken; retry later");
    /* The head is in; the body (if any) has until the deadline plus its length at the minimum rate. */
    double body_bytes = (double)(f.length < s->opts.max_body_bytes ? f.length : s->opts.max_body_bytes);
    uint64_t body_ns = seconds_ns(body_bytes / (double)s->opts.min_body_rate);
    set_deadline(s, c, hs_now_ns() + seconds_ns(s->opts.request_timeout_s) + body_ns);
    if (f.content_length) {
      unsigned long long n = f.length;
      if (n > s->opts.max_body_bytes) {
        ctx->too_large = true;
        /* Answer before the body when the client waits for "100 Continue" or the body is absurd;
         * otherwise read and drop it, so a client that sends first and reads later sees the 413. */
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        bool waits = expect && strcasecmp(expect, "100-continue") == 0;
        if (!waits && n / 8 <= s->opts.max_body_bytes) return MHD_YES;
        return respond(c, s, ctx, url, method);
      }
      if (n > 0) {
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
  set_deadline(s, c, 0); /* the whole request is in: no deadline while the handler runs */
  return respond(c, s, ctx, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)toe;
  hs_http_server *s = cls;
  req_ctx *ctx = *con_cls;
  if (!ctx) return;
  /* A kept-alive connection must bring its next request head within the idle timeout. */
  set_deadline(s, c, hs_now_ns() + seconds_ns(s->opts.idle_timeout_s));
  if (!ctx->probe) atomic_fetch_sub(&s->busy, 1);
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
  if (!s->opts.request_timeout_s) s->opts.request_timeout_s = 30;
  if (!s->opts.min_body_rate) s->opts.min_body_rate = 64 << 10;
  if (!s->opts.per_ip_connections) s->opts.per_ip_connections = s->opts.max_connections / 2 ? s->opts.max_connections / 2 : 1;
  s->env.reg = reg;
  hs_codec_limits_default(&s->env.limits);
  s->env.control_disabled = s->opts.control_disabled;
  s->env.control_token = s->opts.control_token;
  pthread_mutex_init(&s->slots_mu, NULL);
  pthread_cond_init(&s->watchdog_cv, NULL);

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
    pthread_mutex_destroy(&s->slots_mu);
    pthread_cond_destroy(&s->watchdog_cv);
    free(s);
    return HS_INVALID_ARGUMENT;
  }
  s->daemon = MHD_start_daemon(
      flags, (uint16_t)opts->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
      MHD_OPTION_CONNECTION_LIMIT, s->opts.max_connections + PROBE_RESERVE,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->opts.per_ip_connections,
      MHD_OPTION_CONNECTION_TIMEOUT, s->opts.idle_timeout_s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_END); /* no SO_REUSEPORT: a second server on a busy port must fail, not share it */
  if (!s->daemon) {
    int e = errno;
    pthread_mutex_destroy(&s->slots_mu);
    pthread_cond_destroy(&s->watchdog_cv);
    free(s);
    return hs_error_set(err, HS_IO, "cannot listen on %s:%d: %s", opts->host ? opts->host : "127.0.0.1", opts->port,
                        e == EADDRINUSE ? "address in use (is another server on this port?)"
                                        : e ? strerror(e) : "libmicrohttpd could not start");
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : opts->port;
  if (pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0)
    s->watchdog_started = true;
  else
    HS_LOGW("http: no watchdog thread; slow clients are only cut by the idle timeout");
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
  if (s->watchdog_started) {
    pthread_mutex_lock(&s->slots_mu);
    s->watchdog_stop = true;
    pthread_cond_signal(&s->watchdog_cv);
    pthread_mutex_unlock(&s->slots_mu);
    pthread_join(s->watchdog, NULL);
  }
  pthread_mutex_destroy(&s->slots_mu);
  pthread_cond_destroy(&s->watchdog_cv);
  free(s);
}

/* frontend.c - gRPC transport on gRPC's C core: accepts unary calls, hands their bytes to service.c, replies.
 *
 * DESIGN
 * A fixed pool of worker threads (opts.workers, default 16). Each worker owns one completion queue,
 * registered with the server, and handles one call at a time, start to finish:
 *   grpc_server_request_call (wait for a call) -> RECV_MESSAGE (the request, bounded by idle_timeout_s)
 *   -> hs_grpc_dispatch (may block in the model run, like an HTTP connection thread)
 *   -> one batch of SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_STATUS_FROM_SERVER, RECV_CLOSE_ON_SERVER.
 * Because a worker has exactly one operation outstanding on its own queue, every grpc_completion_queue_next
 * returns that operation's event; no tag bookkeeping or cross-thread hand-off is needed. Workers also drive
 * gRPC's polling, so network I/O continues while some workers run models. Calls beyond the pool wait inside
 * gRPC core until a worker asks for the next one; a model's session pool still bounds concurrent runs.
 * HTTP/2 framing, flow control, message sizes (GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH answers
 * RESOURCE_EXHAUSTED) and deadlines are gRPC core's; protobuf is protobuf-c's (service.c).
 *
 * Shutdown (hs_grpc_stop): grpc_server_shutdown_and_notify stops accepting calls and fails every pending
 * request_call, so idle workers return; calls in flight finish normally. If they take longer than the drain
 * timeout, grpc_server_cancel_all_calls cancels them. Then the workers are joined, their queues shut down
 * and drained, and the server destroyed.
 */
#include "grpc/frontend.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "grpc/service.h"

typedef struct worker {
  struct hs_grpc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  bool started;
} worker;

struct hs_grpc_server {
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  hs_grpc_options opts;
  hs_grpc_env env;
  worker *workers;
  int n_workers;
  int port;
};

static gpr_timespec after_ms(long ms) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Waits for the one operation outstanding on cq; *timed_out when the deadline passed first. */
static grpc_event wait_one(grpc_completion_queue *cq, gpr_timespec deadline) {
  return grpc_completion_queue_next(cq, deadline, NULL);
}

/* Runs a batch on call and waits until it completes; returns its success flag. */
static bool run_batch(worker *w, grpc_call *call, const grpc_op *ops, size_t n) {
  static char tag;
  if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) return false;
  grpc_event ev = wait_one(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC));
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Copies a received message into one contiguous buffer (malloc'd; *len bytes). */
static uint8_t *read_message(grpc_byte_buffer *bb, size_t *len) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  *len = GRPC_SLICE_LENGTH(s);
  uint8_t *out = malloc(*len ? *len : 1);
  if (out && *len) memcpy(out, GRPC_SLICE_START_PTR(s), *len);
  grpc_slice_unref(s);
  return out;
}

/* Serves one accepted call: receive the request, answer it, send the reply and status. */
/* The call's "authorization" metadata as a NUL-terminated string in buf (NULL when absent or too long). */
static const char *authorization_of(const grpc_metadata_array *md, char *buf, size_t cap) {
  for (size_t i = 0; md && i < md->count; i++) {
    const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
    if (GRPC_SLICE_LENGTH(*k) != 13 || memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13) != 0) continue;
    size_t n = GRPC_SLICE_LENGTH(*v);
    if (n >= cap) return NULL;
    memcpy(buf, GRPC_SLICE_START_PTR(*v), n);
    buf[n] = '\0';
    return buf;
  }
  return NULL;
}

static void serve_call(worker *w, grpc_call *call, const grpc_call_details *details,
                       const grpc_metadata_array *md) {
  hs_grpc_server *s = w->srv;
  static char tag;
  grpc_byte_buffer *in = NULL;
  grpc_op recv = {.op = GRPC_OP_RECV_MESSAGE};
  recv.data.recv_message.recv_message = &in;
  if (grpc_call_start_batch(call, &recv, 1, &tag, NULL) != GRPC_CALL_OK) return;
  grpc_event ev = wait_one(w->cq, after_ms((long)s->opts.idle_timeout_s * 1000));
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    grpc_call_cancel_with_status(call, GRPC_STATUS_DEADLINE_EXCEEDED, "no request message in time", NULL);
    ev = wait_one(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (in) grpc_byte_buffer_destroy(in);
    return;
  }
  if (!ev.success) { /* the client went away or the call was cancelled */
    if (in) grpc_byte_buffer_destroy(in);
    return;
  }

  hs_grpc_reply reply = {0};
  size_t len = 0;
  uint8_t *msg = in ? read_message(in, &len) : NULL;
  if (in) grpc_byte_buffer_destroy(in);
  if (!in) {
    reply.code = GRPC_STATUS_INVALID_ARGUMENT;
    snprintf(reply.message, sizeof reply.message, "the call carried no request message");
  } else if (!msg) {
    reply.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(reply.message, sizeof reply.message, "out of memory reading the request");
  } else {
    char auth[512];
    hs_grpc_dispatch(&s->env, (const char *)GRPC_SLICE_START_PTR(details->method),
                     GRPC_SLICE_LENGTH(details->method), msg, len, authorization_of(md, auth, sizeof auth), &reply);
  }
  free(msg);

  grpc_slice body = grpc_empty_slice();
  grpc_byte_buffer *out = NULL;
  if (reply.code == GRPC_STATUS_OK) {
    body = grpc_slice_from_copied_buffer((const char *)reply.body, reply.len);
    out = grpc_raw_byte_buffer_create(&body, 1);
  }
  free(reply.body);
  grpc_slice details_slice = grpc_slice_from_copied_string(reply.message);
  int cancelled = 0;
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (out) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = out;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)reply.code;
  ops[n++].data.send_status_from_server.status_details = &details_slice;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &cancelled;
  run_batch(w, call, ops, n);
  if (out) grpc_byte_buffer_destroy(out);
  grpc_slice_unref(body);
  grpc_slice_unref(details_slice);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  static char tag;
  for (;;) {
    grpc_call *call = NULL;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_call_details_init(&details);
    grpc_metadata_array_init(&md);
    bool got = grpc_server_request_call(w->srv->server, &call, &details, &md, w->cq, w->cq, &tag) == GRPC_CALL_OK;
    if (got) {
      grpc_event ev = wait_one(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC));
      got = ev.type == GRPC_OP_COMPLETE && ev.success; /* false once the server shuts down */
    }
    if (got) serve_call(w, call, &details, &md);
    if (call) grpc_call_unref(call);
    grpc_call_details_destroy(&details);
    grpc_metadata_array_destroy(&md);
    if (!got) break;
  }
  return NULL;
}

/* "host:port", with IPv6 literals in brackets. */
static void format_addr(char *buf, size_t cap, const char *host, int port) {
  if (strchr(host, ':') && host[0] != '[') snprintf(buf, cap, "[%s]:%d", host, port);
  else snprintf(buf, cap, "%s:%d", host, port);
}

/* Drains and destroys a queue after grpc_completion_queue_shutdown. */
static void destroy_cq(grpc_completion_queue *cq) {
  if (!cq) return;
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

static void free_server(hs_grpc_server *s) {
  if (s->server) grpc_server_destroy(s->server);
  for (int i = 0; i < s->n_workers; i++) destroy_cq(s->workers[i].cq);
  destroy_cq(s->shutdown_cq);
  free(s->workers);
  free(s);
  grpc_shutdown();
}

int hs_grpc_start(const hs_grpc_options *opts, hs_registry *reg, hs_grpc_server **out, hs_error *err) {
  *out = NULL;
  hs_grpc_server *s = calloc(1, sizeof *s);
  if (!s) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  s->opts = *opts;
  if (!s->opts.host || !*s->opts.host) s->opts.host = "127.0.0.1";
  if (!s->opts.max_message_bytes) s->opts.max_message_bytes = 64u << 20;
  if (s->opts.workers <= 0) s->opts.workers = 16;
  if (!s->opts.idle_timeout_s) s->opts.idle_timeout_s = 120;
  s->env.reg = reg;
  s->env.control_disabled = opts->control_disabled;
  s->env.control_token = opts->control_token;
  hs_codec_limits_default(&s->env.limits);
  grpc_init();

  size_t max_msg = s->opts.max_message_bytes > (size_t)INT32_MAX ? (size_t)INT32_MAX : s->opts.max_message_bytes;
  grpc_arg args[3] = {
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = (int)max_msg},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, .value.integer = -1},
      /* a second server on the same port must fail, not share it */
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
  };
  grpc_channel_args chargs = {.num_args = 3, .args = args};
  s->server = grpc_server_create(&chargs, NULL);
  s->n_workers = s->opts.workers;
  s->workers = calloc((size_t)s->n_workers, sizeof *s->workers);
  s->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
  if (!s->server || !s->workers || !s->shutdown_cq) {
    free_server(s);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory starting gRPC");
  }
  grpc_server_register_completion_queue(s->server, s->shutdown_cq, NULL);
  for (int i = 0; i < s->n_workers; i++) {
    s->workers[i].srv = s;
    s->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->workers[i].cq, NULL);
  }
  char addr[300];
  format_addr(addr, sizeof addr, s->opts.host, s->opts.port);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  s->port = grpc_server_add_http2_port(s->server, addr, creds);
  grpc_server_credentials_release(creds);
  if (s->port <= 0) {
    free_server(s);
    return hs_error_set(err, HS_IO, "gRPC: cannot listen on %s (address in use or not available)", addr);
  }
  grpc_server_start(s->server);
  for (int i = 0; i < s->n_workers; i++) {
    if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0) {
      hs_grpc_stop(s, 0);
      return hs_error_set(err, HS_INTERNAL, "gRPC: cannot start worker threads");
    }
    s->workers[i].started = true;
  }
  *out = s;
  return HS_OK;
}

int hs_grpc_port(const hs_grpc_server *s) { return s->port; }

void hs_grpc_stop(hs_grpc_server *s, int drain_timeout_ms) {
  if (!s) return;
  static char tag;
  grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &tag);
  grpc_event ev = grpc_completion_queue_next(s->shutdown_cq, after_ms(drain_timeout_ms), NULL);
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    HS_LOGW("gRPC: calls still running after %d ms; cancelling them", drain_timeout_ms);
    grpc_server_cancel_all_calls(s->server);
    grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  }
  for (int i = 0; i < s->n_workers; i++)
    if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
  free_server(s);
}

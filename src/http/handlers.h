/* handlers.h - the HTTP routes as plain functions of a decoded request (no libmicrohttpd types here). */
#ifndef HS_HTTP_HANDLERS_H
#define HS_HTTP_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>

#include "http/codec.h"
#include "http/sbuf.h"
#include "serving/registry.h"

typedef struct hs_handler_env {
  hs_registry *reg;
  hs_codec_limits limits;
  bool control_disabled;     /* --model-control-mode none: the repository API answers 403 */
  const char *control_token; /* non-NULL: the repository API needs "Authorization: Bearer <token>" */
} hs_handler_env;

typedef struct hs_request {
  const char *method;
  const char *path;      /* URL path, already percent-decoded */
  const char *body;      /* never NULL; body_len bytes */
  size_t body_len;
  const char *header_len; /* the Inference-Header-Content-Length header as sent, NULL when absent */
  bool too_large;         /* the body exceeded the limit and was dropped: answer 413 */
  size_t max_body_bytes;  /* that limit, for the message */
  const char *authorization; /* the Authorization header as sent, NULL when absent */
} hs_request;

typedef struct hs_reply {
  int status;
  hs_sbuf body;              /* the reply owns it until it is sent */
  const char *content_type;  /* NULL: application/json */
  long long header_len;      /* >= 0: send Inference-Header-Content-Length */
  const char *content_encoding; /* set by the server when it compressed body (Accept-Encoding) */
  const char *www_authenticate; /* non-NULL: send this WWW-Authenticate header (a 401) */
  int retry_after_s;         /* > 0: send Retry-After (an overloaded server's 503) */
} hs_reply;

/* Fills reply with status and the JSON error document {"error": message}. */
void hs_reply_error(hs_reply *reply, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Routes and answers one request; always fills reply (errors included). */
void hs_handle(const hs_handler_env *env, const hs_request *req, hs_reply *reply);

/* Writes the Prometheus text exposition of every metric (metrics.c). */
void hs_metrics_render(hs_registry *reg, hs_sbuf *out);

#endif

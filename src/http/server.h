/* server.h - the HTTP front end (libmicrohttpd): KServe v2 routes, repository extension, status, /metrics. */
#ifndef HS_HTTP_SERVER_H
#define HS_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "serving/registry.h"

typedef struct hs_http_server hs_http_server;

typedef struct hs_http_options {
  const char *host;        /* IPv4 or IPv6 address to bind ("::": every address, dual stack); default 127.0.0.1 */
  int port;                /* 0 picks a free port */
  size_t max_body_bytes;   /* default 64 MiB; larger bodies get 413 */
  unsigned max_connections; /* default 256 */
  unsigned idle_timeout_s;  /* idle or slow clients are disconnected after this; default 120 */
  double request_timeout_s; /* a request head must arrive within this, its body within this plus
                               Content-Length / min_body_rate; default 30 */
  size_t min_body_rate;     /* bytes per second a body must at least arrive at; default 64 KiB */
  unsigned per_ip_connections; /* connections one client address may hold; default max_connections/2 */
  bool control_disabled;       /* the repository API (index, load, unload) answers 403 */
  const char *control_token;   /* non-NULL: the repository API needs this bearer token (borrowed) */
} hs_http_options;

/* Starts listening (one thread per connection). *out is freed by hs_http_stop. The registry is
 * borrowed and must outlive the server. */
int hs_http_start(const hs_http_options *opts, hs_registry *reg, hs_http_server **out, hs_error *err);

/* The port actually bound (useful with port 0). */
int hs_http_port(const hs_http_server *s);

/* Stops accepting connections, lets requests in flight finish (up to drain_timeout_ms), closes
 * the rest and frees s. */
void hs_http_stop(hs_http_server *s, int drain_timeout_ms);

#endif

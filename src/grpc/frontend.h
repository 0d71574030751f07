/* frontend.h - the gRPC front end: inference.GRPCInferenceService (proto/grpc_predict_v2.proto) on gRPC's C core. */
#ifndef HS_GRPC_FRONTEND_H
#define HS_GRPC_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>

#include "hotserve/status.h"
#include "serving/registry.h"

typedef struct hs_grpc_server hs_grpc_server;

typedef struct hs_grpc_options {
  const char *host;         /* address to bind: IPv4, IPv6 ("::1"), or "::" for every address (dual stack) */
  int port;                 /* 0 picks a free port */
  size_t max_message_bytes; /* largest request message; larger ones get RESOURCE_EXHAUSTED (default 64 MiB) */
  int workers;              /* calls handled at once (worker threads); default 16 */
  unsigned idle_timeout_s;  /* a call whose request message does not arrive in this time is cancelled; default 120 */
  bool control_disabled;    /* the repository RPCs (index, load, unload) answer PERMISSION_DENIED */
  const char *control_token; /* non-NULL: the repository RPCs need metadata "authorization: Bearer <token>"
                                (borrowed) */
} hs_grpc_options;

/* Binds and starts serving. *out is freed by hs_grpc_stop. The registry is borrowed and must outlive the
 * server. HS_IO when the address cannot be bound. */
int hs_grpc_start(const hs_grpc_options *opts, hs_registry *reg, hs_grpc_server **out, hs_error *err);

/* The port actually bound (useful with port 0). */
int hs_grpc_port(const hs_grpc_server *s);

/* Stops accepting calls, lets calls in flight finish (up to drain_timeout_ms, then cancels them), and frees s. */
void hs_grpc_stop(hs_grpc_server *s, int drain_timeout_ms);

#endif

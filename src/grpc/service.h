/* service.h - the RPCs of inference.GRPCInferenceService as plain functions of a serialized request
 * (no transport types here: frontend.c moves the bytes, service.c answers them).
 *
 * Note: files in this folder must not be named like gRPC's own headers (grpc.h, status.h, slice.h, ...):
 * src/ is on the include path, so <grpc/status.h> would find them first.
 */
#ifndef HS_GRPC_SERVICE_H
#define HS_GRPC_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "http/codec.h"
#include "serving/registry.h"

/* The full method path prefix every RPC shares. */
#define HS_GRPC_SERVICE_PREFIX "/inference.GRPCInferenceService/"

typedef struct hs_grpc_env {
  hs_registry *reg;
  hs_codec_limits limits; /* the same per-request limits as HTTP's infer decoder */
  bool control_disabled;     /* --model-control-mode none: the repository RPCs are refused */
  const char *control_token; /* non-NULL: the repository RPCs need "authorization: Bearer <token>" */
} hs_grpc_env;

typedef struct hs_grpc_reply {
  int code;            /* a grpc_status_code: 0 OK, else the error (message says why) */
  char message[512];   /* status details on error */
  uint8_t *body;       /* the serialized response message when code is OK (malloc'd; the caller frees it) */
  size_t len;
  bool rejected;       /* ModelInfer refused by an overloaded server (counted as rejected, not an error) */
} hs_grpc_reply;

/* Answers one unary call to method (the full path, "/inference.GRPCInferenceService/ModelInfer", not
 * NUL-terminated) with request message msg; authorization is the call's "authorization" metadata (NULL:
 * none), checked for the repository RPCs as HTTP checks its repository routes. Always fills reply
 * (UNIMPLEMENTED for unknown methods). */
void hs_grpc_dispatch(const hs_grpc_env *env, const char *method, size_t method_len, const uint8_t *msg,
                      size_t len, const char *authorization, hs_grpc_reply *reply);

/* Internal, exposed for fuzz/fuzz_grpc.c: unpacks msg as a ModelInferRequest and checks its parameters and
 * decodes its tensors exactly as ModelInfer does, without a model; then encodes the decoded tensors as a
 * reply, raw and typed, as ModelInfer would its outputs. Frees everything; returns the gRPC status code. */
int hs__grpc_decode_infer(const hs_codec_limits *lim, const uint8_t *msg, size_t len);

#endif

/* service_internal.h - what service.c (dispatch, health, metadata, infer) shares with extensions.c (Triton's
 * configuration, statistics and repository RPCs). */
#ifndef HS_GRPC_SERVICE_INTERNAL_H
#define HS_GRPC_SERVICE_INTERNAL_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "grpc/service.h"

/* Fills reply with a gRPC error (code, message) and no body. */
void hs__grpc_set_error(hs_grpc_reply *r, int code, const char *msg);
/* Serializes msg into reply with status OK (RESOURCE_EXHAUSTED when memory runs out). */
void hs__grpc_set_message(hs_grpc_reply *r, const ProtobufCMessage *msg);
/* Unpacks a request of type d (the caller frees it with its free_unpacked); NULL with reply filled
 * (INVALID_ARGUMENT "malformed TYPE") when msg is not one. */
void *hs__grpc_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t len, hs_grpc_reply *reply);
/* The model called name with *ver its version field (-1: any); NULL with reply filled (NOT_FOUND,
 * INVALID_ARGUMENT) when there is no such model or the version is malformed. */
hs_model *hs__grpc_find_model(const hs_grpc_env *env, const char *name, const char *version, int64_t *ver,
                              hs_grpc_reply *reply);

/* extensions.c: one RPC each, msg being its serialized request. */
void hs__grpc_model_config(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply);
void hs__grpc_model_statistics(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply);
void hs__grpc_repository_index(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply);
void hs__grpc_repository_load(const hs_grpc_env *env, const uint8_t *msg, size_t len, bool unload,
                              hs_grpc_reply *reply);

#endif

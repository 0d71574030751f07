/* triton.h - Triton's repository, statistics and configuration extensions as plain data, shared by the
 * HTTP routes (handlers.c renders JSON) and the gRPC service (grpc/service.c fills messages). */
#ifndef HS_HTTP_TRITON_H
#define HS_HTTP_TRITON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"
#include "serving/registry.h"

/* One repository index entry. version < 0: a model folder without versions. */
typedef struct hs_index_entry {
  char name[HS_NAME_MAX];
  int64_t version;
  const char *state; /* "READY", "LOADING", "UNLOADING" or "UNAVAILABLE" (static) */
  char reason[320];  /* "" for READY and LOADING */
} hs_index_entry;

/* Rescans the repository, waits for the loader, then lists every model's versions: each version folder
 * on disk (selected by the policy or not) and each version still in memory whose folder is gone, in
 * Triton's states, ascending by version (ready_only: READY ones only). *out is malloc'd (free it); *n
 * entries. Errors: the rescan's (HS_UNAVAILABLE while shutting down, ...), HS_NO_MEMORY. */
int hs_triton_index(hs_registry *reg, bool ready_only, hs_index_entry **out, size_t *n, hs_error *err);

/* Loads (unload false) or unloads a model, waiting for the loader. HS_NOT_FOUND: no such model;
 * HS_UNAVAILABLE: the load left nothing serving, err says why (the newest failure, or no complete version). */
int hs_triton_load(hs_registry *reg, const char *name, bool unload, hs_error *err);

/* Why a load/unload parameter is refused (hotserve implements none): for the error naming it. */
const char *hs_triton_param_refusal(const char *key);

/* A {count, ns} pair of Triton's statistics. */
typedef struct hs_stat_duration {
  uint64_t count, ns;
} hs_stat_duration;

typedef struct hs_stats_entry {
  char name[HS_NAME_MAX];
  int64_t version;
  uint64_t last_inference_ms, inference_count, execution_count;
  hs_stat_duration success, fail, queue, compute_input, compute_infer, compute_output;
} hs_stats_entry;

/* Statistics of every serving version of m (m NULL: of every model); version >= 0 picks that version,
 * which must serve (HS_NOT_FOUND otherwise). *out is malloc'd (free it); *n entries. */
int hs_triton_stats(hs_registry *reg, hs_model *m, int64_t version, hs_stats_entry **out, size_t *n, hs_error *err);

/* Triton's data type name for dt: "TYPE_FP32", ... ("TYPE_INVALID" for an unknown one). */
const char *hs_triton_dtype(hs_dtype dt);

#endif

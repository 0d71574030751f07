/* batch.h - dynamic batching: requests of one version whose inputs differ only in the first (batch)
 * dimension are gathered into one run, and each gets its own rows of the outputs back.
 *
 * Configured per model in config.json with Triton's fields (max_batch_size, dynamic_batching:
 * preferred_batch_size, max_queue_delay_microseconds); a version gets a batcher from the loader when
 * batching is on and its signature allows it (hs_batch_check_signature). serving/infer.c hands a
 * checked request to hs_batch_run instead of running it itself; see batch.c for the DESIGN.
 */
#ifndef HS_SERVING_BATCH_H
#define HS_SERVING_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"
#include "repo/repo.h"
#include "serving/registry.h"

typedef struct hs_batcher hs_batcher;

/* HS_OK when every input and output of v has a dynamic first dimension (-1 or symbolic), so its
 * requests can be stacked along it; otherwise HS_INVALID_ARGUMENT naming the input or output. */
int hs_batch_check_signature(const hs_version *v, hs_error *err);

/* A batcher for version v of model `model` (a name that outlives it), which owns it and frees it
 * with hs_batcher_free once no request uses it; it follows cfg's max_batch_size and
 * dynamic_batching and observes batch sizes into stats (the model's, shared by its versions). */
int hs_batcher_create(hs_version *v, const char *model, const hs_model_config *cfg, hs_batch_stats *stats,
                      hs_batcher **out, hs_error *err);
void hs_batcher_free(hs_batcher *b);

/* Called by the run that answered a request, with that request's rows of the outputs (all the
 * version's outputs, in its order; data borrowed for the call only). */
typedef int (*hs_batch_deliver_fn)(void *ctx, const hs_tensor *outs, size_t n_outs, hs_error *err);

typedef struct hs_batch_request {
  const hs_tensor *ins;        /* the request's inputs in the version's order, already checked */
  size_t n_in;
  hs_batch_deliver_fn deliver; /* copies the request's outputs out; runs on whichever thread ran */
  void *ctx;
  /* filled by hs_batch_run */
  uint64_t queue_ns;           /* arrival here until its run started (gathering + session wait) */
  uint64_t compute_ns;         /* the run that answered it */
  uint32_t batch_size;         /* requests in that run */
} hs_batch_request;

/* The version left the served set: its open batches stop gathering and run as soon as they get a
 * session, and later requests on it no longer wait for company. NULL is a no-op. */
void hs_batcher_close(hs_batcher *b);

/* Requests now in b's open batches (gathering, not yet running); 0 for NULL. For tests. */
size_t hs_batcher_open_requests(hs_batcher *b);

/* True when b is not NULL and this request can join a batch: every input has rank >= 1 and the
 * same first dimension, from 1 to max_batch_size. Other requests run alone as before. */
bool hs_batch_accepts(const hs_batcher *b, const hs_tensor *ins, size_t n_in);

/* Runs req, alone or in a batch with other requests on the same version, and calls req->deliver
 * with its outputs before returning. The status (and err) is the request's own: a batch whose run
 * fails is run again one request at a time, so one bad request fails no other. Blocks while the
 * batch gathers (up to max_queue_delay) and while the model's compute slots are busy. Thread-safe. */
int hs_batch_run(hs_batcher *b, hs_batch_request *req, hs_error *err);

/* The decision the gatherer makes as a batch grows: true when a batch of `size` requests should run
 * now rather than wait for more (it reached a preferred size or max_batch_size). Exposed for tests. */
bool hs_batch_full(const int *preferred, size_t n_preferred, int max_batch_size, int size);

#endif

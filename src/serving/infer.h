/* infer.h - serving's one entry point for inference, shared by every front end (HTTP now, gRPC later).
 *
 * A front end decodes a request into named tensors, calls hs_serving_infer, and encodes the result;
 * everything between (choosing the version, checking the inputs against it, waiting for a compute
 * slot and a session, running, copying the outputs out, timing and accounting) happens here, so
 * that version choice (a canary split), admission or dynamic batching can change behind this one
 * function without touching a front end.
 */
#ifndef HS_SERVING_INFER_H
#define HS_SERVING_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"
#include "serving/registry.h"

/* One input: a name and a tensor whose data the caller keeps valid for the call (a view into the
 * request body is fine; serving never writes into it). */
typedef struct hs_named_tensor {
  const char *name;
  hs_tensor t;
} hs_named_tensor;

typedef struct hs_infer_inputs {
  const hs_named_tensor *inputs; /* every input of the model, in any order (borrowed) */
  size_t n_inputs;
  const char *const *outputs;    /* the outputs wanted, in the order wanted (borrowed); NULL/0: all,
                                    in the model's order */
  size_t n_outputs;
  uint64_t arrival_ns;           /* hs_now_ns() when the front end received the request: the start
                                    of the request's latency in /metrics; 0: now */
} hs_infer_inputs;

/* What a run produced. The result owns its outputs (names included). A successful request stays
 * in flight, holding its version, until the front end frees the result once the reply is encoded:
 * hs_infer_result_free then accounts it (so /metrics' request time covers the encoding, as the
 * client sees it) and releases the version. */
typedef struct hs_infer_result {
  int64_t version;        /* the version that answered (or was chosen, when the run failed); -1: none */
  size_t n_outputs;       /* as asked: one per requested name (at most as many as the model has) */
  const char **names;     /* names[i] names outputs[i] */
  hs_tensor *outputs;
  uint64_t queue_ns;      /* waiting for a compute slot and a session */
  uint64_t compute_ns;    /* the backend's run (a batched run's whole time) */
  uint32_t batch_size;    /* rows in the run that answered (serving/batch.c); 1 unbatched, 0 not run */
  void *block_;           /* private: the one allocation behind names and output data */
  hs_model *model_;       /* private: set while a successful request waits to be accounted */
  hs_version *version_;
  uint64_t arrival_ns_;
} hs_infer_result;

/* Runs one request on version `version` of m (when version < 0: the highest serving one, or during a
 * rollout window the stable or the candidate version as the split decides; docs/GRAY_RELEASE.md). On success
 * *out holds the outputs, and the request is accounted in m's metrics and the trace (total time
 * from in->arrival_ns) when the caller frees *out; a failed request is accounted before returning. Errors, with a message in err naming the model and the input:
 *   HS_NOT_FOUND         that version is not loaded
 *   HS_UNAVAILABLE       no version is serving
 *   HS_INVALID_ARGUMENT  the inputs do not fit the version (missing, unknown, datatype, shape), an
 *                        unknown output is asked for, or the backend refused the inputs
 *   HS_LIMIT             shapes too large, or a plan over --max-request-memory (or over the whole
 *                        --max-total-request-memory): the client's
 *   HS_OVERLOADED        the runs in flight hold the process's request-memory budget and did not
 *                        free enough within its wait: retry later (outcome "rejected")
 *   HS_NO_MEMORY, HS_INTERNAL (any other backend failure): a server-side error
 * On error *out holds no outputs (hs_infer_result_free is still safe). Thread-safe. */
int hs_serving_infer(hs_model *m, int64_t version, const hs_infer_inputs *in, hs_infer_result *out,
                     hs_error *err);

/* Runs a request on v (held by the caller) without a split or any accounting: the shadow worker's
 * run (rollout.c). Errors as hs_serving_infer; free *out with hs_infer_result_free. */
int hs_serving_run_version(hs_model *m, hs_version *v, const hs_infer_inputs *in, hs_infer_result *out,
                           hs_error *err);

/* Accounts a request for m that a front end refused before it could be run (it did not decode, or
 * was too large), so /metrics counts every request a model got. */
void hs_serving_count_refused(hs_model *m, hs_outcome outcome, uint64_t arrival_ns);

/* Ends the request r answered (accounting it as a success, releasing its version), frees what r
 * owns and empties it; NULL and an empty result are fine. Call it exactly once per result. */
void hs_infer_result_free(hs_infer_result *r);

#endif

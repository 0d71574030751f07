/* infer.c - one inference request on the serving side: choose a version, check, run, copy out, account.
 *
 * DESIGN
 * A request holds one reference to one immutable version from acquire to release (invariant 1 in
 * docs/ARCHITECTURE.md). It takes a compute slot and a session (hs_version_take; the wait is its
 * queue time), hands the run to a compute thread (compute.c: the request's own thread never starts
 * an OpenMP team; a one-thread run, which starts none, stays on it), which runs, copies the outputs
 * out of the session's arena into one block the result owns, and gives the session back before the
 * request returns, so the front end's encoding (possibly slow JSON) never holds a session. On
 * success the result keeps the version reference until the front end frees it, so the request's
 * accounting ends when its reply is encoded; a failure is accounted and releases the version at once.
 */
#include "serving/infer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "serving/rollout.h"
#include "serving/batch.h"
#include "serving/compute.h"

static bool shape_matches(const hs_io_desc *d, const hs_tensor *t) {
  if (d->ndim != t->ndim) return false;
  for (int k = 0; k < d->ndim; k++)
    if (d->dims[k] >= 0 && d->dims[k] != t->dims[k]) return false;
  return true;
}

static void shape_str(char *buf, size_t cap, const int64_t *dims, int ndim) {
  size_t off = (size_t)snprintf(buf, cap, "[");
  for (int k = 0; k < ndim && off < cap; k++)
    off += (size_t)snprintf(buf + off, cap - off, k ? ",%lld" : "%lld", (long long)dims[k]);
  if (off < cap) snprintf(buf + off, cap - off, "]");
}

/* Puts each request input at the version's input position in ins (n_in slots). */
static int bind_inputs(const hs_model *m, const hs_version *v, const hs_infer_inputs *in, hs_tensor *ins,
                       hs_error *err) {
  size_t n_in = hs_version_num_inputs(v);
  if (in->n_inputs != n_in) {
    for (size_t i = 0; i < n_in; i++) {
      bool given = false;
      for (size_t k = 0; k < in->n_inputs; k++)
        if (strcmp(in->inputs[k].name, hs_version_input(v, i)->name) == 0) given = true;
      if (!given)
        return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s is missing (the model takes %zu inputs)",
                            hs_version_input(v, i)->name, n_in);
    }
  }
  for (size_t k = 0; k < in->n_inputs; k++) {
    const hs_named_tensor *t = &in->inputs[k];
    size_t i = 0;
    while (i < n_in && strcmp(hs_version_input(v, i)->name, t->name) != 0) i++;
    if (i == n_in)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s is not an input of model %s", t->name,
                          hs_model_name(m));
    const hs_io_desc *d = hs_version_input(v, i);
    if (d->dtype != t->t.dtype)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: datatype %s, the model expects %s", t->name,
                          hs_dtype_kserve_name(t->t.dtype), hs_dtype_kserve_name(d->dtype));
    if (!shape_matches(d, &t->t)) {
      char got[160], want[160];
      shape_str(got, sizeof got, t->t.dims, t->t.ndim);
      shape_str(want, sizeof want, d->dims, d->ndim);
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: shape %s does not match the model's %s (-1 = any)",
                          t->name, got, want);
    }
    ins[i] = t->t;
  }
  return HS_OK;
}

/* Fills pick[0..*n_pick) with the version's output positions the request wants, in its order. */
static int pick_outputs(const hs_model *m, const hs_version *v, const hs_infer_inputs *in, size_t *pick,
                        size_t *n_pick, hs_error *err) {
  size_t n_out = hs_version_num_outputs(v);
  *n_pick = 0;
  if (in->n_outputs == 0) {
    for (size_t i = 0; i < n_out; i++) pick[(*n_pick)++] = i;
    return HS_OK;
  }
  for (size_t k = 0; k < in->n_outputs; k++) {
    size_t i = 0;
    while (i < n_out && strcmp(hs_version_output(v, i)->name, in->outputs[k]) != 0) i++;
    if (i == n_out)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "output %s is not an output of model %s", in->outputs[k],
                          hs_model_name(m));
    if (*n_pick < n_out) pick[(*n_pick)++] = i; /* a repeated name beyond the model's count is dropped */
  }
  return HS_OK;
}

/* Copies the picked outputs (data out of the session's arena, names out of the version) into one
 * new block that out owns. */
static int copy_out(const hs_version *v, const hs_tensor *outs, const size_t *pick, size_t n_pick,
                    hs_infer_result *out, hs_error *err) {
  size_t data = 0, names = 0;
  for (size_t k = 0; k < n_pick; k++) {
    data += outs[pick[k]].nbytes;
    names += strlen(hs_version_output(v, pick[k])->name) + 1;
  }
  size_t head = n_pick * (sizeof(hs_tensor) + sizeof(const char *));
  /* tensors first (aligned by malloc), then name pointers, then data (64-byte aligned), then names */
  size_t data_off = (head + 63) & ~(size_t)63;
  unsigned char *block = malloc(data_off + data + names + 1);
  if (!block) return hs_error_set(err, HS_NO_MEMORY, "out of memory copying %zu output bytes", data);
  out->outputs = (hs_tensor *)block;
  out->names = (const char **)(block + n_pick * sizeof(hs_tensor));
  unsigned char *d = block + data_off;
  char *s = (char *)(d + data);
  for (size_t k = 0; k < n_pick; k++) {
    const hs_tensor *t = &outs[pick[k]];
    out->outputs[k] = *t;
    out->outputs[k].data = d;
    if (t->nbytes) memcpy(d, t->data, t->nbytes);
    d += t->nbytes;
    const char *name = hs_version_output(v, pick[k])->name;
    size_t len = strlen(name) + 1;
    memcpy(s, name, len);
    out->names[k] = s;
    s += len;
  }
  out->n_outputs = n_pick;
  out->block_ = block;
  return HS_OK;
}

/* Dynamic batching (batch.c): the run that answers the request hands it its rows of the outputs. */
typedef struct deliver_ctx {
  const hs_version *v;
  const size_t *pick;
  size_t n_pick;
  hs_infer_result *out;
} deliver_ctx;

static int deliver(void *ctx, const hs_tensor *outs, size_t n_outs, hs_error *err) {
  (void)n_outs;
  deliver_ctx *c = ctx;
  return copy_out(c->v, outs, c->pick, c->n_pick, c->out, err);
}

static int run_batched(hs_version *v, const hs_tensor *ins, size_t n_in, const size_t *pick, size_t n_pick,
                       hs_infer_result *out, hs_error *err) {
  deliver_ctx c = {v, pick, n_pick, out};
  hs_batch_request req = {.ins = ins, .n_in = n_in, .deliver = deliver, .ctx = &c};
  int rc = hs_batch_run(hs_version_batcher(v), &req, err);
  out->queue_ns = req.queue_ns;
  out->compute_ns = req.compute_ns;
  out->batch_size = req.batch_size;
  return rc;
}

/* One unbatched run, handed to a compute thread (compute.c) by the request that holds its session. */
typedef struct solo_run {
  hs_version *v;
  hs_backend_session *s;
  const hs_tensor *ins;
  size_t n_in;
  hs_tensor *outs;
  size_t n_out;
  const size_t *pick;
  size_t n_pick;
  hs_infer_result *out;
  hs_error *err;
  uint64_t tb, tq;      /* the request's checks began; it began waiting for a session */
  int rc;
} solo_run;

/* On the compute thread: run, copy the outputs out of the session's arena, give the session back. */
static void solo_job(void *arg) {
  solo_run *r = arg;
  uint64_t tc = hs_now_ns();
  r->rc = hs_version_backend(r->v)->run(r->s, r->ins, r->n_in, r->outs, r->n_out, r->err);
  uint64_t to = hs_now_ns();
  r->out->compute_ns = to - tc;
  /* the outputs live in the session's arena: copy them before the session goes back */
  if (r->rc == HS_OK) r->rc = copy_out(r->v, r->outs, r->pick, r->n_pick, r->out, r->err);
  if (r->rc == HS_OK) /* Triton's compute_input/output */
    hs_version_count_phases(r->v, r->tq - r->tb, hs_now_ns() - to);
  hs_version_give(r->v, r->s);
}

/* Checks the inputs against v, runs them on one of its sessions and copies the outputs out. */
static int run_on(hs_model *m, hs_version *v, const hs_infer_inputs *in, hs_infer_result *out, hs_error *err) {
  size_t n_in = hs_version_num_inputs(v), n_out = hs_version_num_outputs(v);
  hs_tensor *ins = calloc(n_in ? n_in : 1, sizeof *ins);
  hs_tensor *outs = calloc(n_out ? n_out : 1, sizeof *outs);
  size_t *pick = calloc(n_out ? n_out : 1, sizeof *pick);
  size_t n_pick = 0;
  int rc = ins && outs && pick ? HS_OK : hs_error_set(err, HS_NO_MEMORY, "out of memory");
  uint64_t tb = hs_now_ns();
  if (rc == HS_OK) rc = bind_inputs(m, v, in, ins, err);
  if (rc == HS_OK) rc = pick_outputs(m, v, in, pick, &n_pick, err);
  bool batched = rc == HS_OK && hs_batch_accepts(hs_version_batcher(v), ins, n_in);
  bool ran = rc == HS_OK;
  if (batched) rc = run_batched(v, ins, n_in, pick, n_pick, out, err);
  else if (ran) {
    out->batch_size = 1;
    solo_run r = {.v = v, .ins = ins, .n_in = n_in, .outs = outs, .n_out = n_out, .pick = pick,
                  .n_pick = n_pick, .out = out, .err = err, .tb = tb, .tq = hs_now_ns()};
    r.s = hs_version_take(v); /* the compute slot and session first: a compute thread never waits */
    out->queue_ns = hs_now_ns() - r.tq;
    hs_compute_run_for(hs_version_threads(v), solo_job, &r);
    rc = r.rc;
  }
  /* HS_INVALID_ARGUMENT (shapes the request's values make invalid) and HS_LIMIT (shapes too large, or
   * over the per-request memory budget) are the client's (issue 16, classes 3 and 12) */
  if (ran && rc != HS_OK && rc != HS_INVALID_ARGUMENT && rc != HS_LIMIT && rc != HS_OVERLOADED) {
    hs_error_prefix(err, "model %s version %" PRId64 " failed", hs_model_name(m), hs_version_number(v));
    if (rc != HS_NO_MEMORY) err->code = rc = HS_INTERNAL; /* HS_NOT_FOUND etc. mean "no version" here */
  }
  free(ins);
  free(outs);
  free(pick);
  return rc;
}

static hs_outcome outcome_of(int rc) {
  if (rc == HS_OK) return HS_OUTCOME_SUCCESS;
  if (rc == HS_NOT_FOUND || rc == HS_INVALID_ARGUMENT || rc == HS_LIMIT) return HS_OUTCOME_CLIENT_ERROR;
  if (rc == HS_OVERLOADED) return HS_OUTCOME_REJECTED; /* over --max-total-request-memory: retry later */
  return HS_OUTCOME_SERVER_ERROR; /* HS_UNAVAILABLE (nothing serving) included */
}

/* Acquires version `version` of m (the default one when < 0) into *v and runs the request on it. */
static int acquire_and_run(hs_model *m, int64_t version, const hs_infer_inputs *in, hs_infer_result *out,
                           hs_version **v, hs_error *err) {
  int rc = hs_model_acquire(m, version, v);
  if (rc == HS_NOT_FOUND)
    return hs_error_set(err, HS_NOT_FOUND, "model %s has no version %" PRId64 " loaded", hs_model_name(m), version);
  if (rc != HS_OK) return hs_error_set(err, HS_UNAVAILABLE, "model %s has no version ready", hs_model_name(m));
  out->version = hs_version_number(*v);
  return run_on(m, *v, in, out, err);
}

/* Empties a result whose run failed (its version reference, if any, is the caller's). */
static void clear_outputs(hs_infer_result *out) {
  free(out->block_);
  out->block_ = NULL;
  out->n_outputs = 0;
  out->names = NULL;
  out->outputs = NULL;
}

/* Gray release (rollout.c): route an unpinned request to the stable or the candidate version, re-run
 * a failed canary run on the stable version, and account the outcome in the rollout window. */
static int run_with_rollout(hs_model *m, int64_t version, uint64_t t0, const hs_infer_inputs *in,
                            hs_infer_result *out, hs_version **v, hs_error *err) {
  hs_rollout_pick pick;
  int64_t want = hs_rollout_route(m, version, &pick);
  int rc = acquire_and_run(m, want, in, out, v, err);
  if (rc == HS_NOT_FOUND && want != version) { /* the window moved on since the route: the default */
    hs_error_clear(err);
    pick.arm = HS_ARM_NONE;
    pick.shadow = false;
    rc = acquire_and_run(m, version, in, out, v, err);
  }
  bool retried = hs_rollout_retry_on_stable(&pick, rc);
  if (retried) {
    clear_outputs(out);
    hs_version_release(*v);
    *v = NULL;
    hs_error_clear(err);
    out->queue_ns = out->compute_ns = 0;
    rc = acquire_and_run(m, pick.stable, in, out, v, err);
    if (rc == HS_NOT_FOUND) { /* the window closed meanwhile */
      hs_error_clear(err);
      rc = acquire_and_run(m, version, in, out, v, err);
    }
  }
  hs_rollout_observe(m, &pick, rc, out->version, retried, hs_now_ns() - t0, in, out);
  return rc;
}

int hs_serving_run_version(hs_model *m, hs_version *v, const hs_infer_inputs *in, hs_infer_result *out,
                           hs_error *err) {
  memset(out, 0, sizeof *out);
  out->version = hs_version_number(v);
  int rc = run_on(m, v, in, out, err);
  if (rc != HS_OK) clear_outputs(out);
  return rc;
}

int hs_serving_infer(hs_model *m, int64_t version, const hs_infer_inputs *in, hs_infer_result *out,
                     hs_error *err) {
  uint64_t t0 = in->arrival_ns ? in->arrival_ns : hs_now_ns();
  memset(out, 0, sizeof *out);
  out->version = -1;
  hs_model_request_begin(m);
  hs_version *v = NULL;
  int rc = run_with_rollout(m, version, t0, in, out, &v, err);
  if (rc == HS_OK) { /* accounted and released by hs_infer_result_free */
    out->model_ = m;
    out->version_ = v;
    out->arrival_ns_ = t0;
    return HS_OK;
  }
  clear_outputs(out);
  hs_model_request_end(m, v, outcome_of(rc), hs_now_ns() - t0, out->queue_ns, out->compute_ns, out->batch_size);
  hs_version_release(v);
  return rc;
}

void hs_serving_count_refused(hs_model *m, hs_outcome outcome, uint64_t arrival_ns) {
  uint64_t t0 = arrival_ns ? arrival_ns : hs_now_ns();
  hs_model_request_begin(m);
  hs_model_request_end(m, NULL, outcome, hs_now_ns() - t0, 0, 0, 0);
}

void hs_infer_result_free(hs_infer_result *r) {
  if (!r) return;
  if (r->version_) {
    hs_model_request_end(r->model_, r->version_, HS_OUTCOME_SUCCESS, hs_now_ns() - r->arrival_ns_, r->queue_ns,
                         r->compute_ns, r->batch_size);
    hs_version_release(r->version_);
  }
  free(r->block_);
  memset(r, 0, sizeof *r);
  r->version = -1;
}

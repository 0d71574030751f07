/* rollout.c - gray release inside one server: canary split and shadow runs, judged on the loader thread.
 *
 * DESIGN
 * A window opens when the loader has loaded, warmed and checked a new version of a model whose
 * config.json asks for "canary" or "shadow" (hs__rollout_plan, called while process_model plans the
 * next view): the model's view then holds both the stable version (the one that answered unpinned
 * requests) and the candidate, so a rollback is one swap (invariant 7). The request path only reads
 * the window's routing words (mode, window id, the two version numbers, a threshold) and draws from
 * a shared counter hashed with splitmix64: a few atomics, no lock (invariant 2). A request is routed
 * before it acquires a version and then runs start to finish on the one version it acquired
 * (invariant 1); a canary run that fails is re-run on the stable version, whose answer the client
 * gets, and the failure counts against the candidate only when that re-run succeeds (so a bad request
 * is never blamed on the candidate, and no request fails because of another: invariant 8). Pinned
 * requests (/versions/{v}) bypass the split. Shadow: the stable version answers every request; a
 * sampled share is copied (inputs and the stable outputs) into a bounded queue that one worker thread
 * per model drains, off the response path; a full queue drops the copy and counts it, never waiting.
 * Every outcome goes into per-window atomics: request and error counts and a log-spaced latency
 * histogram (4 buckets per doubling) per arm, from which p99 is read.
 * Decisions run only on the loader thread (hs__rollout_tick, every 100 ms while a window is open and
 * after every scan): after min_requests candidate requests or max_seconds, whichever first, or at
 * once on a manual command. Promote: the view loses the stable version (when the version policy no
 * longer selects it). Roll back: the view loses the candidate, and its (version, fingerprint) joins
 * the loader's failed list, so it is not loaded again until its content changes. The routing words
 * are set before a window's view is published and cleared after the decision's view is: a request
 * that meets a version no longer in the view falls back to the default version (infer.c).
 */
#include "serving/rollout.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "serving/infer.h"
#include "serving/registry_impl.h"

#define RO_BUCKETS 97          /* bucket 0: < 1.024 us; then 4 per doubling up to ~17 s; the last holds the rest */
#define RO_TICK_NS 100000000ull /* how often the loader looks at an open window */
#define RO_QUEUE 16            /* shadow copies waiting for the worker */
#define RO_SHADOW_UNTIMED 3    /* a shadow window's first runs warm the worker: compared, not timed */
#define RO_LATENCY_FLOOR_MS 0.1 /* p99s below this are compared as this (docs/GRAY_RELEASE.md) */

typedef struct ro_arm {
  atomic_uint_least64_t requests, errors;
  atomic_uint_least64_t hist[RO_BUCKETS];
} ro_arm;

typedef struct shadow_job {
  hs_version *cand;          /* one reference */
  unsigned window;
  uint64_t stable_ns;        /* the stable version's compute time for the same request */
  hs_named_tensor *inputs;   /* copies (names and data in block) */
  size_t n_inputs;
  const char **names;        /* the outputs compared, in the stable answer's order */
  hs_tensor *stable_out;
  size_t n_outputs;
  void *block;
} shadow_job;

struct hs_rollout {
  hs_model *model;
  /* routing words, read by requests */
  atomic_int mode; /* HS_ROLLOUT_IMMEDIATE (0): no window; CANARY or SHADOW */
  atomic_uint window;
  atomic_int_least64_t stable_v, cand_v;
  atomic_uint threshold; /* out of 10000: canary weight or shadow fraction */
  atomic_uint_least64_t seq;
  /* the open window's statistics */
  ro_arm stable_arm, cand_arm;
  atomic_uint_least64_t compared, disagreements, dropped, shadow_seen;
  atomic_int manual; /* a pending hs_rollout_cmd */
  hs_rollout_metrics metrics;
  /* loader-owned; the fields status reads are also guarded by mu */
  pthread_mutex_t mu;
  hs_rollout_strategy configured;
  bool active;
  hs_rollout_config cfg; /* the window's rules */
  hs_version *stable, *cand; /* one reference each while a window is open */
  bool stable_extra;         /* the version policy no longer selects the stable version */
  uint64_t started_ns, next_tick_ns;
  bool decided;
  char outcome[16], reason[32], detail[256];
  int64_t decision_version, decision_unix_ms;
  /* the shadow worker */
  pthread_mutex_t q_mu;
  pthread_cond_t q_cv;
  shadow_job *queue[RO_QUEUE];
  size_t q_head, q_n;
  bool q_stop, worker_started;
  pthread_t worker;
};

/* ---- small helpers ---- */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static unsigned bucket_of(uint64_t ns) {
  if (ns < 1024) return 0;
  unsigned b = 63u - (unsigned)__builtin_clzll(ns); /* >= 10 */
  unsigned idx = 1 + (b - 10) * 4 + (unsigned)((ns >> (b - 2)) & 3);
  return idx < RO_BUCKETS ? idx : RO_BUCKETS - 1;
}

static double bucket_upper_ms(unsigned idx) {
  if (idx == 0) return 1024 / 1e6;
  unsigned b = (idx - 1) / 4 + 10, sub = (idx - 1) % 4;
  return (double)((uint64_t)(4 + sub + 1) << (b - 2)) / 1e6;
}

/* The 99th percentile of an arm's window in ms (the upper bound of its bucket); < 0 when empty. */
static double arm_p99_ms(const ro_arm *a) {
  uint64_t counts[RO_BUCKETS], total = 0;
  for (unsigned i = 0; i < RO_BUCKETS; i++) total += counts[i] = atomic_load_explicit(&a->hist[i], memory_order_relaxed);
  if (total == 0) return -1;
  uint64_t want = (uint64_t)ceil(0.99 * (double)total), seen = 0;
  for (unsigned i = 0; i < RO_BUCKETS; i++) {
    seen += counts[i];
    if (seen >= want) return bucket_upper_ms(i);
  }
  return bucket_upper_ms(RO_BUCKETS - 1);
}

static void arm_reset(ro_arm *a) {
  atomic_store(&a->requests, 0);
  atomic_store(&a->errors, 0);
  for (unsigned i = 0; i < RO_BUCKETS; i++) atomic_store(&a->hist[i], 0);
}

static void arm_status(const ro_arm *a, hs_rollout_arm_status *s) {
  s->requests = atomic_load(&a->requests);
  s->errors = atomic_load(&a->errors);
  s->error_rate = s->requests ? (double)s->errors / (double)s->requests : 0;
  s->p99_ms = arm_p99_ms(a);
}

static int64_t unix_ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *hs_rollout_strategy_name(hs_rollout_strategy s) {
  switch (s) {
    case HS_ROLLOUT_IMMEDIATE: return "immediate";
    case HS_ROLLOUT_CANARY: return "canary";
    case HS_ROLLOUT_SHADOW: return "shadow";
  }
  return "unknown";
}

static void count_decision(hs_rollout *ro, const char *outcome, const char *reason) {
  hs_rollout_decision_counter *head = atomic_load_explicit(&ro->metrics.decisions, memory_order_acquire);
  for (hs_rollout_decision_counter *c = head; c; c = c->next)
    if (strcmp(c->outcome, outcome) == 0 && strcmp(c->reason, reason) == 0) {
      atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
      return;
    }
  hs_rollout_decision_counter *c = calloc(1, sizeof *c);
  if (!c) return;
  snprintf(c->outcome, sizeof c->outcome, "%s", outcome);
  snprintf(c->reason, sizeof c->reason, "%s", reason);
  atomic_init(&c->count, 1);
  c->next = head;
  atomic_store_explicit(&ro->metrics.decisions, c, memory_order_release); /* single writer: the loader */
}

/* ---- the request path ---- */

int64_t hs_rollout_route(hs_model *m, int64_t version, hs_rollout_pick *pick) {
  memset(pick, 0, sizeof *pick);
  if (version >= 0) return version; /* pinned: no split */
  hs_rollout *ro = m->rollout;
  int mode = atomic_load_explicit(&ro->mode, memory_order_acquire);
  if (mode == HS_ROLLOUT_IMMEDIATE) return version;
  pick->window = atomic_load_explicit(&ro->window, memory_order_relaxed);
  pick->stable = atomic_load_explicit(&ro->stable_v, memory_order_relaxed);
  pick->candidate = atomic_load_explicit(&ro->cand_v, memory_order_relaxed);
  uint64_t draw = splitmix64(atomic_fetch_add_explicit(&ro->seq, 1, memory_order_relaxed)) % 10000;
  bool hit = draw < atomic_load_explicit(&ro->threshold, memory_order_relaxed);
  if (mode == HS_ROLLOUT_SHADOW) {
    pick->shadow = hit;
    return pick->stable;
  }
  pick->arm = hit ? HS_ARM_CANDIDATE : HS_ARM_STABLE;
  return hit ? pick->candidate : pick->stable;
}

bool hs_rollout_retry_on_stable(const hs_rollout_pick *pick, int rc) {
  return pick->arm == HS_ARM_CANDIDATE && (rc == HS_INVALID_ARGUMENT || rc == HS_INTERNAL || rc == HS_NO_MEMORY);
}

static void shadow_submit(hs_model *m, const hs_rollout_pick *pick, const hs_infer_inputs *in,
                          const hs_infer_result *out);

void hs_rollout_observe(hs_model *m, const hs_rollout_pick *pick, int rc, int64_t answered, bool retried,
                        uint64_t ns, const hs_infer_inputs *in, const hs_infer_result *out) {
  if (pick->arm == HS_ARM_NONE && !pick->shadow) return;
  hs_rollout *ro = m->rollout;
  if (pick->window != atomic_load_explicit(&ro->window, memory_order_relaxed)) return; /* a window ago */
  if (pick->shadow) {
    if (rc == HS_OK && answered == pick->stable) shadow_submit(m, pick, in, out);
    return;
  }
  if (retried) { /* the candidate failed; the stable re-run tells whether the request was at fault */
    if (rc != HS_OK) return;
    atomic_fetch_add_explicit(&ro->cand_arm.requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ro->cand_arm.errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ro->metrics.canary_candidate, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ro->metrics.candidate_errors, 1, memory_order_relaxed);
    return;
  }
  bool cand = pick->arm == HS_ARM_CANDIDATE;
  if (answered != (cand ? pick->candidate : pick->stable)) return; /* fell back: the window just moved */
  ro_arm *a = cand ? &ro->cand_arm : &ro->stable_arm;
  if (rc != HS_OK) {
    /* the request's fault, or an overloaded server: nothing the version did */
    if (rc == HS_INVALID_ARGUMENT || rc == HS_NOT_FOUND || rc == HS_OVERLOADED) return;
    atomic_fetch_add_explicit(&a->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->errors, 1, memory_order_relaxed);
    return;
  }
  atomic_fetch_add_explicit(&a->requests, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&a->hist[bucket_of(ns)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(cand ? &ro->metrics.canary_candidate : &ro->metrics.canary_stable, 1,
                            memory_order_relaxed);
}

/* ---- shadow runs ---- */

static void job_free(shadow_job *j) {
  if (!j) return;
  hs_version_release(j->cand);
  free(j->block);
  free(j);
}

/* Copies the request's inputs and the stable outputs into one job and queues it, never waiting. */
static void shadow_submit(hs_model *m, const hs_rollout_pick *pick, const hs_infer_inputs *in,
                          const hs_infer_result *out) {
  hs_rollout *ro = m->rollout;
  size_t bytes = 0;
  for (size_t k = 0; k < in->n_inputs; k++) bytes += in->inputs[k].t.nbytes + strlen(in->inputs[k].name) + 1;
  for (size_t k = 0; k < out->n_outputs; k++) bytes += out->outputs[k].nbytes + strlen(out->names[k]) + 1;
  size_t head = in->n_inputs * sizeof(hs_named_tensor) + out->n_outputs * (sizeof(hs_tensor) + sizeof(char *));
  shadow_job *j = calloc(1, sizeof *j);
  unsigned char *block = malloc(head + bytes + 1);
  hs_version *cand = NULL;
  if (!j || !block || hs_model_acquire(m, pick->candidate, &cand) != HS_OK) {
    free(j);
    free(block);
    hs_version_release(cand);
    atomic_fetch_add_explicit(&ro->dropped, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ro->metrics.shadow_dropped, 1, memory_order_relaxed);
    return;
  }
  j->cand = cand;
  j->window = pick->window;
  j->stable_ns = out->compute_ns;
  j->block = block;
  j->inputs = (hs_named_tensor *)block;
  j->n_inputs = in->n_inputs;
  j->stable_out = (hs_tensor *)(block + in->n_inputs * sizeof(hs_named_tensor));
  j->names = (const char **)((unsigned char *)j->stable_out + out->n_outputs * sizeof(hs_tensor));
  j->n_outputs = out->n_outputs;
  unsigned char *p = block + head;
  for (size_t k = 0; k < in->n_inputs; k++) {
    j->inputs[k] = in->inputs[k];
    j->inputs[k].t.data = p;
    if (in->inputs[k].t.nbytes) memcpy(p, in->inputs[k].t.data, in->inputs[k].t.nbytes);
    p += in->inputs[k].t.nbytes;
    size_t len = strlen(in->inputs[k].name) + 1;
    memcpy(p, in->inputs[k].name, len);
    j->inputs[k].name = (const char *)p;
    p += len;
  }
  for (size_t k = 0; k < out->n_outputs; k++) {
    j->stable_out[k] = out->outputs[k];
    j->stable_out[k].data = p;
    if (out->outputs[k].nbytes) memcpy(p, out->outputs[k].data, out->outputs[k].nbytes);
    p += out->outputs[k].nbytes;
    size_t len = strlen(out->names[k]) + 1;
    memcpy(p, out->names[k], len);
    j->names[k] = (const char *)p;
    p += len;
  }
  bool queued = false;
  if (pthread_mutex_trylock(&ro->q_mu) == 0) {
    if (ro->worker_started && !ro->q_stop && ro->q_n < RO_QUEUE) {
      ro->queue[(ro->q_head + ro->q_n++) % RO_QUEUE] = j;
      pthread_cond_signal(&ro->q_cv);
      queued = true;
    }
    pthread_mutex_unlock(&ro->q_mu);
  }
  if (!queued) {
    job_free(j);
    atomic_fetch_add_explicit(&ro->dropped, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ro->metrics.shadow_dropped, 1, memory_order_relaxed);
  }
}

static bool element_agrees(hs_dtype dt, const unsigned char *c, const unsigned char *s, double rtol, double atol) {
  double a, b;
  if (dt == HS_DT_FLOAT32) {
    float x, y;
    memcpy(&x, c, sizeof x);
    memcpy(&y, s, sizeof y);
    a = x;
    b = y;
  } else if (dt == HS_DT_FLOAT64) {
    memcpy(&a, c, sizeof a);
    memcpy(&b, s, sizeof b);
  } else {
    return memcmp(c, s, hs_dtype_size(dt)) == 0; /* integers, booleans, halves: exactly */
  }
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return fabs(a - b) <= atol + rtol * fabs(b);
}

/* Whether the candidate's outputs match the stable ones: same names, types, shapes, and every
 * element within atol + rtol * |stable|. */
static bool outputs_agree(const hs_infer_result *c, const shadow_job *j, double rtol, double atol) {
  if (c->n_outputs != j->n_outputs) return false;
  for (size_t k = 0; k < j->n_outputs; k++) {
    const hs_tensor *x = &c->outputs[k], *y = &j->stable_out[k];
    if (strcmp(c->names[k], j->names[k]) != 0 || x->dtype != y->dtype || x->ndim != y->ndim ||
        x->nbytes != y->nbytes)
      return false;
    for (int d = 0; d < x->ndim; d++)
      if (x->dims[d] != y->dims[d]) return false;
    size_t es = hs_dtype_size(x->dtype);
    if (es == 0) return memcmp(x->data, y->data, x->nbytes) == 0;
    for (size_t off = 0; off + es <= x->nbytes; off += es)
      if (!element_agrees(x->dtype, (const unsigned char *)x->data + off, (const unsigned char *)y->data + off,
                          rtol, atol))
        return false;
  }
  return true;
}

static void shadow_run(hs_rollout *ro, shadow_job *j) {
  hs_infer_inputs in = {.inputs = j->inputs, .n_inputs = j->n_inputs, .outputs = j->names,
                        .n_outputs = j->n_outputs};
  hs_infer_result res;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_serving_run_version(ro->model, j->cand, &in, &res, &err);
  pthread_mutex_lock(&ro->mu); /* the window's rules and identity */
  bool current = ro->active && j->window == atomic_load(&ro->window) && j->cand == ro->cand;
  double rtol = ro->cfg.output_rtol, atol = ro->cfg.output_atol;
  pthread_mutex_unlock(&ro->mu);
  atomic_fetch_add_explicit(&ro->metrics.shadow_run, 1, memory_order_relaxed);
  if (rc != HS_OK) atomic_fetch_add_explicit(&ro->metrics.candidate_errors, 1, memory_order_relaxed);
  bool agree = rc == HS_OK && outputs_agree(&res, j, rtol, atol);
  if (rc == HS_OK && !agree) atomic_fetch_add_explicit(&ro->metrics.disagreements, 1, memory_order_relaxed);
  if (current) {
    /* the window's first runs warm the worker thread (thread-local kernel state): compared, not timed */
    bool timed = atomic_fetch_add(&ro->shadow_seen, 1) >= RO_SHADOW_UNTIMED;
    atomic_fetch_add(&ro->stable_arm.requests, 1);
    if (timed) atomic_fetch_add(&ro->stable_arm.hist[bucket_of(j->stable_ns)], 1);
    atomic_fetch_add(&ro->cand_arm.requests, 1);
    if (rc != HS_OK) {
      atomic_fetch_add(&ro->cand_arm.errors, 1);
    } else {
      if (timed) atomic_fetch_add(&ro->cand_arm.hist[bucket_of(res.compute_ns)], 1);
      atomic_fetch_add(&ro->compared, 1);
      if (!agree) atomic_fetch_add(&ro->disagreements, 1);
    }
  }
  hs_infer_result_free(&res);
}

static void *shadow_main(void *arg) {
  hs_rollout *ro = arg;
  pthread_setname_np(pthread_self(), "hs-shadow");
  pthread_mutex_lock(&ro->q_mu);
  for (;;) {
    while (!ro->q_stop && ro->q_n == 0) pthread_cond_wait(&ro->q_cv, &ro->q_mu);
    if (ro->q_stop) break;
    shadow_job *j = ro->queue[ro->q_head];
    ro->q_head = (ro->q_head + 1) % RO_QUEUE;
    ro->q_n--;
    pthread_mutex_unlock(&ro->q_mu);
    shadow_run(ro, j);
    job_free(j);
    pthread_mutex_lock(&ro->q_mu);
  }
  while (ro->q_n > 0) { /* stopping: what is queued is dropped */
    job_free(ro->queue[ro->q_head]);
    ro->q_head = (ro->q_head + 1) % RO_QUEUE;
    ro->q_n--;
  }
  pthread_mutex_unlock(&ro->q_mu);
  return NULL;
}

/* ---- lifetime ---- */

hs_rollout *hs__rollout_create(hs_model *m) {
  hs_rollout *ro = calloc(1, sizeof *ro);
  if (!ro) return NULL;
  ro->model = m;
  atomic_init(&ro->stable_v, -1);
  atomic_init(&ro->cand_v, -1);
  pthread_mutex_init(&ro->mu, NULL);
  pthread_mutex_init(&ro->q_mu, NULL);
  pthread_cond_init(&ro->q_cv, NULL);
  return ro;
}

static void stop_worker(hs_rollout *ro) {
  pthread_mutex_lock(&ro->q_mu);
  bool started = ro->worker_started;
  ro->q_stop = true;
  pthread_cond_broadcast(&ro->q_cv);
  pthread_mutex_unlock(&ro->q_mu);
  if (started) pthread_join(ro->worker, NULL);
}

void hs__rollout_destroy(hs_rollout *ro) {
  if (!ro) return;
  stop_worker(ro);
  atomic_store(&ro->mode, HS_ROLLOUT_IMMEDIATE);
  hs_version_release(ro->stable);
  hs_version_release(ro->cand);
  for (hs_rollout_decision_counter *c = atomic_load(&ro->metrics.decisions), *n; c; c = n) {
    n = c->next;
    free(c);
  }
  pthread_cond_destroy(&ro->q_cv);
  pthread_mutex_destroy(&ro->q_mu);
  pthread_mutex_destroy(&ro->mu);
  free(ro);
}

/* ---- windows (loader thread) ---- */

static bool list_has(hs_version *const *list, size_t n, const hs_version *v) {
  for (size_t i = 0; i < n; i++)
    if (list[i] == v) return true;
  return false;
}

static void start_window(hs_model *m, const hs_rollout_config *cfg, hs_version *stable, hs_version *cand) {
  hs_rollout *ro = m->rollout;
  if (cfg->strategy == HS_ROLLOUT_SHADOW) {
    pthread_mutex_lock(&ro->q_mu);
    if (!ro->worker_started && !ro->q_stop)
      ro->worker_started = pthread_create(&ro->worker, NULL, shadow_main, ro) == 0;
    bool ok = ro->worker_started;
    pthread_mutex_unlock(&ro->q_mu);
    if (!ok) HS_LOGE("model %s: cannot start the shadow worker; shadow copies will be dropped", m->name);
  }
  atomic_fetch_add(&stable->refs, 1);
  atomic_fetch_add(&cand->refs, 1);
  arm_reset(&ro->stable_arm);
  arm_reset(&ro->cand_arm);
  atomic_store(&ro->compared, 0);
  atomic_store(&ro->disagreements, 0);
  atomic_store(&ro->dropped, 0);
  atomic_store(&ro->shadow_seen, 0);
  atomic_store(&ro->manual, 0);
  uint64_t now = hs_now_ns();
  pthread_mutex_lock(&ro->mu);
  ro->active = true;
  ro->cfg = *cfg;
  ro->stable = stable;
  ro->cand = cand;
  ro->started_ns = now;
  ro->next_tick_ns = now + RO_TICK_NS;
  pthread_mutex_unlock(&ro->mu);
  double share = cfg->strategy == HS_ROLLOUT_CANARY ? cfg->weight / 100.0 : cfg->fraction;
  atomic_store(&ro->stable_v, stable->version);
  atomic_store(&ro->cand_v, cand->version);
  atomic_store(&ro->threshold, (unsigned)llround(share * 10000));
  atomic_fetch_add(&ro->window, 1);
  atomic_store_explicit(&ro->mode, (int)cfg->strategy, memory_order_release);
  HS_LOGI("model %s: rollout started: %s of version %" PRId64 " (%s %g%%) against stable version %" PRId64
          "; judged after %lld candidate requests or %g s",
          m->name, hs_rollout_strategy_name(cfg->strategy), cand->version,
          cfg->strategy == HS_ROLLOUT_CANARY ? "weight" : "fraction", share * 100, stable->version,
          cfg->min_requests, cfg->max_seconds);
}

/* Closes the window (the decision's view is already published) and records the decision. */
static void close_window(hs_model *m, const char *outcome, const char *reason, const char *detail) {
  hs_rollout *ro = m->rollout;
  atomic_store_explicit(&ro->mode, HS_ROLLOUT_IMMEDIATE, memory_order_release);
  atomic_store(&ro->stable_v, -1);
  atomic_store(&ro->cand_v, -1);
  atomic_fetch_add(&ro->window, 1); /* late observations of this window are ignored */
  hs_version *stable = ro->stable, *cand = ro->cand;
  pthread_mutex_lock(&ro->mu);
  ro->active = false;
  ro->stable = ro->cand = NULL;
  ro->decided = true;
  snprintf(ro->outcome, sizeof ro->outcome, "%s", outcome);
  snprintf(ro->reason, sizeof ro->reason, "%s", reason);
  snprintf(ro->detail, sizeof ro->detail, "%s", detail);
  ro->decision_version = cand->version;
  ro->decision_unix_ms = unix_ms_now();
  pthread_mutex_unlock(&ro->mu);
  count_decision(ro, outcome, reason);
  if (strcmp(outcome, "promoted") == 0)
    HS_LOGI("model %s: rollout: version %" PRId64 " promoted (%s: %s); version %" PRId64 " %s", m->name,
            cand->version, reason, detail, stable->version,
            ro->stable_extra ? "retires" : "stays (the version policy selects it)");
  else if (strcmp(outcome, "rolled_back") == 0)
    HS_LOGW("model %s: rollout: version %" PRId64 " rolled back (%s: %s); version %" PRId64
            " answers again; that content is not retried until it changes",
            m->name, cand->version, reason, detail, stable->version);
  else
    HS_LOGI("model %s: rollout: candidate version %" PRId64 " retired (%s: %s)", m->name, cand->version, reason,
            detail);
  hs_version_release(stable);
  hs_version_release(cand);
}

/* Publishes the current view without `drop` (when it is there). */
static void publish_without(hs_model *m, const hs_version *drop) {
  hs_view *view = atomic_load(&m->view); /* only the loader replaces it */
  if (!drop || !list_has(view->v, view->n, drop)) return;
  hs_version **list = calloc(view->n ? view->n : 1, sizeof *list);
  if (!list) {
    HS_LOGE("model %s: out of memory applying a rollout decision; keeping the view", m->name);
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < view->n; i++)
    if (view->v[i] != drop) list[k++] = view->v[i];
  hs__registry_publish(m, list, k);
  free(list);
}

/* Applies a decision: the view changes first, then the routing words are cleared. */
static void decide(hs_model *m, bool promote, const char *reason, const char *detail) {
  hs_rollout *ro = m->rollout;
  hs_version *cand = ro->cand;
  if (promote) {
    if (ro->stable_extra) publish_without(m, ro->stable);
    close_window(m, "promoted", reason, detail);
    return;
  }
  publish_without(m, cand);
  /* not loaded again until its content changes (the loader's failed list; an explicit load clears it) */
  size_t slot = m->n_failed++ % HS_FAILED_KEYS;
  m->failed[slot].version = cand->version;
  snprintf(m->failed[slot].fingerprint, sizeof m->failed[slot].fingerprint, "%s", cand->fingerprint);
  pthread_mutex_lock(&m->status_mu);
  for (size_t i = 0; i < m->history_n; i++) {
    hs_version_status *st = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
    if (st->generation == cand->generation) {
      snprintf(st->reason, sizeof st->reason, "rolled_back");
      snprintf(st->error, sizeof st->error, "%s: %s", reason, detail);
    }
  }
  pthread_mutex_unlock(&m->status_mu);
  close_window(m, "rolled_back", reason, detail);
}

void hs__rollout_plan(hs_model *m, const hs_rollout_config *cfg, const hs_view *old, hs_version **next,
                      size_t *n, size_t cap) {
  hs_rollout *ro = m->rollout;
  pthread_mutex_lock(&ro->mu);
  ro->configured = cfg->strategy;
  pthread_mutex_unlock(&ro->mu);
  /* the candidate is the highest version the policy selects, when it is higher than the stable one */
  hs_version *top = NULL;
  for (size_t i = 0; i < *n; i++)
    if (!top || next[i]->version > top->version) top = next[i];
  bool off = cfg->strategy == HS_ROLLOUT_IMMEDIATE;

  hs_version *stable = NULL;
  if (ro->active) {
    stable = ro->stable;
    if (top == ro->cand) goto keep_stable;
    /* a higher version arrived, the candidate left the repository, or gray release was turned off */
    bool superseded = top && top->version > ro->cand->version; /* (the policy may no longer list it) */
    char detail[96];
    if (off) snprintf(detail, sizeof detail, "the rollout strategy is now immediate");
    else if (superseded) snprintf(detail, sizeof detail, "superseded by version %" PRId64, top->version);
    else snprintf(detail, sizeof detail, "the candidate is no longer selected");
    close_window(m, "retired", off ? "config_changed" : superseded ? "superseded" : "candidate_removed", detail);
    if (!off && top && top->version > stable->version) {
      start_window(m, cfg, stable, top); /* the window restarts with the newest candidate */
      goto keep_stable;
    }
    return; /* what the version policy selects is served (the caller publishes next) */
  }
  if (off || !top) return;
  for (size_t i = 0; i < old->n; i++) /* the version that answered unpinned requests */
    if (!stable || old->v[i]->version > stable->version) stable = old->v[i];
  /* the first version of a model serves at once; so does new content under the same number */
  if (!stable || top->version <= stable->version) return;
  start_window(m, cfg, stable, top);
keep_stable:
  ro->stable_extra = !list_has(next, *n, stable);
  if (ro->stable_extra && *n < cap) next[(*n)++] = stable;
}

/* The decision rules (docs/GRAY_RELEASE.md); writes why into detail. */
static bool judge(hs_rollout *ro, uint64_t elapsed_ns, const char **reason, char *detail, size_t cap) {
  const hs_rollout_config *c = &ro->cfg;
  hs_rollout_arm_status s, k;
  arm_status(&ro->stable_arm, &s);
  arm_status(&ro->cand_arm, &k);
  uint64_t compared = atomic_load(&ro->compared), disagree = atomic_load(&ro->disagreements);
  if (k.requests < (uint64_t)c->min_requests) {
    *reason = "too_few_requests";
    snprintf(detail, cap, "%" PRIu64 " candidate requests in %.1f s, fewer than min_requests %lld", k.requests,
             (double)elapsed_ns / 1e9, c->min_requests);
    return false;
  }
  if (k.error_rate > c->max_error_rate) {
    *reason = "error_rate";
    snprintf(detail, cap, "candidate error rate %.4f (%" PRIu64 "/%" PRIu64 ") > max_error_rate %g", k.error_rate,
             k.errors, k.requests, c->max_error_rate);
    return false;
  }
  if (ro->cfg.strategy == HS_ROLLOUT_SHADOW) {
    double rate = compared ? (double)disagree / (double)compared : 0;
    if (compared == 0 || rate > c->max_disagreement_rate) {
      *reason = "outputs_disagree";
      snprintf(detail, cap, "%" PRIu64 " of %" PRIu64 " compared outputs disagree (rtol %g, atol %g), > %g",
               disagree, compared, c->output_rtol, c->output_atol, c->max_disagreement_rate);
      return false;
    }
  }
  /* below RO_LATENCY_FLOOR_MS, a p99 is timer and scheduling noise: the stable one counts as at least that */
  double base = s.p99_ms > RO_LATENCY_FLOOR_MS ? s.p99_ms : RO_LATENCY_FLOOR_MS;
  if (k.p99_ms >= 0 && s.p99_ms >= 0 && k.p99_ms > c->max_latency_ratio * base) {
    *reason = "latency";
    snprintf(detail, cap, "candidate p99 %.3f ms > %g x stable p99 %.3f ms (floor %g ms)", k.p99_ms,
             c->max_latency_ratio, s.p99_ms, RO_LATENCY_FLOOR_MS);
    return false;
  }
  *reason = "healthy";
  snprintf(detail, cap, "error rate %.4f (%" PRIu64 "/%" PRIu64 "), p99 %.3f ms vs stable %.3f ms (<= %g x)",
           k.error_rate, k.errors, k.requests, k.p99_ms, s.p99_ms, c->max_latency_ratio);
  return true;
}

static void tick_model(hs_model *m, uint64_t now) {
  hs_rollout *ro = m->rollout;
  if (!ro->active) return;
  hs_view *view = atomic_load(&m->view);
  if (!list_has(view->v, view->n, ro->cand) || !list_has(view->v, view->n, ro->stable)) {
    close_window(m, "retired", "unloaded", "the model or one of its versions stopped serving");
    return;
  }
  int manual = atomic_exchange(&ro->manual, 0);
  if (manual) {
    decide(m, manual == HS_ROLLOUT_CMD_PROMOTE, "manual", "asked through the repository API");
    return;
  }
  if (now < ro->next_tick_ns) return;
  ro->next_tick_ns = now + RO_TICK_NS;
  uint64_t elapsed = now - ro->started_ns;
  bool due = atomic_load(&ro->cand_arm.requests) >= (uint64_t)ro->cfg.min_requests ||
             (double)elapsed >= ro->cfg.max_seconds * 1e9;
  if (!due) return;
  const char *reason;
  char detail[200];
  bool ok = judge(ro, elapsed, &reason, detail, sizeof detail);
  decide(m, ok, reason, detail);
}

void hs__rollout_tick(hs_registry *r) {
  uint64_t now = hs_now_ns();
  size_t n = hs_registry_num_models(r);
  for (size_t i = 0; i < n; i++) tick_model(hs_registry_model_at(r, i), now);
}

uint64_t hs__rollout_wait_ns(hs_registry *r) {
  uint64_t now = hs_now_ns(), best = 0;
  size_t n = hs_registry_num_models(r);
  for (size_t i = 0; i < n; i++) {
    hs_rollout *ro = hs_registry_model_at(r, i)->rollout;
    if (!ro->active) continue;
    uint64_t w = atomic_load(&ro->manual) || ro->next_tick_ns <= now ? 1 : ro->next_tick_ns - now;
    if (best == 0 || w < best) best = w;
  }
  return best;
}

/* ---- manual control (any thread) ---- */

int hs_rollout_command(hs_registry *r, hs_model *m, hs_rollout_cmd cmd, int64_t *decided_version, hs_error *err) {
  hs_rollout *ro = m->rollout;
  int64_t cand = atomic_load(&ro->cand_v);
  if (atomic_load(&ro->mode) == HS_ROLLOUT_IMMEDIATE || cand < 0)
    return hs_error_set(err, HS_NOT_FOUND, "model %s has no rollout in progress", m->name);
  atomic_store(&ro->manual, (int)cmd);
  int rc = hs_registry_rescan_sync(r, err); /* the loader applies it before it reports the scan done */
  if (rc != HS_OK) return rc;
  pthread_mutex_lock(&ro->mu);
  bool done = ro->decided && ro->decision_version == cand && strcmp(ro->reason, "manual") == 0;
  pthread_mutex_unlock(&ro->mu);
  if (!done)
    return hs_error_set(err, HS_NOT_FOUND, "model %s: the rollout of version %" PRId64 " ended before the command",
                        m->name, cand);
  *decided_version = cand;
  return HS_OK;
}

/* ---- status and metrics ---- */

void hs_rollout_status_get(hs_model *m, hs_rollout_status *out) {
  hs_rollout *ro = m->rollout;
  memset(out, 0, sizeof *out);
  out->stable = out->candidate = -1;
  pthread_mutex_lock(&ro->mu);
  out->strategy = ro->configured;
  out->active = ro->active;
  if (ro->active) {
    out->window_strategy = ro->cfg.strategy;
    out->stable = ro->stable->version;
    out->candidate = ro->cand->version;
    out->weight = ro->cfg.weight;
    out->fraction = ro->cfg.fraction;
    out->min_requests = ro->cfg.min_requests;
    uint64_t el = hs_now_ns() - ro->started_ns;
    out->elapsed_s = (double)el / 1e9;
    out->time_left_s = ro->cfg.max_seconds - out->elapsed_s;
    if (out->time_left_s < 0) out->time_left_s = 0;
  }
  out->decided = ro->decided;
  snprintf(out->outcome, sizeof out->outcome, "%s", ro->outcome);
  snprintf(out->reason, sizeof out->reason, "%s", ro->reason);
  snprintf(out->detail, sizeof out->detail, "%s", ro->detail);
  out->decision_version = ro->decision_version;
  out->decision_unix_ms = ro->decision_unix_ms;
  pthread_mutex_unlock(&ro->mu);
  arm_status(&ro->stable_arm, &out->stable_arm);
  arm_status(&ro->cand_arm, &out->candidate_arm);
  out->compared = atomic_load(&ro->compared);
  out->disagreements = atomic_load(&ro->disagreements);
  out->dropped = atomic_load(&ro->dropped);
}

int64_t hs_rollout_stable_version(const hs_model *m) {
  const hs_rollout *ro = m->rollout;
  if (atomic_load_explicit(&ro->mode, memory_order_acquire) == HS_ROLLOUT_IMMEDIATE) return -1;
  return atomic_load_explicit(&ro->stable_v, memory_order_relaxed);
}

const hs_rollout_metrics *hs_rollout_metrics_get(const hs_model *m) { return &m->rollout->metrics; }

/* registry.c - the model registry: create/destroy and control (kick, rescan, load, unload), lock-free
 * version lookup for requests, publication, reclamation, status.
 *
 * DESIGN
 * Threads: any number of request threads call hs_registry_find / hs_model_acquire / hs_version_*;
 * exactly one loader thread (loader.c) creates models, loads versions and publishes them; nothing
 * else writes the registry's published state (destroy runs after the loader has stopped).
 *
 * Publication: each model has an atomic pointer to an immutable view (the sorted set of versions
 * it serves). The loader builds a new view and swaps it in with one atomic exchange. Every view
 * holds one reference per member version; every request holds one reference on the version it
 * runs on. A version is freed by whoever drops its last reference (a request thread finishing on a
 * retired version, or the loader), so it is freed exactly once and only after its last request.
 *
 * Reclamation of the view pointer itself (a reader loads the pointer, then increments a member's
 * refcount: in between, the loader must not free the view nor drop the members' references) uses
 * a two-slot grace period, the same idea as userspace RCU's counter flip: a reader announces
 * itself in active[epoch & 1], re-checks the epoch (retrying if it moved), reads, and leaves.
 * After a swap the loader flips the epoch and waits until the old slot drains; the readers it
 * waits for hold the slot for a handful of instructions, never across I/O or a load. Only then
 * does the loader drop the old view's references and free it. The model array (models appear at
 * runtime) is published and reclaimed the same way; hs_model structs live until destroy.
 * The request path therefore costs a few atomic operations: enter (2-3), load, refcount add, leave.
 *
 * Status history is guarded by a per-model mutex taken by the loader, by the first request on a
 * version (once) and when a version is freed; never by an ordinary request.
 */
#include "serving/registry_impl.h"

#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backends/session.h"
#include "base/log.h"
#include "serving/batch.h"

/* ---- grace periods ---- */

static unsigned reader_enter(hs_registry *r) {
  for (;;) {
    unsigned e = atomic_load(&r->epoch);
    atomic_fetch_add(&r->active[e & 1], 1);
    if (atomic_load(&r->epoch) == e) return e & 1;
    atomic_fetch_sub(&r->active[e & 1], 1);
  }
}

static void reader_exit(hs_registry *r, unsigned slot) { atomic_fetch_sub(&r->active[slot], 1); }

/* Waits until no reader can still hold a pointer loaded before this call. Loader thread only. */
static void synchronize(hs_registry *r) {
  unsigned e = atomic_load(&r->epoch);
  atomic_store(&r->epoch, e + 1);
  while (atomic_load(&r->active[e & 1]) != 0) sched_yield();
}

/* ---- models ---- */

hs_model *hs_registry_find(hs_registry *r, const char *name) {
  hs_model *found = NULL;
  unsigned slot = reader_enter(r);
  hs_model_array *a = atomic_load(&r->models);
  for (size_t i = 0; a && i < a->n; i++)
    if (strcmp(a->m[i]->name, name) == 0) {
      found = a->m[i];
      break;
    }
  reader_exit(r, slot);
  return found;
}

size_t hs_registry_num_models(hs_registry *r) {
  unsigned slot = reader_enter(r);
  hs_model_array *a = atomic_load(&r->models);
  size_t n = a ? a->n : 0;
  reader_exit(r, slot);
  return n;
}

hs_model *hs_registry_model_at(hs_registry *r, size_t i) {
  unsigned slot = reader_enter(r);
  hs_model_array *a = atomic_load(&r->models);
  hs_model *m = (a && i < a->n) ? a->m[i] : NULL;
  reader_exit(r, slot);
  return m;
}

const char *hs_model_name(const hs_model *m) { return m->name; }

hs_model *hs__registry_add_model(hs_registry *r, const char *name, bool unloaded) {
  hs_model *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->reg = r;
  atomic_init(&m->unloaded, unloaded);
  atomic_init(&m->never_loaded, unloaded);
  snprintf(m->name, sizeof m->name, "%s", name);
  pthread_mutex_init(&m->status_mu, NULL);
  pthread_mutex_init(&m->run_mu, NULL);
  pthread_cond_init(&m->run_cv, NULL);
  m->run_limit = 1; /* raised by the first publish */
  m->next_generation = 1;
  hs_repo_config_defaults(&m->config);
  m->rollout = hs__rollout_create(m);
  hs_view *empty = m->rollout ? calloc(1, sizeof *empty) : NULL;
  if (!empty) {
    hs__rollout_destroy(m->rollout);
    pthread_mutex_destroy(&m->status_mu);
    pthread_mutex_destroy(&m->run_mu);
    pthread_cond_destroy(&m->run_cv);
    free(m);
    return NULL;
  }
  atomic_init(&m->view, empty);
  hs__version_counter(m, -1); /* requests_total for requests that never got a version */

  hs_model_array *old = atomic_load(&r->models);
  size_t n = old ? old->n : 0;
  hs_model_array *a = malloc(sizeof *a + (n + 1) * sizeof(hs_model *));
  if (!a) {
    free(empty);
    hs__rollout_destroy(m->rollout);
    pthread_mutex_destroy(&m->status_mu);
    pthread_mutex_destroy(&m->run_mu);
    pthread_cond_destroy(&m->run_cv);
    free(m);
    return NULL;
  }
  a->n = n + 1;
  for (size_t i = 0; i < n; i++) a->m[i] = old->m[i];
  a->m[n] = m;
  atomic_store(&r->models, a);
  synchronize(r);
  free(old);
  return m;
}

/* ---- versions on the request path ---- */

int hs_model_acquire(hs_model *m, int64_t version, hs_version **out) {
  hs_registry *r = m->reg;
  hs_version *v = NULL;
  int rc = HS_OK;
  unsigned slot = reader_enter(r);
  hs_view *view = atomic_load(&m->view);
  if (view->n == 0) {
    rc = HS_UNAVAILABLE;
  } else if (version < 0) {
    v = view->v[view->n - 1];
  } else {
    for (size_t i = 0; i < view->n; i++)
      if (view->v[i]->version == version) v = view->v[i];
    if (!v) rc = HS_NOT_FOUND;
  }
  if (v) atomic_fetch_add(&v->refs, 1);
  reader_exit(r, slot);
  *out = v;
  return rc;
}

void hs_version_release(hs_version *v) {
  if (v && atomic_fetch_sub(&v->refs, 1) == 1) hs__version_dispose(v);
}

/* Freeing a version (sessions, kernels, weights, then handing pages back) takes milliseconds. The
 * last reference to a retired version is usually dropped by a request thread, whose connection's
 * next request would wait for that work; so while the loader runs, the version goes to the
 * registry's graveyard and the loader frees it at its own low CPU priority, before it loads
 * anything else (so two retired versions never pile up in memory). */
void hs__version_dispose(hs_version *v) {
  hs_registry *r = v->reg;
  uint64_t retired = atomic_load(&v->retired_ns);
  if (retired) hs_histogram_observe(&r->metrics.drain, hs_now_ns() - retired);
  pthread_mutex_lock(&r->mu);
  bool defer = r->loader_running;
  if (defer) {
    v->next_dead = r->graveyard;
    r->graveyard = v;
    pthread_cond_signal(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
  if (!defer) hs__version_free(v);
}

int64_t hs_version_number(const hs_version *v) { return v->version; }
const hs_backend *hs_version_backend(const hs_version *v) { return v->backend; }
const hs_backend_model *hs_version_model(const hs_version *v) { return v->bm; }
size_t hs_version_num_inputs(const hs_version *v) { return v->backend->num_inputs(v->bm); }
const hs_io_desc *hs_version_input(const hs_version *v, size_t i) { return v->backend->input(v->bm, i); }
size_t hs_version_num_outputs(const hs_version *v) { return v->backend->num_outputs(v->bm); }
const hs_io_desc *hs_version_output(const hs_version *v, size_t i) { return v->backend->output(v->bm, i); }

struct hs_batcher *hs_version_batcher(const hs_version *v) { return v->batcher; }
int hs_version_threads(const hs_version *v) { return v->threads; }

/* A request first takes one of its model's compute slots, then a session of its version. Without
 * the model-wide slots, the requests still running on a retiring version and those already sent to
 * the new one would together run twice the configured concurrency during every swap, and each of
 * them would slow down (bench/reload's p99). Slots are always taken before sessions and given
 * back after them, and every session holder holds a slot, so the two waits cannot deadlock. */
hs_backend_session *hs_version_take(hs_version *v) {
  hs_model *m = v->model;
  pthread_mutex_lock(&m->run_mu);
  while (m->running >= m->run_limit) pthread_cond_wait(&m->run_cv, &m->run_mu);
  m->running++;
  pthread_mutex_unlock(&m->run_mu);
  pthread_mutex_lock(&v->pool_mu);
  while (v->n_free == 0) pthread_cond_wait(&v->pool_cv, &v->pool_mu);
  hs_backend_session *s = v->free_list[--v->n_free];
  pthread_mutex_unlock(&v->pool_mu);
  return s;
}

void hs_version_give(hs_version *v, hs_backend_session *s) {
  /* the outputs were copied out: the session's arena may serve other runs (of any version) meanwhile */
  hs_backend_session_idle(v->backend, s);
  pthread_mutex_lock(&v->pool_mu);
  v->free_list[v->n_free++] = s;
  pthread_cond_signal(&v->pool_cv);
  pthread_mutex_unlock(&v->pool_mu);
  hs_model *m = v->model;
  pthread_mutex_lock(&m->run_mu);
  m->running--;
  pthread_cond_signal(&m->run_cv);
  pthread_mutex_unlock(&m->run_mu);
}

const char *hs_outcome_name(hs_outcome o) {
  static const char *const names[HS_OUTCOMES] = {"success", "client_error", "server_error", "rejected"};
  return (unsigned)o < HS_OUTCOMES ? names[o] : "unknown";
}

/* Milliseconds since the epoch (Triton's last_inference; the only wall-clock reading here). */
static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void hs_model_request_begin(hs_model *m) {
  atomic_fetch_add_explicit(&m->metrics.inflight, 1, memory_order_relaxed);
}

void hs_model_request_end(hs_model *m, hs_version *v, hs_outcome outcome, uint64_t total_ns,
                          uint64_t queue_ns, uint64_t compute_ns, uint32_t batch_size) {
  hs_model_metrics *mm = &m->metrics;
  atomic_fetch_sub_explicit(&mm->inflight, 1, memory_order_relaxed);
  hs_histogram_observe(&mm->request, total_ns);
  if (outcome == HS_OUTCOME_SUCCESS) {
    hs_histogram_observe(&mm->queue, queue_ns);
    hs_histogram_observe(&mm->compute, compute_ns);
  }
  if (m->reg->trace)
    hs_trace_request(m->reg->trace, m->name, v ? v->version : -1, hs_outcome_name(outcome), hs_now_ns(),
                     total_ns, queue_ns, compute_ns, batch_size);
  hs_version_counter *c = v ? v->counter : NULL;
  if (!c) {
    /* requests that got no version: the list's entry for -1 is created with the model */
    for (c = atomic_load_explicit(&mm->requests, memory_order_acquire); c && c->version != -1;
         c = c->next) {
    }
  }
  if (c) {
    atomic_fetch_add_explicit(&c->outcome[outcome], 1, memory_order_relaxed);
    if (outcome == HS_OUTCOME_SUCCESS) {
      atomic_fetch_add_explicit(&c->success_ns, total_ns, memory_order_relaxed);
      atomic_fetch_add_explicit(&c->queue_ns, queue_ns, memory_order_relaxed);
      atomic_fetch_add_explicit(&c->compute_infer_ns, compute_ns, memory_order_relaxed);
    } else {
      atomic_fetch_add_explicit(&c->fail_ns, total_ns, memory_order_relaxed);
    }
    atomic_store_explicit(&c->last_inference_ms, wall_ms(), memory_order_relaxed);
  }
  if (v && outcome == HS_OUTCOME_SUCCESS && !atomic_load_explicit(&v->first_done, memory_order_relaxed)) {
    bool expected = false;
    if (atomic_compare_exchange_strong(&v->first_done, &expected, true)) {
      pthread_mutex_lock(&m->status_mu);
      for (size_t i = 0; i < m->history_n; i++) {
        hs_version_status *st = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
        if (st->generation == v->generation) st->first_request_ms = (double)total_ns / 1e6;
      }
      pthread_mutex_unlock(&m->status_mu);
    }
  }
}

void hs_version_count_phases(hs_version *v, uint64_t input_ns, uint64_t output_ns) {
  if (!v || !v->counter) return;
  atomic_fetch_add_explicit(&v->counter->compute_input_ns, input_ns, memory_order_relaxed);
  atomic_fetch_add_explicit(&v->counter->compute_output_ns, output_ns, memory_order_relaxed);
}

const hs_version_counter *hs_model_version_counter(const hs_model *m, int64_t version) {
  for (const hs_version_counter *c = atomic_load_explicit(&m->metrics.requests, memory_order_acquire); c;
       c = c->next)
    if (c->version == version) return c;
  return NULL;
}

void hs_model_config_get(hs_model *m, hs_model_config *out) {
  pthread_mutex_lock(&m->status_mu);
  *out = m->config;
  pthread_mutex_unlock(&m->status_mu);
}

bool hs_model_is_unloaded(const hs_model *m) { return atomic_load(&m->unloaded); }

const char *hs_model_unloaded_reason(const hs_model *m) {
  if (!atomic_load(&m->unloaded)) return NULL;
  if (atomic_load(&m->never_loaded))
    return "not loaded (--model-control-mode explicit: a load request loads it)";
  return "unloaded by request (a load request loads it again)";
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

long hs_model_versions_on_disk(hs_model *m, int64_t *out, size_t cap) {
  char path[HS_PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", m->reg->root, m->name) >= sizeof path) return HS_LIMIT;
  DIR *d = opendir(path); /* lists names only: no entry is opened (a FIFO cannot block it) */
  if (!d) return HS_IO;
  long n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    const char *s = e->d_name;
    if (!*s || *s == '0' || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s)) continue;
    if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
    if ((size_t)n < cap) out[n] = strtoll(s, NULL, 10);
    n++;
  }
  closedir(d);
  if (cap) qsort(out, (size_t)n < cap ? (size_t)n : cap, sizeof *out, cmp_i64);
  return n;
}

/* ---- publication (loader thread) ---- */

static bool view_contains(const hs_view *view, const hs_version *v) {
  for (size_t i = 0; i < view->n; i++)
    if (view->v[i] == v) return true;
  return false;
}

void hs__registry_publish(hs_model *m, hs_version *const *versions, size_t n) {
  hs_registry *r = m->reg;
  hs_view *nv = malloc(sizeof *nv + n * sizeof(hs_version *));
  if (!nv) {
    HS_LOGE("model %s: out of memory publishing a new view; keeping the old one", m->name);
    return;
  }
  nv->n = n;
  for (size_t i = 0; i < n; i++) {
    nv->v[i] = versions[i];
    atomic_fetch_add(&versions[i]->refs, 1);
  }
  /* sort ascending by version number (n is small) */
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && nv->v[j - 1]->version > nv->v[j]->version; j--) {
      hs_version *t = nv->v[j];
      nv->v[j] = nv->v[j - 1];
      nv->v[j - 1] = t;
    }
  for (size_t i = 0; i < n; i++) hs__status_update(m, nv->v[i]->generation, HS_VS_READY, true);
  /* an empty view is published only deliberately (unload, the model or its versions removed) */
  atomic_store(&m->ever_served, n > 0);

  /* the slots follow the new set before it is visible: at most its largest pool runs at once */
  size_t limit = 1;
  for (size_t i = 0; i < n; i++)
    if (versions[i]->n_sessions > limit) limit = versions[i]->n_sessions;
  pthread_mutex_lock(&m->run_mu);
  bool more = limit > m->run_limit;
  m->run_limit = limit;
  if (more) pthread_cond_broadcast(&m->run_cv);
  pthread_mutex_unlock(&m->run_mu);

  uint64_t t0 = hs_now_ns();
  hs_view *old = atomic_exchange(&m->view, nv);
  synchronize(r);
  hs_histogram_observe(&r->metrics.swap, hs_now_ns() - t0);

  for (size_t i = 0; i < old->n; i++) {
    hs_version *v = old->v[i];
    if (!view_contains(nv, v)) {
      atomic_store(&v->retired_ns, hs_now_ns());
      hs__status_update(m, v->generation, HS_VS_RETIRING, false);
      hs_batcher_close(v->batcher); /* a swap closes its open batches: they run now (batch.c) */
    }
    hs_version_release(v);
  }
  free(old);
  /* a retired version with no request in flight is in the graveyard now: the loader frees it next */
}

void hs__version_free(hs_version *v) {
  hs_registry *r = v->reg;
  hs_model *m = v->model;
  uint64_t retired = atomic_load(&v->retired_ns);
  hs_batcher_free(v->batcher); /* no request holds v, so no batch is open on it */
  for (size_t i = 0; i < v->n_sessions; i++)
    if (v->sessions[i]) v->backend->session_free(v->sessions[i]);
  if (v->bm) v->backend->free_model(v->bm);
  if (v->counted_live) {
    atomic_fetch_sub(&r->metrics.versions_live, 1);
    atomic_fetch_sub(&r->metrics.memory_bytes, (int_least64_t)v->memory_bytes);
  }
  /* a version that was served ends as "unloaded"; one that failed keeps its "failed" entry */
  if (retired) hs__status_update(m, v->generation, HS_VS_UNLOADED, false);
  free(v->sessions);
  free(v->free_list);
  pthread_cond_destroy(&v->pool_cv);
  pthread_mutex_destroy(&v->pool_mu);
  free(v);
  atomic_fetch_sub(&m->versions_alive, 1); /* the last touch of m: the loader may forget it now */
}

/* ---- status ---- */

/* Wall-clock milliseconds since the epoch: when a status entry reached its state. */
static int64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *hs_vstate_name(hs_vstate s) {
  switch (s) {
    case HS_VS_LOADING: return "loading";
    case HS_VS_READY: return "ready";
    case HS_VS_FAILED: return "failed";
    case HS_VS_RETIRING: return "retiring";
    case HS_VS_UNLOADED: return "unloaded";
  }
  return "unknown";
}

void hs__status_record(hs_model *m, const hs_version_status *in) {
  hs_version_status stamped = *in;
  const hs_version_status *st = &stamped;
  if (!stamped.unix_ms) stamped.unix_ms = unix_ms();
  pthread_mutex_lock(&m->status_mu);
  for (size_t i = 0; i < m->history_n; i++) {
    hs_version_status *h = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
    if (h->generation == st->generation) { /* a LOADING entry becomes its outcome */
      *h = *st;
      pthread_mutex_unlock(&m->status_mu);
      return;
    }
  }
  size_t slot;
  if (m->history_n < HS_STATUS_HISTORY) {
    slot = (m->history_start + m->history_n++) % HS_STATUS_HISTORY;
  } else {
    slot = m->history_start;
    m->history_start = (m->history_start + 1) % HS_STATUS_HISTORY;
  }
  m->history[slot] = *st;
  pthread_mutex_unlock(&m->status_mu);
}

void hs__status_flag(hs_model *m, uint64_t generation, const char *code, const char *message) {
  pthread_mutex_lock(&m->status_mu);
  for (size_t i = 0; i < m->history_n; i++) {
    hs_version_status *st = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
    if (st->generation == generation) {
      snprintf(st->reason, sizeof st->reason, "%s", code);
      snprintf(st->error, sizeof st->error, "%s", message);
    }
  }
  pthread_mutex_unlock(&m->status_mu);
}

void hs__status_update(hs_model *m, uint64_t generation, hs_vstate state, bool serving) {
  pthread_mutex_lock(&m->status_mu);
  for (size_t i = 0; i < m->history_n; i++) {
    hs_version_status *st = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
    if (st->generation == generation) {
      if (st->state != state || st->serving != serving) st->unix_ms = unix_ms();
      st->state = state;
      st->serving = serving;
    }
  }
  pthread_mutex_unlock(&m->status_mu);
}

void hs__status_set_times(hs_model *m, uint64_t generation, double load_ms, double warmup_ms) {
  pthread_mutex_lock(&m->status_mu);
  for (size_t i = 0; i < m->history_n; i++) {
    hs_version_status *st = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
    if (st->generation == generation) {
      st->load_ms = load_ms;
      st->warmup_ms = warmup_ms;
    }
  }
  pthread_mutex_unlock(&m->status_mu);
}

void hs__status_set_cost(hs_model *m, uint64_t generation, const hs_version_status *c) {
  pthread_mutex_lock(&m->status_mu);
  for (size_t i = 0; i < m->history_n; i++) {
    hs_version_status *st = &m->history[(m->history_start + i) % HS_STATUS_HISTORY];
    if (st->generation != generation) continue;
    st->read_ms = c->read_ms;
    st->read_cpu_ms = c->read_cpu_ms;
    st->hash_cpu_ms = c->hash_cpu_ms;
    st->hash_wait_ms = c->hash_wait_ms;
    st->decode_ms = c->decode_ms;
    st->decode_cpu_ms = c->decode_cpu_ms;
    st->ring_wait_ms = c->ring_wait_ms;
    st->gate_wait_ms = c->gate_wait_ms;
    st->compile_ms = c->compile_ms;
    st->compile_cpu_ms = c->compile_cpu_ms;
    st->load_cpu_ms = c->load_cpu_ms;
    st->warmup_cpu_ms = c->warmup_cpu_ms;
    st->bytes_read = c->bytes_read;
    st->bytes_hashed = c->bytes_hashed;
    st->weights_shared = c->weights_shared;
    st->weights_built = c->weights_built;
    st->paced_ms = c->paced_ms;
  }
  pthread_mutex_unlock(&m->status_mu);
}

const char *hs_stage_name(int stage) {
  static const char *const names[HS_STAGE_COUNT] = {"read", "load", "warmup"};
  return stage >= 0 && stage < HS_STAGE_COUNT ? names[stage] : "?";
}

void hs_model_status_get(hs_model *m, hs_model_status *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", m->name);
  out->has_ready_on_disk = atomic_load(&m->has_ready_on_disk) && !atomic_load(&m->unloaded);
  unsigned slot = reader_enter(m->reg);
  hs_view *view = atomic_load(&m->view);
  out->serving_version = view->n ? view->v[view->n - 1]->version : -1;
  reader_exit(m->reg, slot);
  int64_t stable = hs_rollout_stable_version(m); /* during a rollout window: the stable version */
  if (stable >= 0 && out->serving_version >= 0) out->serving_version = stable;
  pthread_mutex_lock(&m->status_mu);
  out->n = m->history_n;
  for (size_t i = 0; i < m->history_n; i++)
    out->history[i] = m->history[(m->history_start + i) % HS_STATUS_HISTORY];
  pthread_mutex_unlock(&m->status_mu);
}

/* ---- readiness ---- */

void hs_registry_begin_shutdown(hs_registry *r) { atomic_store(&r->shutting_down, true); }

bool hs_registry_ready(hs_registry *r, char *why, size_t why_len) {
  char none[1];
  if (!why || !why_len) {
    why = none;
    why_len = sizeof none;
  }
  if (atomic_load(&r->shutting_down)) {
    snprintf(why, why_len, "shutting down (lame-duck period)");
    return false;
  }
  if (!atomic_load(&r->startup_done)) {
    snprintf(why, why_len, "start-up loads are still running (or the repository cannot be read yet; see the log)");
    return false;
  }
  for (size_t i = 0;; i++) {
    hs_model *m = hs_registry_model_at(r, i);
    if (!m) break;
    if (atomic_load(&m->unloaded) || !atomic_load(&m->in_repo)) continue; /* deliberately not served */
    unsigned slot = reader_enter(r);
    bool serving = atomic_load(&m->view)->n > 0;
    reader_exit(r, slot);
    if (!serving && atomic_load(&m->ever_served)) {
      snprintf(why, why_len, "model %s served a version before and now serves none", m->name);
      return false;
    }
    if (r->opts.strict_readiness && (!serving || !atomic_load(&m->all_selected_serving))) {
      snprintf(why, why_len, "model %s: %s (strict readiness; see GET /v2/models/%s/status)", m->name,
               serving ? "a version its policy selects is not serving" : "serves no version", m->name);
      return false;
    }
  }
  return true;
}

/* ---- metrics ---- */

const hs_model_metrics *hs_model_metrics_get(const hs_model *m) { return &m->metrics; }
const hs_registry_metrics *hs_registry_metrics_get(const hs_registry *r) { return &r->metrics; }

void hs_registry_count_grpc(hs_registry *r, hs_outcome outcome) {
  if ((unsigned)outcome < HS_OUTCOMES)
    atomic_fetch_add_explicit(&r->metrics.grpc_requests[outcome], 1, memory_order_relaxed);
}

hs_version_counter *hs__version_counter(hs_model *m, int64_t version) {
  hs_version_counter *head = atomic_load_explicit(&m->metrics.requests, memory_order_acquire);
  for (hs_version_counter *c = head; c; c = c->next)
    if (c->version == version) return c;
  hs_version_counter *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->version = version;
  c->next = head;
  atomic_store_explicit(&m->metrics.requests, c, memory_order_release); /* single writer */
  return c;
}

void hs__count_reason(_Atomic(hs_reason_counter *) *head_p, const char *reason) {
  hs_reason_counter *head = atomic_load_explicit(head_p, memory_order_acquire);
  for (hs_reason_counter *c = head; c; c = c->next)
    if (strcmp(c->reason, reason) == 0) {
      atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
      return;
    }
  hs_reason_counter *c = calloc(1, sizeof *c);
  if (!c) return;
  snprintf(c->reason, sizeof c->reason, "%s", reason);
  atomic_init(&c->count, 1);
  c->next = head;
  atomic_store_explicit(head_p, c, memory_order_release); /* single writer: the loader */
}

/* ---- lifetime ---- */

static void free_counters(hs_model *m) {
  for (hs_version_counter *c = atomic_load(&m->metrics.requests), *n; c; c = n) {
    n = c->next;
    free(c);
  }
  _Atomic(hs_reason_counter *) *lists[] = {&m->metrics.load_failures, &m->metrics.verify_failures};
  for (size_t i = 0; i < 2; i++)
    for (hs_reason_counter *c = atomic_load(lists[i]), *n; c; c = n) {
      n = c->next;
      free(c);
    }
}

static void free_model(hs_model *m) {
  hs__rollout_destroy(m->rollout); /* drops its references and stops its shadow worker */
  hs__registry_publish(m, NULL, 0); /* retires every version; frees those without requests */
  free(atomic_load(&m->view));
  free_counters(m);
  pthread_mutex_destroy(&m->status_mu);
  pthread_mutex_destroy(&m->run_mu);
  pthread_cond_destroy(&m->run_cv);
  free(m);
}

void hs__registry_free_models(hs_registry *r) {
  hs_model_array *a = atomic_load(&r->models);
  for (size_t i = 0; a && i < a->n; i++) free_model(a->m[i]);
  free(a);
  atomic_store(&r->models, NULL);
  for (hs_model *m = r->forgotten, *next; m; m = next) {
    next = m->next_forgotten;
    free_model(m);
  }
  r->forgotten = NULL;
  r->n_forgotten = 0;
}

/* ---- forgetting models that left the repository (issue 16, class 10) ---- */

bool hs__registry_forget_model(hs_registry *r, hs_model *m) {
  if (r->n_forgotten >= HS_FORGOTTEN_MAX || atomic_load(&m->versions_alive) != 0 || atomic_load(&m->view)->n)
    return false;
  hs_model_array *old = atomic_load(&r->models);
  hs_model_array *a = malloc(sizeof *a + (old->n ? old->n : 1) * sizeof(hs_model *));
  if (!a) return false;
  a->n = 0;
  for (size_t i = 0; i < old->n; i++)
    if (old->m[i] != m) a->m[a->n++] = old->m[i];
  atomic_store(&r->models, a);
  synchronize(r); /* from here on no lookup returns m */
  free(old);
  m->forgotten_ns = hs_now_ns();
  m->next_forgotten = r->forgotten;
  r->forgotten = m;
  r->n_forgotten++;
  return true;
}

void hs__registry_reap_forgotten(hs_registry *r) {
  uint64_t now = hs_now_ns();
  for (hs_model **p = &r->forgotten; *p;) {
    hs_model *m = *p;
    if (now - m->forgotten_ns < (uint64_t)HS_FORGET_DELAY_MS * 1000000ull ||
        atomic_load(&m->metrics.inflight) != 0) {
      p = &m->next_forgotten;
      continue;
    }
    *p = m->next_forgotten;
    r->n_forgotten--;
    free_model(m);
  }
}

/* ---- registry lifetime and control (the loader thread's side is loader.c) ---- */

static void on_change(void *user) { hs_registry_kick(user); }

int hs_registry_create(const hs_registry_options *opts, hs_registry **out, hs_error *err) {
  hs_registry *r = calloc(1, sizeof *r);
  if (!r) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  r->opts = *opts;
  if (r->opts.poll_ms <= 0) r->opts.poll_ms = 2000;
  if (r->opts.settle_ms < 0) r->opts.settle_ms = 2000;
  if (r->opts.threads <= 0) r->opts.threads = 1;
  if (r->opts.instances <= 0) r->opts.instances = 2;
  r->memory_limit = opts->memory_limit ? opts->memory_limit : hs_process_memory_limit();
  r->max_request_memory = opts->max_request_memory ? opts->max_request_memory
                          : r->memory_limit == SIZE_MAX ? 0 : r->memory_limit / 4;
  r->root = strdup(opts->root);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  pthread_cond_init(&r->done_cv, NULL);
  int rc = r->root ? HS_OK : hs_error_set(err, HS_NO_MEMORY, "out of memory");
  struct stat st;
  if (rc == HS_OK && (stat(r->root, &st) != 0 || !S_ISDIR(st.st_mode)))
    rc = hs_error_set(err, HS_NOT_FOUND, "model repository %s is not a readable directory", r->root);
  if (rc == HS_OK && opts->n_keys > 0) rc = hs_trusted_keys_load(opts->key_paths, opts->n_keys, &r->keys, err);
  if (rc == HS_OK && opts->trace_path) rc = hs_trace_open(opts->trace_path, &r->trace, err);
  if (rc == HS_OK && opts->require_signature && !r->keys)
    rc = hs_error_set(err, HS_INVALID_ARGUMENT, "--require-signature needs at least one --trusted-key");
  if (rc == HS_OK) {
    /* the loader hashes the bytes it reads (loader.c, read once): the scan need not hash them too */
    hs_repo_options ro = {.require_signature = opts->require_signature, .keys = r->keys,
                          .settle_ms = r->opts.settle_ms, .defer_content_check = true};
    rc = hs_repo_open(r->root, &ro, &r->repo, err);
  }
  if (rc != HS_OK) {
    hs_registry_destroy(r);
    return rc;
  }
  if (!opts->background_start) hs__loader_process(r); /* what is ready now is served before create returns */
  if (pthread_create(&r->loader, NULL, hs__loader_main, r) != 0) {
    hs_registry_destroy(r);
    return hs_error_set(err, HS_INTERNAL, "cannot start the loader thread");
  }
  r->loader_started = true;
  if (opts->watch) {
    rc = hs_watcher_start(r->root, r->opts.poll_ms, opts->watch_inotify, on_change, r, &r->watcher, err);
    if (rc != HS_OK) {
      hs_registry_destroy(r);
      return rc;
    }
  }
  *out = r;
  return HS_OK;
}

bool hs_registry_stop(hs_registry *r, int timeout_ms) {
  if (r->watcher) hs_watcher_stop(r->watcher);
  r->watcher = NULL;
  if (!r->loader_started) return true;
  atomic_store(&r->stopping, true);
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np's clock */
  uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
  ts.tv_sec += (time_t)(ns / 1000000000ull);
  ts.tv_nsec = (long)(ns % 1000000000ull);
  if (pthread_timedjoin_np(r->loader, NULL, &ts) != 0) return false;
  r->loader_started = false;
  return true;
}

void hs_registry_destroy(hs_registry *r) {
  if (!r) return;
  if (r->watcher) hs_watcher_stop(r->watcher);
  if (r->loader_started) {
    atomic_store(&r->stopping, true);
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->loader, NULL);
  }
  hs__registry_free_models(r);
  for (hs_model_op *op = r->ops, *n; op; op = n) {
    n = op->next;
    free(op);
  }
  if (r->repo) hs_repo_close(r->repo);
  hs_trusted_keys_free(r->keys);
  hs_trace_close(r->trace);
  pthread_cond_destroy(&r->done_cv);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r->root);
  free(r);
}

void hs_registry_kick(hs_registry *r) {
  pthread_mutex_lock(&r->mu);
  r->kicked = true;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Queues an optional op and waits until a scan that started after it has finished. */
static int request_and_wait(hs_registry *r, hs_model_op *op, hs_error *err) {
  pthread_mutex_lock(&r->mu);
  if (op) {
    op->next = r->ops;
    r->ops = op;
  }
  uint64_t mine = ++r->scan_requested;
  r->kicked = true;
  pthread_cond_signal(&r->cv);
  while (r->scan_done < mine && !r->stop) pthread_cond_wait(&r->done_cv, &r->mu);
  bool stopped = r->scan_done < mine;
  pthread_mutex_unlock(&r->mu);
  if (stopped) return hs_error_set(err, HS_UNAVAILABLE, "the server is shutting down");
  return HS_OK;
}

int hs_registry_rescan_sync(hs_registry *r, hs_error *err) { return request_and_wait(r, NULL, err); }

static int model_op(hs_registry *r, const char *name, bool unload, hs_error *err) {
  if (!unload) {
    /* a model the registry has not seen yet is picked up by the scan itself */
    hs_model_op *op = calloc(1, sizeof *op);
    if (!op) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
    snprintf(op->name, sizeof op->name, "%s", name);
    int rc = request_and_wait(r, op, err);
    if (rc != HS_OK) return rc;
    hs_model *m = hs_registry_find(r, name);
    if (!m || !atomic_load(&m->in_repo))
      return hs_error_set(err, HS_NOT_FOUND, "model %s is not in the repository", name);
    hs_version *v = NULL;
    if (hs_model_acquire(m, -1, &v) != HS_OK)
      return hs_error_set(err, HS_UNAVAILABLE, "model %s has no version that loads; see its status", name);
    hs_version_release(v);
    return HS_OK;
  }
  if (!hs_registry_find(r, name)) return hs_error_set(err, HS_NOT_FOUND, "unknown model %s", name);
  hs_model_op *op = calloc(1, sizeof *op);
  if (!op) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  snprintf(op->name, sizeof op->name, "%s", name);
  op->unload = true;
  return request_and_wait(r, op, err);
}

int hs_registry_load_model(hs_registry *r, const char *name, hs_error *err) {
  return model_op(r, name, false, err);
}

int hs_registry_unload_model(hs_registry *r, const char *name, hs_error *err) {
  return model_op(r, name, true, err);
}

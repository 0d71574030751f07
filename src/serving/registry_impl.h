/* registry_impl.h - the registry's internal structures, shared by registry.c (lifetime and control,
 * request path, publication, reclamation, status) and loader.c (the version lifecycle on the loader
 * thread). */
#ifndef HS_SERVING_REGISTRY_IMPL_H
#define HS_SERVING_REGISTRY_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "serving/registry.h"
#include "serving/rollout.h"
#include "serving/trace.h"

/* An immutable, sorted (ascending) set of the versions a model serves. Each member holds one
 * reference on its version. Replaced as a whole, freed after a grace period. */
typedef struct hs_view {
  size_t n;
  hs_version *v[];
} hs_view;

struct hs_version {
  atomic_int refs; /* one per view that lists it + one per request + the loader's while loading */
  hs_registry *reg;
  hs_model *model;
  int64_t version;
  uint64_t generation;
  char fingerprint[65];
  const hs_backend *backend;
  hs_backend_model *bm;
  size_t memory_bytes;
  bool counted_live;            /* added to versions_live / memory_bytes */
  hs_version_counter *counter;  /* requests_total{version} for this version number */
  /* session pool: a request waits here while all sessions are busy (that wait is queue time) */
  pthread_mutex_t pool_mu;
  pthread_cond_t pool_cv;
  size_t n_sessions, n_free;
  hs_backend_session **sessions; /* all of them, for freeing */
  hs_backend_session **free_list;
  struct hs_batcher *batcher;   /* dynamic batching (batch.c); NULL when off */
  int threads;                  /* threads per run (hs_backend_options.threads; 0: all); not 1: on compute.c's pool */
  atomic_bool first_done;       /* first real request recorded in the status */
  atomic_uint_least64_t retired_ns; /* when it left the last view; 0 while serving */
  bool flagged;                 /* loader only: served although its files no longer match its manifest */
  struct hs_version *next_dead; /* the registry's graveyard list (guarded by its mu) */
};

typedef struct hs_model_array {
  size_t n;
  hs_model *m[];
} hs_model_array;

#define HS_FAILED_KEYS 64

struct hs_model {
  hs_registry *reg;
  char name[HS_NAME_MAX];
  _Atomic(hs_view *) view;
  hs_model_metrics metrics;
  /* status: written by the loader and (rarely) by a request's first run or a version's free */
  pthread_mutex_t status_mu;
  hs_version_status history[HS_STATUS_HISTORY]; /* ring; history_start = oldest */
  size_t history_n, history_start;
  atomic_bool has_ready_on_disk;
  atomic_bool unloaded;
  atomic_bool never_loaded; /* explicit control mode: unloaded since it appeared, no load request yet */
  /* compute slots shared by all the model's versions (hs_version_take): while a swap overlaps an
   * old and a new version, their requests together still run at most run_limit at once */
  pthread_mutex_t run_mu;
  pthread_cond_t run_cv;
  size_t running, run_limit; /* run_limit: the largest session pool among the served versions */
  /* loader-thread-only state */
  uint64_t next_generation;
  struct {
    int64_t version;
    char fingerprint[65];
  } failed[HS_FAILED_KEYS]; /* content that failed: never retried, new content is */
  size_t n_failed;
  int64_t recheck_version;     /* a load-time mismatch left this version's status entry LOADING ... */
  uint64_t recheck_generation; /* ... under this generation (0: none), for the verdict to replace */
  char config_error_seen[256];
  hs_model_config config;   /* the last accepted config.json (guarded by status_mu) */
  bool seen_in_scan;        /* loader only: during a scan */
  atomic_bool in_repo;      /* the last scan found the model's folder (read by load requests) */
  /* readiness (hs_registry_ready) */
  atomic_bool ever_served;  /* served something since it was last deliberately emptied (unload, removal) */
  atomic_bool all_selected_serving; /* the last scan served every version the policy selects */
  hs_rollout *rollout;      /* gray release of new versions (rollout.c) */
  /* forgetting (registry.c): versions not yet freed that point here; the loader forgets a model that
   * left the repository once none is left, and frees it HS_FORGET_DELAY_MS later */
  atomic_int versions_alive;
  uint64_t forgotten_ns;
  struct hs_model *next_forgotten;
};

/* A model forgotten (gone from the repository, no version left) stays allocated this long after no
 * lookup can find it any more, for threads that found it just before (a request between lookup
 * and its in-flight count, which includes decoding its body; a /metrics or status reply being
 * built); then it is freed once no request on it is in flight. At most HS_FORGOTTEN_MAX wait at once; beyond that models are kept. */
#define HS_FORGET_DELAY_MS 60000
#define HS_FORGOTTEN_MAX 4096

typedef struct hs_model_op {
  char name[HS_NAME_MAX];
  bool unload;
  struct hs_model_op *next;
} hs_model_op;

struct hs_registry {
  hs_registry_options opts;
  char *root;
  hs_trusted_keys *keys;
  hs_repo *repo;
  hs_watcher *watcher;
  size_t memory_limit;
  size_t max_request_memory; /* per-run scratch budget handed to backends (registry_options) */
  _Atomic(hs_model_array *) models;
  /* grace periods: see registry.c DESIGN */
  atomic_uint epoch;
  atomic_uint active[2];
  /* loader control, guarded by mu */
  pthread_t loader;
  bool loader_started;
  pthread_mutex_t mu;
  pthread_cond_t cv, done_cv;
  bool kicked, stop, scan_pending;
  uint64_t scan_requested, scan_done;
  hs_model_op *ops;
  bool loader_running;   /* versions whose last reference drops now go to the graveyard */
  hs_version *graveyard; /* unreferenced versions the loader frees (see hs__version_dispose) */
  char last_scan_error[sizeof(((hs_error *)0)->message)]; /* loader only: the last scan failure, logged once */
  hs_registry_metrics metrics;
  hs_trace *trace;      /* NULL unless --trace */
  uint64_t trim_due_ns; /* when to hand freed pages back (hs_now_ns); 0: nothing waits (loader.c) */
  bool loaded_since_scan; /* a load ran (or failed) in the current scan: its freed pages wait for a trim too */
  atomic_bool startup_done;  /* a scan has succeeded and its loads are done (readiness) */
  atomic_bool shutting_down; /* lame-duck period: not ready, still serving */
  atomic_bool stopping;      /* hs_registry_stop: the loader gives up a load between its stages */
  hs_model *forgotten;       /* loader only: models no lookup finds, waiting to be freed */
  size_t n_forgotten;
};

/* registry.c, for the loader */
/* Adds a model (loader thread). unloaded: it starts unloaded, waiting for a load request
 * (explicit control mode). */
hs_model *hs__registry_add_model(hs_registry *r, const char *name, bool unloaded);
void hs__registry_publish(hs_model *m, hs_version *const *versions, size_t n);
void hs__version_free(hs_version *v);
/* The last reference to v is gone: queue it for the loader to free, or free it now when no loader runs. */
void hs__version_dispose(hs_version *v);
void hs__status_record(hs_model *m, const hs_version_status *st);
void hs__status_update(hs_model *m, uint64_t generation, hs_vstate state, bool serving);
/* Sets the load and warm-up times of m's history entry for generation (its state unchanged). */
void hs__status_set_times(hs_model *m, uint64_t generation, double load_ms, double warmup_ms);
/* Sets the read/CPU/bytes fields of m's history entry for generation from st (its state unchanged). */
void hs__status_set_cost(hs_model *m, uint64_t generation, const hs_version_status *st);
/* Sets the reason code and message of m's history entry for generation (its state unchanged); ""
 * clears them. */
void hs__status_flag(hs_model *m, uint64_t generation, const char *code, const char *message);
hs_version_counter *hs__version_counter(hs_model *m, int64_t version);
void hs__registry_free_models(hs_registry *r);
/* Loader thread: takes m (no view, versions_alive 0) out of the model array so no lookup finds it
 * and queues it to be freed; false when it must stay (the queue is full, or out of memory). */
bool hs__registry_forget_model(hs_registry *r, hs_model *m);
/* Loader thread: frees the forgotten models whose delay has passed and that have no request in flight. */
void hs__registry_reap_forgotten(hs_registry *r);
void hs__count_reason(_Atomic(hs_reason_counter *) *head, const char *reason);

/* loader.c */
void *hs__loader_main(void *arg);
void hs__loader_process(hs_registry *r);
/* On the loader thread during a load (the pacer's sleeps, serving/pace.c): frees the versions that
 * died since the loader last looked, so one whose last request ends during the next load does not
 * stay allocated through it. Takes r->mu; the caller holds no registry lock. */
void hs__loader_reap(hs_registry *r);

#endif

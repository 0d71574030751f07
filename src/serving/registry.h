/* registry.h - the model registry: which versions are loaded and serving, and how a request gets one.
 *
 * The registry owns a loader thread that turns repository changes into loaded, warmed, checked
 * versions and publishes them with one atomic swap. Request threads look a model up, acquire a
 * reference to one immutable version (a few atomic operations, never a lock held across a load),
 * take one of its sessions (the wait is the queue time), run, and release. See registry.c for the
 * reclamation scheme (DESIGN) and loader.c for the lifecycle.
 */
#ifndef HS_SERVING_REGISTRY_H
#define HS_SERVING_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/backend.h"
#include "hotserve/status.h"
#include "repo/repo.h"
#include "serving/stats.h"

#define HS_STATUS_HISTORY 16

typedef struct hs_registry hs_registry;
typedef struct hs_model hs_model;     /* lives as long as the registry */
typedef struct hs_version hs_version; /* reference-counted, immutable once published */

/* How loads and warm-ups share the CPU with the requests being served (see loader.c). */
typedef enum {
  HS_LOADER_LOW = 0, /* 10 nice steps below the server: a reload takes ~10% of a busy core */
  HS_LOADER_IDLE,    /* SCHED_IDLE: a reload runs only on CPU time requests leave unused */
  HS_LOADER_NORMAL   /* the server's own priority */
} hs_loader_priority;

typedef struct hs_registry_options {
  const char *root;             /* model repository (read only) */
  int poll_ms;                  /* watcher polling interval; default 2000 */
  int settle_ms;                /* manifest-less versions settle this long; default 2000 */
  bool require_signature;
  const char *const *key_paths; /* trusted key files */
  size_t n_keys;
  int threads;                  /* compute threads per run when config.json says 0; default 1 */
  int instances;                /* sessions per version when config.json says 0; default 2 */
  size_t memory_limit;          /* bytes; 0 = the process limit (cgroup or RAM) */
  size_t max_request_memory;    /* scratch one run may plan (hs_backend_options.max_run_bytes);
                                   0 = a quarter of the memory limit */
  bool watch;                   /* start the repository watcher (tests may rely on explicit rescans) */
  hs_loader_priority loader_priority; /* CPU priority of loads and warm-ups; default HS_LOADER_LOW */
  int loader_pace;              /* while requests are in flight, a load uses at most this percent of
                                   one core (serving/pace.c); 0 or >= 100: unpaced */
  const char *trace_path;       /* event log of requests and reload stages (trace.h); NULL: none */
  int trim_delay_ms;            /* freed pages go back to the system after this long without a free
                                   (loader.c); 0: right after every free */
  bool watch_inotify;           /* the watcher also uses inotify (false: polling only, as on NFS) */
  bool background_start;        /* create returns before the first scan; the first hs_registry_kick
                                   starts it (the server listens meanwhile, answering not-ready) */
  bool strict_readiness;        /* hs_registry_ready: every selected version must serve (Triton's
                                   --strict-readiness) instead of "what was served still is" */
  /* --model-control-mode explicit (Triton's meaning): a model is loaded only when named in
   * load_models at start-up ("*": every model the start-up scan finds) or by a load request
   * (hs_registry_load_model); one that appears later, or whose folder left the repository, waits
   * for a load request. A loaded model still follows its folder (new versions swap in).
   * load_models is borrowed: it must outlive the registry. */
  bool explicit_control;
  const char *const *load_models;
  size_t n_load_models;
  /* Tests only (no flag or variable sets it): called on the loader thread after the scan decided a
   * version is READY and right before the loader reads its bytes, so a test can change the files in
   * exactly the window a verify-then-load-by-path design would leave open. NULL: none. */
  void (*test_before_read)(void *user, const char *model, int64_t version, const char *dir);
  void *test_user;
} hs_registry_options;

/* Opens the repository, loads what is ready now (synchronously), then starts the loader thread
 * and the watcher. On success *out is a registry the caller frees with hs_registry_destroy. */
int hs_registry_create(const hs_registry_options *opts, hs_registry **out, hs_error *err);

/* Stops the watcher and asks the loader to stop (it gives up the version it is loading at the next
 * stage: after the backend load, after the sessions), then waits at most timeout_ms for it. Returns
 * true when the loader has stopped; false when it is still inside one stage (a long load or
 * warm-up): then the caller may exit the process without hs_registry_destroy (which would wait). */
bool hs_registry_stop(hs_registry *r, int timeout_ms);

/* Stops the watcher and loader, then frees every model and version. No request may be running. */
void hs_registry_destroy(hs_registry *r);

/* Readiness for a load balancer (GET /v2/health/ready). Default: true once a scan of the repository
 * has succeeded and its loads are done, unless shutting down or a model that has served since then now serves nothing (a new
 * model or version that fails to load, verify or pass its check never makes a ready server
 * unready: invariant 5 keeps what was served). With strict_readiness, also false while any model
 * in the repository serves nothing or any version its policy selects is not serving (failed,
 * refused or still loading). When false, why (if not NULL) gets a one-line reason. Thread-safe;
 * costs a few atomic operations per model. */
bool hs_registry_ready(hs_registry *r, char *why, size_t why_len);

/* Lame-duck period before shutdown: from now on hs_registry_ready answers false ("shutting
 * down") while requests are still served, so load balancers take the replica out first. */
void hs_registry_begin_shutdown(hs_registry *r);

/* Asks the loader for a rescan soon (watcher events, SIGHUP). Returns at once; thread-safe. */
void hs_registry_kick(hs_registry *r);

/* Rescans now and waits until the loader has processed it (POST /v2/repository/index). */
int hs_registry_rescan_sync(hs_registry *r, hs_error *err);

/* Repository extension: load/unload one model by name, waiting for the loader to finish.
 * load clears an earlier unload and rescans; HS_NOT_FOUND when the repository has no such model.
 * unload stops serving every version of the model until the next load. */
int hs_registry_load_model(hs_registry *r, const char *name, hs_error *err);
int hs_registry_unload_model(hs_registry *r, const char *name, hs_error *err);

/* ---- the request path ---- */

/* The model called name, or NULL. A model whose folder left the repository is forgotten once its
 * versions are freed: lookups stop finding it, and the pointer stays valid for at least a minute
 * after that (HS_FORGET_DELAY_MS) and while a request on it is in flight (hs_model_request_begin);
 * use it for one request or one reply, do not keep it. */
hs_model *hs_registry_find(hs_registry *r, const char *name);
size_t hs_registry_num_models(hs_registry *r);
/* NULL past the end; models may be forgotten between calls, so loops stop at the first NULL. */
hs_model *hs_registry_model_at(hs_registry *r, size_t i);
const char *hs_model_name(const hs_model *m);

/* Acquires a reference to version `version` of m (or the highest serving one when version < 0).
 * HS_NOT_FOUND: that version is not loaded; HS_UNAVAILABLE: nothing is serving. On success the
 * caller owns one reference and gives it back with hs_version_release. */
int hs_model_acquire(hs_model *m, int64_t version, hs_version **out);
void hs_version_release(hs_version *v);

int64_t hs_version_number(const hs_version *v);
const hs_backend *hs_version_backend(const hs_version *v);
const hs_backend_model *hs_version_model(const hs_version *v);
size_t hs_version_num_inputs(const hs_version *v);
const hs_io_desc *hs_version_input(const hs_version *v, size_t i);
size_t hs_version_num_outputs(const hs_version *v);
const hs_io_desc *hs_version_output(const hs_version *v, size_t i);

/* v's dynamic batcher (serving/batch.h), NULL when batching is off for it. */
struct hs_batcher *hs_version_batcher(const hs_version *v);
/* Threads a run of v may use (its backend options; 0: the backend's default, all cores). */
int hs_version_threads(const hs_version *v);

/* Takes a free session of v, waiting while all are busy. Give it back with hs_version_give. */
hs_backend_session *hs_version_take(hs_version *v);
void hs_version_give(hs_version *v, hs_backend_session *s);

/* Request accounting (relaxed atomics; no lock). outcome: 0 success, 1 client error, 2 server
 * error. v may be NULL for a request that never got a version. */
/* REJECTED: the server was overloaded (over --max-total-request-memory) and refused the request
 * without running it: neither the client's error nor a failure of the server. */
typedef enum { HS_OUTCOME_SUCCESS, HS_OUTCOME_CLIENT_ERROR, HS_OUTCOME_SERVER_ERROR, HS_OUTCOME_REJECTED } hs_outcome;
#define HS_OUTCOMES 4
/* "success", "client_error" or "server_error": the label /metrics and the trace use. */
const char *hs_outcome_name(hs_outcome o);
void hs_model_request_begin(hs_model *m);
void hs_model_request_end(hs_model *m, hs_version *v, hs_outcome outcome, uint64_t total_ns,
                          uint64_t queue_ns, uint64_t compute_ns, uint32_t batch_size);
/* Adds a successful run's input binding and output copy times to v's statistics (relaxed atomics). */
void hs_version_count_phases(hs_version *v, uint64_t input_ns, uint64_t output_ns);
/* The counters of m's version number `version` (-1: requests that got no version), or NULL. */
const struct hs_version_counter *hs_model_version_counter(const hs_model *m, int64_t version);

/* ---- status and metrics (read by the HTTP layer) ---- */

typedef enum { HS_VS_LOADING, HS_VS_READY, HS_VS_FAILED, HS_VS_RETIRING, HS_VS_UNLOADED } hs_vstate;
const char *hs_vstate_name(hs_vstate s);

typedef struct hs_version_status {
  int64_t version;
  uint64_t generation;
  hs_vstate state;
  bool serving;
  char fingerprint[65];
  double load_ms, verify_ms, warmup_ms;
  double first_request_ms; /* < 0 until the first request */
  /* what the loader spent on this version: CPU time of the loader thread per stage (read = read
   * the files once and check them against the manifest; load = decode, compile, sessions;
   * warm-up = warm-up runs and golden check), and the bytes it read and hashed */
  double read_ms, read_cpu_ms, load_cpu_ms, warmup_cpu_ms;
  double hash_cpu_ms;  /* the part of read_cpu_ms spent hashing on a thread beside the load */
  double hash_wait_ms; /* wall time the loader then waited for the hash's verdict */
  /* the load stage's parts (built-in backend streaming; 0 otherwise): the decode (wall, loader CPU,
   * and the wall time it waited for the hash to free a piece of the read's ring), then the
   * compile (kernels, plans) up to the wait for the verdict */
  double decode_ms, decode_cpu_ms, ring_wait_ms, compile_ms, compile_cpu_ms;
  double gate_wait_ms; /* of the load stage, wall time the engine's frees waited for the hash (gated) */
  uint64_t bytes_read, bytes_hashed;
  /* reordered Conv weight bytes the load took from a live version's byte-identical kernels
   * (kernels/kshare.h) and the ones it built */
  uint64_t weights_shared, weights_built;
  double paced_ms;         /* wall time the load slept to keep to --loader-pace (serving/pace.c) */
  char reason[32];         /* "" when none */
  char error[256];         /* "" when none */
  int64_t unix_ms;         /* wall clock (ms since the epoch) when the entry reached its state */
} hs_version_status;

typedef struct hs_model_status {
  char name[HS_NAME_MAX];
  int64_t serving_version; /* highest serving, -1 when none */
  bool has_ready_on_disk;  /* the last scan saw a READY version */
  size_t n;                /* history entries, oldest first */
  hs_version_status history[HS_STATUS_HISTORY];
} hs_model_status;

/* Copies m's status. */
void hs_model_status_get(hs_model *m, hs_model_status *out);

/* Copies the configuration m's last successful scan used (config.json over the defaults; the
 * defaults before any scan). */
void hs_model_config_get(hs_model *m, hs_model_config *out);

/* True while m is explicitly unloaded (POST .../unload until the next load; not kept across a
 * restart), or, with explicit_control, not loaded since it appeared. */
bool hs_model_is_unloaded(const hs_model *m);
/* Why m is not loaded, for the repository index; NULL while it is not unloaded. */
const char *hs_model_unloaded_reason(const hs_model *m);

/* The version numbers present on disk under ROOT/<m>/ (numeric folder names, whatever their state
 * and whether or not the policy selects them), ascending; up to cap of them (out may be NULL when
 * cap is 0). Returns how many there are (may exceed cap), or a negative hs_status when the folder
 * cannot be listed. */
long hs_model_versions_on_disk(hs_model *m, int64_t *out, size_t cap);

/* Per-model counters and histograms, for exposition. Pointers stay valid for the registry's life. */
typedef struct hs_version_counter {
  int64_t version;                /* -1: requests that never got a version */
  atomic_uint_least64_t outcome[HS_OUTCOMES];
  /* Triton's statistics extension (GET /v2/models/{m}/stats): durations summed in ns. Success and
   * queue/compute counts are outcome[SUCCESS]; failures are outcome[CLIENT_ERROR] + [SERVER_ERROR]. */
  atomic_uint_least64_t success_ns, fail_ns, queue_ns;
  atomic_uint_least64_t compute_input_ns, compute_infer_ns, compute_output_ns;
  atomic_uint_least64_t last_inference_ms; /* wall clock (ms since the epoch) of the last request; 0: none */
  struct hs_version_counter *next; /* published with release order; read with acquire */
} hs_version_counter;

typedef struct hs_reason_counter {
  char reason[32];
  atomic_uint_least64_t count;
  struct hs_reason_counter *next;
} hs_reason_counter;

typedef struct hs_model_metrics {
  hs_histogram request, queue, compute, load;
  hs_batch_stats batch;                    /* runs of the model's batchers (serving/batch.c) */
  atomic_int_least64_t inflight;
  atomic_uint_least64_t loads;
  _Atomic(hs_version_counter *) requests;  /* list head */
  _Atomic(hs_reason_counter *) load_failures;
  _Atomic(hs_reason_counter *) verify_failures;
  /* loader cost summed over every load attempt (loader.c), for /metrics */
  atomic_uint_least64_t reload_cpu_ns[3]; /* HS_STAGE_READ, _LOAD, _WARMUP */
  atomic_uint_least64_t reload_bytes_read, reload_bytes_hashed;
  /* reordered Conv weight bytes of the loads: taken from another version's identical kernels, or built */
  atomic_uint_least64_t reload_weights_shared, reload_weights_built;
  /* served versions whose files no longer match their manifest, kept because nothing else can
   * serve (loader.c; issue 16, class 7) */
  atomic_int_least64_t mismatched_serving;
} hs_model_metrics;

/* The loader stages whose CPU time is counted (hs_model_metrics.reload_cpu_ns). */
enum { HS_STAGE_READ, HS_STAGE_LOAD, HS_STAGE_WARMUP, HS_STAGE_COUNT };
/* "read", "load", "warmup": the stage label /metrics uses. */
const char *hs_stage_name(int stage);

const hs_model_metrics *hs_model_metrics_get(const hs_model *m);

typedef struct hs_registry_metrics {
  hs_histogram swap, drain;
  atomic_int_least64_t versions_live;
  atomic_int_least64_t memory_bytes;
  atomic_uint_least64_t grpc_requests[HS_OUTCOMES]; /* ModelInfer calls over gRPC, by hs_outcome (the gRPC share of the
                                             per-model request counters, which count both protocols) */
  atomic_size_t warm_pool_bytes;          /* memory_bytes of the versions freed since the last trim: pages
                                             the allocator keeps resident for the next versions (loader.c,
                                             "warm weight memory"); 0 after a trim */
  atomic_uint_least64_t paced_ns;         /* wall time loads slept to keep to --loader-pace (pace.c) */
} hs_registry_metrics;

const hs_registry_metrics *hs_registry_metrics_get(const hs_registry *r);

/* Counts one gRPC ModelInfer call (grpc/service.c); relaxed atomic. */
void hs_registry_count_grpc(hs_registry *r, hs_outcome outcome);

#endif

/* rollout.h - gray release inside one server: a canary split or a shadow of a new version, judged
 * and then promoted or rolled back (config.json "rollout"; docs/GRAY_RELEASE.md).
 *
 * The request path asks hs_rollout_route which version an unpinned request goes to and reports how
 * it went with hs_rollout_observe (a few atomics; shadow copies only for the sampled share). The
 * loader thread starts windows (hs__rollout_plan, while it plans a model's next view), judges them
 * (hs__rollout_tick) and applies manual commands. See rollout.c for the DESIGN.
 */
#ifndef HS_SERVING_ROLLOUT_H
#define HS_SERVING_ROLLOUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "serving/registry.h"

struct hs_infer_inputs;
struct hs_infer_result;

typedef struct hs_rollout hs_rollout; /* one per model, lives as long as the model */

typedef enum { HS_ARM_NONE = 0, HS_ARM_STABLE, HS_ARM_CANDIDATE } hs_rollout_arm_kind;

/* What hs_rollout_route decided for one request (on the caller's stack). */
typedef struct hs_rollout_pick {
  hs_rollout_arm_kind arm;  /* which side of a canary window answers; NONE: no window (or pinned) */
  bool shadow;              /* a shadow window sampled this request: mirror it after it succeeds */
  unsigned window;          /* the window the pick belongs to */
  int64_t stable, candidate;
} hs_rollout_pick;

/* Which version a request for `version` of m goes to: `version` itself when it names one (pinned
 * requests bypass the split) or no window is open; otherwise the stable or the candidate version
 * (canary) or the stable one (shadow). Lock-free. */
int64_t hs_rollout_route(hs_model *m, int64_t version, hs_rollout_pick *pick);

/* Whether a failed candidate run should be re-run on the stable version (canary only): then the
 * client gets the stable answer, and the failure counts against the candidate if that re-run works
 * (hs_rollout_observe with retried = true). */
bool hs_rollout_retry_on_stable(const hs_rollout_pick *pick, int rc);

/* Accounts one request in the window: rc is the final outcome, answered the version that answered,
 * ns the time from arrival to the end of the run; retried: the candidate failed first. For a
 * sampled shadow request that succeeded, queues a copy (inputs and the stable outputs) for the
 * shadow worker, never waiting: a full queue drops it and counts the drop. */
void hs_rollout_observe(hs_model *m, const hs_rollout_pick *pick, int rc, int64_t answered, bool retried,
                        uint64_t ns, const struct hs_infer_inputs *in, const struct hs_infer_result *out);

/* Manual control (POST /v2/repository/models/{m}/rollout/{promote,rollback}): decides the open
 * window now and waits until the loader has applied it. HS_NOT_FOUND: no window is open.
 * On success *decided_version is the candidate the decision was about. */
typedef enum { HS_ROLLOUT_CMD_PROMOTE = 1, HS_ROLLOUT_CMD_ROLLBACK = 2 } hs_rollout_cmd;
int hs_rollout_command(hs_registry *r, hs_model *m, hs_rollout_cmd cmd, int64_t *decided_version, hs_error *err);

/* ---- status and metrics ---- */

typedef struct hs_rollout_arm_status {
  uint64_t requests, errors;
  double error_rate;
  double p99_ms; /* < 0: no sample */
} hs_rollout_arm_status;

typedef struct hs_rollout_status {
  hs_rollout_strategy strategy; /* the model's configured strategy (as of the last scan) */
  bool active;                  /* a window is open */
  hs_rollout_strategy window_strategy;
  int64_t stable, candidate;    /* -1: none */
  double weight, fraction;
  double elapsed_s, time_left_s;
  long long min_requests;
  hs_rollout_arm_status stable_arm, candidate_arm;
  uint64_t compared, disagreements, dropped;
  /* the last decision (decided == false: none yet) */
  bool decided;
  char outcome[16];   /* "promoted", "rolled_back", "retired" */
  char reason[32];
  char detail[256];
  int64_t decision_version;
  int64_t decision_unix_ms;
} hs_rollout_status;

void hs_rollout_status_get(hs_model *m, hs_rollout_status *out);
/* The stable version while a window is open (what "serving version" means then), else -1. Lock-free. */
int64_t hs_rollout_stable_version(const hs_model *m);
const char *hs_rollout_strategy_name(hs_rollout_strategy s);

/* Cumulative counters for /metrics (never reset). */
typedef struct hs_rollout_decision_counter {
  char outcome[16], reason[32];
  atomic_uint_least64_t count;
  struct hs_rollout_decision_counter *next; /* published with release order by the loader */
} hs_rollout_decision_counter;

typedef struct hs_rollout_metrics {
  atomic_uint_least64_t canary_stable, canary_candidate; /* requests answered per arm */
  atomic_uint_least64_t candidate_errors;                /* failed candidate runs (canary and shadow) */
  atomic_uint_least64_t shadow_run, shadow_dropped;      /* mirrored runs done; mirrors dropped */
  atomic_uint_least64_t disagreements;                   /* shadow runs whose outputs disagreed */
  _Atomic(hs_rollout_decision_counter *) decisions;
} hs_rollout_metrics;

const hs_rollout_metrics *hs_rollout_metrics_get(const hs_model *m);

/* ---- the registry's side (loader thread unless said otherwise) ---- */
typedef struct hs_view hs_view;

hs_rollout *hs__rollout_create(hs_model *m);
/* Ends any window (dropping its references), stops the shadow worker, frees. */
void hs__rollout_destroy(hs_rollout *ro);

/* Called while the loader plans m's next view (process_model): old is the view served now, next[0..*n)
 * what the version policy would serve. Opens a window when next's highest version is higher than the
 * stable one (old's highest), restarts it for a newer candidate, ends it when the candidate is gone,
 * and keeps the stable version in next while a window is open (cap: next's capacity). */
void hs__rollout_plan(hs_model *m, const hs_rollout_config *cfg, const hs_view *old, hs_version **next,
                      size_t *n, size_t cap);

/* Judges every open window that is due (or has a manual command) and applies the decision. */
void hs__rollout_tick(hs_registry *r);
/* Nanoseconds until the next tick is due; 0: no window is open. */
uint64_t hs__rollout_wait_ns(hs_registry *r);

#endif

/* metrics.c - Prometheus text exposition of the registry's counters and histograms (merged at scrape time). */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "http/handlers.h"
#include "kernels/kshare.h"
#include "serving/rollout.h"
#include "serving/stats.h"

/* Appends a label value with Prometheus escaping (\\, \", \n). */
static void label(hs_sbuf *b, const char *s) {
  hs_sbuf_append(b, "\"", 1);
  for (const char *p = s; *p; p++) {
    if (*p == '\\' || *p == '"') {
      char esc[2] = {'\\', *p};
      hs_sbuf_append(b, esc, 2);
    } else if (*p == '\n') {
      hs_sbuf_append(b, "\\n", 2);
    } else {
      hs_sbuf_append(b, p, 1);
    }
  }
  hs_sbuf_append(b, "\"", 1);
}

static void header(hs_sbuf *b, const char *name, const char *type, const char *help) {
  hs_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; model NULL for an unlabelled one. */
static void histogram(hs_sbuf *b, const char *name, const char *model, const hs_histogram *h) {
  hs_histogram_snap s;
  hs_histogram_read(h, &s);
  for (size_t i = 0; i <= HS_HIST_BUCKETS; i++) {
    hs_sbuf_printf(b, "%s_bucket{", name);
    if (model) {
      hs_sbuf_puts(b, "model=");
      label(b, model);
      hs_sbuf_puts(b, ",");
    }
    if (i < HS_HIST_BUCKETS) hs_sbuf_printf(b, "le=\"%g\"} %" PRIu64 "\n", hs_hist_bounds[i], s.cumulative[i]);
    else hs_sbuf_printf(b, "le=\"+Inf\"} %" PRIu64 "\n", s.cumulative[i]);
  }
  if (model) {
    hs_sbuf_printf(b, "%s_sum{model=", name);
    label(b, model);
    hs_sbuf_printf(b, "} %.9f\n%s_count{model=", s.sum_s, name);
    label(b, model);
    hs_sbuf_printf(b, "} %" PRIu64 "\n", s.count);
  } else {
    hs_sbuf_printf(b, "%s_sum %.9f\n%s_count %" PRIu64 "\n", name, s.sum_s, name, s.count);
  }
}

typedef enum { F_REQUEST, F_QUEUE, F_COMPUTE, F_LOAD } hist_field;

static const hs_histogram *pick(const hs_model_metrics *mm, hist_field f) {
  switch (f) {
    case F_REQUEST: return &mm->request;
    case F_QUEUE: return &mm->queue;
    case F_COMPUTE: return &mm->compute;
    case F_LOAD: return &mm->load;
  }
  return &mm->request;
}

static void reason_counters(hs_sbuf *b, const char *name, const char *help, hs_model *const *ms, size_t n,
                            bool verify) {
  header(b, name, "counter", help);
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    const hs_model_metrics *mm = hs_model_metrics_get(m);
    const hs_reason_counter *c =
        atomic_load_explicit(verify ? &mm->verify_failures : &mm->load_failures, memory_order_acquire);
    for (; c; c = c->next) {
      hs_sbuf_printf(b, "%s{model=", name);
      label(b, hs_model_name(m));
      hs_sbuf_puts(b, ",reason=");
      label(b, c->reason);
      hs_sbuf_printf(b, "} %" PRIu64 "\n", (uint64_t)atomic_load_explicit(&c->count, memory_order_relaxed));
    }
  }
}

/* Gray release (rollout.c; names listed in docs/GRAY_RELEASE.md). */
static void model_counter(hs_sbuf *b, hs_model *m, const char *name, const char *labels, uint64_t v) {
  hs_sbuf_printf(b, "%s{model=", name);
  label(b, hs_model_name(m));
  hs_sbuf_printf(b, "%s%s} %" PRIu64 "\n", labels[0] ? "," : "", labels, v);
}

/* One model's gauge sample without further labels: NAME{model="M"} V. */
static void model_gauge(hs_sbuf *b, hs_model *m, const char *name, int64_t v) {
  hs_sbuf_printf(b, "%s{model=", name);
  label(b, hs_model_name(m));
  hs_sbuf_printf(b, "} %" PRId64 "\n", v);
}

/* The rollout counters of hs_rollout_metrics, a family each, with one or two series (labels and the
 * counter's offset; a second series without labels is absent). */
typedef struct {
  const char *name, *help;
  struct {
    const char *labels;
    size_t offset;
  } series[2];
} rollout_counter_family;

#define RM_AT(field) offsetof(hs_rollout_metrics, field)
static const rollout_counter_family k_rollout_counters[] = {
    {"hotserve_rollout_canary_requests_total",
     "Unpinned requests answered during canary windows, by arm (stable or candidate).",
     {{"arm=\"stable\"", RM_AT(canary_stable)}, {"arm=\"candidate\"", RM_AT(canary_candidate)}}},
    {"hotserve_rollout_candidate_errors_total",
     "Candidate runs that failed (a canary run then re-run on the stable version, or a shadow run).",
     {{"", RM_AT(candidate_errors)}}},
    {"hotserve_rollout_shadow_requests_total",
     "Shadow copies of requests, by result: run on the candidate, or dropped (queue full).",
     {{"result=\"run\"", RM_AT(shadow_run)}, {"result=\"dropped\"", RM_AT(shadow_dropped)}}},
    {"hotserve_rollout_output_disagreements_total",
     "Shadow runs whose outputs differed from the stable version's beyond output_rtol/output_atol.",
     {{"", RM_AT(disagreements)}}},
};
#undef RM_AT

static void rollout_metrics(hs_model *const *ms, size_t n, hs_sbuf *b) {
  static const char *const states[] = {"idle", "canary", "shadow"};
  header(b, "hotserve_rollout_state", "gauge", "1 for the model's rollout state (idle, canary or shadow), else 0.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    hs_rollout_status rs;
    hs_rollout_status_get(m, &rs);
    const char *now = rs.active ? hs_rollout_strategy_name(rs.window_strategy) : "idle";
    for (size_t k = 0; k < 3; k++) {
      char l[32];
      snprintf(l, sizeof l, "state=\"%s\"", states[k]);
      model_counter(b, m, "hotserve_rollout_state", l, strcmp(now, states[k]) == 0);
    }
  }
  header(b, "hotserve_rollout_candidate_version", "gauge", "The version under a rollout window (0 when none).");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    hs_rollout_status rs;
    hs_rollout_status_get(m, &rs);
    model_counter(b, m, "hotserve_rollout_candidate_version", "", (uint64_t)(rs.candidate > 0 ? rs.candidate : 0));
  }
  header(b, "hotserve_rollout_decisions_total", "counter", "Rollout windows ended, by outcome and reason.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    for (const hs_rollout_decision_counter *c =
             atomic_load_explicit(&hs_rollout_metrics_get(m)->decisions, memory_order_acquire);
         c; c = c->next) {
      char l[96];
      snprintf(l, sizeof l, "outcome=\"%s\",reason=\"%s\"", c->outcome, c->reason);
      model_counter(b, m, "hotserve_rollout_decisions_total", l,
                    (uint64_t)atomic_load_explicit(&c->count, memory_order_relaxed));
    }
  }
  for (size_t f = 0; f < sizeof k_rollout_counters / sizeof k_rollout_counters[0]; f++) {
    const rollout_counter_family *fam = &k_rollout_counters[f];
    header(b, fam->name, "counter", fam->help);
    for (size_t i = 0; i < n; i++) {
      const char *rm = (const char *)hs_rollout_metrics_get(ms[i]);
      for (size_t k = 0; k < 2 && fam->series[k].labels; k++)
        model_counter(b, ms[i], fam->name, fam->series[k].labels,
                      atomic_load((const atomic_uint_least64_t *)(rm + fam->series[k].offset)));
    }
  }
}

/* The models of one scrape, read once: every family below lists the same ones, and a model the loader
 * forgets meanwhile is freed only HS_FORGET_DELAY_MS later (registry.c), so the pointers stay valid for
 * the scrape. Returns a malloc'd array (NULL with *n = 0 when out of memory: the families are empty). */
static hs_model **snapshot_models(hs_registry *reg, size_t *n) {
  size_t cap = hs_registry_num_models(reg);
  hs_model **ms = malloc((cap ? cap : 1) * sizeof *ms);
  *n = 0;
  if (!ms) return NULL;
  for (size_t i = 0; i < cap; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since the count was read */
    ms[(*n)++] = m;
  }
  return ms;
}

void hs_metrics_render(hs_registry *reg, hs_sbuf *b) {
  size_t n = 0;
  hs_model **ms = snapshot_models(reg, &n);

  header(b, "hotserve_requests_total", "counter", "Inference requests by model, version and outcome.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    const hs_model_metrics *mm = hs_model_metrics_get(m);
    /* The list is newest first. Only the HS_STATUS_HISTORY newest version numbers (and "none")
     * are exposed, so thousands of reloads do not grow every scrape: older series go stale. */
    size_t shown = 0;
    for (const hs_version_counter *c = atomic_load_explicit(&mm->requests, memory_order_acquire); c; c = c->next) {
      if (c->version >= 0 && shown++ >= HS_STATUS_HISTORY) continue;
      char ver[32];
      if (c->version < 0) snprintf(ver, sizeof ver, "none");
      else snprintf(ver, sizeof ver, "%" PRId64, c->version);
      for (int o = 0; o < HS_OUTCOMES; o++) {
        hs_sbuf_puts(b, "hotserve_requests_total{model=");
        label(b, hs_model_name(m));
        hs_sbuf_printf(b, ",version=\"%s\",outcome=\"%s\"} %" PRIu64 "\n", ver, hs_outcome_name((hs_outcome)o),
                       (uint64_t)atomic_load_explicit(&c->outcome[o], memory_order_relaxed));
      }
    }
  }

  static const struct {
    const char *name, *help;
    hist_field f;
  } hists[] = {
      {"hotserve_request_duration_seconds", "Time from request body received to response ready.", F_REQUEST},
      {"hotserve_queue_duration_seconds", "Time a request waited for a free session of its version (with dynamic batching: from joining its batch until the run).", F_QUEUE},
      {"hotserve_compute_duration_seconds", "Time the model ran for a request.", F_COMPUTE},
      {"hotserve_model_load_duration_seconds", "Time to verify, load, warm up and check a version.", F_LOAD},
  };
  for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
    header(b, hists[h].name, "histogram", hists[h].help);
    for (size_t i = 0; i < n; i++) {
      hs_model *m = ms[i];
      histogram(b, hists[h].name, hs_model_name(m), pick(hs_model_metrics_get(m), hists[h].f));
    }
  }

  header(b, "hotserve_batch_size", "histogram",
         "Rows per run of a model with dynamic batching (the sum of its requests' first dimensions).");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    uint64_t cum[HS_BATCH_BUCKETS + 1], sum;
    hs_batch_stats_read(&hs_model_metrics_get(m)->batch, cum, &sum);
    for (size_t k = 0; k <= HS_BATCH_BUCKETS; k++) {
      hs_sbuf_puts(b, "hotserve_batch_size_bucket{model=");
      label(b, hs_model_name(m));
      if (k < HS_BATCH_BUCKETS) hs_sbuf_printf(b, ",le=\"%g\"} %" PRIu64 "\n", hs_batch_bounds[k], cum[k]);
      else hs_sbuf_printf(b, ",le=\"+Inf\"} %" PRIu64 "\n", cum[k]);
    }
    hs_sbuf_puts(b, "hotserve_batch_size_sum{model=");
    label(b, hs_model_name(m));
    hs_sbuf_printf(b, "} %" PRIu64 "\nhotserve_batch_size_count{model=", sum);
    label(b, hs_model_name(m));
    hs_sbuf_printf(b, "} %" PRIu64 "\n", cum[HS_BATCH_BUCKETS]);
  }
  header(b, "hotserve_batch_retries_total", "counter",
         "Batched runs that failed and whose requests were run again one at a time.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    model_counter(b, m, "hotserve_batch_retries_total", "",
                  (uint64_t)atomic_load_explicit(&hs_model_metrics_get(m)->batch.retried, memory_order_relaxed));
  }

  header(b, "hotserve_inflight_requests", "gauge", "Inference requests being handled now.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    model_gauge(b, m, "hotserve_inflight_requests",
                (int64_t)atomic_load_explicit(&hs_model_metrics_get(m)->inflight, memory_order_relaxed));
  }
  header(b, "hotserve_model_serving_version", "gauge", "The version answering unpinned requests: the highest serving, the stable one during a rollout window (0 when none).");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    hs_version *v = NULL;
    int64_t ver = 0;
    if (hs_model_acquire(m, -1, &v) == HS_OK) ver = hs_version_number(v);
    hs_version_release(v);
    if (ver > 0 && hs_rollout_stable_version(m) > 0) ver = hs_rollout_stable_version(m);
    model_gauge(b, m, "hotserve_model_serving_version", ver);
  }
  header(b, "hotserve_model_mismatched_versions_serving", "gauge",
         "Served versions whose files no longer match their manifest, kept serving because no other version can "
         "(their status entry says manifest_mismatch); 0 normally.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    model_gauge(b, m, "hotserve_model_mismatched_versions_serving",
                (int64_t)atomic_load_explicit(&hs_model_metrics_get(m)->mismatched_serving, memory_order_relaxed));
  }
  header(b, "hotserve_model_loads_total", "counter", "Versions loaded, warmed, checked and published.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    model_counter(b, m, "hotserve_model_loads_total", "",
                  (uint64_t)atomic_load_explicit(&hs_model_metrics_get(m)->loads, memory_order_relaxed));
  }
  header(b, "hotserve_model_reload_cpu_seconds_total", "counter",
         "CPU time of the loader thread spent on this model's loads, by stage (read: read the files once and "
         "check them; load: decode and compile; warmup: warm-up runs and golden check).");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    for (int st = 0; st < HS_STAGE_COUNT; st++) {
      hs_sbuf_puts(b, "hotserve_model_reload_cpu_seconds_total{model=");
      label(b, hs_model_name(m));
      uint64_t ns = atomic_load_explicit(&hs_model_metrics_get(m)->reload_cpu_ns[st], memory_order_relaxed);
      hs_sbuf_printf(b, ",stage=\"%s\"} %.6f\n", hs_stage_name(st), (double)ns / 1e9);
    }
  }
  header(b, "hotserve_model_reload_bytes_total", "counter",
         "Bytes of model files the loader read for this model's loads (read), and of those the ones it checked "
         "against a manifest's SHA-256 (hashed).");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = ms[i];
    const hs_model_metrics *mm = hs_model_metrics_get(m);
    uint64_t v[2] = {atomic_load_explicit(&mm->reload_bytes_read, memory_order_relaxed),
                     atomic_load_explicit(&mm->reload_bytes_hashed, memory_order_relaxed)};
    for (int k = 0; k < 2; k++) {
      hs_sbuf_puts(b, "hotserve_model_reload_bytes_total{model=");
      label(b, hs_model_name(m));
      hs_sbuf_printf(b, ",kind=\"%s\"} %" PRIu64 "\n", k ? "hashed" : "read", v[k]);
    }
  }
  header(b, "hotserve_model_reload_weight_bytes_total", "counter",
         "Reordered Conv weight bytes of this model's loads: taken from a live version's byte-identical kernel "
         "(shared) or built by the load (built).");
  for (size_t i = 0; i < n; i++) {
    const hs_model_metrics *mm = hs_model_metrics_get(ms[i]);
    uint64_t v[2] = {atomic_load_explicit(&mm->reload_weights_shared, memory_order_relaxed),
                     atomic_load_explicit(&mm->reload_weights_built, memory_order_relaxed)};
    for (int k = 0; k < 2; k++) {
      hs_sbuf_puts(b, "hotserve_model_reload_weight_bytes_total{model=");
      label(b, hs_model_name(ms[i]));
      hs_sbuf_printf(b, ",kind=\"%s\"} %" PRIu64 "\n", k ? "built" : "shared", v[k]);
    }
  }
  reason_counters(b, "hotserve_model_load_failures_total",
                  "Versions refused at any step (verification included), by reason.", ms, n, false);
  reason_counters(b, "hotserve_model_verify_failures_total",
                  "Versions refused by manifest or signature verification, by reason.", ms, n, true);

  header(b, "hotserve_ready", "gauge", "1 while GET /v2/health/ready answers 200, else 0.");
  hs_sbuf_printf(b, "hotserve_ready %d\n", hs_registry_ready(reg, NULL, 0) ? 1 : 0);

  const hs_registry_metrics *rm = hs_registry_metrics_get(reg);
  header(b, "hotserve_model_swap_duration_seconds", "histogram",
         "Time to publish a new set of versions (atomic swap plus grace period).");
  histogram(b, "hotserve_model_swap_duration_seconds", NULL, &rm->swap);
  header(b, "hotserve_model_drain_duration_seconds", "histogram",
         "Time from a version's retirement until its last request finished and it was freed.");
  histogram(b, "hotserve_model_drain_duration_seconds", NULL, &rm->drain);
  header(b, "hotserve_model_versions_live", "gauge", "Loaded versions whose memory is held (serving + retiring).");
  hs_sbuf_printf(b, "hotserve_model_versions_live %" PRId64 "\n", (int64_t)atomic_load(&rm->versions_live));
  header(b, "hotserve_model_memory_bytes", "gauge", "Bytes held by all live versions' models.");
  hs_sbuf_printf(b, "hotserve_model_memory_bytes %" PRId64 "\n", (int64_t)atomic_load(&rm->memory_bytes));
  header(b, "hotserve_weight_pool_bytes", "gauge",
         "Memory of the versions freed since the last trim, kept resident (already faulted) for the next "
         "versions' weights; 0 once handed back (--trim-delay after the last free).");
  hs_sbuf_printf(b, "hotserve_weight_pool_bytes %zu\n", atomic_load(&rm->warm_pool_bytes));
  header(b, "hotserve_loader_paced_seconds_total", "counter",
         "Wall time loads slept to keep to --loader-pace while requests were in flight.");
  hs_sbuf_printf(b, "hotserve_loader_paced_seconds_total %.6f\n",
                 (double)atomic_load_explicit(&rm->paced_ns, memory_order_relaxed) / 1e9);
  header(b, "hotserve_request_memory_in_flight_bytes", "gauge",
         "Scratch (plan arena) bytes of the runs in flight, all models together.");
  hs_sbuf_printf(b, "hotserve_request_memory_in_flight_bytes %zu\n", hs_engine_memory_in_flight());
  header(b, "hotserve_request_memory_budget_bytes", "gauge",
         "Scratch bytes all runs in flight may hold together (--max-total-request-memory; 0: no budget).");
  hs_sbuf_printf(b, "hotserve_request_memory_budget_bytes %zu\n", hs_engine_memory_budget());
  hs_kshare_stats ks;
  hs_kshare_get_stats(&ks);
  header(b, "hotserve_shared_kernels", "gauge",
         "Conv kernels in the process-wide registry that versions with byte-identical layers share.");
  hs_sbuf_printf(b, "hotserve_shared_kernels %" PRIu64 "\n", ks.kernels);
  header(b, "hotserve_shared_kernel_bytes", "gauge", "Reordered weight bytes of those kernels (each counted once).");
  hs_sbuf_printf(b, "hotserve_shared_kernel_bytes %" PRIu64 "\n", ks.bytes);
  hs_engine_arena_stats as;
  hs_engine_arena_stats_get(&as);
  header(b, "hotserve_session_arenas", "gauge",
         "Sessions' scratch arenas, pooled across the versions of a model with the same plan size: about the "
         "runs in flight at once, not one per session of every live version.");
  hs_sbuf_printf(b, "hotserve_session_arenas %zu\n", as.arenas);
  header(b, "hotserve_session_arena_bytes", "gauge", "Bytes of those arenas.");
  hs_sbuf_printf(b, "hotserve_session_arena_bytes %zu\n", as.bytes);
  header(b, "hotserve_session_arenas_created_total", "counter",
         "Arenas allocated since the start (a reload that reuses the replaced version's adds none).");
  hs_sbuf_printf(b, "hotserve_session_arenas_created_total %zu\n", as.created);
  header(b, "hotserve_grpc_requests_total", "counter",
         "ModelInfer calls over gRPC by outcome (also counted in hotserve_requests_total, which covers both protocols).");
  for (int o = 0; o < HS_OUTCOMES; o++)
    hs_sbuf_printf(b, "hotserve_grpc_requests_total{outcome=\"%s\"} %" PRIu64 "\n", hs_outcome_name((hs_outcome)o),
                   (uint64_t)atomic_load(&rm->grpc_requests[o]));
  header(b, "hotserve_process_resident_memory_bytes", "gauge", "Resident set size of the server process.");
  hs_sbuf_printf(b, "hotserve_process_resident_memory_bytes %zu\n", hs_process_rss_bytes());
  rollout_metrics(ms, n, b);
  free(ms);
}

/* metrics.c - Prometheus text exposition of the registry's counters and histograms (merged at scrape time). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http/handlers.h"
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

static void reason_counters(hs_sbuf *b, const char *name, const char *help, hs_registry *reg, bool verify) {
  header(b, name, "counter", help);
  size_t n = hs_registry_num_models(reg);
  for (size_t i = 0; i < n; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since n was read (registry.c) */
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

void hs_metrics_render(hs_registry *reg, hs_sbuf *b) {
  size_t n = hs_registry_num_models(reg);

  header(b, "hotserve_requests_total", "counter", "Inference requests by model, version and outcome.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since n was read (registry.c) */
    const hs_model_metrics *mm = hs_model_metrics_get(m);
    /* The list is newest first. Only the HS_STATUS_HISTORY newest version numbers (and "none")
     * are exposed, so thousands of reloads do not grow every scrape: older series go stale. */
    size_t shown = 0;
    for (const hs_version_counter *c = atomic_load_explicit(&mm->requests, memory_order_acquire); c; c = c->next) {
      if (c->version >= 0 && shown++ >= HS_STATUS_HISTORY) continue;
      char ver[32];
      if (c->version < 0) snprintf(ver, sizeof ver, "none");
      else snprintf(ver, sizeof ver, "%" PRId64, c->version);
      for (int o = 0; o < 3; o++) {
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
      {"hotserve_queue_duration_seconds", "Time a request waited for a free session of its version.", F_QUEUE},
      {"hotserve_compute_duration_seconds", "Time the model ran for a request.", F_COMPUTE},
      {"hotserve_model_load_duration_seconds", "Time to verify, load, warm up and check a version.", F_LOAD},
  };
  for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
    header(b, hists[h].name, "histogram", hists[h].help);
    for (size_t i = 0; i < n; i++) {
      hs_model *m = hs_registry_model_at(reg, i);
      if (!m) break; /* forgotten since n was read (registry.c) */
      histogram(b, hists[h].name, hs_model_name(m), pick(hs_model_metrics_get(m), hists[h].f));
    }
  }

  header(b, "hotserve_inflight_requests", "gauge", "Inference requests being handled now.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since n was read (registry.c) */
    hs_sbuf_puts(b, "hotserve_inflight_requests{model=");
    label(b, hs_model_name(m));
    hs_sbuf_printf(b, "} %" PRId64 "\n",
                   (int64_t)atomic_load_explicit(&hs_model_metrics_get(m)->inflight, memory_order_relaxed));
  }
  header(b, "hotserve_model_serving_version", "gauge", "The highest version serving (0 when none).");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since n was read (registry.c) */
    hs_version *v = NULL;
    int64_t ver = 0;
    if (hs_model_acquire(m, -1, &v) == HS_OK) ver = hs_version_number(v);
    hs_version_release(v);
    hs_sbuf_puts(b, "hotserve_model_serving_version{model=");
    label(b, hs_model_name(m));
    hs_sbuf_printf(b, "} %" PRId64 "\n", ver);
  }
  header(b, "hotserve_model_loads_total", "counter", "Versions loaded, warmed, checked and published.");
  for (size_t i = 0; i < n; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since n was read (registry.c) */
    hs_sbuf_puts(b, "hotserve_model_loads_total{model=");
    label(b, hs_model_name(m));
    hs_sbuf_printf(b, "} %" PRIu64 "\n",
                   (uint64_t)atomic_load_explicit(&hs_model_metrics_get(m)->loads, memory_order_relaxed));
  }
  reason_counters(b, "hotserve_model_load_failures_total",
                  "Versions refused at any step (verification included), by reason.", reg, false);
  reason_counters(b, "hotserve_model_verify_failures_total",
                  "Versions refused by manifest or signature verification, by reason.", reg, true);

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
  header(b, "hotserve_grpc_requests_total", "counter",
         "ModelInfer calls over gRPC by outcome (also counted in hotserve_requests_total, which covers both protocols).");
  for (int o = 0; o < 3; o++)
    hs_sbuf_printf(b, "hotserve_grpc_requests_total{outcome=\"%s\"} %" PRIu64 "\n", hs_outcome_name((hs_outcome)o),
                   (uint64_t)atomic_load(&rm->grpc_requests[o]));
  header(b, "hotserve_process_resident_memory_bytes", "gauge", "Resident set size of the server process.");
  hs_sbuf_printf(b, "hotserve_process_resident_memory_bytes %zu\n", hs_process_rss_bytes());
}

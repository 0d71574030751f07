/* triton.c - repository index, load/unload and statistics of Triton's extensions as data, for HTTP and gRPC. */
#include "http/triton.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The newest history entry of version, or NULL. */
static const hs_version_status *newest_entry(const hs_model_status *st, int64_t version) {
  for (size_t k = st->n; k-- > 0;)
    if (st->history[k].version == version) return &st->history[k];
  return NULL;
}

/* Triton's state of one version (its newest history entry, or NULL when it has none), with a reason
 * for UNAVAILABLE; unloaded: why its model is unloaded (hs_model_unloaded_reason), NULL when it is not. */
static const char *index_state(const hs_version_status *v, const char *unloaded, char *reason, size_t cap) {
  reason[0] = '\0';
  if (!v) {
    snprintf(reason, cap, "%s", unloaded ? unloaded : "not loaded: not selected by the version policy, or not complete");
    return "UNAVAILABLE";
  }
  switch (v->state) {
    case HS_VS_READY:
      if (v->serving) return "READY";
      snprintf(reason, cap, "loaded but not serving");
      return "UNAVAILABLE";
    case HS_VS_LOADING: return "LOADING";
    case HS_VS_RETIRING: return "UNLOADING";
    case HS_VS_FAILED:
      snprintf(reason, cap, "%s%s%s", v->reason, v->error[0] ? ": " : "", v->error);
      return "UNAVAILABLE";
    default:
      snprintf(reason, cap, "%s", unloaded ? unloaded : v->reason[0] ? v->reason : "unloaded");
      return "UNAVAILABLE";
  }
}

typedef struct entry_list {
  hs_index_entry *v;
  size_t n, cap;
} entry_list;

static hs_index_entry *add_entry(entry_list *l) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 16;
    hs_index_entry *p = realloc(l->v, cap * sizeof *p);
    if (!p) return NULL;
    l->v = p;
    l->cap = cap;
  }
  hs_index_entry *e = &l->v[l->n++];
  memset(e, 0, sizeof *e);
  return e;
}

/* One model's entries: every version on disk and every version still in memory, ascending. */
static int index_model(hs_model *m, const hs_model_status *st, bool ready_only, entry_list *l) {
  long count = hs_model_versions_on_disk(m, NULL, 0);
  size_t cap = count > 0 ? (size_t)count + 16 : 16; /* room for a few folders created meanwhile */
  int64_t *vers = malloc((cap + HS_STATUS_HISTORY) * sizeof *vers);
  if (!vers) return HS_NO_MEMORY;
  long on_disk = hs_model_versions_on_disk(m, vers, cap);
  size_t n = on_disk > 0 ? ((size_t)on_disk < cap ? (size_t)on_disk : cap) : 0;
  for (size_t k = 0; k < st->n; k++) { /* loaded, loading or retiring versions whose folder is gone */
    const hs_version_status *v = &st->history[k];
    bool listed = false;
    for (size_t j = 0; j < n; j++) listed |= vers[j] == v->version;
    if (!listed && newest_entry(st, v->version) == v &&
        (v->state == HS_VS_READY || v->state == HS_VS_LOADING || v->state == HS_VS_RETIRING))
      vers[n++] = v->version;
  }
  for (size_t a = 1; a < n; a++) /* insertion sort: the few additions above may be out of order */
    for (size_t j = a; j > 0 && vers[j - 1] > vers[j]; j--) {
      int64_t t = vers[j];
      vers[j] = vers[j - 1];
      vers[j - 1] = t;
    }
  const char *unloaded = hs_model_unloaded_reason(m); /* NULL while it is not unloaded */
  int rc = HS_OK;
  if (n == 0 && on_disk >= 0 && !ready_only) {
    hs_index_entry *e = add_entry(l);
    if (e) {
      snprintf(e->name, sizeof e->name, "%s", st->name);
      e->version = -1;
      e->state = "UNAVAILABLE";
      snprintf(e->reason, sizeof e->reason, "no versions in the repository");
    }
    rc = e ? HS_OK : HS_NO_MEMORY;
  }
  for (size_t k = 0; k < n && rc == HS_OK; k++) {
    char reason[sizeof l->v->reason];
    const char *state = index_state(newest_entry(st, vers[k]), unloaded, reason, sizeof reason);
    if (ready_only && strcmp(state, "READY") != 0) continue;
    hs_index_entry *e = add_entry(l);
    if (!e) {
      rc = HS_NO_MEMORY;
      break;
    }
    snprintf(e->name, sizeof e->name, "%s", st->name);
    e->version = vers[k];
    e->state = state;
    memcpy(e->reason, reason, sizeof reason);
  }
  free(vers);
  return rc;
}

int hs_triton_index(hs_registry *reg, bool ready_only, hs_index_entry **out, size_t *n, hs_error *err) {
  *out = NULL;
  *n = 0;
  int rc = hs_registry_rescan_sync(reg, err);
  if (rc != HS_OK) return rc;
  hs_model_status *st = malloc(sizeof *st);
  if (!st) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  entry_list l = {0};
  size_t models = hs_registry_num_models(reg);
  for (size_t i = 0; i < models && rc == HS_OK; i++) {
    hs_model *m = hs_registry_model_at(reg, i);
    if (!m) break; /* forgotten since the count was read (registry.c) */
    hs_model_status_get(m, st);
    rc = index_model(m, st, ready_only, &l);
  }
  free(st);
  if (rc != HS_OK) {
    free(l.v);
    return hs_error_set(err, rc, "out of memory listing the repository");
  }
  *out = l.v;
  *n = l.n;
  return HS_OK;
}

/* Appends why the newest failed version of m failed, or that no version is complete yet. */
static void append_failure(hs_model *m, hs_error *err) {
  hs_model_status *st = m ? malloc(sizeof *st) : NULL;
  if (!st) return;
  hs_model_status_get(m, st);
  char *msg = err->message;
  size_t len = strlen(msg), cap = sizeof err->message;
  bool told = false;
  for (size_t k = st->n; k-- > 0 && !told;)
    if (st->history[k].state == HS_VS_FAILED) {
      snprintf(msg + len, cap - len, ": version %" PRId64 " %s%s%s", st->history[k].version, st->history[k].reason,
               st->history[k].error[0] ? ": " : "", st->history[k].error);
      told = true;
    }
  if (!told) snprintf(msg + len, cap - len, ": no version on disk is complete yet (still settling or being copied)");
  free(st);
}

int hs_triton_load(hs_registry *reg, const char *name, bool unload, hs_error *err) {
  int rc = unload ? hs_registry_unload_model(reg, name, err) : hs_registry_load_model(reg, name, err);
  if (rc == HS_UNAVAILABLE && !unload) append_failure(hs_registry_find(reg, name), err);
  return rc;
}

const char *hs_triton_param_refusal(const char *key) {
  if (strcmp(key, "config") == 0) return "no configuration override: edit the model's config.json";
  if (strncmp(key, "file:", 5) == 0) return "hotserve reads models only from the repository";
  return "not implemented";
}

static uint64_t ld(const atomic_uint_least64_t *a) { return atomic_load_explicit(a, memory_order_relaxed); }

static void fill_stats(hs_stats_entry *e, const char *name, int64_t version, const hs_version_counter *c) {
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  e->version = version;
  if (!c) return;
  uint64_t ok = ld(&c->outcome[HS_OUTCOME_SUCCESS]);
  e->last_inference_ms = ld(&c->last_inference_ms);
  e->inference_count = e->execution_count = ok; /* no batching: one inference per execution */
  e->success = (hs_stat_duration){ok, ld(&c->success_ns)};
  e->fail = (hs_stat_duration){ld(&c->outcome[HS_OUTCOME_CLIENT_ERROR]) + ld(&c->outcome[HS_OUTCOME_SERVER_ERROR]) +
                                     ld(&c->outcome[HS_OUTCOME_REJECTED]),
                               ld(&c->fail_ns)};
  e->queue = (hs_stat_duration){ok, ld(&c->queue_ns)};
  e->compute_input = (hs_stat_duration){ok, ld(&c->compute_input_ns)};
  e->compute_infer = (hs_stat_duration){ok, ld(&c->compute_infer_ns)};
  e->compute_output = (hs_stat_duration){ok, ld(&c->compute_output_ns)};
}

int hs_triton_stats(hs_registry *reg, hs_model *m, int64_t version, hs_stats_entry **out, size_t *n, hs_error *err) {
  *out = NULL;
  *n = 0;
  size_t models = m ? 1 : hs_registry_num_models(reg);
  hs_model_status *st = malloc(sizeof *st);
  hs_stats_entry *v = calloc(models * HS_STATUS_HISTORY + 1, sizeof *v);
  if (!st || !v) {
    free(st);
    free(v);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  size_t k = 0;
  for (size_t i = 0; i < models; i++) {
    hs_model *mi = m ? m : hs_registry_model_at(reg, i);
    if (!mi) break; /* the model list grew meanwhile: the ones counted are listed */
    hs_model_status_get(mi, st);
    for (size_t h = 0; h < st->n; h++) {
      const hs_version_status *s = &st->history[h];
      if (!s->serving || (version >= 0 && s->version != version) || newest_entry(st, s->version) != s) continue;
      fill_stats(&v[k++], st->name, s->version, hs_model_version_counter(mi, s->version));
    }
  }
  free(st);
  if (version >= 0 && k == 0) {
    free(v);
    return hs_error_set(err, HS_NOT_FOUND, "model %s has no version %" PRId64 " loaded", m ? hs_model_name(m) : "?",
                        version);
  }
  *out = v;
  *n = k;
  return HS_OK;
}

const char *hs_triton_dtype(hs_dtype dt) {
  switch (dt) {
#define HS_TRITON_NAME(name, onnx, size, kserve, npy) \
  case HS_DT_##name: return "TYPE_" kserve;
    HS_DTYPE_MAP(HS_TRITON_NAME)
#undef HS_TRITON_NAME
    default: return "TYPE_INVALID";
  }
}

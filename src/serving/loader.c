/* loader.c - the version lifecycle on the loader thread: scan, admit, load, warm up, check, publish, retire.
 *
 * DESIGN
 * One loader thread per registry does every load; request threads never wait for it. It sleeps
 * on a condition variable until kicked (watcher on_change, SIGHUP, the repository API), then
 * scans the repository (hs_repo_scan checks signatures, manifests, names and sizes) and, per
 * model, loads each READY (version, fingerprint) it does not serve yet: memory admission, read once
 * (hs_repo_read_stream_start: the backend's load_stream reads model.onnx in pieces and parses each
 * while a thread of the read hashes them against the manifest behind it; a backend with only
 * load_buffer gets whole buffers from hs_repo_read_start, hashed beside it), the hash's verdict (a mismatch drops the model unrun and
 * has the repository check the version in full at once: refused once its files have settled,
 * rescanned while they still change), sessions, warm-up runs on every session (warmup.c), optional golden
 * check (golden.c). Each stage's CPU time on this thread (the hash thread's in the read stage) is
 * recorded. Memory
 * admission compares the scan's byte count of the version's files (hs_repo_version.total_bytes)
 * plus the resident set with the limit, and again after the backend load the sessions' planned
 * arenas (admit_sessions) before any is allocated. When fewer selected versions load than a
 * LATEST-N policy wants, the scan's fallbacks (older READY versions) are loaded in their place
 * (add_fallbacks). On shutdown (r->stopping) a load is given up between stages. A version that passes is
 * published together with the others the policy keeps, in one atomic swap (registry.c). Any
 * failure leaves the served view alone, logs one line with a reason code, counts it and records
 * it in the model's status; the same (version, fingerprint) is remembered and not retried, while
 * new content under the same version number is. A served version whose files the scan finds no
 * longer matching its manifest is retired when another version serves, else kept serving and
 * flagged (handle_mismatched; issue 16, class 7). In explicit control mode (registry.h) a model the
 * scan finds for the first time starts unloaded unless --load-model or a load request names it.
 * While some version is PENDING (still settling),
 * the loader rescans every 250 ms on its own.
 * Synchronous callers (index, load, unload; registry.c) bump scan_requested and wait on done_cv
 * for scan_done to catch up. The loader also frees retired versions (the graveyard: between loads,
 * and during a paced load at the pacer's waits, hs__loader_reap) and hands freed
 * pages back to the system (malloc_trim, after --trim-delay), at its own lower CPU priority.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "backends/plugins.h"
#include "backends/session.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/wblock.h"
#include "engine/engine.h"
#include "kernels/kshare.h"
#include "serving/batch.h"
#include "serving/golden.h"
#include "serving/pace.h"
#include "serving/registry_impl.h"
#include "serving/warmup.h"

/* ---- failure bookkeeping ---- */

static bool failed_before(const hs_model *m, int64_t version, const char *fp) {
  size_t n = m->n_failed < HS_FAILED_KEYS ? m->n_failed : HS_FAILED_KEYS;
  for (size_t i = 0; i < n; i++)
    if (m->failed[i].version == version && strcmp(m->failed[i].fingerprint, fp) == 0) return true;
  return false;
}

/* Logs, counts and records a failed (version, fingerprint); it will not be tried again. With
 * final false, the attempt is only shown in the status and logged: the next scan decides the
 * version (a load-time read that found bytes other than the manifest's, hs_repo_recheck). */
static void record_failure_as(hs_model *m, int64_t version, const char *fp, uint64_t generation,
                              const char *code, const char *message, double verify_ms, double load_ms,
                              double warmup_ms, const hs_version_status *cost, bool final) {
  bool verify = hs_repo_is_verify_reason(code);
  if (final) {
    size_t slot = m->n_failed++ % HS_FAILED_KEYS;
    m->failed[slot].version = version;
    snprintf(m->failed[slot].fingerprint, sizeof m->failed[slot].fingerprint, "%s", fp);
    hs_log(verify ? HS_LOG_ALERT : HS_LOG_ERROR, "model %s version %" PRId64 " failed: %s: %s", m->name,
           version, code, message);
    hs__count_reason(&m->metrics.load_failures, code);
    if (verify) hs__count_reason(&m->metrics.verify_failures, code);
  } else {
    HS_LOGW("model %s version %" PRId64 " not loaded: %s: %s; the next scan checks it in full", m->name,
            version, code, message);
  }
  /* not final: the entry stays LOADING (undecided) and the next verdict on this version replaces
   * it (take_generation) */
  hs_version_status st = {.version = version, .generation = generation,
                          .state = final ? HS_VS_FAILED : HS_VS_LOADING,
                          .verify_ms = verify_ms, .load_ms = load_ms, .warmup_ms = warmup_ms,
                          .first_request_ms = -1};
  if (!final) {
    m->recheck_version = version;
    m->recheck_generation = generation;
  }
  if (cost) {
    st.read_ms = cost->read_ms;
    st.read_cpu_ms = cost->read_cpu_ms;
    st.hash_cpu_ms = cost->hash_cpu_ms;
    st.hash_wait_ms = cost->hash_wait_ms;
    st.decode_ms = cost->decode_ms;
    st.decode_cpu_ms = cost->decode_cpu_ms;
    st.ring_wait_ms = cost->ring_wait_ms;
    st.gate_wait_ms = cost->gate_wait_ms;
    st.compile_ms = cost->compile_ms;
    st.compile_cpu_ms = cost->compile_cpu_ms;
    st.load_cpu_ms = cost->load_cpu_ms;
    st.warmup_cpu_ms = cost->warmup_cpu_ms;
    st.bytes_read = cost->bytes_read;
    st.bytes_hashed = cost->bytes_hashed;
    st.weights_shared = cost->weights_shared;
    st.weights_built = cost->weights_built;
    st.paced_ms = cost->paced_ms;
  }
  snprintf(st.fingerprint, sizeof st.fingerprint, "%s", fp);
  if (final) snprintf(st.reason, sizeof st.reason, "%s", code);
  snprintf(st.error, sizeof st.error, "%s%s", message, final ? "" : " (checking the version in full)");
  hs__status_record(m, &st);
}

/* The status generation for the next attempt on version: the one a not-final attempt left
 * LOADING (so its entry is replaced by the verdict), else a new one. */
static uint64_t take_generation(hs_model *m, int64_t version) {
  if (m->recheck_generation && m->recheck_version == version) {
    uint64_t g = m->recheck_generation;
    m->recheck_generation = 0;
    return g;
  }
  return m->next_generation++;
}

static void record_failure(hs_model *m, int64_t version, const char *fp, uint64_t generation,
                           const char *code, const char *message, double verify_ms, double load_ms,
                           double warmup_ms, const hs_version_status *cost) {
  record_failure_as(m, version, fp, generation, code, message, verify_ms, load_ms, warmup_ms, cost, true);
}

/* ---- warm weight memory ----
 *
 * The kernels' reordered weights come from base/wblock.c's pool of mapped blocks, which the loader
 * turns on here: a freed block stays mapped until a request of exactly its size (the same tensor of
 * the next retrained version) takes it, so from the second reload on a version's weights land in
 * the pages of the version two before it; the pool keeps at most `keep` free bytes, and the trim
 * empties it. In malloc's heaps those weights interleaved with the load's short-lived blocks, and the
 * holes a retired version left rarely fitted the next one's requests: the first reloads each faulted
 * a different 20-50 MB (bench/results/load-cpu-2026-12-07.md). The rest of a load (decoded tensors,
 * copies, the ring, arenas) still comes from malloc. On its own, glibc gives freed memory back to the
 * kernel at once in two cases: a chunk above the mmap threshold is unmapped when freed, and a heap
 * whose free top grows past the trim threshold is cut (MADV_DONTNEED). The next version then faults
 * in fresh, zeroed pages: that was the largest part of a reload's CPU (issue 13: 33% of a ResNet-50
 * load in the page-fault path). So the loader fixes both thresholds when it starts: chunks up to
 * 32 MiB (glibc's maximum) come from the heaps (hs_engine_prefer_heap), and a heap keeps up to one
 * version's worth of free pages (the largest memory_bytes a version has had, or what a load took
 * from the pool if more (pool_demand), at least glibc's default 128 KiB, at most 1 GiB; the pool's
 * limit is the same). A retiring version's buffers thus
 * stay resident, already faulted, and the next load reuses them. They are handed back (warm_pool_trim) --trim-delay after the last free (memory
 * admission trims at once when it would otherwise refuse a version), so RSS goes back to one
 * version once reloads stop.
 * Huge pages are not asked for the heaps (MADV_HUGEPAGE): glibc does that only through the
 * glibc.malloc.hugetlb tunable at process start, and with the kernel's default defrag setting a
 * cold load then stalled in compaction (docs/REPOSITORY.md, "Warm weight memory"); the pool's
 * blocks of 2 MiB or more are huge-page mappings (base/wblock.c). */
#define HS_WARM_KEEP_MIN ((size_t)128 << 10)
#define HS_WARM_KEEP_MAX ((size_t)1 << 30)

/* The allocator's settings are the process's: registries (one loader each) share them. */
static pthread_mutex_t g_warm_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t g_warm_keep; /* the trim threshold set last, under g_warm_mu */

/* What the next load of the model just loaded will take from the weight block pool, measured: the
 * blocks this version holds (the pool's bytes in use now beyond `used_before`, those in use when its
 * load began), which the one it replaces gives back when it retires, plus the free blocks its load
 * left (decoded tensors whose size no reordered weights had, plain copies), which the next load's
 * decoder takes again. A limit of only the version's memory_bytes kept too few: a retrained
 * ResNet-50 reload needed ~150 MB of blocks, the pool kept 109, and every reload (under
 * --trim-delay) unmapped the retiring version's seven largest blocks, 44 MB, and faulted them in
 * again in the next load (11.5k page faults each). */
static size_t pool_demand(size_t used_before) {
  size_t free_now, used_now;
  hs_wblock_stats(&free_now, &used_now);
  size_t held = used_now > used_before ? used_now - used_before : 0;
  return free_now > SIZE_MAX - held ? SIZE_MAX : free_now + held;
}

/* Keeps up to `keep` bytes of freed memory per heap resident (clamped as above); never lowers it. */
static void warm_pool_keep(size_t keep) {
  if (keep < HS_WARM_KEEP_MIN) keep = HS_WARM_KEEP_MIN;
  if (keep > HS_WARM_KEEP_MAX) keep = HS_WARM_KEEP_MAX;
  pthread_mutex_lock(&g_warm_mu);
  if (keep > g_warm_keep) {
    if (g_warm_keep == 0) hs_engine_prefer_heap(); /* weight-sized chunks from the heaps */
    if (mallopt(M_TRIM_THRESHOLD, (int)keep) == 1) g_warm_keep = keep;
    hs_wblock_keep(keep); /* kernels' weight blocks (base/wblock.h) */
  }
  pthread_mutex_unlock(&g_warm_mu);
}

/* Hands every free page back to the system (the session arena reloads kept, the pool's free blocks,
 * malloc_trim): the warm memory is gone. */
static void warm_pool_trim(hs_registry *r) {
  hs_engine_arena_trim();
  hs_wblock_trim();
  malloc_trim(0);
  atomic_store_explicit(&r->metrics.warm_pool_bytes, 0, memory_order_relaxed);
}

/* ---- memory admission ---- */

/* Whether estimate more bytes beside rss resident would pass the memory limit. */
static bool over_memory_limit(const hs_registry *r, size_t estimate, size_t rss) {
  return r->memory_limit != SIZE_MAX && (estimate > r->memory_limit || rss > r->memory_limit - estimate);
}

/* The second admission, after the backend has loaded the model (its weights are resident now) and
 * before any session exists: the sessions' planned memory must fit beside what is resident. A
 * session holds about what the model reports beyond its weights (memory_bytes minus the file bytes:
 * the scratch arena of the load-time shapes), so a tiny file with huge static shapes is refused
 * here, before gigabytes are allocated (issue 16, class 4). */
static int admit_sessions(hs_registry *r, const hs_version *v, size_t file_bytes, size_t instances,
                          hs_error *err) {
  size_t per_session = v->memory_bytes > file_bytes ? v->memory_bytes - file_bytes : 0;
  size_t need = per_session > SIZE_MAX / instances ? SIZE_MAX : per_session * instances;
  size_t rss = hs_process_rss_bytes();
  if (over_memory_limit(r, need, rss)) {
    warm_pool_trim(r); /* as in the first admission: pages retired versions freed go back first */
    rss = hs_process_rss_bytes();
  }
  if (!over_memory_limit(r, need, rss)) return HS_OK;
  return hs_error_set(err, HS_NO_MEMORY, "its %zu sessions plan %zu bytes (%zu each) beside %zu resident, over the "
                      "memory limit of %zu bytes", instances, need, per_session, rss, r->memory_limit);
}

/* ---- one load ---- */

static const hs_backend *pick_backend(const hs_model_config *cfg, hs_error *err) {
  if (cfg->backend[0] == '\0' || strcmp(cfg->backend, "onnx") == 0 || strcmp(cfg->backend, "onnx-cpu") == 0)
    return hs_backend_onnx_cpu();
  /* A plug-in by name, only from the operator's --backend-dir, never a path the repository names. */
  const hs_backend *b = NULL;
  if (hs_backend_load_plugin(cfg->backend, &b, err) != HS_OK) return NULL;
  return b;
}

/* Checks a declared signature (config.json) against the model's own. */
static int check_declared(const hs_version *v, const hs_model_config *cfg, hs_error *err) {
  for (size_t i = 0; i < cfg->n_inputs; i++) {
    bool found = false;
    for (size_t k = 0; k < v->backend->num_inputs(v->bm); k++) {
      const hs_io_desc *d = v->backend->input(v->bm, k);
      if (strcmp(d->name, cfg->inputs[i].name) != 0) continue;
      found = true;
      if (cfg->inputs[i].dtype != HS_DT_UNDEFINED && cfg->inputs[i].dtype != d->dtype)
        return hs_error_set(err, HS_INVALID_ARGUMENT, "config.json input %s: datatype %s, the model has %s",
                            d->name, hs_dtype_kserve_name(cfg->inputs[i].dtype), hs_dtype_kserve_name(d->dtype));
    }
    if (!found)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "config.json names input %s, which the model lacks",
                          cfg->inputs[i].name);
  }
  return HS_OK;
}

static double ms_since(uint64_t t0) { return (double)(hs_now_ns() - t0) / 1e6; }

/* Records the Conv weight bytes this load (on this thread) shared with a live version and built. */
static void count_shared(hs_model *m, hs_version_status *cost) {
  hs_kshare_stats ks;
  hs_kshare_thread_stats(&ks, 1);
  cost->weights_shared = ks.hit_bytes;
  cost->weights_built = ks.build_bytes;
  atomic_fetch_add_explicit(&m->metrics.reload_weights_shared, ks.hit_bytes, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->metrics.reload_weights_built, ks.build_bytes, memory_order_relaxed);
}

/* Adds a stage's CPU time on this thread (since cpu0) to the model's counters and to cost; returns now.
 * (oneDNN worker threads a stage starts, with threads > 1, are not in it.) */
static uint64_t account_stage(hs_model *m, int stage, uint64_t cpu0, double *cost_ms) {
  uint64_t now = hs_thread_cpu_ns(), d = now > cpu0 ? now - cpu0 : 0;
  atomic_fetch_add_explicit(&m->metrics.reload_cpu_ns[stage], d, memory_order_relaxed);
  *cost_ms = (double)d / 1e6;
  return now;
}

/* The read handed to the backend, and when the backend's decode ended (bytes_done). */
typedef struct read_marks {
  hs_repo_bytes *bytes;
  uint64_t decoded_ns, decoded_cpu_ns; /* 0 until bytes_done */
} read_marks;

/* hs_backend_options.bytes_done: the backend reads the version's bytes no more (they go now, or
 * when the hash running beside the load is done with them): its decode is over, its compile next. */
static void bytes_done(void *user) {
  read_marks *rm = user;
  rm->decoded_ns = hs_now_ns();
  rm->decoded_cpu_ns = hs_thread_cpu_ns();
  hs_repo_bytes_release(rm->bytes);
}

/* hs_backend_options.open_file: an external data file streamed from the read (hs_repo_open_file). */
static int open_file(void *user, const char *path, const struct hs_backend_stream **out, hs_error *err) {
  return hs_repo_open_file(user, path, out, err);
}

/* Reads the version's files once, checks those bytes and has the backend load them. A backend with
 * load_stream reads model.onnx as a stream of pieces that a thread of the read hashes behind the
 * decoder (hs_repo_read_stream_start): the whole file is never held, and each piece is hashed
 * and parsed from the same buffer; for the built-in engine the other files (external data) come as
 * streams too (hs_repo_read_stream_files_start, hs_backend_options.open_file), read once and hashed
 * by the same thread behind the decoder, so no file of the version is held whole. A backend with only load_buffer gets whole buffers, hashed on a
 * thread of their own (hs_repo_read_start) while it decodes and compiles them. Either way the
 * verdict is awaited here, before anything built from the bytes runs (warm-up included), and a
 * mismatch fails the load. A backend without load_buffer (an ABI 1 plug-in, or
 * one that opts out) gets the path after the check instead: it reads the files again, so for it
 * the check covers the files as they were just before the load, not the bytes it reads
 * (docs/REPOSITORY.md, "Read once"). The read's CPU time, the hash thread's included, is accounted
 * here; *cpu_after_read is where the load stage's starts. On failure *code names the reason. */
static int read_and_load_as(hs_registry *r, hs_model *m, const hs_repo_version *rv, const char *model_dir,
                            hs_version *v, const hs_backend_options *bo, bool may_stream_files,
                            hs_version_status *cost, uint64_t *cpu_after_read, const char **code,
                            char code_buf[32], hs_error *err) {
  uint64_t cpu = hs_thread_cpu_ns();
  hs_repo_bytes *bytes = NULL;
  bool stream = v->backend->load_stream != NULL;
  /* the other files (external data) streamed too, through hs_backend_options.open_file: only for a
   * backend known to read that field (ABI 3.1); a plug-in built against 3.0 gets them whole */
  bool stream_files = may_stream_files && stream && v->backend == hs_backend_onnx_cpu();
  /* only with load_stream or load_buffer are the bytes hashed the bytes loaded */
  bool overlap = stream || v->backend->load_buffer != NULL;
  int rc = stream_files ? hs_repo_read_stream_files_start(model_dir, rv, r->opts.require_signature, r->keys, &bytes,
                                                          code_buf, err)
           : stream  ? hs_repo_read_stream_start(model_dir, rv, r->opts.require_signature, r->keys, &bytes, code_buf, err)
           : overlap ? hs_repo_read_start(model_dir, rv, r->opts.require_signature, r->keys, &bytes, code_buf, err)
                     : hs_repo_read_version(model_dir, rv, r->opts.require_signature, r->keys, &bytes, code_buf, err);
  cpu = account_stage(m, HS_STAGE_READ, cpu, &cost->read_cpu_ms);
  *cpu_after_read = cpu;
  if (rc != HS_OK) {
    if (code_buf[0]) *code = code_buf;
    return rc;
  }
  cost->read_ms = bytes->read_ms;
  cost->bytes_read = bytes->bytes_read;
  atomic_fetch_add_explicit(&m->metrics.reload_bytes_read, bytes->bytes_read, memory_order_relaxed);
  if (overlap) {
    hs_backend_file *files = calloc(bytes->n_files ? bytes->n_files : 1, sizeof *files);
    if (!files) {
      rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
    } else {
      for (size_t i = 0; i < bytes->n_files; i++)
        files[i] = (hs_backend_file){bytes->files[i].path, bytes->files[i].data, bytes->files[i].len};
      /* the file bytes go as soon as the backend has decoded them, before it compiles: the
       * kernels' weights then reuse their pages, and the load's peak holds one of the two */
      hs_backend_options o = *bo;
      read_marks rmk = {.bytes = bytes};
      o.bytes_done = bytes_done;
      o.bytes_done_user = &rmk;
      uint64_t tl = hs_now_ns(), cl = hs_thread_cpu_ns();
      if (stream_files) {
        o.open_file = open_file;
        o.open_file_user = bytes;
      }
      /* the built-in engine's decoded tensors are weight blocks it frees on this thread and never
       * writes: it may compile while the hash still reads the payloads read into them, each freed
       * only once hashed (hs_repo_bytes_gate_frees); the verdict is awaited below either way */
      bool gate = stream && v->backend == hs_backend_onnx_cpu();
      if (gate) hs_repo_bytes_gate_frees(bytes, true);
      rc = stream ? v->backend->load_stream(bytes->stream, files, bytes->n_files, &o, &v->bm, err)
                  : v->backend->load_buffer(bytes->model->data, bytes->model->len, files, bytes->n_files, &o, &v->bm,
                                            err);
      if (gate) hs_repo_bytes_gate_frees(bytes, false);
      free(files);
      if (rc != HS_OK) hs_error_prefix(err, "loading %s", rv->model_path);
      if (rmk.decoded_ns) { /* the backend's decode, then its compile (kernels, plans) */
        cost->decode_ms = (double)(rmk.decoded_ns - tl) / 1e6;
        cost->decode_cpu_ms = (double)(rmk.decoded_cpu_ns - cl) / 1e6;
        cost->compile_ms = ms_since(rmk.decoded_ns);
        cost->compile_cpu_ms = (double)(hs_thread_cpu_ns() - rmk.decoded_cpu_ns) / 1e6;
      }
    }
  } else {
    rc = v->backend->load(rv->model_path, bo, &v->bm, err);
  }
  if (rc != HS_OK) v->bm = NULL;
  /* the verdict on the bytes the backend just parsed: a mismatch outranks a load error (the file
   * changed; the next scan decides it again), and a model built from them is dropped unrun */
  hs_error herr;
  hs_error_clear(&herr);
  uint64_t tv = hs_now_ns();
  int vrc = hs_repo_bytes_check(bytes, code_buf, &herr);
  cost->hash_wait_ms = ms_since(tv); /* what the hash still added to the load's wall time */
  cost->ring_wait_ms = bytes->ring_wait_ms;
  cost->gate_wait_ms = bytes->gate_wait_ms;
  if (vrc != HS_OK) {
    *err = herr;
    *code = code_buf;
    if (v->bm) v->backend->free_model(v->bm);
    v->bm = NULL;
    rc = HS_VERIFY;
  }
  cost->bytes_hashed = bytes->bytes_hashed;
  atomic_fetch_add_explicit(&m->metrics.reload_bytes_hashed, bytes->bytes_hashed, memory_order_relaxed);
  if (bytes->hash_cpu_ms > 0) { /* the hash thread's CPU time is the read stage's */
    cost->read_cpu_ms += bytes->hash_cpu_ms;
    cost->hash_cpu_ms = bytes->hash_cpu_ms;
    atomic_fetch_add_explicit(&m->metrics.reload_cpu_ns[HS_STAGE_READ], (uint64_t)(bytes->hash_cpu_ms * 1e6),
                              memory_order_relaxed);
  }
  hs_repo_bytes_free(bytes); /* the backend copied what it keeps */
  return rc;
}

/* read_and_load_as with external data streamed where the backend can take it. A model whose
 * external data lies outside its main graph's initializers (a subgraph's weights, a Constant's)
 * cannot be streamed (the backend says HS_NEEDS_WHOLE_FILES): it is read, hashed and loaded once more
 * with its files whole, so such a model costs a second read but loads as it did before streaming. */
static int read_and_load(hs_registry *r, hs_model *m, const hs_repo_version *rv, const char *model_dir,
                         hs_version *v, const hs_backend_options *bo, hs_version_status *cost,
                         uint64_t *cpu_after_read, const char **code, char code_buf[32], hs_error *err) {
  if (r->opts.test_before_read) r->opts.test_before_read(r->opts.test_user, m->name, rv->version, rv->dir);
  int rc = read_and_load_as(r, m, rv, model_dir, v, bo, true, cost, cpu_after_read, code, code_buf, err);
  if (rc == HS_NEEDS_WHOLE_FILES) {
    HS_LOGI("model '%s' version %lld: %s; loading it again with whole files", m->name, (long long)rv->version,
            err->message);
    hs_error_clear(err);
    code_buf[0] = '\0';
    *code = "load_error";
    rc = read_and_load_as(r, m, rv, model_dir, v, bo, false, cost, cpu_after_read, code, code_buf, err);
  }
  return rc;
}

/* Loads, warms and checks one version. On success returns a version holding one (loader)
 * reference; on failure records it and returns NULL. When the load-time read found bytes other
 * than the manifest's (the scan only checked names and sizes: defer_content_check), the failure is
 * not final: the next scan, soon (*pending), checks the version in full and decides it. */
static hs_version *load_version(hs_registry *r, hs_model *m, const hs_repo_model *rm,
                                const hs_repo_version *rv, double verify_ms, bool *pending) {
  const hs_model_config *cfg = &rm->config;
  uint64_t generation = take_generation(m, rv->version);
  r->loaded_since_scan = true;
  hs_error err;
  hs_error_clear(&err);
  const char *code = "load_error";
  char code_buf[32] = "";
  double load_ms = 0, warm_ms = 0;
  hs_version_status cost = {0};
  hs_kshare_stats shared_before;
  hs_kshare_thread_stats(&shared_before, 1); /* this thread's counters now count this load */
  uint64_t t0 = hs_now_ns(), cpu = 0;
  struct rusage ru0; /* the process's page faults from here to ready: fresh pages the load needed */
  getrusage(RUSAGE_SELF, &ru0);
  char model_dir[HS_PATH_MAX]; /* the folder holding the version: the bound of its symlinks */
  snprintf(model_dir, sizeof model_dir, "%s/%s", r->root, m->name);

  hs_version_status st = {.version = rv->version, .generation = generation, .state = HS_VS_LOADING,
                          .verify_ms = verify_ms, .first_request_ms = -1};
  snprintf(st.fingerprint, sizeof st.fingerprint, "%s", rv->fingerprint);
  hs__status_record(m, &st);
  hs_pacer pacer; /* while requests are in flight, this load keeps to --loader-pace */
  hs_pacer_begin(&pacer, r, r->opts.loader_pace);

  hs_version *v = calloc(1, sizeof *v);
  if (!v) {
    hs_error_set(&err, HS_NO_MEMORY, "out of memory");
    goto fail;
  }
  atomic_init(&v->refs, 1);
  atomic_fetch_add(&m->versions_alive, 1); /* hs__version_free takes it back */
  v->reg = r;
  v->model = m;
  v->version = rv->version;
  v->generation = generation;
  snprintf(v->fingerprint, sizeof v->fingerprint, "%s", rv->fingerprint);
  pthread_mutex_init(&v->pool_mu, NULL);
  pthread_cond_init(&v->pool_cv, NULL);

  /* memory admission: the new version must fit beside what is running */
  size_t estimate = rv->total_bytes > SIZE_MAX ? SIZE_MAX : (size_t)rv->total_bytes; /* the scan summed the files */
  size_t rss = hs_process_rss_bytes();
  if (over_memory_limit(r, estimate, rss)) {
    /* RSS may include pages freed by retired versions that wait for --trim-delay: hand them back
     * and look again, so a deferred trim never refuses a version that fits */
    warm_pool_trim(r);
    rss = hs_process_rss_bytes();
  }
  if (over_memory_limit(r, estimate, rss)) {
    code = "no_memory";
    hs_error_set(&err, HS_NO_MEMORY,
                 "needs about %zu bytes beside %zu resident, over the memory limit of %zu bytes", estimate, rss,
                 r->memory_limit);
    goto fail;
  }

  v->backend = pick_backend(cfg, &err);
  if (!v->backend) goto fail;
  hs_backend_options bo = {.threads = cfg->threads > 0 ? cfg->threads : r->opts.threads,
                           .max_run_bytes = r->max_request_memory};
  v->threads = bo.threads;
  size_t pool_used0;
  hs_wblock_stats(NULL, &pool_used0);
  /* the server's first load of a model this size: keep what it frees for its own later requests */
  warm_pool_keep(estimate);
  if (read_and_load(r, m, rv, model_dir, v, &bo, &cost, &cpu, &code, code_buf, &err) != HS_OK) goto fail;
  if (atomic_load(&r->stopping)) { /* shutting down: do not go on with a load nobody will serve */
    code = "shutting_down";
    hs_error_set(&err, HS_UNAVAILABLE, "the server is shutting down");
    goto fail;
  }
  v->memory_bytes = v->backend->memory_bytes ? v->backend->memory_bytes(v->bm) : estimate;
  /* the next version may reuse this one's pages once it retires, and what its load left free */
  size_t demand = pool_demand(pool_used0);
  warm_pool_keep(demand > v->memory_bytes ? demand : v->memory_bytes);
  v->counted_live = true;
  atomic_fetch_add(&r->metrics.versions_live, 1);
  atomic_fetch_add(&r->metrics.memory_bytes, (int_least64_t)v->memory_bytes);
  if (check_declared(v, cfg, &err) != HS_OK) goto fail;
  if (cfg->dynamic_batching) { /* a version whose batch dimension is fixed refuses the config */
    if (hs_batch_check_signature(v, &err) != HS_OK) {
      code = "bad_config";
      hs_error_prefix(&err, "config.json dynamic_batching");
      goto fail;
    }
    if (hs_batcher_create(v, m->name, cfg, &m->metrics.batch, &v->batcher, &err) != HS_OK) goto fail;
  }

  size_t instances = (size_t)(cfg->instances > 0 ? cfg->instances : r->opts.instances);
  if (instances == 0) instances = 1;
  if (instances > 64) instances = 64;
  if (admit_sessions(r, v, estimate, instances, &err) != HS_OK) {
    code = "no_memory";
    goto fail;
  }
  v->sessions = calloc(instances, sizeof *v->sessions);
  v->free_list = calloc(instances, sizeof *v->free_list);
  if (!v->sessions || !v->free_list) {
    hs_error_set(&err, HS_NO_MEMORY, "out of memory for sessions");
    goto fail;
  }
  for (size_t i = 0; i < instances; i++) {
    if (v->backend->session_create(v->bm, &v->sessions[i], &err) != HS_OK) {
      v->sessions[i] = NULL;
      goto fail;
    }
    v->n_sessions++;
    v->free_list[v->n_free++] = v->sessions[i];
  }
  if (atomic_load(&r->stopping)) {
    code = "shutting_down";
    hs_error_set(&err, HS_UNAVAILABLE, "the server is shutting down");
    goto fail;
  }
  load_ms = ms_since(t0);
  cpu = account_stage(m, HS_STAGE_LOAD, cpu, &cost.load_cpu_ms);
  count_shared(m, &cost);
  uint64_t tw = hs_now_ns();
  hs_trace_stage(r->trace, "load", m->name, v->version, t0, tw);

  code = "warmup_error";
  if (hs_warmup_run(v->backend, v->bm, v->sessions, v->n_sessions, cfg, rv->dir, &err) != HS_OK) goto fail;
  char golden_dir[HS_PATH_MAX + 8];
  if (hs_golden_wanted(cfg, rv->dir, golden_dir, sizeof golden_dir)) {
    code = "golden_mismatch";
    if (hs_golden_check(v->backend, v->bm, v->sessions[0], golden_dir, cfg->golden_rtol, cfg->golden_atol,
                        &err) != HS_OK)
      goto fail;
  }
  for (size_t i = 0; i < v->n_sessions; i++) /* their arenas back to the pool the version shares */
    hs_backend_session_idle(v->backend, v->sessions[i]);
  warm_ms = ms_since(tw);
  cpu = account_stage(m, HS_STAGE_WARMUP, cpu, &cost.warmup_cpu_ms);
  hs_trace_stage(r->trace, "warmup", m->name, v->version, tw, hs_now_ns());

  cost.paced_ms = hs_pacer_end(&pacer, cost.hash_cpu_ms, cost.bytes_hashed);
  v->counter = hs__version_counter(m, v->version);
  atomic_fetch_add(&m->metrics.loads, 1);
  double total_ms = ms_since(t0) + verify_ms;
  hs_histogram_observe(&m->metrics.load, (uint64_t)(total_ms * 1e6));
  hs__status_set_times(m, generation, load_ms, warm_ms); /* stays LOADING until published */
  hs__status_set_cost(m, generation, &cost);
  struct rusage ru1;
  getrusage(RUSAGE_SELF, &ru1);
  HS_LOGI("model %s version %" PRId64 " ready in %.0f ms (verify %.0f, load %.0f, warm-up %.0f); loader CPU ms: "
          "read %.1f, load %.1f, warm-up %.1f; bytes read %" PRIu64 ", hashed %" PRIu64
          " (hash CPU ms %.1f beside the load, then waited for %.1f ms); decode %.1f ms (CPU %.1f, waited for"
          " the hash %.1f), compile %.1f ms (CPU %.1f, frees waited for the hash %.1f); paced %.0f ms; page faults %ld",
          m->name, v->version, total_ms, verify_ms, load_ms, warm_ms, cost.read_cpu_ms, cost.load_cpu_ms,
          cost.warmup_cpu_ms, cost.bytes_read, cost.bytes_hashed, cost.hash_cpu_ms, cost.hash_wait_ms,
          cost.decode_ms, cost.decode_cpu_ms, cost.ring_wait_ms, cost.compile_ms, cost.compile_cpu_ms, cost.gate_wait_ms,
          cost.paced_ms, ru1.ru_minflt - ru0.ru_minflt);
  return v;

fail:
  cost.paced_ms = hs_pacer_end(&pacer, cost.hash_cpu_ms, cost.bytes_hashed);
  if (load_ms == 0) {
    load_ms = ms_since(t0);
    if (cpu) account_stage(m, HS_STAGE_LOAD, cpu, &cost.load_cpu_ms);
  } else {
    warm_ms = ms_since(t0) - load_ms;
    account_stage(m, HS_STAGE_WARMUP, cpu, &cost.warmup_cpu_ms);
  }
  /* replaces the LOADING entry of this generation */
  /* The bytes read differ from the manifest: a copy still in progress, or a settled mismatch. The
   * version is checked in full now, so its verdict comes in this scan even when a newer version
   * arrives before the next one: final once INVALID (under the fingerprint later scans report),
   * undecided (LOADING, rescanned) while its files still change or when they match again. */
  bool recheck = false;
  const char *fp = rv->fingerprint;
  hs_repo_version now;
  if (code == code_buf && strcmp(code_buf, "manifest_mismatch") == 0) {
    hs_repo_recheck(r->repo, m->name, model_dir, rv, &now);
    if (now.state == HS_VERSION_INVALID) {
      fp = now.fingerprint;
      snprintf(code_buf, sizeof code_buf, "%s", now.reason_code[0] ? now.reason_code : "manifest_mismatch");
      hs_error_set(&err, HS_VERIFY, "%s", now.reason);
    } else {
      recheck = true;
      *pending = true;
    }
  }
  record_failure_as(m, rv->version, fp, generation, code, err.message, verify_ms, load_ms, warm_ms, &cost,
                    !recheck);
  if (v) hs__version_free(v);
  return NULL;
}

/* ---- one scan ---- */

static bool list_has_version(hs_version *const *list, size_t n, int64_t version) {
  for (size_t i = 0; i < n; i++)
    if (list[i]->version == version) return true;
  return false;
}

/* Adds fallback versions (rm->fallbacks, newest first) to next[0..n) until it holds the policy's N
 * versions: one already served is kept, one that failed before is skipped, another is loaded (and
 * also put in fresh). Returns the new count. */
static size_t add_fallbacks(hs_registry *r, hs_model *m, const hs_repo_model *rm, double verify_ms,
                            hs_version **next, size_t n, size_t cap, hs_version **fresh, size_t *n_fresh,
                            bool *pending) {
  if (rm->config.policy != HS_POLICY_LATEST) return n;
  hs_view *old = atomic_load(&m->view);
  for (size_t i = 0; i < rm->n_fallbacks && n < (size_t)rm->config.latest_n && n < cap; i++) {
    const hs_repo_version *rv = &rm->fallbacks[i];
    if (list_has_version(next, n, rv->version) || failed_before(m, rv->version, rv->fingerprint)) continue;
    hs_version *same = NULL;
    for (size_t k = 0; k < old->n; k++)
      if (old->v[k]->version == rv->version && strcmp(old->v[k]->fingerprint, rv->fingerprint) == 0)
        same = old->v[k];
    if (same) {
      next[n++] = same;
      continue;
    }
    hs_version *v = load_version(r, m, rm, rv, verify_ms, pending);
    if (!v) continue;
    HS_LOGW("model %s: serving older version %" PRId64 " because a newer one its policy selects does not load",
            m->name, v->version);
    next[n++] = v;
    fresh[(*n_fresh)++] = v;
  }
  return n;
}

/* The scan's verdict on version when it found its files no longer matching their manifest
 * (INVALID manifest_mismatch), else NULL. For a version being served this means its files changed
 * after they were verified: the scan hashes a READY version's files in full whenever their stat
 * keys change (scan.c; issue 16, class 7). */
static const hs_repo_version *mismatched(const hs_repo_model *rm, int64_t version) {
  for (size_t i = 0; i < rm->n_versions; i++)
    if (rm->versions[i].version == version && rm->versions[i].state == HS_VERSION_INVALID &&
        strcmp(rm->versions[i].reason_code, "manifest_mismatch") == 0)
      return &rm->versions[i];
  return NULL;
}

static bool view_serves(const hs_view *view, int64_t version) {
  for (size_t k = 0; k < view->n; k++)
    if (view->v[k]->version == version) return true;
  return false;
}

/* Served versions of old whose files no longer match their manifest (class 7): when next[0..n)
 * holds another version, they are left out of it, so the swap retires them as an unload does
 * (requests in flight finish on them); when nothing else would serve, they stay in next, flagged
 * in their status entry and counted in hotserve_model_mismatched_versions_serving. Either way the
 * mismatch is logged (ALERT), counted as a verification failure and remembered, once. Returns the
 * new count. */
static size_t handle_mismatched(hs_model *m, const hs_repo_model *rm, const hs_view *old, double verify_ms,
                                hs_version **next, size_t n) {
  bool others = n > 0;
  int64_t flagged = 0;
  for (size_t k = 0; k < old->n; k++) {
    hs_version *v = old->v[k];
    const hs_repo_version *bad = mismatched(rm, v->version);
    if (!bad) continue;
    bool first = !failed_before(m, bad->version, bad->fingerprint);
    char msg[400];
    snprintf(msg, sizeof msg, "the files of this served version no longer match its manifest (%.200s); %s",
             bad->reason, others ? "retired: another version serves" : "still served, flagged: no other version can serve");
    if (others) {
      if (first)
        record_failure(m, bad->version, bad->fingerprint, take_generation(m, bad->version), "manifest_mismatch", msg,
                       verify_ms, 0, 0, NULL);
      continue;
    }
    next[n++] = v;
    flagged++;
    if (!first) continue;
    size_t slot = m->n_failed++ % HS_FAILED_KEYS; /* counted and logged once, as record_failure does */
    m->failed[slot].version = bad->version;
    snprintf(m->failed[slot].fingerprint, sizeof m->failed[slot].fingerprint, "%s", bad->fingerprint);
    hs_log(HS_LOG_ALERT, "model %s version %" PRId64 " failed: manifest_mismatch: %s", m->name, v->version, msg);
    hs__count_reason(&m->metrics.load_failures, "manifest_mismatch");
    hs__count_reason(&m->metrics.verify_failures, "manifest_mismatch");
    hs__status_flag(m, v->generation, "manifest_mismatch", msg);
    v->flagged = true;
  }
  atomic_store(&m->metrics.mismatched_serving, flagged);
  return n;
}

static void process_model(hs_registry *r, hs_model *m, const hs_repo_model *rm, double verify_ms,
                          bool *pending) {
  bool any_ready = false;
  for (size_t i = 0; i < rm->n_versions; i++)
    if (rm->versions[i].state == HS_VERSION_READY) any_ready = true;
  atomic_store(&m->has_ready_on_disk, any_ready);
  if (atomic_load(&m->unloaded)) return;

  hs_view *old = atomic_load(&m->view); /* only this thread replaces it */
  if (rm->config_status != HS_OK) {
    atomic_store(&m->all_selected_serving, false);
    if (strcmp(m->config_error_seen, rm->config_error) != 0) {
      snprintf(m->config_error_seen, sizeof m->config_error_seen, "%s", rm->config_error);
      HS_LOGE("model %s: config.json refused, keeping what is served: %s", m->name, rm->config_error);
      hs__count_reason(&m->metrics.load_failures, "bad_config");
    }
    return;
  }
  m->config_error_seen[0] = '\0';
  pthread_mutex_lock(&m->status_mu); /* GET /v2/models/{m}/config reads it */
  m->config = rm->config;
  pthread_mutex_unlock(&m->status_mu);

  size_t cap = rm->n_versions + rm->n_fallbacks + old->n;
  hs_version **next = calloc(cap ? cap : 1, sizeof *next);
  hs_version **fresh = calloc(cap ? cap : 1, sizeof *fresh); /* loader references to drop */
  if (!next || !fresh) {
    free(next);
    free(fresh);
    HS_LOGE("model %s: out of memory planning a reload", m->name);
    return;
  }
  size_t n = 0, n_fresh = 0;
  bool all_ok = true;
  for (size_t i = 0; i < rm->n_versions; i++) {
    const hs_repo_version *rv = &rm->versions[i];
    if (rv->state == HS_VERSION_PENDING) {
      *pending = true;
      all_ok = false;
      continue;
    }
    hs_version *same = NULL;
    for (size_t k = 0; k < old->n; k++)
      if (old->v[k]->version == rv->version && strcmp(old->v[k]->fingerprint, rv->fingerprint) == 0)
        same = old->v[k];
    if (same) {
      if (same->flagged) { /* its files match their manifest again */
        same->flagged = false;
        hs__status_flag(m, same->generation, "", "");
      }
      next[n++] = same;
      continue;
    }
    if (view_serves(old, rv->version) && mismatched(rm, rv->version)) {
      all_ok = false; /* decided below (handle_mismatched), once it is known what else serves */
      continue;
    }
    if (failed_before(m, rv->version, rv->fingerprint)) {
      all_ok = false;
      continue;
    }
    if (rv->state == HS_VERSION_INVALID) {
      record_failure(m, rv->version, rv->fingerprint, take_generation(m, rv->version),
                     rv->reason_code[0] ? rv->reason_code : "bad_manifest", rv->reason, verify_ms, 0, 0, NULL);
      all_ok = false;
      continue;
    }
    if (atomic_load(&r->stopping)) { /* shutting down: no new loads */
      all_ok = false;
      continue;
    }
    hs_version *v = load_version(r, m, rm, rv, verify_ms, pending);
    if (!v) {
      all_ok = false;
      continue;
    }
    next[n++] = v;
    fresh[n_fresh++] = v;
  }
  /* Something selected could not be served (yet): keep serving what was, so a failure or a
   * half-copied version never takes a served version away. */
  if (!all_ok)
    for (size_t k = 0; k < old->n; k++)
      if (!list_has_version(next, n, old->v[k]->version) && !mismatched(rm, old->v[k]->version))
        next[n++] = old->v[k];
  /* Still fewer than the policy's N (a start-up, or nothing served before): the newest older
   * versions that load take the place of the ones that failed, the same "what worked stays" rule. */
  if (!all_ok) n = add_fallbacks(r, m, rm, verify_ms, next, n, cap, fresh, &n_fresh, pending);
  /* served versions whose files changed under their manifest: retired, or kept flagged */
  n = handle_mismatched(m, rm, old, verify_ms, next, n);

  /* gray release: may open, restart or end a rollout window, keeping the stable version (rollout.c) */
  hs__rollout_plan(m, &rm->config.rollout, old, next, &n, cap);

  bool changed = n != old->n;
  for (size_t k = 0; !changed && k < n; k++) {
    bool found = false;
    for (size_t j = 0; j < old->n; j++)
      if (old->v[j] == next[k]) found = true;
    if (!found) changed = true;
  }
  atomic_store(&m->all_selected_serving, all_ok);
  if (changed) {
    uint64_t ts = hs_now_ns();
    hs__registry_publish(m, next, n);
    int64_t newest = -1; /* the version the swap is about, in the trace */
    for (size_t k = 0; k < n; k++)
      if (next[k]->version > newest) newest = next[k]->version;
    hs_trace_stage(r->trace, "swap", m->name, newest, ts, hs_now_ns());
  }
  for (size_t k = 0; k < n_fresh; k++) hs_version_release(fresh[k]);
  free(next);
  free(fresh);
}

static void apply_ops(hs_registry *r, hs_model_op *ops) {
  for (hs_model_op *op = ops; op; op = op->next) {
    hs_model *m = hs_registry_find(r, op->name);
    if (!m) continue;
    if (op->unload) {
      atomic_store(&m->unloaded, true);
      hs__registry_publish(m, NULL, 0);
      atomic_store(&m->metrics.mismatched_serving, 0); /* nothing serves, flagged or not */
      HS_LOGI("model %s unloaded", m->name);
    } else {
      atomic_store(&m->unloaded, false);
      atomic_store(&m->never_loaded, false);
      m->n_failed = 0; /* an explicit load retries content that failed before */
    }
  }
}

/* Explicit control mode: whether a model the scan finds for the first time is loaded: when a load
 * request in ops names it, or during the start-up scan when --load-model names it (or "*"). */
static bool explicit_loads(const hs_registry *r, const hs_model_op *ops, const char *name) {
  for (const hs_model_op *op = ops; op; op = op->next)
    if (!op->unload && strcmp(op->name, name) == 0) return true;
  if (atomic_load(&r->startup_done)) return false;
  for (size_t i = 0; i < r->opts.n_load_models; i++)
    if (strcmp(r->opts.load_models[i], "*") == 0 || strcmp(r->opts.load_models[i], name) == 0) return true;
  return false;
}

/* After the start-up scan in explicit control mode: names given to --load-model that it did not find. */
static void warn_missing_start_models(hs_registry *r) {
  for (size_t i = 0; i < r->opts.n_load_models; i++) {
    const char *name = r->opts.load_models[i];
    if (strcmp(name, "*") != 0 && !hs_registry_find(r, name))
      HS_LOGW("--load-model %s: the repository has no such model; a load request loads it once it appears", name);
  }
}

/* One rescan: returns true when some version is still pending (settling). ops: the load and unload
 * requests this scan follows (explicit control mode: a model they load is loaded when first found). */
static bool scan_once(hs_registry *r, const hs_model_op *ops) {
  hs_error err;
  hs_error_clear(&err);
  hs_repo_snapshot *snap = NULL;
  uint64_t t0 = hs_now_ns();
  if (hs_repo_scan(r->repo, &snap, &err) != HS_OK) {
    if (strcmp(r->last_scan_error, err.message) != 0) /* once per distinct cause, not every poll */
      HS_LOGE("repository scan failed, keeping what is served: %s", err.message);
    snprintf(r->last_scan_error, sizeof r->last_scan_error, "%s", err.message);
    return false;
  }
  if (r->last_scan_error[0]) HS_LOGI("repository readable again");
  r->last_scan_error[0] = '\0';
  double verify_ms = ms_since(t0);
  hs_trace_stage(r->trace, "scan", "", -1, t0, hs_now_ns());
  bool pending = false;
  hs_model_array *a = atomic_load(&r->models);
  for (size_t i = 0; a && i < a->n; i++) a->m[i]->seen_in_scan = false;
  for (size_t i = 0; i < snap->n_models; i++) {
    const hs_repo_model *rm = &snap->models[i];
    hs_model *m = hs_registry_find(r, rm->name);
    if (!m) m = hs__registry_add_model(r, rm->name, r->opts.explicit_control && !explicit_loads(r, ops, rm->name));
    if (!m) {
      HS_LOGE("model %s: out of memory adding it", rm->name);
      continue;
    }
    m->seen_in_scan = true;
    process_model(r, m, rm, verify_ms, &pending);
  }
  /* models whose folder disappeared stop serving; once their versions are freed they are forgotten
   * (no longer listed, in /metrics or in memory), so names that come and go do not pile up */
  a = atomic_load(&r->models);
  hs_model **gone = calloc(a && a->n ? a->n : 1, sizeof *gone);
  size_t n_gone = 0;
  for (size_t i = 0; a && i < a->n; i++) {
    hs_model *m = a->m[i];
    atomic_store(&m->in_repo, m->seen_in_scan);
    if (m->seen_in_scan) continue;
    atomic_store(&m->has_ready_on_disk, false);
    if (atomic_load(&m->view)->n) {
      HS_LOGI("model %s left the repository; unloading it", m->name);
      hs__registry_publish(m, NULL, 0);
      atomic_store(&m->metrics.mismatched_serving, 0);
    }
    if (r->opts.explicit_control && !atomic_load(&m->unloaded)) { /* should it come back: only when asked */
      atomic_store(&m->never_loaded, true);
      atomic_store(&m->unloaded, true);
    }
    if (gone) gone[n_gone++] = m;
  }
  for (size_t i = 0; i < n_gone; i++) /* the array changes with each: walk the copy */
    if (hs__registry_forget_model(r, gone[i])) HS_LOGD("model %s forgotten", gone[i]->name);
  free(gone);
  hs__registry_reap_forgotten(r);
  hs_repo_snapshot_free(snap);
  if (r->opts.explicit_control && !atomic_load(&r->startup_done)) warn_missing_start_models(r);
  /* readiness: a scan of the repository has succeeded and its loads are done (set before the
   * waiters of this scan are told, so they see it) */
  atomic_store(&r->startup_done, true);
  return pending;
}

/* Hands the pages the allocator holds free back to the system; called and returns with r->mu held
 * (drops it meanwhile). */
static void trim_now(hs_registry *r) {
  r->trim_due_ns = 0;
  pthread_mutex_unlock(&r->mu);
  uint64_t t0 = hs_now_ns();
  warm_pool_trim(r);
  hs_trace_stage(r->trace, "trim", "", -1, t0, hs_now_ns());
  pthread_mutex_lock(&r->mu);
}

/* The allocator keeps freed pages, so without a trim RSS would stay at two versions' worth after a
 * reload (bench/load), and above one version after a load (the graph's copies of weights a kernel
 * took over, the read's ring, trial plans). But while reloads keep coming, the next version reuses
 * those pages: handing them back and faulting them in again (zeroed) cost nearly a third of a
 * MobileNetV2 reload's CPU (bench/reload: 69 -> 49 ms per version). So the trim waits until no
 * version has been loaded or freed for trim_delay_ms; memory admission trims at once when it would
 * otherwise refuse a version. Called with r->mu held. */
static void arm_trim(hs_registry *r) {
  if (r->opts.trim_delay_ms <= 0) trim_now(r);
  else r->trim_due_ns = hs_now_ns() + (uint64_t)r->opts.trim_delay_ms * 1000000ull;
}

void hs__loader_process(hs_registry *r) {
  pthread_mutex_lock(&r->mu);
  hs_model_op *ops = r->ops;
  r->ops = NULL;
  r->kicked = false;
  uint64_t seq = r->scan_requested;
  pthread_mutex_unlock(&r->mu);

  /* ops are applied in the order they were asked (the list is newest first) */
  hs_model_op *rev = NULL;
  while (ops) {
    hs_model_op *n = ops->next;
    ops->next = rev;
    rev = ops;
    ops = n;
  }
  apply_ops(r, rev);
  bool pending = scan_once(r, rev);
  hs__rollout_tick(r); /* manual rollout commands are applied before the scan counts as done */
  while (rev) {
    hs_model_op *n = rev->next;
    free(rev);
    rev = n;
  }

  pthread_mutex_lock(&r->mu);
  if (r->loaded_since_scan) { /* what the loads freed goes back once loads pause, as a free's pages */
    r->loaded_since_scan = false;
    arm_trim(r);
  }
  if (seq > r->scan_done) r->scan_done = seq;
  r->scan_pending = pending;
  pthread_cond_broadcast(&r->done_cv);
  pthread_mutex_unlock(&r->mu);
}

/* How much lower than the server's own CPU priority loads and warm-ups run (nice steps). */
#define HS_LOADER_NICE_STEPS 10

/* Loads and warm-ups compete with requests for the same cores. Running them at a lower CPU
 * priority keeps a reload from slowing the requests being served; with idle cores they still run
 * at full speed. HS_LOADER_LOW lowers the thread's nice value: on a busy core the loader still gets
 * about a tenth of it, so a reload finishes in bounded time. HS_LOADER_IDLE uses SCHED_IDLE: the
 * loader then runs almost only on CPU time requests leave unused, which protects tail latency best,
 * but on cores that stay saturated a reload may take many times its CPU cost. Linux keeps both per
 * thread, and the OpenMP workers this thread starts inherit them. */
static void lower_loader_priority(hs_loader_priority prio) {
  if (prio == HS_LOADER_NORMAL) return;
  if (prio == HS_LOADER_IDLE) {
    struct sched_param sp = {0};
    int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    if (rc == 0) return;
    HS_LOGW("loader: cannot switch to SCHED_IDLE (%s); using a lower nice value", strerror(rc));
  }
  pid_t tid = gettid();
  errno = 0;
  int cur = getpriority(PRIO_PROCESS, (id_t)tid);
  if (cur == -1 && errno != 0) return;
  int want = cur + HS_LOADER_NICE_STEPS > 19 ? 19 : cur + HS_LOADER_NICE_STEPS;
  if (setpriority(PRIO_PROCESS, (id_t)tid, want) != 0)
    HS_LOGW("loader: cannot lower its CPU priority (%s); reloads compete with requests", strerror(errno));
}

/* Waits on r->cv until woken or, when wait_ns > 0, at most wait_ns. */
static void wait_at_most(hs_registry *r, uint64_t wait_ns) {
  if (wait_ns == 0) {
    pthread_cond_wait(&r->cv, &r->mu);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts); /* the condition variable's clock */
  uint64_t ns = (uint64_t)ts.tv_nsec + wait_ns;
  ts.tv_sec += (time_t)(ns / 1000000000ull);
  ts.tv_nsec = (long)(ns % 1000000000ull);
  pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

/* Frees the versions in the graveyard; called and returns with r->mu held (drops it meanwhile). */
static void reap_graveyard(hs_registry *r) {
  hs_version *dead = r->graveyard;
  r->graveyard = NULL;
  if (!dead) return;
  pthread_mutex_unlock(&r->mu);
  while (dead) {
    hs_version *next = dead->next_dead;
    uint64_t t0 = hs_now_ns();
    char model[HS_NAME_MAX];
    snprintf(model, sizeof model, "%s", dead->model->name);
    int64_t version = dead->version;
    /* its weights' pages stay with the allocator for the next version until the trim */
    atomic_fetch_add_explicit(&r->metrics.warm_pool_bytes, dead->memory_bytes, memory_order_relaxed);
    hs__version_free(dead);
    hs_trace_stage(r->trace, "free", model, version, t0, hs_now_ns());
    dead = next;
  }
  pthread_mutex_lock(&r->mu);
  arm_trim(r);
}

void hs__loader_reap(hs_registry *r) {
  pthread_mutex_lock(&r->mu);
  reap_graveyard(r);
  pthread_mutex_unlock(&r->mu);
}

void *hs__loader_main(void *arg) {
  hs_registry *r = arg;
  pthread_setname_np(pthread_self(), "hs-loader"); /* as top -H and /proc show it */
  lower_loader_priority(r->opts.loader_priority);
  warm_pool_keep(HS_WARM_KEEP_MIN);
  pthread_mutex_lock(&r->mu);
  r->loader_running = true;
  while (!r->stop) {
    if (r->graveyard) { /* the lock was dropped while freeing: look at stop and the queue again */
      reap_graveyard(r);
      continue;
    }
    if (r->trim_due_ns && hs_now_ns() >= r->trim_due_ns) {
      trim_now(r);
      continue;
    }
    uint64_t rollout_ns = hs__rollout_wait_ns(r); /* an open rollout window is judged every 100 ms */
    if (rollout_ns == 1) {
      pthread_mutex_unlock(&r->mu);
      hs__rollout_tick(r);
      pthread_mutex_lock(&r->mu);
      continue;
    }
    if (!r->kicked && !r->ops) {
      /* sleep until kicked; while a version is pending, rescan every 250 ms; wake for a due trim */
      uint64_t wait_ns = r->scan_pending ? 250 * 1000000ull : 0, now = hs_now_ns();
      if (r->trim_due_ns) {
        uint64_t until_trim = r->trim_due_ns > now ? r->trim_due_ns - now : 1;
        if (wait_ns == 0 || until_trim < wait_ns) wait_ns = until_trim;
      }
      if (rollout_ns && (wait_ns == 0 || rollout_ns < wait_ns)) wait_ns = rollout_ns;
      wait_at_most(r, wait_ns);
      if (r->stop) break;
      if (r->trim_due_ns && hs_now_ns() >= r->trim_due_ns && !r->kicked && !r->ops && !r->scan_pending)
        continue; /* woken to trim, not to scan */
      if (r->graveyard && !r->kicked && !r->ops) continue; /* woken to free, not to scan */
      if (rollout_ns && !r->kicked && !r->ops && !r->scan_pending) continue; /* woken to judge a rollout */
    }
    pthread_mutex_unlock(&r->mu);
    hs__loader_process(r);
    pthread_mutex_lock(&r->mu);
  }
  r->loader_running = false; /* from now on the last reference frees inline */
  reap_graveyard(r);
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

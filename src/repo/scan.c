/* scan.c - repository discovery: models, configs, version directories, version policy, readiness.
 *
 * DESIGN: one thread owns an hs_repo and calls hs_repo_scan; the scanner keeps two memories between
 * scans: a hash cache (files unchanged since the last scan are not hashed again) and, per version
 * directory, the "shape" of its listing (names, sizes, mtimes, ctimes, inodes) with the time it was
 * first seen. A version is decided (READY or INVALID) once its manifest matches, or once its shape
 * has not changed for settle_ms (or every mtime in it is older than settle_ms, which lets a restart
 * serve an old repository at once). Until then it is PENDING: a copy in progress is never loaded and
 * never refused. A decided verdict is kept for as long as the shape stays the same, so a rescan of
 * an unchanged repository reads directories but no file contents. With defer_content_check a new
 * version's files are checked by names and sizes (the loader hashes what it reads); once a version
 * was READY, any change of its shape has its files hashed in full, so a same-size replacement of a
 * served file is found (manifest_mismatch). Snapshots are plain data owned by the caller.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "repo/repo_internal.h"

typedef struct settle_entry {
  char *dir;              /* canonical version directory */
  uint8_t shape[32];      /* listing digest when first seen */
  int64_t first_seen_ms;  /* monotonic */
  bool seen;              /* seen during the current scan */
  bool decided;           /* result below is final for this shape */
  bool full_check;        /* hash the files even with defer_content_check: set by hs_repo_recheck
                             and when a verified version's shape changes, cleared once a full check
                             finds the files matching their manifest */
  bool verified;          /* decided READY with a manifest: the loader may serve these files, so a
                             later change of any file's stat key is checked in full (class 7) */
  hs_repo_version result;
  struct settle_entry *next;
} settle_entry;

/* A warning already given, so a rescan every few seconds does not repeat it. */
typedef struct warned_entry {
  char *text;
  bool seen;
  struct warned_entry *next;
} warned_entry;

struct hs_repo {
  char root[HS_PATH_MAX];
  hs_repo_options opts;
  hs__hash_cache *cache;
  settle_entry *settle;
  warned_entry *warned;
};

/* Logs a warning once for as long as its cause is still seen by every scan. */
static void warn_once(hs_repo *repo, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn_once(hs_repo *repo, const char *fmt, ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  for (warned_entry *w = repo->warned; w; w = w->next) {
    if (strcmp(w->text, text) == 0) {
      w->seen = true;
      return;
    }
  }
  HS_LOGW("%s", text);
  warned_entry *w = calloc(1, sizeof *w);
  if (!w || !(w->text = strdup(text))) {
    free(w);
    return;
  }
  w->seen = true;
  w->next = repo->warned;
  repo->warned = w;
}

static void warned_sweep(hs_repo *repo, bool all) {
  warned_entry **pp = &repo->warned;
  while (*pp) {
    warned_entry *w = *pp;
    if (all || !w->seen) {
      *pp = w->next;
      free(w->text);
      free(w);
    } else {
      w->seen = false;
      pp = &w->next;
    }
  }
}

static int64_t mono_ms(void) { return (int64_t)(hs_now_ns() / 1000000u); }

static int64_t wall_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int hs_repo_open(const char *root, const hs_repo_options *opts, hs_repo **out, hs_error *err) {
  *out = NULL;
  if (!root || !*root) return hs_error_set(err, HS_INVALID_ARGUMENT, "no repository root given");
  if (opts && opts->require_signature && !opts->keys)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "--require-signature needs at least one --trusted-key");
  hs_repo *r = calloc(1, sizeof *r);
  if (!r) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  if (snprintf(r->root, sizeof r->root, "%s", root) >= (int)sizeof r->root) {
    free(r);
    return hs_error_set(err, HS_LIMIT, "repository path too long");
  }
  if (opts) r->opts = *opts;
  if (!opts) r->opts.settle_ms = 2000;
  if (r->opts.settle_ms < 0) r->opts.settle_ms = 0;
  if (r->opts.max_files == 0) r->opts.max_files = HS__DEFAULT_MAX_FILES;
  if (r->opts.max_file_bytes == 0) r->opts.max_file_bytes = HS__DEFAULT_MAX_FILE_BYTES;
  r->cache = hs__hash_cache_new();
  if (!r->cache) {
    free(r);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  *out = r;
  return HS_OK;
}

uint64_t hs__repo_bytes_hashed(const hs_repo *r) { return hs__hash_cache_bytes_hashed(r->cache); }

void hs_repo_close(hs_repo *repo) {
  if (!repo) return;
  settle_entry *e = repo->settle;
  while (e) {
    settle_entry *next = e->next;
    free(e->dir);
    free(e);
    e = next;
  }
  warned_sweep(repo, true);
  hs__hash_cache_free(repo->cache);
  free(repo);
}

void hs_repo_snapshot_free(hs_repo_snapshot *snap) {
  if (!snap) return;
  for (size_t i = 0; i < snap->n_models; i++) {
    free(snap->models[i].versions);
    free(snap->models[i].fallbacks);
  }
  free(snap->models);
  free(snap);
}

static settle_entry *settle_find(hs_repo *repo, const char *dir) {
  for (settle_entry *e = repo->settle; e; e = e->next)
    if (strcmp(e->dir, dir) == 0) return e;
  return NULL;
}

static void settle_sweep(hs_repo *repo) {
  settle_entry **pp = &repo->settle;
  while (*pp) {
    settle_entry *e = *pp;
    if (!e->seen) {
      *pp = e->next;
      free(e->dir);
      free(e);
    } else {
      e->seen = false;
      pp = &e->next;
    }
  }
}

static void set_result(hs_repo_version *out, hs_version_state state, hs__reason r, const char *msg) {
  out->state = state;
  snprintf(out->reason_code, sizeof out->reason_code, "%s", hs__reason_code(r));
  snprintf(out->reason, sizeof out->reason, "%.255s", msg ? msg : "");
}

/* Names a refusal: the listing's shape plus the reason, so the same failed content keeps the same
 * fingerprint and new content gets a new one. */
static void failure_fingerprint(const uint8_t shape[32], const char *code, char out[65]) {
  uint8_t buf[32 + 32] = {0};
  memcpy(buf, shape, 32);
  snprintf((char *)buf + 32, 32, "%s", code);
  uint8_t sha[32];
  hs_sha256(buf, sizeof buf, sha);
  hs_hex(sha, 32, out);
}

/* Decides one version directory (path may be a symlink inside the model dir). */
static void evaluate_dir(hs_repo *repo, const char *model, const char *model_real, const char *path,
                         int64_t version, hs_repo_version *out) {
  memset(out, 0, sizeof *out);
  out->version = version;
  char real[PATH_MAX];
  if (!realpath(path, real)) snprintf(real, sizeof real, "%s", path);
  snprintf(out->dir, sizeof out->dir, "%s", real);
  if (hs__path_join(out->model_path, sizeof out->model_path, real, "model.onnx", NULL) != HS_OK)
    out->model_path[0] = '\0';

  hs__listing l;
  hs__verdict v = {0};
  hs__reason r = hs__list_dir(path, model_real, repo->opts.max_files, repo->opts.max_file_bytes, &l, &v);
  if (r != HS__R_NONE) {
    uint8_t zero[32] = {0};
    hs_sha256(v.message, strlen(v.message), zero);
    failure_fingerprint(zero, hs__reason_code(r), out->fingerprint);
    set_result(out, r == HS__R_IO ? HS_VERSION_PENDING : HS_VERSION_INVALID, r, v.message);
    return;
  }
  for (size_t i = 0; i < l.n; i++) out->total_bytes += l.files[i].size;
  out->n_files = l.n;
  uint8_t shape[32];
  hs__listing_digest(&l, shape);
  int64_t now = mono_ms();
  settle_entry *e = settle_find(repo, real);
  if (!e) {
    e = calloc(1, sizeof *e);
    if (e) e->dir = strdup(real);
    if (!e || !e->dir) {
      free(e);
      hs__listing_free(&l);
      set_result(out, HS_VERSION_PENDING, HS__R_IO, "out of memory");
      return;
    }
    memcpy(e->shape, shape, 32);
    e->first_seen_ms = now;
    e->next = repo->settle;
    repo->settle = e;
  } else if (memcmp(e->shape, shape, 32) != 0) {
    memcpy(e->shape, shape, 32);
    e->first_seen_ms = now;
    /* A version that was READY (and may be served) changed under its manifest: names and sizes
     * cannot tell a same-size replacement, so its files are hashed in full this time (issue 16,
     * class 7). A version still being copied was never decided and costs nothing extra. */
    if (e->decided && e->verified) e->full_check = true;
    e->decided = false;
  }
  e->seen = true;
  if (e->decided) {
    *out = e->result; /* same shape: same sizes, so total_bytes and n_files still hold */
    for (size_t i = 0; i < l.n; i++) hs__hash_cache_touch(repo->cache, &l.files[i]);
    hs__listing_free(&l);
    return;
  }
  int64_t settle = repo->opts.settle_ms;
  bool settled = now - e->first_seen_ms >= settle || wall_ns() - l.max_mtime_ns >= settle * 1000000LL;

  if (l.n == 0) {
    hs__listing_free(&l);
    hs_hex(shape, 32, out->fingerprint);
    set_result(out, HS_VERSION_PENDING, HS__R_NONE, "empty directory");
    return;
  }
  bool sizes_only = repo->opts.defer_content_check && !e->full_check;
  hs__check_opts o = {repo->opts.require_signature, repo->opts.keys, repo->opts.max_files,
                      repo->opts.max_file_bytes, repo->cache, model, version, sizes_only};
  bool has_manifest = false;
  char fp[65];
  r = hs__check_version(real, &l, &o, &has_manifest, fp, &v);
  hs__listing_free(&l);
  if (r == HS__R_NONE && has_manifest) {
    if (!sizes_only) e->full_check = false; /* the bytes matched: the loader may check the next ones */
    snprintf(out->fingerprint, sizeof out->fingerprint, "%s", fp);
    set_result(out, HS_VERSION_READY, HS__R_NONE,
               sizes_only ? "manifest matches (names and sizes; the loader hashes what it reads)" : "manifest matches");
  } else if (r == HS__R_NONE) {
    hs_hex(shape, 32, out->fingerprint);
    set_result(out, settled ? HS_VERSION_READY : HS_VERSION_PENDING, HS__R_NONE,
               settled ? "no manifest; files settled" : "no manifest; waiting for the files to settle");
    if (!settled) return;
  } else if (r == HS__R_IO || !settled) {
    hs_hex(shape, 32, out->fingerprint);
    char msg[300];
    snprintf(msg, sizeof msg, "%.200s (waiting for the files to settle)", v.message);
    set_result(out, HS_VERSION_PENDING, r, msg);
    return;
  } else {
    failure_fingerprint(shape, hs__reason_code(r), out->fingerprint);
    set_result(out, HS_VERSION_INVALID, r, v.message);
  }
  e->decided = true;
  e->verified = out->state == HS_VERSION_READY && has_manifest;
  e->result = *out;
}

static void evaluate(hs_repo *repo, const char *model, const char *model_real, const char *path, int64_t version,
                     hs_repo_version *out) {
  uint64_t t0 = hs_now_ns();
  evaluate_dir(repo, model, model_real, path, version, out);
  out->verify_ms = (double)(hs_now_ns() - t0) / 1e6;
}

void hs_repo_recheck(hs_repo *repo, const char *model, const char *model_dir, const hs_repo_version *rv,
                     hs_repo_version *out) {
  char real[PATH_MAX], model_real[PATH_MAX];
  if (!realpath(rv->dir, real)) snprintf(real, sizeof real, "%s", rv->dir);
  if (!realpath(model_dir, model_real)) snprintf(model_real, sizeof model_real, "%s", model_dir);
  settle_entry *e = settle_find(repo, real);
  if (e) {
    e->decided = false;
    e->full_check = true;
  }
  evaluate(repo, model, model_real, real, rv->version, out);
}

/* A version directory name: a positive decimal integer without leading zeros. */
static bool parse_version(const char *name, int64_t *out) {
  size_t n = strlen(name);
  if (n == 0 || n > 18 || name[0] == '0') return false;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)name[i])) return false;
    v = v * 10 + (name[i] - '0');
  }
  *out = v;
  return true;
}

int hs__path_binding(const char *dir, char model[HS_NAME_MAX], int64_t *version) {
  model[0] = '\0';
  *version = 0;
  char buf[HS_PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return -1;
  size_t n = strlen(buf);
  while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
  char *slash = strrchr(buf, '/');
  const char *base = slash ? slash + 1 : buf;
  if (!parse_version(base, version)) return -1;
  if (!slash) return -1;
  *slash = '\0';
  while (slash > buf && slash[-1] == '/') *--slash = '\0';
  char *pslash = strrchr(buf, '/');
  const char *parent = pslash ? pslash + 1 : buf;
  if (strlen(parent) >= HS_NAME_MAX || !*parent || !strcmp(parent, ".") || !strcmp(parent, "..")) return -1;
  snprintf(model, HS_NAME_MAX, "%s", parent);
  return 0;
}

static bool valid_model_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n >= HS_NAME_MAX || name[0] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!isalnum(c) && c != '_' && c != '-' && c != '.') return false;
  }
  return true;
}

/* Resolves base/name to a canonical directory inside bound; false when it is not one. */
static bool dir_inside(const char *base, const char *name, const char *bound, char real[PATH_MAX]) {
  char path[HS_PATH_MAX];
  if (hs__path_join(path, sizeof path, base, name, NULL) != HS_OK) return false;
  struct stat st;
  if (lstat(path, &st) != 0) return false;
  if (!S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) return false;
  if (!realpath(path, real)) return false;
  if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  return hs__path_within(bound, real) && strcmp(bound, real) != 0;
}

typedef struct {
  int64_t version;
  char *name;
} vdir;

static int cmp_vdir_desc(const void *a, const void *b) {
  int64_t x = ((const vdir *)a)->version, y = ((const vdir *)b)->version;
  return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp_version_asc(const void *a, const void *b) {
  int64_t x = ((const hs_repo_version *)a)->version, y = ((const hs_repo_version *)b)->version;
  return x < y ? -1 : x > y ? 1 : 0;
}

static bool policy_lists(const hs_model_config *c, int64_t v) {
  for (size_t i = 0; i < c->n_specific; i++)
    if (c->specific[i] == v) return true;
  return false;
}

static void scan_model(hs_repo *repo, const char *model_dir, const char *model_real, hs_repo_model *m) {
  hs_error err;
  hs_error_clear(&err);
  m->config_status = hs__load_config(repo->root, m->name, repo->opts.require_signature, repo->opts.keys,
                                     &m->config, m->config_reason_code, &err);
  if (m->config_status != HS_OK) {
    if (!m->config_reason_code[0]) snprintf(m->config_reason_code, sizeof m->config_reason_code, "bad_config");
    snprintf(m->config_error, sizeof m->config_error, "%.255s", err.message);
    return;
  }
  DIR *d = opendir(model_real);
  if (!d) {
    m->config_status = HS_IO;
    snprintf(m->config_reason_code, sizeof m->config_reason_code, "io");
    snprintf(m->config_error, sizeof m->config_error, "%.200s: %.50s", model_dir, strerror(errno));
    return;
  }
  vdir *dirs = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  bool too_many = false;
  while ((de = readdir(d)) != NULL) {
    int64_t v;
    char real[PATH_MAX];
    if (!parse_version(de->d_name, &v)) continue;
    if (!dir_inside(model_real, de->d_name, model_real, real)) {
      struct stat st;
      char path[HS_PATH_MAX];
      if (hs__path_join(path, sizeof path, model_real, de->d_name, NULL) == HS_OK && lstat(path, &st) == 0 &&
          S_ISLNK(st.st_mode))
        warn_once(repo, "model %s: version %s is a symlink leading out of the model directory: ignored (unsafe_path)",
                  m->name, de->d_name);
      continue;
    }
    if (n == HS__MAX_VERSIONS) {
      too_many = true;
      break;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      vdir *nd = realloc(dirs, cap * sizeof *nd);
      if (!nd) break;
      dirs = nd;
    }
    dirs[n].version = v;
    dirs[n].name = strdup(de->d_name);
    if (!dirs[n].name) break;
    n++;
  }
  closedir(d);
  if (too_many) warn_once(repo, "model %s: more than %d version directories; the rest are ignored", m->name, HS__MAX_VERSIONS);
  if (n > 1) qsort(dirs, n, sizeof *dirs, cmp_vdir_desc); /* qsort(NULL, 0) is undefined */
  m->versions = calloc(n ? n : 1, sizeof *m->versions);
  int ready = 0;
  bool past_ready = false; /* a READY version past the policy's N was seen */
  for (size_t i = 0; m->versions && i < n; i++) {
    const hs_model_config *c = &m->config;
    if (c->policy == HS_POLICY_SPECIFIC && !policy_lists(c, dirs[i].version)) continue;
    bool past_policy = c->policy == HS_POLICY_LATEST && ready >= c->latest_n;
    if (past_policy && m->n_fallbacks == HS_REPO_FALLBACKS) break;
    char path[HS_PATH_MAX];
    if (hs__path_join(path, sizeof path, model_real, dirs[i].name, NULL) != HS_OK) continue;
    hs_repo_version *out = &m->versions[m->n_versions++];
    evaluate(repo, m->name, model_real, path, dirs[i].version, out);
    if (past_policy && (out->state != HS_VERSION_INVALID || past_ready)) {
      /* Past the policy's N, refused versions are still reported down to the next READY one (the
       * version the newest replaced): a broken version that a good one superseded before any scan
       * saw it is counted and shown all the same. The READY ones past N are not selected; the
       * first HS_REPO_FALLBACKS of them are offered as fallbacks (class 6 of issue 16). */
      m->n_versions--;
      if (out->state == HS_VERSION_READY) {
        past_ready = true;
        if (!m->fallbacks) m->fallbacks = calloc(HS_REPO_FALLBACKS, sizeof *m->fallbacks);
        if (!m->fallbacks) break;
        m->fallbacks[m->n_fallbacks++] = *out;
      }
      continue;
    }
    if (out->state == HS_VERSION_READY) ready++;
  }
  for (size_t i = 0; i < n; i++) free(dirs[i].name);
  free(dirs);
  if (m->n_versions > 1) qsort(m->versions, m->n_versions, sizeof *m->versions, cmp_version_asc);
}

static int cmp_model(const void *a, const void *b) {
  return strcmp(((const hs_repo_model *)a)->name, ((const hs_repo_model *)b)->name);
}

int hs_repo_scan(hs_repo *repo, hs_repo_snapshot **out, hs_error *err) {
  *out = NULL;
  char root_real[PATH_MAX];
  if (!realpath(repo->root, root_real))
    return hs_error_set(err, HS_IO, "model repository %s: %s", repo->root, strerror(errno));
  DIR *d = opendir(root_real);
  if (!d) return hs_error_set(err, HS_IO, "model repository %s: %s", repo->root, strerror(errno));
  hs_repo_snapshot *snap = calloc(1, sizeof *snap);
  if (!snap) {
    closedir(d);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  size_t cap = 0;
  struct dirent *de;
  int rc = HS_OK;
  while ((de = readdir(d)) != NULL) {
    if (!valid_model_name(de->d_name)) continue;
    char real[PATH_MAX];
    if (!dir_inside(root_real, de->d_name, root_real, real)) {
      char path[HS_PATH_MAX];
      struct stat st;
      if (hs__path_join(path, sizeof path, root_real, de->d_name, NULL) == HS_OK && lstat(path, &st) == 0 &&
          S_ISLNK(st.st_mode))
        warn_once(repo, "model %s is a symlink leading out of the repository: ignored (unsafe_path)", de->d_name);
      continue;
    }
    if (snap->n_models == HS__MAX_MODELS) {
      warn_once(repo, "model repository %s: more than %d models; the rest are ignored", repo->root, HS__MAX_MODELS);
      break;
    }
    if (snap->n_models == cap) {
      cap = cap ? cap * 2 : 8;
      hs_repo_model *nm = realloc(snap->models, cap * sizeof *nm);
      if (!nm) {
        rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
        break;
      }
      snap->models = nm;
    }
    hs_repo_model *m = &snap->models[snap->n_models++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", de->d_name);
    char model_dir[HS_PATH_MAX];
    if (hs__path_join(model_dir, sizeof model_dir, root_real, de->d_name, NULL) != HS_OK) continue;
    scan_model(repo, model_dir, real, m);
  }
  closedir(d);
  if (rc != HS_OK) {
    hs_repo_snapshot_free(snap);
    return rc;
  }
  if (snap->n_models > 1) qsort(snap->models, snap->n_models, sizeof *snap->models, cmp_model);
  settle_sweep(repo);
  warned_sweep(repo, false);
  hs__hash_cache_sweep(repo->cache);
  *out = snap;
  return HS_OK;
}

int hs_repo_verify_version(const char *dir, bool require_signature, const hs_trusted_keys *keys,
                           hs_repo_version *out, hs_error *err) {
  memset(out, 0, sizeof *out);
  /* The bound is the directory that holds DIR as it was named (the model directory), so a
   * Kubernetes `1 -> ..data/1` link and links to files shared between versions are judged as the
   * scanner judges them. */
  char real[PATH_MAX], parent[PATH_MAX], named[HS_PATH_MAX];
  if (!realpath(dir, real)) return hs_error_set(err, HS_IO, "%s: %s", dir, strerror(errno));
  if (snprintf(named, sizeof named, "%s", dir) >= (int)sizeof named) return hs_error_set(err, HS_LIMIT, "path too long");
  size_t nl = strlen(named);
  while (nl > 1 && named[nl - 1] == '/') named[--nl] = '\0';
  char *slash = strrchr(named, '/');
  if (!slash)
    snprintf(named, sizeof named, ".");
  else if (slash == named)
    named[1] = '\0';
  else
    *slash = '\0';
  if (!realpath(named, parent)) return hs_error_set(err, HS_IO, "%s: %s", named, strerror(errno));
  /* The binding to compare with: DIR as named is MODEL/VERSION (its own name and its parent's). */
  char model_name[HS_NAME_MAX] = "";
  int64_t named_version = 0;
  if (hs__path_binding(dir, model_name, &named_version) != 0) hs__path_binding(real, model_name, &named_version);
  snprintf(out->dir, sizeof out->dir, "%s", real);
  hs__path_join(out->model_path, sizeof out->model_path, real, "model.onnx", NULL);
  const char *base = strrchr(real, '/');
  int64_t v = 0;
  if (base && parse_version(base + 1, &v)) out->version = v;
  hs__listing l;
  hs__verdict vd = {0};
  hs__reason r = hs__list_dir(real, parent, 0, 0, &l, &vd);
  if (r == HS__R_IO) return hs_error_set(err, HS_IO, "%s", vd.message);
  bool has_manifest = false;
  if (r == HS__R_NONE) {
    for (size_t i = 0; i < l.n; i++) out->total_bytes += l.files[i].size;
    out->n_files = l.n;
    hs__check_opts o = {require_signature, keys, 0, 0, NULL, model_name[0] ? model_name : NULL, named_version, false};
    r = hs__check_version(real, &l, &o, &has_manifest, out->fingerprint, &vd);
    if (r == HS__R_NONE && !has_manifest) {
      uint8_t shape[32];
      hs__listing_digest(&l, shape);
      hs_hex(shape, 32, out->fingerprint);
    }
    hs__listing_free(&l);
  }
  if (r == HS__R_IO) return hs_error_set(err, HS_IO, "%s", vd.message);
  if (r != HS__R_NONE) {
    set_result(out, HS_VERSION_INVALID, r, vd.message);
    return hs_error_set(err, HS_VERIFY, "%s: %s", hs__reason_code(r), vd.message);
  }
  set_result(out, HS_VERSION_READY, HS__R_NONE, has_manifest ? "manifest matches" : "no manifest");
  return HS_OK;
}

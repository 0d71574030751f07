/* files.c - safe file access for repo/: atomic writes, directory listings that never lead out of a
 * model's directory, SHA-256 of files with a cache of unchanged files (reading and hashing themselves
 * are base/file.c and base/digest.c), and the table of reason codes.
 *
 * DESIGN: a listing records, for each regular file below a version directory, its relative name
 * and its canonical location. Symlinks are resolved with realpath() and kept only when the target
 * lies inside the bound (the model directory), which is what allows Kubernetes `..data` links and
 * nothing else. The hash cache belongs to one scanner (one thread); its entries are keyed by
 * (dev, inode, size, mtime, ctime) so a file rewritten in place is hashed again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/digest.h"
#include "base/file.h"
#include "repo/repo_internal.h"

static const char *const k_reason_codes[] = {
    [HS__R_NONE] = "",
    [HS__R_UNSIGNED] = "unsigned",
    [HS__R_BAD_SIGNATURE] = "bad_signature",
    [HS__R_UNKNOWN_KEY] = "unknown_key",
    [HS__R_MANIFEST_MISMATCH] = "manifest_mismatch",
    [HS__R_BAD_MANIFEST] = "bad_manifest",
    [HS__R_UNSAFE_PATH] = "unsafe_path",
    [HS__R_LIMIT] = "limit",
    [HS__R_IO] = "io",
    [HS__R_WRONG_BINDING] = "wrong_binding",
    [HS__R_UNBOUND] = "unbound",
};

const char *hs__reason_code(hs__reason r) {
  if ((size_t)r >= sizeof k_reason_codes / sizeof k_reason_codes[0]) return "internal";
  return k_reason_codes[r];
}

bool hs_repo_is_verify_reason(const char *code) {
  /* every refusal of the table except "" (none) and "io" (transient: the version stays PENDING) */
  for (size_t r = HS__R_NONE + 1; r < sizeof k_reason_codes / sizeof k_reason_codes[0]; r++)
    if (r != HS__R_IO && strcmp(code, k_reason_codes[r]) == 0) return true;
  return false;
}

hs__reason hs__verdict_set(hs__verdict *v, hs__reason r, const char *fmt, ...) {
  if (v) {
    v->reason = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
  }
  return r;
}

int hs__path_join(char *out, size_t cap, const char *a, const char *b, hs_error *err) {
  size_t la = strlen(a);
  bool slash = la > 0 && a[la - 1] == '/';
  int n = snprintf(out, cap, "%s%s%s", a, slash ? "" : "/", b);
  if (n < 0 || (size_t)n >= cap) return hs_error_set(err, HS_LIMIT, "path too long: %s/%s", a, b);
  return HS_OK;
}

bool hs__path_within(const char *real_base, const char *real_path) {
  size_t n = strlen(real_base);
  if (n == 1 && real_base[0] == '/') return real_path[0] == '/';
  if (strncmp(real_base, real_path, n) != 0) return false;
  return real_path[n] == '\0' || real_path[n] == '/';
}

int hs__write_file_atomic(const char *dir, const char *name, const void *data, size_t len, int mode,
                          hs_error *err) {
  char tmp[HS_PATH_MAX], final_path[HS_PATH_MAX], tmp_name[HS_NAME_MAX + 32];
  snprintf(tmp_name, sizeof tmp_name, ".%s.tmp-%ld", name, (long)getpid());
  int rc = hs__path_join(tmp, sizeof tmp, dir, tmp_name, err);
  if (rc == HS_OK) rc = hs__path_join(final_path, sizeof final_path, dir, name, err);
  if (rc != HS_OK) return rc;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return hs_error_set(err, HS_IO, "%s: %s", tmp, strerror(errno));
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      return hs_error_set(err, HS_IO, "%s: %s", tmp, strerror(e));
    }
    p += w;
    left -= (size_t)w;
  }
  if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
    int e = errno;
    close(fd);
    unlink(tmp);
    return hs_error_set(err, HS_IO, "%s: %s", tmp, strerror(e));
  }
  close(fd);
  if (rename(tmp, final_path) != 0) {
    int e = errno;
    unlink(tmp);
    return hs_error_set(err, HS_IO, "rename to %s: %s", final_path, strerror(e));
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return HS_OK;
}

/* ---- listings ---- */

static int64_t ts_ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec; }

typedef struct {
  const char *bound;
  size_t max_files, max_file_bytes;
  hs__listing *out;
  hs__verdict *v;
} list_ctx;

static hs__reason list_add(list_ctx *c, const char *rel, const char *real, const struct stat *st) {
  hs__listing *l = c->out;
  if (l->n >= c->max_files)
    return hs__verdict_set(c->v, HS__R_LIMIT, "more than %zu files", c->max_files);
  if ((uint64_t)st->st_size > c->max_file_bytes)
    return hs__verdict_set(c->v, HS__R_LIMIT, "%s: %lld bytes, over the limit of %zu bytes", rel,
                           (long long)st->st_size, c->max_file_bytes);
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    hs__file *f = realloc(l->files, cap * sizeof *f);
    if (!f) return hs__verdict_set(c->v, HS__R_IO, "out of memory");
    l->files = f;
    l->cap = cap;
  }
  hs__file *f = &l->files[l->n];
  f->rel = strdup(rel);
  f->real = strdup(real);
  if (!f->rel || !f->real) {
    free(f->rel);
    free(f->real);
    return hs__verdict_set(c->v, HS__R_IO, "out of memory");
  }
  f->size = (uint64_t)st->st_size;
  f->mtime_ns = ts_ns(st->st_mtim);
  f->ctime_ns = ts_ns(st->st_ctim);
  f->dev = st->st_dev;
  f->ino = st->st_ino;
  l->n++;
  return HS__R_NONE;
}

static void note_mtime(hs__listing *l, const struct stat *st) {
  int64_t m = ts_ns(st->st_mtim);
  if (m > l->max_mtime_ns) l->max_mtime_ns = m;
}

static hs__reason list_walk(list_ctx *c, const char *real_dir, const char *rel_dir, int depth) {
  if (depth > HS__MAX_DEPTH)
    return hs__verdict_set(c->v, HS__R_LIMIT, "%s: more than %d directory levels", rel_dir,
                           HS__MAX_DEPTH);
  DIR *d = opendir(real_dir);
  if (!d) return hs__verdict_set(c->v, HS__R_IO, "%s: %s", real_dir, strerror(errno));
  hs__reason r = HS__R_NONE;
  struct dirent *e;
  while (r == HS__R_NONE && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[HS_PATH_MAX], rel[HS_PATH_MAX];
    if (hs__path_join(path, sizeof path, real_dir, e->d_name, NULL) != HS_OK) {
      r = hs__verdict_set(c->v, HS__R_LIMIT, "path too long below %s", real_dir);
      break;
    }
    int n = rel_dir[0] ? snprintf(rel, sizeof rel, "%s/%s", rel_dir, e->d_name)
                       : snprintf(rel, sizeof rel, "%s", e->d_name);
    if (n < 0 || (size_t)n >= HS__MAX_REL_PATH) {
      r = hs__verdict_set(c->v, HS__R_LIMIT, "a path below %s is longer than %d bytes", real_dir,
                          HS__MAX_REL_PATH - 1);
      break;
    }
    struct stat st;
    if (lstat(path, &st) != 0) {
      if (errno == ENOENT) continue; /* removed while we listed: the next scan sees it */
      r = hs__verdict_set(c->v, HS__R_IO, "%s: %s", rel, strerror(errno));
      break;
    }
    char real[PATH_MAX];
    const char *where = path;
    if (S_ISLNK(st.st_mode)) {
      if (!realpath(path, real)) {
        if (errno == ENOENT) {
          r = hs__verdict_set(c->v, HS__R_UNSAFE_PATH, "%s: dangling symlink", rel);
        } else {
          r = hs__verdict_set(c->v, HS__R_IO, "%s: %s", rel, strerror(errno));
        }
        break;
      }
      if (!hs__path_within(c->bound, real)) {
        r = hs__verdict_set(c->v, HS__R_UNSAFE_PATH, "%s: symlink leads out of the model directory",
                            rel);
        break;
      }
      if (stat(real, &st) != 0) {
        r = hs__verdict_set(c->v, HS__R_IO, "%s: %s", rel, strerror(errno));
        break;
      }
      where = real;
    }
    if (S_ISDIR(st.st_mode)) {
      note_mtime(c->out, &st);
      c->out->n_dirs++;
      if (c->out->n_dirs > c->max_files) {
        r = hs__verdict_set(c->v, HS__R_LIMIT, "more than %zu directories", c->max_files);
        break;
      }
      r = list_walk(c, where, rel, depth + 1);
    } else if (S_ISREG(st.st_mode)) {
      note_mtime(c->out, &st);
      if (where == path) {
        /* real_dir is canonical and e->d_name is no link: path is canonical too. */
        r = list_add(c, rel, path, &st);
      } else {
        r = list_add(c, rel, real, &st);
      }
    } else {
      r = hs__verdict_set(c->v, HS__R_UNSAFE_PATH, "%s: not a regular file or directory", rel);
    }
  }
  closedir(d);
  return r;
}

static int cmp_file(const void *a, const void *b) {
  return strcmp(((const hs__file *)a)->rel, ((const hs__file *)b)->rel);
}

hs__reason hs__list_dir(const char *dir, const char *bound, size_t max_files, size_t max_file_bytes,
                        hs__listing *out, hs__verdict *v) {
  memset(out, 0, sizeof *out);
  char real[PATH_MAX];
  if (!realpath(dir, real)) return hs__verdict_set(v, HS__R_IO, "%s: %s", dir, strerror(errno));
  if (!hs__path_within(bound, real))
    return hs__verdict_set(v, HS__R_UNSAFE_PATH, "%s leads out of the model directory", dir);
  struct stat st;
  if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
    return hs__verdict_set(v, HS__R_IO, "%s: not a directory", dir);
  note_mtime(out, &st);
  list_ctx c = {bound, max_files ? max_files : HS__DEFAULT_MAX_FILES,
                max_file_bytes ? max_file_bytes : HS__DEFAULT_MAX_FILE_BYTES, out, v};
  hs__reason r = list_walk(&c, real, "", 1);
  if (r != HS__R_NONE) {
    hs__listing_free(out);
    return r;
  }
  if (out->n > 1) qsort(out->files, out->n, sizeof *out->files, cmp_file);
  return HS__R_NONE;
}

void hs__listing_free(hs__listing *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n; i++) {
    free(l->files[i].rel);
    free(l->files[i].real);
  }
  free(l->files);
  memset(l, 0, sizeof *l);
}

const hs__file *hs__listing_find(const hs__listing *l, const char *rel) {
  size_t lo = 0, hi = l->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(l->files[mid].rel, rel);
    if (c == 0) return &l->files[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

void hs__listing_digest(const hs__listing *l, uint8_t out[32]) {
  hs_sha256_ctx *ctx = hs_sha256_begin();
  for (size_t i = 0; i < l->n; i++) {
    const hs__file *f = &l->files[i];
    int64_t meta[5] = {(int64_t)f->size, f->mtime_ns, f->ctime_ns, (int64_t)f->ino, (int64_t)f->dev};
    hs_sha256_update(ctx, f->rel, strlen(f->rel) + 1);
    hs_sha256_update(ctx, meta, sizeof meta);
  }
  hs_sha256_update(ctx, &l->max_mtime_ns, sizeof l->max_mtime_ns);
  hs_sha256_end(ctx, out); /* all zero when hashing could not start, as before */
}

/* ---- hashing ---- */

typedef struct cache_entry {
  uint64_t dev, ino, size;
  int64_t mtime_ns, ctime_ns;
  uint8_t sha[32];
  int used; /* set when looked up since the last sweep */
  struct cache_entry *next;
} cache_entry;

#define CACHE_BUCKETS 1024
struct hs__hash_cache {
  cache_entry *buckets[CACHE_BUCKETS];
  uint64_t bytes_hashed;
};

uint64_t hs__hash_cache_bytes_hashed(const hs__hash_cache *c) { return c ? c->bytes_hashed : 0; }

hs__hash_cache *hs__hash_cache_new(void) { return calloc(1, sizeof(hs__hash_cache)); }

void hs__hash_cache_free(hs__hash_cache *c) {
  if (!c) return;
  for (size_t i = 0; i < CACHE_BUCKETS; i++) {
    cache_entry *e = c->buckets[i];
    while (e) {
      cache_entry *next = e->next;
      free(e);
      e = next;
    }
  }
  free(c);
}

void hs__hash_cache_sweep(hs__hash_cache *c) {
  if (!c) return;
  for (size_t i = 0; i < CACHE_BUCKETS; i++) {
    cache_entry **pp = &c->buckets[i];
    while (*pp) {
      cache_entry *e = *pp;
      if (!e->used) {
        *pp = e->next;
        free(e);
      } else {
        e->used = 0;
        pp = &e->next;
      }
    }
  }
}

static size_t bucket_of(uint64_t dev, uint64_t ino) {
  return (size_t)((ino * 0x9E3779B97F4A7C15ULL) ^ dev) % CACHE_BUCKETS;
}

static cache_entry *cache_find(hs__hash_cache *c, const hs__file *f) {
  for (cache_entry *e = c->buckets[bucket_of(f->dev, f->ino)]; e; e = e->next)
    if (e->dev == f->dev && e->ino == f->ino && e->size == f->size && e->mtime_ns == f->mtime_ns &&
        e->ctime_ns == f->ctime_ns)
      return e;
  return NULL;
}

void hs__hash_cache_touch(hs__hash_cache *c, const hs__file *f) {
  cache_entry *e = c ? cache_find(c, f) : NULL;
  if (e) e->used = 1;
}

int hs__sha256_file(hs__hash_cache *c, const hs__file *f, uint8_t out[32], hs_error *err) {
  cache_entry *e = c ? cache_find(c, f) : NULL;
  if (e) {
    memcpy(out, e->sha, 32);
    e->used = 1;
    return HS_OK;
  }
  struct stat st;
  hs_error oerr;
  hs_error_clear(&oerr);
  int fd = hs_file_open_regular(f->real, &st, &oerr); /* never blocks on a FIFO swapped in */
  if (fd < 0) return hs_error_set(err, HS_IO, "%s: %s", f->rel, oerr.message);
  uint64_t total = 0;
  int rc = hs_sha256_fd(fd, f->size, out, &total, err);
  close(fd);
  if (rc != HS_OK) hs_error_prefix(err, "%s", f->rel);
  else if (total != f->size) rc = hs_error_set(err, HS_IO, "%s: changed size while being hashed", f->rel);
  if (c) c->bytes_hashed += total;
  if (rc == HS_OK) hs__hash_cache_put(c, f, out);
  return rc;
}

void hs__hash_cache_put(hs__hash_cache *c, const hs__file *f, const uint8_t sha[32]) {
  if (!c) return;
  cache_entry *e = cache_find(c, f);
  if (!e) {
    e = malloc(sizeof *e);
    if (!e) return; /* the hash is right; it just is not remembered */
    cache_entry **slot = &c->buckets[bucket_of(f->dev, f->ino)];
    e->dev = f->dev;
    e->ino = f->ino;
    e->size = f->size;
    e->mtime_ns = f->mtime_ns;
    e->ctime_ns = f->ctime_ns;
    e->next = *slot;
    *slot = e;
  }
  memcpy(e->sha, sha, 32);
  e->used = 1;
}

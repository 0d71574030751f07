/* publish.c - writing versions: keygen, signing a directory, and the atomic publish protocol.
 *
 * DESIGN: publish never writes inside a live version directory. It builds the version in a dot
 * directory beside the versions (the scanner ignores dot names), on the same filesystem, fsyncs
 * every file and directory, writes the signature and then the manifest, and commits with one
 * rename(2) of the whole directory: a reader sees the version complete or not at all, on local
 * disks and on NFS alike. RENAME_NOREPLACE keeps an existing version from being replaced; where a
 * filesystem lacks it, an existence check before rename(2) is the fallback (rename(2) itself will
 * not replace a non-empty directory).
 * The copy is one pass over the bytes (read, hash, write): the manifest takes the hashes of the
 * bytes written, and a source that changes while it is copied is refused rather than signed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "repo/publish.h"
#include "repo/repo_internal.h"

int hs_repo_keygen(const char *name, bool hmac, hs_error *err) { return hs__keygen(name, hmac, err); }

int hs_repo_sign_dir(const char *dir, const char *key_path, hs_error *err) {
  char model[HS_NAME_MAX];
  int64_t version = 0;
  if (hs__path_binding(dir, model, &version) != 0) {
    char real[PATH_MAX];
    if (!realpath(dir, real)) return hs_error_set(err, HS_IO, "%s: %s", dir, strerror(errno));
    hs__path_binding(real, model, &version);
  }
  return hs_repo_sign_dir_as(dir, key_path, model[0] ? model : NULL, version, err);
}

/* hs_repo_sign_dir_as, hashing through cache (NULL: none), which publish fills as it copies. */
static int sign_dir(const char *dir, const char *key_path, const char *model, int64_t version, hs__hash_cache *cache,
                    hs_error *err) {
  if (model && (version < 1 || version > HS_REPO_VERSION_MAX || !*model || strlen(model) >= HS_NAME_MAX ||
                strchr(model, '/')))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "cannot bind a manifest to model '%.64s' version %lld", model,
                        (long long)version);
  char real[PATH_MAX];
  if (!realpath(dir, real)) return hs_error_set(err, HS_IO, "%s: %s", dir, strerror(errno));
  hs__key *key = NULL;
  int rc = HS_OK;
  if (key_path) {
    rc = hs__key_load(key_path, &key, err);
    if (rc != HS_OK) return rc;
    if (hs__key_kind_of(key) == HS__KEY_ED25519_PUBLIC) {
      hs__key_free(key);
      return hs_error_set(err, HS_INVALID_ARGUMENT,
                          "%s is a public key; signing needs the private key (NAME.key)", key_path);
    }
  }
  hs__listing l;
  hs__verdict v = {0};
  hs__reason r = hs__list_dir(real, real, 0, 0, &l, &v);
  if (r != HS__R_NONE) {
    hs__key_free(key);
    return hs_error_set(err, r == HS__R_IO ? HS_IO : HS_VERIFY, "%s: %s: %s", dir, hs__reason_code(r), v.message);
  }
  char *manifest = NULL, *sig = NULL;
  size_t mlen = 0, slen = 0;
  rc = hs__manifest_build(&l, cache, model, version, &manifest, &mlen, err);
  hs__listing_free(&l);
  if (rc == HS_OK && key) rc = hs__sign(key, manifest, mlen, &sig, &slen, err);
  if (rc == HS_OK && key) rc = hs__write_file_atomic(real, HS_REPO_SIGNATURE_NAME, sig, slen, 0644, err);
  if (rc == HS_OK && !key) {
    char sig_path[HS_PATH_MAX];
    if (hs__path_join(sig_path, sizeof sig_path, real, HS_REPO_SIGNATURE_NAME, NULL) == HS_OK) unlink(sig_path);
  }
  if (rc == HS_OK) rc = hs__write_file_atomic(real, HS_REPO_MANIFEST_NAME, manifest, mlen, 0644, err);
  free(manifest);
  free(sig);
  hs__key_free(key);
  return rc;
}

int hs_repo_sign_dir_as(const char *dir, const char *key_path, const char *model, int64_t version, hs_error *err) {
  return sign_dir(dir, key_path, model, version, NULL, err);
}

int hs_repo_sign_config(const char *config_path, const char *key_path, const char *model, hs_error *err) {
  if (!key_path) return hs_error_set(err, HS_INVALID_ARGUMENT, "signing a config.json needs --key");
  char real[PATH_MAX];
  if (!realpath(config_path, real)) return hs_error_set(err, HS_IO, "%s: %s", config_path, strerror(errno));
  char dir[PATH_MAX], name[HS_NAME_MAX];
  snprintf(dir, sizeof dir, "%s", real);
  char *slash = strrchr(dir, '/');
  if (!slash || strcmp(slash + 1, "config.json") != 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s: only a model's config.json is signed this way", config_path);
  *slash = '\0';
  if (!model) {
    /* The model's name as named on the command line (MODEL/config.json), else as resolved. */
    char named[HS_PATH_MAX];
    snprintf(named, sizeof named, "%s", config_path);
    char *s2 = strrchr(named, '/');
    const char *from = dir;
    if (s2) {
      *s2 = '\0';
      from = named;
    }
    const char *b = strrchr(from, '/');
    b = b ? b + 1 : from;
    if (!*b || !strcmp(b, ".") || !strcmp(b, "..")) b = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    snprintf(name, sizeof name, "%.127s", b);
    model = name;
  }
  hs__key *key = NULL;
  int rc = hs__key_load(key_path, &key, err);
  if (rc != HS_OK) return rc;
  char *text = NULL, *msg = NULL, *sig = NULL;
  size_t len = 0, mlen = 0, slen = 0;
  rc = hs_file_read(real, HS__MAX_CONFIG_BYTES, &text, &len, err);
  if (rc == HS_OK) rc = hs__config_message(model, text, len, &msg, &mlen, err);
  if (rc == HS_OK) rc = hs__sign(key, msg, mlen, &sig, &slen, err);
  if (rc == HS_OK) rc = hs__write_file_atomic(dir, HS_REPO_CONFIG_SIGNATURE_NAME, sig, slen, 0644, err);
  free(text);
  free(msg);
  free(sig);
  hs__key_free(key);
  return rc;
}

static int fsync_path(const char *path, int flags, hs_error *err) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return hs_error_set(err, HS_IO, "%s: %s", path, strerror(errno));
  int rc = fsync(fd) == 0 || errno == EINVAL ? HS_OK : hs_error_set(err, HS_IO, "fsync %s: %s", path, strerror(errno));
  close(fd);
  return rc;
}

/* Creates every missing directory of rel's parent below base. */
static int make_parents(const char *base, const char *rel, hs_error *err) {
  char path[HS_PATH_MAX];
  if (hs__path_join(path, sizeof path, base, rel, err) != HS_OK) return err->code;
  size_t start = strlen(base) + 1;
  for (size_t i = start; path[i]; i++) {
    if (path[i] != '/') continue;
    path[i] = '\0';
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
      int e = errno;
      path[i] = '/';
      return hs_error_set(err, HS_IO, "mkdir %s: %s", path, strerror(e));
    }
    path[i] = '/';
  }
  return HS_OK;
}

/* mkdir -p. */
static int make_dirs(const char *path, hs_error *err) {
  char tmp[HS_PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return hs_error_set(err, HS_LIMIT, "path too long");
  for (char *p = tmp + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return hs_error_set(err, HS_IO, "mkdir %s: %s", tmp, strerror(errno));
    *p = c;
    if (c == '\0') break;
  }
  return HS_OK;
}

/* The copy's chunk: large enough that syscalls cost nothing next to the bytes, small enough to
 * stay in the core's L2 between read(2), hashing and write(2). */
enum { COPY_CHUNK = 256 << 10 };

static int64_t ns_of(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

/* Copies from to the new file to (fsynced) in one pass over the bytes, hashing them as they are
 * written, and records that hash in cache under the copy's identity (device, inode, size, times),
 * so the manifest is built without reading the copy again and names exactly the bytes written.
 * A source that changes while it is copied (size, mtime or ctime move) is refused: the copy could
 * be half old, half new. */
static int copy_file(const char *from, const char *to, hs__hash_cache *cache, hs_error *err) {
  struct stat before;
  hs_error oerr;
  hs_error_clear(&oerr);
  int in = hs_file_open_regular(from, &before, &oerr); /* never blocks on a FIFO swapped in */
  if (in < 0) return hs_error_set(err, HS_IO, "%s: %s", from, oerr.message);
  int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (out < 0) {
    int e = errno;
    close(in);
    return hs_error_set(err, HS_IO, "%s: %s", to, strerror(e));
  }
  posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
  char *buf = malloc(COPY_CHUNK);
  hs_sha256_ctx *sha = buf ? hs_sha256_begin() : NULL;
  int rc = sha ? HS_OK : hs_error_set(err, HS_NO_MEMORY, "out of memory");
  uint64_t copied = 0;
  while (rc == HS_OK) {
    ssize_t r = read(in, buf, COPY_CHUNK);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = hs_error_set(err, HS_IO, "%s: %s", from, strerror(errno));
      break;
    }
    if (r == 0) break;
    hs_sha256_update(sha, buf, (size_t)r);
    copied += (uint64_t)r;
    for (ssize_t off = 0; off < r && rc == HS_OK;) {
      ssize_t w = write(out, buf + off, (size_t)(r - off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0)
        rc = hs_error_set(err, HS_IO, "%s: %s", to, w == 0 ? "short write" : strerror(errno));
      else
        off += w;
    }
  }
  uint8_t digest[32];
  hs_sha256_end(sha, digest);
  free(buf);
  struct stat after;
  if (rc == HS_OK && fstat(in, &after) != 0) rc = hs_error_set(err, HS_IO, "%s: %s", from, strerror(errno));
  if (rc == HS_OK && (copied != (uint64_t)before.st_size || after.st_size != before.st_size ||
                      ns_of(after.st_mtim) != ns_of(before.st_mtim) || ns_of(after.st_ctim) != ns_of(before.st_ctim)))
    rc = hs_error_set(err, HS_IO, "%s changed while it was being published; publish it again once it is complete",
                      from);
  close(in);
  if (rc == HS_OK && fsync(out) != 0) rc = hs_error_set(err, HS_IO, "fsync %s: %s", to, strerror(errno));
  struct stat st;
  if (rc == HS_OK && fstat(out, &st) != 0) rc = hs_error_set(err, HS_IO, "%s: %s", to, strerror(errno));
  if (rc == HS_OK) {
    hs__file copy = {.size = (uint64_t)st.st_size, .mtime_ns = ns_of(st.st_mtim), .ctime_ns = ns_of(st.st_ctim),
                     .dev = (uint64_t)st.st_dev, .ino = (uint64_t)st.st_ino};
    hs__hash_cache_put(cache, &copy, digest);
  }
  if (close(out) != 0 && rc == HS_OK) rc = hs_error_set(err, HS_IO, "%s: %s", to, strerror(errno));
  return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if (flag == FTW_DP)
    rmdir(path);
  else
    unlink(path);
  return 0;
}

static void remove_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* fsyncs every directory below and including dir (deepest first). */
static int fsync_dirs_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if (flag != FTW_DP) return 0;
  return fsync_path(path, O_RDONLY | O_DIRECTORY, NULL) == HS_OK ? 0 : 1;
}

static int64_t next_free_version(const char *model_dir) {
  int64_t max = 0;
  DIR *d = opendir(model_dir);
  if (!d) return 1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *p = e->d_name;
    if (*p < '1' || *p > '9' || strlen(p) > 18) continue;
    int64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
    if (*p == '\0' && v > max) max = v;
  }
  closedir(d);
  return max + 1;
}

/* A staging directory is stale when no publisher holds its lock (flock on the directory, taken
 * right after mkdtemp and held until the rename) and it is older than this, which covers the
 * moment between mkdtemp and flock. */
#define STALE_STAGING_SECONDS 120

/* Removes .staging-* directories left by publishers that died (killed, crashed, power loss). */
static void remove_stale_staging(const char *model_dir) {
  DIR *d = opendir(model_dir);
  if (!d) return;
  time_t now = time(NULL);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, ".staging-", 9) != 0) continue;
    char path[HS_PATH_MAX];
    struct stat st;
    if (hs__path_join(path, sizeof path, model_dir, e->d_name, NULL) != HS_OK) continue;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || now - st.st_mtime < STALE_STAGING_SECONDS) continue;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) { /* no live publisher holds it */
      HS_LOGI("publish: removing %s, left by a publisher that did not finish", path);
      remove_tree(path);
    }
    close(fd);
  }
  closedir(d);
}

/* Renames staging to target unless target exists: 0, or errno (EEXIST when it exists). */
static int rename_noreplace(const char *staging, const char *target) {
  if (renameat2(AT_FDCWD, staging, AT_FDCWD, target, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return errno;
  struct stat st;
  if (lstat(target, &st) == 0) return EEXIST;
  return rename(staging, target) == 0 ? 0 : errno;
}

int hs_repo_publish(const char *src_dir, const char *model_dir, int64_t version, const char *key_path,
                    int64_t *out_version, hs_error *err) {
  if (out_version) *out_version = 0;
  if (version < 0 || version > HS_REPO_VERSION_MAX)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "version must be a positive integer of at most 18 digits "
                        "(the highest a server serves is %lld)", HS_REPO_VERSION_MAX);
  char src_real[PATH_MAX];
  if (!realpath(src_dir, src_real)) return hs_error_set(err, HS_IO, "%s: %s", src_dir, strerror(errno));
  int mrc = make_dirs(model_dir, err);
  if (mrc != HS_OK) return mrc;
  char model_real[PATH_MAX];
  if (!realpath(model_dir, model_real)) return hs_error_set(err, HS_IO, "%s: %s", model_dir, strerror(errno));
  if (hs__path_within(src_real, model_real) || hs__path_within(model_real, src_real))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "source and model directory overlap");
  if (version > 0) {
    char target[HS_PATH_MAX], name[32];
    snprintf(name, sizeof name, "%lld", (long long)version);
    if (hs__path_join(target, sizeof target, model_real, name, err) != HS_OK) return err->code;
    struct stat st;
    if (lstat(target, &st) == 0)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "version %lld already exists in %s (refusing to overwrite)",
                          (long long)version, model_dir);
  }
  /* Check the key before copying gigabytes. */
  if (key_path) {
    hs__key *k = NULL;
    int rc = hs__key_load(key_path, &k, err);
    if (rc != HS_OK) return rc;
    bool public_only = hs__key_kind_of(k) == HS__KEY_ED25519_PUBLIC;
    hs__key_free(k);
    if (public_only)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "%s is a public key; signing needs the private key", key_path);
  }
  hs__listing l;
  hs__verdict v = {0};
  hs__reason r = hs__list_dir(src_real, src_real, 0, 0, &l, &v);
  if (r != HS__R_NONE)
    return hs_error_set(err, r == HS__R_IO ? HS_IO : HS_VERIFY, "%s: %s: %s", src_dir, hs__reason_code(r), v.message);
  if (!hs__listing_find(&l, "model.onnx")) {
    hs__listing_free(&l);
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s has no model.onnx", src_dir);
  }

  remove_stale_staging(model_real);
  char staging[HS_PATH_MAX];
  int rc = hs__path_join(staging, sizeof staging, model_real, ".staging-XXXXXX", err);
  if (rc != HS_OK || !mkdtemp(staging)) {
    hs__listing_free(&l);
    return rc != HS_OK ? rc : hs_error_set(err, HS_IO, "cannot create a staging directory in %s: %s", model_dir, strerror(errno));
  }
  chmod(staging, 0755);
  /* Held until the staging directory is renamed or removed: a publisher that sees it while we
   * copy (remove_stale_staging) leaves it alone; once we die the kernel drops the lock. */
  int lock_fd = open(staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    close(lock_fd);
    lock_fd = -1;
  }
  /* The hash of every copied file, taken from the bytes as they were written (copy_file). */
  hs__hash_cache *cache = hs__hash_cache_new();
  if (!cache) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
  for (size_t i = 0; i < l.n && rc == HS_OK; i++) {
    const hs__file *f = &l.files[i];
    if (strcmp(f->rel, HS_REPO_MANIFEST_NAME) == 0 || strcmp(f->rel, HS_REPO_SIGNATURE_NAME) == 0) continue;
    char to[HS_PATH_MAX];
    rc = make_parents(staging, f->rel, err);
    if (rc == HS_OK) rc = hs__path_join(to, sizeof to, staging, f->rel, err);
    if (rc == HS_OK) rc = copy_file(f->real, to, cache, err);
  }
  hs__listing_free(&l);
  if (rc == HS_OK && nftw(staging, fsync_dirs_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
    rc = hs_error_set(err, HS_IO, "fsync of the staging directory failed");
  /* The model's name as the repository lists it (MODEL_DIR may be a link to elsewhere). */
  char model_name[HS_NAME_MAX];
  const char *base = model_dir + strlen(model_dir);
  while (base > model_dir && base[-1] == '/') base--;
  const char *end = base;
  while (base > model_dir && base[-1] != '/') base--;
  bool dots = (end - base == 1 && base[0] == '.') || (end - base == 2 && base[0] == '.' && base[1] == '.');
  if (end == base || dots || (size_t)(end - base) >= sizeof model_name) {
    base = strrchr(model_real, '/') + 1;
    end = base + strlen(base);
  }
  snprintf(model_name, sizeof model_name, "%.*s", (int)(end - base), base);
  int64_t v_used = version;
  for (int attempt = 0; rc == HS_OK; attempt++) {
    if (version == 0) v_used = next_free_version(model_real);
    if (v_used > HS_REPO_VERSION_MAX) {
      rc = hs_error_set(err, HS_INVALID_ARGUMENT, "no version number left in %s: the highest a server serves is %lld",
                        model_dir, HS_REPO_VERSION_MAX);
      break;
    }
    /* The manifest (written last, dir fsynced) names the model and this number; if another
     * publisher takes the number first, the next attempt signs again for the next one. */
    rc = sign_dir(staging, key_path, model_name, v_used, cache, err);
    if (rc != HS_OK) break;
    char target[HS_PATH_MAX], name[32];
    snprintf(name, sizeof name, "%lld", (long long)v_used);
    rc = hs__path_join(target, sizeof target, model_real, name, err);
    if (rc != HS_OK) break;
    int e = rename_noreplace(staging, target);
    if (e == 0) break;
    if (e == EEXIST && version == 0 && attempt < 100) continue; /* another publisher won this number */
    if (e == EEXIST || e == ENOTEMPTY)
      rc = hs_error_set(err, HS_INVALID_ARGUMENT, "version %lld already exists in %s (refusing to overwrite)",
                        (long long)v_used, model_dir);
    else
      rc = hs_error_set(err, HS_IO, "rename into %s: %s", target, strerror(e));
  }
  hs__hash_cache_free(cache);
  if (rc != HS_OK) remove_tree(staging);
  if (lock_fd >= 0) close(lock_fd);
  if (rc != HS_OK) return rc;
  fsync_path(model_real, O_RDONLY | O_DIRECTORY, NULL);
  if (out_version) *out_version = v_used;
  return HS_OK;
}

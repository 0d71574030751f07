/* read.c - reads a version's files once for loading, checking those very bytes against the manifest.
 *
 * DESIGN: the scanner decides that a version is READY (scan.c), but the loader must not then read
 * the files again by path: a file replaced in between would be loaded without ever being checked.
 * hs_repo_read_version reads every file of the version into memory once, verifies the signature
 * over the manifest bytes it read, and hashes each buffer it read against the manifest; the loader
 * hands the same buffers to the backend (hs_backend.load_buffer). A version without a manifest has
 * nothing to hash; its listing is compared with the one the scan settled on instead.
 * The hash is most of the read's cost (SHA-256 runs at about 2 GB/s: 50 ms for ResNet-50), so
 * hs_repo_read_start runs it on a thread of its own while the loader decodes and compiles the
 * same, read-only buffers; the loader then waits for the verdict (hs_repo_bytes_check) before the
 * version may run at all. The buffers are freed by whichever of the two finishes with them last
 * (hs_repo_bytes_release, check_main), under the check's mutex. No other shared state.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "repo/repo_internal.h"

struct hs__repo_check {
  pthread_t thread;
  bool started;   /* thread runs (false: the hash ran inline) */
  pthread_mutex_t mu;
  bool released;  /* under mu: the loader needs the data no more */
  bool done;      /* under mu: the hash is over */
  int rc;         /* the verdict, with code and err; read after the join */
  char code[32];
  hs_error err;
};

/* CPU time of the calling thread, in ms. */
static double thread_cpu_ms(void) {
  struct timespec t;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0) return 0;
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void free_data(hs_repo_bytes *b) {
  for (size_t i = 0; i < b->n_files; i++) {
    free(b->files[i].data);
    b->files[i].data = NULL;
  }
}

/* Hashes every file still to hash against its manifest digest; records the verdict in b->check. */
static void hash_files(hs_repo_bytes *b) {
  hs__repo_check *c = b->check;
  c->rc = HS_OK;
  hs_error_clear(&c->err);
  for (size_t i = 0; i < b->n_files; i++) {
    hs_repo_file *f = &b->files[i];
    if (!f->to_hash) continue;
    uint8_t sha[32];
    hs_sha256(f->data, f->len, sha);
    b->bytes_hashed += f->len;
    f->to_hash = false;
    if (memcmp(sha, f->sha256, 32) != 0) {
      /* the check that counts: these bytes, the ones the backend decodes */
      snprintf(c->code, sizeof c->code, "manifest_mismatch");
      c->rc = hs_error_set(&c->err, HS_VERIFY, "%s: the bytes read for loading do not match the manifest", f->path);
      break;
    }
  }
}

static void *check_main(void *arg) {
  hs_repo_bytes *b = arg;
  double cpu0 = thread_cpu_ms();
  hash_files(b);
  b->hash_cpu_ms = thread_cpu_ms() - cpu0;
  pthread_mutex_lock(&b->check->mu);
  b->check->done = true;
  if (b->check->released) free_data(b); /* the loader is done with them too */
  pthread_mutex_unlock(&b->check->mu);
  return NULL;
}

void hs_repo_bytes_release(hs_repo_bytes *b) {
  if (!b) return;
  if (!b->check) {
    free_data(b);
    return;
  }
  pthread_mutex_lock(&b->check->mu);
  b->check->released = true;
  if (b->check->done) free_data(b);
  pthread_mutex_unlock(&b->check->mu);
}

int hs_repo_bytes_check(hs_repo_bytes *b, char reason_code[32], hs_error *err) {
  hs__repo_check *c = b->check;
  if (!c) return HS_OK;
  if (c->started) {
    pthread_join(c->thread, NULL);
    c->started = false;
  }
  if (c->rc != HS_OK) {
    snprintf(reason_code, 32, "%s", c->code);
    hs_error_set(err, c->rc, "%s", c->err.message);
    b->verified = false;
  }
  return c->rc;
}

void hs_repo_bytes_free(hs_repo_bytes *b) {
  if (!b) return;
  if (b->check) {
    if (b->check->started) pthread_join(b->check->thread, NULL);
    pthread_mutex_destroy(&b->check->mu);
    free(b->check);
  }
  free_data(b);
  for (size_t i = 0; i < b->n_files; i++) free(b->files[i].path);
  free(b->files);
  free(b);
}

static bool is_reserved(const char *rel) {
  return strcmp(rel, HS_REPO_MANIFEST_NAME) == 0 || strcmp(rel, HS_REPO_SIGNATURE_NAME) == 0;
}

static const hs__manifest_entry *manifest_find(const hs__manifest *m, const char *path) {
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(m->entries[mid].path, path);
    if (c == 0) return &m->entries[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* Sets the refusal: reason code and message; returns HS_VERIFY. */
static int refuse(char code[32], hs_error *err, const char *reason, const char *msg) {
  snprintf(code, 32, "%s", reason);
  return hs_error_set(err, HS_VERIFY, "%s", msg);
}

/* Reads the manifest and signature, checks the signature and parses the manifest; fills fingerprint. */
static int read_manifest(const hs__listing *l, const hs__file *mf, bool require_signature,
                         const hs_trusted_keys *keys, hs__manifest *m, char fingerprint[65], char code[32],
                         hs_error *err) {
  const hs__file *sf = hs__listing_find(l, HS_REPO_SIGNATURE_NAME);
  char *mbytes = NULL, *sbytes = NULL;
  size_t mlen = 0, slen = 0;
  hs__verdict v = {0};
  int rc = hs_file_read(mf->real, HS__MAX_MANIFEST_BYTES, &mbytes, &mlen, err);
  if (rc == HS_OK && sf) rc = hs_file_read(sf->real, HS__MAX_SIGNATURE_BYTES, &sbytes, &slen, err);
  if (rc != HS_OK) {
    if (rc == HS_LIMIT) rc = refuse(code, err, "limit", err->message);
    goto done;
  }
  hs__reason r = HS__R_NONE;
  if (require_signature && !sf)
    r = hs__verdict_set(&v, HS__R_UNSIGNED, "no %s (unsigned version)", HS_REPO_SIGNATURE_NAME);
  else if (sf && (require_signature || keys))
    r = hs__verify_signature(keys, mbytes, mlen, sbytes, slen, &v);
  if (r == HS__R_NONE) r = hs__manifest_parse(mbytes, mlen, 0, 0, m, &v);
  if (r != HS__R_NONE) {
    rc = refuse(code, err, hs__reason_code(r), v.message);
    goto done;
  }
  /* the content's name, as the scanner computes it: SHA-256 over manifest + signature bytes */
  hs_sha256_ctx *ctx = hs_sha256_begin();
  hs_sha256_update(ctx, mbytes, mlen);
  if (slen) hs_sha256_update(ctx, sbytes, slen);
  uint8_t sha[32];
  hs_sha256_end(ctx, sha);
  hs_hex(sha, 32, fingerprint);
done:
  free(mbytes);
  free(sbytes);
  return rc;
}

/* hs_repo_read_version and hs_repo_read_start: background says where the hash runs. */
static int read_version(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                        const hs_trusted_keys *keys, bool background, hs_repo_bytes **out, char reason_code[32],
                        hs_error *err) {
  *out = NULL;
  reason_code[0] = '\0';
  uint64_t t0 = hs_now_ns();
  char bound[PATH_MAX];
  if (!realpath(model_dir, bound)) return hs_error_set(err, HS_IO, "model folder %s: cannot resolve it", model_dir);
  hs__listing l;
  hs__verdict v = {0};
  hs__reason r = hs__list_dir(rv->dir, bound, 0, 0, &l, &v);
  if (r != HS__R_NONE) {
    if (r == HS__R_IO) return hs_error_set(err, HS_IO, "%s", v.message);
    return refuse(reason_code, err, hs__reason_code(r), v.message);
  }
  hs__manifest m = {0};
  bool has_manifest = false;
  hs_repo_bytes *b = calloc(1, sizeof *b);
  int rc = HS_OK;
  if (!b || !(b->files = calloc(l.n ? l.n : 1, sizeof *b->files))) {
    rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
    goto done;
  }
  const hs__file *mf = hs__listing_find(&l, HS_REPO_MANIFEST_NAME);
  char fp[65] = "";
  if (mf) {
    has_manifest = true;
    if ((rc = read_manifest(&l, mf, require_signature, keys, &m, fp, reason_code, err)) != HS_OK) goto done;
  } else if (require_signature) {
    rc = refuse(reason_code, err, "unsigned", "no " HS_REPO_MANIFEST_NAME " (unsigned version)");
    goto done;
  } else {
    uint8_t shape[32];
    hs__listing_digest(&l, shape);
    hs_hex(shape, 32, fp);
  }
  if (strcmp(fp, rv->fingerprint) != 0) {
    /* not what the scan decided on: new content under the same version, which the next scan names */
    rc = refuse(reason_code, err, "changed", "the version's files changed after the scan verified them");
    goto done;
  }
  size_t matched = 0;
  for (size_t i = 0; i < l.n; i++) {
    const hs__file *f = &l.files[i];
    if (is_reserved(f->rel)) continue;
    const hs__manifest_entry *e = has_manifest ? manifest_find(&m, f->rel) : NULL;
    if (has_manifest && !e) {
      rc = refuse(reason_code, err, "manifest_mismatch", "a file is not in the manifest");
      hs_error_prefix(err, "%s", f->rel);
      goto done;
    }
    hs_repo_file *bf = &b->files[b->n_files];
    char *data = NULL;
    size_t len = 0;
    if ((rc = hs_file_read(f->real, HS__DEFAULT_MAX_FILE_BYTES, &data, &len, err)) != HS_OK) {
      hs_error_prefix(err, "%s", f->rel);
      goto done;
    }
    bf->data = data;
    bf->len = len;
    bf->path = strdup(f->rel);
    b->n_files++;
    b->bytes_read += len;
    if (!bf->path) {
      rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
      goto done;
    }
    if (e) {
      /* the size now; the digest of these very bytes by hash_files, before anything built from them runs */
      if (len != e->size) {
        rc = refuse(reason_code, err, "manifest_mismatch", "the bytes read for loading do not match the manifest");
        hs_error_prefix(err, "%s", f->rel);
        goto done;
      }
      bf->to_hash = true;
      memcpy(bf->sha256, e->sha256, 32);
      matched++;
    } else if (len != f->size) {
      rc = refuse(reason_code, err, "changed", "the file changed size after the scan");
      hs_error_prefix(err, "%s", f->rel);
      goto done;
    }
    if (strcmp(f->rel, "model.onnx") == 0) b->model = bf;
  }
  if (has_manifest && matched != m.n) {
    rc = refuse(reason_code, err, "manifest_mismatch", "a file in the manifest is missing");
    goto done;
  }
  if (!b->model) {
    rc = hs_error_set(err, HS_NOT_FOUND, "%s has no model.onnx", rv->dir);
    goto done;
  }
  if (has_manifest) {
    if (!(b->check = calloc(1, sizeof *b->check))) {
      rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
      goto done;
    }
    pthread_mutex_init(&b->check->mu, NULL);
    if (background && pthread_create(&b->check->thread, NULL, check_main, b) == 0) b->check->started = true;
    else hash_files(b); /* inline: asked for, or no thread to be had */
    if (!b->check->started) b->check->done = true;
  }
done:
  hs__manifest_free(&m);
  hs__listing_free(&l);
  if (rc != HS_OK) {
    hs_repo_bytes_free(b);
    return rc;
  }
  b->verified = has_manifest;
  b->read_ms = (double)(hs_now_ns() - t0) / 1e6;
  *out = b;
  return HS_OK;
}

int hs_repo_read_start(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                       const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32], hs_error *err) {
  return read_version(model_dir, rv, require_signature, keys, true, out, reason_code, err);
}

int hs_repo_read_version(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                         const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32], hs_error *err) {
  int rc = read_version(model_dir, rv, require_signature, keys, false, out, reason_code, err);
  if (rc != HS_OK) return rc;
  if ((rc = hs_repo_bytes_check(*out, reason_code, err)) != HS_OK) {
    hs_repo_bytes_free(*out);
    *out = NULL;
  }
  return rc;
}

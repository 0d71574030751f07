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
 *
 * Streaming (hs_repo_read_stream_start): model.onnx is never read whole. The backend's decoder
 * pulls it through stream_next, which reads the next RING_CHUNK piece into a ring of RING_SLOTS
 * buffers and hands it out; the hash thread hashes each piece from the same buffer, behind the
 * decoder, and a buffer is refilled only once the hash is done with its last piece (the decoder is
 * done with it already: it asked for the next one). So the bytes hashed are the bytes parsed, the
 * hash stays off the decoder's path unless it falls RING_SLOTS pieces behind, and the file costs
 * the ring (8 MiB) instead of its size. The verdict (the file's SHA-256, and its size: a file that
 * shrank or grew meanwhile is a mismatch) is known once the last piece is hashed;
 * hs_repo_bytes_check reads what the decoder left unread (a malformed file) and waits for it. The
 * ring's counters are shared with the hash thread under the check's mutex (cv: a piece was read,
 * or hashed). When no thread can be started, stream_next hashes each piece itself.
 *
 * External data (hs_repo_read_stream_files_start): the other files are not read whole either. Each
 * is an ext_stream the backend opens by path (hs_repo_open_file, once) and reads in order through
 * one RING_CHUNK buffer; each piece is hashed as it is read, on the reader's thread (no ring and no
 * second thread: a second reader behind it would buy nothing but the wait). hs_repo_bytes_check
 * opens the files nobody opened and reads what was left unread (the bytes after the last tensor),
 * so every byte is read and hashed once, then judges each file like the model file (size at open,
 * shrunk or grown while read, digest). These streams are touched only by the loading thread.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "base/clock.h"
#include "repo/repo_internal.h"

#define RING_SLOTS 8
#define RING_CHUNK ((size_t)1 << 20)

/* model.onnx read in pieces by the decoder, hashed behind it (see DESIGN). */
typedef struct model_stream {
  int fd;
  uint64_t size;         /* the bytes the file had when opened (= manifest's / listing's size) */
  bool hash;             /* check against sha256 (a manifest covers it) */
  uint8_t sha256[32];
  hs_sha256_ctx *ctx;
  uint8_t *slot[RING_SLOTS];
  size_t slot_len[RING_SLOTS];
  /* under the check's mu: */
  uint64_t filled;   /* pieces read (piece i is in slot i % RING_SLOTS) */
  uint64_t hashed;   /* pieces the hash is done with */
  bool reader_done;  /* no piece comes after filled */
  bool cancelled;    /* hs_repo_bytes_free: the hash stops waiting for pieces */
  /* the reader's (the decoder's, then hs_repo_bytes_check's); read by the hash after reader_done: */
  uint64_t offset;   /* bytes read */
  bool short_read, grew;
  int io_rc;
  hs_error io_err;
  hs_backend_stream api;
} model_stream;

/* A file other than model.onnx streamed on demand (hs_repo_open_file): read in order through one
 * RING_CHUNK buffer and hashed on the reader's thread as it goes (see DESIGN, "External data"). */
typedef struct ext_stream {
  size_t file;      /* its index in b->files */
  char *real;       /* its resolved path, from the listing */
  uint64_t size;    /* the bytes it must have (manifest's, or the scan's) */
  bool hash;        /* check against sha256 (a manifest covers it) */
  uint8_t sha256[32];
  bool opened;      /* opened once (by the backend, or by hs_repo_bytes_check) */
  int fd;           /* -1 when not open */
  hs_sha256_ctx *ctx;
  uint8_t *buf;
  uint64_t offset;  /* bytes read and hashed */
  bool short_read, grew, judged;
  int io_rc;
  hs_error io_err;
  hs_backend_stream api;
} ext_stream;

struct hs__repo_check {
  pthread_t thread;
  bool started;   /* thread runs (false: the hash ran inline) */
  pthread_mutex_t mu;
  pthread_cond_t cv; /* the stream: a piece was read or hashed, or the reader is done */
  bool released;  /* under mu: the loader needs the data no more */
  bool done;      /* under mu: the hash is over */
  int rc;         /* the verdict, with code and err; read after the join */
  char code[32];
  hs_error err;
  model_stream *stream; /* model.onnx streamed (hs_repo_read_stream_start), else NULL */
  ext_stream *ext;      /* the other files, streamed on demand (hs_repo_read_stream_files_start) */
  size_t n_ext;
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
  if (c->rc != HS_OK) return; /* the streamed model file already failed (the first reason stands) */
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

/* ---- the model file streamed (see DESIGN) ---- */

static void ring_free(model_stream *st) {
  for (int i = 0; i < RING_SLOTS; i++) {
    free(st->slot[i]);
    st->slot[i] = NULL;
  }
}

static void stream_free(model_stream *st) {
  if (!st) return;
  ring_free(st);
  if (st->ctx) {
    uint8_t unused[32];
    hs_sha256_end(st->ctx, unused);
  }
  close(st->fd);
  free(st);
}

/* Reads the next piece into its slot, after waiting (with a hash thread) until the hash is done
 * with the piece that used that slot before; without a thread, hashes it here. Sets *k and *got
 * (0: nothing more). Only one thread reads: the decoder, then hs_repo_bytes_check. */
static void stream_read_piece(hs__repo_check *c, int *k, size_t *got_out) {
  model_stream *st = c->stream;
  *got_out = 0;
  pthread_mutex_lock(&c->mu);
  if (st->reader_done) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  uint64_t i = st->filled;
  while (c->started && !st->cancelled && i >= st->hashed + RING_SLOTS) pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  *k = (int)(i % RING_SLOTS);
  uint64_t left = st->size - st->offset;
  size_t want = left < RING_CHUNK ? (size_t)left : RING_CHUNK, got = 0;
  while (got < want) {
    ssize_t n = read(st->fd, st->slot[*k] + got, want - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st->io_rc = hs_error_set(&st->io_err, HS_IO, "model.onnx: %s", strerror(errno));
      break;
    }
    if (n == 0) { /* the file shrank since it was opened */
      st->short_read = true;
      break;
    }
    got += (size_t)n;
  }
  st->offset += got;
  bool last = st->offset == st->size || st->short_read || st->io_rc;
  if (last && !st->short_read && !st->io_rc) { /* the file must end here: one that grew is not the one checked */
    uint8_t extra;
    ssize_t n;
    while ((n = read(st->fd, &extra, 1)) < 0 && errno == EINTR) {}
    st->grew = n > 0;
  }
  if (!c->started && got && st->hash) hs_sha256_update(st->ctx, st->slot[*k], got); /* no hash thread */
  pthread_mutex_lock(&c->mu);
  if (got) {
    st->slot_len[*k] = got;
    st->filled++;
    if (!c->started) st->hashed++;
  }
  if (last) st->reader_done = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  *got_out = got;
}

/* hs_backend_stream.next: the next piece, read now. */
static int stream_next(void *user, const void **data, size_t *len, hs_error *err) {
  hs__repo_check *c = user;
  model_stream *st = c->stream;
  int k = 0;
  size_t got = 0;
  stream_read_piece(c, &k, &got);
  *data = got ? st->slot[k] : NULL;
  *len = got;
  if (!got && st->io_rc) return hs_error_set(err, st->io_rc, "%s", st->io_err.message);
  return HS_OK;
}

/* The stream's verdict into c (after the last piece was hashed): size and digest. */
static void stream_verdict(hs_repo_bytes *b) {
  hs__repo_check *c = b->check;
  model_stream *st = c->stream;
  uint8_t sha[32];
  hs_sha256_end(st->ctx, sha);
  st->ctx = NULL;
  if (st->hash) b->bytes_hashed += st->offset;
  const char *why = NULL;
  if (st->io_rc) why = st->io_err.message;
  else if (st->short_read) why = "the file shrank while it was read for loading";
  else if (st->grew) why = "the file grew while it was read for loading";
  else if (st->hash && memcmp(sha, st->sha256, 32) != 0) why = "the bytes read for loading do not match the manifest";
  if (!why) return;
  /* with a manifest, the bytes parsed were not the verified ones; without one, not the scanned file */
  snprintf(c->code, sizeof c->code, "%s", st->hash ? "manifest_mismatch" : "changed");
  c->rc = hs_error_set(&c->err, HS_VERIFY, "model.onnx: %s", why);
}

/* The hash thread's part of the stream: each piece as it is read, then the verdict. Returns false
 * when cancelled (no verdict). */
static bool stream_hash(hs_repo_bytes *b) {
  hs__repo_check *c = b->check;
  model_stream *st = c->stream;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    while (st->hashed == st->filled && !st->reader_done && !st->cancelled) pthread_cond_wait(&c->cv, &c->mu);
    bool over = st->cancelled || st->hashed == st->filled;
    int k = (int)(st->hashed % RING_SLOTS);
    size_t len = st->slot_len[k];
    pthread_mutex_unlock(&c->mu);
    if (over) break;
    if (st->hash) hs_sha256_update(st->ctx, st->slot[k], len);
    pthread_mutex_lock(&c->mu);
    st->hashed++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_lock(&c->mu);
  bool cancelled = st->cancelled;
  pthread_mutex_unlock(&c->mu);
  if (!cancelled) stream_verdict(b);
  return !cancelled;
}

/* The rest of the stream, which the decoder left unread, read here (and hashed behind). */
static void stream_drain(hs__repo_check *c) {
  int k;
  size_t got;
  do stream_read_piece(c, &k, &got);
  while (got);
}

/* ---- external data files streamed on demand (see DESIGN, "External data") ---- */

static void ext_close(ext_stream *x) {
  if (x->fd >= 0) close(x->fd);
  x->fd = -1;
  free(x->buf);
  x->buf = NULL;
  if (x->ctx) {
    uint8_t unused[32];
    hs_sha256_end(x->ctx, unused);
    x->ctx = NULL;
  }
}

/* hs_backend_stream.next of an external file: its next piece, read and hashed now. A file that
 * shrank ends early (the decoder and the verdict both see it); one that grew is found at its end. */
static int ext_next(void *user, const void **data, size_t *len, hs_error *err) {
  ext_stream *x = user;
  *data = NULL;
  *len = 0;
  if (x->io_rc) return hs_error_set(err, x->io_rc, "%s", x->io_err.message);
  if (x->fd < 0 || x->short_read || x->offset >= x->size) return HS_OK;
  uint64_t left = x->size - x->offset;
  size_t want = left < RING_CHUNK ? (size_t)left : RING_CHUNK, got = 0;
  while (got < want) {
    ssize_t n = read(x->fd, x->buf + got, want - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      x->io_rc = hs_error_set(&x->io_err, HS_IO, "%s", strerror(errno));
      return hs_error_set(err, HS_IO, "%s", x->io_err.message);
    }
    if (n == 0) {
      x->short_read = true;
      break;
    }
    got += (size_t)n;
  }
  x->offset += got;
  if (x->offset == x->size) { /* the file must end here: one that grew is not the one checked */
    uint8_t extra;
    ssize_t n;
    while ((n = read(x->fd, &extra, 1)) < 0 && errno == EINTR) {}
    x->grew = n > 0;
  }
  if (x->hash && got) hs_sha256_update(x->ctx, x->buf, got);
  *data = got ? x->buf : NULL;
  *len = got;
  return HS_OK;
}

/* Opens x (once): its size must still be the one expected. */
static int ext_open(ext_stream *x, hs_error *err) {
  if (x->opened) return hs_error_set(err, HS_INVALID_ARGUMENT, "opened twice (each byte is read once)");
  x->opened = true;
  struct stat stt;
  int fd = hs_file_open_regular(x->real, &stt, err);
  if (fd < 0) {
    x->io_rc = fd;
    x->io_err = *err;
    return fd;
  }
  x->fd = fd;
  if ((uint64_t)stt.st_size != x->size) {
    x->io_rc = hs_error_set(&x->io_err, HS_VERIFY, "the file changed size since the scan");
    return hs_error_set(err, HS_VERIFY, "%s", x->io_err.message);
  }
  if (x->hash) x->ctx = hs_sha256_begin(); /* NULL (no memory): the digest comes out all zero, a mismatch */
  size_t cap = x->size < RING_CHUNK ? (size_t)x->size : RING_CHUNK;
  if (!(x->buf = malloc(cap ? cap : 1))) {
    x->io_rc = hs_error_set(&x->io_err, HS_NO_MEMORY, "out of memory");
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  return HS_OK;
}

int hs_repo_open_file(hs_repo_bytes *b, const char *path, const hs_backend_stream **out, hs_error *err) {
  *out = NULL;
  hs__repo_check *c = b->check;
  for (size_t i = 0; c && i < c->n_ext; i++) {
    ext_stream *x = &c->ext[i];
    if (strcmp(b->files[x->file].path, path) != 0) continue;
    int rc = ext_open(x, err);
    if (rc != HS_OK) return hs_error_prefix(err, "%s", path);
    *out = &x->api;
    return HS_OK;
  }
  return hs_error_set(err, HS_NOT_FOUND, "%s is not a file of the version streamed on demand", path);
}

/* Reads (and hashes) what nobody read of each external file, the files nobody opened included,
 * then judges each: size, growth, digest. The first failure becomes c's verdict. */
static void ext_verdicts(hs_repo_bytes *b) {
  hs__repo_check *c = b->check;
  for (size_t i = 0; i < c->n_ext; i++) {
    ext_stream *x = &c->ext[i];
    if (x->judged) continue;
    x->judged = true;
    hs_error ignored;
    if (!x->opened) ext_open(x, &ignored);
    const void *d;
    size_t len = 1;
    while (!x->io_rc && len) ext_next(x, &d, &len, &ignored);
    uint8_t sha[32] = {0};
    if (x->ctx) hs_sha256_end(x->ctx, sha);
    x->ctx = NULL;
    if (x->hash) b->bytes_hashed += x->offset;
    ext_close(x);
    if (c->rc != HS_OK) continue; /* the first reason stands */
    const char *why = NULL;
    if (x->io_rc) why = x->io_err.message;
    else if (x->short_read) why = "the file shrank while it was read for loading";
    else if (x->grew) why = "the file grew while it was read for loading";
    else if (x->hash && memcmp(sha, x->sha256, 32) != 0) why = "the bytes read for loading do not match the manifest";
    if (!why) continue;
    snprintf(c->code, sizeof c->code, "%s", x->hash ? "manifest_mismatch" : "changed");
    c->rc = hs_error_set(&c->err, HS_VERIFY, "%s: %s", b->files[x->file].path, why);
  }
}

static void ext_free_all(hs__repo_check *c) {
  for (size_t i = 0; i < c->n_ext; i++) {
    ext_close(&c->ext[i]);
    free(c->ext[i].real);
  }
  free(c->ext);
  c->ext = NULL;
  c->n_ext = 0;
}

static void *check_main(void *arg) {
  hs_repo_bytes *b = arg;
  double cpu0 = thread_cpu_ms();
  if (!b->check->stream || stream_hash(b)) hash_files(b);
  b->hash_cpu_ms = thread_cpu_ms() - cpu0;
  pthread_mutex_lock(&b->check->mu);
  b->check->done = true;
  if (b->check->released) { /* the loader is done with them too */
    free_data(b);
    if (b->check->stream) ring_free(b->check->stream);
  }
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
  if (b->check->done) {
    free_data(b);
    if (b->check->stream) ring_free(b->check->stream);
  }
  pthread_mutex_unlock(&b->check->mu);
}

int hs_repo_bytes_check(hs_repo_bytes *b, char reason_code[32], hs_error *err) {
  hs__repo_check *c = b->check;
  if (!c) return HS_OK;
  /* what the decoder left unread (a malformed file): the verdict still covers all of it (returns at
   * once when the stream was read to its end) */
  if (c->stream) stream_drain(c);
  if (c->started) {
    pthread_join(c->thread, NULL);
    c->started = false;
  } else if (c->stream && !c->done) { /* no thread: the pieces were hashed as read; the rest here */
    stream_verdict(b);
    hash_files(b);
    c->done = true;
  }
  ext_verdicts(b); /* after the join: c->rc is this thread's alone now */
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
    if (b->check->stream) { /* the hash stops waiting for pieces nobody will read */
      pthread_mutex_lock(&b->check->mu);
      b->check->stream->cancelled = true;
      pthread_cond_broadcast(&b->check->cv);
      pthread_mutex_unlock(&b->check->mu);
    }
    if (b->check->started) pthread_join(b->check->thread, NULL);
    stream_free(b->check->stream);
    ext_free_all(b->check);
    pthread_cond_destroy(&b->check->cv);
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

/* Opens model.onnx for streaming (see DESIGN): its size must be want (the manifest's or the scan's);
 * digest (NULL: none) is the manifest's SHA-256 to check it against. */
static int stream_open(const char *real, uint64_t want, const uint8_t *digest, model_stream **out, char code[32],
                       hs_error *err) {
  struct stat stt;
  int fd = hs_file_open_regular(real, &stt, err);
  if (fd < 0) return fd;
  if ((uint64_t)stt.st_size > HS__DEFAULT_MAX_FILE_BYTES) {
    close(fd);
    return hs_error_set(err, HS_LIMIT, "%lld bytes, over the limit of %zu", (long long)stt.st_size,
                        HS__DEFAULT_MAX_FILE_BYTES);
  }
  if ((uint64_t)stt.st_size != want) {
    close(fd);
    return digest ? refuse(code, err, "manifest_mismatch", "the bytes read for loading do not match the manifest")
                  : refuse(code, err, "changed", "the file changed size after the scan");
  }
  model_stream *st = calloc(1, sizeof *st);
  if (!st) {
    close(fd);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  st->fd = fd;
  st->size = want;
  if (digest) {
    st->hash = true;
    memcpy(st->sha256, digest, 32);
    st->ctx = hs_sha256_begin(); /* NULL (no memory): the digest comes out all zero, a mismatch */
  }
  size_t slot = want < RING_CHUNK ? (size_t)want : RING_CHUNK;
  for (int i = 0; i < RING_SLOTS; i++)
    if (!(st->slot[i] = malloc(slot ? slot : 1))) {
      stream_free(st);
      return hs_error_set(err, HS_NO_MEMORY, "out of memory");
    }
  *out = st;
  return HS_OK;
}

/* hs_repo_read_version, hs_repo_read_start and hs_repo_read_stream_start: background says where the
 * hash runs, stream whether model.onnx is streamed instead of read whole. */
static int read_version(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                        const hs_trusted_keys *keys, bool background, bool stream, bool stream_files,
                        hs_repo_bytes **out, char reason_code[32], hs_error *err) {
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
  model_stream *ms = NULL; /* model.onnx, when streamed */
  ext_stream *ext = NULL;  /* the other files, when streamed on demand */
  size_t n_ext = 0;
  hs_repo_bytes *b = calloc(1, sizeof *b);
  int rc = HS_OK;
  if (!b || !(b->files = calloc(l.n ? l.n : 1, sizeof *b->files)) ||
      (stream_files && !(ext = calloc(l.n ? l.n : 1, sizeof *ext)))) {
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
    if (stream && strcmp(f->rel, "model.onnx") == 0) { /* not read here: streamed to the backend */
      rc = stream_open(f->real, e ? e->size : f->size, e ? e->sha256 : NULL, &ms, reason_code, err);
      bf->path = rc == HS_OK ? strdup(f->rel) : NULL;
      if (rc == HS_OK && !bf->path) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
      if (rc != HS_OK) {
        hs_error_prefix(err, "%s", f->rel);
        goto done;
      }
      bf->len = (size_t)ms->size;
      b->n_files++;
      b->bytes_read += ms->size;
      b->model = bf;
      if (e) matched++;
      continue;
    }
    if (stream_files) { /* not read here: streamed on demand (hs_repo_open_file), or by the check */
      if ((e ? e->size : f->size) > HS__DEFAULT_MAX_FILE_BYTES) { /* the whole read's limit (hs_file_read) */
        rc = hs_error_set(err, HS_LIMIT, "%llu bytes, over the limit of %zu", (unsigned long long)(e ? e->size : f->size),
                          HS__DEFAULT_MAX_FILE_BYTES);
        hs_error_prefix(err, "%s", f->rel);
        goto done;
      }
      ext_stream *x = &ext[n_ext];
      x->fd = -1;
      x->file = b->n_files;
      x->size = e ? e->size : f->size;
      x->hash = e != NULL;
      if (e) memcpy(x->sha256, e->sha256, 32);
      x->api = (hs_backend_stream){.size = x->size, .next = ext_next, .user = x};
      n_ext++;
      bf->path = strdup(f->rel);
      x->real = strdup(f->real);
      bf->len = (size_t)x->size;
      b->n_files++;
      b->bytes_read += x->size;
      if (!bf->path || !x->real) {
        rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
        goto done;
      }
      if (e) matched++;
      continue;
    }
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
  if (has_manifest || ms) {
    if (!(b->check = calloc(1, sizeof *b->check))) {
      rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
      goto done;
    }
    pthread_mutex_init(&b->check->mu, NULL);
    pthread_cond_init(&b->check->cv, NULL);
    if (ms) {
      b->check->stream = ms;
      ms->api = (hs_backend_stream){.size = ms->size, .next = stream_next, .user = b->check};
      b->stream = &ms->api;
      ms = NULL;
    }
    b->check->ext = ext;
    b->check->n_ext = n_ext;
    ext = NULL;
    if (background && pthread_create(&b->check->thread, NULL, check_main, b) == 0) b->check->started = true;
    else if (!b->check->stream) hash_files(b); /* inline: asked for, or no thread to be had */
    /* (a stream without a thread: stream_next hashes as it reads, hs_repo_bytes_check finishes) */
    if (!b->check->started && !b->check->stream) b->check->done = true;
  }
done:
  stream_free(ms);
  for (size_t i = 0; ext && i < n_ext; i++) free(ext[i].real);
  free(ext);
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
  return read_version(model_dir, rv, require_signature, keys, true, false, false, out, reason_code, err);
}

int hs_repo_read_stream_start(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                              const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32], hs_error *err) {
  return read_version(model_dir, rv, require_signature, keys, true, true, false, out, reason_code, err);
}

int hs_repo_read_stream_files_start(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                                    const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32],
                                    hs_error *err) {
  return read_version(model_dir, rv, require_signature, keys, true, true, true, out, reason_code, err);
}

int hs_repo_read_version(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                         const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32], hs_error *err) {
  int rc = read_version(model_dir, rv, require_signature, keys, false, false, false, out, reason_code, err);
  if (rc != HS_OK) return rc;
  if ((rc = hs_repo_bytes_check(*out, reason_code, err)) != HS_OK) {
    hs_repo_bytes_free(*out);
    *out = NULL;
  }
  return rc;
}

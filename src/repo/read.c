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
 * the ring (512 KiB: in the server the warm-up input takes its mapping next, growing it to the
 * input's size, base/wblock.h; with 256 KiB pieces 1 MiB of it sat at a MobileNetV2 reload's peak
 * where the 588 KiB input needed less) instead of its size. The verdict (the file's SHA-256, and its size: a file that
 * shrank or grew meanwhile is a mismatch) is known once the last piece is hashed;
 * hs_repo_bytes_check reads what the decoder left unread (a malformed file) and waits for it. The
 * rings' counters are shared with the hash thread under the check's mutex (cv: a piece was read
 * or hashed, a stream ended). When no thread can be started, stream_next hashes each piece itself.
 *
 * Read into the reader's buffers (hs_backend_stream.read_into): a large tensor payload is read
 * straight into the buffer the decoder keeps, and queued for the hash like a ring piece, in file
 * order (each ring's queue holds pieces of both kinds); it takes no slot, so the reader never waits
 * for the hash to read it. The hash reads it where it lies, so the backend must leave such a buffer
 * alone until settle (stream_settle: the hash is done with every piece read_into filled) or
 * hs_repo_bytes_release (bytes_done) has returned, which both wait for that. The bytes hashed are
 * still the bytes used, and the decoder copies them once instead of twice. With the reader's frees
 * gated (hs_repo_bytes_gate_frees: the built-in engine, which frees its decoded tensors with
 * hs_wblock_free on the loading thread and never writes into them), settle and the release do not
 * wait: free_gate holds a weight block's free until the hash passed every such piece inside it, so
 * the engine compiles (and reuses freed blocks for reordered weights) while the hash catches up.
 *
 * External data (hs_repo_read_stream_files_start): the other files are not read whole either. Each
 * is a file_stream like model.onnx's, which the backend opens by path (hs_repo_open_file, once) and
 * reads in order through a second ring, shared by these files one after another (the decoder fills
 * its external tensors file by file, while it still holds its current piece of model.onnx: that
 * piece is in the other ring, so reading them cannot overwrite it). The same hash thread hashes the
 * pieces of both rings, each file's in order, into that file's digest. hs_repo_bytes_check opens
 * the files nobody opened and reads what was left unread (the bytes after the last tensor), so
 * every byte is read and hashed once; the thread judges every file like model.onnx once all
 * streams ended (size at open, shrunk or grown while read, digest) and the loader waits for it.
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
#include "base/wblock.h"
#include "repo/repo_internal.h"

#define RING_SLOTS 4
#define RING_CHUNK ((size_t)128 << 10)

typedef struct file_stream file_stream;

/* A piece handed out, waiting for the hash: in a slot of the ring, or (read_into) in the reader's
 * own buffer. */
typedef struct piece {
  const uint8_t *data;
  size_t len;
  file_stream *owner; /* the file it is a piece of */
  int slot;           /* its ring slot; -1: the reader's buffer (read_into) */
} piece;

/* RING_SLOTS buffers that one reader fills with pieces, in order, and the hash thread hashes in
 * the same order; a buffer is refilled only once the hash is done with its piece (see DESIGN).
 * The pieces read straight into the reader's buffers (read_into) queue in the same order. */
typedef struct ring {
  hs_wscratch mem; /* the slots, one mapping (see ring_alloc) */
  uint8_t *slot[RING_SLOTS];
  size_t cap; /* each slot's size */
  /* under the check's mu: */
  piece *q;                 /* pieces filled - hashed .. filled - 1, piece i at q[i % q_cap] */
  size_t q_cap;
  bool busy[RING_SLOTS];    /* the slot holds a piece the hash is not done with */
  int next_slot;            /* the slot the next piece goes into */
  uint64_t filled;          /* pieces read */
  uint64_t hashed;          /* pieces the hash is done with */
  uint64_t direct_end;      /* 1 + the last piece read into the reader's buffer (0: none) */
} ring;

/* One file read in order, in pieces through a ring (see DESIGN): model.onnx, or an external file. */
struct file_stream {
  hs__repo_check *check;
  ring *ring;
  size_t file;        /* its index in b->files */
  char *real;         /* its resolved path (an external file, opened on demand); NULL for model.onnx */
  int fd;             /* -1 when not open (or read to its end) */
  uint64_t size;      /* the bytes it must have (manifest's, or the scan's) */
  bool hash;          /* check against sha256 (a manifest covers it) */
  uint8_t sha256[32];
  hs_sha256_ctx *ctx; /* the hash thread's (the reader's when none runs) */
  bool opened;        /* opened once (model.onnx by the read, another file by the backend or the check) */
  bool ended;         /* under mu: no piece comes after those filled */
  bool judged;        /* its verdict was given (judge) */
  /* the reader's; read by the hash thread once ended: */
  uint64_t offset;    /* bytes read */
  bool short_read, grew;
  int io_rc;
  hs_error io_err;
  hs_backend_stream api;
};

struct hs__repo_check {
  pthread_t thread;
  bool started;   /* thread runs (false: the hash ran inline) */
  pthread_mutex_t mu;
  pthread_cond_t cv; /* a piece was read or hashed, a stream ended, or the hash was cancelled */
  bool released;  /* under mu: the loader needs the data no more */
  bool done;      /* under mu: the hash is over */
  bool cancelled; /* under mu: hs_repo_bytes_free: the hash stops waiting for pieces */
  size_t live;    /* under mu: streams not ended yet */
  int rc;         /* the verdict, with code and err; read after the join */
  char code[32];
  hs_error err;
  ring model_ring, ext_ring; /* model.onnx's pieces; the other files', one file after another */
  file_stream *model;        /* model.onnx streamed (hs_repo_read_stream_start), else NULL */
  file_stream *ext;          /* the other files, streamed on demand (hs_repo_read_stream_files_start) */
  size_t n_ext;
  uint64_t ring_wait_ns; /* the reader's: wall time it waited for the hash to free a slot */
  bool gated;            /* the reader's frees wait on the hash (hs_repo_bytes_gate_frees): no settle */
  uint64_t gate_wait_ns; /* the reader's: wall time its gated frees waited for the hash */
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

/* ---- files streamed through a ring (see DESIGN) ---- */

/* The slots are one mapping of their own, released when the read is over: freed heap pages would
 * stay resident beside the serving version until the next trim, 8 MiB at the peak of a reload
 * (bench/results/load-s23-2026-12-07.md). In the server the next load's ring takes the same mapping,
 * still faulted (base/wblock.h, warm scratch: faulting it afresh cost ~1 ms per load). */
static int ring_alloc(ring *r, uint64_t largest) {
  r->cap = largest < RING_CHUNK ? (size_t)largest : RING_CHUNK;
  uint8_t *all = hs_wscratch_get(&r->mem, r->cap * RING_SLOTS);
  if (!all) return HS_NO_MEMORY;
  for (int i = 0; i < RING_SLOTS; i++) r->slot[i] = all + (size_t)i * r->cap;
  return HS_OK;
}

static void ring_free(ring *r) {
  hs_wscratch_release(&r->mem);
  for (int i = 0; i < RING_SLOTS; i++) r->slot[i] = NULL;
  free(r->q);
  r->q = NULL;
  r->q_cap = 0;
}

static void stream_close(file_stream *st) {
  if (st->fd >= 0) close(st->fd);
  st->fd = -1;
  if (st->ctx) {
    uint8_t unused[32];
    hs_sha256_end(st->ctx, unused);
    st->ctx = NULL;
  }
}

/* Marks st ended (no piece comes after those filled); under the check's mu. */
static void stream_end_locked(hs__repo_check *c, file_stream *st) {
  if (st->ended) return;
  st->ended = true;
  c->live--;
  pthread_cond_broadcast(&c->cv);
}

/* Opens st's file, which must still have st->size bytes; sets up its hash. */
static int stream_open(file_stream *st, const char *real, hs_error *err) {
  st->opened = true;
  struct stat stt;
  int fd = hs_file_open_regular(real, &stt, err);
  if (fd < 0) return fd;
  st->fd = fd;
  if ((uint64_t)stt.st_size != st->size) return hs_error_set(err, HS_VERIFY, "the file changed size since the scan");
  if (st->hash) st->ctx = hs_sha256_begin(); /* NULL (no memory): the digest comes out all zero, a mismatch */
  return HS_OK;
}

/* Queues piece p as r's next; under the check's mu. False when out of memory. */
static bool queue_push(ring *r, piece p) {
  size_t n = (size_t)(r->filled - r->hashed);
  if (n == r->q_cap) { /* full: a bigger queue, each pending piece i moved to i % its size */
    size_t cap = r->q_cap ? r->q_cap * 2 : 2 * RING_SLOTS;
    piece *q = malloc(cap * sizeof *q);
    if (!q) return false;
    for (uint64_t i = r->hashed; i < r->filled; i++) q[i % cap] = r->q[i % r->q_cap];
    free(r->q);
    r->q = q;
    r->q_cap = cap;
  }
  r->q[r->filled % r->q_cap] = p;
  return true;
}

/* Reads st's next bytes, at most want, into dst (ring slot `slot`, or the reader's own buffer when
 * slot < 0) and queues them for the hash; without a hash thread, hashes them here. Returns the
 * bytes read (0: nothing more). A file that shrank ends early, one that grew is found at its end.
 * Only one thread reads: the loader's (the decoder, then hs_repo_bytes_check). */
static size_t stream_read(file_stream *st, uint8_t *dst, size_t want, int slot) {
  hs__repo_check *c = st->check;
  ring *r = st->ring;
  uint64_t left = st->size - st->offset;
  if (want > left) want = (size_t)left;
  size_t got = 0;
  while (got < want) {
    ssize_t n = read(st->fd, dst + got, want - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st->io_rc = hs_error_set(&st->io_err, HS_IO, "%s", strerror(errno));
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
  if (last) {
    close(st->fd);
    st->fd = -1;
  }
  if (!c->started && got && st->hash) hs_sha256_update(st->ctx, dst, got); /* no hash thread */
  pthread_mutex_lock(&c->mu);
  if (got && c->started && !queue_push(r, (piece){dst, got, st, slot})) {
    /* no room to queue it: hashed here, in order, once the hash caught up */
    while (!c->cancelled && r->hashed < r->filled) pthread_cond_wait(&c->cv, &c->mu);
    if (st->hash && !c->cancelled) hs_sha256_update(st->ctx, dst, got);
    slot = -2;
  }
  if (got) {
    if (slot >= 0 && c->started) r->busy[slot] = true;
    if (slot < 0) r->direct_end = r->filled + 1;
    r->filled++;
    if (!c->started || slot == -2) r->hashed++;
  }
  if (last) stream_end_locked(c, st);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return got;
}

/* Reads st's next piece into its ring (slot *k), after waiting (with a hash thread) until the hash
 * is done with the piece that used that slot before. Returns the bytes read (0: nothing more). */
static size_t stream_read_piece(file_stream *st, int *k) {
  hs__repo_check *c = st->check;
  ring *r = st->ring;
  pthread_mutex_lock(&c->mu);
  if (st->ended) {
    pthread_mutex_unlock(&c->mu);
    return 0;
  }
  *k = r->next_slot;
  if (c->started && !c->cancelled && r->busy[*k]) { /* the hash is RING_SLOTS pieces behind */
    uint64_t t0 = hs_now_ns();
    while (c->started && !c->cancelled && r->busy[*k]) pthread_cond_wait(&c->cv, &c->mu);
    c->ring_wait_ns += hs_now_ns() - t0;
  }
  r->next_slot = (*k + 1) % RING_SLOTS;
  pthread_mutex_unlock(&c->mu);
  return stream_read(st, r->slot[*k], r->cap, *k);
}

/* hs_backend_stream.next of a streamed file: its next piece, read now. */
static int stream_next(void *user, const void **data, size_t *len, hs_error *err) {
  file_stream *st = user;
  int k = 0;
  size_t got = stream_read_piece(st, &k);
  *data = got ? st->ring->slot[k] : NULL;
  *len = got;
  if (!got && st->io_rc) return hs_error_set(err, st->io_rc, "%s", st->io_err.message);
  return HS_OK;
}

/* hs_backend_stream.read_into of a streamed file: its next n bytes straight into dst, which the
 * hash then reads there, in file order, behind the reader (see DESIGN). */
static long long stream_read_into(void *user, void *dst, size_t n, hs_error *err) {
  file_stream *st = user;
  hs__repo_check *c = st->check;
  pthread_mutex_lock(&c->mu);
  bool ended = st->ended;
  pthread_mutex_unlock(&c->mu);
  size_t got = ended || !n ? 0 : stream_read(st, dst, n, -1);
  if (got < n && st->io_rc) return hs_error_set(err, st->io_rc, "%s", st->io_err.message);
  return (long long)got;
}

/* Waits until the hash is done with every piece of r read into a reader's buffer; under mu. With
 * the reader's frees gated, returns at once: the gate keeps the rule, block by block. */
static void settle_locked(hs__repo_check *c, ring *r) {
  while (!c->gated && c->started && !c->cancelled && r->hashed < r->direct_end) pthread_cond_wait(&c->cv, &c->mu);
}

/* 1 when a piece of r read into a reader's buffer and not hashed yet lies in [p, p + n); under mu. */
static bool pending_in(const ring *r, const uint8_t *p, size_t n) {
  for (uint64_t i = r->hashed; i < r->direct_end; i++) {
    const piece *q = &r->q[i % r->q_cap];
    if (q->slot < 0 && q->data >= p && q->data < p + n) return true;
  }
  return false;
}

/* hs_wblock's free gate while the reader's frees are gated: a block holding bytes read_into put
 * there is freed only once the hash is done with them. */
static void free_gate(void *user, const void *p, size_t n) {
  hs__repo_check *c = user;
  pthread_mutex_lock(&c->mu);
  uint64_t t0 = 0;
  while (c->started && !c->cancelled && (pending_in(&c->model_ring, p, n) || pending_in(&c->ext_ring, p, n))) {
    if (!t0) t0 = hs_now_ns();
    pthread_cond_wait(&c->cv, &c->mu);
  }
  if (t0) c->gate_wait_ns += hs_now_ns() - t0;
  pthread_mutex_unlock(&c->mu);
}

void hs_repo_bytes_gate_frees(hs_repo_bytes *b, bool on) {
  hs__repo_check *c = b->check;
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  c->gated = on;
  pthread_mutex_unlock(&c->mu);
  if (on) hs_wblock_set_free_gate(free_gate, c);
  else hs_wblock_set_free_gate(NULL, NULL);
}

/* hs_backend_stream.settle of a streamed file: the hash is done with every buffer read_into filled. */
static void stream_settle(void *user) {
  file_stream *st = user;
  hs__repo_check *c = st->check;
  pthread_mutex_lock(&c->mu);
  settle_locked(c, st->ring);
  pthread_mutex_unlock(&c->mu);
}

/* Opens an external file's stream (once): a failure ends the stream, and its verdict names it. */
static int stream_open_ext(file_stream *st, hs_error *err) {
  int rc = stream_open(st, st->real, err);
  if (rc != HS_OK) {
    st->io_rc = rc;
    st->io_err = *err;
    pthread_mutex_lock(&st->check->mu);
    stream_end_locked(st->check, st);
    pthread_mutex_unlock(&st->check->mu);
  }
  return rc;
}

/* What the reader left unread of st (a malformed model, the bytes after an external file's last
 * tensor, a file nobody opened), read here and hashed like the rest. */
static void stream_drain(file_stream *st) {
  hs_error ignored;
  if (!st->opened) stream_open_ext(st, &ignored);
  int k;
  while (stream_read_piece(st, &k)) {}
}

/* The hash thread's part: each piece of every stream as it is read, in the order read. Returns
 * true once every stream ended and all its pieces are hashed, false when cancelled. */
static bool hash_pieces(hs__repo_check *c) {
  pthread_mutex_lock(&c->mu);
  for (;;) {
    ring *r = c->model_ring.hashed < c->model_ring.filled ? &c->model_ring
              : c->ext_ring.hashed < c->ext_ring.filled   ? &c->ext_ring
                                                          : NULL;
    if (c->cancelled || (!r && !c->live)) break;
    if (!r) {
      pthread_cond_wait(&c->cv, &c->mu);
      continue;
    }
    piece p = r->q[r->hashed % r->q_cap];
    pthread_mutex_unlock(&c->mu);
    if (p.owner->hash) hs_sha256_update(p.owner->ctx, p.data, p.len);
    pthread_mutex_lock(&c->mu);
    if (p.slot >= 0) r->busy[p.slot] = false;
    r->hashed++;
    pthread_cond_broadcast(&c->cv);
  }
  bool over = !c->cancelled;
  pthread_mutex_unlock(&c->mu);
  return over;
}

/* st's verdict into c, once all its pieces are hashed: read error, size, growth, digest. The first
 * failure of the version stands. */
static void judge(hs_repo_bytes *b, file_stream *st) {
  hs__repo_check *c = b->check;
  if (st->judged) return;
  st->judged = true;
  uint8_t sha[32] = {0};
  if (st->ctx) hs_sha256_end(st->ctx, sha);
  st->ctx = NULL;
  if (st->hash) b->bytes_hashed += st->offset;
  if (c->rc != HS_OK) return;
  const char *why = NULL;
  if (st->io_rc) why = st->io_err.message;
  else if (st->short_read) why = "the file shrank while it was read for loading";
  else if (st->grew) why = "the file grew while it was read for loading";
  else if (st->hash && memcmp(sha, st->sha256, 32) != 0) why = "the bytes read for loading do not match the manifest";
  if (!why) return;
  /* with a manifest, the bytes parsed were not the verified ones; without one, not the scanned file */
  snprintf(c->code, sizeof c->code, "%s", st->hash ? "manifest_mismatch" : "changed");
  c->rc = hs_error_set(&c->err, HS_VERIFY, "%s: %s", b->files[st->file].path, why);
}

/* Every file's verdict, once every piece is hashed: model.onnx, the files read whole, the others. */
static void verdicts(hs_repo_bytes *b) {
  hs__repo_check *c = b->check;
  if (c->model) judge(b, c->model);
  hash_files(b);
  for (size_t i = 0; i < c->n_ext; i++) judge(b, &c->ext[i]);
}

int hs_repo_open_file(hs_repo_bytes *b, const char *path, const hs_backend_stream **out, hs_error *err) {
  *out = NULL;
  hs__repo_check *c = b->check;
  for (size_t i = 0; c && i < c->n_ext; i++) {
    file_stream *st = &c->ext[i];
    if (strcmp(b->files[st->file].path, path) != 0) continue;
    if (st->opened) return hs_error_set(err, HS_INVALID_ARGUMENT, "%s: opened twice (each byte is read once)", path);
    if (stream_open_ext(st, err) != HS_OK) return hs_error_prefix(err, "%s", path); /* the verdict names it too */
    *out = &st->api;
    return HS_OK;
  }
  return hs_error_set(err, HS_NOT_FOUND, "%s is not a file of the version streamed on demand", path);
}

static void *check_main(void *arg) {
  hs_repo_bytes *b = arg;
  double cpu0 = thread_cpu_ms();
  if (hash_pieces(b->check)) {
    verdicts(b);
    b->bytes_hashed_beside = b->bytes_hashed;
  }
  b->hash_cpu_ms = thread_cpu_ms() - cpu0;
  pthread_mutex_lock(&b->check->mu);
  b->check->done = true;
  if (b->check->released) { /* the loader is done with them too */
    free_data(b);
    ring_free(&b->check->model_ring);
    ring_free(&b->check->ext_ring);
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
  /* the backend's buffers that read_into filled are its own again from here: the hash must be done */
  settle_locked(b->check, &b->check->model_ring);
  settle_locked(b->check, &b->check->ext_ring);
  b->check->released = true;
  if (b->check->done) {
    free_data(b);
    ring_free(&b->check->model_ring);
    ring_free(&b->check->ext_ring);
  }
  pthread_mutex_unlock(&b->check->mu);
}

int hs_repo_bytes_check(hs_repo_bytes *b, char reason_code[32], hs_error *err) {
  hs__repo_check *c = b->check;
  if (!c) return HS_OK;
  b->ring_wait_ms = (double)c->ring_wait_ns / 1e6; /* (the decoder's waits; the drain below is the check's) */
  b->gate_wait_ms = (double)c->gate_wait_ns / 1e6;
  /* what the readers left unread: the verdict still covers every byte (returns at once for a
   * stream read to its end) */
  if (c->model) stream_drain(c->model);
  for (size_t i = 0; i < c->n_ext; i++) stream_drain(&c->ext[i]);
  if (c->started) {
    pthread_join(c->thread, NULL);
    c->started = false;
  } else if (!c->done) { /* no thread: the pieces were hashed as read; the verdicts here */
    verdicts(b);
    c->done = true;
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
  hs__repo_check *c = b->check;
  if (c) {
    pthread_mutex_lock(&c->mu); /* the hash stops waiting for pieces nobody will read */
    c->cancelled = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->started) pthread_join(c->thread, NULL);
    if (c->model) stream_close(c->model);
    free(c->model);
    for (size_t i = 0; i < c->n_ext; i++) {
      stream_close(&c->ext[i]);
      free(c->ext[i].real);
    }
    free(c->ext);
    ring_free(&c->model_ring);
    ring_free(&c->ext_ring);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
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

/* A new stream of b->files[file] (not opened yet): size bytes, hashed against digest (NULL: none). */
static void stream_init(file_stream *st, size_t file, uint64_t size, const uint8_t *digest) {
  *st = (file_stream){.file = file, .fd = -1, .size = size, .hash = digest != NULL};
  if (digest) memcpy(st->sha256, digest, 32);
  st->api = (hs_backend_stream){.size = size, .next = stream_next, .user = st, .read_into = stream_read_into,
                                .settle = stream_settle};
}

/* The hash beside the load (b->check), for the streams ms (model.onnx, or NULL) and ext[0..n_ext):
 * their rings, and the thread when background (inline when none can be started). */
static int start_check(hs_repo_bytes *b, file_stream *ms, file_stream *ext, size_t n_ext, bool background,
                       hs_error *err) {
  hs__repo_check *c = calloc(1, sizeof *c);
  if (!c) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  b->check = c;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->model = ms;
  c->ext = ext;
  c->n_ext = n_ext;
  uint64_t largest = 0;
  for (size_t i = 0; i < n_ext; i++) {
    ext[i].check = c;
    ext[i].ring = &c->ext_ring;
    if (ext[i].size > largest) largest = ext[i].size;
  }
  c->live = n_ext;
  if (ms) {
    ms->check = c;
    ms->ring = &c->model_ring;
    c->live++;
    b->stream = &ms->api;
  }
  if ((ms && ring_alloc(&c->model_ring, ms->size) != HS_OK) || (n_ext && ring_alloc(&c->ext_ring, largest) != HS_OK))
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  /* (no thread: stream_next hashes as it reads, hs_repo_bytes_check gives the verdicts) */
  if (background && pthread_create(&c->thread, NULL, check_main, b) == 0) c->started = true;
  return HS_OK;
}

/* hs_repo_read_version, hs_repo_read_start, hs_repo_read_stream_start and
 * hs_repo_read_stream_files_start: background says where the hash runs, stream whether model.onnx
 * is streamed instead of read whole, stream_files whether the other files are too. */
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
  file_stream *ms = NULL;  /* model.onnx, when streamed */
  file_stream *ext = NULL; /* the other files, when streamed on demand */
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
    if (e) matched++;
    hs_repo_file *bf = &b->files[b->n_files];
    bool is_model = strcmp(f->rel, "model.onnx") == 0;
    if ((stream && is_model) || stream_files) { /* not read here: streamed (see DESIGN) */
      uint64_t size = e ? e->size : f->size;
      if (size > HS__DEFAULT_MAX_FILE_BYTES) { /* the whole read's limit (hs_file_read) */
        rc = hs_error_set(err, HS_LIMIT, "%llu bytes, over the limit of %zu", (unsigned long long)size,
                          HS__DEFAULT_MAX_FILE_BYTES);
        hs_error_prefix(err, "%s", f->rel);
        goto done;
      }
      file_stream *st = is_model ? (ms = calloc(1, sizeof *ms)) : &ext[n_ext++];
      if (st) stream_init(st, b->n_files, size, e ? e->sha256 : NULL);
      bf->path = strdup(f->rel);
      bf->len = (size_t)size;
      b->n_files++;
      b->bytes_read += size;
      if (!st || !bf->path || (!is_model && !(st->real = strdup(f->real)))) {
        rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
        goto done;
      }
      if (is_model) {
        b->model = bf;
        /* model.onnx is opened now: a size other than the one checked is refused at once */
        if ((rc = stream_open(ms, f->real, err)) == HS_VERIFY)
          rc = e ? refuse(reason_code, err, "manifest_mismatch", "the bytes read for loading do not match the manifest")
                 : refuse(reason_code, err, "changed", "the file changed size after the scan");
        if (rc != HS_OK) {
          hs_error_prefix(err, "%s", f->rel);
          goto done;
        }
      }
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
    } else if (len != f->size) {
      rc = refuse(reason_code, err, "changed", "the file changed size after the scan");
      hs_error_prefix(err, "%s", f->rel);
      goto done;
    }
    if (is_model) b->model = bf;
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
    rc = start_check(b, ms, ext, n_ext, background, err);
    if (b->check) { /* which holds them now */
      ms = NULL;
      ext = NULL;
    }
  }
done:
  if (ms) stream_close(ms);
  free(ms);
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

/* batch.c - dynamic batching of one version's requests: gather, stack along dim 0, run once, split back.
 *
 * DESIGN
 * Threads: there is no batcher thread. The request that finds no open batch it fits becomes the
 * batch's *leader*: it opens a batch (on its own stack) in the version's list of open batches and
 * waits on the batch's condition variable until the batch reaches a preferred size or
 * max_batch_size, or until max_queue_delay_microseconds after its own arrival. Then it takes a
 * compute slot and a session like any request (hs_version_take); the batch stays open, so requests
 * keep joining while every session is busy, until the leader holds a session (or the batch is
 * full). The leader closes the batch and hands it to a compute thread (compute.c; a one-thread
 * model's batch runs on the leader's own thread), which stacks the members' inputs, runs once, calls
 * each member's deliver callback with that member's rows of the outputs, gives the session back
 * and wakes the followers, while the leader waits for it like them: each request is woken once.
 * *Followers* (requests that joined) append a member record (on their own stack) and sleep on their
 * own condition variable until the run marks them done; a follower that fills the batch closes
 * it and wakes the leader. Requests that fit no open batch (other trailing shapes, too many rows)
 * lead a batch of their own, so different shapes never share a run.
 * Versions: the batcher belongs to one version and a request joins only its own acquired version's
 * batcher, so a batch never mixes versions. A swap closes the old version's open batches
 * (hs_batcher_close, from the registry's publish): their leaders stop waiting and run them on the
 * old version, while new requests acquire the new version and gather there.
 * Failure: a batched run that fails (or whose outputs do not split along dim 0) is run again one
 * request at a time on the same session, so each request gets its own outcome and error and one bad
 * request fails no other; outputs that never split turn batching off for the version (logged once).
 * Locks: one mutex per batcher, held only to join or close a batch, never across a wait for a
 * session or a run, and never shared with another model or version.
 * Wake-ups: each waiting request sleeps on a futex word of its own (a follower on its member record,
 * the leader on its batch), and whoever wakes it sets the word first and calls FUTEX_WAKE after
 * letting every lock go, so a woken thread never finds the waker still holding a lock it needs (a
 * condition variable signalled under its mutex costs a second sleep and wake-up when the woken
 * thread runs at once on the other core); a follower that has not gone to sleep yet costs no system
 * call at all. The wake may reach a word whose owner has already returned: that is harmless (the
 * kernel finds no waiter, or one that treats it as spurious, as every futex user must).
 * Shutdown: nothing to stop. Every batch is run within its leader's delay plus one run;
 * the batcher is freed with its version, which happens only after its last request.
 */
#include "serving/batch.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "serving/compute.h"

_Static_assert(sizeof(atomic_uint) == sizeof(uint32_t), "a futex word is 32 bits");

/* Sleeps while *w == seen (until deadline, a CLOCK_MONOTONIC time, when not NULL); may return early
 * (a wake-up, a signal, a stale wake): the caller checks its condition again. ETIMEDOUT once the
 * deadline has passed, else 0. */
static int word_wait(atomic_uint *w, unsigned seen, const struct timespec *deadline) {
  long rc = deadline ? syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET_PRIVATE, seen, deadline, NULL,
                               FUTEX_BITSET_MATCH_ANY)
                     : syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
  return rc == -1 && errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* Wakes the thread sleeping on w (after the caller changed *w); w may belong to a record that has
 * gone since (see Wake-ups in the DESIGN). */
static void word_wake(atomic_uint *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

/* A follower's state word */
enum { MEMBER_WAITING = 0, MEMBER_DONE = 1, MEMBER_SLEEPING = 2 };

/* One request in a batch; lives on its own thread's stack while it waits. */
typedef struct member {
  hs_batch_request *req;
  hs_error *err;
  int64_t rows;
  uint64_t arrive_ns;
  int rc;
  atomic_uint state;  /* MEMBER_*: the run sets DONE (release) after the member's outputs are delivered */
  struct member *next;
} member;

/* One batch; lives on its leader's stack. Members are listed in arrival order, leader first. */
typedef struct batch {
  member *head, *tail;
  size_t n;
  int64_t rows;
  bool closed;        /* no longer in the open list: nobody may join */
  atomic_uint wake;   /* the leader sleeps on it while it gathers; bumped (under mu) to wake it */
  struct batch *next; /* in hs_batcher.open */
} batch;

struct hs_batcher {
  hs_version *v;
  const char *model;        /* the model's name, for log lines */
  hs_batch_stats *stats;
  int max_batch_size;
  int preferred[16];
  size_t n_preferred;
  uint64_t delay_ns;
  pthread_mutex_t mu;
  batch *open;              /* open batches, guarded by mu */
  atomic_bool off;          /* outputs did not split along dim 0: batching stops for this version */
  bool retired;             /* hs_batcher_close: no more waiting for company (guarded by mu) */
};

bool hs_batch_full(const int *preferred, size_t n_preferred, int max_batch_size, int rows) {
  if (rows >= max_batch_size) return true;
  for (size_t i = 0; i < n_preferred; i++)
    if (preferred[i] == rows) return true;
  return false;
}

static int check_io(const char *what, const hs_io_desc *d, hs_error *err) {
  if (d->ndim < 1)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s %s is a scalar: batching needs a first (batch) dimension", what,
                        d->name);
  if (d->dims[0] >= 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT,
                        "%s %s has a fixed first dimension (%" PRId64 "); batching needs it dynamic (-1 or symbolic)",
                        what, d->name, d->dims[0]);
  if (hs_dtype_size(d->dtype) == 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s %s: datatype cannot be batched", what, d->name);
  return HS_OK;
}

int hs_batch_check_signature(const hs_version *v, hs_error *err) {
  for (size_t i = 0; i < hs_version_num_inputs(v); i++) {
    int rc = check_io("input", hs_version_input(v, i), err);
    if (rc != HS_OK) return rc;
  }
  for (size_t i = 0; i < hs_version_num_outputs(v); i++) {
    int rc = check_io("output", hs_version_output(v, i), err);
    if (rc != HS_OK) return rc;
  }
  return HS_OK;
}

int hs_batcher_create(hs_version *v, const char *model, const hs_model_config *cfg, hs_batch_stats *stats,
                      hs_batcher **out, hs_error *err) {
  hs_batcher *b = calloc(1, sizeof *b);
  if (!b) return hs_error_set(err, HS_NO_MEMORY, "out of memory for the batcher");
  b->v = v;
  b->model = model;
  b->stats = stats;
  b->max_batch_size = cfg->max_batch_size;
  b->n_preferred = cfg->n_preferred;
  memcpy(b->preferred, cfg->preferred_batch_size, cfg->n_preferred * sizeof b->preferred[0]);
  b->delay_ns = (uint64_t)cfg->max_queue_delay_us * 1000u;
  pthread_mutex_init(&b->mu, NULL);
  atomic_init(&b->off, false);
  *out = b;
  return HS_OK;
}

void hs_batcher_free(hs_batcher *b) {
  if (!b) return;
  pthread_mutex_destroy(&b->mu);
  free(b);
}

void hs_batcher_close(hs_batcher *b) {
  if (!b) return;
  pthread_mutex_lock(&b->mu);
  b->retired = true;
  for (batch *bt = b->open; bt; bt = bt->next) {
    bt->closed = true;
    atomic_fetch_add_explicit(&bt->wake, 1, memory_order_relaxed);
    /* under the lock: a leader cannot leave its wait (nor its batch its stack) without taking it */
    word_wake(&bt->wake); /* its leader stops gathering */
  }
  b->open = NULL;
  pthread_mutex_unlock(&b->mu);
}

size_t hs_batcher_open_requests(hs_batcher *b) {
  if (!b) return 0;
  size_t n = 0;
  pthread_mutex_lock(&b->mu);
  for (batch *bt = b->open; bt; bt = bt->next) n += bt->n;
  pthread_mutex_unlock(&b->mu);
  return n;
}

bool hs_batch_accepts(const hs_batcher *b, const hs_tensor *ins, size_t n_in) {
  if (!b || n_in == 0 || atomic_load_explicit(&b->off, memory_order_relaxed)) return false;
  int64_t rows = ins[0].ndim >= 1 ? ins[0].dims[0] : 0;
  if (rows < 1 || rows > b->max_batch_size) return false;
  for (size_t i = 0; i < n_in; i++)
    if (ins[i].ndim < 1 || ins[i].dims[0] != rows) return false;
  return true;
}

/* Same inputs but for the first dimension: the requests can be stacked. */
static bool same_trailing(const hs_batch_request *a, const hs_batch_request *b) {
  if (a->n_in != b->n_in) return false;
  for (size_t i = 0; i < a->n_in; i++) {
    const hs_tensor *x = &a->ins[i], *y = &b->ins[i];
    if (x->dtype != y->dtype || x->ndim != y->ndim) return false;
    for (int k = 1; k < x->ndim; k++)
      if (x->dims[k] != y->dims[k]) return false;
  }
  return true;
}

/* Removes bt from the open list (under b->mu). */
static void close_batch(hs_batcher *b, batch *bt) {
  if (bt->closed) return;
  for (batch **p = &b->open; *p; p = &(*p)->next)
    if (*p == bt) {
      *p = bt->next;
      break;
    }
  bt->closed = true;
}

/* Runs one member alone on session s and delivers its outputs. */
static void run_alone(hs_batcher *b, hs_backend_session *s, member *mb, hs_tensor *outs, size_t n_out) {
  const hs_backend *be = hs_version_backend(b->v);
  uint64_t t0 = hs_now_ns();
  mb->rc = be->run(s, mb->req->ins, mb->req->n_in, outs, n_out, mb->err);
  mb->req->compute_ns = hs_now_ns() - t0;
  mb->req->batch_size = (uint32_t)mb->rows;
  hs_batch_stats_observe(b->stats, (uint64_t)mb->rows);
  if (mb->rc == HS_OK) mb->rc = mb->req->deliver(mb->req->ctx, outs, n_out, mb->err);
}

/* Stacks the members' inputs into bufs (one allocation per input, which the caller frees) and
 * describes them in ins. */
static int stack_inputs(const batch *bt, hs_tensor *ins, void **bufs, size_t n_in) {
  for (size_t i = 0; i < n_in; i++) {
    size_t total = 0;
    for (const member *mb = bt->head; mb; mb = mb->next) total += mb->req->ins[i].nbytes;
    bufs[i] = malloc(total ? total : 1);
    if (!bufs[i]) return HS_NO_MEMORY;
    ins[i] = bt->head->req->ins[i];
    ins[i].dims[0] = bt->rows;
    ins[i].data = bufs[i];
    ins[i].nbytes = total;
    unsigned char *d = bufs[i];
    for (const member *mb = bt->head; mb; mb = mb->next) {
      if (mb->req->ins[i].nbytes) memcpy(d, mb->req->ins[i].data, mb->req->ins[i].nbytes);
      d += mb->req->ins[i].nbytes;
    }
  }
  return HS_OK;
}

/* True when every output has the batch's rows as its first dimension. */
static bool outputs_split(const hs_tensor *outs, size_t n_out, int64_t rows) {
  for (size_t j = 0; j < n_out; j++)
    if (outs[j].ndim < 1 || outs[j].dims[0] != rows || outs[j].nbytes % (size_t)rows != 0) return false;
  return true;
}

/* The leader's part once it holds session s and the batch is closed: run, split, deliver. */
static void run_batch(hs_batcher *b, hs_backend_session *s, batch *bt) {
  const hs_backend *be = hs_version_backend(b->v);
  size_t n_in = bt->head->req->n_in, n_out = hs_version_num_outputs(b->v);
  hs_tensor *outs = calloc(n_out ? n_out : 1, sizeof *outs);
  hs_tensor *slice = calloc(n_out ? n_out : 1, sizeof *slice);
  hs_tensor *ins = calloc(n_in, sizeof *ins);
  void **bufs = calloc(n_in, sizeof *bufs);
  uint64_t t0 = hs_now_ns();
  for (member *mb = bt->head; mb; mb = mb->next) mb->req->queue_ns = t0 - mb->arrive_ns;
  if (!outs || !slice || !ins || !bufs) {
    for (member *mb = bt->head; mb; mb = mb->next)
      mb->rc = hs_error_set(mb->err, HS_NO_MEMORY, "out of memory batching %zu requests", bt->n);
    goto done;
  }
  if (bt->n == 1) {
    run_alone(b, s, bt->head, outs, n_out);
    goto done;
  }
  hs_error berr;
  hs_error_clear(&berr);
  int rc = stack_inputs(bt, ins, bufs, n_in);
  if (rc != HS_OK) hs_error_set(&berr, rc, "out of memory stacking %zu requests", bt->n);
  else rc = be->run(s, ins, n_in, outs, n_out, &berr);
  uint64_t compute = hs_now_ns() - t0;
  if (rc == HS_OK && !outputs_split(outs, n_out, bt->rows)) {
    rc = hs_error_set(&berr, HS_INTERNAL, "the outputs' first dimension is not the batch's %" PRId64 " rows",
                      bt->rows);
    if (!atomic_exchange(&b->off, true))
      HS_LOGW("model %s version %" PRId64 ": dynamic batching turned off: %s", b->model,
              hs_version_number(b->v), berr.message);
  }
  if (rc != HS_OK) { /* each request again on its own, so each gets its own outcome */
    HS_LOGD("model %s version %" PRId64 ": a batch of %zu requests failed (%s); running them one by one",
            b->model, hs_version_number(b->v), bt->n, berr.message);
    atomic_fetch_add_explicit(&b->stats->retried, 1, memory_order_relaxed);
    for (member *mb = bt->head; mb; mb = mb->next) run_alone(b, s, mb, outs, n_out);
    goto done;
  }
  hs_batch_stats_observe(b->stats, (uint64_t)bt->rows);
  int64_t row = 0;
  for (member *mb = bt->head; mb; mb = mb->next) {
    for (size_t j = 0; j < n_out; j++) {
      size_t row_bytes = outs[j].nbytes / (size_t)bt->rows;
      slice[j] = outs[j];
      slice[j].dims[0] = mb->rows;
      slice[j].data = (unsigned char *)outs[j].data + (size_t)row * row_bytes;
      slice[j].nbytes = (size_t)mb->rows * row_bytes;
    }
    row += mb->rows;
    mb->req->compute_ns = compute;
    mb->req->batch_size = (uint32_t)bt->rows;
    mb->rc = mb->req->deliver(mb->req->ctx, slice, n_out, mb->err);
  }
done:
  for (size_t i = 0; bufs && i < n_in; i++) free(bufs[i]);
  free(bufs);
  free(ins);
  free(slice);
  free(outs);
}

/* A closed batch and the session its leader took, handed to a compute thread (compute.c). */
typedef struct batch_job {
  hs_batcher *b;
  hs_backend_session *s;
  batch *bt;
} batch_job;

/* On the compute thread: run the batch, give the session back, wake the followers (the leader
 * wakes when this returns). */
static void batch_job_run(void *arg) {
  batch_job *j = arg;
  hs_batcher *b = j->b;
  run_batch(b, j->s, j->bt);
  hs_version_give(b->v, j->s);
  /* the batch is closed, so its member list no longer changes; a follower returns (and its record
   * goes) as soon as it sees MEMBER_DONE, so read next first and touch nothing of it afterwards
   * but the futex word's address */
  for (member *mb = j->bt->head->next, *next; mb; mb = next) {
    next = mb->next;
    if (atomic_exchange_explicit(&mb->state, MEMBER_DONE, memory_order_acq_rel) == MEMBER_SLEEPING)
      word_wake(&mb->state);
  }
}

static void deadline_to_timespec(uint64_t ns, struct timespec *ts) {
  ts->tv_sec = (time_t)(ns / 1000000000u);
  ts->tv_nsec = (long)(ns % 1000000000u);
}

/* A follower waits until the run has delivered its outputs. */
static void member_wait(member *me) {
  for (;;) {
    unsigned s = MEMBER_WAITING;
    if (!atomic_compare_exchange_strong_explicit(&me->state, &s, MEMBER_SLEEPING, memory_order_acquire,
                                                 memory_order_acquire) &&
        s == MEMBER_DONE)
      return;
    word_wait(&me->state, MEMBER_SLEEPING, NULL);
    if (atomic_load_explicit(&me->state, memory_order_acquire) == MEMBER_DONE) return;
  }
}

int hs_batch_run(hs_batcher *b, hs_batch_request *req, hs_error *err) {
  member me = {.req = req, .err = err, .rows = req->ins[0].dims[0], .arrive_ns = hs_now_ns()};
  req->queue_ns = req->compute_ns = 0;
  req->batch_size = 0;
  pthread_mutex_lock(&b->mu);
  for (batch *bt = b->open; bt; bt = bt->next) {
    if (bt->rows + me.rows > b->max_batch_size || !same_trailing(bt->head->req, req)) continue;
    /* follower: join, maybe close it, wait for the leader to run it */
    bt->tail->next = &me;
    bt->tail = &me;
    bt->n++;
    bt->rows += me.rows;
    if (bt->rows >= b->max_batch_size) close_batch(b, bt);
    atomic_uint *leader = NULL;
    if (hs_batch_full(b->preferred, b->n_preferred, b->max_batch_size, (int)bt->rows)) {
      leader = &bt->wake;
      atomic_fetch_add_explicit(leader, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&b->mu);
    if (leader) word_wake(leader); /* outside the lock, which the leader takes as it wakes */
    member_wait(&me);
    return me.rc;
  }
  /* leader: open a batch and gather until it is full enough or the delay is over */
  batch bt = {.head = &me, .tail = &me, .n = 1, .rows = me.rows};
  bool full = hs_batch_full(b->preferred, b->n_preferred, b->max_batch_size, (int)bt.rows);
  if (bt.rows >= b->max_batch_size || b->retired) {
    bt.closed = true; /* nothing more fits, or the version was swapped out: never open */
  } else {
    bt.next = b->open;
    b->open = &bt;
  }
  if (!full && !bt.closed && b->delay_ns > 0) {
    struct timespec ts;
    deadline_to_timespec(me.arrive_ns + b->delay_ns, &ts);
    while (!bt.closed && !hs_batch_full(b->preferred, b->n_preferred, b->max_batch_size, (int)bt.rows)) {
      unsigned seen = atomic_load_explicit(&bt.wake, memory_order_relaxed);
      pthread_mutex_unlock(&b->mu);
      int rc = word_wait(&bt.wake, seen, &ts);
      pthread_mutex_lock(&b->mu);
      if (rc == ETIMEDOUT) break;
    }
  }
  pthread_mutex_unlock(&b->mu);
  /* still open while the model's sessions are busy: more requests may join until we hold one */
  hs_backend_session *s = hs_version_take(b->v);
  pthread_mutex_lock(&b->mu);
  close_batch(b, &bt);
  pthread_mutex_unlock(&b->mu);

  batch_job job = {.b = b, .s = s, .bt = &bt};
  hs_compute_run_for(hs_version_threads(b->v), batch_job_run, &job); /* runs it, gives s back, wakes the followers */
  return me.rc;
}

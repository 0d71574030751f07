/* compute.c - the process-wide pool of compute threads that run model sessions (see compute.h).
 *
 * DESIGN
 * Why: libgomp gives every thread that starts a parallel region its own team of `threads - 1`
 * workers and keeps it as long as that thread lives. When connection threads ran sessions, a server
 * with 32 kept-alive connections and --threads 8 held 32 teams (267 threads, issue 16). Here only
 * compute threads run sessions, so the teams are bounded by the pool.
 * Threads: workers are started on demand, when a run arrives and no worker is idle, up to the cap;
 * a request holds a session before it hands its run over, so the workers busy at once are bounded by
 * the sessions held at once (and the cap bounds them absolutely). Idle workers wait on a stack, and
 * a run goes to the one that went idle last: under light load the same few threads (and their
 * OpenMP teams, caches) do all the work. At the cap, runs wait in a FIFO queue that a worker drains
 * before it goes idle. Workers never exit; they are detached and outlive nothing they reference
 * (a run's job lives on the caller's stack until the worker marks it done).
 * Hand-off: one mutex for the pool, held only to push or pop a job or a worker; one condition
 * variable per worker (so a wake-up goes to exactly that worker) and one per waiting run (on the
 * caller's stack). A run costs the caller two wake-ups: the worker's and its own, about 8-30 µs of
 * CPU time on the 2-core development machine (bench/serve/exec_cost.sh), which is why one-thread
 * runs, which start no team, skip the pool (hs_compute_run_for).
 */
#include "serving/compute.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/log.h"

typedef struct job {
  void (*fn)(void *);
  void *arg;
  bool done;          /* set by the worker under g_mu */
  pthread_cond_t cv;  /* the caller waits here for done */
  struct job *next;   /* in the FIFO queue */
} job;

typedef struct worker {
  job *job;           /* the run handed to this idle worker (under g_mu) */
  pthread_cond_t cv;  /* the idle worker waits here for job */
  struct worker *next_idle;
} worker;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static worker *g_idle;             /* idle workers, the last one idle on top */
static job *g_head, *g_tail;       /* runs waiting for a worker (only at the cap) */
static int g_threads;              /* workers started */
static int g_max;                  /* the cap; 0 until first set */
static _Thread_local bool t_on_worker;

static int default_max(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  int cap = n > 0 ? (int)(2 * n) : 4;
  return cap < 4 ? 4 : cap;
}

/* Marks j done and wakes its caller (under g_mu). */
static void finish(job *j) {
  j->done = true;
  pthread_cond_signal(&j->cv);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  t_on_worker = true;
  pthread_mutex_lock(&g_mu);
  for (;;) {
    while (!w->job) pthread_cond_wait(&w->cv, &g_mu);
    job *j = w->job;
    w->job = NULL;
    pthread_mutex_unlock(&g_mu);
    j->fn(j->arg);
    pthread_mutex_lock(&g_mu);
    finish(j);
    if (g_head) { /* at the cap: the oldest waiting run next */
      w->job = g_head;
      g_head = g_head->next;
      if (!g_head) g_tail = NULL;
    } else {
      w->next_idle = g_idle;
      g_idle = w;
    }
  }
  return NULL;
}

/* Starts a worker whose first run is j (NULL: none yet; the caller lists it idle), under g_mu.
 * NULL when no thread could be started. */
static worker *start_worker(job *j) {
  worker *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  pthread_cond_init(&w->cv, NULL);
  w->job = j;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t th;
  int rc = pthread_create(&th, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    pthread_cond_destroy(&w->cv);
    free(w);
    return NULL;
  }
  g_threads++;
  return w;
}

int hs_compute_start(int max_threads, int prestart) {
  pthread_mutex_lock(&g_mu);
  g_max = max_threads > 0 ? max_threads : default_max();
  int cap = g_max;
  while (g_threads < prestart && g_threads < cap) {
    worker *w = start_worker(NULL);
    if (!w) break;
    w->next_idle = g_idle; /* it waits for its first run under g_mu, which we hold */
    g_idle = w;
  }
  pthread_mutex_unlock(&g_mu);
  return cap;
}

void hs_compute_run(void (*fn)(void *arg), void *arg) {
  if (t_on_worker) { /* a run inside a run: never wait for a worker this one may be keeping busy */
    fn(arg);
    return;
  }
  job j = {.fn = fn, .arg = arg};
  pthread_cond_init(&j.cv, NULL);
  pthread_mutex_lock(&g_mu);
  if (!g_max) g_max = default_max();
  if (g_idle) {
    worker *w = g_idle;
    g_idle = w->next_idle;
    w->job = &j;
    pthread_cond_signal(&w->cv);
  } else if (g_threads >= g_max || !start_worker(&j)) {
    if (g_threads == 0) { /* no worker could ever be started: run here rather than never */
      pthread_mutex_unlock(&g_mu);
      HS_LOGW("no compute thread could be started; running on the request's thread");
      fn(arg);
      pthread_cond_destroy(&j.cv);
      return;
    }
    if (g_tail) g_tail->next = &j;
    else g_head = &j;
    g_tail = &j;
  }
  while (!j.done) pthread_cond_wait(&j.cv, &g_mu);
  pthread_mutex_unlock(&g_mu);
  pthread_cond_destroy(&j.cv);
}

void hs_compute_run_for(int threads, void (*fn)(void *arg), void *arg) {
  if (threads == 1) fn(arg);
  else hs_compute_run(fn, arg);
}

int hs_compute_max_threads(void) {
  pthread_mutex_lock(&g_mu);
  int n = g_max ? g_max : default_max();
  pthread_mutex_unlock(&g_mu);
  return n;
}

int hs_compute_threads(void) {
  pthread_mutex_lock(&g_mu);
  int n = g_threads;
  pthread_mutex_unlock(&g_mu);
  return n;
}

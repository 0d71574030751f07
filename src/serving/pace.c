/* pace.c - load pacing: the loader sleeps between pieces of a load while requests are in flight.
 *
 * DESIGN
 * A reload competes with the requests for the same cores. Its lower CPU priority
 * (--loader-priority) limits its share only statistically, and only once the cores are saturated;
 * pacing caps it by the clock (--loader-pace PCT): while any request is in flight the loader uses
 * at most PCT% of one core's time over any stretch longer than a few ms, and when no request is in
 * flight it runs at full speed (so an idle server's time to ready does not grow). It is a token
 * bucket on the loader thread's CPU time: tokens accrue at PCT% of wall time, up to a burst of
 * HS_PACE_BURST_NS; every pace point the engine calls (hs_engine_set_pace: each piece of the model
 * file, each node's kernel build, each node of the warm-up runs) takes the CPU used since the last
 * one, and when the bucket is empty the loader sleeps, in slices of at most HS_PACE_SLICE_NS, until
 * it is refilled, the server goes idle or it is stopping; before each sleep it frees the versions
 * that died meanwhile (hs__loader_reap), which would otherwise wait for the load's end. The read's hash runs on a thread of its own
 * behind the decoder (repo/read.c), so each piece streamed is also charged the hash's CPU for its
 * bytes at the rate the last load measured. The time slept is reported per version (status:
 * paced_ms) and in total (hotserve_loader_paced_seconds_total).
 * Idle points: a point that finds no request in flight reads no clock (CLOCK_THREAD_CPUTIME_ID is a
 * system call, and where the clock source has no vDSO path, as in some VMs, CLOCK_MONOTONIC is one
 * too: three calls at each of the few hundred points of a MobileNetV2 reload took 1.4 ms of its
 * loader's CPU in a profile, bench/results/load-s26-2026-12-07.md); it only fills the bucket. The first point
 * that sees requests in flight starts the bucket full from there: the CPU a load used while the
 * server was idle is not charged to the requests that come later (before, it was charged down to an
 * empty bucket, at most HS_PACE_BURST_NS less to start with). While requests are in flight the
 * load's weight reorders also run on the loader thread alone (hs_kernels_serial_reorders): each
 * parallel one woke a second OpenMP thread of the loader's that then spun beside the requests.
 */
#include "serving/pace.h"

#include <time.h>

#include "base/clock.h"
#include "engine/engine.h"
#include "kernels/kernels.h"
#include "serving/registry_impl.h"

#define HS_PACE_BURST_NS 2e6                 /* CPU a paced load runs at most in one go: 2 ms */
#define HS_PACE_SLICE_NS ((uint64_t)5000000) /* longest sleep before looking again: 5 ms */
#define HS_PACE_HASH_NS_PER_BYTE 0.5         /* SHA-256 with SHA-NI, ~2 GB/s, until measured */

/* Whether any model has a request in flight (queued or running). */
static bool requests_in_flight(hs_registry *r) {
  hs_model_array *a = atomic_load(&r->models);
  for (size_t i = 0; a && i < a->n; i++)
    if (atomic_load_explicit(&a->m[i]->metrics.inflight, memory_order_relaxed) > 0) return true;
  return false;
}

/* Remembered across loads (loader thread only): the hash thread's CPU per byte. */
static _Thread_local double t_hash_ns_per_byte = HS_PACE_HASH_NS_PER_BYTE;

static void pace_point(void *user, uint64_t bytes) {
  hs_pacer *p = user;
  bool busy = requests_in_flight(p->r);
  if (!busy) { /* idle: full speed, and no clock read (see DESIGN, "Idle points") */
    if (!p->idle) hs_kernels_serial_reorders(0);
    p->idle = true;
    p->tokens_ns = HS_PACE_BURST_NS;
    return;
  }
  uint64_t now = hs_now_ns(), cpu = hs_thread_cpu_ns();
  p->clock_reads += 2;
  if (p->idle) { /* the first point with requests in flight: the bucket starts full, from here */
    p->idle = false;
    p->last_wall_ns = now;
    p->last_cpu_ns = cpu;
    bytes = 0;
  }
  p->tokens_ns += (double)(now - p->last_wall_ns) * p->share;
  if (p->tokens_ns > HS_PACE_BURST_NS) p->tokens_ns = HS_PACE_BURST_NS;
  p->tokens_ns -= (double)(cpu - p->last_cpu_ns) + (double)bytes * p->hash_ns_per_byte;
  p->last_wall_ns = now;
  p->last_cpu_ns = cpu;
  hs_kernels_serial_reorders(1); /* the next weight reorders (kernels.h) */
  if (p->tokens_ns >= 0) return;
  while (p->tokens_ns < 0) {
    if (!requests_in_flight(p->r) || atomic_load(&p->r->stopping)) { /* idle: full speed */
      p->tokens_ns = HS_PACE_BURST_NS;
      break;
    }
    /* the loader waits anyway: a version that died since this load began is freed now, not after it
     * (long paced loads otherwise held a third version's memory; bench/results/load-mem-2026-12-07.md) */
    hs__loader_reap(p->r);
    uint64_t want = (uint64_t)(-p->tokens_ns / p->share) + 1;
    if (want > HS_PACE_SLICE_NS) want = HS_PACE_SLICE_NS;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)want};
    nanosleep(&ts, NULL);
    uint64_t t = hs_now_ns();
    p->slept_ns += t - now;
    atomic_fetch_add_explicit(&p->r->metrics.paced_ns, t - now, memory_order_relaxed);
    p->tokens_ns += (double)(t - now) * p->share;
    p->last_wall_ns = now = t;
  }
  p->last_cpu_ns = hs_thread_cpu_ns(); /* the looking and sleeping is not the load's */
  p->clock_reads++;
}

/* hs_engine_set_pace's hook: streamed bytes come as the difference of the stream's count. */
void hs_pacer_point(hs_pacer *p, uint64_t streamed) {
  uint64_t bytes = streamed > p->streamed ? streamed - p->streamed : 0;
  p->streamed = streamed > p->streamed ? streamed : p->streamed;
  pace_point(p, bytes);
}

static void pace_hook(void *user, uint64_t streamed) { hs_pacer_point(user, streamed); }

void hs_pacer_begin(hs_pacer *p, hs_registry *r, int pct) {
  *p = (hs_pacer){.r = r, .share = pct / 100.0, .tokens_ns = HS_PACE_BURST_NS, .idle = true,
                  .hash_ns_per_byte = t_hash_ns_per_byte};
  if (pct > 0 && pct < 100) {
    hs_kernels_serial_reorders(0);
    hs_engine_set_pace(pace_hook, p);
    pace_point(p, 0); /* requests already in flight: the bucket starts now */
  }
}

double hs_pacer_end(hs_pacer *p, double hash_cpu_ms, uint64_t bytes_hashed) {
  hs_engine_set_pace(NULL, NULL);
  hs_kernels_serial_reorders(0);
  if (hash_cpu_ms > 0 && bytes_hashed > ((uint64_t)1 << 20))
    t_hash_ns_per_byte = hash_cpu_ms * 1e6 / (double)bytes_hashed;
  return (double)p->slept_ns / 1e6;
}

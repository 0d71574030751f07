/* trace.h - an event log of requests and reload stages, for finding what a reload costs the
 * requests it overlaps (`hotserve serve --trace FILE`; bench/reload --trace).
 *
 * One JSON object per line, times from CLOCK_MONOTONIC in nanoseconds (hs_now_ns, the clock of
 * Python's time.monotonic_ns, so a driver can lay its own events beside the server's):
 *   {"ev":"request","model":"m","version":3,"outcome":"success","end_ns":E,"total_ns":T,
 *    "queue_ns":Q,"compute_ns":C,"batch":B}
 *   {"ev":"stage","stage":"load","model":"m","version":3,"begin_ns":B,"end_ns":E}
 * Stages (loader thread): scan (the repository scan with its hashing and signature checks; model
 * "" and version -1: it covers every model), load (backend load and sessions), warmup (warm-up
 * runs and the golden check), swap (publishing the new view), free (one retired version) and trim
 * (handing freed pages back to the system). A request that got no version has version -1.
 * Lines are written whole under a lock into a buffered stream, flushed at every stage line; the
 * file is complete once the server has stopped (or after hs_trace_flush). Cost: one lock and one formatted line per request,
 * so it is for diagnosis, not for every production server.
 */
#ifndef HS_SERVING_TRACE_H
#define HS_SERVING_TRACE_H

#include <stdint.h>

#include "hotserve/status.h"

typedef struct hs_trace hs_trace;

/* Creates or truncates path. */
int hs_trace_open(const char *path, hs_trace **out, hs_error *err);
/* Flushes and closes; NULL is a no-op. */
void hs_trace_close(hs_trace *t);
void hs_trace_flush(hs_trace *t);

/* All of these are no-ops on a NULL trace. model names are repository names ([A-Za-z0-9_.-]). */
/* batch: rows in the run that answered the request (serving/batch.c); 1 when it ran alone, 0 when
 * it never ran. */
void hs_trace_request(hs_trace *t, const char *model, int64_t version, const char *outcome, uint64_t end_ns,
                      uint64_t total_ns, uint64_t queue_ns, uint64_t compute_ns, uint32_t batch);
void hs_trace_stage(hs_trace *t, const char *stage, const char *model, int64_t version, uint64_t begin_ns,
                    uint64_t end_ns);

#endif

/* pace.h - load pacing: while requests are in flight, the loader thread caps its CPU share. */
#ifndef HS_SERVING_PACE_H
#define HS_SERVING_PACE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct hs_registry hs_registry;

/* One load's pacer (see pace.c DESIGN). Lives on the loader thread's stack for one version. */
typedef struct hs_pacer {
  hs_registry *r;
  double share;         /* CPU ns the load may use per wall ns while requests are in flight */
  double tokens_ns;     /* CPU ns it may still use before it sleeps (at most HS_PACE_BURST_NS) */
  uint64_t last_wall_ns, last_cpu_ns;
  uint64_t slept_ns;    /* wall time this load slept to keep to its share */
  uint64_t streamed;    /* model-file bytes handed to the decoder (each is hashed beside it) */
  double hash_ns_per_byte; /* the hash thread's CPU per byte, as the last load measured it */
  bool idle;            /* the last point found no request in flight: last_* are stale (pace.c) */
  uint64_t clock_reads; /* clocks read at pace points (tests: idle points read none) */
} hs_pacer;

/* Starts pacing the calling (loader) thread's engine work at pct percent of one core (1-99) while
 * any model of r has a request in flight; pct >= 100 (or <= 0) leaves the load unpaced. */
void hs_pacer_begin(hs_pacer *p, hs_registry *r, int pct);

/* One pace point, as the engine calls it (hs_engine_set_pace) with the model-file bytes streamed so
 * far; exposed for tests. */
void hs_pacer_point(hs_pacer *p, uint64_t streamed);

/* Stops pacing this thread; returns the wall time the load slept, in ms. hash_cpu_ms and
 * bytes_hashed (the load's read stage) refine what the next load charges per byte hashed. */
double hs_pacer_end(hs_pacer *p, double hash_cpu_ms, uint64_t bytes_hashed);

#endif

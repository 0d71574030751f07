/* clock.h - the server's one clock: CLOCK_MONOTONIC in nanoseconds (traces, stats, deadlines); a thread's CPU time. */
#ifndef HS_BASE_CLOCK_H
#define HS_BASE_CLOCK_H

#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC: never jumps with the wall clock; comparable across threads. */
uint64_t hs_now_ns(void);

/* CPU time the calling thread has used, in ns (CLOCK_THREAD_CPUTIME_ID; 0 if unavailable): what a
 * piece of work cost whatever else the cores run. */
uint64_t hs_thread_cpu_ns(void);

#endif

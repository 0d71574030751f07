/* clock.h - the server's one clock: CLOCK_MONOTONIC in nanoseconds (traces, stats, deadlines). */
#ifndef HS_BASE_CLOCK_H
#define HS_BASE_CLOCK_H

#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC: never jumps with the wall clock; comparable across threads. */
uint64_t hs_now_ns(void);

#endif

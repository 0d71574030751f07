/* stats.h - lock-free request/load statistics (relaxed atomics, merged at scrape) and process memory facts. */
#ifndef HS_SERVING_STATS_H
#define HS_SERVING_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"

/* Bucket upper bounds in seconds shared by every latency histogram (plus an implicit +Inf). */
#define HS_HIST_BUCKETS 16
extern const double hs_hist_bounds[HS_HIST_BUCKETS];

/* A latency histogram any thread may observe into with a few relaxed atomic adds; a scrape reads
 * the counters without stopping writers (a scrape may see a sum a hair ahead of a count, which
 * Prometheus tolerates). Zero-initialised memory is an empty histogram. */
typedef struct hs_histogram {
  atomic_uint_least64_t buckets[HS_HIST_BUCKETS + 1]; /* non-cumulative; last = above every bound */
  atomic_uint_least64_t count;
  atomic_uint_least64_t sum_ns;
} hs_histogram;

/* Records one observation of ns nanoseconds. */
void hs_histogram_observe(hs_histogram *h, uint64_t ns);

/* A consistent-enough copy for exposition: cumulative bucket counts, count, sum in seconds. */
typedef struct hs_histogram_snap {
  uint64_t cumulative[HS_HIST_BUCKETS + 1];
  uint64_t count;
  double sum_s;
} hs_histogram_snap;
void hs_histogram_read(const hs_histogram *h, hs_histogram_snap *out);

/* Batch sizes of one model's batched runs (serving/batch.c): a histogram over rows per run with
 * bounds 1, 2, 4, ... 512 (plus +Inf), and the batches whose run failed and whose requests were
 * run again one at a time. Relaxed atomics like hs_histogram; zeroed memory is empty. */
#define HS_BATCH_BUCKETS 10
extern const double hs_batch_bounds[HS_BATCH_BUCKETS];
typedef struct hs_batch_stats {
  atomic_uint_least64_t buckets[HS_BATCH_BUCKETS + 1]; /* non-cumulative; last = above every bound */
  atomic_uint_least64_t sum;                           /* rows over all runs */
  atomic_uint_least64_t retried;                       /* failed batches split into single runs */
} hs_batch_stats;
void hs_batch_stats_observe(hs_batch_stats *s, uint64_t rows);
/* Cumulative counts per bound (count = the last), and the sum of rows. */
void hs_batch_stats_read(const hs_batch_stats *s, uint64_t cumulative[HS_BATCH_BUCKETS + 1], uint64_t *sum);

/* Resident set size of this process in bytes (0 when /proc is unreadable). */
size_t hs_process_rss_bytes(void);

/* The memory this process may use: cgroup v2 memory.max, else cgroup v1 limit_in_bytes, else
 * physical RAM; whichever applies and is smallest. Never 0 (falls back to SIZE_MAX). */
size_t hs_process_memory_limit(void);

#endif

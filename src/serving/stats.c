/* stats.c - latency histograms on relaxed atomics (one set per model, all threads add), RSS, cgroup memory limit. */
#include "serving/stats.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const double hs_hist_bounds[HS_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                1.0,    2.5,     5.0,    10.0};

void hs_histogram_observe(hs_histogram *h, uint64_t ns) {
  double s = (double)ns / 1e9;
  size_t b = 0;
  while (b < HS_HIST_BUCKETS && s > hs_hist_bounds[b]) b++;
  atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void hs_histogram_read(const hs_histogram *h, hs_histogram_snap *out) {
  uint64_t run = 0;
  for (size_t b = 0; b <= HS_HIST_BUCKETS; b++) {
    run += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
    out->cumulative[b] = run;
  }
  /* The +Inf bucket must equal _count; derive count from the buckets so the two always agree. */
  out->count = run;
  out->sum_s = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
}

const double hs_batch_bounds[HS_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

void hs_batch_stats_observe(hs_batch_stats *s, uint64_t rows) {
  size_t b = 0;
  while (b < HS_BATCH_BUCKETS && (double)rows > hs_batch_bounds[b]) b++;
  atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->sum, rows, memory_order_relaxed);
}

void hs_batch_stats_read(const hs_batch_stats *s, uint64_t cumulative[HS_BATCH_BUCKETS + 1], uint64_t *sum) {
  uint64_t run = 0;
  for (size_t b = 0; b <= HS_BATCH_BUCKETS; b++) {
    run += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
    cumulative[b] = run;
  }
  *sum = atomic_load_explicit(&s->sum, memory_order_relaxed);
}

size_t hs_process_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  int n = fscanf(f, "%lu %lu", &size, &resident);
  fclose(f);
  if (n != 2) return 0;
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Reads one unsigned number from a file; 0 when absent, "max" or unparsable. */
static unsigned long long read_limit_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char buf[64] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  if (strncmp(buf, "max", 3) == 0) return 0;
  unsigned long long v = 0;
  if (sscanf(buf, "%llu", &v) != 1) return 0;
  return v;
}

size_t hs_process_memory_limit(void) {
  unsigned long long limit = 0;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) limit = (unsigned long long)pages * (unsigned long long)page;
  /* This process's groups from /proc/self/cgroup: cgroup v2 ("0::/path") and the v1 memory
   * controller ("N:memory:/path"); each falls back to its mount root. */
  char path[512] = "/sys/fs/cgroup/memory.max", path_v1[512] = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
  FILE *cg = fopen("/proc/self/cgroup", "r");
  if (cg) {
    char line[400];
    while (fgets(line, sizeof line, cg)) {
      line[strcspn(line, "\n")] = '\0';
      const char *v1 = strstr(line, ":memory:");
      if (strncmp(line, "0::", 3) == 0 && strcmp(line + 3, "/") != 0)
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
      else if (v1 && strcmp(v1 + 8, "/") != 0)
        snprintf(path_v1, sizeof path_v1, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", v1 + 8);
    }
    fclose(cg);
  }
  unsigned long long v2 = read_limit_file(path);
  if (!v2) v2 = read_limit_file("/sys/fs/cgroup/memory.max");
  unsigned long long v1 = read_limit_file(path_v1);
  if (!v1) v1 = read_limit_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  if (v2 && (limit == 0 || v2 < limit)) limit = v2;
  if (v1 && (limit == 0 || v1 < limit)) limit = v1; /* v1 "unlimited" is a huge number: ignored */
  if (limit == 0 || limit > SIZE_MAX) return SIZE_MAX;
  return (size_t)limit;
}

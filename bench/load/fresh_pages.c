/* fresh_pages.c - what fresh anonymous memory costs on this machine: 100 MB mapped and written, in
 * 4 KiB pages (trapped one by one, or populated in one MADV_POPULATE_WRITE call) and in huge pages
 * (MADV_HUGEPAGE, then touched or populated), twice each, CPU time of the process. Not part of ctest.
 *
 *   cc -O2 -o /tmp/fresh_pages bench/load/fresh_pages.c && /tmp/fresh_pages
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define MB ((size_t)1 << 20)
#define HUGE (2 * MB)

static double cpu_ms(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e3 +
         (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e3;
}

static long anon_huge_kb(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "AnonHugePages:", 14) == 0) kb = atol(line + 14);
  if (f) fclose(f);
  return kb;
}

int main(void) {
  static const char *names[] = {"4 KiB pages, touched", "4 KiB pages, populated", "huge pages, touched",
                                "huge pages, populated"};
  size_t n = 100 * MB;
  for (int round = 0; round < 2; round++)
    for (int mode = 0; mode < 4; mode++) {
      char *r = mmap(NULL, n + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (r == MAP_FAILED) return 1;
      char *p = (char *)(((uintptr_t)r + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
      double c = cpu_ms();
      if (mode >= 2) madvise(p, n, MADV_HUGEPAGE);
      if (mode == 1 || mode == 3) madvise(p, n, MADV_POPULATE_WRITE);
      for (size_t o = 0; o < n; o += 4096) p[o] = 1;
      double ms = cpu_ms() - c;
      printf("round %d, %-24s 100 MB: %6.1f ms CPU, %5.2f us per 4 KiB, AnonHugePages %ld kB\n", round + 1,
             names[mode], ms, ms * 1e3 / (double)(n / 4096), anon_huge_kb());
      munmap(r, n + HUGE);
    }
  return 0;
}

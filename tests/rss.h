/* rss.h - the test process's resident bytes, for the tests that check a load hands its pages back. */
#ifndef HS_TESTS_RSS_H
#define HS_TESTS_RSS_H

#include <stdio.h>
#include <unistd.h>

/* The process's resident bytes (/proc/self/statm, second field); cmocka must be included before. */
static inline size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  assert_non_null(f);
  unsigned long size = 0, resident = 0;
  assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
  fclose(f);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

#endif

/* test_wblock.c - the weight block pool: off until turned on, blocks of 2 MiB or more in huge-page mappings, exact-size reuse of resident blocks, its byte limit, the trim; scratch mappings kept warm until the trim; fresh mappings populated in one call. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/wblock.h"

#define MIB ((size_t)1 << 20)

/* Pages of [p, p + n) resident in memory; -1 when part of the range is not mapped. */
static long resident_pages(void *p, size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1), e = ((uintptr_t)p + n + page - 1) & ~(uintptr_t)(page - 1);
  size_t pages = (e - a) / page;
  unsigned char vec[1024];
  assert_true(pages <= sizeof vec);
  if (mincore((void *)a, e - a, vec) != 0) return errno == ENOMEM ? -1 : -2;
  long in = 0;
  for (size_t i = 0; i < pages; i++) in += vec[i] & 1;
  return in;
}

/* The VmFlags line of the mapping that holds p in /proc/self/smaps ("" when none does). */
static void vm_flags_of(const void *p, char *out, size_t n) {
  out[0] = '\0';
  FILE *f = fopen("/proc/self/smaps", "r");
  assert_non_null(f);
  char line[512];
  bool in = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long a, e;
    if (sscanf(line, "%lx-%lx ", &a, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = (uintptr_t)p >= a && (uintptr_t)p < e;
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      snprintf(out, n, "%s", line + 8);
      break;
    }
  }
  fclose(f);
}

/* Runs first: the pool is off until hs_wblock_keep turns it on. Off, a block under 2 MiB comes from
 * malloc; one of 2 MiB or more is its own huge-page mapping, unmapped when freed (nothing is kept). */
static void test_off_until_turned_on(void **state) {
  (void)state;
  unsigned char *mid = hs_wblock_alloc(MIB);
  assert_non_null(mid);
  assert_int_equal((uintptr_t)mid % 64, 0);
  memset(mid, 2, MIB);
  size_t free_bytes = 1, used = 1;
  hs_wblock_stats(&free_bytes, &used);
  assert_int_equal(used, 0);
  unsigned char *big = hs_wblock_alloc(4 * MIB);
  assert_non_null(big);
  assert_int_equal((uintptr_t)big % 64, 0);
  memset(big, 3, 4 * MIB);
  hs_wblock_stats(&free_bytes, &used);
  assert_int_equal(used, 4 * MIB + 4096); /* its header rounds the mapping up a page */
  hs_wblock_free(big);
  assert_int_equal(resident_pages(big, 2 * MIB), -1); /* unmapped: off, nothing is kept */
  hs_wblock_stats(&free_bytes, &used);
  assert_int_equal(free_bytes, 0);
  assert_int_equal(used, 0);
  hs_wscratch sc = {0}; /* off: a released scratch mapping is unmapped at once */
  unsigned char *s = hs_wscratch_get(&sc, 2 * MIB);
  assert_non_null(s);
  memset(s, 0x11, 2 * MIB);
  hs_wscratch_release(&sc);
  assert_null(sc.p);
  assert_int_equal(resident_pages(s, 2 * MIB), -1);
  hs_wblock_keep(64 * MIB); /* on: a block from before is still freed as malloc's */
  hs_wblock_free(mid);
  hs_wblock_stats(&free_bytes, &used);
  assert_int_equal(free_bytes, 0);
  assert_int_equal(used, 0);
}

/* A block of 2 MiB or more is a mapping that starts on a 2 MiB boundary (its 64-byte header first)
 * and is advised MADV_HUGEPAGE ("hg" in its VmFlags), so that where the kernel has transparent huge
 * pages each whole 2 MiB of it costs one fault, not 512; a smaller mapped block is not advised (its
 * pages could not be huge). Whether the kernel then had a huge page free is its business: not
 * asserted. */
static void test_large_blocks_ask_for_huge_pages(void **state) {
  (void)state;
  hs_wblock_keep(64 * MIB);
  char flags[512];
  unsigned char *big = hs_wblock_alloc(5 * MIB);
  assert_non_null(big);
  assert_int_equal(((uintptr_t)big - 64) % (2 * MIB), 0);
  memset(big, 5, 5 * MIB);
  vm_flags_of(big, flags, sizeof flags);
#ifdef MADV_HUGEPAGE
  assert_non_null(strstr(flags, " hg"));
#endif
  unsigned char *small = hs_wblock_alloc(MIB);
  assert_non_null(small);
  vm_flags_of(small, flags, sizeof flags);
  assert_true(flags[0] != '\0');
  assert_null(strstr(flags, " hg"));
  hs_wblock_free(big);
  hs_wblock_free(small);
  unsigned char *again = hs_wblock_alloc(5 * MIB); /* the pool's free block, the same mapping */
  assert_ptr_equal(again, big);
  hs_wblock_free(again);
  hs_wblock_trim();
  assert_int_equal(resident_pages(big, MIB), -1);
}

static void test_small_blocks_come_from_malloc(void **state) {
  (void)state;
  hs_wblock_keep(64 * MIB);
  size_t used0;
  hs_wblock_stats(NULL, &used0);
  unsigned char *p = hs_wblock_alloc(1000);
  assert_non_null(p);
  assert_int_equal((uintptr_t)p % 64, 0);
  memset(p, 7, 1000);
  size_t used;
  hs_wblock_stats(NULL, &used);
  assert_int_equal(used, used0); /* not a mapping of its own */
  hs_wblock_free(p);
  hs_wblock_free(NULL);
}

static void test_freed_block_is_reused_by_the_same_size_resident(void **state) {
  (void)state;
  hs_wblock_keep(64 * MIB);
  hs_wblock_trim();
  size_t n = 3 * MIB + 100; /* not a page multiple: the mapping is rounded, reuse matches it */
  unsigned char *a = hs_wblock_alloc(n);
  assert_non_null(a);
  assert_int_equal((uintptr_t)a % 64, 0);
  memset(a, 0x5a, n); /* faults every page in */
  size_t free_bytes, used;
  hs_wblock_stats(&free_bytes, &used);
  assert_int_equal(free_bytes, 0);
  assert_true(used >= n);
  hs_wblock_free(a);
  hs_wblock_stats(&free_bytes, &used);
  assert_true(free_bytes >= n);
  assert_true(resident_pages(a, n) > 0); /* kept mapped and faulted */

  unsigned char *other = hs_wblock_alloc(5 * MIB); /* another size does not take it */
  assert_non_null(other);
  assert_ptr_not_equal(other, a);
  unsigned char *b = hs_wblock_alloc(n); /* the same size does, with its pages still resident */
  assert_ptr_equal(b, a);
  long pages = (long)((n + (size_t)sysconf(_SC_PAGESIZE) - 1) / (size_t)sysconf(_SC_PAGESIZE));
  assert_true(resident_pages(b, n) >= pages - 1);
  hs_wblock_stats(&free_bytes, NULL);
  assert_int_equal(free_bytes, 0);
  hs_wblock_free(b);
  hs_wblock_free(other);
  hs_wblock_trim();
}

static void test_keep_limit_and_trim_unmap(void **state) {
  (void)state;
  hs_wblock_keep(64 * MIB);
  hs_wblock_trim();
  unsigned char *a = hs_wblock_alloc(2 * MIB), *b = hs_wblock_alloc(2 * MIB);
  assert_non_null(a);
  assert_non_null(b);
  memset(a, 1, 2 * MIB);
  memset(b, 1, 2 * MIB);
  hs_wblock_free(a);
  hs_wblock_free(b);
  size_t free_bytes;
  hs_wblock_stats(&free_bytes, NULL);
  assert_true(free_bytes >= 4 * MIB);

  hs_wblock_keep(3 * MIB); /* a lower limit unmaps what is over it */
  hs_wblock_stats(&free_bytes, NULL);
  assert_true(free_bytes <= 3 * MIB);
  assert_true(free_bytes > 0);

  hs_wblock_trim(); /* every free block goes back */
  hs_wblock_stats(&free_bytes, NULL);
  assert_int_equal(free_bytes, 0);
  assert_int_equal(resident_pages(a, 2 * MIB), -1);
  assert_int_equal(resident_pages(b, 2 * MIB), -1);

  hs_wblock_keep(0); /* no limit left: a freed block is unmapped at once */
  unsigned char *c = hs_wblock_alloc(2 * MIB);
  assert_non_null(c);
  memset(c, 1, 2 * MIB);
  hs_wblock_free(c);
  hs_wblock_stats(&free_bytes, NULL);
  assert_int_equal(free_bytes, 0);
  assert_int_equal(resident_pages(c, 2 * MIB), -1);
  hs_wblock_keep(64 * MIB);
}

/* A scratch mapping keeps its contents while it need not grow; once the pool is on, a released one
 * stays mapped and faulted for the next load's scratch (the smallest that fits is taken), at most four
 * are kept (the smallest goes), and the trim unmaps them. */
static void test_scratch_stays_warm_until_the_trim(void **state) {
  (void)state;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  hs_wblock_keep(64 * MIB);
  hs_wblock_trim();
  hs_wscratch sc = {0}, sa = {0};
  unsigned char *a = hs_wscratch_get(&sa, 2 * MIB);
  assert_non_null(a);
  memset(a, 0x11, 2 * MIB);
  assert_int_equal(resident_pages(a, 2 * MIB), (long)(2 * MIB / page));
  assert_ptr_equal(hs_wscratch_get(&sa, MIB), a); /* smaller: the same buffer, contents kept */
  assert_int_equal(a[MIB - 1], 0x11);
  unsigned char *b = hs_wscratch_get(&sc, 3 * MIB); /* (none warm: a new mapping) */
  assert_non_null(b);
  assert_true(b != a);
  memset(b, 0x22, 3 * MIB);
  hs_wscratch_release(&sa);
  hs_wscratch_release(&sc);
  assert_null(sc.p);
  hs_wscratch_release(&sc); /* twice: nothing */
  assert_int_equal(resident_pages(a, 2 * MIB), (long)(2 * MIB / page)); /* both warm, faulted */
  assert_int_equal(resident_pages(b, 3 * MIB), (long)(3 * MIB / page));

  hs_wscratch s1 = {0}, s2 = {0}, s3 = {0};
  assert_ptr_equal(hs_wscratch_get(&s1, MIB + 1), a); /* the smallest warm one that fits */
  assert_ptr_equal(hs_wscratch_get(&s2, MIB), b);     /* then the one left */
  unsigned char *c = hs_wscratch_get(&s3, MIB);       /* none left: a new mapping */
  assert_non_null(c);
  assert_true(c != a && c != b);
  assert_int_equal(s3.bytes, MIB);
  memset(c, 0x33, MIB);
  hs_wscratch s4 = {0}, s5 = {0}; /* five released: the smallest (c, 1 MiB) is unmapped */
  unsigned char *d = hs_wscratch_get(&s4, 4 * MIB), *e = hs_wscratch_get(&s5, 5 * MIB);
  assert_true(d && e && d != a && d != b && d != c && e != a && e != b && e != c);
  memset(d, 0x44, 4 * MIB);
  memset(e, 0x55, 4 * MIB);
  hs_wscratch_release(&s1);
  hs_wscratch_release(&s2);
  hs_wscratch_release(&s3);
  hs_wscratch_release(&s4);
  hs_wscratch_release(&s5);
  assert_int_equal(resident_pages(c, MIB), -1);
  assert_true(resident_pages(a, 2 * MIB) > 0 && resident_pages(b, 3 * MIB) > 0 && resident_pages(d, MIB) > 0 &&
              resident_pages(e, MIB) > 0);

  hs_wblock_trim(); /* the warm memory goes back */
  assert_int_equal(resident_pages(a, 2 * MIB), -1);
  assert_int_equal(resident_pages(b, 3 * MIB), -1);
  assert_int_equal(resident_pages(d, MIB), -1);
  assert_int_equal(resident_pages(e, MIB), -1);
}

/* A scratch mapping that has to grow is grown (its faulted pages serve again, only the new tail is
 * added) instead of a new mapping taken beside it, and an outgrown one is never kept warm: kshare's
 * read-back buffer grew 6 -> 240 KiB through ten mappings in a MobileNetV2 reload, and the largest
 * outgrown ones sat warm at the reload's peak (+360 KiB). With no warm mapping large enough, the
 * largest warm one is grown likewise: the read's ring (512 KiB) for the warm-up input (588 KiB). */
static void test_scratch_grows_in_place(void **state) {
  (void)state;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  hs_wblock_keep(64 * MIB);
  hs_wblock_trim();
  hs_wscratch sc = {0};
  unsigned char *a = hs_wscratch_get(&sc, MIB);
  assert_non_null(a);
  memset(a, 0x11, MIB);
  unsigned char *b = hs_wscratch_get(&sc, 3 * MIB); /* outgrown */
  assert_non_null(b);
  assert_int_equal(sc.bytes, 3 * MIB);
  assert_int_equal(resident_pages(b, 3 * MIB), (long)(3 * MIB / page)); /* the new tail too (populated) */
  if (b != a) assert_int_equal(resident_pages(a, MIB), -1); /* moved: the old pages went with it */
  assert_int_equal(b[0], 0x11);                               /* grown: the same pages */
  assert_int_equal(b[MIB - 1], 0x11);
  memset(b, 0x22, 3 * MIB);
  hs_wscratch_release(&sc);
  hs_wscratch s1 = {0}, s2 = {0};
  assert_ptr_equal(hs_wscratch_get(&s1, MIB), b); /* the one warm mapping: nothing outgrown beside it */
  unsigned char *c = hs_wscratch_get(&s2, MIB);   /* none left: a new one */
  assert_true(c && c != b);
  hs_wscratch_release(&s1);
  hs_wscratch_release(&s2);

  hs_wscratch s3 = {0}; /* none warm fits 4 MiB: the largest warm one (b, 3 MiB) is grown, c stays */
  unsigned char *d = hs_wscratch_get(&s3, 4 * MIB);
  assert_non_null(d);
  assert_int_equal(resident_pages(d, 4 * MIB), (long)(4 * MIB / page));
  if (d != b) assert_int_equal(resident_pages(b, 3 * MIB), -1);
  assert_int_equal(d[3 * MIB - 1], 0x22);
  assert_int_equal(resident_pages(c, MIB), (long)(MIB / page));
  hs_wscratch_release(&s3);
  hs_wblock_trim();
  assert_int_equal(resident_pages(c, MIB), -1);
  assert_int_equal(resident_pages(d, 4 * MIB), -1);
}

static long minor_faults(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

/* A fresh mapping (a block the pool has none of, after the trim; a new scratch mapping) comes back
 * with its pages already faulted in (MADV_POPULATE_WRITE): writing it whole takes no page faults, where
 * it took one per page. Skipped on a kernel without MADV_POPULATE_WRITE (before Linux 5.14). */
static void test_fresh_mappings_come_populated(void **state) {
  (void)state;
#ifndef MADV_POPULATE_WRITE
  skip();
#else
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  void *probe = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(probe != MAP_FAILED);
  int supported = madvise(probe, page, MADV_POPULATE_WRITE) == 0 || errno != EINVAL;
  munmap(probe, page);
  if (!supported) skip();
  hs_wblock_keep(64 * MIB);
  hs_wblock_trim();
  size_t n = 3 * MIB + 100;
  long pages = (long)((n + 64 + page - 1) / page);
  unsigned char *a = hs_wblock_alloc(n);
  assert_non_null(a);
  assert_int_equal(resident_pages(a, n), pages); /* before any write */
  long f0 = minor_faults();
  memset(a, 0x6b, n);
  long faults = minor_faults() - f0;
  assert_true(faults < pages / 8); /* a page fault per page without the populate */
  hs_wblock_free(a);

  hs_wscratch sc = {0};
  unsigned char *s = hs_wscratch_get(&sc, 2 * MIB);
  assert_non_null(s);
  assert_int_equal(resident_pages(s, 2 * MIB), (long)(2 * MIB / page));
  f0 = minor_faults();
  memset(s, 0x6c, 2 * MIB);
  assert_true(minor_faults() - f0 < (long)(2 * MIB / page) / 8);
  hs_wscratch_release(&sc);
  hs_wblock_trim();
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_off_until_turned_on),
      cmocka_unit_test(test_small_blocks_come_from_malloc),
      cmocka_unit_test(test_large_blocks_ask_for_huge_pages),
      cmocka_unit_test(test_freed_block_is_reused_by_the_same_size_resident),
      cmocka_unit_test(test_keep_limit_and_trim_unmap),
      cmocka_unit_test(test_scratch_stays_warm_until_the_trim),
      cmocka_unit_test(test_scratch_grows_in_place),
      cmocka_unit_test(test_fresh_mappings_come_populated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

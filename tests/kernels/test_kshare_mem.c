/* test_kshare_mem.c - confirming a registered conv's weights at decode time: exact, in little memory, none kept. */
/*
 * hs_kshare_find_weights confirms a candidate by reading the registered kernel's weights back into
 * ONNX's layout and comparing them in full. In a server the read-back buffer of a large conv came
 * from the heap, where glibc keeps a freed chunk resident: a new-head reload of ResNet-50 held about
 * 20 MB of such pages at its peak. The heap is set up here as the server's is after its first loads
 * (the dynamic mmap and trim thresholds raised by large frees: malloc would serve a 9 MB buffer from
 * the heap and not trim it), a 512x512x3x3 conv (9.4 MB of weights, ResNet-50's largest) is
 * registered, and the process's RSS must not keep the read-back's pages after a lookup that finds
 * it once the decode would be over (hs_kshare_release_scratch); the lookup must find it (same bytes) and not find a copy that differs in one weight away from
 * the pre-filter's samples (so the full comparison did run).
 * The comparison reads the weights back a slice of output channels at a time (256 KiB) and stops at
 * the first difference: test_lookup_reads_back_slices requires the RSS during the lookups (before
 * the release) to stay well under one read-back of the weights, and the answers to stay exact for
 * a difference in the first slice, in the last one and none, for a plain and a grouped conv.
 * The stream decoder compares a tensor piece by piece as it arrives (hs_kshare_match_*), never
 * holding it whole: test_streamed_match registers two convs of equal size and streams copies in
 * unaligned pieces: one equal to the second registered (found, the first dropped), one differing
 * only in its last byte and one differing in its first piece (neither found; the bytes before the
 * differing piece read back equal to the copy's), with the RSS of the lookups well under the weights.
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../rss.h"

#include "kernels/kernels.h"
#include "kernels/kshare.h"

#define C 512
#define K 3
#define N_W ((size_t)C * C * K * K)

static void test_lookup_keeps_no_pages(void **state) {
  (void)state;
  /* the server's heap after its first loads: large chunks from the heap, its free top kept. Under
   * AddressSanitizer mallopt does nothing (returns 0): its allocator keeps a freed heap buffer in its
   * quarantine instead, which a read-back from the heap would show here as well */
  (void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
  (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);

  float *w = malloc(N_W * sizeof(float));
  assert_non_null(w);
  uint32_t s = 7;
  for (size_t i = 0; i < N_W; i++) {
    s = s * 1664525u + 1013904223u;
    w[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
  }
  hs_conv_params p = {.nsp = 2, .batch = 1, .in_c = C, .out_c = C, .groups = 1, .in = {7, 7}, .out = {7, 7},
                      .kernel = {K, K}, .stride = {1, 1}, .dilation = {1, 1}, .pad_begin = {1, 1},
                      .pad_end = {1, 1}, .weights = w};
  hs_kernel *k = NULL;
  hs_error err;
  int shared = -1;
  int rc = hs_kshare_conv(&p, &k, &shared, &err);
  if (rc) fprintf(stderr, "conv: %s\n", err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(shared, 0);

  /* a copy differing in one weight the pre-filter does not sample: only the full comparison tells */
  float *other = malloc(N_W * sizeof(float));
  assert_non_null(other);
  memcpy(other, w, N_W * sizeof(float));
  other[N_W / 2 + 3] += 1.0f;

  hs_kernel *ref = NULL;
  malloc_trim(0);
  size_t before = rss_bytes();
  assert_int_equal(hs_kshare_find_weights(other, N_W * sizeof(float), &ref), 0);
  assert_null(ref);
  assert_int_equal(hs_kshare_find_weights(w, N_W * sizeof(float), &ref), 1);
  assert_ptr_equal(ref, k);
  hs_kshare_release_scratch(); /* what the engine calls once the decode is over */
  size_t after = rss_bytes();
  /* two read-backs of 9.4 MB each ran; at most a fraction of one may stay resident (allocator noise) */
  size_t grew = after > before ? after - before : 0;
  if (grew >= N_W * sizeof(float) / 4)
    fprintf(stderr, "RSS grew by %zu bytes over the lookups (weights: %zu bytes)\n", grew, N_W * sizeof(float));
  assert_true(grew < N_W * sizeof(float) / 4);

  hs_kernel_destroy(ref);
  hs_kernel_destroy(k);
  free(other);
  free(w);
}

/* Registers a CxC 3x3 conv in `groups` groups with weights from seed, then looks up copies that
 * differ in one weight (first slice, last slice) and an equal copy. */
static void lookups_in_slices(int groups, uint32_t seed) {
  size_t n = N_W / (size_t)groups, bytes = n * sizeof(float);
  float *w = malloc(bytes), *other = malloc(bytes);
  assert_non_null(w);
  assert_non_null(other);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    w[i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
  }
  hs_conv_params p = {.nsp = 2, .batch = 1, .in_c = C, .out_c = C, .groups = groups, .in = {7, 7}, .out = {7, 7},
                      .kernel = {K, K}, .stride = {1, 1}, .dilation = {1, 1}, .pad_begin = {1, 1},
                      .pad_end = {1, 1}, .weights = w};
  hs_kernel *k = NULL, *ref = NULL;
  hs_error err;
  int shared = -1;
  assert_int_equal(hs_kshare_conv(&p, &k, &shared, &err), 0);
  assert_int_equal(shared, 0);
  memcpy(other, w, bytes); /* its pages resident before the measurement */
  malloc_trim(0);
  size_t before = rss_bytes();
  const size_t at[] = {5, n - 2}; /* neither sampled by the pre-filter: the first slice, the last one */
  for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
    memcpy(other, w, bytes);
    other[at[i]] -= 0.25f;
    assert_int_equal(hs_kshare_find_weights(other, bytes, &ref), 0);
    assert_null(ref);
  }
  assert_int_equal(hs_kshare_find_weights(w, bytes, &ref), 1);
  assert_ptr_equal(ref, k);
  size_t during = rss_bytes(); /* the slice buffer is still mapped: the lookups' peak */
  hs_kshare_release_scratch();
  size_t grew = during > before ? during - before : 0;
  if (grew >= bytes / 4) fprintf(stderr, "groups %d: RSS grew by %zu bytes (weights: %zu)\n", groups, grew, bytes);
  assert_true(grew < bytes / 4);
  hs_kernel_destroy(ref);
  hs_kernel_destroy(k);
  free(other);
  free(w);
}

static void test_lookup_reads_back_slices(void **state) {
  (void)state;
  lookups_in_slices(1, 11);
  lookups_in_slices(2, 13);
}

/* Streams w (bytes) to a match in pieces of `piece` bytes; returns the offset of the piece where every
 * candidate dropped (then checks the read-back before it, into back, against w), or bytes when one
 * survived. */
static size_t stream_match(hs_kshare_match *m, const float *w, size_t bytes, size_t piece, char *back) {
  size_t off = 0;
  for (; off < bytes; off += piece) {
    size_t n = bytes - off < piece ? bytes - off : piece;
    if (!hs_kshare_match_feed(m, (const char *)w + off, n)) break;
  }
  if (off >= bytes) return bytes;
  assert_int_equal(hs_kshare_match_prefix(m, back, off), 0);
  assert_memory_equal(back, w, off);
  assert_int_equal(hs_kshare_match_prefix(m, back, off + 1), -1); /* past what matched */
  return off;
}

static void test_streamed_match(void **state) {
  (void)state;
  const size_t bytes = N_W * sizeof(float), piece = (3 << 16) + 12; /* pieces straddle the slices */
  float *w[2], *other = malloc(bytes);
  char *back = malloc(bytes); /* where the decoder's tensor would get the bytes read back */
  hs_kernel *k[2];
  hs_error err;
  uint32_t seed = 23;
  assert_non_null(other);
  assert_non_null(back);
  memset(back, 0, bytes); /* resident before the measurement */
  for (int j = 1; j >= 0; j--) { /* w[1] registered first: the registry's newest, w[0], is the first candidate */
    assert_non_null(w[j] = malloc(bytes));
    for (size_t i = 0; i < N_W; i++) {
      seed = seed * 1664525u + 1013904223u;
      w[j][i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
    }
    hs_conv_params p = {.nsp = 2, .batch = 1, .in_c = C, .out_c = C, .groups = 1, .in = {7, 7}, .out = {7, 7},
                        .kernel = {K, K}, .stride = {1, 1}, .dilation = {1, 1}, .pad_begin = {1, 1},
                        .pad_end = {1, 1}, .weights = w[j]};
    int shared = -1;
    assert_int_equal(hs_kshare_conv(&p, &k[j], &shared, &err), 0);
    assert_int_equal(shared, 0);
  }
  memcpy(other, w[0], bytes);
  malloc_trim(0);
  size_t before = rss_bytes();

  hs_kshare_match *m = NULL;
  hs_kernel *ref = NULL;
  assert_int_equal(hs_kshare_match_begin(bytes + sizeof(float), &m), 0); /* no kernel of that size */
  assert_null(m);

  /* equal to the second candidate: found, the first dropped */
  assert_int_equal(hs_kshare_match_begin(bytes, &m), 1);
  assert_int_equal(stream_match(m, w[1], bytes, piece, back), bytes);
  assert_int_equal(hs_kshare_match_prefix(m, back, bytes), 0); /* read back from the one that matched */
  assert_memory_equal(back, w[1], bytes);
  assert_int_equal(hs_kshare_match_end(m, &ref), 1);
  assert_ptr_equal(ref, k[1]);
  hs_kernel_destroy(ref);

  /* differing only in its last byte: every candidate drops in the last piece */
  ((unsigned char *)other)[bytes - 1] ^= 1;
  assert_int_equal(hs_kshare_match_begin(bytes, &m), 1);
  assert_int_equal(stream_match(m, other, bytes, piece, back), (bytes - 1) / piece * piece);
  assert_int_equal(hs_kshare_match_end(m, &ref), 0);
  assert_null(ref);

  /* differing in the first piece, at a weight no sample reads: only the bytes tell */
  memcpy(other, w[0], bytes);
  other[5] += 0.25f;
  assert_int_equal(hs_kshare_match_begin(bytes, &m), 1);
  assert_int_equal(stream_match(m, other, bytes, piece, back), 0);
  assert_int_equal(hs_kshare_match_end(m, &ref), 0);
  assert_null(ref);

  /* a match ended early (the decoder's error paths) holds nothing */
  assert_int_equal(hs_kshare_match_begin(bytes, &m), 1);
  assert_int_equal(hs_kshare_match_feed(m, w[0], piece), 1);
  assert_int_equal(hs_kshare_match_end(m, &ref), 0);
  assert_null(ref);

  size_t during = rss_bytes(); /* the slice buffer is still mapped: the lookups' peak */
  hs_kshare_release_scratch();
  size_t grew = during > before ? during - before : 0;
  if (grew >= bytes / 4) fprintf(stderr, "streamed: RSS grew by %zu bytes (weights: %zu)\n", grew, bytes);
  assert_true(grew < bytes / 4);
  hs_kshare_stats st;
  hs_kshare_get_stats(&st);
  assert_int_equal(st.kernels, 2); /* every candidate's reference given back */
  hs_kernel_destroy(k[0]);
  hs_kernel_destroy(k[1]);
  hs_kshare_get_stats(&st);
  assert_int_equal(st.kernels, 0);
  free(back);
  free(other);
  free(w[0]);
  free(w[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup_keeps_no_pages),
      cmocka_unit_test(test_lookup_reads_back_slices),
      cmocka_unit_test(test_streamed_match),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_warmup.c - the warm-up input (serving/warmup.c): zeros lie in a load's scratch mapping, so in
 * the server they take the warm mapping the read's ring has just released and add no resident pages
 * to a reload's peak (bench/load, new head); dirty or not, that mapping reads as zeros; random data
 * lies there too, the same for every load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../rss.h"
#include "base/wblock.h"
#include "serving/warmup.h"

#define C 3
#define HW 224
#define RING_BYTES ((size_t)1 << 20) /* repo/read.c: 4 pieces of 256 KiB */

static hs_io_desc g_in = {.name = "input", .dtype = HS_DT_FLOAT32, .ndim = 4, .dims = {-1, C, HW, HW}};
static hs_io_desc g_out = {.name = "output", .dtype = HS_DT_FLOAT32, .ndim = 1, .dims = {1}};

typedef struct seen {
  const void *data;
  size_t nbytes;
  size_t rss_in_run; /* the process's resident bytes while the run reads its input */
  int nonzero;       /* elements that are not 0 */
  uint64_t sum;      /* of the bytes, to compare two random inputs */
  int runs;
} seen;
static seen g_seen;

static size_t num_inputs(const hs_backend_model *m) {
  (void)m;
  return 1;
}
static const hs_io_desc *input(const hs_backend_model *m, size_t i) {
  (void)m;
  (void)i;
  return &g_in;
}
static size_t num_outputs(const hs_backend_model *m) {
  (void)m;
  return 1;
}
static const hs_io_desc *output(const hs_backend_model *m, size_t i) {
  (void)m;
  (void)i;
  return &g_out;
}

static int run(hs_backend_session *s, const hs_tensor *in, size_t n_in, hs_tensor *out, size_t n_out, hs_error *err) {
  (void)s;
  (void)out;
  (void)n_out;
  (void)err;
  assert_int_equal(n_in, 1);
  const float *f = in[0].data;
  const unsigned char *b = in[0].data;
  g_seen.data = in[0].data;
  g_seen.nbytes = in[0].nbytes;
  g_seen.nonzero = 0;
  g_seen.sum = 0;
  for (size_t k = 0; k < in[0].nbytes / sizeof *f; k++) g_seen.nonzero += f[k] != 0.0f; /* reads every page */
  for (size_t k = 0; k < in[0].nbytes; k++) g_seen.sum = g_seen.sum * 31 + b[k];
  g_seen.rss_in_run = rss_bytes();
  g_seen.runs++;
  return HS_OK;
}

static const hs_backend k_fake = {.name = "fake", .num_inputs = num_inputs, .input = input,
                                   .num_outputs = num_outputs, .output = output, .run = run};

/* A ring-sized scratch that a load used (written all over) and released, as repo/read.c's ring. */
static void *released_ring(void) {
  hs_wscratch ring = {0};
  void *p = hs_wscratch_get(&ring, RING_BYTES);
  assert_non_null(p);
  memset(p, 0xab, RING_BYTES);
  hs_wscratch_release(&ring);
  return p;
}

static void zeros_take_the_released_ring(void **state) {
  (void)state;
  hs_wblock_keep((size_t)64 << 20); /* the server's pool: released scratch stays warm */
  hs_model_config cfg = {.warmup_runs = 2, .warmup_kind = HS_WARMUP_ZEROS};
  hs_backend_session *sessions[1] = {NULL};
  hs_error err;
  hs_error_clear(&err);
  /* One load's warm-up first, as the server's first load: whatever a first call sets up once (a
   * sanitizer's allocator regions and stack records) is not counted below as the input's pages. */
  (void)released_ring();
  assert_int_equal(hs_warmup_run(&k_fake, NULL, sessions, 1, &cfg, "/nonexistent", &err), HS_OK);
  void *ring = released_ring(); /* the next load's ring, released at the end of its read */
  memset(&g_seen, 0, sizeof g_seen);
  size_t before = rss_bytes();
  assert_int_equal(hs_warmup_run(&k_fake, NULL, sessions, 1, &cfg, "/nonexistent", &err), HS_OK);
  assert_int_equal(g_seen.runs, 2);
  assert_int_equal(g_seen.nbytes, (size_t)C * HW * HW * sizeof(float));
  assert_int_equal(g_seen.nonzero, 0);     /* the ring's old bytes never show */
  assert_ptr_equal(g_seen.data, ring);     /* the ring's pages, faulted already */
  size_t grew = g_seen.rss_in_run > before ? g_seen.rss_in_run - before : 0;
  assert_true(grew < g_seen.nbytes / 4);   /* calloc'd: ~588 KiB of fresh pages */
  hs_wblock_trim();
}

static void random_is_the_same_each_load(void **state) {
  (void)state;
  hs_wblock_keep((size_t)64 << 20);
  hs_model_config cfg = {.warmup_runs = 1, .warmup_kind = HS_WARMUP_RANDOM};
  hs_backend_session *sessions[1] = {NULL};
  hs_error err;
  hs_error_clear(&err);
  uint64_t sums[2];
  for (int k = 0; k < 2; k++) {
    (void)released_ring(); /* dirty memory under the input each time */
    memset(&g_seen, 0, sizeof g_seen);
    assert_int_equal(hs_warmup_run(&k_fake, NULL, sessions, 1, &cfg, "/nonexistent", &err), HS_OK);
    assert_true(g_seen.nonzero > 0);
    sums[k] = g_seen.sum;
  }
  assert_true(sums[0] == sums[1]);
  hs_wblock_trim();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(zeros_take_the_released_ring),
      cmocka_unit_test(random_is_the_same_each_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

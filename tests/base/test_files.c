/* test_files.c - base/: float16 on every half value and its ties, the bounded file reader (limit,
 * FIFO refusal without blocking), hex and SHA-256 against published vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/digest.h"
#include "base/file.h"
#include "base/half.h"

static bool half_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }

/* Every one of the 65536 halves: to float and back is exact, NaN stays NaN. */
static void test_half_round_trip_all(void **state) {
  (void)state;
  size_t nans = 0;
  for (uint32_t i = 0; i <= 0xffff; i++) {
    uint16_t h = (uint16_t)i;
    float f = hs_half_to_float(h);
    uint16_t back = hs_float_to_half(f);
    if (half_is_nan(h)) {
      nans++;
      assert_true(f != f);
      assert_true(half_is_nan(back));
    } else {
      if (back != h) fail_msg("half 0x%04x -> %a -> 0x%04x", h, (double)f, back);
    }
  }
  assert_int_equal(nans, 2 * 1023);
  /* a few values by their meaning */
  assert_true(hs_half_to_float(0x3c00) == 1.0f);
  assert_true(hs_half_to_float(0xc000) == -2.0f);
  assert_true(hs_half_to_float(0x7bff) == 65504.0f);
  assert_true(hs_half_to_float(0x0001) == 0x1p-24f);
  assert_true(hs_half_to_float(0x7c00) == INFINITY);
}

/* float -> half rounds to nearest with ties to even, in the normal and subnormal ranges. */
static void test_half_ties_to_even(void **state) {
  (void)state;
  /* between 1 (0x3c00) and 1+2^-10 (0x3c01): the midpoint goes to the even 0x3c00 */
  assert_int_equal(hs_float_to_half(1.0f + 0x1p-11f), 0x3c00);
  assert_int_equal(hs_float_to_half(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above the midpoint */
  /* between 0x3c01 and 0x3c02: the midpoint goes to the even 0x3c02 */
  assert_int_equal(hs_float_to_half(1.0f + 3 * 0x1p-11f), 0x3c02);
  assert_int_equal(hs_float_to_half(-(1.0f + 3 * 0x1p-11f)), 0xbc02);
  /* subnormals: 2^-25 is half of the smallest subnormal (0x0001) -> ties to 0; 3*2^-25 -> 0x0002 */
  assert_int_equal(hs_float_to_half(0x1p-25f), 0x0000);
  assert_int_equal(hs_float_to_half(3 * 0x1p-25f), 0x0002);
  assert_int_equal(hs_float_to_half(0x1p-25f + 0x1p-35f), 0x0001);
  /* 65520 is the midpoint between 65504 (max) and 65536 (would be the next): rounds to infinity */
  assert_int_equal(hs_float_to_half(65519.0f), 0x7bff);
  assert_int_equal(hs_float_to_half(65520.0f), 0x7c00);
  assert_int_equal(hs_float_to_half(1e30f), 0x7c00);
  assert_int_equal(hs_float_to_half(-0.0f), 0x8000);
  assert_true(half_is_nan(hs_float_to_half(NAN)));
}

static char g_dir[64];

static int make_dir(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/hs_test_files_XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void write_bytes(const char *path, const char *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(bytes, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static void test_file_read_limit(void **state) {
  (void)state;
  char path[128];
  snprintf(path, sizeof path, "%s/ten", g_dir);
  write_bytes(path, "0123456789", 10);
  hs_error err;
  hs_error_clear(&err);
  char *buf = NULL;
  size_t len = 0;
  assert_int_equal(hs_file_read(path, 10, &buf, &len, &err), HS_OK); /* exactly the limit */
  assert_int_equal(len, 10);
  assert_memory_equal(buf, "0123456789", 11); /* NUL-terminated */
  free(buf);
  assert_int_equal(hs_file_read(path, 9, &buf, &len, &err), HS_LIMIT);
  assert_null(buf);
  assert_non_null(strstr(err.message, "over the limit of 9"));
  assert_int_equal(hs_file_read(path, 0, &buf, &len, &err), HS_OK); /* 0: the default limit */
  free(buf);
  /* empty file */
  snprintf(path, sizeof path, "%s/empty", g_dir);
  write_bytes(path, "", 0);
  assert_int_equal(hs_file_read(path, 4, &buf, &len, &err), HS_OK);
  assert_int_equal(len, 0);
  assert_int_equal(buf[0], '\0');
  free(buf);
  snprintf(path, sizeof path, "%s/missing", g_dir);
  assert_int_equal(hs_file_read(path, 4, &buf, &len, &err), HS_NOT_FOUND);
  assert_null(buf);
  /* a directory is not a regular file */
  assert_int_equal(hs_file_read(g_dir, 4, &buf, &len, &err), HS_IO);
  assert_non_null(strstr(err.message, "not a regular file"));
}

/* A FIFO with no writer would block a plain open() for ever; the reader refuses it at once. */
static void test_file_read_refuses_fifo(void **state) {
  (void)state;
  char path[128];
  snprintf(path, sizeof path, "%s/fifo", g_dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  alarm(10); /* a hang fails the test instead of blocking the suite */
  uint64_t t0 = hs_now_ns();
  hs_error err;
  hs_error_clear(&err);
  char *buf = NULL;
  size_t len = 0;
  assert_int_equal(hs_file_read(path, 0, &buf, &len, &err), HS_IO);
  alarm(0);
  assert_null(buf);
  assert_non_null(strstr(err.message, "not a regular file"));
  assert_true(hs_now_ns() - t0 < 5000000000ull);
}

static void test_hex(void **state) {
  (void)state;
  const uint8_t bytes[] = {0x00, 0x01, 0xab, 0xff, 0x7f};
  char hex[11];
  hs_hex(bytes, sizeof bytes, hex);
  assert_string_equal(hex, "0001abff7f");
  uint8_t back[5];
  assert_true(hs_unhex("0001ABff7f", 10, back, 5));
  assert_memory_equal(back, bytes, 5);
  assert_false(hs_unhex("0001abff7", 9, back, 5));   /* odd length */
  assert_false(hs_unhex("0001abff7g", 10, back, 5)); /* not a digit */
  assert_false(hs_unhex("0001abff7f00", 12, back, 5));
}

/* FIPS 180-2 / NIST examples. */
static void test_sha256_vectors(void **state) {
  (void)state;
  static const struct {
    const char *msg, *hex;
  } k[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
  };
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
    uint8_t d[32];
    char hex[65];
    hs_sha256(k[i].msg, strlen(k[i].msg), d);
    hs_hex(d, 32, hex);
    assert_string_equal(hex, k[i].hex);
  }
  /* the streaming form over a file of one million 'a' gives the long NIST vector */
  char path[128];
  snprintf(path, sizeof path, "%s/million", g_dir);
  char *a = malloc(1000000);
  assert_non_null(a);
  memset(a, 'a', 1000000);
  write_bytes(path, a, 1000000);
  free(a);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  uint8_t d[32];
  uint64_t n = 0;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_sha256_fd(fileno(f), 1000000, d, &n, &err), HS_OK);
  fclose(f);
  assert_int_equal(n, 1000000);
  char hex[65];
  hs_hex(d, 32, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  /* a file longer than expected: n_read tells */
  f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(hs_sha256_fd(fileno(f), 1000, d, &n, &err), HS_OK);
  fclose(f);
  assert_true(n > 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_half_round_trip_all),
      cmocka_unit_test(test_half_ties_to_even),
      cmocka_unit_test(test_file_read_limit),
      cmocka_unit_test(test_file_read_refuses_fifo),
      cmocka_unit_test(test_hex),
      cmocka_unit_test(test_sha256_vectors),
  };
  return cmocka_run_group_tests(tests, make_dir, remove_dir);
}

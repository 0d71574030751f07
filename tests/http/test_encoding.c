/* test_encoding.c - gzip/deflate request bodies decoded under their bound, and Accept-Encoding choices. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "http/encoding.h"

/* Compresses n bytes of src with zlib's own deflate (window: 15 zlib, 31 gzip, -15 raw); returns its length. */
static size_t compress_with(int window, const char *src, size_t n, unsigned char *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)src, z.avail_in = (uInt)n, z.next_out = out, z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t len = cap - z.avail_out;
  deflateEnd(&z);
  return len;
}

static void decodes_each_coding(void **state) {
  (void)state;
  const char *text = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}";
  unsigned char z[512];
  const struct { const char *coding; int window; } cases[] = {{"gzip", 31}, {"GZIP", 31}, {"deflate", 15}, {"deflate", -15}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t zl = compress_with(cases[i].window, text, strlen(text), z, sizeof z);
    char *out = NULL;
    size_t len = 0;
    hs_error err;
    hs_error_clear(&err);
    assert_int_equal(hs_http_decode_body(cases[i].coding, (const char *)z, zl, 1024, &out, &len, &err), HS_OK);
    assert_int_equal(len, strlen(text));
    assert_memory_equal(out, text, len);
    assert_int_equal(out[len], '\0');
    free(out);
  }
}

/* The bound holds exactly: max_out bytes decode, one more is HS_LIMIT (a zip bomb stops there). */
static void bound_is_exact(void **state) {
  (void)state;
  enum { N = 100000 };
  char *zeros = calloc(N, 1);
  unsigned char *z = malloc(N);
  assert_non_null(zeros);
  assert_non_null(z);
  size_t zl = compress_with(31, zeros, N, z, N);
  assert_true(zl < N / 50);
  char *out = NULL;
  size_t len = 0;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_http_decode_body("gzip", (const char *)z, zl, N, &out, &len, &err), HS_OK);
  assert_int_equal(len, N);
  free(out);
  out = NULL;
  assert_int_equal(hs_http_decode_body("gzip", (const char *)z, zl, N - 1, &out, &len, &err), HS_LIMIT);
  assert_null(out);
  assert_non_null(strstr(err.message, "exceeds the limit"));
  /* truncated and corrupt streams, unknown codings */
  assert_int_equal(hs_http_decode_body("gzip", (const char *)z, zl - 5, N, &out, &len, &err), HS_PARSE);
  assert_null(out);
  assert_int_equal(hs_http_decode_body("gzip", "not gzip at all", 15, N, &out, &len, &err), HS_PARSE);
  assert_int_equal(hs_http_decode_body("br", (const char *)z, zl, N, &out, &len, &err), HS_UNSUPPORTED);
  assert_int_equal(hs_http_decode_body("gzip, deflate", (const char *)z, zl, N, &out, &len, &err), HS_UNSUPPORTED);
  free(zeros);
  free(z);
}

static void accept_encoding_choice(void **state) {
  (void)state;
  assert_null(hs_http_pick_coding(NULL));
  assert_null(hs_http_pick_coding(""));
  assert_null(hs_http_pick_coding("identity"));
  assert_null(hs_http_pick_coding("br"));
  assert_string_equal(hs_http_pick_coding("gzip"), "gzip");
  assert_string_equal(hs_http_pick_coding("deflate, gzip"), "gzip");
  assert_string_equal(hs_http_pick_coding("GZip;q=0.5"), "gzip");
  assert_string_equal(hs_http_pick_coding("gzip;q=0, deflate"), "deflate");
  assert_null(hs_http_pick_coding("gzip;q=0, deflate; q=0.000"));
  assert_string_equal(hs_http_pick_coding("br, *"), "gzip");
  assert_null(hs_http_pick_coding("*, gzip;q=0"));
  assert_null(hs_http_pick_coding("xgzip, gzipx"));
}

/* What hs_http_encode_body writes, zlib reads back. */
static void encode_round_trips(void **state) {
  (void)state;
  const char *codings[] = {"gzip", "deflate"};
  for (size_t i = 0; i < 2; i++) {
    hs_sbuf b = {0};
    for (int k = 0; k < 200; k++) hs_sbuf_printf(&b, "{\"k\":%d},", k);
    size_t plain_len = b.len;
    char *plain = malloc(plain_len);
    assert_non_null(plain);
    memcpy(plain, b.data, plain_len);
    assert_int_equal(hs_http_encode_body(codings[i], &b), HS_OK);
    assert_true(b.len < plain_len);
    char *out = NULL;
    size_t len = 0;
    hs_error err;
    hs_error_clear(&err);
    assert_int_equal(hs_http_decode_body(codings[i], b.data, b.len, plain_len, &out, &len, &err), HS_OK);
    assert_int_equal(len, plain_len);
    assert_memory_equal(out, plain, len);
    free(out);
    free(plain);
    hs_sbuf_free(&b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(decodes_each_coding),
      cmocka_unit_test(bound_is_exact),
      cmocka_unit_test(accept_encoding_choice),
      cmocka_unit_test(encode_round_trips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

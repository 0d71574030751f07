/* test_codec.c - the infer request decoder and response encoder on real request bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/codec.h"

static int decode(const char *json, hs_infer_request *req, hs_error *err) {
  hs_codec_limits lim;
  hs_codec_limits_default(&lim);
  hs_error_clear(err);
  return hs_infer_request_decode(json, strlen(json), -1, &lim, req, err);
}

static void json_nested_and_flat(void **state) {
  (void)state;
  hs_infer_request req;
  hs_error err;
  assert_int_equal(decode("{\"id\":\"r1\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],"
                          "\"data\":[[1,2.5],[3,-4]]}]}", &req, &err), HS_OK);
  assert_true(req.has_id);
  assert_string_equal(req.id, "r1");
  assert_int_equal(req.n_inputs, 1);
  const float *f = req.inputs[0].t.data;
  assert_true(f[0] == 1.0f && f[1] == 2.5f && f[2] == 3.0f && f[3] == -4.0f);
  assert_int_equal(req.inputs[0].t.nbytes, 16);
  hs_infer_request_free(&req);

  assert_int_equal(decode("{\"inputs\":[{\"name\":\"i\",\"datatype\":\"INT64\",\"shape\":[3],\"data\":[1,-2,9007199254740993]}]}",
                          &req, &err), HS_OK);
  const int64_t *i = req.inputs[0].t.data;
  assert_true(i[0] == 1 && i[1] == -2 && i[2] == 9007199254740993ll);
  hs_infer_request_free(&req);
}

static void json_errors_name_the_input(void **state) {
  (void)state;
  hs_infer_request req;
  hs_error err;
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[3],\"data\":[1,2]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "input x"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"y\",\"datatype\":\"FP99\",\"shape\":[1],\"data\":[1]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "input y"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"z\",\"datatype\":\"UINT8\",\"shape\":[1],\"data\":[300]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "input z"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"w\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[\"a\"]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_int_equal(decode("{\"inputs\":[", &req, &err), HS_PARSE);
  assert_int_equal(decode("[]", &req, &err), HS_PARSE);
  assert_int_equal(decode("{\"inputs\":{}}", &req, &err), HS_PARSE);
  /* overflowing dimension products and oversized tensors never allocate */
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"big\",\"datatype\":\"FP32\",\"shape\":[4294967296,4294967296,4],"
                          "\"data\":[1]}]}", &req, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "input big"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"huge\",\"datatype\":\"FP32\",\"shape\":[1000000,1000000],"
                          "\"data\":[1]}]}", &req, &err), HS_LIMIT);
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]},"
                          "{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-1],\"data\":[1]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  /* deep nesting is refused, not recursed into without bound */
  char deep[4096] = "{\"inputs\":[{\"name\":\"d\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":";
  for (int k = 0; k < 200; k++) strcat(deep, "[");
  strcat(deep, "1");
  for (int k = 0; k < 200; k++) strcat(deep, "]");
  strcat(deep, "}]}");
  assert_int_equal(decode(deep, &req, &err), HS_INVALID_ARGUMENT);
}

static void binary_inputs_and_outputs(void **state) {
  (void)state;
  const char *hdr = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,2],"
                    "\"parameters\":{\"binary_data_size\":8}}],\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":true}}]}";
  char body[512];
  size_t hl = strlen(hdr);
  memcpy(body, hdr, hl);
  float vals[2] = {1.5f, -2.0f};
  memcpy(body + hl, vals, 8);
  hs_codec_limits lim;
  hs_codec_limits_default(&lim);
  hs_infer_request req;
  hs_error err;
  assert_int_equal(hs_infer_request_decode(body, hl + 8, (long long)hl, &lim, &req, &err), HS_OK);
  float got[2];
  memcpy(got, req.inputs[0].t.data, 8);
  assert_true(got[0] == 1.5f && got[1] == -2.0f);
  assert_int_equal(req.n_outputs, 1);
  assert_true(req.outputs[0].binary);

  hs_tensor y = {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {1, 2}, .data = vals, .nbytes = 8};
  hs_infer_output out = {.name = "y", .t = &y, .binary = true};
  hs_sbuf b = {0};
  size_t json_len = 0;
  bool has_binary = false;
  assert_int_equal(hs_infer_response_encode("m", 3, &req, &out, 1, &b, &json_len, &has_binary), HS_OK);
  assert_true(has_binary);
  assert_int_equal(b.len, json_len + 8);
  assert_memory_equal(b.data + json_len, vals, 8);
  assert_non_null(strstr(b.data, "\"model_version\":\"3\""));
  assert_non_null(strstr(b.data, "\"binary_data_size\":8"));
  hs_sbuf_free(&b);
  hs_infer_request_free(&req);

  /* short binary section, extra bytes, header longer than the body, missing header */
  assert_int_equal(hs_infer_request_decode(body, hl + 4, (long long)hl, &lim, &req, &err), HS_PARSE);
  assert_non_null(strstr(err.message, "input x"));
  assert_int_equal(hs_infer_request_decode(body, hl + 8, (long long)hl - 1, &lim, &req, &err), HS_PARSE);
  assert_int_equal(hs_infer_request_decode(body, hl + 8, (long long)hl + 100, &lim, &req, &err), HS_PARSE);
  assert_int_equal(hs_infer_request_decode(body, hl, -1, &lim, &req, &err), HS_PARSE);
}

static void json_response_values(void **state) {
  (void)state;
  hs_infer_request req;
  memset(&req, 0, sizeof req);
  float vals[3] = {0.1f, 2.0f, -3.25f};
  hs_tensor y = {.dtype = HS_DT_FLOAT32, .ndim = 1, .dims = {3}, .data = vals, .nbytes = 12};
  hs_infer_output out = {.name = "y\"q", .t = &y, .binary = false};
  hs_sbuf b = {0};
  size_t json_len = 0;
  bool has_binary = true;
  assert_int_equal(hs_infer_response_encode("m", 1, &req, &out, 1, &b, &json_len, &has_binary), HS_OK);
  assert_false(has_binary);
  assert_string_equal(b.data, "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":[{\"name\":\"y\\\"q\","
                              "\"datatype\":\"FP32\",\"shape\":[3],\"data\":[0.100000001,2,-3.25]}]}");
  hs_sbuf_free(&b);
}

/* Keys may come in any order, unknown keys (with any value) are skipped, and a known key given
 * twice is refused; integers stay exact, and values a type cannot hold are refused. */
static void json_key_order_and_values(void **state) {
  (void)state;
  hs_infer_request req;
  hs_error err;
  assert_int_equal(decode("{\"outputs\":[{\"name\":\"y\"}],\"extra\":{\"a\":[1,{\"b\":[[]]}],\"data\":\"s\"},"
                          "\"inputs\":[{\"data\":[[7,8]],\"shape\":[1,2],\"note\":[null,true],\"datatype\":\"INT32\","
                          "\"name\":\"a\"},{\"name\":\"u\",\"shape\":[2],\"datatype\":\"UINT64\","
                          "\"data\":[18446744073709551615,0]}],\"parameters\":{\"binary_data_output\":true}}",
                          &req, &err), HS_OK);
  assert_int_equal(req.n_inputs, 2);
  const int32_t *a = req.inputs[0].t.data;
  assert_true(a[0] == 7 && a[1] == 8);
  const uint64_t *u = req.inputs[1].t.data;
  assert_true(u[0] == UINT64_MAX && u[1] == 0);
  assert_int_equal(req.n_outputs, 1);
  assert_true(req.outputs[0].binary); /* the request-wide default, given after the outputs */
  hs_infer_request_free(&req);

  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
                          &req, &err), HS_PARSE);
  assert_non_null(strstr(err.message, "twice"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"f\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1e39]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "out of range"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"i\",\"datatype\":\"INT64\",\"shape\":[1],\"data\":[9223372036854775808]}]}",
                          &req, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "input i"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"i\",\"datatype\":\"INT64\",\"shape\":[1],\"data\":[1.5]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"b\",\"datatype\":\"BOOL\",\"shape\":[3],\"data\":[true,0,1]}]}", &req, &err),
                   HS_OK);
  const unsigned char *b = req.inputs[0].t.data;
  assert_true(b[0] == 1 && b[1] == 0 && b[2] == 1);
  hs_infer_request_free(&req);
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"b\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[true]}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_int_equal(decode("{\"inputs\":[]} x", &req, &err), HS_PARSE);
  assert_non_null(strstr(err.message, "malformed JSON"));
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]", &req, &err),
                   HS_PARSE);
}

/* 1 when s[0..n) is a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int is_json_number(const char *s, int n) {
  int i = 0;
  if (i < n && s[i] == '-') i++;
  if (i < n && s[i] == '0') i++;
  else if (i < n && s[i] >= '1' && s[i] <= '9')
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  else return 0;
  if (i < n && s[i] == '.') {
    int d = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == d) return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    int d = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == d) return 0;
  }
  return i == n;
}

/* Every float32 written by the encoder reads back as itself, through strtof and through strtod
 * then a float cast (what clients do), and is a valid JSON number; checked on 4.3 million bit
 * patterns spread over the whole range, plus the edges. */
/* Parameters hotserve does not implement are refused by name, wherever they appear. */
static void unsupported_parameters_are_refused(void **state) {
  (void)state;
  hs_infer_request req;
  hs_error err;
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}],"
                          "\"outputs\":[{\"name\":\"y\",\"parameters\":{\"classification\":2}}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "\"classification\" of output y"));
  hs_infer_request_free(&req);
  assert_int_equal(decode("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
                          "\"parameters\":{\"shared_memory_region\":\"r\",\"shared_memory_byte_size\":4}}]}", &req, &err),
                   HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "\"shared_memory_region\" of input x"));
  hs_infer_request_free(&req);
  assert_int_equal(decode("{\"parameters\":{\"sequence_id\":7},\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                          "\"shape\":[1],\"data\":[1]}]}", &req, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "\"sequence_id\" of the request"));
  hs_infer_request_free(&req);
  /* the implemented ones still decode */
  assert_int_equal(decode("{\"parameters\":{\"binary_data_output\":false},\"inputs\":[{\"name\":\"x\",\"datatype\":"
                          "\"FP32\",\"shape\":[1],\"data\":[1]}],\"outputs\":[{\"name\":\"y\",\"parameters\":"
                          "{\"binary_data\":false}}]}", &req, &err), HS_OK);
  hs_infer_request_free(&req);
}

/* A body that ends early names its end as the error's offset (not byte 0 or 1). */
static void truncated_body_offset(void **state) {
  (void)state;
  hs_infer_request req;
  hs_error err;
  const char *body = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\"";
  char want[64];
  snprintf(want, sizeof want, "near byte %zu:", strlen(body));
  assert_int_equal(decode(body, &req, &err), HS_PARSE);
  assert_non_null(strstr(err.message, want));
  hs_infer_request_free(&req);
  assert_int_equal(decode("{\"inputs\":[}", &req, &err), HS_PARSE); /* an error inside keeps its own offset: */
  assert_non_null(strstr(err.message, "near byte 12:")); /* yajl counts the offending '}' (at 11) as read */
  hs_infer_request_free(&req);
}

static void float32_text_round_trips(void **state) {
  (void)state;
  const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1e-45f, 1.17549435e-38f, 3.40282347e38f, 1e9f, 999999999.0f,
                         1e-5f, 9.99999975e-6f, 0.0001f, 123456789.0f, 100000000.0f, 16777216.0f, 0.5f, 2.5f};
  char buf[32];
  for (uint64_t k = 0; k < sizeof edges / sizeof edges[0] + 4300000u; k++) {
    float f;
    if (k < sizeof edges / sizeof edges[0]) {
      f = edges[k];
    } else {
      uint32_t bits = (uint32_t)(k * 997u + 12345u);
      memcpy(&f, &bits, 4);
      if (!isfinite(f)) continue;
    }
    int n = hs__format_f32(buf, f);
    assert_true(n > 0 && n <= 16);
    if (!is_json_number(buf, n)) fail_msg("not a JSON number: %.*s", n, buf);
    buf[n] = 0;
    float back = strtof(buf, NULL), back2 = (float)strtod(buf, NULL);
    if (memcmp(&back, &f, 4) != 0 || memcmp(&back2, &f, 4) != 0)
      fail_msg("%.9g written as %s reads back as %.9g", (double)f, buf, (double)back);
  }
  assert_int_equal(hs__format_f32(buf, 2.5f), 3);
  assert_memory_equal(buf, "2.5", 3);
  assert_int_equal(hs__format_f32(buf, 0x1p-20f), 14);
  assert_memory_equal(buf, "9.53674316e-07", 14);
  assert_int_equal(hs__format_f32(buf, -0.25f), 5);
  assert_memory_equal(buf, "-0.25", 5);
  assert_int_equal(hs__format_f32(buf, 123456792.0f), 9);
  assert_memory_equal(buf, "123456792", 9);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(json_nested_and_flat),
      cmocka_unit_test(json_errors_name_the_input),
      cmocka_unit_test(binary_inputs_and_outputs),
      cmocka_unit_test(json_response_values),
      cmocka_unit_test(float32_text_round_trips),
      cmocka_unit_test(json_key_order_and_values),
      cmocka_unit_test(unsupported_parameters_are_refused),
      cmocka_unit_test(truncated_body_offset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

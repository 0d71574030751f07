/* test_base.c - status strings, error records and overflow-safe shape arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"

static void test_status_strings(void **state) {
  (void)state;
  assert_string_equal(hs_status_str(HS_OK), "ok");
  assert_string_equal(hs_status_str(HS_PARSE), "malformed input");
  assert_string_equal(hs_status_str(12345), "unknown status");
}

static void test_error_set_and_prefix(void **state) {
  (void)state;
  hs_error err;
  hs_error_clear(&err);
  assert_int_equal(hs_error_set(&err, HS_NOT_FOUND, "input '%s'", "x"), HS_NOT_FOUND);
  hs_error_prefix(&err, "model %d", 3);
  assert_string_equal(err.message, "model 3: input 'x'");
  assert_int_equal(err.code, HS_NOT_FOUND);
}

static void test_numel_overflow(void **state) {
  (void)state;
  int64_t ok[3] = {2, 3, 4};
  assert_int_equal(hs_shape_numel(ok, 3), 24);
  int64_t big[3] = {INT64_MAX / 2, 3, 1};
  assert_int_equal(hs_shape_numel(big, 3), -1);
  int64_t neg[2] = {4, -1};
  assert_int_equal(hs_shape_numel(neg, 2), -1);
  assert_int_equal(hs_shape_numel(ok, 0), 1);
}

static void test_dtype_tables(void **state) {
  (void)state;
  assert_int_equal(hs_dtype_size(HS_DT_FLOAT32), 4);
  assert_int_equal(hs_dtype_from_kserve("INT64"), HS_DT_INT64);
  assert_int_equal(hs_dtype_from_kserve("FP99"), HS_DT_UNDEFINED);
  assert_int_equal(hs_dtype_from_npy("<f4"), HS_DT_FLOAT32);
  assert_int_equal(hs_dtype_from_npy("|u1"), HS_DT_UINT8);
  assert_int_equal(hs_dtype_from_npy("<u1"), HS_DT_UINT8);
  assert_string_equal(hs_dtype_npy_descr(HS_DT_BOOL), "|b1");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_strings),
      cmocka_unit_test(test_error_set_and_prefix),
      cmocka_unit_test(test_numel_overflow),
      cmocka_unit_test(test_dtype_tables),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

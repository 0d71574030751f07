/* test_shared.c - plug-in backends (backends/shared.c): the current ABI loads as it is, an ABI 1
 * plug-in still loads with load_buffer NULL (the server then verifies and loads by path), an ABI 2
 * one with load_stream NULL (the server then hands it whole buffers), any other ABI version is
 * refused, and loading a library twice gives the same table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hotserve/backend.h"

static const char *g_dir; /* where the plug-ins were built */

static int load_plugin(int abi, const hs_backend **out, hs_error *err) {
  char path[1024];
  snprintf(path, sizeof path, "%s/libhs_test_plugin_abi%d.so", g_dir, abi);
  return hs_backend_load_shared(path, out, err);
}

static void current_abi_loads_as_is(void **state) {
  (void)state;
  const hs_backend *b = NULL, *again = NULL;
  hs_error err;
  assert_int_equal(load_plugin(HS_BACKEND_ABI_VERSION, &b, &err), HS_OK);
  assert_int_equal(b->abi_version, HS_BACKEND_ABI_VERSION);
  assert_string_equal(b->name, "plugin");
  assert_non_null(b->load_buffer);
  assert_int_equal(b->load_buffer("x", 1, NULL, 0, NULL, NULL, &err), HS_UNSUPPORTED);
  assert_non_null(b->load_stream);
  assert_int_equal(b->load_stream(NULL, NULL, 0, NULL, NULL, &err), HS_UNSUPPORTED);
  assert_non_null(strstr(err.message, "plugin: cannot load a stream"));
  assert_int_equal(load_plugin(HS_BACKEND_ABI_VERSION, &again, &err), HS_OK);
  assert_ptr_equal(b, again);
}

static void abi1_loads_without_load_buffer(void **state) {
  (void)state;
  const hs_backend *b = NULL;
  hs_error err;
  assert_int_equal(load_plugin(1, &b, &err), HS_OK);
  assert_int_equal(b->abi_version, HS_BACKEND_ABI_VERSION); /* brought up to this ABI's layout */
  assert_null(b->load_buffer);
  assert_null(b->load_stream);
  assert_non_null(b->load);
  hs_backend_model *m = NULL;
  assert_int_equal(b->load("/nonexistent/model.onnx", NULL, &m, &err), HS_UNSUPPORTED);
  assert_non_null(strstr(err.message, "plugin: cannot load"));
}

static void abi2_loads_without_load_stream(void **state) {
  (void)state;
  const hs_backend *b = NULL;
  hs_error err;
  assert_int_equal(load_plugin(2, &b, &err), HS_OK);
  assert_int_equal(b->abi_version, HS_BACKEND_ABI_VERSION); /* brought up to this ABI's layout */
  assert_non_null(b->load_buffer);
  assert_null(b->load_stream);
  assert_int_equal(b->load_buffer("x", 1, NULL, 0, NULL, NULL, &err), HS_UNSUPPORTED);
  assert_non_null(strstr(err.message, "plugin: cannot load a buffer"));
}

static void other_abi_refused(void **state) {
  (void)state;
  const hs_backend *b = NULL;
  hs_error err;
  assert_int_equal(load_plugin(HS_BACKEND_ABI_VERSION + 1, &b, &err), HS_UNSUPPORTED);
  assert_null(b);
  assert_non_null(strstr(err.message, "ABI version"));
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_shared PLUGIN_DIR\n");
    return 2;
  }
  g_dir = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(current_abi_loads_as_is),
      cmocka_unit_test(abi1_loads_without_load_buffer),
      cmocka_unit_test(abi2_loads_without_load_stream),
      cmocka_unit_test(other_abi_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_fusion.c - the fusion passes on generated graphs: which ops stay live after compiling, and the answers
 * (PyTorch's) at batch sizes the model was not planned for first. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/npy.h"
#include "engine/engine.h"

#ifndef HS_FUSION_DIR
#error "HS_FUSION_DIR must name the generated cases folder"
#endif

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Space-separated sorted op types of the live nodes. */
static void live_ops(const hs_graph *g, char *buf, size_t len) {
  const char *names[512];
  int n = 0;
  for (int i = 0; i < g->n_nodes && n < 512; i++)
    if (!g->nodes[i].dead) names[n++] = g->nodes[i].op_type;
  qsort(names, (size_t)n, sizeof names[0], cmp_str);
  buf[0] = 0;
  for (int i = 0; i < n; i++) {
    if (i) strncat(buf, " ", len - strlen(buf) - 1);
    strncat(buf, names[i], len - strlen(buf) - 1);
  }
}

static int load_npy(const char *dir, const char *name, hs_tensor *t) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return 1;
  fclose(f);
  hs_error err;
  if (hs_npy_read(path, t, &err)) {
    fprintf(stderr, "%s: %s\n", path, err.message);
    return 1;
  }
  return 0;
}

static int check_case(const char *dir) {
  char path[1024], want[512] = {0}, got[2048];
  snprintf(path, sizeof path, "%s/ops.txt", dir);
  FILE *f = fopen(path, "r");
  if (!f || !fgets(want, sizeof want, f)) {
    if (f) fclose(f);
    return 1;
  }
  fclose(f);
  want[strcspn(want, "\n")] = 0;
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  hs_engine_model *m = NULL;
  hs_error err;
  hs_error_clear(&err);
  hs_backend_options opts = {.threads = 2};
  if (hs_engine_load(path, &opts, &m, &err)) {
    fprintf(stderr, "%s: %s\n", dir, err.message);
    return 1;
  }
  int bad = 0;
  live_ops(&m->g, got, sizeof got);
  if (strcmp(got, want) != 0) {
    fprintf(stderr, "%s: live ops '%s', expected '%s'\n", dir, got, want);
    bad = 1;
  }
  hs_tensor in[8], exp;
  int ni = 0;
  for (; ni < 8; ni++) {
    char name[32];
    snprintf(name, sizeof name, "input_%d.npy", ni);
    if (load_npy(dir, name, &in[ni])) break;
  }
  if (load_npy(dir, "expected_0.npy", &exp)) {
    hs_engine_free(m);
    return 1;
  }
  hs_engine_session *s = NULL;
  if (hs_engine_session_create(m, &s, &err)) {
    fprintf(stderr, "%s: %s\n", dir, err.message);
    bad = 1;
  }
  for (int rep = 0; s && rep < 2 && !bad; rep++) {
    hs_tensor out;
    memset(&out, 0, sizeof out);
    if (hs_engine_run(s, in, (size_t)ni, &out, 1, &err)) {
      fprintf(stderr, "%s: run: %s\n", dir, err.message);
      bad = 1;
      break;
    }
    if (out.ndim != exp.ndim || memcmp(out.dims, exp.dims, sizeof(int64_t) * (size_t)exp.ndim)) {
      fprintf(stderr, "%s: output shape differs\n", dir);
      bad = 1;
      break;
    }
    const float *a = out.data, *e = exp.data;
    int64_t n = hs_shape_numel(exp.dims, exp.ndim);
    for (int64_t i = 0; i < n; i++)
      if (!(fabsf(a[i] - e[i]) <= 1e-4f + 1e-3f * fabsf(e[i]))) {
        fprintf(stderr, "%s: element %lld: %g, expected %g\n", dir, (long long)i, a[i], e[i]);
        bad = 1;
        break;
      }
  }
  if (s) hs_engine_session_free(s);
  hs_engine_free(m);
  for (int i = 0; i < ni; i++) free(in[i].data);
  free(exp.data);
  return bad;
}

static void test_fusion_cases(void **state) {
  DIR *d = opendir(HS_FUSION_DIR);
  assert_non_null(d);
  struct dirent *e;
  int n = 0, failed = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", HS_FUSION_DIR, e->d_name);
    int bad = check_case(dir);
    printf("%-32s %s\n", e->d_name, bad ? "FAIL" : "ok");
    failed += bad;
    n++;
  }
  closedir(d);
  assert_true(n >= 12);
  assert_int_equal(failed, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_fusion_cases)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

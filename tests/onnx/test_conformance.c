/* test_conformance.c - ONNX's own backend test data (Debian's libonnx-testdata) through the engine.
 *
 *     test_conformance [DATA_DIR] [-v] [-k SUBSTRING]
 *
 * Walks node/, pytorch-converted/, pytorch-operator/ and simple/ under DATA_DIR; each case is a
 * model.onnx plus test_data_set_0/input_K.pb and output_K.pb (TensorProto). A case whose model
 * the engine refuses as unsupported (an op, attribute or type it does not implement) counts as
 * unsupported; otherwise it runs and is compared as ONNX does: same dtype and shape, and
 * |actual - expected| <= 1e-7 + 1e-3 * |expected|. Prints pass / fail / unsupported per op and a
 * total. Exit status 1 when any case fails, or when a case made only of ops the engine claims is
 * unsupported without being listed in k_known_unsupported below.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "case_util.h"
#include "engine/engine.h"
#include "onnx/onnx.h"
#include "ops/ops.h"

/* Cases of claimed ops that are knowingly unsupported, each with the reason. */
static const struct {
  const char *name;
  const char *reason;
} k_known_unsupported[] = {
    {"test_cast_FLOAT_to_STRING", "string tensors are not supported"},
    {"test_cast_STRING_to_FLOAT", "string tensors are not supported"},
    {"test_cast_BFLOAT16_to_FLOAT", "bfloat16 is not supported"},
    {"test_cast_FLOAT_to_BFLOAT16", "bfloat16 is not supported"},
    {"test_training_dropout", "Dropout in training mode is random; the engine does inference only"},
    {"test_maxpool_with_argmax", "MaxPool's Indices output is not supported"},
    {"test_maxpool_2d_uint8", "pooling runs on float32 only"},
    {"test_batchnorm_epsilon_training_mode", "BatchNormalization in training mode: inference only"},
    {"test_batchnorm_example_training_mode", "BatchNormalization in training mode: inference only"},
    {"test_resize_downsample_scales_cubic", "Resize mode cubic is not implemented"},
    {"test_resize_downsample_sizes_cubic", "Resize mode cubic is not implemented"},
    {"test_resize_upsample_scales_cubic", "Resize mode cubic is not implemented"},
    {"test_resize_upsample_sizes_cubic", "Resize mode cubic is not implemented"},
    {"test_max_float16", "float16 arithmetic is not supported (Cast handles float16)"},
    {"test_min_float16", "float16 arithmetic is not supported (Cast handles float16)"},
    {"test_identity_opt", "optional types are not supported"},
    {"test_identity_sequence", "sequence types are not supported"},
    {"test_if_seq", "sequence types are not supported (If branches build a sequence)"},
    {"test_if_opt", "optional types are not supported (If branches build an optional sequence)"},
    {"test_scan_sum", "Scan-8 (batch axis, sequence_lens) is not supported; Scan from opset 9 is"},
};

static int known_unsupported(const char *name) {
  for (size_t i = 0; i < sizeof k_known_unsupported / sizeof k_known_unsupported[0]; i++)
    if (strncmp(name, k_known_unsupported[i].name, strlen(k_known_unsupported[i].name)) == 0) return 1;
  return 0;
}

typedef struct {
  char name[64];
  int pass, fail, unsup;
} op_stat;

static op_stat g_stats[512];
static int g_n_stats;
static int g_verbose;

static op_stat *stat_for(const char *op) {
  for (int i = 0; i < g_n_stats; i++)
    if (strcmp(g_stats[i].name, op) == 0) return &g_stats[i];
  if (g_n_stats == 512) return &g_stats[511];
  op_stat *s = &g_stats[g_n_stats++];
  snprintf(s->name, sizeof s->name, "%s", op);
  return s;
}

enum { R_PASS, R_FAIL, R_UNSUP };

/* The distinct op types of a model (from the decoded graph, Constant nodes included). */
static int model_ops(const char *path, char ops[][64], int max, int *all_claimed) {
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  int n = 0;
  *all_claimed = 1;
  void *buf;
  size_t len;
  if (hs_read_file(path, 0, &buf, &len, &err) == 0) {
    /* types the decoder refuses (strings, sequences, optionals) are not claimed */
    if (hs_onnx_decode_model(buf, len, NULL, &g, &err) == HS_UNSUPPORTED) *all_claimed = 0;
    free(buf);
  }
  for (int i = 0; i < g.n_nodes && n < max; i++) {
    int dup = 0;
    for (int k = 0; k < n; k++) dup |= strcmp(ops[k], g.nodes[i].op_type) == 0;
    if (dup) continue;
    snprintf(ops[n++], 64, "%s", g.nodes[i].op_type);
    if (strcmp(g.nodes[i].op_type, "Constant") != 0 && hs_op_find(g.nodes[i].op_type) < 0) *all_claimed = 0;
    if (g.nodes[i].domain[0]) *all_claimed = 0;
  }
  hs_graph_free(&g);
  return n;
}

static int load_pb(const char *path, hs_tensor *t, char **name) {
  void *buf;
  size_t len;
  hs_error err;
  if (hs_read_file(path, 0, &buf, &len, &err)) return -1;
  int rc = hs_onnx_decode_tensor(buf, len, NULL, t, name, &err);
  free(buf);
  if (rc && g_verbose) fprintf(stderr, "  %s: %s\n", path, err.message);
  return rc;
}

static int run_case(const char *dir, char *why, size_t why_len) {
  char path[2048];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  hs_engine_model *m = NULL;
  hs_engine_session *s = NULL;
  hs_error err;
  hs_error_clear(&err);
  hs_tensor in[32], exp[32], *ordered = NULL, out[32];
  char *in_names[32] = {0}, *exp_names[32] = {0};
  int ni = 0, ne = 0, result = R_FAIL;
  memset(in, 0, sizeof in);
  memset(exp, 0, sizeof exp);
  int rc = hs_engine_load(path, NULL, &m, &err);
  if (rc) {
    snprintf(why, why_len, "%s", err.message);
    return rc == HS_UNSUPPORTED ? R_UNSUP : R_FAIL;
  }
  for (; ni < 32; ni++) {
    snprintf(path, sizeof path, "%s/test_data_set_0/input_%d.pb", dir, ni);
    if (!file_exists(path)) break;
    if (load_pb(path, &in[ni], &in_names[ni])) {
      snprintf(why, why_len, "cannot read %s", path);
      result = R_UNSUP; /* a type the decoder does not know (strings, bfloat16...) */
      goto done;
    }
  }
  for (; ne < 32; ne++) {
    snprintf(path, sizeof path, "%s/test_data_set_0/output_%d.pb", dir, ne);
    if (!file_exists(path)) break;
    if (load_pb(path, &exp[ne], &exp_names[ne])) {
      snprintf(why, why_len, "cannot read %s", path);
      result = R_UNSUP;
      goto done;
    }
  }
  /* inputs in model order: by name when the .pb names them, else by position */
  ordered = calloc((size_t)m->n_inputs + 1, sizeof *ordered);
  if (!ordered) goto done;
  for (int i = 0; i < m->n_inputs; i++) {
    int k = -1;
    for (int j = 0; j < ni; j++)
      if (in_names[j] && strcmp(in_names[j], m->inputs[i].name) == 0) k = j;
    if (k < 0 && i < ni && (!in_names[i] || !in_names[i][0])) k = i;
    if (k < 0) {
      snprintf(why, why_len, "no data for input '%s'", m->inputs[i].name);
      goto done;
    }
    ordered[i] = in[k];
  }
  if (ne != m->n_outputs) {
    snprintf(why, why_len, "%d expected outputs for %d model outputs", ne, m->n_outputs);
    goto done;
  }
  if (hs_engine_session_create(m, &s, &err)) goto done;
  rc = hs_engine_run(s, ordered, (size_t)m->n_inputs, out, (size_t)ne, &err);
  if (rc) {
    snprintf(why, why_len, "%s", err.message);
    result = rc == HS_UNSUPPORTED ? R_UNSUP : R_FAIL;
    goto done;
  }
  result = R_PASS;
  for (int k = 0; k < ne; k++)
    if (compare_tensors(dir, &out[k], &exp[k])) {
      snprintf(why, why_len, "output %d differs", k);
      result = R_FAIL;
    }
done:
  hs_engine_session_free(s);
  hs_engine_free(m);
  free(ordered);
  for (int i = 0; i < ni; i++) {
    free(in[i].data);
    free(in_names[i]);
  }
  for (int i = 0; i < ne; i++) {
    free(exp[i].data);
    free(exp_names[i]);
  }
  return result;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  const char *root = "/usr/lib/python3/dist-packages/onnx/backend/test/data";
  const char *filter = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-v") == 0) g_verbose = 1;
    else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc) filter = argv[++i];
    else root = argv[i];
  }
  static const char *const suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
  int total[3] = {0}, bad = 0, cases = 0;
  for (size_t si = 0; si < 4; si++) {
    char sdir[1024];
    snprintf(sdir, sizeof sdir, "%s/%s", root, suites[si]);
    DIR *d = opendir(sdir);
    if (!d) {
      fprintf(stderr, "conformance: cannot open %s (is libonnx-testdata installed?)\n", sdir);
      return 1;
    }
    char *names[2048];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 2048)
      if (e->d_name[0] != '.') names[nn++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)nn, sizeof *names, cmp_names);
    for (int i = 0; i < nn; i++) {
      char dir[2048], mpath[2100], why[600] = "";
      snprintf(dir, sizeof dir, "%s/%s", sdir, names[i]);
      snprintf(mpath, sizeof mpath, "%s/model.onnx", dir);
      if ((filter && !strstr(names[i], filter)) || !file_exists(mpath)) {
        free(names[i]);
        continue;
      }
      char ops[16][64];
      int all_claimed, nops = model_ops(mpath, ops, 16, &all_claimed);
      int r = run_case(dir, why, sizeof why);
      cases++;
      total[r]++;
      for (int k = 0; k < nops; k++) {
        op_stat *st = stat_for(ops[k]);
        if (r == R_PASS) st->pass++;
        else if (r == R_FAIL) st->fail++;
        else st->unsup++;
      }
      int counts_against = r == R_FAIL || (r == R_UNSUP && all_claimed && !known_unsupported(names[i]));
      if (counts_against) bad++;
      if (counts_against || g_verbose)
        printf("%-5s %s/%s: %s\n", r == R_PASS ? "pass" : r == R_FAIL ? "FAIL" : counts_against ? "UNSUP" : "unsup",
               suites[si], names[i], why);
      free(names[i]);
    }
  }
  printf("\n%-28s %6s %6s %6s\n", "op", "pass", "fail", "unsup");
  for (int i = 0; i < g_n_stats; i++)
    printf("%-28s %6d %6d %6d\n", g_stats[i].name, g_stats[i].pass, g_stats[i].fail, g_stats[i].unsup);
  printf("%-28s %6d %6d %6d   (%d cases; %d count against the engine)\n", "TOTAL", total[R_PASS], total[R_FAIL],
         total[R_UNSUP], cases, bad);
  return bad ? 1 : 0;
}

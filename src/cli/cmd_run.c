/* cmd_run.c - `hotserve run`: runs an ONNX model on .npy inputs, writes .npy outputs, reports latency. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "base/npy.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "hotserve/backend.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve run MODEL.onnx -i|--input NAME=FILE.npy ... [--output-dir DIR] [--threads N] [--repeat N]\n"
          "                   [--warmup N] [--print-times]\n"
          "  Runs the model WARMUP times untimed (default 0), then REPEAT times timed (default 1) on the\n"
          "  given inputs, writes each output to DIR/NAME.npy (characters other than letters, digits, '.',\n"
          "  '-', '_' become '_') and prints the median and p99 latency of the timed runs. The first run\n"
          "  of the process pays one-time costs (oneDNN generating its GEMM code, OpenMP starting its\n"
          "  threads: milliseconds): --warmup 1 or more keeps it out of the numbers, as a server's\n"
          "  warm-up keeps it out of requests. --print-times prints every timed run's latency in run order.\n");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double now_ms(void) { return (double)hs_now_ns() / 1e6; }

static void safe_name(const char *in, char *out, size_t cap) {
  size_t i = 0;
  for (; in[i] && i + 1 < cap; i++) {
    char c = in[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
             c == '.';
    out[i] = ok ? c : '_';
  }
  out[i] = 0;
  if (i == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
    for (size_t k = 0; k < i; k++) out[k] = '_';
    if (i == 0 && cap > 1) strcpy(out, "_");
  }
}

/* mkdir -p: creates dir and its missing parents (existing folders are fine). */
static int make_dirs(const char *dir) {
  char buf[4096];
  size_t len = strlen(dir);
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, dir, len + 1);
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char c = buf[i];
    buf[i] = 0;
    mkdir(buf, 0777);
    buf[i] = c;
  }
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

int hs_cmd_run(int argc, char **argv) {
  const char *model_path = NULL, *out_dir = NULL;
  int threads = 0, repeat = 1, warmup = 0, print_times = 0, n_args = 0;
  const char **in_names = calloc((size_t)argc + 1, sizeof(char *));
  const char **in_files = calloc((size_t)argc + 1, sizeof(char *));
  int status = 1;
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_backend_model *model = NULL;
  hs_backend_session *sess = NULL;
  hs_tensor *inputs = NULL, *outputs = NULL;
  double *lat = NULL;
  size_t n_in = 0, n_out = 0;
  hs_error err;
  hs_error_clear(&err);
  if (!in_names || !in_files) {
    fprintf(stderr, "hotserve run: out of memory\n");
    goto done;
  }
  static const struct option lopts[] = {
      {"input", required_argument, NULL, 'i'}, {"output-dir", required_argument, NULL, 'o'},
      {"threads", required_argument, NULL, 't'}, {"repeat", required_argument, NULL, 'r'},
      {"warmup", required_argument, NULL, 'w'}, {"print-times", no_argument, NULL, 'p'},
      {"help", no_argument, NULL, 'h'}, {0}};
  hs_cli_getopt_reset();
  for (int c; (c = hs_cli_next_option("run", argc, argv, ":hi:", lopts, usage, &status)) != -1;) {
    if (c == HS_CLI_EXIT) {
      goto done;
    } else if (c == 'i') {
      char *spec = optarg;
      char *eq = strrchr(spec, '=');
      if (!eq || eq == spec) {
        fprintf(stderr, "hotserve run: --input wants NAME=FILE.npy, got '%s'\n", spec);
        status = 2;
        goto done;
      }
      *eq = 0;
      in_names[n_args] = spec;
      in_files[n_args++] = eq + 1;
    } else if (c == 'o') {
      out_dir = optarg;
    } else if (c == 't') {
      if (parse_int(optarg, 1, 1024, &threads)) {
        fprintf(stderr, "hotserve run: --threads wants a number from 1 to 1024\n");
        status = 2;
        goto done;
      }
    } else if (c == 'r') {
      if (parse_int(optarg, 1, 10000000, &repeat)) {
        fprintf(stderr, "hotserve run: --repeat wants a positive number\n");
        status = 2;
        goto done;
      }
    } else if (c == 'w') {
      if (parse_int(optarg, 0, 10000000, &warmup)) {
        fprintf(stderr, "hotserve run: --warmup wants a number from 0\n");
        status = 2;
        goto done;
      }
    } else if (c == 'p') {
      print_times = 1;
    }
  }
  if (optind < argc) model_path = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "hotserve run: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    status = 2;
    goto done;
  }
  if (!model_path) {
    usage(stderr);
    status = 2;
    goto done;
  }
  hs_backend_options opts = {.threads = threads};
  hs_engine_prefer_heap(); /* the load reuses the pages it frees (engine.h) */
  double t0 = now_ms();
  if (be->load(model_path, &opts, &model, &err)) {
    fprintf(stderr, "hotserve run: %s\n", err.message);
    goto done;
  }
  double load_ms = now_ms() - t0;
  n_in = be->num_inputs(model);
  n_out = be->num_outputs(model);
  inputs = calloc(n_in + 1, sizeof *inputs);
  outputs = calloc(n_out + 1, sizeof *outputs);
  lat = calloc((size_t)repeat, sizeof *lat);
  if (!inputs || !outputs || !lat) {
    fprintf(stderr, "hotserve run: out of memory\n");
    goto done;
  }
  for (int k = 0; k < n_args; k++) {
    int found = 0;
    for (size_t i = 0; i < n_in; i++)
      if (strcmp(be->input(model, i)->name, in_names[k]) == 0) found = 1;
    if (!found) {
      fprintf(stderr, "hotserve run: the model has no input '%s'\n", in_names[k]);
      goto done;
    }
  }
  for (size_t i = 0; i < n_in; i++) {
    const hs_io_desc *d = be->input(model, i);
    int k = -1;
    for (int j = 0; j < n_args; j++)
      if (strcmp(in_names[j], d->name) == 0) k = j;
    if (k < 0) {
      fprintf(stderr, "hotserve run: missing --input %s=FILE.npy\n", d->name);
      goto done;
    }
    if (hs_npy_read(in_files[k], &inputs[i], &err)) {
      fprintf(stderr, "hotserve run: input '%s': %s\n", d->name, err.message);
      goto done;
    }
  }
  if (be->session_create(model, &sess, &err)) {
    fprintf(stderr, "hotserve run: %s\n", err.message);
    goto done;
  }
  for (int r = 0; r < warmup + repeat; r++) {
    double s = now_ms();
    if (be->run(sess, inputs, n_in, outputs, n_out, &err)) {
      fprintf(stderr, "hotserve run: %s\n", err.message);
      goto done;
    }
    if (r >= warmup) lat[r - warmup] = now_ms() - s;
  }
  if (print_times) {
    printf("times ms:");
    for (int r = 0; r < repeat; r++) printf(" %.3f", lat[r]);
    printf("\n");
  }
  if (out_dir) {
    if (make_dirs(out_dir)) {
      fprintf(stderr, "hotserve run: cannot create output folder %s\n", out_dir);
      goto done;
    }
    for (size_t k = 0; k < n_out; k++) {
      char name[256], path[4096];
      safe_name(be->output(model, k)->name, name, sizeof name);
      snprintf(path, sizeof path, "%s/%s.npy", out_dir, name);
      if (hs_npy_write(path, &outputs[k], &err)) {
        fprintf(stderr, "hotserve run: %s\n", err.message);
        goto done;
      }
    }
  }
  for (size_t k = 0; k < n_out; k++) {
    printf("output %s: %s [", be->output(model, k)->name, hs_dtype_kserve_name(outputs[k].dtype));
    for (int d = 0; d < outputs[k].ndim; d++) printf("%s%lld", d ? ", " : "", (long long)outputs[k].dims[d]);
    printf("]\n");
  }
  qsort(lat, (size_t)repeat, sizeof *lat, cmp_double);
  size_t p99 = (size_t)((repeat - 1) * 0.99 + 0.5);
  printf("load %.3f ms, runs %d, median %.3f ms, p99 %.3f ms\n", load_ms, repeat, lat[(repeat - 1) / 2],
         lat[p99]);
  status = 0;
done:
  if (inputs)
    for (size_t i = 0; i < n_in; i++) free(inputs[i].data);
  free(inputs);
  free(outputs);
  free(lat);
  if (sess) be->session_free(sess);
  if (model) be->free_model(model);
  free(in_names);
  free(in_files);
  return status;
}

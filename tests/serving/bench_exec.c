/* bench_exec.c - CPU time of the serving execution path's own costs: the hand-off to a compute thread
 * (serving/compute.c) and the engine session's plan cache under dynamic batching's changing sizes.
 *
 * Not a test (speed is never asserted); bench/serve/exec_cost.sh builds the models and runs it.
 * Usage: bench_exec MODEL.onnx ROW_ELEMS [RUNS]
 *   MODEL.onnx has one float input [N, ROW_ELEMS...] flattened to ROW_ELEMS per row, N symbolic.
 * Prints CPU microseconds (getrusage, every thread of the process) per run for:
 *   noop direct / noop hand-off     an empty function called here, or run on a compute thread
 *   run b1 direct / run b1 hand-off the model at 1 row, on this thread or through hs_compute_run
 *   fixed 8 rows / cycling 4..8     the model at 8 rows each run, or at 4,5,6,7,8,4,... rows (the
 *                                   sizes batching makes), per run
 * CPU time counts what a hand-off costs the machine (both threads' wake-ups) without the waiting
 * that a loaded machine adds to wall time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine/engine.h"
#include "serving/compute.h"

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec * 1e6 +
         (double)ru.ru_stime.tv_usec;
}

static double wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

typedef struct run_arg {
  hs_engine_session *s;
  hs_tensor in;
  hs_tensor out[4];
  int n_out;
  int rc;
} run_arg;

static void noop(void *arg) { (void)arg; }

static void run_once(void *arg) {
  run_arg *a = arg;
  hs_error err;
  hs_error_clear(&err);
  a->rc = hs_engine_run(a->s, &a->in, 1, a->out, (size_t)a->n_out, &err);
  if (a->rc) fprintf(stderr, "run failed: %s\n", err.message);
}

static void set_rows(run_arg *a, float *data, int64_t rows, int64_t row_elems) {
  a->in.dims[0] = rows;
  a->in.nbytes = (size_t)(rows * row_elems) * sizeof(float);
  a->in.data = data;
}

static void report(const char *what, double c0, double w0, int runs) {
  printf("%-20s %9.2f cpu-us/run %9.2f wall-us/run\n", what, (cpu_us() - c0) / runs, (wall_us() - w0) / runs);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_exec MODEL.onnx ROW_ELEMS [RUNS]\n");
    return 2;
  }
  int64_t row = atoll(argv[2]);
  int runs = argc > 3 ? atoi(argv[3]) : 2000;
  hs_error err;
  hs_error_clear(&err);
  hs_backend_options opts = {.threads = 1};
  hs_engine_model *m;
  hs_engine_session *s;
  if (hs_engine_load(argv[1], &opts, &m, &err) || hs_engine_session_create(m, &s, &err)) {
    fprintf(stderr, "bench_exec: %s\n", err.message);
    return 1;
  }
  if (m->n_inputs != 1 || m->n_outputs > 4) {
    fprintf(stderr, "bench_exec: one input and at most 4 outputs, please\n");
    return 1;
  }
  float *data = calloc((size_t)(8 * row), sizeof(float));
  run_arg a = {.s = s, .n_out = m->n_outputs};
  a.in.dtype = HS_DT_FLOAT32;
  a.in.ndim = m->inputs[0].ndim;
  for (int k = 0; k < a.in.ndim; k++) a.in.dims[k] = m->inputs[0].dims[k];
  hs_compute_start(0, 1);

  for (int rep = 0; rep < 3; rep++) { /* interleaved rounds: each pair side by side */
    printf("round %d\n", rep + 1);
    double c0 = cpu_us(), w0 = wall_us();
    for (int i = 0; i < runs; i++) noop(NULL);
    report("noop direct", c0, w0, runs);
    c0 = cpu_us(), w0 = wall_us();
    for (int i = 0; i < runs; i++) hs_compute_run(noop, NULL);
    report("noop hand-off", c0, w0, runs);

    set_rows(&a, data, 1, row);
    run_once(&a);
    c0 = cpu_us(), w0 = wall_us();
    for (int i = 0; i < runs; i++) run_once(&a);
    report("run b1 direct", c0, w0, runs);
    c0 = cpu_us(), w0 = wall_us();
    for (int i = 0; i < runs; i++) hs_compute_run(run_once, &a);
    report("run b1 hand-off", c0, w0, runs);

    set_rows(&a, data, 8, row);
    c0 = cpu_us(), w0 = wall_us();
    for (int i = 0; i < runs; i++) run_once(&a);
    report("fixed 8 rows", c0, w0, runs);
    c0 = cpu_us(), w0 = wall_us();
    for (int i = 0; i < runs; i++) {
      set_rows(&a, data, 4 + i % 5, row);
      run_once(&a);
    }
    report("cycling 4..8 rows", c0, w0, runs);
  }
  hs_engine_session_free(s);
  hs_engine_free(m);
  free(data);
  return a.rc ? 1 : 0;
}

/* test_onnx_cpu.c - the onnx-cpu backend's contract (include/hotserve/backend.h): io descriptors
 * with -1 for dynamic dims, input checking that names the input, outputs that live until the next
 * run, several threads running one model at once with their own sessions, and loads from memory
 * (load_buffer) and from a stream of pieces (load_stream). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "case_util.h"
#include "hotserve/backend.h"

#define CASE(name) HS_CASES_DIR "/cases/" name

static hs_backend_model *load(const char *dir) {
  char path[1024];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  hs_backend_model *m = NULL;
  hs_error err;
  int rc = hs_backend_onnx_cpu()->load(path, NULL, &m, &err);
  if (rc) fprintf(stderr, "%s\n", err.message);
  assert_int_equal(rc, 0);
  return m;
}

static void test_descriptors_and_memory(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  assert_int_equal(be->abi_version, HS_BACKEND_ABI_VERSION);
  assert_string_equal(be->name, "onnx-cpu");
  hs_backend_model *m = load(CASE("dyn_batch_mlp"));
  assert_int_equal(be->num_inputs(m), 1);
  assert_int_equal(be->num_outputs(m), 1);
  const hs_io_desc *in = be->input(m, 0), *out = be->output(m, 0);
  assert_string_equal(in->name, "x");
  assert_int_equal(in->dtype, HS_DT_FLOAT32);
  assert_int_equal(in->ndim, 2);
  assert_int_equal(in->dims[0], -1);
  assert_int_equal(in->dims[1], 4);
  assert_string_equal(out->name, "y");
  assert_int_equal(out->ndim, 2);
  assert_int_equal(out->dims[0], -1);
  assert_int_equal(out->dims[1], 3);
  assert_null(be->input(m, 1));
  assert_true(be->memory_bytes(m) >= (4 * 3 + 3) * sizeof(float)); /* at least the weights */
  be->free_model(m);
}

static void *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *buf = malloc(n > 0 ? (size_t)n : 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* Runs the case's input on m; returns the output bytes (malloc'ed). */
static void *run_case(hs_backend_model *m, const char *dir, size_t *len) {
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_tensor x, out;
  assert_int_equal(load_npys(dir, "input", &x, 1), 1);
  hs_backend_session *s;
  hs_error err;
  assert_int_equal(be->session_create(m, &s, &err), 0);
  assert_int_equal(be->run(s, &x, 1, &out, 1, &err), 0);
  void *copy = malloc(out.nbytes);
  memcpy(copy, out.data, out.nbytes);
  *len = out.nbytes;
  be->session_free(s);
  free(x.data);
  return copy;
}

/* load_buffer (ABI 2): a model and its external data given in memory load from those bytes only,
 * with outputs bit-for-bit those of the path-based load; nothing is read from the folder. */
static void test_load_buffer_reads_only_the_given_bytes(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  assert_non_null(be->load_buffer);
  const char *dir = CASE("external_data_subdir");
  char path[1024];
  size_t mlen, wlen;
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  void *model = slurp(path, &mlen);
  snprintf(path, sizeof path, "%s/data/weights.bin", dir);
  void *weights = slurp(path, &wlen);
  hs_backend_file files[2] = {{"model.onnx", model, mlen}, {"data/weights.bin", weights, wlen}};
  hs_backend_model *m = NULL;
  hs_error err;
  int rc = be->load_buffer(model, mlen, files, 2, NULL, &m, &err);
  if (rc) fprintf(stderr, "%s\n", err.message);
  assert_int_equal(rc, 0);
  hs_backend_model *cold = load(dir);
  size_t la, lb;
  void *a = run_case(m, dir, &la), *b = run_case(cold, dir, &lb);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  hs_tensor e;
  assert_int_equal(load_npys(dir, "expected", &e, 1), 1);
  hs_tensor got = e;
  got.data = a;
  assert_int_equal(compare_tensors("external_data_subdir", &got, &e), 0);
  free(a);
  free(b);
  free(e.data);
  be->free_model(m);
  be->free_model(cold);

  /* the weights' bytes come from the buffer, not the file beside the model: change them in memory
   * and the output changes */
  float *w = weights;
  for (size_t i = 0; i < wlen / sizeof(float); i++) w[i] += 1.0f;
  assert_int_equal(be->load_buffer(model, mlen, files, 2, NULL, &m, &err), 0);
  a = run_case(m, dir, &la);
  cold = load(dir);
  b = run_case(cold, dir, &lb);
  assert_true(memcmp(a, b, la) != 0);
  free(a);
  free(b);
  be->free_model(m);
  be->free_model(cold);

  /* external data missing from the given files is an error, even though it exists on disk */
  m = NULL;
  assert_int_equal(be->load_buffer(model, mlen, files, 1, NULL, &m, &err), HS_NOT_FOUND);
  assert_null(m);
  assert_non_null(strstr(err.message, "data/weights.bin"));
  assert_int_equal(be->load_buffer(model, mlen, NULL, 0, NULL, &m, &err), HS_NOT_FOUND);
  free(model);
  free(weights);
}

/* hs_backend_options.bytes_done (ABI 2.1): load_buffer calls it once, when it reads the given bytes
 * no more. The callback scribbles over them and frees them (ASan would see any later read), and the
 * model still computes bit-for-bit what the path-based load of the same files does. */
typedef struct {
  void *model, *weights;
  size_t mlen, wlen;
  int calls;
} done_ctx;

static void scribble_and_free(void *user) {
  done_ctx *c = user;
  c->calls++;
  memset(c->model, 0xA5, c->mlen);
  memset(c->weights, 0xA5, c->wlen);
  free(c->model);
  free(c->weights);
  c->model = c->weights = NULL;
}

static void test_load_buffer_bytes_done(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  const char *dir = CASE("external_data_subdir");
  char path[1024];
  done_ctx c = {0};
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  c.model = slurp(path, &c.mlen);
  snprintf(path, sizeof path, "%s/data/weights.bin", dir);
  c.weights = slurp(path, &c.wlen);
  hs_backend_file files[2] = {{"model.onnx", c.model, c.mlen}, {"data/weights.bin", c.weights, c.wlen}};
  hs_backend_options o = {.bytes_done = scribble_and_free, .bytes_done_user = &c};
  hs_backend_model *m = NULL;
  hs_error err;
  int rc = be->load_buffer(c.model, c.mlen, files, 2, &o, &m, &err);
  if (rc) fprintf(stderr, "%s\n", err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(c.calls, 1);
  assert_null(c.model);
  hs_backend_model *cold = load(dir);
  size_t la, lb;
  void *a = run_case(m, dir, &la), *b = run_case(cold, dir, &lb);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  free(a);
  free(b);
  be->free_model(m);
  be->free_model(cold);
}

/* load_stream (ABI 3): the model's bytes handed over in pieces (3 bytes each here, so every key,
 * length and payload spans pieces), external data from the given files (the model file listed
 * with data NULL, as the server passes it); the whole stream is read, bytes_done is called once,
 * the outputs are bit-for-bit the path load's; a stream cut short is refused with no model. */
typedef struct {
  const uint8_t *d;
  size_t len, have, pos;
  int done_calls;
} piece_src;

static int piece_next(void *user, const void **data, size_t *len, hs_error *err) {
  (void)err;
  piece_src *p = user;
  size_t n = p->have - p->pos < 3 ? p->have - p->pos : 3;
  *data = p->d + p->pos;
  *len = n;
  p->pos += n;
  return 0;
}

static void count_done(void *user) { ((piece_src *)user)->done_calls++; }

static void test_load_stream(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  assert_non_null(be->load_stream);
  const char *dir = CASE("external_data_subdir");
  char path[1024];
  size_t mlen, wlen;
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  void *model = slurp(path, &mlen);
  snprintf(path, sizeof path, "%s/data/weights.bin", dir);
  void *weights = slurp(path, &wlen);
  hs_backend_file files[2] = {{"model.onnx", NULL, mlen}, {"data/weights.bin", weights, wlen}};
  piece_src src = {.d = model, .len = mlen, .have = mlen};
  hs_backend_stream in = {.size = mlen, .next = piece_next, .user = &src};
  hs_backend_options o = {.bytes_done = count_done, .bytes_done_user = &src};
  hs_backend_model *m = NULL;
  hs_error err;
  int rc = be->load_stream(&in, files, 2, &o, &m, &err);
  if (rc) fprintf(stderr, "%s\n", err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(src.pos, mlen);
  assert_int_equal(src.done_calls, 1);
  hs_backend_model *cold = load(dir);
  size_t la, lb;
  void *a = run_case(m, dir, &la), *b = run_case(cold, dir, &lb);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  free(a);
  free(b);
  be->free_model(m);
  be->free_model(cold);

  /* cut short: refused, nothing built */
  src = (piece_src){.d = model, .len = mlen, .have = mlen / 2};
  m = NULL;
  assert_int_equal(be->load_stream(&in, files, 2, NULL, &m, &err), HS_PARSE);
  assert_null(m);
  assert_non_null(strstr(err.message, "truncated"));
  free(model);
  free(weights);
}

/* load_stream with open_file (ABI 3.1): the external file listed without data and handed out only
 * through open_file, in 5-byte pieces; it is opened once and the model computes bit-for-bit what a
 * path load does; an open that fails fails the load with no model. */
typedef struct {
  piece_src p;
  int opens, fail;
  hs_backend_stream st;
} file_src;

static int piece_next5(void *user, const void **data, size_t *len, hs_error *err) {
  (void)err;
  piece_src *p = user;
  size_t n = p->have - p->pos < 5 ? p->have - p->pos : 5;
  *data = p->d + p->pos;
  *len = n;
  p->pos += n;
  return 0;
}

static int open_weights(void *user, const char *path, const hs_backend_stream **out, hs_error *err) {
  file_src *f = user;
  f->opens++;
  if (f->fail || strcmp(path, "data/weights.bin") != 0) return hs_error_set(err, HS_NOT_FOUND, "no %s", path);
  f->st = (hs_backend_stream){.size = f->p.len, .next = piece_next5, .user = &f->p};
  *out = &f->st;
  return 0;
}

static void test_load_stream_external_streamed(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  const char *dir = CASE("external_data_subdir");
  char path[1024];
  size_t mlen, wlen;
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  void *model = slurp(path, &mlen);
  snprintf(path, sizeof path, "%s/data/weights.bin", dir);
  void *weights = slurp(path, &wlen);
  hs_backend_file files[2] = {{"model.onnx", NULL, mlen}, {"data/weights.bin", NULL, wlen}};
  for (int fail = 0; fail < 2; fail++) {
    piece_src src = {.d = model, .len = mlen, .have = mlen};
    hs_backend_stream in = {.size = mlen, .next = piece_next, .user = &src};
    file_src fs = {.p = {.d = weights, .len = wlen, .have = wlen}, .fail = fail};
    hs_backend_options o = {.open_file = open_weights, .open_file_user = &fs};
    hs_backend_model *m = NULL;
    hs_error err;
    int rc = be->load_stream(&in, files, 2, &o, &m, &err);
    assert_int_equal(fs.opens, 1);
    if (fail) {
      assert_int_equal(rc, HS_NOT_FOUND);
      assert_null(m);
      continue;
    }
    if (rc) fprintf(stderr, "%s\n", err.message);
    assert_int_equal(rc, 0);
    assert_true(fs.p.pos > 0 && fs.p.pos <= wlen);
    hs_backend_model *cold = load(dir);
    size_t la, lb;
    void *a = run_case(m, dir, &la), *b = run_case(cold, dir, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    be->free_model(m);
    be->free_model(cold);
  }
  free(model);
  free(weights);
}

static void test_dynamic_batch(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_backend_model *m = load(CASE("dyn_batch_mlp"));
  hs_tensor x, e;
  assert_int_equal(load_npys(CASE("dyn_batch_mlp"), "input", &x, 1), 1);
  assert_int_equal(load_npys(CASE("dyn_batch_mlp"), "expected", &e, 1), 1);
  hs_backend_session *s;
  hs_error err;
  assert_int_equal(be->session_create(m, &s, &err), 0);
  /* batch 1..7: each row of the batch is row (i % 3) of the case, so each output row is known */
  for (int pass = 0; pass < 2; pass++)
    for (int b = 1; b <= 7; b++) {
      float buf[7 * 4];
      for (int i = 0; i < b; i++) memcpy(buf + i * 4, (float *)x.data + (i % 3) * 4, 4 * sizeof(float));
      hs_tensor in = {.dtype = HS_DT_FLOAT32, .ndim = 2, .dims = {b, 4}, .data = buf, .nbytes = (size_t)b * 16};
      hs_tensor out;
      assert_int_equal(be->run(s, &in, 1, &out, 1, &err), 0);
      assert_int_equal(out.ndim, 2);
      assert_int_equal(out.dims[0], b);
      assert_int_equal(out.dims[1], 3);
      for (int i = 0; i < b; i++)
        for (int j = 0; j < 3; j++)
          assert_float_equal(((float *)out.data)[i * 3 + j], ((float *)e.data)[(i % 3) * 3 + j], 1e-5);
    }
  be->session_free(s);
  be->free_model(m);
  free(x.data);
  free(e.data);
}

static void test_input_errors_name_the_input(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_backend_model *m = load(CASE("add_bcast"));
  hs_tensor in[2], out;
  assert_int_equal(load_npys(CASE("add_bcast"), "input", in, 2), 2);
  hs_backend_session *s;
  hs_error err;
  assert_int_equal(be->session_create(m, &s, &err), 0);
  assert_int_equal(be->run(s, in, 2, &out, 1, &err), 0);

  hs_tensor bad[2] = {in[0], in[1]};
  bad[1].dtype = HS_DT_INT32; /* same size, wrong type */
  assert_int_equal(be->run(s, bad, 2, &out, 1, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "'b'"));
  assert_non_null(strstr(err.message, "FP32"));

  bad[1] = in[1];
  bad[0].dims[2] = 5; /* a fixed dim differs */
  assert_int_equal(be->run(s, bad, 2, &out, 1, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "'a'"));

  bad[0] = in[0];
  bad[0].ndim = 2;
  assert_int_equal(be->run(s, bad, 2, &out, 1, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "rank"));

  bad[0] = in[0];
  bad[0].nbytes -= 4; /* bytes that do not match the shape */
  assert_int_equal(be->run(s, bad, 2, &out, 1, &err), HS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "'a'"));

  assert_int_equal(be->run(s, in, 1, &out, 1, &err), HS_INVALID_ARGUMENT);
  hs_tensor outs2[2];
  assert_int_equal(be->run(s, in, 2, outs2, 2, &err), HS_INVALID_ARGUMENT);

  assert_int_equal(be->run(s, in, 2, &out, 1, &err), 0); /* still usable afterwards */
  be->session_free(s);
  be->free_model(m);
  free_tensors(in, 2);
}

static void test_outputs_live_until_next_run(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_backend_model *m = load(CASE("constant_node_two_outputs"));
  hs_tensor in, e[2], out[2];
  assert_int_equal(load_npys(CASE("constant_node_two_outputs"), "input", &in, 1), 1);
  assert_int_equal(load_npys(CASE("constant_node_two_outputs"), "expected", e, 2), 2);
  hs_backend_session *s1, *s2;
  hs_error err;
  assert_int_equal(be->session_create(m, &s1, &err), 0);
  assert_int_equal(be->session_create(m, &s2, &err), 0);
  assert_int_equal(be->run(s1, &in, 1, out, 2, &err), 0);
  /* another session's run must not touch s1's outputs */
  float other[3] = {100, 200, 300};
  hs_tensor in2 = in;
  in2.data = other;
  hs_tensor out2[2];
  assert_int_equal(be->run(s2, &in2, 1, out2, 2, &err), 0);
  assert_int_equal(compare_tensors("m", &out[0], &e[0]), 0);
  assert_int_equal(compare_tensors("y", &out[1], &e[1]), 0);
  assert_ptr_not_equal(out[0].data, out2[0].data);
  be->session_free(s1);
  be->session_free(s2);
  be->free_model(m);
  free(in.data);
  free_tensors(e, 2);
}

typedef struct {
  const hs_backend *be;
  hs_backend_model *m;
  hs_tensor in[2], e;
  int bad;
} thread_arg;

static void *worker(void *p) {
  thread_arg *a = p;
  hs_backend_session *s;
  hs_error err;
  if (a->be->session_create(a->m, &s, &err)) {
    a->bad = 1;
    return NULL;
  }
  for (int i = 0; i < 300 && !a->bad; i++) {
    hs_tensor out;
    if (a->be->run(s, a->in, 2, &out, 1, &err) || compare_tensors("thread", &out, &a->e)) a->bad = 1;
  }
  a->be->session_free(s);
  return NULL;
}

static void test_threads_share_one_model(void **state) {
  (void)state;
  const hs_backend *be = hs_backend_onnx_cpu();
  hs_backend_model *m = load(CASE("matmul_batch_bcast"));
  thread_arg args[4];
  pthread_t th[4];
  for (int t = 0; t < 4; t++) {
    args[t] = (thread_arg){.be = be, .m = m};
    assert_int_equal(load_npys(CASE("matmul_batch_bcast"), "input", args[t].in, 2), 2);
    assert_int_equal(load_npys(CASE("matmul_batch_bcast"), "expected", &args[t].e, 1), 1);
    assert_int_equal(pthread_create(&th[t], NULL, worker, &args[t]), 0);
  }
  for (int t = 0; t < 4; t++) {
    pthread_join(th[t], NULL);
    assert_int_equal(args[t].bad, 0);
    free_tensors(args[t].in, 2);
    free(args[t].e.data);
  }
  be->free_model(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_descriptors_and_memory),
      cmocka_unit_test(test_dynamic_batch),
      cmocka_unit_test(test_load_buffer_reads_only_the_given_bytes),
      cmocka_unit_test(test_load_buffer_bytes_done),
      cmocka_unit_test(test_load_stream),
      cmocka_unit_test(test_load_stream_external_streamed),
      cmocka_unit_test(test_input_errors_name_the_input),
      cmocka_unit_test(test_outputs_live_until_next_run),
      cmocka_unit_test(test_threads_share_one_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

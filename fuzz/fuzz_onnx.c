/* fuzz_onnx.c - libFuzzer target for the ONNX decoder, graph builder, compiler and planner: any byte
 * string must decode to a model or to an error, never crash, leak or allocate without bound. A model
 * that compiles is also run once on zero-filled inputs when its batch-1 plan is small (a model with
 * control flow, which has no plan, runs with hs_dynamic_limit_bytes and hs_loop_limit_iterations
 * lowered to match). The decoder reads a stream (decode.c, streaming): the same bytes are also fed in
 * pieces of 1 to 16 bytes (boundaries inside keys, varints and payloads), which must give the same
 * verdict as one piece. External data: the same bytes serve as the file "w.bin" too, once in memory
 * and once streamed through hs_onnx_source.open (decode.c, "External data"): when both decode, they
 * give the same graph size.
 *
 *     fuzz_onnx -max_total_time=30 NEW_CORPUS_DIR fuzz/corpus/onnx
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "onnx/onnx.h"
#include "onnx/pb.h"
#include "ops/ops.h"

#define RUN_LIMIT ((size_t)16 << 20) /* run only models whose inputs and scratch stay small */

static void try_run(const hs_engine_model *m) {
  if (m->planned_bytes > RUN_LIMIT) return;
  hs_tensor in[16];
  if (m->n_inputs > 16) return;
  size_t total = 0;
  for (int i = 0; i < m->n_inputs; i++) {
    memset(&in[i], 0, sizeof in[i]);
    in[i].dtype = m->inputs[i].dtype;
    in[i].ndim = m->inputs[i].ndim;
    for (int k = 0; k < in[i].ndim; k++) in[i].dims[k] = m->inputs[i].dims[k] < 0 ? 1 : m->inputs[i].dims[k];
    int64_t c = hs_shape_numel(in[i].dims, in[i].ndim);
    size_t esz = hs_dtype_size(in[i].dtype);
    if (c < 0 || esz == 0 || (uint64_t)c > RUN_LIMIT / esz) goto out;
    in[i].nbytes = (size_t)c * esz;
    total += in[i].nbytes;
    if (total > RUN_LIMIT) goto out;
    in[i].data = calloc(1, in[i].nbytes ? in[i].nbytes : 1);
    if (!in[i].data) goto out;
  }
  hs_engine_session *s;
  hs_error err;
  hs_tensor out_t[16];
  if (m->n_outputs <= 16 && hs_engine_session_create(m, &s, &err) == 0) {
    hs_engine_run(s, in, (size_t)m->n_inputs, out_t, (size_t)m->n_outputs, &err);
    hs_engine_session_free(s);
  }
out:
  for (int i = 0; i < m->n_inputs; i++) free(in[i].data);
}

typedef struct {
  const uint8_t *d;
  size_t size, chunk;
  hs_pb_mem mem;
  hs_backend_stream st;
} ext_file;

static int ext_open(void *user, const char *path, const hs_backend_stream **out, hs_error *err) {
  ext_file *f = user;
  if (strcmp(path, "w.bin") != 0) return hs_error_set(err, HS_NOT_FOUND, "%s", path);
  hs_pb_mem_stream(&f->mem, f->d, f->size, f->chunk, &f->st);
  *out = &f->st;
  return 0;
}

/* data as a model whose external data file "w.bin" is data itself: in memory, then streamed. */
static void try_external(const uint8_t *data, size_t size) {
  hs_backend_file mem_files[2] = {{"model.onnx", NULL, size}, {"w.bin", data, size}};
  hs_backend_file str_files[2] = {{"model.onnx", NULL, size}, {"w.bin", NULL, size}};
  ext_file f = {.d = data, .size = size, .chunk = 1 + (size ? data[0] % 64 : 0)};
  hs_onnx_source ms = {.files = mem_files, .n_files = 2};
  hs_onnx_source ss = {.files = str_files, .n_files = 2, .open = ext_open, .open_user = &f};
  hs_graph gm, gs;
  hs_error err;
  hs_graph_init(&gm);
  hs_graph_init(&gs);
  int rm = hs_onnx_decode_model_src(data, size, &ms, &gm, &err);
  int rs = hs_onnx_decode_model_src(data, size, &ss, &gs, &err);
  if (rm == 0 && rs == 0 && gm.n_values != gs.n_values) abort();
  hs_graph_free(&gm);
  hs_graph_free(&gs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* control flow (Loop, Scan) holds memory only its run decides: keep it as small as the plans run here */
  hs_dynamic_limit_bytes = 4 * RUN_LIMIT;
  hs_loop_limit_iterations = 4096;
  hs_graph g;
  hs_graph_init(&g);
  hs_error err;
  int rc = hs_onnx_decode_model(data, size, NULL, &g, &err);
  /* the same bytes in small pieces: the same verdict */
  hs_graph gs;
  hs_graph_init(&gs);
  hs_pb_mem mem;
  hs_backend_stream in;
  hs_pb_mem_stream(&mem, data, size, 1 + (size ? data[size - 1] % 16 : 0), &in);
  hs_onnx_source src = {0};
  hs_error serr;
  int src_rc = hs_onnx_decode_model_stream(&in, &src, &gs, &serr);
  if (src_rc != rc || (rc == 0 && gs.n_values != g.n_values)) abort();
  hs_graph_free(&gs);
  try_external(data, size);
  if (rc != 0) {
    hs_graph_free(&g);
    return 0;
  }
  hs_engine_model *m = NULL;
  if (hs_engine_compile(&g, NULL, &m, &err) == 0) {
    try_run(m);
    hs_engine_free(m);
  }
  /* the same bytes as a lone TensorProto */
  hs_tensor t;
  if (hs_onnx_decode_tensor(data, size, NULL, &t, NULL, &err) == 0) free(t.data);
  return 0;
}

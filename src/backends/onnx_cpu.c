/* onnx_cpu.c - the built-in ONNX engine on CPU behind the backend ABI (include/hotserve/backend.h).
 *
 * A loaded model is an immutable hs_engine_model shared by all threads; each session owns its own
 * scratch arena and plan cache, so concurrent runs on one model need no locks. */
#include <stdlib.h>

#include "hotserve/backend.h"
#include "backends/session.h"
#include "engine/engine.h"

struct hs_backend_model {
  hs_engine_model *m;
};

struct hs_backend_session {
  hs_engine_session *s;
};

static int cpu_load(const char *path, const hs_backend_options *opts, hs_backend_model **out, hs_error *err) {
  hs_backend_model *bm = calloc(1, sizeof *bm);
  if (!bm) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  int rc = hs_engine_load(path, opts, &bm->m, err);
  if (rc) {
    free(bm);
    return hs_error_prefix(err, "loading %s", path);
  }
  *out = bm;
  return 0;
}

static int cpu_load_buffer(const void *model, size_t len, const hs_backend_file *files, size_t n_files,
                           const hs_backend_options *opts, hs_backend_model **out, hs_error *err) {
  hs_backend_model *bm = calloc(1, sizeof *bm);
  if (!bm) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  int rc = hs_engine_load_buffer(model, len, files, n_files, opts, &bm->m, err);
  if (rc) {
    free(bm);
    return rc;
  }
  *out = bm;
  return 0;
}

static int cpu_load_stream(const hs_backend_stream *model, const hs_backend_file *files, size_t n_files,
                           const hs_backend_options *opts, hs_backend_model **out, hs_error *err) {
  hs_backend_model *bm = calloc(1, sizeof *bm);
  if (!bm) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  int rc = hs_engine_load_stream(model, files, n_files, opts, &bm->m, err);
  if (rc) {
    free(bm);
    return rc;
  }
  *out = bm;
  return 0;
}

static void cpu_free_model(hs_backend_model *bm) {
  if (!bm) return;
  hs_engine_free(bm->m);
  free(bm);
}

static size_t cpu_num_inputs(const hs_backend_model *bm) { return (size_t)bm->m->n_inputs; }
static size_t cpu_num_outputs(const hs_backend_model *bm) { return (size_t)bm->m->n_outputs; }

static const hs_io_desc *cpu_input(const hs_backend_model *bm, size_t i) {
  return i < (size_t)bm->m->n_inputs ? &bm->m->inputs[i] : NULL;
}

static const hs_io_desc *cpu_output(const hs_backend_model *bm, size_t i) {
  return i < (size_t)bm->m->n_outputs ? &bm->m->outputs[i] : NULL;
}

static size_t cpu_memory_bytes(const hs_backend_model *bm) {
  return bm->m->const_bytes + bm->m->planned_bytes;
}

static int cpu_session_create(const hs_backend_model *bm, hs_backend_session **out, hs_error *err) {
  hs_backend_session *bs = calloc(1, sizeof *bs);
  if (!bs) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  int rc = hs_engine_session_create(bm->m, &bs->s, err);
  if (rc) {
    free(bs);
    return rc;
  }
  *out = bs;
  return 0;
}

static void cpu_session_free(hs_backend_session *bs) {
  if (!bs) return;
  hs_engine_session_free(bs->s);
  free(bs);
}

static int cpu_run(hs_backend_session *bs, const hs_tensor *inputs, size_t n_inputs, hs_tensor *outputs,
                   size_t n_outputs, hs_error *err) {
  return hs_engine_run(bs->s, inputs, n_inputs, outputs, n_outputs, err);
}

static const hs_backend k_onnx_cpu = {
    .abi_version = HS_BACKEND_ABI_VERSION,
    .name = "onnx-cpu",
    .load = cpu_load,
    .free_model = cpu_free_model,
    .num_inputs = cpu_num_inputs,
    .input = cpu_input,
    .num_outputs = cpu_num_outputs,
    .output = cpu_output,
    .memory_bytes = cpu_memory_bytes,
    .session_create = cpu_session_create,
    .session_free = cpu_session_free,
    .run = cpu_run,
    .load_buffer = cpu_load_buffer,
    .load_stream = cpu_load_stream,
};

const hs_backend *hs_backend_onnx_cpu(void) { return &k_onnx_cpu; }

void hs_backend_session_idle(const hs_backend *b, hs_backend_session *bs) {
  if (b == &k_onnx_cpu && bs) hs_engine_session_idle(bs->s);
}

/* plugin_abi.c - a minimal plug-in backend for test_shared.c, built once per ABI version
 * (PLUGIN_ABI): an ABI 1 plug-in exports a table that ends before load_buffer, an ABI 2 one a table
 * that ends before load_stream, exactly as one compiled against the old header does, so reading past
 * it shows up under ASan. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "hotserve/backend.h"

/* A plug-in links nothing of hotserve: it fills hs_error itself. */
static int fail(hs_error *err, const char *msg) {
  if (err) {
    err->code = HS_UNSUPPORTED;
    snprintf(err->message, sizeof err->message, "%s", msg);
  }
  return HS_UNSUPPORTED;
}

static int p_load(const char *path, const hs_backend_options *opts, hs_backend_model **out, hs_error *err) {
  (void)opts;
  (void)out;
  (void)path;
  return fail(err, "plugin: cannot load a path");
}
static int p_load_buffer(const void *model, size_t len, const hs_backend_file *files, size_t n_files,
                         const hs_backend_options *opts, hs_backend_model **out, hs_error *err) {
  (void)model, (void)files, (void)n_files, (void)opts, (void)out;
  (void)len;
  return fail(err, "plugin: cannot load a buffer");
}
static int p_load_stream(const hs_backend_stream *model, const hs_backend_file *files, size_t n_files,
                         const hs_backend_options *opts, hs_backend_model **out, hs_error *err) {
  (void)model, (void)files, (void)n_files, (void)opts, (void)out;
  return fail(err, "plugin: cannot load a stream");
}
static void p_free_model(hs_backend_model *m) { (void)m; }
static size_t p_num(const hs_backend_model *m) { (void)m; return 0; }
static const hs_io_desc *p_io(const hs_backend_model *m, size_t i) { (void)m, (void)i; return NULL; }
static int p_session_create(const hs_backend_model *m, hs_backend_session **out, hs_error *err) {
  (void)m, (void)out;
  return fail(err, "plugin: no sessions");
}
static void p_session_free(hs_backend_session *s) { (void)s; }
static int p_run(hs_backend_session *s, const hs_tensor *in, size_t n_in, hs_tensor *out, size_t n_out,
                 hs_error *err) {
  (void)s, (void)in, (void)n_in, (void)out, (void)n_out;
  return fail(err, "plugin: no runs");
}

static const hs_backend k_full = {
    .abi_version = PLUGIN_ABI,
    .name = "plugin",
    .load = p_load,
    .free_model = p_free_model,
    .num_inputs = p_num,
    .input = p_io,
    .num_outputs = p_num,
    .output = p_io,
    .session_create = p_session_create,
    .session_free = p_session_free,
    .run = p_run,
    .load_buffer = p_load_buffer,
    .load_stream = p_load_stream,
};

#if PLUGIN_ABI == 1
/* exactly the size of an ABI 1 table */
static unsigned char k_old[offsetof(hs_backend, load_buffer)] __attribute__((aligned(_Alignof(hs_backend))));
#elif PLUGIN_ABI == 2
/* exactly the size of an ABI 2 table */
static unsigned char k_old[offsetof(hs_backend, load_stream)] __attribute__((aligned(_Alignof(hs_backend))));
#endif

const hs_backend *hs_backend_init(void) {
#if PLUGIN_ABI <= 2
  memcpy(k_old, &k_full, sizeof k_old);
  return (const hs_backend *)(const void *)k_old;
#else
  return &k_full;
#endif
}

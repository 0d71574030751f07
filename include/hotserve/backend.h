/* backend.h - the backend ABI: what the serving layer needs from an engine that runs models.
 *
 * A backend is a table of function pointers. The built-in ONNX engine implements it
 * (src/backends/), and a shared library can provide one by exporting
 *     const hs_backend *hs_backend_init(void);
 * whose result starts with abi_version == HS_BACKEND_ABI_VERSION. The loader also accepts a plug-in
 * built against ABI 1 (the same table without load_buffer and load_stream, which it then treats as
 * NULL) or ABI 2 (without load_stream) and refuses any other version.
 *
 * Threading: a loaded model is immutable and may be shared by any number of threads. All
 * per-run state lives in a session; one session is used by one thread at a time.
 */
#ifndef HOTSERVE_BACKEND_H
#define HOTSERVE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HS_BACKEND_ABI_VERSION 3
#define HS_BACKEND_ABI_MINOR 2 /* (2.1 added hs_backend_options.bytes_done, 3.1 open_file, 3.2 hs_backend_stream's
                                  read_into and settle, all at the end) */
#define HS_BACKEND_ABI_VERSION_MIN 1 /* oldest ABI whose plug-ins still load (no load_buffer) */

typedef struct hs_backend_model hs_backend_model;     /* opaque, owned by the backend */
typedef struct hs_backend_session hs_backend_session; /* opaque, owned by the backend */
struct hs_backend_stream;                             /* below */

typedef struct hs_backend_options {
  int threads;            /* compute threads a run may use; 0 = backend default */
  size_t max_model_bytes; /* refuse a model file larger than this; 0 = no limit */
  size_t max_run_bytes;   /* refuse (HS_LIMIT) a run whose shapes need more scratch memory than this,
                             before allocating it; 0 = backend default */
  /* ---- ABI 2.1 (a backend built against 2.0 never reads these; the caller allocates the struct) ---- */
  /* Optional (NULL: none). load_buffer may call bytes_done(bytes_done_user) once, as soon as it
   * reads the model and files bytes no more (the ONNX engine: after decoding, before compiling);
   * the caller may free them then, so a load does not hold the file bytes and the compiled weights
   * at the same time. After the call the backend must not touch those bytes. */
  void (*bytes_done)(void *user);
  void *bytes_done_user;
  /* ---- ABI 3.1 (a backend built against 3.0 never reads these) ---- */
  /* Optional (NULL: none), for load_stream only. When set, the files other than the model file come
   * with data NULL (len: their size) and their bytes only through open_file(open_file_user, path,
   * &stream, err): once per file (a second open is an error), read in order, each byte once; the
   * server hashes what it hands out and judges each file after the load, like the model file
   * (docs/REPOSITORY.md, "Read once"). The stream is valid until load_stream returns; the chunks of
   * these streams share the server's buffers, so one stays valid only until the next call of next on
   * any of them (the model stream's chunks are apart: reading these leaves them valid). A backend
   * that cannot take a version's external data this way (the ONNX engine: a subgraph's or a
   * Constant's external tensor) returns HS_NEEDS_WHOLE_FILES, and the server calls load_stream again
   * for that version without open_file, with the files whole. */
  int (*open_file)(void *user, const char *path, const struct hs_backend_stream **out, hs_error *err);
  void *open_file_user;
} hs_backend_options;

/* One file of a model version, already in memory (load_buffer). */
typedef struct hs_backend_file {
  const char *path; /* relative to the version's folder, '/'-separated, e.g. "weights.bin" */
  const void *data; /* its bytes, read-only, valid for the duration of the call */
  size_t len;
} hs_backend_file;

/* A model file's bytes handed over in order, in chunks (load_stream): the server reads the file once
 * in bounded pieces, hashing each piece beside the backend that parses it. */
typedef struct hs_backend_stream {
  uint64_t size; /* bytes the stream delivers in all: the file's size */
  /* The next chunk: *data and *len (> 0) stay valid until the next call. *len == 0 at the end (a
   * stream that ends before size bytes was cut short: the file shrank). A negative status (with
   * err filled) when the bytes cannot be read. */
  int (*next)(void *user, const void **data, size_t *len, hs_error *err);
  void *user;
  /* ---- ABI 3.2 (a backend built against 3.1 never reads these; the caller allocates the struct) ---- */
  /* Optional (NULL: none; both or neither). read_into reads the stream's next n bytes straight into
   * dst, a buffer the backend keeps (a tensor's payload), instead of handing out a chunk: one copy
   * less. Returns the bytes read (fewer than n: the stream ended) or a negative status with err
   * filled; the next call of next starts after them. The server then reads those bytes where they
   * are (it hashes them there, in the stream's order, behind the backend), so the backend must leave
   * each dst unchanged and allocated until settle(user) has returned, or until bytes_done; settle
   * waits until the server is done with every buffer read_into filled so far. */
  long long (*read_into)(void *user, void *dst, size_t n, hs_error *err);
  void (*settle)(void *user);
} hs_backend_stream;

typedef struct hs_backend {
  uint32_t abi_version; /* HS_BACKEND_ABI_VERSION */
  const char *name;     /* "onnx-cpu", ... */

  /* Loads and compiles the model file at path (external data is read relative to its folder and
   * never from outside it). On success *out is a new model the caller frees with free_model.
   * On error returns a negative status, fills err, and *out is untouched. */
  int (*load)(const char *path, const hs_backend_options *opts, hs_backend_model **out, hs_error *err);

  /* Frees a model; every session made from it must be freed first. NULL is a no-op. */
  void (*free_model)(hs_backend_model *model);

  /* The model's inputs and outputs; pointers live as long as the model. */
  size_t (*num_inputs)(const hs_backend_model *model);
  const hs_io_desc *(*input)(const hs_backend_model *model, size_t i);
  size_t (*num_outputs)(const hs_backend_model *model);
  const hs_io_desc *(*output)(const hs_backend_model *model, size_t i);

  /* Bytes the model holds (weights, packed kernels, plans); used for memory admission. */
  size_t (*memory_bytes)(const hs_backend_model *model);

  /* Creates per-thread run state (scratch arena, output buffers). Caller frees with session_free.
   * Do a session's one-time costs here for the model's load-time shapes (symbolic dims = 1), so
   * that its first run costs what every run costs: the server warms up with warmup.runs runs
   * (default 1) going round the sessions, not with one run per session. */
  int (*session_create)(const hs_backend_model *model, hs_backend_session **out, hs_error *err);
  void (*session_free)(hs_backend_session *session);

  /* Runs the model. inputs[i] matches input(i) (the caller passes them in model order; shapes are
   * checked here, a wrong dtype or shape is HS_INVALID_ARGUMENT naming the input). On success
   * outputs[0..num_outputs) are filled; their data points into the session and stays valid until
   * the next run or session_free on that session. */
  int (*run)(hs_backend_session *session, const hs_tensor *inputs, size_t n_inputs,
             hs_tensor *outputs, size_t n_outputs, hs_error *err);

  /* ---- ABI 2 ---- */

  /* Optional (NULL: the server loads by path with load). Loads and compiles a model from bytes the
   * server read and verified: model is the model file's bytes, files[0..n_files) every file of the
   * version (the model file included), and the backend must read nothing else from disk (external
   * data comes from files; a name not among them is an error). Nothing is kept past the call:
   * copy what the model needs. Same result and errors as load. This is what makes the manifest's
   * SHA-256 check cover the bytes that are loaded: with NULL, the server verifies the files and
   * then calls load on the path, which reads them again, so a file replaced in between is loaded
   * unverified (docs/REPOSITORY.md, "Read once"). */
  int (*load_buffer)(const void *model, size_t len, const hs_backend_file *files, size_t n_files,
                     const hs_backend_options *opts, hs_backend_model **out, hs_error *err);

  /* ---- ABI 3 ---- */

  /* Optional (NULL: the server uses load_buffer). load_buffer with the model file's bytes as a
   * stream: the backend reads model's chunks in order, each once, and must read all model->size
   * bytes for a load to succeed (the server hashes what it hands out, and gives its verdict once the
   * stream is over). files are as for load_buffer; the model file is among them with data NULL (its
   * bytes come only through the stream). The server never holds the whole file at once: a backend
   * copies from each chunk what it keeps (the ONNX engine: tensor bytes straight into the tensors). */
  int (*load_stream)(const hs_backend_stream *model, const hs_backend_file *files, size_t n_files,
                     const hs_backend_options *opts, hs_backend_model **out, hs_error *err);
} hs_backend;

/* The built-in ONNX engine on CPU. */
const hs_backend *hs_backend_onnx_cpu(void);

/* Loads a backend from a shared library (see above). On success *out stays valid for the life of
 * the process: a copy of the plug-in's table in this ABI's layout (an ABI 1 table gets
 * load_buffer = NULL, ABI 1 and 2 tables load_stream = NULL). Loading the same library again gives the same table. */
int hs_backend_load_shared(const char *path, const hs_backend **out, hs_error *err);

#ifdef __cplusplus
}
#endif
#endif

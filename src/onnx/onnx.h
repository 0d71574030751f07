/* onnx.h - the ONNX front end: model files and TensorProto blobs into the engine's IR. */
#ifndef HS_ONNX_ONNX_H
#define HS_ONNX_ONNX_H

#include <stddef.h>

#include "hotserve/backend.h"
#include "ir/ir.h"

/* Decodes a serialized ModelProto into g (which must be freshly hs_graph_init'ed). External data
 * is read from files under base_dir (NULL refuses external data); a location that is absolute,
 * contains "..", or resolves outside base_dir is an error. Constant nodes become constant values.
 * On error g holds whatever was decoded so far: the caller still calls hs_graph_free. Returns 0,
 * HS_PARSE (malformed bytes), HS_UNSUPPORTED (valid but beyond the engine), HS_IO or HS_NO_MEMORY. */
int hs_onnx_decode_model(const void *buf, size_t len, const char *base_dir, hs_graph *g, hs_error *err);

/* Where a model's external data comes from: with files != NULL, only from those n_files buffers
 * (hs_backend_file: a path relative to the model's folder and its bytes, e.g. the bytes the
 * repository verified), never from disk; a location not among them is HS_NOT_FOUND. Otherwise
 * from files under base_dir as above (NULL: external data refused). */
typedef struct hs_onnx_share hs_onnx_share;
typedef struct hs_onnx_source {
  const char *base_dir;
  const hs_backend_file *files;
  size_t n_files;
  const hs_onnx_share *share; /* optional: see hs_onnx_share */
  /* optional (hs_backend_options.open_file): a file of files with data NULL is read through the
   * stream open gives, once, in order. The stream decoder then collects the main graph's external
   * initializers while it reads the model and fills them file by file, in offset order, from one
   * pass over each file (decode.c, "External data"); an external tensor elsewhere (a subgraph's,
   * a Constant's) in such a file is HS_NEEDS_WHOLE_FILES (include/hotserve/status.h: the loader then
   * loads the version again with its files whole). */
  int (*open)(void *user, const char *path, const struct hs_backend_stream **out, hs_error *err);
  void *open_user;
} hs_onnx_source;

/* Optional hook that lets a load reuse weights another loaded model already holds instead of
 * copying them. The decoder offers find() every float32 initializer of rank >= 3 and at least
 * HS_ONNX_SHARE_MIN_BYTES whose bytes are in memory (raw_data, or external data from src->files),
 * before keeping it: bytes are the tensor's bytes as read (a buffer of the decoder's, or a file's
 * bytes in src->files), valid only during the call. find
 * returns 1 when it took *ref, a reference to an identical copy (exact: it compares the bytes);
 * the value then gets no data (data NULL, hs_value.ref = *ref, hs_value.ref_free = release) and
 * its reader must take the contents from the reference (engine.c). 0: the decoder keeps the bytes
 * as usual. */
#define HS_ONNX_SHARE_MIN_BYTES 4096
struct hs_onnx_share {
  int (*find)(void *user, const void *bytes, size_t nbytes, void **ref);
  void (*release)(void *ref);
  void *user;
  /* Optional (all four, or none): find for a raw_data payload the stream decoder compares piece by
   * piece as it arrives, never holding it whole (decode.c, "Share candidates compared as they
   * arrive"). begin: a match for a tensor of nbytes, NULL when no held copy has that size. feed: the
   * next piece, in order; 1 while some held copy equals every byte fed. prefix: the first n bytes
   * fed, read back from the held copy that matched them (after feed returned 0: n up to the offset
   * of the piece it returned 0 for); 0 or negative. end: with ref, when all nbytes were fed and a
   * copy is equal, takes *ref as find does and returns 1; frees the match in any case. */
  void *(*begin)(void *user, size_t nbytes);
  int (*feed)(void *match, const void *piece, size_t n);
  int (*prefix)(void *match, void *dst, size_t n);
  int (*end)(void *match, void **ref);
};

/* hs_onnx_decode_model with external data from src. buf is only read during the call. */
int hs_onnx_decode_model_src(const void *buf, size_t len, const hs_onnx_source *src, hs_graph *g, hs_error *err);

/* hs_onnx_decode_model_src from a stream of chunks (hotserve/backend.h, hs_backend_stream): every
 * byte is read once, in order, and parsed from the chunk it arrives in; tensor payloads (raw_data)
 * go straight into the tensors' own buffers, so the whole file is never held (decode.c, streaming).
 * Succeeds only after reading exactly in->size bytes; a stream that ends early is HS_PARSE, a
 * stream's own error is returned as it is. The buffer entry points run this over a memory stream. */
int hs_onnx_decode_model_stream(const hs_backend_stream *in, const hs_onnx_source *src, hs_graph *g,
                                hs_error *err);

/* Streams the model file at path (refusing files over max_bytes when max_bytes > 0, else over
 * HS_FILE_MAX_DEFAULT) in bounded chunks through hs_onnx_decode_model_stream, large tensor payloads
 * read straight into their tensors, with its folder as base_dir. Same ownership and errors as
 * hs_onnx_decode_model. */
int hs_onnx_load_file(const char *path, size_t max_bytes, hs_graph *g, hs_error *err);

/* Decodes a serialized TensorProto. On success out->data is malloc'ed (the caller frees it; NULL
 * for an empty tensor) and, when name is non-NULL, *name is a malloc'ed copy of its name. */
int hs_onnx_decode_tensor(const void *buf, size_t len, const char *base_dir, hs_tensor *out, char **name,
                          hs_error *err);

/* Reads a whole regular file into a malloc'ed buffer: base/file.h's hs_file_read (max_bytes 0 means
 * its default limit; FIFOs and devices are refused without blocking). */
int hs_read_file(const char *path, size_t max_bytes, void **data, size_t *len, hs_error *err);

#endif

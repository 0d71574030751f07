/* codec.h - KServe v2 inference request decoding (JSON and the binary tensor extension) and response encoding.
 *
 * Handlers never see raw bytes: they get an hs_infer_request whose tensors are either views into
 * the request body (binary data that is suitably aligned) or buffers the request owns.
 */
#ifndef HS_HTTP_CODEC_H
#define HS_HTTP_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"
#include "http/sbuf.h"

typedef struct hs_codec_limits {
  size_t max_inputs;         /* inputs (and requested outputs) per request */
  int64_t max_elements;      /* elements per tensor */
  size_t max_tensor_bytes;   /* bytes per tensor */
} hs_codec_limits;

/* Defaults: 64 inputs, 2^28 elements, 1 GiB per tensor (the body limit usually bites first). */
void hs_codec_limits_default(hs_codec_limits *lim);

typedef struct hs_infer_input {
  char name[128];
  hs_tensor t;  /* t.data is a view into the body, or owned (see owned) */
  bool owned;
} hs_infer_input;

typedef struct hs_infer_output_req {
  char name[128];
  bool binary;
} hs_infer_output_req;

typedef struct hs_infer_request {
  char id[256];
  bool has_id;
  size_t n_inputs;
  hs_infer_input *inputs;
  size_t n_outputs;              /* 0: every output */
  hs_infer_output_req *outputs;
  bool binary_default;           /* parameters.binary_data_output */
} hs_infer_request;

/* Decodes an infer request. header_len < 0: the whole body is JSON; otherwise the first
 * header_len bytes are JSON and the rest is raw tensor data for inputs that carry
 * parameters.binary_data_size, in input order. body must outlive *out (views point into it).
 * Errors (HS_PARSE, HS_INVALID_ARGUMENT, HS_LIMIT) name the offending input; *out is then empty.
 * Free with hs_infer_request_free. */
int hs_infer_request_decode(const char *body, size_t len, long long header_len, const hs_codec_limits *lim,
                            hs_infer_request *out, hs_error *err);
void hs_infer_request_free(hs_infer_request *req);

/* One output to encode. */
typedef struct hs_infer_output {
  const char *name;
  const hs_tensor *t;
  bool binary;
} hs_infer_output;

/* Encodes a response: JSON, then (when any output is binary) the raw bytes of binary outputs in
 * order. *json_len is the JSON part's length (the Inference-Header-Content-Length value when
 * *has_binary). Returns HS_NO_MEMORY when the buffer could not grow. */
int hs_infer_response_encode(const char *model, int64_t version, const hs_infer_request *req,
                             const hs_infer_output *outs, size_t n_outs, hs_sbuf *body, size_t *json_len,
                             bool *has_binary);

/* Internal, exposed for tests: writes finite float32 f as a JSON number with 9 significant digits
 * (reads back as exactly f); returns the length, at most 16 (no terminator is written). */
int hs__format_f32(char *out, float f);

#endif

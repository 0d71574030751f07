/* fuzz_infer.c - libFuzzer target for the infer request decoder (JSON and the binary tensor extension).
 *
 * Input layout: byte 0 picks the mode (even: the whole rest is JSON; odd: bytes 1-2 are a
 * little-endian Inference-Header-Content-Length and the rest is header + binary data). Every
 * decoded request is re-encoded as a response to exercise the encoder on what the decoder built.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  long long header_len = -1;
  size_t off = 1;
  if (data[0] & 1) {
    if (size < 3) return 0;
    header_len = (long long)(data[1] | (data[2] << 8));
    off = 3;
  }
  /* a private copy, so the decoder's views point into memory that ends exactly at the body */
  size_t len = size - off;
  char *body = malloc(len ? len : 1);
  if (!body) return 0;
  memcpy(body, data + off, len);
  hs_codec_limits lim;
  hs_codec_limits_default(&lim);
  lim.max_elements = 1 << 20;
  lim.max_tensor_bytes = 1 << 24;
  hs_infer_request req;
  hs_error err;
  if (hs_infer_request_decode(body, len, header_len, &lim, &req, &err) == HS_OK) {
    hs_infer_output outs[4];
    size_t n = req.n_inputs < 4 ? req.n_inputs : 4;
    for (size_t i = 0; i < n; i++)
      outs[i] = (hs_infer_output){.name = req.inputs[i].name, .t = &req.inputs[i].t, .binary = (i & 1) != 0};
    hs_sbuf b = {0};
    size_t json_len;
    bool has_binary;
    hs_infer_response_encode("m", 1, &req, outs, n, &b, &json_len, &has_binary);
    hs_sbuf_free(&b);
    hs_infer_request_free(&req);
  }
  free(body);
  return 0;
}

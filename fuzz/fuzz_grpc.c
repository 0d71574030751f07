/* fuzz_grpc.c - libFuzzer target for the gRPC ModelInfer request path: protobuf-c unpacking of a
 * ModelInferRequest, hotserve's parameter checks and tensor decoding (typed contents and raw_input_contents),
 * and the reply encoder (raw and typed) on the decoded tensors. Seeds in fuzz/corpus/grpc. */
#include <stddef.h>
#include <stdint.h>

#include "grpc/service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_codec_limits lim;
  hs_codec_limits_default(&lim);
  lim.max_elements = 1 << 20;
  lim.max_tensor_bytes = 8u << 20;
  (void)hs__grpc_decode_infer(&lim, data, size);
  return 0;
}

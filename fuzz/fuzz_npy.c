/* fuzz_npy.c - libFuzzer target for the .npy reader: any bytes give either a tensor whose shape,
 * dtype and byte count agree, or an error with a message; never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>

#include "base/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_tensor t;
  hs_error err;
  hs_error_clear(&err);
  if (hs_npy_parse(data, size, &t, &err) != HS_OK) {
    if (err.message[0] == '\0') abort();
    return 0;
  }
  int64_t n = hs_shape_numel(t.dims, t.ndim);
  size_t es = hs_dtype_size(t.dtype);
  if (n < 0 || es == 0 || (size_t)n * es != t.nbytes) abort();
  /* The whole payload must be readable: ASan flags a buffer shorter than nbytes. */
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < t.nbytes; i++) sink ^= ((const uint8_t *)t.data)[i];
  (void)sink;
  free(t.data);
  return 0;
}

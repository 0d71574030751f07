/* fuzz_config.c - libFuzzer target for the per-model config.json reader: any bytes give either a
 * config within its documented ranges or an error with a message; never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

/* True when some '/'-separated component of p is exactly "..". */
static int has_dotdot(const char *p) {
  for (const char *c = p; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL)
    if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == '\0')) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_model_config c;
  hs_error err;
  hs_error_clear(&err);
  int rc = hs_repo_parse_config((const char *)data, size, &c, &err);
  if (rc != HS_OK) {
    if (err.message[0] == '\0' || strcmp(c.backend, "onnx") != 0) abort();
    return 0;
  }
  if (c.latest_n < 1 || c.n_specific > 32 || c.n_inputs > 16 || c.n_outputs > 16) abort();
  for (size_t i = 0; i < c.n_inputs; i++)
    if (c.inputs[i].ndim < 0 || c.inputs[i].ndim > HS_MAX_DIMS || c.inputs[i].name[0] == '\0') abort();
  if (c.backend[0] == '/' || has_dotdot(c.backend)) abort();
  return 0;
}

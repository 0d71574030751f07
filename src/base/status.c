/* status.c - status names and the hs_error helpers. */
#include "hotserve/status.h"

#include <stdio.h>
#include <string.h>

const char *hs_status_str(int status) {
  switch (status) {
#define HS_STATUS_CASE(name, value, text) \
  case value:                             \
    return text;
    HS_STATUS_MAP(HS_STATUS_CASE)
#undef HS_STATUS_CASE
  }
  return "unknown status";
}

int hs_error_set(hs_error *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

int hs_error_prefix(hs_error *err, const char *fmt, ...) {
  if (!err) return HS_INTERNAL;
  char prefix[sizeof err->message];
  char old[sizeof err->message];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->message, sizeof old);
  snprintf(err->message, sizeof err->message, "%s: %s", prefix, old);
  return err->code;
}

void hs_error_clear(hs_error *err) {
  if (!err) return;
  err->code = HS_OK;
  err->message[0] = '\0';
}

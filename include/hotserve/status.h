/* status.h - status codes and the caller-owned error record shared by every hotserve API. */
#ifndef HOTSERVE_STATUS_H
#define HOTSERVE_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One list generates the enum and its names. 0 is success, every error is negative.
 * HS_NEEDS_WHOLE_FILES: a backend's load_stream given hs_backend_options.open_file cannot take its
 * external data as streams (backend.h, ABI 3.1); the server loads the version again with whole files. */
#define HS_STATUS_MAP(X)                                                     \
  X(OK, 0, "ok")                                                             \
  X(INVALID_ARGUMENT, -1, "invalid argument")                                \
  X(NOT_FOUND, -2, "not found")                                              \
  X(IO, -3, "i/o error")                                                     \
  X(PARSE, -4, "malformed input")                                            \
  X(UNSUPPORTED, -5, "unsupported")                                          \
  X(NO_MEMORY, -6, "out of memory")                                          \
  X(LIMIT, -7, "limit exceeded")                                             \
  X(VERIFY, -8, "verification failed")                                       \
  X(UNAVAILABLE, -9, "unavailable")                                          \
  X(INTERNAL, -10, "internal error")                                         \
  X(CHECK_FAILED, -11, "check failed")                                       \
  X(OVERLOADED, -12, "overloaded")                                           \
  X(NEEDS_WHOLE_FILES, -13, "needs whole files")

typedef enum {
#define HS_STATUS_ENUM(name, value, text) HS_##name = value,
  HS_STATUS_MAP(HS_STATUS_ENUM)
#undef HS_STATUS_ENUM
} hs_status;

/* The short name of a status ("not found"); never NULL. */
const char *hs_status_str(int status);

/* An error record that the caller owns and passes down; callees fill it on failure. */
typedef struct hs_error {
  int code;           /* an hs_status, HS_OK when nothing failed */
  char message[512];  /* human-readable cause, NUL-terminated */
} hs_error;

/* Sets err (when non-NULL) to code and a printf-style message; returns code so callers can
 * `return hs_error_set(err, HS_PARSE, "...")`. */
int hs_error_set(hs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err's message with a printf-style context ("loading x: <old message>"); returns err->code. */
int hs_error_prefix(hs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears err to HS_OK with an empty message. */
void hs_error_clear(hs_error *err);

#ifdef __cplusplus
}
#endif
#endif

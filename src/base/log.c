/* log.c - leveled logging to stderr; each line is formatted first and written with one call. */
#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = HS_LOG_INFO;

void hs_log_set_level(hs_log_level level) { atomic_store(&g_level, (int)level); }

static const char *level_name(hs_log_level level) {
  switch (level) {
    case HS_LOG_DEBUG: return "debug";
    case HS_LOG_INFO: return "info";
    case HS_LOG_WARN: return "warn";
    case HS_LOG_ERROR: return "error";
    case HS_LOG_ALERT: return "ALERT";
  }
  return "?";
}

void hs_log(hs_log_level level, const char *fmt, ...) {
  if ((int)level < atomic_load(&g_level)) return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                   level_name(level));
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

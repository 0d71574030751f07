/* trace.c - the request and reload-stage event log (see trace.h). */
#include "serving/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hs_trace {
  pthread_mutex_t mu;
  FILE *f;
};

int hs_trace_open(const char *path, hs_trace **out, hs_error *err) {
  hs_trace *t = calloc(1, sizeof *t);
  if (!t) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  t->f = fopen(path, "we"); /* e: close-on-exec */
  if (!t->f) {
    int e = errno;
    free(t);
    return hs_error_set(err, HS_IO, "trace file %s: %s", path, strerror(e));
  }
  setvbuf(t->f, NULL, _IOFBF, 1 << 16);
  pthread_mutex_init(&t->mu, NULL);
  *out = t;
  return HS_OK;
}

void hs_trace_flush(hs_trace *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  fflush(t->f);
  pthread_mutex_unlock(&t->mu);
}

void hs_trace_close(hs_trace *t) {
  if (!t) return;
  fclose(t->f);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

void hs_trace_request(hs_trace *t, const char *model, int64_t version, const char *outcome, uint64_t end_ns,
                      uint64_t total_ns, uint64_t queue_ns, uint64_t compute_ns, uint32_t batch) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  fprintf(t->f,
          "{\"ev\":\"request\",\"model\":\"%s\",\"version\":%" PRId64 ",\"outcome\":\"%s\",\"end_ns\":%" PRIu64
          ",\"total_ns\":%" PRIu64 ",\"queue_ns\":%" PRIu64 ",\"compute_ns\":%" PRIu64 ",\"batch\":%u}\n",
          model, version, outcome, end_ns, total_ns, queue_ns, compute_ns, (unsigned)batch);
  pthread_mutex_unlock(&t->mu);
}

void hs_trace_stage(hs_trace *t, const char *stage, const char *model, int64_t version, uint64_t begin_ns,
                    uint64_t end_ns) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  fprintf(t->f,
          "{\"ev\":\"stage\",\"stage\":\"%s\",\"model\":\"%s\",\"version\":%" PRId64 ",\"begin_ns\":%" PRIu64
          ",\"end_ns\":%" PRIu64 "}\n",
          stage, model, version, begin_ns, end_ns);
  fflush(t->f); /* stages are rare: a reader sees them as they happen */
  pthread_mutex_unlock(&t->mu);
}

/* sbuf.h - a growable byte buffer for building HTTP response bodies (JSON text, metrics, binary tensors). */
#ifndef HS_HTTP_SBUF_H
#define HS_HTTP_SBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Zero-initialise to start empty. Once an allocation fails, `failed` stays set and later appends
 * are dropped, so callers check once at the end. The caller owns data (free() it, or take it). */
typedef struct hs_sbuf {
  char *data;
  size_t len, cap;
  bool failed;
} hs_sbuf;

void hs_sbuf_append(hs_sbuf *b, const void *p, size_t n);
void hs_sbuf_puts(hs_sbuf *b, const char *s);
void hs_sbuf_printf(hs_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. */
void hs_sbuf_json_str(hs_sbuf *b, const char *s);
void hs_sbuf_free(hs_sbuf *b);

#endif

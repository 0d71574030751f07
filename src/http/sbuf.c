/* sbuf.c - growable byte buffer with printf and JSON-string appends. */
#include "http/sbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(hs_sbuf *b, size_t extra) {
  if (b->failed) return false;
  if (extra > SIZE_MAX / 2 - b->len) {
    b->failed = true;
    return false;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    b->failed = true;
    return false;
  }
  b->data = p;
  b->cap = cap;
  return true;
}

void hs_sbuf_append(hs_sbuf *b, const void *p, size_t n) {
  if (!reserve(b, n)) return;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void hs_sbuf_puts(hs_sbuf *b, const char *s) { hs_sbuf_append(b, s, strlen(s)); }

void hs_sbuf_printf(hs_sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[128];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    hs_sbuf_append(b, small, (size_t)n);
    return;
  }
  if (!reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void hs_sbuf_json_str(hs_sbuf *b, const char *s) {
  hs_sbuf_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      hs_sbuf_append(b, esc, 2);
    } else if (*p < 0x20) {
      hs_sbuf_printf(b, "\\u%04x", *p);
    } else {
      hs_sbuf_append(b, p, 1);
    }
  }
  hs_sbuf_append(b, "\"", 1);
}

void hs_sbuf_free(hs_sbuf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

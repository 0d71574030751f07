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

/* Length of the well-formed UTF-8 sequence at p (1 to 4), or 0 when p starts an ill-formed one
 * (stray continuation byte, overlong form, surrogate, above U+10FFFF, cut short). */
static size_t utf8_len(const unsigned char *p) {
  unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;    /* no overlong forms */
    if (c == 0xED) hi = 0x9F;    /* no UTF-16 surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;    /* nothing above U+10FFFF */
  } else {
    return 0;
  }
  if (p[1] < lo || p[1] > hi) return 0; /* also stops at the terminating NUL */
  for (size_t i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return n;
}

void hs_sbuf_json_str(hs_sbuf *b, const char *s) {
  hs_sbuf_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      hs_sbuf_append(b, esc, 2);
      p++;
    } else if (*p < 0x20 || *p == 0x7f) {
      hs_sbuf_printf(b, "\\u%04x", *p);
      p++;
    } else {
      /* Text echoed from a request (a name, a fragment of the body) may be any bytes: the JSON
       * answer stays valid UTF-8 by writing U+FFFD for each byte that starts no valid sequence. */
      size_t n = utf8_len(p);
      if (n == 0) {
        hs_sbuf_puts(b, "\\ufffd");
        p++;
      } else {
        hs_sbuf_append(b, p, n);
        p += n;
      }
    }
  }
  hs_sbuf_append(b, "\"", 1);
}

void hs_sbuf_free(hs_sbuf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* encoding.c - gzip and deflate request bodies decoded under a size bound, and reply bodies encoded (zlib). */
#include "http/encoding.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

int hs_http_decode_body(const char *coding, const char *in, size_t n, size_t max_out, char **out, size_t *out_len,
                        hs_error *err) {
  *out = NULL;
  *out_len = 0;
  int window;
  if (strcasecmp(coding, "gzip") == 0 || strcasecmp(coding, "x-gzip") == 0) {
    window = 16 + MAX_WBITS;
  } else if (strcasecmp(coding, "deflate") == 0) {
    /* RFC 9110's deflate is the zlib format; some clients send a raw deflate stream instead */
    bool zlib_header = n >= 2 && ((unsigned char)in[0] & 0x0f) == 8 &&
                       (((unsigned)(unsigned char)in[0] << 8) | (unsigned char)in[1]) % 31 == 0;
    window = zlib_header ? MAX_WBITS : -MAX_WBITS;
  } else {
    return hs_error_set(err, HS_UNSUPPORTED, "Content-Encoding \"%.40s\" is not supported (gzip, deflate, identity)",
                        coding);
  }
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, window) != Z_OK) return hs_error_set(err, HS_NO_MEMORY, "out of memory for zlib");
  size_t cap = n * 4 + 1024;
  if (cap > max_out + 1) cap = max_out + 1;
  char *buf = malloc(cap + 1);
  int rc = buf ? HS_OK : hs_error_set(err, HS_NO_MEMORY, "out of memory decoding the request body");
  z.next_in = (Bytef *)in;
  size_t left_in = n, len = 0;
  int zr = Z_OK;
  while (rc == HS_OK && zr != Z_STREAM_END) {
    if (len == cap) {
      if (cap > max_out) { /* one byte more than allowed was produced */
        rc = hs_error_set(err, HS_LIMIT, "the decoded request body exceeds the limit of %zu bytes", max_out);
        break;
      }
      size_t ncap = cap * 2 > max_out + 1 ? max_out + 1 : cap * 2;
      char *p = realloc(buf, ncap + 1);
      if (!p) {
        rc = hs_error_set(err, HS_NO_MEMORY, "out of memory decoding the request body");
        break;
      }
      buf = p;
      cap = ncap;
    }
    uInt in_chunk = left_in > (1u << 30) ? (1u << 30) : (uInt)left_in;
    uInt out_chunk = cap - len > (1u << 30) ? (1u << 30) : (uInt)(cap - len);
    z.avail_in = in_chunk;
    z.next_out = (Bytef *)buf + len;
    z.avail_out = out_chunk;
    zr = inflate(&z, Z_NO_FLUSH);
    left_in -= in_chunk - z.avail_in;
    len += out_chunk - z.avail_out;
    if (zr == Z_BUF_ERROR && z.avail_out != 0) zr = Z_DATA_ERROR; /* no progress with room left: input ended */
    if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
      rc = hs_error_set(err, HS_PARSE, "the %s request body is corrupt or truncated%s%s", coding, z.msg ? ": " : "",
                        z.msg ? z.msg : "");
  }
  inflateEnd(&z);
  if (rc == HS_OK && len > max_out)
    rc = hs_error_set(err, HS_LIMIT, "the decoded request body exceeds the limit of %zu bytes", max_out);
  if (rc != HS_OK) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return HS_OK;
}

/* Whether token (len bytes, case-insensitive) appears in the list with a non-zero q. */
static bool accepts(const char *list, const char *token) {
  size_t tl = strlen(token);
  for (const char *p = list; *p;) {
    p += strspn(p, " \t,");
    const char *end = p + strcspn(p, ",");
    size_t name = strcspn(p, " \t;,");
    if (name == tl && strncasecmp(p, token, tl) == 0) {
      const char *q = p + name;
      while (q < end && *q != ';') q++;
      double qv = 1.0;
      for (; q < end; q++)
        if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=') qv = strtod(q + 2, NULL);
      return qv > 0.0;
    }
    p = end;
  }
  return false;
}

const char *hs_http_pick_coding(const char *accept_encoding) {
  if (!accept_encoding) return NULL;
  if (accepts(accept_encoding, "gzip")) return "gzip";
  if (accepts(accept_encoding, "deflate")) return "deflate";
  if (accepts(accept_encoding, "*") && !strcasestr(accept_encoding, "gzip")) return "gzip";
  return NULL;
}

int hs_http_encode_body(const char *coding, hs_sbuf *body) {
  z_stream z;
  memset(&z, 0, sizeof z);
  int window = strcmp(coding, "gzip") == 0 ? 16 + MAX_WBITS : MAX_WBITS;
  if (body->len > (1u << 30)) return HS_UNSUPPORTED; /* a single deflate call's limit; send it as it is */
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY) != Z_OK) return HS_NO_MEMORY;
  size_t cap = deflateBound(&z, (uLong)body->len) + 32;
  char *out = malloc(cap);
  if (!out) {
    deflateEnd(&z);
    return HS_NO_MEMORY;
  }
  z.next_in = (Bytef *)(body->data ? body->data : "");
  z.avail_in = (uInt)body->len;
  z.next_out = (Bytef *)out;
  z.avail_out = (uInt)cap;
  int zr = deflate(&z, Z_FINISH);
  size_t len = cap - z.avail_out;
  deflateEnd(&z);
  if (zr != Z_STREAM_END) {
    free(out);
    return HS_INTERNAL;
  }
  free(body->data);
  body->data = out;
  body->len = len;
  body->cap = cap;
  return HS_OK;
}

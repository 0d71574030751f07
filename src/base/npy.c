/* npy.c - bounded .npy reader and writer (see npy.h). */
#include "base/npy.h"

#include "base/file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAX_HEADER 65536

/* Finds 'key': in the header dict and returns a pointer just past the colon and spaces. */
static const char *dict_value(const char *h, const char *key) {
  char pat[32];
  snprintf(pat, sizeof pat, "'%s'", key);
  const char *p = strstr(h, pat);
  if (!p) {
    snprintf(pat, sizeof pat, "\"%s\"", key);
    p = strstr(h, pat);
  }
  if (!p) return NULL;
  p += strlen(pat);
  while (*p == ' ') p++;
  if (*p != ':') return NULL;
  p++;
  while (*p == ' ') p++;
  return p;
}

int hs_npy_parse(const void *buf, size_t len, hs_tensor *out, hs_error *err) {
  const unsigned char *b = buf;
  if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0) return hs_error_set(err, HS_PARSE, "not a .npy file");
  int major = b[6];
  size_t hlen, pre;
  if (major == 1) {
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
    pre = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return hs_error_set(err, HS_PARSE, ".npy header truncated");
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    pre = 12;
  } else {
    return hs_error_set(err, HS_UNSUPPORTED, ".npy format version %d", major);
  }
  if (hlen > NPY_MAX_HEADER || hlen > len - pre) return hs_error_set(err, HS_PARSE, ".npy header truncated or too long");
  char h[NPY_MAX_HEADER + 1];
  memcpy(h, b + pre, hlen);
  h[hlen] = 0;
  if (memchr(h, 0, hlen)) return hs_error_set(err, HS_PARSE, ".npy header has a NUL byte");

  const char *d = dict_value(h, "descr");
  if (!d || (*d != '\'' && *d != '"')) return hs_error_set(err, HS_PARSE, ".npy header has no descr");
  char q = *d++;
  const char *e = strchr(d, q);
  if (!e || e - d >= 8) return hs_error_set(err, HS_UNSUPPORTED, ".npy descr not supported");
  char descr[8];
  memcpy(descr, d, (size_t)(e - d));
  descr[e - d] = 0;
  hs_dtype dt = hs_dtype_from_npy(descr);
  if (dt == HS_DT_UNDEFINED) return hs_error_set(err, HS_UNSUPPORTED, ".npy dtype '%s' not supported", descr);

  const char *f = dict_value(h, "fortran_order");
  if (!f) return hs_error_set(err, HS_PARSE, ".npy header has no fortran_order");
  if (strncmp(f, "False", 5) != 0) return hs_error_set(err, HS_UNSUPPORTED, "Fortran-order .npy not supported");

  const char *s = dict_value(h, "shape");
  if (!s || *s != '(') return hs_error_set(err, HS_PARSE, ".npy header has no shape");
  s++;
  memset(out, 0, sizeof *out);
  out->dtype = dt;
  for (;;) {
    while (*s == ' ' || *s == ',') s++;
    if (*s == ')') break;
    if (*s < '0' || *s > '9') return hs_error_set(err, HS_PARSE, ".npy shape malformed");
    if (out->ndim >= HS_MAX_DIMS) return hs_error_set(err, HS_UNSUPPORTED, ".npy has more than %d dimensions", HS_MAX_DIMS);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0) return hs_error_set(err, HS_PARSE, ".npy dimension out of range");
    out->dims[out->ndim++] = v;
    s = end;
    while (*s == 'L') s++; /* python 2 longs */
  }
  int64_t c = hs_shape_numel(out->dims, out->ndim);
  size_t esz = hs_dtype_size(dt);
  if (c < 0 || (uint64_t)c > SIZE_MAX / esz) return hs_error_set(err, HS_PARSE, ".npy shape overflows");
  size_t nbytes = (size_t)c * esz;
  if (len - pre - hlen != nbytes)
    return hs_error_set(err, HS_PARSE, ".npy holds %zu data bytes, its shape needs %zu", len - pre - hlen, nbytes);
  out->nbytes = nbytes;
  out->data = NULL;
  if (nbytes) {
    out->data = malloc(nbytes);
    if (!out->data) return hs_error_set(err, HS_NO_MEMORY, "out of memory for %zu bytes", nbytes);
    memcpy(out->data, b + pre + hlen, nbytes);
  }
  return 0;
}

int hs_npy_read(const char *path, hs_tensor *out, hs_error *err) {
  char *buf = NULL;
  size_t n = 0;
  int rc = hs_file_read(path, 0, &buf, &n, err);
  if (rc) return rc;
  rc = hs_npy_parse(buf, n, out, err);
  free(buf);
  if (rc) hs_error_prefix(err, "%s", path);
  return rc;
}

int hs_npy_write(const char *path, const hs_tensor *t, hs_error *err) {
  const char *descr = hs_dtype_npy_descr(t->dtype);
  if (!descr) return hs_error_set(err, HS_UNSUPPORTED, "%s: no .npy type for this tensor", path);
  char dict[512];
  int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < t->ndim; i++)
    len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld,%s", (long long)t->dims[i],
                    (i + 1 < t->ndim) ? " " : "");
  if (t->ndim > 1) len--; /* numpy writes (2, 3) but (4,) */
  len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
  size_t total = 10 + (size_t)len + 1;
  size_t pad = (64 - total % 64) % 64;
  size_t hlen = (size_t)len + pad + 1;
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                           (unsigned char)(hlen >> 8)};
  FILE *fp = fopen(path, "wb");
  if (!fp) return hs_error_set(err, HS_IO, "%s: %s", path, strerror(errno));
  int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(dict, 1, (size_t)len, fp) == (size_t)len;
  for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', fp) != EOF;
  ok = ok && fputc('\n', fp) != EOF;
  ok = ok && (t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, fp) == t->nbytes);
  if (fclose(fp) != 0) ok = 0;
  if (!ok) return hs_error_set(err, HS_IO, "%s: write failed", path);
  return 0;
}

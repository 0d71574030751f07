/* digest.c - hex encoding and SHA-256 over OpenSSL's EVP interface. */
#include "base/digest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

void hs_hex(const uint8_t *bytes, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  out[2 * n] = '\0';
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool hs_unhex(const char *hex, size_t hex_len, uint8_t *out, size_t n) {
  if (hex_len != 2 * n) return false;
  for (size_t i = 0; i < n; i++) {
    int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return true;
}

void hs_sha256(const void *data, size_t len, uint8_t out[32]) {
  unsigned int n = 0;
  if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL)) memset(out, 0, 32);
}

/* The context is OpenSSL's EVP_MD_CTX itself. */
hs_sha256_ctx *hs_sha256_begin(void) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx && !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
    EVP_MD_CTX_free(ctx);
    ctx = NULL;
  }
  return (hs_sha256_ctx *)ctx;
}

void hs_sha256_update(hs_sha256_ctx *ctx, const void *data, size_t len) {
  if (ctx) EVP_DigestUpdate((EVP_MD_CTX *)ctx, data, len);
}

void hs_sha256_end(hs_sha256_ctx *ctx, uint8_t out[32]) {
  unsigned int n = 0;
  if (!ctx || !EVP_DigestFinal_ex((EVP_MD_CTX *)ctx, out, &n)) memset(out, 0, 32);
  EVP_MD_CTX_free((EVP_MD_CTX *)ctx);
}

int hs_sha256_fd(int fd, uint64_t max_bytes, uint8_t out[32], uint64_t *n_read, hs_error *err) {
  *n_read = 0;
  enum { CHUNK = 1 << 20 };
  unsigned char *buf = malloc(CHUNK);
  hs_sha256_ctx *ctx = buf ? hs_sha256_begin() : NULL;
  if (!ctx) {
    free(buf);
    return hs_error_set(err, HS_NO_MEMORY, "cannot start hashing");
  }
  uint64_t total = 0;
  int rc = HS_OK;
  for (;;) {
    ssize_t r = read(fd, buf, CHUNK);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = hs_error_set(err, HS_IO, "%s", strerror(errno));
      break;
    }
    if (r == 0) break;
    total += (uint64_t)r;
    if (total > max_bytes) break; /* the caller sees *n_read > max_bytes */
    hs_sha256_update(ctx, buf, (size_t)r);
  }
  hs_sha256_end(ctx, out);
  free(buf);
  *n_read = total;
  return rc;
}

bool hs_secret_equal(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  unsigned char diff = la != lb;
  for (size_t i = 0; i < la && i < lb; i++) diff |= (unsigned char)(a[i] ^ b[i]);
  return diff == 0;
}

/* digest.h - hex encoding and SHA-256 (OpenSSL), for fingerprints, manifests and key ids. */
#ifndef HS_BASE_DIGEST_H
#define HS_BASE_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"

/* Lowercase hex of n bytes into out, which must hold 2n+1 bytes (NUL-terminated). */
void hs_hex(const uint8_t *bytes, size_t n, char *out);

/* Parses exactly 2n hex digits (either case) into n bytes; false on any other input (out may then
 * be partly written). */
bool hs_unhex(const char *hex, size_t hex_len, uint8_t *out, size_t n);

/* Whether the NUL-terminated secrets a and b are equal, in time that depends on their lengths only,
 * not on where they differ (bearer tokens). */
bool hs_secret_equal(const char *a, const char *b);

/* SHA-256 of len bytes. (Only an OpenSSL failure, which does not happen for SHA-256 in practice,
 * leaves out all zero.) */
void hs_sha256(const void *data, size_t len, uint8_t out[32]);

/* Incremental SHA-256: begin (NULL when out of memory), update any number of times, end writes the
 * digest and frees the context. update and end accept NULL (end then writes all zero bytes), so a
 * caller may check only the result. */
typedef struct hs_sha256_ctx hs_sha256_ctx;
hs_sha256_ctx *hs_sha256_begin(void);
void hs_sha256_update(hs_sha256_ctx *ctx, const void *data, size_t len);
void hs_sha256_end(hs_sha256_ctx *ctx, uint8_t out[32]);

/* SHA-256 of what fd holds from its current offset: reads until end of file or until more than
 * max_bytes bytes have been read (the excess is not hashed), and sets *n_read to the count read, so
 * a caller expecting exactly max_bytes sees a file that grew. Does not close fd. HS_IO on a read
 * error, HS_NO_MEMORY when hashing cannot start. */
int hs_sha256_fd(int fd, uint64_t max_bytes, uint8_t out[32], uint64_t *n_read, hs_error *err);

#endif

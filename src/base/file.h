/* file.h - the one bounded whole-file reader every layer uses (models, .npy, manifests, keys, configs). */
#ifndef HS_BASE_FILE_H
#define HS_BASE_FILE_H

#include <stddef.h>

#include "hotserve/status.h"

/* The size policy: a read with max_bytes == 0 refuses files over this (4 GiB, the repository's
 * per-file limit); callers that know a smaller bound (a manifest, a key, a config) pass it. */
#define HS_FILE_MAX_DEFAULT ((size_t)4 << 30)

struct stat;
/* Opens path read-only without ever blocking (O_NONBLOCK: a FIFO neither blocks the open nor is
 * read) and returns the descriptor of a regular file (blocking reads again, close-on-exec), with
 * *st filled. Not a regular file: HS_IO "not a regular file"; missing: HS_NOT_FOUND; else HS_IO. */
int hs_file_open_regular(const char *path, struct stat *st, hs_error *err);

/* Reads the whole regular file at path, at most max_bytes bytes (0: HS_FILE_MAX_DEFAULT), into a
 * new buffer with a NUL after the last byte; on success *out is the caller's to free() and *len the
 * byte count. The file is opened with O_NONBLOCK, so a FIFO, device or socket is refused at once
 * (HS_IO "not a regular file") instead of blocking. Errors: HS_NOT_FOUND when missing, HS_LIMIT
 * when larger than the limit, HS_NO_MEMORY, HS_IO otherwise (unreadable, changed while read);
 * *out is then NULL. */
int hs_file_read(const char *path, size_t max_bytes, char **out, size_t *len, hs_error *err);

#endif

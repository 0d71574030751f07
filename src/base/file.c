/* file.c - bounded whole-file reads that refuse anything but a regular file without blocking. */
#include "base/file.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int hs_file_open_regular(const char *path, struct stat *st, hs_error *err) {
  /* O_NONBLOCK: opening a FIFO without a writer must not hang the loader; fstat refuses it next */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return hs_error_set(err, errno == ENOENT ? HS_NOT_FOUND : HS_IO, "%s: %s", path, strerror(errno));
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
    close(fd);
    return hs_error_set(err, HS_IO, "%s: not a regular file", path);
  }
  int fl = fcntl(fd, F_GETFL); /* a regular file never blocks; reads behave as usual */
  if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

/* Reads the rest of fd into buf (cap bytes: the size fstat gave, plus 1 for the NUL); *got the count. */
static int read_all(int fd, const char *path, char *buf, size_t cap, size_t *got, hs_error *err) {
  *got = 0;
  for (;;) {
    if (*got == cap - 1) {
      /* as many bytes as fstat said: one more read tells whether the file grew meanwhile */
      char extra;
      ssize_t r = read(fd, &extra, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) break;
      return hs_error_set(err, HS_IO, "%s: changed while being read", path);
    }
    ssize_t r = read(fd, buf + *got, cap - 1 - *got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return hs_error_set(err, HS_IO, "%s: %s", path, strerror(errno));
    if (r == 0) break; /* shrank: what is there is the file */
    *got += (size_t)r;
  }
  buf[*got] = '\0';
  return HS_OK;
}

/* Opens path and checks its size against the limit; returns the descriptor and the size. */
static int open_bounded(const char *path, size_t max_bytes, size_t *size, hs_error *err) {
  size_t limit = max_bytes ? max_bytes : HS_FILE_MAX_DEFAULT;
  struct stat st;
  int fd = hs_file_open_regular(path, &st, err);
  if (fd < 0) return fd;
  if ((uint64_t)st.st_size > limit) {
    close(fd);
    return hs_error_set(err, HS_LIMIT, "%s: %lld bytes, over the limit of %zu", path, (long long)st.st_size, limit);
  }
  *size = (size_t)st.st_size;
  return fd;
}

int hs_file_read(const char *path, size_t max_bytes, char **out, size_t *len, hs_error *err) {
  *out = NULL;
  *len = 0;
  size_t size = 0;
  int fd = open_bounded(path, max_bytes, &size, err);
  if (fd < 0) return fd;
  char *buf = malloc(size + 1);
  if (!buf) {
    close(fd);
    return hs_error_set(err, HS_NO_MEMORY, "%s: out of memory for %zu bytes", path, size);
  }
  int rc = read_all(fd, path, buf, size + 1, len, err);
  close(fd);
  if (rc != HS_OK) {
    free(buf);
    *len = 0;
    return rc;
  }
  *out = buf;
  return HS_OK;
}

void hs_file_free_big(char *buf, size_t map_len) {
  if (!buf) return;
  if (map_len) munmap(buf, map_len);
  else free(buf);
}

int hs_file_read_big(const char *path, size_t max_bytes, char **out, size_t *len, size_t *map_len, hs_error *err) {
  *map_len = 0;
  *out = NULL;
  *len = 0;
  size_t size = 0;
  int fd = open_bounded(path, max_bytes, &size, err);
  if (fd < 0) return fd;
  bool big = size >= HS_FILE_BIG_BYTES;
  size_t huge = (size_t)2 << 20, cap = big ? (size + 1 + huge - 1) / huge * huge : 0; /* whole 2 MiB pages */
  char *buf = big ? mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : malloc(size + 1);
  if (big && buf == MAP_FAILED) buf = NULL;
  if (!buf) {
    close(fd);
    return hs_error_set(err, HS_NO_MEMORY, "%s: out of memory for %zu bytes", path, size);
  }
#ifdef MADV_HUGEPAGE
  if (big) (void)madvise(buf, cap, MADV_HUGEPAGE); /* advice only: 4 KiB pages if none can be had */
#endif
  int rc = read_all(fd, path, buf, size + 1, len, err);
  close(fd);
  if (rc != HS_OK) {
    hs_file_free_big(buf, cap);
    *len = 0;
    return rc;
  }
  *out = buf;
  *map_len = cap;
  return HS_OK;
}


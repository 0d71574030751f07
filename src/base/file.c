/* file.c - bounded whole-file reads that refuse anything but a regular file without blocking. */
#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

int hs_file_read(const char *path, size_t max_bytes, char **out, size_t *len, hs_error *err) {
  *out = NULL;
  *len = 0;
  size_t limit = max_bytes ? max_bytes : HS_FILE_MAX_DEFAULT;
  struct stat st;
  int fd = hs_file_open_regular(path, &st, err);
  if (fd < 0) return fd;
  if ((uint64_t)st.st_size > limit) {
    close(fd);
    return hs_error_set(err, HS_LIMIT, "%s: %lld bytes, over the limit of %zu", path, (long long)st.st_size,
                        limit);
  }
  size_t cap = (size_t)st.st_size + 1;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return hs_error_set(err, HS_NO_MEMORY, "%s: out of memory for %zu bytes", path, cap - 1);
  }
  size_t got = 0;
  for (;;) {
    if (got == cap - 1) {
      /* as many bytes as fstat said: one more read tells whether the file grew meanwhile */
      char extra;
      ssize_t r = read(fd, &extra, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) break;
      free(buf);
      close(fd);
      return hs_error_set(err, HS_IO, "%s: changed while being read", path);
    }
    ssize_t r = read(fd, buf + got, cap - 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      close(fd);
      return hs_error_set(err, HS_IO, "%s: %s", path, strerror(e));
    }
    if (r == 0) break; /* shrank: what is there is the file */
    got += (size_t)r;
  }
  close(fd);
  buf[got] = '\0';
  *out = buf;
  *len = got;
  return HS_OK;
}

/* testfs.h - small helpers for repo tests: temporary directories and files (real files, real paths). */
#ifndef HS_TESTS_REPO_TESTFS_H
#define HS_TESTS_REPO_TESTFS_H

#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Formats a path into a static rotating buffer (enough for a few nested calls). */
static inline const char *P(const char *fmt, ...) {
  static char bufs[8][4096];
  static int next;
  char *b = bufs[next++ % 8];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, 4096, fmt, ap);
  va_end(ap);
  return b;
}

static inline void mkdirs(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(tmp, 0755);
      *p = '/';
    }
  }
  mkdir(tmp, 0755);
}

/* Writes content to path (creating parent directories); aborts the test process on failure. */
static inline void write_text(const char *path, const char *content) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = '\0';
    mkdirs(dir);
  }
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(content, 1, strlen(content), f) != strlen(content) || fclose(f) != 0) {
    perror(path);
    abort();
  }
}

static inline char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static inline int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if (flag == FTW_DP)
    rmdir(path);
  else
    unlink(path);
  return 0;
}

static inline void rm_tree(const char *path) { nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static inline char *make_tmpdir(void) {
  char tmpl[] = "/tmp/hs-repo-test-XXXXXX";
  char *d = mkdtemp(tmpl);
  if (!d) abort();
  return strdup(d);
}

/* Sets a file's mtime (and so its "age") to `seconds_ago` in the past. */
static inline void age_file(const char *path, int seconds_ago) {
  struct timespec ts[2];
  clock_gettime(CLOCK_REALTIME, &ts[0]);
  ts[0].tv_sec -= seconds_ago;
  ts[1] = ts[0];
  utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
}

#endif

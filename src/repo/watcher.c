/* watcher.c - tells the server when the repository may have changed: inotify, polling, kicks.
 *
 * DESIGN: one thread per watcher sleeps in poll(2) on three descriptors: an inotify instance, a
 * kick eventfd (hs_watcher_kick writes it; write(2) is async-signal-safe, so a SIGHUP handler may
 * call it) and a stop eventfd. inotify watches the root, every model directory and everything
 * below them down to HS__WATCH_DEPTH levels (version directories, Kubernetes `..data` targets);
 * after each burst of events the tree is walked again so directories that appeared get watches
 * too (adding a watch twice is harmless). Events are debounced: on_change runs once ~100 ms after
 * the first event of a burst. Independently, on_change runs every poll_ms (NFS, where inotify sees
 * nothing) and right after a kick; with inotify switched off (`serve --no-inotify`) only those two remain. Errors (inotify unavailable, watch limit reached, root missing)
 * are logged and retried on the next poll; the thread only ends in hs_watcher_stop, which joins
 * it and frees everything.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "repo/repo_internal.h"

#define HS__WATCH_DEPTH 5   /* root / model / version (or ..data target) / subdir / subdir */
#define HS__DEBOUNCE_MS 100
#define HS__MAX_WATCHES 8192

struct hs_watcher {
  char root[HS_PATH_MAX];
  int poll_ms;
  bool use_inotify; /* false: polling and kicks only */
  void (*on_change)(void *user);
  void *user;
  int ino_fd;   /* -1 while inotify is unavailable */
  int kick_fd;
  int stop_fd;
  size_t n_watches;
  bool trouble; /* something failed: rearm on the next poll */
  bool warned;  /* trouble was logged once already */
  pthread_t thread;
};

static int64_t now_ms(void) { return (int64_t)(hs_now_ns() / 1000000u); }

static const uint32_t k_mask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                               IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

static void watch_tree(hs_watcher *w, const char *dir, int depth) {
  if (w->ino_fd < 0 || depth > HS__WATCH_DEPTH) return;
  if (w->n_watches >= HS__MAX_WATCHES) return;
  if (inotify_add_watch(w->ino_fd, dir, k_mask | IN_ONLYDIR) < 0) {
    if (errno == ENOSPC || errno == ENOMEM) {
      if (!w->warned) HS_LOGW("watcher: inotify watch limit reached at %s; relying on polling every %d ms", dir, w->poll_ms);
      w->warned = w->trouble = true;
    }
    return;
  }
  w->n_watches++;
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue; /* links: their targets are watched */
    char path[HS_PATH_MAX];
    if (hs__path_join(path, sizeof path, dir, e->d_name, NULL) != HS_OK) continue;
    struct stat st;
    if (e->d_type == DT_UNKNOWN && (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))) continue;
    watch_tree(w, path, depth + 1);
  }
  closedir(d);
}

/* (Re)creates the inotify instance if needed and (re)adds watches over the tree. */
static void rearm(hs_watcher *w) {
  if (!w->use_inotify) return;
  if (w->ino_fd < 0) {
    w->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ino_fd < 0) {
      if (!w->warned) HS_LOGW("watcher: inotify unavailable (%s); polling every %d ms", strerror(errno), w->poll_ms);
      w->warned = w->trouble = true;
      return;
    }
  }
  w->n_watches = 0;
  struct stat st;
  if (stat(w->root, &st) != 0) {
    if (!w->warned) HS_LOGW("watcher: %s: %s; retrying", w->root, strerror(errno));
    w->warned = w->trouble = true;
    return;
  }
  watch_tree(w, w->root, 1);
}

static void drain(int fd) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return;
  }
}

static void *watch_main(void *arg) {
  pthread_setname_np(pthread_self(), "hs-watcher");
  hs_watcher *w = arg;
  rearm(w);
  int64_t next_poll = now_ms() + w->poll_ms;
  int64_t debounce_at = -1; /* when a pending burst fires, -1 when none */
  for (;;) {
    int64_t now = now_ms();
    int64_t deadline = next_poll;
    if (debounce_at >= 0 && debounce_at < deadline) deadline = debounce_at;
    int timeout = deadline > now ? (int)(deadline - now) : 0;
    struct pollfd fds[3] = {{w->stop_fd, POLLIN, 0}, {w->kick_fd, POLLIN, 0}, {w->ino_fd, POLLIN, 0}};
    int nfds = w->ino_fd >= 0 ? 3 : 2;
    int n = poll(fds, (nfds_t)nfds, timeout);
    if (n < 0 && errno != EINTR) {
      HS_LOGW("watcher: poll: %s", strerror(errno));
      struct timespec ts = {0, 50 * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    if (n > 0 && (fds[0].revents & POLLIN)) break;
    bool fire = false;
    if (n > 0 && (fds[1].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = read(w->kick_fd, &v, sizeof v);
      (void)r;
      fire = true;
    }
    if (n > 0 && nfds == 3 && (fds[2].revents & (POLLIN | POLLERR))) {
      drain(w->ino_fd);
      if (debounce_at < 0) debounce_at = now_ms() + HS__DEBOUNCE_MS;
    }
    now = now_ms();
    if (debounce_at >= 0 && now >= debounce_at) {
      debounce_at = -1;
      rearm(w); /* new directories get watches before the scan looks at them */
      fire = true;
    }
    if (now >= next_poll) {
      next_poll = now + w->poll_ms;
      if (w->trouble) {
        w->trouble = false;
        rearm(w);
      }
      fire = true;
    }
    if (fire) w->on_change(w->user);
  }
  return NULL;
}

int hs_watcher_start(const char *root, int poll_ms, bool use_inotify, void (*on_change)(void *user), void *user,
                     hs_watcher **out, hs_error *err) {
  *out = NULL;
  if (!root || !on_change) return hs_error_set(err, HS_INVALID_ARGUMENT, "watcher needs a root and a callback");
  hs_watcher *w = calloc(1, sizeof *w);
  if (!w) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  if (snprintf(w->root, sizeof w->root, "%s", root) >= (int)sizeof w->root) {
    free(w);
    return hs_error_set(err, HS_LIMIT, "repository path too long");
  }
  w->poll_ms = poll_ms > 0 ? poll_ms : 2000;
  w->use_inotify = use_inotify;
  w->on_change = on_change;
  w->user = user;
  w->ino_fd = -1;
  w->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->kick_fd < 0 || w->stop_fd < 0) {
    int e = errno;
    if (w->kick_fd >= 0) close(w->kick_fd);
    if (w->stop_fd >= 0) close(w->stop_fd);
    free(w);
    return hs_error_set(err, HS_IO, "eventfd: %s", strerror(e));
  }
  int rc = pthread_create(&w->thread, NULL, watch_main, w);
  if (rc != 0) {
    close(w->kick_fd);
    close(w->stop_fd);
    free(w);
    return hs_error_set(err, HS_INTERNAL, "cannot start the watcher thread: %s", strerror(rc));
  }
  *out = w;
  return HS_OK;
}

void hs_watcher_kick(hs_watcher *w) {
  if (!w) return;
  uint64_t one = 1;
  ssize_t r = write(w->kick_fd, &one, sizeof one);
  (void)r;
}

void hs_watcher_stop(hs_watcher *w) {
  if (!w) return;
  uint64_t one = 1;
  ssize_t r = write(w->stop_fd, &one, sizeof one);
  (void)r;
  pthread_join(w->thread, NULL);
  if (w->ino_fd >= 0) close(w->ino_fd);
  close(w->kick_fd);
  close(w->stop_fd);
  free(w);
}

/* evil_backend.c - a plug-in for test_repo_trust: loading it runs its constructor, which appends a
 * line to the file named by HS_EVIL_MARKER (proof that the server loaded it); it offers no backend. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void mark_loaded(void) {
  const char *path = getenv("HS_EVIL_MARKER");
  if (!path) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, "loaded\n", 7) != 7) { /* nothing to do: the test sees no marker */
  }
  close(fd);
}

const void *hs_backend_init(void);
const void *hs_backend_init(void) { return NULL; }

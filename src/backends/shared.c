/* shared.c - loads a backend from a shared library, checks its ABI version and brings an older
 * table up to this ABI's layout; plug-ins come only from the operator's --backend-dir (plugins.h). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/plugins.h"
#include "hotserve/backend.h"

static char g_plugin_dir[PATH_MAX]; /* "" = no plug-ins; set once before any load */

static bool within(const char *base, const char *path) {
  size_t n = strlen(base);
  if (strncmp(base, path, n) != 0) return false;
  return path[n] == '\0' || path[n] == '/' || (n == 1 && base[0] == '/');
}

int hs_backend_set_plugin_dir(const char *dir, const char *repo_root, hs_error *err) {
  g_plugin_dir[0] = '\0';
  if (!dir) return HS_OK;
  char real_dir[PATH_MAX], real_repo[PATH_MAX];
  struct stat st;
  if (!realpath(dir, real_dir) || stat(real_dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "--backend-dir %s is not a directory", dir);
  if (repo_root && realpath(repo_root, real_repo) && within(real_repo, real_dir))
    return hs_error_set(err, HS_INVALID_ARGUMENT,
                        "--backend-dir %s lies inside the model repository: whoever writes models could "
                        "then choose the code the server runs",
                        dir);
  snprintf(g_plugin_dir, sizeof g_plugin_dir, "%s", real_dir);
  return HS_OK;
}

bool hs_backend_plugin_name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 63 || name[0] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

int hs_backend_load_plugin(const char *name, const hs_backend **out, hs_error *err) {
  if (!hs_backend_plugin_name_ok(name))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "backend '%.64s' is not a plug-in name", name);
  if (!g_plugin_dir[0])
    return hs_error_set(err, HS_UNSUPPORTED,
                        "backend '%s' is a plug-in, but the server was started without --backend-dir", name);
  size_t n = strlen(name);
  bool has_so = n > 3 && strcmp(name + n - 3, ".so") == 0;
  char path[PATH_MAX], real[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%s%s", g_plugin_dir, name, has_so ? "" : ".so") >= (int)sizeof path)
    return hs_error_set(err, HS_LIMIT, "backend path too long");
  if (!realpath(path, real)) return hs_error_set(err, HS_NOT_FOUND, "backend library %s: %s", path, strerror(errno));
  /* Never block on a FIFO and never map a device: a regular file or nothing. */
  int fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  struct stat st;
  bool regular = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (fd >= 0) close(fd);
  if (!regular) return hs_error_set(err, HS_INVALID_ARGUMENT, "backend library %s is not a regular file", path);
  return hs_backend_load_shared(real, out, err);
}

/* The tables handed out, one per plug-in table seen (a library loaded again gives the same one);
 * they live as long as the process, like the libraries themselves. */
typedef struct loaded_table {
  const hs_backend *orig; /* the plug-in's own table */
  hs_backend copy;        /* in this ABI's layout */
  struct loaded_table *next;
} loaded_table;

static pthread_mutex_t g_tables_mu = PTHREAD_MUTEX_INITIALIZER;
static loaded_table *g_tables;

/* Bytes of the table an ABI-1 plug-in exports: everything before the first ABI-2 field. */
#define HS_BACKEND_ABI1_SIZE offsetof(hs_backend, load_buffer)
/* ... and an ABI-2 plug-in: everything before the first ABI-3 field. */
#define HS_BACKEND_ABI2_SIZE offsetof(hs_backend, load_stream)

/* The table of this ABI for b (which has version abi), or NULL when out of memory. */
static const hs_backend *table_for(const hs_backend *b, unsigned abi) {
  pthread_mutex_lock(&g_tables_mu);
  loaded_table *t = g_tables;
  while (t && t->orig != b) t = t->next;
  if (!t && (t = calloc(1, sizeof *t)) != NULL) {
    t->orig = b;
    /* never read past the end of an older, shorter table: fields it lacks stay NULL */
    memcpy(&t->copy, b, abi == 1 ? HS_BACKEND_ABI1_SIZE : abi == 2 ? HS_BACKEND_ABI2_SIZE : sizeof t->copy);
    t->copy.abi_version = HS_BACKEND_ABI_VERSION;
    t->next = g_tables;
    g_tables = t;
  }
  pthread_mutex_unlock(&g_tables_mu);
  return t ? &t->copy : NULL;
}

int hs_backend_load_shared(const char *path, const hs_backend **out, hs_error *err) {
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) return hs_error_set(err, HS_NOT_FOUND, "backend library %s: %s", path, dlerror());
  const hs_backend *(*init)(void) = (const hs_backend *(*)(void))dlsym(handle, "hs_backend_init");
  if (!init) {
    dlclose(handle);
    return hs_error_set(err, HS_UNSUPPORTED, "backend library %s exports no hs_backend_init", path);
  }
  const hs_backend *b = init();
  unsigned abi = b ? b->abi_version : 0;
  if (abi < HS_BACKEND_ABI_VERSION_MIN || abi > HS_BACKEND_ABI_VERSION) {
    dlclose(handle);
    return hs_error_set(err, HS_UNSUPPORTED, "backend library %s has ABI version %u, hotserve needs %u to %u",
                        path, abi, HS_BACKEND_ABI_VERSION_MIN, HS_BACKEND_ABI_VERSION);
  }
  if (!b->load || !b->free_model || !b->num_inputs || !b->input || !b->num_outputs || !b->output ||
      !b->session_create || !b->session_free || !b->run) {
    dlclose(handle);
    return hs_error_set(err, HS_UNSUPPORTED, "backend library %s leaves a required entry point empty", path);
  }
  const hs_backend *t = table_for(b, abi);
  if (!t) {
    dlclose(handle);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory loading backend library %s", path);
  }
  *out = t; /* the library stays loaded for the life of the process */
  return HS_OK;
}

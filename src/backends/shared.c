/* shared.c - loads a backend from a shared library, checks its ABI version and brings an older
 * table up to this ABI's layout. */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hotserve/backend.h"

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

/* The table of this ABI for b (which has version abi), or NULL when out of memory. */
static const hs_backend *table_for(const hs_backend *b, unsigned abi) {
  pthread_mutex_lock(&g_tables_mu);
  loaded_table *t = g_tables;
  while (t && t->orig != b) t = t->next;
  if (!t && (t = calloc(1, sizeof *t)) != NULL) {
    t->orig = b;
    /* never read past the end of an older, shorter table: fields it lacks stay NULL */
    memcpy(&t->copy, b, abi == 1 ? HS_BACKEND_ABI1_SIZE : sizeof t->copy);
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

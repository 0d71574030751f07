/* shared.c - loads a backend from a shared library and checks its ABI version. */
#include <dlfcn.h>

#include "hotserve/backend.h"

int hs_backend_load_shared(const char *path, const hs_backend **out, hs_error *err) {
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) return hs_error_set(err, HS_NOT_FOUND, "backend library %s: %s", path, dlerror());
  const hs_backend *(*init)(void) = (const hs_backend *(*)(void))dlsym(handle, "hs_backend_init");
  if (!init) {
    dlclose(handle);
    return hs_error_set(err, HS_UNSUPPORTED, "backend library %s exports no hs_backend_init", path);
  }
  const hs_backend *b = init();
  if (!b || b->abi_version != HS_BACKEND_ABI_VERSION) {
    unsigned got = b ? b->abi_version : 0;
    dlclose(handle);
    return hs_error_set(err, HS_UNSUPPORTED, "backend library %s has ABI version %u, hotserve needs %u",
                        path, got, HS_BACKEND_ABI_VERSION);
  }
  if (!b->load || !b->free_model || !b->num_inputs || !b->input || !b->num_outputs || !b->output ||
      !b->session_create || !b->session_free || !b->run) {
    dlclose(handle);
    return hs_error_set(err, HS_UNSUPPORTED, "backend library %s leaves a required entry point empty", path);
  }
  *out = b; /* the library stays loaded for the life of the process */
  return HS_OK;
}

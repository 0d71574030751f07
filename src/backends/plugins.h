/* plugins.h - plug-in backends: shared libraries loaded only from the operator's --backend-dir.
 *
 * A model's config.json names a plug-in by name ("backend": "mybackend"); the library is
 * DIR/mybackend.so in the directory the operator gave `hotserve serve --backend-dir DIR`, which must
 * lie outside the model repository. A repository never names a path that code is loaded from.
 */
#ifndef HS_BACKENDS_PLUGINS_H
#define HS_BACKENDS_PLUGINS_H

#include <stdbool.h>

#include "hotserve/backend.h"

/* Sets the plug-in directory for the process (before the registry starts; not thread-safe).
 * dir must be an existing directory outside repo_root (both resolved with realpath):
 * HS_INVALID_ARGUMENT otherwise. dir NULL: no plug-ins (the default). */
int hs_backend_set_plugin_dir(const char *dir, const char *repo_root, hs_error *err);

/* True when name is a plug-in name: 1 to 63 of [A-Za-z0-9_.-], not starting with '.'. */
bool hs_backend_plugin_name_ok(const char *name);

/* Loads the plug-in called name from the plug-in directory (name.so, or name itself when it ends
 * in ".so"); it must be a regular file. HS_UNSUPPORTED when no directory was given. */
int hs_backend_load_plugin(const char *name, const hs_backend **out, hs_error *err);

#endif

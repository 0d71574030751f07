/* publish.h - the writing side of the repository (used by `hotserve keygen/sign/publish`, never by
 * the server): key generation, signing a version directory, atomic publishing. */
#ifndef HS_REPO_PUBLISH_H
#define HS_REPO_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"

/* Writes an Ed25519 pair NAME.key (PEM, mode 0600) and NAME.pub, or with hmac a random 32-byte
 * shared key NAME.key (mode 0600). Refuses to overwrite existing files (HS_INVALID_ARGUMENT). */
int hs_repo_keygen(const char *name, bool hmac, hs_error *err);

/* Writes DIR/hotserve-manifest.json over every other file below dir and, when key_path is given
 * (an Ed25519 private key or an HMAC key file), DIR/hotserve-manifest.sig; each file is written
 * atomically (temporary file, fsync, rename), the signature first and the manifest last, so a
 * present manifest always has its signature beside it. Without a key an old signature is removed.
 * Symlinks leading out of dir are refused (HS_VERIFY). */
int hs_repo_sign_dir(const char *dir, const char *key_path, hs_error *err);
/* As hs_repo_sign_dir, and the manifest names model and version (it is served only there).
 * hs_repo_sign_dir takes them from DIR's name when it is MODEL/VERSION (else the manifest is
 * unbound, which a server with --require-signature refuses). model NULL: unbound. */
int hs_repo_sign_dir_as(const char *dir, const char *key_path, const char *model, int64_t version, hs_error *err);

/* Writes MODEL/config.json.sig beside config_path (a model's config.json): a signature with
 * key_path over the model's name and the config's bytes (docs/REPOSITORY.md). model NULL: the
 * name of the directory holding config_path. */
int hs_repo_sign_config(const char *config_path, const char *key_path, const char *model, hs_error *err);

/* Publishes src_dir as a new version of the model at model_dir (created when missing): copies
 * it into model_dir/.staging-XXXXXX (same filesystem) in one pass, hashing the bytes as they are
 * written (a source file that changes meanwhile: HS_IO), fsyncs every file and directory, writes
 * the manifest (and signature with key_path) last, then renames the staging directory to
 * model_dir/<version> without ever replacing an existing version. version 0 takes the next free
 * number (one above the highest present). On success *out_version is the number used. On any
 * failure the staging directory is removed and nothing appears in model_dir. */
int hs_repo_publish(const char *src_dir, const char *model_dir, int64_t version, const char *key_path,
                    int64_t *out_version, hs_error *err);

#endif

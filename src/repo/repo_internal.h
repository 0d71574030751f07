/* repo_internal.h - helpers shared by the files of repo/ (listing, hashing, manifest, keys, verdicts).
 *
 * Not part of the contract with serving/: only repo/, the repo CLI commands, tests and fuzz
 * targets include this. Every function returns 0 or a negative hs_status and fills an hs_error.
 */
#ifndef HS_REPO_INTERNAL_H
#define HS_REPO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/digest.h"
#include "base/file.h"
#include "hotserve/status.h"
#include "repo/repo.h"

/* ---- limits ---- */
#define HS__DEFAULT_MAX_FILE_BYTES ((size_t)4 << 30) /* 4 GiB per file */
#define HS__DEFAULT_MAX_FILES 1024                   /* files per version */
#define HS__MAX_MANIFEST_BYTES ((size_t)4 << 20)     /* 4 MiB */
#define HS__MAX_SIGNATURE_BYTES ((size_t)64 << 10)
#define HS__MAX_CONFIG_BYTES ((size_t)1 << 20)
#define HS__MAX_KEY_BYTES ((size_t)64 << 10)
#define HS__MAX_DEPTH 8         /* directory levels inside a version */
#define HS__MAX_REL_PATH 1024   /* bytes in a manifest entry's path */
#define HS__MAX_MODELS 4096
#define HS__MAX_VERSIONS 4096   /* version directories per model */

/* ---- verdicts: why a version is refused (the reason codes of repo.h) ---- */
typedef enum {
  HS__R_NONE = 0,
  HS__R_UNSIGNED,
  HS__R_BAD_SIGNATURE,
  HS__R_UNKNOWN_KEY,
  HS__R_MANIFEST_MISMATCH,
  HS__R_BAD_MANIFEST,
  HS__R_UNSAFE_PATH,
  HS__R_LIMIT,
  HS__R_IO, /* could not read the directory: transient, the version stays PENDING */
  HS__R_WRONG_BINDING, /* the manifest names another model or version than where it lies */
  HS__R_UNBOUND,       /* signatures required, but the manifest names no model and version */
} hs__reason;

/* The reason code as the contract spells it ("bad_signature"); "" for HS__R_NONE. */
const char *hs__reason_code(hs__reason r);

typedef struct hs__verdict {
  hs__reason reason;
  char message[256];
} hs__verdict;

/* Records reason and a printf-style message; returns the reason (non-zero unless HS__R_NONE). */
hs__reason hs__verdict_set(hs__verdict *v, hs__reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- files ---- */
/* Joins a and b with one '/'; HS_LIMIT when the result would not fit in cap bytes. */
int hs__path_join(char *out, size_t cap, const char *a, const char *b, hs_error *err);
/* True when real_path is real_base itself or lies below it (both canonical absolute paths). */
bool hs__path_within(const char *real_base, const char *real_path);
/* Writes data to dir/name atomically: a temporary file in dir, fsync, rename, fsync dir.
 * mode is the new file's permission bits. */
int hs__write_file_atomic(const char *dir, const char *name, const void *data, size_t len, int mode,
                          hs_error *err);

/* One file of a version directory, found by hs__list_dir. */
typedef struct hs__file {
  char *rel;    /* path below the version directory, '/'-separated (owned) */
  char *real;   /* canonical absolute path where the bytes are (owned) */
  uint64_t size;
  int64_t mtime_ns, ctime_ns;
  uint64_t dev, ino;
} hs__file;

typedef struct hs__listing {
  hs__file *files; /* sorted by rel (strcmp) */
  size_t n, cap;
  int64_t max_mtime_ns; /* newest mtime of any file or directory seen, the version dir included */
  size_t n_dirs;
} hs__listing;

/* Lists every regular file below dir (recursively, at most HS__MAX_DEPTH levels). Symlinks are
 * followed only when their target lies inside bound (a canonical path: the model's directory);
 * anything else that leads out, and anything that is not a regular file or directory, is
 * HS__R_UNSAFE_PATH. More than max_files files, or a file over max_file_bytes, is HS__R_LIMIT.
 * Returns HS__R_NONE and fills out (free with hs__listing_free), or a reason in v. */
hs__reason hs__list_dir(const char *dir, const char *bound, size_t max_files, size_t max_file_bytes,
                        hs__listing *out, hs__verdict *v);
void hs__listing_free(hs__listing *l);
/* The file whose rel is name, or NULL. */
const hs__file *hs__listing_find(const hs__listing *l, const char *rel);
/* SHA-256 over the listing's names, sizes, mtimes, ctimes and inodes (its "shape", not its bytes). */
void hs__listing_digest(const hs__listing *l, uint8_t out[32]);

/* ---- hashing with a cache keyed by (dev, inode, size, mtime, ctime) ---- */
typedef struct hs__hash_cache hs__hash_cache;
hs__hash_cache *hs__hash_cache_new(void);
void hs__hash_cache_free(hs__hash_cache *c);
/* Forgets entries not used since the previous call (called once per scan). */
void hs__hash_cache_sweep(hs__hash_cache *c);
/* Bytes read for hashing through this cache so far (for tests and debugging). */
uint64_t hs__hash_cache_bytes_hashed(const hs__hash_cache *c);
/* The scanner's cache counter, as above. */
uint64_t hs__repo_bytes_hashed(const hs_repo *r);
/* Marks f's cached hash (if any) as still in use, so the next sweep keeps it. */
void hs__hash_cache_touch(hs__hash_cache *c, const hs__file *f);
/* SHA-256 of f's bytes (from the cache when f is unchanged; cache may be NULL). Fails with
 * HS_IO when the file cannot be read or no longer has f->size bytes. */
int hs__sha256_file(hs__hash_cache *c, const hs__file *f, uint8_t out[32], hs_error *err);
/* Remembers sha as the SHA-256 of the bytes f (its device, inode, size and times) holds: for a
 * writer that hashed what it wrote (publish), so hs__manifest_build need not read it back. c may
 * be NULL (nothing happens); out of memory just forgets. */
void hs__hash_cache_put(hs__hash_cache *c, const hs__file *f, const uint8_t sha[32]);

/* ---- manifest ---- */
typedef struct hs__manifest_entry {
  char *path;
  uint64_t size;
  uint8_t sha256[32];
} hs__manifest_entry;

typedef struct hs__manifest {
  hs__manifest_entry *entries; /* sorted by path */
  size_t n;
  /* The model and version the manifest was written for ("model", "version"; both or neither).
   * version 0: not bound (a manifest from before hotserve bound them). */
  char model[HS_NAME_MAX];
  int64_t version;
} hs__manifest;

/* Parses manifest bytes (not NUL-terminated). Malformed: HS__R_BAD_MANIFEST; a path that is
 * absolute, contains "..", "." or empty components: HS__R_UNSAFE_PATH; too many files or a size over
 * max_file_bytes: HS__R_LIMIT. On success fill m (free with hs__manifest_free). */
hs__reason hs__manifest_parse(const char *bytes, size_t len, size_t max_files, size_t max_file_bytes,
                              hs__manifest *m, hs__verdict *v);
void hs__manifest_free(hs__manifest *m);
/* Builds the manifest text for every file in l except the manifest and signature themselves,
 * bound to model and version (model NULL: not bound); *out is malloc'ed (free()). */
int hs__manifest_build(const hs__listing *l, hs__hash_cache *c, const char *model, int64_t version, char **out,
                       size_t *len, hs_error *err);
/* Compares l (manifest and signature excluded) with m: missing, extra, resized or changed files
 * are HS__R_MANIFEST_MISMATCH; an unreadable file HS__R_IO. */
hs__reason hs__manifest_check(const hs__manifest *m, const hs__listing *l, hs__hash_cache *c,
                              hs__verdict *v);
/* The part of hs__manifest_check that reads no file: names and sizes only. */
hs__reason hs__manifest_check_sizes(const hs__manifest *m, const hs__listing *l, hs__verdict *v);

/* ---- keys and signatures ---- */
typedef enum { HS__KEY_ED25519_PUBLIC, HS__KEY_ED25519_PRIVATE, HS__KEY_HMAC } hs__key_kind;
typedef struct hs__key hs__key;

/* Reads a key file written by `hotserve keygen` (an Ed25519 PEM public or private key, or an
 * HMAC key file). Free with hs__key_free. Never prints key material. */
int hs__key_load(const char *path, hs__key **out, hs_error *err);
void hs__key_free(hs__key *k);
hs__key_kind hs__key_kind_of(const hs__key *k);
/* The key's id (16 hex digits), which signatures carry to name their key. */
const char *hs__key_id(const hs__key *k);
/* Writes NAME.key (0600) and NAME.pub, or for hmac NAME.key only; refuses to overwrite. */
int hs__keygen(const char *name, bool hmac, hs_error *err);
/* Signs msg with a private Ed25519 key or an HMAC key; *out is the signature file's text (free()). */
int hs__sign(const hs__key *k, const void *msg, size_t len, char **out, size_t *out_len, hs_error *err);
/* Checks a signature file's text sig over msg against keys. HS__R_BAD_SIGNATURE when malformed
 * or wrong, HS__R_UNKNOWN_KEY when no trusted key has its id and scheme. */
hs__reason hs__verify_signature(const hs_trusted_keys *keys, const void *msg, size_t len,
                                const char *sig, size_t sig_len, hs__verdict *v);

/* The model and version a directory named MODEL/VERSION stands for, from its name (not resolving
 * links): 0 and fills both, or -1 (model "" and version 0) when the last component is not a
 * version number or there is no parent name. */
int hs__path_binding(const char *dir, char model[HS_NAME_MAX], int64_t *version);

/* ---- config.json and its signature ---- */
#define HS__CONFIG_SIG_PREFIX "hotserve-config/1\n"
/* The bytes a config signature covers: HS__CONFIG_SIG_PREFIX, the model's name, '\n', the config
 * file's bytes (so a signed config copied to another model is refused). *out is malloc'ed. */
int hs__config_message(const char *model, const char *text, size_t len, char **out, size_t *out_len, hs_error *err);
/* hs_repo_load_config, and with require_signature config.json must carry a good
 * config.json.sig from keys. On failure code is the reason code ("unsigned", "bad_signature",
 * "unknown_key", "unsafe_path", "limit", "bad_config", "io"). */
int hs__load_config(const char *root, const char *model, bool require_signature, const hs_trusted_keys *keys,
                    hs_model_config *cfg, char code[32], hs_error *err);

/* ---- one version, checked (shared by the scanner and hs_repo_verify_version) ---- */
typedef struct hs__check_opts {
  bool require_signature;
  const hs_trusted_keys *keys;
  size_t max_files, max_file_bytes;
  hs__hash_cache *cache; /* may be NULL */
  /* Where the version lies: a bound manifest must name this model and version (HS__R_WRONG_BINDING
   * otherwise); with require_signature and model known, an unbound one is HS__R_UNBOUND. NULL / 0:
   * not known (`hotserve verify` of a directory not named MODEL/VERSION), not compared. */
  const char *model;
  int64_t version;
  bool sizes_only;       /* check names and sizes against the manifest, hash nothing (the loader
                            hashes what it reads: hs_repo_options.defer_content_check) */
} hs__check_opts;

/* Checks dir (canonical path) whose symlinks may lead anywhere inside bound, given its listing l.
 * Returns HS__R_NONE when it has a manifest that matches (and a good signature when keys require
 * one) and fills fingerprint (hex of SHA-256 over manifest and signature bytes); *has_manifest
 * tells whether a manifest exists (when it does not, the result is HS__R_UNSIGNED with
 * require_signature, HS__R_NONE otherwise). */
hs__reason hs__check_version(const char *dir, const hs__listing *l, const hs__check_opts *o,
                             bool *has_manifest, char fingerprint[65], hs__verdict *v);

#endif

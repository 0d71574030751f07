/* repo.h - the model repository: layout, per-model config, version discovery, verification, watching.
 *
 * This header is the contract between repo/ (which implements it) and serving/ (which uses it).
 * Layout: ROOT/<model>/<version>/model.onnx (+ external data files), <version> a positive integer
 * directory, optional ROOT/<model>/config.json. repo/ never writes into the repository.
 */
#ifndef HS_REPO_REPO_H
#define HS_REPO_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hotserve/backend.h"
#include "hotserve/status.h"
#include "hotserve/tensor.h"

#define HS_PATH_MAX 4096
#define HS_NAME_MAX 128
/* The highest version number served: version directories have at most 18 decimal digits. */
#define HS_REPO_VERSION_MAX 999999999999999999LL
/* Older READY versions a LATEST-N model may fall back to when its selected versions fail to load. */
#define HS_REPO_FALLBACKS 3

/* Written by `hotserve sign`/`publish` into a version directory: the manifest (every other file's
 * path, size, SHA-256) and the signature over the manifest's exact bytes. See docs/REPOSITORY.md. */
#define HS_REPO_MANIFEST_NAME "hotserve-manifest.json"
#define HS_REPO_SIGNATURE_NAME "hotserve-manifest.sig"
/* Beside ROOT/<model>/config.json: its signature (required with --require-signature). */
#define HS_REPO_CONFIG_SIGNATURE_NAME "config.json.sig"

/* ---- per-model configuration (ROOT/<model>/config.json; every field optional) ---- */
typedef enum { HS_POLICY_LATEST, HS_POLICY_ALL, HS_POLICY_SPECIFIC } hs_version_policy_kind;

typedef enum { HS_WARMUP_ZEROS, HS_WARMUP_RANDOM, HS_WARMUP_FILES } hs_warmup_kind;

/* Gray release of every new version (config.json "rollout"; docs/GRAY_RELEASE.md). */
typedef enum { HS_ROLLOUT_IMMEDIATE, HS_ROLLOUT_CANARY, HS_ROLLOUT_SHADOW } hs_rollout_strategy;

typedef struct hs_rollout_config {
  hs_rollout_strategy strategy;  /* default IMMEDIATE: a loaded version serves at once */
  double weight;                 /* canary: percent of unpinned requests the candidate answers; default 10 */
  double fraction;               /* shadow: share of requests also run on the candidate; default 1 */
  long long min_requests;        /* judge after this many candidate requests; default 1000 */
  double max_seconds;            /* ... or after this long, whichever first; default 300 */
  double max_error_rate;         /* default 0.01 */
  double max_latency_ratio;      /* candidate p99 <= this x stable p99; default 1.5 */
  double output_rtol, output_atol; /* shadow: outputs agree when |c-s| <= atol + rtol*|s|; default 1e-3, 1e-4 */
  double max_disagreement_rate;  /* shadow: share of compared requests allowed to disagree; default 0 */
} hs_rollout_config;
#define HS_MAX_BATCH_SIZE 1024          /* config.json max_batch_size bound */
#define HS_MAX_QUEUE_DELAY_US 1000000    /* dynamic_batching.max_queue_delay_microseconds bound: 1 s */

typedef struct hs_model_config {
  char backend[64];                  /* "onnx" (default) or the name of a plug-in in --backend-dir */
  hs_version_policy_kind policy;     /* default HS_POLICY_LATEST */
  int latest_n;                      /* for LATEST; default 1 */
  int64_t specific[32];              /* for SPECIFIC */
  size_t n_specific;
  int warmup_runs;                   /* default 1 */
  hs_warmup_kind warmup_kind;        /* default ZEROS; FILES reads <version>/warmup/<input>.npy */
  bool golden_check;                 /* default: true when <version>/golden/ exists */
  double golden_rtol, golden_atol;   /* default 1e-3, 1e-4 */
  int threads;                       /* compute threads per run; 0 = server default */
  int instances;                     /* concurrent runs (sessions) per version; 0 = server default */
  hs_rollout_config rollout;         /* how a new version goes live; default immediate */
  /* Dynamic batching, Triton's meaning (docs/SERVING.md, Batching): requests whose inputs differ
   * only in the first (batch) dimension are gathered into one run of up to max_batch_size rows. */
  int max_batch_size;                /* 0 (default): no batching */
  bool dynamic_batching;             /* "dynamic_batching" given (needs max_batch_size >= 1) */
  int preferred_batch_size[16];      /* a batch this big runs at once, without waiting out the delay */
  size_t n_preferred;
  int max_queue_delay_us;            /* how long the first request of a batch waits for more; default 0 */
  /* Optional declared signature; n_inputs == 0 means "use the model's own". */
  hs_io_desc inputs[16];
  size_t n_inputs;
  hs_io_desc outputs[16];
  size_t n_outputs;
} hs_model_config;

/* Fills cfg with defaults, then overlays ROOT/<model>/config.json when present. A malformed
 * config is HS_PARSE with the field named; a config leading out of the model's directory, one that
 * is not a regular file, or a "backend" that is a path is HS_VERIFY ("unsafe_path"); one over 1 MiB
 * is HS_LIMIT. The scanner additionally requires config.json.sig with --require-signature. */
int hs_repo_load_config(const char *root, const char *model, hs_model_config *cfg, hs_error *err);
/* The same for config text in memory (len bytes, need not be NUL-terminated). */
int hs_repo_parse_config(const char *text, size_t len, hs_model_config *cfg, hs_error *err);
/* Fills cfg with the defaults only. */
void hs_repo_config_defaults(hs_model_config *cfg);

/* ---- verification options (manifest + signature) ---- */
typedef struct hs_trusted_keys hs_trusted_keys; /* opaque: Ed25519 public keys and HMAC keys */

/* Reads key files (as written by `hotserve keygen`) into a new key set; free with hs_trusted_keys_free. */
int hs_trusted_keys_load(const char *const *paths, size_t n, hs_trusted_keys **out, hs_error *err);
void hs_trusted_keys_free(hs_trusted_keys *keys);

typedef struct hs_repo_options {
  bool require_signature;        /* refuse unsigned versions */
  const hs_trusted_keys *keys;   /* borrowed; may be NULL when !require_signature */
  int settle_ms;                 /* manifest-less versions count once unchanged this long; default 2000 */
  size_t max_file_bytes;         /* per-file limit; 0 = default (4 GiB) */
  size_t max_files;              /* per-version limit; 0 = default (1024) */
  /* For a loader that reads every version with hs_repo_read_version, which hashes the bytes it
   * loads: the scan then checks a manifest's signature, names and sizes but does not hash the
   * files (so the server hashes each new file once, not twice). A version is READY on that; when
   * the loader's read finds different bytes it calls hs_repo_recheck, which checks that version in
   * full at once as it would without this option (PENDING while its files still change,
   * INVALID once they have settled). */
  bool defer_content_check;
} hs_repo_options;

/* ---- discovery ---- */
typedef enum {
  HS_VERSION_READY,      /* complete: manifest matches (or settled) and the signature checks out */
  HS_VERSION_PENDING,    /* not complete yet (being copied, settling, manifest not written yet) */
  HS_VERSION_INVALID,    /* complete but refused: see reason/reason_code */
} hs_version_state;

typedef struct hs_repo_version {
  int64_t version;
  char dir[HS_PATH_MAX];           /* the version directory */
  char model_path[HS_PATH_MAX];    /* its model.onnx */
  char fingerprint[65];            /* hex SHA-256 naming the content (manifest hash, or a digest
                                      of the file list with sizes and mtimes): new content, new
                                      fingerprint; the same content, the same one */
  hs_version_state state;
  char reason_code[32];            /* for INVALID: "unsigned", "bad_signature", "unknown_key",
                                      "manifest_mismatch", "bad_manifest", "unsafe_path", "limit" */
  char reason[256];                /* human-readable */
  uint64_t total_bytes;            /* sum of the sizes of the version's files (a first estimate of
                                      the memory a load needs); 0 when it could not be listed */
  size_t n_files;                  /* files in the version directory, manifest included */
  double verify_ms;                /* time this scan spent listing, hashing and checking this
                                      version (near 0 when an unchanged version's verdict is reused) */
} hs_repo_version;

typedef struct hs_repo_model {
  char name[HS_NAME_MAX];
  hs_model_config config;
  int config_status;               /* HS_OK, or the error loading config.json (then reason below).
                                      When it is not HS_OK, versions is empty: the model's policy is
                                      unknown, so keep serving what is loaded and report the error. */
  char config_reason_code[32];     /* "bad_config", "unsafe_path", "limit", "io", or with signatures
                                      required "unsigned", "bad_signature", "unknown_key" */
  char config_error[256];
  /* The versions the policy selects, ascending. LATEST N selects the N highest READY versions plus
   * every higher-numbered version that is PENDING or INVALID (so its state can be reported); ALL
   * selects every version; SPECIFIC the listed ones that exist. A version missing from the list
   * is no longer wanted. */
  hs_repo_version *versions;
  size_t n_versions;
  /* LATEST N only: the newest READY versions below the selected ones (at most HS_REPO_FALLBACKS,
   * descending). Not selected; the loader serves them only while fewer than N selected versions
   * load, so a broken newest version never leaves the model down (start-up included). */
  hs_repo_version *fallbacks;      /* NULL when there are none */
  size_t n_fallbacks;
} hs_repo_model;

typedef struct hs_repo_snapshot {
  hs_repo_model *models;
  size_t n_models;
} hs_repo_snapshot;

/* A scanner remembers what it saw (for the settle interval of manifest-less versions and to
 * avoid re-hashing unchanged files). Not thread-safe: one thread scans. */
typedef struct hs_repo hs_repo;

int hs_repo_open(const char *root, const hs_repo_options *opts, hs_repo **out, hs_error *err);
void hs_repo_close(hs_repo *repo);

/* Scans the repository now. On success *out is a new snapshot the caller frees with
 * hs_repo_snapshot_free. Problems with one model or version are reported inside the snapshot,
 * never as a failure of the whole scan; only an unreadable root fails. */
int hs_repo_scan(hs_repo *repo, hs_repo_snapshot **out, hs_error *err);
void hs_repo_snapshot_free(hs_repo_snapshot *snap);

/* Checks one version directory now, as the scanner does but without its memory (no settle wait:
 * a version without a manifest is READY unless keys are required): manifest, files, signature.
 * keys may be NULL; with keys, a present signature must verify even when !require_signature.
 * Fills out (state, reason_code, reason, fingerprint, dir, model_path). Returns HS_OK when the
 * version is READY, HS_VERIFY when it is refused (reason in out), another error when dir cannot be
 * read. Thread-safe (no shared state): the loader may call it to re-check right before loading. */
int hs_repo_verify_version(const char *dir, bool require_signature, const hs_trusted_keys *keys,
                           hs_repo_version *out, hs_error *err);

/* True when code is one of the verification refusals above (reason_code of an INVALID version),
 * false for any other code (a load or warm-up failure named by serving/). One table: files.c. */
bool hs_repo_is_verify_reason(const char *code);

/* ---- reading a version once, for loading (read.c) ---- */
typedef struct hs_repo_file {
  char *path;  /* relative to the version folder, '/'-separated */
  void *data;  /* its bytes (a NUL follows the last one); NULL once released and unhashed no more */
  size_t len;
  bool to_hash;       /* its SHA-256 is still to be checked against sha256 (hs_repo_read_start) */
  uint8_t sha256[32]; /* the manifest's digest for it, when to_hash */
} hs_repo_file;

typedef struct hs__repo_check hs__repo_check; /* a hash running beside the load (read.c) */

typedef struct hs_repo_bytes {
  hs_repo_file *files;       /* every file of the version but the manifest and signature, by path */
  size_t n_files;
  const hs_repo_file *model; /* model.onnx, one of files */
  bool verified;             /* a manifest covered every byte (false: a version without one) */
  uint64_t bytes_read, bytes_hashed; /* bytes_hashed: final once hs_repo_bytes_check returned */
  double read_ms;            /* wall time of the read (and of the check, when it ran inline) */
  double hash_cpu_ms;        /* CPU time of the hash thread (0 when the hash ran inline) */
  double ring_wait_ms;       /* wall time the reader (the decoder) waited for the hash to free a ring
                                slot, set by hs_repo_bytes_check */
  double gate_wait_ms;       /* wall time its gated frees waited for the hash (hs_repo_bytes_gate_frees),
                                set by hs_repo_bytes_check */
  uint64_t bytes_hashed_beside; /* of bytes_hashed, those the hash thread hashed (all of them when
                                   one ran; 0 when the loading thread hashed them inline) */
  hs__repo_check *check;     /* the background hash (hs_repo_read_start), NULL when none runs */
  /* hs_repo_read_stream_start: model.onnx's bytes in pieces (its data stays NULL), else NULL */
  const hs_backend_stream *stream;
} hs_repo_bytes;

/* Reads every file of rv (a READY version of a scan; model_dir is the folder holding it, the bound
 * for its symlinks) into memory once and checks those very bytes: the signature over the manifest
 * bytes read (when require_signature, or when keys and a signature are present), then each buffer's
 * size and SHA-256 against the manifest. A version without a manifest must still have the listing
 * the scan settled on. What the caller loads from *out is thus exactly what was verified, however
 * the files change meanwhile. On success *out is the caller's (hs_repo_bytes_free). A refusal is
 * HS_VERIFY with reason_code set: a verification code of repo.h ("manifest_mismatch", ...) or
 * "changed" (the content is no longer what the scan decided on: new content the next scan names);
 * other errors (HS_IO, HS_NO_MEMORY, HS_NOT_FOUND without a model.onnx) leave reason_code "". */
/* After a load-time read found that a READY version's bytes do not match its manifest (with
 * defer_content_check): decides the version dir rv->dir of model `model` (whose folder is
 * model_dir) again at once, hashing its files in full as a scan without that option would, and
 * puts the verdict in *out: INVALID (manifest_mismatch) once the files have settled, PENDING while
 * they still change (a copy in progress; later scans keep checking it in full for as long as its
 * listing stays the same), READY when they match now. Later scans return the same verdict for the
 * same listing. Call from the scanning thread. */
void hs_repo_recheck(hs_repo *repo, const char *model, const char *model_dir, const hs_repo_version *rv,
                     hs_repo_version *out);

int hs_repo_read_version(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                         const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32], hs_error *err);

/* hs_repo_read_version in two halves, so that hashing overlaps the load. hs_repo_read_start reads
 * the files once and does every check but the files' SHA-256 (signature, listing, sizes) before it
 * returns; it then hashes the buffers it read on a thread of its own (inline when none can be
 * started). The caller may parse those same buffers meanwhile (read-only), but must not use what
 * it built from them, let alone serve it, before hs_repo_bytes_check returned HS_OK: that call
 * waits for the hash and gives its verdict (HS_VERIFY, "manifest_mismatch", as above). The bytes
 * parsed are thus the bytes hashed, whatever happens to the files. */
int hs_repo_read_start(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                       const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32], hs_error *err);
/* hs_repo_read_start without reading model.onnx whole: it is opened (its size checked) and its
 * bytes come through b->stream (hs_backend_stream, for the backend's load_stream): each call reads
 * the next piece into a small ring, and a thread of its own hashes the pieces behind the reader,
 * a buffer being refilled only once it hashed it (read.c, DESIGN); model->data stays NULL. The verdict covers the bytes
 * handed out, the file's size included (a file that shrank or grew meanwhile is "manifest_mismatch",
 * or "changed" without a manifest), and is known once the whole file was read: after the stream's
 * end, or, when the reader stops early, hs_repo_bytes_check reads the rest itself. The stream must
 * not be read after hs_repo_bytes_release or hs_repo_bytes_check, nor by two threads. */
int hs_repo_read_stream_start(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                              const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32],
                              hs_error *err);
/* hs_repo_read_stream_start that reads no other file whole either (external data: docs/REPOSITORY.md,
 * "Read once"): each file but model.onnx is listed with data NULL and its expected len, and its
 * bytes come, on demand, through hs_repo_open_file, once and in order, through a ring of their own
 * that the same hash thread hashes behind the reader (a piece handed out stays valid until the
 * next piece of any of these files is read).
 * hs_repo_bytes_check reads and hashes whatever was not read (files not opened, the rest of those
 * opened) and judges each file like model.onnx: size, growth, SHA-256. */
int hs_repo_read_stream_files_start(const char *model_dir, const hs_repo_version *rv, bool require_signature,
                                    const hs_trusted_keys *keys, hs_repo_bytes **out, char reason_code[32],
                                    hs_error *err);
/* The stream of a file of b read by hs_repo_read_stream_files_start (path as in b->files): at most once per
 * file (HS_INVALID_ARGUMENT the second time), from the thread that loads; valid until
 * hs_repo_bytes_check. A file that changed size since the scan is HS_VERIFY here already. */
int hs_repo_open_file(hs_repo_bytes *b, const char *path, const hs_backend_stream **out, hs_error *err);
/* The caller reads the files' data no more: it is freed now, or by the hash thread as soon as it is
 * done with it (data pointers are invalid after this call). Call at most once. It first waits until
 * the hash is done with the caller's buffers that the stream's read_into filled (settle), unless
 * frees are gated (below). */
void hs_repo_bytes_release(hs_repo_bytes *b);
/* Gates the calling thread's frees of weight blocks (base/wblock.h, hs_wblock_set_free_gate) on the
 * hash (on), or stops (off): while on, a block that holds bytes the stream's read_into put there is
 * freed only once the hash is done with them, and settle and hs_repo_bytes_release no longer wait
 * for the hash (the gate keeps their rule, block by block, so a compile may start before the hash
 * caught up). Only for a backend whose read_into buffers are weight blocks freed on this thread and
 * never written before they are freed (the built-in engine); off before hs_repo_bytes_check. */
void hs_repo_bytes_gate_frees(hs_repo_bytes *b, bool on);
/* Waits for the hash started by hs_repo_read_start; HS_OK when every file matched its manifest
 * entry (or there was nothing to hash). Further calls return the same verdict. */
int hs_repo_bytes_check(hs_repo_bytes *b, char reason_code[32], hs_error *err);
/* Waits for a hash still running, then frees b. */
void hs_repo_bytes_free(hs_repo_bytes *b);

/* ---- watching ---- */
typedef struct hs_watcher hs_watcher;

/* Starts a thread that calls on_change(user) (from the watcher thread) whenever something under
 * root may have changed: inotify events (debounced ~100 ms; only when use_inotify), every poll_ms
 * for NFS, and hs_watcher_kick. With use_inotify false no inotify instance is created at all
 * (polling only: NFS, or a tree with more directories than the watch limit). The callback should
 * only signal another thread. Errors reading the tree are logged and retried; the watcher never
 * stops on its own. */
int hs_watcher_start(const char *root, int poll_ms, bool use_inotify, void (*on_change)(void *user), void *user,
                     hs_watcher **out, hs_error *err);
/* Asks for an immediate on_change (SIGHUP, POST /v2/repository/index). Async-signal-safe. */
void hs_watcher_kick(hs_watcher *w);
/* Stops and joins the thread, then frees w. */
void hs_watcher_stop(hs_watcher *w);

#endif

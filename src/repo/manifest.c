/* manifest.c - the version manifest (path, size, SHA-256 of every file): parse, build, check,
 * and the whole check of one version directory (signature first, then manifest, then files).
 *
 * Format (docs/REPOSITORY.md): {"format":"hotserve-manifest/1","model":"resnet","version":3,
 * "files":[{"path":"model.onnx","size":123,"sha256":"<64 hex>"}, ...]} with entries sorted by path.
 * "model" and "version" bind the signed manifest to where it may be served: a copy under another
 * model or number is refused (wrong_binding), and with signatures required a manifest without
 * them (written before they existed) is refused too (unbound). The signature, when there
 * is one, covers the manifest file's exact bytes, so the reader checks it before parsing them.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "repo/repo_internal.h"

#define MANIFEST_FORMAT "hotserve-manifest/1"

static bool is_reserved(const char *rel) {
  return strcmp(rel, HS_REPO_MANIFEST_NAME) == 0 || strcmp(rel, HS_REPO_SIGNATURE_NAME) == 0;
}

/* A relative path that stays inside its directory: no leading '/', no empty, "." or ".."
 * component, no backslash or control characters. */
static bool safe_rel_path(const char *p, size_t len) {
  if (len == 0 || len >= HS__MAX_REL_PATH || p[0] == '/') return false;
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && ((unsigned char)p[i] < 0x20 || p[i] == '\\' || p[i] == 0x7f)) return false;
    if (i == len || p[i] == '/') {
      size_t n = i - start;
      if (n == 0) return false;
      if (n == 1 && p[start] == '.') return false;
      if (n == 2 && p[start] == '.' && p[start + 1] == '.') return false;
      start = i + 1;
    }
  }
  return true;
}

static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const hs__manifest_entry *)a)->path, ((const hs__manifest_entry *)b)->path);
}

void hs__manifest_free(hs__manifest *m) {
  if (!m) return;
  for (size_t i = 0; i < m->n; i++) free(m->entries[i].path);
  free(m->entries);
  m->entries = NULL;
  m->n = 0;
}

hs__reason hs__manifest_parse(const char *bytes, size_t len, size_t max_files, size_t max_file_bytes,
                              hs__manifest *m, hs__verdict *v) {
  memset(m, 0, sizeof *m);
  if (max_files == 0) max_files = HS__DEFAULT_MAX_FILES;
  if (max_file_bytes == 0) max_file_bytes = HS__DEFAULT_MAX_FILE_BYTES;
  if (len > HS__MAX_MANIFEST_BYTES)
    return hs__verdict_set(v, HS__R_LIMIT, "manifest is %zu bytes, over the limit of %zu", len,
                           HS__MAX_MANIFEST_BYTES);
  json_error_t jerr;
  json_t *root = json_loadb(bytes, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest is not JSON: line %d: %s", jerr.line,
                           jerr.text);
  hs__reason r = HS__R_NONE;
  json_t *format = json_object_get(root, "format");
  json_t *files = json_object_get(root, "files");
  const char *key;
  json_t *val;
  if (!json_is_object(root)) {
    r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest is not a JSON object");
    goto done;
  }
  json_object_foreach(root, key, val) {
    if (strcmp(key, "format") != 0 && strcmp(key, "files") != 0 && strcmp(key, "generator") != 0 &&
        strcmp(key, "model") != 0 && strcmp(key, "version") != 0) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest has an unknown field '%.64s'", key);
      goto done;
    }
  }
  if (!json_is_string(format) || strcmp(json_string_value(format), MANIFEST_FORMAT) != 0) {
    r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest \"format\" is not \"%s\"", MANIFEST_FORMAT);
    goto done;
  }
  if (!json_is_array(files)) {
    r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest \"files\" is not an array");
    goto done;
  }
  json_t *jmodel = json_object_get(root, "model"), *jversion = json_object_get(root, "version");
  if (jmodel || jversion) {
    if (!json_is_string(jmodel) || json_string_length(jmodel) == 0 ||
        json_string_length(jmodel) >= sizeof m->model ||
        strlen(json_string_value(jmodel)) != json_string_length(jmodel) || !json_is_integer(jversion) ||
        json_integer_value(jversion) < 1 || json_integer_value(jversion) > HS_REPO_VERSION_MAX) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST,
                          "manifest \"model\" must be a name and \"version\" a version number, both or neither");
      goto done;
    }
    snprintf(m->model, sizeof m->model, "%s", json_string_value(jmodel));
    m->version = (int64_t)json_integer_value(jversion);
  }
  size_t n = json_array_size(files);
  if (n > max_files) {
    r = hs__verdict_set(v, HS__R_LIMIT, "manifest lists %zu files, over the limit of %zu", n, max_files);
    goto done;
  }
  m->entries = calloc(n ? n : 1, sizeof *m->entries);
  if (!m->entries) {
    r = hs__verdict_set(v, HS__R_IO, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(files, i);
    json_t *path = json_object_get(e, "path");
    json_t *size = json_object_get(e, "size");
    json_t *sha = json_object_get(e, "sha256");
    if (!json_is_object(e) || json_object_size(e) != 3 || !json_is_string(path) ||
        !json_is_integer(size) || !json_is_string(sha)) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST,
                          "manifest entry %zu must be {\"path\": string, \"size\": integer, "
                          "\"sha256\": string}",
                          i);
      goto done;
    }
    const char *p = json_string_value(path);
    size_t plen = json_string_length(path);
    if (strlen(p) != plen || !safe_rel_path(p, plen)) {
      r = hs__verdict_set(v, HS__R_UNSAFE_PATH,
                          "manifest entry %zu: path '%.100s' is not a plain relative path inside "
                          "the version",
                          i, p);
      goto done;
    }
    if (is_reserved(p)) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest entry %zu names the manifest or signature", i);
      goto done;
    }
    json_int_t sz = json_integer_value(size);
    if (sz < 0) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest entry '%.100s': negative size", p);
      goto done;
    }
    if ((uint64_t)sz > max_file_bytes) {
      r = hs__verdict_set(v, HS__R_LIMIT, "manifest entry '%.100s': %lld bytes, over the limit of %zu",
                          p, (long long)sz, max_file_bytes);
      goto done;
    }
    hs__manifest_entry *me = &m->entries[m->n];
    if (!hs_unhex(json_string_value(sha), json_string_length(sha), me->sha256, 32)) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest entry '%.100s': sha256 is not 64 hex digits", p);
      goto done;
    }
    me->path = strdup(p);
    if (!me->path) {
      r = hs__verdict_set(v, HS__R_IO, "out of memory");
      goto done;
    }
    me->size = (uint64_t)sz;
    m->n++;
  }
  if (m->n > 1) qsort(m->entries, m->n, sizeof *m->entries, cmp_entry);
  for (size_t i = 1; i < m->n; i++) {
    if (strcmp(m->entries[i - 1].path, m->entries[i].path) == 0) {
      r = hs__verdict_set(v, HS__R_BAD_MANIFEST, "manifest lists '%.100s' twice", m->entries[i].path);
      goto done;
    }
  }
done:
  json_decref(root);
  if (r != HS__R_NONE) hs__manifest_free(m);
  return r;
}

int hs__manifest_build(const hs__listing *l, hs__hash_cache *c, const char *model, int64_t version, char **out,
                       size_t *len, hs_error *err) {
  *out = NULL;
  *len = 0;
  json_t *root = json_object();
  json_t *files = json_array();
  if (!root || !files) {
    json_decref(root);
    json_decref(files);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  json_object_set_new(root, "format", json_string(MANIFEST_FORMAT));
  json_object_set_new(root, "generator", json_string("hotserve 0.1.0"));
  if (model) {
    json_object_set_new(root, "model", json_string(model));
    json_object_set_new(root, "version", json_integer((json_int_t)version));
  }
  json_object_set_new(root, "files", files);
  for (size_t i = 0; i < l->n; i++) {
    const hs__file *f = &l->files[i];
    if (is_reserved(f->rel)) continue;
    uint8_t sha[32];
    char hex[65];
    int rc = hs__sha256_file(c, f, sha, err);
    if (rc != HS_OK) {
      json_decref(root);
      return rc;
    }
    hs_hex(sha, 32, hex);
    json_t *e = json_object();
    json_object_set_new(e, "path", json_string(f->rel));
    json_object_set_new(e, "size", json_integer((json_int_t)f->size));
    json_object_set_new(e, "sha256", json_string(hex));
    json_array_append_new(files, e);
  }
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (!text) return hs_error_set(err, HS_NO_MEMORY, "cannot format the manifest");
  size_t n = strlen(text);
  char *withnl = realloc(text, n + 2);
  if (!withnl) {
    free(text);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  withnl[n] = '\n';
  withnl[n + 1] = '\0';
  *out = withnl;
  *len = n + 1;
  return HS_OK;
}

hs__reason hs__manifest_check_sizes(const hs__manifest *m, const hs__listing *l, hs__verdict *v) {
  /* Both lists are sorted by path: walk them together. */
  size_t i = 0, j = 0;
  while (i < m->n || j < l->n) {
    if (j < l->n && is_reserved(l->files[j].rel)) {
      j++;
      continue;
    }
    int cmp = i >= m->n ? 1 : j >= l->n ? -1 : strcmp(m->entries[i].path, l->files[j].rel);
    if (cmp < 0)
      return hs__verdict_set(v, HS__R_MANIFEST_MISMATCH, "'%.100s' is in the manifest but missing",
                             m->entries[i].path);
    if (cmp > 0)
      return hs__verdict_set(v, HS__R_MANIFEST_MISMATCH, "'%.100s' is not in the manifest",
                             l->files[j].rel);
    if (m->entries[i].size != l->files[j].size)
      return hs__verdict_set(v, HS__R_MANIFEST_MISMATCH,
                             "'%.100s' is %llu bytes, the manifest says %llu", l->files[j].rel,
                             (unsigned long long)l->files[j].size,
                             (unsigned long long)m->entries[i].size);
    i++;
    j++;
  }
  return HS__R_NONE;
}

hs__reason hs__manifest_check(const hs__manifest *m, const hs__listing *l, hs__hash_cache *c,
                              hs__verdict *v) {
  hs__reason r = hs__manifest_check_sizes(m, l, v);
  if (r != HS__R_NONE) return r;
  /* Sizes and names match; now the bytes. */
  for (size_t i = 0, j = 0; i < m->n; i++, j++) {
    while (is_reserved(l->files[j].rel)) j++;
    uint8_t sha[32];
    hs_error err;
    hs_error_clear(&err);
    if (hs__sha256_file(c, &l->files[j], sha, &err) != HS_OK)
      return hs__verdict_set(v, HS__R_IO, "%s", err.message);
    if (memcmp(sha, m->entries[i].sha256, 32) != 0)
      return hs__verdict_set(v, HS__R_MANIFEST_MISMATCH, "'%.100s' does not match its SHA-256 in the manifest",
                             l->files[j].rel);
  }
  return HS__R_NONE;
}

hs__reason hs__check_version(const char *dir, const hs__listing *l, const hs__check_opts *o,
                             bool *has_manifest, char fingerprint[65], hs__verdict *v) {
  fingerprint[0] = '\0';
  const hs__file *mf = hs__listing_find(l, HS_REPO_MANIFEST_NAME);
  const hs__file *sf = hs__listing_find(l, HS_REPO_SIGNATURE_NAME);
  *has_manifest = mf != NULL;
  if (!mf) {
    if (o->require_signature)
      return hs__verdict_set(v, HS__R_UNSIGNED, "no %s (unsigned version)", HS_REPO_MANIFEST_NAME);
    return HS__R_NONE;
  }
  char *mbytes = NULL, *sbytes = NULL;
  size_t mlen = 0, slen = 0;
  hs_error err;
  hs_error_clear(&err);
  hs__reason r = HS__R_NONE;
  int rc = hs_file_read(mf->real, HS__MAX_MANIFEST_BYTES, &mbytes, &mlen, &err);
  if (rc != HS_OK) {
    r = hs__verdict_set(v, rc == HS_LIMIT ? HS__R_LIMIT : rc == HS_VERIFY ? HS__R_UNSAFE_PATH : HS__R_IO, "%s", err.message);
    goto done;
  }
  if (sf) {
    rc = hs_file_read(sf->real, HS__MAX_SIGNATURE_BYTES, &sbytes, &slen, &err);
    if (rc != HS_OK) {
      r = hs__verdict_set(v, rc == HS_LIMIT ? HS__R_LIMIT : rc == HS_VERIFY ? HS__R_UNSAFE_PATH : HS__R_IO, "%s", err.message);
      goto done;
    }
  }
  /* Signature before a single byte of the manifest is interpreted. */
  if (o->require_signature && !sf) {
    r = hs__verdict_set(v, HS__R_UNSIGNED, "no %s (unsigned version)", HS_REPO_SIGNATURE_NAME);
    goto done;
  }
  if (sf && (o->require_signature || o->keys)) {
    r = hs__verify_signature(o->keys, mbytes, mlen, sbytes, slen, v);
    if (r != HS__R_NONE) goto done;
  }
  hs__manifest m;
  r = hs__manifest_parse(mbytes, mlen, o->max_files, o->max_file_bytes, &m, v);
  if (r != HS__R_NONE) goto done;
  /* Bound to where it lies: a signed version copied under another model or number is a replay. */
  if (m.version != 0 && ((o->model && strcmp(o->model, m.model) != 0) || (o->version && o->version != m.version))) {
    r = hs__verdict_set(v, HS__R_WRONG_BINDING,
                        "the manifest was written for model '%.100s' version %lld, not for model '%.100s' "
                        "version %lld (a copy of another version is refused)",
                        m.model, (long long)m.version, o->model ? o->model : m.model,
                        (long long)(o->version ? o->version : m.version));
    hs__manifest_free(&m);
    goto done;
  }
  if (m.version == 0 && o->require_signature && o->model) {
    r = hs__verdict_set(v, HS__R_UNBOUND,
                        "the signed manifest names no model and version (written by an older hotserve): "
                        "sign the version again with `hotserve sign` or publish it anew");
    hs__manifest_free(&m);
    goto done;
  }
  r = o->sizes_only ? hs__manifest_check_sizes(&m, l, v) : hs__manifest_check(&m, l, o->cache, v);
  hs__manifest_free(&m);
  if (r == HS__R_NONE) {
    /* The content is named by what was signed and verified: manifest + signature bytes. */
    size_t total = mlen + slen;
    char *both = malloc(total ? total : 1);
    if (!both) {
      r = hs__verdict_set(v, HS__R_IO, "out of memory");
      goto done;
    }
    memcpy(both, mbytes, mlen);
    if (slen) memcpy(both + mlen, sbytes, slen);
    uint8_t sha[32];
    hs_sha256(both, total, sha);
    free(both);
    hs_hex(sha, 32, fingerprint);
  }
done:
  (void)dir;
  free(mbytes);
  free(sbytes);
  return r;
}

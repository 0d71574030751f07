/* keys.c - signing keys and signatures over manifests: Ed25519 and HMAC-SHA256 via OpenSSL 3.
 *
 * Key files: Ed25519 private keys are PKCS#8 PEM (mode 0600), public keys SubjectPublicKeyInfo PEM;
 * an HMAC key file is one line "hotserve-hmac-sha256 <64 hex digits>" (mode 0600). A key's id is
 * the first 8 bytes of SHA-256 over its raw public key (Ed25519) or over a fixed label and the
 * secret (HMAC), in hex; a signature names its key by that id, so "unknown key" and "bad
 * signature" can be told apart. Key material is never printed and is cleansed when freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "base/log.h"
#include "repo/repo_internal.h"

#define HMAC_MAGIC "hotserve-hmac-sha256 "
#define HMAC_KEY_BYTES 32
#define SIG_FORMAT "hotserve-signature/1"

struct hs__key {
  hs__key_kind kind;
  EVP_PKEY *pkey;                  /* Ed25519 */
  uint8_t secret[HMAC_KEY_BYTES];  /* HMAC */
  char id[17];
};

struct hs_trusted_keys {
  hs__key **keys;
  size_t n;
};

hs__key_kind hs__key_kind_of(const hs__key *k) { return k->kind; }
const char *hs__key_id(const hs__key *k) { return k->id; }

void hs__key_free(hs__key *k) {
  if (!k) return;
  EVP_PKEY_free(k->pkey);
  OPENSSL_cleanse(k->secret, sizeof k->secret);
  free(k);
}

static void set_id_from(hs__key *k, const void *a, size_t alen, const void *b, size_t blen) {
  uint8_t sha[32];
  hs_sha256_ctx *ctx = hs_sha256_begin();
  hs_sha256_update(ctx, a, alen);
  if (b) hs_sha256_update(ctx, b, blen);
  hs_sha256_end(ctx, sha);
  hs_hex(sha, 8, k->id);
}

static int set_ed25519_id(hs__key *k, hs_error *err) {
  uint8_t raw[32];
  size_t rawlen = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &rawlen) != 1 || rawlen != 32)
    return hs_error_set(err, HS_PARSE, "cannot read the Ed25519 public key");
  set_id_from(k, raw, rawlen, NULL, 0);
  return HS_OK;
}

int hs__key_load(const char *path, hs__key **out, hs_error *err) {
  *out = NULL;
  char *text = NULL;
  size_t len = 0;
  int rc = hs_file_read(path, HS__MAX_KEY_BYTES, &text, &len, err);
  if (rc != HS_OK) return rc;
  hs__key *k = calloc(1, sizeof *k);
  if (!k) {
    OPENSSL_cleanse(text, len);
    free(text);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  if (strncmp(text, HMAC_MAGIC, strlen(HMAC_MAGIC)) == 0) {
    const char *hex = text + strlen(HMAC_MAGIC);
    size_t hlen = strcspn(hex, "\r\n");
    k->kind = HS__KEY_HMAC;
    if (!hs_unhex(hex, hlen, k->secret, HMAC_KEY_BYTES)) {
      rc = hs_error_set(err, HS_PARSE, "%s: malformed HMAC key file", path);
    } else {
      set_id_from(k, "hotserve-hmac-key-id", 20, k->secret, HMAC_KEY_BYTES);
      struct stat st;
      if (stat(path, &st) == 0 && (st.st_mode & 077))
        HS_LOGW("%s: HMAC key file is readable by group or others (chmod 600 it)", path);
    }
  } else {
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (strstr(text, "-----BEGIN PUBLIC KEY-----")) {
      k->kind = HS__KEY_ED25519_PUBLIC;
      k->pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    } else if (strstr(text, "-----BEGIN PRIVATE KEY-----")) {
      k->kind = HS__KEY_ED25519_PRIVATE;
      k->pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    }
    BIO_free(bio);
    if (!k->pkey) {
      rc = hs_error_set(err, HS_PARSE,
                        "%s: not a key written by `hotserve keygen` (Ed25519 PEM or HMAC key file)", path);
    } else if (EVP_PKEY_get_id(k->pkey) != EVP_PKEY_ED25519) {
      rc = hs_error_set(err, HS_UNSUPPORTED, "%s: only Ed25519 keys are supported", path);
    } else {
      rc = set_ed25519_id(k, err);
      if (rc != HS_OK) hs_error_prefix(err, "%s", path);
    }
  }
  OPENSSL_cleanse(text, len);
  free(text);
  if (rc != HS_OK) {
    hs__key_free(k);
    return rc;
  }
  *out = k;
  return HS_OK;
}

int hs_trusted_keys_load(const char *const *paths, size_t n, hs_trusted_keys **out, hs_error *err) {
  *out = NULL;
  hs_trusted_keys *t = calloc(1, sizeof *t);
  if (!t || (n && !(t->keys = calloc(n, sizeof *t->keys)))) {
    free(t);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    hs__key *k = NULL;
    int rc = hs__key_load(paths[i], &k, err);
    if (rc == HS_OK && k->kind == HS__KEY_ED25519_PRIVATE) {
      hs__key_free(k);
      rc = hs_error_set(err, HS_INVALID_ARGUMENT,
                        "%s is an Ed25519 private key: trust its public key (the .pub file); the "
                        "server never needs a private key",
                        paths[i]);
    }
    if (rc != HS_OK) {
      hs_trusted_keys_free(t);
      return rc;
    }
    t->keys[t->n++] = k;
  }
  *out = t;
  return HS_OK;
}

void hs_trusted_keys_free(hs_trusted_keys *keys) {
  if (!keys) return;
  for (size_t i = 0; i < keys->n; i++) hs__key_free(keys->keys[i]);
  free(keys->keys);
  free(keys);
}

/* Creates path with O_EXCL and the given mode; NULL (err set) when it exists or fails. */
static FILE *create_new(const char *path, int mode, hs_error *err) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    hs_error_set(err, errno == EEXIST ? HS_INVALID_ARGUMENT : HS_IO, "%s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (refusing to overwrite a key)" : "");
    return NULL;
  }
  fchmod(fd, mode);
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    hs_error_set(err, HS_IO, "%s: %s", path, strerror(errno));
  }
  return f;
}

static int close_synced(FILE *f, const char *path, hs_error *err) {
  int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  return bad ? hs_error_set(err, HS_IO, "%s: write failed", path) : HS_OK;
}

int hs__keygen(const char *name, bool hmac, hs_error *err) {
  char key_path[HS_PATH_MAX], pub_path[HS_PATH_MAX];
  if (snprintf(key_path, sizeof key_path, "%s.key", name) >= (int)sizeof key_path ||
      snprintf(pub_path, sizeof pub_path, "%s.pub", name) >= (int)sizeof pub_path)
    return hs_error_set(err, HS_LIMIT, "key name too long");
  if (hmac) {
    uint8_t secret[HMAC_KEY_BYTES];
    char hex[2 * HMAC_KEY_BYTES + 1];
    if (RAND_bytes(secret, sizeof secret) != 1) return hs_error_set(err, HS_INTERNAL, "no randomness");
    FILE *f = create_new(key_path, 0600, err);
    if (!f) return err ? err->code : HS_IO;
    hs_hex(secret, sizeof secret, hex);
    fprintf(f, "%s%s\n", HMAC_MAGIC, hex);
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(hex, sizeof hex);
    return close_synced(f, key_path, err);
  }
  if (access(pub_path, F_OK) == 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s exists (refusing to overwrite a key)", pub_path);
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (!pkey) return hs_error_set(err, HS_INTERNAL, "Ed25519 key generation failed");
  FILE *f = create_new(key_path, 0600, err);
  if (!f) {
    EVP_PKEY_free(pkey);
    return err ? err->code : HS_IO;
  }
  bool wrote_pub = false; /* only files this call created are removed on failure */
  int ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
  int rc = close_synced(f, key_path, err);
  if (rc == HS_OK && !ok) rc = hs_error_set(err, HS_IO, "%s: cannot write the key", key_path);
  if (rc == HS_OK) {
    f = create_new(pub_path, 0644, err);
    if (!f) {
      rc = err ? err->code : HS_IO;
    } else {
      wrote_pub = true;
      ok = PEM_write_PUBKEY(f, pkey) == 1;
      rc = close_synced(f, pub_path, err);
      if (rc == HS_OK && !ok) rc = hs_error_set(err, HS_IO, "%s: cannot write the key", pub_path);
    }
  }
  if (rc != HS_OK) {
    unlink(key_path);
    if (wrote_pub) unlink(pub_path);
  }
  EVP_PKEY_free(pkey);
  return rc;
}

static int hmac_sha256(const uint8_t *key, const void *msg, size_t len, uint8_t out[32]) {
  unsigned int n = 0;
  return HMAC(EVP_sha256(), key, HMAC_KEY_BYTES, msg, len, out, &n) != NULL && n == 32 ? 0 : -1;
}

int hs__sign(const hs__key *k, const void *msg, size_t len, char **out, size_t *out_len, hs_error *err) {
  *out = NULL;
  *out_len = 0;
  uint8_t sig[64];
  size_t siglen = sizeof sig;
  const char *scheme;
  if (k->kind == HS__KEY_HMAC) {
    scheme = "hmac-sha256";
    if (hmac_sha256(k->secret, msg, len, sig) != 0) return hs_error_set(err, HS_INTERNAL, "HMAC failed");
    siglen = 32;
  } else if (k->kind == HS__KEY_ED25519_PRIVATE) {
    scheme = "ed25519";
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
             EVP_DigestSign(ctx, sig, &siglen, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) return hs_error_set(err, HS_INTERNAL, "Ed25519 signing failed");
  } else {
    return hs_error_set(err, HS_INVALID_ARGUMENT,
                        "a public key cannot sign: give the private key (NAME.key) or an HMAC key");
  }
  char hex[129];
  hs_hex(sig, siglen, hex);
  json_t *root = json_pack("{s:s, s:s, s:s, s:s}", "format", SIG_FORMAT, "scheme", scheme, "key_id",
                           k->id, "signature", hex);
  char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref(root);
  if (!text) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  size_t n = strlen(text);
  char *t2 = realloc(text, n + 2);
  if (!t2) {
    free(text);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  t2[n] = '\n';
  t2[n + 1] = '\0';
  *out = t2;
  *out_len = n + 1;
  return HS_OK;
}

hs__reason hs__verify_signature(const hs_trusted_keys *keys, const void *msg, size_t len,
                                const char *sig, size_t sig_len, hs__verdict *v) {
  json_error_t jerr;
  json_t *root = json_loadb(sig, sig_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return hs__verdict_set(v, HS__R_BAD_SIGNATURE, "signature file is not JSON: %s", jerr.text);
  hs__reason r = HS__R_NONE;
  json_t *format = json_object_get(root, "format");
  json_t *scheme = json_object_get(root, "scheme");
  json_t *key_id = json_object_get(root, "key_id");
  json_t *value = json_object_get(root, "signature");
  if (!json_is_object(root) || json_object_size(root) != 4 || !json_is_string(format) ||
      strcmp(json_string_value(format), SIG_FORMAT) != 0 || !json_is_string(scheme) ||
      !json_is_string(key_id) || !json_is_string(value)) {
    r = hs__verdict_set(v, HS__R_BAD_SIGNATURE,
                        "signature file must be {\"format\":\"%s\",\"scheme\",\"key_id\",\"signature\"}",
                        SIG_FORMAT);
    goto done;
  }
  const char *sch = json_string_value(scheme);
  hs__key_kind want;
  size_t want_len;
  if (strcmp(sch, "ed25519") == 0) {
    want = HS__KEY_ED25519_PUBLIC;
    want_len = 64;
  } else if (strcmp(sch, "hmac-sha256") == 0) {
    want = HS__KEY_HMAC;
    want_len = 32;
  } else {
    r = hs__verdict_set(v, HS__R_BAD_SIGNATURE, "unknown signature scheme '%.32s'", sch);
    goto done;
  }
  uint8_t bytes[64];
  if (!hs_unhex(json_string_value(value), json_string_length(value), bytes, want_len)) {
    r = hs__verdict_set(v, HS__R_BAD_SIGNATURE, "%s signature is not %zu hex digits", sch, 2 * want_len);
    goto done;
  }
  const hs__key *k = NULL;
  for (size_t i = 0; keys && i < keys->n; i++) {
    if (keys->keys[i]->kind == want && strcmp(keys->keys[i]->id, json_string_value(key_id)) == 0) {
      k = keys->keys[i];
      break;
    }
  }
  if (!k) {
    r = hs__verdict_set(v, HS__R_UNKNOWN_KEY, "signed by %s key %.16s, which is not a trusted key", sch,
                        json_string_value(key_id));
    goto done;
  }
  bool ok;
  if (want == HS__KEY_HMAC) {
    uint8_t mac[32];
    ok = hmac_sha256(k->secret, msg, len, mac) == 0 && CRYPTO_memcmp(mac, bytes, 32) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
  } else {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
         EVP_DigestVerify(ctx, bytes, 64, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
  }
  if (!ok)
    r = hs__verdict_set(v, HS__R_BAD_SIGNATURE, "%s signature by key %s does not match the manifest", sch,
                        k->id);
done:
  json_decref(root);
  return r;
}

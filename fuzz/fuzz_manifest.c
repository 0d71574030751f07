/* fuzz_manifest.c - libFuzzer target for the manifest and signature readers.
 *
 * Input: manifest bytes, optionally followed by a NUL byte and signature-file bytes. Each input is
 * parsed as a manifest and its signature checked against a fixed set of trusted keys (an Ed25519
 * public key and an HMAC key, made once at start-up in a temporary directory). Nothing may crash,
 * leak or read out of bounds; every outcome must be a reason code. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repo/repo_internal.h"

static hs_trusted_keys *g_keys;

/* True when some '/'-separated component of p is exactly "..". */
static int has_dotdot(const char *p) {
  for (const char *c = p; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL)
    if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == '\0')) return 1;
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char dir[] = "/tmp/hs-fuzz-keys-XXXXXX";
  if (!mkdtemp(dir)) abort();
  char ed[256], hm[256], ed_pub[256], ed_key[256], hm_key[256];
  snprintf(ed, sizeof ed, "%s/ed", dir);
  snprintf(hm, sizeof hm, "%s/hm", dir);
  snprintf(ed_pub, sizeof ed_pub, "%s.pub", ed);
  snprintf(ed_key, sizeof ed_key, "%s.key", ed);
  snprintf(hm_key, sizeof hm_key, "%s.key", hm);
  hs_error err;
  if (hs__keygen(ed, false, &err) != HS_OK || hs__keygen(hm, true, &err) != HS_OK) abort();
  const char *paths[] = {ed_pub, hm_key};
  if (hs_trusted_keys_load(paths, 2, &g_keys, &err) != HS_OK) abort();
  unlink(ed_pub);
  unlink(ed_key);
  unlink(hm_key);
  rmdir(dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t mlen = nul ? (size_t)(nul - data) : size;
  const char *sig = nul ? (const char *)nul + 1 : NULL;
  size_t slen = nul ? size - mlen - 1 : 0;
  hs__verdict v = {0};
  if (sig) {
    hs__reason r = hs__verify_signature(g_keys, data, mlen, sig, slen, &v);
    if (r != HS__R_NONE && r != HS__R_BAD_SIGNATURE && r != HS__R_UNKNOWN_KEY) abort();
  }
  hs__manifest m;
  hs__reason r = hs__manifest_parse((const char *)data, mlen, 64, 1 << 20, &m, &v);
  if (r == HS__R_NONE) {
    /* A parsed manifest holds only safe, unique, sorted relative paths. */
    for (size_t i = 0; i < m.n; i++) {
      if (m.entries[i].path[0] == '/' || has_dotdot(m.entries[i].path)) abort();
      if (i && strcmp(m.entries[i - 1].path, m.entries[i].path) >= 0) abort();
    }
    hs__manifest_free(&m);
  } else if (hs__reason_code(r)[0] == '\0') {
    abort();
  }
  return 0;
}

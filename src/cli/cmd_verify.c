/* cmd_verify.c - `hotserve verify`: check a version directory as the server would, naming the reason. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "repo/repo.h"
#include "repo/repo_internal.h"

#define MAX_KEYS 64

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve verify DIR [--trusted-key FILE]...\n"
          "\n"
          "Checks a version directory exactly as `hotserve serve --require-signature` does before it\n"
          "parses a byte of the model: the signature over " HS_REPO_MANIFEST_NAME " must come from a\n"
          "trusted key, and every file below DIR must match the manifest (no file missing, changed\n"
          "or extra).\n"
          "\n"
          "  --trusted-key FILE  an Ed25519 public key (NAME.pub) or an HMAC key file; repeatable.\n"
          "                      Without any, only the manifest is checked (the signature is not).\n"
          "\n"
          "When DIR is named MODEL/VERSION, the manifest must name that model and version (a signed\n"
          "version copied elsewhere is refused); with trusted keys a manifest naming none is refused.\n"
          "\n"
          "Exit status: 0 when DIR verifies; 1 when it does not, with the reason on stderr as\n"
          "  DIR: REASON: message   where REASON is one of unsigned, bad_signature, unknown_key,\n"
          "  manifest_mismatch, bad_manifest, unsafe_path, limit, wrong_binding, unbound; 2 on a\n"
          "  usage error.\n");
}

int hs_cmd_verify(int argc, char **argv) {
  const char *dir;
  const char *keys[MAX_KEYS];
  size_t n_keys = 0;
  static const struct option opts[] = {
      {"trusted-key", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'}, {0}};
  hs_cli_getopt_reset();
  int status;
  for (int c; (c = hs_cli_next_option("verify", argc, argv, ":h", opts, usage, &status)) != -1;) {
    if (c == HS_CLI_EXIT) {
      return status;
    } else if (c == 'k') {
      if (n_keys == MAX_KEYS) {
        fprintf(stderr, "hotserve verify: at most %d trusted keys\n", MAX_KEYS);
        return 2;
      }
      keys[n_keys++] = optarg;
    }
  }
  if (hs_cli_one_operand("verify", "DIR", argc, argv, usage, &dir)) return 2;
  hs_error err;
  hs_error_clear(&err);
  hs_trusted_keys *tk = NULL;
  if (n_keys && hs_trusted_keys_load(keys, n_keys, &tk, &err) != HS_OK) {
    fprintf(stderr, "hotserve verify: %s\n", err.message);
    return 2;
  }
  char manifest[4096];
  struct stat st;
  snprintf(manifest, sizeof manifest, "%s/%s", dir, HS_REPO_MANIFEST_NAME);
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "hotserve verify: %s: not a directory\n", dir);
    status = 1;
  } else if (lstat(manifest, &st) != 0) {
    fprintf(stderr, "hotserve verify: %s: unsigned: no %s (run `hotserve sign`)\n", dir, HS_REPO_MANIFEST_NAME);
    status = 1;
  } else {
    hs_repo_version v;
    int rc = hs_repo_verify_version(dir, n_keys > 0, tk, &v, &err);
    if (rc == HS_OK) {
      /* Name what the manifest is bound to (it verified: its bytes are known good). */
      char binding[HS_NAME_MAX + 64] = "not bound to a model and version";
      char *text = NULL;
      size_t len = 0;
      hs__manifest m;
      hs__verdict vd = {0};
      if (hs_file_read(manifest, HS__MAX_MANIFEST_BYTES, &text, &len, NULL) == HS_OK &&
          hs__manifest_parse(text, len, 0, 0, &m, &vd) == HS__R_NONE) {
        if (m.version) snprintf(binding, sizeof binding, "for model %s version %lld", m.model, (long long)m.version);
        hs__manifest_free(&m);
      }
      free(text);
      printf("%s: ok (manifest matches%s; %s; fingerprint %.16s)\n", dir,
             n_keys ? ", signed by a trusted key" : "; signature not checked", binding, v.fingerprint);
      status = 0;
    } else if (rc == HS_VERIFY) {
      fprintf(stderr, "hotserve verify: %s: %s: %s\n", dir, v.reason_code, v.reason);
      status = 1;
    } else {
      fprintf(stderr, "hotserve verify: %s\n", err.message);
      status = 1;
    }
  }
  hs_trusted_keys_free(tk);
  return status;
}

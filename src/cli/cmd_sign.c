/* cmd_sign.c - `hotserve sign`: write a version directory's manifest and signature, or a model's
 * config.json signature. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "repo/publish.h"
#include "repo/repo.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve sign DIR [--key FILE] [--model NAME --version N]\n"
          "       hotserve sign MODEL/config.json --key FILE [--model NAME]\n"
          "\n"
          "Writes DIR/" HS_REPO_MANIFEST_NAME " (every file below DIR with its size and SHA-256, and the\n"
          "model and version it is for) and, with --key, DIR/" HS_REPO_SIGNATURE_NAME " (a signature over\n"
          "the manifest's bytes). A signed version is served only as that model and version: a copy\n"
          "under another model or number is refused.\n"
          "\n"
          "  --key FILE      an Ed25519 private key (NAME.key from `hotserve keygen NAME`) or an HMAC\n"
          "                  key (from `hotserve keygen --hmac NAME`). Without it only the manifest is\n"
          "                  written (enough for a server without --require-signature).\n"
          "  --model NAME    the model the version is for; default: DIR's parent directory's name\n"
          "  --version N     the version number; default: DIR's name, when it is a number\n"
          "\n"
          "Given a model's config.json, writes " HS_REPO_CONFIG_SIGNATURE_NAME " beside it (needed by a\n"
          "server with --require-signature, which refuses an unsigned config.json).\n"
          "\n"
          "Sign a directory that is not being served yet; to add a version to a live repository,\n"
          "`hotserve publish` copies, signs and commits it atomically in one step.\n"
          "Check the result with `hotserve verify DIR --trusted-key NAME.pub`.\n");
}

int hs_cmd_sign(int argc, char **argv) {
  const char *dir, *key = NULL, *model = NULL, *ver = NULL;
  static const struct option opts[] = {{"key", required_argument, NULL, 'k'},
                                       {"model", required_argument, NULL, 'm'},
                                       {"version", required_argument, NULL, 'v'},
                                       {"help", no_argument, NULL, 'h'},
                                       {0}};
  hs_cli_getopt_reset();
  int status;
  for (int c; (c = hs_cli_next_option("sign", argc, argv, ":h", opts, usage, &status)) != -1;) {
    if (c == HS_CLI_EXIT) {
      return status;
    } else if (c == 'k') {
      key = optarg;
    } else if (c == 'm') {
      model = optarg;
    } else if (c == 'v') {
      ver = optarg;
    }
  }
  if (hs_cli_one_operand("sign", "DIR", argc, argv, usage, &dir)) return 2;
  int64_t version = 0;
  if (ver && hs_cli_parse_version("sign", ver, &version)) return 2;
  hs_error err;
  hs_error_clear(&err);
  struct stat st;
  if (stat(dir, &st) == 0 && S_ISREG(st.st_mode)) {
    if (hs_repo_sign_config(dir, key, model, &err) != HS_OK) {
      fprintf(stderr, "hotserve sign: %s\n", err.message);
      return 1;
    }
    printf("%s: wrote %s\n", dir, HS_REPO_CONFIG_SIGNATURE_NAME);
    return 0;
  }
  int rc;
  if (model || version) {
    if (!model || !version) {
      fprintf(stderr, "hotserve sign: give --model and --version together\n");
      return 2;
    }
    rc = hs_repo_sign_dir_as(dir, key, model, version, &err);
  } else {
    rc = hs_repo_sign_dir(dir, key, &err);
  }
  if (rc != HS_OK) {
    fprintf(stderr, "hotserve sign: %s\n", err.message);
    return 1;
  }
  printf("%s: wrote %s%s\n", dir, HS_REPO_MANIFEST_NAME, key ? " and " HS_REPO_SIGNATURE_NAME : "");
  return 0;
}

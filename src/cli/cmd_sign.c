/* cmd_sign.c - `hotserve sign`: write a version directory's manifest and signature. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "repo/publish.h"
#include "repo/repo.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve sign DIR [--key FILE]\n"
          "\n"
          "Writes DIR/" HS_REPO_MANIFEST_NAME " (every file below DIR with its size and SHA-256) and,\n"
          "with --key, DIR/" HS_REPO_SIGNATURE_NAME " (a signature over the manifest's bytes).\n"
          "\n"
          "  --key FILE   an Ed25519 private key (NAME.key from `hotserve keygen NAME`) or an HMAC\n"
          "               key (from `hotserve keygen --hmac NAME`). Without it only the manifest is\n"
          "               written (enough for a server without --require-signature).\n"
          "\n"
          "Sign a directory that is not being served yet; to add a version to a live repository,\n"
          "`hotserve publish` copies, signs and commits it atomically in one step.\n"
          "Check the result with `hotserve verify DIR --trusted-key NAME.pub`.\n");
}

int hs_cmd_sign(int argc, char **argv) {
  const char *dir = NULL, *key = NULL;
  static const struct option opts[] = {{"key", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'}, {0}};
  hs_cli_getopt_reset();
  for (int prev = optind, c; (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1; prev = optind) {
    if (c == 'h') {
      usage(stdout);
      return 0;
    } else if (c == 'k') {
      key = optarg;
    } else {
      hs_cli_option_error("sign", c, argc, argv, prev);
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) dir = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "hotserve sign: one DIR only\n");
    return 2;
  }
  if (!dir) {
    usage(stderr);
    return 2;
  }
  hs_error err;
  hs_error_clear(&err);
  if (hs_repo_sign_dir(dir, key, &err) != HS_OK) {
    fprintf(stderr, "hotserve sign: %s\n", err.message);
    return 1;
  }
  printf("%s: wrote %s%s\n", dir, HS_REPO_MANIFEST_NAME, key ? " and " HS_REPO_SIGNATURE_NAME : "");
  return 0;
}

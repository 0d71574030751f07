/* cmd_publish.c - `hotserve publish`: add a version to a model repository atomically. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "repo/publish.h"
#include "repo/repo.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve publish SRC_DIR REPO/MODEL [--version N] [--key FILE]\n"
          "\n"
          "Adds SRC_DIR (model.onnx plus any external-data files) to a model repository as a new\n"
          "version, so that a running `hotserve serve` sees it complete or not at all:\n"
          "  1. copies SRC_DIR into REPO/MODEL/.staging-XXXXXX (same filesystem; ignored by servers),\n"
          "     hashing each byte as it is written; a source file that changes meanwhile is refused,\n"
          "  2. fsyncs every file and directory,\n"
          "  3. writes " HS_REPO_MANIFEST_NAME " (and " HS_REPO_SIGNATURE_NAME " with --key) last,\n"
          "  4. renames the staging directory to REPO/MODEL/N in one step (also atomic on NFS).\n"
          "\n"
          "  --version N  the version number (a positive integer); default: one above the highest\n"
          "               version present; at most 999999999999999999 (18 digits, the most a server\n"
          "               reads). An existing version is never overwritten.\n"
          "  --key FILE   sign with an Ed25519 private key (NAME.key) or an HMAC key file, as made\n"
          "               by `hotserve keygen`; needed when the server runs --require-signature.\n"
          "\n"
          "REPO/MODEL is created when missing. Prints the new version's directory on success.\n"
          "Example: hotserve publish ./build/resnet-v3 /models/resnet --key release.key\n");
}

int hs_cmd_publish(int argc, char **argv) {
  const char *pos[2] = {NULL, NULL};
  int n_pos = 0;
  const char *key = NULL, *ver = NULL;
  static const struct option opts[] = {
      {"key", required_argument, NULL, 'k'}, {"version", required_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'}, {0}};
  hs_cli_getopt_reset();
  int status;
  for (int c; (c = hs_cli_next_option("publish", argc, argv, ":h", opts, usage, &status)) != -1;) {
    if (c == HS_CLI_EXIT) {
      return status;
    } else if (c == 'k') {
      key = optarg;
    } else if (c == 'v') {
      ver = optarg;
    }
  }
  for (; optind < argc; optind++) {
    if (n_pos == 2) {
      fprintf(stderr, "hotserve publish: too many arguments\n");
      return 2;
    }
    pos[n_pos++] = argv[optind];
  }
  if (n_pos != 2) {
    usage(stderr);
    return 2;
  }
  int64_t version = 0;
  if (ver && hs_cli_parse_version("publish", ver, &version)) return 2;
  hs_error err;
  hs_error_clear(&err);
  int64_t used = 0;
  if (hs_repo_publish(pos[0], pos[1], version, key, &used, &err) != HS_OK) {
    fprintf(stderr, "hotserve publish: %s\n", err.message);
    return 1;
  }
  printf("%s/%lld\n", pos[1], (long long)used);
  return 0;
}

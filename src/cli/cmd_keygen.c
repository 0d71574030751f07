/* cmd_keygen.c - `hotserve keygen`: make an Ed25519 signing key pair or an HMAC shared key. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "repo/publish.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve keygen [--hmac] NAME\n"
          "\n"
          "Makes a key for signing model versions (see `hotserve sign` and `hotserve publish`).\n"
          "\n"
          "  hotserve keygen NAME         writes an Ed25519 key pair:\n"
          "                                 NAME.key  private key (PEM, mode 0600): keep it with the publisher\n"
          "                                 NAME.pub  public key: give it to the server with --trusted-key\n"
          "  hotserve keygen --hmac NAME  writes NAME.key, a random 256-bit HMAC-SHA256 key (mode 0600)\n"
          "                               that both signs and verifies: publisher and server share it\n"
          "\n"
          "Existing files are never overwritten. Key material is never printed.\n"
          "Example:\n"
          "  hotserve keygen release && hotserve publish ./model-v2 repo/resnet --key release.key\n"
          "  hotserve serve --model-repository repo --require-signature --trusted-key release.pub\n");
}

int hs_cmd_keygen(int argc, char **argv) {
  bool hmac = false;
  const char *name;
  static const struct option opts[] = {{"hmac", no_argument, NULL, 'm'}, {"help", no_argument, NULL, 'h'}, {0}};
  hs_cli_getopt_reset();
  int status;
  for (int c; (c = hs_cli_next_option("keygen", argc, argv, ":h", opts, usage, &status)) != -1;) {
    if (c == HS_CLI_EXIT) {
      return status;
    } else if (c == 'm') {
      hmac = true;
    }
  }
  if (hs_cli_one_operand("keygen", "NAME", argc, argv, usage, &name)) return 2;
  hs_error err;
  hs_error_clear(&err);
  if (hs_repo_keygen(name, hmac, &err) != HS_OK) {
    fprintf(stderr, "hotserve keygen: %s\n", err.message);
    return 1;
  }
  if (hmac)
    printf("wrote %s.key (HMAC-SHA256 shared key, mode 0600)\n", name);
  else
    printf("wrote %s.key (Ed25519 private key, mode 0600) and %s.pub (public key)\n", name, name);
  return 0;
}

/* main.c - the hotserve binary: dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} command;

static const command k_commands[] = {
    {"serve", hs_cmd_serve, "serve a model repository over HTTP (KServe v2), reloading versions live"},
    {"run", hs_cmd_run, "run an ONNX model on .npy inputs and report latency"},
    {"keygen", hs_cmd_keygen, "make an Ed25519 key pair (or an HMAC key with --hmac)"},
    {"sign", hs_cmd_sign, "write the manifest and signature of a version directory"},
    {"verify", hs_cmd_verify, "check a version directory against its manifest and signature"},
    {"publish", hs_cmd_publish, "copy a version into a repository atomically (staging, fsync, rename)"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: hotserve <command> [options]   (hotserve <command> --help for details)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
    fprintf(out, "  %-8s %s\n", k_commands[i].name, k_commands[i].summary);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("hotserve 0.1.0\n");
    return 0;
  }
  for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
    if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "hotserve: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}

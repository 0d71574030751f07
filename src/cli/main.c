/* main.c - the hotserve binary: dispatches to one subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

typedef struct {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} command;

static const command k_commands[] = {
    {"serve", hs_cmd_serve, "serve a model repository over HTTP and gRPC (KServe v2), reloading versions live"},
    {"run", hs_cmd_run, "run an ONNX model on .npy inputs and report latency"},
    {"keygen", hs_cmd_keygen, "make an Ed25519 key pair (or an HMAC key with --hmac)"},
    {"sign", hs_cmd_sign, "write the manifest and signature of a version directory"},
    {"verify", hs_cmd_verify, "check a version directory against its manifest and signature"},
    {"publish", hs_cmd_publish, "copy a version into a repository atomically (staging, fsync, rename)"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: hotserve <command> [options]   (hotserve <command> --help for details)\n"
               "       hotserve --version | -V          print the version\n"
               "       hotserve --help | -h             this help\n\ncommands:\n");
  for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
    fprintf(out, "  %-8s %s\n", k_commands[i].name, k_commands[i].summary);
  fprintf(out, "\nOptions take --opt VALUE or --opt=VALUE; `serve` also reads each from a HOTSERVE_* variable.\n");
}

/* oneDNN threads through OpenMP, whose threads by default spin for a while when idle. With several
 * sessions running at once, or other processes on the cores, the spinning threads starve the working
 * ones (measured in docs/KERNELS.md: MobileNetV2 540-1060 ms spinning vs 24-59 ms passive on a busy
 * 2-core machine). libgomp reads OMP_WAIT_POLICY when it is loaded, before main, so when the operator
 * has not chosen a policy we set PASSIVE and re-execute ourselves once. Setting OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT yourself keeps your choice. */
static void use_passive_openmp_threads(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  /* exec failed (no /proc): carry on with the library's default policy */
}

int main(int argc, char **argv) {
  use_passive_openmp_threads(argv);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    printf("hotserve 0.1.0\n");
    return 0;
  }
  for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
    if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "hotserve: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}

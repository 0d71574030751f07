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

/* oneDNN threads through OpenMP. At the end of every parallel region (one per kernel) libgomp's idle
 * workers either spin or sleep on a futex until the next region. Sleeping costs a wake-up per kernel,
 * which on a virtual machine (an inter-processor interrupt through the hypervisor) is tens of
 * microseconds: MobileNetV2 batch 1 took 4.2 ms with OMP_WAIT_POLICY=PASSIVE against 1.8 ms with a
 * short spin on a quiet 2-core machine (docs/KERNELS.md, "OpenMP hand-off"). Spinning long (libgomp's
 * default, ~3 ms) starves the working threads when the cores are shared. So unless the operator chose,
 * we set GOMP_SPINCOUNT=1000 (libgomp's own estimate: ~10 us) and re-execute ourselves once: long enough
 * to bridge the gap between two kernels of one run, too short to take a core from anyone; libgomp
 * itself drops to 100 spins when its threads outnumber the CPUs. libgomp reads these variables when it
 * is loaded, before main, hence the re-exec. Setting OMP_WAIT_POLICY or GOMP_SPINCOUNT yourself keeps
 * your choice (OMP_WAIT_POLICY=PASSIVE for the old behaviour). Only the commands that run kernels
 * (serve, run) re-execute: for keygen, sign, verify and publish a second start of the binary (loading
 * and relocating its libraries again, ~10 ms of CPU) would buy nothing. */
static void use_short_openmp_spin(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "serve") != 0 && strcmp(argv[1], "run") != 0)) return;
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", "1000", 1) != 0) return;
  execv("/proc/self/exe", argv);
  /* exec failed (no /proc): carry on with the library's default policy */
}

int main(int argc, char **argv) {
  use_short_openmp_spin(argc, argv);
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

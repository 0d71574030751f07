/* cmd_verify.c - `hotserve verify` (placeholder until the subcommand lands). */
#include <stdio.h>

#include "cli/cli.h"

int hs_cmd_verify(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "hotserve verify: not built yet\n");
  return 2;
}

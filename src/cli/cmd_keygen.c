/* cmd_keygen.c - `hotserve keygen` (placeholder until the subcommand lands). */
#include <stdio.h>

#include "cli/cli.h"

int hs_cmd_keygen(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "hotserve keygen: not built yet\n");
  return 2;
}

/* cmd_serve.c - `hotserve serve` (placeholder until the subcommand lands). */
#include <stdio.h>

#include "cli/cli.h"

int hs_cmd_serve(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "hotserve serve: not built yet\n");
  return 2;
}

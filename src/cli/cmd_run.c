/* cmd_run.c - `hotserve run` (placeholder until the subcommand lands). */
#include <stdio.h>

#include "cli/cli.h"

int hs_cmd_run(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "hotserve run: not built yet\n");
  return 2;
}

/* cmd_publish.c - `hotserve publish` (placeholder until the subcommand lands). */
#include <stdio.h>

#include "cli/cli.h"

int hs_cmd_publish(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "hotserve publish: not built yet\n");
  return 2;
}

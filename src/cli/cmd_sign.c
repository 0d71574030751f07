/* cmd_sign.c - `hotserve sign` (placeholder until the subcommand lands). */
#include <stdio.h>

#include "cli/cli.h"

int hs_cmd_sign(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "hotserve sign: not built yet\n");
  return 2;
}

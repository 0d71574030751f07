/* options.c - what every subcommand's getopt_long loop shares: its reset and its error message. */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"

void hs_cli_getopt_reset(void) {
  optind = 1;
  opterr = 0; /* the messages below name the command; getopt's own would name argv[0] */
}

void hs_cli_option_error(const char *cmd, int c, int argc, char **argv, int prev_optind) {
  const char *arg = prev_optind < argc ? argv[prev_optind] : "";
  if (c == ':') fprintf(stderr, "hotserve %s: option %s needs a value\n", cmd, arg);
  else fprintf(stderr, "hotserve %s: unknown option %s\n", cmd, arg);
}

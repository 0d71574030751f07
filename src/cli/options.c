/* options.c - what the subcommands' option handling shares: the getopt_long step with its help and error
 * handling, a single operand, and the --version number. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "repo/repo.h"

void hs_cli_getopt_reset(void) {
  optind = 1;
  opterr = 0; /* the messages below name the command; getopt's own would name argv[0] */
}

void hs_cli_option_error(const char *cmd, int c, int argc, char **argv, int prev_optind) {
  const char *arg = prev_optind < argc ? argv[prev_optind] : "";
  if (c == ':') fprintf(stderr, "hotserve %s: option %s needs a value\n", cmd, arg);
  else fprintf(stderr, "hotserve %s: unknown option %s\n", cmd, arg);
}

int hs_cli_next_option(const char *cmd, int argc, char **argv, const char *shortopts, const struct option *opts,
                       hs_cli_usage_fn usage, int *status) {
  int prev = optind;
  int c = getopt_long(argc, argv, shortopts, opts, NULL);
  if (c == 'h') {
    usage(stdout);
    *status = 0;
    return HS_CLI_EXIT;
  }
  if (c == '?' || c == ':') {
    hs_cli_option_error(cmd, c, argc, argv, prev);
    usage(stderr);
    *status = 2;
    return HS_CLI_EXIT;
  }
  return c;
}

int hs_cli_one_operand(const char *cmd, const char *what, int argc, char **argv, hs_cli_usage_fn usage,
                       const char **out) {
  *out = optind < argc ? argv[optind++] : NULL;
  if (optind < argc) {
    fprintf(stderr, "hotserve %s: one %s only\n", cmd, what);
    return 2;
  }
  if (!*out) {
    usage(stderr);
    return 2;
  }
  return 0;
}

int hs_cli_parse_version(const char *cmd, const char *text, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno || !end || *end || v < 1 || v > HS_REPO_VERSION_MAX || text[0] == '0' || text[0] == '+' ||
      text[0] == ' ') {
    fprintf(stderr, "hotserve %s: --version must be a positive integer without leading zeros, at most %lld (the "
                    "highest version a server serves)\n", cmd, HS_REPO_VERSION_MAX);
    return -1;
  }
  *out = v;
  return 0;
}

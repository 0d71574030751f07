/* cli.h - the hotserve subcommands; each lives in its own cmd_<name>.c. */
#ifndef HS_CLI_H
#define HS_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

/* Each returns the process exit status: 0 on success, 1 on failure, 2 on a usage error.
 * argv[0] is the subcommand's name. */
int hs_cmd_serve(int argc, char **argv);
int hs_cmd_run(int argc, char **argv);
int hs_cmd_keygen(int argc, char **argv);
int hs_cmd_sign(int argc, char **argv);
int hs_cmd_verify(int argc, char **argv);
int hs_cmd_publish(int argc, char **argv);

/* Shared by the getopt_long loops (options.c). Every command accepts --opt VALUE and --opt=VALUE, and
 * options before or after its operands; each starts with hs_cli_getopt_reset() and passes a short-option
 * string that begins with ":h" so that a missing value is told apart from an unknown option. */
void hs_cli_getopt_reset(void);
/* Prints "hotserve CMD: unknown option X" (c == '?') or "... option X needs a value" (c == ':'); prev_optind
 * is optind before the getopt_long call that failed. */
void hs_cli_option_error(const char *cmd, int c, int argc, char **argv, int prev_optind);

/* A command's usage text, printed to out. */
typedef void (*hs_cli_usage_fn)(FILE *out);
/* hs_cli_next_option's answer when the command is to exit with *status. */
#define HS_CLI_EXIT (-2)
/* One getopt_long step: returns the next option's value, or -1 after the last. For -h/--help it prints
 * the usage to stdout and returns HS_CLI_EXIT with *status 0; for an unknown option or a missing value,
 * the error and the usage to stderr, HS_CLI_EXIT with *status 2. */
int hs_cli_next_option(const char *cmd, int argc, char **argv, const char *shortopts, const struct option *opts,
                       hs_cli_usage_fn usage, int *status);
/* After the options: takes the one operand left (argv[optind]) into *out and returns 0. Returns 2 after
 * printing the usage to stderr when there is none, or "hotserve CMD: one WHAT only" when there are more. */
int hs_cli_one_operand(const char *cmd, const char *what, int argc, char **argv, hs_cli_usage_fn usage,
                       const char **out);
/* Reads a --version value: a positive integer without leading zeros, '+' or spaces, at most
 * HS_REPO_VERSION_MAX. Returns 0, or -1 after printing why as "hotserve CMD: ...". */
int hs_cli_parse_version(const char *cmd, const char *text, int64_t *out);

#endif

/* cli.h - the hotserve subcommands; each lives in its own cmd_<name>.c. */
#ifndef HS_CLI_H
#define HS_CLI_H

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
 * string that begins with ':' so that a missing value is told apart from an unknown option. */
void hs_cli_getopt_reset(void);
/* Prints "hotserve CMD: unknown option X" (c == '?') or "... option X needs a value" (c == ':'); prev_optind
 * is optind before the getopt_long call that failed. */
void hs_cli_option_error(const char *cmd, int c, int argc, char **argv, int prev_optind);

#endif

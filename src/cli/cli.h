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

#endif

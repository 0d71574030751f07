/* cmd_serve.c - `hotserve serve`: parse options (flags over environment), start the registry, HTTP and gRPC, handle signals. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "backends/plugins.h"
#include "base/file.h"
#include "base/log.h"
#include "cli/cli.h"
#include "grpc/frontend.h"
#include "http/server.h"
#include "engine/engine.h"
#include "kernels/kshare.h"
#include "serving/compute.h"
#include "serving/stats.h"
#include "serving/registry.h"

#define MAX_KEYS 16
#define MAX_LOAD_MODELS 64
_Static_assert(MAX_KEYS <= MAX_LOAD_MODELS, "serve_list holds MAX_LOAD_MODELS items");
/* On SIGTERM, how long the server waits (after draining requests) for a load in progress to reach
 * a point where it can stop, before it exits without it. */
#define HS_LOADER_STOP_MS 10000

/* A repeatable option (--trusted-key, --load-model): each flag adds one item; its environment
 * variable holds a list, and the first flag replaces the items the variable gave. */
typedef struct serve_list {
  const char *items[MAX_LOAD_MODELS]; /* the larger of the two maxima */
  size_t n, max;
  const char *what; /* "at most MAX WHAT" when full */
  bool from_env;
  char env[4096]; /* a copy of the variable, split in place (getenv's string is not ours to change) */
} serve_list;

/* Every serve setting, filled first from the defaults, then from the environment, then from flags. */
typedef struct serve_cfg {
  const char *repo, *host, *trace, *backend_dir, *control_token_file;
  bool control_none, control_explicit;
  serve_list load_models; /* --load-model (explicit control mode) */
  serve_list keys;        /* --trusted-key */
  bool require_sig, no_inotify, strict_ready, kernel_share;
  double poll_s, settle_s, idle_s, trim_s, grace_s, request_s;
  hs_loader_priority loader_prio;
  hs_log_level log_level;
  bool log_level_set;
  long long grpc_port; /* -1: no gRPC */
  unsigned long long min_rate, per_ip, port, grpc_workers, threads, instances, max_body, max_conn, mem_limit,
      req_mem, compute_threads, total_mem, loader_pace;
} serve_cfg;

enum {
  OPT_REPO = 256, OPT_HOST, OPT_HTTP_PORT, OPT_GRPC_PORT, OPT_GRPC_WORKERS, OPT_POLL, OPT_SETTLE, OPT_REQUIRE_SIG,
  OPT_TRUSTED_KEY, OPT_THREADS, OPT_INSTANCES, OPT_LOADER_PRIO, OPT_MAX_BODY, OPT_MAX_CONN, OPT_IDLE,
  OPT_MEM_LIMIT, OPT_TRIM, OPT_LOG_LEVEL, OPT_TRACE, OPT_NO_INOTIFY, OPT_STRICT_READY, OPT_SHUTDOWN_GRACE,
  OPT_BACKEND_DIR, OPT_REQUEST_TIMEOUT, OPT_MIN_BODY_RATE, OPT_MAX_CLIENT_CONN, OPT_MAX_REQ_MEM,
  OPT_CONTROL_MODE, OPT_CONTROL_TOKEN, OPT_LOAD_MODEL, OPT_COMPUTE_THREADS, OPT_MAX_TOTAL_REQ_MEM,
  OPT_KERNEL_SHARE, OPT_LOADER_PACE,
};

/* The option table: one row per option (long name, value name or NULL for a switch, id, environment
 * variable, help). getopt_long's table, the environment and `serve --help` are all made from it. */
typedef struct serve_opt {
  const char *name, *arg;
  int id;
  const char *env, *help;
} serve_opt;

static const serve_opt k_opts[] = {
    {"model-repository", "DIR", OPT_REPO, "HOTSERVE_MODEL_REPOSITORY", "the model repository (read only; required)"},
    {"host", "ADDR", OPT_HOST, "HOTSERVE_HOST",
     "address to listen on (default 127.0.0.1): IPv4 (0.0.0.0: every IPv4\naddress), IPv6 (::1), or :: for every IPv4 and IPv6 address (dual stack)"},
    {"http-port", "N", OPT_HTTP_PORT, "HOTSERVE_HTTP_PORT", "HTTP port (default 8000; 0 picks a free one)"},
    {"grpc-port", "N", OPT_GRPC_PORT, "HOTSERVE_GRPC_PORT",
     "also serve KServe v2 over gRPC on this port (off unless given; Triton\nuses 8001; 0 picks a free one); see docs/GRPC.md"},
    {"grpc-workers", "N", OPT_GRPC_WORKERS, "HOTSERVE_GRPC_WORKERS", "gRPC calls handled at once (default 16)"},
    {"poll-interval", "S", OPT_POLL, "HOTSERVE_POLL_INTERVAL",
     "seconds between repository polls, for NFS (default 2; fractions ok)"},
    {"no-inotify", NULL, OPT_NO_INOTIFY, "HOTSERVE_NO_INOTIFY",
     "see repository changes by polling alone (NFS, where inotify sees\nnothing, or trees beyond the inotify watch limit)"},
    {"settle", "S", OPT_SETTLE, "HOTSERVE_SETTLE",
     "a version without a manifest counts once unchanged this long (default 2)"},
    {"require-signature", NULL, OPT_REQUIRE_SIG, "HOTSERVE_REQUIRE_SIGNATURE",
     "refuse versions without a valid signature from a trusted key\n(environment: 1/true/yes or 0/false/no)"},
    {"trusted-key", "FILE", OPT_TRUSTED_KEY, "HOTSERVE_TRUSTED_KEYS",
     "a public (Ed25519) or shared (HMAC) key file; repeatable (environment:\nfiles separated by ':'); with --require-signature a config.json\nneeds config.json.sig too"},
    {"backend-dir", "DIR", OPT_BACKEND_DIR, "HOTSERVE_BACKEND_DIR",
     "plug-in backends: a config.json \"backend\": \"NAME\" loads DIR/NAME.so;\nDIR must lie outside the repository (default: no plug-ins)"},
    {"threads", "N", OPT_THREADS, "HOTSERVE_THREADS", "compute threads per model run (default 1)"},
    {"instances", "N", OPT_INSTANCES, "HOTSERVE_INSTANCES", "concurrent runs per version (default 2)"},
    {"compute-threads", "N", OPT_COMPUTE_THREADS, "HOTSERVE_COMPUTE_THREADS",
     "most threads that run models, shared by every model; each keeps one\nOpenMP team of --threads (default: twice the CPUs, at least 4)"},
    {"kernel-share", "on|off", OPT_KERNEL_SHARE, "HOTSERVE_KERNEL_SHARE",
     "share Conv kernels between versions whose weights are byte for byte\nthe same (default on; off: every load builds its own, to compare\nor to rule sharing out; docs/ENGINE.md)"},
    {"loader-priority", "P", OPT_LOADER_PRIO, "HOTSERVE_LOADER_PRIORITY",
     "CPU priority of loads and warm-ups: low (default; 10 nice steps\nbelow the server), idle (SCHED_IDLE: only CPU time requests leave\nunused) or normal"},
    {"loader-pace", "PCT", OPT_LOADER_PACE, "HOTSERVE_LOADER_PACE",
     "while requests are in flight, a load and its warm-up use at most PCT\npercent of one core, sleeping between pieces of work (1-100; default\n10; 100: no pacing); with no request in flight loads run at full\nspeed; time slept: status paced_ms, hotserve_loader_paced_seconds_total"},
    {"max-body-bytes", "N", OPT_MAX_BODY, "HOTSERVE_MAX_BODY_BYTES",
     "largest request body (HTTP) or message (gRPC) accepted\n(default 67108864 = 64 MiB)"},
    {"max-connections", "N", OPT_MAX_CONN, "HOTSERVE_MAX_CONNECTIONS", "concurrent HTTP connections (default 256)"},
    {"idle-timeout", "S", OPT_IDLE, "HOTSERVE_IDLE_TIMEOUT",
     "close idle or stalled connections after S seconds (default 120)"},
    {"request-timeout", "S", OPT_REQUEST_TIMEOUT, "HOTSERVE_REQUEST_TIMEOUT",
     "a request's head must arrive within S seconds (default 30), its body\nwithin S more seconds plus its length at --min-body-rate"},
    {"min-body-rate", "BYTES", OPT_MIN_BODY_RATE, "HOTSERVE_MIN_BODY_RATE",
     "slowest accepted body upload, bytes per second (default 65536)"},
    {"max-client-connections", "N", OPT_MAX_CLIENT_CONN, "HOTSERVE_MAX_CLIENT_CONNECTIONS",
     "connections one client address may hold (default: half of\n--max-connections); /v2/health/* and /metrics have 8 more slots"},
    {"model-control-mode", "MODE", OPT_CONTROL_MODE, "HOTSERVE_MODEL_CONTROL_MODE",
     "poll (default): every model in the repository is loaded and followed,\nand the repository API (index, load, unload) is on; explicit: only\nthe models named with --load-model are loaded at start, others only\nby a load request (a loaded model still follows its folder: new\nversions swap in); none: as poll, but the API answers 403\n(docs/SECURITY.md)"},
    {"load-model", "NAME", OPT_LOAD_MODEL, "HOTSERVE_LOAD_MODEL",
     "with --model-control-mode explicit: load model NAME at start-up\n(repeatable; '*': every model; the variable: names separated by ',')"},
    {"control-token-file", "FILE", OPT_CONTROL_TOKEN, "HOTSERVE_CONTROL_TOKEN_FILE",
     "the repository API needs \"Authorization: Bearer TOKEN\", TOKEN being\nthis file's content (trailing newline ignored); 401/403 otherwise"},
    {"memory-limit", "BYTES", OPT_MEM_LIMIT, "HOTSERVE_MEMORY_LIMIT", "refuse loads beyond this (default: cgroup limit or RAM)"},
    {"max-request-memory", "BYTES", OPT_MAX_REQ_MEM, "HOTSERVE_MAX_REQUEST_MEMORY",
     "refuse (413) a request whose input shapes need more scratch memory\nthan this, before allocating it (default: a quarter of the memory\nlimit)"},
    {"max-total-request-memory", "BYTES", OPT_MAX_TOTAL_REQ_MEM, "HOTSERVE_MAX_TOTAL_REQUEST_MEMORY",
     "scratch memory all requests in flight may use together, across every\nmodel; a request that would pass it waits up to 100 ms, then gets\n503 + Retry-After (gRPC RESOURCE_EXHAUSTED) (default: half the\nmemory limit)"},
    {"trim-delay", "S", OPT_TRIM, "HOTSERVE_TRIM_DELAY",
     "hand memory freed by retired versions and left free by loads back\nto the system once no version has been loaded or freed for S seconds\n(default 5; 0: at once); until then the next versions reuse it"},
    {"strict-readiness", NULL, OPT_STRICT_READY, "HOTSERVE_STRICT_READINESS",
     "/v2/health/ready answers 200 only while every version the repository\nselects is serving (Triton's semantics); by default it stays 200\nonce start-up loads are done while what was served still is, so a\nnew version that fails never takes a replica out of rotation"},
    {"shutdown-grace", "S", OPT_SHUTDOWN_GRACE, "HOTSERVE_SHUTDOWN_GRACE",
     "on SIGTERM, keep serving for S seconds while /v2/health/ready says\n503 (a lame-duck period for load balancers), then drain (default 0)"},
    {"log-level", "L", OPT_LOG_LEVEL, "HOTSERVE_LOG_LEVEL", "debug, info or warn (default info)"},
    {"trace", "FILE", OPT_TRACE, "HOTSERVE_TRACE",
     "write one JSON line per request and per reload stage (scan, load,\nwarmup, swap, free, trim) to FILE, with monotonic-clock times, to see\nwhat a reload costs the requests beside it (docs/SERVING.md)"},
};
#define N_OPTS (sizeof k_opts / sizeof k_opts[0])

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve serve --model-repository DIR [options]\n"
          "\n"
          "Serves every model in DIR (DIR/<model>/<version>/model.onnx) with the KServe v2 protocol over\n"
          "HTTP (and gRPC with --grpc-port), and swaps in new versions as they appear, without failing a\n"
          "request (with --model-control-mode explicit: the models named with --load-model, and those a\n"
          "load request names).\n"
          "\n"
          "options (--opt VALUE or --opt=VALUE; each also read from the environment variable shown,\n"
          "which gives the default that a flag overrides):\n");
  for (size_t i = 0; i < N_OPTS; i++) {
    const serve_opt *o = &k_opts[i];
    char head[64];
    snprintf(head, sizeof head, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    if (strlen(head) < 24) fprintf(out, "  %-24s", head);
    else fprintf(out, "  %s\n  %-24s", head, ""); /* a long name gets a line of its own */
    for (const char *p = o->help; *p; p++) {
      fputc(*p, out);
      if (*p == '\n') fprintf(out, "  %-24s", "");
    }
    fprintf(out, "\n  %-24s[%s]\n", "", o->env);
  }
  fprintf(out,
          "  -h, --help              this help\n"
          "\n"
          "`hotserve --version` prints the version.\n"
          "The server listens before the first load and answers not-ready until the start-up loads\n"
          "are done. Signals: SIGHUP rescans the repository; SIGTERM/SIGINT (after --shutdown-grace)\n"
          "stop accepting connections, let requests in flight finish, and exit 0. Endpoints: see\n"
          "docs/SERVING.md and docs/GRPC.md.\n");
}

static int parse_seconds(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < 0 || v > 86400) return -1;
  *out = v;
  return 0;
}

static int parse_ull(const char *s, unsigned long long max, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v > max) return -1;
  *out = v;
  return 0;
}

static int parse_bool(const char *s, bool *out) {
  if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes")) *out = true;
  else if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !*s) *out = false;
  else return -1;
  return 0;
}

static int list_add(serve_list *l, const char *item) {
  if (l->n == l->max) {
    fprintf(stderr, "hotserve serve: at most %zu %s\n", l->max, l->what);
    return -1;
  }
  l->items[l->n++] = item;
  return 0;
}

/* Adds a flag's value, or every sep-separated item of the environment variable's value, to l.
 * Returns 0, or -1 after printing why. */
static int list_apply(serve_list *l, const serve_opt *o, const char *v, bool from_env, const char *sep) {
  if (!from_env) {
    if (l->from_env) l->n = 0, l->from_env = false;
    return list_add(l, v);
  }
  l->from_env = true;
  if (strlen(v) >= sizeof l->env) {
    fprintf(stderr, "hotserve serve: %s is longer than %zu bytes\n", o->env, sizeof l->env - 1);
    return -1;
  }
  snprintf(l->env, sizeof l->env, "%s", v);
  for (char *save = NULL, *p = strtok_r(l->env, sep, &save); p; p = strtok_r(NULL, sep, &save))
    if (list_add(l, p)) return -1;
  return 0;
}

/* on|off, or a boolean's other spellings (1/0, true/false, yes/no). */
static int parse_on_off(const char *s, bool *out) {
  if (!strcasecmp(s, "on")) *out = true;
  else if (!strcasecmp(s, "off")) *out = false;
  else return *s ? parse_bool(s, out) : -1;
  return 0;
}

/* A switch: given as a flag (v NULL) it is on; a value says which. */
static int parse_switch(const char *v, bool *out) {
  if (v) return parse_bool(v, out);
  *out = true;
  return 0;
}

/* Applies one option's value (v is NULL for a switch given as a flag). from_env: v came from the
 * environment. Returns 0, or -1 after printing why. */
static int apply(serve_cfg *c, const serve_opt *o, const char *v, bool from_env) {
  bool bad = false;
  unsigned long long n = 0;
  switch (o->id) {
    case OPT_REPO: c->repo = v; break;
    case OPT_HOST: bad = !*v; c->host = v; break;
    case OPT_HTTP_PORT: bad = parse_ull(v, 65535, &c->port) != 0; break;
    case OPT_GRPC_PORT: bad = parse_ull(v, 65535, &n) != 0, c->grpc_port = (long long)n; break;
    case OPT_GRPC_WORKERS: bad = parse_ull(v, 1024, &c->grpc_workers) != 0 || c->grpc_workers == 0; break;
    case OPT_POLL: bad = parse_seconds(v, &c->poll_s) != 0 || c->poll_s < 0.01; break;
    case OPT_SETTLE: bad = parse_seconds(v, &c->settle_s) != 0; break;
    case OPT_TRIM: bad = parse_seconds(v, &c->trim_s) != 0; break;
    case OPT_IDLE: bad = parse_seconds(v, &c->idle_s) != 0 || c->idle_s < 1; break;
    case OPT_REQUIRE_SIG: bad = parse_switch(v, &c->require_sig) != 0; break;
    case OPT_NO_INOTIFY: bad = parse_switch(v, &c->no_inotify) != 0; break;
    case OPT_STRICT_READY: bad = parse_switch(v, &c->strict_ready) != 0; break;
    case OPT_KERNEL_SHARE: bad = parse_on_off(v, &c->kernel_share) != 0; break;
    case OPT_BACKEND_DIR: bad = !*v, c->backend_dir = v; break;
    case OPT_REQUEST_TIMEOUT: bad = parse_seconds(v, &c->request_s) != 0 || c->request_s < 0.1; break;
    case OPT_MIN_BODY_RATE: bad = parse_ull(v, 1ull << 40, &c->min_rate) != 0 || c->min_rate == 0; break;
    case OPT_MAX_CLIENT_CONN: bad = parse_ull(v, 100000, &c->per_ip) != 0 || c->per_ip == 0; break;
    case OPT_SHUTDOWN_GRACE: bad = parse_seconds(v, &c->grace_s) != 0 || c->grace_s > 3600; break;
    case OPT_TRUSTED_KEY:
      if (list_apply(&c->keys, o, v, from_env, ":")) return -1; /* the variable: a ':'-separated list */
      break;
    case OPT_THREADS: bad = parse_ull(v, 256, &c->threads) != 0 || c->threads == 0; break;
    case OPT_INSTANCES: bad = parse_ull(v, 64, &c->instances) != 0 || c->instances == 0; break;
    case OPT_COMPUTE_THREADS: bad = parse_ull(v, 4096, &c->compute_threads) != 0 || c->compute_threads == 0; break;
    case OPT_LOADER_PACE: bad = parse_ull(v, 100, &c->loader_pace) != 0 || c->loader_pace == 0; break;
    case OPT_LOADER_PRIO:
      if (!strcmp(v, "low")) c->loader_prio = HS_LOADER_LOW;
      else if (!strcmp(v, "idle")) c->loader_prio = HS_LOADER_IDLE;
      else if (!strcmp(v, "normal")) c->loader_prio = HS_LOADER_NORMAL;
      else bad = true;
      break;
    case OPT_MAX_BODY: bad = parse_ull(v, 1ull << 34, &c->max_body) != 0 || c->max_body == 0; break;
    case OPT_MAX_CONN: bad = parse_ull(v, 100000, &c->max_conn) != 0 || c->max_conn == 0; break;
    case OPT_MEM_LIMIT: bad = parse_ull(v, ~0ull, &c->mem_limit) != 0; break;
    case OPT_CONTROL_MODE:
      c->control_none = !strcmp(v, "none");
      c->control_explicit = !strcmp(v, "explicit");
      bad = strcmp(v, "poll") && !c->control_none && !c->control_explicit;
      break;
    case OPT_LOAD_MODEL:
      bad = !from_env && !*v;
      if (!bad && list_apply(&c->load_models, o, v, from_env, ",")) return -1; /* the variable: ','-separated */
      break;
    case OPT_CONTROL_TOKEN: bad = !*v, c->control_token_file = v; break;
    case OPT_MAX_REQ_MEM: bad = parse_ull(v, ~0ull, &c->req_mem) != 0 || c->req_mem == 0; break;
    case OPT_MAX_TOTAL_REQ_MEM: bad = parse_ull(v, ~0ull, &c->total_mem) != 0 || c->total_mem == 0; break;
    case OPT_TRACE: bad = !*v, c->trace = v; break;
    case OPT_LOG_LEVEL:
      c->log_level_set = true;
      if (!strcmp(v, "debug")) c->log_level = HS_LOG_DEBUG;
      else if (!strcmp(v, "info")) c->log_level = HS_LOG_INFO;
      else if (!strcmp(v, "warn")) c->log_level = HS_LOG_WARN;
      else bad = true;
      break;
    default: bad = true; break;
  }
  if (bad) {
    if (from_env) fprintf(stderr, "hotserve serve: bad value for %s (--%s): %s\n", o->env, o->name, v);
    else fprintf(stderr, "hotserve serve: bad value for --%s: %s\n", o->name, v ? v : "");
    return -1;
  }
  return 0;
}

/* Fills c from the environment, then argv. Returns -1 to exit 0 (help shown), 2 on a usage error, 0 to
 * go on. */
static int parse_options(int argc, char **argv, serve_cfg *c) {
  for (size_t i = 0; i < N_OPTS; i++) {
    const char *v = getenv(k_opts[i].env);
    if (v && apply(c, &k_opts[i], v, true)) return 2;
  }
  struct option lopts[N_OPTS + 2];
  for (size_t i = 0; i < N_OPTS; i++)
    lopts[i] = (struct option){k_opts[i].name, k_opts[i].arg ? required_argument : no_argument, NULL, k_opts[i].id};
  lopts[N_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
  lopts[N_OPTS + 1] = (struct option){0, 0, 0, 0};
  hs_cli_getopt_reset();
  int status;
  for (int id; (id = hs_cli_next_option("serve", argc, argv, ":h", lopts, usage, &status)) != -1;) {
    if (id == HS_CLI_EXIT) return status == 0 ? -1 : status;
    for (size_t i = 0; i < N_OPTS; i++)
      if (k_opts[i].id == id && apply(c, &k_opts[i], optarg, false)) return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "hotserve serve: unexpected argument %s (options start with --)\n", argv[optind]);
    return 2;
  }
  if (c->load_models.n && !c->control_explicit) {
    fprintf(stderr, "hotserve serve: --load-model needs --model-control-mode explicit (in the other modes every "
                    "model is loaded)\n");
    return 2;
  }
  return 0;
}

/* The lame-duck period: not ready, still serving, for grace_s seconds (a second SIGTERM or SIGINT
 * ends it early; SIGHUP still rescans). Load balancers see 503 and stop sending before we drain. */
static void lame_duck(hs_registry *reg, const sigset_t *set, const char *why, double grace_s) {
  hs_registry_begin_shutdown(reg);
  HS_LOGI("%s: lame duck for %.1f s: /v2/health/ready answers 503, requests are still served", why, grace_s);
  uint64_t end = hs_now_ns() + (uint64_t)(grace_s * 1e9);
  for (uint64_t now = hs_now_ns(); now < end; now = hs_now_ns()) {
    uint64_t left = end - now;
    struct timespec ts = {(time_t)(left / 1000000000ull), (long)(left % 1000000000ull)};
    int sig = sigtimedwait(set, NULL, &ts);
    if (sig == SIGHUP) hs_registry_kick(reg);
    else if (sig == SIGTERM || sig == SIGINT) break;
  }
}

/* Reads the repository control token from path into *out (the caller frees it): the file's bytes
 * without trailing whitespace; refuses an empty token and one with bytes outside printable ASCII. */
static int read_control_token(const char *path, char **out, hs_error *err) {
  size_t len = 0;
  int rc = hs_file_read(path, 4096, out, &len, err);
  if (rc != HS_OK) return hs_error_prefix(err, "--control-token-file %s", path);
  while (len && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r' || (*out)[len - 1] == ' ')) (*out)[--len] = 0;
  bool printable = len > 0;
  for (size_t i = 0; i < len; i++) printable &= (*out)[i] > ' ' && (*out)[i] < 127;
  if (!printable) {
    free(*out);
    *out = NULL;
    return hs_error_set(err, HS_INVALID_ARGUMENT, "--control-token-file %s: the token must be one word of printable "
                        "ASCII", path);
  }
  return HS_OK;
}

int hs_cmd_serve(int argc, char **argv) {
  serve_cfg c = {.host = "127.0.0.1", .request_s = 30, .min_rate = 64 << 10, .poll_s = 2, .settle_s = 2, .idle_s = 120, .trim_s = 5,
                 .loader_prio = HS_LOADER_LOW, .loader_pace = 10, .grpc_port = -1, .port = 8000, .grpc_workers = 16, .threads = 1,
                 .instances = 2, .max_body = 64ull << 20, .max_conn = 256, .kernel_share = true,
                 .keys = {.max = MAX_KEYS, .what = "trusted keys"},
                 .load_models = {.max = MAX_LOAD_MODELS, .what = "--load-model names (use '*' for every model)"}};
  int prc = parse_options(argc, argv, &c);
  if (prc) return prc < 0 ? 0 : prc;
  if (c.log_level_set) hs_log_set_level(c.log_level);
  if (!c.repo || !*c.repo) {
    fprintf(stderr, "hotserve serve: --model-repository DIR is required (or set HOTSERVE_MODEL_REPOSITORY)\n");
    usage(stderr);
    return 2;
  }

  hs_error err;
  hs_error_clear(&err);
  if (hs_backend_set_plugin_dir(c.backend_dir, c.repo, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    return 2;
  }
  char *control_token = NULL; /* borrowed by the HTTP server until it stops */
  if (c.control_token_file && read_control_token(c.control_token_file, &control_token, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    return 2;
  }

  /* Signals go to this thread only (sigwait below); every thread started later inherits the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* the threads that run every session (serving/compute.h): as many as CPUs now, more on demand */
  hs_compute_start((int)c.compute_threads, (int)sysconf(_SC_NPROCESSORS_ONLN));
  /* the scratch memory of all runs in flight (engine.h), by default half the memory limit */
  size_t mem_limit = c.mem_limit ? (size_t)c.mem_limit : hs_process_memory_limit();
  hs_engine_set_memory_budget(c.total_mem ? (size_t)c.total_mem : mem_limit == SIZE_MAX ? 0 : mem_limit / 2, 100);
  /* Conv kernels shared between versions (kernels/kshare.h): a process-wide registry, so one switch */
  hs_kshare_set_enabled(c.kernel_share);
  if (!c.kernel_share) HS_LOGI("kernel sharing is off (--kernel-share off): every load builds its own Conv kernels");

  hs_registry_options ro = {.root = c.repo, .poll_ms = (int)(c.poll_s * 1000 + 0.5),
                            .settle_ms = (int)(c.settle_s * 1000 + 0.5), .require_signature = c.require_sig,
                            .key_paths = c.keys.items, .n_keys = c.keys.n, .threads = (int)c.threads,
                            .instances = (int)c.instances, .loader_priority = c.loader_prio,
                            .loader_pace = (int)c.loader_pace,
                            .memory_limit = (size_t)c.mem_limit, .max_request_memory = (size_t)c.req_mem,
                            .trace_path = c.trace,
                            .trim_delay_ms = (int)(c.trim_s * 1000 + 0.5), .watch = true,
                            .watch_inotify = !c.no_inotify, .background_start = true,
                            .strict_readiness = c.strict_ready, .explicit_control = c.control_explicit,
                            .load_models = c.load_models.items, .n_load_models = c.load_models.n};
  hs_registry *reg = NULL;
  if (hs_registry_create(&ro, &reg, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    free(control_token);
    return 1;
  }
  hs_http_options ho = {.host = c.host, .port = (int)c.port, .max_body_bytes = (size_t)c.max_body,
                        .max_connections = (unsigned)c.max_conn, .idle_timeout_s = (unsigned)c.idle_s,
                        .request_timeout_s = c.request_s, .min_body_rate = (size_t)c.min_rate,
                        .per_ip_connections = (unsigned)c.per_ip, .control_disabled = c.control_none,
                        .control_token = control_token};
  hs_http_server *http = NULL;
  if (hs_http_start(&ho, reg, &http, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    hs_registry_destroy(reg);
    free(control_token);
    return 1;
  }
  bool v6 = strchr(c.host, ':') != NULL;
  fprintf(stderr, "hotserve: listening on http://%s%s%s:%d\n", v6 ? "[" : "", c.host, v6 ? "]" : "", hs_http_port(http));
  hs_grpc_server *grpc = NULL;
  if (c.grpc_port >= 0) {
    hs_grpc_options go = {.host = c.host, .port = (int)c.grpc_port, .max_message_bytes = (size_t)c.max_body,
                          .workers = (int)c.grpc_workers, .idle_timeout_s = (unsigned)c.idle_s,
                          .control_disabled = c.control_none, .control_token = control_token};
    if (hs_grpc_start(&go, reg, &grpc, &err) != HS_OK) {
      fprintf(stderr, "hotserve serve: %s\n", err.message);
      hs_http_stop(http, 0);
      hs_registry_destroy(reg);
      free(control_token);
    return 1;
    }
    fprintf(stderr, "hotserve: listening on grpc://%s%s%s:%d\n", v6 ? "[" : "", c.host, v6 ? "]" : "",
            hs_grpc_port(grpc));
  }
  fflush(stderr);
  hs_registry_kick(reg); /* the start-up scan and loads run now; /v2/health/ready says 503 until done */

  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      HS_LOGI("SIGHUP: rescanning the repository");
      hs_registry_kick(reg);
      continue;
    }
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    if (c.grace_s > 0) lame_duck(reg, &set, name, c.grace_s);
    HS_LOGI("%s: draining requests in flight, then exiting", name);
    break;
  }
  /* the loader stops first (it may be in the middle of a long load), while requests drain */
  bool loader_stopped = hs_registry_stop(reg, 0);
  hs_grpc_stop(grpc, 30000);
  hs_http_stop(http, 30000);
  if (!loader_stopped && !hs_registry_stop(reg, HS_LOADER_STOP_MS)) {
    /* a backend load or a warm-up run cannot be interrupted: do not wait for it */
    HS_LOGW("a model load is still running %d s after the shutdown began; exiting without waiting for it",
            HS_LOADER_STOP_MS / 1000);
    fflush(stderr);
    _exit(0);
  }
  hs_registry_destroy(reg);
  HS_LOGI("stopped");
  free(control_token);
  return 0;
}

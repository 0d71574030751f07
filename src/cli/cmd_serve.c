/* cmd_serve.c - `hotserve serve`: parse options, start the registry and HTTP server, handle signals. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/plugins.h"
#include "base/log.h"
#include "cli/cli.h"
#include "http/server.h"
#include "serving/registry.h"

#define MAX_KEYS 16

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotserve serve --model-repository DIR [options]\n"
          "\n"
          "Serves every model in DIR (DIR/<model>/<version>/model.onnx) over HTTP with the KServe v2\n"
          "protocol, and swaps in new versions as they appear, without failing a request.\n"
          "\n"
          "options:\n"
          "  --model-repository DIR  the model repository (read only; required)\n"
          "  --host ADDR             IPv4 address to listen on (default 127.0.0.1)\n"
          "  --http-port N           port (default 8000; 0 picks a free one)\n"
          "  --poll-interval S       seconds between repository polls, for NFS (default 2; fractions ok)\n"
          "  --settle S              a version without a manifest counts once unchanged this long (default 2)\n"
          "  --require-signature     refuse versions without a valid signature from a trusted key\n"
          "  --trusted-key FILE      a public (Ed25519) or shared (HMAC) key file; repeatable\n"
          "                          (with --require-signature a config.json needs config.json.sig too)\n"
          "  --backend-dir DIR       plug-in backends: a config.json \"backend\": \"NAME\" loads DIR/NAME.so;\n"
          "                          DIR must lie outside the repository (default: no plug-ins)\n"
          "  --threads N             compute threads per model run (default 1)\n"
          "  --instances N           concurrent runs per version (default 2)\n"
          "  --loader-priority P     CPU priority of loads and warm-ups: low (default; 10 nice steps\n"
          "                          below the server), idle (SCHED_IDLE: only CPU time requests leave\n"
          "                          unused) or normal\n"
          "  --max-body-bytes N      largest request body accepted (default 67108864 = 64 MiB)\n"
          "  --max-connections N     concurrent connections (default 256)\n"
          "  --idle-timeout S        close idle or stalled connections after S seconds (default 120)\n"
          "  --request-timeout S     a request's head must arrive within S seconds (default 30), its body\n"
          "                          within S more seconds plus its length at --min-body-rate\n"
          "  --min-body-rate BYTES   slowest accepted body upload, bytes per second (default 65536)\n"
          "  --max-client-connections N  connections one client address may hold (default: half of\n"
          "                          --max-connections); /v2/health/* and /metrics have 8 more slots\n"
          "  --memory-limit BYTES    refuse loads beyond this (default: cgroup limit or RAM)\n"
          "  --trim-delay S          hand memory freed by retired versions back to the system once no\n"
          "                          version has been freed for S seconds (default 5; 0: at once); until\n"
          "                          then the next versions reuse it\n"
          "  --log-level L           debug, info or warn (default info)\n"
          "  --trace FILE            write one JSON line per request and per reload stage (scan, load,\n"
          "                          warmup, swap, free, trim) to FILE, with monotonic-clock times, to see\n"
          "                          what a reload costs the requests beside it (docs/SERVING.md)\n"
          "\n"
          "Signals: SIGHUP rescans the repository; SIGTERM/SIGINT stop accepting connections, let\n"
          "requests in flight finish, and exit 0. Endpoints: see docs/SERVING.md.\n");
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

int hs_cmd_serve(int argc, char **argv) {
  const char *repo = NULL, *host = "127.0.0.1", *trace = NULL, *backend_dir = NULL;
  const char *keys[MAX_KEYS];
  size_t n_keys = 0;
  bool require_sig = false;
  double poll_s = 2, settle_s = 2, idle_s = 120, trim_s = 5, request_s = 30;
  unsigned long long min_rate = 64 << 10, per_ip = 0;
  hs_loader_priority loader_prio = HS_LOADER_LOW;
  unsigned long long port = 8000, threads = 1, instances = 2, max_body = 64ull << 20, max_conn = 256, mem_limit = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool bad = false;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--require-signature")) {
      require_sig = true;
      continue;
    } else if (!v) {
      fprintf(stderr, "hotserve serve: %s needs a value (or is unknown)\n", a);
      usage(stderr);
      return 2;
    } else if (!strcmp(a, "--model-repository")) {
      repo = v;
    } else if (!strcmp(a, "--backend-dir")) {
      backend_dir = v;
    } else if (!strcmp(a, "--host")) {
      host = v;
    } else if (!strcmp(a, "--http-port")) {
      bad = parse_ull(v, 65535, &port) != 0;
    } else if (!strcmp(a, "--poll-interval")) {
      bad = parse_seconds(v, &poll_s) != 0 || poll_s < 0.01;
    } else if (!strcmp(a, "--trim-delay")) {
      bad = parse_seconds(v, &trim_s) != 0;
    } else if (!strcmp(a, "--settle")) {
      bad = parse_seconds(v, &settle_s) != 0;
    } else if (!strcmp(a, "--idle-timeout")) {
      bad = parse_seconds(v, &idle_s) != 0 || idle_s < 1;
    } else if (!strcmp(a, "--request-timeout")) {
      bad = parse_seconds(v, &request_s) != 0 || request_s < 0.1;
    } else if (!strcmp(a, "--min-body-rate")) {
      bad = parse_ull(v, 1ull << 40, &min_rate) != 0 || min_rate == 0;
    } else if (!strcmp(a, "--max-client-connections")) {
      bad = parse_ull(v, 100000, &per_ip) != 0 || per_ip == 0;
    } else if (!strcmp(a, "--trusted-key")) {
      if (n_keys == MAX_KEYS) {
        fprintf(stderr, "hotserve serve: at most %d --trusted-key options\n", MAX_KEYS);
        return 2;
      }
      keys[n_keys++] = v;
    } else if (!strcmp(a, "--threads")) {
      bad = parse_ull(v, 256, &threads) != 0 || threads == 0;
    } else if (!strcmp(a, "--loader-priority")) {
      bad = !v || (strcmp(v, "low") && strcmp(v, "idle") && strcmp(v, "normal"));
      if (!bad) loader_prio = !strcmp(v, "idle") ? HS_LOADER_IDLE : !strcmp(v, "normal") ? HS_LOADER_NORMAL : HS_LOADER_LOW;
    } else if (!strcmp(a, "--instances")) {
      bad = parse_ull(v, 64, &instances) != 0 || instances == 0;
    } else if (!strcmp(a, "--max-body-bytes")) {
      bad = parse_ull(v, 1ull << 34, &max_body) != 0 || max_body == 0;
    } else if (!strcmp(a, "--max-connections")) {
      bad = parse_ull(v, 100000, &max_conn) != 0 || max_conn == 0;
    } else if (!strcmp(a, "--memory-limit")) {
      bad = parse_ull(v, ~0ull, &mem_limit) != 0;
    } else if (!strcmp(a, "--trace")) {
      bad = !v || !*v;
      trace = v;
    } else if (!strcmp(a, "--log-level")) {
      if (!strcmp(v, "debug")) hs_log_set_level(HS_LOG_DEBUG);
      else if (!strcmp(v, "info")) hs_log_set_level(HS_LOG_INFO);
      else if (!strcmp(v, "warn")) hs_log_set_level(HS_LOG_WARN);
      else bad = true;
    } else {
      fprintf(stderr, "hotserve serve: unknown option %s\n", a);
      usage(stderr);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "hotserve serve: bad value for %s: %s\n", a, v);
      return 2;
    }
    i++;
  }
  if (!repo) {
    fprintf(stderr, "hotserve serve: --model-repository DIR is required\n");
    usage(stderr);
    return 2;
  }

  hs_error err;
  hs_error_clear(&err);
  if (hs_backend_set_plugin_dir(backend_dir, repo, &err) != HS_OK) {
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

  hs_registry_options ro = {.root = repo, .poll_ms = (int)(poll_s * 1000 + 0.5), .settle_ms = (int)(settle_s * 1000 + 0.5),
                            .require_signature = require_sig, .key_paths = keys, .n_keys = n_keys,
                            .threads = (int)threads, .instances = (int)instances, .loader_priority = loader_prio, .memory_limit = (size_t)mem_limit,
                            .trace_path = trace, .trim_delay_ms = (int)(trim_s * 1000 + 0.5), .watch = true};
  hs_registry *reg = NULL;
  if (hs_registry_create(&ro, &reg, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    return 1;
  }
  hs_http_options ho = {.host = host, .port = (int)port, .max_body_bytes = (size_t)max_body,
                        .max_connections = (unsigned)max_conn, .idle_timeout_s = (unsigned)idle_s,
                        .request_timeout_s = request_s, .min_body_rate = (size_t)min_rate,
                        .per_ip_connections = (unsigned)per_ip};
  hs_http_server *http = NULL;
  if (hs_http_start(&ho, reg, &http, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    hs_registry_destroy(reg);
    return 1;
  }
  fprintf(stderr, "hotserve: listening on http://%s:%d\n", host, hs_http_port(http));
  fflush(stderr);

  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      HS_LOGI("SIGHUP: rescanning the repository");
      hs_registry_kick(reg);
      continue;
    }
    HS_LOGI("%s: draining requests in flight, then exiting", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  hs_http_stop(http, 30000);
  hs_registry_destroy(reg);
  HS_LOGI("stopped");
  return 0;
}

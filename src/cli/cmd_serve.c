/* cmd_serve.c - `hotserve serve`: parse options, start the registry and HTTP server, handle signals. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
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
          "  --no-inotify            see repository changes by polling alone (NFS, where inotify sees\n"
          "                          nothing, or trees beyond the inotify watch limit)\n"
          "  --settle S              a version without a manifest counts once unchanged this long (default 2)\n"
          "  --require-signature     refuse versions without a valid signature from a trusted key\n"
          "  --trusted-key FILE      a public (Ed25519) or shared (HMAC) key file; repeatable\n"
          "  --threads N             compute threads per model run (default 1)\n"
          "  --instances N           concurrent runs per version (default 2)\n"
          "  --loader-priority P     CPU priority of loads and warm-ups: low (default; 10 nice steps\n"
          "                          below the server), idle (SCHED_IDLE: only CPU time requests leave\n"
          "                          unused) or normal\n"
          "  --max-body-bytes N      largest request body accepted (default 67108864 = 64 MiB)\n"
          "  --max-connections N     concurrent connections (default 256)\n"
          "  --idle-timeout S        close idle or stalled connections after S seconds (default 120)\n"
          "  --memory-limit BYTES    refuse loads beyond this (default: cgroup limit or RAM)\n"
          "  --trim-delay S          hand memory freed by retired versions back to the system once no\n"
          "                          version has been freed for S seconds (default 5; 0: at once); until\n"
          "                          then the next versions reuse it\n"
          "  --strict-readiness      /v2/health/ready answers 200 only while every version the repository\n"
          "                          selects is serving (Triton's semantics); by default it stays 200\n"
          "                          once start-up loads are done while what was served still is, so a\n"
          "                          new version that fails never takes a replica out of rotation\n"
          "  --shutdown-grace S      on SIGTERM, keep serving for S seconds while /v2/health/ready says\n"
          "                          503 (a lame-duck period for load balancers), then drain (default 0)\n"
          "  --log-level L           debug, info or warn (default info)\n"
          "  --trace FILE            write one JSON line per request and per reload stage (scan, load,\n"
          "                          warmup, swap, free, trim) to FILE, with monotonic-clock times, to see\n"
          "                          what a reload costs the requests beside it (docs/SERVING.md)\n"
          "\n"
          "The server listens before the first load and answers not-ready until the start-up loads\n"
          "are done. Signals: SIGHUP rescans the repository; SIGTERM/SIGINT (after --shutdown-grace)\n"
          "stop accepting connections, let requests in flight finish, and exit 0. Endpoints: see\n"
          "docs/SERVING.md.\n");
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

int hs_cmd_serve(int argc, char **argv) {
  const char *repo = NULL, *host = "127.0.0.1", *trace = NULL;
  const char *keys[MAX_KEYS];
  size_t n_keys = 0;
  bool require_sig = false, inotify = true, strict_ready = false;
  double poll_s = 2, settle_s = 2, idle_s = 120, trim_s = 5, grace_s = 0;
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
    } else if (!strcmp(a, "--no-inotify")) {
      inotify = false;
      continue;
    } else if (!strcmp(a, "--strict-readiness")) {
      strict_ready = true;
      continue;
    } else if (!v) {
      fprintf(stderr, "hotserve serve: %s needs a value (or is unknown)\n", a);
      usage(stderr);
      return 2;
    } else if (!strcmp(a, "--model-repository")) {
      repo = v;
    } else if (!strcmp(a, "--host")) {
      host = v;
    } else if (!strcmp(a, "--http-port")) {
      bad = parse_ull(v, 65535, &port) != 0;
    } else if (!strcmp(a, "--poll-interval")) {
      bad = parse_seconds(v, &poll_s) != 0 || poll_s < 0.01;
    } else if (!strcmp(a, "--shutdown-grace")) {
      bad = parse_seconds(v, &grace_s) != 0 || grace_s > 3600;
    } else if (!strcmp(a, "--trim-delay")) {
      bad = parse_seconds(v, &trim_s) != 0;
    } else if (!strcmp(a, "--settle")) {
      bad = parse_seconds(v, &settle_s) != 0;
    } else if (!strcmp(a, "--idle-timeout")) {
      bad = parse_seconds(v, &idle_s) != 0 || idle_s < 1;
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

  /* Signals go to this thread only (sigwait below); every thread started later inherits the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  hs_error err;
  hs_error_clear(&err);
  hs_registry_options ro = {.root = repo, .poll_ms = (int)(poll_s * 1000 + 0.5), .settle_ms = (int)(settle_s * 1000 + 0.5),
                            .require_signature = require_sig, .key_paths = keys, .n_keys = n_keys,
                            .threads = (int)threads, .instances = (int)instances, .loader_priority = loader_prio, .memory_limit = (size_t)mem_limit,
                            .trace_path = trace, .trim_delay_ms = (int)(trim_s * 1000 + 0.5), .watch = true,
                            .watch_inotify = inotify, .background_start = true, .strict_readiness = strict_ready};
  hs_registry *reg = NULL;
  if (hs_registry_create(&ro, &reg, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    return 1;
  }
  hs_http_options ho = {.host = host, .port = (int)port, .max_body_bytes = (size_t)max_body,
                        .max_connections = (unsigned)max_conn, .idle_timeout_s = (unsigned)idle_s};
  hs_http_server *http = NULL;
  if (hs_http_start(&ho, reg, &http, &err) != HS_OK) {
    fprintf(stderr, "hotserve serve: %s\n", err.message);
    hs_registry_destroy(reg);
    return 1;
  }
  fprintf(stderr, "hotserve: listening on http://%s:%d\n", host, hs_http_port(http));
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
    if (grace_s > 0) lame_duck(reg, &set, name, grace_s);
    HS_LOGI("%s: draining requests in flight, then exiting", name);
    break;
  }
  hs_http_stop(http, 30000);
  hs_registry_destroy(reg);
  HS_LOGI("stopped");
  return 0;
}

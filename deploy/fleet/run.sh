#!/usr/bin/env bash
# A hotserve fleet on one machine: N replicas on one shared model repository (polling only, as on NFS),
# HAProxy in front of them with health checks on /v2/health/ready, and a Prometheus server scraping every
# replica with the shipped alerting rules (deploy/prometheus/hotserve-rules.yml). Everything listens on
# 127.0.0.1 on free ports; configuration and data live in a work directory. It stops by itself after
# --duration seconds (or on SIGINT/SIGTERM), stopping every process it started; its exit status is 1 when a
# replica did not exit 0 after SIGTERM (a crash, or a sanitizer report at exit).
#
#   deploy/fleet/run.sh --repo DIR [--replicas 3] [--duration 600] [--poll-interval 1]
#                       [--scrape-interval 5] [--eval-interval 5] [--workdir DIR] [--keep]
#                       [--hotserve build/src/hotserve] [-- extra `hotserve serve` options]
#
# Once everything is up it writes WORKDIR/fleet.env (shell syntax: LB_URL, PROMETHEUS_URL, REPLICA_URLS,
# PIDS) and prints "fleet: ready". docs/DEPLOY.md walks through an example; tests/system/test_fleet.py
# drives it. Needs haproxy, prometheus and curl (scripts/deps.sh, group test).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source_dir="$(cd "$here/../.." && pwd)"

replicas=3 duration=600 poll=1 scrape=5 eval_s=5 repo="" workdir="" keep=false
hotserve="$source_dir/build/src/hotserve"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo="$2"; shift 2 ;;
    --replicas) replicas="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --poll-interval) poll="$2"; shift 2 ;;
    --scrape-interval) scrape="$2"; shift 2 ;;
    --eval-interval) eval_s="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --hotserve) hotserve="$2"; shift 2 ;;
    --keep) keep=true; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$repo" ] && [ -d "$repo" ] || { echo "run.sh: --repo DIR (an existing model repository) is required" >&2; exit 2; }
[ -x "$hotserve" ] || { echo "run.sh: no hotserve binary at $hotserve (build first, or --hotserve)" >&2; exit 2; }
for tool in haproxy prometheus curl python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (bash scripts/deps.sh test)" >&2; exit 2; }
done
case "$replicas" in ''|*[!0-9]*) echo "run.sh: --replicas N" >&2; exit 2 ;; esac
[ "$replicas" -ge 1 ] && [ "$replicas" -le 32 ] || { echo "run.sh: --replicas between 1 and 32" >&2; exit 2; }
repo="$(cd "$repo" && pwd)"
made_workdir=false
if [ -z "$workdir" ]; then
  workdir="$(mktemp -d /tmp/hotserve-fleet.XXXXXX)"
  made_workdir=true
fi
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"

pids=() replica_pids=()
stop_all() {
  trap - EXIT INT TERM
  echo "fleet: stopping ${#pids[@]} processes" >&2
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  local bad=0 rc
  for p in "${pids[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done # 30 s to drain
    kill -KILL "$p" 2>/dev/null || true
    rc=0
    wait "$p" 2>/dev/null || rc=$?
    for r in "${replica_pids[@]}"; do
      if [ "$r" = "$p" ] && [ "$rc" != 0 ]; then
        echo "fleet: replica pid $p exited with status $rc (see its log)" >&2
        bad=1
      fi
    done
  done
  if $made_workdir && ! $keep; then rm -rf "$workdir"; fi
  echo "fleet: stopped" >&2
  [ "$bad" = 0 ] || exit 1 # a replica that crashed or reported a sanitizer error at exit
}
trap stop_all EXIT
trap 'exit 0' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for SECONDS WHAT CMD...: runs CMD every 0.1 s until it succeeds, at most SECONDS
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then echo "fleet: $what not up within ${limit}s" >&2; return 1; fi
    sleep 0.1
  done
}

# --- replicas: port 0 picks a free port; each prints it on its listening line ----------------------------------
replica_urls=()
for i in $(seq 1 "$replicas"); do
  log="$workdir/replica$i.log"
  "$hotserve" serve --model-repository "$repo" --host 127.0.0.1 --http-port 0 --no-inotify \
    --poll-interval "$poll" ${extra[@]+"${extra[@]}"} 2>"$log" &
  pids+=($!)
  replica_pids+=($!)
done
for i in $(seq 1 "$replicas"); do
  log="$workdir/replica$i.log"
  wait_for 60 "replica $i's listening line" grep -q '^hotserve: listening on http://' "$log"
  port="$(sed -n 's|^hotserve: listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$log" | head -1)"
  replica_urls+=("http://127.0.0.1:$port")
done
for u in "${replica_urls[@]}"; do wait_for 300 "$u ready" curl -sf "$u/v2/health/ready"; done

# --- HAProxy: round robin over the ready replicas ------------------------------------------------------------------
lb_port="$(free_port)"
{
  cat <<EOF
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option redispatch
    retries 3
    retry-on conn-failure empty-response
frontend hotserve
    bind 127.0.0.1:$lb_port
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
EOF
  for i in $(seq 1 "$replicas"); do echo "    server replica$i ${replica_urls[$((i - 1))]#http://} check"; done
} >"$workdir/haproxy.cfg"
haproxy -c -q -f "$workdir/haproxy.cfg"
haproxy -db -f "$workdir/haproxy.cfg" >"$workdir/haproxy.log" 2>&1 &
pids+=($!)
lb_url="http://127.0.0.1:$lb_port"
wait_for 30 "HAProxy" curl -sf "$lb_url/v2/health/ready"

# --- Prometheus: scrapes every replica, evaluates the shipped rules --------------------------------------------------
prom_port="$(free_port)"
{
  cat <<EOF
global:
  scrape_interval: ${scrape}s
  evaluation_interval: ${eval_s}s
rule_files:
  - $source_dir/deploy/prometheus/hotserve-rules.yml
scrape_configs:
  - job_name: hotserve
    metrics_path: /metrics
    static_configs:
      - targets:
EOF
  for u in "${replica_urls[@]}"; do echo "          - ${u#http://}"; done
} >"$workdir/prometheus.yml"
prometheus --config.file="$workdir/prometheus.yml" --storage.tsdb.path="$workdir/prometheus-data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$workdir/prometheus.log" 2>&1 &
pids+=($!)
prom_url="http://127.0.0.1:$prom_port"
wait_for 60 "Prometheus" curl -sf "$prom_url/-/ready"

{
  echo "LB_URL=$lb_url"
  echo "PROMETHEUS_URL=$prom_url"
  echo "REPLICA_URLS=\"${replica_urls[*]}\""
  echo "PIDS=\"${pids[*]}\""
  echo "WORKDIR=$workdir"
} >"$workdir/fleet.env.tmp"
mv "$workdir/fleet.env.tmp" "$workdir/fleet.env"
echo "fleet: ready: $replicas replicas behind $lb_url, Prometheus at $prom_url, work directory $workdir" >&2
echo "fleet: ready"

sleep "$duration" &
pids+=($!)
wait $! || true

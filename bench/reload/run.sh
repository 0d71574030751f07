#!/usr/bin/env bash
# bench/reload/run.sh - MobileNetV2 under wrk in alternating blocks, 20 s without reloads and 20 s with a
# new version every 2 s (A B A B A B A; versions published ahead and renamed in, --publish live to run
# the publisher beside the server); prints and records the ratios. Options go to reload_bench.py
# (--duration S with reloads in all, --blocks N, --period S, --connections N, --model resnet50,
# --publish ahead|live, --no-write). Builds build/ if needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x build/src/hotserve ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j2 --target hotserve
fi
exec /usr/bin/python3 bench/reload/reload_bench.py "$@"

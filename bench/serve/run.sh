#!/usr/bin/env bash
# bench/serve/run.sh - hotserve's own per-request cost: a tiny model over HTTP with wrk at
# concurrency 1, 16, 64, JSON and binary bodies. Builds build/ if needed; options go to
# serve_bench.py (--duration S per run, --model mlp|add, --concurrency 1,16,64, --no-write).
# Writes bench/results/serve-<date>.md and the "serve" section of bench/README.md.
# --batching (first argument): the dynamic batching table instead (batch_bench.py: MobileNetV2 and
# the MLP with and without batching at concurrency 1, 16, 64; needs bench/setup.sh's models);
# writes bench/results/serve-batching-<date>.md and its bench/README.md section.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x build/src/hotserve ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j2 --target hotserve
fi
if [ "${1:-}" = --batching ]; then
  shift
  exec /usr/bin/python3 bench/serve/batch_bench.py "$@"
fi
exec /usr/bin/python3 bench/serve/serve_bench.py "$@"

#!/usr/bin/env bash
# run.sh - load benchmark in one command: time to ready (verify, load, warm-up) and memory while two versions
# overlap, hotserve vs ONNX Runtime session creation, for ResNet-50 and MobileNetV2.
#
#   bash bench/load/run.sh [--loads 5] [--threads 2]
#
# Builds hotserve (Release, in build-bench/ unless HOTSERVE_BIN names a binary), makes the models
# (tools/models/make_models.py into HOTSERVE_MODEL_CACHE, default build/models), installs onnxruntime-node into
# bench/node_modules if missing, then runs bench/load/load_bench.py, which prints the tables and writes them to
# bench/results/load-DATE.md and into bench/README.md. Never part of ctest.
set -euo pipefail
for arg in "$@"; do   # help without building, installing or making models first
  case "$arg" in -h|--help) exec /usr/bin/python3 "$(dirname "$0")/load_bench.py" --help ;; esac
done
source "$(dirname "$0")/../setup.sh"
exec "$PY" bench/load/load_bench.py --hotserve "$HOTSERVE_BIN" --cache "$CACHE" \
  --results bench/results --readme bench/README.md --command "$SHOWN_CMD" "$@"

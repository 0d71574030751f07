#!/usr/bin/env bash
# run.sh - engine benchmark in one command: hotserve vs ONNX Runtime vs OpenCV DNN on ResNet-50, MobileNetV2,
# MobileNetV3, a text detector and recognizer, and the transformer / recurrent rows.
#
#   bash bench/engine/run.sh [--threads N] [--repeat N] [--rounds N] [--ort-spin both|on|off] [--only LABEL ...]
#   (defaults: 2 threads, 20 timed runs per round, 3 interleaved rounds, ORT with and without spin-waiting)
#
# Builds hotserve (Release, in build-bench/ unless HOTSERVE_BIN names a binary), makes the models and inputs
# (tools/models/make_models.py into HOTSERVE_MODEL_CACHE, default build/models), installs onnxruntime-node into
# bench/node_modules if missing, then runs bench/engine/engine_bench.py, which prints the table and writes it to
# bench/results/engine-DATE.md and into bench/README.md. CPU heavy for a minute or two; never part of ctest.
set -euo pipefail
for arg in "$@"; do   # help without building, installing or making models first
  case "$arg" in -h|--help) exec /usr/bin/python3 "$(dirname "$0")/engine_bench.py" --help ;; esac
done
source "$(dirname "$0")/../setup.sh"
exec "$PY" bench/engine/engine_bench.py --hotserve "$HOTSERVE_BIN" --cache "$CACHE" \
  --results bench/results --readme bench/README.md --command "$SHOWN_CMD" "$@"

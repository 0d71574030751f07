#!/usr/bin/env bash
# exec_cost.sh - CPU time of the serving execution path's own costs (tests/serving/bench_exec.c): the
# hand-off of a run to a compute thread, and replanning when batch sizes change, on the 64-wide MLP
# of serve_bench.py (dynamic batch) and MobileNetV2 (HOTSERVE_MODEL_CACHE/mobilenet_v2_dyn.onnx).
# Usage: bench/serve/exec_cost.sh [BUILD_DIR]   (default build; needs its bench_exec target built)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$tmp/mlp.onnx" <<'PY'
import sys
sys.path.insert(0, "bench/serve")
from batch_bench import dyn_mlp_bytes
open(sys.argv[1], "wb").write(dyn_mlp_bytes()[0])
PY
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== mlp (64 wide), 20000 runs per row"
"$build/tests/serving/bench_exec" "$tmp/mlp.onnx" 64 20000
mnv2=${HOTSERVE_MODEL_CACHE:-.models}/mobilenet_v2_dyn.onnx
if [ -f "$mnv2" ]; then
  echo "== mobilenet_v2 (dynamic batch), 20 runs per row"
  "$build/tests/serving/bench_exec" "$mnv2" $((3 * 224 * 224)) 20
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

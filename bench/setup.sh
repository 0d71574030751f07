# setup.sh - sourced by bench/engine/run.sh and bench/load/run.sh: the preparation both share.
# Expects the caller's "$0" and "$@"; sets ROOT, PY, CACHE, SHOWN_CMD and HOTSERVE_BIN (builds a Release
# hotserve in build-bench/ unless HOTSERVE_BIN names one), makes the models and inputs
# (tools/models/make_models.py into HOTSERVE_MODEL_CACHE, default build/models), and installs
# onnxruntime-node into bench/node_modules when missing.
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PY=/usr/bin/python3
CACHE=${HOTSERVE_MODEL_CACHE:-$ROOT/build/models}
SHOWN_CMD="bash $0 $*"
[ -n "${HOTSERVE_BIN:-}" ] && SHOWN_CMD="HOTSERVE_BIN=$HOTSERVE_BIN $SHOWN_CMD"
if [ -z "${HOTSERVE_BIN:-}" ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-bench -j2 --target hotserve >/dev/null
  HOTSERVE_BIN=$ROOT/build-bench/src/hotserve
fi
"$PY" tools/models/make_models.py "$CACHE" >&2
if [ ! -d bench/node_modules/onnxruntime-node ]; then
  (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund >&2)
fi

#!/bin/sh
# update_conformance_table.sh - rewrites tests/onnx/conformance_table.md from a build's conformance runner.
#
#     tests/onnx/update_conformance_table.sh [BUILD_DIR]     (default: build)
#
# Run after adding an op or enabling cases, and commit the table with the change.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
exec "$build/tests/onnx/test_conformance" -t "$here/conformance_table.md" >/dev/null

#!/usr/bin/env bash
# Placeholder until `hotserve serve` lands: builds the project.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build >/dev/null && cmake --build build -j"$(nproc)"
./build/src/hotserve --help

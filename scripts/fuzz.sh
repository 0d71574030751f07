#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each on its committed seed corpus
# for a bounded time. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 30).
# A crash fails the script; the reproducer is left in build-fuzz/crashes/ for a regression case.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DHS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
mkdir -p build-fuzz/crashes build-fuzz/work
status=0
for bin in build-fuzz/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  corpus=fuzz/corpus/${name#fuzz_}
  work=build-fuzz/work/${name#fuzz_}
  rm -rf "$work" && mkdir -p "$work"
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  echo "fuzz: $name for ${secs}s on $corpus"
  if ! "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
       -artifact_prefix=build-fuzz/crashes/"$name"- "$work" >build-fuzz/"$name".log 2>&1; then
    echo "fuzz: $name FAILED (see build-fuzz/$name.log and build-fuzz/crashes/)"
    tail -40 build-fuzz/"$name".log
    status=1
  else
    grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" build-fuzz/"$name".log | tail -1 || true
  fi
done
exit $status

#!/usr/bin/env bash
# run_sanitized.sh - the system tests against sanitizer builds, for CI:
#   ASan+UBSan (build-asan, -DHS_SANITIZE=address): every test labelled "system";
#   TSan       (build-tsan, -DHS_SANITIZE=thread):  the reload/concurrency tests ("concurrency").
# Usage: tests/system/run_sanitized.sh [asan|tsan|both]   (default both). Exits non-zero on any failure.
# Runs are kept short: the memory test does HS_MEM_RELOADS (default 200) reloads instead of 1000.
# A sanitizer report makes the server exit non-zero at SIGTERM, which the harness turns into a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-both}
jobs=${HS_JOBS:-2}
here=$PWD/tests/system
export HS_MEM_RELOADS=${HS_MEM_RELOADS:-200}

build() {  # build DIR SANITIZER
  cmake -S . -B "$1" -DHS_SANITIZE="$2" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$1" -j"$jobs" --target hotserve
}

status=0
if [ "$what" = asan ] || [ "$what" = both ]; then
  build build-asan address
  (cd build-asan && HS_SANITIZED=address \
     ASAN_OPTIONS="detect_leaks=1:quarantine_size_mb=32:malloc_context_size=20" \
     UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
     ctest -L system --output-on-failure) || status=1
fi
if [ "$what" = tsan ] || [ "$what" = both ]; then
  build build-tsan thread
  (cd build-tsan && HS_SANITIZED=thread \
     TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1:suppressions=$here/tsan.supp" \
     ctest -L concurrency --output-on-failure) || status=1
fi
exit $status

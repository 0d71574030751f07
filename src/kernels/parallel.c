/* parallel.c - hs_kernels_parallel_for: a few independent parts of an op's work on the OpenMP team. */
#include "kernels/parallel.h"

#include <omp.h>

#include "kernels/kernels.h"

/* Under ThreadSanitizer the parts run on the calling thread: libgomp starts and joins its team
 * through futexes TSan does not see (its own code is not instrumented), so every part would seem to
 * race with what the calling thread wrote before the region and after it, down to the region's
 * captured variables on the caller's stack. TSan could not check the parts against each other
 * either; the split itself is checked by the kernels tests (a broken split fails
 * check_elementwise.py) and by the ASan/UBSan build, which runs the parts in parallel. */
#if defined(__SANITIZE_THREAD__)
#define HS_SERIAL_PARTS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HS_SERIAL_PARTS 1
#endif
#endif
#ifndef HS_SERIAL_PARTS
#define HS_SERIAL_PARTS 0
#endif

void hs_kernels_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx) {
  int threads = hs_kernels_threads();
  if (threads > n) threads = n;
  if (threads <= 1 || omp_in_parallel() || HS_SERIAL_PARTS) {
    for (int i = 0; i < n; i++) fn(ctx, i);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int i = 0; i < n; i++) fn(ctx, i);
}

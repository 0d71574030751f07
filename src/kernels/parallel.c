/* parallel.c - hs_kernels_parallel_for: a few independent parts of an op's work on the OpenMP team. */
#include "kernels/parallel.h"

#include <omp.h>

#include "kernels/kernels.h"

void hs_kernels_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx) {
  int threads = hs_kernels_threads();
  if (threads > n) threads = n;
  if (threads <= 1 || omp_in_parallel()) {
    for (int i = 0; i < n; i++) fn(ctx, i);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int i = 0; i < n; i++) fn(ctx, i);
}

/* parallel.h - a parallel loop on the kernels' compute threads, for ops whose work splits into a few
 * independent parts (the two directions of a bidirectional LSTM). */
#ifndef HS_KERNELS_PARALLEL_H
#define HS_KERNELS_PARALLEL_H

/* Calls fn(ctx, i) for i in 0..n-1, on up to min(n, hs_kernels_threads()) threads of the calling
 * thread's OpenMP team (inline, one after the other, when that is 1 or the caller is already inside a
 * parallel region). Returns when every call has returned. Inside fn, oneDNN calls run on one thread. */
void hs_kernels_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx);

#endif

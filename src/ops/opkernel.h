/* opkernel.h - how an op finds the kernels-layer kernel for the shapes it is planned or run with. */
#ifndef HS_OPS_OPKERNEL_H
#define HS_OPS_OPKERNEL_H

/*
 * DESIGN
 * An op that runs on src/kernels keeps an hs_kcache in its node state (made by prepare(), freed
 * with the graph). The kernel for a set of shapes is built the first time a session plans them
 * (scratch_bytes() asks for it), so run() finds it again without a lock and builds nothing. When no
 * kernel can be built (an attribute combination the kernels lack, a full cache) the op falls back
 * to its plain-C reference code, which computes the same answer.
 *
 * HS_KERNELS_STRICT=1 in the environment turns that silent fallback into an error, so tests can
 * prove the kernel path ran rather than the reference.
 */

#include <stdint.h>

#include "kernels/kcache.h"
#include "ir/ir.h"

/* 1 when HS_KERNELS_STRICT=1 (read once). */
int hs_ops_strict(void);

/* The kernel cached under key[0..nkey), built with build(ctx) on a miss. When batch > 0 the
 * kernel's variant for that leading dimension is prepared too (keys then leave the batch out).
 * Returns NULL when the plain-C path must run; then, in strict mode and when strict_err is not
 * NULL, *strict_err says why (callers pass NULL while planning, where a fallback is not yet an
 * error, and their hs_error from run()). */
hs_kernel *hs_op_kernel(const hs_node *n, hs_kcache *cache, const int64_t *key, int nkey, hs_kcache_build_fn build,
                        void *ctx, int64_t batch, hs_error *strict_err);

/* prepare() helper for ops whose whole state is one kernel cache: gives n a state holding an
 * initialised hs_kcache (reached with hs_op_cache) and the matching free_state. */
int hs_op_attach_cache(hs_node *n, hs_error *err);
static inline hs_kcache *hs_op_cache(const hs_node *n) { return (hs_kcache *)n->state; }

/* Runs kernel k for node n; an error names the node. */
int hs_op_run_kernel(const hs_node *n, hs_kernel *k, const hs_kernel_args *args, hs_error *err);

/* run()'s error when hs_op_kernel refused the plain path in strict mode (kerr is its strict_err). */
int hs_op_strict_error(const hs_node *n, const hs_error *kerr, hs_error *err);

/* Scratch bytes of kernel k for batch (0 when k is NULL or its size is unknown). */
size_t hs_op_kernel_scratch(hs_kernel *k, int64_t batch);

#endif

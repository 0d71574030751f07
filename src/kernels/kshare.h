/* kshare.h - a process-wide registry of prepared weight kernels keyed by content, shared between model versions. */
#ifndef HS_KERNELS_KSHARE_H
#define HS_KERNELS_KSHARE_H

/*
 * DESIGN
 * Two versions of a model often hold byte-identical layers (a new head on a frozen backbone). A
 * convolution kernel is fully determined by its parameters, its weights and its bias, so
 * hs_kshare_conv keys it by the SHA-256 of all three (every field of hs_conv_params except the
 * batch, which only picks a variant, and the pointers, whose bytes are hashed instead). When the key
 * is registered, the caller gets a reference to that kernel instead of copying and reordering the
 * weights again; otherwise it builds the kernel and registers it. A kernel is thread-safe once built
 * (variant 0 and its reordered weights are immutable; later batch variants are added under the
 * kernel's own lock, as when two sessions of one version plan at once), so two versions may run it
 * at the same time. hs_kernel_destroy on a registered kernel drops one reference; the last one
 * removes it from the registry and frees it. One mutex guards the registry; lookups happen at load
 * and plan time only, never per run. HOTSERVE_KERNEL_SHARE=0 in the environment turns sharing off.
 */

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

typedef struct hs_kshare_stats {
  uint64_t kernels;      /* kernels registered now */
  uint64_t bytes;        /* their reordered weight bytes (variant 0's, as registered) */
  uint64_t hits;         /* lookups that took a reference to a registered kernel, since start */
  uint64_t hit_bytes;    /* weight bytes those hits did not copy */
  uint64_t builds;       /* kernels built and registered, since start */
  uint64_t build_bytes;  /* their weight bytes */
} hs_kshare_stats;

/* A conv kernel for p (p->weights required; p->weights_from must be NULL): a reference to the
 * registered kernel with the same content, or a new one, registered. *shared (may be NULL) is set to
 * 1 when it was already registered. Release with hs_kernel_destroy. Returns 0 or the constructor's
 * error. */
int hs_kshare_conv(const hs_conv_params *p, hs_kernel **out, int *shared, hs_error *err);

/* The registry's counters now. */
void hs_kshare_get_stats(hs_kshare_stats *s);

/* Counters of the calling thread since it last called this with reset (loads run on one thread, so
 * the loader reads what one load shared and built). */
void hs_kshare_thread_stats(hs_kshare_stats *s, int reset);

/* For hs_kernel_destroy: drops one reference of a registered kernel. Returns 1 when the caller must
 * free it (the last reference, now unregistered, or a kernel never registered), 0 otherwise. */
int hs__kshare_release(hs_kernel *k);

#endif

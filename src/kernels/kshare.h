/* kshare.h - a process-wide registry of prepared weight kernels keyed by content, shared between model versions. */
#ifndef HS_KERNELS_KSHARE_H
#define HS_KERNELS_KSHARE_H

/*
 * DESIGN
 * Two versions of a model often hold byte-identical layers (a new head on a frozen backbone). A
 * convolution kernel is fully determined by its parameters, its weights and its bias (every field
 * of hs_conv_params except the batch, which only picks a variant). When a kernel with the same
 * content is registered, the caller gets a reference to it instead of copying and reordering the
 * weights again; otherwise it builds the kernel and registers it.
 *
 * Matching is exact and cheap when nothing matches. An entry keeps a pre-key: the SHA-256 of the
 * parameters (a few hundred bytes), the weights' size and 16 weights sampled at fixed positions,
 * and a copy of the bias. A lookup computes the same for its conv; only an entry equal in all of
 * them is a candidate, and a candidate is confirmed by comparing the weights in full: the entry's
 * kernel writes its weights back in ONNX's layout (an exact reorder) and memcmp decides. A first
 * load, where nothing is registered or nothing matches, thus reads 16 weights per conv, not all of
 * them; the full comparison runs only where sharing is likely.
 *
 * Two ways in. hs_kshare_conv, when a conv kernel is built from weights in memory. And, earlier, at
 * decode time: hs_kshare_find_weights tells the ONNX decoder (through the engine's hs_onnx_share
 * hook) that an initializer's bytes, still in the file buffer, are a registered kernel's weights;
 * the decoder then copies nothing and the graph value holds a reference to that kernel, from which
 * hs_kshare_conv_from later takes the kernel (same parameters and bias) or builds one from its
 * weights read back (anything else differs). A version whose Convs are all shared thus never
 * materialises their float weights. The stream decoder asks the same piece by piece as a tensor
 * arrives (hs_kshare_match_*), so it never holds one whole either.
 *
 * A kernel is thread-safe once built (variant 0 and its reordered weights are immutable; later batch
 * variants are added under the kernel's own lock, as when two sessions of one version plan at once),
 * so two versions may run it at the same time. hs_kernel_destroy on a registered kernel drops one
 * reference; the last one removes it from the registry and frees it. One mutex guards the registry;
 * lookups happen at load and plan time only, never per run. hs_kshare_set_enabled(0) (`hotserve
 * serve --kernel-share off`) turns sharing off for the whole process (both ways in).
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
  uint64_t found;        /* initializers hs_kshare_find_weights matched (the decoder copied none), since start */
  uint64_t found_bytes;  /* their bytes, in ONNX's layout */
} hs_kshare_stats;

/* A conv kernel for p (p->weights required; p->weights_from must be NULL): a reference to the
 * registered kernel with the same content, or a new one, registered. *shared (may be NULL) is set to
 * 1 when it was already registered. Release with hs_kernel_destroy. Returns 0 or the constructor's
 * error. */
int hs_kshare_conv(const hs_conv_params *p, hs_kernel **out, int *shared, hs_error *err);

/* Turns sharing on (the default) or off for the loads that start afterwards, process-wide; kernels
 * already registered stay until their last reference goes. */
void hs_kshare_set_enabled(int on);
/* Whether sharing is on. */
int hs_kshare_enabled(void);

/* At decode time: when a registered conv kernel's weights, in ONNX's layout, are byte for byte
 * w[0..nbytes) (compared in full), takes a reference to that kernel into *ref and returns 1; else
 * 0. Release the reference with hs_kernel_destroy. Counts no hit: the kernel is not in use yet. */
int hs_kshare_find_weights(const void *w, size_t nbytes, hs_kernel **ref);

/* Releases the calling thread's read-back buffer (hs_wscratch_release: unmapped, or kept warm for the
 * next load once the weight pool is on), which hs_kshare_find_weights keeps from one lookup to
 * the next (one slice of the weights compared: at most 256 KiB, unless a layout's block needs more):
 * the decoder's caller calls this when the decode is over. Harmless when there is none. */
void hs_kshare_release_scratch(void);

/* The same lookup for a tensor whose bytes arrive in pieces, never held whole (the stream decoder,
 * through the engine's hs_onnx_share). begin: every registered kernel whose weights (or fused
 * depthwise weights) have nbytes bytes becomes a candidate, referenced so it cannot go away; returns
 * 1 with *out, or 0 (*out NULL) when there is none. feed: the next piece, in order; candidates that
 * differ anywhere in it drop (the samples first, then the bytes, read back a slice at a time as
 * hs_kshare_find_weights does); returns 1 while one is left. prefix: the first n bytes fed, read
 * back from the candidate that matched them (the one alive longest: valid once all dropped, for n
 * up to the offset of the piece where the last one dropped, or for everything fed while one is
 * alive); 0, or -1 when n is past that. end: with ref, when all nbytes were fed and a candidate is
 * equal to every one of them, takes its reference into *ref and returns 1 (counted as found);
 * releases every other candidate and m in any case. */
typedef struct hs_kshare_match hs_kshare_match;
int hs_kshare_match_begin(size_t nbytes, hs_kshare_match **out);
int hs_kshare_match_feed(hs_kshare_match *m, const void *piece, size_t n);
int hs_kshare_match_prefix(hs_kshare_match *m, void *dst, size_t n);
int hs_kshare_match_end(hs_kshare_match *m, hs_kernel **ref);

/* A conv kernel for p whose weights are src's (a reference from hs_kshare_find_weights; p->weights
 * and p->weights_from NULL): src itself, one more reference, when p's parameters and bias are the
 * ones it was built with; otherwise a kernel built (or found) from src's weights read back, as
 * hs_kshare_conv. Release with hs_kernel_destroy; src stays the caller's. */
int hs_kshare_conv_from(const hs_conv_params *p, const hs_kernel *src, hs_kernel **out, int *shared,
                        hs_error *err);

/* The registry's counters now. */
void hs_kshare_get_stats(hs_kshare_stats *s);

/* Counters of the calling thread since it last called this with reset (loads run on one thread, so
 * the loader reads what one load shared and built). */
void hs_kshare_thread_stats(hs_kshare_stats *s, int reset);

/* For hs_kernel_destroy: drops one reference of a registered kernel. Returns 1 when the caller must
 * free it (the last reference, now unregistered, or a kernel never registered), 0 otherwise. */
int hs__kshare_release(hs_kernel *k);

#endif

/* kcache.h - a small thread-safe cache of kernels keyed by shape, for ops whose shapes are known only at plan time. */
#ifndef HS_KERNELS_KCACHE_H
#define HS_KERNELS_KCACHE_H

/*
 * DESIGN
 * An op's prepare() cannot build a kernel when its input shapes are only known once a session plans
 * a run. It keeps an hs_kcache in its node state instead: the first plan (or run) for a shape builds
 * the kernel under the cache's mutex and publishes it with an atomic release; later lookups for that
 * shape take no lock. Entries are never removed until hs_kcache_clear, so a returned kernel stays
 * valid for the cache's lifetime (the compiled model's). When all slots are taken, lookups of new
 * shapes fail with HS_LIMIT and the op falls back to its reference code.
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kernels/kernels.h"

#define HS_KCACHE_SLOTS 16
#define HS_KCACHE_KEY_MAX 24

typedef struct hs_kcache_slot {
  int nkey;
  int64_t key[HS_KCACHE_KEY_MAX];
  hs_kernel *k;
} hs_kcache_slot;

/* Slot 0 is inline, the others are allocated as they are taken: most nodes see one shape, and every
 * Conv of a version holds a cache (16 inline slots were 3.4 KiB each: 120 KiB per MobileNetV2
 * version, at rest and again at a reload's peak). */
typedef struct hs_kcache {
  pthread_mutex_t lock;
  atomic_int n; /* slots [0..n) are published and immutable */
  hs_kcache_slot first;
  hs_kcache_slot *more[HS_KCACHE_SLOTS - 1]; /* slots 1.. */
} hs_kcache;

/* Slot i (< the published count n, read with acquire). */
static inline const hs_kcache_slot *hs_kcache_slot_at(const hs_kcache *c, int i) {
  return i == 0 ? &c->first : c->more[i - 1];
}

/* The kernel in slot i (< the published count). */
static inline hs_kernel *hs_kcache_kernel(const hs_kcache *c, int i) { return hs_kcache_slot_at(c, i)->k; }

/* Builds the kernel for the current key; ctx is the caller's. Returns 0 or a negative hs_status. */
typedef int (*hs_kcache_build_fn)(void *ctx, hs_kernel **out, hs_error *err);

void hs_kcache_init(hs_kcache *c);
/* Destroys every cached kernel; the cache is empty (and reusable) afterwards. */
void hs_kcache_clear(hs_kcache *c);
/* Finds the kernel for key[0..nkey) or builds it with build(ctx). *out is owned by the cache.
 * Returns 0, HS_LIMIT when the cache is full or the key too long, or build's error. */
/* hs_kcache_clear, then releases the mutex; the cache must be re-initialised before reuse. */
void hs_kcache_destroy(hs_kcache *c);
int hs_kcache_get(hs_kcache *c, const int64_t *key, int nkey, hs_kcache_build_fn build, void *ctx,
                  hs_kernel **out, hs_error *err);

#endif

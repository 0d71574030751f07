/* wblock.h - blocks for weights that outlive their version's allocator churn: freed blocks stay mapped, by size, for the next version. */
#ifndef HS_BASE_WBLOCK_H
#define HS_BASE_WBLOCK_H

#include <stddef.h>

/* A 64-byte aligned block of `bytes` (NULL when out of memory); the contents are undefined. Once
 * the pool is on (hs_wblock_keep), a large block (256 KiB or more) is its own mapping: it comes from
 * the pool's free blocks of exactly its mapped size when there is one (already faulted: no fresh,
 * zeroed pages), else from a new mapping. Pool or not, a block of 2 MiB or more is a new mapping
 * when none is free: 2 MiB-aligned and advised MADV_HUGEPAGE before it is populated. Any other block
 * comes from malloc. */
void *hs_wblock_alloc(size_t bytes);

/* Frees a block from hs_wblock_alloc (NULL: nothing). A mapped block is kept for reuse while the
 * pool's free bytes stay within the limit (0 while the pool is off), else unmapped. Any thread. */
void hs_wblock_free(void *p);

/* Sets the calling thread's free gate (NULL: none): hs_wblock_free on this thread first calls
 * gate(user, p, bytes) with the block's usable bytes, which may wait until someone else is done
 * reading them (repo/read.c: the hash behind a load reads tensor payloads where the decoder put
 * them, while the engine compiles and frees them). */
void hs_wblock_set_free_gate(void (*gate)(void *user, const void *p, size_t bytes), void *user);

/* Turns the pool on (it is off until the first call) and sets how many free bytes it may keep
 * mapped; free blocks over a lower limit are unmapped at once. */
void hs_wblock_keep(size_t bytes);

/* Unmaps every free block and every warm scratch mapping: the warm memory goes back to the system. */
void hs_wblock_trim(void);

/* The pool's counters: bytes of mapped blocks kept free (reusable) and in use. */
void hs_wblock_stats(size_t *free_bytes, size_t *used_bytes);

/* A load's short-lived large buffer (the read ring, the decoder's and kshare's scratch) whose pages
 * must not stay resident as freed heap pages beside the serving version: its own anonymous mapping.
 * Once the pool is on (hs_wblock_keep), a released one stays mapped, already faulted, among a few warm
 * scratch mappings for the next load's buffers, until hs_wblock_trim; otherwise it is unmapped at
 * once. Zero-initialized: empty. Not thread-safe (one owner). */
typedef struct hs_wscratch {
  void *p;
  size_t bytes; /* mapped */
} hs_wscratch;

/* At least `bytes` bytes (page-aligned); NULL when out of memory. The contents are kept while it need
 * not grow, undefined when it has to: then a warm mapping that fits takes its place (the outgrown one
 * is unmapped, never kept warm), else it is grown (mremap: its faulted pages serve again, only the
 * new tail is mapped and populated); an empty s grows the largest warm mapping likewise when none
 * fits, before it maps a new one. */
void *hs_wscratch_get(hs_wscratch *s, size_t bytes);

/* Hands the buffer to the warm scratch mappings (the pool on; the smallest is unmapped when they are
 * full) or unmaps it (its pages go back at once); s is empty again. Any thread. */
void hs_wscratch_release(hs_wscratch *s);

#endif

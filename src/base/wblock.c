/* wblock.c - a pool of mapped blocks for weights, reused by exact size across versions (wblock.h).
 *
 * DESIGN
 * A reload of a retrained model allocates the same weight buffers, in the same sizes, as the
 * version it replaces, while that version still serves; the one before it has just been freed. In
 * malloc's heaps those buffers interleave with the load's short-lived ones (decoded tensors, copies,
 * the read's ring), so the freed holes never line up with the next version's requests: each of the
 * first reloads faulted 20-50 MB of fresh, zeroed pages, a varying amount, before the heaps settled
 * (bench/results/load-cpu-2026-12-07.md). Here each large block is its own anonymous mapping, and
 * a freed one waits on a free list until a request of exactly its mapped size takes it: a version
 * reuses the blocks of the version two before it, page for page, from the second reload on. The
 * free list is bounded by bytes (hs_wblock_keep; the loader sets what a load was measured to take:
 * the new version's blocks plus the ones its load left free, serving/loader.c) and emptied by
 * hs_wblock_trim (the loader's --trim-delay trim), so RSS goes back once reloads stop. A mapped
 * block has a 64-byte header in front of it (its mapped size, its free-list link); the blocks in use
 * are listed, so that the free tells them from malloc's. The pool is off until the loader turns it
 * on (hs_wblock_keep): a single load (`hotserve run`) gains nothing from reuse across versions, and
 * there malloc's heap reuses the decoded tensors' pages for the reordered weights within the load,
 * which separate 4 KiB mappings cannot (ResNet-50: 28 ms more CPU per cold load with the pool on).
 * Off, a block of 2 MiB or more is still its own mapping, in huge pages (map_block), unmapped when
 * freed: a fresh huge page costs a 4 KiB page's fault once per 2 MiB, and `hotserve run`'s ResNet-50
 * load + compile fell from ~480 to ~180-300 ms (41k -> 14k page faults). The pool's mapped blocks of
 * 2 MiB or more are huge-page mappings too: a reload after a trim faulted 38k pages, now 9k. One
 * mutex guards the lists and the counters.
 * The streaming decoder's large tensor payloads are blocks too (onnx/decode.c; graph values free
 * their data with hs_wblock_free, which frees malloc's blocks as free() does): a decoded tensor
 * freed once its kernel reordered it goes to the free list, where the next reordered weights of
 * the same mapped size take it, so within a load the decoded and the reordered weights share pages
 * as they did in malloc's heap, and a retrained reload reuses the previous load's decoded blocks.
 * The conv and matmul kernels' plain weight copies are blocks too (kernels/cpu_dnnl.h, w_plain):
 * from the heap, with no decoded tensors' holes left there, they grew the loader thread's arena,
 * whose top malloc_trim does not hand back (+9 MB at rest). ResNet-50 retrained reload after a
 * trim: 53k -> 46k page faults, overlap peak 345 -> 320 MB, RSS at rest unchanged
 * (bench/results/load-s23-2026-12-07.md).
 * hs_wscratch is the other kind of mapping here: a load's transient buffer (the read ring, the
 * decoder's and kshare's scratch), its own mapping, so its pages never linger as freed heap. Once the
 * pool is on, a released one waits, faulted, among a few warm scratch mappings that the next load's
 * hs_wscratch_get takes (the smallest that fits) until hs_wblock_trim unmaps them with the free
 * blocks: unmapped at each release, the ring's slots were the most of what a reload still faulted
 * once the pool kept its blocks (MobileNetV2 retrained: ~420 of ~520 faults per reload, `perf record
 * -e minor-faults`; bench/load/reload_loop.py --perf-event). The same mapping serves every load, so
 * it adds nothing to a reload's peak; off (`hotserve run`), a release unmaps at once.
 * A scratch that has to grow is grown (mremap) rather than replaced: kshare's read-back buffer grows
 * 6 -> 240 KiB through ten sizes in a MobileNetV2 reload, and each outgrown mapping was released to
 * the warm ones, where the largest three sat at the reload's peak (+360 KiB after a trim). Growing
 * the largest warm mapping when none fits does the same across owners: the warm-up input (588 KiB)
 * takes the read's ring (512 KiB) and adds 76 KiB, not 588 (bench/load, MobileNetV2 new head).
 */
#include "base/wblock.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define WB_HEADER 64                  /* keeps the block 64-byte aligned */
#define WB_MAP_MIN ((size_t)256 << 10) /* smaller blocks come from malloc */
#define WB_PAGE ((size_t)4096)

typedef struct wb_head {
  size_t map_bytes;     /* the mapping's size */
  struct wb_head *next; /* on the free list */
} wb_head;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static bool g_on;                  /* hs_wblock_keep was called: large blocks are mapped and pooled */
static wb_head *g_free;            /* free mapped blocks, newest first */
static size_t g_free_bytes, g_used_bytes, g_keep;
static wb_head **g_live;           /* mapped blocks in use: how hs_wblock_free tells them from malloc's */
static size_t g_n_live, g_cap_live;
#define WS_WARM 4                  /* released scratch mappings kept for the next load */
static hs_wscratch g_warm_scratch[WS_WARM]; /* empty ones have p == NULL */

/* Records h as in use; false when out of memory. Called with g_mu held. */
static bool live_add(wb_head *h) {
  if (g_n_live == g_cap_live) {
    size_t cap = g_cap_live ? g_cap_live * 2 : 256;
    wb_head **n = realloc(g_live, cap * sizeof *n);
    if (!n) return false;
    g_live = n;
    g_cap_live = cap;
  }
  g_live[g_n_live++] = h;
  return true;
}

/* h's index among the blocks in use; g_n_live when it is not a mapped block. Called with g_mu held. */
static size_t live_index(const wb_head *h) {
  for (size_t i = g_n_live; i-- > 0;) /* the newest are freed first most often */
    if (g_live[i] == h) return i;
  return g_n_live;
}

/* Forgets h as in use; false when it is not a mapped block. Called with g_mu held. */
static bool live_remove(const wb_head *h) {
  size_t i = live_index(h);
  if (i == g_n_live) return false;
  g_live[i] = g_live[--g_n_live];
  return true;
}

/* The calling thread's free gate (hs_wblock_set_free_gate). */
static _Thread_local void (*t_gate)(void *user, const void *p, size_t bytes);
static _Thread_local void *t_gate_user;

void hs_wblock_set_free_gate(void (*gate)(void *user, const void *p, size_t bytes), void *user) {
  t_gate = gate;
  t_gate_user = user;
}

/* Faults in a fresh mapping's pages in one call (MADV_POPULATE_WRITE, Linux 5.14) instead of one trap
 * per 4 KiB page as its user first writes it: every mapping here is written whole right away (a
 * decoded payload read into it, reordered weights, a ring or scratch buffer). The kernel still zeroes
 * each page. A kernel without it (EINVAL) is not asked again; any other failure (out of memory)
 * leaves the pages to be faulted as they are touched, as before. */
static void populate(void *p, size_t bytes) {
#ifdef MADV_POPULATE_WRITE
  static atomic_bool unsupported;
  if (atomic_load_explicit(&unsupported, memory_order_relaxed)) return;
  if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
    atomic_store_explicit(&unsupported, true, memory_order_relaxed);
#else
  (void)p;
  (void)bytes;
#endif
}

/* A fresh mapping of `map` bytes for a block. One of 2 MiB or more starts on a 2 MiB boundary and is
 * advised MADV_HUGEPAGE before its pages are populated, so the kernel backs each whole 2 MiB of it
 * with one huge page where it has one free (a tail short of 2 MiB gets 4 KiB pages): one fault per
 * 2 MiB instead of 512. Fresh 4 KiB pages were most of what a load paid on the benchmark machine, a
 * VM where each costs ~7 us populated and ~12 us trapped: 100 MB took 170 ms of CPU populated in
 * 4 KiB pages, 6 ms in huge pages (bench/results/load-huge-2026-12-07.md). The advice is only
 * advice: with THP off (`never`) or no huge page free, the same call populates 4 KiB pages as
 * before. The address range is reserved 2 MiB longer and the unaligned ends are unmapped at once:
 * address space only, nothing is touched. */
#define WB_HUGE ((size_t)2 << 20)
static void *map_block(size_t map) {
  if (map < WB_HUGE) {
    void *m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    populate(m, map);
    return m;
  }
  if (map > SIZE_MAX - WB_HUGE) return NULL;
  char *r = mmap(NULL, map + WB_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) return NULL;
  char *m = (char *)(((uintptr_t)r + WB_HUGE - 1) & ~(uintptr_t)(WB_HUGE - 1));
  if (m > r) munmap(r, (size_t)(m - r));
  munmap(m + map, (size_t)(r + WB_HUGE - m)); /* never empty: m lies less than 2 MiB past r */
#ifdef MADV_HUGEPAGE
  (void)madvise(m, map, MADV_HUGEPAGE);
#endif
  populate(m, map);
  return m;
}

static void *heap_block(size_t bytes) {
  void *b = NULL;
  return posix_memalign(&b, WB_HEADER, bytes ? bytes : 1) == 0 ? b : NULL;
}

void *hs_wblock_alloc(size_t bytes) {
  if (bytes > SIZE_MAX - WB_HEADER - WB_PAGE) return NULL;
  pthread_mutex_lock(&g_mu);
  bool on = g_on;
  pthread_mutex_unlock(&g_mu);
  /* off: only blocks that take huge pages are mapped (unmapped again when freed: g_keep is 0) */
  if (bytes + WB_HEADER < (on ? WB_MAP_MIN : WB_HUGE)) return heap_block(bytes);
  size_t map = (bytes + WB_HEADER + WB_PAGE - 1) & ~(WB_PAGE - 1);
  wb_head *h = NULL;
  pthread_mutex_lock(&g_mu);
  for (wb_head **pp = &g_free; *pp; pp = &(*pp)->next)
    if ((*pp)->map_bytes == map) {
      h = *pp;
      *pp = h->next;
      g_free_bytes -= map;
      break;
    }
  pthread_mutex_unlock(&g_mu);
  if (!h) {
    void *m = map_block(map);
    if (!m) return NULL;
    h = m;
    h->map_bytes = map;
  }
  h->next = NULL;
  pthread_mutex_lock(&g_mu);
  bool ok = live_add(h);
  if (ok) g_used_bytes += map;
  pthread_mutex_unlock(&g_mu);
  if (!ok) {
    munmap(h, map);
    return NULL;
  }
  return (char *)h + WB_HEADER;
}

void hs_wblock_free(void *p) {
  if (!p) return;
  wb_head *h = (wb_head *)((char *)p - WB_HEADER);
  if (t_gate) { /* the block's bytes, before anyone may reuse them */
    pthread_mutex_lock(&g_mu);
    bool mapped = live_index(h) < g_n_live;
    size_t bytes = mapped ? h->map_bytes - WB_HEADER : 0;
    pthread_mutex_unlock(&g_mu);
    t_gate(t_gate_user, p, mapped ? bytes : malloc_usable_size(p));
  }
  pthread_mutex_lock(&g_mu);
  if (!live_remove(h)) {
    pthread_mutex_unlock(&g_mu);
    free(p); /* one from malloc */
    return;
  }
  size_t map = h->map_bytes;
  g_used_bytes -= map;
  bool keep = g_free_bytes + map <= g_keep;
  if (keep) {
    h->next = g_free;
    g_free = h;
    g_free_bytes += map;
  }
  pthread_mutex_unlock(&g_mu);
  if (!keep) munmap(h, map);
}

/* Detaches free blocks from the list until at most `limit` bytes stay; returns the detached ones. */
static wb_head *detach_over(size_t limit) {
  wb_head *out = NULL;
  while (g_free && g_free_bytes > limit) {
    wb_head *h = g_free; /* newest first: the oldest stay, as a retiring version's do */
    g_free = h->next;
    g_free_bytes -= h->map_bytes;
    h->next = out;
    out = h;
  }
  return out;
}

static void unmap_all(wb_head *h) {
  while (h) {
    wb_head *n = h->next;
    munmap(h, h->map_bytes);
    h = n;
  }
}

void hs_wblock_keep(size_t bytes) {
  pthread_mutex_lock(&g_mu);
  g_on = true;
  g_keep = bytes;
  wb_head *gone = detach_over(bytes);
  pthread_mutex_unlock(&g_mu);
  unmap_all(gone);
}

void hs_wblock_trim(void) {
  hs_wscratch warm[WS_WARM];
  pthread_mutex_lock(&g_mu);
  wb_head *gone = detach_over(0);
  memcpy(warm, g_warm_scratch, sizeof warm);
  memset(g_warm_scratch, 0, sizeof g_warm_scratch);
  pthread_mutex_unlock(&g_mu);
  unmap_all(gone);
  for (int i = 0; i < WS_WARM; i++)
    if (warm[i].p) munmap(warm[i].p, warm[i].bytes);
}

void hs_wblock_stats(size_t *free_bytes, size_t *used_bytes) {
  pthread_mutex_lock(&g_mu);
  if (free_bytes) *free_bytes = g_free_bytes;
  if (used_bytes) *used_bytes = g_used_bytes;
  pthread_mutex_unlock(&g_mu);
}

/* Takes the smallest warm scratch mapping of at least `bytes` into s: true. When none fits, false,
 * and with `grow` set the largest warm one (smaller) goes into *grow, to be grown in place of a new
 * mapping (left empty when there is none). */
static bool warm_scratch_take(hs_wscratch *s, size_t bytes, hs_wscratch *grow) {
  pthread_mutex_lock(&g_mu);
  int best = -1, largest = -1;
  for (int i = 0; i < WS_WARM; i++) {
    if (!g_warm_scratch[i].p) continue;
    if (g_warm_scratch[i].bytes >= bytes && (best < 0 || g_warm_scratch[i].bytes < g_warm_scratch[best].bytes))
      best = i;
    if (largest < 0 || g_warm_scratch[i].bytes > g_warm_scratch[largest].bytes) largest = i;
  }
  int take = best >= 0 ? best : grow ? largest : -1;
  if (take >= 0) {
    *(best >= 0 ? s : grow) = g_warm_scratch[take];
    g_warm_scratch[take] = (hs_wscratch){0};
  }
  pthread_mutex_unlock(&g_mu);
  return best >= 0;
}

/* The pages of a mapping grown from `from` to `to` bytes, past the old ones: populated as a fresh
 * mapping's are. */
static void populate_tail(char *p, size_t from, size_t to) {
  size_t a = (from + WB_PAGE - 1) & ~(WB_PAGE - 1), e = (to + WB_PAGE - 1) & ~(WB_PAGE - 1);
  if (e > a) populate(p + a, e - a);
}

void *hs_wscratch_get(hs_wscratch *s, size_t bytes) {
  if (bytes <= s->bytes && s->p) return s->p;
  size_t map = bytes ? bytes : 1;
  hs_wscratch have = *s; /* outgrown: grown in place of a new mapping, never kept warm beside it */
  *s = (hs_wscratch){0};
  hs_wscratch other = {0};
  if (warm_scratch_take(s, map, have.p ? NULL : &other)) {
    if (have.p) munmap(have.p, have.bytes);
    return s->p;
  }
  if (!have.p) have = other;
  if (have.p) { /* its faulted pages serve again; only the tail is new */
    void *m = mremap(have.p, have.bytes, map, MREMAP_MAYMOVE);
    if (m != MAP_FAILED) {
      populate_tail(m, have.bytes, map);
      s->p = m;
      s->bytes = map;
      return m;
    }
    munmap(have.p, have.bytes);
  }
  void *m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;
  populate(m, map);
  s->p = m;
  s->bytes = map;
  return m;
}

void hs_wscratch_release(hs_wscratch *s) {
  if (!s->p) return;
  hs_wscratch out = *s; /* what is unmapped: s itself, or the smallest warm one it displaces */
  *s = (hs_wscratch){0};
  pthread_mutex_lock(&g_mu);
  if (g_on) {
    int small = 0; /* an empty entry, else the smallest */
    for (int i = 1; i < WS_WARM && g_warm_scratch[small].p; i++)
      if (!g_warm_scratch[i].p || g_warm_scratch[i].bytes < g_warm_scratch[small].bytes) small = i;
    if (!g_warm_scratch[small].p || g_warm_scratch[small].bytes < out.bytes) {
      hs_wscratch displaced = g_warm_scratch[small];
      g_warm_scratch[small] = out;
      out = displaced;
    }
  }
  pthread_mutex_unlock(&g_mu);
  if (out.p) munmap(out.p, out.bytes);
}

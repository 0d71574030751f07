/* arena.c - pools of scratch arenas shared by sessions across model versions (see arena.h).
 *
 * DESIGN
 * A session needs its scratch arena only from the start of a run until its caller is done with the
 * outputs (they point into the arena); between runs the arena holds nothing. When the caller says so
 * (hs_engine_session_idle; the server does when a session goes back to its version), the arena goes
 * back to a pool, and the session's next run takes one from it. A pool is keyed by the arena size of
 * the model's load-time plan (hs_engine_model.planned_bytes), so the versions of one model that keep
 * its graph and shapes (retrained weights, a new head: the reloads that come most often) share one
 * pool, and the new version of a reload finds its arenas already allocated and faulted in by the
 * version it replaces, which no longer needs them once its runs are over. The number of arenas is
 * what the runs in flight need, not the number of sessions: a pool allocates only when every one of
 * its arenas is held by a run (or when a model primes more sessions than the pool has arenas), and
 * never holds more arenas than member sessions, so it holds at most what private arenas held before.
 * One exception keeps a reload storm from allocating an arena per version: a reload's warm-up runs
 * on the loader while the requests hold every arena, so it adds one (the new version's sessions are
 * members by then); when the old version leaves, that arena is kept (keep: the arenas the pool had
 * when members left) instead of freed, so the next reload's warm-up finds it, until the loader's
 * trim (hs_engine_arena_trim, after --trim-delay without loads) hands it back with the other warm
 * memory. Without it, a MobileNetV2 storm allocated, faulted in and freed one 8 MiB arena a version
 * (bench/results/reload-s23-2026-12-07.md).
 * An arena keeps the growth a run gave it (an outlier's is shrunk by engine.c's rule), so every run
 * behaves as with a private arena; the contents of an arena are scratch, written before they are
 * read by every plan, so which arena a run gets cannot change its results.
 * One process-wide mutex guards the pools: a run takes it twice (take, put), never across a run.
 */
#include "engine/arena.h"

#include <pthread.h>
#include <stdlib.h>

#include "engine/engine.h"

typedef struct member_model {
  const void *model;
  size_t sessions;
  struct member_model *next;
} member_model;

struct hs_arena_pool {
  size_t key;              /* planned arena bytes of the members' models */
  size_t members;          /* sessions */
  size_t arenas;           /* arenas of this pool: free, or held by a member */
  size_t keep;             /* arenas kept though fewer members are left, until the trim */
  hs_arena *free;          /* the free ones */
  member_model *models;    /* member sessions per model */
  struct hs_arena_pool *next;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static hs_arena_pool *g_pools;
static hs_engine_arena_stats g_stats; /* under g_mu */

static void arena_release(hs_arena *a) {
  g_stats.arenas--;
  g_stats.bytes -= a->bytes;
  free(a->p);
  free(a);
}

/* How many arenas the pool keeps: one per member session, or what it had when members left. */
static size_t pool_limit(const hs_arena_pool *pool) {
  return pool->members > pool->keep ? pool->members : pool->keep;
}

/* Frees pool's free arenas beyond what it keeps. */
static void pool_shrink(hs_arena_pool *pool) {
  while (pool->arenas > pool_limit(pool) && pool->free) {
    hs_arena *a = pool->free;
    pool->free = a->next;
    pool->arenas--;
    arena_release(a);
  }
}

static member_model *find_model(hs_arena_pool *pool, const void *model) {
  for (member_model *mm = pool->models; mm; mm = mm->next)
    if (mm->model == model) return mm;
  return NULL;
}

hs_arena_pool *hs__arena_pool_join(size_t key, const void *model) {
  pthread_mutex_lock(&g_mu);
  hs_arena_pool *pool = g_pools;
  while (pool && pool->key != key) pool = pool->next;
  if (!pool && (pool = calloc(1, sizeof *pool)) != NULL) {
    pool->key = key;
    pool->next = g_pools;
    g_pools = pool;
    g_stats.pools++;
  }
  member_model *mm = pool ? find_model(pool, model) : NULL;
  if (pool && !mm && (mm = calloc(1, sizeof *mm)) != NULL) {
    mm->model = model;
    mm->next = pool->models;
    pool->models = mm;
  }
  if (pool && mm) {
    mm->sessions++;
    pool->members++;
  } else if (pool && pool->members == 0) { /* a pool just made whose member record failed */
    for (hs_arena_pool **p = &g_pools; *p; p = &(*p)->next)
      if (*p == pool) {
        *p = pool->next;
        break;
      }
    free(pool);
    g_stats.pools--;
    pool = NULL;
  } else {
    pool = NULL;
  }
  pthread_mutex_unlock(&g_mu);
  return pool;
}

int hs__arena_pool_enough(hs_arena_pool *pool, const void *model) {
  pthread_mutex_lock(&g_mu);
  member_model *mm = find_model(pool, model);
  int enough = !mm || pool->arenas >= mm->sessions;
  pthread_mutex_unlock(&g_mu);
  return enough;
}

hs_arena *hs__arena_pool_take(hs_arena_pool *pool, size_t need) {
  pthread_mutex_lock(&g_mu);
  hs_arena **best = NULL, **largest = NULL;
  for (hs_arena **p = &pool->free; *p; p = &(*p)->next) {
    if ((*p)->bytes >= need && (!best || (*p)->bytes < (*best)->bytes)) best = p;
    if (!largest || (*p)->bytes > (*largest)->bytes) largest = p;
  }
  hs_arena **pick = best ? best : largest, *a = NULL;
  if (pick) {
    a = *pick;
    *pick = a->next;
    a->next = NULL;
    g_stats.in_use++;
  }
  pthread_mutex_unlock(&g_mu);
  return a;
}

hs_arena *hs__arena_new(hs_arena_pool *pool) {
  hs_arena *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  pthread_mutex_lock(&g_mu);
  pool->arenas++;
  g_stats.arenas++;
  g_stats.created++;
  g_stats.in_use++;
  pthread_mutex_unlock(&g_mu);
  return a;
}

void hs__arena_pool_resized(hs_arena_pool *pool, size_t old_bytes, size_t new_bytes) {
  (void)pool;
  pthread_mutex_lock(&g_mu);
  g_stats.bytes = g_stats.bytes - old_bytes + new_bytes;
  pthread_mutex_unlock(&g_mu);
}

void hs__arena_pool_put(hs_arena_pool *pool, hs_arena *a) {
  pthread_mutex_lock(&g_mu);
  g_stats.in_use--;
  if (pool->arenas > pool_limit(pool) || !a->p) { /* more arenas than it keeps: not kept */
    pool->arenas--;
    arena_release(a);
  } else {
    a->next = pool->free;
    pool->free = a;
  }
  pthread_mutex_unlock(&g_mu);
}

void hs__arena_pool_leave(hs_arena_pool *pool, const void *model) {
  pthread_mutex_lock(&g_mu);
  member_model **mp = &pool->models;
  while (*mp && (*mp)->model != model) mp = &(*mp)->next;
  if (*mp && --(*mp)->sessions == 0) {
    member_model *gone = *mp;
    *mp = gone->next;
    free(gone);
  }
  pool->members--;
  /* a version leaving while others stay (a reload): its arenas stay for the next one's warm-up */
  if (pool->members > 0 && pool->arenas > pool->keep) pool->keep = pool->arenas;
  if (pool->members == 0) pool->keep = 0;
  pool_shrink(pool);
  if (pool->members == 0) { /* no member, so no arena held either: the pool goes */
    for (hs_arena_pool **p = &g_pools; *p; p = &(*p)->next)
      if (*p == pool) {
        *p = pool->next;
        break;
      }
    free(pool);
    g_stats.pools--;
  }
  pthread_mutex_unlock(&g_mu);
}

void hs_engine_arena_trim(void) {
  pthread_mutex_lock(&g_mu);
  for (hs_arena_pool *pool = g_pools; pool; pool = pool->next) {
    pool->keep = 0;
    pool_shrink(pool); /* one still held by a run goes when it is put back */
  }
  pthread_mutex_unlock(&g_mu);
}

void hs_engine_arena_stats_get(hs_engine_arena_stats *out) {
  pthread_mutex_lock(&g_mu);
  *out = g_stats;
  pthread_mutex_unlock(&g_mu);
}

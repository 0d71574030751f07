/* arena.h - scratch arenas that outlive model versions: pools shared by the sessions of models whose
 * load-time plans need the same arena (engine-internal; see arena.c for the design). */
#ifndef HS_ENGINE_ARENA_H
#define HS_ENGINE_ARENA_H

#include <stddef.h>

/* One arena: p is aligned as session_arena (engine.c) allocates it; bytes its size. */
typedef struct hs_arena {
  void *p;
  size_t bytes;
  struct hs_arena *next; /* in its pool's free list */
} hs_arena;

typedef struct hs_arena_pool hs_arena_pool;

/* Makes session `member` (of a model whose load-time plan needs `key` arena bytes, key > 0) a member
 * of the pool for key, creating the pool when none exists; `model` identifies the session's model
 * (sessions of one model count together, see hs__arena_pool_prime). NULL when out of memory (the
 * session then keeps a private arena, as before pools). */
hs_arena_pool *hs__arena_pool_join(size_t key, const void *model);
/* Whether the pool already holds as many arenas as `model` has member sessions; when not, the
 * caller allocates one (hs__arena_new) and gives it to the pool (hs__arena_pool_put), so a model's
 * first version faults in one arena per session and the next versions of the same plan size none. */
int hs__arena_pool_enough(hs_arena_pool *pool, const void *model);
/* A free arena, the smallest of at least `need` bytes, else the largest (the caller grows it), else
 * NULL: the caller allocates one (hs__arena_new), which counts in the pool from then on. */
hs_arena *hs__arena_pool_take(hs_arena_pool *pool, size_t need);
/* A new arena node of no bytes (the caller sizes it), counted in pool. NULL when out of memory. */
hs_arena *hs__arena_new(hs_arena_pool *pool);
/* Gives a (possibly resized) arena back: kept for the next run while the pool holds no more arenas
 * than member sessions, freed otherwise. */
void hs__arena_pool_put(hs_arena_pool *pool, hs_arena *a);
/* Records a change of an arena's size (bytes freed or allocated by its holder). */
void hs__arena_pool_resized(hs_arena_pool *pool, size_t old_bytes, size_t new_bytes);
/* Takes member out of the pool (after it gave its arena back); frees the free arenas beyond the
 * members left, and the pool itself with its last member. */
void hs__arena_pool_leave(hs_arena_pool *pool, const void *model);

#endif

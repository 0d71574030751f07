/* kcache.c - shape-keyed kernel cache (see kcache.h for the locking design). */
#include <stdlib.h>
#include <string.h>

#include "kernels/kcache.h"

void hs_kcache_init(hs_kcache *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->lock, NULL);
  atomic_init(&c->n, 0);
}

void hs_kcache_clear(hs_kcache *c) {
  int n = atomic_load(&c->n);
  for (int i = 0; i < n; i++) hs_kernel_destroy(hs_kcache_kernel(c, i));
  c->first.k = NULL;
  for (int i = 0; i < HS_KCACHE_SLOTS - 1; i++) {
    free(c->more[i]);
    c->more[i] = NULL;
  }
  atomic_store(&c->n, 0);
}

void hs_kcache_destroy(hs_kcache *c) {
  hs_kcache_clear(c);
  pthread_mutex_destroy(&c->lock);
}

static hs_kernel *find(hs_kcache *c, int n, const int64_t *key, int nkey) {
  for (int i = 0; i < n; i++) {
    const hs_kcache_slot *s = hs_kcache_slot_at(c, i);
    if (s->nkey == nkey && memcmp(s->key, key, sizeof(int64_t) * (size_t)nkey) == 0) return s->k;
  }
  return NULL;
}

int hs_kcache_get(hs_kcache *c, const int64_t *key, int nkey, hs_kcache_build_fn build, void *ctx,
                  hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (nkey < 0 || nkey > HS_KCACHE_KEY_MAX) return hs_error_set(err, HS_LIMIT, "kernel cache key too long");
  hs_kernel *k = find(c, atomic_load_explicit(&c->n, memory_order_acquire), key, nkey);
  if (k) {
    *out = k;
    return 0;
  }
  int rc = 0;
  pthread_mutex_lock(&c->lock);
  int n = atomic_load_explicit(&c->n, memory_order_relaxed);
  k = find(c, n, key, nkey);
  if (!k) {
    if (n >= HS_KCACHE_SLOTS) {
      rc = hs_error_set(err, HS_LIMIT, "kernel cache holds %d shapes already", n);
    } else if (n > 0 && !c->more[n - 1] && !(c->more[n - 1] = calloc(1, sizeof(hs_kcache_slot)))) {
      rc = hs_error_set(err, HS_NO_MEMORY, "kernel cache: out of memory");
    } else if ((rc = build(ctx, &k, err)) == 0) {
      hs_kcache_slot *s = n == 0 ? &c->first : c->more[n - 1];
      s->nkey = nkey;
      memcpy(s->key, key, sizeof(int64_t) * (size_t)nkey);
      s->k = k;
      atomic_store_explicit(&c->n, n + 1, memory_order_release);
    }
  }
  pthread_mutex_unlock(&c->lock);
  *out = k;
  return rc;
}

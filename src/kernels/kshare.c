/* kshare.c - content-keyed registry of conv kernels shared between model versions (see kshare.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/digest.h"
#include "kernels/cpu_dnnl.h"
#include "kernels/kshare.h"

typedef struct entry {
  struct entry *next;
  uint8_t key[32];
  hs_kernel *k;
  int refs;
  size_t bytes;
} entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *g_head;
static hs_kshare_stats g_stats;
static _Thread_local hs_kshare_stats t_stats;

static int sharing_enabled(void) {
  const char *e = getenv("HOTSERVE_KERNEL_SHARE");
  return !(e && strcmp(e, "0") == 0);
}

static void put_i64(hs_sha256_ctx *c, int64_t v) { hs_sha256_update(c, &v, sizeof v); }

static void put_f32(hs_sha256_ctx *c, float v) { hs_sha256_update(c, &v, sizeof v); }

/* SHA-256 over every field that decides the kernel's results, fields written one by one (no
 * struct padding), then the weights' and the bias's bytes. */
static int conv_key(const hs_conv_params *p, uint8_t key[32]) {
  hs_sha256_ctx *c = hs_sha256_begin();
  if (!c) return -1;
  hs_sha256_update(c, "conv/1", 6);
  const int64_t head[] = {p->device, p->src_layout, p->dst_layout, p->res_layout, p->transposed,
                          p->nsp,    p->in_c,       p->out_c,      p->groups};
  for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) put_i64(c, head[i]);
  int64_t wcount = p->out_c / p->groups * p->in_c;
  for (int i = 0; i < p->nsp; i++) {
    const int64_t f[] = {p->in[i], p->out[i], p->kernel[i], p->stride[i], p->dilation[i], p->pad_begin[i],
                         p->pad_end[i]};
    for (size_t j = 0; j < sizeof f / sizeof f[0]; j++) put_i64(c, f[j]);
    wcount *= p->kernel[i];
  }
  put_i64(c, p->post.count);
  for (int i = 0; i < p->post.count && i < HS_KERNEL_MAX_POST; i++) {
    const hs_post_op *o = &p->post.op[i];
    put_i64(c, o->kind);
    put_i64(c, o->act);
    put_f32(c, o->alpha);
    put_f32(c, o->beta);
    put_f32(c, o->scale);
  }
  put_i64(c, wcount);
  hs_sha256_update(c, p->weights, (size_t)wcount * sizeof(float));
  put_i64(c, p->bias != NULL);
  if (p->bias) hs_sha256_update(c, p->bias, (size_t)p->out_c * sizeof(float));
  hs_sha256_end(c, key);
  return 0;
}

static entry *find(const uint8_t key[32]) {
  for (entry *e = g_head; e; e = e->next)
    if (memcmp(e->key, key, 32) == 0) return e;
  return NULL;
}

static void count(uint64_t *n, uint64_t *bytes, size_t b) {
  (*n)++;
  *bytes += b;
}

int hs_kshare_conv(const hs_conv_params *p, hs_kernel **out, int *shared, hs_error *err) {
  *out = NULL;
  if (shared) *shared = 0;
  uint8_t key[32];
  /* Shapes are validated by the constructor; hash only what it would accept. */
  if (!sharing_enabled() || !p->weights || p->weights_from || p->groups < 1 || p->nsp < 1 || p->nsp > 3 ||
      p->in_c < 1 || p->out_c < 1 || conv_key(p, key) != 0)
    return hs_kernel_conv_create(p, out, err);
  /* Built under the lock: two loads of the same content then build it once. Loads are serialised
   * by the loader anyway, so this costs no parallelism in the server. */
  pthread_mutex_lock(&g_lock);
  entry *e = find(key);
  int rc = 0;
  if (e) {
    e->refs++;
    *out = e->k;
    if (shared) *shared = 1;
    count(&g_stats.hits, &g_stats.hit_bytes, e->bytes);
    count(&t_stats.hits, &t_stats.hit_bytes, e->bytes);
  } else if ((rc = hs_kernel_conv_create(p, out, err)) == 0) {
    e = calloc(1, sizeof *e);
    if (e) { /* out of memory for the entry: the kernel works, unshared */
      memcpy(e->key, key, 32);
      e->k = *out;
      e->refs = 1;
      e->bytes = hs_kernel_conv_owned_weight_bytes(*out);
      e->next = g_head;
      g_head = e;
      (*out)->share = e;
      g_stats.kernels++;
      g_stats.bytes += e->bytes;
      count(&g_stats.builds, &g_stats.build_bytes, e->bytes);
      count(&t_stats.builds, &t_stats.build_bytes, e->bytes);
    }
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int hs__kshare_release(hs_kernel *k) {
  if (!k->share) return 1;
  pthread_mutex_lock(&g_lock);
  entry *e = k->share;
  int last = --e->refs == 0;
  if (last) {
    for (entry **pp = &g_head; *pp; pp = &(*pp)->next)
      if (*pp == e) {
        *pp = e->next;
        break;
      }
    g_stats.kernels--;
    g_stats.bytes -= e->bytes;
    k->share = NULL;
    free(e);
  }
  pthread_mutex_unlock(&g_lock);
  return last;
}

void hs_kshare_get_stats(hs_kshare_stats *s) {
  pthread_mutex_lock(&g_lock);
  *s = g_stats;
  pthread_mutex_unlock(&g_lock);
}

void hs_kshare_thread_stats(hs_kshare_stats *s, int reset) {
  *s = t_stats;
  if (reset) memset(&t_stats, 0, sizeof t_stats);
}

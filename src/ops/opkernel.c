/* opkernel.c - shape-keyed kernel lookup shared by the ops that run on src/kernels (see opkernel.h). */
#include <stdatomic.h>
#include <stdlib.h>

#include "base/log.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

int hs_ops_strict(void) {
  static atomic_int mode = -1;
  int m = atomic_load(&mode);
  if (m < 0) {
    const char *s = getenv("HS_KERNELS_STRICT");
    m = s && s[0] == '1';
    atomic_store(&mode, m);
  }
  return m;
}

hs_kernel *hs_op_kernel(const hs_node *n, hs_kcache *cache, const int64_t *key, int nkey, hs_kcache_build_fn build,
                        void *ctx, int64_t batch, hs_error *strict_err) {
  hs_kernel *k = NULL;
  hs_error e;
  hs_error_clear(&e);
  if (!cache) {
    hs_error_set(&e, HS_UNSUPPORTED, "the node has no kernel state");
  } else if (hs_kcache_get(cache, key, nkey, build, ctx, &k, &e) == 0 &&
             (batch <= 0 || hs_kernel_prepare_batch(k, batch, &e) == 0)) {
    return k;
  }
  HS_LOGD("node '%s' (%s): no kernel, using plain C: %s", n->name, n->op_type, e.message);
  if (strict_err && hs_ops_strict()) *strict_err = e;
  return NULL;
}

static void free_cache(void *p) {
  hs_kcache *c = p;
  if (!c) return;
  hs_kcache_destroy(c);
  free(c);
}

int hs_op_attach_cache(hs_node *n, hs_error *err) {
  hs_kcache *c = calloc(1, sizeof *c);
  if (!c) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  hs_kcache_init(c);
  n->state = c;
  n->free_state = free_cache;
  return 0;
}

size_t hs_op_kernel_scratch(hs_kernel *k, int64_t batch) {
  if (!k) return 0;
  size_t s = hs_kernel_scratch_size(k, batch);
  return s == (size_t)-1 ? 0 : s;
}

int hs_op_run_kernel(const hs_node *n, hs_kernel *k, const hs_kernel_args *args, hs_error *err) {
  int rc = hs_kernel_run(k, args, err);
  return rc ? hs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type) : 0;
}

int hs_op_strict_error(const hs_node *n, const hs_error *kerr, hs_error *err) {
  return hs_op_errf(err, n, kerr->code, "no oneDNN kernel (strict mode): %s", kerr->message);
}

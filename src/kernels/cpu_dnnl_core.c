/* cpu_dnnl_core.c - oneDNN plumbing for the CPU kernels: engine, per-thread streams, batch variants, runs. */

/*
 * DESIGN
 * One CPU engine serves the whole process (created on first use with pthread_once). oneDNN streams
 * must not be shared between threads, so each thread that runs a kernel gets its own stream, created
 * on its first run and destroyed by a pthread key destructor when the thread exits.
 *
 * The same per-thread state keeps the oneDNN memory objects that wrap a run's buffers (memo_take):
 * creating and destroying one costs ~0.2 us (two allocations), four or five per primitive, and a
 * batch-1 MobileNetV2 runs 56 primitives, all on the thread that calls the kernels while the other
 * compute threads wait. A slot is keyed by the descriptor's address and the argument, checked against
 * the object's own descriptor, re-pointed with dnnl_memory_set_data_handle and marked busy until
 * hs__argv_release; a busy or padded one falls back to a fresh object. docs/KERNELS.md, "Memory
 * objects".
 *
 * A kernel holds up to HS__MAX_VARIANTS variants, one per batch size it was asked to run. Variants
 * are appended under k->lock and published by incrementing the atomic k->nvar (release); a run scans
 * var[0..nvar) after an acquire load and never takes the lock unless it meets a new batch size.
 * Published variants never change, so concurrent runs need no locking. Primitives use the
 * user-managed scratchpad: the caller passes scratch memory with each run, so a run allocates only the
 * small oneDNN memory objects that wrap its buffers.
 */
#include <omp.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define HS_ROWS_SSE 1
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/wblock.h"
#include "kernels/parallel.h"
#include "kernels/cpu_dnnl.h"
#include "kernels/kshare.h"

static dnnl_engine_t g_engine;
static dnnl_status_t g_engine_status = dnnl_success;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_thread_key;

/* Memory-object slots per thread: a model's (descriptor, argument) pairs hash into them (MobileNetV2
 * batch 1 has ~230, ResNet-50 ~270; each object ~1 KB, so a thread holds at most ~0.5 MB), each
 * probing MEMO_PROBE slots from its hash. Objects of kernels since destroyed stay until their slot is
 * taken or the thread exits. */
#define MEMO_SLOTS 512
#define MEMO_PROBE 4
typedef struct {
  const void *key; /* the descriptor's address (a variant's md[], or the variant for its scratchpad) */
  int arg;
  int busy; /* in an argument list not yet released */
  dnnl_memory_t mem;
} memo_slot;

/* What each thread that runs kernels owns. */
typedef struct {
  dnnl_stream_t stream;
  memo_slot slot[MEMO_SLOTS];
} thread_state;

static void destroy_thread_state(void *p) {
  thread_state *t = p;
  for (int i = 0; i < MEMO_SLOTS; i++)
    if (t->slot[i].mem) dnnl_memory_destroy(t->slot[i].mem);
  dnnl_stream_destroy(t->stream);
  free(t);
}

static void engine_init(void) {
  g_engine_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
  if (g_engine_status != dnnl_success) g_engine = NULL;
  pthread_key_create(&g_thread_key, destroy_thread_state);
}

dnnl_engine_t hs__dnnl_engine(void) {
  pthread_once(&g_engine_once, engine_init);
  return g_engine;
}

/* The calling thread's state (stream and memory slots), created on first use. */
static thread_state *thread_get(hs_error *err) {
  dnnl_engine_t eng = hs__dnnl_engine();
  if (!eng) {
    hs__dnnl_fail(err, g_engine_status, "creating the oneDNN CPU engine");
    return NULL;
  }
  thread_state *t = pthread_getspecific(g_thread_key);
  if (t) return t;
  if (!(t = calloc(1, sizeof *t))) {
    hs_error_set(err, HS_NO_MEMORY, "per-thread kernel state");
    return NULL;
  }
  dnnl_status_t st = dnnl_stream_create(&t->stream, eng, dnnl_stream_default_flags);
  if (st != dnnl_success) {
    free(t);
    hs__dnnl_fail(err, st, "creating a oneDNN stream");
    return NULL;
  }
  pthread_setspecific(g_thread_key, t);
  return t;
}

static dnnl_stream_t thread_stream(hs_error *err) {
  thread_state *t = thread_get(err);
  return t ? t->stream : NULL;
}

/* A padded layout (blocked channels not filling their last block): re-pointing its memory object
 * would zero the padding on every run, so those get a fresh object as before. */
static int md_padded(const dnnl_memory_desc_t *md) {
  for (int i = 0; i < md->ndims; i++)
    if (md->padded_dims[i] != md->dims[i] || md->padded_offsets[i]) return 1;
  return 0;
}

/* A memory object of descriptor md over ptr from the calling thread's slots, marked busy; its slot
 * number + 1 in *slot. The pair (key, arg) probes MEMO_PROBE slots from its hash: a match is re-pointed
 * at ptr, else the first free slot (or the first idle one, whose object is dropped) gets a new object.
 * NULL (and *slot 0) when the thread has no state yet, md is padded, all probed slots are busy or the
 * object cannot be made: the caller then creates its own. */
static dnnl_memory_t memo_take(const void *key, int arg, const dnnl_memory_desc_t *md, void *ptr, int *slot) {
  *slot = 0;
  thread_state *t = pthread_getspecific(g_thread_key);
  if (!t || md_padded(md)) return NULL;
  uint64_t h = ((uint64_t)(uintptr_t)key ^ ((uint64_t)(unsigned)arg << 40)) * 0x9E3779B97F4A7C15ull;
  int first = (int)((h >> 32) % MEMO_SLOTS), at = -1, hit = 0;
  for (int j = 0; j < MEMO_PROBE && !hit; j++) {
    int i = (first + j) % MEMO_SLOTS;
    memo_slot *m = &t->slot[i];
    if (m->busy) continue;
    const dnnl_memory_desc_t *have = NULL;
    hit = m->mem && m->key == key && m->arg == arg &&
          dnnl_memory_get_memory_desc(m->mem, &have) == dnnl_success && dnnl_memory_desc_equal(have, md) &&
          dnnl_memory_set_data_handle(m->mem, ptr) == dnnl_success;
    if (hit || at < 0 || (t->slot[at].mem && !m->mem)) at = i; /* a free slot before an idle one */
  }
  if (at < 0) return NULL;
  memo_slot *m = &t->slot[at];
  if (!hit) {
    if (m->mem) dnnl_memory_destroy(m->mem);
    m->mem = NULL;
    if (dnnl_memory_create(&m->mem, md, g_engine, ptr) != dnnl_success) {
      m->mem = NULL;
      return NULL;
    }
    m->key = key;
    m->arg = arg;
  }
  m->busy = 1;
  *slot = at + 1;
  return m->mem;
}

static void memo_give_back(int slot) {
  thread_state *t = slot ? pthread_getspecific(g_thread_key) : NULL;
  if (t) t->slot[slot - 1].busy = 0;
}

static const char *dnnl_status_text(dnnl_status_t st) {
  switch (st) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "no implementation for these parameters";
    case dnnl_iterator_ends: return "iterator ends";
    case dnnl_runtime_error: return "runtime error";
    case dnnl_not_required: return "not required";
    default: return "unknown error";
  }
}

int hs__dnnl_fail(hs_error *err, dnnl_status_t st, const char *what) {
  int code = HS_INTERNAL;
  if (st == dnnl_out_of_memory) code = HS_NO_MEMORY;
  else if (st == dnnl_unimplemented) code = HS_UNSUPPORTED;
  else if (st == dnnl_invalid_arguments) code = HS_INVALID_ARGUMENT;
  return hs_error_set(err, code, "%s: oneDNN: %s", what, dnnl_status_text(st));
}

hs_layout hs_kernels_preferred_layout(hs_kernel_device device) {
  if (device != HS_KDEV_CPU) return HS_LAYOUT_NHWC;
  const char *force = getenv("HS_KERNELS_LAYOUT"); /* nchw, nhwc or blocked: for experiments */
  if (force && !strcmp(force, "nchw")) return HS_LAYOUT_NCHW;
  if (force && !strcmp(force, "nhwc")) return HS_LAYOUT_NHWC;
  if (force && !strcmp(force, "blocked")) return HS_LAYOUT_NCHW8C;
  unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(); /* ISA values are feature bit sets */
  unsigned avx512 = (unsigned)dnnl_cpu_isa_avx512_core;
  return (isa & avx512) == avx512 ? HS_LAYOUT_NHWC : HS_LAYOUT_NCHW8C;
}

int hs_kernel_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M == 0 || N == 0) return 0;
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return st == dnnl_success ? 0 : HS_INVALID_ARGUMENT;
}

/* ---- threads ---- */

static int g_default_threads; /* omp_get_max_threads() before anyone changed it */
static pthread_once_t g_threads_once = PTHREAD_ONCE_INIT;
static void threads_init(void) { g_default_threads = omp_get_max_threads(); }

void hs_kernels_set_threads(int n) {
  pthread_once(&g_threads_once, threads_init);
  omp_set_num_threads(n > 0 ? n : g_default_threads);
}

int hs_kernels_threads(void) { return omp_get_max_threads(); }

static _Thread_local int t_serial_reorders; /* hs_kernels_serial_reorders */

void hs_kernels_serial_reorders(int on) { t_serial_reorders = on != 0; }

int hs_kernels_cores(void) {
  int n = omp_get_num_procs();
  return n > 0 ? n : 1;
}

/* ---- post-ops and attributes ---- */

int hs_post_ops_add_act(hs_post_ops *p, hs_act_kind act, float alpha, float beta) {
  if (p->count >= HS_KERNEL_MAX_POST) return HS_LIMIT;
  hs_post_op *o = &p->op[p->count++];
  memset(o, 0, sizeof *o);
  o->kind = HS_POST_ACT;
  o->act = act;
  o->alpha = alpha;
  o->beta = beta;
  return 0;
}

int hs_post_ops_add_sum(hs_post_ops *p, float scale) {
  if (p->count >= HS_KERNEL_MAX_POST) return HS_LIMIT;
  hs_post_op *o = &p->op[p->count++];
  memset(o, 0, sizeof *o);
  o->kind = HS_POST_SUM;
  o->scale = scale;
  return 0;
}

const char *hs_act_name(hs_act_kind a) {
  static const char *names[HS_ACT_COUNT] = {
      "none", "relu", "clip", "sigmoid", "tanh", "hardsigmoid", "hardswish", "elu", "gelu_erf",
      "gelu_tanh", "exp", "log", "sqrt", "abs", "square", "linear", "pow", "softplus", "swish"};
  return (a >= 0 && a < HS_ACT_COUNT) ? names[a] : "unknown";
}

int hs__act_to_dnnl(hs_act_kind a, float alpha, float beta, dnnl_alg_kind_t alg[2], float al[2],
                    float be[2]) {
  al[0] = alpha;
  be[0] = beta;
  switch (a) {
    case HS_ACT_RELU: alg[0] = dnnl_eltwise_relu; return 1;
    case HS_ACT_CLIP: alg[0] = dnnl_eltwise_clip; return 1;
    case HS_ACT_SIGMOID: alg[0] = dnnl_eltwise_logistic; return 1;
    case HS_ACT_TANH: alg[0] = dnnl_eltwise_tanh; return 1;
    case HS_ACT_HARDSIGMOID:
      alg[0] = dnnl_eltwise_linear;
      alg[1] = dnnl_eltwise_clip;
      al[1] = 0.f;
      be[1] = 1.f;
      return 2;
    case HS_ACT_HARDSWISH: alg[0] = dnnl_eltwise_hardswish; return 1;
    case HS_ACT_ELU: alg[0] = dnnl_eltwise_elu; return 1;
    case HS_ACT_GELU_ERF: alg[0] = dnnl_eltwise_gelu_erf; return 1;
    case HS_ACT_GELU_TANH: alg[0] = dnnl_eltwise_gelu_tanh; return 1;
    case HS_ACT_EXP: alg[0] = dnnl_eltwise_exp; return 1;
    case HS_ACT_LOG: alg[0] = dnnl_eltwise_log; return 1;
    case HS_ACT_SQRT: alg[0] = dnnl_eltwise_sqrt; return 1;
    case HS_ACT_ABS: alg[0] = dnnl_eltwise_abs; return 1;
    case HS_ACT_SQUARE: alg[0] = dnnl_eltwise_square; return 1;
    case HS_ACT_LINEAR: alg[0] = dnnl_eltwise_linear; return 1;
    case HS_ACT_POW: alg[0] = dnnl_eltwise_pow; return 1;
    case HS_ACT_SOFTPLUS: alg[0] = dnnl_eltwise_soft_relu; return 1;
    case HS_ACT_SWISH: alg[0] = dnnl_eltwise_swish; return 1;
    default: return 0;
  }
}

int hs__append_post_ops(dnnl_post_ops_t ops, const hs_post_ops *post, hs_error *err) {
  dnnl_status_t st;
  int rc = 0;
  for (int i = 0; post && i < post->count && rc == 0; i++) {
    const hs_post_op *o = &post->op[i];
    if (o->kind == HS_POST_SUM) {
      st = dnnl_post_ops_append_sum(ops, o->scale == 0.f ? 1.f : o->scale);
      if (st != dnnl_success) rc = hs__dnnl_fail(err, st, "adding a sum post-op");
      continue;
    }
    dnnl_alg_kind_t alg[2];
    float al[2], be[2];
    int n = hs__act_to_dnnl(o->act, o->alpha, o->beta, alg, al, be);
    if (n == 0) return hs_error_set(err, HS_UNSUPPORTED, "activation %s cannot be fused", hs_act_name(o->act));
    for (int j = 0; j < n && rc == 0; j++) {
      st = dnnl_post_ops_append_eltwise(ops, 1.f, alg[j], al[j], be[j]);
      if (st != dnnl_success) rc = hs__dnnl_fail(err, st, "adding an eltwise post-op");
    }
  }
  return rc;
}

int hs__make_attr(const hs_post_ops *post, dnnl_primitive_attr_t *attr, hs_error *err) {
  dnnl_status_t st = dnnl_primitive_attr_create(attr);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "creating a primitive attribute");
  st = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
  if (st != dnnl_success || !post || post->count == 0) {
    if (st != dnnl_success) {
      dnnl_primitive_attr_destroy(*attr);
      *attr = NULL;
      return hs__dnnl_fail(err, st, "setting the scratchpad mode");
    }
    return 0;
  }
  dnnl_post_ops_t ops;
  st = dnnl_post_ops_create(&ops);
  if (st != dnnl_success) {
    dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
    return hs__dnnl_fail(err, st, "creating post-ops");
  }
  int rc = hs__append_post_ops(ops, post, err);
  if (rc == 0) {
    st = dnnl_primitive_attr_set_post_ops(*attr, ops);
    if (st != dnnl_success) rc = hs__dnnl_fail(err, st, "setting post-ops");
  }
  dnnl_post_ops_destroy(ops);
  if (rc != 0) {
    dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
  }
  return rc;
}

/* ---- memory descriptors ---- */

static int check_dims(int ndim, const int64_t *dims, hs_error *err) {
  if (ndim < 1 || ndim > DNNL_MAX_NDIMS)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "rank %d is out of range", ndim);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (dims[i] <= 0)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "dimension %d is %lld (must be positive)", i,
                          (long long)dims[i]);
    if (n > (INT64_MAX / 8) / dims[i]) return hs_error_set(err, HS_LIMIT, "tensor too large");
    n *= dims[i];
  }
  return 0;
}

int hs__md_plain(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, hs_error *err) {
  int rc = check_dims(ndim, dims, err);
  if (rc) return rc;
  dnnl_dims_t d, strides;
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    d[i] = dims[i];
    strides[i] = s;
    s *= dims[i];
  }
  dnnl_status_t st = dnnl_memory_desc_init_by_strides(md, ndim, d, dnnl_f32, strides);
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "describing a tensor");
}

int hs__md_act(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, hs_layout layout,
               hs_error *err) {
  if (layout == HS_LAYOUT_NCHW || ndim < 3) return hs__md_plain(md, ndim, dims, err);
  int rc = check_dims(ndim, dims, err);
  if (rc) return rc;
  if (layout == HS_LAYOUT_NCHW8C) {
    if (dims[1] % 8 != 0 || ndim > 5)
      return hs_error_set(err, HS_UNSUPPORTED, "blocked layout needs channels %% 8 == 0 (have %lld)",
                          (long long)dims[1]);
    static const dnnl_format_tag_t tags[3] = {dnnl_nCw8c, dnnl_nChw8c, dnnl_nCdhw8c};
    dnnl_dims_t d;
    for (int i = 0; i < ndim; i++) d[i] = dims[i];
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(md, ndim, d, dnnl_f32, tags[ndim - 3]);
    return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "describing a blocked activation");
  }
  /* channels last: C has stride 1, the last spatial axis stride C, ..., N the largest. */
  dnnl_dims_t d, strides;
  for (int i = 0; i < ndim; i++) d[i] = dims[i];
  int64_t s = dims[1];
  strides[1] = 1;
  for (int i = ndim - 1; i >= 2; i--) {
    strides[i] = s;
    s *= dims[i];
  }
  strides[0] = s;
  dnnl_status_t st = dnnl_memory_desc_init_by_strides(md, ndim, d, dnnl_f32, strides);
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "describing an activation");
}

/* ---- plain [O][I] weights into blocks of B output channels [O/B][I][B] ---- */

/* oneDNN 2.6's jit:uni reorder from a plain 1x1 weight (abcd) into Acdb48a / Acdb64a (the brgemm 1x1
 * Convs' layouts) slows down when a row of I floats is a multiple of 4 KiB (ResNet-50's 2048x1024: 2.8
 * ms on one thread against 1.0 ms here, 512x2048: 1.4 against 0.5, 256x1024: 0.16 against 0.12; src
 * not in cache), its loads of B rows landing on the same cache sets; elsewhere it is as fast as this
 * loop or faster, and it stays the one used there. This one moves 4x4 tiles (SSE): 4 rows' loads at
 * the same column, transposed, stored as 4 columns of B. The values are copied bit for bit. */
static _Thread_local size_t t_rows_reorders; /* hs__rows_reorders */

size_t hs__rows_reorders(void) { return t_rows_reorders; }

typedef struct rows_job {
  const float *src;
  float *dst;
  int64_t o, i, b;
} rows_job;

static void rows_block(void *ctx, int ob) {
  const rows_job *j = ctx;
  const int64_t I = j->i, B = j->b, o0 = (int64_t)ob * B, nb = j->o - o0 < B ? j->o - o0 : B;
  const float *src = j->src + o0 * I;
  float *d = j->dst + (int64_t)ob * I * B;
  int64_t ol = 0;
#ifdef HS_ROWS_SSE
  for (; ol + 4 <= nb; ol += 4) {
    const float *s0 = src + ol * I, *s1 = s0 + I, *s2 = s1 + I, *s3 = s2 + I;
    int64_t i = 0;
    for (; i + 4 <= I; i += 4) {
      __m128 r0 = _mm_loadu_ps(s0 + i), r1 = _mm_loadu_ps(s1 + i), r2 = _mm_loadu_ps(s2 + i), r3 = _mm_loadu_ps(s3 + i);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      float *t = d + i * B + ol;
      _mm_storeu_ps(t, r0);
      _mm_storeu_ps(t + B, r1);
      _mm_storeu_ps(t + 2 * B, r2);
      _mm_storeu_ps(t + 3 * B, r3);
    }
    for (; i < I; i++)
      for (int64_t k = 0; k < 4; k++) memcpy(d + i * B + ol + k, src + (ol + k) * I + i, sizeof(float));
  }
#endif
  for (; ol < nb; ol++)
    for (int64_t i = 0; i < I; i++) memcpy(d + i * B + ol, src + ol * I + i, sizeof(float));
  if (nb < B) /* the padded output channels of the last block: zero */
    for (int64_t i = 0; i < I; i++) memset(d + i * B + nb, 0, (size_t)(B - nb) * sizeof(float));
}

/* Whether md is f32, dense, at offset 0 with no extra terms, its dims [O][I][1...] (1x1 spatially),
 * blocked `inner` (1: O in blocks of *b, the blocks outermost, then I, then the b lanes; 0: plain). */
static int rows_md(const dnnl_memory_desc_t *md, int inner, int64_t *b) {
  if (md->data_type != dnnl_f32 || md->format_kind != dnnl_blocked || md->offset0 != 0 ||
      md->extra.flags != dnnl_memory_extra_flag_none || md->ndims < 2)
    return 0;
  const dnnl_blocking_desc_t *k = &md->format_desc.blocking;
  for (int i = 2; i < md->ndims; i++)
    if (md->dims[i] != 1 || md->padded_dims[i] != 1) return 0;
  for (int i = 0; i < md->ndims; i++)
    if (md->padded_offsets[i] != 0) return 0;
  const int64_t O = md->dims[0], I = md->dims[1];
  if (O <= 0 || I <= 0 || md->padded_dims[1] != I) return 0;
  if (!inner) return k->inner_nblks == 0 && md->padded_dims[0] == O && k->strides[0] == I && k->strides[1] == 1;
  if (k->inner_nblks != 1 || k->inner_idxs[0] != 0 || k->inner_blks[0] < 4) return 0;
  *b = k->inner_blks[0];
  return md->padded_dims[0] == (O + *b - 1) / *b * *b && k->strides[1] == *b && k->strides[0] == I * *b;
}

/* Reorders plain [O][I] 1x1 weights into [O/B][I][B] here when oneDNN's reorder is the slow one (see
 * above): returns 1 when it did. */
static int reorder_rows(const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *to, void *dst) {
  int64_t b = 0;
  if (!rows_md(from, 0, &b) || !rows_md(to, 1, &b) || from->dims[0] != to->dims[0] || from->dims[1] != to->dims[1])
    return 0;
  if ((to->dims[1] * (int64_t)sizeof(float)) % 4096) return 0; /* oneDNN's is as fast */
  rows_job j = {.src = src, .dst = dst, .o = to->dims[0], .i = to->dims[1], .b = b};
  int64_t blocks = to->padded_dims[0] / b;
  if (blocks > INT32_MAX) return 0;
  hs_kernels_parallel_for((int)blocks, rows_block, &j);
  t_rows_reorders++;
  return 1;
}

int hs__reorder_into(const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *to, void *dst,
                     hs_error *err) {
  if (from->extra.flags == dnnl_memory_extra_flag_none) {
    int threads = omp_get_max_threads();
    if (t_serial_reorders) omp_set_num_threads(1);
    int done = reorder_rows(from, src, to, dst);
    if (t_serial_reorders) omp_set_num_threads(threads);
    if (done) return 0;
  }
  dnnl_engine_t eng = hs__dnnl_engine();
  if (!eng) return hs__dnnl_fail(err, g_engine_status, "creating the oneDNN CPU engine");
  dnnl_stream_t s = thread_stream(err);
  if (!s) return err && err->code ? err->code : HS_INTERNAL;
  /* the values only: int8 weights keep their compensation terms after the values, which no reorder reads */
  dnnl_memory_desc_t values = *from;
  values.extra.flags = dnnl_memory_extra_flag_none;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t prim = NULL;
  dnnl_memory_t m_src = NULL, m_dst = NULL;
  int threads = omp_get_max_threads(); /* restored below: the thread's kernels keep their count */
  if (t_serial_reorders) omp_set_num_threads(1);
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, &values, eng, to, eng, NULL);
  if (st == dnnl_success) st = dnnl_primitive_create(&prim, pd);
  if (st == dnnl_success) st = dnnl_memory_create(&m_src, &values, eng, (void *)src);
  if (st == dnnl_success) st = dnnl_memory_create(&m_dst, to, eng, dst);
  if (st == dnnl_success) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, m_src}, {DNNL_ARG_TO, m_dst}};
    st = dnnl_primitive_execute(prim, s, 2, args);
    if (st == dnnl_success) st = dnnl_stream_wait(s);
  }
  if (m_src) dnnl_memory_destroy(m_src);
  if (m_dst) dnnl_memory_destroy(m_dst);
  if (prim) dnnl_primitive_destroy(prim);
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (t_serial_reorders) omp_set_num_threads(threads);
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "reordering weights");
}

/* Whether a buffer of md's `bytes` holds more than md's values: padding of a blocked layout, extra
 * terms (int8 compensation) or an opaque format (Winograd's), which a reorder may leave unwritten. */
static int leaves_gaps(const dnnl_memory_desc_t *md, size_t bytes) {
  if (md->extra.flags != dnnl_memory_extra_flag_none || md->format_kind != dnnl_blocked) return 1;
  size_t n = dnnl_data_type_size(md->data_type);
  for (int i = 0; i < md->ndims; i++) n *= (size_t)md->dims[i];
  return n != bytes;
}

size_t hs__gaps_from(const dnnl_memory_desc_t *md, size_t bytes) {
  if (!leaves_gaps(md, bytes)) return bytes;
  if (md->extra.flags != dnnl_memory_extra_flag_none || md->format_kind != dnnl_blocked || md->offset0 != 0) return 0;
  const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
  size_t es = dnnl_data_type_size(md->data_type), dense = es, from = bytes;
  for (int i = 0; i < md->ndims; i++) {
    if (md->padded_offsets[i] != 0 || md->padded_dims[i] <= 0 || b->strides[i] <= 0) return 0;
    dense *= (size_t)md->padded_dims[i];
  }
  if (dense != bytes) return 0; /* strides that leave holes: not only padding */
  for (int i = 0; i < md->ndims; i++) {
    if (md->padded_dims[i] == md->dims[i]) continue;
    int64_t blk = 1;
    for (int j = 0; j < b->inner_nblks; j++)
      if (b->inner_idxs[j] == i) blk *= b->inner_blks[j];
    /* padding of dim i lies within its last outer block: past dims[i] only when that block is
     * partly filled (padded_dims rounds dims up to the block, never a whole block more) */
    if (blk <= 1 || md->padded_dims[i] % blk || md->padded_dims[i] - md->dims[i] >= blk) return 0;
    size_t at = (size_t)(md->padded_dims[i] / blk - 1) * (size_t)b->strides[i] * es;
    if (at < from) from = at;
  }
  return from;
}

int hs__reorder_alloc(const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *to,
                      void **out, hs_error *err) {
  *out = NULL;
  size_t bytes = dnnl_memory_desc_get_size(to);
  void *buf = hs_wblock_alloc(bytes ? bytes : 64); /* reused by the next version (base/wblock.h) */
  if (!buf) return hs_error_set(err, HS_NO_MEMORY, "allocating %zu bytes of weights", bytes);
  /* keep a blocked layout's padding zero (a reused pool block holds the last version's bytes); only
   * the part that can hold padding is cleared: the rest is written whole by the reorder, so clearing
   * it first would only add a pass over those weights (ResNet-50: 35 of its 100 MB are in layouts
   * whose output channels are padded to 48, the padding all in their last block of 48) */
  size_t gaps = hs__gaps_from(to, bytes);
  if (gaps < bytes) memset((char *)buf + gaps, 0, bytes - gaps);
  int rc = hs__reorder_into(from, src, to, buf, err);
  if (rc) {
    hs_wblock_free(buf);
    return rc;
  }
  *out = buf;
  return 0;
}

int hs__make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out,
                     size_t *sp, hs_error *err) {
  *out = NULL;
  *sp = 0;
  dnnl_primitive_attr_t attr;
  int rc = hs__make_attr(NULL, &attr, err);
  if (rc) return rc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, hs__dnnl_engine(), to, hs__dnnl_engine(), attr);
  dnnl_primitive_attr_destroy(attr);
  if (st == dnnl_success) {
    const dnnl_memory_desc_t *m = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    *sp = m ? dnnl_memory_desc_get_size(m) : 0;
    st = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
  }
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "creating a reorder");
}

int hs__weights_one_way(const dnnl_memory_desc_t *md) {
  /* Winograd's transformed weights; int8 weights halved (scale_adjust: CPUs without VNNI), which lose their low bit */
  return md->format_kind == dnnl_format_kind_wino ||
         ((md->extra.flags & dnnl_memory_extra_flag_scale_adjust) && md->extra.scale_adjust != 1.0f);
}

int hs__variant_weights(hs_kernel *k, hs__variant *v, const dnnl_memory_desc_t *want,
                        hs_error *err) {
  int nvar = atomic_load_explicit(&k->nvar, memory_order_acquire);
  const hs__variant *v0 = nvar > 0 ? k->var[0] : NULL;
  const dnnl_memory_desc_t *have = v0 ? &v0->md[HS__MAX_MDS - 1] : NULL; /* builders record it there */
  if (v0 && v0->weights && dnnl_memory_desc_equal(have, want)) {
    v->weights = v0->weights;
    v->weights_shared = 1;
    return 0;
  }
  if (k->w_plain || k->w_src)
    return hs__reorder_alloc(&k->w_plain_md, k->w_plain ? k->w_plain : k->w_src, want, &v->weights, err);
  if (!v0) return hs_error_set(err, HS_INTERNAL, "kernel has no weights to reorder");
  if (want->extra.flags == dnnl_memory_extra_flag_none) return hs__reorder_alloc(have, v0->weights, want, &v->weights, err);
  /* int8 weights with compensation terms: oneDNN computes those only from a plain layout, so variant 0's
   * values go through a temporary plain copy */
  void *plain = NULL;
  int rc = hs__reorder_alloc(have, v0->weights, &k->w_plain_md, &plain, err);
  if (!rc) rc = hs__reorder_alloc(&k->w_plain_md, plain, want, &v->weights, err);
  hs_wblock_free(plain);
  return rc;
}

size_t hs_kernel_weight_bytes(const hs_kernel *k) {
  if (!k) return 0;
  size_t total = k->w_plain ? dnnl_memory_desc_get_size(&k->w_plain_md) : 0;
  if (k->w_lent_owned) total += dnnl_memory_desc_get_size(&k->w_plain_md); /* variants share it (weights_shared) */
  int n = atomic_load_explicit(&((hs_kernel *)k)->nvar, memory_order_acquire);
  for (int i = 0; i < n; i++) /* builders record the weights' descriptor in the last slot */
    if (k->var[i]->weights && !k->var[i]->weights_shared) total += dnnl_memory_desc_get_size(&k->var[i]->md[HS__MAX_MDS - 1]);
  return total;
}

/* ---- kernels and variants ---- */

int hs__kernel_new(const hs__kvt *vt, hs_kernel **out, hs_error *err) {
  *out = NULL;
  if (!hs__dnnl_engine()) return hs__dnnl_fail(err, g_engine_status, "creating the oneDNN CPU engine");
  hs_kernel *k = calloc(1, sizeof *k);
  if (!k) return hs_error_set(err, HS_NO_MEMORY, "allocating a kernel");
  k->vt = vt;
  k->var[0] = &k->var0;
  pthread_mutex_init(&k->lock, NULL);
  atomic_init(&k->nvar, 0);
  *out = k;
  return 0;
}

static void variant_release(hs__variant *v) {
  for (int i = 0; i < v->nprim; i++)
    if (v->prim[i]) dnnl_primitive_destroy(v->prim[i]);
  if (v->weights && !v->weights_shared) hs_wblock_free(v->weights);
  hs_wblock_free(v->weights2);
  memset(v, 0, sizeof *v);
}

int hs__add_prim(hs__variant *v, dnnl_primitive_desc_t pd, hs_error *err) {
  if (v->nprim >= HS__MAX_PRIMS) {
    dnnl_primitive_desc_destroy(pd);
    return hs_error_set(err, HS_INTERNAL, "too many primitives in one kernel");
  }
  const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
  if (bytes > v->scratch) v->scratch = bytes;
  dnnl_primitive_t prim;
  dnnl_status_t st = dnnl_primitive_create(&prim, pd);
  dnnl_primitive_desc_destroy(pd);
  if (st != dnnl_success) return hs__dnnl_fail(err, st, "creating a primitive");
  v->prim[v->nprim++] = prim;
  return 0;
}

int hs__add_weights_prim(hs_kernel *k, hs__variant *v, dnnl_primitive_desc_t pd, hs_error *err) {
  v->md[HS__MAX_MDS - 1] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  int rc = hs__variant_weights(k, v, &v->md[HS__MAX_MDS - 1], err);
  if (rc) {
    dnnl_primitive_desc_destroy(pd);
    return rc;
  }
  return hs__add_prim(v, pd, err);
}

/* Returns the published variant for batch, building it under the lock when missing. */
static const hs__variant *variant_for(hs_kernel *k, int64_t batch, hs_error *err) {
  int n = atomic_load_explicit(&k->nvar, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (k->var[i]->batch == batch) return k->var[i];
  if (batch <= 0) {
    hs_error_set(err, HS_INVALID_ARGUMENT, "batch %lld must be positive", (long long)batch);
    return NULL;
  }
  pthread_mutex_lock(&k->lock);
  const hs__variant *found = NULL;
  n = atomic_load_explicit(&k->nvar, memory_order_relaxed);
  for (int i = 0; i < n && !found; i++)
    if (k->var[i]->batch == batch) found = k->var[i];
  if (!found) {
    if (n >= HS__MAX_VARIANTS) {
      hs_error_set(err, HS_LIMIT, "%s kernel already holds %d batch sizes", k->vt->name, n);
    } else {
      hs__variant *v = n == 0 ? k->var[0] : calloc(1, sizeof *v);
      if (!v) {
        hs_error_set(err, HS_NO_MEMORY, "%s kernel: no memory for batch %lld", k->vt->name, (long long)batch);
      } else {
        memset(v, 0, sizeof *v);
        v->batch = batch;
        k->var[n] = v; /* read by runs only once nvar counts it (release below) */
        if (k->vt->build(k, batch, v, err) == 0) {
          if (n == 0 && k->w_plain && !hs__weights_one_way(&v->md[HS__MAX_MDS - 1])) {
            hs_wblock_free(k->w_plain); /* variant 0 holds the reordered copy; later ones reorder from it */
            k->w_plain = NULL;
          }
          atomic_store_explicit(&k->nvar, n + 1, memory_order_release);
          found = v;
        } else {
          hs_error_prefix(err, "%s kernel (batch %lld)", k->vt->name, (long long)batch);
          variant_release(v);
          if (n > 0) {
            free(v);
            k->var[n] = NULL;
          }
        }
      }
    }
  }
  pthread_mutex_unlock(&k->lock);
  return found;
}

int hs__kernel_finish(hs_kernel *k, int64_t batch, hs_error *err) {
  k->batch0 = batch;
  const hs__variant *v = variant_for(k, batch, err);
  int code = v ? 0 : err && err->code ? err->code : HS_INTERNAL;
  if (v && k->w_src && hs__weights_one_way(&v->md[HS__MAX_MDS - 1])) {
    /* variant 0 reordered the caller's weights (w_src) into a format no reorder reads back
     * (Winograd's): the kernel keeps a plain copy for later variants and for reading them back */
    size_t bytes = dnnl_memory_desc_get_size(&k->w_plain_md);
    if ((k->w_plain = hs_wblock_alloc(bytes))) memcpy(k->w_plain, k->w_src, bytes);
    else code = hs_error_set(err, HS_NO_MEMORY, "%s: copying %zu bytes of weights", k->vt->name, bytes);
  }
  k->w_src = NULL; /* the caller's weights are not read after the constructor */
  if (code) {
    hs_kernel_destroy(k);
    return code;
  }
  const char *impl = NULL;
  dnnl_primitive_desc_t pd = NULL; /* const: owned by the primitive */
  if (v->nprim > 0 &&
      dnnl_primitive_get_primitive_desc(v->prim[0], (const_dnnl_primitive_desc_t *)&pd) == dnnl_success &&
      dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
    snprintf(k->impl, sizeof k->impl, "%s%s", impl, v->reordered ? "+reorders" : "");
  else
    snprintf(k->impl, sizeof k->impl, "%s", k->vt->name);
  if (getenv("HS_KERNELS_VERBOSE")) /* which implementation each kernel got: for tuning */
    fprintf(stderr, "hotserve kernels: %s batch %lld -> %s (scratch %zu bytes) %s\n", k->vt->name, (long long)batch,
            k->impl, v->scratch, k->vt->describe ? k->vt->describe(k) : "");
  return 0;
}

int hs_kernel_prepare_batch(hs_kernel *k, int64_t batch, hs_error *err) {
  if (!k) return hs_error_set(err, HS_INVALID_ARGUMENT, "no kernel");
  return variant_for(k, batch > 0 ? batch : k->batch0, err) ? 0 : (err && err->code ? err->code : HS_INTERNAL);
}

size_t hs_kernel_scratch_size(hs_kernel *k, int64_t batch) {
  if (!k) return (size_t)-1;
  hs_error e;
  hs_error_clear(&e);
  const hs__variant *v = variant_for(k, batch > 0 ? batch : k->batch0, &e);
  return v ? v->scratch : (size_t)-1;
}

const char *hs_kernel_impl_name(const hs_kernel *k) { return k ? k->impl : "none"; }

int hs_kernel_run(hs_kernel *k, const hs_kernel_args *a, hs_error *err) {
  if (!k || !a || !a->dst) return hs_error_set(err, HS_INVALID_ARGUMENT, "kernel run without buffers");
  if (a->batch < 0) return hs_error_set(err, HS_INVALID_ARGUMENT, "batch %lld is negative", (long long)a->batch);
  const hs__variant *v = variant_for(k, a->batch > 0 ? a->batch : k->batch0, err);
  if (!v) return err && err->code ? err->code : HS_INTERNAL;
  if (v->scratch > 0 && !a->scratch)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "%s kernel needs %zu bytes of scratch", k->vt->name,
                        v->scratch);
  dnnl_stream_t s = thread_stream(err);
  if (!s) return err && err->code ? err->code : HS_INTERNAL;
  dnnl_memory_t scratch = NULL;
  int scratch_slot = 0;
  if (v->scratch > 0) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {(dnnl_dim_t)v->scratch};
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&md, 1, d, dnnl_u8, dnnl_a);
    if (st == dnnl_success && !(scratch = memo_take(v, DNNL_ARG_SCRATCHPAD, &md, a->scratch, &scratch_slot)))
      st = dnnl_memory_create(&scratch, &md, hs__dnnl_engine(), a->scratch);
    if (st != dnnl_success) return hs__dnnl_fail(err, st, "wrapping scratch memory");
  }
  int rc = k->vt->exec(k, v, a, s, scratch, err);
  if (scratch_slot) memo_give_back(scratch_slot);
  else if (scratch) dnnl_memory_destroy(scratch);
  return rc;
}

void hs_kernel_destroy(hs_kernel *k) {
  if (!k || !hs__kshare_release(k)) return; /* another version still holds a shared kernel */
  int n = atomic_load(&k->nvar);
  /* Later variants may share variant 0's weights: release them first. */
  for (int i = n - 1; i >= 0; i--) {
    variant_release(k->var[i]);
    if (i > 0) free(k->var[i]);
  }
  hs_wblock_free(k->w_plain);
  if (k->w_lent_owned) hs_wblock_free((void *)k->w_lent); /* a matmul's B, handed over by its caller */
  for (int i = 0; i < 4; i++) free(k->owned[i]);
  free(k->owned_i64);
  pthread_mutex_destroy(&k->lock);
  free(k);
}

/* ---- running ---- */

int hs__argv_add(hs__argv *av, int arg, const dnnl_memory_desc_t *md, const void *ptr, hs_error *err) {
  if (av->n >= HS__MAX_ARGS) return hs_error_set(err, HS_INTERNAL, "too many primitive arguments");
  int slot;
  dnnl_memory_t m = memo_take(md, arg, md, (void *)ptr, &slot);
  if (!m) {
    dnnl_status_t st = dnnl_memory_create(&m, md, hs__dnnl_engine(), (void *)ptr);
    if (st != dnnl_success) return hs__dnnl_fail(err, st, "wrapping a buffer");
  }
  av->a[av->n].arg = arg;
  av->a[av->n].memory = m;
  av->slot[av->n] = slot;
  av->n++;
  return 0;
}

void hs__argv_add_mem(hs__argv *av, int arg, dnnl_memory_t mem) {
  if (av->n >= HS__MAX_ARGS || !mem) return;
  av->a[av->n].arg = arg;
  av->a[av->n].memory = mem;
  av->slot[av->n] = 0;
  av->n++;
}

void hs__argv_release(hs__argv *av, int owned_from) {
  for (int i = owned_from; i < av->n; i++) {
    if (av->slot[i]) memo_give_back(av->slot[i]);
    else if (av->a[i].memory && av->a[i].arg != DNNL_ARG_SCRATCHPAD) dnnl_memory_destroy(av->a[i].memory);
  }
  av->n = 0;
}

int hs__exec(dnnl_primitive_t prim, dnnl_stream_t s, hs__argv *av, hs_error *err) {
  dnnl_status_t st = dnnl_primitive_execute(prim, s, av->n, av->a);
  if (st == dnnl_success) st = dnnl_stream_wait(s);
  return st == dnnl_success ? 0 : hs__dnnl_fail(err, st, "running a primitive");
}

int hs__run_reorder(dnnl_primitive_t prim, dnnl_stream_t s, dnnl_memory_t scratch, const dnnl_memory_desc_t *fmd,
                    const void *from, const dnnl_memory_desc_t *tmd, void *to, hs_error *err) {
  hs__argv av = {0};
  hs__argv_add_mem(&av, DNNL_ARG_SCRATCHPAD, scratch);
  int owned = av.n;
  int rc = hs__argv_add(&av, DNNL_ARG_FROM, fmd, from, err);
  if (!rc) rc = hs__argv_add(&av, DNNL_ARG_TO, tmd, to, err);
  if (!rc) rc = hs__exec(prim, s, &av, err);
  hs__argv_release(&av, owned);
  return rc;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

void hs__place_temps(hs__variant *v, size_t sp, const dnnl_memory_desc_t *isrc, const dnnl_memory_desc_t *idst) {
  size_t temps = isrc ? align64(dnnl_memory_desc_get_size(isrc)) : 0;
  v->off[0] = align64(sp);
  v->off[1] = v->off[0] + temps;
  if (idst) temps += align64(dnnl_memory_desc_get_size(idst));
  v->scratch = temps ? v->off[0] + temps : sp;
}

int hs__prepare_sum(const hs_post_ops *post, const hs_kernel_args *a, size_t dst_bytes, hs_error *err) {
  int has_sum = 0;
  for (int i = 0; post && i < post->count; i++) has_sum |= post->op[i].kind == HS_POST_SUM;
  if (!has_sum) return 0;
  if (!a->residual) return hs_error_set(err, HS_INVALID_ARGUMENT, "fused sum needs a residual input");
  if (a->residual != a->dst) memcpy(a->dst, a->residual, dst_bytes);
  return 0;
}

int hs__own_floats(hs_kernel *k, const float *src, int64_t n, const float **dst, hs_error *err) {
  *dst = NULL;
  if (!src) return 0;
  int slot = 0;
  while (slot < 4 && k->owned[slot]) slot++;
  if (slot == 4) return hs_error_set(err, HS_INTERNAL, "too many owned constants");
  if (n <= 0 || (uint64_t)n > SIZE_MAX / sizeof(float))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "constant of %lld elements", (long long)n);
  float *c = malloc((size_t)n * sizeof(float));
  if (!c) return hs_error_set(err, HS_NO_MEMORY, "copying %lld constants", (long long)n);
  memcpy(c, src, (size_t)n * sizeof(float));
  k->owned[slot] = c;
  *dst = c;
  return 0;
}

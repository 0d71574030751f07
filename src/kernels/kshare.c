/* kshare.c - content-keyed registry of conv kernels shared between model versions (see kshare.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/digest.h"
#include "base/wblock.h"
#include "kernels/cpu_dnnl.h"
#include "kernels/kshare.h"

#define SAMPLES 16 /* weights read at evenly spaced positions for the pre-key */

typedef struct entry {
  struct entry *next;
  uint8_t pkey[32];          /* SHA-256 of the parameters (all but batch, weights and bias) */
  size_t wbytes;             /* weight bytes in ONNX's layout */
  float wsample[SAMPLES];    /* weights at sample_at(), as bytes */
  float *bias;               /* a copy of the bias (out_c floats), NULL when none */
  size_t bias_bytes;
  hs_kernel *k;
  int refs;
  size_t bytes;
} entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *g_head;
static hs_kshare_stats g_stats;
static _Thread_local hs_kshare_stats t_stats;

static atomic_int g_enabled = 1; /* `hotserve serve --kernel-share` */

void hs_kshare_set_enabled(int on) { atomic_store(&g_enabled, on != 0); }

int hs_kshare_enabled(void) { return atomic_load(&g_enabled); }

static void put_i64(hs_sha256_ctx *c, int64_t v) { hs_sha256_update(c, &v, sizeof v); }

static void put_f32(hs_sha256_ctx *c, float v) { hs_sha256_update(c, &v, sizeof v); }

/* Elements in p's weights. */
static int64_t weight_count(const hs_conv_params *p) {
  int64_t n = p->out_c / p->groups * p->in_c;
  for (int i = 0; i < p->nsp; i++) n *= p->kernel[i];
  return n;
}

static void put_post(hs_sha256_ctx *c, const hs_post_ops *p) {
  put_i64(c, p->count);
  for (int i = 0; i < p->count && i < HS_KERNEL_MAX_POST; i++) {
    const hs_post_op *o = &p->op[i];
    put_i64(c, o->kind);
    put_i64(c, o->act);
    put_f32(c, o->alpha);
    put_f32(c, o->beta);
    put_f32(c, o->scale);
  }
}

/* SHA-256 over every parameter that decides the kernel's results besides its weights and bias,
 * fields written one by one (no struct padding). A few hundred bytes: cheap. */
static int params_key(const hs_conv_params *p, uint8_t key[32]) {
  hs_sha256_ctx *c = hs_sha256_begin();
  if (!c) return -1;
  hs_sha256_update(c, "conv/2", 6);
  const int64_t head[] = {p->device, p->src_layout, p->dst_layout, p->res_layout, p->transposed,
                          p->nsp,    p->in_c,       p->out_c,      p->groups};
  for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) put_i64(c, head[i]);
  for (int i = 0; i < p->nsp; i++) {
    const int64_t f[] = {p->in[i], p->out[i], p->kernel[i], p->stride[i], p->dilation[i], p->pad_begin[i],
                         p->pad_end[i]};
    for (size_t j = 0; j < sizeof f / sizeof f[0]; j++) put_i64(c, f[j]);
  }
  put_post(c, &p->post);
  put_i64(c, weight_count(p));
  put_i64(c, p->bias != NULL);
  put_i64(c, p->dw_weights != NULL); /* a fused depthwise convolution: its shape and post-ops (dw_equal: values) */
  if (p->dw_weights) {
    const int64_t f[] = {p->dw_stride, p->dw_out[0], p->dw_out[1], p->dw_bias != NULL};
    for (size_t j = 0; j < sizeof f / sizeof f[0]; j++) put_i64(c, f[j]);
    put_post(c, &p->dw_post);
  }
  hs_sha256_end(c, key);
  return 0;
}

/* The pre-filter: SAMPLES weights at evenly spaced positions (first and last included). Two
 * weight buffers that differ here cannot be equal; equal samples only make them candidates. */
static size_t sample_at(size_t i, size_t wbytes) {
  size_t n = wbytes / sizeof(float);
  return (n > 1 ? i * (n - 1) / (SAMPLES - 1) : 0) * sizeof(float);
}

static void take_sample(const void *w, size_t wbytes, float out[SAMPLES]) {
  const char *at = w; /* bytes: the decoder's come straight from the file, not float-aligned */
  for (size_t i = 0; i < SAMPLES; i++) memcpy(&out[i], at + sample_at(i, wbytes), sizeof(float));
}

/* Weights are compared against a registered kernel's a slice at a time: SLICE_BYTES of ONNX's
 * layout (whole rows of the outermost dimension) read back into the thread's slice buffer and
 * compared, stopping at the first difference. A whole read-back was up to 9.4 MB (ResNet-50's
 * largest Conv) at the reload's memory peak (bench/results/load-s23-2026-12-07.md). The buffer is
 * one mapping per thread (hs_wscratch), released by hs_kshare_release_scratch when the decode ends:
 * from the heap, freed read-backs' pages stayed resident beside the serving version
 * (bench/results/load-mem-r50-2026-12-07.md). */
#define SLICE_BYTES ((size_t)256 << 10)

static _Thread_local hs_wscratch t_back;

void hs_kshare_release_scratch(void) { hs_wscratch_release(&t_back); }

/* How k's weights are read back a slice at a time: a slice is rows of the outermost dimension d0
 * of the plain layout (output channels; groups for a grouped conv), or, where one such row is over
 * SLICE_BYTES (a grouped conv's group), rows of the next one inside it (inner). Every slice is a
 * contiguous byte range of ONNX's layout. */
typedef struct slicing {
  const hs_kernel *k;
  int d0, ds, inner;       /* the outermost dimension, the one sliced, whether ds is inside d0 */
  size_t row0, row;        /* bytes of one d0 row, of one sliced row */
  int64_t rows, per, outer; /* sliced rows (per d0 row when inner), rows per slice, d0 rows walked */
} slicing;

/* Rows per slice along dimension d of k's weights (rows of `row` bytes, `rows` of them): about
 * SLICE_BYTES, a multiple of the kernel layout's block along d. */
static int64_t slice_rows(const hs_kernel *k, int d, size_t row, int64_t rows) {
  int64_t blk = 1;
  const dnnl_blocking_desc_t *b = &k->var[0]->md[HS__MAX_MDS - 1].format_desc.blocking;
  for (int i = 0; i < b->inner_nblks; i++)
    if (b->inner_idxs[i] == d) blk *= b->inner_blks[i];
  int64_t n = (int64_t)(SLICE_BYTES / row) / blk * blk;
  if (n < blk) n = blk;
  return n > rows ? rows : n;
}

/* Fills sl for k's weights (wbytes, ONNX's layout): 0, or -1 where slices do not apply (a layout
 * they do not handle: the caller reads the weights back whole). */
static int slicing_init(const hs_kernel *k, size_t wbytes, slicing *sl) {
  const dnnl_memory_desc_t *plain = &k->w_plain_md;
  if (k->p.conv.transposed || atomic_load_explicit(&((hs_kernel *)k)->nvar, memory_order_acquire) < 1 ||
      !k->var[0]->weights || plain->format_kind != dnnl_blocked || plain->data_type != dnnl_f32 ||
      plain->format_desc.blocking.inner_nblks != 0 || dnnl_memory_desc_get_size(plain) != wbytes || plain->ndims < 1)
    return -1;
  const dnnl_dim_t *st = plain->format_desc.blocking.strides;
  int d0 = 0, d1 = -1; /* the outermost dimension and the next: their rows are contiguous in w */
  for (int d = 1; d < plain->ndims; d++)
    if (st[d] > st[d0]) d0 = d;
  for (int d = 0; d < plain->ndims; d++)
    if (d != d0 && plain->dims[d] > 1 && (d1 < 0 || st[d] > st[d1])) d1 = d;
  size_t row0 = (size_t)st[d0] * sizeof(float);
  if (plain->dims[d0] < 1 || row0 * (size_t)plain->dims[d0] != wbytes) return -1; /* not dense */
  int inner = row0 > SLICE_BYTES && d1 >= 0 && (size_t)st[d0] == (size_t)plain->dims[d1] * (size_t)st[d1];
  int ds = inner ? d1 : d0;
  *sl = (slicing){.k = k, .d0 = d0, .ds = ds, .inner = inner, .row0 = row0, .row = (size_t)st[ds] * sizeof(float),
                  .rows = plain->dims[ds], .outer = inner ? plain->dims[d0] : 1};
  sl->per = slice_rows(k, ds, sl->row, sl->rows);
  return 0;
}

/* Bytes of the largest slice (the read-back buffer's size). */
static size_t slice_max(const slicing *sl) { return (size_t)sl->per * sl->row; }

/* Reads back the slice holding byte `at` of the weights (ONNX's layout) into buf: its first byte
 * goes to *start, its length to *len. 0, or -1 when the reorder is refused. The slice is a
 * sub-memory of variant 0's weights; its offset is moved into the pointer, so that every full slice
 * has one descriptor and oneDNN's primitive cache builds its reorder once. */
static int slice_read(const slicing *sl, size_t at, float *buf, size_t *start, size_t *len) {
  const hs_kernel *k = sl->k;
  const dnnl_memory_desc_t *plain = &k->w_plain_md, *have = &k->var[0]->md[HS__MAX_MDS - 1];
  int64_t o = sl->inner ? (int64_t)(at / sl->row0) : 0;
  int64_t r0 = (int64_t)((at - (size_t)o * (sl->inner ? sl->row0 : 0)) / sl->row) / sl->per * sl->per;
  dnnl_dims_t dims, offs = {0};
  memcpy(dims, plain->dims, sizeof dims);
  if (sl->inner) {
    dims[sl->d0] = 1;
    offs[sl->d0] = o;
  }
  dims[sl->ds] = sl->rows - r0 < sl->per ? sl->rows - r0 : sl->per;
  offs[sl->ds] = r0;
  dnnl_memory_desc_t parent = *have, sub, to;
  parent.extra.flags = dnnl_memory_extra_flag_none; /* the values only (hs__reorder_into) */
  if (dnnl_memory_desc_init_submemory(&sub, &parent, dims, offs) != dnnl_success) return -1;
  const char *src = (const char *)k->var[0]->weights + (size_t)sub.offset0 * sizeof(float);
  sub.offset0 = 0;
  if (dnnl_memory_desc_init_by_strides(&to, plain->ndims, dims, dnnl_f32, plain->format_desc.blocking.strides) !=
      dnnl_success)
    return -1;
  hs_error err;
  if (hs__reorder_into(&sub, src, &to, buf, &err) != 0) return -1;
  *start = (size_t)o * (sl->inner ? sl->row0 : 0) + (size_t)r0 * sl->row;
  *len = (size_t)dims[sl->ds] * sl->row;
  return 0;
}

/* Compares k's weights with w (wbytes, ONNX's layout) slice by slice, stopping at the first
 * difference: 1 equal, 0 different, -1 not done (a layout the slices do not handle, or a reorder
 * refused): the caller reads them back whole. */
static int sliced_equal(const hs_kernel *k, const void *w, size_t wbytes, bool decode) {
  slicing sl;
  if (slicing_init(k, wbytes, &sl)) return -1;
  float *buf = decode ? hs_wscratch_get(&t_back, slice_max(&sl)) : malloc(slice_max(&sl));
  int eq = buf ? 1 : -1;
  for (size_t at = 0, start, len; at < wbytes && eq == 1; at = start + len)
    eq = slice_read(&sl, at, buf, &start, &len) ? -1 : memcmp(buf, (const char *)w + start, len) == 0;
  if (!decode) free(buf);
  return eq;
}

/* Whether registered kernel e's weights are byte for byte w. A kernel that still holds its plain
 * copy (w_plain: Winograd's weights, which no reorder reads; for a kernel made from another's
 * Winograd weights, that one's) is compared with it directly; else its weights are read back into
 * ONNX's layout (an exact reorder) a slice at a time, into the thread's slice mapping at decode
 * time (decode set), else into a buffer of their own; whole where slices do not apply. Called with
 * the lock held, so e stays alive. */
static int weights_equal(const entry *e, const void *w, bool decode) {
  const hs_kernel *k = e->k;
  for (;;) { /* along weights_from while the weights are one-way: the first plain copy, else the last kernel */
    if (k->w_plain && dnnl_memory_desc_get_size(&k->w_plain_md) == e->wbytes)
      return memcmp(k->w_plain, w, e->wbytes) == 0;
    if (!k->w_from || !hs__weights_one_way(&k->var[0]->md[HS__MAX_MDS - 1])) break;
    k = k->w_from;
  }
  int eq = sliced_equal(k, w, e->wbytes, decode);
  if (eq >= 0) return eq;
  float *back = malloc(e->wbytes);
  hs_error err;
  eq = back && hs_kernel_conv_weights(k, back, e->wbytes, &err) == 0 && memcmp(back, w, e->wbytes) == 0;
  free(back);
  return eq;
}

static int bias_equal(const entry *e, const hs_conv_params *p) {
  if (!p->bias || !e->bias) return !p->bias && !e->bias;
  return e->bias_bytes == (size_t)p->out_c * sizeof(float) && memcmp(e->bias, p->bias, e->bias_bytes) == 0;
}

/* A fused depthwise convolution's weights and bias against the copies registered kernel e holds (the
 * key already says both have one, and whether with a bias). */
static int dw_equal(const entry *e, const hs_conv_params *p) {
  if (!p->dw_weights) return 1;
  const hs_conv_params *q = &e->k->p.conv;
  return q->dw_weights && q->dw_bias && memcmp(q->dw_weights, p->dw_weights, hs_conv_dw_weight_bytes(p)) == 0 &&
         (!p->dw_bias || memcmp(q->dw_bias, p->dw_bias, (size_t)p->out_c * sizeof(float)) == 0);
}

static void count(uint64_t *n, uint64_t *bytes, size_t b) {
  (*n)++;
  *bytes += b;
}

static void take(entry *e, hs_kernel **out, int *shared) {
  e->refs++;
  *out = e->k;
  if (shared) *shared = 1;
  count(&g_stats.hits, &g_stats.hit_bytes, e->bytes);
  count(&t_stats.hits, &t_stats.hit_bytes, e->bytes);
}

/* Registers the kernel just built from p (with the lock held). Out of memory for the entry: the
 * kernel works, unshared. */
static void add(const hs_conv_params *p, const uint8_t pkey[32], hs_kernel *k) {
  entry *e = calloc(1, sizeof *e);
  size_t bias_bytes = p->bias ? (size_t)p->out_c * sizeof(float) : 0;
  if (e && bias_bytes && !(e->bias = malloc(bias_bytes))) {
    free(e);
    e = NULL;
  }
  if (!e) return;
  memcpy(e->pkey, pkey, 32);
  e->wbytes = (size_t)weight_count(p) * sizeof(float);
  take_sample(p->weights, e->wbytes, e->wsample);
  if (bias_bytes) memcpy(e->bias, p->bias, bias_bytes);
  e->bias_bytes = bias_bytes;
  e->k = k;
  e->refs = 1;
  e->bytes = hs_kernel_conv_owned_weight_bytes(k);
  e->next = g_head;
  g_head = e;
  k->share = e;
  g_stats.kernels++;
  g_stats.bytes += e->bytes;
  count(&g_stats.builds, &g_stats.build_bytes, e->bytes);
  count(&t_stats.builds, &t_stats.build_bytes, e->bytes);
}

/* Whether p is a conv the registry may key: the constructor validates shapes, the key reads only
 * what it would accept. */
static int keyable(const hs_conv_params *p) {
  return !p->weights_from && p->groups >= 1 && p->nsp >= 1 && p->nsp <= 3 && p->in_c >= 1 && p->out_c >= 1 &&
         p->out_c % p->groups == 0;
}

int hs_kshare_conv(const hs_conv_params *p, hs_kernel **out, int *shared, hs_error *err) {
  *out = NULL;
  if (shared) *shared = 0;
  uint8_t pkey[32];
  if (!hs_kshare_enabled() || !p->weights || !keyable(p) || params_key(p, pkey) != 0)
    return hs_kernel_conv_create(p, out, err);
  size_t wbytes = (size_t)weight_count(p) * sizeof(float);
  float sample[SAMPLES];
  take_sample(p->weights, wbytes, sample);
  /* Built under the lock: two loads of the same content then build it once. Loads are serialised
   * by the loader anyway, so this costs no parallelism in the server. */
  pthread_mutex_lock(&g_lock);
  int rc = 0;
  entry *e = g_head;
  for (; e; e = e->next) /* pre-key first; only a candidate's weights are compared in full */
    if (memcmp(e->pkey, pkey, 32) == 0 && e->wbytes == wbytes && memcmp(e->wsample, sample, sizeof sample) == 0 &&
        bias_equal(e, p) && dw_equal(e, p) && weights_equal(e, p->weights, false))
      break;
  if (e) take(e, out, shared);
  else if ((rc = hs_kernel_conv_create(p, out, err)) == 0) add(p, pkey, *out);
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int hs_kshare_find_weights(const void *w, size_t nbytes, hs_kernel **ref) {
  *ref = NULL;
  if (!hs_kshare_enabled() || nbytes < sizeof(float) || nbytes % sizeof(float)) return 0;
  float sample[SAMPLES];
  take_sample(w, nbytes, sample);
  pthread_mutex_lock(&g_lock);
  entry *e = g_head;
  for (; e; e = e->next) {
    if (e->wbytes == nbytes && memcmp(e->wsample, sample, sizeof sample) == 0 && weights_equal(e, w, true)) break;
    /* a fused depthwise convolution's weights (hs_kernel_conv_weights reads them back by their size) */
    const hs_conv_params *q = &e->k->p.conv;
    if (q->dw_weights && nbytes == hs_conv_dw_weight_bytes(q) && nbytes != e->wbytes &&
        memcmp(q->dw_weights, w, nbytes) == 0)
      break;
  }
  if (e) { /* a reference, not a hit: hs_kshare_conv_from counts what the load takes */
    e->refs++;
    *ref = e->k;
    count(&g_stats.found, &g_stats.found_bytes, nbytes);
    count(&t_stats.found, &t_stats.found_bytes, nbytes);
  }
  pthread_mutex_unlock(&g_lock);
  return e != NULL;
}

/* ---- streaming lookup: a tensor compared piece by piece as it arrives (hs_kshare_match_*) ---- */

enum { CMP_BYTES, CMP_SLICES }; /* bytes in ONNX's layout at hand (plain copy, fused dw, whole read-back), or slices */

typedef struct cand {
  entry *e;            /* referenced (e->refs) until the match ends */
  int alive;           /* equal to every byte fed so far */
  int how, dw;         /* CMP_*; dw: the fused depthwise weights are the ones compared */
  const char *bytes;   /* CMP_BYTES: the weights in ONNX's layout */
  float *whole;        /* a whole read-back of its own (a layout the slices do not handle) */
  slicing sl;          /* CMP_SLICES */
} cand;

struct hs_kshare_match {
  size_t nbytes;
  size_t fed;          /* bytes fed so far */
  size_t good;         /* bytes [0, good) are equal to c[last]'s weights */
  size_t last;
  const cand *slice_of; /* whose slice t_back holds (NULL: none): bytes [s_start, s_start + s_len) at s_buf */
  const float *s_buf;
  size_t s_start, s_len;
  size_t n;
  cand c[];
};

/* Sets how candidate c's weights are read (under the lock, when first compared). 0, or -1 when
 * they cannot be (out of memory for a whole read-back). */
static int cand_prepare(cand *c, size_t nbytes) {
  if (c->dw) { /* (hs_kernel_conv_weights reads them back by their size) */
    c->how = CMP_BYTES;
    c->bytes = (const char *)c->e->k->p.conv.dw_weights;
    return 0;
  }
  const hs_kernel *k = c->e->k;
  for (;;) { /* as weights_equal */
    if (k->w_plain && dnnl_memory_desc_get_size(&k->w_plain_md) == nbytes) {
      c->how = CMP_BYTES;
      c->bytes = (const char *)k->w_plain;
      return 0;
    }
    if (!k->w_from || !hs__weights_one_way(&k->var[0]->md[HS__MAX_MDS - 1])) break;
    k = k->w_from;
  }
  if (slicing_init(k, nbytes, &c->sl) == 0) {
    c->how = CMP_SLICES;
    return 0;
  }
  hs_error err;
  if (!(c->whole = malloc(nbytes)) || hs_kernel_conv_weights(k, c->whole, nbytes, &err) != 0) return -1;
  c->how = CMP_BYTES;
  c->bytes = (const char *)c->whole;
  return 0;
}

/* Reads candidate c's weights [at, at + n) into dst (cmp NULL) or compares them with cmp: 1 equal
 * (copied), 0 different, -1 not read. With the lock held. */
static int cand_range(hs_kshare_match *m, const cand *c, size_t at, size_t n, void *dst, const char *cmp) {
  if (c->how == CMP_BYTES) {
    if (dst) memcpy(dst, c->bytes + at, n);
    return cmp ? memcmp(c->bytes + at, cmp, n) == 0 : 1;
  }
  for (size_t end = at + n; at < end;) {
    float *buf = hs_wscratch_get(&t_back, slice_max(&c->sl));
    if (!buf) return -1;
    if (m->slice_of != c || buf != m->s_buf || at < m->s_start || at >= m->s_start + m->s_len) {
      m->slice_of = NULL;
      if (slice_read(&c->sl, at, buf, &m->s_start, &m->s_len)) return -1;
      m->slice_of = c;
      m->s_buf = buf;
    }
    size_t to = m->s_start + m->s_len < end ? m->s_start + m->s_len : end;
    const char *have = (const char *)buf + (at - m->s_start);
    if (dst) memcpy((char *)dst + (at - (end - n)), have, to - at);
    if (cmp && memcmp(have, cmp + (at - (end - n)), to - at) != 0) return 0;
    at = to;
  }
  return 1;
}

int hs_kshare_match_begin(size_t nbytes, hs_kshare_match **out) {
  *out = NULL;
  if (!hs_kshare_enabled() || nbytes < sizeof(float) || nbytes % sizeof(float)) return 0;
  pthread_mutex_lock(&g_lock);
  size_t n = 0;
  for (entry *e = g_head; e; e = e->next) {
    const hs_conv_params *q = &e->k->p.conv;
    n += e->wbytes == nbytes || (q->dw_weights && nbytes == hs_conv_dw_weight_bytes(q) && nbytes != e->wbytes);
  }
  hs_kshare_match *m = n ? calloc(1, sizeof *m + n * sizeof m->c[0]) : NULL;
  if (m) {
    m->nbytes = nbytes;
    for (entry *e = g_head; e; e = e->next) {
      const hs_conv_params *q = &e->k->p.conv;
      int dw = q->dw_weights && nbytes == hs_conv_dw_weight_bytes(q) && nbytes != e->wbytes;
      if (e->wbytes != nbytes && !dw) continue;
      e->refs++; /* it cannot go away while the tensor streams by */
      m->c[m->n++] = (cand){.e = e, .alive = 1, .how = -1, .dw = dw};
    }
  }
  pthread_mutex_unlock(&g_lock);
  *out = m;
  return m != NULL;
}

int hs_kshare_match_feed(hs_kshare_match *m, const void *piece, size_t n) {
  if (n > m->nbytes - m->fed) n = m->nbytes - m->fed; /* (past the tensor: nothing more to compare) */
  size_t at = m->fed, alive = 0;
  pthread_mutex_lock(&g_lock);
  for (size_t i = 0; i < m->n; i++) {
    cand *c = &m->c[i];
    if (!c->alive) continue;
    if (!alive) { /* the first one alive matched [0, at): what match_prefix reads back */
      m->last = i;
      m->good = at;
    }
    /* the pre-filter first: registered samples that fall inside this piece */
    for (size_t s = 0; s < SAMPLES && c->alive && !c->dw; s++) {
      size_t p = sample_at(s, m->nbytes);
      if (p >= at && p + sizeof(float) <= at + n && memcmp((const char *)piece + (p - at), &c->e->wsample[s], sizeof(float)))
        c->alive = 0;
    }
    if (c->alive && c->how < 0 && cand_prepare(c, m->nbytes)) c->alive = 0;
    if (c->alive && cand_range(m, c, at, n, NULL, piece) != 1) c->alive = 0;
    if (c->alive && !alive++) { /* the first one still alive matched [0, at + n) */
      m->last = i;
      m->good = at + n;
    }
  }
  pthread_mutex_unlock(&g_lock);
  m->fed = at + n;
  return alive > 0;
}

int hs_kshare_match_prefix(hs_kshare_match *m, void *dst, size_t n) {
  if (!m->n || n > m->good) return -1;
  if (!n) return 0;
  pthread_mutex_lock(&g_lock);
  cand *c = &m->c[m->last];
  int rc = c->how < 0 && cand_prepare(c, m->nbytes) ? -1 : cand_range(m, c, 0, n, dst, NULL) == 1 ? 0 : -1;
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int hs_kshare_match_end(hs_kshare_match *m, hs_kernel **ref) {
  if (ref) *ref = NULL;
  if (!m) return 0;
  size_t keep = m->n;
  if (ref && m->fed == m->nbytes)
    for (size_t i = 0; i < m->n && keep == m->n; i++)
      if (m->c[i].alive) keep = i;
  if (keep < m->n) { /* a reference, not a hit (as hs_kshare_find_weights) */
    *ref = m->c[keep].e->k;
    pthread_mutex_lock(&g_lock);
    count(&g_stats.found, &g_stats.found_bytes, m->nbytes);
    count(&t_stats.found, &t_stats.found_bytes, m->nbytes);
    pthread_mutex_unlock(&g_lock);
  }
  for (size_t i = 0; i < m->n; i++) {
    free(m->c[i].whole);
    if (i != keep) hs_kernel_destroy(m->c[i].e->k); /* the candidate's reference */
  }
  int held = keep < m->n;
  free(m);
  return held;
}

int hs_kshare_conv_from(const hs_conv_params *p, const hs_kernel *src, hs_kernel **out, int *shared,
                        hs_error *err) {
  *out = NULL;
  if (shared) *shared = 0;
  if (p->weights || p->weights_from || !src || !keyable(p))
    return hs_error_set(err, HS_INTERNAL, "conv: shared weights without a registered source");
  size_t wbytes = (size_t)weight_count(p) * sizeof(float);
  uint8_t pkey[32];
  int ok = params_key(p, pkey) == 0;
  pthread_mutex_lock(&g_lock);
  entry *e = src->share;
  /* src's weights are this conv's (the decoder compared them): with the same parameters and bias,
   * src is the kernel a build would make */
  if (ok && e && memcmp(e->pkey, pkey, 32) == 0 && e->wbytes == wbytes && bias_equal(e, p) && dw_equal(e, p)) {
    take(e, out, shared);
    pthread_mutex_unlock(&g_lock);
    return 0;
  }
  pthread_mutex_unlock(&g_lock);
  /* other parameters (post-ops, layouts, shapes) or another bias: build from src's weights, read
   * back in ONNX's layout */
  float *w = malloc(wbytes ? wbytes : 1);
  if (!w) return hs_error_set(err, HS_NO_MEMORY, "out of memory for conv weights");
  int rc = hs_kernel_conv_weights(src, w, wbytes, err);
  if (rc == 0) {
    hs_conv_params q = *p;
    q.weights = w;
    rc = hs_kshare_conv(&q, out, shared, err);
  }
  free(w);
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
    free(e->bias);
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

/* elementwise.c - binary ops with numpy broadcasting (Add, Sub, Mul, Div, Pow, PRelu), unary
 * activations and math (Relu, Sigmoid, Tanh, Erf, ...), Clip, Identity and inference Dropout. */

/*
 * DESIGN
 * Every op here has a plain-C implementation over any supported dtype; it is the reference. Float32
 * Add/Sub/Mul/Div (numpy broadcasting), Pow with a constant scalar exponent, and the unary functions
 * that hs_act_kind expresses accurately (Clip only with constant bounds; not Log) also run on
 * src/kernels: prepare() gives the node an elt_state (a kernel cache plus the constant operand Pow
 * and Clip need), scratch_bytes() builds the kernel for the planned shapes and run() finds it again
 * (opkernel.h). Shapes the binary kernel cannot broadcast (both operands broadcast, or Div's
 * dividend does), other dtypes (the int64 shape arithmetic exporters emit), Erf/Floor/Ceil/PRelu
 * and empty tensors always take plain C; that is by design, not a fallback, so strict mode does not
 * complain about them.
 *
 * Small tensors also stay in plain C, where a loop costs less than a oneDNN primitive's fixed
 * overhead (thresholds and measurements at KERNEL_MIN_ELEMS_MEMORY below); from PARALLEL_MIN_ELEMS
 * its broadcast rows are split over the compute threads. Strict mode
 * (HS_KERNELS_STRICT=1) ignores the thresholds so that the conformance tests' small shapes prove
 * the kernel path.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kcache.h"
#include "kernels/kernels.h"
#include "kernels/parallel.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

/* ---- broadcasting ----------------------------------------------------------------------------- */

/* Output shape of rank r and, per input, element strides with 0 on broadcast dimensions. */
typedef struct {
  int r;
  int64_t dims[HS_MAX_DIMS];
  int64_t sa[HS_MAX_DIMS], sb[HS_MAX_DIMS];
} bcast;

static void strides_for(const hs_tensor *t, int r, const int64_t *odims, int64_t *s) {
  int64_t acc = 1;
  for (int i = r - 1; i >= 0; i--) {
    int ti = i - (r - t->ndim);
    int64_t d = ti >= 0 ? t->dims[ti] : 1;
    s[i] = d == 1 ? 0 : acc;
    acc *= d;
  }
}

static void bcast_init(bcast *b, const hs_tensor *x, const hs_tensor *y, const hs_tensor *out) {
  b->r = out->ndim;
  hs_memcpy(b->dims, out->dims, sizeof b->dims);
  strides_for(x, b->r, b->dims, b->sa);
  strides_for(y, b->r, b->dims, b->sb);
}

typedef void (*row_fn)(const void *a, int64_t sa, const void *b, int64_t sb, void *o, int64_t n);

/* Calls fn once per innermost row in rows [k0, k1); element offsets follow the broadcast strides. */
static void bcast_rows(const bcast *b, const void *a, size_t asz, const void *y, size_t bsz, void *o, size_t osz,
                       row_fn fn, int64_t k0, int64_t k1) {
  int64_t inner = b->dims[b->r - 1];
  int64_t idx[HS_MAX_DIMS] = {0};
  int64_t oa = 0, ob = 0, rest = k0;
  for (int d = b->r - 2; d >= 0; d--) { /* row k0's position in the outer dimensions */
    idx[d] = rest % b->dims[d];
    rest /= b->dims[d];
    oa += idx[d] * b->sa[d];
    ob += idx[d] * b->sb[d];
  }
  for (int64_t k = k0; k < k1; k++) {
    fn((const char *)a + oa * (int64_t)asz, b->sa[b->r - 1], (const char *)y + ob * (int64_t)bsz,
       b->sb[b->r - 1], (char *)o + k * inner * (int64_t)osz, inner);
    for (int d = b->r - 2; d >= 0; d--) {
      idx[d]++;
      oa += b->sa[d];
      ob += b->sb[d];
      if (idx[d] < b->dims[d]) break;
      oa -= b->sa[d] * b->dims[d];
      ob -= b->sb[d] * b->dims[d];
      idx[d] = 0;
    }
  }
}

/* From this many output elements the rows are split over the compute threads. Squeeze-and-excite
 * blocks scale 33K-250K elements per image (MobileNetV3, the text models); measured with 2 threads,
 * interleaved (docs/KERNELS.md, "Convolutional speed levers"): splitting from 2^18 took MobileNetV3
 * batch 8 from 13.2-13.3 to 12.6-12.9 ms, from 2^16 the recognizer's batch 1 from 4.27-4.47 to
 * 4.16-4.27 ms, from 2^15 MobileNetV3's batch 1 a further 0-6%; BERT's were unchanged. */
#define PARALLEL_MIN_ELEMS (1 << 15)

typedef struct {
  const bcast *b;
  const void *a, *y;
  void *o;
  size_t asz, bsz, osz;
  row_fn fn;
  int64_t rows;
  int parts;
} bcast_job;

static void bcast_part(void *ctx, int i) {
  const bcast_job *j = ctx;
  int64_t k0 = j->rows * i / j->parts, k1 = j->rows * (i + 1) / j->parts;
  bcast_rows(j->b, j->a, j->asz, j->y, j->bsz, j->o, j->osz, j->fn, k0, k1);
}

/* Calls fn once per innermost row, on the compute threads when the output is large. */
static void bcast_run(const bcast *b, const void *a, size_t asz, const void *y, size_t bsz, void *o, size_t osz,
                      row_fn fn) {
  if (b->r == 0) {
    fn(a, 0, y, 0, o, 1);
    return;
  }
  int64_t inner = b->dims[b->r - 1];
  int64_t outer = 1;
  for (int i = 0; i < b->r - 1; i++) outer *= b->dims[i];
  if (inner == 0 || outer == 0) return;
  int threads = hs_kernels_threads();
  if (threads < 2 || outer < threads || outer * inner < PARALLEL_MIN_ELEMS) {
    bcast_rows(b, a, asz, y, bsz, o, osz, fn, 0, outer);
    return;
  }
  bcast_job j = {b, a, y, o, asz, bsz, osz, fn, outer, threads};
  hs_kernels_parallel_for(threads, bcast_part, &j);
}

/* ---- binary kernels --------------------------------------------------------------------------- */

enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_PRELU, B_MAX, B_MIN };

#define ROW(name, T, expr)                                                                          \
  static void name(const void *pa, int64_t sa, const void *pb, int64_t sb, void *po, int64_t n) { \
    const T *a = pa, *b = pb;                                                                       \
    T *o = po;                                                                                      \
    if (sa == 1 && sb == 1) {                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T x = a[i], y = b[i];                                                                       \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    } else if (sa == 1 && sb == 0) {                                                                \
      T y = b[0];                                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T x = a[i];                                                                                 \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    } else if (sa == 0 && sb == 1) { /* a per-channel gate times a row of a feature map */          \
      T x = a[0];                                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T y = b[i];                                                                                 \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    } else {                                                                                        \
      for (int64_t i = 0; i < n; i++) {                                                             \
        T x = a[i * sa], y = b[i * sb];                                                             \
        o[i] = (expr);                                                                              \
      }                                                                                             \
    }                                                                                               \
  }

#define ROWS_FOR(T, tag)                          \
  ROW(add_##tag, T, x + y)                        \
  ROW(sub_##tag, T, x - y)                        \
  ROW(mul_##tag, T, x * y)                        \
  ROW(max_##tag, T, x > y ? x : y)                \
  ROW(min_##tag, T, x < y ? x : y)

ROWS_FOR(float, f32)
ROWS_FOR(double, f64)
ROWS_FOR(int32_t, i32)
ROWS_FOR(int64_t, i64)
ROWS_FOR(int8_t, i8)
ROWS_FOR(uint8_t, u8)
ROWS_FOR(int16_t, i16)
ROWS_FOR(uint16_t, u16)
ROWS_FOR(uint32_t, u32)
ROWS_FOR(uint64_t, u64)
ROW(div_f32, float, x / y)
ROW(div_f64, double, x / y)
/* integer division: run() refuses a zero divisor first; the guards only keep C defined */
ROW(div_i32, int32_t, (y == 0 || (y == -1 && x == INT32_MIN)) ? 0 : x / y)
ROW(div_i64, int64_t, (y == 0 || (y == -1 && x == INT64_MIN)) ? 0 : x / y)
ROW(div_i8, int8_t, (y == 0 || (y == -1 && x == INT8_MIN)) ? 0 : x / y)
ROW(div_i16, int16_t, (y == 0 || (y == -1 && x == INT16_MIN)) ? 0 : x / y)
ROW(div_u8, uint8_t, y == 0 ? 0 : x / y)
ROW(div_u16, uint16_t, y == 0 ? 0 : x / y)
ROW(div_u32, uint32_t, y == 0 ? 0 : x / y)
ROW(div_u64, uint64_t, y == 0 ? 0 : x / y)
ROW(prelu_f32, float, x < 0 ? x * y : x)
ROW(pow_f32, float, powf(x, y))
ROW(pow_f64, double, pow(x, y))

typedef struct {
  int kind;
  int legacy;      /* opset < 7: "broadcast" / "axis" attributes instead of numpy broadcasting */
  int broadcast;
  int64_t axis;    /* legacy: where B's dims start in A; -1 = aligned to the right */
  hs_layout layout; /* set by the layout pass (Add/Mul only): the full-size operands and the output are NHWC */
} binary_params;

/* An Add/Mul whose full-size operands and output the layout pass keeps channels-last (NHWC): the op
 * sees them through their physical shape. A [N, C, H, W] operand becomes [N, H*W, C]; a per-channel
 * gate [N or 1, C or 1, 1, 1] (squeeze-and-excite), the same bytes in every layout, becomes
 * [N or 1, 1, C or 1]. Other shapes (a broadcast between two channels-last operands: the pass cannot
 * always prove an FPN's two inputs the same size) are seen as [N, H, W, C], where numpy broadcasting
 * means the same as on the logical shapes. */
static int nhwc_views(const hs_node *n, hs_tensor *a, hs_tensor *b, hs_tensor *y, hs_error *err) {
  if (y->ndim != 4 || a->ndim != 4 || b->ndim != 4)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "channels-last operands must be 4-D");
  hs_tensor *t[3] = {a, b, y};
  int simple = 1;
  for (int i = 0; i < 3; i++) {
    int64_t N = t[i]->dims[0], C = t[i]->dims[1];
    int full = memcmp(t[i]->dims, y->dims, sizeof(int64_t) * 4) == 0;
    int gate = t[i]->dims[2] == 1 && t[i]->dims[3] == 1 && (C == y->dims[1] || C == 1) &&
               (N == 1 || N == y->dims[0]);
    simple &= full || gate;
  }
  for (int i = 0; i < 3; i++) {
    int64_t N = t[i]->dims[0], C = t[i]->dims[1], H = t[i]->dims[2], W = t[i]->dims[3];
    int full = memcmp(t[i]->dims, y->dims, sizeof(int64_t) * 4) == 0;
    if (simple) {
      t[i]->dims[1] = full ? H * W : 1;
      t[i]->dims[2] = C;
      t[i]->ndim = 3;
    } else {
      t[i]->dims[1] = H;
      t[i]->dims[2] = W;
      t[i]->dims[3] = C;
    }
    t[i]->dims[0] = N;
  }
  return 0;
}

static int binary_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  (void)err;
  binary_params *p = (binary_params *)n->params.bytes;
  if (f->kind != HS_FUSE_LAYOUT || (p->kind != B_ADD && p->kind != B_MUL) || p->legacy) return HS_FUSE_REFUSED;
  if (f->src != f->dst || (f->dst != HS_LAYOUT_NCHW && f->dst != HS_LAYOUT_NHWC)) return HS_FUSE_REFUSED;
  if (!f->dry_run) p->layout = f->dst;
  return 0;
}

/* Before opset 7, B broadcasts to A only with broadcast=1, placed at `axis`: give B's view the
 * trailing 1s that make numpy broadcasting mean the same thing. */
static int legacy_view(const hs_node *n, const hs_tensor *a, const hs_tensor *b, hs_tensor *view, hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  *view = *b;
  if (!p->legacy) return 0;
  if (!p->broadcast) {
    if (a->ndim != b->ndim || memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->ndim) != 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "shapes differ and broadcast is 0");
    return 0;
  }
  if (p->axis < 0) return 0;
  int64_t trailing = a->ndim - p->axis - b->ndim;
  if (p->axis > a->ndim || trailing < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  for (int64_t i = 0; i < trailing; i++) view->dims[view->ndim++] = 1;
  return 0;
}

static int binary_check(hs_node *n, const hs_graph *g, hs_error *err) {
  binary_params *p = (binary_params *)n->params.bytes;
  p->kind = n->op == HS_OP_Add     ? B_ADD
            : n->op == HS_OP_Sub   ? B_SUB
            : n->op == HS_OP_Mul   ? B_MUL
            : n->op == HS_OP_Div   ? B_DIV
            : n->op == HS_OP_Pow   ? B_POW
            : n->op == HS_OP_PRelu ? B_PRELU
            : n->op == HS_OP_Max   ? B_MAX
                                   : B_MIN;
  p->legacy = n->opset < 7;
  int rc = hs_node_only_attrs(n, p->legacy ? "broadcast,axis" : "", err);
  int64_t b;
  if (rc || (rc = hs_attr_int(n, "broadcast", 0, &b, err)) || (rc = hs_attr_int(n, "axis", -1, &p->axis, err)))
    return rc;
  p->broadcast = b != 0;
  if (p->legacy && p->kind == B_PRELU) { /* opset 6 PRelu: slope [C] runs along axis 1 */
    p->broadcast = 1;
    p->axis = 1;
  }
  return 0;
}

#define INT_TYPES HS_DT_INT32, HS_DT_INT64, HS_DT_INT8, HS_DT_UINT8, HS_DT_INT16, HS_DT_UINT16, HS_DT_UINT32, HS_DT_UINT64

static int binary_infer(const hs_node *n, const hs_tensor *in_raw, int nin, hs_tensor *out, int nout, hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  int rc;
  hs_tensor in[2] = {in_raw[0]};
  if ((rc = legacy_view(n, &in_raw[0], &in_raw[1], &in[1], err))) return rc;
  if (p->kind == B_POW) {
    if ((rc = hs_need_dtype(n, &in[0], "base", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT32, HS_DT_INT64,
                            HS_DT_UNDEFINED)))
      return rc;
    if ((rc = hs_need_dtype(n, &in[1], "exponent", err, HS_DT_FLOAT32, HS_DT_FLOAT64, INT_TYPES, HS_DT_UNDEFINED)))
      return rc;
  } else if (p->kind == B_PRELU) {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
    if (in[1].dtype != in[0].dtype) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs differ in type");
  } else {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, INT_TYPES, HS_DT_UNDEFINED)))
      return rc;
    if (in[1].dtype != in[0].dtype) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs differ in type");
  }
  int r;
  int64_t dims[HS_MAX_DIMS];
  if ((rc = hs_broadcast_shape(&in[0], &in[1], &r, dims, n, err))) return rc;
  if (p->kind == B_PRELU) { /* the slope broadcasts to the input, never the other way */
    if (r != in[0].ndim || memcmp(dims, in[0].dims, sizeof(int64_t) * (size_t)r) != 0)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "slope does not broadcast to the input");
  }
  return hs_set_shape(&out[0], in[0].dtype, r, dims, n, err);
}

static row_fn pick_row(int kind, hs_dtype dt) {
#define PICK(tag)           \
  switch (kind) {           \
    case B_ADD: return add_##tag; \
    case B_SUB: return sub_##tag; \
    case B_MUL: return mul_##tag; \
    case B_DIV: return div_##tag; \
    case B_MAX: return max_##tag; \
    case B_MIN: return min_##tag; \
    default: break;         \
  }                         \
  if (kind == B_POW && dt == HS_DT_FLOAT32) return pow_f32; \
  if (kind == B_POW && dt == HS_DT_FLOAT64) return pow_f64; \
  return NULL;              \
  {                         \
  }
  if (kind == B_PRELU) return dt == HS_DT_FLOAT32 ? prelu_f32 : NULL;
  switch (dt) {
    case HS_DT_FLOAT32: PICK(f32)
    case HS_DT_FLOAT64: PICK(f64)
    case HS_DT_INT32: PICK(i32)
    case HS_DT_INT64: PICK(i64)
    case HS_DT_INT8: PICK(i8)
    case HS_DT_UINT8: PICK(u8)
    case HS_DT_INT16: PICK(i16)
    case HS_DT_UINT16: PICK(u16)
    case HS_DT_UINT32: PICK(u32)
    case HS_DT_UINT64: PICK(u64)
    default: return NULL;
  }
#undef PICK
}

/* ---- oneDNN path ------------------------------------------------------------------------------ */

/* Below these many output elements plain C is faster than a oneDNN primitive, whose run costs ~12 us
 * here whatever the size (OpenMP fork/join, memory objects, stream wait). Measured with `hotserve run
 * --repeat 300 --threads 2` on one-node models (2 shared cores, AVX2):
 *   memory-bound ops (Add, Relu): plain C won at every size, e.g. Add 64K elements 15 vs 30 us, 1M
 *     elements 0.99 vs 1.46 ms; the threshold sits above that, where more cores than this machine's
 *     may let the kernel win;
 *   transcendental ops (Sigmoid): 2K elements 13 vs 15 us, 4K 26 vs 18 us, 64K 415 vs 139 us. */
#define KERNEL_MIN_ELEMS_MEMORY (1 << 22)
#define KERNEL_MIN_ELEMS_MATH 4096

typedef struct elt_state {
  hs_kcache cache;
  int has_const; /* Pow: the exponent is the constant c0; Clip: the bounds are the constants c0, c1 */
  float c0, c1;
} elt_state;

static void free_elt_state(void *p) {
  elt_state *st = p;
  if (!st) return;
  hs_kcache_destroy(&st->cache);
  free(st);
}

static int attach_elt_state(hs_node *n, int has_const, float c0, float c1, hs_error *err) {
  elt_state *st = calloc(1, sizeof *st);
  if (!st) return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  hs_kcache_init(&st->cache);
  st->has_const = has_const;
  st->c0 = c0;
  st->c1 = c1;
  n->state = st;
  n->free_state = free_elt_state;
  return 0;
}

/* The float32 scalar constant feeding input i of n: 1 and *v set, 0 when absent (*v untouched),
 * -1 when it is not a one-element float32 constant. */
static int const_scalar(const hs_node *n, const hs_graph *g, int i, float *v) {
  if (i >= n->n_in || n->in[i] < 0) return 0;
  const hs_value *c = &g->values[n->in[i]];
  if (c->kind != HS_VAL_CONST || c->dtype != HS_DT_FLOAT32 || c->nbytes != sizeof(float) || !c->data) return -1;
  memcpy(v, c->data, sizeof *v);
  return 1;
}

/* 1 when a float32 result of `total` elements should try a kernel (min_elems: see above). */
static int wants_kernel(int64_t total, int64_t min_elems) {
  return total > 0 && (total >= min_elems || hs_ops_strict());
}

static int build_binary(void *ctx, hs_kernel **out, hs_error *err) {
  return hs_kernel_binary_create(ctx, out, err);
}

static int build_eltwise(void *ctx, hs_kernel **out, hs_error *err) {
  return hs_kernel_eltwise_create(ctx, out, err);
}

/* An eltwise kernel applying act to `total` contiguous floats (the shape does not matter). */
static hs_kernel *eltwise_kernel(const hs_node *n, elt_state *st, int64_t total, hs_act_kind act, float alpha,
                                 float beta, hs_error *strict_err) {
  hs_eltwise_params ep = {.device = HS_KDEV_CPU, .ndim = 1, .dims = {total}};
  hs_post_ops_add_act(&ep.ops, act, alpha, beta);
  int64_t key[1] = {total};
  return hs_op_kernel(n, &st->cache, key, 1, build_eltwise, &ep, 0, strict_err);
}

/* The kernel computing y = a OP b, or NULL for plain C. a and b are the views after legacy_view(). */
static hs_kernel *binary_kernel(const hs_node *n, const hs_tensor *a, const hs_tensor *b, const hs_tensor *y,
                                hs_error *strict_err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  elt_state *st = n->state;
  int64_t total = hs_numel(y);
  if (!st || a->dtype != HS_DT_FLOAT32 || b->dtype != HS_DT_FLOAT32) return NULL;
  if (!wants_kernel(total, p->kind == B_POW ? KERNEL_MIN_ELEMS_MATH : KERNEL_MIN_ELEMS_MEMORY)) return NULL;
  if (p->kind == B_POW) {
    if (!st->has_const || hs_numel(b) != 1 || hs_numel(a) != total) return NULL;
    return eltwise_kernel(n, st, total, HS_ACT_POW, 1.f, st->c0, strict_err);
  }
  static const int kinds[] = {[B_ADD] = HS_BIN_ADD, [B_SUB] = HS_BIN_SUB, [B_MUL] = HS_BIN_MUL,
                              [B_DIV] = HS_BIN_DIV, [B_MAX] = HS_BIN_MAX, [B_MIN] = HS_BIN_MIN};
  if (p->kind == B_PRELU) return NULL;
  /* oneDNN broadcasts only one operand (the kernel swaps them when that is a), never Div's dividend;
   * an operand with the result's element count does not broadcast. */
  int a_full = hs_numel(a) == total, b_full = hs_numel(b) == total;
  if (!a_full && (!b_full || p->kind == B_DIV)) return NULL;
  hs_binary_params bp = {.device = HS_KDEV_CPU, .kind = (hs_binary_kind)kinds[p->kind]};
  bp.ndim = y->ndim > 0 ? y->ndim : 1; /* a scalar result is a one-element vector */
  bp.a_ndim = a->ndim;
  bp.b_ndim = b->ndim;
  int64_t key[2 + 2 * HS_MAX_DIMS];
  int nkey = 0;
  key[nkey++] = a->ndim;
  for (int i = 0; i < a->ndim; i++) key[nkey++] = bp.a_dims[i] = a->dims[i];
  key[nkey++] = b->ndim;
  for (int i = 0; i < b->ndim; i++) key[nkey++] = bp.b_dims[i] = b->dims[i];
  return hs_op_kernel(n, &st->cache, key, nkey, build_binary, &bp, 0, strict_err);
}

static int binary_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  if (p->kind == B_PRELU) return 0;
  float e = 0;
  int has_const = p->kind == B_POW && const_scalar(n, g, 1, &e) == 1;
  if (p->kind == B_POW && !has_const) return 0; /* a tensor exponent: plain C */
  return attach_elt_state(n, has_const, e, 0, err);
}

static size_t binary_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  hs_tensor a = in[0], b, y = out[0];
  hs_error e;
  if (legacy_view(n, &in[0], &in[1], &b, &e)) return 0;
  if (p->layout == HS_LAYOUT_NHWC && nhwc_views(n, &a, &b, &y, &e)) return 0;
  return hs_op_kernel_scratch(binary_kernel(n, &a, &b, &y, NULL), 0);
}

/* Runs kernel k (found by binary_kernel or unary_kernel) on src[0..nsrc). */
static int run_kernel(const hs_node *n, hs_kernel *k, const void **src, int nsrc, hs_tensor *y, void *scratch,
                      hs_error *err) {
  hs_kernel_args args = {.src = src, .nsrc = nsrc, .dst = y->data, .scratch = scratch};
  return hs_op_run_kernel(n, k, &args, err);
}

static int binary_run(const hs_node *n, const hs_tensor *in_raw, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  const binary_params *p = (const binary_params *)n->params.bytes;
  hs_tensor in[2] = {in_raw[0]}, yv = out[0];
  int rc = legacy_view(n, &in_raw[0], &in_raw[1], &in[1], err);
  if (rc) return rc;
  if (p->layout == HS_LAYOUT_NHWC && (rc = nhwc_views(n, &in[0], &in[1], &yv, err))) return rc;
  out = &yv; /* the physical view; its data is the caller's */
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = binary_kernel(n, &in[0], &in[1], &out[0], &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) {
    const void *src[2] = {in[0].data, in[1].data};
    return run_kernel(n, k, src, p->kind == B_POW ? 1 : 2, &out[0], scratch, err);
  }
  bcast b;
  bcast_init(&b, &in[0], &in[1], &out[0]);
  size_t esz = hs_dtype_size(out[0].dtype);
  if (p->kind == B_POW && (in[1].dtype != in[0].dtype || (in[0].dtype != HS_DT_FLOAT32 && in[0].dtype != HS_DT_FLOAT64))) {
    /* mixed or integer types: element by element through double */
    int64_t total = hs_numel(&out[0]);
    if (total == 0) return 0;
    int64_t idx[HS_MAX_DIMS] = {0};
    for (int64_t k = 0; k < total; k++) {
      int64_t oa = 0, ob = 0;
      for (int d = 0; d < b.r; d++) {
        oa += idx[d] * b.sa[d];
        ob += idx[d] * b.sb[d];
      }
      double x = hs_load_f64(&in[0], oa), y = hs_load_f64(&in[1], ob);
      if (out[0].dtype == HS_DT_FLOAT32 && in[1].dtype == HS_DT_FLOAT32)
        ((float *)out[0].data)[k] = powf((float)x, (float)y);
      else
        hs_store_f64(&out[0], k, pow(x, y));
      for (int d = b.r - 1; d >= 0; d--) {
        if (++idx[d] < b.dims[d]) break;
        idx[d] = 0;
      }
    }
    return 0;
  }
  if (p->kind == B_DIV && in[1].dtype != HS_DT_FLOAT32 && in[1].dtype != HS_DT_FLOAT64) {
    int64_t m = hs_numel(&in[1]);
    for (int64_t i = 0; i < m; i++)
      if (hs_load_f64(&in[1], i) == 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "integer division by zero");
  }
  row_fn fn = pick_row(p->kind, out[0].dtype);
  if (!fn) return hs_op_errf(err, n, HS_UNSUPPORTED, "type not supported");
  bcast_run(&b, in[0].data, esz, in[1].data, esz, out[0].data, esz, fn);
  return 0;
}

/* ---- unary ------------------------------------------------------------------------------------ */

enum { U_RELU, U_LEAKY, U_SIGMOID, U_HSIGMOID, U_HSWISH, U_TANH, U_ERF, U_EXP, U_LOG, U_NEG, U_ABS, U_RECIP,
       U_SQRT, U_FLOOR, U_CEIL, U_ELU, U_SOFTPLUS, U_CLIP, U_IDENTITY };

typedef struct {
  int kind;
  float alpha, beta;
  float lo, hi; /* Clip before opset 11 */
} unary_params;

static int unary_check(hs_node *n, const hs_graph *g, hs_error *err) {
  unary_params *p = (unary_params *)n->params.bytes;
  static const struct { int op; int kind; const char *attrs; float alpha, beta; } k[] = {
      {HS_OP_Relu, U_RELU, "", 0, 0},
      {HS_OP_LeakyRelu, U_LEAKY, "alpha", 0.01f, 0},
      {HS_OP_Sigmoid, U_SIGMOID, "", 0, 0},
      {HS_OP_HardSigmoid, U_HSIGMOID, "alpha,beta", 0.2f, 0.5f},
      {HS_OP_HardSwish, U_HSWISH, "", 0, 0},
      {HS_OP_Tanh, U_TANH, "", 0, 0},
      {HS_OP_Erf, U_ERF, "", 0, 0},
      {HS_OP_Exp, U_EXP, "", 0, 0},
      {HS_OP_Log, U_LOG, "", 0, 0},
      {HS_OP_Neg, U_NEG, "", 0, 0},
      {HS_OP_Abs, U_ABS, "", 0, 0},
      {HS_OP_Reciprocal, U_RECIP, "", 0, 0},
      {HS_OP_Sqrt, U_SQRT, "", 0, 0},
      {HS_OP_Floor, U_FLOOR, "", 0, 0},
      {HS_OP_Ceil, U_CEIL, "", 0, 0},
      {HS_OP_Elu, U_ELU, "alpha", 1.0f, 0},
      {HS_OP_Softplus, U_SOFTPLUS, "", 0, 0},
      {HS_OP_Clip, U_CLIP, "min,max", 0, 0},
      {HS_OP_Identity, U_IDENTITY, "", 0, 0},
      {HS_OP_Dropout, U_IDENTITY, "ratio,seed", 0, 0},
  };
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
    if (n->op != k[i].op) continue;
    p->kind = k[i].kind;
    int rc = hs_node_only_attrs(n, k[i].attrs, err);
    if (rc) return rc;
    if ((rc = hs_attr_float(n, "alpha", k[i].alpha, &p->alpha, err))) return rc;
    if ((rc = hs_attr_float(n, "beta", k[i].beta, &p->beta, err))) return rc;
    if (p->kind == U_CLIP) {
      if ((rc = hs_attr_float(n, "min", -INFINITY, &p->lo, err))) return rc;
      if ((rc = hs_attr_float(n, "max", INFINITY, &p->hi, err))) return rc;
      if (n->opset >= 11 && (hs_node_attr(n, "min") || hs_node_attr(n, "max")))
        return hs_op_errf(err, n, HS_PARSE, "min/max are inputs from opset 11 on");
    }
    return 0;
  }
  return hs_op_errf(err, n, HS_INTERNAL, "not a unary op");
}

static int unary_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const unary_params *p = (const unary_params *)n->params.bytes;
  int rc;
  if (p->kind == U_IDENTITY) {
    if (in[0].dtype == HS_DT_UNDEFINED || hs_dtype_size(in[0].dtype) == 0)
      return hs_op_errf(err, n, HS_UNSUPPORTED, "input type not supported");
    if (n->op == HS_OP_Dropout && nin > 2 && HS_PRESENT(&in[2])) {
      if (!in[2].data) return hs_op_errf(err, n, HS_UNSUPPORTED, "training_mode must be a constant");
      if (hs_get_scalar(&in[2]) != 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "training mode is not supported");
    }
    if (nout > 1 && (rc = hs_set_shape(&out[1], HS_DT_BOOL, in[0].ndim, in[0].dims, n, err))) return rc;
  } else if ((p->kind == U_NEG || p->kind == U_ABS) &&
             (in[0].dtype == HS_DT_INT64 || in[0].dtype == HS_DT_INT32)) {
    /* integer negation / abs is fine too */
  } else if (p->kind == U_CLIP && in[0].dtype != HS_DT_FLOAT32) {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT64, INT_TYPES, HS_DT_UNDEFINED))) return rc;
  } else if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) {
    return rc;
  }
  if (p->kind == U_CLIP)
    for (int i = 1; i < nin && i < 3; i++)
      if (HS_PRESENT(&in[i]) && (in[i].dtype != in[0].dtype || hs_numel(&in[i]) != 1))
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "min/max must be scalars of the input's type");
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err);
}

/* The hs_act_kind computing unary op n (alpha, beta as hs_act_apply reads them); 0 when the op has
 * none and runs in plain C. */
static int unary_act(const hs_node *n, const elt_state *st, hs_act_kind *act, float *al, float *be) {
  const unary_params *p = (const unary_params *)n->params.bytes;
  *al = 0;
  *be = 0;
  switch (p->kind) {
    case U_RELU: *act = HS_ACT_RELU; return 1;
    case U_LEAKY: *act = HS_ACT_RELU; *al = p->alpha; return 1;
    case U_SIGMOID: *act = HS_ACT_SIGMOID; return 1;
    case U_HSIGMOID: *act = HS_ACT_HARDSIGMOID; *al = p->alpha; *be = p->beta; return 1;
    case U_HSWISH: *act = HS_ACT_HARDSWISH; return 1;
    case U_TANH: *act = HS_ACT_TANH; return 1;
    case U_EXP: *act = HS_ACT_EXP; return 1;
    case U_NEG: *act = HS_ACT_LINEAR; *al = -1.f; return 1;
    case U_ABS: *act = HS_ACT_ABS; return 1;
    case U_RECIP: *act = HS_ACT_POW; *al = 1.f; *be = -1.f; return 1;
    case U_SQRT: *act = HS_ACT_SQRT; return 1;
    case U_ELU: *act = HS_ACT_ELU; *al = p->alpha; return 1;
    case U_SOFTPLUS: *act = HS_ACT_SOFTPLUS; return 1;
    case U_CLIP:
      *act = HS_ACT_CLIP;
      if (n->opset < 11) { /* bounds are attributes */
        *al = p->lo;
        *be = p->hi;
        return 1;
      }
      if (!st->has_const) return 0; /* bounds given at run time */
      *al = st->c0;
      *be = st->c1;
      return 1;
    /* Log: oneDNN's is off by ~1e-6 near x = 1 (log(1) = -1.4e-6), outside ONNX's tolerance there.
     * Erf: oneDNN 2.6 has no erf alone. Floor, Ceil, Identity: no eltwise function. */
    default: return 0;
  }
}

/* The kernel computing float32 unary op n over x, or NULL for plain C. */
static hs_kernel *unary_kernel(const hs_node *n, const hs_tensor *x, hs_error *strict_err) {
  elt_state *st = n->state;
  hs_act_kind act;
  float al, be;
  int64_t total = hs_numel(x);
  if (!st || x->dtype != HS_DT_FLOAT32 || !unary_act(n, st, &act, &al, &be)) return NULL;
  int cheap = act == HS_ACT_RELU || act == HS_ACT_LINEAR || act == HS_ACT_ABS || act == HS_ACT_CLIP ||
              act == HS_ACT_HARDSIGMOID || act == HS_ACT_HARDSWISH;
  if (!wants_kernel(total, cheap ? KERNEL_MIN_ELEMS_MEMORY : KERNEL_MIN_ELEMS_MATH)) return NULL;
  return eltwise_kernel(n, st, total, act, al, be, strict_err);
}

static int unary_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const unary_params *p = (const unary_params *)n->params.bytes;
  if (p->kind == U_IDENTITY || p->kind == U_ERF || p->kind == U_FLOOR || p->kind == U_CEIL || p->kind == U_LOG)
    return 0;
  float lo = -INFINITY, hi = INFINITY;
  int has_const = 0;
  if (p->kind == U_CLIP && n->opset >= 11) {
    int a = const_scalar(n, g, 1, &lo), b = const_scalar(n, g, 2, &hi);
    if (a < 0 || b < 0) return 0; /* a bound given at run time: plain C */
    has_const = 1;
  }
  return attach_elt_state(n, has_const, lo, hi, err);
}

static size_t unary_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  return hs_op_kernel_scratch(unary_kernel(n, &in[0], NULL), 0);
}

static inline float sigmoidf(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static int unary_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  const unary_params *p = (const unary_params *)n->params.bytes;
  int64_t c = hs_numel(&in[0]);
  if (p->kind == U_IDENTITY) {
    if (out[0].nbytes && out[0].data != in[0].data) hs_memcpy(out[0].data, in[0].data, out[0].nbytes);
    if (nout > 1 && out[1].data) memset(out[1].data, 1, out[1].nbytes);
    return 0;
  }
  if (p->kind == U_CLIP && in[0].dtype != HS_DT_FLOAT32) {
    double lo = -INFINITY, hi = INFINITY;
    if (nin > 1 && HS_PRESENT(&in[1])) lo = hs_load_f64(&in[1], 0);
    if (nin > 2 && HS_PRESENT(&in[2])) hi = hs_load_f64(&in[2], 0);
    for (int64_t i = 0; i < c; i++) {
      double v = hs_load_f64(&in[0], i);
      v = v < lo ? lo : v;
      hs_store_f64(&out[0], i, v > hi ? hi : v);
    }
    return 0;
  }
  if (in[0].dtype == HS_DT_INT64 || in[0].dtype == HS_DT_INT32) {
    for (int64_t i = 0; i < c; i++) {
      int64_t v = hs_get_int(&in[0], i);
      v = p->kind == U_NEG ? (int64_t)(0ull - (uint64_t)v) : (v < 0 ? (int64_t)(0ull - (uint64_t)v) : v);
      if (in[0].dtype == HS_DT_INT64) ((int64_t *)out[0].data)[i] = v;
      else ((int32_t *)out[0].data)[i] = (int32_t)v;
    }
    return 0;
  }
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = unary_kernel(n, &in[0], &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) {
    const void *src[1] = {in[0].data};
    return run_kernel(n, k, src, 1, &out[0], scratch, err);
  }
  const float *x = in[0].data;
  float *y = out[0].data;
  const float a = p->alpha, b = p->beta;
  switch (p->kind) {
    case U_RELU: for (int64_t i = 0; i < c; i++) y[i] = x[i] > 0 ? x[i] : 0; break;
    case U_LEAKY: for (int64_t i = 0; i < c; i++) y[i] = x[i] >= 0 ? x[i] : a * x[i]; break;
    case U_SIGMOID: for (int64_t i = 0; i < c; i++) y[i] = sigmoidf(x[i]); break;
    case U_HSIGMOID: for (int64_t i = 0; i < c; i++) y[i] = fmaxf(0, fminf(1, a * x[i] + b)); break;
    case U_HSWISH: for (int64_t i = 0; i < c; i++) y[i] = x[i] * fmaxf(0, fminf(1, x[i] / 6.0f + 0.5f)); break;
    case U_TANH: for (int64_t i = 0; i < c; i++) y[i] = tanhf(x[i]); break;
    case U_ERF: for (int64_t i = 0; i < c; i++) y[i] = erff(x[i]); break;
    case U_EXP: for (int64_t i = 0; i < c; i++) y[i] = expf(x[i]); break;
    case U_LOG: for (int64_t i = 0; i < c; i++) y[i] = logf(x[i]); break;
    case U_NEG: for (int64_t i = 0; i < c; i++) y[i] = -x[i]; break;
    case U_ABS: for (int64_t i = 0; i < c; i++) y[i] = fabsf(x[i]); break;
    case U_RECIP: for (int64_t i = 0; i < c; i++) y[i] = 1.0f / x[i]; break;
    case U_SQRT: for (int64_t i = 0; i < c; i++) y[i] = sqrtf(x[i]); break;
    case U_FLOOR: for (int64_t i = 0; i < c; i++) y[i] = floorf(x[i]); break;
    case U_CEIL: for (int64_t i = 0; i < c; i++) y[i] = ceilf(x[i]); break;
    case U_ELU: for (int64_t i = 0; i < c; i++) y[i] = x[i] >= 0 ? x[i] : a * (expf(x[i]) - 1); break;
    case U_SOFTPLUS:
      for (int64_t i = 0; i < c; i++) y[i] = x[i] > 20 ? x[i] : log1pf(expf(x[i]));
      break;
    case U_CLIP: {
      float lo = p->lo, hi = p->hi;
      if (nin > 1 && HS_PRESENT(&in[1])) lo = *(const float *)in[1].data;
      if (nin > 2 && HS_PRESENT(&in[2])) hi = *(const float *)in[2].data;
      for (int64_t i = 0; i < c; i++) {
        float v = x[i] < lo ? lo : x[i];
        y[i] = v > hi ? hi : v;
      }
      break;
    }
    default:
      return hs_op_errf(err, n, HS_INTERNAL, "unknown unary kind");
  }
  return 0;
}

/* The ops in op_list.h's elementwise.c group. */
const hs_op_impl hs_op_impl_binary = {
    .check = binary_check,
    .infer = binary_infer,
    .prepare = binary_prepare,
    .scratch_bytes = binary_scratch,
    .run = binary_run,
    .fuse = binary_fuse,
};
const hs_op_impl hs_op_impl_unary = {
    .check = unary_check,
    .infer = unary_infer,
    .prepare = unary_prepare,
    .scratch_bytes = unary_scratch,
    .run = unary_run,
};
/* Identity and Dropout: views of their input, run only where the planner cannot alias them. */
const hs_op_impl hs_op_impl_unary_view = {
    .check = unary_check,
    .infer = unary_infer,
    .run = unary_run,
};

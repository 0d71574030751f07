/* select.c - Transpose, Concat, Gather, Slice, Split, Expand, Tile: moving parts of tensors, any dtype. */
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/parallel.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

/* ---- Transpose -------------------------------------------------------------------------------- */

typedef struct {
  int n_perm;
  int64_t perm[HS_MAX_DIMS];
} perm_params;

static int transpose_check(hs_node *n, const hs_graph *g, hs_error *err) {
  perm_params *p = (perm_params *)n->params.bytes;
  int rc = hs_node_only_attrs(n, "perm", err);
  const int64_t *a;
  size_t c;
  if (rc || (rc = hs_attr_ints(n, "perm", &a, &c, err))) return rc;
  if (c > HS_MAX_DIMS) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "perm too long");
  p->n_perm = hs_node_attr(n, "perm") ? (int)c : -1;
  hs_memcpy(p->perm, a, c * sizeof *a);
  return 0;
}

static void get_perm(const perm_params *p, int r, int *perm) {
  for (int i = 0; i < r; i++) perm[i] = p->n_perm < 0 ? r - 1 - i : (int)p->perm[i];
}

static int transpose_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const perm_params *p = (const perm_params *)n->params.bytes;
  int r = in[0].ndim, perm[HS_MAX_DIMS], seen[HS_MAX_DIMS] = {0}, rc;
  if ((rc = hs_known_dtype(n, &in[0], err))) return rc;
  if (p->n_perm >= 0 && p->n_perm != r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "perm has %d entries for rank %d", p->n_perm, r);
  for (int i = 0; i < p->n_perm; i++)
    if (p->perm[i] < 0 || p->perm[i] >= r || seen[p->perm[i]]++)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "perm is not a permutation");
  get_perm(p, r, perm);
  int64_t d[HS_MAX_DIMS];
  for (int i = 0; i < r; i++) d[i] = in[0].dims[perm[i]];
  return hs_set_shape(&out[0], in[0].dtype, r, d, n, err);
}

/* Copies a strided view: out is dense with dims od[r]; element i of out reads in at sum(idx * st). */
static void strided_copy(void *dst, const void *src, size_t esz, int r, const int64_t *od, const int64_t *st,
                         int64_t base) {
  int64_t total = 1;
  for (int i = 0; i < r; i++) total *= od[i];
  if (total == 0) return;
  if (r == 0) {
    hs_memcpy(dst, (const char *)src + base * (int64_t)esz, esz);
    return;
  }
  int64_t idx[HS_MAX_DIMS] = {0}, off = base, inner = od[r - 1], ist = st[r - 1];
  char *o = dst;
  for (int64_t k = 0; k < total; k += inner) {
    const char *s = (const char *)src + off * (int64_t)esz;
    if (ist == 1) {
      hs_memcpy(o, s, (size_t)inner * esz);
      o += inner * (int64_t)esz;
    } else if (esz == 4) {
      for (int64_t j = 0; j < inner; j++, o += 4) hs_memcpy(o, s + j * ist * 4, 4);
    } else {
      for (int64_t j = 0; j < inner; j++, o += esz) hs_memcpy(o, s + j * ist * (int64_t)esz, esz);
    }
    for (int d = r - 2; d >= 0; d--) {
      off += st[d];
      if (++idx[d] < od[d]) break;
      off -= st[d] * od[d];
      idx[d] = 0;
    }
  }
}

static int transpose_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                         hs_error *err) {
  int r = in[0].ndim, perm[HS_MAX_DIMS];
  get_perm((const perm_params *)n->params.bytes, r, perm);
  int64_t ist[HS_MAX_DIMS], st[HS_MAX_DIMS], acc = 1;
  for (int i = r - 1; i >= 0; i--) {
    ist[i] = acc;
    acc *= in[0].dims[i];
  }
  for (int i = 0; i < r; i++) st[i] = ist[perm[i]];
  strided_copy(out[0].data, in[0].data, hs_dtype_size(in[0].dtype), r, out[0].dims, st, 0);
  return 0;
}

/* ---- Concat ----------------------------------------------------------------------------------- */

/* Float32 Concat can also run on the oneDNN concat kernel (cached per set of input shapes, see
 * opkernel.h); the row copies in concat_run stay the reference and take every other dtype, empty
 * inputs, and more inputs than a cache key holds (CONCAT_MAX_KEY). Plain C is a memcpy per row,
 * which the kernel did not beat at any size measured here (`hotserve run --repeat 200 --threads 2`,
 * two [R, 256] inputs along axis 1, plain C vs kernel: R = 16 1 vs 16 us, R = 256 27 vs 48 us,
 * R = 2048 1.5 vs 2.2 ms), so outside strict mode (HS_KERNELS_STRICT=1, which proves the kernel
 * path) only outputs over CONCAT_MIN_ELEMS elements use it. */
#define CONCAT_MAX_KEY 24
#define CONCAT_MIN_ELEMS (1 << 22)

static int build_concat(void *ctx, hs_kernel **out, hs_error *err) {
  return hs_kernel_concat_create(ctx, out, err);
}

/* The kernel concatenating in[0..nin) along axis a into y, or NULL for plain C. */
static hs_kernel *concat_kernel(const hs_node *n, const hs_tensor *in, int nin, int a, const hs_tensor *y,
                                hs_error *strict_err) {
  int r = in[0].ndim;
  int64_t total = hs_numel(y);
  if (!n->state || in[0].dtype != HS_DT_FLOAT32 || r < 1 || total == 0 || 3 + r + nin > CONCAT_MAX_KEY) return NULL;
  if (total < CONCAT_MIN_ELEMS && !hs_ops_strict()) return NULL;
  int64_t key[CONCAT_MAX_KEY], sizes[CONCAT_MAX_KEY];
  int nkey = 0;
  key[nkey++] = a;
  key[nkey++] = r;
  hs_concat_params cp = {.device = HS_KDEV_CPU, .ndim = r, .axis = a, .ninputs = nin, .axis_sizes = sizes};
  for (int k = 0; k < r; k++) key[nkey++] = cp.dims[k] = k == a ? 0 : in[0].dims[k];
  key[nkey++] = nin;
  for (int i = 0; i < nin; i++) {
    if (in[i].dims[a] == 0) return NULL; /* the kernel takes no empty input */
    key[nkey++] = sizes[i] = in[i].dims[a];
  }
  cp.dims[a] = sizes[0];
  return hs_op_kernel(n, hs_op_cache(n), key, nkey, build_concat, &cp, 0, strict_err);
}

static int concat_prepare(hs_node *n, const hs_graph *g, hs_error *err) { return hs_op_attach_cache(n, err); }

/* params.bytes: the axis attribute (int64), the layout the layout pass chose (hs_layout), and the
 * nearest upsampling factors (H, W) of each input (1, 1 unless a Resize was fused: HS_FUSE_UPSAMPLE). */
typedef struct {
  int64_t axis;
  hs_layout layout;
  uint8_t up[64][2];
} concat_params;
_Static_assert(sizeof(concat_params) <= HS_OP_PARAMS_BYTES, "concat params fit the node");

static int concat_upsamples(const hs_node *n, int nin) {
  const concat_params *p = (const concat_params *)n->params.bytes;
  for (int i = 0; i < nin && i < 64; i++)
    if (p->up[i][0] != 1 || p->up[i][1] != 1) return 1;
  return 0;
}

/* The layout pass may keep a 4-D Concat's inputs and output channels-last (NHWC) together. The
 * upsampling pass (pass_fuse_concat.c) may hand a 4-D channel Concat (axis 1) the input of a nearest
 * Resize with integer factors that only this Concat read: the row copies below then read input pixel
 * (h / fh, w / fw) for output pixel (h, w), which is what the Resize wrote, so the result is the same
 * bytes without the Resize's output ever being written. */
static int concat_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  (void)err;
  concat_params *p = (concat_params *)n->params.bytes;
  if (f->kind == HS_FUSE_UPSAMPLE) {
    if (f->input < 0 || f->input >= 64 || (p->axis != 1 && p->axis != -3)) return HS_FUSE_REFUSED;
    for (int k = 0; k < 2; k++)
      if (f->up[k] < 1 || f->up[k] > 255) return HS_FUSE_REFUSED;
    if (!f->dry_run)
      for (int k = 0; k < 2; k++) p->up[f->input][k] = (uint8_t)f->up[k];
    return 0;
  }
  if (f->kind != HS_FUSE_LAYOUT || f->src != f->dst || (f->dst != HS_LAYOUT_NCHW && f->dst != HS_LAYOUT_NHWC))
    return HS_FUSE_REFUSED;
  if (!f->dry_run) p->layout = f->dst;
  return 0;
}

/* The inputs as the Concat sees them: a fused input's H and W multiplied by its factors. */
static int concat_upsampled(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *e, hs_error *err) {
  const concat_params *p = (const concat_params *)n->params.bytes;
  for (int i = 0; i < nin; i++) {
    e[i] = in[i];
    if (p->up[i][0] == 1 && p->up[i][1] == 1) continue;
    if (in[i].ndim != 4) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "an upsampled input must be 4-D");
    e[i].dims[2] *= p->up[i][0];
    e[i].dims[3] *= p->up[i][1];
  }
  return 0;
}

/* The tensors and axis as laid out in memory: with channels-last operands a logical [N, C, H, W]
 * concatenation along axis a is a plain concatenation of [N, H, W, C] along a's physical position,
 * so the row copies and the kernel below stay exact. v[0..nin) and *yv are the views; *a is updated. */
static int concat_views(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *y, hs_tensor *v,
                        hs_tensor *yv, int *a, hs_error *err) {
  static const int perm[4] = {0, 2, 3, 1}, where[4] = {0, 3, 1, 2}; /* physical axis j holds logical perm[j] */
  for (int i = 0; i < nin; i++) v[i] = in[i];
  *yv = *y;
  if (((const concat_params *)n->params.bytes)->layout != HS_LAYOUT_NHWC) return 0;
  if (y->ndim != 4) return hs_op_errf(err, n, HS_UNSUPPORTED, "channels-last operands must be 4-D");
  for (int i = 0; i <= nin; i++) {
    hs_tensor *t = i < nin ? &v[i] : yv;
    const hs_tensor *src = i < nin ? &in[i] : y;
    for (int j = 0; j < 4; j++) t->dims[j] = src->dims[perm[j]];
  }
  *a = where[*a];
  return 0;
}

static size_t concat_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  int a;
  hs_error e;
  hs_tensor v[64], yv;
  if (nin > 64 || concat_upsamples(n, nin) || hs_norm_axis(*(const int64_t *)n->params.bytes, in[0].ndim, &a, n, &e) ||
      concat_views(n, in, nin, &out[0], v, &yv, &a, &e))
    return 0;
  return hs_op_kernel_scratch(concat_kernel(n, v, nin, a, &yv, NULL), 0);
}

static int concat_check(hs_node *n, const hs_graph *g, hs_error *err) {
  int rc = hs_node_only_attrs(n, "axis", err);
  if (rc) return rc;
  if (!hs_node_attr(n, "axis")) return hs_op_errf(err, n, HS_PARSE, "axis is required");
  concat_params *p = (concat_params *)n->params.bytes;
  p->layout = HS_LAYOUT_NCHW;
  memset(p->up, 1, sizeof p->up);
  return hs_attr_int(n, "axis", 0, &p->axis, err);
}

static int concat_infer(const hs_node *n, const hs_tensor *in_raw, int nin, hs_tensor *out, int nout,
                        hs_error *err) {
  int r = in_raw[0].ndim, a, rc;
  hs_tensor in[64]; /* op_list.h: at most 64 inputs */
  if (nin > 64) return hs_op_errf(err, n, HS_LIMIT, "more than 64 inputs");
  if ((rc = hs_known_dtype(n, &in_raw[0], err)) || (rc = concat_upsampled(n, in_raw, nin, in, err)) ||
      (rc = hs_norm_axis(*(const int64_t *)n->params.bytes, r, &a, n, err)))
    return rc;
  int64_t d[HS_MAX_DIMS];
  hs_memcpy(d, in[0].dims, sizeof d);
  d[a] = 0;
  for (int i = 0; i < nin; i++) {
    if (!HS_PRESENT(&in[i])) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "empty input");
    if (in[i].dtype != in[0].dtype || in[i].ndim != r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs differ in type or rank");
    for (int k = 0; k < r; k++)
      if (k != a && in[i].dims[k] != in[0].dims[k])
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input %d differs in dimension %d", i, k);
    d[a] += in[i].dims[a];
  }
  return hs_set_shape(&out[0], in[0].dtype, r, d, n, err);
}

/* Plain-C Concat: each output row (the innermost physical dimension) written once, in order, from the
 * input rows it holds (a fused input's row (h / fh, w / fw), its elements repeated fw times along W when
 * W is innermost). Rows are split over the compute threads from CONCAT_PARALLEL_ELEMS output elements:
 * the text detector's FPN Concat (4 x [1, 24, 160, 160] channels-last) is 25600 rows of 4 x 96 bytes. */
#define CONCAT_PARALLEL_ELEMS (1 << 15)

typedef struct {
  int r, a, nin, parts;
  size_t esz;
  int64_t rows;
  int64_t dims[HS_MAX_DIMS];     /* the output's, physical */
  char *dst;
  const char *src[64];
  int64_t sdims[64][HS_MAX_DIMS]; /* each input's own (physical) */
  int64_t f[64][HS_MAX_DIMS];     /* each input's upsampling factor per physical axis */
  int64_t off[64], len[64];       /* each input's position and extent along a */
} concat_job;

static void concat_copy(char *dst, const char *src, int64_t n, int64_t f, size_t esz) {
  if (f == 1) {
    hs_memcpy(dst, src, (size_t)n * esz);
  } else if (esz == 4) {
    uint32_t *d = (uint32_t *)dst;
    const uint32_t *s = (const uint32_t *)src;
    for (int64_t w = 0; w < n; w++) d[w] = s[w / f];
  } else {
    for (int64_t w = 0; w < n; w++) memcpy(dst + (size_t)w * esz, src + (size_t)(w / f) * esz, esz);
  }
}

/* Output rows [r0, r1). Two shapes of job: [outer, a * inner] rows of whole input slices (no upsampling),
 * or 4-D with the channel axis at physical 1 (NCHW: rows of W, one input each) or 3 (NHWC: rows of one
 * pixel's channels, every input a slice), where source pixels advance by counters, not divisions. */
static void concat_rows(const concat_job *j, int64_t r0, int64_t r1) {
  size_t esz = j->esz;
  int64_t inner = j->dims[j->r - 1];
  if (j->r == 2) {
    for (int64_t row = r0; row < r1; row++)
      for (int i = 0; i < j->nin; i++)
        hs_memcpy(j->dst + (size_t)(row * inner + j->off[i]) * esz, j->src[i] + (size_t)(row * j->len[i]) * esz,
                  (size_t)j->len[i] * esz);
    return;
  }
  for (int64_t row = r0; row < r1;) {
    int64_t q2 = row % j->dims[2], line = row / j->dims[2], q1 = line % j->dims[1], q0 = line / j->dims[1];
    int64_t end = row - q2 + j->dims[2] < r1 ? row - q2 + j->dims[2] : r1; /* this line's rows: q2 .. */
    for (int i = 0; i < j->nin; i++) {
      const int64_t *sd = j->sdims[i], *f = j->f[i];
      if (!j->len[i]) continue;
      if (j->a == 1) { /* NCHW: the one input holding channel q1 */
        if (q1 < j->off[i] || q1 >= j->off[i] + j->len[i]) continue;
        for (int64_t r = row; r < end; r++) {
          int64_t h = q2 + (r - row);
          const char *s = j->src[i] + (size_t)(((q0 * sd[1] + q1 - j->off[i]) * sd[2] + h / f[2]) * sd[3]) * esz;
          concat_copy(j->dst + (size_t)(r * inner) * esz, s, inner, f[3], esz);
        }
      } else { /* NHWC: this input's channels of every pixel in the line */
        const char *s = j->src[i] + (size_t)(((q0 * sd[1] + q1 / f[1]) * sd[2] + q2 / f[2]) * sd[3]) * esz;
        char *d = j->dst + (size_t)(row * inner + j->off[i]) * esz;
        for (int64_t r = row, c = q2 % f[2]; r < end; r++, d += (size_t)inner * esz) {
          memcpy(d, s, (size_t)j->len[i] * esz);
          if (++c == f[2]) {
            c = 0;
            s += (size_t)sd[3] * esz;
          }
        }
      }
    }
    row = end;
  }
}

static void concat_part(void *ctx, int i) {
  const concat_job *j = ctx;
  concat_rows(j, j->rows * i / j->parts, j->rows * (i + 1) / j->parts);
}

/* Fills j for physical views v (inputs as the Concat sees them) and yv along physical axis a. Without
 * upsampling the dimensions around a merge ([outer, a * inner], rows of whole input slices, as few
 * copies as the layout allows); with it they stay 4-D. */
static void concat_plan_rows(const hs_node *n, const hs_tensor *raw, const hs_tensor *v, int nin, const hs_tensor *yv,
                             int a, concat_job *j) {
  const concat_params *p = (const concat_params *)n->params.bytes;
  int nhwc = p->layout == HS_LAYOUT_NHWC, up = concat_upsamples(n, nin);
  j->esz = hs_dtype_size(v[0].dtype);
  j->nin = nin;
  j->dst = yv->data;
  if (!up) {
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < a; k++) outer *= yv->dims[k];
    for (int k = a + 1; k < yv->ndim; k++) inner *= yv->dims[k];
    j->r = 2;
    j->a = 1;
    j->dims[0] = outer;
    j->dims[1] = yv->dims[a] * inner;
    for (int i = 0, at = 0; i < nin; i++) {
      j->src[i] = raw[i].data;
      j->sdims[i][0] = outer;
      j->sdims[i][1] = j->len[i] = v[i].dims[a] * inner;
      j->f[i][0] = j->f[i][1] = 1;
      j->off[i] = at;
      at += j->len[i];
    }
  } else { /* 4-D, logical H and W at physical 2, 3 (NCHW) or 1, 2 (NHWC) */
    j->r = 4;
    j->a = a;
    for (int k = 0; k < 4; k++) j->dims[k] = yv->dims[k];
    for (int i = 0, at = 0; i < nin; i++) {
      j->src[i] = raw[i].data;
      for (int k = 0; k < 4; k++) j->f[i][k] = 1;
      j->f[i][nhwc ? 1 : 2] = p->up[i][0];
      j->f[i][nhwc ? 2 : 3] = p->up[i][1];
      for (int k = 0; k < 4; k++) j->sdims[i][k] = v[i].dims[k] / j->f[i][k];
      j->off[i] = at;
      at += j->len[i] = v[i].dims[a];
    }
  }
  j->rows = 1;
  for (int k = 0; k < j->r - 1; k++) j->rows *= j->dims[k];
}

static int concat_run(const hs_node *n, const hs_tensor *in_raw, int nin, hs_tensor *out_raw, int nout,
                      void *scratch, hs_error *err) {
  int r = in_raw[0].ndim, a;
  hs_tensor up[64], in[64], out[1]; /* op_list.h: at most 64 inputs */
  int rc = nin > 64 ? hs_op_errf(err, n, HS_LIMIT, "more than 64 inputs")
                    : hs_norm_axis(*(const int64_t *)n->params.bytes, r, &a, n, err);
  if (!rc) rc = concat_upsampled(n, in_raw, nin, up, err);
  if (!rc) rc = concat_views(n, up, nin, &out_raw[0], in, &out[0], &a, err);
  if (rc) return rc;
  if (!concat_upsamples(n, nin)) {
    hs_error kerr;
    hs_error_clear(&kerr);
    hs_kernel *k = concat_kernel(n, in, nin, a, &out[0], &kerr);
    if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
    if (k) {
      const void *src[CONCAT_MAX_KEY];
      for (int i = 0; i < nin; i++) src[i] = in[i].data;
      hs_kernel_args args = {.src = src, .nsrc = nin, .dst = out[0].data, .scratch = scratch};
      return hs_op_run_kernel(n, k, &args, err);
    }
  }
  if (hs_numel(&out[0]) == 0) return 0;
  concat_job j = {0};
  concat_plan_rows(n, in_raw, in, nin, &out[0], a, &j);
  int threads = hs_kernels_threads();
  if (threads < 2 || j.rows < threads || hs_numel(&out[0]) < CONCAT_PARALLEL_ELEMS) {
    concat_rows(&j, 0, j.rows);
    return 0;
  }
  j.parts = threads;
  hs_kernels_parallel_for(threads, concat_part, &j);
  return 0;
}

/* ---- Gather ----------------------------------------------------------------------------------- */

static int gather_check(hs_node *n, const hs_graph *g, hs_error *err) {
  int rc = hs_node_only_attrs(n, "axis", err);
  return rc ? rc : hs_attr_int(n, "axis", 0, (int64_t *)n->params.bytes, err);
}

static int gather_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int r = in[0].ndim, a, rc;
  if ((rc = hs_known_dtype(n, &in[0], err))) return rc;
  if (r < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "data must have rank >= 1");
  if ((rc = hs_norm_axis(*(const int64_t *)n->params.bytes, r, &a, n, err))) return rc;
  if (in[1].dtype != HS_DT_INT64 && in[1].dtype != HS_DT_INT32)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "indices must be int32 or int64");
  int ro = r - 1 + in[1].ndim;
  if (ro > HS_MAX_DIMS) return hs_op_errf(err, n, HS_UNSUPPORTED, "output rank over %d", HS_MAX_DIMS);
  int64_t d[HS_MAX_DIMS];
  int k = 0;
  for (int i = 0; i < a; i++) d[k++] = in[0].dims[i];
  for (int i = 0; i < in[1].ndim; i++) d[k++] = in[1].dims[i];
  for (int i = a + 1; i < r; i++) d[k++] = in[0].dims[i];
  return hs_set_shape(&out[0], in[0].dtype, ro, d, n, err);
}

static int gather_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  int r = in[0].ndim, a;
  int rc = hs_norm_axis(*(const int64_t *)n->params.bytes, r, &a, n, err);
  if (rc) return rc;
  size_t esz = hs_dtype_size(in[0].dtype);
  int64_t outer = 1, inner = 1, dim = in[0].dims[a], ni = hs_numel(&in[1]);
  for (int k = 0; k < a; k++) outer *= in[0].dims[k];
  for (int k = a + 1; k < r; k++) inner *= in[0].dims[k];
  size_t row = (size_t)inner * esz;
  for (int64_t j = 0; j < ni; j++) {
    int64_t ix = hs_get_int(&in[1], j);
    if (ix < -dim || ix >= dim)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "index %lld out of range [%lld, %lld)", (long long)ix,
                        (long long)-dim, (long long)dim);
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < ni; j++) {
      int64_t ix = hs_get_int(&in[1], j);
      if (ix < 0) ix += dim;
      hs_memcpy((char *)out[0].data + (size_t)(o * ni + j) * row, (const char *)in[0].data + (size_t)(o * dim + ix) * row,
             row);
    }
  return 0;
}

/* ---- Slice ------------------------------------------------------------------------------------ */

typedef struct {
  int from_inputs;
  int n;
  int64_t starts[HS_MAX_DIMS], ends[HS_MAX_DIMS], axes[HS_MAX_DIMS];
  int has_axes;
} slice_params;

static int slice_check(hs_node *n, const hs_graph *g, hs_error *err) {
  slice_params *p = (slice_params *)n->params.bytes;
  p->from_inputs = n->opset >= 10;
  int rc = hs_node_only_attrs(n, p->from_inputs ? "" : "starts,ends,axes", err);
  if (rc) return rc;
  if (p->from_inputs) {
    if (n->n_in < 3) return hs_op_errf(err, n, HS_PARSE, "starts and ends inputs are required");
    return 0;
  }
  const int64_t *s, *e, *a;
  size_t cs, ce, ca;
  if ((rc = hs_attr_ints(n, "starts", &s, &cs, err)) || (rc = hs_attr_ints(n, "ends", &e, &ce, err)) ||
      (rc = hs_attr_ints(n, "axes", &a, &ca, err)))
    return rc;
  if (cs != ce || cs > HS_MAX_DIMS || (hs_node_attr(n, "axes") && ca != cs))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "starts/ends/axes lengths differ");
  p->n = (int)cs;
  hs_memcpy(p->starts, s, cs * 8);
  hs_memcpy(p->ends, e, cs * 8);
  hs_memcpy(p->axes, a, ca * 8);
  p->has_axes = hs_node_attr(n, "axes") != NULL;
  return 0;
}

/* Per-axis start and step, and output dims. */
static int slice_plan(const hs_node *n, const hs_tensor *in, int nin, int64_t *start, int64_t *step, int64_t *od,
                      hs_error *err) {
  const slice_params *p = (const slice_params *)n->params.bytes;
  int r = in[0].ndim, c, rc, cnt;
  int64_t s[HS_MAX_DIMS], e[HS_MAX_DIMS], ax[HS_MAX_DIMS], stp[HS_MAX_DIMS];
  int has_axes;
  if (p->from_inputs) {
    if ((rc = hs_read_ints(n, &in[1], "starts", s, HS_MAX_DIMS, &c, err)) ||
        (rc = hs_read_ints(n, &in[2], "ends", e, HS_MAX_DIMS, &cnt, err)))
      return rc;
    if (cnt != c) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "starts and ends differ in length");
    has_axes = nin > 3 && HS_PRESENT(&in[3]);
    if (has_axes && ((rc = hs_read_ints(n, &in[3], "axes", ax, HS_MAX_DIMS, &cnt, err)) || cnt != c))
      return rc ? rc : hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axes length differs");
    if (nin > 4 && HS_PRESENT(&in[4])) {
      if ((rc = hs_read_ints(n, &in[4], "steps", stp, HS_MAX_DIMS, &cnt, err)) || cnt != c)
        return rc ? rc : hs_op_errf(err, n, HS_INVALID_ARGUMENT, "steps length differs");
    } else {
      for (int i = 0; i < c; i++) stp[i] = 1;
    }
  } else {
    c = p->n;
    hs_memcpy(s, p->starts, sizeof s);
    hs_memcpy(e, p->ends, sizeof e);
    hs_memcpy(ax, p->axes, sizeof ax);
    has_axes = p->has_axes;
    for (int i = 0; i < c; i++) stp[i] = 1;
  }
  for (int i = 0; i < r; i++) {
    start[i] = 0;
    step[i] = 1;
    od[i] = in[0].dims[i];
  }
  int seen[HS_MAX_DIMS] = {0};
  for (int i = 0; i < c; i++) {
    int a = i;
    if (has_axes && (rc = hs_norm_axis(ax[i], r, &a, n, err))) return rc;
    if (a >= r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "more starts than dimensions");
    if (seen[a]++) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis %d repeated", a);
    int64_t dim = in[0].dims[a], st = stp[i], b = s[i], en = e[i];
    if (st == 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "step 0");
    if (b < 0) b += dim;
    if (en < 0) en += dim;
    if (st > 0) {
      b = b < 0 ? 0 : b > dim ? dim : b;
      en = en < 0 ? 0 : en > dim ? dim : en;
      od[a] = en > b ? (en - b + st - 1) / st : 0;
    } else {
      b = b < 0 ? -1 : b > dim - 1 ? dim - 1 : b;
      en = en < -1 ? -1 : en > dim - 1 ? dim - 1 : en;
      /* (b - en) may be large: st is negative and not 0, and st == INT64_MIN makes -st overflow */
      int64_t mst = st == INT64_MIN ? INT64_MAX : -st;
      od[a] = b > en ? (b - en + mst - 1) / mst : 0;
    }
    start[a] = b;
    step[a] = st;
  }
  return 0;
}

static int slice_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t start[HS_MAX_DIMS], step[HS_MAX_DIMS], od[HS_MAX_DIMS];
  int rc;
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = slice_plan(n, in, nin, start, step, od, err))) return rc;
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, od, n, err);
}

static int slice_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  int64_t start[HS_MAX_DIMS], step[HS_MAX_DIMS], od[HS_MAX_DIMS], st[HS_MAX_DIMS], acc = 1, base = 0;
  int rc = slice_plan(n, in, nin, start, step, od, err), r = in[0].ndim;
  if (rc) return rc;
  for (int i = r - 1; i >= 0; i--) {
    st[i] = acc * step[i];
    base += acc * start[i];
    acc *= in[0].dims[i];
  }
  if (hs_numel(&out[0]) == 0) return 0;
  strided_copy(out[0].data, in[0].data, hs_dtype_size(in[0].dtype), r, od, st, base);
  return 0;
}

/* ---- Expand ----------------------------------------------------------------------------------- */

static int expand_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int c, rc, r;
  hs_tensor shp = {.ndim = 0};
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = hs_read_ints(n, &in[1], "shape", shp.dims, HS_MAX_DIMS, &c, err))) return rc;
  shp.ndim = c;
  int64_t d[HS_MAX_DIMS];
  if ((rc = hs_broadcast_shape(&in[0], &shp, &r, d, n, err))) return rc;
  return hs_set_shape(&out[0], in[0].dtype, r, d, n, err);
}

static int expand_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  int r = out[0].ndim;
  int64_t st[HS_MAX_DIMS], acc = 1;
  for (int i = r - 1; i >= 0; i--) {
    int ti = i - (r - in[0].ndim);
    int64_t d = ti >= 0 ? in[0].dims[ti] : 1;
    st[i] = d == 1 ? 0 : acc;
    acc *= d;
  }
  strided_copy(out[0].data, in[0].data, hs_dtype_size(in[0].dtype), r, out[0].dims, st, 0);
  return 0;
}

/* ---- Split ------------------------------------------------------------------------------------ */

typedef struct {
  int64_t axis;
  int n_split; /* split attribute (opset < 13), -1 when absent */
  int num_outputs; /* num_outputs attribute (opset 18), 0 when absent */
  int64_t split[64];
} split_params;

static int split_check(hs_node *n, const hs_graph *g, hs_error *err) {
  split_params *p = (split_params *)n->params.bytes;
  int rc = hs_node_only_attrs(n, n->opset < 13 ? "axis,split" : n->opset < 18 ? "axis" : "axis,num_outputs", err);
  int64_t num;
  if (rc || (rc = hs_attr_int(n, "axis", 0, &p->axis, err)) || (rc = hs_attr_int(n, "num_outputs", 0, &num, err)))
    return rc;
  if (num < 0 || num > 64) return hs_op_errf(err, n, HS_UNSUPPORTED, "num_outputs %lld (at most 64)", (long long)num);
  p->num_outputs = (int)num;
  const int64_t *v;
  size_t c;
  if ((rc = hs_attr_ints(n, "split", &v, &c, err))) return rc;
  if (c > 64) return hs_op_errf(err, n, HS_UNSUPPORTED, "more than 64 parts");
  p->n_split = v ? (int)c : -1;
  hs_memcpy(p->split, v, c * sizeof *v);
  return 0;
}

static int split_sizes(const hs_node *n, const hs_tensor *in, int nin, int nout, int *axis, int64_t *sz, hs_error *err) {
  const split_params *p = (const split_params *)n->params.bytes;
  int rc = hs_norm_axis(p->axis, in[0].ndim, axis, n, err), c;
  if (rc) return rc;
  int64_t dim = in[0].dims[*axis], total = 0;
  if (nin > 1 && HS_PRESENT(&in[1])) {
    if ((rc = hs_read_ints(n, &in[1], "split", sz, 64, &c, err))) return rc;
  } else if (p->n_split >= 0) {
    c = p->n_split;
    hs_memcpy(sz, p->split, sizeof(int64_t) * (size_t)c);
  } else if (p->num_outputs) { /* opset 18: parts of ceil(dim / num_outputs), the last one smaller */
    if (p->num_outputs != nout) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "num_outputs %d for %d outputs", p->num_outputs, nout);
    int64_t part = (dim + nout - 1) / nout;
    for (int i = 0; i < nout; i++) sz[i] = dim - part * i < part ? (dim - part * i > 0 ? dim - part * i : 0) : part;
    c = nout;
  } else {
    if (nout < 1 || dim % nout) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%lld does not split evenly into %d", (long long)dim, nout);
    for (int i = 0; i < nout; i++) sz[i] = dim / nout;
    return 0;
  }
  if (c != nout) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "split has %d entries for %d outputs", c, nout);
  for (int i = 0; i < c; i++) {
    if (sz[i] < 0 || sz[i] > dim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "negative or oversized split");
    total += sz[i];
  }
  if (total != dim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "split sums to %lld, the axis is %lld", (long long)total, (long long)dim);
  return 0;
}

static int split_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int axis, rc;
  int64_t sz[64];
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = split_sizes(n, in, nin, nout, &axis, sz, err))) return rc;
  for (int k = 0; k < nout; k++) {
    int64_t d[HS_MAX_DIMS];
    memcpy(d, in[0].dims, sizeof d);
    d[axis] = sz[k];
    if ((rc = hs_set_shape(&out[k], in[0].dtype, in[0].ndim, d, n, err))) return rc;
  }
  return 0;
}

static int split_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  int axis, rc;
  int64_t sz[64];
  if ((rc = split_sizes(n, in, nin, nout, &axis, sz, err))) return rc;
  size_t esz = hs_dtype_size(in[0].dtype);
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < axis; k++) outer *= in[0].dims[k];
  for (int k = axis + 1; k < in[0].ndim; k++) inner *= in[0].dims[k];
  size_t irow = (size_t)(in[0].dims[axis] * inner) * esz, off = 0;
  for (int k = 0; k < nout; k++) {
    size_t row = (size_t)(sz[k] * inner) * esz;
    if (out[k].data)
      for (int64_t o = 0; o < outer; o++)
        hs_memcpy((char *)out[k].data + (size_t)o * row, (const char *)in[0].data + (size_t)o * irow + off, row);
    off += row;
  }
  return 0;
}

/* ---- Tile ------------------------------------------------------------------------------------- */

static int tile_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t rep[HS_MAX_DIMS], d[HS_MAX_DIMS];
  int c, rc;
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = hs_read_ints(n, &in[1], "repeats", rep, HS_MAX_DIMS, &c, err))) return rc;
  if (c != in[0].ndim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "repeats has %d entries for rank %d", c, in[0].ndim);
  for (int i = 0; i < c; i++) {
    if (rep[i] < 0 || (in[0].dims[i] && rep[i] > INT64_MAX / in[0].dims[i]))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bad repeat count");
    d[i] = in[0].dims[i] * rep[i];
  }
  return hs_set_shape(&out[0], in[0].dtype, c, d, n, err);
}

static int tile_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  int r = in[0].ndim;
  size_t esz = hs_dtype_size(in[0].dtype);
  int64_t ist[HS_MAX_DIMS], acc = 1, idx[HS_MAX_DIMS] = {0}, total = hs_numel(&out[0]);
  for (int a = r - 1; a >= 0; a--) {
    ist[a] = acc;
    acc *= in[0].dims[a];
  }
  for (int64_t e = 0; e < total; e++) {
    int64_t off = 0;
    for (int a = 0; a < r; a++) off += (idx[a] % in[0].dims[a]) * ist[a];
    memcpy((char *)out[0].data + e * (int64_t)esz, (const char *)in[0].data + off * (int64_t)esz, esz);
    for (int a = r - 1; a >= 0; a--) {
      if (++idx[a] < out[0].dims[a]) break;
      idx[a] = 0;
    }
  }
  return 0;
}

const hs_op_impl hs_op_impl_transpose = {
    .check = transpose_check,
    .infer = transpose_infer,
    .run = transpose_run,
};
const hs_op_impl hs_op_impl_concat = {
    .check = concat_check,
    .infer = concat_infer,
    .prepare = concat_prepare,
    .scratch_bytes = concat_scratch,
    .run = concat_run,
    .fuse = concat_fuse,
};
const hs_op_impl hs_op_impl_gather = {
    .check = gather_check,
    .infer = gather_infer,
    .run = gather_run,
};
const hs_op_impl hs_op_impl_slice = {
    .check = slice_check,
    .infer = slice_infer,
    .run = slice_run,
};
const hs_op_impl hs_op_impl_split = {
    .check = split_check,
    .infer = split_infer,
    .run = split_run,
};
const hs_op_impl hs_op_impl_expand = {
    .infer = expand_infer,
    .run = expand_run,
};
const hs_op_impl hs_op_impl_tile = {
    .infer = tile_infer,
    .run = tile_run,
};

/* index.c - index-driven ops: GatherElements, ScatterElements / Scatter, ArgMax, ArgMin, Hardmax, TopK, CumSum,
 * Trilu, NonZero, Unique. */

/*
 * DESIGN
 * Plain C over any element type: gathers and scatters move elements by their byte size, so every
 * dtype works; comparisons and sums read elements as double (hs_load_f64), exact for every float32
 * and for integers up to 2^53. A tensor is walked as [outer, axis, inner] around the op's axis.
 * NonZero's and Unique's output shapes depend on their input's contents, so that input must be
 * known when a session plans (a graph input or constant; value_inputs bit 0), as for Reshape's shape.
 */
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"

typedef struct {
  int64_t axis;
  int keepdims, select_last, largest, sorted, exclusive, reverse, upper;
  int reduction; /* ScatterElements: RD_* */
} index_params;

enum { RD_NONE, RD_ADD, RD_MUL, RD_MAX, RD_MIN };

/* outer / len / inner of t around axis a */
static void split_at(const hs_tensor *t, int a, int64_t *outer, int64_t *len, int64_t *inner) {
  *outer = *inner = 1;
  for (int i = 0; i < a; i++) *outer *= t->dims[i];
  for (int i = a + 1; i < t->ndim; i++) *inner *= t->dims[i];
  *len = t->ndim ? t->dims[a] : 1;
}

static int numeric(const hs_node *n, const hs_tensor *t, const char *what, hs_error *err) {
  return hs_need_dtype(n, t, what, err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT64, HS_DT_INT32, HS_DT_INT16,
                       HS_DT_INT8, HS_DT_UINT64, HS_DT_UINT32, HS_DT_UINT16, HS_DT_UINT8, HS_DT_UNDEFINED);
}

static int any_type(const hs_node *n, const hs_tensor *t, hs_error *err) {
  if (hs_dtype_size(t->dtype) == 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "input type is not supported");
  return 0;
}

/* An index tensor's element i, checked against [-len, len) and made non-negative. */
static int index_at(const hs_node *n, const hs_tensor *idx, int64_t i, int64_t len, int64_t *out, hs_error *err) {
  int64_t v = hs_get_int(idx, i);
  if (v < -len || v >= len)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "index %lld is out of range for size %lld", (long long)v,
                      (long long)len);
  *out = v < 0 ? v + len : v;
  return 0;
}

/* ---- GatherElements / ScatterElements --------------------------------------------------------- */

static int ge_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int scatter = n->op == HS_OP_ScatterElements || n->op == HS_OP_Scatter;
  const char *allowed = !scatter ? "axis" : n->opset >= 16 && n->op == HS_OP_ScatterElements ? "axis,reduction" : "axis";
  const char *red;
  int rc = hs_node_only_attrs(n, allowed, err);
  if (rc || (rc = hs_attr_int(n, "axis", 0, &p->axis, err)) || (rc = hs_attr_string(n, "reduction", "none", &red, err)))
    return rc;
  static const char *const names[] = {"none", "add", "mul", "max", "min"};
  p->reduction = -1;
  for (int i = 0; i < (n->opset >= 18 ? 5 : 3); i++)
    if (strcmp(red, names[i]) == 0) p->reduction = i;
  if (p->reduction < 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "reduction '%s' (opset %d)", red, n->opset);
  return 0;
}

/* Shared checks: rank, axis, index type; for scatter, updates shaped as the indices. */
static int ge_shapes(const hs_node *n, const hs_tensor *in, int nin, int *axis, hs_error *err) {
  const index_params *p = (const index_params *)n->params.bytes;
  const hs_tensor *x = &in[0], *idx = &in[1];
  int rc = any_type(n, x, err);
  if (rc || (rc = hs_need_dtype(n, idx, "indices", err, HS_DT_INT64, HS_DT_INT32, HS_DT_UNDEFINED))) return rc;
  if (x->ndim < 1 || idx->ndim != x->ndim)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "data and indices must have the same rank >= 1");
  if ((rc = hs_norm_axis(p->axis, x->ndim, axis, n, err))) return rc;
  if (nin > 2) {
    const hs_tensor *u = &in[2];
    if (u->dtype != x->dtype || u->ndim != idx->ndim)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "updates must match data's type and indices' shape");
    for (int i = 0; i < u->ndim; i++)
      if (u->dims[i] != idx->dims[i] || (i != *axis && idx->dims[i] > x->dims[i]))
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "updates / indices shape does not fit data");
  } else {
    for (int i = 0; i < x->ndim; i++)
      if (i != *axis && idx->dims[i] > x->dims[i])
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "indices dimension %d exceeds data's", i);
  }
  return 0;
}

static int ge_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  int axis, rc = ge_shapes(n, in, nin, &axis, err);
  if (rc) return rc;
  const hs_tensor *shape = nin > 2 ? &in[0] : &in[1]; /* scatter: data's shape; gather: indices' */
  return hs_set_shape(&out[0], in[0].dtype, shape->ndim, shape->dims, n, err);
}

/* Offset in data (dims) of indices' element at multi-index pos, with pos[axis] replaced by v. */
static int64_t offset_with(const hs_tensor *data, const int64_t *pos, int axis, int64_t v) {
  int64_t off = 0;
  for (int i = 0; i < data->ndim; i++) off = off * data->dims[i] + (i == axis ? v : pos[i]);
  return off;
}

static int ge_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  (void)nout, (void)scratch;
  const index_params *p = (const index_params *)n->params.bytes;
  int axis, rc = ge_shapes(n, in, nin, &axis, err);
  if (rc) return rc;
  const hs_tensor *x = &in[0], *idx = &in[1];
  const int scatter = nin > 2;
  size_t esz = hs_dtype_size(x->dtype);
  if (scatter) hs_memcpy(out[0].data, x->data, x->nbytes);
  int64_t total = hs_numel(idx), pos[HS_MAX_DIMS] = {0};
  for (int64_t i = 0; i < total; i++) {
    int64_t v = 0; /* set by index_at */
    if ((rc = index_at(n, idx, i, x->dims[axis], &v, err))) return rc;
    int64_t off = offset_with(x, pos, axis, v);
    if (!scatter) {
      memcpy((char *)out[0].data + (size_t)i * esz, (const char *)x->data + (size_t)off * esz, esz);
    } else if (p->reduction == RD_NONE) {
      memcpy((char *)out[0].data + (size_t)off * esz, (const char *)in[2].data + (size_t)i * esz, esz);
    } else {
      double a = hs_load_f64(&out[0], off), b = hs_load_f64(&in[2], i);
      double r = p->reduction == RD_ADD ? a + b : p->reduction == RD_MUL ? a * b : p->reduction == RD_MAX ? (a > b ? a : b)
                                                                                                          : (a < b ? a : b);
      hs_store_f64(&out[0], off, r);
    }
    for (int k = idx->ndim - 1; k >= 0; k--) { /* next multi-index of indices */
      if (++pos[k] < idx->dims[k]) break;
      pos[k] = 0;
    }
  }
  return 0;
}

/* ---- ArgMax / ArgMin -------------------------------------------------------------------------- */

static int arg_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t kd, last;
  int rc = hs_node_only_attrs(n, n->opset >= 12 ? "axis,keepdims,select_last_index" : "axis,keepdims", err);
  if (rc || (rc = hs_attr_int(n, "axis", 0, &p->axis, err)) || (rc = hs_attr_int(n, "keepdims", 1, &kd, err)) ||
      (rc = hs_attr_int(n, "select_last_index", 0, &last, err)))
    return rc;
  p->keepdims = kd != 0;
  p->select_last = last != 0;
  return 0;
}

static int arg_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  const index_params *p = (const index_params *)n->params.bytes;
  int a, rc = numeric(n, &in[0], "input", err);
  if (rc || (rc = hs_norm_axis(p->axis, in[0].ndim, &a, n, err))) return rc;
  if (in[0].dims[a] == 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "the reduced axis is empty");
  int64_t d[HS_MAX_DIMS];
  int r = 0;
  for (int i = 0; i < in[0].ndim; i++)
    if (i != a) d[r++] = in[0].dims[i];
    else if (p->keepdims) d[r++] = 1;
  return hs_set_shape(&out[0], HS_DT_INT64, r, d, n, err);
}

static int arg_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  const index_params *p = (const index_params *)n->params.bytes;
  const int want_max = n->op == HS_OP_ArgMax;
  int a, rc = hs_norm_axis(p->axis, in[0].ndim, &a, n, err);
  if (rc) return rc;
  int64_t outer, len, inner, *y = out[0].data;
  split_at(&in[0], a, &outer, &len, &inner);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t base = o * len * inner + i, best = 0;
      double bv = hs_load_f64(&in[0], base);
      for (int64_t k = 1; k < len; k++) {
        double v = hs_load_f64(&in[0], base + k * inner);
        int better = want_max ? v > bv : v < bv;
        if (better || (p->select_last && v == bv)) bv = v, best = k;
      }
      y[o * inner + i] = best;
    }
  return 0;
}

/* ---- Hardmax (1 at the first maximum along axis; before opset 13 over the input coerced to 2-D) ---- */

static int hardmax_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "axis", err);
  return rc ? rc : hs_attr_int(n, "axis", n->opset >= 13 ? -1 : 1, &p->axis, err);
}

static int hardmax_axis(const hs_node *n, const hs_tensor *x, int64_t *outer, int64_t *len, int64_t *inner,
                        hs_error *err) {
  const index_params *p = (const index_params *)n->params.bytes;
  int rc = hs_need_dtype(n, x, "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_UNDEFINED), a;
  if (rc) return rc;
  if (n->opset >= 13) {
    if ((rc = hs_norm_axis(p->axis, x->ndim, &a, n, err))) return rc;
    split_at(x, a, outer, len, inner);
    return 0;
  }
  if (p->axis < -x->ndim || p->axis > x->ndim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  a = (int)(p->axis < 0 ? p->axis + x->ndim : p->axis);
  *outer = *len = 1;
  *inner = 1;
  for (int i = 0; i < x->ndim; i++) *(i < a ? outer : len) *= x->dims[i];
  return 0;
}

static int hardmax_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int64_t o, l, i;
  int rc = hardmax_axis(n, &in[0], &o, &l, &i, err);
  return rc ? rc : hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err);
}

static int hardmax_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                       hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  int64_t outer, len, inner;
  int rc = hardmax_axis(n, &in[0], &outer, &len, &inner, err);
  if (rc) return rc;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t base = o * len * inner + i, best = 0;
      double bv = len ? hs_load_f64(&in[0], base) : 0;
      for (int64_t k = 1; k < len; k++) {
        double v = hs_load_f64(&in[0], base + k * inner);
        if (v > bv) bv = v, best = k;
      }
      for (int64_t k = 0; k < len; k++) hs_store_f64(&out[0], base + k * inner, k == best);
    }
  return 0;
}

/* ---- TopK ------------------------------------------------------------------------------------- */

static int topk_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t largest, sorted;
  int rc = hs_node_only_attrs(n, n->opset >= 11 ? "axis,largest,sorted" : "axis", err);
  if (rc || (rc = hs_attr_int(n, "axis", -1, &p->axis, err)) || (rc = hs_attr_int(n, "largest", 1, &largest, err)) ||
      (rc = hs_attr_int(n, "sorted", 1, &sorted, err)))
    return rc;
  p->largest = largest != 0;
  p->sorted = 1; /* sorted=0 leaves the order unspecified: sorted output is one valid answer */
  return 0;
}

static int topk_k(const hs_node *n, const hs_tensor *in, int *a, int64_t *k, hs_error *err) {
  const index_params *p = (const index_params *)n->params.bytes;
  int rc = numeric(n, &in[0], "input", err);
  if (rc || (rc = hs_norm_axis(p->axis, in[0].ndim, a, n, err))) return rc;
  if ((in[1].dtype != HS_DT_INT64 && in[1].dtype != HS_DT_INT32) || hs_numel(&in[1]) != 1)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "K must be one int64");
  *k = hs_get_int(&in[1], 0);
  if (*k < 0 || *k > in[0].dims[*a])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "K = %lld for an axis of %lld", (long long)*k,
                      (long long)in[0].dims[*a]);
  return 0;
}

static int topk_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin;
  int a, rc;
  int64_t k, d[HS_MAX_DIMS];
  if ((rc = topk_k(n, in, &a, &k, err))) return rc;
  memcpy(d, in[0].dims, sizeof d);
  d[a] = k;
  if ((rc = hs_set_shape(&out[0], in[0].dtype, in[0].ndim, d, n, err))) return rc;
  return nout > 1 ? hs_set_shape(&out[1], HS_DT_INT64, in[0].ndim, d, n, err) : 0;
}

typedef struct {
  double v;
  int64_t i;
} topk_item;

static int cmp_largest(const void *x, const void *y) {
  const topk_item *a = x, *b = y;
  if (a->v != b->v) return a->v > b->v ? -1 : 1;
  return a->i < b->i ? -1 : a->i > b->i;
}
static int cmp_smallest(const void *x, const void *y) {
  const topk_item *a = x, *b = y;
  if (a->v != b->v) return a->v < b->v ? -1 : 1;
  return a->i < b->i ? -1 : a->i > b->i;
}

static size_t topk_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)n, (void)nin, (void)out, (void)nout;
  int64_t m = 1;
  for (int i = 0; i < in[0].ndim; i++) m = in[0].dims[i] > m ? in[0].dims[i] : m;
  return sizeof(topk_item) * (size_t)m;
}

static int topk_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  (void)nin;
  const index_params *p = (const index_params *)n->params.bytes;
  int a, rc;
  int64_t k, outer, len, inner;
  if ((rc = topk_k(n, in, &a, &k, err))) return rc;
  split_at(&in[0], a, &outer, &len, &inner);
  topk_item *items = scratch;
  int64_t *idx = nout > 1 && n->out[1] >= 0 ? out[1].data : NULL;
  int has_values = n->out[0] >= 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t base = o * len * inner + i, obase = o * k * inner + i;
      for (int64_t j = 0; j < len; j++) items[j] = (topk_item){hs_load_f64(&in[0], base + j * inner), j};
      qsort(items, (size_t)len, sizeof *items, p->largest ? cmp_largest : cmp_smallest);
      for (int64_t j = 0; j < k; j++) {
        size_t esz = hs_dtype_size(in[0].dtype);
        if (has_values)
          memcpy((char *)out[0].data + (size_t)(obase + j * inner) * esz,
                 (const char *)in[0].data + (size_t)(base + items[j].i * inner) * esz, esz);
        if (idx) idx[obase + j * inner] = items[j].i;
      }
    }
  return 0;
}

/* ---- CumSum ----------------------------------------------------------------------------------- */

static int cumsum_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t ex, rev;
  int rc = hs_node_only_attrs(n, "exclusive,reverse", err);
  if (rc || (rc = hs_attr_int(n, "exclusive", 0, &ex, err)) || (rc = hs_attr_int(n, "reverse", 0, &rev, err))) return rc;
  p->exclusive = ex != 0;
  p->reverse = rev != 0;
  return 0;
}

static int cumsum_axis(const hs_node *n, const hs_tensor *in, int *a, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT64, HS_DT_INT32,
                         HS_DT_UINT64, HS_DT_UINT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  if ((in[1].dtype != HS_DT_INT64 && in[1].dtype != HS_DT_INT32) || hs_numel(&in[1]) != 1 || in[1].ndim > 1)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis must be a 0-D or 1-element int tensor");
  return in[1].data ? hs_norm_axis(hs_get_int(&in[1], 0), in[0].ndim, a, n, err) : 0;
}

static int cumsum_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int a, rc = cumsum_axis(n, in, &a, err);
  return rc ? rc : hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err);
}

#define CUMSUM_LOOP(T)                                                                                   \
  do {                                                                                                   \
    const T *x = in[0].data;                                                                             \
    T *y = out[0].data;                                                                                  \
    for (int64_t o = 0; o < outer; o++)                                                                  \
      for (int64_t i = 0; i < inner; i++) {                                                              \
        T acc = 0;                                                                                       \
        for (int64_t s = 0; s < len; s++) {                                                              \
          int64_t j = o * len * inner + (p->reverse ? len - 1 - s : s) * inner + i;                      \
          if (p->exclusive) y[j] = acc, acc += x[j];                                                     \
          else acc += x[j], y[j] = acc;                                                                  \
        }                                                                                                \
      }                                                                                                  \
  } while (0)

static int cumsum_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  const index_params *p = (const index_params *)n->params.bytes;
  int a, rc = cumsum_axis(n, in, &a, err);
  if (rc) return rc;
  int64_t outer, len, inner;
  split_at(&in[0], a, &outer, &len, &inner);
  switch (in[0].dtype) {
    case HS_DT_FLOAT32: CUMSUM_LOOP(float); break;
    case HS_DT_FLOAT64: CUMSUM_LOOP(double); break;
    case HS_DT_INT64: CUMSUM_LOOP(int64_t); break;
    case HS_DT_INT32: CUMSUM_LOOP(int32_t); break;
    case HS_DT_UINT64: CUMSUM_LOOP(uint64_t); break;
    case HS_DT_UINT32: CUMSUM_LOOP(uint32_t); break;
    default: break;
  }
  return 0;
}

/* ---- Trilu ------------------------------------------------------------------------------------ */

static int trilu_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t upper;
  int rc = hs_node_only_attrs(n, "upper", err);
  if (rc || (rc = hs_attr_int(n, "upper", 1, &upper, err))) return rc;
  p->upper = upper != 0;
  return 0;
}

static int trilu_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  int rc = any_type(n, &in[0], err);
  if (rc) return rc;
  if (in[0].ndim < 2) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input rank must be >= 2");
  if (nin > 1 && HS_PRESENT(&in[1]) &&
      ((in[1].dtype != HS_DT_INT64 && in[1].dtype != HS_DT_INT32) || hs_numel(&in[1]) != 1))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "k must be one int64");
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err);
}

static int trilu_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  (void)nout, (void)scratch, (void)err;
  const index_params *p = (const index_params *)n->params.bytes;
  int64_t k = nin > 1 && HS_PRESENT(&in[1]) ? hs_get_int(&in[1], 0) : 0;
  int64_t rows = in[0].dims[in[0].ndim - 2], cols = in[0].dims[in[0].ndim - 1];
  int64_t mats = rows * cols != 0 ? hs_numel(&in[0]) / (rows * cols) : 0;
  size_t esz = hs_dtype_size(in[0].dtype);
  for (int64_t m = 0; m < mats; m++)
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < cols; j++) {
        size_t off = (size_t)((m * rows + i) * cols + j) * esz;
        int keep = p->upper ? j - i >= k : j - i <= k;
        if (keep) memcpy((char *)out[0].data + off, (const char *)in[0].data + off, esz);
        else memset((char *)out[0].data + off, 0, esz);
      }
  return 0;
}

/* ---- NonZero ---------------------------------------------------------------------------------- */

static int nonzero_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  return hs_node_only_attrs(n, "", err);
}

static int nonzero_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT64, HS_DT_INT32,
                         HS_DT_INT8, HS_DT_UINT8, HS_DT_BOOL, HS_DT_UNDEFINED);
  if (rc) return rc;
  int64_t count = 0, total = hs_numel(&in[0]);
  for (int64_t i = 0; i < total; i++) count += hs_load_f64(&in[0], i) != 0;
  int64_t d[2] = {in[0].ndim, count};
  return hs_set_shape(&out[0], HS_DT_INT64, 2, d, n, err);
}

static int nonzero_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                       hs_error *err) {
  (void)n, (void)nin, (void)nout, (void)scratch, (void)err;
  int64_t total = hs_numel(&in[0]), count = out[0].dims[1], c = 0, pos[HS_MAX_DIMS] = {0};
  int64_t *y = out[0].data;
  for (int64_t i = 0; i < total; i++) {
    if (hs_load_f64(&in[0], i) != 0 && c < count) {
      for (int k = 0; k < in[0].ndim; k++) y[k * count + c] = pos[k];
      c++;
    }
    for (int k = in[0].ndim - 1; k >= 0; k--) {
      if (++pos[k] < in[0].dims[k]) break;
      pos[k] = 0;
    }
  }
  return 0;
}

/* ---- Unique (slices along axis, or elements of the flattened input) ---------------------------- */

static int unique_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  index_params *p = (index_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t sorted;
  int rc = hs_node_only_attrs(n, "axis,sorted", err);
  if (rc || (rc = hs_attr_int(n, "axis", 0, &p->axis, err)) || (rc = hs_attr_int(n, "sorted", 1, &sorted, err))) return rc;
  p->sorted = sorted != 0;
  p->upper = hs_node_attr(n, "axis") != NULL; /* upper: an axis was given */
  return 0;
}

typedef struct {
  const hs_tensor *x;
  int64_t outer, len, inner;
} uslices;

static int unique_view(const hs_node *n, const hs_tensor *x, uslices *u, int *axis, hs_error *err) {
  const index_params *p = (const index_params *)n->params.bytes;
  int rc = numeric(n, x, "input", err);
  if (rc) return rc;
  u->x = x;
  *axis = -1;
  if (p->upper) {
    if ((rc = hs_norm_axis(p->axis, x->ndim, axis, n, err))) return rc;
    split_at(x, *axis, &u->outer, &u->len, &u->inner);
  } else {
    u->outer = u->inner = 1;
    u->len = hs_numel(x);
  }
  return 0;
}

/* <0, 0, >0 comparing slices i and j element by element */
static int slice_cmp(const uslices *u, int64_t i, int64_t j) {
  for (int64_t o = 0; o < u->outer; o++)
    for (int64_t k = 0; k < u->inner; k++) {
      double a = hs_load_f64(u->x, (o * u->len + i) * u->inner + k), b = hs_load_f64(u->x, (o * u->len + j) * u->inner + k);
      if (a != b) return a < b ? -1 : 1;
    }
  return 0;
}

static int64_t unique_count(const uslices *u) {
  int64_t c = 0;
  for (int64_t i = 0; i < u->len; i++) {
    int seen = 0;
    for (int64_t j = 0; j < i && !seen; j++) seen = slice_cmp(u, i, j) == 0;
    c += !seen;
  }
  return c;
}

static int unique_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin;
  uslices u;
  int axis, rc = unique_view(n, &in[0], &u, &axis, err);
  if (rc) return rc;
  int64_t c = unique_count(&u), d[HS_MAX_DIMS];
  if (axis < 0) rc = hs_set_shape(&out[0], in[0].dtype, 1, &c, n, err);
  else {
    memcpy(d, in[0].dims, sizeof d);
    d[axis] = c;
    rc = hs_set_shape(&out[0], in[0].dtype, in[0].ndim, d, n, err);
  }
  if (rc == 0 && nout > 1) rc = hs_set_shape(&out[1], HS_DT_INT64, 1, &c, n, err);
  if (rc == 0 && nout > 2) rc = hs_set_shape(&out[2], HS_DT_INT64, 1, &u.len, n, err);
  if (rc == 0 && nout > 3) rc = hs_set_shape(&out[3], HS_DT_INT64, 1, &c, n, err);
  return rc;
}

static size_t unique_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)n, (void)nin, (void)out, (void)nout;
  return sizeof(int64_t) * 2 * (size_t)(hs_numel(&in[0]) + 1);
}

static int unique_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)nin;
  const index_params *p = (const index_params *)n->params.bytes;
  uslices u;
  int axis, rc = unique_view(n, &in[0], &u, &axis, err);
  if (rc) return rc;
  /* first[k]: the slice first holding unique value k (order of appearance); inv[i]: k of slice i */
  int64_t *first = scratch, *inv = first + u.len, c = 0;
  for (int64_t i = 0; i < u.len; i++) {
    int64_t k = -1;
    for (int64_t j = 0; j < c && k < 0; j++)
      if (slice_cmp(&u, i, first[j]) == 0) k = j;
    if (k < 0) first[k = c++] = i;
    inv[i] = k;
  }
  if (p->sorted) /* insertion sort of the unique slices */
    for (int64_t i = 1; i < c; i++)
      for (int64_t j = i; j > 0 && slice_cmp(&u, first[j], first[j - 1]) < 0; j--) {
        int64_t t = first[j];
        first[j] = first[j - 1];
        first[j - 1] = t;
      }
  for (int64_t i = 0; p->sorted && i < u.len; i++) { /* inverse indices into the sorted order */
    int64_t j = 0;
    while (j < c && slice_cmp(&u, i, first[j]) != 0) j++;
    inv[i] = j;
  }
  size_t esz = hs_dtype_size(in[0].dtype), row = (size_t)u.inner * esz;
  for (int64_t o = 0; o < u.outer; o++)
    for (int64_t k = 0; k < c; k++)
      memcpy((char *)out[0].data + (size_t)(o * c + k) * row, (const char *)in[0].data + (size_t)(o * u.len + first[k]) * row, row);
  if (nout > 1 && n->out[1] >= 0)
    for (int64_t k = 0; k < c; k++) ((int64_t *)out[1].data)[k] = first[k];
  if (nout > 2 && n->out[2] >= 0) memcpy(out[2].data, inv, sizeof(int64_t) * (size_t)u.len);
  if (nout > 3 && n->out[3] >= 0) {
    int64_t *cnt = out[3].data;
    for (int64_t k = 0; k < c; k++) cnt[k] = 0;
    for (int64_t i = 0; i < u.len; i++) cnt[inv[i]]++;
  }
  return 0;
}

const hs_op_impl hs_op_impl_gather_elements = {
    .check = ge_check,
    .infer = ge_infer,
    .run = ge_run,
};
const hs_op_impl hs_op_impl_arg = {
    .check = arg_check,
    .infer = arg_infer,
    .run = arg_run,
};
const hs_op_impl hs_op_impl_hardmax = {
    .check = hardmax_check,
    .infer = hardmax_infer,
    .run = hardmax_run,
};
const hs_op_impl hs_op_impl_topk = {
    .check = topk_check,
    .infer = topk_infer,
    .scratch_bytes = topk_scratch,
    .run = topk_run,
};
const hs_op_impl hs_op_impl_cumsum = {
    .check = cumsum_check,
    .infer = cumsum_infer,
    .run = cumsum_run,
};
const hs_op_impl hs_op_impl_trilu = {
    .check = trilu_check,
    .infer = trilu_infer,
    .run = trilu_run,
};
const hs_op_impl hs_op_impl_unique = {
    .check = unique_check,
    .infer = unique_infer,
    .scratch_bytes = unique_scratch,
    .run = unique_run,
};
const hs_op_impl hs_op_impl_nonzero = {
    .check = nonzero_check,
    .infer = nonzero_infer,
    .run = nonzero_run,
};

/* reduce.c - ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceSumSquare, ReduceL2, ReduceL1,
 * ReduceLogSum, ReduceLogSumExp
 * (float32; int64 for Sum/Max/Min/Prod). Axes are an attribute, or an optional input for ReduceSum
 * from opset 13 and for all of them from opset 18. */

/*
 * DESIGN
 * The plain-C loop below handles every case and is the reference. Float32 ReduceSum/Mean/Max/Min/Prod
 * also run on the oneDNN reduction kernel: prepare() attaches a kernel cache, scratch_bytes() builds
 * the kernel for the planned input shape and reduced axes, run() finds it (opkernel.h). The kernel
 * writes the keepdims=1 layout, which is also the keepdims=0 result (the same elements in the same
 * order). int64 inputs, ReduceSumSquare/L2, empty inputs, noop_with_empty_axes with no axes and
 * reductions that change nothing (every reduced axis has size 1: a copy) stay in plain C by design.
 * Inputs under KERNEL_MIN_ELEMS elements do too, unless strict mode asks for the kernel path.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_SUMSQ, R_L2, R_L1, R_LOGSUM, R_LOGSUMEXP };

typedef struct {
  int kind;
  int keepdims;
  int noop_with_empty_axes;
  int axes_from_input;
  int n_axes;
  int64_t axes[HS_MAX_DIMS];
} reduce_params;

static int reduce_check(hs_node *n, const hs_graph *g, hs_error *err) {
  reduce_params *p = (reduce_params *)n->params.bytes;
  switch (n->op) {
    case HS_OP_ReduceSum: p->kind = R_SUM; break;
    case HS_OP_ReduceMean: p->kind = R_MEAN; break;
    case HS_OP_ReduceMax: p->kind = R_MAX; break;
    case HS_OP_ReduceMin: p->kind = R_MIN; break;
    case HS_OP_ReduceProd: p->kind = R_PROD; break;
    case HS_OP_ReduceSumSquare: p->kind = R_SUMSQ; break;
    case HS_OP_ReduceL1: p->kind = R_L1; break;
    case HS_OP_ReduceLogSum: p->kind = R_LOGSUM; break;
    case HS_OP_ReduceLogSumExp: p->kind = R_LOGSUMEXP; break;
    default: p->kind = R_L2; break;
  }
  p->axes_from_input = (p->kind == R_SUM && n->opset >= 13) || n->opset >= 18; /* every Reduce* from 18 */
  int rc = hs_node_only_attrs(n, p->axes_from_input ? "keepdims,noop_with_empty_axes" : "keepdims,axes", err);
  if (rc) return rc;
  int64_t kd, noop;
  if ((rc = hs_attr_int(n, "keepdims", 1, &kd, err)) || (rc = hs_attr_int(n, "noop_with_empty_axes", 0, &noop, err)))
    return rc;
  p->keepdims = kd != 0;
  p->noop_with_empty_axes = noop != 0;
  const int64_t *axes;
  size_t na;
  if ((rc = hs_attr_ints(n, "axes", &axes, &na, err))) return rc;
  if (na > HS_MAX_DIMS) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "too many axes");
  p->n_axes = (int)na;
  for (size_t i = 0; i < na; i++) p->axes[i] = axes[i];
  if (!p->axes_from_input && n->n_in > 1) return hs_op_errf(err, n, HS_PARSE, "axes input needs opset %d", p->kind == R_SUM ? 13 : 18);
  return 0;
}

/* Fills mask[r] with the reduced axes. */
static int reduce_mask(const hs_node *n, const hs_tensor *in, int nin, int *mask, int *noop, hs_error *err) {
  const reduce_params *p = (const reduce_params *)n->params.bytes;
  int r = in[0].ndim, rc;
  memset(mask, 0, sizeof(int) * HS_MAX_DIMS);
  *noop = 0;
  int64_t count;
  const int64_t *attr_axes = p->axes;
  if (p->axes_from_input && nin > 1 && HS_PRESENT(&in[1])) {
    if (in[1].dtype != HS_DT_INT64 || in[1].ndim > 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axes must be 1-D int64");
    count = hs_numel(&in[1]);
    for (int64_t i = 0; i < count; i++) {
      int ax;
      if ((rc = hs_norm_axis(((const int64_t *)in[1].data)[i], r, &ax, n, err))) return rc;
      mask[ax] = 1;
    }
  } else {
    count = p->axes_from_input ? 0 : p->n_axes;
    for (int64_t i = 0; i < count; i++) {
      int ax;
      if ((rc = hs_norm_axis(attr_axes[i], r, &ax, n, err))) return rc;
      mask[ax] = 1;
    }
  }
  if (count == 0) {
    if (p->noop_with_empty_axes) *noop = 1;
    else
      for (int i = 0; i < r; i++) mask[i] = 1;
  }
  return 0;
}

static int reduce_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const reduce_params *p = (const reduce_params *)n->params.bytes;
  int rc;
  if (p->kind == R_MEAN || p->kind >= R_SUMSQ) {
    if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_UNDEFINED))) return rc;
  } else if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT64, HS_DT_UNDEFINED))) {
    return rc;
  }
  int mask[HS_MAX_DIMS], noop;
  if ((rc = reduce_mask(n, in, nin, mask, &noop, err))) return rc;
  int64_t dims[HS_MAX_DIMS];
  int r = 0;
  for (int i = 0; i < in[0].ndim; i++) {
    if (!mask[i] || noop) dims[r++] = in[0].dims[i];
    else if (p->keepdims) dims[r++] = 1;
    else if (in[0].dims[i] == 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "reducing an empty axis");
  }
  for (int i = 0; i < in[0].ndim; i++)
    if (mask[i] && !noop && in[0].dims[i] == 0 && (p->kind == R_MAX || p->kind == R_MIN))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "max/min over an empty axis");
  return hs_set_shape(&out[0], in[0].dtype, r, dims, n, err);
}

/* ---- oneDNN path ---- */

/* Below this many input elements plain C is about as fast as the reduction primitive, whose run
 * costs ~12 us whatever the size. Measured with `hotserve run --repeat 200 --threads 2` (2 shared
 * cores, AVX2), ReduceMean over the last axis, plain C vs kernel: [64, 64] 16 vs 13 us, [256, 64]
 * 67 vs 18 us, [1024, 256] 1175 vs 67 us. */
#define KERNEL_MIN_ELEMS 4096

static int build_reduce(void *ctx, hs_kernel **out, hs_error *err) {
  return hs_kernel_reduce_create(ctx, out, err);
}

/* The kernel reducing x over mask (reduce_mask's), or NULL for plain C. */
static hs_kernel *reduce_kernel(const hs_node *n, const hs_tensor *x, const int *mask, hs_error *strict_err) {
  const reduce_params *p = (const reduce_params *)n->params.bytes;
  static const int kinds[] = {[R_SUM] = HS_REDUCE_SUM, [R_MEAN] = HS_REDUCE_MEAN, [R_MAX] = HS_REDUCE_MAX,
                              [R_MIN] = HS_REDUCE_MIN, [R_PROD] = HS_REDUCE_PROD};
  int64_t total = hs_numel(x);
  if (!n->state || x->dtype != HS_DT_FLOAT32 || p->kind > R_PROD || x->ndim < 1 || total == 0) return NULL;
  if (total < KERNEL_MIN_ELEMS && !hs_ops_strict()) return NULL;
  hs_reduce_params rp = {.device = HS_KDEV_CPU, .kind = (hs_reduce_kind)kinds[p->kind], .ndim = x->ndim};
  int64_t key[2 + HS_MAX_DIMS];
  int nkey = 0;
  key[nkey++] = x->ndim;
  for (int i = 0; i < x->ndim; i++) {
    key[nkey++] = rp.dims[i] = x->dims[i];
    if (mask[i] && x->dims[i] > 1) rp.axes_mask |= 1u << i;
  }
  /* reduced axes of size 1 change nothing and stay off the mask; with none left the result is a copy */
  if (rp.axes_mask == 0) return NULL;
  key[nkey++] = rp.axes_mask;
  return hs_op_kernel(n, hs_op_cache(n), key, nkey, build_reduce, &rp, 0, strict_err);
}

static int reduce_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  const reduce_params *p = (const reduce_params *)n->params.bytes;
  return p->kind <= R_PROD ? hs_op_attach_cache(n, err) : 0;
}

static size_t reduce_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  int mask[HS_MAX_DIMS], noop;
  hs_error e;
  if (reduce_mask(n, in, nin, mask, &noop, &e) || noop) return 0;
  return hs_op_kernel_scratch(reduce_kernel(n, &in[0], mask, NULL), 0);
}

#define REDUCE_LOOP(T, INIT, ACC)                                                \
  do {                                                                           \
    T *o = out[0].data;                                                          \
    const T *x = in[0].data;                                                     \
    for (int64_t i = 0; i < on; i++) o[i] = (INIT);                              \
    int64_t idx[HS_MAX_DIMS] = {0}, off = 0;                                     \
    for (int64_t i = 0; i < total; i++) {                                        \
      T v = x[i];                                                                \
      T *a = &o[off];                                                            \
      ACC;                                                                       \
      for (int d = r - 1; d >= 0; d--) {                                         \
        off += ostr[d];                                                          \
        if (++idx[d] < in[0].dims[d]) break;                                     \
        off -= ostr[d] * in[0].dims[d];                                          \
        idx[d] = 0;                                                              \
      }                                                                          \
    }                                                                            \
  } while (0)

static int reduce_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  const reduce_params *p = (const reduce_params *)n->params.bytes;
  int mask[HS_MAX_DIMS], noop, rc;
  if ((rc = reduce_mask(n, in, nin, mask, &noop, err))) return rc;
  if (noop) {
    if (out[0].nbytes) hs_memcpy(out[0].data, in[0].data, out[0].nbytes);
    return 0;
  }
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = reduce_kernel(n, &in[0], mask, &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) {
    const void *src[1] = {in[0].data};
    hs_kernel_args args = {.src = src, .nsrc = 1, .dst = out[0].data, .scratch = scratch};
    return hs_op_run_kernel(n, k, &args, err);
  }
  int r = in[0].ndim;
  int64_t ostr[HS_MAX_DIMS], acc = 1, cnt = 1;
  for (int d = r - 1; d >= 0; d--) {
    ostr[d] = mask[d] ? 0 : acc;
    if (!mask[d]) acc *= in[0].dims[d];
    else cnt *= in[0].dims[d];
  }
  int64_t total = hs_numel(&in[0]), on = hs_numel(&out[0]);
  if (in[0].dtype == HS_DT_INT64) {
    switch (p->kind) {
      case R_SUM: REDUCE_LOOP(int64_t, 0, *a += v); break;
      case R_MAX: REDUCE_LOOP(int64_t, INT64_MIN, if (v > *a) *a = v); break;
      case R_MIN: REDUCE_LOOP(int64_t, INT64_MAX, if (v < *a) *a = v); break;
      default: REDUCE_LOOP(int64_t, 1, *a *= v); break;
    }
    return 0;
  }
  if (in[0].dtype == HS_DT_FLOAT64) { /* float64: plain C, computed as the float32 loops below */
    switch (p->kind) {
      case R_MAX: REDUCE_LOOP(double, -INFINITY, if (v > *a) *a = v); break;
      case R_MIN: REDUCE_LOOP(double, INFINITY, if (v < *a) *a = v); break;
      case R_PROD: REDUCE_LOOP(double, 1.0, *a *= v); break;
      case R_L1: REDUCE_LOOP(double, 0.0, *a += fabs(v)); break;
      case R_LOGSUMEXP: REDUCE_LOOP(double, 0.0, *a += exp(v)); break;
      case R_SUMSQ: case R_L2: REDUCE_LOOP(double, 0.0, *a += v * v); break;
      default: REDUCE_LOOP(double, 0.0, *a += v); break;
    }
    double *o = out[0].data;
    for (int64_t i = 0; i < on; i++) {
      if (p->kind == R_MEAN && cnt > 0) o[i] /= (double)cnt;
      if (p->kind == R_L2) o[i] = sqrt(o[i]);
      if (p->kind == R_LOGSUM || p->kind == R_LOGSUMEXP) o[i] = log(o[i]);
    }
    return 0;
  }
  switch (p->kind) {
    case R_SUM:
    case R_MEAN: REDUCE_LOOP(float, 0.0f, *a += v); break;
    case R_MAX: REDUCE_LOOP(float, -INFINITY, if (v > *a) *a = v); break;
    case R_MIN: REDUCE_LOOP(float, INFINITY, if (v < *a) *a = v); break;
    case R_PROD: REDUCE_LOOP(float, 1.0f, *a *= v); break;
    case R_L1: REDUCE_LOOP(float, 0.0f, *a += fabsf(v)); break;
    case R_LOGSUM: REDUCE_LOOP(float, 0.0f, *a += v); break;
    case R_LOGSUMEXP: REDUCE_LOOP(float, 0.0f, *a += expf(v)); break; /* overflows past exp(88) */
    default: REDUCE_LOOP(float, 0.0f, *a += v * v); break;
  }
  float *o = out[0].data;
  if (p->kind == R_MEAN && cnt > 0)
    for (int64_t i = 0; i < on; i++) o[i] /= (float)cnt;
  if (p->kind == R_L2)
    for (int64_t i = 0; i < on; i++) o[i] = sqrtf(o[i]);
  if (p->kind == R_LOGSUM || p->kind == R_LOGSUMEXP)
    for (int64_t i = 0; i < on; i++) o[i] = logf(o[i]);
  return 0;
}

const hs_op_impl hs_op_impl_reduce = {
    .check = reduce_check,
    .infer = reduce_infer,
    .prepare = reduce_prepare,
    .scratch_bytes = reduce_scratch,
    .run = reduce_run,
};

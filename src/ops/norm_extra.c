/* norm_extra.c - GroupNormalization (opsets 18 and 21), LRN and MeanVarianceNormalization, in plain C (norm.c
 * holds the oneDNN-backed norms). */

/*
 * DESIGN
 * GroupNormalization normalises each (batch, group) over its C / num_groups channels and the
 * spatial dimensions, statistics in double; opset 18 gives scale and bias per group, opset 21 per
 * channel (ONNX changed the meaning; both are honoured by the node's opset). LRN sums squares over
 * a window of channels as the spec's formula, x / (bias + alpha / size * sum) ^ beta.
 * MeanVarianceNormalization is its ONNX function: (x - mean) / (sqrt(variance) + 1e-9) over `axes`.
 */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

typedef struct {
  float eps, alpha, beta, bias;
  int64_t groups, size;
  int mvn_mask; /* MeanVarianceNormalization: bit per reduced axis (negative axes resolved at infer) */
  int n_axes;
  int64_t axes[HS_MAX_DIMS];
} gn_params;

static int gn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  gn_params *p = (gn_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t stash;
  int rc = hs_node_only_attrs(n, n->opset >= 21 ? "epsilon,num_groups,stash_type" : "epsilon,num_groups", err);
  if (rc || (rc = hs_attr_float(n, "epsilon", 1e-5f, &p->eps, err)) ||
      (rc = hs_attr_int(n, "num_groups", 0, &p->groups, err)) || (rc = hs_attr_int(n, "stash_type", 1, &stash, err)))
    return rc;
  if (p->groups < 1) return hs_op_errf(err, n, HS_PARSE, "num_groups is required (>= 1)");
  if (stash != 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "stash_type %lld is not supported", (long long)stash);
  return 0;
}

static int gn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  const gn_params *p = (const gn_params *)n->params.bytes;
  int rc = hs_need_dtype(n, &in[0], "X", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  if (in[0].ndim < 2 || in[0].dims[1] % p->groups)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "X must be [N, C, ...] with C divisible by num_groups");
  int64_t want = n->opset >= 21 ? in[0].dims[1] : p->groups;
  for (int i = 1; i < 3; i++)
    if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim != 1 || in[i].dims[0] != want)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale and bias must be float32 [%lld] (opset %d)",
                        (long long)want, n->opset);
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

static int gn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  (void)nin, (void)nout, (void)scratch, (void)err;
  const gn_params *p = (const gn_params *)n->params.bytes;
  const float *x = in[0].data, *scale = in[1].data, *bias = in[2].data;
  float *y = out[0].data;
  const int64_t N = in[0].dims[0], C = in[0].dims[1], G = p->groups, cpg = C / G;
  const int64_t sp = N * C != 0 ? hs_numel(&in[0]) / (N * C) : 0, len = cpg * sp;
  for (int64_t b = 0; b < N; b++)
    for (int64_t g = 0; g < G; g++) {
      const float *xg = x + (b * C + g * cpg) * sp;
      float *yg = y + (b * C + g * cpg) * sp;
      double s = 0, ss = 0;
      for (int64_t i = 0; i < len; i++) s += xg[i];
      double mean = len ? s / (double)len : 0;
      for (int64_t i = 0; i < len; i++) ss += (xg[i] - mean) * (xg[i] - mean);
      double inv = 1.0 / sqrt((len ? ss / (double)len : 0) + p->eps);
      for (int64_t c = 0; c < cpg; c++) {
        int64_t k = n->opset >= 21 ? g * cpg + c : g;
        for (int64_t i = 0; i < sp; i++)
          yg[c * sp + i] = (float)((xg[c * sp + i] - mean) * inv * scale[k] + bias[k]);
      }
    }
  return 0;
}

static int lrn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  gn_params *p = (gn_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "alpha,beta,bias,size", err);
  if (rc || (rc = hs_attr_float(n, "alpha", 1e-4f, &p->alpha, err)) || (rc = hs_attr_float(n, "beta", 0.75f, &p->beta, err)) ||
      (rc = hs_attr_float(n, "bias", 1.0f, &p->bias, err)) || (rc = hs_attr_int(n, "size", 0, &p->size, err)))
    return rc;
  if (p->size < 1) return hs_op_errf(err, n, HS_PARSE, "size is required (>= 1)");
  return 0;
}

static int lrn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int rc = hs_need_dtype(n, &in[0], "X", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  if (in[0].ndim < 3) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "X must be [N, C, D1, ...]");
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

static int lrn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)nin, (void)nout, (void)scratch, (void)err;
  const gn_params *p = (const gn_params *)n->params.bytes;
  const float *x = in[0].data;
  float *y = out[0].data;
  const int64_t N = in[0].dims[0], C = in[0].dims[1], sp = N * C != 0 ? hs_numel(&in[0]) / (N * C) : 0;
  const int64_t lo = (p->size - 1) / 2, hi = p->size - 1 - lo; /* floor / ceil of (size - 1) / 2 */
  for (int64_t b = 0; b < N; b++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < sp; i++) {
        double s = 0;
        for (int64_t k = c - lo < 0 ? 0 : c - lo; k <= c + hi && k < C; k++) {
          double v = x[(b * C + k) * sp + i];
          s += v * v;
        }
        int64_t at = (b * C + c) * sp + i;
        y[at] = (float)(x[at] / pow(p->bias + p->alpha / (double)p->size * s, p->beta));
      }
  return 0;
}

static int mvn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  gn_params *p = (gn_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  const int64_t *axes;
  size_t na;
  int rc = hs_node_only_attrs(n, "axes", err);
  if (rc || (rc = hs_attr_ints(n, "axes", &axes, &na, err))) return rc;
  static const int64_t def[] = {0, 2, 3};
  if (!axes) axes = def, na = 3;
  if (na > HS_MAX_DIMS) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "too many axes");
  p->n_axes = (int)na;
  memcpy(p->axes, axes, na * sizeof *axes);
  return 0;
}

static int mvn_mask(const hs_node *n, const hs_tensor *x, int *mask, hs_error *err) {
  const gn_params *p = (const gn_params *)n->params.bytes;
  *mask = 0;
  for (int i = 0; i < p->n_axes; i++) {
    int a, rc = hs_norm_axis(p->axes[i], x->ndim, &a, n, err);
    if (rc) return rc;
    *mask |= 1 << a;
  }
  return 0;
}

static int mvn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int mask, rc = hs_need_dtype(n, &in[0], "X", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc || (rc = mvn_mask(n, &in[0], &mask, err))) return rc;
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

static size_t mvn_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)n, (void)nin, (void)out, (void)nout;
  return 2 * sizeof(double) * (size_t)(hs_numel(&in[0]) + 1);
}

static int mvn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)nin, (void)nout;
  int mask, rc = mvn_mask(n, &in[0], &mask, err);
  if (rc) return rc;
  const hs_tensor *x = &in[0];
  const int r = x->ndim;
  const int64_t total = hs_numel(x);
  /* group of element i: its index with the reduced axes dropped; per group sum and sum of squares */
  int64_t groups = 1, count = 1;
  for (int a = 0; a < r; a++) *(mask >> a & 1 ? &count : &groups) *= x->dims[a];
  double *s = scratch, *ss = s + groups;
  memset(scratch, 0, 2 * sizeof(double) * (size_t)groups);
  const float *xv = x->data;
  float *y = out[0].data;
  for (int pass = 0; pass < 2; pass++) {
    int64_t idx[HS_MAX_DIMS] = {0};
    for (int64_t i = 0; i < total; i++) {
      int64_t gidx = 0;
      for (int a = 0; a < r; a++)
        if (!(mask >> a & 1)) gidx = gidx * x->dims[a] + idx[a];
      if (pass == 0) {
        s[gidx] += xv[i], ss[gidx] += (double)xv[i] * xv[i];
      } else {
        double mean = s[gidx] / (double)count, var = ss[gidx] / (double)count - mean * mean;
        y[i] = (float)((xv[i] - mean) / (sqrt(var > 0 ? var : 0) + 1e-9));
      }
      for (int a = r - 1; a >= 0; a--) {
        if (++idx[a] < x->dims[a]) break;
        idx[a] = 0;
      }
    }
  }
  return 0;
}

const hs_op_impl hs_op_impl_mvn = {
    .check = mvn_check,
    .infer = mvn_infer,
    .scratch_bytes = mvn_scratch,
    .run = mvn_run,
};
const hs_op_impl hs_op_impl_group_norm = {
    .check = gn_check,
    .infer = gn_infer,
    .run = gn_run,
};
const hs_op_impl hs_op_impl_lrn = {
    .check = lrn_check,
    .infer = lrn_infer,
    .run = lrn_run,
};

/* norm.c - BatchNormalization (inference), LayerNormalization, InstanceNormalization, Softmax and
 * LogSoftmax (opset < 13: 2-D coercion at axis; from 13: one axis): plain-C reference kernels. */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

/* ---- BatchNormalization ----------------------------------------------------------------------- */

typedef struct {
  float eps;
} bn_params;

static int bn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  bn_params *p = (bn_params *)n->params.bytes;
  int rc = hs_node_only_attrs(n, n->opset < 9 ? "epsilon,momentum,spatial,is_test" : "epsilon,momentum,training_mode", err);
  int64_t training, spatial, is_test;
  if (rc || (rc = hs_attr_float(n, "epsilon", 1e-5f, &p->eps, err)) ||
      (rc = hs_attr_int(n, "training_mode", 0, &training, err)) || (rc = hs_attr_int(n, "spatial", 1, &spatial, err)) ||
      (rc = hs_attr_int(n, "is_test", 1, &is_test, err)))
    return rc;
  if (training) return hs_op_errf(err, n, HS_UNSUPPORTED, "training_mode is not supported (opset %d)", n->opset);
  if (!spatial) return hs_op_errf(err, n, HS_UNSUPPORTED, "spatial=0 is not supported (opset %d)", n->opset);
  int nout = n->n_out;
  while (nout > 0 && n->out[nout - 1] < 0) nout--;
  if (nout > 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "training outputs (mean/var) are not supported");
  return 0;
}

static int bn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  if (in[0].ndim < 2) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input rank must be >= 2");
  for (int i = 1; i < 5; i++)
    if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim != 1 || in[i].dims[0] != in[0].dims[1])
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input %d must be float32 [%lld]", i, (long long)in[0].dims[1]);
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

static int bn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  const bn_params *p = (const bn_params *)n->params.bytes;
  const float *x = in[0].data, *sc = in[1].data, *b = in[2].data, *mean = in[3].data, *var = in[4].data;
  float *y = out[0].data;
  int64_t N = in[0].dims[0], C = in[0].dims[1], sp = 1;
  for (int i = 2; i < in[0].ndim; i++) sp *= in[0].dims[i];
  for (int64_t c = 0; c < C; c++) {
    float k = sc[c] / sqrtf(var[c] + p->eps), off = b[c] - mean[c] * k;
    for (int64_t bi = 0; bi < N; bi++) {
      const float *xc = x + (bi * C + c) * sp;
      float *yc = y + (bi * C + c) * sp;
      for (int64_t i = 0; i < sp; i++) yc[i] = xc[i] * k + off;
    }
  }
  return 0;
}

/* ---- LayerNormalization / InstanceNormalization ----------------------------------------------- */

typedef struct {
  int64_t axis;
  float eps;
  int instance;
} ln_params;

static int ln_check(hs_node *n, const hs_graph *g, hs_error *err) {
  ln_params *p = (ln_params *)n->params.bytes;
  p->instance = strcmp(n->op_type, "InstanceNormalization") == 0;
  int rc = hs_node_only_attrs(n, p->instance ? "epsilon" : "axis,epsilon,stash_type", err);
  int64_t stash;
  if (rc || (rc = hs_attr_int(n, "axis", -1, &p->axis, err)) || (rc = hs_attr_float(n, "epsilon", 1e-5f, &p->eps, err)) ||
      (rc = hs_attr_int(n, "stash_type", 1, &stash, err)))
    return rc;
  if (stash != 1) return hs_op_errf(err, n, HS_UNSUPPORTED, "stash_type %lld is not supported", (long long)stash);
  return 0;
}

static int ln_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const ln_params *p = (const ln_params *)n->params.bytes;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED), a;
  if (rc) return rc;
  int r = in[0].ndim;
  if (p->instance) {
    if (r < 3) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input rank must be >= 3");
    for (int i = 1; i < 3; i++)
      if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim != 1 || in[i].dims[0] != in[0].dims[1])
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale and B must be float32 [C]");
    return hs_set_shape(&out[0], HS_DT_FLOAT32, r, in[0].dims, n, err);
  }
  if ((rc = hs_norm_axis(p->axis, r, &a, n, err))) return rc;
  /* scale and bias broadcast to the normalized dims [a..r) */
  for (int i = 1; i < nin && i < 3; i++) {
    if (!HS_PRESENT(&in[i])) continue;
    if (in[i].dtype != HS_DT_FLOAT32 || in[i].ndim > r - a)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale/bias must be float32 over the normalized axes");
    for (int k = 0; k < in[i].ndim; k++) {
      int64_t want = in[0].dims[r - in[i].ndim + k];
      if (in[i].dims[k] != want && in[i].dims[k] != 1)
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "scale/bias shape does not match the normalized axes");
    }
  }
  if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, r, in[0].dims, n, err))) return rc;
  int64_t d[HS_MAX_DIMS];
  for (int i = 0; i < r; i++) d[i] = i < a ? in[0].dims[i] : 1;
  for (int k = 1; k < nout && k < 3; k++)
    if ((rc = hs_set_shape(&out[k], HS_DT_FLOAT32, r, d, n, err))) return rc;
  return 0;
}

/* Value of a scale/bias tensor (broadcast to the inner block of `inner` elements) at position j. */
static float inner_at(const hs_tensor *t, const int64_t *xdims, int r, int64_t j) {
  if (t->ndim == 0) return *(const float *)t->data;
  int64_t off = 0, mul = 1;
  for (int k = t->ndim - 1; k >= 0; k--) {
    int64_t xd = xdims[r - t->ndim + k], idx = j % xd;
    j /= xd;
    if (t->dims[k] != 1) off += idx * mul;
    mul *= t->dims[k];
  }
  return ((const float *)t->data)[off];
}

static int ln_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  const ln_params *p = (const ln_params *)n->params.bytes;
  int r = in[0].ndim, a = 2;
  if (!p->instance) hs_norm_axis(p->axis, r, &a, n, err);
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < a; i++) outer *= in[0].dims[i];
  for (int i = a; i < r; i++) inner *= in[0].dims[i];
  const float *x = in[0].data;
  float *y = out[0].data;
  const hs_tensor *sc = nin > 1 && HS_PRESENT(&in[1]) ? &in[1] : NULL, *b = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  /* a dense scale/bias covering the whole inner block is indexed directly */
  int sc_dense = sc && hs_numel(sc) == inner, b_dense = b && hs_numel(b) == inner;
  for (int64_t o = 0; o < outer; o++) {
    const float *xo = x + o * inner;
    float *yo = y + o * inner;
    double s = 0, ss = 0;
    for (int64_t j = 0; j < inner; j++) s += xo[j];
    double mean = inner ? s / (double)inner : 0;
    for (int64_t j = 0; j < inner; j++) {
      double dlt = xo[j] - mean;
      ss += dlt * dlt;
    }
    double var = inner ? ss / (double)inner : 0;
    float inv = (float)(1.0 / sqrt(var + p->eps)), m = (float)mean;
    if (p->instance) {
      int64_t c = o % in[0].dims[1];
      float k = ((const float *)in[1].data)[c] * inv, off = ((const float *)in[2].data)[c];
      for (int64_t j = 0; j < inner; j++) yo[j] = (xo[j] - m) * k + off;
      continue;
    }
    for (int64_t j = 0; j < inner; j++) {
      float v = (xo[j] - m) * inv;
      if (sc) v *= sc_dense ? ((const float *)sc->data)[j] : inner_at(sc, in[0].dims, r, j);
      if (b) v += b_dense ? ((const float *)b->data)[j] : inner_at(b, in[0].dims, r, j);
      yo[j] = v;
    }
    if (nout > 1 && out[1].data) ((float *)out[1].data)[o] = m;
    if (nout > 2 && out[2].data) ((float *)out[2].data)[o] = inv;
  }
  return 0;
}

/* ---- Softmax / LogSoftmax --------------------------------------------------------------------- */

typedef struct {
  int64_t axis;
  int log;
} sm_params;

static int sm_check(hs_node *n, const hs_graph *g, hs_error *err) {
  sm_params *p = (sm_params *)n->params.bytes;
  p->log = strcmp(n->op_type, "LogSoftmax") == 0;
  int rc = hs_node_only_attrs(n, "axis", err);
  return rc ? rc : hs_attr_int(n, "axis", n->opset >= 13 ? -1 : 1, &p->axis, err);
}

static int sm_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const sm_params *p = (const sm_params *)n->params.bytes;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED), a;
  if (rc) return rc;
  if (n->opset < 13 ? (p->axis < -in[0].ndim || p->axis > in[0].ndim) : 0)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  if (n->opset >= 13 && (rc = hs_norm_axis(p->axis, in[0].ndim, &a, n, err))) return rc;
  return hs_set_shape(&out[0], HS_DT_FLOAT32, in[0].ndim, in[0].dims, n, err);
}

static int sm_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  const sm_params *p = (const sm_params *)n->params.bytes;
  int r = in[0].ndim;
  int64_t a = p->axis < 0 ? p->axis + r : p->axis;
  int64_t outer = 1, len = 1, inner = 1;
  if (n->opset < 13) { /* coerced to 2-D: [prod(dims[:a]), prod(dims[a:])] */
    for (int i = 0; i < a; i++) outer *= in[0].dims[i];
    for (int i = (int)a; i < r; i++) len *= in[0].dims[i];
  } else {
    for (int i = 0; i < a; i++) outer *= in[0].dims[i];
    len = in[0].dims[a];
    for (int i = (int)a + 1; i < r; i++) inner *= in[0].dims[i];
  }
  const float *x = in[0].data;
  float *y = out[0].data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *xv = x + o * len * inner + i;
      float *yv = y + o * len * inner + i;
      float m = -INFINITY;
      for (int64_t k = 0; k < len; k++) m = xv[k * inner] > m ? xv[k * inner] : m;
      double s = 0;
      for (int64_t k = 0; k < len; k++) {
        float e = expf(xv[k * inner] - m);
        if (!p->log) yv[k * inner] = e;
        s += e;
      }
      if (p->log) {
        float ls = (float)log(s);
        for (int64_t k = 0; k < len; k++) yv[k * inner] = xv[k * inner] - m - ls;
      } else {
        float inv = (float)(1.0 / s);
        for (int64_t k = 0; k < len; k++) yv[k * inner] *= inv;
      }
    }
  return 0;
}

const hs_op_def hs_ops_norm[] = {
    {"BatchNormalization", 6, 5, 5, 1, 5, 0, 0, bn_check, bn_infer, NULL, NULL, bn_run},
    {"LayerNormalization", 17, 2, 3, 1, 3, 0, 0, ln_check, ln_infer, NULL, NULL, ln_run},
    {"InstanceNormalization", 6, 3, 3, 1, 1, 0, 0, ln_check, ln_infer, NULL, NULL, ln_run},
    {"Softmax", 1, 1, 1, 1, 1, 0, 0, sm_check, sm_infer, NULL, NULL, sm_run},
    {"LogSoftmax", 1, 1, 1, 1, 1, 0, 0, sm_check, sm_infer, NULL, NULL, sm_run},
    {NULL},
};

/* shape.c - Reshape, Flatten, Squeeze, Unsqueeze: the input's bytes under a new shape (aliased by the planner). */
#include <string.h>

#include "ops/ops.h"

static int copy_input0(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                       hs_error *err) {
  if (out[0].nbytes && out[0].data != in[0].data) hs_memcpy(out[0].data, in[0].data, out[0].nbytes);
  return 0;
}

/* ---- Reshape ---------------------------------------------------------------------------------- */

static int reshape_check(hs_node *n, const hs_graph *g, hs_error *err) {
  int64_t allowzero;
  int rc = hs_node_only_attrs(n, "allowzero", err);
  if (rc || (rc = hs_attr_int(n, "allowzero", 0, &allowzero, err))) return rc;
  n->params.bytes[0] = allowzero != 0;
  return 0;
}

static int reshape_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc, r;
  int64_t d[HS_MAX_DIMS];
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = hs_read_ints(n, &in[1], "shape", d, HS_MAX_DIMS, &r, err))) return rc;
  int infer_at = -1;
  int64_t known = 1, total = hs_numel(&in[0]);
  for (int i = 0; i < r; i++) {
    if (d[i] == 0 && !n->params.bytes[0]) {
      if (i >= in[0].ndim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "0 in the shape refers past the input rank");
      d[i] = in[0].dims[i];
    }
    if (d[i] == -1) {
      if (infer_at >= 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "more than one -1 in the shape");
      infer_at = i;
    } else if (d[i] < 0) {
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "negative dimension %lld in the shape", (long long)d[i]);
    } else {
      if (d[i] && known > INT64_MAX / d[i]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "shape overflows");
      known *= d[i];
    }
  }
  if (infer_at >= 0) {
    if (known == 0 || total % known) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "cannot infer the -1 dimension");
    d[infer_at] = total / known;
  } else if (known != total) {
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "shape holds %lld elements, the input %lld", (long long)known,
                      (long long)total);
  }
  return hs_set_shape(&out[0], in[0].dtype, r, d, n, err);
}

/* ---- Flatten ---------------------------------------------------------------------------------- */

static int flatten_check(hs_node *n, const hs_graph *g, hs_error *err) {
  int rc = hs_node_only_attrs(n, "axis", err);
  if (rc) return rc;
  return hs_attr_int(n, "axis", 1, (int64_t *)n->params.bytes, err);
}

static int flatten_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t axis = *(const int64_t *)n->params.bytes;
  int r = in[0].ndim, rc;
  if ((rc = hs_known_dtype(n, &in[0], err))) return rc;
  if (axis < -r || axis > r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  if (axis < 0) axis += r;
  int64_t d[2] = {1, 1};
  for (int i = 0; i < r; i++) d[i < axis ? 0 : 1] *= in[0].dims[i];
  return hs_set_shape(&out[0], in[0].dtype, 2, d, n, err);
}

/* ---- Squeeze / Unsqueeze ---------------------------------------------------------------------- */

typedef struct {
  int from_input;
  int n_axes;
  int64_t axes[HS_MAX_DIMS];
} axes_params;

static int axes_check(hs_node *n, const hs_graph *g, hs_error *err) {
  axes_params *p = (axes_params *)n->params.bytes;
  p->from_input = n->opset >= 13;
  int rc = hs_node_only_attrs(n, p->from_input ? "" : "axes", err);
  if (rc) return rc;
  const int64_t *a;
  size_t c;
  if ((rc = hs_attr_ints(n, "axes", &a, &c, err))) return rc;
  if (c > HS_MAX_DIMS) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "too many axes");
  p->n_axes = (int)c;
  hs_memcpy(p->axes, a, c * sizeof *a);
  if (!p->from_input && n->n_in > 1) return hs_op_errf(err, n, HS_PARSE, "axes input needs opset 13");
  if (!p->from_input && n->op == HS_OP_Unsqueeze && c == 0)
    return hs_op_errf(err, n, HS_PARSE, "axes attribute is required");
  return 0;
}

static int get_axes(const hs_node *n, const hs_tensor *in, int nin, int64_t *ax, int *count, hs_error *err) {
  const axes_params *p = (const axes_params *)n->params.bytes;
  if (p->from_input) {
    if (nin > 1 && HS_PRESENT(&in[1])) return hs_read_ints(n, &in[1], "axes", ax, HS_MAX_DIMS, count, err);
    *count = 0;
    return 0;
  }
  *count = p->n_axes;
  hs_memcpy(ax, p->axes, sizeof(int64_t) * (size_t)p->n_axes);
  return 0;
}

static int squeeze_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t ax[HS_MAX_DIMS], d[HS_MAX_DIMS];
  int c, rc, r = in[0].ndim, drop[HS_MAX_DIMS] = {0};
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = get_axes(n, in, nin, ax, &c, err))) return rc;
  for (int i = 0; i < c; i++) {
    int a;
    if ((rc = hs_norm_axis(ax[i], r, &a, n, err))) return rc;
    if (in[0].dims[a] != 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis %d has size %lld, not 1", a, (long long)in[0].dims[a]);
    drop[a] = 1;
  }
  int k = 0;
  for (int i = 0; i < r; i++)
    if (!(c ? drop[i] : in[0].dims[i] == 1)) d[k++] = in[0].dims[i];
  return hs_set_shape(&out[0], in[0].dtype, k, d, n, err);
}

static int unsqueeze_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int64_t ax[HS_MAX_DIMS], d[HS_MAX_DIMS];
  int c, rc, add[HS_MAX_DIMS] = {0};
  if ((rc = hs_known_dtype(n, &in[0], err)) || (rc = get_axes(n, in, nin, ax, &c, err))) return rc;
  int r = in[0].ndim + c;
  if (c == 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "no axes");
  if (r > HS_MAX_DIMS) return hs_op_errf(err, n, HS_UNSUPPORTED, "rank %d is over %d", r, HS_MAX_DIMS);
  for (int i = 0; i < c; i++) {
    int a;
    if ((rc = hs_norm_axis(ax[i], r, &a, n, err))) return rc;
    if (add[a]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis %d repeated", a);
    add[a] = 1;
  }
  for (int i = 0, k = 0; i < r; i++) d[i] = add[i] ? 1 : in[0].dims[k++];
  return hs_set_shape(&out[0], in[0].dtype, r, d, n, err);
}

const hs_op_impl hs_op_impl_reshape = {
    .check = reshape_check,
    .infer = reshape_infer,
    .run = copy_input0,
};
const hs_op_impl hs_op_impl_flatten = {
    .check = flatten_check,
    .infer = flatten_infer,
    .run = copy_input0,
};
const hs_op_impl hs_op_impl_squeeze = {
    .check = axes_check,
    .infer = squeeze_infer,
    .run = copy_input0,
};
const hs_op_impl hs_op_impl_unsqueeze = {
    .check = axes_check,
    .infer = unsqueeze_infer,
    .run = copy_input0,
};

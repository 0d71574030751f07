/* movement.c - data-movement ops: DepthToSpace, SpaceToDepth, GatherND, ScatterND, OneHot, EyeLike, Compress,
 * ReverseSequence, MaxUnpool. */

/*
 * DESIGN
 * Plain C that moves elements by their byte size, so any element type works; values are read as
 * double only where they are arithmetic (ScatterND's reductions, OneHot's values, conditions).
 * Compress's output length depends on its condition's contents, and OneHot's depth input decides
 * its output shape: those inputs must be known when a session plans (value_inputs), as for
 * Reshape's shape.
 */
#include <string.h>

#include "ops/ops.h"

typedef struct {
  int64_t a, b; /* blocksize / axis / batch_dims / k / batch_axis, ... */
  int64_t c, dtype;
  int flag;
} mv_params;

static int any_type(const hs_node *n, const hs_tensor *t, hs_error *err) {
  if (hs_dtype_size(t->dtype) == 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "input type is not supported");
  return 0;
}

/* ---- DepthToSpace / SpaceToDepth -------------------------------------------------------------- */

static int d2s_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  mv_params *p = (mv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int d2s = n->op == HS_OP_DepthToSpace;
  const char *mode;
  int rc = hs_node_only_attrs(n, d2s && n->opset >= 11 ? "blocksize,mode" : "blocksize", err);
  if (rc || (rc = hs_attr_int(n, "blocksize", 0, &p->a, err)) || (rc = hs_attr_string(n, "mode", "DCR", &mode, err)))
    return rc;
  if (p->a < 1 || p->a > 65536) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "blocksize must be >= 1");
  if (strcmp(mode, "DCR") && strcmp(mode, "CRD")) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "mode '%s'", mode);
  p->flag = strcmp(mode, "CRD") == 0;
  p->c = d2s;
  return 0;
}

static int d2s_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  const mv_params *p = (const mv_params *)n->params.bytes;
  int rc = any_type(n, &in[0], err);
  if (rc) return rc;
  if (in[0].ndim != 4) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input must be 4-D");
  int64_t b = p->a, d[4] = {in[0].dims[0], 0, 0, 0};
  if (p->c) {
    if (in[0].dims[1] % (b * b)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "channels not divisible by blocksize^2");
    d[1] = in[0].dims[1] / (b * b), d[2] = in[0].dims[2] * b, d[3] = in[0].dims[3] * b;
  } else {
    if (in[0].dims[2] % b || in[0].dims[3] % b)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "height / width not divisible by blocksize");
    d[1] = in[0].dims[1] * b * b, d[2] = in[0].dims[2] / b, d[3] = in[0].dims[3] / b;
  }
  return hs_set_shape(&out[0], in[0].dtype, 4, d, n, err);
}

static int d2s_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)nin, (void)nout, (void)scratch, (void)err;
  const mv_params *p = (const mv_params *)n->params.bytes;
  const int64_t b = p->a;
  const hs_tensor *big = p->c ? &out[0] : &in[0], *small = p->c ? &in[0] : &out[0]; /* small: [N, C*b*b, H, W] */
  const int64_t N = big->dims[0], C = big->dims[1], H = small->dims[2], W = small->dims[3];
  size_t esz = hs_dtype_size(in[0].dtype);
  for (int64_t nn = 0; nn < N; nn++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < b; i++)
          for (int64_t w = 0; w < W; w++)
            for (int64_t j = 0; j < b; j++) {
              /* DCR (and SpaceToDepth): small channel (i*b+j)*C+c; CRD: c*b*b + i*b + j */
              int64_t sc = p->flag ? c * b * b + i * b + j : (i * b + j) * C + c;
              int64_t so = ((nn * C * b * b + sc) * H + h) * W + w;
              int64_t bo = ((nn * C + c) * H * b + h * b + i) * W * b + w * b + j;
              const char *src = p->c ? (const char *)small->data + so * (int64_t)esz : (const char *)big->data + bo * (int64_t)esz;
              char *dst = p->c ? (char *)out[0].data + bo * (int64_t)esz : (char *)out[0].data + so * (int64_t)esz;
              memcpy(dst, src, esz);
            }
  return 0;
}

/* ---- GatherND / ScatterND --------------------------------------------------------------------- */

static int nd_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  mv_params *p = (mv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int scatter = n->op == HS_OP_ScatterND;
  const char *red;
  int rc = hs_node_only_attrs(n, scatter ? (n->opset >= 16 ? "reduction" : "") : n->opset >= 12 ? "batch_dims" : "", err);
  if (rc || (rc = hs_attr_int(n, "batch_dims", 0, &p->a, err)) || (rc = hs_attr_string(n, "reduction", "none", &red, err)))
    return rc;
  static const char *const names[] = {"none", "add", "mul", "max", "min"};
  p->b = -1;
  for (int i = 0; i < (n->opset >= 18 ? 5 : 3); i++)
    if (strcmp(red, names[i]) == 0) p->b = i;
  if (p->b < 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "reduction '%s' (opset %d)", red, n->opset);
  p->c = scatter;
  return 0;
}

/* GatherND: out = indices.shape[:-1] + data.shape[batch_dims + k:], k = indices.shape[-1]. */
static int nd_shapes(const hs_node *n, const hs_tensor *in, int nin, int64_t *od, int *ond, hs_error *err) {
  const mv_params *p = (const mv_params *)n->params.bytes;
  const hs_tensor *x = &in[0], *idx = &in[1];
  int rc = any_type(n, x, err);
  if (rc || (rc = hs_need_dtype(n, idx, "indices", err, HS_DT_INT64, HS_DT_UNDEFINED))) return rc;
  if (idx->ndim < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "indices must have rank >= 1");
  int64_t k = idx->dims[idx->ndim - 1], bd = p->a;
  if (bd < 0 || bd >= idx->ndim || bd >= x->ndim || k < 1 || bd + k > x->ndim)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "indices' last dimension %lld does not fit data", (long long)k);
  for (int i = 0; i < bd; i++)
    if (idx->dims[i] != x->dims[i]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "batch dimensions differ");
  int r = 0;
  for (int i = 0; i < idx->ndim - 1; i++) od[r++] = idx->dims[i];
  for (int i = (int)(bd + k); i < x->ndim; i++) od[r++] = x->dims[i];
  *ond = r;
  if (p->c) { /* ScatterND: updates must have that shape */
    const hs_tensor *u = &in[2];
    int ok = nin > 2 && u->dtype == x->dtype && u->ndim == r;
    for (int i = 0; ok && i < r; i++) ok = u->dims[i] == od[i];
    if (!ok) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "updates shape does not fit indices and data");
  }
  return 0;
}

static int nd_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  const mv_params *p = (const mv_params *)n->params.bytes;
  int64_t od[2 * HS_MAX_DIMS];
  int r, rc = nd_shapes(n, in, nin, od, &r, err);
  if (rc) return rc;
  return p->c ? hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err)
              : hs_set_shape(&out[0], in[0].dtype, r, od, n, err);
}

static int nd_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                  hs_error *err) {
  (void)nout, (void)scratch;
  const mv_params *p = (const mv_params *)n->params.bytes;
  int64_t od[2 * HS_MAX_DIMS];
  int r, rc = nd_shapes(n, in, nin, od, &r, err);
  if (rc) return rc;
  const hs_tensor *x = &in[0], *idx = &in[1];
  const int64_t k = idx->dims[idx->ndim - 1], bd = p->a;
  int64_t batch = 1, slice = 1, tuples = hs_numel(idx) / k;
  for (int i = 0; i < bd; i++) batch *= x->dims[i];
  for (int i = (int)(bd + k); i < x->ndim; i++) slice *= x->dims[i];
  int64_t per_batch = batch ? tuples / batch : 0, xbatch = 1;
  for (int i = (int)bd; i < x->ndim; i++) xbatch *= x->dims[i];
  size_t esz = hs_dtype_size(x->dtype);
  if (p->c) hs_memcpy(out[0].data, x->data, x->nbytes);
  const int64_t *iv = idx->data;
  for (int64_t t = 0; t < tuples; t++) {
    int64_t off = 0;
    for (int j = 0; j < k; j++) {
      int64_t dim = x->dims[bd + j], v = iv[t * k + j];
      if (v < -dim || v >= dim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "index %lld out of range", (long long)v);
      off = off * dim + (v < 0 ? v + dim : v);
    }
    int64_t src = (per_batch ? t / per_batch : 0) * xbatch + off * slice; /* element offset in data */
    if (!p->c) {
      memcpy((char *)out[0].data + (size_t)(t * slice) * esz, (const char *)x->data + (size_t)src * esz,
             (size_t)slice * esz);
    } else if (p->b == 0) {
      memcpy((char *)out[0].data + (size_t)src * esz, (const char *)in[2].data + (size_t)(t * slice) * esz,
             (size_t)slice * esz);
    } else {
      for (int64_t e = 0; e < slice; e++) {
        double a = hs_load_f64(&out[0], src + e), b = hs_load_f64(&in[2], t * slice + e);
        double v = p->b == 1 ? a + b : p->b == 2 ? a * b : p->b == 3 ? (a > b ? a : b) : (a < b ? a : b);
        hs_store_f64(&out[0], src + e, v);
      }
    }
  }
  return 0;
}

/* ---- OneHot (indices, depth, values [off, on]) ------------------------------------------------ */

static int onehot_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  mv_params *p = (mv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "axis", err);
  return rc ? rc : hs_attr_int(n, "axis", -1, &p->a, err);
}

static int onehot_dims(const hs_node *n, const hs_tensor *in, int *axis, int64_t *depth, hs_error *err) {
  const mv_params *p = (const mv_params *)n->params.bytes;
  int r = in[0].ndim + 1;
  if (hs_numel(&in[1]) != 1 || hs_numel(&in[2]) != 2 || any_type(n, &in[2], err))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "depth must be one value and values two");
  if (p->a < -r || p->a >= r) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "axis out of range");
  *axis = (int)(p->a < 0 ? p->a + r : p->a);
  *depth = (int64_t)hs_get_scalar(&in[1]);
  if (*depth < 1 || *depth > ((int64_t)1 << 31)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "depth must be >= 1");
  return 0;
}

static int onehot_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int axis, rc;
  int64_t depth, d[HS_MAX_DIMS + 1];
  if ((rc = onehot_dims(n, in, &axis, &depth, err))) return rc;
  if (in[0].ndim + 1 > HS_MAX_DIMS) return hs_op_errf(err, n, HS_UNSUPPORTED, "output rank too large");
  for (int i = 0, j = 0; i <= in[0].ndim; i++) d[i] = i == axis ? depth : in[0].dims[j++];
  return hs_set_shape(&out[0], in[2].dtype, in[0].ndim + 1, d, n, err);
}

static int onehot_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  int axis, rc;
  int64_t depth;
  if ((rc = onehot_dims(n, in, &axis, &depth, err))) return rc;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; i++) outer *= in[0].dims[i];
  for (int i = axis; i < in[0].ndim; i++) inner *= in[0].dims[i];
  size_t esz = hs_dtype_size(in[2].dtype);
  const char *off = in[2].data, *on = off + esz;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t d = 0; d < depth; d++)
      for (int64_t i = 0; i < inner; i++) {
        double v = hs_load_f64(&in[0], o * inner + i);
        int64_t iv = (int64_t)v;
        if (iv < 0) iv += depth;
        memcpy((char *)out[0].data + (size_t)((o * depth + d) * inner + i) * esz, iv == d ? on : off, esz);
      }
  return 0;
}

/* ---- EyeLike ---------------------------------------------------------------------------------- */

static int eyelike_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  mv_params *p = (mv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "dtype,k", err);
  if (rc || (rc = hs_attr_int(n, "k", 0, &p->a, err)) || (rc = hs_attr_int(n, "dtype", 0, &p->dtype, err))) return rc;
  if (p->dtype && hs_dtype_size((hs_dtype)p->dtype) == 0)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "dtype %lld is not supported", (long long)p->dtype);
  return 0;
}

static int eyelike_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  const mv_params *p = (const mv_params *)n->params.bytes;
  if (in[0].ndim != 2) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input must be 2-D");
  hs_dtype t = p->dtype ? (hs_dtype)p->dtype : in[0].dtype;
  if (hs_dtype_size(t) == 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "type is not supported");
  return hs_set_shape(&out[0], t, 2, in[0].dims, n, err);
}

static int eyelike_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                       hs_error *err) {
  (void)in, (void)nin, (void)nout, (void)scratch, (void)err;
  const mv_params *p = (const mv_params *)n->params.bytes;
  int64_t rows = out[0].dims[0], cols = out[0].dims[1];
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) hs_store_f64(&out[0], i * cols + j, j - i == p->a);
  return 0;
}

/* ---- Compress (condition input known at planning) --------------------------------------------- */

static int compress_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  mv_params *p = (mv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "axis", err);
  if (rc || (rc = hs_attr_int(n, "axis", 0, &p->a, err))) return rc;
  p->flag = hs_node_attr(n, "axis") != NULL;
  return 0;
}

/* Selected count along the axis (or the flattened input when there is no axis). */
static int compress_dims(const hs_node *n, const hs_tensor *in, int *axis, int64_t *len, int64_t *kept, hs_error *err) {
  const mv_params *p = (const mv_params *)n->params.bytes;
  int rc = any_type(n, &in[0], err);
  if (rc || (rc = hs_need_dtype(n, &in[1], "condition", err, HS_DT_BOOL, HS_DT_UNDEFINED))) return rc;
  *axis = -1;
  if (p->flag && (rc = hs_norm_axis(p->a, in[0].ndim, axis, n, err))) return rc;
  *len = *axis >= 0 ? in[0].dims[*axis] : hs_numel(&in[0]);
  int64_t c = hs_numel(&in[1]);
  if (in[1].ndim != 1 || c > *len) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "condition longer than the axis");
  *kept = 0;
  for (int64_t i = 0; i < c; i++) *kept += ((const uint8_t *)in[1].data)[i] != 0;
  return 0;
}

static int compress_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int axis, rc;
  int64_t len, kept, d[HS_MAX_DIMS];
  if ((rc = compress_dims(n, in, &axis, &len, &kept, err))) return rc;
  if (axis < 0) return hs_set_shape(&out[0], in[0].dtype, 1, &kept, n, err);
  memcpy(d, in[0].dims, sizeof d);
  d[axis] = kept;
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, d, n, err);
}

static int compress_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                        hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  int axis, rc;
  int64_t len, kept, outer = 1, inner = 1;
  if ((rc = compress_dims(n, in, &axis, &len, &kept, err))) return rc;
  if (axis >= 0) {
    for (int i = 0; i < axis; i++) outer *= in[0].dims[i];
    for (int i = axis + 1; i < in[0].ndim; i++) inner *= in[0].dims[i];
  }
  size_t row = (size_t)inner * hs_dtype_size(in[0].dtype);
  const uint8_t *cond = in[1].data;
  int64_t c = hs_numel(&in[1]), w = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < c; i++)
      if (cond[i]) memcpy((char *)out[0].data + (size_t)(w++) * row, (const char *)in[0].data + (size_t)(o * len + i) * row, row);
  return 0;
}

/* ---- ReverseSequence -------------------------------------------------------------------------- */

static int revseq_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  mv_params *p = (mv_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "batch_axis,time_axis", err);
  if (rc || (rc = hs_attr_int(n, "batch_axis", 1, &p->a, err)) || (rc = hs_attr_int(n, "time_axis", 0, &p->b, err)))
    return rc;
  if (!((p->a == 0 && p->b == 1) || (p->a == 1 && p->b == 0)))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "batch_axis / time_axis must be 0 and 1");
  return 0;
}

static int revseq_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  const mv_params *p = (const mv_params *)n->params.bytes;
  int rc = any_type(n, &in[0], err);
  if (rc || (rc = hs_need_dtype(n, &in[1], "sequence_lens", err, HS_DT_INT64, HS_DT_UNDEFINED))) return rc;
  if (in[0].ndim < 2 || in[1].ndim != 1 || in[1].dims[0] != in[0].dims[p->a])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input must be rank >= 2 and sequence_lens [batch]");
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, in[0].dims, n, err);
}

static int revseq_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  const mv_params *p = (const mv_params *)n->params.bytes;
  int64_t B = in[0].dims[p->a], T = in[0].dims[p->b], inner = 1;
  for (int i = 2; i < in[0].ndim; i++) inner *= in[0].dims[i];
  size_t row = (size_t)inner * hs_dtype_size(in[0].dtype);
  for (int64_t b = 0; b < B; b++) {
    int64_t len = hs_get_int(&in[1], b);
    if (len < 0 || len > T) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "sequence length %lld", (long long)len);
    for (int64_t t = 0; t < T; t++) {
      int64_t st = t < len ? len - 1 - t : t;
      int64_t dst = p->a == 0 ? b * T + t : t * B + b, src = p->a == 0 ? b * T + st : st * B + b;
      memcpy((char *)out[0].data + (size_t)dst * row, (const char *)in[0].data + (size_t)src * row, row);
    }
  }
  return 0;
}

/* ---- MaxUnpool (X, I, output_shape): zeros, X's values at I's flat indices ---- */

typedef struct {
  int nk;
  int64_t k[HS_MAX_DIMS], s[HS_MAX_DIMS], pads[2 * HS_MAX_DIMS];
} unpool_params;

static int unpool_ints(const hs_node *n, const char *name, int64_t *dst, int max, int *count, int64_t def,
                       hs_error *err) {
  const int64_t *v;
  size_t c;
  int rc = hs_attr_ints(n, name, &v, &c, err);
  if (rc) return rc;
  if (c > (size_t)max) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%s has too many entries", name);
  for (int i = 0; i < max; i++) dst[i] = v && (size_t)i < c ? v[i] : def;
  if (count) *count = v ? (int)c : 0;
  return 0;
}

static int unpool_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  unpool_params *p = (unpool_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int rc = hs_node_only_attrs(n, "kernel_shape,pads,strides", err);
  if (rc || (rc = unpool_ints(n, "kernel_shape", p->k, HS_MAX_DIMS, &p->nk, 1, err)) ||
      (rc = unpool_ints(n, "strides", p->s, HS_MAX_DIMS, NULL, 1, err)) ||
      (rc = unpool_ints(n, "pads", p->pads, 2 * HS_MAX_DIMS, NULL, 0, err)))
    return rc;
  if (p->nk < 1) return hs_op_errf(err, n, HS_PARSE, "kernel_shape is required");
  return 0;
}

/* The shape MaxPool's indices refer to: (in - 1) * stride - pads + kernel per spatial axis. */
static void unpool_default_dims(const unpool_params *p, const hs_tensor *x, int64_t *d) {
  d[0] = x->dims[0], d[1] = x->dims[1];
  for (int i = 0; i < p->nk; i++) d[2 + i] = (x->dims[2 + i] - 1) * p->s[i] - p->pads[i] - p->pads[p->nk + i] + p->k[i];
}

static int unpool_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  const unpool_params *p = (const unpool_params *)n->params.bytes;
  int rc = any_type(n, &in[0], err);
  if (rc || (rc = hs_need_dtype(n, &in[1], "I", err, HS_DT_INT64, HS_DT_UNDEFINED))) return rc;
  if (in[0].ndim != p->nk + 2 || in[1].ndim != in[0].ndim || hs_numel(&in[1]) != hs_numel(&in[0]))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "X and I must be [N, C, spatial] of the kernel's rank");
  int64_t d[HS_MAX_DIMS];
  unpool_default_dims(p, &in[0], d);
  if (nin > 2 && HS_PRESENT(&in[2])) {
    if (hs_numel(&in[2]) != in[0].ndim) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output_shape has the wrong length");
    for (int i = 0; i < in[0].ndim; i++) {
      int64_t v = hs_get_int(&in[2], i);
      if (v < d[i]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output_shape is smaller than the unpooled shape");
      d[i] = v;
    }
  }
  return hs_set_shape(&out[0], in[0].dtype, in[0].ndim, d, n, err);
}

static int unpool_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)nin, (void)nout, (void)scratch;
  const unpool_params *p = (const unpool_params *)n->params.bytes;
  size_t esz = hs_dtype_size(in[0].dtype);
  int64_t total = hs_numel(&in[0]), dd[HS_MAX_DIMS], dn = 1;
  unpool_default_dims(p, &in[0], dd);
  const int r = in[0].ndim;
  for (int a = 0; a < r; a++) dn *= dd[a];
  memset(out[0].data, 0, out[0].nbytes);
  for (int64_t i = 0; i < total; i++) {
    /* the index is flat in the default shape; a larger output_shape keeps the coordinates */
    int64_t j = ((const int64_t *)in[1].data)[i], o = 0, c[HS_MAX_DIMS];
    if (j < 0 || j >= dn) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "index %lld is outside the output", (long long)j);
    for (int a = r - 1; a >= 0; a--) c[a] = j % dd[a], j /= dd[a];
    for (int a = 0; a < r; a++) o = o * out[0].dims[a] + c[a];
    memcpy((char *)out[0].data + (size_t)o * esz, (const char *)in[0].data + (size_t)i * esz, esz);
  }
  return 0;
}

const hs_op_impl hs_op_impl_max_unpool = {
    .check = unpool_check,
    .infer = unpool_infer,
    .run = unpool_run,
};
const hs_op_impl hs_op_impl_depth_to_space = {
    .check = d2s_check,
    .infer = d2s_infer,
    .run = d2s_run,
};
const hs_op_impl hs_op_impl_gather_nd = {
    .check = nd_check,
    .infer = nd_infer,
    .run = nd_run,
};
const hs_op_impl hs_op_impl_one_hot = {
    .check = onehot_check,
    .infer = onehot_infer,
    .run = onehot_run,
};
const hs_op_impl hs_op_impl_eye_like = {
    .check = eyelike_check,
    .infer = eyelike_infer,
    .run = eyelike_run,
};
const hs_op_impl hs_op_impl_compress = {
    .check = compress_check,
    .infer = compress_infer,
    .run = compress_run,
};
const hs_op_impl hs_op_impl_reverse_sequence = {
    .check = revseq_check,
    .infer = revseq_infer,
    .run = revseq_run,
};

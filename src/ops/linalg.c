/* linalg.c - Einsum (opset 12+: any equation, with "..." and implicit outputs) and Det, in plain C. */

/*
 * DESIGN
 * The equation is parsed at load into labels per operand (an ellipsis becomes reserved labels, one
 * per broadcast dimension, right-aligned across operands, resolved when shapes are known). run()
 * walks every combination of all labels once, multiplying the operands' elements and adding into
 * the output element: O(product of all label sizes), which suits the small contractions exporters
 * leave in graphs (transposes, diagonals, batched inner products); a large contraction should be a
 * MatMul in the graph. Det factors each [M, M] matrix by LU with partial pivoting, in double.
 */
#include <math.h>
#include <ctype.h>
#include <string.h>

#include "ops/ops.h"

#define EIN_MAX_IN 4
#define EIN_MAX_LABELS 24

typedef struct {
  int n_in;
  int ell_in[EIN_MAX_IN]; /* position of "..." in operand k's labels, -1 when none */
  int nl_in[EIN_MAX_IN];  /* explicit labels (letters) of operand k, the ellipsis not counted */
  char lab_in[EIN_MAX_IN][HS_MAX_DIMS + 1];
  int explicit_out;
  int ell_out;
  int nl_out;
  char lab_out[HS_MAX_DIMS + 1];
} einsum_params;

static int parse_term(const hs_node *n, const char **s, char *lab, int *nl, int *ell, hs_error *err) {
  *nl = 0;
  *ell = -1;
  for (; **s && **s != ',' && **s != '-'; (*s)++) {
    char c = **s;
    if (c == ' ') continue;
    if (c == '.') {
      if (strncmp(*s, "...", 3) != 0 || *ell >= 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bad ellipsis");
      *ell = *nl;
      *s += 2;
      continue;
    }
    if (!isalpha((unsigned char)c) || *nl >= HS_MAX_DIMS)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bad equation character '%c' or too many labels", c);
    lab[(*nl)++] = c;
  }
  lab[*nl] = 0;
  return 0;
}

static int einsum_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  einsum_params *p = (einsum_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  const char *eq;
  int rc = hs_node_only_attrs(n, "equation", err);
  if (rc || (rc = hs_attr_string(n, "equation", NULL, &eq, err))) return rc;
  if (!eq) return hs_op_errf(err, n, HS_PARSE, "equation is required");
  const char *s = eq;
  for (;;) {
    if (p->n_in == EIN_MAX_IN) return hs_op_errf(err, n, HS_UNSUPPORTED, "more than %d operands", EIN_MAX_IN);
    int k = p->n_in++;
    if ((rc = parse_term(n, &s, p->lab_in[k], &p->nl_in[k], &p->ell_in[k], err))) return rc;
    if (*s == ',') {
      s++;
      continue;
    }
    break;
  }
  if (*s == '-') {
    if (s[1] != '>') return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bad equation '%s'", eq);
    s += 2;
    p->explicit_out = 1;
    if ((rc = parse_term(n, &s, p->lab_out, &p->nl_out, &p->ell_out, err))) return rc;
    if (*s) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "bad equation '%s'", eq);
  } else {
    /* implicit: the ellipsis first, then labels seen once, alphabetically */
    int any_ell = 0;
    for (int k = 0; k < p->n_in; k++) any_ell |= p->ell_in[k] >= 0;
    p->ell_out = any_ell ? 0 : -1;
    for (int c = 'A'; c <= 'z'; c++) {
      if (!isalpha(c)) continue;
      int count = 0;
      for (int k = 0; k < p->n_in; k++)
        for (int i = 0; i < p->nl_in[k]; i++) count += p->lab_in[k][i] == c;
      if (count == 1) {
        if (p->nl_out >= HS_MAX_DIMS) return hs_op_errf(err, n, HS_UNSUPPORTED, "too many output labels");
        p->lab_out[p->nl_out++] = (char)c;
      }
    }
  }
  if (p->n_in != n->n_in) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%d operands for %d inputs", p->n_in, n->n_in);
  return 0;
}

/* The resolved problem: label ids per operand dimension, sizes per label. */
typedef struct {
  int n_labels;
  int64_t size[EIN_MAX_LABELS];
  int nd_in[EIN_MAX_IN], id_in[EIN_MAX_IN][HS_MAX_DIMS];
  int nd_out, id_out[HS_MAX_DIMS];
} einsum_plan;

static int label_id(einsum_plan *e, int *ids, int c) {
  if (ids[c] < 0) {
    if (e->n_labels == EIN_MAX_LABELS) return -1;
    ids[c] = e->n_labels++;
    e->size[ids[c]] = -1;
  }
  return ids[c];
}

static int resolve(const hs_node *n, const hs_tensor *in, int nin, einsum_plan *e, hs_error *err) {
  const einsum_params *p = (const einsum_params *)n->params.bytes;
  memset(e, 0, sizeof *e);
  int ids[256 + HS_MAX_DIMS];
  for (int i = 0; i < 256 + HS_MAX_DIMS; i++) ids[i] = -1;
  int ell_rank = 0;
  for (int k = 0; k < nin; k++) {
    if (in[k].dtype != in[0].dtype) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "operands differ in type");
    int er = in[k].ndim - p->nl_in[k];
    if (er < 0 || (er > 0 && p->ell_in[k] < 0))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "operand %d has rank %d for %d labels", k, in[k].ndim, p->nl_in[k]);
    if (er > ell_rank) ell_rank = er;
  }
  for (int k = 0; k < nin; k++) {
    int er = in[k].ndim - p->nl_in[k], d = 0;
    e->nd_in[k] = in[k].ndim;
    for (int i = 0; i <= p->nl_in[k]; i++) {
      if (i == p->ell_in[k])
        for (int j = 0; j < er; j++, d++) { /* right-aligned ellipsis dims: reserved ids 256.. */
          int id = label_id(e, ids, 256 + (ell_rank - er + j));
          if (id < 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "too many labels");
          e->id_in[k][d] = id;
        }
      if (i == p->nl_in[k]) break;
      int id = label_id(e, ids, (unsigned char)p->lab_in[k][i]);
      if (id < 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "too many labels");
      e->id_in[k][d++] = id;
    }
    for (int i = 0; i < in[k].ndim; i++) {
      int64_t *sz = &e->size[e->id_in[k][i]], dim = in[k].dims[i];
      if (*sz < 0 || *sz == 1) *sz = dim;
      else if (dim != *sz && dim != 1)
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "label sizes differ (%lld vs %lld)", (long long)*sz,
                          (long long)dim);
    }
  }
  int d = 0;
  for (int i = 0; i <= p->nl_out; i++) {
    if (i == p->ell_out)
      for (int j = 0; j < ell_rank; j++) e->id_out[d++] = ids[256 + j];
    if (i == p->nl_out) break;
    int id = ids[(unsigned char)p->lab_out[i]];
    if (id < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "output label '%c' is in no operand", p->lab_out[i]);
    e->id_out[d++] = id;
  }
  if (ell_rank && p->ell_out < 0 && p->explicit_out)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "an ellipsis summed away is not supported");
  e->nd_out = d;
  return 0;
}

static int einsum_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_INT64, HS_DT_INT32,
                         HS_DT_UNDEFINED);
  einsum_plan e;
  if (rc || (rc = resolve(n, in, nin, &e, err))) return rc;
  int64_t d[HS_MAX_DIMS];
  for (int i = 0; i < e.nd_out; i++) d[i] = e.size[e.id_out[i]];
  return hs_set_shape(&out[0], in[0].dtype, e.nd_out, d, n, err);
}

static int einsum_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)nout, (void)scratch;
  einsum_plan e;
  int rc = resolve(n, in, nin, &e, err);
  if (rc) return rc;
  /* strides of each operand / the output per label (0 for labels they lack or broadcast) */
  int64_t st[EIN_MAX_IN + 1][EIN_MAX_LABELS];
  memset(st, 0, sizeof st);
  for (int k = 0; k <= nin; k++) {
    const hs_tensor *t = k < nin ? &in[k] : &out[0];
    int nd = k < nin ? e.nd_in[k] : e.nd_out;
    const int *id = k < nin ? e.id_in[k] : e.id_out;
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
      if (t->dims[i] != 1) st[k][id[i]] += s;
      s *= t->dims[i];
    }
  }
  int64_t total = 1;
  for (int l = 0; l < e.n_labels; l++) total *= e.size[l];
  int64_t on = hs_numel(&out[0]);
  for (int64_t i = 0; i < on; i++) hs_store_f64(&out[0], i, 0);
  if (total == 0) return 0;
  int64_t pos[EIN_MAX_LABELS] = {0}, off[EIN_MAX_IN + 1] = {0};
  for (int64_t it = 0; it < total; it++) {
    double v = 1;
    for (int k = 0; k < nin; k++) v *= hs_load_f64(&in[k], off[k]);
    hs_store_f64(&out[0], off[nin], hs_load_f64(&out[0], off[nin]) + v);
    for (int l = e.n_labels - 1; l >= 0; l--) {
      for (int k = 0; k <= nin; k++) off[k] += st[k][l];
      if (++pos[l] < e.size[l]) break;
      for (int k = 0; k <= nin; k++) off[k] -= st[k][l] * e.size[l];
      pos[l] = 0;
    }
  }
  return 0;
}

/* ---- Det ---- */

static int det_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  return hs_node_only_attrs(n, "", err);
}

static int det_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  int rc = hs_need_dtype(n, &in[0], "X", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_UNDEFINED);
  if (rc) return rc;
  int r = in[0].ndim;
  if (r < 2 || in[0].dims[r - 1] != in[0].dims[r - 2])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "X must be [*, M, M]");
  return hs_set_shape(&out[0], in[0].dtype, r - 2, in[0].dims, n, err);
}

static size_t det_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)n, (void)nin, (void)out, (void)nout;
  int64_t m = in[0].ndim >= 2 ? in[0].dims[in[0].ndim - 1] : 0;
  return sizeof(double) * (size_t)(m * m + 1);
}

static int det_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)n, (void)nin, (void)nout, (void)err;
  const int64_t m = in[0].dims[in[0].ndim - 1], mats = hs_numel(&out[0]);
  double *a = scratch;
  for (int64_t t = 0; t < mats; t++) {
    for (int64_t i = 0; i < m * m; i++) a[i] = hs_load_f64(&in[0], t * m * m + i);
    double det = 1;
    for (int64_t c = 0; c < m && det != 0; c++) {
      int64_t piv = c;
      for (int64_t r = c + 1; r < m; r++)
        if (fabs(a[r * m + c]) > fabs(a[piv * m + c])) piv = r;
      if (a[piv * m + c] == 0) {
        det = 0;
        break;
      }
      if (piv != c) {
        for (int64_t k = 0; k < m; k++) {
          double tmp = a[c * m + k];
          a[c * m + k] = a[piv * m + k];
          a[piv * m + k] = tmp;
        }
        det = -det;
      }
      det *= a[c * m + c];
      for (int64_t r = c + 1; r < m; r++) {
        double f = a[r * m + c] / a[c * m + c];
        for (int64_t k = c; k < m; k++) a[r * m + k] -= f * a[c * m + k];
      }
    }
    hs_store_f64(&out[0], t, det);
  }
  return 0;
}

const hs_op_impl hs_op_impl_det = {
    .check = det_check,
    .infer = det_infer,
    .scratch_bytes = det_scratch,
    .run = det_run,
};
const hs_op_impl hs_op_impl_einsum = {
    .check = einsum_check,
    .infer = einsum_infer,
    .run = einsum_run,
};

/* logic.c - comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), logical ops (Not, And,
 * Or, Xor), Where, and the variadic Max, Min, Sum, Mean: numpy broadcasting over any number of
 * inputs, element by element (these ops sit on small tensors in exported graphs: masks, indices). */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

enum { L_EQ, L_LT, L_GT, L_LE, L_GE, L_AND, L_OR, L_XOR, L_NOT, L_WHERE, L_MAX, L_MIN, L_SUM, L_MEAN };

static int logic_check(hs_node *n, const hs_graph *g, hs_error *err) {
  int kind;
  switch (n->op) {
    case HS_OP_Equal: kind = L_EQ; break;
    case HS_OP_Less: kind = L_LT; break;
    case HS_OP_Greater: kind = L_GT; break;
    case HS_OP_LessOrEqual: kind = L_LE; break;
    case HS_OP_GreaterOrEqual: kind = L_GE; break;
    case HS_OP_And: kind = L_AND; break;
    case HS_OP_Or: kind = L_OR; break;
    case HS_OP_Xor: kind = L_XOR; break;
    case HS_OP_Not: kind = L_NOT; break;
    case HS_OP_Where: kind = L_WHERE; break;
    case HS_OP_Max: kind = L_MAX; break;
    case HS_OP_Min: kind = L_MIN; break;
    case HS_OP_Sum: kind = L_SUM; break;
    case HS_OP_Mean: kind = L_MEAN; break;
    default: return hs_op_errf(err, n, HS_INTERNAL, "not a logic op");
  }
  *(int *)n->params.bytes = kind;
  /* opset < 7 broadcast attributes are refused: numpy broadcasting only */
  return hs_node_only_attrs(n, "", err);
}

static int is_float(hs_dtype t) { return t == HS_DT_FLOAT32 || t == HS_DT_FLOAT64; }

static int numeric(hs_dtype t) {
  switch (t) {
    case HS_DT_FLOAT32: case HS_DT_FLOAT64: case HS_DT_INT64: case HS_DT_INT32: case HS_DT_INT16: case HS_DT_INT8:
    case HS_DT_UINT8: case HS_DT_UINT16: case HS_DT_UINT32: case HS_DT_UINT64: case HS_DT_BOOL:
      return 1;
    default:
      return 0;
  }
}

static int64_t load_i64(const hs_tensor *t, int64_t i) {
  switch (t->dtype) {
    case HS_DT_INT64: return ((const int64_t *)t->data)[i];
    case HS_DT_UINT64: return (int64_t)((const uint64_t *)t->data)[i];
    case HS_DT_UINT32: return ((const uint32_t *)t->data)[i];
    default: return (int64_t)hs_load_f64(t, i); /* narrower integers are exact in a double */
  }
}

static int logic_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int kind = *(const int *)n->params.bytes, rc;
  int first = kind == L_WHERE ? 1 : 0;
  for (int i = 0; i < nin; i++) {
    if (!HS_PRESENT(&in[i])) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "empty input %d", i);
    if (!numeric(in[i].dtype)) return hs_op_errf(err, n, HS_UNSUPPORTED, "input %d type is not supported (opset %d)", i, n->opset);
  }
  if (kind == L_WHERE && in[0].dtype != HS_DT_BOOL) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "condition must be bool");
  if ((kind == L_AND || kind == L_OR || kind == L_XOR || kind == L_NOT) && in[0].dtype != HS_DT_BOOL)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs must be bool");
  for (int i = first + 1; i < nin; i++)
    if (in[i].dtype != in[first].dtype) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs differ in type");
  if ((kind == L_SUM || kind == L_MEAN) && in[0].dtype == HS_DT_BOOL)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "bool inputs are not supported");
  hs_tensor acc = in[0];
  int r = acc.ndim;
  int64_t d[HS_MAX_DIMS];
  memcpy(d, acc.dims, sizeof d);
  for (int i = 1; i < nin; i++) {
    hs_tensor cur = {.ndim = r};
    memcpy(cur.dims, d, sizeof d);
    if ((rc = hs_broadcast_shape(&cur, &in[i], &r, d, n, err))) return rc;
  }
  hs_dtype odt = kind <= L_WHERE - 1 ? HS_DT_BOOL : in[first].dtype;
  if (kind == L_WHERE) odt = in[1].dtype;
  return hs_set_shape(&out[0], odt, r, d, n, err);
}

static int logic_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                     hs_error *err) {
  int kind = *(const int *)n->params.bytes, r = out[0].ndim;
  int64_t st[8][HS_MAX_DIMS], off[8] = {0}, idx[HS_MAX_DIMS] = {0};
  if (nin > 8) return hs_op_errf(err, n, HS_UNSUPPORTED, "more than 8 inputs");
  for (int i = 0; i < nin; i++) {
    int64_t a = 1;
    for (int k = r - 1; k >= 0; k--) {
      int ti = k - (r - in[i].ndim);
      int64_t dd = ti >= 0 ? in[i].dims[ti] : 1;
      st[i][k] = dd == 1 ? 0 : a;
      a *= dd;
    }
  }
  int fl = is_float(in[kind == L_WHERE ? 1 : 0].dtype);
  size_t esz = hs_dtype_size(out[0].dtype);
  int64_t total = hs_numel(&out[0]);
  for (int64_t e = 0; e < total; e++) {
    switch (kind) {
      case L_EQ: case L_LT: case L_GT: case L_LE: case L_GE: {
        int c;
        if (fl) {
          double x = hs_load_f64(&in[0], off[0]), y = hs_load_f64(&in[1], off[1]);
          c = kind == L_EQ ? x == y : kind == L_LT ? x < y : kind == L_GT ? x > y : kind == L_LE ? x <= y : x >= y;
        } else {
          int64_t x = load_i64(&in[0], off[0]), y = load_i64(&in[1], off[1]);
          c = kind == L_EQ ? x == y : kind == L_LT ? x < y : kind == L_GT ? x > y : kind == L_LE ? x <= y : x >= y;
        }
        ((uint8_t *)out[0].data)[e] = (uint8_t)c;
        break;
      }
      case L_AND: case L_OR: case L_XOR: {
        int x = ((const uint8_t *)in[0].data)[off[0]] != 0, y = ((const uint8_t *)in[1].data)[off[1]] != 0;
        ((uint8_t *)out[0].data)[e] = (uint8_t)(kind == L_AND ? x && y : kind == L_OR ? x || y : x != y);
        break;
      }
      case L_NOT:
        ((uint8_t *)out[0].data)[e] = ((const uint8_t *)in[0].data)[off[0]] == 0;
        break;
      case L_WHERE: {
        int c = ((const uint8_t *)in[0].data)[off[0]] != 0;
        const hs_tensor *src = c ? &in[1] : &in[2];
        memcpy((char *)out[0].data + e * (int64_t)esz, (const char *)src->data + off[c ? 1 : 2] * (int64_t)esz, esz);
        break;
      }
      default: { /* Max, Min, Sum, Mean */
        if (fl) {
          double v = hs_load_f64(&in[0], off[0]);
          for (int i = 1; i < nin; i++) {
            double x = hs_load_f64(&in[i], off[i]);
            if (kind == L_MAX) v = (x > v || isnan(x)) ? x : v;
            else if (kind == L_MIN) v = (x < v || isnan(x)) ? x : v;
            else v += x;
          }
          if (kind == L_MEAN) v /= nin;
          hs_store_f64(&out[0], e, v);
        } else {
          int64_t v = load_i64(&in[0], off[0]);
          for (int i = 1; i < nin; i++) {
            int64_t x = load_i64(&in[i], off[i]);
            if (kind == L_MAX) v = x > v ? x : v;
            else if (kind == L_MIN) v = x < v ? x : v;
            else v = (int64_t)((uint64_t)v + (uint64_t)x);
          }
          if (kind == L_MEAN) v /= nin;
          hs_store_f64(&out[0], e, (double)v);
          if (out[0].dtype == HS_DT_INT64) ((int64_t *)out[0].data)[e] = v;
        }
      }
    }
    for (int k = r - 1; k >= 0; k--) {
      for (int i = 0; i < nin; i++) off[i] += st[i][k];
      if (++idx[k] < out[0].dims[k]) break;
      for (int i = 0; i < nin; i++) off[i] -= st[i][k] * out[0].dims[k];
      idx[k] = 0;
    }
  }
  return 0;
}

const hs_op_impl hs_op_impl_logic = {
    .check = logic_check,
    .infer = logic_infer,
    .run = logic_run,
};

/* loss.c - NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opset 12+), as exported for evaluation graphs. */

/*
 * DESIGN
 * Plain C in double, stored in the input's type (float32 or float64). Both ops view their input as
 * [N, C, D] (D the product of the dimensions after C) and the target as [N, D]. Per element the loss
 * is -input[n, target, d] times the class weight (1 without weights; 0 where the target is
 * ignore_index). reduction "none" keeps the target's shape; "sum" adds; "mean" divides by the sum of
 * the weights when there are weights or an ignore_index, else by N * D (as ONNX's reference does).
 * SoftmaxCrossEntropyLoss first takes log_softmax over C (its optional second output) into that
 * output's buffer or into scratch.
 */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

enum { LR_NONE, LR_SUM, LR_MEAN };

typedef struct {
  int reduction;
  int has_ignore;
  int64_t ignore;
  int softmax; /* SoftmaxCrossEntropyLoss */
} loss_params;

static int loss_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  loss_params *p = (loss_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  p->softmax = n->op == HS_OP_SoftmaxCrossEntropyLoss;
  const char *red;
  int rc = hs_node_only_attrs(n, "reduction,ignore_index", err);
  if (rc || (rc = hs_attr_string(n, "reduction", "mean", &red, err)) ||
      (rc = hs_attr_int(n, "ignore_index", 0, &p->ignore, err)))
    return rc;
  p->has_ignore = hs_node_attr(n, "ignore_index") != NULL;
  if (strcmp(red, "none") == 0) p->reduction = LR_NONE;
  else if (strcmp(red, "sum") == 0) p->reduction = LR_SUM;
  else if (strcmp(red, "mean") == 0) p->reduction = LR_MEAN;
  else return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "reduction '%s' is not none, sum or mean", red);
  return 0;
}

static int loss_shapes(const hs_node *n, const hs_tensor *in, int nin, hs_error *err) {
  const hs_tensor *x = &in[0], *t = &in[1];
  int rc = hs_need_dtype(n, x, "input", err, HS_DT_FLOAT32, HS_DT_FLOAT64, HS_DT_UNDEFINED);
  if (rc || (rc = hs_need_dtype(n, t, "target", err, HS_DT_INT64, HS_DT_INT32, HS_DT_UNDEFINED))) return rc;
  if (x->ndim < 2 || t->ndim != x->ndim - 1 || t->dims[0] != x->dims[0])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "input must be [N, C, ...] and target [N, ...]");
  for (int i = 1; i < t->ndim; i++)
    if (t->dims[i] != x->dims[i + 1]) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "target shape does not fit input");
  if (nin > 2 && HS_PRESENT(&in[2]) &&
      (in[2].dtype != x->dtype || in[2].ndim != 1 || in[2].dims[0] != x->dims[1]))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "weight must be [C] of the input's type");
  return 0;
}

static int loss_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const loss_params *p = (const loss_params *)n->params.bytes;
  int rc = loss_shapes(n, in, nin, err);
  if (rc) return rc;
  if (p->reduction == LR_NONE) rc = hs_set_shape(&out[0], in[0].dtype, in[1].ndim, in[1].dims, n, err);
  else rc = hs_set_shape(&out[0], in[0].dtype, 0, NULL, n, err);
  if (rc == 0 && nout > 1) rc = hs_set_shape(&out[1], in[0].dtype, in[0].ndim, in[0].dims, n, err);
  return rc;
}

static size_t loss_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)nin, (void)out, (void)nout;
  const loss_params *p = (const loss_params *)n->params.bytes;
  return p->softmax ? in[0].nbytes : 0;
}

static int loss_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  const loss_params *p = (const loss_params *)n->params.bytes;
  int rc = loss_shapes(n, in, nin, err);
  if (rc) return rc;
  const int64_t N = in[0].dims[0], C = in[0].dims[1], D = N ? hs_numel(&in[0]) / (N * (C ? C : 1)) : 0;
  const hs_tensor *w = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  hs_tensor lp = in[0]; /* the log-probabilities read below */
  if (p->softmax) {
    lp.data = nout > 1 && n->out[1] >= 0 ? out[1].data : scratch;
    for (int64_t i = 0; i < N; i++)
      for (int64_t d = 0; d < D; d++) {
        double m = -INFINITY, s = 0;
        for (int64_t c = 0; c < C; c++) m = fmax(m, hs_load_f64(&in[0], (i * C + c) * D + d));
        for (int64_t c = 0; c < C; c++) s += exp(hs_load_f64(&in[0], (i * C + c) * D + d) - m);
        double ls = log(s);
        for (int64_t c = 0; c < C; c++) {
          int64_t k = (i * C + c) * D + d;
          hs_store_f64(&lp, k, hs_load_f64(&in[0], k) - m - ls);
        }
      }
  }
  double total = 0, wsum = 0;
  for (int64_t i = 0; i < N; i++)
    for (int64_t d = 0; d < D; d++) {
      int64_t t = hs_get_int(&in[1], i * D + d);
      double l = 0, wt = 0;
      if (!(p->has_ignore && t == p->ignore)) {
        if (t < 0 || t >= C)
          return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "target %lld is outside 0..%lld", (long long)t,
                            (long long)(C - 1));
        wt = w ? hs_load_f64(w, t) : 1.0;
        l = -hs_load_f64(&lp, (i * C + t) * D + d) * wt;
      }
      if (p->reduction == LR_NONE) hs_store_f64(&out[0], i * D + d, l);
      total += l;
      wsum += wt;
    }
  if (p->reduction == LR_SUM) hs_store_f64(&out[0], 0, total);
  if (p->reduction == LR_MEAN) hs_store_f64(&out[0], 0, total / (w || p->has_ignore ? wsum : (double)(N * D)));
  return 0;
}

const hs_op_impl hs_op_impl_loss = {
    .check = loss_check,
    .infer = loss_infer,
    .scratch_bytes = loss_scratch,
    .run = loss_run,
};

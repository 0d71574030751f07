/* signal.c - window functions: HannWindow, HammingWindow, BlackmanWindow (opset 17). */

/*
 * DESIGN
 * The window's length is the contents of its input, so that input must be known when a session
 * plans (value_inputs bit 0: a graph input or constant). Values are computed in double as ONNX's
 * reference does (a0 - a1 cos(2 pi n / N') + a2 cos(4 pi n / N'), N' = size when periodic, else
 * size - 1) and stored in output_datatype.
 */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

typedef struct {
  int periodic;
  int64_t dtype;
  double a0, a1, a2;
} window_params;

static int window_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  window_params *p = (window_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  int64_t periodic;
  int rc = hs_node_only_attrs(n, "output_datatype,periodic", err);
  if (rc || (rc = hs_attr_int(n, "periodic", 1, &periodic, err)) ||
      (rc = hs_attr_int(n, "output_datatype", HS_DT_FLOAT32, &p->dtype, err)))
    return rc;
  p->periodic = periodic != 0;
  if (p->dtype != HS_DT_FLOAT32 && p->dtype != HS_DT_FLOAT64 && p->dtype != HS_DT_INT64 && p->dtype != HS_DT_INT32)
    return hs_op_errf(err, n, HS_UNSUPPORTED, "output_datatype %lld is not supported", (long long)p->dtype);
  if (n->op == HS_OP_HannWindow) p->a0 = 0.5, p->a1 = 0.5;
  else if (n->op == HS_OP_HammingWindow) p->a0 = 25.0 / 46.0, p->a1 = 1.0 - 25.0 / 46.0;
  else p->a0 = 0.42, p->a1 = 0.5, p->a2 = 0.08;
  return 0;
}

static int window_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nin, (void)nout;
  const window_params *p = (const window_params *)n->params.bytes;
  if ((in[0].dtype != HS_DT_INT64 && in[0].dtype != HS_DT_INT32) || hs_numel(&in[0]) != 1)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "size must be one integer");
  int64_t size = hs_get_int(&in[0], 0);
  if (size < 0 || size > ((int64_t)1 << 31)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "size %lld", (long long)size);
  return hs_set_shape(&out[0], (hs_dtype)p->dtype, 1, &size, n, err);
}

static int window_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  (void)in, (void)nin, (void)nout, (void)scratch, (void)err;
  const window_params *p = (const window_params *)n->params.bytes;
  int64_t size = out[0].dims[0];
  double den = p->periodic ? (double)size : (double)(size - 1);
  for (int64_t i = 0; i < size; i++) {
    double x = den > 0 ? 2.0 * M_PI * (double)i / den : 0;
    hs_store_f64(&out[0], i, p->a0 - p->a1 * cos(x) + p->a2 * cos(2 * x));
  }
  return 0;
}

const hs_op_impl hs_op_impl_window = {
    .check = window_check,
    .infer = window_infer,
    .run = window_run,
};

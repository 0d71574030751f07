/* table.c - the one op table: every op family's definitions, looked up by ONNX op_type. */
#include <pthread.h>
#include <string.h>

#include "ops/ops.h"

/* Each family array ends with an entry whose name is NULL. Adding a family: one line here. */
static const hs_op_def *const k_families[] = {
    hs_ops_elementwise, hs_ops_matmul, hs_ops_shape, hs_ops_conv,
    hs_ops_pool,        hs_ops_norm,   hs_ops_reduce, hs_ops_resize, hs_ops_logic,
    /* ---- issue 12 coverage (s12-coverage): new op families, one file each ---- */
    hs_ops_rnn,    hs_ops_index,      hs_ops_math,     hs_ops_loss,  hs_ops_linalg,
    hs_ops_norm_extra, hs_ops_movement, hs_ops_signal, hs_ops_quant, hs_ops_detect,
    /* ---- end of issue 12 block ---- */
};

#define HS_MAX_OPS 256
static const hs_op_def *g_ops[HS_MAX_OPS];
static int g_n_ops = -1;
static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;

static void build_table(void) {
  int n = 0;
  for (size_t f = 0; f < sizeof k_families / sizeof k_families[0]; f++)
    for (const hs_op_def *d = k_families[f]; d->name && n < HS_MAX_OPS; d++) g_ops[n++] = d;
  g_n_ops = n;
}

/* The table is built once, by whichever thread first asks (models may load on several threads). */
static void ensure_table(void) { pthread_once(&g_table_once, build_table); }

int hs_op_count(void) {
  ensure_table();
  return g_n_ops;
}

const hs_op_def *hs_op_get(int index) {
  ensure_table();
  return index >= 0 && index < g_n_ops ? g_ops[index] : NULL;
}

int hs_op_find(const char *op_type) {
  ensure_table();
  for (int i = 0; i < g_n_ops; i++)
    if (strcmp(g_ops[i]->name, op_type) == 0) return i;
  return -1;
}

#define HS_MIN_OPSET 1
#define HS_MAX_OPSET 21

int hs_op_bind(hs_node *n, const hs_graph *g, hs_error *err) {
  if (n->domain[0])
    return hs_error_set(err, HS_UNSUPPORTED, "node '%s': op %s of domain '%s' is not supported", n->name,
                        n->op_type, n->domain);
  int idx = hs_op_find(n->op_type);
  if (idx < 0)
    return hs_error_set(err, HS_UNSUPPORTED, "node '%s': op %s (opset %d) is not supported", n->name, n->op_type,
                        n->opset);
  const hs_op_def *d = g_ops[idx];
  if (n->opset < HS_MIN_OPSET || n->opset > HS_MAX_OPSET || n->opset < d->since)
    return hs_error_set(err, HS_UNSUPPORTED, "node '%s': op %s at opset %d is not supported (opsets %d-%d)",
                        n->name, n->op_type, n->opset, d->since, HS_MAX_OPSET);
  /* trailing omitted optional inputs/outputs do not count */
  int nin = n->n_in, nout = n->n_out;
  while (nin > 0 && n->in[nin - 1] < 0) nin--;
  while (nout > 0 && n->out[nout - 1] < 0) nout--;
  if (nin < d->min_in || nin > d->max_in)
    return hs_error_set(err, HS_PARSE, "node '%s' (%s): %d inputs, expected %d to %d", n->name, n->op_type, nin,
                        d->min_in, d->max_in);
  if (nout < d->min_out || nout > d->max_out)
    return hs_error_set(err, HS_UNSUPPORTED, "node '%s' (%s): %d outputs, supported %d to %d", n->name,
                        n->op_type, nout, d->min_out, d->max_out);
  for (int i = 0; i < d->min_in; i++)
    if (n->in[i] < 0)
      return hs_error_set(err, HS_PARSE, "node '%s' (%s): required input %d is empty", n->name, n->op_type, i);
  n->op = idx;
  return d->check ? d->check(n, g, err) : hs_node_only_attrs(n, "", err);
}

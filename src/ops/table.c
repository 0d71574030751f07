/* table.c - the one op table, generated from op_list.h, and binding a node to its row. */
#include <string.h>

#include "ops/ops.h"

/* Each op family's file defines the hs_op_impl_<impl> its lines in op_list.h name. */
#define HS_X_IMPL(op, impl, ...) extern const hs_op_impl hs_op_impl_##impl;
HS_OP_LIST(HS_X_IMPL)
#undef HS_X_IMPL

const hs_op_def hs_op_table[HS_OP_COUNT] = {
#define HS_X_ROW(op, impl_, since_, min_in_, max_in_, min_out_, max_out_, value_inputs_, flags_)                  \
  [HS_OP_##op] = {.id = HS_OP_##op, .name = #op, .since = since_, .min_in = min_in_, .max_in = max_in_,          \
                  .min_out = min_out_, .max_out = max_out_, .value_inputs = value_inputs_, .flags = flags_, \
                  .impl = &hs_op_impl_##impl_},
    HS_OP_LIST(HS_X_ROW)
#undef HS_X_ROW
};

/* Adding or removing an op changes this count on purpose: follow the checklist in docs/KERNELS.md
 * (the family file's entry points, the conformance cases enabled, the docs' op list), then update it. */
_Static_assert(HS_OP_COUNT == 156, "the op list changed: see 'Adding an op' in docs/KERNELS.md");

int hs_op_find(const char *op_type) {
  for (int i = 0; i < HS_OP_COUNT; i++)
    if (strcmp(hs_op_table[i].name, op_type) == 0) return i;
  return -1;
}

#define HS_MIN_OPSET 1
#define HS_MAX_OPSET 21

int hs_op_bind(hs_node *n, const hs_graph *g, hs_error *err) {
  if (n->domain[0])
    return hs_error_set(err, HS_UNSUPPORTED, "node '%s': op %s of domain '%s' is not supported", n->name,
                        n->op_type, n->domain);
  int idx = hs_op_find(n->op_type);
  if (idx < 0 || (hs_op_table[idx].flags & HS_OP_INTERNAL))
    return hs_error_set(err, HS_UNSUPPORTED, "node '%s': op %s (opset %d) is not supported", n->name, n->op_type,
                        n->opset);
  const hs_op_def *d = &hs_op_table[idx];
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
  return d->impl->check ? d->impl->check(n, g, err) : hs_node_only_attrs(n, "", err);
}

int hs_op_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  const hs_op_def *d = hs_op_get(n->op);
  return d && d->impl->fuse ? d->impl->fuse(n, f, err) : HS_FUSE_REFUSED;
}

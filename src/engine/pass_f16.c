/* pass_f16.c - runs float16 models in float32: constants widened once, Casts at the graph's float16 edges. */

/*
 * DESIGN
 * The ops compute in float32 (few have a float16 path), so a model whose weights and activations
 * are float16 (GPU exports) is rewritten once at compile: float16 constants (and ConstantOfShape's
 * value) become float32 copies, every float16 graph input gets a Cast to float32 in front of its
 * readers, every float16 graph output is produced by a Cast back to float16, Casts to float16 inside
 * the graph cast to float32 instead, and float16 types declared for intermediate values are
 * dropped. The model's interface stays float16; inside, only float32 flows. The pass runs only on
 * "float16 models" (a float16 constant or graph input): a float32 model that casts to float16 on
 * purpose keeps its Casts. Results differ from a float16 device's by float16's rounding of
 * intermediate values, which this computes in float32.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "engine/passes.h"
#include "ops/ops.h"

static int is_f16_model(const hs_graph *g) {
  for (int v = 0; v < g->n_values; v++) {
    const hs_value *val = &g->values[v];
    if (val->dtype == HS_DT_FLOAT16 && (val->kind == HS_VAL_CONST || val->kind == HS_VAL_INPUT)) return 1;
  }
  return 0;
}

/* Replaces t's float16 contents by float32 ones (t owns data). */
static int widen(void **data, size_t *nbytes, hs_dtype *dtype, hs_error *err) {
  size_t n = *nbytes / 2;
  float *f = malloc(n * sizeof *f + 1);
  if (!f) return hs_error_set(err, HS_NO_MEMORY, "out of memory widening a float16 constant");
  const uint16_t *h = *data;
  for (size_t i = 0; i < n; i++) f[i] = hs_half_to_float(h[i]);
  free(*data);
  *data = f;
  *nbytes = n * sizeof *f;
  *dtype = HS_DT_FLOAT32;
  return 0;
}

/* Appends node Cast(from) -> to, with attribute to = dtype, bound to the op table. */
static int add_cast(hs_graph *g, int from, int to, hs_dtype dtype, hs_error *err) {
  int ni, rc = hs_graph_add_node(g, &ni, err);
  if (rc) return rc;
  hs_node *n = &g->nodes[ni];
  char name[300];
  snprintf(name, sizeof name, "f16_edge_cast_%s", g->values[to].name);
  n->name = strdup(name);
  n->op_type = strdup("Cast");
  n->domain = strdup("");
  n->opset = g->opset;
  n->in = malloc(sizeof(int));
  n->out = malloc(sizeof(int));
  n->attrs = calloc(1, sizeof *n->attrs);
  if (!n->name || !n->op_type || !n->domain || !n->in || !n->out || !n->attrs ||
      !(n->attrs[0].name = strdup("to")))
    return hs_error_set(err, HS_NO_MEMORY, "out of memory adding a Cast");
  n->n_attrs = 1;
  n->attrs[0].type = HS_ATTR_INT;
  n->attrs[0].i = dtype;
  n->n_in = n->n_out = 1;
  n->in[0] = from;
  n->out[0] = to;
  g->values[to].producer = ni;
  return hs_op_bind(n, g, err);
}

/* A fresh intermediate value named after v, typed and shaped as v with dtype dt. */
static int add_twin(hs_graph *g, int v, hs_dtype dt, int *out, hs_error *err) {
  char name[300];
  snprintf(name, sizeof name, "%s__f32", g->values[v].name);
  int rc = hs_graph_add_value(g, name, HS_VAL_INTERMEDIATE, out, err);
  if (rc) return rc;
  hs_value *t = &g->values[*out], *src = &g->values[v];
  t->dtype = dt;
  t->ndim = src->ndim;
  memcpy(t->dims, src->dims, sizeof t->dims);
  return 0;
}

int hs_pass_f16_to_f32(hs_graph *g, int *changed, hs_error *err) {
  if (!is_f16_model(g)) return 0;
  int rc, n_nodes = g->n_nodes, n_values = g->n_values;
  *changed = 1;
  for (int v = 0; v < n_values; v++) { /* constants widen; declared intermediate types go */
    hs_value *val = &g->values[v];
    if (val->dtype != HS_DT_FLOAT16) continue;
    int is_output = 0;
    for (int k = 0; k < g->n_outputs; k++) is_output |= g->outputs[k] == v;
    if (is_output) continue; /* keeps float16: a Cast makes it below */
    if (val->kind == HS_VAL_CONST && (rc = widen(&val->data, &val->nbytes, &val->dtype, err))) return rc;
    if (val->kind == HS_VAL_INTERMEDIATE) val->dtype = HS_DT_UNDEFINED;
  }
  for (int i = 0; i < n_nodes; i++) { /* Casts to float16 and float16 attribute tensors */
    hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    int touched = 0;
    for (int a = 0; a < n->n_attrs; a++) {
      hs_attr *at = &n->attrs[a];
      if (n->op == HS_OP_Cast && !strcmp(at->name, "to") && at->type == HS_ATTR_INT && at->i == HS_DT_FLOAT16) {
        at->i = HS_DT_FLOAT32;
        touched = 1;
      }
      if (at->type == HS_ATTR_TENSOR && at->tensor && at->tensor->t.dtype == HS_DT_FLOAT16) {
        if ((rc = widen(&at->tensor->t.data, &at->tensor->t.nbytes, &at->tensor->t.dtype, err))) return rc;
        touched = 1;
      }
    }
    /* the node was bound before this pass: its params were parsed from the old attributes */
    if (touched && (rc = hs_op_bind(n, g, err))) return rc;
  }
  for (int k = 0; k < g->n_inputs; k++) { /* float16 inputs: readers get a float32 Cast of them */
    int in = g->inputs[k], tw;
    if (g->values[in].dtype != HS_DT_FLOAT16) continue;
    if ((rc = add_twin(g, in, HS_DT_UNDEFINED, &tw, err))) return rc;
    for (int i = 0; i < n_nodes; i++)
      for (int j = 0; j < g->nodes[i].n_in; j++)
        if (g->nodes[i].in[j] == in) g->nodes[i].in[j] = tw;
    if ((rc = add_cast(g, in, tw, HS_DT_FLOAT32, err))) return rc;
  }
  for (int k = 0; k < g->n_outputs; k++) { /* float16 outputs: a Cast back from a float32 twin */
    int out = g->outputs[k], tw, p = g->values[out].producer;
    if (g->values[out].kind != HS_VAL_INTERMEDIATE || g->values[out].dtype != HS_DT_FLOAT16 || p < 0 || p >= n_nodes)
      continue;
    if ((rc = add_twin(g, out, HS_DT_UNDEFINED, &tw, err))) return rc;
    hs_node *prod = &g->nodes[p];
    for (int j = 0; j < prod->n_out; j++)
      if (prod->out[j] == out) prod->out[j] = tw;
    g->values[tw].producer = p;
    for (int i = 0; i < n_nodes; i++)
      for (int j = 0; j < g->nodes[i].n_in; j++)
        if (g->nodes[i].in[j] == out) g->nodes[i].in[j] = tw;
    if ((rc = add_cast(g, tw, out, HS_DT_FLOAT16, err))) return rc;
  }
  return 0;
}

/* ir.c - graph IR bookkeeping: values, nodes, name lookup, attributes, topological order. */
#include "ir/ir.h"

#include <stdlib.h>
#include <string.h>

#include "base/wblock.h"

void hs_graph_init(hs_graph *g) {
  memset(g, 0, sizeof *g);
}

void hs_attr_clear(hs_attr *a) {
  free(a->name);
  free(a->s);
  free(a->ints);
  free(a->floats);
  if (a->tensor) {
    free(a->tensor->t.data);
    free(a->tensor);
  }
  if (a->graph) {
    hs_graph_free(a->graph);
    free(a->graph);
  }
  memset(a, 0, sizeof *a);
}

void hs_graph_free(hs_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *n = &g->nodes[i];
    if (n->state && n->free_state) n->free_state(n->state);
    free(n->name);
    free(n->op_type);
    free(n->domain);
    free(n->in);
    free(n->out);
    for (int a = 0; a < n->n_attrs; a++) hs_attr_clear(&n->attrs[a]);
    free(n->attrs);
  }
  for (int i = 0; i < g->n_values; i++) {
    free(g->values[i].name);
    hs_wblock_free(g->values[i].data); /* the streaming decoder's are weight blocks (onnx/decode.c) */
    if (g->values[i].ref) g->values[i].ref_free(g->values[i].ref);
  }
  free(g->values);
  free(g->nodes);
  free(g->inputs);
  free(g->outputs);
  free(g->order);
  free(g->hash);
  memset(g, 0, sizeof *g);
}

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

int hs_graph_find(const hs_graph *g, const char *name) {
  if (!g->hash_cap) return -1;
  size_t mask = (size_t)g->hash_cap - 1;
  for (size_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
    int v = g->hash[i];
    if (v < 0) return -1;
    if (strcmp(g->values[v].name, name) == 0) return v;
  }
}

static void hash_insert(hs_graph *g, int v) {
  size_t mask = (size_t)g->hash_cap - 1;
  size_t i = name_hash(g->values[v].name) & mask;
  while (g->hash[i] >= 0) i = (i + 1) & mask;
  g->hash[i] = v;
}

static int hash_grow(hs_graph *g) {
  int cap = g->hash_cap ? g->hash_cap * 2 : 64;
  int *h = malloc(sizeof(int) * (size_t)cap);
  if (!h) return HS_NO_MEMORY;
  for (int i = 0; i < cap; i++) h[i] = -1;
  free(g->hash);
  g->hash = h;
  g->hash_cap = cap;
  for (int v = 0; v < g->n_values; v++) hash_insert(g, v);
  return 0;
}

int hs_graph_add_value(hs_graph *g, const char *name, hs_value_kind kind, int *index, hs_error *err) {
  if (hs_graph_find(g, name) >= 0)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "value '%s' is defined twice", name);
  if (g->n_values == g->cap_values) {
    int cap = g->cap_values ? g->cap_values * 2 : 64;
    hs_value *nv = realloc(g->values, sizeof *nv * (size_t)cap);
    if (!nv) return hs_error_set(err, HS_NO_MEMORY, "out of memory adding value");
    g->values = nv;
    g->cap_values = cap;
  }
  if ((g->n_values + 1) * 2 > g->hash_cap && hash_grow(g))
    return hs_error_set(err, HS_NO_MEMORY, "out of memory adding value");
  hs_value *v = &g->values[g->n_values];
  memset(v, 0, sizeof *v);
  v->name = strdup(name);
  if (!v->name) return hs_error_set(err, HS_NO_MEMORY, "out of memory adding value");
  v->kind = kind;
  v->ndim = -1;
  v->producer = -1;
  v->input_index = -1;
  *index = g->n_values++;
  hash_insert(g, *index);
  return 0;
}

int hs_graph_add_node(hs_graph *g, int *index, hs_error *err) {
  if (g->n_nodes == g->cap_nodes) {
    int cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
    hs_node *nn = realloc(g->nodes, sizeof *nn * (size_t)cap);
    if (!nn) return hs_error_set(err, HS_NO_MEMORY, "out of memory adding node");
    g->nodes = nn;
    g->cap_nodes = cap;
  }
  hs_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->op = -1;
  *index = g->n_nodes++;
  return 0;
}

int hs_value_set_const(hs_value *v, const hs_tensor *t, hs_error *err) {
  void *copy = NULL;
  if (t->nbytes) {
    copy = malloc(t->nbytes);
    if (!copy) return hs_error_set(err, HS_NO_MEMORY, "out of memory for constant '%s'", v->name);
    memcpy(copy, t->data, t->nbytes);
  }
  hs_wblock_free(v->data);
  v->data = copy;
  v->nbytes = t->nbytes;
  v->kind = HS_VAL_CONST;
  v->dtype = t->dtype;
  v->ndim = t->ndim;
  memcpy(v->dims, t->dims, sizeof v->dims);
  v->producer = -1;
  return 0;
}

void hs_graph_release_const(hs_graph *g, int v) {
  hs_value *val = &g->values[v];
  if (val->kind != HS_VAL_CONST) return;
  hs_wblock_free(val->data);
  val->data = NULL; /* nbytes stays: the value keeps its shape */
  if (val->ref) val->ref_free(val->ref);
  val->ref = NULL;
}

size_t hs_graph_const_bytes(const hs_graph *g) {
  size_t total = 0;
  for (int v = 0; v < g->n_values; v++)
    if (g->values[v].kind == HS_VAL_CONST && g->values[v].data) total += g->values[v].nbytes;
  return total;
}

/* Kahn's algorithm over live nodes; the order is stable with respect to the file order. */
int hs_graph_finish(hs_graph *g, hs_error *err) {
  for (int v = 0; v < g->n_values; v++) g->values[v].n_uses = 0;
  int *pending = calloc((size_t)g->n_nodes + 1, sizeof(int));
  int *order = malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
  int *queue = malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
  /* consumers lists in CSR form */
  int *cons_start = calloc((size_t)g->n_values + 1, sizeof(int));
  int total_in = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (!g->nodes[i].dead) total_in += g->nodes[i].n_in;
  int *cons = malloc(sizeof(int) * ((size_t)total_in + 1));
  int *fill = calloc((size_t)g->n_values + 1, sizeof(int));
  int rc = 0;
  if (!pending || !order || !queue || !cons_start || !cons || !fill) {
    rc = hs_error_set(err, HS_NO_MEMORY, "out of memory ordering the graph");
    goto done;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v < 0) continue;
      g->values[v].n_uses++;
      cons_start[v + 1]++;
      if (g->values[v].kind == HS_VAL_INTERMEDIATE) {
        int p = g->values[v].producer;
        if (p < 0 || g->nodes[p].dead) {
          rc = hs_error_set(err, HS_PARSE, "node '%s' (%s) reads '%s', which nothing produces", n->name,
                            n->op_type, g->values[v].name);
          goto done;
        }
        pending[i]++;
      }
    }
  }
  for (int v = 0; v < g->n_values; v++) cons_start[v + 1] += cons_start[v];
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v >= 0) cons[cons_start[v] + fill[v]++] = i;
    }
  }
  int qh = 0, qt = 0, n_order = 0, live = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead) continue;
    live++;
    if (pending[i] == 0) queue[qt++] = i;
  }
  while (qh < qt) {
    int i = queue[qh++];
    order[n_order++] = i;
    hs_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      if (v < 0) continue;
      for (int c = cons_start[v]; c < cons_start[v + 1]; c++)
        if (--pending[cons[c]] == 0) queue[qt++] = cons[c];
    }
  }
  if (n_order != live) {
    const char *name = "?";
    for (int i = 0; i < g->n_nodes; i++)
      if (!g->nodes[i].dead && pending[i] > 0) {
        name = g->nodes[i].name;
        break;
      }
    rc = hs_error_set(err, HS_PARSE, "the graph has a cycle (through node '%s')", name);
    goto done;
  }
  for (int k = 0; k < g->n_outputs; k++) g->values[g->outputs[k]].n_uses++;
  free(g->order);
  g->order = order;
  g->n_order = n_order;
  order = NULL;
done:
  free(pending);
  free(order);
  free(queue);
  free(cons_start);
  free(cons);
  free(fill);
  return rc;
}

const hs_attr *hs_node_attr(const hs_node *n, const char *name) {
  for (int i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

static int wrong_type(const hs_node *n, const char *name, hs_error *err) {
  return hs_error_set(err, HS_INVALID_ARGUMENT, "node '%s' (%s): attribute '%s' has the wrong type", n->name,
                      n->op_type, name);
}

int hs_attr_int(const hs_node *n, const char *name, int64_t def, int64_t *out, hs_error *err) {
  const hs_attr *a = hs_node_attr(n, name);
  if (!a) {
    *out = def;
    return 0;
  }
  if (a->type != HS_ATTR_INT) return wrong_type(n, name, err);
  *out = a->i;
  return 0;
}

int hs_attr_float(const hs_node *n, const char *name, float def, float *out, hs_error *err) {
  const hs_attr *a = hs_node_attr(n, name);
  if (!a) {
    *out = def;
    return 0;
  }
  if (a->type == HS_ATTR_INT) { /* some exporters write integral floats as ints */
    *out = (float)a->i;
    return 0;
  }
  if (a->type != HS_ATTR_FLOAT) return wrong_type(n, name, err);
  *out = a->f;
  return 0;
}

int hs_attr_ints(const hs_node *n, const char *name, const int64_t **out, size_t *count, hs_error *err) {
  const hs_attr *a = hs_node_attr(n, name);
  if (!a) {
    *out = NULL;
    *count = 0;
    return 0;
  }
  if (a->type != HS_ATTR_INTS) return wrong_type(n, name, err);
  *out = a->ints;
  *count = a->n;
  return 0;
}

int hs_attr_string(const hs_node *n, const char *name, const char *def, const char **out, hs_error *err) {
  const hs_attr *a = hs_node_attr(n, name);
  if (!a) {
    *out = def;
    return 0;
  }
  if (a->type != HS_ATTR_STRING) return wrong_type(n, name, err);
  *out = a->s;
  return 0;
}

int hs_node_only_attrs(const hs_node *n, const char *allowed, hs_error *err) {
  for (int i = 0; i < n->n_attrs; i++) {
    const char *name = n->attrs[i].name;
    size_t len = strlen(name);
    const char *p = allowed;
    int found = 0;
    while (*p && !found) {
      const char *comma = strchr(p, ',');
      size_t l = comma ? (size_t)(comma - p) : strlen(p);
      if (l == len && strncmp(p, name, len) == 0) found = 1;
      p = comma ? comma + 1 : p + l;
    }
    if (!found)
      return hs_error_set(err, HS_UNSUPPORTED, "node '%s' (%s, opset %d): attribute '%s' is not supported",
                          n->name, n->op_type, n->opset, name);
  }
  return 0;
}

/* ir.h - the engine's own graph IR: values, nodes with parsed attributes, constants.
 *
 * The ONNX front end (decode.c) builds an hs_graph from a model file; passes rewrite it; the
 * planner and executor read it. Kernels see only hs_tensor views and the node's parsed params,
 * never protobuf. A graph owns every string, attribute and constant buffer it points to;
 * hs_graph_free releases all of it.
 */
#ifndef HS_IR_IR_H
#define HS_IR_IR_H

#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"

/* Attribute types, numbered as AttributeProto.AttributeType. */
typedef enum {
  HS_ATTR_UNDEFINED = 0,
  HS_ATTR_FLOAT = 1,
  HS_ATTR_INT = 2,
  HS_ATTR_STRING = 3,
  HS_ATTR_TENSOR = 4,
  HS_ATTR_GRAPH = 5,
  HS_ATTR_FLOATS = 6,
  HS_ATTR_INTS = 7,
  HS_ATTR_STRINGS = 8,
} hs_attr_type;

/* A constant tensor owned by whoever holds it (a graph value or an attribute). */
typedef struct hs_const {
  hs_tensor t; /* t.data is malloc'ed (or NULL when nbytes is 0) */
} hs_const;

typedef struct hs_attr {
  char *name;
  hs_attr_type type;
  int64_t i;
  float f;
  char *s;          /* NUL-terminated (STRING); STRINGS: the n strings back to back, each NUL-terminated */
  int64_t *ints;    /* INTS */
  float *floats;    /* FLOATS */
  size_t n;         /* element count of ints/floats/strings */
  hs_const *tensor; /* TENSOR */
  struct hs_graph *graph; /* GRAPH: a subgraph (If branches, Loop / Scan bodies), owned */
  int sub;          /* GRAPH: index of its compiled form among the engine model's subgraphs, -1 before */
} hs_attr;

/* Value kinds: where a value's bytes come from. */
typedef enum {
  HS_VAL_INTERMEDIATE = 0, /* produced by a node */
  HS_VAL_INPUT,            /* a graph input, given at run time */
  HS_VAL_CONST,            /* an initializer or folded constant: data owned by the graph */
} hs_value_kind;

typedef struct hs_value {
  char *name;
  hs_value_kind kind;
  hs_dtype dtype;          /* HS_DT_UNDEFINED when not yet known */
  int ndim;                /* -1 when the rank is unknown */
  int64_t dims[HS_MAX_DIMS]; /* -1 for a symbolic / unknown dimension */
  void *data;              /* HS_VAL_CONST: the contents (owned: malloc'ed or a weight block,
                            * base/wblock.h; freed with hs_wblock_free); NULL with nbytes > 0
                              once released (hs_graph_release_const): its reader's state holds them */
  size_t nbytes;
  /* HS_VAL_CONST decoded without data of its own (data NULL): a reference to an identical copy held
   * outside the graph, e.g. a Conv kernel of another loaded version (engine.c, kernels/kshare.h);
   * the graph releases it with ref_free when the value is released or freed. NULL otherwise. */
  void *ref;
  void (*ref_free)(void *ref);
  int producer;            /* node index, -1 for inputs and constants */
  int input_index;         /* position among graph inputs, or -1 */
  int n_uses;              /* how many node inputs read it (filled by hs_graph_finish) */
} hs_value;

/* Op-specific parsed attributes live inline in the node (each op casts to its own struct). */
#define HS_OP_PARAMS_BYTES 512
typedef union hs_op_params {
  unsigned char bytes[HS_OP_PARAMS_BYTES];
  int64_t align_i;
  double align_d;
  void *align_p;
} hs_op_params;

typedef struct hs_graph hs_graph;

typedef struct hs_node {
  char *name;    /* never NULL (an unnamed node is named "<op_type>_<index>") */
  char *op_type;
  char *domain;  /* "" for the default ONNX domain */
  int opset;     /* opset version of the node's domain */
  int op;        /* op id (hs_op_id, ops/op_list.h) once bound, -1 until then */
  int n_in, n_out;
  int *in;       /* value indices; -1 for an omitted optional input */
  int *out;      /* value indices; -1 for an omitted optional output */
  hs_attr *attrs;
  int n_attrs;
  int n_implicit; /* the last n_implicit inputs are outer-scope values its subgraphs read (see hs_graph) */
  int dead;      /* removed by a pass; skipped everywhere */
  hs_op_params params;     /* filled by the op's check() */
  void *state;             /* immutable kernel state from the op's prepare(), shared by sessions */
  void (*free_state)(void *state);
  /* Optional, set by prepare(): called once when compiling ends (single-threaded, after the trial
   * plans built kernels), so the op can release constants its state now holds in another form. */
  void (*release_consts)(struct hs_node *n, struct hs_graph *g);
} hs_node;

struct hs_graph {
  hs_value *values;
  int n_values, cap_values;
  hs_node *nodes;
  int n_nodes, cap_nodes;
  int *inputs;   /* graph inputs that are not initializers, in model order */
  int n_inputs;
  int *outputs;
  int n_outputs;
  int *order;    /* topological order of live nodes (filled by hs_graph_finish) */
  int n_order;
  int64_t ir_version;
  int opset;     /* default-domain opset */
  /* Subgraphs (a node's GRAPH attribute). Names a subgraph reads but does not define are outer-scope
   * references: decode.c makes each one an extra graph input (the last n_outer of `inputs`, shape
   * unknown until run) and adds the same name to the owning node's inputs, as an implicit input, at
   * slot outer_base + j. So a subgraph is a graph like any other: its runner passes the formal inputs
   * followed by the node's implicit inputs. */
  int is_subgraph;
  int n_outer;
  int outer_base;
  /* name -> value index (open addressing) */
  int *hash;
  int hash_cap;
};

void hs_graph_init(hs_graph *g);
void hs_graph_free(hs_graph *g);

/* Finds a value by name; -1 when absent. */
int hs_graph_find(const hs_graph *g, const char *name);
/* Adds a value named `name` (copied) and returns its index; HS_INVALID_ARGUMENT when the name is
 * already taken, HS_NO_MEMORY on allocation failure. */
int hs_graph_add_value(hs_graph *g, const char *name, hs_value_kind kind, int *index, hs_error *err);
/* Appends an empty node (all fields zero, op = -1) and returns its index through *index. */
int hs_graph_add_node(hs_graph *g, int *index, hs_error *err);

/* Recomputes uses and the topological order of live nodes; fails with HS_PARSE naming a node on
 * a cycle, or a value read before anything produces it. */
int hs_graph_finish(hs_graph *g, hs_error *err);

/* Makes value v a constant holding a copy of t (shape, dtype, bytes). */
int hs_value_set_const(hs_value *v, const hs_tensor *t, hs_error *err);

/* Frees constant v's contents once the one node that reads it holds them in its state (e.g. a
 * Conv's weights, reordered inside its kernel). Shape, dtype and nbytes stay: plans still see the
 * value, with its contents unknown. */
void hs_graph_release_const(hs_graph *g, int v);
/* Bytes of constant contents the graph itself still holds (released constants count 0). */
size_t hs_graph_const_bytes(const hs_graph *g);

/* Attribute lookup; NULL when the node has no attribute of that name. */
const hs_attr *hs_node_attr(const hs_node *n, const char *name);
/* Typed lookups with defaults; fail with HS_INVALID_ARGUMENT naming the node when the attribute
 * exists with another type. */
int hs_attr_int(const hs_node *n, const char *name, int64_t def, int64_t *out, hs_error *err);
int hs_attr_float(const hs_node *n, const char *name, float def, float *out, hs_error *err);
/* *out points into the node (or is def); *count its length. */
int hs_attr_ints(const hs_node *n, const char *name, const int64_t **out, size_t *count, hs_error *err);
int hs_attr_string(const hs_node *n, const char *name, const char *def, const char **out, hs_error *err);
/* Fails with HS_UNSUPPORTED naming the first attribute of n not listed in `allowed`
 * (a comma-separated list, e.g. "axis,keepdims"). */
int hs_node_only_attrs(const hs_node *n, const char *allowed, hs_error *err);

/* Frees an attribute's contents (not the struct). */
void hs_attr_clear(hs_attr *a);

#endif

/* passes.h - the graph rewrite pipeline run by compile (passes.c, pass_fuse*.c). */
#ifndef HS_ENGINE_PASSES_H
#define HS_ENGINE_PASSES_H

#include "ir/ir.h"

/* A pass rewrites the graph in place (marking nodes dead, redirecting inputs, adding constants);
 * it sets *changed when it did anything. hs_graph_finish runs after each pass that changed. */
typedef struct hs_pass {
  const char *name;
  int (*run)(hs_graph *g, int *changed, hs_error *err);
} hs_pass;

/* Runs the named pipeline ("default") over g; ops must already be bound. */
int hs_pass_pipeline(hs_graph *g, const char *pipeline, hs_error *err);

/* Evaluates node n on constant inputs (used by constant folding): outputs become constants. */
int hs_eval_const_node(hs_graph *g, int node, hs_error *err);

#endif

/* subgraph.h - subgraphs and control flow in the engine: compiling a graph's subgraphs, running one
 * for a control-flow op, and running a dynamic graph node by node (subgraph.c). */
#ifndef HS_ENGINE_SUBGRAPH_H
#define HS_ENGINE_SUBGRAPH_H

#include "engine/engine.h"

/* Compiles model m's graph in place (bind, passes, prepare, io); the core of hs_engine_compile,
 * used for subgraphs too (engine.c). */
int hs_engine_compile_graph(hs_engine_model *m, const hs_backend_options *opts, hs_error *err);
/* One run of session s on inputs already checked (engine.c): planned, or node by node when dynamic. */
int hs_engine_session_exec(hs_engine_session *s, const hs_tensor *inputs, hs_tensor *outputs, hs_error *err);

/* Before binding: every If whose condition is a constant is replaced by its live branch (values renamed
 * "<if node>/<name>", outputs through Identity nodes), the dead branch dropped unseen, so a model whose
 * exporter left an If on a constant compiles as a plain, planned graph. *folded counts them. */
int hs_fold_const_ifs(hs_graph *g, int *folded, hs_error *err);
/* Compiles the subgraph of every GRAPH attribute of m's nodes into m->subs (setting hs_attr.sub). */
int hs_subgraphs_compile(hs_engine_model *m, const hs_backend_options *opts, hs_error *err);
/* Runs dynamic model s->m node by node; outputs stay valid until s's next run. */
int hs_eager_run(hs_engine_session *s, const hs_tensor *inputs, hs_tensor *outputs, hs_error *err);
void hs_eager_free(struct hs_eager *e);

#endif

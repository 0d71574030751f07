/* plan.h - per-shape run plans: every value's shape and arena offset for one set of input shapes,
 * and the executor that runs a plan's nodes over a session's arena (plan.c). */
#ifndef HS_ENGINE_PLAN_H
#define HS_ENGINE_PLAN_H

#include "engine/engine.h"

/* Builds a plan for the given inputs (shapes always; data of key inputs). With data_known == 0 the
 * inputs carry shapes only and a plan that needs key-input contents fails with HS_UNAVAILABLE. */
int hs_plan_build(const hs_engine_model *m, const hs_tensor *inputs, int data_known, hs_plan **out, hs_error *err);
/* hs_plan_build for a load-time trial plan (shapes only, data_known 0) that also lets every node
 * release the constants its kernels now hold in their own form (hs_node.release_consts) right after
 * they were built, so that the graph's copy of one node's weights is freed before the next node's
 * kernel reorders its own: a load then needs about one copy of the weights at a time, not two, and
 * the kernels reuse the pages just freed. Compiling only (single-threaded, before any session). */
int hs_plan_build_releasing(hs_engine_model *m, const hs_tensor *inputs, hs_plan **out, hs_error *err);
void hs_plan_free(hs_plan *p);
/* 1 when plan p was made for these inputs (shapes and key-input contents). */
int hs_plan_matches(const hs_plan *p, const hs_engine_model *m, const hs_tensor *inputs);
size_t hs_plan_arena_bytes(const hs_plan *p);
/* How many node outputs in plan p write over an input's buffer (a Conv's fused residual; plan.c). */
int hs_plan_inplace_count(const hs_plan *p);
/* Output k's shape from plan p (data not set). */
void hs_plan_output_shape(const hs_plan *p, const hs_engine_model *m, int k, hs_tensor *t);
/* Runs the nodes of plan p over arena (hs_plan_arena_bytes long); fills outputs. */
int hs_plan_execute(const hs_plan *p, const hs_engine_model *m, const hs_tensor *inputs, void *arena,
                    hs_tensor *vin, hs_tensor *vout, hs_tensor *outputs, hs_error *err);

#endif

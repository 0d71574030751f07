/* pass_fuse.h - the fusion and layout passes (pass_fuse_*.c, listed in pass_fuse.c) and their shared helpers. */
#ifndef HS_ENGINE_PASS_FUSE_H
#define HS_ENGINE_PASS_FUSE_H

#include "kernels/kernels.h"
#include "engine/engine.h"
#include "engine/passes.h"
#include "ops/ops.h"

/* pass_fuse_conv.c */
int hs__pass_fold_bn(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_activation(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_residual(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_depthwise(hs_graph *g, int *changed, hs_error *err);
/* Reads the activation node n computes into op; 1 when it is one the kernels can fuse, else 0. */
int hs__fuse_activation_of(const hs_graph *g, const hs_node *n, hs_post_op *op);
/* The only live node reading value v (its input slot in *slot when not NULL), or -1. */
int hs__fuse_sole_consumer(const hs_graph *g, int v, int *slot);
/* 1 when n is a live node bound to op id op (hs_op_id). */
int hs__fuse_is_op(const hs_node *n, int op);
/* Node `into` writes node `dead`'s output instead of its own; `dead` is removed. */
void hs__fuse_take_output(hs_graph *g, int into, int dead);
/* Grows a node's input list to at least n entries (new slots are -1, "absent"). */
int hs__fuse_grow_inputs(hs_node *nd, int n, hs_error *err);
/* The node input where a fused residual goes (after the op's own inputs: Conv's 3, MatMul's 2 and a
 * fused bias). The layout pass reads it there too. */
#define HS_FUSE_RESIDUAL_INPUT 3
/* The node inputs where a Conv's fused depthwise Conv keeps its weights and bias (after the residual's). */
#define HS_FUSE_DW_INPUT 4
/* Turns Add(x, r) into a residual sum (HS_FUSE_SUM) of x's producer (the one computed last when both
 * qualify) when is_target(producer) holds and its op takes it, x has no other reader and r is not a
 * constant; r becomes the producer's input HS_FUSE_RESIDUAL_INPUT. */
int hs__fuse_residual_add(hs_graph *g, int (*is_target)(const hs_node *n), int *changed, hs_error *err);
/* Fuses f into node n after a dry run of the same fusion was accepted: a refusal now is HS_INTERNAL. */
int hs__fuse_apply(hs_node *n, const hs_fusion *f, hs_error *err);
/* pass_fuse_matmul.c */
int hs__pass_fuse_matmul_bias(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_matmul_activation(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_matmul_residual(hs_graph *g, int *changed, hs_error *err);
/* pass_fuse_attention.c */
int hs__pass_fuse_attention(hs_graph *g, int *changed, hs_error *err);
/* pass_fuse_concat.c */
int hs__pass_fuse_concat_upsample(hs_graph *g, int *changed, hs_error *err);
/* pass_fuse_layout.c */
int hs__pass_conv_layout(hs_graph *g, int *changed, hs_error *err);
/* Live reads of value v (a graph output counts as many). */
int hs__fuse_count_uses(const hs_graph *g, int v);

#endif

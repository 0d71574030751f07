/* pass_fuse.h - the kernels layer's graph passes (fusions, layout), listed in pass_fuse.c. */
#ifndef HS_ONNX_PASS_FUSE_H
#define HS_ONNX_PASS_FUSE_H

#include "kernels/kernels.h"
#include "onnx/engine.h"

/* pass_fuse_conv.c */
int hs__pass_fold_bn(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_activation(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_residual(hs_graph *g, int *changed, hs_error *err);
/* Reads the activation node n computes into op; 1 when it is one the kernels can fuse, else 0. */
int hs__fuse_activation_of(const hs_graph *g, const hs_node *n, hs_post_op *op);
/* The only live node reading value v (its input slot in *slot when not NULL), or -1. */
int hs__fuse_sole_consumer(const hs_graph *g, int v, int *slot);
/* pass_fuse_matmul.c */
int hs__pass_fuse_matmul_bias(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_matmul_activation(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_matmul_residual(hs_graph *g, int *changed, hs_error *err);
/* pass_fuse_layout.c */
int hs__pass_conv_layout(hs_graph *g, int *changed, hs_error *err);
/* Live reads of value v (a graph output counts as many). */
int hs__fuse_count_uses(const hs_graph *g, int v);

#endif

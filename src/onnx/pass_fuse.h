/* pass_fuse.h - the kernels layer's graph passes (fusions, layout), listed in pass_fuse.c. */
#ifndef HS_ONNX_PASS_FUSE_H
#define HS_ONNX_PASS_FUSE_H

#include "onnx/engine.h"

/* pass_fuse_conv.c */
int hs__pass_fold_bn(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_activation(hs_graph *g, int *changed, hs_error *err);
int hs__pass_fuse_conv_residual(hs_graph *g, int *changed, hs_error *err);
/* pass_fuse_layout.c */
int hs__pass_conv_layout(hs_graph *g, int *changed, hs_error *err);
/* Live reads of value v (a graph output counts as many). */
int hs__fuse_count_uses(const hs_graph *g, int v);

#endif

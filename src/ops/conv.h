/* conv.h - what Conv / ConvTranspose (conv.c) tell the rest of the engine beyond the op table. */
#ifndef HS_OPS_CONV_H
#define HS_OPS_CONV_H

#include <stddef.h>

#include "hotserve/tensor.h"
#include "ir/ir.h"

/* Bytes of weights the kernels of Conv/ConvTranspose node n hold (0 when it has none). */
size_t hs_conv_weight_bytes(const hs_node *n);

/* For a Conv node n with a depthwise convolution fused after it (engine/pass_fuse_conv.c): the index
 * in n->in of that convolution's weights, else -1; and into *copied (may be NULL) the bytes of them n
 * holds in a copy of its own (0 when it reads them in a kernel's copy or in the graph's). */
int hs_conv_fused_dw_weights(const hs_node *n, size_t *copied);

/* The geometry of one convolution: what the attributes in n->params and the shapes of input x and
 * weights w (ONNX's layouts) give. Conv and ConvTranspose (conv.c) compute with it, and so do the
 * ops that convolve as Conv does (QLinearConv, ConvInteger: qconv.c). */
typedef struct hs_conv_shape {
  int nsp;
  int64_t n, in_c, out_c, group;
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3]; /* pb / pe: padding at the begin / end (ONNX's) */
  int64_t opad[3];                                       /* ConvTranspose's output_padding; 0 for Conv */
} hs_conv_shape;
/* Conv's attribute checks, kept in n->params (for qconv.c's ops). */
int hs_conv_parse_attrs(hs_node *n, hs_error *err);
/* hs_conv_parse_attrs uses at most these first bytes of n->params; the rest is the caller's. */
#define HS_CONV_ATTRS_BYTES 448
int hs_conv_shape_of(const hs_node *n, const hs_tensor *x, const hs_tensor *w, hs_conv_shape *s, hs_error *err);
/* The output's dims [N, out_c, out...] into dims; returns their count (2 + s->nsp). */
int hs_conv_out_dims(const hs_conv_shape *s, int64_t dims[5]);

#endif

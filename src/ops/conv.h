/* conv.h - what Conv / ConvTranspose (conv.c) tell the rest of the engine beyond the op table. */
#ifndef HS_OPS_CONV_H
#define HS_OPS_CONV_H

#include <stddef.h>

#include "hotserve/tensor.h"
#include "ir/ir.h"

/* Bytes of weights the kernels of Conv/ConvTranspose node n hold (0 when it has none). */
size_t hs_conv_weight_bytes(const hs_node *n);

/* For ops that convolve as Conv does (QLinearConv, ConvInteger: qconv.c): Conv's attribute checks,
 * kept in n->params, and the geometry they give for input x and weights w (ONNX's layouts). */
typedef struct hs_conv_shape {
  int nsp;
  int64_t n, in_c, out_c, group;
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3]; /* pb / pe: padding at the begin / end */
} hs_conv_shape;
int hs_conv_parse_attrs(hs_node *n, hs_error *err);
/* hs_conv_parse_attrs uses at most these first bytes of n->params; the rest is the caller's. */
#define HS_CONV_ATTRS_BYTES 448
int hs_conv_shape_of(const hs_node *n, const hs_tensor *x, const hs_tensor *w, hs_conv_shape *s, hs_error *err);

#endif

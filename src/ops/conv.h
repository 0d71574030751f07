/* conv.h - parsed Conv / ConvTranspose attributes, shared by the op (conv.c) and the fusion passes. */
#ifndef HS_OPS_CONV_H
#define HS_OPS_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "ir/ir.h"

enum { HS_AUTOPAD_NOTSET = 0, HS_AUTOPAD_SAME_UPPER, HS_AUTOPAD_SAME_LOWER, HS_AUTOPAD_VALID };

/* Lives in hs_node.params of Conv and ConvTranspose nodes. */
typedef struct hs_conv_attrs {
  int transposed;
  int auto_pad;
  int nsp;                  /* spatial rank from the attributes, 0 when none gave it */
  int has_kernel, has_pads, has_output_shape;
  int64_t group;
  int64_t kernel[3], strides[3], dilations[3];
  int64_t pads[6];          /* begin[0..nsp), end[0..nsp) as ONNX lists them */
  int64_t output_padding[3], output_shape[3];
  /* Set by fusion passes (pass_fuse*.c), never by the model file: */
  hs_post_ops post;         /* applied to the output in order */
  int sum_input;            /* node input index of the residual that a HS_POST_SUM adds, or -1 */
  hs_layout src_layout, dst_layout; /* physical layouts of input 0 and the output (logical shapes stay NCHW) */
  hs_layout res_layout;             /* physical layout of the fused residual */
} hs_conv_attrs;

_Static_assert(sizeof(hs_conv_attrs) <= HS_OP_PARAMS_BYTES, "conv attributes fit in hs_op_params");

/* Bytes of weights the kernels of Conv/ConvTranspose node n hold (0 when it has none). */
size_t hs_conv_weight_bytes(const hs_node *n);

#endif

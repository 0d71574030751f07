/* conv.h - what Conv / ConvTranspose (conv.c) tell the rest of the engine beyond the op table. */
#ifndef HS_OPS_CONV_H
#define HS_OPS_CONV_H

#include <stddef.h>

#include "ir/ir.h"

/* Bytes of weights the kernels of Conv/ConvTranspose node n hold (0 when it has none). */
size_t hs_conv_weight_bytes(const hs_node *n);

#endif

/* pool.h - the pooling ops' parsed attributes, shared with the layout pass (pass_fuse_layout.c). */
#ifndef HS_OPS_POOL_H
#define HS_OPS_POOL_H

#include <stdint.h>

#include "kernels/kernels.h"

enum { HS_POOL_OP_MAX, HS_POOL_OP_AVG, HS_POOL_OP_GLOBAL_AVG, HS_POOL_OP_GLOBAL_MAX };

/* node->params of MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (filled by check()). */
typedef struct hs_pool_attrs {
  int kind; /* HS_POOL_OP_* */
  int auto_pad, ceil_mode, count_include_pad;
  int nk, n_strides, n_dil, n_pads; /* how many values each list attribute gave */
  int64_t kernel[3], stride[3], dilation[3], pads[6];
  /* Physical layouts of input and output; NCHW unless the layout pass keeps a Conv's blocked
   * output through the pool. A global pool's [N, C, 1, 1] output has the same bytes in every
   * layout, so its dst_layout stays NCHW. */
  hs_layout src_layout, dst_layout;
} hs_pool_attrs;

#endif

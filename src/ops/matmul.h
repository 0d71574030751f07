/* matmul.h - parsed MatMul / Gemm attributes and fusions, shared by the op (matmul.c) and its fusion pass. */
#ifndef HS_OPS_MATMUL_H
#define HS_OPS_MATMUL_H

#include "kernels/kernels.h"
#include "ir/ir.h"

/* Lives in hs_node.params of MatMul and Gemm nodes. */
typedef struct hs_matmul_attrs {
  int gemm;             /* 1: Gemm (2-D, attributes below); 0: MatMul (batched, numpy broadcasting) */
  float alpha, beta;    /* Gemm; MatMul: 1, 1 */
  int trans_a, trans_b; /* Gemm; MatMul: 0, 0 */
  /* Set by the fusion pass (pass_fuse_matmul.c), never by the model file: */
  int bias_input;       /* MatMul: node input index of a fused constant bias [N] added to every row, or -1 */
  int sum_input;        /* node input index of the residual that a HS_POST_SUM adds, or -1 */
  hs_post_ops post;     /* applied to alpha * A x B + bias in order */
} hs_matmul_attrs;

_Static_assert(sizeof(hs_matmul_attrs) <= HS_OP_PARAMS_BYTES, "matmul attributes fit in hs_op_params");

#endif

/* ops.h - the op table: one entry per ONNX op, implemented one file per op family.
 *
 * Life of a node: at load, check() validates attributes and input counts for the node's opset and
 * fills node->params; prepare() (optional) builds immutable kernel state from constant inputs
 * (packed weights, primitives) into node->state, shared by every session. When a session plans a
 * run for concrete input shapes, infer() computes output dtypes and shapes (inputs listed in
 * value_inputs have their data available then) and scratch_bytes() (optional) the temporary bytes
 * run() needs. run() then computes outputs into buffers the planner assigned. None of these may
 * crash on any input: they return a negative hs_status and fill err.
 */
#ifndef HS_OPS_OPS_H
#define HS_OPS_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"
#include "ir/ir.h"

/* An absent optional input is passed as a tensor with dtype HS_DT_UNDEFINED and data NULL. */
#define HS_PRESENT(t) ((t)->dtype != HS_DT_UNDEFINED)

/* Flags */
#define HS_OP_SHAPE_ONLY 1u /* output depends on the input shapes only (Shape): foldable when planning */
#define HS_OP_ALIAS 2u      /* output 0 holds input 0's bytes unchanged (Reshape...): the planner may
                               give it input 0's buffer and skip the node */

typedef struct hs_op_def {
  const char *name;      /* ONNX op_type, default domain */
  int since;             /* lowest opset handled (opsets below are refused at load) */
  int min_in, max_in;    /* input count range */
  int min_out, max_out;  /* output count range */
  uint32_t value_inputs; /* bit i: input i's contents decide output shapes (must be known to plan) */
  uint32_t flags;
  /* Load time: validate attributes and fill node->params. g gives access to constant inputs. */
  int (*check)(hs_node *node, const hs_graph *g, hs_error *err);
  /* Planning: out[k].dtype/ndim/dims from the inputs (in[i].data may be NULL unless in value_inputs). */
  int (*infer)(const hs_node *node, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_error *err);
  /* Optional, load time: build node->state / node->free_state from constant inputs. */
  int (*prepare)(hs_node *node, const hs_graph *g, hs_error *err);
  /* Optional: scratch bytes run() needs for these shapes (0 when NULL). */
  size_t (*scratch_bytes)(const hs_node *node, const hs_tensor *in, int n_in, const hs_tensor *out, int n_out);
  /* Computes outputs (data and nbytes already set by the planner). scratch is 64-byte aligned. */
  int (*run)(const hs_node *node, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, void *scratch,
             hs_error *err);
} hs_op_def;

/* Index of op_type in the table, or -1. */
int hs_op_find(const char *op_type);
const hs_op_def *hs_op_get(int index);
int hs_op_count(void);

/* Resolves node->op and runs check(); an unknown op, domain or opset is HS_UNSUPPORTED naming the
 * op, the node and the opset. */
int hs_op_bind(hs_node *node, const hs_graph *g, hs_error *err);

/* Each op family file exports its defs through one of these (see table.c). */
extern const hs_op_def hs_ops_elementwise[];
extern const hs_op_def hs_ops_matmul[];
extern const hs_op_def hs_ops_shape[];
extern const hs_op_def hs_ops_conv[];
extern const hs_op_def hs_ops_pool[];
extern const hs_op_def hs_ops_norm[];
extern const hs_op_def hs_ops_reduce[];
extern const hs_op_def hs_ops_resize[];
extern const hs_op_def hs_ops_logic[];
/* issue 12 coverage: new op families */
extern const hs_op_def hs_ops_rnn[]; /* rnn.c: RNN, GRU, LSTM */
extern const hs_op_def hs_ops_index[]; /* index.c: GatherElements, ScatterElements, Scatter, ArgMax, ArgMin, Hardmax, TopK, CumSum, Trilu, NonZero */
extern const hs_op_def hs_ops_math[]; /* math.c: trigonometric / hyperbolic, Sign, Round, Softsign, Selu, Celu, ThresholdedRelu, Shrink, Mish, Gelu, IsInf, IsNaN, Mod, BitShift, Bitwise* */
extern const hs_op_def hs_ops_linalg[]; /* linalg.c: Det, Einsum */
extern const hs_op_def hs_ops_norm_extra[]; /* norm_extra.c: GroupNormalization, LRN, MeanVarianceNormalization */
extern const hs_op_def hs_ops_loss[]; /* loss.c: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss */
extern const hs_op_def hs_ops_movement[]; /* movement.c: DepthToSpace, SpaceToDepth, GatherND, ScatterND, OneHot, EyeLike, Compress, ReverseSequence, MaxUnpool */
extern const hs_op_def hs_ops_signal[]; /* signal.c: HannWindow, HammingWindow, BlackmanWindow */
extern const hs_op_def hs_ops_quant[]; /* quant.c: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul */
extern const hs_op_def hs_ops_detect[]; /* detect.c: NonMaxSuppression */

/* ---- helpers shared by op files (ops_util.c) ---- */

/* Sets t's shape; nbytes follows from dtype. Fails with HS_LIMIT on overflow / negative dims. */
int hs_set_shape(hs_tensor *t, hs_dtype dt, int ndim, const int64_t *dims, const hs_node *n, hs_error *err);
/* Numpy broadcast of two shapes into out (ndim/dims). */
int hs_broadcast_shape(const hs_tensor *a, const hs_tensor *b, int *ndim, int64_t *dims, const hs_node *n,
                       hs_error *err);
/* Normalizes a possibly negative axis against rank r; HS_INVALID_ARGUMENT when out of range. */
int hs_norm_axis(int64_t axis, int r, int *out, const hs_node *n, hs_error *err);
/* memcpy that accepts NULL pointers when n is 0 (empty tensors and absent attributes have none). */
static inline void hs_memcpy(void *dst, const void *src, size_t n) {
  if (n) memcpy(dst, src, n);
}
/* Element count of a tensor view (its dims are already validated). */
static inline int64_t hs_numel(const hs_tensor *t) {
  int64_t c = 1;
  for (int i = 0; i < t->ndim; i++) c *= t->dims[i];
  return c;
}
/* Reads element i of an integer tensor (INT64 or INT32) as int64. */
int64_t hs_get_int(const hs_tensor *t, int64_t i);
/* Plain-C reference single-precision GEMM: C[M,N] = A[M,K] * B[K,N] (+ C when accumulate), row
 * strides lda, ldb, ldc. The kernels layer provides the fast paths; this keeps every op correct. */
void hs_sgemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,
              int64_t ldc, int accumulate);
/* Element i of a numeric tensor as double, and a double stored into element i (converted as C
 * does, with NaN / out-of-range floats to integers giving 0 rather than undefined behaviour). */
double hs_load_f64(const hs_tensor *t, int64_t i);
void hs_store_f64(hs_tensor *t, int64_t i, double v);
/* Reads a 0-d or 1-element tensor of any numeric type as double. */
double hs_get_scalar(const hs_tensor *t);
/* Sets err to "node 'NAME' (OP): <message>" and returns code. */
int hs_op_errf(hs_error *err, const hs_node *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* HS_UNSUPPORTED naming the dtype, when t's dtype is not one of the (HS_DT_UNDEFINED-ended) list. */
int hs_need_dtype(const hs_node *n, const hs_tensor *t, const char *what, hs_error *err, ...);

#endif

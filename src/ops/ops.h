/* ops.h - the op table: one entry per ONNX op, implemented one file per op family.
 *
 * The ops are listed once, in op_list.h; each op family's file defines the entry points
 * (hs_op_impl) its ops share. Life of a node: at load, check() validates attributes and input
 * counts for the node's opset and fills node->params; the passes may then offer fusions, which
 * fuse() records in node->params (only the op knows its params); prepare() (optional) builds
 * immutable kernel state from constant inputs (packed weights, primitives) into node->state,
 * shared by every session. When a session plans a run for concrete input shapes, infer() computes
 * output dtypes and shapes (value inputs have their data available then) and scratch_bytes()
 * (optional) the temporary bytes run() needs. run() then computes outputs into buffers the planner
 * assigned. None of these may crash on any input: they return a negative hs_status and fill err.
 */
#ifndef HS_OPS_OPS_H
#define HS_OPS_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hotserve/status.h"
#include "hotserve/tensor.h"
#include "ir/ir.h"
#include "kernels/kernels.h"
#include "ops/op_list.h"

/* An absent optional input is passed as a tensor with dtype HS_DT_UNDEFINED and data NULL. */
#define HS_PRESENT(t) ((t)->dtype != HS_DT_UNDEFINED)

/* Flags (op_list.h's last column) */
#define HS_OP_SHAPE_ONLY 1u /* output depends on the input shapes only (Shape): foldable when planning */
#define HS_OP_ALIAS 2u      /* output 0 holds input 0's bytes unchanged (Reshape...): the planner may
                               give it input 0's buffer and skip the node */
#define HS_OP_CONTROL 4u    /* control flow (If, Loop, Scan: ops/control.c): runs subgraphs through
                               run_ctl; its output shapes are known only once it has run, so a graph
                               holding one runs node by node (engine/subgraph.c), never folded */
#define HS_OP_INTERNAL 8u   /* made by the engine's passes only (FusedAttention): a model file cannot name it */
/* Value inputs (op_list.h): input i's contents decide output shapes, so they must be known to plan. */
#define HS_IN(i) (1u << (i))

/* The op ids, HS_OP_Add ... in op_list.h's order; a bound node's hs_node.op holds one. */
typedef enum hs_op_id {
#define HS_X_ID(op, ...) HS_OP_##op,
  HS_OP_LIST(HS_X_ID)
#undef HS_X_ID
  HS_OP_COUNT
} hs_op_id;

/* ---- fusions: a pass decides what to fuse (engine/pass_fuse*.c), the op takes it into its params ---- */
typedef enum hs_fusion_kind {
  HS_FUSE_ACTIVATION,     /* apply .act to the output, after what is fused already */
  HS_FUSE_SUM,            /* add node input .input (a residual shaped like the output) to the output */
  HS_FUSE_BIAS,           /* add node input .input (a constant row of N floats) to every output row */
  HS_FUSE_CHANNEL_AFFINE, /* the pass rewrites weights (input 1) and bias (input 2) so that each output
                             channel is scaled and shifted: the op only says whether that is still exact
                             (nothing is fused after its output yet); there is nothing to record */
  HS_FUSE_LAYOUT,         /* physical layouts of input 0 (.src), the output (.dst), the fused residual (.res) */
  HS_FUSE_ATTENTION,      /* a node rewritten into FusedAttention takes what the peeled nodes did (.attn) */
  HS_FUSE_FLOAT_OUTPUT,   /* a quantized op (QLinearMatMul) writes its output dequantized: float32, not rounded to
                             y's grid (the pass sets y_scale 1 and y_zero_point 0) */
  HS_FUSE_UPSAMPLE,       /* node input .input is now a nearest Resize's input: the op upsamples it by the
                             integer factors .up (along H, then W of a 4-D NCHW tensor) as it reads it */
  HS_FUSE_DEPTHWISE,      /* a depthwise 3x3 Conv (padding 1, stride .stride on both axes) that read only this
                             node's output is now part of it: its weights are node input .input, its bias
                             .input + 1 (-1: none); activations fused later apply after it (Conv: ops/conv.c) */
} hs_fusion_kind;

/* HS_FUSE_ATTENTION (ops/attention.c): the Transpose permutations peeled off Q, K, V and the output
 * (perm[0..3]; identity where there was none), the scale, and whether node input 3 is an additive mask. */
typedef struct hs_attention_fusion {
  int64_t perm[4][4];
  float scale;
  int has_mask;
} hs_attention_fusion;

typedef struct hs_fusion {
  hs_fusion_kind kind;
  int dry_run;             /* 1: only say whether the op would take it; the node is not changed */
  hs_post_op act;          /* HS_FUSE_ACTIVATION */
  int input;               /* HS_FUSE_SUM, HS_FUSE_BIAS: the node input slot holding the value */
  hs_layout src, dst, res; /* HS_FUSE_LAYOUT */
  hs_attention_fusion attn; /* HS_FUSE_ATTENTION */
  int64_t up[2];           /* HS_FUSE_UPSAMPLE */
  int64_t stride;          /* HS_FUSE_DEPTHWISE */
} hs_fusion;

/* fuse()'s answer when the op cannot take a fusion (the node is unchanged). */
#define HS_FUSE_REFUSED 1

/* What a control-flow op's run_ctl gets from the engine, which lives above ops/: a way to run the
 * node's compiled subgraphs and to get memory for outputs whose size only the run finds out. */
typedef struct hs_run_ctx hs_run_ctx;
struct hs_run_ctx {
  /* Runs subgraph attribute `sub` of the node: in = its formal inputs then the node's implicit
   * inputs at sub->graph->outer_base (ir.h, Subgraphs). out[] point into memory the engine owns,
   * valid until the next run of the same subgraph. */
  int (*run_subgraph)(hs_run_ctx *ctx, const hs_attr *sub, const hs_tensor *in, int n_in, hs_tensor *out,
                      int n_out, hs_error *err);
  /* Sets t->data to memory for node output k of t->nbytes bytes (t's dtype and shape set by the op),
   * owned by the engine until the next run. */
  int (*alloc_output)(hs_run_ctx *ctx, int k, hs_tensor *t, hs_error *err);
  void *engine; /* the engine's state for this call */
};

/* The most bytes a control-flow op's own buffers (scan outputs, carried values), and a node-by-node
 * run's buffers (engine/subgraph.c), may hold: 16 GiB by default, like a plan's arena, so a hostile
 * Loop cannot allocate without bound. Set once before loading models (fuzzers lower it). */
extern size_t hs_dynamic_limit_bytes;
/* The most iterations one Loop node runs (2^20 by default; HS_LIMIT past it), so a Loop cannot keep
 * a worker busy without bound either. */
extern int64_t hs_loop_limit_iterations;

/* The entry points of an op (several ops may share them: they tell ops apart by node->op). */
typedef struct hs_op_impl {
  /* Load time: validate attributes and fill node->params. g gives access to constant inputs.
   * Optional: when NULL the op takes no attributes. */
  int (*check)(hs_node *node, const hs_graph *g, hs_error *err);
  /* Planning: out[k].dtype/ndim/dims from the inputs (in[i].data may be NULL unless a value input). */
  int (*infer)(const hs_node *node, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_error *err);
  /* Optional, load time: build node->state / node->free_state from constant inputs. */
  int (*prepare)(hs_node *node, const hs_graph *g, hs_error *err);
  /* Optional: scratch bytes run() needs for these shapes (0 when NULL). */
  size_t (*scratch_bytes)(const hs_node *node, const hs_tensor *in, int n_in, const hs_tensor *out, int n_out);
  /* Computes outputs (data and nbytes already set by the planner). scratch is 64-byte aligned. */
  int (*run)(const hs_node *node, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, void *scratch,
             hs_error *err);
  /* Optional, load time (passes, before prepare()): takes fusion f into node->params. Returns 0 when
   * taken (would be, for a dry run), HS_FUSE_REFUSED when the op cannot take it, negative on error.
   * NULL: the op takes no fusion. */
  int (*fuse)(hs_node *node, const hs_fusion *f, hs_error *err);
  /* Optional, planning: the input whose buffer output 0 may be written over (the op reads every
   * element of that input, in output 0's shape, dtype and layout, before writing the same element),
   * or -1. The planner gives output 0 that buffer only when nothing else reads the input later. */
  int (*inplace_input)(const hs_node *node, const hs_tensor *in, int n_in, const hs_tensor *out, int n_out);
  /* HS_OP_CONTROL ops only, instead of infer/run: sets out[k]'s shape and gets its memory from
   * ctx->alloc_output, running subgraphs through ctx->run_subgraph. */
  int (*run_ctl)(const hs_node *node, const hs_tensor *in, int n_in, hs_tensor *out, int n_out, hs_run_ctx *ctx,
                 hs_error *err);
} hs_op_impl;

/* One row of the op table, generated from op_list.h. */
typedef struct hs_op_def {
  hs_op_id id;
  const char *name;      /* ONNX op_type, default domain */
  int since;             /* lowest opset handled (opsets below are refused at load) */
  int min_in, max_in;    /* input count range */
  int min_out, max_out;  /* output count range */
  uint32_t value_inputs; /* HS_IN(i): input i's contents decide output shapes (must be known to plan) */
  uint32_t flags;        /* HS_OP_SHAPE_ONLY, HS_OP_ALIAS */
  const hs_op_impl *impl;
} hs_op_def;

/* The op table, indexed by hs_op_id (table.c). */
extern const hs_op_def hs_op_table[HS_OP_COUNT];

/* The row of op id, or NULL when id is not one. */
static inline const hs_op_def *hs_op_get(int id) { return id >= 0 && id < HS_OP_COUNT ? &hs_op_table[id] : NULL; }
/* 1 when input i of op d is a value input (its contents decide output shapes). */
static inline int hs_op_value_input(const hs_op_def *d, int i) { return i >= 0 && i < 32 && (d->value_inputs >> i & 1); }
/* The id of ONNX op_type (default domain), or -1. */
int hs_op_find(const char *op_type);

/* Resolves node->op and runs check(); an unknown op, domain or opset is HS_UNSUPPORTED naming the
 * op, the node and the opset. */
int hs_op_bind(hs_node *node, const hs_graph *g, hs_error *err);

/* Offers fusion f to bound node n's op: its fuse() answer, HS_FUSE_REFUSED when it has none. */
int hs_op_fuse(hs_node *n, const hs_fusion *f, hs_error *err);

/* 1 when bound node n is a 4-D nearest Resize / Upsample with constant scales whose output pixel
 * (h, w) is input pixel (h / f[0], w / f[1]) for integer factors f (1..255; batch and channel scales
 * 1), so that a reader may upsample its input itself (HS_FUSE_UPSAMPLE); else 0 (resize.c). */
int hs_resize_nearest_factors(const hs_node *n, const hs_graph *g, int64_t f[2]);

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
/* 1 when post-ops p have room for one more op taking `steps` oneDNN steps (HardSigmoid takes two). */
int hs_post_ops_room(const hs_post_ops *p, int steps);
/* The oneDNN steps activation act takes: 2 for HardSigmoid, else 1. */
static inline int hs_post_act_steps(hs_act_kind act) { return act == HS_ACT_HARDSIGMOID ? 2 : 1; }
/* HS_UNSUPPORTED unless t's dtype has a size (ops that only move bytes take any such dtype). */
int hs_known_dtype(const hs_node *n, const hs_tensor *t, hs_error *err);
/* Reads a 1-D int64 / int32 tensor (a shape / axes / starts input) into v; HS_INVALID_ARGUMENT when
 * it is not one or holds more than max entries. */
int hs_read_ints(const hs_node *n, const hs_tensor *t, const char *what, int64_t *v, int max, int *count,
                 hs_error *err);
/* Sets err to "node 'NAME' (OP): <message>" and returns code. */
int hs_op_errf(hs_error *err, const hs_node *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* HS_UNSUPPORTED naming the dtype, when t's dtype is not one of the (HS_DT_UNDEFINED-ended) list. */
int hs_need_dtype(const hs_node *n, const hs_tensor *t, const char *what, hs_error *err, ...);

#endif

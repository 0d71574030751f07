/* kernels.h - the engine's backend-neutral interface to heavy compute kernels (conv, matmul, pool, ...). */
#ifndef HS_KERNELS_KERNELS_H
#define HS_KERNELS_KERNELS_H

/*
 * DESIGN
 * A kernel is an opaque, immutable handle created once when a model is compiled, from a parameter
 * struct that says the shapes, attributes and (where the op has them) the constant weights. Creating it
 * does all the expensive work: choosing an implementation, reordering weights into the layout the
 * implementation wants, building fused post-ops. Running it only reads the handle, so any number of
 * threads may run the same kernel at once, each passing its own input, output and scratch buffers.
 *
 * The header names no library types: the CPU implementation (cpu_dnnl*.c) sits on oneDNN 2.x, and a
 * CUDA implementation can provide the same constructors on cuDNN/cuBLAS by switching on `device`.
 *
 * Shapes: every parameter struct carries the shapes for the batch size given at creation. A kernel may
 * be run with another leading (batch) dimension by setting hs_kernel_args.batch; the implementation
 * then builds (once, under a lock, and caches) a variant for that batch. hs_kernel_prepare_batch() does
 * this ahead of time so that the run path never builds anything.
 *
 * Buffers: all tensors are dense float32. Activations of convolution-like ops are NCHW (ONNX's layout)
 * or NHWC as the parameter struct says; NHWC is the fast layout on CPU and lets consecutive convolutions
 * run without reorders. Weights are always given in ONNX's layout and copied: the caller may free them
 * after creation; except a matmul's B lent with hs_matmul_params.b_lend, which the kernel may read in place.
 *
 * Threads: a kernel's thread count is fixed when it is created, from hs_kernels_threads() of the
 * creating thread (oneDNN reads OpenMP's per-thread setting then and keeps it); a run uses that count
 * whichever thread calls it. So set the count with hs_kernels_set_threads() before creating kernels,
 * not only before running them.
 */

#include <stddef.h>
#include <stdint.h>

#include "hotserve/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hs_kernel hs_kernel;

/* Where a kernel runs. Only HS_KDEV_CPU is implemented; others fail with HS_UNSUPPORTED. */
typedef enum { HS_KDEV_CPU = 0, HS_KDEV_CUDA = 1 } hs_kernel_device;

/* Memory layout of activations that have a channel axis and spatial axes. */
typedef enum {
  HS_LAYOUT_NCHW = 0, /* channels before spatial axes: N, C, [D,] [H,] W (ONNX's layout) */
  HS_LAYOUT_NHWC = 1, /* channels last: N, [D,] [H,] W, C */
  HS_LAYOUT_NCHW8C = 2 /* blocked: N, C/8, [D,] [H,] W, 8 (needs C % 8 == 0; same size as dense) */
} hs_layout;

/* Element-wise functions, usable as a standalone kernel or fused after conv/matmul.
 * X(name, meaning of alpha/beta) */
typedef enum {
  HS_ACT_NONE = 0,
  HS_ACT_RELU,        /* max(x, 0) + alpha * min(x, 0): alpha = 0 is Relu, else LeakyRelu */
  HS_ACT_CLIP,        /* min(max(x, alpha), beta) */
  HS_ACT_SIGMOID,     /* 1 / (1 + exp(-x)) */
  HS_ACT_TANH,        /* tanh(x) */
  HS_ACT_HARDSIGMOID, /* max(0, min(1, alpha * x + beta)) */
  HS_ACT_HARDSWISH,   /* x * max(0, min(1, x / 6 + 1 / 2)) */
  HS_ACT_ELU,         /* x > 0 ? x : alpha * (exp(x) - 1) */
  HS_ACT_GELU_ERF,    /* 0.5 * x * (1 + erf(x / sqrt(2))) */
  HS_ACT_GELU_TANH,   /* tanh approximation of GELU */
  HS_ACT_EXP,         /* exp(x) */
  HS_ACT_LOG,         /* log(x) */
  HS_ACT_SQRT,        /* sqrt(x) */
  HS_ACT_ABS,         /* |x| */
  HS_ACT_SQUARE,      /* x * x */
  HS_ACT_LINEAR,      /* alpha * x + beta (Neg is alpha = -1) */
  HS_ACT_POW,         /* alpha * x ^ beta (Reciprocal is alpha = 1, beta = -1) */
  HS_ACT_SOFTPLUS,    /* log(1 + exp(x)) */
  HS_ACT_SWISH,       /* x * sigmoid(alpha * x) */
  HS_ACT_COUNT
} hs_act_kind;

/* One step applied to a kernel's output, in order. */
typedef enum {
  HS_POST_ACT = 0, /* dst = act(dst) */
  HS_POST_SUM = 1  /* dst = dst + scale * residual (the residual is hs_kernel_args.residual) */
} hs_post_kind;

typedef struct hs_post_op {
  hs_post_kind kind;
  hs_act_kind act; /* HS_POST_ACT */
  float alpha, beta;
  float scale; /* HS_POST_SUM: 0 is read as 1 */
} hs_post_op;

#define HS_KERNEL_MAX_POST 4
typedef struct hs_post_ops {
  int count;
  hs_post_op op[HS_KERNEL_MAX_POST];
} hs_post_ops;

/* Appends an op to p; returns HS_LIMIT when p is full (p is unchanged then). */
int hs_post_ops_add_act(hs_post_ops *p, hs_act_kind act, float alpha, float beta);
int hs_post_ops_add_sum(hs_post_ops *p, float scale);

/* ---- Convolution and ConvTranspose (1, 2 or 3 spatial dims) ---- */
typedef struct hs_conv_params {
  hs_kernel_device device;
  hs_layout src_layout; /* of the input */
  hs_layout dst_layout; /* of the output (may differ: a stem conv reads NCHW, writes NHWC) */
  hs_layout res_layout; /* of the residual of a HS_POST_SUM (reordered into dst when it differs) */
  int transposed;       /* 0: Conv; 1: ConvTranspose (deconvolution) */
  int nsp;              /* spatial dims, 1..3 */
  int64_t batch;        /* N at creation */
  int64_t in_c, out_c, groups;
  int64_t in[3], out[3]; /* spatial sizes of src and dst */
  int64_t kernel[3], stride[3], dilation[3]; /* dilation as ONNX: 1 = dense */
  int64_t pad_begin[3], pad_end[3];           /* for ConvTranspose: the padding that yields `out`
                                                 (ONNX pads minus output_padding at the end) */
  const float *weights; /* Conv: [out_c, in_c/groups, k...]; ConvTranspose: [in_c, out_c/groups, k...] */
  /* Or NULL weights and weights_from: a conv kernel made with the same weights shape (and transposed,
   * groups), whose weights this one uses: it shares that kernel's buffer when its implementation
   * wants the same layout and reorders a copy otherwise. weights_from must outlive this kernel. */
  const hs_kernel *weights_from;
  const float *bias;    /* [out_c] or NULL */
  hs_post_ops post;
  /* A depthwise 3x3 convolution fused after this one (engine/pass_fuse_conv.c), or NULL dw_weights:
   * [out_c, 1, 3, 3] (copied) and dw_bias [out_c] or NULL, padding 1 on every side and stride
   * dw_stride (1 or 2) on both axes; `post` applies before it and dw_post after it. Only for a 2-D,
   * one-group, 1x1, stride-1, unpadded Conv without a sum; the kernel's dst is then the depthwise
   * result [batch, out_c, dw_out[0], dw_out[1]] in dst_layout. oneDNN runs both as one primitive
   * (its depthwise post-op: the 1x1 result is never written whole) where that measured faster
   * (cpu_dnnl_conv.c), else the two in sequence through scratch. */
  const float *dw_weights, *dw_bias;
  int64_t dw_stride, dw_out[2];
  hs_post_ops dw_post;
} hs_conv_params;

#define HS_CONV_DW_TAPS 9 /* a fused depthwise convolution is 3x3 */

/* The bytes of p's fused depthwise weights ([out_c, 1, 3, 3] floats). */
static inline size_t hs_conv_dw_weight_bytes(const hs_conv_params *p) {
  return (size_t)p->out_c * HS_CONV_DW_TAPS * sizeof(float);
}

/* ---- MatMul / Gemm: dst[..., M, N] = alpha * A[..., M, K] x B[..., K, N] + bias, then post-ops ---- */
typedef struct hs_matmul_params {
  hs_kernel_device device;
  int ndim;                          /* >= 2, the same for a, b and dst (pad with leading 1s) */
  int64_t a_dims[8], b_dims[8];      /* logical dims after transposition; batch dims broadcast (1 or equal) */
  int trans_a, trans_b;              /* the buffer holds the last two dims swapped */
  float alpha;                       /* 0 is read as 1 */
  const float *b_const;              /* B as a constant (copied and reordered at creation), or NULL: B at run */
  int b_lend;                        /* 1: b_const stays valid and unchanged while the kernel lives (or is
                                        handed over: hs_kernel_matmul_adopt_b), so a variant that reads B in
                                        its given layout reads it in place instead of a copy */
  const float *bias;                 /* constant, shape bias_dims broadcast to dst, or NULL */
  int bias_ndim;                     /* <= ndim; aligned to the right as numpy broadcasting */
  int64_t bias_dims[8];
  hs_post_ops post;
} hs_matmul_params;

/* ---- Pooling ---- */
typedef enum { HS_POOL_MAX = 0, HS_POOL_AVG_INCLUDE_PAD = 1, HS_POOL_AVG_EXCLUDE_PAD = 2 } hs_pool_kind;
typedef struct hs_pool_params {
  hs_kernel_device device;
  hs_layout src_layout, dst_layout;
  hs_pool_kind kind;
  int nsp;
  int64_t batch, channels;
  int64_t in[3], out[3];
  int64_t kernel[3], stride[3], dilation[3]; /* dilation as ONNX: 1 = dense */
  int64_t pad_begin[3], pad_end[3];           /* pad_end may include ceil_mode's extra row/column */
} hs_pool_params;

/* ---- Element-wise (one function, or a chain applied in order) over any dense shape ---- */
typedef struct hs_eltwise_params {
  hs_kernel_device device;
  int ndim;
  int64_t dims[8]; /* dims[0] is the batch */
  hs_post_ops ops; /* HS_POST_ACT steps only, applied in order */
} hs_eltwise_params;

/* ---- Binary with numpy broadcasting ---- */
typedef enum { HS_BIN_ADD = 0, HS_BIN_SUB, HS_BIN_MUL, HS_BIN_DIV, HS_BIN_MAX, HS_BIN_MIN } hs_binary_kind;
typedef struct hs_binary_params {
  hs_kernel_device device;
  hs_binary_kind kind;
  int ndim;                          /* dims of dst; a and b are right-aligned to it */
  int a_ndim, b_ndim;
  int64_t a_dims[8], b_dims[8];
  hs_post_ops post;
} hs_binary_params;

/* ---- Softmax / LogSoftmax over one axis ---- */
typedef struct hs_softmax_params {
  hs_kernel_device device;
  int log;  /* 1: LogSoftmax */
  int ndim;
  int64_t dims[8];
  int axis; /* 0..ndim-1 */
} hs_softmax_params;

/* ---- LayerNormalization over the axes [axis, ndim) ---- */
typedef struct hs_layernorm_params {
  hs_kernel_device device;
  int ndim;
  int64_t dims[8];
  int axis;
  float epsilon;
  const float *scale; /* prod(dims[axis:]) values, or NULL for 1 */
  const float *bias;  /* same, or NULL for 0 */
} hs_layernorm_params;

/* ---- BatchNormalization (inference) over channel axis 1 (or last for NHWC) ---- */
typedef struct hs_batchnorm_params {
  hs_kernel_device device;
  hs_layout layout;
  int ndim; /* >= 2: N, C, spatial... in NCHW order */
  int64_t dims[8];
  float epsilon;
  const float *scale, *bias, *mean, *var; /* [C] each */
  hs_post_ops post;
} hs_batchnorm_params;

/* ---- Reductions ---- */
typedef enum { HS_REDUCE_SUM = 0, HS_REDUCE_MEAN, HS_REDUCE_MAX, HS_REDUCE_MIN, HS_REDUCE_PROD } hs_reduce_kind;
typedef struct hs_reduce_params {
  hs_kernel_device device;
  hs_reduce_kind kind;
  int ndim;
  int64_t dims[8];
  uint32_t axes_mask; /* bit i set: axis i is reduced (kept as 1 in dst) */
} hs_reduce_params;

/* ---- Concat along one axis; every input has the same dims except the axis ---- */
typedef struct hs_concat_params {
  hs_kernel_device device;
  int ndim;
  int64_t dims[8]; /* of the first input; dims[axis] is ignored */
  int axis;
  int ninputs;
  const int64_t *axis_sizes; /* [ninputs]: each input's size along axis (copied) */
} hs_concat_params;

/* ---- Resize (spatial axes of NCHW/NHWC activations) ---- */
typedef enum { HS_RESAMPLE_NEAREST = 0, HS_RESAMPLE_LINEAR = 1 } hs_resample_kind;
typedef struct hs_resample_params {
  hs_kernel_device device;
  hs_layout layout;
  hs_resample_kind kind; /* linear: half_pixel coordinates; nearest: asymmetric with floor (ONNX
                            coordinate modes other than these fall back to the reference op) */
  int nsp;
  int64_t batch, channels;
  int64_t in[3], out[3];
} hs_resample_params;

/* ---- Layout change: NCHW <-> NHWC ---- */
typedef struct hs_reorder_params {
  hs_kernel_device device;
  int ndim; /* >= 3 */
  int64_t dims[8]; /* logical NCHW dims */
  hs_layout from, to;
} hs_reorder_params;

/* ---- Quantized convolution (cpu_dnnl_int8.c): int8 / uint8 activations, int8 weights ----
 * dst = saturate(round(scale[c] * (sum (src - src_zp) * w + bias[c])) + dst_zp) for an integer dst
 * (scale[c] * (...) for a float32 dst): QLinearConv's arithmetic with the weights' zero point 0.
 * Rounding is half to even. Activations are NCHW or NHWC (src_layout / dst_layout). */
typedef enum { HS_Q_U8 = 0, HS_Q_S8 = 1, HS_Q_F32 = 2 } hs_qtype;
typedef struct hs_qconv_params {
  hs_kernel_device device;
  hs_layout src_layout, dst_layout;
  hs_qtype src_type, dst_type;  /* src: U8 or S8; dst: U8, S8 or F32 */
  int nsp;                      /* spatial dims, 1..3 */
  int64_t batch, in_c, out_c, groups;
  int64_t in[3], out[3], kernel[3], stride[3], dilation[3], pad_begin[3], pad_end[3];
  const int8_t *weights;        /* [out_c, in_c/groups, k...] (ONNX's layout), copied */
  const float *bias;            /* [out_c] in accumulator units (x_scale * w_scale[c]), or NULL; copied */
  const float *scales;          /* nscales (1 or out_c) output scales, copied */
  int nscales;
  int32_t src_zp, dst_zp;
  /* Optional fused residual (QDQ's Add of two dequantized values, requantized): when sum is 1,
   * dst = saturate(round(scale[c] * (...) + sum_scale * (res - sum_zp)) + dst_zp), res of type sum_type
   * (U8 or S8, the size of dst) in dst_layout, passed as hs_kernel_args.residual (may alias dst). */
  int sum;
  hs_qtype sum_type;
  float sum_scale;
  int32_t sum_zp;
} hs_qconv_params;

/* Buffers for one run. `src` lists the inputs in the order each kernel documents:
 *   conv, pool, eltwise, softmax, layernorm, batchnorm, reduce, resample, reorder: src[0];
 *   matmul: src[0] = A, src[1] = B (only when b_const was NULL);
 *   binary: src[0] = a, src[1] = b;  concat: src[0..ninputs).
 * `residual` feeds an HS_POST_SUM; it may alias dst when it has dst's layout (then no copy is made). */
typedef struct hs_kernel_args {
  int64_t batch;            /* leading dimension for this run; 0 = as created */
  const void *const *src;
  int nsrc;
  const void *residual;
  void *dst;
  void *scratch;            /* at least hs_kernel_scratch_size(k, batch) bytes, or NULL when that is 0 */
} hs_kernel_args;

/* Constructors. Each returns 0 and sets *out (owned by the caller: hs_kernel_destroy), or a negative
 * hs_status with err filled: HS_INVALID_ARGUMENT for inconsistent parameters, HS_UNSUPPORTED when the
 * device or this combination of attributes has no implementation (the caller then uses its reference
 * code), HS_NO_MEMORY. Nothing is leaked on failure. */
int hs_kernel_conv_create(const hs_conv_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_matmul_create(const hs_matmul_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_pool_create(const hs_pool_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_eltwise_create(const hs_eltwise_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_binary_create(const hs_binary_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_softmax_create(const hs_softmax_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_layernorm_create(const hs_layernorm_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_batchnorm_create(const hs_batchnorm_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_reduce_create(const hs_reduce_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_concat_create(const hs_concat_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_resample_create(const hs_resample_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_reorder_create(const hs_reorder_params *p, hs_kernel **out, hs_error *err);
int hs_kernel_qconv_create(const hs_qconv_params *p, hs_kernel **out, hs_error *err);

/* Writes conv kernel k's weights back in the layout hs_conv_params.weights gave them (ONNX's) into
 * dst, which is dst_bytes long (exactly the weights' size). Lets a caller drop its own copy once a
 * kernel holds the weights: a kernel for other shapes is then created from these. A kernel with a
 * fused depthwise convolution gives that one's weights (dw_weights) when dst_bytes is their size and
 * not its own weights'. Thread-safe.
 * Returns 0, or HS_INVALID_ARGUMENT (not a conv kernel, wrong size) / HS_INTERNAL with err filled. */
int hs_kernel_conv_weights(const hs_kernel *k, float *dst, size_t dst_bytes, hs_error *err);

/* The fused depthwise convolution's weights that conv kernel k holds (its own copy, in the layout
 * hs_conv_params.dw_weights gave them), when they are `bytes` long; NULL otherwise (not a conv
 * kernel, no fused depthwise convolution, another size). Valid while k is. */
const float *hs_kernel_conv_dw_weights(const hs_kernel *k, size_t bytes);
/* Bytes of weights conv kernel k allocated itself (buffers it shares with the kernel it was made
 * from, or between its batch variants, count once, where they were allocated); 0 for other kinds. */
size_t hs_kernel_conv_owned_weight_bytes(const hs_kernel *k);
/* Bytes of its constant operand (conv / qconv weights, a constant matmul / qmatmul B) kernel k holds:
 * its plain copy while it keeps one, plus each batch variant's own buffer in the implementation's
 * layout (int8 ones with their compensation terms); 0 for kernels without one. Thread-safe. */
size_t hs_kernel_weight_bytes(const hs_kernel *k);

/* Builds (if not yet built) the variant for leading dimension `batch` so that runs with it build
 * nothing. Thread-safe. Returns 0 or a negative hs_status with err filled. */
int hs_kernel_prepare_batch(hs_kernel *k, int64_t batch, hs_error *err);

/* Scratch bytes one run with leading dimension `batch` (0 = as created) needs; prepares that variant.
 * Returns (size_t)-1 when the variant cannot be built. */
size_t hs_kernel_scratch_size(hs_kernel *k, int64_t batch);

/* Runs k once on the calling thread. Thread-safe for distinct dst/scratch buffers. Returns 0 or a
 * negative hs_status with err filled (a bad argument, or the implementation failed). */
int hs_kernel_run(hs_kernel *k, const hs_kernel_args *args, hs_error *err);

/* Frees k and everything it owns; NULL is a no-op. k must not be running. */
void hs_kernel_destroy(hs_kernel *k);

/* A short name of the implementation chosen ("brgconv:avx2", "jit:avx2", ...), for logs; never NULL. */
const char *hs_kernel_impl_name(const hs_kernel *k);

/* The activation layout convolutions run fastest in on this machine: HS_LAYOUT_NHWC where the CPU has
 * AVX-512 (oneDNN's brgconv kernels), HS_LAYOUT_NCHW8C otherwise (AVX2 jit kernels). The blocked layout
 * needs channels % 8 == 0; callers keep NCHW where that does not hold. */
hs_layout hs_kernels_preferred_layout(hs_kernel_device device);

/* Thread count of the kernels the calling thread creates from now on (default: all cores); n <= 0
 * restores the default. Per thread (OpenMP's nthreads-var). */
void hs_kernels_set_threads(int n);
int hs_kernels_threads(void);
/* Whether the weight reorders the calling thread makes from now on (kernel creation, reading weights
 * back) run on that thread alone (on != 0) rather than on its kernels' thread count; the kernels
 * themselves keep the count hs_kernels_set_threads gave. A reload beside busy requests turns it on
 * (serving/pace.c): the reorders' parallel regions woke a second OpenMP thread per reorder that then
 * spun, ~2 ms of CPU per MobileNetV2 version taken from the requests (bench/results/
 * reload-serial-reorders-2026-12-07.md). Per thread; off by default. */
void hs_kernels_serial_reorders(int on);
/* Processors available to the process (constant): what scratch sized once per plan must allow for when
 * the thread count of a later run is not known yet (hs_kernel_attention_scratch). */
int hs_kernels_cores(void);

/* Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T
 * (trans_x != 0), op(A) [M, K], op(B) [K, N], leading dimensions lda/ldb/ldc. For ops whose operands
 * change every run (MatMul on activations). Thread-safe. Returns 0, or HS_INVALID_ARGUMENT for
 * inconsistent sizes (C is untouched then). */
int hs_kernel_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Scaled dot-product attention over strided views, one (batch, head) pair per work item:
 *   O[b,h] = softmax(scale * Q[b,h] x K[b,h]^T + mask[b,h]) x V[b,h]
 * Q [B, H, Sq, Dk], K [B, H, Sk, Dk], V [B, H, Sk, Dv], mask [B, H, Sq, Sk] (additive, optional) and
 * O [B, H, Sq, Dv] are logical views: element (b, h, i, j) of X lies at X + b*s[0] + h*s[1] + i*s[2] +
 * j*s[3] (strides in elements; 0 for a broadcast dim), so transposed or head-interleaved layouts
 * ([B, S, H, D] straight out of a projection) are read and written in place, without copies. The
 * scores of one pair ([Sq, Sk]) stay in the caller's scratch and never reach memory as a tensor. */
typedef struct hs_attention_params {
  int64_t batch, heads, sq, sk, dk, dv;
  const float *q, *k, *v, *mask; /* mask may be NULL */
  float *o;
  int64_t q_str[4], k_str[4], v_str[4], mask_str[4], o_str[4];
  float scale;
  int threads;   /* at most this many threads (the count the scratch was sized for) */
  void *scratch; /* hs_kernel_attention_scratch(threads, ...) bytes */
} hs_attention_params;

/* Scratch bytes hs_kernel_attention needs for these sizes on up to `threads` threads. */
size_t hs_kernel_attention_scratch(int threads, int64_t sq, int64_t sk, int64_t dk, int64_t dv);
/* Runs the attention (CPU; threads over the (batch, head) pairs). 0, or HS_INVALID_ARGUMENT for sizes
 * that do not fit (nothing is written then). */
int hs_kernel_attention(const hs_attention_params *p, hs_error *err);

/* Plain-C value of activation a at x (the reference that fallback code uses). */
float hs_act_apply(hs_act_kind a, float alpha, float beta, float x);
/* Applies the post-ops to y[0..n) in place; residual (read for HS_POST_SUM) may be NULL when there is none. */
void hs_post_apply(const hs_post_ops *p, float *y, const float *residual, int64_t n);

/* Name of an activation ("relu"), for messages; never NULL. */
const char *hs_act_name(hs_act_kind a);

/* ---- Quantized matrix product (cpu_dnnl_int8.c): int8 / uint8 A, constant int8 B ----
 * A [rows, k] (row-major; a batch MatMul's leading dims flattened into rows) times B [k, n]:
 *   dst = saturate(round(scale[j] * (sum_k (a - src_zp) * b + bias[j])) + dst_zp) for a U8 / S8 dst,
 *   dst = scale[j] * (sum_k (a - src_zp) * b + bias[j]) for an F32 dst, and the raw int32 sums when dst_s32
 * (MatMulInteger: no scale, bias or dst zero point). QLinearMatMul's arithmetic with B's zero point 0;
 * scale per tensor (nscales 1) or per column of B (nscales n). Rounding is half to even. The kernel is
 * created for `rows` rows; a run's hs_kernel_args.batch is its row count (a variant per count).
 * src[0] = A; when src_zp_runtime is 1, src[1] points to one int32: the run's src zero point.
 * An F32 dst may take post-ops (activations; a SUM reads hs_kernel_args.residual, shaped like dst), applied in
 * order after the scale. */
typedef struct hs_qmatmul_params {
  hs_kernel_device device;
  hs_qtype src_type, dst_type; /* src: U8 or S8; dst: U8, S8 or F32 (ignored when dst_s32) */
  int dst_s32;
  int64_t rows, k, n;
  const int8_t *weights;       /* B [k, n] row-major, copied */
  const float *bias;           /* [n] in accumulator units (a_scale * b_scale[j]), or NULL; copied */
  const float *scales;         /* nscales (1 or n) output scales, copied (NULL with dst_s32) */
  int nscales;
  int32_t src_zp, dst_zp;
  int src_zp_runtime;
  hs_post_ops post;            /* F32 dst only */
} hs_qmatmul_params;
int hs_kernel_qmatmul_create(const hs_qmatmul_params *p, hs_kernel **out, hs_error *err);

/* Writes matmul kernel k's constant B back as hs_matmul_params.b_const gave it (its layout, times
 * alpha, which the kernel folded in: exact when alpha is 1) into dst, dst_bytes long (exactly B's
 * size). Lets a caller drop its own copy of B once a kernel holds it. Thread-safe. Returns 0, or
 * HS_INVALID_ARGUMENT (not a matmul kernel with a constant B, wrong size) / HS_INTERNAL with err filled. */
int hs_kernel_matmul_b(const hs_kernel *k, float *dst, size_t dst_bytes, hs_error *err);
/* Hands b (the b_const the kernel was made with, b_lend set) over to matmul kernel k when k reads it in place:
 * returns 1 and k frees it (hs_wblock_free: a weight block or malloc's) when destroyed, the caller must forget it;
 * returns 0 when k holds a copy of its own (the caller keeps b and frees it as before). Call it once, before any
 * other thread uses k. */
int hs_kernel_matmul_adopt_b(hs_kernel *k, const float *b);
/* Matmul kernel k's copy of hs_matmul_params.bias (the same floats, in the same layout), or NULL (no bias, not a
 * matmul kernel). Valid and unchanged while k lives: a caller may drop its own copy and read this one. */
const float *hs_kernel_matmul_bias(const hs_kernel *k);
/* Writes qmatmul kernel k's B (int8 [k, n], as hs_qmatmul_params.weights gave it) into dst, dst_bytes long
 * (exactly k * n). Lets a caller drop its own copy of B once a kernel holds it. Thread-safe. Returns 0, or
 * HS_INVALID_ARGUMENT (not a qmatmul kernel, wrong size) with err filled. */
int hs_kernel_qmatmul_b(const hs_kernel *k, int8_t *dst, size_t dst_bytes, hs_error *err);
/* Writes qconv kernel k's weights (int8, ONNX's layout [out_c, in_c / groups, k...], as hs_qconv_params.weights
 * gave them) into dst, dst_bytes long (exactly their size). Lets a caller drop its own copy once a kernel holds
 * them. Thread-safe. Returns 0, or HS_INVALID_ARGUMENT (not a qconv kernel, wrong size) with err filled. */
int hs_kernel_qconv_weights(const hs_kernel *k, int8_t *dst, size_t dst_bytes, hs_error *err);

#ifdef __cplusplus
}
#endif
#endif

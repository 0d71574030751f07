/* rnn.c - the recurrent ops RNN, GRU and LSTM (opsets 7 to 21) in plain C on the kernels layer's GEMM. */

/*
 * DESIGN
 * The three ops share one code path, parameterised by the cell (gate count G: 1, 3 or 4). Every
 * attribute the spec defines is honoured: direction (forward, reverse, bidirectional),
 * activations with activation_alpha / activation_beta (consumed, as ONNX Runtime does, only by the
 * functions that take them), clip, hidden_size, layout 0/1, GRU's linear_before_reset, LSTM's
 * input_forget and peepholes P, sequence_lens, initial_h / initial_c; and all three outputs Y, Y_h,
 * Y_c. Per direction, the input projection X * W^T (+ both biases) is one GEMM over every
 * timestep at once into scratch; each step then adds H_{t-1} * R^T (one GEMM over the batch, on one
 * thread when it is small) and applies the gates (sigmoid / tanh vectorized, below). Batch rows
 * whose sequence_lens entry is shorter than the step stop updating; their Y rows past the end stay
 * zero and Y_h / Y_c hold their last step, as ONNX Runtime does. W, R and B may be graph constants
 * or inputs given at run time. When R is a graph constant, prepare() keeps R_d transposed ([H][G*H])
 * in node state (and W_d transposed when W is one too), and each step's product (and the input
 * projection) runs on a small register-blocked kernel here (step_mm) instead of a oneDNN sgemm call:
 * at the sizes recurrent models use (batch 1-8, hidden 48) the call's fixed cost was most of a step
 * (docs/KERNELS.md, "Recurrent ops"). A bidirectional layer with enough work runs its two directions
 * on two threads at once. oneDNN's RNN primitives are not used: they lack sequence_lens, most
 * activations and clip, and need constant weights.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/parallel.h"
#include "ops/ops.h"

enum { CELL_RNN, CELL_GRU, CELL_LSTM };
enum { DIR_FORWARD, DIR_REVERSE, DIR_BIDI };
enum {
  ACT_RELU,
  ACT_TANH,
  ACT_SIGMOID,
  ACT_AFFINE,
  ACT_LEAKYRELU,
  ACT_THRESHOLDEDRELU,
  ACT_SCALEDTANH,
  ACT_HARDSIGMOID,
  ACT_ELU,
  ACT_SOFTSIGN,
  ACT_SOFTPLUS,
};

/* Name, how many of alpha/beta it takes from the attribute lists, and their defaults. */
static const struct {
  const char *name;
  int nargs;
  float alpha, beta;
} k_acts[] = {
    [ACT_RELU] = {"Relu", 0, 0, 0},
    [ACT_TANH] = {"Tanh", 0, 0, 0},
    [ACT_SIGMOID] = {"Sigmoid", 0, 0, 0},
    [ACT_AFFINE] = {"Affine", 2, 1.0f, 0.0f},
    [ACT_LEAKYRELU] = {"LeakyRelu", 1, 0.01f, 0},
    [ACT_THRESHOLDEDRELU] = {"ThresholdedRelu", 1, 1.0f, 0},
    [ACT_SCALEDTANH] = {"ScaledTanh", 2, 1.0f, 1.0f},
    [ACT_HARDSIGMOID] = {"HardSigmoid", 2, 0.2f, 0.5f},
    [ACT_ELU] = {"Elu", 1, 1.0f, 0},
    [ACT_SOFTSIGN] = {"Softsign", 0, 0, 0},
    [ACT_SOFTPLUS] = {"Softplus", 0, 0, 0},
};

typedef struct {
  int kind;
  float alpha, beta;
} rnn_act;

#define RNN_MAX_ACTS 3 /* per direction: f (RNN); f, g (GRU); f, g, h (LSTM) */

typedef struct {
  int cell, gates, n_acts;
  int direction, dirs;
  int layout;
  int lbr;          /* GRU linear_before_reset */
  int input_forget; /* LSTM: forget gate = 1 - input gate */
  int has_clip;
  float clip;
  int64_t hidden; /* hidden_size, or 0 when absent (taken from R) */
  rnn_act act[2][RNN_MAX_ACTS];
} rnn_params;

_Static_assert(sizeof(rnn_params) <= HS_OP_PARAMS_BYTES, "rnn_params must fit in the node");

static int cell_of(const hs_node *n) {
  return n->op == HS_OP_LSTM ? CELL_LSTM : n->op == HS_OP_GRU ? CELL_GRU : CELL_RNN;
}

static int name_eq_nocase(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
  return *a == *b;
}

static int rnn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  rnn_params *p = (rnn_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  p->cell = cell_of(n);
  static const int gates[] = {1, 3, 4}, acts[] = {1, 2, 3};
  p->gates = gates[p->cell];
  p->n_acts = acts[p->cell];
  char allowed[200] = "activation_alpha,activation_beta,activations,clip,direction,hidden_size";
  if (n->opset >= 14) strcat(allowed, ",layout");
  if (p->cell == CELL_GRU) strcat(allowed, ",linear_before_reset");
  if (p->cell == CELL_LSTM) strcat(allowed, ",input_forget");
  int rc = hs_node_only_attrs(n, allowed, err);
  const char *dir;
  int64_t hidden, layout, lbr, input_forget;
  if (rc || (rc = hs_attr_string(n, "direction", "forward", &dir, err)) ||
      (rc = hs_attr_int(n, "hidden_size", 0, &hidden, err)) || (rc = hs_attr_int(n, "layout", 0, &layout, err)) ||
      (rc = hs_attr_int(n, "linear_before_reset", 0, &lbr, err)) ||
      (rc = hs_attr_int(n, "input_forget", 0, &input_forget, err)) ||
      (rc = hs_attr_float(n, "clip", 0, &p->clip, err)))
    return rc;
  if (strcmp(dir, "forward") == 0) p->direction = DIR_FORWARD;
  else if (strcmp(dir, "reverse") == 0) p->direction = DIR_REVERSE;
  else if (strcmp(dir, "bidirectional") == 0) p->direction = DIR_BIDI;
  else return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "direction '%s' is not forward, reverse or bidirectional", dir);
  p->dirs = p->direction == DIR_BIDI ? 2 : 1;
  if (hidden < 0 || hidden > INT32_MAX) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "hidden_size %lld", (long long)hidden);
  if (layout != 0 && layout != 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "layout %lld is not 0 or 1", (long long)layout);
  p->hidden = hidden;
  p->layout = (int)layout;
  p->lbr = lbr != 0;
  p->input_forget = input_forget != 0;
  p->has_clip = hs_node_attr(n, "clip") != NULL;
  if (p->has_clip && !(p->clip >= 0)) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "clip must be >= 0");

  /* activations: defaults, then the attribute (one list per direction, or one list for both) */
  static const int defaults[3][RNN_MAX_ACTS] = {{ACT_TANH}, {ACT_SIGMOID, ACT_TANH}, {ACT_SIGMOID, ACT_TANH, ACT_TANH}};
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < p->n_acts; k++) {
      int kind = defaults[p->cell][k];
      p->act[d][k] = (rnn_act){kind, k_acts[kind].alpha, k_acts[kind].beta};
    }
  const hs_attr *a = hs_node_attr(n, "activations");
  if (!a) return 0;
  if (a->type != HS_ATTR_STRINGS) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "activations must be strings");
  if (a->n != (size_t)p->n_acts && a->n != (size_t)(p->n_acts * p->dirs))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "%zu activations, expected %d", a->n, p->n_acts * p->dirs);
  const hs_attr *al = hs_node_attr(n, "activation_alpha"), *be = hs_node_attr(n, "activation_beta");
  if ((al && al->type != HS_ATTR_FLOATS) || (be && be->type != HS_ATTR_FLOATS))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "activation_alpha / activation_beta must be floats");
  size_t ia = 0, ib = 0;
  const char *s = a->s;
  for (size_t i = 0; i < a->n; i++, s += strlen(s) + 1) {
    int kind = -1;
    for (int k = 0; k < (int)(sizeof k_acts / sizeof k_acts[0]); k++)
      if (name_eq_nocase(s, k_acts[k].name)) kind = k;
    if (kind < 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "activation '%s' is not supported", s);
    rnn_act act = {kind, k_acts[kind].alpha, k_acts[kind].beta};
    if (k_acts[kind].nargs >= 1 && al && ia < al->n) act.alpha = al->floats[ia++];
    if (k_acts[kind].nargs >= 2 && be && ib < be->n) act.beta = be->floats[ib++];
    int d = (int)(i / (size_t)p->n_acts), k = (int)(i % (size_t)p->n_acts);
    p->act[d][k] = act;
    if (a->n == (size_t)p->n_acts) p->act[1][k] = act; /* one list for both directions */
  }
  return 0;
}

/* Checks that t (when present) is float32 of exactly the given shape. */
static int need_shape(const hs_node *n, const hs_tensor *t, const char *what, int ndim, const int64_t *dims,
                      hs_error *err) {
  int ok = t->dtype == HS_DT_FLOAT32 && t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = t->dims[i] == dims[i];
  if (ok) return 0;
  char want[96] = "", *w = want;
  for (int i = 0; i < ndim; i++)
    w += snprintf(w, sizeof want - (size_t)(w - want), "%s%lld", i ? ", " : "", (long long)dims[i]);
  return hs_op_errf(err, n, t->dtype != HS_DT_FLOAT32 ? HS_UNSUPPORTED : HS_INVALID_ARGUMENT,
                    "%s must be float32 [%s]", what, want);
}

/* The sizes every entry point derives from the inputs. */
typedef struct {
  int64_t seq, batch, in, hid, gh;
} rnn_dims;

static int rnn_dims_of(const hs_node *n, const hs_tensor *in, int nin, rnn_dims *s, hs_error *err) {
  const rnn_params *p = (const rnn_params *)n->params.bytes;
  const hs_tensor *x = &in[0], *w = &in[1], *r = &in[2];
  int rc = hs_need_dtype(n, x, "X", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  if (x->ndim != 3) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "X must be 3-D");
  if (r->ndim != 3 || r->dtype != HS_DT_FLOAT32)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "R must be float32 [num_directions, %d*hidden, hidden]", p->gates);
  s->seq = x->dims[p->layout ? 1 : 0];
  s->batch = x->dims[p->layout ? 0 : 1];
  s->in = x->dims[2];
  s->hid = p->hidden ? p->hidden : r->dims[2];
  s->gh = p->gates * s->hid;
  int64_t dw[3] = {p->dirs, s->gh, s->in}, dr[3] = {p->dirs, s->gh, s->hid}, db[2] = {p->dirs, 2 * s->gh};
  int64_t dh[3] = {p->dirs, s->batch, s->hid}, dp[2] = {p->dirs, 3 * s->hid};
  if (p->layout) dh[0] = s->batch, dh[1] = p->dirs;
  if ((rc = need_shape(n, w, "W", 3, dw, err)) || (rc = need_shape(n, r, "R", 3, dr, err))) return rc;
  if (nin > 3 && HS_PRESENT(&in[3]) && (rc = need_shape(n, &in[3], "B", 2, db, err))) return rc;
  if (nin > 4 && HS_PRESENT(&in[4])) {
    if ((rc = hs_need_dtype(n, &in[4], "sequence_lens", err, HS_DT_INT32, HS_DT_INT64, HS_DT_UNDEFINED))) return rc;
    if (in[4].ndim != 1 || in[4].dims[0] != s->batch)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "sequence_lens must be [%lld]", (long long)s->batch);
  }
  if (nin > 5 && HS_PRESENT(&in[5]) && (rc = need_shape(n, &in[5], "initial_h", 3, dh, err))) return rc;
  if (nin > 6 && HS_PRESENT(&in[6]) && (rc = need_shape(n, &in[6], "initial_c", 3, dh, err))) return rc;
  if (nin > 7 && HS_PRESENT(&in[7]) && (rc = need_shape(n, &in[7], "P", 2, dp, err))) return rc;
  return 0;
}

static int rnn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const rnn_params *p = (const rnn_params *)n->params.bytes;
  rnn_dims s;
  int rc = rnn_dims_of(n, in, nin, &s, err);
  if (rc) return rc;
  int64_t dy[4] = {s.seq, p->dirs, s.batch, s.hid}, dh[3] = {p->dirs, s.batch, s.hid};
  if (p->layout) {
    dy[0] = s.batch, dy[1] = s.seq, dy[2] = p->dirs;
    dh[0] = s.batch, dh[1] = p->dirs;
  }
  if ((rc = hs_set_shape(&out[0], HS_DT_FLOAT32, 4, dy, n, err))) return rc;
  for (int k = 1; k < nout && rc == 0; k++) rc = hs_set_shape(&out[k], HS_DT_FLOAT32, 3, dh, n, err);
  return rc;
}

/* Scratch floats of one direction: XW [seq*batch, G*H], gates and HR [batch, G*H], h, c, r*h [batch, H],
 * summed bias [G*H]. */
static int64_t rnn_dir_floats(const rnn_dims *s) {
  return (s->seq * s->batch + 2 * s->batch + 1) * s->gh + 3 * s->batch * s->hid;
}

/* Scratch: rnn_dir_floats() per direction, so that the two directions may run at once. */
static size_t rnn_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)out, (void)nout;
  const rnn_params *p = (const rnn_params *)n->params.bytes;
  rnn_dims s = {0};
  hs_error e;
  if (rnn_dims_of(n, in, nin, &s, &e)) return 0;
  return sizeof(float) * (size_t)(p->dirs * rnn_dir_floats(&s)) + 64;
}

/* Multiply-adds per recurrent step from which the step's GEMM runs on the session's threads, and per
 * run from which the input projection does: below, forking costs more than it saves. */
#define RNN_STEP_PARALLEL_MIN (1 << 20)
#define RNN_RUN_PARALLEL_MIN (1 << 23)
/* Multiply-adds per direction from which a bidirectional layer runs its directions on two threads at
 * once: below, waking the second thread costs about what it saves (a 2-layer BiLSTM tagger at hidden 48:
 * batch 1, 0.55M per direction, ran 2-4x slower on two threads; batch 4, 1.2-3.5M, about 1.6x faster). */
#define RNN_DIR_PARALLEL_MIN (1 << 20)

/* C[M,N] = A[M,K] * B[N,K]^T (+ C when acc): oneDNN's sgemm, plain loops when it refuses. */
static void gemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, int acc) {
  if (M == 0 || N == 0) return;
  if (K > 0 && hs_kernel_sgemm(0, 1, M, N, K, 1.0f, A, lda, B, ldb, acc ? 1.0f : 0.0f, C, ldc) == 0) return;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      float sum = acc ? C[i * ldc + j] : 0.0f;
      for (int64_t k = 0; k < K; k++) sum += A[i * lda + k] * B[j * ldb + k];
      C[i * ldc + j] = sum;
    }
}

/* Sigmoid and tanh for the gate loops, in GCC / Clang vector extensions (4 floats, SSE2's width, or 8
 * in a copy compiled for AVX2 and FMA that runs where the CPU has them) with a scalar tail computing the same
 * arithmetic: the gates were half of an LSTM step's time with expf / tanhf. exp: Cephes' expf (round to nearest with the
 * 1.5 * 2^23 trick, Cody-Waite reduction, degree-5 polynomial; ~1e-7 relative), so the sigmoid keeps
 * its relative accuracy for large negative inputs; tanh: the rational approximation Eigen uses
 * (clamped at +-7.9, relative error < 4e-7). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define EXP_LO (-87.0f)
#define EXP_HI 88.0f
#define TANH_LIM 7.90531110763549805f

static inline float clampf(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }

/* x clamped to [lo, hi], lane-wise, for vectors of type VF / VI (comparisons give -1 lanes). */
#define VCLAMP(VF, VI, x, lo, hi)                                                            \
  do {                                                                                       \
    VF lo_ = (x) - (x) + (lo), hi_ = (x) - (x) + (hi);                                       \
    VI below_ = (x) < lo_, above_ = (x) > hi_;                                               \
    (x) = (VF)((below_ & (VI)lo_) | (above_ & (VI)hi_) | (~(below_ | above_) & (VI)(x)));    \
  } while (0)

/* The polynomial parts, shared by the scalar and vector forms (T is float or a vector; nf as float). */
#define EXP_POLY(T, x, nf, out)                                                 \
  do {                                                                          \
    T r_ = (x) - (nf) * 0.693359375f + (nf) * 2.12194440e-4f;                   \
    T p_ = r_ * 1.9875691500e-4f + 1.3981999507e-3f;                            \
    p_ = p_ * r_ + 8.3334519073e-3f;                                            \
    p_ = p_ * r_ + 4.1665795894e-2f;                                            \
    p_ = p_ * r_ + 1.6666665459e-1f;                                            \
    p_ = p_ * r_ + 5.0000001201e-1f;                                            \
    (out) = p_ * r_ * r_ + r_ + 1.0f;                                           \
  } while (0)
#define TANH_RATIONAL(T, x, out)                                                \
  do {                                                                          \
    T x2_ = (x) * (x);                                                          \
    T p_ = x2_ * -2.76076847742355e-16f + 2.00018790482477e-13f;                \
    p_ = x2_ * p_ + -8.60467152213735e-11f;                                     \
    p_ = x2_ * p_ + 5.12229709037114e-08f;                                      \
    p_ = x2_ * p_ + 1.48572235717979e-05f;                                      \
    p_ = x2_ * p_ + 6.37261928875436e-04f;                                      \
    p_ = x2_ * p_ + 4.89352455891786e-03f;                                      \
    T q_ = x2_ * 1.19825839466702e-06f + 1.18534705686654e-04f;                 \
    q_ = x2_ * q_ + 2.26843463243900e-03f;                                      \
    q_ = x2_ * q_ + 4.89352518554385e-03f;                                      \
    (out) = (x) * p_ / q_;                                                      \
  } while (0)

static inline float exp_approx(float x) {
  x = clampf(x, EXP_LO, EXP_HI);
  float nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f, p; /* round to nearest */
  EXP_POLY(float, x, nf, p);
  union {
    uint32_t u;
    float f;
  } s = {.u = (uint32_t)((int32_t)nf + 127) << 23};
  return p * s.f;
}

/* Sigmoid / tanh over the whole vectors of x[0..len) with W-lane vectors VF / VI, compiled with ATTR;
 * return how many elements they did (the caller finishes the tail in scalar code). */
#define RNN_VECTOR_ACTS(SUF, VF, VI, W, ATTR)                                  \
  ATTR static int64_t sigmoid_##SUF(float *x, int64_t len) {                   \
    int64_t i = 0;                                                             \
    for (; i + (W) <= len; i += (W)) {                                         \
      VF v, p;                                                                 \
      memcpy(&v, x + i, sizeof v);                                             \
      v = -v;                                                                  \
      VCLAMP(VF, VI, v, EXP_LO, EXP_HI);                                       \
      VF nf = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;          \
      EXP_POLY(VF, v, nf, p);                                                  \
      VI e = __builtin_convertvector(nf, VI);                                  \
      v = 1.0f / (1.0f + p * (VF)((e + 127) << 23));                           \
      memcpy(x + i, &v, sizeof v);                                             \
    }                                                                          \
    return i;                                                                  \
  }                                                                            \
  ATTR static int64_t tanh_##SUF(float *x, int64_t len) {                      \
    int64_t i = 0;                                                             \
    for (; i + (W) <= len; i += (W)) {                                         \
      VF v, t;                                                                 \
      memcpy(&v, x + i, sizeof v);                                             \
      VCLAMP(VF, VI, v, -TANH_LIM, TANH_LIM);                                  \
      TANH_RATIONAL(VF, v, t);                                                 \
      memcpy(x + i, &t, sizeof t);                                             \
    }                                                                          \
    return i;                                                                  \
  }

RNN_VECTOR_ACTS(v4, v4f, v4i, 4, )
#if defined(__x86_64__) || defined(__i386__)
RNN_VECTOR_ACTS(v8, v8f, v8i, 8, __attribute__((target("avx2,fma"))))
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
static int64_t sigmoid_v8(float *x, int64_t len) { return sigmoid_v4(x, len); }
static int64_t tanh_v8(float *x, int64_t len) { return tanh_v4(x, len); }
static int has_avx2(void) { return 0; }
#endif

/* The recurrent step's product C[M,N] (+)= A[M,K] * Bt[K,N] (Bt row-major, rows ldb apart: R_d transposed,
 * or a column range of it), for M = batch (1-8 here) and K = hidden: blocks of 4 (then 2) rows x 4
 * vectors of columns keep 16 (8) accumulators in registers, so each loaded vector of Bt serves every
 * row of the block (4 rows instead of 2: the LSTM tagger at batch 4 on one thread 0.151 -> 0.120 ms);
 * single rows take 4 vectors (4 independent FMA chains; 8 measured no faster). Returns how many
 * leading columns it did (the caller does the rest). */
#define STEP_MM_BLOCK(VF, W, ROWS, VECS)                                                     \
  do {                                                                                       \
    VF acc_[ROWS][VECS];                                                                     \
    for (int r_ = 0; r_ < (ROWS); r_++)                                                      \
      for (int v_ = 0; v_ < (VECS); v_++) {                                                  \
        if (acc) memcpy(&acc_[r_][v_], C + (i + r_) * ldc + j + v_ * (W), sizeof(VF));       \
        else acc_[r_][v_] = (VF){0};                                                         \
      }                                                                                      \
    for (int64_t k = 0; k < K; k++)                                                          \
      for (int v_ = 0; v_ < (VECS); v_++) {                                                  \
        VF b_;                                                                               \
        memcpy(&b_, Bt + k * ldb + j + v_ * (W), sizeof b_);                                 \
        for (int r_ = 0; r_ < (ROWS); r_++) acc_[r_][v_] += A[(i + r_) * lda + k] * b_;      \
      }                                                                                      \
    for (int r_ = 0; r_ < (ROWS); r_++)                                                      \
      for (int v_ = 0; v_ < (VECS); v_++) memcpy(C + (i + r_) * ldc + j + v_ * (W), &acc_[r_][v_], sizeof(VF)); \
  } while (0)

#define RNN_STEP_MM(SUF, VF, W, ATTR)                                                                  \
  ATTR static int64_t step_mm_##SUF(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,     \
                                    const float *Bt, int64_t ldb, float *C, int64_t ldc, int acc) {   \
    int64_t j = 0;                                                                                     \
    for (; j + 4 * (W) <= N; j += 4 * (W)) {                                                           \
      int64_t i = 0;                                                                                   \
      for (; i + 4 <= M; i += 4) STEP_MM_BLOCK(VF, W, 4, 4);                                           \
      for (; i + 2 <= M; i += 2) STEP_MM_BLOCK(VF, W, 2, 4);                                           \
      for (; i < M; i++) STEP_MM_BLOCK(VF, W, 1, 4);                                                   \
    }                                                                                                  \
    for (; j + (W) <= N; j += (W))                                                                     \
      for (int64_t i = 0; i < M; i++) STEP_MM_BLOCK(VF, W, 1, 1);                                      \
    return j;                                                                                          \
  }

typedef float v16f __attribute__((vector_size(64)));
RNN_STEP_MM(v4, v4f, 4, )
#if defined(__x86_64__) || defined(__i386__)
RNN_STEP_MM(v8, v8f, 8, __attribute__((target("avx2,fma"))))
RNN_STEP_MM(v16, v16f, 16, __attribute__((target("avx512f"))))
static int has_avx512(void) { return __builtin_cpu_supports("avx512f"); }
#else
static int64_t step_mm_v8(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bt, int64_t ldb,
                          float *C, int64_t ldc, int acc) {
  return step_mm_v4(M, N, K, A, lda, Bt, ldb, C, ldc, acc);
}
static int64_t step_mm_v16(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bt, int64_t ldb,
                           float *C, int64_t ldc, int acc) {
  return step_mm_v4(M, N, K, A, lda, Bt, ldb, C, ldc, acc);
}
static int has_avx512(void) { return 0; }
#endif

static void step_mm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bt, int64_t ldb,
                    float *C, int64_t ldc, int acc) {
  int64_t j = has_avx512() ? step_mm_v16(M, N, K, A, lda, Bt, ldb, C, ldc, acc)
              : has_avx2() ? step_mm_v8(M, N, K, A, lda, Bt, ldb, C, ldc, acc)
                           : step_mm_v4(M, N, K, A, lda, Bt, ldb, C, ldc, acc);
  for (int64_t i = 0; i < M; i++)
    for (int64_t c = j; c < N; c++) {
      float sum = acc ? C[i * ldc + c] : 0.0f;
      for (int64_t k = 0; k < K; k++) sum += A[i * lda + k] * Bt[k * ldb + c];
      C[i * ldc + c] = sum;
    }
}

/* C[M,N] (+)= A[M,K] * R[N,K]^T for a step's product: on step_mm when Rt (R transposed, rows ldt apart)
 * is at hand, else on the GEMM. */
static void rec_mm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *R, int64_t ldr,
                   const float *Rt, int64_t ldt, float *C, int64_t ldc, int acc) {
  if (Rt) step_mm(M, N, K, A, lda, Rt, ldt, C, ldc, acc);
  else gemm_nt(M, N, K, A, lda, R, ldr, C, ldc, acc);
}

static void sigmoid_inplace(float *x, int64_t len) {
  int64_t i = has_avx2() ? sigmoid_v8(x, len) : sigmoid_v4(x, len);
  for (; i < len; i++) x[i] = 1.0f / (1.0f + exp_approx(-x[i]));
}

static void tanh_inplace(float *x, int64_t len) {
  int64_t i = has_avx2() ? tanh_v8(x, len) : tanh_v4(x, len);
  for (; i < len; i++) {
    float v = clampf(x[i], -TANH_LIM, TANH_LIM), t;
    TANH_RATIONAL(float, v, t);
    x[i] = t;
  }
}

static void act_apply(const rnn_act *a, float *x, int64_t len, int has_clip, float clip) {
  if (has_clip)
    for (int64_t i = 0; i < len; i++) x[i] = x[i] < -clip ? -clip : x[i] > clip ? clip : x[i];
  const float al = a->alpha, be = a->beta;
  switch (a->kind) {
    case ACT_RELU: for (int64_t i = 0; i < len; i++) x[i] = x[i] > 0 ? x[i] : 0; break;
    case ACT_TANH: tanh_inplace(x, len); break;
    case ACT_SIGMOID: sigmoid_inplace(x, len); break;
    case ACT_AFFINE: for (int64_t i = 0; i < len; i++) x[i] = al * x[i] + be; break;
    case ACT_LEAKYRELU: for (int64_t i = 0; i < len; i++) x[i] = x[i] >= 0 ? x[i] : al * x[i]; break;
    case ACT_THRESHOLDEDRELU: for (int64_t i = 0; i < len; i++) x[i] = x[i] > al ? x[i] : 0; break;
    case ACT_SCALEDTANH: for (int64_t i = 0; i < len; i++) x[i] = al * tanhf(be * x[i]); break;
    case ACT_HARDSIGMOID:
      for (int64_t i = 0; i < len; i++) {
        float v = al * x[i] + be;
        x[i] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
      break;
    case ACT_ELU: for (int64_t i = 0; i < len; i++) x[i] = x[i] >= 0 ? x[i] : al * (expf(x[i]) - 1.0f); break;
    case ACT_SOFTSIGN: for (int64_t i = 0; i < len; i++) x[i] = x[i] / (1.0f + fabsf(x[i])); break;
    case ACT_SOFTPLUS:
      for (int64_t i = 0; i < len; i++) x[i] = x[i] > 20.0f ? x[i] : log1pf(expf(x[i]));
      break;
    default: break;
  }
}

/* Where the rows of one direction live: X/Y/state indexing for either layout. */
typedef struct {
  const rnn_params *p;
  rnn_dims s;
  int d; /* direction index in the outputs */
} rnn_view;

static int64_t x_row(const rnn_view *v, int64_t t, int64_t b) {
  return v->p->layout ? b * v->s.seq + t : t * v->s.batch + b;
}
static int64_t y_off(const rnn_view *v, int64_t t, int64_t b) {
  int64_t dirs = v->p->dirs;
  return (v->p->layout ? (b * v->s.seq + t) * dirs + v->d : (t * dirs + v->d) * v->s.batch + b) * v->s.hid;
}
static int64_t h_off(const rnn_view *v, int64_t b) {
  return (v->p->layout ? b * v->p->dirs + v->d : v->d * v->s.batch + b) * v->s.hid;
}

/* Kernel state (prepare): R_d transposed, [H][G*H] per direction, for step_mm; only when R is a constant.
 * When W is a constant too, W_d transposed as well, for the input projection (W is then held twice: the
 * graph's constant and this copy). */
typedef struct {
  int64_t dirs, gh, hid; /* R's shape */
  float *rt;             /* dirs x hid x gh */
  int64_t in;            /* W's input width, when wt is set */
  float *wt;             /* W_d transposed, dirs x in x gh, when W is a constant too (else NULL) */
} rnn_state;

static void rnn_free_state(void *p) {
  rnn_state *st = p;
  if (st) free(st->rt), free(st->wt);
  free(st);
}

static int rnn_prepare(hs_node *n, const hs_graph *g, hs_error *err) {
  if (n->n_in < 3 || n->in[2] < 0) return 0;
  const hs_value *r = &g->values[n->in[2]];
  if (r->kind != HS_VAL_CONST || r->dtype != HS_DT_FLOAT32 || !r->data || r->ndim != 3) return 0;
  const int64_t dirs = r->dims[0], gh = r->dims[1], hid = r->dims[2];
  if (dirs <= 0 || gh <= 0 || hid <= 0 || r->nbytes / sizeof(float) / (size_t)dirs / (size_t)gh != (size_t)hid ||
      r->nbytes != (size_t)dirs * (size_t)gh * (size_t)hid * sizeof(float))
    return 0; /* run() reports the shape */
  rnn_state *st = calloc(1, sizeof *st);
  if (st) st->rt = malloc(r->nbytes);
  if (!st || !st->rt) {
    rnn_free_state(st);
    return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  }
  st->dirs = dirs, st->gh = gh, st->hid = hid;
  const float *R = r->data;
  for (int64_t d = 0; d < dirs; d++)
    for (int64_t j = 0; j < gh; j++)
      for (int64_t k = 0; k < hid; k++) st->rt[(d * hid + k) * gh + j] = R[(d * gh + j) * hid + k];
  const hs_value *w = n->in[1] >= 0 ? &g->values[n->in[1]] : NULL;
  if (w && w->kind == HS_VAL_CONST && w->dtype == HS_DT_FLOAT32 && w->data && w->ndim == 3 && w->dims[0] == dirs &&
      w->dims[1] == gh && w->dims[2] > 0 &&
      w->nbytes / sizeof(float) / (size_t)dirs / (size_t)gh == (size_t)w->dims[2] &&
      w->nbytes % ((size_t)dirs * (size_t)gh * sizeof(float)) == 0 && (st->wt = malloc(w->nbytes)) != NULL) {
    /* (no transposed W when it does not fit or memory is short: the projection takes the sgemm path) */
    const int64_t in = st->in = w->dims[2];
    const float *W = w->data;
    for (int64_t d = 0; d < dirs; d++)
      for (int64_t j = 0; j < gh; j++)
        for (int64_t k = 0; k < in; k++) st->wt[(d * in + k) * gh + j] = W[(d * gh + j) * in + k];
  }
  n->state = st;
  n->free_state = rnn_free_state;
  return 0;
}

/* x[j] += a[j] over len floats (restrict: the compiler vectorizes it). */
static void add_to(float *restrict x, const float *restrict a, int64_t len) {
  for (int64_t j = 0; j < len; j++) x[j] += a[j];
}

/* The LSTM cell state without peepholes: c = f * c + i * g. */
static void lstm_cell(int64_t H, const float *restrict gi, const float *restrict gf, const float *restrict gc,
                      float *restrict c) {
  for (int64_t j = 0; j < H; j++) c[j] = gf[j] * c[j] + gi[j] * gc[j];
}

static void mul_into(float *restrict h, const float *restrict a, const float *restrict b, int64_t len) {
  for (int64_t j = 0; j < len; j++) h[j] = a[j] * b[j];
}

/* One run's operands, shared by its directions (which may run on two threads at once). */
typedef struct {
  const rnn_params *p;
  rnn_dims s;
  const float *X, *W, *R, *Bias, *H0, *C0, *P;
  const hs_tensor *lens;
  float *Y, *Yh, *Yc;
  float *scratch;        /* rnn_dir_floats() per direction */
  const rnn_state *st;   /* R transposed, or NULL */
  int small_run;         /* the whole run on one thread */
} rnn_job;

/* Runs direction d of the job over every step, on its own part of the scratch. */
static void rnn_direction(const rnn_job *job, int d) {
  const rnn_params *p = job->p;
  const rnn_dims s = job->s;
  const int64_t H = s.hid, GH = s.gh, B = s.batch;
  const float *X = job->X, *W = job->W, *R = job->R, *Bias = job->Bias, *H0 = job->H0, *C0 = job->C0, *P = job->P;
  const hs_tensor *lens = job->lens;
  float *Y = job->Y, *Yh = job->Yh, *Yc = job->Yc;
  const int small_run = job->small_run;
  const int prev_threads = hs_kernels_threads();
  float *XW = job->scratch + d * rnn_dir_floats(&s), *G = XW + s.seq * B * GH, *HR = G + B * GH, *h = HR + B * GH;
  float *c = h + B * H, *rh = c + B * H, *bsum = rh + B * H;
  const rnn_state *st = job->st;
  const int reverse = p->direction == DIR_REVERSE || d == 1;
  const rnn_view v = {p, s, d};
  const float *Wd = W + d * GH * s.in, *Rd = R + d * GH * H, *Rt = st ? st->rt + d * H * GH : NULL;
  const float *Wb = Bias ? Bias + d * 2 * GH : NULL, *Rb = Bias ? Wb + GH : NULL;
  const float *Pd = P ? P + d * 3 * H : NULL;
  const rnn_act *act = p->act[d];
  /* input projection for every timestep; rows follow X's memory order */
  /* (on step_mm too when W is a constant: faster than the sgemm call at these sizes, e.g. the text
   * recognizer's first layer, [80, 512] x [512, 192] per direction, 164 -> 125 us) */
  if (st && st->wt && st->in == s.in)
    step_mm(s.seq * B, GH, s.in, X, s.in, st->wt + d * s.in * GH, GH, XW, GH, 0);
  else
    gemm_nt(s.seq * B, GH, s.in, X, s.in, Wd, s.in, XW, GH, 0);
  if (Wb) {
    /* GRU with linear_before_reset adds Rb_h inside the reset product, not here */
    int64_t rb_end = p->cell == CELL_GRU && p->lbr ? 2 * H : GH;
    for (int64_t j = 0; j < GH; j++) bsum[j] = Wb[j] + (j < rb_end ? Rb[j] : 0.0f);
    for (int64_t row = 0; row < s.seq * B; row++) add_to(XW + row * GH, bsum, GH);
  }
  memset(G, 0, sizeof(float) * (size_t)(B * GH)); /* rows of idle batch entries stay defined */
  memset(rh, 0, sizeof(float) * (size_t)(B * H));
  for (int64_t b = 0; b < B; b++) {
    if (H0) memcpy(h + b * H, H0 + h_off(&v, b), sizeof(float) * (size_t)H);
    else memset(h + b * H, 0, sizeof(float) * (size_t)H);
    if (C0) memcpy(c + b * H, C0 + h_off(&v, b), sizeof(float) * (size_t)H);
    else memset(c + b * H, 0, sizeof(float) * (size_t)H);
  }
  /* a step's product is too small to share between threads: forking for it costs more (10x on 2 cores) */
  const int one_thread = !small_run && B * GH * H < RNN_STEP_PARALLEL_MIN;
  if (one_thread) hs_kernels_set_threads(1);
  for (int64_t step = 0; step < s.seq; step++) {
    /* gates = XW row of each batch entry's timestep; batch entries already past their end idle */
    for (int64_t b = 0; b < B; b++) {
      int64_t len = lens ? hs_get_int(lens, b) : s.seq;
      if (step >= len) continue;
      int64_t t = reverse ? len - 1 - step : step;
      memcpy(G + b * GH, XW + x_row(&v, t, b) * GH, sizeof(float) * (size_t)GH);
    }
    if (p->cell == CELL_GRU) {
      rec_mm(B, 2 * H, H, h, H, Rd, H, Rt, GH, G, GH, 1); /* z, r */
      if (p->lbr) rec_mm(B, H, H, h, H, Rd + 2 * H * H, H, Rt ? Rt + 2 * H : NULL, GH, HR, H, 0);
    } else {
      rec_mm(B, GH, H, h, H, Rd, H, Rt, GH, G, GH, 1);
    }
    for (int64_t b = 0; b < B; b++) {
      int64_t len = lens ? hs_get_int(lens, b) : s.seq;
      if (step >= len) continue;
      float *g = G + b * GH, *hb = h + b * H, *cb = c + b * H;
      if (p->cell == CELL_RNN) {
        act_apply(&act[0], g, H, p->has_clip, p->clip);
        memcpy(hb, g, sizeof(float) * (size_t)H);
      } else if (p->cell == CELL_GRU) {
        float *z = g, *r = g + H, *hh = g + 2 * H;
        act_apply(&act[0], z, 2 * H, p->has_clip, p->clip); /* z and r */
        if (p->lbr) {
          const float *hr = HR + b * H;
          for (int64_t j = 0; j < H; j++) hh[j] += r[j] * (hr[j] + (Rb ? Rb[2 * H + j] : 0.0f));
        } else {
          for (int64_t j = 0; j < H; j++) rh[b * H + j] = r[j] * hb[j];
        }
      } else if (!Pd && !p->input_forget) {
        /* gates i, o, f are adjacent and take the same function: one call */
        float *gi = g, *go = g + H, *gf = g + 2 * H, *gc = g + 3 * H;
        act_apply(&act[0], gi, 3 * H, p->has_clip, p->clip);
        act_apply(&act[1], gc, H, p->has_clip, p->clip);
        lstm_cell(H, gi, gf, gc, cb);
        memcpy(gc, cb, sizeof(float) * (size_t)H); /* h(C_t) in the spent c-gate slot */
        act_apply(&act[2], gc, H, 0, 0);
        mul_into(hb, go, gc, H);
      } else {
        float *gi = g, *go = g + H, *gf = g + 2 * H, *gc = g + 3 * H;
        if (Pd)
          for (int64_t j = 0; j < H; j++) gi[j] += Pd[j] * cb[j], gf[j] += Pd[2 * H + j] * cb[j];
        act_apply(&act[0], gi, H, p->has_clip, p->clip);
        if (p->input_forget)
          for (int64_t j = 0; j < H; j++) gf[j] = 1.0f - gi[j];
        else
          act_apply(&act[0], gf, H, p->has_clip, p->clip);
        act_apply(&act[1], gc, H, p->has_clip, p->clip);
        for (int64_t j = 0; j < H; j++) cb[j] = gf[j] * cb[j] + gi[j] * gc[j];
        if (Pd)
          for (int64_t j = 0; j < H; j++) go[j] += Pd[H + j] * cb[j];
        act_apply(&act[0], go, H, p->has_clip, p->clip);
        for (int64_t j = 0; j < H; j++) gc[j] = cb[j]; /* h(C_t) in the spent c-gate slot */
        act_apply(&act[2], gc, H, 0, 0);
        for (int64_t j = 0; j < H; j++) hb[j] = go[j] * gc[j];
      }
    }
    if (p->cell == CELL_GRU) {
      /* the candidate's recurrent term needs r first: (r * h_{t-1}) R_h^T */
      if (!p->lbr) rec_mm(B, H, H, rh, H, Rd + 2 * H * H, H, Rt ? Rt + 2 * H : NULL, GH, G + 2 * H, GH, 1);
      for (int64_t b = 0; b < B; b++) {
        int64_t len = lens ? hs_get_int(lens, b) : s.seq;
        if (step >= len) continue;
        float *g = G + b * GH, *hb = h + b * H;
        act_apply(&act[1], g + 2 * H, H, p->has_clip, p->clip);
        for (int64_t j = 0; j < H; j++) hb[j] = (1.0f - g[j]) * g[2 * H + j] + g[j] * hb[j];
      }
    }
    if (Y)
      for (int64_t b = 0; b < B; b++) {
        int64_t len = lens ? hs_get_int(lens, b) : s.seq;
        if (step >= len) continue;
        int64_t t = reverse ? len - 1 - step : step;
        memcpy(Y + y_off(&v, t, b), h + b * H, sizeof(float) * (size_t)H);
      }
  }
  if (one_thread) hs_kernels_set_threads(prev_threads);
  for (int64_t b = 0; b < B; b++) {
    if (Yh) memcpy(Yh + h_off(&v, b), h + b * H, sizeof(float) * (size_t)H);
    if (Yc) memcpy(Yc + h_off(&v, b), c + b * H, sizeof(float) * (size_t)H);
  }
}

static void rnn_direction_task(void *ctx, int d) { rnn_direction(ctx, d); }

static int rnn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  const rnn_params *p = (const rnn_params *)n->params.bytes;
  rnn_dims s;
  int rc = rnn_dims_of(n, in, nin, &s, err);
  if (rc) return rc;
  const int64_t H = s.hid, GH = s.gh, B = s.batch;
  const float *X = in[0].data, *W = in[1].data, *R = in[2].data;
  const float *Bias = nin > 3 && HS_PRESENT(&in[3]) ? in[3].data : NULL;
  const hs_tensor *lens = nin > 4 && HS_PRESENT(&in[4]) ? &in[4] : NULL;
  const float *H0 = nin > 5 && HS_PRESENT(&in[5]) ? in[5].data : NULL;
  const float *C0 = nin > 6 && HS_PRESENT(&in[6]) ? in[6].data : NULL;
  const float *P = nin > 7 && HS_PRESENT(&in[7]) ? in[7].data : NULL;
  float *Y = nout > 0 && n->out[0] >= 0 ? out[0].data : NULL;
  float *Yh = nout > 1 && n->out[1] >= 0 ? out[1].data : NULL;
  float *Yc = nout > 2 && n->out[2] >= 0 ? out[2].data : NULL;
  for (int64_t b = 0; lens && b < B; b++) {
    int64_t l = hs_get_int(lens, b);
    if (l < 0 || l > s.seq)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "sequence_lens[%lld] = %lld is outside 0..%lld", (long long)b,
                        (long long)l, (long long)s.seq);
  }
  if (Y && lens) memset(Y, 0, out[0].nbytes); /* steps past a sequence's end stay zero */

  const int prev_threads = hs_kernels_threads();
  const int small_run = p->dirs * s.seq * B * GH * (s.in + H) < RNN_RUN_PARALLEL_MIN;
  const rnn_state *st = n->state;
  const int have_rt = st && st->dirs == p->dirs && st->gh == GH && st->hid == H;
  const rnn_job job = {p, s, X, W, R, Bias, H0, C0, P, lens, Y, Yh, Yc, scratch, have_rt ? st : NULL, small_run};
  /* Two directions whose steps run on one thread each go to two threads at once: they share nothing
   * but X, and neither waits for the other (the steps within a direction are sequential). Only when a
   * direction has enough work to pay for waking the second thread. */
  if (p->dirs == 2 && prev_threads >= 2 && B * GH * H < RNN_STEP_PARALLEL_MIN &&
      s.seq * B * GH * (s.in + H) >= RNN_DIR_PARALLEL_MIN) {
    hs_kernels_parallel_for(2, rnn_direction_task, (void *)&job);
    return 0;
  }
  if (small_run) hs_kernels_set_threads(1);
  for (int d = 0; d < p->dirs; d++) rnn_direction(&job, d);
  if (small_run) hs_kernels_set_threads(prev_threads);
  return 0;
}

/* Inputs: X, W, R, B, sequence_lens, initial_h (+ initial_c, P for LSTM). Outputs: Y, Y_h (+ Y_c). */
const hs_op_impl hs_op_impl_rnn = {
    .check = rnn_check,
    .infer = rnn_infer,
    .prepare = rnn_prepare,
    .scratch_bytes = rnn_scratch,
    .run = rnn_run,
};

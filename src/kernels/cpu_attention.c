/* cpu_attention.c - scaled dot-product attention on the CPU: per (batch, head) pair, Q x K^T -> scale -> mask ->
 * softmax -> x V, with the scores kept in per-thread scratch. */

/*
 * DESIGN
 * The unfused graph runs attention as seven nodes (three Transposes copying Q, K and V into head-major
 * order, a batched MatMul making the [B, H, Sq, Sk] scores tensor, a Div, a Softmax, a MatMul, and a
 * Transpose copying the result back to [B, S, H, D]), each a pass over memory and an OpenMP fork. Here
 * one parallel loop over the B * H pairs does it all: each thread computes its pair's scores with one
 * sgemm call that reads Q and K where they lie (a strided view: the leading dimension is the row
 * stride, a transposed operand is just sgemm's trans flag), adds the mask and takes the softmax of
 * each row in place while the [Sq, Sk] block is in cache, then one more sgemm multiplies it by V and
 * writes the output rows in place (ldc = the output's row stride). An operand whose innermost stride
 * is not 1 either way (a broadcast, an odd permutation) is first gathered into the thread's scratch.
 * oneDNN's sgemm runs single-threaded inside the parallel region (it sees omp_in_parallel()).
 * exp: Cephes' expf as in ops/rnn.c (round to nearest, Cody-Waite reduction, degree-5 polynomial,
 * ~1e-7 relative) in GCC vector extensions: 16 lanes where the CPU has AVX-512, 8 with AVX2.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu_dnnl.h"

#define EXP_LO (-87.0f)
#define EXP_HI 88.0f

/* exp(x) for x already clamped to [EXP_LO, EXP_HI]; T is float or a float vector, TI the int type. */
#define EXP_BODY(T, TI, x, out)                                                   \
  do {                                                                            \
    T nf_ = ((x) * 1.44269504088896341f + 12582912.0f) - 12582912.0f;             \
    T r_ = (x) - nf_ * 0.693359375f + nf_ * 2.12194440e-4f;                       \
    T p_ = r_ * 1.9875691500e-4f + 1.3981999507e-3f;                              \
    p_ = p_ * r_ + 8.3334519073e-3f;                                              \
    p_ = p_ * r_ + 4.1665795894e-2f;                                              \
    p_ = p_ * r_ + 1.6666665459e-1f;                                              \
    p_ = p_ * r_ + 5.0000001201e-1f;                                              \
    p_ = p_ * r_ * r_ + r_ + 1.0f;                                                \
    (out) = p_ * EXP_SCALE_##TI(nf_);                                             \
  } while (0)

static inline float exp_scale_f(float nf) {
  union {
    uint32_t u;
    float f;
  } s = {.u = (uint32_t)((int32_t)nf + 127) << 23};
  return s.f;
}
#define EXP_SCALE_int(nf) exp_scale_f(nf)

static inline float exp_clamped(float x) {
  x = x < EXP_LO ? EXP_LO : x > EXP_HI ? EXP_HI : x;
  float y;
  EXP_BODY(float, int, x, y);
  return y;
}

/* x[i] = exp(x[i] - max) over whole W-lane vectors; returns how many elements it did and adds their
 * sum to *sum (the caller finishes the tail with exp_clamped). */
#define EXP_SUB_VECTOR(SUF, VF, VI, W, ATTR)                                          \
  typedef float VF __attribute__((vector_size(4 * (W))));                             \
  typedef int32_t VI __attribute__((vector_size(4 * (W))));                           \
  ATTR static int64_t exp_sub_##SUF(float *x, int64_t n, float max, float *sum) {     \
    VF acc = {0};                                                                     \
    int64_t i = 0;                                                                    \
    for (; i + (W) <= n; i += (W)) {                                                  \
      VF v, y;                                                                        \
      memcpy(&v, x + i, sizeof v);                                                    \
      v = v - max;                                                                    \
      VI below = v < EXP_LO;                                                          \
      v = (VF)((below & (VI)(v - v + EXP_LO)) | (~below & (VI)v));                    \
      EXP_BODY(VF, VI, v, y);                                                         \
      memcpy(x + i, &y, sizeof y);                                                    \
      acc += y;                                                                       \
    }                                                                                 \
    float s = 0;                                                                      \
    for (int j = 0; j < (W); j++) s += acc[j];                                        \
    *sum += s;                                                                        \
    return i;                                                                         \
  }

#if defined(__x86_64__) || defined(__i386__)
#define EXP_SCALE_v16i(nf) ((v16f)((__builtin_convertvector(nf, v16i) + 127) << 23))
#define EXP_SCALE_v8i(nf) ((v8f)((__builtin_convertvector(nf, v8i) + 127) << 23))
EXP_SUB_VECTOR(v16, v16f, v16i, 16, __attribute__((target("avx512f"))))
EXP_SUB_VECTOR(v8, v8f, v8i, 8, __attribute__((target("avx2"))))
static int g_simd = -1; /* 2: AVX-512, 1: AVX2, 0: neither (set once; a benign race writes the same value) */
static int simd_level(void) {
  if (g_simd < 0) g_simd = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
  return g_simd;
}
#else
static int simd_level(void) { return 0; }
static int64_t exp_sub_v16(float *x, int64_t n, float max, float *sum) { return 0; }
static int64_t exp_sub_v8(float *x, int64_t n, float max, float *sum) { return 0; }
#endif

/* Softmax of one row in place (the mask already added). The max and the final scaling are plain loops
 * over independent lanes (8 partial maxima), which the compiler vectorizes. */
static void softmax_row(float *x, int64_t n, int simd) {
  float m8[8];
  for (int j = 0; j < 8; j++) m8[j] = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) m8[j] = x[i + j] > m8[j] ? x[i + j] : m8[j];
  float max = m8[0];
  for (int j = 1; j < 8; j++) max = m8[j] > max ? m8[j] : max;
  for (; i < n; i++) max = x[i] > max ? x[i] : max;
  float sum = 0;
  i = simd == 2 ? exp_sub_v16(x, n, max, &sum) : simd == 1 ? exp_sub_v8(x, n, max, &sum) : 0;
  for (; i < n; i++) {
    x[i] = exp_clamped(x[i] - max);
    sum += x[i];
  }
  float inv = 1.0f / sum;
  for (i = 0; i < n; i++) x[i] *= inv;
}

/* How sgemm reads a strided [rows, cols] view (row stride rs, column stride cs): trans 0 with ld rs when
 * cs == 1, trans 1 with ld cs when rs == 1; returns 0 when neither works (the view must be gathered). */
static int sgemm_view(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int *trans, int64_t *ld) {
  if (cs == 1 && (rs >= cols || rows == 1)) {
    *trans = 0;
    *ld = rows == 1 ? (cols > 1 ? cols : 1) : rs;
    return 1;
  }
  if (rs == 1 && (cs >= rows || cols == 1)) {
    *trans = 1;
    *ld = cols == 1 ? (rows > 1 ? rows : 1) : cs;
    return 1;
  }
  return 0;
}

static void gather(float *dst, const float *src, int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) dst[i * cols + j] = src[i * rs + j * cs];
}

static size_t per_thread_floats(int64_t sq, int64_t sk, int64_t dk, int64_t dv) {
  /* scores, then room to gather Q, K, V and to stage the output */
  return (size_t)(sq * sk + sq * dk + sk * dk + sk * dv + sq * dv) + 16; /* +16: keep each block 64-byte aligned */
}

size_t hs_kernel_attention_scratch(int threads, int64_t sq, int64_t sk, int64_t dk, int64_t dv) {
  if (threads < 1 || sq < 0 || sk < 0 || dk < 0 || dv < 0) return 0;
  if ((double)threads * (double)per_thread_floats(sq, sk, dk, dv) * 4.0 > (double)((size_t)1 << 40)) return 0;
  return (size_t)threads * per_thread_floats(sq, sk, dk, dv) * sizeof(float);
}

/* One (batch, head) pair. buf: this thread's per_thread_floats() floats. */
static void attend_pair(const hs_attention_params *p, int64_t b, int64_t h, float *buf, int simd) {
  const int64_t sq = p->sq, sk = p->sk, dk = p->dk, dv = p->dv;
  float *S = buf, *gq = S + sq * sk, *gk = gq + sq * dk, *gv = gk + sk * dk, *go = gv + sk * dv;
  const float *q = p->q + b * p->q_str[0] + h * p->q_str[1];
  const float *k = p->k + b * p->k_str[0] + h * p->k_str[1];
  const float *v = p->v + b * p->v_str[0] + h * p->v_str[1];
  float *o = p->o + b * p->o_str[0] + h * p->o_str[1];

  int ta, tb;
  int64_t lda, ldb;
  if (!sgemm_view(sq, dk, p->q_str[2], p->q_str[3], &ta, &lda)) {
    gather(gq, q, sq, dk, p->q_str[2], p->q_str[3]);
    q = gq, ta = 0, lda = dk > 1 ? dk : 1;
  }
  /* B = K^T: a [dk, sk] view with row stride k_str[3] and column stride k_str[2] */
  if (!sgemm_view(dk, sk, p->k_str[3], p->k_str[2], &tb, &ldb)) {
    gather(gk, k, sk, dk, p->k_str[2], p->k_str[3]); /* K row-major: K^T is its transpose */
    k = gk, tb = 1, ldb = dk > 1 ? dk : 1;
  }
  if (dk > 0)
    hs_kernel_sgemm(ta, tb, sq, sk, dk, p->scale, q, lda, k, ldb, 0.0f, S, sk);
  else
    memset(S, 0, sizeof(float) * (size_t)(sq * sk));

  const float *m = p->mask ? p->mask + b * p->mask_str[0] + h * p->mask_str[1] : NULL;
  for (int64_t i = 0; i < sq; i++) {
    float *row = S + i * sk;
    if (m) {
      const float *mr = m + i * p->mask_str[2];
      int64_t ms = p->mask_str[3];
      for (int64_t j = 0; j < sk; j++) row[j] += mr[j * ms];
    }
    softmax_row(row, sk, simd);
  }

  if (!sgemm_view(sk, dv, p->v_str[2], p->v_str[3], &tb, &ldb)) {
    gather(gv, v, sk, dv, p->v_str[2], p->v_str[3]);
    v = gv, tb = 0, ldb = dv > 1 ? dv : 1;
  }
  int direct = p->o_str[3] == 1 && (p->o_str[2] >= dv || sq == 1);
  float *dst = direct ? o : go;
  int64_t ldc = direct ? (sq == 1 ? (dv > 1 ? dv : 1) : p->o_str[2]) : (dv > 1 ? dv : 1);
  hs_kernel_sgemm(0, tb, sq, dv, sk, 1.0f, S, sk, v, ldb, 0.0f, dst, ldc);
  if (!direct)
    for (int64_t i = 0; i < sq; i++)
      for (int64_t j = 0; j < dv; j++) o[i * p->o_str[2] + j * p->o_str[3]] = go[i * dv + j];
}

int hs_kernel_attention(const hs_attention_params *p, hs_error *err) {
  if (p->batch < 0 || p->heads < 0 || p->sq < 0 || p->sk < 1 || p->dk < 0 || p->dv < 0 || p->threads < 1 ||
      !p->q || !p->k || !p->v || !p->o || (!p->scratch && p->batch * p->heads > 0))
    return hs_error_set(err, HS_INVALID_ARGUMENT, "attention: invalid sizes or buffers");
  const int64_t pairs = p->batch * p->heads;
  if (pairs == 0 || p->sq == 0 || p->dv == 0) return 0;
  const size_t per = per_thread_floats(p->sq, p->sk, p->dk, p->dv);
  int threads = omp_get_max_threads();
  if (threads > p->threads) threads = p->threads;
  if (threads > pairs) threads = (int)pairs;
  const int simd = simd_level();
  float *scratch = p->scratch;
  if (threads <= 1) {
    for (int64_t t = 0; t < pairs; t++) attend_pair(p, t / p->heads, t % p->heads, scratch, simd);
    return 0;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < pairs; t++) attend_pair(p, t / p->heads, t % p->heads, scratch + per * (size_t)omp_get_thread_num(), simd);
  return 0;
}

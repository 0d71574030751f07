/* matmul.c - MatMul (batched, numpy broadcasting of batch dimensions) and Gemm: plain-C reference
 * kernels (the kernels layer may take over from prepare/run). */
#include <string.h>

#include "kernels/kernels.h"
#include "ops/ops.h"

static int matmul_check(hs_node *n, const hs_graph *g, hs_error *err) {
  return hs_node_only_attrs(n, "", err);
}

/* Splits shapes into batch dims, M, K, N (1-D operands promoted as numpy does). */
typedef struct {
  int64_t M, K, N;
  int rb;                      /* batch rank */
  int64_t bdims[HS_MAX_DIMS];  /* broadcast batch dims */
  int64_t sa[HS_MAX_DIMS], sb[HS_MAX_DIMS]; /* batch strides in matrices */
} mm_shape;

static int mm_shapes(const hs_node *n, const hs_tensor *a, const hs_tensor *b, mm_shape *s, int *ondim,
                     int64_t *odims, hs_error *err) {
  if (a->ndim < 1 || b->ndim < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inputs must have rank >= 1");
  int64_t M = a->ndim >= 2 ? a->dims[a->ndim - 2] : 1, Ka = a->dims[a->ndim - 1];
  int64_t Kb = b->ndim >= 2 ? b->dims[b->ndim - 2] : b->dims[0], N = b->ndim >= 2 ? b->dims[b->ndim - 1] : 1;
  if (Ka != Kb)
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inner dimensions differ (%lld vs %lld)", (long long)Ka,
                      (long long)Kb);
  int ra = a->ndim > 2 ? a->ndim - 2 : 0, rbb = b->ndim > 2 ? b->ndim - 2 : 0;
  int r = ra > rbb ? ra : rbb;
  int64_t astr = 1, bstr = 1;
  for (int i = r - 1; i >= 0; i--) {
    int ia = i - (r - ra), ib = i - (r - rbb);
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    if (da != db && da != 1 && db != 1)
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "batch dimensions do not broadcast");
    s->bdims[i] = da == 1 ? db : da;
    s->sa[i] = da == 1 ? 0 : astr;
    s->sb[i] = db == 1 ? 0 : bstr;
    astr *= da;
    bstr *= db;
  }
  s->M = M;
  s->K = Ka;
  s->N = N;
  s->rb = r;
  int k = 0;
  for (int i = 0; i < r; i++) odims[k++] = s->bdims[i];
  if (a->ndim >= 2) odims[k++] = M;
  if (b->ndim >= 2) odims[k++] = N;
  *ondim = k;
  return 0;
}

static int matmul_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc;
  if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  if (in[1].dtype != HS_DT_FLOAT32) return hs_op_errf(err, n, HS_UNSUPPORTED, "inputs must both be float32");
  mm_shape s;
  int r;
  int64_t dims[HS_MAX_DIMS];
  if ((rc = mm_shapes(n, &in[0], &in[1], &s, &r, dims, err))) return rc;
  return hs_set_shape(&out[0], HS_DT_FLOAT32, r, dims, n, err);
}

static int matmul_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                      hs_error *err) {
  mm_shape s;
  int r;
  int64_t dims[HS_MAX_DIMS];
  int rc = mm_shapes(n, &in[0], &in[1], &s, &r, dims, err);
  if (rc) return rc;
  int64_t batches = 1;
  for (int i = 0; i < s.rb; i++) batches *= s.bdims[i];
  const float *A = in[0].data, *B = in[1].data;
  float *C = out[0].data;
  int64_t idx[HS_MAX_DIMS] = {0};
  for (int64_t bt = 0; bt < batches; bt++) {
    int64_t oa = 0, ob = 0;
    for (int i = 0; i < s.rb; i++) {
      oa += idx[i] * s.sa[i];
      ob += idx[i] * s.sb[i];
    }
    hs_sgemm(s.M, s.N, s.K, A + oa * s.M * s.K, s.K, B + ob * s.K * s.N, s.N, C + bt * s.M * s.N, s.N, 0);
    for (int i = s.rb - 1; i >= 0; i--) {
      if (++idx[i] < s.bdims[i]) break;
      idx[i] = 0;
    }
  }
  return 0;
}

/* ---- Gemm ------------------------------------------------------------------------------------- */

typedef struct {
  float alpha, beta;
  int trans_a, trans_b;
} gemm_params;

static int gemm_check(hs_node *n, const hs_graph *g, hs_error *err) {
  gemm_params *p = (gemm_params *)n->params.bytes;
  int64_t ta, tb;
  int rc;
  if ((rc = hs_node_only_attrs(n, n->opset < 7 ? "alpha,beta,transA,transB,broadcast" : "alpha,beta,transA,transB", err)))
    return rc;
  if ((rc = hs_attr_float(n, "alpha", 1.0f, &p->alpha, err)) || (rc = hs_attr_float(n, "beta", 1.0f, &p->beta, err)) ||
      (rc = hs_attr_int(n, "transA", 0, &ta, err)) || (rc = hs_attr_int(n, "transB", 0, &tb, err)))
    return rc;
  p->trans_a = ta != 0;
  p->trans_b = tb != 0;
  return 0;
}

static int gemm_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  const gemm_params *p = (const gemm_params *)n->params.bytes;
  int rc;
  if ((rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED))) return rc;
  if (in[1].dtype != HS_DT_FLOAT32 || (nin > 2 && HS_PRESENT(&in[2]) && in[2].dtype != HS_DT_FLOAT32))
    return hs_op_errf(err, n, HS_UNSUPPORTED, "inputs must be float32");
  if (in[0].ndim != 2 || in[1].ndim != 2) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "A and B must be 2-D");
  int64_t M = p->trans_a ? in[0].dims[1] : in[0].dims[0], K = p->trans_a ? in[0].dims[0] : in[0].dims[1];
  int64_t Kb = p->trans_b ? in[1].dims[1] : in[1].dims[0], N = p->trans_b ? in[1].dims[0] : in[1].dims[1];
  if (K != Kb) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "inner dimensions differ");
  int64_t dims[2] = {M, N};
  if (nin > 2 && HS_PRESENT(&in[2])) {
    hs_tensor o = {.ndim = 2, .dims = {M, N}};
    int r;
    int64_t bd[HS_MAX_DIMS];
    if ((rc = hs_broadcast_shape(&o, &in[2], &r, bd, n, err))) return rc;
    if (r != 2 || bd[0] != M || bd[1] != N) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "C does not broadcast");
  }
  return hs_set_shape(&out[0], HS_DT_FLOAT32, 2, dims, n, err);
}

static int gemm_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  const gemm_params *p = (const gemm_params *)n->params.bytes;
  int64_t M = out[0].dims[0], N = out[0].dims[1];
  int64_t K = p->trans_a ? in[0].dims[0] : in[0].dims[1];
  const float *A = in[0].data, *B = in[1].data;
  float *Y = out[0].data;
  if (hs_kernel_sgemm(p->trans_a, p->trans_b, M, N, K, 1.0f, A, p->trans_a ? M : K, B, p->trans_b ? K : N, 0.0f, Y,
                      N) == 0)
    goto bias; /* the kernels layer's GEMM; the loops below are the fallback */
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) Y[i * N + j] = 0;
  for (int64_t i = 0; i < M; i++) {
    float *y = Y + i * N;
    for (int64_t k = 0; k < K; k++) {
      float a = p->trans_a ? A[k * M + i] : A[i * K + k];
      if (p->trans_b) {
        for (int64_t j = 0; j < N; j++) y[j] += a * B[j * K + k];
      } else {
        const float *b = B + k * N;
        for (int64_t j = 0; j < N; j++) y[j] += a * b[j];
      }
    }
  }
bias:;
  const hs_tensor *C = nin > 2 && HS_PRESENT(&in[2]) ? &in[2] : NULL;
  int64_t cm = 0, cn = 0;
  if (C) {
    cm = C->ndim == 2 ? C->dims[0] : 1;
    cn = C->ndim >= 1 ? C->dims[C->ndim - 1] : 1;
  }
  const float *c = C ? C->data : NULL;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      float v = p->alpha * Y[i * N + j];
      if (c) v += p->beta * c[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
      Y[i * N + j] = v;
    }
  return 0;
}

const hs_op_def hs_ops_matmul[] = {
    {"MatMul", 1, 2, 2, 1, 1, 0, 0, matmul_check, matmul_infer, NULL, NULL, matmul_run},
    {"Gemm", 6, 2, 3, 1, 1, 0, 0, gemm_check, gemm_infer, NULL, NULL, gemm_run},
    {NULL},
};

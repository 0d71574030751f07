/* attention.c - FusedAttention: the node the attention pass (engine/pass_fuse_attention.c) makes of an exporter's
 * Transpose / MatMul / scale / mask / Softmax / MatMul / Transpose chain; runs on hs_kernel_attention. */

/*
 * DESIGN
 * FusedAttention is internal (HS_OP_INTERNAL: a model file cannot name it). Its inputs are the values
 * the original chain started from, before the Transposes the pass peeled off:
 *   0 xq, 1 xk, 2 xv (float32, rank 4), 3 mask (optional, float32, broadcast to the scores)
 * and its params hold what the peeled nodes did: the permutation taking each input to the view the
 * MatMuls read (Q = transpose(xq, perm_q) as [B, H, Sq, Dk]; K^T = transpose(xk, perm_k) as
 * [B, H, Dk, Sk]; V = transpose(xv, perm_v) as [B, H, Sk, Dv]), the scale (the Div or Mul after the
 * first MatMul), and the permutation of the Transpose after the second MatMul (perm_o, identity when
 * there was none). The output is exactly the last peeled node's output:
 *   transpose(softmax(scale * Q x K^T + mask) x V, perm_o)
 * The permutations never move data: they become strides of the kernel's views, so a [B, S, H, D]
 * projection output is read as [B, H, S, D] in place, and the result is written straight into
 * [B, S, H, D] rows that the next Reshape views as [B, S, H * D]. Batch and head dims broadcast as in
 * MatMul (a dim of 1 gets stride 0).
 */
#include <string.h>

#include "kernels/kernels.h"
#include "ops/ops.h"

typedef struct attn_attrs {
  int64_t perm_q[4], perm_k[4], perm_v[4], perm_o[4];
  float scale;
  int has_mask;
  int ready; /* set by the fusion that made the node */
} attn_attrs;

_Static_assert(sizeof(attn_attrs) <= HS_OP_PARAMS_BYTES, "attention attributes fit in hs_op_params");

static const attn_attrs *attrs_of(const hs_node *n) { return (const attn_attrs *)n->params.bytes; }

/* The logical view of the geometry: dims and strides of Q, K (as [B, H, Sk, Dk]), V, mask, O. */
typedef struct attn_geom {
  int64_t B, H, sq, sk, dk, dv;
  int64_t q_str[4], k_str[4], v_str[4], m_str[4], o_str[4];
  int64_t out_dims[4];
} attn_geom;

static void row_major_strides(const hs_tensor *t, int64_t *s) {
  int64_t acc = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= t->dims[i];
  }
}

/* dims / strides of transpose(t, perm) (t has rank 4). */
static void permuted(const hs_tensor *t, const int64_t *perm, int64_t *dims, int64_t *str) {
  int64_t s[4];
  row_major_strides(t, s);
  for (int i = 0; i < 4; i++) {
    dims[i] = t->dims[perm[i]];
    str[i] = s[perm[i]];
  }
}

/* The broadcast size of a batch dim and the strides that read it (0 where an operand has size 1). */
static int bcast(int64_t *d, int64_t *const sizes[3], int64_t *const strides[3]) {
  int64_t n = 1;
  for (int i = 0; i < 3; i++)
    if (*sizes[i] != 1) {
      if (n != 1 && *sizes[i] != n) return -1;
      n = *sizes[i];
    }
  for (int i = 0; i < 3; i++)
    if (*sizes[i] == 1) *strides[i] = 0;
  *d = n;
  return 0;
}

static int geometry(const hs_node *n, const hs_tensor *in, int nin, attn_geom *g, hs_error *err) {
  const attn_attrs *a = attrs_of(n);
  if (!a->ready) return hs_op_errf(err, n, HS_INTERNAL, "FusedAttention made without its fusion");
  for (int i = 0; i < 3; i++)
    if (in[i].ndim != 4) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attention input %d must have rank 4", i);
  int64_t qd[4], kd[4], vd[4]; /* Q [B, H, Sq, Dk], K^T [B, H, Dk, Sk], V [B, H, Sk, Dv] */
  int64_t kts[4];
  permuted(&in[0], a->perm_q, qd, g->q_str);
  permuted(&in[1], a->perm_k, kd, kts);
  permuted(&in[2], a->perm_v, vd, g->v_str);
  /* K as [B, H, Sk, Dk]: swap the last two of K^T */
  g->k_str[0] = kts[0], g->k_str[1] = kts[1], g->k_str[2] = kts[3], g->k_str[3] = kts[2];
  if (qd[3] != kd[2] || kd[3] != vd[2])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attention sizes differ (Q x K^T inner %lld vs %lld, keys %lld vs %lld)",
                      (long long)qd[3], (long long)kd[2], (long long)kd[3], (long long)vd[2]);
  for (int d = 0; d < 2; d++) {
    int64_t *sizes[3] = {&qd[d], &kd[d], &vd[d]};
    int64_t *strides[3] = {&g->q_str[d], &g->k_str[d], &g->v_str[d]};
    if (bcast(d ? &g->H : &g->B, sizes, strides))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attention batch dimensions do not broadcast");
  }
  g->sq = qd[2], g->dk = qd[3], g->sk = kd[3], g->dv = vd[3];
  if (g->sk < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attention over zero keys");
  /* result Y [B, H, Sq, Dv]; output = transpose(Y, perm_o): output axis j holds Y's axis perm_o[j] */
  int64_t yd[4] = {g->B, g->H, g->sq, g->dv}, os[4], acc = 1;
  for (int j = 0; j < 4; j++) g->out_dims[j] = yd[a->perm_o[j]];
  for (int j = 3; j >= 0; j--) {
    os[j] = acc;
    acc *= g->out_dims[j];
  }
  for (int j = 0; j < 4; j++) g->o_str[a->perm_o[j]] = os[j];
  memset(g->m_str, 0, sizeof g->m_str);
  if (a->has_mask) {
    const hs_tensor *m = nin > 3 && HS_PRESENT(&in[3]) ? &in[3] : NULL;
    if (!m || m->ndim > 4) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attention mask must have rank <= 4");
    int64_t want[4] = {g->B, g->H, g->sq, g->sk}, ms[HS_MAX_DIMS];
    row_major_strides(m, ms);
    for (int j = 0; j < m->ndim; j++) {
      int d = 4 - m->ndim + j;
      if (m->dims[j] != 1 && m->dims[j] != want[d])
        return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attention mask does not broadcast to the scores");
      g->m_str[d] = m->dims[j] == 1 ? 0 : ms[j];
    }
  }
  return 0;
}

static int attn_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc;
  for (int i = 0; i < 3; i++)
    if ((rc = hs_need_dtype(n, &in[i], i == 0 ? "Q" : i == 1 ? "K" : "V", err, HS_DT_FLOAT32, HS_DT_UNDEFINED)))
      return rc;
  if (attrs_of(n)->has_mask && nin > 3 && (rc = hs_need_dtype(n, &in[3], "mask", err, HS_DT_FLOAT32, HS_DT_UNDEFINED)))
    return rc;
  attn_geom g;
  if ((rc = geometry(n, in, nin, &g, err))) return rc;
  return hs_set_shape(&out[0], HS_DT_FLOAT32, 4, g.out_dims, n, err);
}

static size_t attn_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  attn_geom g;
  hs_error e;
  if (geometry(n, in, nin, &g, &e)) return 0;
  /* sized for every core, so a run never uses more threads than its scratch has room for, whatever
   * thread count the plan was made under */
  return hs_kernel_attention_scratch(hs_kernels_cores(), g.sq, g.sk, g.dk, g.dv);
}

static int attn_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  attn_geom g;
  int rc = geometry(n, in, nin, &g, err);
  if (rc) return rc;
  hs_attention_params p = {.batch = g.B, .heads = g.H, .sq = g.sq, .sk = g.sk, .dk = g.dk, .dv = g.dv,
                           .q = in[0].data, .k = in[1].data, .v = in[2].data,
                           .mask = attrs_of(n)->has_mask ? in[3].data : NULL, .o = out[0].data,
                           .scale = attrs_of(n)->scale, .threads = hs_kernels_cores(), .scratch = scratch};
  memcpy(p.q_str, g.q_str, sizeof p.q_str);
  memcpy(p.k_str, g.k_str, sizeof p.k_str);
  memcpy(p.v_str, g.v_str, sizeof p.v_str);
  memcpy(p.mask_str, g.m_str, sizeof p.mask_str);
  memcpy(p.o_str, g.o_str, sizeof p.o_str);
  return hs_kernel_attention(&p, err);
}

/* The only fusion it takes is the one that makes it: the pass rewrote a MatMul node into this op and
 * hands over the peeled permutations, the scale and whether input 3 is a mask. */
static int attn_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  if (f->kind != HS_FUSE_ATTENTION) return HS_FUSE_REFUSED;
  const hs_attention_fusion *af = &f->attn;
  int64_t seen_o = 0;
  for (int j = 0; j < 4; j++) {
    for (int k = 0; k < 4; k++) { /* each must be a permutation of 0..3 */
      if (af->perm[k][j] < 0 || af->perm[k][j] > 3) return HS_FUSE_REFUSED;
    }
    seen_o |= 1 << af->perm[3][j];
  }
  for (int k = 0; k < 3; k++) {
    int64_t seen = 0;
    for (int j = 0; j < 4; j++) seen |= 1 << af->perm[k][j];
    if (seen != 15) return HS_FUSE_REFUSED;
  }
  if (seen_o != 15) return HS_FUSE_REFUSED;
  if (f->dry_run) return 0;
  attn_attrs *a = (attn_attrs *)n->params.bytes;
  memset(a, 0, sizeof *a);
  memcpy(a->perm_q, af->perm[0], sizeof a->perm_q);
  memcpy(a->perm_k, af->perm[1], sizeof a->perm_k);
  memcpy(a->perm_v, af->perm[2], sizeof a->perm_v);
  memcpy(a->perm_o, af->perm[3], sizeof a->perm_o);
  a->scale = af->scale;
  a->has_mask = af->has_mask;
  a->ready = 1;
  return 0;
}

/* Never bound from a model file (HS_OP_INTERNAL); check() only runs if someone binds it by hand. */
static int attn_check(hs_node *n, const hs_graph *g, hs_error *err) {
  return hs_op_errf(err, n, HS_UNSUPPORTED, "FusedAttention is made by the engine's passes only");
}

const hs_op_impl hs_op_impl_attention = {
    .check = attn_check,
    .infer = attn_infer,
    .scratch_bytes = attn_scratch,
    .run = attn_run,
    .fuse = attn_fuse,
};

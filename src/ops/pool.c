/* pool.c - MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool over 1-3 spatial dims: oneDNN pooling kernels, plain C as fallback and reference. */

/*
 * DESIGN
 * check() parses the attributes; pool_geometry() turns them and the input shape into one window
 * geometry (explicit pads, auto_pad and ceil_mode resolved), used by both paths. prepare() gives
 * every node a kernel cache (opkernel.h); scratch_bytes(), called while a session plans, builds the
 * oneDNN pooling kernel for the input's channels and spatial shape (batch sizes are variants of one
 * kernel) and run() finds it again. ceil_mode becomes extra end padding for the kernel. The plain-C
 * loops below are the reference and the fallback: they run when the kernel refuses a geometry
 * (with HS_KERNELS_STRICT=1 that refusal is an error naming the reason) and for empty tensors.
 * Both paths honour the physical layouts the layout pass may set (pool_fuse()): a MaxPool/AveragePool
 * between blocked-layout Convs reads and writes that layout; a global pool reads it and writes NCHW.
 * A MaxPool/AveragePool at the edge of a channels-last region (a Conv's NHWC output in, NCHW out: the
 * text recognizer's last pool, read by a Squeeze) runs the kernel NHWC to NHWC into scratch and moves
 * its output, smaller than its input, to NCHW itself (edge_to_nchw), instead of the Conv converting
 * the larger input.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/parallel.h"
#include "ops/opkernel.h"
#include "ops/ops.h"

enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID };

enum { HS_POOL_OP_MAX, HS_POOL_OP_AVG, HS_POOL_OP_GLOBAL_AVG, HS_POOL_OP_GLOBAL_MAX };
enum { P_MAX = HS_POOL_OP_MAX, P_AVG = HS_POOL_OP_AVG, P_GAVG = HS_POOL_OP_GLOBAL_AVG, P_GMAX = HS_POOL_OP_GLOBAL_MAX };

/* node->params of MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (filled by check()). */
typedef struct hs_pool_attrs {
  int kind; /* HS_POOL_OP_* */
  int auto_pad, ceil_mode, count_include_pad;
  int nk, n_strides, n_dil, n_pads; /* how many values each list attribute gave */
  int64_t kernel[3], stride[3], dilation[3], pads[6];
  /* Physical layouts of input and output; NCHW unless the layout pass keeps a Conv's blocked
   * output through the pool (pool_fuse() records them). A global pool's [N, C, 1, 1] output has
   * the same bytes in every layout, so its dst_layout stays NCHW. */
  hs_layout src_layout, dst_layout;
} hs_pool_attrs;

typedef hs_pool_attrs pool_params;

/* A windowed pool reading channels-last and writing NCHW: the kernel writes NHWC into scratch. */
static int edge_pool(const pool_params *p) {
  return p->kind < HS_POOL_OP_GLOBAL_AVG && p->src_layout == HS_LAYOUT_NHWC && p->dst_layout == HS_LAYOUT_NCHW;
}

typedef struct {
  int nsp;
  int64_t N, C, in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
} pool_geom;

static int ints_into(const hs_node *n, const char *name, int64_t *dst, int max, int *count, hs_error *err) {
  const int64_t *v;
  size_t c;
  int rc = hs_attr_ints(n, name, &v, &c, err);
  if (rc) return rc;
  if ((int)c > max) return hs_op_errf(err, n, HS_UNSUPPORTED, "%s: more than 3 spatial dims", name);
  hs_memcpy(dst, v, c * sizeof *v);
  *count = (int)c;
  return 0;
}

static int pool_check(hs_node *n, const hs_graph *g, hs_error *err) {
  pool_params *p = (pool_params *)n->params.bytes;
  memset(p, 0, sizeof *p);
  p->kind = n->op == HS_OP_MaxPool ? P_MAX : n->op == HS_OP_AveragePool ? P_AVG
            : n->op == HS_OP_GlobalAveragePool ? P_GAVG : P_GMAX;
  p->src_layout = p->dst_layout = HS_LAYOUT_NCHW;
  if (p->kind >= P_GAVG) return hs_node_only_attrs(n, "", err);
  int rc = hs_node_only_attrs(n, p->kind == P_MAX ? "auto_pad,ceil_mode,dilations,kernel_shape,pads,storage_order,strides"
                                                  : "auto_pad,ceil_mode,count_include_pad,kernel_shape,pads,strides", err);
  const char *ap;
  int64_t ceil_mode, cip, so;
  if (rc || (rc = hs_attr_string(n, "auto_pad", "NOTSET", &ap, err)) || (rc = hs_attr_int(n, "ceil_mode", 0, &ceil_mode, err)) ||
      (rc = hs_attr_int(n, "count_include_pad", 0, &cip, err)) || (rc = hs_attr_int(n, "storage_order", 0, &so, err)) ||
      (rc = ints_into(n, "kernel_shape", p->kernel, 3, &p->nk, err)) ||
      (rc = ints_into(n, "strides", p->stride, 3, &p->n_strides, err)) ||
      (rc = ints_into(n, "dilations", p->dilation, 3, &p->n_dil, err)) ||
      (rc = ints_into(n, "pads", p->pads, 6, &p->n_pads, err)))
    return rc;
  if (strcmp(ap, "NOTSET") == 0) p->auto_pad = PAD_NOTSET;
  else if (strcmp(ap, "SAME_UPPER") == 0) p->auto_pad = PAD_SAME_UPPER;
  else if (strcmp(ap, "SAME_LOWER") == 0) p->auto_pad = PAD_SAME_LOWER;
  else if (strcmp(ap, "VALID") == 0) p->auto_pad = PAD_VALID;
  else return hs_op_errf(err, n, HS_UNSUPPORTED, "auto_pad '%s' is not supported", ap);
  if (so != 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "storage_order 1 is not supported (opset %d)", n->opset);
  if (!p->nk) return hs_op_errf(err, n, HS_PARSE, "kernel_shape is required");
  p->ceil_mode = ceil_mode != 0;
  p->count_include_pad = cip != 0;
  for (int i = 0; i < p->nk; i++)
    if (p->kernel[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel_shape must be >= 1");
  for (int i = 0; i < p->n_strides; i++)
    if (p->stride[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "strides must be >= 1");
  for (int i = 0; i < p->n_dil; i++)
    if (p->dilation[i] < 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "dilations must be >= 1");
  for (int i = 0; i < p->n_pads; i++)
    if (p->pads[i] < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "pads must be >= 0");
  if (n->n_out > 1 && n->out[1] >= 0) return hs_op_errf(err, n, HS_UNSUPPORTED, "the Indices output is not supported");
  return 0;
}

#define LIM ((int64_t)1 << 40)

static int pool_geometry(const hs_node *n, const hs_tensor *x, pool_geom *g, hs_error *err) {
  const pool_params *p = (const pool_params *)n->params.bytes;
  if (x->ndim < 3 || x->ndim > 5) return hs_op_errf(err, n, HS_UNSUPPORTED, "input rank %d (1-3 spatial dims supported)", x->ndim);
  int nsp = x->ndim - 2;
  memset(g, 0, sizeof *g);
  g->nsp = nsp;
  g->N = x->dims[0];
  g->C = x->dims[1];
  for (int i = 0; i < 3; i++) g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
  if (p->kind >= P_GAVG) {
    for (int i = 0; i < nsp; i++) {
      g->in[i] = g->k[i] = x->dims[2 + i];
      g->out[i] = 1;
    }
    return 0;
  }
  if (p->nk != nsp || (p->n_strides && p->n_strides != nsp) || (p->n_dil && p->n_dil != nsp) ||
      (p->n_pads && p->n_pads != 2 * nsp))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "attribute lengths do not match %d spatial dims", nsp);
  for (int i = 0; i < nsp; i++) {
    g->in[i] = x->dims[2 + i];
    g->k[i] = p->kernel[i];
    g->s[i] = p->n_strides ? p->stride[i] : 1;
    g->d[i] = p->n_dil ? p->dilation[i] : 1;
    if (g->k[i] > LIM || g->s[i] > LIM || g->d[i] > LIM) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "implausible sizes");
    int64_t ext = (g->k[i] - 1) * g->d[i] + 1;
    if (p->auto_pad == PAD_SAME_UPPER || p->auto_pad == PAD_SAME_LOWER) {
      g->out[i] = (g->in[i] + g->s[i] - 1) / g->s[i];
      int64_t total = (g->out[i] - 1) * g->s[i] + ext - g->in[i];
      if (total < 0) total = 0;
      g->pb[i] = p->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
      g->pe[i] = total - g->pb[i];
      continue;
    }
    if (p->auto_pad == PAD_NOTSET && p->n_pads) {
      g->pb[i] = p->pads[i];
      g->pe[i] = p->pads[nsp + i];
    }
    if (g->pb[i] > LIM || g->pe[i] > LIM) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "implausible pads");
    int64_t span = g->in[i] + g->pb[i] + g->pe[i] - ext;
    if (span < 0) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "kernel larger than the padded input");
    g->out[i] = (p->ceil_mode ? (span + g->s[i] - 1) / g->s[i] : span / g->s[i]) + 1;
    /* with ceil_mode the last window must still start inside the input or its begin padding */
    if (p->ceil_mode && (g->out[i] - 1) * g->s[i] >= g->in[i] + g->pb[i]) g->out[i]--;
  }
  return 0;
}

static int pool_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  int rc = hs_need_dtype(n, &in[0], "input", err, HS_DT_FLOAT32, HS_DT_UNDEFINED);
  if (rc) return rc;
  pool_geom g;
  if ((rc = pool_geometry(n, &in[0], &g, err))) return rc;
  int64_t d[5] = {g.N, g.C};
  for (int i = 0; i < g.nsp; i++) d[2 + i] = g.out[i];
  return hs_set_shape(&out[0], HS_DT_FLOAT32, 2 + g.nsp, d, n, err);
}

/* ---- oneDNN path ---- */

typedef struct build_ctx {
  const hs_node *n;
  const pool_geom *g;
} build_ctx;

static int build_kernel(void *ctx, hs_kernel **out, hs_error *err) {
  const build_ctx *c = ctx;
  const pool_params *a = (const pool_params *)c->n->params.bytes;
  const pool_geom *g = c->g;
  hs_pool_params p = {0};
  p.device = HS_KDEV_CPU;
  p.src_layout = a->src_layout;
  /* a global pool's 1x1 output is the same bytes in any layout: write it in the input's layout so
     oneDNN's fast implementations (same layout in and out) apply */
  p.dst_layout = a->kind >= P_GAVG || edge_pool(a) ? a->src_layout : a->dst_layout;
  p.kind = a->kind == P_MAX || a->kind == P_GMAX ? HS_POOL_MAX
           : a->count_include_pad                ? HS_POOL_AVG_INCLUDE_PAD
                                                 : HS_POOL_AVG_EXCLUDE_PAD;
  p.nsp = g->nsp;
  p.batch = g->N;
  p.channels = g->C;
  for (int i = 0; i < g->nsp; i++) {
    int64_t span = (g->k[i] - 1) * g->d[i] + 1;
    /* the end padding that makes the last window fit: ceil_mode's extra row, or less than the
       explicit padding where the windows stop before reaching all of it */
    int64_t pe = (g->out[i] - 1) * g->s[i] + span - g->in[i] - g->pb[i];
    if (pe < 0) pe = 0;
    if (pe > g->pe[i] && p.kind == HS_POOL_AVG_INCLUDE_PAD)
      return hs_error_set(err, HS_UNSUPPORTED,
                          "count_include_pad with ceil_mode windows past the padding (the kernel would count them)");
    p.in[i] = g->in[i];
    p.out[i] = g->out[i];
    p.kernel[i] = g->k[i];
    p.stride[i] = g->s[i];
    p.dilation[i] = g->d[i];
    p.pad_begin[i] = g->pb[i];
    p.pad_end[i] = pe;
  }
  return hs_kernel_pool_create(&p, out, err);
}

/* The kernel for this geometry, or NULL when the plain-C path must run (opkernel.h). */
static hs_kernel *kernel_for(const hs_node *n, const pool_geom *g, hs_error *strict_err) {
  if (g->N * g->C == 0) return NULL; /* empty: nothing to compute */
  for (int i = 0; i < g->nsp; i++)
    if (g->in[i] == 0) return NULL;
  int64_t key[4] = {g->C};
  for (int i = 0; i < g->nsp; i++) key[1 + i] = g->in[i];
  build_ctx c = {n, g};
  return hs_op_kernel(n, hs_op_cache(n), key, 1 + g->nsp, build_kernel, &c, g->N, strict_err);
}

static int pool_prepare(hs_node *n, const hs_graph *g, hs_error *err) { return hs_op_attach_cache(n, err); }

static size_t pool_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  pool_geom g;
  hs_error e;
  if (pool_geometry(n, &in[0], &g, &e)) return 0;
  size_t ks = hs_op_kernel_scratch(kernel_for(n, &g, NULL), g.N);
  if (!edge_pool((const pool_params *)n->params.bytes)) return ks;
  return ((ks + 63) & ~(size_t)63) + out[0].nbytes; /* then the kernel's NHWC output */
}

/* edge_to_nchw: [N, S, C] -> [N, C, S], parts of (image, block of 16 channels) on the compute threads. */
typedef struct {
  const float *t;
  float *y;
  int64_t N, C, S, blocks, parts;
} nchw_job;

static void nchw_part(void *ctx, int i) {
  const nchw_job *j = ctx;
  int64_t per = j->N * j->blocks, k0 = per * i / j->parts, k1 = per * (i + 1) / j->parts;
  for (int64_t k = k0; k < k1; k++) {
    int64_t b = k / j->blocks, c0 = k % j->blocks * 16, c1 = c0 + 16 < j->C ? c0 + 16 : j->C;
    const float *t = j->t + b * j->S * j->C;
    float *y = j->y + b * j->C * j->S;
    for (int64_t s = 0; s < j->S; s++)
      for (int64_t c = c0; c < c1; c++) y[c * j->S + s] = t[s * j->C + c];
  }
}

static void edge_to_nchw(const float *t, float *y, int64_t N, int64_t C, int64_t S) {
  nchw_job j = {t, y, N, C, S, (C + 15) / 16, 1};
  int threads = hs_kernels_threads();
  if (threads > 1 && N * C * S >= (1 << 15) && N * j.blocks >= threads) {
    j.parts = threads;
    hs_kernels_parallel_for(threads, nchw_part, &j);
  } else {
    nchw_part(&j, 0);
  }
}

/* ---- plain C ---- */

/* Offset of element (b, c, spatial index s) of an activation with C channels and S spatial elements. */
static inline int64_t act_off(hs_layout l, int64_t C, int64_t S, int64_t b, int64_t c, int64_t s) {
  if (l == HS_LAYOUT_NHWC) return (b * S + s) * C + c;
  if (l == HS_LAYOUT_NCHW8C) return ((b * (C / 8) + c / 8) * S + s) * 8 + (c % 8);
  return (b * C + c) * S + s;
}

static int pool_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                    hs_error *err) {
  const pool_params *p = (const pool_params *)n->params.bytes;
  pool_geom g;
  int rc = pool_geometry(n, &in[0], &g, err);
  if (rc) return rc;
  hs_error kerr;
  hs_error_clear(&kerr);
  hs_kernel *k = kernel_for(n, &g, &kerr);
  if (!k && kerr.code) return hs_op_strict_error(n, &kerr, err);
  if (k) {
    const void *src[1] = {in[0].data};
    hs_kernel_args args = {.batch = g.N, .src = src, .nsrc = 1, .dst = out[0].data, .scratch = scratch};
    if (!edge_pool(p)) return hs_op_run_kernel(n, k, &args, err);
    size_t ks = (hs_op_kernel_scratch(k, g.N) + 63) & ~(size_t)63;
    args.dst = (char *)scratch + ks;
    if ((rc = hs_op_run_kernel(n, k, &args, err))) return rc;
    edge_to_nchw(args.dst, out[0].data, g.N, g.C, g.out[0] * g.out[1] * g.out[2]);
    return 0;
  }
  const float *x = in[0].data;
  float *y = out[0].data;
  int64_t isp = g.in[0] * g.in[1] * g.in[2], osp = g.out[0] * g.out[1] * g.out[2];
  hs_layout xl = p->src_layout, yl = p->dst_layout;
  if (p->kind >= P_GAVG) {
    for (int64_t b = 0; b < g.N; b++)
      for (int64_t c = 0; c < g.C; c++) {
        double s = 0;
        float m = -INFINITY;
        for (int64_t i = 0; i < isp; i++) {
          float v = x[act_off(xl, g.C, isp, b, c, i)];
          s += v;
          m = v > m ? v : m;
        }
        y[act_off(yl, g.C, 1, b, c, 0)] = p->kind == P_GMAX ? m : isp ? (float)(s / (double)isp) : 0.0f;
      }
    return 0;
  }
  int is_max = p->kind == P_MAX;
  for (int64_t b = 0; b < g.N; b++)
    for (int64_t c = 0; c < g.C; c++)
      for (int64_t od = 0; od < g.out[0]; od++)
        for (int64_t oh = 0; oh < g.out[1]; oh++)
          for (int64_t ow = 0; ow < g.out[2]; ow++) {
            float m = -INFINITY, s = 0;
            int64_t cnt = 0, padded = 0;
            for (int64_t kd = 0; kd < g.k[0]; kd++) {
              int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
              for (int64_t kh = 0; kh < g.k[1]; kh++) {
                int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                for (int64_t kw = 0; kw < g.k[2]; kw++) {
                  int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                  /* positions inside input + explicit pads count for count_include_pad */
                  if (id < g.in[0] + g.pe[0] && ih < g.in[1] + g.pe[1] && iw < g.in[2] + g.pe[2]) padded++;
                  if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2]) continue;
                  float v = x[act_off(xl, g.C, isp, b, c, (id * g.in[1] + ih) * g.in[2] + iw)];
                  if (is_max) m = v > m ? v : m;
                  else s += v;
                  cnt++;
                }
              }
            }
            int64_t o = act_off(yl, g.C, osp, b, c, (od * g.out[1] + oh) * g.out[2] + ow);
            if (is_max) y[o] = m;
            else {
              int64_t div = p->count_include_pad ? padded : cnt;
              y[o] = div ? s / (float)div : 0.0f;
            }
          }
  return 0;
}

/* The only fusion a pool takes: the layouts the layout pass chose for its input and output. */
static int pool_fuse(hs_node *n, const hs_fusion *f, hs_error *err) {
  if (f->kind != HS_FUSE_LAYOUT) return HS_FUSE_REFUSED;
  if (!f->dry_run) {
    hs_pool_attrs *a = (hs_pool_attrs *)n->params.bytes;
    a->src_layout = f->src;
    a->dst_layout = f->dst;
  }
  return 0;
}

const hs_op_impl hs_op_impl_pool = {
    .check = pool_check,
    .infer = pool_infer,
    .prepare = pool_prepare,
    .scratch_bytes = pool_scratch,
    .run = pool_run,
    .fuse = pool_fuse,
};

/* dw_fusion.c - oneDNN's depthwise post-op (a 1x1 convolution with a 3x3 depthwise one fused after it) against the
 * two convolutions run one after the other: which implementation oneDNN picks, whether it computes the same
 * values, and how long each takes (issue 15; docs/KERNELS.md, "Depthwise fusion (not kept)").
 *
 *   cc -O2 -o dw_fusion bench/engine/dw_fusion.c -ldnnl -lm
 *   OMP_NUM_THREADS=2 ./dw_fusion ROUNDS N C H E STRIDE [N C H E STRIDE ...]
 *
 * Each shape is MobileNet's expand + depthwise: x [N, C, H, H] -> 1x1 to E channels, bias, ReLU6 -> depthwise 3x3,
 * padding 1, stride STRIDE, bias, ReLU6. Four variants, each with the same weights: the pair and the fused primitive,
 * both with channels-last activations (hotserve's layout on AVX-512) and with the layouts oneDNN picks (format
 * `any`: nChw16c); the fused ones with reorders from and to channels-last around them when their layouts differ, as
 * a kernel of an NHWC engine would run them. Per shape it prints the implementations, the largest difference of each
 * fused variant's output from the channels-last pair's, and the median over ROUNDS interleaved rounds of each
 * variant's best-of-5 mean wall time (ms).
 */
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_STEPS 4
#define MAX_SHAPES 16

static dnnl_engine_t eng;
static dnnl_stream_t strm;

/* What one shape creates, destroyed before the next (batch-8 shapes take tens of MB each). */
static dnnl_memory_t g_mems[64];
static dnnl_primitive_t g_prims[32];
static int g_nmems, g_nprims;

static dnnl_primitive_t keep_prim(dnnl_primitive_t p) {
  if (g_nprims == 32) {
    fprintf(stderr, "dw_fusion: too many primitives\n");
    exit(1);
  }
  return g_prims[g_nprims++] = p;
}

static void release_all(void) {
  for (int i = 0; i < g_nmems; i++) dnnl_memory_destroy(g_mems[i]);
  for (int i = 0; i < g_nprims; i++) dnnl_primitive_destroy(g_prims[i]);
  g_nmems = g_nprims = 0;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what, dnnl_status_t st) {
  fprintf(stderr, "dw_fusion: %s: oneDNN status %d\n", what, (int)st);
  exit(1);
}

static const char *impl_of(const_dnnl_primitive_desc_t pd) {
  const char *s = NULL;
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
  return s ? s : "?";
}

static dnnl_memory_t mem(const dnnl_memory_desc_t *md, void *data) {
  dnnl_memory_t m;
  dnnl_status_t st = dnnl_memory_create(&m, md, eng, data ? data : DNNL_MEMORY_ALLOCATE);
  if (st != dnnl_success || g_nmems == 64) die("memory", st);
  return g_mems[g_nmems++] = m;
}

static void *ptr(dnnl_memory_t m) {
  void *p;
  dnnl_memory_get_data_handle(m, &p);
  return p;
}

static dnnl_primitive_t reorder_prim(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to) {
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t p;
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL);
  if (st == dnnl_success) st = dnnl_primitive_create(&p, pd);
  if (st != dnnl_success) die("reorder", st);
  dnnl_primitive_desc_destroy(pd);
  return p;
}

/* A fresh memory of layout `to` holding src (layout `from`). */
static dnnl_memory_t reordered(dnnl_memory_t src, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to) {
  dnnl_memory_t dst = mem(to, NULL);
  dnnl_primitive_t r = reorder_prim(from, to);
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
  dnnl_primitive_execute(r, strm, 2, a);
  dnnl_stream_wait(strm);
  dnnl_primitive_destroy(r);
  return dst;
}

/* ReLU6, then (fused) the depthwise step and ReLU6 again. */
static dnnl_primitive_attr_t attr_of(int fused, int stride) {
  dnnl_primitive_attr_t a;
  dnnl_post_ops_t po;
  dnnl_primitive_attr_create(&a);
  dnnl_post_ops_create(&po);
  dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip, 0.f, 6.f);
  if (fused) {
    dnnl_status_t st = dnnl_post_ops_append_dw(po, dnnl_f32, dnnl_f32, dnnl_f32, 3, stride, 1, 0, 0, NULL);
    if (st != dnnl_success) die("append_dw", st);
    dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip, 0.f, 6.f);
  }
  dnnl_primitive_attr_set_post_ops(a, po);
  dnnl_post_ops_destroy(po);
  return a;
}

static dnnl_primitive_desc_t conv_pd(const dnnl_memory_desc_t *s, const dnnl_memory_desc_t *w,
                                     const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *d, int stride, int pad,
                                     int pad_r, dnnl_primitive_attr_t attr) {
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t pd;
  dnnl_dims_t st = {stride, stride}, pl = {pad, pad}, pr = {pad_r, pad_r};
  dnnl_status_t r = dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, s, w,
                                                       b, d, st, pl, pr);
  if (r == dnnl_success) r = dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (r != dnnl_success) die("convolution", r);
  return pd;
}

/* Primitives run in sequence with their arguments. */
typedef struct {
  int n;
  dnnl_primitive_t p[MAX_STEPS];
  dnnl_exec_arg_t a[MAX_STEPS][8];
  int na[MAX_STEPS];
} steps;

static void step(steps *s, dnnl_primitive_t p) { s->p[s->n++] = p; }
static void arg(steps *s, int id, dnnl_memory_t m) {
  int i = s->n - 1;
  s->a[i][s->na[i]++] = (dnnl_exec_arg_t){id, m};
}
static void run(const steps *s) {
  for (int i = 0; i < s->n; i++) dnnl_primitive_execute(s->p[i], strm, s->na[i], s->a[i]);
}
static double time_ms(const steps *s, int reps) {
  double best = 1e30;
  run(s);
  dnnl_stream_wait(strm);
  for (int r = 0; r < 5; r++) {
    double t = now_s();
    for (int k = 0; k < reps; k++) run(s);
    dnnl_stream_wait(strm);
    t = (now_s() - t) / reps;
    if (t < best) best = t;
  }
  return best * 1e3;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static float frand(void) { return (float)rand() / (float)RAND_MAX - 0.5f; }

/* One shape: builds the four variants, checks the fused outputs, times each once; t[4] in ms. */
static void one_shape(const int sh[5], int print, double t[4]) {
  int N = sh[0], C = sh[1], H = sh[2], E = sh[3], s = sh[4], oh = (H - 1) / s + 1, pad_r = (oh - 1) * s + 2 - H;
  dnnl_memory_desc_t x, mid, y, any_x, any_mid, any_y, w1_any, w2_any, w1_plain, w2_plain, b;
  dnnl_dims_t xd = {N, C, H, H}, md = {N, E, H, H}, yd = {N, E, oh, oh}, w1d = {E, C, 1, 1}, w2d = {E, 1, 1, 3, 3},
              bd = {E};
  dnnl_memory_desc_init_by_tag(&x, 4, xd, dnnl_f32, dnnl_nhwc);
  dnnl_memory_desc_init_by_tag(&mid, 4, md, dnnl_f32, dnnl_nhwc);
  dnnl_memory_desc_init_by_tag(&y, 4, yd, dnnl_f32, dnnl_nhwc);
  dnnl_memory_desc_init_by_tag(&any_x, 4, xd, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&any_mid, 4, md, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&any_y, 4, yd, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&w1_any, 4, w1d, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&w2_any, 5, w2d, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&w1_plain, 4, w1d, dnnl_f32, dnnl_oihw);
  dnnl_memory_desc_init_by_tag(&w2_plain, 5, w2d, dnnl_f32, dnnl_goihw);
  dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_a);
  size_t nx = (size_t)N * C * H * H, ny = (size_t)N * E * oh * oh;
  float *X = malloc(nx * 4), *W1 = malloc((size_t)E * C * 4), *W2 = malloc((size_t)E * 9 * 4), *B1 = malloc(E * 4),
        *B2 = malloc(E * 4);
  srand(1);
  for (size_t i = 0; i < nx; i++) X[i] = frand();
  for (int i = 0; i < E * C; i++) W1[i] = frand();
  for (int i = 0; i < E * 9; i++) W2[i] = frand();
  for (int i = 0; i < E; i++) B1[i] = frand(), B2[i] = frand();
  dnnl_memory_t mx = mem(&x, X), mb1 = mem(&b, B1), mb2 = mem(&b, B2), w1p = mem(&w1_plain, W1),
                w2p = mem(&w2_plain, W2);
  dnnl_memory_t outs[4] = {0};
  steps v[4];
  memset(v, 0, sizeof v);
  const char *names[4];
  for (int k = 0; k < 4; k++) {
    int fused = k & 1, blocked = k >> 1;
    const dnnl_memory_desc_t *sx = blocked ? &any_x : &x;
    if (!fused) {
      dnnl_primitive_desc_t p1 = conv_pd(sx, &w1_any, &b, blocked ? &any_mid : &mid, 1, 0, 0, attr_of(0, 0));
      const dnnl_memory_desc_t *m1 = dnnl_primitive_desc_query_md(p1, dnnl_query_dst_md, 0);
      dnnl_primitive_desc_t p2 = conv_pd(m1, &w2_any, &b, blocked ? &any_y : &y, s, 1, pad_r, attr_of(0, 0));
      dnnl_memory_t src = reordered(mx, &x, dnnl_primitive_desc_query_md(p1, dnnl_query_src_md, 0));
      dnnl_memory_t m = mem(m1, NULL), out = mem(dnnl_primitive_desc_query_md(p2, dnnl_query_dst_md, 0), NULL);
      dnnl_primitive_t q1, q2;
      dnnl_primitive_create(&q1, p1);
      dnnl_primitive_create(&q2, p2);
      keep_prim(q1);
      keep_prim(q2);
      step(&v[k], q1);
      arg(&v[k], DNNL_ARG_SRC, src);
      arg(&v[k], DNNL_ARG_WEIGHTS, reordered(w1p, &w1_plain, dnnl_primitive_desc_query_md(p1, dnnl_query_weights_md, 0)));
      arg(&v[k], DNNL_ARG_BIAS, mb1);
      arg(&v[k], DNNL_ARG_DST, m);
      step(&v[k], q2);
      arg(&v[k], DNNL_ARG_SRC, m);
      arg(&v[k], DNNL_ARG_WEIGHTS, reordered(w2p, &w2_plain, dnnl_primitive_desc_query_md(p2, dnnl_query_weights_md, 0)));
      arg(&v[k], DNNL_ARG_BIAS, mb2);
      arg(&v[k], DNNL_ARG_DST, out);
      outs[k] = out;
      static char buf[4][160];
      snprintf(buf[k], sizeof buf[k], "%s + %s", impl_of(p1), impl_of(p2));
      names[k] = buf[k];
      dnnl_primitive_desc_destroy(p1);
      dnnl_primitive_desc_destroy(p2);
      continue;
    }
    /* the descriptor is the 1x1 convolution's; the primitive's dst is the depthwise result */
    dnnl_primitive_desc_t pf = conv_pd(sx, &w1_any, &b, blocked ? &any_mid : &mid, 1, 0, 0, attr_of(1, s));
    const dnnl_memory_desc_t *fs = dnnl_primitive_desc_query_md(pf, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *fd = dnnl_primitive_desc_query_md(pf, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *fw = dnnl_primitive_desc_query_md(pf, dnnl_query_exec_arg_md,
                                                                DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS);
    dnnl_memory_t src = mem(fs, NULL), out = mem(fd, NULL), back = mem(&y, NULL);
    dnnl_primitive_t q;
    dnnl_primitive_create(&q, pf);
    keep_prim(q);
    if (!dnnl_memory_desc_equal(fs, &x)) {
      step(&v[k], keep_prim(reorder_prim(&x, fs)));
      arg(&v[k], DNNL_ARG_FROM, mx);
      arg(&v[k], DNNL_ARG_TO, src);
    } else {
      src = mx;
    }
    step(&v[k], q);
    arg(&v[k], DNNL_ARG_SRC, src);
    arg(&v[k], DNNL_ARG_WEIGHTS, reordered(w1p, &w1_plain, dnnl_primitive_desc_query_md(pf, dnnl_query_weights_md, 0)));
    arg(&v[k], DNNL_ARG_BIAS, mb1);
    arg(&v[k], DNNL_ARG_DST, out);
    arg(&v[k], DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS, reordered(w2p, &w2_plain, fw));
    arg(&v[k], DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS, mb2);
    if (!dnnl_memory_desc_equal(fd, &y)) {
      step(&v[k], keep_prim(reorder_prim(fd, &y)));
      arg(&v[k], DNNL_ARG_FROM, out);
      arg(&v[k], DNNL_ARG_TO, back);
      outs[k] = back;
    } else {
      outs[k] = out;
    }
    static char buf2[4][160];
    snprintf(buf2[k], sizeof buf2[k], "%s", impl_of(pf));
    names[k] = buf2[k];
    dnnl_primitive_desc_destroy(pf);
  }
  int reps = N == 1 ? 100 : 20;
  for (int k = 0; k < 4; k++) t[k] = time_ms(&v[k], reps);
  if (print) {
    /* outputs of the last timed run; the channels-last pair is the reference (outs[2] is in its own layout) */
    const float *ref = ptr(outs[0]);
    printf("N%d C%d H%d E%d s%d\n", N, C, H, E, s);
    static const char *label[4] = {"nhwc pair   ", "nhwc fused  ", "oneDNN pair ", "oneDNN fused"};
    for (int k = 0; k < 4; k++) {
      double d = -1;
      if (k == 1 || k == 3) {
        const float *o = ptr(outs[k]);
        d = 0;
        for (size_t i = 0; i < ny; i++) d = fmax(d, fabs((double)o[i] - ref[i]));
      }
      printf("  %s %s", label[k], names[k]);
      if (d >= 0) printf("  max |fused - pair| %g", d);
      printf("\n");
    }
  }
  release_all();
  free(X), free(W1), free(W2), free(B1), free(B2);
}

int main(int argc, char **argv) {
  if (argc < 7 || (argc - 2) % 5 != 0 || (argc - 2) / 5 > MAX_SHAPES) {
    fprintf(stderr, "usage: dw_fusion ROUNDS N C H E STRIDE [N C H E STRIDE ...]\n");
    return 2;
  }
  int rounds = atoi(argv[1]), ns = (argc - 2) / 5, sh[MAX_SHAPES][5];
  if (rounds < 1 || rounds > 64) return 2;
  for (int i = 0; i < ns; i++)
    for (int j = 0; j < 5; j++) sh[i][j] = atoi(argv[2 + 5 * i + j]);
  dnnl_status_t st = dnnl_engine_create(&eng, dnnl_cpu, 0);
  if (st == dnnl_success) st = dnnl_stream_create(&strm, eng, dnnl_stream_default_flags);
  if (st != dnnl_success) die("engine", st);
  double (*t)[4][64] = calloc((size_t)ns, sizeof *t);
  for (int r = 0; r < rounds; r++)
    for (int i = 0; i < ns; i++) {
      double one[4];
      one_shape(sh[i], r == 0, one);
      for (int k = 0; k < 4; k++) t[i][k][r] = one[k];
    }
  printf("\nmedian ms over %d rounds: nhwc pair | nhwc fused | oneDNN-layout pair | oneDNN-layout fused (with reorders)\n",
         rounds);
  for (int i = 0; i < ns; i++) {
    printf("N%-2d C%-3d H%-3d E%-4d s%d:", sh[i][0], sh[i][1], sh[i][2], sh[i][3], sh[i][4]);
    for (int k = 0; k < 4; k++) {
      qsort(t[i][k], (size_t)rounds, sizeof(double), cmp_d);
      printf(" %8.3f", t[i][k][rounds / 2]);
    }
    printf("\n");
  }
  free(t);
  return 0;
}

/* cpu_dnnl.h - internals shared by the oneDNN (CPU) implementation of kernels.h. */
#ifndef HS_KERNELS_CPU_DNNL_H
#define HS_KERNELS_CPU_DNNL_H

#include <dnnl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "kernels/kernels.h"

#define HS__MAX_VARIANTS 8 /* distinct batch sizes one kernel keeps primitives for */
#define HS__MAX_PRIMS 6    /* primitives one variant runs in sequence (an eltwise chain) */
#define HS__MAX_MDS 8      /* memory descriptors a variant records (meaning set by each kernel kind) */
#define HS__MAX_ARGS 12

/* Primitives and reordered constants built for one batch size. Immutable once published. */
typedef struct hs__variant {
  int64_t batch;
  int nprim;
  dnnl_primitive_t prim[HS__MAX_PRIMS];
  dnnl_memory_desc_t md[HS__MAX_MDS];
  void *weights;       /* constant operand in the implementation's layout, or NULL */
  int weights_shared;  /* 1: points into variant 0's buffer (not freed here) */
  size_t scratch;      /* scratch bytes a run needs: oneDNN scratchpad (max over prim[]) plus temps */
  size_t off[2];       /* kernel-specific offsets of temporaries inside the scratch */
  int reordered;       /* conv: activations go through internal layouts (see cpu_dnnl_conv.c) */
  void *weights2;      /* a second constant operand (a fused depthwise convolution's weights), owned, or NULL */
  int fused;           /* conv with a depthwise convolution: 1 when one primitive runs both */
  int src_planes;      /* conv: the source reorder is NCHW -> NHWC of a few channels, run as a plain loop */
  int inner;           /* matmul: an inner product that reads B in its given layout (md[3] its view of B) */
} hs__variant;

typedef struct hs__kvt hs__kvt;

struct hs_kernel {
  const hs__kvt *vt;
  union {
    hs_conv_params conv;
    hs_matmul_params mm;
    hs_pool_params pool;
    hs_eltwise_params elt;
    hs_binary_params bin;
    hs_softmax_params sm;
    hs_layernorm_params ln;
    hs_batchnorm_params bn;
    hs_reduce_params red;
    hs_concat_params cat;
    hs_resample_params rs;
    hs_reorder_params ro;
    hs_qconv_params qc;
    hs_qmatmul_params qmm;
  } p;
  int64_t batch0;          /* batch at creation */
  void *w_plain;           /* owned copy of the constant operand in its source layout (freed once
                              variant 0 holds it reordered); a weight block (base/wblock.h): in the
                              server it takes the pages a decoded tensor left, and its own go back
                              to the pool instead of growing the loader thread's heap, whose top
                              malloc_trim cannot hand back */
  dnnl_memory_desc_t w_plain_md;
  const void *w_src;       /* conv, matmul: the caller's weights (B), read in w_plain's place while the
                              constructor builds variant 0 (no plain copy made); hs__kernel_finish
                              copies them into w_plain where variant 0's format is one-way, and
                              clears it */
  const hs_kernel *w_from; /* conv: variant 0 takes its weights from this kernel's variant 0 */
  const void *w_lent;      /* matmul: the caller's B (hs_matmul_params.b_lend), which inner variants read
                              in place (their weights point into it, shared): no copy is made */
  int w_lent_owned;        /* 1 once the caller handed w_lent over (hs_kernel_matmul_adopt_b): the
                              kernel frees it (hs_wblock_free) */
  float *owned[4];         /* other owned constant copies (bias, scale, ...) */
  int64_t *owned_i64;      /* concat axis sizes */
  int flags;               /* kernel-specific */
  void *share;             /* its kshare.c registry entry, or NULL when not shared */
  pthread_mutex_t lock;    /* serialises building variants */
  atomic_int nvar;         /* published variants: var[0..nvar) are immutable */
  hs__variant *var[HS__MAX_VARIANTS]; /* var[0] is var0; a later one is allocated when it is built (each
                                         is 5.7 KB, its memory descriptors most of it: all eight inline
                                         made every kernel 47 KB, calloc'ed and cleared per version while
                                         nearly all run one batch size) */
  hs__variant var0;
  char impl[96];
};

struct hs__kvt {
  const char *name;
  /* Builds v's primitives (and constants) for leading dimension `batch`. On failure v may hold
   * partial state; the caller releases it with hs__variant_release. */
  int (*build)(hs_kernel *k, int64_t batch, hs__variant *v, hs_error *err);
  /* Runs v on stream s with the caller's buffers. */
  int (*exec)(hs_kernel *k, const hs__variant *v, const hs_kernel_args *a, dnnl_stream_t s,
              dnnl_memory_t scratch, hs_error *err);
  /* Optional: a short description of the parameters for HS_KERNELS_VERBOSE (static buffer). */
  const char *(*describe)(const hs_kernel *k);
};

/* The process-wide CPU engine (created once, thread-safe). NULL when oneDNN fails to start. */
dnnl_engine_t hs__dnnl_engine(void);

/* Maps a dnnl status to an hs_status and fills err with "what: oneDNN says ..." */
int hs__dnnl_fail(hs_error *err, dnnl_status_t st, const char *what);

/* Allocates a kernel with its vtable, copies nothing; the constructor fills p. */
int hs__kernel_new(const hs__kvt *vt, hs_kernel **out, hs_error *err);
/* Builds variant 0 (the creation batch), records the implementation name, and on failure frees k. */
int hs__kernel_finish(hs_kernel *k, int64_t batch, hs_error *err);

/* Creates pd's primitive into v->prim[v->nprim++] and adds its scratchpad to v->scratch;
 * pd is destroyed. */
int hs__add_prim(hs__variant *v, dnnl_primitive_desc_t pd, hs_error *err);

/* The same for a primitive with a constant weights operand (matmul, qmatmul): records pd's weights descriptor in
 * v->md[HS__MAX_MDS - 1] and sets v->weights for it (hs__variant_weights) first. */
int hs__add_weights_prim(hs_kernel *k, hs__variant *v, dnnl_primitive_desc_t pd, hs_error *err);

/* An attr with user-managed scratchpad and the post-ops of `post` (NULL for none). The SUM entries
 * become sum post-ops. Returns 0 or HS_UNSUPPORTED/HS_INTERNAL. */
int hs__make_attr(const hs_post_ops *post, dnnl_primitive_attr_t *attr, hs_error *err);
/* Appends post's steps (eltwise, sum) to ops: what hs__make_attr sets. */
int hs__append_post_ops(dnnl_post_ops_t ops, const hs_post_ops *post, hs_error *err);

/* Maps an activation to one or two oneDNN eltwise steps. Returns the step count (1..2) or 0 when
 * oneDNN has no such function. */
int hs__act_to_dnnl(hs_act_kind a, float alpha, float beta, dnnl_alg_kind_t alg[2], float al[2],
                    float be[2]);

/* A plain (row-major) or channels-last descriptor for dims. */
int hs__md_plain(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, hs_error *err);
int hs__md_act(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, hs_layout layout, hs_error *err);

/* Reorders src (described by from) into the caller's dst (described by to), on the calling thread's
 * stream. Only from's values are read: extra data after them (int8 weights' compensation terms) is
 * not, so a kernel's int8 weights give back the plain int8 values they were made from. */
int hs__reorder_into(const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *to, void *dst,
                     hs_error *err);
/* The byte offset in a buffer of md (`bytes`: its size) from which it may hold bytes no reorder
 * writes: padding of a blocked layout, extra terms, an opaque format. bytes when there are none, 0 when
 * they may lie anywhere; for a dense blocked layout, the start of the last outer block of the padded
 * dimension that comes first (the padding lies past dims[i], within that block). */
size_t hs__gaps_from(const dnnl_memory_desc_t *md, size_t bytes);
/* How many reorders hs__reorder_into did on the calling thread with its own loop instead of oneDNN's:
 * plain 1x1 f32 weights [O][I] into blocks of B output channels [O/B][I][B] (Acdb48a, Acdb64a...) whose
 * rows are a multiple of 4 KiB, where oneDNN 2.6's jit:uni reorder is slow (cpu_dnnl_core.c). */
size_t hs__rows_reorders(void);
/* Reorders src (described by from) into a freshly allocated 64-byte aligned buffer described by to.
 * On success *out is owned by the caller (hs_wblock_free: base/wblock.h). */
int hs__reorder_alloc(const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *to,
                      void **out, hs_error *err);

/* Creates a reorder primitive from -> to (user scratchpad); *sp receives its scratchpad bytes. */
int hs__make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out,
                     size_t *sp, hs_error *err);

/* 1 for weights in a form no reorder reads back (oneDNN's Winograd format; int8 weights halved by
 * scale_adjust, on CPUs without VNNI): the kernel then keeps its plain copy (w_plain) for variants and
 * readers that need another layout. */
int hs__weights_one_way(const dnnl_memory_desc_t *md);
/* Sets v->weights for descriptor want: variant 0 reorders k->w_plain; later variants share variant 0's
 * buffer when the layout is the same, otherwise reorder w_plain while it stays, else variant 0's values
 * (hs__reorder_into). */
int hs__variant_weights(hs_kernel *k, hs__variant *v, const dnnl_memory_desc_t *want, hs_error *err);

/* Executes prim with args (memory objects over the caller's buffers) on s. */
typedef struct hs__argv {
  int n;
  dnnl_exec_arg_t a[HS__MAX_ARGS];
  int slot[HS__MAX_ARGS]; /* 0: a memory object of its own; else 1 + the thread's slot it was taken from */
} hs__argv;
/* Appends arg -> (md, ptr): the calling thread's memory object for md (a slot keyed by md's address and
 * arg, checked against md's contents) re-pointed at ptr, or a new one; hs__argv_release gives it back
 * or destroys it. */
int hs__argv_add(hs__argv *av, int arg, const dnnl_memory_desc_t *md, const void *ptr, hs_error *err);
/* Appends an existing memory object (not destroyed by hs__argv_release). */
void hs__argv_add_mem(hs__argv *av, int arg, dnnl_memory_t mem);
void hs__argv_release(hs__argv *av, int owned_from);
int hs__exec(dnnl_primitive_t prim, dnnl_stream_t s, hs__argv *av, hs_error *err);
/* Runs a reorder primitive from (fmd, from) to (tmd, to) with the caller's scratchpad, through fresh
 * memory objects (the convolution kernels' layout changes around their primitive). */
int hs__run_reorder(dnnl_primitive_t prim, dnnl_stream_t s, dnnl_memory_t scratch, const dnnl_memory_desc_t *fmd,
                    const void *from, const dnnl_memory_desc_t *tmd, void *to, hs_error *err);

/* Lays out the scratch of a variant that runs its primitive in internal layouts: the primitives' scratchpad
 * (sp bytes, the largest of them) first, then a temporary for the source in layout isrc at v->off[0] and one for
 * the destination in layout idst at v->off[1] (NULL: none), each 64-byte aligned; sets v->scratch. */
void hs__place_temps(hs__variant *v, size_t sp, const dnnl_memory_desc_t *isrc, const dnnl_memory_desc_t *idst);

/* Copies the residual into dst when a SUM post-op exists and the two do not alias. */
int hs__prepare_sum(const hs_post_ops *post, const hs_kernel_args *a, size_t dst_bytes, hs_error *err);

/* Copies n floats into a new owned buffer registered in k->owned (NULL src gives NULL). */
int hs__own_floats(hs_kernel *k, const float *src, int64_t n, const float **dst, hs_error *err);

#endif

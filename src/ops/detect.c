/* detect.c - NonMaxSuppression (opset 10+), the box selection that detection models end with. */

/*
 * DESIGN
 * The number of selected boxes decides the output's shape, so every input must be known when a
 * session plans (value_inputs: a graph input or constant, as ONNX's tests and exported detectors
 * with their boxes as graph inputs give them). infer() runs the selection to count (its work arrays
 * malloc'ed there, planning time) and run() runs it again into the output (work arrays in scratch).
 * Per batch and class: boxes scoring above score_threshold, by score (ties: lower index first, as
 * ONNX Runtime); a box is kept when its IoU with every box kept before in that class is at most
 * iou_threshold, up to max_output_boxes_per_class. Corners may come in any order
 * (center_point_box 0) or as centre and size (1).
 */
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"

typedef struct {
  int center;
} nms_params;

static int nms_check(hs_node *n, const hs_graph *g, hs_error *err) {
  (void)g;
  nms_params *p = (nms_params *)n->params.bytes;
  int64_t c;
  int rc = hs_node_only_attrs(n, "center_point_box", err);
  if (rc || (rc = hs_attr_int(n, "center_point_box", 0, &c, err))) return rc;
  if (c != 0 && c != 1) return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "center_point_box must be 0 or 1");
  p->center = (int)c;
  return 0;
}

static int nms_shapes(const hs_node *n, const hs_tensor *in, int nin, hs_error *err) {
  const hs_tensor *b = &in[0], *s = &in[1];
  if (b->dtype != HS_DT_FLOAT32 || s->dtype != HS_DT_FLOAT32 || b->ndim != 3 || s->ndim != 3 || b->dims[2] != 4 ||
      s->dims[0] != b->dims[0] || s->dims[2] != b->dims[1])
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "boxes must be float32 [batches, boxes, 4] and scores [batches, "
                                                   "classes, boxes]");
  if (nin > 2 && HS_PRESENT(&in[2]) && ((in[2].dtype != HS_DT_INT64 && in[2].dtype != HS_DT_INT32) || hs_numel(&in[2]) != 1))
    return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "max_output_boxes_per_class must be one integer");
  for (int i = 3; i < nin && i < 5; i++)
    if (HS_PRESENT(&in[i]) && (in[i].dtype != HS_DT_FLOAT32 || hs_numel(&in[i]) != 1))
      return hs_op_errf(err, n, HS_INVALID_ARGUMENT, "thresholds must be one float32");
  return 0;
}

/* Corners (y1, x1, y2, x2) with y1 <= y2, x1 <= x2 of box i. */
static void corners(const float *bx, int center, float *c) {
  if (center) {
    c[0] = bx[1] - bx[3] / 2, c[2] = bx[1] + bx[3] / 2;
    c[1] = bx[0] - bx[2] / 2, c[3] = bx[0] + bx[2] / 2;
  } else {
    c[0] = bx[0] < bx[2] ? bx[0] : bx[2], c[2] = bx[0] < bx[2] ? bx[2] : bx[0];
    c[1] = bx[1] < bx[3] ? bx[1] : bx[3], c[3] = bx[1] < bx[3] ? bx[3] : bx[1];
  }
}

static int suppressed_by(const float *a, const float *b, float iou_threshold) {
  float area_a = (a[2] - a[0]) * (a[3] - a[1]), area_b = (b[2] - b[0]) * (b[3] - b[1]);
  if (area_a <= 0 || area_b <= 0) return 0;
  float ih = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
  float iw = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
  if (ih <= 0 || iw <= 0) return 0;
  float inter = ih * iw;
  return inter / (area_a + area_b - inter) > iou_threshold;
}

typedef struct {
  float score;
  int64_t index;
} scored;

static int by_score(const void *x, const void *y) {
  const scored *a = x, *b = y;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return a->index < b->index ? -1 : a->index > b->index;
}

/* Runs the selection; writes triples into out (when not NULL) and returns the count in *count.
 * work holds `boxes` scored entries and `boxes` kept indices. */
static void nms_select(const hs_node *n, const hs_tensor *in, int nin, int64_t *out, int64_t *count, scored *work,
                       int64_t *kept) {
  const nms_params *p = (const nms_params *)n->params.bytes;
  const int64_t B = in[0].dims[0], N = in[0].dims[1], C = in[1].dims[1];
  int64_t max_out = nin > 2 && HS_PRESENT(&in[2]) ? hs_get_int(&in[2], 0) : 0;
  float iou = nin > 3 && HS_PRESENT(&in[3]) ? *(const float *)in[3].data : 0.0f;
  int has_st = nin > 4 && HS_PRESENT(&in[4]);
  float st = has_st ? *(const float *)in[4].data : 0.0f;
  const float *boxes = in[0].data, *scores = in[1].data;
  *count = 0;
  if (max_out <= 0) return;
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) {
      const float *sc = scores + (b * C + c) * N;
      int64_t m = 0, nk = 0;
      for (int64_t i = 0; i < N; i++)
        if (!has_st || sc[i] > st) work[m++] = (scored){sc[i], i};
      qsort(work, (size_t)m, sizeof *work, by_score);
      for (int64_t i = 0; i < m && nk < max_out; i++) {
        float ci[4], ck[4];
        corners(boxes + (b * N + work[i].index) * 4, p->center, ci);
        int keep = 1;
        for (int64_t k = 0; k < nk && keep; k++) {
          corners(boxes + (b * N + kept[k]) * 4, p->center, ck);
          keep = !suppressed_by(ci, ck, iou);
        }
        if (!keep) continue;
        kept[nk++] = work[i].index;
        if (out) out[*count * 3] = b, out[*count * 3 + 1] = c, out[*count * 3 + 2] = work[i].index;
        ++*count;
      }
    }
}

static int nms_infer(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, hs_error *err) {
  (void)nout;
  int rc = nms_shapes(n, in, nin, err);
  if (rc) return rc;
  int64_t N = in[0].dims[1], count;
  scored *work = malloc(sizeof *work * (size_t)(N + 1));
  int64_t *kept = malloc(sizeof *kept * (size_t)(N + 1));
  if (!work || !kept) {
    free(work);
    free(kept);
    return hs_op_errf(err, n, HS_NO_MEMORY, "out of memory");
  }
  nms_select(n, in, nin, NULL, &count, work, kept);
  free(work);
  free(kept);
  int64_t d[2] = {count, 3};
  return hs_set_shape(&out[0], HS_DT_INT64, 2, d, n, err);
}

static size_t nms_scratch(const hs_node *n, const hs_tensor *in, int nin, const hs_tensor *out, int nout) {
  (void)n, (void)nin, (void)out, (void)nout;
  return (sizeof(scored) + sizeof(int64_t)) * (size_t)(in[0].dims[1] + 1);
}

static int nms_run(const hs_node *n, const hs_tensor *in, int nin, hs_tensor *out, int nout, void *scratch,
                   hs_error *err) {
  (void)nout;
  int rc = nms_shapes(n, in, nin, err);
  if (rc) return rc;
  int64_t count, N = in[0].dims[1];
  scored *work = scratch;
  nms_select(n, in, nin, out[0].data, &count, work, (int64_t *)(work + N + 1));
  if (count != out[0].dims[0]) return hs_op_errf(err, n, HS_INTERNAL, "selection changed since planning");
  return 0;
}

const hs_op_impl hs_op_impl_nms = {
    .check = nms_check,
    .infer = nms_infer,
    .scratch_bytes = nms_scratch,
    .run = nms_run,
};

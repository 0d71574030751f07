/* pass_fuse_concat.c - a nearest Resize with integer factors that only a Concat reads is done by the Concat. */

/*
 * An FPN neck (the text detector's) upsamples each coarse level and concatenates them: the Resizes
 * write three full-size tensors that the Concat then copies again. When a Resize input of a Concat
 * is a nearest upsampling by integer factors along H and W (hs_resize_nearest_factors) and that
 * Concat is its output's only reader, the Concat reads the Resize's input instead and upsamples it
 * as it copies (HS_FUSE_UPSAMPLE, ops/select.c): the same bytes, without the intermediate tensor or
 * the Resize's run. Runs before the layout pass, which then sees the Concat reading the convolutions
 * directly and may keep them all channels-last.
 */
#include "engine/engine.h"
#include "engine/pass_fuse.h"
#include "ops/ops.h"

int hs__pass_fuse_concat_upsample(hs_graph *g, int *changed, hs_error *err) {
  for (int ni = 0; ni < g->n_nodes; ni++) {
    hs_node *n = &g->nodes[ni];
    if (!hs__fuse_is_op(n, HS_OP_Concat)) continue;
    for (int i = 0; i < n->n_in; i++) {
      int v = n->in[i], slot = -1;
      if (v < 0 || g->values[v].producer < 0 || hs__fuse_sole_consumer(g, v, &slot) != ni || slot != i) continue;
      hs_node *r = &g->nodes[g->values[v].producer];
      hs_fusion f = {.kind = HS_FUSE_UPSAMPLE, .dry_run = 1, .input = i};
      if (r->n_out != 1 || !hs_resize_nearest_factors(r, g, f.up)) continue;
      int rc = hs_op_fuse(n, &f, err);
      if (rc < 0) return rc;
      if (rc == HS_FUSE_REFUSED) continue;
      f.dry_run = 0;
      if ((rc = hs__fuse_apply(n, &f, err))) return rc;
      n->in[i] = r->in[0];
      r->dead = 1;
      *changed = 1;
    }
  }
  return 0;
}

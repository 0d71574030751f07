/* act.c - plain-C activations and post-ops, used by reference (fallback) paths of the ops. */
#include <math.h>

#include "kernels/kernels.h"

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

float hs_act_apply(hs_act_kind a, float al, float be, float x) {
  switch (a) {
    case HS_ACT_RELU: return x > 0 ? x : al * x;
    case HS_ACT_CLIP: return clampf(x, al, be);
    case HS_ACT_SIGMOID: return 1.f / (1.f + expf(-x));
    case HS_ACT_TANH: return tanhf(x);
    case HS_ACT_HARDSIGMOID: return clampf(al * x + be, 0.f, 1.f);
    case HS_ACT_HARDSWISH: return x * clampf(x / 6.f + 0.5f, 0.f, 1.f);
    case HS_ACT_ELU: return x > 0 ? x : al * (expf(x) - 1.f);
    case HS_ACT_GELU_ERF: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case HS_ACT_GELU_TANH: return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case HS_ACT_EXP: return expf(x);
    case HS_ACT_LOG: return logf(x);
    case HS_ACT_SQRT: return sqrtf(x);
    case HS_ACT_ABS: return fabsf(x);
    case HS_ACT_SQUARE: return x * x;
    case HS_ACT_LINEAR: return al * x + be;
    case HS_ACT_POW: return al * powf(x, be);
    case HS_ACT_SOFTPLUS: return log1pf(expf(x));
    case HS_ACT_SWISH: return x / (1.f + expf(-al * x));
    default: return x;
  }
}

void hs_post_apply(const hs_post_ops *p, float *y, const float *residual, int64_t n) {
  for (int j = 0; j < p->count; j++) {
    const hs_post_op *o = &p->op[j];
    if (o->kind == HS_POST_SUM) {
      float s = o->scale == 0.f ? 1.f : o->scale;
      if (residual)
        for (int64_t i = 0; i < n; i++) y[i] += s * residual[i];
    } else {
      for (int64_t i = 0; i < n; i++) y[i] = hs_act_apply(o->act, o->alpha, o->beta, y[i]);
    }
  }
}

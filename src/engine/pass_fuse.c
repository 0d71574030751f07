/* pass_fuse.c - the list of fusion passes (BN->Conv folding, activation / residual fusion) that run
 * after the generic passes: add an entry per pass_fuse_*.c pass. */
#include <stddef.h>

#include "engine/engine.h"
#include "engine/pass_fuse.h"

/* Order matters: BN folds first so the Conv's output feeds the activation or Add directly; a 1x1
 * Conv takes the activations before a depthwise 3x3 Conv and that Conv before the activation pass
 * sees them (the depthwise Conv's activations then fuse after it); an
 * activation after the residual Add (ResNet's Add -> Relu) fuses in the second activation round.
 * Likewise a MatMul's bias Add fuses before its activation (Linear -> GELU) and its residual Add;
 * attention's MatMuls are taken whole before any of that can fuse into them. Upsampling folds into
 * Concats before the layout pass, which then sees the convolutions feeding the Concat directly. */
const hs_pass hs_fuse_passes[] = {
    {"fold_batchnorm_into_conv", hs__pass_fold_bn},
    {"fuse_conv_depthwise", hs__pass_fuse_conv_depthwise},
    {"fuse_conv_activation", hs__pass_fuse_conv_activation},
    {"fuse_conv_residual_add", hs__pass_fuse_conv_residual},
    {"fuse_conv_activation_after_add", hs__pass_fuse_conv_activation},
    {"fuse_attention", hs__pass_fuse_attention},
    {"fuse_matmul_bias", hs__pass_fuse_matmul_bias},
    {"fuse_matmul_activation", hs__pass_fuse_matmul_activation},
    {"fuse_matmul_residual_add", hs__pass_fuse_matmul_residual},
    {"fuse_matmul_activation_after_add", hs__pass_fuse_matmul_activation},
    {"fuse_concat_upsample", hs__pass_fuse_concat_upsample},
    {"conv_activation_layout", hs__pass_conv_layout},
    {NULL, NULL},
};

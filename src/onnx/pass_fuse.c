/* pass_fuse.c - the list of fusion passes (BN->Conv folding, activation / residual fusion) that run
 * after the generic passes. Owned by the kernels layer: add an entry per pass_fuse_*.c pass. */
#include <stddef.h>

#include "onnx/engine.h"

const hs_pass hs_fuse_passes[] = {
    {NULL, NULL},
};

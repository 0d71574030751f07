/* resize.c - op family (filled in step by step). */
#include "ops/ops.h"

const hs_op_def hs_ops_resize[] = {
    {NULL},
};

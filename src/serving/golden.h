/* golden.h - the golden check: run a freshly loaded version on shipped inputs, compare with shipped outputs. */
#ifndef HS_SERVING_GOLDEN_H
#define HS_SERVING_GOLDEN_H

#include "hotserve/backend.h"

/* Runs the model once on dir's inputs and compares every output that has an expected file,
 * elementwise |got - want| <= atol + rtol * |want| for floats, exactly for integers.
 * Layout: dir/inputs/<input>.npy + dir/outputs/<output>.npy, or all in dir/<name>.npy (names
 * passed through hs_input_file_name, warmup.h).
 * HS_CHECK_FAILED names the first mismatching output and element; file problems are HS_PARSE/HS_IO. */
int hs_golden_check(const hs_backend *b, const hs_backend_model *model, hs_backend_session *session,
                    const char *dir, double rtol, double atol, hs_error *err);

#endif

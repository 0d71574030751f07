/* golden.c - the golden check run before a version is published: a run on shipped inputs (warmup.c reads
 * them), compared with shipped outputs within a tolerance. */
#include "serving/golden.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/npy.h"
#include "engine/engine.h"
#include "repo/repo.h"
#include "serving/warmup.h"

static double element(const hs_tensor *t, size_t i) {
  switch (t->dtype) {
    case HS_DT_FLOAT32: return ((const float *)t->data)[i];
    case HS_DT_FLOAT64: return ((const double *)t->data)[i];
    case HS_DT_INT64: return (double)((const int64_t *)t->data)[i];
    case HS_DT_INT32: return ((const int32_t *)t->data)[i];
    case HS_DT_UINT8: case HS_DT_BOOL: return ((const uint8_t *)t->data)[i];
    case HS_DT_INT8: return ((const int8_t *)t->data)[i];
    default: return NAN;
  }
}

/* Whether got matches want within atol + rtol * |want|. NaN matches NaN; an infinity matches only
 * the same infinity (a tolerance scaled by an infinite want would otherwise accept anything, and
 * inf - inf is NaN, which would refuse a correct model). */
static bool float_matches(double got, double want, double rtol, double atol) {
  if (isnan(got) || isnan(want)) return isnan(got) && isnan(want);
  if (isinf(got) || isinf(want)) return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

static int compare(const char *name, const hs_tensor *got, const hs_tensor *want, double rtol, double atol,
                   hs_error *err) {
  if (got->dtype != want->dtype)
    return hs_error_set(err, HS_CHECK_FAILED, "output %s: datatype %s, expected %s", name,
                        hs_dtype_kserve_name(got->dtype), hs_dtype_kserve_name(want->dtype));
  bool same_shape = got->ndim == want->ndim;
  for (int k = 0; same_shape && k < got->ndim; k++) same_shape = got->dims[k] == want->dims[k];
  if (!same_shape || got->nbytes != want->nbytes)
    return hs_error_set(err, HS_CHECK_FAILED, "output %s: shape differs from the expected one", name);
  bool is_float = got->dtype == HS_DT_FLOAT32 || got->dtype == HS_DT_FLOAT64;
  bool readable = is_float || got->dtype == HS_DT_INT64 || got->dtype == HS_DT_INT32 ||
                  got->dtype == HS_DT_UINT8 || got->dtype == HS_DT_BOOL || got->dtype == HS_DT_INT8;
  if (!readable) { /* other types: exact bytes */
    if (got->nbytes && memcmp(got->data, want->data, got->nbytes) != 0)
      return hs_error_set(err, HS_CHECK_FAILED, "output %s differs from the expected bytes", name);
    return HS_OK;
  }
  size_t n = got->nbytes / hs_dtype_size(got->dtype);
  for (size_t i = 0; i < n; i++) {
    double g = element(got, i), w = element(want, i);
    bool ok = is_float ? float_matches(g, w, rtol, atol) : g == w;
    if (!ok)
      return hs_error_set(err, HS_CHECK_FAILED, "output %s element %zu is %g, expected %g (rtol %g, atol %g)",
                          name, i, g, w, rtol, atol);
  }
  return HS_OK;
}

int hs_golden_check(const hs_backend *b, const hs_backend_model *model, hs_backend_session *session,
                    const char *dir, double rtol, double atol, hs_error *err) {
  size_t n_in = b->num_inputs(model), n_out = b->num_outputs(model);
  hs_tensor *in = calloc(n_in ? n_in : 1, sizeof *in);
  hs_tensor *out = calloc(n_out ? n_out : 1, sizeof *out);
  hs_tensor want;
  memset(&want, 0, sizeof want);
  char path[HS_PATH_MAX];
  int rc = (in && out) ? HS_OK : hs_error_set(err, HS_NO_MEMORY, "no memory for the golden check");
  if (rc == HS_OK) rc = hs_golden_inputs(b, model, dir, in, n_in, err);
  hs_engine_memory_budget_exempt(true); /* as warm-up's runs: admission counted this memory */
  if (rc == HS_OK) rc = b->run(session, in, n_in, out, n_out, err);
  hs_engine_memory_budget_exempt(false);
  size_t compared = 0;
  for (size_t i = 0; rc == HS_OK && i < n_out; i++) {
    const char *name = b->output(model, i)->name;
    if (!hs_golden_find_file(dir, "outputs", name, path, sizeof path)) continue;
    rc = hs_npy_read(path, &want, err);
    if (rc == HS_OK) rc = compare(name, &out[i], &want, rtol, atol, err);
    free(want.data);
    want.data = NULL;
    compared++;
  }
  if (rc == HS_OK && compared == 0)
    rc = hs_error_set(err, HS_NOT_FOUND, "golden check: no expected output file in %s", dir);
  hs_tensors_free_data(in, in ? n_in : 0);
  free(in);
  free(out);
  return rc;
}

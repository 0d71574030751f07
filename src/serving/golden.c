/* golden.c - golden-check inputs/outputs (.npy) and the tolerance comparison run before a version is published. */
#include "serving/golden.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "repo/repo.h"

#define HS_GOLDEN_MAX_BYTES (1ull << 30)

/* Finds the value of 'key' in a numpy header dict; returns a pointer just after the colon. */
static const char *header_value(const char *h, const char *key) {
  const char *p = strstr(h, key);
  if (!p) return NULL;
  p = strchr(p + strlen(key), ':');
  if (!p) return NULL;
  p++;
  while (*p == ' ') p++;
  return p;
}

int hs_golden_read_npy(const char *path, hs_tensor *out, hs_error *err) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return hs_error_set(err, HS_IO, "cannot open %s", path);
  unsigned char pre[12];
  int rc = HS_OK;
  size_t hlen = 0, pre_len = 10;
  char *h = NULL;
  if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    rc = hs_error_set(err, HS_PARSE, "%s: not a .npy file", path);
    goto out;
  }
  if (pre[6] == 1) {
    hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
  } else if (pre[6] == 2 || pre[6] == 3) {
    if (fread(pre + 10, 1, 2, f) != 2) {
      rc = hs_error_set(err, HS_PARSE, "%s: truncated header", path);
      goto out;
    }
    hlen = (size_t)pre[8] | ((size_t)pre[9] << 8) | ((size_t)pre[10] << 16) | ((size_t)pre[11] << 24);
    pre_len = 12;
  } else {
    rc = hs_error_set(err, HS_PARSE, "%s: unsupported .npy version %d", path, pre[6]);
    goto out;
  }
  if (hlen == 0 || hlen > 65536) {
    rc = hs_error_set(err, HS_PARSE, "%s: header length %zu out of range", path, hlen);
    goto out;
  }
  h = malloc(hlen + 1);
  if (!h || fread(h, 1, hlen, f) != hlen) {
    rc = hs_error_set(err, HS_PARSE, "%s: truncated header", path);
    goto out;
  }
  h[hlen] = '\0';
  const char *d = header_value(h, "'descr'");
  const char *fo = header_value(h, "'fortran_order'");
  const char *sh = header_value(h, "'shape'");
  char descr[16] = {0};
  if (!d || !fo || !sh || *d != '\'' || sscanf(d + 1, "%15[^']", descr) != 1) {
    rc = hs_error_set(err, HS_PARSE, "%s: malformed header", path);
    goto out;
  }
  if (strncmp(fo, "False", 5) != 0) {
    rc = hs_error_set(err, HS_UNSUPPORTED, "%s: Fortran order is not supported", path);
    goto out;
  }
  out->dtype = hs_dtype_from_npy(descr);
  if (out->dtype == HS_DT_UNDEFINED) {
    rc = hs_error_set(err, HS_UNSUPPORTED, "%s: dtype %s is not supported", path, descr);
    goto out;
  }
  if (*sh != '(') {
    rc = hs_error_set(err, HS_PARSE, "%s: malformed shape", path);
    goto out;
  }
  const char *p = sh + 1;
  for (;;) {
    while (*p == ' ' || *p == ',') p++;
    if (*p == ')') break;
    char *end;
    long long dim = strtoll(p, &end, 10);
    if (end == p || dim < 0 || out->ndim >= HS_MAX_DIMS) {
      rc = hs_error_set(err, HS_PARSE, "%s: malformed shape", path);
      goto out;
    }
    out->dims[out->ndim++] = dim;
    p = end;
  }
  int64_t numel = hs_shape_numel(out->dims, out->ndim);
  size_t es = hs_dtype_size(out->dtype);
  if (numel < 0 || (uint64_t)numel > HS_GOLDEN_MAX_BYTES / es) {
    rc = hs_error_set(err, HS_LIMIT, "%s: tensor too large", path);
    goto out;
  }
  out->nbytes = (size_t)numel * es;
  out->data = malloc(out->nbytes ? out->nbytes : 1);
  if (!out->data) {
    rc = hs_error_set(err, HS_NO_MEMORY, "%s: no memory for %zu bytes", path, out->nbytes);
    goto out;
  }
  if (fread(out->data, 1, out->nbytes, f) != out->nbytes) {
    rc = hs_error_set(err, HS_PARSE, "%s: truncated data (%zu bytes expected after a %zu-byte header)", path,
                      out->nbytes, pre_len + hlen);
    goto out;
  }
out:
  if (rc != HS_OK) {
    free(out->data);
    out->data = NULL;
  }
  free(h);
  fclose(f);
  return rc;
}

/* dir/sub/name.npy if it exists, else dir/name.npy; false when neither exists. */
static bool find_file(const char *dir, const char *sub, const char *name, char *path, size_t cap) {
  struct stat st;
  snprintf(path, cap, "%s/%s/%s.npy", dir, sub, name);
  if (stat(path, &st) == 0) return true;
  snprintf(path, cap, "%s/%s.npy", dir, name);
  return stat(path, &st) == 0;
}

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
  if (!is_float && isnan(element(got, 0)) && got->nbytes) {
    if (memcmp(got->data, want->data, got->nbytes) != 0)
      return hs_error_set(err, HS_CHECK_FAILED, "output %s differs from the expected bytes", name);
    return HS_OK;
  }
  size_t n = got->nbytes / hs_dtype_size(got->dtype);
  for (size_t i = 0; i < n; i++) {
    double g = element(got, i), w = element(want, i);
    bool ok = is_float ? (fabs(g - w) <= atol + rtol * fabs(w) || (isnan(g) && isnan(w))) : g == w;
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
  for (size_t i = 0; rc == HS_OK && i < n_in; i++) {
    const char *name = b->input(model, i)->name;
    if (!find_file(dir, "inputs", name, path, sizeof path))
      rc = hs_error_set(err, HS_NOT_FOUND, "golden check: no input file for %s in %s", name, dir);
    else
      rc = hs_golden_read_npy(path, &in[i], err);
  }
  if (rc == HS_OK) rc = b->run(session, in, n_in, out, n_out, err);
  size_t compared = 0;
  for (size_t i = 0; rc == HS_OK && i < n_out; i++) {
    const char *name = b->output(model, i)->name;
    if (!find_file(dir, "outputs", name, path, sizeof path)) continue;
    rc = hs_golden_read_npy(path, &want, err);
    if (rc == HS_OK) rc = compare(name, &out[i], &want, rtol, atol, err);
    free(want.data);
    want.data = NULL;
    compared++;
  }
  if (rc == HS_OK && compared == 0)
    rc = hs_error_set(err, HS_NOT_FOUND, "golden check: no expected output file in %s", dir);
  for (size_t i = 0; in && i < n_in; i++) free(in[i].data);
  free(in);
  free(out);
  return rc;
}

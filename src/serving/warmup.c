/* warmup.c - warm-up inputs (zeros, random, .npy files), the warm-up runs, and the golden check's input files. */
#include "serving/warmup.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/session.h"
#include "base/npy.h"
#include "base/wblock.h"
#include "engine/engine.h"

#define HS_MAX_WARMUP_ELEMS (64ll * 1024 * 1024)

void hs_input_file_name(const char *name, char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = name; *p && n + 1 < cap; p++) {
    char ch = *p;
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || (ch == '.' && n > 0);
    out[n++] = ok ? ch : '_';
  }
  if (n == 0 && cap > 1) out[n++] = '_';
  out[n] = '\0';
}

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

int hs_warmup_inputs(const hs_backend *b, const hs_backend_model *model, const hs_model_config *cfg,
                     const char *vdir, hs_tensor *in, hs_wscratch *mem, size_t n_in, hs_error *err) {
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n_in; i++) {
    const hs_io_desc *d = b->input(model, i);
    if (cfg->warmup_kind == HS_WARMUP_FILES) {
      char path[HS_PATH_MAX], file[160];
      hs_input_file_name(d->name, file, sizeof file);
      if (snprintf(path, sizeof path, "%s/warmup/%s.npy", vdir, file) >= (int)sizeof path)
        return hs_error_set(err, HS_LIMIT, "input %s: warm-up file path too long", d->name);
      int rc = hs_npy_read(path, &in[i], err);
      if (rc != HS_OK) return rc;
      continue;
    }
    in[i].dtype = d->dtype;
    in[i].ndim = d->ndim;
    for (int k = 0; k < d->ndim; k++) in[i].dims[k] = d->dims[k] < 0 ? 1 : d->dims[k];
    int64_t numel = hs_shape_numel(in[i].dims, in[i].ndim);
    size_t es = hs_dtype_size(d->dtype);
    if (numel < 0 || numel > HS_MAX_WARMUP_ELEMS || es == 0)
      return hs_error_set(err, HS_LIMIT, "input %s: cannot make a warm-up tensor of that shape/type", d->name);
    in[i].nbytes = (size_t)numel * es;
    in[i].data = hs_wscratch_get(&mem[i], in[i].nbytes ? in[i].nbytes : 1); /* see warmup.h */
    if (!in[i].data) return hs_error_set(err, HS_NO_MEMORY, "input %s: no memory for warm-up data", d->name);
    if (cfg->warmup_kind != HS_WARMUP_RANDOM) memset(in[i].data, 0, in[i].nbytes);
    if (cfg->warmup_kind == HS_WARMUP_RANDOM) {
      if (d->dtype == HS_DT_FLOAT32) {
        float *f = in[i].data;
        for (int64_t k = 0; k < numel; k++) f[k] = (float)(xorshift(&seed) >> 40) / (float)(1 << 24);
      } else {
        unsigned char *p = in[i].data;
        for (size_t k = 0; k < in[i].nbytes; k++) p[k] = (unsigned char)(xorshift(&seed) & 1);
      }
    }
  }
  return HS_OK;
}

bool hs_golden_find_file(const char *dir, const char *sub, const char *name, char *path, size_t cap) {
  char file[160];
  hs_input_file_name(name, file, sizeof file);
  struct stat st;
  int n = snprintf(path, cap, "%s/%s/%s.npy", dir, sub, file);
  if (n > 0 && (size_t)n < cap && stat(path, &st) == 0) return true;
  n = snprintf(path, cap, "%s/%s.npy", dir, file);
  return n > 0 && (size_t)n < cap && stat(path, &st) == 0;
}

int hs_golden_inputs(const hs_backend *b, const hs_backend_model *model, const char *dir, hs_tensor *in,
                     size_t n_in, hs_error *err) {
  char path[HS_PATH_MAX];
  for (size_t i = 0; i < n_in; i++) {
    const char *name = b->input(model, i)->name;
    if (!hs_golden_find_file(dir, "inputs", name, path, sizeof path))
      return hs_error_set(err, HS_NOT_FOUND, "golden check: no input file for %s in %s", name, dir);
    int rc = hs_npy_read(path, &in[i], err);
    if (rc != HS_OK) return rc;
  }
  return HS_OK;
}

void hs_tensors_free_data(hs_tensor *in, size_t n) {
  for (size_t i = 0; in && i < n; i++) {
    free(in[i].data);
    in[i].data = NULL;
  }
}

void hs_warmup_inputs_free(hs_tensor *in, hs_wscratch *mem, size_t n) {
  for (size_t i = 0; in && i < n; i++) {
    if (mem[i].p) hs_wscratch_release(&mem[i]);
    else free(in[i].data); /* a .npy file's */
    in[i].data = NULL;
  }
}

int hs_warmup_run(const hs_backend *b, const hs_backend_model *model, hs_backend_session *const *sessions,
                  size_t n_sessions, const hs_model_config *cfg, const char *vdir, hs_error *err) {
  size_t n_in = b->num_inputs(model), n_out = b->num_outputs(model);
  hs_tensor *in = calloc(n_in ? n_in : 1, sizeof *in);
  hs_tensor *out = calloc(n_out ? n_out : 1, sizeof *out);
  hs_wscratch *mem = calloc(n_in ? n_in : 1, sizeof *mem);
  int rc = (in && out && mem) ? HS_OK : hs_error_set(err, HS_NO_MEMORY, "no memory for warm-up");
  if (rc == HS_OK) rc = hs_warmup_inputs(b, model, cfg, vdir, in, mem, n_in, err);
  /* Runs go round the sessions (for a backend whose sessions pay a first-run cost). Every run here
   * is CPU that the requests of the version still serving do not get (bench/reload). */
  size_t runs = cfg->warmup_runs > 0 ? (size_t)cfg->warmup_runs : 0;
  hs_engine_memory_budget_exempt(true); /* admission counted this memory; a busy server fails no load */
  for (size_t k = 0; rc == HS_OK && k < runs && n_sessions > 0; k++) {
    rc = b->run(sessions[k % n_sessions], in, n_in, out, n_out, err);
    hs_backend_session_idle(b, sessions[k % n_sessions]); /* the outputs are not read: the arena goes back */
  }
  hs_engine_memory_budget_exempt(false);
  hs_warmup_inputs_free(in, mem, in && mem ? n_in : 0);
  free(mem);
  free(in);
  free(out);
  return rc;
}

bool hs_golden_wanted(const hs_model_config *cfg, const char *vdir, char *golden_dir, size_t cap) {
  snprintf(golden_dir, cap, "%s/golden", vdir);
  struct stat st;
  return cfg->golden_check || (stat(golden_dir, &st) == 0 && S_ISDIR(st.st_mode));
}

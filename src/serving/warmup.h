/* warmup.h - the inputs a version runs on before it serves: warm-up tensors and golden-check files. */
#ifndef HS_SERVING_WARMUP_H
#define HS_SERVING_WARMUP_H

#include <stdbool.h>
#include <stddef.h>

#include "base/wblock.h"
#include "hotserve/backend.h"
#include "repo/repo.h"

/* Turns a tensor name (from the model file, so untrusted) into a file name that stays inside its
 * folder: every character outside [A-Za-z0-9._-] becomes '_', and a leading '.' too. */
void hs_input_file_name(const char *name, char *out, size_t cap);

/* Makes one warm-up tensor per input of model, as cfg->warmup_kind says: zeros or seeded random
 * data (dynamic dimensions become 1; at most 64 Mi elements each), or vdir/warmup/<input>.npy.
 * in[0..n_in) and mem[0..n_in) must be zeroed; on return (error or not) each in[i].data is owned
 * by the caller: free with hs_warmup_inputs_free. Zeros and random data lie in mem[i], a load's
 * scratch mapping (base/wblock.h), not on the heap: in the server it is the warm mapping the read's
 * ring has just released (the smallest warm one that fits), whose pages the load faulted already,
 * so the warm-up input adds nothing to the reload's peak, where calloc took 0.6 MiB of fresh heap
 * pages for MobileNetV2's 1x3x224x224 that stayed resident until the trim (bench/load, new head).
 * (Fresh anonymous pages would not do: this machine's kernel backs even pages only read with
 * memory of their own, not the shared zero page.) */
int hs_warmup_inputs(const hs_backend *b, const hs_backend_model *model, const hs_model_config *cfg,
                     const char *vdir, hs_tensor *in, hs_wscratch *mem, size_t n_in, hs_error *err);

/* Frees what hs_warmup_inputs made (n tensors): hands mem[i] back, frees a .npy file's data. */
void hs_warmup_inputs_free(hs_tensor *in, hs_wscratch *mem, size_t n);

/* The golden check's file for tensor name: dir/sub/<name>.npy if it exists, else dir/<name>.npy
 * (name through hs_input_file_name); false when neither exists or the path is too long. */
bool hs_golden_find_file(const char *dir, const char *sub, const char *name, char *path, size_t cap);

/* Reads the golden check's inputs: dir/inputs/<input>.npy, else dir/<input>.npy (names through
 * hs_input_file_name). HS_NOT_FOUND names an input without a file. Ownership as above. */
int hs_golden_inputs(const hs_backend *b, const hs_backend_model *model, const char *dir, hs_tensor *in,
                     size_t n_in, hs_error *err);

/* Frees every in[i].data (n tensors). */
void hs_tensors_free_data(hs_tensor *in, size_t n);

/* Runs cfg->warmup_runs warm-up runs on the version's sessions in turn (so runs = instances runs
 * each session once). Sessions come ready for the load-time shapes, so one run proves the version
 * computes. The first failure is returned. */
int hs_warmup_run(const hs_backend *b, const hs_backend_model *model, hs_backend_session *const *sessions,
                  size_t n_sessions, const hs_model_config *cfg, const char *vdir, hs_error *err);

/* Whether a version gets a golden check (config says so, or vdir/golden/ is a folder); fills
 * golden_dir with that folder's path either way. */
bool hs_golden_wanted(const hs_model_config *cfg, const char *vdir, char *golden_dir, size_t cap);

#endif

/* extensions.c - Triton's ModelConfig, ModelStatistics, RepositoryIndex and RepositoryModelLoad/Unload RPCs.
 *
 * Each answers from the same code as its HTTP route: http/triton.h for the index, load/unload and
 * statistics, the registry's configuration and serving version for ModelConfig. Status codes follow
 * the HTTP side: NOT_FOUND (HTTP 404) for an unknown model or a version that does not serve,
 * INVALID_ARGUMENT (400) for a failed load, a malformed request or a parameter hotserve does not
 * implement (every load/unload parameter: no configuration override, no files), UNAVAILABLE (503) when
 * a rescan cannot run, RESOURCE_EXHAUSTED when memory runs out.
 */
#include <grpc/status.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/service_internal.h"
#include "grpc_predict_v2.pb-c.h"
#include "http/triton.h"

/* Triton's DataType enum value of dt. */
static Inference__DataType data_type(hs_dtype dt) {
  const char *t = hs_triton_dtype(dt);
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(&inference__data_type__descriptor, t);
  return v ? (Inference__DataType)v->value : INFERENCE__DATA_TYPE__TYPE_INVALID;
}

/* Allocates n zeroed blocks of size bytes each and n message pointers, for a reply's repeated field (at
 * least one of each, so that an empty list allocates too). On failure answers RESOURCE_EXHAUSTED and
 * returns NULL; otherwise the caller frees the blocks and *ptrs. */
static void *alloc_list(size_t n, size_t size, void **ptrs, hs_grpc_reply *reply) {
  void *blocks = calloc(n ? n : 1, size);
  *ptrs = calloc(n ? n : 1, sizeof(void *));
  if (blocks && *ptrs) return blocks;
  free(blocks);
  free(*ptrs);
  *ptrs = NULL;
  hs__grpc_set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

/* Both repository RPCs carry a repository_name; hotserve serves one repository. */
static const char k_one_repository[] = "repository_name: hotserve serves one repository; leave it empty";

void hs__grpc_model_config(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  Inference__ModelConfigRequest *rq = hs__grpc_unpack(&inference__model_config_request__descriptor, msg, len, reply);
  if (!rq) return;
  int64_t ver;
  hs_model *m = hs__grpc_find_model(env, rq->name, rq->version, &ver, reply);
  hs_model_config *cfg = m ? malloc(sizeof *cfg) : NULL;
  hs_version *v = NULL;
  int arc = m ? hs_model_acquire(m, ver, &v) : HS_OK;
  if (m && ver >= 0 && arc != HS_OK) {
    char text[256];
    snprintf(text, sizeof text, "model %s has no version %" PRId64 " loaded", hs_model_name(m), ver);
    hs__grpc_set_error(reply, GRPC_STATUS_NOT_FOUND, text);
  } else if (m && !cfg) {
    hs__grpc_set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else if (m) {
    hs_model_config_get(m, cfg);
    bool have = arc == HS_OK;
    size_t ni = have ? hs_version_num_inputs(v) : cfg->n_inputs, no = have ? hs_version_num_outputs(v) : cfg->n_outputs;
    Inference__ModelInput *ins = calloc(ni + 1, sizeof *ins), **pin = calloc(ni + 1, sizeof *pin);
    Inference__ModelOutput *outs = calloc(no + 1, sizeof *outs), **pout = calloc(no + 1, sizeof *pout);
    int64_t(*dims)[HS_MAX_DIMS] = calloc(ni + no + 1, sizeof *dims);
    if (!ins || !pin || !outs || !pout || !dims) ni = no = 0; /* answered below */
    for (size_t i = 0; i < ni + no; i++) {
      const hs_io_desc *d = i < ni ? (have ? hs_version_input(v, i) : &cfg->inputs[i])
                                   : (have ? hs_version_output(v, i - ni) : &cfg->outputs[i - ni]);
      int skip = cfg->max_batch_size > 0 && d->ndim > 0 ? 1 : 0; /* batching: dims leave out the batch */
      for (int k = skip; k < d->ndim; k++) dims[i][k - skip] = d->dims[k] < 0 ? -1 : d->dims[k];
      if (i < ni) {
        inference__model_input__init(&ins[i]);
        ins[i].name = (char *)d->name, ins[i].data_type = data_type(d->dtype);
        ins[i].n_dims = (size_t)(d->ndim - skip), ins[i].dims = dims[i];
        pin[i] = &ins[i];
      } else {
        inference__model_output__init(&outs[i - ni]);
        outs[i - ni].name = (char *)d->name, outs[i - ni].data_type = data_type(d->dtype);
        outs[i - ni].n_dims = (size_t)(d->ndim - skip), outs[i - ni].dims = dims[i];
        pout[i - ni] = &outs[i - ni];
      }
    }
    Inference__ModelVersionPolicy policy = INFERENCE__MODEL_VERSION_POLICY__INIT;
    Inference__ModelVersionPolicy__Latest latest = INFERENCE__MODEL_VERSION_POLICY__LATEST__INIT;
    Inference__ModelVersionPolicy__All all = INFERENCE__MODEL_VERSION_POLICY__ALL__INIT;
    Inference__ModelVersionPolicy__Specific specific = INFERENCE__MODEL_VERSION_POLICY__SPECIFIC__INIT;
    if (cfg->policy == HS_POLICY_ALL) {
      policy.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_ALL, policy.all = &all;
    } else if (cfg->policy == HS_POLICY_SPECIFIC) {
      specific.n_versions = cfg->n_specific, specific.versions = cfg->specific;
      policy.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_SPECIFIC, policy.specific = &specific;
    } else {
      latest.num_versions = (uint32_t)cfg->latest_n;
      policy.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST, policy.latest = &latest;
    }
    Inference__ModelInstanceGroup group = INFERENCE__MODEL_INSTANCE_GROUP__INIT, *pgroup = &group;
    group.kind = INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU;
    group.count = cfg->instances; /* 0: the server's --instances */
    Inference__ModelConfig mc = INFERENCE__MODEL_CONFIG__INIT;
    mc.name = (char *)hs_model_name(m);
    mc.platform = "onnx";
    mc.backend = cfg->backend;
    mc.version_policy = &policy;
    mc.max_batch_size = cfg->max_batch_size; /* 0: no batching, dims are the model's whole shapes */
    mc.n_input = ni, mc.input = pin;
    mc.n_output = no, mc.output = pout;
    mc.n_instance_group = 1, mc.instance_group = &pgroup;
    Inference__ModelConfigResponse out = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    out.config = &mc;
    if (ins && pin && outs && pout && dims) hs__grpc_set_message(reply, &out.base);
    else hs__grpc_set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    free(ins), free(pin), free(outs), free(pout), free(dims);
  }
  hs_version_release(v);
  free(cfg);
  inference__model_config_request__free_unpacked(rq, NULL);
}

void hs__grpc_model_statistics(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  Inference__ModelStatisticsRequest *rq = hs__grpc_unpack(&inference__model_statistics_request__descriptor, msg, len, reply);
  if (!rq) return;
  int64_t ver = -1;
  hs_model *m = NULL;
  bool ok = true;
  if (rq->name && *rq->name) {
    m = hs__grpc_find_model(env, rq->name, rq->version, &ver, reply);
    ok = m != NULL;
  } else if (rq->version && *rq->version) {
    hs__grpc_set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "a version needs a model name");
    ok = false;
  }
  hs_stats_entry *e = NULL;
  size_t n = 0;
  hs_error err;
  hs_error_clear(&err);
  int rc = ok ? hs_triton_stats(env->reg, m, ver, &e, &n, &err) : HS_OK;
  if (ok && rc != HS_OK) {
    hs__grpc_set_error(reply, rc == HS_NOT_FOUND ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_RESOURCE_EXHAUSTED,
                       err.message);
  } else if (ok) {
    /* one block of messages per entry: statistics, its 8 durations, and the version text */
    typedef struct {
      Inference__ModelStatistics ms;
      Inference__InferStatistics is;
      Inference__StatisticDuration d[8];
      char version[24];
    } one;
    void *ptrs;
    one *b = alloc_list(n, sizeof *b, &ptrs, reply);
    Inference__ModelStatistics **list = ptrs;
    if (b) {
      for (size_t i = 0; i < n; i++) {
        one *o = &b[i];
        inference__model_statistics__init(&o->ms);
        inference__infer_statistics__init(&o->is);
        const hs_stat_duration src[8] = {e[i].success, e[i].fail, e[i].queue, e[i].compute_input,
                                         e[i].compute_infer, e[i].compute_output, {0, 0}, {0, 0}};
        Inference__StatisticDuration **dst[8] = {&o->is.success, &o->is.fail, &o->is.queue, &o->is.compute_input,
                                                 &o->is.compute_infer, &o->is.compute_output, &o->is.cache_hit,
                                                 &o->is.cache_miss};
        for (int k = 0; k < 8; k++) {
          inference__statistic_duration__init(&o->d[k]);
          o->d[k].count = src[k].count, o->d[k].ns = src[k].ns;
          *dst[k] = &o->d[k];
        }
        snprintf(o->version, sizeof o->version, "%" PRId64, e[i].version);
        o->ms.name = e[i].name, o->ms.version = o->version;
        o->ms.last_inference = e[i].last_inference_ms;
        o->ms.inference_count = e[i].inference_count, o->ms.execution_count = e[i].execution_count;
        o->ms.inference_stats = &o->is;
        list[i] = &o->ms;
      }
      Inference__ModelStatisticsResponse out = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
      out.n_model_stats = n, out.model_stats = list;
      hs__grpc_set_message(reply, &out.base);
    }
    free(b);
    free(list);
  }
  free(e);
  inference__model_statistics_request__free_unpacked(rq, NULL);
}

void hs__grpc_repository_index(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  Inference__RepositoryIndexRequest *rq = hs__grpc_unpack(&inference__repository_index_request__descriptor, msg, len, reply);
  if (!rq) return;
  hs_index_entry *e = NULL;
  size_t n = 0;
  hs_error err;
  hs_error_clear(&err);
  if (rq->repository_name && *rq->repository_name) {
    hs__grpc_set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, k_one_repository);
  } else {
    int rc = hs_triton_index(env->reg, rq->ready != 0, &e, &n, &err);
    if (rc != HS_OK) {
      hs__grpc_set_error(reply, rc == HS_NO_MEMORY ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE,
                         err.message);
    } else {
      typedef struct {
        Inference__RepositoryIndexResponse__ModelIndex mi;
        char version[24];
      } one;
      void *ptrs;
      one *b = alloc_list(n, sizeof *b, &ptrs, reply);
      Inference__RepositoryIndexResponse__ModelIndex **list = ptrs;
      if (b) {
        for (size_t i = 0; i < n; i++) {
          inference__repository_index_response__model_index__init(&b[i].mi);
          if (e[i].version >= 0) snprintf(b[i].version, sizeof b[i].version, "%" PRId64, e[i].version);
          b[i].mi.name = e[i].name, b[i].mi.version = b[i].version;
          b[i].mi.state = (char *)e[i].state, b[i].mi.reason = e[i].reason;
          list[i] = &b[i].mi;
        }
        Inference__RepositoryIndexResponse out = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
        out.n_models = n, out.models = list;
        hs__grpc_set_message(reply, &out.base);
      }
      free(b);
      free(list);
    }
  }
  free(e);
  inference__repository_index_request__free_unpacked(rq, NULL);
}

/* RepositoryModelLoad and RepositoryModelUnload have the same fields; both refuse every parameter. */
void hs__grpc_repository_load(const hs_grpc_env *env, const uint8_t *msg, size_t len, bool unload,
                              hs_grpc_reply *reply) {
  ProtobufCMessage *rq = hs__grpc_unpack(unload ? &inference__repository_model_unload_request__descriptor
                                                : &inference__repository_model_load_request__descriptor,
                                         msg, len, reply);
  if (!rq) return;
  const char *name, *repo, *param = NULL;
  if (unload) {
    const Inference__RepositoryModelUnloadRequest *uq = (const Inference__RepositoryModelUnloadRequest *)rq;
    name = uq->model_name, repo = uq->repository_name;
    if (uq->n_parameters) param = uq->parameters[0]->key;
  } else {
    const Inference__RepositoryModelLoadRequest *lq = (const Inference__RepositoryModelLoadRequest *)rq;
    name = lq->model_name, repo = lq->repository_name;
    if (lq->n_parameters) param = lq->parameters[0]->key;
  }
  const char *verb = unload ? "unload" : "load";
  char text[512];
  if (param) {
    snprintf(text, sizeof text, "%s: parameter \"%.128s\" is not supported (%s)", verb, param,
             hs_triton_param_refusal(param));
    hs__grpc_set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, text);
  } else if (repo && *repo) {
    hs__grpc_set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, k_one_repository);
  } else {
    hs_error err;
    hs_error_clear(&err);
    int rc = hs_triton_load(env->reg, name ? name : "", unload, &err);
    if (rc == HS_OK) {
      Inference__RepositoryModelLoadResponse lo = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
      Inference__RepositoryModelUnloadResponse uo = INFERENCE__REPOSITORY_MODEL_UNLOAD_RESPONSE__INIT;
      hs__grpc_set_message(reply, unload ? &uo.base : &lo.base);
    } else {
      int code = rc == HS_NOT_FOUND                ? GRPC_STATUS_NOT_FOUND
                 : rc == HS_UNAVAILABLE && !unload ? GRPC_STATUS_INVALID_ARGUMENT /* a failed load: HTTP's 400 */
                 : rc == HS_UNAVAILABLE            ? GRPC_STATUS_UNAVAILABLE
                                                   : GRPC_STATUS_INTERNAL;
      hs__grpc_set_error(reply, code, err.message);
    }
  }
  protobuf_c_message_free_unpacked(rq, NULL);
}

/* service.c - inference.GRPCInferenceService: health, metadata and ModelInfer over the shared registry.
 *
 * DESIGN
 * Messages are the protobuf-c code generated from proto/grpc_predict_v2.proto at build time; this file
 * never touches wire bytes itself. Every RPC works on the same registry as the HTTP routes
 * (http/handlers.c), and ModelInfer runs through the same entry point, hs_serving_infer (serving/infer.h):
 * version choice (the highest serving one, or the one pinned by model_version), input checks, compute
 * slot and session, run, outputs copied out, and the request's metrics and trace line, so /metrics and
 * --trace count both protocols (gRPC's share is hotserve_grpc_requests_total).
 *
 * ModelInfer tensors come either typed (InferInputTensor.contents, the repeated field of the datatype)
 * or raw (raw_input_contents, one entry per input); raw bytes are used in place when aligned. Replies
 * use raw_output_contents when the request sent raw inputs (or no inputs), typed contents otherwise;
 * the request parameter binary_data_output (bool) chooses explicitly, and an FP16 output (which has no
 * typed field) makes the whole reply raw, as the protocol allows only one form per reply.
 * Parameters hotserve does not implement are refused with INVALID_ARGUMENT naming them, so a client
 * never gets an ordinary answer to a question it did not ask.
 *
 * Status codes: NOT_FOUND unknown model or a version that is not loaded; INVALID_ARGUMENT malformed
 * messages, bad tensors and unknown parameters; RESOURCE_EXHAUSTED requests beyond the limits;
 * UNAVAILABLE while the model has no version serving; INTERNAL a failed run; UNIMPLEMENTED any other
 * method. Triton's ModelConfig, ModelStatistics and repository RPCs are in extensions.c.
 */
#include "grpc/service.h"
#include "grpc/service_internal.h"

#include <grpc/status.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/digest.h"
#include "serving/infer.h"
#include "grpc_predict_v2.pb-c.h"

#define HS_SERVER_NAME "hotserve"
#define HS_SERVER_VERSION "0.1.0"

static void set_error(hs_grpc_reply *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(hs_grpc_reply *r, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->message, sizeof r->message, fmt, ap);
  va_end(ap);
  r->code = code;
  free(r->body);
  r->body = NULL;
  r->len = 0;
}

/* Serializes msg into reply (OK), or INTERNAL when memory runs out. */
static void set_message(hs_grpc_reply *r, const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    set_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %zu-byte reply", n);
    return;
  }
  r->len = protobuf_c_message_pack(msg, buf);
  r->body = buf;
  r->code = GRPC_STATUS_OK;
  r->message[0] = 0;
}

void hs__grpc_set_error(hs_grpc_reply *r, int code, const char *msg) { set_error(r, code, "%s", msg); }
void hs__grpc_set_message(hs_grpc_reply *r, const ProtobufCMessage *msg) { set_message(r, msg); }

void *hs__grpc_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  ProtobufCMessage *rq = protobuf_c_message_unpack(d, NULL, len, msg);
  if (!rq) set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s", d->short_name);
  return rq;
}

/* A version field: "" means any (-1); otherwise a positive decimal integer without leading zeros. Returns
 * -2 when malformed. */
static int64_t parse_version(const char *s) {
  if (!s || !*s) return -1;
  if (*s == '0' || strlen(s) > 18) return -2;
  for (const char *p = s; *p; p++)
    if (*p < '0' || *p > '9') return -2;
  return strtoll(s, NULL, 10);
}

/* Looks up name/version for the read-only RPCs. On failure fills reply and returns NULL. */
hs_model *hs__grpc_find_model(const hs_grpc_env *env, const char *name, const char *version, int64_t *ver,
                            hs_grpc_reply *reply) {
  hs_model *m = hs_registry_find(env->reg, name ? name : "");
  if (!m) {
    set_error(reply, GRPC_STATUS_NOT_FOUND, "unknown model %s", name ? name : "");
    return NULL;
  }
  *ver = parse_version(version);
  if (*ver == -2) {
    set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "model %s: version \"%.40s\" is not a positive integer", name,
              version);
    return NULL;
  }
  return m;
}

/* ---- health and metadata ---- */

static void server_live(hs_grpc_reply *reply) {
  Inference__ServerLiveResponse out = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
  out.live = 1;
  set_message(reply, &out.base);
}

/* Ready exactly when GET /v2/health/ready answers 200 (hs_registry_ready: start-up loads done, what
 * was served still is, not in the lame-duck period; --strict-readiness for Triton's meaning). */
static void server_ready(const hs_grpc_env *env, hs_grpc_reply *reply) {
  Inference__ServerReadyResponse out = INFERENCE__SERVER_READY_RESPONSE__INIT;
  char why[256];
  out.ready = hs_registry_ready(env->reg, why, sizeof why); /* the same answer as GET /v2/health/ready */
  set_message(reply, &out.base);
}

static void server_metadata(hs_grpc_reply *reply) {
  static char *ext[] = {"binary_tensor_data", "model_repository", "statistics", "model_configuration", "hotserve_status"};
  Inference__ServerMetadataResponse out = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
  out.name = HS_SERVER_NAME;
  out.version = HS_SERVER_VERSION;
  out.n_extensions = sizeof ext / sizeof ext[0];
  out.extensions = ext;
  set_message(reply, &out.base);
}

static void model_ready(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  Inference__ModelReadyRequest *rq = hs__grpc_unpack(&inference__model_ready_request__descriptor, msg, len, reply);
  if (!rq) return;
  int64_t ver;
  hs_model *m = hs__grpc_find_model(env, rq->name, rq->version, &ver, reply);
  if (m) {
    hs_version *v = NULL;
    Inference__ModelReadyResponse out = INFERENCE__MODEL_READY_RESPONSE__INIT;
    out.ready = hs_model_acquire(m, ver, &v) == HS_OK;
    hs_version_release(v);
    set_message(reply, &out.base);
  }
  inference__model_ready_request__free_unpacked(rq, NULL);
}

/* Fills one TensorMetadata from d; shape points into dims (caller-owned, d->ndim entries). */
static void tensor_meta(Inference__ModelMetadataResponse__TensorMetadata *t, const hs_io_desc *d, int64_t *dims) {
  inference__model_metadata_response__tensor_metadata__init(t);
  t->name = (char *)d->name;
  const char *dt = hs_dtype_kserve_name(d->dtype);
  t->datatype = (char *)(dt ? dt : "BYTES");
  for (int k = 0; k < d->ndim; k++) dims[k] = d->dims[k] < 0 ? -1 : d->dims[k];
  t->n_shape = (size_t)d->ndim;
  t->shape = dims;
}

static void model_metadata(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  Inference__ModelMetadataRequest *rq = hs__grpc_unpack(&inference__model_metadata_request__descriptor, msg, len, reply);
  if (!rq) return;
  int64_t ver;
  hs_model *m = hs__grpc_find_model(env, rq->name, rq->version, &ver, reply);
  hs_version *v = NULL;
  int rc = m ? hs_model_acquire(m, ver, &v) : HS_NOT_FOUND;
  if (m && rc == HS_NOT_FOUND) {
    set_error(reply, GRPC_STATUS_NOT_FOUND, "model %s has no version %" PRId64 " loaded", rq->name, ver);
  } else if (m && rc != HS_OK) {
    set_error(reply, GRPC_STATUS_UNAVAILABLE, "model %s has no version ready", rq->name);
  } else if (m) {
    hs_model_status *st = malloc(sizeof *st);
    size_t n_in = hs_version_num_inputs(v), n_out = hs_version_num_outputs(v), n_io = n_in + n_out;
    Inference__ModelMetadataResponse__TensorMetadata *tm = calloc(n_io ? n_io : 1, sizeof *tm);
    Inference__ModelMetadataResponse__TensorMetadata **ptr = calloc(n_io ? n_io : 1, sizeof *ptr);
    int64_t(*dims)[HS_MAX_DIMS] = calloc(n_io ? n_io : 1, sizeof *dims);
    char(*vers)[24] = calloc(HS_STATUS_HISTORY, sizeof *vers);
    char *vptr[HS_STATUS_HISTORY];
    if (!st || !tm || !ptr || !dims || !vers) {
      set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
      Inference__ModelMetadataResponse out = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
      out.name = rq->name;
      out.platform = "onnx";
      if (ver >= 0) {
        snprintf(vers[0], sizeof vers[0], "%" PRId64, ver);
        vptr[out.n_versions++] = vers[0];
      } else {
        hs_model_status_get(m, st);
        for (size_t i = 0; i < st->n && out.n_versions < HS_STATUS_HISTORY; i++)
          if (st->history[i].serving) {
            snprintf(vers[out.n_versions], sizeof vers[0], "%" PRId64, st->history[i].version);
            vptr[out.n_versions] = vers[out.n_versions];
            out.n_versions++;
          }
      }
      out.versions = vptr;
      for (size_t i = 0; i < n_io; i++) {
        tensor_meta(&tm[i], i < n_in ? hs_version_input(v, i) : hs_version_output(v, i - n_in), dims[i]);
        ptr[i] = &tm[i];
      }
      out.n_inputs = n_in;
      out.inputs = ptr;
      out.n_outputs = n_out;
      out.outputs = ptr + n_in;
      set_message(reply, &out.base);
    }
    free(st), free(tm), free(ptr), free(dims), free(vers);
  }
  hs_version_release(v);
  inference__model_metadata_request__free_unpacked(rq, NULL);
}

/* ---- ModelInfer: decoding ---- */

/* Refuses a parameter hotserve does not implement. The one it does: binary_data_output (a bool) on the
 * request (where == NULL); inputs and requested outputs take none. Returns 0 or -1 with reply filled. */
static int check_param(const char *key, const Inference__InferParameter *value, const char *where,
                       hs_grpc_reply *reply) {
  key = key ? key : "";
  if (!where && strcmp(key, "binary_data_output") == 0 && value &&
      value->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM)
    return 0;
  set_error(reply, GRPC_STATUS_INVALID_ARGUMENT,
            "parameter \"%.64s\"%s%.128s is not supported by hotserve (supported: binary_data_output, a bool on "
            "the request)",
            key, where ? " of " : "", where ? where : "");
  return -1;
}

/* The element count one typed-contents field holds, for the "wrong field" check. */
static size_t contents_total(const Inference__InferTensorContents *c) {
  return c->n_bool_contents + c->n_int_contents + c->n_int64_contents + c->n_uint_contents +
         c->n_uint64_contents + c->n_fp32_contents + c->n_fp64_contents + c->n_bytes_contents;
}

/* Converts typed contents of datatype dt and n elements into a new buffer *out (n * element size bytes, the
 * caller frees it), after checking that the datatype's field holds exactly n elements and no other field any. */
static int typed_to_raw(const Inference__InferTensorContents *c, hs_dtype dt, int64_t n, void **out,
                        const char *name, hs_grpc_reply *reply) {
  size_t have = 0;
  const char *field = "";
  switch (dt) {
    case HS_DT_BOOL: have = c->n_bool_contents, field = "bool_contents"; break;
    case HS_DT_INT8: case HS_DT_INT16: case HS_DT_INT32: have = c->n_int_contents, field = "int_contents"; break;
    case HS_DT_INT64: have = c->n_int64_contents, field = "int64_contents"; break;
    case HS_DT_UINT8: case HS_DT_UINT16: case HS_DT_UINT32: have = c->n_uint_contents, field = "uint_contents"; break;
    case HS_DT_UINT64: have = c->n_uint64_contents, field = "uint64_contents"; break;
    case HS_DT_FLOAT32: have = c->n_fp32_contents, field = "fp32_contents"; break;
    case HS_DT_FLOAT64: have = c->n_fp64_contents, field = "fp64_contents"; break;
    default:
      set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %s: datatype %s has no typed contents field; send it in "
                "raw_input_contents", name, hs_dtype_kserve_name(dt));
      return -1;
  }
  if (have != (size_t)n || contents_total(c) != have) {
    set_error(reply, GRPC_STATUS_INVALID_ARGUMENT,
              "input %s: shape holds %" PRId64 " elements, %s has %zu (and other content fields %zu)", name, n,
              field, have, contents_total(c) - have);
    return -1;
  }
  unsigned char *buf = malloc(n ? (size_t)n * hs_dtype_size(dt) : 1);
  if (!buf) {
    set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for input %s", name);
    return -1;
  }
  *out = buf;
  for (int64_t i = 0; i < n; i++) {
    long long s = 0;
    unsigned long long u = 0;
    bool out_of_range = false;
    switch (dt) {
      case HS_DT_BOOL: ((uint8_t *)buf)[i] = c->bool_contents[i] ? 1 : 0; break;
      case HS_DT_INT8:
        s = c->int_contents[i], out_of_range = s < INT8_MIN || s > INT8_MAX, ((int8_t *)buf)[i] = (int8_t)s;
        break;
      case HS_DT_INT16:
        s = c->int_contents[i], out_of_range = s < INT16_MIN || s > INT16_MAX, ((int16_t *)buf)[i] = (int16_t)s;
        break;
      case HS_DT_INT32: ((int32_t *)buf)[i] = c->int_contents[i]; break;
      case HS_DT_INT64: ((int64_t *)buf)[i] = c->int64_contents[i]; break;
      case HS_DT_UINT8: u = c->uint_contents[i], out_of_range = u > UINT8_MAX, ((uint8_t *)buf)[i] = (uint8_t)u; break;
      case HS_DT_UINT16:
        u = c->uint_contents[i], out_of_range = u > UINT16_MAX, ((uint16_t *)buf)[i] = (uint16_t)u;
        break;
      case HS_DT_UINT32: ((uint32_t *)buf)[i] = c->uint_contents[i]; break;
      case HS_DT_UINT64: ((uint64_t *)buf)[i] = c->uint64_contents[i]; break;
      case HS_DT_FLOAT32: ((float *)buf)[i] = c->fp32_contents[i]; break;
      case HS_DT_FLOAT64: ((double *)buf)[i] = c->fp64_contents[i]; break;
      default: break;
    }
    if (out_of_range) {
      set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %s: element %" PRId64 " is out of range for %s", name, i,
                hs_dtype_kserve_name(dt));
      return -1;
    }
  }
  return 0;
}

/* Decodes rq's inputs into ins (n = rq->n_inputs entries, zeroed by the caller). Owned buffers are marked
 * owned; views point into rq. Returns 0, or -1 with reply filled. */
static int decode_inputs(const hs_grpc_env *env, const Inference__ModelInferRequest *rq, hs_infer_input *ins,
                         hs_grpc_reply *reply) {
  const hs_codec_limits *lim = &env->limits;
  bool raw = rq->n_raw_input_contents > 0;
  if (raw && rq->n_raw_input_contents != rq->n_inputs) {
    set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "raw_input_contents has %zu entries for %zu inputs",
              rq->n_raw_input_contents, rq->n_inputs);
    return -1;
  }
  for (size_t k = 0; k < rq->n_inputs; k++) {
    const Inference__ModelInferRequest__InferInputTensor *in = rq->inputs[k];
    const char *name = in->name ? in->name : "";
    if (!*name || strlen(name) >= sizeof ins[k].name) {
      set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %zu: name is empty or longer than %zu bytes", k,
                sizeof ins[k].name - 1);
      return -1;
    }
    for (size_t j = 0; j < k; j++)
      if (strcmp(ins[j].name, name) == 0) {
        set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %s is given twice", name);
        return -1;
      }
    snprintf(ins[k].name, sizeof ins[k].name, "%s", name);
    for (size_t p = 0; p < in->n_parameters; p++)
      if (check_param(in->parameters[p]->key, in->parameters[p]->value, name, reply)) return -1;
    hs_tensor *t = &ins[k].t;
    t->dtype = hs_dtype_from_kserve(in->datatype ? in->datatype : "");
    if (t->dtype == HS_DT_UNDEFINED) {
      set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %s: unknown or unsupported datatype \"%.32s\"", name,
                in->datatype ? in->datatype : "");
      return -1;
    }
    if (in->n_shape > HS_MAX_DIMS) {
      set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %s: %zu dimensions, at most %d", name, in->n_shape,
                HS_MAX_DIMS);
      return -1;
    }
    t->ndim = (int)in->n_shape;
    for (size_t d = 0; d < in->n_shape; d++) t->dims[d] = in->shape[d];
    int64_t numel = hs_shape_numel(t->dims, t->ndim);
    if (numel < 0) {
      set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "input %s: shape has a negative dimension or overflows", name);
      return -1;
    }
    size_t esize = hs_dtype_size(t->dtype);
    if (numel > lim->max_elements || (uint64_t)numel > lim->max_tensor_bytes / esize) {
      set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED,
                "input %s: %" PRId64 " elements exceed the limit (%" PRId64 " elements, %zu bytes per tensor)", name,
                numel, lim->max_elements, lim->max_tensor_bytes);
      return -1;
    }
    t->nbytes = (size_t)numel * esize;
    if (raw) {
      if (in->contents && contents_total(in->contents) > 0) {
        set_error(reply, GRPC_STATUS_INVALID_ARGUMENT,
                  "input %s has typed contents while the request uses raw_input_contents (use one or the other)",
                  name);
        return -1;
      }
      const ProtobufCBinaryData *b = &rq->raw_input_contents[k];
      if (b->len != t->nbytes) {
        set_error(reply, GRPC_STATUS_INVALID_ARGUMENT,
                  "input %s: raw_input_contents[%zu] has %zu bytes, shape and datatype %s need %zu", name, k, b->len,
                  hs_dtype_kserve_name(t->dtype), t->nbytes);
        return -1;
      }
      if (t->nbytes == 0 || ((uintptr_t)b->data % esize) == 0) {
        t->data = b->data;
        continue;
      }
      if (!(t->data = malloc(t->nbytes))) goto oom;
      ins[k].owned = true;
      memcpy(t->data, b->data, t->nbytes);
    } else {
      static const Inference__InferTensorContents empty = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
      int rc = typed_to_raw(in->contents ? in->contents : &empty, t->dtype, numel, &t->data, name, reply);
      ins[k].owned = t->data != NULL;
      if (rc) return -1;
    }
  }
  return 0;
oom:
  set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the inputs");
  return -1;
}

/* ---- ModelInfer: encoding ---- */

/* Per-output storage of a reply, freed together. */
typedef struct out_store {
  Inference__ModelInferResponse__InferOutputTensor tensor;
  Inference__InferTensorContents contents;
  int64_t dims[HS_MAX_DIMS];
  void *typed; /* the typed contents array, malloc'd */
} out_store;

/* Fills c with a copy of t's elements in the typed field of its datatype. */
static int to_typed(const hs_tensor *t, Inference__InferTensorContents *c, void **typed) {
  size_t n = t->nbytes / (hs_dtype_size(t->dtype) ? hs_dtype_size(t->dtype) : 1);
  size_t es = 0;
  switch (t->dtype) {
    case HS_DT_BOOL: es = sizeof(protobuf_c_boolean); break;
    case HS_DT_INT8: case HS_DT_INT16: case HS_DT_INT32: case HS_DT_UINT8: case HS_DT_UINT16: case HS_DT_UINT32:
    case HS_DT_FLOAT32: es = 4; break;
    case HS_DT_INT64: case HS_DT_UINT64: case HS_DT_FLOAT64: es = 8; break;
    default: return -1;
  }
  void *a = malloc(n ? n * es : 1);
  if (!a) return -1;
  *typed = a;
  for (size_t i = 0; i < n; i++) {
    const void *p = (const char *)t->data + i * hs_dtype_size(t->dtype);
    switch (t->dtype) {
      case HS_DT_BOOL: ((protobuf_c_boolean *)a)[i] = *(const uint8_t *)p != 0; break;
      case HS_DT_INT8: ((int32_t *)a)[i] = *(const int8_t *)p; break;
      case HS_DT_INT16: { int16_t x; memcpy(&x, p, 2); ((int32_t *)a)[i] = x; break; }
      case HS_DT_UINT8: ((uint32_t *)a)[i] = *(const uint8_t *)p; break;
      case HS_DT_UINT16: { uint16_t x; memcpy(&x, p, 2); ((uint32_t *)a)[i] = x; break; }
      default: memcpy((char *)a + i * es, p, es); break; /* same width: INT32, UINT32, FP32, 64-bit types */
    }
  }
  switch (t->dtype) {
    case HS_DT_BOOL: c->n_bool_contents = n, c->bool_contents = a; break;
    case HS_DT_INT8: case HS_DT_INT16: case HS_DT_INT32: c->n_int_contents = n, c->int_contents = a; break;
    case HS_DT_UINT8: case HS_DT_UINT16: case HS_DT_UINT32: c->n_uint_contents = n, c->uint_contents = a; break;
    case HS_DT_INT64: c->n_int64_contents = n, c->int64_contents = a; break;
    case HS_DT_UINT64: c->n_uint64_contents = n, c->uint64_contents = a; break;
    case HS_DT_FLOAT32: c->n_fp32_contents = n, c->fp32_contents = a; break;
    case HS_DT_FLOAT64: c->n_fp64_contents = n, c->fp64_contents = a; break;
    default: break;
  }
  return 0;
}

/* Serializes the reply for the selected outputs (sel[k] indexes outs). */
static void encode_reply(const Inference__ModelInferRequest *rq, const char *model, int64_t version,
                         const hs_tensor *outs, const char *const *names, const size_t *sel, size_t n_sel,
                         bool raw, hs_grpc_reply *reply) {
  out_store *st = calloc(n_sel ? n_sel : 1, sizeof *st);
  Inference__ModelInferResponse__InferOutputTensor **tp = calloc(n_sel ? n_sel : 1, sizeof *tp);
  ProtobufCBinaryData *rawv = calloc(n_sel ? n_sel : 1, sizeof *rawv);
  char vbuf[24];
  snprintf(vbuf, sizeof vbuf, "%" PRId64, version);
  bool ok = st && tp && rawv;
  for (size_t k = 0; ok && k < n_sel; k++) {
    const hs_tensor *t = &outs[sel[k]];
    out_store *o = &st[k];
    inference__model_infer_response__infer_output_tensor__init(&o->tensor);
    o->tensor.name = (char *)names[sel[k]];
    const char *dt = hs_dtype_kserve_name(t->dtype);
    o->tensor.datatype = (char *)(dt ? dt : "");
    for (int d = 0; d < t->ndim; d++) o->dims[d] = t->dims[d];
    o->tensor.n_shape = (size_t)t->ndim;
    o->tensor.shape = o->dims;
    if (raw) {
      rawv[k].len = t->nbytes;
      rawv[k].data = t->data;
    } else {
      inference__infer_tensor_contents__init(&o->contents);
      if (to_typed(t, &o->contents, &o->typed)) ok = false;
      o->tensor.contents = &o->contents;
    }
    tp[k] = &o->tensor;
  }
  if (ok) {
    Inference__ModelInferResponse out = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    out.model_name = (char *)model;
    out.model_version = vbuf;
    out.id = rq->id;
    out.n_outputs = n_sel;
    out.outputs = tp;
    if (raw) {
      out.n_raw_output_contents = n_sel;
      out.raw_output_contents = rawv;
    }
    set_message(reply, &out.base);
  } else {
    set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory encoding the reply");
  }
  for (size_t k = 0; st && k < n_sel; k++) free(st[k].typed);
  free(st), free(tp), free(rawv);
}

static hs_outcome outcome_of(int code) {
  if (code == GRPC_STATUS_OK) return HS_OUTCOME_SUCCESS;
  if (code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_INTERNAL) return HS_OUTCOME_SERVER_ERROR;
  return HS_OUTCOME_CLIENT_ERROR;
}

static bool request_params_ok(const Inference__ModelInferRequest *rq, hs_grpc_reply *reply) {
  for (size_t p = 0; p < rq->n_parameters; p++)
    if (check_param(rq->parameters[p]->key, rq->parameters[p]->value, NULL, reply)) return false;
  return true;
}

/* The request's binary_data_output parameter: 1 true, 0 false, -1 absent. */
static int binary_param(const Inference__ModelInferRequest *rq) {
  for (size_t i = 0; i < rq->n_parameters; i++)
    if (strcmp(rq->parameters[i]->key, "binary_data_output") == 0) return rq->parameters[i]->value->bool_param != 0;
  return -1;
}

/* The gRPC status of a serving error (see hs_serving_infer). */
static grpc_status_code infer_grpc_status(int rc) {
  switch (rc) {
    case HS_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case HS_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    case HS_INVALID_ARGUMENT: return GRPC_STATUS_INVALID_ARGUMENT;
    case HS_NO_MEMORY: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case HS_LIMIT: return GRPC_STATUS_RESOURCE_EXHAUSTED; /* too large, or over --max-request-memory */
    case HS_OVERLOADED: return GRPC_STATUS_RESOURCE_EXHAUSTED; /* over --max-total-request-memory: retry */
    default: return GRPC_STATUS_INTERNAL;
  }
}

/* Checks the requested outputs' parameters and collects their names (borrowed from rq). Returns 0, or
 * -1 with reply's error set. */
static int requested_outputs(const Inference__ModelInferRequest *rq, const char **names, hs_grpc_reply *reply) {
  for (size_t k = 0; k < rq->n_outputs; k++) {
    const Inference__ModelInferRequest__InferRequestedOutputTensor *o = rq->outputs[k];
    for (size_t p = 0; p < o->n_parameters; p++)
      if (check_param(o->parameters[p]->key, o->parameters[p]->value, o->name, reply)) return -1;
    names[k] = o->name;
  }
  return 0;
}

/* ModelInfer: decode, run through serving's one entry point (hs_serving_infer: version choice,
 * slots, sessions, accounting, shared with HTTP), encode. */
static void model_infer(const hs_grpc_env *env, const uint8_t *msg, size_t len, hs_grpc_reply *reply) {
  uint64_t t0 = hs_now_ns();
  Inference__ModelInferRequest *rq = hs__grpc_unpack(&inference__model_infer_request__descriptor, msg, len, reply);
  if (!rq) return;
  hs_model *m = hs_registry_find(env->reg, rq->model_name);
  if (!m) {
    set_error(reply, GRPC_STATUS_NOT_FOUND, "unknown model %.200s", rq->model_name);
    inference__model_infer_request__free_unpacked(rq, NULL);
    return;
  }
  size_t n_in = rq->n_inputs, n_req = rq->n_outputs;
  hs_infer_input *ins = calloc(n_in ? n_in : 1, sizeof *ins);
  hs_named_tensor *named = calloc(n_in ? n_in : 1, sizeof *named);
  const char **req_names = calloc(n_req ? n_req : 1, sizeof *req_names);
  int64_t version = parse_version(rq->model_version);
  bool decoded = false;
  if (!ins || !named || !req_names) {
    set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else if (version == -2) {
    set_error(reply, GRPC_STATUS_INVALID_ARGUMENT, "model %s: model_version \"%.40s\" is not a positive integer",
              rq->model_name, rq->model_version);
  } else if (n_in > env->limits.max_inputs || n_req > env->limits.max_inputs) {
    set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "%zu inputs and %zu outputs: at most %zu of each", n_in, n_req,
              env->limits.max_inputs);
  } else if (request_params_ok(rq, reply) && requested_outputs(rq, req_names, reply) == 0 &&
             decode_inputs(env, rq, ins, reply) == 0) {
    decoded = true;
  }
  if (!decoded) {
    hs_serving_count_refused(m, outcome_of(reply->code), t0);
  } else {
    for (size_t k = 0; k < n_in; k++) named[k] = (hs_named_tensor){.name = ins[k].name, .t = ins[k].t};
    hs_infer_inputs in = {.inputs = named, .n_inputs = n_in, .outputs = n_req ? req_names : NULL,
                          .n_outputs = n_req, .arrival_ns = t0};
    hs_infer_result res;
    hs_error err;
    hs_error_clear(&err);
    int rc = hs_serving_infer(m, version, &in, &res, &err);
    if (rc != HS_OK) {
      set_error(reply, infer_grpc_status(rc), "%s", err.message);
      reply->rejected = rc == HS_OVERLOADED;
    } else {
      size_t *sel = calloc(res.n_outputs ? res.n_outputs : 1, sizeof *sel);
      if (!sel) {
        set_error(reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      } else {
        int bin = binary_param(rq);
        bool raw = bin >= 0 ? bin == 1 : (rq->n_raw_input_contents > 0 || n_in == 0);
        for (size_t k = 0; k < res.n_outputs; k++) {
          sel[k] = k;
          if (res.outputs[k].dtype == HS_DT_FLOAT16) raw = true; /* no typed field for FP16 */
        }
        encode_reply(rq, hs_model_name(m), res.version, res.outputs, res.names, sel, res.n_outputs, raw, reply);
        free(sel);
      }
    }
    hs_infer_result_free(&res);
  }
  for (size_t k = 0; ins && k < n_in; k++)
    if (ins[k].owned) free(ins[k].t.data);
  free(ins);
  free(named);
  free(req_names);
  inference__model_infer_request__free_unpacked(rq, NULL);
}

int hs__grpc_decode_infer(const hs_codec_limits *lim, const uint8_t *msg, size_t len) {
  hs_grpc_env env = {.reg = NULL, .limits = *lim};
  hs_grpc_reply reply = {0};
  Inference__ModelInferRequest *rq = inference__model_infer_request__unpack(NULL, len, msg);
  if (!rq) return GRPC_STATUS_INVALID_ARGUMENT;
  size_t n = rq->n_inputs;
  hs_infer_input *ins = calloc(n ? n : 1, sizeof *ins);
  hs_tensor *outs = calloc(n ? n : 1, sizeof *outs);
  const char **names = calloc(n ? n : 1, sizeof *names);
  size_t *sel = calloc(n ? n : 1, sizeof *sel);
  if (!ins || !outs || !names || !sel) {
    set_error(&reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else if (n > lim->max_inputs) {
    set_error(&reply, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many inputs");
  } else if (request_params_ok(rq, &reply) && decode_inputs(&env, rq, ins, &reply) == 0) {
    bool fp16 = false;
    for (size_t i = 0; i < n; i++) {
      outs[i] = ins[i].t;
      names[i] = ins[i].name;
      sel[i] = i;
      fp16 |= outs[i].dtype == HS_DT_FLOAT16;
    }
    encode_reply(rq, "fuzz", 1, outs, names, sel, n, true, &reply);
    free(reply.body);
    reply.body = NULL;
    if (!fp16) encode_reply(rq, "fuzz", 1, outs, names, sel, n, false, &reply);
  }
  for (size_t k = 0; ins && k < n; k++)
    if (ins[k].owned) free(ins[k].t.data);
  free(ins), free(outs), free(names), free(sel);
  free(reply.body);
  inference__model_infer_request__free_unpacked(rq, NULL);
  return reply.code;
}

/* ---- dispatch ---- */

static bool method_is(const char *method, size_t len, const char *name) {
  size_t pl = sizeof HS_GRPC_SERVICE_PREFIX - 1, nl = strlen(name);
  return len == pl + nl && memcmp(method, HS_GRPC_SERVICE_PREFIX, pl) == 0 && memcmp(method + pl, name, nl) == 0;
}

/* Whether a repository RPC may run, as HTTP's repository routes (docs/SECURITY.md): PERMISSION_DENIED
 * with --model-control-mode none or a wrong token, UNAUTHENTICATED when a token is needed and none came. */
static bool control_allowed(const hs_grpc_env *env, const char *authorization, hs_grpc_reply *reply) {
  if (env->control_disabled) {
    set_error(reply, GRPC_STATUS_PERMISSION_DENIED, "the repository control API is disabled (--model-control-mode none)");
    return false;
  }
  if (!env->control_token) return true;
  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) {
    set_error(reply, GRPC_STATUS_UNAUTHENTICATED, "the repository control API needs authorization: Bearer metadata");
    return false;
  }
  const char *token = authorization + 7;
  while (*token == ' ') token++;
  if (!hs_secret_equal(token, env->control_token)) {
    set_error(reply, GRPC_STATUS_PERMISSION_DENIED, "the bearer token is not the repository control token");
    return false;
  }
  return true;
}

void hs_grpc_dispatch(const hs_grpc_env *env, const char *method, size_t method_len, const uint8_t *msg,
                      size_t len, const char *authorization, hs_grpc_reply *reply) {
  reply->code = GRPC_STATUS_OK;
  reply->message[0] = 0;
  reply->body = NULL;
  reply->len = 0;
  reply->rejected = false;
  if (method_is(method, method_len, "ModelInfer")) {
    model_infer(env, msg, len, reply);
    hs_registry_count_grpc(env->reg, reply->rejected ? HS_OUTCOME_REJECTED : outcome_of(reply->code));
  } else if (method_is(method, method_len, "ServerLive")) {
    server_live(reply);
  } else if (method_is(method, method_len, "ServerReady")) {
    server_ready(env, reply);
  } else if (method_is(method, method_len, "ModelReady")) {
    model_ready(env, msg, len, reply);
  } else if (method_is(method, method_len, "ServerMetadata")) {
    server_metadata(reply);
  } else if (method_is(method, method_len, "ModelMetadata")) {
    model_metadata(env, msg, len, reply);
  } else if (method_is(method, method_len, "ModelConfig")) {
    hs__grpc_model_config(env, msg, len, reply);
  } else if (method_is(method, method_len, "ModelStatistics")) {
    hs__grpc_model_statistics(env, msg, len, reply);
  } else if (method_is(method, method_len, "RepositoryIndex")) {
    if (control_allowed(env, authorization, reply)) hs__grpc_repository_index(env, msg, len, reply);
  } else if (method_is(method, method_len, "RepositoryModelLoad")) {
    if (control_allowed(env, authorization, reply)) hs__grpc_repository_load(env, msg, len, false, reply);
  } else if (method_is(method, method_len, "RepositoryModelUnload")) {
    if (control_allowed(env, authorization, reply)) hs__grpc_repository_load(env, msg, len, true, reply);
  } else {
    set_error(reply, GRPC_STATUS_UNIMPLEMENTED, "method %.*s is not served by hotserve", (int)(method_len > 200 ? 200 : method_len),
              method);
  }
}

/* codec.c - decodes KServe v2 infer requests (JSON tensors or the binary extension) and encodes responses. */
#include "http/codec.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hs_codec_limits_default(hs_codec_limits *lim) {
  lim->max_inputs = 64;
  lim->max_elements = (int64_t)1 << 28;
  lim->max_tensor_bytes = (size_t)1 << 30;
}

void hs_infer_request_free(hs_infer_request *req) {
  for (size_t i = 0; req->inputs && i < req->n_inputs; i++)
    if (req->inputs[i].owned) free(req->inputs[i].t.data);
  free(req->inputs);
  free(req->outputs);
  memset(req, 0, sizeof *req);
}

/* ---- JSON tensor data ---- */

/* Counts the scalars in a (possibly nested) JSON array; -1 when nested too deep or not numeric. */
static int64_t count_scalars(const json_t *v, int depth) {
  if (!json_is_array(v)) return (json_is_number(v) || json_is_boolean(v)) ? 1 : -1;
  if (depth > HS_MAX_DIMS) return -1;
  int64_t n = 0;
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) {
    int64_t k = count_scalars(e, depth + 1);
    if (k < 0) return -1;
    n += k;
  }
  return n;
}

static uint16_t float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    uint32_t shift = (uint32_t)(14 - e);
    uint32_t h = man >> shift;
    if ((man >> (shift - 1)) & 1u) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
  if (man & 0x1000u) h++; /* round half up; carries into the exponent correctly */
  return (uint16_t)h;
}

typedef struct {
  hs_dtype dt;
  unsigned char *out;
  size_t pos; /* element index */
  const char *name;
  hs_error *err;
} fill_ctx;

/* Stores one JSON scalar as element ctx->pos; type and range are checked for integer types. */
static int store_scalar(fill_ctx *c, const json_t *v) {
  size_t es = hs_dtype_size(c->dt);
  unsigned char *dst = c->out + c->pos * es;
  bool is_int = json_is_integer(v), is_bool = json_is_boolean(v);
  double d = json_is_real(v) ? json_real_value(v) : is_int ? (double)json_integer_value(v) : json_is_true(v);
  json_int_t iv = is_int ? json_integer_value(v) : (json_int_t)json_is_true(v);
  switch (c->dt) {
    case HS_DT_FLOAT32: {
      if (is_bool) goto wrong_type;
      float f = (float)d;
      memcpy(dst, &f, 4);
      break;
    }
    case HS_DT_FLOAT64:
      if (is_bool) goto wrong_type;
      memcpy(dst, &d, 8);
      break;
    case HS_DT_FLOAT16: {
      if (is_bool) goto wrong_type;
      uint16_t h = float_to_half((float)d);
      memcpy(dst, &h, 2);
      break;
    }
    case HS_DT_BOOL:
      if (!is_bool && !(is_int && (iv == 0 || iv == 1))) goto wrong_type;
      *dst = (unsigned char)(iv != 0);
      break;
    default: {
      if (!is_int) goto wrong_type;
      int64_t lo, hi;
      switch (c->dt) {
        case HS_DT_INT8: lo = INT8_MIN, hi = INT8_MAX; break;
        case HS_DT_UINT8: lo = 0, hi = UINT8_MAX; break;
        case HS_DT_INT16: lo = INT16_MIN, hi = INT16_MAX; break;
        case HS_DT_UINT16: lo = 0, hi = UINT16_MAX; break;
        case HS_DT_INT32: lo = INT32_MIN, hi = INT32_MAX; break;
        case HS_DT_UINT32: lo = 0, hi = UINT32_MAX; break;
        case HS_DT_INT64: lo = INT64_MIN, hi = INT64_MAX; break;
        case HS_DT_UINT64: lo = 0, hi = INT64_MAX; break; /* JSON integers here are signed 64-bit */
        default: return hs_error_set(c->err, HS_INVALID_ARGUMENT, "input %s: unsupported datatype", c->name);
      }
      if (iv < lo || iv > hi)
        return hs_error_set(c->err, HS_INVALID_ARGUMENT, "input %s: element %zu (%lld) is out of range for %s",
                            c->name, c->pos, (long long)iv, hs_dtype_kserve_name(c->dt));
      int64_t x = iv;
      /* little-endian host: the low bytes of x are the element */
      memcpy(dst, &x, es);
      break;
    }
  }
  c->pos++;
  return HS_OK;
wrong_type:
  return hs_error_set(c->err, HS_INVALID_ARGUMENT, "input %s: element %zu is not a valid %s value", c->name,
                      c->pos, hs_dtype_kserve_name(c->dt));
}

static int fill(fill_ctx *c, const json_t *v) {
  if (!json_is_array(v)) return store_scalar(c, v);
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) {
    int rc = fill(c, e);
    if (rc != HS_OK) return rc;
  }
  return HS_OK;
}

/* ---- the request ---- */

static int decode_input(const json_t *ji, size_t idx, const char *bin, size_t bin_len, size_t *bin_pos,
                        bool have_binary, const hs_codec_limits *lim, hs_infer_input *in, hs_error *err) {
  const json_t *jname = json_object_get(ji, "name");
  if (!json_is_object(ji) || !json_is_string(jname))
    return hs_error_set(err, HS_PARSE, "inputs[%zu] needs a string \"name\"", idx);
  const char *name = json_string_value(jname);
  if (strlen(name) >= sizeof in->name)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "inputs[%zu]: name too long", idx);
  snprintf(in->name, sizeof in->name, "%s", name);

  const json_t *jdt = json_object_get(ji, "datatype");
  if (!json_is_string(jdt)) return hs_error_set(err, HS_PARSE, "input %s needs a string \"datatype\"", name);
  in->t.dtype = hs_dtype_from_kserve(json_string_value(jdt));
  if (in->t.dtype == HS_DT_UNDEFINED)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: unsupported datatype \"%s\"", name,
                        json_string_value(jdt));

  const json_t *jshape = json_object_get(ji, "shape");
  if (!json_is_array(jshape)) return hs_error_set(err, HS_PARSE, "input %s needs a \"shape\" array", name);
  if (json_array_size(jshape) > HS_MAX_DIMS)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: more than %d dimensions", name, HS_MAX_DIMS);
  in->t.ndim = (int)json_array_size(jshape);
  for (int k = 0; k < in->t.ndim; k++) {
    const json_t *d = json_array_get(jshape, (size_t)k);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: shape[%d] must be a non-negative integer", name, k);
    in->t.dims[k] = json_integer_value(d);
  }
  int64_t numel = hs_shape_numel(in->t.dims, in->t.ndim);
  if (numel < 0) return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: the shape's element count overflows", name);
  size_t es = hs_dtype_size(in->t.dtype);
  if (numel > lim->max_elements || (uint64_t)numel > lim->max_tensor_bytes / es)
    return hs_error_set(err, HS_LIMIT, "input %s: %lld elements exceed the limit (%lld elements, %zu bytes)", name,
                        (long long)numel, (long long)lim->max_elements, lim->max_tensor_bytes);
  in->t.nbytes = (size_t)numel * es;

  const json_t *params = json_object_get(ji, "parameters");
  const json_t *jbin = json_is_object(params) ? json_object_get(params, "binary_data_size") : NULL;
  const json_t *jdata = json_object_get(ji, "data");
  if (jbin) {
    if (!have_binary)
      return hs_error_set(err, HS_PARSE,
                          "input %s has binary_data_size but the request has no Inference-Header-Content-Length",
                          name);
    if (!json_is_integer(jbin) || json_integer_value(jbin) < 0)
      return hs_error_set(err, HS_PARSE, "input %s: binary_data_size must be a non-negative integer", name);
    if (jdata) return hs_error_set(err, HS_PARSE, "input %s has both \"data\" and binary_data_size", name);
    uint64_t size = (uint64_t)json_integer_value(jbin);
    if (size != in->t.nbytes)
      return hs_error_set(err, HS_INVALID_ARGUMENT,
                          "input %s: binary_data_size %llu does not match shape and datatype (%zu bytes)", name,
                          (unsigned long long)size, in->t.nbytes);
    if (size > bin_len - *bin_pos)
      return hs_error_set(err, HS_PARSE, "input %s: binary data ends after %zu of %llu bytes", name,
                          bin_len - *bin_pos, (unsigned long long)size);
    const char *p = bin + *bin_pos;
    *bin_pos += size;
    if (((uintptr_t)p % (es < 8 ? es : 8)) == 0) {
      in->t.data = (void *)p; /* zero copy: a view into the body */
    } else {
      in->t.data = malloc(size ? size : 1);
      if (!in->t.data) return hs_error_set(err, HS_NO_MEMORY, "input %s: out of memory", name);
      memcpy(in->t.data, p, size);
      in->owned = true;
    }
    return HS_OK;
  }
  if (!jdata) return hs_error_set(err, HS_PARSE, "input %s has no \"data\"", name);
  int64_t n = count_scalars(jdata, 0);
  if (n < 0) return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: \"data\" must be (nested) arrays of numbers", name);
  if (n != numel)
    return hs_error_set(err, HS_INVALID_ARGUMENT, "input %s: \"data\" holds %lld elements, the shape needs %lld",
                        name, (long long)n, (long long)numel);
  in->t.data = malloc(in->t.nbytes ? in->t.nbytes : 1);
  if (!in->t.data) return hs_error_set(err, HS_NO_MEMORY, "input %s: out of memory", name);
  in->owned = true;
  fill_ctx c = {.dt = in->t.dtype, .out = in->t.data, .name = in->name, .err = err};
  return fill(&c, jdata);
}

int hs_infer_request_decode(const char *body, size_t len, long long header_len, const hs_codec_limits *lim,
                            hs_infer_request *out, hs_error *err) {
  memset(out, 0, sizeof *out);
  bool have_binary = header_len >= 0;
  size_t json_len = len;
  if (have_binary) {
    if ((unsigned long long)header_len > len)
      return hs_error_set(err, HS_PARSE, "Inference-Header-Content-Length %lld exceeds the body (%zu bytes)",
                          header_len, len);
    json_len = (size_t)header_len;
  }
  json_error_t jerr;
  json_t *root = json_loadb(body, json_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return hs_error_set(err, HS_PARSE, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
  int rc = HS_OK;
  if (!json_is_object(root)) {
    rc = hs_error_set(err, HS_PARSE, "the request must be a JSON object");
    goto out;
  }
  const json_t *jid = json_object_get(root, "id");
  if (jid) {
    if (!json_is_string(jid) || strlen(json_string_value(jid)) >= sizeof out->id) {
      rc = hs_error_set(err, HS_PARSE, "\"id\" must be a string shorter than %zu bytes", sizeof out->id);
      goto out;
    }
    snprintf(out->id, sizeof out->id, "%s", json_string_value(jid));
    out->has_id = true;
  }
  const json_t *params = json_object_get(root, "parameters");
  if (params && !json_is_object(params)) {
    rc = hs_error_set(err, HS_PARSE, "\"parameters\" must be an object");
    goto out;
  }
  const json_t *bdo = params ? json_object_get(params, "binary_data_output") : NULL;
  if (bdo) {
    if (!json_is_boolean(bdo)) {
      rc = hs_error_set(err, HS_PARSE, "parameters.binary_data_output must be a boolean");
      goto out;
    }
    out->binary_default = json_is_true(bdo);
  }

  const json_t *inputs = json_object_get(root, "inputs");
  if (!json_is_array(inputs)) { /* an empty array is decoded: the handler names the missing inputs */
    rc = hs_error_set(err, HS_PARSE, "the request needs an \"inputs\" array");
    goto out;
  }
  if (json_array_size(inputs) > lim->max_inputs) {
    rc = hs_error_set(err, HS_LIMIT, "%zu inputs exceed the limit of %zu", json_array_size(inputs), lim->max_inputs);
    goto out;
  }
  out->inputs = calloc(json_array_size(inputs) + 1, sizeof *out->inputs);
  if (!out->inputs) {
    rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
    goto out;
  }
  const char *bin = body + json_len;
  size_t bin_len = len - json_len, bin_pos = 0;
  for (size_t i = 0; rc == HS_OK && i < json_array_size(inputs); i++) {
    rc = decode_input(json_array_get(inputs, i), i, bin, bin_len, &bin_pos, have_binary, lim, &out->inputs[i], err);
    out->n_inputs = i + 1;
    for (size_t k = 0; rc == HS_OK && k < i; k++)
      if (strcmp(out->inputs[k].name, out->inputs[i].name) == 0)
        rc = hs_error_set(err, HS_INVALID_ARGUMENT, "input %s appears twice", out->inputs[i].name);
  }
  if (rc == HS_OK && bin_pos != bin_len)
    rc = hs_error_set(err, HS_PARSE, "%zu bytes of binary data follow the inputs that no input claims",
                      bin_len - bin_pos);

  const json_t *outputs = json_object_get(root, "outputs");
  if (rc == HS_OK && outputs) {
    if (!json_is_array(outputs) || json_array_size(outputs) > lim->max_inputs) {
      rc = hs_error_set(err, HS_PARSE, "\"outputs\" must be an array of at most %zu entries", lim->max_inputs);
      goto out;
    }
    out->outputs = calloc(json_array_size(outputs) + 1, sizeof *out->outputs);
    if (!out->outputs) {
      rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
      goto out;
    }
    for (size_t i = 0; rc == HS_OK && i < json_array_size(outputs); i++) {
      const json_t *jo = json_array_get(outputs, i);
      const json_t *jn = json_object_get(jo, "name");
      if (!json_is_string(jn) || strlen(json_string_value(jn)) >= sizeof out->outputs[i].name) {
        rc = hs_error_set(err, HS_PARSE, "outputs[%zu] needs a string \"name\"", i);
        break;
      }
      snprintf(out->outputs[i].name, sizeof out->outputs[i].name, "%s", json_string_value(jn));
      out->outputs[i].binary = out->binary_default;
      const json_t *op = json_object_get(jo, "parameters");
      const json_t *bd = json_is_object(op) ? json_object_get(op, "binary_data") : NULL;
      if (bd) {
        if (!json_is_boolean(bd)) {
          rc = hs_error_set(err, HS_PARSE, "output %s: binary_data must be a boolean", out->outputs[i].name);
          break;
        }
        out->outputs[i].binary = json_is_true(bd);
      }
      out->n_outputs = i + 1;
    }
  }
out:
  json_decref(root);
  if (rc != HS_OK) hs_infer_request_free(out);
  return rc;
}

/* ---- the response ---- */

/*
 * Numbers are formatted here rather than with printf, which costs ~300 ns per float and was a third
 * of a JSON reply's time (bench/serve). A float32 is written with 9 significant digits, enough for
 * any float32 to read back as itself (as printf's %.9g): the digits come from one multiplication by
 * a power of ten in double precision, whose rounding error (~1e-16 relative) is far below the
 * margin 9 digits leave (the digits are within 5e-9 relative of the value; a float's neighbours are
 * at least 6e-8 away). float64 keeps printf's %.17g, which needs exact arithmetic.
 */
static const double k_pow10[] = {1e-32, 1e-31, 1e-30, 1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55}; /* 1e-32 .. 1e55 */
#define POW10_MIN (-32)
#define POW10_MAX 55

/* Writes the decimal digits of v into out; returns the count. */
static int put_u64(char *out, uint64_t v) {
  char tmp[20];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

static int put_i64(char *out, int64_t v) {
  if (v >= 0) return put_u64(out, (uint64_t)v);
  out[0] = '-';
  return 1 + put_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

/* A finite float32 as a JSON number with 9 significant digits (%g's layout); returns the length
 * (at most 16 characters). */
int hs__format_f32(char *out, float f) {
  int n = 0;
  double a = f;
  if (signbit(a)) {
    out[n++] = '-';
    a = -a;
  }
  if (a == 0) {
    out[n++] = '0';
    return n;
  }
  int e10 = (int)floor(log10(a)); /* may be off by one near powers of ten: corrected below */
  double v = a * k_pow10[8 - e10 - POW10_MIN];
  if (v < 99999999.5) {
    e10--;
    v = a * k_pow10[8 - e10 - POW10_MIN];
  } else if (v >= 999999999.5) {
    e10++;
    v = a * k_pow10[8 - e10 - POW10_MIN];
  }
  uint64_t m = (uint64_t)llround(v);
  if (m >= 1000000000u) { /* rounded up to the next power of ten */
    m /= 10;
    e10++;
  }
  char d[9];
  for (int i = 8; i >= 0; i--, m /= 10) d[i] = (char)('0' + m % 10);
  int nd = 9;
  while (nd > 1 && d[nd - 1] == '0') nd--;
  if (e10 < -4 || e10 >= 9) { /* d.ddde+XX */
    out[n++] = d[0];
    if (nd > 1) {
      out[n++] = '.';
      for (int i = 1; i < nd; i++) out[n++] = d[i];
    }
    out[n++] = 'e';
    out[n++] = e10 < 0 ? '-' : '+';
    int x = e10 < 0 ? -e10 : e10;
    if (x < 10) out[n++] = '0';
    n += put_u64(out + n, (uint64_t)x);
  } else if (e10 >= 0) { /* ddd.ddd */
    for (int i = 0; i <= e10; i++) out[n++] = i < nd ? d[i] : '0';
    if (nd > e10 + 1) {
      out[n++] = '.';
      for (int i = e10 + 1; i < nd; i++) out[n++] = d[i];
    }
  } else { /* 0.000ddd */
    out[n++] = '0';
    out[n++] = '.';
    for (int i = 0; i < -e10 - 1; i++) out[n++] = '0';
    for (int i = 0; i < nd; i++) out[n++] = d[i];
  }
  return n;
}

static void append_data(hs_sbuf *b, const hs_tensor *t) {
  size_t es = hs_dtype_size(t->dtype);
  size_t n = es ? t->nbytes / es : 0;
  const unsigned char *p = t->data;
  char num[40];
  hs_sbuf_append(b, "[", 1);
  for (size_t i = 0; i < n && !b->failed; i++) {
    int k = 0;
    const unsigned char *e = p + i * es;
    switch (t->dtype) {
      case HS_DT_FLOAT32: {
        float f;
        memcpy(&f, e, 4);
        k = isfinite(f) ? hs__format_f32(num, f) : snprintf(num, sizeof num, "null");
        break;
      }
      case HS_DT_FLOAT64: {
        double d;
        memcpy(&d, e, 8);
        k = isfinite(d) ? snprintf(num, sizeof num, "%.17g", d) : snprintf(num, sizeof num, "null");
        break;
      }
      case HS_DT_FLOAT16: {
        uint16_t h;
        memcpy(&h, e, 2);
        int ex = (h >> 10) & 0x1f, man = h & 0x3ff;
        double v = ex == 0 ? ldexp(man, -24) : ex == 31 ? NAN : ldexp(man | 0x400, ex - 25);
        if (h & 0x8000) v = -v;
        k = isfinite(v) ? snprintf(num, sizeof num, "%.6g", v) : snprintf(num, sizeof num, "null");
        break;
      }
      case HS_DT_BOOL: k = snprintf(num, sizeof num, "%s", *e ? "true" : "false"); break;
      case HS_DT_INT8: k = put_i64(num, *(const int8_t *)e); break;
      case HS_DT_UINT8: k = put_u64(num, *e); break;
      case HS_DT_INT16: { int16_t x; memcpy(&x, e, 2); k = put_i64(num, x); break; }
      case HS_DT_UINT16: { uint16_t x; memcpy(&x, e, 2); k = put_u64(num, x); break; }
      case HS_DT_INT32: { int32_t x; memcpy(&x, e, 4); k = put_i64(num, x); break; }
      case HS_DT_UINT32: { uint32_t x; memcpy(&x, e, 4); k = put_u64(num, x); break; }
      case HS_DT_INT64: { int64_t x; memcpy(&x, e, 8); k = put_i64(num, x); break; }
      case HS_DT_UINT64: { uint64_t x; memcpy(&x, e, 8); k = put_u64(num, x); break; }
      default: k = snprintf(num, sizeof num, "null"); break;
    }
    if (i) hs_sbuf_append(b, ",", 1);
    hs_sbuf_append(b, num, (size_t)k);
  }
  hs_sbuf_append(b, "]", 1);
}

int hs_infer_response_encode(const char *model, int64_t version, const hs_infer_request *req,
                             const hs_infer_output *outs, size_t n_outs, hs_sbuf *body, size_t *json_len,
                             bool *has_binary) {
  *has_binary = false;
  hs_sbuf_puts(body, "{\"model_name\":");
  hs_sbuf_json_str(body, model);
  hs_sbuf_printf(body, ",\"model_version\":\"%lld\"", (long long)version);
  if (req->has_id) {
    hs_sbuf_puts(body, ",\"id\":");
    hs_sbuf_json_str(body, req->id);
  }
  hs_sbuf_puts(body, ",\"outputs\":[");
  for (size_t i = 0; i < n_outs; i++) {
    const hs_tensor *t = outs[i].t;
    if (i) hs_sbuf_append(body, ",", 1);
    hs_sbuf_puts(body, "{\"name\":");
    hs_sbuf_json_str(body, outs[i].name);
    hs_sbuf_printf(body, ",\"datatype\":\"%s\",\"shape\":[", hs_dtype_kserve_name(t->dtype) ? hs_dtype_kserve_name(t->dtype) : "BYTES");
    for (int k = 0; k < t->ndim; k++) hs_sbuf_printf(body, k ? ",%lld" : "%lld", (long long)t->dims[k]);
    hs_sbuf_append(body, "]", 1);
    if (outs[i].binary) {
      hs_sbuf_printf(body, ",\"parameters\":{\"binary_data_size\":%zu}}", t->nbytes);
      *has_binary = true;
    } else {
      hs_sbuf_puts(body, ",\"data\":");
      append_data(body, t);
      hs_sbuf_append(body, "}", 1);
    }
  }
  hs_sbuf_puts(body, "]}");
  *json_len = body->len;
  for (size_t i = 0; i < n_outs; i++)
    if (outs[i].binary) hs_sbuf_append(body, outs[i].t->data, outs[i].t->nbytes);
  return body->failed ? HS_NO_MEMORY : HS_OK;
}

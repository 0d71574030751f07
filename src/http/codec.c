/* codec.c - decodes KServe v2 infer requests (JSON tensors or the binary extension) and encodes responses. */
#include "http/codec.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "base/half.h"

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

/* ---- request decoding: one streaming pass with yajl ---- */

/*
 * DESIGN
 * The request is parsed by yajl's event (SAX) parser: no document tree is built, and the numbers of
 * an input's "data" go from the body into the tensor without a JSON value per element (jansson's
 * tree allocated one per number, and its lexer cost several times yajl's). An input's keys
 * may come in any order, so the text of its data scalars is copied into an arena as it arrives and
 * converted when the input object ends, by the rules of its datatype: integers exact to 64 bits
 * (out of range is an error), floats read with strtof/strtod (a value the type cannot hold is an
 * error). Keys hotserve does not know are skipped with their whole value; a known key given twice
 * in one object is an error, since its meaning would be ambiguous. Nesting that matters (the data
 * arrays) is bounded; skipped values only count depth, and yajl itself does not recurse.
 */

/* What a container on the stack is. */
enum { C_ROOT, C_ROOT_PARAMS, C_INPUTS, C_INPUT, C_INPUT_PARAMS, C_SHAPE, C_DATA, C_OUTPUTS, C_OUTPUT,
       C_OUTPUT_PARAMS };
/* Keys with a meaning, per container; K_OTHER values are skipped. */
enum { K_OTHER, K_ID, K_PARAMS, K_INPUTS, K_OUTPUTS, K_NAME, K_DATATYPE, K_SHAPE, K_DATA, K_BIN_SIZE, K_BIN_OUTPUT,
       K_BIN_DATA };

#define DEC_STACK 24 /* root, inputs, input, HS_MAX_DIMS + 1 data levels, with room to spare */

typedef struct dec_frame {
  int kind;      /* C_* */
  int key;       /* K_* of the value that comes next in a map */
  unsigned seen; /* bit per K_* already given in this map */
} dec_frame;

typedef struct dec_input {
  bool has_name, has_dtype_str, has_shape, has_bin_size, has_data;
  char dtype_str[32];
  long long bin_size;
  size_t data_start, n_scalars; /* the data's scalar texts in the arena */
  int data_levels;              /* nesting of the data arrays open now */
} dec_input;

typedef struct dec {
  const hs_codec_limits *lim;
  hs_infer_request *out;
  hs_error *err;
  int rc;        /* first error, 0 while fine */
  int depth;     /* containers open */
  int skip_from; /* > 0: inside a skipped value that opened at this depth */
  dec_frame st[DEC_STACK];
  size_t cap_inputs, cap_outputs;
  dec_input cur;            /* the input object being read */
  bool has_inputs;
  bool *out_binary_set;     /* per output: binary_data given explicitly */
  char *arena;              /* NUL-terminated scalar texts, one after another */
  size_t arena_len, arena_cap;
  const char *bin;          /* binary tensor data after the JSON header */
  size_t bin_len, bin_pos;
  bool have_binary;
} dec;

static int fail(dec *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(dec *d, int code, const char *fmt, ...) {
  if (d->rc == 0) {
    va_list ap;
    va_start(ap, fmt);
    char msg[sizeof d->err->message];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d->rc = hs_error_set(d->err, code, "%s", msg);
  }
  return 0; /* tells yajl to stop */
}

/* The name errors use for the input being read: its name once known, else its position. */
static const char *in_label(dec *d, char *buf, size_t n) {
  hs_infer_input *in = &d->out->inputs[d->out->n_inputs - 1];
  if (d->cur.has_name) snprintf(buf, n, "input %s", in->name);
  else snprintf(buf, n, "inputs[%zu]", d->out->n_inputs - 1);
  return buf;
}

static int key_of(int kind, const unsigned char *k, size_t n) {
#define IS(s) (n == sizeof(s) - 1 && memcmp(k, s, n) == 0)
  switch (kind) {
    case C_ROOT: return IS("id") ? K_ID : IS("parameters") ? K_PARAMS : IS("inputs") ? K_INPUTS : IS("outputs") ? K_OUTPUTS : K_OTHER;
    case C_ROOT_PARAMS: return IS("binary_data_output") ? K_BIN_OUTPUT : K_OTHER;
    case C_INPUT:
      return IS("name") ? K_NAME : IS("datatype") ? K_DATATYPE : IS("shape") ? K_SHAPE : IS("data") ? K_DATA
             : IS("parameters") ? K_PARAMS : K_OTHER;
    case C_INPUT_PARAMS: return IS("binary_data_size") ? K_BIN_SIZE : K_OTHER;
    case C_OUTPUT: return IS("name") ? K_NAME : IS("parameters") ? K_PARAMS : K_OTHER;
    case C_OUTPUT_PARAMS: return IS("binary_data") ? K_BIN_DATA : K_OTHER;
    default: return K_OTHER;
  }
#undef IS
}

/* What the next value is, as (container kind, key); key is -1 for an array element, -2 at the top. */
static dec_frame *top(dec *d) { return d->depth ? &d->st[d->depth - 1] : NULL; }

static int push(dec *d, int kind) {
  if (d->depth >= DEC_STACK) return fail(d, HS_INVALID_ARGUMENT, "the request nests too deeply");
  d->st[d->depth++] = (dec_frame){.kind = kind};
  return 1;
}

/* Appends one scalar's text to the arena (data values and their count are bounded). */
static int arena_add(dec *d, const char *s, size_t n) {
  char lb[160];
  if (d->cur.n_scalars >= (size_t)d->lim->max_elements)
    return fail(d, HS_LIMIT, "%s: \"data\" holds more than %lld elements", in_label(d, lb, sizeof lb),
                (long long)d->lim->max_elements);
  if (d->arena_cap - d->arena_len < n + 1) {
    size_t want = d->arena_len + n + 1, cap = d->arena_cap ? d->arena_cap : 1024;
    while (cap < want) cap *= 2;
    char *p = realloc(d->arena, cap);
    if (!p) return fail(d, HS_NO_MEMORY, "out of memory reading \"data\"");
    d->arena = p;
    d->arena_cap = cap;
  }
  memcpy(d->arena + d->arena_len, s, n);
  d->arena[d->arena_len + n] = 0;
  d->arena_len += n + 1;
  d->cur.n_scalars++;
  return 1;
}

/* Integer text (no fraction, no exponent) to int64; 0 on overflow or when not an integer. */
static int text_int(const char *s, long long *v) {
  if (strpbrk(s, ".eE")) return 0;
  errno = 0;
  char *end;
  *v = strtoll(s, &end, 10);
  return errno == 0 && *end == 0;
}

/* text_int on a number token that is not NUL-terminated (as yajl passes them). */
static int token_int(const char *s, size_t n, long long *v) {
  char buf[32];
  if (n >= sizeof buf) return 0; /* more digits than any int64 has */
  memcpy(buf, s, n);
  buf[n] = 0;
  return text_int(buf, v);
}

/* A scalar event (number text, "t"/"f" for booleans, or a string/null: kind 's'/'n'). */
static int on_scalar(dec *d, char kind, const char *s, size_t n) {
  if (d->skip_from) return 1;
  dec_frame *f = top(d);
  char lb[160];
  if (!f) return fail(d, HS_PARSE, "the request must be a JSON object");
  int key = f->key;
  switch (f->kind) {
    case C_ROOT:
      if (key == K_ID) {
        if (kind != 's' || n >= sizeof d->out->id || memchr(s, 0, n))
          return fail(d, HS_PARSE, "\"id\" must be a string shorter than %zu bytes", sizeof d->out->id);
        memcpy(d->out->id, s, n);
        d->out->id[n] = 0;
        d->out->has_id = true;
        return 1;
      }
      if (key == K_PARAMS) return fail(d, HS_PARSE, "\"parameters\" must be an object");
      if (key == K_INPUTS) return fail(d, HS_PARSE, "the request needs an \"inputs\" array");
      if (key == K_OUTPUTS)
        return fail(d, HS_PARSE, "\"outputs\" must be an array of at most %zu entries", d->lim->max_inputs);
      return 1;
    case C_ROOT_PARAMS:
      if (key == K_BIN_OUTPUT) {
        if (kind != 't' && kind != 'f') return fail(d, HS_PARSE, "parameters.binary_data_output must be a boolean");
        d->out->binary_default = kind == 't';
      }
      return 1;
    case C_INPUTS: return fail(d, HS_PARSE, "inputs[%zu] needs a string \"name\"", d->out->n_inputs);
    case C_INPUT: {
      hs_infer_input *in = &d->out->inputs[d->out->n_inputs - 1];
      if (key == K_NAME) {
        if (kind != 's' || memchr(s, 0, n)) return fail(d, HS_PARSE, "inputs[%zu] needs a string \"name\"", d->out->n_inputs - 1);
        if (n >= sizeof in->name) return fail(d, HS_INVALID_ARGUMENT, "inputs[%zu]: name too long", d->out->n_inputs - 1);
        memcpy(in->name, s, n);
        in->name[n] = 0;
        d->cur.has_name = true;
      } else if (key == K_DATATYPE) {
        if (kind != 's') return fail(d, HS_PARSE, "%s needs a string \"datatype\"", in_label(d, lb, sizeof lb));
        snprintf(d->cur.dtype_str, sizeof d->cur.dtype_str, "%.*s", (int)(n < 31 ? n : 31), s);
        d->cur.has_dtype_str = true;
        in->t.dtype = n < 31 && !memchr(s, 0, n) ? hs_dtype_from_kserve(d->cur.dtype_str) : HS_DT_UNDEFINED;
      } else if (key == K_SHAPE) {
        return fail(d, HS_PARSE, "%s needs a \"shape\" array", in_label(d, lb, sizeof lb));
      } else if (key == K_DATA) {
        if (kind != 'd' && kind != 't' && kind != 'f')
          return fail(d, HS_INVALID_ARGUMENT, "%s: \"data\" must be (nested) arrays of numbers", in_label(d, lb, sizeof lb));
        d->cur.has_data = true;
        d->cur.data_start = d->arena_len;
        return arena_add(d, s, n); /* a bare scalar is one element */
      }
      return 1;
    }
    case C_INPUT_PARAMS: {
      long long v;
      if (key != K_BIN_SIZE) return 1;
      if (kind != 'd' || !token_int(s, n, &v) || v < 0)
        return fail(d, HS_PARSE, "%s: binary_data_size must be a non-negative integer", in_label(d, lb, sizeof lb));
      d->cur.has_bin_size = true;
      d->cur.bin_size = v;
      return 1;
    }
    case C_SHAPE: {
      hs_infer_input *in = &d->out->inputs[d->out->n_inputs - 1];
      long long v;
      if (in->t.ndim >= HS_MAX_DIMS)
        return fail(d, HS_INVALID_ARGUMENT, "%s: more than %d dimensions", in_label(d, lb, sizeof lb), HS_MAX_DIMS);
      if (kind != 'd' || !token_int(s, n, &v) || v < 0)
        return fail(d, HS_INVALID_ARGUMENT, "%s: shape[%d] must be a non-negative integer", in_label(d, lb, sizeof lb),
                    in->t.ndim);
      in->t.dims[in->t.ndim++] = v;
      return 1;
    }
    case C_DATA:
      if (kind != 'd' && kind != 't' && kind != 'f')
        return fail(d, HS_INVALID_ARGUMENT, "%s: \"data\" must be (nested) arrays of numbers", in_label(d, lb, sizeof lb));
      return arena_add(d, s, n);
    case C_OUTPUTS: return fail(d, HS_PARSE, "outputs[%zu] needs a string \"name\"", d->out->n_outputs);
    case C_OUTPUT: {
      hs_infer_output_req *o = &d->out->outputs[d->out->n_outputs - 1];
      if (key != K_NAME) return 1;
      if (kind != 's' || n >= sizeof o->name || memchr(s, 0, n))
        return fail(d, HS_PARSE, "outputs[%zu] needs a string \"name\"", d->out->n_outputs - 1);
      memcpy(o->name, s, n);
      o->name[n] = 0;
      return 1;
    }
    case C_OUTPUT_PARAMS:
      if (key == K_BIN_DATA) {
        hs_infer_output_req *o = &d->out->outputs[d->out->n_outputs - 1];
        if (kind != 't' && kind != 'f')
          return fail(d, HS_PARSE, "output %s: binary_data must be a boolean", o->name[0] ? o->name : "?");
        o->binary = kind == 't';
        d->out_binary_set[d->out->n_outputs - 1] = true;
      }
      return 1;
  }
  return 1;
}

static int cb_null(void *ctx) { return on_scalar(ctx, 'n', "", 0); }
static int cb_bool(void *ctx, int b) { return on_scalar(ctx, b ? 't' : 'f', b ? "t" : "f", 1); }
static int cb_number(void *ctx, const char *s, size_t n) { return on_scalar(ctx, 'd', s, n); }
static int cb_string(void *ctx, const unsigned char *s, size_t n) { return on_scalar(ctx, 's', (const char *)s, n); }

static int cb_key(void *ctx, const unsigned char *k, size_t n) {
  dec *d = ctx;
  if (d->skip_from) return 1;
  dec_frame *f = top(d);
  f->key = key_of(f->kind, k, n);
  if (f->key == K_OTHER && (f->kind == C_ROOT_PARAMS || f->kind == C_INPUT_PARAMS || f->kind == C_OUTPUT_PARAMS)) {
    /* a parameter hotserve does not implement (classification, shared_memory_region, sequence_id, ...) is
     * refused by name rather than ignored: the client would get an answer to a question it did not ask */
    char where[160] = "the request";
    if (f->kind == C_INPUT_PARAMS) in_label(d, where, sizeof where);
    else if (f->kind == C_OUTPUT_PARAMS) {
      const char *nm = d->out->outputs[d->out->n_outputs - 1].name;
      snprintf(where, sizeof where, "output %s", nm[0] ? nm : "?");
    }
    static const char *const supported[] = {
        [C_ROOT_PARAMS] = "binary_data_output", [C_INPUT_PARAMS] = "binary_data_size", [C_OUTPUT_PARAMS] = "binary_data"};
    return fail(d, HS_INVALID_ARGUMENT, "parameter \"%.*s\" of %s is not supported by hotserve (supported there: %s)",
                (int)(n < 64 ? n : 64), (const char *)k, where, supported[f->kind]);
  }
  if (f->key != K_OTHER) {
    if (f->seen & (1u << f->key)) return fail(d, HS_PARSE, "the key \"%.*s\" appears twice in one object", (int)(n < 64 ? n : 64), (const char *)k);
    f->seen |= 1u << f->key;
  }
  return 1;
}

/* Opens a container (is_map: an object) as the next value. */
static int open_container(dec *d, bool is_map) {
  if (d->skip_from) {
    d->depth++;
    return 1;
  }
  dec_frame *f = top(d);
  char lb[160];
  if (!f) return is_map ? push(d, C_ROOT) : fail(d, HS_PARSE, "the request must be a JSON object");
  int key = f->key, kind = -1; /* kind stays -1: skip the value */
  switch (f->kind) {
    case C_ROOT:
      if (key == K_PARAMS) {
        if (!is_map) return fail(d, HS_PARSE, "\"parameters\" must be an object");
        kind = C_ROOT_PARAMS;
      } else if (key == K_INPUTS) {
        if (is_map) return fail(d, HS_PARSE, "the request needs an \"inputs\" array");
        kind = C_INPUTS;
        d->has_inputs = true;
      } else if (key == K_OUTPUTS) {
        if (is_map) return fail(d, HS_PARSE, "\"outputs\" must be an array of at most %zu entries", d->lim->max_inputs);
        kind = C_OUTPUTS;
      } else if (key == K_ID) {
        return fail(d, HS_PARSE, "\"id\" must be a string shorter than %zu bytes", sizeof d->out->id);
      }
      break;
    case C_ROOT_PARAMS:
      if (key == K_BIN_OUTPUT) return fail(d, HS_PARSE, "parameters.binary_data_output must be a boolean");
      break;
    case C_INPUTS: {
      if (!is_map) return fail(d, HS_PARSE, "inputs[%zu] needs a string \"name\"", d->out->n_inputs);
      if (d->out->n_inputs >= d->lim->max_inputs)
        return fail(d, HS_LIMIT, "more than %zu inputs exceed the limit", d->lim->max_inputs);
      if (d->out->n_inputs == d->cap_inputs) {
        size_t cap = d->cap_inputs ? 2 * d->cap_inputs : 4;
        hs_infer_input *p = realloc(d->out->inputs, cap * sizeof *p);
        if (!p) return fail(d, HS_NO_MEMORY, "out of memory");
        d->out->inputs = p;
        d->cap_inputs = cap;
      }
      memset(&d->out->inputs[d->out->n_inputs++], 0, sizeof *d->out->inputs);
      memset(&d->cur, 0, sizeof d->cur);
      kind = C_INPUT;
      break;
    }
    case C_INPUT:
      if (key == K_SHAPE) {
        if (is_map) return fail(d, HS_PARSE, "%s needs a \"shape\" array", in_label(d, lb, sizeof lb));
        kind = C_SHAPE;
      } else if (key == K_DATA) {
        if (is_map) return fail(d, HS_INVALID_ARGUMENT, "%s: \"data\" must be (nested) arrays of numbers", in_label(d, lb, sizeof lb));
        d->cur.has_data = true;
        d->cur.data_start = d->arena_len;
        d->cur.data_levels = 1;
        kind = C_DATA;
      } else if (key == K_PARAMS) {
        if (is_map) kind = C_INPUT_PARAMS;
      } else if (key == K_NAME) {
        return fail(d, HS_PARSE, "inputs[%zu] needs a string \"name\"", d->out->n_inputs - 1);
      } else if (key == K_DATATYPE) {
        return fail(d, HS_PARSE, "%s needs a string \"datatype\"", in_label(d, lb, sizeof lb));
      }
      break;
    case C_INPUT_PARAMS:
      if (key == K_BIN_SIZE)
        return fail(d, HS_PARSE, "%s: binary_data_size must be a non-negative integer", in_label(d, lb, sizeof lb));
      break;
    case C_SHAPE:
      return fail(d, HS_INVALID_ARGUMENT, "%s: shape[%d] must be a non-negative integer", in_label(d, lb, sizeof lb),
                  d->out->inputs[d->out->n_inputs - 1].t.ndim);
    case C_DATA:
      if (is_map || ++d->cur.data_levels > HS_MAX_DIMS + 1)
        return fail(d, HS_INVALID_ARGUMENT, "%s: \"data\" must be (nested) arrays of numbers, at most %d deep",
                    in_label(d, lb, sizeof lb), HS_MAX_DIMS + 1);
      kind = C_DATA;
      break;
    case C_OUTPUTS: {
      if (!is_map) return fail(d, HS_PARSE, "outputs[%zu] needs a string \"name\"", d->out->n_outputs);
      if (d->out->n_outputs >= d->lim->max_inputs)
        return fail(d, HS_PARSE, "\"outputs\" must be an array of at most %zu entries", d->lim->max_inputs);
      if (d->out->n_outputs == d->cap_outputs) {
        size_t cap = d->cap_outputs ? 2 * d->cap_outputs : 4;
        hs_infer_output_req *p = realloc(d->out->outputs, cap * sizeof *p);
        bool *b = realloc(d->out_binary_set, cap * sizeof *b);
        if (b) d->out_binary_set = b;
        if (p) d->out->outputs = p;
        if (!p || !b) return fail(d, HS_NO_MEMORY, "out of memory");
        d->cap_outputs = cap;
      }
      memset(&d->out->outputs[d->out->n_outputs], 0, sizeof *d->out->outputs);
      d->out_binary_set[d->out->n_outputs++] = false;
      kind = C_OUTPUT;
      break;
    }
    case C_OUTPUT:
      if (key == K_PARAMS && is_map) kind = C_OUTPUT_PARAMS;
      else if (key == K_NAME) return fail(d, HS_PARSE, "outputs[%zu] needs a string \"name\"", d->out->n_outputs - 1);
      break;
    case C_OUTPUT_PARAMS:
      if (key == K_BIN_DATA) {
        const char *nm = d->out->outputs[d->out->n_outputs - 1].name;
        return fail(d, HS_PARSE, "output %s: binary_data must be a boolean", nm[0] ? nm : "?");
      }
      break;
  }
  if (kind < 0) { /* a value hotserve does not read: skip it whole */
    d->depth++;
    d->skip_from = d->depth;
    return 1;
  }
  return push(d, kind);
}

static int cb_start_map(void *ctx) { return open_container(ctx, true); }
static int cb_start_array(void *ctx) { return open_container(ctx, false); }

/* Converts the input's data texts into its tensor, by the rules of its datatype. */
static int convert_data(dec *d, hs_infer_input *in) {
  hs_dtype dt = in->t.dtype;
  size_t es = hs_dtype_size(dt);
  unsigned char *outp = in->t.data;
  const char *s = d->arena + d->cur.data_start;
  for (size_t i = 0; i < d->cur.n_scalars; i++, s += strlen(s) + 1) {
    unsigned char *dst = outp + i * es;
    bool is_bool = s[0] == 't' || s[0] == 'f';
    long long iv;
    switch (dt) {
      case HS_DT_FLOAT32: case HS_DT_FLOAT64: case HS_DT_FLOAT16: {
        if (is_bool) goto wrong_type;
        errno = 0;
        double v = dt == HS_DT_FLOAT32 ? (double)strtof(s, NULL) : strtod(s, NULL);
        if (isinf(v)) goto out_of_range; /* JSON numbers are finite: only overflow gives inf */
        if (dt == HS_DT_FLOAT32) {
          float f = (float)v;
          memcpy(dst, &f, 4);
        } else if (dt == HS_DT_FLOAT64) {
          memcpy(dst, &v, 8);
        } else {
          uint16_t h = hs_float_to_half((float)v);
          memcpy(dst, &h, 2);
        }
        break;
      }
      case HS_DT_BOOL:
        if (is_bool) *dst = s[0] == 't';
        else if (text_int(s, &iv) && (iv == 0 || iv == 1)) *dst = (unsigned char)iv;
        else goto wrong_type;
        break;
      case HS_DT_UINT64: {
        if (is_bool || strpbrk(s, ".eE")) goto wrong_type;
        if (s[0] == '-') goto out_of_range;
        errno = 0;
        char *end;
        unsigned long long u = strtoull(s, &end, 10);
        if (errno || *end) goto out_of_range;
        uint64_t x = u;
        memcpy(dst, &x, 8);
        break;
      }
      default: {
        if (is_bool || strpbrk(s, ".eE")) goto wrong_type;
        if (!text_int(s, &iv)) goto out_of_range;
        int64_t lo, hi;
        switch (dt) {
          case HS_DT_INT8: lo = INT8_MIN, hi = INT8_MAX; break;
          case HS_DT_UINT8: lo = 0, hi = UINT8_MAX; break;
          case HS_DT_INT16: lo = INT16_MIN, hi = INT16_MAX; break;
          case HS_DT_UINT16: lo = 0, hi = UINT16_MAX; break;
          case HS_DT_INT32: lo = INT32_MIN, hi = INT32_MAX; break;
          case HS_DT_UINT32: lo = 0, hi = UINT32_MAX; break;
          case HS_DT_INT64: lo = INT64_MIN, hi = INT64_MAX; break;
          default: return fail(d, HS_INVALID_ARGUMENT, "input %s: unsupported datatype", in->name);
        }
        if (iv < lo || iv > hi) goto out_of_range;
        int64_t x = iv;
        memcpy(dst, &x, es); /* little-endian host: the low bytes of x are the element */
        break;
      }
    }
    continue;
  wrong_type:
    return fail(d, HS_INVALID_ARGUMENT, "input %s: element %zu is not a valid %s value", in->name, i,
                hs_dtype_kserve_name(dt));
  out_of_range:
    return fail(d, HS_INVALID_ARGUMENT, "input %s: element %zu (%.40s) is out of range for %s", in->name, i, s,
                hs_dtype_kserve_name(dt));
  }
  return 1;
}

/* The input object ended: check it whole, then take its data (text or binary). */
static int finish_input(dec *d) {
  size_t idx = d->out->n_inputs - 1;
  hs_infer_input *in = &d->out->inputs[idx];
  const char *name = in->name;
  if (!d->cur.has_name) return fail(d, HS_PARSE, "inputs[%zu] needs a string \"name\"", idx);
  if (!d->cur.has_dtype_str) return fail(d, HS_PARSE, "input %s needs a string \"datatype\"", name);
  if (in->t.dtype == HS_DT_UNDEFINED)
    return fail(d, HS_INVALID_ARGUMENT, "input %s: unsupported datatype \"%s\"", name, d->cur.dtype_str);
  if (!d->cur.has_shape) return fail(d, HS_PARSE, "input %s needs a \"shape\" array", name);
  int64_t numel = hs_shape_numel(in->t.dims, in->t.ndim);
  if (numel < 0) return fail(d, HS_INVALID_ARGUMENT, "input %s: the shape's element count overflows", name);
  size_t es = hs_dtype_size(in->t.dtype);
  if (numel > d->lim->max_elements || (uint64_t)numel > d->lim->max_tensor_bytes / es)
    return fail(d, HS_LIMIT, "input %s: %lld elements exceed the limit (%lld elements, %zu bytes)", name,
                (long long)numel, (long long)d->lim->max_elements, d->lim->max_tensor_bytes);
  in->t.nbytes = (size_t)numel * es;
  for (size_t k = 0; k < idx; k++)
    if (strcmp(d->out->inputs[k].name, name) == 0) return fail(d, HS_INVALID_ARGUMENT, "input %s appears twice", name);

  if (d->cur.has_bin_size) {
    if (!d->have_binary)
      return fail(d, HS_PARSE, "input %s has binary_data_size but the request has no Inference-Header-Content-Length",
                  name);
    if (d->cur.has_data) return fail(d, HS_PARSE, "input %s has both \"data\" and binary_data_size", name);
    uint64_t size = (uint64_t)d->cur.bin_size;
    if (size != in->t.nbytes)
      return fail(d, HS_INVALID_ARGUMENT, "input %s: binary_data_size %llu does not match shape and datatype (%zu bytes)",
                  name, (unsigned long long)size, in->t.nbytes);
    if (size > d->bin_len - d->bin_pos)
      return fail(d, HS_PARSE, "input %s: binary data ends after %zu of %llu bytes", name, d->bin_len - d->bin_pos,
                  (unsigned long long)size);
    const char *p = d->bin + d->bin_pos;
    d->bin_pos += size;
    if (((uintptr_t)p % (es < 8 ? es : 8)) == 0) {
      in->t.data = (void *)p; /* zero copy: a view into the body */
    } else {
      in->t.data = malloc(size ? size : 1);
      if (!in->t.data) return fail(d, HS_NO_MEMORY, "input %s: out of memory", name);
      memcpy(in->t.data, p, size);
      in->owned = true;
    }
    return 1;
  }
  if (!d->cur.has_data) return fail(d, HS_PARSE, "input %s has no \"data\"", name);
  if ((int64_t)d->cur.n_scalars != numel)
    return fail(d, HS_INVALID_ARGUMENT, "input %s: \"data\" holds %zu elements, the shape needs %lld", name,
                d->cur.n_scalars, (long long)numel);
  in->t.data = malloc(in->t.nbytes ? in->t.nbytes : 1);
  if (!in->t.data) return fail(d, HS_NO_MEMORY, "input %s: out of memory", name);
  in->owned = true;
  if (!convert_data(d, in)) return 0;
  d->arena_len = d->cur.data_start; /* the texts are no longer needed */
  return 1;
}

static int close_container(void *ctx) {
  dec *d = ctx;
  if (d->skip_from) {
    if (d->depth-- == d->skip_from) d->skip_from = 0;
    return 1;
  }
  dec_frame f = d->st[--d->depth];
  switch (f.kind) {
    case C_INPUT: return finish_input(d);
    case C_SHAPE: d->cur.has_shape = true; return 1;
    case C_DATA: d->cur.data_levels--; return 1;
    case C_OUTPUT:
      if (!d->out->outputs[d->out->n_outputs - 1].name[0])
        return fail(d, HS_PARSE, "outputs[%zu] needs a string \"name\"", d->out->n_outputs - 1);
      return 1;
    case C_ROOT:
      if (!d->has_inputs) return fail(d, HS_PARSE, "the request needs an \"inputs\" array");
      return 1;
    default: return 1;
  }
}

static const yajl_callbacks k_callbacks = {
    .yajl_null = cb_null,
    .yajl_boolean = cb_bool,
    .yajl_number = cb_number,
    .yajl_string = cb_string,
    .yajl_start_map = cb_start_map,
    .yajl_map_key = cb_key,
    .yajl_end_map = close_container,
    .yajl_start_array = cb_start_array,
    .yajl_end_array = close_container,
};

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
  dec d = {.lim = lim, .out = out, .err = err, .bin = body + json_len, .bin_len = len - json_len,
           .have_binary = have_binary};
  yajl_handle h = yajl_alloc(&k_callbacks, NULL, &d);
  if (!h) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  yajl_status st = yajl_parse(h, (const unsigned char *)body, json_len);
  bool at_end = false; /* the error is that the body ended early (yajl_complete_parse consumed nothing) */
  if (st == yajl_status_ok) {
    st = yajl_complete_parse(h);
    at_end = true;
  }
  if (st == yajl_status_error && d.rc == 0) {
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    size_t at = at_end ? json_len : yajl_get_bytes_consumed(h);
    const char *m = msg ? (const char *)msg : "syntax error";
    size_t ml = strcspn(m, "\n");
    d.rc = hs_error_set(err, HS_PARSE, "malformed JSON near byte %zu: %.*s", at, (int)ml, m);
    if (msg) yajl_free_error(h, msg);
  } else if (st != yajl_status_ok && d.rc == 0) {
    d.rc = hs_error_set(err, HS_PARSE, "malformed JSON");
  }
  yajl_free(h);
  if (d.rc == 0 && d.bin_pos != d.bin_len)
    d.rc = hs_error_set(err, HS_PARSE, "%zu bytes of binary data follow the inputs that no input claims",
                        d.bin_len - d.bin_pos);
  for (size_t i = 0; d.rc == 0 && i < out->n_outputs; i++)
    if (!d.out_binary_set[i]) out->outputs[i].binary = out->binary_default;
  free(d.arena);
  free(d.out_binary_set);
  if (d.rc != 0) {
    hs_infer_request_free(out);
    return d.rc;
  }
  return HS_OK;
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

/* decode.c - ONNX protobuf (ModelProto, GraphProto, NodeProto, TensorProto, AttributeProto,
 * ValueInfoProto) into the engine's IR, through the bounded reader in pb.c.
 *
 * Every size that comes from the file is checked before it is used: element counts against the
 * bytes actually present, dimension products against overflow, external data against the size
 * of the file it names. Nothing is allocated that the input bytes do not pay for.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/wblock.h"
#include "onnx/onnx.h"
#include "onnx/pb.h"

#define BAD(err, what) hs_error_set(err, HS_PARSE, "malformed model: %s", what)

/* ---- small helpers ---------------------------------------------------------------------------- */

static char *dup_bytes(const uint8_t *d, size_t n) {
  if (memchr(d, 0, n)) return NULL; /* embedded NUL: refuse rather than truncate */
  char *s = malloc(n + 1);
  if (!s) return NULL;
  memcpy(s, d, n);
  s[n] = 0;
  return s;
}

static int read_string(hs_pb *r, char **out, hs_error *err) {
  const uint8_t *d;
  size_t n;
  if (hs_pb_bytes(r, &d, &n)) return BAD(err, "string past the end");
  char *s = dup_bytes(d, n);
  if (!s) return hs_error_set(err, HS_PARSE, "malformed model: string with a NUL byte (or out of memory)");
  free(*out);
  *out = s;
  return 0;
}

typedef struct {
  int64_t *v;
  size_t n, cap;
} i64vec;

static int i64_push(i64vec *a, int64_t x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 8;
    int64_t *nv = realloc(a->v, cap * sizeof *nv);
    if (!nv) return HS_NO_MEMORY;
    a->v = nv;
    a->cap = cap;
  }
  a->v[a->n++] = x;
  return 0;
}

/* Repeated varint field, packed (wire 2) or not (wire 0). */
static int read_varints(hs_pb *r, int wire, i64vec *a, hs_error *err) {
  uint64_t x;
  if (wire == HS_PB_VARINT) {
    if (hs_pb_varint(r, &x)) return BAD(err, "bad varint");
    return i64_push(a, (int64_t)x) ? hs_error_set(err, HS_NO_MEMORY, "out of memory") : 0;
  }
  if (wire != HS_PB_BYTES) return BAD(err, "wrong wire type for a repeated integer");
  hs_pb sub;
  if (hs_pb_sub(r, &sub)) return BAD(err, "packed field past the end");
  while (hs_pb_more(&sub)) {
    if (hs_pb_varint(&sub, &x)) return BAD(err, "bad packed varint");
    if (i64_push(a, (int64_t)x)) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  return 0;
}

int hs_read_file(const char *path, size_t max_bytes, void **data, size_t *len, hs_error *err) {
  char *buf = NULL;
  int rc = hs_file_read(path, max_bytes, &buf, len, err); /* base/file.c: one reader, one size policy */
  *data = buf;
  return rc;
}

/* ---- TensorProto ------------------------------------------------------------------------------ */

static int onnx_dtype(int64_t t, hs_dtype *out) {
  switch (t) {
#define HS_DT_CASE(name, onnx, size, kserve, npy) \
  case onnx:                                       \
    *out = HS_DT_##name;                           \
    return 0;
    HS_DTYPE_MAP(HS_DT_CASE)
#undef HS_DT_CASE
    default:
      return -1;
  }
}

/* Refuses a location that is absolute, empty or has a ".." component (it would leave the folder). */
static int check_location(const char *location, hs_error *err) {
  if (location[0] == '/' || location[0] == 0)
    return hs_error_set(err, HS_VERIFY, "external data location '%s' is not relative to the model folder",
                        location);
  for (const char *p = location; *p;) {
    const char *slash = strchr(p, '/');
    size_t l = slash ? (size_t)(slash - p) : strlen(p);
    if (l == 2 && p[0] == '.' && p[1] == '.')
      return hs_error_set(err, HS_VERIFY, "external data location '%s' leaves the model folder", location);
    p += l + (slash ? 1 : 0);
  }
  return 0;
}

/* Opens base_dir/location for reading, refusing anything that leaves base_dir. */
static int open_external(const char *base_dir, const char *location, int *fd_out, hs_error *err) {
  if (!base_dir) return hs_error_set(err, HS_UNSUPPORTED, "external data '%s' but no model folder", location);
  int rc = check_location(location, err);
  if (rc) return rc;
  char path[PATH_MAX], real_base[PATH_MAX], real_file[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%s", base_dir, location) >= (int)sizeof path)
    return hs_error_set(err, HS_LIMIT, "external data path too long");
  if (!realpath(base_dir, real_base))
    return hs_error_set(err, HS_IO, "model folder %s: %s", base_dir, strerror(errno));
  if (!realpath(path, real_file))
    return hs_error_set(err, HS_NOT_FOUND, "external data '%s': %s", location, strerror(errno));
  size_t bl = strlen(real_base);
  if (strncmp(real_file, real_base, bl) != 0 || (real_file[bl] != '/' && real_base[bl - 1] != '/'))
    return hs_error_set(err, HS_VERIFY, "external data location '%s' resolves outside the model folder",
                        location);
  int fd = open(real_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return hs_error_set(err, HS_IO, "external data '%s': %s", location, strerror(errno));
  *fd_out = fd;
  return 0;
}

/* location without "./" prefixes and repeated slashes, into want. */
static void normalize_location(const char *location, char want[PATH_MAX]) {
  size_t n = 0;
  for (const char *p = location; *p && n + 1 < PATH_MAX;) {
    if (p[0] == '/' && (n == 0 || want[n - 1] == '/')) { p++; continue; }
    if (p[0] == '.' && p[1] == '/' && (n == 0 || want[n - 1] == '/')) { p += 2; continue; }
    want[n++] = *p++;
  }
  want[n] = 0;
}

/* The index of the file of src->files named by location whose bytes are not in memory (data NULL:
 * they come through src->open; for the model file itself, open refuses), or -1. */
static long find_streamed(const hs_onnx_source *src, const char *location) {
  char want[PATH_MAX];
  normalize_location(location, want);
  for (size_t i = 0; i < src->n_files; i++)
    if (src->files[i].path && !src->files[i].data && strcmp(src->files[i].path, want) == 0) return (long)i;
  return -1;
}

/* The file of src->files named by location ("./" prefixes and repeated slashes ignored), or NULL. */
static const hs_backend_file *find_external(const hs_onnx_source *src, const char *location) {
  char want[PATH_MAX];
  normalize_location(location, want);
  /* a file whose bytes are not in memory (data NULL: the model file of a streamed load) has none to give */
  for (size_t i = 0; i < src->n_files; i++)
    if (src->files[i].path && src->files[i].data && strcmp(src->files[i].path, want) == 0) return &src->files[i];
  return NULL;
}

/* Copies `want` bytes at offset of an external file given in memory (src->files), after checking
 * they exist in it. A location that is not among the files is an error: the caller handed over
 * every file the model may read (the verified bytes), so nothing is read from disk. */
static int locate_external(const hs_onnx_source *src, const char *location, int64_t offset, int64_t length,
                           size_t want, const void **at, hs_error *err) {
  int rc = check_location(location, err);
  if (rc) return rc;
  const hs_backend_file *f = find_external(src, location);
  if (!f && src->open && find_streamed(src, location) >= 0)
    return hs_error_set(err, HS_NEEDS_WHOLE_FILES, "external data '%s' outside the main graph's initializers: the "
                        "model needs its external data files whole", location);
  if (!f) return hs_error_set(err, HS_NOT_FOUND, "external data '%s' is not among the model's files", location);
  if (length < 0) length = (int64_t)want;
  if (offset < 0 || (uint64_t)length != want || (uint64_t)offset > f->len || (uint64_t)length > f->len - (uint64_t)offset)
    return hs_error_set(err, HS_PARSE, "external data '%s': offset %lld length %lld do not fit the file (%zu bytes) "
                        "or the tensor (%zu bytes)", location, (long long)offset, (long long)length, f->len, want);
  *at = (const char *)f->data + offset;
  return 0;
}

static int copy_external(const hs_onnx_source *src, const char *location, int64_t offset, int64_t length,
                         size_t want, void **out, hs_error *err) {
  const void *at = NULL;
  int rc = locate_external(src, location, offset, length, want, &at, err);
  if (rc) return rc;
  char *dst = malloc(want ? want : 1);
  if (!dst) return hs_error_set(err, HS_NO_MEMORY, "out of memory for external data '%s'", location);
  if (want) memcpy(dst, at, want);
  *out = dst;
  return 0;
}

/* Reads `want` bytes at offset into a new malloc'ed *out, after checking they exist in the file. */
static int read_external(const hs_onnx_source *src, const char *location, int64_t offset, int64_t length,
                         size_t want, void **out, hs_error *err) {
  if (src->files) return copy_external(src, location, offset, length, want, out, err);
  int fd, rc;
  if ((rc = open_external(src->base_dir, location, &fd, err))) return rc;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return hs_error_set(err, HS_IO, "external data '%s' is not a regular file", location);
  }
  if (length < 0) length = (int64_t)want;
  if (offset < 0 || (uint64_t)length != want || offset > st.st_size || length > st.st_size - offset) {
    close(fd);
    return hs_error_set(err, HS_PARSE, "external data '%s': offset %lld length %lld do not fit the file (%lld bytes) "
                        "or the tensor (%zu bytes)", location, (long long)offset, (long long)length,
                        (long long)st.st_size, want);
  }
  char *dst = malloc(want ? want : 1);
  if (!dst) {
    close(fd);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory for external data '%s'", location);
  }
  size_t done = 0;
  while (done < want) {
    ssize_t got = pread(fd, dst + done, want - done, (off_t)(offset + (int64_t)done));
    if (got <= 0) {
      free(dst);
      close(fd);
      return hs_error_set(err, HS_IO, "external data '%s': short read", location);
    }
    done += (size_t)got;
  }
  close(fd);
  *out = dst;
  return 0;
}

/* A TensorProto's fields other than its typed data (read by read_tensor_fields). */
typedef struct tensor_fields {
  i64vec dims;
  int64_t dtype_raw;
  const uint8_t *raw; /* raw_data, pointing into the message */
  size_t raw_len;
  int has_raw, external;
  char *name, *location; /* owned */
  int64_t ext_offset, ext_length; /* ext_length -1: not given */
} tensor_fields;

static void tensor_fields_free(tensor_fields *tf) {
  free(tf->dims.v);
  free(tf->name);
  free(tf->location);
}

static const char *tensor_name(const tensor_fields *tf) { return tf->name ? tf->name : ""; }

/* One external_data entry (StringStringEntryProto): location, offset or length. */
static int read_external_entry(hs_pb *r, tensor_fields *tf, hs_error *err) {
  hs_pb e;
  char *key = NULL, *val = NULL;
  int rc = 0;
  if (hs_pb_sub(r, &e)) return BAD(err, "external_data past the end");
  while (hs_pb_more(&e) && rc == 0) {
    uint32_t ef;
    int ew;
    if (hs_pb_key(&e, &ef, &ew)) rc = BAD(err, "bad external_data entry");
    else if (ef == 1 && ew == HS_PB_BYTES) rc = read_string(&e, &key, err);
    else if (ef == 2 && ew == HS_PB_BYTES) rc = read_string(&e, &val, err);
    else if (hs_pb_skip(&e, ew)) rc = BAD(err, "bad external_data entry");
  }
  if (rc == 0 && key && val) {
    if (strcmp(key, "location") == 0) {
      free(tf->location);
      tf->location = val;
      val = NULL;
    } else if (strcmp(key, "offset") == 0 || strcmp(key, "length") == 0) {
      char *end;
      errno = 0;
      long long x = strtoll(val, &end, 10);
      if (errno || *end || end == val || x < 0) rc = BAD(err, "bad external data offset/length");
      else if (key[0] == 'o') tf->ext_offset = x;
      else tf->ext_length = x;
    }
  }
  free(key);
  free(val);
  return rc;
}

/* Pass 1 over a TensorProto: everything except the typed data fields. */
static int read_tensor_fields(const void *buf, size_t len, tensor_fields *tf, hs_error *err) {
  hs_pb r;
  uint32_t f;
  int w, rc = 0;
  hs_pb_init(&r, buf, len);
  while (hs_pb_more(&r)) {
    if (hs_pb_key(&r, &f, &w)) return BAD(err, "bad tensor field");
    uint64_t v;
    if (f == 1) {
      if ((rc = read_varints(&r, w, &tf->dims, err))) return rc;
    } else if (f == 2 && w == HS_PB_VARINT) {
      if (hs_pb_varint(&r, &v)) return BAD(err, "bad tensor data_type");
      tf->dtype_raw = (int64_t)v;
    } else if (f == 8 && w == HS_PB_BYTES) {
      if ((rc = read_string(&r, &tf->name, err))) return rc;
    } else if (f == 9 && w == HS_PB_BYTES) {
      if (hs_pb_bytes(&r, &tf->raw, &tf->raw_len)) return BAD(err, "tensor raw_data past the end");
      tf->has_raw = 1;
    } else if (f == 14 && w == HS_PB_VARINT) {
      if (hs_pb_varint(&r, &v)) return BAD(err, "bad data_location");
      tf->external = v == 1;
    } else if (f == 13 && w == HS_PB_BYTES) {
      if ((rc = read_external_entry(&r, tf, err))) return rc;
    } else if (hs_pb_skip(&r, w)) {
      return BAD(err, "bad tensor field");
    }
  }
  return 0;
}

/* out's dtype and shape from the fields; *nbytes the size its data must have. */
static int tensor_shape(const tensor_fields *tf, hs_tensor *out, size_t *nbytes, hs_error *err) {
  hs_dtype dt;
  if (onnx_dtype(tf->dtype_raw, &dt))
    return hs_error_set(err, HS_UNSUPPORTED, "tensor '%s': data type %lld is not supported", tensor_name(tf),
                        (long long)tf->dtype_raw);
  if (tf->dims.n > HS_MAX_DIMS)
    return hs_error_set(err, HS_UNSUPPORTED, "tensor '%s': %zu dimensions (at most %d)", tensor_name(tf),
                        tf->dims.n, HS_MAX_DIMS);
  memset(out, 0, sizeof *out);
  out->dtype = dt;
  out->ndim = (int)tf->dims.n;
  for (size_t i = 0; i < tf->dims.n; i++) out->dims[i] = tf->dims.v[i];
  int64_t numel = hs_shape_numel(out->dims, out->ndim);
  size_t esz = hs_dtype_size(dt);
  if (numel < 0 || (uint64_t)numel > SIZE_MAX / esz)
    return hs_error_set(err, HS_PARSE, "tensor '%s': negative or overflowing dimensions", tensor_name(tf));
  *nbytes = (size_t)numel * esz;
  return 0;
}

/* The TensorProto field that holds dtype dt's values when they are not raw_data. */
static int typed_field(hs_dtype dt) {
  switch (dt) {
    case HS_DT_FLOAT32: return 4;
    case HS_DT_INT64: return 7;
    case HS_DT_FLOAT64: return 10;
    case HS_DT_UINT32: case HS_DT_UINT64: return 11;
    default: return 5; /* int32, int16, int8, uint16, uint8, bool, float16 */
  }
}

/* Counts the values present in typed field `field` (packed or not), without storing them. */
static int count_typed(const void *buf, size_t len, int field, uint64_t *present, hs_error *err) {
  hs_pb r;
  uint32_t f;
  int w;
  *present = 0;
  hs_pb_init(&r, buf, len);
  while (hs_pb_more(&r)) {
    const uint8_t *pd;
    size_t pl;
    if (hs_pb_key(&r, &f, &w)) return BAD(err, "bad tensor field");
    if ((int)f != field || w != HS_PB_BYTES) {
      if ((int)f == field) (*present)++;
      if (hs_pb_skip(&r, w)) return BAD(err, "bad tensor field");
      continue;
    }
    if (hs_pb_bytes(&r, &pd, &pl)) return BAD(err, "packed data past the end");
    if (field == 4) *present += pl / 4;
    else if (field == 10) *present += pl / 8;
    else
      for (size_t i = 0; i < pl; i++) *present += pd[i] < 0x80;
  }
  return 0;
}

/* Pass 2: the values of typed field `field` into data (numel elements of esz bytes each). Elements
 * are counted as they arrive and never exceed numel. */
static int read_typed(const void *buf, size_t len, int field, size_t esz, int64_t numel, const char *name, void *data,
                      hs_error *err) {
  hs_pb r;
  uint32_t f;
  int w;
  size_t count = 0;
  hs_pb_init(&r, buf, len);
  while (hs_pb_more(&r)) {
    if (hs_pb_key(&r, &f, &w)) return BAD(err, "bad tensor field");
    if ((int)f != field) {
      if (hs_pb_skip(&r, w)) return BAD(err, "bad tensor field");
      continue;
    }
    hs_pb sub = r;
    int packed = w == HS_PB_BYTES;
    if (packed && hs_pb_sub(&r, &sub)) return BAD(err, "packed data past the end");
    hs_pb *src = packed ? &sub : &r;
    do {
      if ((int64_t)count >= numel)
        return hs_error_set(err, HS_PARSE, "tensor '%s': more values than its shape holds", name);
      uint64_t v = 0;
      uint32_t v32 = 0;
      if (field == 4) {
        if ((packed ? 0 : w != HS_PB_FIXED32) || hs_pb_fixed32(src, &v32)) return BAD(err, "bad float_data");
        memcpy((char *)data + count * 4, &v32, 4);
      } else if (field == 10) {
        if ((packed ? 0 : w != HS_PB_FIXED64) || hs_pb_fixed64(src, &v)) return BAD(err, "bad double_data");
        memcpy((char *)data + count * 8, &v, 8);
      } else {
        if ((packed ? 0 : w != HS_PB_VARINT) || hs_pb_varint(src, &v)) return BAD(err, "bad integer data");
        char *dst = (char *)data + count * esz;
        if (esz == 8) { int64_t x = (int64_t)v; memcpy(dst, &x, 8); }
        else if (esz == 4) { uint32_t x = (uint32_t)v; memcpy(dst, &x, 4); }
        else if (esz == 2) { uint16_t x = (uint16_t)v; memcpy(dst, &x, 2); }
        else { uint8_t x = (uint8_t)v; memcpy(dst, &x, 1); }
      }
      count++;
    } while (packed && hs_pb_more(&sub));
  }
  if ((int64_t)count != numel)
    return hs_error_set(err, HS_PARSE, "tensor '%s': %zu values for a shape of %lld elements", name, count,
                        (long long)numel);
  return 0;
}

/* The tensor's bytes into a new malloc'ed *data (NULL when empty): from an external file, raw_data,
 * or the typed field of its dtype. */
static int tensor_data(const void *buf, size_t len, const hs_onnx_source *src, const tensor_fields *tf,
                       const hs_tensor *t, size_t nbytes, void **own_raw, void **data, hs_error *err) {
  int rc;
  *data = NULL;
  if (tf->external) {
    if (!tf->location) return BAD(err, "external tensor without a location");
    if ((rc = read_external(src, tf->location, tf->ext_offset, tf->ext_length, nbytes, data, err))) return rc;
    if (!nbytes) {
      free(*data);
      *data = NULL;
    }
    return 0;
  }
  if (tf->has_raw) {
    if (tf->raw_len != nbytes)
      return hs_error_set(err, HS_PARSE, "tensor '%s': raw_data has %zu bytes, its shape needs %zu", tensor_name(tf),
                          tf->raw_len, nbytes);
    if (nbytes && own_raw && *own_raw) { /* the payload was read straight into its own buffer: take it */
      *data = *own_raw;
      *own_raw = NULL;
      return 0;
    }
    if (nbytes && !(*data = malloc(nbytes))) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
    if (nbytes) memcpy(*data, tf->raw, nbytes);
    return 0;
  }
  int field = typed_field(t->dtype);
  int64_t numel = hs_shape_numel(t->dims, t->ndim);
  uint64_t present;
  /* count first, so a shape with no data behind it allocates nothing */
  if ((rc = count_typed(buf, len, field, &present, err))) return rc;
  if (present != (uint64_t)numel)
    return hs_error_set(err, HS_PARSE, "tensor '%s': %llu values for a shape of %lld elements", tensor_name(tf),
                        (unsigned long long)present, (long long)numel);
  if (nbytes && !(*data = malloc(nbytes))) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  if ((rc = read_typed(buf, len, field, hs_dtype_size(t->dtype), numel, tensor_name(tf), *data, err))) {
    free(*data);
    *data = NULL;
  }
  return rc;
}

/* Offers a weight-like tensor whose bytes are in memory to src->share before it is copied (onnx.h,
 * hs_onnx_share). Returns 1 with *ref taken when an identical copy is held elsewhere, 0 otherwise
 * (also when the bytes are not where they should be: tensor_data then reports that). */
static int share_tensor(const hs_onnx_source *src, const tensor_fields *tf, const hs_tensor *t, size_t nbytes,
                        void **ref) {
  const hs_onnx_share *sh = src->share;
  if (!sh || t->dtype != HS_DT_FLOAT32 || t->ndim < 3 || nbytes < HS_ONNX_SHARE_MIN_BYTES) return 0;
  const void *at = NULL;
  hs_error ignored;
  if (tf->external) {
    if (!src->files || !tf->location ||
        locate_external(src, tf->location, tf->ext_offset, tf->ext_length, nbytes, &at, &ignored))
      return 0;
  } else if (tf->has_raw && tf->raw_len == nbytes) {
    at = tf->raw;
  } else {
    return 0;
  }
  return sh->find(sh->user, at, nbytes, ref) == 1;
}

/* A raw_data payload read apart from its TensorProto (the stream decoder): its bytes and whether it
 * was present; data is malloc'ed, and set to NULL when the tensor takes it. */
typedef struct raw_payload {
  void *data;
  size_t len;
  int present;
  int compared; /* already offered to the share hook as it arrived: not offered again */
  void *held;   /* what that hook holds instead (data NULL): the tensor's reference */
} raw_payload;

/* A TensorProto from buf, whose raw_data (when raw is given) was read apart into raw. */
static int decode_tensor_raw(const void *buf, size_t len, raw_payload *raw, const hs_onnx_source *src,
                             hs_tensor *out, char **name_out, void **ref, hs_error *err) {
  tensor_fields tf = {.ext_length = -1};
  size_t nbytes = 0;
  void *data = NULL;
  int rc = read_tensor_fields(buf, len, &tf, err);
  if (rc == 0 && raw && raw->present) {
    tf.has_raw = 1;
    tf.raw = raw->len ? raw->data : (const uint8_t *)"";
    tf.raw_len = raw->len;
  }
  if (rc == 0) rc = tensor_shape(&tf, out, &nbytes, err);
  int shared = 0;
  if (rc == 0 && ref && raw && raw->held) { /* its bytes were found held as they arrived */
    *ref = raw->held;
    raw->held = NULL;
    shared = 1;
  } else if (rc == 0 && ref && !(raw && raw->compared)) {
    shared = share_tensor(src, &tf, out, nbytes, ref);
  }
  if (rc == 0 && !shared) rc = tensor_data(buf, len, src, &tf, out, nbytes, raw ? &raw->data : NULL, &data, err);
  if (rc) {
    tensor_fields_free(&tf);
    return rc;
  }
  out->data = data;
  out->nbytes = nbytes;
  if (name_out) {
    *name_out = tf.name ? tf.name : strdup("");
    tf.name = NULL;
  }
  tensor_fields_free(&tf);
  return 0;
}

static int decode_tensor(const void *buf, size_t len, const hs_onnx_source *src, hs_tensor *out, char **name_out,
                         void **ref, hs_error *err) {
  return decode_tensor_raw(buf, len, NULL, src, out, name_out, ref, err);
}

int hs_onnx_decode_tensor(const void *buf, size_t len, const char *base_dir, hs_tensor *out, char **name,
                          hs_error *err) {
  hs_onnx_source src = {.base_dir = base_dir};
  return decode_tensor(buf, len, &src, out, name, NULL, err);
}

/* ref: NULL, or where an initializer's shared reference goes (share_tensor). */
static int decode_tensor_msg(hs_pb *r, const hs_onnx_source *src, hs_tensor *t, char **name, void **ref,
                             hs_error *err) {
  const uint8_t *d;
  size_t n;
  if (hs_pb_bytes(r, &d, &n)) return BAD(err, "tensor past the end");
  return decode_tensor(d, n, src, t, name, ref, err);
}

/* ---- ValueInfoProto --------------------------------------------------------------------------- */

typedef struct {
  char *name;
  hs_dtype dtype;
  int ndim; /* -1 unknown */
  int64_t dims[HS_MAX_DIMS];
} value_info;

static int decode_value_info(hs_pb *r, value_info *vi, hs_error *err) {
  hs_pb m, type, tt, shape, dim;
  uint32_t f;
  int w;
  memset(vi, 0, sizeof *vi);
  vi->ndim = -1;
  if (hs_pb_sub(r, &m)) return BAD(err, "value info past the end");
  while (hs_pb_more(&m)) {
    if (hs_pb_key(&m, &f, &w)) return BAD(err, "bad value info");
    if (f == 1 && w == HS_PB_BYTES) {
      int rc = read_string(&m, &vi->name, err);
      if (rc) return rc;
    } else if (f == 2 && w == HS_PB_BYTES) {
      if (hs_pb_sub(&m, &type)) return BAD(err, "bad type");
      while (hs_pb_more(&type)) {
        if (hs_pb_key(&type, &f, &w)) return BAD(err, "bad type");
        if (f != 1 || w != HS_PB_BYTES) { /* sequence/map/optional types: leave dtype undefined */
          if (hs_pb_skip(&type, w)) return BAD(err, "bad type");
          continue;
        }
        if (hs_pb_sub(&type, &tt)) return BAD(err, "bad tensor type");
        while (hs_pb_more(&tt)) {
          uint64_t v;
          if (hs_pb_key(&tt, &f, &w)) return BAD(err, "bad tensor type");
          if (f == 1 && w == HS_PB_VARINT) {
            if (hs_pb_varint(&tt, &v)) return BAD(err, "bad elem_type");
            if (onnx_dtype((int64_t)v, &vi->dtype)) vi->dtype = HS_DT_UNDEFINED;
            if (v && vi->dtype == HS_DT_UNDEFINED)
              return hs_error_set(err, HS_UNSUPPORTED, "value '%s': element type %llu is not supported",
                                  vi->name ? vi->name : "", (unsigned long long)v);
          } else if (f == 2 && w == HS_PB_BYTES) {
            if (hs_pb_sub(&tt, &shape)) return BAD(err, "bad shape");
            vi->ndim = 0;
            while (hs_pb_more(&shape)) {
              if (hs_pb_key(&shape, &f, &w)) return BAD(err, "bad shape");
              if (f != 1 || w != HS_PB_BYTES) {
                if (hs_pb_skip(&shape, w)) return BAD(err, "bad shape");
                continue;
              }
              if (vi->ndim >= HS_MAX_DIMS)
                return hs_error_set(err, HS_UNSUPPORTED, "value '%s' has more than %d dimensions",
                                    vi->name ? vi->name : "", HS_MAX_DIMS);
              int64_t d = -1;
              if (hs_pb_sub(&shape, &dim)) return BAD(err, "bad dimension");
              while (hs_pb_more(&dim)) {
                if (hs_pb_key(&dim, &f, &w)) return BAD(err, "bad dimension");
                if (f == 1 && w == HS_PB_VARINT) {
                  if (hs_pb_varint(&dim, &v)) return BAD(err, "bad dim_value");
                  d = (int64_t)v;
                  if (d < 0) d = -1; /* a negative size is treated as unknown */
                } else if (hs_pb_skip(&dim, w)) {
                  return BAD(err, "bad dimension");
                }
              }
              vi->dims[vi->ndim++] = d;
            }
          } else if (hs_pb_skip(&tt, w)) {
            return BAD(err, "bad tensor type");
          }
        }
      }
    } else if (hs_pb_skip(&m, w)) {
      return BAD(err, "bad value info");
    }
  }
  if (!vi->name) return BAD(err, "value info without a name");
  return 0;
}

/* ---- AttributeProto --------------------------------------------------------------------------- */

static int decode_subgraph(const uint8_t *d, size_t len, int depth, const hs_onnx_source *src,
                           hs_graph **out, hs_error *err);

static int decode_attr(hs_pb *r, const hs_onnx_source *src, hs_attr *a, hs_error *err) {
  hs_pb m;
  uint32_t f;
  int w, rc = 0;
  i64vec ints = {0};
  size_t n_floats = 0, cap_floats = 0;
  int64_t type = 0;
  int seen = 0; /* bit per kind seen, for files that omit `type` */
  char *strs = NULL; /* STRINGS: the strings back to back, each NUL-terminated */
  size_t strs_len = 0;
  memset(a, 0, sizeof *a);
  if (hs_pb_sub(r, &m)) return BAD(err, "attribute past the end");
  while (hs_pb_more(&m) && rc == 0) {
    uint64_t v = 0;
    uint32_t v32 = 0;
    if (hs_pb_key(&m, &f, &w)) { rc = BAD(err, "bad attribute"); break; }
    switch (f) {
      case 1:
        rc = w == HS_PB_BYTES ? read_string(&m, &a->name, err) : BAD(err, "bad attribute name");
        break;
      case 20:
        if (w != HS_PB_VARINT || hs_pb_varint(&m, &v)) rc = BAD(err, "bad attribute type");
        type = (int64_t)v;
        break;
      case 2:
        if (w != HS_PB_FIXED32 || hs_pb_fixed32(&m, &v32)) rc = BAD(err, "bad float attribute");
        memcpy(&a->f, &v32, 4);
        seen |= 1 << HS_ATTR_FLOAT;
        break;
      case 3:
        if (w != HS_PB_VARINT || hs_pb_varint(&m, &v)) rc = BAD(err, "bad int attribute");
        a->i = (int64_t)v;
        seen |= 1 << HS_ATTR_INT;
        break;
      case 4: {
        const uint8_t *d;
        size_t n;
        if (w != HS_PB_BYTES || hs_pb_bytes(&m, &d, &n)) { rc = BAD(err, "bad string attribute"); break; }
        free(a->s);
        a->s = malloc(n + 1); /* strings may hold any bytes; keep them NUL-terminated */
        if (!a->s) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); break; }
        memcpy(a->s, d, n);
        a->s[n] = 0;
        seen |= 1 << HS_ATTR_STRING;
        break;
      }
      case 5: {
        if (w != HS_PB_BYTES) { rc = BAD(err, "bad tensor attribute"); break; }
        if (a->tensor) { free(a->tensor->t.data); free(a->tensor); a->tensor = NULL; }
        a->tensor = calloc(1, sizeof *a->tensor);
        if (!a->tensor) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); break; }
        rc = decode_tensor_msg(&m, src, &a->tensor->t, NULL, NULL, err);
        seen |= 1 << HS_ATTR_TENSOR;
        break;
      }
      case 6: {
        const uint8_t *d;
        size_t n;
        seen |= 1 << HS_ATTR_GRAPH;
        if (w != HS_PB_BYTES || hs_pb_bytes(&m, &d, &n)) { rc = BAD(err, "bad graph attribute"); break; }
        if (a->graph) { hs_graph_free(a->graph); free(a->graph); a->graph = NULL; }
        rc = decode_subgraph(d, n, m.depth + 1, src, &a->graph, err);
        break;
      }
      case 7: {
        hs_pb sub = m;
        int packed = w == HS_PB_BYTES;
        if (packed && hs_pb_sub(&m, &sub)) { rc = BAD(err, "bad floats attribute"); break; }
        if (!packed && w != HS_PB_FIXED32) { rc = BAD(err, "bad floats attribute"); break; }
        hs_pb *src = packed ? &sub : &m;
        while (rc == 0 && (packed ? hs_pb_more(&sub) : 1)) {
          if (hs_pb_fixed32(src, &v32)) { rc = BAD(err, "bad floats attribute"); break; }
          if (n_floats == cap_floats) {
            size_t cap = cap_floats ? cap_floats * 2 : 8;
            float *nf = realloc(a->floats, cap * sizeof *nf);
            if (!nf) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); break; }
            a->floats = nf;
            cap_floats = cap;
          }
          memcpy(&a->floats[n_floats++], &v32, 4);
          if (!packed) break;
        }
        seen |= 1 << HS_ATTR_FLOATS;
        break;
      }
      case 8:
        rc = read_varints(&m, w, &ints, err);
        seen |= 1 << HS_ATTR_INTS;
        break;
      case 9: {
        const uint8_t *d;
        size_t n;
        if (w != HS_PB_BYTES || hs_pb_bytes(&m, &d, &n) || memchr(d, 0, n)) {
          rc = BAD(err, "bad strings attribute");
          break;
        }
        char *ns = realloc(strs, strs_len + n + 1);
        if (!ns) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); break; }
        strs = ns;
        if (n) memcpy(strs + strs_len, d, n);
        strs[strs_len + n] = 0;
        strs_len += n + 1;
        a->n++;
        seen |= 1 << HS_ATTR_STRINGS;
        break;
      }
      default:
        if (f == 10 || f == 11 || f == 22 || f == 23) seen |= 1 << 15; /* tensors, graphs, sparse */
        if (hs_pb_skip(&m, w)) rc = BAD(err, "bad attribute field");
    }
  }
  if (rc) {
    free(ints.v);
    free(strs);
    return rc;
  }
  if (!a->name) {
    free(ints.v);
    free(strs);
    return BAD(err, "attribute without a name");
  }
  if (type == 0) { /* pre-IR-v2 files: guess from the field that was present */
    for (int t = 1; t <= 8; t++)
      if (seen & (1 << t)) type = t;
  }
  if (type != HS_ATTR_STRINGS) free(strs);
  if (type < 1 || type > 8 || (type == HS_ATTR_GRAPH && !a->graph)) {
    free(ints.v);
    type = type ? type : 15;
    a->type = HS_ATTR_UNDEFINED;
    return 0; /* ops reject attributes they do not know; an unknown kind fails there */
  }
  a->type = (hs_attr_type)type;
  if (a->type == HS_ATTR_INTS) {
    a->ints = ints.v;
    a->n = ints.n;
  } else {
    free(ints.v);
  }
  if (a->type == HS_ATTR_FLOATS) a->n = n_floats;
  if (a->type == HS_ATTR_STRINGS) {
    free(a->s);
    a->s = strs;
  }
  if (a->type == HS_ATTR_TENSOR && !a->tensor) return BAD(err, "tensor attribute without a tensor");
  if (a->type == HS_ATTR_STRING && !a->s) {
    a->s = strdup("");
    if (!a->s) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  return 0;
}

/* ---- NodeProto -------------------------------------------------------------------------------- */

typedef struct {
  char **v;
  int n, cap;
} strvec;

static int str_push(strvec *s, char *x) {
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 4;
    char **nv = realloc(s->v, sizeof(char *) * (size_t)cap);
    if (!nv) return HS_NO_MEMORY;
    s->v = nv;
    s->cap = cap;
  }
  s->v[s->n++] = x;
  return 0;
}

static void str_free(strvec *s) {
  for (int i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
}

/* Finds or creates (as a not-yet-produced intermediate) the value named `name`. */
static int value_ref(hs_graph *g, const char *name, int *out, hs_error *err) {
  int v = hs_graph_find(g, name);
  if (v >= 0) {
    *out = v;
    return 0;
  }
  return hs_graph_add_value(g, name, HS_VAL_INTERMEDIATE, out, err);
}

static int decode_node(hs_graph *g, hs_pb *r, const hs_onnx_source *src, hs_error *err) {
  hs_pb m;
  uint32_t f;
  int w, rc = 0, idx;
  strvec ins = {0}, outs = {0};
  char *name = NULL, *op_type = NULL, *domain = NULL;
  hs_attr *attrs = NULL;
  int n_attrs = 0, cap_attrs = 0;
  if (hs_pb_sub(r, &m)) return BAD(err, "node past the end");
  while (hs_pb_more(&m) && rc == 0) {
    if (hs_pb_key(&m, &f, &w)) { rc = BAD(err, "bad node"); break; }
    if ((f == 1 || f == 2) && w == HS_PB_BYTES) {
      char *s = NULL;
      if ((rc = read_string(&m, &s, err))) break;
      if (str_push(f == 1 ? &ins : &outs, s)) { free(s); rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); }
    } else if (f == 3 && w == HS_PB_BYTES) {
      rc = read_string(&m, &name, err);
    } else if (f == 4 && w == HS_PB_BYTES) {
      rc = read_string(&m, &op_type, err);
    } else if (f == 7 && w == HS_PB_BYTES) {
      rc = read_string(&m, &domain, err);
    } else if (f == 5 && w == HS_PB_BYTES) {
      if (n_attrs == cap_attrs) {
        int cap = cap_attrs ? cap_attrs * 2 : 4;
        hs_attr *na = realloc(attrs, sizeof *na * (size_t)cap);
        if (!na) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); break; }
        attrs = na;
        cap_attrs = cap;
      }
      rc = decode_attr(&m, src, &attrs[n_attrs], err);
      n_attrs++; /* cleared either way below */
    } else if (hs_pb_skip(&m, w)) {
      rc = BAD(err, "bad node field");
    }
  }
  if (rc == 0 && !op_type) rc = BAD(err, "node without an op_type");
  if (rc == 0) rc = hs_graph_add_node(g, &idx, err);
  if (rc) goto fail;
  hs_node *n = &g->nodes[idx];
  n->op_type = op_type;
  n->domain = domain ? domain : strdup("");
  if (strcmp(n->domain, "ai.onnx") == 0) n->domain[0] = 0;
  if (!name || !name[0]) {
    free(name);
    name = malloc(strlen(op_type) + 24);
    if (name) sprintf(name, "%s_%d", op_type, idx);
  }
  n->name = name;
  n->attrs = attrs;
  n->n_attrs = n_attrs;
  op_type = domain = name = NULL;
  attrs = NULL;
  if (!n->name || !n->domain) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); goto fail; }
  n->in = malloc(sizeof(int) * (size_t)(ins.n + 1));
  n->out = malloc(sizeof(int) * (size_t)(outs.n + 1));
  if (!n->in || !n->out) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); goto fail; }
  n->n_in = ins.n;
  n->n_out = outs.n;
  for (int i = 0; i < ins.n; i++) {
    n->in[i] = -1;
    if (ins.v[i][0] && (rc = value_ref(g, ins.v[i], &n->in[i], err))) goto fail;
    n = &g->nodes[idx];
  }
  for (int i = 0; i < outs.n; i++) {
    n->out[i] = -1;
    if (!outs.v[i][0]) continue;
    int v;
    if ((rc = value_ref(g, outs.v[i], &v, err))) goto fail;
    hs_value *val = &g->values[v];
    if (val->kind != HS_VAL_INTERMEDIATE || val->producer >= 0) {
      rc = hs_error_set(err, HS_PARSE, "node '%s' writes '%s', which is already defined", n->name, val->name);
      goto fail;
    }
    val->producer = idx;
    n->out[i] = v;
  }
  /* outer-scope names its subgraphs read become the node's implicit inputs (ir.h, Subgraphs) */
  for (int a = 0; a < n->n_attrs; a++) {
    hs_graph *sub = n->attrs[a].type == HS_ATTR_GRAPH ? n->attrs[a].graph : NULL;
    if (!sub || sub->n_outer == 0) continue;
    int *nin = realloc(n->in, sizeof(int) * (size_t)(n->n_in + sub->n_outer + 1));
    if (!nin) { rc = hs_error_set(err, HS_NO_MEMORY, "out of memory"); goto fail; }
    n->in = nin;
    sub->outer_base = n->n_in;
    for (int j = 0; j < sub->n_outer; j++) {
      const char *vname = sub->values[sub->inputs[sub->n_inputs - sub->n_outer + j]].name;
      int v;
      if ((rc = value_ref(g, vname, &v, err))) goto fail;
      n = &g->nodes[idx];
      n->in[n->n_in++] = v;
      n->n_implicit++;
    }
  }
fail:
  str_free(&ins);
  str_free(&outs);
  free(name);
  free(op_type);
  free(domain);
  if (attrs) {
    for (int i = 0; i < n_attrs; i++) hs_attr_clear(&attrs[i]);
    free(attrs);
  }
  return rc;
}

/* Turns Constant nodes into constant values. */
static int fold_constant_nodes(hs_graph *g, hs_error *err) {
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *n = &g->nodes[i];
    if (n->dead || strcmp(n->op_type, "Constant") != 0 || n->domain[0]) continue;
    if (n->n_out != 1 || n->out[0] < 0 || n->n_in != 0 || n->n_attrs != 1)
      return hs_error_set(err, HS_PARSE, "Constant node '%s' needs no inputs, one output and one attribute",
                          n->name);
    const hs_attr *a = &n->attrs[0];
    hs_tensor t;
    memset(&t, 0, sizeof t);
    float fv;
    int64_t iv;
    if (strcmp(a->name, "value") == 0 && a->type == HS_ATTR_TENSOR) {
      t = a->tensor->t;
    } else if (strcmp(a->name, "value_float") == 0 && a->type == HS_ATTR_FLOAT) {
      fv = a->f;
      t = (hs_tensor){.dtype = HS_DT_FLOAT32, .ndim = 0, .data = &fv, .nbytes = 4};
    } else if (strcmp(a->name, "value_int") == 0 && a->type == HS_ATTR_INT) {
      iv = a->i;
      t = (hs_tensor){.dtype = HS_DT_INT64, .ndim = 0, .data = &iv, .nbytes = 8};
    } else if (strcmp(a->name, "value_floats") == 0 && a->type == HS_ATTR_FLOATS) {
      t = (hs_tensor){.dtype = HS_DT_FLOAT32, .ndim = 1, .dims = {(int64_t)a->n}, .data = a->floats,
                      .nbytes = a->n * 4};
    } else if (strcmp(a->name, "value_ints") == 0 && a->type == HS_ATTR_INTS) {
      t = (hs_tensor){.dtype = HS_DT_INT64, .ndim = 1, .dims = {(int64_t)a->n}, .data = a->ints,
                      .nbytes = a->n * 8};
    } else {
      return hs_error_set(err, HS_UNSUPPORTED, "Constant node '%s': attribute '%s' is not supported", n->name,
                          a->name);
    }
    hs_value *v = &g->values[n->out[0]];
    int rc = hs_value_set_const(v, &t, err);
    if (rc) return rc;
    n->dead = 1;
  }
  return 0;
}

/* ---- GraphProto / ModelProto ------------------------------------------------------------------ */

/* Adds a decoded initializer to g as a constant value, which takes t's data and ref (both freed
 * here on failure); name is freed either way. */
typedef struct stream_ctx stream_ctx;
static void settle(stream_ctx *cx);

/* cx: the stream decoder's (its payload buffers are settled before one is freed), or NULL. */
static int add_initializer(hs_graph *g, const hs_onnx_source *src, stream_ctx *cx, hs_tensor *t, char *name,
                           void *ref, int *index, hs_error *err) {
  int v = -1;
  int rc = name[0] ? hs_graph_add_value(g, name, HS_VAL_CONST, &v, err)
                   : hs_error_set(err, HS_PARSE, "malformed model: initializer without a name");
  if (rc == 0) {
    hs_value *val = &g->values[v];
    val->data = t->data;
    val->nbytes = t->nbytes;
    val->dtype = t->dtype;
    val->ndim = t->ndim;
    memcpy(val->dims, t->dims, sizeof val->dims);
    if (ref) { /* an identical copy is held elsewhere: the value refers to it (hs_onnx_share) */
      val->ref = ref;
      val->ref_free = src->share->release;
    }
  } else {
    if (cx) settle(cx);
    hs_wblock_free(t->data);
    if (ref) src->share->release(ref);
  }
  free(name);
  if (index) *index = v;
  return rc;
}

static int decode_graph(hs_graph *g, const uint8_t *d, size_t len, int depth, const hs_onnx_source *src,
                        hs_error *err) {
  hs_pb r;
  uint32_t f;
  int w, rc;
  if (depth > HS_PB_MAX_DEPTH) return BAD(err, "subgraphs nested too deeply");
  /* Pass 1: initializers. */
  hs_pb_init(&r, d, len);
  r.depth = depth;
  while (hs_pb_more(&r)) {
    if (hs_pb_key(&r, &f, &w)) return BAD(err, "bad graph field");
    if (f == 5 && w == HS_PB_BYTES) {
      hs_tensor t;
      char *name = NULL;
      void *ref = NULL;
      /* only the main graph's: a subgraph's are read where the engine does not look (engine.c) */
      if ((rc = decode_tensor_msg(&r, src, &t, &name, depth == 1 ? &ref : NULL, err)))
        return hs_error_prefix(err, "initializer");
      if ((rc = add_initializer(g, src, NULL, &t, name, ref, NULL, err))) return rc;
    } else if (f == 15) {
      return hs_error_set(err, HS_UNSUPPORTED, "sparse initializers are not supported");
    } else if (hs_pb_skip(&r, w)) {
      return BAD(err, "bad graph field");
    }
  }
  /* Pass 2: inputs (those not shadowed by an initializer); pass 3: nodes and outputs. */
  i64vec ins = {0}, outs = {0};
  rc = 0;
  for (int pass = 2; pass <= 3 && rc == 0; pass++) {
    hs_pb_init(&r, d, len);
    r.depth = depth;
    while (hs_pb_more(&r) && rc == 0) {
      if (hs_pb_key(&r, &f, &w)) { rc = BAD(err, "bad graph field"); break; }
      if (((pass == 2 && f == 11) || (pass == 3 && f == 12)) && w == HS_PB_BYTES) {
        value_info vi;
        if ((rc = decode_value_info(&r, &vi, err))) { free(vi.name); break; }
        int v = hs_graph_find(g, vi.name);
        if (f == 11) {
          if (v >= 0 && g->values[v].kind == HS_VAL_CONST) { free(vi.name); continue; }
          if (v >= 0) rc = hs_error_set(err, HS_PARSE, "graph input '%s' is listed twice", vi.name);
          else rc = hs_graph_add_value(g, vi.name, HS_VAL_INPUT, &v, err);
          if (rc == 0) {
            hs_value *val = &g->values[v];
            val->dtype = vi.dtype;
            val->ndim = vi.ndim;
            memcpy(val->dims, vi.dims, sizeof vi.dims);
            val->input_index = (int)ins.n;
            if (!g->is_subgraph && (val->dtype == HS_DT_UNDEFINED || val->ndim < 0))
              rc = hs_error_set(err, HS_UNSUPPORTED, "graph input '%s' has no tensor type and shape", vi.name);
            else if (i64_push(&ins, v)) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
          }
        } else {
          if ((rc = value_ref(g, vi.name, &v, err)) == 0) {
            hs_value *val = &g->values[v];
            if (val->dtype == HS_DT_UNDEFINED) val->dtype = vi.dtype;
            if (val->ndim < 0) {
              val->ndim = vi.ndim;
              memcpy(val->dims, vi.dims, sizeof vi.dims);
            }
            if (i64_push(&outs, v)) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
          }
        }
        free(vi.name);
      } else if (pass == 3 && f == 1 && w == HS_PB_BYTES) {
        rc = decode_node(g, &r, src, err);
      } else if (hs_pb_skip(&r, w)) {
        rc = BAD(err, "bad graph field");
      }
    }
  }
  if (rc == 0 && outs.n == 0) rc = hs_error_set(err, HS_PARSE, "malformed model: the graph has no outputs");
  /* a subgraph's names that nothing in it defines are outer-scope references: extra inputs */
  for (int v = 0; rc == 0 && g->is_subgraph && v < g->n_values; v++) {
    hs_value *val = &g->values[v];
    if (val->kind != HS_VAL_INTERMEDIATE || val->producer >= 0) continue;
    val->kind = HS_VAL_INPUT;
    val->ndim = -1;
    val->input_index = (int)ins.n;
    g->n_outer++;
    if (i64_push(&ins, v)) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  if (rc == 0) {
    g->inputs = malloc(sizeof(int) * (ins.n + 1));
    g->outputs = malloc(sizeof(int) * (outs.n + 1));
    if (!g->inputs || !g->outputs) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
    for (size_t i = 0; rc == 0 && i < ins.n; i++) g->inputs[i] = (int)ins.v[i];
    for (size_t i = 0; rc == 0 && i < outs.n; i++) g->outputs[i] = (int)outs.v[i];
    g->n_inputs = (int)ins.n;
    g->n_outputs = (int)outs.n;
  }
  free(ins.v);
  free(outs.v);
  return rc;
}

/* A GraphProto attribute into a new subgraph *out (freed here on failure). */
static int decode_subgraph(const uint8_t *d, size_t len, int depth, const hs_onnx_source *src,
                           hs_graph **out, hs_error *err) {
  hs_graph *sub = malloc(sizeof *sub);
  if (!sub) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  hs_graph_init(sub);
  sub->is_subgraph = 1;
  int rc = decode_graph(sub, d, len, depth, src, err);
  if (rc) {
    hs_graph_free(sub);
    free(sub);
    return hs_error_prefix(err, "subgraph");
  }
  *out = sub;
  return 0;
}

/* What decoding the whole model settles in g and, recursively, in its subgraphs: each node's opset,
 * Constant nodes folded, uses and order. */
static int finish_graph(hs_graph *g, int opset, hs_error *err) {
  int rc;
  g->opset = opset;
  for (int i = 0; i < g->n_nodes; i++) {
    hs_node *n = &g->nodes[i];
    n->opset = n->domain[0] ? 1 : opset;
    for (int a = 0; a < n->n_attrs; a++)
      if (n->attrs[a].type == HS_ATTR_GRAPH && (rc = finish_graph(n->attrs[a].graph, opset, err)))
        return hs_error_prefix(err, "node '%s'", n->name);
  }
  if ((rc = fold_constant_nodes(g, err))) return rc;
  return hs_graph_finish(g, err);
}

/* ---- streaming: the model file read once, in chunks ---------------------------------------------
 *
 * DESIGN: a model file is read front to back exactly once, in chunks (hs_backend_stream), and is
 * never held whole. Everything but the main graph's initializer payloads is small (nodes, names,
 * attributes, shapes): those fields are copied as they arrive into a compact copy of the graph
 * message ("rest") that the buffer decoder above then reads (decode_graph; it finds no initializer
 * in it). Each initializer is decoded as it arrives: its fields but raw_data into a small buffer,
 * the raw_data payload straight into the buffer the tensor keeps (one copy, from a chunk that was
 * just read). A payload the share hook may want (float32, rank >= 3, large enough) goes into one
 * scratch buffer reused across tensors, its own mapping (base/wblock.h, hs_wscratch), released when
 * the decode ends, never freed heap beside the serving version (kept for the next load): when the hook finds
 * it held, nothing is kept; otherwise the tensor keeps a copy. The next candidate is then read
 * into a buffer of its own, which the tensor keeps when not held (freed when held), until one is held
 * again: a retrained version (no tensor held) copies no payload twice, a new-head version (every
 * candidate but the new ones held) leaves no freed heap pages behind. Initializers are decoded in file order before the graph's inputs and
 * nodes, as the buffer decoder's passes do, so both give the same graph. The buffer entry points
 * run this same code over a memory stream (pb.h), so tests and the fuzzer reach it too.
 * Bounds: a raw_data payload is allocated at its length once that length is known to fit its
 * message, and so the stream's declared size (a file's size when opened, a buffer's length);
 * everything else grows only as its bytes arrive (buf_append).
 *
 * External data: with src->open, a file given without its bytes (data NULL) is read through a stream,
 * once. Its tensors may be named in any order, overlap, or leave gaps, so a main-graph initializer
 * that lies in such a file is not read when it is met: defer_external checks it (location, offset
 * and length within the file's listed size and equal to the tensor's), adds it to the graph with a
 * buffer of its size and records its range. After the graph's initializers, fill_external sorts the
 * ranges by file and offset and makes one pass per file, up to its last range's end, copying each
 * piece into every range it overlaps. A range gets its buffer when its first byte arrives; one the
 * share hook may hold is filled as a raw_data payload is (candidate_buffer), and offered once
 * complete.
 * The rest of the file is the stream owner's to read (the repository hashes it).
 *
 * Share candidates compared as they arrive (hs_onnx_share begin/feed/prefix/end, the engine's): with
 * a hook that has this form, a candidate raw_data payload skips the scratch above and is never held
 * whole before the hook decides. begin names the held
 * copies of its size; each piece of the stream's chunk is fed as it lies there (hs_pbs_piece), so
 * the bytes compared are the bytes the stream's owner hashes, and nothing is read twice. While a
 * copy is equal to every byte so far nothing is kept: a payload equal to the end is that copy's
 * reference (once the tensor's last fields confirm it is still a candidate; else its bytes are read
 * back from the copy). At the first piece where every copy differs, the tensor gets its buffer:
 * the bytes before that piece read back from the copy that matched them (equal to the file's), the
 * piece copied, the rest read into it as any payload of its own (read_into). Such a payload is not
 * offered to find again. A new-head version's peak thus holds no Conv weight whole (ResNet-50: 9.4
 * MB of scratch before), only the slice the hook reads back. External data still goes through
 * candidate_buffer and find.
 *
 * Payloads read into their tensors: when the stream has read_into and settle (the server's, ABI
 * 3.2), a raw_data payload with a buffer of its own (not the share scratch) is read straight into it
 * past the current chunk (pb.c's direct read), and the stream's owner hashes it there later. Such a
 * buffer is left alone until settle: settle() runs before one is freed (a payload the hook holds,
 * one replaced or cut short, an initializer refused) and once the main graph's initializers are in,
 * so the buffer decoder, the external fill and everything after the decode have the buffers to
 * themselves. (The server's loader gates the loading thread's hs_wblock_free on its hash instead,
 * and its settle returns at once: repo/read.c.)
 */

typedef struct bytebuf {
  uint8_t *v;
  size_t n, cap;
} bytebuf;

static int buf_reserve(bytebuf *b, size_t more) {
  if (more <= b->cap - b->n) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->n < more) {
    if (cap > SIZE_MAX / 2) return HS_NO_MEMORY;
    cap *= 2;
  }
  uint8_t *nv = realloc(b->v, cap);
  if (!nv) return HS_NO_MEMORY;
  b->v = nv;
  b->cap = cap;
  return 0;
}

static int buf_varint(bytebuf *b, uint64_t x) {
  if (buf_reserve(b, 10)) return HS_NO_MEMORY;
  do {
    uint8_t c = x & 0x7f;
    x >>= 7;
    b->v[b->n++] = (uint8_t)(c | (x ? 0x80 : 0));
  } while (x);
  return 0;
}

/* The error for a failed stream read: the stream's own (truncated file, I/O error) when it ran dry,
 * else "malformed model: what". */
static int stream_bad(const hs_pbs *s, hs_error *err, const char *what) {
  if (s->src_rc) {
    *err = s->src_err;
    return s->src_rc;
  }
  return BAD(err, what);
}

/* Appends the stream's next n bytes to b, growing b only as the bytes arrive (a length the file
 * does not pay for allocates at most one step more). */
#define APPEND_STEP ((size_t)1 << 20)
static int buf_append(bytebuf *b, hs_pbs *s, uint64_t n, const char *what, hs_error *err) {
  while (n) {
    size_t step = n < APPEND_STEP ? (size_t)n : APPEND_STEP;
    if (buf_reserve(b, step)) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
    if (hs_pbs_copy(s, b->v + b->n, step)) return stream_bad(s, err, what);
    b->n += step;
    n -= step;
  }
  return 0;
}

/* Copies one field whose key (f, w) was just read, key included, to b. */
static int copy_field(hs_pbs *s, uint32_t f, int w, bytebuf *b, const char *what, hs_error *err) {
  uint64_t v;
  if (buf_varint(b, (uint64_t)f << 3 | (unsigned)w)) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  switch (w) {
    case HS_PB_VARINT:
      if (hs_pbs_varint(s, &v)) return stream_bad(s, err, what);
      return buf_varint(b, v) ? hs_error_set(err, HS_NO_MEMORY, "out of memory") : 0;
    case HS_PB_FIXED64:
      return buf_append(b, s, 8, what, err);
    case HS_PB_FIXED32:
      return buf_append(b, s, 4, what, err);
    case HS_PB_BYTES:
      if (hs_pbs_len(s, &v)) return stream_bad(s, err, what);
      if (buf_varint(b, v)) return hs_error_set(err, HS_NO_MEMORY, "out of memory");
      return buf_append(b, s, v, what, err);
    default:
      return stream_bad(s, err, what); /* groups (3, 4) and reserved types */
  }
}

/* An initializer whose bytes lie in a streamed external file: file (index in src->files) bytes
 * [off, off + len) go to g->values[value].data, allocated at len when it was decoded. */
typedef struct ext_range {
  size_t file;
  uint64_t off, len;
  int value;
  int candidate;  /* one the share hook is offered (range_done) */
  int in_scratch; /* buf is cx->scratch's (candidate_buffer) */
  void *buf;      /* where its bytes go: NULL until its first byte arrives */
  int done;      /* filled and handed to its value */
} ext_range;

struct stream_ctx {
  const hs_onnx_source *src;
  hs_wscratch scratch; /* payload buffer for tensors the share hook may hold (see DESIGN) */
  int scratch_busy;    /* scratch holds a payload being filled (a range of fill_external) */
  int missed;          /* the last candidate was not held: the next one gets a buffer of its own */
  ext_range *ext; /* external initializers of streamed files, filled after the graph (fill_external) */
  size_t n_ext, cap_ext;
  const hs_backend_stream *in; /* read_into and settle, when the stream has them (see DESIGN) */
  int unsettled;               /* a payload was read into its buffer since the last settle */
};

/* The stream's owner is done reading every payload buffer read_into filled (see DESIGN): called
 * before such a buffer is freed or overwritten, and once the main graph's initializers are in. */
static void settle(stream_ctx *cx) {
  if (!cx->unsettled) return;
  cx->in->settle(cx->in->user);
  cx->unsettled = 0;
}

/* 1 when the tensor described by the fields read so far (meta) is one share_tensor offers the hook,
 * with a raw_data payload of n bytes. */
static int may_share(const stream_ctx *cx, const bytebuf *meta, uint64_t n) {
  if (!cx->src->share || n < HS_ONNX_SHARE_MIN_BYTES) return 0;
  tensor_fields tf = {.ext_length = -1};
  hs_tensor t;
  size_t nbytes = 0;
  hs_error ignored;
  int ok = read_tensor_fields(meta->n ? meta->v : (const uint8_t *)"", meta->n, &tf, &ignored) == 0 &&
           !tf.external && tensor_shape(&tf, &t, &nbytes, &ignored) == 0 && t.dtype == HS_DT_FLOAT32 &&
           t.ndim >= 3 && nbytes == n;
  tensor_fields_free(&tf);
  return ok;
}

/* A buffer for a share candidate's len bytes (see DESIGN): the reused scratch mapping unless the
 * last candidate was not held or the scratch is busy (*in_scratch says which), else one of its own.
 * NULL when out of memory. */
static void *candidate_buffer(stream_ctx *cx, size_t len, int *in_scratch) {
  *in_scratch = 0;
  if (!cx->missed && !cx->scratch_busy) {
    void *p = hs_wscratch_get(&cx->scratch, len);
    if (p) {
      cx->scratch_busy = *in_scratch = 1;
      return p;
    }
  }
  return hs_wblock_alloc(len);
}

/* The candidate in buf was held by the share hook: its buffer is done with. */
static void candidate_held(stream_ctx *cx, void *buf, int in_scratch) {
  cx->missed = 0;
  if (in_scratch) {
    cx->scratch_busy = 0;
  } else {
    settle(cx);
    hs_wblock_free(buf);
  }
}

/* The candidate in buf was not held: the buffer its tensor keeps (buf itself, or a malloc'ed copy of
 * the scratch's bytes; NULL when out of memory, buf then done with). */
static void *candidate_kept(stream_ctx *cx, void *buf, size_t len, int in_scratch) {
  cx->missed = 1;
  if (!in_scratch) return buf;
  cx->scratch_busy = 0;
  void *own = hs_wblock_alloc(len);
  if (own) memcpy(own, buf, len);
  return own;
}

/* When the initializer described by meta (no raw_data) is external data in a file streamed through
 * src->open: checks it as read_external would (location, offset and length within the file's size,
 * the tensor's size), adds it to g with a buffer of its size still to fill, records the range in
 * cx->ext and returns 1. 0: not such a tensor (the usual path decodes it); negative: an error. */
static int defer_external(stream_ctx *cx, const bytebuf *meta, hs_graph *g, hs_error *err) {
  const hs_onnx_source *src = cx->src;
  if (!src->open) return 0;
  tensor_fields tf = {.ext_length = -1};
  hs_tensor t;
  size_t nbytes = 0;
  long file = -1;
  int rc = read_tensor_fields(meta->n ? meta->v : (const uint8_t *)"", meta->n, &tf, err);
  if (rc == 0 && (!tf.external || !tf.location || (file = find_streamed(src, tf.location)) < 0)) {
    tensor_fields_free(&tf);
    return 0;
  }
  if (rc == 0) rc = check_location(tf.location, err);
  if (rc == 0) rc = tensor_shape(&tf, &t, &nbytes, err);
  if (rc == 0) {
    uint64_t flen = src->files[file].len;
    int64_t length = tf.ext_length < 0 ? (int64_t)nbytes : tf.ext_length;
    if (tf.ext_offset < 0 || (uint64_t)length != nbytes || (uint64_t)tf.ext_offset > flen ||
        (uint64_t)length > flen - (uint64_t)tf.ext_offset)
      rc = hs_error_set(err, HS_PARSE, "external data '%s': offset %lld length %lld do not fit the file (%llu bytes) "
                        "or the tensor (%zu bytes)", tf.location, (long long)tf.ext_offset, (long long)length,
                        (unsigned long long)flen, nbytes);
  }
  if (rc == 0 && cx->n_ext == cx->cap_ext) {
    size_t cap = cx->cap_ext ? cx->cap_ext * 2 : 16;
    ext_range *nr = realloc(cx->ext, cap * sizeof *nr);
    if (!nr) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
    else {
      cx->ext = nr;
      cx->cap_ext = cap;
    }
  }
  t.data = NULL; /* its buffer comes with its first byte (fill_external) */
  if (rc) {
    tensor_fields_free(&tf);
    return rc;
  }
  t.nbytes = nbytes;
  char *name = tf.name ? tf.name : strdup("");
  tf.name = NULL;
  int v = -1;
  if (!name) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
  else rc = add_initializer(g, src, cx, &t, name, NULL, &v, err);
  if (rc == 0 && nbytes)
    cx->ext[cx->n_ext++] = (ext_range){.file = (size_t)file, .off = (uint64_t)tf.ext_offset, .len = nbytes, .value = v,
                                       .candidate = src->share && t.dtype == HS_DT_FLOAT32 && t.ndim >= 3 &&
                                                    nbytes >= HS_ONNX_SHARE_MIN_BYTES};
  tensor_fields_free(&tf);
  return rc ? rc : 1;
}

static int ext_range_cmp(const void *a, const void *b) {
  const ext_range *x = a, *y = b;
  if (x->file != y->file) return x->file < y->file ? -1 : 1;
  if (x->off != y->off) return x->off < y->off ? -1 : 1;
  return 0;
}

/* The first byte of r arrived: its buffer (candidate_buffer for a share candidate, else its own). */
static int range_buffer(stream_ctx *cx, ext_range *r, hs_error *err) {
  if (r->candidate) r->buf = candidate_buffer(cx, (size_t)r->len, &r->in_scratch);
  else r->buf = hs_wblock_alloc((size_t)r->len);
  if (!r->buf)
    return hs_error_set(err, HS_NO_MEMORY, "out of memory for a %llu-byte tensor", (unsigned long long)r->len);
  return 0;
}

/* r is filled: a candidate the share hook holds is not kept (the value refers to the held copy);
 * otherwise its value takes the buffer (candidate_kept). */
static int range_done(stream_ctx *cx, ext_range *r, hs_value *val, hs_error *err) {
  const hs_onnx_share *sh = cx->src->share;
  void *ref = NULL;
  r->done = 1;
  if (r->candidate && sh->find(sh->user, r->buf, (size_t)r->len, &ref) == 1) {
    val->ref = ref;
    val->ref_free = sh->release;
    candidate_held(cx, r->buf, r->in_scratch);
    r->buf = NULL;
    return 0;
  }
  if (r->candidate) val->data = candidate_kept(cx, r->buf, (size_t)r->len, r->in_scratch);
  else val->data = r->buf;
  r->buf = NULL;
  return val->data ? 0 : hs_error_set(err, HS_NO_MEMORY, "out of memory for a %llu-byte tensor",
                                      (unsigned long long)r->len);
}

/* Fills cx->ext's ranges (see DESIGN, "External data"): per file, one pass from its start to the end
 * of its last range, each chunk copied into every range it overlaps (ranges sorted by offset, so
 * any order in the model and overlapping ranges cost no second read). What follows the last range
 * is the stream owner's to read (the repository hashes it at its check). */
static int fill_external(stream_ctx *cx, hs_graph *g, hs_error *err) {
  const hs_onnx_source *src = cx->src;
  if (!cx->n_ext) return 0;
  qsort(cx->ext, cx->n_ext, sizeof *cx->ext, ext_range_cmp);
  int rc = 0;
  for (size_t a = 0, b; rc == 0 && a < cx->n_ext; a = b) {
    size_t file = cx->ext[a].file;
    const char *path = src->files[file].path;
    uint64_t end = 0;
    for (b = a; b < cx->n_ext && cx->ext[b].file == file; b++)
      if (cx->ext[b].off + cx->ext[b].len > end) end = cx->ext[b].off + cx->ext[b].len;
    const hs_backend_stream *st = NULL;
    if ((rc = src->open(src->open_user, path, &st, err))) break;
    uint64_t pos = 0;
    size_t first = a; /* ranges before it end at or before pos */
    while (rc == 0 && pos < end) {
      const void *d;
      size_t n = 0;
      if ((rc = st->next(st->user, &d, &n, err))) break;
      if (!n) {
        rc = hs_error_set(err, HS_PARSE, "external data '%s' ends at %llu bytes, before %llu (did it shrink?)", path,
                          (unsigned long long)pos, (unsigned long long)end);
        break;
      }
      uint64_t cend = pos + n;
      for (size_t i = first; i < b && cx->ext[i].off < cend; i++) {
        ext_range *r = &cx->ext[i];
        uint64_t rend = r->off + r->len;
        if (rend <= pos) continue;
        uint64_t from = r->off > pos ? r->off : pos, to = rend < cend ? rend : cend;
        if (!r->buf && !r->done && (rc = range_buffer(cx, r, err))) break;
        if (r->done) continue;
        memcpy((char *)r->buf + (from - r->off), (const char *)d + (from - pos), (size_t)(to - from));
        if (rend <= cend && (rc = range_done(cx, r, &g->values[r->value], err))) break;
      }
      while (first < b && cx->ext[first].off + cx->ext[first].len <= cend) first++;
      pos = cend;
    }
  }
  for (size_t i = 0; i < cx->n_ext; i++) /* after an error: buffers no value took */
    if (cx->ext[i].buf && !cx->ext[i].in_scratch) hs_wblock_free(cx->ext[i].buf);
  cx->scratch_busy = 0;
  cx->n_ext = 0;
  return rc;
}

/* A share candidate's raw_data payload (len bytes) compared with the hook's held copies as it
 * arrives (see DESIGN, "Share candidates compared as they arrive"), from the match *match. While
 * one is equal, nothing is kept: on return with *match still set, all len bytes matched. Once every
 * copy differs, the tensor gets its own buffer (*data): the bytes before the differing piece read
 * back from the copy that matched them, the piece copied, *done bytes in all; *match is then ended
 * and NULL, and the caller reads the rest. */
static int compare_payload(hs_pbs *s, stream_ctx *cx, size_t len, void **match, void **data, size_t *done,
                           hs_error *err) {
  const hs_onnx_share *sh = cx->src->share;
  for (size_t off = 0; off < len;) {
    const void *p;
    size_t n;
    if (hs_pbs_piece(s, &p, &n, len - off)) return stream_bad(s, err, "tensor raw_data past the end");
    if (sh->feed(*match, p, n)) {
      off += n;
      continue;
    }
    void *buf = hs_wblock_alloc(len);
    if (!buf) return hs_error_set(err, HS_NO_MEMORY, "out of memory for a %zu-byte tensor", len);
    if (sh->prefix(*match, buf, off)) {
      hs_wblock_free(buf);
      return hs_error_set(err, HS_INTERNAL, "a shared tensor's first %zu bytes could not be read back", off);
    }
    memcpy((char *)buf + off, p, n);
    sh->end(*match, NULL);
    *match = NULL;
    *data = buf;
    *done = off + n;
    return 0;
  }
  return 0;
}

/* After the tensor's fields (meta, complete): a payload that matched a held copy in full (match) is
 * that copy's reference (raw->held) when the tensor is still one the hook is offered, else its
 * bytes are read back from the copy into a buffer of its own. match is ended. */
static int settle_match(stream_ctx *cx, const bytebuf *meta, raw_payload *raw, void *match, hs_error *err) {
  const hs_onnx_share *sh = cx->src->share;
  int rc = 0;
  if (may_share(cx, meta, raw->len)) {
    if (sh->end(match, &raw->held) != 1) return hs_error_set(err, HS_INTERNAL, "a shared tensor went away");
    return 0;
  }
  if (!(raw->data = hs_wblock_alloc(raw->len))) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory");
  else if (sh->prefix(match, raw->data, raw->len))
    rc = hs_error_set(err, HS_INTERNAL, "a shared tensor's %zu bytes could not be read back", raw->len);
  sh->end(match, NULL);
  return rc;
}

/* One initializer (a TensorProto of n bytes) of the main graph, decoded as it streams by, into g. */
static int stream_initializer(hs_pbs *s, uint64_t n, stream_ctx *cx, hs_graph *g, hs_error *err) {
  uint64_t saved;
  bytebuf meta = {0};
  raw_payload raw = {0};
  int candidate = 0, raw_scratch = 0; /* a share candidate; raw.data is cx->scratch's */
  void *match = NULL;                 /* a candidate compared as it arrives, equal so far (compare_payload) */
  const hs_onnx_share *sh = cx->src->share;
  int rc = 0, w;
  uint32_t f;
  if (hs_pbs_enter(s, n, &saved)) return stream_bad(s, err, "tensor past the end");
  while (rc == 0 && hs_pbs_more(s)) {
    if (hs_pbs_key(s, &f, &w)) {
      rc = stream_bad(s, err, "bad tensor field");
    } else if (f == 9 && w == HS_PB_BYTES) {
      uint64_t len;
      if (hs_pbs_len(s, &len)) {
        rc = stream_bad(s, err, "tensor raw_data past the end");
        break;
      }
      if (raw_scratch) {
        cx->scratch_busy = 0; /* a later raw_data replaces an earlier one */
      } else if (raw.data) {
        settle(cx);
        hs_wblock_free(raw.data);
      }
      if (match) sh->end(match, NULL);
      match = NULL;
      raw = (raw_payload){.present = 1, .len = (size_t)len};
      candidate = may_share(cx, &meta, len);
      raw_scratch = 0;
      size_t done = 0; /* bytes already in raw.data (compare_payload) */
      if (candidate && sh->begin && (match = sh->begin(sh->user, (size_t)len))) {
        candidate = 0; /* compared as it arrives, not through the scratch */
        raw.compared = 1;
        if ((rc = compare_payload(s, cx, (size_t)len, &match, &raw.data, &done, err)) || match) continue;
      } else if (candidate && sh->begin) {
        candidate = 0; /* no held copy of its size */
        raw.compared = 1;
      }
      if (!raw.data)
        raw.data = candidate ? candidate_buffer(cx, (size_t)len, &raw_scratch) : len ? hs_wblock_alloc((size_t)len) : NULL;
      /* a buffer of its own is filled straight from the file (read_into; the shared scratch is not) */
      long long (*through)(void *, void *, size_t, hs_error *) = s->read_direct;
      if (cx->in && !raw_scratch) {
        s->read_direct = cx->in->read_into;
        cx->unsettled = 1;
      }
      if (len && !raw.data) rc = hs_error_set(err, HS_NO_MEMORY, "out of memory for a %llu-byte tensor",
                                              (unsigned long long)len);
      else if (len > done && hs_pbs_copy(s, (char *)raw.data + done, (size_t)len - done))
        rc = stream_bad(s, err, "tensor raw_data past the end");
      s->read_direct = through;
    } else {
      rc = copy_field(s, f, w, &meta, "bad tensor field", err);
    }
  }
  if (rc == 0 && hs_pbs_leave(s, saved)) rc = stream_bad(s, err, "tensor past the end");
  if (rc == 0 && match) rc = settle_match(cx, &meta, &raw, match, err);
  else if (match) sh->end(match, NULL);
  match = NULL;
  int deferred = 0;
  if (rc == 0 && !raw.present && (deferred = defer_external(cx, &meta, g, err)) < 0) {
    rc = deferred;
    hs_error_prefix(err, "initializer");
  }
  if (rc == 0 && deferred) {
    /* added to g; its bytes come in fill_external */
  } else if (rc == 0) {
    hs_tensor t;
    char *name = NULL;
    void *ref = NULL;
    rc = decode_tensor_raw(meta.n ? meta.v : (const uint8_t *)"", meta.n, &raw, cx->src, &t, &name, &ref, err);
    if (rc == 0 && candidate && raw.data) { /* held: the value refers to the held copy */
      candidate_held(cx, raw.data, raw_scratch);
      raw.data = NULL;
    } else if (rc == 0 && candidate) { /* the tensor took the candidate's buffer */
      if (!(t.data = candidate_kept(cx, t.data, t.nbytes, raw_scratch))) {
        rc = hs_error_set(err, HS_NO_MEMORY, "out of memory for a %zu-byte tensor", t.nbytes);
        free(name); /* (not held: no ref) */
      }
    }
    if (rc) hs_error_prefix(err, "initializer");
    else rc = add_initializer(g, cx->src, cx, &t, name, ref, NULL, err);
  } else {
    hs_error_prefix(err, "initializer");
  }
  if (raw_scratch) {
    cx->scratch_busy = 0;
  } else if (raw.data) { /* not taken by the tensor */
    settle(cx);
    hs_wblock_free(raw.data);
  }
  if (raw.held) sh->release(raw.held); /* (an initializer refused) */
  free(meta.v);
  return rc;
}

/* The main graph (a GraphProto of n bytes) as it streams by, into g (see DESIGN). */
static int stream_graph(hs_pbs *s, uint64_t n, stream_ctx *cx, hs_graph *g, hs_error *err) {
  uint64_t saved, len;
  bytebuf rest = {0};
  int rc = 0, w;
  uint32_t f;
  if (hs_pbs_enter(s, n, &saved)) return stream_bad(s, err, "graph past the end");
  while (rc == 0 && hs_pbs_more(s)) {
    if (hs_pbs_key(s, &f, &w)) {
      rc = stream_bad(s, err, "bad graph field");
    } else if (f == 5 && w == HS_PB_BYTES) {
      if (hs_pbs_len(s, &len)) {
        rc = stream_bad(s, err, "tensor past the end");
        hs_error_prefix(err, "initializer");
      }
      else rc = stream_initializer(s, len, cx, g, err);
    } else if (f == 15) {
      rc = hs_error_set(err, HS_UNSUPPORTED, "sparse initializers are not supported");
    } else {
      rc = copy_field(s, f, w, &rest, "bad graph field", err);
    }
  }
  if (rc == 0 && hs_pbs_leave(s, saved)) rc = stream_bad(s, err, "graph past the end");
  settle(cx); /* the initializers are in: from here on the graph's buffers are the decoder's alone */
  if (rc == 0 && (rc = fill_external(cx, g, err))) hs_error_prefix(err, "initializer");
  cx->n_ext = 0; /* (a later graph field starts afresh) */
  if (rc == 0) rc = decode_graph(g, rest.n ? rest.v : (const uint8_t *)"", rest.n, 1, cx->src, err);
  free(rest.v);
  return rc;
}

/* An OperatorSetIdProto: the default domain's version goes to *default_opset. */
static int read_opset(const uint8_t *d, size_t n, int *default_opset, hs_error *err) {
  hs_pb o;
  uint32_t f;
  int w, rc = 0;
  uint64_t v;
  char *domain = NULL;
  int64_t version = 0;
  hs_pb_init(&o, d, n);
  o.depth = 1;
  while (hs_pb_more(&o) && rc == 0) {
    if (hs_pb_key(&o, &f, &w)) rc = BAD(err, "bad opset_import");
    else if (f == 1 && w == HS_PB_BYTES) rc = read_string(&o, &domain, err);
    else if (f == 2 && w == HS_PB_VARINT) {
      if (hs_pb_varint(&o, &v)) rc = BAD(err, "bad opset version");
      version = (int64_t)v;
    } else if (hs_pb_skip(&o, w)) rc = BAD(err, "bad opset_import");
  }
  if (rc == 0 && (!domain || !domain[0] || strcmp(domain, "ai.onnx") == 0))
    *default_opset = version > INT32_MAX ? INT32_MAX : (int)version;
  free(domain);
  return rc;
}

/* hs_onnx_decode_model_stream, with the source's read_direct when it has one (pb.h). */
static int decode_model_stream(const hs_backend_stream *in,
                               long long (*read_direct)(void *user, void *dst, size_t n, hs_error *err),
                               const hs_onnx_source *src, hs_graph *g, hs_error *err) {
  hs_pbs s;
  stream_ctx cx = {.src = src};
  if (!read_direct && in->read_into && in->settle) cx.in = in; /* payloads read into their tensors */
  uint32_t f;
  int w, rc = 0, have_graph = 0, default_opset = -1;
  int64_t ir_version = g->ir_version;
  uint64_t v;
  hs_pbs_init(&s, in);
  s.read_direct = read_direct;
  while (rc == 0 && hs_pbs_more(&s)) {
    if (hs_pbs_key(&s, &f, &w)) {
      rc = stream_bad(&s, err, "bad model field (not an ONNX file?)");
    } else if (f == 1 && w == HS_PB_VARINT) {
      if (hs_pbs_varint(&s, &v)) rc = stream_bad(&s, err, "bad ir_version");
      ir_version = (int64_t)v;
    } else if (f == 7 && w == HS_PB_BYTES) {
      if (hs_pbs_len(&s, &v)) {
        rc = stream_bad(&s, err, "graph past the end");
        break;
      }
      if (have_graph) { /* a later graph field replaces an earlier one (protobuf: the last one wins) */
        settle(&cx);
        hs_graph_free(g);
        hs_graph_init(g);
      }
      have_graph = 1;
      rc = stream_graph(&s, v, &cx, g, err);
    } else if (f == 8 && w == HS_PB_BYTES) {
      bytebuf o = {0};
      if (hs_pbs_len(&s, &v)) rc = stream_bad(&s, err, "opset_import past the end");
      else if ((rc = buf_append(&o, &s, v, "opset_import past the end", err)) == 0)
        rc = read_opset(o.n ? o.v : (const uint8_t *)"", o.n, &default_opset, err);
      free(o.v);
    } else if (hs_pbs_skip(&s, w)) {
      rc = stream_bad(&s, err, "bad model field (not an ONNX file?)");
    }
  }
  settle(&cx); /* (a decode that stopped among the initializers) */
  hs_wscratch_release(&cx.scratch);
  free(cx.ext);
  g->ir_version = ir_version;
  if (rc) return rc;
  if (!have_graph) return BAD(err, "no graph (not an ONNX model?)");
  if (default_opset < 0) default_opset = 1; /* ONNX: absent import means the oldest opset */
  g->opset = default_opset;
  return finish_graph(g, g->opset, err);
}

int hs_onnx_decode_model_stream(const hs_backend_stream *in, const hs_onnx_source *src, hs_graph *g,
                                hs_error *err) {
  return decode_model_stream(in, NULL, src, g, err);
}

int hs_onnx_decode_model_src(const void *buf, size_t len, const hs_onnx_source *src, hs_graph *g, hs_error *err) {
  hs_pb_mem m;
  hs_backend_stream in;
  hs_pb_mem_stream(&m, buf, len, 0, &in);
  return hs_onnx_decode_model_stream(&in, src, g, err);
}

int hs_onnx_decode_model(const void *buf, size_t len, const char *base_dir, hs_graph *g, hs_error *err) {
  hs_onnx_source src = {.base_dir = base_dir};
  return hs_onnx_decode_model_src(buf, len, &src, g, err);
}

/* ---- a model file streamed from disk (hs_onnx_load_file) --------------------------------------- */

#define FILE_CHUNK ((size_t)1 << 20)

typedef struct file_stream {
  int fd;
  const char *path;
  uint64_t size, done;
  uint8_t *buf; /* FILE_CHUNK bytes, reused for every chunk */
} file_stream;

/* Reads up to n bytes (never past the size the file had when opened) into dst; returns the count
 * (short: the file shrank, which the decoder reports as cut short) or HS_IO. */
static long long file_read(void *user, void *dst, size_t n, hs_error *err) {
  file_stream *fs = user;
  uint64_t left = fs->size - fs->done;
  size_t want = left < n ? (size_t)left : n, got = 0;
  while (got < want) {
    ssize_t r = read(fs->fd, (char *)dst + got, want - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return hs_error_set(err, HS_IO, "%s: %s", fs->path, strerror(errno));
    if (r == 0) break;
    got += (size_t)r;
  }
  fs->done += got;
  return (long long)got;
}

static int file_next(void *user, const void **data, size_t *len, hs_error *err) {
  file_stream *fs = user;
  long long got = file_read(fs, fs->buf, FILE_CHUNK, err);
  if (got < 0) return (int)got;
  *data = fs->buf;
  *len = (size_t)got;
  return 0;
}

int hs_onnx_load_file(const char *path, size_t max_bytes, hs_graph *g, hs_error *err) {
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  if (!slash) {
    strcpy(dir, ".");
  } else if ((size_t)(slash - path) >= sizeof dir) {
    return hs_error_set(err, HS_LIMIT, "model path too long");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = 0;
  }
  struct stat st;
  int fd = hs_file_open_regular(path, &st, err);
  if (fd < 0) return fd;
  size_t limit = max_bytes ? max_bytes : HS_FILE_MAX_DEFAULT;
  if ((uint64_t)st.st_size > limit) {
    close(fd);
    return hs_error_set(err, HS_LIMIT, "%s: %lld bytes, over the limit of %zu", path, (long long)st.st_size, limit);
  }
  file_stream fs = {.fd = fd, .path = path, .size = (uint64_t)st.st_size, .buf = malloc(FILE_CHUNK)};
  if (!fs.buf) {
    close(fd);
    return hs_error_set(err, HS_NO_MEMORY, "out of memory");
  }
  hs_backend_stream in = {.size = fs.size, .next = file_next, .user = &fs};
  hs_onnx_source src = {.base_dir = dir};
  /* large tensor payloads are read straight into the tensors (read_direct), the rest through buf */
  int rc = decode_model_stream(&in, file_read, &src, g, err);
  free(fs.buf);
  close(fd);
  return rc;
}

/* pb.c - bounded protobuf wire-format reader (see pb.h). */
#include "onnx/pb.h"

#include <string.h>

#include "hotserve/status.h"

void hs_pb_init(hs_pb *r, const void *data, size_t len) {
  r->p = data;
  r->end = r->p + len;
  r->depth = 0;
}

int hs_pb_varint(hs_pb *r, uint64_t *v) {
  uint64_t out = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (r->p >= r->end) return HS_PARSE;
    uint8_t b = *r->p++;
    if (shift == 63 && (b & 0x7e)) return HS_PARSE; /* would overflow 64 bits */
    out |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = out;
      return 0;
    }
  }
  return HS_PARSE;
}

int hs_pb_key(hs_pb *r, uint32_t *field, int *wire) {
  uint64_t k;
  if (hs_pb_varint(r, &k)) return HS_PARSE;
  if ((k >> 3) == 0 || (k >> 3) > 0x1fffffff) return HS_PARSE;
  *field = (uint32_t)(k >> 3);
  *wire = (int)(k & 7);
  return 0;
}

int hs_pb_fixed32(hs_pb *r, uint32_t *v) {
  if (r->end - r->p < 4) return HS_PARSE;
  const uint8_t *b = r->p;
  *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  r->p += 4;
  return 0;
}

int hs_pb_fixed64(hs_pb *r, uint64_t *v) {
  uint32_t lo, hi;
  if (hs_pb_fixed32(r, &lo) || hs_pb_fixed32(r, &hi)) return HS_PARSE;
  *v = (uint64_t)hi << 32 | lo;
  return 0;
}

int hs_pb_bytes(hs_pb *r, const uint8_t **data, size_t *len) {
  uint64_t n;
  if (hs_pb_varint(r, &n)) return HS_PARSE;
  if (n > (uint64_t)(r->end - r->p)) return HS_PARSE;
  *data = r->p;
  *len = (size_t)n;
  r->p += n;
  return 0;
}

int hs_pb_sub(hs_pb *r, hs_pb *child) {
  const uint8_t *d;
  size_t n;
  if (r->depth + 1 > HS_PB_MAX_DEPTH) return HS_PARSE;
  if (hs_pb_bytes(r, &d, &n)) return HS_PARSE;
  child->p = d;
  child->end = d + n;
  child->depth = r->depth + 1;
  return 0;
}

int hs_pb_skip(hs_pb *r, int wire) {
  uint64_t v;
  const uint8_t *d;
  size_t n;
  switch (wire) {
    case HS_PB_VARINT:
      return hs_pb_varint(r, &v);
    case HS_PB_FIXED64:
      return hs_pb_fixed64(r, &v);
    case HS_PB_BYTES:
      return hs_pb_bytes(r, &d, &n);
    case HS_PB_FIXED32: {
      uint32_t w;
      return hs_pb_fixed32(r, &w);
    }
    default:
      return HS_PARSE; /* groups (3, 4) and reserved types */
  }
}

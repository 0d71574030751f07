/* pb.h - a bounded reader for the protobuf wire format (the subset ONNX files use).
 *
 * The reader never reads past `end`: every length is checked against the bytes left before it is
 * used, varints longer than 10 bytes are malformed, and nested messages are read through a child
 * reader whose depth is counted (HS_PB_MAX_DEPTH). All functions return 0 or HS_PARSE.
 */
#ifndef HS_ONNX_PB_H
#define HS_ONNX_PB_H

#include <stddef.h>
#include <stdint.h>

#define HS_PB_MAX_DEPTH 16

enum { HS_PB_VARINT = 0, HS_PB_FIXED64 = 1, HS_PB_BYTES = 2, HS_PB_FIXED32 = 5 };

typedef struct hs_pb {
  const uint8_t *p;   /* next byte */
  const uint8_t *end; /* one past the last byte of this message */
  int depth;          /* nesting depth of this message (0 = top level) */
} hs_pb;

void hs_pb_init(hs_pb *r, const void *data, size_t len);
/* 1 when bytes remain in this message. */
static inline int hs_pb_more(const hs_pb *r) { return r->p < r->end; }
/* Reads a field key: its number and wire type. */
int hs_pb_key(hs_pb *r, uint32_t *field, int *wire);
int hs_pb_varint(hs_pb *r, uint64_t *v);
int hs_pb_fixed32(hs_pb *r, uint32_t *v);
int hs_pb_fixed64(hs_pb *r, uint64_t *v);
/* A length-delimited field: *data points into the buffer, *len bytes long. */
int hs_pb_bytes(hs_pb *r, const uint8_t **data, size_t *len);
/* A length-delimited field opened as a nested message (fails past HS_PB_MAX_DEPTH). */
int hs_pb_sub(hs_pb *r, hs_pb *child);
/* Skips a field's value of the given wire type (groups are refused). */
int hs_pb_skip(hs_pb *r, int wire);

#endif

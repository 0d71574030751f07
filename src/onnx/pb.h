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

#include "hotserve/backend.h"

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

/* ---- the same format read from a stream of chunks (hs_backend_stream) ----
 * A file read in bounded pieces (or a buffer cut into pieces) instead of one buffer: a chunk may end
 * inside a key, a varint or a payload, and the reader carries on in the next one. Nothing is read
 * past `limit`, the end of the message being read (at the top level the stream's declared size);
 * a stream that ends before its declared size, or a source error, fails the read (HS_PARSE from
 * these functions; src_rc and src_err then hold the reason: HS_PARSE "truncated", or the source's
 * own error). Nested messages are entered with hs_pbs_enter, which bounds them like hs_pb_sub. */
typedef struct hs_pbs {
  const hs_backend_stream *src;
  const uint8_t *p, *end; /* the unread bytes of the current chunk */
  uint64_t pos;           /* bytes consumed from the stream */
  uint64_t limit;         /* absolute position where the current message ends */
  int depth;              /* nesting depth of the current message (0 = top level) */
  int src_rc;             /* 0, or why the stream gave no more bytes (sticky) */
  hs_error src_err;
  /* Optional (NULL: none), for a source that can: reads the stream's next n bytes, past the current
   * chunk, straight into dst (hs_pbs_copy uses it for large copies once a chunk is spent, saving a
   * copy through the chunk). Returns the count read (short: the stream ended) or a negative status
   * with err filled. */
  long long (*read_direct)(void *user, void *dst, size_t n, hs_error *err);
} hs_pbs;

void hs_pbs_init(hs_pbs *s, const hs_backend_stream *src);
static inline int hs_pbs_more(const hs_pbs *s) { return s->pos < s->limit; }
int hs_pbs_key(hs_pbs *s, uint32_t *field, int *wire);
int hs_pbs_varint(hs_pbs *s, uint64_t *v);
/* A length prefix: fails when the length runs past the current message. */
int hs_pbs_len(hs_pbs *s, uint64_t *n);
/* Copies the next n bytes (within the current message) to dst. */
int hs_pbs_copy(hs_pbs *s, void *dst, size_t n);
/* The next bytes of the current message where they lie in the current chunk, at most max (and at
 * least one when max > 0), consumed: *p and *n (valid until the next read). */
int hs_pbs_piece(hs_pbs *s, const void **p, size_t *n, size_t max);
/* Skips n bytes (within the current message), or a field's value of the given wire type. */
int hs_pbs_skip_bytes(hs_pbs *s, uint64_t n);
int hs_pbs_skip(hs_pbs *s, int wire);
/* Makes the next n bytes the current message (fails past HS_PB_MAX_DEPTH or past the enclosing
 * message's end); *saved keeps the enclosing limit for hs_pbs_leave, which fails unless the nested
 * message was read to its end. */
int hs_pbs_enter(hs_pbs *s, uint64_t n, uint64_t *saved);
int hs_pbs_leave(hs_pbs *s, uint64_t saved);

/* A stream over a buffer, handed out in pieces of at most `chunk` bytes (0: one piece): what the
 * decoder's buffer entry points, the tests and the fuzzer use. */
typedef struct hs_pb_mem {
  const uint8_t *data;
  size_t len, pos, chunk;
} hs_pb_mem;
void hs_pb_mem_stream(hs_pb_mem *m, const void *data, size_t len, size_t chunk, hs_backend_stream *out);

#endif

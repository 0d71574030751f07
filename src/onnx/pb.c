/* pb.c - bounded protobuf wire-format readers, over one buffer or a stream of chunks (see pb.h). */
#include "onnx/pb.h"

#include <inttypes.h>
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

/* ---- stream reader ---------------------------------------------------------------------------- */

void hs_pbs_init(hs_pbs *s, const hs_backend_stream *src) {
  memset(s, 0, sizeof *s);
  s->src = src;
  s->limit = src->size;
}

/* Makes at least one unread byte available, taking the next chunk when the current one is spent. */
static int pbs_fill(hs_pbs *s) {
  while (s->p == s->end) {
    if (s->src_rc) return HS_PARSE;
    const void *d = NULL;
    size_t n = 0;
    int rc = s->src->next(s->src->user, &d, &n, &s->src_err);
    if (rc < 0) {
      s->src_rc = rc;
      return HS_PARSE;
    }
    if (n == 0 || !d) {
      s->src_rc = hs_error_set(&s->src_err, HS_PARSE, "malformed model: the stream ends at byte %" PRIu64
                               " of %" PRIu64 " (truncated file?)", s->pos, s->src->size);
      return HS_PARSE;
    }
    s->p = d;
    s->end = s->p + n;
  }
  return 0;
}

int hs_pbs_varint(hs_pbs *s, uint64_t *v) {
  uint64_t out = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (s->pos >= s->limit || pbs_fill(s)) return HS_PARSE;
    uint8_t b = *s->p++;
    s->pos++;
    if (shift == 63 && (b & 0x7e)) return HS_PARSE; /* would overflow 64 bits */
    out |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = out;
      return 0;
    }
  }
  return HS_PARSE;
}

int hs_pbs_key(hs_pbs *s, uint32_t *field, int *wire) {
  uint64_t k;
  if (hs_pbs_varint(s, &k)) return HS_PARSE;
  if ((k >> 3) == 0 || (k >> 3) > 0x1fffffff) return HS_PARSE;
  *field = (uint32_t)(k >> 3);
  *wire = (int)(k & 7);
  return 0;
}

int hs_pbs_len(hs_pbs *s, uint64_t *n) {
  if (hs_pbs_varint(s, n)) return HS_PARSE;
  return *n > s->limit - s->pos ? HS_PARSE : 0;
}

#define PBS_DIRECT_MIN ((size_t)64 << 10) /* copies at least this big skip the chunk (read_direct) */

/* Copies (dst != NULL) or skips the next n bytes of the current message. */
static int pbs_take(hs_pbs *s, uint8_t *dst, uint64_t n) {
  if (n > s->limit - s->pos) return HS_PARSE;
  while (n) {
    if (dst && s->read_direct && s->p == s->end && n >= PBS_DIRECT_MIN && !s->src_rc) {
      long long got = s->read_direct(s->src->user, dst, (size_t)n, &s->src_err);
      if (got < 0) {
        s->src_rc = (int)got;
        return HS_PARSE;
      }
      s->pos += (uint64_t)got;
      dst += got;
      n -= (uint64_t)got;
      if (n) { /* the source ended early */
        s->src_rc = hs_error_set(&s->src_err, HS_PARSE, "malformed model: the stream ends at byte %" PRIu64
                                 " of %" PRIu64 " (truncated file?)", s->pos, s->src->size);
        return HS_PARSE;
      }
      break;
    }
    if (pbs_fill(s)) return HS_PARSE;
    size_t have = (size_t)(s->end - s->p);
    size_t take = n < have ? (size_t)n : have;
    if (dst) {
      memcpy(dst, s->p, take);
      dst += take;
    }
    s->p += take;
    s->pos += take;
    n -= take;
  }
  return 0;
}

int hs_pbs_copy(hs_pbs *s, void *dst, size_t n) { return pbs_take(s, dst, n); }
int hs_pbs_skip_bytes(hs_pbs *s, uint64_t n) { return pbs_take(s, NULL, n); }

int hs_pbs_piece(hs_pbs *s, const void **p, size_t *n, size_t max) {
  *p = NULL;
  *n = 0;
  if (max > s->limit - s->pos) return HS_PARSE;
  if (!max) return 0;
  if (pbs_fill(s)) return HS_PARSE;
  size_t have = (size_t)(s->end - s->p);
  *p = s->p;
  *n = max < have ? max : have;
  s->p += *n;
  s->pos += *n;
  return 0;
}

int hs_pbs_skip(hs_pbs *s, int wire) {
  uint64_t v;
  switch (wire) {
    case HS_PB_VARINT:
      return hs_pbs_varint(s, &v);
    case HS_PB_FIXED64:
      return pbs_take(s, NULL, 8);
    case HS_PB_BYTES:
      return hs_pbs_len(s, &v) || pbs_take(s, NULL, v) ? HS_PARSE : 0;
    case HS_PB_FIXED32:
      return pbs_take(s, NULL, 4);
    default:
      return HS_PARSE; /* groups (3, 4) and reserved types */
  }
}

int hs_pbs_enter(hs_pbs *s, uint64_t n, uint64_t *saved) {
  if (s->depth + 1 > HS_PB_MAX_DEPTH || n > s->limit - s->pos) return HS_PARSE;
  *saved = s->limit;
  s->limit = s->pos + n;
  s->depth++;
  return 0;
}

int hs_pbs_leave(hs_pbs *s, uint64_t saved) {
  if (s->pos != s->limit) return HS_PARSE;
  s->limit = saved;
  s->depth--;
  return 0;
}

static int mem_next(void *user, const void **data, size_t *len, hs_error *err) {
  (void)err;
  hs_pb_mem *m = user;
  size_t left = m->len - m->pos;
  size_t n = m->chunk && m->chunk < left ? m->chunk : left;
  *data = m->data + m->pos;
  *len = n;
  m->pos += n;
  return 0;
}

void hs_pb_mem_stream(hs_pb_mem *m, const void *data, size_t len, size_t chunk, hs_backend_stream *out) {
  m->data = data;
  m->len = len;
  m->pos = 0;
  m->chunk = chunk;
  *out = (hs_backend_stream){.size = len, .next = mem_next, .user = m};
}

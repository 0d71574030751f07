/* encoding.h - HTTP content codings (gzip, deflate) of request and reply bodies, on zlib. */
#ifndef HS_HTTP_ENCODING_H
#define HS_HTTP_ENCODING_H

#include <stddef.h>

#include "hotserve/status.h"
#include "http/sbuf.h"

/* Decodes a request body sent with Content-Encoding `coding` ("gzip", "deflate"; "identity" and
 * NULL are not decoded: callers skip them). On success *out is a new buffer the caller frees, one
 * byte longer than *out_len (NUL). HS_UNSUPPORTED: an unknown or stacked coding; HS_LIMIT: the
 * decoded body would exceed max_out (decoding stops there: a zip bomb costs at most max_out + 1
 * bytes); HS_PARSE: corrupt or truncated data. */
int hs_http_decode_body(const char *coding, const char *in, size_t n, size_t max_out, char **out, size_t *out_len,
                        hs_error *err);

/* The coding to answer with for an Accept-Encoding header: "gzip" (preferred), "deflate", or NULL
 * (none acceptable, or no header). A coding with q=0 is not acceptable; "*" stands for gzip. */
const char *hs_http_pick_coding(const char *accept_encoding);

/* Replaces body by its encoding in coding ("gzip" or "deflate"). HS_NO_MEMORY leaves body as it was. */
int hs_http_encode_body(const char *coding, hs_sbuf *body);

#endif

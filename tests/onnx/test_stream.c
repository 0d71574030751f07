/* test_stream.c - the streaming decoder (onnx/pb.c hs_pbs, decode.c hs_onnx_decode_model_stream):
 * a model read in pieces of any size decodes to the graph a whole-buffer read gives, with piece
 * boundaries inside keys, varints, names and raw_data; truncated streams, lengths past the end and a
 * source's own error are refused cleanly; the share hook is offered the very bytes read and a
 * payload it holds is not kept (also when the hook compares a payload piece by piece as it arrives:
 * begin/feed/prefix/end); payloads read straight into their tensors (read_into) stay intact
 * until settled; and a model loaded from a stream runs bit for bit like one loaded from a buffer or
 * from its file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <malloc.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/npy.h"
#include "engine/engine.h"
#include "onnx/onnx.h"
#include "onnx/pb.h"

/* ---- a tiny protobuf writer, to build models whose field order the test chooses ---- */

typedef struct {
  uint8_t *v;
  size_t n, cap;
} wbuf;

static void w_raw(wbuf *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->v = realloc(b->v, b->cap);
    assert_non_null(b->v);
  }
  if (n) memcpy(b->v + b->n, d, n);
  b->n += n;
}
static void w_varint(wbuf *b, uint64_t x) {
  do {
    uint8_t c = (uint8_t)(x & 0x7f);
    x >>= 7;
    if (x) c |= 0x80;
    w_raw(b, &c, 1);
  } while (x);
}
static void w_key(wbuf *b, uint32_t f, int wire) { w_varint(b, (uint64_t)f << 3 | (unsigned)wire); }
static void w_bytes(wbuf *b, uint32_t f, const void *d, size_t n) {
  w_key(b, f, HS_PB_BYTES);
  w_varint(b, n);
  w_raw(b, d, n);
}
static void w_str(wbuf *b, uint32_t f, const char *s) { w_bytes(b, f, s, strlen(s)); }
static void w_msg(wbuf *b, uint32_t f, wbuf *m) {
  w_bytes(b, f, m->v, m->n);
  free(m->v);
  memset(m, 0, sizeof *m);
}
static void w_int(wbuf *b, uint32_t f, uint64_t x) {
  w_key(b, f, HS_PB_VARINT);
  w_varint(b, x);
}

/* A float32 TensorProto named name of shape dims with values seed + i; raw_first puts raw_data
 * before dims and data_type (legal, unusual: the decoder cannot know the shape when it arrives). */
static void w_tensor(wbuf *g, const char *name, const int64_t *dims, int ndim, float seed, int raw_first) {
  wbuf t = {0};
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
  float *v = malloc(n * 4);
  for (size_t i = 0; i < n; i++) v[i] = seed + (float)i;
  if (raw_first) w_bytes(&t, 9, v, n * 4);
  for (int i = 0; i < ndim; i++) w_int(&t, 1, (uint64_t)dims[i]);
  w_int(&t, 2, 1);
  w_str(&t, 8, name);
  if (!raw_first) w_bytes(&t, 9, v, n * 4);
  free(v);
  w_msg(g, 5, &t);
}

static void w_value_info(wbuf *g, uint32_t f, const char *name, const int64_t *dims, int ndim) {
  wbuf vi = {0}, type = {0}, tt = {0}, shape = {0};
  for (int i = 0; i < ndim; i++) {
    wbuf d = {0};
    w_int(&d, 1, (uint64_t)dims[i]);
    w_msg(&shape, 1, &d);
  }
  w_int(&tt, 1, 1);
  w_msg(&tt, 2, &shape);
  w_msg(&type, 1, &tt);
  w_str(&vi, 1, name);
  w_msg(&vi, 2, &type);
  w_msg(g, f, &vi);
}

static const int64_t k_dims[4] = {4, 4, 4, 16}; /* 1024 floats: 4096 bytes, offered to a share hook */

/* The test graphs' four Add nodes (x + w1 -> a, + w2 -> c, + w3 -> d, + b -> y) and name, into g. */
static void w_add_chain(wbuf *g) {
  const char *chain[4][3] = {{"x", "w1", "a"}, {"a", "w2", "c"}, {"c", "w3", "d"}, {"d", "b", "y"}};
  for (int i = 0; i < 4; i++) {
    wbuf node = {0};
    w_str(&node, 1, chain[i][0]);
    w_str(&node, 1, chain[i][1]);
    w_str(&node, 2, chain[i][2]);
    w_str(&node, 4, "Add");
    w_msg(g, 1, &node);
  }
  w_str(g, 2, "g");
}

/* The model around a chain graph g (which it takes): g gets b and x's and y's value infos; ir_version
 * 8, opset 13. */
static wbuf w_chain_model(wbuf *g) {
  wbuf m = {0}, op = {0};
  const int64_t bdims[1] = {16};
  w_tensor(g, "b", bdims, 1, 0.5f, 0);
  w_value_info(g, 11, "x", k_dims, 4);
  w_value_info(g, 12, "y", k_dims, 4);
  w_int(&m, 1, 8);
  w_msg(&m, 7, g);
  w_str(&op, 1, "");
  w_int(&op, 2, 13);
  w_msg(&m, 8, &op);
  return m;
}

/* y = ((x + w1) + w2) + w3, three 4096-byte weights (w2's raw_data comes first), plus a small bias
 * b (not offered); nodes before initializers, as exporters write them. With big, an unused 4 MiB
 * initializer follows w1 (larger than hs_onnx_load_file's 1 MiB pieces). */
static wbuf make_model_big(int big) {
  wbuf g = {0};
  w_add_chain(&g);
  w_tensor(&g, "w1", k_dims, 4, 1.0f, 0);
  const int64_t big_dims[4] = {16, 16, 16, 256};
  if (big) w_tensor(&g, "big", big_dims, 4, 7.0f, 0);
  w_tensor(&g, "w2", k_dims, 4, 5000.0f, 1);
  w_tensor(&g, "w3", k_dims, 4, 9000.0f, 0);
  wbuf m = w_chain_model(&g);
  return m;
}

static wbuf make_model(void) { return make_model_big(0); }

/* ---- comparing graphs ---- */

static void assert_same_graph(const hs_graph *a, const hs_graph *b) {
  assert_int_equal(a->n_values, b->n_values);
  assert_int_equal(a->n_nodes, b->n_nodes);
  assert_int_equal(a->n_inputs, b->n_inputs);
  assert_int_equal(a->n_outputs, b->n_outputs);
  assert_int_equal(a->opset, b->opset);
  assert_int_equal(a->ir_version, b->ir_version);
  for (int i = 0; i < a->n_values; i++) {
    const hs_value *x = &a->values[i], *y = &b->values[i];
    assert_string_equal(x->name, y->name);
    assert_int_equal(x->kind, y->kind);
    assert_int_equal(x->dtype, y->dtype);
    assert_int_equal(x->ndim, y->ndim);
    for (int k = 0; k < x->ndim; k++) assert_int_equal(x->dims[k], y->dims[k]);
    assert_int_equal(x->nbytes, y->nbytes);
    assert_int_equal(x->data == NULL, y->data == NULL);
    if (x->data && x->nbytes) assert_memory_equal(x->data, y->data, x->nbytes);
  }
  for (int i = 0; i < a->n_nodes; i++) {
    assert_string_equal(a->nodes[i].op_type, b->nodes[i].op_type);
    assert_string_equal(a->nodes[i].name, b->nodes[i].name);
    assert_int_equal(a->nodes[i].n_in, b->nodes[i].n_in);
    assert_int_equal(a->nodes[i].n_attrs, b->nodes[i].n_attrs);
    for (int k = 0; k < a->nodes[i].n_in; k++) assert_int_equal(a->nodes[i].in[k], b->nodes[i].in[k]);
  }
}

static int decode_chunked(const void *d, size_t n, size_t chunk, const hs_onnx_source *src, hs_graph *g,
                          hs_error *err) {
  hs_pb_mem m;
  hs_backend_stream in;
  hs_pb_mem_stream(&m, d, n, chunk, &in);
  hs_graph_init(g);
  return hs_onnx_decode_model_stream(&in, src, g, err);
}

static const size_t k_chunks[] = {1, 2, 3, 5, 7, 13, 64, 4095, 4096, 4097, 65536};

/* Every piece size gives the buffer's graph: pieces of 1-13 bytes end inside keys, varints,
 * names and raw_data; the others inside the payloads. */
static void test_chunk_sizes_give_the_same_graph(void **state) {
  (void)state;
  wbuf m = make_model();
  hs_graph whole, g;
  hs_error err;
  hs_graph_init(&whole);
  assert_int_equal(hs_onnx_decode_model(m.v, m.n, NULL, &whole, &err), 0);
  assert_int_equal(whole.n_nodes, 4);
  int w2 = hs_graph_find(&whole, "w2");
  assert_true(w2 >= 0);
  assert_int_equal(((const float *)whole.values[w2].data)[7], 5007.0f);
  for (size_t i = 0; i < sizeof k_chunks / sizeof *k_chunks; i++) {
    hs_onnx_source src = {0};
    assert_int_equal(decode_chunked(m.v, m.n, k_chunks[i], &src, &g, &err), 0);
    assert_same_graph(&whole, &g);
    hs_graph_free(&g);
  }
  hs_graph_free(&whole);
  free(m.v);
}

/* The generated engine cases (every op family, subgraphs, Constant nodes, typed data fields) decode
 * the same from 1-byte and 7-byte pieces as from one buffer. */
static void test_generated_cases_stream_the_same(void **state) {
  (void)state;
  DIR *dir = opendir(HS_CASES_DIR "/cases");
  assert_non_null(dir);
  struct dirent *e;
  int seen = 0;
  while ((e = readdir(dir)) != NULL && seen < 400) {
    if (e->d_name[0] == '.') continue;
    char path[2048];
    snprintf(path, sizeof path, "%s/cases/%s/model.onnx", HS_CASES_DIR, e->d_name);
    void *buf;
    size_t len;
    hs_error err;
    if (hs_read_file(path, 0, &buf, &len, &err) != 0) continue;
    char base[2048];
    snprintf(base, sizeof base, "%s/cases/%s", HS_CASES_DIR, e->d_name);
    hs_graph whole, g;
    hs_graph_init(&whole);
    hs_error werr, serr;
    int wrc = hs_onnx_decode_model(buf, len, base, &whole, &werr);
    const size_t chunks[2] = {1, 7};
    for (int c = 0; c < 2; c++) {
      hs_onnx_source src = {.base_dir = base};
      int src_rc = decode_chunked(buf, len, chunks[c], &src, &g, &serr);
      assert_int_equal(src_rc, wrc);
      if (wrc == 0) assert_same_graph(&whole, &g);
      else assert_string_equal(serr.message, werr.message);
      hs_graph_free(&g);
    }
    hs_graph_free(&whole);
    free(buf);
    seen++;
  }
  closedir(dir);
  assert_true(seen > 20);
}

/* A source that holds only `have` of the size bytes it declares (a file cut short while read). */
typedef struct {
  const uint8_t *d;
  size_t have, pos, chunk;
  int fail_at; /* >= 0: return HS_IO once pos reaches it */
} short_src;

static int short_next(void *user, const void **data, size_t *len, hs_error *err) {
  short_src *s = user;
  if (s->fail_at >= 0 && s->pos >= (size_t)s->fail_at)
    return hs_error_set(err, HS_IO, "test source: disk on fire at byte %zu", s->pos);
  size_t n = s->have - s->pos < s->chunk ? s->have - s->pos : s->chunk;
  *data = s->d + s->pos;
  *len = n;
  s->pos += n;
  return 0;
}

/* A stream that ends before its declared size fails with "truncated" wherever it ends (inside a
 * key, a length, a name or a payload); a prefix given as a whole buffer fails too. No leaks (ASan). */
static void test_truncated_streams(void **state) {
  (void)state;
  wbuf m = make_model();
  hs_error err;
  hs_graph g;
  for (size_t have = 0; have < m.n; have += (have < 200 || m.n - have < 200) ? 1 : 97) {
    short_src s = {.d = m.v, .have = have, .chunk = 3, .fail_at = -1};
    hs_backend_stream in = {.size = m.n, .next = short_next, .user = &s};
    hs_onnx_source src = {0};
    hs_graph_init(&g);
    assert_int_equal(hs_onnx_decode_model_stream(&in, &src, &g, &err), HS_PARSE);
    assert_non_null(strstr(err.message, "truncated"));
    hs_graph_free(&g);
    /* the prefix as a whole buffer: refused while it ends before the graph does (the opset_import
     * field, 6 bytes, comes last: a prefix without it is a valid model of opset 1) */
    hs_graph_init(&g);
    int rc = hs_onnx_decode_model(m.v, have, NULL, &g, &err);
    if (have < m.n - 6) assert_int_not_equal(rc, 0);
    hs_graph_free(&g);
  }
  free(m.v);
}

/* A source's own error comes back as it is, not as a parse error. */
static void test_source_error_is_returned(void **state) {
  (void)state;
  wbuf m = make_model();
  hs_error err;
  hs_graph g;
  short_src s = {.d = m.v, .have = m.n, .chunk = 1000, .fail_at = 3000};
  hs_backend_stream in = {.size = m.n, .next = short_next, .user = &s};
  hs_onnx_source src = {0};
  hs_graph_init(&g);
  assert_int_equal(hs_onnx_decode_model_stream(&in, &src, &g, &err), HS_IO);
  assert_non_null(strstr(err.message, "disk on fire"));
  hs_graph_free(&g);
  free(m.v);
}

/* Lengths past the end of their message are refused before anything is allocated for them. */
static void test_lengths_past_the_end(void **state) {
  (void)state;
  hs_error err;
  hs_graph g;
  /* a graph whose length runs past the file */
  wbuf a = {0};
  w_key(&a, 7, HS_PB_BYTES);
  w_varint(&a, 1000);
  w_raw(&a, "\x0a\x00", 2);
  /* raw_data claiming 2^60 bytes inside a small initializer */
  wbuf b = {0}, gr = {0}, t = {0};
  w_int(&t, 1, 4);
  w_int(&t, 2, 1);
  w_key(&t, 9, HS_PB_BYTES);
  w_varint(&t, (uint64_t)1 << 60);
  w_raw(&t, "abcd", 4);
  w_msg(&gr, 5, &t);
  w_msg(&b, 7, &gr);
  /* an initializer longer than its graph */
  wbuf c = {0}, gc = {0};
  w_key(&gc, 5, HS_PB_BYTES);
  w_varint(&gc, 50);
  w_raw(&gc, "\x08\x01", 2);
  w_msg(&c, 7, &gc);
  /* a varint of 11 bytes */
  wbuf d = {0};
  w_key(&d, 1, HS_PB_VARINT);
  w_raw(&d, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
  wbuf *cases[4] = {&a, &b, &c, &d};
  for (int i = 0; i < 4; i++)
    for (size_t k = 0; k < sizeof k_chunks / sizeof *k_chunks; k++) {
      hs_onnx_source src = {0};
      assert_int_equal(decode_chunked(cases[i]->v, cases[i]->n, k_chunks[k], &src, &g, &err), HS_PARSE);
      assert_non_null(strstr(err.message, "malformed model"));
      hs_graph_free(&g);
    }
  for (int i = 0; i < 4; i++) free(cases[i]->v);
}

/* hs_onnx_load_file (hotserve run) streams the file in 1 MiB pieces and reads large payloads
 * straight into their tensors: the graph is the buffer decode's; a file cut short is refused. */
static void test_load_file_streams(void **state) {
  (void)state;
  wbuf m = make_model_big(1);
  assert_true(m.n > ((size_t)4 << 20));
  char dir[] = "/tmp/hs-test-stream-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[64];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  FILE *fp = fopen(path, "wb");
  assert_int_equal(fwrite(m.v, 1, m.n, fp), m.n);
  fclose(fp);
  hs_graph whole, g;
  hs_error err;
  hs_graph_init(&whole);
  assert_int_equal(hs_onnx_decode_model(m.v, m.n, NULL, &whole, &err), 0);
  hs_graph_init(&g);
  assert_int_equal(hs_onnx_load_file(path, 0, &g, &err), 0);
  assert_same_graph(&whole, &g);
  int big = hs_graph_find(&g, "big");
  assert_true(big >= 0);
  assert_int_equal(g.values[big].nbytes, (size_t)4 << 20);
  assert_int_equal(((const float *)g.values[big].data)[1048575], 7.0f + 1048575.0f);
  hs_graph_free(&g);
  /* over the size limit */
  hs_graph_init(&g);
  assert_int_equal(hs_onnx_load_file(path, m.n - 1, &g, &err), HS_LIMIT);
  hs_graph_free(&g);
  /* cut inside the big payload, and inside a later tensor */
  const size_t cuts[2] = {(size_t)3 << 20, m.n - 100};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(truncate(path, (off_t)cuts[i]), 0);
    hs_graph_init(&g);
    assert_int_equal(hs_onnx_load_file(path, 0, &g, &err), HS_PARSE);
    hs_graph_free(&g);
  }
  unlink(path);
  rmdir(dir);
  hs_graph_free(&whole);
  free(m.v);
}

/* ---- the share hook ---- */

typedef struct {
  int offered, taken, released;
  int take_seed; /* take tensors whose first value is 1 or 9000 (w1, w3), not 5000 (w2) */
} share_state;

static int share_find(void *user, const void *bytes, size_t nbytes, void **ref) {
  share_state *s = user;
  s->offered++;
  assert_int_equal(nbytes, 4096);
  const float *v = bytes;
  for (int i = 0; i < 1024; i++) assert_int_equal(v[i], v[0] + (float)i); /* the bytes of the file */
  if (!s->take_seed || v[0] == 5000.0f) return 0;
  s->taken++;
  *ref = s;
  return 1;
}
static share_state *g_share_state;
static void share_release(void *ref) {
  assert_ptr_equal(ref, g_share_state);
  g_share_state->released++;
}

/* Tensors the hook holds get no data of their own (a reference instead); the one it does not take
 * (w2, whose raw_data comes before its shape) keeps exactly the file's bytes; the small bias is not
 * offered; the rest of the graph is the buffer decode's. */
static void test_share_hook_gets_the_bytes_read(void **state) {
  (void)state;
  wbuf m = make_model();
  hs_graph whole, g;
  hs_error err;
  hs_graph_init(&whole);
  assert_int_equal(hs_onnx_decode_model(m.v, m.n, NULL, &whole, &err), 0);
  for (size_t k = 0; k < sizeof k_chunks / sizeof *k_chunks; k++) {
    share_state st = {.take_seed = 1};
    g_share_state = &st;
    hs_onnx_share sh = {.find = share_find, .release = share_release, .user = &st};
    hs_onnx_source src = {.share = &sh};
    assert_int_equal(decode_chunked(m.v, m.n, k_chunks[k], &src, &g, &err), 0);
    assert_int_equal(st.offered, 3);
    assert_int_equal(st.taken, 2);
    const char *names[4] = {"w1", "w2", "w3", "b"};
    for (int i = 0; i < 4; i++) {
      const hs_value *a = &whole.values[hs_graph_find(&whole, names[i])];
      const hs_value *v = &g.values[hs_graph_find(&g, names[i])];
      assert_int_equal(v->nbytes, a->nbytes);
      if (i == 0 || i == 2) {
        assert_null(v->data);
        assert_ptr_equal(v->ref, &st);
      } else {
        assert_null(v->ref);
        assert_memory_equal(v->data, a->data, a->nbytes);
      }
    }
    hs_graph_free(&g);
    assert_int_equal(st.released, 2);
  }
  /* a hook that takes nothing: every tensor keeps its bytes (the scratch buffer handed over) */
  share_state none = {.take_seed = 0};
  g_share_state = &none;
  hs_onnx_share sh = {.find = share_find, .release = share_release, .user = &none};
  hs_onnx_source src = {.share = &sh};
  assert_int_equal(decode_chunked(m.v, m.n, 4096, &src, &g, &err), 0);
  assert_int_equal(none.offered, 3);
  assert_same_graph(&whole, &g);
  hs_graph_free(&g);
  hs_graph_free(&whole);
  free(m.v);
}

/* ---- the share hook's streaming form (begin/feed/prefix/end) ---- */

/* Held copies: w1's bytes; w3's with its last byte changed; w3's with its third byte changed. A
 * match compares each piece with every copy still equal, in order. */
#define N_HELD 3
typedef struct {
  float held[N_HELD][1024];
  int begun, ended, taken, released, found_offered;
} stream_share;

typedef struct {
  stream_share *s;
  size_t fed, good, last;
  int alive[N_HELD];
} stream_match;

static void *ss_begin(void *user, size_t nbytes) {
  stream_share *s = user;
  if (nbytes != sizeof s->held[0]) return NULL;
  stream_match *m = calloc(1, sizeof *m);
  assert_non_null(m);
  m->s = s;
  for (int i = 0; i < N_HELD; i++) m->alive[i] = 1;
  s->begun++;
  return m;
}

static int ss_feed(void *match, const void *piece, size_t n) {
  stream_match *m = match;
  assert_true(n >= 1 && m->fed + n <= sizeof m->s->held[0]);
  int alive = 0;
  for (int i = 0; i < N_HELD; i++) {
    if (!m->alive[i]) continue;
    if (!alive) {
      m->last = (size_t)i;
      m->good = m->fed;
    }
    m->alive[i] = memcmp((const char *)m->s->held[i] + m->fed, piece, n) == 0;
    if (m->alive[i] && !alive++) {
      m->last = (size_t)i;
      m->good = m->fed + n;
    }
  }
  m->fed += n;
  return alive > 0;
}

static int ss_prefix(void *match, void *dst, size_t n) {
  stream_match *m = match;
  if (n > m->good) return -1;
  memcpy(dst, m->s->held[m->last], n);
  return 0;
}

static int ss_end(void *match, void **ref) {
  stream_match *m = match;
  int held = 0;
  for (int i = 0; i < N_HELD && ref && m->fed == sizeof m->s->held[0] && !held; i++)
    if (m->alive[i]) {
      *ref = m->s->held[i];
      held = 1;
    }
  m->s->ended++;
  m->s->taken += held;
  free(m);
  return held;
}

static stream_share *g_stream_share;
static void ss_release(void *ref) {
  assert_ptr_equal(ref, g_stream_share->held[0]);
  g_stream_share->released++;
}

static int ss_find(void *user, const void *bytes, size_t nbytes, void **ref) {
  (void)bytes;
  (void)nbytes;
  (void)ref;
  ((stream_share *)user)->found_offered++;
  return 0;
}

/* A tensor equal to a held copy is that copy's reference, never held whole; one that differs from
 * every copy (w3: from one only in its last byte, from another in its first piece) keeps exactly
 * the file's bytes, those before the differing piece read back from the copy that matched them;
 * w2 (raw_data before its shape: no candidate when it arrives) goes to find; every match ends. */
static void test_share_hook_compares_as_bytes_arrive(void **state) {
  (void)state;
  wbuf m = make_model();
  hs_graph whole, g;
  hs_error err;
  hs_graph_init(&whole);
  assert_int_equal(hs_onnx_decode_model(m.v, m.n, NULL, &whole, &err), 0);
  const hs_value *w1 = &whole.values[hs_graph_find(&whole, "w1")], *w3 = &whole.values[hs_graph_find(&whole, "w3")];
  for (size_t k = 0; k < sizeof k_chunks / sizeof *k_chunks; k++) {
    stream_share *st = calloc(1, sizeof *st);
    assert_non_null(st);
    g_stream_share = st;
    memcpy(st->held[0], w1->data, 4096);
    memcpy(st->held[1], w3->data, 4096);
    ((unsigned char *)st->held[1])[4095] ^= 1;
    memcpy(st->held[2], w3->data, 4096);
    ((unsigned char *)st->held[2])[2] ^= 1;
    hs_onnx_share sh = {.find = ss_find, .release = ss_release, .user = st, .begin = ss_begin, .feed = ss_feed,
                        .prefix = ss_prefix, .end = ss_end};
    hs_onnx_source src = {.share = &sh};
    assert_int_equal(decode_chunked(m.v, m.n, k_chunks[k], &src, &g, &err), 0);
    assert_int_equal(st->begun, 2); /* w1, w3 */
    assert_int_equal(st->ended, 2);
    assert_int_equal(st->taken, 1);
    assert_int_equal(st->found_offered, 1); /* w2 */
    const hs_value *v1 = &g.values[hs_graph_find(&g, "w1")], *v3 = &g.values[hs_graph_find(&g, "w3")];
    assert_null(v1->data);
    assert_ptr_equal(v1->ref, st->held[0]);
    assert_null(v3->ref);
    assert_non_null(v3->data);
    assert_memory_equal(v3->data, w3->data, 4096);
    hs_graph_free(&g);
    assert_int_equal(st->released, 1);
    free(st);
  }
  hs_graph_free(&whole);
  free(m.v);
}

/* ---- external data streamed (hs_onnx_source.open) ---- */

/* A float32 TensorProto whose 4096 bytes lie in location at off (external data). */
static void w_ext_tensor(wbuf *g, const char *name, const char *location, size_t off) {
  wbuf t = {0}, e = {0};
  char num[32];
  for (int i = 0; i < 4; i++) w_int(&t, 1, (uint64_t)k_dims[i]);
  w_int(&t, 2, 1);
  w_str(&t, 8, name);
  w_str(&e, 1, "location");
  w_str(&e, 2, location);
  w_msg(&t, 13, &e);
  snprintf(num, sizeof num, "%zu", off);
  w_str(&e, 1, "offset");
  w_str(&e, 2, num);
  w_msg(&t, 13, &e);
  w_str(&e, 1, "length");
  w_str(&e, 2, "4096");
  w_msg(&t, 13, &e);
  w_int(&t, 14, 1);
  w_msg(g, 5, &t);
}

/* make_model's graph with w1, w2, w3 in ext.bin, out of order and overlapping: w1 at 8192, w2 at 0,
 * w3 at 8192 too (w1's very bytes); the file also has bytes before, between and after them. With
 * w2_constant, w2 is the value of a Constant node instead of an initializer (an external tensor the
 * stream decoder does not fill, as a subgraph's would be). */
#define EXT_BYTES 16000
static wbuf make_ext_model_as(uint8_t file[EXT_BYTES], int w2_constant) {
  wbuf g = {0};
  if (w2_constant) {
    wbuf node = {0}, attr = {0};
    w_str(&node, 2, "w2");
    w_str(&node, 4, "Constant");
    w_str(&attr, 1, "value");
    w_ext_tensor(&attr, "w2", "ext.bin", 0); /* (field 5: AttributeProto.t) */
    w_int(&attr, 20, 4);                     /* type TENSOR */
    w_msg(&node, 5, &attr);
    w_msg(&g, 1, &node);
  }
  w_add_chain(&g);
  w_ext_tensor(&g, "w1", "./ext.bin", 8192);
  if (!w2_constant) w_ext_tensor(&g, "w2", "ext.bin", 0);
  w_ext_tensor(&g, "w3", "ext.bin", 8192);
  wbuf m = w_chain_model(&g);
  memset(file, 0xee, EXT_BYTES);
  for (int i = 0; i < 1024; i++) {
    float a = 5000.0f + (float)i, c = 1.0f + (float)i;
    memcpy(file + 4 * i, &a, 4);
    memcpy(file + 8192 + 4 * i, &c, 4);
  }
  return m;
}

static wbuf make_ext_model(uint8_t file[EXT_BYTES]) { return make_ext_model_as(file, 0); }

/* An external file handed out in pieces of `chunk` bytes (the first `have` bytes only), counting opens. */
typedef struct {
  const uint8_t *d;
  size_t have, pos, chunk;
  int opens;
  hs_backend_stream st;
} ext_src;

static int ext_src_next(void *user, const void **data, size_t *len, hs_error *err) {
  (void)err;
  ext_src *x = user;
  size_t n = x->have - x->pos < x->chunk ? x->have - x->pos : x->chunk;
  *data = x->d + x->pos;
  *len = n;
  x->pos += n;
  return 0;
}

static int ext_src_open(void *user, const char *path, const hs_backend_stream **out, hs_error *err) {
  ext_src *x = user;
  if (strcmp(path, "ext.bin") != 0) return hs_error_set(err, HS_NOT_FOUND, "%s", path);
  x->opens++;
  x->st = (hs_backend_stream){.size = EXT_BYTES, .next = ext_src_next, .user = x};
  *out = &x->st;
  return 0;
}

/* Out-of-order and overlapping external ranges streamed from one pass over their file (opened
 * once, read only up to the last range's end, in pieces of every size) give the graph the
 * in-memory file gives; the share hook is offered each filled tensor, and one it holds is not
 * kept; a file that ends before a range does is refused; a range past the file's size is refused
 * before anything is read. */
static void test_external_data_streamed(void **state) {
  (void)state;
  static uint8_t file[EXT_BYTES];
  wbuf m = make_ext_model(file);
  hs_backend_file mem_files[2] = {{"model.onnx", NULL, m.n}, {"ext.bin", file, EXT_BYTES}};
  hs_backend_file str_files[2] = {{"model.onnx", NULL, m.n}, {"ext.bin", NULL, EXT_BYTES}};
  hs_onnx_source whole_src = {.files = mem_files, .n_files = 2};
  hs_graph whole, g;
  hs_error err;
  hs_graph_init(&whole);
  assert_int_equal(hs_onnx_decode_model_src(m.v, m.n, &whole_src, &whole, &err), 0);
  const hs_value *w3 = &whole.values[hs_graph_find(&whole, "w3")];
  assert_memory_equal(w3->data, file + 8192, 4096);
  const size_t chunks[] = {1, 7, 4095, 4096, 4097, 1 << 20};
  for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
    ext_src x = {.d = file, .have = EXT_BYTES, .chunk = chunks[k]};
    hs_onnx_source src = {.files = str_files, .n_files = 2, .open = ext_src_open, .open_user = &x};
    if (decode_chunked(m.v, m.n, 4097, &src, &g, &err)) fail_msg("%s", err.message);
    assert_int_equal(x.opens, 1);
    assert_true(x.pos >= 8192 + 4096 && x.pos < 8192 + 4096 + chunks[k] + 1); /* stopped after the last range */
    assert_same_graph(&whole, &g);
    hs_graph_free(&g);
  }

  /* the share hook: offered w1, w2, w3 as filled, holds w1 and w3 (not w2) */
  share_state sh_st = {.take_seed = 1};
  g_share_state = &sh_st;
  hs_onnx_share sh = {.find = share_find, .release = share_release, .user = &sh_st};
  ext_src x = {.d = file, .have = EXT_BYTES, .chunk = 1000};
  hs_onnx_source src = {.files = str_files, .n_files = 2, .share = &sh, .open = ext_src_open, .open_user = &x};
  assert_int_equal(decode_chunked(m.v, m.n, 4097, &src, &g, &err), 0);
  assert_int_equal(sh_st.offered, 3);
  assert_int_equal(sh_st.taken, 2);
  const hs_value *v1 = &g.values[hs_graph_find(&g, "w1")], *v2 = &g.values[hs_graph_find(&g, "w2")];
  assert_null(v1->data);
  assert_ptr_equal(v1->ref, &sh_st);
  assert_memory_equal(v2->data, file, 4096);
  hs_graph_free(&g);
  assert_int_equal(sh_st.released, 2);

  /* the file ends (shrank) before w1's range does: refused */
  x = (ext_src){.d = file, .have = 10000, .chunk = 4096};
  src = (hs_onnx_source){.files = str_files, .n_files = 2, .open = ext_src_open, .open_user = &x};
  assert_int_equal(decode_chunked(m.v, m.n, 4097, &src, &g, &err), HS_PARSE);
  assert_non_null(strstr(err.message, "ext.bin"));
  hs_graph_free(&g);

  /* a file smaller than a range (as listed): refused before it is opened */
  hs_backend_file small[2] = {{"model.onnx", NULL, m.n}, {"ext.bin", NULL, 12000}};
  x = (ext_src){.d = file, .have = EXT_BYTES, .chunk = 4096};
  src = (hs_onnx_source){.files = small, .n_files = 2, .open = ext_src_open, .open_user = &x};
  assert_int_equal(decode_chunked(m.v, m.n, 4097, &src, &g, &err), HS_PARSE);
  assert_non_null(strstr(err.message, "do not fit"));
  assert_int_equal(x.opens, 0);
  hs_graph_free(&g);
  hs_graph_free(&whole);
  free(m.v);
}

/* An external tensor outside the main graph's initializers (here a Constant's value) in a file given
 * as a stream is HS_NEEDS_WHOLE_FILES, the loader's cue to load the version again with its files
 * whole, wherever the file stands among the files (first included); with the file in memory the
 * same model decodes, w2 holding the file's first bytes. */
static void test_external_constant_needs_whole_files(void **state) {
  (void)state;
  static uint8_t file[EXT_BYTES];
  wbuf m = make_ext_model_as(file, 1);
  hs_graph g;
  hs_error err;
  hs_backend_file mem_files[2] = {{"model.onnx", NULL, m.n}, {"ext.bin", file, EXT_BYTES}};
  hs_onnx_source whole_src = {.files = mem_files, .n_files = 2};
  if (decode_chunked(m.v, m.n, 4097, &whole_src, &g, &err)) fail_msg("%s", err.message);
  int w2 = hs_graph_find(&g, "w2");
  assert_true(w2 >= 0);
  assert_int_equal(g.values[w2].nbytes, 4096);
  assert_memory_equal(g.values[w2].data, file, 4096);
  hs_graph_free(&g);
  hs_backend_file after[2] = {{"model.onnx", NULL, m.n}, {"ext.bin", NULL, EXT_BYTES}};
  hs_backend_file first[2] = {{"ext.bin", NULL, EXT_BYTES}, {"model.onnx", NULL, m.n}};
  hs_backend_file *orders[2] = {after, first};
  for (int i = 0; i < 2; i++) {
    ext_src x = {.d = file, .have = EXT_BYTES, .chunk = 4096};
    hs_onnx_source src = {.files = orders[i], .n_files = 2, .open = ext_src_open, .open_user = &x};
    assert_int_equal(decode_chunked(m.v, m.n, 4097, &src, &g, &err), HS_NEEDS_WHOLE_FILES);
    assert_non_null(strstr(err.message, "ext.bin"));
    hs_graph_free(&g);
  }
  free(m.v);
}

/* ---- loads that run ---- */

/* ---- payloads read straight into their tensors (hs_backend_stream.read_into, settle) ---- */

/* A memory stream with read_into: each payload read into a buffer is recorded, and settle checks that
 * every recorded buffer still holds the file's bytes at its offset (nothing changed or freed it
 * before its owner was done with it: ASan catches a freed one) before it lets them go. */
#define INTO_MAX 64
typedef struct {
  const uint8_t *d;
  size_t size, have, pos, chunk;
  struct {
    const uint8_t *dst;
    size_t off, n;
  } into[INTO_MAX];
  int n_into, n_unsettled, settles;
  size_t into_bytes;
} into_src;

static int into_next(void *user, const void **data, size_t *len, hs_error *err) {
  (void)err;
  into_src *s = user;
  size_t n = s->have - s->pos < s->chunk ? s->have - s->pos : s->chunk;
  *data = s->d + s->pos;
  *len = n;
  s->pos += n;
  return 0;
}

static long long into_read(void *user, void *dst, size_t n, hs_error *err) {
  (void)err;
  into_src *s = user;
  if (n > s->have - s->pos) n = s->have - s->pos;
  assert_true(s->n_into < INTO_MAX);
  memcpy(dst, s->d + s->pos, n);
  s->into[s->n_into].dst = dst;
  s->into[s->n_into].off = s->pos;
  s->into[s->n_into].n = n;
  s->n_into++;
  s->n_unsettled = s->n_into;
  s->into_bytes += n;
  s->pos += n;
  return (long long)n;
}

static void into_settle(void *user) {
  into_src *s = user;
  for (int i = 0; i < s->n_unsettled; i++)
    if (s->into[i].n) assert_memory_equal(s->into[i].dst, s->d + s->into[i].off, s->into[i].n);
  s->n_unsettled = 0;
  s->n_into = 0;
  s->settles++;
}

static hs_backend_stream into_stream(into_src *s, const wbuf *m, size_t have, size_t chunk) {
  *s = (into_src){.d = m->v, .size = m->n, .have = have, .chunk = chunk};
  return (hs_backend_stream){.size = m->n, .next = into_next, .user = s, .read_into = into_read,
                             .settle = into_settle};
}

/* holds the 4 MiB "big" tensor (first value 7), not the others */
static int hold_big(void *user, const void *bytes, size_t nbytes, void **ref) {
  share_state *s = user;
  s->offered++;
  if (((const float *)bytes)[0] != 7.0f) return 0;
  assert_int_equal(nbytes, (size_t)16 * 16 * 16 * 256 * 4);
  s->taken++;
  *ref = s;
  return 1;
}
static void hold_release(void *ref) { ((share_state *)ref)->released++; }

static void count_bytes_done(void *user) {
  into_src *s = user;
  assert_int_equal(s->n_unsettled, 0); /* settled before the engine may free or change a payload */
  s->settles += 1000;
}

/* The 4 MiB payload goes straight into its tensor (read_into) and every such buffer is settled,
 * intact, before the decode returns, whatever happens to it: kept (the graph is the buffer decode's),
 * held by the share hook (settled before it is freed), or a stream cut short inside it (refused,
 * settled before the partial buffer is freed). Through the engine, before bytes_done. */
static void test_read_into_settles_before_freeing(void **state) {
  (void)state;
  /* a 4 MiB buffer is its own mapping, unmapped when freed: a settle after the free faults even
   * without ASan (malloc would otherwise keep it, with its bytes, after the first such free) */
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  wbuf m = make_model_big(1);
  hs_graph whole, g;
  hs_error err;
  hs_graph_init(&whole);
  assert_int_equal(hs_onnx_decode_model(m.v, m.n, NULL, &whole, &err), 0);
  const size_t chunks[3] = {4097, 65536, 256 << 10};
  for (int c = 0; c < 3; c++) {
    into_src s;
    hs_backend_stream in = into_stream(&s, &m, m.n, chunks[c]);
    hs_onnx_source src = {0};
    hs_graph_init(&g);
    assert_int_equal(hs_onnx_decode_model_stream(&in, &src, &g, &err), 0);
    assert_true(s.into_bytes > ((size_t)3 << 20)); /* most of "big" read into its tensor */
    assert_int_equal(s.n_unsettled, 0);
    assert_true(s.settles > 0);
    assert_int_equal(s.pos, m.n);
    assert_same_graph(&whole, &g);
    hs_graph_free(&g);
  }

  share_state held = {0};
  hs_onnx_share sh = {.find = hold_big, .release = hold_release, .user = &held};
  into_src s;
  hs_backend_stream in = into_stream(&s, &m, m.n, 4097);
  hs_onnx_source src = {.share = &sh};
  hs_graph_init(&g);
  assert_int_equal(hs_onnx_decode_model_stream(&in, &src, &g, &err), 0);
  assert_int_equal(held.taken, 1);
  assert_true(s.into_bytes > ((size_t)3 << 20));
  assert_int_equal(s.n_unsettled, 0);
  const hs_value *big = &g.values[hs_graph_find(&g, "big")];
  assert_null(big->data);
  hs_graph_free(&g);
  assert_int_equal(held.released, 1);

  size_t cut = m.n / 2; /* inside "big" */
  in = into_stream(&s, &m, cut, 4097);
  src = (hs_onnx_source){0};
  hs_graph_init(&g);
  assert_int_equal(hs_onnx_decode_model_stream(&in, &src, &g, &err), HS_PARSE);
  assert_non_null(strstr(err.message, "truncated"));
  assert_true(s.into_bytes > 0);
  assert_int_equal(s.n_unsettled, 0);
  hs_graph_free(&g);

  /* the engine: every payload settled before bytes_done, the model built */
  in = into_stream(&s, &m, m.n, 4097);
  hs_backend_options o = {.bytes_done = count_bytes_done, .bytes_done_user = &s};
  hs_engine_model *em = NULL;
  assert_int_equal(hs_engine_load_stream(&in, NULL, 0, &o, &em, &err), 0);
  assert_true(s.settles >= 1001);
  hs_engine_free(em);
  hs_graph_free(&whole);
  free(m.v);
}

#define WMODEL HS_WEIGHTS_DIR "/model.onnx"

static void run_model(const hs_engine_model *m, const hs_tensor *x, hs_tensor *out, int n_out) {
  hs_engine_session *s;
  hs_error err;
  assert_int_equal(hs_engine_session_create(m, &s, &err), 0);
  hs_tensor o[3];
  assert_int_equal(hs_engine_run(s, x, 1, o, (size_t)n_out, &err), 0);
  for (int i = 0; i < n_out; i++) {
    out[i] = o[i];
    out[i].data = malloc(o[i].nbytes);
    memcpy(out[i].data, o[i].data, o[i].nbytes);
  }
  hs_engine_session_free(s);
}

/* A Conv model (tests/onnx/gen_weights_case.py) loaded from a stream of 4097-byte pieces, from one
 * buffer and from its file (hotserve run's path) gives bit-equal outputs. */
static void test_streamed_load_runs_bit_equal(void **state) {
  (void)state;
  void *buf;
  size_t len;
  hs_error err;
  assert_int_equal(hs_read_file(WMODEL, 0, &buf, &len, &err), 0);
  hs_tensor x;
  assert_int_equal(hs_npy_read(HS_WEIGHTS_DIR "/x_0.npy", &x, &err), 0);
  hs_engine_model *mb = NULL, *ms = NULL, *mf = NULL;
  assert_int_equal(hs_engine_load_buffer(buf, len, NULL, 0, NULL, &mb, &err), 0);
  hs_pb_mem mem;
  hs_backend_stream in;
  hs_pb_mem_stream(&mem, buf, len, 4097, &in);
  assert_int_equal(hs_engine_load_stream(&in, NULL, 0, NULL, &ms, &err), 0);
  assert_int_equal(mem.pos, len); /* read to its end */
  assert_int_equal(hs_engine_load(WMODEL, NULL, &mf, &err), 0);
  hs_tensor ob[3], os[3], of[3];
  run_model(mb, &x, ob, 3);
  run_model(ms, &x, os, 3);
  run_model(mf, &x, of, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(ob[i].nbytes, os[i].nbytes);
    assert_true(ob[i].nbytes > 0);
    assert_memory_equal(ob[i].data, os[i].data, ob[i].nbytes);
    assert_memory_equal(ob[i].data, of[i].data, ob[i].nbytes);
    free(ob[i].data);
    free(os[i].data);
    free(of[i].data);
  }
  /* the size limit applies to the stream's declared size */
  hs_backend_options o = {.max_model_bytes = len - 1};
  hs_pb_mem_stream(&mem, buf, len, 4097, &in);
  hs_engine_model *none = NULL;
  assert_int_equal(hs_engine_load_stream(&in, NULL, 0, &o, &none, &err), HS_LIMIT);
  assert_null(none);
  hs_engine_free(mb);
  hs_engine_free(ms);
  hs_engine_free(mf);
  free(x.data);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chunk_sizes_give_the_same_graph),
      cmocka_unit_test(test_generated_cases_stream_the_same),
      cmocka_unit_test(test_truncated_streams),
      cmocka_unit_test(test_source_error_is_returned),
      cmocka_unit_test(test_lengths_past_the_end),
      cmocka_unit_test(test_load_file_streams),
      cmocka_unit_test(test_share_hook_gets_the_bytes_read),
      cmocka_unit_test(test_share_hook_compares_as_bytes_arrive),
      cmocka_unit_test(test_external_data_streamed),
      cmocka_unit_test(test_external_constant_needs_whole_files),
      cmocka_unit_test(test_streamed_load_runs_bit_equal),
      cmocka_unit_test(test_read_into_settles_before_freeing), /* last: mallopt stays for the process */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

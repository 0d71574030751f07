/* engine.h - compiled models, per-shape run plans and sessions: the engine behind the backend ABI.
 *
 * DESIGN. hs_engine_compile turns a decoded graph into an immutable hs_engine_model: ops bound and
 * checked, the pass pipeline applied (fold constants, drop Identity/Dropout, fusions), kernel
 * state prepared. After compile nothing in the model changes, so any number of threads may run it,
 * each with its own hs_engine_session. A session owns one scratch arena and a small cache of
 * plans; a plan is made for one set of concrete input shapes (plus the contents of inputs that
 * decide shapes, e.g. a Reshape target given at run time): every value's shape and its offset in
 * the arena, chosen by liveness so buffers are reused. A run with a cached plan allocates nothing.
 * Outputs point into the arena and stay valid until the session's next run or its free, or until
 * hs_engine_session_idle: a session whose caller says it is done with the outputs hands its arena
 * back to a pool shared with the sessions of every model whose load-time plan needs the same arena
 * (the versions of one model, engine/arena.c), and its next run takes one from there; so a reload
 * that keeps the graph finds its sessions' arenas already allocated by the version it replaces.
 *
 * Control flow (If, Loop, Scan) adds subgraphs: each is compiled once, as a model of its own
 * (subs[], the node attribute's hs_attr.sub), and run through a session of its own that the calling
 * session creates on first use, so a subgraph is planned per shape exactly like a model. A graph
 * that holds a control-flow node is `dynamic`: the op learns its output shapes only by running, so
 * that graph runs node by node (engine/subgraph.c) instead of from a plan.
 */
#ifndef HS_ENGINE_ENGINE_H
#define HS_ENGINE_ENGINE_H

#include <stddef.h>

#include "hotserve/backend.h"
#include "ir/ir.h"

typedef struct hs_engine_model {
  hs_graph g;
  hs_io_desc *inputs, *outputs;
  int n_inputs, n_outputs;
  int *key_inputs;    /* graph-input positions whose contents decide shapes */
  int n_key_inputs;
  int max_in, max_out; /* widest node, for the session's view arrays */
  int threads;          /* compute threads per run (hs_backend_options.threads; 0 = kernels default) */
  size_t const_bytes;   /* weights and folded constants */
  size_t planned_bytes; /* arena of a batch-1 plan, when one could be made at load */
  size_t max_run_bytes; /* a run's plan may need at most this much arena (hs_backend_options) */
  struct hs_engine_model **subs; /* compiled subgraphs of g's nodes, indexed by hs_attr.sub */
  int n_subs;
  int is_sub;           /* a subgraph: input shapes come per run, no trial plans */
  int graph_borrowed;   /* g is owned by the parent's node attribute, not by this model */
  int dynamic;          /* g holds a control-flow node: runs node by node (subgraph.c) */
} hs_engine_model;

typedef struct hs_plan hs_plan;

/* Plans a session keeps, most recently used first. Plans are small (shapes and offsets; kernels live
 * in the nodes' caches), and dynamic batching runs every batch size from 1 to max_batch_size: with 4
 * plans, batches cycling through 4..8 rows replanned on most runs (bench/results/serve-batching-*). */
#define HS_PLAN_CACHE 16
typedef struct hs_engine_session {
  const hs_engine_model *m;
  void *arena;        /* the arena this session holds now (its own, or one from pool: held) */
  size_t arena_bytes;
  struct hs_arena_pool *pool; /* shared arenas (engine/arena.h); NULL: the arena is the session's own */
  struct hs_arena *held;      /* with pool: the pool's arena held since the last run, until idle */
  hs_plan *plans[HS_PLAN_CACHE];
  hs_tensor *vin, *vout; /* per-node views, max_in / max_out long */
  struct hs_engine_session **subs; /* sessions of m->subs, created on first use */
  struct hs_eager *eager;          /* per-value buffers of a dynamic model's runs (subgraph.c) */
  int eager_only;                  /* a subgraph whose shapes it computes itself: runs node by node */
} hs_engine_session;

/* Compiles g (ownership moves into the model, also on failure: the graph is freed then). */
int hs_engine_compile(hs_graph *g, const hs_backend_options *opts, hs_engine_model **out, hs_error *err);
/* Reads, decodes and compiles a model file. */
int hs_engine_load(const char *path, const hs_backend_options *opts, hs_engine_model **out, hs_error *err);
/* Decodes and compiles a model held in memory; external data comes only from files (see
 * hs_backend.load_buffer), nothing is read from disk. model and files are only read during the
 * call, and not after opts->bytes_done (when set), which is called once decoding is over. */
int hs_engine_load_buffer(const void *model, size_t len, const hs_backend_file *files, size_t n_files,
                          const hs_backend_options *opts, hs_engine_model **out, hs_error *err);
/* hs_engine_load_buffer with the model's bytes as a stream (hs_backend.load_stream): each chunk is
 * decoded as it arrives (onnx.h, hs_onnx_decode_model_stream) and the whole file is never held. */
int hs_engine_load_stream(const hs_backend_stream *model, const hs_backend_file *files, size_t n_files,
                          const hs_backend_options *opts, hs_engine_model **out, hs_error *err);
void hs_engine_free(hs_engine_model *m);
/* Process-wide malloc setting for loading models; call early, before the first load (idempotent,
 * thread-safe). Buffers up to 32 MiB (glibc's largest mmap threshold; ResNet-50's largest weight is
 * 9.4 MiB) come from malloc's heaps instead of mappings of their own, so the pages a load frees (a
 * Conv's decoded weights once its kernel holds them, the file bytes once decoded) serve the buffers
 * it allocates next instead of fresh zeroed pages: a cold ResNet-50 load faults in about a quarter
 * fewer pages and takes about a fifth less CPU. The cost: freed buffers of that size stay with the
 * allocator until malloc_trim or its trim threshold, not unmapped at once. */
void hs_engine_prefer_heap(void);

int hs_engine_session_create(const hs_engine_model *m, hs_engine_session **out, hs_error *err);
void hs_engine_session_free(hs_engine_session *s);
/* The caller is done with the outputs of s's last run (they are invalid from here on): s's arena goes
 * back to its pool for other sessions' runs until s runs again. Optional (without it a session keeps
 * its arena, as a private one), cheap, and a no-op for a session that holds none. */
void hs_engine_session_idle(hs_engine_session *s);
/* The process's pooled session arenas (engine/arena.c): how many there are, their bytes, how many a
 * run holds now, pools, and arenas allocated since the start (a reload that reuses the replaced
 * version's arenas adds none). */
typedef struct hs_engine_arena_stats {
  size_t arenas, bytes, in_use, pools;
  size_t created;
} hs_engine_arena_stats;
void hs_engine_arena_stats_get(hs_engine_arena_stats *out);
/* Frees the pooled arenas kept beyond one per member session (those a reload's warm-up added, kept
 * for the next reload's; engine/arena.c): the server's loader calls it with its --trim-delay trim. */
void hs_engine_arena_trim(void);
/* The process's budget for the scratch memory (plan arenas) of the runs in flight, across every model
 * and session: a run whose plan would push the total over `bytes` waits up to wait_ms for others to
 * finish, then fails with HS_OVERLOADED (a plan larger than the whole budget fails at once with
 * HS_LIMIT). 0 bytes: no budget (the default). Subgraph and node-by-node (control-flow) runs are
 * not counted. Call it before serving; thread-safe. */
void hs_engine_set_memory_budget(size_t bytes, unsigned wait_ms);
/* Plan-arena bytes of the runs in flight now (counted whether or not a budget is set), and the
 * budget (0: none). */
size_t hs_engine_memory_in_flight(void);
size_t hs_engine_memory_budget(void);
/* on: runs on the calling thread are outside the budget until called with off (the loader's warm-up
 * and golden runs, whose memory admission already counted; a busy server must not fail a load). */
void hs_engine_memory_budget_exempt(int on);

/* Load pacing: while set, fn(user, streamed) is called on this thread between the pieces of a
 * load's and a run's work (each piece of a streamed model file, each node's kernel build, each node
 * run), so the caller may sleep there to cap the CPU share of its loads (serving/pace.c,
 * --loader-pace); streamed counts the model-file bytes this thread has streamed since the call.
 * Per thread; fn NULL: none (request threads never set it). */
void hs_engine_set_pace(void (*fn)(void *user, uint64_t streamed), void *user);
/* Calls this thread's pace function, if any (the engine's own pace points). */
void hs_engine_pace_point(void);

/* Runs one inference (see hs_backend.run for the contract). */
int hs_engine_run(hs_engine_session *s, const hs_tensor *inputs, size_t n_inputs, hs_tensor *outputs,
                  size_t n_outputs, hs_error *err);

#endif

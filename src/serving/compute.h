/* compute.h - the process-wide pool of compute threads that run every model session of the server.
 *
 * A request thread (a libmicrohttpd connection thread, a gRPC worker, a batch leader, the shadow
 * worker) never runs a multi-threaded session itself: it takes a compute slot and a session as
 * before, then hands the run to hs_compute_run and sleeps until a compute thread has finished it.
 * A one-thread run (--threads 1, the default) starts no OpenMP team, so it stays on the request's
 * thread and pays no hand-off (hs_compute_run_for). Each compute thread
 * keeps one OpenMP team (kernels.h, Threads), so the server's OpenMP threads are bounded by the
 * pool (at most hs_compute_max_threads() x the model's threads), not by its connections (issue 16).
 * See compute.c for the DESIGN.
 */
#ifndef HS_SERVING_COMPUTE_H
#define HS_SERVING_COMPUTE_H

#include <stddef.h>

/* Sets the most compute threads the pool may hold (>= 1; 0: the default, twice the CPUs the process
 * may use, at least 4) and starts `prestart` of them now (at most the cap), so a server's thread
 * count settles before it answers its first request. Call it once, before serving; a process that
 * never calls it gets the default cap and threads started on first use. Returns the cap. */
int hs_compute_start(int max_threads, int prestart);

/* Runs fn(arg) on a compute thread and returns once it has returned. When every compute thread is
 * busy a new one is started (up to the cap); at the cap the run waits for the first one free, in
 * arrival order. fn must not block on anything a request holds (it may take locks held briefly).
 * Called on a compute thread (a run that runs another), fn runs inline. Thread-safe. */
void hs_compute_run(void (*fn)(void *arg), void *arg);

/* As hs_compute_run when a run uses `threads` threads (0: the backend default, all cores); a
 * one-thread run (threads == 1) starts no OpenMP team and runs here, without a hand-off. */
void hs_compute_run_for(int threads, void (*fn)(void *arg), void *arg);

/* The pool's cap, and the compute threads started so far (they stay until the process exits). */
int hs_compute_max_threads(void);
int hs_compute_threads(void);

#endif

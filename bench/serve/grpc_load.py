"""grpc_load.py - a closed-loop gRPC load generator for bench/serve (wrk's counterpart for gRPC).

N calls in flight at all times: the concurrency is spread over a few client processes (Python's GIL would
otherwise make the client the bottleneck sooner), each running blocking ModelInfer calls from threads on
one channel. Requests are serialized once up front and sent as raw bytes (no per-call protobuf work in the
client). Returns the same summary keys as benchlib.wrk: requests, duration_us, p50_us, p99_us, errors,
status (calls that ended with a non-OK status).
"""
import multiprocessing as mp
import threading
import time

import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _worker(target, body, n_threads, duration, out):
    import grpc
    ch = grpc.insecure_channel(target)
    call = ch.unary_unary(METHOD)
    call(body, timeout=30)                 # connected before the clock starts
    lat, bad, err = [], [0], [0]
    lock = threading.Lock()
    end = time.monotonic() + duration

    def loop():
        mine = []
        while time.monotonic() < end:
            t0 = time.perf_counter_ns()
            try:
                call(body, timeout=30)
                mine.append((time.perf_counter_ns() - t0) / 1000.0)
            except grpc.RpcError as e:
                with lock:
                    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        err[0] += 1
                    else:
                        bad[0] += 1
        with lock:
            lat.extend(mine)

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((lat, bad[0], err[0], time.monotonic() - t0))
    ch.close()


def run(target, body, concurrency, duration, processes=None):
    processes = processes or max(1, min(4, concurrency))
    per = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(target, body, n, duration, q)) for n in per if n > 0]
    for p in ps:
        p.start()
    results = [q.get(timeout=duration + 120) for _ in ps]
    for p in ps:
        p.join(60)
    lat = np.array([v for r in results for v in r[0]])
    wall = max(r[3] for r in results)
    return {"requests": len(lat), "duration_us": wall * 1e6, "rps": len(lat) / wall,
            "p50_us": float(np.percentile(lat, 50)) if len(lat) else 0.0,
            "p99_us": float(np.percentile(lat, 99)) if len(lat) else 0.0,
            "status": sum(r[1] for r in results), "errors": sum(r[2] for r in results)}

#!/usr/bin/python3
"""test_thread_bound.py - the server's threads follow its compute pool, not its connections (issue 16).

libgomp gives every thread that runs a parallel region a team of `threads - 1` workers and keeps it
for as long as that thread lives. When connection threads ran sessions, each kept-alive connection
that had run one request held a team: 32 connections with --threads 8 made 267 threads. Now only
the compute threads (serving/compute.c, at most --compute-threads) run sessions, batched ones
included. So: a server with --threads 4 --compute-threads 3 serves two models (one with dynamic
batching) to 24 kept-alive connections at once, each sending 8 requests; its thread count, sampled
while they run and again while they are all still open, stays within
    idle count + one thread per connection + 3 compute threads x 4 threads + a small slack,
while the old behaviour needs one team of 3 workers per connection (72 more). It must also see the
connection threads and at least one OpenMP team, so the count is known to see them.
"""
import json
import os
import threading
import time

import numpy as np

import hsys
from hsys import check

CONNS = 24
REQUESTS = 8
THREADS = 4
CAP = 3
SLACK = 4


def task_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test(tmp, args):
    hsys.require("serve")
    repo = os.path.join(tmp, "repo")
    for name, cfg in (("m", None), ("b", {"max_batch_size": 8, "dynamic_batching": {
            "preferred_batch_size": [8], "max_queue_delay_microseconds": 2000}})):
        hsys.write_file(os.path.join(repo, name, "1", "model.onnx"), hsys.model_bytes(1, shape=(-1, 256), slow=4))
        if cfg:
            hsys.write_file(os.path.join(repo, name, "config.json"), json.dumps(cfg).encode())
    srv = hsys.Server(repo, "--threads", str(THREADS), "--instances", "2", "--compute-threads", str(CAP),
                      "--max-connections", "64")
    try:
        c = srv.conn()
        hsys.wait_serving(c, "m", 1)
        hsys.wait_serving(c, "b", 1)
        c.close()
        time.sleep(0.5)  # the probe connection's thread ends
        base = task_count(srv.pid)

        x = np.ones((1, 256), dtype=np.float32)
        conns = [srv.conn() for _ in range(CONNS)]
        failures = []
        opened = threading.Barrier(CONNS + 1, timeout=60)
        finished = threading.Barrier(CONNS + 1, timeout=120)

        def client(i):
            cl = conns[i]
            try:
                check(cl.get("/v2/health/live").status == 200, "health/live")  # the connection's thread exists
                opened.wait()
                for _ in range(REQUESTS):
                    r, out, _ = cl.infer("m" if i % 2 else "b", x, binary=True)
                    if r.status != 200:
                        failures.append("HTTP %d %r" % (r.status, r.body[:200]))
                        break
                    hsys.expect_values(out, x, 1, "connection %d" % i)
            except Exception as e:  # noqa: BLE001  (reported below)
                failures.append(repr(e))
            finally:
                try:
                    finished.wait()
                except threading.BrokenBarrierError:
                    pass

        workers = [threading.Thread(target=client, args=(i,)) for i in range(CONNS)]
        for w in workers:
            w.start()
        opened.wait()
        peak = task_count(srv.pid)
        deadline = time.monotonic() + 120
        while any(w.is_alive() for w in workers) and finished.n_waiting < CONNS and time.monotonic() < deadline:
            peak = max(peak, task_count(srv.pid))
            time.sleep(0.01)
        held = task_count(srv.pid)  # every connection still open: an old-style team would still be there
        finished.wait()
        for w in workers:
            w.join(timeout=60)
        for cl in conns:
            cl.close()
        peak = max(peak, held)
        check(not failures, "requests failed: %s" % failures[:3])
        bound = base + CONNS + CAP * THREADS + SLACK
        print("threads: %d idle, %d with %d connections open after their requests, peak %d; bound %d "
              "(connection-bound teams would need about %d)"
              % (base, held, CONNS, peak, bound, base + CONNS * THREADS))
        check(held >= base + CONNS // 2, "only %d threads with %d connections open (%d idle): the count does not "
              "see the connection threads, so the bound proves nothing" % (held, CONNS, base))
        check(peak >= base + CONNS // 2 + THREADS - 1, "no OpenMP team seen (peak %d, idle %d): the count cannot "
              "see the workers" % (peak, base))
        check(peak <= bound, "%d threads at peak with %d connections, --threads %d, --compute-threads %d: more than "
              "%d (idle %d + a thread per connection + the compute pool's teams), so sessions still run on "
              "connection threads" % (peak, CONNS, THREADS, CAP, bound, base))
    finally:
        srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

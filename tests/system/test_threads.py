#!/usr/bin/python3
"""test_threads.py - `serve --threads N` is what every version's kernels use, the first one included.

A oneDNN kernel keeps the thread count of the thread that created it, and OpenMP starts a worker
thread for each extra thread a kernel asks for. So the server's threads show whether --threads was
honoured: serving a model on oneDNN kernels (a chain of MatMuls) over one keep-alive connection,
a server started with --threads 1 must have exactly the threads it had before any version came
(no OpenMP worker), while one started with --threads 2 must have more (which proves that the
count sees workers). Checked on the first version and again after a reload. Before the fix, the
kernels the loader made first were built for all cores whatever --threads said.
"""
import os

import numpy as np

import hsys
from hsys import check


def task_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def serve_and_count(tmp, threads):
    """Starts `serve --threads N` on an empty repository and counts its threads once a keep-alive
    connection is open (the server's own threads plus that connection's); then serves versions 1
    and 2 in turn over that connection and counts again after requests on each. Returns
    (base, [after version 1, after version 2])."""
    repo = os.path.join(tmp, "repo-t%d" % threads)
    src = os.path.join(tmp, "src-t%d" % threads)
    os.makedirs(os.path.join(repo, "m"))
    srv = hsys.Server(repo, "--threads", str(threads), "--instances", "1", "--poll-interval", "0.2",
                      "--settle", "0.1")
    counts = []
    try:
        c = srv.conn()
        check(c.get("/v2/health/live").status == 200, "health/live")
        base = task_count(srv.pid)
        x = np.ones((1, 256), dtype=np.float32)
        for v in (1, 2):
            hsys.publish(hsys.make_version_src(os.path.join(src, str(v)), v, shape=(1, 256), slow=4),
                         os.path.join(repo, "m"), v)
            hsys.wait_serving(c, "m", v)
            for _ in range(20):
                r, out, _ = c.infer("m", x)
                check(r.status == 200, "infer: HTTP %d %r" % (r.status, r.body[:200]))
            counts.append(task_count(srv.pid))
        c.close()
    finally:
        srv.stop()
    return base, counts


def test(tmp, args):
    hsys.require("serve", "publish")
    base1, one = serve_and_count(tmp, 1)
    base2, two = serve_and_count(tmp, 2)
    print("threads before any version / after versions 1, 2: --threads 1: %d / %s, --threads 2: %d / %s"
          % (base1, one, base2, two))
    for i, v in enumerate((1, 2)):
        check(two[i] > base2, "version %d: --threads 2 started no OpenMP worker (%d threads, %d before): the "
              "count cannot see workers, so the check below proves nothing" % (v, two[i], base2))
        check(one[i] == base1, "version %d: --threads 1, yet the server went from %d to %d threads: its kernels "
              "were made for more threads than --threads allows" % (v, base1, one[i]))


if __name__ == "__main__":
    hsys.main(test, __doc__)

#!/usr/bin/python3
"""test_memory_reloads.py - 1000 reloads leave one version's worth of memory behind.

Model "pub" gets a new version with `hotserve publish` (the old directory is then removed); every
tenth reload instead replaces model.onnx inside model "inplace"'s version directory (no manifest),
which the server must reload as a new generation. After each reload the test waits until the new
content answers (y = x + K), then goes on. Afterwards: hotserve_model_versions_live is back to the
policy's count (one per model), hotserve_model_memory_bytes equals what one version of each held
at the start, the status history stays bounded, and resident memory and open file descriptors
after reload N are within a generous margin of what they were after reload 100 (a leak check,
not a speed check; skipped for RSS under sanitizers, whose own leak check runs at exit instead).
"""
import os
import shutil
import time

import numpy as np

import hsys
from hsys import check

X = np.array([[0.25, 1.0, -3.0, 7.5]], dtype=np.float32)


def add_args(p):
    p.add_argument("--reloads", type=int, default=int(os.environ.get("HS_MEM_RELOADS", "1000")))
    p.add_argument("--inplace-every", type=int, default=10)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def answers(c, model, k):
    r, out, _ = c.infer(model, X)
    if r.status != 200:
        return False
    y = out.get("y")
    return y is not None and np.allclose(y, X + np.float32(k), rtol=1e-6, atol=1e-6)


def serving_generation(c, model):
    for e in hsys.status_entries(c, model):
        if e.get("serving"):
            return (e["version"], e.get("generation"))
    return None


def test(tmp, args):
    hsys.require("serve", "publish")
    check(args.reloads >= 110, "--reloads must be at least 110 (RSS is compared after reload 100)")
    repo = os.path.join(tmp, "repo")
    src = os.path.join(tmp, "src")
    scratch = os.path.join(tmp, "scratch")           # same filesystem, outside the repository
    os.makedirs(scratch)
    pub = os.path.join(repo, "pub")
    os.makedirs(pub)
    hsys.publish(hsys.make_version_src(os.path.join(src, "p"), 1), pub, 1)
    inplace_dir = os.path.join(repo, "inplace", "1")
    hsys.write_file(os.path.join(inplace_dir, "model.onnx"), hsys.model_bytes(0))
    srv = hsys.Server(repo, "--poll-interval", "0.1", "--settle", "0.05", "--log-level", "warn")
    c = srv.conn()
    hsys.wait_serving(c, "pub", 1)
    hsys.wait_serving(c, "inplace", 1)
    check(answers(c, "pub", 1) and answers(c, "inplace", 0), "initial versions answer wrongly")
    m0 = c.metrics()
    mem0 = m0.get("hotserve_model_memory_bytes")
    live0 = m0.get("hotserve_model_versions_live")
    check(live0 == 2, "hotserve_model_versions_live is %g with one version of two models" % live0)
    check(mem0 > 0, "hotserve_model_memory_bytes is %g with two models loaded" % mem0)

    version = 1
    inplace_k = 0
    rss100 = fds100 = None
    t0 = time.monotonic()
    for i in range(1, args.reloads + 1):
        if i % args.inplace_every == 0:
            before = serving_generation(c, "inplace")
            inplace_k = 1000 + i
            hsys.replace_atomically(os.path.join(inplace_dir, "model.onnx"), hsys.model_bytes(inplace_k), scratch)
            hsys.rescan(c)

            def reloaded():
                g = serving_generation(c, "inplace")
                if g is None or g == before:
                    return False
                return answers(c, "inplace", inplace_k)
            hsys.wait_for(reloaded, "reload %d: in-place replacement (x + %d) to serve as a new generation"
                          % (i, inplace_k), timeout=30)
            g = serving_generation(c, "inplace")
            check(g[0] == "1" and g[1] != before[1], "reload %d: in-place replacement served as %r after %r"
                  % (i, g, before))
        else:
            version += 1
            d = hsys.make_version_src(os.path.join(src, "p"), version)
            hsys.publish(d, pub, version)
            hsys.rescan(c)
            hsys.wait_for(lambda: hsys.serving_version(c, "pub") == str(version),
                          "reload %d: pub version %d to serve" % (i, version), timeout=30)
            check(answers(c, "pub", version), "reload %d: pub version %d answers wrongly" % (i, version))
            shutil.rmtree(os.path.join(pub, str(version - 1)))
        if i == 100:
            hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 2,
                          "versions_live to settle at 2 after reload 100")
            rss100, fds100 = srv.rss_bytes(), fd_count(srv.pid)
    elapsed = time.monotonic() - t0

    hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 2,
                  "hotserve_model_versions_live to come back to 2 (one version per model)")
    m = c.metrics()
    mem = m.get("hotserve_model_memory_bytes")
    rss, fds = srv.rss_bytes(), fd_count(srv.pid)
    loads = m.get("hotserve_model_loads_total")
    print("%d reloads in %.1f s; model memory %d -> %d bytes; RSS after reload 100: %.1f MiB, after %d: %.1f MiB; "
          "fds %d -> %d; loads_total %d"
          % (args.reloads, elapsed, mem0, mem, rss100 / 2 ** 20, args.reloads, rss / 2 ** 20, fds100, fds, loads))
    check(mem == mem0, "hotserve_model_memory_bytes is %g after %d reloads, one version of each model held %g"
          % (mem, args.reloads, mem0))
    check(loads >= args.reloads + 2, "hotserve_model_loads_total %g < %d" % (loads, args.reloads + 2))
    for model in ("pub", "inplace"):
        n = len(hsys.status_entries(c, model))
        check(n <= 16, "status of %s keeps %d history entries (contract: the last 16)" % (model, n))
    # Every scrape stays bounded too: request counters are exposed for the newest 16 version
    # numbers of a model (plus "none"), one per outcome each (success, client_error, server_error,
    # rejected).
    text = c.get("/metrics").body.decode()
    for model in ("pub", "inplace"):
        series = [l for l in text.splitlines()
                  if l.startswith('hotserve_requests_total{model="%s",' % model)]
        check(len(series) <= 4 * 17, "/metrics has %d hotserve_requests_total series for %s after %d reloads"
              % (len(series), model, args.reloads))
    check(fds <= fds100 + 8, "open file descriptors grew from %d (reload 100) to %d (reload %d)"
          % (fds100, fds, args.reloads))
    if not hsys.Env.sanitized:
        margin = 16 * 2 ** 20 + rss100 // 10
        check(rss - rss100 <= margin, "RSS grew by %.1f MiB between reload 100 and reload %d (margin %.1f MiB)"
              % ((rss - rss100) / 2 ** 20, args.reloads, margin / 2 ** 20))
    check(answers(c, "pub", version) and answers(c, "inplace", inplace_k), "final versions answer wrongly")
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__, add_args)

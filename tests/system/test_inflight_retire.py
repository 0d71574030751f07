#!/usr/bin/python3
"""test_inflight_retire.py - a request in flight when its version is retired completes on that version.

Calibrates the engine's speed with a short --slow model, then serves model "slow" version 1 whose
requests take about two seconds (y = x + 1, plus a chain of MatMuls that adds 0). Starts a request,
waits until the server counts it in flight, publishes version 2 (y = x + 2), and checks: version 2
becomes the serving version while the request is still running; version 1 is shown as retiring
meanwhile; the request then completes with x + 1 and model_version "1"; new requests get x + 2;
finally version 1 is freed (versions_live and model memory back to one version each).
"""
import os
import time

import numpy as np

import hsys
from hsys import check

TARGET_S = 2.0


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(repo, "calib"))
    os.makedirs(os.path.join(repo, "slow"))
    calib_n = 4                                     # short: sanitizer builds run MatMuls 20x slower
    hsys.publish(hsys.make_version_src(os.path.join(src, "c1"), 0, slow=calib_n), os.path.join(repo, "calib"), 1)
    srv = hsys.Server(repo, "--poll-interval", "0.5", "--settle", "0.1")
    c = srv.conn(timeout=300)
    hsys.wait_serving(c, "calib", 1, timeout=60)
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    best, outs = hsys.timed_infers(c, "calib", x)
    for out in outs:
        hsys.expect_values(out, x, 0, "calibration request")
    per_mm = max(best / calib_n, 1e-5)
    n = int(min(20000, max(2, TARGET_S / per_mm)))
    print("calibration: %d MatMuls in %.3f s; slow model gets %d (~%.1f s a request)"
          % (calib_n, best, n, n * per_mm))

    hsys.publish(hsys.make_version_src(os.path.join(src, "s1"), 1, slow=n), os.path.join(repo, "slow"), 1)
    hsys.wait_serving(c, "slow", 1, timeout=120)
    m0 = c.metrics()
    mem_one_each = m0.get("hotserve_model_memory_bytes")
    check(m0.get("hotserve_model_versions_live") == 2, "versions_live is %g with calib 1 and slow 1 loaded"
          % m0.get("hotserve_model_versions_live"))

    req = hsys.BackgroundInfer(srv, "slow", x, conn_timeout=300)
    req.wait_inflight(c, "the slow request to be counted in flight")
    check(req.running(), "the slow request ended before version 2 could be published (took %.2f s): the model is "
          "too fast" % (req.took if req.took is not None else -1))

    hsys.publish(hsys.make_version_src(os.path.join(src, "s2"), 2), os.path.join(repo, "slow"), 2)
    hsys.wait_serving(c, "slow", 2, timeout=60)
    swapped_at = time.monotonic()
    still_running = req.done_at is None
    retiring_seen = False
    if still_running:
        st = hsys.status_entries(c, "slow")
        v1 = [e for e in st if e["version"] == "1"]
        check(v1, "version 1 vanished from the status document while its request runs: %r" % st)
        retiring_seen = v1[-1]["state"] == "retiring" and not v1[-1]["serving"]
        check(retiring_seen or req.done_at is not None,
              "version 1 is %r (serving=%r) while its request runs; wanted retiring"
              % (v1[-1]["state"], v1[-1]["serving"]))
        r2, out2, _ = c.infer("slow", x)
        check(r2.status == 200, "request after the swap: HTTP %d" % r2.status)
        hsys.expect_values(out2, x, 2, "request after the swap")
        check(out2[""]["model_version"] == "2", "request after the swap answered by %r" % out2[""]["model_version"])
    r, out, _ = req.join(300)
    check(r.status == 200, "the in-flight request: HTTP %d %r" % (r.status, r.body[:300]))
    hsys.expect_values(out, x, 1, "the in-flight request")
    check(out[""]["model_version"] == "1", "the in-flight request reports version %r" % out[""]["model_version"])
    check(still_running and req.done_at > swapped_at,
          "the request finished before version 2 was serving, so nothing was proven (took %.2f s)" % req.took)
    print("in-flight request took %.2f s; version 2 served %.2f s before it ended"
          % (req.took, req.done_at - swapped_at))

    r, out, _ = c.infer("slow", x)
    hsys.expect_values(out, x, 2, "a later request")
    check(out[""]["model_version"] == "2", "a later request answered by %r" % out[""]["model_version"])
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 2,
                  "version 1 to be freed (versions_live back to 2)", timeout=30)
    m = c.metrics()
    check(m.get("hotserve_model_memory_bytes") < mem_one_each,
          "model memory %g not below %g after the slow version 1 was replaced by a small version 2"
          % (m.get("hotserve_model_memory_bytes"), mem_one_each))
    check(m.get("hotserve_model_drain_duration_seconds_count") >= 1, "no drain observed in metrics")
    st = hsys.status_entries(c, "slow")
    v1 = [e for e in st if e["version"] == "1"]
    check(v1 and v1[-1]["state"] == "unloaded", "version 1 after its last request: %r" % v1)
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

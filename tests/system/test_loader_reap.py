#!/usr/bin/python3
"""test_loader_reap.py - a paced load frees the versions that die during it at its waits (serving/pace.c,
hs__loader_reap), not after it.

Served with --loader-pace 1 (the loader keeps to 1% of one core while any request is in flight) and
--trace (every reload stage's begin and end on the server's monotonic clock):
- model "busy", a slow model (a chain of MatMuls that adds 0, about BUSY_S seconds a request), on which
  BUSY_CLIENTS clients keep requests in flight at every moment, so every load below stays paced (small
  requests would leave gaps in which the pacer finds none in flight and runs free);
- model "r": version 1 a slower one (about HELD_S seconds a request); a request H starts on it; version 2
  (y = x + 2, small) is published and swapped in while H runs, so version 1 is retired but held by H;
  then version 3 (y = x + 3 with a 64 MiB weight, published ahead into a staging folder and renamed into
  the repository) is loaded, paced, which takes many seconds: H ends, and version 1 dies, during that load.
Checks: H answers x + 1 from version 1 and every busy request x + 5; version 1's "free" stage ends before
version 3's "load" stage ends (without the reap at the pacer's waits it would come after the whole load,
and its warm-up); versions_live is 3 (busy 1, calib 1, r 3) at the end. Nothing asserts a speed: the order
of stages the server logs, after checking the scenario's preconditions (H outlives the swap to version 2
and ends within the load of version 3), which fail saying the machine was too fast or too slow for them.
"""
import json
import os
import threading

import numpy as np

import hsys
from hsys import check
from test_loader_pace import model_bytes as weighted_model_bytes

HELD_S = 1.5                    # the request H on r version 1
BUSY_S = 0.25                   # each request on busy
BUSY_CLIENTS = 2
BIG = 16 << 20                  # floats in r version 3's weight: 64 MiB


def test(tmp, args):
    hsys.require("serve", "publish")
    repo, src, stage_dir = os.path.join(tmp, "repo"), os.path.join(tmp, "src"), os.path.join(tmp, "stage")
    for m in ("calib", "busy", "r"):
        os.makedirs(os.path.join(repo, m))
    trace = os.path.join(tmp, "trace.jsonl")
    calib_n = 64                # enough MatMuls that the per-request overhead (large under TSan) does not count as theirs
    hsys.publish(hsys.make_version_src(os.path.join(src, "c1"), 0, slow=calib_n), os.path.join(repo, "calib"), 1)
    # version 3 is ready before anything is timed: its 64 MiB are written and hashed ahead
    hsys.publish_bytes(tmp, os.path.join(stage_dir, "r"), 3, weighted_model_bytes(3, BIG))
    srv = hsys.Server(repo, "--poll-interval", "60", "--no-inotify", "--loader-pace", "1", "--trace", trace,
                      "--log-level", "warn")
    c = srv.conn(timeout=300)
    hsys.wait_serving(c, "calib", 1, timeout=60)
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    best, _ = hsys.timed_infers(c, "calib", x)
    per_mm = max(best / calib_n, 1e-5)
    hsys.publish(hsys.make_version_src(os.path.join(src, "b1"), 5, slow=int(max(2, BUSY_S / per_mm))),
                 os.path.join(repo, "busy"), 1)
    hsys.publish(hsys.make_version_src(os.path.join(src, "r1"), 1, slow=int(min(20000, max(2, HELD_S / per_mm)))),
                 os.path.join(repo, "r"), 1)
    hsys.rescan(c)
    hsys.wait_serving(c, "busy", 1, timeout=240)
    hsys.wait_serving(c, "r", 1, timeout=240)

    stop, bad, busy_answers, lock = threading.Event(), [], [0], threading.Lock()

    def keep_busy():
        cc = srv.conn(timeout=120)
        try:
            for _ in range(10000):      # bounded; stops once version 3 of r serves
                if stop.is_set():
                    break
                r, out, _ = cc.infer("busy", x)
                ok = r.status == 200 and np.array_equal(out.get("y"), x + np.float32(5))
                with lock:
                    if ok:
                        busy_answers[0] += 1
                    else:
                        bad.append("busy: HTTP %d %r" % (r.status, r.body[:200]))
        except Exception as e:  # noqa: BLE001 (reported below)
            with lock:
                bad.append("busy: %r" % e)
        finally:
            cc.close()

    clients = [threading.Thread(target=keep_busy) for _ in range(BUSY_CLIENTS)]
    for t in clients:
        t.start()
    try:
        hsys.wait_for(lambda: busy_answers[0] > 0 or bad, "the busy clients' first answer", timeout=60)
        held = hsys.BackgroundInfer(srv, "r", x, conn_timeout=300)
        held.wait_inflight(c, "the request on version 1 to be counted in flight")
        hsys.publish(hsys.make_version_src(os.path.join(src, "r2"), 2), os.path.join(repo, "r"), 2)
        hsys.rescan(c)
        hsys.wait_serving(c, "r", 2, timeout=120)
        check(held.running(), "the request on version 1 ended (after %.2f s) before version 2 was swapped in: the "
              "slow model is too fast for this machine's load" % (held.took if held.took is not None else -1))
        os.rename(os.path.join(stage_dir, "r", "3"), os.path.join(repo, "r", "3"))
        hsys.rescan(c)
        hsys.wait_serving(c, "r", 3, timeout=300)
    finally:
        stop.set()
        for t in clients:
            t.join(120)
    check(not any(t.is_alive() for t in clients), "a busy client never finished")
    check(not bad, "requests on busy failed: %s" % bad[:3])
    r, out, _ = held.join(120, "the request held on version 1")
    check(r.status == 200, "the request on version 1: HTTP %d" % r.status)
    hsys.expect_values(out, x, 1, "the request held on version 1")
    r, out, _ = c.infer("r", x)
    check(r.status == 200, "r version 3: HTTP %d" % r.status)
    hsys.expect_values(out, x, 3, "r version 3")
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 3,
                  "versions_live to be 3 (calib 1, busy 1, r 3) once version 3 of r serves")
    c.close()
    srv.stop()

    with open(trace) as f:
        stages = [e for e in map(json.loads, f) if e["ev"] == "stage"]

    def stage(name, version):
        found = [e for e in stages if e["stage"] == name and e["version"] == version and e["model"] == "r"]
        check(len(found) == 1, "%d '%s' stages for version %d of r (wanted 1)" % (len(found), name, version))
        return found[0]
    load3, free1 = stage("load", 3), stage("free", 1)
    held_end_ns = int(held.done_at * 1e9)   # time.monotonic: the trace's clock (CLOCK_MONOTONIC)
    check(held_end_ns > load3["begin_ns"], "the request on version 1 ended %.2f s before version 3's load began: "
          "the slow model is too fast for this machine's load" % ((load3["begin_ns"] - held_end_ns) / 1e9))
    check(held_end_ns < load3["end_ns"], "the request on version 1 ended %.2f s after version 3's load ended: "
          "the paced load was too fast for the slow model" % ((held_end_ns - load3["end_ns"]) / 1e9))
    check(free1["begin_ns"] >= load3["begin_ns"], "version 1 was freed before version 3's load began")
    check(free1["end_ns"] < load3["end_ns"], "version 1 died during version 3's paced load (its last request "
          "answered %.2f s before the load ended) but was freed %.3f s after the load ended, not at the pacer's "
          "waits" % ((load3["end_ns"] - held_end_ns) / 1e9, (free1["end_ns"] - load3["end_ns"]) / 1e9))


if __name__ == "__main__":
    hsys.main(test, __doc__)

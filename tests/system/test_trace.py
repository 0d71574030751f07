#!/usr/bin/python3
"""test_trace.py - `serve --trace FILE` logs every request and every reload stage, in order, on the
monotonic clock.

Serves version 1 (y = x + 1), sends 10 good requests and one with a wrong shape, publishes version
2, waits until version 1 has been freed, sends 10 more requests, stops the server and reads the
file: every line is JSON; there is exactly one request line per request, with the version that
answered it and the outcome the client saw, and queue + compute <= total; version 2's stages come
as scan, load, warmup, swap, in that order, with version 1 freed after the swap; the v2 requests
began after the swap; the pages a load leaves free are handed back (a trim) --trim-delay (0.5 s)
after version 1's load, and those of the freed version once, --trim-delay after the free, never
sooner; every time lies between the test's own monotonic readings before the server started and
after it stopped. A trace path that cannot be written stops the server at startup.
"""
import json
import os
import time

import numpy as np

import hsys
from hsys import check


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "m"))
    src = os.path.join(tmp, "src")
    trace = os.path.join(tmp, "trace.jsonl")

    # an unwritable trace path is refused at startup, with the reason
    bad = hsys.cli("serve", "--model-repository", repo, "--http-port", "0",
                   "--trace", os.path.join(tmp, "no-such-dir", "t.jsonl"), check_rc=False, timeout=60)
    check(bad.returncode == 1 and "trace file" in bad.stderr,
          "an unwritable --trace path: exit %d, %r" % (bad.returncode, bad.stderr[-300:]))

    hsys.publish(hsys.make_version_src(os.path.join(src, "1"), 1), os.path.join(repo, "m"), 1)
    t_start = time.monotonic_ns()
    srv = hsys.Server(repo, "--trace", trace, "--poll-interval", "0.2", "--settle", "0.1", "--trim-delay", "0.5")
    c = srv.conn()
    hsys.wait_serving(c, "m", 1)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    for _ in range(10):
        r, out, _ = c.infer("m", x)
        check(r.status == 200, "infer v1: HTTP %d" % r.status)
        hsys.expect_values(out, x, 1, "v1")
    check(c.infer("m", np.ones((1, 3), dtype=np.float32))[0].status == 400, "a wrong shape is not a 400")

    def trims_logged():   # stage lines are flushed as they happen
        with open(trace) as f:
            return sum('"stage":"trim"' in line for line in f)
    hsys.wait_for(lambda: trims_logged() >= 1, "the pages version 1's load left free to be handed back (a trim "
                  "stage) within --trim-delay", timeout=10)

    hsys.publish(hsys.make_version_src(os.path.join(src, "2"), 2), os.path.join(repo, "m"), 2)
    hsys.wait_serving(c, "m", 2)
    hsys.wait_for(lambda: any(e["version"] == "1" and e.get("state") == "unloaded"
                              for e in hsys.status_entries(c, "m")), "version 1 to be freed")
    for _ in range(10):
        r, out, _ = c.infer("m", x)
        check(r.status == 200, "infer v2: HTTP %d" % r.status)
        hsys.expect_values(out, x, 2, "v2")

    hsys.wait_for(lambda: trims_logged() >= 2, "the freed pages to be handed back (a trim stage) within "
                  "--trim-delay", timeout=10)
    c.close()
    srv.stop()
    t_stop = time.monotonic_ns()

    events = []
    with open(trace) as f:
        for i, line in enumerate(f):
            try:
                events.append(json.loads(line))
            except ValueError as e:
                check(False, "trace line %d is not JSON (%s): %r" % (i + 1, e, line[:200]))
    reqs = [e for e in events if e["ev"] == "request"]
    stages = [e for e in events if e["ev"] == "stage"]
    check(len(reqs) + len(stages) == len(events), "unknown events: %r" % [e for e in events if e not in reqs + stages])

    # one line per request, the version and outcome the client saw, in the order they were sent
    got = [(e["model"], e["version"], e["outcome"]) for e in sorted(reqs, key=lambda e: e["end_ns"])]
    want = [("m", 1, "success")] * 10 + [("m", 1, "client_error")] + [("m", 2, "success")] * 10
    check(got == want, "request lines (model, version, outcome): %r, wanted %r" % (got, want))
    for e in reqs:
        check(e["queue_ns"] + e["compute_ns"] <= e["total_ns"], "queue + compute > total: %r" % e)
        check(t_start <= e["end_ns"] - e["total_ns"] and e["end_ns"] <= t_stop,
              "request outside the test's monotonic window [%d, %d]: %r" % (t_start, t_stop, e))
    for e in stages:
        check(t_start <= e["begin_ns"] <= e["end_ns"] <= t_stop,
              "stage outside the test's monotonic window or ending before it began: %r" % e)

    def stage(name, version):
        found = [e for e in stages if e["stage"] == name and e["version"] == version and e["model"] == "m"]
        check(len(found) == 1, "%d '%s' stages for version %d (wanted 1); stages: %r"
              % (len(found), name, version, [(s["stage"], s["version"]) for s in stages]))
        return found[0]
    for v in (1, 2):
        load, warm, swap = stage("load", v), stage("warmup", v), stage("swap", v)
        check(load["end_ns"] <= warm["begin_ns"] and warm["end_ns"] <= swap["begin_ns"],
              "version %d: load, warmup and swap out of order: %r" % (v, (load, warm, swap)))
        scans = [e for e in stages if e["stage"] == "scan" and e["end_ns"] <= load["begin_ns"]]
        check(scans and scans[-1]["model"] == "" and scans[-1]["version"] == -1,
              "version %d: no repository scan before its load" % v)
    swap2 = stage("swap", 2)
    free1 = stage("free", 1)
    check(free1["begin_ns"] >= swap2["end_ns"], "version 1 freed before version 2 was swapped in")
    trims = sorted((e for e in stages if e["stage"] == "trim"), key=lambda e: e["begin_ns"])
    check(len(trims) == 2, "%d trims for one load and one freed version (wanted 2)" % len(trims))
    check(trims[0]["end_ns"] <= stage("load", 2)["begin_ns"] and trims[1]["begin_ns"] >= free1["end_ns"],
          "the trims did not follow version 1's load and then the free: %r" % trims)
    for t in trims:   # never before --trim-delay has passed since the last load or free before it
        last = max(e["end_ns"] for e in stages if e["stage"] in ("load", "warmup", "swap", "free")
                   and e["end_ns"] <= t["begin_ns"])
        check(t["begin_ns"] - last >= 0.45e9, "a trim came %.3f s after the last load or free, before --trim-delay "
              "0.5" % ((t["begin_ns"] - last) / 1e9))
    v2_first = min(e["end_ns"] - e["total_ns"] for e in reqs if e["version"] == 2)
    check(v2_first >= swap2["begin_ns"], "a version-2 request began before the swap")
    print("%d request lines, stages: %s" % (len(reqs), " ".join("%s:%d" % (e["stage"], e["version"])
                                                                 for e in sorted(stages, key=lambda e: e["begin_ns"]))))


if __name__ == "__main__":
    hsys.main(test, __doc__)

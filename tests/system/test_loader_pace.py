#!/usr/bin/python3
"""test_loader_pace.py - --loader-pace: a load sleeps to keep its CPU share while requests are in flight.

Model "p" is y = x + k + 0 * sum(W + 0 * sum(x)), W a 16 MiB initializer (so a load reads, hashes and
copies 16 pieces of the file) and k = the version number (so every answer names its version). The sum
over W depends on the input, so no constant folding removes it.
1. `serve --help` documents the option; 0 and 101 are refused.
2. A server with --loader-pace 1 (1% of one core) reloads version 1 -> 2 while three clients keep
   requests in flight: version 2's status entry reports paced_ms > 0 and
   hotserve_loader_paced_seconds_total grows by at least that much; every request succeeded and
   answered exactly version 1's or 2's output; version 2 then serves.
3. The same server, with no request in flight, loads version 3: it is not paced (paced_ms == 0, the
   counter unchanged): an idle server loads at full speed.
4. A server with --loader-pace 100 (pacing off) reloads under the same requests: paced_ms == 0.
Nothing here asserts a speed: only whether the loader slept, as the server itself reports it.
"""
import os
import threading

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hsys
from hsys import check

N = 4 << 20  # floats in W: 16 MiB
SHAPE = [1, 4]
CLIENTS = 3


def model_bytes(k, n=N):
    """y = x + k + 0 * sum(W + 0 * sum(x)), W n floats (test_loader_reap.py uses it too)."""
    inits = [numpy_helper.from_array(np.linspace(-1, 1, n, dtype=np.float32), "W"),
             numpy_helper.from_array(np.array([float(k)], dtype=np.float32), "k"),
             numpy_helper.from_array(np.array([0.0], dtype=np.float32), "zero")]
    nodes = [helper.make_node("ReduceSum", ["x"], ["xs"], keepdims=0),
             helper.make_node("Mul", ["xs", "zero"], ["xz"]),
             helper.make_node("Add", ["W", "xz"], ["a"]),
             helper.make_node("ReduceSum", ["a"], ["as"], keepdims=0),
             helper.make_node("Mul", ["as", "zero"], ["az"]),
             helper.make_node("Add", ["x", "k"], ["xk"]),
             helper.make_node("Add", ["xk", "az"], ["y"])]
    g = helper.make_graph(nodes, "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return m.SerializeToString()


def publish(tmp, repo, k):
    hsys.publish_bytes(tmp, os.path.join(repo, "p"), k, model_bytes(k))


def entry(c, version):
    for e in hsys.status_entries(c, "p"):
        if str(e.get("version")) == str(version) and e.get("state") not in ("loading", "failed"):
            return e
    return None


def reload_under_requests(srv, c, tmp, repo, k, x):
    """Publishes version k while CLIENTS threads keep requests in flight; returns its status entry and
    the failures the clients saw."""
    stop, bad, seen = threading.Event(), [], set()
    lock = threading.Lock()

    def load():
        cc = srv.conn()
        try:
            for _ in range(200000):  # bounded; stops once version k serves
                if stop.is_set():
                    break
                r, out, _ = cc.infer("p", x)
                y = out.get("y") if r.status == 200 else None
                with lock:
                    if y is None:
                        bad.append("HTTP %d" % r.status)
                    elif np.array_equal(y, x + np.float32(k - 1)):
                        seen.add(k - 1)
                    elif np.array_equal(y, x + np.float32(k)):
                        seen.add(k)
                    else:
                        bad.append("an answer that is neither version's: y - x = %g" % float(y[0, 0] - x[0, 0]))
        except Exception as e:  # noqa: BLE001 (reported as a failure below)
            with lock:
                bad.append(repr(e))
        finally:
            cc.close()

    threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        hsys.wait_for(lambda: seen, "the clients' first answers")
        publish(tmp, repo, k)
        hsys.rescan(c)
        hsys.wait_serving(c, "p", k, timeout=120)
        hsys.wait_for(lambda: k in seen, "an answer from version %d" % k)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    check(not any(t.is_alive() for t in threads), "a client thread never finished")
    return hsys.wait_for(lambda: entry(c, k), "version %d's status entry" % k), bad, seen


def paced_total(c):
    return c.metrics().get("hotserve_loader_paced_seconds_total")


def test(tmp, args):
    hsys.require("serve", "publish")
    helptext = hsys.cli("serve", "--help").stdout
    check("--loader-pace" in helptext and "HOTSERVE_LOADER_PACE" in helptext, "serve --help lacks --loader-pace")
    for bad_value in ("0", "101", "x"):
        r = hsys.cli("serve", "--model-repository", tmp, "--loader-pace", bad_value, check_rc=False)
        check(r.returncode != 0, "serve accepted --loader-pace %s" % bad_value)

    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "p"))
    publish(tmp, repo, 1)
    x = np.arange(4, dtype=np.float32).reshape(SHAPE)

    srv = hsys.Server(repo, "--poll-interval", "60", "--no-inotify", "--loader-pace", "1", "--log-level", "warn")
    c = srv.conn()
    hsys.wait_serving(c, "p", 1)
    check(paced_total(c) == 0, "paced %g s before any reload under requests" % paced_total(c))

    e2, bad, seen = reload_under_requests(srv, c, tmp, repo, 2, x)
    check(not bad, "requests during the paced reload failed: %s" % bad[:3])
    check(seen == {1, 2}, "the clients saw versions %s, not both 1 and 2" % sorted(seen))
    check(e2.get("paced_ms", 0) > 0, "version 2 loaded under requests with --loader-pace 1 but paced_ms is %r"
          % e2.get("paced_ms"))
    total = paced_total(c)
    check(total * 1000 >= e2["paced_ms"] - 1, "hotserve_loader_paced_seconds_total %g s < version 2's paced_ms %g"
          % (total, e2["paced_ms"]))
    r, out, _ = c.infer("p", x)
    check(r.status == 200 and np.array_equal(out["y"], x + np.float32(2)), "version 2 answers inexactly")

    # no request in flight: full speed
    publish(tmp, repo, 3)
    hsys.rescan(c)
    hsys.wait_serving(c, "p", 3)
    e3 = hsys.wait_for(lambda: entry(c, 3), "version 3's status entry")
    check(e3.get("paced_ms") == 0, "version 3 loaded with no request in flight but paced_ms is %r" % e3.get("paced_ms"))
    check(paced_total(c) == total, "the paced total moved from %g to %g during an idle load" % (total, paced_total(c)))
    c.close()
    srv.stop()

    # pacing off
    srv = hsys.Server(repo, "--poll-interval", "60", "--no-inotify", "--loader-pace", "100", "--log-level", "warn")
    c = srv.conn()
    hsys.wait_serving(c, "p", 3)
    e4, bad, seen = reload_under_requests(srv, c, tmp, repo, 4, x)
    check(not bad, "requests during the unpaced reload failed: %s" % bad[:3])
    check(e4.get("paced_ms") == 0, "--loader-pace 100 paced version 4 for %r ms" % e4.get("paced_ms"))
    check(paced_total(c) == 0, "--loader-pace 100: paced total %g s" % paced_total(c))
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

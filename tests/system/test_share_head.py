#!/usr/bin/python3
"""test_share_head.py - a "new head" version shares the old one's Conv kernels and serves its own outputs.

Version 1: six 3x3 Convs (ReLU between) on x [N, 8, 32, 32], dynamic batch. Version 2: the same file
with only the last Conv's weights scaled (a fine-tuned head). A large request is started on version
1 (its batch sized so it takes about two seconds), version 2 is published while it runs, and the
test checks: version 2's load took the five unchanged kernels from version 1 (weights_shared_bytes
in its status, hotserve_model_reload_weight_bytes_total and the registry gauges) and built only
the last; while version 1's request is still in flight (on those same kernels), requests get
version 2's answer (numpy reference); the in-flight request completes with version 1's answer;
once version 1 is freed the registry holds only version 2's kernels. Version 2's sessions also
allocated no scratch arena of their own: they run on the two arenas version 1's sessions made
(engine/arena.c; hotserve_session_arenas_created_total stays 2 through the reload, with version 1's
large request holding one of them), and the arenas never outnumber what the two sessions need. Version 2's kernels come from
the decoder, which found its unchanged Conv weights in version 1's kernels and copied none of them
(kernels/kshare.h): a second server with sharing off (--kernel-share off) loads version 2 cold,
and its answer must be bit for bit the first server's.
"""
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hsys
from hsys import check

CH = 128
TARGET_S = 2.0


def weights():
    rng = np.random.default_rng(7)
    shapes = [(CH, 8)] + [(CH, CH)] * 4 + [(8, CH)]
    ws = [(rng.standard_normal((o, i, 3, 3)) / np.sqrt(9 * i)).astype(np.float32) for o, i in shapes]
    bs = [(rng.standard_normal(o) * 0.1).astype(np.float32) for o, _ in shapes]
    return ws, bs


def model_bytes(ws, bs):
    nodes, inits = [], []
    prev = "x"
    for k, (w, b) in enumerate(zip(ws, bs)):
        inits += [numpy_helper.from_array(w, "w%d" % k), numpy_helper.from_array(b, "b%d" % k)]
        out = "y" if k == len(ws) - 1 else "c%d" % k
        nodes.append(helper.make_node("Conv", [prev, "w%d" % k, "b%d" % k], [out], pads=[1, 1, 1, 1]))
        if k < len(ws) - 1:
            nodes.append(helper.make_node("Relu", [out], ["r%d" % k]))
            out = "r%d" % k
        prev = out
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 32, 32])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def reference(x, ws, bs):
    """The network in float64 numpy (3x3, pad 1, as nine shifted matmuls)."""
    h = x.astype(np.float64)
    for k, (w, b) in enumerate(zip(ws, bs)):
        n, c, hh, ww = h.shape
        p = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((n, w.shape[0], hh, ww))
        for i in range(3):
            for j in range(3):
                out += np.einsum("oc,nchw->nohw", w[:, :, i, j].astype(np.float64), p[:, :, i:i + hh, j:j + ww])
        out += b.reshape(1, -1, 1, 1)
        h = np.maximum(out, 0) if k < len(ws) - 1 else out
    return h.astype(np.float32)


def expect(out, want, what):
    y = out.get("y")
    check(y is not None and y.shape == want.shape, "%s: output %s, wanted shape %s"
          % (what, None if y is None else y.shape, want.shape))
    err = np.max(np.abs(y - want) / (1e-3 + np.abs(want)))
    check(err < 1e-3, "%s: output differs from the reference (max relative error %.3g)" % (what, err))


def write_src(d, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(data)
    return d


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(repo, "convs"))
    ws1, bs = weights()
    ws2 = [w.copy() for w in ws1]
    ws2[-1] *= np.float32(1.5)
    hsys.publish(write_src(os.path.join(src, "v1"), model_bytes(ws1, bs)), os.path.join(repo, "convs"), 1)
    srv = hsys.Server(repo, "--poll-interval", "0.5", "--settle", "0.1")
    c = srv.conn(timeout=300)
    hsys.wait_serving(c, "convs", 1, timeout=60)
    m = c.metrics()
    kernels_v1 = m.get("hotserve_shared_kernels")
    check(kernels_v1 == 6, "registry holds %g kernels with version 1 loaded, wanted its 6 Convs" % kernels_v1)
    check(m.get("hotserve_model_reload_weight_bytes_total", model="convs", kind="shared") == 0,
          "version 1 shared weights with nothing loaded before it")
    arenas_v1 = m.get("hotserve_session_arenas_created_total")
    check(arenas_v1 == 2 and m.get("hotserve_session_arenas") == 2,
          "version 1's two sessions made %r arenas (%r held), wanted 2" % (arenas_v1, m.get("hotserve_session_arenas")))

    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    best, outs = hsys.timed_infers(c, "convs", x1, binary=True)
    expect(outs[-1], reference(x1, ws1, bs), "version 1, batch 1")
    n = int(min(256, max(4, TARGET_S / max(best, 1e-4))))
    print("batch 1 took %.3f s; the in-flight request gets batch %d" % (best, n))
    xb = rng.standard_normal((n, 8, 32, 32)).astype(np.float32)

    req = hsys.BackgroundInfer(srv, "convs", xb, conn_timeout=300, binary=True)
    c.close()
    c = srv.conn(timeout=300)  # the first one idled through the reference computation
    req.wait_inflight(c, "the large request to be counted in flight")
    hsys.publish(write_src(os.path.join(src, "v2"), model_bytes(ws2, bs)), os.path.join(repo, "convs"), 2)
    hsys.wait_serving(c, "convs", 2, timeout=120)
    swapped_at = time.monotonic()
    still_running = req.done_at is None
    r2, out2, _ = c.infer("convs", x1, binary=True)
    check(r2.status == 200, "request after the swap: HTTP %d" % r2.status)
    check(out2[""]["model_version"] == "2", "request after the swap answered by %r" % out2[""]["model_version"])
    want2 = reference(x1, ws2, bs)
    expect(out2, want2, "version 2 (new head)")
    check(np.max(np.abs(want2 - reference(x1, ws1, bs))) > 1e-2, "the new head does not change the answer")

    v2 = [e for e in hsys.status_entries(c, "convs") if e["version"] == "2"][-1]
    shared, built = v2["weights_shared_bytes"], v2["weights_built_bytes"]
    print("version 2: %d weight bytes shared, %d built" % (shared, built))
    check(built > 0 and shared > 4 * built,
          "version 2 shared %d and built %d weight bytes; wanted the five unchanged Convs shared" % (shared, built))
    m = c.metrics()
    check(m.get("hotserve_model_reload_weight_bytes_total", model="convs", kind="shared") == shared,
          "the shared-bytes counter disagrees with the status")
    # The request may end on the server before its client thread has read the whole answer, so the
    # kernel count is judged against a later scrape's in-flight gauge: when that still counts the
    # request, version 1 was alive at the first scrape and its kernels had to be registered.
    check(m.get("hotserve_session_arenas_created_total") == arenas_v1,
          "version 2's load allocated arenas (%g made in all, version 1 made %g): its sessions should run on "
          "version 1's" % (m.get("hotserve_session_arenas_created_total"), arenas_v1))
    kernels_now = m.get("hotserve_shared_kernels")
    inflight_after = c.metrics().get("hotserve_inflight_requests", model="convs")
    check(kernels_now == 7 or inflight_after == 0 or req.done_at is not None,
          "registry holds %g kernels while both versions live, wanted 6 + the new head" % kernels_now)

    r, out, _ = req.join(300)
    check(r.status == 200, "the in-flight request: HTTP %d %r" % (r.status, r.body[:300]))
    check(out[""]["model_version"] == "1", "the in-flight request reports version %r" % out[""]["model_version"])
    for part in (slice(0, 2), slice(n - 2, n)):  # a float64 reference of the whole batch would take minutes
        expect({"y": out["y"][part]}, reference(xb[part], ws1, bs), "the in-flight request on version 1")
    check(still_running and req.done_at > swapped_at,
          "the request finished before version 2 was serving, so nothing was proven")
    print("version 2 served %.2f s before the in-flight request ended" % (req.done_at - swapped_at))

    c.close()
    c = srv.conn(timeout=300)  # the first one idled through the reference computation
    hsys.wait_for(lambda: c.metrics().get("hotserve_shared_kernels") == 6,
                  "version 1 to be freed (registry back to version 2's 6 kernels)", timeout=30)
    r, out, _ = c.infer("convs", x1, binary=True)
    expect(out, want2, "version 2 after version 1 was freed")
    m = c.metrics()
    check(m.get("hotserve_session_arenas") <= 2 and m.get("hotserve_session_arenas_created_total") == arenas_v1,
          "with version 2 alone: %g arenas, %g made in all; wanted at most its 2 sessions' and none made since "
          "version 1" % (m.get("hotserve_session_arenas"), m.get("hotserve_session_arenas_created_total")))
    c.close()
    srv.stop()

    # Version 2 loaded cold, sharing off, in a server of its own: the same bits.
    cold_repo = os.path.join(tmp, "cold")
    os.makedirs(os.path.join(cold_repo, "convs"))
    hsys.publish(os.path.join(src, "v2"), os.path.join(cold_repo, "convs"), 2)
    cold = hsys.Server(cold_repo, "--poll-interval", "0.5", "--settle", "0.1", "--kernel-share", "off")
    cc = cold.conn(timeout=300)
    hsys.wait_serving(cc, "convs", 2, timeout=60)
    check(cc.metrics().get("hotserve_shared_kernels") == 0, "the server with sharing off registered kernels")
    r, outc, _ = cc.infer("convs", x1, binary=True)
    check(r.status == 200, "cold version 2: HTTP %d" % r.status)
    check(outc["y"].tobytes() == out["y"].tobytes(),
          "version 2 with shared kernels differs from a cold load (max abs difference %.3g)"
          % np.max(np.abs(outc["y"] - out["y"])))
    cc.close()
    cold.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

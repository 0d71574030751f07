#!/usr/bin/python3
"""test_weight_pool.py - a retired version's memory is kept warm for the next one, then handed back.

Model "w" is y = x + W with a 4 MiB initializer W (all K for version K). Version 2 replaces version 1
while requests keep coming; once version 1 is freed, hotserve_weight_pool_bytes holds its memory
(what /metrics said one version held), every answer was exact (y = x + 1 or y = x + 2, never
anything else) and version 2 answers y = x + 2. --trim-delay later the pool is handed back (0)
and a third version loads and answers exactly. docs/REPOSITORY.md, "Warm weight memory".
"""
import os
import threading

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hsys
from hsys import check

N = 1 << 20  # floats in W: 4 MiB, a weight-sized buffer
TRIM_DELAY = 8


def model_bytes(k):
    w = numpy_helper.from_array(np.full((1, N), float(k), dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "w",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def publish(tmp, repo, k):
    src = os.path.join(tmp, "src%d" % k)
    hsys.write_file(os.path.join(src, "model.onnx"), model_bytes(k))
    hsys.publish(src, os.path.join(repo, "w"), k)


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "w"))
    publish(tmp, repo, 1)
    srv = hsys.Server(repo, "--poll-interval", "0.1", "--settle", "0.05", "--trim-delay", str(TRIM_DELAY),
                      "--log-level", "warn")
    c = srv.conn()
    hsys.wait_serving(c, "w", 1)
    x = np.linspace(-1.0, 1.0, N, dtype=np.float32).reshape(1, N)
    m0 = c.metrics()
    one_version = m0.get("hotserve_model_memory_bytes")
    check(one_version >= 4 * N, "hotserve_model_memory_bytes is %g with a 4 MiB weight loaded" % one_version)
    check(m0.get("hotserve_weight_pool_bytes") == 0, "the weight pool holds %g bytes before any version was freed"
          % m0.get("hotserve_weight_pool_bytes"))

    # requests all through the reload: each answer is one version's, exactly
    stop, bad, seen = threading.Event(), [], set()

    def load():
        cc = srv.conn()
        try:
            for _ in range(100000):  # bounded; stops when the reload is over
                if stop.is_set():
                    break
                r, out, _ = cc.infer("w", x)
                y = out.get("y") if r.status == 200 else None
                if y is None:
                    bad.append("status %d" % r.status)
                    continue
                k = float(y[0, 0] - x[0, 0])
                if not any(np.array_equal(y, x + np.float32(v)) for v in (1, 2)):
                    bad.append("an answer that is neither version's (y - x = %g)" % k)
                else:
                    seen.add(round(k))
        finally:
            cc.close()

    t = threading.Thread(target=load)
    t.start()
    try:
        publish(tmp, repo, 2)
        hsys.rescan(c)
        hsys.wait_serving(c, "w", 2)
        hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 1, "version 1 to be freed")
        pool = c.metrics().get("hotserve_weight_pool_bytes")
    finally:
        stop.set()
        t.join(120)
    check(not bad, "requests during the reload: %s" % bad[:3])
    check(seen, "no request was answered during the reload")
    check(pool == one_version, "right after version 1 was freed the weight pool holds %g bytes, version 1 held %g"
          % (pool, one_version))
    r, out, _ = c.infer("w", x)
    check(r.status == 200 and np.array_equal(out["y"], x + np.float32(2)), "version 2 answers inexactly")

    hsys.wait_for(lambda: c.metrics().get("hotserve_weight_pool_bytes") == 0,
                  "the weight pool to be handed back --trim-delay after the last free", timeout=TRIM_DELAY + 20)
    publish(tmp, repo, 3)
    hsys.rescan(c)
    hsys.wait_serving(c, "w", 3)
    r, out, _ = c.infer("w", x)
    check(r.status == 200 and np.array_equal(out["y"], x + np.float32(3)), "version 3 answers inexactly")
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

#!/usr/bin/python3
"""test_kernel_share.py - `hotserve serve --kernel-share on|off` decides whether versions share Conv kernels.

Three 3x3 Convs (16 channels, ReLU between). Version 1 is served; version 2, the same file byte for
byte (identical weights, everything shareable), is published while it serves. With sharing on (the
default, or --kernel-share on, which also wins over HOTSERVE_KERNEL_SHARE=0 in the environment) version
2's load takes all three kernels from version 1: its status says weights_shared_bytes = version 1's
weights_built_bytes > 0, the /metrics counters agree and the registry holds the 3 kernels once. With
--kernel-share off (or HOTSERVE_KERNEL_SHARE=off, the option's environment form) every counter stays at
zero across the reload (shared and built bytes of both versions, hotserve_shared_kernels,
hotserve_shared_kernel_bytes) and the server logs that sharing is off. Both servers answer bit for bit
alike. A value other than on/off (or a boolean) exits 2.
"""
import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import hsys
from hsys import check

CH, SIDE, CONVS = 16, 8, 3


def model_bytes():
    rng = np.random.default_rng(11)
    nodes, inits, prev = [], [], "x"
    for k in range(CONVS):
        w = (rng.standard_normal((CH, CH, 3, 3)) / np.sqrt(9 * CH)).astype(np.float32)
        b = (rng.standard_normal(CH) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, "w%d" % k), numpy_helper.from_array(b, "b%d" % k)]
        out = "y" if k == CONVS - 1 else "c%d" % k
        nodes.append(helper.make_node("Conv", [prev, "w%d" % k, "b%d" % k], [out], pads=[1, 1, 1, 1]))
        if k < CONVS - 1:
            nodes.append(helper.make_node("Relu", [out], ["r%d" % k]))
            out = "r%d" % k
        prev = out
    shape = ["N", CH, SIDE, SIDE]
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def counters(c):
    m = c.metrics()
    return {"shared": m.get("hotserve_model_reload_weight_bytes_total", model="convs", kind="shared"),
            "built": m.get("hotserve_model_reload_weight_bytes_total", model="convs", kind="built"),
            "kernels": m.get("hotserve_shared_kernels"), "kernel_bytes": m.get("hotserve_shared_kernel_bytes")}


def reload_once(tmp, name, src, x, flags, env):
    """Serves version 1 of src, publishes it again as version 2, and returns (version 1's and 2's
    status entries, the /metrics counters after each load, version 2's answer to x, the server's log)."""
    model = os.path.join(tmp, name, "convs")
    os.makedirs(model)
    hsys.publish(src, model, 1)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k == "HOTSERVE_KERNEL_SHARE"}
    os.environ.update(env)
    try:
        srv = hsys.Server(os.path.dirname(model), "--poll-interval", "0.5", "--settle", "0.1", *flags)
    finally:
        for k in env:
            del os.environ[k]
        os.environ.update(saved)
    c = srv.conn(timeout=120)
    hsys.wait_serving(c, "convs", 1, timeout=60)
    after1 = counters(c)
    hsys.publish(src, model, 2)
    hsys.wait_serving(c, "convs", 2, timeout=60)
    entries = hsys.status_entries(c, "convs")
    v1 = [e for e in entries if e["version"] == "1"][-1]
    v2 = [e for e in entries if e["version"] == "2"][-1]
    after2 = counters(c)
    r, out, _ = c.infer("convs", x, version=2, binary=True)
    check(r.status == 200, "%s: version 2 answered HTTP %d" % (name, r.status))
    c.close()
    srv.stop()
    print("%s: version 1 built %d, version 2 shared %d built %d; metrics %s -> %s" % (
        name, v1["weights_built_bytes"], v2["weights_shared_bytes"], v2["weights_built_bytes"], after1, after2))
    return v1, v2, after1, after2, out["y"], srv.log_lines()


def test(tmp, args):
    hsys.require("serve", "publish")
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    with open(os.path.join(src, "model.onnx"), "wb") as f:
        f.write(model_bytes())
    x = np.random.default_rng(3).standard_normal((1, CH, SIDE, SIDE)).astype(np.float32)

    answers = []
    for name, flags, env in (("on-default", [], {}),
                             ("on-flag-over-env", ["--kernel-share", "on"], {"HOTSERVE_KERNEL_SHARE": "0"})):
        v1, v2, after1, after2, y, log = reload_once(tmp, name, src, x, flags, env)
        built = v1["weights_built_bytes"]
        check(built >= CONVS * CH * CH * 9 * 4, "%s: version 1 built %d weight bytes, wanted its %d Convs' at least"
              % (name, built, CONVS))
        check(v2["weights_shared_bytes"] == built and v2["weights_built_bytes"] == 0,
              "%s: version 2 (identical weights) shared %d and built %d bytes; wanted all %d shared" % (
                  name, v2["weights_shared_bytes"], v2["weights_built_bytes"], built))
        check(after1["shared"] == 0 and after1["built"] == built and after1["kernels"] == CONVS,
              "%s: metrics after version 1: %s" % (name, after1))
        check(after2["shared"] == built and after2["built"] == built and after2["kernels"] == CONVS
              and after2["kernel_bytes"] > 0, "%s: metrics after version 2: %s" % (name, after2))
        check(not any("kernel sharing is off" in line for line in log), "%s: the log says sharing is off" % name)
        answers.append(y)

    for name, flags, env in (("off-flag", ["--kernel-share", "off"], {}),
                             ("off-env", [], {"HOTSERVE_KERNEL_SHARE": "off"})):
        v1, v2, after1, after2, y, log = reload_once(tmp, name, src, x, flags, env)
        for what, e in (("version 1", v1), ("version 2", v2)):
            check(e["weights_shared_bytes"] == 0 and e["weights_built_bytes"] == 0,
                  "%s: %s counted %d shared and %d built bytes with sharing off" % (
                      name, what, e["weights_shared_bytes"], e["weights_built_bytes"]))
        for after in (after1, after2):
            check(after == {"shared": 0, "built": 0, "kernels": 0, "kernel_bytes": 0},
                  "%s: metrics with sharing off: %s" % (name, after))
        check(any("kernel sharing is off" in line for line in log), "%s: no log line says sharing is off" % name)
        answers.append(y)

    for y in answers[1:]:
        check(y.tobytes() == answers[0].tobytes(), "servers with and without sharing answer differently")

    r = hsys.cli("serve", "--model-repository", tmp, "--kernel-share", "sometimes", check_rc=False)
    check(r.returncode == 2 and "--kernel-share" in r.stderr, "--kernel-share sometimes: exit %d %r" % (
        r.returncode, r.stderr[-300:]))


if __name__ == "__main__":
    hsys.main(test, __doc__)

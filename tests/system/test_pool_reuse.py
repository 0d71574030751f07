#!/usr/bin/python3
"""test_pool_reuse.py - while reloads keep coming, a reload faults in no fresh pages for its weights.

Model "g" is y = x W^T + b, a Gemm whose 1000 x 2048 weight the kernel reorders into a padded layout of
another size than the decoded tensor's: a load leaves the decoded tensor's block free, the version's
reordered weights hold another. Versions 1..6 (every weight new, small integers: every answer exact)
replace each other under a long --trim-delay, each published once the one before it was freed. From
the fourth on, each load must find both kinds of block in the warm weight pool (the one it replaces
gave back its reordered weights, the load before it left its decoded block): the page faults the ready
line counts stay under half the weight's pages (the read's ring and scratch, mapped per load, fault
~500). A pool that kept only one version's memory unmapped the retiring version's reordered weights
each time and faulted them in again (2500+ faults).
Every version answers exactly. docs/REPOSITORY.md, "Warm weight memory".
"""
import os
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hsys
from hsys import check

N_IN, N_OUT = 2048, 1000
VERSIONS = 6


def weights(k):
    i = np.arange(N_OUT, dtype=np.int64)[:, None]
    j = np.arange(N_IN, dtype=np.int64)[None, :]
    w = ((i * 7 + j * 3 + k) % 9 - 4).astype(np.float32)  # small integers: sums are exact in float32
    b = (np.arange(N_OUT) % 5 + k).astype(np.float32)
    return w, b


def model_bytes(k):
    w, b = weights(k)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N_OUT])],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    model_dir = os.path.join(repo, "g")
    os.makedirs(model_dir)
    hsys.publish_bytes(tmp, model_dir, 1, model_bytes(1))
    srv = hsys.Server(repo, "--poll-interval", "0.1", "--settle", "0.05", "--trim-delay", "300")
    c = srv.conn()
    hsys.wait_serving(c, "g", 1)
    x = (np.arange(N_IN) % 3 - 1).astype(np.float32).reshape(1, N_IN)
    weight_pages = N_OUT * N_IN * 4 // 4096
    faults = {}
    for k in range(1, VERSIONS + 1):
        if k > 1:
            hsys.publish_bytes(tmp, model_dir, k, model_bytes(k))
            hsys.rescan(c)
            hsys.wait_serving(c, "g", k)
            hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 1,
                          "version %d to be freed" % (k - 1))
        w, b = weights(k)
        r, out, _ = c.infer("g", x)
        check(r.status == 200 and np.array_equal(out["y"], x @ w.T + b), "version %d answers inexactly" % k)
        line = srv.wait_log(r"model g version %d ready in .* page faults \d+" % k, "version %d's ready line" % k)
        faults[k] = int(re.search(r"page faults (\d+)", line[-1]).group(1))
    check(srv.log_matching("version 6 ready"), "version 6 never became ready")
    if not hsys.Env.sanitized:  # a sanitizer's allocator and shadow memory fault pages of their own
        for k in range(4, VERSIONS + 1):
            check(faults[k] < weight_pages // 2,
                  "version %d's load faulted %d pages, the weight is %d pages: the warm pool did not keep what "
                  "the load needed (all: %s)" % (k, faults[k], weight_pages, faults))
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

#!/usr/bin/python3
"""test_external_subgraph.py - a model whose external data lies in a subgraph loads and serves.

onnx's save_as_external_data moves every initializer into the external file, those of an If's
branches included. The server streams external data for the main graph's initializers only; a
subgraph's external tensor makes the streamed load stop (HS_NEEDS_WHOLE_FILES), and the loader
must then load the version again with its files whole, read and hashed once more (docs/REPOSITORY.md,
"Read once"). The model: y = If(sum(x) > 0, x + 3, x - 2) + 1, with every constant in weights.bin.
A published (manifest) version must serve y = x + 4 for x = [0, 1, 2, 3] and x - 1 for -x, the log
must say it loaded again with whole files, and a second version with other branch constants must
replace it (so the fallback holds on reloads, not only at start-up). The second read is the
whole-file path, whose check of the bytes it hands out tests/repo covers.
"""
import os

import numpy as np

import hsys
from hsys import check


def make_version(d, up, down):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as H
    from onnx import numpy_helper as NH

    def branch(name, k):
        w = NH.from_array(np.full((1, 4), k, np.float32), name + "_w")
        return H.make_graph([H.make_node("Add", ["x", name + "_w"], [name + "_y"])], name, [],
                            [H.make_tensor_value_info(name + "_y", T.FLOAT, [1, 4])], [w])

    nodes = [H.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             H.make_node("Greater", ["s", "zero"], ["c"]),
             H.make_node("If", ["c"], ["b"], then_branch=branch("then", up), else_branch=branch("else", down)),
             H.make_node("Add", ["b", "one"], ["y"])]
    g = H.make_graph(nodes, "g", [H.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                     [H.make_tensor_value_info("y", T.FLOAT, [1, 4])],
                     [NH.from_array(np.array(0, np.float32), "zero"), NH.from_array(np.ones((1, 4), np.float32), "one")])
    m = H.make_model(g, opset_imports=[H.make_opsetid("", 13)])
    m.ir_version = 8
    os.makedirs(d, exist_ok=True)
    onnx.save_model(m, os.path.join(d, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    # the case under test: the branches' constants really are external data
    saved = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
    ifn = [n for n in saved.graph.node if n.op_type == "If"][0]
    locs = [t.data_location for a in ifn.attribute for t in a.g.initializer]
    check(locs and all(loc == T.EXTERNAL for loc in locs), "the If branches' constants were not saved as external data")


def test(tmp, args):
    hsys.require("serve", "publish")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise hsys.Skip("python3-onnx is not installed")
    repo = os.path.join(tmp, "repo")
    model_dir = os.path.join(repo, "sub")
    os.makedirs(model_dir)
    make_version(os.path.join(tmp, "src", "1"), 3.0, -2.0)
    hsys.publish(os.path.join(tmp, "src", "1"), model_dir, 1)

    srv = hsys.Server(repo, "--poll-interval", "0.2")
    c = srv.conn()
    hsys.wait_serving(c, "sub", 1)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    hsys.expect_values(c.infer("sub", x)[1], x, 4, "version 1, then-branch")
    hsys.expect_values(c.infer("sub", -x)[1], -x, -1, "version 1, else-branch")
    with srv.log_lock:
        again = [line for line in srv.log if "loading it again with whole files" in line]
    check(again, "the server did not say it loaded the subgraph model again with whole files")

    # a reload takes the same path
    make_version(os.path.join(tmp, "src", "2"), 5.0, -6.0)
    hsys.publish(os.path.join(tmp, "src", "2"), model_dir, 2)
    hsys.wait_serving(c, "sub", 2, timeout=60)
    hsys.expect_values(c.infer("sub", x)[1], x, 6, "version 2, then-branch")
    hsys.expect_values(c.infer("sub", -x)[1], -x, -5, "version 2, else-branch")

    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)

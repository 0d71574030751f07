#!/usr/bin/python3
"""make_test_model.py - writes small ONNX models whose output identifies them, for server tests.

    make_test_model.py OUT.onnx --add K [--shape 1,4] [--slow N] [--opset 13]

The model has one FP32 input "x" and one output "y" = x + K, so every response tells which
version (K) computed it. --slow N adds a chain of N 256x256 MatMuls that depends on the input
(so no constant folding removes it) but contributes exactly 0 to y: the model then takes a
measurable time per request, for tests that need a request in flight during a swap.
A first dimension of -1 in --shape makes the batch axis dynamic.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(add, shape, slow, opset):
    dims = [("batch" if d < 0 else d) for d in shape]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    inits = [numpy_helper.from_array(np.array([add], dtype=np.float32), "k")]
    nodes = []
    if slow <= 0:
        nodes.append(helper.make_node("Add", ["x", "k"], ["y"], name="add_k"))
    else:
        n = 256
        rng = np.random.default_rng(0)
        w = (rng.uniform(-1, 1, (n, n)) / np.sqrt(n) * 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, "w"),
                  numpy_helper.from_array(np.array([0.0], dtype=np.float32), "zero")]
        nodes.append(helper.make_node("ReduceSum", ["x"], ["xs"], keepdims=0, name="sum_x"))
        nodes.append(helper.make_node("Mul", ["xs", "zero"], ["xz"], name="zero_x"))
        nodes.append(helper.make_node("Add", ["w", "xz"], ["a0"], name="seed"))
        for i in range(slow):
            nodes.append(helper.make_node("MatMul", [f"a{i}", "w"], [f"a{i + 1}"], name=f"mm{i}"))
        nodes.append(helper.make_node("ReduceSum", [f"a{slow}"], ["as"], keepdims=0, name="sum_a"))
        nodes.append(helper.make_node("Mul", ["as", "zero"], ["az"], name="zero_a"))
        nodes.append(helper.make_node("Add", ["x", "k"], ["xk"], name="add_k"))
        nodes.append(helper.make_node("Add", ["xk", "az"], ["y"], name="add_zero"))
    graph = helper.make_graph(nodes, "test_add", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="hotserve-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--add", type=float, required=True)
    p.add_argument("--shape", default="1,4")
    p.add_argument("--slow", type=int, default=0)
    p.add_argument("--opset", type=int, default=13)
    a = p.parse_args()
    shape = [int(s) for s in a.shape.split(",")]
    onnx.save(build(a.add, shape, a.slow, a.opset), a.out)


if __name__ == "__main__":
    main()

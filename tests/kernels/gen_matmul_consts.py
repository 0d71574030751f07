#!/usr/bin/python3
"""gen_matmul_consts.py - two ONNX models for test_matmul_consts.c: the same MatMul/Gemm nodes, B released or kept.

released.onnx: MatMul A1 [b, s, 128] x B1 [128, 256]; Gemm A2 [m, 128] x B2^T (B2 [256, 128], transB) + C;
Gemm alpha 0.5 A2 x B4 [128, 64] (the kernel folds alpha into its copy: B4 stays in the graph); batched
MatMul A3 [b, 2, s, 32] x B3 [2, 32, 512]. Outputs Y1..Y4.
kept.onnx: the same, plus a fourth input S [1] and each B times S as an extra output, so a second reader
(one constant folding cannot remove) keeps every B in the graph: its outputs are the ones from before the release. Usage: gen_matmul_consts.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(2026)


def rand(*shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def model(keep):
    inits = {"B1": rand(128, 256), "B2": rand(256, 128), "C2": rand(256), "B4": rand(128, 64), "B3": rand(2, 32, 512)}
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("A1", f, ["b", "s", 128]),
              helper.make_tensor_value_info("A2", f, ["m", 128]),
              helper.make_tensor_value_info("A3", f, ["b3", 2, "s3", 32])]
    nodes = [helper.make_node("MatMul", ["A1", "B1"], ["Y1"], name="mm"),
             helper.make_node("Gemm", ["A2", "B2", "C2"], ["Y2"], name="gemm", transB=1),
             helper.make_node("Gemm", ["A2", "B4"], ["Y3"], name="gemm_alpha", alpha=0.5),
             helper.make_node("MatMul", ["A3", "B3"], ["Y4"], name="mm_batched")]
    outs = [helper.make_tensor_value_info(y, f, None) for y in ("Y1", "Y2", "Y3", "Y4")]
    if keep:
        inputs.append(helper.make_tensor_value_info("S", f, [1]))
        for b in ("B1", "B2", "B4", "B3"):
            nodes.append(helper.make_node("Mul", [b, "S"], [b + "_times_s"], name=b + "_times_s"))
            outs.append(helper.make_tensor_value_info(b + "_times_s", f, None))
    g = helper.make_graph(nodes, "matmul_consts", inputs, outs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    state = rng.bit_generator.state
    onnx.save(model(False), os.path.join(out, "released.onnx"))
    rng.bit_generator.state = state  # the same weights in both
    onnx.save(model(True), os.path.join(out, "kept.onnx"))


if __name__ == "__main__":
    main()

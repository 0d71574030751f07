#!/usr/bin/python3
"""gen_matmul_consts.py - two ONNX models for test_matmul_consts.c: the same MatMul/Gemm nodes, B released or kept.

released.onnx: MatMul A1 [b, s, 128] x B1 [128, 256]; Gemm A2 [m, 128] x B2^T (B2 [256, 128], transB) + C;
Gemm alpha 0.5 A2 x B4 [128, 64] (the kernel folds alpha into its copy: B4 stays in the graph); batched
MatMul A3 [b, 2, s, 32] x B3 [2, 32, 512]; MatMul A1 x B5 [128, 256] + C5 [256] (a bias the engine fuses into the
kernel: the graph's C5 goes too). Outputs Y1..Y5.
kept.onnx: the same, plus a fourth input S [1] and each B times S as an extra output, so a second reader
(one constant folding cannot remove) keeps every B in the graph: its outputs are the ones from before the release.
qreleased.onnx / qkept.onnx: the same for the int8 kernel: QLinearMatMul with a uint8 B (zero point 128) and with
an int8 B (zero point 0), MatMulInteger with an int8 B, on A [b, s, 64] uint8; qkept.onnx's second reader of each
B is a Concat with a fourth input Z [1, N].
qcreleased.onnx / qckept.onnx: the same for the int8 convolution: QLinearConv X [b, 8, h, w] uint8 with int8 weights
QW1 [16, 8, 3, 3] (per-channel scales, zero points 0, int32 bias) and a depthwise one, QW2 [8, 1, 3, 3] (group 8);
qckept.onnx's second reader of each weight is a Concat with a further input.
gemm_alpha0.onnx: Gemm alpha 0, beta 1 with constant B and C [8]: Y = C on every row. Usage: gen_matmul_consts.py OUT_DIR
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
    inits = {"B1": rand(128, 256), "B2": rand(256, 128), "C2": rand(256), "B4": rand(128, 64), "B3": rand(2, 32, 512),
             "B5": rand(128, 256), "C5": rand(256)}
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("A1", f, ["b", "s", 128]),
              helper.make_tensor_value_info("A2", f, ["m", 128]),
              helper.make_tensor_value_info("A3", f, ["b3", 2, "s3", 32])]
    nodes = [helper.make_node("MatMul", ["A1", "B1"], ["Y1"], name="mm"),
             helper.make_node("Gemm", ["A2", "B2", "C2"], ["Y2"], name="gemm", transB=1),
             helper.make_node("Gemm", ["A2", "B4"], ["Y3"], name="gemm_alpha", alpha=0.5),
             helper.make_node("MatMul", ["A3", "B3"], ["Y4"], name="mm_batched"),
             helper.make_node("MatMul", ["A1", "B5"], ["T5"], name="mm_bias"),
             helper.make_node("Add", ["T5", "C5"], ["Y5"], name="mm_bias_add")]
    outs = [helper.make_tensor_value_info(y, f, None) for y in ("Y1", "Y2", "Y3", "Y4", "Y5")]
    if keep:
        inputs.append(helper.make_tensor_value_info("S", f, [1]))
        for b in ("B1", "B2", "B4", "B3", "B5", "C5"):
            nodes.append(helper.make_node("Mul", [b, "S"], [b + "_times_s"], name=b + "_times_s"))
            outs.append(helper.make_tensor_value_info(b + "_times_s", f, None))
    g = helper.make_graph(nodes, "matmul_consts", inputs, outs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def concat_kept(name, nodes, inputs, outs, inits, readers):
    """The model; each (constant, type, shape) in readers gets a second reader, a Concat with a further input Z_<name>
    of that shape, whose output is an extra graph output (it keeps the constant in the graph)."""
    for c, t, shape in readers:
        inputs.append(helper.make_tensor_value_info("Z_" + c, t, shape))
        nodes.append(helper.make_node("Concat", [c, "Z_" + c], [c + "_cat"], name=c + "_cat", axis=0))
        outs.append(helper.make_tensor_value_info(c + "_cat", t, None))
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outs, inits), opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def qmodel(keep):
    u8, s8 = TensorProto.UINT8, TensorProto.INT8
    inits = [numpy_helper.from_array(rng.integers(0, 256, (64, 48)).astype(np.uint8), "QB1"),
             numpy_helper.from_array(rng.integers(-128, 128, (64, 40)).astype(np.int8), "QB2"),
             numpy_helper.from_array(rng.integers(-128, 128, (64, 40)).astype(np.int8), "QB3"),
             numpy_helper.from_array(np.array(0.02, np.float32), "a_s"),
             numpy_helper.from_array(np.array(3, np.uint8), "a_z"),
             numpy_helper.from_array(np.array(0.01, np.float32), "b1_s"),
             numpy_helper.from_array(np.array(128, np.uint8), "b1_z"),
             numpy_helper.from_array((rng.random(40) * 0.02 + 0.001).astype(np.float32), "b2_s"),
             numpy_helper.from_array(np.array(0, np.int8), "b2_z"),
             numpy_helper.from_array(np.array(0.5, np.float32), "y_s"),
             numpy_helper.from_array(np.array(120, np.uint8), "y_z")]
    inputs = [helper.make_tensor_value_info("QA", u8, ["b", "s", 64])]
    nodes = [helper.make_node("QLinearMatMul", ["QA", "a_s", "a_z", "QB1", "b1_s", "b1_z", "y_s", "y_z"], ["QY1"],
                              name="qmm_u8"),
             helper.make_node("QLinearMatMul", ["QA", "a_s", "a_z", "QB2", "b2_s", "b2_z", "y_s", "y_z"], ["QY2"],
                              name="qmm_s8"),
             helper.make_node("MatMulInteger", ["QA", "QB3", "a_z"], ["QY3"], name="mmi")]
    outs = [helper.make_tensor_value_info("QY1", u8, None), helper.make_tensor_value_info("QY2", u8, None),
            helper.make_tensor_value_info("QY3", TensorProto.INT32, None)]
    readers = (("QB1", u8, [1, 48]), ("QB2", s8, [1, 40]), ("QB3", s8, [1, 40])) if keep else ()
    return concat_kept("qmatmul_consts", nodes, inputs, outs, inits, readers)


def qconv_model(keep):
    u8, s8 = TensorProto.UINT8, TensorProto.INT8
    inits = [numpy_helper.from_array(rng.integers(-128, 128, (16, 8, 3, 3)).astype(np.int8), "QW1"),
             numpy_helper.from_array(rng.integers(-128, 128, (8, 1, 3, 3)).astype(np.int8), "QW2"),
             numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
             numpy_helper.from_array(np.array(7, np.uint8), "x_z"),
             numpy_helper.from_array((rng.random(16) * 0.004 + 0.001).astype(np.float32), "w1_s"),
             numpy_helper.from_array(np.zeros(16, np.int8), "w1_z"),
             numpy_helper.from_array(np.array(0.003, np.float32), "w2_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w2_z"),
             numpy_helper.from_array(rng.integers(-2000, 2000, 16).astype(np.int32), "qc_b"),
             numpy_helper.from_array(np.array(0.05, np.float32), "y_s"),
             numpy_helper.from_array(np.array(100, np.uint8), "y_z")]
    inputs = [helper.make_tensor_value_info("QX", u8, ["b", 8, "h", "w"])]
    nodes = [helper.make_node("QLinearConv", ["QX", "x_s", "x_z", "QW1", "w1_s", "w1_z", "y_s", "y_z", "qc_b"], ["QC1"],
                              name="qconv", pads=[1, 1, 1, 1]),
             helper.make_node("QLinearConv", ["QX", "x_s", "x_z", "QW2", "w2_s", "w2_z", "y_s", "y_z"], ["QC2"],
                              name="qconv_dw", group=8, strides=[2, 2], pads=[1, 1, 1, 1])]
    outs = [helper.make_tensor_value_info("QC1", u8, None), helper.make_tensor_value_info("QC2", u8, None)]
    readers = (("QW1", s8, [1, 8, 3, 3]), ("QW2", s8, [1, 1, 3, 3])) if keep else ()
    return concat_kept("qconv_consts", nodes, inputs, outs, inits, readers)


def alpha0_model():
    f = TensorProto.FLOAT
    g = helper.make_graph([helper.make_node("Gemm", ["A", "B", "C"], ["Y"], name="gemm_alpha0", alpha=0.0)], "alpha0",
                          [helper.make_tensor_value_info("A", f, ["m", 64])], [helper.make_tensor_value_info("Y", f, None)],
                          [numpy_helper.from_array(rand(64, 8), "B"),
                           numpy_helper.from_array(np.arange(8, dtype=np.float32) - 3.5, "C")])
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
    state = rng.bit_generator.state
    onnx.save(qmodel(False), os.path.join(out, "qreleased.onnx"))
    rng.bit_generator.state = state
    onnx.save(qmodel(True), os.path.join(out, "qkept.onnx"))
    state = rng.bit_generator.state
    onnx.save(qconv_model(False), os.path.join(out, "qcreleased.onnx"))
    rng.bit_generator.state = state
    onnx.save(qconv_model(True), os.path.join(out, "qckept.onnx"))
    onnx.save(alpha0_model(), os.path.join(out, "gemm_alpha0.onnx"))


if __name__ == "__main__":
    main()

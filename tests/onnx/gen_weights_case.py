#!/usr/bin/python3
"""gen_weights_case.py - a model whose Conv weights the compiled model must hold once, with inputs of many
spatial sizes and torch's outputs for them.

    gen_weights_case.py OUTDIR

OUTDIR/model.onnx: x [N, 16, H, W] (all three symbolic) ->
    y = ConvTranspose(Relu(Conv(x, W1, B1, pads 1)), W2, strides 2)   (W1, W2 read once: released at load)
    s = Conv(x, WS, strides 2, pads 1), t = Conv(x, WS, pads 1)                (WS read twice: the graph keeps it)
OUTDIR/x_<k>.npy, y_<k>.npy, s_<k>.npy, t_<k>.npy for k = 0..: one spatial size each (k = 0 is 1x1, a size
the load-time trial plans already built kernels for; every other one is new). OUTDIR/weights.txt: the bytes
of W1 + W2 (released) and of WS + B1 (kept). Expected values come from torch, never from the engine.
"""
import os
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(2026)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


W1, B1 = f32(24, 16, 3, 3, scale=0.2), f32(24)
W2 = f32(24, 8, 2, 2, scale=0.2)
WS = f32(12, 16, 3, 3, scale=0.2)
nodes = [
    helper.make_node("Conv", ["x", "W1", "B1"], ["a"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["a"], ["r"]),
    helper.make_node("ConvTranspose", ["r", "W2"], ["y"], strides=[2, 2]),
    helper.make_node("Conv", ["x", "WS"], ["s"], strides=[2, 2], pads=[1, 1, 1, 1]),
    helper.make_node("Conv", ["x", "WS"], ["t"], pads=[1, 1, 1, 1]),
]
inits = [numpy_helper.from_array(a, n) for n, a in (("W1", W1), ("B1", B1), ("W2", W2), ("WS", WS))]
x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, "H", "W"])
outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, n + "H", n + "W"])
        for n, c in (("y", 8), ("s", 12), ("t", 12))]
g = helper.make_graph(nodes, "weights_once", [x_info], outs, inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="hotserve-tests")
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, os.path.join(OUT, "model.onnx"))

with open(os.path.join(OUT, "weights.txt"), "w") as f:
    f.write("%d %d\n" % (W1.nbytes + W2.nbytes, WS.nbytes + B1.nbytes))

# 20 inputs: more spatial sizes than a node's kernel cache holds (16), so the last ones run on the
# plain-C path with weights the graph no longer has.
shapes = [(1, 1, 1)] + [(1 + k % 3, 3 + k, 4 + (k * 5) % 7) for k in range(19)]
t = lambda a: torch.from_numpy(a).double()
for k, (n, h, w) in enumerate(shapes):
    x = f32(n, 16, h, w)
    xt = t(x)
    y = torch.nn.functional.conv_transpose2d(torch.relu(torch.nn.functional.conv2d(xt, t(W1), t(B1), padding=1)),
                                             t(W2), stride=2)
    s = torch.nn.functional.conv2d(xt, t(WS), stride=2, padding=1)
    tt = torch.nn.functional.conv2d(xt, t(WS), padding=1)
    np.save(os.path.join(OUT, "x_%d.npy" % k), x)
    np.save(os.path.join(OUT, "y_%d.npy" % k), y.float().numpy())
    np.save(os.path.join(OUT, "s_%d.npy" % k), s.float().numpy())
    np.save(os.path.join(OUT, "t_%d.npy" % k), tt.float().numpy())

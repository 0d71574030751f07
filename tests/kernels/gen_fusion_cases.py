#!/usr/bin/python3
"""gen_fusion_cases.py - small ONNX graphs for the fusion passes, with expected outputs from PyTorch.

Writes OUT/<case>/model.onnx, input_K.npy, expected_K.npy and ops.txt (the op types expected to stay
live after compiling, sorted). Usage: gen_fusion_cases.py OUT
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(1234)


def rand(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t(a):
    return torch.from_numpy(a)


class Case:
    def __init__(self, name):
        self.name, self.nodes, self.inits, self.inputs, self.feeds = name, [], [], [], []

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def input(self, name, arr, dims=None):
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims or list(arr.shape)))
        self.feeds.append(arr)
        return name

    def node(self, op, ins, outs, **attrs):
        self.nodes.append(helper.make_node(op, ins, outs, **attrs))

    def save(self, root, out_name, expected, ops, opset=13):
        d = os.path.join(root, self.name)
        os.makedirs(d, exist_ok=True)
        g = helper.make_graph(self.nodes, self.name, self.inputs,
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        onnx.save(m, os.path.join(d, "model.onnx"))
        for k, a in enumerate(self.feeds):
            np.save(os.path.join(d, "input_%d.npy" % k), a)
        np.save(os.path.join(d, "expected_0.npy"), np.ascontiguousarray(expected.astype(np.float32)))
        with open(os.path.join(d, "ops.txt"), "w") as f:
            f.write(" ".join(sorted(ops)) + "\n")


def bn_params(c):
    return rand(c) * 0.5 + 1.0, rand(c) * 0.1, rand(c) * 0.1, np.abs(rand(c)) + 0.5


def conv_bn(case, x_name, x, cin, cout, k, stride=1, pad=0, group=1, bias=True, eps=1e-5, tag=""):
    w = rand(cout, cin // group, k, k, scale=0.3)
    b = rand(cout) if bias else None
    ins = [x_name, case.init("w" + tag, w)] + ([case.init("b" + tag, b)] if bias else [])
    case.node("Conv", ins, ["c" + tag], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)
    sc, sh, mu, var = bn_params(cout)
    case.node("BatchNormalization", ["c" + tag, case.init("s" + tag, sc), case.init("sh" + tag, sh),
                                     case.init("m" + tag, mu), case.init("v" + tag, var)], ["bn" + tag], epsilon=eps)
    y = F.conv2d(t(x), t(w), t(b) if bias else None, stride=stride, padding=pad, groups=group)
    y = F.batch_norm(y, t(mu), t(var), t(sc), t(sh), training=False, eps=eps)
    return "bn" + tag, y


def main():
    root = sys.argv[1]

    c = Case("conv_bn_relu")
    x = rand(1, 3, 9, 9)
    yn, y = conv_bn(c, c.input("x", x), x, 3, 16, 3, pad=1)
    c.node("Relu", [yn], ["y"])
    c.save(root, "y", F.relu(y).numpy(), ["Conv"])

    c = Case("dw_bn_clip6_opset11")
    x = rand(1, 16, 11, 11)
    yn, y = conv_bn(c, c.input("x", x), x, 16, 16, 3, stride=2, pad=1, group=16, bias=False)
    c.node("Clip", [yn, c.init("lo", np.array(0, np.float32)), c.init("hi", np.array(6, np.float32))], ["y"])
    c.save(root, "y", torch.clamp(y, 0, 6).numpy(), ["Conv"])

    # ResNet basic block, with a dynamic batch axis, run at batch 2
    c = Case("resnet_block_dynamic_batch")
    x = rand(2, 8, 6, 6)
    xn = c.input("x", x, ["N", 8, 6, 6])
    a, ya = conv_bn(c, xn, x, 8, 8, 3, pad=1, tag="1")
    c.node("Relu", [a], ["r1"])
    b, yb = conv_bn(c, "r1", F.relu(ya).numpy(), 8, 8, 3, pad=1, tag="2")
    c.node("Add", [b, xn], ["sum"])
    c.node("Relu", ["sum"], ["y"])
    c.save(root, "y", F.relu(yb + t(x)).numpy(), ["Conv", "Conv"])

    # Add whose other operand is the conv itself on the left: Add(x, conv) order
    c = Case("residual_left_operand_leaky")
    x = rand(1, 4, 5, 5)
    w = rand(4, 4, 1, 1)
    c.node("Conv", [c.input("x", x), c.init("w", w)], ["c"])
    c.node("Add", ["x", "c"], ["s"])
    c.node("LeakyRelu", ["s"], ["y"], alpha=0.2)
    c.save(root, "y", F.leaky_relu(t(x) + F.conv2d(t(x), t(w)), 0.2).numpy(), ["Conv"])

    # The residual broadcasts: [1,8,1,1] graph input added to a [1,8,5,5] conv
    c = Case("residual_broadcast_small")
    x, r, w = rand(1, 3, 5, 5), rand(1, 8, 1, 1), rand(8, 3, 3, 3)
    c.node("Conv", [c.input("x", x), c.init("w", w)], ["c"], pads=[1, 1, 1, 1])
    c.node("Add", ["c", c.input("r", r)], ["s"])
    c.node("Relu", ["s"], ["y"])
    c.save(root, "y", F.relu(F.conv2d(t(x), t(w), padding=1) + t(r)).numpy(), ["Conv"])

    # The residual is larger: conv [1,8,1,5] + r [1,8,4,5] -> [1,8,4,5]
    c = Case("residual_broadcast_widens")
    x, r, w, b = rand(1, 3, 3, 5), rand(1, 8, 4, 5), rand(8, 3, 3, 1), rand(8)
    c.node("Conv", [c.input("x", x), c.init("w", w), c.init("b", b)], ["c"])
    c.node("Relu", ["c"], ["c2"])
    c.node("Add", ["c2", c.input("r", r)], ["y"])
    c.save(root, "y", (F.relu(F.conv2d(t(x), t(w), t(b))) + t(r)).numpy(), ["Conv"])

    # Squeeze-and-excite (MobileNetV3): x * hardsigmoid(fc2(relu(fc1(gap(x))))), dynamic batch, run at batch 2;
    # with NHWC preferred the Mul keeps x and its output channels-last (the gate read as [N, 1, C]).
    # Then the same with a one-channel gate added instead ([N, 1, 1, 1] broadcast over channels too): that Add
    # becomes a residual of the gate's Conv which widens its output (it made the layout pass fail the model
    # before: "fused residual broadcasts in a blocked layout").
    for name, gate_c, op in (("se_block_gate_mul", 8, "Mul"), ("se_block_one_channel_add", 1, "Add")):
        c = Case(name)
        x = rand(2, 8, 6, 6)
        xn = c.input("x", x, ["N", 8, 6, 6])
        a, ya = conv_bn(c, xn, x, 8, 8, 3, pad=1, group=8, bias=False, tag="dw")
        c.node("HardSwish", [a], ["hs"])
        yh = F.hardswish(ya)
        c.node("GlobalAveragePool", ["hs"], ["gap"])
        w1, b1, w2, b2 = rand(4, 8, 1, 1), rand(4), rand(gate_c, 4, 1, 1), rand(gate_c)
        c.node("Conv", ["gap", c.init("w1", w1), c.init("b1", b1)], ["f1"])
        c.node("Relu", ["f1"], ["r1"])
        c.node("Conv", ["r1", c.init("w2", w2), c.init("b2", b2)], ["f2"])
        c.node("HardSigmoid", ["f2"], ["g"], alpha=1.0 / 6, beta=0.5)
        c.node(op, ["g", "hs"], ["se"])
        w3 = rand(6, 8, 1, 1)
        c.node("Conv", ["se", c.init("w3", w3)], ["y"])
        g = F.hardsigmoid(F.conv2d(F.relu(F.conv2d(yh.mean(dim=(2, 3), keepdim=True), t(w1), t(b1))), t(w2), t(b2)))
        se = g * yh if op == "Mul" else g + yh
        # the Add is fused into the gate's Conv as a residual that widens its [N, 1, 1, 1] output (NCHW kept)
        live = ["Conv", "Conv", "Conv", "Conv", "GlobalAveragePool"] + (["Mul"] if op == "Mul" else [])
        c.save(root, "y", F.conv2d(se, t(w3)).numpy(), live, opset=14)

    # A conv output read twice is not fused
    c = Case("no_fusion_two_readers")
    x, w = rand(1, 2, 4, 4), rand(3, 2, 3, 3)
    c.node("Conv", [c.input("x", x), c.init("w", w)], ["c"], pads=[1, 1, 1, 1])
    c.node("Relu", ["c"], ["r"])
    c.node("Add", ["r", "c"], ["y"])
    yc = F.conv2d(t(x), t(w), padding=1)
    c.save(root, "y", (F.relu(yc) + yc).numpy(), ["Add", "Conv", "Relu"])

    # Clip bounds given at run time stay a Clip
    c = Case("no_fusion_runtime_clip")
    x, w, lo = rand(1, 2, 4, 4), rand(3, 2, 1, 1), np.array(-0.1, np.float32)
    c.node("Conv", [c.input("x", x), c.init("w", w)], ["c"])
    c.node("Clip", ["c", c.input("lo", lo, [])], ["y"])
    c.save(root, "y", torch.clamp(F.conv2d(t(x), t(w)), min=-0.1).numpy(), ["Clip", "Conv"])

    # BatchNormalization with a mean given at run time is not folded
    c = Case("no_fold_runtime_bn")
    x, w = rand(1, 2, 4, 4), rand(3, 2, 1, 1)
    sc, sh, mu, var = bn_params(3)
    c.node("Conv", [c.input("x", x), c.init("w", w)], ["c"])
    c.node("BatchNormalization", ["c", c.init("s", sc), c.init("sh", sh), c.input("mu", mu), c.init("v", var)], ["y"])
    y = F.batch_norm(F.conv2d(t(x), t(w)), t(mu), t(var), t(sc), t(sh), training=False, eps=1e-5)
    c.save(root, "y", y.numpy(), ["BatchNormalization", "Conv"])

    # A chain of activations, HardSigmoid and HardSwish included (opset 14)
    c = Case("activation_chain")
    x, w, b = rand(1, 3, 6, 6), rand(5, 3, 3, 3), rand(5)
    c.node("Conv", [c.input("x", x), c.init("w", w), c.init("b", b)], ["c"])
    c.node("HardSigmoid", ["c"], ["h"], alpha=0.3, beta=0.4)
    c.node("Tanh", ["h"], ["t"])
    c.node("HardSwish", ["t"], ["y"])
    yc = F.conv2d(t(x), t(w), t(b))
    c.save(root, "y", F.hardswish(torch.tanh(torch.clamp(0.3 * yc + 0.4, 0, 1))).numpy(), ["Conv"], opset=14)

    # ConvTranspose + Sigmoid
    c = Case("deconv_sigmoid")
    x, w, b = rand(1, 4, 5, 5), rand(4, 3, 3, 3), rand(3)
    c.node("ConvTranspose", [c.input("x", x), c.init("w", w), c.init("b", b)], ["c"], strides=[2, 2], pads=[1, 1, 1, 1],
           output_padding=[1, 1])
    c.node("Sigmoid", ["c"], ["y"])
    y = torch.sigmoid(F.conv_transpose2d(t(x), t(w), t(b), stride=2, padding=1, output_padding=1))
    c.save(root, "y", y.numpy(), ["ConvTranspose"])

    # MobileNetV2 inverted residual: expand 1x1 + BN + Clip, dw 3x3 + BN + Clip, project 1x1 + BN, Add
    c = Case("mobilenet_inverted_residual")
    x = rand(1, 8, 7, 7)
    xn = c.input("x", x)
    e, ye = conv_bn(c, xn, x, 8, 48, 1, tag="e", bias=False)
    c.node("Clip", [e, c.init("lo", np.array(0, np.float32)), c.init("hi", np.array(6, np.float32))], ["e6"])
    ye = torch.clamp(ye, 0, 6)
    d, yd = conv_bn(c, "e6", ye.numpy(), 48, 48, 3, pad=1, group=48, tag="d", bias=False)
    c.node("Clip", [d, "lo", "hi"], ["d6"])
    yd = torch.clamp(yd, 0, 6)
    p, yp = conv_bn(c, "d6", yd.numpy(), 48, 8, 1, tag="p", bias=False)
    c.node("Add", [xn, p], ["y"])
    c.save(root, "y", (t(x) + yp).numpy(), ["Conv", "Conv"])  # expand + dw fused (fuse_conv_depthwise)

    # Activations stay in the kernels' layout between convs, the residual included:
    # x -> c1 -> c2 (+ c1, Relu) -> c3 -> y
    c = Case("blocked_residual_chain")
    x, w1, w2, w3 = rand(1, 4, 6, 6), rand(16, 4, 3, 3, scale=0.3), rand(16, 16, 3, 3, scale=0.2), rand(8, 16, 1, 1)
    c.node("Conv", [c.input("x", x), c.init("w1", w1)], ["c1"], pads=[1, 1, 1, 1])
    c.node("Conv", ["c1", c.init("w2", w2)], ["c2"], pads=[1, 1, 1, 1])
    c.node("Add", ["c2", "c1"], ["s"])
    c.node("Relu", ["s"], ["r"])
    c.node("Conv", ["r", c.init("w3", w3)], ["y"])
    y1 = F.conv2d(t(x), t(w1), padding=1)
    y = F.conv2d(F.relu(F.conv2d(y1, t(w2), padding=1) + y1), t(w3))
    c.save(root, "y", y.numpy(), ["Conv", "Conv", "Conv"])

    # A residual c1 read again after the sum (by a Mul): c2's output must not take over c1's buffer
    # (engine/plan.c, inplace_output); in blocked_residual_chain the residual is c2's own input, and in ResNet's
    # blocks (models.inplace_residual) it is taken over.
    c = Case("residual_read_after_sum")
    x, w0, w1, w2 = rand(1, 4, 6, 6), rand(16, 4, 1, 1), rand(16, 4, 3, 3, scale=0.3), rand(16, 16, 3, 3, scale=0.2)
    c.node("Conv", [c.input("x", x), c.init("w1", w1)], ["c1"], pads=[1, 1, 1, 1])
    c.node("Conv", ["x", c.init("w0", w0)], ["c0"])
    c.node("Conv", ["c0", c.init("w2", w2)], ["c2"], pads=[1, 1, 1, 1])
    c.node("Add", ["c2", "c1"], ["s"])
    c.node("Mul", ["s", "c1"], ["y"])
    y1 = F.conv2d(t(x), t(w1), padding=1)
    y = (F.conv2d(F.conv2d(t(x), t(w0)), t(w2), padding=1) + y1) * y1
    c.save(root, "y", y.numpy(), ["Conv", "Conv", "Conv", "Mul"])

    # The residual (a graph input, NCHW) and the sum's output (kept blocked for the next conv) differ
    c = Case("residual_layout_differs")
    x, w1, w2 = rand(1, 8, 5, 5), rand(8, 8, 3, 3, scale=0.3), rand(16, 8, 1, 1)
    c.node("Conv", [c.input("x", x), c.init("w1", w1)], ["c1"], pads=[1, 1, 1, 1])
    c.node("Add", ["x", "c1"], ["s"])
    c.node("Conv", ["s", c.init("w2", w2)], ["y"])
    y = F.conv2d(t(x) + F.conv2d(t(x), t(w1), padding=1), t(w2))
    c.save(root, "y", y.numpy(), ["Conv", "Conv"])

    # Pools keep the convs' layout: ResNet's stem (conv -> Relu -> MaxPool) into a block whose
    # input is also its residual, an AveragePool with count_include_pad, and the GlobalAveragePool
    # head; a dynamic batch axis, run at batch 3.
    c = Case("blocked_through_pools_dynamic_batch")
    x = rand(3, 3, 19, 19)
    w1, w2, w3 = rand(16, 3, 3, 3, scale=0.3), rand(16, 16, 3, 3, scale=0.2), rand(24, 16, 1, 1, scale=0.3)
    c.node("Conv", [c.input("x", x, ["N", 3, 19, 19]), c.init("w1", w1)], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1])
    c.node("Relu", ["c1"], ["r1"])
    c.node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c.node("Conv", ["p1", c.init("w2", w2)], ["c2"], pads=[1, 1, 1, 1])
    c.node("Add", ["c2", "p1"], ["s"])
    c.node("Relu", ["s"], ["r2"])
    c.node("AveragePool", ["r2"], ["p2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
           count_include_pad=1)
    c.node("Conv", ["p2", c.init("w3", w3)], ["c3"])
    c.node("GlobalAveragePool", ["c3"], ["y"])
    p1 = F.max_pool2d(F.relu(F.conv2d(t(x), t(w1), stride=2, padding=1)), 3, 2, 1)
    p2 = F.avg_pool2d(F.relu(F.conv2d(p1, t(w2), padding=1) + p1), 3, 1, 1, count_include_pad=True)
    y = F.conv2d(p2, t(w3)).mean(dim=(2, 3), keepdim=True)
    c.save(root, "y", y.numpy(), ["AveragePool", "Conv", "Conv", "Conv", "GlobalAveragePool", "MaxPool"])

    # A pooled value that is also a graph output keeps NCHW; with NHWC preferred the pool's input stays
    # channels-last and the pool converts its own output (ops/pool.c, edge_to_nchw)
    c = Case("pool_output_is_graph_output")
    x, w1 = rand(1, 4, 8, 8), rand(8, 4, 3, 3, scale=0.3)
    c.node("Conv", [c.input("x", x), c.init("w1", w1)], ["c1"], pads=[1, 1, 1, 1])
    c.node("MaxPool", ["c1"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    c.save(root, "y", F.max_pool2d(F.conv2d(t(x), t(w1), padding=1), 2, 2).numpy(), ["Conv", "MaxPool"])

    # The text recognizer's tail: the last conv's output pooled to height 1, squeezed and transposed into a
    # sequence. With NHWC preferred the conv writes channels-last and the AveragePool / MaxPool converts its
    # 4x smaller output to NCHW (ops/pool.c); dynamic batch, run at batch 2, 20 channels (not a multiple of
    # the 16-channel blocks the conversion walks).
    for name, op in (("edge_maxpool_squeeze_transpose", "MaxPool"), ("edge_avgpool_squeeze_transpose", "AveragePool")):
        c = Case(name)
        x, w1 = rand(2, 4, 2, 16), rand(20, 4, 3, 3, scale=0.3)
        c.node("Conv", [c.input("x", x, ["N", 4, 2, 16]), c.init("w1", w1)], ["c1"], pads=[1, 1, 1, 1])
        c.node(op, ["c1"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
        c.node("Squeeze", ["p", c.init("axes", np.array([2], np.int64))], ["q"])
        c.node("Transpose", ["q"], ["y"], perm=[2, 0, 1])
        pool = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
        y = pool(F.conv2d(t(x), t(w1), padding=1), 2, 2).squeeze(2).permute(2, 0, 1)
        c.save(root, "y", y.numpy(), ["Conv", op, "Squeeze", "Transpose"])

    # A small FPN (DBNet's neck): the coarse level upsampled 2x, added to the fine one, both concatenated
    # and fed to a conv; dynamic batch, run at batch 2. With NHWC preferred the Resize, Add and Concat keep
    # the convs' layout (no Transpose, and no reorder between the convs: `DNNL_VERBOSE=1 hotserve run`
    # shows only the input's and the output's). Nearest (asymmetric, floor: what torch exports; oneDNN's
    # resampling) and linear with align_corners (resize.c's plain-C loop walking the channels-last order).
    for name, mode in (("fpn_nearest_add_concat", "nearest"), ("fpn_linear_corners_add_concat", "linear")):
        c = Case(name)
        x = rand(2, 4, 8, 8)
        w1, w2, w3 = rand(16, 4, 3, 3, scale=0.3), rand(16, 16, 3, 3, scale=0.2), rand(8, 32, 1, 1, scale=0.3)
        c.node("Conv", [c.input("x", x, ["N", 4, 8, 8]), c.init("w1", w1)], ["fine"], pads=[1, 1, 1, 1])
        c.node("Conv", ["fine", c.init("w2", w2)], ["coarse"], pads=[1, 1, 1, 1], strides=[2, 2])
        scales = c.init("scales", np.array([1, 1, 2, 2], np.float32))
        if mode == "nearest":
            c.node("Resize", ["coarse", "", scales], ["up"], mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:
            c.node("Resize", ["coarse", "", scales], ["up"], mode="linear",
                   coordinate_transformation_mode="align_corners")
        c.node("Add", ["fine", "up"], ["sum"])
        c.node("Concat", ["sum", "up"], ["cat"], axis=1)
        c.node("Conv", ["cat", c.init("w3", w3)], ["y"])
        fine = F.conv2d(t(x), t(w1), padding=1)
        coarse = F.conv2d(fine, t(w2), padding=1, stride=2)
        up = F.interpolate(coarse, scale_factor=2.0, mode="nearest") if mode == "nearest" else \
            F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=True)
        y = F.conv2d(torch.cat([fine + up, up], dim=1), t(w3))
        c.save(root, "y", y.numpy(), ["Add", "Concat", "Conv", "Conv", "Conv", "Resize"])

    # DBNet's head input: the coarser levels upsampled (nearest, integer factors) straight into one Concat, each
    # Resize read by the Concat alone. The Concat takes the Resizes over (pass_fuse_concat.c): no Resize stays
    # live, the Concat reads the convs' outputs and repeats their pixels. Fed to a conv (channels-last, a pixel's
    # channels per row) or a graph output itself (NCHW, rows of W, with unequal factors along H and W); dynamic
    # batch, run at batch 2.
    for name, to_conv in (("fpn_upsample_into_concat_nhwc", True), ("fpn_upsample_into_concat_nchw", False)):
        c = Case(name)
        x = rand(2, 4, 16, 24)
        w0, w1, w2 = rand(8, 4, 3, 3, scale=0.3), rand(6, 8, 3, 3, scale=0.2), rand(5, 6, 3, 3, scale=0.2)
        w3 = rand(8, 19, 1, 1, scale=0.3)
        c.node("Conv", [c.input("x", x, ["N", 4, 16, 24]), c.init("w0", w0)], ["c0"], pads=[1, 1, 1, 1])
        c.node("Conv", ["c0", c.init("w1", w1)], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2])
        if to_conv:
            c.node("Conv", ["c1", c.init("w2", w2)], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2])
            f1, f2 = (2, 2), (4, 4)
        else:
            c.node("Conv", ["c1", c.init("w2", w2)], ["c2"], pads=[1, 1, 1, 1], strides=[2, 3])
            f1, f2 = (2, 2), (4, 6)
        c.node("Resize", ["c1", "", c.init("s1", np.array([1, 1, *f1], np.float32))], ["u1"], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        c.node("Resize", ["c2", "", c.init("s2", np.array([1, 1, *f2], np.float32))], ["u2"], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        c.node("Concat", ["u2", "u1", "c0"], ["cat"] if to_conv else ["y"], axis=1)
        c0 = F.conv2d(t(x), t(w0), padding=1)
        c1 = F.conv2d(c0, t(w1), padding=1, stride=2)
        c2 = F.conv2d(c1, t(w2), padding=1, stride=(2, 2) if to_conv else (2, 3))
        y = torch.cat([F.interpolate(c2, scale_factor=f2, mode="nearest"),
                       F.interpolate(c1, scale_factor=f1, mode="nearest"), c0], dim=1)
        if to_conv:
            c.node("Conv", ["cat", c.init("w3", w3)], ["y"])
            y = F.conv2d(y, t(w3))
        c.save(root, "y", y.numpy(), ["Concat", "Conv", "Conv", "Conv"] + (["Conv"] if to_conv else []))

    # Channels-last followers off the FPN's beaten path: an Add broadcasting a pooled conv's [N, 8, 6, 1] over
    # another conv's [N, 8, 6, 6] (elementwise.c's [N, H, W, C] view) and a Concat along H. (The pool keeps
    # the Add from becoming a residual of b's Conv, which would widen its output: the next case.)
    c = Case("nhwc_broadcast_add_concat_h")
    x = rand(2, 4, 6, 6)
    w1, w2, w3 = rand(8, 4, 3, 3, scale=0.3), rand(8, 4, 1, 6, scale=0.3), rand(8, 8, 1, 1, scale=0.3)
    c.node("Conv", [c.input("x", x), c.init("w1", w1)], ["a"], pads=[1, 1, 1, 1])
    c.node("Conv", ["x", c.init("w2", w2)], ["b"])
    c.node("MaxPool", ["b"], ["bp"], kernel_shape=[2, 1], strides=[1, 1], pads=[0, 0, 1, 0])
    c.node("Add", ["a", "bp"], ["s"])
    c.node("Concat", ["s", "a"], ["cat"], axis=2)
    c.node("Conv", ["cat", c.init("w3", w3)], ["y"])
    a = F.conv2d(t(x), t(w1), padding=1)
    bp = F.max_pool2d(F.pad(F.conv2d(t(x), t(w2)), (0, 0, 0, 1), value=-float("inf")), (2, 1), 1)
    y = F.conv2d(torch.cat([a + bp, a], dim=2), t(w3))
    c.save(root, "y", y.numpy(), ["Add", "Concat", "Conv", "Conv", "Conv", "MaxPool"])

    # The same Add without the pool: it becomes a residual of b's Conv ([N, 8, 6, 1]) that widens its output to
    # [N, 8, 6, 6], and both that output (read by the last Conv) and the residual (a's output) stay in the
    # preferred layout. It failed to load before ("fused residual broadcasts in a blocked layout"); ops/conv.c
    # now adds the broadcast residual through both layouts (plain C). Dynamic batch, run at batch 2, with the
    # Relu after the Add fused after the sum.
    c = Case("conv_residual_widens_channels_last")
    x = rand(2, 4, 6, 6)
    w1, w2, w3 = rand(8, 4, 3, 3, scale=0.3), rand(8, 4, 1, 6, scale=0.3), rand(8, 8, 1, 1, scale=0.3)
    b2 = rand(8)
    c.node("Conv", [c.input("x", x, ["N", 4, 6, 6]), c.init("w1", w1)], ["a"], pads=[1, 1, 1, 1])
    c.node("Conv", ["x", c.init("w2", w2), c.init("b2", b2)], ["b"])
    c.node("Add", ["a", "b"], ["s"])
    c.node("Relu", ["s"], ["r"])
    c.node("Conv", ["r", c.init("w3", w3)], ["y"])
    a = F.conv2d(t(x), t(w1), padding=1)
    y = F.conv2d(F.relu(a + F.conv2d(t(x), t(w2), t(b2))), t(w3))
    c.save(root, "y", y.numpy(), ["Conv", "Conv", "Conv"])

    depthwise_cases(root)
    matmul_cases(root)
    attention_cases(root)


def depthwise_cases(root):
    """fuse_conv_depthwise: a 1x1 Conv takes the depthwise 3x3 Conv after it (and the activations between
    and after them). Odd sizes, stride 1 and 2, batch 1 and 8 (a dynamic batch axis), with and without
    biases; kernels.fusion_dw_forced runs them again with the fused oneDNN primitive wherever oneDNN has one (the
    two "wide" cases get its real fusion, jit_1x1; the others its sequential ref_fused_convolution, i.e. the pair)."""
    lo, hi = np.array(0, np.float32), np.array(6, np.float32)
    for name, n, cin, e, h, w, stride, act, bias in [
            ("dw_fuse_s1_clip6_odd", 1, 8, 32, 9, 7, 1, "clip", True),
            ("dw_fuse_s2_clip6_odd_batch8", 8, 16, 48, 13, 11, 2, "clip", False),
            ("dw_fuse_s2_hardswish_batch8", 8, 24, 64, 10, 10, 2, "hardswish", True),
            ("dw_fuse_s2_hardswish_batch8_odd_wide", 8, 16, 48, 57, 57, 2, "hardswish", False),
            ("dw_fuse_s1_relu_batch8_wide", 8, 16, 96, 29, 29, 1, "relu", True)]:
        c = Case(name)
        x = rand(n, cin, h, w)
        xn = c.input("x", x, ["N", cin, h, w])
        we, wd, wp = rand(e, cin, 1, 1, scale=0.3), rand(e, 1, 3, 3, scale=0.3), rand(cin, e, 1, 1, scale=0.2)
        be, bd = (rand(e), rand(e)) if bias else (None, None)
        ins_e = [xn, c.init("we", we)] + ([c.init("be", be)] if bias else [])
        ins_d = ["ea", c.init("wd", wd)] + ([c.init("bd", bd)] if bias else [])
        c.node("Conv", ins_e, ["e"], kernel_shape=[1, 1])
        y = F.conv2d(t(x), t(we), t(be) if bias else None)

        def activate(src, dst, y):
            if act == "clip":
                c.node("Clip", [src, c.init("lo" + src, lo), c.init("hi" + src, hi)], [dst])
                return torch.clamp(y, 0, 6)
            if act == "hardswish":
                c.node("HardSwish", [src], [dst])
                return F.hardswish(y)
            c.node("Relu", [src], [dst])
            return F.relu(y)
        y = activate("e", "ea", y)
        c.node("Conv", ins_d, ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride], group=e)
        y = F.conv2d(y, t(wd), t(bd) if bias else None, stride=stride, padding=1, groups=e)
        y = activate("d", "da", y)
        c.node("Conv", ["da", c.init("wp", wp)], ["y"])
        c.save(root, "y", F.conv2d(y, t(wp)).numpy(), ["Conv", "Conv"])

    # Not fused: a 5x5 depthwise Conv (oneDNN's post-op is 3x3 only) and a stride of (2, 1)
    for name, k, pad, strides in [("dw_no_fuse_5x5", 5, 2, [1, 1]), ("dw_no_fuse_stride_2x1", 3, 1, [2, 1])]:
        c = Case(name)
        x = rand(1, 8, 9, 9)
        we, wd = rand(24, 8, 1, 1, scale=0.3), rand(24, 1, k, k, scale=0.3)
        c.node("Conv", [c.input("x", x), c.init("we", we)], ["e"])
        c.node("Relu", ["e"], ["ea"])
        c.node("Conv", ["ea", c.init("wd", wd)], ["y"], pads=[pad] * 4, strides=strides, group=24)
        y = F.conv2d(F.relu(F.conv2d(t(x), t(we))), t(wd), stride=strides, padding=pad, groups=24)
        c.save(root, "y", y.numpy(), ["Conv", "Conv"])

    # Not fused: the expanded value has a second reader (the Add, fused into the depthwise Conv as its residual)
    c = Case("dw_no_fuse_two_readers")
    x = rand(1, 8, 6, 6)
    we, wd = rand(16, 8, 1, 1, scale=0.3), rand(16, 1, 3, 3, scale=0.3)
    c.node("Conv", [c.input("x", x), c.init("we", we)], ["e"])
    c.node("Conv", ["e", c.init("wd", wd)], ["d"], pads=[1] * 4, group=16)
    c.node("Add", ["d", "e"], ["y"])
    e_ = F.conv2d(t(x), t(we))
    c.save(root, "y", (F.conv2d(e_, t(wd), padding=1, groups=16) + e_).numpy(), ["Conv", "Conv"])  # Add: a residual


def gelu_nodes(case, x_name, tag="", half=0.5):
    """The exporter's erf GELU on x_name: Div(sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5. Returns its output."""
    case.node("Div", [x_name, case.init("sqrt2" + tag, np.array(np.sqrt(2.0), np.float32))], ["gd" + tag])
    case.node("Erf", ["gd" + tag], ["ge" + tag])
    case.node("Add", ["ge" + tag, case.init("one" + tag, np.array(1.0, np.float32))], ["gp" + tag])
    case.node("Mul", [x_name, "gp" + tag], ["gq" + tag])
    case.node("Mul", ["gq" + tag, case.init("half" + tag, np.array(half, np.float32))], ["gy" + tag])
    return "gy" + tag


def matmul_cases(root):
    # Transformer MLP: Linear (bias first, as PyTorch exports it) + GELU, dynamic batch run at 3
    c = Case("linear_bias_gelu")
    x, w, b = rand(3, 5, 16), rand(16, 32, scale=0.3), rand(32)
    c.node("MatMul", [c.input("x", x, ["N", 5, 16]), c.init("w", w)], ["m"])
    c.node("Add", [c.init("b", b), "m"], ["lin"])
    y = gelu_nodes(c, "lin")
    c.save(root, y, F.gelu(t(x) @ t(w) + t(b)).numpy(), ["MatMul"])

    # The tanh GELU as torch exports it (x * x * x as two Muls), and with Pow(x, 3): both one MatMul
    for name, cube_pow in (("linear_bias_gelu_tanh", False), ("linear_gelu_tanh_pow", True)):
        c = Case(name)
        x, w, b = rand(3, 5, 16), rand(16, 32, scale=0.3), rand(32)
        c.node("MatMul", [c.input("x", x, ["N", 5, 16]), c.init("w", w)], ["m"])
        c.node("Add", ["m", c.init("b", b)], ["lin"])
        if cube_pow:
            c.node("Pow", ["lin", c.init("three", np.array(3.0, np.float32))], ["cube"])
        else:
            c.node("Mul", ["lin", "lin"], ["sq"])
            c.node("Mul", ["lin", "sq"], ["cube"])
        c.node("Mul", [c.init("k1", np.array(0.044715, np.float32)), "cube"], ["kc"])
        c.node("Add", ["lin", "kc"], ["inner"])
        c.node("Mul", [c.init("k2", np.array((2 / np.pi) ** 0.5, np.float32)), "inner"], ["arg"])
        c.node("Tanh", ["arg"], ["th"])
        c.node("Add", [c.init("one", np.array(1.0, np.float32)), "th"], ["p"])
        c.node("Mul", ["lin", "p"], ["q"])
        c.node("Mul", [c.init("half", np.array(0.5, np.float32)), "q"], ["y"])
        c.save(root, "y", F.gelu(t(x) @ t(w) + t(b), approximate="tanh").numpy(), ["MatMul"])

    # Linear + bias + residual that is the MatMul's own input, then Relu after the sum
    c = Case("linear_bias_residual_relu")
    x, w, b = rand(2, 4, 8), rand(8, 8, scale=0.3), rand(8)
    c.node("MatMul", [c.input("x", x), c.init("w", w)], ["m"])
    c.node("Add", ["m", c.init("b", b)], ["lin"])
    c.node("Add", ["x", "lin"], ["s"])
    c.node("Relu", ["s"], ["y"])
    c.save(root, "y", F.relu(t(x) + t(x) @ t(w) + t(b)).numpy(), ["MatMul"])

    # Gemm with every attribute, a row-vector C, then LeakyRelu and a Clip with constant bounds
    c = Case("gemm_attrs_leaky_clip")
    x, w, cb = rand(7, 6), rand(5, 6), rand(5)
    c.node("Gemm", [c.input("x", x), c.init("w", w), c.init("c", cb)], ["g"], alpha=0.5, beta=2.0, transB=1)
    c.node("LeakyRelu", ["g"], ["l"], alpha=0.1)
    c.node("Clip", ["l", c.init("lo", np.array(-0.2, np.float32)), c.init("hi", np.array(1.5, np.float32))], ["y"])
    yg = 0.5 * t(x) @ t(w).T + 2.0 * t(cb)
    c.save(root, "y", torch.clamp(F.leaky_relu(yg, 0.1), -0.2, 1.5).numpy(), ["Gemm"])

    # Gemm with transA, a matrix C and a residual graph input, HardSigmoid + Elu around the sum
    c = Case("gemm_transa_residual_hardsigmoid_elu")
    x, w, cm, r = rand(6, 4), rand(6, 3), rand(4, 3), rand(4, 3)
    c.node("Gemm", [c.input("x", x), c.init("w", w), c.init("c", cm)], ["g"], transA=1)
    c.node("HardSigmoid", ["g"], ["h"], alpha=0.3, beta=0.4)
    c.node("Add", ["h", c.input("r", r)], ["s"])
    c.node("Elu", ["s"], ["y"], alpha=0.7)
    yg = t(x).T @ t(w) + t(cm)
    c.save(root, "y", F.elu(torch.clamp(0.3 * yg + 0.4, 0, 1) + t(r), 0.7).numpy(), ["Gemm"])

    # Batched constant B (broadcast over A's batch) with Sigmoid, Tanh, HardSwish
    c = Case("matmul_batched_b_activation_chain")
    x, w = rand(2, 3, 4, 5), rand(3, 5, 6)
    c.node("MatMul", [c.input("x", x), c.init("w", w)], ["m"])
    c.node("Sigmoid", ["m"], ["s"])
    c.node("Tanh", ["s"], ["th"])
    c.node("HardSwish", ["th"], ["y"])
    c.save(root, "y", F.hardswish(torch.tanh(torch.sigmoid(t(x) @ t(w)))).numpy(), ["MatMul"], opset=14)

    # Both operands at run time (attention's Q x K^T): plain path with the fused Relu
    c = Case("matmul_runtime_b_relu")
    q, k = rand(2, 4, 3, 8), rand(2, 4, 8, 3)
    c.node("MatMul", [c.input("q", q), c.input("k", k)], ["m"])
    c.node("Relu", ["m"], ["y"])
    c.save(root, "y", F.relu(t(q) @ t(k)).numpy(), ["MatMul"])

    # The residual widens the output: [4,6] product + [3,4,6] input
    c = Case("matmul_residual_broadcast_widens")
    x, w, r = rand(4, 8), rand(8, 6), rand(3, 4, 6)
    c.node("MatMul", [c.input("x", x), c.init("w", w)], ["m"])
    c.node("Tanh", ["m"], ["th"])
    c.node("Add", [c.input("r", r), "th"], ["s"])
    c.node("Relu", ["s"], ["y"])
    c.save(root, "y", F.relu(torch.tanh(t(x) @ t(w)) + t(r)).numpy(), ["MatMul"])

    # A product read twice is not fused; a bias that is not 1-D stays an Add
    c = Case("matmul_no_fusion")
    x, w, w2, b2 = rand(3, 4), rand(4, 5), rand(5, 5), rand(1, 5)
    c.node("MatMul", [c.input("x", x), c.init("w", w)], ["m"])
    c.node("Relu", ["m"], ["r"])
    c.node("Add", ["r", "m"], ["s"])
    c.node("MatMul", ["s", c.init("w2", w2)], ["m2"])
    c.node("Add", ["m2", c.init("b2", b2)], ["y"])
    ym = t(x) @ t(w)
    c.save(root, "y", ((F.relu(ym) + ym) @ t(w2) + t(b2)).numpy(), ["Add", "Add", "MatMul", "MatMul", "Relu"])

    # Almost GELU (0.4 instead of 0.5) is left alone
    c = Case("matmul_gelu_near_miss")
    x, w = rand(3, 4), rand(4, 6)
    c.node("MatMul", [c.input("x", x), c.init("w", w)], ["m"])
    y = gelu_nodes(c, "m", half=0.4)
    ym = t(x) @ t(w)
    c.save(root, y, (0.8 * F.gelu(ym)).numpy(), ["Add", "Div", "Erf", "MatMul", "Mul", "Mul"])



def attention_cases(root):
    # BERT's self-attention as torch exports it: Q/K/V Linears, Reshape to [N, S, H, D], Transposes to
    # head-major (K straight to [N, H, D, S]), MatMul, Div by sqrt(D), an additive mask, Softmax, MatMul, the
    # Transpose back and a Reshape to [N, S, H * D]: one FusedAttention (dynamic batch, run at 2)
    c = Case("attention_bert_mask")
    n, s, heads, d = 2, 6, 3, 4
    e = heads * d
    x = rand(n, s, e)
    mask = np.where(rng.random((n, 1, 1, s)) < 0.3, -10000.0, 0.0).astype(np.float32)
    c.input("x", x, ["N", s, e])
    c.input("mask", mask, ["N", 1, 1, s])
    shape4 = c.init("shape4", np.array([0, 0, heads, d], np.int64))
    ref = {}
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        w, b = rand(e, e, scale=0.3), rand(e)
        c.node("MatMul", ["x", c.init("w" + name, w)], ["m" + name])
        c.node("Add", [c.init("b" + name, b), "m" + name], ["l" + name])
        c.node("Reshape", ["l" + name, shape4], ["r" + name])
        c.node("Transpose", ["r" + name], ["t" + name], perm=perm)
        ref[name] = (t(x) @ t(w) + t(b)).reshape(n, s, heads, d).permute(0, 2, 1, 3)
    c.node("MatMul", ["tq", "tk"], ["scores"])
    c.node("Div", ["scores", c.init("sqrt_d", np.array(d ** 0.5, np.float32))], ["scaled"])
    c.node("Add", ["scaled", "mask"], ["masked"])
    c.node("Softmax", ["masked"], ["p"], axis=-1)
    c.node("MatMul", ["p", "tv"], ["ctx"])
    c.node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3])
    c.node("Reshape", ["ctx_t", c.init("shape3", np.array([0, 0, e], np.int64))], ["y"])
    att = torch.softmax(ref["q"] @ ref["k"].transpose(-1, -2) / d ** 0.5 + t(mask), dim=-1) @ ref["v"]
    c.save(root, "y", att.permute(0, 2, 1, 3).reshape(n, s, e).numpy(),
           ["FusedAttention", "MatMul", "MatMul", "MatMul", "Reshape", "Reshape", "Reshape", "Reshape"])

    # Cross-attention on head-major inputs of known rank (no Transposes on Q and V, K^T by perm [0, 1, 3, 2]),
    # Sq != Sk, Dk != Dv, the scale as Mul(c, scores), heads broadcast from K / V, no Transpose after
    c = Case("attention_cross_mul_scale")
    q, k, v = rand(2, 3, 5, 4), rand(2, 1, 7, 4), rand(2, 1, 7, 6)
    c.node("Transpose", [c.input("k", k)], ["kt"], perm=[0, 1, 3, 2])
    c.node("MatMul", [c.input("q", q), "kt"], ["scores"])
    c.node("Mul", [c.init("c", np.array(0.7, np.float32)), "scores"], ["scaled"])
    c.node("Softmax", ["scaled"], ["p"], axis=3)
    c.node("MatMul", ["p", c.input("v", v)], ["y"])
    att = torch.softmax(0.7 * (t(q) @ t(k).transpose(-1, -2)), dim=-1) @ t(v)
    c.save(root, "y", att.numpy(), ["FusedAttention"])

    # A softmax over another axis is not attention: left alone
    c = Case("attention_near_miss_axis")
    q, k, v = rand(1, 2, 5, 4), rand(1, 2, 4, 5), rand(1, 2, 5, 3)
    c.node("MatMul", [c.input("q", q), c.input("k", k)], ["scores"])
    c.node("Softmax", ["scores"], ["p"], axis=2)
    c.node("MatMul", ["p", c.input("v", v)], ["y"])
    att = torch.softmax(t(q) @ t(k), dim=2) @ t(v)
    c.save(root, "y", att.numpy(), ["MatMul", "MatMul", "Softmax"])

if __name__ == "__main__":
    main()

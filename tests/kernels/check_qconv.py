#!/usr/bin/python3
"""check_qconv.py - QLinearConv with constant int8 weights through `hotserve run` on oneDNN's int8 kernel.

Each case is a one-node QLinearConv model with random uint8/int8 activations, int8 weights (zero
point 0, per-channel or per-tensor scales), an int32 bias and various strides, pads, dilations and
groups; two more wrap it in QDQ's residual Add (DequantizeLinear -> Add -> QuantizeLinear), which the QDQ pass
fuses into the QLinearConv as a sum. Last, a QDQ graph DequantizeLinear -> Conv -> Relu -> QuantizeLinear must
become a QLinearConv on the kernel when the output zero point is 0 (the Relu is the quantizer's saturation) and
stay as written when it is not, matching the float graph within one step either way. It runs twice: in strict mode (HS_KERNELS_STRICT=1, so the oneDNN int8 kernel must run;
HS_KERNELS_VERBOSE shows it was `qconv`), and with the weights as a run-time input (the plain-C
reference). Both are compared with this file's numpy reference of ONNX's arithmetic (int32
accumulation, float32 scale, round half to even, saturation): the reference path must match
exactly, the kernel within one quantization step (float32 rounding of the scaled sum may differ in
the last bit), and exactly on at least 99.9% of the elements.
Usage: check_qconv.py HOTSERVE WORKDIR
"""
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hsrun import run_model

RNG = np.random.default_rng(7)


def reference(x, xs, xz, w, ws, b, ys, yz, strides, pads, dil, group, ytype, res=None):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64) - int(xz), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    acc = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for co in range(m):
        g = co // mg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i * dil[0]:i * dil[0] + strides[0] * (oh - 1) + 1:strides[0],
                           j * dil[1]:j * dil[1] + strides[1] * (ow - 1) + 1:strides[1]]
                acc[:, co] += np.einsum("nchw,c->nhw", patch, w[co, :, i, j].astype(np.int64))
    acc += b.astype(np.int64)[None, :, None, None]
    scale = (np.float32(xs) * ws.astype(np.float32) / np.float32(ys)).astype(np.float32)
    if scale.size > 1:
        scale = scale[None, :, None, None]
    v = acc.astype(np.float32) * scale
    if res is not None:  # (r, r_scale, r_zp): the fused residual, added before rounding
        r, rs, rz = res
        v = v + (np.float32(rs) / np.float32(ys)) * (r.astype(np.float32) - np.float32(rz))
    v = np.rint(v) + np.float32(yz)
    lo, hi = (-128, 127) if ytype == np.int8 else (0, 255)
    return np.clip(v, lo, hi).astype(ytype)


def make_case(name, shape, m, k, strides, pads, dil, group, xtype, ytype, per_channel, residual=False):
    n, c, h, wd = shape
    lo, hi = (-128, 128) if xtype == np.int8 else (0, 256)
    x = RNG.integers(lo, hi, size=shape).astype(xtype)
    xz = xtype(RNG.integers(lo // 2, hi // 2))
    w = RNG.integers(-127, 128, size=(m, c // group, k, k)).astype(np.int8)
    ws = (RNG.random(m if per_channel else 1).astype(np.float32) * 0.01 + 0.001).astype(np.float32)
    b = RNG.integers(-5000, 5000, size=m).astype(np.int32)
    xs, ys = np.float32(0.02), np.float32(0.5 + RNG.random())
    yz = ytype(0 if ytype == np.int8 else 100)
    res = None
    if residual:
        oshape = reference(x, xs, xz, w, ws, b, ys, yz, strides, pads, dil, group, ytype).shape
        res = (RNG.integers(0, 256, size=oshape).astype(np.uint8), np.float32(0.3), np.uint8(17))
        # QLinearConv -> DequantizeLinear -> Add(DequantizeLinear(r)) -> QuantizeLinear: the QDQ pass fuses the
        # residual into the QLinearConv, whose own output grid (y1) then never rounds the sum
        ys1, yz1 = np.float32(0.7), ytype(3)
    y = reference(x, xs, xz, w, ws, b, ys, yz, strides, pads, dil, group, ytype, res)
    inits = [numpy_helper.from_array(np.array(v), nm) for v, nm in
             [(xs, "xs"), (xz, "xz"), (ws if per_channel else ws.reshape(()), "ws"),
              (np.zeros(m if per_channel else (), np.int8), "wz"), (ys, "ys"), (yz, "yz"), (b, "b")]]
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                              strides=strides, pads=pads, dilations=dil, group=group)]
    if residual:
        nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys1", "yz1", "b"], ["y1"],
                                  strides=strides, pads=pads, dilations=dil, group=group),
                 helper.make_node("DequantizeLinear", ["y1", "ys1", "yz1"], ["y1f"]),
                 helper.make_node("DequantizeLinear", ["r", "rs", "rz"], ["rf"]),
                 helper.make_node("Add", ["y1f", "rf"], ["sum"]),
                 helper.make_node("QuantizeLinear", ["sum", "ys", "yz"], ["y"])]
        inits += [numpy_helper.from_array(np.array(v), nm) for v, nm in
                  [(ys1, "ys1"), (yz1, "yz1"), (res[1], "rs"), (res[2], "rz")]]
    xt = TensorProto.INT8 if xtype == np.int8 else TensorProto.UINT8
    yt = TensorProto.INT8 if ytype == np.int8 else TensorProto.UINT8
    models = {}
    for mode in ("kernel", "reference"):
        ins = [helper.make_tensor_value_info("x", xt, list(shape))]
        if residual:
            ins.append(helper.make_tensor_value_info("r", TensorProto.UINT8, list(res[0].shape)))
        its = list(inits)
        if mode == "kernel":
            its.append(numpy_helper.from_array(w, "w"))
        else:
            ins.append(helper.make_tensor_value_info("w", TensorProto.INT8, list(w.shape)))
        g = helper.make_graph(nodes, name, ins, [helper.make_tensor_value_info("y", yt, list(y.shape))], its)
        models[mode] = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    inputs = {"x": x, "w": w}
    if residual:
        inputs["r"] = res[0]
    return models, inputs, y



def run(hotserve, work, name, model, inputs, strict):
    """The model's output y (None when the run failed) and the run's log."""
    outs, log = run_model(hotserve, os.path.join(work, name), model, inputs, strict, verbose=True)
    return (outs[0] if outs else None), log


CASES = [
    # name, NCHW, out channels, kernel, strides, pads, dilations, group, x type, y type, per-channel
    ("stem_u8_s2", (1, 3, 32, 32), 16, 7, [2, 2], [3, 3, 3, 3], [1, 1], 1, np.uint8, np.uint8, True),
    ("k3_u8_pad", (2, 16, 14, 14), 32, 3, [1, 1], [1, 1, 1, 1], [1, 1], 1, np.uint8, np.uint8, True),
    ("k1_s8_to_s8", (1, 32, 9, 9), 24, 1, [1, 1], [0, 0, 0, 0], [1, 1], 1, np.int8, np.int8, True),
    ("depthwise", (1, 32, 16, 16), 32, 3, [2, 2], [1, 1, 1, 1], [1, 1], 32, np.uint8, np.uint8, True),
    ("grouped_dilated", (1, 8, 12, 12), 8, 3, [1, 1], [2, 2, 2, 2], [2, 2], 2, np.uint8, np.int8, False),
    ("asym_pads", (1, 4, 7, 9), 6, 3, [2, 1], [0, 1, 2, 0], [1, 1], 1, np.int8, np.uint8, False),
    # a fused residual (QDQ Add): reordered into the kernel's layout (3x3) or summed in place (1x1)
    ("residual_k3", (2, 16, 10, 10), 16, 3, [1, 1], [1, 1, 1, 1], [1, 1], 1, np.uint8, np.uint8, True, True),
    ("residual_k1_s8", (1, 32, 7, 7), 64, 1, [1, 1], [0, 0, 0, 0], [1, 1], 1, np.uint8, np.int8, True, True),
]


def qdq_relu_case(yz):
    """DequantizeLinear -> Conv -> Relu -> QuantizeLinear(y_s, yz) with int8 weights through DequantizeLinear: the
    QDQ pass makes it a QLinearConv, dropping the Relu, only when yz is uint8's minimum (0), where the quantizer's
    saturation computes the Relu; otherwise the graph must run as written. The expected output is this file's
    integer reference with the Relu applied before rounding (what the float graph computes up to float rounding)."""
    x = RNG.integers(0, 256, size=(1, 8, 9, 9)).astype(np.uint8)
    w = RNG.integers(-127, 128, size=(12, 8, 3, 3)).astype(np.int8)
    xs, xz, ys = np.float32(0.05), np.uint8(120), np.float32(0.2)
    ws = (RNG.random(12).astype(np.float32) * 0.01 + 0.002).astype(np.float32)
    b = (RNG.standard_normal(12) * 2).astype(np.float32)
    bq = np.rint(b / (xs * ws)).astype(np.int32)
    # integer reference, Relu in the real domain before quantizing
    xp = np.pad(x.astype(np.int64) - int(xz), ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((1, 12, 9, 9), np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 9, j:j + 9], w[:, :, i, j].astype(np.int64))
    real = (acc + bq[None, :, None, None]).astype(np.float64) * (float(xs) * ws.astype(np.float64))[None, :, None, None]
    y = np.clip(np.rint(np.maximum(real, 0) / float(ys)) + int(yz), 0, 255).astype(np.uint8)
    inits = [numpy_helper.from_array(np.array(v), nm) for v, nm in
             [(xs, "xs"), (xz, "xz"), (w, "wq"), (ws, "ws"), (np.zeros(12, np.int8), "wz"), (ys, "ys"),
              (np.uint8(yz), "yz"), (b, "b")]]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "qdq_relu", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 8, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 12, 9, 9])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), {"x": x}, y


def main():
    hotserve, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failed = 0
    for case in CASES:
        name = case[0]
        models, inputs, want = make_case(*case)
        got, log = run(hotserve, work, name + "_kernel", models["kernel"], inputs, True)
        why = ""
        if got is None:
            why = "kernel run failed: " + log
        elif "qconv" not in log:
            why = "the int8 kernel did not run"
        else:
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
            if got.dtype != want.dtype or got.shape != want.shape or diff.max() > 1 or (diff > 0).mean() > 1e-3:
                why = "kernel: max diff %d, %.4f%% differ" % (diff.max(), 100 * (diff > 0).mean())
        if not why:
            ref, log = run(hotserve, work, name + "_reference", models["reference"], inputs, False)
            if ref is None:
                why = "reference run failed: " + log
            elif not np.array_equal(ref, want):
                why = "reference differs on %d elements" % int((ref != want).sum())
        print("%-20s %s" % (name, "ok" if not why else "FAIL " + why))
        failed += bool(why)
    # the QDQ pass: rewritten (and on the int8 kernel) exactly when the Relu is the quantizer's saturation
    for yz, rewritten in ((0, True), (100, False)):
        name = "qdq_relu_zp%d" % yz
        model, inputs, want = qdq_relu_case(yz)
        got, log = run(hotserve, work, name, model, inputs, False)
        why = ""
        if got is None:
            why = "run failed: " + log
        elif ("kernels: qconv" in log) != rewritten:
            why = "the QDQ pass %s the pattern" % ("missed" if rewritten else "wrongly rewrote")
        else:
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
            if diff.max() > 1 or (diff > 0).mean() > 0.01:
                why = "max diff %d, %.2f%% differ" % (diff.max(), 100 * (diff > 0).mean())
        print("%-20s %s" % (name, "ok" if not why else "FAIL " + why))
        failed += bool(why)
    total = len(CASES) + 2
    print("%d passed, %d failed" % (total - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

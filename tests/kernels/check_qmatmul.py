#!/usr/bin/python3
"""check_qmatmul.py - QLinearMatMul / MatMulInteger on oneDNN's int8 matmul (`qmatmul`), and the QDQ pass's MatMuls.

1. One-node QLinearMatMul / MatMulInteger models with random operands: uint8 / int8 A of rank 1 to 4 (a batch
   MatMul with a 2-D B), a constant B (int8 with zero point 0, or uint8 with zero point 128), per-tensor and
   per-column (of B) scales, nonzero zero points of A and of the output, uint8 / int8 outputs, and MatMulInteger
   with A's zero point constant or given at run time (as DynamicQuantizeLinear gives it). Each runs twice: with B
   constant in strict mode (HS_KERNELS_STRICT=1; HS_KERNELS_VERBOSE must show `qmatmul`), and with B as a run-time
   input (the plain-C reference). Both are compared with this file's numpy reference of ONNX's arithmetic (int32
   sums, float32 scale, round half to even, saturation): the reference must match exactly, the kernel within one
   step on at most 0.1% of the elements (float32 rounding of the scaled sum may differ in the last bit; int32
   outputs exactly). Cases oneDNN cannot take (a per-column zero point of B) must run the plain C even with a
   constant B, and match exactly.
2. The QDQ pass: DequantizeLinear -> MatMul [-> Add bias] -> QuantizeLinear, and DequantizeLinear -> MatMul
   [-> Add bias] read as float32, with int8 weights (per column or per tensor) through DequantizeLinear, in
   graphs of rank 2 and 3, one with the exporter's erf GELU after the bias (fused into the kernel as a post-op).
   Each must become a QLinearMatMul on the kernel (HS_KERNELS_VERBOSE shows `qmatmul`)
   and match the same graph with the weights' DequantizeLinear folded into float32 constants (which no pass
   rewrites: the QDQ graph run literally, in float32): quantized outputs within one step (on at most 1% of the
   elements), float ones within 1e-4 of the output's range (the bias is rounded to the accumulator's grid).
Usage: check_qmatmul.py HOTSERVE WORKDIR
       check_qmatmul.py --write-batch-model PATH   (the dynamic-batch model test_qmatmul_batches.c runs)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hsrun import run_model

RNG = np.random.default_rng(17)
TT = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.int32: TensorProto.INT32,
      np.float32: TensorProto.FLOAT}


def rand_q(dtype, shape):
    lo, hi = (-128, 128) if dtype == np.int8 else (0, 256)
    return RNG.integers(lo, hi, size=shape).astype(dtype)


def reference(a, az, b, bz, scale=None, yz=None, ytype=None):
    """ONNX's arithmetic: int32 sums of (a - az) (b - bz[j]); with scale: float32 scale, rint, + yz, saturate."""
    acc = np.matmul(a.astype(np.int64) - int(az), b.astype(np.int64) - bz.astype(np.int64))
    if scale is None:
        return acc.astype(np.int32)
    v = np.rint(acc.astype(np.float32) * scale.astype(np.float32)) + np.float32(yz)
    lo, hi = (-128, 127) if ytype == np.int8 else (0, 255)
    return np.clip(v, lo, hi).astype(ytype)


def qlinear_case(name, ashape, n, atype, btype, ytype, per_column, bz_kind="type"):
    k = ashape[-1]
    a = rand_q(atype, ashape)
    az = atype(RNG.integers(0, 100) if atype == np.uint8 else RNG.integers(-50, 50))
    b = rand_q(btype, (k, n))
    if btype == np.int8:
        b[b == -128] = -127
    nb = n if per_column else 1
    if bz_kind == "type":  # what the kernel takes: int8 B with 0, uint8 B with 128
        bz = np.full(nb, 0 if btype == np.int8 else 128, btype)
    else:  # per-column zero points: plain C only
        bz = rand_q(btype, nb)
    bs = (RNG.random(nb).astype(np.float32) * 0.01 + 0.002).astype(np.float32)
    as_, ys = np.float32(0.03), np.float32(0.2 + RNG.random())
    yz = ytype(10 if ytype == np.int8 else 120)
    scale = (as_ * bs / ys).astype(np.float32)
    y = reference(a, az, b, bz, scale, yz, ytype)
    shape_of = (lambda v: v) if per_column else (lambda v: v.reshape(()))
    consts = {"as": as_, "az": az, "bs": shape_of(bs), "bz": shape_of(bz), "ys": ys, "yz": yz}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    return name, node, a, b, consts, y, {}


def integer_case(name, ashape, n, atype, az_runtime):
    k = ashape[-1]
    a = rand_q(atype, ashape)
    az = atype(RNG.integers(0, 100) if atype == np.uint8 else RNG.integers(-50, 50))
    b = rand_q(np.int8, (k, n))
    y = reference(a, az, b, np.zeros(1, np.int8))
    consts = {"bz": np.int8(0)} if az_runtime else {"az": az, "bz": np.int8(0)}
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    return name, node, a, b, consts, y, ({"az": np.array(az)} if az_runtime else {})


CASES = [
    qlinear_case("ql_2d_u8_percol", (7, 64), 48, np.uint8, np.int8, np.uint8, True),
    qlinear_case("ql_3d_s8_to_s8", (2, 5, 40), 33, np.int8, np.int8, np.int8, False),
    qlinear_case("ql_4d_u8_percol", (2, 3, 4, 32), 16, np.uint8, np.int8, np.uint8, True),
    qlinear_case("ql_u8_b_zp128", (9, 24), 20, np.uint8, np.uint8, np.int8, True),
    qlinear_case("ql_1d_a", (40,), 24, np.uint8, np.int8, np.uint8, True),  # numpy.matmul's vector: y is [N]
    integer_case("mmi_u8_const_zp", (2, 6, 48), 30, np.uint8, False),
    integer_case("mmi_u8_runtime_zp", (11, 64), 17, np.uint8, True),
    integer_case("mmi_s8_runtime_zp", (3, 4, 16), 9, np.int8, True),
]
# B's zero point per column (nonzero): oneDNN has none, the plain C must run (and be right) with B constant too
PLAIN_CASES = [qlinear_case("ql_percol_bzp_plain", (5, 16), 12, np.uint8, np.uint8, np.uint8, True, "random")]


def model_of(name, node, a, b, consts, y, runtime, b_const):
    ins = [helper.make_tensor_value_info("a", TT[a.dtype.type], list(a.shape))]
    inits = [numpy_helper.from_array(np.array(v), k) for k, v in consts.items()]
    for k, v in runtime.items():
        ins.append(helper.make_tensor_value_info(k, TT[v.dtype.type], list(v.shape)))
    if b_const:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        ins.append(helper.make_tensor_value_info("b", TT[b.dtype.type], list(b.shape)))
    g = helper.make_graph([node], name, ins, [helper.make_tensor_value_info("y", TT[y.dtype.type], list(y.shape))],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])



def run(hotserve, work, name, model, inputs, strict):
    return run_model(hotserve, os.path.join(work, name), model, inputs, strict, verbose=True)


def check_op_case(hotserve, work, case, want_kernel):
    name, node, a, b, consts, y, runtime = case
    inputs = dict(runtime, a=a, b=b)
    got, log = run(hotserve, work, name + "_const", model_of(*case, b_const=True), inputs, True)
    if got is None:
        return "constant-B run failed: " + log
    if ("kernels: qmatmul" in log) != want_kernel:
        return "the int8 kernel %s" % ("did not run" if want_kernel else "ran where it cannot be exact")
    diff = np.abs(got[0].astype(np.int64) - y.astype(np.int64))
    exact = y.dtype == np.int32 or not want_kernel
    if got[0].dtype != y.dtype or got[0].shape != y.shape or diff.max() > (0 if exact else 1) or \
            (diff > 0).mean() > 1e-3:
        return "constant B: max diff %d, %.4f%% differ" % (diff.max(), 100 * (diff > 0).mean())
    ref, log = run(hotserve, work, name + "_reference", model_of(*case, b_const=False), inputs, False)
    if ref is None:
        return "reference run failed: " + log
    if not np.array_equal(ref[0], y):
        return "reference differs on %d elements" % int((ref[0] != y).sum())
    return ""


# ---- the QDQ pass ----

def qdq_case(name, xshape, n, per_column, bias, quantized_out, gelu=False):
    """x_q -> DequantizeLinear -> MatMul(DequantizeLinear(w_q)) [-> Add(bias)] [-> the exporter's erf GELU]
    [-> QuantizeLinear]; returns the QDQ model, its literal twin (the weights' DequantizeLinear folded to float32)
    and the input."""
    k = xshape[-1]
    x = rand_q(np.uint8, xshape)
    xs, xz = np.float32(0.04), np.uint8(128)
    wq = rand_q(np.int8, (k, n))
    wq[wq == -128] = -127
    ws = (RNG.random(n if per_column else 1).astype(np.float32) * 0.01 + 0.002).astype(np.float32)
    if not per_column:
        ws = ws.reshape(())
    wf = ((wq.astype(np.float32)) * ws).astype(np.float32)
    b = (RNG.standard_normal(n) * 0.5).astype(np.float32)
    ys, yz = np.float32(0.15), np.uint8(128)
    out_shape = list(xshape[:-1]) + [n]
    variants = {}
    for lit in (False, True):
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"])]
        inits = [numpy_helper.from_array(np.array(v), nm) for v, nm in [(xs, "xs"), (xz, "xz"), (b, "b"),
                                                                         (ys, "ys"), (yz, "yz")]]
        if lit:
            inits.append(numpy_helper.from_array(wf, "wf"))
        else:
            inits += [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(ws), "ws")]
            nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws"], ["wf"], axis=1))
        nodes.append(helper.make_node("MatMul", ["xf", "wf"], ["mm"]))
        last = "mm"
        if bias:
            nodes.append(helper.make_node("Add", ["b", "mm"], ["mb"]))  # the bias first, as torch exports it
            last = "mb"
        if gelu:  # x * 0.5 * (1 + erf(x / sqrt 2)), as torch exports it
            inits += [numpy_helper.from_array(np.array(v, np.float32), nm) for v, nm in
                      [(np.sqrt(2.0), "sqrt2"), (1.0, "one"), (0.5, "half")]]
            nodes += [helper.make_node("Div", [last, "sqrt2"], ["g_div"]), helper.make_node("Erf", ["g_div"], ["g_erf"]),
                      helper.make_node("Add", ["g_erf", "one"], ["g_add"]),
                      helper.make_node("Mul", [last, "g_add"], ["g_mul"]),
                      helper.make_node("Mul", ["g_mul", "half"], ["g_out"])]
            last = "g_out"
        if quantized_out:
            nodes.append(helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["y"]))
        else:
            nodes.append(helper.make_node("Relu", [last], ["y"]))  # a float reader
        yt = TensorProto.UINT8 if quantized_out else TensorProto.FLOAT
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.UINT8, list(xshape))],
                              [helper.make_tensor_value_info("y", yt, out_shape)], inits)
        variants[lit] = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return variants[False], variants[True], {"x": x}


QDQ_CASES = [
    ("qdq_bias_q_percol_3d", (2, 8, 64), 48, True, True, True),
    ("qdq_q_pertensor_2d", (16, 32), 24, False, False, True),
    ("qdq_bias_float_3d", (2, 8, 64), 40, True, True, False),
    ("qdq_float_2d", (5, 48), 20, False, False, False),
    ("qdq_bias_gelu_float_3d", (2, 16, 64), 96, True, True, False, True),
]


def check_qdq_case(hotserve, work, case):
    name, quantized_out, gelu = case[0], case[5], len(case) > 6 and case[6]
    qdq, literal, inputs = qdq_case(*case)
    got, log = run(hotserve, work, name, qdq, inputs, True)
    if got is None:
        return "run failed: " + log
    if "kernels: qmatmul" not in log:
        return "the QDQ pass missed the pattern"
    if gelu and " post 0" in log:  # (the Relu reading it fuses too)
        return "the GELU was not fused into the int8 MatMul"
    want, log2 = run(hotserve, work, name + "_literal", literal, inputs, False)
    if want is None:
        return "literal run failed: " + log2
    if "kernels: qmatmul" in log2:
        return "the literal graph was rewritten"
    g, w = got[0], want[0]
    if g.dtype != w.dtype or g.shape != w.shape:
        return "dtype/shape %s%s vs %s%s" % (g.dtype, g.shape, w.dtype, w.shape)
    if quantized_out:
        diff = np.abs(g.astype(np.int64) - w.astype(np.int64))
        if diff.max() > 1 or (diff > 0).mean() > 0.01:
            return "max diff %d, %.2f%% differ" % (diff.max(), 100 * (diff > 0).mean())
    else:
        diff = np.abs(g - w).max()
        if diff > 1e-4 * max(1.0, float(np.abs(w).max())):
            return "max abs diff %g" % diff
    return ""


def write_batch_model(path):
    """QLinearMatMul with A [batch, 4, 40] uint8 (batch dynamic), a constant int8 B [40, 24] with per-column scales,
    nonzero zero points of A and y."""
    _, node, a, b, consts, y, _ = qlinear_case("batches", (1, 4, 40), 24, np.uint8, np.int8, np.uint8, True)
    g = helper.make_graph([node], "batches", [helper.make_tensor_value_info("a", TensorProto.UINT8, ["batch", 4, 40])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, ["batch", 4, 24])],
                          [numpy_helper.from_array(np.array(v), k) for k, v in consts.items()] +
                          [numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return 0


def main():
    if sys.argv[1] == "--write-batch-model":
        return write_batch_model(sys.argv[2])
    hotserve, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    results = [(c[0], check_op_case(hotserve, work, c, True)) for c in CASES]
    results += [(c[0], check_op_case(hotserve, work, c, False)) for c in PLAIN_CASES]
    results += [(c[0], check_qdq_case(hotserve, work, c)) for c in QDQ_CASES]
    failed = 0
    for name, why in results:
        print("%-24s %s" % (name, "ok" if not why else "FAIL " + why))
        failed += bool(why)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

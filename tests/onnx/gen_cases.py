#!/usr/bin/python3
"""gen_cases.py - writes small ONNX models, their inputs and numpy-computed expected outputs.

    gen_cases.py OUTDIR

OUTDIR/cases/<name>/model.onnx, input_<k>.npy (in model input order), expected_<k>.npy (in model
output order). OUTDIR/hostile/<name>.onnx are malformed or hostile models, each with
<name>.expect holding a substring of the error the engine must report.
Expected values come from numpy, never from the engine under test.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(1234)
OUT = sys.argv[1]

NP2ONNX = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.int32: TensorProto.INT32,
           np.float64: TensorProto.DOUBLE, np.bool_: TensorProto.BOOL, np.uint8: TensorProto.UINT8}


def vi(name, arr_or_dtype, shape=None):
    dt = arr_or_dtype.dtype.type if shape is None else arr_or_dtype
    shp = list(arr_or_dtype.shape) if shape is None else shape
    return helper.make_tensor_value_info(name, NP2ONNX[dt], shp)


def case(name, nodes, inputs, outputs, inits=(), opset=13, input_shapes=None, check=True, external=None):
    """inputs: list of (name, array); outputs: list of (name, expected array)."""
    d = os.path.join(OUT, "cases", name)
    os.makedirs(d, exist_ok=True)
    ins = []
    for k, (n, a) in enumerate(inputs):
        shp = input_shapes[k] if input_shapes else list(a.shape)
        ins.append(vi(n, a.dtype.type, shp))
        np.save(os.path.join(d, f"input_{k}.npy"), a)
    outs = [vi(n, a) for n, a in outputs]
    for k, (n, a) in enumerate(outputs):
        np.save(os.path.join(d, f"expected_{k}.npy"), a)
    g = helper.make_graph(nodes, name, ins, outs, [numpy_helper.from_array(v, n) for n, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="hotserve-tests")
    m.ir_version = 8
    if check:
        onnx.checker.check_model(m)
    if external:  # every initializer into one file beside the model, at the given relative location
        os.makedirs(os.path.dirname(os.path.join(d, external)), exist_ok=True)
        if os.path.exists(os.path.join(d, external)):
            os.remove(os.path.join(d, external))  # onnx appends to an existing file
        onnx.save_model(m, os.path.join(d, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external, size_threshold=0)
    else:
        onnx.save(m, os.path.join(d, "model.onnx"))


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


N = helper.make_node

# ---- elementwise with broadcasting ----
a, b = f32(2, 3, 4), f32(4)
case("add_bcast", [N("Add", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", a + b)])
a, b = f32(2, 1, 4), f32(3, 1)
case("sub_bcast2", [N("Sub", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", a - b)])
a, c = f32(2, 3, 5), f32(3, 1)
case("mul_init", [N("Mul", ["a", "c"], ["y"])], [("a", a)], [("y", a * c)], inits=[("c", c)])
a, b = f32(3, 4), (np.abs(f32(3, 4)) + 0.5).astype(np.float32)
case("div", [N("Div", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", a / b)])
a = f32(2, 3, 4)
case("relu_identity_chain", [N("Relu", ["a"], ["r"]), N("Identity", ["r"], ["i"]), N("Add", ["i", "r"], ["y"])],
     [("a", a)], [("y", 2 * np.maximum(a, 0))])
ai, bi = rng.integers(-50, 50, (3, 4)).astype(np.int64), rng.integers(1, 9, (4,)).astype(np.int64)
case("int64_ops", [N("Mul", ["a", "b"], ["m"]), N("Sub", ["m", "b"], ["y"])], [("a", ai), ("b", bi)],
     [("y", ai * bi - bi)])
a = f32(5)
case("scalar_add", [N("Add", ["a", "s"], ["y"])], [("a", a)], [("y", a + np.float32(2.5))],
     inits=[("s", np.array(2.5, dtype=np.float32))])

# ---- MatMul / Gemm ----
a, b = f32(3, 4), f32(4, 5)
case("matmul_2d", [N("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", a @ b)])
a, b = f32(2, 1, 3, 4), f32(5, 4, 6)
case("matmul_batch_bcast", [N("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", np.matmul(a, b))])
a, b = f32(4), f32(2, 4, 3)
case("matmul_1d_left", [N("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", np.matmul(a, b))])
a, b = f32(2, 3, 4), f32(4)
case("matmul_1d_right", [N("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", np.matmul(a, b))])
a, w, c = f32(3, 6), f32(5, 6), f32(5)
case("gemm_transb_bias", [N("Gemm", ["a", "w", "c"], ["y"], alpha=0.5, beta=2.0, transB=1)], [("a", a)],
     [("y", 0.5 * a @ w.T + 2.0 * c)], inits=[("w", w), ("c", c)])
a, w = f32(6, 3), f32(6, 4)
case("gemm_transa", [N("Gemm", ["a", "w"], ["y"], transA=1)], [("a", a), ("w", w)], [("y", a.T @ w)])

# ---- dynamic batch: x[N,4] @ W + b, then Relu; run with N = 3 ----
x, w, bias = f32(3, 4), f32(4, 3), f32(3)
case("dyn_batch_mlp", [N("MatMul", ["x", "w"], ["h"]), N("Add", ["h", "b"], ["z"]), N("Relu", ["z"], ["y"])],
     [("x", x)], [("y", np.maximum(x @ w + bias, 0))], inits=[("w", w), ("b", bias)],
     input_shapes=[["batch", 4]])

# ---- reductions ----
a = f32(2, 3, 4)
case("reduce_sum_axes_input", [N("ReduceSum", ["a", "ax"], ["y"], keepdims=0)], [("a", a)],
     [("y", a.sum(axis=(0, 2)))], inits=[("ax", np.array([0, -1], dtype=np.int64))])
case("reduce_mean_keep", [N("ReduceMean", ["a"], ["y"], axes=[1])], [("a", a)],
     [("y", a.mean(axis=1, keepdims=True))])
case("reduce_max_all", [N("ReduceMax", ["a"], ["y"], keepdims=0)], [("a", a)], [("y", np.array(a.max()))])

# ---- constant folding: a subgraph of constants is computed at load ----
c1, c2 = f32(4), f32(4)
a = f32(2, 4)
case("fold_constants", [N("Mul", ["c1", "c2"], ["p"]), N("Relu", ["p"], ["q"]), N("Add", ["a", "q"], ["y"])],
     [("a", a)], [("y", a + np.maximum(c1 * c2, 0))], inits=[("c1", c1), ("c2", c2)])

# ---- Constant node and an output that is also read by a later node ----
a = f32(3)
cst = helper.make_tensor("cv", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
case("constant_node_two_outputs", [N("Constant", [], ["k"], value=cst), N("Mul", ["a", "k"], ["m"]),
                                   N("Add", ["m", "m"], ["y"])],
     [("a", a)], [("m", a * np.array([1, 2, 3], np.float32)), ("y", 2 * a * np.array([1, 2, 3], np.float32))])

# ---- float16 model (a float16 constant): the f16_to_f32 pass makes the inner Cast to float16 cast to float32,
# so the Add after it sees float32 on both sides. Values are exact in float16, so ONNX's float16 result and
# the engine's float32 one agree exactly. ----
x16 = (rng.integers(-64, 64, (2, 5)) / 4).astype(np.float32)
c16 = (rng.integers(-64, 64, (5,)) / 8).astype(np.float16)
case("f16_const_inner_cast", [N("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), N("Add", ["h", "c"], ["s"]),
                              N("Cast", ["s"], ["y"], to=TensorProto.FLOAT)],
     [("x", x16)], [("y", x16 + c16.astype(np.float32))], inits=[("c", c16)])

# ---- opset 7 model (the oldest we accept) ----
a, b = f32(2, 3), f32(3)
case("opset7_add", [N("Add", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", a + b)], opset=7)

# ---- hostile / malformed models ----
H = os.path.join(OUT, "hostile")
os.makedirs(H, exist_ok=True)


def hostile(name, model_or_bytes, expect):
    path = os.path.join(H, name + ".onnx")
    if isinstance(model_or_bytes, bytes):
        open(path, "wb").write(model_or_bytes)
    else:
        open(path, "wb").write(model_or_bytes.SerializeToString())
    open(os.path.join(H, name + ".expect"), "w").write(expect)


def model(nodes, ins, outs, inits=(), opset=13):
    g = helper.make_graph(nodes, "h", ins, outs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
hostile("cycle", model([N("Add", ["x", "b"], ["a"]), N("Relu", ["a"], ["b"]), N("Relu", ["a"], ["y"])], [X], [Y]),
        "cycle")
hostile("missing_input", model([N("Add", ["x", "nowhere"], ["y"])], [X], [Y]), "nowhere")
hostile("unknown_op", model([N("FancyOp", ["x"], ["y"])], [X], [Y]), "FancyOp")
# the engine's own fused op (made by its passes only) cannot be named by a model file
hostile("internal_op", model([N("FusedAttention", ["x", "x", "x"], ["y"])], [X], [Y]), "FusedAttention")
hostile("unknown_domain", model([N("Relu", ["x"], ["y"], domain="com.example")], [X], [Y]), "com.example")
hostile("bad_attr", model([N("Relu", ["x"], ["y"], bogus=3)], [X], [Y]), "bogus")
hostile("old_opset", model([N("Relu", ["x"], ["y"])], [X], [Y], opset=5), "opset 5")
def raw_tensor(name, dims):
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(dims)
    return t


big = raw_tensor("w", [1 << 40, 1 << 40])
hostile("overflow_dims", model([N("Add", ["x", "w"], ["y"])], [X], [Y], [big]), "overflowing dimensions")
huge = raw_tensor("w", [1 << 20, 1 << 20])
hostile("huge_no_data", model([N("Add", ["x", "w"], ["y"])], [X], [Y], [huge]), "0 values for a shape")
short = numpy_helper.from_array(np.zeros(4, np.float32), "w")
short.raw_data = b"\0" * 8
hostile("short_raw", model([N("Add", ["x", "w"], ["y"])], [X], [Y], [short]), "raw_data")
ext = numpy_helper.from_array(np.zeros(2, np.float32), "w")
ext.ClearField("raw_data")
ext.data_location = TensorProto.EXTERNAL
e = ext.external_data.add()
e.key, e.value = "location", "../../etc/passwd"
hostile("external_escape", model([N("Add", ["x", "w"], ["y"])], [X], [Y], [ext]), "leaves the model folder")
hostile("shape_mismatch", model([N("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", 1, [2, 3])],
                                [Y], [numpy_helper.from_array(np.zeros((4, 5), np.float32), "w")]),
        "inner dimensions")
hostile("not_onnx", b"this is not a model at all, just text\n" * 4, "malformed")
hostile("empty", b"", "no graph")
# length field pointing far past the end
hostile("length_past_end", b"\x3a\xff\xff\xff\xff\x0f\x00\x00", "malformed")

# an output name that cannot stand in a file name as it is (hotserve run writes out_1_x.npy)
a = f32(2, 2)
case("odd_output_name", [N("Neg", ["a"], ["out/1:x"])], [("a", a)], [("out/1:x", -a)])

# a chain of 10 Relus on 256 KiB tensors: liveness lets the plan reuse two buffers (tested in C)
a = f32(1, 256, 256)
chain = [N("Relu", ["a"], ["r0"])] + [N("Relu", [f"r{i}"], [f"r{i + 1}"]) for i in range(9)]
case("relu_chain", chain[:-1] + [N("Relu", ["r8"], ["y"])], [("a", a)], [("y", np.maximum(a, 0))])

# exporter-style shape arithmetic on a dynamic batch: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
x = f32(3, 3, 4)
nodes = [N("Shape", ["x"], ["s"]), N("Gather", ["s", "zero"], ["n"], axis=0), N("Unsqueeze", ["n", "ax0"], ["n1"]),
         N("Concat", ["n1", "twelve"], ["shp"], axis=0), N("Reshape", ["x", "shp"], ["flat"]),
         N("Transpose", ["flat"], ["t"], perm=[1, 0]), N("Slice", ["t", "st", "en", "axs"], ["y"])]
case("dyn_shape_arith", nodes, [("x", x)], [("y", x.reshape(3, 12).T[2:10])],
     inits=[("zero", np.array(0, np.int64)), ("ax0", np.array([0], np.int64)), ("twelve", np.array([12], np.int64)),
            ("st", np.array([2], np.int64)), ("en", np.array([10], np.int64)), ("axs", np.array([0], np.int64))],
     input_shapes=[["batch", 3, 4]])

# Pad (reflect) then Resize (linear, half_pixel) then Concat with Softmax of the same
x = f32(1, 2, 3, 3)
xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
case("pad_reflect", [N("Pad", ["x", "pads"], ["y"], mode="reflect")], [("x", x)], [("y", xp)],
     inits=[("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
x = f32(2, 5)
e = np.exp(x - x.max(axis=1, keepdims=True))
case("softmax_concat", [N("Softmax", ["x"], ["s"], axis=1), N("Concat", ["x", "s"], ["y"], axis=0)], [("x", x)],
     [("y", np.concatenate([x, e / e.sum(axis=1, keepdims=True)], axis=0))])

# weights as external data beside the model (one in a sub-folder), as large exports store them
a, w, c = f32(2, 6), f32(6, 5), f32(5)
case("external_data", [N("MatMul", ["a", "w"], ["m"]), N("Add", ["m", "c"], ["y"])], [("a", a)], [("y", a @ w + c)],
     inits=[("w", w), ("c", c)], external="weights.bin")
case("external_data_subdir", [N("MatMul", ["a", "w"], ["m"]), N("Add", ["m", "c"], ["y"])], [("a", a)],
     [("y", a @ w + c)], inits=[("w", w), ("c", c)], external="data/weights.bin")

# external data through a symlink that leads out of the model folder
lnk = numpy_helper.from_array(np.zeros(2, np.float32), "w")
lnk.ClearField("raw_data")
lnk.data_location = TensorProto.EXTERNAL
e = lnk.external_data.add()
e.key, e.value = "location", "symlink_escape.bin"
link = os.path.join(H, "symlink_escape.bin")
if os.path.lexists(link):
    os.remove(link)
os.symlink("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd", link)
hostile("symlink_escape", model([N("Add", ["x", "w"], ["y"])], [X], [Y], [lnk]), "resolves outside the model folder")
# external data whose offset + length run past the end of its file
past = numpy_helper.from_array(np.zeros(2, np.float32), "w")
past.ClearField("raw_data")
past.data_location = TensorProto.EXTERNAL
for k, v in (("location", "past_end.bin"), ("offset", "4"), ("length", "8")):
    e = past.external_data.add()
    e.key, e.value = k, v
open(os.path.join(H, "past_end.bin"), "wb").write(b"\0" * 8)
hostile("external_past_end", model([N("Add", ["x", "w"], ["y"])], [X], [Y], [past]), "do not fit the file")

# a dynamic batch that must be a multiple of 3 (Reshape to [-1, 24]): the trial shapes at load (1, 2)
# cannot work, the model must still load, and run at batch 3
x = f32(3, 8)
case("dyn_multiple_of_3", [N("Reshape", ["x", "shp"], ["y"])], [("x", x)], [("y", x.reshape(-1, 24))],
     inits=[("shp", np.array([-1, 24], np.int64))], input_shapes=[["batch", 8]])

# recurrent ops (RNN, GRU, LSTM) over every attribute the spec defines, against rnn_ref.py's numpy reference
import rnn_ref  # noqa: E402  (beside this script)
rnn_ref.add_cases(case, N)

# opsets 18 to 21: the signatures that changed (onnx 1.12's checker knows opset 17 at most: check=False)
x = f32(2, 3, 4)
case("op18_reduce_mean_axes_input", [N("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], [("x", x)],
     [("y", x.mean(axis=(0, 2)))], inits=[("axes", np.array([0, -1], np.int64))], opset=18, check=False)
case("op18_reduce_max_no_axes_noop", [N("ReduceMax", ["x"], ["y"], noop_with_empty_axes=1)], [("x", x)],
     [("y", x)], opset=18, check=False)
case("op18_reduce_l2_all", [N("ReduceL2", ["x"], ["y"])], [("x", x)],
     [("y", np.sqrt((x.astype(np.float64) ** 2).sum(keepdims=True)).astype(np.float32))], opset=18, check=False)
x = f32(7, 2)
case("op18_split_num_outputs", [N("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3)], [("x", x)],
     [("a", x[:3]), ("b", x[3:6]), ("c", x[6:])], opset=18, check=False)
x = f32(2, 3)
case("op18_pad_axes", [N("Pad", ["x", "pads", "", "axes"], ["y"])], [("x", x)],
     [("y", np.pad(x, ((0, 0), (1, 2))))],
     inits=[("pads", np.array([1, 2], np.int64)), ("axes", np.array([-1], np.int64))], opset=18, check=False)
x = f32(1, 1, 2, 2)
case("op19_resize_defaults", [N("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest", antialias=0,
                                 keep_aspect_ratio_policy="stretch")], [("x", x)],
     [("y", x.repeat(2, axis=2).repeat(2, axis=3))], inits=[("sizes", np.array([1, 1, 4, 4], np.int64))], opset=19,
     check=False)
a, b = f32(3, 4), f32(4)
case("op21_add_relu", [N("Add", ["a", "b"], ["s"]), N("Relu", ["s"], ["y"])], [("a", a), ("b", b)],
     [("y", np.maximum(a + b, 0))], opset=21, check=False)
XR = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
YR = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
sizes = numpy_helper.from_array(np.array([1, 1, 4, 4], np.int64), "sizes")
hostile("resize_antialias", model([N("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", antialias=1)], [XR],
                                  [YR], [sizes], opset=18), "antialias=1 is not implemented")
hostile("newer_opset", model([N("Relu", ["x"], ["y"])], [X], [Y], opset=22), "opset 22")

# ops that opset-18+ exporters emit: GroupNormalization (18: scale/bias per group; 21: per channel), Mish, Gelu
x = f32(2, 6, 3, 2)
xg = x.reshape(2, 3, -1).astype(np.float64)
norm = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + 1e-5)).reshape(x.shape)
sg, bg = f32(3), f32(3)
case("op18_group_norm", [N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)], [("x", x)],
     [("y", (norm * np.repeat(sg, 2)[None, :, None, None] + np.repeat(bg, 2)[None, :, None, None]).astype(np.float32))],
     inits=[("s", sg), ("b", bg)], opset=18, check=False)
sc, bc = f32(6), f32(6)
case("op21_group_norm", [N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-5)], [("x", x)],
     [("y", (norm * sc[None, :, None, None] + bc[None, :, None, None]).astype(np.float32))],
     inits=[("s", sc), ("b", bc)], opset=21, check=False)
x = f32(3, 5) * 3
case("op18_mish", [N("Mish", ["x"], ["y"])], [("x", x)],
     [("y", (x * np.tanh(np.log1p(np.exp(x.astype(np.float64))))).astype(np.float32))], opset=18, check=False)
erf = np.vectorize(__import__("math").erf)
case("op20_gelu", [N("Gelu", ["x"], ["y"]), N("Gelu", ["x"], ["z"], approximate="tanh")], [("x", x)],
     [("y", (0.5 * x * (1 + erf(x / np.sqrt(2)))).astype(np.float32)),
      ("z", (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)))).astype(np.float32))],
     opset=20, check=False)

# opset-18 Bitwise ops on integers, broadcasting
a = rng.integers(-1000, 1000, (3, 4)).astype(np.int32)
b = rng.integers(-1000, 1000, (4,)).astype(np.int32)
u = rng.integers(0, 255, (2, 3)).astype(np.uint8)
case("op18_bitwise", [N("BitwiseAnd", ["a", "b"], ["y_and"]), N("BitwiseOr", ["a", "b"], ["y_or"]),
                      N("BitwiseXor", ["a", "b"], ["y_xor"]), N("BitwiseNot", ["u"], ["y_not"])],
     [("a", a), ("b", b), ("u", u)],
     [("y_and", a & b), ("y_or", a | b), ("y_xor", a ^ b), ("y_not", ~u)], opset=18, check=False)

# ---- control flow: If, Loop, Scan (subgraphs, outer-scope references, loop-carried values) ----
G = helper.make_graph
T = helper.make_tensor_value_info
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL

# If whose branches read outer-scope values (input x, initializer w); the else branch holds a nested If that
# reads x from two scopes up. One case per branch.
x, w = f32(2, 3), f32(3)
inner_then = G([N("Neg", ["x"], ["n"])], "inner_then", [], [T("n", F, None)])
inner_else = G([N("Abs", ["x"], ["n"])], "inner_else", [], [T("n", F, None)])
then_b = G([N("Add", ["x", "w"], ["t"])], "then", [], [T("t", F, None)])
else_b = G([N("Mul", ["x", "x"], ["sq"]), N("If", ["c"], ["n"], then_branch=inner_then, else_branch=inner_else),
            N("Sub", ["sq", "n"], ["e"])], "else", [], [T("e", F, None)])
if_nodes = [N("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b)]
case("if_outer_then", if_nodes, [("c", np.array(True)), ("x", x)], [("y", x + w)], inits=[("w", w)])
case("if_outer_else", if_nodes, [("c", np.array(False)), ("x", x)], [("y", x * x - np.abs(x))], inits=[("w", w)])

# Loop with a trip count of 10 that its body's condition ends after 4 iterations (iter < 3); a carried value,
# a scan output stacked along a new axis 0, and a carried value that grows by one element per iteration.
x = f32(3)
body = G([N("Cast", ["i"], ["fi"], to=F), N("Mul", ["x", "fi"], ["xi"]), N("Add", ["s", "xi"], ["s2"]),
          N("Less", ["i", "three"], ["c2"]), N("Unsqueeze", ["fi", "ax0"], ["fi1"]),
          N("Concat", ["grow", "fi1"], ["grow2"], axis=0), N("Identity", ["s2"], ["scan"])],
         "body", [T("i", I64, []), T("c", B, []), T("s", F, [3]), T("grow", F, None)],
         [T("c2", B, []), T("s2", F, [3]), T("grow2", F, None), T("scan", F, [3])],
         [numpy_helper.from_array(np.array(3, np.int64), "three"), numpy_helper.from_array(np.array([0], np.int64), "ax0")])
s, rows = np.zeros(3, np.float32), []
for i in range(4):
    s = s + x * np.float32(i)
    rows.append(s)
case("loop_early_exit", [N("Loop", ["M", "cond", "s0", "g0"], ["s", "grow", "scan"], body=body)],
     [("x", x)], [("s", s), ("grow", np.array([-1, 0, 1, 2, 3], np.float32)), ("scan", np.stack(rows))],
     inits=[("M", np.array(10, np.int64)), ("cond", np.array(True)), ("s0", np.zeros(3, np.float32)),
            ("g0", np.array([-1], np.float32))])

# Scan: one state, scan input a along axis 1 forwards and b along axis 0 backwards; output 0 stacked along axis 1
# in reverse, output 1 along axis 0; the body reads the outer-scope k.
a, b, k = f32(2, 4), f32(4, 2), f32(2)
body = G([N("Mul", ["at", "bt"], ["ab"]), N("Add", ["st", "ab"], ["st2"]), N("Identity", ["st2"], ["so"]),
          N("Mul", ["at", "k"], ["ak"])], "scan_body", [T("st", F, [2]), T("at", F, [2]), T("bt", F, [2])],
         [T("st2", F, [2]), T("so", F, [2]), T("ak", F, [2])])
st, o0, o1 = np.zeros(2, np.float32), np.zeros((2, 4), np.float32), np.zeros((4, 2), np.float32)
for t in range(4):
    st = st + a[:, t] * b[3 - t]
    o0[:, 3 - t] = st
    o1[t] = a[:, t] * k
case("scan_axes_directions", [N("Scan", ["s0", "a", "b"], ["st", "o0", "o1"], body=body, num_scan_inputs=2,
                                    scan_input_axes=[1, 0], scan_input_directions=[0, 1], scan_output_axes=[1, 0],
                                    scan_output_directions=[1, 0])],
     [("a", a), ("b", b)], [("st", st), ("o0", o0), ("o1", o1)], inits=[("s0", np.zeros(2, np.float32)), ("k", k)],
     opset=11)

# the same Scan with its middle output omitted: the op still writes it, somewhere the graph does not keep
case("scan_output_omitted", [N("Scan", ["s0", "a", "b"], ["st", "", "o1"], body=body, num_scan_inputs=2,
                                   scan_input_axes=[1, 0], scan_input_directions=[0, 1], scan_output_axes=[1, 0],
                                   scan_output_directions=[1, 0])],
     [("a", a), ("b", b)], [("st", st), ("o1", o1)], inits=[("s0", np.zeros(2, np.float32)), ("k", k)], opset=11)

# If on a constant condition: the live branch is inlined before compiling, and the dead one (an op the engine does
# not know: compiling it would refuse the model) is dropped unseen
x = f32(4)
dead = G([N("FancyOp", ["x"], ["d"])], "dead", [], [T("d", F, None)])
live = G([N("Relu", ["x"], ["l"])], "live", [], [T("l", F, None)])
case("if_const_cond", [N("If", ["c"], ["y"], then_branch=live, else_branch=dead)], [("x", x)],
     [("y", np.maximum(x, 0))], inits=[("c", np.array(True))], check=False)

# hostile control flow
one = G([N("Relu", ["x"], ["y"])], "one", [], [T("y", F, None)])
two = G([N("Relu", ["x"], ["y"]), N("Neg", ["x"], ["z"])], "two", [], [T("y", F, None), T("z", F, None)])
C = T("c", B, [])
hostile("if_branch_outputs", model([N("If", ["c"], ["y"], then_branch=one, else_branch=two)], [C, X], [Y]),
        "else branch has 2 outputs")
hostile("loop_body_inputs", model([N("Loop", ["", "", "x"], ["y"], body=one)], [X], [Y]), "the body takes 0 inputs")
hostile("if_runtime_cond_unknown_op", model([N("If", ["c"], ["y"], then_branch=live, else_branch=dead)],
                                            [C, helper.make_tensor_value_info("x", F, [4])],
                                            [helper.make_tensor_value_info("y", F, [4])]), "FancyOp")
# a Loop with neither a trip count nor a condition that ever ends: refused once it passes the iteration limit
forever = G([N("Identity", ["c"], ["c2"]), N("Add", ["v", "one"], ["v2"])], "forever",
            [T("i", I64, []), T("c", B, []), T("v", F, [2])], [T("c2", B, []), T("v2", F, [2])],
            [numpy_helper.from_array(np.ones(2, np.float32), "one")])
os.makedirs(os.path.join(OUT, "runtime"), exist_ok=True)  # models that load and fail when run (test_onnx.c)
onnx.save(model([N("Loop", ["", "", "x"], ["y"], body=forever)], [X], [Y]), os.path.join(OUT, "runtime", "loop_forever.onnx"))
hostile("subgraph_unknown_op", model([N("If", ["c"], ["y"], then_branch=one,
                                        else_branch=G([N("FancyOp", ["x"], ["y"])], "f", [], [T("y", F, None)]))],
                                     [C, X], [Y]), "FancyOp")

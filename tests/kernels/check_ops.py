#!/usr/bin/python3
"""check_ops.py - runs ONNX's own Conv/ConvTranspose/pool/norm cases through `hotserve run`, comparing as ONNX does.

Each case from Debian's libonnx-testdata runs three ways:
  asis      the model as shipped (node tests give weights as runtime inputs: the plain-C path);
  const     every input but the first made an initializer (the oneDNN kernel path);
  fused     `const` plus extra nodes that the fusion passes fold into the kernel (an activation after
            the op, and for Conv, MatMul and Gemm a residual Add), with the expected output computed here by numpy.
Ops with a single input (pooling, Softmax) have no `const` variant: their `asis` run already takes
the kernel path, so it runs in strict mode (HS_KERNELS_STRICT=1) too; so do `const` and `fused`.
Cases using a feature the engine refuses by design (UNSUPPORTED below) must fail to load with the
stated message; they are counted apart, and one that starts to run is a failure (update the list).
--generated adds this file's own cases of the pool/softmax/norm/resize ops (bigger shapes, batch sizes
above 1, broadcasting scales), with expected outputs from torch, all in strict mode.
Usage: check_ops.py HOTSERVE WORKDIR [--ops Conv,ConvTranspose,...] [--generated]
Prints one line per case and 'N passed, N failed'; exits non-zero on any failure.
"""
import os
import re
import subprocess
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

DATA = "/usr/share/libonnx-testdata/data"
SUITES = ["node", "pytorch-converted", "pytorch-operator"]

# case-name pattern -> the load error the engine must give (features it does not implement)
UNSUPPORTED = {
    r"test_maxpool_2d_uint8$": "input of type UINT8 is not supported",
    r"test_maxpool_with_argmax_": "(the Indices output|storage_order 1) is not supported",
    r"_training_mode$": "training_mode is not supported",
}


def refused_by_design(label):
    for pat, msg in UNSUPPORTED.items():
        if re.search(pat, label):
            return msg
    return None


def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def case_dirs(ops):
    for suite in SUITES:
        root = os.path.join(DATA, suite)
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            d = os.path.join(root, name)
            mp = os.path.join(d, "model.onnx")
            if not os.path.exists(mp) or not os.path.isdir(os.path.join(d, "test_data_set_0")):
                continue
            try:
                m = onnx.load(mp)
            except Exception:
                continue
            types = {n.op_type for n in m.graph.node}
            if types and types <= set(ops) and any(t in ops for t in types):
                yield suite + "/" + name, d, m


def close(a, e):
    if a.dtype != e.dtype or a.shape != e.shape:
        return False, "dtype/shape %s%s vs %s%s" % (a.dtype, a.shape, e.dtype, e.shape)
    diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    bad = diff > 1e-7 + 1e-3 * np.abs(e.astype(np.float64))
    if bad.any():
        i = np.argmax(bad)
        return False, "element %d: %g vs %g" % (i, a.flat[i], e.flat[i])
    return True, ""


def run_model(hotserve, model, inputs, outdir, expect_kernel=False):
    os.makedirs(outdir, exist_ok=True)
    mp = os.path.join(outdir, "model.onnx")
    onnx.save(model, mp)
    args = [hotserve, "run", mp, "--output-dir", outdir, "--threads", "2"]
    for name, arr in inputs.items():
        p = os.path.join(outdir, "in_%s.npy" % "".join(c if c.isalnum() else "_" for c in name))
        np.save(p, arr)
        args += ["--input", "%s=%s" % (name, p)]
    env = dict(os.environ)
    if expect_kernel:
        env["HS_KERNELS_STRICT"] = "1"  # a missing oneDNN kernel is then an error, not a fallback
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "exit %d" % r.returncode
    outs = []
    for o in model.graph.output:
        p = os.path.join(outdir, "".join(c if (c.isalnum() or c in "._-") else "_" for c in o.name) + ".npy")
        outs.append(np.load(p))
    return outs, ""


def make_const(model, inputs):
    """Moves every graph input but the first into the initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    keep = []
    init_names = {i.name for i in g.initializer}
    real = [i for i in g.input if i.name not in init_names]
    for k, inp in enumerate(real):
        if k == 0:
            keep.append(inp)
            continue
        g.initializer.append(numpy_helper.from_array(inputs[inp.name], inp.name))
    del g.input[:]
    g.input.extend(keep + [i for i in model.graph.input if i.name in init_names])
    return m, {real[0].name: inputs[real[0].name]}


def add_fusions(model, first_input, expected, op):
    """Appends Relu (and for Conv, MatMul, Gemm a residual Add of a new input) after the single output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    out = g.output[0]
    y = expected.astype(np.float32)
    extra = {}
    last = out.name
    if op in ("Conv", "MatMul", "Gemm"):
        res = np.random.default_rng(7).standard_normal(y.shape).astype(np.float32)
        g.input.append(helper.make_tensor_value_info("residual_in", onnx.TensorProto.FLOAT, list(y.shape)))
        g.node.append(helper.make_node("Add", [last, "residual_in"], ["fz_add"]))
        extra["residual_in"] = res
        y = y + res
        last = "fz_add"
    g.node.append(helper.make_node("Relu", [last], ["fz_relu"]))
    y = np.maximum(y, 0)
    new_out = helper.make_tensor_value_info("fz_relu", onnx.TensorProto.FLOAT, list(y.shape))
    del g.output[:]
    g.output.append(new_out)
    return m, extra, y


# ---- generated cases: larger shapes and batch sizes than ONNX's, expected outputs from torch ----

def one_node(op, inputs, consts, attrs, opset, out_shape):
    """A model with one node: inputs (name -> array) are graph inputs, consts become initializers."""
    t = onnx.TensorProto.FLOAT
    names = list(inputs) + [k if v is not None else "" for k, v in consts.items()]  # "": omitted
    node = helper.make_node(op, names, ["y"], **attrs)
    g = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, t, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", t, list(out_shape))],
        [numpy_helper.from_array(v, k) for k, v in consts.items() if v is not None])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def generated_cases():
    """Yields (label, model, inputs, expected, refusal): refusal is None when strict mode must pass,
    else the message a strict run must fail with (then a normal run must still be right)."""
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(11)

    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def tt(a):
        return torch.from_numpy(a)

    def case(label, op, x, attrs, expected, opset=13, consts=None, refusal=None):
        m = one_node(op, {"x": x}, consts or {}, attrs, opset, expected.shape)
        return label, m, {"x": x}, expected.astype(np.float32), refusal

    x = rand(3, 16, 33, 31)
    yield case("maxpool_3x3_s2_p1_batch3", "MaxPool", x, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
               F.max_pool2d(tt(x), 3, 2, 1).numpy())
    yield case("maxpool_ceil", "MaxPool", x, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
               F.max_pool2d(tt(x), 3, 2, 0, ceil_mode=True).numpy())
    x1 = rand(2, 5, 40)
    yield case("maxpool_1d_dilation", "MaxPool", x1, dict(kernel_shape=[3], strides=[2], dilations=[2], pads=[1, 1]),
               F.max_pool1d(tt(x1), 3, 2, 1, dilation=2).numpy())
    x = rand(2, 8, 15, 17)
    for cip in (0, 1):
        yield case("avgpool_p1_cip%d" % cip, "AveragePool", x,
                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=cip),
                   F.avg_pool2d(tt(x), 3, 2, 1, count_include_pad=bool(cip)).numpy())
    yield case("avgpool_ceil_cip0", "AveragePool", x,
               dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
               F.avg_pool2d(tt(x), 3, 2, 1, ceil_mode=True, count_include_pad=False).numpy())
    x = rand(2, 8, 16, 16)  # the last window passes the padding: the kernel would count it
    yield case("avgpool_ceil_cip1", "AveragePool", x,
               dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
               F.avg_pool2d(tt(x), 3, 2, 1, ceil_mode=True, count_include_pad=True).numpy(),
               refusal="count_include_pad with ceil_mode")
    # the same refusal between blocked-layout convs: the plain-C fallback reads and writes that layout
    w1, w2 = rand(8, 8, 3, 3), rand(8, 8, 1, 1)
    t = onnx.TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("AveragePool", ["c1"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                          ceil_mode=1, count_include_pad=1),
         helper.make_node("Conv", ["p", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", t, list(x.shape))], [helper.make_tensor_value_info("y", t, None)],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    y = F.conv2d(F.avg_pool2d(F.conv2d(tt(x), tt(w1), padding=1), 3, 2, 1, ceil_mode=True, count_include_pad=True),
                 tt(w2)).numpy()
    yield ("conv_avgpool_ceil_cip1_conv", helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), {"x": x},
           y, "count_include_pad with ceil_mode")
    x = rand(3, 24, 7, 7)
    yield case("globalavgpool", "GlobalAveragePool", x, {}, x.mean(axis=(2, 3), keepdims=True))
    x = rand(2, 8, 5, 6, 3)
    yield case("globalmaxpool_3d", "GlobalMaxPool", x, {}, x.max(axis=(2, 3, 4), keepdims=True))

    x = rand(4, 7, 1000)
    yield case("softmax_last", "Softmax", x, dict(axis=-1), F.softmax(tt(x), -1).numpy())
    x = rand(2, 5, 3, 4)
    yield case("softmax_axis1", "Softmax", x, dict(axis=1), F.softmax(tt(x), 1).numpy())
    yield case("logsoftmax_axis0", "LogSoftmax", x, dict(axis=0), F.log_softmax(tt(x), 0).numpy())
    yield case("logsoftmax_opset11_axis1", "LogSoftmax", x, dict(axis=1),
               F.log_softmax(tt(x).reshape(2, 60), 1).reshape(x.shape).numpy(), opset=11)
    yield case("softmax_opset11_axis0", "Softmax", x, dict(axis=0),
               F.softmax(tt(x).reshape(1, 120), 1).reshape(x.shape).numpy(), opset=11)

    x = rand(3, 16, 64)
    sc, b = rand(64), rand(64)
    yield case("layernorm_last", "LayerNormalization", x, dict(axis=-1, epsilon=1e-5),
               F.layer_norm(tt(x), (64,), tt(sc), tt(b)).numpy(), opset=17, consts={"s": sc, "b": b})
    sc2 = rand(1, 64)
    yield case("layernorm_axis1_broadcast_scale", "LayerNormalization", x, dict(axis=1, epsilon=1e-3),
               F.layer_norm(tt(x), (16, 64), tt(np.broadcast_to(sc2, (16, 64)).copy()), None, eps=1e-3).numpy(),
               opset=17, consts={"s": sc2})
    x = rand(3, 8, 9, 10)
    p = [rand(8), rand(8), rand(8), np.abs(rand(8)) + 0.1]
    yield case("batchnorm_4d", "BatchNormalization", x, dict(epsilon=1e-4),
               F.batch_norm(tt(x), tt(p[2]), tt(p[3]), tt(p[0]), tt(p[1]), eps=1e-4).numpy(), opset=15,
               consts=dict(zip("sbmv", p)))
    x = rand(5, 8)
    yield case("batchnorm_2d", "BatchNormalization", x, {},
               F.batch_norm(tt(x), tt(p[2]), tt(p[3]), tt(p[0]), tt(p[1])).numpy(), opset=15,
               consts=dict(zip("sbmv", p)))

    def resize(label, x, mode, out_sizes, tmode, **attrs):
        sizes = np.array(list(x.shape[:2]) + list(out_sizes), np.int64)
        if tmode == "nearest":
            y = F.interpolate(tt(x), size=tuple(out_sizes), mode="nearest").numpy()
        else:
            y = F.interpolate(tt(x), size=tuple(out_sizes), mode=tmode, align_corners=False).numpy()
        m = one_node("Resize", {"x": x}, {"roi": None, "scales": None, "sizes": sizes}, dict(mode=mode, **attrs), 13,
                     y.shape)
        return label, m, {"x": x}, y, None

    x = rand(2, 3, 5, 4)
    yield resize("resize_nearest_asym_floor_x3x2", x, "nearest", (15, 8), "nearest",
                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    yield resize("resize_nearest_half_pixel_x4", x, "nearest", (20, 16), "nearest")
    yield resize("resize_nearest_downsample_plain_c", x, "nearest", (2, 3), "nearest",
                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    yield resize("resize_linear_up_7x9", x, "linear", (7, 9), "bilinear")
    yield resize("resize_linear_down_3x2", x, "linear", (3, 2), "bilinear")
    x = rand(1, 2, 3, 4, 5)
    yield resize("resize_trilinear", x, "linear", (5, 6, 9), "trilinear")


def check_pool_layouts(hotserve, work):
    """Conv -> MaxPool -> Conv -> GlobalAveragePool: the pools must keep the convs' preferred layout
    (HS_KERNELS_VERBOSE names each conv kernel's layouts), and the answer must be torch's."""
    import torch.nn.functional as F
    import torch
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 17, 17)).astype(np.float32)
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 16, 3, 3)) * 0.2).astype(np.float32)
    t = onnx.TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("MaxPool", ["c1"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["p", "w2"], ["c2"], pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["c2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", t, list(x.shape))], [helper.make_tensor_value_info("y", t, [2, 16, 1, 1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    outdir = os.path.join(work, "layout_pools")
    os.makedirs(outdir, exist_ok=True)
    onnx.save(m, os.path.join(outdir, "model.onnx"))
    np.save(os.path.join(outdir, "x.npy"), x)
    # the blocked layout forced, so the expectation does not depend on the CPU
    env = dict(os.environ, HS_KERNELS_STRICT="1", HS_KERNELS_VERBOSE="1", HS_KERNELS_LAYOUT="blocked")
    r = subprocess.run([hotserve, "run", os.path.join(outdir, "model.onnx"), "--input", "x=" + os.path.join(outdir, "x.npy"),
                        "--output-dir", outdir, "--threads", "2"], capture_output=True, text=True, timeout=300, env=env)
    convs = re.findall(r"conv ic \d+ oc \d+ .* (\w+)->(\w+) post", r.stderr)
    ok, why = r.returncode == 0 and len(convs) == 2, r.stderr.strip()[-300:]
    # the MaxPool reads and writes the blocked layout, so the second conv reads it; the global pool
    # reads the second conv's output in it too
    if ok and convs != [("nchw", "nChw8c"), ("nChw8c", "nChw8c")]:
        ok, why = False, "conv layouts %s, expected nchw->nChw8c, nChw8c->nChw8c" % convs
    if ok:
        y = F.conv2d(F.max_pool2d(F.conv2d(torch.from_numpy(x), torch.from_numpy(w1), padding=1), 3, 2, 1),
                     torch.from_numpy(w2), padding=1).mean(dim=(2, 3), keepdim=True).numpy()
        ok, why = close(np.load(os.path.join(outdir, "y.npy")), y)
    print("%s gen/pool_layouts [strict, blocked]%s" % ("PASS" if ok else "FAIL", "" if ok else ": " + why))
    return ok


def run_generated(hotserve, work):
    ok = check_pool_layouts(hotserve, work)
    passed, failed = int(ok), int(not ok)
    for label, m, ins, exp, refusal in generated_cases():
        outdir = os.path.join(work, "gen_" + label)
        outs, why = run_model(hotserve, m, ins, outdir, expect_kernel=True)
        if refusal:
            ok = outs is None and refusal in why
            why = why if not ok else ""
            if ok:  # the plain-C fallback must still give the right answer
                outs, why = run_model(hotserve, m, ins, outdir + "_plain")
        if outs is not None:
            ok, why = close(outs[0], exp)
        else:
            ok = False
        print("%s gen/%s [strict%s]%s" % ("PASS" if ok else "FAIL", label, ", refused" if refusal else "",
                                        "" if ok else ": " + why))
        passed += ok
        failed += not ok
    return passed, failed


def main():
    hotserve, work = sys.argv[1], sys.argv[2]
    ops = [] if sys.argv[3:] == ["--generated"] else ["Conv", "ConvTranspose"]  # --generated alone: only those
    if len(sys.argv) > 4 and sys.argv[3] == "--ops":
        ops = sys.argv[4].split(",")
    passed = failed = skipped = refused = 0
    if "--generated" in sys.argv:
        passed, failed = run_generated(hotserve, work)
    for label, d, model in case_dirs(ops):
        opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
        if opset < 7:  # the engine supports opsets 7 to 17
            skipped += 1
            continue
        ds = os.path.join(d, "test_data_set_0")
        init_names = {i.name for i in model.graph.initializer}
        real = [i for i in model.graph.input if i.name not in init_names]
        inputs = {}
        for k, inp in enumerate(real):
            inputs[inp.name] = load_pb(os.path.join(ds, "input_%d.pb" % k))
        expected = [load_pb(os.path.join(ds, "output_%d.pb" % k)) for k in range(len(model.graph.output))]
        variants = [("asis", model, inputs, expected)]
        if len(real) > 1:
            cm, cin = make_const(model, inputs)
            variants.append(("const", cm, cin, expected))
        else:
            cm, cin = model, inputs
        single = [n.op_type for n in model.graph.node]
        if len(single) == 1 and len(model.graph.output) == 1 and expected[0].dtype == np.float32:
            fm, extra, fy = add_fusions(cm, list(cin)[0], expected[0], single[0])
            fin = dict(cin)
            fin.update(extra)
            variants.append(("fused", fm, fin, [fy]))
        for vname, m, ins, exp in variants:
            outdir = os.path.join(work, label.replace("/", "_"), vname)
            outs, why = run_model(hotserve, m, ins, outdir, expect_kernel=(vname != "asis" or len(real) == 1))
            want = refused_by_design(label)
            if want:
                ok = outs is None and re.search(want, why) is not None
                if ok:
                    refused += 1
                    print("UNSUPPORTED %s [%s]: %s" % (label, vname, why))
                    continue
                why = why or "ran, but the case is listed as unsupported: update UNSUPPORTED"
            ok = outs is not None and not want
            if ok:
                for a, e in zip(outs, exp):
                    good, why = close(a, e)
                    ok = ok and good
            print("%s %s [%s]%s" % ("PASS" if ok else "FAIL", label, vname, "" if ok else ": " + why))
            if ok:
                passed += 1
            else:
                failed += 1
    print("%d passed, %d failed, %d skipped, %d refused as unsupported" % (passed, failed, skipped, refused))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

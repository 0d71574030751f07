#!/usr/bin/python3
"""quantize.py - calibrated QDQ (QuantizeLinear / DequantizeLinear) int8 models of the benchmark CNNs and the BERT-style
encoder, and their accuracy.

    quantize.py --hotserve BIN --cache DIR --out DIR [--models resnet50 mobilenet_v2] [--calib-batches 4]
                [--samples 64] [--report FILE] [--literal] [--calib-images FILE.npy]

For each model (the dynamic-batch float32 export in the model cache DIR, from tools/models/make_models.py):
  1. calibration: the float model runs through `hotserve run` on generated inputs (fixed-seed normal images, a
     seed other than the benchmark inputs'; or the images of --calib-images FILE.npy), with every tensor to be
     quantized made an extra graph output; each tensor's range is its min / max over all calibration images
     (widened to include 0);
  2. the QDQ model: every Conv's input and its output (after its Relu / Clip when that is the only reader) is
     quantized per tensor to uint8 (scale (max - min) / 255, zero point round(-min / scale): 0 for ReLU outputs) and
     read through DequantizeLinear by all its readers; weights become int8 constants, symmetric per output channel
     (scale max|w| / 127, DequantizeLinear axis 0); biases int32 constants with scale x_scale * w_scale[c] (what
     QLinearConv's B is), read through DequantizeLinear. Other ops (Add, pools, Gemm) stay float32 and read the
     dequantized values. The encoder (bert_encoder) instead quantizes the MatMuls with a constant weight (the Q, K,
     V, output and FFN Linears; the attention's two activation x activation MatMuls stay float32): each one's input
     per tensor to uint8 as above, read through DequantizeLinear by the MatMuls only (the residual stream and the
     LayerNorms keep float32), and its weight [K, N] int8, symmetric per column (scale max|w[:, j]| / 127,
     DequantizeLinear axis 1); the bias Adds stay float32 (the engine's QDQ pass folds them into the int8 MatMul).
     Written as OUT/NAME_int8.onnx;
     with --literal also OUT/NAME_int8_literal.onnx: the same graph with the weights' DequantizeLinear folded into
     float32 constants, so no engine pass recognises it and the QDQ graph runs as written, in float32 (the
     reference tests/models compares the int8 path against);
  3. accuracy: top-1 agreement of the int8 model with the float32 model, both run by hotserve, on the benchmark
     inputs (ref/NAME_b1, ref/NAME_b8 of cases.json) and on --samples further generated images; printed as a
     markdown table (and written to --report). For the encoder: per token, whether the largest of the 768 output
     features is the same one, the largest absolute difference, and the relative L2 distance of the outputs.
Uses numpy and Debian's python3-onnx; no ONNX Runtime and no downloads.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CALIB_SEED = 1234
SAMPLE_SEED = 4321
MODELS = {"resnet50": "resnet50_dyn.onnx", "mobilenet_v2": "mobilenet_v2_dyn.onnx", "bert_encoder": "bert_encoder.onnx"}
ENCODERS = {"bert_encoder"}  # MatMul models: their Linears are quantized, not Convs
# one calibration batch and one generated sample (the benchmark inputs are normal(0, 1) images / token vectors)
SHAPES = {"resnet50": (8, 3, 224, 224), "mobilenet_v2": (8, 3, 224, 224), "bert_encoder": (4, 128, 768)}


def hotserve_run(hotserve, model_path, inputs, threads=2):
    """Runs `hotserve run` and returns {output name: array}."""
    with tempfile.TemporaryDirectory(prefix="hs-quant-") as d:
        args = [hotserve, "run", model_path, "--output-dir", d, "--threads", str(threads)]
        for i, (name, arr) in enumerate(inputs.items()):
            p = os.path.join(d, "in%d.npy" % i)
            np.save(p, arr)
            args += ["--input", "%s=%s" % (name, p)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError("hotserve run %s failed: %s" % (model_path, r.stderr.strip()[-400:]))
        outs = {}
        for f in os.listdir(d):
            if f.endswith(".npy") and not f.startswith("in"):
                outs[f[:-4]] = np.load(os.path.join(d, f))
        return outs


def safe_name(name):
    return "".join(c if (c.isalnum() or c in "._-") else "_" for c in name)


def consumers(graph, name):
    return [n for n in graph.node if name in n.input]


def weight_matmuls(graph):
    """MatMul nodes whose second input is a 2-D initializer (a Linear's weight)."""
    inits = {t.name: t for t in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def tensors_to_quantize(graph, encoder=False):
    """Conv inputs, and each Conv's output after its Relu / Clip when that is its only reader; for an encoder, the
    inputs of the weight MatMuls."""
    names = [n.input[0] for n in weight_matmuls(graph)] if encoder else []
    for n in graph.node:
        if n.op_type != "Conv":
            continue
        names.append(n.input[0])
        out = n.output[0]
        readers = consumers(graph, out)
        if len(readers) == 1 and readers[0].op_type in ("Relu", "Clip"):
            out = readers[0].output[0]
        names.append(out)
    seen, result = set(), []
    for t in names:
        if t not in seen:
            seen.add(t)
            result.append(t)
    return result


SAMPLES_PER_BATCH = 200000


def calibrate(hotserve, model, path, names, shape, batches, percentile=100.0, images=None):
    """The range of each named tensor over `batches` generated batches (or, given images, over those images in
    batches of shape[0]): min / max, or with percentile < 100 the (100 - percentile, percentile) percentiles of a
    random sample of its values (outliers clipped)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    graph_inputs = {i.name for i in m.graph.input}
    for t in names:
        if t not in have and t not in graph_inputs:
            m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    calib_path = path + ".calib.onnx"
    onnx.save(m, calib_path)
    rng = np.random.default_rng(CALIB_SEED)
    pick = np.random.default_rng(CALIB_SEED + 1)
    lo = {t: 0.0 for t in names}
    hi = {t: 0.0 for t in names}
    samples = {t: [] for t in names}
    in_name = model.graph.input[0].name
    try:
        todo = ([images[i:i + shape[0]] for i in range(0, images.shape[0], shape[0])] if images is not None
                else [None] * batches)
        for x in todo:
            if x is None:
                x = rng.standard_normal(shape).astype(np.float32)
            outs = hotserve_run(hotserve, calib_path, {in_name: x})
            for t in names:
                a = (x if t == in_name else outs[safe_name(t)]).ravel()
                lo[t] = min(lo[t], float(a.min()))
                hi[t] = max(hi[t], float(a.max()))
                if percentile < 100:
                    samples[t].append(a[pick.integers(0, a.size, size=min(a.size, SAMPLES_PER_BATCH))])
    finally:
        os.remove(calib_path)
    if percentile < 100:
        for t in names:
            v = np.concatenate(samples[t])
            lo[t] = min(0.0, float(np.percentile(v, 100 - percentile)))
            hi[t] = max(0.0, float(np.percentile(v, percentile)))
    return lo, hi


def uint8_params(lo, hi):
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def dequantize_const(base, q, scale, zp_dtype):
    """Initializers BASE_q, BASE_scale and a zero BASE_zp of zp_dtype, and the DequantizeLinear (axis 0) that reads
    them into BASE_dq."""
    inits = [numpy_helper.from_array(q, base + "_q"), numpy_helper.from_array(scale, base + "_scale"),
             numpy_helper.from_array(np.zeros(scale.shape, zp_dtype), base + "_zp")]
    node = helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zp"], [base + "_dq"],
                            name=base + "_DequantizeLinear", axis=0)
    return inits, node


def quantize_matmul_weights(g, inits, literal):
    """The weight MatMuls' [K, N] weights as int8, per column, read through DequantizeLinear (axis 1) or, literal,
    as their dequantized float32 values. Returns (new initializers, new nodes)."""
    new_inits, new_nodes = [], []
    for n in weight_matmuls(g):
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        ws = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
        ws[ws == 0] = 1.0
        wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int8)
        base = safe_name(n.name or n.output[0]) + "_w"
        if literal:
            new_inits.append(numpy_helper.from_array((wq.astype(np.float32) * ws).astype(np.float32), base + "_dq"))
        else:
            new_inits += [numpy_helper.from_array(wq, base + "_q"), numpy_helper.from_array(ws, base + "_scale"),
                          numpy_helper.from_array(np.zeros(ws.shape, np.int8), base + "_zp")]
            new_nodes.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zp"],
                                              [base + "_dq"], name=base + "_DequantizeLinear", axis=1))
        n.input[1] = base + "_dq"
    return new_inits, new_nodes


def quantize_model(model, ranges, literal=False, encoder=False):
    """The QDQ model (see the module doc); literal: the weights dequantized into float32 constants; encoder: the
    weight MatMuls are quantized (and only they read the dequantized activations)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    lo, hi = ranges
    act = {}
    new_inits, new_nodes = [], []
    for t in lo:
        s, z = uint8_params(lo[t], hi[t])
        act[t] = (s, z)
        base = safe_name(t)
        new_inits += [numpy_helper.from_array(np.array(s, np.float32), base + "_scale"),
                      numpy_helper.from_array(np.array(z, np.uint8), base + "_zp")]
    readers = {n.output[0] for n in weight_matmuls(g)} if encoder else None  # (protobuf wrappers have no stable id)
    if encoder:
        more_inits, more_nodes = quantize_matmul_weights(g, inits, literal)
        new_inits += more_inits
        new_nodes += more_nodes
    # weights and biases
    for n in g.node:
        if n.op_type != "Conv":
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        ws = (np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0).astype(np.float32)
        ws[ws == 0] = 1.0
        wq = np.clip(np.rint(w / ws.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        base = safe_name(n.name or n.output[0])
        if literal:
            wf = (wq.astype(np.float32) * ws.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
            new_inits.append(numpy_helper.from_array(wf, base + "_w_dq"))
            n.input[1] = base + "_w_dq"
        else:
            const_inits, dq = dequantize_const(base + "_w", wq, ws, np.int8)
            new_inits += const_inits
            new_nodes.append(dq)
            n.input[1] = base + "_w_dq"
        if len(n.input) > 2 and n.input[2]:
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
            bs = (np.float32(act[n.input[0]][0]) * ws).astype(np.float32)
            bq = np.clip(np.rint(b / bs), -2**31, 2**31 - 1).astype(np.int32)
            if literal:
                new_inits.append(numpy_helper.from_array((bq * bs).astype(np.float32), base + "_b_dq"))
            else:
                const_inits, dq = dequantize_const(base + "_b", bq, bs, np.int32)
                new_inits += const_inits
                new_nodes.append(dq)
            n.input[2] = base + "_b_dq"
    # activations: Q -> DQ after the producer, every reader reads the DQ
    nodes = list(g.node)
    out_nodes = list(new_nodes)
    graph_inputs = {i.name for i in g.input}
    qdq_after = {}
    for t in act:
        base = safe_name(t)
        qdq_after[t] = [helper.make_node("QuantizeLinear", [t, base + "_scale", base + "_zp"], [base + "_q"],
                                         name=base + "_QuantizeLinear"),
                        helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zp"],
                                         [base + "_dq"], name=base + "_DequantizeLinear")]
    for t in act:
        for n in nodes:
            if readers is not None and n.output[0] not in readers:
                continue
            for i, name in enumerate(n.input):
                if name == t:
                    n.input[i] = safe_name(t) + "_dq"
    for t in act:
        if t in graph_inputs:
            out_nodes += qdq_after[t]
    for n in nodes:
        out_nodes.append(n)
        for o in n.output:
            if o in qdq_after:
                out_nodes += qdq_after[o]
    del g.node[:]
    g.node.extend(out_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + [t for t in new_inits if t.name in used])
    return model


def top1(logits):
    return logits.reshape(logits.shape[0], -1).argmax(axis=1)


def compared_runs(hotserve, float_path, int8_path, cases, cache, name, samples, what, shape):
    """Yields (label, batches) for each input set: the benchmark inputs of name's _b1 and _b8 cases, then `samples`
    generated inputs of shape (samples,) + shape, named `what`. batches yields (float32 output, int8 output) per
    batch of up to 8 inputs, each run with `hotserve run`."""
    in_name = onnx.load(float_path).graph.input[0].name
    sets = []
    for case in (name + "_b1", name + "_b8"):
        if case in cases:
            (_, rel), = cases[case]["inputs"].items()
            sets.append(("benchmark input %s" % case, np.load(os.path.join(cache, rel))))
    rng = np.random.default_rng(SAMPLE_SEED)
    if samples:
        sets.append(("%d generated %s" % (samples, what), rng.standard_normal((samples,) + shape).astype(np.float32)))

    def batches(x):
        for i in range(0, x.shape[0], 8):
            xb = x[i:i + 8]
            (f,) = hotserve_run(hotserve, float_path, {in_name: xb}).values()
            (q,) = hotserve_run(hotserve, int8_path, {in_name: xb}).values()
            yield f, q
    for label, x in sets:
        yield label, batches(x)


def accuracy(hotserve, float_path, int8_path, cases, cache, name, samples):
    """[(label, images, agreeing, max abs logit difference)] of int8 against float32."""
    rows = []
    for label, batches in compared_runs(hotserve, float_path, int8_path, cases, cache, name, samples, "images",
                                        SHAPES[name][1:]):
        agree, total, maxdiff = 0, 0, 0.0
        for f, q in batches:
            agree += int((top1(f) == top1(q)).sum())
            total += f.shape[0]
            maxdiff = max(maxdiff, float(np.abs(f - q).max()))
        rows.append((label, total, agree, maxdiff))
    return rows


def accuracy_encoder(hotserve, float_path, int8_path, cases, cache, name, samples):
    """[(label, tokens, tokens whose largest feature agrees, max abs difference, relative L2)] of int8 against
    float32."""
    rows = []
    for label, batches in compared_runs(hotserve, float_path, int8_path, cases, cache, name, samples, "sequences",
                                        SHAPES[name][1:]):
        agree, total, maxdiff, num, den = 0, 0, 0.0, 0.0, 0.0
        for f, q in batches:
            agree += int((f.argmax(axis=-1) == q.argmax(axis=-1)).sum())
            total += f.size // f.shape[-1]
            maxdiff = max(maxdiff, float(np.abs(f - q).max()))
            num += float(((f - q).astype(np.float64) ** 2).sum())
            den += float((f.astype(np.float64) ** 2).sum())
        rows.append((label, total, agree, maxdiff, (num / den) ** 0.5))
    return rows


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--calib-batches", type=int, default=4, help="calibration batches of 8 generated images")
    p.add_argument("--calib-images", default=None,
                   help="a .npy of calibration inputs to use instead of generated ones (tools/int8_study.py's "
                        "calib.npy)")
    p.add_argument("--percentile", type=float, default=100.0,
                   help="activation ranges from this percentile of the calibration values (100: min / max)")
    p.add_argument("--samples", type=int, default=64,
                   help="generated images (encoder: sequences, a quarter as many) for the accuracy table (0: none)")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--literal", action="store_true", help="also write NAME_int8_literal.onnx")
    p.add_argument("--report", default=None)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.cache, "cases.json")) as f:
        cases = json.load(f)
    lines = ["| model | inputs | images | top-1 agreeing with float32 | agreement | max abs logit difference |",
             "|---|---|---|---|---|---|"]
    enc_lines = ["| model | inputs | tokens | largest feature agreeing with float32 | agreement | max abs difference | "
                 "relative L2 |", "|---|---|---|---|---|---|---|"]
    for name in args.models:
        src = os.path.join(args.cache, MODELS[name])
        model = onnx.load(src)
        enc = name in ENCODERS
        names = tensors_to_quantize(model.graph, enc)
        images = np.load(args.calib_images).astype(np.float32) if args.calib_images else None
        print("quantize: %s: calibrating %d tensors on %s" % (
            name, len(names), args.calib_images or "%d x %d inputs" % (args.calib_batches, SHAPES[name][0])),
            file=sys.stderr, flush=True)
        ranges = calibrate(args.hotserve, model, os.path.join(args.out, name), names, SHAPES[name],
                           args.calib_batches, args.percentile, images)
        out = os.path.join(args.out, name + "_int8.onnx")
        onnx.save(quantize_model(onnx.load(src), ranges, encoder=enc), out)
        if args.literal:
            onnx.save(quantize_model(onnx.load(src), ranges, literal=True, encoder=enc),
                      os.path.join(args.out, name + "_int8_literal.onnx"))
        print("quantize: wrote %s" % out, file=sys.stderr, flush=True)
        if args.no_accuracy:
            continue
        if enc:
            for label, total, agree, maxdiff, rel in accuracy_encoder(args.hotserve, src, out, cases, args.cache, name,
                                                                      args.samples // 4):
                enc_lines.append("| %s | %s | %d | %d | %.1f%% | %.3g | %.4f |" % (
                    name, label, total, agree, 100.0 * agree / total, maxdiff, rel))
            continue
        for label, total, agree, maxdiff in accuracy(args.hotserve, src, out, cases, args.cache, name, args.samples):
            lines.append("| %s | %s | %d | %d | %.1f%% | %.3g |" % (name, label, total, agree, 100.0 * agree / total,
                                                                   maxdiff))
    tables = [t for t in (lines, enc_lines) if len(t) > 2]
    table = "\n\n".join("\n".join(t) for t in tables)
    if not args.no_accuracy:
        print(table)
        if args.report:
            with open(args.report, "w") as f:
                f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

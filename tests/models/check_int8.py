#!/usr/bin/python3
"""check_int8.py - a calibrated QDQ MobileNetV2 (or BERT-style encoder) on the int8 path against the same QDQ graph run
in float32.

tools/quantize.py makes, from the cached float32 MobileNetV2, the QDQ model (int8 weights read through
DequantizeLinear) and its "literal" twin (the same graph with the weights' DequantizeLinear folded into float32
constants, which no engine pass rewrites, so it runs exactly as written, in float32). Both run through
`hotserve run` on the benchmark's batch-8 input:
  - the QDQ model must run every Conv as a QLinearConv on oneDNN's int8 kernel (HS_KERNELS_STRICT=1, and
    HS_KERNELS_VERBOSE lists one `qconv` kernel per Conv of the model);
  - its logits must be as close to the float32 model's as the literal QDQ graph's are: relative L2 distance to
    float32 at most SLACK x the literal graph's + 0.02, and closer to the literal graph than the literal graph is
    to float32. The int8 path computes what the QDQ graph says but for two roundings: integer sums where the
    literal graph rounds float32 ones, and a fused residual Add that no longer rounds the convolution's output to
    its own grid first; either moves a value across a QuantizeLinear's rounding boundary here and there, and the
    network carries that on (the literal graph moves by 0.07 in relative L2 when its input is scaled by
    1 + 1e-6), so the int8 and literal logits are 0.15 to 0.2 apart while each is about 0.2 from float32. A wrong
    scale, zero point, bias, layout or residual shows up as a distance to float32 well above the literal's (a
    layout bug in the residual fusion gave 0.37 against 0.22).
With MODEL bert_encoder, the same for the encoder (benchmark batch-8 tokens): each of its 36 weight MatMuls must run
as a QLinearMatMul on the `qmatmul` kernel, and its output stand to float32 as the literal graph's does (relative L2
about 0.046 each, 0.027 between them: the bias's rounding and the integer sums).
Usage: check_int8.py HOTSERVE CACHE WORKDIR [MODEL]
"""
import os
import subprocess
import sys

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SLACK = 1.25


# model -> (float32 file, benchmark case, input, output, op of the model that must run on the kernel, kernel, at least)
MODELS = {"mobilenet_v2": ("mobilenet_v2_dyn.onnx", "mobilenet_v2_b8", "input", "output", "Conv", "qconv", 50),
          "bert_encoder": ("bert_encoder.onnx", "bert_encoder_b8", "tokens", "hidden", "MatMul", "qmatmul", 36)}


def run(hotserve, model, x, work, strict, in_name="input", out_name="output"):
    os.makedirs(work, exist_ok=True)
    xp = os.path.join(work, "x.npy")
    np.save(xp, x)
    env = dict(os.environ, HS_KERNELS_VERBOSE="1")
    if strict:
        env["HS_KERNELS_STRICT"] = "1"
    r = subprocess.run([hotserve, "run", model, "--input", in_name + "=" + xp, "--output-dir", work, "--threads", "2"],
                       capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        sys.exit("FAIL: hotserve run %s: %s" % (model, r.stderr.strip()[-400:]))
    return np.load(os.path.join(work, out_name + ".npy")), r.stderr


def main():
    hotserve, cache, work = sys.argv[1:4]
    name = sys.argv[4] if len(sys.argv) > 4 else "mobilenet_v2"
    fp32, case, in_name, out_name, op, kernel, at_least = MODELS[name]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "quantize.py"), "--hotserve", hotserve, "--cache",
                        cache, "--out", work, "--models", name, "--calib-batches", "1", "--no-accuracy",
                        "--literal"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit("FAIL: quantize.py: " + r.stderr.strip()[-400:])
    qdq, literal = os.path.join(work, name + "_int8.onnx"), os.path.join(work, name + "_int8_literal.onnx")
    g = onnx.load(qdq).graph
    dq_outputs = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    # the ops to quantize: every Conv; for the encoder, the MatMuls reading a weight (a DequantizeLinear of a constant)
    convs = sum(n.op_type == op and (op == "Conv" or n.input[1] in dq_outputs) for n in g.node)
    x = np.load(os.path.join(cache, "ref", case, in_name + ".npy"))
    got, log = run(hotserve, qdq, x, os.path.join(work, "int8"), True, in_name, out_name)
    lit, _ = run(hotserve, literal, x, os.path.join(work, "literal"), False, in_name, out_name)
    ref, _ = run(hotserve, os.path.join(cache, fp32), x, os.path.join(work, "float"), False, in_name, out_name)
    qconvs = sum(1 for line in log.splitlines() if "kernels: %s " % kernel in line)
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    int8_float, lit_float, int8_lit = rel(got, ref), rel(lit, ref), rel(got, lit)
    print("%s %d, int8 kernels %d; relative L2: int8-float32 %.4f, literal-float32 %.4f, int8-literal %.4f"
          % (op, convs, qconvs, int8_float, lit_float, int8_lit))
    if qconvs != convs or convs < at_least:
        sys.exit("FAIL: %d %s nodes but %d int8 kernels" % (convs, op, qconvs))
    if got.shape != ref.shape or not int8_float <= SLACK * lit_float + 0.02 or not int8_lit < lit_float:
        sys.exit("FAIL: the int8 logits are further from float32 than the QDQ graph's own")
    print("ok")


if __name__ == "__main__":
    main()

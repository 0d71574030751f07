#!/usr/bin/python3
"""check_int8.py - a calibrated QDQ MobileNetV2 on the int8 path against the same QDQ graph run in float32.

tools/quantize.py makes, from the cached float32 MobileNetV2, the QDQ model (int8 weights read through
DequantizeLinear) and its "literal" twin (the same graph with the weights' DequantizeLinear folded into float32
constants, which no engine pass rewrites, so it runs exactly as written, in float32). Both run through
`hotserve run` on the benchmark's batch-8 input:
  - the QDQ model must run every Conv as a QLinearConv on oneDNN's int8 kernel (HS_KERNELS_STRICT=1, and
    HS_KERNELS_VERBOSE lists one `qconv` kernel per Conv of the model);
  - its logits must match the literal run's within the graph's own rounding noise: relative L2 distance below
    REL_TOL. Both quantize every activation, so an integer result that differs from the float one by a rounding
    step flips a QuantizeLinear here and there (the literal graph moves as much when its input is scaled by
    1 + 1e-6: 0.07 to 0.08); quantizing itself costs about 0.2 against the float32 model, and any error in the
    int8 path's scales, zero points, biases or layouts is larger still.
Usage: check_int8.py HOTSERVE CACHE WORKDIR
"""
import os
import subprocess
import sys

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REL_TOL = 0.12


def run(hotserve, model, x, work, strict):
    os.makedirs(work, exist_ok=True)
    xp = os.path.join(work, "x.npy")
    np.save(xp, x)
    env = dict(os.environ, HS_KERNELS_VERBOSE="1")
    if strict:
        env["HS_KERNELS_STRICT"] = "1"
    r = subprocess.run([hotserve, "run", model, "--input", "input=" + xp, "--output-dir", work, "--threads", "2"],
                       capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        sys.exit("FAIL: hotserve run %s: %s" % (model, r.stderr.strip()[-400:]))
    return np.load(os.path.join(work, "output.npy")), r.stderr


def main():
    hotserve, cache, work = sys.argv[1:4]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "quantize.py"), "--hotserve", hotserve, "--cache",
                        cache, "--out", work, "--models", "mobilenet_v2", "--calib-batches", "1", "--no-accuracy",
                        "--literal"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit("FAIL: quantize.py: " + r.stderr.strip()[-400:])
    qdq, literal = os.path.join(work, "mobilenet_v2_int8.onnx"), os.path.join(work, "mobilenet_v2_int8_literal.onnx")
    convs = sum(n.op_type == "Conv" for n in onnx.load(qdq).graph.node)
    x = np.load(os.path.join(cache, "ref", "mobilenet_v2_b8", "input.npy"))
    got, log = run(hotserve, qdq, x, os.path.join(work, "int8"), True)
    want, _ = run(hotserve, literal, x, os.path.join(work, "literal"), False)
    kernels = log.count("-> jit_int8") + log.count("-> brgconv") + log.count("-> brdgmm")
    qconvs = sum(1 for line in log.splitlines() if "kernels: qconv" in line)
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    print("convs %d, int8 kernels %d, relative L2 distance to the literal QDQ graph %.4f (tolerance %g)"
          % (convs, qconvs, rel, REL_TOL))
    if qconvs != convs or convs < 50:
        sys.exit("FAIL: %d Conv nodes but %d int8 kernels (%d kernel lines)" % (convs, qconvs, kernels))
    if got.shape != want.shape or not rel < REL_TOL:
        sys.exit("FAIL: int8 logits differ from the literal QDQ graph's")
    print("ok")


if __name__ == "__main__":
    main()

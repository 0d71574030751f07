#!/usr/bin/python3
"""check_reference.py - checks the generated references with a second, independent engine (OpenCV DNN).

    check_reference.py --cache DIR

Loads the opset-10 MobileNetV2 export (the one OpenCV 4.6 can read) and the torch reference of the mobilenet_v2_b1
and mobilenet_v2_b8 cases (same weights, written by the same make_models.py run), runs OpenCV DNN on the reference
inputs and compares with rtol 1e-3, atol 1e-4. A failure means the exporter, the fixed-seed weights or the reference
files disagree: the whole-model tests would then be checking against the wrong numbers.
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True)
    args = p.parse_args(argv)
    with open(os.path.join(args.cache, "cases.json")) as f:
        cases = json.load(f)
    cv2.setNumThreads(2)
    net = cv2.dnn.readNetFromONNX(os.path.join(args.cache, "mobilenet_v2_op10.onnx"))
    failed = False
    for name in ("mobilenet_v2_b1", "mobilenet_v2_b8"):
        case = cases[name]
        x = np.load(os.path.join(args.cache, case["inputs"]["input"]))
        want = np.load(os.path.join(args.cache, case["outputs"]["output"]))
        net.setInput(x)
        got = net.forward()
        if got.shape != want.shape or got.dtype != want.dtype:
            print("FAIL %s: OpenCV gave %s %s, torch %s %s" % (name, got.shape, got.dtype, want.shape, want.dtype))
            failed = True
            continue
        err = np.abs(got.astype(np.float64) - want)
        ratio = (err / (1e-4 + 1e-3 * np.abs(want))).max()
        ok = bool(ratio <= 1.0)
        print("%s %s: OpenCV vs torch max abs error %.3g (%.2f x tolerance)" % ("PASS" if ok else "FAIL", name,
                                                                                err.max(), ratio))
        failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""opencv_run.py - runs one ONNX model with OpenCV DNN (Debian's python3-opencv) for the engine benchmark.

    opencv_run.py MODEL.onnx INPUT.npy [--threads N] [--repeat N] [--warmup N]

Prints one JSON line: {"load_ms", "median_ms", "p99_ms", "runs"} or {"error": "..."} (exit status 0 either way, so a
model that OpenCV cannot load shows as "n/a" in the table instead of stopping the benchmark).
"""
import argparse
import json
import math
import sys
import time

import cv2
import numpy as np


def quantile(sorted_times, q):
    return sorted_times[min(len(sorted_times) - 1, max(0, math.ceil(q * len(sorted_times)) - 1))]


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    cv2.setNumThreads(args.threads)
    x = np.load(args.input)
    try:
        t0 = time.perf_counter()
        net = cv2.dnn.readNetFromONNX(args.model)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        load_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(args.warmup):
            net.setInput(x)
            net.forward()
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            net.setInput(x)
            net.forward()
            times.append((time.perf_counter() - t0) * 1e3)
    except cv2.error as e:
        print(json.dumps({"error": str(e).strip().splitlines()[-1][:200]}))
        return 0
    times.sort()
    print(json.dumps({"load_ms": load_ms, "median_ms": quantile(times, 0.5), "p99_ms": quantile(times, 0.99),
                      "runs": len(times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

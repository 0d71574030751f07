#!/usr/bin/python3
"""loader_cpu_ab.py - the loader's CPU per reload stage, A/B between server binaries, interleaved.

    loader_cpu_ab.py --variant LABEL=BINARY [--variant ...] --cache DIR [--model mobilenet_v2.onnx]
                     [--weights retrained] [--versions 30] [--rounds 4] [--extra "serve options"]

Makes --versions versions of the model (load_bench.make_versions: every float tensor new with "retrained"), publishes
them once into a staging folder, then per round and per variant (interleaved: A B A B ...) starts `BINARY serve` on a
repository holding version 1 and hard-links the next versions in one at a time, each once the previous one is ready
(no requests: the loads run unpaced). From each version's ready line it takes the loader CPU of the three stages
(read, including the hash thread's; load; warm-up) and the load stage's parts (decode, compile CPU; hash CPU), and
prints their medians over the versions from the third on (the first reload of a process still builds what the
next ones reuse). The machine's other work adds noise: compare variants within a round, and over rounds.
Never part of ctest.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import load_bench  # noqa: E402

READY = re.compile(r"version (\d+) ready in .*loader CPU ms: read ([\d.]+), load ([\d.]+), warm-up ([\d.]+)"
                   r".*hash CPU ms ([\d.]+).*decode [\d.]+ ms \(CPU ([\d.]+).*compile [\d.]+ ms \(CPU ([\d.]+)")
COLS = ["read", "load", "warm-up", "hash", "decode", "compile"]


def run_once(binary, stage, n, extra, timeout=120):
    work = tempfile.mkdtemp(prefix="hs-loader-ab-")
    model_dir = os.path.join(work, "repo", "m")
    os.makedirs(model_dir)

    def put(v):
        tmp = os.path.join(work, "repo", ".in%d" % v)
        subprocess.run(["cp", "-al", os.path.join(stage, str(v)), tmp], check=True)
        os.rename(tmp, os.path.join(model_dir, str(v)))

    put(1)
    p = subprocess.Popen([binary, "serve", "--model-repository", os.path.join(work, "repo"), "--http-port", "0",
                          "--log-level", "info"] + extra, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, errors="replace")
    ready, cv = {}, threading.Condition()

    def reader():
        for line in p.stderr:
            m = READY.search(line)
            if m:
                with cv:
                    ready[int(m.group(1))] = [float(x) for x in m.group(2, 3, 4, 5, 6, 7)]
                    cv.notify_all()
            elif " failed" in line:
                sys.stderr.write(line)
                with cv:
                    ready[-1] = line
                    cv.notify_all()

    threading.Thread(target=reader, daemon=True).start()
    try:
        for v in range(1, n + 1):
            if v > 1:
                put(v)
            with cv:
                if not cv.wait_for(lambda: v in ready or -1 in ready, timeout) or -1 in ready:
                    raise SystemExit("%s: version %d not ready" % (binary, v))
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(work, ignore_errors=True)
    rows = [ready[v] for v in range(3, n + 1)]
    return [statistics.median(c) for c in zip(*rows)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="LABEL=BINARY")
    ap.add_argument("--cache", required=True, help="the models folder (tools/models/make_models.py)")
    ap.add_argument("--model", default="mobilenet_v2.onnx", choices=["mobilenet_v2.onnx", "resnet50.onnx"])
    ap.add_argument("--weights", default="retrained", choices=["retrained", "head", "bias"])
    ap.add_argument("--versions", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--extra", default="", help="server options for every variant")
    a = ap.parse_args()
    variants = [v.split("=", 1) for v in a.variant]
    work = tempfile.mkdtemp(prefix="hs-loader-ab-src-")
    try:
        dirs = load_bench.make_versions(os.path.join(a.cache, a.model), os.path.join(work, "src"), a.versions,
                                        a.weights)
        stage = os.path.join(work, "stage", "m")  # a manifest names its model: the staging folder's is the served one
        os.makedirs(stage)
        for i, d in enumerate(dirs):
            load_bench.publish(variants[0][1], d, stage, i + 1)
            shutil.rmtree(d, ignore_errors=True)
        results = {label: [] for label, _ in variants}
        for r in range(a.rounds):
            for label, binary in variants:
                med = run_once(binary, stage, a.versions, a.extra.split())
                results[label].append(med)
                print("round %d %-8s " % (r + 1, label) + "  ".join("%s %.2f" % (c, x) for c, x in zip(COLS, med)) +
                      "  total %.2f" % sum(med[:3]), flush=True)
        print("\n| variant | read | load | warm-up | total (median of the rounds' medians, ms of loader CPU) | "
              "hash | decode | compile |\n|---|---|---|---|---|---|---|---|")
        for label, _ in variants:
            cols = [statistics.median(c) for c in zip(*results[label])]
            tot = statistics.median(sum(m[:3]) for m in results[label])
            print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |" % (label, cols[0], cols[1], cols[2], tot,
                                                                          cols[3], cols[4], cols[5]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

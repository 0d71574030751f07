#!/usr/bin/env python3
"""CPU cost of `hotserve publish` of one model file, against a reference binary, interleaved.

usage: publish_bench.py HOTSERVE [--ref REF_HOTSERVE] [--model FILE] [--rounds N] [--out DIR]

Each round publishes FILE (default: ResNet-50 from $HOTSERVE_MODEL_CACHE or build/models) into a fresh
repository once with each binary, the order alternating, and records the publisher's own CPU time (user and
system, getrusage of the child: the copy, the hashing, the fsync's writeback submission). The source stays in
the page cache after the first round, as on a build machine that has just written it. The table gives the
median and the spread per binary and the ratio of the medians; CPU time is far less sensitive to a loaded
machine than wall time, which is shown for completeness.
"""
import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor()
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    ext = [x for x in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "sha_ni") if x in flags]
    return "%s (%s)" % (model, ", ".join(ext))


def publish_once(binary, src, repo):
    start = time.monotonic()
    p = subprocess.Popen([binary, "publish", src, os.path.join(repo, "m")], stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    if status != 0:
        sys.exit("%s publish failed (status %d)" % (binary, status))
    return ru.ru_utime * 1e3, ru.ru_stime * 1e3, wall * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hotserve")
    ap.add_argument("--ref", help="the reference hotserve binary (e.g. main's, copied aside)")
    cache = os.environ.get("HOTSERVE_MODEL_CACHE", os.path.join(ROOT, "build", "models"))
    ap.add_argument("--model", default=os.path.join(cache, "resnet50.onnx"))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    bins = [("this", os.path.abspath(a.hotserve))] + ([("ref", os.path.abspath(a.ref))] if a.ref else [])
    tmp = tempfile.mkdtemp(prefix="hs-publish-bench-")
    try:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        shutil.copyfile(a.model, os.path.join(src, "model.onnx"))
        size = os.path.getsize(os.path.join(src, "model.onnx"))
        samples = {name: [] for name, _ in bins}
        load0 = os.getloadavg()[0]
        for r in range(a.rounds):
            order = bins if r % 2 == 0 else bins[::-1]
            for name, binary in order:
                repo = os.path.join(tmp, "repo-%s-%d" % (name, r))
                samples[name].append(publish_once(binary, src, repo))
                shutil.rmtree(repo)
        load1 = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(xs, i):
        return statistics.median(x[i] for x in xs)

    lines = ["# hotserve publish: CPU per version", "",
             "- date: %s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "- CPU: %s, %d cores" % (cpu_name(), os.cpu_count()),
             "- command: `%s`" % " ".join(["bench/publish/publish_bench.py"] + sys.argv[1:]),
             "- file: %s (%.1f MB), %d rounds, order alternating" % (os.path.basename(a.model), size / 1e6, a.rounds),
             "- load average (1 min): %.2f at start, %.2f at end" % (load0, load1), "",
             "| binary | user ms | sys ms | CPU ms (median) | CPU ms (min-max) | wall ms (median) |",
             "|---|---|---|---|---|---|"]
    for name, binary in bins:
        xs = samples[name]
        cpu = [u + s for u, s, _ in xs]
        lines.append("| %s (%s) | %.0f | %.0f | %.0f | %.0f-%.0f | %.0f |" % (
            name, binary, med(xs, 0), med(xs, 1), statistics.median(cpu), min(cpu), max(cpu), med(xs, 2)))
    if a.ref:
        this = statistics.median(u + s for u, s, _ in samples["this"])
        ref = statistics.median(u + s for u, s, _ in samples["ref"])
        lines += ["", "CPU this / ref: %.2f" % (this / ref)]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "publish-%s.md" % datetime.datetime.now().strftime("%Y%m%d-%H%M"))
    with open(path, "w") as f:
        f.write(text)
    print("written to", path)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""ab_cpu.py - CPU time per run of two or more hotserve builds (or settings) on the same models, interleaved.

    ab_cpu.py --cache DIR --variant NAME=BIN[,VAR=VALUE...] --variant ... [--threads 2] [--runs 20] [--rounds 5]
              [--wall] MODEL:BATCH ...

A MODEL:BATCH row runs DIR/MODEL_dyn.onnx on DIR/ref/MODEL_bBATCH/input.npy (tools/models/make_models.py's cache,
e.g. mobilenet_v2:b8). Each measurement is two fresh processes, `hotserve run ... --warmup 3 --repeat 5` and
`--repeat 5+RUNS`, and the difference of their user + system CPU time (rusage) divided by RUNS: one run's CPU time
without loading, compiling and warming up (as cpu_time.py measures). Variants take turns first from round to round,
so drift on a shared machine hits them alike. Prints a markdown table of the medians over the rounds and each
variant's ratio to the first. --wall measures the median wall time `hotserve run --repeat RUNS` prints instead
(one process per measurement).
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys


def cpu_seconds(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, capture_output=True, env=env, check=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def wall_ms(cmd, env):
    out = subprocess.run(cmd, capture_output=True, env=env, check=True, timeout=1800, text=True).stdout
    return float(re.search(r"median ([0-9.]+) ms", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME=BIN[,VAR=VALUE...]")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--wall", action="store_true", help="median wall ms of `hotserve run` instead of CPU time")
    ap.add_argument("rows", nargs="+", help="MODEL:BATCH, e.g. mobilenet_v2:b8")
    a = ap.parse_args()
    variants = []
    for v in a.variant:
        name, rest = v.split("=", 1)
        parts = rest.split(",")
        env = dict(os.environ)
        env.update(p.split("=", 1) for p in parts[1:])
        variants.append((name, parts[0], env))
    res = {}
    for r in range(a.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for row in a.rows:
            model, batch = row.split(":")
            for name, binary, env in order:
                def cmd(n):
                    return [binary, "run", os.path.join(a.cache, model + "_dyn.onnx"), "-i",
                            "input=" + os.path.join(a.cache, "ref", "%s_%s" % (model, batch), "input.npy"),
                            "--threads", a.threads, "--warmup", "3", "--repeat", str(n)]
                if a.wall:
                    per = wall_ms(cmd(a.runs), env)
                else:
                    per = 1000.0 * (cpu_seconds(cmd(5 + a.runs), env) - cpu_seconds(cmd(5), env)) / a.runs
                res.setdefault((row, name), []).append(per)
        print("round %d of %d done" % (r + 1, a.rounds), file=sys.stderr)
    names = [v[0] for v in variants]
    print("%s ms per run (%s thread(s), %d runs, medians of %d interleaved rounds; load average at the end %.1f)"
          % ("median wall" if a.wall else "CPU", a.threads, a.runs, a.rounds, os.getloadavg()[0]))
    print("| model:batch | " + " | ".join(names) + " | " + " | ".join("%s/%s" % (n, names[0]) for n in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    for row in a.rows:
        med = [statistics.median(res[(row, n)]) for n in names]
        print("| %s | " % row + " | ".join("%.2f" % m for m in med) + " | " +
              " | ".join("%.3f" % (m / med[0]) for m in med[1:]) + " |")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""ab_load.py - one load_bench server row with two hotserve binaries, interleaved: a reference and a candidate.

    ab_load.py --base BIN --new BIN --cache DIR [--model resnet50.onnx] [--variant external] [--rounds 3]
               [--loads 4] [--gap 3] [--threads 2] [--runs 3] [--results FILE] [--command "how it was started"]

The versions are made once (load_bench.make_versions: --variant says what changes from one to the next). Each
round then runs load_bench's server measurement (a fresh `hotserve serve`, versions 1..N+1 published one after
another, each one's "ready" log line read) with both binaries, the order alternating by round, and after them
--runs times `hotserve run VERSION_1/model.onnx --repeat 1` with each binary, alternating (load + compile as it
prints it, and the process's CPU time). Reported per round and binary, reload medians: time to ready, load
stage, the loader's CPU (read, which includes the hash thread's, and load), the hash thread's CPU, the wait for
its verdict after the load, and the loading thread's own CPU (read + load - hash CPU), the RSS with one version at
rest, the median peak while a new one loads beside it and their difference (overlap extra, load_bench's memory
table); then new / base ratios of the medians over rounds. CPU times are far less sensitive to other processes than wall times.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "engine"))
import engine_bench  # noqa: E402
import load_bench  # noqa: E402

# load_bench.bench_server's median: total, verify, load, warm-up, CPU read, CPU load, CPU warm-up, hash CPU, wait
COLS = [("ready", lambda m: m[0]), ("load", lambda m: m[2]), ("CPU read", lambda m: m[4]),
        ("CPU load", lambda m: m[5]), ("hash CPU", lambda m: m[7]), ("hash wait", lambda m: m[8]),
        ("loading thread CPU", lambda m: m[4] + m[5] - m[7]), ("one version MB", lambda m: m[9]),
        ("overlap peak MB", lambda m: m[10]), ("overlap extra MB", lambda m: m[10] - m[9])]


def run_once(binary, model, x, threads):
    """hotserve run MODEL --repeat 1: (load + compile ms as printed, process CPU ms)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([binary, "run", model, "--input", "input=" + x, "--repeat", "1", "--threads", str(threads)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError("hotserve run failed: %s" % proc.stdout.strip()[-200:])
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1e3
    return engine_bench.ms_after(proc.stdout, "compile", "load"), cpu


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the reference binary (e.g. main's)")
    p.add_argument("--new", required=True, help="the candidate binary")
    p.add_argument("--cache", required=True)
    p.add_argument("--model", default="resnet50.onnx", choices=[m[1] for m in load_bench.MODELS])
    p.add_argument("--variant", default="external", choices=[v for _, v in load_bench.VARIANTS])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loads", type=int, default=4, help="reloads per server run (after one cold load)")
    p.add_argument("--gap", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="`hotserve run` processes per binary and round")
    p.add_argument("--results", default=None, help="markdown file to write")
    p.add_argument("--command", default=" ".join(sys.argv))
    args = p.parse_args(argv)
    mach = engine_bench.machine()
    ref = os.path.join(args.cache, "ref", dict((m[1], m[2]) for m in load_bench.MODELS)[args.model], "input.npy")
    bins = [("base", args.base), ("new", args.new)]
    rows, runs = [], {"base": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="hs-ab-load-") as work:
        versions = load_bench.make_versions(os.path.join(args.cache, args.model), os.path.join(work, "src"),
                                            args.loads + 1, args.variant)
        for rnd in range(args.rounds):
            for which, binary in (bins if rnd % 2 == 0 else bins[::-1]):
                print("ab_load: round %d, %s ..." % (rnd + 1, which), file=sys.stderr, flush=True)
                a = argparse.Namespace(hotserve=binary, cache=args.cache, loads=args.loads, threads=args.threads,
                                       gap=args.gap)
                hs = load_bench.bench_server(a, args.model, args.model, os.path.join(work, "r%d-%s" % (rnd, which)),
                                             args.variant, versions)
                rows.append((rnd + 1, which, hs["median"] + [hs["one_version_rss"], hs["overlap_peak_rss"]]))
            for _ in range(args.runs):
                for which, binary in (bins if rnd % 2 == 0 else bins[::-1]):
                    runs[which].append(run_once(binary, os.path.join(versions[0], "model.onnx"), ref, args.threads))
    lines = ["Load, %s: `%s` vs `%s`. Machine: %s. Threads: %d. Versions: %s (%s), %d reloads "
             "per server run, %g s apart." % (args.model, args.base, args.new, mach, args.threads, args.variant,
                                             "weights in weights.bin" if args.variant == "external" else "one file",
                                             args.loads, args.gap),
             "Command: `%s`" % args.command, "",
             "Server reloads, median per run (ms):", "",
             "| round | binary | " + " | ".join(c for c, _ in COLS) + " |", "|---|---|" + "---|" * len(COLS)]
    for rnd, which, med in rows:
        lines.append("| %d | %s | " % (rnd, which) + " | ".join("%.1f" % f(med) for _, f in COLS) + " |")
    lines += ["", "Median over rounds, new / base:", "", "| " + " | ".join(c for c, _ in COLS) + " |",
              "|" + "---|" * len(COLS)]
    ratios = []
    for _, f in COLS:
        b = statistics.median(f(m) for _, w, m in rows if w == "base")
        n = statistics.median(f(m) for _, w, m in rows if w == "new")
        ratios.append("%.1f / %.1f = %.2f" % (n, b, n / b) if b >= 1 else "%.1f / %.1f" % (n, b))  # no ratio of ~0
    lines.append("| " + " | ".join(ratios) + " |")
    lines += ["", "`hotserve run VERSION_1/model.onnx --repeat 1 --threads %d`, %d processes per binary, alternating "
              "(ms):" % (args.threads, args.runs * args.rounds), "",
              "| binary | load + compile, each | median | process CPU, each | median |", "|---|---|---|---|---|"]
    for which, _ in bins:
        t = [r[0] for r in runs[which]]
        c = [r[1] for r in runs[which]]
        lines.append("| %s | %s | %.0f | %s | %.0f |" % (which, " ".join("%.0f" % v for v in t), statistics.median(t),
                                                         " ".join("%.0f" % v for v in c), statistics.median(c)))
    lines += ["", "Load average at the end: %s." % " ".join("%.1f" % x for x in os.getloadavg())]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.results:
        with open(args.results, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

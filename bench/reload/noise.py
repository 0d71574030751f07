#!/usr/bin/python3
"""noise.py - how precisely one bench/reload run can tell a reload's cost on this machine: an A/A estimate.

    noise.py [--results bench/results] [--model mobilenet_v2|resnet50] [--since YYYYMMDD] [--expect 0.993]

bench/reload's default runs alternate blocks without and with reloads (A B A B A B A) and compare each B block
with the mean of the two A blocks beside it. The A blocks of the same runs give that comparison with no reload at
all: each inner A block against the mean of the A blocks on either side of it (A2 vs A1 and A3, A3 vs A2 and A4).
A run's reported ratio is the mean of its three B comparisons; with the spread of single A/A comparisons, s, its
own spread is about s / sqrt(3), assuming block-to-block noise independent.

Reads the recorded runs (bench/results/reload-YYYYMMDD-HHMM.md for MobileNetV2, reload-resnet50-*.md for
ResNet-50, both publishing modes; only the alternating layout, 7 blocks), prints the A/A throughput and p99
ratios, their spread, and, for a true throughput ratio of --expect (bench/reload's own estimate of the best ratio
at saturation, from the loader's CPU share), the chance that one run reports >= the target and that three
consecutive runs all do (normal approximation). Nothing is measured here; no server is started.
"""
import argparse
import glob
import math
import os
import re
import statistics
import sys

ROW = re.compile(r"^\| (\d+) \| (no reloads|reload every [^|]*) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|")


def blocks(path):
    """[(kind_is_reload, req_s, p99_ms)] of a run's block table, in order."""
    out = []
    with open(path) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                out.append((m.group(2) != "no reloads", float(m.group(3)), float(m.group(5))))
    return out


def aa_ratios(bl):
    """A/A comparisons of a 7-block alternating run: each inner A against the mean of its A neighbours."""
    a = [(r, p) for rel, r, p in bl if not rel]
    out = []
    for i in range(1, len(a) - 1):
        out.append((a[i][0] / ((a[i - 1][0] + a[i + 1][0]) / 2), a[i][1] / ((a[i - 1][1] + a[i + 1][1]) / 2)))
    return out


def ab_ratios(bl):
    """The run's own B comparisons (as bench/reload reports them): each B against the mean of the A beside it."""
    out = []
    for i in range(1, len(bl) - 1, 2):
        a0, b, a1 = bl[i - 1], bl[i], bl[i + 1]
        out.append((b[1] / ((a0[1] + a1[1]) / 2), b[2] / ((a0[2] + a1[2]) / 2)))
    return out


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results"))
    p.add_argument("--model", choices=["mobilenet_v2", "resnet50"], default="mobilenet_v2")
    p.add_argument("--since", default="20261206", help="runs recorded on or after this day (YYYYMMDD)")
    p.add_argument("--expect", type=float, default=0.993,
                   help="the true throughput ratio to assume (default 0.993: MobileNetV2's loader share)")
    p.add_argument("--target", type=float, default=None, help="throughput target (default 0.98; ResNet-50 0.97)")
    a = p.parse_args(argv)
    target = a.target or (0.97 if a.model == "resnet50" else 0.98)
    pat = "reload-resnet50-*.md" if a.model == "resnet50" else "reload-2*.md"
    files = []
    for path in sorted(glob.glob(os.path.join(a.results, pat))):
        m = re.search(r"(\d{8})-\d{4}\.md$", path)
        if not m or m.group(1) < a.since:
            continue
        bl = blocks(path)
        if len(bl) == 7 and [r for r, _, _ in bl] == [False, True] * 3 + [False]:
            files.append((path, bl))
    if not files:
        print("noise: no alternating-layout runs of %s since %s in %s" % (a.model, a.since, a.results))
        return 1
    aa = [x for _, bl in files for x in aa_ratios(bl)]
    ab_runs = [statistics.mean(t for t, _ in ab_ratios(bl)) for _, bl in files]
    thr = [t for t, _ in aa]
    p99 = [q for _, q in aa]
    s = statistics.stdev(thr)
    s_run = s / math.sqrt(3)
    one = 1 - phi((target - a.expect) / s_run)
    print("bench/reload noise, %s: %d runs with the alternating layout since %s (%s .. %s)"
          % (a.model, len(files), a.since, os.path.basename(files[0][0]), os.path.basename(files[-1][0])))
    print()
    print("| A/A comparison (no reload in either) | n | min | median | max | standard deviation |")
    print("|---|---|---|---|---|---|")
    for name, v in (("throughput ratio", thr), ("p99 ratio", p99)):
        print("| %s | %d | %.3f | %.3f | %.3f | %.3f |" % (name, len(v), min(v), statistics.median(v), max(v),
                                                          statistics.stdev(v)))
    print()
    print("Share of single A/A comparisons that would miss the targets with no reload at all: throughput < %.2f: "
          "%.0f%%; p99 > 1.10: %.0f%%." % (target, 100.0 * sum(t < target for t in thr) / len(thr),
                                           100.0 * sum(q > 1.10 for q in p99) / len(p99)))
    print("The same runs' reported throughput ratios (mean of three B comparisons): min %.3f, median %.3f, max %.3f."
          % (min(ab_runs), statistics.median(ab_runs), max(ab_runs)))
    print("A run's ratio (mean of three comparisons) spreads by about %.3f / sqrt(3) = %.3f. With a true ratio of "
          "%.3f, one run reports >= %.2f with probability %.2f, three consecutive runs with %.2f."
          % (s, s_run, a.expect, target, one, one ** 3))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

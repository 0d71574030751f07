#!/usr/bin/python3
"""check_model.py - whole-model test driver: runs one case through `hotserve run` and compares with torch's outputs.

    check_model.py --hotserve BIN --cache DIR --case CASE [--threads N] [--rtol R] [--atol A]
                   [--bad-input shape|rank|dtype]

Reads DIR/cases.json (written by tools/models/make_models.py), runs
    BIN run DIR/MODEL --input NAME=DIR/ref/CASE/NAME.npy ... --output-dir TMP --threads N
and checks every expected output: TMP/NAME.npy exists, has the same dtype and shape as the reference, and every
element satisfies |actual - expected| <= atol + rtol * |expected| (NaN never passes). Prints the max absolute error
and the worst element's ratio to its tolerance for each output. Exit status 0 = pass, 1 = fail.

--bad-input feeds the first input with a wrong last dimension (shape), one axis too many (rank) or as float64
(dtype) instead, and passes when hotserve refuses it cleanly: a non-zero exit status (not a signal), an error on
stderr that names the input, and no output file written.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np


def safe_name(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def compare(name, actual, expected, rtol, atol):
    """Returns a list of failure messages (empty when the output matches) and prints the error summary."""
    if actual.dtype != expected.dtype:
        return ["%s: dtype %s, expected %s" % (name, actual.dtype, expected.dtype)]
    if actual.shape != expected.shape:
        return ["%s: shape %s, expected %s" % (name, actual.shape, expected.shape)]
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    err = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    bad = ~(err <= tol)  # NaN in either side counts as bad
    worst = int(np.nanargmax(err / tol)) if err.size and not np.all(np.isnan(err)) else 0
    print("  %s: shape %s dtype %s, max abs error %.3g, max rel error %.3g, worst at %d: got %.7g want %.7g "
          "(%.2f x tolerance)" % (name, actual.shape, actual.dtype, np.nanmax(err) if err.size else 0.0,
                                  np.nanmax(err / np.maximum(np.abs(e), 1e-30)) if err.size else 0.0,
                                  worst, a.flat[worst], e.flat[worst], (err / tol).flat[worst]))
    if bad.any():
        return ["%s: %d of %d elements outside |a-e| <= %g + %g*|e|" % (name, int(bad.sum()), bad.size, atol, rtol)]
    return []


def check_bad_input(args, case, model):
    """Runs the case with its first input made wrong; passes when hotserve refuses it with a clear error."""
    with tempfile.TemporaryDirectory(prefix="hs-model-bad-") as tmp:
        outdir = os.path.join(tmp, "out")
        os.mkdir(outdir)
        names = sorted(case["inputs"])
        cmd = [args.hotserve, "run", model, "--output-dir", outdir, "--threads", str(args.threads)]
        for i, name in enumerate(names):
            path = os.path.join(args.cache, case["inputs"][name])
            if i == 0:
                x = np.load(path)
                if args.bad_input == "shape":
                    x = np.ascontiguousarray(x[..., : x.shape[-1] - 1])
                elif args.bad_input == "rank":
                    x = x[np.newaxis]
                else:
                    x = x.astype(np.float64)
                path = os.path.join(tmp, "bad.npy")
                np.save(path, x)
                print("feeding %s with %s %s" % (name, x.dtype, x.shape))
            cmd += ["--input", "%s=%s" % (name, path)]
        print("case %s (bad %s): %s" % (args.case, args.bad_input, " ".join(cmd)))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
        sys.stdout.write(proc.stdout)
        sys.stdout.write("stderr: " + proc.stderr)
        failures = []
        if proc.returncode == 0:
            failures.append("hotserve run accepted the bad input (exit status 0)")
        elif proc.returncode < 0 or proc.returncode >= 128:
            failures.append("hotserve run died (status %d): a crash, not an error" % proc.returncode)
        if not re.search(r"\b%s\b" % re.escape(names[0]), proc.stderr):
            failures.append("the error on stderr does not name the input %r" % names[0])
        if os.listdir(outdir):
            failures.append("hotserve run wrote outputs for a refused input: %s" % ", ".join(os.listdir(outdir)))
    for msg in failures:
        print("FAIL: " + msg)
    if not failures:
        print("PASS: %s refused a bad %s" % (args.case, args.bad_input))
    return 1 if failures else 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--bad-input", choices=["shape", "rank", "dtype"])
    args = p.parse_args(argv)

    with open(os.path.join(args.cache, "cases.json")) as f:
        case = json.load(f)[args.case]
    model = os.path.join(args.cache, case["model"])
    if args.bad_input:
        return check_bad_input(args, case, model)
    with tempfile.TemporaryDirectory(prefix="hs-model-") as outdir:
        cmd = [args.hotserve, "run", model, "--output-dir", outdir, "--threads", str(args.threads)]
        for name, rel in sorted(case["inputs"].items()):
            cmd += ["--input", "%s=%s" % (name, os.path.join(args.cache, rel))]
        print("case %s: %s" % (args.case, " ".join(cmd)))
        sys.stdout.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            print("FAIL: hotserve run exited with status %d" % proc.returncode)
            return 1
        failures = []
        for name, rel in sorted(case["outputs"].items()):
            expected = np.load(os.path.join(args.cache, rel))
            path = os.path.join(outdir, safe_name(name) + ".npy")
            if not os.path.exists(path):
                failures.append("%s: hotserve wrote no %s" % (name, path))
                continue
            failures += compare(name, np.load(path), expected, args.rtol, args.atol)
        extra = sorted(set(os.listdir(outdir)) - {safe_name(n) + ".npy" for n in case["outputs"]})
        if extra:
            failures.append("unexpected files in the output dir: %s" % ", ".join(extra))
    for msg in failures:
        print("FAIL: " + msg)
    if not failures:
        print("PASS: %s" % args.case)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""check_cli_run.py HOTSERVE CASES_DIR OUT_DIR - `hotserve run` end to end on the generated cases:
outputs written as .npy (odd names sanitised) match numpy's answers; errors exit non-zero with a
message on stderr naming the problem."""
import os
import re
import subprocess
import sys

import numpy as np
import onnx

exe, gen, out = sys.argv[1], sys.argv[2], sys.argv[3]
cases = os.path.join(gen, "cases")
failed = 0


def run(args):
    return subprocess.run([exe, "run"] + args, capture_output=True, text=True, timeout=120)


def fail(msg):
    global failed
    failed += 1
    print("FAIL", msg)


for name in sorted(os.listdir(cases)):
    d = os.path.join(cases, name)
    m = onnx.load(os.path.join(d, "model.onnx"))
    inits = {t.name for t in m.graph.initializer}
    ins = [i.name for i in m.graph.input if i.name not in inits]
    args = [os.path.join(d, "model.onnx"), "--repeat", "3", "--threads", "1", "--output-dir", os.path.join(out, name)]
    for k, n in enumerate(ins):
        args += ["--input", f"{n}={os.path.join(d, f'input_{k}.npy')}"]
    r = run(args)
    if r.returncode != 0:
        fail(f"{name}: exit {r.returncode}: {r.stderr}")
        continue
    if not re.search(r"median [0-9.]+ ms, p99 [0-9.]+ ms", r.stdout):
        fail(f"{name}: no latency line in {r.stdout!r}")
    for k, o in enumerate(m.graph.output):
        fname = re.sub(r"[^A-Za-z0-9._-]", "_", o.name) + ".npy"
        path = os.path.join(out, name, fname)
        if not os.path.exists(path):
            fail(f"{name}: missing {path}")
            continue
        got, exp = np.load(path), np.load(os.path.join(d, f"expected_{k}.npy"))
        if got.dtype != exp.dtype or got.shape != exp.shape or not np.allclose(got, exp, rtol=1e-3, atol=1e-7):
            fail(f"{name}: output {o.name} differs")
    print("ok  ", name)

# --warmup runs untimed first; --print-times lists every timed run (REPEAT of them, the median among them)
d = os.path.join(cases, "add_bcast")
model = os.path.join(d, "model.onnx")
r = run([model, "--input", f"a={d}/input_0.npy", "--input", f"b={d}/input_1.npy", "--warmup", "2", "--repeat", "5",
         "--print-times"])
times = re.search(r"^times ms:((?: [0-9.]+)+)$", r.stdout, re.M)
stats = re.search(r"runs (\d+), median ([0-9.]+) ms, p99 ([0-9.]+) ms", r.stdout)
if r.returncode != 0 or not times or not stats:
    fail(f"--warmup/--print-times: exit {r.returncode}, stdout {r.stdout!r}")
else:
    t = sorted(float(x) for x in times.group(1).split())
    if len(t) != 5 or stats.group(1) != "5" or abs(t[2] - float(stats.group(2))) > 0.0015 or \
            abs(t[4] - float(stats.group(3))) > 0.0015:
        fail(f"--print-times {t} disagrees with {stats.group(0)}")
    else:
        print("ok   --warmup 2 --repeat 5 --print-times")

# errors: exit status non-zero, a message naming the cause on stderr
bad = [
    ([model, "--input", f"a={d}/input_0.npy"], "missing --input b"),
    ([model, "--input", f"a={d}/input_0.npy", "--input", f"b={d}/nope.npy"], "nope.npy"),
    ([model, "--input", f"a={d}/input_1.npy", "--input", f"b={d}/input_1.npy"], "input 'a'"),
    ([model, "--input", f"a={d}/input_0.npy", "--input", f"b={d}/input_1.npy", "--input", "zz=x.npy"], "no input 'zz'"),
    ([os.path.join(d, "missing.onnx"), "--input", "a=x.npy"], "missing.onnx"),
    ([model, "--repeat", "0"], "--repeat"),
    ([model, "--warmup", "-1"], "--warmup"),
    ([], "usage"),
]
junk = os.path.join(out, "junk.npy")
os.makedirs(out, exist_ok=True)
open(junk, "wb").write(b"\x93NUMPY\x01\x00\xff\xff{'descr'")
bad.append(([model, "--input", f"a={junk}", "--input", f"b={d}/input_1.npy"], "junk.npy"))
for args, needle in bad:
    r = run(args)
    if r.returncode == 0 or needle not in r.stderr:
        fail(f"error case {args}: exit {r.returncode}, stderr {r.stderr!r} (wanted {needle!r})")
    else:
        print("ok   error:", needle)
sys.exit(1 if failed else 0)

#!/usr/bin/python3
"""engine_bench.py - hotserve's engine against ONNX Runtime and OpenCV DNN on ResNet-50, MobileNetV2, MobileNetV3,
a DBNet-style text detector, a CRNN-style text recognizer, a transformer encoder block, a BERT-style encoder (6 layers,
seq 128) and the recurrent models (a bidirectional 2-layer LSTM tagger, a 2-layer GRU).

    engine_bench.py --hotserve BIN --cache DIR [--threads 2] [--repeat 20] [--results DIR] [--readme FILE]
                    [--rounds 3] [--command "how it was started"] [--only LABEL ...]

For each row (model and batch) it runs --rounds interleaved rounds (hotserve then ORT, then ORT then hotserve, ...;
each a fresh process), back to back so that drift on a shared machine hits the runtimes alike, and reports the
median of the round medians, the worst p99 and the spread of the round medians; one round is:
  hotserve    BIN run MODEL --input input=X.npy --threads T --warmup 3 --repeat R --output-dir TMP
                                                                              (median, p99, compile time)
  ORT         node ort_run.js MODEL ... intra-op threads T, session creation timed               (onnxruntime-node)
  OpenCV DNN  opencv_run.py MODEL X.npy, cv2.setNumThreads(T); MobileNetV2 from the opset-10 export (OpenCV 4.6
              cannot parse opset-13 Clip), ResNet-50 from the same file hotserve runs
on the same model files and inputs (from tools/models/make_models.py), checks hotserve's output against torch's
reference (max abs error), and prints a table of medians with the ratios hotserve/ORT and hotserve/OpenCV (below 1:
hotserve is faster) plus a table of model compile times. Writes the tables with date, machine and command to
RESULTS/engine-DATE.md and, with --readme, between the engine-results markers of that file; a run of some rows
(--only) writes RESULTS/engine-DATE-HHMM.md and leaves the README alone.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# (label, batch, hotserve + ORT model file, OpenCV model file or None (not run), case in cases.json)
ROWS = [
    ("ResNet-50", 1, "resnet50.onnx", "resnet50.onnx", "resnet50_b1"),
    ("ResNet-50", 8, "resnet50_dyn.onnx", "resnet50_dyn.onnx", "resnet50_b8"),
    ("MobileNetV2", 1, "mobilenet_v2.onnx", "mobilenet_v2_op10.onnx", "mobilenet_v2_b1"),
    ("MobileNetV2", 8, "mobilenet_v2_dyn.onnx", "mobilenet_v2_op10.onnx", "mobilenet_v2_b8"),
    ("MobileNetV3", 1, "mobilenet_v3.onnx", None, "mobilenet_v3_b1"),
    ("MobileNetV3", 8, "mobilenet_v3_dyn.onnx", None, "mobilenet_v3_b8"),
    ("Text detector", 1, "text_det.onnx", None, "text_det_b1"),
    ("Text detector", 8, "text_det_dyn.onnx", None, "text_det_b8"),
    ("Text recognizer", 1, "text_rec.onnx", None, "text_rec_b1"),
    ("Text recognizer", 8, "text_rec_dyn.onnx", None, "text_rec_b8"),
    ("Transformer block", 1, "transformer.onnx", None, "transformer_b1"),
    ("BERT encoder", 1, "bert_encoder.onnx", None, "bert_encoder_b1"),
    ("BERT encoder", 8, "bert_encoder.onnx", None, "bert_encoder_b8"),
    ("LSTM tagger", 1, "lstm_tagger.onnx", None, "lstm_tagger_b1"),
    ("LSTM tagger", 4, "lstm_tagger.onnx", None, "lstm_tagger_b4"),
    ("GRU", 1, "gru.onnx", None, "gru_b1"),
]


def run(cmd, timeout=900):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc.returncode, proc.stdout


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in: " + text[-300:])


def ms_after(text, *words):
    """The first number (in ms) that follows one of `words` on a line of hotserve's output, else None."""
    for word in words:
        m = re.search(r"\b%s\b[^0-9\n]*([0-9]+(?:\.[0-9]+)?)\s*(ms|us|s)\b" % word, text, re.IGNORECASE)
        if m:
            scale = {"ms": 1.0, "us": 1e-3, "s": 1e3}[m.group(2)]
            return float(m.group(1)) * scale
    return None


def bench_hotserve(args, model, in_name, x_path, out_name, ref_path):
    with tempfile.TemporaryDirectory(prefix="hs-bench-") as out:
        rc, text = run([args.hotserve, "run", model, "--input", in_name + "=" + x_path, "--threads", str(args.threads),
                        "--warmup", "3", "--repeat", str(args.repeat), "--output-dir", out])
        if rc != 0:
            return {"error": text.strip().splitlines()[-1][:160] if text.strip() else "exit %d" % rc}
        res = {"median_ms": ms_after(text, "median"), "p99_ms": ms_after(text, "p99"),
               "compile_ms": ms_after(text, "compile", "load")}
        try:
            got = np.load(os.path.join(out, out_name + ".npy"))
            want = np.load(ref_path)
            res["max_err"] = float(np.abs(got.astype(np.float64) - want).max()) if got.shape == want.shape \
                else float("nan")
        except (OSError, ValueError):
            res["max_err"] = float("nan")
        return res


def bench_ort(args, model, in_name, x_path, spin=True):
    rc, text = run(["node", os.path.join(HERE, "ort_run.js"), model, "--input", in_name + "=" + x_path,
                    "--threads", str(args.threads), "--repeat", str(args.repeat), "--loads", "3"] +
                   ([] if spin else ["--no-spin"]))
    if rc != 0:
        return {"error": text.strip()[-160:]}
    res = last_json(text)
    res["compile_ms"] = sorted(res["create_ms"])[len(res["create_ms"]) // 2]
    return res


def bench_opencv(args, model, x_path):
    if model is None:
        return {"error": "not run"}
    rc, text = run([sys.executable, os.path.join(HERE, "opencv_run.py"), model, x_path,
                    "--threads", str(args.threads), "--repeat", str(args.repeat)])
    if rc != 0:
        return {"error": text.strip()[-160:]}
    res = last_json(text)
    if "load_ms" in res:
        res["compile_ms"] = res["load_ms"]
    return res


def combine(rounds):
    """One runtime's rounds of a row: median of the round medians, worst p99, spread of the round medians (%),
    the first round's compile time and the worst error against torch."""
    ok = [r for r in rounds if r.get("median_ms") is not None]
    if not ok:
        return rounds[0] if rounds else {"error": "not run"}
    meds = sorted(r["median_ms"] for r in ok)
    med = meds[len(meds) // 2] if len(meds) % 2 else (meds[len(meds) // 2 - 1] + meds[len(meds) // 2]) / 2
    out = {"median_ms": med, "best_ms": meds[0], "p99_ms": max(r.get("p99_ms") or 0.0 for r in ok),
           "spread": "%.0f%%" % (100.0 * (meds[-1] - meds[0]) / med), "compile_ms": ok[0].get("compile_ms")}
    errs = [r["max_err"] for r in ok if r.get("max_err") is not None]
    if errs:
        out["max_err"] = max(errs)
    return out


def fmt(v, digits=1):
    return "n/a" if v is None or (isinstance(v, float) and v != v) else "%.*f" % (digits, v)


def ratio(a, b):
    if a.get("median_ms") is None or b.get("median_ms") is None:
        return "n/a"
    return "%.2f" % (a["median_ms"] / b["median_ms"])


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        have = set(text.split())
        names = [("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512F"), ("avx512bw", "AVX-512BW"),
                 ("avx512_vnni", "AVX-512 VNNI"), ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX")]
        flags = ", ".join(n for f, n in names if f in have) or "no AVX2"
    except OSError:
        pass
    load = os.getloadavg()[0]
    return "%d cores (os.cpu_count), %s, %s, load average %.1f at start" % (os.cpu_count(), cpu, flags, load)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row (each a fresh process)")
    p.add_argument("--ort-spin", choices=("on", "off", "both"), default="both",
                   help="ORT's intra-op spin-waiting (allow_spinning); both: run each, compare with the faster")
    p.add_argument("--results", default=None)
    p.add_argument("--readme", default=None)
    p.add_argument("--command", default=" ".join(sys.argv))
    p.add_argument("--only", nargs="+", help="row labels to run (default: all), e.g. --only 'LSTM tagger' GRU")
    p.add_argument("--int8-dir", default=None,
                   help="add the int8 rows (int8_rows.py) on the QDQ models tools/quantize.py wrote into this folder")
    args = p.parse_args(argv)
    with open(os.path.join(args.cache, "cases.json")) as f:
        cases = json.load(f)
    started = datetime.datetime.now(datetime.timezone.utc)
    mach = machine()

    rows = [r for r in ROWS if not args.only or r[0] in args.only]
    spins = {"on": [True], "off": [False], "both": [True, False]}[args.ort_spin]
    results = []
    for label, batch, model, cv_model, case in rows:
        (in_name, x_rel), = cases[case]["inputs"].items()
        (out_name, ref_rel), = cases[case]["outputs"].items()
        x_path, ref_path = os.path.join(args.cache, x_rel), os.path.join(args.cache, ref_rel)
        hs_rounds, ort_rounds = [], {True: [], False: []}
        cv = {"error": "not run"}
        for rnd in range(args.rounds):
            print("engine bench: %s batch %d, round %d/%d ..." % (label, batch, rnd + 1, args.rounds),
                  file=sys.stderr, flush=True)
            # interleaved, and the order alternates so neither runtime always runs right after the other
            mpath = os.path.join(args.cache, model)
            if rnd % 2 == 0:
                hs_rounds.append(bench_hotserve(args, mpath, in_name, x_path, out_name, ref_path))
                for spin in spins:
                    ort_rounds[spin].append(bench_ort(args, mpath, in_name, x_path, spin))
            else:
                for spin in reversed(spins):
                    ort_rounds[spin].append(bench_ort(args, mpath, in_name, x_path, spin))
                hs_rounds.append(bench_hotserve(args, mpath, in_name, x_path, out_name, ref_path))
            if rnd == 0:  # OpenCV once: it is a second reference, not the bar
                cv = bench_opencv(args, cv_model and os.path.join(args.cache, cv_model), x_path)
        hs = combine(hs_rounds)
        by_spin = {spin: combine(ort_rounds[spin]) for spin in spins}
        # the reference is ORT's faster setting in this row (by median of round medians)
        ref_spin = min(spins, key=lambda sp: by_spin[sp].get("median_ms") or float("inf"))
        ort = dict(by_spin[ref_spin], spin=ref_spin)
        per_round = [a["median_ms"] / b["median_ms"] for a, b in zip(hs_rounds, ort_rounds[ref_spin])
                     if a.get("median_ms") and b.get("median_ms")]
        results.append((label, batch, model, cv_model, hs, ort, cv, per_round))

    lines = ["| model | batch | hotserve median ms (p99) [spread] | ORT median ms (p99) [spread] | "
             "OpenCV median ms (p99) | hotserve/ORT | per-round hotserve/ORT | best rounds hotserve/ORT | "
             "hotserve/OpenCV | hotserve max abs err vs torch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, batch, _, _, hs, ort, cv, per_round in results:
        cells = []
        for r in (hs, ort, cv):
            if "error" in r:
                cells.append("error: %s" % r["error"])
            elif "spread" in r:
                cells.append("%s (%s) [%s]%s" % (fmt(r.get("median_ms"), 2), fmt(r.get("p99_ms"), 2), r["spread"],
                                                 "" if "spin" not in r else
                                                 (" spin" if r["spin"] else " no-spin")))
            else:
                cells.append("%s (%s)" % (fmt(r.get("median_ms"), 2), fmt(r.get("p99_ms"), 2)))
        rounds = "%.2f-%.2f" % (min(per_round), max(per_round)) if per_round else "n/a"
        best = "%.2f" % (hs["best_ms"] / ort["best_ms"]) if hs.get("best_ms") and ort.get("best_ms") else "n/a"
        lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, batch, cells[0], cells[1], cells[2], ratio(hs, ort), rounds, best, ratio(hs, cv),
            "%.2g" % hs["max_err"] if hs.get("max_err") is not None else "n/a"))
    lines += ["", "Time to compile each model file (hotserve: load + compile as `hotserve run` reports it; ORT: "
              "InferenceSession.create, median of 3; OpenCV: readNetFromONNX):", "",
              "| model file | hotserve ms | ORT ms | OpenCV ms (file) |", "|---|---|---|---|"]
    for label, batch, model, cv_model, hs, ort, cv, _ in results:
        lines.append("| %s | %s | %s | %s (%s) |" % (model, fmt(hs.get("compile_ms")), fmt(ort.get("compile_ms")),
                                                      fmt(cv.get("compile_ms")), cv_model or "not run"))
    if args.int8_dir:
        import int8_rows
        print("engine bench: int8 rows ...", file=sys.stderr, flush=True)
        rows8 = int8_rows.bench_int8(args, cases, run, ms_after, last_json, HERE)
        lines += ["", "int8 (tools/quantize.py's calibrated QDQ models; %d interleaved rounds per row: median of the "
                  "round medians, their spread, the worst p99):" % int8_rows.ROUNDS, "", int8_rows.format_int8(rows8)]
    table = "\n".join(lines)
    header = ("Engine benchmark, %s UTC. Machine: %s; load average %.1f at the end. Threads: %d (all three "
              "runtimes). Each row: %d rounds, hotserve and ORT interleaved (order alternating), each round %d timed "
              "runs after 3 warm-up runs in a fresh process; median = median of the round medians, p99 = worst "
              "round's p99, [spread] = (slowest - fastest round median) / median; best rounds = fastest round "
              "median against fastest round median (the least disturbed rounds on a shared machine); ORT ran with "
              "its intra-op spin-waiting %s and the ORT column is its faster setting (spin / no-spin); OpenCV runs "
              "in the first round only. Times in ms.\nCommand: `%s`\n" % (started.strftime("%Y-%m-%d %H:%M"), mach,
                                                       os.getloadavg()[0], args.threads, args.rounds, args.repeat,
                                                       {"on": "on", "off": "off", "both": "on and off"}[args.ort_spin],
                                                       args.command))
    report = header + "\n" + table + "\n"
    print(report)
    if args.results:
        os.makedirs(args.results, exist_ok=True)
        # a run of some rows (--only) gets a file of its own and leaves the README's full table alone
        stamp = started.strftime("%Y-%m-%d-%H%M" if args.only else "%Y-%m-%d")
        path = os.path.join(args.results, "engine-%s.md" % stamp)
        with open(path, "w") as f:
            f.write("# " + report)
        print("engine bench: wrote %s" % path, file=sys.stderr)
    if args.readme and not args.only:
        replace_section(args.readme, "engine-results", report)
    return 0


def replace_section(path, marker, text):
    """Replaces what lies between <!-- MARKER:begin --> and <!-- MARKER:end --> in PATH (left alone if absent)."""
    with open(path) as f:
        doc = f.read()
    begin, end = "<!-- %s:begin -->" % marker, "<!-- %s:end -->" % marker
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        print("engine bench: %s has no %s markers; not updated" % (path, marker), file=sys.stderr)
        return
    with open(path, "w") as f:
        f.write(doc[:i + len(begin)] + "\n" + text + doc[j:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

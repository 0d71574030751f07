#!/usr/bin/python3
"""cpu_time.py - CPU time per run of hotserve and ONNX Runtime on the same models, from the processes' own rusage.

    cpu_time.py --hotserve BIN --cache DIR --int8-dir DIR [--case bert_encoder_b1 ...] [--rounds 3] [--runs 40]
                [--threads 1]

On a shared machine wall times swing with the other processes; CPU time barely does. Each measurement runs a model
twice in fresh processes, with `--repeat 5` and with `--repeat 5 + RUNS` (same warm-up, same load), and divides the
difference of their user + system CPU time by RUNS: the CPU time of one run, without loading, compiling and
warming up. Four runtimes per case, interleaved round by round: hotserve on the float32 model, hotserve on the QDQ
file of --int8-dir (tools/quantize.py), ONNX Runtime (bench/node_modules, ort_run.js) on each. Prints one markdown
row per case: the medians over the rounds (ms of CPU per run) and hotserve int8's ratio to each of the others.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# case -> (float32 file in the cache, QDQ file in --int8-dir)
FILES = {"bert_encoder": ("bert_encoder.onnx", "bert_encoder_int8.onnx"),
         "resnet50": ("resnet50_dyn.onnx", "resnet50_int8.onnx"),
         "mobilenet_v2": ("mobilenet_v2_dyn.onnx", "mobilenet_v2_int8.onnx")}


def cpu_of(cmd):
    """User + system CPU seconds of cmd (a child process run to completion)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd[0:3], r.stderr.strip()[-300:]))
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def per_run_ms(cmd_of, runs):
    return 1000.0 * (cpu_of(cmd_of(5 + runs)) - cpu_of(cmd_of(5))) / runs


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--int8-dir", required=True)
    p.add_argument("--case", nargs="+", default=["bert_encoder_b1", "bert_encoder_b8"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    with open(os.path.join(args.cache, "cases.json")) as f:
        cases = json.load(f)
    print("| case | threads | hotserve float32 | hotserve int8 | ORT float32 | ORT int8 (same QDQ file) | "
          "hotserve int8 / ORT float32 | hotserve int8 / ORT int8 | hotserve int8 / hotserve float32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.case:
        fp32, qdq = FILES[case.rsplit("_b", 1)[0]]
        (in_name, x_rel), = cases[case]["inputs"].items()
        x = "%s=%s" % (in_name, os.path.join(args.cache, x_rel))
        models = {"hs32": os.path.join(args.cache, fp32), "hs8": os.path.join(args.int8_dir, qdq)}
        models["ort32"], models["ort8"] = models["hs32"], models["hs8"]
        t = str(args.threads)

        def cmd(key):
            if key.startswith("hs"):
                return lambda n: [args.hotserve, "run", models[key], "--input", x, "--threads", t, "--warmup", "0",
                                  "--repeat", str(n)]
            return lambda n: ["node", os.path.join(HERE, "ort_run.js"), models[key], "--input", x, "--threads", t,
                              "--warmup", "0", "--repeat", str(n)]
        got = {k: [] for k in models}
        for rnd in range(args.rounds):
            keys = list(models) if rnd % 2 == 0 else list(reversed(list(models)))
            for k in keys:
                got[k].append(per_run_ms(cmd(k), args.runs))
            print("cpu_time: %s round %d: %s" % (case, rnd + 1, ", ".join("%s %.1f" % (k, got[k][-1]) for k in keys)),
                  file=sys.stderr, flush=True)
        med = {k: sorted(v)[len(v) // 2] for k, v in got.items()}
        print("| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f |" % (
            case, args.threads, med["hs32"], med["hs8"], med["ort32"], med["ort8"], med["hs8"] / med["ort32"],
            med["hs8"] / med["ort8"], med["hs8"] / med["hs32"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

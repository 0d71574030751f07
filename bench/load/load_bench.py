#!/usr/bin/python3
"""load_bench.py - time to ready and memory held while two versions overlap: hotserve vs ONNX Runtime.

    load_bench.py --hotserve BIN --cache DIR [--loads 5] [--threads 2] [--results DIR] [--readme FILE]
                  [--command "how it was started"]

For ResNet-50 and MobileNetV2 (batch-1 exports from tools/models/make_models.py):

hotserve, with the server (`hotserve serve`), one server per model:
  starts the server on an empty model repository (baseline RSS), then publishes versions 1..N+1 one after another,
  each the same network with slightly different weights (one bias changed: new content, new SHA-256), with
  `hotserve publish` (falling back to copying the version directory in and renaming it, when publish is missing);
  reads the server's log line "model M version V ready in T ms (verify a, load b, warm-up c)" for each; samples the
  server's RSS every few ms from the moment a version is published until it is ready and the old version is gone.
  Reported: the first (cold) load, the median of the N reloads for each stage, the RSS with version 1 loaded, the
  median peak RSS while a new version loads beside the old one (the overlap extra also in KiB and as a share of one
  version), the RSS after the last reload, and the server's minor page faults per reload. Reloads are
  --gap seconds apart (default 6 s, past the server's --trim-delay of 5 s, so each starts with the freed pages
  handed back; with --gap 2 the pages a retired version freed are still there for the next one).
hotserve, without the server (only when `hotserve serve` cannot be used): N times `hotserve run MODEL --repeat 1`,
  reading the load/compile time it prints (no verify, no separate warm-up, no overlap figure).
Always, as a last table: N+1 times `hotserve run MODEL --repeat 1` (a new process each time: load + compile as it
  prints it) against ONNX Runtime's creates.
ONNX Runtime (onnxruntime-node): InferenceSession.create N+1 times in one process (the first is cold), keeping
  every session alive: RSS with one session and with two, above node's RSS before any session; the minor page
  faults of each create (its later creates fault their session's memory afresh, as a reload past --trim-delay
  does).
"""
import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "engine"))
import engine_bench  # noqa: E402  (machine(), replace_section(), ms_after())

MODELS = [("ResNet-50", "resnet50.onnx", "resnet50_b1"), ("MobileNetV2", "mobilenet_v2.onnx", "mobilenet_v2_b1")]
READY_RE = re.compile(r"model (\S+) version (\d+) ready in ([0-9.]+) ms \(verify ([0-9.]+), load ([0-9.]+), "
                      r"warm-up ([0-9.]+)\)(?:; loader CPU ms: read ([0-9.]+), load ([0-9.]+), warm-up ([0-9.]+))?"
                      r"(?:.*?\(hash CPU ms ([0-9.]+) beside the load, then waited for ([0-9.]+) ms\))?")
# What changes from one version to the next: one bias (the first rows), every float tensor (a retrained
# model: same graph, all weights new), or only the last layer (a fine-tuned head); "external" is "retrained" saved
# with its weights as external data (model.onnx + weights.bin, onnx's save_as_external_data).
VARIANTS = [("one bias", "bias"), ("retrained weights", "retrained"), ("new head", "head"),
            ("retrained weights, external data", "external")]


def rss_mb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def faults(pid):
    """(minor, major) page faults of the process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])  # minflt, majflt (fields 10 and 12 of proc(5))


class RssSampler:
    """Samples a process's RSS every `period` seconds on a thread; .peak() is the largest value since .reset()."""

    def __init__(self, pid, period=0.003):
        self.pid, self.period = pid, period
        self._peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            v = rss_mb(self.pid)
            if v is not None:
                with self._lock:
                    self._peak = max(self._peak, v)
            time.sleep(self.period)

    def reset(self):
        with self._lock:
            self._peak = rss_mb(self.pid) or 0.0

    def peak(self):
        with self._lock:
            return self._peak

    def stop(self):
        self._stop.set()
        self._thread.join()


def make_versions(src, outdir, n, variant="bias"):
    """Writes n variants of the model src as outdir/k/model.onnx; version k adds 1e-3*k to: the last 1-D
    initializer (variant "bias"), every float initializer ("retrained", and "external", which saves every
    tensor of 1 KiB or more in outdir/k/weights.bin), or the last layer's weight matrix and bias, the last 2-D
    initializer and the 1-D ones of the node that reads it ("head")."""
    model = onnx.load(src)
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    last1 = [i for i in floats if len(i.dims) == 1][-1:]
    if variant in ("retrained", "external"):
        targets = floats
    elif variant == "head":
        # the last weight matrix and the 1-D tensors of the node that reads it (its bias), not merely the
        # last 1-D initializer in file order: in ResNet-50's export that is a Conv's bias, which made every
        # "head" version rebuild that Conv too
        mat = [i for i in floats if len(i.dims) == 2][-1:]
        names = {i.name for i in mat}
        readers = [nd for nd in model.graph.node if names & set(nd.input)]
        inputs = {x for nd in readers for x in nd.input}
        bias = [i for i in floats if len(i.dims) == 1 and i.name in inputs]
        targets = mat + (bias if bias else last1)
    else:
        targets = last1
    bases = [(t, numpy_helper.to_array(t).copy()) for t in targets]
    dirs = []
    for k in range(1, n + 1):
        d = os.path.join(outdir, str(k))
        os.makedirs(d, exist_ok=True)
        for t, base in bases:
            t.CopyFrom(numpy_helper.from_array((base + np.float32(1e-3 * k)).astype(np.float32), t.name))
        if variant == "external":
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # (save_model moves the tensors' bytes out of the model it is given)
            onnx.save_model(copy, os.path.join(d, "model.onnx"), save_as_external_data=True,
                            all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
        else:
            onnx.save(model, os.path.join(d, "model.onnx"))
        dirs.append(d)
    return dirs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_usable(binary):
    proc = subprocess.run([binary, "serve", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.returncode == 0 and "model-repository" in proc.stdout


def publish(binary, src_dir, model_dir, version):
    """Publishes src_dir as version `version` of model_dir: `hotserve publish`, else copy + atomic rename."""
    proc = subprocess.run([binary, "publish", src_dir, model_dir, "--version", str(version)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode == 0:
        return "hotserve publish"
    tmp = os.path.join(model_dir, ".incoming-%d" % version)
    shutil.copytree(src_dir, tmp)
    os.rename(tmp, os.path.join(model_dir, str(version)))
    return "copy + rename"


def bench_server(args, label, model_file, work, variant="bias", versions=None):
    """One server row; versions: folders make_versions wrote already (made here when None)."""
    name = os.path.splitext(model_file)[0]
    if versions is None:
        versions = make_versions(os.path.join(args.cache, model_file),
                                 os.path.join(work, "src-%s-%s" % (name, variant)), args.loads + 1, variant)
    repo = os.path.join(work, "repo-%s-%s" % (name, variant))
    model_dir = os.path.join(repo, name)
    os.makedirs(model_dir)
    log_path = os.path.join(work, "serve-%s.log" % name)
    log = open(log_path, "w")
    cmd = [args.hotserve, "serve", "--model-repository", repo, "--http-port", str(free_port()),
           "--poll-interval", "1", "--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    sampler = RssSampler(server.pid)
    loads, peaks, at_rest, minflt, how = [], [], [], [], None
    try:
        time.sleep(1.0)
        if server.poll() is not None:
            raise RuntimeError("hotserve serve exited with %s; see %s" % (server.returncode, log_path))
        empty_rss = rss_mb(server.pid)
        for k, src in enumerate(versions, start=1):
            if k > 1:
                # One version at rest: the RSS each reload starts from, after the --gap wait (past the
                # server's --trim-delay by default, so the pages a load left free have been handed back;
                # 0.5 s after a ready the RSS still holds them and would hide part of the overlap).
                at_rest.append(rss_mb(server.pid))
            sampler.reset()
            flt0 = faults(server.pid)[0]
            how = publish(args.hotserve, src, model_dir, k)
            deadline = time.time() + 120
            ready = None
            while ready is None and time.time() < deadline:
                with open(log_path) as f:
                    for m in READY_RE.finditer(f.read()):
                        if m.group(1) == name and int(m.group(2)) == k:
                            ready = m
                if server.poll() is not None:
                    raise RuntimeError("hotserve serve exited with %s; see %s" % (server.returncode, log_path))
                time.sleep(0.01)
            if ready is None:
                raise RuntimeError("version %d of %s never became ready; see %s" % (k, name, log_path))
            time.sleep(0.5)  # let the old version drain and be freed
            minflt.append(faults(server.pid)[0] - flt0)
            loads.append(tuple(float(ready.group(i)) if ready.group(i) else float("nan") for i in range(3, 12)))
            peaks.append(sampler.peak())
            # By default (--gap 6) wait past the server's --trim-delay (5 s), so the pages the old version
            # freed have been handed back before the next load, as when versions come minutes apart; a
            # gap under 5 s is the other case (reloads keep coming): the next version reuses those pages
            # (the warm weight memory of docs/REPOSITORY.md).
            time.sleep(args.gap)
        last_rss = rss_mb(server.pid)
    finally:
        sampler.stop()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    reloads = loads[1:]
    # total, verify, load, warm-up; loader CPU read, load, warm-up; hash CPU beside the load, hash wait
    med = [statistics.median(x[i] for x in reloads) for i in range(9)]
    return {"mode": "server", "publish": how, "first": loads[0], "median": med, "n": len(reloads),
            "faults_first": minflt[0], "faults": statistics.median(minflt[1:]),
            "empty_rss": empty_rss, "one_version_rss": statistics.median(at_rest) if at_rest else float("nan"),
            "overlap_peak_rss": statistics.median(peaks[1:]), "last_rss": last_rss}


def bench_run(args, model_file):
    times, minflt = [], []
    for _ in range(args.loads + 1):
        x = os.path.join(args.cache, "ref", "resnet50_b1" if "resnet" in model_file else "mobilenet_v2_b1",
                         "input.npy")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        proc = subprocess.run([args.hotserve, "run", os.path.join(args.cache, model_file), "--input", "input=" + x,
                               "--repeat", "1", "--threads", str(args.threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            return {"mode": "run", "error": proc.stdout.strip()[-160:]}
        t = engine_bench.ms_after(proc.stdout, "compile", "load")
        if t is None:
            return {"mode": "run", "error": "hotserve run printed no load time"}
        times.append(t)
        minflt.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before)
    return {"mode": "run", "first": times[0], "median": statistics.median(times[1:]), "n": len(times) - 1,
            "faults": statistics.median(minflt[1:])}


def bench_ort(args, model_file):
    proc = subprocess.run(["node", os.path.join(HERE, "..", "engine", "ort_run.js"),
                           os.path.join(args.cache, model_file), "--loads", str(args.loads + 1), "--hold",
                           "--repeat", "0", "--threads", str(args.threads)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        return {"error": proc.stdout.strip()[-160:]}
    r = engine_bench.last_json(proc.stdout)
    fl = r.get("create_minflt") or []
    return {"first": r["create_ms"][0], "median": statistics.median(r["create_ms"][1:]), "n": len(r["create_ms"]) - 1,
            "faults_first": fl[0] if fl else None, "faults": statistics.median(fl[1:]) if len(fl) > 1 else None,
            "base_rss": r["rss_before_mb"], "one_rss": r["rss_after_load_mb"][0], "two_rss": r["rss_after_load_mb"][1]}


def f0(v):
    return "n/a" if v is None else "%.0f" % v


def fk(v):
    """A page-fault count in thousands."""
    return "n/a" if v is None else "%.1fk" % (v / 1000.0)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--loads", type=int, default=5, help="reloads to take the median of (after one cold load)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gap", type=float, default=6.0,
                   help="seconds from one version's ready to the next publish (default 6: past --trim-delay)")
    p.add_argument("--results", default=None)
    p.add_argument("--readme", default=None)
    p.add_argument("--command", default=" ".join(sys.argv))
    p.add_argument("--only", choices=[m[1] for m in MODELS], help="one model file (for a quick check)")
    p.add_argument("--variants", default=",".join(v for _, v in VARIANTS),
                   help="what changes per version, comma-separated: bias (one bias), retrained (every float tensor), "
                        "head (the last layer); default all three, one server row each")
    args = p.parse_args(argv)
    if args.loads < 2:
        p.error("--loads must be at least 2")
    started = datetime.datetime.now(datetime.timezone.utc)
    mach = engine_bench.machine()
    use_server = serve_usable(args.hotserve)
    rows, cold_runs = [], []
    with tempfile.TemporaryDirectory(prefix="hs-load-") as work:
        for label, model_file, _ in MODELS:
            if args.only and model_file != args.only:
                continue
            print("load bench: %s ..." % label, file=sys.stderr, flush=True)
            ort = bench_ort(args, model_file)
            cold_runs.append((label, bench_run(args, model_file), ort))
            if not use_server:
                rows.append((label, model_file, bench_run(args, model_file), ort))
                continue
            wanted = args.variants.split(",")
            for vlabel, variant in VARIANTS:
                if variant not in wanted:
                    continue
                print("load bench: %s, %s ..." % (label, vlabel), file=sys.stderr, flush=True)
                try:
                    hs = bench_server(args, label, model_file, work, variant)
                except RuntimeError as e:
                    hs = {"mode": "server", "error": str(e)}
                rows.append(("%s, %s" % (label, vlabel), model_file, hs, ort))

    lines = []
    if use_server:
        lines += ["Time to ready with `hotserve serve` (ms; first = cold load of version 1, then the median of %d "
                  "reloads, each published %g s after the previous one was ready), from the server's own log line; ONNX "
                  "Runtime: InferenceSession.create, same file. ready = verify + load + warm-up:"
                  % (args.loads, args.gap), "",
                  "| model, what changes per version | hotserve first: total (verify / load / warm-up) | hotserve reload "
                  "median: total (verify / load / warm-up) | loader CPU, reload median (read / load / warm-up) | "
                  "hotserve page faults: first / reload median | ORT first | ORT median | ORT page faults: first / "
                  "median | hotserve load / ORT | hotserve ready / ORT |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, model_file, hs, ort in rows:
            if "error" in hs:
                lines.append("| %s | error: %s | | | | %s | %s | | | |" % (label, hs["error"], f0(ort.get("first")),
                                                                         f0(ort.get("median"))))
                continue
            a, b = hs["first"], hs["median"]
            lines.append("| %s | %s (%s / %s / %s) | %s (%s / %s / %s) | %s / %s / %s | %s / %s | %s | %s | %s / %s | %s "
                         "| %s |" % (
                label, f0(a[0]), f0(a[1]), f0(a[2]), f0(a[3]), f0(b[0]), f0(b[1]), f0(b[2]), f0(b[3]),
                f0(b[4]), f0(b[5]), f0(b[6]), fk(hs.get("faults_first")), fk(hs.get("faults")),
                f0(ort.get("first")), f0(ort.get("median")), fk(ort.get("faults_first")), fk(ort.get("faults")),
                "%.2f" % (b[2] / ort["median"]) if "median" in ort else "n/a",
                "%.2f" % (b[0] / ort["median"]) if "median" in ort else "n/a"))
        lines += ["", "Memory (RSS, MB). hotserve: the server's RSS on an empty repository, with one version at rest (the "
                  "median RSS each reload starts from, --gap s after the previous ready, past --trim-delay by default), "
                  "the median peak while a new version loads beside the old one (overlap extra = peak - one version), "
                  "and %g s after the last reload (with a gap past --trim-delay, 5 s, old versions are freed and their "
                  "pages handed back). ORT: node before any session, with one session, " % args.gap +
                  "with two sessions of the same file:", "",
                  "| model | hotserve empty | hotserve one version | hotserve peak during overlap | "
                  "hotserve overlap extra | hotserve overlap extra, KiB | extra / one version | hotserve after reloads "
                  "| ORT base | ORT one session | ORT two sessions | ORT second session extra |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, model_file, hs, ort in rows:
            if "error" in hs or "error" in ort:
                continue
            extra = hs["overlap_peak_rss"] - hs["one_version_rss"]
            lines.append("| %s | %s | %s | %s | %s | %s | %.3f | %s | %s | %s | %s | %s |" % (
                label, f0(hs["empty_rss"]), f0(hs["one_version_rss"]), f0(hs["overlap_peak_rss"]),
                f0(extra), f0(extra * 1024), extra / hs["one_version_rss"], f0(hs["last_rss"]), f0(ort["base_rss"]),
                f0(ort["one_rss"]),
                f0(ort["two_rss"]), f0(ort["two_rss"] - ort["one_rss"])))
        pub = {hs.get("publish") for _, _, hs, _ in rows if hs.get("publish")}
        lines += ["", "Versions published with: %s." % (", ".join(sorted(pub)) or "n/a")]
    else:
        lines += ["`hotserve serve` is not usable in this build: hotserve's time is `hotserve run`'s load + compile "
                  "(no verify or warm-up stage, no overlap figure).", "",
                  "| model | hotserve first | hotserve median | ORT first | ORT median | hotserve / ORT | "
                  "ORT one session MB | ORT two sessions MB |", "|---|---|---|---|---|---|---|---|"]
        for label, model_file, hs, ort in rows:
            if "error" in hs:
                lines.append("| %s | error: %s | | %s | %s | | | |" % (label, hs["error"], f0(ort.get("first")),
                                                                       f0(ort.get("median"))))
                continue
            lines.append("| %s | %s | %s | %s | %s | %.2f | %s | %s |" % (
                label, f0(hs["first"]), f0(hs["median"]), f0(ort["first"]), f0(ort["median"]),
                hs["median"] / ort["median"], f0(ort["one_rss"]), f0(ort["two_rss"])))
    lines += ["", "A new process per load (`hotserve run MODEL --repeat 1`, %d + 1 times: load + compile as it prints "
              "it, oneDNN's primitive cache empty each time) against ONNX Runtime's InferenceSession.create on the "
              "same file (first = the process's first create, median = later creates in that process), ms:"
              % args.loads, "",
              "| model | hotserve run first | hotserve run median | hotserve run page faults, median | ORT first | "
              "ORT median | ORT page faults: first / median | run median / ORT first | run median / ORT median |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, hr, ort in cold_runs:
        if "error" in hr or "error" in ort:
            lines.append("| %s | error: %s | | | | | | | |" % (label, hr.get("error") or ort.get("error")))
            continue
        lines.append("| %s | %s | %s | %s | %s | %s | %s / %s | %.2f | %.2f |" % (
            label, f0(hr["first"]), f0(hr["median"]), fk(hr.get("faults")), f0(ort["first"]), f0(ort["median"]),
            fk(ort.get("faults_first")), fk(ort.get("faults")), hr["median"] / ort["first"],
            hr["median"] / ort["median"]))
    lines += ["", "Page faults are minor faults (fresh pages touched) of the whole process: the server's from the "
              "publish to 0.5 s after the ready line, each `hotserve run` process's in all, node's during each "
              "create (process.resourceUsage). ORT's later creates (its median) run in a process whose one-time "
              "set-up is done, but their session's memory is fresh (their page faults); a hotserve reload "
              "published past --trim-delay is the same case (a warm server, its free pages handed back), and one "
              "under it (--gap 2) reuses the retired version's pages, which no ORT column measures."]
    lines += ["", "Load average at the end: %s." % " ".join("%.1f" % x for x in os.getloadavg())]
    header = ("Load benchmark, %s UTC. Machine: %s. Threads: %d. %d reloads per model after one cold load.\n"
              "Command: `%s`\n" % (started.strftime("%Y-%m-%d %H:%M"), mach, args.threads, args.loads, args.command))
    report = header + "\n" + "\n".join(lines) + "\n"
    print(report)
    if args.results:
        os.makedirs(args.results, exist_ok=True)
        path = os.path.join(args.results, "load-%s.md" % started.strftime("%Y-%m-%d-%H%M"))
        with open(path, "w") as f:
            f.write("# " + report)
        print("load bench: wrote %s" % path, file=sys.stderr)
    if args.readme:
        engine_bench.replace_section(args.readme, "load-results", report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

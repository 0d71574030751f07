#!/usr/bin/python3
"""reload_bench.py - what a reload every 2 s costs while serving a model (run by bench/reload/run.sh).

--model mobilenet_v2 (default) or resnet50 (the seed system's case: a ResNet-50 changed every 2 s).
--weights retrained (default): every float tensor is new in every version, as after retraining;
--weights head: only the classifier's weight matrix changes (the mode of the runs before it existed).

One server, one wrk load at fixed concurrency over keep-alive connections (binary tensor bodies), in
alternating blocks of one run: --blocks blocks of --duration/--blocks seconds while a new version (same
architecture, new weights) arrives every --period seconds, each between two blocks of the same length
without reloads (A B A B ... A). Each block with reloads is compared with the mean of the two blocks without reloads on
either side of it, and the ratios are the means over the blocks with reloads: a machine whose speed
drifts during the run (shared, noisy, thermal) moves both sides of each comparison alike. After each
block with reloads the run waits until the last version published in it is ready (or failed) before
the next block without reloads starts, so no load spills into it. Reports per block: req/s,
p50/p99/p99.9, non-2xx and socket errors, peak RSS; for each new version its load time (verify, load,
warm-up) and the latency of its first request (status document's first_request_ms); then the ratios
reload/no-reload against the targets (throughput >= 0.98, ResNet-50 0.97; p99 <= 1.10; zero errors;
first request <= 1.2x steady median).

How versions arrive (--publish): ahead (the default) publishes them all with `hotserve publish` into a
staging folder before the server starts and renames one into the repository each --period, as when
versions come complete from another machine (the publisher of a shared repository is a CI job, not the
serving pod); live runs `hotserve publish` in the blocks with reloads, on the cores the server uses, and
reports its CPU (the default of the runs recorded before 2026-12-07 17:00 UTC).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serve"))
import benchlib  # noqa: E402
from benchlib import hsys  # noqa: E402


MODELS = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet-50"}


def model_path(cache, model):
    path = os.path.join(cache, model + ".onnx")
    if not os.path.exists(path):
        print("exporting %s into %s (tools/models/make_models.py) ..." % (MODELS[model], cache), flush=True)
        subprocess.run(["/usr/bin/python3", os.path.join(benchlib.ROOT, "tools", "models", "make_models.py"),
                        cache, "--only", model], check=True)
    return path


def make_versions(base, src, n, weights):
    """Writes n source dirs src/<v>/model.onnx with weights scaled per version: every float tensor
    (weights == "retrained") or only the classifier's weight matrix, the largest 2-D one ("head")."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(base)
    floats = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    if weights == "head":
        floats = [max((i for i in floats if len(i.dims) == 2), key=lambda i: i.dims[0] * i.dims[1])]
    orig = [(i, numpy_helper.to_array(i).copy()) for i in floats]
    inp = m.graph.input[0]
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    dirs = []
    for v in range(1, n + 1):
        for init, w0 in orig:
            init.CopyFrom(numpy_helper.from_array((w0 * (1.0 + 0.001 * v)).astype(np.float32), init.name))
        d = os.path.join(src, str(v))
        os.makedirs(d, exist_ok=True)
        onnx.save(m, os.path.join(d, "model.onnx"))
        dirs.append(d)
    return dirs, inp.name, shape


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with open("/proc/%d/status" % self.pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return
            self.stop.wait(0.1)


def _stat_cpu(path):
    """(comm, user CPU seconds, system CPU seconds) from a /proc stat file."""
    with open(path) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    tck = os.sysconf("SC_CLK_TCK")
    return s[s.index("(") + 1:s.rindex(")")], int(fields[11]) / tck, int(fields[12]) / tck


def thread_cpu(pid):
    """CPU seconds the server has used so far, user and system time apart: {"user", "sys"} of the
    whole process (ended threads included) and {"loader_user", "loader_sys"} of hs-loader."""
    out = {"loader_user": 0.0, "loader_sys": 0.0}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            comm, user, sys_ = _stat_cpu("/proc/%d/task/%s/stat" % (pid, t))
        except OSError:
            continue                    # the thread ended meanwhile
        if comm == "hs-loader":
            out["loader_user"] += user
            out["loader_sys"] += sys_
    _, out["user"], out["sys"] = _stat_cpu("/proc/%d/stat" % pid)
    return out


def publish_timed(src, model_dir, version):
    """`hotserve publish` as users run it; returns the CPU seconds the publisher process used."""
    p = subprocess.Popen([hsys.Env.hotserve, "publish", src, model_dir, "--version", str(version)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError("hotserve publish exited %d: %s" % (p.returncode, err.decode(errors="replace")[-500:]))
    return ru.ru_utime + ru.ru_stime


def overlap_table(trace_path, pub_windows, windows):
    """From the server's --trace file (and the publisher's own windows, same monotonic clock): for the
    requests of the blocks with reloads, how many overlapped each reload stage and their p99, against the
    requests that overlapped none; the blocks without reloads' p99 (server side) for reference.
    windows: (begin_ns, end_ns, reloading) of each block."""
    reqs, wins, first = [], [], {}
    with open(trace_path) as f:
        for line in f:
            e = json.loads(line)
            if e["ev"] == "request" and e["outcome"] == "success":
                reqs.append((e["end_ns"] - e["total_ns"], e["end_ns"], e["total_ns"], e["compute_ns"]))
                b = e["end_ns"] - e["total_ns"]
                if e["version"] > 1 and (e["version"] not in first or b < first[e["version"]][0]):
                    first[e["version"]] = (b, e["compute_ns"] / 1e6)
            elif e["ev"] == "stage" and e["stage"] != "swap":
                wins.append((e["stage"], e["begin_ns"], e["end_ns"]))
    wins += [("publish", b, e) for b, e in pub_windows]
    start = np.array([r[0] for r in reqs], dtype=np.int64)
    end = np.array([r[1] for r in reqs], dtype=np.int64)
    total = np.array([r[2] for r in reqs], dtype=np.float64) / 1e6
    steady, rel = np.zeros(len(reqs), bool), np.zeros(len(reqs), bool)
    for b, e, reloading in windows:
        inside = (start >= b) & (end <= e)
        if reloading:
            rel |= inside
        else:
            steady |= inside
    t_first = windows[0][0]
    if not steady.any() or not rel.any():
        return "(trace: too few requests to compare)\n"
    rows, any_stage = [], np.zeros(len(reqs), bool)
    for name in ("publish", "scan", "load", "warmup", "free", "trim"):
        m = np.zeros(len(reqs), bool)
        for n, b, e in wins:
            if n == name and e >= t_first:
                m |= (start < e) & (end > b)
        m &= rel
        any_stage |= m
        dur = [(e - b) / 1e6 for n, b, e in wins if n == name and e >= t_first]
        rows.append([name, "%.1f / %.1f" % (statistics.median(dur), max(dur)) if dur else "-", m.sum(),
                     "%.1f%%" % (100.0 * m.sum() / rel.sum()), "%.2f" % np.percentile(total[m], 99) if m.any() else "-"])
    none = rel & ~any_stage
    rows.append(["none of these", "", none.sum(), "%.1f%%" % (100.0 * none.sum() / rel.sum()),
                 "%.2f" % np.percentile(total[none], 99) if none.any() else "-"])
    rows.append(["(blocks without reloads, all)", "", steady.sum(), "", "%.2f" % np.percentile(total[steady], 99)])
    out = benchlib.md_table(["blocks with reloads: requests overlapping", "stage median / max ms", "requests", "share",
                             "their p99 ms (server side)"], rows)
    # the first request on each new version without its queue time: is a new version slow to run?
    steady_compute = float(np.median(np.array([r[3] for r in reqs], dtype=np.float64)[steady])) / 1e6
    fc = [c / steady_compute for _, c in first.values()]
    if fc:
        out += ("\nCompute time of the first request on each new version / the no-reload median compute (%.2f ms): "
                "median %.2f, worst %.2f over %d versions (the first-request ratios above include its queue time).\n"
                % (steady_compute, statistics.median(fc), max(fc), len(fc)))
    return out


def phase(url, body, hdr_len, conns, duration, pid):
    rss = RssSampler(pid)
    rss.start()
    cpu0, t0 = thread_cpu(pid), time.monotonic()
    s = benchlib.wrk(url, body, hdr_len, conns, duration)
    cpu1, t1 = thread_cpu(pid), time.monotonic()
    rss.stop.set()
    rss.join()
    s["peak_rss"] = rss.peak
    d = {k: cpu1[k] - cpu0[k] for k in cpu0}
    s["server_cpu"], s["loader_cpu"], s["wall"] = d["user"] + d["sys"], d["loader_user"] + d["loader_sys"], t1 - t0
    # outside the loader: the request (connection and compute) threads, the HTTP and watcher threads and
    # the hash thread each load starts beside the loader (~7 ms a MobileNetV2 version), user and system apart
    s["out_user"], s["out_sys"] = d["user"] - d["loader_user"], d["sys"] - d["loader_sys"]
    return s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", default=os.path.join(benchlib.ROOT, "build", "src", "hotserve"))
    p.add_argument("--duration", type=int, default=60,
                   help="seconds with reloads in all, split into --blocks blocks (default 60); as many without")
    p.add_argument("--blocks", type=int, default=3,
                   help="blocks with reloads (default 3), each between two blocks without: A B A B A B A")
    p.add_argument("--period", type=float, default=2.0, help="seconds between new versions (default 2)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="--threads for the server (0: its default)")
    p.add_argument("--cache", default=os.environ.get("HOTSERVE_MODEL_CACHE",
                                                     os.path.join(benchlib.ROOT, "build", "models")))
    p.add_argument("--loader-priority", choices=["low", "idle", "normal"], default=None,
                   help="the server's --loader-priority (default: the server's default)")
    p.add_argument("--loader-pace", type=int, default=None, metavar="PCT",
                   help="the server's --loader-pace (default: the server's default; 100: unpaced)")
    p.add_argument("--publisher-nice", type=int, default=0,
                   help="with --publish live: run the publisher (hotserve publish: copy, hash, fsync) this many nice steps down; in "
                        "production it runs on another machine (a CI job writing to the shared volume)")
    p.add_argument("--trace", action="store_true",
                   help="run the server with --trace and add a table of the requests that overlapped each reload "
                        "stage (publish, scan, load, warmup, free, trim) and their p99")
    p.add_argument("--trace-out", default=None, metavar="FILE",
                   help="with --trace: also keep the server's trace file there (JSON lines, trace.h)")
    p.add_argument("--publish", choices=["ahead", "live"], default="ahead",
                   help="ahead (the default): publish every version (`hotserve publish` into a staging folder on the "
                        "same file system) before the server starts, and in the blocks with reloads only rename each "
                        "one into the repository, as when versions come complete from elsewhere (a CI machine writing "
                        "to the shared volume), so the publisher's copy, hash and fsync do not share this machine's "
                        "cores with the server; live: run `hotserve publish` in the blocks with reloads, on the "
                        "server's cores (the default of the runs recorded before 2026-12-07 17:00 UTC)")
    p.add_argument("--publish-ahead", dest="publish", action="store_const", const="ahead",
                   help="the same as --publish ahead (kept for the commands of earlier results)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--model", choices=sorted(MODELS), default="mobilenet_v2",
                   help="mobilenet_v2 (default) or resnet50 (the seed system's case)")
    p.add_argument("--weights", choices=["retrained", "head"], default="retrained",
                   help="what changes per version: every float tensor (retrained, the default) or only the "
                        "classifier's weights (head)")
    a = p.parse_args()
    hsys.Env.hotserve = os.path.abspath(a.hotserve)
    hsys.Env.source = benchlib.ROOT
    os.makedirs(a.cache, exist_ok=True)
    base = model_path(a.cache, a.model)
    mname = MODELS[a.model]
    tmp = tempfile.mkdtemp(prefix="hs-bench-reload-")
    try:
        if a.blocks < 1 or a.duration < 2 * a.blocks:
            raise SystemExit("--blocks must be >= 1 and --duration at least 2 s per block")
        block_s = int(round(a.duration / a.blocks))
        per_block = int(block_s / a.period)           # publishes in one block with reloads
        n_new = a.blocks * per_block + 1
        print("preparing %d versions ..." % (n_new + 1), flush=True)
        dirs, in_name, shape = make_versions(base, os.path.join(tmp, "src"), n_new + 1, a.weights)
        served = "mobilenet" if a.model == "mobilenet_v2" else a.model  # the model's name in the repository
        repo_model = os.path.join(tmp, "repo", served)
        os.makedirs(repo_model)
        hsys.publish(dirs[0], repo_model, 1)
        stage_model = os.path.join(tmp, "stage", served)
        if a.publish == "ahead":
            print("publishing %d versions ahead into a staging folder ..." % n_new, flush=True)
            for i, d in enumerate(dirs[1:]):
                hsys.publish(d, stage_model, i + 2)
                shutil.rmtree(d, ignore_errors=True)
        extra = ["--log-level", "warn"] + (["--threads", str(a.threads)] if a.threads else [])
        if a.loader_priority:
            extra += ["--loader-priority", a.loader_priority]
        if a.loader_pace:
            extra += ["--loader-pace", str(a.loader_pace)]
        trace_path = os.path.join(tmp, "trace.jsonl")
        if a.trace:
            extra += ["--trace", trace_path]
        srv = hsys.Server(os.path.join(tmp, "repo"), *extra)
        c = srv.conn(timeout=120)
        hsys.wait_serving(c, served, 1, timeout=300)
        x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
        raw = x.tobytes()
        hdr = json.dumps({"inputs": [{"name": in_name, "datatype": "FP32", "shape": shape,
                                      "parameters": {"binary_data_size": len(raw)}}],
                          "parameters": {"binary_data_output": True}}).encode()
        body = os.path.join(tmp, "body.bin")
        open(body, "wb").write(hdr + raw)
        r = c.request("POST", "/v2/models/%s/infer" % served, hdr + raw,
                      {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(hdr))})
        if r.status != 200:
            raise SystemExit("%s request refused: HTTP %d %r" % (mname, r.status, r.body[:300]))
        url = "http://%s:%d/v2/models/%s/infer" % (srv.host, srv.port, served)
        benchlib.wrk(url, body, len(hdr), a.connections, 5)               # warm-up

        entries = {}            # (version, generation) -> last status entry seen
        published = []
        publisher_cpu = []
        pub_windows = []
        stop = threading.Event()
        pub_errors = []
        next_dir = [1]          # index into dirs of the next version to publish

        def watch_status():
            cc = srv.conn()
            while not stop.is_set():
                try:
                    for e in hsys.status_entries(cc, served):
                        entries[(e["version"], e.get("generation"))] = e
                except Exception as ex:                   # noqa: BLE001 (reported below)
                    pub_errors.append("status: %r" % ex)
                stop.wait(0.5)
            cc.close()

        def publisher(block_stop):
            if a.publisher_nice:
                os.nice(a.publisher_nice)   # this thread only (Linux keeps nice per thread); its children inherit it
            t0 = time.monotonic()
            for i in range(1, per_block + 1):
                if block_stop.wait(max(0.0, t0 + i * a.period - time.monotonic())) or next_dir[0] >= len(dirs):
                    return
                k = next_dir[0]
                next_dir[0] += 1
                d, v = dirs[k], k + 1
                try:
                    tp = time.monotonic_ns()
                    if a.publish == "ahead":
                        os.rename(os.path.join(stage_model, str(v)), os.path.join(repo_model, str(v)))
                        publisher_cpu.append(0.0)
                    else:
                        publisher_cpu.append(publish_timed(d, repo_model, v))
                    pub_windows.append((tp, time.monotonic_ns()))
                    published.append(v)
                    shutil.rmtree(d, ignore_errors=True)  # the repository has its copy now
                    if a.model == "resnet50" and v > 3 and a.publish == "live":  # ~100 MB a version: keep the disk to a few
                        shutil.rmtree(os.path.join(repo_model, str(v - 2)), ignore_errors=True)
                except Exception as ex:                   # noqa: BLE001
                    pub_errors.append("publish %d: %r" % (v, ex))

        def settle(timeout=60.0):
            """Waits (bounded) until the last version published is ready or failed: no load spills over."""
            if not published:
                return
            want, cc, t_end = str(published[-1]), srv.conn(), time.monotonic() + timeout
            try:
                while time.monotonic() < t_end:
                    st = {e["version"]: e.get("state") for e in hsys.status_entries(cc, served)}
                    if st.get(want) in ("ready", "failed", "unloaded", "retiring"):
                        return
                    time.sleep(0.1)
                pub_errors.append("version %s not ready %g s after its block" % (want, timeout))
            finally:
                cc.close()

        watcher = threading.Thread(target=watch_status)
        # the status poller runs through every block, so its own cost is in the baseline too
        watcher.start()
        blocks, windows = [], []
        for b in range(2 * a.blocks + 1):
            reloading = b % 2 == 1
            print("block %d/%d: %d s %s" % (b + 1, 2 * a.blocks + 1, block_s,
                                           "with a new version every %g s" % a.period if reloading else "without reloads"),
                  flush=True)
            block_stop = threading.Event()
            pubt = threading.Thread(target=publisher, args=(block_stop,)) if reloading else None
            t_begin = time.monotonic_ns()
            if pubt:
                pubt.start()
            s_ = phase(url, body, len(hdr), a.connections, block_s, srv.pid)
            windows.append((t_begin, time.monotonic_ns(), reloading))
            if pubt:
                block_stop.set()
                pubt.join()
                settle()
            s_["reloading"] = reloading
            blocks.append(s_)
        stop.set()
        time.sleep(1.0)
        c.close()
        c = srv.conn()                  # the first one sat idle through the run (idle timeout)
        for e in hsys.status_entries(c, served):
            entries[(e["version"], e.get("generation"))] = e
        watcher.join()
        hwm = 0
        with open("/proc/%d/status" % srv.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        c.close()
        srv.stop()

        loaded = [e for (v, g), e in sorted(entries.items(), key=lambda kv: int(kv[0][0])) if int(v) > 1]
        firsts = [e["first_request_ms"] for e in loaded if e.get("first_request_ms") is not None]
        loads = [e.get("load_ms") for e in loaded
                 if e.get("load_ms") is not None and e.get("state") not in ("failed", "loading")]
        failed = [e for e in loaded if e.get("state") == "failed"]

        def ms(us):
            return "%.2f" % (us / 1000.0)

        def total(kind_reloading):
            """The blocks of one kind summed: requests, errors, CPU (for the CPU accounting below)."""
            bs = [x for x in blocks if x["reloading"] == kind_reloading]
            out = {k: sum(x[k] for x in bs) for k in ("requests", "status", "errors", "server_cpu", "loader_cpu",
                                                       "wall", "out_user", "out_sys")}
            out["peak_rss"] = max(x["peak_rss"] for x in bs)
            return out
        steady, reload = total(False), total(True)
        rows = []
        for i, s_ in enumerate(blocks):
            rows.append([i + 1, "reload every %gs" % a.period if s_["reloading"] else "no reloads", "%.1f" % s_["rps"],
                         ms(s_["p50_us"]), ms(s_["p99_us"]), ms(s_["p999_us"]), s_["status"], s_["errors"],
                         "%.0f" % (s_["peak_rss"] / 2 ** 20)])
        table = benchlib.md_table(["block", "kind", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-2xx", "socket err",
                                   "peak RSS MiB"], rows)
        # each block with reloads against the mean of its two neighbours without
        thr_r, p99_r, p999_r = [], [], []
        for i in range(1, len(blocks), 2):
            before, with_, after = blocks[i - 1], blocks[i], blocks[i + 1]
            thr_r.append(with_["rps"] / ((before["rps"] + after["rps"]) / 2))
            p99_r.append(with_["p99_us"] / ((before["p99_us"] + after["p99_us"]) / 2))
            p999_r.append(with_["p999_us"] / ((before["p999_us"] + after["p999_us"]) / 2))
        steady_med = statistics.median(x["p50_us"] for x in blocks if not x["reloading"]) / 1000.0
        thr, p99r = statistics.mean(thr_r), statistics.mean(p99_r)
        errs = sum(x["status"] + x["errors"] for x in blocks)
        fr_med = statistics.median(firsts) if firsts else None
        fr_max = max(firsts) if firsts else None
        thr_want = 0.97 if a.model == "resnet50" else 0.98   # issue 13's targets per model

        def each(rs):
            return " (" + ", ".join("%.3f" % r for r in rs) + ")" if len(rs) > 1 else ""
        ratios = [["throughput reload/no-reload, mean over blocks" + each(thr_r), "%.3f" % thr, ">= %.2f" % thr_want,
                   "yes" if thr >= thr_want else "NO"],
                  ["p99 reload/no-reload, mean over blocks" + each(p99_r), "%.3f" % p99r, "<= 1.10",
                   "yes" if p99r <= 1.10 else "NO"],
                  ["p99.9 reload/no-reload, mean over blocks" + each(p999_r), "%.3f" % statistics.mean(p999_r), "",
                   ""],
                  ["errors (all blocks)", errs, "0", "yes" if errs == 0 else "NO"]]
        if fr_med is not None:
            ratios.append(["first request / steady p50 (median over versions)", "%.2f" % (fr_med / steady_med),
                           "<= 1.2", "yes" if fr_med <= 1.2 * steady_med else "NO"])
            ratios.append(["first request / steady p50 (worst version)", "%.2f" % (fr_max / steady_med),
                           "<= 1.2", "yes" if fr_max <= 1.2 * steady_med else "NO"])
        table += "\n" + benchlib.md_table(["ratio", "value", "target", "met"], ratios)
        # Where the CPU went: at a fixed concurrency the server is busy all the time, so whatever the
        # reloads take (the loader thread, and the publisher where it shares the machine) comes out of
        # the requests' CPU; this is the throughput one should expect to lose.
        cores = os.cpu_count() or 1
        n_pub = max(1, len(published))
        pub_s = sum(publisher_cpu)
        # The thread each load starts to hash the files beside it has ended before a block's CPU is sampled
        # (its CPU is in the process's, under no live thread): its CPU is the server's own account
        # (status: hash_cpu_ms, per version).
        hashed = sum(e.get("hash_cpu_ms") or 0 for e in loaded) / 1e3
        taken = (reload["loader_cpu"] + hashed + pub_s) / (reload["wall"] * cores)
        per_req = [(s["server_cpu"] - s["loader_cpu"] - h) / max(1, s["requests"]) * 1e3
                   for s, h in ((steady, 0.0), (reload, hashed))]
        crows = [["hs-loader thread (verify, load, warm-up, free)", "%.0f" % (reload["loader_cpu"] * 1e3 / n_pub),
                  "%.1f%%" % (100 * reload["loader_cpu"] / (reload["wall"] * cores))],
                 ["the hash thread beside each load (the server's account: hash_cpu_ms)", "%.0f" % (hashed * 1e3 / n_pub),
                  "%.1f%%" % (100 * hashed / (reload["wall"] * cores))],
                 ["publisher (renames staged versions in: published ahead)" if a.publish == "ahead" else
                  "publisher (`hotserve publish`: copy, hash, fsync)", "%.0f" % (pub_s * 1e3 / n_pub),
                  "%.1f%%" % (100 * pub_s / (reload["wall"] * cores))],
                 ["all: the throughput ratio to expect at saturation", "", "%.3f" % (1 - taken)]]
        # The server's own account per version (the hash thread included; the free and the scan not).
        own = [sum(e.get(k) or 0 for k in ("read_cpu_ms", "load_cpu_ms", "warmup_cpu_ms")) for e in loaded
               if e.get("load_cpu_ms") is not None and e["version"] != "1"]
        if own:
            crows.append(["loader CPU per version by the server's own account (read incl. the hash thread, "
                          "load, warm-up), median (min-max)",
                          "%.1f (%.1f-%.1f)" % (statistics.median(own), min(own), max(own)), ""])
        table += "\n" + benchlib.md_table(["blocks with reloads, CPU (%d cores)" % cores, "ms per version",
                                           "share of the machine"], crows)
        table += ("\nServer CPU per request outside the loader and its hash thread: %.2f ms without reloads, %.2f ms "
                  "with them "
                  "(ratio %.3f).\n" % (per_req[0], per_req[1], per_req[1] / per_req[0]))
        # the same, user and system time apart (page faults and the scheduler are system time)
        split = []
        for name, s in (("no reloads", steady), ("reloads", reload)):
            n = max(1, s["requests"])
            split.append([name, "%.3f" % (s["out_user"] / n * 1e3), "%.3f" % (s["out_sys"] / n * 1e3)])
        split.append(["ratio"] + ["%.3f" % (float(split[1][i]) / float(split[0][i])) if float(split[0][i]) > 0
                                  else "-" for i in (1, 2)])
        table += "\n" + benchlib.md_table(["server CPU per request outside the loader (its hash thread included), ms", "user", "system"], split)
        table += ("\nThe split is approximate: the kernel apportions the exact CPU time of the process and of each thread to "
                  "user and system by ticks, separately, so the process's minus the loader's can be off by a few ticks "
                  "(a system share near 0 may come out negative); their sum above is exact.\n")
        if a.trace:
            table += "\n" + overlap_table(trace_path, pub_windows, windows)
            if a.trace_out:
                shutil.copyfile(trace_path, a.trace_out)
        vrows = [[e["version"], e.get("state"), e.get("verify_ms"), e.get("load_ms"), e.get("warmup_ms"),
                  e.get("read_cpu_ms"), e.get("load_cpu_ms"), e.get("warmup_cpu_ms"),
                  e.get("paced_ms"), e.get("first_request_ms"), e.get("reason") or ""] for e in loaded]
        table += "\n" + benchlib.md_table(["version", "state", "verify ms", "load ms", "warm-up ms",
                                           "loader CPU ms: read", "load", "warm-up", "paced ms",
                                           "first request ms", "reason"], vrows)
        notes = ("%s (tools/models/make_models.py, %s per version), binary bodies, "
                 "%d keep-alive connections; %d blocks of %d s without reloads and %d with; %d versions published in the blocks with reloads (%d failed), load ms median %s; "
                 "process peak RSS (VmHWM) %.0f MiB. Latencies are wrk's (client side); first request ms is the "
                 "server's, compared with wrk's steady p50 (%.2f ms). wrk, the publisher and the server share "
                 "the machine's cores; the server's loader priority: %s, its loader pace: %s, the publisher's nice: +%d.%s%s"
                 % (mname, "every float tensor new" if a.weights == "retrained" else "new classifier weights",
                    a.connections, a.blocks + 1, block_s, a.blocks, len(published), len(failed),
                    "%.1f" % statistics.median(loads) if loads else "n/a", hwm / 2 ** 20, steady_med, a.loader_priority or "default (low)",
                    "%d%%" % a.loader_pace if a.loader_pace else "default", a.publisher_nice,
                    " Versions published ahead (before the server started) and renamed into the repository in "
                    "the blocks with reloads." if a.publish == "ahead" else "",
                    (" Problems: " + "; ".join(pub_errors[:3])) if pub_errors else ""))
        print(table)
        print(notes)
        if not a.no_write:
            cmd = ("bench/reload/run.sh " + " ".join(sys.argv[1:])).strip()
            # the default (4 connections: the server saturated, requests queued) and other concurrencies
            # each keep their own table in bench/README.md
            kind = "reload" if a.connections == 4 else "reload-c%d" % a.connections
            if a.model != "mobilenet_v2":
                kind += "-" + a.model
            if a.publish == "live":
                kind += "-live"
            path = benchlib.write_result(kind, "bench/reload: %s, a new version every %g s, %d connection%s"
                                         % (mname, a.period, a.connections, "" if a.connections == 1 else "s"),
                                         cmd, table, notes)
            print("written to %s and bench/README.md" % os.path.relpath(path, benchlib.ROOT))
    finally:
        hsys.Server.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

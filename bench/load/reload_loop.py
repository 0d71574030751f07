#!/usr/bin/python3
"""reload_loop.py - a server reloading one model again and again: page faults, RSS and RSS per reload stage.

    reload_loop.py --hotserve BIN --cache DIR [--model resnet50.onnx] [--variant retrained] [--versions 6]
                   [--gap 2.5] [--threads 2] [--perf FILE [--perf-event minor-faults] [--perf-from 2]]
                   [--ready-lines]

Starts `hotserve serve --trace` on an empty repository and publishes versions 1..N (load_bench.make_versions: every
float tensor new with "retrained", only the last layer with "head") --gap seconds after the previous one was ready
(under the server's --trim-delay of 5 s by default, so the warm memory is kept between versions, as when reloads
keep coming; past it, each reload starts from a trimmed server). A thread samples the server's RSS every ~1 ms.

Table 1, per version: time to ready, the loader CPU of the load stage and of all three stages (read + load +
warm-up; the server's ready line), the process's
minor and major page faults from publish to ready (/proc/PID/stat), the RSS before the publish, the peak while it
loaded, and 0.3 s after it was ready (steady RSS).
Table 2, per version, the memory probe: RSS (MB) at the boundaries of the reload's stages as the server's trace
writes them (load begin and end, warm-up end, the retired version freed) and the peak inside the load stage.
Then the medians from the third version on, and the whole process's CPU per version over them (/proc/PID/stat).
--perf FILE: `perf record -g` on the server from the second publish (--perf-from) to the last ready (perf report -i FILE);
--perf-event names what it samples (cycles by default; minor-faults records every page fault, to find which
allocation faults fresh pages).
Never part of ctest.
"""
import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import load_bench  # noqa: E402


def cpu_ms(pid):
    """The process's CPU time so far (user + system, every thread, exited ones included; clock ticks)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")  # utime, stime (14, 15)


class RssLog:
    """(monotonic ns, RSS MB) every ~1 ms on a thread."""

    def __init__(self, pid):
        self.pid, self.t, self.v = pid, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            r = load_bench.rss_mb(self.pid)
            if r is not None:
                self.t.append(time.monotonic_ns())
                self.v.append(r)
            time.sleep(0.001)

    def at(self, ns):
        """The last sample at or before ns."""
        i = bisect.bisect_right(self.t, ns) - 1
        return self.v[max(i, 0)] if self.v else float("nan")

    def peak(self, a, b):
        i, j = bisect.bisect_left(self.t, a), bisect.bisect_right(self.t, b)
        return max(self.v[i:j]) if j > i else self.at(b)

    def stop(self):
        self._stop.set()
        self._thread.join()


def wait_ready(log_path, name, k, server):
    deadline = time.time() + 120
    while time.time() < deadline:
        with open(log_path) as f:
            for m in load_bench.READY_RE.finditer(f.read()):
                if m.group(1) == name and int(m.group(2)) == k:
                    return m
        if server.poll() is not None:
            raise RuntimeError("hotserve serve exited with %s; see %s" % (server.returncode, log_path))
        time.sleep(0.005)
    raise RuntimeError("version %d never became ready; see %s" % (k, log_path))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--model", default="resnet50.onnx", choices=[m[1] for m in load_bench.MODELS])
    p.add_argument("--variant", default="retrained", choices=[v for _, v in load_bench.VARIANTS])
    p.add_argument("--versions", type=int, default=6)
    p.add_argument("--gap", type=float, default=2.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--perf", default=None, help="perf.data file to record the reloads (from version 2) into")
    p.add_argument("--ready-lines", action="store_true",
                   help="print the server's ready lines (the load stage's parts: decode, hash waits, compile)")
    p.add_argument("--perf-event", default="cycles",
                   help="the event --perf samples (e.g. minor-faults: where the fresh pages are touched; every fault "
                        "is recorded, with DWARF call chains)")
    p.add_argument("--perf-from", type=int, default=2, help="the version whose publish starts --perf")
    args = p.parse_args(argv)
    name = os.path.splitext(args.model)[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hs-reload-loop-") as work:
        versions = load_bench.make_versions(os.path.join(args.cache, args.model), os.path.join(work, "src"),
                                            args.versions, args.variant)
        model_dir = os.path.join(work, "repo", name)
        os.makedirs(model_dir)
        log_path, trace_path = os.path.join(work, "serve.log"), os.path.join(work, "trace.jsonl")
        log = open(log_path, "w")
        server = subprocess.Popen([args.hotserve, "serve", "--model-repository", os.path.join(work, "repo"),
                                   "--http-port", str(load_bench.free_port()), "--poll-interval", "1",
                                   "--threads", str(args.threads), "--trace", trace_path],
                                  stdout=log, stderr=subprocess.STDOUT)
        rss, perf = RssLog(server.pid), None
        try:
            time.sleep(1.0)
            for k, src in enumerate(versions, start=1):
                if k == args.perf_from and args.perf:
                    # a fault event: every one, with DWARF call chains (libc's memcpy has no frame pointers)
                    faults_ev = args.perf_event.endswith("faults")
                    ev = ["-e", args.perf_event] + (["--call-graph", "dwarf,8192", "-c", "1"] if faults_ev
                                                    else ["-F", "2000"])
                    perf = subprocess.Popen(["perf", "record", "-g"] + ev + ["-o", args.perf, "-p",
                                             str(server.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.3)
                if k == 3:
                    cpu3 = cpu_ms(server.pid)
                f0, t0 = load_bench.faults(server.pid), time.monotonic_ns()
                load_bench.publish(args.hotserve, src, model_dir, k)
                m = wait_ready(log_path, name, k, server)
                f1, t1 = load_bench.faults(server.pid), time.monotonic_ns()
                cpu_end = cpu_ms(server.pid)
                time.sleep(0.3)
                rows.append({"k": k, "ready": float(m.group(3)), "cpu_load": float(m.group(8) or "nan"),
                             "cpu_read": float(m.group(7) or "nan"), "cpu_warm": float(m.group(9) or "nan"),
                             "cpu_all": sum(float(m.group(g) or "nan") for g in (7, 8, 9)),
                             "minflt": f1[0] - f0[0], "majflt": f1[1] - f0[1], "before": rss.at(t0),
                             "peak": rss.peak(t0, t1), "after": load_bench.rss_mb(server.pid), "t0": t0})
                time.sleep(max(args.gap - 0.3, 0))
        finally:
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
            rss.stop()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
            log.close()
        if args.ready_lines:
            with open(log_path) as f:
                for line in f:
                    if " ready in " in line:
                        print(line.rstrip())
        stages = {}
        with open(trace_path) as f:
            for line in f:
                e = json.loads(line)
                if e.get("ev") == "stage" and e.get("model") == name:
                    stages[(e["stage"], e["version"])] = (e["begin_ns"], e["end_ns"])
    print("%s, %s weights, %d versions %g s apart, threads %d; load average at the end %s\n" % (
        args.model, args.variant, args.versions, args.gap, args.threads,
        " ".join("%.1f" % x for x in os.getloadavg())))
    print("| version | ready ms | loader CPU load ms | loader CPU all ms | minor faults | major faults | RSS before "
          "| peak | 0.3 s after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %.0f | %.1f | %.1f | %d | %d | %.1f | %.1f | %.1f |" % (
            r["k"], r["ready"], r["cpu_load"], r["cpu_all"], r["minflt"], r["majflt"], r["before"], r["peak"],
            r["after"]))
    warm = rows[2:]  # from the third version on the warm memory of two before is there to reuse
    if warm:
        med = lambda key: sorted(r[key] for r in warm)[len(warm) // 2]  # noqa: E731
        print("\nVersions 3-%d, median: loader CPU read %.1f, load %.1f, warm-up %.1f ms, all stages %.1f ms; "
              "minor faults %d" % (rows[-1]["k"], med("cpu_read"), med("cpu_load"), med("cpu_warm"), med("cpu_all"),
                                   med("minflt")))
        print("Process CPU per version, publish of version 3 to ready of version %d (every thread: the OpenMP "
              "workers and the hash thread too; idle threads between versions): %.1f ms" % (
                  rows[-1]["k"], (cpu_end - cpu3) / len(warm)))
    print("\nRSS (MB) at the reload's stage boundaries (the server's --trace):\n")
    print("| version | publish | load begin | peak in load | load end | warm-up end | retired version freed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["k"]
        ld, wu, fr = stages.get(("load", k)), stages.get(("warmup", k)), stages.get(("free", k - 1))
        cell = lambda ns: "%.1f" % rss.at(ns) if ns else "n/a"  # noqa: E731
        print("| %d | %.1f | %s | %s | %s | %s | %s |" % (
            k, r["before"], cell(ld and ld[0]), "%.1f" % rss.peak(*ld) if ld else "n/a", cell(ld and ld[1]),
            cell(wu and wu[1]), cell(fr and fr[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

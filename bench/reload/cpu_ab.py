#!/usr/bin/python3
"""cpu_ab.py - what reloads cost the requests in CPU time, A/B between server binaries or options.

bench/reload's run measures one server binary with its own options; this compares several on the
requests' CPU alone. It runs, for each variant in turn (--variant LABEL=BINARY[:server options], repeated --rounds times,
interleaved), one server under wrk in alternating blocks of --block seconds: without reloads, with a new
version every --period seconds, without, with, ... (--pairs pairs). For each block it takes the server's
CPU outside the loader thread (user and system apart; /proc) per request, and reports per variant the
mean ratio of each "with" block to the two "without" blocks around it, so drift cancels. The user and
system columns are approximate (the kernel apportions the process's and each thread's exact CPU time to
user and system by ticks, separately); the sum is exact. Prints a
markdown table; writes nothing. MobileNetV2, every weight retrained per version, as bench/reload.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reload_bench as rb  # noqa: E402
from reload_bench import benchlib, hsys  # noqa: E402


def run_variant(label, binary, opts, a, dirs, shape, in_name, tmp):
    hsys.Env.hotserve = os.path.abspath(binary)
    repo_model = os.path.join(tmp, "repo-" + label, "mobilenet")
    shutil.rmtree(os.path.dirname(repo_model), ignore_errors=True)
    os.makedirs(repo_model)
    hsys.publish(dirs[0], repo_model, 1)
    srv = hsys.Server(os.path.dirname(repo_model), "--log-level", "warn", *opts)
    try:
        c = srv.conn(timeout=120)
        hsys.wait_serving(c, "mobilenet", 1, timeout=300)
        raw = np.random.default_rng(3).standard_normal(shape).astype(np.float32).tobytes()
        hdr = ('{"inputs":[{"name":"%s","datatype":"FP32","shape":%s,"parameters":{"binary_data_size":%d}}],'
               '"parameters":{"binary_data_output":true}}' % (in_name, list(shape), len(raw))).encode()
        body = os.path.join(tmp, "body.bin")
        open(body, "wb").write(hdr + raw)
        url = "http://%s:%d/v2/models/mobilenet/infer" % (srv.host, srv.port)
        benchlib.wrk(url, body, len(hdr), a.connections, 3)                   # warm-up
        version, blocks = [1], []
        created0 = c.metrics().get("hotserve_session_arenas_created_total")
        for b in range(2 * a.pairs + 1):
            reloading = b % 2 == 1
            stop = threading.Event()

            def publisher():
                t0 = time.monotonic()
                for i in range(1, 1000):
                    if stop.wait(max(0.0, t0 + i * a.period - time.monotonic())):
                        return
                    version[0] += 1
                    hsys.publish(dirs[version[0] % len(dirs)], repo_model, version[0])
            pub = threading.Thread(target=publisher)
            cpu0, v0 = rb.thread_cpu(srv.pid), version[0]
            if reloading:
                pub.start()
            s = benchlib.wrk(url, body, len(hdr), a.connections, a.block)
            stop.set()
            if reloading:
                pub.join()
            cpu1 = rb.thread_cpu(srv.pid)
            d = {k: cpu1[k] - cpu0[k] for k in cpu0}
            n = max(1, s["requests"])
            blocks.append({"reload": reloading, "user": (d["user"] - d["loader_user"]) / n * 1e3,
                           "sys": (d["sys"] - d["loader_sys"]) / n * 1e3, "errors": s["errors"] + s["status"],
                           "loader": d["loader_user"] + d["loader_sys"], "versions": version[0] - v0})
            for old in range(2, version[0] - 2):   # keep the repository to a few versions
                shutil.rmtree(os.path.join(repo_model, str(old)), ignore_errors=True)
        created = c.metrics().get("hotserve_session_arenas_created_total") - created0
        c.close()
    finally:
        srv.stop()
    out = {"user": [], "sys": [], "all": [], "errors": sum(b["errors"] for b in blocks)}
    for i in range(1, len(blocks), 2):
        before, on, after = blocks[i - 1], blocks[i], blocks[i + 1]
        for k in ("user", "sys"):
            out[k].append(on[k] / ((before[k] + after[k]) / 2))
        tot = lambda b: b["user"] + b["sys"]  # noqa: E731
        out["all"].append(tot(on) / ((tot(before) + tot(after)) / 2))
    out["arenas_per_version"] = created / max(1, version[0] - 1)   # scratch arenas allocated per reload
    out["base_ms"] = statistics.mean(b["user"] + b["sys"] for b in blocks if not b["reload"])
    # the loader's CPU per version: all the loader used (the "without" blocks finish loads begun before)
    out["loader_ms"] = sum(b["loader"] for b in blocks) * 1e3 / max(1, sum(b["versions"] for b in blocks))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True, metavar="LABEL=BINARY[:OPTS]",
                   help="a server binary and its extra options (space separated after ':')")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--block", type=int, default=10, help="seconds per block (default 10)")
    p.add_argument("--period", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--cache", default=os.environ.get("HOTSERVE_MODEL_CACHE",
                                                     os.path.join(benchlib.ROOT, "build", "models")))
    a = p.parse_args()
    variants = []
    for v in a.variant:
        label, rest = v.split("=", 1)
        binary, _, opts = rest.partition(":")
        variants.append((label, binary, opts.split()))
    hsys.Env.source = benchlib.ROOT
    base = rb.model_path(a.cache, "mobilenet_v2")
    tmp = tempfile.mkdtemp(prefix="hs-bench-cpuab-")
    try:
        dirs, in_name, shape = rb.make_versions(base, os.path.join(tmp, "src"), 8, "retrained")
        results = {label: [] for label, _, _ in variants}
        for r in range(a.rounds):
            for label, binary, opts in variants:
                res = run_variant(label, binary, opts, a, dirs, shape, in_name, tmp)
                results[label].append(res)
                print("round %d %s: ratio %s (user %s, sys %s), base %.3f ms/request, loader %.1f ms/version, "
                      "arenas created %.2f/version, errors %d, load %s" % (
                    r + 1, label, " ".join("%.3f" % x for x in res["all"]),
                    " ".join("%.3f" % x for x in res["user"]), " ".join("%.3f" % x for x in res["sys"]),
                    res["base_ms"], res["loader_ms"], res["arenas_per_version"], res["errors"], os.getloadavg()), flush=True)
        rows = []
        for label, _, _ in variants:
            allr = [x for res in results[label] for x in res["all"]]
            user = [x for res in results[label] for x in res["user"]]
            sys_ = [x for res in results[label] for x in res["sys"]]
            rows.append([label, "%.3f" % statistics.mean(allr), "%.3f" % statistics.stdev(allr) if len(allr) > 1
                         else "-", "%.3f" % statistics.mean(user), "%.3f" % statistics.mean(sys_),
                         "%.3f" % statistics.mean(res["base_ms"] for res in results[label]),
                         "%.1f" % statistics.mean(res["loader_ms"] for res in results[label]),
                         "%.2f" % statistics.mean(res["arenas_per_version"] for res in results[label]), len(allr),
                         sum(res["errors"] for res in results[label])])
        print(benchlib.md_table(["variant", "CPU/request outside the loader, reload/no-reload (mean)", "stdev",
                                 "user only", "system only", "no-reload ms/request", "loader ms/version", "arenas created/version",
                                 "block pairs", "errors"], rows))
    finally:
        hsys.Server.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

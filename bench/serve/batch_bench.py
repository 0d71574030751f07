#!/usr/bin/python3
"""batch_bench.py - what dynamic batching buys under concurrent load (bench/serve/run.sh --batching).

Serves MobileNetV2 (dynamic batch, 1x3x224x224 per request; HOTSERVE_MODEL_CACHE/mobilenet_v2_dyn.onnx,
made by bench/setup.sh) and the 64-wide two-layer MLP of serve_bench.py (with a dynamic batch
dimension, 1x64 per request), each twice in one server: without batching, and with
`"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500}`
(--delay-us, --max-batch change it). wrk drives each at concurrency 1, 16, 64 with binary bodies.
Per run: requests/s, client p50/p99, errors, the mean batch size (rows per run) from the
server's hotserve_batch_size histogram (delta over the run; 1 for the unbatched model), and the
server's CPU time per request (/proc/PID/stat over the run), the figure least moved by other load.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import benchlib
from benchlib import hsys
from serve_bench import mlp_bytes


def dyn_mlp_bytes():
    """serve_bench's MLP with its first dimension made symbolic, so requests can be stacked."""
    import onnx
    data, shape = mlp_bytes()
    m = onnx.load_from_string(data)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(m)
    return m.SerializeToString(), shape


def binary_body(path, input_name, shape):
    """Writes one binary-extension request body; returns its JSON header's length."""
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    raw = x.tobytes()
    hdr = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32",
                                  "shape": shape, "parameters": {"binary_data_size": len(raw)}}],
                      "parameters": {"binary_data_output": True}}).encode()
    with open(path, "wb") as f:
        f.write(hdr + raw)
    return len(hdr)


def server_cpu_s(pid):
    """User + system CPU seconds of process pid so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", default=os.path.join(benchlib.ROOT, "build", "src", "hotserve"))
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--models", default="mobilenet_v2,mlp")
    p.add_argument("--delay-us", type=int, default=500)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="serve --threads (above 1: runs go to the compute pool)")
    p.add_argument("--no-write", action="store_true", help="print only; don't write bench/results or README")
    a = p.parse_args()
    hsys.Env.hotserve = os.path.abspath(a.hotserve)
    hsys.Env.source = benchlib.ROOT
    cache = os.environ.get("HOTSERVE_MODEL_CACHE", os.path.join(benchlib.ROOT, "build", "models"))
    tmp = tempfile.mkdtemp(prefix="hs-bench-batch-")
    srv = None
    try:
        import onnx
        repo = os.path.join(tmp, "repo")
        models = {}
        for name in a.models.split(","):
            if name == "mlp":
                data, shape = dyn_mlp_bytes()
                input_name = "x"
            elif name == "mobilenet_v2":
                path = os.path.join(cache, "mobilenet_v2_dyn.onnx")
                if not os.path.exists(path):
                    raise SystemExit("%s is missing: run bench/setup.sh (or set HOTSERVE_MODEL_CACHE)" % path)
                data = open(path, "rb").read()
                m = onnx.load_from_string(data)
                input_name = m.graph.input[0].name
                shape = [1] + [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
            else:
                raise SystemExit("unknown model %s (mobilenet_v2, mlp)" % name)
            body = os.path.join(tmp, name + ".bin")
            models[name] = (binary_body(body, input_name, shape), body, shape)
            for suffix, cfg in (("", None), ("_batched", {"max_batch_size": a.max_batch, "dynamic_batching": {
                    "preferred_batch_size": [4, 8] if a.max_batch >= 8 else [a.max_batch],
                    "max_queue_delay_microseconds": a.delay_us}})):
                hsys.write_file(os.path.join(repo, name + suffix, "1", "model.onnx"), data)
                if cfg:
                    hsys.write_file(os.path.join(repo, name + suffix, "config.json"), json.dumps(cfg).encode())
        srv = hsys.Server(repo, "--settle", "0.1", "--log-level", "warn", "--threads", str(a.threads))
        c = srv.conn()
        rows = []
        for name, (hlen, body, shape) in models.items():
            for served in (name, name + "_batched"):
                hsys.wait_serving(c, served, 1)
                url = "http://%s:%d/v2/models/%s/infer" % (srv.host, srv.port, served)
                r = c.request("POST", "/v2/models/%s/infer" % served, open(body, "rb").read(),
                              {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)})
                if r.status != 200:
                    raise SystemExit("%s refused the body: HTTP %d %r" % (served, r.status, r.body[:300]))
                benchlib.wrk(url, body, hlen, 4, 2)  # warm-up
            for conc in [int(s) for s in a.concurrency.split(",")]:
                for served in (name, name + "_batched"):
                    url = "http://%s:%d/v2/models/%s/infer" % (srv.host, srv.port, served)
                    before = c.metrics()
                    cpu0 = server_cpu_s(srv.pid)
                    s = benchlib.wrk(url, body, hlen, conc, a.duration)
                    cpu1 = server_cpu_s(srv.pid)
                    after = c.metrics()
                    dreq = (after.get("hotserve_requests_total", model=served) -
                            before.get("hotserve_requests_total", model=served))
                    dn = (after.get("hotserve_batch_size_count", model=served) -
                          before.get("hotserve_batch_size_count", model=served))
                    ds = (after.get("hotserve_batch_size_sum", model=served) -
                          before.get("hotserve_batch_size_sum", model=served))
                    batch = "%.2f" % (ds / dn) if dn > 0 else "1 (off)"
                    row = [name, conc, "on" if served.endswith("_batched") else "off", "%.0f" % s["rps"],
                           "%.0f" % s["p50_us"], "%.0f" % s["p99_us"], s["status"] + s["errors"], batch,
                           "%.1f" % ((cpu1 - cpu0) * 1e6 / dreq) if dreq > 0 else "-"]
                    print(" ".join(str(v) for v in row), flush=True)
                    rows.append(row)
        header = ["model", "conc", "batching", "req/s", "p50 µs", "p99 µs", "errors", "mean batch", "server CPU µs/req"]
        table = benchlib.md_table(header, rows)
        print(table)
        notes = ("Batching on: max_batch_size %d, preferred_batch_size %s, max_queue_delay_microseconds %d; off: the "
                 "same model file without batching, in the same server. Server --threads %d, --instances 2. "
                 "Binary bodies, one row per request (%s). p50/p99 are wrk's (client side); mean batch = rows per "
                 "run from hotserve_batch_size over the run; server CPU µs/req = the server process's user + system "
                 "time (/proc/PID/stat) over the run divided by the requests it counted, which, unlike wall-clock "
                 "rates, other load on the machine barely changes. wrk and the server share the machine's cores."
                 % (a.max_batch, [4, 8] if a.max_batch >= 8 else [a.max_batch], a.delay_us, a.threads,
                    ", ".join("%s %s" % (n, v[2]) for n, v in models.items())))
        if not a.no_write:
            cmd = "bench/serve/run.sh --batching " + " ".join(sys.argv[1:])
            path = benchlib.write_result("serve-batching", "bench/serve: dynamic batching", cmd.strip(), table, notes)
            print("written to %s and bench/README.md" % os.path.relpath(path, benchlib.ROOT))
        c.close()
        srv.stop()
        srv = None
    finally:
        if srv is not None:
            hsys.Server.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

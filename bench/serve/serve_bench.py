#!/usr/bin/python3
"""serve_bench.py - the per-request cost of hotserve itself (driven by bench/serve/run.sh).

Serves a tiny model (default: a 64-wide two-layer MLP made with onnx.helper; --model add: y = x + 1
on 1x4) and drives it at each concurrency over HTTP with wrk (keep-alive connections, JSON and binary
tensor bodies) and over gRPC with grpc_load.py (ModelInfer with raw_input_contents and with typed
contents; a closed loop of N calls in flight from a few Python processes). Per run: requests/s, client
p50/p99, failed requests, and from the server's own histograms (deltas of /metrics around the run): mean
request time, mean compute time and the server overhead = request - compute (the time hotserve spends
outside the model once the request has arrived); plus the server process's CPU time per request (user +
system from /proc, transport included: HTTP/1.1 parsing or HTTP/2 framing and protobuf).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import benchlib
import grpc_load
from benchlib import hsys


def mlp_bytes(width=64):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    w1 = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w2 = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    b1 = np.zeros(width, np.float32)
    b2 = np.zeros(width, np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp64", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
                          [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="hotserve-bench")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString(), [1, width]


def bodies(tmp, shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    jb = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                                 "data": [float(v) for v in x.ravel()]}]}).encode()
    raw = x.tobytes()
    hdr = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                                  "parameters": {"binary_data_size": len(raw)}}],
                      "parameters": {"binary_data_output": True}}).encode()
    paths = {"json": (os.path.join(tmp, "body.json"), None), "binary": (os.path.join(tmp, "body.bin"), len(hdr))}
    open(paths["json"][0], "wb").write(jb)
    open(paths["binary"][0], "wb").write(hdr + raw)
    return paths


def grpc_bodies(tmp, shape):
    """Serialized ModelInferRequests (raw and typed) from stubs generated now from proto/."""
    sys.path.insert(0, os.path.join(benchlib.ROOT, "tests", "grpc"))
    import grpc_client
    pb, _ = grpc_client.load_stubs(benchlib.ROOT, tmp)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    raw = pb.ModelInferRequest(model_name="tiny", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=shape)], raw_input_contents=[x.tobytes()])
    typed = pb.ModelInferRequest(model_name="tiny", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=shape, contents=pb.InferTensorContents(fp32_contents=x.ravel().tolist()))])
    return {"grpc raw": raw.SerializeToString(), "grpc typed": typed.SerializeToString()}


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", default=os.path.join(benchlib.ROOT, "build", "src", "hotserve"))
    p.add_argument("--model", choices=["mlp", "add"], default="mlp")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--threads", type=int, default=0, help="--threads for the server (0: its default)")
    p.add_argument("--grpc-workers", type=int, default=0, help="--grpc-workers for the server (0: its default)")
    p.add_argument("--no-write", action="store_true", help="print only; don't write bench/results or README")
    a = p.parse_args()
    hsys.Env.hotserve = os.path.abspath(a.hotserve)
    hsys.Env.source = benchlib.ROOT
    tmp = tempfile.mkdtemp(prefix="hs-bench-serve-")
    srv = None
    try:
        repo = os.path.join(tmp, "repo")
        if a.model == "mlp":
            data, shape = mlp_bytes()
        else:
            data, shape = hsys.model_bytes(1), [1, 4]
        hsys.write_file(os.path.join(repo, "tiny", "1", "model.onnx"), data)
        extra = ["--settle", "0.1", "--log-level", "info", "--grpc-port", "0"] + (["--threads", str(a.threads)] if a.threads else []) + \
            (["--grpc-workers", str(a.grpc_workers)] if a.grpc_workers else [])
        srv = hsys.Server(repo, *extra)
        c = srv.conn()
        hsys.wait_serving(c, "tiny", 1)
        url = "http://%s:%d/v2/models/tiny/infer" % (srv.host, srv.port)
        paths = bodies(tmp, shape)
        sys.path.insert(0, os.path.join(benchlib.ROOT, "tests", "grpc"))
        import grpc_client
        target = grpc_client.grpc_target(srv)
        gbodies = grpc_bodies(tmp, shape)
        for kind, body in gbodies.items():                    # and both gRPC requests
            grpc_load.run(target, body, 1, 1)
        for kind in ("json", "binary"):                       # check both bodies work before timing
            r = c.request("POST", "/v2/models/tiny/infer", open(paths[kind][0], "rb").read(),
                          {"Content-Type": "application/json"} if kind == "json" else
                          {"Content-Type": "application/octet-stream",
                           "Inference-Header-Content-Length": str(paths[kind][1])})
            if r.status != 200:
                raise SystemExit("%s body refused: HTTP %d %r" % (kind, r.status, r.body[:300]))
        benchlib.wrk(url, paths["json"][0], None, 4, 2)       # warm-up
        rows = []
        for conc in [int(s) for s in a.concurrency.split(",")]:
            for kind in ("json", "binary", "grpc raw", "grpc typed"):
                before = c.metrics()
                cpu0 = cpu_seconds(srv.pid)
                if kind in gbodies:
                    s = grpc_load.run(target, gbodies[kind], conc, a.duration)
                else:
                    s = benchlib.wrk(url, paths[kind][0], paths[kind][1], conc, a.duration)
                cpu = cpu_seconds(srv.pid) - cpu0
                after = c.metrics()
                req, n = benchlib.hist_mean_delta(before, after, "hotserve_request_duration_seconds", model="tiny")
                comp, _ = benchlib.hist_mean_delta(before, after, "hotserve_compute_duration_seconds", model="tiny")
                queue, _ = benchlib.hist_mean_delta(before, after, "hotserve_queue_duration_seconds", model="tiny")

                def us(v):
                    return "%.1f" % (v * 1e6) if v is not None else "n/a"
                over = (req - comp) if (req is not None and comp is not None) else None
                cpu_req = cpu / n if n else None
                row = [conc, kind, "%.0f" % s["rps"], "%.0f" % s["p50_us"], "%.0f" % s["p99_us"],
                       s["status"], s["errors"], us(req), us(comp), us(queue), us(over), us(cpu_req)]
                print(" ".join(str(v) for v in row), flush=True)
                rows.append(row)
        header = ["conc", "protocol/body", "req/s", "p50 µs", "p99 µs", "failed", "conn err", "server req µs",
                  "compute µs", "queue µs", "overhead µs", "server CPU µs/req"]
        table = benchlib.md_table(header, rows)
        print(table)
        notes = ("Model: %s, input %s. Latencies p50/p99 are the client's: wrk's for HTTP (keep-alive), "
                 "bench/serve/grpc_load.py's for gRPC (Python processes, so gRPC req/s and latencies are bounded by the "
                 "client long before the server). failed: non-2xx answers or non-OK gRPC statuses; conn err: socket "
                 "errors or UNAVAILABLE/DEADLINE_EXCEEDED. server req, compute and queue are means from hotserve's "
                 "histograms over the same run; overhead = server req - compute (queue included; it starts once the "
                 "request has arrived). server CPU µs/req: the server process's user + system time over the run "
                 "divided by the requests it served (everything: transport, decoding, model, encoding). Clients and "
                 "the server share the machine's cores."
                 % ("64-wide 2-layer MLP (MatMul+Add+Relu)" if a.model == "mlp" else "y = x + 1", shape))
        ratios = []
        for conc in sorted({r[0] for r in rows}):
            by = {r[1]: r for r in rows if r[0] == conc}
            g, b = by.get("grpc raw"), by.get("binary")
            if g and b and "n/a" not in (g[10], b[10], g[11], b[11]) and float(b[10]) > 0 and float(b[11]) > 0:
                ratios.append("%d: overhead %.1fx, CPU %.1fx" % (conc, float(g[10]) / float(b[10]),
                                                                  float(g[11]) / float(b[11])))
        if ratios:
            notes += (" gRPC raw vs HTTP binary, per request, by concurrency: " + "; ".join(ratios) + " (overhead: "
                      "the server's time outside the model once the request has arrived; CPU: the whole process, "
                      "transport included).")
            print(notes)
        if not a.no_write:
            cmd = "bench/serve/run.sh " + " ".join(sys.argv[1:])
            path = benchlib.write_result("serve", "bench/serve: per-request cost", cmd.strip(), table, notes)
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

#!/usr/bin/python3
"""test_serve.py - `hotserve serve` end to end: a real process, real HTTP, a real model repository.

Checks: health and metadata, infer with JSON and binary tensors, every request error class,
the status document, /metrics (promtool), a new version picked up and served, broken versions
(garbage model, failed golden check) refused while the old one keeps serving, the repository
extension (index, unload, load), SIGHUP rescans and SIGTERM draining a request in flight.
Exit 0 passed, 1 failed, 77 skipped (promtool checks are skipped only when promtool is absent).
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ARGS = None


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def make_model(path, add, shape="1,4", slow=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cmd = [sys.executable, os.path.join(ARGS.source, "tools/testmodels/make_test_model.py"), path,
           "--add", str(add), "--shape", shape]
    if slow:
        cmd += ["--slow", str(slow)]
    subprocess.run(cmd, check=True)


def put_version(repo, model, version, add, **kw):
    """Builds a version in a scratch folder and renames it into place (a complete version at once)."""
    scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))
    make_model(os.path.join(scratch, "model.onnx"), add, **kw)
    os.makedirs(os.path.join(repo, model), exist_ok=True)
    os.rename(scratch, os.path.join(repo, model, str(version)))
    return os.path.join(repo, model, str(version))


def write_npy(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, arr)


class Server:
    def __init__(self, repo, *extra, wait_ready=True):
        cmd = [ARGS.hotserve, "serve", "--model-repository", repo, "--http-port", "0",
               "--poll-interval", "0.2", "--settle", "0.3"] + list(extra)
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.port = None
        self.listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        check(self.listening.wait(120), "server never printed its listening line: %s" % self.lines[-20:])
        # it listens before its start-up loads, answering not-ready until they are done
        if wait_ready:
            wait_for(lambda: self.request("GET", "/v2/health/ready")[0] == 200 or self.proc.poll() is not None,
                     "ready after start-up", 120)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.match(r"^hotserve: listening on http://([0-9.]+):(\d+)$", line.strip())
            if m:
                self.port = int(m.group(2))
                self.listening.set()

    def log_has(self, pattern):
        return any(re.search(pattern, l) for l in self.lines)

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def get_json(self, path, want=200):
        st, _, body = self.request("GET", path)
        check(st == want, "GET %s: HTTP %d, wanted %d: %r" % (path, st, want, body[:300]))
        return json.loads(body)

    def infer(self, model, doc, version=None, want=200, headers=None, raw=None):
        path = "/v2/models/%s%s/infer" % (model, "/versions/%s" % version if version else "")
        body = raw if raw is not None else json.dumps(doc).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        st, hdrs, out = self.request("POST", path, body, h)
        check(st == want, "POST %s: HTTP %d, wanted %d: %r" % (path, st, want, out[:300]))
        return hdrs, out

    def metrics(self):
        st, _, body = self.request("GET", "/metrics")
        check(st == 200, "/metrics: HTTP %d" % st)
        return body.decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                fail("server did not exit within 60 s of SIGTERM")
        return self.proc.returncode


def metric(text, name, **labels):
    """The value of one sample, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            return float(m.group(3))
    return None


def metric_sum(text, name, **labels):
    """The sum of every sample of name whose labels include labels."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(3))
    return total


def wait_for(pred, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    fail("timed out waiting for " + what)


def serving(srv, model):
    st, _, body = srv.request("GET", "/v2/models/%s/status" % model)
    if st != 200:
        return None
    return json.loads(body)["serving_version"]


def x_doc(x, name="x", **extra):
    d = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]}
    d.update(extra)
    return d


def y_of(out):
    doc = json.loads(out)
    return doc, np.array(doc["outputs"][0]["data"], dtype=np.float32)


def test_basics(srv, repo):
    check(srv.get_json("/v2/health/live")["live"] is True, "live")
    wait_for(lambda: serving(srv, "add") == "1", "version 1 to serve (after its settle interval)")
    wait_for(lambda: srv.request("GET", "/v2/health/ready")[0] == 200, "ready")
    meta = srv.get_json("/v2")
    check(meta["name"] == "hotserve" and "binary_tensor_data" in meta["extensions"], "server metadata: %r" % meta)
    md = srv.get_json("/v2/models/add")
    check(md["name"] == "add" and md["platform"] == "onnx" and md["versions"] == ["1"], "model metadata: %r" % md)
    check(md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 4]}], "inputs: %r" % md["inputs"])
    check(md["outputs"][0]["name"] == "y" and md["outputs"][0]["shape"] == [1, 4], "outputs: %r" % md["outputs"])
    check(srv.get_json("/v2/models/add/versions/1")["versions"] == ["1"], "version metadata")
    check(srv.request("GET", "/v2/models/add/ready")[0] == 200, "model ready")
    check(srv.request("GET", "/v2/models/add/versions/1/ready")[0] == 200, "version ready")
    check(srv.request("GET", "/v2/models/add/versions/7/ready")[0] == 503, "absent version not ready")
    check(srv.request("GET", "/v2/models/nope")[0] == 404, "unknown model metadata is 404")

    # JSON round trip, flat and nested data, with an id
    x = np.array([[1.0, 2.0, 3.5, -4.0]], dtype=np.float32)
    _, out = srv.infer("add", x_doc(x, id="req-7"))
    doc, y = y_of(out)
    check(doc["model_name"] == "add" and doc["model_version"] == "1" and doc["id"] == "req-7", "response: %r" % doc)
    check(doc["outputs"][0]["datatype"] == "FP32" and doc["outputs"][0]["shape"] == [1, 4], "output desc")
    check(np.allclose(y, x.ravel() + 1), "y = x + 1, got %r" % y)
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    _, out = srv.infer("add", flat, version=1)
    check(np.allclose(y_of(out)[1], [2, 3, 4, 5]), "flat data")

    # binary tensors both ways
    hdr = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 16}}],
                      "parameters": {"binary_data_output": True}}).encode()
    hdrs, out = srv.infer("add", None, raw=hdr + x.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(hdr)),
                                   "Content-Type": "application/octet-stream"})
    n = int(hdrs.get("Inference-Header-Content-Length", "-1"))
    check(n > 0, "binary response carries Inference-Header-Content-Length: %r" % hdrs)
    check(hdrs.get("Content-Type") == "application/octet-stream", "binary content type")
    rdoc = json.loads(out[:n])
    check(rdoc["outputs"][0]["parameters"]["binary_data_size"] == 16, "binary size: %r" % rdoc)
    check(np.allclose(np.frombuffer(out[n:], dtype="<f4"), x.ravel() + 1), "binary values")
    # binary input, JSON output for a named output
    hdr = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 16}}],
                      "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}).encode()
    hdrs, out = srv.infer("add", None, raw=hdr + x.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(hdr))})
    check("Inference-Header-Content-Length" not in hdrs, "JSON response has no binary header")
    check(np.allclose(y_of(out)[1], x.ravel() + 1), "binary in, JSON out")


def test_errors(srv):
    def err(model, doc=None, want=400, name=None, raw=None, headers=None, version=None):
        _, out = srv.infer(model, doc, want=want, raw=raw, headers=headers, version=version)
        e = json.loads(out)
        check(isinstance(e.get("error"), str) and e["error"], "error document: %r" % out[:200])
        if name:
            check(name in e["error"], "error names %s: %r" % (name, e["error"]))
        return e["error"]

    x = np.zeros((1, 4), dtype=np.float32)
    err("add", raw=b"{\"inputs\": [", want=400)
    err("add", raw=b"not json at all", want=400)
    err("add", {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, name="x")
    err("add", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0] * 8}]}, name="x")
    err("add", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}, name="x")
    err("add", {"inputs": [{"name": "q", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, name="q")
    err("add", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4294967296, 4294967296, 16], "data": [1]}]},
        name="x")
    err("add", {"inputs": [{"name": "x%d" % i, "datatype": "FP32", "shape": [1], "data": [1]} for i in range(100)]})
    err("add", x_doc(x, outputs=[{"name": "nope"}]), name="nope")
    err("add", {"inputs": []}, name="x")  # the missing input is named
    # binary header problems
    hdr = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 16}}]}).encode()
    err("add", raw=hdr + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(hdr))}, name="x")
    err("add", raw=hdr + b"\0" * 16, headers={"Inference-Header-Content-Length": str(len(hdr) + 999)})
    err("add", raw=hdr + b"\0" * 16, headers={"Inference-Header-Content-Length": "abc"})
    err("add", raw=hdr, name="x")  # binary_data_size without the header
    # unknown model / version
    err("nope", x_doc(x), want=404)
    err("add", x_doc(x), want=404, version=9)
    err("add", x_doc(x), want=404, version="abc")
    check(srv.request("GET", "/v2/nothing/here")[0] == 404, "unknown path")
    check(srv.request("GET", "/v2/models/add/infer")[0] == 405, "GET on infer")
    # body over --max-body-bytes (1 MiB in this test)
    big = b"{\"inputs\":[" + b" " * (2 << 20) + b"]}"
    st, _, body = srv.request("POST", "/v2/models/add/infer", big, {"Content-Type": "application/json"})
    check(st == 413 and "error" in json.loads(body), "oversized body: HTTP %d %r" % (st, body[:100]))
    # the server is still fine
    _, out = srv.infer("add", x_doc(x))
    check(np.allclose(y_of(out)[1], 1), "still serving after errors")
    m = srv.metrics()
    check(metric_sum(m, "hotserve_requests_total", model="add", outcome="client_error") >= 12,
          "client errors counted: %s" % metric_sum(m, "hotserve_requests_total", model="add", outcome="client_error"))
    check(metric(m, "hotserve_requests_total", model="add", version="1", outcome="client_error") >= 3,
          "client errors on a resolved version are counted under it")


def test_metrics(srv):
    text = srv.metrics()
    for name in ["hotserve_requests_total", "hotserve_request_duration_seconds_bucket",
                 "hotserve_queue_duration_seconds_count", "hotserve_compute_duration_seconds_sum",
                 "hotserve_inflight_requests", "hotserve_model_serving_version", "hotserve_model_loads_total",
                 "hotserve_model_load_duration_seconds_count", "hotserve_model_swap_duration_seconds_count",
                 "hotserve_model_drain_duration_seconds_count", "hotserve_model_versions_live",
                 "hotserve_model_memory_bytes", "hotserve_process_resident_memory_bytes"]:
        check(re.search(r"^%s[{ ]" % name, text, re.M), "metric %s missing" % name)
    check(metric(text, "hotserve_requests_total", model="add", version="1", outcome="success") >= 3, "successes")
    check(metric(text, "hotserve_model_serving_version", model="add") == 1, "serving version gauge")
    check(metric(text, "hotserve_process_resident_memory_bytes") > 1e6, "rss")
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=text, text=True, capture_output=True)
        check(p.returncode == 0, "promtool check metrics: %s %s" % (p.stdout, p.stderr))
    else:
        print("note: promtool not installed; exposition format not checked")


def test_reload(srv, repo):
    put_version(repo, "add", 2, 2)
    wait_for(lambda: serving(srv, "add") == "2", "version 2 to serve")
    x = np.ones((1, 4), dtype=np.float32)
    doc, y = y_of(srv.infer("add", x_doc(x))[1])
    check(doc["model_version"] == "2" and np.allclose(y, 3), "version 2 answers x + 2: %r" % doc)
    check(srv.log_has(r"model add version 2 ready in \d+ ms \(verify \d+, load \d+, warm-up \d+\)"), "ready log line")
    st = srv.get_json("/v2/models/add/status")
    v2 = [v for v in st["versions"] if v["version"] == "2"][-1]
    check(v2["state"] == "ready" and v2["serving"] is True and v2["reason"] is None, "v2 status: %r" % v2)
    check(len(v2["fingerprint"]) == 64 and v2["load_ms"] >= 0 and v2["generation"] >= 1, "v2 fields: %r" % v2)
    check(v2["first_request_ms"] is not None, "first request recorded: %r" % v2)
    v1 = [v for v in st["versions"] if v["version"] == "1"][-1]
    check(v1["state"] in ("retiring", "unloaded") and v1["serving"] is False, "v1 retired: %r" % v1)
    wait_for(lambda: metric(srv.metrics(), "hotserve_model_versions_live") == 1, "one live version")

    # a garbage model file: refused, version 2 keeps serving
    d = os.path.join(repo, "add", "3")
    scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))
    with open(os.path.join(scratch, "model.onnx"), "wb") as f:
        f.write(b"\x08\x07garbage that is not a model" * 10)
    os.rename(scratch, d)
    wait_for(lambda: any(v["version"] == "3" and v["state"] == "failed"
                         for v in srv.get_json("/v2/models/add/status")["versions"]), "version 3 to fail")
    st = srv.get_json("/v2/models/add/status")
    v3 = [v for v in st["versions"] if v["version"] == "3"][-1]
    check(v3["reason"] == "load_error" and v3["error"], "v3 failure reason: %r" % v3)
    check(st["serving_version"] == "2", "version 2 still serving after a broken 3: %r" % st["serving_version"])
    check(srv.log_has(r"model add version 3 failed: load_error: "), "failure log line")
    doc, y = y_of(srv.infer("add", x_doc(x))[1])
    check(doc["model_version"] == "2" and np.allclose(y, 3), "still answered by version 2")
    check(metric(srv.metrics(), "hotserve_model_load_failures_total", model="add", reason="load_error") == 1,
          "load failure counted once (not retried in a loop)")

    # a version whose golden check fails: refused too
    v4 = os.path.join(repo, "add", "4")
    scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))
    make_model(os.path.join(scratch, "model.onnx"), 4)
    write_npy(os.path.join(scratch, "golden", "x.npy"), np.ones((1, 4), dtype=np.float32))
    write_npy(os.path.join(scratch, "golden", "y.npy"), np.full((1, 4), 99, dtype=np.float32))
    os.rename(scratch, v4)
    wait_for(lambda: any(v["version"] == "4" and v["state"] == "failed"
                         for v in srv.get_json("/v2/models/add/status")["versions"]), "version 4 to fail")
    v4s = [v for v in srv.get_json("/v2/models/add/status")["versions"] if v["version"] == "4"][-1]
    check(v4s["reason"] == "golden_mismatch", "golden failure: %r" % v4s)
    check(serving(srv, "add") == "2", "still version 2")

    # a version with a golden check that passes is served
    scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))
    make_model(os.path.join(scratch, "model.onnx"), 5)
    write_npy(os.path.join(scratch, "golden", "x.npy"), np.ones((1, 4), dtype=np.float32))
    write_npy(os.path.join(scratch, "golden", "y.npy"), np.full((1, 4), 6, dtype=np.float32))
    os.rename(scratch, os.path.join(repo, "add", "5"))
    wait_for(lambda: serving(srv, "add") == "5", "version 5 (golden ok) to serve")
    # explicit version routing after the swap: only the policy's version is loaded
    srv.infer("add", x_doc(x), version=2, want=404)


def test_repository_api(srv, repo):
    st, _, body = srv.request("POST", "/v2/repository/index")
    check(st == 200, "index: %d" % st)
    idx = json.loads(body)
    check(any(e["name"] == "add" and e["version"] == "5" and e["state"] == "READY" for e in idx), "index: %r" % idx)
    check(any(e["name"] == "add" and e["version"] == "3" and e["reason"] for e in idx), "index shows failures")
    st, _, _ = srv.request("POST", "/v2/repository/models/add/unload")
    check(st == 200, "unload: %d" % st)
    check(srv.request("GET", "/v2/models/add/ready")[0] == 503, "unloaded model is not ready")
    srv.infer("add", x_doc(np.zeros((1, 4), np.float32)), want=503)
    st, _, body = srv.request("POST", "/v2/repository/models/add/load")
    check(st == 200, "load: %d %r" % (st, body))
    check(serving(srv, "add") == "5", "loaded again")
    check(srv.request("POST", "/v2/repository/models/nope/load")[0] == 404, "load unknown model")

    # SIGHUP rescans: a new model appears
    put_version(repo, "other", 1, 10)
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: serving(srv, "other") == "1", "model 'other' after SIGHUP")


def test_config(srv, repo):
    """config.json: latest-2 policy serves two versions; warm-up from files; a missing warm-up file
    is warmup_error; a malformed config.json changes nothing that is served."""
    mdir = os.path.join(repo, "cfg")
    os.makedirs(mdir)
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump({"version_policy": {"latest": {"num_versions": 2}},
                   "warmup": {"runs": 2, "inputs": "files"}, "instances": 1}, f)
    for v in (1, 2):
        scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))
        make_model(os.path.join(scratch, "model.onnx"), 10 * v)
        write_npy(os.path.join(scratch, "warmup", "x.npy"), np.ones((1, 4), dtype=np.float32))
        os.rename(scratch, os.path.join(mdir, str(v)))
    srv.request("POST", "/v2/repository/index")
    wait_for(lambda: serving(srv, "cfg") == "2", "cfg version 2")
    x = np.ones((1, 4), dtype=np.float32)
    doc, y = y_of(srv.infer("cfg", x_doc(x), version=1)[1])
    check(doc["model_version"] == "1" and np.allclose(y, 11), "latest-2 keeps version 1 routable: %r" % doc)
    doc, y = y_of(srv.infer("cfg", x_doc(x))[1])
    check(doc["model_version"] == "2" and np.allclose(y, 21), "no version: the highest: %r" % doc)
    check(sorted(srv.get_json("/v2/models/cfg")["versions"]) == ["1", "2"], "metadata lists both versions")

    scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))  # version 3 lacks its warm-up file
    make_model(os.path.join(scratch, "model.onnx"), 30)
    os.rename(scratch, os.path.join(mdir, "3"))
    wait_for(lambda: any(v["version"] == "3" and v["state"] == "failed"
                         for v in srv.get_json("/v2/models/cfg/status")["versions"]), "cfg version 3 to fail")
    v3 = [v for v in srv.get_json("/v2/models/cfg/status")["versions"] if v["version"] == "3"][-1]
    check(v3["reason"] == "warmup_error" and "x.npy" in v3["error"], "warm-up failure: %r" % v3)
    srv.infer("cfg", x_doc(x), version=1)  # version 3 failed: 1 and 2 both stay served
    srv.infer("cfg", x_doc(x), version=2)

    with open(os.path.join(mdir, "config.json"), "w") as f:
        f.write("{ not json")
    wait_for(lambda: metric(srv.metrics(), "hotserve_model_load_failures_total", model="cfg", reason="bad_config"),
             "bad_config counted")
    check(serving(srv, "cfg") == "2", "a broken config.json changes nothing served")
    check(srv.log_has(r"model cfg: config.json refused"), "config log line")


def test_drain(srv, repo):
    """SIGTERM while a request is in flight: it still gets its answer, then the server exits 0.

    The request is held in flight deterministically: its headers carry "Expect: 100-continue", the
    server's "100 Continue" proves it has started the request, and only after SIGTERM does the
    client send the body."""
    import socket
    put_version(repo, "slow", 1, 7, slow=int(os.environ.get("HS_TEST_SLOW", "4")))
    wait_for(lambda: serving(srv, "slow") == "1", "slow model to serve", timeout=120)
    body = json.dumps(x_doc(np.zeros((1, 4), np.float32))).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=120)
    f = sock.makefile("rb")
    # one full request first, so the connection is surely accepted before the server quiesces
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
    check(f.readline().startswith(b"HTTP/1.1 200"), "live on the raw connection")
    length = 0
    while True:
        line = f.readline()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        if line in (b"\r\n", b""):
            break
    f.read(length)
    sock.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    check(f.readline().startswith(b"HTTP/1.1 100"), "100 Continue")
    f.readline()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # give the server time to quiesce; the request must survive it either way
    sock.sendall(body)
    status = f.readline()
    check(status.startswith(b"HTTP/1.1 200"), "request in flight at SIGTERM: %r" % status)
    length = 0
    while True:
        line = f.readline()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        if line in (b"\r\n", b""):
            break
    doc, y = y_of(f.read(length))
    check(doc["model_version"] == "1" and np.allclose(y, 7), "answer of the drained request: %r" % doc)
    sock.close()
    rc = srv.stop()
    check(rc == 0, "exit status after SIGTERM: %d" % rc)
    check(srv.log_has("SIGTERM: draining"), "drain log line")


def test_no_memory(repo):
    """A version that cannot fit under the memory limit is refused with no_memory, not loaded."""
    srv = Server(repo, "--memory-limit", "4096")
    try:
        wait_for(lambda: any(v["reason"] == "no_memory" for v in srv.get_json("/v2/models/add/status")["versions"]),
                 "a no_memory refusal")
        st = srv.get_json("/v2/models/add/status")
        check(st["serving_version"] is None, "nothing loaded under a 4 KiB limit: %r" % st)
        check(srv.log_has(r"model add version \d+ failed: no_memory: "), "no_memory log line")
        check(metric(srv.metrics(), "hotserve_model_load_failures_total", model="add", reason="no_memory") >= 1,
              "no_memory counted")
        # a version that fails to load never takes a ready server out of rotation ...
        check(srv.request("GET", "/v2/health/ready")[0] == 200, "still ready: nothing served was lost")
    finally:
        check(srv.stop() == 0, "exit status")
    # ... unless the operator asks for Triton's strict readiness
    srv = Server(repo, "--memory-limit", "4096", "--strict-readiness", wait_ready=False)
    try:
        def refused():  # 404 until the start-up scan has found the model
            st, _, body = srv.request("GET", "/v2/models/add/status")
            return st == 200 and any(v["reason"] == "no_memory" for v in json.loads(body)["versions"])
        wait_for(refused, "a no_memory refusal")
        # the refusal shows in the status before the start-up scan has ended (readiness says so meanwhile)
        wait_for(lambda: b"start-up loads are still running" not in srv.request("GET", "/v2/health/ready")[2],
                 "the start-up scan to end")
        st, _, body = srv.request("GET", "/v2/health/ready")
        check(st == 503 and b"strict readiness" in body, "strict: not ready while a selected version cannot load: %d %r"
              % (st, body))
    finally:
        check(srv.stop() == 0, "exit status")


def thread_sched(pid, comm=None):
    """(policy, nice) of the process's thread named comm (None: the main thread), from /proc
    (policy 0 = SCHED_OTHER, 5 = SCHED_IDLE)."""
    for t in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, t)
        try:
            if (open(base + "comm").read().strip() != comm) if comm else int(t) != pid:
                continue
            f = open(base + "stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return int(f[38]), int(f[16])   # fields 41 (policy) and 19 (nice), counted after the comm
    return None   # not started yet (the first load happens before the loader thread starts)


def test_loader_priority(repo):
    """Loads run below the server's CPU priority: 10 nice steps by default, SCHED_IDLE on request."""
    server_nice = os.nice(0)
    for args, want_policy, want_nice in (((), 0, min(19, server_nice + 10)), (("--loader-priority", "idle"), 5, None),
                                         (("--loader-priority", "normal"), 0, server_nice)):
        srv = Server(repo, *args)
        try:
            wait_for(lambda: serving(srv, "add") is not None, "a version serving")
            wait_for(lambda: thread_sched(srv.proc.pid, "hs-loader") is not None, "the loader thread")
            policy, nice = thread_sched(srv.proc.pid, "hs-loader")
            check(policy == want_policy, "%s: loader policy %d, want %d" % (args, policy, want_policy))
            if want_nice is not None:
                check(nice == want_nice, "%s: loader nice %d, want %d" % (args, nice, want_nice))
            main_policy, main_nice = thread_sched(srv.proc.pid)
            check(main_policy == 0 and main_nice == server_nice, "the server's own threads keep their priority")
        finally:
            check(srv.stop() == 0, "exit status")
    p = subprocess.run([ARGS.hotserve, "serve", "--model-repository", repo, "--loader-priority", "fast"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 2 and "--loader-priority" in p.stderr, "bad --loader-priority refused: %r" % p.stderr)


def test_cli():
    """Bad command lines fail fast with a clear message and the documented exit status."""
    for argv, rc, text in ((["--model-repository", "/nonexistent/repo"], 1, "not a readable directory"),
                           (["--http-port", "0"], 2, "--model-repository DIR is required"),
                           (["--model-repository", "/tmp", "--http-port", "abc"], 2, "--http-port"),
                           (["--model-repository", "/tmp", "--require-signature"], 1, "--trusted-key")):
        p = subprocess.run([ARGS.hotserve, "serve"] + argv, capture_output=True, text=True, timeout=30)
        check(p.returncode == rc and text in p.stderr, "serve %s: rc %d %r" % (argv, p.returncode, p.stderr))
    p = subprocess.run([ARGS.hotserve, "serve", "--help"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and "--model-repository" in p.stdout, "serve --help")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--hotserve", required=True)
    ap.add_argument("--source", required=True)
    ARGS = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hs-serve-")
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    srv = None
    try:
        test_cli()
        print("ok test_cli")
        put_version(repo, "add", 1, 1)
        srv = Server(repo, "--max-body-bytes", str(1 << 20))
        for t in (test_basics, test_errors, test_metrics, test_reload, test_repository_api, test_config, test_drain):
            if t is not test_errors and t is not test_metrics:
                t(srv, repo)
            else:
                t(srv)
            print("ok %s" % t.__name__)
        srv = None
        test_no_memory(repo)
        print("ok test_no_memory")
        test_loader_priority(repo)
        print("ok test_loader_priority")
        return 0
    except Exception as e:  # noqa: BLE001 - any failure prints the server's log
        print("FAIL: %s: %s" % (type(e).__name__, e))
        if srv:
            time.sleep(0.5)  # let the reader thread collect a crash report
            print("--- server log (tail) ---\n" + "\n".join(srv.lines[-80:]))
        return 1
    finally:
        if srv and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

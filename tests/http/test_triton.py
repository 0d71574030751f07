#!/usr/bin/python3
"""test_triton.py - the Triton/KServe details of `hotserve serve` over real HTTP (issue 14), each check a
deviation that must not come back.

Checks: model ready carries "name"; GET /v2/models/{m}/config in Triton's shape; the statistics extension
(/v2/models/stats, /v2/models/{m}/stats, /v2/models/{m}/versions/{v}/stats) counting successes, failures and
phase durations; the repository index with {"ready": true}, every version on disk and Triton's state names with
reasons; load failures answering 400 with the reason, load parameters (the "config" override) refused, explicit
unload keeping newly published versions out until a load; unsupported inference parameters refused by name;
gzip/deflate request bodies (a zip bomb refused with 413) and gzip/deflate JSON replies; the error offset of
a truncated body. Exit 0 passed, 1 failed.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import zlib

import numpy as np

import test_serve as ts
from test_serve import Server, check, put_version, wait_for, x_doc, y_of

TRITON_STATES = {"READY", "UNAVAILABLE", "LOADING", "UNLOADING"}


def garbage_version(repo, model, version):
    scratch = tempfile.mkdtemp(dir=os.path.dirname(repo))
    with open(os.path.join(scratch, "model.onnx"), "wb") as f:
        f.write(b"\x08\x07garbage that is not a model" * 10)
    os.makedirs(os.path.join(repo, model), exist_ok=True)
    os.rename(scratch, os.path.join(repo, model, str(version)))


def index(srv, body=b"{}", want=200):
    st, _, out = srv.request("POST", "/v2/repository/index", body)
    check(st == want, "index %r: HTTP %d, wanted %d: %r" % (body, st, want, out[:300]))
    return json.loads(out)


def entries(idx, model):
    return {e.get("version"): e for e in idx if e["name"] == model}


def test_ready_and_config(srv, repo):
    st, _, body = srv.request("GET", "/v2/models/add/ready")
    check(st == 200 and json.loads(body) == {"name": "add", "ready": True}, "model ready: %d %r" % (st, body))
    st, _, body = srv.request("GET", "/v2/models/add/versions/7/ready")
    check(st == 503 and json.loads(body) == {"name": "add", "ready": False}, "absent version: %d %r" % (st, body))
    cfg = srv.get_json("/v2/models/add/config")
    check(cfg["name"] == "add" and cfg["platform"] == "onnx" and cfg["backend"] == "onnx", "config names: %r" % cfg)
    check(cfg["max_batch_size"] == 0 and cfg["version_policy"] == {"latest": {"num_versions": 1}}, "config: %r" % cfg)
    check(cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 4]}], "config input: %r" % cfg["input"])
    check(cfg["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [1, 4]}], "config output: %r" % cfg["output"])
    hs = cfg["hotserve"]
    check(hs["warmup"] == {"runs": 1, "inputs": "zeros"} and hs["serving_version"] == "1" and hs["unloaded"] is False,
          "hotserve fields: %r" % hs)
    check(srv.request("GET", "/v2/models/nope/config")[0] == 404, "config of an unknown model is 404")
    check(srv.get_json("/v2/models/add/versions/1/config")["hotserve"]["serving_version"] == "1", "pinned config")
    check(srv.request("GET", "/v2/models/add/versions/7/config")[0] == 404, "config of an absent version is 404")
    # a config.json is reflected: policy "all", 2 instances, its warm-up
    os.makedirs(os.path.join(repo, "cfg"), exist_ok=True)
    put_version(repo, "cfg", 1, 5)
    with open(os.path.join(repo, "cfg", "config.json"), "w") as f:
        json.dump({"version_policy": {"all": {}}, "instances": 2, "warmup": {"runs": 2, "inputs": "random"}}, f)
    index(srv)
    wait_for(lambda: srv.request("GET", "/v2/models/cfg/ready")[0] == 200, "model cfg ready")
    cfg = srv.get_json("/v2/models/cfg/config")
    check(cfg["version_policy"] == {"all": {}} and cfg["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]
          and cfg["hotserve"]["warmup"] == {"runs": 2, "inputs": "random"}, "config.json reflected: %r" % cfg)


def stats_of(srv, path, want=200):
    doc = srv.get_json(path, want)
    return doc


def test_stats(srv, repo):
    base = stats_of(srv, "/v2/models/add/stats")["model_stats"]
    check(len(base) == 1 and base[0]["name"] == "add" and base[0]["version"] == "1", "stats: %r" % base)
    s0 = base[0]["inference_stats"]
    for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        check(set(s0[k]) == {"count", "ns"}, "stats field %s: %r" % (k, s0))
    x = np.ones((1, 4), np.float32)
    t_before = int(time.time() * 1000)
    for _ in range(3):
        srv.infer("add", x_doc(x))
    srv.infer("add", x_doc(np.ones((2, 4), np.float32)), want=400)  # a bad shape: a failure of version 1
    doc = stats_of(srv, "/v2/models/add/versions/1/stats")["model_stats"]
    check(len(doc) == 1, "version stats: %r" % doc)
    s = doc[0]["inference_stats"]
    b = s0
    check(s["success"]["count"] - b["success"]["count"] == 3 and s["fail"]["count"] - b["fail"]["count"] == 1,
          "success/fail counts: %r then %r" % (b, s))
    for k in ("queue", "compute_input", "compute_infer", "compute_output"):
        check(s[k]["count"] == s["success"]["count"], "%s count follows successes: %r" % (k, s))
    check(s["success"]["ns"] > b["success"]["ns"] and s["compute_infer"]["ns"] > b["compute_infer"]["ns"]
          and s["fail"]["ns"] > b["fail"]["ns"], "durations grow: %r then %r" % (b, s))
    check(s["success"]["ns"] >= s["compute_infer"]["ns"], "a request lasts at least its compute: %r" % s)
    check(doc[0]["inference_count"] == s["success"]["count"] == doc[0]["execution_count"], "counts: %r" % doc)
    check(t_before - 1000 <= doc[0]["last_inference"] <= int(time.time() * 1000) + 1000,
          "last_inference is wall-clock ms: %r" % doc[0]["last_inference"])
    every = stats_of(srv, "/v2/models/stats")["model_stats"]
    check({(e["name"], e["version"]) for e in every} >= {("add", "1"), ("cfg", "1")}, "all models' stats: %r" % every)
    check(srv.request("GET", "/v2/models/add/versions/9/stats")[0] == 404, "stats of an absent version")
    check(srv.request("GET", "/v2/models/nope/stats")[0] == 404, "stats of an unknown model")
    check("statistics" in srv.get_json("/v2")["extensions"], "the statistics extension is announced")


def test_index(srv, repo):
    put_version(repo, "add", 2, 2)
    wait_for(lambda: ts.serving(srv, "add") == "2", "version 2 to serve")
    garbage_version(repo, "add", 3)
    wait_for(lambda: any(v["version"] == "3" and v["state"] == "failed"
                         for v in srv.get_json("/v2/models/add/status")["versions"]), "version 3 to fail")
    idx = index(srv)
    check(all(e["state"] in TRITON_STATES for e in idx), "only Triton's state names: %r" % idx)
    add = entries(idx, "add")
    check(set(add) == {"1", "2", "3"}, "every version on disk is listed, selected or not: %r" % add)
    check(add["2"]["state"] == "READY", "v2 READY: %r" % add)
    check(add["1"]["state"] == "UNAVAILABLE" and add["1"]["reason"], "v1 UNAVAILABLE with a reason: %r" % add)
    check(add["3"]["state"] == "UNAVAILABLE" and "load_error" in add["3"]["reason"], "v3 reason: %r" % add)
    ready = index(srv, b'{"ready": true}')
    check(ready and all(e["state"] == "READY" for e in ready), "ready filter: %r" % ready)
    check(set(entries(ready, "add")) == {"2"}, "ready filter keeps only v2 of add: %r" % ready)
    check(len(index(srv, b'{"ready": false}')) == len(idx), "ready false lists everything")
    check(len(index(srv, b"")) == len(idx), "no body lists everything")
    index(srv, b'{"ready": "yes"}', want=400)
    index(srv, b'{"ready": tru', want=400)
    shutil.rmtree(os.path.join(repo, "add", "3"))


def test_load_unload(srv, repo):
    st, _, body = srv.request("POST", "/v2/repository/models/add/load",
                              json.dumps({"parameters": {"config": json.dumps({"instances": 3})}}).encode())
    check(st == 400 and b"parameters.config" in body, "config override refused: %d %r" % (st, body))
    st, _, body = srv.request("POST", "/v2/repository/models/add/load", b'{"parameters": {"file:1/model.onnx": "AA=="}}')
    check(st == 400 and b"file:1/model.onnx" in body, "file override refused: %d %r" % (st, body))
    # a failed load: 400 with the reason
    garbage_version(repo, "broken", 1)
    wait_for(lambda: srv.request("GET", "/v2/models/broken/status")[0] == 200 and any(
        v["state"] == "failed" for v in srv.get_json("/v2/models/broken/status")["versions"]), "broken to fail")
    st, _, body = srv.request("POST", "/v2/repository/models/broken/load")
    check(st == 400 and b"load_error" in body, "failed load: %d %r" % (st, body))
    check(srv.request("POST", "/v2/repository/models/nope/load")[0] == 404, "load of an unknown model: 404")
    # explicit unload: a version published meanwhile is not loaded, and the index says why
    check(srv.request("POST", "/v2/repository/models/add/unload")[0] == 200, "unload")
    put_version(repo, "add", 4, 4)
    add = entries(index(srv), "add")
    check(add["4"]["state"] == "UNAVAILABLE" and "unloaded" in add["4"]["reason"], "v4 held by the unload: %r" % add)
    check(srv.request("GET", "/v2/models/add/ready")[0] == 503, "still unloaded after a rescan")
    check(srv.get_json("/v2/models/add/config")["hotserve"]["unloaded"] is True, "config says unloaded")
    st, _, body = srv.request("POST", "/v2/repository/models/add/load", b"{}")
    check(st == 200, "load: %d %r" % (st, body))
    wait_for(lambda: ts.serving(srv, "add") == "4", "the load to pick up version 4 (once it settles)")


def test_unsupported_parameters(srv, repo):
    x = np.ones((1, 4), np.float32)
    for doc, name in ((x_doc(x, outputs=[{"name": "y", "parameters": {"classification": 2}}]), b"classification"),
                      ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                    "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16}}]},
                       b"shared_memory_region"),
                      (x_doc(x, parameters={"sequence_id": 3}), b"sequence_id")):
        _, out = srv.infer("add", doc, want=400)
        check(name in out and b"not supported" in out, "refused by name: %r" % out)
    srv.infer("add", x_doc(x, parameters={"binary_data_output": False}))  # the supported one still works


def test_encodings(srv, repo):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    plain = json.dumps(x_doc(x)).encode()
    raw_deflate = zlib.compressobj(wbits=-15)
    for coding, body in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain)),
                         ("deflate", raw_deflate.compress(plain) + raw_deflate.flush())):
        _, out = srv.infer("add", None, raw=body, headers={"Content-Encoding": coding})
        doc, y = y_of(out)
        check(np.allclose(y, x + 4), "%s body decoded: %r" % (coding, doc))
    # replies: gzip or deflate as Accept-Encoding asks; none when it refuses both
    for accept, decode in (("gzip", gzip.decompress), ("deflate;q=0.5, gzip;q=0", zlib.decompress),
                           ("br, *", gzip.decompress)):
        st, hdrs, out = srv.request("POST", "/v2/models/add/infer", plain,
                                    {"Accept-Encoding": accept, "Content-Type": "application/json"})
        want = "deflate" if "deflate" in accept else "gzip"
        check(st == 200 and hdrs.get("Content-Encoding") == want, "%s: HTTP %d %r" % (accept, st, hdrs))
        check(np.allclose(y_of(decode(out))[1], x + 4), "%s reply decodes" % accept)
    st, hdrs, out = srv.request("GET", "/v2/models/stats", None, {"Accept-Encoding": "gzip;q=0, identity"})
    check(st == 200 and "Content-Encoding" not in hdrs and json.loads(out), "no coding when none is acceptable")
    st, hdrs, out = srv.request("GET", "/v2/models/stats", None, {"Accept-Encoding": "gzip"})
    check(st == 200 and hdrs.get("Content-Encoding") == "gzip" and json.loads(gzip.decompress(out)), "gzip on a GET")
    # a zip bomb (2 MiB of zeros in a few KiB) against --max-body-bytes 1 MiB: 413
    bomb = gzip.compress(b" " * (2 << 20))
    check(len(bomb) < 64 << 10, "the bomb is small")
    st, _, out = srv.request("POST", "/v2/models/add/infer", bomb, {"Content-Encoding": "gzip"})
    check(st == 413, "zip bomb: HTTP %d %r" % (st, out[:200]))
    st, _, out = srv.request("POST", "/v2/models/add/infer", gzip.compress(plain)[:-12], {"Content-Encoding": "gzip"})
    check(st == 400 and b"corrupt or truncated" in out, "truncated gzip: HTTP %d %r" % (st, out[:200]))
    st, _, out = srv.request("POST", "/v2/models/add/infer", plain, {"Content-Encoding": "br"})
    check(st == 415 and b"br" in out, "unknown coding: HTTP %d %r" % (st, out[:200]))
    check(srv.request("GET", "/v2/health/ready")[0] == 200, "the server still serves after the bomb")


def test_error_offsets(srv, repo):
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2'
    _, out = srv.infer("add", None, raw=body, want=400)
    check(("near byte %d:" % len(body)).encode() in json.loads(out)["error"].encode(),
          "a truncated body's offset is its end: %r" % out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hotserve", required=True)
    ap.add_argument("--source", required=True)
    ts.ARGS = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hs-triton-")
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    srv = None
    try:
        put_version(repo, "add", 1, 1)
        srv = Server(repo, "--max-body-bytes", str(1 << 20))
        wait_for(lambda: ts.serving(srv, "add") == "1", "version 1 to serve (it settles first: no manifest)")
        for t in (test_ready_and_config, test_stats, test_unsupported_parameters, test_error_offsets, test_index,
                  test_load_unload, test_encodings):
            t(srv, repo)
            print("ok %s" % t.__name__)
        check(srv.stop() == 0, "the server exits 0 on SIGTERM (under ASan: without leaks)")
        return 0
    except Exception as e:  # noqa: BLE001 - any failure prints the server's log
        print("FAIL: %s: %s" % (type(e).__name__, e))
        if srv:
            time.sleep(0.5)
            print("--- server log (tail) ---\n" + "\n".join(srv.lines[-60:]))
        return 1
    finally:
        if srv and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
